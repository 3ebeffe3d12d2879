#!/usr/bin/env bash
# sendfile by reference (docs/channel.md, *Files by reference*): on the kernel backend the agent
# sends a preloaded program's file with sendfile(2) from its own reference to the open file, and
# the program's sendfile posts (file, offset, length, place) instead of copying the bytes.
# Pass, with nginx `sendfile on` (single process): files of 1, 4095, 4096, 4097 bytes, 100 KB,
# 5 MB and 64 MB download intact (sha256); the agent's h2n_file_bytes grew by at least the large
# files' size; a file replaced by rename is served with its new content, and one rewritten in
# place too; wrk with `Connection: close` on the 100 KB file has zero socket errors; with
# SNSTACK_FILE_REFS=0 the same downloads are intact and h2n_file_bytes does not move. Then a
# Python program under the preload sends an 8 MB file with blocking and non-blocking sendfile
# and closes and unlinks the file right after each call returns: the peer gets every byte.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd curl wrk sha256sum python3
[[ -x $NGINX_BIN ]] || fail "nginx not installed (run: ci/install-deps.sh)"

www=$WORKDIR/www
mkdir -p "$www/files"
for n in 1 4095 4096 4097 102400 $((5 << 20)) $((64 << 20)); do
    head -c "$n" /dev/urandom >"$www/files/f$n"
done

run_nginx() { # run_nginx DIR [VAR=VALUE...]: nginx with sendfile on; sets NPID and PORT
    local ngx=$1
    shift
    PORT=$(free_port)
    nginx_conf "$ngx" "$PORT" "$www"
    sed -i 's/sendfile off;/sendfile on;/' "$ngx/nginx.conf"
    mapfile -t cmd < <(nginx_args "$ngx")
    spawn_preload "$ngx.out" "$@" "${cmd[@]}"
    NPID=$SPAWNED_PID
    wait_port "$PORT" "$NPID"
    lib_loaded "$NPID" || fail "libsnstack.so is not mapped into nginx (pid $NPID)"
}

get_all() { # get_all TAG: every file, compared
    local n
    for n in 1 4095 4096 4097 102400 $((5 << 20)) $((64 << 20)); do
        curl -sS --fail --max-time 60 -o "$WORKDIR/got" "http://127.0.0.1:$PORT/files/f$n" \
            2>"$WORKDIR/curl.err" || fail "$1: GET f$n: $(cat "$WORKDIR/curl.err")"
        assert_same_file "$www/files/f$n" "$WORKDIR/got" "$1: f$n"
    done
}

start_agent
run_nginx "$WORKDIR/ngx1"
f0=$(agent_stat h2n_file_bytes)
get_all "by reference"
f1=$(agent_stat h2n_file_bytes)
big=$((102400 + (5 << 20) + (64 << 20)))
log "h2n_file_bytes +$((f1 - f0)) for $big bytes of files of 100 KB and more"
((f1 - f0 >= big)) || fail "h2n_file_bytes grew by $((f1 - f0)) < $big: sendfile did not go by reference"

# A file replaced by rename (a new inode) and one rewritten in place (same inode).
head -c 300000 /dev/urandom >"$WORKDIR/new"
cp "$WORKDIR/new" "$www/files/f102400.tmp"
mv "$www/files/f102400.tmp" "$www/files/f102400"
curl -sS --fail --max-time 20 -o "$WORKDIR/got" "http://127.0.0.1:$PORT/files/f102400" ||
    fail "GET after rename"
assert_same_file "$WORKDIR/new" "$WORKDIR/got" "renamed file"
head -c $((5 << 20)) /dev/urandom >"$WORKDIR/new5"
dd if="$WORKDIR/new5" of="$www/files/f$((5 << 20))" conv=notrunc status=none
curl -sS --fail --max-time 20 -o "$WORKDIR/got" "http://127.0.0.1:$PORT/files/f$((5 << 20))" ||
    fail "GET after rewrite"
assert_same_file "$WORKDIR/new5" "$WORKDIR/got" "file rewritten in place"

timeout 30 wrk -t1 -c16 -d4s --timeout 5s -H "Connection: close" \
    "http://127.0.0.1:$PORT/files/f102400" >"$WORKDIR/wrk.out" 2>&1 ||
    fail "wrk exited non-zero: $(cat "$WORKDIR/wrk.out")"
wrk_check "$WORKDIR/wrk.out"
pid_alive "$NPID" || fail "nginx died: $(tail -5 "$WORKDIR/ngx1/error.log")"
errs=$(nginx_errors "$WORKDIR/ngx1")
[[ -z $errs ]] || fail "nginx error log: $errs"
stop_pid "$NPID"

# The same with references turned off: copies, intact, and the counter stands still.
head -c 102400 /dev/urandom >"$www/files/f102400"
run_nginx "$WORKDIR/ngx2" SNSTACK_FILE_REFS=0
f2=$(agent_stat h2n_file_bytes)
get_all "copied"
f3=$(agent_stat h2n_file_bytes)
((f3 == f2)) || fail "SNSTACK_FILE_REFS=0 still sent $((f3 - f2)) bytes by reference"
stop_pid "$NPID"

# The file closed and unlinked as soon as sendfile returned: the agent's own reference keeps it.
cat >"$WORKDIR/sf.py" <<'PY'
import hashlib, os, socket, sys, threading, select
data = os.urandom(8 << 20)
def run(blocking):
    ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
    c = socket.create_connection(ls.getsockname()); a, _ = ls.accept()
    got = []
    t = threading.Thread(target=lambda: got.append(b"".join(iter(lambda: a.recv(1 << 20), b""))))
    t.start()
    c.setblocking(blocking)
    sent, calls = 0, 0
    while sent < len(data):
        path = "%s/sf-%d-%d" % (sys.argv[1], blocking, calls)
        with open(path, "wb") as f:
            f.write(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            n = os.sendfile(c.fileno(), fd, sent, len(data) - sent)
        except BlockingIOError:
            n = 0
        os.close(fd); os.unlink(path)
        sent += n; calls += 1
        if n == 0:
            select.select([], [c], [], 5)
    c.close(); t.join(30); ls.close(); a.close()
    ok = got and hashlib.sha256(got[0]).digest() == hashlib.sha256(data).digest()
    print("blocking" if blocking else "non-blocking", "calls", calls, "intact", bool(ok))
    return ok
sys.exit(0 if run(True) and run(False) else 1)
PY
f4=$(agent_stat h2n_file_bytes)
timeout 120 env "LD_PRELOAD=$PRELOAD" "SNSTACK_AGENT=$AGENT_SOCK" python3 "$WORKDIR/sf.py" "$WORKDIR" \
    >"$WORKDIR/sf.out" 2>&1 || fail "sendfile with the file closed at once: $(cat "$WORKDIR/sf.out")"
cat "$WORKDIR/sf.out"
f5=$(agent_stat h2n_file_bytes)
((f5 - f4 >= (8 << 20))) || fail "the Python sender's files did not go by reference (+$((f5 - f4)))"
stop_agent
echo "PASS: $TEST_NAME"
