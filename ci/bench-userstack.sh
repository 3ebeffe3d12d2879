#!/usr/bin/env bash
# Benchmark (not a test) of the user-space TCP/IP stack over a veth pair between two network
# namespaces (fixture: tests/userstack.sh), one run each:
#   kernel    nginx on the kernel stack of namespace A (the IP configured on the veth end)
#   afpacket  preloaded nginx through snstack-agent --backend afpacket (the agent owns the IP)
#   dpdk      the same with --backend dpdk (when the agent was built with --features dpdk)
# Client in namespace B: curl of a 100 MB file (bulk MB/s) and wrk -t2 -c100 (requests/s, p99) on
# a keepalive `return 200`. Writes bench/results/YYYY-MM-DD-HHMM-userstack.md.
#   DURATION=10  SKIP_BUILD=1  MODES="kernel afpacket dpdk"
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10}
MODES=${MODES:-"kernel afpacket dpdk"}
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    (cd "$REPO" && cargo build --release --workspace)
    if pkg-config --exists libdpdk 2>/dev/null; then
        (cd "$REPO" && cargo build --release -p nic-agent --features dpdk)
    fi
fi
# shellcheck source=tests/lib.sh
source "$REPO/tests/lib.sh"
# shellcheck source=tests/userstack.sh
source "$REPO/tests/userstack.sh"
require_snstack
require_cmd curl wrk
userstack_probe
userstack_up
www=$WORKDIR/www
mkdir -p "$www/files"
head -c $((100 * 1024 * 1024)) /dev/urandom >"$www/files/100m.bin"
declare -A BULK RPS P99 NOTE
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

measure() { # MODE
    local m=$1 base=http://$AGENT_IP:8080 t0 t1
    wait_http "$base/hello" 20
    in_b curl -s -o /dev/null "$base/files/100m.bin" # warm-up (page cache, ARP)
    t0=$(date +%s.%N)
    in_b curl -sS --fail -o /dev/null "$base/files/100m.bin"
    t1=$(date +%s.%N)
    BULK[$m]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", 100 / (b - a) }')
    in_b wrk -t2 -c100 -d"${DURATION}s" --latency "$base/hello" >"$WORKDIR/wrk-$m.out" 2>&1
    RPS[$m]=$(awk '/Requests\/sec/ { printf "%.0f", $2 }' "$WORKDIR/wrk-$m.out")
    P99[$m]=$(awk '$1 == "99%" { print $2 }' "$WORKDIR/wrk-$m.out")
    local errs
    errs=$(wrk_socket_errors "$WORKDIR/wrk-$m.out")
    [[ $errs == 0 ]] || NOTE[$m]="wrk socket errors: $errs"
    log "$m: bulk ${BULK[$m]} MB/s, ${RPS[$m]} req/s, p99 ${P99[$m]}"
}

for m in $MODES; do
    case $m in
    kernel)
        ip -n "$NS_A" addr add "$AGENT_IP/24" dev "$VETH_A"
        nginx_conf "$WORKDIR/ngx-k" 8080 "$www"
        sed -i "s/listen 127.0.0.1:8080;/listen $AGENT_IP:8080 backlog=4096;/" "$WORKDIR/ngx-k/nginx.conf"
        mapfile -t cmd < <(nginx_args "$WORKDIR/ngx-k")
        spawn "$WORKDIR/ngx-k.out" ip netns exec "$NS_A" "${cmd[@]}"
        k=$SPAWNED_PID
        measure kernel
        stop_pid "$k"
        ip -n "$NS_A" addr del "$AGENT_IP/24" dev "$VETH_A"
        ip -n "$NS_B" neigh flush dev "$VETH_B"
        ;;
    afpacket | dpdk)
        probe=$("$AGENT_BIN" --socket "$WORKDIR/p.sock" --backend "$m" --iface snsnoiface0 --ip 10.0.0.2/24 2>&1 || true)
        if grep -q "built without DPDK" <<<"$probe"; then
            NOTE[$m]="skipped: agent built without --features dpdk"
            log "$m: skipped (agent built without --features dpdk)"
            continue
        fi
        AGENT_LOG_LEVEL=warn userstack_agent "$m" --iface "$VETH_A" --max-sockets 4096
        userstack_nginx "$WORKDIR/ngx-$m" 8080 "$www"
        measure "$m"
        stop_pid "$NGINX_PID"
        stop_agent
        ip -n "$NS_B" neigh flush dev "$VETH_B"
        ;;
    *) fail "unknown mode $m" ;;
    esac
done

mkdir -p "$REPO/bench/results"
out=$REPO/bench/results/$(date +%Y-%m-%d-%H%M)-userstack.md
{
    echo "# User-space TCP/IP stack over a veth pair: kernel vs agent (af_packet, DPDK)"
    echo
    echo "Command: \`DURATION=$DURATION MODES=\"$MODES\" bash ci/bench-userstack.sh\` ($(date -u '+%Y-%m-%d %H:%M UTC'), one run)."
    echo "Machine: $(nproc) vCPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r)."
    echo "Link: veth between two namespaces, offloads (tx csum, TSO, GSO, GRO) off on both ends, MTU 1500."
    echo "Client (namespace B, kernel TCP): \`curl\` of a 100 MB static file (after one warm-up), \`wrk -t2 -c100 -d${DURATION}s --latency\` on nginx \`return 200\` with keepalive."
    echo "Server: single-process nginx; \`kernel\` = nginx on the kernel stack of namespace A; \`afpacket\`/\`dpdk\` = nginx preloaded with libsnstack.so, every TCP socket in snstack-agent's smoltcp-based stack (DPDK: net_af_packet vdev, EAL --no-huge, polled on a 50 us timer)."
    echo "All of it (wrk, curl, nginx, agent, veth softirq) shares the same vCPUs; load average at start $LOAD0, at end $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine makes single runs noisy)."
    echo
    echo "| mode | bulk 100 MB (MB/s) | wrk req/s | wrk p99 | note |"
    echo "|---|---:|---:|---:|---|"
    for m in $MODES; do
        echo "| $m | ${BULK[$m]:--} | ${RPS[$m]:--} | ${P99[$m]:--} | ${NOTE[$m]:-} |"
    done
} >"$out"
cat "$out"
log "wrote ${out#"$REPO"/}"
