#!/usr/bin/env bash
# cache-run side by side with cache-read, cat, bkt and the bare command
# (BENCHMARKS.md, section "cache-run").
#
# Builds the shipped binary (`cargo xtask dist`), creates fixtures in a temp dir, runs hyperfine
# (each comparison exported as JSON and markdown under OUT) and prints one
# markdown table of ratios (medians) with the exact commands and the goals.
#
# Usage: scripts/bench-cache-run.sh [OUT]   (OUT defaults to target/bench/cache-run)
# Env:   BKT   the bkt binary (default: bkt on PATH, else /tmp/bkt/bin/bkt;
#              `cargo install bkt --root /tmp/bkt` — not a dependency of ffkit).
#              Without it the bkt rows are left out, saying so.
#        RUNS  hyperfine runs per command for the small cases (default 300)
# Needs: cargo, hyperfine, jq, awk.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-$ROOT/target/bench/cache-run}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RUNS=${RUNS:-300}

for tool in cargo hyperfine jq awk; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench-cache-run.sh: $tool is required" >&2; exit 1; }
done
BKT=${BKT:-$(command -v bkt || echo /tmp/bkt/bin/bkt)}
if [[ ! -x $BKT ]]; then
  echo "bench-cache-run.sh: bkt not found: its rows are SKIPPED (cargo install bkt --root /tmp/bkt)" >&2
  BKT=
fi

log() { printf 'bench-cache-run.sh: %s\n' "$*" >&2; }

log "building the shipped binary (cargo xtask dist: static-pie, DEVELOPERS.md)"
CARGO_TERM_QUIET=true cargo xtask dist
BIN=$ROOT/target/dist/ffkit

W=$(mktemp -d "${TMPDIR:-/tmp}/ffkit-bench-run.XXXXXX")
cleanup() { rm -rf "$W"; }
trap cleanup EXIT
log "fixtures in $W"

unset CACHE_PERF_MONITORING CACHE_SIZE_TRACKING CACHE_PERF_METRICS FFKIT_CACHE_DIR LOCK_TIMEOUT
C="--dir $W/c"
B="--cache-dir=$W/bkt --ttl=1d"
head -c 1048576 /dev/urandom >"$W/f1m"
head -c 10485760 /dev/urandom >"$W/f10m"
printf 'hello\n' | "$BIN" cache-write --dir "$W/c" small
# Prime every entry once (the first call is the miss).
for cmd in "echo hello" "cat $W/f1m" "cat $W/f10m"; do
  # shellcheck disable=SC2086 # -- word splitting of the command is intended
  "$BIN" cache-run $C --ttl 0 -- $cmd >/dev/null
  # shellcheck disable=SC2086 # -- the same, for bkt
  [[ -z $BKT ]] || "$BKT" $B -- $cmd >/dev/null
done

ROWS=()
# shellcheck source=scripts/hyperfine-lib.sh
source "$ROOT/scripts/hyperfine-lib.sh"
show() { local s=${1//"$BIN"/ffkit}; s=${s//"$BKT"/bkt}; s=${s//"$W"/\$W}; printf '%s' "${s//|/\\|}"; }
row() { # WHAT NAME LABEL_A CMD_A LABEL_B CMD_B GOAL
  [[ -n $4 && -n $6 ]] || { ROWS+=("| $1 | SKIPPED: bkt not installed | | | | | | |"); return; }
  local a b
  a=$(median "$2" "$3")
  b=$(median "$2" "$5")
  ROWS+=("$(awk -v what="$1" -v a="$a" -v b="$b" -v goal="$7" -v xa="$(show "$4")" -v xb="$(show "$6")" '
    BEGIN {
      r = a / b
      verdict = "-"
      if (goal != "-") {
        split(goal, g, " ")
        verdict = (r <= g[2]) ? "met" : "**missed**"
      }
      printf "| %s | `%s` | `%s` | %.2f ms | %.2f ms | %.2f× | %s | %s |", what, xa, xb, a * 1000, b * 1000, r, goal == "-" ? "-" : goal "×", verdict
    }')")
}

# Small output: a hit vs cache-read of the same bytes vs bkt's hit.
R_RUN="$BIN cache-run $C --ttl 0 -- echo hello"
R_READ="$BIN cache-read $C small"
R_BKT=${BKT:+"$BKT $B -- echo hello"}
compare small -N -w 20 -r "$RUNS" -- "cache-run=$R_RUN" "cache-read=$R_READ" "bkt=$R_BKT"
row "small hit vs cache-read" small cache-run "$R_RUN" cache-read "$R_READ" "<= 1.1"
row "small hit vs bkt" small cache-run "$R_RUN" bkt "$R_BKT" "-"

# 1 MB and 10 MB hits vs cat of a file that size (and bkt), output to
# /dev/null (-N) and through a pipe (the shell and the reading cat are the
# same on both sides).
for size in 1m 10m; do
  H_RUN="$BIN cache-run $C --ttl 0 -- cat $W/f$size"
  H_CAT="cat $W/f$size"
  H_BKT=${BKT:+"$BKT $B -- cat $W/f$size"}
  compare "hit$size" -N -w 5 -r $((RUNS / 3)) -- "cache-run=$H_RUN" "cat=$H_CAT" "bkt=$H_BKT"
  row "${size^^}B hit vs cat (to /dev/null)" "hit$size" cache-run "$H_RUN" cat "$H_CAT" "<= 2.0"
  row "${size^^}B hit vs bkt (to /dev/null)" "hit$size" cache-run "$H_RUN" bkt "$H_BKT" "-"
  compare "pipe$size" -w 5 -r $((RUNS / 3)) -- "cache-run=$H_RUN | cat >/dev/null" "cat=$H_CAT | cat >/dev/null" \
    "bkt=${H_BKT:+$H_BKT | cat >/dev/null}"
  row "${size^^}B hit vs cat (through a pipe)" "pipe$size" cache-run "$H_RUN | cat >/dev/null" cat "$H_CAT | cat >/dev/null" "<= 2.0"
  row "${size^^}B hit vs bkt (through a pipe)" "pipe$size" cache-run "$H_RUN | cat >/dev/null" bkt "${H_BKT:+$H_BKT | cat >/dev/null}" "-"
done

# Miss overhead: --force runs and stores every time (lock, capture, write).
M_RUN="$BIN cache-run $C --ttl 0 --force -- echo hello"
M_BARE="echo hello"
compare miss -N -w 20 -r "$RUNS" -- "cache-run=$M_RUN" "bare=$M_BARE"
row "miss (--force) vs the command" miss cache-run "$M_RUN" bare "$M_BARE" "-"
M_RUN10="$BIN cache-run $C --ttl 0 --force -- cat $W/f10m"
M_BARE10="cat $W/f10m"
compare miss10m -N -w 3 -r $((RUNS / 10)) -- "cache-run=$M_RUN10" "bare=$M_BARE10"
row "10MB miss (--force) vs the command" miss10m cache-run "$M_RUN10" bare "$M_BARE10" "-"

{
  echo "ratio = median wall time of the first command / median of the second (hyperfine; lower is better)."
  echo
  echo "| what | command | baseline | first | baseline | ratio | goal | verdict |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/table.md"
