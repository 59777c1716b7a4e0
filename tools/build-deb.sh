#!/usr/bin/env bash
# tools/build-deb.sh BUILD_DIR [JOBS]: keysvc's Debian packages (debian/), built with
# dpkg-buildpackage from a copy of the source tree in BUILD_DIR/deb/src, into
# BUILD_DIR/deb/ (*.deb, *-dbgsym_*.deb, .changes, .buildinfo), then checked with
# lintian (its output in BUILD_DIR/deb/lintian.txt).
#
# The copy keeps its build folder between runs, so a rebuild only compiles what
# changed (ccache too, when installed); packages whose sources have not changed since
# the last build are reused as they are (BUILD_DIR/deb/source.sha256).
set -euo pipefail
build=$(mkdir -p "$1" && cd "$1" && pwd -P)
jobs=${2:-$(nproc 2>/dev/null || echo 2)}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
out=$build/deb
stage=$out/src
say() { printf 'build-deb: %s\n' "$*"; }
die() { printf 'build-deb: %s\n' "$*" >&2; exit 1; }
command -v dpkg-buildpackage >/dev/null || die "dpkg-buildpackage missing (tools/install-deps.sh installs dpkg-dev, debhelper)"

# The source files: git's view (tracked, and new files not ignored) in a checkout, else
# everything but build folders.
mkdir -p "$stage"
list=$out/files.txt
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$src" ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
    [[ -f $src/$f ]] && printf '%s\0' "$f"
  done >"$list"
else
  (cd "$src" && find . -path './build*' -prune -o -path ./.git -prune -o -type f -printf '%P\0') >"$list"
fi
sha=$( (cd "$src" && xargs -0 sha256sum <"$list") | sha256sum | cut -d' ' -f1)
if [[ -f $out/source.sha256 && $(<"$out/source.sha256") == "$sha" ]] && compgen -G "$out/keysvc_*.deb" >/dev/null; then
  say "packages in $out are up to date"
  exit 0
fi

# Refresh the copy: files that went away go, the others are copied with their times
# (unchanged files keep theirs, so make rebuilds only what changed).
(cd "$stage" && find . -path ./obj-\* -prune -o -path ./debian -prune -o -type f -printf '%P\0') |
  sort -z | comm -z -23 - <(sort -z "$list") | (cd "$stage" && xargs -0 -r rm -f)
(cd "$src" && tar --null -T "$list" -cf -) | (cd "$stage" && tar -xf -)
rm -rf "$stage/debian"
(cd "$src" && tar -cf - debian) | (cd "$stage" && tar -xf -)

rm -f "$out"/*.deb "$out"/*.changes "$out"/*.buildinfo "$out/source.sha256"
# ccache: debhelper runs the build with a HOME of its own, so name the cache outright.
export KEYSVC_DEB_CMAKE_ARGS=
if command -v ccache >/dev/null; then
  KEYSVC_DEB_CMAKE_ARGS="-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache"
  export CCACHE_DIR=${CCACHE_DIR:-$(ccache -k cache_dir)}
  export CCACHE_CONFIGPATH=${CCACHE_CONFIGPATH:-$(ccache -p | sed -n 's/^(\(.*\)) max_size.*/\1/p' | head -1)}
  [[ -n $CCACHE_CONFIGPATH && -f $CCACHE_CONFIGPATH ]] || unset CCACHE_CONFIGPATH
fi
say "building in $stage (dpkg-buildpackage, $jobs jobs)"
log=$out/build.log
if ! (cd "$stage" && DEB_BUILD_OPTIONS="parallel=$jobs ${DEB_BUILD_OPTIONS-}" \
      dpkg-buildpackage -b -us -uc -nc >"$log" 2>&1); then
  tail -n 40 "$log" >&2
  die "dpkg-buildpackage failed (whole log: $log)"
fi
# -nc keeps the build folder; dh's own records of a finished build go, so the next run
# builds again.
rm -f "$stage/debian/debhelper-build-stamp"
rm -rf "$stage/debian/.debhelper"
echo "$sha" >"$out/source.sha256"

changes=$(ls "$out"/keysvc_*.changes)
lintian --info --display-info --pedantic "$changes" >"$out/lintian.txt" 2>&1 || true
say "packages:"
(cd "$out" && for deb in *.deb; do printf '  %-60s %6s KiB\n' "$deb" $(( $(stat -c %s "$deb") / 1024 )); done)
tags=$(grep -cE '^[EWIP]: ' "$out/lintian.txt" || true)
say "lintian: $tags tag(s), in $out/lintian.txt (explained in docs/PACKAGING.md)"
grep -E '^[EW]: ' "$out/lintian.txt" | sed 's/^/  /' || true
