#!/usr/bin/env bash
# `make install` (issue 12 item 4): PREFIX and DESTDIR layouts, the systemd unit (`systemd-analyze
# verify` prints nothing and succeeds), the configuration file kept over a reinstall, uninstall;
# the installed `snstack` run from another directory finds the installed library, sets every
# `run` option's variable, starts the installed agent, which reads the installed configuration by
# default, and offloads a real download. scripts/snstack (the checkout's wrapper) still works.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd make curl cmp systemd-analyze
[[ -x $CLI_BIN ]] || fail "$CLI_BIN not built (run: cargo build --release --workspace)"

# --- DESTDIR staging: files land under DESTDIR, paths inside them do not mention it ------------
stage=$WORKDIR/stage
make -s -C "$REPO" install DESTDIR="$stage" PREFIX=/usr >"$WORKDIR/make-stage.log" 2>&1 ||
    fail "make install DESTDIR=... PREFIX=/usr failed: $(tail -5 "$WORKDIR/make-stage.log")"
for f in usr/bin/snstack usr/bin/snstack-agent; do
    [[ -x $stage/$f ]] || fail "DESTDIR install: $f missing or not executable"
done
[[ $(stat -c %a "$stage/usr/lib/snstack/libsnstack.so") == 644 ]] || fail "DESTDIR install: libsnstack.so missing or not 0644"
[[ -f $stage/etc/snstack/agent.conf ]] || fail "PREFIX=/usr: the configuration must go to /etc/snstack"
unit=$stage/usr/lib/systemd/system/snstack-agent.service
[[ -f $unit ]] || fail "DESTDIR install: unit missing"
grep -qx 'ExecStart=/usr/bin/snstack-agent --config /etc/snstack/agent.conf' "$unit" ||
    fail "unit's ExecStart: $(grep ExecStart "$unit")"
grep -q "$stage" "$unit" && fail "DESTDIR leaked into the unit"
log "DESTDIR=$stage PREFIX=/usr: layout ok"

# --- PREFIX install (real paths: the unit can be verified, the binaries run) -------------------
P=$WORKDIR/prefix
make -s -C "$REPO" install PREFIX="$P" >"$WORKDIR/make.log" 2>&1 ||
    fail "make install PREFIX=$P failed: $(tail -5 "$WORKDIR/make.log")"
unit=$P/lib/systemd/system/snstack-agent.service
conf=$P/etc/snstack/agent.conf
[[ -f $unit && -f $conf && -f $P/lib/snstack/libsnstack.so ]] || fail "PREFIX install incomplete: $(find "$P" -type f)"
out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify failed: $out"
[[ -z $out ]] || fail "systemd-analyze verify is not clean: $out"
for want in "RuntimeDirectory=snstack" "Restart=on-failure" "ExecStart=$P/bin/snstack-agent --config $conf"; do
    grep -qxF "$want" "$unit" || fail "unit lacks '$want'"
done
log "unit verified clean: $(grep -E '^(ExecStart|Restart|RuntimeDirectory)=' "$unit" | tr '\n' ' ')"

# --- the installed command, from another directory ----------------------------------------------
cd /
"$P/bin/snstack" --help >"$WORKDIR/help.txt" || fail "snstack --help failed"
for w in run agent stats top; do
    grep -qE "^  $w " "$WORKDIR/help.txt" || fail "snstack --help does not list '$w': $(cat "$WORKDIR/help.txt")"
done
"$P/bin/snstack" run --help | grep -q -- '--spin-us' || fail "snstack run --help lacks --spin-us"
got=$("$P/bin/snstack" run -- printenv LD_PRELOAD) || fail "snstack run printenv failed"
[[ $got == "$P/lib/snstack/libsnstack.so" ]] || fail "installed snstack preloads '$got', not the installed library"
# shellcheck disable=SC2016 # the inner shell expands them
got=$("$P/bin/snstack" run --agent /x.sock --strict --spin-us 7 --log debug --off -- \
    sh -c 'echo "$SNSTACK_AGENT $SNSTACK_STRICT $SNSTACK_SPIN_US $SNSTACK_LOG $SNSTACK_OFFLOAD"')
[[ $got == "/x.sock 1 7 debug 0" ]] || fail "run options set '$got'"
# shellcheck disable=SC2016 # the inner shell expands them
got=$("$P/bin/snstack" run --rules 'kernel tcp_server *:5432' --rules-file /r.conf -- \
    sh -c 'echo "$SNSTACK_RULES|$SNSTACK_RULES_FILE"')
