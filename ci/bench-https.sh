#!/usr/bin/env bash
# HTTPS side by side (issue 13): nginx with `ssl_conf_command Options KTLS;` and `sendfile on`,
# keepalive, wrk -t1 -c16 over TLS 1.3 (AES-128-GCM), 0 B, 100 KB and 1 MB responses: kernel TCP
# with OpenSSL doing the record crypto in user space (this kernel has no kTLS) vs snstack, where
# the agent serves kTLS (docs/tls.md), once with no PCIe model and once with `--pcie bf2` (a second
# agent). nginx on CPU 0, agents and wrk on CPU 1 (as bench/README.md's pinning). CPU from
# /proc/PID/task/*/schedstat, per request; p99 from `wrk --latency`; REPS interleaved runs of
# DURATION s; the summary gives medians and ratios against kernel+OpenSSL.
# Writes bench/results/<UTC timestamp>-https.md. No assertions: a benchmark, not a test.
#   REPS=2 DURATION=6 SKIP_BUILD=1 bash ci/bench-https.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPS=${REPS:-2}
DURATION=${DURATION:-6}
[[ ${SKIP_BUILD:-0} == 1 ]] || cargo build --release --workspace </dev/null
for c in nginx wrk openssl taskset; do
    command -v "$c" >/dev/null || { echo "bench-https: missing $c (ci/install-deps.sh)" >&2; exit 1; }
