#!/bin/sh
# `cmake --install` into a DESTDIR lays out what the .deb ships, and the staged config and model fit together.
#   install_layout.sh NEPHRAD BUILD_DIR PREFIX UNIT_DIR CONFIG_DIR MODEL_DIR
# (UNIT_DIR and MODEL_DIR relative to PREFIX unless absolute, CONFIG_DIR absolute: as configured.)
set -eu
nephrad=$1 build=$2 prefix=$3 unit_dir=$4 config_dir=$5 model_dir=$6

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stage=$tmp/stage
fail() { echo "FAIL: $*"; exit 1; }
under_prefix() { case $1 in /*) echo "$stage$1" ;; *) echo "$stage$prefix/$1" ;; esac; }

# DESTDIR, not --prefix: the config's destination is absolute (/etc/nephra for the /usr prefix) and would
# otherwise be written to the real /etc.
DESTDIR=$stage cmake --install "$build" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "cmake --install"; }

bin=$stage$prefix/bin
models=$(under_prefix "$model_dir")
config=$stage$config_dir/nephra.toml
for f in "$bin/nephrad" "$bin/nephra"; do [ -x "$f" ] || fail "$f missing or not executable"; done
for f in "$(under_prefix "$unit_dir")/nephrad.service" \
         "$stage$prefix/lib/sysusers.d/nephra.conf" "$stage$prefix/lib/tmpfiles.d/nephra.conf" \
         "$config" "$models/nephra-kidney.json" "$models/nephra-kidney.onnx" "$models/MODEL_CARD.md" \
         "$stage$prefix/share/doc/nephra/README.md" "$stage$prefix/share/doc/nephra/examples/nephrad-port104.conf" \
         "$stage$prefix/share/doc/nephra/examples/grafana-dashboard.json"; do
    [ -f "$f" ] || fail "${f#"$stage"} not installed"
done

# The packaged config names the manifest by its /usr path; it must be the one staged here.
model=$(sed -n 's/^model *= *"\([^"]*\)".*/\1/p' "$config")
case $model in
/usr/share/nephra/models/*) ;;
*) fail "config's engine.model is '$model', expected /usr/share/nephra/models/..." ;;
esac
[ -f "$models/$(basename "$model")" ] || fail "config's engine.model $model is not among the installed models"

# The staged binary accepts the staged config once the model path points into the staging tree.
sed "s|^model *=.*|model = \"$models/$(basename "$model")\"|" "$config" >"$tmp/nephra.toml"
"$bin/nephrad" --check-config "$tmp/nephra.toml" || fail "installed nephrad rejects the installed config"
"$nephrad" --check-config "$config" || fail "nephrad rejects the installed config"

# The manifest finds its ONNX file relative to itself and checks its sha256 at start: check the same here.
manifest=$models/$(basename "$model")
onnx=$(sed -n 's/^ *"onnx": *"\([^"]*\)".*/\1/p' "$manifest")
want=$(sed -n 's/^ *"onnx_sha256": *"\([0-9a-f]*\)".*/\1/p' "$manifest")
if [ -z "$onnx" ] || [ -z "$want" ]; then fail "cannot read onnx / onnx_sha256 from $manifest"; fi
[ -f "$(dirname "$manifest")/$onnx" ] || fail "the manifest's $onnx is not installed beside it"
got=$(sha256sum "$(dirname "$manifest")/$onnx" | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "installed $onnx has sha256 $got, the manifest says $want"

# Nothing outside the prefix but the config (and the unit, when its directory was set absolute).
case $unit_dir in /*) abs_unit_dir=$unit_dir ;; *) abs_unit_dir=$prefix ;; esac
extra=$(find "$stage" -type f | sed "s|^$stage||" |
        grep -v -e "^$prefix/" -e "^$config_dir/" -e "^$abs_unit_dir/" || true)
[ -z "$extra" ] || fail "installed outside $prefix and $config_dir: $extra"

echo "PASS: install layout under $prefix, config in $config_dir"
