#!/usr/bin/env bash
# nginx with 1 and 2 workers (master_process on), keepalive `return 200`, wrk -t2 -c100, kernel TCP
# vs snstack in one run: requests/s, latency p50/p99, nginx CPU (master + workers) and agent CPU per
# request, and syscalls per request made by the nginx workers (perf raw_syscalls, when perf works).
# Each (mode, workers) point runs REPS times, interleaved kernel/snstack; the table gives the median
# with the min..max spread, then every run.
#   DURATION=10  WORKERS="1 2"  REPS=3  SKIP_BUILD=1   -> bench/results/YYYY-MM-DD-HHMM-workers.md
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
DURATION=${DURATION:-10}
WORKERS=${WORKERS:-"1 2"}
REPS=${REPS:-3}
[[ ${SKIP_BUILD:-0} == 1 ]] || cargo build --release --workspace
bash ci/install-deps.sh >/dev/null
LIB=$REPO/target/release/libsnstack.so
AGENT=$REPO/target/release/snstack-agent
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
W=$(mktemp -d /tmp/snstack-bench-workers.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in "$W"/*/nginx.pid; do [[ -f $f ]] && kill -QUIT "$(cat "$f")" 2>/dev/null || true; done
    sleep 1
    rm -rf "$W"
}
trap cleanup EXIT
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
HZ=$(getconf CLK_TCK)
perf_ok=0
perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1 && perf_ok=1

"$AGENT" --socket "$W/agent.sock" --log-level warn >"$W/agent.log" 2>&1 &
AG=$!
pids+=("$AG")
for _ in $(seq 50); do [[ -S $W/agent.sock ]] && break; sleep 0.1; done

run() { # MODE(kernel|snstack) N PORT
    local mode=$1 n=$2 port=$3 d=$W/$1-$2
    mkdir -p "$d/tmp"
    cat >"$d/nginx.conf" <<CONF
daemon on; master_process on; worker_processes $n;
error_log $d/error.log warn; pid $d/nginx.pid;
events { worker_connections 1024; }
http { access_log off; keepalive_timeout 65; keepalive_requests 1000000;
  client_body_temp_path $d/tmp/b; proxy_temp_path $d/tmp/p; fastcgi_temp_path $d/tmp/f;
  uwsgi_temp_path $d/tmp/u; scgi_temp_path $d/tmp/s;
  server { listen 127.0.0.1:$port; location = /hello { return 200 "hello\n"; } } }
CONF
    if [[ $mode == snstack ]]; then
        LD_PRELOAD=$LIB SNSTACK_AGENT=$W/agent.sock "$NGINX" -p "$d/" -c "$d/nginx.conf"
    else
        "$NGINX" -p "$d/" -c "$d/nginx.conf"
    fi
    sleep 1
    local m ws
    m=$(cat "$d/nginx.pid")
    ws=$(pgrep -P "$m" | tr '\n' ' ')
    # shellcheck disable=SC2086
    local n0 a0 sc=0
    # shellcheck disable=SC2086
    n0=$(ticks "$m" $ws)
    a0=$(ticks "$AG")
    if ((perf_ok)); then
        # shellcheck disable=SC2086
        perf stat -e raw_syscalls:sys_enter -p "$(echo $ws | tr ' ' ',')" -o "$d/perf.txt" -- sleep "$DURATION" &
        local pp=$!
    fi
    wrk -t2 -c100 -d"${DURATION}s" --latency "http://127.0.0.1:$port/hello" >"$d/wrk.txt" 2>&1
    ((perf_ok)) && wait "$pp" && sc=$(awk '/raw_syscalls/{gsub(",","",$1); print $1}' "$d/perf.txt")
    local n1 a1 req rps p50 p99
    # shellcheck disable=SC2086
    n1=$(ticks "$m" $ws)
    a1=$(ticks "$AG")
    req=$(awk '/ requests in /{print $1}' "$d/wrk.txt")
    rps=$(awk '/Requests\/sec/{print $2}' "$d/wrk.txt")
    p50=$(awk '$1=="50%"{print $2}' "$d/wrk.txt")
    p99=$(awk '$1=="99%"{print $2}' "$d/wrk.txt")
    local errs
    errs=$(awk '/Socket errors/{gsub(",",""); print $4+$6+$8+$10}' "$d/wrk.txt")
    kill -QUIT "$m"
    sleep 1
    awk -v mode="$mode" -v n="$n" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v req="$req" \
        -v nt=$((n1 - n0)) -v at=$((a1 - a0)) -v hz="$HZ" -v sc="$sc" -v perf="$perf_ok" -v errs="${errs:-0}" 'BEGIN {
        agent = (mode == "snstack") ? sprintf("%.2f", at / hz * 1e6 / req) : "-"
        sys = perf ? sprintf("%.3f", sc / req) : "n/a"
        printf "| %s | %d | %s | %s | %s | %.2f | %s | %s | %s |\n", mode, n, rps, p50, p99, nt / hz * 1e6 / req, agent, sys, errs
    }'
}

out=bench/results/$(date +%Y-%m-%d-%H%M)-workers.md
mkdir -p bench/results
port=$((20000 + RANDOM % 20000))
for ((r = 1; r <= REPS; r++)); do
    for n in $WORKERS; do
        for mode in kernel snstack; do
            echo "run $r/$REPS: $mode, $n worker(s)" >&2
            run "$mode" "$n" "$port" >>"$W/rows"
            port=$((port + 1))
        done
    done
done
{
    echo "# nginx workers, kernel vs snstack ($(date '+%Y-%m-%d %H:%M'))"
    echo
    echo "Commit \`$(git rev-parse --short HEAD)\`, \`REPS=$REPS DURATION=$DURATION bash ci/bench-workers.sh\`; $(nproc) CPUs shared by wrk, nginx and the agent."
    echo "nginx: daemon, master_process on, \`return 200\`, keepalive; \`wrk -t2 -c100 -d${DURATION}s --latency\`."
    echo "CPU = utime+stime of master and workers (agent: its own) over the run / requests; syscalls = perf"
    echo "raw_syscalls:sys_enter of the workers over the run / requests (the perf window is the wrk window)."
    echo "Runs are interleaved (kernel, snstack, kernel, ...) so drift in the machine's load hits both."
    echo
    echo "## Medians of $REPS runs (min..max)"
    echo
    python3 - "$W/rows" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    c = [x.strip() for x in line.strip().strip("|").split("|")]
    if len(c) < 9:
        continue
    rows.setdefault((c[0], c[1]), []).append(c[2:])
def num(v):
    m = re.match(r"^([0-9.]+)(us|ms|s)?$", v)
    if not m:
        return None
    x = float(m.group(1))
    return x * {"us": 1, "ms": 1e3, "s": 1e6, None: 1}[m.group(2)] if m.group(2) else x
def cell(vals, unit=""):
    xs = [num(v) for v in vals]
    if any(x is None for x in xs):
        return vals[0]
    med = statistics.median(xs)
    return f"{med:.4g}{unit} ({min(xs):.4g}..{max(xs):.4g})"
print("| mode | workers | requests/s | p50 (us) | p99 (us) | nginx CPU us/req | agent CPU us/req | nginx syscalls/req | socket errors (sum) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for (mode, n), rs in sorted(rows.items(), key=lambda k: (int(k[0][1]), k[0][0])):
    cols = list(zip(*rs))
    errs = sum(int(float(e)) for e in cols[6])
    print(f"| {mode} | {n} | " + " | ".join(cell(list(c)) for c in cols[:6]) + f" | {errs} |")
ks = {k: v for k, v in rows.items()}
print()
for n in sorted({k[1] for k in rows}, key=int):
    k, s_ = rows.get(("kernel", n)), rows.get(("snstack", n))
    if not k or not s_:
        continue
    med = lambda rs, i: statistics.median(num(r[i]) for r in rs)
    print(f"- {n} worker(s): snstack/kernel requests/s {med(s_,0)/med(k,0):.2f}x, nginx CPU per request {med(s_,3)/med(k,3):.2f}x")
PY
    echo
    echo "## Every run"
    echo
    echo "| mode | workers | requests/s | p50 | p99 | nginx CPU us/req | agent CPU us/req | nginx syscalls/req | socket errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    cat "$W/rows"
} | tee "$out"
echo "report: $out"
