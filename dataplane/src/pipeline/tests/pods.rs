//! Pods behind the node's kernel: the table routes the node's pod CIDR
//! (198.18.64.0/24, 2001:2:0:64::/64) onto the exception port (port 2),
//! local pod A (198.18.64.2) is a client, local pod B (198.18.64.3) a
//! backend of VIP 198.18.100.5 and of NodePort 30080; the backends of
//! VIP4 (198.18.1.11..13, port 1) stand for pods on other nodes. The
//! exception SNAT addresses are 198.18.0.250 and 2001:2::fa.
use super::*;

const POD_A: [u8; 4] = [198, 18, 64, 2];
const POD_B: [u8; 4] = [198, 18, 64, 3];
const REMOTE_POD: [u8; 4] = [198, 18, 65, 2];
const LOCAL_VIP: [u8; 4] = [198, 18, 100, 5];
const SNAT4: [u8; 4] = [198, 18, 0, 250];
const NP: u16 = 30080;

fn pod_a6() -> Ipv6Addr {
    v6("2001:2:0:64::2")
}
fn pod_b6() -> Ipv6Addr {
    v6("2001:2:0:64::3")
}
fn local_vip6() -> Ipv6Addr {
    v6("2001:2::105")
}
fn snat6() -> Ipv6Addr {
    v6("2001:2::fa")
}

fn pods_table() -> ServiceTable {
    let mut s = spec();
    let b = |port| vec![sa(ip4(POD_B), port)];
    s.services.push(svc(
        "pods/local:http",
        ip4(LOCAL_VIP),
        80,
        Proto::Tcp,
        b(8080),
    ));
    s.services.push(svc(
        "pods/local:dns",
        ip4(LOCAL_VIP),
        53,
        Proto::Udp,
        b(5353),
    ));
    s.services.push(svc(
        "pods/local6:http",
        ip6(local_vip6()),
        80,
        Proto::Tcp,
        vec![sa(ip6(pod_b6()), 8080)],
    ));
    let mut np = svc("pods/local:np", ip4(NODE0), NP, Proto::Tcp, b(8080));
    np.masquerade = true;
    np.external = true;
    s.services.push(np);
    for (prefix, len) in [
        (Addr::v4([198, 18, 64, 0]), 24),
        (Addr::from(v6("2001:2:0:64::")), 64),
    ] {
        s.routes.push(crate::table::Route {
            prefix,
            len,
            port: KERNEL,
            via: None,
        });
    }
    // Pods of the other node are reached through it (198.18.0.3).
    s.routes.push(crate::table::Route {
        prefix: Addr::v4([198, 18, 65, 0]),
        len: 24,
        port: 0,
        via: Some(Addr::v4([198, 18, 0, 3])),
    });
    s.neighbors.push(StaticNeighbor {
        addr: Addr::v4([198, 18, 0, 3]),
        mac: MacAddr(OTHER_MAC),
        port: 0,
    });
    ServiceTable::new(s, 1)
}

fn pods_workers(t: &ServiceTable, n: u16, snat: bool) -> Vec<Pipeline> {
    let mut w = exception_workers(t, n);
    for p in &mut w {
        let mut x = Exception::new(0, KERNEL);
        if snat {
            x.snat_v4 = Some(Addr::v4(SNAT4));
            x.snat_v6 = Some(Addr::from(snat6()));
        }
        p.set_exception(Some(x));
    }
    w
}

fn pods_setup() -> (Pipeline, ServiceTable, WorkerStats) {
    let t = pods_table();
    let p = pods_workers(&t, 1, true).remove(0);
    (p, t, WorkerStats::default())
}

/// A TCP segment the kernel sends on the exception port (from its own MAC,
/// the uplink's, to `dmac`).
#[allow(clippy::too_many_arguments)]
fn k_tcp(dmac: [u8; 6], src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    tcp_frame(P0_MAC, dmac, src, dst, sport, dport, flags, 1, 1, 64, &[])
}

