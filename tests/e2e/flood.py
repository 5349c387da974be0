#!/usr/bin/env python3
"""Abusive traffic for the end-to-end tests, sent raw (AF_PACKET) out of an
interface the test created: SYN floods, ARP/ND floods from random senders,
and a catalogue of malformed frames. Only 198.18.0.0/15 and 2001:2::/48
addresses. Prints a JSON summary (frames sent per kind) on stdout.

  flood.py syn       --iface I --dst-mac M --src 198.18.0.2 --dst 198.18.100.1 --count N
  flood.py arp       --iface I --target 198.18.0.1 --count N
  flood.py nd        --iface I --dst-mac M --target 2001:2::1 --count N
  flood.py malformed --iface I --dst-mac M --src 198.18.0.2 --dst 198.18.100.1 \
                     --src6 2001:2::2 --dst6 2001:2:0:100::1 --count N
"""
import argparse
import ipaddress
import json
import random
import socket
import struct
import sys
import time


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def mac(s):
    return bytes.fromhex(s.replace(":", ""))


def ip4(src, dst, proto, payload, ihl=5, total=None, flags_frag=0x4000, ttl=64,
        version=4, options=b"", bad_csum=False):
    hl = ihl * 4
    tl = total if total is not None else 20 + len(options) + len(payload)
    h = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, tl & 0xFFFF, random.getrandbits(16),
                    flags_frag, ttl, proto, 0, src, dst) + options
    c = csum(h[:max(20, min(hl, len(h)))])
    if bad_csum:
        c ^= 0x5555
    h = h[:10] + struct.pack("!H", c) + h[12:]
    return h + payload


def l4_csum4(src, dst, proto, seg):
    return csum(src + dst + struct.pack("!BBH", 0, proto, len(seg)) + seg)


def l4_csum6(src, dst, proto, seg):
    return csum(src + dst + struct.pack("!IxxxB", len(seg), proto) + seg)


def tcp(sport, dport, flags, seq=1, ack=0, doff=5, src=None, dst=None, v6=False, payload=b""):
    h = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, 65535, 0, 0)
    seg = h + payload
    if src is not None:
        c = (l4_csum6 if v6 else l4_csum4)(src, dst, 6, seg)
        seg = seg[:16] + struct.pack("!H", c) + seg[18:]
    return seg


def udp(sport, dport, payload, length=None, src=None, dst=None, v6=False):
    ln = length if length is not None else 8 + len(payload)
    seg = struct.pack("!HHHH", sport, dport, ln & 0xFFFF, 0) + payload
    if src is not None:
        c = (l4_csum6 if v6 else l4_csum4)(src, dst, 17, seg) or 0xFFFF
        seg = seg[:6] + struct.pack("!H", c) + seg[8:]
    return seg


def ip6(src, dst, nh, payload, plen=None, hlim=64):
    ln = plen if plen is not None else len(payload)
    return struct.pack("!IHBB16s16s", 6 << 28, ln & 0xFFFF, nh, hlim, src, dst) + payload


def ext(nh):
    """An 8-byte IPv6 extension header (hop-by-hop/dest opts) padded with PadN."""
    return bytes([nh, 0, 1, 4]) + b"\0" * 4


def chain6(kinds, final_nh, payload):
    """IPv6 extension headers of the given types in order, then payload:
    returns (first next-header value, bytes)."""
    out, nh = payload, final_nh
    for k in reversed(kinds):
        out, nh = ext(nh) + out, k
    return nh, out


class Tx:
    def __init__(self, iface):
        self.s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self.s.bind((iface, 0))
        self.smac = self.s.getsockname()[4][:6]
        self.sent = {}

    def send(self, kind, frame):
        try:
            self.s.send(frame)
        except OSError:
            # A full socket buffer: wait a little and try once more.
            time.sleep(0.001)
            try:
                self.s.send(frame)
            except OSError:
                return
        self.sent[kind] = self.sent.get(kind, 0) + 1


def syn(a):
    t = Tx(a.iface)
    eth = mac(a.dst_mac) + t.smac + b"\x08\x00"
    src, dst = socket.inet_aton(a.src), socket.inet_aton(a.dst)
    n = 0
    start = time.time()
    # Distinct source ports (and, past 60k, distinct sources in the
    # client's /24 that nobody answers for): every SYN is a new flow.
    for i in range(a.count):
        port = 1024 + i % 64000
        s = src if i < 64000 else socket.inet_aton(f"198.18.0.{100 + (i // 64000) % 150}")
        t.send("syn", eth + ip4(s, dst, 6, tcp(port, a.dport, 0x02, seq=i, src=s, dst=dst)))
        n += 1
    el = time.time() - start
    print(json.dumps({"sent": t.sent, "seconds": round(el, 3), "pps": round(n / max(el, 1e-9))}), flush=True)


