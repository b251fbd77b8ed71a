# shellcheck shell=bash
# hyperfine-lib.sh: the hyperfine plumbing bench.sh and bench-cache-run.sh
# share. Source it after setting OUT (where results go) and defining
# log(). Each `compare` is one hyperfine invocation whose results land in
# $OUT/NAME.{json,md}; `median` reads one command's median back.

compare() { # NAME [hyperfine options...] -- LABEL=CMD...   (an empty CMD is left out)
  local name=$1
  shift
  local opts=()
  while [[ $1 != -- ]]; do opts+=("$1"); shift; done
  shift
  local args=()
  for pair in "$@"; do
    [[ -n ${pair#*=} ]] || continue
    args+=(-n "${pair%%=*}" "${pair#*=}")
  done
  log "hyperfine: $name"
  nice -n 5 hyperfine --style basic "${opts[@]}" \
    --export-json "$OUT/$name.json" --export-markdown "$OUT/$name.md" \
    "${args[@]}" >>"$OUT/hyperfine.log" 2>&1
}

median() { # NAME LABEL -> seconds
  jq -r --arg l "$2" '.results[] | select(.command == $l) | .median' "$OUT/$1.json"
}
