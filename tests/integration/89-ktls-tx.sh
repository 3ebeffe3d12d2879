#!/usr/bin/env bash
# kTLS served by the agent (issue 13 item 1, docs/tls.md): a preloaded nginx with
# `ssl_conf_command Options KTLS;` hands its keys to the socket (TCP_ULP "tls", SOL_TLS TLS_TX and,
# for TLS 1.2, TLS_RX: OpenSSL 3.0 sets no TLS 1.3 RX key) and the agent seals its records,
# control records (NewSessionTicket, close_notify) included, and opens the requests. Checks: curl
# over TLS 1.2 with each cipher (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305) and over TLS 1.3
# with each suite, a 100 MB file with `sendfile on` and `sendfile off` and a small one, sha256
# intact each time; a 16 MB upload (PUT to nginx's dav module) per suite, stored intact; the
# agent's tls_tx_records/tls_tx_bytes grow (so nginx did use kTLS TX) and, over TLS 1.2,
# tls_rx_records/tls_rx_bytes (kTLS RX: the agent decrypted the requests and the upload);
# AES-CCM, which the agent refuses, falls back to user-space TLS with the download intact;
# openssl s_client and Python's ssl as clients (and a preloaded Python ssl client with kTLS on
# both directions); no decrypt error; nginx's error log clean. Then the socket options themselves
# from a preloaded Python program (errnos, getsockopt of the live sequence numbers, MSG_OOB, a
# record-type cmsg on a plain socket), with the records opened by python3-cryptography.
# Record by record (control records, tampering): 98-ktls-rx.sh.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd openssl curl sha256sum timeout
[[ -x $NGINX_BIN ]] || fail "nginx not installed (run: ci/install-deps.sh)"

d=$WORKDIR/pki
mkdir -p "$d"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
    -keyout "$d/k.key" -out "$d/k.pem" 2>/dev/null || fail "openssl req failed"

www=$WORKDIR/www
mkdir -p "$www/files"
head -c $((100 * 1024 * 1024)) /dev/urandom >"$www/files/100m.bin"
head -c 1000 /dev/urandom >"$www/files/small.bin"
head -c $((16 * 1024 * 1024)) /dev/urandom >"$WORKDIR/up.bin"
wantup=$(sha256sum <"$WORKDIR/up.bin" | cut -d' ' -f1)

ngx=$WORKDIR/nginx
mkdir -p "$ngx"/{client_body,proxy,fastcgi,uwsgi,scgi}
on=$(free_port)
off=$(free_port)
server() { # server PORT SENDFILE
    cat <<CONF
    server {
        listen 127.0.0.1:$1 ssl;
        ssl_certificate $d/k.pem;
        ssl_certificate_key $d/k.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-CCM;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_CCM_SHA256;
        ssl_conf_command Options KTLS;
        sendfile $2;
        location = /hello { return 200 "hello\n"; }
        location /files/ { root $www; }
        location /up/ {
            root $www;
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 64m;
            client_body_buffer_size 1m;
        }
    }
CONF
}
cat >"$ngx/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
error_log $ngx/error.log info;
pid $ngx/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_timeout 65;
    default_type application/octet-stream;
    client_body_temp_path $ngx/client_body;
    proxy_temp_path $ngx/proxy;
    fastcgi_temp_path $ngx/fastcgi;
    uwsgi_temp_path $ngx/uwsgi;
    scgi_temp_path $ngx/scgi;
$(server "$on" on)
$(server "$off" off)
}
CONF

AGENT_LOG_LEVEL=${AGENT_LOG_LEVEL:-info} start_agent
mapfile -t cmd < <(nginx_args "$ngx")
spawn_preload "$WORKDIR/nginx.out" "${cmd[@]}"
npid=$SPAWNED_PID
wait_port "$on" "$npid"
wait_port "$off" "$npid"
lib_loaded "$npid" || fail "libsnstack.so is not mapped into nginx (pid $npid)"

