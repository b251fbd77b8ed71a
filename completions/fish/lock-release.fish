complete -c lock-release -l fd -d 'Drop the lock on the caller\'s open descriptor N (exit 4 if it holds none); with NAME, N must be open on NAME\'s lock file' -r
complete -c lock-release -l owner -d 'Release as this owner pid (the one given to lock-acquire --owner)' -r
complete -c lock-release -l lock-dir -d 'Directory of named locks (default: FFKIT_LOCK_DIR, <namespace>/locks, or a per-user runtime dir)' -r -F
complete -c lock-release -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c lock-release -l function -d 'For shell/ffkit.bash: release NAME as shell function FUNC does, refusals in its words' -r
complete -c lock-release -l force -d 'Release even if the lock belongs to another owner'
complete -c lock-release -l dotlock -d 'The lock is a dot-lock (detected from the file anyway)'
complete -c lock-release -l session -d 'NAME is a session lock: <namespace>/sessions/locks (or sessions/ in the lock dir)'
complete -c lock-release -s q -l quiet -d 'Print no message on stderr; answer by exit code'
complete -c lock-release -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lock-release -s V -l version -d 'Print version'
