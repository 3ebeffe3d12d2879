#!/usr/bin/env bash
# kTLS RX served by the agent (issue 13 item 1, docs/tls.md), record by record, between two
# preloaded kTLS ends with made-up keys and a plain (not preloaded) relay between them:
#   sender: TCP_ULP "tls" + TLS_TX (the agent seals)  ->  relay  ->  receiver: TLS_RX (the agent
#   opens)
# For TLS 1.2 and 1.3 with AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305, on a clean connection:
# 100 KB sent before the receiver set its keys (in its RX stream already: the agent takes them
# back and opens them), data records, an alert sent with TLS_SET_RECORD_TYPE that the receiver
# gets alone through recvmsg with TLS_GET_RECORD_TYPE 21 (MSG_PEEK too), while read/recv and a
# recvmsg without room for the type fail with EIO; getsockopt(TLS_RX) with the live sequence
# number; the peer's FIN. On a second connection the relay flips one byte in the third record's
# ciphertext: the receiver reads the plaintext before it intact, then EBADMSG on every read and
# SO_ERROR EBADMSG; tls_decrypt_errors grows by exactly the number of tampered connections, and
# `snstack-agent stats --sockets` shows the sender's and the receiver's own counters and suites.
# Readers that did not set the keys get the record types too: a thread blocked in recv before
# TLS_RX, a child forked before it (EIO at the alert, then the alert with its type), and recvmmsg
# (each message a recvmsg with its TLS_GET_RECORD_TYPE); splice at an alert: EINVAL, as Linux.
# Then the same on each user-space engine over af_packet (veth pair; tests/userstack.sh; root
# only): snstack-tcp, smoltcp, and lwIP when the agent was built with it (kTLS lives in the agent,
# above the engine).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/userstack.sh
source "$REPO/tests/userstack.sh"
require_snstack