/// Runs `f` on worker `at`, then on the worker it is handed to.
fn run_owned(
    w: &mut [Pipeline],
    t: &ServiceTable,
    st: &WorkerStats,
    at: usize,
    port: u16,
    f: &[u8],
) -> (Verdict, Vec<u8>) {
    let (v, out) = run(&mut w[at], t, st, port, f, NOW, false);
    match v {
        Verdict::HandOff(o) => run(&mut w[usize::from(o)], t, st, port, f, NOW, true),
        _ => (v, out),
    }
}

#[test]
fn a_pod_reaches_a_remote_backend_and_the_reply_goes_to_the_kernel() {
    let (mut p, t, st) = pods_setup();
    // The kernel routes the Service CIDR onto the exception port.
    let syn = k_tcp(P0_MAC, ip4(POD_A), ip4(VIP4), 41000, 80, SYN);
    let (v, out) = run(&mut p, &t, &st, KERNEL, &syn, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    assert_eq!(
        (o.src, o.sport),
        (Some(ip4(POD_A)), 41000),
        "not masqueraded"
    );
    let bi = backend_index(o.dst.unwrap());
    // The remote pod's answer arrives on the uplink side and is delivered
    // to the kernel (which routes it to pod A), translated.
    let back = tcp_frame(
        backend_mac(bi),
        P1_MAC,
        o.dst.unwrap(),
        ip4(POD_A),
        8080,
        41000,
        SYN | ACK,
        5,
        2,
        64,
        &[],
    );
    for round in 0..2 {
        let (v, out) = run(&mut p, &t, &st, 1, &back, NOW + round, false);
        assert_eq!(v, Verdict::ToKernel(KERNEL), "round {round}");
        let r = parse(&out);
        assert_eq!((r.dst_mac, r.src_mac), (P0_MAC, P0_MAC));
        assert_eq!((r.src, r.sport), (Some(ip4(VIP4)), 80));
        assert_eq!((r.dst, r.dport), (Some(ip4(POD_A)), 41000));
        assert_eq!(r.ttl, 63, "a routing hop");
        // The pod's next segment takes the fast path; the replies keep
        // going to the kernel.
        let ack = k_tcp(P0_MAC, ip4(POD_A), ip4(VIP4), 41000, 80, ACK);
        let (v, _) = run(&mut p, &t, &st, KERNEL, &ack, NOW + round, false);
        assert_eq!(v, Verdict::Tx(1));
    }
    assert_eq!(stat(&st.fast_path), 2);
    assert_eq!(stat(&st.exception_to_kernel), 2);
    assert_eq!(stat(&st.exception_from_kernel), 0);
    assert_eq!(st.total_drops(), 0);
}

#[test]
fn a_pod_reaching_a_local_pod_is_masqueraded_to_the_exception_snat_address() {
    let (mut p, t, st) = pods_setup();
    // The kernel resolves the SNAT address on the exception port: answered
    // with its own MAC, not learned.
    let req = arp_frame(1, [0xff; 6], P0_MAC, NODE0, [0; 6], SNAT4);
    let (v, out) = run(&mut p, &t, &st, KERNEL, &req, NOW, false);
    assert_eq!(v, Verdict::Tx(KERNEL));
    assert_eq!(arp_fields(&out), (2, P0_MAC, SNAT4, P0_MAC, NODE0));
    assert_eq!(p.take_learned().count(), 0);
    // From the uplink nobody gets an answer for it.
    let req = arp_frame(1, [0xff; 6], CLIENT_MAC, CLIENT4, [0; 6], SNAT4);
    assert_eq!(
        run(&mut p, &t, &st, 0, &req, NOW, false).0,
        Verdict::ToKernel(KERNEL)
    );
    // Pod A, the node itself and pod B (reaching itself) to the Service
    // whose backend is pod B: each delivered to the kernel from the SNAT
    // address, the reply from the kernel translated back to the client.
    for (client, sport) in [(POD_A, 41000u16), (NODE0, 42000), (POD_B, 43000)] {
        let syn = k_tcp(P0_MAC, ip4(client), ip4(LOCAL_VIP), sport, 80, SYN);
        let (v, out) = run(&mut p, &t, &st, KERNEL, &syn, NOW, false);
        assert_eq!(v, Verdict::ToKernel(KERNEL), "from {client:?}");
        let o = parse(&out);
        assert_eq!((o.dst_mac, o.src_mac), (P0_MAC, P0_MAC));
        assert_eq!((o.dst, o.dport), (Some(ip4(POD_B)), 8080));
        assert_eq!(o.src, Some(ip4(SNAT4)), "from {client:?}");
        assert_eq!(o.ttl, 63);
        let back = k_tcp(P0_MAC, ip4(POD_B), ip4(SNAT4), 8080, o.sport, SYN | ACK);
        let (v, out) = run(&mut p, &t, &st, KERNEL, &back, NOW, false);
        assert_eq!(v, Verdict::ToKernel(KERNEL), "reply to {client:?}");
        let r = parse(&out);
        assert_eq!((r.src, r.sport), (Some(ip4(LOCAL_VIP)), 80));
        assert_eq!((r.dst, r.dport), (Some(ip4(client)), sport));
    }
    assert_eq!(stat(&st.sessions_masqueraded), 3);
    assert_eq!(stat(&st.exception_from_kernel), 0);
    assert_eq!(st.total_drops(), 0);
    // Anything else to the SNAT address (no session) is dropped, counted,
    // not routed out of the uplink.
    let stray = k_tcp(P0_MAC, ip4(POD_B), ip4(SNAT4), 8080, 33333, ACK);
    let ping = echo_frame(P0_MAC, P0_MAC, ip4(NODE0), ip4(SNAT4), 1, 1, 64);
    for f in [stray, ping] {
        let (v, _) = run(&mut p, &t, &st, KERNEL, &f, NOW, false);
        assert_eq!(v, Verdict::Drop(DropReason::LocalUnhandled));
    }
    assert_eq!(p.take_solicits().count(), 0);
    let st = WorkerStats::default();
    // Without a SNAT address such flows cannot work: dropped, counted.
    let mut p = pods_workers(&t, 1, false).remove(0);
    let syn = k_tcp(P0_MAC, ip4(POD_A), ip4(LOCAL_VIP), 41001, 80, SYN);
    let (v, _) = run(&mut p, &t, &st, KERNEL, &syn, NOW, false);
    assert_eq!(v, Verdict::Drop(DropReason::NoExceptionSnat));
}

#[test]
fn a_pod_reaching_a_local_pod_over_ipv6_is_masqueraded_too() {
    let (mut p, t, st) = pods_setup();
    let ns = ndp_frame(
        P0_MAC,
        [0x33, 0x33, 0xff, 0, 0, 0xfa],
        node6_0(),
        snm(snat6()),
        135,
        0,
        snat6(),
        Some((1, P0_MAC)),
        255,
    );
    let (v, out) = run(&mut p, &t, &st, KERNEL, &ns, NOW, false);
    assert_eq!(v, Verdict::Tx(KERNEL));
    let o = parse(&out);
    assert_eq!(o.icmp, Some((136, 0)));
    assert_eq!(o.src, Some(ip6(snat6())));
    assert_eq!(p.take_learned().count(), 0);
    let syn = k_tcp(P0_MAC, ip6(pod_a6()), ip6(local_vip6()), 41000, 80, SYN);
    let (v, out) = run(&mut p, &t, &st, KERNEL, &syn, NOW, false);
    assert_eq!(v, Verdict::ToKernel(KERNEL));
    let o = parse(&out);
    assert_eq!((o.src, o.dst), (Some(ip6(snat6())), Some(ip6(pod_b6()))));
    let back = k_tcp(
        P0_MAC,
        ip6(pod_b6()),
        ip6(snat6()),
        8080,
        o.sport,
        SYN | ACK,
    );
    let (v, out) = run(&mut p, &t, &st, KERNEL, &back, NOW, false);
    assert_eq!(v, Verdict::ToKernel(KERNEL));
    let r = parse(&out);
    assert_eq!((r.src, r.sport), (Some(ip6(local_vip6())), 80));
    assert_eq!((r.dst, r.dport), (Some(ip6(pod_a6())), 41000));
    assert_eq!(st.total_drops(), 0);
}

#[test]
fn an_outside_client_reaches_a_local_pod_and_the_kernels_reply_is_translated() {
    let (mut p, t, st) = pods_setup();
    // NodePort (masqueraded): to the kernel from the SNAT address, so the
    // pod's answer comes back through the exception port.
    let syn = c_tcp(ip4(NODE0), 40000, NP, SYN, 1, 0);
    let (v, out) = run(&mut p, &t, &st, 0, &syn, NOW, false);
    assert_eq!(v, Verdict::ToKernel(KERNEL));
    let o = parse(&out);
    assert_eq!((o.src, o.dst), (Some(ip4(SNAT4)), Some(ip4(POD_B))));
    let back = k_tcp(P0_MAC, ip4(POD_B), ip4(SNAT4), 8080, o.sport, SYN | ACK);
    let (v, out) = run(&mut p, &t, &st, KERNEL, &back, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let r = parse(&out);
    assert_eq!(r.dst_mac, CLIENT_MAC);
    assert_eq!((r.src, r.sport), (Some(ip4(NODE0)), NP));
    assert_eq!((r.dst, r.dport), (Some(ip4(CLIENT4)), 40000));
    // A ClusterIP reached from outside without masquerade: the pod sees
    // the client, and the kernel sends the answer toward the client's MAC
    // (its route to the client is the exception interface); the dataplane
    // takes it all the same and translates it.
    let syn = c_tcp(ip4(LOCAL_VIP), 40001, 80, SYN, 1, 0);
    let (v, out) = run(&mut p, &t, &st, 0, &syn, NOW, false);
    assert_eq!(v, Verdict::ToKernel(KERNEL));
    let o = parse(&out);
    assert_eq!((o.src, o.dst), (Some(ip4(CLIENT4)), Some(ip4(POD_B))));
    let back = k_tcp(CLIENT_MAC, ip4(POD_B), ip4(CLIENT4), 8080, 40001, SYN | ACK);
    let (v, out) = run(&mut p, &t, &st, KERNEL, &back, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let r = parse(&out);
    assert_eq!((r.src, r.sport), (Some(ip4(LOCAL_VIP)), 80));
    assert_eq!((r.dst, r.dport), (Some(ip4(CLIENT4)), 40001));
    assert_eq!(stat(&st.exception_from_kernel), 0);
    assert_eq!(st.total_drops(), 0);
}

#[test]
fn with_several_workers_a_local_pods_reply_reaches_the_sessions_owner() {
    let t = pods_table();
    let st = WorkerStats::default();
    let mut w = pods_workers(&t, 2, true);
    for i in 0..32u16 {
        let cport = 40000 + i * 7;
        // An outside client, not masqueraded (ClusterIP) ...
        let syn = c_tcp(ip4(LOCAL_VIP), cport, 80, SYN, 1, 0);
        let (v, _) = run_owned(&mut w, &t, &st, usize::from(i % 2), 0, &syn);
        assert_eq!(v, Verdict::ToKernel(KERNEL));
        // ... whose answer the TAP gives to either worker.
        let back = k_tcp(CLIENT_MAC, ip4(POD_B), ip4(CLIENT4), 8080, cport, SYN | ACK);
        let (v, out) = run_owned(&mut w, &t, &st, usize::from(1 - i % 2), KERNEL, &back);
        assert_eq!(v, Verdict::Tx(0), "client port {cport}");
        assert_eq!(parse(&out).src, Some(ip4(LOCAL_VIP)));
        // A pod's own connection: masqueraded, the reply steered by the
        // SNAT port.
        let syn = k_tcp(P0_MAC, ip4(POD_A), ip4(LOCAL_VIP), cport, 80, SYN);
        let (v, out) = run_owned(&mut w, &t, &st, usize::from(i % 2), KERNEL, &syn);
        assert_eq!(v, Verdict::ToKernel(KERNEL));
        let o = parse(&out);
        let back = k_tcp(P0_MAC, ip4(POD_B), ip4(SNAT4), 8080, o.sport, SYN | ACK);
        let (v, out) = run_owned(&mut w, &t, &st, usize::from(1 - i % 2), KERNEL, &back);
        assert_eq!(v, Verdict::ToKernel(KERNEL));
        assert_eq!(parse(&out).dst, Some(ip4(POD_A)));
        // A local pod's traffic that is not a Service's leaves unchanged,
        // from whichever worker owns its flow.
        let other = k_tcp(CLIENT_MAC, ip4(POD_A), ip4(CLIENT4), cport, 22, SYN);
        let (v, out) = run_owned(&mut w, &t, &st, usize::from(i % 2), KERNEL, &other);
        assert_eq!((v, out), (Verdict::FromKernel(0), other));
    }
    assert_eq!(st.total_drops(), 0);
}

#[test]
fn pod_to_pod_traffic_between_nodes_is_routed_untranslated() {
    let (mut p, t, st) = pods_setup();
    // From a pod of the other node to pod A: routed to the kernel.
    let f = tcp_frame(
        OTHER_MAC,
        P0_MAC,
        ip4(REMOTE_POD),
        ip4(POD_A),
        40000,
        8080,
        SYN,
        1,
        0,
        64,
        &[],
    );
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::ToKernel(KERNEL));
    let o = parse(&out);
    assert_eq!(
        (o.src, o.dst, o.ttl),
        (Some(ip4(REMOTE_POD)), Some(ip4(POD_A)), 63)
    );
    let f = echo_frame(OTHER_MAC, P0_MAC, ip4(REMOTE_POD), ip4(POD_A), 1, 1, 64);
    assert_eq!(
        run(&mut p, &t, &st, 0, &f, NOW, false).0,
        Verdict::ToKernel(KERNEL)
    );
    // Pod A's answer: the kernel routed it already; out of the uplink as is.
    let f = k_tcp(
        OTHER_MAC,
        ip4(POD_A),
        ip4(REMOTE_POD),
        8080,
        40000,
        SYN | ACK,
    );
    let (v, out) = run(&mut p, &t, &st, KERNEL, &f, NOW, false);
    assert_eq!((v, out), (Verdict::FromKernel(0), f));
    assert_eq!(p.sessions.len(), 0);
    assert_eq!(st.total_drops(), 0);
}

#[test]
fn icmp_errors_from_a_local_pod_to_the_snat_address_are_translated() {
    let (mut p, t, st) = pods_setup();
    let q = udp_frame(
        P0_MAC,
        P0_MAC,
        ip4(POD_A),
        ip4(LOCAL_VIP),
        41000,
        53,
        64,
        b"query",
    );
    let (v, out) = run(&mut p, &t, &st, KERNEL, &q, NOW, false);
    assert_eq!(v, Verdict::ToKernel(KERNEL));
    let o = parse(&out);
    assert_eq!((o.src, o.dst), (Some(ip4(SNAT4)), Some(ip4(POD_B))));
    // Pod B has nothing on 5353: port unreachable to the SNAT address,
    // quoting the translated datagram.
    let mut quoted = Vec::new();
    PacketBuilder::ipv4(SNAT4, POD_B, 63)
        .udp(o.sport, 5353)
        .write(&mut quoted, b"query")
        .unwrap();
    let mut f = Vec::new();
    ip_step(P0_MAC, P0_MAC, ip4(POD_B), ip4(SNAT4), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut f, &quoted)
        .unwrap();
    let (v, out) = run(&mut p, &t, &st, KERNEL, &f, NOW, false);
    assert_eq!(v, Verdict::ToKernel(KERNEL));
    let e = parse(&out);
    assert_eq!(e.icmp, Some((3, 3)));
    assert_eq!((e.src, e.dst), (Some(ip4(LOCAL_VIP)), Some(ip4(POD_A))));
    // The quoted datagram is pod A's own: POD_A:41000 -> VIP:53.
    let inner = &e.payload;
    assert_eq!(&inner[12..16], &POD_A);
    assert_eq!(&inner[16..20], &LOCAL_VIP);
    assert_eq!(u16::from_be_bytes([inner[20], inner[21]]), 41000);
    assert_eq!(u16::from_be_bytes([inner[22], inner[23]]), 53);
    assert_eq!(stat(&st.icmp_errors_translated), 1);
    assert_eq!(st.total_drops(), 0);
}

/// Every pod scenario above, step by step (each frame built from what the
/// previous ones produced): verdicts, bytes and counters.
fn pod_scenarios(p: &mut Pipeline, t: &ServiceTable, st: &WorkerStats) -> Vec<(Verdict, Vec<u8>)> {
    let mut log = Vec::new();
    let mut step = |p: &mut Pipeline, port: u16, f: &[u8], now: u64| {
        let (v, out) = run(p, t, st, port, f, now, false);
        log.push((v, out.clone()));
        out
    };
    for round in 0..3u64 {
        let now = NOW + round * 10;
        // A pod to remote backends: both directions, several segments.
        let syn = k_tcp(
            P0_MAC,
            ip4(POD_A),
            ip4(VIP4),
            41000,
            80,
            if round == 0 { SYN } else { ACK },
        );
        let o = parse(&step(p, KERNEL, &syn, now));
        let back = tcp_frame(
            backend_mac(backend_index(o.dst.unwrap())),
            P1_MAC,
            o.dst.unwrap(),
            ip4(POD_A),
            8080,
            41000,
            ACK,
            5,
            2,
            64,
            b"data",
        );
        step(p, 1, &back, now + 1);
        let q = udp_frame(P0_MAC, P0_MAC, ip4(POD_A), ip4(VIP4), 41001, 53, 64, b"q");
        let o = parse(&step(p, KERNEL, &q, now + 2));
        let r = udp_frame(
            backend_mac(backend_index(o.dst.unwrap())),
            P1_MAC,
            o.dst.unwrap(),
            ip4(POD_A),
            5353,
            41001,
            64,
            b"r",
        );
        step(p, 1, &r, now + 3);
        // A pod and an outside client to the local pod.
        for (port, f) in [
            (
                KERNEL,
                udp_frame(
                    P0_MAC,
                    P0_MAC,
                    ip4(POD_A),
                    ip4(LOCAL_VIP),
                    41002,
                    53,
                    64,
                    b"q",
                ),
            ),
            (
                0,
                udp_frame(
                    CLIENT_MAC,
                    P0_MAC,
                    ip4(CLIENT4),
                    ip4(LOCAL_VIP),
                    41003,
                    53,
                    64,
                    b"q",
                ),
            ),
        ] {
            let o = parse(&step(p, port, &f, now + 4));
            let dmac = if o.src == Some(ip4(CLIENT4)) {
                CLIENT_MAC
            } else {
                P0_MAC
            };
            let r = udp_frame(
                P0_MAC,
                dmac,
                ip4(POD_B),
                o.src.unwrap(),
                5353,
                o.sport,
                64,
                b"r",
            );
            step(p, KERNEL, &r, now + 5);
        }
        // Pod-to-pod between nodes.
        let f = udp_frame(
            OTHER_MAC,
            P0_MAC,
            ip4(REMOTE_POD),
            ip4(POD_A),
            9,
            9,
            64,
            b"x",
        );
        step(p, 0, &f, now + 6);
    }
    log
}

#[test]
fn pod_traffic_is_the_same_on_the_fast_and_the_general_path() {
    let t = pods_table();
    let (sf, ss) = (WorkerStats::default(), WorkerStats::default());
    let mut fast = pods_workers(&t, 1, true).remove(0);
    let mut slow = pods_workers(&t, 1, true).remove(0);
    slow.set_fast_path(false);
    let lf = pod_scenarios(&mut fast, &t, &sf);
    let ls = pod_scenarios(&mut slow, &t, &ss);
    assert_eq!(lf, ls);
    assert!(stat(&sf.fast_path) > 0, "some packets took the fast path");
    let counters = |s: &WorkerStats| {
        [
            stat(&s.nat_forward),
            stat(&s.nat_reverse),
            stat(&s.sessions_created),
            stat(&s.exception_to_kernel),
            stat(&s.exception_from_kernel),
            stat(&s.routed),
            s.total_drops(),
        ]
    };
    assert_eq!(counters(&sf), counters(&ss));
    assert_eq!(ss.total_drops(), 0);
}
