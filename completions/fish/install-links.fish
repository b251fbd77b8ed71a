complete -c install-links -l dir -d 'Where to create the links (default: the directory of the ffkit binary)' -r -F
complete -c install-links -l prefix -d 'Also install man pages and completions under PREFIX/share' -r -F
complete -c install-links -l persona -d 'Also link the persona applet NAME (e.g. flock), shadowing the system tool' -r
complete -c install-links -s f -l force -d 'Replace files in the way that are not ffkit\'s links'
complete -c install-links -l remove -d 'Remove ffkit\'s links (and, with --prefix, its man pages and completions)'
complete -c install-links -s q -l quiet -d 'Print no summary'
complete -c install-links -s h -l help -d 'Print help (see more with \'--help\')'
complete -c install-links -s V -l version -d 'Print version'
