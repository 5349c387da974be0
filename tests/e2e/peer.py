#!/usr/bin/env python3
"""Kernel-side test peers for the end-to-end tests and the demo.

Runs inside network namespaces (ip netns exec NS python3 peer.py ...):
  serve      an HTTP server (TCP), a UDP responder and a raw-socket SCTP
             responder, all answering NAME
  clients    N TCP (HTTP) and N UDP requests to a VIP; prints JSON counts per backend
  longlived  one keep-alive HTTP connection used repeatedly; prints JSON
  reject     expects TCP RST / ICMP port unreachable; prints JSON with latencies
  sctp-clients  N SCTP associations (raw IP sockets) to VIP:PORT; prints JSON
  sctp-reject   an SCTP INIT to a VIP without endpoints; expects ICMP port unreachable
  relay      a TCP relay LISTEN -> TARGET (e.g. in front of a kube-apiserver);
             SIGUSR1 resets every relayed connection (RST) and keeps listening

SCTP is spoken over raw IP sockets (protocol 132): the kernels here have no
SCTP module. A raw socket open for protocol 132 also keeps the kernel from
answering SCTP packets with ICMP protocol unreachable.
"""
import argparse
import http.client
import http.server
import json
import os
import random
import select
import socket
import struct
import socketserver
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def unmap(addr):
    return addr[7:] if addr.startswith("::ffff:") else addr


# ---------------------------------------------------------------------------
# SCTP over raw sockets (RFC 9260), just enough for the proxy's tests.

IPPROTO_SCTP = 132
INIT, INIT_ACK, SACK, HEARTBEAT, HEARTBEAT_ACK, ABORT = 1, 2, 3, 4, 5, 6
SHUTDOWN, SHUTDOWN_ACK, COOKIE_ECHO, COOKIE_ACK, SHUTDOWN_COMPLETE = 7, 8, 10, 11, 14
DATA = 0
PARAM_STATE_COOKIE = 7


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC32C = _crc32c_table()


