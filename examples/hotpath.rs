//! The pipeline's hot path under a fixed workload, for instruction counts
//! (`scripts/bench/callgrind.sh`: valgrind's callgrind counts the
//! instructions of `measure`, which are exact and immune to other load on the
//! machine) and for quick profiling with `perf record`.
//!
//! `cargo run --release --example hotpath -- SCENARIO [PACKETS]`
//!
//! Scenarios: `fwd1` (one established UDP flow, client → VIP), `rev1` (its
//! replies), `fwd60k` / `fwd1m` (60,000 / 1,000,000 established flows in a
//! scattered order, one packet at a time), `fwd60k_burst` / `fwd1m_burst`
//! (the same in bursts of 32 with the worker's pre-pass: index prefetch
//! for the whole burst first, sessions 8 packets ahead (from the
//! alternative index bucket 6 ahead); next-hop lines 4 packets ahead when
//! there are many neighbours; the same instructions as the worker's, whose
//! cross-burst pipeline only moves the index prefetch one loop earlier), `fwd60k_10k` / `fwd60k_10k_burst`
//! (60,000 flows spread over 10,000 Services × 10 backends on 60,000
//! backend addresses with static neighbours, as the replay bench's
//! `established_60k_10k_services`), `new` (every packet opens a flow:
//! session insert + Maglev pick), `fwd1_v6` / `rev1_v6` (`fwd1` / `rev1`
//! over IPv6: the same Services on 2001:2::/48 addresses, 84-byte frames),
//! `fwd60k_burst_v6` (`fwd60k_burst` over IPv6: 60,000 clients in
//! 2001:2::/64, the replay bench's `established_60k_v6`),
//! `fwd60k_updates` (`fwd60k_burst` while the replay bench's `updates`
//! changes are published: a new table every [`UPDATE_EVERY`] packets, the
//! even changes adding an extra backend no flow uses to a Service, the odd
//! ones removing it — so the flush epoch moves every other publication and
//! every UDP session revalidates once per epoch, as in the worker; compare
//! with `fwd60k_burst` at the same packet count), `fwd60k_masq_burst`
//! (`fwd60k_burst` with every Service masquerading: the source rewritten
//! to the node's address and a port of its own, the masquerade endpoint
//! prefetched by the pre-pass's step 3).
//! A `+good` suffix (`fwd1+good`, ...) marks
//! every buffer as a NIC with receive checksum offload would
//! (`RxChecksum::Good`: the IPv4 header checksum was checked). Prints `SCENARIO PACKETS NS_PER_PACKET`.
use dataplane::addr::{Addr, SockAddr};
use dataplane::pipeline::{LatePrefetch, PacketBuf, Pipeline, RxChecksum, VecBuf, Verdict};
use dataplane::stats::WorkerStats;
use dataplane::table::ServiceTable;
use std::time::Instant;

#[path = "../benches/common/mod.rs"]
mod common;
use common::*;

const BURST: usize = 32;
/// `fwd60k_updates`: packets between publications — 100 changes per second
/// (the target's rate) at 14 Mpps, the worker's rate at 60,000 flows in the
/// quiet replay windows on the AMD EPYC host.
const UPDATE_EVERY: usize = 140_000;

/// Next-hop and masquerade-endpoint prefetch distance (as the worker's `LATE_AHEAD`).
const AHEAD: usize = 4;
/// Session prefetch distance (as the worker's `SESSION_AHEAD`).
const SESSION_AHEAD: usize = 8;
/// Alternative-bucket step distance (as the worker's `ALT_AHEAD`).
const ALT_AHEAD: usize = 6;

fn flow_frame(i: u32, services: u32) -> Vec<u8> {
    let vip = if services == 16 {
        [198, 18, 200, (i % 16) as u8]
    } else {
        // Spread over the Services by a hash (as the replay bench does).
        let h = (u64::from(i) ^ 0x5eed_f10e).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        wide_vip((h % u64::from(services)) as usize)
    };
    udp_frame(
        [198, 18, 1 + (i >> 16) as u8, (i >> 8) as u8],
        (i as u16) | 1024,
        vip,
        80,
        P0,
    )
}

