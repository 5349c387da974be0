#!/usr/bin/env python3
"""Soak test: the real proxy on af_packet ports in network namespaces
(scripts/netns.sh, 4 backends), mixed TCP/UDP traffic for DURATION seconds
with the service table changed every CHURN seconds, then checks that
nothing leaked and no established flow broke.

Phases:
  1. warm-up (20 s of the same traffic, then idle until every session
     expired): the baseline of mbufs in use, sessions and process RSS is
     taken after it, so first-touch growth of pre-allocated tables is not
     counted as a leak;
  2. soak: long-lived TCP connections and UDP flows to demo/web (backends
     1-3, never removed), batches of short TCP/UDP connections to demo/web
     and to the churned Service, and every CHURN seconds a new config:
     backend 4 in or out of demo/web, the churned Service's backends
     rotated, a Service added or removed;
  3. drain: traffic stops; after the session timeouts the mbufs in use and
     live sessions must be back at the baseline and RSS within RSS_SLACK.

Prints one JSON report on stdout (human progress on stderr) and exits 1 if
a check failed. Run as root. Only 198.18.0.0/15 addresses; everything it
creates is removed on exit, also on failure or Ctrl-C.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(ROOT, "tests/e2e/peer.py")
NETNS = os.path.join(ROOT, "scripts/netns.sh")


def log(*a):
    print("soak:", *a, file=sys.stderr, flush=True)


class Soak:
    def __init__(self, a):
        self.a = a
        self.p = f"sk{os.getpid() % 100000}"
        self.procs = []
        self.proxy = None
        self.tmp = tempfile.mkdtemp(prefix="dkp-soak-")
        self.cfg = os.path.join(self.tmp, "config.yaml")
        self.logf = os.path.join(self.tmp, "proxy.log")
        self.admin = f"127.0.0.1:{a.admin_port}"
        self.version = 0

    # ---- plumbing ----
    def ns(self, n):
        return f"{self.p}-{n}"

    def up(self):
        subprocess.run([NETNS, "up", self.p], check=True, env={**os.environ, "NBE": "4"},
                       stdout=subprocess.DEVNULL)
        for i in range(1, 5):
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", self.ns(f"be{i}"), "python3", PEER, "serve", "--name", f"be{i}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def down(self):
        if self.proxy and self.proxy.poll() is None:
            self.proxy.send_signal(signal.SIGTERM)
            try:
                self.proxy.wait(15)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        subprocess.run([NETNS, "down", self.p], env={**os.environ, "NBE": "4"},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for f in (self.cfg, self.logf, self.cfg + ".tmp"):
            if os.path.exists(f):
                os.remove(f)
        os.rmdir(self.tmp)

    def get(self, path):
        out = subprocess.run(["ip", "netns", "exec", self.ns("proxy"), "python3", PEER, "http-get",
                              f"http://{self.admin}{path}"], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"GET {path}: {out.stderr.strip()}")
        return out.stdout

    def metrics(self):
        m = {}
        for line in self.get("/metrics").splitlines():
            if line.startswith("#") or " " not in line:
                continue
            k, v = line.rsplit(" ", 1)
            try:
                m[k] = float(v)
            except ValueError:
                pass
        return m

    @staticmethod
    def total(m, name):
        return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))

    def rss_kib(self):
        with open(f"/proc/{self.proxy.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    # ---- configuration ----
    def write_config(self, step):
        base = open(os.path.join(ROOT, "scripts/demo.yaml")).read()
        base = base.replace("iface=P0", f"iface={self.p}0").replace("iface=P1", f"iface={self.p}1")
        base = base.replace("127.0.0.1:PORT", self.admin)
        web = ["198.18.1.11", "198.18.1.12", "198.18.1.13"] + (["198.18.1.14"] if step % 2 else [])
        base = base.replace('["198.18.1.11:8080", "198.18.1.12:8080", "198.18.1.13:8080"]',
                            "[" + ", ".join(f'"{b}:8080"' for b in web) + "]", 1)
        rot = [f"198.18.1.1{1 + (step + i) % 4}" for i in range(2)]
        extra = f"""  - name: soak/churn
    vip: 198.18.100.30
    port: 80
    protocol: TCP
    backends: [{", ".join(f'"{b}:8080"' for b in rot)}]
  - name: soak/churn-udp
    vip: 198.18.100.30
    port: 53
    protocol: UDP
    backends: [{", ".join(f'"{b}:5353"' for b in rot)}]
