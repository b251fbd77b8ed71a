#!/usr/bin/env bash
# cache-run --output against cp -a, cp -al and a .tar.zst (docs/cache-run.md,
# "Outputs"): restoring a node_modules-shaped tree from the store.
#
# Builds the shipped binary (`cargo xtask dist`), generates a tree (FILES
# files in nested package dirs, sizes spread like a node_modules: many small
# files, a few large ones, ~15% duplicate contents), stores it once, then
# runs hyperfine pairs and prints a table of median ratios with the goals of
# issue 26. The two commands of a pair alternate (A B, B A, A B, ...: one
# hyperfine run each, exported as JSON under OUT), so a swing of the disk's
# write-back hits both alike. Every restore starts from an
# absent target (`--prepare 'rm -rf out; sync'`), like a fresh worktree;
# the sync keeps one command's write-back out of the next one's time (on a
# loaded disk it otherwise swings single times several-fold). The "store"
# rows time the whole miss: the command (`cp -a`) plus storing its output.
#
# Usage: scripts/bench-output.sh [OUT]   (OUT defaults to target/bench/output)
# Env:   FILES  files in the tree (default 30000; ~250 MB at the default)
#        RUNS   hyperfine runs per command (default 5)
#        BENCH_DIR  where the tree and cache go (default: a temp dir; pick one
#                   on the file system to measure)
#        ROWS  the pairs to run, by name (default: all): copy link untar
#              store restore-force reflink reflink-copy reflink-floor
#              (reflink-floor: scripts/ref_restore.c, the floor of a
#              per-file restore, 1, 2 and 8 threads, create + close
#              only, and with the sources read as a restore reads its
#              blobs, alternated with cp -a; needs cc)
#        REFLINK=0  skip the reflink rows (by default, as root with mkfs.xfs
#                   and a free loop device, it runs on an XFS reflink=1 loop
#                   image made, mounted and removed here)
#        REFLINK_FS=btrfs  make that loop image btrfs instead of XFS
# Needs: cargo, hyperfine, jq, awk; zstd and tar for the .tar.zst row
# (bench-only: not in .ci/run); mkfs.xfs (xfsprogs) or mkfs.btrfs
# (btrfs-progs) for the reflink rows.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-$ROOT/target/bench/output}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT/reflink-floor.txt" # a row only for this run's floor
FILES=${FILES:-30000}
RUNS=${RUNS:-5}

for tool in cargo hyperfine jq awk; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench-output.sh: $tool is required" >&2; exit 1; }
done

log() { printf 'bench-output.sh: %s\n' "$*" >&2; }
# shellcheck source=scripts/hyperfine-lib.sh
. "$ROOT/scripts/hyperfine-lib.sh"

log "building the shipped binary (cargo xtask dist: static-pie, DEVELOPERS.md)"
CARGO_TERM_QUIET=true cargo xtask dist
BIN=$ROOT/target/dist/ffkit

W=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/ffkit-bench-output.XXXXXX")
MNT="" LOOP=""
cleanup() {
  cd /
  if [[ -n $MNT ]]; then umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true; fi
  if [[ -n $LOOP ]]; then losetup -d "$LOOP" 2>/dev/null || true; fi
  chmod -R u+w "$W" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
cd "$W"

# want NAME: whether ROWS asks for that pair.
want() { [[ -z ${ROWS:-} || " $ROWS " == *" $1 "* ]]; }

# alternate NAME PREPARE LABEL_A CMD_A LABEL_B CMD_B: RUNS runs of each, in
# alternating order, one hyperfine run at a time; $OUT/NAME.json holds each
# label's times and median as `compare` would (`median` reads it).
alternate() {
  local name=$1 prep=$2 la=$3 ca=$4 lb=$5 cb=$6 i
  want "$name" || return 0
  log "hyperfine (alternating): $name"
  rm -f "$OUT/$name".*.json
  for ((i = 0; i < RUNS; i++)); do
    local order=(a b)
    ((i % 2)) && order=(b a)
    for x in "${order[@]}"; do
      local l=$la c=$ca
      [[ $x == b ]] && l=$lb c=$cb
      nice -n 5 hyperfine --style basic --runs 1 --prepare "$prep" -n "$l" \
        --export-json "$OUT/$name.$x.$i.json" "$c" >>"$OUT/hyperfine.log" 2>&1
    done
  done
  jq -s '{results: (map(.results[0]) | group_by(.command) | map({command: .[0].command,
      times: map(.mean), median: (map(.mean) | sort | .[length / 2 | floor])}))}' \
    "$OUT/$name".*.json >"$OUT/$name.json"
  rm -f "$OUT/$name".*.json
}

