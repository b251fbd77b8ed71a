# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ffkit_global_optspecs
    string join \n list h/help V/version
end

function __fish_ffkit_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ffkit_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ffkit_using_subcommand
    set -l cmd (__fish_ffkit_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ffkit -n "__fish_ffkit_needs_command" -l list -d 'Print the applet names, one per line'
complete -c ffkit -n "__fish_ffkit_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_needs_command" -s V -l version -d 'Print version'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "cache-size" -d 'Print the cache size in bytes (O(1) from the size index)'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "cache-write" -d 'Write a cache entry (value and metadata) atomically'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "cache-read" -d 'Print a cache entry\'s value if present and not expired (exit 4 otherwise)'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "cache-batch" -d 'Write many entries at once (key:value lines or JSON lines), or read many'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "cache-evict" -d 'Evict expired, old or least recently used entries until the cache fits'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "install-links" -d 'Create the applet symlinks, and optionally install man pages and completions'
complete -c ffkit -n "__fish_ffkit_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -s q -l quiet -d 'Draw no progress bar on stderr'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -l rebuild -d 'Recompute the index by walking the cache dir, and rewrite it'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -l verify -d 'Walk and compare with the index; exit 10 on drift'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -l fix -d 'With --verify: rewrite a drifted index'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -l json -d 'Print {"bytes":…,"entries":…,"source":"index"|"walk"}'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -s H -l human -d 'Print the size like 1.2 MiB'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-size" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-write" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-write" -l ttl -d 'Seconds until the entry expires; 0 = never (default: never)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-write" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-read" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-read" -s q -l quiet -d 'Print no message on stderr; answer by exit code'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-read" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -s f -l file -d 'Read the batch from FILE instead of standard input' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -l format -d 'Input (and --read output) format' -r -f -a "lines\t''
jsonl\t''"
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -l ttl -d 'TTL in seconds for every entry; 0 = never (default: 300)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -s q -l quiet -d 'Draw no progress bar on stderr'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -s k -l keep-going -d 'Write the good lines even if some are bad (still exit 2)'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -l read -d 'Read mode: print the entries for the given keys'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-batch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -l max-bytes -d 'Evict until the cache is at most SIZE (104857600, 100M, 1G)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -l older-than -d 'Evict entries created more than DURATION ago (90s, 5m, 2h, 7d)' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -s q -l quiet -d 'Draw no progress bar on stderr'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -l expired -d 'Evict expired entries'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -l all -d 'Evict every entry (clear the cache)'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -s n -l dry-run -d 'Print what would be evicted; remove nothing'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -l json -d 'Print a JSON report of what was (or would be) removed'
complete -c ffkit -n "__fish_ffkit_using_subcommand cache-evict" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand install-links" -l dir -d 'Where to create the links (default: the directory of the ffkit binary)' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand install-links" -l prefix -d 'Also install man pages and completions under PREFIX/share' -r -F
complete -c ffkit -n "__fish_ffkit_using_subcommand install-links" -l persona -d 'Also link the persona applet NAME (e.g. flock), shadowing the system tool' -r
complete -c ffkit -n "__fish_ffkit_using_subcommand install-links" -s f -l force -d 'Replace files in the way that are not ffkit\'s links'
complete -c ffkit -n "__fish_ffkit_using_subcommand install-links" -l remove -d 'Remove ffkit\'s links (and, with --prefix, its man pages and completions)'
complete -c ffkit -n "__fish_ffkit_using_subcommand install-links" -s q -l quiet -d 'Print no summary'
complete -c ffkit -n "__fish_ffkit_using_subcommand install-links" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict install-links help" -f -a "cache-size" -d 'Print the cache size in bytes (O(1) from the size index)'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict install-links help" -f -a "cache-write" -d 'Write a cache entry (value and metadata) atomically'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict install-links help" -f -a "cache-read" -d 'Print a cache entry\'s value if present and not expired (exit 4 otherwise)'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict install-links help" -f -a "cache-batch" -d 'Write many entries at once (key:value lines or JSON lines), or read many'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict install-links help" -f -a "cache-evict" -d 'Evict expired, old or least recently used entries until the cache fits'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict install-links help" -f -a "install-links" -d 'Create the applet symlinks, and optionally install man pages and completions'
complete -c ffkit -n "__fish_ffkit_using_subcommand help; and not __fish_seen_subcommand_from cache-size cache-write cache-read cache-batch cache-evict install-links help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
