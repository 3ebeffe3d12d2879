#!/usr/bin/env bash
# The lwIP engine (--engine lwip: Debian's liblwip 2.1.3 as packaged, agent built with
# `--features lwip`) on the af_packet device, over the veth fixture with default offloads. From
# the peer namespace: unmodified curl and wrk against a preloaded nginx (zero errors, no timing
# assertion), 100 MB intact (sha256) downloaded from nginx and 100 MB downloaded by a preloaded
# curl from a kernel server (the engine receiving), 1,000 concurrent connections (Debian builds
# lwIP with MEMP_MEM_MALLOC, so MEMP_NUM_TCP_PCB=5 is no limit: the test shows it), a listener
# whose accept queue is full dropping SYNs without a reset (the client's connect still
# completes once the application accepts), and 10 MB over a lossy link (1% loss each way,
# injected by the agent's device). Skips without root, without liblwip-dev, or when the agent
# was built without the feature (ci/test.sh builds it when pkg-config finds lwip).
# LWIP_BACKEND=xdp|dpdk runs the same checks on the AF_XDP or DPDK device (the engine sits on
# the same Device seam); the default is af_packet.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/userstack.sh
source "$REPO/tests/userstack.sh"
require_snstack
[[ -x $NGINX_BIN ]] || fail "nginx not installed (run: ci/install-deps.sh)"
pkg-config --exists lwip 2>/dev/null || skip "lwIP not installed (apt-get install liblwip-dev pkg-config)"
probe=$("$AGENT_BIN" --socket "$WORKDIR/probe.sock" --backend afpacket --engine lwip --iface snsnoiface0 --ip 10.0.0.2/24 2>&1 || true)
if grep -q "built without lwIP support" <<<"$probe"; then
    skip "$AGENT_BIN was built without lwIP (cargo build --release -p nic-agent --features lwip)"
fi
require_cmd curl wrk sha256sum "$PY"
backend=${LWIP_BACKEND:-afpacket}
case $backend in
afpacket) ;;
xdp)
    probe=$("$AGENT_BIN" --socket "$WORKDIR/probe.sock" --backend xdp --iface snsnoiface0 --ip 10.0.0.2/24 2>&1 || true)
    grep -q "built without AF_XDP support" <<<"$probe" && skip "$AGENT_BIN was built without AF_XDP"
    ;;
dpdk)
    pkg-config --exists libdpdk 2>/dev/null || skip "DPDK not installed"
    probe=$("$AGENT_BIN" --socket "$WORKDIR/probe.sock" --backend dpdk --iface snsnoiface0 --ip 10.0.0.2/24 2>&1 || true)
    grep -q "built without DPDK support" <<<"$probe" && skip "$AGENT_BIN was built without DPDK (--features dpdk,lwip)"
    ;;
*) fail "LWIP_BACKEND=$backend: afpacket, xdp or dpdk" ;;
esac
# lwIP here owns one IPv4 address only.
USERSTACK_V6=0
userstack_probe
userstack_up
# DPDK's net_af_packet reads GSO super-frames truncated (as test 46): the peer segments itself.
[[ $backend == dpdk ]] && ip netns exec "$NS_B" ethtool -K "$VETH_B" tso off gso off >/dev/null 2>&1
log "device: $backend"

www=$WORKDIR/www
mkdir -p "$www/files"
head -c $((100 * 1024 * 1024)) /dev/urandom >"$www/files/100m.bin"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$www/files/10m.bin"
userstack_agent "$backend" --iface "$VETH_A" --engine lwip --max-sockets 4096
grep -q 'engine: lwIP' "$AGENT_LOG" || fail "the agent did not start the lwIP engine: $(tail -5 "$AGENT_LOG")"
userstack_nginx "$WORKDIR/ngx" 8080 "$www"
base=http://$AGENT_IP:8080
wait_http "$base/hello" 20
lib_loaded "$NGINX_PID" || fail "libsnstack.so is not mapped into nginx"

# ARP and ICMP echo come from lwIP (the kernel of the agent's namespace has no address).
in_b ping -c 2 -i 0.2 -W 2 "$AGENT_IP" >"$WORKDIR/ping.out" 2>&1 ||
    fail "ping $AGENT_IP: $(tail -3 "$WORKDIR/ping.out")"
log "ping: $(grep -o '[0-9]* received' "$WORKDIR/ping.out")"

out=$(in_b curl -sS --fail --max-time 10 "$base/hello" 2>&1) || fail "GET /hello: $out"
[[ $out == hello ]] || fail "GET /hello returned '$out'"
log "curl: GET /hello answered"

in_b timeout 30 wrk -t2 -c50 -d4s --timeout 5s --latency "$base/hello" >"$WORKDIR/wrk.out" 2>&1 ||
    fail "wrk exited non-zero: $(cat "$WORKDIR/wrk.out")"
grep -E 'Requests/sec|99%' "$WORKDIR/wrk.out" | sed 's/^/    /'
wrk_check "$WORKDIR/wrk.out"

# 100 MB from nginx through lwIP's send side (64 KiB send buffer and window as packaged).
t0=$(date +%s.%N)
in_b curl -sS --fail --max-time 240 -o "$WORKDIR/100m.out" "$base/files/100m.bin" 2>"$WORKDIR/curl.err" ||
    fail "GET 100m.bin: $(cat "$WORKDIR/curl.err")"
t1=$(date +%s.%N)
assert_same_file "$www/files/100m.bin" "$WORKDIR/100m.out" "100 MB download from nginx over lwIP"
rm -f "$WORKDIR/100m.out"
log "100 MB sent by lwIP intact in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f s (%.0f MB/s)", b - a, 100 / (b - a) }')"