# OpenSSL 3.0 (Debian 12) hands kTLS the TLS 1.3 TX key only; a later one may set RX too.
TLS13_RX=0
"$PY" -c 'import cryptography' 2>/dev/null || fail "python3-cryptography not installed (run: ci/install-deps.sh)"
want100=$(sha256sum <"$www/files/100m.bin" | cut -d' ' -f1)
wantsmall=$(sha256sum <"$www/files/small.bin" | cut -d' ' -f1)
get() { # get PORT PATH CURL-ARGS...: sha256 of the body
    local port=$1 path=$2
    shift 2
    timeout -k 5 120 curl -sS --fail --cacert "$d/k.pem" --resolve "localhost:$port:127.0.0.1" "$@" \
        "https://localhost:$port$path" 2>"$WORKDIR/curl.err" | sha256sum | cut -d' ' -f1
}
check() { # check LABEL RX(1: nginx gets the RX key) CURL-ARGS...
    local label=$1 rx=$2 port r0 b0 r1 b1 h f0 f1 x0 x1 y0 y1
    shift 2
    for port in "$on" "$off"; do
        r0=$(agent_stat tls_tx_records)
        b0=$(agent_stat tls_tx_bytes)
        f0=$(agent_stat h2n_file_bytes)
        x0=$(agent_stat tls_rx_records)
        h=$(get "$port" /files/100m.bin "$@")
        [[ $h == "$want100" ]] || fail "$label, port $port: 100 MB body differs ($(cat "$WORKDIR/curl.err"))"
        h=$(get "$port" /files/small.bin "$@")
        [[ $h == "$wantsmall" ]] || fail "$label, port $port: small body differs ($(cat "$WORKDIR/curl.err"))"
        r1=$(agent_stat tls_tx_records)
        b1=$(agent_stat tls_tx_bytes)
        x1=$(agent_stat tls_rx_records)
        # 100 MB in records of at most 16 KiB: at least 6400 of them, all sealed by the agent.
        ((r1 - r0 >= 6400 && b1 - b0 >= 100 * 1024 * 1024)) ||
            fail "$label, port $port: the agent sealed $((r1 - r0)) records, $((b1 - b0)) bytes: nginx did not use kTLS"
        # The two GET requests: records the agent opened for nginx (kTLS RX), or none at all.
        if ((rx)); then
            ((x1 - x0 >= 2)) || fail "$label, port $port: the agent opened $((x1 - x0)) records: nginx did not use kTLS RX"
        else
            ((x1 == x0)) || fail "$label, port $port: the agent opened $((x1 - x0)) records (no RX key expected)"
        fi
        f1=$(agent_stat h2n_file_bytes)
        if [[ $port == "$on" ]]; then
            # sendfile on a kTLS socket: the file went by reference (but for pieces under 4 KiB, copied),
            # read and sealed by the agent.
            ((f1 - f0 >= 99 * 1024 * 1024)) || fail "$label: sendfile on, h2n_file_bytes grew by $((f1 - f0))"
        fi
    done
    # An upload: nginx reads 16 MB of request body through kTLS RX and stores it.
    rm -f "$www/up/up.bin"
    y0=$(agent_stat tls_rx_bytes)
    timeout -k 5 120 curl -sS --fail -o /dev/null --cacert "$d/k.pem" --resolve "localhost:$on:127.0.0.1" \
        "$@" -T "$WORKDIR/up.bin" "https://localhost:$on/up/up.bin" 2>"$WORKDIR/curl.err" ||
        fail "$label: upload failed ($(cat "$WORKDIR/curl.err"))"
    h=$(sha256sum <"$www/up/up.bin" | cut -d' ' -f1)
    [[ $h == "$wantup" ]] || fail "$label: the 16 MB upload arrived altered"
    y1=$(agent_stat tls_rx_bytes)
    if ((rx)); then
        ((y1 - y0 >= 16 * 1024 * 1024)) || fail "$label: upload: the agent opened $((y1 - y0)) bytes"
    fi
    log "$label: 100 MB and 1000 B intact with sendfile on and off, a 16 MB upload intact; agent sealed them$( ((rx)) && echo " and opened the requests and the upload")"
}
check "TLS 1.2 AES-128-GCM" 1 --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-GCM-SHA256
check "TLS 1.2 AES-256-GCM" 1 --tls-max 1.2 --ciphers ECDHE-ECDSA-AES256-GCM-SHA384
check "TLS 1.2 ChaCha20-Poly1305" 1 --tls-max 1.2 --ciphers ECDHE-ECDSA-CHACHA20-POLY1305
for s in TLS_AES_128_GCM_SHA256 TLS_AES_256_GCM_SHA384 TLS_CHACHA20_POLY1305_SHA256; do
    check "TLS 1.3 $s" "$TLS13_RX" --tlsv1.3 --tls13-ciphers "$s"
done

