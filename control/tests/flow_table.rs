//! Flow-table tests in the style of upstream kube-proxy's proxier tests
//! (`pkg/proxy/nftables/proxier_test.go`, `runPacketFlowTests`): Kubernetes
//! Service and EndpointSlice objects are translated by the real
//! [`control::k8s::service_specs`] into a table for a node like a real one
//! (an uplink, a pod link, routes to other nodes' pod CIDRs, cluster CIDRs),
//! and named synthetic flows (source, destination, protocol) are pushed
//! through the real [`Pipeline::process`]. Each flow asserts where it lands:
//! which backend set (every landing in the set; the whole set reached, or one
//! backend only under ClientIP affinity), masqueraded or not, dropped (and
//! why), rejected (TCP RST / ICMP(v6) port unreachable), or not translated.
//! Frames are built and the results parsed with `etherparse`, an independent
//! implementation.
//!
//! Node `node-a`, zone `zone-a`:
//! - port 0, uplink: 198.18.0.1/24, 2001:2::1/64 (the NodePort addresses).
//!   Other nodes: node-b 198.18.0.2 / 2001:2::2 (pods 198.18.65.0/24,
//!   2001:2:0:101::/64), node-c 198.18.0.3 / 2001:2::3 (pods 198.18.66.0/24,
//!   2001:2:0:102::/64). The router 198.18.0.254 / 2001:2::fe leads to
//!   off-cluster clients (198.19.0.0/16, 2001:2:0:ff::/64) and to the Service
//!   ranges (198.18.128.0/17, 2001:2:0:200::/55).
//! - port 1, this node's pods: 198.18.64.1/24, 2001:2:0:100::1/64.
//! - cluster CIDRs 198.18.64.0/18 and 2001:2:0:100::/56.
use control::k8s::{service_specs, NodeInfo, LABEL_SERVICE_NAME, LABEL_SERVICE_PROXY_NAME};
use dataplane::addr::{Addr, Proto};
use dataplane::packet::MacAddr;
use dataplane::pipeline::{PacketBuf, Pipeline, PipelineConfig, PortInfo, VecBuf, Verdict};
use dataplane::stats::{DropReason, WorkerStats};
use dataplane::table::{
    Interface, MasqueradePolicy, Route, ServiceTable, StaticNeighbor, TableSpec,
};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec as KSpec,
    ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForNode, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;

// ---------------------------------------------------------------------------
// The node

const NODE: &str = "node-a";
const UPLINK_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0];
const PODS_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xaa];
const POD_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0xaa];
const NOW: u64 = 1_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("{s:?} is not an IP"))
}
fn addr(s: &str) -> Addr {
    Addr::from(ip(s))
}
fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| panic!("{s:?} is not IP:PORT"))
}
fn prefix(s: &str) -> (Addr, u8) {
    let (a, l) = s.split_once('/').unwrap();
    (addr(a), l.parse().unwrap())
}

fn node() -> NodeInfo {
    NodeInfo {
        name: NODE.into(),
        zone: Some("zone-a".into()),
        algorithm: Default::default(),
        node_addresses: vec![ip("198.18.0.1"), ip("2001:2::1")],
    }
}

/// This node's pod links (port 1): a backend here is on the client's link
/// when the client is a local pod.
const POD_LINKS: [&str; 2] = ["198.18.64.0/24", "2001:2:0:100::/64"];

fn on_pod_link(a: IpAddr) -> bool {
    POD_LINKS.iter().any(|p| {
        let (p, l) = prefix(p);
        Addr::from(a).in_prefix(&p, l)
    })
}

fn cluster_cidrs() -> MasqueradePolicy {
    MasqueradePolicy {
        all: false,
        cluster_cidrs: vec![prefix("198.18.64.0/18"), prefix("2001:2:0:100::/56")],
    }
}

/// A node table (interfaces, routes, neighbours, masquerade policy) with the
/// Services translated from `objects`.
fn table(objects: &[(Service, Vec<EndpointSlice>)], masquerade: MasqueradePolicy) -> ServiceTable {
    table_v(objects, masquerade, 1)
}

fn table_v(
    objects: &[(Service, Vec<EndpointSlice>)],
    masquerade: MasqueradePolicy,
    version: u64,
) -> ServiceTable {
    let mut services = Vec::new();
    for (s, slices) in objects {
        services.extend(service_specs(s, slices, &node()).expect("translates"));
    }
    let iface = |port, a: &str| {
        let (addr, prefix_len) = prefix(a);
        Interface {
            port,
            addr,
            prefix_len,
        }
    };
    let route = |p: &str, via: &str| {
        let (prefix, len) = prefix(p);
        Route {
            prefix,
            len,
            port: 0,
            via: Some(addr(via)),
        }
    };
    let neighbor = |a: &str, last: u8| StaticNeighbor {
        addr: addr(a),
        mac: MacAddr([2, 0, 0, 0, 0, last]),
        port: 0,
    };
    let spec = TableSpec {
        services,
        interfaces: vec![
            iface(0, "198.18.0.1/24"),
            iface(0, "2001:2::1/64"),
            iface(1, "198.18.64.1/24"),
            iface(1, "2001:2:0:100::1/64"),
        ],
        routes: vec![
            route("198.18.65.0/24", "198.18.0.2"),
            route("198.18.66.0/24", "198.18.0.3"),
            route("198.19.0.0/16", "198.18.0.254"),
            route("198.18.128.0/17", "198.18.0.254"),
            route("2001:2:0:101::/64", "2001:2::2"),
            route("2001:2:0:102::/64", "2001:2::3"),
            route("2001:2:0:ff::/64", "2001:2::fe"),
            route("2001:2:0:200::/55", "2001:2::fe"),
        ],
        neighbors: vec![
            neighbor("198.18.0.2", 2),
            neighbor("198.18.0.3", 3),
            neighbor("198.18.0.254", 0xfe),
            neighbor("2001:2::2", 2),
            neighbor("2001:2::3", 3),
            neighbor("2001:2::fe", 0xfe),
        ],
        masquerade,
        retired: vec![],
    };
    ServiceTable::new(spec, version)
}

fn pipeline(t: &ServiceTable) -> Pipeline {
    let port = |mac| PortInfo {
        mac: MacAddr(mac),
        vlan: None,
        mtu: 1500,
    };
    let mut p = Pipeline::new(
        0,
        1,
        vec![port(UPLINK_MAC), port(PODS_MAC)],
        PipelineConfig {
            sessions: 4096,
            affinity_slots: 4096,
            ..Default::default()
        },
    );
    p.on_table(t);
    p
}

// ---------------------------------------------------------------------------
// Kubernetes objects

fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("default".into()),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        }),
        ..Default::default()
    }
}

/// A Service port: `name`, protocol, port, target port (a number or a name).
fn port(name: Option<&str>, proto: &str, port: i32, target: &str) -> ServicePort {
    ServicePort {
        name: name.map(Into::into),
        protocol: Some(proto.into()),
        port,
        target_port: Some(match target.parse() {
            Ok(n) => IntOrString::Int(n),
            Err(_) => IntOrString::String(target.into()),
        }),
        ..Default::default()
    }
}

/// A Service of `type_` with `cluster_ips` (families follow the addresses).
fn service(name: &str, type_: &str, cluster_ips: &[&str], ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: meta(name, &[]),
        spec: Some(KSpec {
            type_: Some(type_.into()),
            cluster_ip: cluster_ips.first().map(|s| s.to_string()),
            cluster_ips: Some(cluster_ips.iter().map(|s| s.to_string()).collect()),
            ip_families: Some(
                cluster_ips
                    .iter()
                    .map(|s| if ip(s).is_ipv4() { "IPv4" } else { "IPv6" }.to_string())
                    .collect(),
            ),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    }
}

fn spec(s: &mut Service) -> &mut KSpec {
    s.spec.as_mut().unwrap()
}

fn with_node_port(mut p: ServicePort, np: i32) -> ServicePort {
    p.node_port = Some(np);
    p
}

fn ingress(s: &mut Service, ips: &[(&str, Option<&str>)]) {
    s.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(
                ips.iter()
                    .map(|(ip, mode)| LoadBalancerIngress {
                        ip: Some(ip.to_string()),
                        ip_mode: mode.map(Into::into),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }),
        ..Default::default()
    });
}

#[derive(Clone, Copy)]
enum Cond {
    Ready,
    NotReady,
    ServingTerminating,
    Terminating,
}

fn ep(address: &str, node: &str, c: Cond) -> Endpoint {
    let (ready, serving, terminating) = match c {
        Cond::Ready => (true, true, false),
        Cond::NotReady => (false, false, false),
        Cond::ServingTerminating => (false, true, true),
        Cond::Terminating => (false, false, true),
    };
    Endpoint {
        addresses: vec![address.into()],
        node_name: Some(node.into()),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        ..Default::default()
    }
}

fn ready(address: &str, node: &str) -> Endpoint {
    ep(address, node, Cond::Ready)
}

fn zone_hint(mut e: Endpoint, zone: &str) -> Endpoint {
    let h = e.hints.get_or_insert_with(EndpointHints::default);
    h.for_zones = Some(vec![ForZone { name: zone.into() }]);
    e
}

