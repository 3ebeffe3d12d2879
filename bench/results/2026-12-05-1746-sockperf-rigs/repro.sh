#!/usr/bin/env bash
# The apart rig's sockperf tail, traced (2026-12-05): agent (kernel backend, --realtime auto) and
# the sockperf client on CPU 1, the preloaded sockperf server on CPU 0. A first 2 s client
# connection, then a 5 s one at 10k msg/s under `perf record` of the scheduler's events.
# Usage: bash repro.sh [OUTDIR]   (root; from the repository root, release binaries built)
set -euo pipefail
B=${B:-target/release}
D=${1:-/tmp/sockperf-rig-trace}; rm -rf "$D"; mkdir -p "$D"
PORT=$((12000 + RANDOM % 1000))
taskset -c 1 "$B/snstack-agent" --socket "$D/a.sock" --backend kernel --realtime auto >"$D/agent.log" 2>&1 &
AP=$!
for _ in $(seq 50); do [[ -S $D/a.sock ]] && break; sleep 0.1; done
LD_PRELOAD=$B/libsnstack.so SNSTACK_AGENT=$D/a.sock SNSTACK_STRICT=1 \
    taskset -c 0 sockperf server --tcp -i 127.0.0.1 -p "$PORT" >"$D/server.log" 2>&1 &
SP=$!
sleep 1
taskset -c 1 sockperf under-load --tcp -i 127.0.0.1 -p "$PORT" -t 2 -m 64 --mps 10000 >"$D/client0.log" 2>&1
perf record -q -o "$D/perf.data" -e sched:sched_switch,sched:sched_wakeup,sched:sched_waking -a &
PR=$!
sleep 1
taskset -c 1 sockperf under-load --tcp -i 127.0.0.1 -p "$PORT" -t 5 -m 64 --mps 10000 \
    --full-log "$D/full.csv" >"$D/client1.log" 2>&1
kill -INT $PR; wait $PR || true
kill $SP $AP; wait $SP $AP 2>/dev/null || true
perf script -i "$D/perf.data" -F comm,pid,tid,cpu,time,event,trace >"$D/sched.txt" 2>/dev/null
grep -E "percentile (99.000|90.000|50.000)" "$D/client1.log"
echo "then: python3 $(dirname "$0")/sched_wait.py $D/sched.txt $D/full.csv"
