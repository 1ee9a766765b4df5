#!/usr/bin/env bash
# What admins script today: per VM, `virsh dumpxml | sed | virsh define`.
# Usage: virsh-loop.sh URI BRIDGE VM...
set -euo pipefail
uri=$1 bridge=$2; shift 2
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for vm in "$@"; do
  virsh -c "$uri" dumpxml --inactive --security-info "$vm" \
    | sed -e "s/<interface type='network'>/<interface type='bridge'>/" \
          -e "s|<source network='default'/>|<source bridge='$bridge'/>|" >"$tmp"
  virsh -c "$uri" define "$tmp" >/dev/null
done
