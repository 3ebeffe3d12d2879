#!/usr/bin/env python3
"""snstack benchmark harness (`make bench`): every scenario in every available mode, one run.

Modes
  kernel          the application on kernel TCP (no preload)
  offload-kernel  the application under libsnstack.so, snstack-agent --backend kernel
  offload-user    the agent's user-space backend (needs a netns + veth fixture; skipped when the
                  agent has none, see UserFixture)
  ...+pcie        the headline scenarios again with the agent's PCIe model (--pcie bf2)

Scenarios: nginx + wrk (keepalive / Connection: close, 0 B / 1 KB / 100 KB, 1 and 2 workers,
a connection sweep), redis-server + redis-benchmark (GET/SET, -P 1 / -P 16), sockperf ping-pong
and under-load at fixed --mps, and the channel micro-benchmark snstack-chanbench.

Only the server application runs under snstack; load generators (wrk, redis-benchmark, sockperf
client) use kernel TCP in every mode. Everything runs in a private network namespace (when root),
so the loopback counters of /proc/net/dev count our traffic only: they are the "wire bytes".

Output: bench/results/<timestamp>/{runs/*.json, summary.md, summary.json, *.svg}.
python3 standard library only. See bench/README.md for what every figure means.
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import svgplot  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
NETNS_ENV = "SNSTACK_BENCH_IN_NETNS"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')} bench] {msg}", flush=True)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Processes: every child is recorded by PID and stopped by PID (never by name).


class Procs:
    def __init__(self):
        self.children = []

    def start(self, argv, log_path, env=None, cpus=None):
        if cpus:
            argv = ["taskset", "-c", cpus] + list(argv)
        f = open(log_path, "ab")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, start_new_session=False)
        f.close()
        self.children.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, grace=5.0):
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log(f"pid {p.pid} ignored signal {sig} for {grace}s: SIGKILL")
                p.kill()
                p.wait()
        if p in self.children:
            self.children.remove(p)
        return p.returncode

    def stop_all(self):
        for p in reversed(list(self.children)):
            self.stop(p, grace=3.0)


PROCS = Procs()


def run_cmd(argv, timeout, cpus=None, env=None, check=True):
    """Runs a load generator in the foreground; returns its stdout+stderr text."""
    if cpus:
        argv = ["taskset", "-c", cpus] + list(argv)
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{argv[0]} timed out after {timeout}s") from e
    out = r.stdout.decode(errors="replace")
    if check and r.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {r.returncode}: {out[-800:]}")
    return out


# --------------------------------------------------------------------------------------------
# /proc readers


def tree_pids(pid):
    """pid and its descendants (nginx master + workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def cpu_seconds(pids):
    """CPU time of pids in seconds, to the nanosecond: each process's CPU clock (the scheduler's
    run time of all its threads, those that exited included: clock_gettime on the clock id
    Linux derives from the pid) plus reaped children (cutime+cstime, in ticks). utime+stime alone
    come in clock ticks: 10 ms, a tenth of what a payload-API server spends in a 3 s run. Falls
    back to them where the clock cannot be read."""
    t = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        try:
            # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) of include/linux/posix-timers.h.
            ns = time.clock_gettime_ns(((~p) << 3) | 2)
            t += ns / 1e9 + sum(int(x) for x in fields[13:15]) / CLK_TCK
        except OSError:
            t += sum(int(x) for x in fields[11:15]) / CLK_TCK
    return t


def ctx_switches(pids):
    v = n = 0
    for p in pids:
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches"):
                            v += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches"):
                            n += int(line.split()[1])
            except OSError:
                pass
    return v, n


def rss_shmem_kib(pids):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("RssShmem:"):
                        t += int(line.split()[1])
        except OSError:
            pass
    return t


def lo_counters():
    """(bytes, packets) sent on lo in this network namespace: every packet once."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                v = rest.split()
                return int(v[8]), int(v[9])
    return 0, 0


class ShmSampler(threading.Thread):
    """Peak RssShmem of the agent and of the application during a run (every 100 ms)."""

    def __init__(self, agent_pids, app_pids):
        super().__init__(daemon=True)
        self.agent_pids, self.app_pids = agent_pids, app_pids
        self.peak_agent = self.peak_app = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.peak_agent = max(self.peak_agent, rss_shmem_kib(self.agent_pids))
            self.peak_app = max(self.peak_app, rss_shmem_kib(self.app_pids))
            self.halt.wait(0.1)

    def stop(self):
        self.halt.set()
        self.join()


# --------------------------------------------------------------------------------------------
# Agent


class Agent:
    def __init__(self, binary, workdir, cpus, extra, label, prefix=()):
        self.binary, self.cpus, self.extra, self.label = binary, cpus, list(extra), label
        self.dir = Path(tempfile.mkdtemp(prefix="agent.", dir=workdir))
        self.sock = self.dir / "agent.sock"
        self.log = self.dir / "agent.log"
        self.argv = [str(binary), "--socket", str(self.sock), "--log-level", "info"] + self.extra
        self.p = PROCS.start(list(prefix) + self.argv, self.log, cpus=cpus)
        for _ in range(100):
            if self.sock.exists():
                break
            if self.p.poll() is not None:
                raise BenchError(f"agent exited {self.p.returncode}: {self.log.read_text()[-500:]}")
            time.sleep(0.1)
        else:
            raise BenchError("agent did not create its socket in 10 s")
        log(f"agent ({label}) pid {self.p.pid} on cpus {cpus}: {' '.join(self.extra) or 'defaults'}")

    def stats(self):
        out = run_cmd([str(self.binary), "stats", "--socket", str(self.sock)], timeout=10)
        d = {}
        for line in out.splitlines():
            k, _, v = line.partition(" ")
            if v.strip().isdigit():
                d[k] = int(v)
        return d

    def region_bytes(self):
        m = re.findall(r"region=(\d+)", self.log.read_text(errors="replace"))
        return int(m[-1]) if m else None

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        rc = PROCS.stop(self.p, grace=10)
        if rc not in (0, None):
            log(f"warning: agent exited with status {rc}")


def agent_backends(binary):
    try:
        h = run_cmd([str(binary), "--help"], timeout=10)
    except BenchError:
        return set()
    return {b for b in ("kernel", "afpacket", "dpdk") if b in h}


class LoopNet:
    """kernel and offload-kernel modes: everything on the loopback of the benchmark namespace."""

    addr = "127.0.0.1"
    prefix = []
    wire_name = "lo (tx: every packet once)"

    def wire(self):
        return lo_counters()


class UserFixture:
    """`offload-user`: the agent's user-space stack on one end of a veth pair.

        netns A: agent --backend afpacket --iface vA --ip 10.77.X.2/24   (vA up, no kernel address)
        netns B: load generators, vB 10.77.X.1/24
        the server application stays in the benchmark namespace: its sockets all live in the agent

    Offloads are off on both ends (af_packet wants complete, MTU-sized frames). Wire bytes: rx+tx
    of vA (every frame once, Ethernet header included). setup()/teardown() create and delete the
    two namespaces (the veth pair goes with them)."""

    def __init__(self, binary):
        self.backends = agent_backends(binary)
        tag = f"{os.getpid() & 0xffff:04x}"
        self.ns_a, self.ns_b = f"snbA-{tag}", f"snbB-{tag}"
        self.veth_a, self.veth_b = f"sba{tag}", f"sbb{tag}"
        sub = f"10.77.{(os.getpid() % 250) + 1}"
        self.addr, self.peer = f"{sub}.2", f"{sub}.1"
        self.prefix = ["ip", "netns", "exec", self.ns_b]
        self.agent_prefix = ["ip", "netns", "exec", self.ns_a]
        self.wire_name = f"veth {self.veth_a} (rx+tx: every frame once)"
        self.agent_pid = None
        self.up = False

    def available(self):
        if "afpacket" not in self.backends:
            return False, "snstack-agent has no user-space backend (--help does not name afpacket)"
        if os.geteuid() != 0:
            return False, "needs root (network namespaces, AF_PACKET)"
        if not shutil.which("ip") or not shutil.which("ethtool"):
            return False, "needs ip (iproute2) and ethtool (ci/install-deps.sh)"
        return True, ""

    def agent_args(self):
        return ["--backend", "afpacket", "--iface", self.veth_a, "--ip", f"{self.addr}/24", "--max-sockets", "4096"]

    def setup(self):
        sh = lambda *a: subprocess.run(a, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: E731
        soft = lambda *a: subprocess.run(a, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: E731
        try:
            sh("ip", "netns", "add", self.ns_a)
            sh("ip", "netns", "add", self.ns_b)
            self.up = True
            sh("ip", "link", "add", self.veth_a, "netns", self.ns_a, "type", "veth", "peer", "name", self.veth_b,
               "netns", self.ns_b)
            for ns, v in ((self.ns_a, self.veth_a), (self.ns_b, self.veth_b)):
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                soft("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{v}.disable_ipv6=1")
                soft("ip", "netns", "exec", ns, "ethtool", "-K", v, "tx", "off", "tso", "off", "gso", "off", "gro", "off")
            sh("ip", "-n", self.ns_a, "link", "set", self.veth_a, "up")
            sh("ip", "-n", self.ns_b, "addr", "add", f"{self.peer}/24", "dev", self.veth_b)
            sh("ip", "-n", self.ns_b, "link", "set", self.veth_b, "up")
        except (subprocess.CalledProcessError, OSError) as e:
            self.teardown()
            raise BenchError(f"offload-user fixture: {e}") from e
        log(f"fixture: {self.ns_a}/{self.veth_a} (agent {self.addr}) <-> {self.ns_b}/{self.veth_b} ({self.peer})")

    def wire(self):
        try:
            with open(f"/proc/{self.agent_pid}/net/dev") as f:
                for line in f:
                    name, _, rest = line.partition(":")
                    if name.strip() == self.veth_a:
                        v = rest.split()
                        return int(v[0]) + int(v[8]), int(v[1]) + int(v[9])
        except OSError:
            pass
        return 0, 0

    def teardown(self):
        if self.up:
            for ns in (self.ns_a, self.ns_b):
                subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.up = False


# --------------------------------------------------------------------------------------------
# Scenarios. Each run() returns {"ops": N, "rate": ops/s, "lat_us": {p: v}, "wire_note": ...}


WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('SNSTACK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,"mean_us":%.2f',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean))
  for _, p in ipairs({50, 75, 90, 99, 99.9, 99.99}) do
    io.write(string.format(',"p%s":%d', p, latency:percentile(p)))
  end
  io.write("}\n")
end
"""

SIZES = {"0B": 0, "1KB": 1024, "100KB": 100 * 1024}


class Nginx:
    kind = "nginx"

    def __init__(self, h, size="0B", conns=16, workers=1, close=False):
        self.h, self.size, self.conns, self.workers, self.close = h, size, conns, workers, close
        self.name = f"nginx {'close' if close else 'keepalive'} {size} w{workers} c{conns}"
        self.key = f"nginx-{'close' if close else 'ka'}-{size}-w{workers}-c{conns}"
        self.unit = "req"

    def start(self, env, cpus, port):
        d = Path(tempfile.mkdtemp(prefix="nginx.", dir=self.h.workdir))
        # With master_process on, workers run as `nobody`: they must be able to read the files.
        os.chmod(d, 0o755)
        (d / "files").mkdir(mode=0o755)
        for name, n in SIZES.items():
            (d / "files" / name).write_bytes(os.urandom(n))
        for t in ("b", "p", "f", "u", "s"):
            (d / "tmp" / t).mkdir(parents=True)
        master = "on" if self.workers > 1 else "off"
        (d / "nginx.conf").write_text(f"""daemon off; master_process {master}; worker_processes {self.workers};
error_log {d}/error.log warn; pid {d}/nginx.pid;
events {{ worker_connections {max(4096, self.conns * 3 // 2)}; }}
http {{ access_log off; sendfile on; tcp_nopush off; keepalive_timeout 65; keepalive_requests 10000000;
  open_file_cache max=64 inactive=60s; open_file_cache_valid 600s;
  default_type application/octet-stream;
  client_body_temp_path {d}/tmp/b; proxy_temp_path {d}/tmp/p; fastcgi_temp_path {d}/tmp/f;
  uwsgi_temp_path {d}/tmp/u; scgi_temp_path {d}/tmp/s;
  server {{ listen {self.h.net.addr}:{port} backlog=4096; location /files/ {{ root {d}; }} }} }}
""")
        self.argv = [self.h.nginx, "-p", f"{d}/", "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"]
        self.url = f"http://{self.h.net.addr}:{port}/files/{self.size}"
        self.lua = d / "report.lua"
        self.lua.write_text(WRK_LUA)
        return PROCS.start(self.argv, d / "stdout.log", env=env, cpus=cpus), " ".join(self.argv)

    def load_argv(self, dur):
        # 10,000 connects at once overflow a 4,096 backlog: the SYNs retried after 1-3 s are not
        # the server's latency, so only a longer wait tells a stall from a slow start.
        timeout = "2s" if self.conns < 1000 else "10s"
        a = ["wrk", "-t1", f"-c{self.conns}", f"-d{dur}s", "--timeout", timeout, "-s", str(self.lua)]
        if self.close:
            a += ["-H", "Connection: close"]
        return a + [self.url]

    def warmup(self, cpus):
        self.h.load(["wrk", "-t1", f"-c{min(self.conns, 8)}", "-d1s", self.url], timeout=30)

    def run(self, dur, cpus):
        out = self.h.load(self.load_argv(dur), timeout=dur + 60)
        m = re.search(r"^SNSTACK_JSON (\{.*\})$", out, re.M)
        if not m:
            raise BenchError(f"wrk printed no report: {out[-500:]}")
        j = json.loads(m.group(1))
        errs = j["err_connect"] + j["err_read"] + j["err_write"] + j["err_timeout"]
        if j["requests"] <= 0:
            raise BenchError(f"wrk made no requests: {out[-500:]}")
        if j["err_status"]:
            raise BenchError(f"{j['err_status']} non-2xx responses: the server is misconfigured")
        return {
            "ops": j["requests"], "rate": j["requests"] / (j["duration_us"] / 1e6),
            "lat_us": {"p50": j["p50"], "p90": j["p90"], "p99": j["p99"], "p99.9": j["p99.9"],
                       "p75": j["p75"], "p99.99": j["p99.99"], "mean": j["mean_us"]},
            "errors": {"socket": errs, "non2xx": j["err_status"]},
            "payload_bytes_client": j["bytes"],
        }


class Redis:
    kind = "redis"

    def __init__(self, h, test="get", pipeline=1, clients=50):
        self.h, self.test, self.pipeline, self.clients = h, test, pipeline, clients
        self.name = f"redis {test.upper()} -P {pipeline} c{clients}"
        self.key = f"redis-{test}-P{pipeline}"
        self.unit = "req"

    def start(self, env, cpus, port):
        d = Path(tempfile.mkdtemp(prefix="redis.", dir=self.h.workdir))
        self.port = port
        self.argv = ["redis-server", "--port", str(port), "--bind", self.h.net.addr, "--save", "",
                     "--appendonly", "no", "--dir", str(d), "--protected-mode", "no"]
        return PROCS.start(self.argv, d / "stdout.log", env=env, cpus=cpus), " ".join(self.argv)

    def n_requests(self, dur):
        return int(dur * (150_000 if self.pipeline > 1 else 25_000))

    def load_argv(self, dur):
        return ["redis-benchmark", "-h", self.h.net.addr, "-p", str(self.port), "-t", self.test,
                "-n", str(self.n_requests(dur)), "-c", str(self.clients), "-P", str(self.pipeline),
                "-d", "64", "--precision", "3"]

    def warmup(self, cpus):
        self.h.load(["redis-benchmark", "-h", self.h.net.addr, "-p", str(self.port), "-t", "set,get",
                     "-n", "5000", "-c", "8", "-q"], timeout=60)

    def run(self, dur, cpus):
        n = self.n_requests(dur)
        out = self.h.load(self.load_argv(dur), timeout=dur * 20 + 60)
        m = re.search(r"throughput summary: ([\d.]+) requests per second", out)
        if not m:
            raise BenchError(f"redis-benchmark printed no summary: {out[-500:]}")
        # "Latency by percentile distribution": `P% <= X milliseconds`; the first line at or
        # above a percentile is its (upper-bound) value.
        dist = []
        sect = out.split("Latency by percentile distribution:", 1)[-1].split("Cumulative distribution", 1)[0]
        for pm in re.finditer(r"([\d.]+)% <= ([\d.]+) milliseconds", sect):
            dist.append((float(pm.group(1)), round(float(pm.group(2)) * 1000, 1)))
        lat = {}
        for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9)):
            lat[name] = next((v for pc, v in dist if pc >= q), None)
        s = re.search(r"avg\s+min\s+p50\s+p95\s+p99\s+max\s*\n\s*([\d.]+)", out)
        if s:
            lat["mean"] = round(float(s.group(1)) * 1000, 1)
        return {"ops": n, "rate": float(m.group(1)), "lat_us": lat, "errors": {}}


