//! The workers' cross-burst pipeline over ring-backed ports: once a
//! worker's session table holds more than the pre-pass threshold (128
//! sessions), each received burst is prefetched in one loop and handled in
//! the next. This test fills both workers' tables past that mark and checks
//! what the pipeline must never change: every packet comes out translated
//! to its flow's backend, a flow's packets keep their order, a lone packet
//! after a quiet spell is not left waiting for the next burst, and packets
//! received just before a stop are sent (or counted as drops), not lost.
//! Half of the flows go to a masquerading Service, so the pre-pass's step
//! 3 (the masquerade endpoint prefetch) runs on a mixed table.
//!
//! One EAL per process, so one `#[test]`; needs root. Run:
//! `cargo test --test dataplane_prepass -- --nocapture`.
use control::config::Config;
use control::publisher::Publisher;
use dataplane::dpdk::{Eal, Mempool};
use dataplane::pipeline::{PacketBuf, SNAT_PORTS};
use dataplane::worker;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod ring;
use ring::*;

/// Flows opened: client ports `FIRST_PORT..FIRST_PORT + FLOWS`, split
/// between the two workers by ownership (about 20,000 each, in tables of
/// 22,000 sessions).
const FLOWS: u16 = 40_000;
const FIRST_PORT: u16 = 10_000;
/// The worker's pre-pass threshold (`PREFETCH_SESSIONS` in worker.rs).
const PREPASS_SESSIONS: u64 = 128;
/// Frames put on the rx rings before the outputs are read (both queues
/// together; each ring holds 1,023).
const CHUNK: usize = 512;
/// The masquerading Service's VIP (flows with odd client ports).
const VIP_MASQ: [u8; 4] = [198, 18, 100, 2];
/// Port 1's address: the masquerade source.
const NODE1: [u8; 4] = [198, 18, 1, 1];

fn masqueraded(cport: u16) -> bool {
    cport % 2 == 1
}

fn yaml() -> String {
    let udp: Vec<String> = BACKENDS
        .iter()
        .map(|b| format!("\"{}:{UDP_BACKEND_PORT}\"", std::net::Ipv4Addr::from(*b)))
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
  sessions: 22000
  idle_sleep_us: 20
services:
  - name: default/dns:dns
    vip: 198.18.100.1
    port: 53
    protocol: UDP
    backends: [{udp}]
  - name: default/dns-ext:dns
    vip: 198.18.100.2
    port: 53
    protocol: UDP
    masquerade: true
    backends: [{udp}]
"#,
        p0 = PORT_NAMES[0],
        p1 = PORT_NAMES[1],
        udp = udp.join(", "),
    )
}

/// A forward frame of flow `cport` carrying `cport` and `seq` as its
/// payload (a masqueraded flow's source port is rewritten).
fn frame(mac0: [u8; 6], cport: u16, seq: u32) -> Vec<u8> {
    let mut payload = cport.to_be_bytes().to_vec();
    payload.extend(seq.to_be_bytes());
    let vip = if masqueraded(cport) { VIP_MASQ } else { VIP };
    udp_frame(CLIENT_MAC, mac0, (CLIENT, cport), (vip, 53), &payload)
}

