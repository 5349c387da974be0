//! End-to-end test of the DPDK dataplane over ring-backed ports.
//!
//! Two `net_ring` ports (2 rx + 2 tx rings each) are driven by two worker
//! lcores exactly as the binary drives real NICs: `worker::start` looks the
//! ports up by name, configures two queues per port, and launches one worker
//! per lcore. The test thread plays the wire: it writes frames into real
//! mbufs, enqueues them on a port's rx rings (the ring index emulates RSS),
//! and reads what the workers transmit from the tx rings.
//!
//! EAL can be initialised once per process, so there is a single `#[test]`
//! running every scenario in sequence. It needs root (EAL, `--no-huge`).
//! Run: `cargo test --test dataplane_ring -- --nocapture`.
use control::config::Config;
use control::publisher::Publisher;
use dataplane::dpdk::{Eal, Mempool, Port};
use dataplane::stats::DropReason;
use dataplane::worker;
use etherparse::Ethernet2Header;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod ring;
use ring::*;

fn yaml(backends: &[usize]) -> String {
    yaml_with(backends, &[])
}

/// [`yaml`] with `spare` (addresses no flow of the test uses) added to the
/// UDP Service's backends.
fn yaml_with(backends: &[usize], spare: &[[u8; 4]]) -> String {
    let tcp: Vec<String> = backends
        .iter()
        .map(|&i| {
            format!(
                "\"{}:{TCP_BACKEND_PORT}\"",
                std::net::Ipv4Addr::from(BACKENDS[i])
            )
        })
        .collect();
    let udp: Vec<String> = backends
        .iter()
        .map(|&i| BACKENDS[i])
        .chain(spare.iter().copied())
        .map(|a| format!("\"{}:{UDP_BACKEND_PORT}\"", std::net::Ipv4Addr::from(a)))
        .collect();
    format!(
        r#"
eal:
  lcores: "0@(0-1),1@(0-1),2@(0-1)"
  no_huge: true
  memory_mb: 256
  args: ["--log-level", "*:warning"]
ports:
  - device: net_ring_{p0}
    addresses: ["198.18.0.1/24"]
  - device: net_ring_{p1}
    addresses: ["198.18.1.1/24"]
neighbors:
  - {{address: 198.18.0.2, mac: "02:00:00:00:00:aa", port: 0}}
  - {{address: 198.18.1.11, mac: "02:00:00:00:01:11", port: 1}}
  - {{address: 198.18.1.12, mac: "02:00:00:00:01:12", port: 1}}
  - {{address: 198.18.1.13, mac: "02:00:00:00:01:13", port: 1}}
workers:
  sessions: 4096
  idle_sleep_us: 20
services:
  - name: default/web:http
    vip: 198.18.100.1
    port: 80
    protocol: TCP
    backends: [{tcp}]
  - name: default/dns:dns
    vip: 198.18.100.1
    port: 53
    protocol: UDP
    backends: [{udp}]
"#,
        p0 = PORT_NAMES[0],
        p1 = PORT_NAMES[1],
        tcp = tcp.join(", "),
        udp = udp.join(", "),
    )
}

