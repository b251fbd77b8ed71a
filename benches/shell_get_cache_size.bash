#!/usr/bin/env bash
# Measures get_cache_size from shell/ffkit.bash: N calls in one bash process
# through the builtin path (a valid .size-index read with `read`), against N
# runs of the binary (`ffkit cache-size --dir DIR`), each both as a plain
# call and captured with $(...) as scripts do.
#
#   FFKIT_BIN=target/release/ffkit benches/shell_get_cache_size.bash [N]
set -euo pipefail
n=${1:-1000}
: "${FFKIT_BIN:?set FFKIT_BIN to the ffkit binary}"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../shell/ffkit.bash
. "$here/../shell/ffkit.bash"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/.git"
cd "$tmp"
export CACHE_PERF_MONITORING=disabled
write_cache_with_metadata key value 0
dir=$tmp/.flowforge/cache

now_us() {
    local t=${EPOCHREALTIME/[.,]/}
    printf -v "$1" '%s' "$t"
}

measure() {
    local label=$1 start='' end='' i=0 size=''
    shift
    now_us start
    for ((i = 0; i < n; i++)); do
        case $1 in
            builtin) get_cache_size '' >/dev/null ;;
            builtin-capture) size=$(get_cache_size '') ;;
            binary) "$FFKIT_BIN" cache-size --dir "$dir" >/dev/null ;;
            binary-capture) size=$("$FFKIT_BIN" cache-size --dir "$dir") ;;
        esac
    done
    now_us end
    : "$size"
    printf '%-18s %6d calls  %9.1f ms total  %7.2f us/call\n' "$label" "$n" \
        "$(((end - start) / 1000)).$(((end - start) % 1000 / 100))" \
        "$(((end - start) / n)).$(((end - start) * 100 / n % 100))"
    last=$((end - start))
}

last=0
measure 'builtin' builtin
b=$last
measure 'binary' binary
x=$last
measure 'builtin, captured' builtin-capture
bc=$last
measure 'binary, captured' binary-capture
xc=$last
printf 'ratio binary/builtin: %d.%dx   captured: %d.%dx\n' \
    "$((x / b))" "$((x * 10 / b % 10))" "$((xc / bc))" "$((xc * 10 / bc % 10))"
