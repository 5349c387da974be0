#!/usr/bin/env python3
"""Real-I/O benchmark: dpdk-kube-proxy vs dpdk-testpmd io / 5tswap, same PMD, same core.

Called by scripts/bench-io.sh (which builds the binary, checks root and owns
the temporary directory). Per (PMD, generator) it runs three DUTs one after
the other, each with a fresh generator, all on links created here:

  generator: dpdk-testpmd, net_memif client (or net_virtio_user), alone on CPU 0
      |  memif (or vhost-user) socket in TMP
  DUT port 0: net_memif server (or net_vhost)   DUT forwarding lcore alone on CPU 1
  DUT port 1: net_null (no-rx=1)   (tx frees the mbufs: the egress sink)

DUTs: dpdk-testpmd --forward-mode=io (moves packets, the upper bound of any
forwarder), --forward-mode=5tswap (also reads and rewrites L2/L3/L4
addresses: the upper bound of a NAT that touches the same fields), and
dpdk-kube-proxy with one worker.

Generators (all dpdk-testpmd, 64-byte UDP frames, only 198.18.0.0/15):
  txonly        --forward-mode=txonly --tx-ip --tx-udp: one flow to a Service
  txonly-multi  the same with --txonly-multi-flow (DPDK 22.11: 32 source addresses)
  pcap          --forward-mode=io from net_pcap,infinite_rx=1 replaying a file
                written here: N flows over 16 Services.
  pcap6         the same over IPv6 (64-byte IPv6/UDP frames, 16 Services on
                2001:2:0:100::/64 addresses, backends on 2001:2:0:1::/64).
                The pcap generator stands in for
                flowgen, which cannot address a Service: DPDK 22.11's flowgen
                hard-codes its addresses, ports and MACs (a private IPv4
                range, see BENCHMARKS.md) and ignores --tx-ip/--tx-udp/
                --eth-peer (app/test-pmd/flowgen.c), so its flows could only
                hit Services outside 198.18.0.0/15, which test traffic must not use.
A testpmd run whose cycles per packet exceed DISTURBED x the lowest of
the same PMD, mode and IP family in the benchmark had a disturbed window
(small bursts: a generator slowed by other load set the pace); its pair is
run again, and marked not valid if it stays so.

`io.py --check` tests the pieces that need no DPDK (the pcap files, the
pair rules) on synthetic results. Standard library only.
"""
import argparse
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benv  # noqa: E402

GEN_MAC = "02:00:00:00:00:02"  # the txonly client, 198.18.0.2
CLIENT_IP, VPORT, CLIENT_PORT = "198.18.0.2", 53, 40000
SERVICES = 16  # VIPs 198.18.100.1 .. .16, UDP port 53
BACKENDS = 4  # per Service: 198.18.1.11 .. .14:5353 (the same four for every Service)
BACKEND_PORT = 5353
MBUFS = 16383
DESC = 1024
FRAME = 64  # bytes as the PMD sees them (no FCS), as testpmd --txpkts=64; --frame sets it
MAX_FRAME = 1514  # a 1500-byte IP packet: the proxy's default port MTU
DUTS = ("testpmd-io", "testpmd-5tswap", "proxy")
GENS = ("txonly", "txonly-multi", "pcap", "pcap6")
CLIENT_IP6 = "2001:2::2"
# A testpmd run over this many times the lowest cycles per packet of its
# PMD, mode and IP family in the benchmark had a disturbed window.
DISTURBED = 1.2


def vip(i):
    return f"198.18.100.{1 + i}"


def backend_ip(b):
    return f"198.18.1.{11 + b}"


def vip6(i):
    return f"2001:2:0:100::{1 + i:x}"


def backend_ip6(b):
    return f"2001:2:0:1::{11 + b:x}"


def family(gen):
    return 6 if gen == "pcap6" else 4


def backend_mac(b):
    return f"02:00:00:00:01:{11 + b:02x}"


def log(msg):
    print(f"[bench-io] {msg}", file=sys.stderr, flush=True)


class Proc:
    """A child process whose output is read line by line and timestamped."""

    def __init__(self, name, argv, tmp, pidfile, stdin=False):
        self.name = name
        self.logpath = os.path.join(tmp, f"{name}.log")
        self.log = open(self.logpath, "w")
        self.lines = []  # (monotonic time, line)
        self.lock = threading.Lock()
        self.argv = argv
        self.log.write("# " + " ".join(argv) + "\n")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                  stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        with open(pidfile, "a") as f:
            f.write(f"{self.p.pid}\n")
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            now = time.monotonic()
            with self.lock:
                self.lines.append((now, line.rstrip("\n")))
            self.log.write(line)
        self.log.flush()

    def send(self, command):
        """One command line to an interactive process (testpmd -i)."""
        try:
            self.p.stdin.write(command + "\n")
            self.p.stdin.flush()
        except (OSError, ValueError):
            pass

    def text(self):
        with self.lock:
            return "\n".join(l for _, l in self.lines)

    def wait_for(self, pattern, timeout):
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < end:
            with self.lock:
                new = self.lines[seen:]
                seen = len(self.lines)
            for _, l in new:
                m = rx.search(l)
                if m:
                    return m
            if self.p.poll() is not None:
                time.sleep(0.2)  # let the reader drain
                for _, l in self.lines[seen:]:
                    m = rx.search(l)
                    if m:
                        return m
                raise RuntimeError(f"{self.name} exited (rc={self.p.returncode}) before {pattern!r}; see {self.logpath}")
            time.sleep(0.02)
        raise RuntimeError(f"{self.name}: no {pattern!r} within {timeout}s; see {self.logpath}")

    def stop(self, sig=signal.SIGINT, timeout=15):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop on {sig!r}; killing")
                self.p.kill()
                self.p.wait()
        self.t.join(5)
        self.log.close()
        return self.p.returncode

    def threads_on_cpus(self):
        """[(tid, cpu, comm)] of this process's threads, as seen now."""
        out = subprocess.run(["ps", "-L", "-o", "tid=,psr=,comm=", "-p", str(self.p.pid)],
                             capture_output=True, text=True).stdout
        rows = []
        for l in out.splitlines():
            f = l.split(None, 2)
            if len(f) == 3:
                rows.append((int(f[0]), int(f[1]), f[2]))
        return rows


