//! The `pipeline` target: two workers over a realistic table, fed frames
//! the way the worker loop feeds them (burst pre-pass, process, hand-off to
//! the owner, neighbours shared, solicitations built, sessions expired).
use dataplane::addr::{Addr, Proto, SockAddr};
use dataplane::affinity::AffinityTable;
use dataplane::neigh::NeighborUpdate;
use dataplane::packet::{EthernetFrame, MacAddr};
use dataplane::pipeline::{PacketBuf, Pipeline, PipelineConfig, PortInfo, VecBuf, Verdict};
use dataplane::stats::WorkerStats;
use dataplane::table::{
    Frontend, Interface, MasqueradePolicy, NoBackends, Route, ServiceSpec, ServiceTable,
    StaticNeighbor, TableSpec,
};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

/// Workers of the fuzzed dataplane.
pub const WORKERS: u16 = 2;

/// Port MACs: 02:00:00:00:00:0<port>.
pub fn port_mac(port: u16) -> [u8; 6] {
    [2, 0, 0, 0, 0, port as u8]
}

/// Client MAC (port 0), backend MACs (port 1), router (port 0).
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xaa];
/// The next hop of the routed prefixes.
pub const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
/// Backend `i`'s MAC.
pub fn backend_mac(i: usize) -> [u8; 6] {
    [2, 0, 0, 0, 1, 0x11 + i as u8]
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn a(s: &str) -> Addr {
    Addr::from(ip(s))
}

fn sa(s: &str, port: u16) -> SockAddr {
    SockAddr::new(a(s), port)
}

/// Ports: 0 clients and routers, 1 backends, 2 a VLAN-tagged port with a
/// small MTU (backends too).
pub fn ports() -> Vec<PortInfo> {
    vec![
        PortInfo {
            mac: MacAddr(port_mac(0)),
            vlan: None,
            mtu: 1500,
        },
        PortInfo {
            mac: MacAddr(port_mac(1)),
            vlan: None,
            mtu: 1500,
        },
        PortInfo {
            mac: MacAddr(port_mac(2)),
            vlan: Some(100),
            mtu: 1280,
        },
    ]
}

/// Backends of a Service on `port`: three on port 1, one on the VLAN port.
pub fn backends(v6: bool, port: u16) -> Vec<SockAddr> {
    let hosts: [&str; 4] = if v6 {
        [
            "2001:2:0:1::11",
            "2001:2:0:1::12",
            "2001:2:0:1::13",
            "2001:2:0:2::11",
        ]
    } else {
        ["198.18.1.11", "198.18.1.12", "198.18.1.13", "198.18.2.11"]
    };
    hosts.iter().map(|h| sa(h, port)).collect()
}

struct Svc {
    name: &'static str,
    vip: &'static str,
    port: u16,
    proto: Proto,
    backends: Vec<SockAddr>,
}

impl Svc {
    fn spec(self) -> ServiceSpec {
        ServiceSpec {
            name: self.name.into(),
            frontend: Frontend {
                addr: sa(self.vip, self.port),
                proto: self.proto,
            },
            backends: self.backends,
            no_backends: NoBackends::Reject,
            masquerade: false,
            external: false,
            affinity_timeout: None,
            source_ranges: vec![],
            short_circuit: vec![],
            // Every algorithm gets some of the Services (by name, so the
            // same table every run).
            algorithm: dataplane::table::Algorithm::ALL
                [self.name.len() % dataplane::table::Algorithm::ALL.len()],
        }
    }
}

/// The table every pipeline input runs against: ClusterIP Services of both
/// families and all three protocols, Services without endpoints (REJECT),
/// a Local-policy frontend without local endpoints (DROP), ClientIP
/// affinity, loadBalancerSourceRanges, masquerade, NodePorts (with the
/// Local short-circuit), off-cluster masquerade, routes, static neighbours.
pub fn table_spec() -> TableSpec {
    let mut services = vec![];
    for (v6, vip, empty) in [
        (false, "198.18.100.1", "198.18.100.2"),
        (true, "2001:2::100", "2001:2::101"),
    ] {
        for (name, port, proto, target) in [
            ("web", 80, Proto::Tcp, 8080),
            ("dns", 53, Proto::Udp, 5353),
            ("sig", 80, Proto::Sctp, 9999),
        ] {
            services.push(
                Svc {
                    name,
                    vip,
                    port,
                    proto,
                    backends: backends(v6, target),
                }
                .spec(),
            );
            services.push(
                Svc {
                    name: "empty",
                    vip: empty,
                    port,
                    proto,
                    backends: vec![],
                }
                .spec(),
            );
        }
    }
    let mut local = Svc {
        name: "local",
        vip: "198.18.100.3",
        port: 80,
        proto: Proto::Tcp,
        backends: vec![],
    }
    .spec();
    local.no_backends = NoBackends::Drop;
    services.push(local);
    let mut aff = Svc {
        name: "affinity",
        vip: "198.18.100.4",
        port: 80,
        proto: Proto::Tcp,
        backends: backends(false, 8080),
    }
    .spec();
    aff.affinity_timeout = Some(10_800);
    services.push(aff);
    let mut aff6 = Svc {
        name: "affinity6",
        vip: "2001:2::104",
        port: 53,
        proto: Proto::Udp,
        backends: backends(true, 5353),
    }
    .spec();
    aff6.affinity_timeout = Some(1);
    services.push(aff6);
    let mut ranged = Svc {
        name: "ranged",
        vip: "198.18.100.5",
        port: 443,
        proto: Proto::Tcp,
        backends: backends(false, 8443),
    }
    .spec();
    ranged.source_ranges = vec![(a("198.18.0.0"), 30), (a("2001:2::"), 126)];
    services.push(ranged);
    let mut masq = Svc {
        name: "masq",
        vip: "198.18.100.6",
        port: 80,
        proto: Proto::Tcp,
        backends: backends(false, 8080),
    }
    .spec();
    masq.masquerade = true;
    services.push(masq);
    // NodePorts on the node addresses of ports 0 and 1 (Cluster policy:
    // masqueraded), and a Local-policy one with the short-circuit.
    for (node, proto, np, v6) in [
        ("198.18.0.1", Proto::Tcp, 30080, false),
        ("198.18.1.1", Proto::Tcp, 30080, false),
        ("198.18.0.1", Proto::Udp, 30053, false),
        ("198.18.0.1", Proto::Sctp, 30090, false),
        ("2001:2::1", Proto::Tcp, 30080, true),
        ("2001:2::1", Proto::Udp, 30053, true),
    ] {
        let mut s = Svc {
            name: "nodeport",
            vip: node,
            port: np,
            proto,
            backends: backends(v6, 8080),
        }
        .spec();
        s.external = true;
        s.masquerade = true;
        services.push(s);
    }
    let mut np_local = Svc {
        name: "nodeport-local",
        vip: "198.18.0.1",
        port: 30081,
        proto: Proto::Tcp,
        backends: vec![sa("198.18.1.11", 8080)],
    }
    .spec();
    np_local.external = true;
    np_local.short_circuit = backends(false, 8080);
    services.push(np_local);

    let mut neighbors = vec![
        StaticNeighbor {
            addr: a("198.18.0.2"),
            mac: MacAddr(CLIENT_MAC),
            port: 0,
        },
        StaticNeighbor {
            addr: a("2001:2::2"),
            mac: MacAddr(CLIENT_MAC),
            port: 0,
        },
        StaticNeighbor {
            addr: a("198.18.0.254"),
            mac: MacAddr(ROUTER_MAC),
            port: 0,
        },
        StaticNeighbor {
            addr: a("2001:2::fe"),
            mac: MacAddr(ROUTER_MAC),
            port: 0,
        },
    ];
    for v6 in [false, true] {
        for (i, b) in backends(v6, 0).into_iter().enumerate() {
            neighbors.push(StaticNeighbor {
                addr: b.addr,
                mac: MacAddr(backend_mac(i)),
                port: if i == 3 { 2 } else { 1 },
            });
        }
    }
    let mut interfaces = vec![];
    for (port, v4, v6) in [
        (0, "198.18.0.1", "2001:2::1"),
        (1, "198.18.1.1", "2001:2:0:1::1"),
        (2, "198.18.2.1", "2001:2:0:2::1"),
    ] {
        interfaces.push(Interface {
            port,
            addr: a(v4),
            prefix_len: 24,
        });
        interfaces.push(Interface {
            port,
            addr: a(v6),
            prefix_len: 64,
        });
    }
    TableSpec {
        services,
        interfaces,
        routes: vec![
            Route {
                prefix: a("198.19.0.0"),
                len: 16,
                port: 0,
                via: Some(a("198.18.0.254")),
            },
            Route {
                prefix: a("2001:2:0:ff::"),
                len: 64,
                port: 0,
                via: Some(a("2001:2::fe")),
            },
        ],
        neighbors,
        masquerade: MasqueradePolicy {
            all: false,
            cluster_cidrs: vec![(a("198.18.1.0"), 24), (a("2001:2:0:1::"), 64)],
        },
        retired: vec![],
    }
}

fn table() -> &'static ServiceTable {
    static T: OnceLock<ServiceTable> = OnceLock::new();
    T.get_or_init(|| ServiceTable::new(table_spec(), 1))
}