def arp(a):
    t = Tx(a.iface)
    tpa = socket.inet_aton(a.target)
    for i in range(a.count):
        # Random senders anywhere in 198.18.0.0/15, random unicast MACs.
        spa = struct.pack("!I", 0xC6120000 | random.getrandbits(17))
        sha = bytes([0x02]) + random.randbytes(5)
        body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, sha, spa, b"\0" * 6, tpa)
        t.send("arp_request", b"\xff" * 6 + sha + b"\x08\x06" + body)
        if i % 4 == 0:
            # Unsolicited replies too.
            body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, sha, spa, t.smac, tpa)
            t.send("arp_reply", b"\xff" * 6 + sha + b"\x08\x06" + body)
    print(json.dumps({"sent": t.sent}), flush=True)


def nd(a):
    t = Tx(a.iface)
    target = socket.inet_pton(socket.AF_INET6, a.target)
    net = int(ipaddress.IPv6Address("2001:2::"))
    for _ in range(a.count):
        src = (net | random.getrandbits(64)).to_bytes(16, "big")
        sha = bytes([0x02]) + random.randbytes(5)
        icmp = struct.pack("!BBHI16s", 135, 0, 0, 0, target) + bytes([1, 1]) + sha
        c = l4_csum6(src, target, 58, icmp)
        icmp = icmp[:2] + struct.pack("!H", c) + icmp[4:]
        t.send("nd_solicit", mac(a.dst_mac) + sha + b"\x86\xdd" + ip6(src, target, 58, icmp, hlim=255))
    print(json.dumps({"sent": t.sent}), flush=True)


