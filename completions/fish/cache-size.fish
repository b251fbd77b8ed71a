complete -c cache-size -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c cache-size -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c cache-size -s q -l quiet -d 'Draw no progress bar on stderr'
complete -c cache-size -l rebuild -d 'Recompute the index by walking the cache dir, and rewrite it'
complete -c cache-size -l verify -d 'Walk and compare with the index; exit 10 on drift'
complete -c cache-size -l fix -d 'With --verify: rewrite a drifted index'
complete -c cache-size -l json -d 'Print {"bytes":…,"entries":…,"source":"index"|"walk"}'
complete -c cache-size -s H -l human -d 'Print the size like 1.2 MiB'
complete -c cache-size -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cache-size -s V -l version -d 'Print version'
