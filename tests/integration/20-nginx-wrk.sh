#!/usr/bin/env bash
# Preloaded single-process nginx; plain curl and wrk as clients. Pass: /hello and a 1 MB static file
# are correct, wrk -t1 -c16 -d5s has requests, no socket errors and no non-2xx, nginx logged no
# emerg/alert/crit, and the agent carried the traffic (h2n_bytes >= 1 MB, n2h_bytes, h2n_ops grew).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd curl wrk sha256sum ss
[[ -x $NGINX_BIN ]] || fail "nginx not installed (run: ci/install-deps.sh)"

ngx=$WORKDIR/nginx
port=$(free_port)
nginx_conf "$ngx" "$port" "$WORKDIR/www"
mkdir -p "$WORKDIR/www/files"
head -c $((1024 * 1024)) /dev/urandom >"$WORKDIR/www/files/1m.bin"

start_agent
mapfile -t cmd < <(nginx_args "$ngx")
spawn_preload "$WORKDIR/nginx.out" "${cmd[@]}"
npid=$SPAWNED_PID
wait_port "$port" "$npid"
lib_loaded "$npid" || fail "libsnstack.so is not mapped into nginx (pid $npid)"

n2h0=$(agent_stat n2h_bytes)
h2n0=$(agent_stat h2n_bytes)
ops0=$(agent_stat h2n_ops)

body=$(curl -sS --fail --max-time 10 "http://127.0.0.1:$port/hello" 2>&1) || fail "GET /hello: $body"
[[ $body == hello ]] || fail "GET /hello returned '$body'"
curl -sS --fail --max-time 20 -o "$WORKDIR/1m.out" "http://127.0.0.1:$port/files/1m.bin" \
    2>"$WORKDIR/curl.err" || fail "GET /files/1m.bin: $(cat "$WORKDIR/curl.err")"
assert_same_file "$WORKDIR/www/files/1m.bin" "$WORKDIR/1m.out" "static file"

timeout 30 wrk -t1 -c16 -d5s --timeout 2s "http://127.0.0.1:$port/hello" >"$WORKDIR/wrk.out" 2>&1 ||
    fail "wrk exited non-zero: $(cat "$WORKDIR/wrk.out")"
cat "$WORKDIR/wrk.out"
wrk_check "$WORKDIR/wrk.out"
pid_alive "$npid" || fail "nginx died during the load: $(tail -5 "$ngx/error.log")"
errs=$(nginx_errors "$ngx")
[[ -z $errs ]] || fail "nginx error log: $errs"

n2h=$(agent_stat n2h_bytes)
h2n=$(agent_stat h2n_bytes)
ops=$(agent_stat h2n_ops)
log "n2h_bytes +$((n2h - n2h0)), h2n_bytes +$((h2n - h2n0)), h2n_ops +$((ops - ops0))"
((n2h > n2h0)) || fail "n2h_bytes did not grow: requests did not cross the channel"
((h2n >= h2n0 + 1024 * 1024)) || fail "h2n_bytes grew by $((h2n - h2n0)) < 1 MiB: responses did not cross the channel"
((ops > ops0)) || fail "h2n_ops did not grow"

stop_pid "$npid"
stop_agent
echo "PASS: $TEST_NAME"
