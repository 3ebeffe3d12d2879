#!/usr/bin/env bash
# THE test command (`make test`, `.ci/run`). Steps:
#   deps -> cargo build -> fmt -> clippy -> cargo test -> loom -> [dpdk, lwip: clippy, test, build]
#   -> tests/integration/*.sh
# A build failure stops the run; any other failure is reported and makes the exit status non-zero.
# The last line is `N passed, N failed, N skipped`, counting integration scripts.
#
# Environment: TESTS="10 40"  run only integration scripts whose name starts with these prefixes;
#              SKIP_CARGO=1   skip fmt/clippy/cargo test/loom (build still runs);
#              TEST_TIMEOUT   seconds per integration script (default 300);
#              LOOM_TIMEOUT   seconds for the loom model check (default 900);
#              BUDGET         seconds for the whole run (default 4800).
# Every step is bounded by `timeout`, so a hung step fails instead of eating CI's time.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
[[ -d $HOME/.cargo/bin ]] && PATH=$HOME/.cargo/bin:$PATH
export CARGO_TERM_COLOR=never
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
LOOM_TIMEOUT=${LOOM_TIMEOUT:-900}
# Whole-run budget (CI allows 90 min): integration scripts get at most what is left of it.
BUDGET=${BUDGET:-4800}
LOGDIR=$REPO/target/test-logs
T0=$SECONDS
failed_steps=()

section() { printf '\n==== %s (t+%ds)\n' "$*" $((SECONDS - T0)); }

# step NAME TIMEOUT_S CMD...: run a cargo/check step, bounded; record it when it fails.
step() {
    local name=$1 limit=$2 rc=0 start=$SECONDS
    shift 2
    section "$name: $*"
    timeout -k 10 "$limit" "$@" </dev/null || rc=$?
    if ((rc == 0)); then
        echo "---- $name: ok ($((SECONDS - start))s)"
    else
        ((rc == 124 || rc == 137)) && echo "---- $name: timed out after ${limit}s"
        echo "---- $name: FAILED (exit $rc)"
        failed_steps+=("$name")
    fi
}

section "dependencies"
bash ci/install-deps.sh </dev/null || { echo "install-deps failed"; echo "0 passed, 1 failed"; exit 1; }

section "build: cargo build --release --workspace"
if ! timeout -k 10 1200 cargo build --release --workspace </dev/null; then
    echo "---- build FAILED: nothing else can run"
    echo "0 passed, 1 failed"
    exit 1
fi

if [[ ${SKIP_CARGO:-0} != 1 ]]; then
    step fmt 120 cargo fmt --all -- --check
    step clippy 900 cargo clippy --workspace --all-targets --release -- -D warnings
    step cargo-test 900 cargo test --workspace --release
    if [[ -f shm-proto/tests/loom_wake.rs ]]; then
        step loom "$LOOM_TIMEOUT" env RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
            cargo test -p shm-proto --test loom_wake --test loom_stream --release
    else
        section "loom"
        echo "---- loom: SKIPPED (shm-proto/tests/loom_wake.rs does not exist yet)"
    fi
fi

# Optional parts of the agent built with the system libraries they need, when installed: the
# DPDK device (nic-agent feature `dpdk`, libdpdk) and the lwIP engine (feature `lwip`, liblwip).
# Built last: the agent binary with every feature found (a superset of the default one) must be
# the one in target/release when the integration tests run (`cargo test` above rebuilds the
# binary without them), so that 46-user-stack-dpdk.sh and 44-user-stack-lwip.sh run instead of
# skipping.
features=() crates=()
if pkg-config --exists libdpdk 2>/dev/null; then
    features+=(dpdk) crates+=(-p dpdk-sys)
else
    section "dpdk"
    echo "---- dpdk: SKIPPED (pkg-config finds no libdpdk; ci/install-deps.sh installs libdpdk-dev)"
fi
if pkg-config --exists lwip 2>/dev/null; then
    features+=(lwip) crates+=(-p lwip-sys)
else
    section "lwip"
    echo "---- lwip: SKIPPED (pkg-config finds no lwip; ci/install-deps.sh installs liblwip-dev)"