log "generating $FILES files"
awk -v n="$FILES" 'BEGIN {
  srand(26)
  base = "abcdefghijklmnopqrstuvwxyz0123456789;\n"
  while (length(base) < 130000) base = base base
  for (i = 0; i < n; i++) {
    pkg = int(i / 40); d = "tree/pkg" pkg "/lib" (i % 3)
    if (!(d in made)) { system("mkdir -p " d); made[d] = 1 }
    r = rand()
    size = r < 0.6 ? int(rand() * 2000) : r < 0.95 ? int(rand() * 16000) : int(rand() * 120000)
    f = d "/f" i ".js"
    if (i % 7 == 0) { printf "module.exports = 1;\n" > f }
    else { printf "%d%s\n", i, substr(base, 1, size) > f }
    close(f)
  }
}'
du -sh tree >&2

C=$W/cache
STORE=("$BIN" cache-run --dir "$C" --ttl 0 --output out -- cp -a tree out)
log "storing once"
"${STORE[@]}" >/dev/null
rm -rf out

q() { printf '%q ' "$@"; }
RESTORE=("$BIN" cache-run --dir "$C" --ttl 0 --output out --link -- cp -a tree out)
# Removing a --link restore: directories only are made writable. A
# `chmod -R u+w` would chmod the store's blobs through their hard links,
# which the next restore rightly takes for damage (docs/cache-run.md,
# "--link"): a miss that runs the command and stores it again.
RM_OUT='find out -type d ! -perm -u+w -exec chmod u+w {} + 2>/dev/null; rm -rf out; sync'
alternate copy 'rm -rf out; sync' \
  "cp -a" "cp -a tree out" \
  restore "$(q "${STORE[@]}")"
alternate link "$RM_OUT" \
  "cp -al" "cp -al tree out" \
  "restore --link" "$(q "${RESTORE[@]}")"
TARZ=
if command -v zstd >/dev/null 2>&1; then
  tar -cf - tree | zstd -q -o tree.tar.zst
  TARZ="tar --zstd -xf tree.tar.zst --transform s/^tree/out/"
  alternate untar "$RM_OUT" \
    untar "$TARZ" \
    "restore --link" "$(q "${RESTORE[@]}")"
fi
alternate store "rm -rf out $(q "$C"); sync" \
  "cp -a" "cp -a tree out" \
  "store (empty store)" "$(q "${STORE[@]}")"
alternate restore-force 'rm -rf out; sync' \
  "cp -a" "cp -a tree out" \
  "store (blobs present)" "$(q "$BIN" cache-run --dir "$C" --ttl 0 --force --output out -- cp -a tree out)"

# Reflink: the tree and a store on an XFS reflink=1 (or btrfs) loop image.
FS=${REFLINK_FS:-xfs}
case $FS in
  xfs) MKFS=(mkfs.xfs -q -m reflink=1) FSNAME=XFS ;;
  btrfs) MKFS=(mkfs.btrfs -q) FSNAME=btrfs ;;
  *) echo "bench-output.sh: REFLINK_FS must be xfs or btrfs, not $FS" >&2; exit 1 ;;
