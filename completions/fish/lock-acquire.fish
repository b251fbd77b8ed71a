complete -c lock-acquire -s c -l command -d 'Run SHELLCMD with $SHELL -c (default /bin/sh) holding the lock' -r
complete -c lock-acquire -l fd -d 'Lock the caller\'s open descriptor N (fd mode); with NAME, N must be open on NAME\'s lock file, whose record then names the caller' -r
complete -c lock-acquire -l function -d 'For shell/ffkit.bash: take NAME on --fd N (or --prepare it) as shell function FUNC does, failures in its words' -r
complete -c lock-acquire -l whole-timeout -d 'For shell/ffkit.bash: say a timeout as after SECS, the whole call\'s' -r
complete -c lock-acquire -s w -l timeout -d 'Give up after SECS (fractional; 0 = non-blocking)' -r
complete -c lock-acquire -s E -l conflict-exit-code -d 'Exit code when busy or timed out' -r
complete -c lock-acquire -l start -d 'First byte of an OFD lock\'s range (default 0; implies --fcntl)' -r
complete -c lock-acquire -l length -d 'Bytes in an OFD lock\'s range (default 0: to the end of the file; implies --fcntl)' -r
complete -c lock-acquire -l owner -d 'Named mode: the process the lock belongs to (default: the caller)' -r
complete -c lock-acquire -l lock-dir -d 'Directory of named locks (default: FFKIT_LOCK_DIR, <namespace>/locks, or a per-user runtime dir)' -r -F
complete -c lock-acquire -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c lock-acquire -l prepare -d 'Create NAME\'s lock dir (0700) and lock file (0600) and exit, taking nothing'
complete -c lock-acquire -l quiet-wait -d 'Never print the waiting line, even on a terminal (FF_DEBUG=true still does)'
complete -c lock-acquire -s s -l shared -d 'Take a shared lock'
complete -c lock-acquire -s x -l exclusive -d 'Take an exclusive lock (default)'
complete -c lock-acquire -s n -l nonblock -d 'Fail at once if the lock is held'
complete -c lock-acquire -s o -l close -d 'Do not pass the lock to the command (ffkit alone holds it while the command runs)'
complete -c lock-acquire -s u -l unlock -d 'Release instead of acquire'
complete -c lock-acquire -s F -l no-fork -d 'Exec the command in place (it inherits the lock)'
complete -c lock-acquire -l inherit -d 'Let the command\'s children keep the lock after it exits (flock(1) behaviour)'
complete -c lock-acquire -l fcntl -d 'Use an open file description lock (fcntl F_OFD_SETLK) instead of flock(2)'
complete -c lock-acquire -l verbose -d 'Report the wait, how long getting the lock took and the command'
complete -c lock-acquire -l dotlock -d 'Use a link(2) dot-lock file instead of a kernel lock (for NFS)'
complete -c lock-acquire -l session -d 'NAME is a session lock: <namespace>/sessions/locks (or sessions/ in the lock dir)'
complete -c lock-acquire -s q -l quiet -d 'Print no message on stderr; answer by exit code'
complete -c lock-acquire -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lock-acquire -s V -l version -d 'Print version'
