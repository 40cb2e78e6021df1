#!/usr/bin/env bash
# Make (once) a Python 3.11 venv with bpy 4.2 (Blender 4.2 LTS as a Python module) for the Blender host tests,
# which install the add-on into it as a 4.2 extension (tests/hosts/blender/blender_host.py, host "bpy42").
#
#   tests/hosts/blender/setup_bpy.sh               # make or verify; a second run is a quick no-op
#   PAINTBRIDGE_BPY_VENV=/some/dir ... setup_bpy.sh
#   setup_bpy.sh --rebuild                         # throw the venv away and make it again
#
# The venv lives outside the clone (default /var/cache/paintbridge/bpy-4.2) so that CI runs reuse it: the bpy
# wheel is ~520 MB. Needs python3.11 (bpy 4.2 is cp311 only) and access to PyPI.
set -euo pipefail

VENV="${PAINTBRIDGE_BPY_VENV:-/var/cache/paintbridge/bpy-4.2}"
PYTHON="${PAINTBRIDGE_BPY_PYTHON:-python3.11}"
# bpy pulls in its own dependencies (numpy, cython, requests, zstandard); numpy is pinned to the 1.26.4 that
# Blender 4.2 ships with, since pip would otherwise pick numpy 2, which no real 4.2 has.
PACKAGES="bpy==4.2.0 numpy==1.26.4"
# Bump when the recipe changes: an older venv is then made again.
RECIPE="1:${PACKAGES}"
READY="$VENV/.paintbridge-ready"

log() { printf '[setup_bpy %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ "${1:-}" == "--rebuild" ]]; then REBUILD=1; else REBUILD=0; fi

ready() {
    [[ $REBUILD == 0 && -f "$READY" && "$(cat "$READY")" == "$RECIPE" ]] &&
        "$VENV/bin/python" -c 'import bpy' >/dev/null 2>&1
}

# Quick path: made with this recipe and bpy imports (~1 s).
if ready; then
    log "bpy venv ready at $VENV"
    exit 0
fi

# Serialize concurrent setups (two CI jobs, a test and a human).
mkdir -p "$(dirname "$VENV")"
exec 9>"$(dirname "$VENV")/.$(basename "$VENV").lock"
flock 9
# Someone else may have finished while we waited.
if ready; then
    log "bpy venv ready at $VENV"
    exit 0
fi

command -v "$PYTHON" >/dev/null || die "$PYTHON not found (bpy 4.2 needs CPython 3.11)"
# Debian keeps venv's ensurepip in a separate package.
if ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
    [[ $(id -u) == 0 ]] || die "$PYTHON lacks ensurepip: apt-get install python3.11-venv"
    log "installing python3.11-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3.11-venv >/dev/null
fi
[[ -e "$VENV" ]] && { log "removing old or incomplete venv $VENV"; rm -rf --one-file-system "$VENV"; }
t0=$SECONDS
"$PYTHON" -m venv "$VENV"
log "pip install $PACKAGES"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir $PACKAGES >"$VENV.pip.log" 2>&1 || {
    tail -n 30 "$VENV.pip.log" >&2
    die "pip install failed (full log: $VENV.pip.log)"
}
version=$("$VENV/bin/python" -c 'import bpy; print(bpy.app.version_string)' 2>/dev/null) ||
    die "bpy does not import in $VENV: $("$VENV/bin/python" -c 'import bpy' 2>&1 | tail -n 3)"
echo "$RECIPE" >"$READY"
log "bpy venv ready at $VENV (Blender $version) in $((SECONDS - t0)) s"