# testpmd's port statistics (--stats-period blocks, or `show port stats all`
# in interactive mode): cumulative counters, timestamped as read.
PORT_HDR = re.compile(r"NIC statistics for port (\d+)")
RX_LINE = re.compile(r"^\s*RX-packets:\s*(\d+)\s+RX-missed:\s*(\d+)")
TX_LINE = re.compile(r"^\s*TX-packets:\s*(\d+)\s+TX-errors:\s*(\d+)")


def testpmd_samples(proc):
    """[(t, {port: {rx, missed, tx}})] from the port statistics printed so far.

    A sample starts at a periodic "Port statistics ====" header, or (for
    `show port stats all`) at a port header for a port the current sample
    already has."""
    out, cur, port, t_block = [], {}, None, None
    with proc.lock:
        lines = list(proc.lines)
    for t, l in lines:
        if "Port statistics ====" in l:
            if cur:
                out.append((t_block, cur))
            cur, port, t_block = {}, None, t
            continue
        m = PORT_HDR.search(l)
        if m:
            p = int(m.group(1))
            if t_block is None or p in cur:
                if cur:
                    out.append((t_block, cur))
                cur, t_block = {}, t
            port = p
            cur[port] = {}
            continue
        if port is None:
            continue
        m = RX_LINE.search(l)
        if m:
            cur[port]["rx"], cur[port]["missed"] = int(m.group(1)), int(m.group(2))
        m = TX_LINE.search(l)
        if m:
            cur[port]["tx"] = int(m.group(1))
    # The last block is complete once its last port's TX line is in.
    if cur and all("tx" in v for v in cur.values()):
        out.append((t_block, cur))
    return [s for s in out if all("tx" in v and "rx" in v for v in s[1].values())]


def window(samples, t0, t1):
    """The samples bracketing [t0, t1]: the last at/before t0 and the first
    at/after t1 (rates use the samples' own times, so a window up to a
    second longer on each side is still measured correctly)."""
    a = next((s for s in reversed(samples) if s[0] <= t0), None) or next((s for s in samples if s[0] >= t0), None)
    b = next((s for s in samples if s[0] >= t1), None) or (samples[-1] if samples else None)
    if a is None or b is None or b[0] - a[0] < 1.0:
        raise RuntimeError(f"not enough testpmd statistics samples around the measurement window ({len(samples)} in all)")
    return a, b


def rate(a, b, port, key):
    return (b[1][port][key] - a[1][port][key]) / (b[0] - a[0])


FWD_HDR = re.compile(r"Forward statistics for port (\d+)")
FWD_RX = re.compile(r"^\s*RX-packets:\s*(\d+)\s+RX-dropped:\s*(\d+)")
FWD_TX = re.compile(r"^\s*TX-packets:\s*(\d+)\s+TX-dropped:\s*(\d+)")


def fwd_stats(text):
    """The 'Forward statistics' testpmd prints when it stops (whole run).

    Line by line, not one multi-line pattern: EAL/PMD log lines from other
    threads (a memif peer going away) may land between the lines."""
    r, port = {}, None
    for l in text.splitlines():
        m = FWD_HDR.search(l)
        if m:
            port = int(m.group(1))
            r[port] = {}
            continue
        if port is None:
            continue
        if "Accumulated forward statistics" in l:
            port = None
            continue
        m = FWD_RX.search(l)
        if m and "rx" not in r[port]:
            r[port]["rx"], r[port]["rx_dropped"] = int(m.group(1)), int(m.group(2))
        m = FWD_TX.search(l)
        if m and "tx" not in r[port]:
            r[port]["tx"], r[port]["tx_dropped"] = int(m.group(1)), int(m.group(2))
    return {k: v for k, v in r.items() if "tx" in v}


MAX_METRICS = ("dpdk_kube_proxy_worker_tsc_hz",)


def metrics(port):
    """dpdk_kube_proxy_* counters summed over workers (the TSC rate: max); drops by reason."""
    t_a = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body = r.read().decode()
    t_b = time.monotonic()
    vals, drops = {}, {}
    for l in body.splitlines():
        if l.startswith("#") or not l.strip():
            continue
        name_labels, _, v = l.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            v = float(v)
        except ValueError:
            continue
        if name == "dpdk_kube_proxy_dropped_packets_total":
            reason = re.search(r'reason="([^"]+)"', name_labels).group(1)
            drops[reason] = drops.get(reason, 0) + v
        elif name in MAX_METRICS:
            vals[name] = max(vals.get(name, 0), v)
        else:
            vals[name] = vals.get(name, 0) + v
    return (t_a + t_b) / 2, vals, drops


def free_port(preferred):
    for p in (preferred, 0):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            return s.getsockname()[1]
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free TCP port")


def eal_common(mem_mb):
    return ["--no-huge", "-m", str(mem_mb), "--no-pci", "--no-shconf"]


def dut_vdev(pmd, sock):
    if pmd == "memif":
        return f"net_memif0,role=server,id=0,socket={sock},socket-abstract=no"
    return f"net_vhost0,iface={sock},queues=1"


def gen_vdev(pmd, sock):
    if pmd == "memif":
        return f"net_memif0,role=client,id=0,socket={sock},socket-abstract=no,mac={GEN_MAC}"
    return f"net_virtio_user0,path={sock},queues=1,queue_size={DESC},mac={GEN_MAC}"


def flows_of(gen, n):
    return {"txonly": 1, "txonly-multi": 32, "pcap": n, "pcap6": n}[gen]


# --- the pcap generator's file ------------------------------------------------

def _csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def pcap_flow(i, v6=False):
    """Flow i of the pcap generator: (client ip, client port, VIP)."""
    if v6:
        return f"2001:2::{2 + i % 250:x}", 1024 + i // 250, vip6(i % SERVICES)
    return f"198.18.0.{2 + i % 250}", 1024 + i // 250, vip(i % SERVICES)


