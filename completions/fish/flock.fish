complete -c flock -s w -l timeout -d 'Wait for a limited amount of time' -r
complete -c flock -s E -l conflict-exit-code -d 'Exit code after conflict or timeout' -r
complete -c flock -s s -l shared -d 'Get a shared lock'
complete -c flock -s x -l exclusive -d 'Get an exclusive lock (default)'
complete -c flock -s u -l unlock -d 'Remove a lock'
complete -c flock -s n -l nonblock -d 'Fail rather than wait'
complete -c flock -s o -l close -d 'Close file descriptor before running command'
complete -c flock -s F -l no-fork -d 'Execute command without forking'
complete -c flock -l inherit -d 'ffkit: let the command\'s children keep the lock'
complete -c flock -l verbose -d 'Increase verbosity'
complete -c flock -s h -l help -d 'Print help'
complete -c flock -s V -l version -d 'Print version'
