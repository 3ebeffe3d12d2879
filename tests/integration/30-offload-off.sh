#!/usr/bin/env bash
# SNSTACK_OFFLOAD=0 with LD_PRELOAD still set makes the library a pure pass-through. Pass: nginx,
# curl and wrk (all preloaded, offload off) work, the library is mapped into nginx, the kernel shows
# nginx itself owning the listener, and not one agent counter moved (processes, sockets, h2n/n2h).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd curl wrk sha256sum ss
[[ -x $NGINX_BIN ]] || fail "nginx not installed (run: ci/install-deps.sh)"

COUNTERS=(processes sockets h2n_bytes h2n_ops n2h_bytes n2h_ops)
ngx=$WORKDIR/nginx
port=$(free_port)
nginx_conf "$ngx" "$port" "$WORKDIR/www"
mkdir -p "$WORKDIR/www/files"
head -c $((1024 * 1024)) /dev/urandom >"$WORKDIR/www/files/1m.bin"

start_agent
declare -A before
for k in "${COUNTERS[@]}"; do before[$k]=$(agent_stat "$k"); done

mapfile -t cmd < <(nginx_args "$ngx")
spawn_preload "$WORKDIR/nginx.out" SNSTACK_OFFLOAD=0 "${cmd[@]}"
npid=$SPAWNED_PID
wait_port "$port" "$npid"
lib_loaded "$npid" || fail "libsnstack.so is not mapped into nginx (pid $npid): test would be vacuous"
[[ $(ss -Htlnp "sport = :$port") == *"pid=$npid,"* ]] ||
    fail "listener on $port is not owned by nginx (pid $npid) in the kernel: $(ss -Htlnp "sport = :$port")"

body=$(preload SNSTACK_OFFLOAD=0 curl -sS --fail --max-time 10 "http://127.0.0.1:$port/hello" 2>&1) ||
    fail "GET /hello: $body"
[[ $body == hello ]] || fail "GET /hello returned '$body'"
preload SNSTACK_OFFLOAD=0 curl -sS --fail --max-time 20 -o "$WORKDIR/1m.out" \
    "http://127.0.0.1:$port/files/1m.bin" 2>"$WORKDIR/curl.err" </dev/null ||
    fail "GET /files/1m.bin: $(cat "$WORKDIR/curl.err")"
assert_same_file "$WORKDIR/www/files/1m.bin" "$WORKDIR/1m.out" "static file"

preload SNSTACK_OFFLOAD=0 timeout 20 wrk -t1 -c16 -d2s --timeout 2s "http://127.0.0.1:$port/hello" \
    >"$WORKDIR/wrk.out" 2>&1 </dev/null || fail "wrk exited non-zero: $(cat "$WORKDIR/wrk.out")"
cat "$WORKDIR/wrk.out"
wrk_check "$WORKDIR/wrk.out"
pid_alive "$npid" || fail "nginx died"
errs=$(nginx_errors "$ngx")
[[ -z $errs ]] || fail "nginx error log: $errs"

for k in "${COUNTERS[@]}"; do
    v=$(agent_stat "$k")
    [[ $v == "${before[$k]}" ]] || fail "agent counter $k changed ${before[$k]} -> $v with SNSTACK_OFFLOAD=0"
done
log "agent counters unchanged: ${COUNTERS[*]}"

stop_pid "$npid"
stop_agent
echo "PASS: $TEST_NAME"