def pcap_frame(i, dst_mac, v6=False):
    """Flow i's FRAME-byte IPv4 (or IPv6) UDP frame, checksums valid."""
    mac = lambda s: bytes(int(x, 16) for x in s.split(":"))
    src, sport, dst = pcap_flow(i, v6)
    if v6:
        s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
        ulen = FRAME - 14 - 40
        pseudo = s + d + struct.pack("!IxxxB", ulen, 17)
    else:
        s, d = socket.inet_aton(src), socket.inet_aton(dst)
        ulen = FRAME - 14 - 20
        pseudo = s + d + struct.pack("!BBH", 0, 17, ulen)
    udp = struct.pack("!HHHH", sport, VPORT, ulen, 0) + bytes(ulen - 8)
    c = _csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    if v6:
        ip = struct.pack("!IHBB16s16s", 0x6000_0000, ulen, 17, 64, s, d)
    else:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, i & 0xFFFF, 0x4000, 64, 17, 0, s, d)
        ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return mac(dst_mac) + mac(GEN_MAC) + (b"\x86\xdd" if v6 else b"\x08\x00") + ip + udp


def write_pcap(path, dst_mac, flows, v6=False):
    """`flows` FRAME-byte UDP frames, one per flow (pcap_frame)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(flows):
            fr = pcap_frame(i, dst_mac, v6)
            f.write(struct.pack("<IIII", 0, 0, len(fr), len(fr)) + fr)


# --- processes ------------------------------------------------------------------

def gen_argv(a, pmd, gen, sock, dut_mac, pcap):
    """The generator: alone on CPU 0 (taskset keeps its EAL control threads there too)."""
    mbufs = MBUFS + (a.flows if gen.startswith("pcap") else 0)  # infinite_rx keeps every packet of the file in mbufs
    mem = 256 + (mbufs - MBUFS) * 3 // 1024
    argv = ["taskset", "-c", "0", "stdbuf", "-oL", "dpdk-testpmd", "--lcores", "0@0,1@0", *eal_common(mem),
            "--vdev", gen_vdev(pmd, sock)]
    if gen.startswith("pcap"):
        # Port 0 is the link, port 1 the file; paired ports: 1 -> 0.
        argv += ["--vdev", f"net_pcap0,rx_pcap={pcap},infinite_rx=1",
                 "--", "--forward-mode=io", "--nb-cores=1"]
    else:
        argv += ["--", "--forward-mode=txonly", f"--txpkts={FRAME}", f"--eth-peer=0,{dut_mac}",
                 f"--tx-ip={CLIENT_IP},{vip(0)}", f"--tx-udp={CLIENT_PORT},{VPORT}"]
        if gen == "txonly-multi":
            argv.append("--txonly-multi-flow")
    # Interactive (-i), so that run_pair can stop its forwarding with `stop` (which prints the
    # totals) while its port stays up; statistics come from `show port stats all`.
    argv += ["--burst=32", f"--total-num-mbufs={mbufs}", "-i", "--auto-start"]
    return argv


class Sampler:
    """Asks an interactive testpmd for its port statistics every `period` s."""

    def __init__(self, proc, period=1.0):
        self.proc, self.period = proc, period
        self.done = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.done.is_set() and self.proc.p.poll() is None:
            self.proc.send("show port stats all")
            self.done.wait(self.period)

    def stop(self):
        self.done.set()
        self.t.join(5)


def testpmd_dut_argv(pmd, sock, mode):
    return ["stdbuf", "-oL", "dpdk-testpmd", "--lcores", "0@0,1@1", *eal_common(512),
            "--vdev", dut_vdev(pmd, sock), "--vdev", "net_null0,no-rx=1",
            "--", f"--forward-mode={mode}", "--nb-cores=1", "--rxq=1", "--txq=1", "--burst=32",
            f"--rxd={DESC}", f"--txd={DESC}", f"--total-num-mbufs={MBUFS}",
            "--stats-period", "1", "--record-core-cycles"]


def proxy_config(path, pmd, sock, admin_port, sessions, v6=False):
    """16 UDP Services x 4 backends of one IP family, static neighbours."""
    if v6:
        svcs = "".join(f"""  - name: bench/udp6-{i}
    vip: "{vip6(i)}"
    port: {VPORT}
    protocol: UDP
    backends: [{", ".join(f'"[{backend_ip6(b)}]:{BACKEND_PORT}"' for b in range(BACKENDS))}]
""" for i in range(SERVICES))
    else:
        svcs = "".join(f"""  - name: bench/udp{i}
    vip: {vip(i)}
    port: {VPORT}
    protocol: UDP
    backends: [{", ".join(f'"{backend_ip(b)}:{BACKEND_PORT}"' for b in range(BACKENDS))}]
""" for i in range(SERVICES))
    neigh = "".join(f'  - {{address: "{ip}", mac: "{backend_mac(b)}", port: 1}}\n'
                    for b in range(BACKENDS) for ip in (backend_ip(b), backend_ip6(b)))
    text = f"""# Written by scripts/bench/io.py
eal:
  lcores: "0@0,1@1"   # main/control lcore on CPU 0, the one worker alone on CPU 1
  no_huge: true
  memory_mb: 512
  vdevs:
    - {dut_vdev(pmd, sock)}
    - net_null0,no-rx=1
  args: ["--log-level", "*:notice"]
ports:
  - device: {dut_vdev(pmd, sock).split(",")[0]}
    addresses: ["198.18.0.1/24", "2001:2::1/64"]
  - device: net_null0
    addresses: ["198.18.1.1/24", "2001:2:0:1::1/64"]
neighbors:
  - {{address: {CLIENT_IP}, mac: "{GEN_MAC}", port: 0}}
  - {{address: "{CLIENT_IP6}", mac: "{GEN_MAC}", port: 0}}
{neigh}workers:
  sessions: {sessions}
  mbufs: {MBUFS}
  rx_desc: {DESC}
  tx_desc: {DESC}
  idle_sleep_us: 0
admin:
  bind: 127.0.0.1:{admin_port}
