complete -c cache-run -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c cache-run -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c cache-run -l ttl -d 'Seconds until the entry expires; 0 = never (default: 60)' -r
complete -c cache-run -l stale -d 'A hit older than this is replayed and refreshed in the background (less than the TTL)' -r
complete -c cache-run -l key-env -d 'Add variable NAME\'s value to the key; unset differs from empty (repeatable)' -r
complete -c cache-run -l key-file -d 'Add PATH\'s size, mtime and inode to the key (repeatable)' -r
complete -c cache-run -l key-file-content -d 'Add a hash of PATH\'s content to the key (repeatable)' -r
complete -c cache-run -l scope -d 'Add STR to the key (e.g. a project or a version)' -r
complete -c cache-run -l output -d 'Store PATH (a file or a whole tree, relative, inside the working directory) with the entry and restore it on a hit (repeatable; local backend)' -r
complete -c cache-run -l refresh-key -d 'Internal: be the detached refresh of this key' -r
complete -c cache-run -l key-cwd -d 'Add the working directory to the key'
complete -c cache-run -l key-stdin -d 'Read stdin, add it to the key, store it and feed it to CMD (else CMD\'s stdin is /dev/null)'
complete -c cache-run -l link -d 'Restore --output files as hard links to the store (fastest; restored files are read-only)'
complete -c cache-run -l discard-failures -d 'Do not store a run that exits non-zero'
complete -c cache-run -l force -d 'Run CMD and store the result even on a hit'
complete -c cache-run -l invalidate -d 'Remove the entry of this key and run nothing'
complete -c cache-run -l print-key -d 'Print the entry\'s key (run-<hash>) and run nothing; with --json, its state'
complete -c cache-run -l json -d 'Print a JSON report (source, cached, status, age, hits, ...) instead of CMD\'s output'
complete -c cache-run -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cache-run -s V -l version -d 'Print version'
