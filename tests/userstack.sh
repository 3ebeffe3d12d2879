# shellcheck shell=bash
# shellcheck disable=SC2034 # variables here are used by the scripts that source this file
# The user-space stack fixture, sourced after tests/lib.sh by tests/integration/45-*.sh, 46-*.sh
# and ci/bench-userstack.sh:
#
#   netns $NS_A (agent side)              netns $NS_B (peer: unmodified curl, wrk, servers)
#   $VETH_A  (up, NO kernel IP;  <===veth===>  $VETH_B  $PEER_IP/24
#            the agent's stack owns $AGENT_IP)
#
# Names are unique per run; the EXIT trap stops every PID the script started (lib.sh), then
# deletes both namespaces (which removes the veth pair). Offloads stay at the veth defaults (tx
# checksum offload, TSO/GSO/GRO on), as on any Linux host: the agent's af_packet device gets
# CHECKSUM_PARTIAL frames and GSO super-frames (virtio_net_hdr) and must cope with them.

userstack_probe() {
    [[ $(id -u) == 0 ]] || skip "needs root (network namespaces, AF_PACKET)"
    command -v ip >/dev/null 2>&1 || skip "iproute2 (ip) not installed"
    local probe=snsprobe$$
    ip netns add "$probe" 2>/dev/null || skip "cannot create network namespaces here"
    ip netns del "$probe"
}

# userstack_up: creates the namespaces and the veth pair; sets NS_A NS_B VETH_A VETH_B AGENT_IP
# PEER_IP SUBNET.
userstack_up() {
    local tag oct
    tag=$(printf '%04x%02x' $(($$ & 0xffff)) $((RANDOM & 0xff)))
    oct=$(((RANDOM % 200) + 20))
    NS_A=snsA-$tag
    NS_B=snsB-$tag
    VETH_A=sva$tag
    VETH_B=svb$tag
    SUBNET=10.$oct.$(((RANDOM % 250) + 1))
    AGENT_IP=$SUBNET.2
    PEER_IP=$SUBNET.1
    # IPv6 too (native engine): the agent owns AGENT_IP6; the kernel of $NS_A keeps IPv6 off.
    AGENT_IP6=fd00:${tag:0:4}:${tag:4:2}::2
    PEER_IP6=fd00:${tag:0:4}:${tag:4:2}::1
    trap userstack_cleanup EXIT
    ip netns add "$NS_A"
    ip netns add "$NS_B"
    ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B"
    ip -n "$NS_A" link set lo up
    ip -n "$NS_B" link set lo up
    ip netns exec "$NS_A" sysctl -qw "net.ipv6.conf.$VETH_A.disable_ipv6=1" || true
    if [[ ${USERSTACK_V6:-1} == 1 ]]; then
        ip netns exec "$NS_B" sysctl -qw "net.ipv6.conf.$VETH_B.disable_ipv6=0" || true
        ip -n "$NS_B" addr add "$PEER_IP6/64" dev "$VETH_B" nodad
    else
        ip netns exec "$NS_B" sysctl -qw "net.ipv6.conf.$VETH_B.disable_ipv6=1" || true
    fi
    ip -n "$NS_A" link set "$VETH_A" up
    ip -n "$NS_B" addr add "$PEER_IP/24" dev "$VETH_B"
    ip -n "$NS_B" link set "$VETH_B" up
    log "fixture: $NS_A/$VETH_A (agent $AGENT_IP) <-> $NS_B/$VETH_B ($PEER_IP)"
}

# userstack_offloads_off: turns tx checksum offload, TSO/GSO/GRO off on both veth ends, for a
# device that cannot see the kernel's offload state (DPDK's net_af_packet vdev reads frames
# without a virtio_net_hdr: partial checksums and truncated super-frames otherwise).
userstack_offloads_off() {
    command -v ethtool >/dev/null 2>&1 || skip "ethtool not installed"
    ip netns exec "$NS_A" ethtool -K "$VETH_A" tx off tso off gso off gro off >/dev/null 2>&1 || true
    ip netns exec "$NS_B" ethtool -K "$VETH_B" tx off tso off gso off gro off >/dev/null 2>&1 || true
}

