#!/usr/bin/env bash
# Builds a Debian package of ffkit with dpkg-deb, from a built binary:
#
#   /usr/bin/ffkit and the applet links (cache-size, ... ; not the flock
#       persona, which would shadow util-linux's /usr/bin/flock)
#   /usr/lib/ffkit/libffkit_builtin.so   the bash builtin (docs/shell.md:
#       the loader looks in ../lib/ffkit beside the binary)
#   /usr/share/man/man1/*.1.gz           every page, gzipped
#   /usr/share/bash-completion/completions, /usr/share/zsh/vendor-completions,
#   /usr/share/fish/vendor_completions.d  the completions, Debian's places
#   /usr/share/doc/ffkit/copyright, changelog.Debian.gz
#
# What goes where is decided by the binary itself (`ffkit install-links
# --bin --prefix STAGE/usr`, the one installer); this script moves zsh's
# files to Debian's vendor dir, compresses the pages, strips the ELF files,
# writes the control files and runs dpkg-deb (and lintian with --lintian).
#
# Usage: scripts/build-deb.sh [--bin PATH] [--builtin PATH] [--out DIR] [--compress xz|gzip] [--lintian]
#   --bin PATH      the ffkit binary (default: `cargo xtask dist`, then
#                   TARGET/dist/ffkit, the static-pie build: DEVELOPERS.md)
#   --builtin PATH  libffkit_builtin.so (default: beside the binary)
#   --out DIR       where the .deb goes (default: target/debian)
#   --compress TYPE dpkg-deb's compressor: xz (default, smallest) or gzip
#                   (fast: the tests use it)
#   --lintian       run lintian on the result; fail on any error or warning
# Prints the path of the .deb on its last line.
# Needs: dpkg-deb, dpkg-shlibdeps (dpkg-dev), gzip, strip and readelf
# (binutils).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
bin=''
builtin=''
out=$ROOT/target/debian
run_lintian=0
compress=xz
while (($#)); do
    case $1 in
    --bin) bin=$2; shift 2 ;;
    --builtin) builtin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --lintian) run_lintian=1; shift ;;
    --compress) compress=$2; shift 2 ;;
    *)
        echo "usage: scripts/build-deb.sh [--bin PATH] [--builtin PATH] [--out DIR] [--compress xz|gzip] [--lintian]" >&2
        exit 2
        ;;
    esac
done
if [[ -z $bin ]]; then
    # The dist dir is the one xtask names on its last line: cargo's target
    # dir (CARGO_TARGET_DIR, CARGO_BUILD_TARGET_DIR, build.target-dir), not
    # always target/ (where an earlier build's binary may lie).
    said=$(CARGO_TERM_QUIET=true cargo xtask dist 2>&1) || { printf '%s\n' "$said" >&2; exit 1; }
    dist=$(sed -n 's/^xtask dist: //p' <<<"$said" | tail -n 1)
    [[ -n $dist ]] || { printf 'build-deb: xtask dist named no dir:\n%s\n' "$said" >&2; exit 1; }
    bin=$dist/ffkit
fi
bin=$(realpath "$bin")
[[ -n $builtin ]] || builtin=$(dirname "$bin")/libffkit_builtin.so
for tool in dpkg-deb dpkg-shlibdeps gzip strip readelf; do
    command -v "$tool" >/dev/null || { echo "build-deb: $tool not found (apt-get install dpkg-dev binutils)" >&2; exit 1; }
done
[[ -f $builtin ]] || { echo "build-deb: no builtin at $builtin (cargo xtask dist builds it)" >&2; exit 1; }

version=$("$bin" --version </dev/null | awk '{print $2}')
debversion=$version-1
arch=$(dpkg --print-architecture)
# The release date of this version (Cargo.toml), for the changelog.
date=$(sed -n 's/^date = "\([0-9-]*\)"$/\1/p' Cargo.toml | head -n 1)
[[ -n $date ]] || date=$(date -u +%F)
maintainer='FlowForge developers <flowforge-dev@lists.flowforge.dev>'

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/ffkit_${debversion}_$arch
mkdir -p "$stage"

# The installer: a scratch copy of the binary with the builtin beside it
# (install-links takes the builtin from beside the running binary).
mkdir -p "$work/build"
cp "$bin" "$work/build/ffkit"
cp "$builtin" "$work/build/libffkit_builtin.so"
env -i PATH=/usr/bin:/bin HOME="$work" "$work/build/ffkit" install-links -q --bin --prefix "$stage/usr"
# The manifest of what install-links placed is for `install-links --remove`
# of a prefix install; dpkg keeps its own list, and the package's files
# are never install-links' to remove.
rm "$stage/usr/lib/ffkit/install-links.list"

