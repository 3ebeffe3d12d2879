#!/usr/bin/env bash
# TLS termination on the agent (issue 13 item 2, docs/tls.md): `snstack-agent --tls-port P
# --tls-cert C --tls-key K` makes offloaded listeners on P speak TLS on the wire while the program
# (a preloaded redis-server, a preloaded python http.server, neither with TLS) reads and writes
# plain bytes. Checks: redis-cli --tls (PING, a 1 MB value intact), redis-benchmark --tls without
# errors, Python's ssl forced to TLS 1.2 and to TLS 1.3, openssl s_client, curl https downloading
# 10 MB intact from http.server, a plain-text client on the TLS port gets an alert and never
# reaches the program, a port not listed stays plain; start-up fails with one clear line for a
# key that does not match the certificate and for a missing file. Then redis behind termination
# on the agent's own TCP engine (af_packet over a veth pair; skipped without namespaces).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd openssl redis-server redis-cli redis-benchmark curl sha256sum timeout

d=$WORKDIR/pki
mkdir -p "$d"
mkcert() { # mkcert NAME: a self-signed P-256 certificate for localhost / 127.0.0.1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
        -keyout "$d/$1.key" -out "$d/$1.pem" 2>/dev/null || fail "openssl req failed"
}
mkcert a
mkcert b

# Start-up errors: one clear line, non-zero status, no hang.
for args in "--tls-cert $d/a.pem --tls-key $d/b.key" "--tls-cert $d/nope.pem --tls-key $d/a.key"; do
    rc=0
    # shellcheck disable=SC2086 # two flags with their values
    out=$(timeout 10 "$AGENT_BIN" --socket "$WORKDIR/bad.sock" --tls-port 1 $args 2>&1) || rc=$?
    [[ $rc != 0 && $rc != 124 ]] || fail "agent started with '$args' (status $rc)"
    grep -Eq 'does not match|nope.pem' <<<"$out" || fail "unclear start-up error for '$args': $out"
done
log "start-up: a mismatched key and a missing file each refused with one line"

tport=$(free_port)
pport=$(free_port)
hport=$(free_port)
start_agent --tls-port "$tport" --tls-port "$hport" --tls-cert "$d/a.pem" --tls-key "$d/a.key"
spawn_preload "$WORKDIR/redis.log" redis-server --port "$tport" --bind 127.0.0.1 --save "" \
    --appendonly no --daemonize no --dir "$WORKDIR" --logfile ""
srv=$SPAWNED_PID
spawn_preload "$WORKDIR/redis2.log" redis-server --port "$pport" --bind 127.0.0.1 --save "" \
    --appendonly no --daemonize no --dir "$WORKDIR" --logfile ""
srv2=$SPAWNED_PID
wait_port "$tport" "$srv"
wait_port "$pport" "$srv2"

tcli() { timeout -k 5 30 redis-cli --tls --cacert "$d/a.pem" -h 127.0.0.1 -p "$tport" "$@" </dev/null; }
[[ $(tcli PING 2>&1) == PONG ]] || fail "PING over TLS: $(tcli PING 2>&1)"
[[ $(timeout 10 redis-cli -h 127.0.0.1 -p "$pport" PING 2>&1) == PONG ]] || fail "the plain port stopped being plain"
SIZE=$((1024 * 1024))
head -c "$SIZE" /dev/urandom >"$WORKDIR/value"
r=$(timeout -k 5 30 redis-cli --tls --cacert "$d/a.pem" -h 127.0.0.1 -p "$tport" -x SET big <"$WORKDIR/value" 2>&1)
[[ $r == OK ]] || fail "SET of 1 MB over TLS: $r"
tcli --raw GET big >"$WORKDIR/got.raw" || fail "GET over TLS"
head -c "$SIZE" "$WORKDIR/got.raw" >"$WORKDIR/got"
assert_same_file "$WORKDIR/value" "$WORKDIR/got" "1 MB value over TLS"
log "redis-cli --tls: PING, a 1 MB value intact; the port not listed answers plain text"

rc=0
timeout -k 5 120 redis-benchmark --tls --cacert "$d/a.pem" -h 127.0.0.1 -p "$tport" -t set,get \
    -n 20000 -c 20 -q >"$WORKDIR/bench.out" 2>&1 </dev/null || rc=$?
tr '\r' '\n' <"$WORKDIR/bench.out" | grep -v '^ *$' | grep -v 'rps=' >"$WORKDIR/bench.txt" || true
sed 's/^/    /' "$WORKDIR/bench.txt"
[[ $rc == 0 ]] || fail "redis-benchmark --tls exited with $rc"
for t in SET GET; do
    grep -q "^$t: [0-9.]* requests per second" "$WORKDIR/bench.txt" || fail "redis-benchmark --tls: no $t line"
done
if grep -Eiv 'requests per second' "$WORKDIR/bench.txt" | grep -Ei 'error|reset|refused|timeout' >/dev/null; then
    fail "redis-benchmark --tls reported errors"
fi

