#!/usr/bin/env bash
# Handover latency on the shell path (docs/shell.md, "Measured"): a holder
# (util-linux flock in its own process group) holds the lock of NAME, a
# waiter blocks in `acquire_critical_lock NAME` (the builtin, or the
# fallback with FFKIT_BUILTIN=off) or in flock(1), the holder's group is
# SIGKILLed, and the time from the kill to the waiter's next command is
# measured. N rounds; prints min/median/p90/max in milliseconds. The waiter
# is known to be blocked when /proc/locks shows a waiter ("->") on the lock
# file's inode (the builtin's helper child and the fallback's binary both
# block in flock(2)).
#
# Usage: scripts/bench-shell-handover.sh builtin|fallback|flock FFKIT_BIN [ROUNDS]
# shellcheck disable=SC2016 # -- the waiters' scripts expand in their own shells
set -euo pipefail
how=$1 bin=$2 rounds=${3:-20}
lib=$(cd "$(dirname "$0")/.." && pwd)/shell/ffkit.bash
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export FFKIT_LOCK_DIR=$dir FFKIT_BIN=$bin
lock=$dir/h.lock
: >"$lock"
chmod 600 "$lock"
ino=$(stat -c %i "$lock")
case $how in
  builtin) waiter=(bash -c '. "$0"; [ "$(type -t ffkit)" = builtin ] || exit 99; LOCK_TIMEOUT=30 acquire_critical_lock h; echo "$EPOCHREALTIME" >"$1"' "$lib") ;;
  fallback) waiter=(env FFKIT_BUILTIN=off bash -c '. "$0"; LOCK_TIMEOUT=30 acquire_critical_lock h; echo "$EPOCHREALTIME" >"$1"' "$lib") ;;
  flock) waiter=(flock -w 30 "$lock" bash -c 'echo "$EPOCHREALTIME" >"$1"' _) ;;
  *) echo "usage: $0 builtin|fallback|flock FFKIT_BIN [ROUNDS]" >&2; exit 2 ;;
esac
ms=()
exec 3>&2 2>/dev/null
for _ in $(seq "$rounds"); do
  rm -f "$dir/got"
  setsid flock "$lock" sleep 30 &
  holder=$!
  until grep -q ":$ino " /proc/locks; do sleep 0.01; done
  "${waiter[@]}" "$dir/got" &
  w=$!
  until grep -- "->" /proc/locks | grep -q ":$ino "; do sleep 0.01; done
  t0=$EPOCHREALTIME
  kill -KILL -- "-$holder"
  wait "$w"
  { wait "$holder"; } 2>/dev/null || true
  t1=$(<"$dir/got")
  ms+=("$(( ${t1/./} - ${t0/./} ))")
done
exec 2>&3
printf '%s\n' "${ms[@]}" | sort -n | awk -v how="$how" '
  { v[NR] = $1 / 1000 }
  END { printf "%s: n=%d min %.2f ms, median %.2f ms, p90 %.2f ms, max %.2f ms\n",
        how, NR, v[1], v[int((NR + 1) / 2)], v[int(NR * 0.9 + 0.5)], v[NR] }'