[[ $got == "kernel tcp_server *:5432|/r.conf" ]] || fail "--rules/--rules-file set '$got'"
got=$(SNSTACK_LIB=$PRELOAD "$P/bin/snstack" run printenv LD_PRELOAD)
[[ $got == "$(readlink -f "$PRELOAD")" ]] || fail "SNSTACK_LIB not honoured: '$got'"
rc=0
"$P/bin/snstack" run --bogus -- true 2>"$WORKDIR/bogus.err" || rc=$?
[[ $rc == 2 ]] || fail "an unknown run option exits $rc, expected 2"
rc=0
SNSTACK_LIB=/nonexistent "$P/bin/snstack" run true 2>"$WORKDIR/nolib.err" || rc=$?
if [[ $rc != 2 ]] || ! grep -q "SNSTACK_LIB=/nonexistent" "$WORKDIR/nolib.err"; then
    fail "a missing library: exit $rc, $(cat "$WORKDIR/nolib.err")"
fi
got=$("$REPO/scripts/snstack" run -- printenv LD_PRELOAD)
[[ $got == "$(readlink -f "$REPO/target/release/libsnstack.so")" ]] || fail "scripts/snstack preloads '$got'"
cd "$WORKDIR"
log "installed snstack: --help, run options, library lookup ok"

# --- the installed agent reads the installed configuration by default ---------------------------
sock=$WORKDIR/inst/agent.sock
cat >>"$conf" <<CONF
socket = "$sock"
loopback = "off"
CONF
spawn "$WORKDIR/inst-agent.log" "$P/bin/snstack" agent
AGENT_PID=$SPAWNED_PID AGENT_SOCK=$sock AGENT_LOG=$WORKDIR/inst-agent.log
for ((i = 0; i < 100; i++)); do
    [[ -S $sock ]] && agent_stats >/dev/null 2>&1 && break
    pid_alive "$AGENT_PID" || fail "installed agent exited: $(cat "$AGENT_LOG")"
    sleep 0.1
done
agent_stats >/dev/null 2>&1 || fail "installed agent did not listen on the configured $sock: $(cat "$AGENT_LOG")"
grep -q "configuration file read.*$conf" <(agent_log_plain) || fail "agent log does not name $conf"
[[ $(agent_stat loopback) == 0 ]] || fail "loopback = \"off\" in $conf not applied"

mkdir -p "$WORKDIR/srv"
head -c $((2 * 1024 * 1024)) /dev/urandom >"$WORKDIR/srv/blob"
port=$(free_port)
spawn "$WORKDIR/http.log" "$PY" -m http.server "$port" --bind 127.0.0.1 --directory "$WORKDIR/srv"
srv=$SPAWNED_PID
wait_port "$port" "$srv"
n0=$(agent_stat n2h_bytes)
(cd / && SNSTACK_AGENT=$sock "$P/bin/snstack" run --strict -- curl -sS --fail -o "$WORKDIR/out" \
    "http://127.0.0.1:$port/blob") || fail "curl under the installed snstack failed"
assert_same_file "$WORKDIR/srv/blob" "$WORKDIR/out" "download under the installed snstack"
n1=$(agent_stat n2h_bytes)
((n1 - n0 >= 2 * 1024 * 1024)) || fail "n2h_bytes grew by $((n1 - n0)), the download did not go through the agent"
log "installed agent (configured socket, loopback off) carried the download: n2h_bytes +$((n1 - n0))"
"$P/bin/snstack" stats --socket "$sock" | grep -q '^processes ' || fail "installed snstack stats failed"
stop_agent

# --- reinstall keeps an edited configuration; uninstall removes the rest -------------------------
make -s -C "$REPO" install PREFIX="$P" >"$WORKDIR/make2.log" 2>&1 || fail "second make install failed"
grep -q "^socket = \"$sock\"" "$conf" || fail "reinstall overwrote the edited $conf"
cmp -s "$REPO/etc/agent.conf" "$conf.new" || fail "reinstall did not put the new template at $conf.new"
make -s -C "$REPO" uninstall PREFIX="$P" >"$WORKDIR/unmake.log" 2>&1 || fail "make uninstall failed"
left=$(find "$P" -type f | sort)
[[ $left == "$conf" ]] || fail "after uninstall, expected only the edited $conf, found: $left"
log "reinstall kept the edited configuration; uninstall left only it"
echo "PASS: $TEST_NAME"
