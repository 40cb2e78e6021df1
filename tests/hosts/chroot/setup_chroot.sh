#!/usr/bin/env bash
# Build (once) the "trixie host chroot": Debian 13 with the second version of each host application, for
# tests/hosts (GIMP 3.0, Krita 5.2, the Blender 4.3 program; the machine itself has Krita 5.1 and Blender 3.4).
#
#   sudo tests/hosts/chroot/setup_chroot.sh        # build or verify; a second run is a quick no-op
#   PAINTBRIDGE_HOST_ROOT=/some/dir ... setup_chroot.sh
#   setup_chroot.sh --rebuild                      # throw the chroot away and build it again
#   setup_chroot.sh --print-mirror                 # only say which Debian mirror it would use (no root needed)
#
# One chroot for all three apps, not one each: they share most of what they install (Qt/GTK, Mesa, Python 3.13,
# ffmpeg), so one debootstrap and one apt run cost less time and disk than three, and the runners share one way
# of entering it (tests/hosts/chroot/trixie.py).
#
# The chroot lives outside the clone (default /var/cache/paintbridge/trixie-root) so that CI runs reuse it.
# Needs root, debootstrap (installed with apt-get if missing) and the Debian mirror named in this machine's own
# apt sources (sources.list and sources.list.d, one-line or deb822): there is no built-in fallback address.
# PAINTBRIDGE_DEBIAN_MIRROR=URL names one explicitly instead.
set -euo pipefail

# PAINTBRIDGE_GIMP_ROOT: the variable's older name, from when only GIMP lived in the chroot.
ROOT="${PAINTBRIDGE_HOST_ROOT:-${PAINTBRIDGE_GIMP_ROOT:-/var/cache/paintbridge/trixie-root}}"
SUITE="trixie"
# No Python numpy: Debian's blender does not depend on it, and the add-on must work without it.
# Mesa (libgl1-mesa-dri, libglx-mesa0) gives Blender's and Krita's windows OpenGL under Xvfb (llvmpipe).
PACKAGES="gimp python3-gi gir1.2-gimp-3.0 gir1.2-gegl-0.4 dbus krita python3-pyqt5 blender
libgl1 libglx-mesa0 libgl1-mesa-dri"
PACKAGES=$(echo $PACKAGES)
PROGRAMS="/usr/bin/gimp-console-3.0 /usr/bin/gimp-3.0 /usr/bin/krita /usr/bin/blender"
# Bump when the chroot recipe changes: an older chroot is then completed with the new steps.
RECIPE="2:${SUITE}:${PACKAGES}"
READY="$ROOT/.paintbridge-ready"
BOOTSTRAPPED="$ROOT/.paintbridge-debootstrap-done"

export DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true LC_ALL=C.UTF-8 LANG=C.UTF-8
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

