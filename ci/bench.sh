#!/usr/bin/env bash
# Benchmarks (`make bench`): builds the release binaries and runs bench/snstack_bench.py, which
# runs every scenario (nginx+wrk, redis-benchmark, sockperf, snstack-chanbench) in every available
# mode (kernel TCP, snstack with the kernel backend, snstack under the PCIe model) and writes
# bench/results/<timestamp>/{summary.md,summary.json,runs/*.json,*.svg}. See bench/README.md.
#
#   QUICK=1        the quick profile (a few minutes); PROFILE=full|quick|tiny picks one directly
#   SKIP_BUILD=1   use the binaries already built
#   BENCH_ARGS     extra harness flags, e.g. "--reps 5 --duration 6" or "--only nginx"
#   SHARED=0       skip the shared-rig run (agent on the application's core: bench/README.md)
#   HTTPS=0        skip ci/bench-https.sh (nginx HTTPS: kTLS on the agent vs OpenSSL in user space)
#   ENGINES=0      skip ci/bench-engines.sh (kernel vs the agent's engines over a veth pair, as root;
#                  run after the harness in the full and quick profiles: bench/results/*-engines.*)
# Honours CARGO_TARGET_DIR (the binaries are taken from its release/ directory).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
[[ -d $HOME/.cargo/bin ]] && PATH=$HOME/.cargo/bin:$PATH
QUICK=${QUICK:-0}
if [[ -z ${PROFILE:-} ]]; then
    if [[ $QUICK == 1 ]]; then PROFILE=quick; else PROFILE=full; fi
fi

bash ci/install-deps.sh </dev/null
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "building: cargo build --release --workspace"
    cargo build --release --workspace </dev/null
fi
export BENCH_COMMAND=${BENCH_COMMAND:-"PROFILE=$PROFILE bash ci/bench.sh${BENCH_ARGS:+ (BENCH_ARGS=$BENCH_ARGS)}"}
# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
python3 bench/snstack_bench.py --profile "$PROFILE" ${BENCH_ARGS:-} </dev/null
# The shared rig (bench/README.md, *Two rigs*): the agent on the application's core, the load
# generator alone on the other; requests/s with the agent sharing the machine, the agent's CPU
# when it does not share the client's core, and sockperf's latency (a client alone on its core
# measures the path, not its own threads' scheduling beside the agent).
if [[ ${SHARED:-1} == 1 && ($PROFILE == full || $PROFILE == quick) ]]; then
    # shellcheck disable=SC2086
    python3 bench/snstack_bench.py --profile "$PROFILE" --rig shared --modes kernel,offload-kernel \
        --pcie off --only nginx,redis,sockperf \
        --match nginx-ka-0B-w1-c16,nginx-ka-100KB-w1-c16,nginx-close-0B-w1-c16,redis-get-P1,sockperf-ping-pong,sockperf-under-load \
        --out "bench/results/$(date -u +%Y-%m-%d-%H%M)-shared" ${BENCH_ARGS:-} </dev/null
fi
if [[ ${ENGINES:-1} == 1 && ($PROFILE == full || $PROFILE == quick) ]]; then
    q=0
    [[ $PROFILE == quick ]] && q=1
    rc=0
    QUICK=$q SKIP_BUILD=${SKIP_BUILD:-0} BENCH_ENGINES_COMMAND="$BENCH_COMMAND: ci/bench-engines.sh" \
        bash ci/bench-engines.sh </dev/null || rc=$?
    # 77: skipped (not root, no network namespaces)
    [[ $rc == 0 || $rc == 77 ]] || exit "$rc"
fi
# HTTPS with kTLS on the agent (also under --pcie bf2) vs OpenSSL in user space on kernel TCP
# (issue 13): 0 B, 100 KB, 1 MB.
if [[ ${HTTPS:-1} == 1 && ($PROFILE == full || $PROFILE == quick) ]]; then
    if [[ $PROFILE == quick ]]; then reps=1 dur=4; else reps=3 dur=6; fi
    REPS=$reps DURATION=$dur SKIP_BUILD=1 bash ci/bench-https.sh </dev/null
fi
# The TCP engine's own CPU per small request (no devices, channel or scheduling), beside the
# agent's figures above: 100 / 1,000 / 10,000 connections.
if [[ -x target/release/snstack-enginebench && ($PROFILE == full || $PROFILE == quick) ]]; then
    out=bench/results/$(date -u +%Y-%m-%d-%H%M)-enginebench.txt
    {
        echo "# $BENCH_COMMAND: target/release/snstack-enginebench CONNS ROUNDS RUNS"
        if [[ $PROFILE == quick ]]; then
            target/release/snstack-enginebench 100 500 3
        else
            target/release/snstack-enginebench 100 2000 5
            target/release/snstack-enginebench 1000 300 3
            target/release/snstack-enginebench 10000 40 3
        fi
    } >"$out" </dev/null
    cat "$out"
fi
