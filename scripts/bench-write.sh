#!/usr/bin/env bash
# bench-write.sh: cache writes against the honest floor (BENCHMARKS.md,
# "Writes against the honest floor").
#
# The floor is scripts/ref_write_new.c: per write, O_EXCL create + write +
# rename for the value and for the sidecar, NEW names each time, in C (no
# lock, no index, no journal). Users write new keys; the old baseline
# rewrote the same two files, and on ext4 a rename over an existing file
# flushes the new file's data first, which made that baseline slow and
# ffkit look good against it. Both baselines are printed, so the
# difference shows.
#
# Measured, every one in the same file system (BENCH_DIR, default TMPDIR):
#   - the floor, new keys and the old rewrite of one key;
#   - `write_cache_with_metadata` with the builtin loaded, new keys and one key
#     (a bash loop; the loop's own cost, counter included, is printed and
#     subtracted);
#   - `ffkit cache-write` through the binary, new keys, minus `/bin/true`
#     run the same way (process start excluded, as far as a process start
#     is /bin/true's), and ffkit's own start (`ffkit cache-read -q` in a dir
#     that does not exist: start-up, argv, config, one failed stat).
# CACHE_PERF_MONITORING is left at its default (enabled) unless
# MONITORING=disabled is given: a user's write appends its self-timing row.
#
#   cargo xtask dist && scripts/bench-write.sh           # 5 rounds of N=2000 (binary: N/4)
#   ROUNDS=3 N=500 scripts/bench-write.sh                # quicker
#   BIN=old/ffkit SO=old/libffkit_builtin.so scripts/bench-write.sh   # another build
# Needs: the shipped build (`cargo xtask dist`: binary and builtin), cc, bash.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/target/dist/ffkit}
so=${SO:-$root/target/dist/libffkit_builtin.so}
[[ -x $bin && -f $so ]] || { echo "run cargo xtask dist first" >&2; exit 1; }
N=${N:-2000}
NB=$((N / 4))
ROUNDS=${ROUNDS:-5}
work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/ffkit-bench-write.XXXXXX")
trap 'rm -rf "$work"' EXIT
export CACHE_PERF_MONITORING=${MONITORING:-enabled}
cc -O2 -o "$work/ref" "$root/scripts/ref_write_new.c"

# Through the binary: a bash loop of NB calls, each given the new key
# n<counter> (and the value, when V is set). /bin/true is run the same way,
# and so is ffkit's own start: a read of a key in a dir that does not exist
# (start-up, argv, config, one failed stat; exit 4).
exec_us() { # DIR CMD... -> µs per call
    (cd "$1" && shift && bash -c '
        n=$1
        shift
        c=0 s=$EPOCHREALTIME
        for ((i = 0; i < n; i++)); do ((++c)); "$@" "n$c" ${V+"$V"} || [[ $? == 4 ]]; done
        e=$EPOCHREALTIME
        awk -v s="$s" -v e="$e" -v n="$n" "BEGIN { printf \"%.2f\", (e - s) * 1e6 / n }"
    ' bash "$NB" "$@")
}

# With the builtin loaded, in one bash: new keys, one key, the empty loop.
builtin_us() { # REPO -> "new over loop" µs per call
    (cd "$1" && FFKIT_BIN=$bin FFKIT_BUILTIN=$so FLOWFORGE_DEVELOPER=bench bash -c '
        set -euo pipefail
        . "$1"
        n=$2
        [[ $(type -t ffkit) == builtin ]] || { echo "builtin not loaded" >&2; exit 1; }
        t() { local s=$EPOCHREALTIME i; for ((i = 0; i < n; i++)); do "$@"; done; local e=$EPOCHREALTIME
              awk -v s="$s" -v e="$e" -v n="$n" "BEGIN { printf \"%.2f\", (e - s) * 1e6 / n }"; }
        c=0
        new() { ((++c)); write_cache_with_metadata "n$c" v 0; }
        over() { ((++c)); write_cache_with_metadata k v 0; }
        nop() { ((++c)); }
        write_cache_with_metadata k v 0
        echo "$(t new) $(t over) $(t nop)"
    ' bash "$root/shell/ffkit.bash" "$N")
}

# The machine is shared: every measurement is taken once per round, the
# rounds interleave them, and the table shows medians.
declare -A all
for ((r = 0; r < ROUNDS; r++)); do
    d=$work/r$r
    mkdir -p "$d/floor-new" "$d/floor-over" "$d/repo/.git" "$d/bin"
    all[floor_new]+=" $("$work/ref" "$d/floor-new" "$N")"
    all[floor_over]+=" $("$work/ref" "$d/floor-over" "$N" over)"
    read -r a b c < <(builtin_us "$d/repo")
    all[b_new]+=" $a" all[b_over]+=" $b" all[b_loop]+=" $c"
    all[bin_new]+=" $(V=v exec_us "$d" "$bin" cache-write --dir "$d/bin")"
    all[bin_true]+=" $(V=v exec_us "$d" /bin/true)"
    all[bin_start]+=" $(exec_us "$d" "$bin" cache-read -q --dir "$d/none")"
    rm -rf "$d"
done
median() { tr ' ' '\n' <<<"${all[$1]}" | grep . | sort -g | awk '{ v[NR] = $1 } END { printf "%.1f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
floor_new=$(median floor_new)
floor_over=$(median floor_over)
b_new=$(median b_new) b_over=$(median b_over) b_loop=$(median b_loop)
bin_new=$(median bin_new) bin_true=$(median bin_true) bin_start=$(median bin_start)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }
fs=$(df -T "$work" | awk 'NR == 2 { print $2 }')
echo "bash ${BASH_VERSION}, $fs at $work, medians of $ROUNDS rounds of N=$N (binary N=$NB), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg) at the end, CACHE_PERF_MONITORING=$CACHE_PERF_MONITORING, $(date -u +%FT%TZ)"
echo
echo "| write (µs per write) | µs | vs the floor (new keys) |"
echo "|---|---|---|"
echo "| floor: C, O_EXCL + write + rename ×2, new keys | $floor_new | 1.0× |"
echo "| old baseline: C, the same key rewritten | $floor_over | $(ratio "$floor_over" "$floor_new")× |"
bn=$(minus "$b_new" "$b_loop")
bo=$(minus "$b_over" "$b_loop")
echo "| builtin \`write_cache_with_metadata\`, new keys (loop of $b_loop µs subtracted) | $bn | $(ratio "$bn" "$floor_new")× |"
echo "| builtin \`write_cache_with_metadata\`, one key rewritten | $bo | $(ratio "$bo" "$floor_new")× |"
echo "| binary \`ffkit cache-write\`, new keys, whole call | $bin_new | $(ratio "$bin_new" "$floor_new")× |"
bt=$(minus "$bin_new" "$bin_true")
echo "| binary, minus \`/bin/true\` ($bin_true µs) | $bt | $(ratio "$bt" "$floor_new")× |"
bs=$(minus "$bin_new" "$bin_start")
echo "| binary, minus ffkit's own start ($bin_start µs: \`cache-read -q\` in no dir) | $bs | $(ratio "$bs" "$floor_new")× |"