services:
{svcs}"""
    with open(path, "w") as f:
        f.write(text)


def wait_path(path, proc, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(path):
            return
        if proc.p.poll() is not None:
            raise RuntimeError(f"{proc.name} exited (rc={proc.p.returncode}); see {proc.logpath}")
        time.sleep(0.05)
    raise RuntimeError(f"{path} not created by {proc.name}")


def lcore_sched(proc):
    """{tid: (comm, ns on CPU, ns runnable but waiting)} for the lcore threads."""
    r = {}
    base = f"/proc/{proc.p.pid}/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return r
    for tid in tids:
        try:
            comm = open(f"{base}/{tid}/comm").read().strip()
            run, wait, _ = open(f"{base}/{tid}/schedstat").read().split()
        except (OSError, ValueError):
            continue
        if comm.startswith(("rte-worker", "lcore-worker")):
            r[int(tid)] = (comm, int(run), int(wait))
    return r


def sched_share(a, b, dt):
    """CPU share and run-queue wait share of the lcore thread(s) over dt."""
    out = {}
    for tid, (comm, run1, wait1) in b.items():
        if tid in a:
            _, run0, wait0 = a[tid]
            out[comm] = {"on_cpu": round((run1 - run0) / 1e9 / dt, 3), "waiting": round((wait1 - wait0) / 1e9 / dt, 3)}
    return out


def cpu1_threads(proc):
    return [f"{comm}({tid})" for tid, cpu, comm in proc.threads_on_cpus() if cpu == 1]


# Packets per poll below which a proxy run was generator-limited (half a burst).
GEN_LIMITED_BURST = 16


def r3(x):
    return None if x is None else round(x, 3)


def run_pair(a, pmd, gen, dut_kind, tmp, pidfile, pcaps):
    name = f"{pmd}-{gen}-{dut_kind}"
    log(f"--- {name}")
    sock = os.path.join(tmp, f"{name}.sock")
    res = {"name": name, "pmd": pmd, "gen": gen, "flows": flows_of(gen, a.flows), "dut": dut_kind}
    procs = []
    sampler = None
    try:
        t_start = time.monotonic()
        if dut_kind.startswith("testpmd-"):
            mode = dut_kind.split("-", 1)[1]
            dut = Proc(f"{name}-dut", testpmd_dut_argv(pmd, sock, mode), tmp, pidfile)
            procs.append(dut)
            dut_mac = dut.wait_for(r"Port 0: ([0-9A-Fa-f:]{17})", 20).group(1).lower()
        else:
            admin = free_port(a.admin_port)
            cfgp = os.path.join(tmp, f"{name}.yaml")
            proxy_config(cfgp, pmd, sock, admin, a.sessions, v6=family(gen) == 6)
            dut = Proc(f"{name}-dut", [a.proxy, "--config", cfgp], tmp, pidfile)
            procs.append(dut)
            dut_mac = dut.wait_for(r"port up port=0 .*mac=([0-9a-f:]{17})", 30).group(1)
            dut.wait_for(r"admin server listening", 15)
            res["admin_port"] = admin
        wait_path(sock, dut)
        res["dut_port0_mac"] = dut_mac
        pcap = None
        if gen.startswith("pcap"):
            pcap = pcaps.get((gen, dut_mac))
            if pcap is None:
                pcap = os.path.join(tmp, f"flows-{len(pcaps)}.pcap")
                write_pcap(pcap, dut_mac, a.flows, v6=family(gen) == 6)
                pcaps[(gen, dut_mac)] = pcap
        gen_p = Proc(f"{name}-gen", gen_argv(a, pmd, gen, sock, dut_mac, pcap), tmp, pidfile, stdin=True)
        procs.append(gen_p)
        sampler = Sampler(gen_p)
        gen_p.wait_for(r"TX-packets:\s*[1-9]", 30)
        res["startup_s"] = round(time.monotonic() - t_start, 2)
        time.sleep(a.warmup)
        if dut_kind == "proxy":
            # Measure established flows: every flow has its session before the window.
            end = time.monotonic() + 30
            while metrics(admin)[1].get("dpdk_kube_proxy_sessions_created_total", 0) < res["flows"]:
                if time.monotonic() > end:
                    log(f"WARNING: {name}: not every flow had a session after the warm-up + 30 s")
                    break
                time.sleep(0.2)
        t0 = time.monotonic()
        s0 = (lcore_sched(dut), lcore_sched(gen_p))
        if dut_kind == "proxy":
            m0 = metrics(admin)
        time.sleep(a.duration / 2)
        res["dut_threads_on_cpu1"] = cpu1_threads(dut)
        res["gen_threads_on_cpu1"] = cpu1_threads(gen_p)
        time.sleep(a.duration / 2)
        if dut_kind == "proxy":
            m1 = metrics(admin)
        t1 = time.monotonic()
        s1 = (lcore_sched(dut), lcore_sched(gen_p))
        # Share of the window each forwarding lcore thread was on its CPU
        # (1.0 = had it alone) and runnable but waiting (other load on the CPU).
        res["dut_lcore_sched"] = sched_share(s0[0], s1[0], t1 - t0)
        res["gen_lcore_sched"] = sched_share(s0[1], s1[1], t1 - t0)
        time.sleep(1.1)  # one more testpmd stats block after t1
        sampler.stop()
        g0, g1 = window(testpmd_samples(gen_p), t0, t1)
        res["gen_tx_mpps"] = r3(rate(g0, g1, 0, "tx") / 1e6)
        if dut_kind != "proxy":
            d0, d1 = window(testpmd_samples(dut), t0, t1)
            res["interval_s"] = r3(d1[0] - d0[0])
            res["dut_rx_mpps"] = r3(rate(d0, d1, 0, "rx") / 1e6)
            res["dut_fwd_mpps"] = r3(rate(d0, d1, 1, "tx") / 1e6)
            res["dut_rx_missed_per_s"] = round(rate(d0, d1, 0, "missed"))
        else:
            (ta, va, da), (tb, vb, db) = m0, m1
            dt = tb - ta
            delta = lambda k: vb.get(k, 0) - va.get(k, 0)
            rxp = delta("dpdk_kube_proxy_rx_packets_total")
            busy = delta("dpdk_kube_proxy_worker_busy_cycles_total")
            idle = delta("dpdk_kube_proxy_worker_idle_cycles_total")
            loops = delta("dpdk_kube_proxy_worker_loops_total")
            res["interval_s"] = r3(dt)
            res["dut_rx_mpps"] = r3(rxp / dt / 1e6)
            res["dut_fwd_mpps"] = r3(delta("dpdk_kube_proxy_tx_packets_total") / dt / 1e6)
            res["dut_nat_forward_mpps"] = r3(delta("dpdk_kube_proxy_nat_forward_packets_total") / dt / 1e6)
            res["dut_rx_bytes_per_packet"] = r3(delta("dpdk_kube_proxy_rx_bytes_total") / rxp) if rxp else None
            # Share of the received packets the established-flow fast path took.
            res["dut_fast_path_share"] = r3(delta("dpdk_kube_proxy_fast_path_packets_total") / rxp) if rxp else None
            res["tsc_hz"] = int(vb.get("dpdk_kube_proxy_worker_tsc_hz", 0)) or None
            # The worker's own accounting: TSC cycles of poll loops that had
            # packets, per packet received; and the busy share of all cycles.
            res["dut_cycles_per_packet"] = round(busy / rxp, 1) if rxp else None
            res["dut_cycles_source"] = "worker busy cycles / rx packets, measurement window"
            res["dut_busy_share"] = r3(busy / (busy + idle)) if busy + idle else None
            res["dut_loops_per_s"] = round(loops / dt)
            res["dut_rx_packets_per_loop"] = r3(rxp / loops) if loops else None
            res["dut_drops_per_s"] = {k: round((db.get(k, 0) - da.get(k, 0)) / dt) for k in db
                                      if db.get(k, 0) - da.get(k, 0)}
            res["sessions_created_in_window"] = int(delta("dpdk_kube_proxy_sessions_created_total"))
            res["sessions_created_total"] = int(vb.get("dpdk_kube_proxy_sessions_created_total", 0))
            res["sessions_active"] = int(vb.get("dpdk_kube_proxy_sessions_active", 0))
        # Stop in an order where no one polls a memif/vhost port whose peer
        # goes away: DPDK 22.11's memif PMD frees the shared regions on a
        # disconnect (interrupt thread, memif_disconnect) while the polling
        # lcore may still be in rx/tx (SIGSEGV, seen with both DUTs). The generator stops forwarding first (its port stays
        # up; it prints its totals), then the DUT exits (stops polling, then
        # closes its port), then the generator quits.
        gen_p.send("stop")
        gen_p.wait_for(r"Done\.\s*$", 15)
        gfs = fwd_stats(gen_p.text()).get(0)
        if gfs:
            tot = gfs["tx"] + gfs["tx_dropped"]
            # Share of the generator's tx attempts refused because the DUT's rx ring was full.
            res["gen_tx_refused_pct"] = round(100.0 * gfs["tx_dropped"] / tot, 2) if tot else 0.0
        if dut_kind != "proxy":
            dut.stop(signal.SIGINT)
            text = dut.text()
            m = re.search(r"total cycles=(\d+)", text)
            fwd = fwd_stats(text).get(1, {}).get("tx")
            # --record-core-cycles counts the cycles of bursts that had
            # packets (the proxy's "busy" cycles), over the whole run; per
            # packet forwarded (memif's forward-statistics RX reads 0).
            res["dut_cycles_per_packet"] = round(int(m.group(1)) / fwd, 1) if m and fwd else None
            if res["dut_cycles_per_packet"] is None:
                log(f"WARNING: {name}: no --record-core-cycles total in the DUT's output")
            res["dut_cycles_source"] = "testpmd --record-core-cycles / packets forwarded, whole run"
            m = re.search(r"at (\d+) MHz Clock", text)
            res["tsc_hz"] = int(m.group(1)) * 1_000_000 if m else None
        else:
            rc = dut.stop(signal.SIGTERM)
            res["dut_exit_code"] = rc
            m = re.search(r"stopped codes=\[([^\]]*)\]", dut.text())
            res["dut_worker_codes"] = m.group(1) if m else None
            if rc != 0:
                raise RuntimeError(f"dpdk-kube-proxy exited with {rc}; see {dut.logpath}")
        gen_p.send("quit")
        try:
            gen_p.p.wait(10)
        except subprocess.TimeoutExpired:
            pass
        gen_p.stop(signal.SIGINT)
        if not res["dut_fwd_mpps"] or res["dut_fwd_mpps"] <= 0:
            raise RuntimeError(f"{name}: the DUT forwarded nothing; see {dut.logpath}")
        cyc = res.get("dut_cycles_per_packet")
        log(f"{name}: DUT forwarded {res['dut_fwd_mpps']:.3f} Mpps (rx {res['dut_rx_mpps']:.3f}), "
            f"{cyc if cyc is not None else '?'} cycles/packet, generator {res['gen_tx_mpps']:.3f} Mpps, "
            f"refused {res.get('gen_tx_refused_pct', 0):.1f}%")
        return res
    finally:
        if sampler is not None:
            sampler.stop()
        # On the error path: the generator's forwarding, the DUT (it stops
        # polling before it closes its port), then the generator.
        gens = [p for p in procs if p.name.endswith("-gen") and p.p.poll() is None]
        for p in gens:
            p.send("stop")
        if gens:
            time.sleep(1)
        for p in procs:
            if p.p.poll() is None:
                p.stop(signal.SIGTERM, timeout=10)
        if os.path.exists(sock):
            os.unlink(sock)


def cpu_busy(interval=1.0):
    """Fraction of all CPUs busy over interval (from /proc/stat)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t0, i0 = snap()
    time.sleep(interval)
    t1, i1 = snap()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(max_wait):
    """Waits (up to max_wait s) until other load uses < 10% of the CPUs; 0: one short sample."""
    end = time.monotonic() + max_wait
    while True:
        b = cpu_busy(1.0 if max_wait > 0 else 0.2)
        if b < 0.10 or time.monotonic() >= end:
            return b
        log(f"machine busy ({100 * b:.0f}% of CPUs used by other processes); waiting")


