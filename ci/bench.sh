#!/usr/bin/env bash
# Benchmarks (`make bench`): the channel micro-benchmark (snstack-chanbench, when built) and the
# nginx side-by-side run, REPS repetitions, medians. Writes bench/results/YYYY-MM-DD-HHMM.md.
#   REPS=3  DURATION=10  SKIP_BUILD=1 (use the binaries already in target/release)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
[[ -d $HOME/.cargo/bin ]] && PATH=$HOME/.cargo/bin:$PATH
REPS=${REPS:-3}
DURATION=${DURATION:-10}

bash ci/install-deps.sh </dev/null
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "building: cargo build --release --workspace"
    cargo build --release --workspace </dev/null
fi

# shellcheck source=tests/lib.sh
source tests/lib.sh
# shellcheck source=ci/compare.sh
source ci/compare.sh

mkdir -p bench/results
REPORT=bench/results/$(date +%Y-%m-%d-%H%M).md
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=
[[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && dirty=" (with uncommitted changes)"

compare_setup

chan_out=$WORKDIR/chanbench.out
chan_argv=("$CHANBENCH_BIN" --socket "$AGENT_SOCK")
chan_cmd="${chan_argv[*]}"
if [[ -x $CHANBENCH_BIN ]]; then
    log "channel micro-benchmark: $chan_cmd"
    timeout 300 "${chan_argv[@]}" >"$chan_out" 2>&1 </dev/null || fail "snstack-chanbench failed: $(tail -20 "$chan_out")"
    cat "$chan_out"
else
    echo "target/release/snstack-chanbench not built: channel micro-benchmark skipped" | tee "$chan_out"
fi

for ((r = 1; r <= REPS; r++)); do
    for side in A B; do
        log "repetition $r/$REPS: wrk ${DURATION}s against $side"
        compare_run "$side" "$DURATION" "$WORKDIR/$side.$r.kv"
    done
done
agent_alive || fail "agent died during the benchmark"
median_kv "$WORKDIR/A.kv" "$WORKDIR"/A.[0-9]*.kv
median_kv "$WORKDIR/B.kv" "$WORKDIR"/B.[0-9]*.kv

{
    echo "# snstack benchmark $(date '+%Y-%m-%d %H:%M')"
    echo
    echo "Commit \`$commit\`$dirty. Produced by \`make bench\` (ci/bench.sh)."
    echo
    echo "## Machine"
    echo
    echo "- nproc: $(nproc)"
    echo "- CPU: $(awk -F': ' '/^model name/{ print $2; exit }' /proc/cpuinfo)"
    echo "- kernel: $(uname -srm)"
    echo "- memory: $(awk '/^MemTotal/{ printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- nginx: $("$NGINX_BIN" -v 2>&1 | sed 's/.*: //'); wrk: $(wrk -v 2>&1 | awk 'NR==1{ print $2 }')"
    echo
    echo "## Channel micro-benchmark"
    echo
    if [[ -x $CHANBENCH_BIN ]]; then
        echo '```'
        echo "\$ $chan_cmd"
        cat "$chan_out"
        echo '```'
    else
        echo "Not run: target/release/snstack-chanbench is not built yet."
    fi
    echo
    echo "## nginx side-by-side, median of $REPS"
    echo
    echo "Commands (ports, pids and temp paths as in this run):"
    echo
    echo '```'
    echo "$AGENT_BIN --socket $AGENT_SOCK --log-level info"
    echo "LD_PRELOAD=$PRELOAD SNSTACK_AGENT=$AGENT_SOCK $(nginx_args "$WORKDIR/nginx-A" | tr '\n' ' ')"
    nginx_args "$WORKDIR/nginx-B" | tr '\n' ' '
    echo
    echo "wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION}s --latency --timeout 2s http://127.0.0.1:PORT/hello   # A then B, $REPS times"
    echo '```'
    echo
    echo "nginx config: \`daemon off; master_process off; worker_processes 1; access_log off; sendfile off;\`,"
    # shellcheck disable=SC2028 # the backslash-n is meant literally
    echo "\`location = /hello { return 200 \"hello\\n\"; }\` (tests/lib.sh \`nginx_conf\`)."
    echo
    TABLE_MD=1 compare_table "$WORKDIR/A.kv" "$WORKDIR/B.kv"
    echo
    echo "CPU per request: utime+stime from /proc/PID/stat over the run divided by requests"
    echo "(tick $((1000 / CLK_TCK)) ms). h2n/n2h: agent counters (payload bytes and operations that crossed"
    echo "the channel). wrk, nginx and the agent share $(nproc) cores."
    echo
    echo "### Every repetition"
    echo
    echo "| rep | side | requests/s | avg us | p99 us | nginx CPU us/req | agent CPU us/req |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    for ((r = 1; r <= REPS; r++)); do
        for side in A B; do
            f=$WORKDIR/$side.$r.kv
            echo "| $r | $side | $(_kv "$f" rps) | $(_kv "$f" lat_avg_us) | $(_kv "$f" lat_p99_us) |" \
                "$(_kv "$f" nginx_cpu_us_per_req) | $([[ $side == A ]] && _kv "$f" agent_cpu_us_per_req || echo -) |"
        done
    done
} >"$REPORT"

compare_table "$WORKDIR/A.kv" "$WORKDIR/B.kv"
stop_pid "$NGX_A"
stop_pid "$NGX_B"
stop_agent
echo
echo "report: $REPORT"
