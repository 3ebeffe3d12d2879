# shellcheck shell=bash
# shellcheck disable=SC2034 # variables here are used by the scripts that source this file
# Shared helpers for tests/integration/*.sh, ci/demo.sh and ci/bench.sh.
#
#   source "$(dirname "$0")/../lib.sh"
#
# Every process a script starts goes through `spawn`/`spawn_preload`/`start_agent`, which record its
# PID; the EXIT trap stops exactly those PIDs (never by name) and removes the script's temp dir.
# Exit codes follow automake: 0 pass, 77 skip, anything else fail.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PRELOAD=${SNSTACK_LIB:-$REPO/target/release/libsnstack.so}
AGENT_BIN=${SNSTACK_AGENT_BIN:-$REPO/target/release/snstack-agent}
CLI_BIN=$REPO/target/release/snstack
CORRUPT_BIN=${SNSTACK_CORRUPT_BIN:-$REPO/target/release/snstack-corrupt}
CHANBENCH_BIN=$REPO/target/release/snstack-chanbench
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
# Debian's interpreter, not a pyenv shim: shims are shell scripts (an extra preloaded process) and
# live under /root, which `nobody` cannot read.
if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=$(command -v python3); fi
TEST_NAME=$(basename "$0" .sh)
# Never let a caller's environment preload the helpers themselves.
unset LD_PRELOAD SNSTACK_OFFLOAD SNSTACK_STRICT
export NO_COLOR=1

# Short base: AF_UNIX paths are limited to 108 bytes. 0755 so `nobody` can traverse it (60-*.sh).
WORKDIR=$(mktemp -d /tmp/snstack-"${TEST_NAME}".XXXXXX)
chmod 0755 "$WORKDIR"

_PIDS=()
AGENT_PID=
AGENT_SOCK=
AGENT_LOG=

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "$TEST_NAME" "$*"; }

_tail_logs() {
    if [[ -n $AGENT_LOG && -s $AGENT_LOG ]]; then
        echo "--- last lines of agent log ($AGENT_LOG) ---"
        tail -n 20 "$AGENT_LOG" | sed 's/\x1b\[[0-9;]*m//g'
    fi
}

fail() {
    echo "FAIL: $TEST_NAME: $*" >&2
    _tail_logs >&2
    exit 1
}

skip() {
    echo "SKIP: $TEST_NAME: $*"
    exit 77
}

# pid_alive PID: true while PID exists and is not a zombie.
pid_alive() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z && $st != X ]]
}

# stop_pid PID [SIGNAL] [GRACE_S]: signal one recorded PID, escalate to SIGKILL after the grace time.
stop_pid() {
    local pid=$1 sig=${2:-TERM} grace=${3:-5} i
    pid_alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -"$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        pid_alive "$pid" || break
        sleep 0.1
    done
    if pid_alive "$pid"; then
        echo "warning: pid $pid ignored SIG$sig for ${grace}s, sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

_cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${_PIDS[i]}" TERM 3
    done
    if [[ -n $AGENT_PID ]]; then stop_pid "$AGENT_PID" TERM 5; fi
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        echo "kept $WORKDIR" >&2
    else
        rm -rf "$WORKDIR"
    fi
    exit "$rc"
}
trap _cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

register_pid() { _PIDS+=("$1"); }

# spawn LOG CMD ARGS...: run an external command in the background (stdin /dev/null, stdout+stderr to
# LOG). SPAWNED_PID is the command's own PID (env execs, so `env VAR=x cmd` keeps the PID).
spawn() {
    local out=$1
    shift
    "$@" >"$out" 2>&1 </dev/null &
    SPAWNED_PID=$!
    register_pid "$SPAWNED_PID"
}

# preload [VAR=VALUE...] CMD ARGS...: run CMD in the foreground with snstack preloaded.
preload() {
    env "LD_PRELOAD=$PRELOAD" "SNSTACK_AGENT=${SNSTACK_AGENT:-/run/snstack/agent.sock}" "$@"
}

# spawn_preload LOG [VAR=VALUE...] CMD ARGS...: spawn with snstack preloaded.
spawn_preload() {
    local out=$1
    shift
    spawn "$out" env "LD_PRELOAD=$PRELOAD" "SNSTACK_AGENT=${SNSTACK_AGENT:-/run/snstack/agent.sock}" "$@"
}