def disturbed_runs(results):
    """Names of the testpmd runs whose cycles per packet exceed DISTURBED x the
    lowest of the same PMD, mode and IP family among `results`: testpmd does
    the same work per packet behind every generator, so such a run forwarded
    in small bursts (a generator slowed by other load set the pace) and its
    rate is not its capacity."""
    cyc = lambda r: r.get("dut_cycles_per_packet") if r["dut"].startswith("testpmd-") and "error" not in r else None
    key = lambda r: (r["pmd"], r["dut"], family(r["gen"]))
    best = {}
    for r in results:
        if cyc(r):
            best[key(r)] = min(best.get(key(r), cyc(r)), cyc(r))
    return [r["name"] for r in results if cyc(r) and cyc(r) > DISTURBED * best[key(r)]]


def pair_rows(results):
    """Per (PMD, generator): the three DUTs and the proxy's ratios."""
    rows = []
    disturbed = set(disturbed_runs(results))
    keys = []
    for r in results:
        k = (r["pmd"], r["gen"])
        if k not in keys:
            keys.append(k)
    for pmd, gen in keys:
        by = {r["dut"]: r for r in results if (r["pmd"], r["gen"]) == (pmd, gen)}
        mpps = lambda d: by[d].get("dut_fwd_mpps") if d in by else None
        cyc = lambda d: by[d].get("dut_cycles_per_packet") if d in by else None
        ratio = lambda d: (round(mpps("proxy") / mpps(d), 3) if mpps("proxy") and mpps(d) else None)
        row = {"pmd": pmd, "gen": gen, "flows": next(iter(by.values()))["flows"],
               "testpmd_io_mpps": mpps("testpmd-io"), "testpmd_5tswap_mpps": mpps("testpmd-5tswap"),
               "proxy_mpps": mpps("proxy"),
               "proxy_vs_testpmd_io": ratio("testpmd-io"), "proxy_vs_testpmd_5tswap": ratio("testpmd-5tswap"),
               "testpmd_io_cycles_per_packet": cyc("testpmd-io"),
               "testpmd_5tswap_cycles_per_packet": cyc("testpmd-5tswap"),
               "proxy_cycles_per_packet": cyc("proxy"),
               "gen_tx_refused_pct": {d: r.get("gen_tx_refused_pct") for d, r in by.items()},
               "errors": {d: r["error"] for d, r in by.items() if "error" in r},
               "valid": (all(not r["contended"] and "error" not in r for r in by.values())
                         and len(by) == len(DUTS))}
        # testpmd in io mode does less per packet than in 5tswap mode, and
        # 5tswap less than the proxy: where a lighter DUT was more than 10%
        # slower than a heavier one, its window was paced by a disturbed
        # generator, and the pair's ratios say nothing.
        io, sw, px = mpps("testpmd-io"), mpps("testpmd-5tswap"), mpps("proxy")
        row["consistent"] = not ((io and sw and io < 0.9 * sw) or (sw and px and sw < 0.9 * px))
        row["disturbed"] = sorted(r["dut"] for r in by.values() if r["name"] in disturbed)
        row["valid"] = row["valid"] and row["consistent"] and not row["disturbed"]
        row["target_met"] = (row["proxy_vs_testpmd_5tswap"] >= 0.6) if row["proxy_vs_testpmd_5tswap"] else None
        rows.append(row)
    return rows


