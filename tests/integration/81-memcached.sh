#!/usr/bin/env bash
# Preloaded memcached -t 4 under a preloaded multi-threaded client (tests/apps/mc_load.py:
# 8 threads x 5000 set/get pairs of random values, every get verified). Pass: zero client errors,
# the server's `stats` count exactly the client's sets/gets/hits, counters grew.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/apps/common.sh
source "$REPO/tests/apps/common.sh"
require_snstack
require_cmd memcached ss timeout
THREADS=8
N=5000

start_agent
port=$(free_port)
asroot=()
[[ $(id -u) != 0 ]] || asroot=(-u root) # memcached refuses to run as root without -u
spawn_preload "$WORKDIR/memcached.log" memcached -t 4 -p "$port" -l 127.0.0.1 -U 0 -m 256 "${asroot[@]}"
srv=$SPAWNED_PID
wait_port "$port" "$srv"
lib_loaded "$srv" || fail "libsnstack.so is not mapped into memcached (pid $srv)"

stat_of() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }
preload timeout -k 5 30 "$PY" "$APPS/mc_load.py" "$port" --stats >"$WORKDIR/stats0" 2>&1 ||
    fail "stats failed: $(tail -3 "$WORKDIR/stats0")"
set0=$(stat_of cmd_set "$WORKDIR/stats0")
get0=$(stat_of cmd_get "$WORKDIR/stats0")
hit0=$(stat_of get_hits "$WORKDIR/stats0")
[[ $set0 =~ ^[0-9]+$ && $get0 =~ ^[0-9]+$ ]] || fail "stats have no cmd_set/cmd_get: $(head -5 "$WORKDIR/stats0")"
h2n0=$(agent_stat h2n_bytes)
n2h0=$(agent_stat n2h_bytes)

log "mc_load.py: $THREADS threads x $N set/get pairs"
rc=0
preload timeout -k 5 120 "$PY" "$APPS/mc_load.py" "$port" "$THREADS" "$N" >"$WORKDIR/load.out" 2>&1 </dev/null || rc=$?
cat "$WORKDIR/load.out"
[[ $rc == 0 ]] || fail "client failed (status $rc): $(tail -5 "$WORKDIR/load.out")"
want=$((THREADS * N))
grep -qx "ok sets=$want gets=$want hits=$want" "$WORKDIR/load.out" || fail "client counts differ from $want"
pid_alive "$srv" || fail "memcached died"

preload timeout -k 5 30 "$PY" "$APPS/mc_load.py" "$port" --stats >"$WORKDIR/stats1" 2>&1 ||
    fail "stats failed: $(tail -3 "$WORKDIR/stats1")"
dset=$(($(stat_of cmd_set "$WORKDIR/stats1") - set0))
dget=$(($(stat_of cmd_get "$WORKDIR/stats1") - get0))
dhit=$(($(stat_of get_hits "$WORKDIR/stats1") - hit0))
log "server stats: cmd_set +$dset, cmd_get +$dget, get_hits +$dhit, curr_connections $(stat_of curr_connections "$WORKDIR/stats1")"
[[ $dset == "$want" && $dget == "$want" && $dhit == "$want" ]] ||
    fail "server counted set +$dset get +$dget hits +$dhit, expected $want each"
counters_grew "$h2n0" "$n2h0" $((want * 10)) || fail "agent byte counters did not grow with the load"
stop_pid "$srv"
stop_agent
echo "PASS: $TEST_NAME"
