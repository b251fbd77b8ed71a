complete -c cache-read -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c cache-read -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c cache-read -s q -l quiet -d 'Print no message on stderr; answer by exit code'
complete -c cache-read -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cache-read -s V -l version -d 'Print version'