done
REPO=$PWD
W=$(mktemp -d /tmp/snstack-bench-https.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
    -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
mkdir -p "$W/www" "$W/logs"
head -c 102400 /dev/urandom >"$W/www/100k"
head -c 1048576 /dev/urandom >"$W/www/1m"
: >"$W/www/0b"
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
conf() { # conf NAME PORT
    cat >"$W/nginx-$1.conf" <<CONF
daemon off; master_process off; worker_processes 1;
error_log $W/logs/error-$1.log warn; pid $W/logs/nginx-$1.pid;
events { worker_connections 1024; }
http { access_log off; sendfile on; keepalive_requests 10000000;
  client_body_temp_path $W/logs/b; proxy_temp_path $W/logs/p; fastcgi_temp_path $W/logs/f;
  uwsgi_temp_path $W/logs/u; scgi_temp_path $W/logs/s;
  server { listen 127.0.0.1:$2 ssl; ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;
    ssl_protocols TLSv1.3; ssl_conf_command Options KTLS; root $W/www; } }
CONF
}
cpu() { local s=0 a _b _c t; for t in /proc/"$1"/task/*/schedstat; do read -r a _b _c <"$t"; s=$((s + a)); done; echo "$s"; }
pk=$(port)
ps_=$(port)
pb=$(port)
conf k "$pk"
conf s "$ps_"
conf b "$pb"
taskset -c 1 "$REPO/target/release/snstack-agent" --socket "$W/a.sock" >"$W/agent.log" 2>&1 &
AG=$!
PIDS+=("$AG")
taskset -c 1 "$REPO/target/release/snstack-agent" --socket "$W/b.sock" --pcie bf2 >"$W/agent-b.log" 2>&1 &
AB=$!
PIDS+=("$AB")
for _ in $(seq 50); do [[ -S $W/a.sock && -S $W/b.sock ]] && break; sleep 0.1; done
taskset -c 0 nginx -p "$W/" -c "$W/nginx-k.conf" >"$W/k.out" 2>&1 &
NK=$!
PIDS+=("$NK")
LD_PRELOAD="$REPO/target/release/libsnstack.so" SNSTACK_AGENT="$W/a.sock" SNSTACK_STRICT=1 \
    taskset -c 0 nginx -p "$W/" -c "$W/nginx-s.conf" >"$W/s.out" 2>&1 &
NS=$!
PIDS+=("$NS")
LD_PRELOAD="$REPO/target/release/libsnstack.so" SNSTACK_AGENT="$W/b.sock" SNSTACK_STRICT=1 \
    taskset -c 0 nginx -p "$W/" -c "$W/nginx-b.conf" >"$W/b.out" 2>&1 &
NB=$!
PIDS+=("$NB")
sleep 1
out=bench/results/$(date -u +%Y-%m-%d-%H%M)-https.md
rows=$W/rows.tsv
: >"$rows"
run() { # run MODE PID AGENTPID PORT FILE REP
    local t0 a0=0 t1 a1=0 res req rate err p99
    taskset -c 1 wrk -t1 -c16 -d2s "https://127.0.0.1:$4/$5" >/dev/null 2>&1 || true
    t0=$(cpu "$2")
    [[ $3 != 0 ]] && a0=$(cpu "$3")
    res=$(taskset -c 1 wrk -t1 -c16 -d"${DURATION}s" --latency "https://127.0.0.1:$4/$5" 2>&1) || true
    t1=$(cpu "$2")
    [[ $3 != 0 ]] && a1=$(cpu "$3")
    req=$(awk '/ requests in /{print $1}' <<<"$res")
    rate=$(awk '/Requests\/sec/{print $2}' <<<"$res")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$res")
    err=$(grep -o 'Socket errors.*' <<<"$res" | tr '\t' ' ' || echo 0)
    [[ -n $req && $req != 0 ]] || { echo "bench-https: no requests in $1 $5: $res" >&2; exit 1; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$5" "$1" "$6" "$req" "$rate" "$((t1 - t0))" \
        "$((a1 - a0))" "$p99" "${err:-0}" >>"$rows"
    echo "bench-https: $5 $1 rep $6: $rate req/s"
}
for f in 0b 100k 1m; do
    for r in $(seq "$REPS"); do
        run kernel+openssl "$NK" 0 "$pk" "$f" "$r"
        run snstack+ktls "$NS" "$AG" "$ps_" "$f" "$r"
        run snstack+ktls,bf2 "$NB" "$AB" "$pb" "$f" "$r"
    done
done
counters=$("$REPO/target/release/snstack-agent" stats --socket "$W/a.sock" | grep -E '^tls_' | tr '\n' ' ')
python3 - "$rows" "$out" "REPS=$REPS DURATION=$DURATION bash ci/bench-https.sh" "$(git rev-parse --short HEAD)" \
    "$(nginx -v 2>&1 | sed 's/.*\///')" "$(openssl version | cut -d' ' -f1-2)" "$DURATION" "$counters" <<'PY'
import statistics, sys, time
rows_path, out, cmd, rev, ngx, ossl, dur, counters = sys.argv[1:9]
size = {"0b": 0, "100k": 102400, "1m": 1048576}
def us(s):  # wrk latency "1.23ms" / "850.00us" / "1.02s" -> microseconds
    for suf, f in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        if s.endswith(suf):
            return float(s[: -len(suf)]) * f
    return float("nan")
rows = []
for line in open(rows_path):
    f, mode, rep, req, rate, host, agent, p99, err = line.rstrip("\n").split("\t")
    req = int(req)
    rows.append(dict(file=f, mode=mode, rep=rep, rate=float(rate), host=int(host) / 1e3 / req,
                     agent=int(agent) / 1e3 / req, p99=us(p99), err=err))
L = []
L.append("# HTTPS: nginx, kernel TCP + OpenSSL vs snstack with kTLS on the agent")
L.append("")
L.append(f"Command: `{cmd}` at `{rev}`, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC.")
L.append(f"nginx {ngx}, {ossl}, wrk -t1 -c16 -d{dur}s --latency, TLS 1.3 AES-128-GCM, keepalive, `sendfile on`.")
L.append("Host CPU = the nginx worker's CPU per request (for kernel+openssl it includes its kernel TCP and")
L.append("OpenSSL's record crypto); agent CPU = the agent's (it seals and opens records for snstack);")
L.append("`bf2` = a second agent with `--pcie bf2`. Agent s/GB = agent CPU seconds per GB of response body.")
L.append("")
L.append("| file | mode | rep | requests/s | p99 us | host CPU us/req | agent CPU us/req | wrk errors |")
L.append("|---|---|---:|---:|---:|---:|---:|---|")
for r in rows:
    L.append(f"| {r['file']} | {r['mode']} | {r['rep']} | {r['rate']:.0f} | {r['p99']:.0f} | {r['host']:.2f} | {r['agent']:.2f} | {r['err']} |")
L.append("")
L.append("Medians over the reps; ratios against kernel+openssl in the same run.")
L.append("")
L.append("| file | mode | requests/s (x) | p99 us (x) | host CPU us/req (x) | agent CPU us/req | agent s/GB |")
L.append("|---|---|---:|---:|---:|---:|---:|")
for f in ("0b", "100k", "1m"):
    base = None
    for mode in ("kernel+openssl", "snstack+ktls", "snstack+ktls,bf2"):
        sel = [r for r in rows if r["file"] == f and r["mode"] == mode]
        if not sel:
            continue
        m = {k: statistics.median(r[k] for r in sel) for k in ("rate", "p99", "host", "agent")}
        if base is None:
            base = m
        x = lambda k: f"{m[k]:.2f} ({m[k] / base[k]:.2f}x)" if base[k] else f"{m[k]:.2f}"
        gb = f"{m['agent'] / size[f] * 1e3:.2f}" if size[f] and m["agent"] else "-"
        L.append(f"| {f} | {mode} | {m['rate']:.0f} ({m['rate'] / base['rate']:.2f}x) | {x('p99')} | {x('host')} | {m['agent']:.2f} | {gb} |")
L.append("")
L.append("Target (issue 13): host CPU per 100 KB HTTPS response at most 0.3x the user-space-TLS figure.")
L.append("")
L.append(f"Agent counters (the agent without the PCIe model) after the runs: {counters}")
open(out, "w").write("\n".join(L) + "\n")
print("\n".join(L[-12:]))
PY
echo "bench-https: wrote $out"
