#!/usr/bin/env bash
# The Redis backend against the local one (BENCHMARKS.md, "Redis backend"):
# uncontended lock + release (command mode and a named pair), cache write
# and read, on a loopback redis-server this script starts (no persistence,
# its own temp dir) and stops; then 8 x 50 locked increments on Redis
# against the local kernel lock (scripts/bench-contend.sh).
#
# Usage: scripts/bench-redis.sh [FFKIT_BIN]   (default: target/dist/ffkit, `cargo xtask dist`)
# Needs: hyperfine, redis-server, redis-cli, jq.
set -euo pipefail
bin=$(realpath "${1:-target/dist/ffkit}")
[[ -x $bin ]] || { echo "bench-redis.sh: no $bin: run cargo xtask dist first" >&2; exit 1; }
here=$(dirname "$(realpath "$0")")
# shellcheck source=scripts/redis-lib.sh
. "$here/redis-lib.sh"
redis_bench_setup redis
url=redis://127.0.0.1:$port
export CACHE_PERF_MONITORING=enabled FFKIT_CACHE_DIR=$W/c FFKIT_LOCK_DIR=$W/locks
# The URL goes on the command line (`--backend`), not through `env`: an
# `env` in front would be a second process start (about 1 ms here) that the C
# floor does not pay, half of what used to be reported as ffkit's cost.
R="--backend $url"
echo "redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on $url; $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"

"$bin" cache-write k v
"$bin" cache-write --backend "$url" k v

run() { # NAME LOCAL REDIS
  hyperfine -N --warmup 20 --runs "${RUNS:-300}" --export-json "$out/$1.json" \
    -n local "$2" -n redis "$3" >/dev/null
  jq -r --arg n "$1" '.results | "\($n): local \(.[0].median*1000 | . * 1000 | round / 1000) ms, redis \(.[1].median*1000 | . * 1000 | round / 1000) ms (\(.[1].median / .[0].median * 100 | round / 100)x)"' "$out/$1.json"
}
run lock-command "$bin lock-acquire $W/lk -- true" "$bin lock-acquire $R lk -- true"
run lock-named-pair "sh -c '$bin lock-acquire n && $bin lock-release n'" \
  "sh -c '$bin lock-acquire $R n && $bin lock-release $R n'"
run cache-write "$bin cache-write k v" "$bin cache-write $R k v"
run cache-read "$bin cache-read k" "$bin cache-read $R k"
run cache-size "$bin cache-size" "$bin cache-size $R"
# Issue 24's floor: a minimal C client, one process start and one round
# trip (scripts/ref_redis_roundtrip.c), against ffkit's call on Redis.
cc -O2 -o "$W/floor" "$here/ref_redis_roundtrip.c"
floor() { # NAME FLOOR-WORDS FFKIT-CALL
  hyperfine -N --warmup 20 --runs "${RUNS:-300}" --export-json "$out/floor-$1.json" \
    -n floor "$W/floor $port $2" -n ffkit "$3" >/dev/null
  jq -r --arg n "$1" '.results | "\($n) vs the C floor: floor \(.[0].median*1000 | . * 1000 | round / 1000) ms, ffkit \(.[1].median*1000 | . * 1000 | round / 1000) ms (\(.[1].median / .[0].median * 100 | round / 100)x)"' "$out/floor-$1.json"
}
floor cache-read "GET x" "$bin cache-read $R k"
floor cache-write "SET x v" "$bin cache-write $R k v"
floor lock-round "SET x v" "$bin lock-acquire $R lk -- true"
# The honest minimum of a lock round, in C: one process start, one connect,
# an acquire (one round trip), posix_spawnp of the command, wait, a release
# (one round trip): scripts/ref_redis_lockround.c. Against the floor it says
# what a lock round cannot go below; against it, what ffkit adds. For a
# robust ratio (sets rotated, medians of set medians, an old build beside
# the new) use scripts/bench-redis-round.sh.
cc -O2 -o "$W/lockround" "$here/ref_redis_lockround.c"
hyperfine -N --warmup 20 --runs "${RUNS:-300}" --export-json "$out/floor-lock-round-c.json" \
  -n floor "$W/floor $port SET x v" -n c-round "$W/lockround $port true" \
  -n ffkit "$bin lock-acquire $R lk -- true" >/dev/null
jq -r '.results | "lock round in C (the honest minimum) vs the C floor: \(.[1].median / .[0].median * 100 | round / 100)x; ffkit vs that round: \(.[2].median / .[1].median * 100 | round / 100)x"' \
  "$out/floor-lock-round-c.json"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
# cache-run: a hit (one read, replay), and a miss (--force: take the
# per-key lock, run the command, store, release).
"$bin" cache-run --ttl 0 -- true
"$bin" cache-run --backend "$url" --ttl 0 -- true
run cache-run-hit "$bin cache-run --ttl 0 -- true" "$bin cache-run $R --ttl 0 -- true"
run cache-run-miss "$bin cache-run --force -- true" "$bin cache-run $R --force -- true"

# 8 x 50 contention: the local kernel lock against Redis (BLPOP wake-ups).
hyperfine --warmup 1 --runs "${CONTEND_RUNS:-5}" --export-json "$out/contend.json" \
  -n local "$here/bench-contend.sh ffkit $bin $W/ctr" \
  -n redis "FFKIT_BACKEND=$url $here/bench-contend.sh ffkit $bin $W/rctr" >/dev/null
jq -r '.results | "8x50 contention: local \(.[0].median*1000 | round) ms, redis \(.[1].median*1000 | round) ms (\(.[1].median / .[0].median * 100 | round / 100)x)"' "$out/contend.json"
for t in ctr rctr; do
  sort -n "$W/$t.waits" | awk -v t="$t" '{a[NR]=$1} END {
    i = int(NR * 0.99 + 0.999); if (i < 1) i = 1
    printf "p99 wait (%s): %d ms over %d increments\n", (t == "ctr" ? "local" : "redis"), a[i], NR }'
done
