#!/usr/bin/env bash
# fork and exec keep offloaded sockets working (tests/semantics/forkexec.py): a listener shared by
# a parent and 3 forked children that all accept; accept-then-fork with bytes that arrived before
# the fork; an inherited listener taken over by a new image after execv; a daemon-style
# grandchild; two processes reading one connection in turn; posix_spawn/vfork/execl handing a
# connection to a shell as stdin/stdout. The output must be identical on kernel sockets and under snstack, and the run must
# have used fork tickets (children attached with inherited sockets).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
PROBE="$REPO/tests/semantics/forkexec.py"

timeout 120 "$PY" "$PROBE" >"$WORKDIR/kernel.txt" 2>"$WORKDIR/kernel.err" ||
    fail "probe failed on kernel sockets: $(tail -3 "$WORKDIR/kernel.err")"
grep -q EXCEPTION "$WORKDIR/kernel.txt" && fail "probe raised on kernel sockets: $(cat "$WORKDIR/kernel.txt")"
start_agent
preload SNSTACK_LOG=info timeout 120 "$PY" "$PROBE" >"$WORKDIR/snstack.txt" 2>"$WORKDIR/snstack.err" ||
    fail "probe failed under snstack: $(tail -5 "$WORKDIR/snstack.err")"
if ! diff -u "$WORKDIR/kernel.txt" "$WORKDIR/snstack.txt"; then
    fail "fork/exec behaviour differs from the kernel's (diff above)"
fi
kids=$(grep -c "fork: child attached with the parent's sockets" "$WORKDIR/snstack.err" || true)
execs=$(grep -c "exec: 1 offloaded socket(s) taken over" "$WORKDIR/snstack.err" || true)
# posix_spawn, subprocess (vfork) and execl each hand the connection over as the shell's fds 0, 1.
spawns=$(grep -c "exec: 2 offloaded socket(s) taken over" "$WORKDIR/snstack.err" || true)
[[ $kids -ge 6 ]] || fail "expected >= 6 children attached with inherited sockets, saw $kids"
[[ $execs -ge 1 ]] || fail "the exec'd image did not take over the inherited listener"
[[ $spawns -ge 3 ]] || fail "expected 3 spawned shells (posix_spawn, vfork, execl) to take over the connection, saw $spawns"
sockets=$(wait_stat sockets -eq 0 10) || fail "agent still holds $sockets sockets after the probe"
log "$kids forked children, $execs exec'd image and $spawns spawned shells kept their sockets; output identical"
stop_agent
echo "PASS: $TEST_NAME"
