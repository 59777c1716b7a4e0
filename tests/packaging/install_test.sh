#!/usr/bin/env bash
# The install, as a user gets it: `cmake --install BUILD --prefix P` into a temporary
# prefix; the expected files are there (libraries, headers, programs, CMake package,
# pkg-config file, systemd units pointing at P/bin/keysvcctl, the SoftHSM configuration
# they name, the nginx and Apache modules if built); the headers are exactly the API
# (packaging/CMakeLists.txt, KEYSVC_API_HEADERS), each compiles alone against the
# installed tree, and none names an internal part; a C program built with pkg-config and a C++ program built with
# find_package(keysvc) run against a real SoftHSM token made by the installed
# keysvcctl (a private SOFTHSM2_CONF): the C one does a TLS 1.3 handshake with a keysvc
# ticket and its resumption, the C++ one derives and re-opens ticket keys in the token.
#
#   usage: install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
# The test folder may not exist yet when this test runs alone (ctest -R install_test).
tmp_root=${KEYSVC_TEST_TMPDIR:-${TMPDIR:-/tmp}}
mkdir -p "$tmp_root"
work=$(mktemp -d "$tmp_root/install-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
fail() { echo "install_test: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log" >&2; fail "cmake --install failed"; }
libdir=$(cd "$prefix" && ls -d lib/x86_64-linux-gnu 2>/dev/null || echo lib)

expected=(
  bin/keysvcctl bin/keysvc-tls-server
  "$libdir/libkeysvc.so" "$libdir/libkeysvc.so.0" "$libdir/libkeysvc_hsm.a" "$libdir/libkeysvc_core.a"
  "$libdir/libkeysvc_openssl.a" "$libdir/pkgconfig/keysvc.pc"
  "$libdir/cmake/keysvc/keysvcConfig.cmake" "$libdir/cmake/keysvc/keysvcConfigVersion.cmake"
  "$libdir/cmake/keysvc/keysvcTargets.cmake"
  lib/systemd/system/keysvc-rotator.service lib/systemd/system/keysvc-rotate.service
  lib/systemd/system/keysvc-rotate.timer etc/keysvc/softhsm2.conf share/doc/keysvc/DEPLOYMENT.md
)
if [ -e "$build/nginx/ngx_http_keysvc_module.so" ]; then
  expected+=(lib/nginx/modules/ngx_http_keysvc_module.so)
fi
if [ -e "$build/apache/mod_keysvc.so" ]; then
  expected+=(lib/apache2/modules/mod_keysvc.so)
fi
for f in "${expected[@]}"; do [ -e "$prefix/$f" ] || fail "missing $f"; done
grep -q "^ExecStart=$prefix/bin/keysvcctl " "$prefix/lib/systemd/system/keysvc-rotator.service" ||
  fail "keysvc-rotator.service does not run $prefix/bin/keysvcctl"
# libkeysvc.so exports the C API and nothing else.
exports=$(nm -D --defined-only "$prefix/$libdir/libkeysvc.so" | awk '$2 ~ /[TDB]/ {print $3}' | sed 's/@.*//' | sort -u)
[ "$(echo "$exports" | tr '\n' ' ')" = "keysvc_preload keysvc_preloaded_free keysvc_service_free keysvc_service_open keysvc_service_open_preloaded keysvc_service_stop keysvc_ssl_ctx_install " ] ||
  fail "libkeysvc.so exports: $(echo "$exports" | head -5 | tr '\n' ' ')..."

# The headers: the API and what it includes, nothing else (internals such as the token
# gateway, HSM guard, circuit breaker, issue pool or epoch keys stay private).
api_headers="keysvc/config.h keysvc/hsm/call_stats.h keysvc/hsm/error.h keysvc/hsm/pin_source.h
  keysvc/hsm/secret.h keysvc/hsm/secure_memory.h keysvc/hsm/shared_snapshot.h
  keysvc/hsm/token_uri.h keysvc/key_name.h keysvc/key_ring.h keysvc/metrics.h
  keysvc/openssl/keysvc_openssl.h keysvc/openssl/ticket_adapter.h
  keysvc/openssl/token_private_key.h keysvc/schedule.h keysvc/ticket_key_service.h
  keysvc/ticket_keys.h keysvc/usage.h"
installed_headers=$(cd "$prefix/include" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | tr '\n' ' ')
[ "$installed_headers" = "$(printf '%s\n' $api_headers | LC_ALL=C sort | tr '\n' ' ')" ] ||
  fail "installed headers are not the API: $installed_headers"
# Each compiles alone against the installed tree and the system's headers (C++ and, for
# the C API, C), so none includes a header that is not installed.
p11_cflags=$(pkg-config --cflags p11-kit-1)
for h in $api_headers; do
  case "$h" in
    *keysvc_openssl.h) printf '#include <%s>\nint main(void) { return 0; }\n' "$h" >"$work/alone.c"
                       cc -std=c11 -Wall -Werror -fsyntax-only -I"$prefix/include" "$work/alone.c" ;;
    *) printf '#include <%s>\n#include <%s>\n' "$h" "$h" >"$work/alone.cc"
       c++ -std=c++20 -Wall -Werror -fsyntax-only -I"$prefix/include" $p11_cflags "$work/alone.cc" ;;
  esac >"$work/alone.log" 2>&1 || { cat "$work/alone.log" >&2; fail "installed $h does not compile alone"; }
