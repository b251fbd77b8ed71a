#!/usr/bin/env bash
# Whole-process benchmarks of ffkit against the tools it replaces or
# competes with (cat, du, /bin/true, a raw C program, flock(1), jq).
#
# Builds the shipped binary (`cargo xtask dist`), creates fixtures in a temp dir, runs hyperfine
# (each comparison exported as JSON and markdown under OUT), and prints one
# markdown table of ratios (ffkit time / baseline time, medians) with the
# exact commands and the goals from the issues.
#
# Usage: scripts/bench.sh [OUT]        (OUT defaults to target/bench)
# Env:   BENCH_DIR   where fixtures go (default: a fresh dir under TMPDIR;
#                    the file system matters a lot, see BENCHMARKS.md)
#        BENCH_SMALL=1  10x smaller fixtures and fewer runs (for testing the script)
# Needs: cargo, cc, hyperfine, jq, flock, /usr/bin/time, awk.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-$ROOT/target/bench}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

for tool in cargo cc hyperfine jq flock awk /usr/bin/time; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench.sh: $tool is required" >&2; exit 1; }
done

SCALE=1
RUNS=30
if [[ ${BENCH_SMALL:-} == 1 ]]; then SCALE=10; RUNS=5; fi
N100K=$((100000 / SCALE))
N10K=$((10000 / SCALE))
NROWS=$((1000000 / SCALE))
NROWS_BIG=$((10000000 / SCALE))

log() { printf 'bench.sh: %s\n' "$*" >&2; }

log "building the shipped binary (cargo xtask dist: static-pie, DEVELOPERS.md)"
CARGO_TERM_QUIET=true cargo xtask dist
BIN=$ROOT/target/dist/ffkit

W=${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/ffkit-bench.XXXXXX")}
mkdir -p "$W"
W=$(cd "$W" && pwd)
cleanup() { rm -rf "$W"; }
trap cleanup EXIT
log "fixtures in $W"

cc -O2 -o "$W/ref_batch" scripts/ref_batch.c
has() { "$BIN" --list | grep -qx "$1"; }

# ---- fixtures -------------------------------------------------------------
# Fixed-width keys and values: every entry (value + sidecar) has the same
# size, so "evict 10%" removes exactly a tenth of the entries.
gen_entries() { # COUNT FILE
  awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) printf "k%07d:%032d\n", i, i }' >"$2"
}
gen_entries "$N100K" "$W/in100k"
gen_entries "$N10K" "$W/in10k"

mk_cache() { # DIR INPUT
  "$BIN" cache-batch --dir "$1" --ttl 0 --file "$2"
  # The batch leaves an exact index; --verify proves it (exit 10 otherwise)
  # and warms the dentry cache the same way for every later command.
  "$BIN" cache-size --dir "$1" --verify >/dev/null
}
log "creating the $N100K-entry cache"
mk_cache "$W/c100k" "$W/in100k"
log "creating the $N10K-entry cache"
mk_cache "$W/c10k" "$W/in10k"
"$BIN" cache-write --dir "$W/small" k v

