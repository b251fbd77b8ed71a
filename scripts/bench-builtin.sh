#!/usr/bin/env bash
# bench-builtin.sh: per-call cost of the shell functions inside one bash,
# with the ffkit bash builtin loaded and with FFKIT_BUILTIN=off (the binary),
# against bash's own `read -r x <file` and against the raw system calls of a
# cache write. Prints a markdown table (BENCHMARKS.md, "The bash builtin").
#
#   scripts/bench-builtin.sh            # N=10000 (fallback path: N/10)
#   N=1000 scripts/bench-builtin.sh     # quicker
#   RSS_CALLS=1000000 scripts/bench-builtin.sh   # RSS before/after that many calls
#   STRACE=1 scripts/bench-builtin.sh   # also: system calls per acquire+release
#                                       # pair (strace -f -c of 10 vs 210 pairs)
#
# Needs the shipped build: cargo xtask dist (the binary and the builtin), cc.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# BIN and SO name another build (its libffkit_builtin.so must sit beside
# its ffkit, where shell/ffkit.bash looks for it), for an A/B run.
bin=${BIN:-$root/target/dist/ffkit}
so=${SO:-$root/target/dist/libffkit_builtin.so}
[[ -x $bin && -f $so ]] || { echo "run cargo xtask dist first" >&2; exit 1; }
N=${N:-10000}
NB=$((N / 10))
RSS_CALLS=${RSS_CALLS:-1000000}
work=$(mktemp -d /tmp/ffkit-bench-builtin.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/repo/.git"

# The raw system calls of one write_cache_with_metadata: create + write +
# rename for the value and for the sidecar.
cat >"$work/raw.c" <<'EOF'
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    const char *meta = "{\"key\":\"k\",\"created_at\":1,\"expires_at\":null,\"ttl\":0,\"size\":1}\n";
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) {
        int fd = open(".tmp-v", O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || write(fd, "v", 1) != 1) return 1;
        close(fd);
        if (rename(".tmp-v", "k")) return 1;
        fd = open(".tmp-m", O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || write(fd, meta, strlen(meta)) < 0) return 1;
        close(fd);
        if (rename(".tmp-m", "k.meta")) return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.2f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / n);
    return 0;
}
EOF
cc -O2 -o "$work/raw" "$work/raw.c"
mkdir -p "$work/raw-dir"
raw_us=$(cd "$work/raw-dir" && "$work/raw" "$N")

# One bash per mode; each case is timed with EPOCHREALTIME around a loop.
run_mode() {
    local mode=$1
    (
        cd "$work/repo"
        export FFKIT_BIN=$bin FLOWFORGE_DEVELOPER=bench
        if [[ $mode == off ]]; then export FFKIT_BUILTIN=off; else unset FFKIT_BUILTIN; fi
        bash -c '
            set -euo pipefail
            . "$1"
            n=$2 mode=$3
            t() { local s=$EPOCHREALTIME i; for ((i = 0; i < n; i++)); do "$@"; done; local e=$EPOCHREALTIME
                  awk -v s="$s" -v e="$e" -v n="$n" "BEGIN { printf \"%.2f\", (e - s) * 1e6 / n }"; }
            write_cache_with_metadata k v 0
            get_cache_size >/dev/null
            echo 12345 >"$PWD/num"
            rd() { read -r x <"$PWD/num"; }
            nop() { :; }
            pair() { acquire_critical_lock L; release_critical_lock L; }
            # Every case is one function call per iteration, like rd and nop.
            gcs() { get_cache_size >/dev/null; }
            rct() { read_cache_with_ttl k >/dev/null; }
            rpm() { record_performance_metric op 1 2; }
            wcm() { write_cache_with_metadata k v 0; }
            csv() { ffkit cache-size -v sz; }
            if [[ $mode != off ]]; then
                [[ $(type -t ffkit) == builtin ]] || { echo "builtin not loaded" >&2; exit 1; }
                printf "read\t%s\n" "$(t rd)"
                printf "loop\t%s\n" "$(t nop)"
                printf "cache-size -v\t%s\n" "$(t csv)"
            fi
            printf "get_cache_size\t%s\n" "$(t gcs)"
            printf "read_cache_with_ttl\t%s\n" "$(t rct)"
            printf "record_performance_metric\t%s\n" "$(t rpm)"
            printf "acquire+release\t%s\n" "$(t pair)"
            printf "write_cache_with_metadata\t%s\n" "$(t wcm)"
        ' bash "$root/shell/ffkit.bash" "$2" "$mode"
    )
}