def measure_dut(a, pmd, gen, dut, pcaps):
    """One DUT behind one generator, retried while its window was contended."""
    for attempt in range(1 + a.retries):
        busy = wait_quiet(a.quiet_wait)
        try:
            r = run_pair(a, pmd, gen, dut, a.tmp, a.pidfile, pcaps)
        except RuntimeError as e:
            # Recorded; the other runs go on and the exit status says it failed.
            log(f"ERROR: {pmd}-{gen}-{dut}: {e}")
            r = {"name": f"{pmd}-{gen}-{dut}", "pmd": pmd, "gen": gen, "flows": flows_of(gen, a.flows),
                 "dut": dut, "error": str(e), "dut_lcore_sched": {}, "gen_lcore_sched": {}}
        r["other_cpu_busy_before"] = round(busy, 3)
        r["attempt"] = attempt + 1
        # The forwarding lcores should have had their CPUs to themselves.
        shares = list(r["dut_lcore_sched"].values()) + list(r["gen_lcore_sched"].values())
        r["contended"] = "error" not in r and (not shares or any(v["on_cpu"] < 0.95 for v in shares))
        # The proxy measures its own polls: fewer than half a burst
        # per poll means the generator (slowed by other load on its
        # CPU) set the pace, and the proxy's rate is not its capacity.
        per_loop = r.get("dut_rx_packets_per_loop")
        r["generator_limited"] = r["dut"] == "proxy" and per_loop is not None and per_loop < GEN_LIMITED_BURST
        if r["generator_limited"]:
            log(f"WARNING: {r['name']}: {per_loop} packets per poll: generator-limited; not valid")
            r["contended"] = True
        if not r["contended"] and "error" not in r:
            break
        if r["contended"] and not r["generator_limited"]:
            log(f"WARNING: {r['name']}: a forwarding lcore shared its CPU with other load; not valid")
    return r


