#!/usr/bin/env bash
# pitfalls.md 5 (lost wake-ups): two preloaded processes ping-pong 20000 one-byte messages over
# one connection (tests/apps/pingpong.c), each side sleeping in the library between messages:
# blocking read/write, poll, epoll; with the default host spin (0: sleep at once) and with a short
# spin (SNSTACK_SPIN_US=20, the spin-to-sleep boundary). Every run is bounded (60 s). A lost wake-up
# leaves a round trip stalled until a library timeout (100 ms futex / 1 s epoll-poll sleep cap):
# fail on any round trip >= 1 s or more than 3 over 50 ms (scheduling noise on a busy 2-core box
# stays well below that; the kernel run of the same program is logged for comparison).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/apps/common.sh
source "$REPO/tests/apps/common.sh"
require_snstack
require_cmd ss timeout
N=20000
build_c "$APPS/pingpong.c" "$WORKDIR/pingpong"
start_agent

round() { # LABEL MODE PRELOAD(0|1) [VAR=VALUE...]
    local label=$1 mode=$2 pre=$3 port srv rc=0 line
    shift 3
    port=$(free_port)
    if [[ $pre == 1 ]]; then
        spawn_preload "$WORKDIR/srv-$label.log" "$@" "$WORKDIR/pingpong" server "$port" "$N" "$mode"
    else
        spawn "$WORKDIR/srv-$label.log" "$WORKDIR/pingpong" server "$port" "$N" "$mode"
    fi
    srv=$SPAWNED_PID
    wait_port "$port" "$srv"
    if [[ $pre == 1 ]]; then
        preload "$@" timeout -k 5 60 "$WORKDIR/pingpong" client "$port" "$N" "$mode" \
            >"$WORKDIR/cli-$label.log" 2>&1 </dev/null || rc=$?
    else
        timeout -k 5 60 "$WORKDIR/pingpong" client "$port" "$N" "$mode" \
            >"$WORKDIR/cli-$label.log" 2>&1 </dev/null || rc=$?
    fi
    [[ $rc == 0 ]] || fail "[$label] client failed (status $rc$([[ $rc == 124 ]] && echo ': no progress for 60 s, lost wake-up?')): $(tail -3 "$WORKDIR/cli-$label.log"; tail -3 "$WORKDIR/srv-$label.log")"
    wait_exit "$srv" 10 || fail "[$label] server did not finish"
    [[ $WAIT_RC == 0 ]] || fail "[$label] server exited with $WAIT_RC: $(tail -3 "$WORKDIR/srv-$label.log")"
    line=$(grep '^ok ' "$WORKDIR/cli-$label.log") || fail "[$label] no result line"
    log "[$label] $line"
    [[ $line == "ok n=$N "* ]] || fail "[$label] unexpected result: $line"
    local max stalls
    max=$(sed -n 's/.*max_ms=\([0-9]*\).*/\1/p' <<<"$line")
    stalls=$(sed -n 's/.*stalls_over_50ms=\([0-9]*\).*/\1/p' <<<"$line")
    [[ $pre == 0 ]] && return 0
    [[ $max -lt 1000 ]] || fail "[$label] a round trip took $max ms (a wake-up was lost until a timeout)"
    [[ $stalls -le 3 ]] || fail "[$label] $stalls round trips over 50 ms (max $max ms): wake-ups lost until the 100 ms futex timeout?"
}

for mode in block poll epoll; do
    round "kernel-$mode" "$mode" 0
    round "snstack-$mode" "$mode" 1
    round "snstack-$mode-spin20" "$mode" 1 SNSTACK_SPIN_US=20
done
stop_agent
echo "PASS: $TEST_NAME"
