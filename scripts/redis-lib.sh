# redis-lib.sh: sourced by the Redis benchmarks (bench-redis.sh,
# bench-redis-round.sh). `start_redis DIR` starts a loopback redis-server
# with no persistence in DIR on a random free port (20 tries) and sets
# `port` and `pid`; `stop_redis` stops it (for the caller's EXIT trap).
# `redis_bench_setup NAME` is a benchmark's whole set-up: a work dir `W`
# (/tmp/ffkit-bench-NAME.*), the output dir `out` (BENCH_OUT, default
# target/bench/NAME), an EXIT trap that stops the server and removes `W`,
# and the server started in `W` (exit 1, naming bench-NAME.sh, when it
# cannot start).
# shellcheck shell=bash
pid=
port=
W=
out=
start_redis() {
  local dir=$1
  for _ in $(seq 20); do
    port=$((20000 + RANDOM % 20000))
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
      >"$dir/redis.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
      redis-cli -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.05
    done
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
  done
  return 1
}
stop_redis() {
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  pid=
}
redis_bench_setup() {
  W=$(mktemp -d "/tmp/ffkit-bench-$1.XXXXXX")
  out=${BENCH_OUT:-target/bench/$1}
  mkdir -p "$out"
  trap redis_bench_cleanup EXIT
  start_redis "$W" || { echo "bench-$1.sh: cannot start redis-server" >&2; exit 1; }
}
redis_bench_cleanup() {
  stop_redis
  rm -rf "$W"
}