/// Puts `frames` (client port, payload) on their owners' rx queues of port
/// 0, `CHUNK` at a time, and reads every output of port 1 after each chunk.
/// Returns per output (tx queue, client port, backend index, payload).
fn send(
    r: &worker::Running,
    pool: &Mempool,
    p0: &WirePort,
    p1: &WirePort,
    mac1: [u8; 6],
    frames: &[(u16, u32)],
) -> Vec<(usize, u16, usize, u32)> {
    let mac0 = r.port_info[0].mac.0;
    let mut out = Vec::with_capacity(frames.len());
    for chunk in frames.chunks(CHUNK) {
        for &(cport, seq) in chunk {
            inject(pool, p0, owner(CLIENT, cport), &frame(mac0, cport, seq));
        }
        for (q, f) in expect_frames(r, p1, chunk.len(), "a chunk of forward frames") {
            let o = parse_out(&f);
            let cport = u16::from_be_bytes(o.payload[..2].try_into().expect("6-byte payload"));
            let seq = u32::from_be_bytes(o.payload[2..6].try_into().expect("6-byte payload"));
            let b = if masqueraded(cport) {
                // From the node's address on port 1 and a masquerade port.
                let u = udp_of(&o);
                assert_eq!(o.ip.source, NODE1, "flow {cport}: not masqueraded");
                assert!(
                    SNAT_PORTS.contains(&u.source_port),
                    "flow {cport}: source port {}",
                    u.source_port
                );
                assert_eq!(u.destination_port, UDP_BACKEND_PORT);
                let b = backend_index(o.ip.destination);
                assert_eq!((o.eth.source, o.eth.destination), (mac1, BACKEND_MACS[b]));
                b
            } else {
                check_forward(&o, mac1, cport, false)
            };
            out.push((q, cport, b, seq));
        }
    }
    out
}

