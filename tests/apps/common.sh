# shellcheck shell=bash
# Helpers shared by tests/integration/8*-*.sh and 9*-*.sh (sourced after tests/lib.sh).
# shellcheck disable=SC2034 # used by the scripts that source this file
APPS="$REPO/tests/apps"

# build_c SRC OUT [CFLAGS...]: compile a test program with the system cc into the temp dir.
build_c() {
    local src=$1 out=$2
    shift 2
    command -v cc >/dev/null 2>&1 || fail "missing command 'cc' (run: ci/install-deps.sh)"
    cc -Wall -O2 "$@" -o "$out" "$src" -lpthread 2>"$out.cc.log" ||
        fail "cannot compile $src: $(cat "$out.cc.log")"
}

# run_bounded SECONDS LOG CMD...: run CMD in the foreground with a hard time limit; returns its
# status (124 = timed out, after SIGKILL 5 s later if SIGTERM is ignored).
run_bounded() {
    local t=$1 out=$2
    shift 2
    local rc=0
    timeout -k 5 "$t" "$@" >"$out" 2>&1 </dev/null || rc=$?
    return "$rc"
}

# counters_grew H2N0 N2H0 MIN: the agent's byte counters each grew by at least MIN since H2N0/N2H0.
counters_grew() {
    local h0=$1 n0=$2 min=$3 h n
    h=$(agent_stat h2n_bytes)
    n=$(agent_stat n2h_bytes)
    log "h2n_bytes +$((h - h0)), n2h_bytes +$((n - n0))"
    [[ $((h - h0)) -ge $min && $((n - n0)) -ge $min ]]
}

# diff_run NAME SECONDS CMD...: run CMD on kernel sockets, then preloaded (same agent), each bounded
# by SECONDS; stdout goes to $WORKDIR/NAME.kernel and $WORKDIR/NAME.snstack (stderr to *.err).
# The kernel run must succeed (else the test itself is broken: fail). Returns 0 when both outputs
# are identical and the preloaded run exited 0; otherwise prints the status and the diff, returns 1.
diff_run() {
    local name=$1 t=$2 krc=0 src=0
    shift 2
    timeout -k 5 "$t" "$@" >"$WORKDIR/$name.kernel" 2>"$WORKDIR/$name.kernel.err" </dev/null || krc=$?
    [[ $krc == 0 ]] || fail "$name: the probe failed on kernel sockets (status $krc): $(tail -3 "$WORKDIR/$name.kernel.err")"
    preload timeout -k 5 "$t" "$@" >"$WORKDIR/$name.snstack" 2>"$WORKDIR/$name.snstack.err" </dev/null || src=$?
    if [[ $src == 0 ]] && diff -q "$WORKDIR/$name.kernel" "$WORKDIR/$name.snstack" >/dev/null; then
        log "$name: $(grep -c . "$WORKDIR/$name.kernel") lines identical on kernel and snstack"
        return 0
    fi
    echo "--- $name: differs from the kernel (snstack status $src$([[ $src == 124 ]] && echo ', TIMED OUT'))"
    diff -u --label kernel --label snstack "$WORKDIR/$name.kernel" "$WORKDIR/$name.snstack" | tail -n +3 || true
    if [[ -s $WORKDIR/$name.snstack.err ]]; then
        echo "--- $name: stderr under snstack:"
        tail -5 "$WORKDIR/$name.snstack.err"
    fi
    return 1
}