fn node_hint(mut e: Endpoint, node: &str) -> Endpoint {
    let h = e.hints.get_or_insert_with(EndpointHints::default);
    h.for_nodes = Some(vec![ForNode { name: node.into() }]);
    e
}

/// An EndpointSlice of Service `svc`: `ports` are (name, protocol, port).
fn slice(
    svc: &str,
    name: &str,
    ports: &[(Option<&str>, &str, i32)],
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let v6 = endpoints
        .first()
        .is_some_and(|e| ip(&e.addresses[0]).is_ipv6())
        || name.ends_with("-v6");
    EndpointSlice {
        metadata: meta(name, &[(LABEL_SERVICE_NAME, svc)]),
        address_type: if v6 { "IPv6" } else { "IPv4" }.into(),
        endpoints: Some(endpoints),
        ports: Some(
            ports
                .iter()
                .map(|(n, proto, p)| EndpointPort {
                    name: n.map(Into::into),
                    protocol: Some(proto.to_string()),
                    port: Some(*p),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

// ---------------------------------------------------------------------------
// Flows

/// How a landing's source address must look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Masq {
    /// The client's address is preserved.
    No,
    /// SNAT to the node address of the egress port.
    Yes,
    /// Masqueraded exactly when the backend is on the client's link (the
    /// reply would bypass the dataplane; hairpin is the extreme case).
    IfSameLink,
}

/// Which part of the backend set the flow's source ports must reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    /// Every backend of the set.
    All,
    /// One backend for every source port (ClientIP affinity).
    One,
}

/// Where a flow lands.
#[derive(Clone, Debug)]
enum Landing {
    /// DNAT to one of these `IP:PORT` backends.
    Backends {
        set: &'static [&'static str],
        masq: Masq,
        reach: Reach,
    },
    /// Dropped, for this reason.
    Drop(DropReason),
    /// Rejected: TCP RST / ICMP port unreachable / ICMPv6 port unreachable.
    Reject,
    /// Not a Service frontend: forwarded untranslated.
    Routed,
    /// To a node address that is not a frontend: the host's, not translated.
    Host,
}

use Landing::*;

/// A named synthetic flow: `src` (IP) to `dst` (IP:PORT) over `proto`, from
/// many source ports.
struct Flow {
    name: &'static str,
    src: &'static str,
    dst: &'static str,
    proto: Proto,
    expect: Landing,
}

const TCP: Proto = Proto::Tcp;
const UDP: Proto = Proto::Udp;
/// Source ports each flow is sent from.
const SPORTS: std::ops::Range<u16> = 40_000..40_064;

fn all(set: &'static [&'static str], masq: Masq) -> Landing {
    Backends {
        set,
        masq,
        reach: Reach::All,
    }
}

/// The first packet of a connection from `src:sport` to `dst`, and the port
/// it arrives on (local pods on port 1, everything else on the uplink).
fn frame(src: IpAddr, sport: u16, dst: SocketAddr, proto: Proto) -> (u16, Vec<u8>) {
    let (in_port, smac, dmac) = if on_pod_link(src) {
        (1, POD_MAC, PODS_MAC)
    } else {
        (0, PEER_MAC, UPLINK_MAC)
    };
    let e = PacketBuilder::ethernet2(smac, dmac);
    let ipb = match (src, dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => e.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => e.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let mut v = Vec::new();
    match proto {
        Proto::Tcp => ipb
            .tcp(sport, dst.port(), 1000, 64240)
            .syn()
            .write(&mut v, &[])
            .unwrap(),
        _ => ipb.udp(sport, dst.port()).write(&mut v, b"hello").unwrap(),
    }
    (in_port, v)
}

/// The L3/L4 tuple of a frame and, for ICMP, (type, code); checksums checked.
#[derive(Debug)]
struct Out {
    src: SocketAddr,
    dst: SocketAddr,
    tcp_flags: (bool, bool),
    icmp: Option<(u8, u8)>,
}

fn parse(frame: &[u8]) -> Out {
    let p = SlicedPacket::from_ethernet(frame).expect("etherparse parses the output");
    let (src, dst, s6, d6) = match p.net.as_ref().expect("IP") {
        NetSlice::Ipv4(i) => {
            let h = i.header();
            assert_eq!(
                h.header_checksum(),
                h.to_header().calc_header_checksum(),
                "IPv4 header checksum"
            );
            (
                IpAddr::from(h.source()),
                IpAddr::from(h.destination()),
                None,
                None,
            )
        }
        NetSlice::Ipv6(i) => {
            let h = i.header();
            (
                IpAddr::from(h.source_addr()),
                IpAddr::from(h.destination_addr()),
                Some(h.source()),
                Some(h.destination()),
            )
        }
    };
    let (sport, dport, tcp_flags, icmp) = match p.transport.as_ref().expect("L4") {
        TransportSlice::Tcp(t) => {
            let c = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => t.calc_checksum_ipv4(s.octets(), d.octets()),
                _ => t.calc_checksum_ipv6(s6.unwrap(), d6.unwrap()),
            }
            .unwrap();
            assert_eq!(t.checksum(), c, "TCP checksum");
            (
                t.source_port(),
                t.destination_port(),
                (t.rst(), t.syn()),
                None,
            )
        }
        TransportSlice::Udp(u) => (u.source_port(), u.destination_port(), (false, false), None),
        TransportSlice::Icmpv4(i) => {
            assert_eq!(i.checksum(), i.icmp_type().calc_checksum(i.payload()));
            (0, 0, (false, false), Some((i.type_u8(), i.code_u8())))
        }
        TransportSlice::Icmpv6(i) => {
            assert!(i.is_checksum_valid(s6.unwrap(), d6.unwrap()));
            (0, 0, (false, false), Some((i.type_u8(), i.code_u8())))
        }
    };
    Out {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        tcp_flags,
        icmp,
    }
}

/// The port a forwarded packet leaves on (sent, or held for its neighbour).
fn egress(v: Verdict) -> Option<u16> {
    match v {
        Verdict::Tx(p) | Verdict::Hold { port: p, .. } => Some(p),
        _ => None,
    }
}

/// Runs one flow from a fresh worker and checks its landing.
fn check(t: &ServiceTable, f: &Flow) {
    let st = WorkerStats::default();
    let mut p = pipeline(t);
    let src = ip(f.src);
    let dst = sock(f.dst);
    let mut landed = BTreeSet::new();
    let mut masqueraded_landings = 0;
    for sport in SPORTS {
        let (in_port, fr) = frame(src, sport, dst, f.proto);
        let mut b = VecBuf::new(&fr);
        let v = p.process(t, &st, in_port, &mut b, NOW, false);
        let ctx = || format!("flow {:?} (sport {sport}): {v:?}", f.name);
        match &f.expect {
            Backends { set, masq, .. } => {
                let port = egress(v).unwrap_or_else(|| panic!("{} not forwarded", ctx()));
                let o = parse(b.data());
                let backend = o.dst;
                assert!(
                    set.iter().any(|s| sock(s) == backend),
                    "{}: landed on {backend}, not in {set:?}",
                    ctx()
                );
                // The host's own address may be the SNAT address: compare
                // address and port.
                let masqueraded = o.src != SocketAddr::new(src, sport);
                let want = match masq {
                    Masq::No => false,
                    Masq::Yes => true,
                    Masq::IfSameLink => on_pod_link(src) && on_pod_link(backend.ip()),
                };
                assert_eq!(
                    masqueraded,
                    want,
                    "{}: masquerade (source {})",
                    ctx(),
                    o.src
                );
                if masqueraded {
                    masqueraded_landings += 1;
                    // SNAT to the node address of the egress port.
                    let node_addr = t.port_addr(port, src.is_ipv4()).map(|a| a.ip());
                    assert_eq!(Some(o.src.ip()), node_addr, "{}", ctx());
                } else {
                    assert_eq!(o.src, SocketAddr::new(src, sport), "{}", ctx());
                }
                landed.insert(backend);
            }
            Drop(r) => assert_eq!(v, Verdict::Drop(*r), "{}", ctx()),
            Reject => {
                assert_eq!(v, Verdict::Tx(in_port), "{}", ctx());
                let o = parse(b.data());
                assert_eq!(o.dst, SocketAddr::new(src, o.dst.port()), "{}", ctx());
                match (f.proto, src.is_ipv4()) {
                    (Proto::Tcp, _) => {
                        assert_eq!((o.src, o.dst.port()), (dst, sport), "{}", ctx());
                        assert_eq!(o.tcp_flags, (true, false), "{}: RST", ctx());
                    }
                    (_, true) => assert_eq!(o.icmp, Some((3, 3)), "{}", ctx()),
                    (_, false) => assert_eq!(o.icmp, Some((1, 4)), "{}", ctx()),
                }
                assert_eq!(o.src.ip(), dst.ip(), "{}: answered by the frontend", ctx());
            }
            Routed => {
                assert_eq!(egress(v), Some(0), "{}", ctx());
                let o = parse(b.data());
                assert_eq!(
                    (o.src, o.dst),
                    (SocketAddr::new(src, sport), dst),
                    "{}: untranslated",
                    ctx()
                );
            }
            Host => assert_eq!(v, Verdict::Drop(DropReason::LocalUnhandled), "{}", ctx()),
        }
    }
    match &f.expect {
        Backends {
            set,
            reach: Reach::All,
            ..
        } => {
            let want: BTreeSet<_> = set.iter().map(|s| sock(s)).collect();
            assert_eq!(landed, want, "flow {:?}: every backend reached", f.name);
        }
        Backends {
            reach: Reach::One, ..
        } => assert_eq!(
            landed.len(),
            1,
            "flow {:?}: one backend ({landed:?})",
            f.name
        ),
        Reject => assert_eq!(st.rejected.load(Relaxed), SPORTS.len() as u64),
        _ => assert_eq!(st.rejected.load(Relaxed), 0),
    }
    assert_eq!(
        st.sessions_masqueraded.load(Relaxed),
        masqueraded_landings,
        "flow {:?}: masqueraded sessions",
        f.name
    );
}

fn run_flows(t: &ServiceTable, flows: &[Flow]) {
    for f in flows {
        check(t, f);
    }
}

// ---------------------------------------------------------------------------
// Addresses used below (all in 198.18.0.0/15 and 2001:2::/48)
//
// Clients: pod on this node 198.18.64.5 / 2001:2:0:100::5; off-cluster
// 198.19.0.10 / 2001:2:0:ff::10 (inside the LB source ranges) and
// 198.19.1.20 / 2001:2:0:ff::1:20 (outside).
// Endpoints: this node 198.18.64.11-12 / 2001:2:0:100::11-12; node-b
// 198.18.65.11-12 / 2001:2:0:101::11-12; node-c 198.18.66.11 / 2001:2:0:102::11.

const POD4: &str = "198.18.64.5";
const POD6: &str = "2001:2:0:100::5";
const EXT4: &str = "198.19.0.10";
const EXT6: &str = "2001:2:0:ff::10";
const EXT4_OTHER: &str = "198.19.1.20";
const EXT6_OTHER: &str = "2001:2:0:ff::1:20";

/// A dual-stack Service's slices: `eps4` and `eps6` with the same ports.
fn slices(
    svc: &str,
    ports: &[(Option<&str>, &str, i32)],
    eps4: Vec<Endpoint>,
    eps6: Vec<Endpoint>,
) -> Vec<EndpointSlice> {
    vec![
        slice(svc, &format!("{svc}-v4"), ports, eps4),
        slice(svc, &format!("{svc}-v6"), ports, eps6),
    ]
}

/// Three ready endpoints per family: node-a, node-b, node-c.
fn three(svc: &str, ports: &[(Option<&str>, &str, i32)]) -> Vec<EndpointSlice> {
    slices(
        svc,
        ports,
        vec![
            ready("198.18.64.11", "node-a"),
            ready("198.18.65.11", "node-b"),
            ready("198.18.66.11", "node-c"),
        ],
        vec![
            ready("2001:2:0:100::11", "node-a"),
            ready("2001:2:0:101::11", "node-b"),
            ready("2001:2:0:102::11", "node-c"),
        ],
    )
}

const THREE4: &[&str] = &[
    "198.18.64.11:8080",
    "198.18.65.11:8080",
    "198.18.66.11:8080",
];
const THREE6: &[&str] = &[
    "[2001:2:0:100::11]:8080",
    "[2001:2:0:101::11]:8080",
    "[2001:2:0:102::11]:8080",
];
const REMOTE4: &[&str] = &["198.18.65.11:8080", "198.18.66.11:8080"];
const REMOTE6: &[&str] = &["[2001:2:0:101::11]:8080", "[2001:2:0:102::11]:8080"];

/// Dual-stack ClusterIP `web` (TCP 80 -> 8080, UDP 53 -> 5353).
fn web() -> (Service, Vec<EndpointSlice>) {
    let s = service(
        "web",
        "ClusterIP",
        &["198.18.128.1", "2001:2:0:200::1"],
        vec![
            port(Some("http"), "TCP", 80, "8080"),
            port(Some("dns"), "UDP", 53, "5353"),
        ],
    );
    let sl = three(
        "web",
        &[(Some("http"), "TCP", 8080), (Some("dns"), "UDP", 5353)],
    );
    (s, sl)
}

// ---------------------------------------------------------------------------
// The tests

#[test]
fn cluster_ip() {
    let t = table(&[web()], cluster_cidrs());
    run_flows(
        &t,
        &[
            Flow {
                name: "pod to ClusterIP, TCP",
                src: POD4,
                dst: "198.18.128.1:80",
                proto: TCP,
                expect: all(THREE4, Masq::IfSameLink),
            },
            Flow {
                name: "pod to ClusterIP, TCP, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::1]:80",
                proto: TCP,
                expect: all(THREE6, Masq::IfSameLink),
            },
            Flow {
                name: "pod to ClusterIP, UDP",
                src: POD4,
                dst: "198.18.128.1:53",
                proto: UDP,
                expect: all(
                    &[
                        "198.18.64.11:5353",
                        "198.18.65.11:5353",
                        "198.18.66.11:5353",
                    ],
                    Masq::IfSameLink,
                ),
            },
            Flow {
                name: "pod to ClusterIP, UDP, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::1]:53",
                proto: UDP,
                expect: all(
                    &[
                        "[2001:2:0:100::11]:5353",
                        "[2001:2:0:101::11]:5353",
                        "[2001:2:0:102::11]:5353",
                    ],
                    Masq::IfSameLink,
                ),
            },
            Flow {
                name: "ClusterIP, port of the other protocol",
                src: POD4,
                dst: "198.18.128.1:53",
                proto: TCP,
                expect: Routed,
            },
            Flow {
                name: "ClusterIP, unknown port",
                src: POD6,
                dst: "[2001:2:0:200::1]:81",
                proto: TCP,
                expect: Routed,
            },
        ],
    );
}

#[test]
fn off_cluster_clients_and_masquerade_all() {
    let (mut lb, lb_sl) = web();
    lb.metadata.name = Some("lb".into());
    let lb_sl: Vec<_> = lb_sl
        .into_iter()
        .map(|mut s| {
            s.metadata.labels = meta("x", &[(LABEL_SERVICE_NAME, "lb")]).labels;
            s
        })
        .collect();
    let sp = spec(&mut lb);
    sp.type_ = Some("LoadBalancer".into());
    sp.cluster_ips = Some(vec!["198.18.128.2".into(), "2001:2:0:200::2".into()]);
    sp.cluster_ip = Some("198.18.128.2".into());
    sp.external_traffic_policy = Some("Local".into());
    ingress(
        &mut lb,
        &[("198.18.130.2", None), ("2001:2:0:301::2", None)],
    );
    let objects = [web(), (lb, lb_sl)];
    let local4 = &["198.18.64.11:8080"][..];
    let local6 = &["[2001:2:0:100::11]:8080"][..];

    // Cluster CIDRs: a client outside them reaching a ClusterIP is
    // masqueraded; the client of an external eTP:Local frontend is not.
    let t = table(&objects, cluster_cidrs());
    run_flows(
        &t,
        &[
            Flow {
                name: "off-cluster client to ClusterIP",
                src: EXT4,
                dst: "198.18.128.1:80",
                proto: TCP,
                expect: all(THREE4, Masq::Yes),
            },
            Flow {
                name: "off-cluster client to ClusterIP, IPv6",
                src: EXT6,
                dst: "[2001:2:0:200::1]:80",
                proto: TCP,
                expect: all(THREE6, Masq::Yes),
            },
            Flow {
                name: "off-cluster client to eTP:Local LB IP keeps its address",
                src: EXT4,
                dst: "198.18.130.2:80",
                proto: TCP,
                expect: all(local4, Masq::No),
            },
            Flow {
                name: "off-cluster client to eTP:Local LB IP keeps its address, IPv6",
                src: EXT6,
                dst: "[2001:2:0:301::2]:80",
                proto: TCP,
                expect: all(local6, Masq::No),
            },
        ],
    );

    // masqueradeAll: every ClusterIP connection, even pod to remote pod;
    // still not the eTP:Local external frontends.
    let t = table(
        &objects,
        MasqueradePolicy {
            all: true,
            ..cluster_cidrs()
        },
    );
    run_flows(
        &t,
        &[
            Flow {
                name: "masqueradeAll: pod to ClusterIP",
                src: POD4,
                dst: "198.18.128.1:80",
                proto: TCP,
                expect: all(THREE4, Masq::Yes),
            },
            Flow {
                name: "masqueradeAll: pod to ClusterIP, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::1]:53",
                proto: UDP,
                expect: all(
                    &[
                        "[2001:2:0:100::11]:5353",
                        "[2001:2:0:101::11]:5353",
                        "[2001:2:0:102::11]:5353",
                    ],
                    Masq::Yes,
                ),
            },
            Flow {
                name: "masqueradeAll: off-cluster client to eTP:Local LB IP",
                src: EXT4,
                dst: "198.18.130.2:80",
                proto: TCP,
                expect: all(local4, Masq::No),
            },
            Flow {
                name: "masqueradeAll: off-cluster client to eTP:Local LB IP, IPv6",
                src: EXT6,
                dst: "[2001:2:0:301::2]:80",
                proto: TCP,
                expect: all(local6, Masq::No),
            },
        ],
    );

    // No cluster CIDRs known: no off-cluster detection, and pods are not
    // told apart (no short-circuit for them).
    let t = table(&objects, MasqueradePolicy::default());
    run_flows(
        &t,
        &[
            Flow {
                name: "no cluster CIDRs: off-cluster client to ClusterIP",
                src: EXT4,
                dst: "198.18.128.1:80",
                proto: TCP,
                expect: all(THREE4, Masq::No),
            },
            Flow {
                name: "no cluster CIDRs: pod to eTP:Local LB IP, local endpoint only",
                src: POD6,
                dst: "[2001:2:0:301::2]:80",
                proto: TCP,
                expect: all(local6, Masq::IfSameLink),
            },
        ],
    );
}

#[test]
fn hairpin() {
    // The only endpoint is the client itself.
    let s = service(
        "self",
        "ClusterIP",
        &["198.18.128.3", "2001:2:0:200::3"],
        vec![port(None, "TCP", 80, "8080")],
    );
    let sl = slices(
        "self",
        &[(None, "TCP", 8080)],
        vec![ready(POD4, NODE)],
        vec![ready(POD6, NODE)],
    );
    let t = table(&[(s, sl)], cluster_cidrs());
    run_flows(
        &t,
        &[
            Flow {
                name: "pod to itself via its Service",
                src: POD4,
                dst: "198.18.128.3:80",
                proto: TCP,
                expect: all(&["198.18.64.5:8080"], Masq::Yes),
            },
            Flow {
                name: "pod to itself via its Service, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::3]:80",
                proto: TCP,
                expect: all(&["[2001:2:0:100::5]:8080"], Masq::Yes),
            },
        ],
    );
}

/// NodePort Service `name` with ClusterIPs 198.18.128.`n` / 2001:2:0:200::`n`,
/// port 80 on nodePort 30080 + `n`, externalTrafficPolicy `etp`.
fn node_port_svc(
    name: &str,
    n: i32,
    etp: &str,
    eps4: Vec<Endpoint>,
    eps6: Vec<Endpoint>,
) -> (Service, Vec<EndpointSlice>) {
    let mut s = service(
        name,
        "NodePort",
        &[&format!("198.18.128.{n}"), &format!("2001:2:0:200::{n}")],
        vec![with_node_port(port(None, "TCP", 80, "8080"), 30080 + n)],
    );
    spec(&mut s).external_traffic_policy = Some(etp.into());
    (s, slices(name, &[(None, "TCP", 8080)], eps4, eps6))
}

#[test]
fn node_ports() {
    let remote = || {
        (
            vec![
                ready("198.18.65.11", "node-b"),
                ready("198.18.66.11", "node-c"),
            ],
            vec![
                ready("2001:2:0:101::11", "node-b"),
                ready("2001:2:0:102::11", "node-c"),
            ],
        )
    };
    let (r4, r6) = remote();
    let np = node_port_svc("np", 4, "Cluster", r4, r6);
    let t = table(&[np], cluster_cidrs());
    run_flows(
        &t,
        &[
            Flow {
                name: "NodePort on the node address",
                src: EXT4,
                dst: "198.18.0.1:30084",
                proto: TCP,
                expect: all(REMOTE4, Masq::Yes),
            },
            Flow {
                name: "NodePort on the node address, IPv6",
                src: EXT6,
                dst: "[2001:2::1]:30084",
                proto: TCP,
                expect: all(REMOTE6, Masq::Yes),
            },
            Flow {
                name: "NodePort from a pod on this node (eTP Cluster: masqueraded)",
                src: POD4,
                dst: "198.18.0.1:30084",
                proto: TCP,
                expect: all(REMOTE4, Masq::Yes),
            },
            Flow {
                name: "NodePort, UDP: not a frontend",
                src: EXT4,
                dst: "198.18.0.1:30084",
                proto: UDP,
                expect: Host,
            },
            Flow {
                name: "NodePort on a node address outside nodePortAddresses",
                src: POD4,
                dst: "198.18.64.1:30084",
                proto: TCP,
                expect: Host,
            },
            Flow {
                name: "NodePort on a node address outside nodePortAddresses, IPv6",
                src: POD6,
                dst: "[2001:2:0:100::1]:30084",
                proto: TCP,
                expect: Host,
            },
            Flow {
                name: "NodePort port on another host's address",
                src: EXT4,
                dst: "198.18.0.9:30084",
                proto: TCP,
                expect: Routed,
            },
            Flow {
                name: "NodePort port on another host's address, IPv6",
                src: EXT6,
                dst: "[2001:2::9]:30084",
                proto: TCP,
                expect: Routed,
            },
        ],
    );
}

#[test]
fn external_ips() {
    let (mut s, sl) = web();
    // Cluster: masqueraded; an externalIP of a family the Service has no
    // ClusterIP for is ignored.
    spec(&mut s).external_ips = Some(vec!["198.18.129.1".into(), "2001:2:0:300::1".into()]);
    let (mut v4only, _) = web();
    v4only.metadata.name = Some("v4only".into());
    let sp = spec(&mut v4only);
    sp.cluster_ips = Some(vec!["198.18.128.8".into()]);
    sp.cluster_ip = Some("198.18.128.8".into());
    sp.ip_families = Some(vec!["IPv4".into()]);
    sp.external_ips = Some(vec!["198.18.129.8".into(), "2001:2:0:300::8".into()]);
    let v4only_sl = vec![
        slice(
            "v4only",
            "v4only-v4",
            &[(Some("http"), "TCP", 8080)],
            vec![ready("198.18.65.12", "node-b")],
        ),
        slice(
            "v4only",
            "v4only-v6",
            &[(Some("http"), "TCP", 8080)],
            vec![ready("2001:2:0:101::12", "node-b")],
        ),
    ];
    let t = table(&[(s, sl), (v4only, v4only_sl)], cluster_cidrs());
    run_flows(
        &t,
        &[
            Flow {
                name: "externalIP",
                src: EXT4,
                dst: "198.18.129.1:80",
                proto: TCP,
                expect: all(THREE4, Masq::Yes),
            },
            Flow {
                name: "externalIP, IPv6",
                src: EXT6,
                dst: "[2001:2:0:300::1]:80",
                proto: TCP,
                expect: all(THREE6, Masq::Yes),
            },
            Flow {
                name: "externalIP, other port",
                src: EXT4,
                dst: "198.18.129.1:8080",
                proto: TCP,
                expect: Routed,
            },
            Flow {
                name: "single-stack IPv4 Service, IPv4 externalIP",
                src: EXT4,
                dst: "198.18.129.8:80",
                proto: TCP,
                expect: all(&["198.18.65.12:8080"], Masq::Yes),
            },
            Flow {
                name: "single-stack IPv4 Service, IPv6 externalIP ignored",
                src: EXT6,
                dst: "[2001:2:0:300::8]:80",
                proto: TCP,
                expect: Routed,
            },
        ],
    );
}

#[test]
fn load_balancer_ingress_and_source_ranges() {
    let mut s = service(
        "lb",
        "LoadBalancer",
        &["198.18.128.9", "2001:2:0:200::9"],
        vec![with_node_port(port(None, "TCP", 80, "8080"), 30090)],
    );
    spec(&mut s).load_balancer_source_ranges =
        Some(vec!["198.19.0.0/24".into(), "2001:2:0:ff::/120".into()]);
    ingress(
        &mut s,
        &[
            ("198.18.130.1", None),
            ("198.18.130.9", Some("Proxy")),
            ("2001:2:0:301::1", Some("VIP")),
            ("2001:2:0:301::9", Some("Proxy")),
        ],
    );
    let sl = three("lb", &[(None, "TCP", 8080)]);
    let t = table(&[(s, sl)], cluster_cidrs());
    run_flows(
        &t,
        &[
            Flow {
                name: "LB IP, allowed source",
                src: EXT4,
                dst: "198.18.130.1:80",
                proto: TCP,
                expect: all(THREE4, Masq::Yes),
            },
            Flow {
                name: "LB IP, allowed source, IPv6",
                src: EXT6,
                dst: "[2001:2:0:301::1]:80",
                proto: TCP,
                expect: all(THREE6, Masq::Yes),
            },
            Flow {
                name: "LB IP, source outside loadBalancerSourceRanges",
                src: EXT4_OTHER,
                dst: "198.18.130.1:80",
                proto: TCP,
                expect: Drop(DropReason::SourceRange),
            },
            Flow {
                name: "LB IP, source outside loadBalancerSourceRanges, IPv6",
                src: EXT6_OTHER,
                dst: "[2001:2:0:301::1]:80",
                proto: TCP,
                expect: Drop(DropReason::SourceRange),
            },
            Flow {
                name: "ClusterIP ignores loadBalancerSourceRanges",
                src: EXT4_OTHER,
                dst: "198.18.128.9:80",
                proto: TCP,
                expect: all(THREE4, Masq::Yes),
            },
            Flow {
                name: "NodePort ignores loadBalancerSourceRanges",
                src: EXT6_OTHER,
                dst: "[2001:2::1]:30090",
                proto: TCP,
                expect: all(THREE6, Masq::Yes),
            },
            Flow {
                name: "ingress IP with ipMode Proxy is not a frontend",
                src: EXT4,
                dst: "198.18.130.9:80",
                proto: TCP,
                expect: Routed,
            },
            Flow {
                name: "ingress IP with ipMode Proxy is not a frontend, IPv6",
                src: EXT6,
                dst: "[2001:2:0:301::9]:80",
                proto: TCP,
                expect: Routed,
            },
        ],
    );
}

#[test]
fn multi_port_named_target_ports() {
    // targetPort names resolve per slice: two slices, two port numbers.
    let s = service(
        "multi",
        "ClusterIP",
        &["198.18.128.10", "2001:2:0:200::10"],
        vec![
            port(Some("http"), "TCP", 80, "web"),
            port(Some("metrics"), "TCP", 9090, "metrics"),
            port(Some("dns"), "UDP", 53, "dns"),
        ],
    );
    let sl = vec![
        slice(
            "multi",
            "multi-a",
            &[
                (Some("http"), "TCP", 8080),
                (Some("metrics"), "TCP", 9100),
                (Some("dns"), "UDP", 5353),
            ],
            vec![ready("198.18.65.11", "node-b")],
        ),
        slice(
            "multi",
            "multi-b",
            &[
                (Some("http"), "TCP", 8081),
                (Some("metrics"), "TCP", 9101),
                (Some("dns"), "UDP", 5354),
            ],
            vec![ready("198.18.66.11", "node-c")],
        ),
        slice(
            "multi",
            "multi-a-v6",
            &[(Some("http"), "TCP", 8080), (Some("metrics"), "TCP", 9100)],
            vec![ready("2001:2:0:101::11", "node-b")],
        ),
        slice(
            "multi",
            "multi-b-v6",
            &[(Some("http"), "TCP", 8081), (Some("metrics"), "TCP", 9101)],
            vec![ready("2001:2:0:102::11", "node-c")],
        ),
    ];
    let t = table(&[(s, sl)], cluster_cidrs());
    run_flows(
        &t,
        &[
            Flow {
                name: "multi-port: http",
                src: POD4,
                dst: "198.18.128.10:80",
                proto: TCP,
                expect: all(&["198.18.65.11:8080", "198.18.66.11:8081"], Masq::No),
            },
            Flow {
                name: "multi-port: metrics",
                src: POD4,
                dst: "198.18.128.10:9090",
                proto: TCP,
                expect: all(&["198.18.65.11:9100", "198.18.66.11:9101"], Masq::No),
            },
            Flow {
                name: "multi-port: dns",
                src: POD4,
                dst: "198.18.128.10:53",
                proto: UDP,
                expect: all(&["198.18.65.11:5353", "198.18.66.11:5354"], Masq::No),
            },
            Flow {
                name: "multi-port: http, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::10]:80",
                proto: TCP,
                expect: all(
                    &["[2001:2:0:101::11]:8080", "[2001:2:0:102::11]:8081"],
                    Masq::No,
                ),
            },
            Flow {
                name: "multi-port: metrics, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::10]:9090",
                proto: TCP,
                expect: all(
                    &["[2001:2:0:101::11]:9100", "[2001:2:0:102::11]:9101"],
                    Masq::No,
                ),
            },
            Flow {
                name: "multi-port: dns, IPv6 (no slice port: no endpoints)",
                src: POD6,
                dst: "[2001:2:0:200::10]:53",
                proto: UDP,
                expect: Reject,
            },
        ],
    );
}

#[test]
fn endpoint_conditions() {
    let svc = |name: &str, n: u8| {
        service(
            name,
            "ClusterIP",
            &[&format!("198.18.128.{n}"), &format!("2001:2:0:200::{n}")],
            vec![
                port(None, "TCP", 80, "8080"),
                port(Some("dns"), "UDP", 53, "5353"),
            ],
        )
    };
    let ports = &[(None, "TCP", 8080), (Some("dns"), "UDP", 5353)];
    // Ready ones only (not the not-ready or the terminating ones).
    let mixed = slices(
        "mixed",
        ports,
        vec![
            ready("198.18.65.11", "node-b"),
            ep("198.18.65.12", "node-b", Cond::NotReady),
            ep("198.18.66.11", "node-c", Cond::ServingTerminating),
        ],
        vec![
            ready("2001:2:0:101::11", "node-b"),
            ep("2001:2:0:101::12", "node-b", Cond::NotReady),
            ep("2001:2:0:102::11", "node-c", Cond::ServingTerminating),
        ],
    );
    // None ready: the serving and terminating ones.
    let terminating = slices(
        "terminating",
        ports,
        vec![
            ep("198.18.65.11", "node-b", Cond::ServingTerminating),
            ep("198.18.65.12", "node-b", Cond::Terminating),
            ep("198.18.66.11", "node-c", Cond::ServingTerminating),
            ep("198.18.66.12", "node-c", Cond::NotReady),
        ],
        vec![
            ep("2001:2:0:101::11", "node-b", Cond::ServingTerminating),
            ep("2001:2:0:101::12", "node-b", Cond::Terminating),
            ep("2001:2:0:102::11", "node-c", Cond::ServingTerminating),
        ],
    );
    // Nothing usable: REJECT.
    let unusable = slices(
        "unusable",
        ports,
        vec![
            ep("198.18.65.11", "node-b", Cond::NotReady),
            ep("198.18.65.12", "node-b", Cond::Terminating),
        ],
        vec![ep("2001:2:0:101::11", "node-b", Cond::NotReady)],
    );
    let t = table(
        &[
            (svc("mixed", 11), mixed),
            (svc("terminating", 12), terminating),
            (svc("unusable", 13), unusable),
            (svc("empty", 14), vec![]),
        ],
        cluster_cidrs(),
    );
    let mut flows = vec![
        Flow {
            name: "ready endpoints only",
            src: POD4,
            dst: "198.18.128.11:80",
            proto: TCP,
            expect: all(&["198.18.65.11:8080"], Masq::No),
        },
        Flow {
            name: "ready endpoints only, IPv6",
            src: POD6,
            dst: "[2001:2:0:200::11]:80",
            proto: TCP,
            expect: all(&["[2001:2:0:101::11]:8080"], Masq::No),
        },
        Flow {
            name: "none ready: serving and terminating",
            src: POD4,
            dst: "198.18.128.12:80",
            proto: TCP,
            expect: all(&["198.18.65.11:8080", "198.18.66.11:8080"], Masq::No),
        },
        Flow {
            name: "none ready: serving and terminating, IPv6",
            src: POD6,
            dst: "[2001:2:0:200::12]:53",
            proto: UDP,
            expect: all(
                &["[2001:2:0:101::11]:5353", "[2001:2:0:102::11]:5353"],
                Masq::No,
            ),
        },
    ];
    for (name, n) in [("none usable", 13), ("no endpoints", 14)] {
        for (proto, port) in [(TCP, 80), (UDP, 53)] {
            let name4 = format!("{name}: REJECT ({proto:?})");
            let name6 = format!("{name}: REJECT ({proto:?}, IPv6)");
            flows.push(Flow {
                name: leak(name4),
                src: POD4,
                dst: leak(format!("198.18.128.{n}:{port}")),
                proto,
                expect: Reject,
            });
            flows.push(Flow {
                name: leak(name6),
                src: EXT6,
                dst: leak(format!("[2001:2:0:200::{n}]:{port}")),
                proto,
                expect: Reject,
            });
        }
    }
    run_flows(&t, &flows);
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// eTP Local LoadBalancer with NodePort and externalIP, endpoints given.
fn etp_local(
    name: &str,
    n: u8,
    eps4: Vec<Endpoint>,
    eps6: Vec<Endpoint>,
) -> (Service, Vec<EndpointSlice>) {
    let mut s = service(
        name,
        "LoadBalancer",
        &[&format!("198.18.128.{n}"), &format!("2001:2:0:200::{n}")],
        vec![
            with_node_port(port(None, "TCP", 80, "8080"), 30000 + i32::from(n)),
            with_node_port(port(Some("dns"), "UDP", 53, "5353"), 30000 + i32::from(n)),
        ],
    );
    let sp = spec(&mut s);
    sp.external_traffic_policy = Some("Local".into());
    sp.health_check_node_port = Some(32000);
    sp.external_ips = Some(vec![
        format!("198.18.129.{n}"),
        format!("2001:2:0:300::{n}"),
    ]);
    ingress(
        &mut s,
        &[
            (&format!("198.18.130.{n}"), None),
            (&format!("2001:2:0:301::{n}"), None),
        ],
    );
    let ports = &[(None, "TCP", 8080), (Some("dns"), "UDP", 5353)];
    (s, slices(name, ports, eps4, eps6))
}

#[test]
fn external_traffic_policy() {
    let mixed = etp_local(
        "local",
        20,
        vec![
            ready("198.18.64.12", "node-a"),
            ready("198.18.65.12", "node-b"),
        ],
        vec![
            ready("2001:2:0:100::12", "node-a"),
            ready("2001:2:0:101::12", "node-b"),
        ],
    );
    let remote_only = etp_local(
        "remote",
        21,
        vec![ready("198.18.65.12", "node-b")],
        vec![ready("2001:2:0:101::12", "node-b")],
    );
    let none = etp_local("none", 22, vec![], vec![]);
    let (r4, r6) = (
        vec![
            ready("198.18.65.11", "node-b"),
            ready("198.18.66.11", "node-c"),
        ],
        vec![
            ready("2001:2:0:101::11", "node-b"),
            ready("2001:2:0:102::11", "node-c"),
        ],
    );
    let cluster = node_port_svc("np", 4, "Cluster", r4, r6);
    let t = table(&[mixed, remote_only, none, cluster], cluster_cidrs());
    let local4 = &["198.18.64.12:8080"][..];
    let local6 = &["[2001:2:0:100::12]:8080"][..];
    let both4 = &["198.18.64.12:8080", "198.18.65.12:8080"][..];
    let both6 = &["[2001:2:0:100::12]:8080", "[2001:2:0:101::12]:8080"][..];
    let nl = Drop(DropReason::NoLocalEndpoints);
    run_flows(
        &t,
        &[
            // eTP Local: external frontends only the local endpoint, client
            // address preserved.
            Flow {
                name: "eTP Local: NodePort",
                src: EXT4,
                dst: "198.18.0.1:30020",
                proto: TCP,
                expect: all(local4, Masq::No),
            },
            Flow {
                name: "eTP Local: NodePort, IPv6",
                src: EXT6,
                dst: "[2001:2::1]:30020",
                proto: TCP,
                expect: all(local6, Masq::No),
            },
            Flow {
                name: "eTP Local: NodePort, UDP",
                src: EXT4,
                dst: "198.18.0.1:30020",
                proto: UDP,
                expect: all(&["198.18.64.12:5353"], Masq::No),
            },
            Flow {
                name: "eTP Local: externalIP",
                src: EXT4,
                dst: "198.18.129.20:80",
                proto: TCP,
                expect: all(local4, Masq::No),
            },
            Flow {
                name: "eTP Local: externalIP, IPv6",
                src: EXT6,
                dst: "[2001:2:0:300::20]:80",
                proto: TCP,
                expect: all(local6, Masq::No),
            },
            Flow {
                name: "eTP Local: LB IP",
                src: EXT4,
                dst: "198.18.130.20:80",
                proto: TCP,
                expect: all(local4, Masq::No),
            },
            Flow {
                name: "eTP Local: LB IP, IPv6",
                src: EXT6,
                dst: "[2001:2:0:301::20]:80",
                proto: TCP,
                expect: all(local6, Masq::No),
            },
            // The ClusterIP keeps every endpoint.
            Flow {
                name: "eTP Local: ClusterIP from a pod",
                src: POD4,
                dst: "198.18.128.20:80",
                proto: TCP,
                expect: all(both4, Masq::IfSameLink),
            },
            Flow {
                name: "eTP Local: ClusterIP from a pod, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::20]:80",
                proto: TCP,
                expect: all(both6, Masq::IfSameLink),
            },
            // Endpoints, none on this node: external frontends DROP.
            Flow {
                name: "eTP Local, no local endpoint: NodePort drops",
                src: EXT4,
                dst: "198.18.0.1:30021",
                proto: TCP,
                expect: nl.clone(),
            },
            Flow {
                name: "eTP Local, no local endpoint: NodePort drops, UDP IPv6",
                src: EXT6,
                dst: "[2001:2::1]:30021",
                proto: UDP,
                expect: nl.clone(),
            },
            Flow {
                name: "eTP Local, no local endpoint: LB IP drops",
                src: EXT4,
                dst: "198.18.130.21:80",
                proto: TCP,
                expect: nl.clone(),
            },
            Flow {
                name: "eTP Local, no local endpoint: externalIP drops, IPv6",
                src: EXT6,
                dst: "[2001:2:0:300::21]:80",
                proto: TCP,
                expect: nl.clone(),
            },
            Flow {
                name: "eTP Local, no local endpoint: ClusterIP still works",
                src: POD4,
                dst: "198.18.128.21:80",
                proto: TCP,
                expect: all(&["198.18.65.12:8080"], Masq::No),
            },
            Flow {
                name: "eTP Local, no local endpoint: ClusterIP still works, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::21]:53",
                proto: UDP,
                expect: all(&["[2001:2:0:101::12]:5353"], Masq::No),
            },
            // No endpoints at all: REJECT, on every frontend.
            Flow {
                name: "eTP Local, no endpoints: NodePort rejects",
                src: EXT4,
                dst: "198.18.0.1:30022",
                proto: TCP,
                expect: Reject,
            },
            Flow {
                name: "eTP Local, no endpoints: LB IP rejects, UDP IPv6",
                src: EXT6,
                dst: "[2001:2:0:301::22]:53",
                proto: UDP,
                expect: Reject,
            },
            Flow {
                name: "eTP Local, no endpoints: externalIP rejects, UDP",
                src: EXT4,
                dst: "198.18.129.22:53",
                proto: UDP,
                expect: Reject,
            },
            // kube-proxy's short-circuit: pods (cluster CIDRs) and the host
            // get every endpoint; the host is masqueraded.
            Flow {
                name: "eTP Local short-circuit: pod to LB IP",
                src: POD4,
                dst: "198.18.130.20:80",
                proto: TCP,
                expect: all(both4, Masq::IfSameLink),
            },
            Flow {
                name: "eTP Local short-circuit: pod to NodePort, IPv6",
                src: POD6,
                dst: "[2001:2::1]:30020",
                proto: TCP,
                expect: all(both6, Masq::IfSameLink),
            },
            Flow {
                name: "eTP Local short-circuit: pod to externalIP, UDP",
                src: POD4,
                dst: "198.18.129.20:53",
                proto: UDP,
                expect: all(
                    &["198.18.64.12:5353", "198.18.65.12:5353"],
                    Masq::IfSameLink,
                ),
            },
            Flow {
                name: "eTP Local short-circuit: host to LB IP",
                src: "198.18.0.1",
                dst: "198.18.130.20:80",
                proto: TCP,
                expect: all(both4, Masq::Yes),
            },
            Flow {
                name: "eTP Local short-circuit: host to LB IP, IPv6",
                src: "2001:2::1",
                dst: "[2001:2:0:301::20]:80",
                proto: TCP,
                expect: all(both6, Masq::Yes),
            },
            Flow {
                name: "eTP Local short-circuit, no local endpoint: pod to NodePort",
                src: POD4,
                dst: "198.18.0.1:30021",
                proto: TCP,
                expect: all(&["198.18.65.12:8080"], Masq::No),
            },
            Flow {
                name: "eTP Local short-circuit, no local endpoint: pod to LB IP, IPv6",
                src: POD6,
                dst: "[2001:2:0:301::21]:80",
                proto: TCP,
                expect: all(&["[2001:2:0:101::12]:8080"], Masq::No),
            },
            Flow {
                name: "eTP Local short-circuit, no local endpoint: host to externalIP",
                src: "198.18.0.1",
                dst: "198.18.129.21:80",
                proto: TCP,
                expect: all(&["198.18.65.12:8080"], Masq::Yes),
            },
            Flow {
                name: "eTP Local short-circuit, no endpoints: pod to LB IP rejects",
                src: POD6,
                dst: "[2001:2:0:301::22]:80",
                proto: TCP,
                expect: Reject,
            },
            // eTP Cluster: every endpoint, masqueraded.
            Flow {
                name: "eTP Cluster: NodePort",
                src: EXT4,
                dst: "198.18.0.1:30084",
                proto: TCP,
                expect: all(REMOTE4, Masq::Yes),
            },
            Flow {
                name: "eTP Cluster: NodePort, IPv6",
                src: EXT6,
                dst: "[2001:2::1]:30084",
                proto: TCP,
                expect: all(REMOTE6, Masq::Yes),
            },
        ],
    );
}

#[test]
fn internal_traffic_policy() {
    let itp = |name: &str, n: u8, eps4, eps6| {
        let mut s = service(
            name,
            "NodePort",
            &[&format!("198.18.128.{n}"), &format!("2001:2:0:200::{n}")],
            vec![with_node_port(
                port(None, "TCP", 80, "8080"),
                30000 + i32::from(n),
            )],
        );
        spec(&mut s).internal_traffic_policy = Some("Local".into());
        (s, slices(name, &[(None, "TCP", 8080)], eps4, eps6))
    };
    let mixed = itp(
        "itp",
        30,
        vec![
            ready("198.18.64.11", "node-a"),
            ready("198.18.65.11", "node-b"),
        ],
        vec![
            ready("2001:2:0:100::11", "node-a"),
            ready("2001:2:0:101::11", "node-b"),
        ],
    );
    let remote = itp(
        "itp-remote",
        31,
        vec![ready("198.18.65.11", "node-b")],
        vec![ready("2001:2:0:101::11", "node-b")],
    );
    let none = itp("itp-none", 32, vec![], vec![]);
    let t = table(&[mixed, remote, none], cluster_cidrs());
    run_flows(
        &t,
        &[
            Flow {
                name: "iTP Local: ClusterIP gets the local endpoint only",
                src: POD4,
                dst: "198.18.128.30:80",
                proto: TCP,
                expect: all(&["198.18.64.11:8080"], Masq::IfSameLink),
            },
            Flow {
                name: "iTP Local: ClusterIP gets the local endpoint only, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::30]:80",
                proto: TCP,
                expect: all(&["[2001:2:0:100::11]:8080"], Masq::IfSameLink),
            },
            Flow {
                name: "iTP Local: NodePort (eTP Cluster) gets every endpoint",
                src: EXT4,
                dst: "198.18.0.1:30030",
                proto: TCP,
                expect: all(&["198.18.64.11:8080", "198.18.65.11:8080"], Masq::Yes),
            },
            Flow {
                name: "iTP Local, no local endpoint: ClusterIP drops",
                src: POD4,
                dst: "198.18.128.31:80",
                proto: TCP,
                expect: Drop(DropReason::NoLocalEndpoints),
            },
            Flow {
                name: "iTP Local, no local endpoint: ClusterIP drops, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::31]:80",
                proto: TCP,
                expect: Drop(DropReason::NoLocalEndpoints),
            },
            Flow {
                name: "iTP Local, no local endpoint: NodePort still works",
                src: EXT6,
                dst: "[2001:2::1]:30031",
                proto: TCP,
                expect: all(&["[2001:2:0:101::11]:8080"], Masq::Yes),
            },
            Flow {
                name: "iTP Local, no endpoints: ClusterIP rejects",
                src: POD4,
                dst: "198.18.128.32:80",
                proto: TCP,
                expect: Reject,
            },
            Flow {
                name: "iTP Local, no endpoints: ClusterIP rejects, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::32]:80",
                proto: TCP,
                expect: Reject,
            },
        ],
    );
}

#[test]
fn session_affinity_client_ip() {
    let (mut s, sl) = web();
    spec(&mut s).session_affinity = Some("ClientIP".into());
    let t = table(&[(s, sl)], cluster_cidrs());
    let one = |set| Backends {
        set,
        masq: Masq::IfSameLink,
        reach: Reach::One,
    };
    run_flows(
        &t,
        &[
            Flow {
                name: "ClientIP affinity: every port of a client, one backend",
                src: POD4,
                dst: "198.18.128.1:80",
                proto: TCP,
                expect: one(THREE4),
            },
            Flow {
                name: "ClientIP affinity: every port of a client, one backend, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::1]:80",
                proto: TCP,
                expect: one(THREE6),
            },
            Flow {
                name: "ClientIP affinity, UDP",
                src: EXT4,
                dst: "198.18.128.1:53",
                proto: UDP,
                expect: Backends {
                    set: &[
                        "198.18.64.11:5353",
                        "198.18.65.11:5353",
                        "198.18.66.11:5353",
                    ],
                    masq: Masq::Yes,
                    reach: Reach::One,
                },
            },
        ],
    );
    // Different clients are spread over the backends.
    let st = WorkerStats::default();
    let mut p = pipeline(&t);
    let mut seen = BTreeSet::new();
    for i in 0..32u8 {
        let src = ip(&format!("198.18.64.{}", 100 + i));
        let (in_port, fr) = frame(src, 40_000, sock("198.18.128.1:80"), TCP);
        let mut b = VecBuf::new(&fr);
        assert!(egress(p.process(&t, &st, in_port, &mut b, NOW, false)).is_some());
        seen.insert(parse(b.data()).dst);
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn topology() {
    let svc = |name: &str, n: u8| {
        service(
            name,
            "ClusterIP",
            &[&format!("198.18.128.{n}"), &format!("2001:2:0:200::{n}")],
            vec![port(None, "TCP", 80, "8080")],
        )
    };
    let p = &[(None, "TCP", 8080)];
    let z = zone_hint;
    // Zone hints (PreferClose / topology-aware routing), all present: our
    // zone's endpoints only.
    let zones = slices(
        "zones",
        p,
        vec![
            z(ready("198.18.65.11", "node-b"), "zone-a"),
            z(ready("198.18.65.12", "node-b"), "zone-b"),
            z(ready("198.18.66.11", "node-c"), "zone-a"),
        ],
        vec![
            z(ready("2001:2:0:101::11", "node-b"), "zone-a"),
            z(ready("2001:2:0:102::11", "node-c"), "zone-b"),
        ],
    );
    // One ready endpoint without a hint: hints are ignored.
    let incomplete = slices(
        "incomplete",
        p,
        vec![
            z(ready("198.18.65.11", "node-b"), "zone-a"),
            ready("198.18.66.11", "node-c"),
        ],
        vec![
            z(ready("2001:2:0:101::11", "node-b"), "zone-a"),
            ready("2001:2:0:102::11", "node-c"),
        ],
    );
    // All hinted, none for our zone: hints are ignored.
    let elsewhere = slices(
        "elsewhere",
        p,
        vec![
            z(ready("198.18.65.11", "node-b"), "zone-b"),
            z(ready("198.18.66.11", "node-c"), "zone-c"),
        ],
        vec![
            z(ready("2001:2:0:101::11", "node-b"), "zone-b"),
            z(ready("2001:2:0:102::11", "node-c"), "zone-c"),
        ],
    );
    // PreferSameNode: node hints (with zone hints) pick this node's.
    let both = |e, n| z(node_hint(e, n), "zone-a");
    let same_node = slices(
        "same-node",
        p,
        vec![
            both(ready("198.18.64.11", "node-a"), "node-a"),
            both(ready("198.18.65.11", "node-b"), "node-b"),
            both(ready("198.18.66.11", "node-c"), "node-c"),
        ],
        vec![
            both(ready("2001:2:0:100::11", "node-a"), "node-a"),
            both(ready("2001:2:0:101::11", "node-b"), "node-b"),
        ],
    );
    // Node hints, none for this node: fall back to the zone hints.
    let other_nodes = slices(
        "other-nodes",
        p,
        vec![
            both(ready("198.18.65.11", "node-b"), "node-b"),
            z(
                node_hint(ready("198.18.66.11", "node-c"), "node-c"),
                "zone-c",
            ),
        ],
        vec![
            both(ready("2001:2:0:101::11", "node-b"), "node-b"),
            z(
                node_hint(ready("2001:2:0:102::11", "node-c"), "node-c"),
                "zone-c",
            ),
        ],
    );
    let t = table(
        &[
            (svc("zones", 40), zones),
            (svc("incomplete", 41), incomplete),
            (svc("elsewhere", 42), elsewhere),
            (svc("same-node", 43), same_node),
            (svc("other-nodes", 44), other_nodes),
        ],
        cluster_cidrs(),
    );
    run_flows(
        &t,
        &[
            Flow {
                name: "zone hints: our zone's endpoints",
                src: POD4,
                dst: "198.18.128.40:80",
                proto: TCP,
                expect: all(&["198.18.65.11:8080", "198.18.66.11:8080"], Masq::No),
            },
            Flow {
                name: "zone hints: our zone's endpoints, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::40]:80",
                proto: TCP,
                expect: all(&["[2001:2:0:101::11]:8080"], Masq::No),
            },
            Flow {
                name: "incomplete hints: every endpoint",
                src: POD4,
                dst: "198.18.128.41:80",
                proto: TCP,
                expect: all(REMOTE4, Masq::No),
            },
            Flow {
                name: "incomplete hints: every endpoint, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::41]:80",
                proto: TCP,
                expect: all(REMOTE6, Masq::No),
            },
            Flow {
                name: "no hint for our zone: every endpoint",
                src: POD4,
                dst: "198.18.128.42:80",
                proto: TCP,
                expect: all(REMOTE4, Masq::No),
            },
            Flow {
                name: "no hint for our zone: every endpoint, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::42]:80",
                proto: TCP,
                expect: all(REMOTE6, Masq::No),
            },
            Flow {
                name: "PreferSameNode: this node's endpoint",
                src: POD4,
                dst: "198.18.128.43:80",
                proto: TCP,
                expect: all(&["198.18.64.11:8080"], Masq::IfSameLink),
            },
            Flow {
                name: "PreferSameNode: this node's endpoint, IPv6",
                src: EXT6,
                dst: "[2001:2:0:200::43]:80",
                proto: TCP,
                expect: all(&["[2001:2:0:100::11]:8080"], Masq::Yes),
            },
            Flow {
                name: "node hints for other nodes: zone hints",
                src: POD4,
                dst: "198.18.128.44:80",
                proto: TCP,
                expect: all(&["198.18.65.11:8080"], Masq::No),
            },
            Flow {
                name: "node hints for other nodes: zone hints, IPv6",
                src: POD6,
                dst: "[2001:2:0:200::44]:80",
                proto: TCP,
                expect: all(&["[2001:2:0:101::11]:8080"], Masq::No),
            },
        ],
    );
}

#[test]
fn services_without_frontends() {
    let base = || {
        service(
            "skipped",
            "ClusterIP",
            &["198.18.128.50", "2001:2:0:200::50"],
            vec![port(None, "TCP", 80, "8080")],
        )
    };
    let sl = three("skipped", &[(None, "TCP", 8080)]);
    // Control: the same Service, not skipped, has frontends.
    let t = table(&[(base(), sl.clone())], cluster_cidrs());
    assert_eq!(t.services().len(), 2);
    check(
        &t,
        &Flow {
            name: "control: a plain ClusterIP",
            src: POD4,
            dst: "198.18.128.50:80",
            proto: TCP,
            expect: all(THREE4, Masq::IfSameLink),
        },
    );

    let mut headless = base();
    spec(&mut headless).cluster_ip = Some("None".into());
    spec(&mut headless).cluster_ips = Some(vec!["None".into()]);
    let mut external_name = base();
    spec(&mut external_name).type_ = Some("ExternalName".into());
    spec(&mut external_name).external_name = Some("db.example".into());
    let mut proxy_name = base();
    proxy_name.metadata.labels = meta("x", &[(LABEL_SERVICE_PROXY_NAME, "other-proxy")]).labels;
    for (what, s) in [
        ("headless", headless),
        ("ExternalName", external_name),
        ("service-proxy-name", proxy_name),
    ] {
        let t = table(&[(s, sl.clone())], cluster_cidrs());
        assert!(t.services().is_empty(), "{what}");
        for (src, dst) in [(POD4, "198.18.128.50:80"), (POD6, "[2001:2:0:200::50]:80")] {
            check(
                &t,
                &Flow {
                    name: what,
                    src,
                    dst,
                    proto: TCP,
                    expect: Routed,
                },
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Table updates: stale UDP flows are flushed, TCP ones keep their backend.

/// One packet of an existing flow; the backend it reaches, or the verdict.
fn send(
    p: &mut Pipeline,
    t: &ServiceTable,
    st: &WorkerStats,
    src: IpAddr,
    sport: u16,
    dst: &str,
    proto: Proto,
) -> Result<SocketAddr, Verdict> {
    let (in_port, mut fr) = frame(src, sport, sock(dst), proto);
    if proto == Proto::Tcp {
        // An ACK of the established connection, not a new SYN.
        fr = {
            let e = PacketBuilder::ethernet2(
                if in_port == 1 { POD_MAC } else { PEER_MAC },
                if in_port == 1 { PODS_MAC } else { UPLINK_MAC },
            );
            let d = sock(dst);
            let ipb = match (src, d.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => e.ipv4(s.octets(), d.octets(), 64),
                (IpAddr::V6(s), IpAddr::V6(d)) => e.ipv6(s.octets(), d.octets(), 64),
                _ => unreachable!(),
            };
            let mut v = Vec::new();
            ipb.tcp(sport, d.port(), 1001, 64240)
                .ack(1)
                .write(&mut v, b"data")
                .unwrap();
            v
        };
    }
    let mut b = VecBuf::new(&fr);
    let v = p.process(t, st, in_port, &mut b, NOW, false);
    match egress(v).map(|_| parse(b.data()).dst) {
        Some(d) if d.ip() != src => Ok(d),
        _ => Err(v),
    }
}

fn stale_udp_case(src: &str, cluster_ip: &str, eps: [&str; 3]) {
    let n = if ip(cluster_ip).is_ipv6() { "v6" } else { "v4" };
    let vip = &SocketAddr::new(ip(cluster_ip), 53).to_string();
    let svc = |name: &str| {
        service(
            name,
            "ClusterIP",
            &[cluster_ip],
            vec![
                port(Some("dns"), "UDP", 53, "5353"),
                port(Some("http"), "TCP", 53, "8080"),
            ],
        )
    };
    let objects = |e: &[&str]| {
        let ready_eps: Vec<_> = e.iter().map(|a| ready(a, "node-b")).collect();
        let s = slice(
            "stale",
            &format!("stale-{n}"),
            &[(Some("dns"), "UDP", 5353), (Some("http"), "TCP", 8080)],
            ready_eps,
        );
        vec![(svc("stale"), vec![s])]
    };
    let src = ip(src);
    let st = WorkerStats::default();
    let t1 = table_v(&objects(&eps), cluster_cidrs(), 1);
    let mut p = pipeline(&t1);
    let ports: Vec<u16> = (41_000..41_048).collect();
    let mut udp1 = Vec::new();
    let mut tcp1 = Vec::new();
    for &sp in &ports {
        udp1.push(send(&mut p, &t1, &st, src, sp, vip, UDP).expect("UDP lands"));
        let (in_port, fr) = frame(src, sp, sock(vip), TCP);
        let mut b = VecBuf::new(&fr);
        assert!(egress(p.process(&t1, &st, in_port, &mut b, NOW, false)).is_some());
        tcp1.push(parse(b.data()).dst);
    }
    let gone = udp1[0];
    let gone_ip = gone.ip().to_string();
    assert!(udp1.iter().any(|b| *b != gone), "flows spread ({n})");
    // Table 2: the endpoint of the first UDP flow is removed.
    let kept: Vec<&str> = eps.iter().copied().filter(|e| *e != gone_ip).collect();
    assert_eq!(kept.len(), 2);
    let t2 = table_v(&objects(&kept), cluster_cidrs(), 2);
    p.on_table(&t2);
    let flushed_before = st.sessions_flushed.load(Relaxed);
    let mut moved = 0;
    for (i, &sp) in ports.iter().enumerate() {
        let now = send(&mut p, &t2, &st, src, sp, vip, UDP).expect("UDP lands");
        if udp1[i] == gone {
            // Flushed and re-balanced over the endpoints left.
            assert_ne!(
                now, gone,
                "UDP flow {sp} still on the removed endpoint ({n})"
            );
            moved += 1;
        } else {
            assert_eq!(now, udp1[i], "UDP flow {sp} to a kept endpoint moved ({n})");
        }
        // TCP: established connections keep their backend.
        let now = send(&mut p, &t2, &st, src, sp, vip, TCP).expect("TCP lands");
        assert_eq!(now, tcp1[i], "TCP flow {sp} moved ({n})");
    }
    assert!(moved > 0);
    assert_eq!(
        st.sessions_flushed.load(Relaxed) - flushed_before,
        moved,
        "flushed sessions ({n})"
    );
    // Table 3: no endpoints left: the UDP flows are flushed and now rejected.
    let t3 = table_v(&objects(&[]), cluster_cidrs(), 3);
    p.on_table(&t3);
    let rejected_before = st.rejected.load(Relaxed);
    for &sp in &ports {
        let v = send(&mut p, &t3, &st, src, sp, vip, UDP).expect_err("rejected");
        assert!(matches!(v, Verdict::Tx(_)), "{v:?}");
    }
    assert_eq!(
        st.rejected.load(Relaxed) - rejected_before,
        ports.len() as u64,
        "({n})"
    );
}

#[test]
fn stale_udp_flows_are_flushed_tcp_flows_stay() {
    stale_udp_case(
        POD4,
        "198.18.128.60",
        ["198.18.65.21", "198.18.65.22", "198.18.65.23"],
    );
    stale_udp_case(
        POD6,
        "2001:2:0:200::60",
        ["2001:2:0:101::21", "2001:2:0:101::22", "2001:2:0:101::23"],
    );
}

#[test]
fn short_circuited_udp_flows_survive_unrelated_table_changes() {
    // A pod's UDP flows to an eTP:Local LB IP reach remote endpoints (not
    // in the frontend's local set); a new table that keeps them must not
    // flush them, and one that removes one flushes only its flows.
    let objects = |eps4: Vec<Endpoint>| {
        [etp_local(
            "sc",
            23,
            eps4,
            vec![ready("2001:2:0:101::12", "node-b")],
        )]
    };
    let eps = |with_c: bool| {
        let mut v = vec![
            ready("198.18.64.12", "node-a"),
            ready("198.18.65.12", "node-b"),
        ];
        if with_c {
            v.push(ready("198.18.66.12", "node-c"));
        }
        v
    };
    let st = WorkerStats::default();
    let t1 = table_v(&objects(eps(true)), cluster_cidrs(), 1);
    let mut p = pipeline(&t1);
    let src = ip(POD4);
    let vip = "198.18.130.23:53";
    let ports: Vec<u16> = (42_000..42_048).collect();
    let first: Vec<_> = ports
        .iter()
        .map(|&sp| send(&mut p, &t1, &st, src, sp, vip, UDP).expect("lands"))
        .collect();
    let remote_b = sock("198.18.65.12:5353");
    let remote_c = sock("198.18.66.12:5353");
    assert!(first.contains(&remote_b) && first.contains(&remote_c));
    // Same endpoints, new table: nothing moves, nothing is flushed.
    let t2 = table_v(&objects(eps(true)), cluster_cidrs(), 2);
    p.on_table(&t2);
    for (i, &sp) in ports.iter().enumerate() {
        assert_eq!(send(&mut p, &t2, &st, src, sp, vip, UDP), Ok(first[i]));
    }
    assert_eq!(st.sessions_flushed.load(Relaxed), 0);
    // node-c's endpoint goes: only its flows are flushed.
    let t3 = table_v(&objects(eps(false)), cluster_cidrs(), 3);
    p.on_table(&t3);
    for (i, &sp) in ports.iter().enumerate() {
        let now = send(&mut p, &t3, &st, src, sp, vip, UDP).expect("lands");
        if first[i] == remote_c {
            assert_ne!(now, remote_c);
        } else {
            assert_eq!(now, first[i]);
        }
    }
    let gone = first.iter().filter(|b| **b == remote_c).count() as u64;
    assert_eq!(st.sessions_flushed.load(Relaxed), gone);
}
