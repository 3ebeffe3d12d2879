#!/usr/bin/env python3
"""Where sockperf's slow replies wait (repro.sh): reads `perf script` of sched_switch/waking and
sockperf's --full-log, finds the client's receiver thread (the sockperf thread with the fewest
events) and prints how long it waited between its wake-up and getting the CPU, per reply."""
import bisect, collections, re, sys

sched, full = sys.argv[1], sys.argv[2]
ev = []
for line in open(sched):
    m = re.match(r'\s*(\S.*?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+): sched:(\w+): (.*)', line)
    if m:
        comm, _pid, tid, cpu, t, e, rest = m.groups()
        ev.append((float(t) * 1e6, int(cpu), comm, int(tid), e, rest))
per_tid = collections.Counter((c, t) for _, _, c, t, _, _ in ev)
sock = sorted(((n, t) for (c, t), n in per_tid.items() if c == "sockperf"), reverse=True)
recv_tid = sock[-1][1]  # the receiver: woken once per reply
woken = [x[0] for x in ev if x[4] == "sched_waking" and re.search(rf"\bpid={recv_tid}\b", x[5])]
runs = [x[0] for x in ev if x[4] == "sched_switch" and f"next_pid={recv_tid} " in x[5] + " "]
wait = []
for t in woken:
    j = bisect.bisect_left(runs, t)
    if j < len(runs):
        wait.append(runs[j] - t)
v = sorted(wait)
print(f"receiver tid {recv_tid}: {len(v)} wake-ups; wake-up to run p50 {v[len(v)//2]:.0f} us, "
      f"p90 {v[int(len(v)*.9)]:.0f}, p99 {v[int(len(v)*.99)]:.0f}, over 30 us: {sum(w > 30 for w in v)}")
lat = [float(l.split(",")[3]) for l in open(full) if l[:1].isdigit()]
print(f"sockperf samples {len(lat)}: one-way over 40 us: {sum(x > 40 for x in lat)}")
