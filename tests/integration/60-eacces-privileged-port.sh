#!/usr/bin/env bash
# The agent runs as root but must apply the caller's privileges: an unprivileged process binding a
# port below ip_unprivileged_port_start gets EACCES with and without snstack. Pass: as `nobody`, bind
# to 127.0.0.1:80 prints EACCES without preload, and EACCES with preload in strict mode (so a
# fallback to the kernel would print ENETDOWN instead), while the agent's h2n_ops grew by >= 2
# (socket + bind crossed the channel).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
start=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)
((start > 80)) || skip "net.ipv4.ip_unprivileged_port_start=$start: port 80 is not privileged here"
id nobody >/dev/null 2>&1 || skip "no user 'nobody'"
[[ $(id -u) == 0 ]] || skip "needs root to switch to nobody"
if command -v runuser >/dev/null; then
    as_nobody=(runuser -u nobody --)
elif command -v setpriv >/dev/null; then
    as_nobody=(setpriv --reuid=nobody --regid="$(id -gn nobody)" --clear-groups --)
else
    skip "neither runuser nor setpriv"
fi
[[ -x /usr/bin/python3 ]] || skip "/usr/bin/python3 missing"

lib=$PRELOAD
if ! "${as_nobody[@]}" test -r "$lib"; then
    mkdir -p "$WORKDIR/lib"
    chmod 0755 "$WORKDIR/lib"
    install -m 0755 "$PRELOAD" "$WORKDIR/lib/libsnstack.so"
    lib=$WORKDIR/lib/libsnstack.so
    log "nobody cannot read $PRELOAD; using a copy at $lib"
fi
"${as_nobody[@]}" test -r "$lib" || fail "nobody cannot read $lib"

script='
import errno, socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.bind(("127.0.0.1", 80))
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
'
out=$("${as_nobody[@]}" /usr/bin/python3 -c "$script" 2>&1) || fail "python as nobody failed: $out"
[[ $out == EACCES ]] || fail "kernel: bind(127.0.0.1:80) as nobody gave '$out', expected EACCES"
log "kernel: $out"

start_agent
chmod 0666 "$AGENT_SOCK"
"${as_nobody[@]}" test -w "$AGENT_SOCK" || fail "nobody cannot write $AGENT_SOCK"
ops0=$(agent_stat h2n_ops)
out=$("${as_nobody[@]}" env "LD_PRELOAD=$lib" "SNSTACK_AGENT=$AGENT_SOCK" SNSTACK_STRICT=1 \
    /usr/bin/python3 -c "$script" 2>"$WORKDIR/err") || fail "preloaded python failed: $out $(cat "$WORKDIR/err")"
[[ $out == EACCES ]] ||
    fail "snstack: bind(127.0.0.1:80) as nobody gave '$out', expected EACCES; stderr: $(cat "$WORKDIR/err")"
ops=$(agent_stat h2n_ops)
((ops >= ops0 + 2)) || fail "h2n_ops grew by $((ops - ops0)) (expected >= 2): the bind did not go through the agent"
log "snstack: $out, h2n_ops +$((ops - ops0))"
agent_alive || fail "agent died"
stop_agent
echo "PASS: $TEST_NAME"
