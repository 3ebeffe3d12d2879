#!/usr/bin/env bash
# Offload rules (README.md, "Offload rules"): each kind of rule keeps the sockets it matches on
# kernel sockets and leaves the others offloaded.
#  * server, local port and local address (from SNSTACK_RULES_FILE, with a comment and a malformed
#    line): one preloaded nginx listens on 127.0.0.1:P1, 127.0.0.1:P2 and 127.0.0.2:P1; the rules
#    keep *:P2 and 127.0.0.2:* on the kernel. `ss` shows nginx owning those two listeners and the
#    agent owning 127.0.0.1:P1; requests to the kernel listeners move no agent byte counter, to the
#    offloaded one they do; the malformed rule gives exactly one stderr line naming it.
#  * client, remote port and remote address (SNSTACK_RULES): a preloaded Python client (TCP_NODELAY
#    and SO_RCVBUF set before connect; once through an epoll set registered before connect) is
#    the kernel's owner of its connection when a rule matches (options carried over: nodelay=1,
#    rcvbuf doubled) and the agent's otherwise; byte counters still / growing accordingly. A
#    client bound to a port a server rule names is a kernel socket from its bind on.
#  * program: `kernel * cur?` keeps a preloaded curl off the agent entirely (not one channel
#    operation), `kernel * wget` does not; rules are read again by each image (`sh -c 'curl; python'`).
#  * SNSTACK_OFFLOAD=0 wins: no rule is read (no line for a malformed one).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd curl ss
[[ -x $NGINX_BIN ]] || fail "nginx not installed (run: ci/install-deps.sh)"
CLIENT=$REPO/tests/apps/rules_client.py

ngx=$WORKDIR/nginx
p1=$(free_port)
p2=$(free_port)
while [[ $p2 == "$p1" ]]; do p2=$(free_port); done
nginx_conf "$ngx" "$p1" "$WORKDIR/www"
sed -i "s|listen 127.0.0.1:$p1;|listen 127.0.0.1:$p1;\n        listen 127.0.0.1:$p2;\n        listen 127.0.0.2:$p1;|" \
    "$ngx/nginx.conf"
grep -q "listen 127.0.0.2:$p1;" "$ngx/nginx.conf" || fail "nginx.conf not rewritten"

rules=$WORKDIR/rules.conf
cat >"$rules" <<RULES
# keep one port and one address on the kernel (a database, say); offload the rest
kernel tcp_server *:$p2
kernel tcp_srv *:1          # malformed: reported once, ignored
kernel tcp_server 127.0.0.2:*
offload *
RULES

start_agent
bytes() { echo $(($(agent_stat h2n_bytes) + $(agent_stat n2h_bytes))); }

# ---------------------------------------------------------------- server rules
mapfile -t cmd < <(nginx_args "$ngx")
spawn_preload "$WORKDIR/nginx.out" SNSTACK_RULES_FILE="$rules" "${cmd[@]}"
npid=$SPAWNED_PID
wait_port "$p1" "$npid"
wait_port "$p2" "$npid"
lib_loaded "$npid" || fail "libsnstack.so is not mapped into nginx (pid $npid): test would be vacuous"
owner() { # ADDR PORT: the process owning that listener in the kernel
    ss -Htlnp "src $1 and sport = :$2" | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 \2/p'
}
o=$(owner 127.0.0.1 "$p2")
[[ $o == "nginx $npid" ]] || fail "127.0.0.1:$p2 (rule *:$p2) is not nginx's kernel listener: '$o'"
o=$(owner 127.0.0.2 "$p1")
[[ $o == "nginx $npid" ]] || fail "127.0.0.2:$p1 (rule 127.0.0.2:*) is not nginx's kernel listener: '$o'"
o=$(owner 127.0.0.1 "$p1")
[[ $o == snstack-agent* ]] || fail "127.0.0.1:$p1 (no rule) is not offloaded (owner '$o')"
log "listeners: 127.0.0.1:$p2 and 127.0.0.2:$p1 nginx's kernel sockets, 127.0.0.1:$p1 the agent's"

n=$(grep -c 'ignoring rule "kernel tcp_srv \*:1"' "$WORKDIR/nginx.out" || true)
[[ $n == 1 ]] || fail "malformed rule reported $n times (want 1): $(cat "$WORKDIR/nginx.out")"

get() { curl -sS --fail --max-time 10 "http://$1/hello" 2>&1; }
b0=$(bytes)
for a in "127.0.0.1:$p2" "127.0.0.2:$p1"; do
    for _ in 1 2 3; do
        body=$(get "$a") || fail "GET $a/hello: $body"
        [[ $body == hello ]] || fail "GET $a/hello returned '$body'"
    done
