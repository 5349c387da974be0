//! Per-packet cost of the pure pipeline (no DPDK): criterion micro-benchmarks.
//!
//! `cargo bench --bench pipeline`. Each iteration copies a 64-byte frame into
//! a buffer (measured separately as `copy_only`) and runs it through
//! [`Pipeline::process`]: parse, session lookup, DNAT/reverse rewrite with
//! incremental checksums, route, neighbour, L2 rewrite. The SCTP case
//! carries a 100-byte DATA chunk: CRC32c check plus recomputation after the
//! port rewrite.
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dataplane::addr::{fmix64, Addr, Proto, SockAddr};
use dataplane::packet::{checksum, sctp, EthernetFrame, MacAddr};
use dataplane::pipeline::{PacketBuf, Pipeline, PipelineConfig, PortInfo, VecBuf, Verdict};
use dataplane::stats::WorkerStats;
use dataplane::table::{Frontend, Interface, ServiceSpec, ServiceTable, StaticNeighbor, TableSpec};

const P0: MacAddr = MacAddr([2, 0, 0, 0, 0, 0]);
const P1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

fn table(services: usize, backends: usize) -> ServiceTable {
    let mut spec = TableSpec {
        interfaces: vec![
            Interface {
                port: 0,
                addr: Addr::v4([198, 18, 0, 1]),
                prefix_len: 16,
            },
            Interface {
                port: 1,
                addr: Addr::v4([198, 19, 0, 1]),
                prefix_len: 16,
            },
        ],
        ..Default::default()
    };
    for s in 0..services {
        spec.services.push(ServiceSpec {
            source_ranges: vec![],
            affinity_timeout: None,
            masquerade: false,
            external: false,
            no_backends: Default::default(),
            short_circuit: vec![],
            name: format!("bench/svc{s}"),
            frontend: Frontend {
                addr: SockAddr::new(Addr::v4([198, 18, 200 + (s >> 8) as u8, s as u8]), 80),
                proto: Proto::Udp,
            },
            backends: (0..backends)
                .map(|b| SockAddr::new(Addr::v4([198, 19, (b >> 8) as u8, 10 + b as u8]), 8080))
                .collect(),
        });
    }
    // One SCTP Service on the first VIP (port 3868 -> 9999: a port rewrite).
    spec.services.push(ServiceSpec {
        source_ranges: vec![],
        affinity_timeout: None,
        masquerade: false,
        external: false,
        no_backends: Default::default(),
        short_circuit: vec![],
        name: "bench/sctp".into(),
        frontend: Frontend {
            addr: SockAddr::new(Addr::v4([198, 18, 200, 0]), 3868),
            proto: Proto::Sctp,
        },
        backends: (0..backends)
            .map(|b| SockAddr::new(Addr::v4([198, 19, (b >> 8) as u8, 10 + b as u8]), 9999))
            .collect(),
    });
    for b in 0..backends {
        spec.neighbors.push(StaticNeighbor {
            addr: Addr::v4([198, 19, (b >> 8) as u8, 10 + b as u8]),
            mac: MacAddr([2, 0, 0, 1, 0, b as u8]),
            port: 1,
        });
    }
    spec.neighbors.push(StaticNeighbor {
        addr: Addr::v4([198, 18, 0, 2]),
        mac: MacAddr([2, 0, 0, 0, 0, 0xaa]),
        port: 0,
    });
    ServiceTable::new(spec, 1)
}

/// A 64-byte Ethernet + IPv4 + UDP frame (18 bytes of payload), checksums valid.
fn udp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, dmac: MacAddr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    EthernetFrame::emit(&mut f, dmac, MacAddr([2, 0, 0, 0, 0, 0xaa]), 0x0800).unwrap();
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = checksum::ipv4_header(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let u = &mut ip[20..];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&26u16.to_be_bytes());
    let c = checksum::l4_v4(src, dst, 17, &u[..26]);
    u[6..8].copy_from_slice(&c.to_be_bytes());
    f
}

/// Ethernet + IPv4 + SCTP with one DATA chunk of `payload` bytes, CRC32c valid.
fn sctp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: usize) -> Vec<u8> {
    let sctp_len = 12 + 16 + payload.next_multiple_of(4);
    let mut f = vec![0u8; 14 + 20 + sctp_len];
    EthernetFrame::emit(&mut f, P0, MacAddr([2, 0, 0, 0, 0, 0xaa]), 0x0800).unwrap();
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + sctp_len) as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 132;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = checksum::ipv4_header(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let s = &mut ip[20..];
    s[0..2].copy_from_slice(&sport.to_be_bytes());
    s[2..4].copy_from_slice(&dport.to_be_bytes());
    s[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    s[12] = 0; // DATA
    s[13] = 3;
    s[14..16].copy_from_slice(&((16 + payload) as u16).to_be_bytes());
    sctp::fill_checksum(s);
    f
}

fn pipeline(sessions: usize) -> Pipeline {
    Pipeline::new(
        0,
        1,
        vec![
            PortInfo {
                mac: P0,
                vlan: None,
                mtu: 1500,
            },
            PortInfo {
                mac: P1,
                vlan: None,
                mtu: 1500,
            },
        ],
        PipelineConfig {
            sessions,
            ..Default::default()
        },
    )
}

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