userstack_cleanup() {
    local rc=$? i
    trap - EXIT
    for ((i = ${#_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${_PIDS[i]}" TERM 3
    done
    _PIDS=()
    if [[ -n $AGENT_PID ]]; then
        stop_pid "$AGENT_PID" TERM 5
        AGENT_PID=
    fi
    [[ -n ${NS_A:-} ]] && ip netns del "$NS_A" 2>/dev/null
    [[ -n ${NS_B:-} ]] && ip netns del "$NS_B" 2>/dev/null
    # Hand the status to _cleanup through $? (errexit off: a failing status must not end the
    # trap before the work directory is removed).
    set +e
    (exit "$rc")
    _cleanup
}

# in_b CMD...: runs CMD in the peer namespace (foreground).
in_b() { ip netns exec "$NS_B" "$@"; }

# userstack_agent BACKEND [EXTRA AGENT ARGS...]: the agent in $NS_A owning $AGENT_IP/24.
userstack_agent() {
    local backend=$1 real=$AGENT_BIN wrapper=$WORKDIR/agent-in-ns
    shift
    printf '#!/bin/sh\nexec ip netns exec %s %s "$@"\n' "$NS_A" "$real" >"$wrapper"
    chmod +x "$wrapper"
    AGENT_BIN=$wrapper
    local v6=()
    # IPv6 is the native engine's (smoltcp and lwIP are configured for IPv4 only).
    [[ ${USERSTACK_V6:-1} == 1 && " $* " != *" --engine smoltcp "* && " $* " != *" --engine lwip "* ]] &&
        v6=(--ip6 "$AGENT_IP6/64")
    start_agent --backend "$backend" --ip "$AGENT_IP/24" "${v6[@]}" "$@"
    AGENT_BIN=$real
}

# userstack_nginx DIR PORT ROOT: a preloaded single-process nginx listening on $AGENT_IP:PORT
# through the agent (worker_connections 4096, backlog 4096). Sets NGINX_PID.
userstack_nginx() {
    local dir=$1 port=$2 root=$3 cmd
    nginx_conf "$dir" "$port" "$root"
    local l6=
    [[ ${USERSTACK_V6:-1} == 1 ]] && l6="\n        listen [$AGENT_IP6]:$port backlog=4096;"
    sed -i -e "s/listen 127.0.0.1:$port;/listen $AGENT_IP:$port backlog=4096;$l6/" \
        -e 's/worker_connections 1024;/worker_connections 4096;/' "$dir/nginx.conf"
    sed -i 's/^worker_processes 1;/worker_processes 1;\nworker_rlimit_nofile 8192;/' "$dir/nginx.conf"
    mapfile -t cmd < <(nginx_args "$dir")
    spawn_preload "$dir/nginx.out" "${cmd[@]}"
    NGINX_PID=$SPAWNED_PID
}

# wait_http URL [TIMEOUT_S]: from the peer namespace, until URL answers.
wait_http() {
    local url=$1 t=${2:-15} i
    for ((i = 0; i < t * 5; i++)); do
        if in_b curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.2
    done
    fail "$url did not answer within ${t}s"
}

# userstack_suite BACKEND [EXTRA AGENT ARGS...]: the acceptance checks of docs/user-stack.md
# against an agent on BACKEND. Each step logs one line with its figures.
userstack_suite() {
    local backend=$1 www=$WORKDIR/www t0 t1 out err
    shift
    require_cmd curl wrk sha256sum "$PY" ping
    mkdir -p "$www/files"
    head -c $((100 * 1024 * 1024)) /dev/urandom >"$www/files/100m.bin"
    head -c $((10 * 1024 * 1024)) /dev/urandom >"$www/files/10m.bin"

    userstack_agent "$backend" --max-sockets 4096 "$@"
    userstack_nginx "$WORKDIR/ngx" 8080 "$www"
    local base=http://$AGENT_IP:8080
    wait_http "$base/hello" 20
    lib_loaded "$NGINX_PID" || fail "libsnstack.so is not mapped into nginx"

    # ARP and ICMP echo are answered by the agent's stack (the kernel in $NS_A has no address).
    in_b ping -c 3 -i 0.2 -W 2 "$AGENT_IP" >"$WORKDIR/ping.out" 2>&1 ||
        fail "ping $AGENT_IP: $(tail -3 "$WORKDIR/ping.out")"
    log "ping: $(grep -o '[0-9]* received' "$WORKDIR/ping.out")"
    local mac
    mac=$(ip netns exec "$NS_A" cat "/sys/class/net/$VETH_A/address")
    if command -v arping >/dev/null 2>&1; then
        in_b arping -c 2 -w 5 -I "$VETH_B" "$AGENT_IP" >"$WORKDIR/arping.out" 2>&1 ||
            fail "arping $AGENT_IP: $(tail -3 "$WORKDIR/arping.out")"
        grep -qi "$mac" "$WORKDIR/arping.out" || fail "arping answer is not from $mac: $(cat "$WORKDIR/arping.out")"
        log "arping: answered by $mac"
    fi
    in_b ip neigh show "$AGENT_IP" dev "$VETH_B" | grep -qi "lladdr $mac" ||
        fail "ARP entry for $AGENT_IP is not $mac: $(in_b ip neigh show "$AGENT_IP")"
    log "ip neigh: $AGENT_IP lladdr $mac"

    # curl, then wrk -c100 -d10s with zero errors.
    out=$(in_b curl -sS --fail --max-time 10 "$base/hello" 2>&1) || fail "GET /hello: $out"
    [[ $out == hello ]] || fail "GET /hello returned '$out'"
    if [[ ${USERSTACK_V6:-1} == 1 ]]; then
        in_b ping -6 -c 2 -i 0.2 -W 2 "$AGENT_IP6" >"$WORKDIR/ping6.out" 2>&1 ||
            fail "ping -6 $AGENT_IP6: $(tail -3 "$WORKDIR/ping6.out")"
        out=$(in_b curl -sS -g --fail --max-time 10 "http://[$AGENT_IP6]:8080/hello" 2>&1) ||
            fail "GET /hello over IPv6: $out"
        [[ $out == hello ]] || fail "GET /hello over IPv6 returned '$out'"
        log "IPv6: ping and curl to [$AGENT_IP6] (NDP answered by the agent)"
    fi
    in_b timeout 40 wrk -t2 -c100 -d10s --timeout 5s --latency "$base/hello" >"$WORKDIR/wrk.out" 2>&1 ||
        fail "wrk exited non-zero: $(cat "$WORKDIR/wrk.out")"
    grep -E 'Requests/sec|99%' "$WORKDIR/wrk.out" | sed 's/^/    /'
    wrk_check "$WORKDIR/wrk.out"

    # 100 MB download, sha256 intact. With USERSTACK_DIRECT_TX=1 (a device that lends its TX
    # memory to the engine: AF_XDP, DPDK), at least 90% of its data segments must have been built
    # straight in device memory (one copy from the TX stream to the wire).
    local direct0=0 buffered0=0 direct buffered native=0
    # (The counters are the native engine's: smoltcp and lwIP have none.)
    [[ " $* " != *" --engine smoltcp "* && " $* " != *" --engine lwip "* ]] && native=1
    if ((native)); then
        direct0=$(agent_stat tcp_tx_data_direct)
        buffered0=$(agent_stat tcp_tx_data_buffered)
    fi
    t0=$(date +%s.%N)
    in_b curl -sS --fail --max-time 120 -o "$WORKDIR/100m.out" "$base/files/100m.bin" 2>"$WORKDIR/curl.err" ||
        fail "GET 100m.bin: $(cat "$WORKDIR/curl.err")"
    t1=$(date +%s.%N)
    assert_same_file "$www/files/100m.bin" "$WORKDIR/100m.out" "100 MB download"
    rm -f "$WORKDIR/100m.out"
    log "100 MB intact in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f s (%.0f MB/s)", b - a, 100 / (b - a) }')"
    if ((native)); then
        direct=$(($(agent_stat tcp_tx_data_direct) - direct0))
        buffered=$(($(agent_stat tcp_tx_data_buffered) - buffered0))
        log "100 MB data segments: tx_data_direct $direct, tx_data_buffered $buffered"
        if [[ ${USERSTACK_DIRECT_TX:-0} == 1 ]]; then
            ((direct + buffered > 0)) || fail "no data segment counted for the 100 MB download"
            ((direct * 10 >= (direct + buffered) * 9)) ||
                fail "only $direct of $((direct + buffered)) data segments were built in device memory (want >= 90%)"
        fi
    fi

    # 1,000 concurrent connections to one listener: all accepted and served.
    in_b timeout 120 "$PY" "$REPO/tests/apps/many_conns.py" "$AGENT_IP" 8080 1000 90 >"$WORKDIR/many.out" 2>&1 ||
        fail "1000 connections: $(cat "$WORKDIR/many.out")"
    log "1000 connections: $(tr '\n' ' ' <"$WORKDIR/many.out")"

    # Outgoing: preloaded clients through the agent's stack to kernel servers in $NS_B.
    mkdir -p "$WORKDIR/pub"
    cp "$www/files/10m.bin" "$WORKDIR/pub/"
    spawn "$WORKDIR/http.out" ip netns exec "$NS_B" "$PY" -m http.server 8000 --bind "$PEER_IP" \
        --directory "$WORKDIR/pub"
    local i
    for ((i = 0; i < 50; i++)); do
        in_b curl -s -o /dev/null --max-time 1 "http://$PEER_IP:8000/" && break
        sleep 0.2
    done
    preload curl -sS --fail --max-time 30 -o "$WORKDIR/out10m" "http://$PEER_IP:8000/10m.bin" \
        2>"$WORKDIR/curl2.err" || fail "outgoing curl: $(cat "$WORKDIR/curl2.err")"
    assert_same_file "$www/files/10m.bin" "$WORKDIR/out10m" "outgoing 10 MB download"
    log "outgoing curl: 10 MB intact from $PEER_IP:8000"
    if command -v redis-server >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1; then
        spawn "$WORKDIR/redis.out" ip netns exec "$NS_B" redis-server --port 6379 --bind "$PEER_IP" \
            --save '' --appendonly no --protected-mode no
        for ((i = 0; i < 50; i++)); do
            in_b redis-cli -h "$PEER_IP" ping >/dev/null 2>&1 && break
            sleep 0.2
        done
        preload timeout 60 redis-benchmark -h "$PEER_IP" -p 6379 -t set,get -n 20000 -c 20 -P 16 -q \
            >"$WORKDIR/rb.out" 2>&1 || fail "outgoing redis-benchmark: $(tail -5 "$WORKDIR/rb.out")"
        grep -q 'GET:' "$WORKDIR/rb.out" || fail "redis-benchmark printed no GET figure: $(cat "$WORKDIR/rb.out")"
        log "outgoing redis-benchmark: $(tr '\r' '\n' <"$WORKDIR/rb.out" | grep -E '^(SET|GET): [0-9]' | tr '\n' ' ')"
    fi

    # The 100 MB download again over a lossy, slow, reordering link: netem on both veth ends, or,
    # on kernels without sch_netem, 1% loss and 1% reordering injected by the agent's own device
    # in both directions and 4 ms added to every received frame (netem's 2 ms on each end, as one
    # round-trip delay), with a fresh agent and nginx started with --inject-faults.
    local how
    if ip netns exec "$NS_A" tc qdisc add dev lo root netem delay 0ms 2>/dev/null; then
        ip netns exec "$NS_A" tc qdisc del dev lo root
        in_b tc qdisc add dev "$VETH_B" root netem loss 1% delay 2ms reorder 1%
        ip netns exec "$NS_A" tc qdisc add dev "$VETH_A" root netem loss 1% delay 2ms reorder 1%
        how="netem loss 1% delay 2ms reorder 1%"
    else
        log "sch_netem is not available in this kernel: injecting the loss in the agent's device instead"
        stop_pid "$NGINX_PID"
        stop_agent
        userstack_agent "$backend" --max-sockets 4096 --inject-faults drop=10,reorder=10,delay_us=4000 "$@"
        userstack_nginx "$WORKDIR/ngx2" 8080 "$www"
        wait_http "$base/hello" 20
        how="--inject-faults drop=10,reorder=10,delay_us=4000 (1% loss + 1% reordering each way, +4 ms round trip)"
    fi
    t0=$(date +%s.%N)
    in_b curl -sS --fail --max-time 150 -o "$WORKDIR/100m.out" "$base/files/100m.bin" 2>"$WORKDIR/curl.err" ||
        fail "GET 100m.bin over a lossy link: $(cat "$WORKDIR/curl.err")"
    t1=$(date +%s.%N)
    assert_same_file "$www/files/100m.bin" "$WORKDIR/100m.out" "100 MB download over a lossy link"
    log "$how: 100 MB intact in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f s", b - a }')"
    # The receive direction over the same link (the agent's engine receives; in-order bytes go
    # from the frame straight into the channel, the rest through the engine's buffer).
    preload curl -sS --fail --max-time 120 -o "$WORKDIR/out10m-lossy" "http://$PEER_IP:8000/10m.bin" \
        2>"$WORKDIR/curl3.err" || fail "outgoing curl over a lossy link: $(cat "$WORKDIR/curl3.err")"
    assert_same_file "$www/files/10m.bin" "$WORKDIR/out10m-lossy" "outgoing 10 MB download over a lossy link"
    log "$how: outgoing curl, 10 MB intact"
    in_b tc qdisc del dev "$VETH_B" root 2>/dev/null || true
    ip netns exec "$NS_A" tc qdisc del dev "$VETH_A" root 2>/dev/null || true

    pid_alive "$NGINX_PID" || fail "nginx died"
    err=$(nginx_errors "$WORKDIR/ngx")$(nginx_errors "$WORKDIR/ngx2")
    [[ -z $err ]] || fail "nginx error log: $err"
    agent_alive || fail "agent died"
    stop_pid "$NGINX_PID"
    stop_agent
}
