# redis-lib.sh: sourced by the Redis benchmarks (bench-redis.sh,
# bench-redis-round.sh). `start_redis DIR` starts a loopback redis-server
# with no persistence in DIR on a random free port (20 tries) and sets
# `port` and `pid`; `stop_redis` stops it (for the caller's EXIT trap).
# shellcheck shell=bash
pid=
port=
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
