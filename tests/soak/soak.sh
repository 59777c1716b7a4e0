#!/usr/bin/env bash
# make soak MINUTES=N (and a short run in make test): keysvc under churn, end to end.
#
#   - keysvc-tls-server --threads 2 on a SoftHSM token reached through the
#     fault-injecting module (tests/faultmod/faultmod.h), self_rotate off;
#   - keysvcctl rotate on the same token every ROTATE_EVERY seconds (straight SoftHSM),
#     with generations that encrypt for a few seconds each;
#   - faults switched on and off in turn (CKR codes, latency, a hang bounded by
#     hsm.call_timeout, a token logout), FAULT_ON s on, FAULT_OFF s off;
#   - CLIENTS client loops of openssl s_client: a full handshake saving the session, then
#     a resumption with it, TLS 1.3 and 1.2 in turn.
# Prints handshakes, resumptions, rotations, faults injected, resumption failures of
# valid tickets, crashes, PIN lines in the server's log and RSS growth; exits 1 if a
# must-be-0 figure is not 0.
#
# A "valid ticket" is one received while no fault was on, presented while none was on,
# with the faults off for at least SETTLE s before it was issued (the circuit breaker's
# probe after a fault; the issue promises resumption within 1 s of the fault clearing).
# Such a resumption must succeed, every time.
#
# Usage: soak.sh BUILD_DIR SECONDS   (env: CLIENTS=2 ROTATE_EVERY=3 FAULT_ON=3 FAULT_OFF=5 SETTLE=1.5)
set -uo pipefail
build=$(cd "$1" && pwd) seconds=$2
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
clients=${CLIENTS:-2} rotate_every=${ROTATE_EVERY:-3} fault_on=${FAULT_ON:-3} fault_off=${FAULT_OFF:-5}
settle=${SETTLE:-1.5}
bin=$build/bin faultmod=$build/lib/libkeysvc-faultmod.so
for f in "$bin/keysvc-tls-server" "$bin/keysvcctl" "$faultmod"; do
  [[ -e $f ]] || { echo "soak: $f not built" >&2; exit 2; }
done
KEYSVC_SOURCE_DIR=$src . "$src/tools/sanitizers/env.sh"