def malformed_frames(smac, dmac, src, dst, src6, dst6):
    """(kind, frame) pairs: every one is invalid or abusive in some way."""
    e4 = dmac + smac + b"\x08\x00"
    e6 = dmac + smac + b"\x86\xdd"
    ok_syn = tcp(40001, 80, 0x02, src=src, dst=dst)
    f = []
    # Link layer.
    f.append(("runt_frame", dmac + smac[:4]))
    f.append(("eth_header_only", e4))
    f.append(("unknown_ethertype", dmac + smac + b"\x88\xb5" + b"\0" * 46))
    f.append(("vlan_tag_on_untagged_port", dmac + smac + b"\x81\x00\x00\x64\x08\x00" + ip4(src, dst, 6, ok_syn)))
    f.append(("double_vlan", dmac + smac + b"\x88\xa8\x00\x64\x81\x00\x00\x65\x08\x00" + ip4(src, dst, 6, ok_syn)))
    # IPv4 header.
    f.append(("ipv4_truncated", e4 + bytes([0x45, 0, 0, 40, 0, 1, 0x40, 0])))
    f.append(("ipv4_version_6", e4 + ip4(src, dst, 6, ok_syn, version=6)))
    f.append(("ipv4_ihl_3", e4 + ip4(src, dst, 6, ok_syn, ihl=3)))
    f.append(("ipv4_ihl_past_end", e4 + ip4(src, dst, 6, b"", ihl=15, total=20)))
    f.append(("ipv4_total_too_big", e4 + ip4(src, dst, 6, ok_syn, total=1400)))
    f.append(("ipv4_total_below_header", e4 + ip4(src, dst, 6, ok_syn, total=12)))
    f.append(("ipv4_bad_checksum", e4 + ip4(src, dst, 6, ok_syn, bad_csum=True)))
    f.append(("ipv4_ttl_0", e4 + ip4(src, dst, 6, ok_syn, ttl=0)))
    f.append(("ipv4_options_bad_length", e4 + ip4(src, dst, 6, ok_syn, ihl=6, options=b"\x07\x09\x04\x00")))
    f.append(("ipv4_to_broadcast", e4 + ip4(src, socket.inet_aton("255.255.255.255"), 17, udp(40002, 53, b"x"))))
    f.append(("ipv4_multicast_dst", e4 + ip4(src, socket.inet_aton("224.0.0.5"), 17, udp(40002, 53, b"x"))))
    f.append(("ipv4_src_is_vip", e4 + ip4(dst, dst, 6, tcp(40003, 80, 0x02, src=dst, dst=dst))))
    # Fragments (first with MF, a non-first, a zero-length tail, overlapping).
    f.append(("ipv4_first_fragment", e4 + ip4(src, dst, 17, udp(40004, 53, b"a" * 40, length=200), flags_frag=0x2000)))
    f.append(("ipv4_non_first_fragment", e4 + ip4(src, dst, 17, b"b" * 40, flags_frag=0x0005)))
    f.append(("ipv4_tiny_fragment", e4 + ip4(src, dst, 6, b"\x9c\x41", flags_frag=0x2000)))
    f.append(("ipv4_last_fragment_offset_max", e4 + ip4(src, dst, 17, b"c" * 16, flags_frag=0x1FFF)))
    # TCP.
    f.append(("tcp_truncated", e4 + ip4(src, dst, 6, ok_syn[:10])))
    f.append(("tcp_doff_2", e4 + ip4(src, dst, 6, tcp(40005, 80, 0x02, doff=2, src=src, dst=dst))))
    f.append(("tcp_doff_past_end", e4 + ip4(src, dst, 6, tcp(40006, 80, 0x02, doff=15, src=src, dst=dst))))
    for name, flags in [("none", 0), ("syn_fin", 0x03), ("syn_rst", 0x06), ("fin_only", 0x01),
                        ("xmas", 0x3F), ("urg_psh_fin", 0x29), ("rst_orphan", 0x04), ("ack_orphan", 0x10),
                        ("syn_ack_orphan", 0x12)]:
        f.append((f"tcp_flags_{name}", e4 + ip4(src, dst, 6, tcp(41000 + flags, 80, flags, src=src, dst=dst))))
    f.append(("tcp_to_node_closed_port", e4 + ip4(src, socket.inet_aton("198.18.0.1"), 6,
                                                  tcp(40007, 9, 0x02, src=src, dst=socket.inet_aton("198.18.0.1")))))
    # UDP.
    f.append(("udp_truncated", e4 + ip4(src, dst, 17, b"\x9c\x42\x00")))
    f.append(("udp_length_4", e4 + ip4(src, dst, 17, udp(40008, 53, b"xxxx", length=4))))
    f.append(("udp_length_past_end", e4 + ip4(src, dst, 17, udp(40009, 53, b"xxxx", length=400))))
    f.append(("udp_length_0", e4 + ip4(src, dst, 17, udp(40010, 53, b"xxxx", length=0))))
    # ICMP errors about flows nobody has, or with broken quotes.
    inner = ip4(dst, src, 6, tcp(80, 40011, 0x12, src=dst, dst=src))
    for name, quote in [("icmp_unreach_no_session", inner), ("icmp_unreach_truncated_quote", inner[:12]),
                        ("icmp_unreach_quote_bad_ihl", bytes([0x4F]) + inner[1:28]),
                        ("icmp_unreach_quote_of_icmp", ip4(dst, src, 1, b"\x03\x03\0\0\0\0\0\0" + inner))]:
        body = struct.pack("!BBHI", 3, 3, 0, 0) + quote
        body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
        f.append((name, e4 + ip4(src, dst, 1, body)))
    f.append(("icmp_truncated", e4 + ip4(src, dst, 1, b"\x08")))
    f.append(("icmp_bad_checksum_echo", e4 + ip4(src, dst, 1, b"\x08\x00\x12\x34\0\1\0\1payload")))
    # IPv6.
    tcp6 = tcp(40012, 80, 0x02, src=src6, dst=dst6, v6=True)
    f.append(("ipv6_truncated", e6 + ip6(src6, dst6, 6, tcp6)[:30]))
    f.append(("ipv6_payload_len_too_big", e6 + ip6(src6, dst6, 6, tcp6, plen=1200)))
    f.append(("ipv6_hop_limit_0", e6 + ip6(src6, dst6, 6, tcp6, hlim=0)))
    nh, body = chain6([0] + [60] * 12, 6, tcp6)
    f.append(("ipv6_long_ext_chain", e6 + ip6(src6, dst6, nh, body)))
    nh, body = chain6([0, 60], 6, tcp6)
    f.append(("ipv6_hop_by_hop_and_dest_opts_syn", e6 + ip6(src6, dst6, nh, body)))
    f.append(("ipv6_ext_len_past_end", e6 + ip6(src6, dst6, 0, bytes([6, 200]) + b"\0" * 6 + tcp6)))
    f.append(("ipv6_ext_truncated", e6 + ip6(src6, dst6, 60, b"\x06")))
    f.append(("ipv6_routing_header", e6 + ip6(src6, dst6, 43, bytes([6, 0, 0, 0, 0, 0, 0, 0]) + tcp6)))
    f.append(("ipv6_first_fragment", e6 + ip6(src6, dst6, 44, struct.pack("!BBHI", 17, 0, 1, 7) + udp(40013, 53, b"d" * 32, length=300))))
    f.append(("ipv6_non_first_fragment", e6 + ip6(src6, dst6, 44, struct.pack("!BBHI", 17, 0, 8 << 3, 8) + b"e" * 32)))
    f.append(("ipv6_atomic_fragment_chain", e6 + ip6(src6, dst6, 44, struct.pack("!BBHI", 44, 0, 0, 9) + struct.pack("!BBHI", 6, 0, 0, 9) + tcp6)))
    f.append(("ipv6_no_next_header", e6 + ip6(src6, dst6, 59, b"\0" * 16)))
    f.append(("ipv6_multicast_dst", e6 + ip6(src6, socket.inet_pton(socket.AF_INET6, "ff02::1"), 17, udp(40014, 53, b"x"))))
    nd_bad = struct.pack("!BBHI16s", 135, 0, 0, 0, dst6) + bytes([1, 0]) + b"\0" * 6  # option length 0
    f.append(("nd_option_len_0", e6 + ip6(src6, dst6, 58, nd_bad, hlim=255)))
    f.append(("nd_truncated", e6 + ip6(src6, dst6, 58, b"\x87\x00\x00", hlim=255)))
    f.append(("nd_hop_limit_64", e6 + ip6(src6, dst6, 58, struct.pack("!BBHI16s", 135, 0, 0, 0, dst6), hlim=64)))
    # ARP.
    f.append(("arp_truncated", b"\xff" * 6 + smac + b"\x08\x06" + b"\x00\x01\x08\x00"))
    f.append(("arp_bad_hw_type", b"\xff" * 6 + smac + b"\x08\x06" + struct.pack("!HHBBH6s4s6s4s", 6, 0x0800, 6, 4, 1, smac, src, b"\0" * 6, dst)))
    f.append(("arp_bad_op", b"\xff" * 6 + smac + b"\x08\x06" + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 9, smac, src, b"\0" * 6, dst)))
    f.append(("arp_multicast_sender", b"\xff" * 6 + smac + b"\x08\x06" + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, b"\x01" * 6, src, b"\0" * 6, dst)))
    # Random bytes after a valid-looking Ethernet header, both families.
    rnd = random.Random(7)
    for i in range(8):
        f.append((f"random_ipv4_{i}", e4 + bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 120)))))
        f.append((f"random_ipv6_{i}", e6 + bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 120)))))
    return f


