#!/usr/bin/env bash
# The payload API from C: the header (payload/include/snstack_payload.h) declares exactly the
# snp_* functions libsnstack_payload.so exports; the C echo example (payload/examples/c/echo.c)
# builds against it with -Wall -Wextra -Werror and serves line-framed echoes to clients that send
# lines in pieces, pipelined, several at once, one longer than max_message (echoed in parts); a
# line-length violation never reaches it.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd cc nm
LIB=$REPO/target/release/libsnstack_payload.so
HDR=$REPO/payload/include/snstack_payload.h
[[ -f $LIB ]] || fail "$LIB not built (run: cargo build --release --workspace)"

# Header and library agree on the set of functions.
grep -oE '\bsnp_[a-z_]+\(' "$HDR" | tr -d '(' | sort -u >"$WORKDIR/hdr.txt"
nm -D --defined-only "$LIB" | awk '$2 == "T" && $3 ~ /^snp_/ { print $3 }' | sort -u >"$WORKDIR/lib.txt"
diff "$WORKDIR/hdr.txt" "$WORKDIR/lib.txt" >"$WORKDIR/api.diff" ||
    fail "header and library disagree (< header only, > library only): $(cat "$WORKDIR/api.diff")"
log "header and library: the same $(wc -l <"$WORKDIR/lib.txt") snp_* functions"

cc -std=c11 -O2 -Wall -Wextra -Werror -I"$REPO/payload/include" -o "$WORKDIR/echo" \
    "$REPO/payload/examples/c/echo.c" -L"$(dirname "$LIB")" -lsnstack_payload \
    -Wl,-rpath,"$(dirname "$LIB")" 2>"$WORKDIR/cc.log" || fail "echo.c does not build: $(cat "$WORKDIR/cc.log")"
log "echo.c built with -Wall -Wextra -Werror"

start_agent
port=$(free_port)
spawn "$WORKDIR/echo.log" "$WORKDIR/echo" "$AGENT_SOCK" "127.0.0.1:$port"
echo_pid=$SPAWNED_PID
wait_port "$port" "$echo_pid"

"$PY" - "$port" <<'PY' || fail "echo clients: status $?"
import socket, sys, threading
port = int(sys.argv[1])

def conn():
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.settimeout(10)
    return s

def expect(s, want):
    got = b""
    while len(got) < len(want):
        b = s.recv(65536)
        if not b:
            break
        got += b
    if got != want:
        raise SystemExit(f"echo mismatch: sent {len(want)} bytes, got {len(got)}: {got[:80]!r}")

# Byte by byte, then pipelined lines in one write.
s = conn()
for b in b"hello\n":
    s.sendall(bytes([b]))
expect(s, b"hello\n")
lines = b"".join(b"line %d\n" % i for i in range(500))
s.sendall(lines)
expect(s, lines)
# A line longer than max_message (4096) comes back whole (echoed part by part).
long = b"x" * 20000 + b"\n"
s.sendall(long)
expect(s, long)
s.close()

# Eight clients at once.
errs = []
def client(i):
    try:
        c = conn()
        data = b"".join(b"client %d line %d\n" % (i, j) for j in range(200))
        c.sendall(data)
        expect(c, data)
        c.close()
    except BaseException as e:
        errs.append(e)
ts = [threading.Thread(target=client, args=(i,)) for i in range(8)]
for t in ts: t.start()
for t in ts: t.join()
if errs:
    raise SystemExit(f"concurrent clients: {errs[0]}")
print("echo: byte by byte, 500 pipelined lines, a 20 KB line, 8 concurrent clients")
PY
pid_alive "$echo_pid" || fail "the C echo service died: $(tail -5 "$WORKDIR/echo.log")"
[[ $(agent_stat payload_messages) -gt 2000 ]] || fail "payload_messages $(agent_stat payload_messages)"
[[ $(agent_stat payload_parts) -ge 4 ]] || fail "payload_parts $(agent_stat payload_parts): the long line came whole?"
log "agent: payload_messages $(agent_stat payload_messages), payload_parts $(agent_stat payload_parts)"
stop_pid "$echo_pid"
stop_agent
echo "PASS: $TEST_NAME"