done
for internal in token_gateway hsm_guard circuit_breaker issue_pool ring_store maintenance epoch_keys key_deriver derivation; do
  ! grep -rq "keysvc/$internal.h" "$prefix/include" || fail "an installed header includes keysvc/$internal.h"
done
echo "headers: $(echo $api_headers | wc -w), each compiles alone"
echo "installed $(find "$prefix" -type f | wc -l) files, $(du -sk "$prefix" | cut -f1) KiB"

# A private SoftHSM token, set up with the installed keysvcctl.
export SOFTHSM2_CONF=$work/softhsm2.conf
mkdir -p "$work/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$work" >"$SOFTHSM2_CONF"
head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/pin"
head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/so-pin"
chmod 600 "$work/pin" "$work/so-pin"
"$prefix/bin/keysvcctl" token init --module /usr/lib/softhsm/libsofthsm2.so --label keysvc-install \
  --pin-source "file:$work/pin" --so-pin-source "file:$work/so-pin" >/dev/null
cat >"$work/keysvc.toml" <<TOML
[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token = "pkcs11:token=keysvc-install"
pin = "file:pin"
[tickets]
issue_pool = 0
[log]
level = "warn"
TOML

# C, with pkg-config.
export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
cflags=$(pkg-config --cflags keysvc)
libs=$(pkg-config --libs keysvc)
case "$libs" in *-lkeysvc*) ;; *) fail "pkg-config --libs keysvc: $libs" ;; esac
pkg-config --static --libs keysvc >/dev/null || fail "pkg-config --static --libs keysvc failed"
# A sanitizer build's package makes its consumers link the same runtime (packaging/CMakeLists.txt);
# an ordinary build's never asks for one.
sanitize=$(sed -n 's/^KEYSVC_SANITIZE:[A-Z]*=//p' "$build/CMakeCache.txt")
if [ -n "$sanitize" ]; then
  case " $libs " in *" -fsanitize=$sanitize "*) ;; *) fail "sanitizer build: pkg-config --libs keysvc lacks -fsanitize=$sanitize: $libs" ;; esac
else
  case "$libs" in *-fsanitize*) fail "ordinary build: pkg-config --libs keysvc asks for a sanitizer: $libs" ;; esac
fi
cc -std=c11 -Wall -Wextra -Werror -o "$work/consumer_c" "$src/tests/packaging/consumer_c/main.c" $cflags $libs \
  -Wl,-rpath,"$prefix/$libdir"
out=$("$work/consumer_c" "$work/keysvc.toml") || fail "consumer_c failed"
[ "$out" = "full=1 resumed=1" ] || fail "consumer_c printed: $out"
echo "C (pkg-config): $out"

# C++, with find_package(keysvc).
cmake -S "$src/tests/packaging/consumer_cxx" -B "$work/cxx-build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release >"$work/cxx-configure.log" 2>&1 || { cat "$work/cxx-configure.log" >&2; fail "find_package(keysvc) configure failed"; }
cmake --build "$work/cxx-build" >"$work/cxx-build.log" 2>&1 || { cat "$work/cxx-build.log" >&2; fail "C++ consumer build failed"; }
# ... compiled, not only linked, with the build's sanitizer (packaging/CMakeLists.txt says why).
flags="$work/cxx-build/CMakeFiles/consumer_cxx.dir/flags.make"
if [ -n "$sanitize" ]; then
  grep -q -- "-fsanitize=$sanitize" "$flags" || fail "sanitizer build: consumer_cxx not compiled with -fsanitize=$sanitize"
else
  ! grep -q -- "-fsanitize" "$flags" || fail "ordinary build: consumer_cxx compiled with a sanitizer"
fi
out=$("$work/cxx-build/consumer_cxx" "$work/keysvc.toml") || fail "consumer_cxx failed"
case "$out" in "derived=1 opened=1 generations="[1-9]*) ;; *) fail "consumer_cxx printed: $out" ;; esac
echo "C++ (find_package): $out"
