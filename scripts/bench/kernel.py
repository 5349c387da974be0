#!/usr/bin/env python3
"""Kernel baseline: CPU time per packet of kube-proxy's nftables DNAT in the
kernel versus dpdk-kube-proxy on af_packet ports, over the same veths.

Called by scripts/bench-kernel.sh (which checks root and the tools, owns the
temporary directory and cleans up). Subcommands:

  run      the benchmark (orchestrator, root namespace)
  gen      the paced generator (runs inside the client namespace)
  scrape   reads the proxy's /metrics on request (runs inside the router namespace)
  ruleset  prints the kube-proxy-shaped nftables ruleset (for reading)

Topology, built per case, only from veths in namespaces created here, only
198.18.0.0/15:

  client ns                 router ns                           backend ns
  cli0 198.18.0.2/24 ==veth== rtr0 [198.18.0.1]  rtr1 [198.18.1.1] ==veth== be0 198.18.1.11..1N/24
                            (kernel IP + nftables, or the two
                             af_packet ports of dpdk-kube-proxy)

and, for the "direct" reference, cli0 ==veth== be0 with no router.

The generator sends pre-built 64-byte IPv4/UDP frames (60 bytes + FCS) on an
AF_PACKET socket with sendmmsg(2), paced to a fixed rate, across many source
ports (flows). One way only (no replies): the backend namespace counts and
drops them in an nftables prerouting chain at raw priority (no socket, no
conntrack there), identically in every case. Standard library only.
"""
import argparse
import base64
import ctypes
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

CLIENT_IP = "198.18.0.2"
ROUTER_IP0 = "198.18.0.1"
ROUTER_IP1 = "198.18.1.1"
VIP, VPORT = "198.18.100.1", 53
EP_PORT = 5353
SERVICE_CIDR = "198.18.100.0/24"  # the Service CIDR (unallocated ClusterIPs are dropped)
CLUSTER_CIDR = "198.18.0.0/23"  # client and backends are "pods": no masquerade
SRC_PORT0 = 10000
# Fixed MACs: the af_packet PMD takes its port MAC from the interface.
MAC = {
    "cli0": "02:00:00:00:00:02",
    "rtr0": "02:00:00:00:00:01",
    "rtr1": "02:00:00:00:01:01",
    "be0": "02:00:00:00:01:0b",
}
ADMIN = "127.0.0.1:10249"  # inside the router namespace (a fresh one per case)

CASES = {
    # name: (frames to, router, description)
    "direct": ("backend", None, "no router: client veth straight into the backend namespace (generator + veth + sink)"),
    "kernel-forward": ("backend", "kernel", "router namespace forwards in the kernel (ip_forward), no nftables, no conntrack"),
    "nftables": ("vip", "nftables", "router namespace: ip_forward + kube-proxy's nftables ruleset (DNAT, conntrack)"),
    "dpdk-kube-proxy": ("vip", "dpdk", "router namespace: dpdk-kube-proxy, 1 worker, net_af_packet on rtr0/rtr1"),
    "dpdk-ingress-drop": ("vip", "dpdk-drop", "as dpdk-kube-proxy, plus an nftables netdev ingress chain on rtr0/rtr1 "
                          "that drops every frame after af_packet has copied it (the kernel's IP stack no longer "
                          "receives and discards it)"),
}
# Default cases: --quick leaves out the variant.
DEFAULT_CASES = ["direct", "kernel-forward", "nftables", "dpdk-kube-proxy", "dpdk-ingress-drop"]
QUICK_CASES = ["direct", "kernel-forward", "nftables", "dpdk-kube-proxy"]


def log(msg):
    print(f"[bench-kernel] {msg}", file=sys.stderr, flush=True)


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


