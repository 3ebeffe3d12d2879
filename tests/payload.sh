# shellcheck shell=bash
# shellcheck disable=SC2034 # variables here are used by the scripts that source this file
# The payload API's example servers against unmodified clients, sourced after tests/lib.sh by
# tests/integration/85-payload-kv.sh and 86-payload-http.sh. Each suite runs against a server
# attached to the running agent ($AGENT_SOCK) and listening on ADDR:PORT; clients run with the
# command prefix in $CLIENT (empty: this namespace; `ip netns exec NS`: the peer namespace of
# the user-space stack fixture, tests/userstack.sh).
KV_BIN=$REPO/target/release/snstack-kv
HTTP_BIN=$REPO/target/release/snstack-http
CLIENT=()

client() { "${CLIENT[@]}" "$@"; }

# payload_server LOG BIN ARGS...: starts an example server (no preload: it speaks the channel
# itself) and waits until ADDR:PORT answers from the client side. Sets SERVER_PID.
payload_server() {
    local out=$1 addr=$2 port=$3 i
    shift 3
    spawn "$out" "$@"
    SERVER_PID=$SPAWNED_PID
    for ((i = 0; i < 150; i++)); do
        if client "$PY" -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 0.5).close()' \
            "$addr" "$port" 2>/dev/null; then
            return 0
        fi
        pid_alive "$SERVER_PID" || fail "$(basename "$2") exited before listening: $(tail -5 "$out")"
        sleep 0.1
    done
    fail "nothing answers on $addr:$port after 15 s: $(tail -5 "$out")"
}

# malformed_closes ADDR PORT BYTES: sends BYTES (printf format) and expects the connection to
# end (reset or closed) without a reply.
malformed_closes() {
    client "$PY" - "$1" "$2" "$3" <<'PY' || fail "malformed input: $?"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)
s.settimeout(10)
s.sendall(sys.argv[3].encode().decode("unicode_escape").encode("latin-1"))
try:
    got = s.recv(100)
except ConnectionResetError:
    got = b""
if got:
    print("reply to malformed input:", got, file=sys.stderr)
    sys.exit(3)
PY
}

