#!/usr/bin/env bash
# Stress of a TX stream written by one thread while other threads poll the socket (not part of
# `make test`): tests/apps/tx_poll_race.c through the native engine on af_packet (the fixture of
# 49-user-stack-diff), its bytes checked by a kernel sink. Written for the corrupted
# `out_echo_4m` of 2026-12-05: a poll on the reading thread rewound the TX stream (moved its
# base) from a tail the writing thread had moved on from, so the engine sent other bytes of the
# ring in place of published ones. Run it whole under `taskset -c 1 nice -n 19` with NOISE=1 to
# have the scheduler preempt threads everywhere (the race needs a poller preempted between two
# loads).
#
#   [N=5] [SECS=60] [POLLERS=4] [NOISE=0] [ENGINE=native] bash ci/stress-tx-poll-race.sh
#
# Root and network namespaces needed. Exits 1 when any run was corrupted.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEST_NAME=stress-tx-poll-race
# shellcheck source=tests/lib.sh
source "$REPO/tests/lib.sh"
# shellcheck source=tests/userstack.sh
source "$REPO/tests/userstack.sh"
# shellcheck source=tests/apps/common.sh
source "$REPO/tests/apps/common.sh"
require_snstack
userstack_probe
build_c "$APPS/tx_poll_race.c" "$WORKDIR/tx_poll_race"
export USERSTACK_V6=0
userstack_up
if [[ ${NOISE:-0} == 1 ]]; then
    # A busy loop on each CPU this script may run on, as nice as the script itself.
    for c in $(taskset -pc $$ | sed 's/.*: //; s/,/ /g'); do
        spawn /dev/null taskset -c "$c" sh -c 'while :; do :; done'
    done
fi
n=${N:-5}
bad=0
for i in $(seq "$n"); do
    dir=$WORKDIR/r$i
    mkdir -p "$dir"
    userstack_agent afpacket --iface "$VETH_A" --engine "${ENGINE:-native}"
    in_b ip neigh flush dev "$VETH_B"
    port=$((23000 + i % 1000))
    spawn "$dir/sink.log" ip netns exec "$NS_B" "$WORKDIR/tx_poll_race" sink "$port" "${SECS:-60}"
    spid=$SPAWNED_PID
    sleep 0.3
    ip netns exec "$NS_A" env "LD_PRELOAD=$PRELOAD" "SNSTACK_AGENT=$SNSTACK_AGENT" \
        timeout $((${SECS:-60} + 60)) "$WORKDIR/tx_poll_race" send "$PEER_IP" "$port" \
        "${SECS:-60}" "${POLLERS:-4}" >"$dir/send.log" 2>&1 || log "run $i: sender status $?"
    wait_exit "$spid" 60 || log "run $i: the sink did not exit"
    stop_agent
    log "run $i: $(cat "$dir/send.log") / $(cat "$dir/sink.log")"
    if grep -q CORRUPT "$dir/sink.log" || ! grep -q intact "$dir/sink.log"; then
        bad=$((bad + 1))
        log "run $i: corrupted or incomplete"
    fi
done
log "runs $n, corrupted $bad"
((bad == 0))
