#!/usr/bin/env bash
# The engines comparison (issue 14, docs/engines.md) end to end on its quick profile: kernel TCP
# and every engine this agent was built with (native, smoltcp, lwip with --features lwip, native
# under --pcie bf2) over one veth pair, every scenario once for 1 s, 100 connections held: the
# report has the engines-compared table with figures for each mode, the feature list, the JSON and
# the plots. No timing assertions: figures here are noise; a scenario that produced nothing fails
# (except the downloads at 1 % loss of smoltcp and lwIP, which may hit the time limit, and lwIP's
# Connection: close, which its TIME-WAIT can stall: reported).
# test-timeout: 900
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/userstack.sh
source "$REPO/tests/userstack.sh"
require_snstack
require_cmd curl wrk ethtool redis-server redis-benchmark "$NGINX_BIN"
userstack_probe
out=$WORKDIR/eng
log "bash ci/bench-engines.sh (REPS=1 DURATION=1 CONNS=100, all modes built)"
OUT=$out REPS=1 DURATION=1 CONNS=100 LOSS_MAXTIME=60 SKIP_BUILD=1 TIME_LIMIT=700 \
    timeout 840 bash "$REPO/ci/bench-engines.sh" >"$WORKDIR/bench.log" 2>&1 </dev/null ||
    fail "bench-engines failed: $(tail -30 "$WORKDIR/bench.log")"
sed -n '/^## Engines compared/,/^## Method/p' "$out.md"
"$PY" - "$out" <<'PY' || fail "the comparison's report is incomplete"
import json, pathlib, sys
out = sys.argv[1]
s = json.loads(pathlib.Path(out + ".json").read_text())
modes = s["meta"]["modes"].split()
assert {"kernel", "agent-kernel", "native", "smoltcp", "native-bf2"} <= set(modes), modes
res = s["results"]
for m in modes:
    for sc in ("wrk100", "close100", "redis"):
        got = res.get(sc, {}).get("rps", {}).get(m)
        if m == "lwip" and sc == "close100":
            # lwIP's TIME-WAIT answers a reused port's SYN with an ACK (docs/engines.md): short
            # connections can stall for a whole run; it must have been tried and reported.
            assert got or res.get(sc, {}).get("failed", {}).get(m), f"{m}: {sc} not run"
            continue
        assert got and got["median"] > 0, f"{m}: no requests/s in {sc}"
        if m != "kernel":
            a = res[sc].get("agent_us", {}).get(m)
            assert a and a["median"] > 0, f"{m}: no agent CPU in {sc}"
    # No bulk, loss or held connections under the PCIe model; no loss rows for Linux TCP in the
    # agent (the same TCP as kernel).
    if m.endswith("-bf2"):
        continue
    assert res["bulk"]["mbps"][m]["median"] > 0, f"{m}: no bulk figure"
    loss = "bulk_loss_off" if m == "dpdk" else "bulk_loss"
    done = res.get(loss, {}).get("mbps", {}).get(m)
    if m == "agent-kernel":
        pass
    elif m in ("kernel", "native", "dpdk"):
        assert done, f"{m}: the download at 1 % loss did not finish"
    else:
        # smoltcp and lwIP may not finish 100 MiB at 1 % loss within the limit (a figure of the
        # comparison, not a defect of the harness): the run must have tried and said so.
        assert done or res.get(loss, {}).get("failed", {}).get(m), f"{m}: no download at 1 % loss"
    if m != "dpdk":
        served = res["conns100"]["served"][m]["median"]
        assert served == 100, f"{m}: {served} of 100 connections served"
md = pathlib.Path(out + ".md").read_text()
for want in ("## Engines compared", "| engine | agent CPU us/req keepalive |", "### What each engine implements",
             "| SACK |", "(e) Connection: close", "(f) redis GET"):
    assert want in md, f"report lacks {want!r}"
rows = [l for l in md.split("## Engines compared", 1)[1].split("\n") if l.startswith("| ") and "engine |" not in l]
names = {"kernel": "kernel TCP", "agent-kernel": "Linux TCP in the agent (--backend kernel)",
         "native": "snstack-tcp (native)", "smoltcp": "smoltcp 0.12", "lwip": "lwIP 2.1.3 (Debian)",
         "dpdk": "snstack-tcp over DPDK", "native-bf2": "snstack-tcp (native) with --pcie bf2"}
for m in modes:
    assert any(l.startswith(f"| {names[m]} |") for l in rows), f"no compared row for {m}"
for p in ("-cpu.png", "-loss.png"):
    f = pathlib.Path(out + p)
    assert f.exists() and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"plot {f.name} missing or not a PNG"
print("modes:", " ".join(modes))
PY
log "report complete: $(grep -c '^| ' "$out.md") table rows, plots written"
