#!/usr/bin/env bash
# pitfalls.md 12 (tests/apps/calls.c, built -O2 -D_FORTIFY_SOURCE=2), differential where Linux's
# answer is the goal: __read_chk/__recv_chk/__recvfrom_chk/__poll_chk/__ppoll_chk; close_range over
# offloaded sockets (single fd and open-ended range); glibc closefrom (the close_range syscall made
# inside glibc); epoll_pwait2 on a set with a readable offloaded socket; sendmmsg/recvmmsg.
# Raw syscall(SYS_read/SYS_write/SYS_sendto/SYS_recvfrom) on an offloaded fd bypasses any interposer:
# there the requirement is a prompt, clean kernel error (or the right answer), never a hang or crash.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/apps/common.sh
source "$REPO/tests/apps/common.sh"
require_snstack
build_c "$APPS/calls.c" "$WORKDIR/calls" -D_FORTIFY_SOURCE=2
for s in __read_chk __recv_chk __recvfrom_chk __poll_chk __ppoll_chk; do
    nm -D "$WORKDIR/calls" | grep -q " U $s@" || fail "the fortified build does not call $s (compiler changed?)"
done
start_agent
bad=()
for s in fortify close_range closefrom pwait2 mmsg; do
    diff_run "$s" 30 "$WORKDIR/calls" "$s" || bad+=("$s")
done

# raw syscalls: kernel run = the data; snstack run = data or clean errors, promptly.
timeout -k 5 30 "$WORKDIR/calls" raw >"$WORKDIR/raw.kernel" 2>&1 </dev/null || fail "raw probe failed on kernel sockets"
grep -q '^raw.SYS_read: 5  hello' "$WORKDIR/raw.kernel" || fail "raw probe: unexpected kernel answer: $(cat "$WORKDIR/raw.kernel")"
rc=0
preload timeout -k 5 30 "$WORKDIR/calls" raw >"$WORKDIR/raw.snstack" 2>&1 </dev/null || rc=$?
[[ $rc == 0 ]] || fail "raw syscalls on an offloaded fd: probe exited with status $rc (142 = SIGALRM after 10 s: a raw call hung; 124 = timeout): $(cat "$WORKDIR/raw.snstack")"
while read -r line; do
    [[ $line == raw.* ]] || continue
    k=$(grep -F "${line%%:*}:" "$WORKDIR/raw.kernel")
    [[ $line == "$k" || $line =~ ^raw\.[A-Za-z_]+:\ -1\ E[A-Z]+ ]] ||
        fail "raw syscall answered neither like the kernel nor with a clean error: '$line' (kernel: '$k')"
done <"$WORKDIR/raw.snstack"
log "raw syscalls under snstack: $(grep '^raw' "$WORKDIR/raw.snstack" | tr '\n' ';')"

((${#bad[@]} == 0)) || fail "differs from the kernel in: ${bad[*]} (diffs above)"
stop_agent
echo "PASS: $TEST_NAME"
