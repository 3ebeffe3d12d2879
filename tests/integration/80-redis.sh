#!/usr/bin/env bash
# Preloaded redis-server (no persistence, so it never forks) under a preloaded redis-benchmark
# (-P 16 -c 50, five commands x 100000 requests) must complete every test with no error line and
# status 0; a preloaded redis-cli SET/GETs a 1 MB binary value intact (sha256); the agent's byte
# counters grew by at least the value's size both ways.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/apps/common.sh
source "$REPO/tests/apps/common.sh"
require_snstack
require_cmd redis-server redis-benchmark redis-cli sha256sum ss timeout

start_agent
port=$(free_port)
spawn_preload "$WORKDIR/redis.log" redis-server --port "$port" --bind 127.0.0.1 --save "" \
    --appendonly no --daemonize no --dir "$WORKDIR" --logfile ""
srv=$SPAWNED_PID
wait_port "$port" "$srv"
lib_loaded "$srv" || fail "libsnstack.so is not mapped into redis-server (pid $srv)"
h2n0=$(agent_stat h2n_bytes)
n2h0=$(agent_stat n2h_bytes)

cli() { preload timeout -k 5 30 redis-cli -h 127.0.0.1 -p "$port" "$@" </dev/null; }
[[ $(cli PING 2>&1) == PONG ]] || fail "PING did not answer PONG: $(cli PING 2>&1)"

log "redis-benchmark -t set,get,incr,lpush,lrange_100 -n 100000 -P 16 -c 50"
rc=0
preload timeout -k 5 180 redis-benchmark -h 127.0.0.1 -p "$port" -t set,get,incr,lpush,lrange_100 \
    -n 100000 -P 16 -c 50 -q >"$WORKDIR/bench.out" 2>&1 </dev/null || rc=$?
tr '\r' '\n' <"$WORKDIR/bench.out" | grep -v '^ *$' | grep -v 'rps=' >"$WORKDIR/bench.txt" || true
cat "$WORKDIR/bench.txt"
[[ $rc == 0 ]] || fail "redis-benchmark exited with status $rc: $(tail -5 "$WORKDIR/bench.txt")"
for t in SET GET INCR LPUSH 'LRANGE_100 (first 100 elements)'; do
    grep -q "^$t: [0-9.]* requests per second" "$WORKDIR/bench.txt" ||
        fail "redis-benchmark has no result line for $t"
done
if grep -Eiv 'requests per second' "$WORKDIR/bench.txt" | grep -Ei 'error|reset|refused|timeout|writing to socket|reading from socket' >"$WORKDIR/bench.err"; then
    fail "redis-benchmark reported errors: $(head -5 "$WORKDIR/bench.err")"
fi
pid_alive "$srv" || fail "redis-server died during the benchmark"

SIZE=$((1024 * 1024))
head -c "$SIZE" /dev/urandom >"$WORKDIR/value"
log "SET/GET of a 1 MB binary value through redis-cli"
r=$(preload timeout -k 5 30 redis-cli -h 127.0.0.1 -p "$port" -x SET bigkey <"$WORKDIR/value" 2>&1) ||
    fail "redis-cli SET failed: $r"
[[ $r == OK ]] || fail "redis-cli SET answered '$r'"
[[ $(cli STRLEN bigkey) == "$SIZE" ]] || fail "STRLEN bigkey is $(cli STRLEN bigkey), expected $SIZE"
cli --raw GET bigkey >"$WORKDIR/got.raw" 2>"$WORKDIR/get.err" || fail "redis-cli GET failed: $(cat "$WORKDIR/get.err")"
# --raw appends one newline to the value.
[[ $(stat -c %s "$WORKDIR/got.raw") == $((SIZE + 1)) ]] ||
    fail "GET returned $(stat -c %s "$WORKDIR/got.raw") bytes, expected $((SIZE + 1)) (value + newline)"
head -c "$SIZE" "$WORKDIR/got.raw" >"$WORKDIR/got"
assert_same_file "$WORKDIR/value" "$WORKDIR/got" "1 MB value"
log "1 MB value round-tripped (sha256 $(sha256 "$WORKDIR/got" | cut -c1-16)...)"

counters_grew "$h2n0" "$n2h0" "$SIZE" || fail "agent byte counters grew by less than $SIZE"
[[ $(agent_stat processes) -ge 1 ]] || fail "agent reports no attached process while redis runs"
pid_alive "$srv" || fail "redis-server died"
grep -Ei 'panic|fatal|# Error' "$WORKDIR/redis.log" && fail "redis-server logged errors"
stop_pid "$srv"
stop_agent
echo "PASS: $TEST_NAME"
