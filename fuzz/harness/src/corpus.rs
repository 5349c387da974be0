//! The seed corpus, generated (`cargo run -p dkp-fuzz-harness --bin
//! gen_corpus`), committed under `fuzz/corpus/<target>/`. Frames are built
//! with etherparse (checksums included) against the pipeline target's
//! topology ([`crate::table`]); addresses are 198.18.0.0/15 and 2001:2::/48.
use crate::encode_frames;
use crate::k8s::mode;
use crate::table::{backend_mac, port_mac, CLIENT_MAC};
use etherparse::{IpNumber, PacketBuilder};
use serde_json::json;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("corpus address")
}

fn step(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: &str,
    dst: &str,
) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    let e = PacketBuilder::ethernet2(smac, dmac);
    match (ip(src), ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => e.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => e.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    }
}

/// A TCP segment (`syn`: SYN, else ACK).
pub fn tcp(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: &str,
    dst: &str,
    sp: u16,
    dp: u16,
    syn: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = step(smac, dmac, src, dst).tcp(sp, dp, 1000, 64240);
    b = if syn { b.syn() } else { b.ack(2000) };
    let mut v = vec![];
    b.write(&mut v, payload).expect("tcp");
    v
}

/// A UDP datagram.
pub fn udp(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: &str,
    dst: &str,
    sp: u16,
    dp: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = vec![];
    step(smac, dmac, src, dst)
        .udp(sp, dp)
        .write(&mut v, payload)
        .expect("udp");
    v
}

/// CRC32c (Castagnoli), bitwise, for the corpus's SCTP packets.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SCTP packet with one chunk of `ty` (INIT needs tag 0).
pub fn sctp(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: &str,
    dst: &str,
    sp: u16,
    dp: u16,
    tag: u32,
    ty: u8,
    value: &[u8],
) -> Vec<u8> {
    let mut s = vec![];
    s.extend_from_slice(&sp.to_be_bytes());
    s.extend_from_slice(&dp.to_be_bytes());
    s.extend_from_slice(&tag.to_be_bytes());
    s.extend_from_slice(&[0; 4]);
    s.extend_from_slice(&[ty, 0]);
    s.extend_from_slice(&((4 + value.len()) as u16).to_be_bytes());
    s.extend_from_slice(value);
    while s.len() % 4 != 0 {
        s.push(0);
    }
    let c = crc32c(&s);
    s[8..12].copy_from_slice(&c.to_le_bytes());
    let mut v = vec![];
    step(smac, dmac, src, dst)
        .write(&mut v, IpNumber(132), &s)
        .expect("sctp");
    v
}

/// An ICMP(v6) error from `src` to `dst` quoting the IP packet of `frame`.
pub fn icmp_error(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: &str,
    dst: &str,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    frame: &[u8],
) -> Vec<u8> {
    let mut v = vec![];
    let b = step(smac, dmac, src, dst);
    if ip(src).is_ipv4() {
        b.icmpv4_raw(ty, code, rest)
            .write(&mut v, &frame[14..])
            .expect("icmp");
    } else {
        b.icmpv6_raw(ty, code, rest)
            .write(&mut v, &frame[14..])
            .expect("icmpv6");
    }
    v
}

/// An echo request.
pub fn echo(src: &str, dst: &str) -> Vec<u8> {
    let mut v = vec![];
    let b = step(CLIENT_MAC, port_mac(0), src, dst);
    if ip(src).is_ipv4() {
        b.icmpv4_echo_request(7, 1)
            .write(&mut v, b"ping")
            .expect("echo");
    } else {
        b.icmpv6_echo_request(7, 1)
            .write(&mut v, b"ping")
            .expect("echo6");
    }
    v
}

/// An ARP request for `tpa` from the client.
pub fn arp_request(tpa: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[198, 18, 0, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa);
    f.resize(60, 0);
    f
}