# Outgoing: a preloaded curl through lwIP to a kernel server in the peer namespace, 100 MB
# received by lwIP (its 64 KiB window as packaged).
mkdir -p "$WORKDIR/pub"
cp "$www/files/100m.bin" "$www/files/10m.bin" "$WORKDIR/pub/"
spawn "$WORKDIR/http.out" ip netns exec "$NS_B" "$PY" -m http.server 8000 --bind "$PEER_IP" \
    --directory "$WORKDIR/pub"
for ((i = 0; i < 50; i++)); do
    in_b curl -s -o /dev/null --max-time 1 "http://$PEER_IP:8000/" && break
    sleep 0.2
done
t0=$(date +%s.%N)
preload curl -sS --fail --max-time 240 -o "$WORKDIR/in100m" "http://$PEER_IP:8000/100m.bin" \
    2>"$WORKDIR/curl2.err" || fail "outgoing curl: $(cat "$WORKDIR/curl2.err")"
t1=$(date +%s.%N)
assert_same_file "$www/files/100m.bin" "$WORKDIR/in100m" "100 MB received by lwIP (outgoing curl)"
rm -f "$WORKDIR/in100m"
log "outgoing curl: 100 MB received by lwIP intact in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f s", b - a }')"

# Concurrent connections: 1,000 at once to nginx (MEMP_NUM_TCP_PCB is 5 in lwIP's options, but
# Debian's MEMP_MEM_MALLOC=1 takes every pcb from malloc: no pool limit applies).
in_b timeout 120 "$PY" "$REPO/tests/apps/many_conns.py" "$AGENT_IP" 8080 1000 90 >"$WORKDIR/many.out" 2>&1 ||
    fail "1000 connections: $(cat "$WORKDIR/many.out")"
log "1000 connections: $(tr '\n' ' ' <"$WORKDIR/many.out")"

# Past the accept queue: a preloaded server that listens with backlog 16 and accepts nothing
# until 40 clients have tried. lwIP has no backlog of its own (TCP_LISTEN_BACKLOG=0); the
# engine drops SYNs to a full queue, as Linux does: no client sees a reset, every one connects
# once the server accepts, and the agent counts the dropped SYNs.
preload_spawn_backlog() {
    cat >"$WORKDIR/backlog.py" <<PYEOF
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("$AGENT_IP", 8090))
s.listen(16)
print("listening", flush=True)
time.sleep(float(sys.argv[1]))
conns = []
s.settimeout(30)
try:
    while len(conns) < 40:
        c, _ = s.accept()
        conns.append(c)
except socket.timeout:
    pass
print("accepted", len(conns), flush=True)
for c in conns:
    c.sendall(b"ok")
    c.close()
PYEOF
    spawn_preload "$WORKDIR/backlog.out" "$PY" "$WORKDIR/backlog.py" 4
}
preload_spawn_backlog
for ((i = 0; i < 50; i++)); do
    grep -q listening "$WORKDIR/backlog.out" 2>/dev/null && break
    sleep 0.1
done
syn0=$(agent_stat tcp_syn_dropped)
cat >"$WORKDIR/clients.py" <<PYEOF
import socket, sys
from concurrent.futures import ThreadPoolExecutor
def one(_):
    c = socket.create_connection(("$AGENT_IP", 8090), timeout=60)
    d = c.recv(2)
    c.close()
    return d
with ThreadPoolExecutor(40) as ex:
    res = list(ex.map(one, range(40)))
ok = sum(1 for r in res if r == b"ok")
print("ok", ok)
sys.exit(0 if ok == 40 else 1)
PYEOF
in_b timeout 90 "$PY" "$WORKDIR/clients.py" >"$WORKDIR/clients.out" 2>&1 ||
    fail "40 clients against a backlog of 16: $(tail -5 "$WORKDIR/clients.out")"
syn=$(($(agent_stat tcp_syn_dropped) - syn0))
((syn > 0)) || fail "no SYN was dropped although 40 clients met an accept queue of 16"
log "accept queue of 16, 40 clients: all served ($(cat "$WORKDIR/clients.out")), $syn SYNs dropped while the queue was full"

pid_alive "$NGINX_PID" || fail "nginx died"
err=$(nginx_errors "$WORKDIR/ngx")
[[ -z $err ]] || fail "nginx error log: $err"
agent_alive || fail "agent died"
grep -q 'callback panicked' "$AGENT_LOG" && fail "an lwIP callback panicked: $(grep 'callback panicked' "$AGENT_LOG")"
stop_pid "$NGINX_PID"
stop_agent

# 10 MB over a lossy link: 1% loss and 1% reordering each way, 4 ms more round trip, injected by
# the agent's device (this kernel has no sch_netem). lwIP has no SACK: a generous bound only.
userstack_agent "$backend" --iface "$VETH_A" --engine lwip --max-sockets 4096 \
    --inject-faults drop=10,reorder=10,delay_us=4000
userstack_nginx "$WORKDIR/ngx2" 8080 "$www"
wait_http "$base/hello" 20
t0=$(date +%s.%N)
in_b curl -sS --fail --max-time 150 -o "$WORKDIR/10m.out" "$base/files/10m.bin" 2>"$WORKDIR/curl3.err" ||
    fail "GET 10m.bin over a lossy link: $(cat "$WORKDIR/curl3.err")"
t1=$(date +%s.%N)
assert_same_file "$www/files/10m.bin" "$WORKDIR/10m.out" "10 MB over a lossy link"
log "lossy link (1% loss + 1% reordering each way, +4 ms): 10 MB intact in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f s", b - a }')"
agent_alive || fail "agent died on the lossy link"
stop_pid "$NGINX_PID"
stop_agent
echo "PASS: $TEST_NAME"
