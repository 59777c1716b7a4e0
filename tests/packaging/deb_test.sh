#!/usr/bin/env bash
# The Debian packages, as a Debian administrator uses them, on this machine:
#   - built (or reused) with tools/build-deb.sh, installed with `apt-get install ./*.deb`;
#   - the keysvc user, its token and audit folders; the units pass systemd-analyze verify;
#   - a SoftHSM token made as keysvc with /etc/keysvc/softhsm2.conf, the PIN in
#     /etc/keysvc/pin (root's, 0600), a rotation run the way the packaged unit runs it
#     (systemctl when systemd is PID 1, else its ExecStart as its User with its
#     Environment and LoadCredential= emulated);
#   - Debian's nginx with the module enabled the Debian way (the package's symlink in
#     /etc/nginx/modules-enabled, included as Debian's nginx.conf does) and workers as
#     keysvc: a TLS 1.2 ticket from `openssl s_client -sess_out` resumes with -sess_in;
#   - the Apache module enabled by the package (a2enmod) loads into Debian's apache2
#     configuration;
#   - `apt-get purge` leaves nothing behind, and the machine is as it was (the keysvc
#     user and the Apache modules the package enabled are removed if they were not there).
# Runs as root only (exit 77: skipped otherwise). One run at a time on the machine.
#
#   usage: deb_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
fail() { echo "deb_test: $*" >&2; exit 1; }
say() { echo "deb_test: $*"; }
[ "$(id -u)" -eq 0 ] || { echo "deb_test: needs root (apt-get install); skipped"; exit 77; }

exec 8>/run/lock/keysvc-deb-test.lock
flock -w 900 8 || fail "another package test holds /run/lock/keysvc-deb-test.lock"

packages=(keysvc libkeysvc0 libkeysvc-dev libnginx-mod-http-keysvc libapache2-mod-keysvc)
for p in "${packages[@]}"; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q installed; then
    fail "$p is installed already: this test installs and purges the keysvc packages itself"
  fi
done
for d in /etc/keysvc /var/lib/keysvc /var/log/keysvc; do [ ! -e "$d" ] || fail "$d exists before the test"; done
had_user=0; id -u keysvc >/dev/null 2>&1 && had_user=1
apache_mods_before=$(ls /etc/apache2/mods-enabled 2>/dev/null || true)

