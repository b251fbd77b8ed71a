complete -c lock-status -l lock-dir -d 'Directory of named locks (default: FFKIT_LOCK_DIR, <namespace>/locks, or a per-user runtime dir)' -r -F
complete -c lock-status -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c lock-status -l dotlock -d 'Treat the file as a dot-lock (detected from its content anyway)'
complete -c lock-status -l session -d 'NAME is a session lock: <namespace>/sessions/locks (or sessions/ in the lock dir)'
complete -c lock-status -l json -d 'Print a JSON report'
complete -c lock-status -s q -l quiet -d 'Print no message on stderr; answer by exit code'
complete -c lock-status -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lock-status -s V -l version -d 'Print version'
