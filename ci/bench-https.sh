#!/usr/bin/env bash
# HTTPS side by side (issue 13): nginx with `ssl_conf_command Options KTLS;` and `sendfile on`,
# keepalive, wrk -t1 -c16 over TLS 1.3 (AES-128-GCM), 100 KB and 0 B responses: kernel TCP with
# OpenSSL doing the record crypto in user space (this kernel has no kTLS) vs snstack, where the
# agent serves kTLS TX (docs/tls.md). nginx on CPU 0, agent and wrk on CPU 1 (as bench/README.md's
# pinning). CPU from /proc/PID/task/*/schedstat, per request; REPS interleaved runs of DURATION s.
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
conf k "$pk"
conf s "$ps_"
taskset -c 1 "$REPO/target/release/snstack-agent" --socket "$W/a.sock" >"$W/agent.log" 2>&1 &
AG=$!
PIDS+=("$AG")
for _ in $(seq 50); do [[ -S $W/a.sock ]] && break; sleep 0.1; done
taskset -c 0 nginx -p "$W/" -c "$W/nginx-k.conf" >"$W/k.out" 2>&1 &
NK=$!
PIDS+=("$NK")
LD_PRELOAD="$REPO/target/release/libsnstack.so" SNSTACK_AGENT="$W/a.sock" SNSTACK_STRICT=1 \
    taskset -c 0 nginx -p "$W/" -c "$W/nginx-s.conf" >"$W/s.out" 2>&1 &
NS=$!
PIDS+=("$NS")
sleep 1
out=bench/results/$(date -u +%Y-%m-%d-%H%M)-https.md
{
    echo "# HTTPS: nginx, kernel TCP + OpenSSL vs snstack with kTLS TX on the agent"
    echo
    echo "Command: \`REPS=$REPS DURATION=$DURATION bash ci/bench-https.sh\` at \`$(git rev-parse --short HEAD)\`, $(date -u '+%Y-%m-%d %H:%M') UTC."
    echo "nginx $(nginx -v 2>&1 | sed 's/.*\///'), $(openssl version | cut -d' ' -f1-2), wrk -t1 -c16 -d${DURATION}s, TLS 1.3 AES-128-GCM, keepalive."
    echo "Host CPU = the nginx worker's CPU per request; agent CPU = the agent's (it encrypts for snstack)."
    echo
    echo "| file | mode | rep | requests/s | host CPU us/req | agent CPU us/req | wrk errors |"
    echo "|---|---|---:|---:|---:|---:|---|"
} >"$out"
run() { # run MODE PID AGENTPID PORT FILE REP
    local t0 a0=0 t1 a1=0 res req rate err
    taskset -c 1 wrk -t1 -c16 -d2s "https://127.0.0.1:$4/$5" >/dev/null 2>&1 || true
    t0=$(cpu "$2")
    [[ $3 != 0 ]] && a0=$(cpu "$3")
    res=$(taskset -c 1 wrk -t1 -c16 -d"${DURATION}s" "https://127.0.0.1:$4/$5" 2>&1) || true
    t1=$(cpu "$2")
    [[ $3 != 0 ]] && a1=$(cpu "$3")
    req=$(awk '/ requests in /{print $1}' <<<"$res")
    rate=$(awk '/Requests\/sec/{print $2}' <<<"$res")
    err=$(grep -o 'Socket errors.*' <<<"$res" || echo 0)
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$5" "$1" "$6" "$rate" \
        "$(python3 -c "print(round(($t1 - $t0) / 1e3 / $req, 2))")" \
        "$(python3 -c "print(round(($a1 - $a0) / 1e3 / $req, 2))")" "$err" | tee -a "$out"
}
for f in 100k 0b; do
    for r in $(seq "$REPS"); do
        run kernel+openssl "$NK" 0 "$pk" "$f" "$r"
        run snstack+ktls "$NS" "$AG" "$ps_" "$f" "$r"
    done
done
{
    echo
    echo "Agent counters after the runs: $("$REPO/target/release/snstack-agent" stats --socket "$W/a.sock" | grep -E '^tls_tx' | tr '\n' ' ')"
} >>"$out"
echo "bench-https: wrote $out"