work=$(mktemp -d /tmp/keysvc-deb-test.XXXXXX)
chmod 0755 "$work"
nginx_pid=
cleanup() {
  set +e
  [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null && sleep 1 && kill -KILL "$nginx_pid" 2>/dev/null
  rm -f /etc/keysvc/keysvc.toml /etc/keysvc/pin
  rm -rf /var/lib/keysvc/tokens/* /var/log/keysvc/*
  dbgsym=$(dpkg-query -W -f='${Package}\n' '*keysvc*-dbgsym' 2>/dev/null)
  apt-get -o DPkg::Lock::Timeout=300 purge -y -qq "${packages[@]}" $dbgsym >"$work/purge.log" 2>&1
  # What the package made on this machine that Debian's purge leaves: the system user,
  # and the Apache modules a2enmod enabled for it (ssl).
  [ "$had_user" = 1 ] || { userdel keysvc; groupdel keysvc; } 2>/dev/null
  for m in $(ls /etc/apache2/mods-enabled 2>/dev/null); do
    printf '%s\n' "$apache_mods_before" | grep -qx "$m" || rm -f "/etc/apache2/mods-enabled/$m"
  done
  rm -rf "$work"
}
trap cleanup EXIT

# ---- build or reuse, install ----
"$src/tools/build-deb.sh" "$build" >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; fail "build-deb failed"; }
debs=()
for deb in "$build"/deb/*.deb; do debs+=("$deb"); done
[ ${#debs[@]} -eq 9 ] || fail "expected 5 packages and 4 dbgsym packages in $build/deb, found ${#debs[@]}"
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${debs[@]}" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; fail "apt-get install failed"; }
say "installed: $(dpkg-query -W -f='${Package} ' '*keysvc*')"

# ---- what the packages put in place ----
id -u keysvc >/dev/null || fail "no keysvc user"
[ "$(stat -c '%U %a' /var/lib/keysvc/tokens)" = "keysvc 700" ] || fail "/var/lib/keysvc/tokens: $(stat -c '%U %a' /var/lib/keysvc/tokens)"
[ "$(stat -c '%U' /var/log/keysvc)" = keysvc ] || fail "/var/log/keysvc is not keysvc's"
link=/etc/nginx/modules-enabled/50-mod-http-keysvc.conf
[ "$(readlink "$link")" = /usr/share/nginx/modules-available/mod-http-keysvc.conf ] || fail "$link: not the package's symlink"
grep -qx 'load_module modules/ngx_http_keysvc_module.so;' /usr/share/nginx/modules-available/mod-http-keysvc.conf ||
  fail "mod-http-keysvc.conf does not load the module"
[ -L /etc/apache2/mods-enabled/keysvc.load ] || fail "a2enmod keysvc did not run"
dpkg-query -W -f='${Depends}' libnginx-mod-http-keysvc | grep -q 'nginx-abi-' || fail "no nginx-abi dependency"
verify=$(systemd-analyze verify /lib/systemd/system/keysvc-rotate.service /lib/systemd/system/keysvc-rotate.timer \
  /lib/systemd/system/keysvc-rotator.service 2>&1 | grep keysvc || true)
[ -z "$verify" ] || fail "systemd-analyze verify: $verify"
for f in /usr/bin/keysvcctl /usr/lib/nginx/modules/ngx_http_keysvc_module.so /usr/lib/apache2/modules/mod_keysvc.so \
         /usr/lib/x86_64-linux-gnu/libkeysvc.so.0; do
  readelf -S "$f" | grep -q '\.debug_info' && fail "$f is not stripped"
  [ -n "$(find /usr/lib/debug/.build-id -name "$(readelf -n "$f" | sed -n 's/.*Build ID: \(..\)\(.*\)/\2/p').debug")" ] ||
    fail "no debug symbols for $f in the dbgsym packages"
done

# ---- the token, as keysvc; the PIN root's ----
umask 077
openssl rand -hex 16 >/etc/keysvc/pin
so_pin=$(openssl rand -hex 16)
KEYSVC_PIN=$(cat /etc/keysvc/pin) KEYSVC_SO_PIN=$so_pin SOFTHSM2_CONF=/etc/keysvc/softhsm2.conf \
  setpriv --reuid=keysvc --regid=keysvc --init-groups -- keysvcctl token init \
  --module /usr/lib/softhsm/libsofthsm2.so --label keysvc --pin-source env:KEYSVC_PIN --so-pin-source env:KEYSVC_SO_PIN \
  >"$work/token.log" 2>&1 || { cat "$work/token.log" >&2; fail "token init as keysvc failed"; }
umask 022
cat >/etc/keysvc/keysvc.toml <<TOML
[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token  = "pkcs11:token=keysvc"
pin    = "file:/etc/keysvc/pin"
[tickets]
create_if_empty = false
[rotation]
self_rotate = false
[audit]
path = "/var/log/keysvc/audit-{pid}.jsonl"
TOML

# ---- one rotation, the way keysvc-rotate.service runs it ----
unit=/lib/systemd/system/keysvc-rotate.service
if [ "$(cat /proc/1/comm)" = systemd ]; then
  systemctl start keysvc-rotate.service || { journalctl -u keysvc-rotate.service | tail >&2; fail "the unit failed"; }
  how="systemctl start keysvc-rotate.service"
else
  # No systemd here: its ExecStart, as its User/Group, with its Environment= and a
  # credentials folder holding LoadCredential='s file for %d, readable by that user only.
  value() { sed -n "s/^$1=//p" "$unit"; }
  user=$(value User); group=$(value Group)
  cred=$(value LoadCredential); cred_name=${cred%%:*}; cred_file=${cred#*:}
  creds=$work/credentials
  install -d -o "$user" -g "$group" -m 0500 "$creds"
  install -o "$user" -g "$group" -m 0400 "$cred_file" "$creds/$cred_name"
  exec_start=$(value ExecStart); exec_start=${exec_start//%d/$creds}
  mapfile -t environment < <(value Environment)
  # shellcheck disable=SC2086  # ExecStart is a plain word list
  env "${environment[@]}" setpriv --reuid="$user" --regid="$group" --init-groups -- $exec_start >"$work/rotate.log" 2>&1 ||
    { cat "$work/rotate.log" >&2; fail "ExecStart of $unit failed"; }
  how="ExecStart of $unit as $user (no systemd as PID 1)"
fi
status=$(SOFTHSM2_CONF=/etc/keysvc/softhsm2.conf keysvcctl --config /etc/keysvc/keysvc.toml status 2>&1) ||
  fail "keysvcctl status: $status"
grep -q "encrypting" <<<"$status" || fail "no generation encrypts after the rotation: $status"
[ -n "$(ls /var/log/keysvc)" ] || fail "the rotation wrote no audit log in /var/log/keysvc"
say "rotation: $how; $(grep -c . <<<"$status") status lines, audit log $(ls /var/log/keysvc | head -1)"

# ---- Debian's nginx with the module enabled the Debian way ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/server.key" -out "$work/server.crt" \
  -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
# As Debian's /etc/nginx/nginx.conf: the enabled modules first.
include /etc/nginx/modules-enabled/*.conf;
# SoftHSM: the workers run as the token's owner and find its configuration.
user keysvc;
env SOFTHSM2_CONF=/etc/keysvc/softhsm2.conf;
daemon off;
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log notice;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    keysvc_config /etc/keysvc/keysvc.toml;
    server {
        listen 127.0.0.1:$port ssl;
        ssl_certificate $work/server.crt;
        ssl_certificate_key $work/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        keysvc_tickets on;
        location / { return 200 "pid=\$pid reused=\$ssl_session_reused\n"; }
    }
}
CONF
# Debian's prefix (/usr/share/nginx), where load_module finds modules/.
nginx -c "$work/nginx/nginx.conf" &
nginx_pid=$!
for _ in $(seq 1 300); do
  [ "$(grep -c 'keysvc: opened' "$work/nginx/error.log" 2>/dev/null)" = 2 ] && break
  kill -0 "$nginx_pid" 2>/dev/null || { cat "$work/nginx/error.log" >&2; fail "nginx exited"; }
  sleep 0.1
done
[ "$(grep -c 'keysvc: opened' "$work/nginx/error.log")" = 2 ] || { cat "$work/nginx/error.log" >&2; fail "workers did not open the token"; }
if setpriv --reuid=keysvc --regid=keysvc --init-groups -- cat /etc/keysvc/pin >/dev/null 2>&1; then
  fail "the workers' user can read /etc/keysvc/pin"
fi
client() {
  printf 'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
    openssl s_client -connect "127.0.0.1:$port" -servername localhost -tls1_2 -CAfile "$work/server.crt" \
      -verify_return_error -ign_eof "$@" 2>&1
}
first=$(client -sess_out "$work/session.pem") || fail "full handshake failed: $first"
grep -q '^New, TLSv1.2' <<<"$first" || fail "first handshake: $first"
again=$(client -sess_in "$work/session.pem") || fail "resumption failed: $again"
grep -q '^Reused, TLSv1.2' <<<"$again" || fail "the ticket did not resume: $again"
grep -q 'reused=r' <<<"$again" || fail "nginx did not see a resumption: $again"
kill -QUIT "$nginx_pid"; wait "$nginx_pid" || fail "nginx exited with $?"
nginx_pid=
log=$(cat "$work/nginx/error.log")
! grep -E '\[(alert|crit|emerg)\]' <<<"$log" || fail "nginx logged the lines above"
[ "$(grep -c 'keysvc: server .* worker [0-9]* tickets: issued=' <<<"$log")" = 2 ] || fail "no counters at exit: $log"
grep -qF "$(cat /etc/keysvc/pin)" <<<"$log" && fail "the PIN is in nginx's log"
say "nginx (modules-enabled/50-mod-http-keysvc.conf, workers as keysvc): full handshake, then resumed with -sess_in"

# ---- Apache: the module a2enmod enabled loads into Debian's configuration ----
modules=$(apache2ctl -t -D DUMP_MODULES 2>&1) || fail "apache2ctl -t -D DUMP_MODULES: $modules"
grep -q 'keysvc_module (shared)' <<<"$modules" || fail "keysvc_module is not loaded: $modules"
say "apache2: keysvc_module loads (a2enmod keysvc by the package)"

# ---- purge: nothing left ----
trap - EXIT
cleanup_log=$(cleanup 2>&1) || true
left=$(dpkg-query -W -f='${Package} ${Status}\n' '*keysvc*' 2>/dev/null | grep -v 'not-installed' || true)
[ -z "$left" ] || fail "still known to dpkg after purge: $left"
for f in /etc/keysvc /var/lib/keysvc /var/log/keysvc /usr/share/nginx/modules-available/mod-http-keysvc.conf \
         /etc/nginx/modules-enabled/50-mod-http-keysvc.conf /etc/nginx/modules-enabled/50-mod-http-keysvc.conf.removed \
         /etc/apache2/mods-available/keysvc.load /etc/apache2/mods-enabled/keysvc.load /usr/share/doc/keysvc \
         /usr/lib/sysusers.d/keysvc.conf /lib/systemd/system/keysvc-rotate.service; do
  [ ! -e "$f" ] && [ ! -L "$f" ] || fail "left after purge: $f $cleanup_log"
done
if [ "$had_user" = 0 ] && id -u keysvc >/dev/null 2>&1; then fail "the keysvc user is still there"; fi
apache_mods_after=$(ls /etc/apache2/mods-enabled 2>/dev/null || true)
[ "$apache_mods_after" = "$apache_mods_before" ] ||
  fail "Apache's enabled modules changed (before/after): $(diff <(printf '%s\n' "$apache_mods_before") \
    <(printf '%s\n' "$apache_mods_after") | grep '^[<>]' | tr '\n' ' ') $cleanup_log"
say "purged: nothing left; machine as before"