declare -A on off
while IFS=$'\t' read -r k v; do on[$k]=$v; done < <(run_mode auto "$N")
while IFS=$'\t' read -r k v; do off[$k]=$v; done < <(run_mode off "$NB")

rss=$(
    cd "$work/repo"
    FFKIT_BIN=$bin FLOWFORGE_DEVELOPER=bench bash -c '
        . "$1"; get_cache_size >/dev/null
        for ((i = 0; i < 1000; i++)); do ffkit cache-size -v n; done
        a=$(awk "/VmRSS/ {print \$2}" /proc/$$/status)
        for ((i = 0; i < $2; i++)); do ffkit cache-size -v n; read_cache_with_ttl x >/dev/null 2>&1 || :; done
        b=$(awk "/VmRSS/ {print \$2}" /proc/$$/status)
        echo "$a $b"' bash "$root/shell/ffkit.bash" "$RSS_CALLS"
)

read_us=${on[read]}
echo "bash ${BASH_VERSION}, N=$N (binary path N=$NB), $(nproc) CPUs, $(date -u +%FT%TZ)"
echo "empty loop iteration: ${on[loop]} µs; read -r x <file: $read_us µs; raw syscalls of a write: $raw_us µs"
echo
echo "| call | builtin µs | ratio | goal | binary path µs |"
echo "|---|---|---|---|---|"
for k in "cache-size -v" get_cache_size read_cache_with_ttl record_performance_metric acquire+release; do
    r=$(awk -v a="${on[$k]}" -v b="$read_us" 'BEGIN { printf "%.1f", a / b }')
    printf '| \x60%s\x60 | %s | %s× read | ≤ 3× | %s |\n' "$k" "${on[$k]}" "$r" "${off[$k]:--}"
done
r=$(awk -v a="${on[write_cache_with_metadata]}" -v b="$raw_us" 'BEGIN { printf "%.1f", a / b }')
printf '| \x60write_cache_with_metadata\x60 | %s | %s× raw | ≤ 1.5× | %s |\n' "${on[write_cache_with_metadata]}" "$r" "${off[write_cache_with_metadata]}"
read -r rss_a rss_b <<<"$rss"
echo
echo "RSS of the shell: $rss_a kB after 1,000 calls, $rss_b kB after $RSS_CALLS more pairs of calls"

# System calls per uncontended pair, as the bench loop makes them (the
# metrics log exists): the difference between 210 and 10 pairs, / 200.
if [[ ${STRACE-} == 1 ]] && command -v strace >/dev/null; then
    pairs_calls() {
        (
            cd "$work/repo"
            # shellcheck disable=SC2016 # -- expanded by the inner bash
            FFKIT_BIN=$bin FLOWFORGE_DEVELOPER=bench strace -f -c -o "$work/strace.$1" bash -c '
                . "$1"; write_cache_with_metadata k v 0
                for ((i = 0; i < $2; i++)); do acquire_critical_lock L; release_critical_lock L; done
            ' bash "$root/shell/ffkit.bash" "$1" >/dev/null
            awk '$NF == "total" { print $4 }' "$work/strace.$1"
        )
    }
    a=$(pairs_calls 10)
    b=$(pairs_calls 210)
    echo "system calls per acquire+release pair: $(((b - a) / 200))"
fi
