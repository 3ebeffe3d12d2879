#!/usr/bin/env bash
# Stress of the engine pass of 49-user-stack-diff (not part of `make test`): tests/semantics/
# wire.py's server role preloaded through the agent's engine on af_packet, its client role on
# kernel sockets in the peer namespace, N times on one veth fixture with a fresh agent and fresh
# ports each time, optionally under LOSS% loss each way (nftables in the peer namespace, RSTs
# exempt as in 49). A run fails when either role reports an exception, a timeout, an echo that
# came back altered (`intact False`) or no report; the first failed run stops the script and
# keeps its directory, the agent's log and a capture of the peer's veth (when tcpdump is
# installed) in KEEP.
#
# Written for two CI failures of 2026-12-05 that a single run of 49 rarely shows:
# - `out_echo_4m` corrupted without loss (a poll rewound the TX stream from a stale tail;
#   ci/stress-tx-poll-race.sh is the sharper tool for that one now);
# - `out_echo_1` stalled under 1% loss: a lost SYN of an engine with no other timer was never
#   sent again (the timerfd was armed only by polls). `WIRE_ONLY="keepalive out_echo_1" LOSS=10`
#   stopped that build within 20 runs in each of three tries.
#
#   [N=20] [LOSS=0] [WIRE_ONLY="scenario ..."] [ENGINE=native] [MODE=engine|kernel]
#   [KEEP=/tmp/stress-wire] bash ci/stress-wire.sh
#
# MODE=kernel runs the server role on Linux's own stack instead (the address on A's veth, no
# agent): the same scenarios under the same loss, for the durations the runs log.
#
# Root and network namespaces needed (nft for LOSS). Exits 1 at the first failed run.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEST_NAME=stress-wire
# shellcheck source=tests/lib.sh
source "$REPO/tests/lib.sh"
# shellcheck source=tests/userstack.sh
source "$REPO/tests/userstack.sh"
WIRE=$REPO/tests/semantics/wire.py
N=${N:-20}
LOSS=${LOSS:-0}
MODE=${MODE:-engine}
[[ $MODE == engine || $MODE == kernel ]] || fail "MODE=$MODE: engine or kernel"
KEEP=${KEEP:-/tmp/stress-wire}
export WIRE_ONLY=${WIRE_ONLY:-}
# What a failed run prints (wire.py's observations).
BAD="EXCEPTION|NO REPORT|timeout|intact False"
require_snstack
userstack_probe
if ((LOSS > 0)); then
    command -v nft >/dev/null 2>&1 || skip "nftables (nft) not installed (needed for LOSS)"
fi
export USERSTACK_V6=0
userstack_up
if ((LOSS > 0)); then
    in_b nft -f - <<NFT
table inet stress_loss {
    chain i { type filter hook input priority 0; iifname "$VETH_B" tcp flags & rst == rst accept; iifname "$VETH_B" numgen random mod 100 < $LOSS counter drop; }
    chain o { type filter hook output priority 0; oifname "$VETH_B" tcp flags & rst == rst accept; oifname "$VETH_B" numgen random mod 100 < $LOSS counter drop; }
}
NFT
fi
cap=
if command -v tcpdump >/dev/null 2>&1; then
    spawn /dev/null ip netns exec "$NS_B" tcpdump -i "$VETH_B" -w "$WORKDIR/peer.pcap" -s 128
    cap=$SPAWNED_PID
fi
log "$N runs of ${WIRE_ONLY:-every scenario} on the $MODE; ${LOSS}% loss each way"
for ((i = 0; i < N; i++)); do
    dir=$WORKDIR/r$i
    mkdir -p "$dir"
    in_b ip neigh flush dev "$VETH_B"
    # Below the kernel's ephemeral ports (32768-), 50 per run (wire.py has fewer scenarios).
    base=$((12000 + (i % 400) * 50))
    if [[ $MODE == kernel ]]; then
        ((i == 0)) && ip -n "$NS_A" addr add "$AGENT_IP/24" dev "$VETH_A"
        spawn "$dir/server.log" ip netns exec "$NS_A" "$PY" "$WIRE" server "$dir" "$AGENT_IP" "$PEER_IP" "$base"
    else
        userstack_agent afpacket --iface "$VETH_A" --engine "${ENGINE:-native}"
        spawn "$dir/server.log" ip netns exec "$NS_A" env "LD_PRELOAD=$PRELOAD" "SNSTACK_AGENT=$SNSTACK_AGENT" \
            "$PY" "$WIRE" server "$dir" "$AGENT_IP" "$PEER_IP" "$base"
    fi
    spid=$SPAWNED_PID
    in_b timeout 150 "$PY" "$WIRE" client "$dir" "$AGENT_IP" "$PEER_IP" "$base" \
        >"$dir/out.txt" 2>"$dir/client.log" || true
    wait_exit "$spid" 90 || log "run $i: the server role did not exit"
    if [[ $MODE == engine ]]; then
        cp "$AGENT_LOG" "$dir/agent.log"
        agent_alive || { cat "$dir/agent.log"; fail "run $i: the agent died"; }
        stop_agent
    fi
    if grep -qE "$BAD" "$dir/out.txt"; then
        [[ -n $cap ]] && stop_pid "$cap"
        rm -rf "$KEEP"
        mkdir -p "$KEEP"
        cp -r "$dir" "$KEEP/"
        [[ -n $cap ]] && cp "$WORKDIR/peer.pcap" "$KEEP/"
        grep -E "$BAD" "$dir/out.txt"
        tail -n 3 "$dir/server.log" "$dir/client.log"
        echo "FAIL: run $i (ports from $base); kept in $KEEP"
        exit 1
    fi
    ((i % 10 == 9)) && log "$((i + 1)) runs ok (last: $(tr '\n' ' ' <"$dir/server.log" | sed 's/server //g'))"
done
# Each scenario's median and slowest duration over the runs (the server role's clock).
cat "$WORKDIR"/r*/server.log | "$PY" -c '
import re, statistics, sys
d = {}
for line in sys.stdin:
    m = re.match(r"server (\S+) ([0-9.]+)s$", line.strip())
    if m:
        d.setdefault(m.group(1), []).append(float(m.group(2)))
for k, v in d.items():
    print("  %-20s median %6.2f s  max %6.2f s  (%d runs)" % (k, statistics.median(v), max(v), len(v)))
'
echo "PASS: $N runs"
