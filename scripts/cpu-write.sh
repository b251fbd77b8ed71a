#!/usr/bin/env bash
# cpu-write.sh: CPU time (user + system) per write of a NEW key, the honest
# floor (scripts/ref_write_new.c) against the builtin's
# write_cache_with_metadata (BENCHMARKS.md, "Issue 27's write goal, sixth
# pass"). CPU time, not wall time: on a shared machine the wall clock
# counts the waits for a CPU, which swing the ratio either way; the time a
# write keeps a CPU busy does not wait.
#
#   BENCH_DIR=/mnt/e scripts/cpu-write.sh                       # this build
#   BENCH_DIR=/mnt/e scripts/cpu-write.sh OLD/ffkit OLD/libffkit_builtin.so
#
# Prints "floor_us builtin_us ratio". The floor's time is the C program's
# (/usr/bin/time); the builtin's is bash's own (`times`) for N writes minus
# the same loop without the call, over N. Needs: cc, bash, /usr/bin/time.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/dist/ffkit}
so=${2:-$root/target/dist/libffkit_builtin.so}
N=${N:-3000}
[[ -x $bin && -f $so ]] || { echo "run cargo xtask dist first (or name a binary and a builtin)" >&2; exit 1; }
work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/ffkit-cpu-write.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/repo/.git" "$work/floor"
cc -O2 -o "$work/ref" "$root/scripts/ref_write_new.c"
floor=$({ /usr/bin/time -f "%U %S" "$work/ref" "$work/floor" "$N" >/dev/null; } 2>&1 |
    tail -1 | awk -v n="$N" '{ printf "%.1f", ($1 + $2) * 1e6 / n }')
# shellcheck disable=SC2016 # the script is for the inner bash
builtin=$(cd "$work/repo" && FFKIT_BIN=$bin FFKIT_BUILTIN=$so FLOWFORGE_DEVELOPER=cpu bash -c '
    . "$1"
    [[ $(type -t ffkit) == builtin ]] || { echo "builtin not loaded" >&2; exit 9; }
    n=$2 tf=$3
    # `times` runs in this shell (in a command substitution it would time
    # a subshell); its first line (user, system) is read back.
    cpu() { awk "NR == 1 { gsub(/[ms]/, \" \"); print \$1 * 60 + \$2 + \$3 * 60 + \$4 }" "$tf"; }
    write_cache_with_metadata k v 0
    c=0
    times >"$tf"; s=$(cpu)
    for ((i = 0; i < n; i++)); do ((++c)); write_cache_with_metadata "n$c" v 0; done
    times >"$tf"; m=$(cpu)
    for ((i = 0; i < n; i++)); do ((++c)); done
    times >"$tf"; e=$(cpu)
    awk -v s="$s" -v m="$m" -v e="$e" -v n="$n" "BEGIN { printf \"%.1f\", ((m - s) - (e - m)) * 1e6 / n }"
' bash "$root/shell/ffkit.bash" "$N" "$work/times")
awk -v f="$floor" -v b="$builtin" 'BEGIN { printf "%s %s %.2f\n", f, b, b / f }'
