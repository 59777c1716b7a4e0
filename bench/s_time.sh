#!/bin/sh
# A real client's view of resumption: `openssl s_time -reuse` against keysvc-tls-server
# with keysvc's tickets (its defaults: the epoch tier) and with OpenSSL's own
# (`--tickets openssl`), TLS 1.3 and 1.2, each connection a GET of / (so the client
# reads TLS 1.3 tickets), interleaved, on a SoftHSM token made for the
# run (removed at exit). Prints connections per second, the ratio, and keysvc's C_Sign
# calls per connection (the server's /metrics). docs/PERFORMANCE.md.
#
#   bench/s_time.sh [BUILD_DIR [SECONDS [ROUNDS]]]     (defaults: build 10 2)
set -eu
BUILD=$(cd "${1:-build}" && pwd)
SECONDS_PER_RUN=${2:-10}
ROUNDS=${3:-2}
SOFTHSM=/usr/lib/softhsm/libsofthsm2.so
for tool in openssl curl; do
  command -v "$tool" >/dev/null || { echo "s_time.sh: $tool is missing (tools/install-deps.sh)" >&2; exit 1; }
done
DIR=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-s_time-XXXXXX")
PIDS=""
cleanup() {
  for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

mkdir "$DIR/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$DIR" >"$DIR/softhsm2.conf"
export SOFTHSM2_CONF="$DIR/softhsm2.conf"
umask 077
openssl rand -hex 12 >"$DIR/pin"
openssl rand -hex 12 >"$DIR/so-pin"
"$BUILD/bin/keysvcctl" token init --module "$SOFTHSM" --label keysvc-s-time \
  --pin-source "file:$DIR/pin" --so-pin-source "file:$DIR/so-pin" >/dev/null
printf '[hsm]\nmodule = "%s"\ntoken = "pkcs11:token=keysvc-s-time"\npin = "file:%s/pin"\n' "$SOFTHSM" "$DIR" \
  >"$DIR/keysvc.toml"

# start NAME ARGS...: starts keysvc-tls-server, sets PORT_<NAME> and METRICS_<NAME>.
start() {
  name=$1
  shift
  metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  metrics=""
  [ "$name" = keysvc ] && metrics="--metrics-listen 127.0.0.1:$metrics_port"
  # shellcheck disable=SC2086
  "$BUILD/bin/keysvc-tls-server" --listen 127.0.0.1:0 --cert "$DIR/server.crt" --key "$DIR/server.key" \
    --threads 2 --log-level warn $metrics "$@" >"$DIR/$name.log" 2>&1 &
  PIDS="$PIDS $!"
  for _ in $(seq 200); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$DIR/$name.log" | head -1)
    [ -n "$port" ] && break
    sleep 0.05
  done
  [ -n "$port" ] || { echo "s_time.sh: $name server did not start:" >&2; cat "$DIR/$name.log" >&2; exit 1; }
  eval "PORT_$name=$port METRICS_$name=$metrics_port"
}
start openssl --tickets openssl
start keysvc --tickets keysvc --config "$DIR/keysvc.toml"

signs() {  # C_Sign calls the keysvc server made so far
  curl -s "http://127.0.0.1:$METRICS_keysvc/metrics" |
    sed -n 's/^keysvc_hsm_call_seconds_count{function="C_Sign"} \([0-9]*\).*/\1/p'
}
rate() {  # rate PORT VERSION: "connections seconds reused" (wall time around s_time)
  t0=$(date +%s.%N)
  openssl s_time -connect "127.0.0.1:$1" -www / -reuse -time "$SECONDS_PER_RUN" "$2" >"$DIR/s_time.out" 2>&1
  t1=$(date +%s.%N)
  # s_time prints one character per connection: 'r' for a resumed session, '*' for a new one.
  reused=$(grep -E '^[r*]+$' "$DIR/s_time.out" | tr -cd 'r' | wc -c)
  conns=$(sed -n 's/^\([0-9]*\) connections in [0-9]* real seconds.*/\1/p' "$DIR/s_time.out" | tail -1)
  echo "$conns $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') $reused"
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-8s %-6s %12s %12s %7s %9s %18s\n' version round openssl/s keysvc/s ratio resumed "keysvc C_Sign/conn"
for version in -tls1_3 -tls1_2; do
  for round in $(seq "$ROUNDS"); do
    set -- $(rate "$PORT_openssl" "$version")
    o_conn=$1 o_time=$2
    s0=$(signs)
    set -- $(rate "$PORT_keysvc" "$version")
    k_conn=$1 k_time=$2 k_reused=$3
    s1=$(signs)
    awk -v v="$version" -v r="$round" -v oc="$o_conn" -v ot="$o_time" -v kc="$k_conn" -v kt="$k_time" \
      -v kr="$k_reused" -v s="$((s1 - s0))" 'BEGIN { o = oc / ot; k = kc / kt;
        printf "%-8s %-6s %12.1f %12.1f %7.3f %8.1f%% %18.4f\n", v, r, o, k, k / o, 100 * kr / kc, s / kc }'
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