def malformed(a):
    t = Tx(a.iface)
    a4 = lambda s: socket.inet_aton(s)
    a6 = lambda s: socket.inet_pton(socket.AF_INET6, s)
    frames = malformed_frames(t.smac, mac(a.dst_mac), a4(a.src), a4(a.dst), a6(a.src6), a6(a.dst6))
    for _ in range(a.count):
        for kind, frame in frames:
            t.send(kind, frame)
    print(json.dumps({"sent": t.sent, "kinds": len(frames)}), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for cmd in ("syn", "arp", "nd", "malformed"):
        c = sub.add_parser(cmd)
        c.add_argument("--iface", required=True)
        c.add_argument("--count", type=int, default=1000)
        if cmd != "arp":
            c.add_argument("--dst-mac", required=True)
        if cmd in ("syn", "malformed"):
            c.add_argument("--src", default="198.18.0.2")
            c.add_argument("--dst", default="198.18.100.1")
        if cmd == "syn":
            c.add_argument("--dport", type=int, default=80)
        if cmd == "malformed":
            c.add_argument("--src6", default="2001:2::2")
            c.add_argument("--dst6", default="2001:2:0:100::1")
        if cmd in ("arp", "nd"):
            c.add_argument("--target", required=True)
    a = p.parse_args()
    {"syn": syn, "arp": arp, "nd": nd, "malformed": malformed}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