"""
        if step % 3 == 0:
            extra += f"""  - name: soak/transient-{step}
    vip: 198.18.100.{40 + step % 50}
    port: {1000 + step % 1000}
    protocol: UDP
    backends: ["198.18.1.12:5353"]
"""
        timeouts = """timeouts:
  tcp_syn: 5s
  tcp_fin: 5s
  tcp_closed: 2s
  udp: 5s
  udp_stream: 10s
"""
        text = base.replace("\nservices:\n", "\n" + timeouts + "services:\n" + extra, 1)
        with open(self.cfg + ".tmp", "w") as f:
            f.write(text)
        os.rename(self.cfg + ".tmp", self.cfg)

    def start_proxy(self):
        self.write_config(0)
        self.proxy = subprocess.Popen(
            ["ip", "netns", "exec", self.ns("proxy"), self.a.bin, "--config", self.cfg,
             "--reload-interval", "200ms"],
            stdout=open(self.logf, "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:
            try:
                if self.get("/proxyMode") == "dpdk":
                    break
            except RuntimeError:
                pass
            if self.proxy.poll() is not None or time.time() > deadline:
                raise RuntimeError("proxy did not start:\n" + open(self.logf).read())
            time.sleep(0.2)
        self.wait_version(1)

    def wait_version(self, v, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = self.metrics()
            vs = [x for k, x in m.items() if k.startswith("dpdk_kube_proxy_worker_table_version{")]
            if vs and all(x >= v for x in vs):
                return
            time.sleep(0.1)
        raise RuntimeError(f"workers never reached table {v}")

    # ---- traffic ----
    def peer(self, *args):
        return subprocess.Popen(["ip", "netns", "exec", self.ns("client"), "python3", PEER, *args],
                                stdout=subprocess.PIPE, text=True)

    def batches(self, vip, until, count=40):
        """Short connections in batches until `until`: [(tcp errors, udp errors, answered)]."""
        out = []
        while time.time() < until:
            p = self.peer("clients", "--vip", vip, "--count", str(count), "--concurrency", "4")
            v = json.loads(p.communicate()[0])
            out.append(v)
        return out

    def idle_level(self, timeout):
        """Waits until no session is live; returns (mbufs in use, sessions)."""
        deadline = time.time() + timeout
        while True:
            m = self.metrics()
            s = self.total(m, "dpdk_kube_proxy_sessions_active")
            if s == 0 or time.time() > deadline:
                return self.total(m, "dpdk_kube_proxy_mempool_in_use"), s
            time.sleep(0.5)

    def run(self):
        a = self.a
        self.up()
        self.start_proxy()
        web, churn = "198.18.100.1", "198.18.100.30"
        log(f"warm-up {a.warmup}s")
        self.batches(web, time.time() + a.warmup)
        base_mbufs, base_sessions = self.idle_level(60)
        base_rss = self.rss_kib()
        log(f"baseline: {base_mbufs:.0f} mbufs in use, {base_sessions:.0f} sessions, RSS {base_rss} KiB")

        end = time.time() + a.duration
        long = ["--vip", web, "--duration", str(a.duration), "--interval", "0.2", "--timeout", "3"]
        lls = [self.peer("longlived", *long) for _ in range(4)]
        uds = [self.peer("udp-stream", *long) for _ in range(4)]
        time.sleep(1)  # the long-lived flows start on backends 1-3
        import threading
        results = {"web": [], "churn": []}
        threads = [threading.Thread(target=lambda k=k, v=v: results[k].extend(self.batches(v, end)))
                   for k, v in (("web", web), ("churn", churn))]
        for t in threads:
            t.start()
        step, changes, rss_max = 1, 0, base_rss
        next_change = time.time() + a.churn
        while time.time() < end:
            time.sleep(max(0.0, next_change - time.time()))
            next_change += a.churn
            self.write_config(step)
            step += 1
            changes += 1
            rss_max = max(rss_max, self.rss_kib())
            if changes % 30 == 0:
                m = self.metrics()
                log(f"{int(end - time.time())}s left: {changes} changes, table "
                    f"{self.total(m, 'dpdk_kube_proxy_table_version'):.0f}, "
                    f"{self.total(m, 'dpdk_kube_proxy_sessions_active'):.0f} sessions, "
                    f"{self.total(m, 'dpdk_kube_proxy_mempool_in_use'):.0f} mbufs in use, RSS {self.rss_kib()} KiB")
            if self.proxy.poll() is not None:
                raise RuntimeError("proxy exited during the soak:\n" + open(self.logf).read())
        for t in threads:
            t.join()
        ll = [json.loads(p.communicate()[0]) for p in lls]
        ud = [json.loads(p.communicate()[0]) for p in uds]
        m = self.metrics()
        # The last config's table must be in use (the churn was applied).
        version = self.total(m, "dpdk_kube_proxy_table_version")

        log("drain: waiting for every session to expire")
        end_mbufs, end_sessions = self.idle_level(90)
        end_rss = self.rss_kib()
        m = self.metrics()

        def batch_errors(rs, proto):
            return sum(r[proto]["errors"] for r in rs)

        def batch_answered(rs, proto):
            return sum(sum(r[proto]["counts"].values()) for r in rs)

        report = {
            "duration_s": a.duration, "churn_interval_s": a.churn, "table_changes": changes,
            "table_version": version,
            "baseline": {"mbufs_in_use": base_mbufs, "sessions": base_sessions, "rss_kib": base_rss},
            "after": {"mbufs_in_use": end_mbufs, "sessions": end_sessions, "rss_kib": end_rss,
                      "rss_max_kib": rss_max},
            "long_lived_tcp": ll, "udp_streams": ud,
            "short": {k: {"tcp_answered": batch_answered(v, "tcp"), "tcp_errors": batch_errors(v, "tcp"),
                          "udp_answered": batch_answered(v, "udp"), "udp_errors": batch_errors(v, "udp")}
                      for k, v in results.items()},
            "sessions_created": self.total(m, "dpdk_kube_proxy_sessions_created_total"),
            "sessions_flushed": self.total(m, "dpdk_kube_proxy_sessions_flushed_total"),
            "drops": {k: v for k, v in m.items() if k.startswith("dpdk_kube_proxy_dropped_packets_total") and v},
        }
        failures = []
        if end_mbufs > base_mbufs:
            failures.append(f"mbufs in use {end_mbufs:.0f} > baseline {base_mbufs:.0f}")
        if end_sessions > base_sessions:
            failures.append(f"sessions {end_sessions:.0f} > baseline {base_sessions:.0f}")
        if end_rss > base_rss + a.rss_slack_kib:
            failures.append(f"RSS {end_rss} KiB > baseline {base_rss} + {a.rss_slack_kib} KiB")
        if changes < a.duration / a.churn * 0.9:
            failures.append(f"only {changes} table changes")
        for i, l in enumerate(ll):
            if l["n_errors"] or len(l["backends"]) != 1 or l["requests"] < a.duration:
                failures.append(f"long-lived TCP {i} broke: {l}")
        for i, u in enumerate(ud):
            answered = sum(r[1] for r in u["runs"])
            if len(u["runs"]) != 1 or u["n_errors"] * 100 > answered:
                failures.append(f"UDP flow {i} moved or lost >1%: {u}")
        w = report["short"]["web"]
        if w["tcp_errors"] or w["udp_errors"] or not w["tcp_answered"]:
            failures.append(f"short connections to the stable Service failed: {w}")
        c = report["short"]["churn"]
        if c["tcp_errors"] or not c["tcp_answered"]:
            failures.append(f"short TCP connections to the churned Service failed: {c}")
        report["failures"] = failures
        report["ok"] = not failures
        print(json.dumps(report), flush=True)
        for f in failures:
            log("FAILED:", f)
        return 0 if not failures else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=600, help="soak seconds (default 600)")
    p.add_argument("--churn", type=float, default=1.0, help="seconds between table changes")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--rss-slack-kib", type=int, default=8192,
                   help="allowed RSS growth over the baseline (allocator noise)")
    p.add_argument("--admin-port", type=int, default=19349)
    p.add_argument("--bin", required=True)
    a = p.parse_args()
    s = Soak(a)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        return s.run()
    finally:
        s.down()


if __name__ == "__main__":
    sys.exit(main())
