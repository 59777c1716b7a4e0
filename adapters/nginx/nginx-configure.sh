#!/usr/bin/env bash
# Runs nginx's ./configure from nginx-dev (Debian's way for out-of-tree modules, as in
# /usr/share/perl5/Debian/Debhelper/Buildsystem/nginx_mod.pm) with the flags the Debian
# nginx binary was built with (conf_flags), so the generated ngx_auto_config.h gives
# the module the binary signature `load_module` checks. Writes only into OBJS_DIR.
#
#   nginx-configure.sh NGINX_SRC_DIR MODULE_DIR OBJS_DIR
#
# configure writes its headers a piece at a time: it runs in OBJS_DIR.partial, which
# becomes OBJS_DIR only once configure has succeeded, so an interrupted or failed run
# never leaves half a header that a later build would take as up to date.
set -euo pipefail
src=$1 module=$2 objs=${3:?}
partial=$objs.partial
rm -rf "$partial"
mkdir -p "$partial"
log=$partial/configure.log
cd "$src"
# shellcheck disable=SC1091  # conf_flags defines the NGX_CONF_FLAGS array
. ./conf_flags
if ! ./configure --with-cc-opt=-fPIC --with-ld-opt=-fPIC "${NGX_CONF_FLAGS[@]}" \
     --add-dynamic-module="$module" --builddir="$partial" >"$log" 2>&1; then
  echo "nginx-configure: nginx's ./configure failed; the end of $log:" >&2
  tail -n 20 "$log" >&2
  exit 1
fi
rm -rf "$objs"
mv "$partial" "$objs"
