#!/usr/bin/env bash
# ab-pair-blocks.sh: the builtin's acquire+release pair against bash's
# `read -r x <file`, for several builds alternated per round, each bash
# pinned to one CPU (BENCHMARKS.md, "Sixth pass on the lock pair"). Inside
# one bash, blocks of B pairs and B reads alternate K times, so a host
# disturbance hits both sides of a block; prints the ratio of the sums and
# that of the least-disturbed (fastest) blocks.
#
#   scripts/ab-pair-blocks.sh OLD_DIR NEW_DIR    # each holds ffkit + libffkit_builtin.so
#   CPU=1 B=50 K=80 ROUNDS=4 scripts/ab-pair-blocks.sh A B
#
# On a VM whose vCPUs run at different speeds, unpinned runs mix them (the
# same bash took 25 or 40 µs per pair): compare builds on one CPU.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
B=${B:-50}
K=${K:-80}
ROUNDS=${ROUNDS:-4}
CPU=${CPU:-0}
(($#)) || { echo "usage: $0 BUILD_DIR..." >&2; exit 2; }
for d in "$@"; do
    [[ -x $d/ffkit && -f $d/libffkit_builtin.so ]] || { echo "$d: no ffkit + libffkit_builtin.so" >&2; exit 1; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/ffkit-ab-blocks.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/repo/.git"

for ((r = 1; r <= ROUNDS; r++)); do
    for d in "$@"; do
        (
            cd "$work/repo"
            rm -rf .flowforge
            # shellcheck disable=SC2016 # expanded by the inner bash
            FFKIT_BIN=$d/ffkit FLOWFORGE_DEVELOPER=bench taskset -c "$CPU" bash -c '
                . "$1"; B=$2 K=$3
                write_cache_with_metadata k v 0
                echo 12345 >"$PWD/num"
                rd() { read -r x <"$PWD/num"; }
                pair() { acquire_critical_lock L; release_critical_lock L; }
                for ((i = 0; i < 300; i++)); do pair; rd; done
                out=""
                for ((k = 0; k < K; k++)); do
                    s=$EPOCHREALTIME
                    for ((i = 0; i < B; i++)); do pair; done
                    e=$EPOCHREALTIME
                    s2=$EPOCHREALTIME
                    for ((i = 0; i < B; i++)); do rd; done
                    e2=$EPOCHREALTIME
                    out+="$s $e $s2 $e2
"
                done
                printf "%s" "$out" | awk -v d="$4" -v B="$B" -v l="$(cut -d" " -f1 /proc/loadavg)" "
                    NR == 1 { mp = 1e9; mq = 1e9 }
                    { p = \$2 - \$1; q = \$4 - \$3; if (p < mp) mp = p; if (q < mq) mq = q; P += p; Q += q }
                    END { printf \"%-28s load %-5s all: pair %6.2f read %6.2f µs = %.3fx   fastest: pair %6.2f read %6.2f µs = %.3fx\n\",
                                 d, l, P * 1e6 / (NR * B), Q * 1e6 / (NR * B), P / Q, mp * 1e6 / B, mq * 1e6 / B, mp / mq }"
            ' bash "$root/shell/ffkit.bash" "$B" "$K" "$d"
        )
    done
done
