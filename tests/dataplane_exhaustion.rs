//! Resource exhaustion over ring-backed ports, with the real workers
//! (`worker::start`, two lcores): a full transmit queue, an empty mbuf
//! pool, a full hand-off ring and an exhausted masquerade port partition.
//! Each is bounded, counted by its drop reason, leaves established flows
//! working, and recovers when the pressure goes.
//!
//! The test thread plays the wire as in `dataplane_ring.rs` (one EAL per
//! process, so one `#[test]`). Needs root.
use control::config::Config;
use control::publisher::Publisher;
use dataplane::dpdk::{Eal, Mempool, RxBurst};
use dataplane::pipeline::{snat_owner, snat_range};
use dataplane::stats::DropReason;
use dataplane::worker;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod ring;
use ring::*;

const MASQ_VIP: [u8; 4] = [198, 18, 100, 3];
const FAR_VIP: [u8; 4] = [198, 18, 100, 9];
const NODE1: [u8; 4] = [198, 18, 1, 1];
/// Mbufs of the workers' pool: only generated packets (neighbour
/// solicitations) come from it on ring ports.
const POOL: u32 = 64;
/// Hand-off ring size per worker pair.
const HANDOFF: u32 = 32;

fn yaml() -> String {
    // 100 backends with no static neighbour: every new flow to FAR_VIP
    // makes the worker solicit (an mbuf from its pool each).
    let far: Vec<String> = (100..200)
        .map(|i| format!("\"198.18.1.{i}:8080\""))
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
  - {{address: 198.18.0.10, mac: "02:00:00:00:00:ab", port: 0}}
  - {{address: 198.18.1.11, mac: "02:00:00:00:01:11", port: 1}}
  - {{address: 198.18.1.12, mac: "02:00:00:00:01:12", port: 1}}
  - {{address: 198.18.1.13, mac: "02:00:00:00:01:13", port: 1}}
workers:
  sessions: 20000
  mbufs: {POOL}
  # Sleep 20 ms when idle: a worker that has just gone idle leaves its
  # hand-off ring alone long enough for the other to fill it.
  idle_sleep_us: 20000
services:
  - name: default/web:http
    vip: 198.18.100.1
    port: 80
    protocol: TCP
    backends: ["198.18.1.11:8080", "198.18.1.12:8080", "198.18.1.13:8080"]
  - name: default/masq:http
    vip: 198.18.100.3
    port: 80
    protocol: TCP
    masquerade: true
    backends: ["198.18.1.11:8080"]
  - name: default/far:http
    vip: 198.18.100.9
    port: 80
    protocol: TCP
    backends: [{far}]
"#,
        p0 = PORT_NAMES[0],
        p1 = PORT_NAMES[1],
        far = far.join(", "),
    )
}

/// Puts `frames` on rx queue `q`, a ring's worth at a time, draining the
/// listed ports' tx rings meanwhile (the frames out are dropped). Returns
/// how many frames came out of those ports.
fn pump(
    pool: &Mempool,
    w: &WirePort,
    q: usize,
    frames: impl Iterator<Item = Vec<u8>>,
    drain: &[&WirePort],
) -> usize {
    let mut out = 0;
    let mut pending = 0;
    for f in frames {
        if pending >= 512 {
            out += settle(w, q, drain);
            pending = 0;
        }
        inject(pool, w, q, &f);
        pending += 1;
    }
    out + settle(w, q, drain)
}

/// Waits until rx queue `q` of `w` is empty, draining `drain` meanwhile.
fn settle(w: &WirePort, q: usize, drain: &[&WirePort]) -> usize {
    let deadline = Instant::now() + WAIT;
    let mut out = 0;
    loop {
        for d in drain {
            out += collect(d, usize::MAX, Duration::ZERO).len();
        }
        if w.rx[q].count() == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "rx queue {q} not drained");
        std::thread::sleep(Duration::from_micros(200));
    }
    std::thread::sleep(Duration::from_millis(5));
    for d in drain {
        out += collect(d, usize::MAX, Duration::ZERO).len();
    }
    out
}