# require_snstack: the preload library and the agent must be built (ci/test.sh builds them first).
require_snstack() {
    [[ -f $PRELOAD ]] || fail "$PRELOAD not built (run: cargo build --release --workspace)"
    [[ -x $AGENT_BIN ]] || fail "$AGENT_BIN not built (run: cargo build --release --workspace)"
}

require_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || fail "missing command '$c' (run: ci/install-deps.sh)"
    done
}

# shellcheck disable=SC2120 # extra agent flags are optional
# start_agent [EXTRA AGENT ARGS...]: start a private agent on a fresh socket, wait for the socket,
# export SNSTACK_AGENT. Sets AGENT_PID, AGENT_SOCK, AGENT_LOG.
start_agent() {
    local dir i
    dir=$(mktemp -d "$WORKDIR/agent.XXXXXX")
    chmod 0755 "$dir"
    AGENT_SOCK=$dir/agent.sock
    AGENT_LOG=$dir/agent.log
    "$AGENT_BIN" --socket "$AGENT_SOCK" --log-level "${AGENT_LOG_LEVEL:-info}" "$@" \
        >"$AGENT_LOG" 2>&1 </dev/null &
    AGENT_PID=$!
    for ((i = 0; i < 100; i++)); do
        [[ -S $AGENT_SOCK ]] && break
        if ! pid_alive "$AGENT_PID"; then
            local rc=0
            wait "$AGENT_PID" || rc=$?
            AGENT_PID=
            fail "agent exited with status $rc before creating $AGENT_SOCK"
        fi
        sleep 0.1
    done
    [[ -S $AGENT_SOCK ]] || fail "agent (pid $AGENT_PID) did not create $AGENT_SOCK within 10 s"
    export SNSTACK_AGENT=$AGENT_SOCK
    log "agent pid $AGENT_PID on $AGENT_SOCK"
}

agent_alive() { [[ -n $AGENT_PID ]] && pid_alive "$AGENT_PID"; }

# stop_agent: SIGTERM, wait up to 10 s, require exit status 0.
stop_agent() {
    local i rc=0 pid=$AGENT_PID
    [[ -n $pid ]] || fail "stop_agent: no agent running"
    pid_alive "$pid" || {
        wait "$pid" || rc=$?
        fail "agent (pid $pid) had already exited (status $rc)"
    }
    kill -TERM "$pid"
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" || break
        sleep 0.1
    done
    if pid_alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        AGENT_PID=
        fail "agent (pid $pid) did not exit within 10 s of SIGTERM"
    fi
    wait "$pid" || rc=$?
    AGENT_PID=
    [[ $rc == 0 ]] || fail "agent exited with status $rc after SIGTERM (expected 0)"
    log "agent exited cleanly"
}

# agent_stats: all `key value` lines of the running agent.
agent_stats() {
    timeout 10 "$AGENT_BIN" stats --socket "$AGENT_SOCK" </dev/null
}

# agent_stat KEY: one counter (fails the test when the key is missing).
agent_stat() {
    local out v
    out=$(agent_stats) || fail "'snstack-agent stats --socket $AGENT_SOCK' failed"
    v=$(awk -v k="$1" '$1 == k { print $2; exit }' <<<"$out")
    [[ $v =~ ^[0-9]+$ ]] || fail "agent stats have no numeric '$1' (got: $(tr '\n' ' ' <<<"$out"))"
    echo "$v"
}

# wait_stat KEY OP VALUE [TIMEOUT_S]: poll until `stat OP VALUE` holds (OP: -eq -ge -gt -le);
# prints the last value seen; returns 1 on timeout.
wait_stat() {
    local key=$1 op=$2 want=$3 t=${4:-10} i v
    for ((i = 0; i <= t * 10; i++)); do
        v=$(agent_stat "$key")
        if test "$v" "$op" "$want"; then
            echo "$v"
            return 0
        fi
        sleep 0.1
    done
    echo "$v"
    return 1
}

# agent_log_plain: the agent log without ANSI colour codes.
agent_log_plain() { sed 's/\x1b\[[0-9;]*m//g' "$AGENT_LOG"; }