cat >"$WORKDIR/relay.py" <<'PY'
# A plain TCP relay (not preloaded) between a kTLS sender and a kTLS receiver: it forwards both
# directions; on connections whose index is odd it flips one byte inside the ciphertext of the
# Nth TLS record (from the sender), counting records by their headers.
import socket, sys, threading
host, listen_port, to_host, to_port, nth = (sys.argv[1], int(sys.argv[2]), sys.argv[3],
                                            int(sys.argv[4]), int(sys.argv[5]))
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, listen_port)); l.listen(16)
print("ready", flush=True)
def pipe(a, b, tamper):
    rec, need, hdr, off = 0, 0, b"", 0
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            if tamper:
                d = bytearray(d)
                i = 0
                while i < len(d):
                    if need == 0:
                        take = min(5 - len(hdr), len(d) - i)
                        hdr += bytes(d[i:i + take]); i += take
                        if len(hdr) == 5:
                            rec += 1; need = int.from_bytes(hdr[3:5], "big"); off = 0; hdr = b""
                        continue
                    take = min(need, len(d) - i)
                    if rec == nth and off <= need // 2 < off + take:
                        d[i + need // 2 - off] ^= 0x40   # mid-ciphertext
                    off += take; need -= take; i += take
                d = bytes(d)
            b.sendall(d)
    except OSError:
        pass
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass
n = 0
while True:
    c, _ = l.accept()
    s = socket.create_connection((to_host, to_port))
    threading.Thread(target=pipe, args=(c, s, n % 2 == 1), daemon=True).start()
    threading.Thread(target=pipe, args=(s, c, False), daemon=True).start()
    n += 1
PY
cat >"$WORKDIR/peers.py" <<'PY'
# Preloaded: a kTLS sender (TLS_TX, the agent seals) and a kTLS receiver (TLS_RX, the agent
# opens), connected through the plain relay. Per suite: a clean connection (records, a control
# record, bytes sent before the receiver's keys) and a tampered one (EBADMSG after the
# plaintext before the bad record).
import errno, os, socket, struct, subprocess, sys, time
SOL_TLS, TLS_TX, TLS_RX, TCP_ULP, TLS_SET_RECORD_TYPE, TLS_GET_RECORD_TYPE = 282, 1, 2, 31, 1, 2
relay_host, relay, recv_host, recv_port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((recv_host, recv_port)); l.listen(4)
CMSG = socket.CMSG_SPACE(1)

def err(f, *a):
    try:
        f(*a)
    except OSError as e:
        return e.errno
    return 0

def info(version, cipher, seq):
    if cipher == 51:
        key, salt, iv = bytes(range(16)), b"SALT", b"IVIVIVIV"
    elif cipher == 52:
        key, salt, iv = bytes(range(32)), b"salt", b"ivivivIV"
    else:  # 54: iv 12, key 32, no salt
        key, salt, iv = bytes(range(1, 33)), b"", b"twelve bytes"
    return struct.pack("<HH", version, cipher) + iv + key + salt + struct.pack(">Q", seq)

def pair(version, cipher):
    c = socket.create_connection((relay_host, relay))
    p, _ = l.accept()
    for s in (c, p):
        s.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
    c.setsockopt(SOL_TLS, TLS_TX, info(version, cipher, 5))
    return c, p

def rx_on(p, version, cipher):
    p.setsockopt(SOL_TLS, TLS_RX, info(version, cipher, 5))

def rmsg(p, n=65536, flags=0, room=CMSG):
    d, anc, fl, _ = p.recvmsg(n, room, flags)
    tys = [a[2][0] for a in anc if a[0] == SOL_TLS and a[1] == TLS_GET_RECORD_TYPE]
    return d, tys, fl

def read_exact(p, n):
    got = b""
    while len(got) < n:
        d, tys, _ = rmsg(p, n - len(got))
        assert d and tys == [23], (d[:20], tys)
        got += d
    return got

for version in (0x0303, 0x0304):
    for cipher in (51, 52, 54):
        tag = f"{version:#06x}/{cipher}"
        # 1. Clean: bytes sent before the receiver's keys arrive first, then a control record.
        c, p = pair(version, cipher)
        big = os.urandom(100000)
        c.sendall(b"early" + big)
        time.sleep(0.3)                       # in the receiver's RX stream before TLS_RX
        rx_on(p, version, cipher)
        if version == 0x0303:
            assert err(p.setsockopt, SOL_TLS, TLS_RX, info(version, cipher, 5)) == errno.EBUSY
        assert read_exact(p, 5 + len(big)) == b"early" + big, tag
        c.sendall(b"before")
        assert c.sendmsg([b"\x01\x00"], [(SOL_TLS, TLS_SET_RECORD_TYPE, b"\x15")]) == 2
        c.sendall(b"after")
        time.sleep(0.2)
        # A read stops before the control record: data and alert never merge.
        assert p.recv(100) == b"before", tag
        # Without room for the type: EIO, and the record stays.
        assert err(p.recv, 100) == errno.EIO, tag
        assert err(rmsg, p, 100, 0, 0) == errno.EIO, tag
        assert err(rmsg, p, 100, 0, socket.CMSG_LEN(1) - 1) == errno.EIO, tag
        # MSG_PEEK shows it and leaves it; recvmsg with room takes it, alone, with its type.
        assert rmsg(p, 100, socket.MSG_PEEK)[:2] == (b"\x01\x00", [21]), tag
        d, tys, fl = rmsg(p, 100)
        assert (d, tys) == (b"\x01\x00", [21]), (tag, d, tys)
        assert rmsg(p, 100)[:2] == (b"after", [23]), tag
        # getsockopt(TLS_RX): what was set, with the live sequence number.
        n = 40 if cipher == 51 else 56
        got = p.getsockopt(SOL_TLS, TLS_RX, n)
        want = info(version, cipher, 0)
        # (TLS 1.2 AES-GCM: the iv field holds the current explicit nonce, as Linux.)
        ivlen = 12 if cipher == 54 else 8
        assert got[:4] == want[:4] and got[4 + ivlen:n - 8] == want[4 + ivlen:n - 8], tag
        seq = struct.unpack(">Q", got[n - 8:])[0]
        assert seq >= 5 + 4, (tag, seq)
        c.close()
        assert p.recv(10) == b"", tag
        p.close()
        # 2. Tampered (the relay flips a byte in the 3rd record): the plaintext before it, then
        # EBADMSG for good.
        c, p = pair(version, cipher)
        rx_on(p, version, cipher)
        sent = b""
        for piece in (b"first", b"second", b"third", b"fourth"):
            c.sendall(piece)
            sent += piece
            time.sleep(0.1)
        got = b""
        while True:
            try:
                d = p.recv(100)
            except OSError as e:
                assert e.errno == errno.EBADMSG, (tag, e)
                break
            assert d, (tag, got)
            got += d
        assert len(got) >= 5 and sent.startswith(got) and got != sent, (tag, got)
        for _ in range(2):
            assert err(p.recv, 100) == errno.EBADMSG, tag
            assert err(rmsg, p) == errno.EBADMSG, tag
        assert p.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.EBADMSG, tag
        # The agent's per-socket counters (`stats --sockets`): the sender's TX, the receiver's
        # RX with its one failed record, each with its suite and addresses.
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        out = subprocess.run(os.environ["SNS_STATS"].split(), env=env, capture_output=True,
                             text=True, check=True).stdout
        suite = {0x0303: "TLS1.2/", 0x0304: "TLS1.3/"}[version] + \
            {51: "AES-128-GCM", 52: "AES-256-GCM", 54: "CHACHA20-POLY1305"}[cipher]
        mine = [dict(kv.split("=", 1) for kv in l.split()[1:]) for l in out.splitlines()
                if l.startswith(f"tls_socket pid={os.getpid()} ")]
        tx = [m for m in mine if m["tx"] == suite and m["peer"] == f"{relay_host}:{relay}"]
        rx = [m for m in mine if m["rx"] == suite and m["tx"] == "-" and m["local"] == f"{recv_host}:{recv_port}"]
        assert len(tx) == 1 and int(tx[0]["tls_tx_records"]) >= 4 and \
            int(tx[0]["tls_tx_bytes"]) == len(sent), (tag, out)
        assert len(rx) == 1 and rx[0]["tls_decrypt_errors"] == "1" and \
            int(rx[0]["tls_rx_records"]) >= 2 and int(rx[0]["tls_rx_bytes"]) == len(got), (tag, out)
        c.close(); p.close()
        print(tag, "ok", flush=True)

# 3. Readers that did not set the keys themselves read the record types too (the word the agent
# publishes, not the state of the process that set TLS_RX): a thread already blocked in recv when
# TLS_RX is set, a child forked before it, and recvmmsg.
import ctypes, threading
def spare():
    # The relay tampers with every other connection: this one takes that turn.
    c, p = pair(0x0303, 51)
    c.close(); p.close()
c, p = pair(0x0303, 51)
res = []
def blocked():
    try:
        res.append(p.recv(100))
    except OSError as e:
        res.append(e.errno)
t = threading.Thread(target=blocked); t.start()
time.sleep(0.3)                               # blocked in recv, before the keys
rx_on(p, 0x0303, 51)
assert c.sendmsg([b"\x01\x00"], [(SOL_TLS, TLS_SET_RECORD_TYPE, b"\x15")]) == 2
t.join(10)
assert res == [errno.EIO], ("blocked reader", res)
assert rmsg(p, 100)[:2] == (b"\x01\x00", [21])
c.close(); p.close()
spare()
c, p = pair(0x0304, 52)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        os.read(r, 1)                         # the parent set the keys and the records came
        got = p.recv(100)
        assert got == b"abc", ("child", got)
        e = err(p.recv, 100)
        assert e == errno.EIO, ("child", e)
        got = rmsg(p, 100)[:2]
        assert got == (b"\x01\x00", [21]), ("child", got)
        got = p.recv(100)
        assert got == b"def", ("child", got)
        os._exit(0)
    except BaseException as x:
        print("forked reader:", repr(x), flush=True)
        os._exit(1)
rx_on(p, 0x0304, 52)
c.sendall(b"abc")
assert c.sendmsg([b"\x01\x00"], [(SOL_TLS, TLS_SET_RECORD_TYPE, b"\x15")]) == 2
c.sendall(b"def")
time.sleep(0.3)
os.write(w, b"x")
assert os.waitpid(pid, 0)[1] == 0, "forked reader failed"
c.close(); p.close()
# recvmmsg: each message is a recvmsg (Linux's do_recvmmsg): data with its type, the alert alone
# with its own; a message without control room at the alert ends the call (EIO when first).
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]
libc = ctypes.CDLL(None, use_errno=True)
def mmsg(sock, n, room):
    bufs = [ctypes.create_string_buffer(100) for _ in range(n)]
    ctls = [ctypes.create_string_buffer(64) for _ in range(n)]
    iovs = [iovec(ctypes.cast(b, ctypes.c_void_p), 100) for b in bufs]
    v = (mmsghdr * n)()
    for i in range(n):
        v[i].hdr.iov = ctypes.pointer(iovs[i]); v[i].hdr.iovlen = 1
        v[i].hdr.control = ctypes.cast(ctls[i], ctypes.c_void_p) if room else None
        v[i].hdr.controllen = 64 if room else 0
    k = libc.recvmmsg(sock.fileno(), v, n, socket.MSG_DONTWAIT, None)
    if k < 0:
        return ctypes.get_errno()
    out = []
    for i in range(k):
        tys = [ctls[i].raw[16]] if v[i].hdr.controllen >= socket.CMSG_LEN(1) else []
        if tys:
            lvl, typ = struct.unpack("ii", ctls[i].raw[8:16])
            assert (lvl, typ) == (SOL_TLS, TLS_GET_RECORD_TYPE), (lvl, typ)
        out.append((bufs[i].raw[:v[i].len], tys))
    return out