usr=$stage/usr
mv "$usr/share/zsh/site-functions" "$usr/share/zsh/vendor-completions"
gzip -9n "$usr"/share/man/man1/*.1
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$usr/bin/ffkit" "$usr/lib/ffkit/libffkit_builtin.so"
chmod 0755 "$usr/bin/ffkit"
chmod 0644 "$usr/lib/ffkit/libffkit_builtin.so"

doc=$usr/share/doc/ffkit
mkdir -p "$doc"
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ffkit
Source: https://github.com/flowforge/ffkit

Files: *
Copyright: 2025-2026 FlowForge developers
License: MIT

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a
 copy of this software and associated documentation files (the "Software"),
 to deal in the Software without restriction, including without limitation
 the rights to use, copy, modify, merge, publish, distribute, sublicense,
 and/or sell copies of the Software, and to permit persons to whom the
 Software is furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included
 in all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS
 OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
 MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT.
 IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY
 CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,
 TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
 SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
EOF
{
    echo "ffkit ($debversion) unstable; urgency=medium"
    echo
    echo "  * ffkit $version, packaged from its source tree by scripts/build-deb.sh."
    echo
    echo " -- $maintainer  $(date -u -R -d "$date 00:00:00")"
} >"$work/changelog.Debian"
gzip -9n -c "$work/changelog.Debian" >"$doc/changelog.Debian.gz"

# The shipped binary is static-pie (`cargo xtask dist`, DEVELOPERS.md):
# its C library (musl, or glibc where the musl target cannot be built) is
# linked in, so it has no interpreter and no DT_NEEDED. A binary given with
# --bin may be an ordinary dynamic one (the tests pass theirs). glibc's
# start-up reads GLIBC_TUNABLES, a name no musl binary holds.
static=0
readelf -lW "$bin" | grep -q 'program interpreter' || static=1
static_glibc=0
((static)) && grep -q GLIBC_TUNABLES "$bin" && static_glibc=1

# Tags lintian raises that do not apply to this package, each with its
# reason.
mkdir -p "$usr/share/lintian/overrides"
{
    echo "# Built from ffkit's own tree, not uploaded to Debian: there is no ITP bug."
    echo "ffkit: initial-upload-closes-no-bugs"
    echo "# Rust: no C code calls the libc functions _FORTIFY_SOURCE replaces."
    echo "ffkit: hardening-no-fortify-functions [usr/lib/ffkit/libffkit_builtin.so]"
    if ((static)); then
        echo "# A static-pie executable: its C library is linked in, so it needs no library"
        echo "# (no DT_NEEDED) by design; lintian counts every \"pie executable\" as"
        echo "# a shared library, whose missing DT_NEEDED would be a linking mistake."
        echo "ffkit: shared-library-lacks-prerequisites [usr/bin/ffkit]"
    else
        echo "ffkit: hardening-no-fortify-functions [usr/bin/ffkit]"
    fi
} >"$usr/share/lintian/overrides/ffkit"
chmod 0644 "$usr/share/lintian/overrides/ffkit" "$doc/copyright" "$doc/changelog.Debian.gz"

# Library dependencies as Debian computes them (dpkg-shlibdeps wants a
# debian/control beside the tree it reads).
mkdir -p "$work/debian"
printf 'Source: ffkit\n\nPackage: ffkit\nArchitecture: any\n' >"$work/debian/control"
depends=$(cd "$work" && dpkg-shlibdeps -O -e"$usr/bin/ffkit" -e"$usr/lib/ffkit/libffkit_builtin.so" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')

# A static binary with glibc holds glibc's code: Debian policy 7.8 names the
# source package it was built with (libc.a comes from libc6-dev). The musl
# build's libc.a comes with Rust's musl target (rustup), not from a Debian
# package, as std itself does: no Built-Using.
built_using=''
if ((static_glibc)); then
    glibc=$(dpkg-query -W -f='${source:Version}' libc6-dev 2>/dev/null || true)
    [[ -z $glibc ]] || built_using="Built-Using: glibc (= $glibc)"$'\n'
fi

mkdir -p "$stage/DEBIAN"
installed_size=$(du -k -s --apparent-size "$usr" | awk '{print $1}')
cat >"$stage/DEBIAN/control" <<EOF
Package: ffkit
Version: $debversion
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends
${built_using}Suggests: bash-completion
Section: utils
Priority: optional
Homepage: https://github.com/flowforge/ffkit
Description: cache, lock and metrics helpers for shell scripts
 ffkit is FlowForge's cache, lock and metrics helpers as one native
 multicall binary: a crash-safe file cache with an O(1) size, locks for
 shell scripts (command, descriptor and named locks), and timings of its
 own calls with a metrics report and a small HTTP page.
 .
 Every applet runs as "ffkit APPLET" or through its link (cache-size,
 lock-acquire, perf-metrics, ...). A bash loadable builtin in
 /usr/lib/ffkit makes the shell functions of "ffkit init bash" run
 in-process.
EOF
(cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"
find "$stage" -type d -exec chmod 0755 {} +

mkdir -p "$out"
deb=$out/ffkit_${debversion}_$arch.deb
dpkg-deb --root-owner-group -Z"$compress" --build "$stage" "$deb" >/dev/null
if ((run_lintian)); then
    command -v lintian >/dev/null || { echo "build-deb: lintian not found" >&2; exit 1; }
    lintian --fail-on error,warning "$deb" >&2
fi
echo "$deb"