def main():
    global FRAME
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--pmds", default="memif", help="comma-separated: memif, vhost")
    ap.add_argument("--gens", default=",".join(GENS), help="comma-separated: " + ", ".join(GENS))
    ap.add_argument("--duts", default=",".join(DUTS), help="comma-separated: " + ", ".join(DUTS))
    ap.add_argument("--flows", type=int, default=4096, help="flows of the pcap generator")
    ap.add_argument("--frame", type=int, default=FRAME,
                    help=f"frame size as the PMD sees it (no FCS), {FRAME}..{MAX_FRAME}")
    ap.add_argument("--retries", type=int, default=1)
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--quick", action="store_true", help="recorded in the results (short run)")
    ap.add_argument("--quiet-wait", type=float, default=20.0)
    ap.add_argument("--admin-port", type=int, default=19300)
    a = ap.parse_args()
    pmds = [p for p in a.pmds.split(",") if p]
    gens = [g for g in a.gens.split(",") if g]
    duts = [d for d in a.duts.split(",") if d]
    if "flowgen" in gens:
        sys.exit("io.py: flowgen cannot address a Service: DPDK 22.11's flowgen hard-codes addresses in a "
                 "private range and ignores --tx-ip/--tx-udp/--eth-peer; test traffic must stay in "
                 "198.18.0.0/15. Use the pcap generator (N flows over 16 Services).")
    for what, got, ok in (("PMD", pmds, ("memif", "vhost")), ("generator", gens, GENS), ("DUT", duts, DUTS)):
        bad = [x for x in got if x not in ok]
        if bad or not got:
            sys.exit(f"io.py: unknown {what} {bad or got}; choose from {', '.join(ok)}")
    if not 1 <= a.flows <= 1_000_000:
        sys.exit("io.py: --flows must be in 1..1000000")
    if not 64 <= a.frame <= MAX_FRAME:
        sys.exit(f"io.py: --frame must be in 64..{MAX_FRAME} (the proxy's ports have a 1500-byte MTU)")
    FRAME = a.frame
    a.sessions = max(65536, 1 << (a.flows + 64).bit_length())

    pmd_names = {"memif": "net_memif (copy mode; DUT server, generator client)",
                 "vhost": "net_vhost (DUT) / net_virtio_user (generator), vhost-user"}
    env = benv.collect(
        pmds=[pmd_names[p] for p in pmds] + ["net_null,no-rx=1 (DUT egress: tx frees the mbufs)"]
        + (["net_pcap,infinite_rx=1 (pcap generator's source)"] if any(g.startswith("pcap") for g in gens) else []),
        pinning="generator: taskset -c 0, lcores 0@0,1@0 (alone on CPU 0); "
                "DUT: lcores 0@0,1@1 (main/control on CPU 0, forwarding lcore / proxy worker alone on CPU 1)",
        hugepages="none (--no-huge, 4 KiB pages); -m 512 DUT, 256+ generator; --no-shconf",
        proxy_binary=a.proxy, quick=a.quick)
    setup = {
        "frame": f"{FRAME}-byte IPv4/UDP frames (pcap6: IPv6/UDP) as the PMD sees them (no FCS; "
                 f"{FRAME + 4} bytes on a wire)",
        "duts": {"testpmd-io": "dpdk-testpmd --forward-mode=io (moves packets)",
                 "testpmd-5tswap": "dpdk-testpmd --forward-mode=5tswap (swaps MAC, IP and UDP ports)",
                 "proxy": "dpdk-kube-proxy, one worker, 16 UDP Services x 4 backends, static neighbours"},
        "gens": {"txonly": f"testpmd txonly, 1 flow {CLIENT_IP}:{CLIENT_PORT} -> {vip(0)}:{VPORT}",
                 "txonly-multi": "testpmd txonly --txonly-multi-flow: DPDK 22.11 ORs an 8-bit counter into the "
                                 "third octet of the destination to make the source, 32 distinct sources",
                 "pcap": f"testpmd io from net_pcap,infinite_rx=1: {a.flows} flows "
                         f"(198.18.0.2-251, ports from 1024) over {SERVICES} Services {vip(0)}-{SERVICES}:{VPORT}",
                 "pcap6": f"the same over IPv6: {a.flows} flows (2001:2::2-fb, ports from 1024) over {SERVICES} "
                          f"Services [{vip6(0)}]-[{vip6(SERVICES - 1)}]:{VPORT}, backends [{backend_ip6(0)}]-"
                          f"[{backend_ip6(BACKENDS - 1)}]:{BACKEND_PORT}; the proxy then has the IPv6 Services only",
                 "flowgen": "not used: DPDK 22.11 flowgen hard-codes its addresses (a private range), ports "
                            "and MACs and ignores --tx-ip/--tx-udp/--eth-peer, so it cannot address a Service "
                            "in 198.18.0.0/15 (see BENCHMARKS.md)"},
        "descriptors": DESC, "burst": 32, "mbufs": MBUFS, "proxy_sessions": a.sessions,
        "warmup_s": a.warmup, "duration_s": a.duration,
        "contention": "a run is contended when a forwarding lcore had < 95% of its CPU (schedstat), or "
                      f"(proxy) it received fewer than {GEN_LIMITED_BURST} packets per poll (generator-limited); "
                      "retried",
        "disturbed": f"a testpmd run over {DISTURBED} x the lowest cycles per packet of its PMD, mode and IP "
                     "family in this benchmark forwarded in small bursts (a disturbed generator set the pace): "
                     "its pair runs again, and is not valid if it stays so",
    }
    results = []
    pcaps = {}
    for pmd in pmds:
        for gen in gens:
            # A pair (every DUT behind this generator) whose rates are out of
            # order (see pair_rows) is run again as a whole, as often as a run.
            for pair_attempt in range(1 + a.retries):
                pair = [measure_dut(a, pmd, gen, dut, pcaps) for dut in duts]
                if all(p["consistent"] for p in pair_rows(pair)) or pair_attempt == a.retries:
                    break
                log(f"WARNING: {pmd}-{gen}: a lighter DUT was slower than a heavier one; the pair runs again")
            for r in pair:
                r["pair_attempt"] = pair_attempt + 1
            results.extend(pair)
    # Pairs with a disturbed testpmd window (known only once every pair ran)
    # run again as a whole.
    for _ in range(a.retries):
        again = []
        for name in disturbed_runs(results):
            k = next((r["pmd"], r["gen"]) for r in results if r["name"] == name)
            if k not in again:
                again.append(k)
        if not again:
            break
        for pmd, gen in again:
            log(f"WARNING: {pmd}-{gen}: a disturbed testpmd window (cycles per packet over {DISTURBED} x the "
                "lowest of its mode); the pair runs again")
            old = [r for r in results if (r["pmd"], r["gen"]) == (pmd, gen)]
            pair = [measure_dut(a, pmd, gen, dut, pcaps) for dut in duts]
            for r in pair:
                r["pair_attempt"] = old[0].get("pair_attempt", 1) + 1
            at = results.index(old[0])
            results = [r for r in results if r not in old]
            results[at:at] = pair
    tsc = next((r["tsc_hz"] for r in results if r["dut"] == "proxy" and r.get("tsc_hz")), None)
    if tsc:
        env["tsc_hz"], env["tsc_hz_source"] = tsc, "rte_get_tsc_hz() (dpdk_kube_proxy_worker_tsc_hz)"
    pairs = pair_rows(results)
    contended = [r["name"] for r in results if r["contended"]]
    failed = [r["name"] for r in results if "error" in r]
    inconsistent = [f"{p['pmd']}-{p['gen']}" for p in pairs if not p["consistent"]]
    disturbed = disturbed_runs(results)
    out = {"benchmark": "io", "schema": 1,
           "valid": not contended and not failed and not inconsistent and not disturbed,
           "contended_runs": contended, "inconsistent_pairs": inconsistent, "disturbed_runs": disturbed,
           "failed_runs": failed,
           "env": env, "setup": setup, "pairs": pairs, "runs": results}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"\nReal-I/O benchmark, {env['date']}, {env['cpu_model']}, DPDK {env['dpdk_version']}"
          + (" (quick)" if a.quick else ""))
    print(f"{'PMD':<7}{'generator':<14}{'flows':>6}{'io Mpps':>9}{'5tswap':>8}{'proxy':>8}"
          f"{'p/io':>7}{'p/5tsw':>8}{'proxy cyc/pkt':>15}{'valid':>7}")
    for p in pairs:
        f = lambda v, w, d=3: f"{v:>{w}.{d}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"
        print(f"{p['pmd']:<7}{p['gen']:<14}{p['flows']:>6}{f(p['testpmd_io_mpps'], 9)}{f(p['testpmd_5tswap_mpps'], 8)}"
              f"{f(p['proxy_mpps'], 8)}{f(p['proxy_vs_testpmd_io'], 7, 2)}{f(p['proxy_vs_testpmd_5tswap'], 8, 2)}"
              f"{f(p['proxy_cycles_per_packet'], 15, 0)}{'yes' if p['valid'] else 'no':>7}")
    for r in results:
        if r.get("dut_drops_per_s"):
            print(f"{r['name']}: drops/s {r['dut_drops_per_s']}")
    print(f"results: {a.out}")
    if failed:
        print(f"FAILED runs: {failed} (see the errors in {a.out})")
        sys.exit(1)
    if inconsistent:
        print(f"WARNING: pairs {inconsistent}: a lighter DUT was slower than a heavier one (disturbed windows)")
    if disturbed:
        print(f"WARNING: runs {disturbed}: testpmd over {DISTURBED} x the lowest cycles per packet of its mode "
              "(disturbed windows); their pairs are not valid")
    if contended:
        print(f"WARNING: other load shared the benchmark CPUs during {contended}; rerun on an idle machine")
        if a.strict:
            sys.exit(2)