def crc32c(data):
    """CRC32c (Castagnoli), table-driven: independent of the proxy's."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def sctp_packet(sport, dport, vtag, chunks):
    """Common header + chunks [(type, flags, value)], padded, CRC32c filled in."""
    body = b""
    for ty, flags, value in chunks:
        c = struct.pack("!BBH", ty, flags, 4 + len(value)) + value
        body += c + b"\0" * (-len(c) % 4)
    pkt = struct.pack("!HHII", sport, dport, vtag, 0) + body
    return pkt[:8] + struct.pack("<I", crc32c(pkt)) + pkt[12:]


def sctp_parse(pkt):
    """(sport, dport, vtag, crc_ok, [(type, flags, value)]) or None if malformed."""
    if len(pkt) < 12:
        return None
    sport, dport, vtag = struct.unpack("!HHI", pkt[:8])
    (crc,) = struct.unpack("<I", pkt[8:12])
    crc_ok = crc == crc32c(pkt[:8] + b"\0\0\0\0" + pkt[12:])
    chunks, off = [], 12
    while off + 4 <= len(pkt):
        ty, flags, ln = struct.unpack("!BBH", pkt[off:off + 4])
        if ln < 4 or off + ln > len(pkt):
            return None
        chunks.append((ty, flags, pkt[off + 4:off + ln]))
        off += (ln + 3) & ~3
    return sport, dport, vtag, crc_ok, chunks


def params(value):
    out, off = {}, 0
    while off + 4 <= len(value):
        ty, ln = struct.unpack("!HH", value[off:off + 4])
        if ln < 4:
            break
        out[ty] = value[off + 4:off + ln]
        off += (ln + 3) & ~3
    return out


def raw_sockets(families):
    return [socket.socket(f, socket.SOCK_RAW, IPPROTO_SCTP) for f in families]


def raw_recv(s):
    """One SCTP packet from a raw socket: (source address, SCTP bytes).
    IPv4 raw sockets deliver the IP header, IPv6 ones do not."""
    data, peer = s.recvfrom(65535)
    if s.family == socket.AF_INET:
        ihl = (data[0] & 0x0F) * 4
        return socket.inet_ntop(socket.AF_INET, data[12:16]), data[ihl:]
    return peer[0], data


def sctp_serve(name, port):
    """Answers SCTP on `port` over IPv4 and IPv6: INIT -> INIT ACK with a state
    cookie, COOKIE ECHO -> COOKIE ACK, DATA -> SACK + DATA "NAME SOURCE PAYLOAD",
    HEARTBEAT -> HEARTBEAT ACK, SHUTDOWN -> SHUTDOWN ACK. Packets with a bad
    CRC32c are ignored, as a real SCTP stack does."""
    socks = raw_sockets([socket.AF_INET, socket.AF_INET6])
    assoc = {}  # (peer addr, peer port) -> [peer tag, our tag, our next TSN]
    while True:
        ready, _, _ = select.select(socks, [], [])
        for s in ready:
            src, pkt = raw_recv(s)
            p = sctp_parse(pkt)
            if p is None:
                continue
            sport, dport, vtag, crc_ok, chunks = p
            if dport != port or not crc_ok:
                continue
            key = (src, sport)
            out = []
            for ty, flags, value in chunks:
                if ty == INIT and len(value) >= 16:
                    peer_tag, _, _, _, peer_tsn = struct.unpack("!IIHHI", value[:16])
                    my_tag = random.getrandbits(32) or 1
                    my_tsn = random.getrandbits(32)
                    cookie = struct.pack("!III", peer_tag, my_tag, my_tsn) + os.urandom(8)
                    v = struct.pack("!IIHHI", my_tag, 65536, 1, 1, my_tsn)
                    v += struct.pack("!HH", PARAM_STATE_COOKIE, 4 + len(cookie)) + cookie
                    # The INIT ACK carries the client's tag; no state kept yet.
                    s.sendto(sctp_packet(port, sport, peer_tag, [(INIT_ACK, 0, v)]), (src, 0))
                elif ty == COOKIE_ECHO and len(value) >= 12:
                    peer_tag, my_tag, my_tsn = struct.unpack("!III", value[:12])
                    if vtag != my_tag:
                        continue
                    assoc[key] = [peer_tag, my_tag, my_tsn]
                    out.append((COOKIE_ACK, 0, b""))
                elif key not in assoc or vtag != assoc[key][1]:
                    continue
                elif ty == DATA and len(value) >= 12:
                    tsn, sid, _, ppid = struct.unpack("!IHHI", value[:12])
                    out.append((SACK, 0, struct.pack("!IIHH", tsn, 65536, 0, 0)))
                    body = name + b" " + src.encode() + b" " + value[12:]
                    st = assoc[key]
                    out.append((DATA, 0x03, struct.pack("!IHHI", st[2], sid, 0, ppid) + body))
                    st[2] = (st[2] + 1) & 0xFFFFFFFF
                elif ty == HEARTBEAT:
                    out.append((HEARTBEAT_ACK, 0, value))
                elif ty == SHUTDOWN:
                    out.append((SHUTDOWN_ACK, 0, b""))
                elif ty in (SHUTDOWN_COMPLETE, ABORT):
                    assoc.pop(key, None)
            if out:
                peer_tag = assoc[key][0] if key in assoc else vtag
                s.sendto(sctp_packet(port, sport, peer_tag, out), (src, 0))


class SctpClient:
    """A client endpoint on one source port; checks every packet it receives."""

    def __init__(self, sock, vip, port, sport, timeout, stats):
        self.s, self.vip, self.port, self.sport = sock, vip, port, sport
        self.timeout, self.stats = timeout, stats

    def send(self, vtag, chunks):
        self.s.sendto(sctp_packet(self.sport, self.port, vtag, chunks), (self.vip, 0))

    def recv(self, want):
        """The chunks of the next packet of this association that holds a chunk
        of type `want`; None on timeout. Counts CRC and source errors."""
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.s], [], [], left)[0]:
                return None
            src, pkt = raw_recv(self.s)
            p = sctp_parse(pkt)
            if p is None or p[1] != self.sport:
                continue
            sport, _, vtag, crc_ok, chunks = p
            self.stats["packets"] += 1
            self.stats["bad_crc"] += 0 if crc_ok else 1
            if src != self.vip or sport != self.port:
                self.stats["bad_source"] += 1
                self.stats.setdefault("bad_sources", []).append(f"{src}:{sport}")
            if any(c[0] == want for c in chunks):
                return vtag, chunks

    def associate(self, i):
        """INIT, COOKIE ECHO + DATA, SHUTDOWN: returns (name, source) or raises."""
        my_tag = random.getrandbits(32) or 1
        init = struct.pack("!IIHHI", my_tag, 65536, 1, 1, 1000)
        for attempt in range(3):
            self.send(0, [(INIT, 0, init)])
            r = self.recv(INIT_ACK)
            if r is not None:
                break
        else:
            raise TimeoutError("no INIT ACK")
        vtag, chunks = r
        if vtag != my_tag:
            raise ValueError(f"INIT ACK with tag {vtag:#x}, want {my_tag:#x}")
        value = next(v for t, _, v in chunks if t == INIT_ACK)
        peer_tag = struct.unpack("!I", value[:4])[0]
        cookie = params(value[16:]).get(PARAM_STATE_COOKIE)
        if cookie is None:
            raise ValueError("INIT ACK without a state cookie")
        payload = f"req {i}".encode()
        data = struct.pack("!IHHI", 1000, 0, 0, 0) + payload
        self.send(peer_tag, [(COOKIE_ECHO, 0, cookie)])
        if self.recv(COOKIE_ACK) is None:
            raise TimeoutError("no COOKIE ACK")
        self.send(peer_tag, [(DATA, 0x03, data)])
        r = self.recv(DATA)
        if r is None:
            raise TimeoutError("no DATA answer")
        body = next(v for t, _, v in r[1] if t == DATA)[12:].decode()
        name, src, echo = body.split(" ", 2)
        if echo != payload.decode():
            raise ValueError(f"bad echo {echo!r}")
        tsn = struct.unpack("!I", next(v for t, _, v in r[1] if t == DATA)[:4])[0]
        self.send(peer_tag, [(SHUTDOWN, 0, struct.pack("!I", tsn))])
        if self.recv(SHUTDOWN_ACK) is None:
            raise TimeoutError("no SHUTDOWN ACK")
        self.send(peer_tag, [(SHUTDOWN_COMPLETE, 0, b"")])
        return name, src, attempt


def sctp_clients(a):
    s = socket.socket(family(a.vip), socket.SOCK_RAW, IPPROTO_SCTP)
    stats = {"packets": 0, "bad_crc": 0, "bad_source": 0}
    counts, sources, errors, retries = {}, {}, [], 0
    base = random.randrange(20000, 60000 - a.count)
    for i in range(a.count):
        c = SctpClient(s, a.vip, a.port, base + i, a.timeout, stats)
        try:
            name, src, attempt = c.associate(i)
            counts[name] = counts.get(name, 0) + 1
            per = sources.setdefault(name, {})
            per[src] = per.get(src, 0) + 1
            retries += attempt
        except (OSError, ValueError, StopIteration) as e:
            errors.append(f"{base + i}: {e!r}")
    out = {"sctp": {"counts": counts, "sources": sources, "errors": len(errors), "retries": retries,
                    "first_errors": errors[:5], **stats}}
    if a.human:
        total = sum(counts.values())
        print(f"   SCTP (:{a.port}): {total} associations, {len(errors)} failed, "
              f"{stats['packets']} packets received, {stats['bad_crc']} bad CRC32c")
        for n in sorted(counts):
            print(f"      {n}: {counts[n]:4d}  {100 * counts[n] / max(total, 1):5.1f}%")
    else:
        print(json.dumps(out), flush=True)


def sctp_reject(a):
    """INIT to a Service without endpoints: expects ICMP(v6) port unreachable
    quoting our packet, from the VIP."""
    v6 = ":" in a.vip
    s = socket.socket(family(a.vip), socket.SOCK_RAW, IPPROTO_SCTP)
    icmp = socket.socket(family(a.vip), socket.SOCK_RAW,
                         socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
    sport = random.randrange(20000, 60000)
    init = struct.pack("!IIHHI", 0x12345678, 65536, 1, 1, 1)
    t = time.monotonic()
    s.sendto(sctp_packet(sport, a.port, 0, [(INIT, 0, init)]), (a.vip, 0))
    out = {"sctp": "timeout"}
    deadline = t + a.timeout
    while time.monotonic() < deadline:
        if not select.select([icmp], [], [], max(0, deadline - time.monotonic()))[0]:
            break
        data, peer = icmp.recvfrom(65535)
        if not v6:
            data = data[(data[0] & 0x0F) * 4:]
        ty, code = data[0], data[1]
        q = data[8:]
        if v6:
            if len(q) < 44 or q[6] != IPPROTO_SCTP:
                continue
            qs = q[40:]
        else:
            if len(q) < 24 or q[9] != IPPROTO_SCTP:
                continue
            qs = q[(q[0] & 0x0F) * 4:]
        qsport, qdport = struct.unpack("!HH", qs[:4])
        if (qsport, qdport) != (sport, a.port):
            continue
        unreach = (1, 4) if v6 else (3, 3)
        out = {"sctp": "unreachable" if (ty, code) == unreach else f"icmp {ty}/{code}",
               "from": peer[0], "ms": (time.monotonic() - t) * 1000}
        break
    print(json.dumps(out), flush=True)


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
    threading.Thread(target=sctp_serve, args=(name, a.sctp), daemon=True).start()
    print(f"{a.name} serving tcp:{a.tcp} udp:{a.udp} sctp:{a.sctp}", flush=True)
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
    while time.time() < deadline and not (a.stop_file and os.path.exists(a.stop_file)):
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


def udp_stream(a):
    """One UDP flow (one socket, one source port) to VIP:UDP_PORT for DURATION:
    prints the backends that answered, in order, as runs [[name, count], ...]."""
    s = socket.socket(family(a.vip), socket.SOCK_DGRAM)
    s.settimeout(a.timeout)
    s.connect((a.vip, a.udp_port))
    runs, n_errors, i = [], 0, 0
    deadline = time.time() + a.duration
    while time.time() < deadline and not (a.stop_file and os.path.exists(a.stop_file)):
        i += 1
        try:
            s.send(f"seq {i}".encode())
            name = s.recv(2048).decode().split(" ", 1)[0]
            if runs and runs[-1][0] == name:
                runs[-1][1] += 1
            else:
                runs.append([name, 1])
        except OSError:
            n_errors += 1
        time.sleep(a.interval)
    print(json.dumps({"runs": runs, "n_errors": n_errors, "port": s.getsockname()[1]}), flush=True)


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


def ping(a):
    """ICMP(v6) echo to a.addr over a raw socket: a.count requests, a.interval
    apart; prints {"sent", "received", "duplicates", "bad"} (no ping binary needed)."""
    v6 = ":" in a.addr
    if v6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    seen, dups, bad = set(), 0, 0

    def icmp_sum(b):
        if len(b) % 2:
            b += b"\0"
        t = sum(struct.unpack(f"!{len(b) // 2}H", b))
        t = (t >> 16) + (t & 0xFFFF)
        t += t >> 16
        return ~t & 0xFFFF

    def drain(until):
        nonlocal dups, bad
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select([s], [], [], left)
            if not r:
                return
            data, peer = s.recvfrom(2048)
            if not v6:
                data = data[(data[0] & 0x0F) * 4:]  # raw IPv4 sockets get the IP header
            want = 129 if v6 else 0
            if len(data) < 8 or data[0] != want:
                continue
            rid, seq = struct.unpack("!HH", data[4:8])
            if rid != ident:
                continue
            if data[8:] != b"dkp-ping-%d" % seq:
                bad += 1
            elif seq in seen:
                dups += 1
            else:
                seen.add(seq)

    for seq in range(a.count):
        payload = b"dkp-ping-%d" % seq
        ty = 128 if v6 else 8
        hdr = struct.pack("!BBHHH", ty, 0, 0, ident, seq)
        if not v6:  # the kernel fills in the ICMPv6 checksum itself
            hdr = struct.pack("!BBHHH", ty, 0, icmp_sum(hdr + payload), ident, seq)
        s.sendto(hdr + payload, (a.addr, 0))
        drain(time.monotonic() + a.interval)
    drain(time.monotonic() + a.timeout)
    print(json.dumps({"sent": a.count, "received": len(seen), "duplicates": dups, "bad": bad}), flush=True)


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
    # SCTP to the SCTP Service: a corrupted CRC32c, and a chunk longer than the packet.
    init = struct.pack("!BBHIIHHI", INIT, 0, 20, 1, 65536, 1, 1, 1)
    bad_crc = bytearray(sctp_packet(40000, 3868, 0, [(INIT, 0, init[4:])]))
    bad_crc[8] ^= 0xFF
    bad_chunk = sctp_packet(40000, 3868, 0, [(INIT, 0, init[4:])])
    bad_chunk = bad_chunk[:14] + struct.pack("!H", 200) + bad_chunk[16:]
    frames["sctp_bad_crc"] = eth + ip(proto=IPPROTO_SCTP, payload=bytes(bad_crc))
    frames["sctp_bad_chunk"] = eth + ip(proto=IPPROTO_SCTP, payload=bad_chunk)
    sent = {}
    for _ in range(a.count):
        for k, f in frames.items():
            s.send(f)
            sent[k] = sent.get(k, 0) + 1
    print(json.dumps(sent), flush=True)


def relay(a):
    """Relays TCP connections from --listen to --target, byte for byte (TLS
    passes through). SIGUSR1 resets every open connection, both sides, with
    an RST (SO_LINGER 0) and keeps accepting; SIGTERM/SIGKILL end it."""
    import signal

    def hostport(v):
        h, _, p = v.rpartition(":")
        return h.strip("[]"), int(p)

    lock, conns = threading.Lock(), set()

    def wake(socks):
        # SHUT_RD wakes a pump blocked in recv() (close() from another
        # thread would not) and sends nothing; the pump then closes both.
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def reset(*_):
        with lock:
            socks = list(conns)
        for s in socks:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        wake(socks)
        print(f"relay: reset {len(socks) // 2} connections", file=sys.stderr, flush=True)

    def pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with lock:
            conns.discard(src)
            conns.discard(dst)
        wake((src, dst))
        # A FIN, or an RST after a reset (SO_LINGER 0).
        src.close()
        dst.close()

    signal.signal(signal.SIGUSR1, reset)
    ls = socket.socket(family(a.listen.rpartition(":")[0]), socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(hostport(a.listen))
    ls.listen(128)
    print(f"relay {a.listen} -> {a.target}", flush=True)
    while True:
        c, _ = ls.accept()
        try:
            u = socket.create_connection(hostport(a.target), timeout=5)
            u.settimeout(None)
        except OSError:
            c.close()
            continue
        with lock:
            conns.update((c, u))
        threading.Thread(target=pump, args=(c, u), daemon=True).start()
        threading.Thread(target=pump, args=(u, c), daemon=True).start()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--name", required=True)
    s.add_argument("--tcp", type=int, default=8080)
    s.add_argument("--udp", type=int, default=5353)
    s.add_argument("--sctp", type=int, default=9999)
    for cmd in ("sctp-clients", "sctp-reject"):
        c = sub.add_parser(cmd)
        c.add_argument("--vip", required=True)
        c.add_argument("--port", type=int, default=3868)
        c.add_argument("--timeout", type=float, default=1.0)
        c.add_argument("--human", action="store_true", help="print a summary instead of JSON")
        if cmd == "sctp-clients":
            c.add_argument("--count", type=int, default=60)
    for cmd in ("clients", "longlived", "udp-stream", "reject", "download"):
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
        if cmd in ("longlived", "udp-stream"):
            c.add_argument("--duration", type=float, default=10)
            c.add_argument("--interval", type=float, default=0.1)
            c.add_argument("--stop-file", help="stop early once this file exists")
    g = sub.add_parser("http-get")
    g.add_argument("url")
    g.add_argument("--timeout", type=float, default=2.0)
    g.add_argument("--status", action="store_true", help='print "CODE BODY", also for errors')
    pg = sub.add_parser("ping")
    pg.add_argument("addr")
    pg.add_argument("--count", type=int, default=3)
    pg.add_argument("--interval", type=float, default=0.2)
    pg.add_argument("--timeout", type=float, default=2.0)
    r = sub.add_parser("relay")
    r.add_argument("--listen", required=True, help="HOST:PORT")
    r.add_argument("--target", required=True, help="HOST:PORT")
    i = sub.add_parser("inject")
    i.add_argument("--iface", required=True)
    i.add_argument("--dst-mac", required=True)
    i.add_argument("--src", default="198.18.0.2")
    i.add_argument("--dst", default="198.18.100.1")
    i.add_argument("--count", type=int, default=10)
    a = p.parse_args()
    {"serve": serve, "clients": clients, "longlived": longlived, "udp-stream": udp_stream, "reject": reject, "download": download,
     "http-get": http_get, "inject": inject, "ping": ping, "sctp-clients": sctp_clients,
     "sctp-reject": sctp_reject, "relay": relay}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
