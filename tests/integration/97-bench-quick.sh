#!/usr/bin/env bash
# The benchmark harness end to end on a tiny scenario (nginx keepalive 0 B, 4 connections, one
# 1 s run per mode, plus snstack-chanbench --quick): JSON per run, summary.md with its tables and
# the SVG plots are written and well formed. No timing assertions: figures here are noise.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd wrk taskset
[[ -x $NGINX_BIN ]] || fail "nginx not installed (run: ci/install-deps.sh)"
out=$WORKDIR/out
log "python3 bench/snstack_bench.py --profile tiny --modes kernel,offload-kernel --out $out"
# offload-user has its own tests (45-*, 46-*); here the harness itself is under test.
timeout 240 "$PY" "$REPO/bench/snstack_bench.py" --profile tiny --modes kernel,offload-kernel --out "$out" \
    --bin-dir "$(dirname "$AGENT_BIN")" >"$WORKDIR/bench.log" 2>&1 </dev/null ||
    fail "harness failed: $(tail -30 "$WORKDIR/bench.log")"
tail -n 12 "$WORKDIR/bench.log"
"$PY" - "$out" <<'PY' || fail "harness output is malformed"
import json, sys, pathlib, xml.etree.ElementTree as ET
out = pathlib.Path(sys.argv[1])
runs = sorted((out / "runs").glob("*.json"))
assert runs, "no run JSON files"
modes = set()
for f in runs:
    r = json.loads(f.read_text())
    if r["scenario"] == "chanbench":
        assert r["results"], f"{f.name}: empty chanbench results"
        continue
    modes.add(r["mode"])
    assert r["ops"] > 0 and r["rate"] > 0, f"{f.name}: no operations"
    assert r["lat_us"].get("p99") is not None, f"{f.name}: no p99"
    assert r["app_cpu_us_per_op"] >= 0, f"{f.name}: bad CPU figure"
    assert r["errors"].get("non2xx", 0) == 0, f"{f.name}: non-2xx responses"
    if r["mode"] != "kernel":
        assert r["chan_bytes_per_op"] > 0, f"{f.name}: no channel bytes"
        assert r["agent_stats_delta"]["h2n_ops"] > 0, f"{f.name}: agent counters did not move"
assert {"kernel", "offload-kernel"} <= modes, f"modes run: {modes}"
s = json.loads((out / "summary.json").read_text())
assert s["points"] and s["machine"]["nproc"] >= 1
md = (out / "summary.md").read_text()
for want in ("## Machine", "## Headline", "| scenario | mode | rate |", "| nginx keepalive 0B w1 c4 | kernel |",
             "| nginx keepalive 0B w1 c4 | offload-kernel |", "snstack-chanbench"):
    assert want in md, f"summary.md lacks {want!r}"
svgs = sorted(out.glob("*.svg"))
assert len(svgs) >= 3, f"plots: {svgs}"
drawn = 0
for f in svgs:
    root = ET.parse(f).getroot()
    assert root.tag.endswith("svg") and len(root) >= 2, f"{f.name}: not an SVG document"
    drawn += any(e.tag.endswith(("path", "rect")) for e in root[2:])
assert drawn >= 2, "fewer than two plots have data"
for f in ("rps_vs_connections.svg", "cpu_per_request.svg"):
    assert "<path" in (out / f).read_text() or "<rect x" in (out / f).read_text(), f"{f}: nothing drawn"
print(f"{len(runs)} run files, modes {sorted(modes)}, {len(svgs)} plots, summary.md {len(md)} bytes")
PY
log "harness output well formed"
