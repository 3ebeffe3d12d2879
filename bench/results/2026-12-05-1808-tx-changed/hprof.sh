#!/bin/bash
TAG=$1; shift
B=${B:-/work/main/target/release}; D=/tmp/ng/$TAG; rm -rf $D; mkdir -p $D
taskset -c 1 $B/snstack-agent --socket $D/a.sock --backend kernel --realtime auto > $D/agent.log 2>&1 &
AP=$!; for i in $(seq 50); do [ -S $D/a.sock ] && break; sleep 0.1; done
taskset -c 0 $B/snstack-http --agent $D/a.sock --listen 127.0.0.1:18081 --root /tmp/ng > $D/http.log 2>&1 &
NP=$!; sleep 1
taskset -c 1 wrk -t1 -c16 -d1s http://127.0.0.1:18081/hello > /dev/null
if [ -n "$PERF" ]; then perf record -q -g -o $D/perf.data -p $NP -- sleep 4 & PF=$!; fi
c0=$(awk '{print $14+$15}' /proc/$NP/stat); a0=$(awk '{print $14+$15}' /proc/$AP/stat)
taskset -c 1 wrk -t1 "$@" > $D/wrk.txt
c1=$(awk '{print $14+$15}' /proc/$NP/stat); a1=$(awk '{print $14+$15}' /proc/$AP/stat)
[ -n "$PERF" ] && wait $PF
req=$(awk '/requests in/{print $1}' $D/wrk.txt)
echo "$TAG req=$req http_us/req=$(echo "($c1-$c0)*10000/$req" | bc -l | cut -c1-5) agent_us/req=$(echo "($a1-$a0)*10000/$req" | bc -l | cut -c1-5)"
kill $NP; wait $NP 2>/dev/null; kill $AP; wait $AP 2>/dev/null
