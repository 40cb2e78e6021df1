#!/usr/bin/env bash
# Build (once) a Debian 13 "trixie" chroot with GIMP 3 for the GIMP host tests.
#
#   sudo tests/hosts/gimp/setup_chroot.sh          # build or verify; a second run is a quick no-op
#   PAINTBRIDGE_GIMP_ROOT=/some/dir ... setup_chroot.sh
#   setup_chroot.sh --rebuild                      # throw the chroot away and build it again
#
# The chroot lives outside the clone (default /var/cache/paintbridge/gimp3-root) so that CI runs reuse it.
# Needs root, network access to the Debian mirror, debootstrap (installed with apt-get if missing).
# Run plug-ins inside it with tests/hosts/gimp/gimp_host.py (or run_gimp.sh).
set -euo pipefail

ROOT="${PAINTBRIDGE_GIMP_ROOT:-/var/cache/paintbridge/gimp3-root}"
SUITE="${PAINTBRIDGE_GIMP_SUITE:-trixie}"
PACKAGES="gimp python3-gi gir1.2-gimp-3.0 gir1.2-gegl-0.4 dbus"
# Bump when the chroot recipe changes: an older chroot is then completed with the new steps.
RECIPE="1:${SUITE}:${PACKAGES}"
READY="$ROOT/.paintbridge-ready"
BOOTSTRAPPED="$ROOT/.paintbridge-debootstrap-done"

export DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true LC_ALL=C.UTF-8 LANG=C.UTF-8
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

log() { printf '[setup_chroot %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ "${1:-}" == "--rebuild" ]]; then REBUILD=1; else REBUILD=0; fi

# Quick path: already built with this recipe and GIMP is there.
if [[ $REBUILD == 0 && -f "$READY" && "$(cat "$READY")" == "$RECIPE" && -x "$ROOT/usr/bin/gimp-console-3.0" ]]; then
    log "chroot ready at $ROOT"
    exit 0
fi

[[ $(id -u) == 0 ]] || die "must run as root (debootstrap and chroot need it)"

# Serialize concurrent setups (two CI jobs, a test and a human).
mkdir -p "$(dirname "$ROOT")"
exec 9>"$(dirname "$ROOT")/.$(basename "$ROOT").lock"
flock 9
# Someone else may have finished while we waited.
if [[ $REBUILD == 0 && -f "$READY" && "$(cat "$READY")" == "$RECIPE" && -x "$ROOT/usr/bin/gimp-console-3.0" ]]; then
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

mirror_from_sources() {
    local m=""
    if [[ -n "${PAINTBRIDGE_DEBIAN_MIRROR:-}" ]]; then echo "$PAINTBRIDGE_DEBIAN_MIRROR"; return; fi
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        # First URIs of a stanza that is not the security archive.
        m=$(awk 'BEGIN{IGNORECASE=1} /^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z "$m" && -f /etc/apt/sources.list ]]; then
        m=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/ && $i !~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

release_stale_mounts

if [[ $REBUILD == 1 || ! -f "$BOOTSTRAPPED" ]]; then
    if [[ -e "$ROOT" ]]; then
        log "removing incomplete chroot $ROOT"
        rm -rf --one-file-system "$ROOT"
    fi
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends debootstrap
    fi
    MIRROR=$(mirror_from_sources)
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

# A machine-id keeps GLib/dbus quiet; a plug-in folder for the tests.
[[ -s "$ROOT/etc/machine-id" ]] || in_root sh -c 'command -v dbus-uuidgen >/dev/null && dbus-uuidgen --ensure=/etc/machine-id || true'
mkdir -p "$ROOT/root/.config/GIMP/3.0/plug-ins"

[[ -x "$ROOT/usr/bin/gimp-console-3.0" ]] || die "gimp-console-3.0 missing after install"
version=$(in_root gimp-console-3.0 --version 2>/dev/null | head -n1 || true)
python=$(in_root python3 --version 2>/dev/null || true)
unmount_all
echo "$RECIPE" >"$READY"
log "chroot ready at $ROOT ($version; $python)"
