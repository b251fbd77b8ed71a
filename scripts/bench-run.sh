#!/usr/bin/env bash
# cache-run hits, interleaved A/B: a small and a 10 MB hit against a
# cache-read of the same bytes, bkt's hit, `cat` of the file and /bin/true
# (process start alone). BENCHMARKS.md, section "cache-run hits: system
# calls and instructions", gives the counts these wall-clock ratios are to
# confirm on a quiet machine.
#
# Interleaved: ROUNDS rounds, each one short hyperfine run per command, the
# order rotated every round, so a load that comes and goes hits every
# command alike. A command's time is the median of its per-round medians;
# the ratios are of those.
#
# Usage: scripts/bench-run.sh [OUT]   (OUT defaults to target/bench/run)
# Env:   BKT     the bkt binary (default: bkt on PATH, else /tmp/bkt/bin/bkt;
#                `cargo install bkt --root /tmp/bkt`, not a dependency of
#                ffkit). Without it the bkt rows are left out, saying so.
#        ROUNDS  rounds (default 10); RUNS hyperfine runs per command and
#                round (default 50; a fifth of that for 10 MB)
# Needs: cargo, hyperfine, jq, awk.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-$ROOT/target/bench/run}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROUNDS=${ROUNDS:-10}
RUNS=${RUNS:-50}

for tool in cargo hyperfine jq awk; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench-run.sh: $tool is required" >&2; exit 1; }
done
BKT=${BKT:-$(command -v bkt || echo /tmp/bkt/bin/bkt)}
if [[ ! -x $BKT ]]; then
  echo "bench-run.sh: bkt not found: its rows are SKIPPED (cargo install bkt --root /tmp/bkt)" >&2
  BKT=
fi

log() { printf 'bench-run.sh: %s\n' "$*" >&2; }

log "building the shipped binary (cargo xtask dist: static-pie, DEVELOPERS.md)"
CARGO_TERM_QUIET=true cargo xtask dist
BIN=$ROOT/target/dist/ffkit

W=$(mktemp -d "${TMPDIR:-/tmp}/ffkit-bench-run.XXXXXX")
cleanup() { rm -rf "$W"; }
trap cleanup EXIT
log "fixtures in $W"

# Defaults as a user has them (the metrics row is on by default).
unset CACHE_PERF_MONITORING CACHE_SIZE_TRACKING CACHE_PERF_METRICS FFKIT_CACHE_DIR LOCK_TIMEOUT FFKIT_BACKEND
head -c 10485760 /dev/urandom >"$W/f10m"
printf 'hello\n' | "$BIN" cache-write --dir "$W/c" --ttl 0 small
"$BIN" cache-write --dir "$W/c" --ttl 0 big - <"$W/f10m"
# Prime every cache-run and bkt entry (the first call is the miss).
"$BIN" cache-run --dir "$W/c" --ttl 0 -- echo hello >/dev/null
"$BIN" cache-run --dir "$W/c" --ttl 0 -- cat "$W/f10m" >/dev/null
if [[ -n $BKT ]]; then
  "$BKT" --cache-dir="$W/bkt" --ttl=1d -- echo hello >/dev/null
  "$BKT" --cache-dir="$W/bkt" --ttl=1d -- cat "$W/f10m" >/dev/null
fi

# shellcheck source=scripts/hyperfine-lib.sh
source "$ROOT/scripts/hyperfine-lib.sh"

# One case: NAME RUNS SHELL LABEL=CMD... (SHELL: -N to run without a shell,
# else "sh" for commands with pipes); writes "LABEL median-of-medians" lines.
interleaved() {
  local name=$1 runs=$2 shell=()
  [[ $3 == -N ]] && shell=(-N)
  shift 3
  local cmds=()
  for pair in "$@"; do
    [[ -n ${pair#*=} ]] && cmds+=("$pair")
  done
  local n=${#cmds[@]} r i
  for ((r = 0; r < ROUNDS; r++)); do
    local order=()
    for ((i = 0; i < n; i++)); do order+=("${cmds[(i + r) % n]}"); done
    compare "$name.$r" "${shell[@]}" -w 3 -r "$runs" -- "${order[@]}"
  done
  for pair in "${cmds[@]}"; do
    local label=${pair%%=*}
    for ((r = 0; r < ROUNDS; r++)); do median "$name.$r" "$label"; done |
      sort -g | awk -v l="$label" '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%s %.6f\n", l, m }'
  done >"$OUT/$name.medians"
}

ms() { awk -v l="$2" '$1 == l { print $2 }' "$OUT/$1.medians"; }
ROWS=()
row() { # CASE WHAT A B GOAL
  local a b
  a=$(ms "$1" "$3")
  b=$(ms "$1" "$4")
  [[ -n $a && -n $b ]] || { ROWS+=("| $2 | $3 | $4 | SKIPPED | | | |"); return; }
  ROWS+=("$(awk -v what="$2" -v la="$3" -v lb="$4" -v a="$a" -v b="$b" -v goal="$5" 'BEGIN {
    r = a / b; v = "-"
    if (goal != "-") { v = (r <= goal + 0) ? "met" : "**missed**" }
    printf "| %s | %s | %s | %.3f ms | %.3f ms | %.2fx | %s |", what, la, lb, a * 1000, b * 1000, r, (goal == "-" ? "-" : "<= " goal "x: " v)
  }')")
}

S_RUN="$BIN cache-run --dir $W/c --ttl 0 -- echo hello"
S_READ="$BIN cache-read --dir $W/c small"
S_BKT=${BKT:+"$BKT --cache-dir=$W/bkt --ttl=1d -- echo hello"}
interleaved small "$RUNS" -N "run=$S_RUN" "read=$S_READ" "bkt=$S_BKT" "true=/bin/true"
row small "small hit vs cache-read" run read 1.05
row small "small hit vs bkt" run bkt 1.0
row small "process start (/bin/true) vs small hit" true run -

L_RUN="$BIN cache-run --dir $W/c --ttl 0 -- cat $W/f10m"
L_READ="$BIN cache-read --dir $W/c big"
L_BKT=${BKT:+"$BKT --cache-dir=$W/bkt --ttl=1d -- cat $W/f10m"}
interleaved big $((RUNS / 5 > 0 ? RUNS / 5 : 1)) sh "run=$L_RUN | cat >/dev/null" \
  "read=$L_READ | cat >/dev/null" "bkt=${L_BKT:+$L_BKT | cat >/dev/null}" \
  "cat=cat $W/f10m | cat >/dev/null" "true=/bin/true | cat >/dev/null"
row big "10 MB hit vs cat (through a pipe)" run cat 2.0
row big "10 MB hit vs cache-read" run read -
row big "10 MB hit vs bkt" run bkt -

T=$(ms small true)
{
  echo "Interleaved medians of $ROUNDS rounds (hyperfine, -N for the small case, through a pipe into cat for 10 MB)."
  echo "ratio = first / second, lower is better. Small hit above process start (/bin/true, $(awk -v t="$T" 'BEGIN { printf "%.3f", t * 1000 }') ms):"
  for l in run read bkt; do
    v=$(ms small "$l")
    [[ -z $v ]] || awk -v l="$l" -v v="$v" -v t="$T" 'BEGIN { printf "  %s: %.3f ms\n", l, (v - t) * 1000 }'
  done
  echo
  echo "| what | first | second | first | second | ratio | goal |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/table.md"
