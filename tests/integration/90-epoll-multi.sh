#!/usr/bin/env bash
# pitfalls.md 1 and 2, differential (tests/apps/epoll_multi.c, same output on kernel sockets and
# under snstack): one socket in two epoll sets (ready before the wait and arriving while both sleep);
# an epoll fd holding an offloaded socket nested in another epoll, in a poll set and in a select set
# (idle, arriving while asleep, ready before the wait); EPOLL_CTL_MOD right after ADD, EEXIST/ENOENT;
# one LT report per arrival and none after draining; ET; a dup'd fd registered twice and closed;
# poll with events=0 (no spurious POLLHUP on a connected socket).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/apps/common.sh
source "$REPO/tests/apps/common.sh"
require_snstack
build_c "$APPS/epoll_multi.c" "$WORKDIR/epoll_multi"
start_agent
ops0=$(agent_stat h2n_ops)

bad=()
# Each section in a fresh process, then all of them in one process (state left by earlier epoll
# instances, e.g. recycled waiter slots, must not leak into later ones).
for s in two_sets nested bookkeeping; do
    diff_run "$s" 60 "$WORKDIR/epoll_multi" "$s" || bad+=("$s")
done
diff_run all-in-one-process 90 "$WORKDIR/epoll_multi" || bad+=(all-in-one-process)
ops=$(agent_stat h2n_ops)
[[ $ops -gt $((ops0 + 50)) ]] || fail "h2n_ops grew by $((ops - ops0)): the probe did not go through the agent"
((${#bad[@]} == 0)) || fail "epoll/poll semantics differ from the kernel's in: ${bad[*]} (diffs above)"
stop_agent
echo "PASS: $TEST_NAME"
