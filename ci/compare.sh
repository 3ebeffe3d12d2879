# shellcheck shell=bash
# nginx side-by-side: one nginx under snstack (port A), one plain (port B), same generated config.
# Sourced by ci/demo.sh and ci/bench.sh after tests/lib.sh.
#
#   compare_setup            start agent + both nginx, warm up, sanity-check who owns what
#   compare_run SIDE DUR OUT run `wrk -t1 -c16 -dDUR --latency` against SIDE (A|B), write `key value`
#                            lines to OUT
#   compare_table A.kv B.kv  print the side-by-side table (markdown when TABLE_MD=1)

WRK_THREADS=${WRK_THREADS:-1}
WRK_CONNS=${WRK_CONNS:-16}

compare_setup() {
    require_snstack
    require_cmd wrk curl ss
    [[ -x $NGINX_BIN ]] || fail "nginx not installed (run: ci/install-deps.sh)"
    start_agent
    local side port dir
    for side in A B; do
        port=$(free_port)
        dir=$WORKDIR/nginx-$side
        nginx_conf "$dir" "$port"
        mapfile -t NGX_CMD < <(nginx_args "$dir")
        if [[ $side == A ]]; then
            spawn_preload "$dir/stdout.log" "${NGX_CMD[@]}"
            PORT_A=$port NGX_A=$SPAWNED_PID
        else
            spawn "$dir/stdout.log" "${NGX_CMD[@]}"
            PORT_B=$port NGX_B=$SPAWNED_PID
        fi
    done
    wait_port "$PORT_A" "$NGX_A"
    wait_port "$PORT_B" "$NGX_B"
    lib_loaded "$NGX_A" || fail "libsnstack.so is not mapped into nginx A (pid $NGX_A)"
    [[ $(ss -Htlnp "sport = :$PORT_A") == *"pid=$NGX_A,"* ]] &&
        fail "nginx A (pid $NGX_A) owns its listener in the kernel: it is not offloaded"
    for port in "$PORT_A" "$PORT_B"; do
        [[ $(curl -sS --max-time 5 "http://127.0.0.1:$port/hello") == hello ]] ||
            fail "GET http://127.0.0.1:$port/hello failed"
    done
    log "nginx A (snstack) pid $NGX_A port $PORT_A; nginx B (kernel) pid $NGX_B port $PORT_B"
}

# _to_us 1.23ms -> 1230
_to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        m = (u == "us") ? 1 : (u == "ms") ? 1e3 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
        if (m < 0) { print "nan"; exit }
        printf "%.1f", n * m }'
}

_stat_or_0() { if [[ -n $AGENT_PID ]]; then agent_stat "$1"; else echo 0; fi; }

