#!/usr/bin/env bash
# count-write.sh: system calls and instructions per cache write of a NEW
# key, for the binary and the builtin (BENCHMARKS.md, "Writes: system calls
# and instructions"). Counts, not times: they do not depend on how loaded
# the machine is, so a change can be judged on a busy machine; the wall
# clock is scripts/bench-write.sh's, on a quiet one.
#
#   scripts/count-write.sh                       # target/dist/ffkit + builtin
#   scripts/count-write.sh OLD_BIN OLD_SO        # another build, to compare
#   MONITORING=disabled scripts/count-write.sh   # without the metrics row
#
# Binary: one `cache-write --dir D kN v` into a dir that holds one entry and
# its index, traced whole (`strace -f -c`) and run under callgrind; ffkit's
# own start is `cache-read -q` in a dir that does not exist (start-up,
# argv, config, one failed stat), subtracted. Builtin: one bash that loads
# it and writes N new keys with `write_cache_with_metadata`, minus the same
# bash writing none, divided by N (the shell function's own work included).
# Needs: strace, valgrind (callgrind_annotate), bash.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/dist/ffkit}
so=${2:-$root/target/dist/libffkit_builtin.so}
N=${N:-100}
[[ -x $bin && -f $so ]] || { echo "run cargo xtask dist first (or name a binary and a builtin)" >&2; exit 1; }
export CACHE_PERF_MONITORING=${MONITORING:-enabled}
work=$(mktemp -d "${TMPDIR:-/tmp}/ffkit-count-write.XXXXXX")
trap 'rm -rf "$work"' EXIT

calls() { awk '$NF == "total" { print $4 }' "$1"; }
instr() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'; }
"$bin" cache-write --dir "$work/c" k0 v
strace -f -qq -c -o "$work/write.strace" "$bin" cache-write --dir "$work/c" k1 v
valgrind -q --tool=callgrind --callgrind-out-file="$work/write.cg" "$bin" cache-write --dir "$work/c" k2 v
w_sys=$(calls "$work/write.strace") w_ir=$(instr "$work/write.cg")
strace -f -qq -c -o "$work/start.strace" "$bin" cache-read -q --dir "$work/none" k || [[ $? == 4 ]]
valgrind -q --tool=callgrind --callgrind-out-file="$work/start.cg" "$bin" cache-read -q --dir "$work/none" k || [[ $? == 4 ]]
s_sys=$(calls "$work/start.strace") s_ir=$(instr "$work/start.cg")

builtin() { # N TOOL... -> runs the tool on a bash writing N new keys
    local n=$1
    shift
    mkdir -p "$work/repo$n/.git"
    # shellcheck disable=SC2016 # the script is for the inner bash
    (cd "$work/repo$n" && FFKIT_BIN=$bin FFKIT_BUILTIN=$so FLOWFORGE_DEVELOPER=count "$@" bash -c '
        . "$1"
        [[ $(type -t ffkit) == builtin ]] || { echo "builtin not loaded" >&2; exit 9; }
        write_cache_with_metadata k v 0
        for ((i = 0; i < $2; i++)); do write_cache_with_metadata "n$i" v 0; done
    ' bash "$root/shell/ffkit.bash" "$n")
}
builtin 0 strace -f -qq -c -o "$work/b0.strace"
builtin "$N" strace -f -qq -c -o "$work/bn.strace"
builtin 0 valgrind -q --tool=callgrind --callgrind-out-file="$work/b0.cg"
builtin "$N" valgrind -q --tool=callgrind --callgrind-out-file="$work/bn.cg"
per() { awk -v a="$1" -v b="$2" -v n="$N" 'BEGIN { printf "%.1f", (a - b) / n }'; }
b_sys=$(per "$(calls "$work/bn.strace")" "$(calls "$work/b0.strace")")
b_ir=$(per "$(instr "$work/bn.cg")" "$(instr "$work/b0.cg")")

echo "$bin, CACHE_PERF_MONITORING=$CACHE_PERF_MONITORING, $(date -u +%FT%TZ)"
echo "| one write of a new key | system calls | instructions (Ir) |"
echo "|---|---|---|"
echo "| binary, whole call | $w_sys | $w_ir |"
echo "| binary, ffkit's own start (\`cache-read -q\`, no dir) | $s_sys | $s_ir |"
echo "| binary, above its start | $((w_sys - s_sys)) | $((w_ir - s_ir)) |"
echo "| builtin \`write_cache_with_metadata\` (per write, N=$N) | $b_sys | $b_ir |"
