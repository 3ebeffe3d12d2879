#!/usr/bin/env bash
# Preloaded `sockperf server --tcp` under preloaded `sockperf ping-pong` and `sockperf throughput`
# clients, 5 s each; then the same with server and clients on epoll (feed file, -F epoll). Pass: every run exits 0
# with non-zero message counts, no ERROR line, no dropped/duplicated/out-of-order message. Latency
# average/percentiles and message rate are logged, never asserted.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/apps/common.sh
source "$REPO/tests/apps/common.sh"
require_snstack
require_cmd sockperf ss timeout
DUR=${SOCKPERF_SECONDS:-5}

start_agent
h2n0=$(agent_stat h2n_bytes)
n2h0=$(agent_stat n2h_bytes)

plain() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
check_errors() { # LOG WHAT
    if plain "$1" | grep -Ei 'error|fail|abort|segmentation' >"$1.bad"; then
        fail "$2 logged errors: $(head -3 "$1.bad")"
    fi
}

server_round() { # NAME IOMUX ("" = sockperf's defaults with -i/-p; else a feed file and -F IOMUX)
    local name=$1 mux=$2 port srv out rc sent recv
    local -a addr
    port=$(free_port)
    if [[ -z $mux ]]; then
        addr=(--tcp -i 127.0.0.1 -p "$port")
    else
        echo "T:127.0.0.1:$port" >"$WORKDIR/feed-$name"
        addr=(-f "$WORKDIR/feed-$name" -F "$mux")
    fi
    spawn_preload "$WORKDIR/server-$name.log" sockperf server "${addr[@]}"
    srv=$SPAWNED_PID
    wait_port "$port" "$srv"
    lib_loaded "$srv" || fail "libsnstack.so is not mapped into sockperf server (pid $srv)"

    out=$WORKDIR/pp-$name.log
    rc=0
    preload timeout -k 5 $((DUR + 30)) sockperf ping-pong "${addr[@]}" -t "$DUR" \
        >"$out" 2>&1 </dev/null || rc=$?
    [[ $rc == 0 ]] || fail "[$name] ping-pong exited with status $rc: $(plain "$out" | tail -5)"
    check_errors "$out" "[$name] ping-pong"
    read -r sent recv < <(plain "$out" | sed -n 's/.*\[Valid Duration\].*SentMessages=\([0-9]*\); ReceivedMessages=\([0-9]*\).*/\1 \2/p')
    [[ ${sent:-0} -gt 0 && ${recv:-0} -gt 0 ]] || fail "[$name] ping-pong counted no messages: $(plain "$out" | tail -5)"
    plain "$out" | grep -q '# dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0' ||
        fail "[$name] ping-pong: $(plain "$out" | grep 'dropped messages')"
    log "[$name] ping-pong: sent $sent received $recv; $(plain "$out" | grep -o 'avg-latency=[0-9.]* (std-dev=[0-9.]*)')" \
        "p50 $(plain "$out" | awk '/percentile 50.000/ {print $NF}') p99 $(plain "$out" | awk '/percentile 99.000/ {print $NF}')" \
        "p99.9 $(plain "$out" | awk '/percentile 99.900/ {print $NF}') max $(plain "$out" | awk '/<MAX>/ {print $NF}') usec"

    out=$WORKDIR/tp-$name.log
    rc=0
    preload timeout -k 5 $((DUR + 30)) sockperf throughput "${addr[@]}" -t "$DUR" \
        >"$out" 2>&1 </dev/null || rc=$?
    [[ $rc == 0 ]] || fail "[$name] throughput exited with status $rc: $(plain "$out" | tail -5)"
    check_errors "$out" "[$name] throughput"
    sent=$(plain "$out" | sed -n 's/.*Total of \([0-9]*\) messages sent.*/\1/p')
    [[ ${sent:-0} -gt 0 ]] || fail "[$name] throughput sent no messages: $(plain "$out" | tail -5)"
    log "[$name] throughput: $sent messages; $(plain "$out" | grep -o 'Message Rate is [0-9]* \[msg/sec\]');" \
        "$(plain "$out" | grep -o 'BandWidth is .*')"

    pid_alive "$srv" || fail "[$name] sockperf server died: $(plain "$WORKDIR/server-$name.log" | tail -3)"
    stop_pid "$srv" INT
    check_errors "$WORKDIR/server-$name.log" "[$name] sockperf server"
}

server_round default ""
server_round epoll epoll
counters_grew "$h2n0" "$n2h0" 100000 || fail "agent byte counters did not grow"
stop_agent
echo "PASS: $TEST_NAME"
