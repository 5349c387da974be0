#!/usr/bin/env python3
"""Kernel-side test peers for the end-to-end tests and the demo.

Runs inside network namespaces (ip netns exec NS python3 peer.py ...):
  serve      an HTTP server (TCP) and a UDP responder, both answering NAME
  clients    N TCP (HTTP) and N UDP requests to a VIP; prints JSON counts per backend
  longlived  one keep-alive HTTP connection used repeatedly; prints JSON
  reject     expects TCP RST / ICMP port unreachable; prints JSON with latencies
"""
import argparse
import http.client
import http.server
import json
import socket
import socketserver
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def unmap(addr):
    return addr[7:] if addr.startswith("::ffff:") else addr


def serve(a):
    name = a.name.encode()

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            # "NAME SOURCE": the backend reports the source address it saw;
            # /big?n=N returns N bytes (bulk transfers, PMTU tests).
            body = name + b" " + unmap(self.client_address[0]).encode()
            if self.path.startswith("/big?n="):
                body = b"x" * int(self.path[len("/big?n="):])
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
        address_family = socket.AF_INET6
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 512

    httpd = S(("::", a.tcp), H)  # dual-stack: IPv4 arrives v4-mapped

    def udp():
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", a.udp))
        while True:
            data, peer = s.recvfrom(2048)
            s.sendto(name + b" " + unmap(peer[0]).encode() + b" " + data[:64], peer)

    threading.Thread(target=udp, daemon=True).start()
    print(f"{a.name} serving tcp:{a.tcp} udp:{a.udp}", flush=True)
    httpd.serve_forever()


def one_tcp(vip, port, timeout):
    for attempt in range(3):
        try:
            c = http.client.HTTPConnection(vip, port, timeout=timeout)
            c.request("GET", "/", headers={"Connection": "close"})
            body = c.getresponse().read().decode()
            c.close()
            name, _, src = body.partition(" ")
            return (name, src), attempt
        except OSError as e:
            err = str(e)
            time.sleep(0.05)
    return None, err


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def one_udp(vip, port, i, timeout):
    s = socket.socket(family(vip), socket.SOCK_DGRAM)
    s.settimeout(timeout)
    # Connected: the kernel accepts only replies from the VIP itself.
    s.connect((vip, port))
    try:
        for attempt in range(3):
            try:
                s.send(f"req {i}".encode())
                data = s.recv(2048)
                name, src, echo = data.decode().split(" ", 2)
                if echo != f"req {i}":
                    return None, f"bad echo {echo!r}"
                return (name, src), attempt
            except OSError as e:
                err = str(e)
        return None, err
    finally:
        s.close()


