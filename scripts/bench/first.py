#!/usr/bin/env python3
"""First throughput benchmark: dpdk-kube-proxy vs dpdk-testpmd --forward-mode=io.

Called by scripts/bench-first.sh (which builds the binary, checks root and
owns the temporary directory). Topology, per run, all on links created here:

  generator: dpdk-testpmd txonly, net_memif client (or net_virtio_user), alone on CPU 0
      |  memif (or vhost-user) socket in TMP
  DUT port 0: net_memif server (or net_vhost)   DUT forwarding lcore alone on CPU 1
  DUT port 1: net_null (no-rx=1)   (tx frees the mbufs: the egress sink)

DUT = dpdk-testpmd --forward-mode=io, then dpdk-kube-proxy with one worker.
Standard library only.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

GEN_MAC = "02:00:00:00:00:02"  # the client, 198.18.0.2
BACKEND_MAC = "02:00:00:00:01:0b"  # the backend, 198.18.1.11
CLIENT_IP, VIP, VPORT = "198.18.0.2", "198.18.100.1", 53
BACKEND = "198.18.1.11:5353"
MBUFS = 16383
DESC = 1024


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class Proc:
    """A child process whose output is read line by line and timestamped."""

    def __init__(self, name, argv, tmp, pidfile):
        self.name = name
        self.logpath = os.path.join(tmp, f"{name}.log")
        self.log = open(self.logpath, "w")
        self.lines = []  # (monotonic time, line)
        self.lock = threading.Lock()
        self.argv = argv
        self.log.write("# " + " ".join(argv) + "\n")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
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

    def text(self):
        with self.lock:
            return "\n".join(l for _, l in self.lines)

    def wait_for(self, pattern, timeout):
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                for _, l in self.lines:
                    m = rx.search(l)
                    if m:
                        return m
            if self.p.poll() is not None:
                time.sleep(0.2)  # let the reader drain
                with self.lock:
                    for _, l in self.lines:
                        m = rx.search(l)
                        if m:
                            return m
                raise RuntimeError(f"{self.name} exited (rc={self.p.returncode}) before {pattern!r}; see {self.logpath}")
            time.sleep(0.05)
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


# testpmd --stats-period output: one block per second, cumulative counters.
PORT_HDR = re.compile(r"NIC statistics for port (\d+)")
RX_LINE = re.compile(r"^\s*RX-packets:\s*(\d+)\s+RX-missed:\s*(\d+)")
TX_LINE = re.compile(r"^\s*TX-packets:\s*(\d+)\s+TX-errors:\s*(\d+)")


def testpmd_samples(proc):
    """[(t, {port: {rx, missed, tx}})] from the periodic port statistics."""
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
        if m and t_block is not None:
            port = int(m.group(1))
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
    """First sample at/after t0 and last at/before t1."""
    a = next((s for s in samples if s[0] >= t0), None)
    b = next((s for s in reversed(samples) if s[0] <= t1), None)
    if a is None or b is None or b[0] - a[0] < 1.0:
        raise RuntimeError("not enough testpmd statistics samples in the measurement window")
    return a, b


def rate(a, b, port, key):
    return (b[1][port][key] - a[1][port][key]) / (b[0] - a[0])


FWD_STATS = re.compile(
    r"Forward statistics for port (\d+)\s+-+\s*\n\s*RX-packets:\s*(\d+)\s+RX-dropped:\s*(\d+)\s+RX-total:\s*(\d+)\s*\n"
    r"\s*TX-packets:\s*(\d+)\s+TX-dropped:\s*(\d+)\s+TX-total:\s*(\d+)")


def fwd_stats(text):
    """The 'Forward statistics' testpmd prints when it stops (whole run)."""
    r = {}
    for m in FWD_STATS.finditer(text):
        r[int(m.group(1))] = {"rx": int(m.group(2)), "rx_dropped": int(m.group(3)),
                              "tx": int(m.group(5)), "tx_dropped": int(m.group(6))}
    return r


def metrics(port):
    """dpdk_kube_proxy_* counters summed over workers; drops by reason."""
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


def gen_argv(pmd, sock, dut_mac, multi):
    # taskset: keep the generator's EAL control threads off the DUT's CPU too.
    a = ["taskset", "-c", "0", "stdbuf", "-oL", "dpdk-testpmd", "--lcores", "0@0,1@0", *eal_common(256),
         "--vdev", gen_vdev(pmd, sock),
         "--", "--forward-mode=txonly", "--txpkts=64", "--burst=32",
         f"--eth-peer=0,{dut_mac}", f"--tx-ip={CLIENT_IP},{VIP}", f"--tx-udp=40000,{VPORT}",
         "--stats-period", "1", f"--total-num-mbufs={MBUFS}"]
    if multi:
        a.append("--txonly-multi-flow")
    return a


def proxy_config(path, pmd, sock, admin_port):
    text = f"""# Written by scripts/bench/first.py
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
    addresses: ["198.18.0.1/24"]
  - device: net_null0
    addresses: ["198.18.1.1/24"]
