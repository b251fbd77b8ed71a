# shellcheck shell=bash
#
# ffkit.bash: FlowForge's cache, lock and metrics shell functions, as thin
# wrappers over the ffkit binary. Source it from bash (4.1 or later) or zsh:
#
#     . /path/to/ffkit.bash          # or:  eval "$(ffkit init bash)"
#
# It defines the old library's functions (docs/shell.md) with their
# names, arguments, output and success/failure. See docs/shell.md.
#
# Sourcing this file defines functions and, in bash 4.4 or later, loads the
# ffkit bash builtin when one is found (see "The bash builtin" at the end
# and docs/shell.md); it prints nothing, sets no variable and changes no
# shell option, trap or IFS.
# Private names start with _ffkit_. The few private globals (the held-lock
# table and the cached namespace answers) are created by the first call that
# needs them, never by sourcing.
#
# Every function starts with the same line: in zsh it makes the function's
# options zsh's defaults plus 0-based arrays, restored on return, so the
# caller's options (sh_word_split, ksh emulation, ...) cannot change how
# this code runs; only the caller's errexit is kept, as bash keeps it: a
# function that turns errexit off locally makes zsh forget the caller's
# `set -e` once an ERR trap has run (the script went on after a failed
# acquire_critical_lock). In bash, and so in zsh under errexit, the code is
# written to be correct under any of set -e/-u/-o pipefail, any IFS and any
# shopt. The second line turns bash's `set -k` (keyword: every `NAME=value`
# argument becomes an environment assignment) off for the function alone
# (`local -`, bash 4.4+): under it `local x=…` and `export X=…` lost their
# arguments, and the fallback printed `export`'s list of every exported
# variable on stdout instead of answering.

# ---------------------------------------------------------------------------
# Private helpers
# ---------------------------------------------------------------------------

