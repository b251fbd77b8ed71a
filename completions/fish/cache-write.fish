complete -c cache-write -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c cache-write -l ttl -d 'Seconds until the entry expires; 0 = never (default: never)' -r
complete -c cache-write -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c cache-write -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cache-write -s V -l version -d 'Print version'
