#!/bin/bash
# usage: PAIRS=3 MATCH=... ab.sh  (old in /tmp/old-bin, new in /tmp/newbin)
cd /work/main
for i in $(seq ${PAIRS:-3}); do
 for b in old new; do
  d=${OLD:-/tmp/old-bin}; [[ $b == new ]] && d=/tmp/newbin
  python3 bench/snstack_bench.py --profile full --reps ${REPS:-3} --duration 4 --modes kernel,offload-kernel --pcie off --no-perf --rig ${RIG:-shared} --match ${MATCH:-nginx-ka-0B-w1-c16} --bin-dir $d --out ${OUTP:-/tmp/ab}-$b-$i > ${OUTP:-/tmp/ab}-$b-$i.log 2>&1
  echo "$b $i: $(grep -E '^\| nginx|^\| redis|^\| snstack' ${OUTP:-/tmp/ab}-$b-$i/summary.md | head -3 | tr -s ' ' | cut -c1-200)"
 done
done
