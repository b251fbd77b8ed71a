#!/usr/bin/env bash
# Kill-to-next-holder latency (docs/locks.md): a holder runs
# `TOOL L -- sleep 30` in its own process group, a waiter blocks on the same
# lock, the holder's group is SIGKILLed, and the time from the kill to the
# waiter's command running is measured. N rounds; prints min/median/p90/max
# in milliseconds. The waiter is known to be blocked when /proc/locks shows
# a waiter ("->") on the lock file's inode.
#
# Usage: scripts/bench-handover.sh ffkit|flock FFKIT_BIN [ROUNDS]
set -euo pipefail
tool=$1 bin=$2 rounds=${3:-20}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
lock=$dir/L
: >"$lock"
ino=$(stat -c %i "$lock")
run() {
  if [[ $tool == ffkit ]]; then "$bin" lock-acquire -w 30 "$lock" -- "$@"; else flock -w 30 "$lock" "$@"; fi
}
ms=()
for _ in $(seq "$rounds"); do
  rm -f "$dir/got"
  setsid bash -c "$(declare -f run); tool=$tool bin=$bin lock=$lock; run sleep 30" &
  holder=$!
  until grep -q ":$ino " /proc/locks; do sleep 0.01; done
  ( run bash -c 'echo "$EPOCHREALTIME" >"$1"' _ "$dir/got" ) &
  waiter=$!
  until grep -- "->" /proc/locks | grep -q ":$ino "; do sleep 0.01; done
  t0=$EPOCHREALTIME
  kill -KILL -- "-$holder"
  wait "$waiter"
  { wait "$holder"; } 2>/dev/null || true
  t1=$(<"$dir/got")
  ms+=("$(( ${t1/./} - ${t0/./} ))")
done
printf '%s\n' "${ms[@]}" | sort -n | awk -v tool="$tool" '
  { v[NR] = $1 / 1000 }
  END { printf "%s: n=%d min %.2f ms, median %.2f ms, p90 %.2f ms, max %.2f ms\n",
        tool, NR, v[1], v[int((NR + 1) / 2)], v[int(NR * 0.9 + 0.5)], v[NR] }'
