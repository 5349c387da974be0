//! Frames, tables and pipelines shared by the criterion benches
//! (`benches/pipeline.rs`), the instruction-count driver
//! (`examples/hotpath.rs`) and (its [`BackendChanges`]) the replay bench.
#![allow(dead_code)]
use dataplane::addr::{fmix64, Addr, Proto, SockAddr};
use dataplane::packet::{checksum, sctp, EthernetFrame, MacAddr};
use dataplane::pipeline::{Pipeline, PipelineConfig, PortInfo};
use dataplane::table::{
    FlushEpoch, Frontend, Interface, Service, ServiceSpec, ServiceTable, StaticNeighbor, TableSpec,
};
use std::sync::Arc;

pub const P0: MacAddr = MacAddr([2, 0, 0, 0, 0, 0]);
pub const P1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

/// A plain Service port (no masquerade, affinity or source ranges):
/// `frontend` over `proto`, load-balanced to `backends`.
pub fn service(
    name: String,
    proto: Proto,
    frontend: SockAddr,
    backends: Vec<SockAddr>,
) -> ServiceSpec {
    ServiceSpec {
        source_ranges: vec![],
        affinity_timeout: None,
        masquerade: false,
        external: false,
        no_backends: Default::default(),
        short_circuit: vec![],
        algorithm: Default::default(),
        name,
        frontend: Frontend {
            addr: frontend,
            proto,
        },
        backends,
    }
}

pub fn table(services: usize, backends: usize) -> ServiceTable {
    ServiceTable::new(spec(services, backends), 1)
}

/// The spec [`table`] builds from.
pub fn spec(services: usize, backends: usize) -> TableSpec {
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
        spec.services.push(service(
            format!("bench/svc{s}"),
            Proto::Udp,
            SockAddr::new(Addr::v4([198, 18, 200 + (s >> 8) as u8, s as u8]), 80),
            (0..backends)
                .map(|b| SockAddr::new(Addr::v4([198, 19, (b >> 8) as u8, 10 + b as u8]), 8080))
                .collect(),
        ));
    }
    // One SCTP Service on the first VIP (port 3868 -> 9999: a port rewrite).
    spec.services.push(service(
        "bench/sctp".into(),
        Proto::Sctp,
        SockAddr::new(Addr::v4([198, 18, 200, 0]), 3868),
        (0..backends)
            .map(|b| SockAddr::new(Addr::v4([198, 19, (b >> 8) as u8, 10 + b as u8]), 9999))
            .collect(),
    ));
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
    spec
}

/// Distinct backend addresses of [`wide_spec`] (as in the replay bench).
pub const WIDE_ADDRS: usize = 60_000;

/// The VIP of Service `s` of [`wide_spec`].
pub fn wide_vip(s: usize) -> [u8; 4] {
    [198, 18, 128 + (s >> 8) as u8, s as u8]
}

/// `services` UDP Services × `per` backends, every backend its own
/// endpoint: backend `k` on address `k % 60,000` (198.19.1.1 ...) with a
/// static neighbour each, port 8080 + `k / 60,000` — the replay bench's
/// 10,000 Services × 10 backends plan. VIPs: [`wide_vip`].
pub fn wide_spec(services: usize, per: usize) -> TableSpec {
    let addr = |k: usize| {
        let a = k % WIDE_ADDRS;
        [198, 19, 1 + (a / 250) as u8, 1 + (a % 250) as u8]
    };
    let mut spec = spec(0, 0);
    spec.services.clear();
    spec.neighbors.retain(|n| n.port == 0);
    for s in 0..services {
        spec.services.push(service(
            format!("bench/wide{s}"),
            Proto::Udp,
            SockAddr::new(Addr::v4(wide_vip(s)), 80),
            (0..per)
                .map(|j| {
                    let k = s * per + j;
                    SockAddr::new(Addr::v4(addr(k)), 8080 + (k / WIDE_ADDRS) as u16)
                })
                .collect(),
        ));
    }
    for a in 0..(services * per).min(WIDE_ADDRS) {
        spec.neighbors.push(StaticNeighbor {
            addr: Addr::v4(addr(a)),
            mac: MacAddr([2, 0, 1, 0, (a >> 8) as u8, a as u8]),
            port: 1,
        });
    }
    spec
}

/// A 64-byte Ethernet + IPv4 + UDP frame (18 bytes of payload), checksums valid.
pub fn udp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, dmac: MacAddr) -> Vec<u8> {
    udp_frame_len(src, sport, dst, dport, dmac, 18)
}