# payload_kv_suite ADDR PORT: redis-cli (incl. a 1 MB value), redis-benchmark -P 1 and -P 16,
# pipelining, a malformed request (reset and counted, others unaffected).
payload_kv_suite() {
    local addr=$1 port=$2 r t0 n0
    require_cmd redis-cli redis-benchmark sha256sum
    cli() { client timeout -k 5 30 redis-cli -h "$addr" -p "$port" "$@" </dev/null; }
    [[ $(cli PING 2>&1) == PONG ]] || fail "PING: $(cli PING 2>&1)"
    [[ $(cli SET k1 hello) == OK ]] || fail "SET k1"
    [[ $(cli GET k1) == hello ]] || fail "GET k1: $(cli GET k1)"
    [[ $(cli INCR n) == 1 && $(cli INCRBY n 41) == 42 ]] || fail "INCR/INCRBY"
    [[ $(cli MSET a 1 b 2) == OK ]] || fail "MSET"
    [[ $(cli MGET a b nope | tr '\n' ,) == "1,2,," ]] || fail "MGET: $(cli MGET a b nope | tr '\n' ,)"
    [[ $(cli EXISTS a b nope) == 2 ]] || fail "EXISTS"
    [[ $(cli SET e v EX 100) == OK && $(cli TTL e) =~ ^(99|100)$ ]] || fail "SET EX / TTL: $(cli TTL e)"
    [[ $(cli DEL a b nope) == 2 ]] || fail "DEL"
    r=$(cli FOO bar 2>&1)
    [[ $r == *"unknown command"* ]] || fail "unknown command answered '$r'"
    log "redis-cli: PING SET GET INCR INCRBY MSET MGET EXISTS SET EX TTL DEL, unknown command"

    local size=$((1024 * 1024))
    head -c "$size" /dev/urandom >"$WORKDIR/value"
    r=$(client timeout -k 5 30 redis-cli -h "$addr" -p "$port" -x SET bigkey <"$WORKDIR/value" 2>&1) ||
        fail "redis-cli -x SET of 1 MB: $r"
    [[ $r == OK ]] || fail "SET bigkey answered '$r'"
    cli --raw GET bigkey >"$WORKDIR/got.raw" 2>"$WORKDIR/get.err" || fail "GET bigkey: $(cat "$WORKDIR/get.err")"
    [[ $(stat -c %s "$WORKDIR/got.raw") == $((size + 1)) ]] ||
        fail "GET bigkey returned $(stat -c %s "$WORKDIR/got.raw") bytes, expected $((size + 1))"
    head -c "$size" "$WORKDIR/got.raw" >"$WORKDIR/got"
    assert_same_file "$WORKDIR/value" "$WORKDIR/got" "1 MB value"
    log "1 MB value round-tripped through redis-cli"

    # Pipelined requests in one write, inline and multibulk: replies in order.
    r=$(client "$PY" - "$addr" "$port" <<'PY'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)
s.settimeout(10)
s.sendall(b"PING\r\n*3\r\n$3\r\nSET\r\n$1\r\np\r\n$2\r\nv1\r\n*2\r\n$3\r\nGET\r\n$1\r\np\r\n*1\r\n$4\r\nQUIT\r\n")
got = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    got += b
print(repr(got))
PY
    )
    [[ $r == "b'+PONG\\r\\n+OK\\r\\n\$2\\r\\nv1\\r\\n+OK\\r\\n'" ]] || fail "pipelined replies: $r"
    log "pipelined PING SET GET QUIT: replies in order, closed after QUIT"

    for p in 1 16; do
        log "redis-benchmark -t set,get,incr,mset -n 50000 -c 50 -P $p"
        rc=0
        client timeout -k 5 180 redis-benchmark -h "$addr" -p "$port" -t set,get,incr,mset \
            -n 50000 -c 50 -P "$p" -q >"$WORKDIR/bench.out" 2>&1 </dev/null || rc=$?
        tr '\r' '\n' <"$WORKDIR/bench.out" | grep -v '^ *$' | grep -v 'rps=' >"$WORKDIR/bench.txt" || true
        sed 's/^/    /' "$WORKDIR/bench.txt"
        [[ $rc == 0 ]] || fail "redis-benchmark -P $p exited with status $rc"
        for t in SET GET INCR 'MSET (10 keys)'; do
            grep -q "^$t: [0-9.]* requests per second" "$WORKDIR/bench.txt" ||
                fail "redis-benchmark -P $p has no result line for $t"
        done
        if grep -Eiv 'requests per second' "$WORKDIR/bench.txt" |
            grep -Ei 'error|reset|refused|timeout|writing to socket|reading from socket' >"$WORKDIR/bench.err"; then
            fail "redis-benchmark reported errors: $(head -5 "$WORKDIR/bench.err")"
        fi
    done

    n0=$(agent_stat payload_malformed_bad_resp_length)
    malformed_closes "$addr" "$port" '*1\r\n$x\r\n'
    wait_stat payload_malformed_bad_resp_length -ge $((n0 + 1)) >/dev/null ||
        fail "payload_malformed_bad_resp_length did not count the malformed request"
    [[ $(cli PING 2>&1) == PONG ]] || fail "PING after a malformed request"
    log "malformed request: connection ended, counted (payload_malformed_bad_resp_length), others served"
    pid_alive "$SERVER_PID" || fail "snstack-kv died"
}