esac
REFLINK_ROW="SKIPPED (REFLINK=0)"
if [[ ${REFLINK:-1} != 0 ]]; then
  REFLINK_ROW="SKIPPED (needs root, ${MKFS[0]} and a loop device)"
  if [[ $(id -u) == 0 ]] && command -v "${MKFS[0]}" >/dev/null 2>&1; then
    truncate -s 3G "$W/$FS.img"
    if "${MKFS[@]}" "$W/$FS.img" >/dev/null && LOOP=$(losetup -f --show "$W/$FS.img") &&
      mkdir -p "$W/$FS" && mount "$LOOP" "$W/$FS"; then
      MNT=$W/$FS
      cp -a tree "$MNT/tree"
      cd "$MNT"
      CX=$MNT/cache
      "$BIN" cache-run --dir "$CX" --ttl 0 --output out -- cp -a tree out >/dev/null
      rm -rf out
      alternate reflink 'rm -rf out; sync' \
        "cp -a" "cp -a tree out" \
        "restore (reflink)" "$(q "$BIN" cache-run --dir "$CX" --ttl 0 --output out -- cp -a tree out)"
      # The goal assumed `cp -a` copies: coreutils >= 9 clones by default,
      # so this pair is against the copy it assumed.
      alternate reflink-copy 'rm -rf out; sync' \
        "cp -a --reflink=never" "cp -a --reflink=never tree out" \
        "restore (reflink)" "$(q "$BIN" cache-run --dir "$CX" --ttl 0 --output out -- cp -a tree out)"
      # The floor of any per-file restore there (scripts/ref_restore.c:
      # sources read or opened before its clock starts, then mkdir, create
      # with the mode, write or FICLONE, futimens, close) against `cp -a`,
      # alternated; its own timed part, not its start-up.
      if want reflink-floor; then
        log "the floor (scripts/ref_restore.c), alternating with cp -a"
        cc -O2 -pthread -o "$W/ref_restore" "$ROOT/scripts/ref_restore.c"
        for ((i = 0; i < RUNS; i++)); do
          rm -rf out; sync
          t0=$(date +%s%N)
          nice -n 5 cp -a tree out
          echo "cp-a wall=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
          for th in 1 2 8; do
            rm -rf out; sync
            nice -n 5 "$W/ref_restore" tree out "$th" 16384
          done
          rm -rf out; sync
          nice -n 5 "$W/ref_restore" tree out 2 16384 0
          rm -rf out; sync
          nice -n 5 "$W/ref_restore" tree out 8 16384 7
        done >"$OUT/reflink-floor.txt"
        rm -rf out
      fi
      REFLINK_ROW=
      cd "$W"
    fi
  fi
fi

ratio() {
  if [[ ! -f $OUT/$1.json ]]; then echo "not run (ROWS)"; return; fi
  awk -v a="$(median "$1" "$2")" -v b="$(median "$1" "$3")" 'BEGIN { printf "%.2f", a / b }'
}
echo "| comparison | ratio (median) | goal |"
echo "| --- | --- | --- |"
echo "| restore / cp -a | $(ratio copy restore "cp -a") | <= 1.2 (ext4) |"
echo "| restore --link / cp -al | $(ratio link "restore --link" "cp -al") | <= 1.5 |"
if [[ -n $TARZ ]]; then
  echo "| restore --link / untar .tar.zst | $(ratio untar "restore --link" untar) | <= 0.2 |"
else
  echo "| restore --link / untar .tar.zst | SKIPPED (no zstd) | <= 0.2 |"
fi
echo "| store, empty store / cp -a | $(ratio store "store (empty store)" "cp -a") | <= 2 |"
echo "| store, blobs present / cp -a | $(ratio restore-force "store (blobs present)" "cp -a") | far less than 2 |"
if [[ -z $REFLINK_ROW ]]; then
  echo "| restore (reflink, $FSNAME) / cp -a there | $(ratio reflink "restore (reflink)" "cp -a") | <= 0.3 |"
  echo "| restore (reflink, $FSNAME) / cp -a --reflink=never there | $(ratio reflink-copy "restore (reflink)" "cp -a --reflink=never") | <= 0.3 |"
  if [[ -f $OUT/reflink-floor.txt ]]; then
    # floor_median PATTERN: the median wall of the lines matching it.
    floor_median() {
      grep -E -- "$1" "$OUT/reflink-floor.txt" | sed 's/.*wall=\([0-9.]*\).*/\1/' | sort -n |
        awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
    }
    cpa=$(floor_median '^cp-a')
    for f in "threads=1 clone_from=16384 steps=3|1 thread" "threads=2 clone_from=16384 steps=3|2 threads" \
      "threads=8 clone_from=16384 steps=3|8 threads" "threads=2 clone_from=16384 steps=0|create + close only, 2 threads" \
      "threads=8 clone_from=16384 steps=7|8 threads, opening and reading the sources as a restore does"; do
      echo "| floor ($FSNAME, ${f#*|}; scripts/ref_restore.c) / cp -a there | $(awk -v a="$(floor_median "${f%|*}")" -v b="$cpa" 'BEGIN { printf "%.2f", a / b }') | what any per-file restore pays |"
    done
  fi
else
  echo "| restore (reflink, $FSNAME) / cp -a there | $REFLINK_ROW | <= 0.3 |"
fi
echo
echo "medians: $(for n in copy link untar store restore-force reflink reflink-copy; do
  [[ -f $OUT/$n.json ]] && jq -r --arg n "$n" '.results[] | "\($n)/\(.command) \(.median * 1000 | floor) ms;"' "$OUT/$n.json"
done | tr '\n' ' ')"
echo
echo "$FILES files ($(du -sh tree | cut -f1)), $RUNS runs each, alternating; raw results in $OUT"
