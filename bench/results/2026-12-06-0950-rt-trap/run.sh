#!/bin/bash
# usage: [RIG=apart|shared] [MATCH=keys] [OUTDIR=dir] run.sh NAME [extra bench args, e.g. --bin-dir DIR]
# Run from anywhere inside the repository; prints the medians of the run (summ.py).
here=$(cd "$(dirname "$0")" && pwd)
cd "$(git -C "$here" rev-parse --show-toplevel)" || exit 1
name=$1; shift
outdir=${OUTDIR:-/tmp/exp}; mkdir -p "$outdir"
out=$outdir/$name-$(date +%H%M%S)
python3 bench/snstack_bench.py --profile full --reps 3 --duration 4 --modes kernel,offload-kernel \
  --pcie off --no-perf --rig "${RIG:-apart}" --match "${MATCH:-nginx-close-0B-w1-c16}" --out "$out" "$@" \
  > "$out.log" 2>&1
python3 "$here/summ.py" "$out"