neighbors:
  - {{address: {CLIENT_IP}, mac: "{GEN_MAC}", port: 0}}
  - {{address: 198.18.1.11, mac: "{BACKEND_MAC}", port: 1}}
workers:
  sessions: 65536
  mbufs: {MBUFS}
  rx_desc: {DESC}
  tx_desc: {DESC}
  idle_sleep_us: 0
admin:
  bind: 127.0.0.1:{admin_port}
services:
  - name: bench/udp
    vip: {VIP}
    port: {VPORT}
    protocol: UDP
    backends: ["{BACKEND}"]
"""
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


def run_scenario(name, dut_kind, multi, a, tmp, pidfile):
    log(f"--- {name}")
    sock = os.path.join(tmp, f"{name}.sock")
    res = {"name": name, "dut": dut_kind, "pmd": a.pmd, "multi_flow": multi}
    procs = []
    try:
        if dut_kind == "testpmd-io":
            dut = Proc(f"{name}-dut", ["stdbuf", "-oL", "dpdk-testpmd", "--lcores", "0@0,1@1", *eal_common(512),
                                       "--vdev", dut_vdev(a.pmd, sock), "--vdev", "net_null0,no-rx=1",
                                       "--", "--forward-mode=io", "--nb-cores=1", "--rxq=1", "--txq=1", "--burst=32",
                                       f"--rxd={DESC}", f"--txd={DESC}", f"--total-num-mbufs={MBUFS}",
                                       "--stats-period", "1", "--record-core-cycles"], tmp, pidfile)
            procs.append(dut)
            m = dut.wait_for(r"Port 0: ([0-9A-Fa-f:]{17})", 20)
            dut_mac = m.group(1).lower()
        else:
            admin = free_port(a.admin_port)
            cfgp = os.path.join(tmp, f"{name}.yaml")
            proxy_config(cfgp, a.pmd, sock, admin)
            dut = Proc(f"{name}-dut", [a.proxy, "--config", cfgp], tmp, pidfile)
            procs.append(dut)
            m = dut.wait_for(r"port up port=0 .*mac=([0-9a-f:]{17})", 30)
            dut_mac = m.group(1)
            dut.wait_for(r"admin server listening", 15)
            res["admin_port"] = admin
        wait_path(sock, dut)
        res["dut_port0_mac"] = dut_mac
        gen = Proc(f"{name}-gen", gen_argv(a.pmd, sock, dut_mac, multi), tmp, pidfile)
        procs.append(gen)
        gen.wait_for(r"TX-packets:\s*[1-9]", 20)
        time.sleep(a.warmup)
        t0 = time.monotonic()
        s0 = (lcore_sched(dut), lcore_sched(gen))
        if dut_kind != "testpmd-io":
            m0 = metrics(admin)
        time.sleep(a.duration / 2)
        res["dut_threads_on_cpu1"] = cpu1_threads(dut)
        res["gen_threads_on_cpu1"] = cpu1_threads(gen)
        time.sleep(a.duration / 2)
        if dut_kind != "testpmd-io":
            m1 = metrics(admin)
        t1 = time.monotonic()
        s1 = (lcore_sched(dut), lcore_sched(gen))
        # Share of the window each forwarding lcore thread was on its CPU
        # (1.0 = had it alone) and runnable but waiting (other load on the CPU).
        res["dut_lcore_sched"] = sched_share(s0[0], s1[0], t1 - t0)
        res["gen_lcore_sched"] = sched_share(s0[1], s1[1], t1 - t0)
        time.sleep(1.2)  # one more testpmd stats block after t1
        g0, g1 = window(testpmd_samples(gen), t0, t1)
        res["gen_tx_mpps"] = rate(g0, g1, 0, "tx") / 1e6
        if dut_kind == "testpmd-io":
            d0, d1 = window(testpmd_samples(dut), t0, t1)
            res["interval_s"] = d1[0] - d0[0]
            res["dut_rx_mpps"] = rate(d0, d1, 0, "rx") / 1e6
            res["dut_fwd_mpps"] = rate(d0, d1, 1, "tx") / 1e6
            res["dut_rx_missed_per_s"] = rate(d0, d1, 0, "missed")
        else:
            (ta, va, da), (tb, vb, db) = m0, m1
            dt = tb - ta
            res["interval_s"] = dt
            d = lambda k: (vb.get(k, 0) - va.get(k, 0)) / dt
            res["dut_rx_mpps"] = d("dpdk_kube_proxy_rx_packets_total") / 1e6
            res["dut_fwd_mpps"] = d("dpdk_kube_proxy_tx_packets_total") / 1e6
            res["dut_nat_forward_mpps"] = d("dpdk_kube_proxy_nat_forward_packets_total") / 1e6
            loops = vb.get("dpdk_kube_proxy_worker_loops_total", 0) - va.get("dpdk_kube_proxy_worker_loops_total", 0)
            rxp = vb.get("dpdk_kube_proxy_rx_packets_total", 0) - va.get("dpdk_kube_proxy_rx_packets_total", 0)
            res["dut_loops_per_s"] = loops / dt
            res["dut_rx_packets_per_loop"] = rxp / loops if loops else None
            res["dut_drops_per_s"] = {k: (db.get(k, 0) - da.get(k, 0)) / dt for k in db if db.get(k, 0) - da.get(k, 0)}
            res["sessions_created_total"] = vb.get("dpdk_kube_proxy_sessions_created_total", 0)
            res["sessions_active"] = vb.get("dpdk_kube_proxy_sessions_active", 0)
        # Stop the generator first, then the DUT; both print totals.
        rc = gen.stop(signal.SIGINT)
        gfs = fwd_stats(gen.text()).get(0)
        if gfs:
            tot = gfs["tx"] + gfs["tx_dropped"]
            # Share of the generator's tx attempts refused because the DUT's rx ring was full.
            res["gen_tx_refused_pct"] = 100.0 * gfs["tx_dropped"] / tot if tot else 0.0
        if dut_kind == "testpmd-io":
            dut.stop(signal.SIGINT)
            m = re.search(r"CPU cycles/packet=([\d.]+)", dut.text())
            res["dut_cycles_per_packet"] = float(m.group(1)) if m else None
        else:
            rc = dut.stop(signal.SIGTERM)
            res["dut_exit_code"] = rc
            m = re.search(r"stopped codes=\[([^\]]*)\]", dut.text())
            res["dut_worker_codes"] = m.group(1) if m else None
            if rc != 0:
                raise RuntimeError(f"dpdk-kube-proxy exited with {rc}; see {dut.logpath}")
        if res["dut_fwd_mpps"] <= 0:
            raise RuntimeError(f"{name}: the DUT forwarded nothing; see {dut.logpath}")
        log(f"{name}: DUT forwarded {res['dut_fwd_mpps']:.3f} Mpps (rx {res['dut_rx_mpps']:.3f}), "
            f"generator {res['gen_tx_mpps']:.3f} Mpps, refused {res.get('gen_tx_refused_pct', 0):.1f}%")
        return res
    finally:
        for p in reversed(procs):
            if p.p.poll() is None:
                p.stop(signal.SIGTERM, timeout=10)
        if os.path.exists(sock):
            os.unlink(sock)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return f"? ({e})"


def cpu_busy(interval=1.0):
    """Fraction of all CPUs busy over interval (from /proc/stat)."""
    def snap():
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        idle = f[3] + f[4]
        return sum(f), idle
    t0, i0 = snap()
    time.sleep(interval)
    t1, i1 = snap()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(max_wait):
    """Waits (up to max_wait s) until other load uses < 10% of the CPUs."""
    end = time.monotonic() + max_wait
    while True:
        b = cpu_busy()
        if b < 0.10 or time.monotonic() >= end:
            return b
        log(f"machine busy ({100 * b:.0f}% of CPUs used by other processes); waiting")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--pmd", choices=["memif", "vhost"], default="memif")
    ap.add_argument("--retries", type=int, default=1)
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--quiet-wait", type=float, default=20.0)
    ap.add_argument("--admin-port", type=int, default=19300)
    a = ap.parse_args()

    env = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_model": sh("lscpu | sed -n 's/^Model name:[[:space:]]*//p'"),
        "cpus": os.cpu_count(),
        "hypervisor": sh("lscpu | sed -n 's/^Hypervisor vendor:[[:space:]]*//p'"),
        "kernel": sh("uname -r"),
        "dpdk": sh("pkg-config --modversion libdpdk") or sh("dpkg-query -W -f '${Version}' dpdk"),
        "loadavg_at_start": sh("cat /proc/loadavg"),
        "git": sh("git rev-parse --short HEAD") + (" (dirty tree)" if sh("git status --porcelain") else ""),
        "proxy_binary": a.proxy,
    }
    setup = {
        "pmd": ("DUT port 0 net_memif server (copy mode), generator net_memif client" if a.pmd == "memif" else
                "DUT port 0 net_vhost (vhost-user, copies), generator net_virtio_user")
               + "; DUT port 1 net_null no-rx=1 (egress: tx frees the mbufs)",
        "packet": "64-byte Ethernet frames (60 + FCS not counted): IPv4/UDP 198.18.0.2:40000 -> 198.18.100.1:53",
        "pinning": "generator lcores 0@0,1@0 (alone on CPU 0); DUT lcores 0@0,1@1 (forwarding lcore / worker alone on CPU 1)",
        "memory": "--no-huge (4 KiB pages), -m 512 DUT / 256 generator, --no-shconf",
        "descriptors": DESC, "burst": 32, "mbufs": MBUFS,
        "warmup_s": a.warmup, "duration_s": a.duration,
    }
    scen = [("testpmd-io", "testpmd-io", False), ("proxy-1flow", "dpdk-kube-proxy", False),
            ("proxy-multiflow", "dpdk-kube-proxy", True)]
    results = []
    for name, kind, multi in scen:
        for attempt in range(1 + a.retries):
            busy = wait_quiet(a.quiet_wait)
            r = run_scenario(name, kind, multi, a, a.tmp, a.pidfile)
            r["other_cpu_busy_before"] = round(busy, 3)
            r["attempt"] = attempt + 1
            # The forwarding lcores should have had their CPUs to themselves.
            r["contended"] = any(v["on_cpu"] < 0.95 for v in list(r["dut_lcore_sched"].values()) + list(r["gen_lcore_sched"].values()))
            if not r["contended"]:
                break
            log(f"WARNING: {name}: a forwarding lcore shared its CPU with other load; figures are not valid")
        results.append(r)
    by = {r["name"]: r for r in results}
    base = by["testpmd-io"]["dut_fwd_mpps"]
    summary = {r["name"]: {"fwd_mpps": round(r["dut_fwd_mpps"], 3),
                           "ratio_vs_testpmd_io": round(r["dut_fwd_mpps"] / base, 3)} for r in results}
    contended = [r["name"] for r in results if r["contended"]]
    out = {"benchmark": "first", "valid": not contended, "contended_runs": contended, "env": env, "setup": setup, "results": results, "summary": summary}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"\nFirst throughput benchmark, {env['date_utc']}, {env['cpu_model']}, DPDK {env['dpdk']}, PMD {a.pmd}")
    print(f"{'run':<18}{'DUT fwd Mpps':>13}{'DUT rx Mpps':>13}{'gen Mpps':>10}{'gen refused':>13}{'vs testpmd':>12}")
    for r in results:
        print(f"{r['name']:<18}{r['dut_fwd_mpps']:>13.3f}{r['dut_rx_mpps']:>13.3f}{r['gen_tx_mpps']:>10.3f}"
              f"{r.get('gen_tx_refused_pct', 0):>12.1f}%{r['dut_fwd_mpps'] / base:>12.3f}")
    for r in results:
        print(f"{r['name']}: DUT lcore {r['dut_lcore_sched']}, generator lcore {r['gen_lcore_sched']}")
        if r.get("dut_drops_per_s"):
            print(f"{r['name']}: drops/s {r['dut_drops_per_s']}")
    print(f"results: {a.out}")
    if contended:
        print(f"WARNING: other load shared the benchmark CPUs during {contended}; rerun on an idle machine")
        if a.strict:
            sys.exit(2)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001
        log(f"FAILED: {e}")
        sys.exit(1)