/// A neighbour solicitation (135) or advertisement (136) from the client.
pub fn ndp(ty: u8, target: &str) -> Vec<u8> {
    let t = match ip(target) {
        IpAddr::V6(t) => t.octets(),
        IpAddr::V4(_) => panic!("v6 target"),
    };
    let (dmac, dst) = if ty == 135 {
        (
            [0x33, 0x33, 0xff, t[13], t[14], t[15]],
            format!("ff02::1:ff{:02x}:{:02x}{:02x}", t[13], t[14], t[15]),
        )
    } else {
        (port_mac(0), "2001:2::1".to_string())
    };
    let mut payload = t.to_vec();
    payload.extend_from_slice(&[if ty == 135 { 1 } else { 2 }, 1]);
    payload.extend_from_slice(&CLIENT_MAC);
    let flags = if ty == 136 { 0x60 } else { 0 };
    let mut v = vec![];
    let dst_ip = match ip(&dst) {
        IpAddr::V6(d) => d.octets(),
        IpAddr::V4(_) => unreachable!(),
    };
    let src_ip = match ip("2001:2::2") {
        IpAddr::V6(s) => s.octets(),
        IpAddr::V4(_) => unreachable!(),
    };
    PacketBuilder::ethernet2(CLIENT_MAC, dmac)
        .ipv6(src_ip, dst_ip, 255)
        .icmpv6_raw(ty, 0, [flags, 0, 0, 0])
        .write(&mut v, &payload)
        .expect("ndp");
    v
}

