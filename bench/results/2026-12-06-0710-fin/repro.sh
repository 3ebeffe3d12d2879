#!/bin/bash
cd /work/main
for i in $(seq ${PAIRS:-3}); do
 for b in old fin; do
  d=/tmp/old-bin; [[ $b == fin ]] && d=/tmp/finbin
  python3 bench/snstack_bench.py --profile full --reps 3 --duration 4 --modes kernel,offload-kernel --pcie off --no-perf --rig ${RIG:-apart} --match ${MATCH} --bin-dir $d --out /tmp/ab2-$b-$i > /tmp/ab2-$b-$i.log 2>&1
  echo "$b $i"; grep -E "^\| nginx" /tmp/ab2-$b-$i/summary.md | grep offload | awk -F'|' '{print $2,"rps",$4,$5,"p99",$8,"app",$10,"ag",$11,"ctx",$13,"wire",$16}'
  grep -E "^\| nginx" /tmp/ab2-$b-$i/summary.md | grep "kernel |" | awk -F'|' '{print $2,"rps",$4,"app",$10}'
 done
done
