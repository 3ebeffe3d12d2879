#!/usr/bin/env bash
# pitfalls.md 9, differential (tests/apps/races.c): one thread asleep in epoll_wait while another
# closes the registered socket and reuses its fd number for a readable socket (no crash, no stale
# event, timeout as on Linux); epoll_ctl ADD/MOD/DEL looping in one thread while another closes
# and re-creates sockets under that fd number (no crash/hang); 4 threads accepting in a loop on one
# blocking listener while 2 threads make 2000 connections (every connection greeted, none waits
# > 1 s, shutdown releases the acceptors).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/apps/common.sh
source "$REPO/tests/apps/common.sh"
require_snstack
build_c "$APPS/races.c" "$WORKDIR/races"
start_agent
bad=()
diff_run close_wait 60 "$WORKDIR/races" close_wait || bad+=(close_wait)
diff_run ctl_close 60 "$WORKDIR/races" ctl_close || bad+=(ctl_close)
diff_run accept 120 "$WORKDIR/races" accept 2000 || bad+=(accept)
cat "$WORKDIR"/*.snstack.err 2>/dev/null | grep -E '^(ctl_close|accept):' | sed 's/^/  snstack: /' || true
agent_alive || fail "the agent died"
((${#bad[@]} == 0)) || fail "thread races behave differently from the kernel in: ${bad[*]} (diffs above)"
stop_agent
echo "PASS: $TEST_NAME"