def check():
    """Self-test of what needs no DPDK: the pcap files and the pair rules."""
    import tempfile
    global FRAME
    problems = []
    for v6, FRAME in ((False, 64), (True, 64), (False, MAX_FRAME), (True, MAX_FRAME)):
        fr = pcap_frame(300, "02:00:00:00:00:01", v6)
        ip = fr[14:54] if v6 else fr[14:34]
        udp = fr[54:] if v6 else fr[34:]
        if len(fr) != FRAME:
            problems.append(f"v6={v6}: frame of {len(fr)} bytes, not {FRAME}")
        if struct.unpack("!H", fr[18:20] if v6 else fr[16:18])[0] != FRAME - 14 - (40 if v6 else 0):
            problems.append(f"v6={v6}, {FRAME} bytes: IP length field")
        if fr[12:14] != (b"\x86\xdd" if v6 else b"\x08\x00"):
            problems.append(f"v6={v6}: ethertype {fr[12:14].hex()}")
        if v6:
            pseudo = ip[8:40] + struct.pack("!IxxxB", len(udp), 17)
            if struct.unpack("!H", ip[4:6])[0] != len(udp) or ip[6] != 17:
                problems.append("v6: payload length / next header")
            want = ("2001:2::34", 1025, "2001:2:0:100::d")
            got = (socket.inet_ntop(socket.AF_INET6, ip[8:24]), struct.unpack("!H", udp[:2])[0],
                   socket.inet_ntop(socket.AF_INET6, ip[24:40]))
        else:
            pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
            if _csum(ip) != 0:
                problems.append("v4: IP header checksum")
            want = ("198.18.0.52", 1025, "198.18.100.13")
            got = (socket.inet_ntoa(ip[12:16]), struct.unpack("!H", udp[:2])[0], socket.inet_ntoa(ip[16:20]))
        if got != want:
            problems.append(f"v6={v6}: flow 300 is {got}, not {want}")
        if _csum(pseudo + udp) != 0:
            problems.append(f"v6={v6}: UDP checksum")
    FRAME = 64
    with tempfile.TemporaryDirectory(prefix="bench-io-check.") as tmp:
        path = os.path.join(tmp, "f.pcap")
        write_pcap(path, "02:00:00:00:00:01", 10, v6=True)
        with open(path, "rb") as f:
            data = f.read()
        if len(data) != 24 + 10 * (16 + FRAME) or struct.unpack("<I", data[:4])[0] != 0xA1B2C3D4:
            problems.append(f"pcap file of {len(data)} bytes")

    def run(gen, dut, cyc, mpps):
        return {"name": f"memif-{gen}-{dut}", "pmd": "memif", "gen": gen, "dut": dut, "flows": 1,
                "dut_cycles_per_packet": cyc, "dut_fwd_mpps": mpps, "contended": False}
    res = []
    for gen, sw_cyc in (("txonly", 115.0), ("txonly-multi", 118.0), ("pcap", 151.0), ("pcap6", 140.0)):
        res += [run(gen, "testpmd-io", 100.0, 14.0), run(gen, "testpmd-5tswap", sw_cyc, 12.0),
                run(gen, "proxy", 190.0, 8.0)]
    if disturbed_runs(res) != ["memif-pcap-testpmd-5tswap"]:
        problems.append(f"disturbed runs {disturbed_runs(res)}, want only memif-pcap-testpmd-5tswap "
                        "(pcap6 is compared with IPv6 runs only)")
    rows = {r["gen"]: r for r in pair_rows(res)}
    if rows["pcap"]["valid"] or rows["pcap"]["disturbed"] != ["testpmd-5tswap"]:
        problems.append(f"the disturbed pair: valid {rows['pcap']['valid']}, disturbed {rows['pcap']['disturbed']}")
    if not all(rows[g]["valid"] for g in ("txonly", "txonly-multi", "pcap6")):
        problems.append("an undisturbed pair is not valid")
    res[0]["dut_fwd_mpps"] = 10.0  # txonly: io below 0.9 x 5tswap
    if pair_rows(res)[0]["consistent"] or pair_rows(res)[0]["valid"]:
        problems.append("a pair out of order is consistent")
    if problems:
        print("io.py --check: FAILED\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("io.py --check: ok")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(check())
    try:
        main()
    except Exception as e:  # noqa: BLE001
        log(f"FAILED: {e}")
        sys.exit(1)
