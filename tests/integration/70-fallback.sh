#!/usr/bin/env bash
# Agent unreachable. Default: a preloaded curl falls back to kernel sockets, fetches correctly and
# prints exactly one snstack line on stderr. SNSTACK_STRICT=1: socket(AF_INET, SOCK_STREAM) fails
# with ENETDOWN (one stderr line), while AF_UNIX sockets still work (they never go to the agent).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd curl sha256sum ss

nosock=$WORKDIR/no-agent.sock
mkdir -p "$WORKDIR/srv"
head -c 100000 /dev/urandom >"$WORKDIR/srv/file"
port=$(free_port)
spawn "$WORKDIR/http.log" "$PY" -m http.server "$port" --bind 127.0.0.1 --directory "$WORKDIR/srv"
srv=$SPAWNED_PID
wait_port "$port" "$srv"

env "LD_PRELOAD=$PRELOAD" "SNSTACK_AGENT=$nosock" curl -sS --fail --max-time 20 -o "$WORKDIR/out" \
    "http://127.0.0.1:$port/file" 2>"$WORKDIR/curl.err" </dev/null ||
    fail "curl with an unreachable agent failed: $(cat "$WORKDIR/curl.err")"
grep -q 'cannot be preloaded' "$WORKDIR/curl.err" && fail "ld.so did not load $PRELOAD: $(cat "$WORKDIR/curl.err")"
assert_same_file "$WORKDIR/srv/file" "$WORKDIR/out" "fallback download"
n=$(grep -ci snstack "$WORKDIR/curl.err" || true)
[[ $n == 1 ]] || fail "expected exactly one snstack warning line on stderr, got $n: $(cat "$WORKDIR/curl.err")"
log "fallback ok; warning: $(grep -i snstack "$WORKDIR/curl.err")"

script='
import errno, socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
try:
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
'
out=$(env "LD_PRELOAD=$PRELOAD" "SNSTACK_AGENT=$nosock" SNSTACK_STRICT=1 "$PY" -c "$script" \
    2>"$WORKDIR/strict.err" </dev/null) || fail "python failed: $(cat "$WORKDIR/strict.err")"
grep -q 'cannot be preloaded' "$WORKDIR/strict.err" && fail "ld.so did not load $PRELOAD"
mapfile -t res <<<"$out"
[[ ${res[0]:-} == ENETDOWN ]] ||
    fail "strict: socket(AF_INET, SOCK_STREAM) gave '${res[0]:-}', expected ENETDOWN; stderr: $(cat "$WORKDIR/strict.err")"
[[ ${res[1]:-} == OK ]] || fail "strict: socket(AF_UNIX) gave '${res[1]:-}', expected OK (AF_UNIX is not offloaded)"
n=$(grep -ci snstack "$WORKDIR/strict.err" || true)
[[ $n == 1 ]] || fail "strict: expected one snstack line on stderr, got $n: $(cat "$WORKDIR/strict.err")"
log "strict ok: ENETDOWN; $(grep -i snstack "$WORKDIR/strict.err")"

stop_pid "$srv"
echo "PASS: $TEST_NAME"
