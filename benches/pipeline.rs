//! Per-packet cost of the pure pipeline (no DPDK): criterion micro-benchmarks.
//!
//! `cargo bench --bench pipeline`. Each iteration copies a 64-byte frame into
//! a buffer (measured separately as `copy_only`) and runs it through
//! [`Pipeline::process`]: parse, session lookup, DNAT/reverse rewrite with
//! incremental checksums, route, neighbour, L2 rewrite. The SCTP case
//! carries a 100-byte DATA chunk: CRC32c check plus recomputation after the
//! port rewrite.
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dataplane::addr::{fmix64, Addr, FlowKey, Proto};
use dataplane::lbcount::{BackendCounters, CounterRegistry, ServiceCounters};
use dataplane::packet::{checksum, sctp, Ipv4Packet, UdpPacket};
use dataplane::pipeline::{PacketBuf, VecBuf, Verdict};
use dataplane::session::{key_hash, SessionTable};
use dataplane::stats::WorkerStats;
use dataplane::table::{Algorithm, Service, ServiceTable};

mod common;
use common::*;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    let st = WorkerStats::default();

    // Established flow, original direction (client -> VIP, session hit).
    let t = table(16, 8);
    let mut p = pipeline(1 << 16);
    p.on_table(&t);
    let fwd = udp_frame([198, 18, 0, 2], 40000, [198, 18, 200, 0], 80, P0);
    let mut buf = VecBuf::new(&fwd);
    assert!(matches!(
        p.process(&t, &st, 0, &mut buf, 0, false),
        Verdict::Tx(1)
    ));
    let backend: [u8; 4] = buf.data()[30..34].try_into().unwrap();
    g.bench_function("copy_only", |b| b.iter(|| buf.reset(black_box(&fwd))));
    g.bench_function("established_forward", |b| {
        b.iter(|| {
            buf.reset(&fwd);
            black_box(p.process(&t, &st, 0, &mut buf, 1, false))
        })
    });
    // Reply direction (backend -> client, reverse NAT).
    let rev = udp_frame(backend, 8080, [198, 18, 0, 2], 40000, P1);
    g.bench_function("established_reply", |b| {
        b.iter(|| {
            buf.reset(&rev);
            black_box(p.process(&t, &st, 1, &mut buf, 1, false))
        })
    });
    // Established SCTP association (DATA, 100 bytes): CRC32c checked and
    // recomputed after the port rewrite.
    let sfwd = sctp_frame([198, 18, 0, 2], 40000, [198, 18, 200, 0], 3868, 100);
    let mut sbuf = VecBuf::new(&sfwd);
    assert!(matches!(
        p.process(&t, &st, 0, &mut sbuf, 0, false),
        Verdict::Tx(1)
    ));
    g.bench_function("sctp_established_forward", |b| {
        b.iter(|| {
            sbuf.reset(&sfwd);
            black_box(p.process(&t, &st, 0, &mut sbuf, 1, false))
        })
    });
    // IPv6: the same Services on IPv6 addresses (40-byte header, no header
    // checksum, a 128-bit tuple): 84-byte frames (18 bytes of payload).
    let t6 = ServiceTable::new(spec_v6(16, 8), 1);
    let mut p6 = pipeline(1 << 16);
    p6.on_table(&t6);
    let fwd6 = udp6_frame(V6_CLIENT, 40000, v6_vip(0), 80, P0, 18);
    let mut buf6 = VecBuf::new(&fwd6);
    assert!(matches!(
        p6.process(&t6, &st, 0, &mut buf6, 0, false),
        Verdict::Tx(1)
    ));
    let backend6: [u8; 16] = buf6.data()[38..54].try_into().unwrap();
    g.bench_function("established_forward_v6", |b| {
        b.iter(|| {
            buf6.reset(&fwd6);
            black_box(p6.process(&t6, &st, 0, &mut buf6, 1, false))
        })
    });
    let rev6 = udp6_frame(backend6, 8080, V6_CLIENT, 40000, P1, 18);
    g.bench_function("established_reply_v6", |b| {
        b.iter(|| {
            buf6.reset(&rev6);
            black_box(p6.process(&t6, &st, 1, &mut buf6, 1, false))
        })
    });
    // Full-size frames (1514 bytes: 1472 bytes of UDP payload): the NAT
    // work is the same (incremental checksums); the copy grows.
    let big = udp_frame_len([198, 18, 0, 3], 40000, [198, 18, 200, 0], 80, P0, 1472);
    let mut bigbuf = VecBuf::new(&big);
    assert!(matches!(
        p.process(&t, &st, 0, &mut bigbuf, 0, false),
        Verdict::Tx(1)
    ));
    g.bench_function("copy_only_1514b", |b| {
        b.iter(|| bigbuf.reset(black_box(&big)))
    });
    g.bench_function("established_forward_1514b", |b| {
        b.iter(|| {
            bigbuf.reset(&big);
            black_box(p.process(&t, &st, 0, &mut bigbuf, 1, false))
        })
    });
    // 60k established flows: lookups spread over a larger table.
    let flows: Vec<Vec<u8>> = (0..60_000u32)
        .map(|i| {
            udp_frame(
                [198, 18, 1 + (i >> 16) as u8, (i >> 8) as u8],
                i as u16 | 1024,
                [198, 18, 200, 0],
                80,
                P0,
            )
        })
        .collect();
    let mut p60 = pipeline(1 << 17);
    p60.on_table(&t);
    for f in &flows {
        let mut b = VecBuf::new(f);
        p60.process(&t, &st, 0, &mut b, 0, false);
    }
    assert_eq!(p60.sessions.len(), 60_000, "every flow established");
    let created = st
        .sessions_created
        .load(core::sync::atomic::Ordering::Relaxed);
    let mut i = 0usize;
    g.bench_function("established_forward_60k_flows", |b| {
        b.iter(|| {
            i = (i + 7919) % flows.len();
            buf.reset(&flows[i]);
            black_box(p60.process(&t, &st, 0, &mut buf, 1, false))
        })
    });
    // The same in bursts of 32 with the worker's pre-pass (index, then
    // session prefetch for the whole burst): time per packet.
    let mut burst: Vec<VecBuf> = (0..32).map(|_| VecBuf::new(&flows[0])).collect();
    let mut hashes = [0u64; 32];
    g.throughput(Throughput::Elements(32));
    g.bench_function("established_forward_60k_flows_burst32_prefetch", |b| {
        b.iter(|| {
            for bb in burst.iter_mut() {
                i = (i + 7919) % flows.len();
                bb.reset(&flows[i]);
            }
            for (h, bb) in hashes.iter_mut().zip(&burst) {
                *h = p60.prefetch_index(bb.data());
            }
            for &h in &hashes {
                p60.prefetch_session(h);
            }
            for bb in burst.iter_mut() {
                black_box(p60.process(&t, &st, 0, bb, 1, false));
            }
        })
    });
    g.throughput(Throughput::Elements(1));
    assert_eq!(
        st.sessions_created
            .load(core::sync::atomic::Ordering::Relaxed),
        created,
        "no new sessions while measuring"
    );
    // New flows: session create + Maglev pick (table cleared per batch).
    let mut port = 0u16;
    g.bench_function("new_flow", |b| {
        b.iter_batched_ref(
            || pipeline(1 << 12),
            |np| {
                np.on_table(&t);
                port = port.wrapping_add(1);
                let f = udp_frame([198, 18, 0, 2], port, [198, 18, 200, 0], 80, P0);
                let mut nb = VecBuf::new(&f);
                black_box(np.process(&t, &st, 0, &mut nb, 0, false))
            },
            BatchSize::LargeInput,
        )
    });
    // The same per load-balancing algorithm (8 backends, the node-wide
    // per-backend counters assigned as the publisher does, so every
    // session also counts in its backend's counter).
    for alg in Algorithm::ALL {
        let mut spec = common::spec(16, 8);
        for s in &mut spec.services {
            s.algorithm = alg;
        }
        let ta = dataplane::table::ServiceTable::new(spec, 1);
        let counters = std::sync::Arc::new(BackendCounters::new(1024));
        CounterRegistry::new(counters.clone()).update(&ta, &[], true);
        let mut port = 0u16;
        g.bench_function(format!("new_flow_{}", alg.name()), |b| {
            b.iter_batched_ref(
                || {
                    let mut np = pipeline(1 << 12);
                    np.set_backend_counters(counters.clone());
                    np
                },
                |np| {
                    np.on_table(&ta);
                    port = port.wrapping_add(1);
                    let f = udp_frame([198, 18, 0, 2], port, [198, 18, 200, 0], 80, P0);
                    let mut nb = VecBuf::new(&f);
                    black_box(np.process(&ta, &st, 0, &mut nb, 0, false))
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("pieces");
    let svc = &t.services()[0];
    let mut h = 0u64;
    g.bench_function("maglev_pick_8_backends", |b| {
        b.iter(|| {
            h = fmix64(h.wrapping_add(1));
            black_box(svc.pick(h))
        })
    });
    // A new connection's pick by each load-balancing algorithm (8
    // backends; round-robin's shared counter uncontended here).
    for alg in Algorithm::ALL {
        let mut spec = common::spec(1, 8).services.remove(0);
        spec.algorithm = alg;
        let svc = Service::new(spec);
        // Counters as the publisher assigns them, with some load.
        let counters = std::sync::Arc::new(BackendCounters::new(8));
        for i in 0..8u32 {
            for _ in 0..(i * 7) % 5 {
                counters.open(i);
            }
        }
        svc.set_counters(ServiceCounters {
            counters,
            ids: (0..8).collect(),
        });
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut port = 0u16;
        g.bench_function(format!("pick_{}_8_backends", alg.name()), |b| {
            b.iter(|| {
                port = port.wrapping_add(1);
                let k = FlowKey {
                    src: Addr::v4([198, 18, 0, (port >> 8) as u8]),
                    dst: Addr::v4([198, 18, 200, 0]),
                    sport: port,
                    dport: 80,
                    proto: Proto::Udp,
                };
                black_box(svc.pick_new(black_box(&k), &mut rng))
            })
        });
    }
    // Parse: Ethernet type, IPv4 header (checksum verified), UDP ports.
    g.bench_function("parse_ipv4_udp", |b| {
        b.iter(|| {
            let f = black_box(&fwd[..]);
            let ip = Ipv4Packet::new_checked(&f[14..]).expect("IPv4");
            let ok = ip.verify_checksum();
            let u = UdpPacket::new_checked(&f[34..]).expect("UDP");
            black_box((ok, ip.src_addr(), ip.dst_addr(), u.src_port(), u.dst_port()))
        })
    });
    // Session lookup by tuple (hash + index + session compare) in the
    // 60k-session table: hits in a scattered order, and misses.
    let keys: Vec<FlowKey> = p60.sessions.iter().map(|s| s.original_key()).collect();
    let mut j = 0usize;
    g.bench_function("session_lookup_hit_60k", |b| {
        b.iter(|| {
            j = (j + 7919) % keys.len();
            black_box(p60.sessions.lookup(black_box(&keys[j])))
        })
    });
    g.bench_function("session_lookup_miss_60k", |b| {
        b.iter(|| {
            j = (j + 7919) % keys.len();
            let mut k = keys[j];
            k.dport = 81;
            black_box(p60.sessions.lookup(black_box(&k)))
        })
    });
    g.bench_function("key_hash", |b| {
        b.iter(|| {
            j = (j + 1) % keys.len();
            black_box(key_hash(black_box(&keys[j])))
        })
    });
    // Not a timing: the memory a session costs, printed for the record.
    let table_1m = SessionTable::new(1 << 20, Default::default());
    eprintln!(
        "session memory: {:.1} bytes per session (1,048,576-session table)",
        table_1m.memory_bytes() as f64 / table_1m.capacity() as f64
    );
    let hdr = &fwd[14..34];
    g.bench_function("ipv4_header_checksum", |b| {
        b.iter(|| black_box(checksum::ipv4_header(black_box(hdr))))
    });
    let big = sctp_frame([198, 18, 0, 2], 40000, [198, 18, 200, 0], 3868, 1400);
    g.bench_function("sctp_crc32c_1440_bytes", |b| {
        b.iter(|| black_box(sctp::crc32c(black_box(&big[34..]))))
    });
    g.bench_function("checksum_adjust_addr", |b| {
        b.iter(|| {
            black_box(checksum::adjust(
                black_box(0x1234),
                black_box(&[198, 18, 200, 0]),
                black_box(&[198, 19, 0, 10]),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