spare()
c, p = pair(0x0303, 54)
rx_on(p, 0x0303, 54)
c.sendall(b"one")
assert c.sendmsg([b"\x01\x00"], [(SOL_TLS, TLS_SET_RECORD_TYPE, b"\x15")]) == 2
c.sendall(b"two")
time.sleep(0.2)
got = mmsg(p, 4, True)
assert got == [(b"one", [23])], ("recvmmsg before the alert", got)
time.sleep(0.2)                               # the agent writes the alert once "one" is read
assert mmsg(p, 4, False) == errno.EIO, "recvmmsg without room at the alert"
got = mmsg(p, 4, True)
assert got[:1] == [(b"\x01\x00", [21])], ("recvmmsg at the alert", got)
time.sleep(0.2)
got = got[1:] or mmsg(p, 4, True)
assert got == [(b"two", [23])], ("recvmmsg after the alert", got)
# splice: data goes into the pipe; at a control record EINVAL (tls_sw_splice_read), the record
# stays for recvmsg.
pr, pw = os.pipe()
c.sendall(b"three")
time.sleep(0.2)
assert os.splice(p.fileno(), pw, 100) == 5 and os.read(pr, 100) == b"three"
assert c.sendmsg([b"\x01\x00"], [(SOL_TLS, TLS_SET_RECORD_TYPE, b"\x15")]) == 2
c.sendall(b"four")
time.sleep(0.2)
assert err(os.splice, p.fileno(), pw, 100) == errno.EINVAL, "splice at a control record"
assert rmsg(p, 100)[:2] == (b"\x01\x00", [21])
time.sleep(0.2)
assert os.splice(p.fileno(), pw, 100) == 4 and os.read(pr, 100) == b"four"
c.close(); p.close()
print("readers that did not set the keys: ok", flush=True)
print("all ok")
PY

