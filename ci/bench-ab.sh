#!/usr/bin/env bash
# A/B of two builds of snstack on the nginx side-by-side: per round, one build's agent and a
# preloaded single-process nginx, plus a kernel-TCP nginx, each loaded by `wrk -t1 -cCONNS
# -dDURATION`; rounds alternate old, new, old, new, ... (REPS each) so both builds see the same
# machine. Prints per-run `key value` files and the medians; with PERF=1, one more run of each
# build under `perf record -g` of nginx (reports in $OUT/perf-{old,new}*.txt).
#
#   OLD_LIB=... OLD_AGENT=... NEW_LIB=... NEW_AGENT=... [REPS=3] [DURATION=10] [CONNS=100] \
#   [OUT=dir] [PERF=1] [OLD_ENV="VAR=V ..."] [NEW_ENV="VAR=V ..."] bash ci/bench-ab.sh
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${OLD_LIB:?} ${OLD_AGENT:?} ${NEW_LIB:?} ${NEW_AGENT:?}"
REPS=${REPS:-3}
DURATION=${DURATION:-10}
export WRK_CONNS=${CONNS:-100}
# shellcheck source=tests/lib.sh
source "$REPO/tests/lib.sh"
# shellcheck source=ci/compare.sh
source "$REPO/ci/compare.sh"
OUT=${OUT:-$WORKDIR/ab}
mkdir -p "$OUT"

# voluntary + involuntary context switches of PID
ctxsw() { awk '/^(non)?voluntary_ctxt_switches/ { n += $2 } END { print n }' "/proc/$1/status"; }

# run_cs SIDE DUR OUT: compare_run plus nginx's context switches per request (how often it slept)
run_cs() {
    local pid c0 c1 req
    if [[ $1 == A ]]; then pid=$NGX_A; else pid=$NGX_B; fi
    c0=$(ctxsw "$pid")
    compare_run "$@"
    c1=$(ctxsw "$pid")
    req=$(_kv "$3" requests)
    awk -v d=$((c1 - c0)) -v r="$req" 'BEGIN { printf "nginx_ctxsw_per_req %.3f\n", d / r }' >>"$3"
}

round() { # BUILD REP
    local build=$1 r=$2
    local v
    if [[ $build == old ]]; then PRELOAD=$OLD_LIB AGENT_BIN=$OLD_AGENT; else PRELOAD=$NEW_LIB AGENT_BIN=$NEW_AGENT; fi
    # OLD_ENV / NEW_ENV: space-separated VAR=VALUE for that build's nginx (e.g. SNSTACK_YIELDS=0)
    for v in ${OLD_ENV:-} ${NEW_ENV:-}; do unset "${v%%=*}"; done
    if [[ $build == old ]]; then for v in ${OLD_ENV:-}; do export "${v?}"; done; fi
    if [[ $build == new ]]; then for v in ${NEW_ENV:-}; do export "${v?}"; done; fi
    compare_setup
    run_cs A "$DURATION" "$OUT/$build.$r.kv"
    run_cs B "$DURATION" "$OUT/kernel-$build.$r.kv"
    if [[ ${3:-} == perf ]]; then
        log "perf record -g of nginx $NGX_A during a ${DURATION}s run"
        perf record -q -g -o "$OUT/perf-$build.data" -p "$NGX_A" -- sleep "$((DURATION - 2))" \
            >/dev/null 2>&1 &
        local perf_pid=$!
        run_cs A "$DURATION" "$OUT/$build.perf.kv"
        wait "$perf_pid" || true
        perf report -i "$OUT/perf-$build.data" --no-children --sort symbol --stdio 2>/dev/null |
            grep -v '^$' | head -60 >"$OUT/perf-$build.txt" || true
        perf report -i "$OUT/perf-$build.data" --children --sort symbol --stdio -g none 2>/dev/null |
            grep -E 'snstack::|epoll' | head -30 >"$OUT/perf-$build-children.txt" || true
    fi
    stop_pid "$NGX_A" QUIT 5
    stop_pid "$NGX_B" QUIT 5
    stop_agent
}

for ((r = 1; r <= REPS; r++)); do
    for build in old new; do
        log "round $r/$REPS: $build build"
        round "$build" "$r"
    done
done
if [[ ${PERF:-0} == 1 ]]; then
    round old perf perf
    round new perf perf
fi
for build in old new; do
    median_kv "$OUT/$build.kv" "$OUT"/"$build".[0-9]*.kv
    median_kv "$OUT/kernel-$build.kv" "$OUT"/kernel-"$build".[0-9]*.kv
done
median_kv "$OUT/kernel.kv" "$OUT"/kernel-*.[0-9]*.kv
for f in "$OUT"/{old,new}.[0-9]*.kv "$OUT"/kernel-*.[0-9]*.kv; do
    printf '%s rps %s nginx_cpu_us_per_req %s nginx_ctxsw_per_req %s\n' "$(basename "$f" .kv)" \
        "$(_kv "$f" rps)" "$(_kv "$f" nginx_cpu_us_per_req)" "$(_kv "$f" nginx_ctxsw_per_req)"
done
echo "--- medians (old | new | kernel) ---"
for k in rps nginx_cpu_us_per_req nginx_ctxsw_per_req agent_cpu_us_per_req lat_avg_us lat_p99_us socket_errors non2xx \
    h2n_ops_per_req n2h_ops_per_req; do
    printf '%-24s %10s %10s %10s\n' "$k" "$(_kv "$OUT/old.kv" "$k")" "$(_kv "$OUT/new.kv" "$k")" "$(_kv "$OUT/kernel.kv" "$k")"
done
echo "results in $OUT"
