#!/usr/bin/env bash
# The GIMP 3 chroot is now the trixie host chroot, shared with Krita 5.2 and Blender 4.3:
# tests/hosts/chroot/setup_chroot.sh (same options; PAINTBRIDGE_GIMP_ROOT is still read as PAINTBRIDGE_HOST_ROOT).
exec bash "$(dirname "$0")/../chroot/setup_chroot.sh" "$@"