/// Ethernet + IPv4 + UDP with `payload` bytes, checksums valid.
pub fn udp_frame_len(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    dmac: MacAddr,
    payload: usize,
) -> Vec<u8> {
    let udp_len = 8 + payload;
    let mut f = vec![0u8; 14 + 20 + udp_len];
    EthernetFrame::emit(&mut f, dmac, MacAddr([2, 0, 0, 0, 0, 0xaa]), 0x0800).unwrap();
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
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
    u[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let c = checksum::l4_v4(src, dst, 17, &u[..udp_len]);
    u[6..8].copy_from_slice(&c.to_be_bytes());
    f
}

/// Ethernet + IPv4 + SCTP with one DATA chunk of `payload` bytes, CRC32c valid.
pub fn sctp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: usize) -> Vec<u8> {
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

/// The IPv6 client.
pub const V6_CLIENT: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// The IPv6 VIP of Service `s`: 2001:2:0:200::s.
pub fn v6_vip(s: usize) -> [u8; 16] {
    let mut a = [0x20, 0x01, 0, 2, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    a[14] = (s >> 8) as u8;
    a[15] = s as u8;
    a
}

/// Backend `b` of every IPv6 Service: 2001:2:1::(10+b) on port 1.
pub fn v6_backend(b: usize) -> [u8; 16] {
    let mut a = [0x20, 0x01, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    a[14] = (b >> 8) as u8;
    a[15] = 10 + b as u8;
    a
}

/// [`spec`]'s shape on IPv6: client subnet 2001:2::/64 on port 0, backends
/// in 2001:2:1::/64 on port 1 (static neighbours), UDP Services.
pub fn spec_v6(services: usize, backends: usize) -> TableSpec {
    let mut spec = TableSpec {
        interfaces: vec![
            Interface {
                port: 0,
                addr: Addr::v6([0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                prefix_len: 64,
            },
            Interface {
                port: 1,
                addr: Addr::v6([0x20, 0x01, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                prefix_len: 64,
            },
        ],
        ..Default::default()
    };
    for s in 0..services {
        spec.services.push(service(
            format!("bench/svc6-{s}"),
            Proto::Udp,
            SockAddr::new(Addr::v6(v6_vip(s)), 80),
            (0..backends)
                .map(|b| SockAddr::new(Addr::v6(v6_backend(b)), 8080))
                .collect(),
        ));
    }
    for b in 0..backends {
        spec.neighbors.push(StaticNeighbor {
            addr: Addr::v6(v6_backend(b)),
            mac: MacAddr([2, 0, 0, 1, 0, b as u8]),
            port: 1,
        });
    }
    spec.neighbors.push(StaticNeighbor {
        addr: Addr::v6(V6_CLIENT),
        mac: MacAddr([2, 0, 0, 0, 0, 0xaa]),
        port: 0,
    });
    spec
}

/// Ethernet + IPv6 + UDP with `payload` bytes, checksum valid.
pub fn udp6_frame(
    src: [u8; 16],
    sport: u16,
    dst: [u8; 16],
    dport: u16,
    dmac: MacAddr,
    payload: usize,
) -> Vec<u8> {
    let udp_len = 8 + payload;
    let mut f = vec![0u8; 14 + 40 + udp_len];
    EthernetFrame::emit(&mut f, dmac, MacAddr([2, 0, 0, 0, 0, 0xaa]), 0x86dd).unwrap();
    let ip = &mut f[14..];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    ip[6] = 17;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src);
    ip[24..40].copy_from_slice(&dst);
    let u = &mut ip[40..];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let c = checksum::l4_v6(&src, &dst, 17, &u[..udp_len]);
    u[6..8].copy_from_slice(&c.to_be_bytes());
    f
}

pub fn pipeline(sessions: usize) -> Pipeline {
    pipeline_with(sessions, PipelineConfig::default().neighbors)
}

/// [`pipeline`] with a neighbour cache of `neighbors` entries.
pub fn pipeline_with(sessions: usize, neighbors: usize) -> Pipeline {
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
            neighbors,
            ..Default::default()
        },
    )
}

/// Backend changes published the way the control plane publishes them:
/// change `i` touches Service `(i / 2) % services` — the even change adds
/// an extra backend, the odd one after it removes it again — and rebuilds
/// only that Service (its Maglev table), sharing the others with the
/// previous table (`ServiceTable::with_services`), with the flush epoch
/// carried over (`ServiceTable::inherit_flush_epoch`: only a publication
/// that removes a backend makes sessions revalidate). The replay bench's
/// `updates` scenario and the hotpath's `fwd60k_updates` use it.
pub struct BackendChanges {
    /// Everything but the Services.
    rest: TableSpec,
    /// The Services changes start from.
    specs: Vec<ServiceSpec>,
    /// The Services of the current table.
    built: Vec<Arc<Service>>,
    /// The current table's flush epoch.
    epoch: FlushEpoch,
    /// How many of `specs` (the first ones) the changes go round.
    services: usize,
}

impl BackendChanges {
    /// Changes to the first `services` of `spec`'s Services; the initial
    /// table ([`BackendChanges::table`] as version 1) starts the first epoch.
    pub fn new(mut spec: TableSpec, services: usize) -> BackendChanges {
        let specs = core::mem::take(&mut spec.services);
        assert!(services >= 1 && services <= specs.len());
        let built = specs
            .iter()
            .map(|s| Arc::new(Service::new(s.clone())))
            .collect();
        BackendChanges {
            rest: spec,
            specs,
            built,
            epoch: FlushEpoch::new(1, 1, None),
            services,
        }
    }

    /// The current table as `version`.
    pub fn table(&self, version: u64) -> ServiceTable {
        ServiceTable::with_services(self.rest.clone(), self.built.clone(), version)
    }

    /// Applies change `i` (`extra(s)`: Service `s`'s extra backend) and
    /// returns the new table as `version`.
    pub fn apply(
        &mut self,
        i: u64,
        version: u64,
        extra: impl Fn(usize) -> SockAddr,
    ) -> ServiceTable {
        let s = (i / 2 % self.services as u64) as usize;
        let mut spec = self.specs[s].clone();
        if i.is_multiple_of(2) {
            spec.backends.push(extra(s));
        }
        let prev = self.built.clone();
        self.built[s] = Arc::new(Service::new(spec));
        let mut t = self.table(version);
        t.inherit_flush_epoch(&self.epoch, &prev);
        self.epoch = t.epoch.clone();
        t
    }
}

/// A fixed-seed random permutation of `0..n` (Fisher–Yates over splitmix64).
pub fn permutation(n: u32, seed: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    let mut s = seed;
    for i in (1..v.len()).rev() {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let j = (fmix64(s) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}