# ---- measuring ------------------------------------------------------------
ROWS=()
# Each `compare` call is one hyperfine invocation; results land in
# $OUT/NAME.{json,md}. Commands are given as NAME=COMMAND pairs.
# shellcheck source=scripts/hyperfine-lib.sh
source "$ROOT/scripts/hyperfine-lib.sh"
cpu() { # NAME LABEL -> mean user + system seconds
  jq -r --arg l "$2" '.results[] | select(.command == $l) | .user + .system' "$OUT/$1.json"
}
# How a command is shown: the binary as `ffkit`, the fixture dir as $W.
show() { local s=${1//"$BIN"/ffkit}; s=${s//"$W"/\$W}; printf '%s' "${s//|/\\|}"; }
# One table row: ratio = median(A) / median(B); GOAL like "<= 1.2" or "-".
row() { # WHAT NAME LABEL_A CMD_A LABEL_B CMD_B GOAL
  local a b ca cb
  a=$(median "$2" "$3")
  b=$(median "$2" "$5")
  ca=$(cpu "$2" "$3")
  cb=$(cpu "$2" "$5")
  ROWS+=("$(awk -v what="$1" -v a="$a" -v b="$b" -v ca="$ca" -v cb="$cb" -v goal="$7" -v xa="$(show "$4")" -v xb="$(show "$6")" '
    BEGIN {
      r = a / b
      verdict = "-"
      if (goal != "-") {
        split(goal, g, " ")
        ok = (g[1] == "<=") ? (r <= g[2]) : (r >= g[2])
        verdict = ok ? "met" : "**missed**"
      }
      cr = (cb > 0) ? sprintf("%.2f×", ca / cb) : "-"
      printf "| %s | `%s` | `%s` | %.2f ms | %.2f ms | %.2f× | %s | %s | %s |", what, xa, xb, a * 1000, b * 1000, r, cr, goal == "-" ? "-" : goal "×", verdict
    }')")
}
note_row() { ROWS+=("| $1 | $2 | | | | | | $3 | $4 |"); }

# Self-timing (CACHE_PERF_MONITORING) is left at its default, enabled, for
# every ffkit command; its cost is reported separately below.
unset CACHE_PERF_MONITORING CACHE_SIZE_TRACKING CACHE_PERF_METRICS FFKIT_CACHE_DIR

# cache-size (O(1) index read) vs cat of the index.
C_SIZE="$BIN cache-size --dir $W/c100k"
C_CAT="cat $W/c100k/.size-index"
compare size -N -w 20 -r $((RUNS * 10)) -- "ffkit=$C_SIZE" "cat=$C_CAT"
row "size, $N100K entries" size ffkit "$C_SIZE" cat "$C_CAT" "<= 1.2"

# The walk vs du -sb.
for n in c10k c100k; do
  if [[ $n == c10k ]]; then cnt=$N10K; else cnt=$N100K; fi
  V="$BIN cache-size --dir $W/$n --verify"
  D="$BIN cache-size --dir $W/$n"
  DU="du -sb $W/$n"
  CACHE_SIZE_TRACKING=disabled compare "walk-$n" -N -w 3 -r "$RUNS" -- \
    "verify=$V" "disabled=$D" "du=$DU"
  row "walk --verify, $cnt entries" "walk-$n" verify "$V" du "$DU" "<= 1.0"
  row "walk tracking=disabled, $cnt entries" "walk-$n" disabled "CACHE_SIZE_TRACKING=disabled $D" du "$DU" "<= 1.0"
done

# cache-write / cache-read of a small value vs /bin/true.
C_W="$BIN cache-write --dir $W/small k v"
C_R="$BIN cache-read --dir $W/small k"
compare write-read -N -w 20 -r $((RUNS * 10)) -- "write=$C_W" "read=$C_R" "true=/bin/true"
row "cache-write (overwrite)" write-read write "$C_W" true /bin/true "<= 1.5"
row "cache-read" write-read read "$C_R" true /bin/true "<= 1.5"

# Self-timing overhead: the same commands with monitoring enabled vs disabled
# (both through env(1), so both pay the same extra exec).
for op in size write; do
  if [[ $op == size ]]; then c=$C_SIZE; else c=$C_W; fi
  compare "selftiming-$op" -N -w 20 -r $((RUNS * 10)) -- \
    "enabled=env CACHE_PERF_MONITORING=enabled $c" "disabled=env CACHE_PERF_MONITORING=disabled $c"
  row "self-timing overhead ($op)" "selftiming-$op" enabled "CACHE_PERF_MONITORING=enabled ${c}" \
    disabled "CACHE_PERF_MONITORING=disabled ${c}" "-"
done

# cache-batch of N10K fresh entries vs the raw C program.
C_B="$BIN cache-batch --dir $W/batch --file $W/in10k"
C_RB="$W/ref_batch $W/batch $W/in10k"
compare batch -N -w 1 -r "$RUNS" --prepare "rm -rf $W/batch" -- "ffkit=$C_B" "raw=$C_RB"
row "cache-batch $N10K entries" batch ffkit "$C_B" raw "$C_RB" "<= 2.0"
rate=$(awk -v t="$(median batch ffkit)" -v n="$N10K" 'BEGIN { printf "%.0f", n / t }')
ROWS+=("| cache-batch throughput | \`$(show "$C_B")\` | | | | $rate entries/s | | ≥ 10000/s | $( ((rate >= 10000)) && echo met || echo '**missed**') |")

# The same on tmpfs (when there is one): the engine's own overhead, without
# the disk's metadata cost that dominates on ext4.
if [[ $(df -T /dev/shm 2>/dev/null | awk 'NR == 2 { print $2 }') == tmpfs ]]; then
  S=$(mktemp -d /dev/shm/ffkit-bench.XXXXXX)
  C_BS="$BIN cache-batch --dir $S/batch --file $W/in10k"
  C_RBS="$W/ref_batch $S/batch $W/in10k"
  compare batch-tmpfs -N -w 1 -r "$RUNS" --prepare "rm -rf $S/batch" -- "ffkit=$C_BS" "raw=$C_RBS"
  row "cache-batch $N10K entries, tmpfs" batch-tmpfs ffkit "$C_BS" raw "$C_RBS" "<= 2.0"
  rate=$(awk -v t="$(median batch-tmpfs ffkit)" -v n="$N10K" 'BEGIN { printf "%.0f", n / t }')
  ROWS+=("| cache-batch throughput, tmpfs | \`$(show "$C_BS")\` | | | | $rate entries/s | | ≥ 10000/s | $( ((rate >= 10000)) && echo met || echo '**missed**') |")
  rm -rf "$S"
fi

# Evicting 10% of N100K vs walking (du) plus unlinking the same files.
total=$(cat "$W/c100k/.size-index")
max=$((total - total / 10))
"$BIN" cache-evict --dir "$W/c100k" --max-bytes "$max" --dry-run --json |
  jq -r '.removed[].key | ., . + ".meta"' >"$W/victims"
C_E="$BIN cache-evict --dir $W/ev --max-bytes $max"
C_DU_RM="du -sb $W/ev >/dev/null && cd $W/ev && xargs rm -f < $W/victims"
compare evict -w 0 -r 3 --prepare "rm -rf $W/ev && cp -a $W/c100k $W/ev" -- \
  "ffkit=$C_E" "raw=$C_DU_RM"
row "evict 10% of $N100K" evict ffkit "$C_E" raw "$C_DU_RM" "-"

# ---- locks ----------------------------------------------------------------
LOCK=$W/lockfile
: >"$LOCK"
if has lock-acquire; then
  C_L="$BIN lock-acquire $LOCK -- true"
  C_F="flock $LOCK true"
  compare lock -N -w 20 -r $((RUNS * 10)) -- "ffkit=$C_L" "flock=$C_F"
  row "lock-acquire uncontended" lock ffkit "$C_L" flock "$C_F" "<= 1.1"

  # 8 processes x 50 locked increments; every critical section logs its
  # wait (process spawned -> lock held) for the p99.
  CON=$ROOT/scripts/bench-contend.sh
  C_LC="$CON ffkit $BIN $W/ctr"
  C_FC="$CON flock $BIN $W/ctr"
  compare contention -w 1 -r 5 --prepare "rm -f $W/ctr.*" -- "ffkit=$C_LC" "flock=$C_FC"
  row "8 × 50 locked increments" contention ffkit "$C_LC" flock "$C_FC" "<= 1.0"
  for t in ffkit flock; do
    "$CON" "$t" "$BIN" "$W/ctr-$t" >/dev/null
    p99=$(sort -n "$W/ctr-$t.waits" | awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.1f", v[i] }')
    ROWS+=("| p99 wait, $t | 8 × 50 increments | | | | $p99 ms | | ≤ 40 ms | $(awk -v p="$p99" 'BEGIN { print (p <= 40) ? "met" : "**missed**" }') |")
  done
else
  note_row "lock-acquire" "not built yet (no lock-acquire applet)" "≤ 1.1×" "-"
fi

# ---- metrics --------------------------------------------------------------
gen_rows() { # COUNT FILE
  awk -v n="$1" 'BEGIN {
    split("write_cache read_cache get_cache_size batch_write enforce_cache_limits lock_acquire lock_release batch_read", op, " ")
    srand(42)
    for (i = 0; i < n; i++) printf "%d,%s,%.3f\n", 1700000000 + int(i / 100), op[i % 8 + 1], rand() * 20
  }' >"$2"
}
if has perf-metrics; then
  gen_rows "$NROWS" "$W/rows1m.csv"
  # shellcheck disable=SC2016 # -- a jq program, not shell
  JQ_FILTER='reduce (inputs | split(",") | select(length == 3)) as $r ({}; .[$r[1]] |= (.count += 1 | .total += ($r[2] | tonumber))) | map_values(.avg = .total / .count)'
  printf '%s\n' "$JQ_FILTER" >"$W/agg.jq"
  C_PM="$BIN perf-metrics --json"
  C_JQ="jq -R -n -f $W/agg.jq $W/rows1m.csv"
  CACHE_PERF_METRICS=$W/rows1m.csv compare aggregate -N -w 1 -r 5 -- "ffkit=$C_PM" "jq=$C_JQ"
  row "aggregate $NROWS rows" aggregate ffkit "CACHE_PERF_METRICS=\$W/rows1m.csv $C_PM" jq "$C_JQ" "<= 0.1"

  C_REC="$BIN perf-metrics record bench_op 1.5"
  CACHE_PERF_METRICS=$W/rec.csv compare record -N -w 20 -r $((RUNS * 10)) -- "ffkit=$C_REC" "true=/bin/true"
  row "perf-metrics record" record ffkit "CACHE_PERF_METRICS=\$W/rec.csv $C_REC" true /bin/true "<= 1.2"
else
  note_row "perf-metrics" "not built yet (no perf-metrics applet)" "-" "-"
fi

# ---- memory and size --------------------------------------------------------
rss_kib() { # CMD... -> peak RSS in KiB (/usr/bin/time -v)
  /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ { print $2 }'
}
FLOCK_RSS=$(rss_kib flock "$LOCK" true)
rss_row() { # WHAT CMD...
  local what=$1 kib
  shift
  kib=$(rss_kib "$@")
  ROWS+=("| peak RSS, $what | \`$(show "$*")\` | \`flock L true\` | | | $((kib)) KiB vs $FLOCK_RSS KiB | | ≤ flock + 2048 KiB | $( ((kib <= FLOCK_RSS + 2048)) && echo met || echo '**missed**') |")
}
rss_row cache-size "$BIN" cache-size --dir "$W/c100k"
rss_row cache-write "$BIN" cache-write --dir "$W/small" k v
rss_row cache-read "$BIN" cache-read --dir "$W/small" k
rm -rf "$W/batch"
rss_row "cache-batch $N10K" "$BIN" cache-batch --dir "$W/batch" --file "$W/in10k"
rss_row "cache-size --verify $N100K" "$BIN" cache-size --dir "$W/c100k" --verify
rss_row "cache-evict --dry-run $N10K" "$BIN" cache-evict --dir "$W/c10k" --max-bytes 1 --dry-run
rss_row "cache-evict --dry-run $N100K" "$BIN" cache-evict --dir "$W/c100k" --max-bytes 1 --dry-run
if has lock-acquire; then rss_row lock-acquire "$BIN" lock-acquire "$LOCK" -- true; fi
if has perf-metrics; then
  rss_row "perf-metrics record" env CACHE_PERF_METRICS="$W/rec.csv" "$BIN" perf-metrics record bench_op 1.5
  rss_row "perf-metrics --json $NROWS rows" env CACHE_PERF_METRICS="$W/rows1m.csv" "$BIN" perf-metrics --json
  rm -f "$W/rows1m.csv"
  gen_rows "$NROWS_BIG" "$W/rows10m.csv"
  kib=$(CACHE_PERF_METRICS=$W/rows10m.csv rss_kib "$BIN" perf-metrics --json)
  ROWS+=("| peak RSS, aggregate $NROWS_BIG rows | \`CACHE_PERF_METRICS=\$W/rows10m.csv ffkit perf-metrics --json\` | | | | $kib KiB | | ≤ 65536 KiB | $( ((kib <= 65536)) && echo met || echo '**missed**') |")
  rm -f "$W/rows10m.csv"
fi
strip -o "$W/ffkit.stripped" "$BIN"
ROWS+=("| binary size (stripped, static-pie) | \`strip target/dist/ffkit\` | | | | $(stat -c %s "$W/ffkit.stripped") bytes | | - | - |")

# ---- shell wrapper ----------------------------------------------------------
if [[ -f shell/ffkit.bash ]]; then
  # The wrappers' legacy namespace: .flowforge/cache under the git top level.
  R=$W/repo
  mkdir -p "$R/.git"
  (cd "$R" && FFKIT_BIN=$BIN bash -c '. "$1"; write_cache_with_metadata key value 0' _ "$ROOT/shell/ffkit.bash")
  C_SH="bash -c 'cd $R && FFKIT_BIN=$BIN && . $ROOT/shell/ffkit.bash && for ((i = 0; i < 1000; i++)); do get_cache_size \"\" >/dev/null; done'"
  C_SB="bash -c 'for ((i = 0; i < 1000; i++)); do $BIN cache-size --dir $R/.flowforge/cache >/dev/null; done'"
  compare shell -w 1 -r 5 -- "builtin=$C_SH" "binary=$C_SB"
  row "1000 × get_cache_size: builtin path vs binary" shell builtin "$C_SH" binary "$C_SB" "-"
fi

# ---- the table --------------------------------------------------------------
{
  echo "Date: $(date -u +%Y-%m-%dT%H:%MZ); machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r); fixtures on $(df -T "$W" | awk 'NR == 2 { print $2 }') ($W)"
  echo
  echo "ratio = median wall time of the ffkit command / median of the baseline (hyperfine; lower is better);"
  echo "cpu = the same for mean user+system CPU time (less sensitive to other load on a shared machine)."
  echo
  echo "| what | ffkit command | baseline | ffkit | baseline | ratio | cpu | goal | verdict |"
  echo "|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/table.md"
log "hyperfine exports and log in $OUT"
