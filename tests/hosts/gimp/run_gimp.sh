#!/usr/bin/env bash
# run_gimp.sh PLUGINS-DIR SCRIPT.py [TIMEOUT]
# Installs every plug-in folder under PLUGINS-DIR (or PLUGINS-DIR itself if it holds NAME/NAME.py) into the GIMP 3
# trixie host chroot and runs SCRIPT.py (or - for stdin) with gimp-console-3.0's python-fu-eval batch interpreter.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[[ $# -ge 2 ]] || { echo "usage: $0 PLUGINS-DIR SCRIPT.py [TIMEOUT]" >&2; exit 2; }
plugins_dir="$1"; script="$2"; timeout="${3:-180}"
args=()
if [[ -f "$plugins_dir/$(basename "$plugins_dir").py" ]]; then
    args+=(--plugin "$plugins_dir")
else
    for d in "$plugins_dir"/*/; do
        d="${d%/}"
        [[ -f "$d/$(basename "$d").py" ]] && args+=(--plugin "$d")
    done
fi
exec python3 "$here/gimp_host.py" "${args[@]}" --timeout "$timeout" "$script"
