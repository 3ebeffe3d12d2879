# Medians per (scenario, mode) of snstack_bench.py run dirs: python3 summ.py DIR...
import json,glob,sys,statistics as st
for out in sys.argv[1:]:
    by={}
    for f in glob.glob(out+'/runs/*.json'):
        d=json.load(open(f))
        if 'rate' not in d: continue
        by.setdefault((d['scenario'],d['mode']),[]).append(d)
    for (sc,m),rs in sorted(by.items()):
        g=lambda k:[r.get(k) or 0 for r in rs]
        print(f"{out.rstrip('/').split('/')[-1]:20s} {sc:26s} {m:15s} rate {st.median(g('rate')):9.0f} p50 {st.median([r['lat_us']['p50'] for r in rs]):7.1f} p99 {st.median([r['lat_us']['p99'] for r in rs]):7.1f} app {st.median(g('app_cpu_us_per_op')):6.2f} agent {st.median(g('agent_cpu_us_per_op')):6.2f} {sorted(round(x,2) for x in g('agent_cpu_us_per_op'))}")
