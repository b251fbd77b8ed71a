complete -c cache-batch -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c cache-batch -s f -l file -d 'Read the batch from FILE instead of standard input' -r -F
complete -c cache-batch -l format -d 'Input (and --read output) format' -r -f -a "lines\t''
jsonl\t''"
complete -c cache-batch -l ttl -d 'TTL in seconds for every entry; 0 = never (default: 300)' -r
complete -c cache-batch -l backend -d 'Where locks and the cache live: local, redis://host:port[/db], unix:///path or redis+cluster://host:port[,host:port…] (default: FFKIT_BACKEND, else local)' -r
complete -c cache-batch -s q -l quiet -d 'Draw no progress bar on stderr'
complete -c cache-batch -s k -l keep-going -d 'Write the good lines even if some are bad (still exit 2)'
complete -c cache-batch -l read -d 'Read mode: print the entries for the given keys'
complete -c cache-batch -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cache-batch -s V -l version -d 'Print version'