def spin_env(env, spin_us):
    """A payload-API server that busy-polls `spin_us` before it sleeps on its doorbell
    (`SNSTACK_SPIN_US`): the configuration of a server that owns its core, as XLIO's and
    TCPDirect's polling servers do. It trades host CPU (the poll spins between requests) for
    system calls (the sleeps it no longer makes); 0 keeps the default (sleep at once)."""
    if spin_us:
        env["SNSTACK_SPIN_US"] = str(spin_us)


class KvApi(Redis):
    """snstack-kv (the payload API: RESP framed by the agent, no socket) under redis-benchmark's load;
    compared with redis-server on kernel TCP and under the preload."""
    kind = "payload"
    payload = True

    def __init__(self, h, test="get", pipeline=1, clients=50, spin_us=0):
        super().__init__(h, test, pipeline, clients)
        self.spin_us = spin_us
        sfx = f" spin {spin_us} us" if spin_us else ""
        self.name = f"snstack-kv {test.upper()} -P {pipeline} c{clients}{sfx}"
        self.key = f"kv-{test}-P{pipeline}" + (f"-spin{spin_us}" if spin_us else "")
        self.base_key = f"redis-{test}-P{pipeline}"

    def start(self, env, cpus, port):
        d = Path(tempfile.mkdtemp(prefix="kv.", dir=self.h.workdir))
        self.port = port
        spin_env(env, self.spin_us)
        self.argv = [str(self.h.bin / "snstack-kv"), "--agent", env["SNSTACK_AGENT"],
                     "--listen", f"{self.h.net.addr}:{port}"]
        return PROCS.start(self.argv, d / "stdout.log", env=env, cpus=cpus), " ".join(self.argv)