/// Milliseconds the high nibble of a record's control byte advances time.
const STEPS_MS: [u64; 16] = [
    0, 1, 10, 100, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000,
    3_600_000, 86_400_000, 7,
];

/// Final verdicts of a [`run_pipeline`] input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Transmitted (forwarded, translated, or generated answers).
    pub tx: usize,
    /// Dropped (counted by reason).
    pub dropped: usize,
    /// Consumed (e.g. ARP replies learned from).
    pub consumed: usize,
    /// Held for a neighbour resolution.
    pub held: usize,
    /// Handed to the other worker first.
    pub handed_off: usize,
}

/// Runs the frames encoded in `data` (see [`crate::frames`]) through fresh
/// workers. Panics only on a broken invariant.
pub fn pipeline(data: &[u8]) {
    std::hint::black_box(run_pipeline(data));
}

/// [`pipeline`], returning how the frames ended.
pub fn run_pipeline(data: &[u8]) -> Tally {
    let mut tally = Tally::default();
    let t = table();
    let affinity = Arc::new(AffinityTable::new(256));
    let mut pipes: Vec<Pipeline> = (0..WORKERS)
        .map(|id| {
            let mut p = Pipeline::new(
                id,
                WORKERS,
                ports(),
                PipelineConfig {
                    sessions: 256,
                    neighbors: 64,
                    affinity_slots: 256,
                    ..Default::default()
                },
            );
            p.set_affinity(affinity.clone());
            p.on_table(t);
            p
        })
        .collect();
    let stats: Vec<WorkerStats> = (0..WORKERS).map(|_| WorkerStats::default()).collect();
    let mut now = 1_000_000u64;
    let mut buf = VecBuf::new(&[]);
    let n_ports = ports().len() as u16;
    for (ctl, frame) in crate::frames(data) {
        now += STEPS_MS[usize::from(ctl >> 4)];
        let mut w = usize::from(ctl & 3) % pipes.len();
        let port = u16::from((ctl >> 2) & 3);
        buf.reset(frame);
        // The burst pre-pass (steps 1, 2 and 2b) and its candidate, as the
        // worker hands it to the receiving pipeline; a hand-off target
        // runs without one.
        let h = pipes[w].prefetch_index(frame);
        let mut candidate = Some(pipes[w].prefetch_session_alt(h, pipes[w].prefetch_session(h)));
        let mut handed_off = false;
        let v = loop {
            let v = pipes[w].process_hinted(t, &stats[w], port, &mut buf, now, handed_off, candidate);
            candidate = None;
            match v {
                Verdict::HandOff(to) => {
                    tally.handed_off += 1;
                    assert!(!handed_off, "a handed-off packet was handed off again");
                    assert!(usize::from(to) < pipes.len() && usize::from(to) != w);
                    handed_off = true;
                    w = usize::from(to);
                }
                _ => break v,
            }
        };
        match v {
            Verdict::Tx(p) => {
                tally.tx += 1;
                assert!(p < n_ports, "Tx to unknown port {p}");
                assert!(
                    EthernetFrame::new_checked(buf.data()).is_ok(),
                    "Tx of a frame that is not Ethernet"
                );
            }
            Verdict::Hold { port, .. } => {
                tally.held += 1;
                assert!(port < n_ports);
            }
            Verdict::Drop(r) => {
                tally.dropped += 1;
                stats[w].count_drop(r);
            }
            Verdict::Consumed => tally.consumed += 1,
            Verdict::HandOff(_) => unreachable!(),
            Verdict::ToKernel(_) | Verdict::FromKernel(_) => {
                panic!("{v:?}: no exception port is configured")
            }
        }
        // What the worker loop does between bursts.
        let learned: Vec<NeighborUpdate> = pipes[w].take_learned().collect();
        for (i, p) in pipes.iter_mut().enumerate() {
            if i != w {
                for u in &learned {
                    p.learn_from_peer(*u, now);
                }
            }
        }
        for p in &mut pipes {
            let wanted: Vec<(u16, Addr)> = p.take_solicits().collect();
            for (port, target) in wanted {
                let mut out = [0u8; 128];
                if let Some(n) = p.build_solicit(t, port, target, &mut out) {
                    assert!(n <= out.len() && n >= 14);
                    assert!(EthernetFrame::new_checked(&out[..n]).is_ok());
                }
            }
            p.sessions.expire(now, 32);
        }
    }
    let drops: u64 = stats.iter().map(|s| s.total_drops()).sum();
    assert_eq!(drops as usize, tally.dropped, "every drop counted");
    tally
}