#[test]
fn exhaustion_over_ring_ports() {
    let cfg = Config::parse(&yaml(), "dataplane_exhaustion.yaml").expect("config");
    let eal = Eal::init(&cfg.eal_args()).expect("EAL init (run as root)");
    let lcores = eal.worker_lcores();
    assert_eq!(lcores.len(), N_WORKERS);
    let pool = Mempool::new("test_pool", 8191, 0, 2176, 0).expect("test mempool");
    let wire: Vec<WirePort> = PORT_NAMES.iter().map(|n| WirePort::new(n)).collect();
    let mut dp = cfg.dataplane(lcores);
    assert_eq!(dp.mbufs, POOL, "workers.mbufs reaches the dataplane");
    dp.handoff_ring = HANDOFF;
    let mut publisher = Publisher::new(N_WORKERS);
    let mut guard = Guard {
        running: Some(worker::start(&eal, &dp, publisher.rcu()).expect("worker::start")),
        eal: &eal,
    };
    let r = guard.running.as_ref().unwrap();
    let (mac0, mac1) = (r.port_info[0].mac.0, r.port_info[1].mac.0);
    let v1 = publisher.publish(cfg.table_spec().unwrap());
    wait_for_table(r, v1);
    let (p0, p1) = (&wire[0], &wire[1]);

    // An established flow: client:20000 -> VIP:80, on its owner's queue.
    let cport = 20_000u16;
    let q_own = owner(CLIENT, cport);
    let syn = tcp_frame(CLIENT_MAC, mac0, (CLIENT, cport), (VIP, 80), 1, true, None);
    inject(&pool, p0, q_own, &syn);
    let out = expect_frames(r, p1, 1, "SYN of the established flow");
    let b = check_forward(&parse_out(&out[0].1), mac1, cport, true);
    let data = |seq: u32| {
        tcp_frame(
            CLIENT_MAC,
            mac0,
            (CLIENT, cport),
            (VIP, 80),
            seq,
            false,
            Some(1),
        )
    };
    let reply = |seq: u32| {
        tcp_frame(
            BACKEND_MACS[b],
            mac1,
            (BACKENDS[b], TCP_BACKEND_PORT),
            (CLIENT, cport),
            seq,
            false,
            Some(2),
        )
    };
    // Both directions work, on either queue.
    let still_works = |what: &str| {
        for q in 0..N_WORKERS {
            inject(&pool, p0, q, &data(100));
            let o = expect_frames(r, p1, 1, &format!("{what}: forward on queue {q}"));
            assert_eq!(check_forward(&parse_out(&o[0].1), mac1, cport, true), b);
            inject(&pool, p1, q, &reply(100));
            let o = expect_frames(r, p0, 1, &format!("{what}: reply on queue {q}"));
            check_reply(&parse_out(&o[0].1), mac0, cport, 80);
        }
    };
    still_works("before");

    // ---- 1. Transmit queue full: port 1's tx rings are not read ----
    let before = drops(r, DropReason::TxFull);
    let n = 3 * RING_SIZE as usize;
    let frames = (0..n as u32).map(|i| data(200 + i));
    // Drain nothing: the ring fills (RING_SIZE - 1 places per queue).
    pump(&pool, p0, q_own, frames, &[]);
    let full = drops(r, DropReason::TxFull) - before;
    let queued = p1.tx[q_own].count() as usize;
    println!("tx full: {full} dropped, {queued} queued of {n}");
    assert_eq!(queued, RING_SIZE as usize - 1, "{}", stats_summary(r));
    assert_eq!(full as usize + queued, n, "{}", stats_summary(r));
    // The reply direction (port 0) is unaffected meanwhile.
    inject(&pool, p1, q_own, &reply(300));
    let o = expect_frames(r, p0, 1, "reply while port 1 is full");
    check_reply(&parse_out(&o[0].1), mac0, cport, 80);
    // Read the wire: everything queued comes out, and it flows again.
    assert_eq!(collect(p1, queued, WAIT).len(), queued);
    still_works("after tx full");

    // ---- 2. Mbuf pool empty: solicitations pile up on port 1 ----
    // New flows to 100 unresolved backends: one solicitation per backend
    // (an mbuf from the workers' pool, held in port 1's unread tx ring).
    let before = drops(r, DropReason::NoMbuf);
    let syns = (0..600u16).map(|i| {
        tcp_frame(
            CLIENT_MAC,
            mac0,
            (CLIENT, 30_000 + i),
            (FAR_VIP, 80),
            1,
            true,
            None,
        )
    });
    pump(&pool, p0, 0, syns, &[]);
    let no_mbuf = drops(r, DropReason::NoMbuf) - before;
    let solicits = p1.tx.iter().map(|t| t.count() as usize).sum::<usize>();
    println!("mbuf pool of {POOL}: {solicits} solicitations queued, {no_mbuf} refused");
    assert!(no_mbuf > 0, "pool never ran out: {}", stats_summary(r));
    assert!(solicits <= POOL as usize, "{solicits} > pool");
    // Established flows never needed the pool (the reply direction; port
    // 1 is still unread).
    inject(&pool, p1, 1 - q_own, &reply(400));
    let o = expect_frames(r, p0, 1, "reply while the pool is empty");
    check_reply(&parse_out(&o[0].1), mac0, cport, 80);
    // Reading the solicitations frees their mbufs: solicitation resumes.
    let got = collect(p1, solicits, WAIT);
    assert_eq!(got.len(), solicits);
    for (_, f) in &got {
        assert_eq!(&f[12..14], &[0x08, 0x06], "an ARP request");
    }
    drop(got);
    std::thread::sleep(Duration::from_millis(1100)); // the retry interval
    let before = drops(r, DropReason::NoMbuf);
    let syn = tcp_frame(
        CLIENT_MAC,
        mac0,
        (CLIENT, 31_000),
        (FAR_VIP, 80),
        1,
        true,
        None,
    );
    inject(&pool, p0, 0, &syn);
    let o = expect_frames(r, p1, 1, "a solicitation after the pool refilled");
    assert_eq!(&o[0].1[12..14], &[0x08, 0x06]);
    assert_eq!(drops(r, DropReason::NoMbuf), before);
    still_works("after the pool ran dry");
    // Let the held packets to the far backends time out (3 s) quietly.
    let _ = collect(p1, usize::MAX, Duration::from_millis(100));

    // ---- 3. Hand-off ring full ----
    // 1,000 replies of the established flow on the other worker's queue:
    // all must go to the owner through a ring of HANDOFF - 1 places, while
    // the owner sleeps between idle polls.
    std::thread::sleep(Duration::from_millis(100));
    let before = drops(r, DropReason::HandoffFull);
    let n = 1000u32;
    let out = pump(&pool, p1, 1 - q_own, (0..n).map(|i| reply(500 + i)), &[p0]);
    let out = out + collect(p0, usize::MAX, Duration::from_millis(50)).len();
    let full = drops(r, DropReason::HandoffFull) - before;
    println!("hand-off ring of {HANDOFF}: {out} forwarded, {full} dropped of {n}");
    assert!(full > 0, "hand-off ring never filled: {}", stats_summary(r));
    assert_eq!(out as u64 + full, u64::from(n), "{}", stats_summary(r));
    still_works("after the hand-off ring overflowed");

    // ---- 4. Masquerade ports exhausted ----
    // Worker 0's partition holds `len` ports for the one backend; more new
    // masqueraded flows than that through worker 0.
    let (first, len) = snat_range(0, N_WORKERS as u16);
    // New flows are created by the worker owning the client's endpoint:
    // only tuples worker 0 owns.
    let mut tuples = (0..200u32)
        .flat_map(|c| (1024..61_024u16).map(move |p| ([198, 18, 0, 10 + c as u8], p)))
        .filter(|&(c, p)| owner(c, p) == 0);
    // First an established masqueraded flow.
    let (mclient, mport) = tuples.next().unwrap();
    let msyn = tcp_frame(
        CLIENT_MAC,
        mac0,
        (mclient, mport),
        (MASQ_VIP, 80),
        1,
        true,
        None,
    );
    inject(&pool, p0, 0, &msyn);
    let o = expect_frames(r, p1, 1, "masqueraded SYN");
    let mo = parse_out(&o[0].1);
    assert_eq!(mo.ip.source, NODE1, "masqueraded to the node");
    let snat_port = tcp_of(&mo).source_port;
    assert!((first..first + len as u16).contains(&snat_port));
    assert_eq!(snat_owner(snat_port, N_WORKERS as u16), 0);
    let before = drops(r, DropReason::SnatExhausted);
    let created0 = r.stats[0].sessions_created.load(Ordering::Relaxed);
    let flows = len as u32 + 2000;
    let syns = tuples
        .take(flows as usize)
        .map(|(c, p)| tcp_frame(CLIENT_MAC, mac0, (c, p), (MASQ_VIP, 80), 1, true, None));
    let out = pump(&pool, p0, 0, syns, &[p1]);
    let exhausted = drops(r, DropReason::SnatExhausted) - before;
    let created = r.stats[0].sessions_created.load(Ordering::Relaxed) - created0;
    println!(
        "SNAT partition of {len}: {created} flows masqueraded, {exhausted} refused of {flows}"
    );
    assert!(exhausted > 0, "{}", stats_summary(r));
    assert!(created < len as u64, "more flows than ports");
    assert_eq!(out as u64, created);
    assert_eq!(
        created + exhausted,
        u64::from(flows),
        "{}",
        stats_summary(r)
    );
    // The established masqueraded flow still translates replies.
    let mreply = tcp_frame(
        BACKEND_MACS[0],
        mac1,
        (BACKENDS[0], TCP_BACKEND_PORT),
        (NODE1, snat_port),
        7,
        false,
        Some(2),
    );
    inject(&pool, p1, 0, &mreply);
    let o = expect_frames(r, p0, 1, "reply of the masqueraded flow");
    let mo = parse_out(&o[0].1);
    assert_eq!(
        (mo.ip.source, mo.ip.destination),
        (MASQ_VIP, mclient),
        "reverse NAT of the established masqueraded flow"
    );
    assert_eq!(tcp_of(&mo).destination_port, mport);
    still_works("after SNAT exhaustion");

    let mut b = RxBurst::default();
    for w in &wire {
        for t in &w.tx {
            while t.dequeue(&mut b) > 0 {
                b.by_ref().for_each(drop);
            }
        }
    }
    let codes = guard.running.take().unwrap().shutdown(&eal);
    assert_eq!(codes, vec![0; N_WORKERS]);
}