# One error line on stderr.
_ffkit_err() {
    # One line, whatever the message quotes (a name with a newline or tab),
    # escaped as the binary escapes it.
    local m=${1//$'\n'/\\n}
    m=${m//$'\r'/\\r}
    printf 'ffkit.bash: %s\n' "${m//$'\t'/\\t}" >&2
}

# Succeeds when the binary can be run: FFKIT_BIN if set, else ffkit on PATH.
# Otherwise prints one line and fails with status 1. Shell builtins only.
_ffkit_bin_check() {
    if [[ -n ${FFKIT_BIN-} ]]; then
        if [[ -f $FFKIT_BIN && -x $FFKIT_BIN ]]; then
            return 0
        fi
        _ffkit_err "ffkit binary not found (FFKIT_BIN='$FFKIT_BIN' is not an executable file)"
        return 1
    fi
    if [[ -n ${ZSH_VERSION-} ]]; then
        if whence -p ffkit >/dev/null 2>&1; then
            return 0
        fi
    elif type -P ffkit >/dev/null 2>&1; then
        return 0
    fi
    _ffkit_err 'ffkit binary not found (set FFKIT_BIN)'
    return 1
}

# Succeeds when FFKIT_BACKEND names a remote backend (docs/redis.md): set
# to anything but empty or `local` exactly, the binary's and the builtin's
# rule (backend::names_local); the binary refuses what is no URL either.
# `[ != ]` compares bytes; `[[ != ]]` would obey nocasematch (`LOCAL`).
_ffkit_remote() {
    [ -n "${FFKIT_BACKEND-}" ] && [ "${FFKIT_BACKEND-}" != local ]
}

# _ffkit_run LOG ARGS...: runs the binary with ARGS, LOG (the caller's
# cache dir) as FFKIT_FN_LOG_DIR: without CACHE_PERF_METRICS, every row of a
# wrapper-driven operation lands in that dir's log, while the binary accepts
# the dir as the cache accepts a dir ffkit picks (docs/metrics.md). The
# cache functions' ARGS start with the hidden `--fn-dir`: their `--dir` is
# the namespace's dir, checked as a dir ffkit picks (docs/cache.md).
#
# The old library was sourced, so it read plain shell variables, exported or
# not. This is the one place that keeps that true: in bash's subshell (which
# the binary replaces with exec, so it costs no extra process) and as zsh's
# function-local exports (_ffkit_zrun: zsh's subshell would reset the
# signals the caller ignores), every variable
# the binary reads that is set in this shell is exported, whether the caller
# exported it, set it without export, made it `local` in a function, or set
# it for one call (`LOCK_TIMEOUT=1 acquire_critical_lock x`). An unset one
# stays unset: `export NAME` on an unset name puts nothing in the
# environment. The names are config::ENV_VARS, written here by
# `cargo xtask gen` (a test fails when they drift); see docs/shell.md.
_ffkit_run() {
    local _ffkit_l=$1 _ffkit_d='' _ffkit_strip=0
    shift
    # A zsh string may hold NUL bytes; the kernel cuts an argument at the
    # first, so a key `k<NUL>x` would silently be the key `k`. Refused
    # instead (bash strings cannot hold NUL: the test is zsh's alone).
    # (Each argument on its own: "$*" joins them with IFS's first
    # character, which may be a NUL in zsh.)
    if [[ -n ${ZSH_VERSION-} ]]; then
        local _ffkit_x
        for _ffkit_x in "$@"; do
            if [[ $_ffkit_x == *$'\0'* ]]; then
                _ffkit_err 'an argument holds a NUL byte, which no command argument can carry'
                return 2
            fi
        done
    fi
    # On a remote backend (docs/redis.md) the `--dir D` option is dropped:
    # the cache is the namespace's on the server, that of D's developer
    # (_ffkit_dev, which _ffkit_ns set with D), else the default one.
    if _ffkit_remote; then
        local _ffkit_a=() _ffkit_k=0
        while [[ $# -gt 0 ]]; do
            if [[ $1 == --dir && $_ffkit_k == 0 && $# -ge 2 ]]; then
                _ffkit_d=${_ffkit_dev-}
                _ffkit_strip=1
                shift 2
                continue
            fi
            [[ $1 != -- ]] || _ffkit_k=1
            _ffkit_a+=("$1")
            shift
        done
        set -- "${_ffkit_a[@]}"
    fi
    if [[ -n ${ZSH_VERSION-} ]]; then
        _ffkit_zrun "$_ffkit_l" "$_ffkit_strip" "$_ffkit_d" "$@"
    else
        ( _ffkit_exec "$_ffkit_l" "$_ffkit_strip" "$_ffkit_d" "$@" )
    fi
}


# _ffkit_zrun LOG STRIP DEV ARGS...: _ffkit_run's way in zsh: the binary
# as a simple command, each variable of _ffkit_exec's list that is set in
# this shell (exported or not, even empty) forwarded as a function-local
# exported copy, an unset one left out, as _ffkit_exec's exports do. Not
# from a `( )` subshell as in bash: zsh resets there the signals its
# caller ignores (nohup's SIGHUP, a `trap '' INT`), which a command
# started directly inherits ignored (and bash's subshell keeps), so
# `cache_command`'s command lost them.
_ffkit_zrun() {
    local _ffkit_l=$1 _ffkit_s=$2 _ffkit_d=$3 _ffkit_n='' _ffkit_o=() _ffkit_u=()
    shift 3
    # An association among them, read before the copies below hide it:
    # its key 0 in _ffkit_o, or its name in _ffkit_u when it has none.
    # BEGIN GENERATED:env-odd-zsh
    # From config::ENV_VARS by `cargo xtask gen`; do not edit.
    # shellcheck disable=SC2296 # -- zsh's ${(t)NAME}: this is zsh's function
    {
        _ffkit_n=${(t)CACHE_SIZE_TRACKING}${(t)LOCK_BACKOFF_STRATEGY}
        _ffkit_n+=${(t)LOCK_TIMEOUT}${(t)CACHE_PERF_MONITORING}
        _ffkit_n+=${(t)CACHE_PERF_METRICS}${(t)FLOWFORGE_DEVELOPER}
        _ffkit_n+=${(t)FF_DEBUG}${(t)FFKIT_CACHE_DIR}${(t)FFKIT_LOCK_DIR}
        _ffkit_n+=${(t)LOCK_BACKOFF_INITIAL}${(t)LOCK_BACKOFF_MAX}
        _ffkit_n+=${(t)LOCK_STALE_AFTER}${(t)LOCK_OLD_LIBRARY}
        _ffkit_n+=${(t)CACHE_PERF_MAX_BYTES}${(t)FFKIT_BACKEND}
        _ffkit_n+=${(t)FFKIT_BACKEND_TIMEOUT}${(t)FFKIT_BACKEND_CA}
        _ffkit_n+=${(t)FFKIT_LOCK_LEASE}${(t)XDG_CACHE_HOME}
        _ffkit_n+=${(t)XDG_RUNTIME_DIR}${(t)SHELL}${(t)HOME}
        if [[ $_ffkit_n == *association* ]]; then
            for _ffkit_n in CACHE_SIZE_TRACKING LOCK_BACKOFF_STRATEGY \
                LOCK_TIMEOUT CACHE_PERF_MONITORING CACHE_PERF_METRICS \
                FLOWFORGE_DEVELOPER FF_DEBUG FFKIT_CACHE_DIR \
                FFKIT_LOCK_DIR LOCK_BACKOFF_INITIAL LOCK_BACKOFF_MAX \
                LOCK_STALE_AFTER LOCK_OLD_LIBRARY CACHE_PERF_MAX_BYTES \
                FFKIT_BACKEND FFKIT_BACKEND_TIMEOUT FFKIT_BACKEND_CA \
                FFKIT_LOCK_LEASE XDG_CACHE_HOME XDG_RUNTIME_DIR SHELL \
                HOME; do
                [[ ${(Pt)_ffkit_n} == association* ]] || continue
                if eval "[[ -n \${${_ffkit_n}[0]+set} ]]"; then
                    eval "_ffkit_o+=(\"\$_ffkit_n=\${${_ffkit_n}[0]}\")"
                else
                    _ffkit_u+=("$_ffkit_n")
                fi
            done
        fi
    }
    # END GENERATED:env-odd-zsh
    # One statement, each name's word present only when the name is set
    # (`builtin`: zsh's reserved-word `local` would not parse them), and
    # FFKIT_FN_LOG_DIR the caller's cache dir LOG.
    # BEGIN GENERATED:env-forward-zsh
    # From config::ENV_VARS by `cargo xtask gen`; do not edit.
    builtin local -hx \
        ${CACHE_SIZE_TRACKING+"CACHE_SIZE_TRACKING=$CACHE_SIZE_TRACKING"} \
        ${LOCK_BACKOFF_STRATEGY+"LOCK_BACKOFF_STRATEGY=$LOCK_BACKOFF_STRATEGY"} \
        ${LOCK_TIMEOUT+"LOCK_TIMEOUT=$LOCK_TIMEOUT"} \
        ${CACHE_PERF_MONITORING+"CACHE_PERF_MONITORING=$CACHE_PERF_MONITORING"} \
        ${CACHE_PERF_METRICS+"CACHE_PERF_METRICS=$CACHE_PERF_METRICS"} \
        ${FLOWFORGE_DEVELOPER+"FLOWFORGE_DEVELOPER=$FLOWFORGE_DEVELOPER"} \
        ${FF_DEBUG+"FF_DEBUG=$FF_DEBUG"} \
        ${FFKIT_CACHE_DIR+"FFKIT_CACHE_DIR=$FFKIT_CACHE_DIR"} \
        ${FFKIT_LOCK_DIR+"FFKIT_LOCK_DIR=$FFKIT_LOCK_DIR"} \
        ${LOCK_BACKOFF_INITIAL+"LOCK_BACKOFF_INITIAL=$LOCK_BACKOFF_INITIAL"} \
        ${LOCK_BACKOFF_MAX+"LOCK_BACKOFF_MAX=$LOCK_BACKOFF_MAX"} \
        ${LOCK_STALE_AFTER+"LOCK_STALE_AFTER=$LOCK_STALE_AFTER"} \
        ${LOCK_OLD_LIBRARY+"LOCK_OLD_LIBRARY=$LOCK_OLD_LIBRARY"} \
        ${CACHE_PERF_MAX_BYTES+"CACHE_PERF_MAX_BYTES=$CACHE_PERF_MAX_BYTES"} \
        ${FFKIT_BACKEND+"FFKIT_BACKEND=$FFKIT_BACKEND"} \
        ${FFKIT_BACKEND_TIMEOUT+"FFKIT_BACKEND_TIMEOUT=$FFKIT_BACKEND_TIMEOUT"} \
        ${FFKIT_BACKEND_CA+"FFKIT_BACKEND_CA=$FFKIT_BACKEND_CA"} \
        ${FFKIT_LOCK_LEASE+"FFKIT_LOCK_LEASE=$FFKIT_LOCK_LEASE"} \
        ${XDG_CACHE_HOME+"XDG_CACHE_HOME=$XDG_CACHE_HOME"} \
        ${XDG_RUNTIME_DIR+"XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR"} \
        ${SHELL+"SHELL=$SHELL"} \
        ${HOME+"HOME=$HOME"} \
        "FFKIT_FN_LOG_DIR=$_ffkit_l"
    # END GENERATED:env-forward-zsh
    [[ ${#_ffkit_o[@]} -eq 0 ]] || builtin local -hx "${_ffkit_o[@]}"
    [[ ${#_ffkit_u[@]} -eq 0 ]] || builtin unset "${_ffkit_u[@]}"
    [[ $_ffkit_s != 1 ]] || local -x FLOWFORGE_DEVELOPER="$_ffkit_d"
    "${FFKIT_BIN:-ffkit}" "$@"
}

# _ffkit_exec LOG STRIP DEV ARGS...: exports the variables _ffkit_run
# describes, LOG as FFKIT_FN_LOG_DIR (STRIP=1: FLOWFORGE_DEVELOPER=DEV, the
# remote backend's namespace), and execs the binary with ARGS. It replaces
# the process it runs in, so it runs only in one started for it:
# _ffkit_run's subshell, or an asynchronous command (_ffkit_lock_on_fd),
# where the binary is then the shell's own child.
_ffkit_exec() {
    local _ffkit_l=$1 _ffkit_s=$2 _ffkit_d=$3 _ffkit_n='' _ffkit_v='' _ffkit_o=() _ffkit_e=()
    shift 3
    {
        # BEGIN GENERATED:env-forward
        # From config::ENV_VARS by `cargo xtask gen`; do not edit.
        export CACHE_SIZE_TRACKING LOCK_BACKOFF_STRATEGY LOCK_TIMEOUT \
            CACHE_PERF_MONITORING CACHE_PERF_METRICS FLOWFORGE_DEVELOPER \
            FF_DEBUG FFKIT_CACHE_DIR FFKIT_LOCK_DIR LOCK_BACKOFF_INITIAL \
            LOCK_BACKOFF_MAX LOCK_STALE_AFTER LOCK_OLD_LIBRARY \
            CACHE_PERF_MAX_BYTES FFKIT_BACKEND FFKIT_BACKEND_TIMEOUT \
            FFKIT_BACKEND_CA FFKIT_LOCK_LEASE XDG_CACHE_HOME XDG_RUNTIME_DIR \
            SHELL HOME
        # END GENERATED:env-forward
    } 2>/dev/null || :
    # (Quiet, and no end under `set -e`: `export` refuses a nameref to an
    # array element, `declare -n LOCK_TIMEOUT='a[1]'`, with an error line;
    # the block below hands it on.)
    # An array or a nameref among them (bash exports no array, and
    # `export` of a nameref exports its target): each is handed on as
    # `$NAME` reads it (element 0, or the target's value) by a local
    # exported copy, or by env(1) when it is readonly (docs/shell.md,
    # "Variables"). The block (xtask's env_odd_bash) lists them in
    # _ffkit_o, at the cost of one `[[ ]]` when there is none.
    # BEGIN GENERATED:env-odd
    # From config::ENV_VARS by `cargo xtask gen`; do not edit.
    if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] >= 404)); then
        set +u
        _ffkit_n=${CACHE_SIZE_TRACKING@a}${LOCK_BACKOFF_STRATEGY@a}
        _ffkit_n+=${LOCK_TIMEOUT@a}${CACHE_PERF_MONITORING@a}
        _ffkit_n+=${CACHE_PERF_METRICS@a}${FLOWFORGE_DEVELOPER@a}
        _ffkit_n+=${FF_DEBUG@a}${FFKIT_CACHE_DIR@a}${FFKIT_LOCK_DIR@a}
        _ffkit_n+=${LOCK_BACKOFF_INITIAL@a}${LOCK_BACKOFF_MAX@a}
        _ffkit_n+=${LOCK_STALE_AFTER@a}${LOCK_OLD_LIBRARY@a}
        _ffkit_n+=${CACHE_PERF_MAX_BYTES@a}${FFKIT_BACKEND@a}
        _ffkit_n+=${FFKIT_BACKEND_TIMEOUT@a}${FFKIT_BACKEND_CA@a}
        _ffkit_n+=${FFKIT_LOCK_LEASE@a}${XDG_CACHE_HOME@a}
        _ffkit_n+=${XDG_RUNTIME_DIR@a}${SHELL@a}${HOME@a}
        if [[ $_ffkit_n == *[aA]* || -R CACHE_SIZE_TRACKING \
            || -R LOCK_BACKOFF_STRATEGY || -R LOCK_TIMEOUT \
            || -R CACHE_PERF_MONITORING || -R CACHE_PERF_METRICS \
            || -R FLOWFORGE_DEVELOPER || -R FF_DEBUG \
            || -R FFKIT_CACHE_DIR || -R FFKIT_LOCK_DIR \
            || -R LOCK_BACKOFF_INITIAL || -R LOCK_BACKOFF_MAX \
            || -R LOCK_STALE_AFTER || -R LOCK_OLD_LIBRARY \
            || -R CACHE_PERF_MAX_BYTES || -R FFKIT_BACKEND \
            || -R FFKIT_BACKEND_TIMEOUT || -R FFKIT_BACKEND_CA \
            || -R FFKIT_LOCK_LEASE || -R XDG_CACHE_HOME \
            || -R XDG_RUNTIME_DIR || -R SHELL || -R HOME ]]; then
            for _ffkit_n in CACHE_SIZE_TRACKING LOCK_BACKOFF_STRATEGY \
                LOCK_TIMEOUT CACHE_PERF_MONITORING CACHE_PERF_METRICS \
                FLOWFORGE_DEVELOPER FF_DEBUG FFKIT_CACHE_DIR \
                FFKIT_LOCK_DIR LOCK_BACKOFF_INITIAL LOCK_BACKOFF_MAX \
                LOCK_STALE_AFTER LOCK_OLD_LIBRARY CACHE_PERF_MAX_BYTES \
                FFKIT_BACKEND FFKIT_BACKEND_TIMEOUT FFKIT_BACKEND_CA \
                FFKIT_LOCK_LEASE XDG_CACHE_HOME XDG_RUNTIME_DIR SHELL \
                HOME; do
                [[ -R $_ffkit_n || ${!_ffkit_n@a} == *[aA]* ]] || continue
                [[ -z ${!_ffkit_n+set} ]] || _ffkit_o+=("$_ffkit_n=${!_ffkit_n}")
            done
        fi
    fi
    # END GENERATED:env-odd
    for _ffkit_v in ${_ffkit_o[@]+"${_ffkit_o[@]}"}; do
        { local -x "$_ffkit_v"; } 2>/dev/null || _ffkit_e+=("$_ffkit_v")
    done
    export FFKIT_FN_LOG_DIR="$_ffkit_l"
    if [[ $_ffkit_s == 1 ]] && ! { export FLOWFORGE_DEVELOPER="$_ffkit_d"; } 2>/dev/null; then
        # The script made FLOWFORGE_DEVELOPER readonly (bash cannot assign
        # it, not even in this subshell): env(1) gives the binary DEV.
        _ffkit_e+=("FLOWFORGE_DEVELOPER=$_ffkit_d")
    fi
    if [[ ${#_ffkit_e[@]} -gt 0 ]]; then
        # env(1) takes every argument with a `=` before the command for
        # one more NAME=VALUE, a FFKIT_BIN such as /opt/a=b/ffkit too
        # (it then ran the binary's first argument, 127): such a path is
        # run by a bash that env(1) starts, whose `exec` takes it as is.
        if [[ ${FFKIT_BIN-} == *=* ]]; then
            # shellcheck disable=SC2016 # -- expanded by that bash
            exec env "${_ffkit_e[@]}" "${BASH:-bash}" -c 'exec "$0" "$@"' "$FFKIT_BIN" "$@"
        fi
        exec env "${_ffkit_e[@]}" "${FFKIT_BIN:-ffkit}" "$@"
    fi
    exec "${FFKIT_BIN:-ffkit}" "$@"
}


# _ffkit_ns FUNCTION DEV_ID [critical|session NAME]: sets _ffkit_dir (the
# cache dir: DEV_ID's namespace's, or the caller's for an empty DEV_ID),
# _ffkit_log (the caller's namespace cache dir, for _ffkit_run),
# _ffkit_dev (that namespace's developer id, empty in legacy mode) and, for
# a lock, _ffkit_file (NAME's lock file). The shell derives none of it: the
# binary answers (`ffkit init --resolve`, by the library's namespace rules:
# docs/shell.md, "Namespace"), once for each set of inputs (`$PWD`,
# DEV_ID, the lock, the variables the namespace reads: CACHE_PERF_METRICS is
# not one, the binary reads it on every call), kept while `.` is
# the dir the kernel named when the binary answered (_ffkit_cwd: a
# `current` symlink flipped or the repository renamed under the same
# `$PWD` is asked again; `-ef`, two stats), while the repository root it
# found is still the nearest `.git` (_ffkit_git_same: a `git init` above
# `.` or a removed `.git` is asked again) and while the team config it
# consulted neither appears, goes away nor changes its text (read with a
# builtin). A repeated call starts no process.
# Bad input: the binary's one line and status (2 for a name or DEV_ID, 12
# for FLOWFORGE_DEVELOPER).
_ffkit_ns() {
    local _ffkit_k='' _ffkit_w='' _ffkit_v='' _ffkit_i=0 _ffkit_rc=0 _ffkit_t=0
    local _ffkit_team='' _ffkit_team_seen='' _ffkit_cwd='' _ffkit_c='' _ffkit_root=''
    for _ffkit_w in "$PWD" "${@:2}" "${FLOWFORGE_DEVELOPER-}" "${FFKIT_LOCK_DIR-}" \
        "${XDG_RUNTIME_DIR-}" "${HOME-}"; do
        _ffkit_k="$_ffkit_k${#_ffkit_w}:$_ffkit_w;"
    done
    if [[ -n ${_ffkit_ns_keys+set} ]]; then
        while [[ $_ffkit_i -lt ${#_ffkit_ns_keys[@]} ]]; do
            # `[ = ]` compares bytes; `[[ == ]]` would obey nocasematch.
            if [ "${_ffkit_ns_keys[_ffkit_i]}" = "$_ffkit_k" ]; then
                eval "${_ffkit_ns_vals[_ffkit_i]}"
                # `$PWD` naming another dir now (a `current` symlink
                # flipped, the repository renamed): asked again.
                [[ . -ef $_ffkit_cwd ]] || break
                # A `.git` created or removed between `.` and the root
                # the binary found (or above `.`, outside a repository)
                # moves the namespace: asked again.
                _ffkit_git_same || break
                [[ ! -f $_ffkit_team ]] || _ffkit_t=1
                if [[ -z $_ffkit_team || $_ffkit_t == "$_ffkit_team_seen" ]]; then
                    [[ $_ffkit_t == 1 ]] || return 0
                    # An edit of the team config: its text, read with a
                    # builtin, is what the answer was given for.
                    _ffkit_team_text
                    [ "$_ffkit_c" != "${_ffkit_ns_tc[_ffkit_i]-}" ] || return 0
                fi
                break
            fi
            _ffkit_i=$((_ffkit_i + 1))
        done
    fi
    if [[ $# -ge 4 ]]; then
        _ffkit_v=$(_ffkit_run '' init --resolve="$1" --dev-id="$2" "--$3=$4" </dev/null) || _ffkit_rc=$?
    else
        _ffkit_v=$(_ffkit_run '' init --resolve="$1" --dev-id="${2-}" </dev/null) || _ffkit_rc=$?
    fi
    if [[ $_ffkit_rc -ne 0 ]]; then
        [[ -z $_ffkit_v ]] || _ffkit_err "$_ffkit_v"
        return "$_ffkit_rc"
    fi
    _ffkit_dir=
    eval "$_ffkit_v"
    # No answer with a zero status (zsh near its descriptor limit lost the
    # substitution's output): one line, never `--dir ''` to the applet,
    # and nothing kept for the next call.
    if [[ -z ${_ffkit_dir-} ]]; then
        _ffkit_err "$1: the binary gave no namespace answer; nothing was done"
        return 1
    fi
    if [[ -z ${_ffkit_ns_keys+set} || $_ffkit_i -ge 64 ]]; then
        _ffkit_ns_keys=()
        _ffkit_ns_vals=()
        _ffkit_ns_tc=()
        _ffkit_i=0
    fi
    _ffkit_c=
    [[ ! -f $_ffkit_team ]] || _ffkit_team_text
    _ffkit_ns_keys[_ffkit_i]=$_ffkit_k
    _ffkit_ns_vals[_ffkit_i]=$_ffkit_v
    _ffkit_ns_tc[_ffkit_i]=$_ffkit_c
}

# Succeeds while the repository root the binary found for _ffkit_cwd is
# still the one the rule finds (docs/shell.md, "Namespace"): no dir from
# _ffkit_cwd up to, not including, _ffkit_root holds a `.git` (of any type,
# a dangling symbolic link included: the binary's lstat counts it), and
# _ffkit_root still holds one; with no root (empty), no dir up to `/` holds
# one. The root is an ancestor of _ffkit_cwd as the kernel named both, so
# the dirs below it are those longer than it. Builtins only: two failed
# stats per dir below the root, no process.
_ffkit_git_same() {
    local _ffkit_d=$_ffkit_cwd _ffkit_n=${#_ffkit_root}
    while [[ ${#_ffkit_d} -gt $_ffkit_n ]]; do
        [[ ! -e $_ffkit_d/.git && ! -L $_ffkit_d/.git ]] || return 1
        _ffkit_d=${_ffkit_d%/*}
    done
    if [[ -z $_ffkit_root ]]; then
        [[ ! -e /.git && ! -L /.git ]]
    else
        [[ -e $_ffkit_root/.git || -L $_ffkit_root/.git ]]
    fi
}

# Succeeds when the script made IFS readonly (`readonly IFS`): the
# `IFS= read` of the helpers below is then a fatal error in zsh, and in
# bash under `set -e` (the `|| :` after it does not help there), that
# ended the script, silently, at its first lock or get_cache_size, so they
# read otherwise or give up as they do without /proc. Bash before 4.4
# cannot tell (`${IFS@a}`, eval'd: older bash and zsh cannot parse it).
_ffkit_ifs_ro() {
    if [[ -n ${ZSH_VERSION-} ]]; then
        [[ ${parameters[IFS]-} == *readonly* ]]
    else
        ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] >= 404)) && eval '[[ ${IFS@a} == *r* ]]'
    fi
}

# Sets _ffkit_c to the text of the team config _ffkit_team (a regular
# file: the caller checked), read with a builtin, no process (zsh's
# `$(<file)` starts none either; its trailing newlines do not count).
_ffkit_team_text() {
    _ffkit_c=
    if _ffkit_ifs_ro; then
        _ffkit_c=$(<"$_ffkit_team") 2>/dev/null || :
        return 0
    fi
    { IFS= read -r -d '' _ffkit_c || :; } <"$_ffkit_team" 2>/dev/null || :
}

# Sets _ffkit_n to the size in <dir>/.size-index when it is a valid index
# (canonical digits and a newline, nothing else) and no change is in flight
# or was killed midway (a .journal, or a journal after the entry-count
# record in .lock); fails otherwise. Builtins only: no process is started.
_ffkit_index_read() {
    local _ffkit_f=$1/.size-index _ffkit_rest='' _ffkit_lk=''
    _ffkit_n=
    # zsh with a readonly IFS: the binary answers (_ffkit_ifs_ro).
    ! _ffkit_ifs_ro || return 1
    # A dir the binary would refuse as the namespace's (a symbolic link,
    # another user's: docs/cache.md, "Which dir") is the binary's to judge.
    if [[ -L $1 || ! -O $1 || -e $1/.journal || -L $_ffkit_f || ! -f $_ffkit_f ]]; then
        return 1
    fi
    # The library's rule (cache::Cache::journal_pending_unlocked): a .lock
    # that is neither empty nor exactly its 29-byte record holds a journal,
    # which the binary rolls forward before it answers (docs/cache.md).
    # Anything but a regular file there is the binary's to judge too (a
    # FIFO would block the read).
    if [[ -e $1/.lock || -L $1/.lock ]]; then
        [[ -f $1/.lock && ! -L $1/.lock ]] || return 1
        if [[ -s $1/.lock ]]; then
            if [[ -n ${ZSH_VERSION-} ]]; then
                { IFS= read -r -u 0 -k 30 _ffkit_lk || :; } <"$1/.lock" 2>/dev/null || return 1
            else
                { IFS= read -r -N 30 _ffkit_lk || :; } <"$1/.lock" 2>/dev/null || return 1
            fi
            [[ ${#_ffkit_lk} -eq 29 && $_ffkit_lk == entries=*$'\n' ]] || return 1
        fi
    fi
    # The second read must find nothing after the first line.
    if ! { { IFS= read -r _ffkit_n && { IFS= read -r -d '' _ffkit_rest || :; }; } <"$_ffkit_f"; } 2>/dev/null; then
        return 1
    fi
    case $_ffkit_n in
        '' | *[!0-9]* | 0?*) return 1 ;;
    esac
    [[ -z $_ffkit_rest && ${#_ffkit_n} -le 19 ]]
}

# Succeeds when the lock calls must give the binary FLOWFORGE_DEVELOPER=
# _ffkit_dev for one call: the developer id the lock file was resolved for
# is not already the shell's FLOWFORGE_DEVELOPER (which _ffkit_run forwards
# anyway).
_ffkit_dev_differs() {
    [[ -n $_ffkit_dev ]] || return 1
    # `[ = ]` compares bytes; `[[ == ]]` would obey nocasematch.
    [[ -z ${FLOWFORGE_DEVELOPER+set} ]] || [ "$FLOWFORGE_DEVELOPER" != "$_ffkit_dev" ]
}

# _ffkit_lock_call ARGS...: `ffkit lock-... ARGS` for the lock in
# _ffkit_file, with the developer id the file was resolved for (so the
# binary, which checks the descriptor is on NAME's file, names the same one).
# That id goes to the binary as _ffkit_run's remote backend gives one
# (STRIP=1 DEV: an export in the binary's own subshell, a zsh local), never
# as a `FLOWFORGE_DEVELOPER=… cmd` assignment in this shell: a script's
# `readonly FLOWFORGE_DEVELOPER=id` made bash print "readonly variable" on
# every lock call and zsh end the whole script. (The lock's name went
# through _ffkit_run's NUL check in _ffkit_ns already, and a lock call
# has no `--dir` for the remote backend to drop.)
_ffkit_lock_call() {
    if ! _ffkit_dev_differs; then
        _ffkit_run "$_ffkit_log" "$@" </dev/null
    elif [[ -n ${ZSH_VERSION-} ]]; then
        _ffkit_zrun "$_ffkit_log" 1 "$_ffkit_dev" "$@" </dev/null
    else
        ( _ffkit_exec "$_ffkit_log" 1 "$_ffkit_dev" "$@" ) </dev/null
    fi
}

# Sets _ffkit_pid to this shell's own pid: a subshell's, not $$ (bash:
# BASHPID; zsh: sysparams[pid] from zsh/system, else $$).
_ffkit_mypid() {
    if [[ -n ${BASHPID-} ]]; then
        _ffkit_pid=$BASHPID
    elif [[ -n ${ZSH_VERSION-} ]] && zmodload -F zsh/system p:sysparams 2>/dev/null; then
        # shellcheck disable=SC2154 # -- zsh/system's parameter
        _ffkit_pid=${sysparams[pid]}
    else
        _ffkit_pid=$$
    fi
}

# Drops the held-lock table entries a subshell inherited from the shell that
# took them (each entry records its owner's pid), closing this subshell's
# copies of their fds: a close never unlocks the owner's lock (only an
# explicit unlock would, which is why a subshell must never call
# lock-release --fd on them), and lists their files in _ffkit_lock_parents
# (inherited by further subshells, as the builtin's list is). Sets
# _ffkit_inherited to FILE when FILE is in that list. Only the shell that
# took a lock releases it (docs/shell.md).
_ffkit_lock_forget_inherited() {
    local _ffkit_j=0 _ffkit_cfd='' _ffkit_pid=''
    _ffkit_inherited=
    [[ -z ${_ffkit_lock_files+set} ]] || _ffkit_mypid
    while [[ -n ${_ffkit_lock_files+set} && $_ffkit_j -lt ${#_ffkit_lock_files[@]} ]]; do
        if [[ -n ${_ffkit_lock_files[_ffkit_j]} && ${_ffkit_lock_pids[_ffkit_j]-} != "$_ffkit_pid" ]]; then
            _ffkit_lock_parents+=("${_ffkit_lock_files[_ffkit_j]}")
            _ffkit_lock_close "${_ffkit_lock_fds[_ffkit_j]}" "${_ffkit_lock_ids[_ffkit_j]:-?}"
            _ffkit_lock_slot_free "$_ffkit_j"
        fi
        _ffkit_j=$((_ffkit_j + 1))
    done
    [[ -n ${_ffkit_lock_parents+set} ]] || return 0
    for _ffkit_cfd in "${_ffkit_lock_parents[@]}"; do
        # `[ = ]` compares bytes; `[[ == ]]` would obey nocasematch.
        if [ "$_ffkit_cfd" = "$1" ]; then
            _ffkit_inherited=$1
        fi
    done
}

# _ffkit_lock_take FUNCTION KIND NAME: opens NAME's lock file (_ffkit_file,
# from _ffkit_ns) on a
# new fd, takes the kernel lock on it with `ffkit lock-acquire --fd N NAME`
# (which checks the fd is on NAME's file and records this shell as the
# holder, so `ffkit lock-status NAME` names it) and records file -> fd in the
# held-lock table. The lock lives as long as the fd: until the matching
# release, or until this shell (and any child that inherited the fd) exits.
# The binary creates a missing dir and file (0700/0600 whatever the umask);
# the shell only opens an existing file, read-only.
_ffkit_lock_take() {
    local _ffkit_fd='' _ffkit_i=0 _ffkit_slot=0 _ffkit_rc=0 _ffkit_stale=-1
    local _ffkit_sess='' _ffkit_pid='' _ffkit_inherited='' _ffkit_id=''
    local _ffkit_total='' _ffkit_t0='' _ffkit_now='' _ffkit_wt='' _ffkit_again='' _ffkit_whole=''
    [[ $2 == critical ]] || _ffkit_sess=--session
    if _ffkit_remote; then
        # A named pair owned by this shell (docs/redis.md): held until the
        # release or this shell's exit. This shell is the subshell's own
        # pid, not $$ (the top shell's, in a `( )`, `$( )` or `&`), as a
        # local lock belongs to the subshell that took it.
        _ffkit_mypid
        if [[ -z ${BASH_VERSION-} || $- == *m* ]]; then
            _ffkit_lock_call lock-acquire --quiet-wait --owner "$_ffkit_pid" ${_ffkit_sess:+"$_ffkit_sess"} -- "$3"
            return $?
        fi
        _ffkit_remote_wait "$3"
        return $?
    fi
    _ffkit_lock_forget_inherited "$_ffkit_file"
    if [[ -n ${_ffkit_lock_files+set} ]]; then
        while [[ $_ffkit_i -lt ${#_ffkit_lock_files[@]} ]]; do
            # `[ = ]` compares bytes; `[[ == ]]` would obey nocasematch.
            if [ "${_ffkit_lock_files[_ffkit_i]}" = "$_ffkit_file" ]; then
                # The table can be stale: `ffkit lock-release NAME`, a plain
                # command of this shell, may have unlocked it (as in the
                # builtin, where both share one table). Only a descriptor
                # still on the file and holding a lock means "held".
                _ffkit_fd=${_ffkit_lock_fds[_ffkit_i]}
                _ffkit_fd_id "$_ffkit_fd"
                if [[ ${_ffkit_lock_ids[_ffkit_i]:-?} == '?' || $_ffkit_id == "${_ffkit_lock_ids[_ffkit_i]}" ]]; then
                    if [[ /dev/fd/$_ffkit_fd -ef $_ffkit_file ]] && _ffkit_fd_locked "$_ffkit_fd"; then
                        # The binary's and the builtin's words (lock::already_held).
                        _ffkit_mypid
                        _ffkit_err "$1: $_ffkit_file: already held by this owner (pid $_ffkit_pid); release it first"
                        return 5
                    fi
                    # Unlocked behind the shell's back, or its file deleted
                    # or replaced since (the old library's release: it
                    # guards nothing, docs/locks.md): forgotten, and its
                    # descriptor, which nothing else would ever close,
                    # closed.
                    { eval 'exec {_ffkit_fd}<&-'; } 2>/dev/null || :
                    _ffkit_lock_slot_free "$_ffkit_i"
                else
                    # Its descriptor closed or reopened by the script (the
                    # number is the script's): forgotten once the name is
                    # taken again, or when taking it fails otherwise than
                    # with 5, the answer when a copy the script made of the
                    # descriptor holds the lock (the binary finds it among
                    # the descriptors it inherited); then the slot stays,
                    # and release_critical_lock releases it through the copy.
                    _ffkit_stale=$_ffkit_i
                fi
            fi
            _ffkit_i=$((_ffkit_i + 1))
        done
    fi
    if [[ -L $_ffkit_file ]]; then
        # The core's wording of the same refusal (the binary, the builtin).
        _ffkit_err "$1: cannot open lock file $_ffkit_file: is a symbolic link (refused)"
        return 3
    fi
    # A release deletes the file (the old library's protocol, docs/locks.md,
    # "Sharing names with the old library"): when the file opened here was
    # deleted or replaced before the lock was taken, the binary answers 2
    # (silently with --quiet-wait) and the name's file is opened again,
    # within the same LOCK_TIMEOUT: each retry gets what is left (-w).
    _ffkit_lock_budget
    while :; do
        if [[ -n $_ffkit_again ]] && ! _ffkit_lock_left; then
            if [[ $_ffkit_total == 0 ]]; then
                _ffkit_err "$1: $3: busy (its lock file was replaced meanwhile)"
                return 5
            fi
            _ffkit_err "$1: $3: timed out after ${LOCK_TIMEOUT:-30}s (its lock file was replaced while waiting)"
            return 6
        fi
        _ffkit_again=1
        # Asked by its type, not as "exists and is not a regular file":
        # the old library deletes and creates the name all the time, and a
        # file deleted between those two tests was refused with exit 3.
        if [[ ! -f $_ffkit_file ]] && [[ -p $_ffkit_file || -d $_ffkit_file || -c $_ffkit_file || -b $_ffkit_file || -S $_ffkit_file ]]; then
            # A FIFO or device would block the open below, or is no lock.
            _ffkit_err "$1: $_ffkit_file: not a regular file; refusing to lock it"
            return 3
        fi
        if [[ ! -f $_ffkit_file ]]; then
            _ffkit_lock_call lock-acquire --prepare --function "$1" ${_ffkit_sess:+"$_ffkit_sess"} -- "$3" || return $?
        fi
        # `exec {VAR}…` through eval, here and below: a zsh that sourced
        # this file under `emulate sh` or `setopt ignore_braces` parsed
        # `{_ffkit_fd}` as a word, so `exec` tried to run a command of that
        # name and the script ended silently at its first lock. eval parses
        # it when it runs, under the function's own options.
        if ! { eval 'exec {_ffkit_fd}<"$_ffkit_file"'; } 2>/dev/null; then
            [[ -e $_ffkit_file || -L $_ffkit_file ]] || continue
            # The binary's open fails the same way and words why in the
            # core's one line (`cannot open lock file F: REASON`, as the
            # builtin says it); if it opens after all, this line.
            _ffkit_lock_call lock-acquire --prepare --function "$1" ${_ffkit_sess:+"$_ffkit_sess"} -- "$3" || return $?
            _ffkit_err "$1: cannot open lock file $_ffkit_file"
            return 3
        fi
        _ffkit_rc=0
        _ffkit_lock_on_fd "$_ffkit_fd" "$3" "$1" || _ffkit_rc=$?
        [[ $_ffkit_rc -eq 0 ]] && break
        if [[ $_ffkit_rc -eq 2 && ! /dev/fd/$_ffkit_fd -ef $_ffkit_file ]]; then
            eval 'exec {_ffkit_fd}<&-'
            continue
        fi
        eval 'exec {_ffkit_fd}<&-'
        [[ $_ffkit_rc == 5 || $_ffkit_stale -lt 0 ]] || _ffkit_lock_slot_free "$_ffkit_stale"
        return "$_ffkit_rc"
    done
    [[ $_ffkit_stale -lt 0 ]] || _ffkit_lock_slot_free "$_ffkit_stale"
    _ffkit_mypid
    _ffkit_fd_id "$_ffkit_fd"
    # The first free slot, chosen now and not before the wait: a trap that
    # ran while this call waited (bash runs it in `wait`, zsh between
    # commands) may have taken a lock into the slot that was free then, and
    # writing this lock over its entry lost it (its descriptor stayed open
    # after its release: one leaked per such trap).
    _ffkit_slot=0
    while [[ -n ${_ffkit_lock_files+set} && $_ffkit_slot -lt ${#_ffkit_lock_files[@]} ]]; do
        [[ -n ${_ffkit_lock_files[_ffkit_slot]} ]] || break
        _ffkit_slot=$((_ffkit_slot + 1))
    done
    _ffkit_lock_files[_ffkit_slot]=$_ffkit_file
    _ffkit_lock_fds[_ffkit_slot]=$_ffkit_fd
    _ffkit_lock_pids[_ffkit_slot]=$_ffkit_pid
    _ffkit_lock_ids[_ffkit_slot]=$_ffkit_id
}

# _ffkit_lock_on_fd FD NAME FUNCTION: takes NAME's kernel lock on this
# shell's FD (`ffkit lock-acquire --function FUNCTION --fd FD NAME`, which
# checks FD is on _ffkit_file and marks its open file description as the
# function's: its offset, which _ffkit_fd_id reads), waiting up to
# LOCK_TIMEOUT; a lock held through a copy the script made of one of its
# lock descriptors is 5 at once (docs/shell.md). A signal that ends a wait (SIGINT, SIGTERM,
# SIGHUP, SIGQUIT, as with the builtin: docs/shell.md) ends it at once,
# also when sent to this shell alone: bash holds back such a signal while
# a foreground command runs, until the command exits, but its `wait`
# builtin is interrupted by it. So, in bash without job control, a lock
# found busy (by a first, non-blocking call: a free lock costs one
# foreground process and leaves `$!` alone) is waited for by a waiter
# started as an asynchronous command and `wait`ed for here: an untrapped
# signal ends the shell (the waiter, its child, dies with it:
# PR_SET_PDEATHSIG); after a trap that lets the script go on, the waiter is
# killed and reaped and 128 + the signal returned, and the caller closes FD
# (a lock the waiter got just before is dropped with it). Other trapped
# signals (CHLD, USR1 ...) run their trap and the wait goes on. With job
# control (`set -m`) or in zsh the waiter runs in the foreground, as a
# terminal's Ctrl-C reaches it there.
# A trap that runs while such a wait goes on (bash runs it inside `wait`)
# and asks for the very file this shell waits for waits first for that
# waiter to end (_ffkit_wpid/_ffkit_wfile, the waiting call's, read before
# this call's own locals hide them): as with the builtin and zsh, which run
# the trap once the wait is over, the waiting call gets the lock and the
# trap's is refused (5, this shell holds it), instead of two waiters of one
# shell racing for it. Should the trap's wait be cut short, the binary
# still refuses once the lock is this shell's (lock::fd::acquire).
_ffkit_lock_on_fd() {
    if [[ -n ${_ffkit_wpid-} ]] && [ "${_ffkit_wfile-}" = "$_ffkit_file" ]; then
        local _ffkit_ws=0
        while :; do
            _ffkit_ws=0
            wait "$_ffkit_wpid" 2>/dev/null || _ffkit_ws=$?
            if [[ $_ffkit_ws -le 128 ]] || ! kill -0 "$_ffkit_wpid" 2>/dev/null; then
                break
            fi
            case $_ffkit_ws in
                129 | 130 | 131 | 143)
                    # A signal that ends a wait came during this one: it
                    # ends the waiting call's too, as with the builtin,
                    # which answers it (_ffkit_wsig, that call's local;
                    # its waiter is reaped there), and this call goes on.
                    # The waiter may have taken the lock on the waiting
                    # call's descriptor just before the KILL: that lock is
                    # dropped now (the descriptor swapped for /dev/null, its
                    # number kept for the caller to close), as that call
                    # would drop it without the trap, and not once this
                    # trap returns: this call waited for its own shell's
                    # lock until LOCK_TIMEOUT (6), or was refused (5) and
                    # the lock then dropped.
                    _ffkit_wsig=$_ffkit_ws
                    kill -KILL "$_ffkit_wpid" 2>/dev/null || :
                    wait "$_ffkit_wpid" 2>/dev/null || :
                    [[ $_ffkit_wfd != *[!0-9]* ]] && eval "exec $_ffkit_wfd</dev/null"
                    break
                    ;;
            esac
        done
    fi
    local _ffkit_q=--quiet-wait _ffkit_w='' _ffkit_st=0
    # FF_DEBUG=true: the binary's waiting line too.
    [[ ${FF_DEBUG-} != true ]] || _ffkit_q=
    if [[ -z ${BASH_VERSION-} || $- == *m* ]]; then
        _ffkit_lock_call lock-acquire ${_ffkit_wt:+-w} ${_ffkit_wt:+"$_ffkit_wt"} ${_ffkit_wt:+--whole-timeout} ${_ffkit_wt:+"$_ffkit_whole"} ${_ffkit_q:+"$_ffkit_q"} --function "$3" --fd "$1" ${_ffkit_sess:+"$_ffkit_sess"} -- "$2"
        return $?
    fi
    # Busy: 75, silently (-q -E 75); any other answer is the answer.
    _ffkit_lock_call lock-acquire -n -q -E 75 ${_ffkit_q:+"$_ffkit_q"} --function "$3" --fd "$1" ${_ffkit_sess:+"$_ffkit_sess"} -- "$2" || _ffkit_st=$?
    [[ $_ffkit_st == 75 ]] || return "$_ffkit_st"
    if _ffkit_dev_differs; then
        _ffkit_exec "$_ffkit_log" 1 "$_ffkit_dev" lock-acquire ${_ffkit_wt:+-w} ${_ffkit_wt:+"$_ffkit_wt"} ${_ffkit_wt:+--whole-timeout} ${_ffkit_wt:+"$_ffkit_whole"} ${_ffkit_q:+"$_ffkit_q"} --function "$3" --fd "$1" ${_ffkit_sess:+"$_ffkit_sess"} -- "$2" </dev/null &
    else
        _ffkit_exec "$_ffkit_log" 0 '' lock-acquire ${_ffkit_wt:+-w} ${_ffkit_wt:+"$_ffkit_wt"} ${_ffkit_wt:+--whole-timeout} ${_ffkit_wt:+"$_ffkit_whole"} ${_ffkit_q:+"$_ffkit_q"} --function "$3" --fd "$1" ${_ffkit_sess:+"$_ffkit_sess"} -- "$2" </dev/null &
    fi
    _ffkit_w=$!
    local _ffkit_wpid=$_ffkit_w _ffkit_wfile=$_ffkit_file _ffkit_wfd=$1 _ffkit_wsig=''
    while :; do
        _ffkit_st=0
        wait "$_ffkit_w" || _ffkit_st=$?
        # A trap asking for this very file got the signal that ends a
        # wait while it waited for this waiter (above), and killed it.
        if [[ -n $_ffkit_wsig ]]; then
            wait "$_ffkit_w" 2>/dev/null || :
            return "$_ffkit_wsig"
        fi
        # Above 128 with the waiter still there: a trapped signal
        # interrupted `wait` (its trap has run).
        if [[ $_ffkit_st -gt 128 ]] && kill -0 "$_ffkit_w" 2>/dev/null; then
            case $_ffkit_st in
                129 | 130 | 131 | 143)
                    kill -KILL "$_ffkit_w" 2>/dev/null || :
                    wait "$_ffkit_w" 2>/dev/null || :
                    return "$_ffkit_st"
                    ;;
            esac
            continue
        fi
        # The waiter's own status (bash keeps it for a second `wait`).
        if [[ $_ffkit_st -gt 128 ]]; then
            _ffkit_st=0
            wait "$_ffkit_w" 2>/dev/null || _ffkit_st=$?
        fi
        # 127: the script's own `wait` or `wait -n`, in the trap that
        # interrupted ours, reaped the waiter and took its status (bash
        # keeps none for a second `wait`). FD tells: locked, the waiter got
        # the lock (the builtin's and zsh's answer, 0); else its answer is
        # asked again in the foreground, with what is left of LOCK_TIMEOUT
        # (none left: it timed out, and said so).
        # -1: a trap's call for this very file had its wait for the
        # waiter cut by a signal as the waiter ended (the status is then
        # bash's "unknown", and `return -1` was 255 with the lock dropped).
        if [[ $_ffkit_st == 127 || $_ffkit_st -lt 0 ]] && ! kill -0 "$_ffkit_w" 2>/dev/null; then
            ! _ffkit_fd_locked "$1" || return 0
            local _ffkit_wt=''
            if ! _ffkit_lock_left; then
                [[ $_ffkit_total == 0 ]] || return 6
            fi
            _ffkit_st=0
            _ffkit_lock_call lock-acquire ${_ffkit_wt:+-w} ${_ffkit_wt:+"$_ffkit_wt"} ${_ffkit_wt:+--whole-timeout} ${_ffkit_wt:+"$_ffkit_whole"} ${_ffkit_q:+"$_ffkit_q"} --function "$3" --fd "$1" ${_ffkit_sess:+"$_ffkit_sess"} -- "$2" || _ffkit_st=$?
        fi
        return "$_ffkit_st"
    done
}

# _ffkit_remote_wait NAME: _ffkit_lock_take's named pair on a remote
# backend, in bash without job control (every script), for _ffkit_pid
# (_ffkit_sess, _ffkit_log, _ffkit_dev: the caller's). bash holds a trapped
# signal back while a foreground command runs, so a busy lock is waited
# for by the binary started as an asynchronous command and bash's `wait`,
# which signals interrupt, as _ffkit_lock_on_fd does for a local lock:
# INT, QUIT, TERM and HUP, trapped, run the trap and end the wait at once
# (the waiter stopped with TERM, a lock it took meanwhile given back), and
# the call returns 128 + the signal (docs/redis.md, "The shell wrappers").
_ffkit_remote_wait() {
    local _ffkit_st=0 _ffkit_w=''
    # Busy: 75, silently (-q -E 75); any other answer is the answer.
    _ffkit_lock_call lock-acquire -n -q -E 75 --quiet-wait --owner "$_ffkit_pid" ${_ffkit_sess:+"$_ffkit_sess"} -- "$1" || _ffkit_st=$?
    [[ $_ffkit_st == 75 ]] || return "$_ffkit_st"
    if _ffkit_dev_differs; then
        _ffkit_exec "$_ffkit_log" 1 "$_ffkit_dev" lock-acquire --quiet-wait --owner "$_ffkit_pid" ${_ffkit_sess:+"$_ffkit_sess"} -- "$1" </dev/null &
    else
        _ffkit_exec "$_ffkit_log" 0 '' lock-acquire --quiet-wait --owner "$_ffkit_pid" ${_ffkit_sess:+"$_ffkit_sess"} -- "$1" </dev/null &
    fi
    _ffkit_w=$!
    while :; do
        _ffkit_st=0
        wait "$_ffkit_w" || _ffkit_st=$?
        # Above 128 with the waiter still there: a trapped signal
        # interrupted `wait` (its trap has run).
        if [[ $_ffkit_st -gt 128 ]] && kill -0 "$_ffkit_w" 2>/dev/null; then
            case $_ffkit_st in
                129 | 130 | 131 | 143)
                    local _ffkit_ws=0
                    kill -TERM "$_ffkit_w" 2>/dev/null || :
                    wait "$_ffkit_w" 2>/dev/null || _ffkit_ws=$?
                    # The waiter may have taken the lock just before: given
                    # back, as the local wait drops a lock its waiter took.
                    if [[ $_ffkit_ws == 0 || $_ffkit_ws == 143 ]]; then
                        _ffkit_lock_call lock-release -q --owner "$_ffkit_pid" ${_ffkit_sess:+"$_ffkit_sess"} -- "$1" 2>/dev/null || :
                    fi
                    return "$_ffkit_st"
                    ;;
            esac
            continue
        fi
        # The waiter's own status (bash keeps it for a second `wait`).
        if [[ $_ffkit_st -gt 128 ]]; then
            _ffkit_st=0
            wait "$_ffkit_w" 2>/dev/null || _ffkit_st=$?
        fi
        return "$_ffkit_st"
    done
}

# Succeeds when descriptor $1 of this shell holds a lock (flock or OFD):
# /proc/self/fdinfo/N lists the locks of its open file description, read
# with builtins (the redirection is this shell's own). Without /proc it
# cannot tell and says yes.
_ffkit_fd_locked() {
    local _ffkit_l=''
    [[ -d /proc/self/fdinfo ]] || return 0
    [[ -e /proc/self/fdinfo/$1 ]] || return 1
    # zsh with a readonly IFS cannot tell either (_ffkit_ifs_ro).
    ! _ffkit_ifs_ro || return 0
    while { IFS= read -r _ffkit_l; } 2>/dev/null; do
        [[ $_ffkit_l != lock:* ]] || return 0
    done </proc/self/fdinfo/"$1"
    return 1
}

# Sets _ffkit_id to the identity of the file descriptor $1 is open on and
# of its open file description (`mnt_id/ino/MARK` from /proc/self/fdinfo,
# read with builtins: MARK is `f` when its status flags carry O_NONBLOCK,
# lock::fd::FUNCTION_FLAG, which the binary sets on the lock functions'
# descriptors and no redirection of the script's does, else the offset;
# so the lock's own file opened again on the number by the script is told
# from the function's descriptor, and a program that read or seeked
# through the function's descriptor does not make it the script's): empty
# when $1 is not open, `?` when the kernel does not say (no /proc, no ino
# line).
_ffkit_fd_id() {
    local _ffkit_l='' _ffkit_m='' _ffkit_n='' _ffkit_p='' _ffkit_g=''
    _ffkit_id=
    if [[ ! -e /proc/self/fdinfo/$1 ]]; then
        [[ -d /proc/self/fdinfo ]] || _ffkit_id='?'
        return 0
    fi
    # zsh with a readonly IFS: the kernel does not say (_ffkit_ifs_ro).
    if _ffkit_ifs_ro; then
        _ffkit_id='?'
        return 0
    fi
    # One read of the whole file (a few lines), not one per line.
    { IFS= read -r -d '' _ffkit_l; } </proc/self/fdinfo/"$1" 2>/dev/null || :
    _ffkit_m=${_ffkit_l#*mnt_id:}
    _ffkit_n=${_ffkit_l#*ino:}
    _ffkit_p=${_ffkit_l#*pos:}
    if [[ $_ffkit_m == "$_ffkit_l" || $_ffkit_n == "$_ffkit_l" ]]; then
        _ffkit_id='?'
        return 0
    fi
    _ffkit_m=${_ffkit_m%%$'\n'*}
    _ffkit_n=${_ffkit_n%%$'\n'*}
    _ffkit_p=${_ffkit_p%%$'\n'*}
    _ffkit_p=${_ffkit_p//[!0-9]/}
    if [[ $_ffkit_l == *flags:* ]]; then
        _ffkit_g=${_ffkit_l#*flags:}
        _ffkit_g=${_ffkit_g%%$'\n'*}
        _ffkit_g=${_ffkit_g//[!0-7]/}
        # O_NONBLOCK (octal 4000): the lock functions' flag.
        if [[ -n $_ffkit_g ]] && (((8#$_ffkit_g & 8#4000) != 0)); then
            _ffkit_p=f
        fi
    fi
    _ffkit_id=${_ffkit_m//[!0-9]/}/${_ffkit_n//[!0-9]/}/$_ffkit_p
}

# Empties slot $1 of the held-lock table (its file, descriptor, owner pid
# and descriptor identity); the caller closed or left the descriptor.
_ffkit_lock_slot_free() {
    _ffkit_lock_files[$1]=
    _ffkit_lock_fds[$1]=
    _ffkit_lock_pids[$1]=
    _ffkit_lock_ids[$1]=
}

# Closes the held-lock table's descriptor $1 when it is still the one the
# lock was taken through (identity $2, from _ffkit_fd_id): a number the
# script closed, or opened again on another file (`exec 12>log`), is the
# script's and stays as it is (docs/shell.md, "Locks").
_ffkit_lock_close() {
    local _ffkit_id='' _ffkit_cfd=$1
    if [[ $2 != '?' ]]; then
        _ffkit_fd_id "$1"
        [[ $_ffkit_id == "$2" ]] || return 0
    fi
    { eval 'exec {_ffkit_cfd}<&-'; } 2>/dev/null || :
}

# Sets _ffkit_now to the time in microseconds (bash 5's EPOCHREALTIME,
# zsh/datetime's epochtime, else whole seconds of SECONDS), no process.
_ffkit_now_us() {
    if [[ -z ${ZSH_VERSION-} && -n ${EPOCHREALTIME-} ]]; then
        _ffkit_now=${EPOCHREALTIME//[!0-9]/}
    elif [[ -n ${ZSH_VERSION-} ]] && zmodload -F zsh/datetime p:epochtime 2>/dev/null; then
        # shellcheck disable=SC2154 # -- zsh/datetime's parameter
        _ffkit_now=$((epochtime[0] * 1000000 + epochtime[1] / 1000))
    else
        _ffkit_now=$((SECONDS * 1000000))
    fi
}

# Sets _ffkit_total to LOCK_TIMEOUT in microseconds (empty when it is not a
# plain number of seconds: the binary then reports it, exit 12), _ffkit_whole
# to it in seconds (a retry's `-w LEFT` says its timeout as the whole
# call's: `--whole-timeout`, the builtin's line) and _ffkit_t0 to now: the
# one deadline of an acquisition.
_ffkit_lock_budget() {
    local _ffkit_s=${LOCK_TIMEOUT:-30} _ffkit_f=''
    _ffkit_s=${_ffkit_s//[[:space:]]/}
    _ffkit_total=
    _ffkit_now_us
    _ffkit_t0=$_ffkit_now
    case $_ffkit_s in
        '' | . | *[!0-9.]* | *.*.*) return 0 ;;
    esac
    _ffkit_whole=$_ffkit_s
    [[ $_ffkit_s != *.* ]] || _ffkit_f=${_ffkit_s#*.}
    _ffkit_s=${_ffkit_s%%.*}
    _ffkit_f=${_ffkit_f}000000
    [[ ${#_ffkit_s} -le 12 ]] || _ffkit_s=999999999999
    _ffkit_total=$((10#${_ffkit_s:-0} * 1000000 + 10#${_ffkit_f:0:6}))
}

# Sets _ffkit_wt to the seconds left of _ffkit_total since _ffkit_t0, for
# `lock-acquire -w`; fails when none are left. 0 stays 0 (non-blocking).
_ffkit_lock_left() {
    local _ffkit_l=0 _ffkit_f=''
    [[ -n $_ffkit_total ]] || return 0
    [[ $_ffkit_total != 0 ]] || { _ffkit_wt=0; return 1; }
    _ffkit_now_us
    _ffkit_l=$((_ffkit_total - (_ffkit_now - _ffkit_t0)))
    [[ $_ffkit_l -gt 0 ]] || return 1
    _ffkit_f=00000$((_ffkit_l % 1000000))
    _ffkit_wt=$((_ffkit_l / 1000000)).${_ffkit_f:${#_ffkit_f}-6}
}

# _ffkit_lock_drop FUNCTION KIND NAME: releases a lock this shell
# holds on NAME's file and closes its fd; fails with 4 when this shell does
# not hold it.
_ffkit_lock_drop() {
    local _ffkit_fd='' _ffkit_i=0 _ffkit_rc=0
    local _ffkit_sess='' _ffkit_inherited='' _ffkit_pid=''
    [[ $2 == critical ]] || _ffkit_sess=--session
    if _ffkit_remote; then
        # As this shell (a subshell's own pid): the release of a lock a
        # shell it runs under took is refused with 4, as locally.
        _ffkit_mypid
        _ffkit_lock_call lock-release --owner "$_ffkit_pid" ${_ffkit_sess:+"$_ffkit_sess"} -- "$3"
        return $?
    fi
    _ffkit_lock_forget_inherited "$_ffkit_file"
    if [[ -n $_ffkit_inherited ]]; then
        # The builtin's words (lock::held_by_parent_shell).
        _ffkit_err "$1: $_ffkit_file: not held by this shell (its parent shell took it; only that shell may release it)"
        return 4
    fi
    if [[ -n ${_ffkit_lock_files+set} ]]; then
        while [[ $_ffkit_i -lt ${#_ffkit_lock_files[@]} ]]; do
            if [ "${_ffkit_lock_files[_ffkit_i]}" = "$_ffkit_file" ]; then
                _ffkit_fd=${_ffkit_lock_fds[_ffkit_i]}
                # A descriptor whose lock was released behind this
                # shell's back is the builtin's verdict and line
                # (lock::fd::lost_by_shell; `--function` words it as FUNC).
                _ffkit_lock_call lock-release --fd "$_ffkit_fd" --function "$1" ${_ffkit_sess:+"$_ffkit_sess"} -- "$3" || _ffkit_rc=$?
                # Closing the fd releases the lock even if lock-release
                # failed; a number the script closed or reopened (the
                # binary's verdict: descriptor_lost_by_shell, or a release
                # through a copy of the descriptor that held the lock) is
                # left alone.
                _ffkit_lock_close "$_ffkit_fd" "${_ffkit_lock_ids[_ffkit_i]:-?}"
                _ffkit_lock_slot_free "$_ffkit_i"
                return "$_ffkit_rc"
            fi
            _ffkit_i=$((_ffkit_i + 1))
        done
    fi
    # Not in the table: a lock this shell took with `ffkit lock-acquire
    # NAME` (a named pair) is released as `ffkit lock-release NAME` would,
    # by the rule and with the one line the builtin uses
    # (lock::release::for_shell; `--function` prints it as this function).
    _ffkit_lock_call lock-release --function "$1" ${_ffkit_sess:+"$_ffkit_sess"} -- "$3"
}

# ---------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------

# get_cache_size [dev_id]: prints the cache size in bytes. With
# CACHE_SIZE_TRACKING=enabled (the default) a valid .size-index is read with
# builtins, without starting a process; otherwise `ffkit cache-size` answers
# (and rebuilds a missing or invalid index, or repairs after a crash).
get_cache_size() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev='' _ffkit_n=''
    _ffkit_ns get_cache_size "${1-}" || return $?
    # Forkless only with the defaults (CACHE_SIZE_TRACKING empty or
    # `enabled`, FF_DEBUG empty or `false`), compared byte for byte: a
    # `case` obeyed bash's nocasematch, and took `ENABLED` (a bad value:
    # exit 12 from the binary, the builtin and zsh) for `enabled`.
    if ! _ffkit_remote &&
        { [ "${CACHE_SIZE_TRACKING-}" = '' ] || [ "$CACHE_SIZE_TRACKING" = enabled ]; } &&
        { [ "${FF_DEBUG-}" = '' ] || [ "$FF_DEBUG" = false ]; }; then
        # A failed printf (stdout a full disk, closed) asks the binary,
        # whose line and status are every path's (docs/shell.md).
        if _ffkit_index_read "$_ffkit_dir" && { printf '%s\n' "$_ffkit_n"; } 2>/dev/null; then
            return 0
        fi
    fi
    _ffkit_run "$_ffkit_log" --fn-dir cache-size --dir "$_ffkit_dir" </dev/null
}

# rebuild_size_index dev_id: recomputes the index by walking; prints the size.
rebuild_size_index() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev=''
    _ffkit_ns rebuild_size_index "${1-}" || return $?
    _ffkit_run "$_ffkit_log" --fn-dir cache-size --dir "$_ffkit_dir" --rebuild </dev/null
}

# write_cache_with_metadata key value [ttl_seconds]: writes the entry and its
# metadata; ttl 0 (or absent/empty) never expires.
write_cache_with_metadata() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    if [[ $# -lt 2 ]]; then
        _ffkit_err 'usage: write_cache_with_metadata key value [ttl_seconds]'
        return 2
    fi
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev=''
    _ffkit_ns write_cache_with_metadata '' || return $?
    # One argument may not exceed 128 KiB (Linux MAX_ARG_STRLEN); long values
    # go through a pipe instead (4 bytes per character covers any UTF-8).
    # A value of `-` is data too: given as an argument, the binary would read
    # standard input instead, so it goes through the pipe as well.
    # In zsh a value may hold NUL bytes, which no argument can carry (the
    # kernel would cut it at the first): those go through the pipe too.
    if [[ ${#2} -gt 32000 || "$2" == "-" || ( -n ${ZSH_VERSION-} && $2 == *$'\0'* ) ]]; then
        # The binary's line is the one: one that refuses the call (a bad
        # key or TTL) before reading it all made printf, with SIGPIPE
        # ignored (`trap '' PIPE`, a daemon's children), add `write
        # error: Broken pipe`.
        { printf '%s' "$2"; } 2>/dev/null | _ffkit_run "$_ffkit_log" --fn-dir cache-write --dir "$_ffkit_dir" --ttl "${3:-0}" -- "$1" -
    else
        _ffkit_run "$_ffkit_log" --fn-dir cache-write --dir "$_ffkit_dir" --ttl "${3:-0}" -- "$1" "$2" </dev/null
    fi
}

# read_cache_with_ttl key: prints the value and one newline if the entry is
# present and not expired; fails with 1 (and prints nothing) otherwise.
# The value's own bytes, trailing newlines included, come first: see
# docs/shell.md for getting them back exactly.
read_cache_with_ttl() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    if [[ $# -lt 1 ]]; then
        _ffkit_err 'usage: read_cache_with_ttl key'
        return 2
    fi
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev='' _ffkit_rc=0
    _ffkit_ns read_cache_with_ttl '' || return $?
    # The binary prints the newline too (--fn-newline): a reader that stops
    # early is its quiet EPIPE, never this shell's SIGPIPE (docs/shell.md).
    _ffkit_run "$_ffkit_log" --fn-dir cache-read --dir "$_ffkit_dir" -q --fn-newline -- "$1" </dev/null || _ffkit_rc=$?
    case $_ffkit_rc in
        0) ;;
        4) return 1 ;;
        *) return "$_ffkit_rc" ;;
    esac
}

# batch_write_cache [batch]: writes every `key:value` line of $1 (or of
# standard input when no argument is given) with TTL 300 s, in one operation.
batch_write_cache() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev=''
    _ffkit_ns batch_write_cache '' || return $?
    if [[ $# -gt 0 ]]; then
        _ffkit_run "$_ffkit_log" --fn-dir cache-batch --dir "$_ffkit_dir" <<<"$1"
    else
        _ffkit_run "$_ffkit_log" --fn-dir cache-batch --dir "$_ffkit_dir"
    fi
}

# batch_read_cache key...: prints `key:value` for every present, unexpired
# key, in argument order. No keys: prints nothing.
batch_read_cache() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    [[ $# -gt 0 ]] || return 0
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev=''
    _ffkit_ns batch_read_cache '' || return $?
    _ffkit_run "$_ffkit_log" --fn-dir cache-batch --read --dir "$_ffkit_dir" -- "$@" </dev/null
}

# enforce_cache_limits dev_id max_bytes: evicts expired entries, then the
# least recently used, until the cache is at most max_bytes.
enforce_cache_limits() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    if [[ $# -lt 2 || -z $2 ]]; then
        _ffkit_err 'usage: enforce_cache_limits dev_id max_bytes'
        return 2
    fi
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev=''
    _ffkit_ns enforce_cache_limits "$1" || return $?
    _ffkit_run "$_ffkit_log" --fn-dir cache-evict --dir "$_ffkit_dir" --max-bytes "$2" </dev/null
}

# clear_developer_cache dev_id: removes every entry of that cache.
clear_developer_cache() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev=''
    _ffkit_ns clear_developer_cache "${1-}" || return $?
    _ffkit_run "$_ffkit_log" --fn-dir cache-evict --dir "$_ffkit_dir" --all </dev/null
}

# _ffkit_store_as FUNC KEY TTL [data]: writes data (standard input when
# absent) under KEY; the body of cache_provider_data and cache_time_tracking.
_ffkit_store_as() {
    if [[ $# -ge 4 ]]; then
        write_cache_with_metadata "$2" "$4" "$3"
        return $?
    fi
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev=''
    _ffkit_ns "$1" '' || return $?
    _ffkit_run "$_ffkit_log" --fn-dir cache-write --dir "$_ffkit_dir" --ttl "$3" -- "$2" -
}

# cache_provider_data provider [data]: caches data (standard input when
# absent) under the key provider_<provider> for 5 minutes.
cache_provider_data() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    if [[ $# -lt 1 ]]; then
        _ffkit_err 'usage: cache_provider_data provider [data]'
        return 2
    fi
    _ffkit_store_as cache_provider_data "provider_$1" 300 "${@:2}"
}

# get_provider_cache provider: prints what cache_provider_data stored.
get_provider_cache() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    if [[ $# -lt 1 ]]; then
        _ffkit_err 'usage: get_provider_cache provider'
        return 2
    fi
    read_cache_with_ttl "provider_$1"
}

# cache_time_tracking session_id [data]: stores data (standard input when
# absent) under time_tracking_<session_id>; it never expires.
cache_time_tracking() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    if [[ $# -lt 1 ]]; then
        _ffkit_err 'usage: cache_time_tracking session_id [data]'
        return 2
    fi
    _ffkit_store_as cache_time_tracking "time_tracking_$1" 0 "${@:2}"
}

# recover_time_tracking session_id: prints what cache_time_tracking stored.
recover_time_tracking() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    if [[ $# -lt 1 ]]; then
        _ffkit_err 'usage: recover_time_tracking session_id'
        return 2
    fi
    read_cache_with_ttl "time_tracking_$1"
}

# ---------------------------------------------------------------------------
# Locks
# ---------------------------------------------------------------------------

# acquire_critical_lock name: takes the kernel lock <namespace>/locks/<name>.lock
# and keeps it until release_critical_lock name (or until the shell exits).
# Waits up to LOCK_TIMEOUT seconds (exit 6 after that).
acquire_critical_lock() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev='' _ffkit_file=''
    _ffkit_ns acquire_critical_lock '' critical "${1-}" || return $?
    _ffkit_lock_take acquire_critical_lock critical "$1"
}

# release_critical_lock name: releases a lock this shell took; fails (4)
# when this shell does not hold it.
# A trap's release of the very lock its shell waits for (bash fallback,
# which runs the trap inside its `wait`: _ffkit_lock_on_fd) waits for that
# waiter to end first, as the builtin and zsh release it once the wait is
# over: the release then frees the lock the waiting call got (0), where it
# answered 4 (not held yet) and the waiting call kept the lock. A signal
# that cuts this wait short leaves the release to answer as before.
_ffkit_wait_waiter() {
    if [[ -n ${_ffkit_wpid-} ]] && [ "${_ffkit_wfile-}" = "$_ffkit_file" ]; then
        wait "$_ffkit_wpid" 2>/dev/null || :
    fi
}

release_critical_lock() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev='' _ffkit_file=''
    _ffkit_ns release_critical_lock '' critical "${1-}" || return $?
    _ffkit_wait_waiter
    _ffkit_lock_drop release_critical_lock critical "$1"
}

# acquire_session_lock dev_id session_id: takes the kernel lock
# <dev_id's namespace>/sessions/locks/<session_id>.lock until released.
acquire_session_lock() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev='' _ffkit_file=''
    _ffkit_ns acquire_session_lock "${1-}" session "${2-}" || return $?
    _ffkit_lock_take acquire_session_lock session "$2"
}

# release_session_lock dev_id session_id: releases it; fails (4) when this
# shell does not hold it.
release_session_lock() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev='' _ffkit_file=''
    _ffkit_ns release_session_lock "${1-}" session "${2-}" || return $?
    _ffkit_wait_waiter
    _ffkit_lock_drop release_session_lock session "$2"
}

# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------

# record_performance_metric operation start end: appends one row whose
# duration is end - start in milliseconds. The binary reads the unit from
# start's magnitude: epoch seconds (date +%s, or $EPOCHREALTIME with a
# fraction), milliseconds (date +%s%3N, or $(date +%s%N)/1000000), micro- or
# nanoseconds (date +%s%N); values below 1e8 are differences in
# milliseconds, as the old library wrote them. See docs/shell.md.
# With CACHE_PERF_MONITORING=disabled it does nothing and starts no process.
record_performance_metric() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    [ "${CACHE_PERF_MONITORING-}" != disabled ] || return 0
    if [[ $# -lt 3 ]]; then
        _ffkit_err 'usage: record_performance_metric operation start end'
        return 2
    fi
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev=''
    _ffkit_ns record_performance_metric '' || return $?
    _ffkit_run "$_ffkit_log" perf-metrics record -- "$1" "$2" "$3" </dev/null
}

# get_performance_metrics: prints {"op": {"count": N, "total": T, "avg": A, ...}, ...}.
get_performance_metrics() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev=''
    _ffkit_ns get_performance_metrics '' || return $?
    _ffkit_run "$_ffkit_log" perf-metrics --json </dev/null
}

# cleanup_performance_metrics: trims the metrics log.
cleanup_performance_metrics() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev=''
    _ffkit_ns cleanup_performance_metrics '' || return $?
    _ffkit_run "$_ffkit_log" perf-metrics cleanup </dev/null
}

# ---------------------------------------------------------------------------
# Command cache (cache-run)
# ---------------------------------------------------------------------------

# cache_command [OPTIONS] -- CMD [ARGS...]: runs CMD once and replays its
# stdout, stderr (in their order) and exit status from the namespace's cache
# until the TTL ends (default 60 s; --ttl, --stale, --key-env, --key-stdin,
# ... as `ffkit cache-run --help` lists). A call whose first argument is not
# an option is all command, `--` included: `cache_command gh api rate_limit`,
# `cache_command git log -- f`. With options first, the first `--` ends them.
# Exits with CMD's status; ffkit's own failures use its exit codes (never
# 126/127). See docs/cache-run.md.
# Standard input is passed on (used only with --key-stdin).
cache_command() {
    [[ -z ${ZSH_VERSION-} ]] || if [[ -o errexit ]]; then emulate -L zsh -o ksh_arrays -o errexit; else emulate -L zsh -o ksh_arrays; fi
    [[ -n ${ZSH_VERSION-} || $- != *k* ]] || { local - && set +k; }
    _ffkit_bin_check || return 1
    if [[ $# -lt 1 ]]; then
        _ffkit_err 'usage: cache_command [OPTIONS] -- CMD [ARGS...]'
        return 2
    fi
    local _ffkit_dir='' _ffkit_log='' _ffkit_dev=''
    _ffkit_ns cache_command '' || return $?
    case $1 in
        -*) _ffkit_run "$_ffkit_log" --fn-dir cache-run --dir "$_ffkit_dir" "$@" ;;
        *) _ffkit_run "$_ffkit_log" --fn-dir cache-run --dir "$_ffkit_dir" -- "$@" ;;
    esac
}

# ---------------------------------------------------------------------------
# The bash builtin
# ---------------------------------------------------------------------------

# _ffkit_builtin_thin: with the builtin loaded, every function above becomes
# one call into it; namespace and dir resolution, validation and the
# held-lock table then live in Rust (builtin/src/funcs.rs), and the shell
# code above is the fallback path. The builtin runs the local backend only:
# with FFKIT_BACKEND naming a server (set in this shell, exported or not;
# docs/redis.md) the function's builtin runs the fallback path, kept as
# _ffkit_sh_NAME, itself, with the same arguments (builtin/src/lib.rs,
# `shell_fn_call`), so the body is that one command and nothing else: bash
# copies a function's body on every call. The test is in the builtin, not
# in the function, because a `[[ ]]` per call costs a sizeable part of a
# call. `builtin ffkit --fn NAME` answers 200 instead, for the bodies below
# that name it (_ffkit_builtin_rc).
# Called by _ffkit_builtin_load (its _ffkit_fns), right after the file
# (re)defined the fallback functions.
_ffkit_builtin_thin() {
    local _ffkit_f=''
    # The body a function is given when its own builtin is deleted
    # (`enable -d _ffkit_fn_NAME`) while `ffkit` stays: the builtin's hook
    # copies it under the function's name (builtin/src/unload.rs), so
    # FUNCNAME is that name. With `ffkit` gone too the hook copies
    # _ffkit_sh_NAME instead (docs/shell.md, "Unloading the builtin").
    _ffkit_gn() {
        builtin ffkit --fn "${FUNCNAME[0]}" "$@" || _ffkit_builtin_rc "${FUNCNAME[0]}" "$@"
    }
    for _ffkit_f in "${_ffkit_fns[@]}"; do
        eval "_ffkit_sh_$(declare -f "$_ffkit_f")"
        # The function's own builtin (`enable -f` loaded it with ffkit)
        # when there is one: two words fewer per call than
        # `builtin ffkit --fn NAME`, which a library loaded by an older
        # build of this file still gets.
        if enable "_ffkit_fn_$_ffkit_f" 2>/dev/null; then
            eval "$_ffkit_f() {
                _ffkit_fn_$_ffkit_f \"\$@\"
            }"
        else
            eval "$_ffkit_f() {
                builtin ffkit --fn $_ffkit_f \"\$@\" || _ffkit_builtin_rc $_ffkit_f \"\$@\"
            }"
        fi
    done
}

# _ffkit_builtin_rc FUNCTION ARGS...: right after a failed `builtin ffkit
# --fn` call (`|| _ffkit_builtin_rc …`, so `$?` on entry is the builtin's
# status), the fallback path when the builtin answered 200 (a remote
# FFKIT_BACKEND), else the builtin's status.
_ffkit_builtin_rc() {
    local _ffkit_rc=$?
    if [[ $_ffkit_rc == 200 ]]; then
        local _ffkit_fn=$1
        shift
        "_ffkit_sh_$_ffkit_fn" "$@"
    else
        return "$_ffkit_rc"
    fi
}

# _ffkit_builtin_load EXE BUILD_ID: loads the builtin `ffkit` into this bash
# (4.4 or later) once, from FFKIT_BUILTIN=PATH, else next to the binary
# (EXE, FFKIT_BIN or ffkit on PATH) or in its install prefix's lib/ffkit/.
# FFKIT_BUILTIN=off, zsh, an older bash or no library found: nothing
# happens and the functions run the binary. A library that is not the
# binary's build (BUILD_ID, or `EXE init --build-id`) is unloaded again with
# one line. Already loaded: never loaded twice (that would drop held locks),
# only the thin functions are defined again. Messages go to fd 3.
_ffkit_builtin_load() {
    local _ffkit_exe=$1 _ffkit_id=$2 _ffkit_so='' _ffkit_c=''
    # The functions the builtin runs; each has a builtin _ffkit_fn_NAME
    # (builtin/src/lib.rs), loaded with `ffkit` and read by
    # _ffkit_builtin_thin.
    local _ffkit_fns=(get_cache_size rebuild_size_index write_cache_with_metadata
        read_cache_with_ttl batch_write_cache batch_read_cache enforce_cache_limits
        clear_developer_cache cache_provider_data get_provider_cache
        cache_time_tracking recover_time_tracking acquire_critical_lock
        release_critical_lock acquire_session_lock release_session_lock
        record_performance_metric get_performance_metrics cleanup_performance_metrics)
    if [[ -n ${ZSH_VERSION-} || -z ${BASH_VERSION-} ]]; then
        return 0
    fi
    if [[ ${BASH_VERSINFO[0]} -lt 4 || (${BASH_VERSINFO[0]} -eq 4 && ${BASH_VERSINFO[1]} -lt 4) ]]; then
        return 0
    fi
    if [ "${FFKIT_BUILTIN-}" = off ]; then
        return 0
    fi
    if builtin ffkit --ffkit-loaded; then
        _ffkit_builtin_thin
        return 0
    fi
    # The fallback's table holds locks of this shell (taken with the
    # builtin off, or handed over when the builtin was unloaded: `enable
    # -d`, builtin/src/unload.rs): a builtin loaded now would not know
    # them, so the functions stay on the binary path.
    if [[ -n ${_ffkit_lock_files+set} ]]; then
        for _ffkit_c in "${_ffkit_lock_files[@]}"; do
            [[ -z $_ffkit_c ]] || return 0
        done
    fi
    [[ -n $_ffkit_exe ]] || _ffkit_exe=${FFKIT_BIN-}
    if [[ -z $_ffkit_exe ]]; then
        _ffkit_exe=$(type -P ffkit) || _ffkit_exe=''
    fi
    if [[ -n ${FFKIT_BUILTIN-} ]]; then
        _ffkit_so=$FFKIT_BUILTIN
        if [[ ! -f $_ffkit_so ]]; then
            printf 'ffkit.bash: FFKIT_BUILTIN=%s: no such file; using the binary\n' "$_ffkit_so" >&3
            return 0
        fi
    elif [[ -n $_ffkit_exe ]]; then
        for _ffkit_c in "${_ffkit_exe%/*}/libffkit_builtin.so" "${_ffkit_exe%/*}/../lib/ffkit/libffkit_builtin.so"; do
            if [[ -f $_ffkit_c ]]; then
                _ffkit_so=$_ffkit_c
                break
            fi
        done
    fi
    [[ -n $_ffkit_so ]] || return 0
    if [[ -z $_ffkit_id && -n $_ffkit_exe ]]; then
        # An empty environment: a bad setting (LOCK_TIMEOUT=abc) is for the
        # functions to report, not a reason to skip the builtin.
        _ffkit_id=$(command env -i "$_ffkit_exe" init --build-id </dev/null) || _ffkit_id=unknown
    fi
    if ! enable -f "$_ffkit_so" ffkit "${_ffkit_fns[@]/#/_ffkit_fn_}"; then
        printf 'ffkit.bash: cannot load the builtin %s; using the binary\n' "$_ffkit_so" >&3
        return 0
    fi
    if ! builtin ffkit --ffkit-init "$_ffkit_exe" "$_ffkit_id"; then
        enable -d ffkit "${_ffkit_fns[@]/#/_ffkit_fn_}" || :
        printf 'ffkit.bash: the builtin %s is not the build of %s; using the binary\n' "$_ffkit_so" "$_ffkit_exe" >&3
        return 0
    fi
    _ffkit_builtin_thin
}

# Traces and bash's own messages of the loader go nowhere; its one-line
# notes go to the caller's stderr through fd 3.
{ _ffkit_builtin_load '' ''; } 3>&2 2>/dev/null
