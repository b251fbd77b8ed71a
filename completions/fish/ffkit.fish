# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ffkit_global_optspecs
    string join \n list h/help V/version
end

function __fish_ffkit_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ffkit_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ffkit_using_subcommand
    set -l cmd (__fish_ffkit_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ffkit -n "__fish_ffkit_needs_command" -l list -d 'Print the applet names, one per line'
complete -c ffkit -n "__fish_ffkit_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_needs_command" -s V -l version -d 'Print version'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "cache-size" -d 'Print the cache size in bytes (O(1) from the size index)'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "cache-write" -d 'Write a cache entry (value and metadata) atomically'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "cache-read" -d 'Print a cache entry\'s value if present and not expired (exit 4 otherwise)'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "cache-batch" -d 'Write many entries at once (key:value lines or JSON lines), or read many'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "cache-evict" -d 'Evict expired, old or least recently used entries until the cache fits'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "cache-run" -d 'Run a command once and replay its output and exit status from the cache'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "lock-acquire" -d 'Take a lock: run a command under it, lock a descriptor, or hold a named lock'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "lock-release" -d 'Release a named lock (lock-release NAME) or a descriptor\'s lock (--fd N)'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "lock-status" -d 'Show who holds a lock (exit 0 held, 1 free)'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "flock" -d 'Manage locks from shell scripts (util-linux flock(1) compatible)'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "init" -d 'Print the FlowForge shell functions for eval "$(ffkit init bash)"'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "perf-metrics" -d 'Report, record, time and check operation timings in the metrics log'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "install-links" -d 'Create the applet symlinks, and optionally install man pages and completions'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -s q -l quiet -d 'Draw no progress bar on stderr'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -l rebuild -d 'Recompute the index by walking the cache dir, and rewrite it'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -l verify -d 'Walk and compare with the index; exit 10 on drift'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -l fix -d 'With --verify: rewrite a drifted index'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -l json -d 'Print {"bytes":…,"entries":…,"source":"index"|"walk"}'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -s H -l human -d 'Print the size like 1.2 MiB'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-write" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-write" -l ttl -d 'Seconds until the entry expires; 0 = never (default: never)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-write" -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-write" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-read" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-read" -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-read" -s q -l quiet -d 'Print no message on stderr; answer by exit code'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-read" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -s f -l file -d 'Read the batch from FILE instead of standard input' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -l format -d 'Input (and --read output) format' -r -f -a "lines\t''
jsonl\t''"
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -l ttl -d 'TTL in seconds for every entry; 0 = never (default: 300)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -s q -l quiet -d 'Draw no progress bar on stderr'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -s k -l keep-going -d 'Write the good lines even if some are bad (still exit 2)'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -l read -d 'Read mode: print the entries for the given keys'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -l max-bytes -d 'Evict until the cache is at most SIZE (104857600, 100M, 1G)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -l older-than -d 'Evict entries created more than DURATION ago (90s, 5m, 2h, 7d)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -s q -l quiet -d 'Draw no progress bar on stderr'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -l expired -d 'Evict expired entries'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -l all -d 'Evict every entry (clear the cache)'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -s n -l dry-run -d 'Print what would be evicted; remove nothing'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -l json -d 'Print a JSON report of what was (or would be) removed'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l ttl -d 'Seconds until the entry expires; 0 = never (default: 60)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l stale -d 'A hit older than this is replayed and refreshed in the background (less than the TTL)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l key-env -d 'Add variable NAME\'s value to the key; unset differs from empty (repeatable)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l key-file -d 'Add PATH\'s size, mtime and inode to the key (repeatable)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l key-file-content -d 'Add a hash of PATH\'s content to the key (repeatable)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l scope -d 'Add STR to the key (e.g. a project or a version)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l output -d 'Store PATH (a file or a whole tree, relative, inside the working directory) with the entry and restore it on a hit (repeatable; local backend)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l refresh-key -d 'Internal: be the detached refresh of this key' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l key-cwd -d 'Add the working directory to the key'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l key-stdin -d 'Read stdin, add it to the key, store it and feed it to CMD (else CMD\'s stdin is /dev/null)'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l link -d 'Restore --output files as hard links to the store (fastest; restored files are read-only)'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l discard-failures -d 'Do not store a run that exits non-zero'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l force -d 'Run CMD and store the result even on a hit'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l invalidate -d 'Remove the entry of this key and run nothing'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l print-key -d 'Print the entry\'s key (run-<hash>) and run nothing; with --json, its state'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -l json -d 'Print a JSON report (source, cached, status, age, hits, ...) instead of CMD\'s output'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -s c -l command -d 'Run SHELLCMD with $SHELL -c (default /bin/sh) holding the lock' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -l fd -d 'Lock the caller\'s open descriptor N (fd mode); with NAME, N must be open on NAME\'s lock file, whose record then names the caller' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -l function -d 'For shell/ffkit.bash: take NAME on --fd N (or --prepare it) as shell function FUNC does, failures in its words' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -l whole-timeout -d 'For shell/ffkit.bash: say a timeout as after SECS, the whole call\'s' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -s w -l timeout -d 'Give up after SECS (fractional; 0 = non-blocking)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -s E -l conflict-exit-code -d 'Exit code when busy or timed out' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -l start -d 'First byte of an OFD lock\'s range (default 0; implies --fcntl)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -l length -d 'Bytes in an OFD lock\'s range (default 0: to the end of the file; implies --fcntl)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -l owner -d 'Named mode: the process the lock belongs to (default: the caller)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -l lock-dir -d 'Directory of named locks (default: FFKIT_LOCK_DIR, <namespace>/locks, or a per-user runtime dir)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -l prepare -d 'Create NAME\'s lock dir (0700) and lock file (0600) and exit, taking nothing'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -l quiet-wait -d 'Never print the waiting line, even on a terminal (FF_DEBUG=true still does)'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -s s -l shared -d 'Take a shared lock'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -s x -l exclusive -d 'Take an exclusive lock (default)'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -s n -l nonblock -d 'Fail at once if the lock is held'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -s o -l close -d 'Do not pass the lock to the command (ffkit alone holds it while the command runs)'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -s u -l unlock -d 'Release instead of acquire'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -s F -l no-fork -d 'Exec the command in place (it inherits the lock)'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -l inherit -d 'Let the command\'s children keep the lock after it exits (flock(1) behaviour)'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -l fcntl -d 'Use an open file description lock (fcntl F_OFD_SETLK) instead of flock(2)'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -l verbose -d 'Report the wait, how long getting the lock took and the command'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -l dotlock -d 'Use a link(2) dot-lock file instead of a kernel lock (for NFS)'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -l session -d 'NAME is a session lock: <namespace>/sessions/locks (or sessions/ in the lock dir)'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -s q -l quiet -d 'Print no message on stderr; answer by exit code'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-acquire" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-release" -l fd -d 'Drop the lock on the caller\'s open descriptor N (exit 4 if it holds none); with NAME, N must be open on NAME\'s lock file' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-release" -l owner -d 'Release as this owner pid (the one given to lock-acquire --owner)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-release" -l lock-dir -d 'Directory of named locks (default: FFKIT_LOCK_DIR, <namespace>/locks, or a per-user runtime dir)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-release" -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-release" -l function -d 'For shell/ffkit.bash: release NAME as shell function FUNC does, refusals in its words' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-release" -l force -d 'Release even if the lock belongs to another owner'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-release" -l dotlock -d 'The lock is a dot-lock (detected from the file anyway)'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-release" -l session -d 'NAME is a session lock: <namespace>/sessions/locks (or sessions/ in the lock dir)'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-release" -s q -l quiet -d 'Print no message on stderr; answer by exit code'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-release" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-status" -l lock-dir -d 'Directory of named locks (default: FFKIT_LOCK_DIR, <namespace>/locks, or a per-user runtime dir)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-status" -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-status" -l dotlock -d 'Treat the file as a dot-lock (detected from its content anyway)'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-status" -l session -d 'NAME is a session lock: <namespace>/sessions/locks (or sessions/ in the lock dir)'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-status" -l json -d 'Print a JSON report'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-status" -s q -l quiet -d 'Print no message on stderr; answer by exit code'
complete -c ffkit -n "__fish_ffkit_using_subcommand lock-status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand flock" -s w -l timeout -d 'Give up after SECS (fractional; 0 = non-blocking)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand flock" -s E -l conflict-exit-code -d 'Exit code when busy or timed out' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand flock" -l start -d 'First byte of an OFD lock\'s range (default 0; implies --fcntl)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand flock" -l length -d 'Bytes in an OFD lock\'s range (default 0: to the end of the file; implies --fcntl)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand flock" -s c -l command -d 'After FILE: run COMMAND through $SHELL -c (flock FILE -c COMMAND)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand flock" -s s -l shared -d 'Take a shared lock'
complete -c ffkit -n "__fish_ffkit_using_subcommand flock" -s x -l exclusive -d 'Take an exclusive lock (default)'
complete -c ffkit -n "__fish_ffkit_using_subcommand flock" -s n -l nonblock -d 'Fail at once if the lock is held'
complete -c ffkit -n "__fish_ffkit_using_subcommand flock" -s o -l close -d 'Do not pass the lock to the command (ffkit alone holds it while the command runs)'
complete -c ffkit -n "__fish_ffkit_using_subcommand flock" -s u -l unlock -d 'Release instead of acquire'
complete -c ffkit -n "__fish_ffkit_using_subcommand flock" -s F -l no-fork -d 'Exec the command in place (it inherits the lock)'
complete -c ffkit -n "__fish_ffkit_using_subcommand flock" -l inherit -d 'Let the command\'s children keep the lock after it exits (flock(1) behaviour)'
complete -c ffkit -n "__fish_ffkit_using_subcommand flock" -l fcntl -d 'Use an open file description lock (fcntl F_OFD_SETLK) instead of flock(2)'
complete -c ffkit -n "__fish_ffkit_using_subcommand flock" -l verbose -d 'Report the wait, how long getting the lock took and the command'
complete -c ffkit -n "__fish_ffkit_using_subcommand flock" -s h -l help -d 'Print help'
complete -c ffkit -n "__fish_ffkit_using_subcommand init" -l resolve -d 'Print the namespace of shell function FUNCTION as shell assignments' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand init" -l dev-id -d 'With --resolve: the dev_id argument (empty: the caller\'s namespace)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand init" -l critical -d 'With --resolve: also the file of critical lock NAME' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand init" -l session -d 'With --resolve: also the file of session lock SESSION_ID' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand init" -l developer-for-email -d 'Print the developer id whose email is EMAIL in the team config FILE' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand init" -l build-id -d 'Print the build id the shell loader compares with the bash builtin\'s'
complete -c ffkit -n "__fish_ffkit_using_subcommand init" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and not __fish_seen_subcommand_from record time check serve report cleanup help" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and not __fish_seen_subcommand_from record time check serve report cleanup help" -l since -d 'Only rows from the last DURATION (e.g. 90s, 5m, 2h, 7d); reading only: exit 2 on record, time and cleanup' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and not __fish_seen_subcommand_from record time check serve report cleanup help" -l textfile -d 'With --prometheus: write PATH atomically (temp file + rename) instead of stdout, for node_exporter\'s textfile collector' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and not __fish_seen_subcommand_from record time check serve report cleanup help" -l op -d 'Only this operation (repeatable)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and not __fish_seen_subcommand_from record time check serve report cleanup help" -l json -d 'Print {"OP": {"count":…,"total":…,"avg":…,"min":…,"max":…,"p50":…,"p95":…,"p99":…}} in ms'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and not __fish_seen_subcommand_from record time check serve report cleanup help" -l prometheus -d 'Print the Prometheus text exposition format (a summary per operation)'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and not __fish_seen_subcommand_from record time check serve report cleanup help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and not __fish_seen_subcommand_from record time check serve report cleanup help" -f -a "record" -d 'Append one row: OP DURATION_MS, or OP START END / --start S --end E'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and not __fish_seen_subcommand_from record time check serve report cleanup help" -f -a "time" -d 'Run CMD, record its wall time as OP, exit with its status'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and not __fish_seen_subcommand_from record time check serve report cleanup help" -f -a "check" -d 'Check health rules such as get_cache_size:p95<10ms'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and not __fish_seen_subcommand_from record time check serve report cleanup help" -f -a "serve" -d 'Serve the metrics over HTTP: JSON, Prometheus text and a live page'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and not __fish_seen_subcommand_from record time check serve report cleanup help" -f -a "report" -d 'Write the metrics page as one static HTML file'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and not __fish_seen_subcommand_from record time check serve report cleanup help" -f -a "cleanup" -d 'Trim the log atomically (default: keep the newest 1000 rows)'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and not __fish_seen_subcommand_from record time check serve report cleanup help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from record" -l start -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from record" -l end -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from record" -l unit -d 'Unit of START/END: auto, s, ms, us, ns' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from record" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from record" -l since -d 'Only rows from the last DURATION (e.g. 90s, 5m, 2h, 7d); reading only: exit 2 on record, time and cleanup' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from record" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from time" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from time" -l since -d 'Only rows from the last DURATION (e.g. 90s, 5m, 2h, 7d); reading only: exit 2 on record, time and cleanup' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from time" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from check" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from check" -l since -d 'Only rows from the last DURATION (e.g. 90s, 5m, 2h, 7d); reading only: exit 2 on record, time and cleanup' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from check" -l allow-missing -d 'An operation without data passes'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from check" -l json -d 'Print the verdict of every rule as JSON'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from serve" -l listen -d 'Address to listen on: IP:PORT, [IPv6]:PORT, localhost:PORT, or PORT for 127.0.0.1 (port 0: any free port)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from serve" -l refresh -d 'Seconds between the page\'s own refreshes, at most 86400 (0: only its Refresh button)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from serve" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from serve" -l since -d 'Only rows from the last DURATION (e.g. 90s, 5m, 2h, 7d); reading only: exit 2 on record, time and cleanup' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from report" -l html -d 'Write the page to FILE' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from report" -l op -d 'Only this operation (repeatable)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from report" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from report" -l since -d 'Only rows from the last DURATION (e.g. 90s, 5m, 2h, 7d); reading only: exit 2 on record, time and cleanup' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from report" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from cleanup" -l keep-rows -d 'Keep at most the newest N rows' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from cleanup" -l older-than -d 'Drop rows older than DURATION (e.g. 7d)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from cleanup" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from cleanup" -l since -d 'Only rows from the last DURATION (e.g. 90s, 5m, 2h, 7d); reading only: exit 2 on record, time and cleanup' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from cleanup" -l json -d 'Print {"kept":…,"removed":…,"malformed":…}'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from cleanup" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from help" -f -a "record" -d 'Append one row: OP DURATION_MS, or OP START END / --start S --end E'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from help" -f -a "time" -d 'Run CMD, record its wall time as OP, exit with its status'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from help" -f -a "check" -d 'Check health rules such as get_cache_size:p95<10ms'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from help" -f -a "serve" -d 'Serve the metrics over HTTP: JSON, Prometheus text and a live page'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from help" -f -a "report" -d 'Write the metrics page as one static HTML file'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from help" -f -a "cleanup" -d 'Trim the log atomically (default: keep the newest 1000 rows)'
complete -c ffkit -n "__fish_ffkit_using_subcommand perf-metrics; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ffkit -n "__fish_ffkit_using_subcommand install-links" -l dir -d 'Where to create the links (default: PREFIX/bin with --prefix, else the directory of the ffkit binary)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand install-links" -l prefix -d 'Also install man pages and completions under PREFIX/share' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand install-links" -l persona -d 'Also link the persona applet NAME (e.g. flock), shadowing the system tool' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand install-links" -s f -l force -d 'Replace files in the way that are not ffkit\'s links'
complete -c ffkit -n "__fish_ffkit_using_subcommand install-links" -l remove -d 'Remove ffkit\'s links (and, with --prefix, its man pages and completions)'
complete -c ffkit -n "__fish_ffkit_using_subcommand install-links" -l bin -d 'Also copy this binary to PREFIX/bin/ffkit and link there'
complete -c ffkit -n "__fish_ffkit_using_subcommand install-links" -s q -l quiet -d 'Print no summary'
complete -c ffkit -n "__fish_ffkit_using_subcommand install-links" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict cache-run lock-acquire lock-release lock-status flock init perf-metrics install-links help" -f -a "cache-size" -d 'Print the cache size in bytes (O(1) from the size index)'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict cache-run lock-acquire lock-release lock-status flock init perf-metrics install-links help" -f -a "cache-write" -d 'Write a cache entry (value and metadata) atomically'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict cache-run lock-acquire lock-release lock-status flock init perf-metrics install-links help" -f -a "cache-read" -d 'Print a cache entry\'s value if present and not expired (exit 4 otherwise)'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict cache-run lock-acquire lock-release lock-status flock init perf-metrics install-links help" -f -a "cache-batch" -d 'Write many entries at once (key:value lines or JSON lines), or read many'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict cache-run lock-acquire lock-release lock-status flock init perf-metrics install-links help" -f -a "cache-evict" -d 'Evict expired, old or least recently used entries until the cache fits'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict cache-run lock-acquire lock-release lock-status flock init perf-metrics install-links help" -f -a "cache-run" -d 'Run a command once and replay its output and exit status from the cache'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict cache-run lock-acquire lock-release lock-status flock init perf-metrics install-links help" -f -a "lock-acquire" -d 'Take a lock: run a command under it, lock a descriptor, or hold a named lock'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict cache-run lock-acquire lock-release lock-status flock init perf-metrics install-links help" -f -a "lock-release" -d 'Release a named lock (lock-release NAME) or a descriptor\'s lock (--fd N)'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict cache-run lock-acquire lock-release lock-status flock init perf-metrics install-links help" -f -a "lock-status" -d 'Show who holds a lock (exit 0 held, 1 free)'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict cache-run lock-acquire lock-release lock-status flock init perf-metrics install-links help" -f -a "flock" -d 'Manage locks from shell scripts (util-linux flock(1) compatible)'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict cache-run lock-acquire lock-release lock-status flock init perf-metrics install-links help" -f -a "init" -d 'Print the FlowForge shell functions for eval "$(ffkit init bash)"'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict cache-run lock-acquire lock-release lock-status flock init perf-metrics install-links help" -f -a "perf-metrics" -d 'Report, record, time and check operation timings in the metrics log'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict cache-run lock-acquire lock-release lock-status flock init perf-metrics install-links help" -f -a "install-links" -d 'Create the applet symlinks, and optionally install man pages and completions'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict cache-run lock-acquire lock-release lock-status flock init perf-metrics install-links help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and __fish_seen_subcommand_from perf-metrics" -f -a "record" -d 'Append one row: OP DURATION_MS, or OP START END / --start S --end E'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and __fish_seen_subcommand_from perf-metrics" -f -a "time" -d 'Run CMD, record its wall time as OP, exit with its status'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and __fish_seen_subcommand_from perf-metrics" -f -a "check" -d 'Check health rules such as get_cache_size:p95<10ms'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and __fish_seen_subcommand_from perf-metrics" -f -a "serve" -d 'Serve the metrics over HTTP: JSON, Prometheus text and a live page'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and __fish_seen_subcommand_from perf-metrics" -f -a "report" -d 'Write the metrics page as one static HTML file'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and __fish_seen_subcommand_from perf-metrics" -f -a "cleanup" -d 'Trim the log atomically (default: keep the newest 1000 rows)'