# The plain relay (RELAY_WRAP: e.g. into the peer namespace) and the preloaded peers.
run_peers() { # run_peers LABEL RELAY_HOST RECV_HOST RELAY_WRAP...
    local label=$1 rhost=$2 lhost=$3 rport lport e0 e1 r0 r1
    shift 3
    rport=$(free_port)
    lport=$(free_port)
    spawn "$WORKDIR/relay-$label.out" "$@" "$PY" "$WORKDIR/relay.py" "$rhost" "$rport" "$lhost" "$lport" 3
    local i
    for ((i = 0; i < 50; i++)); do
        grep -q ready "$WORKDIR/relay-$label.out" 2>/dev/null && break
        sleep 0.1
    done
    grep -q ready "$WORKDIR/relay-$label.out" || fail "$label: relay did not start: $(cat "$WORKDIR/relay-$label.out")"
    e0=$(agent_stat tls_decrypt_errors)
    r0=$(agent_stat tls_rx_records)
    SNS_STATS="$AGENT_BIN stats --sockets --socket $AGENT_SOCK" \
        preload timeout -k 5 120 "$PY" "$WORKDIR/peers.py" "$rhost" "$rport" "$lhost" "$lport" ||
        fail "$label: kTLS peers: status $?"
    e1=$(agent_stat tls_decrypt_errors)
    r1=$(agent_stat tls_rx_records)
    # Six tampered connections (one per suite), one failed record each.
    ((e1 - e0 == 6)) || fail "$label: tls_decrypt_errors grew by $((e1 - e0)), want 6"
    ((r1 - r0 >= 6 * 8)) || fail "$label: tls_rx_records grew by $((r1 - r0))"
    log "$label: 6 suites: records, an alert (cmsg 21, EIO without room), data sent before the keys; tampered record -> EBADMSG (tls_decrypt_errors +6, tls_rx_records +$((r1 - r0)))"
}

start_agent
run_peers kernel 127.0.0.1 127.0.0.1
stop_agent

if [[ $(id -u) == 0 ]] && ip netns add "snsprobe$$" 2>/dev/null; then
    ip netns del "snsprobe$$"
    USERSTACK_V6=0
    userstack_up
    engines=(native smoltcp)
    # lwIP only in an agent built with --features lwip.
    if ! "$AGENT_BIN" --socket "$WORKDIR/probe.sock" --backend afpacket --engine lwip --iface snsnoif0 \
        --ip 10.0.0.2/24 2>&1 | grep -qiE "built without lwip|invalid value 'lwip'"; then
        engines+=(lwip)
    fi
    for eng in "${engines[@]}"; do
        userstack_agent afpacket --engine "$eng" --iface "$VETH_A"
        run_peers "$eng" "$PEER_IP" "$AGENT_IP" ip netns exec "$NS_B"
        stop_agent
    done
else
    log "native engine part skipped: needs root and network namespaces"
fi
echo "PASS: $TEST_NAME"