class HttpApi(Nginx):
    """snstack-http (the payload API: HTTP/1.1 requests framed by the agent) under wrk's load;
    compared with nginx on kernel TCP and under the preload."""
    kind = "payload"
    payload = True

    def __init__(self, h, size="0B", conns=16, close=False, spin_us=0):
        super().__init__(h, size, conns, 1, close)
        self.spin_us = spin_us
        sfx = f" spin {spin_us} us" if spin_us else ""
        self.name = f"snstack-http {'close' if close else 'keepalive'} {size} c{conns}{sfx}"
        self.base_key = self.key
        self.key = f"http-{'close' if close else 'ka'}-{size}-c{conns}" + (f"-spin{spin_us}" if spin_us else "")

    def start(self, env, cpus, port):
        d = Path(tempfile.mkdtemp(prefix="http.", dir=self.h.workdir))
        spin_env(env, self.spin_us)
        (d / "files").mkdir()
        for name, n in SIZES.items():
            (d / "files" / name).write_bytes(os.urandom(n))
        self.argv = [str(self.h.bin / "snstack-http"), "--agent", env["SNSTACK_AGENT"],
                     "--listen", f"{self.h.net.addr}:{port}", "--root", str(d)]
        self.url = f"http://{self.h.net.addr}:{port}/files/{self.size}"
        self.lua = d / "report.lua"
        self.lua.write_text(WRK_LUA)
        return PROCS.start(self.argv, d / "stdout.log", env=env, cpus=cpus), " ".join(self.argv)


class Sockperf:
    kind = "sockperf"

    def __init__(self, h, mode="ping-pong", mps=None, size=64):
        self.h, self.mode, self.mps, self.size = h, mode, mps, size
        rate = f" --mps {mps}" if mps else ""
        self.name = f"sockperf {mode}{rate} {size}B"
        self.key = f"sockperf-{mode}" + (f"-{mps}" if mps else "")
        self.unit = "msg"

    def start(self, env, cpus, port):
        d = Path(tempfile.mkdtemp(prefix="sockperf.", dir=self.h.workdir))
        self.port = port
        self.argv = ["sockperf", "server", "--tcp", "-i", self.h.net.addr, "-p", str(port)]
        return PROCS.start(self.argv, d / "stdout.log", env=env, cpus=cpus), " ".join(self.argv)

    def load_argv(self, dur):
        a = ["sockperf", self.mode, "--tcp", "-i", self.h.net.addr, "-p", str(self.port), "-t", str(dur),
             "-m", str(self.size)]
        if self.mps:
            a += ["--mps", str(self.mps)]
        return a

    def warmup(self, cpus):
        pass  # sockperf runs its own warm-up stage (excluded from its statistics)

    def run(self, dur, cpus):
        out = self.h.load(self.load_argv(dur), timeout=dur + 60)
        out = re.sub(r"\x1b\[[0-9;]*m", "", out)
        tot = re.search(r"\[Total Run\] RunTime=([\d.]+) sec.*?SentMessages=(\d+); ReceivedMessages=(\d+)", out)
        val = re.search(r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)", out)
        if not tot or not val:
            raise BenchError(f"sockperf printed no summary: {out[-600:]}")
        lat = {}
        for pm in re.finditer(r"percentile ([\d.]+) =\s+([\d.]+)", out):
            q = float(pm.group(1))
            key = "p" + (f"{q:g}")
            lat.setdefault(key, float(pm.group(2)))
        mean = re.search(r"avg-latency=([\d.]+)", out)
        if mean:
            lat["mean"] = float(mean.group(1))
        # sockperf reports one-way latency (half the round trip).
        # Messages the client sent: under-load, the server answers only a sample of them.
        return {"ops": int(tot.group(2)), "rate": int(val.group(2)) / float(val.group(1)),
                "lat_us": lat, "errors": {}, "latency_is": "one-way (RTT/2), sockperf"}


# --------------------------------------------------------------------------------------------
# Harness


def pin_plan(args):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        app, other = str(cpus[0]), str(cpus[1])
        # apart: the agent stands for the NIC's own cores (never the application's), so it shares
        # the load generator's. shared: the agent takes the kernel's place on the application's
        # core and the load generator has the other one, as a remote client would.
        agent = app if args.rig == "shared" else other
        plan = {"app": app, "app_multi": f"{cpus[0]},{cpus[1]}", "agent": agent, "load": other}
    else:
        c = str(cpus[0])
        plan = {"app": c, "app_multi": c, "agent": c, "load": c}
    for k in plan:
        v = os.environ.get(f"BENCH_PIN_{k.upper()}")
        if v:
            plan[k] = v
    return plan