# payload_http_suite ADDR PORT ROOT: curl (hello, a file, HEAD, HTTP/1.0, 404), wrk keepalive,
# ab with and without keepalive, pipelined requests, a malformed request.
payload_http_suite() {
    local addr=$1 port=$2 root=$3 base out n0
    base=http://$addr:$port
    require_cmd curl wrk ab sha256sum
    out=$(client curl -sS --fail --max-time 10 "$base/hello" 2>&1) || fail "GET /hello: $out"
    [[ -n $out ]] || fail "GET /hello: empty body"
    client curl -sS --fail --max-time 30 -o "$WORKDIR/f.out" "$base/files/f.bin" 2>"$WORKDIR/curl.err" ||
        fail "GET /files/f.bin: $(cat "$WORKDIR/curl.err")"
    assert_same_file "$root/files/f.bin" "$WORKDIR/f.out" "static file"
    out=$(client curl -sS -I --max-time 10 "$base/files/f.bin" 2>&1) || fail "HEAD: $out"
    grep -qi "^content-length: $(stat -c %s "$root/files/f.bin")" <<<"${out//$'\r'/}" ||
        fail "HEAD has no correct Content-Length: $out"
    out=$(client curl -sS --http1.0 --max-time 10 "$base/hello" 2>&1) || fail "HTTP/1.0 GET: $out"
    out=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$base/nope" 2>&1)
    [[ $out == 404 ]] || fail "GET /nope answered $out"
    out=$(client curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$base/../etc/passwd" --path-as-is 2>&1)
    [[ $out == 400 || $out == 404 ]] || fail "path traversal answered $out"
    log "curl: /hello, a 3 MB file intact, HEAD, HTTP/1.0, 404, no path traversal"

    out=$(client "$PY" - "$addr" "$port" <<'PY'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)
s.settimeout(10)
req = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
# A request after the one that closes: the server must not answer it, and must not reset the
# connection (unread bytes) before the four replies are read: a lingering close.
s.sendall(req * 3 + b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + req)
got = b""
while True:
    try:
        b = s.recv(65536)
    except ConnectionResetError:
        print("reset after", got.count(b"HTTP/1.1 200"), "responses")
        sys.exit(0)
    if not b:
        break
    got += b
print(got.count(b"HTTP/1.1 200"))
PY
    )
    [[ $out == 4 ]] || fail "4 pipelined requests (and one after Connection: close) got: $out"
    log "4 pipelined requests and one more: 4 responses, a clean close after Connection: close (no reset)"

    client timeout 40 wrk -t2 -c50 -d5s --timeout 5s "$base/hello" >"$WORKDIR/wrk.out" 2>&1 ||
        fail "wrk exited non-zero: $(cat "$WORKDIR/wrk.out")"
    grep -E 'Requests/sec' "$WORKDIR/wrk.out" | sed 's/^/    /'
    wrk_check "$WORKDIR/wrk.out"
    for k in "" -k; do
        client timeout 60 ab $k -q -n 5000 -c 20 "$base/hello" >"$WORKDIR/ab.out" 2>&1 ||
            fail "ab $k: $(tail -5 "$WORKDIR/ab.out")"
        grep -q '^Failed requests: *0$' "$WORKDIR/ab.out" || fail "ab $k: $(grep -i failed "$WORKDIR/ab.out")"
        grep -q '^Complete requests: *5000$' "$WORKDIR/ab.out" || fail "ab $k: not 5000 complete"
        grep -q '^Non-2xx responses' "$WORKDIR/ab.out" && fail "ab $k: $(grep Non-2xx "$WORKDIR/ab.out")"
        log "ab $k -n 5000 -c 20: $(awk '/^Requests per second/{print $4}' "$WORKDIR/ab.out") req/s, 0 failed"
    done

    n0=$(agent_stat payload_malformed_te_and_content_length)
    malformed_closes "$addr" "$port" 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n'
    wait_stat payload_malformed_te_and_content_length -ge $((n0 + 1)) >/dev/null ||
        fail "payload_malformed_te_and_content_length did not count the smuggling attempt"
    client curl -sS --fail --max-time 10 -o /dev/null "$base/hello" || fail "GET after a malformed request"
    log "smuggling attempt (Transfer-Encoding + Content-Length): reset, counted, others served"
    pid_alive "$SERVER_PID" || fail "snstack-http died"
}