log() { printf '[setup_chroot %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# "URI SUITE" for every enabled `deb` entry of apt's sources, one-line (sources.list, *.list) and deb822
# (*.sources) alike, in the order apt reads them.
apt_source_entries() {
    local list=/etc/apt/sources.list parts=/etc/apt/sources.list.d f
    if command -v apt-config >/dev/null; then
        eval "$(apt-config shell list Dir::Etc::sourcelist/f parts Dir::Etc::sourceparts/d)"
    fi
    parts="${parts%/}"
    [[ -f "$list" ]] && one_line_entries "$list"
    for f in "$parts"/*.list; do [[ -f "$f" ]] && one_line_entries "$f"; done
    for f in "$parts"/*.sources; do [[ -f "$f" ]] && deb822_entries "$f"; done
    return 0
}

one_line_entries() {
    # deb [ option=value ... ] URI SUITE [COMPONENT...]
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$1" | awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
}

deb822_entries() {
    # Stanzas are separated by blank lines; a field may continue on lines that start with white space.
    sed -e '/^#/d' "$1" | awk '
        function flush() {
            if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no") {
                n = split(uris, u, " "); m = split(suites, s, " ")
                for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print u[i], s[j]
            }
            types = uris = suites = key = ""; enabled = "yes"
        }
        BEGIN { enabled = "yes" }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]/ { value = $0; gsub(/^[ \t]+|[ \t]+$/, "", value) }
        /^[^ \t]/ { key = tolower(substr($0, 1, index($0, ":") - 1)); value = substr($0, index($0, ":") + 1)
                    gsub(/^[ \t]+|[ \t]+$/, "", value) }
        { if (key == "types") types = types " " value; else if (key == "uris") uris = uris " " value
          else if (key == "suites") suites = suites " " value; else if (key == "enabled") enabled = value }
        END { flush() }'
}

# The machine's Debian archive: the first source whose suite is a Debian release (not its security archive).
debian_mirror() {
    if [[ -n "${PAINTBRIDGE_DEBIAN_MIRROR:-}" ]]; then echo "$PAINTBRIDGE_DEBIAN_MIRROR"; return; fi
    apt_source_entries | awk '
        { suite = $2; sub(/-(updates|backports|proposed-updates)$/, "", suite) }
        $2 ~ /-security$/ || $1 ~ /security/ { next }
        suite ~ /^(buster|bullseye|bookworm|trixie|forky|duke|sid|oldoldstable|oldstable|stable|testing|unstable)$/ \
            && $1 ~ /^(https?|file):/ { print $1; exit }'
}

mirror_or_die() {
    MIRROR=$(debian_mirror)
    [[ -n "$MIRROR" ]] || die "no Debian mirror in this machine's apt sources (apt's sources.list and \
sources.list.d/*.list or *.sources, normally under /etc/apt: a 'deb' entry for a Debian release such as \
bookworm or trixie). Add one, or name a mirror with PAINTBRIDGE_DEBIAN_MIRROR=URL."
}


REBUILD=0
case "${1:-}" in
    --rebuild) REBUILD=1 ;;
    --print-mirror | "") ;;
    *) die "unknown option ${1} (--rebuild, --print-mirror)" ;;
esac
if [[ "${1:-}" == "--print-mirror" ]]; then
    mirror_or_die
    echo "$MIRROR"
    exit 0
fi

ready() {
    [[ $REBUILD == 0 && -f "$READY" && "$(cat "$READY")" == "$RECIPE" ]] || return 1
    local p
    for p in $PROGRAMS; do [[ -x "$ROOT$p" ]] || return 1; done
}

# Quick path: already built with this recipe and the programs are there.
if ready; then
    log "chroot ready at $ROOT"
    exit 0
fi

[[ $(id -u) == 0 ]] || die "must run as root (debootstrap and chroot need it)"

# Serialize concurrent setups (two CI jobs, a test and a human).
mkdir -p "$(dirname "$ROOT")"
exec 9>"$(dirname "$ROOT")/.$(basename "$ROOT").lock"
flock 9
# Someone else may have finished while we waited.
if ready; then
    log "chroot ready at $ROOT"
    exit 0
fi

MOUNTED=()
unmount_all() {
    local m
    for ((i=${#MOUNTED[@]}-1; i>=0; i--)); do
        m="${MOUNTED[$i]}"
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    MOUNTED=()
}
trap unmount_all EXIT

is_mounted() { awk -v p="$1" '$2 == p {f=1} END {exit !f}' /proc/mounts; }

# Unmount whatever a killed earlier run may have left mounted inside ROOT (before deleting anything!).
release_stale_mounts() {
    local p
    # deepest first
    for p in $(awk -v r="$ROOT/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
        log "unmounting stale $p"
        umount "$p" 2>/dev/null || umount -l "$p"
    done
}

release_stale_mounts

if [[ $REBUILD == 1 || ! -f "$BOOTSTRAPPED" ]]; then
    mirror_or_die
    if [[ -e "$ROOT" ]]; then
        log "removing incomplete chroot $ROOT"
        rm -rf --one-file-system "$ROOT"
    fi
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends debootstrap
    fi
    log "debootstrap --variant=minbase $SUITE $ROOT $MIRROR"
    t0=$SECONDS
    mkdir -p "$ROOT"
    debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 || {
        tail -n 30 "$ROOT.debootstrap.log" >&2
        die "debootstrap failed (full log: $ROOT.debootstrap.log)"
    }
    log "debootstrap done in $((SECONDS - t0)) s"
    touch "$BOOTSTRAPPED"
fi

# --- configure the chroot (all idempotent) ---
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
# Same apt tuning as the host (no valid-until checks for snapshot mirrors, no AppStream/translations).
for f in /etc/apt/apt.conf.d/99artifact-registry /etc/apt/apt.conf.d/99farm-no-dep11 /etc/apt/apt.conf.d/docker-no-languages; do
    [[ -f $f ]] && cp "$f" "$ROOT/etc/apt/apt.conf.d/"
done
cat >"$ROOT/etc/apt/apt.conf.d/90paintbridge" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Dpkg::Use-Pty "false";
Acquire::Retries "3";
APT
# Never start services inside the chroot (dbus would otherwise try).
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"

if ! is_mounted "$ROOT/proc"; then
    mount -t proc proc "$ROOT/proc"
    MOUNTED+=("$ROOT/proc")
fi

in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true "$@"; }

log "apt-get update + install $PACKAGES"
t0=$SECONDS
in_root apt-get update -qq
# shellcheck disable=SC2086
in_root apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $PACKAGES >"$ROOT.apt.log" 2>&1 || {
    tail -n 30 "$ROOT.apt.log" >&2
    die "apt-get install failed (full log: $ROOT.apt.log)"
}
in_root apt-get clean
log "packages installed in $((SECONDS - t0)) s"

# A machine-id keeps GLib/dbus quiet; a plug-in folder for the GIMP tests.
[[ -s "$ROOT/etc/machine-id" ]] || in_root sh -c 'command -v dbus-uuidgen >/dev/null && dbus-uuidgen --ensure=/etc/machine-id || true'
mkdir -p "$ROOT/root/.config/GIMP/3.0/plug-ins"

for p in $PROGRAMS; do [[ -x "$ROOT$p" ]] || die "$p missing after install"; done
versions=$(in_root sh -c 'gimp-console-3.0 --version | head -n1; krita --version 2>/dev/null | tail -n1;
    blender --version 2>/dev/null | head -n1; python3 --version' 2>/dev/null | paste -sd';' || true)
unmount_all
echo "$RECIPE" >"$READY"
log "chroot ready at $ROOT ($versions)"
