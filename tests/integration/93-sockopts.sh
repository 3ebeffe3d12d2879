#!/usr/bin/env bash
# pitfalls.md 8, differential (tests/apps/sockopt.c) on a fresh, a connected and a listening
# offloaded socket: unknown SOL_SOCKET/IPPROTO_TCP/IPPROTO_IP names and unknown levels get the
# kernel's errno at once (every call timed, none may take > 1 s); the options iperf3-style tools use
# (SO_SNDBUF, SO_RCVBUF, TCP_NODELAY, TCP_MAXSEG, TCP_CONGESTION, TCP_INFO, SO_LINGER, IP_TOS,
# keepalive, TCP_USER_TIMEOUT, a 216-byte TCP_MD5SIG) and FIONREAD/SIOCOUTQ/SIOCOUTQNSD/SIOCATMARK
# answer as on Linux.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/apps/common.sh
source "$REPO/tests/apps/common.sh"
require_snstack
build_c "$APPS/sockopt.c" "$WORKDIR/sockopt"
start_agent
ops0=$(agent_stat h2n_ops)
ok=1
diff_run sockopt 60 "$WORKDIR/sockopt" || ok=0
grep -qx 'all_calls_fast: yes' "$WORKDIR/sockopt.snstack" || fail "an option call took more than 1 s under snstack (or the probe did not finish)"
ops=$(agent_stat h2n_ops)
[[ $ops -gt $((ops0 + 50)) ]] || fail "h2n_ops grew by $((ops - ops0)): the probe did not go through the agent"
((ok)) || fail "socket option/ioctl answers differ from the kernel's (diff above)"
stop_agent
echo "PASS: $TEST_NAME"