def run(*argv, inp=None):
    r = subprocess.run(argv, input=inp, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


# ---------------------------------------------------------------- the ruleset


def chain_hash(name):
    """kube-proxy's chain-name prefix: 8 characters of base32(sha256(name))."""
    return base64.b32encode(hashlib.sha256(name.encode()).digest())[:8].decode()


def kube_proxy_ruleset(endpoints, ns="bench", svc="echo", port_name="p53", proto="udp"):
    """nft commands shaped like kube-proxy's nftables mode (v1.31+) writes for
    one ClusterIP Service with these endpoints, with clusterCIDR
    CLUSTER_CIDR, the node IP ROUTER_IP0 as the only NodePort address and
    masqueradeAll off. Names, hooks, priorities, sets, maps and rules follow
    pkg/proxy/nftables (its TestOverallNFTablesRules expectations)."""
    t = "ip kube-proxy"
    L = [
        f'add table {t} {{ comment "rules for kube-proxy" ; }}',
        f'add set {t} cluster-ips {{ type ipv4_addr ; comment "Active ClusterIPs" ; }}',
        f'add set {t} nodeport-ips {{ type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }}',
        f'add map {t} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; '
        f'comment "destinations that are subject to LoadBalancerSourceRanges" ; }}',
        f'add map {t} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; '
        f'comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }}',
        f'add map {t} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; '
        f'comment "vmap to drop or reject packets to services with no endpoints" ; }}',
        f'add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; '
        f'comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }}',
        f'add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }}',
        f"add chain {t} cluster-ips-check",
        f"add chain {t} filter-prerouting-pre-dnat {{ type filter hook prerouting priority -110 ; }}",
        f"add chain {t} filter-output-pre-dnat {{ type filter hook output priority -110 ; }}",
        f"add chain {t} filter-forward {{ type filter hook forward priority 0 ; }}",
        f"add chain {t} filter-input {{ type filter hook input priority 0 ; }}",
        f"add chain {t} filter-output {{ type filter hook output priority 0 ; }}",
        f"add chain {t} firewall-check",
        f"add chain {t} mark-for-masquerade",
        f"add chain {t} masquerading",
        f"add chain {t} nat-output {{ type nat hook output priority -100 ; }}",
        f"add chain {t} nat-postrouting {{ type nat hook postrouting priority 100 ; }}",
        f"add chain {t} nat-prerouting {{ type nat hook prerouting priority -100 ; }}",
        f"add chain {t} nodeport-endpoints-check",
        f'add chain {t} reject-chain {{ comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }}',
        f"add chain {t} services",
        f"add chain {t} service-endpoints-check",
        f'add rule {t} cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"',
        f'add rule {t} cluster-ips-check ip daddr {{ {SERVICE_CIDR} }} drop comment "Drop traffic to unallocated ClusterIPs"',
        f"add rule {t} filter-prerouting-pre-dnat ct state new jump firewall-check",
        f"add rule {t} filter-forward ct state new jump service-endpoints-check",
        f"add rule {t} filter-forward ct state new jump cluster-ips-check",
        f"add rule {t} filter-input ct state new jump nodeport-endpoints-check",
        f"add rule {t} filter-input ct state new jump service-endpoints-check",
        f"add rule {t} filter-output ct state new jump service-endpoints-check",
        f"add rule {t} filter-output-pre-dnat ct state new jump firewall-check",
        f"add rule {t} filter-output ct state new jump cluster-ips-check",
        f"add rule {t} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips",
        f"add rule {t} mark-for-masquerade mark set mark or 0x4000",
        f"add rule {t} masquerading mark and 0x4000 == 0 return",
        f"add rule {t} masquerading mark set mark xor 0x4000",
        f"add rule {t} masquerading masquerade fully-random",
        f"add rule {t} nat-output jump services",
        f"add rule {t} nat-postrouting jump masquerading",
        f"add rule {t} nat-prerouting jump services",
        f"add rule {t} nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
        f"add rule {t} reject-chain reject",
        f"add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {t} services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
        f"add element {t} nodeport-ips {{ {ROUTER_IP0} }}",
        f"add rule {t} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
    ]
    base = f"{ns}/{svc}/{proto}/{port_name}"
    svc_chain = f"service-{chain_hash(base)}-{base}"
    ep_chains = []
    for ep in endpoints:
        name = f"{base}__{ep}/{EP_PORT}"
        ep_chains.append((ep, f"endpoint-{chain_hash(name)}-{name}"))
    # Chains first (the service chain's vmap jumps to the endpoint chains).
    L.append(f"add chain {t} {svc_chain}")
    L += [f"add chain {t} {c}" for _, c in ep_chains]
    L.append(f"add rule {t} {svc_chain} ip daddr {VIP} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade")
    vmap = " , ".join(f"{i} : goto {c}" for i, (_, c) in enumerate(ep_chains))
    L.append(f"add rule {t} {svc_chain} numgen random mod {len(ep_chains)} vmap {{ {vmap} }}")
    for ep, c in ep_chains:
        L.append(f"add rule {t} {c} ip saddr {ep} jump mark-for-masquerade")
        L.append(f"add rule {t} {c} meta l4proto {proto} dnat to {ep}:{EP_PORT}")
    L.append(f"add element {t} cluster-ips {{ {VIP} }}")
    L.append(f"add element {t} service-ips {{ {VIP} . {proto} . {VPORT} : goto {svc_chain} }}")
    return "\n".join(L) + "\n"


def sink_ruleset(endpoints):
    """Backend namespace: count and drop the test packets before routing and
    before any conntrack (raw priority), one counter per backend address."""
    rules = "\n".join(f"    ip daddr {ep} udp dport {EP_PORT} counter drop" for ep in endpoints)
    return ("table ip bench-sink {\n  chain prerouting {\n"
            "    type filter hook prerouting priority raw; policy accept;\n"
            f"{rules}\n  }}\n}}\n")


# ---------------------------------------------------------------- generator


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def frame(dst_mac, src_mac, src_ip, dst_ip, sport, dport, payload):
    sip, dip = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    ulen = 8 + len(payload)
    pseudo = sip + dip + struct.pack("!BBH", 0, 17, ulen)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    uc = csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", uc) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0x4000, 64, 17, 0, sip, dip)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00" + ip + udp


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(IoVec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]


class SockaddrLl(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("protocol", ctypes.c_ushort), ("ifindex", ctypes.c_int),
                ("hatype", ctypes.c_ushort), ("pkttype", ctypes.c_ubyte), ("halen", ctypes.c_ubyte),
                ("addr", ctypes.c_ubyte * 8)]


def gen(a):
    """Sends a.rate frames/s for a.seconds on a.ifname: every a.tick_us the
    frames that are due go out in sendmmsg(2) calls (at most 64 per call),
    round-robin over a.flows source ports. Prints one JSON line at the end."""
    libc = ctypes.CDLL(None, use_errno=True)
    dsts = a.dst_ips.split(",")
    payload = b"dkp-bench-kernel\0\0"  # 18 bytes: 14 + 20 + 8 + 18 = 60 (+ FCS = 64)
    frames = [frame(a.dst_mac, a.src_mac, CLIENT_IP, dsts[i % len(dsts)], SRC_PORT0 + i, a.dport, payload)
              for i in range(a.flows)]
    assert all(len(f) == 60 for f in frames)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing
    sll = SockaddrLl(family=socket.AF_PACKET, protocol=socket.htons(0x0800), ifindex=socket.if_nametoindex(a.ifname),
                     halen=6)
    for i, b in enumerate(bytes.fromhex(a.dst_mac.replace(":", ""))):
        sll.addr[i] = b
    maxb = 64
    bufs = [ctypes.create_string_buffer(f, len(f)) for f in frames]
    n = a.flows + maxb  # the array wraps: a call never needs to split
    iov = (IoVec * n)()
    msgs = (MMsgHdr * n)()
    for i in range(n):
        b = bufs[i % a.flows]
        iov[i].base, iov[i].len = ctypes.addressof(b), 60
        msgs[i].hdr.name = ctypes.addressof(sll)
        msgs[i].hdr.namelen = ctypes.sizeof(sll)
        msgs[i].hdr.iov = ctypes.pointer(iov[i])
        msgs[i].hdr.iovlen = 1
    sendmmsg = libc.sendmmsg
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    base = ctypes.addressof(msgs)
    size = ctypes.sizeof(MMsgHdr)
    fd = s.fileno()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    tick = a.tick_us / 1e6
    cap = max(maxb, int(a.rate * 0.01))  # after a stall, catch up at most 10 ms worth at once
    sent = errors = calls = wakes = skipped = 0
    idx = 0
    t0 = time.monotonic()
    end = t0 + a.seconds
    nxt = t0
    while not stop:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - t0) * a.rate) - sent - skipped
        if due > cap:
            skipped += due - cap
            due = cap
        wakes += 1
        while due > 0:
            k = min(due, maxb)
            r = sendmmsg(fd, base + idx * size, k, 0)
            calls += 1
            if r <= 0:
                errors += 1
                skipped += due
                break
            sent += r
            due -= r
            idx = (idx + r) % a.flows
        nxt += tick
        d = nxt - time.monotonic()
        if d > 0:
            time.sleep(d)
        else:
            nxt = time.monotonic()
    el = time.monotonic() - t0
    print(json.dumps({"sent": sent, "seconds": el, "rate": sent / el, "skipped": skipped, "errors": errors,
                      "sendmmsg_calls": calls, "wakeups": wakes, "frames_per_wakeup": sent / max(1, wakes)}),
          flush=True)


