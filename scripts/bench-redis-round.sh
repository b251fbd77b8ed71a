#!/usr/bin/env bash
# Issue 24's lock round, measured so that load drifts hit every command
# alike (BENCHMARKS.md, "Issue 24's lock round, sixth pass"):
#   floor   scripts/ref_redis_roundtrip.c: one process start, one round trip
#   c-round scripts/ref_redis_lockround.c: the honest minimum of a lock round
#           in C (connect, SET NX PX, posix_spawnp the command, waitpid, DEL)
#   ffkit   `ffkit lock-acquire --backend redis://127.0.0.1:PORT lk -- true`
#   old     the same with a second binary, when one is given
# SETS hyperfine sets (default 5) of RUNS runs each (default 100, `-N`,
# WARMUP warm-up runs), the order of the commands rotated from set to set.
# Prints each set's medians and the median over the sets of each set's
# ratio (ffkit/floor, c-round/floor, ffkit/c-round, old/floor, ffkit/old),
# with the load average before and after.
#
# Usage: scripts/bench-redis-round.sh [FFKIT_BIN [OLD_FFKIT_BIN]]
#        (default: target/dist/ffkit, `cargo xtask dist`)
# Needs: hyperfine, redis-server, redis-cli, jq, cc.
set -euo pipefail
bin=$(realpath "${1:-target/dist/ffkit}")
old=${2:+$(realpath "$2")}
for b in "$bin" ${old:+"$old"}; do
  [[ -x $b ]] || { echo "bench-redis-round.sh: no $b: run cargo xtask dist first" >&2; exit 1; }
done
here=$(dirname "$(realpath "$0")")
# shellcheck source=scripts/redis-lib.sh
. "$here/redis-lib.sh"
redis_bench_setup redis-round
# As scripts/bench-redis.sh: the URL on the command line, metrics on, an
# existing cache directory for the metrics row.
export CACHE_PERF_MONITORING=enabled FFKIT_CACHE_DIR=$W/c FFKIT_LOCK_DIR=$W/locks
mkdir -p "$FFKIT_CACHE_DIR" "$FFKIT_LOCK_DIR"
cc -O2 -o "$W/floor" "$here/ref_redis_roundtrip.c"
cc -O2 -o "$W/lockround" "$here/ref_redis_lockround.c"
names=(floor c-round ffkit)
cmds=("$W/floor $port SET x v" "$W/lockround $port true" "$bin lock-acquire --backend redis://127.0.0.1:$port lk -- true")
if [[ -n $old ]]; then
  names+=(old)
  cmds+=("$old lock-acquire --backend redis://127.0.0.1:$port lk -- true")
fi
echo "redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on port $port; $(nproc) CPUs"
echo "ffkit: $bin${old:+; old: $old}"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
n=${#names[@]}
sets=${SETS:-5}
files=()
for ((s = 0; s < sets; s++)); do
  files+=("$out/set$s.json")
  args=()
  for ((i = 0; i < n; i++)); do
    j=$(((i + s) % n))
    args+=(-n "${names[j]}" "${cmds[j]}")
  done
  hyperfine -N --warmup "${WARMUP:-20}" --runs "${RUNS:-100}" \
    --export-json "$out/set$s.json" "${args[@]}" >/dev/null
  jq -r --arg s "$s" --arg load "$(cut -d' ' -f1 /proc/loadavg)" '
    [.results[] | {(.command): .median}] | add as $m
    | "set \($s): " + ([$m | to_entries[] | "\(.key) \(.value * 1e6 | round / 1000) ms"] | join(", "))
      + " (load \($load))"' "$out/set$s.json"
done
jq -s -r '
  def med: sort | if length % 2 == 1 then .[length / 2 | floor]
                  else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def r2: . * 100 | round / 100;
  [.[] | [.results[] | {(.command): .median}] | add] as $sets
  | [["ffkit", "floor"], ["c-round", "floor"], ["ffkit", "c-round"],
     ["old", "floor"], ["ffkit", "old"]][]
  | . as [$a, $b]
  | select($sets[0][$a] != null and $sets[0][$b] != null)
  | [$sets[] | .[$a] / .[$b]] as $r
  | "\($a) / \($b): median of \($r | length) set medians \($r | med | r2)x (sets: \([$r[] | r2] | map(tostring) | join(", ")))"
' "${files[@]}"
# Every run of every set pooled: each command's median over all its runs.
jq -s -r '
  def med: sort | if length % 2 == 1 then .[length / 2 | floor]
                  else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  [.[].results[]] | group_by(.command)
  | map({key: .[0].command, value: ([.[].times[]] | med)}) | from_entries as $m
  | "pooled medians (\($m | length) commands): " + ([$m | to_entries[] | "\(.key) \(.value * 1e6 | round / 1000) ms"] | join(", "))
    + "; ffkit/floor \($m.ffkit / $m.floor * 100 | round / 100)x, c-round/floor \($m["c-round"] / $m.floor * 100 | round / 100)x, ffkit/c-round \($m.ffkit / $m["c-round"] * 100 | round / 100)x"
    + (if $m.old then ", ffkit/old \($m.ffkit / $m.old * 1000 | round / 1000)x" else "" end)
' "${files[@]}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