def machine_info(h):
    def first(argv, pat=None):
        try:
            out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10).stdout.decode()
        except (OSError, subprocess.TimeoutExpired):
            return "n/a"
        if pat:
            m = re.search(pat, out)
            return m.group(1) if m else out.strip().splitlines()[0] if out.strip() else "n/a"
        return out.strip().splitlines()[0] if out.strip() else "n/a"

    model = "n/a"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1048576
    commit = first(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.strip()
    return {
        "nproc": os.cpu_count(), "cpu_model": model, "kernel": " ".join(os.uname()[2:5:2]),
        "kernel_release": os.uname().release, "mem_gib": round(mem, 1),
        "nginx": first([h.nginx, "-v"], r"nginx/([\S]+)"), "wrk": first(["wrk", "-v"], r"wrk ([\S]+)"),
        "redis": first(["redis-server", "--version"], r"v=([\S]+)"),
        "sockperf": first(["sockperf", "--version"], r"version ([\S]+)"),
        "perf": first(["perf", "--version"]), "python": sys.version.split()[0],
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "load_at_start": open("/proc/loadavg").read().split()[:3],
    }


def perf_works():
    try:
        r = subprocess.run(["perf", "stat", "-e", "raw_syscalls:sys_enter", "--", "true"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)
        return r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def med(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else None


class Harness:
    def __init__(self, args):
        self.args = args
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.bin = Path(args.bin_dir)
        self.agent_bin = self.bin / "snstack-agent"
        self.lib = self.bin / "libsnstack.so"
        self.chanbench_bin = self.bin / "snstack-chanbench"
        self.out = Path(args.out)
        (self.out / "runs").mkdir(parents=True, exist_ok=True)
        self.workdir = tempfile.mkdtemp(prefix="snstack-bench.")
        os.chmod(self.workdir, 0o755)
        self.pins = pin_plan(args)
        self.perf = perf_works() and not args.no_perf
        self.points = []  # one dict per (scenario, mode)
        self.skipped = []
        self.commands = {}
        # Below the ephemeral range (32768-60999): after a `Connection: close` run thousands of
        # client ports sit in TIME_WAIT there, and a server port among them fails to bind.
        self.next_port = 10000 + os.getpid() % 10000
        self.net = LoopNet()

    def port(self):
        self.next_port += 1
        return self.next_port

    def load(self, argv, timeout):
        """Runs a load generator on the load CPUs, in the network the current mode uses."""
        return run_cmd(self.net.prefix + list(argv), timeout=timeout, cpus=self.pins["load"])

    # One point: start the server in `mode`, warm up, REPS timed runs + one perf run, stop.
    def point(self, sc, mode, agent):
        pins = self.pins
        app_cpus = pins["app_multi"] if getattr(sc, "workers", 1) > 1 else pins["app"]
        env = dict(os.environ)
        for k in ("LD_PRELOAD", "SNSTACK_OFFLOAD", "SNSTACK_STRICT"):
            env.pop(k, None)
        payload = getattr(sc, "payload", False)
        if payload and not agent:
            raise BenchError(f"{sc.name}: the payload API needs the agent")
        if agent and payload:
            # A payload-API server speaks the channel itself: no preload.
            env["SNSTACK_AGENT"] = str(agent.sock)
        elif agent:
            env.update({"LD_PRELOAD": str(self.lib), "SNSTACK_AGENT": str(agent.sock), "SNSTACK_STRICT": "1"})
        port = self.port()
        proc, cmd = sc.start(env, app_cpus, port)
        self.commands.setdefault(sc.kind, set()).add(cmd.replace(str(self.workdir), "$W"))
        try:
            self._wait_listen(port, proc)
            if agent and not payload:
                with open(f"/proc/{proc.pid}/maps") as f:
                    if "libsnstack" not in f.read():
                        raise BenchError(f"{sc.name}: libsnstack.so not mapped into pid {proc.pid}")
            sc.warmup(pins["load"])
            runs = []
            for r in range(self.args.reps):
                runs.append(self.measure(sc, mode, agent, proc, r + 1, perf=False))
            sysc = self.measure(sc, mode, agent, proc, 0, perf=True) if self.perf else None
        finally:
            PROCS.stop(proc, sig=signal.SIGQUIT if sc.kind == "nginx" else signal.SIGTERM, grace=10)
        pt = self.aggregate(sc, mode, runs, sysc)
        pt["pinning"] = {"app": app_cpus, "agent": pins["agent"] if agent else None, "load": pins["load"]}
        self.points.append(pt)
        rate = pt["rate"]["median"]
        log(f"  {mode:<22} {sc.name:<36} {rate:>12,.0f} {sc.unit}/s  p99 {pt['lat_us'].get('p99')} us  "
            f"app {pt['app_cpu_us_per_op']['median']:.2f} us/{sc.unit}"
            + (f"  agent {pt['agent_cpu_us_per_op']['median']:.2f}" if agent else "")
            + (f"  syscalls {pt['syscalls_per_op']:.3f}/{sc.unit}" if pt.get("syscalls_per_op") is not None else ""))

    def _wait_listen(self, port, proc):
        if self.net.prefix:
            # The server is reachable only from the peer namespace: probe from there.
            probe = ("import socket,sys,time\nfor _ in range(150):\n    s=socket.socket(); s.settimeout(0.5)\n"
                     "    try:\n        s.connect((sys.argv[1], int(sys.argv[2]))); sys.exit(0)\n"
                     "    except OSError:\n        time.sleep(0.1)\n    finally:\n        s.close()\nsys.exit(1)\n")
            r = subprocess.run(self.net.prefix + [sys.executable, "-c", probe, self.net.addr, str(port)],
                               timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if r.returncode != 0 or proc.poll() is not None:
                raise BenchError(f"nothing listening on {self.net.addr}:{port} (server status {proc.poll()})")
            return
        import socket
        for _ in range(150):
            if proc.poll() is not None:
                raise BenchError(f"server exited {proc.returncode} before listening on {port}")
            s = socket.socket()
            s.settimeout(0.5)
            try:
                s.connect((self.net.addr, port))
                return
            except OSError:
                time.sleep(0.1)
            finally:
                s.close()
        raise BenchError(f"nothing listening on {port} after 15 s")

    def measure(self, sc, mode, agent, proc, rep, perf):
        app = tree_pids(proc.pid)
        ag = [agent.p.pid] if agent else []
        s0 = agent.stats() if agent else {}
        c0, a0 = cpu_seconds(app), cpu_seconds(ag)
        x0, y0 = ctx_switches(app), ctx_switches(ag)
        w0 = self.net.wire()
        sampler = ShmSampler(ag, app)
        sampler.start()
        perfp = None
        if perf:
            pf = Path(self.workdir) / f"perf.{os.getpid()}.{time.time_ns()}.txt"
            perfp = subprocess.Popen(["taskset", "-c", self.pins["load"], "perf", "stat", "-x", ",", "-e",
                                      "raw_syscalls:sys_enter", "-o", str(pf), "-p", ",".join(map(str, app))],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            PROCS.children.append(perfp)
            time.sleep(0.3)
        t0 = time.monotonic()
        dur = self.args.perf_duration if perf else self.args.duration
        try:
            res = sc.run(dur, self.pins["load"])
        finally:
            sampler.stop()
            if perfp:
                PROCS.stop(perfp, sig=signal.SIGINT, grace=10)
        wall = time.monotonic() - t0
        c1, a1 = cpu_seconds(app), cpu_seconds(ag)
        x1, y1 = ctx_switches(app), ctx_switches(ag)
        w1 = self.net.wire()
        s1 = agent.stats() if agent else {}
        if proc.poll() is not None:
            raise BenchError(f"{sc.name}: server died during the run")
        if agent and not agent.alive():
            raise BenchError("agent died during the run")
        ops = res["ops"]
        d = {k: s1.get(k, 0) - s0.get(k, 0) for k in s1}
        chan_bytes = d.get("h2n_bytes", 0) + d.get("n2h_bytes", 0)
        chan_ops = d.get("h2n_ops", 0) + d.get("n2h_ops", 0)
        wire_bytes = w1[0] - w0[0]
        rec = {
            "scenario": sc.key, "name": sc.name, "kind": sc.kind, "mode": mode, "rep": rep,
            "perf_run": perf, "unit": sc.unit, "duration_s": dur, "wall_s": round(wall, 3),
            "ops": ops, "rate": res["rate"], "lat_us": res["lat_us"], "errors": res.get("errors", {}),
            "app_pids": app, "agent_pid": agent.p.pid if agent else None,
            "app_cpu_s": c1 - c0, "agent_cpu_s": a1 - a0,
            "app_cpu_us_per_op": (c1 - c0) * 1e6 / ops,
            "agent_cpu_us_per_op": (a1 - a0) * 1e6 / ops if agent else None,
            "app_ctxsw_per_op": (x1[0] - x0[0] + x1[1] - x0[1]) / ops,
            "app_ctxsw_vol_invol": [x1[0] - x0[0], x1[1] - x0[1]],
            "agent_ctxsw_per_op": (y1[0] - y0[0] + y1[1] - y0[1]) / ops if agent else None,
            "wire_bytes": wire_bytes, "wire_packets": w1[1] - w0[1], "wire_counter": self.net.wire_name,
            "wire_bytes_per_op": wire_bytes / ops,
            "peak_shm_kib": {"agent": sampler.peak_agent, "app": sampler.peak_app},
            "agent_stats_delta": d,
            "channel_bytes": s1.get("channel_bytes") if agent else None,
        }
        if agent:
            rec.update({
                "chan_bytes_per_op": chan_bytes / ops, "chan_ops_per_op": chan_ops / ops,
                "h2n_ops_per_op": d.get("h2n_ops", 0) / ops, "n2h_ops_per_op": d.get("n2h_ops", 0) / ops,
                "chan_wire_ratio": chan_bytes / wire_bytes if wire_bytes else None,
                "chan_wire_ratio_with_entries": (chan_bytes + 64 * chan_ops) / wire_bytes if wire_bytes else None,
                "pcie_delay_us_per_op": d.get("pcie_delay_ns", 0) / 1e3 / ops,
                "region_bytes": agent.region_bytes(),
            })
        if perf:
            n = None
            try:
                for line in pf.read_text().splitlines():
                    if "raw_syscalls:sys_enter" in line:
                        n = int(line.split(",")[0])
            except (OSError, ValueError):
                n = None
            rec["syscalls"] = n
            rec["syscalls_per_op"] = n / ops if n is not None else None
        name = f"{sc.key}.{mode}.{'perf' if perf else f'rep{rep}'}.json"
        (self.out / "runs" / name).write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
        return rec

    def aggregate(self, sc, mode, runs, sysc):
        def stat(key, sub=None):
            vals = [(r[key] if sub is None else r[key].get(sub)) for r in runs]
            vals = [v for v in vals if v is not None]
            if not vals:
                return None
            return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}

        pt = {"scenario": sc.key, "base": getattr(sc, "base_key", sc.key), "name": sc.name, "kind": sc.kind,
              "mode": mode, "unit": sc.unit,
              "reps": len(runs), "rate": stat("rate"),
              "lat_us": {k: med([r["lat_us"].get(k) for r in runs]) for k in runs[0]["lat_us"]},
              "app_cpu_us_per_op": stat("app_cpu_us_per_op"),
              "agent_cpu_us_per_op": stat("agent_cpu_us_per_op"),
              "app_ctxsw_per_op": med([r["app_ctxsw_per_op"] for r in runs]),
              "agent_ctxsw_per_op": med([r["agent_ctxsw_per_op"] for r in runs]),
              "wire_bytes_per_op": med([r["wire_bytes_per_op"] for r in runs]),
              "peak_shm_kib_agent": max(r["peak_shm_kib"]["agent"] for r in runs),
              "peak_shm_kib_app": max(r["peak_shm_kib"]["app"] for r in runs),
              "errors": sum(sum(r["errors"].values()) for r in runs),
              "syscalls_per_op": sysc["syscalls_per_op"] if sysc else None}
        for k in ("chan_bytes_per_op", "chan_ops_per_op", "h2n_ops_per_op", "n2h_ops_per_op", "chan_wire_ratio",
                  "chan_wire_ratio_with_entries", "pcie_delay_us_per_op"):
            pt[k] = med([r.get(k) for r in runs])
        pt["region_bytes"] = runs[-1].get("region_bytes")
        cb = [r.get("channel_bytes") for r in runs if r.get("channel_bytes") is not None]
        pt["channel_mib"] = round(max(cb) / 2**20, 1) if cb else None
        return pt

    def chanbench(self, mode, agent):
        if not self.chanbench_bin.exists():
            self.skipped.append(f"chanbench ({mode}): {self.chanbench_bin} not built")
            return
        # The host side (the first CPU) on another core than the agent's on any rig: the round
        # trip crosses cores as it does between a host and its NIC.
        if self.pins["agent"] != self.pins["app"]:
            cpus = f"{self.pins['app']},{self.pins['agent']}"
        else:
            cpus = f"{self.pins['load']},{self.pins['app']}"
        argv = [str(self.chanbench_bin), "--socket", str(agent.sock), "--json", "--cpus", cpus]
        if self.args.quick:
            argv.append("--quick")
        self.commands.setdefault("chanbench", set()).add(" ".join(argv).replace(str(self.workdir), "$W"))
        res = []
        for r in range(self.args.reps):
            out = run_cmd(argv, timeout=300)
            recs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            rec = {"scenario": "chanbench", "mode": mode, "rep": r + 1, "results": recs}
            (self.out / "runs" / f"chanbench.{mode}.rep{r + 1}.json").write_text(json.dumps(rec, indent=1) + "\n")
            res.append(recs)

        def pick(bench, field, **match):
            v = []
            for recs in res:
                for x in recs:
                    if x.get("bench") == bench and all(x.get(k) == w for k, w in match.items()) and field in x:
                        v.append(x[field])
            return {"median": statistics.median(v), "min": min(v), "max": max(v)} if v else None

        pt = {"scenario": "chanbench", "name": "snstack-chanbench", "kind": "chanbench", "mode": mode,
              "reps": len(res), "cacheline_rtt_ns": pick("cacheline_rtt", "median_ns"),
              "agent_rtt_ns": pick("agent_nop_rtt", "median_ns"), "agent_rtt_p99_ns": pick("agent_nop_rtt", "p99_ns"),
              "stream_gbps": {str(c): pick("stream", "gbps", chunk=c) for c in (64, 1024, 16384)},
              "sleep_wake_ns": pick("sleep_wake", "cpu_ns_per_wake")}
        self.points.append(pt)
        a = pt["agent_rtt_ns"]
        log(f"  {mode:<22} snstack-chanbench: agent round trip median {a and a['median']} ns")

    def safe(self, fn, what):
        try:
            fn()
        except BenchError as e:
            log(f"FAILED {what}: {e}")
            self.skipped.append(f"{what}: FAILED: {e}")


def scenarios(h, profile):
    """The matrix per profile: (full list, headline list for the PCIe model)."""
    N, R, S = Nginx, Redis, Sockperf
    if profile == "tiny":
        full = [N(h, "0B", 4)]
        return full, [N(h, "0B", 4)], [4]
    if profile == "quick":
        sweep = [1, 16, 128]
        full = [N(h, "0B", c) for c in sweep] + [
            N(h, "100KB", 16), N(h, "0B", 16, close=True), N(h, "100KB", 16, close=True),
            R(h, "get", 1), R(h, "set", 16),
            S(h, "ping-pong"), S(h, "under-load", mps=10000)]
        full += [KvApi(h, "get", 1), KvApi(h, "set", 16), HttpApi(h, "0B", 16), HttpApi(h, "0B", 16, close=True)]
        head = [N(h, "0B", 16), N(h, "0B", 16, close=True), R(h, "get", 1), S(h, "ping-pong")]
        return full, head, sweep
    sweep = [1, 4, 16, 64, 256]
    full = [N(h, "0B", c) for c in sweep]
    full += [N(h, s, 16) for s in ("1KB", "100KB")]
    full += [N(h, s, 16, workers=2) for s in ("0B", "1KB", "100KB")]
    full += [N(h, "0B", 16, close=True), N(h, "1KB", 16, close=True), N(h, "100KB", 16, close=True),
             N(h, "0B", 16, workers=2, close=True)]
    # 10,000 keepalive connections through one worker: errors, throughput, channel memory.
    full += [N(h, "0B", 10000)]
    full += [R(h, t, p) for t in ("get", "set") for p in (1, 16)]
    full += [S(h, "ping-pong"), S(h, "under-load", mps=10000), S(h, "under-load", mps=50000)]
    # The payload API's servers, against the same loads as redis-server and nginx above.
    full += [KvApi(h, t, p) for t in ("get", "set") for p in (1, 16)]
    full += [HttpApi(h, "0B", 16), HttpApi(h, "0B", 64), HttpApi(h, "1KB", 16),
             HttpApi(h, "0B", 16, close=True)]
    # The same servers owning their core: they spin 1 ms before sleeping, so under load they make
    # no system call at all, at the price of the CPU they spin (no-syscall target, issue 11).
    full += [KvApi(h, "get", 1, spin_us=1000), HttpApi(h, "0B", 16, spin_us=1000)]
    # --payload-spins: the same two at other spins (where the sleeps go as the spin grows).
    for us in dict.fromkeys(u for u in h.args.payload_spins if u and u != 1000):
        full += [KvApi(h, "get", 1, spin_us=us), HttpApi(h, "0B", 16, spin_us=us)]
    head = [N(h, "0B", 16), N(h, "100KB", 16), N(h, "0B", 16, close=True), R(h, "get", 1), R(h, "get", 16),
            S(h, "ping-pong"), S(h, "under-load", mps=10000)]
    return full, head, sweep


# --------------------------------------------------------------------------------------------
# Report


def fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, dict):
        m, lo, hi = v["median"], v["min"], v["max"]
        if lo == hi:
            return fmt(m, nd)
        return f"{fmt(m, nd)} [{fmt(lo, nd)}-{fmt(hi, nd)}]"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}".replace(",", " ")
        return f"{v:.{nd}f}"
    return str(v)


def medv(v):
    return v["median"] if isinstance(v, dict) else v


def ratio(a, b):
    a, b = medv(a), medv(b)
    if a is None or b in (None, 0):
        return "-"
    return f"{a / b:.2f}x"


def report(h, info, t_start, headline_keys):
    pts = h.points
    base = {p["scenario"]: p for p in pts if p["mode"] == "kernel"}
    modes = []
    for p in pts:
        if p["mode"] not in modes:
            modes.append(p["mode"])
    L = []
    L.append(f"# snstack benchmark, {time.strftime('%Y-%m-%d %H:%M', time.localtime(t_start))}")
    L.append("")
    L.append(f"Command: `{h.args.command_line}` ({h.args.profile} profile, {h.args.reps} timed repetitions of "
             f"{h.args.duration} s per point, plus one {h.args.perf_duration} s run under `perf stat` for "
             f"syscalls). Wall time {time.time() - t_start:.0f} s. Commit `{info['commit']}`.")
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append(f"- {info['nproc']} CPUs: {info['cpu_model']}; {info['mem_gib']} GiB; Linux {info['kernel_release']}")
    L.append(f"- nginx {info['nginx']}, wrk {info['wrk']}, redis {info['redis']}, sockperf {info['sockperf']}, "
             f"{info['perf']}, python {info['python']}")
    L.append(f"- load average at start: {' '.join(info['load_at_start'])}, at end: {' '.join(info.get('load_at_end', ['?']))}"
             + ("; other jobs shared the machine, figures are noisy" if float(info["load_at_start"][0]) > 0.5 else ""))
    L.append(f"- network: {'private network namespace (unshare --net), loopback only' if os.environ.get(NETNS_ENV) else 'host network namespace: lo counters include other traffic'}"
             + ("; offload-user: agent's user-space stack (af_packet) on a veth pair between two more namespaces, "
                "load generators in the peer namespace" if any(p["mode"] == "offload-user" for p in h.points) else ""))
    L.append(f"- pinning (taskset -c, rig `{h.args.rig}`): application {h.pins['app']} (2-worker nginx: "
             f"{h.pins['app_multi']}), agent {h.pins['agent']}, load generator {h.pins['load']}")
    L.append("")
    if h.skipped:
        L.append("## Not run")
        L.append("")
        for s in h.skipped:
            L.append(f"- {s}")
        L.append("")

    # Headline.
    L.append("## Headline (medians; ratio = mode / kernel)")
    L.append("")
    hdr_modes = [m for m in modes if m != "kernel"]
    L.append("| scenario | kernel rate | " + " | ".join(f"{m} rate" for m in hdr_modes)
             + " | kernel p99 us | " + " | ".join(f"{m} p99" for m in hdr_modes)
             + " | kernel app CPU us/op | " + " | ".join(f"{m} app + agent CPU us/op" for m in hdr_modes) + " |")
    L.append("|---|" + "---:|" * (3 + 3 * len(hdr_modes)))
    by = {(p["scenario"], p["mode"]): p for p in pts}
    for key in headline_keys:
        k = by.get((key, "kernel"))
        if not k:
            continue
        row = [k["name"], fmt(medv(k["rate"]), 0)]
        for m in hdr_modes:
            p = by.get((key, m))
            row.append(f"{fmt(medv(p['rate']), 0)} ({ratio(p['rate'], k['rate'])})" if p else "-")
        row.append(fmt(k["lat_us"].get("p99"), 1))
        for m in hdr_modes:
            p = by.get((key, m))
            row.append(f"{fmt(p['lat_us'].get('p99'), 1)} ({ratio(p['lat_us'].get('p99'), k['lat_us'].get('p99'))})"
                       if p else "-")
        row.append(fmt(medv(k["app_cpu_us_per_op"])))
        for m in hdr_modes:
            p = by.get((key, m))
            row.append(f"{fmt(medv(p['app_cpu_us_per_op']))} ({ratio(p['app_cpu_us_per_op'], k['app_cpu_us_per_op'])})"
                       f" + {fmt(medv(p['agent_cpu_us_per_op']))}" if p else "-")
        L.append("| " + " | ".join(row) + " |")
    L.append("")

    # Per scenario.
    L.append("## Every point (median [min-max] over the timed repetitions)")
    L.append("")
    L.append("rate: requests or messages per second. Latency in us (wrk: request latency; redis-benchmark: "
             "upper bound of the bucket; sockperf: one-way = RTT/2). CPU: each process's CPU clock "
             "(clock_gettime, ns, all its threads; + reaped children) of the application's process tree and "
             "of the agent, per request/message. "
             "syscalls: `perf stat -e raw_syscalls:sys_enter -p <app pids>` in a separate run. ctxsw: "
             "voluntary+involuntary of every application thread. chan: agent counters h2n+n2h payload bytes "
             "and operations. wire: bytes of all packets sent on lo in the benchmark's network namespace "
             "(headers included, each packet once); chan/wire = payload bytes crossing the channel / wire "
             "bytes (+entries: counting 64 B per command/event). shm: peak RssShmem (KiB) of agent / app.")
    L.append("")
    kinds = []
    for p in pts:
        if p["kind"] not in kinds and p["kind"] != "chanbench":
            kinds.append(p["kind"])
    for kind in kinds:
        L.append(f"### {kind}")
        L.append("")
        L.append("| scenario | mode | rate | vs kernel | p50 | p90 | p99 | p99.9 | app CPU us/op | agent CPU us/op "
                 "| syscalls/op | app ctxsw/op | chan B/op | chan ops/op | wire B/op | chan/wire | +entries | shm agent/app KiB | channel MiB | errors |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for p in [p for p in pts if p["kind"] == kind]:
            k = base.get(p.get("base", p["scenario"]))
            lat = p["lat_us"]
            L.append("| " + " | ".join([
                p["name"], p["mode"], fmt(p["rate"], 0), ratio(p["rate"], k["rate"]) if k else "-",
                fmt(lat.get("p50"), 1), fmt(lat.get("p90"), 1), fmt(lat.get("p99"), 1), fmt(lat.get("p99.9"), 1),
                fmt(p["app_cpu_us_per_op"]), fmt(p["agent_cpu_us_per_op"]), fmt(p["syscalls_per_op"], 3),
                fmt(p["app_ctxsw_per_op"], 3), fmt(p["chan_bytes_per_op"], 0), fmt(p["chan_ops_per_op"]),
                fmt(p["wire_bytes_per_op"], 0), fmt(p["chan_wire_ratio"]), fmt(p["chan_wire_ratio_with_entries"]),
                f"{p['peak_shm_kib_agent']}/{p['peak_shm_kib_app']}", fmt(p.get("channel_mib"), 1),
                str(p["errors"])]) + " |")
        L.append("")
    pay = [p for p in pts if p["kind"] == "payload"]
    if pay:
        L.append("## Payload API (whole messages, no sockets) vs the same server on kernel TCP and under the preload")
        L.append("")
        L.append("Each payload-API server beside the stock server it stands in for, under the same load, in one run: "
                 "host CPU per request (the application's process, ratio to the kernel-TCP server), syscalls per "
                 "request on the host (`perf stat` run), requests/s, latency, the channel's payload bytes and "
                 "operations per request, and the agent's CPU per request. Targets (issue 11): host CPU at most "
                 "0.1x the kernel server's for GET/SET -P 1 and HTTP keepalive 0 B; no syscalls per request. The "
                 "`spin 1000 us` rows are the same servers busy-polling 1 ms before they sleep (a server that owns "
                 "its core): no system call under load, but CPU per request is then the spinning core's time "
                 "divided by the rate, not work.")
        L.append("")
        L.append("| scenario | mode | host CPU us/req: kernel server / preload / payload (ratio) | syscalls/req: kernel / payload "
                 "| req/s: kernel / payload (ratio) | p50 us | p99 us | chan B/req | chan ops/req | agent CPU us/req |")
        L.append("|---|---|---|---|---|---:|---:|---:|---:|---:|")
        for p in pay:
            k = base.get(p["base"])
            pre = by.get((p["base"], p["mode"]))
            kc = medv(k["app_cpu_us_per_op"]) if k else None
            pc = medv(p["app_cpu_us_per_op"])
            L.append("| " + " | ".join([
                p["name"], p["mode"],
                f"{fmt(kc)} / {fmt(medv(pre['app_cpu_us_per_op'])) if pre else '-'} / {fmt(pc)} "
                f"({ratio(p['app_cpu_us_per_op'], k['app_cpu_us_per_op']) if k else '-'})",
                f"{fmt(k['syscalls_per_op'], 3) if k else '-'} / {fmt(p['syscalls_per_op'], 3)}",
                f"{fmt(medv(k['rate']), 0) if k else '-'} / {fmt(medv(p['rate']), 0)} "
                f"({ratio(p['rate'], k['rate']) if k else '-'})",
                fmt(p["lat_us"].get("p50"), 1), fmt(p["lat_us"].get("p99"), 1),
                fmt(p["chan_bytes_per_op"], 0), fmt(p["chan_ops_per_op"]), fmt(medv(p["agent_cpu_us_per_op"]))]) + " |")
        L.append("")
    cb = [p for p in pts if p["kind"] == "chanbench"]
    if cb:
        L.append("### channel micro-benchmark (snstack-chanbench)")
        L.append("")
        L.append("| mode | cache-line RTT ns | agent OP_NOP RTT ns | RTT p99 ns | stream 64 B GB/s | 1 KiB | 16 KiB "
                 "| sleep + wake-up, sleeper CPU ns |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for p in cb:
            s = p["stream_gbps"]
            L.append(f"| {p['mode']} | {fmt(p['cacheline_rtt_ns'], 0)} | {fmt(p['agent_rtt_ns'], 0)} | "
                     f"{fmt(p['agent_rtt_p99_ns'], 0)} | {fmt(s['64'])} | {fmt(s['1024'])} | {fmt(s['16384'])} "
                     f"| {fmt(p.get('sleep_wake_ns'), 0)} |")
        L.append("")
        L.append("The last column is what one sleep on a futex and the wake-up from the other core cost the "
                 "sleeper (a host thread sleeping on its doorbell): a server that finds N requests per "
                 "wake-up pays at least this / N per request.")
        L.append("")
        L.append("The stream figures move bytes through a `Stream` between two pinned threads without the agent, "
                 "so the PCIe model does not apply to them; the agent round trip crosses the model twice "
                 "(command read, completion publish).")
        L.append("")

    pc = [m for m in modes if "pcie" in m]
    if pc:
        L.append("## Under the PCIe model")
        L.append("")
        L.append("How the offload figures move when every channel crossing costs the modelled latency and bytes "
                 "pass a bandwidth cap (`snstack-agent --pcie bf2`: 500 ns per crossing, 25 GB/s). The wait is "
                 "spent spinning in the agent, so it shows up in agent CPU; `pcie delay` is that part.")
        L.append("")
        L.append("| scenario | rate off -> model | p50 us | p99 us | agent CPU us/op | pcie delay us/op |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for m in pc:
            basemode = m.replace("+pcie", "")
            for p in [p for p in pts if p["mode"] == m and p["kind"] != "chanbench"]:
                o = by.get((p["scenario"], basemode))
                if not o:
                    continue
                L.append(f"| {p['name']} | {fmt(medv(o['rate']), 0)} -> {fmt(medv(p['rate']), 0)} "
                         f"({ratio(p['rate'], o['rate'])}) | {fmt(o['lat_us'].get('p50'), 1)} -> "
                         f"{fmt(p['lat_us'].get('p50'), 1)} | {fmt(o['lat_us'].get('p99'), 1)} -> "
                         f"{fmt(p['lat_us'].get('p99'), 1)} | {fmt(medv(o['agent_cpu_us_per_op']))} -> "
                         f"{fmt(medv(p['agent_cpu_us_per_op']))} | {fmt(p['pcie_delay_us_per_op'])} |")
        L.append("")

    L.append("## Commands")
    L.append("")
    L.append("`$W` is the run's temp dir; ports vary. Offload modes add `LD_PRELOAD=<target>/release/libsnstack.so "
             "SNSTACK_AGENT=$W/agent.*/agent.sock SNSTACK_STRICT=1` to the server's environment.")
    L.append("")
    L.append("```")
    for a in h.agent_cmds:
        L.append(a)
    for kind, cmds in h.commands.items():
        for c in sorted(cmds)[:4]:
            L.append(c)
    L.append("wrk -t1 -cN -dDs --timeout 2s -s report.lua [-H 'Connection: close'] http://127.0.0.1:PORT/files/{0B,1KB,100KB}")
    L.append("redis-benchmark -t get|set -n N -c 50 -P 1|16 -d 64 --precision 3")
    L.append("sockperf ping-pong|under-load --tcp -i 127.0.0.1 -p PORT -t D -m 64 [--mps R]")
    L.append("perf stat -x, -e raw_syscalls:sys_enter -p <app pids>   # separate run, syscall counts only")
    L.append("```")
    L.append("")
    L.append("Plots: [rps_vs_connections.svg](rps_vs_connections.svg), [latency_percentiles.svg](latency_percentiles.svg), "
             "[cpu_per_request.svg](cpu_per_request.svg), [nginx_latency.svg](nginx_latency.svg).")
    return "\n".join(L) + "\n"


def plots(h, sweep):
    pts = h.points
    modes = []
    for p in pts:
        if p["mode"] not in modes and p["kind"] != "chanbench":
            modes.append(p["mode"])
    out = {}
    series = []
    for m in modes:
        s = []
        for c in sweep:
            p = next((p for p in pts if p["mode"] == m and p["scenario"] == f"nginx-ka-0B-w1-c{c}"), None)
            if p:
                r = p["rate"]
                s.append((c, r["median"], r["min"], r["max"]))
        if s:
            series.append((m, s))
    out["rps_vs_connections.svg"] = svgplot.line_chart(
        "nginx keepalive, 0 B, 1 worker: requests/s vs connections", "wrk connections (log scale)", "requests/s",
        series, logx=len(sweep) > 1, xticks=sweep)

    def pct_series(scenario):
        ser = []
        for m in modes:
            p = next((p for p in pts if p["mode"] == m and p["scenario"] == scenario), None)
            if not p:
                continue
            s = []
            for k, v in p["lat_us"].items():
                if k.startswith("p") and v is not None:
                    q = float(k[1:])
                    if 0 < q < 100:
                        s.append((1 / (1 - q / 100), v, None, None))
            if s:
                ser.append((m, s))
        return ser

    ticks = [2, 10, 100, 1000, 10000]
    labels = ["p50", "p90", "p99", "p99.9", "p99.99"]
    out["latency_percentiles.svg"] = svgplot.line_chart(
        "sockperf ping-pong, 64 B: one-way latency by percentile", "percentile", "latency (us, log scale)",
        pct_series("sockperf-ping-pong"), logx=True, xticks=ticks, xticklabels=labels, logy=True)
    nk = "nginx-ka-0B-w1-c16" if any(p["scenario"] == "nginx-ka-0B-w1-c16" for p in pts) else \
        next((p["scenario"] for p in pts if p["kind"] == "nginx"), "")
    out["nginx_latency.svg"] = svgplot.line_chart(
        f"{nk}: request latency by percentile (wrk)", "percentile", "latency (us, log scale)",
        pct_series(nk), logx=True, xticks=ticks, xticklabels=labels, logy=True)

    groups = []
    seen = []
    for p in pts:
        if p["kind"] != "chanbench" and p["scenario"] not in seen:
            seen.append(p["scenario"])
    wanted = [s for s in seen if s in ("nginx-ka-0B-w1-c16", "nginx-ka-100KB-w1-c16", "nginx-close-0B-w1-c16",
                                       "redis-get-P1", "redis-get-P16", "sockperf-ping-pong")] or seen[:4]
    short = {"kernel": "kern", "offload-kernel": "offl", "offload-user": "user", "offload-kernel+pcie": "pcie"}
    for s in wanted:
        bars = []
        for m in modes:
            p = next((p for p in pts if p["mode"] == m and p["scenario"] == s), None)
            if p:
                bars.append((short.get(m, m[:5]), [medv(p["app_cpu_us_per_op"]), medv(p["agent_cpu_us_per_op"])]))
        groups.append((s.replace("nginx-", "").replace("-w1-c16", ""), bars))
    out["cpu_per_request.svg"] = svgplot.stacked_bars(
        "CPU per request: app + agent (kern: kernel TCP, offl: offload, user: user stack, pcie: +model)",
        "CPU us per request", groups, ["application", "agent"])
    for name, svg in out.items():
        (h.out / name).write_text(svg)
    return list(out)


# --------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=["full", "quick", "tiny"], default=os.environ.get("PROFILE", "full"))
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per point (full 3, quick 1, tiny 1)")
    ap.add_argument("--duration", type=int, default=None, help="seconds per timed run (full 4, quick 2, tiny 1)")
    ap.add_argument("--perf-duration", type=int, default=None, help="seconds of the perf (syscall) run")
    ap.add_argument("--out", default=None, help="output dir (default bench/results/<timestamp>)")
    ap.add_argument("--bin-dir", default=None, help="dir with snstack-agent, libsnstack.so, snstack-chanbench")
    ap.add_argument("--modes", default="kernel,offload-kernel,offload-user")
    ap.add_argument("--only", default="", help="comma list of scenario kinds (nginx,redis,sockperf,chanbench)")
    ap.add_argument("--match", default="", help="comma list: keep scenarios whose key contains one of these "
                    "(keys: nginx-ka-0B-w1-c16, nginx-close-1KB-w1-c16, redis-get-P16, sockperf-ping-pong, ...)")
    ap.add_argument("--pcie", default="bf2", help="PCIe preset for the model re-run; 'off' skips it")
    ap.add_argument("--no-perf", action="store_true", help="skip the syscall-counting runs")
    ap.add_argument("--agent-realtime", choices=["auto", "off"], default="auto",
                    help="the agents' --realtime (auto: real-time priority while lightly loaded on a "
                         "shared CPU; the agent shares the load generators' CPU here)")
    ap.add_argument("--agent-arg", dest="agent_extra", action="append", default=[],
                    help="one more argument for every agent (repeatable), e.g. --agent-arg=--host-poll-us=0")
    ap.add_argument("--no-netns", action="store_true", help="stay in the current network namespace")
    ap.add_argument("--payload-spins", default="", type=lambda v: [int(x) for x in v.split(",") if x],
                    help="comma list of microseconds: the payload API's GET -P 1 and HTTP keepalive "
                         "points again with their servers spinning that long before they sleep "
                         "(full profile; 1000 is always there), e.g. 3,10,30,100")
    ap.add_argument("--rig", choices=["apart", "shared"], default=os.environ.get("BENCH_RIG", "apart"),
                    help="where the agent runs on a 2-core machine: apart (default: not on the "
                         "application's core, on the load generator's) or shared (on the "
                         "application's core, the load generator alone on the other); bench/README.md")
    args = ap.parse_args()
    args.command_line = os.environ.get("BENCH_COMMAND") or "python3 bench/snstack_bench.py " + " ".join(sys.argv[1:])
    dflt = {"full": (3, 4, 3), "quick": (1, 2, 2), "tiny": (1, 1, 1)}[args.profile]
    args.reps = args.reps or dflt[0]
    args.duration = args.duration or dflt[1]
    args.perf_duration = args.perf_duration or dflt[2]
    args.quick = args.profile != "full"
    if args.bin_dir is None:
        tgt = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
        args.bin_dir = str(Path(tgt) / "release")

    if not args.no_netns and os.geteuid() == 0 and not os.environ.get(NETNS_ENV) and shutil.which("unshare"):
        env = dict(os.environ, **{NETNS_ENV: "1", "BENCH_COMMAND": args.command_line})
        argv = ["unshare", "--net", "--", sys.executable, os.path.abspath(__file__)] + sys.argv[1:]
        os.execvpe("unshare", argv, env)
    if os.environ.get(NETNS_ENV):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    t_start = time.time()
    if args.out is None:
        args.out = str(REPO / "bench" / "results" / time.strftime("%Y-%m-%d-%H%M%S", time.localtime(t_start)))
    for b in ("snstack-agent", "libsnstack.so"):
        if not (Path(args.bin_dir) / b).exists():
            sys.exit(f"bench: {args.bin_dir}/{b} is not built (cargo build --release --workspace)")
    for c in ("wrk", "taskset"):
        if not shutil.which(c):
            sys.exit(f"bench: missing '{c}' (run ci/install-deps.sh)")

    h = Harness(args)
    h.agent_cmds = []

    def on_signal(sig, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # The harness itself stays off the application's CPU.
    os.sched_setaffinity(0, {int(c) for c in h.pins["load"].split(",")})
    info = machine_info(h)
    log(f"output {h.out}; profile {args.profile}: {args.reps} x {args.duration}s per point; perf {'on' if h.perf else 'off'}")
    log(f"pinning: application cpu {h.pins['app']} (2 workers: {h.pins['app_multi']}), agent cpu {h.pins['agent']}, "
        f"load generators cpu {h.pins['load']}")
    if not h.perf:
        h.skipped.append("syscalls per request: `perf stat -e raw_syscalls:sys_enter` does not work here (or --no-perf)")
    want_modes = args.modes.split(",")
    only = set(filter(None, args.only.split(",")))
    full, head, sweep = scenarios(h, args.profile)
    full = [s for s in full if not only or s.kind in only]
    head = [s for s in head if not only or s.kind in only]
    if args.match:
        keep = [m for m in args.match.split(",") if m]
        full = [s for s in full if any(m in s.key for m in keep)]
        head = [s for s in head if any(m in s.key for m in keep)]
    for c in ("redis-server", "redis-benchmark", "sockperf"):
        if not shutil.which(c):
            h.skipped.append(f"{c} not installed: its scenarios skipped")
            full = [s for s in full if not (s.kind in c)]
            head = [s for s in head if not (s.kind in c)]
    try:
        fix = UserFixture(h.agent_bin)
        ok, why = fix.available()
        if "offload-user" in want_modes and not ok:
            log(f"offload-user: skipped: {why}")
            h.skipped.append(f"offload-user: {why}")
        for mode in ("kernel", "offload-kernel"):
            if mode not in want_modes:
                continue
            agent = None
            if mode != "kernel":
                agent = Agent(h.agent_bin, h.workdir, h.pins["agent"],
                              ["--backend", "kernel", "--max-sockets", "16384",
                               "--realtime", h.args.agent_realtime] + h.args.agent_extra, mode)
                h.agent_cmds.append(" ".join(agent.argv).replace(str(h.workdir), "$W"))
            log(f"mode {mode}")
            # The channel's round trip first, on the fresh agent: after a load that shared its
            # CPU the agent keeps spinning paused for up to MAX_BACKOFF (docs/agent-loop.md),
            # and the round trip would then measure its wake-ups.
            if agent and (not only or "chanbench" in only):
                h.safe(lambda: h.chanbench(mode, agent), f"chanbench ({mode})")
            for sc in full:
                if getattr(sc, "payload", False) and not agent:
                    continue
                h.safe(lambda: h.point(sc, mode, agent), f"{sc.name} ({mode})")
            if agent:
                agent.stop()
        if "offload-user" in want_modes and ok:
            mode = "offload-user"
            try:
                fix.setup()
                agent = Agent(h.agent_bin, h.workdir, h.pins["agent"],
                              fix.agent_args() + ["--realtime", h.args.agent_realtime] + h.args.agent_extra, mode,
                              prefix=fix.agent_prefix)
                fix.agent_pid = agent.p.pid
                h.agent_cmds.append(" ".join(fix.agent_prefix + agent.argv).replace(str(h.workdir), "$W"))
                h.net = fix
                log(f"mode {mode}")
                # The quick profile keeps to the headline scenarios here (its 5-minute budget).
                for sc in (head if args.profile == "quick" else full):
                    h.safe(lambda: h.point(sc, mode, agent), f"{sc.name} ({mode})")
                agent.stop()
            except BenchError as e:
                log(f"offload-user: FAILED: {e}")
                h.skipped.append(f"offload-user: FAILED: {e}")
            finally:
                h.net = LoopNet()
                PROCS.stop_all()
                fix.teardown()
        if args.pcie != "off" and "offload-kernel" in want_modes:
            mode = "offload-kernel+pcie"
            agent = Agent(h.agent_bin, h.workdir, h.pins["agent"], ["--backend", "kernel", "--pcie", args.pcie,
                                                                   "--realtime", args.agent_realtime] + args.agent_extra, mode)
            h.agent_cmds.append(" ".join(agent.argv).replace(str(h.workdir), "$W"))
            log(f"mode {mode}")
            if not only or "chanbench" in only:
                h.safe(lambda: h.chanbench(mode, agent), f"chanbench ({mode})")
            for sc in head:
                h.safe(lambda: h.point(sc, mode, agent), f"{sc.name} ({mode})")
            agent.stop()
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
        h.skipped.append("run interrupted")
    finally:
        PROCS.stop_all()
        shutil.rmtree(h.workdir, ignore_errors=True)

    head_keys = [s.key for s in head] or [s.key for s in full[:3]]
    info["wall_s"] = round(time.time() - t_start, 1)
    info["load_at_end"] = open("/proc/loadavg").read().split()[:3]
    summary = {"machine": info, "args": {k: v for k, v in vars(args).items()}, "pinning": h.pins,
               "points": h.points, "skipped": h.skipped}
    (h.out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    files = plots(h, sweep)
    (h.out / "summary.md").write_text(report(h, info, t_start, head_keys))
    log(f"wrote {h.out}/summary.md, summary.json, {len(list((h.out / 'runs').iterdir()))} run files, {', '.join(files)}")
    failed = [s for s in h.skipped if "FAILED" in s]
    if failed:
        log(f"{len(failed)} point(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