tmp_root=${KEYSVC_TEST_TMPDIR:-$build/test-tmp}
mkdir -p "$tmp_root"
work=$(mktemp -d "$tmp_root/soak-XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# ---- token, configs
KEYSVC_BIN_DIR=$bin "$src/softhsm-config/dev-token" "$work/token" >/dev/null || { echo "soak: dev-token failed" >&2; exit 2; }
export SOFTHSM2_CONF=$work/token/softhsm2.conf
schedule='[tickets]
lifetime = "60s"
max_session_age = "1h"
issue_pool = 16
[rotation]
encrypt_period = "4s"
publish_lead = "3s"
decrypt_window = "60s"
clock_skew = "0s"
refresh_interval = "1s"
self_rotate = false'
printf '[hsm]\nmodule = "/usr/lib/softhsm/libsofthsm2.so"\ntoken = "pkcs11:token=keysvc"\npin = "file:%s"\n%s\n' \
  "$work/token/pin" "$schedule" >"$work/rotate.toml"
printf '[hsm]\nmodule = "%s"\ntoken = "pkcs11:token=keysvc"\npin = "file:%s"\n%s\n' \
  "$faultmod" "$work/token/pin" "$schedule" >"$work/server.toml"
"$bin/keysvcctl" --config "$work/rotate.toml" rotate >/dev/null || { echo "soak: first rotate failed" >&2; exit 2; }

# ---- server through the fault module
export KEYSVC_FAULTMOD_TARGET=/usr/lib/softhsm/libsofthsm2.so
export KEYSVC_FAULTMOD_CONTROL=$work/faults KEYSVC_FAULTMOD_STATS=$work/fault-stats
: >"$work/faults"
"$bin/keysvc-tls-server" --config "$work/server.toml" --listen 127.0.0.1:0 --threads 2 \
  --cert "$work/server.crt" --key "$work/server.key" --tickets keysvc 2>"$work/server.err" &
server=$!
pids+=("$server")
port=
for _ in $(seq 300); do
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/server.err" | head -1)
  [[ -n $port ]] && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
[[ -n $port ]] || { echo "soak: server did not start:" >&2; cat "$work/server.err" >&2; exit 2; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$server/status" 2>/dev/null || echo 0; }

now() { date +%s.%N; }
# The fault state, for the clients: "on" or "off SINCE".
echo "off $(now)" >"$work/fault-state"

# ---- rotator
(
  n=0 created=0
  end=$(( $(date +%s) + seconds ))
  while (( $(date +%s) < end )); do
    out=$("$bin/keysvcctl" --config "$work/rotate.toml" rotate 2>&1) && n=$((n + 1))
    created=$((created + $(grep -c 'created' <<<"$out")))
    echo "$n $created" >"$work/rotations"
    sleep "$rotate_every"
  done
) &
pids+=("$!")

# ---- fault switcher
faults=(
  "C_Sign CKR_DEVICE_ERROR"
  "C_Sign latency 50"
  "C_Sign hang"
  "C_SignInit CKR_SESSION_HANDLE_INVALID"
  "C_* CKR_TOKEN_NOT_PRESENT"
  "C_Sign logout"
  "C_FindObjects* CKR_DEVICE_ERROR"
  "C_Sign CKR_GENERAL_ERROR"
)
(
  i=0
  end=$(( $(date +%s) + seconds ))
  while (( $(date +%s) < end )); do
    sleep "$fault_off"
    (( $(date +%s) >= end )) && break
    echo on >"$work/fault-state"
    printf '%s\n' "${faults[i % ${#faults[@]}]}" >"$work/faults.tmp" && mv "$work/faults.tmp" "$work/faults"
    sleep "$fault_on"
    : >"$work/faults.tmp" && mv "$work/faults.tmp" "$work/faults"
    echo "off $(now)" >"$work/fault-state"
    i=$((i + 1))
  done
  : >"$work/faults.tmp" && mv "$work/faults.tmp" "$work/faults"
  echo "off $(now)" >"$work/fault-state"
) &
pids+=("$!")

# ---- clients: each line of clientN.log: "full OK|FAIL", "resume REUSED|NEW|FAIL VALID|-"
fault_free_since() {  # prints the time since which faults are off, or nothing if on
  local s; read -r s since <"$work/fault-state"; [[ $s == off ]] && echo "$since"
}
client_loop() {
  local id=$1 k=0 end=$(( $(date +%s) + seconds ))
  while (( $(date +%s) < end )); do
    local v=-tls1_3; (( k % 2 )) && v=-tls1_2
    k=$((k + 1))
    local sess=$work/sess-$id.pem
    rm -f "$sess"
    local since_before t0
    since_before=$(fault_free_since); t0=$(now)
    out=$(timeout 10 openssl s_client -connect "127.0.0.1:$port" $v -sess_out "$sess" -quiet -no_ign_eof \
      <<<$'GET / HTTP/1.0\r\n\r\n' 2>&1)
    if [[ $? -ne 0 ]]; then echo "full FAIL"; continue; fi
    echo "full OK"
    [[ -s $sess ]] && grep -q "TLS session ticket" <(openssl sess_id -in "$sess" -noout -text 2>/dev/null) || { echo "noticket"; continue; }
    out=$(timeout 10 openssl s_client -connect "127.0.0.1:$port" $v -sess_in "$sess" -no_ign_eof \
      <<<$'GET / HTTP/1.0\r\n\r\n' 2>&1)
    local rc=$? since_after
    since_after=$(fault_free_since)
    # Valid: faults off since before the full handshake (by SETTLE s) until now.
    local valid=-
    if [[ -n $since_before && $since_before == "$since_after" ]] &&
       awk -v s="$since_before" -v t="$t0" -v d="$settle" 'BEGIN { exit !(t - s >= d) }'; then valid=VALID; fi
    if [[ $rc -ne 0 ]]; then echo "resume FAIL $valid"
    elif grep -q '^Reused,' <<<"$out"; then echo "resume REUSED $valid"
    else echo "resume NEW $valid"; fi
  done
}
for c in $(seq "$clients"); do client_loop "$c" >"$work/client$c.log" & pids+=("$!"); done

sleep 3
rss_start=$(rss_kb)
sleep $(( seconds > 3 ? seconds - 3 : 0 ))
wait "${pids[@]:2}" 2>/dev/null   # rotator, switcher, clients (the server keeps running)
sleep 1
rss_end=$(rss_kb)

crashes=0
if ! kill -0 "$server" 2>/dev/null; then crashes=1; fi
kill -TERM "$server" 2>/dev/null
for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
wait "$server"; server_rc=$?
(( server_rc != 0 )) && crashes=1
grep -qE 'AddressSanitizer|UndefinedBehaviorSanitizer|ThreadSanitizer|LeakSanitizer|runtime error' "$work/server.err" && crashes=1
# Custody: the token's PIN never reaches the server's log (dev-token's PIN is 32 hex digits).
pin_leaks=$(grep -cF -- "$(cat "$work/token/pin")" "$work/server.err")

cat "$work"/client*.log >"$work/all.log"
count() { grep -c "$1" "$work/all.log"; }
full=$(count '^full OK') full_fail=$(count '^full FAIL') reused=$(count '^resume REUSED')
attempts=$(count '^resume ') valid=$(count ' VALID$') valid_fail=$(grep -E '^resume (NEW|FAIL) VALID$' -c "$work/all.log")
read -r rot_runs rot_created <"$work/rotations" 2>/dev/null || { rot_runs=0 rot_created=0; }
injected=$(awk '/^injected/ {print $2}' "$work/fault-stats" 2>/dev/null); injected=${injected:-0}

printf 'soak: %s s, %s clients, server --threads 2\n' "$seconds" "$clients"
printf '  handshakes            %d (full %d, resumption attempts %d, failed connections %d)\n' \
  $((full + attempts)) "$full" "$attempts" "$full_fail"
printf '  resumptions           %d\n' "$reused"
printf '  rotations             %d keysvcctl rotate runs, %d generations created\n' "$rot_runs" "$rot_created"
printf '  faults injected       %d\n' "$injected"
printf '  valid-ticket resumption failures  %d (of %d valid tickets)   must be 0\n' "$valid_fail" "$valid"
printf '  crashes               %d (server exit %d)   must be 0\n' "$crashes" "$server_rc"
printf '  PIN in server log     %d line(s)   must be 0\n' "$pin_leaks"
printf '  server RSS            %d kB -> %d kB (growth %d kB)\n' "$rss_start" "$rss_end" $((rss_end - rss_start))
grep -E 'keysvc tickets:' "$work/server.err" | tail -1 | sed 's/^/  /'
status=0
if (( valid_fail != 0 || crashes != 0 || pin_leaks != 0 )); then status=1; fi
if (( reused == 0 || injected == 0 )); then
  echo "soak: nothing was exercised (valid tickets $valid, resumptions $reused, faults $injected)" >&2
  status=1
fi
# A short soak on a loaded machine may see no ticket that qualifies; a long one must.
if (( valid == 0 )); then
  echo "soak: no valid ticket was presented (faults too frequent for the client rate?)" >&2
  (( seconds >= 120 )) && status=1
fi
if (( status != 0 )); then
  echo "--- server stderr (tail)" >&2; tail -30 "$work/server.err" >&2
  grep -E 'VALID$' "$work/all.log" | grep -v REUSED | head >&2
fi
exit $status
