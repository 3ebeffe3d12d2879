#!/usr/bin/env bash
# One thread writes a keyed byte pattern to an offloaded connection while two others poll the same
# socket as fast as they can (tests/apps/tx_poll_race.c); a kernel sink checks every byte. A poll
# computes the socket's TX room on the host, lock-free; it once rewound the TX stream from a tail
# the writer had moved on from, and the agent sent other bytes of the ring in place of published
# ones (the corrupted out_echo_4m of 2026-12-05; the build before the fix failed here within 2 s
# every time). The native engine's lent TX under the same load: ci/stress-tx-poll-race.sh.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/apps/common.sh
source "$REPO/tests/apps/common.sh"
require_snstack
build_c "$APPS/tx_poll_race.c" "$WORKDIR/tx_poll_race"
start_agent
secs=${SECS:-10}
port=$((24000 + $$ % 1000))
spawn "$WORKDIR/sink.log" "$WORKDIR/tx_poll_race" sink "$port" "$secs"
spid=$SPAWNED_PID
sleep 0.3
rc=0
preload timeout $((secs + 60)) "$WORKDIR/tx_poll_race" send 127.0.0.1 "$port" "$secs" 2 \
    >"$WORKDIR/send.log" 2>&1 || rc=$?
wait_exit "$spid" 60 || fail "the sink did not exit"
log "sender (status $rc): $(cat "$WORKDIR/send.log")"
log "sink: $(cat "$WORKDIR/sink.log")"
grep -q CORRUPT "$WORKDIR/sink.log" && fail "bytes on the wire differ from what the application wrote"
((rc == 0)) && grep -q intact "$WORKDIR/sink.log" || fail "the transfer did not complete"
agent_alive || fail "the agent died"
stop_agent
echo "PASS: $TEST_NAME"
