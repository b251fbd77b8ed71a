# shellcheck shell=bash
# tests/oldlib.bash: a faithful emulation of the old FlowForge bash
# library's lock functions, for the mixed tests (tests/it/builtin.rs,
# "old library"). It takes a lock by creating the file exclusively
# (noclobber) with its shell's pid, breaks a file whose mtime is more than
# 300 s old (deletes it, then tries again), waits with the
# LOCK_BACKOFF_STRATEGY loop (exponential 0.1 s doubling to 2 s, or linear
# 0.5 s) up to LOCK_TIMEOUT (30 s), and releases by deleting the file.
# Exit codes: 6 after the timeout.

old_acquire_lock() {
    local lock=$1 timeout=${LOCK_TIMEOUT:-30} delay mtime now
    local start=$SECONDS
    if [[ ${LOCK_BACKOFF_STRATEGY:-exponential} == linear ]]; then delay=0.5; else delay=0.1; fi
    mkdir -p "$(dirname "$lock")"
    while :; do
        if (set -C; echo "$$" >"$lock") 2>/dev/null; then
            return 0
        fi
        if mtime=$(stat -c %Y "$lock" 2>/dev/null); then
            now=$(date +%s)
            if ((now - mtime > 300)); then
                rm -f "$lock"
                continue
            fi
        fi
        if ((SECONDS - start >= ${timeout%.*})); then
            return 6
        fi
        sleep "$delay"
        if [[ ${LOCK_BACKOFF_STRATEGY:-exponential} != linear ]]; then
            delay=$(awk -v d="$delay" 'BEGIN { d *= 2; if (d > 2) d = 2; print d }')
        fi
    done
}

old_release_lock() {
    rm -f "$1"
}
