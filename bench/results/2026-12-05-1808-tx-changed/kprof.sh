#!/bin/bash
TAG=$1; shift
D=/tmp/ng/$TAG; rm -rf $D; mkdir -p $D
taskset -c 0 nginx -p /tmp/ng/ -c /tmp/ng/nginx.conf -e /tmp/ng/error.log > $D/nginx.log 2>&1 &
NP=$!; sleep 1
taskset -c 1 wrk -t1 -c16 -d1s http://127.0.0.1:18080/files/0B > /dev/null
c0=$(awk '{print $14+$15}' /proc/$NP/stat)
taskset -c 1 wrk -t1 "$@" > $D/wrk.txt
c1=$(awk '{print $14+$15}' /proc/$NP/stat)
req=$(awk '/requests in/{print $1}' $D/wrk.txt)
echo "$TAG req=$req nginx_us/req=$(echo "($c1-$c0)*10000/$req" | bc -l | cut -c1-5)"
kill -QUIT $NP; wait $NP 2>/dev/null