#[allow(clippy::too_many_arguments)]
/// The measured loop: `n` packets from `frames` (in the order of `order`),
/// `burst` at a time, with the pre-pass when `prepass`.
#[inline(never)]
fn measure(
    p: &mut Pipeline,
    t: &ServiceTable,
    st: &WorkerStats,
    frames: &[Vec<u8>],
    bufs: &mut [VecBuf],
    n: usize,
    prepass: bool,
    in_port: u16,
) -> usize {
    let mut sent = 0;
    let mut k = 0usize;
    let mut hashes = [0u64; BURST];
    let mut cands = [0u32; BURST];
    let late = if prepass {
        p.late_prefetch()
    } else {
        LatePrefetch::default()
    };
    let len = frames.len();
    let mut done = 0;
    while done < n {
        let m = bufs.len().min(n - done);
        for b in bufs[..m].iter_mut() {
            // A fixed stride over the flows: scattered like real traffic.
            k = (k + 7919) % len;
            b.reset(&frames[k]);
        }
        if prepass {
            for (h, b) in hashes.iter_mut().zip(&bufs[..m]) {
                *h = p.prefetch_index(b.data());
            }
            let ahead = m.min(SESSION_AHEAD);
            for (h, c) in hashes[..ahead].iter().zip(&mut cands[..ahead]) {
                *c = p.prefetch_session(*h);
            }
            for (h, c) in hashes[..ahead]
                .iter()
                .zip(&mut cands[..ahead])
                .take(ALT_AHEAD)
            {
                *c = p.prefetch_session_alt(*h, *c);
            }
            if late.any() {
                for &c in cands[..ahead].iter().take(AHEAD) {
                    p.prefetch_late(c, late);
                }
            }
        }
        if late.any() {
            for (i, b) in bufs[..m].iter_mut().enumerate() {
                if let Some(&h) = hashes[..m].get(i + SESSION_AHEAD) {
                    cands[i + SESSION_AHEAD] = p.prefetch_session(h);
                }
                if let Some(&h) = hashes[..m].get(i + ALT_AHEAD) {
                    cands[i + ALT_AHEAD] = p.prefetch_session_alt(h, cands[i + ALT_AHEAD]);
                }
                if let Some(&c) = cands[..m].get(i + AHEAD) {
                    p.prefetch_late(c, late);
                }
                let v = p.process_hinted(t, st, in_port, b, 1, false, Some(cands[i]));
                if matches!(v, Verdict::Tx(_)) {
                    sent += 1;
                }
            }
        } else if prepass {
            for (i, b) in bufs[..m].iter_mut().enumerate() {
                if let Some(&h) = hashes[..m].get(i + SESSION_AHEAD) {
                    cands[i + SESSION_AHEAD] = p.prefetch_session(h);
                }
                if let Some(&h) = hashes[..m].get(i + ALT_AHEAD) {
                    cands[i + ALT_AHEAD] = p.prefetch_session_alt(h, cands[i + ALT_AHEAD]);
                }
                let v = p.process_hinted(t, st, in_port, b, 1, false, Some(cands[i]));
                if matches!(v, Verdict::Tx(_)) {
                    sent += 1;
                }
            }
        } else {
            // As the worker calls it (no pre-pass: no hash).
            for b in bufs[..m].iter_mut() {
                if matches!(p.process(t, st, in_port, b, 1, false), Verdict::Tx(_)) {
                    sent += 1;
                }
            }
        }
        done += m;
    }
    sent
}

