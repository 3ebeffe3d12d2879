#!/usr/bin/env bash
# Benchmark (not a test): the agent's TCP/IP engines side by side with kernel TCP over a veth
# pair between two network namespaces (fixture: tests/userstack.sh), REPS interleaved repetitions
# in one run (issues 9 and 14; docs/engines.md). Modes:
#   kernel   nginx on the kernel stack of namespace A (the IP configured on the veth end)
#   agent-kernel  preloaded nginx through snstack-agent --backend kernel running in namespace A
#            (Linux TCP inside the agent, the product's default backend); no loss scenarios
#            (the same kernel TCP as `kernel`)
#   native   preloaded nginx through snstack-agent --backend afpacket --engine native (snstack-tcp)
#   smoltcp  the same with --engine smoltcp
#   lwip     the same with --engine lwip (only when the agent was built with --features lwip)
#   dpdk     --backend dpdk --engine native (only when the agent was built with --features dpdk;
#            its net_af_packet vdev needs the veth offloads off, so that mode runs with them off)
#   M-bf2    mode M (native, smoltcp, lwip) with the agent's PCIe model (--pcie bf2): only the
#            request scenarios (wrk100, close100, redis); PCIE_MODES lists the M (default native)
# Client in namespace B (kernel TCP, unmodified curl/wrk/python). Scenarios, per mode and rep:
#   bulk       curl of a 100 MiB file, after one warm-up download, BULK_TRIES times (MB/s = 10^6 bytes/s)
#   bulk_loss  the same with LOSS_PCT % random loss in each direction: nftables in namespace B,
#              `numgen random mod 100 < LOSS_PCT drop` on input and output of the veth end (this
#              kernel has no sch_netem), veth offloads at their defaults; kernel again with CUBIC
#              (bulk_loss_cubic; the namespace default here is BBR); bulk_loss_off: the same with
#              the veth offloads off on both ends (LOSS_OFF_MODES, default "kernel native smoltcp dpdk")
#   wrk100     wrk -t2 -c100 keepalive on nginx `return 200`: req/s, p50/p99 and CPU per request
#              (agent, nginx, wrk: utime+stime from /proc/PID/stat; machine: /proc/stat deltas)
#   close100   the same with `Connection: close` (a connection per request: requests/s =
#              connections/s)
#   redis      redis-server (preloaded in agent modes) and redis-benchmark -t get -P 1 -c 50 from
#              the peer: requests/s, p50/p99, agent and redis CPU per request (REDIS=0 skips it)
#   connsN     N connections opened, each served one request and then held open idle
#              (tests/apps/hold_conns.py) while wrk -t2 -c100 runs; agent RssAnon with N idle;
#              the agent of this block runs with --max-sockets $CONN_MAX_SOCKETS --rx-ring/--tx-ring
#              $CONN_RING (channel region per process = max_sockets x (rx_ring + tx_ring))
# Writes bench/results/<date>-engines.md and .json (medians, min-max spread, ratio to kernel).
#   REPS=3 DURATION=8 MODES="kernel native smoltcp lwip dpdk" PCIE_MODES=native CONNS="100 1000 10000"
#   LOSS_PCT=1 LOSS_TRIES=3 BULK_TRIES=3 (downloads per loss/bulk row and rep; QUICK: 1) REDIS=1 SCENARIOS="bulk wrk100 close100 redis loss" (a subset for A/B runs;
#   CONNS="" leaves out the connsN block)
#   QUICK=1 (REPS=1 DURATION=3 CONNS="100 1000")  SKIP_BUILD=1  TIME_LIMIT=3000 (s, whole run)
#   OUT=bench/results/<name> (prefix of the two output files)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    REPS=${REPS:-1} DURATION=${DURATION:-3} CONNS=${CONNS-"100 1000"} TIME_LIMIT=${TIME_LIMIT:-900}
else
    REPS=${REPS:-3} DURATION=${DURATION:-8} CONNS=${CONNS-"100 1000 10000"} TIME_LIMIT=${TIME_LIMIT:-3000}
fi
MODES=${MODES:-"kernel agent-kernel native smoltcp lwip dpdk"}
PCIE_MODES=${PCIE_MODES-native}
LOSS_PCT=${LOSS_PCT:-1}
LOSS_OFF_MODES=${LOSS_OFF_MODES-"kernel native smoltcp lwip dpdk"}
REDIS=${REDIS:-1}
SCENARIOS=${SCENARIOS:-"bulk wrk100 close100 redis loss"}
LOSS_MAXTIME=${LOSS_MAXTIME:-90}
LOSS_TRIES=${LOSS_TRIES:-$([[ $QUICK == 1 ]] && echo 1 || echo 3)}
BULK_TRIES=${BULK_TRIES:-$([[ $QUICK == 1 ]] && echo 1 || echo 3)}
STD_MAX_SOCKETS=4096
CONN_MAX_SOCKETS=${CONN_MAX_SOCKETS:-10240}
CONN_RING=${CONN_RING:-4096}
NGX_CONNS=${NGX_CONNS:-16384}
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    (cd "$REPO" && cargo build --release --workspace </dev/null)
    feats=()
    pkg-config --exists libdpdk 2>/dev/null && feats+=(dpdk)
    pkg-config --exists lwip 2>/dev/null && grep -q '^lwip *=' "$REPO/nic-agent/Cargo.toml" && feats+=(lwip)
    if ((${#feats[@]} > 0)); then
        (cd "$REPO" && cargo build --release -p nic-agent --features "${feats[*]}" </dev/null)
    fi
fi
# shellcheck source=tests/lib.sh
source "$REPO/tests/lib.sh"
# shellcheck source=tests/userstack.sh
source "$REPO/tests/userstack.sh"
require_snstack
require_cmd curl wrk ethtool "$NGINX_BIN"
userstack_probe
# Descriptors for 10k connections on either side (nginx with master_process off does not apply
# worker_rlimit_nofile itself: it inherits this limit, as do the agent and the peer's helper).
NOFILE=$(ulimit -Hn)
[[ $NOFILE == unlimited ]] && NOFILE=1048576
((NOFILE > 65536)) && NOFILE=65536
ulimit -n "$NOFILE"
STAMP=$(date -u +%Y-%m-%d-%H%M)
OUT=${OUT:-$REPO/bench/results/$STAMP-engines}
RAW=$WORKDIR/raw.tsv # mode scenario rep metric value
NOTES=$WORKDIR/notes.txt
: >"$RAW"
: >"$NOTES"
HAVE_NFT=1
command -v nft >/dev/null 2>&1 || HAVE_NFT=0

rec() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$RAW"; }
note() {
    log "NOTE: $*"
    printf '%s\n' "$*" >>"$NOTES"
}
time_left() { ((SECONDS < TIME_LIMIT)); }

# Drop modes this build cannot run.
built_with() { # FEATURE PROBE-ARGS...: false when the agent says it was built without FEATURE
    local f=$1 probe
    shift
    probe=$("$AGENT_BIN" --socket "$WORKDIR/p.sock" "$@" --iface snsnoiface0 --ip 10.0.0.2/24 2>&1 || true)
    ! grep -qiE "built without $f|invalid value '$f'" <<<"$probe"
}
modes=()
for m in $MODES; do
    case $m in
    kernel | agent-kernel | native | smoltcp) modes+=("$m") ;;
    dpdk)
        if built_with dpdk --backend dpdk; then modes+=(dpdk); else
            note "dpdk: skipped, the agent was built without --features dpdk"
        fi
        ;;
    lwip)
        if built_with lwip --backend afpacket --engine lwip; then modes+=(lwip); else
            note "lwip: skipped, the agent was built without --features lwip (liblwip-dev)"
        fi
        ;;
    *) fail "unknown mode $m" ;;
    esac
done
for m in $PCIE_MODES; do
    [[ " ${modes[*]} " == *" $m "* && $m != kernel && $m != dpdk ]] && modes+=("$m-bf2")