#[test]
fn cross_burst_pipeline_over_ring_ports() {
    let cfg = Config::parse(&yaml(), "dataplane_prepass.yaml").expect("config");
    let eal = Eal::init(&cfg.eal_args()).expect("EAL init (run as root)");
    let lcores = eal.worker_lcores();
    assert_eq!(lcores.len(), N_WORKERS);
    let pool = Mempool::new("test_pool", 8191, 0, 2176, 0).expect("test mempool");
    let wire: Vec<WirePort> = PORT_NAMES.iter().map(|n| WirePort::new(n)).collect();
    let dp = cfg.dataplane(lcores);
    let mut publisher = Publisher::new(N_WORKERS);
    let mut guard = Guard {
        running: Some(worker::start(&eal, &dp, publisher.rcu()).expect("worker::start")),
        eal: &eal,
    };
    let r = guard.running.as_ref().unwrap();
    let mac1 = r.port_info[1].mac.0;
    let v1 = publisher.publish(cfg.table_spec().unwrap());
    wait_for_table(r, v1);
    let (p0, p1) = (&wire[0], &wire[1]);
    let ports = FIRST_PORT..FIRST_PORT + FLOWS;

    // ---- 1. Open the flows: both tables past the pre-pass mark ----
    let opening: Vec<(u16, u32)> = ports.clone().map(|c| (c, 0)).collect();
    let mut backend_of = HashMap::new();
    for (_, cport, b, seq) in send(r, &pool, p0, p1, mac1, &opening) {
        assert_eq!(seq, 0);
        assert!(backend_of.insert(cport, b).is_none(), "flow {cport} twice");
    }
    assert_eq!(backend_of.len(), usize::from(FLOWS));
    assert_eq!(
        sum(r, |s| &s.sessions_masqueraded),
        u64::from(FLOWS / 2),
        "{}",
        stats_summary(r)
    );
    for (i, s) in r.stats.iter().enumerate() {
        let active = s.sessions_active.load(Ordering::Relaxed);
        assert!(
            active > PREPASS_SESSIONS,
            "worker {i} holds {active} sessions, not above the pre-pass mark: the test \
             would not reach the pipeline; {}",
            stats_summary(r)
        );
    }

    // ---- 2. Established traffic through the pipeline ----
    // Each flow sends 4 packets in a row inside a chunk of 128 flows, in a
    // scattered flow order, so bursts hold several packets of one flow and
    // a flow's packets span bursts. Every packet goes to its flow's
    // backend, and a flow's packets leave in the order they came.
    let mut order: Vec<u16> = ports.clone().collect();
    let mut k = 0usize;
    for i in 0..order.len() {
        k = (k + 7919) % order.len();
        order.swap(i, k);
    }
    let mut frames = Vec::new();
    for group in order.chunks(CHUNK / 4) {
        for seq in 1..=4u32 {
            frames.extend(group.iter().map(|&c| (c, seq)));
        }
    }
    let before = sum(r, |s| &s.sessions_created);
    let fast_before = sum(r, |s| &s.fast_path);
    let out = send(r, &pool, p0, p1, mac1, &frames);
    assert_eq!(out.len(), frames.len());
    let mut last_seq: HashMap<u16, u32> = HashMap::new();
    for &(q, cport, b, seq) in &out {
        assert_eq!(
            q,
            owner(CLIENT, cport),
            "flow {cport} left its owner's queue"
        );
        assert_eq!(
            b, backend_of[&cport],
            "flow {cport} moved to another backend"
        );
        let last = last_seq.insert(cport, seq).unwrap_or(0);
        assert_eq!(
            seq,
            last + 1,
            "flow {cport}: packet {seq} after packet {last}"
        );
    }
    assert_eq!(sum(r, |s| &s.sessions_created), before, "no new sessions");
    assert_eq!(total_drops(r), 0, "{}", stats_summary(r));
    // The fast path took them: the pre-pass named each packet's session,
    // from its alternative index bucket too (a table of 22,000 sessions per
    // worker holding ~20,000 sessions puts some there); only a tag
    // collision in a bucket (16-bit tags) sends one to the general path.
    let fast = sum(r, |s| &s.fast_path) - fast_before;
    let n = frames.len() as u64;
    assert!(
        fast >= n - n / 1000,
        "{fast} of {n} packets on the fast path; {}",
        stats_summary(r)
    );

    // ---- 3. A lone packet after a quiet spell ----
    // The worker stages it and must handle it in its next loop even though
    // no burst follows.
    for q in 0..N_WORKERS {
        let cport = ports.clone().find(|&c| owner(CLIENT, c) == q).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let out = send(r, &pool, p0, p1, mac1, &[(cport, 5)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].2, backend_of[&cport]);
    }

    // ---- 4. A stop in the middle of traffic ----
    // Whatever a worker has received when it is told to stop is sent
    // (or counted as a drop): received = sent + dropped afterwards. The
    // frames are built first and enqueued at once, so that the workers are
    // still busy with them (a burst staged) when the stop comes.
    let stats: Vec<_> = r.stats.clone();
    let mac0 = r.port_info[0].mac.0;
    let built: Vec<(usize, dataplane::dpdk::Mbuf)> = order
        .iter()
        .take(1000)
        .enumerate()
        .map(|(i, &c)| {
            let f = frame(mac0, c, 6 + i as u32);
            let mut m = pool.alloc().expect("test pool exhausted");
            m.set_len(f.len());
            m.data_mut().copy_from_slice(&f);
            (owner(CLIENT, c), m)
        })
        .collect();
    let received = || -> u64 {
        stats
            .iter()
            .map(|s| s.rx_packets.load(Ordering::Relaxed))
            .sum()
    };
    let rx_before = received();
    for (q, m) in built {
        assert!(p0.rx[q].enqueue(m).is_ok(), "rx ring full");
    }
    // Stop once the workers are into them.
    let deadline = std::time::Instant::now() + WAIT;
    while received() < rx_before + 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "the workers took nothing"
        );
        std::hint::spin_loop();
    }
    let codes = guard.running.take().unwrap().shutdown(&eal);
    assert!(codes.iter().all(|&c| c == 0), "worker codes {codes:?}");
    let rx = received();
    let tx: u64 = stats
        .iter()
        .map(|s| s.tx_packets.load(Ordering::Relaxed))
        .sum();
    let dropped: u64 = stats.iter().map(|s| s.total_drops()).sum();
    let left_on_rx: usize = p0.rx.iter().map(|q| q.count() as usize).sum();
    let out = collect(p1, usize::MAX, Duration::from_millis(100)).len();
    println!(
        "stop: {rx} received, {tx} sent, {dropped} dropped, {left_on_rx} never received, \
         {out} of the last 1000 read from the wire"
    );
    assert_eq!(rx, tx + dropped, "received packets lost at the stop");
    assert_eq!(dropped, 0);
    assert_eq!(out + left_on_rx, 1000);
}
