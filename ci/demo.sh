#!/usr/bin/env bash
# The main job (`make demo`): install deps, build, start the agent and two nginx from the same
# generated config (A under snstack, B on kernel TCP), load each in turn with
# `wrk -t1 -c16 -d10s --latency`, print a side-by-side table. Everything is stopped on exit.
#   DURATION=10  seconds per wrk run; SKIP_BUILD=1 uses the binaries already in target/release
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
[[ -d $HOME/.cargo/bin ]] && PATH=$HOME/.cargo/bin:$PATH
DURATION=${DURATION:-10}

bash ci/install-deps.sh </dev/null
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "building: cargo build --release --workspace"
    cargo build --release --workspace </dev/null
fi

# shellcheck source=tests/lib.sh
source tests/lib.sh
# shellcheck source=ci/compare.sh
source ci/compare.sh

compare_setup
for side in A B; do
    log "wrk ${DURATION}s against $side"
    compare_run "$side" "$DURATION" "$WORKDIR/$side.kv"
done
agent_alive || fail "agent died during the demo"

echo
echo "nginx /hello, wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION}s --latency, $(nproc) cores" \
    "(wrk, nginx and the agent share them)"
compare_table "$WORKDIR/A.kv" "$WORKDIR/B.kv"
echo
echo "CPU per request: utime+stime from /proc/PID/stat over the run / requests (tick = $((1000 / CLK_TCK)) ms)."
echo "h2n/n2h: payload bytes and operations that crossed the host<->NIC channel (agent counters)."
echo
echo "agent stats at the end (counters at 0 left out; all of them: snstack-agent stats):"
agent_stats | awk '$2 != "0"' | sed 's/^/  /'
stop_pid "$NGX_A"
stop_pid "$NGX_B"
stop_agent