/// A publication reaching the pipeline (named for callgrind's
/// `measure*` collection).
#[inline(never)]
fn measure_table_switch(p: &mut Pipeline, t: &ServiceTable) {
    p.on_table(t);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_else(|| "fwd1".into());
    let (scenario, good) = match scenario.strip_suffix("+good") {
        Some(s) => (s.to_string(), true),
        None => (scenario, false),
    };
    let n: usize = args
        .next()
        .map(|s| s.parse().expect("PACKETS must be a number"))
        .unwrap_or(1_000_000);
    let st = WorkerStats::default();
    let wide = scenario.starts_with("fwd60k_10k");
    let services = if wide { 10_000 } else { 16 };
    let v6 = scenario.ends_with("_v6");
    let updating = scenario == "fwd60k_updates";
    let masq = scenario.contains("_masq");
    let t = if wide {
        ServiceTable::new(wide_spec(10_000, 10), 1)
    } else if v6 {
        ServiceTable::new(spec_v6(16, 8), 1)
    } else if masq {
        // Every Service masquerades (as `externalTrafficPolicy: Cluster`
        // does for external clients): a source rewrite too, and the
        // masquerade endpoint read from the side array.
        let mut s = spec(16, 8);
        for svc in &mut s.services {
            svc.masquerade = true;
        }
        ServiceTable::new(s, 1)
    } else {
        table(16, 8)
    };
    // The tables published while measuring (`fwd60k_updates`): one per
    // UPDATE_EVERY packets, built before the measurement.
    let (t, updates) = if updating {
        // The extra backends are addresses no flow uses.
        let mut changes = BackendChanges::new(spec(16, 8), 16);
        let first = changes.table(1);
        let count = n / UPDATE_EVERY + 1;
        let updates: Vec<ServiceTable> = (0..count as u64)
            .map(|i| {
                changes.apply(i, 2 + i, |s| {
                    SockAddr::new(Addr::v4([198, 19, 2, s as u8]), 8080)
                })
            })
            .collect();
        let removals = updates
            .windows(2)
            .filter(|w| w[1].epoch.current != w[0].epoch.current)
            .count();
        assert!(count < 3 || removals > 0, "the flush epoch never moved");
        (first, updates)
    } else {
        (t, Vec::new())
    };
    let (flows, burst, reply, new) = match scenario.as_str() {
        "fwd1" => (1, 1, false, false),
        "rev1" => (1, 1, true, false),
        "fwd1_v6" => (1, 1, false, false),
        "rev1_v6" => (1, 1, true, false),
        "fwd60k_burst_v6" => (60_000, BURST, false, false),
        "fwd60k" => (60_000, 1, false, false),
        "fwd60k_burst" | "fwd60k_updates" => (60_000, BURST, false, false),
        "fwd60k_10k" => (60_000, 1, false, false),
        "fwd60k_10k_burst" => (60_000, BURST, false, false),
        "fwd1m" => (1_000_000, 1, false, false),
        "fwd1m_burst" => (1_000_000, BURST, false, false),
        "fwd60k_masq_burst" => (60_000, BURST, false, false),
        "new" => (n as u32, 1, false, true),
        other => {
            eprintln!("unknown scenario {other}");
            std::process::exit(2);
        }
    };
    let frames: Vec<Vec<u8>> = if v6 && flows > 1 {
        // Clients in 2001:2::/64 (the client subnet), 16 Services.
        (0..flows)
            .map(|i| {
                let mut c = V6_CLIENT;
                c[12..16].copy_from_slice(&(i + 2).to_be_bytes());
                udp6_frame(c, (i as u16) | 1024, v6_vip((i % 16) as usize), 80, P0, 18)
            })
            .collect()
    } else if v6 {
        // The client has a static neighbour entry (replies go straight out).
        vec![udp6_frame(V6_CLIENT, 40000, v6_vip(0), 80, P0, 18)]
    } else if reply {
        // A client with a static neighbour entry, so replies go straight out.
        vec![udp_frame([198, 18, 0, 2], 40000, [198, 18, 200, 0], 80, P0)]
    } else {
        (0..flows).map(|i| flow_frame(i, services)).collect()
    };
    // The neighbour cache sized to the table's next hops (as the replay
    // bench does).
    let neighbors = if wide { WIDE_ADDRS + 1024 } else { 4096 };
    let mut p = pipeline_with((flows as usize).max(1024) + 1024, neighbors);
    p.on_table(&t);
    let mut frames = frames;
    if !new {
        // Open every session first, then send every frame once more (the
        // fast path's next-hop cache filled): steady state, not measured.
        let mut first_out = None;
        for f in frames.iter().chain(&frames) {
            let mut b = VecBuf::new(f);
            assert!(matches!(
                p.process(&t, &st, 0, &mut b, 0, false),
                Verdict::Tx(1)
            ));
            first_out.get_or_insert_with(|| b.bytes());
        }
        if reply && v6 {
            let d = first_out.expect("one flow");
            let backend: [u8; 16] = d[38..54].try_into().expect("IPv6");
            let bport = u16::from_be_bytes([d[56], d[57]]);
            frames = vec![udp6_frame(backend, bport, V6_CLIENT, 40000, P1, 18)];
        } else if reply {
            // The backend's reply to the flow.
            let d = first_out.expect("one flow");
            let backend: [u8; 4] = d[30..34].try_into().expect("IPv4");
            let bport = u16::from_be_bytes([d[36], d[37]]);
            frames = vec![udp_frame(backend, bport, [198, 18, 0, 2], 40000, P1)];
        }
    }
    let created = st
        .sessions_created
        .load(core::sync::atomic::Ordering::Relaxed);
    let fast = st.fast_path.load(core::sync::atomic::Ordering::Relaxed);
    let mut bufs: Vec<VecBuf> = (0..burst).map(|_| VecBuf::new(&frames[0])).collect();
    if good {
        for b in &mut bufs {
            b.set_rx_ip_checksum(RxChecksum::Good);
        }
    }
    let misses = p.next_hop_misses();
    let start = Instant::now();
    let sent = if new {
        // Frames in order: each one a new flow.
        let mut sent = 0;
        for chunk in frames.chunks(1 << 16) {
            sent += measure(&mut p, &t, &st, chunk, &mut bufs, chunk.len(), false, 0);
        }
        sent
    } else {
        let in_port = if reply { 1 } else { 0 };
        if updating {
            // UPDATE_EVERY packets per table, the switch counted as the
            // worker's `on_table` (callgrind collects `measure*`).
            let mut current = &t;
            let mut sent = 0;
            let mut done = 0;
            for next in updates.iter().cycle() {
                if done >= n {
                    break;
                }
                let m = UPDATE_EVERY.min(n - done);
                sent += measure(&mut p, current, &st, &frames, &mut bufs, m, true, in_port);
                done += m;
                measure_table_switch(&mut p, next);
                current = next;
            }
            sent
        } else {
            measure(&mut p, &t, &st, &frames, &mut bufs, n, burst > 1, in_port)
        }
    };
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    let created_now = st
        .sessions_created
        .load(core::sync::atomic::Ordering::Relaxed)
        - created;
    assert_eq!(sent, n, "every packet forwarded");
    if new {
        assert_eq!(created_now as usize, n, "every packet opened a session");
    } else {
        assert_eq!(created_now, 0, "no session created while measuring");
    }
    let fast_now = st.fast_path.load(core::sync::atomic::Ordering::Relaxed) - fast;
    eprintln!("fast path: {fast_now} of {n} packets");
    eprintln!(
        "next-hop cache misses in the measured loop: {} ({} bytes)",
        p.next_hop_misses() - misses,
        p.next_hop_cache_bytes()
    );
    println!("{scenario} {n} {ns:.1}");
}