# A cipher the agent does not serve (AES-CCM: Linux has it, the agent refuses it with EINVAL):
# OpenSSL falls back to user-space TLS on that connection and the download is intact, with no
# record sealed by the agent.
fallback() { # fallback LABEL CURL-ARGS...
    local label=$1 r0 r1 h
    shift
    r0=$(agent_stat tls_tx_records)
    h=$(get "$on" /files/100m.bin "$@")
    [[ $h == "$want100" ]] || fail "$label: 100 MB body differs ($(cat "$WORKDIR/curl.err"))"
    r1=$(agent_stat tls_tx_records)
    ((r1 - r0 < 100)) || fail "$label: the agent sealed $((r1 - r0)) records for a cipher it refuses"
    log "$label: refused by the agent, OpenSSL fell back to user space, 100 MB intact"
}
fallback "TLS 1.2 AES-128-CCM" --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-CCM
fallback "TLS 1.3 TLS_AES_128_CCM_SHA256" --tlsv1.3 --tls13-ciphers TLS_AES_128_CCM_SHA256

for v in -tls1_2 -tls1_3; do
    out=$( (printf 'GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'; sleep 1) |
        timeout 10 openssl s_client "$v" -quiet -CAfile "$d/k.pem" -connect "127.0.0.1:$on" \
            -servername localhost 2>/dev/null) || true
    [[ ${out//$'\r'/} == *$'\n'hello* ]] || fail "openssl s_client $v: '$out'"
done
log "openssl s_client -tls1_2 and -tls1_3: /hello"

"$PY" - "$on" "$d/k.pem" "$wantsmall" <<'PY' || fail "Python ssl clients: status $?"
import hashlib, socket, ssl, sys
port, ca, want = int(sys.argv[1]), sys.argv[2], sys.argv[3]
for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ctx.maximum_version = v
    with socket.create_connection(("127.0.0.1", port), 5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.settimeout(10)
            # Two requests on one connection, then the server's close_notify ends the stream.
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n"
                      b"GET /files/small.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            got = b""
            while True:
                b = s.recv(65536)  # raises SSLEOFError if the peer closed without close_notify
                if not b:
                    break
                got += b
            assert got.count(b"HTTP/1.1 200 OK") == 2, got[:300]
            body = got.rsplit(b"\r\n\r\n", 1)[1]
            assert hashlib.sha256(body).hexdigest() == want, len(body)
            assert b"\r\n\r\nhello\n" in got
print("python ssl: TLS 1.2 and 1.3, keepalive, close_notify at the end")
PY
log "Python ssl: TLS 1.2 and 1.3, two requests on a connection, the server's close_notify"

# A preloaded Python ssl client with kTLS on (SSL_OP_ENABLE_KTLS, 1 << 3; Python 3.11 has no name
# for it): its own records sealed and the server's opened by the agent too, over TLS 1.2.
x0=$(agent_stat tls_rx_records)
preload "$PY" - "$on" "$d/k.pem" "$wantsmall" <<'PY' || fail "preloaded Python ssl client with kTLS: status $?"
import hashlib, socket, ssl, sys
port, ca, want = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
ctx.options |= 1 << 3
with socket.create_connection(("127.0.0.1", port), 5) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.settimeout(10)
        s.sendall(b"GET /files/small.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
        body = got.split(b"\r\n\r\n", 1)[1]
        assert hashlib.sha256(body).hexdigest() == want, got[:200]
PY
x1=$(agent_stat tls_rx_records)
# Both ends' requests and responses: nginx's request and the client's response records.
((x1 - x0 >= 2)) || fail "preloaded Python ssl client with kTLS: the agent opened $((x1 - x0)) records"
log "preloaded Python ssl client with kTLS: response intact, $((x1 - x0)) records opened by the agent"

[[ $(agent_stat tls_decrypt_errors) == 0 ]] || fail "tls_decrypt_errors $(agent_stat tls_decrypt_errors)"
pid_alive "$npid" || fail "nginx died"
errs=$(grep -E '\[(emerg|alert|crit|error)\]' "$ngx/error.log" || true)
[[ -z $errs ]] || fail "nginx error log: $errs"
log "counters: tls_tx_records $(agent_stat tls_tx_records), tls_tx_bytes $(agent_stat tls_tx_bytes), tls_rx_records $(agent_stat tls_rx_records), tls_rx_bytes $(agent_stat tls_rx_bytes), no decrypt error; nginx error log clean"
stop_pid "$npid"

# The options themselves, from a preloaded program: a connection to itself (both ends offloaded),
# made-up keys, the reading end opens the records with python3-cryptography.
preload "$PY" - <<'PY' || fail "socket options from a preloaded program: status $?"
import errno, socket, struct
SOL_TLS, TLS_TX, TLS_RX, TCP_ULP, TLS_SET_RECORD_TYPE = 282, 1, 2, 31, 1
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
c = socket.create_connection(l.getsockname()); p, _ = l.accept()
def err(f, *a):
    try:
        f(*a)
    except OSError as e:
        return e.errno
    return 0
# Before the ULP: SOL_TLS is unknown; a record-type cmsg on a plain socket is ignored (Linux's TCP).
assert err(c.setsockopt, SOL_TLS, TLS_TX, b"\0" * 40) == errno.ENOPROTOOPT
assert c.sendmsg([b"plain"], [(SOL_TLS, TLS_SET_RECORD_TYPE, b"\x15")]) == 5
assert p.recv(5) == b"plain"
assert err(c.setsockopt, socket.IPPROTO_TCP, TCP_ULP, b"nope") == errno.ENOENT
c.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
assert c.getsockopt(socket.IPPROTO_TCP, TCP_ULP, 16).rstrip(b"\0") == b"tls"
assert err(c.setsockopt, socket.IPPROTO_TCP, TCP_ULP, b"tls") == errno.EEXIST
assert err(c.getsockopt, SOL_TLS, TLS_TX, 40) == errno.EBUSY
# struct tls12_crypto_info_aes_gcm_128: version, cipher, iv[8], key[16], salt[4], rec_seq[8]
key, salt, iv = bytes(range(16)), b"SALT", b"IVIVIVIV"
info = struct.pack("<HH", 0x0304, 51) + iv + key + salt + struct.pack(">Q", 7)
c.setsockopt(SOL_TLS, TLS_RX, info)       # RX: served (p sends nothing back here)
assert struct.unpack(">Q", c.getsockopt(SOL_TLS, TLS_RX, 40)[32:40])[0] == 7
assert err(c.setsockopt, SOL_TLS, TLS_TX, info[:39]) == errno.EINVAL
c.setsockopt(SOL_TLS, TLS_TX, info)
assert err(c.setsockopt, SOL_TLS, TLS_TX, struct.pack("<HH", 0x0304, 99) + info[4:]) == errno.EINVAL
assert err(c.send, b"x", socket.MSG_OOB) == errno.EOPNOTSUPP
c.sendall(b"A" * 20000)                                          # 2 records: 16384 + 3616
assert c.sendmsg([b"\x01\x00"], [(SOL_TLS, TLS_SET_RECORD_TYPE, b"\x15")]) == 2   # an alert
assert err(c.sendmsg, [b"x"], [(SOL_TLS, 9, b"\x15")]) == errno.EINVAL
assert err(c.sendmsg, [b"x"], [(socket.SOL_SOCKET, 99, b"\0" * 4)]) == errno.EINVAL
assert err(c.sendmsg, [b"x"], [(SOL_TLS, TLS_SET_RECORD_TYPE, b"\x16")], socket.MSG_MORE) == errno.EINVAL
c.sendall(b"tail")
got = c.getsockopt(SOL_TLS, TLS_TX, 40)
assert got[:4] == info[:4] and got[4:12] == iv and got[12:28] == key and got[28:32] == salt, got
assert struct.unpack(">Q", got[32:40])[0] == 7 + 4, got[32:40]   # the live sequence number
assert err(c.getsockopt, SOL_TLS, TLS_TX, 41) == errno.EINVAL
c.close()
data = b""
while True:
    b = p.recv(65536)
    if not b:
        break
    data += b
recs = []
while data:
    assert data[0] == 23 and data[1:3] == b"\x03\x03", data[:5]   # TLS 1.3: all look like data
    n = struct.unpack(">H", data[3:5])[0]
    recs.append(data[:5 + n]); data = data[5 + n:]
assert [len(r) for r in recs] == [5 + 16384 + 17, 5 + 3616 + 17, 5 + 2 + 17, 5 + 4 + 17], [len(r) for r in recs]
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
out = []
for i, r in enumerate(recs):
    seq = (7 + i).to_bytes(12, "big")
    nonce = bytes(a ^ b for a, b in zip(salt + iv, seq))
    pt = AESGCM(key).decrypt(nonce, r[5:], r[:5])
    out.append((pt[-1], pt[:-1]))
assert out == [(23, b"A" * 16384), (23, b"A" * 3616), (21, b"\x01\x00"), (23, b"tail")], out
print("records opened: application data, an alert, application data; sequence numbers 7..10")
PY
log "socket options from a preloaded program: errnos as Linux, records opened by the peer"
stop_agent
echo "PASS: $TEST_NAME"