# free_port: an unused loopback TCP port (asked from the kernel, not preloaded).
free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT [PID] [TIMEOUT_S]: wait for a TCP listener on PORT (the agent's kernel backend
# listens on the real port, so `ss` sees it); fail early if PID died.
wait_port() {
    local port=$1 pid=${2:-} t=${3:-15} i
    for ((i = 0; i < t * 10; i++)); do
        if [[ -n $(ss -Htln "sport = :$port" 2>/dev/null) ]]; then return 0; fi
        if [[ -n $pid ]] && ! pid_alive "$pid"; then
            fail "pid $pid exited before listening on port $port"
        fi
        sleep 0.1
    done
    fail "nothing listening on port $port after ${t}s"
}

# wait_exit PID TIMEOUT_S: wait for a spawned PID to exit; sets WAIT_RC; returns 1 on timeout.
wait_exit() {
    local pid=$1 t=$2 i
    WAIT_RC=
    for ((i = 0; i < t * 10; i++)); do
        pid_alive "$pid" || break
        sleep 0.1
    done
    pid_alive "$pid" && return 1
    WAIT_RC=0
    wait "$pid" || WAIT_RC=$?
    return 0
}

sha256() { sha256sum "$1" | awk '{print $1}'; }

# assert_same_file EXPECTED ACTUAL WHAT
assert_same_file() {
    [[ -f $2 ]] || fail "$3: $2 missing"
    local a b
    a=$(sha256 "$1")
    b=$(sha256 "$2")
    [[ $a == "$b" ]] || fail "$3: sha256 mismatch ($(stat -c %s "$2") of $(stat -c %s "$1") bytes received)"
}

# cpu_ticks PID: utime+stime of PID in clock ticks (see CLK_TCK).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

# lib_loaded PID: the preload library is mapped into PID.
lib_loaded() { grep -q "$(basename "$PRELOAD")" "/proc/$1/maps" 2>/dev/null; }

# nginx_conf DIR PORT [ROOT]: write DIR/nginx.conf for a single-process nginx on 127.0.0.1:PORT
# serving `location = /hello` and static files under ROOT/files/. Everything it writes stays in DIR.
nginx_conf() {
    local dir=$1 port=$2 root=${3:-$1}
    mkdir -p "$dir"/{client_body,proxy,fastcgi,uwsgi,scgi}
    cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
error_log $dir/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile off;
    keepalive_timeout 65;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port;
        location = /hello { return 200 "hello\n"; }
        location /files/ { root $root; }
    }
}
CONF
}

# nginx_args DIR: command line for an nginx configured by nginx_conf DIR.
nginx_args() { printf '%s\n' "$NGINX_BIN" -p "$1/" -e "$1/error.log" -c "$1/nginx.conf"; }

# nginx_errors DIR: serious lines of that nginx's error log (empty when clean).
nginx_errors() { grep -E '\[(emerg|alert|crit)\]' "$1/error.log" 2>/dev/null || true; }

# WRK helpers. wrk_check FILE: require requests > 0, no socket errors and no non-2xx/3xx responses.
wrk_requests() { awk '/ requests in /{ print $1; exit }' "$1"; }
wrk_socket_errors() {
    awk '/Socket errors:/{ gsub(/,/, ""); print $4 + $6 + $8 + $10; f = 1 } END { if (!f) print 0 }' "$1"
}
wrk_non2xx() { awk '/Non-2xx or 3xx responses:/{ print $NF; f = 1 } END { if (!f) print 0 }' "$1"; }
wrk_check() {
    local f=$1 req err bad
    req=$(wrk_requests "$f")
    err=$(wrk_socket_errors "$f")
    bad=$(wrk_non2xx "$f")
    [[ $req =~ ^[0-9]+$ && $req -gt 0 ]] || fail "wrk made no requests: $(cat "$f")"
    [[ $err == 0 ]] || fail "wrk reported socket errors: $(grep 'Socket errors' "$f")"
    [[ $bad == 0 ]] || fail "wrk got $bad non-2xx/3xx responses"
    log "wrk: $req requests, 0 socket errors, 0 non-2xx"
}
