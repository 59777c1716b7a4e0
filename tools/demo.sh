#!/usr/bin/env bash
# tools/demo.sh BUILD_DIR: keysvc end to end, with real TLS clients (what `make demo` runs).
#
#   1. a SoftHSM2 development token in BUILD_DIR/demo-token (softhsm-config/dev-token)
#   2. keysvc-tls-server on a free local port, session tickets from keysvc (the epoch
#      tier: docs/TIERS.md), its metrics on another free port
#   3. the key hierarchy: the generations' root keys in the token (`keysvcctl keys
#      list`), then for TLS 1.3 and TLS 1.2 a full handshake with `openssl s_client
#      -sess_out` and a resumption with `-sess_in`, showing the ticket's key name and
#      epoch and that key's custody attributes in the token; then the epoch keys the
#      token derived and the HSM calls the tickets cost (the metrics endpoint)
#   4. stops the server with SIGTERM and checks that it exits 0
#   5. the audit trail: the epoch_key_derived records, `keysvcctl audit verify` on the
#      server's and keysvcctl's files,
#      `audit report` as text and as an HTML page (BUILD_DIR/demo-token/audit-report.html;
#      with chromium installed, also a screenshot of it, audit-report.png)
# Exits non-zero if any resumption fails. The server is stopped on any exit.
set -euo pipefail

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
  echo "usage: $0 BUILD_DIR   (after building; see 'make demo')" >&2
  [[ $# -eq 1 ]] && exit 0 || exit 2
fi

SOURCE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD_DIR=$(cd "$1" && pwd -P)
BIN=$BUILD_DIR/bin
TOKEN_DIR=$BUILD_DIR/demo-token
CONFIG=$TOKEN_DIR/keysvc.toml

if [[ -t 1 ]]; then
  BOLD=$'\e[1m' GREEN=$'\e[32m' RED=$'\e[31m' DIM=$'\e[2m' RESET=$'\e[0m'
else
  BOLD='' GREEN='' RED='' DIM='' RESET=''
fi
step() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$RESET"; }
info() { printf '    %s\n' "$*"; }
ok() { printf '    %s%s%s\n' "$GREEN" "$*" "$RESET"; }
bad() { printf '    %s%s%s\n' "$RED" "$*" "$RESET"; }
die() {
  printf 'demo: %s\n' "$*" >&2
  exit 1
}

for tool in keysvcctl keysvc-tls-server; do
  [[ -x $BIN/$tool ]] || die "$BIN/$tool not found: build first (make build)"
done
for tool in openssl curl python3; do command -v "$tool" >/dev/null || die "$tool not found (make demo installs it: tools/install-deps.sh)"; done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-demo.XXXXXX")
SERVER_PID=
cleanup() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints the server log (timestamps stripped) and fails.
server_failed() {
  bad "$*"
  sed -E 's/^[0-9T:.-]+Z keysvc\[[0-9]+\] //' "$WORK/server.log" | sed 's/^/    server: /' >&2
  exit 1
}

# ---------------------------------------------------------------------------
step "Development token (SoftHSM2) in $TOKEN_DIR"
KEYSVC_BIN_DIR=$BIN "$SOURCE_DIR/softhsm-config/dev-token" "$TOKEN_DIR" | grep -v '^export ' | sed 's/^dev-token: /    /'
export SOFTHSM2_CONF=$TOKEN_DIR/softhsm2.conf
info "token: pkcs11:token=keysvc, user PIN in $TOKEN_DIR/pin (read from the file, never shown)"
# The audit trail (docs/AUDIT.md), next to the token: each demo run continues it (the
# token anchors each file's chain, so deleting a file the token still anchors would show
# as a truncation; delete the token folder to start afresh).
AUDIT_LOG=$TOKEN_DIR/audit.jsonl
CTL_LOG=$TOKEN_DIR/audit-keysvcctl.jsonl
REPORT_HTML=$TOKEN_DIR/audit-report.html
rm -f "$REPORT_HTML" "$TOKEN_DIR/audit-report.png"
grep -q '^\[audit\]' "$CONFIG" || printf '\n[audit]\npath = "audit.jsonl"\n' >>"$CONFIG"
# A usage record every second and a seal every two: a short run still shows its tickets
# over time in the report.
grep -q '^summary_interval' "$CONFIG" || sed -i '/^\[audit\]$/a summary_interval = "1s"\nseal_interval = "2s"' "$CONFIG"
info "audit logs: $AUDIT_LOG (the server), $CTL_LOG (keysvcctl)"

# ---------------------------------------------------------------------------
step "A new encrypt generation for this run (keysvcctl keys generate)"
NEW_GENERATION=$("$BIN/keysvcctl" --config "$CONFIG" keys generate)
info "generation $NEW_GENERATION: its root key generated in the token; the one before it (if"
info "any) now only decrypts. keysvcctl records both in its audit file."

# ---------------------------------------------------------------------------
step "Starting keysvc-tls-server (session tickets from keysvc)"
AUDIT_LINES_BEFORE=$( (cat "$AUDIT_LOG" 2>/dev/null || true) | wc -l)
: >"$WORK/server.log"  # exists before the loop below reads it (the server opens it in the background)
"$BIN/keysvc-tls-server" --config "$CONFIG" --listen 127.0.0.1:0 \
  --cert "$TOKEN_DIR/server-cert.pem" --key "$TOKEN_DIR/server-key.pem" \
  --tickets keysvc --threads 2 --metrics-listen 127.0.0.1:0 2>"$WORK/server.log" &
SERVER_PID=$!
PORT=
for _ in $(seq 150); do
  PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$WORK/server.log")
  [[ -n $PORT ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || server_failed "the server exited during start-up:"
  sleep 0.1
done
[[ -n $PORT ]] || server_failed "the server did not start listening within 15 s:"
METRICS_PORT=$(sed -n 's|^metrics on http://127\.0\.0\.1:\([0-9][0-9]*\)/metrics$|\1|p' "$WORK/server.log")
[[ -n $METRICS_PORT ]] || server_failed "the server did not say where it serves metrics:"
info "listening on 127.0.0.1:$PORT (pid $SERVER_PID), metrics on 127.0.0.1:$METRICS_PORT"
info "self-signed certificate: $TOKEN_DIR/server-cert.pem"

# ---------------------------------------------------------------------------
# One sample of the metrics endpoint: `metric NAME` prints its value (0 if absent).
scrape() { curl -s --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/metrics.txt" || true; }
metric() { awk -v n="$1" '$1 == n { v = $2 } END { printf "%d\n", v + 0 }' "$WORK/metrics.txt"; }
# The maintenance thread derives the current and the next epoch's keys after start-up.
for _ in $(seq 100); do
  scrape
  [[ $(metric keysvc_epoch_keys) -ge 2 ]] && break
  sleep 0.1
done
SIGNS_BEFORE=$(metric keysvc_service_hsm_sign_calls_total)
DERIVED_BEFORE=$(metric keysvc_service_epoch_keys_derived_total)

step "The key hierarchy, level 1: root keys in the token (keysvcctl keys list)"
"$BIN/keysvcctl" --config "$CONFIG" keys list >"$WORK/keys.txt"
sed 's/^/    /' "$WORK/keys.txt"
info "${DIM}Each generation of the epoch tier (TIER \"epoch 300s\") is one 32-byte HMAC key"
info "generated inside the token (sensitive, never extractable, sign only). From it the"
info "token derives one key per 5-minute epoch (level 2, held by the server in locked"
info "memory); each ticket's AES and HMAC keys come from its epoch's key and its IV by"
info "HKDF in the server (level 3): no HSM call per ticket (docs/DERIVATION.md).${RESET}"
info "epoch keys the server holds now: $(metric keysvc_epoch_keys) (the current and the next epoch)"

# The first 20 bytes of the ticket in a session file, as 40 lowercase hex: the key name
# (16 bytes) and the IV's first 4 bytes, the epoch in the epoch tier.
ticket_head() {
  openssl sess_id -in "$1" -text -noout | awk '
    /TLS session ticket:/ { on = 1; next }
    on && /^ *[0-9a-f]+ - / {
      line = $0; sub(/^ *[0-9a-f]+ - /, "", line)
      hex = substr(line, 1, 48); gsub(/-/, " ", hex)
      n = split(hex, b, " ")
      for (i = 1; i <= n; i++) if (b[i] ~ /^[0-9a-f][0-9a-f]$/) bytes = bytes b[i]
      next
    }
    on { on = 0 }
    END { print substr(bytes, 1, 40) }'
}
# "epoch E (HH:MM-HH:MM UTC)" for a 4-byte epoch field in hex, 5-minute epochs.
epoch_text() {
  local e=$((16#$1))
  printf 'epoch %d (%s-%s UTC)' "$e" "$(date -u -d "@$((e * 300))" +%H:%M)" "$(date -u -d "@$((e * 300 + 300))" +%H:%M)"
}
ticket_bytes() {
  openssl sess_id -in "$1" -text -noout | awk '
    /TLS session ticket:/ { on = 1; next }
    on && /^ *[0-9a-f]+ - / { line = $0; sub(/^ *[0-9a-f]+ - /, "", line)
      hex = substr(line, 1, 48); gsub(/-/, " ", hex); n += split(hex, b, " "); next }
    on { on = 0 }
    END { print n + 0 }'
}

# s_client VERSION_FLAG OUT_FILE [ARGS...]: one HTTP request, waits for the server to close.
s_client() {
  local flag=$1 out=$2
  shift 2
  printf 'GET / HTTP/1.0\r\n\r\n' |
    timeout 10 openssl s_client -connect "127.0.0.1:$PORT" "$flag" -ign_eof "$@" >"$out" 2>&1 || true
}

# The "New, ..." / "Reused, ..." line of an s_client transcript.
outcome() { grep -m1 -E '^(New|Reused), ' "$1" || echo "no handshake (see below)"; }

FULL=0
RESUMED=0
FAILED=0
RESULTS=()
for version in 1.3 1.2; do
  flag=-tls${version/./_}
  step "TLS $version: full handshake, then resumption with the ticket"
  sess=$WORK/session-$version.pem

  s_client "$flag" "$WORK/full-$version.txt" -sess_out "$sess"
  line=$(outcome "$WORK/full-$version.txt")
  info "full handshake:   $line"
  if [[ $line != New,* || ! -s $sess ]]; then
    bad "the full handshake failed:"
    sed 's/^/      /' "$WORK/full-$version.txt" | tail -15
    FAILED=$((FAILED + 1))
    RESULTS+=("TLS $version: full handshake failed")
    continue
  fi
  FULL=$((FULL + 1))

  head=$(ticket_head "$sess")
  name=${head:0:32}
  if [[ ! $head =~ ^[0-9a-f]{40}$ ]]; then
    bad "no session ticket was received"
    FAILED=$((FAILED + 1))
    RESULTS+=("TLS $version: no ticket")
    continue
  fi
  info "ticket received:  $(ticket_bytes "$sess") bytes, key name $name, $(epoch_text "${head:32:8}")"

  s_client "$flag" "$WORK/resumed-$version.txt" -sess_in "$sess"
  line=$(outcome "$WORK/resumed-$version.txt")
  info "resumption:       $line"
  if [[ $line == Reused,* ]]; then
    RESUMED=$((RESUMED + 1))
    RESULTS+=("TLS $version: resumed")
  else
    bad "the resumption failed (a full handshake instead):"
    sed 's/^/      /' "$WORK/resumed-$version.txt" | grep -E 'New,|Reused,|error|alert' | head -5 || true
    FAILED=$((FAILED + 1))
    RESULTS+=("TLS $version: NOT resumed")
  fi
  [[ $line == New,* ]] && FULL=$((FULL + 1))

  # The key that protects this ticket, as the token reports it.
  "$BIN/keysvcctl" --config "$CONFIG" keys list --json >"$WORK/keys.json"
  row=$(python3 - "$WORK/keys.json" "$name" <<'PY'
import json, sys
for g in json.load(open(sys.argv[1])):
    if g["name"] != sys.argv[2]:
        continue
    keys = [g.get("enc_key"), g.get("mac_key")]
    held = all(k and k["held_in_token"] for k in keys)
    sign_only = all(k and k["sign"] and not any(k[a] for a in
                    ("verify", "encrypt", "decrypt", "wrap", "unwrap", "derive")) for k in keys)
    custody = ("sensitive, never-extractable" if held else "NOT held in the token") + \
              (", sign only" if sign_only else "")
    print(g["state"], custody)
PY
)
  if [[ -z $row ]]; then
    bad "key $name: not in the token"
    FAILED=$((FAILED + 1))
  else
    state=${row%% *}
    custody=${row#* }
    info "key in the HSM:   $state; $custody (CKA_SENSITIVE, CKA_NEVER_EXTRACTABLE)"
    if [[ $custody != "sensitive, never-extractable"* ]]; then
      bad "the key is not held in the token"
      FAILED=$((FAILED + 1))
    fi
  fi
done

# ---------------------------------------------------------------------------
step "The key hierarchy, level 2: epoch keys derived in the token (metrics endpoint)"
scrape
TICKETS=$(($(metric keysvc_service_issued_total) + $(metric keysvc_service_opened_total)))
SIGNS=$(($(metric keysvc_service_hsm_sign_calls_total) - SIGNS_BEFORE))
DERIVED=$(($(metric keysvc_service_epoch_keys_derived_total) - DERIVED_BEFORE))
info "epoch keys derived in the token since start-up: $(metric keysvc_service_epoch_keys_derived_total) (one C_Sign each)"
info "epoch keys held by the server now:               $(metric keysvc_epoch_keys)"
info "tickets issued and opened:                       $TICKETS"
info "HSM sign calls for these tickets:                $SIGNS (epoch keys derived meanwhile: $DERIVED; a ticket costs none)"
if [[ $SIGNS -ne $DERIVED ]]; then
  bad "the tickets cost HSM calls of their own"
  FAILED=$((FAILED + 1))
fi

# ---------------------------------------------------------------------------
step "Stopping the server (SIGTERM)"
kill -TERM "$SERVER_PID"
set +e
wait "$SERVER_PID"
server_rc=$?
set -e
SERVER_PID=
for pattern in 'stopped after' 'keysvc tickets:'; do
  grep -m1 "$pattern" "$WORK/server.log" | sed -E 's/^[0-9T:.-]+Z keysvc\[[0-9]+\] info: //; s/^/    server: /' || true
done
if [[ $server_rc -eq 0 ]]; then
  ok "server exited with status 0"
else
  bad "server exited with status $server_rc"
  FAILED=$((FAILED + 1))
fi

# ---------------------------------------------------------------------------
step "Audit trail (keysvcctl audit verify, audit report)"
# Each epoch key the server derived is an audit record: generation name and epoch, no key.
python3 - "$AUDIT_LOG" "$AUDIT_LINES_BEFORE" <<'PY' | sed 's/^/    /' || FAILED=$((FAILED + 1))
import datetime, json, sys
rows = []
with open(sys.argv[1]) as f:
    for line in list(f)[int(sys.argv[2]):]:  # this run's records
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("event") == "epoch_key_derived":
            rows.append(r)
print(f"epoch_key_derived records of this run: {len(rows)}")
for r in rows:
    start = datetime.datetime.fromtimestamp(r["epoch"] * 300, datetime.timezone.utc)
    print(f"  generation {r['name']}, epoch {r['epoch']} ({start:%H:%M}-{start + datetime.timedelta(minutes=5):%H:%M} UTC)")
PY
for log in "$AUDIT_LOG" "$CTL_LOG"; do
  if "$BIN/keysvcctl" --config "$CONFIG" audit verify "$log" >"$WORK/verify.txt" 2>&1; then
    ok "$(basename "$log"): $(cat "$WORK/verify.txt")"
  else
    bad "audit verify failed: $(cat "$WORK/verify.txt")"
    FAILED=$((FAILED + 1))
  fi
done
"$BIN/keysvcctl" audit report "$AUDIT_LOG" "$CTL_LOG" | sed 's/^/    /' || FAILED=$((FAILED + 1))
# The same as one HTML page, seals verified in the token (docs/AUDIT.md); file names as
# given, so relative ones.
if (cd "$TOKEN_DIR" && "$BIN/keysvcctl" --config "$CONFIG" audit report "$(basename "$AUDIT_LOG")" \
  "$(basename "$CTL_LOG")" --html "$REPORT_HTML" >/dev/null); then
  info "HTML report: $REPORT_HTML"
else
  bad "audit report --html failed"
  FAILED=$((FAILED + 1))
fi
CHROMIUM=$(command -v chromium || true)
if [[ -n $CHROMIUM && -s $REPORT_HTML ]]; then
  # Headless, a throwaway profile, nothing fetched (the page needs nothing).
  mkdir -p "$WORK/chromium"
  sandbox=()
  [[ $(id -u) -eq 0 ]] && sandbox=(--no-sandbox)  # chromium refuses to run as root otherwise
  "$CHROMIUM" --headless "${sandbox[@]}" --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$WORK/chromium" --hide-scrollbars --window-size=1280,1500 \
    --screenshot="$TOKEN_DIR/audit-report.png" "file://$REPORT_HTML" >/dev/null 2>&1 || true
  [[ -s $TOKEN_DIR/audit-report.png ]] && info "screenshot:  $TOKEN_DIR/audit-report.png"
fi

# ---------------------------------------------------------------------------
step "Summary"
for r in "${RESULTS[@]}"; do info "$r"; done
summary="$FULL full handshake(s), $RESUMED resumed (of 2 attempted), server stopped with status $server_rc"
if [[ $FAILED -eq 0 && $RESUMED -eq 2 ]]; then
  ok "demo passed: $summary"
  echo
  info "Try it yourself:"
  info "  export SOFTHSM2_CONF=$TOKEN_DIR/softhsm2.conf"
  info "  $BIN/keysvcctl --config $CONFIG status"
  info "  $BIN/keysvcctl --config $CONFIG keys generate    # a new encrypt generation"
  exit 0
fi
bad "demo FAILED: $summary"
exit 1
