#!/usr/bin/env bash
# ab-pair.sh: the builtin's acquire+release pair against bash's
# `read -r x <file`, for several builds alternated in the same run
# (BENCHMARKS.md, "Fifth pass on the lock pair"). Each round starts one
# bash per build that times N pairs and N reads (after 300 of each as a
# warm-up) by the wall clock (EPOCHREALTIME) and by its own on-CPU time
# (`times`: user + system, which a busy machine disturbs less), and prints
# both ratios with the load average.
#
#   scripts/ab-pair.sh OLD_DIR NEW_DIR        # each holds ffkit + libffkit_builtin.so
#   N=4000 ROUNDS=5 scripts/ab-pair.sh A B
#   COUNT=1 scripts/ab-pair.sh A B            # also instructions per pair and
#                                             # per read (callgrind, whole bash,
#                                             # 410 minus 10 iterations / 400)
#
# The shell functions are this tree's shell/ffkit.bash for every build.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-3000}
ROUNDS=${ROUNDS:-3}
(($#)) || { echo "usage: $0 BUILD_DIR..." >&2; exit 2; }
for d in "$@"; do
    [[ -x $d/ffkit && -f $d/libffkit_builtin.so ]] || { echo "$d: no ffkit + libffkit_builtin.so" >&2; exit 1; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/ffkit-ab-pair.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/repo/.git"
lib=$root/shell/ffkit.bash

# shellcheck disable=SC2016 # expanded by the inner bash
body='
    . "$1"; n=$2
    write_cache_with_metadata k v 0
    echo 12345 >"$PWD/num"
    rd() { read -r x <"$PWD/num"; }
    pair() { acquire_critical_lock L; release_critical_lock L; }
'

for ((r = 1; r <= ROUNDS; r++)); do
    for d in "$@"; do
        (
            cd "$work/repo"
            rm -rf .flowforge
            # shellcheck disable=SC2016 # expanded by the inner bash
            FFKIT_BIN=$d/ffkit FLOWFORGE_DEVELOPER=bench bash -c "$body"'
                for ((i = 0; i < 300; i++)); do pair; rd; done
                # On-CPU seconds of this shell (user + system): `times`,
                # whose getrusage is exact (schedstat moves by ticks).
                # (`times` runs in this shell; only the parsing is a child.)
                sec() { awk "NR == 1 { split(\$1, u, /[ms]/); split(\$2, y, /[ms]/); print u[1] * 60 + u[2] + y[1] * 60 + y[2] }" "$1"; }
                m() {
                    local s c0 c1 i e
                    times >"$PWD/t0"
                    s=$EPOCHREALTIME
                    for ((i = 0; i < n; i++)); do "$@"; done
                    e=$EPOCHREALTIME
                    times >"$PWD/t1"
                    c0=$(sec "$PWD/t0") c1=$(sec "$PWD/t1")
                    awk -v s="$s" -v e="$e" -v n="$n" -v a="$c0" -v b="$c1" \
                        "BEGIN { printf \"%.2f %.2f\", (e - s) * 1e6 / n, (b - a) * 1e6 / n }"
                }
                read -r pw pc <<<"$(m pair)"
                read -r rw rc <<<"$(m rd)"
                awk -v pw="$pw" -v pc="$pc" -v rw="$rw" -v rc="$rc" -v d="$3" -v l="$(cut -d" " -f1 /proc/loadavg)" \
                    "BEGIN { printf \"%-28s load %-5s wall: pair %6.2f read %6.2f µs = %.2fx   cpu: pair %6.2f read %6.2f µs = %.2fx\n\", d, l, pw, rw, pw / rw, pc, rc, pc / rc }"
            ' bash "$lib" "$N" "$d"
        )
    done
done

if [[ ${COUNT-} == 1 ]] && command -v valgrind >/dev/null; then
    count() { # DIR ITERATIONS FUNCTION
        (
            cd "$work/repo"
            rm -rf .flowforge
            # shellcheck disable=SC2016 # expanded by the inner bash
            FFKIT_BIN=$1/ffkit FLOWFORGE_DEVELOPER=bench valgrind --tool=callgrind \
                --callgrind-out-file=/dev/null bash -c "$body"'
                for ((i = 0; i < $3; i++)); do $4; done' bash "$lib" 0 "$2" "$3" 2>&1 |
                awk '/refs:/ { gsub(",", "", $NF); print $NF }' | tail -1
        )
    }
    for d in "$@"; do
        p=$(($(count "$d" 410 pair) - $(count "$d" 10 pair)))
        q=$(($(count "$d" 410 rd) - $(count "$d" 10 rd)))
        awk -v p="$p" -v q="$q" -v d="$d" 'BEGIN { printf "%-28s instructions: pair %d read %d = %.2fx\n", d, p / 400, q / 400, p / q }'
    done
fi
