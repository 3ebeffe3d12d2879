#!/usr/bin/env bash
# Debian's nginx with its stock process model, preloaded, no snstack-specific setting: daemon on,
# master_process on, worker_processes 4, sendfile on, keepalive, accept_mutex off (default).
# Listeners are created by the master and inherited by every worker (EPOLLEXCLUSIVE in each).
# Pass: wrk -t2 -c100 -d10s on /hello and on a 100 KB file with zero socket errors; all four
# workers served requests; a 100 MB file downloads intact (by reference: h2n_file_bytes grows by its size); `nginx -s reload` under load gives new
# workers and loses about what kernel nginx does (one per idle keepalive connection closed by
# the old workers, plus reconnects racing the signal; no timeout, no refused connect), then serves
# with zero errors; `kill -USR2` binary upgrade (exec with
# inherited listeners) keeps serving after the old master quits; `nginx -s quit` under load stops
# everything and the agent's socket count returns to 0.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd wrk curl sha256sum
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ $NGINX == /* ]] || fail "nginx must be started by absolute path for USR2"

dir=$WORKDIR/ngx
port=$(free_port)
mkdir -p "$dir"/{tmp,files}
head -c 102400 /dev/urandom >"$dir/files/f100k"
head -c $((100 * 1024 * 1024)) /dev/urandom >"$dir/files/f100m"
cat >"$dir/nginx.conf" <<CONF
daemon on;
master_process on;
worker_processes 4;
error_log $dir/error.log notice;
pid $dir/nginx.pid;
events { worker_connections 1024; }
http {
    sendfile on;
    keepalive_timeout 65;
    log_format workerpid '\$pid';
    access_log $dir/access.log workerpid buffer=64k flush=1s;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        location = /hello { return 200 "hello\n"; }
        location /files/ { root $dir; }
    }
}
CONF
ngx() { preload "$NGINX" -p "$dir/" -c "$dir/nginx.conf" "$@"; }
master() { cat "$dir/nginx.pid" 2>/dev/null || true; }
workers() { pgrep -P "$1" 2>/dev/null | wc -l; }

start_agent
ngx || fail "nginx did not start: $(tail -5 "$dir/error.log")"
m=$(master)
register_pid "$m"
wait_port "$port" "$m"
lib_loaded "$m" || fail "libsnstack.so is not mapped into the nginx master"
for ((i = 0; i < 50; i++)); do [[ $(workers "$m") -eq 4 ]] && break; sleep 0.1; done
[[ $(workers "$m") -eq 4 ]] || fail "expected 4 workers, found $(workers "$m")"
h2n0=$(agent_stat h2n_bytes)
file0=$(agent_stat h2n_file_bytes)

log "wrk -t2 -c100 -d10s /hello"
wrk -t2 -c100 -d10s "http://127.0.0.1:$port/hello" >"$WORKDIR/wrk1.txt" 2>&1 || fail "wrk failed"
wrk_check "$WORKDIR/wrk1.txt"
log "wrk -t2 -c100 -d10s /files/f100k"
wrk -t2 -c100 -d10s "http://127.0.0.1:$port/files/f100k" >"$WORKDIR/wrk2.txt" 2>&1 || fail "wrk failed"
wrk_check "$WORKDIR/wrk2.txt"
sleep 1.5 # access log flush
served=$(sort -u "$dir/access.log" | wc -l)
[[ $served -eq 4 ]] || fail "requests were served by $served distinct workers, expected all 4"
log "all 4 workers served requests"

curl -sS --fail --max-time 120 -o "$WORKDIR/f100m" "http://127.0.0.1:$port/files/f100m" ||
    fail "100 MB download failed"
assert_same_file "$dir/files/f100m" "$WORKDIR/f100m" "100 MB download (sendfile on)"
h2n=$(agent_stat h2n_bytes)
[[ $h2n -gt $((h2n0 + 100 * 1024 * 1024)) ]] || fail "h2n_bytes grew by $((h2n - h2n0)): not offloaded?"
file=$(agent_stat h2n_file_bytes)
# The workers are forked children with channels of their own: their sendfile goes by reference too.
[[ $file -ge $((file0 + 100 * 1024 * 1024)) ]] ||
    fail "h2n_file_bytes grew by $((file - file0)): the workers' sendfile did not go by reference"

log "nginx -s reload under load"
wrk -t2 -c50 -d8s "http://127.0.0.1:$port/hello" >"$WORKDIR/wrk3.txt" 2>&1 &
wpid=$!
register_pid "$wpid"
sleep 2
old_workers=$(pgrep -P "$m" | sort)
ngx -s reload || fail "nginx -s reload failed"
wait "$wpid" || fail "wrk during reload failed"
errs=$(wrk_socket_errors "$WORKDIR/wrk3.txt")
[[ $(wrk_requests "$WORKDIR/wrk3.txt") -gt 0 ]] || fail "no requests during reload"
# Each of the 50 keepalive connections is closed once by the old workers (wrk counts a read
# error); a reconnect that an old worker accepted in the instant before it handled the reload
# signal is closed too (53 to 62 seen on a loaded machine). A connection lost rather than closed
# shows as a timeout, a refused reconnect as a connect error: neither may happen. Closes: at most
# one more per connection than the reload's own.
read -r e_conn e_read e_write e_tmo < <(awk '/Socket errors:/{ gsub(/,/, ""); print $4, $6, $8, $10; f = 1 }
    END { if (!f) print 0, 0, 0, 0 }' "$WORKDIR/wrk3.txt")
log "reload under load: socket errors connect $e_conn, read $e_read, write $e_write, timeout $e_tmo"
[[ $e_conn -eq 0 && $e_tmo -eq 0 ]] || fail "reload lost connections: $(grep 'Socket errors' "$WORKDIR/wrk3.txt")"
[[ $errs -le 100 ]] || fail "reload closed $errs connections (50 keepalive connections, each closed once plus at most one reconnect racing the signal)"
new_workers=$(pgrep -P "$m" | sort)
[[ -n $new_workers && $new_workers != "$old_workers" ]] || fail "reload did not start new workers"
wrk -t2 -c50 -d3s "http://127.0.0.1:$port/hello" >"$WORKDIR/wrk4.txt" 2>&1 || fail "wrk failed"
wrk_check "$WORKDIR/wrk4.txt"
log "reload: new workers serve; $errs keepalive connections closed by the old workers"

log "kill -USR2 (binary upgrade: exec with inherited listeners)"
kill -USR2 "$m"
for ((i = 0; i < 50; i++)); do
    [[ -f $dir/nginx.pid.oldbin && -s $dir/nginx.pid && $(master) != "$m" ]] && break
    sleep 0.1
done
m2=$(master)
[[ -n $m2 && $m2 != "$m" ]] || fail "USR2 did not start a new master: $(tail -3 "$dir/error.log")"
register_pid "$m2"
for ((i = 0; i < 50; i++)); do [[ $(workers "$m2") -eq 4 ]] && break; sleep 0.1; done
[[ $(workers "$m2") -eq 4 ]] || fail "new master has $(workers "$m2") workers"
kill -QUIT "$m"
wait_exit "$m" 10 || fail "old master did not quit"
wrk -t2 -c50 -d3s "http://127.0.0.1:$port/hello" >"$WORKDIR/wrk5.txt" 2>&1 || fail "wrk failed"
wrk_check "$WORKDIR/wrk5.txt"
log "upgraded master $m2 serves alone"

log "nginx -s quit under load"
wrk -t2 -c50 -d6s "http://127.0.0.1:$port/hello" >"$WORKDIR/wrk6.txt" 2>&1 &
wpid=$!
register_pid "$wpid"
sleep 2
ngx -s quit || fail "nginx -s quit failed"
wait_exit "$m2" 15 || fail "nginx master did not exit after -s quit"
wait "$wpid" || true
[[ $(wrk_requests "$WORKDIR/wrk6.txt") -gt 0 ]] || fail "no requests before quit"
sockets=$(wait_stat sockets -eq 0 10) || fail "agent still holds $sockets sockets after nginx quit"
errors=$(nginx_errors "$dir")
[[ -z $errors ]] || fail "nginx logged serious errors: $errors"
stop_agent
echo "PASS: $TEST_NAME"
