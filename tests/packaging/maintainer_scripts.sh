#!/bin/sh
# The .deb's maintainer scripts are POSIX sh (dpkg runs them with /bin/sh, dash on Debian).
#   maintainer_scripts.sh PACKAGING_DEB_DIR
set -eu
dir=$1
for s in postinst prerm postrm; do
    head -n 1 "$dir/$s" | grep -qx '#!/bin/sh' || { echo "FAIL: $s does not start with #!/bin/sh"; exit 1; }
    grep -qx 'set -e' "$dir/$s" || { echo "FAIL: $s lacks set -e"; exit 1; }
    sh -n "$dir/$s" || { echo "FAIL: $s: syntax error"; exit 1; }
    if command -v dash >/dev/null 2>&1; then dash -n "$dir/$s" || { echo "FAIL: $s: dash syntax error"; exit 1; }; fi
done
grep -qx '/etc/nephra/nephra.toml' "$dir/conffiles" || { echo "FAIL: conffiles lacks /etc/nephra/nephra.toml"; exit 1; }
# Neither the package nor its scripts may ever delete the spool.
if grep -n 'rm .*/var/lib/nephra' "$dir/postinst" "$dir/prerm" "$dir/postrm"; then
    echo "FAIL: a maintainer script removes /var/lib/nephra"
    exit 1
fi
if command -v shellcheck >/dev/null 2>&1; then
    shellcheck -s sh "$dir/postinst" "$dir/prerm" "$dir/postrm" || { echo "FAIL: shellcheck"; exit 1; }
fi
echo "PASS: maintainer scripts"