def clients(a):
    out = {}
    for proto in a.proto:
        counts, sources, errors, retries = {}, {}, [], 0
        with ThreadPoolExecutor(a.concurrency) as ex:
            if proto == "tcp":
                futs = [ex.submit(one_tcp, a.vip, a.tcp_port, a.timeout) for _ in range(a.count)]
            else:
                futs = [ex.submit(one_udp, a.vip, a.udp_port, i, a.timeout) for i in range(a.count)]
            for f in futs:
                got, info = f.result()
                if got is None:
                    errors.append(info)
                else:
                    name, src = got
                    counts[name] = counts.get(name, 0) + 1
                    per = sources.setdefault(name, {})
                    per[src] = per.get(src, 0) + 1
                    retries += info
        out[proto] = {"counts": counts, "sources": sources, "errors": len(errors), "retries": retries,
                      "first_errors": errors[:5]}
    if not a.human:
        print(json.dumps(out), flush=True)
        return
    for proto, label in (("tcp", f"TCP (HTTP :{a.tcp_port})"), ("udp", f"UDP (:{a.udp_port})")):
        if proto not in out:
            continue
        c = out[proto]["counts"]
        total = sum(c.values())
        print(f"   {label}: {total} answered, {out[proto]['errors']} failed")
        for name in sorted(c):
            print(f"      {name}: {c[name]:4d}  {100 * c[name] / max(total, 1):5.1f}%  " + "#" * (c[name] // 5))


def longlived(a):
    c = http.client.HTTPConnection(a.vip, a.tcp_port, timeout=a.timeout)
    names, errors, n, local = [], [], 0, None
    deadline = time.time() + a.duration
    while time.time() < deadline:
        try:
            c.request("GET", "/")
            names.append(c.getresponse().read().decode().partition(" ")[0])
            sockname = c.sock.getsockname()
            if local is None:
                local = sockname
            elif local != sockname:
                errors.append(f"reconnected: {local} -> {sockname}")
                local = sockname
            n += 1
        except OSError as e:
            errors.append(str(e))
            c.close()
            c = http.client.HTTPConnection(a.vip, a.tcp_port, timeout=a.timeout)
        time.sleep(a.interval)
    print(json.dumps({"requests": n, "backends": sorted(set(names)), "errors": errors[:10], "n_errors": len(errors)}), flush=True)


def download(a):
    """Fetches /big?n=SIZE COUNT times over fresh connections; prints JSON."""
    ok, errors, t = 0, [], time.monotonic()
    for _ in range(a.count):
        try:
            c = http.client.HTTPConnection(a.vip, a.tcp_port, timeout=a.timeout)
            c.request("GET", f"/big?n={a.size}", headers={"Connection": "close"})
            body = c.getresponse().read()
            c.close()
            if len(body) == a.size and body == b"x" * a.size:
                ok += 1
            else:
                errors.append(f"got {len(body)} bytes")
        except OSError as e:
            errors.append(str(e))
    print(json.dumps({"ok": ok, "errors": errors[:5], "seconds": time.monotonic() - t}), flush=True)


def reject(a):
    out = {}
    t = time.monotonic()
    s = socket.socket(family(a.vip), socket.SOCK_STREAM)
    s.settimeout(a.timeout)
    try:
        s.connect((a.vip, a.tcp_port))
        out["tcp"] = "connected"
    except ConnectionRefusedError:
        out["tcp"] = "refused"
    except OSError as e:
        out["tcp"] = f"error: {e}"
    out["tcp_ms"] = (time.monotonic() - t) * 1000
    s.close()
    u = socket.socket(family(a.vip), socket.SOCK_DGRAM)
    u.settimeout(a.timeout)
    u.connect((a.vip, a.udp_port))
    t = time.monotonic()
    try:
        u.send(b"hello")
        u.recv(100)
        out["udp"] = "answered"
    except ConnectionRefusedError:
        out["udp"] = "refused"
    except OSError as e:
        out["udp"] = f"error: {e}"
    out["udp_ms"] = (time.monotonic() - t) * 1000
    if a.human:
        print(f"   TCP connect: {out['tcp']} (RST) after {out['tcp_ms']:.2f} ms; "
              f"UDP request: {out['udp']} (ICMP port unreachable) after {out['udp_ms']:.2f} ms")
    else:
        print(json.dumps(out), flush=True)


def http_get(a):
    """GET URL; prints the body (exit 1 unless 200), or with --status "CODE BODY" whatever the code."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(a.url, timeout=a.timeout) as r:
            code, body = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        if not a.status:
            raise
        code, body = e.code, e.read().decode()
    sys.stdout.write(f"{code} {body}" if a.status else body)


def inject(a):
    """Sends malformed IPv4 frames out of IFACE to DST_MAC (raw AF_PACKET)."""
    import struct
    src = socket.inet_aton(a.src)
    dst = socket.inet_aton(a.dst)
    dmac = bytes.fromhex(a.dst_mac.replace(":", ""))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.iface, 0))
    smac = s.getsockname()[4][:6]
    eth = dmac + smac + b"\x08\x00"

    def ip(ihl=5, total=None, proto=6, payload=b""):
        hl = ihl * 4
        tl = total if total is not None else 20 + len(payload)
        h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tl, 1, 0x4000, 64, proto, 0, src, dst)
        csum = 0
        for i in range(0, 20, 2):
            csum += (h[i] << 8) | h[i + 1]
        while csum >> 16:
            csum = (csum & 0xFFFF) + (csum >> 16)
        h = h[:10] + struct.pack("!H", ~csum & 0xFFFF) + h[12:]
        return h + payload

    tcp_ok = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 5 << 4, 0x02, 1024, 0, 0)
    tcp_bad_doff = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 2 << 4, 0x02, 1024, 0, 0)
    udp_bad_len = struct.pack("!HHHH", 40000, 53, 4, 0) + b"xxxx"
    frames = {
        "bad_ihl": eth + ip(ihl=3, payload=tcp_ok),
        "total_len_too_big": eth + ip(total=1400, payload=tcp_ok),
        "tcp_bad_doff": eth + ip(payload=tcp_bad_doff),
        "udp_bad_len": eth + ip(proto=17, payload=udp_bad_len),
    }
    frames["truncated_ip"] = eth + bytes([0x45, 0, 0, 40, 0, 1, 0x40, 0])  # only 8 bytes of IPv4 header
    sent = {}
    for _ in range(a.count):
        for k, f in frames.items():
            s.send(f)
            sent[k] = sent.get(k, 0) + 1
    print(json.dumps(sent), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--name", required=True)
    s.add_argument("--tcp", type=int, default=8080)
    s.add_argument("--udp", type=int, default=5353)
    for cmd in ("clients", "longlived", "reject", "download"):
        c = sub.add_parser(cmd)
        c.add_argument("--vip", required=True)
        c.add_argument("--tcp-port", type=int, default=80)
        c.add_argument("--udp-port", type=int, default=53)
        c.add_argument("--timeout", type=float, default=2.0)
        c.add_argument("--human", action="store_true", help="print a summary instead of JSON")
        if cmd == "clients":
            c.add_argument("--count", type=int, default=300)
            c.add_argument("--concurrency", type=int, default=8)
            c.add_argument("--proto", nargs="+", default=["tcp", "udp"])
        if cmd == "download":
            c.add_argument("--size", type=int, default=300_000)
            c.add_argument("--count", type=int, default=3)
        if cmd == "longlived":
            c.add_argument("--duration", type=float, default=10)
            c.add_argument("--interval", type=float, default=0.1)
    g = sub.add_parser("http-get")
    g.add_argument("url")
    g.add_argument("--timeout", type=float, default=2.0)
    g.add_argument("--status", action="store_true", help='print "CODE BODY", also for errors')
    i = sub.add_parser("inject")
    i.add_argument("--iface", required=True)
    i.add_argument("--dst-mac", required=True)
    i.add_argument("--src", default="198.18.0.2")
    i.add_argument("--dst", default="198.18.100.1")
    i.add_argument("--count", type=int, default=10)
    a = p.parse_args()
    {"serve": serve, "clients": clients, "longlived": longlived, "reject": reject, "download": download,
     "http-get": http_get, "inject": inject}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
