complete -c cache-evict -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c cache-evict -l max-bytes -d 'Evict until the cache is at most SIZE (104857600, 100M, 1G)' -r
complete -c cache-evict -l older-than -d 'Evict entries created more than DURATION ago (90s, 5m, 2h, 7d)' -r
complete -c cache-evict -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c cache-evict -s q -l quiet -d 'Draw no progress bar on stderr'
complete -c cache-evict -l expired -d 'Evict expired entries'
complete -c cache-evict -l all -d 'Evict every entry (clear the cache)'
complete -c cache-evict -s n -l dry-run -d 'Print what would be evicted; remove nothing'
complete -c cache-evict -l json -d 'Print a JSON report of what was (or would be) removed'
complete -c cache-evict -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cache-evict -s V -l version -d 'Print version'