"$PY" - "$tport" "$d/a.pem" <<'PY' || fail "Python ssl clients: status $?"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ctx.maximum_version = v
    with socket.create_connection(("127.0.0.1", port), 5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.settimeout(10)
            s.sendall(b"PING\r\n")
            got = s.recv(100)
            assert got == b"+PONG\r\n", (v, got)
            assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[v]
# A plain-text client on the TLS port: an alert (or a close), never the program's answer.
with socket.create_connection(("127.0.0.1", port), 5) as s:
    s.settimeout(10)
    s.sendall(b"PING\r\n")
    try:
        got = s.recv(100)
    except ConnectionResetError:
        got = b""
    assert b"PONG" not in got, got
    assert got == b"" or got[0] == 0x15, got
print("python ssl: TLS 1.2 and 1.3; a plain-text client got", "an alert" if got else "a close")
PY
hs=$(agent_stat tls_term_handshakes)
[[ $hs -ge 25 && $(agent_stat tls_term_sessions) -ge $hs ]] ||
    fail "tls_term_handshakes $hs, tls_term_sessions $(agent_stat tls_term_sessions)"
[[ $(agent_stat tls_term_failures) -ge 1 ]] || fail "the plain-text client is not counted in tls_term_failures"
log "counters: tls_term_handshakes $hs, tls_term_failures $(agent_stat tls_term_failures)"
for v in -tls1_2 -tls1_3; do
    out=$( (printf 'PING\r\n'; sleep 1) | timeout 10 openssl s_client "$v" -quiet -no_ign_eof -CAfile "$d/a.pem" \
        -connect "127.0.0.1:$tport" -servername localhost 2>/dev/null) || true
    [[ ${out//$'\r'/} == *PONG* ]] || fail "openssl s_client $v: '$out'"
done
log "openssl s_client -tls1_2 and -tls1_3: PONG"

mkdir -p "$WORKDIR/www"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$WORKDIR/www/f.bin"
spawn_preload "$WORKDIR/http.log" "$PY" -m http.server "$hport" --bind 127.0.0.1 --directory "$WORKDIR/www"
hsrv=$SPAWNED_PID
wait_port "$hport" "$hsrv"
curl -sS --fail --max-time 60 --cacert "$d/a.pem" -o "$WORKDIR/f.out" "https://localhost:$hport/f.bin" \
    --resolve "localhost:$hport:127.0.0.1" 2>"$WORKDIR/curl.err" || fail "curl https: $(cat "$WORKDIR/curl.err")"
assert_same_file "$WORKDIR/www/f.bin" "$WORKDIR/f.out" "10 MB over TLS"
log "curl https from a plain python http.server: 10 MB intact"

pid_alive "$srv" || fail "redis-server died"
stop_pid "$hsrv"
stop_pid "$srv2"
stop_pid "$srv"
stop_agent

# The same behind the agent's own TCP engine (af_packet on a veth pair; needs namespaces).
log "native engine (af_packet)"
# shellcheck source=tests/userstack.sh
source "$REPO/tests/userstack.sh"
userstack_probe
userstack_up
userstack_agent afpacket --iface "$VETH_A" --tls-port 6379 --tls-cert "$d/a.pem" --tls-key "$d/a.key"
spawn_preload "$WORKDIR/redis3.log" redis-server --port 6379 --bind "$AGENT_IP" --protected-mode no --save "" \
    --appendonly no --daemonize no --dir "$WORKDIR" --logfile ""
srv=$SPAWNED_PID
for ((i = 0; i < 100; i++)); do
    [[ $(in_b timeout 5 redis-cli --tls --insecure -h "$AGENT_IP" -p 6379 PING 2>/dev/null) == PONG ]] && break
    sleep 0.1
done
[[ $i -lt 100 ]] || fail "no PONG over TLS through the native engine"
r=$(in_b timeout -k 5 30 redis-cli --tls --insecure -h "$AGENT_IP" -p 6379 -x SET big <"$WORKDIR/value" 2>&1)
[[ $r == OK ]] || fail "SET of 1 MB over TLS (native engine): $r"
in_b timeout 30 redis-cli --tls --insecure -h "$AGENT_IP" -p 6379 --raw GET big </dev/null >"$WORKDIR/got2.raw" ||
    fail "GET over TLS (native engine)"
head -c "$SIZE" "$WORKDIR/got2.raw" >"$WORKDIR/got2"
assert_same_file "$WORKDIR/value" "$WORKDIR/got2" "1 MB value over TLS, native engine"
rc=0
in_b timeout -k 5 120 redis-benchmark --tls --insecure -h "$AGENT_IP" -p 6379 -t set,get -n 20000 -c 20 -q \
    >"$WORKDIR/bench2.out" 2>&1 </dev/null || rc=$?
[[ $rc == 0 ]] || fail "redis-benchmark --tls through the native engine exited with $rc"
tr '\r' '\n' <"$WORKDIR/bench2.out" | grep -q '^GET: [0-9.]* requests per second' ||
    fail "redis-benchmark --tls through the native engine: no GET line"
log "native engine: redis-cli --tls (1 MB intact) and redis-benchmark --tls"
stop_pid "$srv"
stop_agent
echo "PASS: $TEST_NAME"