fi
if ((${#features[@]})); then
    flist=$(IFS=,; echo "${features[*]}")
    nfeat=$(printf 'nic-agent/%s,' "${features[@]}")
    nfeat=${nfeat%,}
    if [[ ${SKIP_CARGO:-0} != 1 ]]; then
        step "clippy-$flist" 900 cargo clippy -p nic-agent "${crates[@]}" --all-targets --release \
            --features "$nfeat" -- -D warnings
        step "cargo-test-$flist" 900 cargo test -p nic-agent "${crates[@]}" --release --features "$nfeat"
    fi
    step "build-$flist" 1200 cargo build --release -p nic-agent --features "$flist"
fi

# Tests with a known, rare, not yet fixed race in snstack (tracked in the issue notes): a failure
# is retried once and reported as RETRY. Each entry must name its race in a comment here.
# None today.
KNOWN_FLAKY=${KNOWN_FLAKY:-""}
section "integration tests (timeout ${TEST_TIMEOUT}s each, logs in ${LOGDIR#"$REPO"/})"
mkdir -p "$LOGDIR"
pass=0 fail=0 skip=0
results=()
for t in tests/integration/[0-9]*.sh; do
    name=$(basename "$t" .sh)
    if [[ -n ${TESTS:-} ]]; then
        want=0
        for p in $TESTS; do [[ $name == "$p"* ]] && want=1; done
        ((want)) || continue
    fi
    logf=$LOGDIR/$name.log
    start=$SECONDS
    # A script may ask for more than TEST_TIMEOUT with a `# test-timeout: S` line.
    own=$(sed -n 's/^# test-timeout: \([0-9][0-9]*\)$/\1/p' "$t" | head -1)
    tlim=$TEST_TIMEOUT
    [[ -n $own ]] && ((own > tlim)) && tlim=$own
    limit=$((BUDGET - (SECONDS - T0)))
    ((limit > tlim)) && limit=$tlim
    if ((limit < 30)); then
        echo "FAIL: $name: not run, the ${BUDGET}s budget of the whole run is used up" >"$logf"
        rc=1
    else
        timeout -k 10 "$limit" bash "$t" >"$logf" 2>&1 </dev/null
        rc=$?
        # Known rare races (see KNOWN_FLAKY): one more run, said loudly, first log kept.
        if ((rc != 0 && rc != 77)) && [[ " $KNOWN_FLAKY " == *" $name "* ]]; then
            printf 'RETRY %-32s first run failed (exit %d, log kept in %s.first): known rare race\n' \
                "$name" "$rc" "${logf#"$REPO"/}"
            mv "$logf" "$logf.first"
            timeout -k 10 "$limit" bash "$t" >"$logf" 2>&1 </dev/null
            rc=$?
        fi
    fi
    dur=$((SECONDS - start))
    case $rc in
    0)
        pass=$((pass + 1))
        results+=("PASS $name")
        printf 'PASS  %-32s %4ds\n' "$name" "$dur"
        ;;
    77)
        skip=$((skip + 1))
        results+=("SKIP $name")
        printf 'SKIP  %-32s %4ds  %s\n' "$name" "$dur" "$(grep -m1 '^SKIP:' "$logf" | cut -d: -f3- | sed 's/^ //')"
        ;;
    *)
        fail=$((fail + 1))
        results+=("FAIL $name")
        why=$(grep -m1 '^FAIL:' "$logf" | cut -d: -f3- | sed 's/^ //')
        ((rc == 124 || rc == 137)) && why="timed out after ${limit}s"
        printf 'FAIL  %-32s %4ds  exit %d: %s\n' "$name" "$dur" "$rc" "$why"
        echo "------ last 40 lines of $logf"
        tail -n 40 "$logf" | sed 's/^/  | /'
        echo "------"
        ;;
    esac
done

section "summary (total $((SECONDS - T0))s)"
if ((${#failed_steps[@]})); then echo "failed checks: ${failed_steps[*]}"; fi
((${#results[@]})) && printf '%s\n' "${results[@]}"
if ((pass + fail + skip == 0)); then
    echo "no integration test ran"
    fail=1
fi
echo "$pass passed, $fail failed, $skip skipped"
((fail == 0 && ${#failed_steps[@]} == 0))
