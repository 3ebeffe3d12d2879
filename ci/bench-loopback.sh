#!/usr/bin/env bash
# Loopback acceleration benchmark: sockperf ping-pong (server and client on 127.0.0.1) on kernel
# sockets, under snstack with `--loopback on` and with `--loopback off`, each with and without host
# spinning (SNSTACK_SPIN_US=50 in both apps' environment; the agent keeps its default --spin-us 50).
# REPS runs of DURATION seconds per point; the table has the median of the runs' p50 latencies
# (and of their averages). The `-pinned` points put the agent alone on CPU 1 and both apps on
# CPU 0 (taskset), the NIC-like placement (kernel-pinned: both apps on CPU 0). Also sockperf throughput (one rep) and the channel round trip of
# snstack-chanbench. Writes bench/results/YYYY-MM-DD-loopback.md (OUT overrides).
#   REPS=3 DURATION=5 MSG=64 SKIP_BUILD=1
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
[[ -d $HOME/.cargo/bin ]] && PATH=$HOME/.cargo/bin:$PATH
REPS=${REPS:-3}
DURATION=${DURATION:-5}
MSG=${MSG:-64}
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    cargo build --release --workspace </dev/null
fi
# shellcheck source=tests/lib.sh
source tests/lib.sh
require_cmd sockperf
OUT=${OUT:-bench/results/$(date +%Y-%m-%d)-loopback.md}
plain() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }

# run_point NAME MODE(kernel|on|off) SPIN(0|50) [pin] -> appends "p50 avg" per rep to $WORKDIR/NAME.txt
run_point() {
    local name=$1 mode=$2 spin=$3 pin=${4:-} r port srv out agent_bin=$AGENT_BIN
    local -a pre=()
    [[ -n $pin ]] && pre=(taskset -c 0)
    if [[ $mode != kernel ]]; then
        if [[ -n $pin ]]; then
            printf '#!/bin/sh\nexec taskset -c 1 %q "$@"\n' "$agent_bin" >"$WORKDIR/agent-pinned"
            chmod +x "$WORKDIR/agent-pinned"
            AGENT_BIN=$WORKDIR/agent-pinned
        fi
        start_agent --loopback "$mode"
        AGENT_BIN=$agent_bin
        pre+=(env "LD_PRELOAD=$PRELOAD" "SNSTACK_AGENT=$AGENT_SOCK" "SNSTACK_SPIN_US=$spin")
    fi
    for ((r = 1; r <= REPS; r++)); do
        port=$(free_port)
        spawn "$WORKDIR/srv-$name-$r.log" "${pre[@]}" sockperf server --tcp -i 127.0.0.1 -p "$port"
        srv=$SPAWNED_PID
        wait_port "$port" "$srv"
        out=$WORKDIR/pp-$name-$r.log
        "${pre[@]}" timeout $((DURATION + 30)) sockperf ping-pong --tcp -i 127.0.0.1 -p "$port" \
            -t "$DURATION" -m "$MSG" >"$out" 2>&1 </dev/null || fail "$name: ping-pong failed: $(plain "$out" | tail -3)"
        echo "$(plain "$out" | awk '/percentile 50.000/ {print $NF}') $(plain "$out" | sed -n 's/.*avg-latency=\([0-9.]*\).*/\1/p')" >>"$WORKDIR/$name.txt"
        log "$name rep $r: p50 $(tail -1 "$WORKDIR/$name.txt")"
        stop_pid "$srv" INT
    done
    if [[ $spin == 0 && -z $pin ]]; then
        port=$(free_port)
        spawn "$WORKDIR/srv-$name-tp.log" "${pre[@]}" sockperf server --tcp -i 127.0.0.1 -p "$port"
        srv=$SPAWNED_PID
        wait_port "$port" "$srv"
        "${pre[@]}" timeout $((DURATION + 30)) sockperf throughput --tcp -i 127.0.0.1 -p "$port" \
            -t "$DURATION" -m 1400 >"$WORKDIR/tp-$name.log" 2>&1 </dev/null || true
        plain "$WORKDIR/tp-$name.log" | grep -o 'BandWidth is .*' | head -1 >"$WORKDIR/$name.tp" || true
        stop_pid "$srv" INT
    fi
    if [[ $mode != kernel ]]; then
        agent_stats | grep -E '^loop_(connections|bytes) ' | tr '\n' ' ' >"$WORKDIR/$name.stats"
        stop_agent
    fi
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }

points=("kernel kernel 0" "on-sleep on 0" "off-sleep off 0" "on-spin on 50" "off-spin off 50"
    "kernel-pinned kernel 0 pin" "on-sleep-pinned on 0 pin" "off-sleep-pinned off 0 pin")
for pt in "${points[@]}"; do
    # shellcheck disable=SC2086
    run_point $pt
done

start_agent
chan=$WORKDIR/chanbench.out
timeout 300 "$CHANBENCH_BIN" --socket "$AGENT_SOCK" >"$chan" 2>&1 </dev/null || echo "(chanbench failed)" >>"$chan"
stop_agent

kp50=$(cut -d' ' -f1 "$WORKDIR/kernel.txt" | median)
{
    echo "# Loopback acceleration: sockperf ping-pong $(date '+%Y-%m-%d %H:%M')"
    echo
    echo "Commit \`$(git rev-parse --short HEAD)\`. Produced by \`ci/bench-loopback.sh\` (REPS=$REPS, DURATION=$DURATION s, message $MSG B)."
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/{ print $2; exit }' /proc/cpuinfo)), load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| point | sockperf p50 (median of reps), us | avg, us | kernel p50 / this p50 | throughput 1400 B | agent counters |"
    echo "|---|---:|---:|---:|---|---|"
    for pt in "${points[@]}"; do
        name=${pt%% *}
        p50=$(cut -d' ' -f1 "$WORKDIR/$name.txt" | median)
        avg=$(cut -d' ' -f2 "$WORKDIR/$name.txt" | median)
        ratio=$(awk -v k="$kp50" -v x="$p50" 'BEGIN { if (x > 0) printf "%.2fx", k / x; else print "-" }')
        echo "| $name | $p50 | $avg | $ratio | $(cat "$WORKDIR/$name.tp" 2>/dev/null || echo -) | $(cat "$WORKDIR/$name.stats" 2>/dev/null || echo -) |"
    done
    echo
    echo "Per-rep p50/avg: $(for pt in "${points[@]}"; do n=${pt%% *}; echo -n "$n: $(tr '\n' ';' <"$WORKDIR/$n.txt") "; done)"
    echo
    echo "Commands: \`sockperf server --tcp -i 127.0.0.1 -p PORT\` and \`sockperf ping-pong --tcp -i 127.0.0.1 -p PORT -t $DURATION -m $MSG\`,"
    echo "both under \`LD_PRELOAD=target/release/libsnstack.so SNSTACK_AGENT=... SNSTACK_SPIN_US=0|50\` for the snstack points;"
    echo "agent \`snstack-agent --loopback on|off\` (default --spin-us 50)."
    echo
    echo "## Channel round trip (\`snstack-chanbench --socket PATH\`)"
    echo
    echo '```'
    cat "$chan"
    echo '```'
} >"$OUT"
cat "$OUT"