fn fix_ipv4_checksum(f: &mut [u8], l3: usize) {
    let ihl = usize::from(f[l3] & 0x0f) * 4;
    f[l3 + 10..l3 + 12].fill(0);
    let mut sum = 0u32;
    for w in f[l3..l3 + ihl].chunks(2) {
        sum += u32::from(w[0]) << 8 | u32::from(w[1]);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[l3 + 10..l3 + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Inserts IPv6 extension headers after the fixed header: `(type, bytes)`
/// each, their next-header bytes filled in here.
fn with_ext(mut f: Vec<u8>, headers: &[(u8, &[u8])]) -> Vec<u8> {
    let mut next = f[20];
    let mut chain = vec![];
    for (i, (_, h)) in headers.iter().enumerate().rev() {
        let mut h = h.to_vec();
        h[0] = next;
        next = headers[i].0;
        chain.splice(0..0, h);
    }
    f[20] = next;
    let n = chain.len();
    f.splice(54..54, chain);
    let pl = u16::from_be_bytes([f[18], f[19]]) + n as u16;
    f[18..20].copy_from_slice(&pl.to_be_bytes());
    f
}

/// Adds an 802.1Q tag.
fn tagged(mut f: Vec<u8>, vid: u16) -> Vec<u8> {
    f.splice(12..12, [0x81, 0x00, (vid >> 8) as u8, vid as u8]);
    f
}

const P0: [u8; 6] = [2, 0, 0, 0, 0, 0];
const P1: [u8; 6] = [2, 0, 0, 0, 0, 1];

/// Records of the `pipeline` corpus: `(name, [(ctl, frame)])`. `ctl` bits:
/// worker, port << 2, time step << 4.
pub fn pipeline_seeds() -> Vec<(&'static str, Vec<(u8, Vec<u8>)>)> {
    let c4 = "198.18.0.2";
    let c6 = "2001:2::2";
    let syn4 = tcp(CLIENT_MAC, P0, c4, "198.18.100.1", 40000, 80, true, b"");
    let syn6 = tcp(CLIENT_MAC, P0, c6, "2001:2::100", 40000, 80, true, b"");
    let udp4 = udp(CLIENT_MAC, P0, c4, "198.18.100.1", 40001, 53, b"query");
    let udp6 = udp(CLIENT_MAC, P0, c6, "2001:2::100", 40001, 53, b"query");
    let init4 = sctp(
        CLIENT_MAC,
        P0,
        c4,
        "198.18.100.1",
        40002,
        80,
        0,
        1,
        &[0, 0, 0, 9, 0, 1, 0, 0, 0, 10, 0, 10, 0, 0, 0, 1],
    );
    let init6 = sctp(
        CLIENT_MAC,
        P0,
        c6,
        "2001:2::100",
        40002,
        80,
        0,
        1,
        &[0, 0, 0, 9, 0, 1, 0, 0, 0, 10, 0, 10, 0, 0, 0, 1],
    );
    // Replies from backend 0 (198.18.1.11 / 2001:2:0:1::11); which backend
    // the flow really got depends on Maglev, so both are seeds either way.
    let b0 = backend_mac(0);
    let synack4 = tcp(b0, P1, "198.18.1.11", c4, 8080, 40000, false, b"");
    let reply6 = udp(b0, P1, "2001:2:0:1::11", c6, 5353, 40001, b"answer");
    let fwd4 = udp(CLIENT_MAC, P0, c4, "198.18.1.11", 40001, 5353, b"query");
    let fwd6 = udp(CLIENT_MAC, P0, c6, "2001:2:0:1::11", 40001, 5353, b"query");
    let unreach4 = icmp_error(b0, P1, "198.18.1.11", c4, 3, 3, [0; 4], &fwd4);
    let ptb6 = icmp_error(b0, P1, "2001:2:0:1::11", c6, 2, 0, [0, 0, 5, 0], &fwd6);
    let big_reply = tcp(b0, P1, "198.18.1.11", c4, 8080, 40000, false, &[0x55; 1400]);
    let mut frag4 = udp(CLIENT_MAC, P0, c4, "198.18.100.1", 40003, 53, &[1; 64]);
    frag4[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
    fix_ipv4_checksum(&mut frag4, 14);
    let mut frag4b = frag4.clone();
    frag4b[20..22].copy_from_slice(&0x0010u16.to_be_bytes());
    fix_ipv4_checksum(&mut frag4b, 14);
    let frag6 = with_ext(udp6.clone(), &[(44, &[0, 0, 0, 1, 0, 0, 0, 42])]);
    let ext6 = with_ext(
        syn6.clone(),
        &[
            (0, &[0, 0, 1, 4, 0, 0, 0, 0]),
            (60, &[0, 0, 1, 4, 0, 0, 0, 0]),
            (43, &[0, 0, 0, 0, 0, 0, 0, 0]),
        ],
    );
    let mut opts4 = syn4.clone();
    opts4.splice(34..34, [1u8, 1, 1, 0]);
    opts4[14] = 0x46;
    let tl = u16::from_be_bytes([opts4[16], opts4[17]]) + 4;
    opts4[16..18].copy_from_slice(&tl.to_be_bytes());
    fix_ipv4_checksum(&mut opts4, 14);
    let np4 = tcp(
        CLIENT_MAC,
        P0,
        "198.19.0.9",
        "198.18.0.1",
        40004,
        30080,
        true,
        b"",
    );
    let np6 = udp(
        CLIENT_MAC,
        P0,
        "2001:2:0:ff::9",
        "2001:2::1",
        40004,
        30053,
        b"x",
    );
    let vlan = tagged(
        tcp(
            backend_mac(3),
            port_mac(2),
            "198.18.2.11",
            c4,
            8080,
            40000,
            false,
            b"data",
        ),
        100,
    );
    vec![
        (
            "tcp4_handshake",
            vec![
                (0, syn4.clone()),
                (0x15, synack4.clone()),
                (
                    0x10,
                    tcp(
                        CLIENT_MAC,
                        P0,
                        c4,
                        "198.18.100.1",
                        40000,
                        80,
                        false,
                        b"GET / HTTP/1.1\r\n\r\n",
                    ),
                ),
            ],
        ),
        ("tcp6_syn", vec![(1, syn6.clone())]),
        (
            "udp4_round_trip",
            vec![
                (0, udp4.clone()),
                (0x14, udp(b0, P1, "198.18.1.11", c4, 5353, 40001, b"answer")),
            ],
        ),
        ("udp6_round_trip", vec![(0, udp6.clone()), (0x14, reply6)]),
        ("sctp4_init", vec![(0, init4)]),
        ("sctp6_init", vec![(1, init6)]),
        (
            "sctp4_data_nodeport",
            vec![(
                0,
                sctp(
                    CLIENT_MAC,
                    P0,
                    "198.19.0.9",
                    "198.18.0.1",
                    40005,
                    30090,
                    77,
                    0,
                    b"data",
                ),
            )],
        ),
        (
            "empty_services_reject",
            vec![
                (
                    0,
                    tcp(CLIENT_MAC, P0, c4, "198.18.100.2", 40006, 80, true, b""),
                ),
                (0, udp(CLIENT_MAC, P0, c4, "198.18.100.2", 40006, 53, b"q")),
                (0, udp(CLIENT_MAC, P0, c6, "2001:2::101", 40006, 53, b"q")),
                (
                    0,
                    tcp(CLIENT_MAC, P0, c4, "198.18.100.3", 40006, 80, true, b""),
                ),
            ],
        ),
        (
            "affinity_and_ranges",
            vec![
                (
                    0,
                    tcp(CLIENT_MAC, P0, c4, "198.18.100.4", 40007, 80, true, b""),
                ),
                (
                    0x40,
                    tcp(CLIENT_MAC, P0, c4, "198.18.100.4", 40008, 80, true, b""),
                ),
                (0, udp(CLIENT_MAC, P0, c6, "2001:2::104", 40007, 53, b"q")),
                (
                    0,
                    tcp(CLIENT_MAC, P0, c4, "198.18.100.5", 40007, 443, true, b""),
                ),
                (
                    0,
                    tcp(
                        CLIENT_MAC,
                        P0,
                        "198.19.0.9",
                        "198.18.100.5",
                        40007,
                        443,
                        true,
                        b"",
                    ),
                ),
            ],
        ),
        (
            "masquerade_and_nodeport",
            vec![
                (
                    0,
                    tcp(CLIENT_MAC, P0, c4, "198.18.100.6", 40009, 80, true, b""),
                ),
                (0, np4),
                (0, np6),
                (
                    0x04,
                    tcp(b0, P1, "198.18.1.11", "198.18.1.1", 40009, 30081, true, b""),
                ),
            ],
        ),
        (
            "icmp_errors_translated",
            vec![(0, udp4), (0x14, unreach4), (0, udp6), (0x14, ptb6)],
        ),
        ("too_big_reply", vec![(0, syn4.clone()), (0x14, big_reply)]),
        ("fragments", vec![(0, frag4), (0, frag4b), (0, frag6)]),
        ("ext_headers_and_options", vec![(0, ext6), (0, opts4)]),
        (
            "arp",
            vec![
                (0, arp_request([198, 18, 0, 1])),
                (0, arp_request([198, 18, 100, 1])),
                (0, arp_request([198, 18, 0, 77])),
            ],
        ),
        (
            "ndp",
            vec![
                (0, ndp(135, "2001:2::1")),
                (0, ndp(135, "2001:2::100")),
                (0, ndp(136, "2001:2::2")),
            ],
        ),
        (
            "echo",
            vec![
                (0, echo(c4, "198.18.0.1")),
                (0, echo(c6, "2001:2::1")),
                (0, echo(c4, "198.19.0.9")),
                (0, echo(c4, "198.18.1.200")),
            ],
        ),
        ("vlan_port", vec![(0, syn4), (0x18, vlan)]),
        (
            "expiry",
            vec![
                (0, udp(CLIENT_MAC, P0, c4, "198.18.100.1", 40010, 53, b"q")),
                (
                    0xc0,
                    udp(CLIENT_MAC, P0, c4, "198.18.100.1", 40010, 53, b"q"),
                ),
            ],
        ),
        (
            "unknown_port_and_junk",
            vec![(0x0c, syn6), (0, vec![0; 20]), (0, vec![0xff; 64])],
        ),
    ]
}

const CONFIG_NATIVE: &str = r#"
eal:
  lcores: "0@(0-1),1@(0-1),2@(0-1)"
  no_huge: true
  memory_mb: 256
  vdevs: ["net_af_packet0,iface=veth0,qpairs=2"]
ports:
  - device: net_af_packet0
    addresses: ["198.18.0.1/24", "2001:2::1/64"]
routes:
  - prefix: 198.19.0.0/16
    port: 0
    via: 198.18.0.254
neighbors:
  - address: 198.18.0.254
    mac: "02:00:00:00:00:fe"
    port: 0
timeouts:
  udp: 10s
  sctp_init: 5s
services:
  - name: default/web
    vip: 198.18.100.1
    port: 80
    protocol: TCP
    session_affinity: ClientIP
    affinity_timeout: 30s
    backends: ["198.18.0.11:8080", {address: "198.18.0.12:8080", ready: false, serving: true, terminating: true}]
  - name: default/dns
    vip: 2001:2::100
    port: 53
    protocol: udp
    backends: ["[2001:2::11]:5353"]
  - name: default/sig
    vip: 198.18.100.1
    port: 80
    protocol: sctp
    backends: ["198.18.0.11:9999"]
"#;

const CONFIG_KPC: &str = r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: dpdk
clientConnection:
  kubeconfig: /var/lib/dpdk-kube-proxy/kubeconfig.conf
clusterCIDR: 198.18.128.0/17,2001:2:0:8000::/56
detectLocalMode: ClusterCIDR
masqueradeAll: false
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["primary"]
syncPeriod: 30s
minSyncPeriod: 1s
conntrack:
  tcpEstablishedTimeout: 24h0m0s
  tcpCloseWaitTimeout: 1h0m0s
  udpTimeout: 30s
  udpStreamTimeout: 2m0s
dpdk:
  eal:
    lcores: "0-2"
    pci: ["0000:3b:00.0"]
    memory_mb: 896
  ports:
    - device: "0000:3b:00.0"
      addresses: ["198.18.0.10/24", "2001:2::10/64"]
      mtu: 1500
  routes:
    - {prefix: 198.19.0.0/16, port: 0, via: 198.18.0.1}
    - {prefix: "2001:2:0:ff::/64", port: 0, via: "2001:2::1"}
  workers:
    sessions: 262144
"#;

fn service(name: &str, ty: &str, ips: &[&str], extra: serde_json::Value) -> serde_json::Value {
    let mut s = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": name},
        "spec": {
            "type": ty,
            "clusterIP": ips[0],
            "clusterIPs": ips,
            "ipFamilies": ips.iter().map(|i| if i.contains(':') { "IPv6" } else { "IPv4" }).collect::<Vec<_>>(),
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
                {"name": "sig", "port": 80, "protocol": "SCTP", "targetPort": 9999}
            ]
        }
    });
    if let (Some(spec), serde_json::Value::Object(extra)) = (s["spec"].as_object_mut(), extra) {
        spec.extend(extra);
    }
    s
}

fn slice(name: &str, svc: &str, family: &str, addrs: &[&str]) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "default", "name": name,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family,
        "ports": [
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "dns", "port": 5353, "protocol": "UDP"},
            {"name": "sig", "port": 9999, "protocol": "SCTP"}
        ],
        "endpoints": addrs.iter().enumerate().map(|(i, a)| json!({
            "addresses": [a],
            "nodeName": if i == 0 { "node-a" } else { "node-b" },
            "zone": "zone-a",
            "conditions": {"ready": i != 2, "serving": true, "terminating": i == 2},
            "hints": {"forZones": [{"name": "zone-a"}]}
        })).collect::<Vec<_>>()
    })
}

