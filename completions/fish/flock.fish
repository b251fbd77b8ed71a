complete -c flock -s w -l timeout -d 'Give up after SECS (fractional; 0 = non-blocking)' -r
complete -c flock -s E -l conflict-exit-code -d 'Exit code when busy or timed out' -r
complete -c flock -l start -d 'First byte of an OFD lock\'s range (default 0; implies --fcntl)' -r
complete -c flock -l length -d 'Bytes in an OFD lock\'s range (default 0: to the end of the file; implies --fcntl)' -r
complete -c flock -s c -l command -d 'After FILE: run COMMAND through $SHELL -c (flock FILE -c COMMAND)' -r
complete -c flock -s s -l shared -d 'Take a shared lock'
complete -c flock -s x -l exclusive -d 'Take an exclusive lock (default)'
complete -c flock -s n -l nonblock -d 'Fail at once if the lock is held'
complete -c flock -s o -l close -d 'Do not pass the lock to the command (ffkit alone holds it while the command runs)'
complete -c flock -s u -l unlock -d 'Release instead of acquire'
complete -c flock -s F -l no-fork -d 'Exec the command in place (it inherits the lock)'
complete -c flock -l inherit -d 'Let the command\'s children keep the lock after it exits (flock(1) behaviour)'
complete -c flock -l fcntl -d 'Use an open file description lock (fcntl F_OFD_SETLK) instead of flock(2)'
complete -c flock -l verbose -d 'Report the wait, how long getting the lock took and the command'
complete -c flock -s h -l help -d 'Print help'
complete -c flock -s V -l version -d 'Print version'