done
((${#modes[@]} > 0)) || fail "no mode to run"
if [[ $REDIS == 1 ]] && ! command -v redis-server >/dev/null 2>&1; then
    note "redis-server/redis-benchmark not installed: redis scenario skipped (ci/install-deps.sh)"
    REDIS=0
fi

userstack_up
# The peer opens up to 10k connections per level and closes them again: a wide port range and
# TIME-WAIT reuse keep later levels and repetitions from running out of ports.
ip netns exec "$NS_B" sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
ip netns exec "$NS_A" sysctl -qw net.core.somaxconn=4096 net.ipv4.tcp_max_syn_backlog=8192 || true
ip netns exec "$NS_A" sysctl -qw net.ipv4.ip_local_port_range="1024 65000" || true
www=$WORKDIR/www
mkdir -p "$www/files"
head -c $((100 * 1024 * 1024)) /dev/urandom >"$www/files/100m.bin"
BASE=http://$AGENT_IP:8080
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
KERNEL_CC=$(ip netns exec "$NS_A" sysctl -n net.ipv4.tcp_congestion_control)
T_START=$(date -u '+%Y-%m-%d %H:%M UTC')

# The veth offload features of one side, as `ethtool -K` arguments.
features() {
    local ns=NS_$1 dev=VETH_$1
    ip netns exec "${!ns}" ethtool -k "${!dev}" | awk -F': ' '
        $1 == "tx-checksumming" { t = $2 } $1 == "tcp-segmentation-offload" { s = $2 }
        $1 == "generic-segmentation-offload" { g = $2 } $1 == "generic-receive-offload" { r = $2 }
        END { sub(/ .*/, "", t); sub(/ .*/, "", s); sub(/ .*/, "", g); sub(/ .*/, "", r);
              printf "tx %s tso %s gso %s gro %s", t, s, g, r }'
}
# The veth offload features as the fixture left them (restored after each off period).
declare -A OFFL NAPI_SAVED
for side in A B; do
    OFFL[$side]=$(features "$side")
done
# napi on|off: the rig of the CPU-per-request scenarios. On a veth the sending syscall runs the
# receiver's whole network stack in softirq, so a server would be charged its client's TCP
# receive work (about 40 % of the agent's CPU, and of kernel nginx's) and the client the server's.
# Threaded NAPI on both ends moves each side's receive processing into a kernel thread of its
# own (napi/<dev>-N), measured separately, as on two machines. veth uses NAPI for a frame only
# with GRO on and, for a TCP segment from a TSO-capable sender, with TSO off on that sender:
# responses of a few hundred bytes are never segmented, so TSO off changes nothing else here.
napi() {
    local side ns dev
    for side in A B; do
        ns=NS_$side dev=VETH_$side
        if [[ $1 == on ]]; then
            NAPI_SAVED[$side]=$(features "$side")
            ip netns exec "${!ns}" ethtool -K "${!dev}" gro on tso off >/dev/null 2>&1 || true
            ip netns exec "${!ns}" sh -c "echo 1 > /sys/class/net/${!dev}/threaded" 2>/dev/null || true
        else
            ip netns exec "${!ns}" sh -c "echo 0 > /sys/class/net/${!dev}/threaded" 2>/dev/null || true
            # shellcheck disable=SC2086 # a list of feature/value pairs
            ip netns exec "${!ns}" ethtool -K "${!dev}" ${NAPI_SAVED[$side]} >/dev/null 2>&1 || true
        fi
    done
}
napi_ticks() { # DEV: utime+stime of its NAPI threads (0 when none)
    local p t=0
    for p in $(pgrep "^napi/$1" || true); do
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
offloads() { # on|off
    local side ns dev
    for side in A B; do
        ns=NS_$side dev=VETH_$side
        if [[ $1 == off ]]; then
            ip netns exec "${!ns}" ethtool -K "${!dev}" tx off tso off gso off gro off >/dev/null 2>&1 || true
        else
            # shellcheck disable=SC2086 # a list of feature/value pairs
            ip netns exec "${!ns}" ethtool -K "${!dev}" ${OFFL[$side]} >/dev/null 2>&1 || true
        fi
    done
}
loss() { # on|off: nftables random drop on input and output of the peer's veth end
    if [[ $1 == on ]]; then
        ip netns exec "$NS_B" nft -f - <<NFT
table inet snsloss {
    chain in { type filter hook input priority 0; policy accept; iifname "$VETH_B" numgen random mod 100 < $LOSS_PCT drop; }
    chain out { type filter hook output priority 0; policy accept; oifname "$VETH_B" numgen random mod 100 < $LOSS_PCT drop; }
}
NFT
    else
        ip netns exec "$NS_B" nft delete table inet snsloss 2>/dev/null || true
    fi
}

# ---- servers ---------------------------------------------------------------------------------
SRV_NGINX='' SRV_AGENT='' SRV_CONF='' SRV_DIR=''
# server_nginx_conf DIR CONNS: nginx.conf listening on $AGENT_IP:8080 (backlog 4096), worker
# connections/rlimit for CONNS (std: 4096; 10k: 10240 and 20480 descriptors).
server_nginx_conf() {
    local dir=$1 wc=4096 nofile=8192
    # nginx starts closing idle keepalive connections ("worker_connections are not enough,
    # reusing connections") once fewer than 1/16 of worker_connections are free
    [[ $2 == 10k ]] && wc=$NGX_CONNS nofile=$NOFILE
    nginx_conf "$dir" 8080 "$www"
    sed -i -e "s/listen 127.0.0.1:8080;/listen $AGENT_IP:8080 backlog=4096;/" \
        -e "s/worker_connections 1024;/worker_connections $wc;/" \
        -e "s/^worker_processes 1;/worker_processes 1;\nworker_rlimit_nofile $nofile;/" "$dir/nginx.conf"
}
server_wait() { # true when $BASE/hello answers within 20 s
    local i
    for ((i = 0; i < 100; i++)); do
        in_b curl -s -o /dev/null --max-time 1 "$BASE/hello" && return 0
        [[ -n $SRV_AGENT ]] && ! pid_alive "$SRV_AGENT" && return 1
        sleep 0.2
    done
    return 1
}
# server_up MODE std|10k: sets SRV_NGINX (and SRV_AGENT); returns 1 when it does not answer.
server_up() {
    local m=$1 cfg=$2 dir cmd eng backend
    local -a extra=(--max-sockets "$STD_MAX_SOCKETS")
    # shellcheck disable=SC2206 # AGENT_ARGS is a list of words on purpose
    [[ $cfg != 10k ]] && extra+=(${AGENT_ARGS:-})
    dir=$WORKDIR/ngx-$m-$cfg-$RANDOM
    SRV_AGENT='' SRV_CONF=$cfg
    [[ $cfg == 10k ]] && extra=(--max-sockets "$CONN_MAX_SOCKETS" --rx-ring "$CONN_RING" --tx-ring "$CONN_RING")
    server_nginx_conf "$dir" "$cfg"
    case $m in
    kernel)
        ip -n "$NS_A" addr add "$AGENT_IP/24" dev "$VETH_A"
        mapfile -t cmd < <(nginx_args "$dir")
        spawn "$dir/nginx.out" ip netns exec "$NS_A" "${cmd[@]}"
        ;;
    agent-kernel)
        ip -n "$NS_A" addr add "$AGENT_IP/24" dev "$VETH_A"
        local real=$AGENT_BIN wrapper=$WORKDIR/agent-in-ns-kernel
        printf '#!/bin/sh\nexec ip netns exec %s %s "$@"\n' "$NS_A" "$real" >"$wrapper"
        chmod +x "$wrapper"
        AGENT_BIN=$wrapper AGENT_LOG_LEVEL=warn start_agent --backend kernel "${extra[@]}"
        AGENT_BIN=$real
        SRV_AGENT=$AGENT_PID
        echo "$m $cfg $AGENT_LOG" >>"$WORKDIR/agentlogs"
        mapfile -t cmd < <(nginx_args "$dir")
        spawn_preload "$dir/nginx.out" "${cmd[@]}"
        ;;
    native | smoltcp | lwip | dpdk | *-bf2)
        eng=${m%-bf2} backend=afpacket
        [[ $m == *-bf2 ]] && extra+=(--pcie bf2)
        [[ $m == dpdk ]] && eng=native backend=dpdk
        [[ $m == dpdk ]] && offloads off
        AGENT_LOG_LEVEL=warn userstack_agent "$backend" --engine "$eng" --iface "$VETH_A" "${extra[@]}"
        SRV_AGENT=$AGENT_PID
        echo "$m $cfg $AGENT_LOG" >>"$WORKDIR/agentlogs"
        mapfile -t cmd < <(nginx_args "$dir")
        spawn_preload "$dir/nginx.out" "${cmd[@]}"
        ;;
    esac
    SRV_NGINX=$SPAWNED_PID
    SRV_DIR=$dir
    server_wait
}
server_down() { # MODE
    local m=$1 rc=0
    [[ -n $SRV_NGINX ]] && stop_pid "$SRV_NGINX" TERM 5
    SRV_NGINX=
    if [[ -n $SRV_AGENT ]]; then
        if ! pid_alive "$SRV_AGENT"; then
            wait "$SRV_AGENT" || rc=$?
            note "$m ($SRV_CONF): the agent (pid $SRV_AGENT) had exited with status $rc before the end of its block; log tail: $(agent_log_plain | tail -3 | tr '\n' ' ')"
        else
            stop_pid "$SRV_AGENT" TERM 10
        fi
        AGENT_PID='' SRV_AGENT=''
    fi
    local err
    err=$(nginx_errors "$SRV_DIR" | head -3)
    [[ -z $err ]] || note "$m ($SRV_CONF): nginx error log: $err"
    if [[ $m == kernel || $m == agent-kernel ]]; then
        ip -n "$NS_A" addr del "$AGENT_IP/24" dev "$VETH_A" 2>/dev/null || true
    fi
    [[ $m == dpdk ]] && offloads on
    ip -n "$NS_B" neigh flush dev "$VETH_B"
}

# ---- measurements ----------------------------------------------------------------------------
ticks() { [[ -n ${1:-} ]] && awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_anon() { awk '$1 == "RssAnon:" { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; } # KiB
machine() { awk '$1 == "cpu" { print $2 + $3, $4 + $7 + $8, $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; } # user, sys+irq+softirq, busy

# engine_counts: the sender's loss-recovery counters "rtos tlps retrans_segs fast_recoveries":
# the agent engine's, or for kernel TCP namespace A's (nstat; the server side is alone there).
engine_counts() {
    if [[ -z $SRV_AGENT ]]; then
        ip netns exec "$NS_A" nstat -az TcpExtTCPTimeouts TcpExtTCPLossProbes TcpRetransSegs \
            TcpExtTCPSackRecovery 2>/dev/null | awk '
            $1 == "TcpExtTCPTimeouts" { r = $2 } $1 == "TcpExtTCPLossProbes" { t = $2 }
            $1 == "TcpRetransSegs" { s = $2 } $1 == "TcpExtTCPSackRecovery" { f = $2 }
            END { print r + 0, t + 0, s + 0, f + 0 }'
        return
    fi
    "$AGENT_BIN" stats --socket "$AGENT_SOCK" 2>/dev/null | awk '
        $1 == "tcp_rtos" { r = $2 } $1 == "tcp_tlps" { t = $2 }
        $1 == "tcp_retrans_segs" { s = $2 } $1 == "tcp_fast_recoveries" { f = $2 }
        END { print r + 0, t + 0, s + 0, f + 0 }'
}

# bulk MODE SCEN REP MAXTIME [warm]: one timed curl of the 100 MiB file.
bulk() {
    local m=$1 sc=$2 r=$3 mt=$4 out c0 c1 what=''
    if [[ ${5:-} == warm ]]; then
        in_b curl -s -o /dev/null --max-time "$mt" "$BASE/files/100m.bin" || true
    fi
    c0=$(engine_counts)
    if out=$(in_b curl -sS --fail --max-time "$mt" -o /dev/null -w '%{size_download} %{time_total}' \
        "$BASE/files/100m.bin" 2>"$WORKDIR/curl.err"); then
        read -r bytes secs <<<"$out"
        if ((bytes == 104857600)); then
            c1=$(engine_counts)
            if [[ $m != agent-kernel ]]; then
                read -r -a x0 <<<"$c0"
                read -r -a x1 <<<"$c1"
                rec "$m" "$sc" "$r" rtos $((x1[0] - x0[0]))
                what="; sender: $((x1[0] - x0[0])) RTOs, $((x1[1] - x0[1])) TLPs, $((x1[2] - x0[2])) segments retransmitted, $((x1[3] - x0[3])) fast recoveries"
            fi
            rec "$m" "$sc" "$r" mbps "$(awk -v b="$bytes" -v t="$secs" 'BEGIN { printf "%.1f", b / t / 1e6 }')"
            rec "$m" "$sc" "$r" secs "$secs"
            log "$m $sc rep $r: $(awk -v b="$bytes" -v t="$secs" 'BEGIN { printf "%.1f MB/s (%.2f s)", b / t / 1e6, t }')$what"
            return 0
        fi
        note "$m $sc rep $r: short download ($bytes bytes)"
    else
        note "$m $sc rep $r: curl failed: $(tr '\n' ' ' <"$WORKDIR/curl.err") (${mt} s limit; $(ip netns exec "$NS_B" ss -tin dst "$AGENT_IP" 2>/dev/null | tail -1 | tr -s ' ' | cut -c1-200))"
    fi
    rec "$m" "$sc" "$r" failed 1
    return 1
}

# lossbulk MODE SCEN REP: LOSS_TRIES timed downloads under loss (each one a sample: the
# throughput under random loss varies a lot from one download to the next), until one fails.
lossbulk() {
    local t
    for ((t = 1; t <= LOSS_TRIES; t++)); do
        bulk "$1" "$2" "$3" "$LOSS_MAXTIME" || return 0
    done
}

# wrkcpu MODE SCEN REP: wrk -t2 -c100 for DURATION s, with CPU and request counts (SCEN
# close100: every request on a new connection, `Connection: close`).
wrkcpu() {
    local m=$1 sc=$2 r=$3 a0 a1 n0 n1 mc0 mc1 out req rps p50 p99 errs w na0 na1 nb0 nb1
    local -a hdr=()
    [[ $sc == close100 ]] && hdr=(-H "Connection: close")
    out=$WORKDIR/wrk-$m-$sc-$r.out
    napi on
    sleep 1.5 # the af_packet device follows the interface's offloads within a second
    in_b timeout 20 wrk -t2 -c100 -d1s "${hdr[@]}" "$BASE/hello" >/dev/null 2>&1 || true # warm-up
    na0=$(napi_ticks "$VETH_A") nb0=$(napi_ticks "$VETH_B")
    a0=$(ticks "$SRV_AGENT") n0=$(ticks "$SRV_NGINX") mc0=$(machine)
    # shellcheck disable=SC2016 # expanded by the inner shell
    w=$(in_b timeout $((DURATION + 30)) bash -c 'wrk -t2 -c100 -d"$1"s --timeout 5s --latency "${@:4}" "$2" >"$3" 2>&1 || true
        awk "{ print \$16, \$17 }" /proc/$$/stat' _ "$DURATION" "$BASE/hello" "$out" "${hdr[@]}") || true
    a1=$(ticks "$SRV_AGENT") n1=$(ticks "$SRV_NGINX") mc1=$(machine)
    na1=$(napi_ticks "$VETH_A") nb1=$(napi_ticks "$VETH_B")
    napi off
    sleep 1.5 # TSO back on: the af_packet device notices within a second
    req=$(wrk_requests "$out")
    if ! [[ $req =~ ^[0-9]+$ && $req -gt 0 ]]; then
        note "$m $sc rep $r: wrk made no requests: $(tr '\n' ' ' <"$out" | cut -c1-300)"
        rec "$m" "$sc" "$r" failed 1
        return 1
    fi
    rps=$(awk '/Requests\/sec/ { printf "%.0f", $2 }' "$out")
    p50=$(awk '$1 == "50%" { v = $2; if (v ~ /us$/) v = v / 1000; else if (v ~ /ms$/) v = v + 0; else if (v ~ /s$/) v = v * 1000; print v }' "$out")
    p99=$(awk '$1 == "99%" { v = $2; if (v ~ /us$/) v = v / 1000; else if (v ~ /ms$/) v = v + 0; else if (v ~ /s$/) v = v * 1000; print v }' "$out")
    errs=$(wrk_socket_errors "$out")
    [[ $errs == 0 ]] || note "$m $sc rep $r: wrk socket errors: $(grep 'Socket errors' "$out")"
    rec "$m" "$sc" "$r" rps "$rps"
    rec "$m" "$sc" "$r" p50_ms "$p50"
    rec "$m" "$sc" "$r" p99_ms "$p99"
    rec "$m" "$sc" "$r" wrk_errors "$errs"
    awk -v a0="$a0" -v a1="$a1" -v n0="$n0" -v n1="$n1" -v req="$req" -v hz="$CLK_TCK" \
        -v m0="$mc0" -v m1="$mc1" -v w="$w" -v agent="${SRV_AGENT:-}" -v M="$m" -v S="$sc" -v R="$r" \
        -v na="$((na1 - na0))" -v nb="$((nb1 - nb0))" '
        BEGIN { f = 1e6 / hz / req; split(m0, x, " "); split(m1, y, " "); split(w, z, " ")
            if (agent != "") printf "%s\t%s\t%s\tagent_us\t%.3f\n", M, S, R, (a1 - a0) * f
            printf "%s\t%s\t%s\tnginx_us\t%.3f\n", M, S, R, (n1 - n0) * f
            printf "%s\t%s\t%s\tnapi_srv_us\t%.3f\n", M, S, R, na * f
            printf "%s\t%s\t%s\tnapi_cli_us\t%.3f\n", M, S, R, nb * f
            printf "%s\t%s\t%s\tserver_us\t%.3f\n", M, S, R, ((a1 - a0) + (n1 - n0) + na) * f
            printf "%s\t%s\t%s\twrk_us\t%.3f\n", M, S, R, (z[1] + z[2]) * f
            printf "%s\t%s\t%s\tmach_user_us\t%.3f\n", M, S, R, (y[1] - x[1]) * f
            printf "%s\t%s\t%s\tmach_sys_us\t%.3f\n", M, S, R, (y[2] - x[2]) * f
            printf "%s\t%s\t%s\tmach_busy_us\t%.3f\n", M, S, R, (y[3] - x[3]) * f }' >>"$RAW"
    log "$m $sc rep $r: $rps req/s, p99 $p99 ms, errors $errs; $(awk -v M="$m" -v S="$sc" -v R="$r" -F'\t' \
        '$1 == M && $2 == S && $3 == R && $4 ~ /_us$/ { printf "%s %s  ", $4, $5 }' "$RAW")"
}

# rediscpu MODE REP: redis-server (preloaded through the running agent, or on the kernel stack of
# A) and redis-benchmark -t get -P 1 -c 50 from the peer, with CPU per request as in wrkcpu.
rediscpu() {
    local m=$1 r=$2 sc=redis dir pid a0 a1 n0 n1 na0 na1 out n i
    dir=$WORKDIR/redis-$m-$r
    mkdir -p "$dir"
    local -a argv=(redis-server --port 6379 --bind "$AGENT_IP" --save "" --appendonly no --dir "$dir"
        --protected-mode no)
    if [[ $m == kernel ]]; then
        spawn "$dir/out" ip netns exec "$NS_A" "${argv[@]}"
    else
        spawn_preload "$dir/out" "${argv[@]}"
    fi
    pid=$SPAWNED_PID
    for ((i = 0; i < 100; i++)); do
        in_b redis-cli -h "$AGENT_IP" -p 6379 ping 2>/dev/null | grep -q PONG && break
        pid_alive "$pid" || break
        sleep 0.2
    done
    if ! in_b redis-cli -h "$AGENT_IP" -p 6379 ping 2>/dev/null | grep -q PONG; then
        note "$m redis rep $r: redis-server did not answer: $(tail -3 "$dir/out" | tr '\n' ' ')"
        rec "$m" "$sc" "$r" failed 1
        stop_pid "$pid" TERM 5
        return 1
    fi
    napi on
    sleep 1.5
    in_b timeout 60 redis-benchmark -h "$AGENT_IP" -p 6379 -t set,get -n 20000 -c 50 -q >/dev/null 2>&1 || true
    n=$((DURATION * 25000))
    na0=$(napi_ticks "$VETH_A")
    a0=$(ticks "$SRV_AGENT") n0=$(ticks "$pid")
    out=$(in_b timeout $((DURATION * 20 + 60)) redis-benchmark -h "$AGENT_IP" -p 6379 -t get -n "$n" -c 50 \
        -P 1 -d 64 --csv 2>&1) || true
    a1=$(ticks "$SRV_AGENT") n1=$(ticks "$pid")
    na1=$(napi_ticks "$VETH_A")
    napi off
    sleep 1.5
    stop_pid "$pid" TERM 5
    # "GET","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    local line
    line=$(grep '^"GET"' <<<"$out" | tr -d '"' || true)
    if [[ -z $line ]]; then
        note "$m redis rep $r: redis-benchmark printed no GET line: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
        rec "$m" "$sc" "$r" failed 1
        return 1
    fi
    IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"$line"
    rec "$m" "$sc" "$r" rps "$rps"
    rec "$m" "$sc" "$r" p50_ms "$p50"
    rec "$m" "$sc" "$r" p99_ms "$p99"
    awk -v a0="$a0" -v a1="$a1" -v n0="$n0" -v n1="$n1" -v req="$n" -v hz="$CLK_TCK" \
        -v agent="${SRV_AGENT:-}" -v M="$m" -v S="$sc" -v R="$r" -v na="$((na1 - na0))" '
        BEGIN { f = 1e6 / hz / req
            if (agent != "") printf "%s\t%s\t%s\tagent_us\t%.3f\n", M, S, R, (a1 - a0) * f
            printf "%s\t%s\t%s\tapp_us\t%.3f\n", M, S, R, (n1 - n0) * f
            printf "%s\t%s\t%s\tnapi_srv_us\t%.3f\n", M, S, R, na * f
            printf "%s\t%s\t%s\tserver_us\t%.3f\n", M, S, R, ((a1 - a0) + (n1 - n0) + na) * f }' >>"$RAW"
    log "$m redis rep $r: $rps req/s, p50 $p50 ms, p99 $p99 ms; $(awk -v M="$m" -v S="$sc" -v R="$r" -F'\t' \
        '$1 == M && $2 == S && $3 == R && $4 ~ /_us$/ { printf "%s %s  ", $4, $5 }' "$RAW")"
}

# conns MODE N REP: N connections served once and held idle, memory, then wrk -c100 beside them.
conns() {
    local m=$1 n=$2 r=$3 sc=conns$2 out pid i ok=0 slab0 slab1
    out=$WORKDIR/hold-$m-$n-$r.out
    slab0=$(awk '$1 == "Slab:" { print $2 }' /proc/meminfo)
    [[ -n $SRV_AGENT ]] && rec "$m" "$sc" "$r" agent_rss_base_kib "$(rss_anon "$SRV_AGENT")"
    spawn "$out" ip netns exec "$NS_B" "$PY" "$REPO/tests/apps/hold_conns.py" "$AGENT_IP" 8080 "$n" 150 1000
    pid=$SPAWNED_PID
    for ((i = 0; i < 800; i++)); do
        if grep -qs '^held' "$out"; then
            ok=1
            break
        fi
        pid_alive "$pid" || break
        sleep 0.2
    done
    rec "$m" "$sc" "$r" served "$(awk '$1 == "served" { print $2 }' "$out" | grep . || echo 0)"
    if ((ok == 0)); then
        note "$m $sc rep $r: not all $n connections accepted and served: $(tr '\n' ' ' <"$out" | cut -c1-300)"
        rec "$m" "$sc" "$r" failed 1
        stop_pid "$pid" TERM 10
        return 1
    fi
    log "$m $sc rep $r: $(tr '\n' ' ' <"$out")"
    sleep 1
    slab1=$(awk '$1 == "Slab:" { print $2 }' /proc/meminfo)
    [[ -n $SRV_AGENT ]] && rec "$m" "$sc" "$r" agent_rss_kib "$(rss_anon "$SRV_AGENT")"
    rec "$m" "$sc" "$r" nginx_rss_kib "$(rss_anon "$SRV_NGINX")"
    rec "$m" "$sc" "$r" slab_delta_kib $((slab1 - slab0))
    wrkcpu "$m" "$sc" "$r" || true
    stop_pid "$pid" TERM 20
    sleep 2 # let the closes drain
}

# want SCENARIO: whether SCENARIOS names it (bulk, wrk100, close100, redis, loss; CONNS is apart).
want() { [[ " $SCENARIOS " == *" $1 "* ]]; }

# ---- the run ---------------------------------------------------------------------------------
log "modes: ${modes[*]}; REPS=$REPS DURATION=${DURATION}s CONNS='$CONNS' LOSS_PCT=$LOSS_PCT; offloads A: ${OFFL[A]}, B: ${OFFL[B]}"
[[ $HAVE_NFT == 1 ]] || note "nft not installed: bulk_loss skipped (apt-get install nftables)"
nm=${#modes[@]}
for ((r = 1; r <= REPS; r++)); do
    for ((k = 0; k < nm; k++)); do
        m=${modes[$(((k + r - 1) % nm))]} # rotate the order each repetition
        time_left || { note "TIME_LIMIT ${TIME_LIMIT}s reached before $m rep $r"; break 2; }
        log "=== rep $r/$REPS: $m ==="
        if server_up "$m" std; then
            if [[ $m != *-bf2 ]] && want bulk; then
                # BULK_TRIES downloads, each a sample (one 100 MiB download lasts about 0.07 s
                # here: a single one is at the mercy of the machine's other work).
                bulk "$m" bulk "$r" 60 warm || true
                for ((t = 2; t <= BULK_TRIES; t++)); do bulk "$m" bulk "$r" 60 || break; done
            fi
            want wrk100 && { wrkcpu "$m" wrk100 "$r" || true; }
            want close100 && { wrkcpu "$m" close100 "$r" || true; }
            [[ $REDIS == 1 ]] && want redis && { rediscpu "$m" "$r" || true; }
            if [[ $HAVE_NFT == 1 && $m != *-bf2 && $m != agent-kernel ]] && want loss; then
                # 1) the veth defaults (dpdk cannot run with them on)
                if [[ $m != dpdk ]]; then
                    loss on
                    lossbulk "$m" bulk_loss "$r"
                    loss off
                fi
                # kernel: the namespace default congestion control is $KERNEL_CC; again with CUBIC
                # (what snstack-tcp runs) when that differs
                if [[ $m == kernel && $KERNEL_CC != cubic ]]; then
                    # (a non-initial namespace may not change its default: a route metric instead)
                    ip -n "$NS_A" route replace "$SUBNET.0/24" dev "$VETH_A" proto kernel scope link \
                        src "$AGENT_IP" congctl cubic
                    loss on
                    lossbulk "$m" bulk_loss_cubic "$r"
                    loss off
                    ip -n "$NS_A" route replace "$SUBNET.0/24" dev "$VETH_A" proto kernel scope link src "$AGENT_IP"
                fi
                # 2) offloads off on both ends: the rule drops MTU-sized segments (the af_packet
                # device follows the interface's offloads within a second: wait for it).
                if [[ -n $LOSS_OFF_MODES && " $LOSS_OFF_MODES " == *" $m "* ]]; then
                    [[ $m != dpdk ]] && offloads off
                    [[ $m == native ]] && sleep 1.5
                    loss on
                    lossbulk "$m" bulk_loss_off "$r"
                    if [[ $m == kernel && $KERNEL_CC != cubic ]]; then
                        ip -n "$NS_A" route replace "$SUBNET.0/24" dev "$VETH_A" proto kernel \
                            scope link src "$AGENT_IP" congctl cubic
                        lossbulk "$m" bulk_loss_off_cubic "$r"
                        ip -n "$NS_A" route replace "$SUBNET.0/24" dev "$VETH_A" proto kernel \
                            scope link src "$AGENT_IP"
                    fi
                    loss off
                    [[ $m != dpdk ]] && offloads on
                fi
            fi
        else
            note "$m rep $r: the server did not answer $BASE/hello (std block)"
            rec "$m" bulk "$r" failed 1
        fi
        server_down "$m"
        [[ -n $CONNS && $m != dpdk && $m != *-bf2 ]] || continue
        time_left || { note "TIME_LIMIT ${TIME_LIMIT}s reached before $m conns rep $r"; break 2; }
        if server_up "$m" 10k; then
            [[ -n $SRV_AGENT ]] && rec "$m" conns_idle "$r" agent_rss_kib "$(rss_anon "$SRV_AGENT")"
            for n in $CONNS; do
                time_left || break
                conns "$m" "$n" "$r" || true
            done
        else
            note "$m rep $r: the server did not answer $BASE/hello (10k block)"
        fi
        server_down "$m"
    done
done

# Agent warnings/errors seen during the run (evidence for the report).
if [[ -f $WORKDIR/agentlogs ]]; then
    while read -r m cfg lg; do
        [[ -s $lg ]] || continue
        sed 's/\x1b\[[0-9;]*m//g' "$lg" | grep -E 'WARN|ERROR|panic' | sort | uniq -c | sort -rn | head -5 |
            sed "s|^|$m ($cfg) agent log: |" >>"$NOTES" || true
    done <"$WORKDIR/agentlogs"
fi

mkdir -p "$(dirname "$OUT")"
CMD="${BENCH_ENGINES_COMMAND:-bash ci/bench-engines.sh} (REPS=$REPS DURATION=$DURATION CONNS=\"$CONNS\" MODES=\"${modes[*]}\" LOSS_PCT=$LOSS_PCT LOSS_TRIES=$LOSS_TRIES BULK_TRIES=$BULK_TRIES LOSS_OFF_MODES=\"$LOSS_OFF_MODES\")"
META=$(printf '%s\n' "command=$CMD" "commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo ?)" \
    "start=$T_START" "end=$(date -u '+%Y-%m-%d %H:%M UTC')" "wall_s=$SECONDS" \
    "machine=$(nproc) vCPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r)" \
    "load=$LOAD0 at start, $(cut -d' ' -f1-3 /proc/loadavg) at end" "offloads=A: ${OFFL[A]}; B: ${OFFL[B]}" \
    "conn_agent=--max-sockets $CONN_MAX_SOCKETS --rx-ring $CONN_RING --tx-ring $CONN_RING" \
    "std_agent=--max-sockets $STD_MAX_SOCKETS (rx/tx ring 64 KiB default)" "loss_pct=$LOSS_PCT" \
    "kernel_cc=$KERNEL_CC" "nofile=$NOFILE" "ngx_conns=$NGX_CONNS" "conn_region_mib=$((CONN_MAX_SOCKETS * 2 * CONN_RING / 1048576))" "duration=$DURATION" "reps=$REPS" "modes=${modes[*]}")
"$PY" - "$RAW" "$NOTES" "$OUT" <<PYEOF
import json, statistics, sys
raw, notes, out = sys.argv[1:4]
meta = dict(l.split("=", 1) for l in """$META""".splitlines() if "=" in l)
modes = meta["modes"].split()
data = {}
for line in open(raw):
    m, sc, r, k, v = line.rstrip("\n").split("\t")
    data.setdefault((sc, k, m), []).append(float(v))
notes_l = [l.rstrip("\n") for l in open(notes) if l.strip()]

NAMES = {"kernel": "kernel TCP", "agent-kernel": "Linux TCP in the agent (--backend kernel)", "native": "snstack-tcp (native)", "smoltcp": "smoltcp 0.12",
         "lwip": "lwIP 2.1.3 (Debian)", "dpdk": "snstack-tcp over DPDK"}
for m in list(modes):
    if m.endswith("-bf2"):
        NAMES[m] = NAMES.get(m[:-4], m[:-4]) + " with --pcie bf2"

def agg(sc, k, m):
    v = data.get((sc, k, m))
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v), "values": v}

def fmt(x, d=1):
    return "-" if x is None else f"{x:,.{d}f}"

def cell(sc, k, m, d=1, ratio=True):
    a = agg(sc, k, m)
    fails = len(data.get((sc, "failed", m), []))
    if a is None:
        return f"fail x{fails}" if fails else "-"
    s = f"{fmt(a['median'], d)}"
    if a["n"] > 1:
        s += f" [{fmt(a['min'], d)}-{fmt(a['max'], d)}]"
    kk = agg(sc, k, "kernel")
    if ratio and m != "kernel" and kk and kk["median"]:
        s += f" ({a['median'] / kk['median']:.2f}x)"
    if fails:
        s += f", {fails} failed"
    return s

scen = []
conns = [int(c) for c in sorted({sc[5:] for (sc, _, _) in data if sc.startswith("conns") and sc[5:].isdigit()}, key=int)]
rows = [("bulk", "mbps", "(a) bulk 100 MiB, MB/s", 1, True),
        ("bulk_loss", "mbps", f"(b) bulk at {meta['loss_pct']}% loss each way, MB/s (veth offloads on; kernel: {meta['kernel_cc']})", 1, True),
        ("bulk_loss_cubic", "mbps", f"(b) the same, kernel with CUBIC", 1, True),
        ("bulk_loss_off", "mbps", f"(b) bulk at {meta['loss_pct']}% loss, veth offloads off (per-segment loss), MB/s", 1, True),
        ("bulk_loss_off_cubic", "mbps", f"(b) the same, kernel with CUBIC", 1, True),
        ("wrk100", "rps", "(c) wrk -c100 req/s", 0, True),
        ("wrk100", "p50_ms", "(c) wrk -c100 p50 ms", 2, True),
        ("wrk100", "p99_ms", "(c) wrk -c100 p99 ms", 2, True),
        ("wrk100", "agent_us", "(c) agent CPU us/req", 2, False),
        ("wrk100", "nginx_us", "(c) nginx (host) CPU us/req", 2, True),
        ("wrk100", "napi_srv_us", "(c) server-side NAPI thread us/req (kernel: its TCP receive path; agent modes: frames into the device ring)", 2, True),
        ("wrk100", "server_us", "(c) server total us/req (agent + nginx + server NAPI)", 2, True),
        ("wrk100", "napi_cli_us", "(c) client-side NAPI thread us/req", 2, True),
        ("wrk100", "mach_sys_us", "(c) machine sys+irq+softirq us/req", 2, True),
        ("wrk100", "mach_busy_us", "(c) machine busy (all CPU) us/req", 2, True),
        ("wrk100", "wrk_us", "(c) wrk (client) CPU us/req", 2, True),
        ("close100", "rps", "(e) Connection: close, wrk -c100: connections/s (= req/s)", 0, True),
        ("close100", "p50_ms", "(e) Connection: close p50 ms", 2, True),
        ("close100", "p99_ms", "(e) Connection: close p99 ms", 2, True),
        ("close100", "agent_us", "(e) Connection: close agent CPU us/req", 2, False),
        ("close100", "nginx_us", "(e) Connection: close nginx (host) CPU us/req", 2, True),
        ("close100", "server_us", "(e) Connection: close server total us/req", 2, True),
        ("close100", "wrk_errors", "(e) Connection: close wrk socket errors", 0, False),
        ("redis", "rps", "(f) redis GET -P 1 -c 50 req/s", 0, True),
        ("redis", "p50_ms", "(f) redis GET p50 ms", 3, True),
        ("redis", "p99_ms", "(f) redis GET p99 ms", 3, True),
        ("redis", "agent_us", "(f) redis GET agent CPU us/req", 2, False),
        ("redis", "app_us", "(f) redis GET redis-server (host) CPU us/req", 2, True),
        ("redis", "server_us", "(f) redis GET server total us/req", 2, True)]
for n in conns:
    sc = f"conns{n}"
    rows += [(sc, "served", f"(d) {n} conns: served (of {n})", 0, False),
             (sc, "rps", f"(d) {n} idle + wrk -c100 req/s", 0, True),
             (sc, "agent_us", f"(d) {n} idle: agent CPU us/req", 2, False),
             (sc, "nginx_us", f"(d) {n} idle: nginx CPU us/req", 2, True),
             (sc, "server_us", f"(d) {n} idle: server total us/req", 2, True),
             (sc, "mach_sys_us", f"(d) {n} idle: machine sys+irq+softirq us/req", 2, True),
             (sc, "agent_rss_kib", f"(d) {n} idle: agent RssAnon MiB", 1, False),
             (sc, "nginx_rss_kib", f"(d) {n} idle: nginx RssAnon MiB", 1, False),
             (sc, "slab_delta_kib", f"(d) {n} idle: machine Slab delta MiB", 1, False)]
for (sc, k, m), v in list(data.items()):
    if k.endswith("_kib"):
        data[(sc, k, m)] = [x / 1024 for x in v]

L = []
L.append("# Engines side by side over a veth pair: " + ", ".join(NAMES.get(m, m) for m in modes))
L.append("")
L.append(f"Command: \`{meta['command']}\`, commit \`{meta['commit']}\`, {meta['start']} - {meta['end']} ({meta['wall_s']} s).")
L.append(f"Machine: {meta['machine']}; load average {meta['load']}. Everything (client, nginx, agent, veth softirq) shares the vCPUs, unpinned; the machine is shared with other work, so read medians and ratios, not absolute figures.")
L.append(f"Repetitions: {meta['reps']}, interleaved (rep r runs every mode, the order rotated by one each rep). Cells: median [min-max] (ratio of medians to kernel). wrk runs {meta['duration']} s after a 1 s warm-up.")
L.append(f"Link: veth between namespaces A (server) and B (client, kernel TCP: curl, wrk, tests/apps/hold_conns.py), MTU 1500, offloads at the veth defaults ({meta['offloads']}) except for dpdk (net_af_packet needs them off, so its (a)/(c) figures run without TSO) and the third (b) row.")
L.append("")
L.append("| scenario | " + " | ".join({"dpdk": "dpdk-native"}.get(m, m) for m in modes) + " |")
L.append("|---|" + "---:|" * len(modes))
for sc, k, title, d, ratio in rows:
    if not any((sc, k, m) in data or (sc, "failed", m) in data for m in modes):
        continue
    L.append(f"| {title} | " + " | ".join(cell(sc, k, m, d, ratio) for m in modes) + " |")
L.append("")
# Derived figures against the targets.
L.append("## Against the targets")
L.append("")
def med(sc, k, m):
    a = agg(sc, k, m)
    return None if a is None else a["median"]
for m in [x for x in modes if x != "kernel"]:
    for m2, sc2 in (("bulk_loss_off", "bulk_loss_off_cubic"),):
        b, bk = med(m2, "mbps", m), med(sc2, "mbps", "kernel")
        if b is not None and bk and m != "dpdk":
            L.append(f"- {m}: bulk at {meta['loss_pct']}% loss of segments (offloads off) {b:.1f} MB/s = {b / bk:.2f}x kernel (CUBIC) (target >= 0.5x): {'met' if b / bk >= 0.5 else 'NOT met'}")
        bd = med(m2, "mbps", "kernel")
        if b is not None and bd and m != "dpdk" and meta['kernel_cc'] != "cubic":
            L.append(f"- {m}: the same against the kernel on {meta['kernel_cc']}: {b / bd:.2f}x: {'met' if b / bd >= 0.5 else 'NOT met'}")
    for sc, what in (("bulk_loss", f"kernel ({meta['kernel_cc']})"), ("bulk_loss_cubic", "kernel (CUBIC)")):
        ks = "bulk_loss_off" if m == "dpdk" else "bulk_loss"
        b, bk = med(ks, "mbps", m), med(ks if m == "dpdk" and sc == "bulk_loss" else sc, "mbps", "kernel")
        if b is not None and bk:
            L.append(f"- {m}: bulk at {meta['loss_pct']}% loss {b:.1f} MB/s = {b / bk:.2f}x {what}{' (both with offloads off)' if m == 'dpdk' and sc == 'bulk_loss' else ''} (target >= 0.5x): {'met' if b / bk >= 0.5 else 'NOT met'}")
        if m == "dpdk":
            break
    a = med("wrk100", "agent_us", m)
    if a is not None:
        ks = med('wrk100', 'server_us', 'kernel')
        kn = f" = {a / ks:.2f}x" if ks else ""
        L.append(f"- {m}: agent CPU per request (wrk -c100) {a:.2f} us (target <= 2 us for native): {'met' if a <= 2 else 'NOT met'}; the kernel's whole server-side cost per request (nginx + its NAPI thread) {fmt(ks, 2)} us{kn}")
        h = med('wrk100', 'nginx_us', m)
        if h is not None and ks:
            L.append(f"- {m}: host (nginx) CPU per request {h:.2f} us = {h / ks:.2f}x the kernel's server-side cost (target <= 0.35x): {'met' if h / ks <= 0.35 else 'NOT met'}")
    if conns:
        lo, hi = f"conns{conns[0]}", f"conns{conns[-1]}"
        a0, a1 = med(lo, "agent_us", m), med(hi, "agent_us", m)
        if a0 and a1 is not None and lo != hi:
            L.append(f"- {m}: agent CPU per request with {conns[-1]} vs {conns[0]} connections: {a1:.2f} / {a0:.2f} us = {a1 / a0:.2f}x (target: within 20 %): {'met' if abs(a1 / a0 - 1) <= 0.2 else 'NOT met'}")
        rs = med(hi, "agent_rss_kib", m)
        if rs is not None:
            L.append(f"- {m}: agent RssAnon with {conns[-1]} idle established connections {rs:.1f} MiB (target <= 256 MiB at 10k): {'met' if rs <= 256 else 'NOT met'}; idle agent before any connection {fmt(med('conns_idle', 'agent_rss_kib', m), 1)} MiB")
        for n in conns:
            s = agg(f"conns{n}", "served", m)
            f = len(data.get((f"conns{n}", "failed", m), []))
            if s is not None:
                L.append(f"- {m}: {n} connections: served {int(s['min'])}-{int(s['max'])} of {n} over {s['n']} reps{', ' + str(f) + ' rep(s) failed' if f else ''}")
L.append("")
# The comparison of issue 14: one row per engine.
L.append("## Engines compared")
L.append("")
L.append("Medians of the runs above (ratio to kernel). Memory per idle connection: (agent RssAnon with N idle connections - the idle agent's) / N for the agent's engines; the machine's Slab delta / N for kernel TCP (its socket memory lives in the kernel). Maximum concurrent connections: the highest level of (d) served in full (the levels tried: " + (", ".join(str(n) for n in conns) or "none") + ").")
L.append("")
L.append("| engine | agent CPU us/req keepalive | close | redis GET | req/s keepalive | p50 / p99 ms keepalive | conns/s | bulk MB/s | bulk at loss MB/s | memory per idle conn KiB | max concurrent conns |")
L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
def ratio(x, k):
    return "" if x is None or not k else f" ({x / k:.2f}x)"
for m in modes:
    def g(sc, k):
        return med(sc, k, m)
    if m == "kernel":
        cpu = [g("wrk100", "server_us"), g("close100", "server_us"), g("redis", "server_us")]
    elif m == "agent-kernel":
        # Linux TCP in the agent: its receive path runs in the server side's NAPI thread.
        cpu = [None if g(sc, "agent_us") is None else g(sc, "agent_us") + (g(sc, "napi_srv_us") or 0)
               for sc in ("wrk100", "close100", "redis")]
    else:
        cpu = [g("wrk100", "agent_us"), g("close100", "agent_us"), g("redis", "agent_us")]
    kcpu = [med("wrk100", "server_us", "kernel"), med("close100", "server_us", "kernel"), med("redis", "server_us", "kernel")]
    mem = "-"
    if conns:
        hi = f"conns{conns[-1]}"
        if m == "kernel":
            sd = med(hi, "slab_delta_kib", m)
            mem = "-" if sd is None else f"{sd * 1024 / conns[-1]:.1f} (Slab)"
        elif m == "agent-kernel":
            a, b, sd = med(hi, "agent_rss_kib", m), med("conns_idle", "agent_rss_kib", m), med(hi, "slab_delta_kib", m)
            mem = "-" if None in (a, b, sd) else f"{((a - b) + sd) * 1024 / conns[-1]:.1f} (agent + Slab)"
        else:
            # The highest level with a figure (an engine may not hold the last one).
            b = med("conns_idle", "agent_rss_kib", m)
            for n in reversed(conns):
                a = med(f"conns{n}", "agent_rss_kib", m)
                if a is not None and b is not None:
                    mem = f"{(a - b) * 1024 / n:.1f}" + ("" if n == conns[-1] else f" (at {n})")
                    break
    full = [n for n in conns if (s := agg(f"conns{n}", "served", m)) and int(s["min"]) >= n]
    maxc = str(max(full)) if full else ("-" if not conns or m.endswith("-bf2") or m == "dpdk" else "below " + str(conns[0]))
    lossk = "bulk_loss_off" if m == "dpdk" else "bulk_loss"
    cells = [f"{fmt(c, 2)}{ratio(c, k)}" for c, k in zip(cpu, kcpu)]
    rps, krps = g("wrk100", "rps"), med("wrk100", "rps", "kernel")
    cps, kcps = g("close100", "rps"), med("close100", "rps", "kernel")
    bl, kbl = g("bulk", "mbps"), med("bulk", "mbps", "kernel")
    bll, kbll = g(lossk, "mbps"), med(lossk, "mbps", "kernel")
    L.append(f"| {NAMES.get(m, m)} | " + " | ".join(cells) + f" | {fmt(rps, 0)}{ratio(rps, krps)} | {fmt(g('wrk100', 'p50_ms'), 2)} / {fmt(g('wrk100', 'p99_ms'), 2)} | {fmt(cps, 0)}{ratio(cps, kcps)} | {fmt(bl, 0)}{ratio(bl, kbl)} | {fmt(bll, 1)}{ratio(bll, kbll)} | {mem} | {maxc} |")
L.append("")
L.append("For kernel TCP the CPU columns are its whole server-side cost (the application + its NAPI thread); for Linux TCP in the agent, the agent + the server side's NAPI thread (where that TCP's receive path runs); for the user-space engines, the agent's CPU alone (frames reach its ring through the NAPI thread, the NIC's DMA on real hardware; the application's CPU is in the rows above).")
L.append("")
# What each engine implements (docs/engines.md says where each fact comes from).
FEATS = ["SACK", "RACK-TLP", "congestion control", "window scaling", "timestamps", "TSO / checksum offload", "SYN cookies", "IPv6"]
HAS = {
    "kernel": ["yes", "yes", "CUBIC, BBR, ...", "yes", "yes", "yes", "yes", "yes"],
    "native": ["yes (RFC 6675 scoreboard)", "yes", "CUBIC, NewReno, BBR", "yes", "yes (PAWS)", "yes (TSO out, GRO'd/partial-checksum frames in)", "yes", "yes"],
    "smoltcp": ["negotiated, not used for recovery", "no", "CUBIC (smoltcp's: cuts the window on every duplicate ACK)", "yes", "yes", "no (MTU frames; checksums in software)", "no", "yes in smoltcp (IPv4 only as the agent configures it)"],
    "lwip": ["no (LWIP_TCP_SACK_OUT 0 as packaged)", "no", "NewReno-style fast retransmit/recovery", "negotiated with shift 1 (64 KiB windows)", "no (LWIP_TCP_TIMESTAMPS 0)", "no (MTU frames; checksums in software)", "no", "compiled in; the engine runs IPv4 only"],
}
shown = [m for m in modes if m in HAS]
if shown:
    L.append("### What each engine implements")
    L.append("")
    L.append("| feature | " + " | ".join(NAMES.get(m, m) for m in shown) + " |")
    L.append("|---|" + "---|" * len(shown))
    for i, f in enumerate(FEATS):
        L.append(f"| {f} | " + " | ".join(HAS[m][i] for m in shown) + " |")
    L.append("")
# Plots (matplotlib from Debian: python3-matplotlib).
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4.5))
    scen = [("wrk100", "keepalive"), ("close100", "Connection: close"), ("redis", "redis GET -P 1")]
    w = 0.8 / max(1, len(modes))
    for j, m in enumerate(modes):
        key = "server_us" if m == "kernel" else "agent_us"
        ys = [med(sc, key, m) or 0 for sc, _ in scen]
        ax.bar([i + j * w for i in range(len(scen))], ys, w, label=NAMES.get(m, m) + (" (server side)" if m == "kernel" else " (agent)"))
    ax.set_xticks([i + w * (len(modes) - 1) / 2 for i in range(len(scen))], [t for _, t in scen])
    ax.set_ylabel("CPU us per request")
    ax.set_title("Server-side CPU per request: kernel (app + NAPI) vs each engine's agent")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out + "-cpu.png", dpi=110)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    scen = [("bulk", "lossless"), ("bulk_loss", f"{meta['loss_pct']}% loss, offloads on"), ("bulk_loss_off", f"{meta['loss_pct']}% loss, offloads off")]
    bm = [m for m in modes if not m.endswith("-bf2")]
    w = 0.8 / max(1, len(bm))
    for j, m in enumerate(bm):
        ys = [med(sc, "mbps", m) or 0 for sc, _ in scen]
        ax.bar([i + j * w for i in range(len(scen))], ys, w, label=NAMES.get(m, m))
    ax.set_xticks([i + w * (len(bm) - 1) / 2 for i in range(len(scen))], [t for _, t in scen])
    ax.set_ylabel("MB/s, one connection, 100 MiB")
    ax.set_yscale("log")
    ax.set_title("Bulk throughput over the veth, lossless and under random loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out + "-loss.png", dpi=110)
    import os
    L.append(f"Plots: [{os.path.basename(out)}-cpu.png]({os.path.basename(out)}-cpu.png) (CPU per request), [{os.path.basename(out)}-loss.png]({os.path.basename(out)}-loss.png) (throughput under loss).")
    L.append("")
except ImportError:
    L.append("Plots: skipped (python3-matplotlib not installed; ci/install-deps.sh installs it).")
    L.append("")
L.append("## Method")
L.append("")
L.append(f"- Modes: \`kernel\` = nginx on the kernel stack of A (the IP on the veth end); \`agent-kernel\` = nginx preloaded, its sockets in \`snstack-agent --backend kernel\` running in namespace A (Linux TCP inside the agent, the product's default; no loss rows: the same TCP as kernel); \`native\` / \`smoltcp\` / \`lwip\` = nginx preloaded with libsnstack.so, every TCP socket in \`snstack-agent --backend afpacket --engine native|smoltcp|lwip\` (the agent owns the IP, log level warn); \`dpdk-native\` = \`--backend dpdk\` (net_af_packet vdev, EAL --no-huge, polled on a 50 us timer). nginx: 1 process, \`return 200\` keepalive, static files with \`sendfile off\`.")
L.append(f"- Agent for (a)-(c): {meta['std_agent']}. Agent for (d): {meta['conn_agent']} (channel region per process = max_sockets x (rx_ring + tx_ring) = {int(meta['conn_region_mib'])} MiB here, shared memory, not in RssAnon); nginx \`worker_connections\` {meta['ngx_conns']} (nginx closes idle keepalive connections once fewer than 1/16 of them are free: with 10,240 it served only 9,584 of 10,000), \`worker_rlimit_nofile\` and \`ulimit -n\` {meta['nofile']} in that block (kernel mode too).")
L.append(f"- (e) as (c) with \`-H 'Connection: close'\`: nginx closes each connection after its response, wrk opens a new one per request (so requests/s is connections/s; the server side holds the TIME-WAIT). (f) redis-server {'(preloaded through the agent; on the kernel stack of A for kernel)'} with no persistence, \`redis-benchmark -t get -n DURATION x 25000 -c 50 -P 1 -d 64 --csv\` from B after a warm-up; CPU per request as in (c) (the application's column is redis-server's). \`M-bf2\` modes: the same agent with \`--pcie bf2\` (500 ns per channel crossing, 25 GB/s), (c), (e), (f) only.")
L.append("- (a) \`curl\` of a 100 MiB static file after one warm-up download, ${BULK_TRIES} downloads per rep (each a sample); MB/s = bytes / curl's time_total / 10^6.")
L.append(f"- (b) the same download with nftables in namespace B: table inet with \`iifname <veth> numgen random mod 100 < {meta['loss_pct']} drop\` on the input hook and the same with \`oifname\` on the output hook, identical for every mode, curl limit {'${LOSS_MAXTIME}'} s, {'${LOSS_TRIES}'} downloads per row and rep (each a sample: the rate under random loss varies a lot from one download to the next; a mode stops trying after a failed one). First row: veth offloads at their defaults (as in (a)): the hooks see what the stacks send, so a dropped 'packet' from kernel TCP or the native engine can be a TSO super-frame of up to 64 KB (the same rule, not the same segment loss rate), while smoltcp sends MTU-sized frames. Kernel congestion control: the namespace default ({meta['kernel_cc']}), and again with CUBIC (snstack-tcp's algorithm; \`ip route ... congctl cubic\` on the subnet route of A, since a non-initial namespace may not change its default) in the second row. Third row: offloads (tx checksum, TSO, GSO, GRO) off on both ends, so the rule drops 1 % of MTU-sized segments (the kernel again with CUBIC in the fourth row; the af_packet device follows the interface's offloads within a second); dpdk only runs there.")
L.append("- (c) CPU per request = delta over the wrk run / wrk's request count: agent and nginx utime+stime from /proc/PID/stat (the agent's includes any idle spin it does; it stops spinning while its CPU is contended, docs/agent-loop.md); wrk = its reaped children's cutime+cstime in a wrapper shell; machine from /proc/stat: sys+irq+softirq and busy (user+nice+system+irq+softirq+steal). The (c) and (d) wrk runs use threaded NAPI on both veth ends (GRO on, TSO off, restored afterwards; docs/agent-loop.md): on a veth the sending syscall otherwise runs the receiver's whole stack in softirq, charging a server with its client's TCP receive work and the other way round. So each side's receive processing runs in its own kernel thread: the server side's (napi/<veth A>) is kernel TCP's receive path in kernel mode and the delivery of frames into the af_packet ring (the NIC's DMA on real hardware) in agent modes. The kernel's server-side cost per request is nginx + that thread; the agent's is its own CPU, with nginx the host's. The machine figures hold everything, client included. Any other work on the machine during the run lands in the machine figures too.")
L.append(f"- (d) per level N: tests/apps/hold_conns.py opens N connections (1,000 connects in flight at a time), sends one GET /hello on each and reads the 200, then holds all N open and idle (nginx keepalive_timeout 65 s) while the agent's RssAnon (/proc/PID/status, anonymous private memory: excludes the shared channel regions) and the machine's Slab delta are read, and while \`wrk -t2 -c100\` runs {meta['duration']} s beside them (CPU per request as in (c)). Then the holder is stopped (SIGTERM: it closes its sockets). 'served' counts connections that were accepted and answered 200. The levels run one after the other on one server per mode and rep.")
L.append("")
L.append("## Notes, failures and agent log lines")
L.append("")
L += [f"- {n}" for n in notes_l] or ["- none"]
open(out + ".md", "w").write("\n".join(L) + "\n")
summary = {"meta": meta, "notes": notes_l,
           "results": {sc: {k: {m: agg(sc, k, m) for m in modes if agg(sc, k, m)} for (s2, k, _) in data if s2 == sc}
                       for sc in sorted({s for (s, _, _) in data})},
           "raw": [l.rstrip("\n").split("\t") for l in open(raw)]}
json.dump(summary, open(out + ".json", "w"), indent=1)
PYEOF
cat "$OUT.md"
log "wrote ${OUT#"$REPO"/}.md and .json"