compare_run() {
    local side=$1 dur=$2 out=$3 port pid
    if [[ $side == A ]]; then port=$PORT_A pid=$NGX_A; else port=$PORT_B pid=$NGX_B; fi
    pid_alive "$pid" || fail "nginx $side (pid $pid) is not running"
    local keys=(h2n_bytes h2n_ops n2h_bytes n2h_ops) k
    declare -A s0 s1
    for k in "${keys[@]}"; do s0[$k]=$(_stat_or_0 "$k"); done
    local n0 a0 n1 a1 wout=$out.wrk
    n0=$(cpu_ticks "$pid")
    a0=$(cpu_ticks "$AGENT_PID")
    local wrk=(wrk "-t$WRK_THREADS" "-c$WRK_CONNS" "-d${dur}s" --latency --timeout 2s "http://127.0.0.1:$port/hello")
    timeout $((dur + 30)) "${wrk[@]}" >"$wout" 2>&1 </dev/null || fail "wrk against $side failed: $(cat "$wout")"
    n1=$(cpu_ticks "$pid")
    a1=$(cpu_ticks "$AGENT_PID")
    for k in "${keys[@]}"; do s1[$k]=$(_stat_or_0 "$k"); done
    pid_alive "$pid" || fail "nginx $side died during the run"

    local req rps avg p99 err bad
    req=$(wrk_requests "$wout")
    rps=$(awk '/^Requests\/sec:/{ print $2 }' "$wout")
    avg=$(_to_us "$(awk '$1 == "Latency" { print $2; exit }' "$wout")")
    p99=$(_to_us "$(awk '$1 == "99%" { print $2; exit }' "$wout")")
    err=$(wrk_socket_errors "$wout")
    bad=$(wrk_non2xx "$wout")
    [[ $req =~ ^[0-9]+$ && $req -gt 0 ]] || fail "wrk against $side made no requests: $(cat "$wout")"
    {
        echo "requests $req"
        echo "rps $rps"
        echo "lat_avg_us $avg"
        echo "lat_p99_us $p99"
        echo "socket_errors $err"
        echo "non2xx $bad"
        awk -v d=$((n1 - n0)) -v r="$req" -v t="$CLK_TCK" 'BEGIN { printf "nginx_cpu_us_per_req %.2f\n", d * 1e6 / t / r }'
        awk -v d=$((a1 - a0)) -v r="$req" -v t="$CLK_TCK" 'BEGIN { printf "agent_cpu_us_per_req %.2f\n", d * 1e6 / t / r }'
        awk -v d=$((n1 - n0 + a1 - a0)) -v r="$req" -v t="$CLK_TCK" 'BEGIN { printf "total_cpu_us_per_req %.2f\n", d * 1e6 / t / r }'
        for k in "${keys[@]}"; do
            echo "$k $((s1[$k] - s0[$k]))"
            awk -v d=$((s1[$k] - s0[$k])) -v r="$req" -v k="$k" 'BEGIN { printf "%s_per_req %.2f\n", k, d / r }'
        done
    } >"$out"
    log "$side: $req requests, $rps req/s, avg ${avg}us, p99 ${p99}us"
}

_kv() { awk -v k="$2" '$1 == k { print $2; f = 1; exit } END { if (!f) print "-" }' "$1"; }

compare_table() {
    local a=$1 b=$2 row key label
    local rows=(
        "rps|requests/s"
        "lat_avg_us|latency avg (us)"
        "lat_p99_us|latency p99 (us)"
        "requests|requests"
        "socket_errors|wrk socket errors"
        "non2xx|non-2xx responses"
        "nginx_cpu_us_per_req|nginx CPU us/request"
        "agent_cpu_us_per_req|agent CPU us/request"
        "total_cpu_us_per_req|nginx+agent CPU us/request"
        "h2n_ops_per_req|h2n ops/request"
        "h2n_bytes_per_req|h2n bytes/request"
        "n2h_ops_per_req|n2h ops/request"
        "n2h_bytes_per_req|n2h bytes/request"
        "h2n_bytes|h2n bytes total"
        "h2n_ops|h2n ops total"
        "n2h_bytes|n2h bytes total"
        "n2h_ops|n2h ops total"
    )
    if [[ ${TABLE_MD:-0} == 1 ]]; then
        echo "| metric | A: nginx + snstack | B: nginx, kernel TCP |"
        echo "|---|---:|---:|"
    else
        printf '%-28s %20s %22s\n' metric "A: nginx + snstack" "B: nginx, kernel TCP"
        printf '%-28s %20s %22s\n' ---------------------------- -------------------- ----------------------
    fi
    for row in "${rows[@]}"; do
        key=${row%%|*} label=${row#*|}
        local va vb
        va=$(_kv "$a" "$key")
        vb=$(_kv "$b" "$key")
        # The plain nginx has no agent: its agent/channel figures are not applicable.
        case $key in agent_* | h2n_* | n2h_*) vb="-" ;; total_cpu_us_per_req) vb=$(_kv "$b" nginx_cpu_us_per_req) ;; esac
        if [[ ${TABLE_MD:-0} == 1 ]]; then
            echo "| $label | $va | $vb |"
        else
            printf '%-28s %20s %22s\n' "$label" "$va" "$vb"
        fi
    done
}

# median_kv OUT FILE...: per key, the median of the values in FILEs (all with the same keys).
median_kv() {
    local out=$1
    shift
    awk '{ v[$1] = v[$1] " " $2; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
        END {
            for (i = 1; i <= n; i++) {
                k = order[i]; m = split(substr(v[k], 2), a, " ")
                for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] + 0 < a[x] + 0) { t = a[x]; a[x] = a[y]; a[y] = t }
                print k, (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
            }
        }' "$@" >"$out"
}