done
b1=$(bytes)
[[ $b1 == "$b0" ]] || fail "agent byte counters moved ($b0 -> $b1) for requests to kernel listeners"
body=$(get "127.0.0.1:$p1") || fail "GET 127.0.0.1:$p1/hello: $body"
[[ $body == hello ]] || fail "GET 127.0.0.1:$p1/hello returned '$body'"
b2=$(bytes)
((b2 > b1)) || fail "agent byte counters did not move ($b1 -> $b2) for the offloaded listener"
log "server rules: kernel listeners moved no agent byte, the offloaded one did ($b1 -> $b2)"

# ---------------------------------------------------------------- client rules
# client RULES HOST PORT [epoll]: run the preloaded client; sets OUT and DELTA (agent bytes).
client() {
    local rules=$1 before
    shift
    before=$(bytes)
    OUT=$(preload SNSTACK_RULES="$rules" "$PY" "$CLIENT" "$@" 2>&1) || fail "client $*: $OUT"
    DELTA=$(($(bytes) - before))
    log "client [$rules] $*: $OUT (agent bytes +$DELTA)"
}
want_kernel() {
    [[ $OUT == "owner=python3 nodelay=1 rcvbuf=200000 body=hello" ]] ||
        fail "client to $1 should be a kernel socket with its options: $OUT"
    [[ $DELTA == 0 ]] || fail "agent byte counters moved by $DELTA for a kernel client to $1"
}
want_offload() {
    [[ $OUT == "owner=snstack-agent nodelay=1 rcvbuf="*" body=hello" ]] ||
        fail "client to $1 should be offloaded: $OUT"
    ((DELTA > 0)) || fail "agent byte counters did not move for an offloaded client to $1"
}
# Remote port.
r="kernel tcp_client * *:* *:$p2"
client "$r" 127.0.0.1 "$p2"
want_kernel "127.0.0.1:$p2"
client "$r" 127.0.0.1 "$p2" epoll
want_kernel "127.0.0.1:$p2 (epoll before connect)"
client "$r" 127.0.0.2 "$p1"
want_offload "127.0.0.2:$p1"
# A socket bound where a server rule keeps sockets on the kernel stays there when it connects.
p3=$(free_port)
client "kernel tcp_server 127.0.0.1:$p3" 127.0.0.1 "$p2" "bind=$p3"
want_kernel "127.0.0.1:$p2 from 127.0.0.1:$p3"
# Remote address.
r="kernel tcp_client * *:* 127.0.0.2/32:*"
client "$r" 127.0.0.2 "$p1" epoll
want_kernel "127.0.0.2:$p1 (epoll before connect)"
client "$r" 127.0.0.1 "$p2"
want_offload "127.0.0.1:$p2"

# ---------------------------------------------------------------- program rules
ops() { agent_stat h2n_ops; }
o0=$(ops)
body=$(preload SNSTACK_RULES="kernel * cur?" curl -sS --fail --max-time 10 "http://127.0.0.1:$p2/hello" 2>&1) ||
    fail "curl under a program rule: $body"
[[ $body == hello ]] || fail "curl under a program rule returned '$body'"
o1=$(ops)
[[ $o1 == "$o0" ]] || fail "curl kept on the kernel by 'kernel * cur?' still used the agent (h2n_ops $o0 -> $o1)"
body=$(preload SNSTACK_RULES="kernel * wget" curl -sS --fail --max-time 10 "http://127.0.0.1:$p2/hello" 2>&1) ||
    fail "curl under another program's rule: $body"
o2=$(ops)
((o2 > o1)) || fail "curl not matched by 'kernel * wget' did not use the agent (h2n_ops $o1 -> $o2)"
log "program rule: curl on the kernel (h2n_ops still), not when the rule names wget ($o1 -> $o2)"
# Each image reads the rules: sh's child curl stays on the kernel, the python after it does not.
out=$(preload SNSTACK_RULES="kernel * curl" sh -c \
    "curl -sS --fail --max-time 10 http://127.0.0.1:$p2/hello && '$PY' '$CLIENT' 127.0.0.2 $p1" 2>&1) ||
    fail "sh -c 'curl; python': $out"
[[ $out == "hello"$'\n'"owner=snstack-agent nodelay=1 rcvbuf="*" body=hello" ]] ||
    fail "sh -c 'curl; python' under 'kernel * curl': $out"

# ---------------------------------------------------------------- SNSTACK_OFFLOAD=0 wins
out=$(preload SNSTACK_OFFLOAD=0 SNSTACK_RULES="kernel tcp_srv *:1" curl -sS --fail --max-time 10 \
    "http://127.0.0.1:$p2/hello" 2>&1) || fail "curl with SNSTACK_OFFLOAD=0: $out"
[[ $out == hello ]] || fail "SNSTACK_OFFLOAD=0 still read the rules: '$out'"

pid_alive "$npid" || fail "nginx died"
errs=$(nginx_errors "$ngx")
[[ -z $errs ]] || fail "nginx error log: $errs"
stop_pid "$npid"
stop_agent
echo "PASS: $TEST_NAME"
