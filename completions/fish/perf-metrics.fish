# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_perf_metrics_global_optspecs
    string join \n dir= since= json prometheus textfile= op= h/help V/version
end

function __fish_perf_metrics_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_perf_metrics_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_perf_metrics_using_subcommand
    set -l cmd (__fish_perf_metrics_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c perf-metrics -n "__fish_perf_metrics_needs_command" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c perf-metrics -n "__fish_perf_metrics_needs_command" -l since -d 'Only rows from the last DURATION (e.g. 90s, 5m, 2h, 7d); reading only: exit 2 on record, time and cleanup' -r
complete -c perf-metrics -n "__fish_perf_metrics_needs_command" -l textfile -d 'With --prometheus: write PATH atomically (temp file + rename) instead of stdout, for node_exporter\'s textfile collector' -r -F
complete -c perf-metrics -n "__fish_perf_metrics_needs_command" -l op -d 'Only this operation (repeatable)' -r
complete -c perf-metrics -n "__fish_perf_metrics_needs_command" -l json -d 'Print {"OP": {"count":…,"total":…,"avg":…,"min":…,"max":…,"p50":…,"p95":…,"p99":…}} in ms'
complete -c perf-metrics -n "__fish_perf_metrics_needs_command" -l prometheus -d 'Print the Prometheus text exposition format (a summary per operation)'
complete -c perf-metrics -n "__fish_perf_metrics_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c perf-metrics -n "__fish_perf_metrics_needs_command" -s V -l version -d 'Print version'
complete -c perf-metrics -n "__fish_perf_metrics_needs_command" -f -a "record" -d 'Append one row: OP DURATION_MS, or OP START END / --start S --end E'
complete -c perf-metrics -n "__fish_perf_metrics_needs_command" -f -a "time" -d 'Run CMD, record its wall time as OP, exit with its status'
complete -c perf-metrics -n "__fish_perf_metrics_needs_command" -f -a "check" -d 'Check health rules such as get_cache_size:p95<10ms'
complete -c perf-metrics -n "__fish_perf_metrics_needs_command" -f -a "serve" -d 'Serve the metrics over HTTP: JSON, Prometheus text and a live page'
complete -c perf-metrics -n "__fish_perf_metrics_needs_command" -f -a "report" -d 'Write the metrics page as one static HTML file'
complete -c perf-metrics -n "__fish_perf_metrics_needs_command" -f -a "cleanup" -d 'Trim the log atomically (default: keep the newest 1000 rows)'
complete -c perf-metrics -n "__fish_perf_metrics_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand record" -l start -r
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand record" -l end -r
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand record" -l unit -d 'Unit of START/END: auto, s, ms, us, ns' -r
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand record" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand record" -l since -d 'Only rows from the last DURATION (e.g. 90s, 5m, 2h, 7d); reading only: exit 2 on record, time and cleanup' -r
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand record" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand time" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand time" -l since -d 'Only rows from the last DURATION (e.g. 90s, 5m, 2h, 7d); reading only: exit 2 on record, time and cleanup' -r
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand time" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand check" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand check" -l since -d 'Only rows from the last DURATION (e.g. 90s, 5m, 2h, 7d); reading only: exit 2 on record, time and cleanup' -r
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand check" -l allow-missing -d 'An operation without data passes'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand check" -l json -d 'Print the verdict of every rule as JSON'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand serve" -l listen -d 'Address to listen on: IP:PORT, [IPv6]:PORT, localhost:PORT, or PORT for 127.0.0.1 (port 0: any free port)' -r
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand serve" -l refresh -d 'Seconds between the page\'s own refreshes, at most 86400 (0: only its Refresh button)' -r
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand serve" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand serve" -l since -d 'Only rows from the last DURATION (e.g. 90s, 5m, 2h, 7d); reading only: exit 2 on record, time and cleanup' -r
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand report" -l html -d 'Write the page to FILE' -r -F
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand report" -l op -d 'Only this operation (repeatable)' -r
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand report" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand report" -l since -d 'Only rows from the last DURATION (e.g. 90s, 5m, 2h, 7d); reading only: exit 2 on record, time and cleanup' -r
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand report" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand cleanup" -l keep-rows -d 'Keep at most the newest N rows' -r
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand cleanup" -l older-than -d 'Drop rows older than DURATION (e.g. 7d)' -r
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand cleanup" -l dir -d 'Cache dir (default: FFKIT_CACHE_DIR, the FlowForge namespace, or ~/.cache/ffkit)' -r -F
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand cleanup" -l since -d 'Only rows from the last DURATION (e.g. 90s, 5m, 2h, 7d); reading only: exit 2 on record, time and cleanup' -r
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand cleanup" -l json -d 'Print {"kept":…,"removed":…,"malformed":…}'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand cleanup" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand help; and not __fish_seen_subcommand_from record time check serve report cleanup help" -f -a "record" -d 'Append one row: OP DURATION_MS, or OP START END / --start S --end E'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand help; and not __fish_seen_subcommand_from record time check serve report cleanup help" -f -a "time" -d 'Run CMD, record its wall time as OP, exit with its status'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand help; and not __fish_seen_subcommand_from record time check serve report cleanup help" -f -a "check" -d 'Check health rules such as get_cache_size:p95<10ms'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand help; and not __fish_seen_subcommand_from record time check serve report cleanup help" -f -a "serve" -d 'Serve the metrics over HTTP: JSON, Prometheus text and a live page'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand help; and not __fish_seen_subcommand_from record time check serve report cleanup help" -f -a "report" -d 'Write the metrics page as one static HTML file'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand help; and not __fish_seen_subcommand_from record time check serve report cleanup help" -f -a "cleanup" -d 'Trim the log atomically (default: keep the newest 1000 rows)'
complete -c perf-metrics -n "__fish_perf_metrics_using_subcommand help; and not __fish_seen_subcommand_from record time check serve report cleanup help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
