source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/userstack.sh"
userstack_probe
userstack_up
AGENT_LOG_LEVEL=warn userstack_agent ${BK:-afpacket} --iface "$VETH_A"
mkdir -p "$WORKDIR/www/files"; head -c 200000000 /dev/urandom > "$WORKDIR/www/files/f.bin"
userstack_nginx "$WORKDIR/ngx" 8080 "$WORKDIR/www"
wait_http http://$AGENT_IP:8080/hello
in_b curl -s -o /dev/null http://$AGENT_IP:8080/files/f.bin
a0=$(cpu_ticks $AGENT_PID); n0=$(cpu_ticks $NGINX_PID)
t0=$(date +%s.%N)
in_b curl -sS -o /dev/null -w '%{speed_download}\n' http://$AGENT_IP:8080/files/f.bin
t1=$(date +%s.%N)
echo "agent ticks $(( $(cpu_ticks $AGENT_PID) - a0 )) nginx ticks $(( $(cpu_ticks $NGINX_PID) - n0 )) wall $(echo "$t1 - $t0" | bc)"
if command -v perf >/dev/null; then
  (perf record -g -p $AGENT_PID -o $WORKDIR/perf.data -- sleep 3 >/dev/null 2>&1 &) ; in_b curl -s -o /dev/null http://$AGENT_IP:8080/files/f.bin; sleep 1; perf report -i $WORKDIR/perf.data --no-children --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -25
fi