#[test]
fn dataplane_over_ring_ports() {
    let t0 = Instant::now();

    // ---- configuration through the YAML path ----
    let cfg = Config::parse(&yaml(&[0, 1, 2]), "dataplane_ring.yaml").expect("config");
    let args = cfg.eal_args();
    let mut want_args: Vec<String> = [
        "--lcores",
        "0@(0-1),1@(0-1),2@(0-1)",
        "--no-huge",
        "-m",
        "256",
        "--no-shconf",
        "--no-pci",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want_args.extend(["--log-level".to_string(), "*:warning".to_string()]);
    assert_eq!(args, want_args);
    assert!(
        !args.iter().any(|a| a == "--in-memory"),
        "--in-memory must not be combined with --no-huge"
    );

    let eal = Eal::init(&args).expect("EAL init (run as root)");
    assert!(matches!(
        Eal::init(&args),
        Err(dataplane::dpdk::Error::AlreadyInitialised)
    ));
    let lcores = eal.worker_lcores();
    assert_eq!(lcores, vec![1, 2], "two worker lcores");
    println!("EAL up ({}) in {:?}", Eal::version(), t0.elapsed());

    let pool = Mempool::new("test_pool", 8191, 0, 2176, 0).expect("test mempool");
    let wire: Vec<WirePort> = PORT_NAMES.iter().map(|n| WirePort::new(n)).collect();
    // rte_eth_from_rings(name) registers the device as "net_ring_<name>":
    // that is the name worker::start (Port::by_name) needs.
    for (w, n) in wire.iter().zip(PORT_NAMES) {
        assert_eq!(
            Port::by_name(&format!("net_ring_{n}"))
                .expect("net_ring_ name")
                .id(),
            w.port.id()
        );
        assert!(
            Port::by_name(n).is_err(),
            "the bare name is not the device name"
        );
    }
    assert_eq!(
        wire[0].port.caps().unwrap().max_rx_queues as usize,
        N_WORKERS
    );

    let dp = cfg.dataplane(lcores);
    assert_eq!(
        dp.ports
            .iter()
            .map(|p| p.device.as_str())
            .collect::<Vec<_>>(),
        ["net_ring_dkp_t0", "net_ring_dkp_t1"]
    );
    assert_eq!((dp.pipeline.sessions, dp.idle_sleep_us), (4096, 20));
    assert_eq!(dp.lcores, [1, 2]);

    let mut publisher = Publisher::new(N_WORKERS);
    let mut guard = Guard {
        running: Some(
            worker::start(&eal, &dp, publisher.rcu()).expect("worker::start over ring ports"),
        ),
        eal: &eal,
    };
    let running = guard.running.as_ref().unwrap();
    assert_eq!(running.drivers, ["net_ring", "net_ring"]);
    assert_eq!(
        running.port_ids(),
        wire.iter().map(|w| w.port.id()).collect::<Vec<_>>()
    );
    let mac0 = running.port_info[0].mac.0;
    let mac1 = running.port_info[1].mac.0;
    // The ring PMD gives every port the all-zero MAC (its private data is
    // zeroed and it has no mac_addr_set op); the port identity is checked by
    // which tx rings frames come out of.
    for (i, w) in wire.iter().enumerate() {
        assert_eq!(w.port.mac().unwrap().0, running.port_info[i].mac.0);
    }
    println!(
        "dataplane started in {:?} (port MACs {mac0:02x?} {mac1:02x?})",
        t0.elapsed()
    );

    let v1 = publisher.publish(cfg.table_spec().unwrap());
    wait_for_table(running, v1);
    let (p0, p1) = (&wire[0], &wire[1]);

    // ---- 1. TCP: 200 SYNs over both rx queues, SYN-ACKs back, cross-core hand-off ----
    let t = Instant::now();
    const N_SYN: u16 = 200;
    let sport = |i: u16| 10_000 + i;
    for i in 0..N_SYN {
        let f = tcp_frame(
            CLIENT_MAC,
            mac0,
            (CLIENT, sport(i)),
            (VIP, 80),
            1000 + u32::from(i),
            true,
            None,
        );
        inject(&pool, p0, usize::from(i) % 2, &f);
    }
    let out = expect_frames(running, p1, usize::from(N_SYN), "SYNs out of port 1");
    let mut backend_of: HashMap<u16, usize> = HashMap::new();
    let mut per_backend = [0usize; 3];
    for (q, f) in &out {
        let o = parse_out(f);
        let t = tcp_of(&o);
        let cport = t.source_port;
        let b = check_forward(&o, mac1, cport, true);
        assert!(t.syn && !t.ack && !t.rst && !t.fin, "SYN flags kept");
        assert_eq!(
            t.sequence_number,
            1000 + u32::from(cport - 10_000),
            "sequence number kept"
        );
        assert_eq!(
            *q,
            owner(CLIENT, cport),
            "transmitted by the flow's owner worker"
        );
        assert!(
            backend_of.insert(cport, b).is_none(),
            "duplicate output for client port {cport}"
        );
        per_backend[b] += 1;
    }
    assert_eq!(backend_of.len(), usize::from(N_SYN));
    for (b, n) in per_backend.iter().enumerate() {
        let share = *n as f64 / f64::from(N_SYN);
        assert!(
            (0.20..=0.47).contains(&share),
            "backend {b} got {n}/{N_SYN} flows: {per_backend:?}"
        );
    }
    assert_eq!(sum(running, |s| &s.sessions_created), u64::from(N_SYN));
    let owned_by_0 = (0..N_SYN).filter(|&i| owner(CLIENT, sport(i)) == 0).count();
    println!(
        "scenario 1: per-backend {per_backend:?}; {owned_by_0}/{N_SYN} flows owned by worker 0"
    );

    // SYN-ACKs from the backends, half on the owner's queue and half on the other one.
    let mut non_owner = 0;
    for i in 0..N_SYN {
        let cport = sport(i);
        let b = backend_of[&cport];
        let o = owner(CLIENT, cport);
        let q = if i % 2 == 0 { o } else { 1 - o };
        non_owner += usize::from(q != o);
        let f = tcp_frame(
            BACKEND_MACS[b],
            mac1,
            (BACKENDS[b], TCP_BACKEND_PORT),
            (CLIENT, cport),
            50_000 + u32::from(i),
            true,
            Some(1001 + u32::from(i)),
        );
        inject(&pool, p1, q, &f);
    }
    assert!(non_owner > 0);
    let out = expect_frames(running, p0, usize::from(N_SYN), "SYN-ACKs out of port 0");
    let mut seen = HashSet::new();
    for (q, f) in &out {
        let o = parse_out(f);
        let t = tcp_of(&o);
        let cport = t.destination_port;
        check_reply(&o, mac0, cport, 80);
        assert!(t.syn && t.ack, "SYN-ACK flags kept");
        let i = u32::from(cport - 10_000);
        assert_eq!(
            (t.sequence_number, t.acknowledgment_number),
            (50_000 + i, 1001 + i)
        );
        assert_eq!(
            *q,
            owner(CLIENT, cport),
            "reply transmitted by the flow's owner worker"
        );
        assert!(seen.insert(cport), "duplicate reply for {cport}");
    }
    let ho_out = sum(running, |s| &s.handoff_out);
    let ho_in = sum(running, |s| &s.handoff_in);
    assert!(
        ho_out > 0,
        "no cross-core hand-off happened; {}",
        stats_summary(running)
    );
    assert_eq!(ho_out, ho_in, "every handed-off packet arrived");
    assert_eq!(sum(running, |s| &s.nat_forward), u64::from(N_SYN));
    assert_eq!(sum(running, |s| &s.nat_reverse), u64::from(N_SYN));
    assert_eq!(total_drops(running), 0, "{}", stats_summary(running));
    println!(
        "scenario 1 (TCP, {N_SYN} flows, hand-offs {ho_out}, {non_owner} replies on the non-owner queue) ok in {:?}",
        t.elapsed()
    );

    // ---- 2. UDP request/response ----
    let t = Instant::now();
    const N_UDP: u16 = 40;
    let uport = |i: u16| 20_000 + i;
    for i in 0..N_UDP {
        let f = udp_frame(
            CLIENT_MAC,
            mac0,
            (CLIENT, uport(i)),
            (VIP, 53),
            format!("query-{i}").as_bytes(),
        );
        inject(&pool, p0, usize::from(i) % 2, &f);
    }
    let out = expect_frames(
        running,
        p1,
        usize::from(N_UDP),
        "UDP requests out of port 1",
    );
    let mut udp_backend: HashMap<u16, usize> = HashMap::new();
    for (q, f) in &out {
        let o = parse_out(f);
        let cport = udp_of(&o).source_port;
        let b = check_forward(&o, mac1, cport, false);
        assert_eq!(
            o.payload,
            format!("query-{}", cport - 20_000).as_bytes(),
            "payload kept"
        );
        assert_eq!(*q, owner(CLIENT, cport));
        assert!(udp_backend.insert(cport, b).is_none());
    }
    for i in 0..N_UDP {
        let cport = uport(i);
        let b = udp_backend[&cport];
        let f = udp_frame(
            BACKEND_MACS[b],
            mac1,
            (BACKENDS[b], UDP_BACKEND_PORT),
            (CLIENT, cport),
            format!("answer-{i}").as_bytes(),
        );
        inject(&pool, p1, usize::from(i) % 2, &f);
    }
    let out = expect_frames(
        running,
        p0,
        usize::from(N_UDP),
        "UDP responses out of port 0",
    );
    let mut seen = HashSet::new();
    for (_, f) in &out {
        let o = parse_out(f);
        let cport = udp_of(&o).destination_port;
        check_reply(&o, mac0, cport, 53);
        assert_eq!(o.payload, format!("answer-{}", cport - 20_000).as_bytes());
        assert!(seen.insert(cport));
    }
    let udp_backends: HashSet<usize> = udp_backend.values().copied().collect();
    assert!(
        udp_backends.len() >= 2,
        "UDP flows spread over backends: {udp_backend:?}"
    );
    assert_eq!(total_drops(running), 0, "{}", stats_summary(running));
    println!(
        "scenario 2 (UDP, {N_UDP} flows over backends {udp_backends:?}) ok in {:?}",
        t.elapsed()
    );

    // ---- 3. table swap removing backend .13 ----
    let t = Instant::now();
    let cfg2 = Config::parse(&yaml(&[0, 1]), "dataplane_ring_v2.yaml").expect("config v2");
    assert_eq!(
        cfg.restart_needed(&cfg2),
        None,
        "a backend change needs no restart"
    );
    let v2 = publisher.publish(cfg2.table_spec().unwrap());
    assert_eq!(v2, v1 + 1);
    wait_for_table(running, v2);
    let grace_us = publisher.metrics.last_grace_us.load(Ordering::Relaxed);
    // An established flow to .13 keeps going to .13 (ACK on the non-owner queue).
    let (&old_port, _) = backend_of
        .iter()
        .filter(|(_, &b)| b == 2)
        .min()
        .expect("a flow to .13");
    let i = u32::from(old_port - 10_000);
    let f = tcp_frame(
        CLIENT_MAC,
        mac0,
        (CLIENT, old_port),
        (VIP, 80),
        1001 + i,
        false,
        Some(50_001 + i),
    );
    inject(&pool, p0, 1 - owner(CLIENT, old_port), &f);
    let out = expect_frames(
        running,
        p1,
        1,
        "ACK on an established flow to the removed backend",
    );
    let o = parse_out(&out[0].1);
    assert_eq!(
        check_forward(&o, mac1, old_port, true),
        2,
        "established flow stays on .13"
    );
    let t3 = tcp_of(&o);
    assert!(t3.ack && !t3.syn);
    assert_eq!(
        (t3.sequence_number, t3.acknowledgment_number),
        (1001 + i, 50_001 + i)
    );
    // New flows never go to .13.
    const N_NEW: u16 = 150;
    for i in 0..N_NEW {
        let f = tcp_frame(
            CLIENT_MAC,
            mac0,
            (CLIENT, 30_000 + i),
            (VIP, 80),
            7,
            true,
            None,
        );
        inject(&pool, p0, usize::from(i) % 2, &f);
    }
    let out = expect_frames(running, p1, usize::from(N_NEW), "new SYNs after the swap");
    let mut per_backend2 = [0usize; 3];
    for (_, f) in &out {
        let o = parse_out(f);
        let cport = tcp_of(&o).source_port;
        per_backend2[check_forward(&o, mac1, cport, true)] += 1;
    }
    assert_eq!(
        per_backend2[2], 0,
        "a new flow went to the removed backend: {per_backend2:?}"
    );
    assert!(
        per_backend2[0] > 0 && per_backend2[1] > 0,
        "{per_backend2:?}"
    );
    // UDP: like kube-proxy's stale-conntrack cleanup, a UDP flow to a removed
    // endpoint is flushed and the next datagram picks a live backend.
    if let Some((&up, _)) = udp_backend.iter().filter(|(_, &b)| b == 2).min() {
        let f = udp_frame(CLIENT_MAC, mac0, (CLIENT, up), (VIP, 53), b"again");
        inject(&pool, p0, 0, &f);
        let out = expect_frames(running, p1, 1, "UDP on an existing flow to .13");
        assert_ne!(
            check_forward(&parse_out(&out[0].1), mac1, up, false),
            2,
            "stale UDP flow re-picked"
        );
    }
    // A UDP flow to a surviving backend keeps its backend.
    let (&up, &ub) = udp_backend
        .iter()
        .filter(|(_, &b)| b != 2)
        .min()
        .expect("a UDP flow to .11/.12");
    let f = udp_frame(CLIENT_MAC, mac0, (CLIENT, up), (VIP, 53), b"again");
    inject(&pool, p0, 1, &f);
    let out = expect_frames(
        running,
        p1,
        1,
        "UDP on an existing flow to a surviving backend",
    );
    assert_eq!(check_forward(&parse_out(&out[0].1), mac1, up, false), ub);
    assert_eq!(total_drops(running), 0, "{}", stats_summary(running));
    println!(
        "scenario 3 (swap to v{v2}, grace {grace_us} µs, new flows {per_backend2:?}) ok in {:?}",
        t.elapsed()
    );

    // ---- 3b. a backend no session uses comes and goes ----
    // v2 removed .13: a worker holding UDP flows to it swept its sessions
    // (revalidated them: the flush above). v3 adds a spare UDP backend (no
    // removal, no new flush epoch) and v4 removes it: no session of any
    // worker used it, so every worker carries its sessions over.
    let t = Instant::now();
    let epochs = || {
        running
            .stats
            .iter()
            .map(|s| {
                (
                    s.flush_epochs_swept.load(Ordering::Relaxed),
                    s.flush_epochs_carried.load(Ordering::Relaxed),
                )
            })
            .collect::<Vec<_>>()
    };
    let at_v2 = epochs();
    for (w, &(swept, carried)) in at_v2.iter().enumerate() {
        assert_eq!(swept + carried, 1, "worker {w}: v2 ({at_v2:?})");
        if udp_backend
            .iter()
            .any(|(&p, &b)| b == 2 && owner(CLIENT, p) == w)
        {
            assert_eq!(swept, 1, "worker {w} had UDP flows to .13 ({at_v2:?})");
        }
    }
    let spare = [198, 18, 1, 14];
    for (backends, spare) in [(&[0, 1][..], &[spare][..]), (&[0, 1][..], &[][..])] {
        let c =
            Config::parse(&yaml_with(backends, spare), "dataplane_ring_v3.yaml").expect("config");
        let v = publisher.publish(c.table_spec().unwrap());
        wait_for_table(running, v);
    }
    let at_v4 = epochs();
    for (w, (&(s2, c2), &(s4, c4))) in at_v2.iter().zip(&at_v4).enumerate() {
        assert_eq!(
            (s4, c4),
            (s2, c2 + 1),
            "worker {w}: v2 {at_v2:?}, v4 {at_v4:?}"
        );
    }
    // The flows still go where they went.
    let f = udp_frame(CLIENT_MAC, mac0, (CLIENT, up), (VIP, 53), b"after");
    inject(&pool, p0, 1, &f);
    let out = expect_frames(running, p1, 1, "UDP after the carried epoch");
    assert_eq!(check_forward(&parse_out(&out[0].1), mac1, up, false), ub);
    assert_eq!(total_drops(running), 0, "{}", stats_summary(running));
    println!(
        "scenario 3b (flush epochs {at_v2:?} -> {at_v4:?}) ok in {:?}",
        t.elapsed()
    );

    // ---- 4. malformed frames ----
    let t = Instant::now();
    let base = tcp_frame(CLIENT_MAC, mac0, (CLIENT, 40_000), (VIP, 80), 1, true, None);
    let before = (
        total_drops(running),
        drops(running, DropReason::Truncated),
        drops(running, DropReason::BadHeaderLen),
        drops(running, DropReason::BadTotalLen),
    );
    // Truncated Ethernet header.
    let truncated = base[..10].to_vec();
    // IPv4 IHL = 3 (12 bytes).
    let mut ihl3 = base.clone();
    ihl3[14] = 0x43;
    let c = ipv4_header_checksum(&ihl3[14..34]);
    ihl3[24..26].copy_from_slice(&c.to_be_bytes());
    // IPv4 total length larger than the frame (valid header checksum).
    let mut long = base.clone();
    let tl = (base.len() - 14 + 100) as u16;
    long[16..18].copy_from_slice(&tl.to_be_bytes());
    let c = ipv4_header_checksum(&long[14..34]);
    long[24..26].copy_from_slice(&c.to_be_bytes());
    // TCP data offset 4 (< 5).
    let mut doff = base.clone();
    doff[14 + 20 + 12] = 0x40;
    // A well-formed frame addressed to another unicast MAC.
    let mut foreign = base.clone();
    foreign[..6].copy_from_slice(&[0x02, 0, 0, 0, 0x99, 0x99]);
    let not_for_us = drops(running, DropReason::NotForUs);
    for (k, f) in [&truncated, &ihl3, &long, &doff, &foreign]
        .into_iter()
        .enumerate()
    {
        inject(&pool, p0, k % 2, f);
    }
    wait_until("5 bad frames counted as drops", running, || {
        total_drops(running) >= before.0 + 5
    });
    expect_silence(
        running,
        &wire,
        Duration::from_millis(50),
        "malformed frames",
    );
    let after = (
        total_drops(running),
        drops(running, DropReason::Truncated),
        drops(running, DropReason::BadHeaderLen),
        drops(running, DropReason::BadTotalLen),
    );
    assert_eq!(after.0 - before.0, 5, "{}", stats_summary(running));
    assert_eq!(
        drops(running, DropReason::NotForUs) - not_for_us,
        1,
        "foreign MAC: {}",
        stats_summary(running)
    );
    assert_eq!(
        after.1 - before.1,
        1,
        "truncated Ethernet: {}",
        stats_summary(running)
    );
    assert_eq!(
        after.2 - before.2,
        2,
        "IHL=3 and doff=4: {}",
        stats_summary(running)
    );
    assert_eq!(
        after.3 - before.3,
        1,
        "total_len > frame: {}",
        stats_summary(running)
    );
    // A normal flow still works afterwards (the same tuple as the malformed ones).
    inject(&pool, p0, 1, &base);
    let out = expect_frames(running, p1, 1, "SYN after malformed frames");
    let o = parse_out(&out[0].1);
    let b = check_forward(&o, mac1, 40_000, true);
    assert_ne!(b, 2);
    let f = tcp_frame(
        BACKEND_MACS[b],
        mac1,
        (BACKENDS[b], TCP_BACKEND_PORT),
        (CLIENT, 40_000),
        9,
        true,
        Some(2),
    );
    inject(&pool, p1, 0, &f);
    let out = expect_frames(running, p0, 1, "SYN-ACK after malformed frames");
    check_reply(&parse_out(&out[0].1), mac0, 40_000, 80);
    assert_eq!(total_drops(running), after.0);
    println!(
        "scenario 4 (malformed frames dropped and counted) ok in {:?}",
        t.elapsed()
    );

    // ---- 5. ARP ----
    let t = Instant::now();
    let replies_before = sum(running, |s| &s.neighbor_replies);
    for (k, target) in [NODE0, VIP].into_iter().enumerate() {
        let q = k % 2;
        inject(&pool, p0, q, &arp_request(CLIENT_MAC, CLIENT, target));
        let out = expect_frames(running, p0, 1, "ARP reply");
        let (oq, f) = &out[0];
        assert_eq!(*oq, q, "ARP is answered by the worker that received it");
        let (eth, rest) = Ethernet2Header::from_slice(f).expect("ARP reply ethernet");
        assert_eq!(eth.destination, CLIENT_MAC);
        assert_eq!(eth.source, mac0);
        assert_eq!(eth.ether_type, etherparse::EtherType::ARP);
        assert!(rest.len() >= 28, "ARP body {} bytes", rest.len());
        assert_eq!(
            &rest[..8],
            &[0, 1, 0x08, 0x00, 6, 4, 0, 2],
            "htype/ptype/hlen/plen/op=reply"
        );
        assert_eq!(&rest[8..14], &mac0, "sender MAC is the port's");
        assert_eq!(&rest[14..18], &target, "sender IP is the asked address");
        assert_eq!(&rest[18..24], &CLIENT_MAC, "target MAC is the requester's");
        assert_eq!(&rest[24..28], &CLIENT, "target IP is the requester's");
        expect_silence(running, &wire, Duration::from_millis(10), "after ARP reply");
    }
    assert_eq!(sum(running, |s| &s.neighbor_replies), replies_before + 2);
    // A request for an address we do not own is not answered.
    inject(
        &pool,
        p0,
        0,
        &arp_request(CLIENT_MAC, CLIENT, [198, 18, 0, 77]),
    );
    expect_silence(
        running,
        &wire,
        Duration::from_millis(50),
        "ARP for a foreign address",
    );
    assert_eq!(total_drops(running), after.0);
    println!("scenario 5 (ARP) ok in {:?}", t.elapsed());

    // ---- shutdown ----
    // The ring PMD's own counters agree with what crossed the wire.
    let ps = running.port_stats();
    println!("port stats: {ps:?}");
    for (i, w) in wire.iter().enumerate() {
        let c = ps[i].expect("port stats");
        assert_eq!(
            (c.ipackets, c.opackets),
            (w.sent.get(), w.got.get()),
            "port {i} packet counters"
        );
        assert_eq!(
            (c.imissed, c.ierrors, c.oerrors, c.rx_nombuf),
            (0, 0, 0, 0),
            "port {i} error counters"
        );
    }
    let rx_total: u64 = wire.iter().map(|w| w.sent.get()).sum();
    let tx_total: u64 = wire.iter().map(|w| w.got.get()).sum();
    assert_eq!(sum(running, |s| &s.rx_packets), rx_total);
    assert_eq!(sum(running, |s| &s.tx_packets), tx_total);
    println!("final stats: {}", stats_summary(running));
    // Nothing may be left on the wire that holds mbufs of the dataplane's
    // pool, which shutdown frees.
    expect_silence(running, &wire, Duration::from_millis(10), "before shutdown");
    let codes = guard.running.take().unwrap().shutdown(&eal);
    drop(guard);
    assert_eq!(codes, vec![0; N_WORKERS], "worker exit codes");
    drop(wire);
    drop(pool);
    drop(publisher);
    drop(eal);
    println!("total {:?}", t0.elapsed());
}