/// Inputs of the `control_translate` corpus: `(name, bytes)`.
pub fn control_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let with_mode = |m: u8, b: &[u8]| {
        let mut v = vec![m];
        v.extend_from_slice(b);
        v
    };
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "zone-a"}},
        "spec": {"podCIDRs": ["198.18.128.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.1"}]}
    });
    let web = service(
        "web",
        "ClusterIP",
        &["198.18.100.1", "2001:2::100"],
        json!({"ipFamilyPolicy": "PreferDualStack"}),
    );
    let np = service(
        "np",
        "NodePort",
        &["198.18.100.7"],
        json!({"externalTrafficPolicy": "Local", "healthCheckNodePort": 30300, "sessionAffinity": "ClientIP",
               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}),
    );
    let lb = service(
        "lb",
        "LoadBalancer",
        &["198.18.100.8"],
        json!({"externalIPs": ["198.18.200.1"], "loadBalancerSourceRanges": ["198.18.0.0/24"],
               "internalTrafficPolicy": "Local"}),
    );
    let headless = service("headless", "ClusterIP", &["None"], json!({}));
    let s4 = slice(
        "web-v4",
        "web",
        "IPv4",
        &["198.18.1.11", "198.18.1.12", "198.18.1.13"],
    );
    let s6 = slice(
        "web-v6",
        "web",
        "IPv6",
        &["2001:2:0:1::11", "2001:2:0:1::12"],
    );
    let snp = slice("np-1", "np", "IPv4", &["198.18.1.21", "198.18.1.22"]);
    let cluster = json!({
        "nodeName": "node-a", "zone": "zone-a", "nodeAddresses": ["198.18.0.1", "2001:2::1"],
        "node": node,
        "services": [web, np, lb, headless],
        "slices": [s4, s6, snp],
        "events": [
            {"op": "apply", "kind": "EndpointSlice", "object": slice("web-v4", "web", "IPv4", &["198.18.1.11"])},
            {"op": "delete", "kind": "Service", "object": service("lb", "LoadBalancer", &["198.18.100.8"], json!({}))},
            {"op": "apply", "kind": "Node", "object": node},
        ]
    });
    vec![
        (
            "config_native",
            with_mode(mode::CONFIG, CONFIG_NATIVE.as_bytes()),
        ),
        (
            "config_kube_proxy",
            with_mode(mode::CONFIG, CONFIG_KPC.as_bytes()),
        ),
        (
            "config_kube_proxy_forced",
            with_mode(mode::KUBE_PROXY, CONFIG_KPC.as_bytes()),
        ),
        ("config_empty", with_mode(mode::CONFIG, b"{}")),
        (
            "cluster",
            with_mode(mode::CLUSTER, cluster.to_string().as_bytes()),
        ),
        (
            "object_service",
            with_mode(mode::OBJECT, web.to_string().as_bytes()),
        ),
        (
            "object_nodeport",
            with_mode(mode::OBJECT, np.to_string().as_bytes()),
        ),
        (
            "object_slice",
            with_mode(mode::OBJECT, s4.to_string().as_bytes()),
        ),
        (
            "object_node",
            with_mode(mode::OBJECT, node.to_string().as_bytes()),
        ),
    ]
}

/// Inputs of the `packet_views` corpus: every frame of the pipeline seeds.
pub fn packet_seeds() -> Vec<(String, Vec<u8>)> {
    let mut v = vec![];
    for (name, recs) in pipeline_seeds() {
        for (i, (_, f)) in recs.into_iter().enumerate() {
            // First byte 0: the extra offset is 0, the frame as it is.
            let mut b = vec![0u8];
            b.extend_from_slice(&f);
            v.push((format!("{name}_{i}"), b));
        }
    }
    v
}

/// Every corpus file: `(target, name, bytes)`.
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut v = vec![];
    for (name, recs) in pipeline_seeds() {
        v.push(("pipeline", name.to_string(), encode_frames(&recs)));
    }
    for (name, b) in packet_seeds() {
        v.push(("packet_views", name, b));
    }
    for (name, b) in control_seeds() {
        v.push(("control_translate", name.to_string(), b));
    }
    v
}
