#!/usr/bin/env bash
# Makes docs/example-sr.html and docs/example-sc.png: what the radiologist sees for the real TCIA series.
# The release node sends its results to DCMTK's storescp (standing in for the archive); dsr2html renders the SR
# and dcmj2pnm the first heatmap.  [NEPHRA_BUILD=build/dev] docs/make-examples.sh [SERIES_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
series="${1:-../shared/data/dicom/tcia-pancreatic-ct-cbct-seg-001}"
work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
node_port=$(free_port); pacs_port=$(free_port)
mkdir -p "$work/pacs"
cat > "$work/nephra.toml" <<TOML
[node]
port = $node_port
spool_dir = "$work/spool"
[study]
stable_seconds = 1
[engine]
model = "$PWD/models/nephra-kidney.json"
[[peers]]
ae_title = "ARCHIVE"
host = "127.0.0.1"
port = $pacs_port
TOML
storescp -aet ARCHIVE -od "$work/pacs" -uf "$pacs_port" > "$work/storescp.log" 2>&1 & echo $! > "$work/storescp.pid"
"${NEPHRA_BUILD:-build/release}"/app/nephrad --config "$work/nephra.toml" > "$work/nephrad.log" 2>&1 & echo $! > "$work/nephrad.pid"
until grep -q NODE_READY "$work/nephrad.log"; do sleep 0.1; done
storescu -aet ARCHIVE -aec NEPHRA +sd 127.0.0.1 "$node_port" "$series" > /dev/null
until grep -q -E "RESULT_DELIVERED|RESULT_DEAD_LETTER" "$work/nephrad.log"; do sleep 0.2; done
sr=$(grep -l "1.2.840.10008.5.1.4.1.1.88.34" "$work"/pacs/SR* 2>/dev/null | head -1 || true)
[[ -n "$sr" ]] || sr=$(ls "$work"/pacs/SR* | head -1)
dsr2html "$sr" docs/example-sr.html
sc=""  # the first heatmap of the series (InstanceNumber 1: the most probable flagged slice)
for f in "$work"/pacs/SC*; do
  if dcmdump +P InstanceNumber "$f" 2>/dev/null | grep -q '\[1\]'; then sc="$f"; fi
done
# No finding, no heatmap: an old picture must not stay behind to contradict the SR.
if [[ -n "$sc" ]]; then dcmj2pnm +on -il +Sxv 512 "$sc" docs/example-sc.png; else rm -f docs/example-sc.png; fi
grep -E "STUDY_CLASSIFIED|RESULT_DELIVERED" "$work/nephrad.log"