# ---------------------------------------------------------------- proxy metrics


def parse_metrics(body):
    """{"sum": {name: value}, "worker": {name: {worker: value}}}"""
    out = {"sum": {}, "worker": {}}
    for l in body.splitlines():
        if not l or l.startswith("#"):
            continue
        nl, _, v = l.rpartition(" ")
        try:
            v = float(v)
        except ValueError:
            continue
        name = nl.split("{", 1)[0]
        out["sum"][name] = out["sum"].get(name, 0) + v
        if 'worker="' in nl:
            w = nl.split('worker="', 1)[1].split('"', 1)[0]
            d = out["worker"].setdefault(name, {})
            d[w] = d.get(w, 0) + v
    return out


def scrape(a):
    """One JSON line of parsed /metrics per line read on stdin."""
    import urllib.request
    for _ in sys.stdin:
        try:
            with urllib.request.urlopen(a.url, timeout=5) as r:
                m = parse_metrics(r.read().decode())
        except Exception as e:  # noqa: BLE001
            m = {"error": str(e)}
        print(json.dumps(m), flush=True)


# ---------------------------------------------------------------- orchestrator


class Bench:
    def __init__(self, a):
        self.a = a
        self.p = a.prefix
        self.ns = {k: f"{self.p}-{k}" for k in ("client", "router", "backend")}
        self.eps = [f"198.18.1.{11 + i}" for i in range(a.endpoints)]
        self.procs = []

    # -- processes -------------------------------------------------------
    def spawn(self, argv, prio=False, **kw):
        """Starts a process (its pid goes to the pid file the shell's cleanup
        reads). prio: a process on the packet path. It gets a session of its
        own, whose scheduler autogroup gets --nice: with autogroups (the
        default), a task's nice value only counts inside its autogroup, and
        other sessions' load would otherwise get an equal share of its CPU."""
        p = subprocess.Popen(argv, start_new_session=prio, **kw)
        with open(self.a.pidfile, "a") as f:
            f.write(f"{p.pid}\n")
        self.procs.append(p)
        if prio:
            try:
                with open(f"/proc/{p.pid}/autogroup", "w") as f:
                    f.write(str(self.a.nice))
            except OSError:
                pass  # no autogroups: the nice value alone applies
        return p

    def stop(self, p, timeout=10):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # -- topology ---------------------------------------------------------
    def ip(self, ns, *args):
        return run("ip", "-n", self.ns[ns], *args)

    def nsx(self, ns, *argv, inp=None):
        return run("ip", "netns", "exec", self.ns[ns], *argv, inp=inp)

    def down(self):
        for p in self.procs:
            self.stop(p)
        self.procs = []
        for ns in self.ns.values():
            if ns in run("ip", "netns", "list"):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def up(self, direct):
        self.down()
        with open(self.a.nsfile, "a") as f:
            f.write("\n".join(self.ns.values()) + "\n")
        for k, ns in self.ns.items():
            if direct and k == "router":
                continue
            run("ip", "netns", "add", ns)
            # No IPv6 (no ND/MLD chatter on the links), loopback up.
            self.nsx(k, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
            self.ip(k, "link", "set", "lo", "up")
        if direct:
            run("ip", "link", "add", "cli0", "netns", self.ns["client"], "type", "veth", "peer", "name", "be0",
                "netns", self.ns["backend"])
            links = [("client", "cli0"), ("backend", "be0")]
        else:
            run("ip", "link", "add", "cli0", "netns", self.ns["client"], "type", "veth", "peer", "name", "rtr0",
                "netns", self.ns["router"])
            run("ip", "link", "add", "rtr1", "netns", self.ns["router"], "type", "veth", "peer", "name", "be0",
                "netns", self.ns["backend"])
            links = [("client", "cli0"), ("router", "rtr0"), ("router", "rtr1"), ("backend", "be0")]
        for ns, dev in links:
            self.ip(ns, "link", "set", dev, "address", MAC[dev])
            # As scripts/netns.sh: checksums computed by the sender, no segmentation offloads.
            subprocess.run(["ip", "netns", "exec", self.ns[ns], "ethtool", "-K", dev, "tx", "off", "tso", "off",
                            "gso", "off", "gro", "off"], capture_output=True)
            self.ip(ns, "link", "set", dev, "up")
        self.ip("client", "addr", "add", f"{CLIENT_IP}/24", "dev", "cli0")
        for ep in self.eps:
            self.ip("backend", "addr", "add", f"{ep}/24", "dev", "be0")
        self.nsx("backend", "nft", "-f", "-", inp=sink_ruleset(self.eps))
        # A process that lives in the backend namespace: /proc/PID/net/dev is
        # that namespace's interface counters, read without spawning anything.
        self.sleeper = self.spawn(["ip", "netns", "exec", self.ns["backend"], "sleep", "100000"])

    def kernel_router(self, nat):
        self.nsx("router", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.ip("router", "addr", "add", f"{ROUTER_IP0}/24", "dev", "rtr0")
        self.ip("router", "addr", "add", f"{ROUTER_IP1}/24", "dev", "rtr1")
        # Static neighbours, as in the proxy's configuration: no ARP in the window.
        self.ip("router", "neigh", "replace", CLIENT_IP, "lladdr", MAC["cli0"], "nud", "permanent", "dev", "rtr0")
        for ep in self.eps:
            self.ip("router", "neigh", "replace", ep, "lladdr", MAC["be0"], "nud", "permanent", "dev", "rtr1")
        if nat:
            self.nsx("router", "nft", "-f", "-", inp=kube_proxy_ruleset(self.eps))

    def proxy_config(self):
        backends = ", ".join(f'"{ep}:{EP_PORT}"' for ep in self.eps)
        neigh = "\n".join(f'  - {{address: {ep}, mac: "{MAC["be0"]}", port: 1}}' for ep in self.eps)
        return f"""# Written by scripts/bench/kernel.py
eal:
  lcores: "0@0,1@1"   # control lcore on CPU 0 (with the generator), the one worker alone on CPU 1
  no_huge: true
  memory_mb: 512
  vdevs:
    # 4096-frame rings (default 512): a worker preempted by other load for
    # a few ms must not overflow its rx ring (the kernel path has no ring).
    - net_af_packet0,iface=rtr0,qpairs=1,framecnt=4096
    - net_af_packet1,iface=rtr1,qpairs=1,framecnt=4096
  args: ["--log-level", "*:notice"]
ports:
  - device: net_af_packet0
    addresses: ["{ROUTER_IP0}/24"]
  - device: net_af_packet1
    addresses: ["{ROUTER_IP1}/24"]
neighbors:
  - {{address: {CLIENT_IP}, mac: "{MAC["cli0"]}", port: 0}}
{neigh}
workers:
  sessions: 65536
  rx_desc: 1024
  tx_desc: 1024
  idle_sleep_us: 0    # the worker polls without sleeping (its idle cycles are counted apart)
cluster_cidrs: ["{CLUSTER_CIDR}"]   # the client is a pod: no masquerade, like the nftables case
admin:
  bind: {ADMIN}
services:
  - name: bench/echo
    vip: {VIP}
    port: {VPORT}
    protocol: UDP
    backends: [{backends}]
"""

    def start_proxy(self):
        conf = os.path.join(self.a.tmp, "proxy.yaml")
        with open(conf, "w") as f:
            f.write(self.proxy_config())
        self.proxy_log = os.path.join(self.a.tmp, "proxy.log")
        logf = open(self.proxy_log, "w")
        self.proxy = self.spawn(["ip", "netns", "exec", self.ns["router"], "nice", "-n", str(self.a.nice),
                                 self.a.proxy, "--config", conf], prio=True,
                                stdout=logf, stderr=subprocess.STDOUT)
        self.scraper = self.spawn(["ip", "netns", "exec", self.ns["router"], sys.executable, os.path.abspath(__file__),
                                   "scrape", "--url", f"http://{ADMIN}/metrics"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        end = time.monotonic() + 60
        while True:
            if self.proxy.poll() is not None:
                raise RuntimeError(f"dpdk-kube-proxy exited ({self.proxy.returncode}); see {self.proxy_log}:\n"
                                   + open(self.proxy_log).read()[-2000:])
            m = self.metrics()
            tv = m.get("worker", {}).get("dpdk_kube_proxy_worker_table_version", {})
            if tv and all(v > 0 for v in tv.values()):
                break
            if time.monotonic() > end:
                raise RuntimeError(f"dpdk-kube-proxy did not come up; see {self.proxy_log}")
            time.sleep(0.3)
        self.worker_tid = None
        for tid in os.listdir(f"/proc/{self.proxy.pid}/task"):
            comm = open(f"/proc/{self.proxy.pid}/task/{tid}/comm").read().strip()
            if comm.startswith(("rte-worker", "lcore-worker")):
                self.worker_tid = int(tid)
        if self.worker_tid is None:
            raise RuntimeError("no worker thread (rte-worker-*) in the proxy")

    def metrics(self):
        self.scraper.stdin.write("\n")
        self.scraper.stdin.flush()
        return json.loads(self.scraper.stdout.readline())

    # -- measurement ---------------------------------------------------------
    @staticmethod
    def schedstat(path):
        try:
            run_ns, wait_ns, _ = open(path).read().split()
            return int(run_ns), int(wait_ns)
        except (OSError, ValueError):
            return 0, 0

    @staticmethod
    def tasks(pid):
        """{tid: (run ns, wait ns)} for every thread of pid."""
        out = {}
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return out
        for t in tids:
            out[int(t)] = Bench.schedstat(f"/proc/{pid}/task/{t}/schedstat")
        return out

    @staticmethod
    def proc_stat():
        """Summed over CPUs, in ns: (busy without steal, idle + iowait, steal)."""
        hz = os.sysconf("SC_CLK_TCK")
        for l in open("/proc/stat"):
            if l.startswith("cpu "):
                v = [int(x) for x in l.split()[1:]]
                user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
                k = 1e9 / hz
                return (user + nice + system + irq + softirq) * k, (idle + iowait) * k, steal * k
        raise RuntimeError("no cpu line in /proc/stat")

    @staticmethod
    def softnet():
        """Per-CPU [processed, dropped, time_squeeze] from /proc/net/softnet_stat
        (the kernel's per-CPU input backlog: 'dropped' = backlog full)."""
        return [[int(x, 16) for x in l.split()[:3]] for l in open("/proc/net/softnet_stat")]

    @staticmethod
    def ip_counters(pid):
        lines = [l.split() for l in open(f"/proc/{pid}/net/snmp") if l.startswith("Ip:")]
        d = dict(zip(lines[0][1:], (int(x) for x in lines[1][1:])))
        return {k: d[k] for k in ("InReceives", "InAddrErrors", "ForwDatagrams", "InDiscards") if k in d}

    def delivered(self):
        """Packets received on be0 in the backend namespace (its /proc/PID/net/dev)."""
        for l in open(f"/proc/{self.sleeper.pid}/net/dev"):
            name, _, rest = l.partition(":")
            if name.strip() == "be0":
                return int(rest.split()[1])
        raise RuntimeError("be0 not found in the backend namespace")

    def sink_counts(self):
        """{backend: packets} from the sink's nftables counters."""
        out = {}
        j = json.loads(self.nsx("backend", "nft", "-j", "list", "table", "ip", "bench-sink"))
        for item in j["nftables"]:
            r = item.get("rule")
            if not r:
                continue
            ep = pk = None
            for e in r["expr"]:
                if "match" in e and e["match"]["left"].get("payload", {}).get("field") == "daddr":
                    ep = e["match"]["right"]
                if "counter" in e:
                    pk = e["counter"]["packets"]
            if ep is not None:
                out[ep] = pk
        return out

    def snapshot(self, gen_pid, proxy):
        t_a = time.monotonic()
        s = {"metrics": self.metrics() if proxy else None}
        s["gen"] = self.schedstat(f"/proc/{gen_pid}/schedstat")
        s["softirqd"] = {pid: self.schedstat(f"/proc/{pid}/schedstat") for pid in self.softirqd}
        s["proxy"] = self.tasks(self.proxy.pid) if proxy else {}
        s["stat"] = self.proc_stat()
        s["delivered"] = self.delivered()
        s["t"] = (t_a + time.monotonic()) / 2
        return s

    def measure(self, case, rate):
        a = self.a
        to, router, _ = CASES[case]
        proxy = router.startswith("dpdk") if router else False
        if to == "vip":
            dsts, dport = VIP, VPORT
        else:
            dsts, dport = ",".join(self.eps), EP_PORT
        dst_mac = MAC["be0"] if router is None else MAC["rtr0"]
        z = self.sink_counts()
        sn_z = self.softnet()
        m_z = self.metrics() if proxy else None
        total = a.warmup + a.duration + 0.5
        g = self.spawn(["ip", "netns", "exec", self.ns["client"], "nice", "-n", str(a.nice), "taskset", "-c", "0",
                        sys.executable,
                        os.path.abspath(__file__), "gen", "--ifname", "cli0", "--dst-mac", dst_mac,
                        "--src-mac", MAC["cli0"], "--dst-ips", dsts, "--dport", str(dport), "--rate", str(rate),
                        "--seconds", str(total), "--flows", str(a.flows), "--tick-us", str(a.tick_us)],
                       prio=True, stdout=subprocess.PIPE, text=True)
        time.sleep(a.warmup)
        s0 = self.snapshot(g.pid, proxy)
        time.sleep(a.duration)
        s1 = self.snapshot(g.pid, proxy)
        out, _ = g.communicate(timeout=total + 30)
        if g.returncode != 0:
            raise RuntimeError(f"generator failed ({g.returncode})")
        gres = json.loads(out.strip().splitlines()[-1])
        time.sleep(0.3)  # let the last frames drain
        f = self.sink_counts()
        sn_f = self.softnet()
        m_f = self.metrics() if proxy else None
        dt = s1["t"] - s0["t"]
        pk = s1["delivered"] - s0["delivered"]
        if pk <= 0:
            raise RuntimeError(f"{case}: no packet reached the backend namespace")
        gen_ns = s1["gen"][0] - s0["gen"][0]
        gen_wait = s1["gen"][1] - s0["gen"][1]
        sirq = {open(f"/proc/{p}/comm").read().strip(): s1["softirqd"][p][0] - s0["softirqd"][p][0]
                for p in self.softirqd}
        sirq_ns = sum(sirq.values())
        sink_total = sum(f.values()) - sum(z.values())
        per_backend = {ep: f.get(ep, 0) - z.get(ep, 0) for ep in self.eps}
        busy, idle, steal = (s1["stat"][i] - s0["stat"][i] for i in range(3))
        row = {
            "case": case,
            "offered_pps": rate,
            "generated_pps": round(gres["rate"], 1),
            "delivered_pps": round(pk / dt, 1),
            "sent": gres["sent"],
            "delivered": sink_total,
            "lost": gres["sent"] - sink_total,
            "per_backend": per_backend,
            # Where frames can be lost in the kernel: a full per-CPU input
            # backlog (net.core.netdev_max_backlog) while softirq work waits
            # for ksoftirqd. (The af_packet PMD of DPDK 22.11 does not report
            # its rx ring's drops; a loss not counted here was there.)
            "backlog_drops_per_cpu": [b[1] - a[1] for a, b in zip(sn_z, sn_f)],
            "window_s": round(dt, 3),
            "window_packets": pk,
            "gen": {k: gres[k] for k in ("skipped", "errors", "sendmmsg_calls", "frames_per_wakeup")},
            "cpu_ns": {"generator": gen_ns, "ksoftirqd": sirq_ns, "ksoftirqd_per_cpu": sirq},
            "generator_waiting_share": round(gen_wait / 1e9 / dt, 3),
        }
        total_ns = gen_ns + sirq_ns
        worker_idle_ns = 0
        if proxy:
            w0, w1 = s0["metrics"]["worker"], s1["metrics"]["worker"]
            wid = "0"
            hz = w1["dpdk_kube_proxy_worker_tsc_hz"][wid]
            self.tsc_hz = hz
            busy_cyc = w1["dpdk_kube_proxy_worker_busy_cycles_total"][wid] - w0["dpdk_kube_proxy_worker_busy_cycles_total"][wid]
            idle_cyc = w1["dpdk_kube_proxy_worker_idle_cycles_total"][wid] - w0["dpdk_kube_proxy_worker_idle_cycles_total"][wid]
            rx = s1["metrics"]["sum"]["dpdk_kube_proxy_rx_packets_total"] - s0["metrics"]["sum"]["dpdk_kube_proxy_rx_packets_total"]
            wt = self.worker_tid
            w_run = s1["proxy"].get(wt, (0, 0))[0] - s0["proxy"].get(wt, (0, 0))[0]
            w_wait = s1["proxy"].get(wt, (0, 0))[1] - s0["proxy"].get(wt, (0, 0))[1]
            other = sum(v[0] - s0["proxy"].get(t, (0, 0))[0] for t, v in s1["proxy"].items() if t != wt)
            # The TSC counts wall time: a loop during which the worker was
            # preempted (other load on its CPU) counts the time it was off
            # the CPU too. Preemption hits busy and idle loops in proportion
            # to their time, so scaling by the on-CPU share of the wall time
            # removes it (a no-op on a quiet machine; worker_waiting_share
            # says how much was removed).
            wall_ns = (busy_cyc + idle_cyc) / hz * 1e9
            on_share = min(1.0, w_run / wall_ns) if wall_ns else 1.0
            busy_ns = busy_cyc / hz * 1e9 * on_share
            worker_idle_ns = idle_cyc / hz * 1e9 * on_share
            row["cpu_ns"].update({"worker_busy": round(busy_ns), "worker_busy_wall": round(busy_cyc / hz * 1e9),
                                  "proxy_other_threads": other,
                                  "worker_idle_polling_excluded": round(worker_idle_ns), "worker_thread_on_cpu": w_run})
            row["worker_on_cpu_share"] = round(on_share, 3)
            row["worker_rx_packets"] = rx
            row["worker_busy_cycles_per_packet"] = round(busy_cyc * on_share / max(1, rx), 1)
            row["worker_waiting_share"] = round(w_wait / 1e9 / dt, 3)
            row["worker_busy_share"] = round(busy_cyc / max(1, busy_cyc + idle_cyc), 4)
            d = {}
            for k, v in m_f["sum"].items():
                if k.startswith("dpdk_kube_proxy_dropped_packets") and v - m_z["sum"].get(k, 0) > 0:
                    d[k] = v - m_z["sum"].get(k, 0)
            for k, v in m_f["sum"].items():
                if (k.startswith("dpdk_kube_proxy_port_") and any(x in k for x in ("missed", "errors", "nombuf"))
                        and v - m_z["sum"].get(k, 0) > 0):
                    d[k] = v - m_z["sum"].get(k, 0)
            row["proxy_drops"] = d
            row["proxy_sessions_created"] = m_f["sum"].get("dpdk_kube_proxy_sessions_created_total", 0)
            total_ns += busy_ns + other
        row["cpu_ns_per_packet"] = round(total_ns / pk, 1)
        # Cross-check from /proc/stat (tick-sampled, whole machine, includes
        # other users' load): all busy CPU time minus the worker's idle polling.
        row["system_busy_ns_per_packet"] = round((busy - worker_idle_ns) / pk, 1)
        row["system_other_load_share"] = round(max(0.0, busy - worker_idle_ns - total_ns) / 1e9 / dt, 3)
        row["steal_share"] = round(steal / 1e9 / dt, 3)
        row["contended"] = row["generator_waiting_share"] > 0.05 or row.get("worker_waiting_share", 0) > 0.05
        return row

    def ingress_drop(self):
        """After the af_packet taps (which run first), drop every frame on
        the proxy's interfaces before the kernel's IP stack sees it."""
        rules = "".join(f"""  chain in-{d} {{
    type filter hook ingress device {d} priority 0; policy accept;
    counter drop
  }}
""" for d in ("rtr0", "rtr1"))
        self.nsx("router", "nft", "-f", "-", inp=f"table netdev bench-ingress-drop {{\n{rules}}}\n")

    def run_case(self, case, rates, repeat):
        to, router, desc = CASES[case]
        log(f"case {case} (repeat {repeat}): {desc}")
        self.up(direct=router is None)
        try:
            if router in ("kernel", "nftables"):
                self.kernel_router(nat=router == "nftables")
            if router and router.startswith("dpdk"):
                self.start_proxy()
            if router == "dpdk-drop":
                self.ingress_drop()
            rows = []
            for rate in rates:
                for attempt in range(1 + self.a.retries):
                    other = wait_quiet(self.a.quiet_wait, [self.proxy.pid] if router and router.startswith("dpdk") else [])
                    r = self.measure(case, rate)
                    r["repeat"] = repeat
                    r["other_load_before"] = round(other, 3)
                    r["attempt"] = attempt + 1
                    if not r["contended"]:
                        break
                    log(f"  {rate} pps: other load took CPU from the packet path "
                        f"(generator waited {100 * r['generator_waiting_share']:.0f}%"
                        + (f", worker waited {100 * r['worker_waiting_share']:.0f}%" if "worker_waiting_share" in r else "")
                        + ")" + ("; measuring again" if attempt < self.a.retries else ""))
                # The router namespace's IP counters (/proc/PID/net/snmp of a
                # process in it): with af_packet, the kernel's IP stack also
                # receives every frame and discards it (InAddrErrors).
                if router and router.startswith("dpdk"):
                    r["router_kernel_ip"] = self.ip_counters(self.proxy.pid)
                if router == "nftables":
                    r["conntrack_entries"] = int(self.nsx("router", "cat", "/proc/sys/net/netfilter/nf_conntrack_count"))
                log(f"  {rate} pps: delivered {r['delivered_pps']:.0f} pps, lost {r['lost']}, "
                    f"{r['cpu_ns_per_packet']:.0f} ns/packet (system-wide {r['system_busy_ns_per_packet']:.0f})")
                rows.append(r)
            if router == "nftables":
                self.ruleset_listing = self.nsx("router", "nft", "list", "ruleset")
            return rows
        finally:
            self.down()


def cpu_busy_share(own_pids, interval=0.5):
    """Share of all CPUs busy over interval (from /proc/stat), without the
    CPU time of own_pids (the proxy, whose worker polls a whole CPU)."""
    def own():
        return sum(v[0] for p in own_pids for v in Bench.tasks(p).values())
    b0, i0, _ = Bench.proc_stat()
    o0 = own()
    time.sleep(interval)
    b1, i1, _ = Bench.proc_stat()
    o1 = own()
    return max(0.0, (b1 - b0) - (o1 - o0)) / max(1.0, (b1 - b0) + (i1 - i0))


_STAYS_BUSY = []


def wait_quiet(max_wait, own_pids=()):
    """Waits (up to max_wait s) until other load uses < 10% of the CPUs;
    returns the last share seen. Once a wait ran out, the machine is taken
    to be busy for good and later calls only measure."""
    end = time.monotonic() + (0 if _STAYS_BUSY else max_wait)
    logged = False
    while True:
        b = cpu_busy_share(own_pids)
        if b < 0.10:
            return b
        if time.monotonic() >= end:
            if max_wait > 0 and not _STAYS_BUSY:
                _STAYS_BUSY.append(1)
                log(f"machine stays busy ({100 * b:.0f}% of the CPUs used by other processes); "
                    "measuring anyway (figures will be noisier)")
            return b
        if not logged:
            log(f"machine busy ({100 * b:.0f}% of the CPUs used by other processes); waiting up to {max_wait:.0f} s")
            logged = True


def env_info(a):
    cpu_mhz = sh("sed -n 's/^cpu MHz[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -1")
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_model": sh("sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -1"),
        "cpu_mhz": float(cpu_mhz) if cpu_mhz else None,
        "cpus": os.cpu_count(),
        "hypervisor": sh("lscpu | sed -n 's/^Hypervisor vendor:[[:space:]]*//p'"),
        "kernel": sh("uname -r"),
        "nft": sh("nft --version"),
        "dpdk": sh("pkg-config --modversion libdpdk") or sh("dpkg-query -W -f '${Version}' dpdk"),
        "python": sys.version.split()[0],
        "loadavg_at_start": sh("cat /proc/loadavg"),
        "git_rev": sh("git rev-parse --short HEAD") + (" (dirty tree)" if sh("git status --porcelain -uno") else ""),
        "proxy_binary": a.proxy,
        "offered_pps": [int(r) for r in a.rates.split(",")],
        "frame": "64 bytes on the wire (60 + FCS): IPv4/UDP, 18-byte payload",
        "flows": a.flows,
        "endpoints": a.endpoints,
        "direction": "client -> Service only (no replies); the backend namespace counts and drops at raw prerouting",
        "generator": f"Python, AF_PACKET + sendmmsg(2) on cli0, paced every {a.tick_us} us, pinned to CPU 0",
        "pinning": "generator on CPU 0; dpdk-kube-proxy: control lcore CPU 0, worker CPU 1; kernel cases: the "
                   "whole kernel path runs on CPU 0 in the generator's context",
        "nice": f"generator and proxy at nice {a.nice}, each in a session (scheduler autogroup) of its own with "
                f"autogroup nice {a.nice}: less CPU lost to other load on a shared machine (the kernel path runs "
                "in the generator's context)",
        "warmup_s": a.warmup,
        "duration_s": a.duration,
        "quick": a.quick,
        "repeat": a.repeat,
    }


def main_run(a):
    cases = a.cases.split(",") if a.cases else (QUICK_CASES if a.quick else DEFAULT_CASES)
    for c in cases:
        if c not in CASES:
            raise SystemExit(f"unknown case {c!r} (known: {', '.join(CASES)})")
    rates = [int(r) for r in a.rates.split(",")]
    root_tables = sh("nft list tables")
    env = env_info(a)
    b = Bench(a)
    b.softirqd = [int(p) for p in os.listdir("/proc") if p.isdigit() and
                  open(f"/proc/{p}/comm").read().startswith("ksoftirqd/")]
    b.tsc_hz = None
    runs = []
    for k in range(a.repeat):
        # Alternate the order, so a drift of the machine's load does not
        # always favour the same case.
        for c in (cases if k % 2 == 0 else cases[::-1]):
            runs += b.run_case(c, rates, k + 1)
    if sh("nft list tables") != root_tables:
        raise RuntimeError("the root namespace's nftables tables changed during the run")
    hz = b.tsc_hz or (env["cpu_mhz"] or 0) * 1e6
    env["tsc_hz"] = hz
    direct = {(r["offered_pps"], r["repeat"]): r for r in runs if r["case"] == "direct"}
    for r in runs:
        r["cycles_per_packet"] = round(r["cpu_ns_per_packet"] * hz / 1e9, 1) if hz else None
        d = direct.get((r["offered_pps"], r["repeat"]))
        r["router_ns_per_packet"] = (round(r["cpu_ns_per_packet"] - d["cpu_ns_per_packet"], 1)
                                     if d and r["case"] != "direct" else None)
    rows = aggregate(runs, cases, rates, hz)
    out = {"benchmark": "kernel-baseline", "env": env,
           "cases": {c: CASES[c][2] for c in cases},
           "method": METHOD,
           "nftables_ruleset": getattr(b, "ruleset_listing", None),
           "rows": rows, "runs": runs}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)
    print_table(env, a, rows, hz)


METHOD = (
    "cpu_ns_per_packet: CPU time of the tasks on the packet path, read from /proc/<pid>/task/*/schedstat (exact "
    "ns, includes the softirq work the kernel runs in their context), over the measurement window, divided by the "
    "frames that reached the backend's veth in that window. Tasks: the generator (its sendmmsg(2) calls run the "
    "whole kernel path inline in softirq: client veth, the router namespace, the backend veth, the sink), "
    "ksoftirqd/* (softirq work deferred by the kernel) and, with dpdk-kube-proxy, its non-worker threads plus the "
    "worker's busy TSC cycles (poll-loop iterations that handled packets, which include its af_packet rx copy, "
    "the NAT and its sendto(2) into the kernel, where the veth to the backend and the sink run inline); the "
    "worker's idle polling is not a per-packet cost and is left out (its wall CPU is 100% by design). Worker "
    "cycles are scaled by its on-CPU share of the wall time, which removes time it was preempted by other load. "
    "router_ns_per_packet: the same minus the 'direct' case (no router) at the same load in the same repeat: "
    "the router's share. cycles_per_packet: cpu_ns_per_packet at the TSC frequency. system_busy_ns_per_packet "
    "and system_other_load_share come from /proc/stat (whole machine, minus the worker's idle polling): "
    "tick-sampled, and on this tickless (NO_HZ_IDLE) kernel they miss much of a task that runs in short bursts "
    "between idle periods like the generator, so they are a rough indication of other load only, not a second "
    "measurement. Rows are medians over the repeats; 'runs' has each run.")


def median(v):
    v = sorted(x for x in v if x is not None)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def aggregate(runs, cases, rates, hz):
    rows = []
    for c in cases:
        for rate in rates:
            rs = [r for r in runs if r["case"] == c and r["offered_pps"] == rate]
            if not rs:
                continue
            med = lambda k: median([r.get(k) for r in rs])  # noqa: E731
            cpu = med("cpu_ns_per_packet")
            row = {
                "case": c,
                "offered_pps": rate,
                "generated_pps": round(med("generated_pps"), 1),
                "delivered_pps": round(med("delivered_pps"), 1),
                "sent": sum(r["sent"] for r in rs),
                "lost": sum(r["lost"] for r in rs),
                "cpu_ns_per_packet": round(cpu, 1),
                "cycles_per_packet": round(cpu * hz / 1e9, 1) if hz else None,
                "router_ns_per_packet": med("router_ns_per_packet"),
                "cpu_ns_per_packet_runs": [r["cpu_ns_per_packet"] for r in rs],
                "repeats": len(rs),
                "contended_runs": sum(1 for r in rs if r["contended"]),
                "system_other_load_share": med("system_other_load_share"),
                "system_busy_ns_per_packet": median([r["system_busy_ns_per_packet"] for r in rs
                                                     if r["system_other_load_share"] < 0.1]),
                "method": "median over repeats; see 'method'",
            }
            if row["router_ns_per_packet"] is not None:
                row["router_ns_per_packet"] = round(row["router_ns_per_packet"], 1)
            if any("worker_busy_cycles_per_packet" in r for r in rs):
                row["worker_busy_cycles_per_packet"] = med("worker_busy_cycles_per_packet")
                row["worker_busy_share"] = med("worker_busy_share")
            rows.append(row)
    return rows


def print_table(env, a, rows, hz):
    print(f"\nKernel baseline, {env['date_utc']}, {env['cpu_model']}, {env['cpus']} CPUs, kernel {env['kernel']}, "
          f"{env['nft']}, DPDK {env['dpdk']}, git {env['git_rev']}")
    print(f"{a.flows} UDP flows to {a.endpoints} endpoints, 64-byte frames, one way, median of {a.repeat} run(s); "
          f"ns/pkt = CPU time of the packet path per delivered packet (the proxy worker's busy cycles, not its "
          f"idle polling); cycles at {hz / 1e9:.2f} GHz")
    hdr = (f"{'case':<18}{'offered':>8}{'delivered':>10}{'lost':>6}{'ns/pkt':>8}{'cyc/pkt':>8}"
           f"{'router ns':>10}  notes")
    print(hdr)
    print("-" * (len(hdr) + 20))
    for r in rows:
        notes = []
        if "worker_busy_cycles_per_packet" in r:
            notes.append(f"worker busy {r['worker_busy_cycles_per_packet']:.0f} cyc/pkt, "
                         f"{100 * r['worker_busy_share']:.1f}% of its loop time")
        if r["contended_runs"]:
            notes.append(f"{r['contended_runs']}/{r['repeats']} runs lost CPU to other load")
        if (r["system_other_load_share"] or 0) > 0.1:
            notes.append(f"other load ~{100 * r['system_other_load_share']:.0f}% of a CPU")
        rn = f"{r['router_ns_per_packet']:.0f}" if r["router_ns_per_packet"] is not None else "-"
        print(f"{r['case']:<18}{r['offered_pps']:>8}{r['delivered_pps']:>10.0f}{r['lost']:>6}"
              f"{r['cpu_ns_per_packet']:>8.0f}{r['cycles_per_packet'] or 0:>8.0f}{rn:>10}  {'; '.join(notes)}")
    print("router ns: ns/pkt minus the 'direct' case (no router) at the same load: the router's share (its veth hop, "
          "forwarding + NAT in the kernel, or af_packet + the worker, and the veth to the backend).\n"
          "af_packet over veth is bounded by the kernel's own veth and af_packet cost: the frames still cross the "
          "kernel, plus a copy and a syscall each way. Kernel bypass pays on real NICs (vfio-pci), not here.")
    print(f"results: {a.out}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--proxy", required=True)
    r.add_argument("--tmp", required=True)
    r.add_argument("--pidfile", required=True)
    r.add_argument("--nsfile", required=True)
    r.add_argument("--prefix", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--rates", default="20000,50000,100000")
    r.add_argument("--cases", default=None, help="comma separated; default all (--quick: all but the variant)")
    r.add_argument("--repeat", type=int, default=3)
    r.add_argument("--warmup", type=float, default=2.0)
    r.add_argument("--duration", type=float, default=10.0)
    r.add_argument("--flows", type=int, default=1024)
    r.add_argument("--endpoints", type=int, default=4)
    r.add_argument("--tick-us", type=int, default=1000)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--quiet-wait", type=float, default=20.0)
    r.add_argument("--retries", type=int, default=1)
    r.add_argument("--nice", type=int, default=-10)
    g = sub.add_parser("gen")
    g.add_argument("--ifname", required=True)
    g.add_argument("--dst-mac", required=True)
    g.add_argument("--src-mac", required=True)
    g.add_argument("--dst-ips", required=True)
    g.add_argument("--dport", type=int, required=True)
    g.add_argument("--rate", type=float, required=True)
    g.add_argument("--seconds", type=float, required=True)
    g.add_argument("--flows", type=int, default=1024)
    g.add_argument("--tick-us", type=int, default=1000)
    s = sub.add_parser("scrape")
    s.add_argument("--url", required=True)
    rs = sub.add_parser("ruleset")
    rs.add_argument("--endpoints", type=int, default=4)
    a = ap.parse_args()
    if a.cmd == "run":
        main_run(a)
    elif a.cmd == "gen":
        gen(a)
    elif a.cmd == "scrape":
        scrape(a)
    else:
        sys.stdout.write(kube_proxy_ruleset([f"198.18.1.{11 + i}" for i in range(a.endpoints)]))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
