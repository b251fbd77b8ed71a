#!/usr/bin/env bash
# One contention run for scripts/bench.sh: 8 processes x 50 locked
# increments of a counter file (read, add one, write), with ffkit
# lock-acquire or with util-linux flock(1). Each critical section appends
# its wait (milliseconds from just before starting the lock tool to holding
# the lock) to PREFIX.waits. Fails unless the counter ends at exactly 400.
#
# Usage: scripts/bench-contend.sh ffkit|flock FFKIT_BIN PREFIX
set -euo pipefail
tool=$1 bin=$2 prefix=$3
lock=$prefix.lock counter=$prefix.count waits=$prefix.waits
echo 0 >"$counter"
: >"$waits"
: >"$lock"
# $1 = EPOCHREALTIME before the lock tool started; runs holding the lock.
# shellcheck disable=SC2016 # -- expanded by the inner bash, on purpose
body='now=$EPOCHREALTIME; n=$(<"$2"); echo $((n + 1)) >"$2"
      echo "$(( (${now/./} - ${1/./}) / 1000 ))" >>"$3"'
worker() {
  for _ in $(seq 50); do
    if [[ $tool == ffkit ]]; then
      "$bin" lock-acquire "$lock" -- bash -c "$body" _ "$EPOCHREALTIME" "$counter" "$waits"
    else
      flock "$lock" bash -c "$body" _ "$EPOCHREALTIME" "$counter" "$waits"
    fi
  done
}
pids=()
for _ in $(seq 8); do
  worker &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
n=$(<"$counter")
[[ $n == 400 ]] || { echo "bench-contend.sh: counter is $n, not 400" >&2; exit 1; }
