//! In-process replay benchmark: the real worker on real mbufs.
//!
//! ```sh
//! cargo bench --bench replay -- [--quick] [--out FILE] [--scenario NAME...] [--hugepages] [--retries N]
//!     [--updates-duration SECS] [--updates-rate N]
//! ```
//!
//! Runs the product's worker (`dataplane::worker::start`, the poll loop the
//! binary runs) over two ring-PMD ports (`Port::from_rings`) in this process
//! and reads cycles per packet from the worker itself: Δ`busy_cycles` /
//! Δ`rx_packets` of its [`WorkerStats`] over a measured window. No external
//! traffic generator limits or blurs the figure. Needs root (EAL).
//!
//! **Layout.** EAL runs with `--lcores 0@0,1@1,2@0`: the main lcore (this
//! thread, the generator) on CPU 0, worker lcore 1 on CPU 1. Lcore 2 (also on
//! CPU 0) is the second worker of the two-worker scenarios only, during which
//! the generator does not run. Port 0 (198.18.0.1/16) faces the clients
//! (198.18.1.1–64, static neighbours), port 1 (198.19.0.1/16) the backends
//! (198.19.x.y, static neighbours). Service VIPs are 198.18.128.0/17, port 80.
//! All addresses are in 198.18.0.0/15.
//!
//! **IPv6** (`established_60k_v6`, `reply_60k_v6`): `established_60k` /
//! `reply_60k` with every address of
//! that plan mapped into 2001:2::/48 — 2001:2:0:N::a.b.c.d for the IPv4
//! address a.b.c.d, N = 0 for the clients (port 0, 2001:2::/64), 1 for the
//! backends (port 1, 2001:2:0:1::/64), 2 for the VIPs — and 80-byte frames
//! (84 on the wire: IPv6 + UDP with the same 18-byte payload). The checks
//! are the same (the hop limit for the TTL; the full parse verifies the UDP
//! checksum over the IPv6 pseudo-header and that it is not 0). Every
//! established scenario reports `fast_path_share`, the share of its
//! packets the established-flow fast path took.
//!
//! **Masquerade** (`established_60k_masq`, `established_1m_masq`):
//! `established_60k` / `established_1m` with every Service masquerading
//! (as `externalTrafficPolicy: Cluster` does for clients off the cluster):
//! each forward packet also leaves from port 1's address with a port of
//! the proxy's, and the fast path reads the session's masquerade endpoint
//! from the session table's side array (prefetched by the worker's
//! pre-pass). The check requires that source instead of the client's.
//!
//! **Generator mode** (one worker; all scenarios but the two below): a
//! warm-up pass sends the first packet of every flow (creating its session,
//! recording its backend); then 2048 mbufs circulate: the generator drains
//! the egress port's tx ring, checks a sample of what the worker sent,
//! restores the frame bytes from prebuilt templates (flows in a fixed-seed
//! random order) and re-enqueues them in bulk on the ingress port's rx ring,
//! which so stays well filled. The counters are read before and after the
//! window (after a short ramp). `avg_burst` is rx packets per loop iteration
//! over the window, idle iterations included: ≈ 32 means the worker found a
//! full burst every time it looked (saturated).
//!
//! **Prefill mode** (`two_workers` with its one-worker baseline, `handoff`):
//! with two workers on a 2-CPU machine the generator must not compete, so
//! every round fills the rx rings with 65,536 packets *before* any of them is
//! released to the workers (all pointers are enqueued in one go), the
//! generator sleeps while the workers drain them, and the counters are read
//! before the fill and after the last packet came out. Each flow's packets go
//! to its owner's queue (`addr::owner_of`), or, for `handoff`, to the other
//! worker's queue, so that every packet crosses the hand-off ring. Here
//! `avg_burst` is measured over the parts of each drain during which the
//! worker's queue still held a full burst. The hand-off ring is enlarged to
//! a whole round (see `HANDOFF_RING`).
//!
//! **New connections**: every packet is a TCP SYN of a brand-new flow
//! (session create + Maglev pick). The session table (capacity 2^21, quick
//! 2^19) is first filled to 90% with short-lived UDP sessions that expire
//! before the window, so that the measured connections reuse memory that is
//! already mapped (steady state, not first-touch page faults); at most as
//! many connections as were live at the end of that pre-warm are measured,
//! so the table never fills. Memory per session is
//! `SessionTable::memory_bytes() / capacity()` of a table of that capacity.
//!
//! **Hitless updates** (`updates`, issue 5): the `established_60k` workload
//! in generator mode, measured in back-to-back pairs of windows (10 x 0.3 s
//! in `--quick`, 60 x 0.5 s in a full run: this host's throughput drifts by
//! several percent over seconds, and only pairs that alternate faster than
//! it drifts resolve a 1% dip: 3 pairs of 5 s with almost no changes (one
//! per window) gave a dip of -8.3%, its pairs -19% to -0.4%; 60 pairs of
//! 0.5 s, 0.03%; `--updates-pairs` sets the count, `--updates-duration` the
//! total of the update windows), one without and one with backend changes, the order
//! alternating (B U, U B, ...). During an update window a plain thread on
//! CPU 0 (beside the generator) publishes a new `ServiceTable` through the
//! workers' `Rcu` 100 times per second (`--updates-rate`), evenly paced:
//! alternately an extra backend (a new address no flow uses) is added to one
//! of the 16 Services and removed again, rotating over the Services, the
//! version incremented each time; no backend an established flow uses is
//! removed (that would flush its UDP flows, a correct move). Reported: drops
//! (must be 0), flows moved to another backend (the per-flow backend check
//! on every 8th output, and no session created or flushed: must be 0), the
//! worker's Mpps with and without updates (TSC Hz / busy cycles per packet)
//! and the dip, and per publication the time from the `publish` call until
//! every worker's `table_version` shows the new version (p50/p99/max; the
//! publisher busy-polls both the grace period and the counter) and the RCU
//! grace period `publish` returns. Outcomes `updates_baseline` and
//! `updates`, and the top-level JSON object `updates`. The dip is a target
//! (< 1%), reported, not enforced.
//!
//! **Checks** (a scenario is `valid` only if all hold; the process exits
//! non-zero otherwise): every warm-up output and every 8th measured output is
//! checked field by field (DNAT to a backend of the flow's Service with that
//! backend's MAC, the flow kept the backend it got in the warm-up, client
//! address and port kept, reply source rewritten to the VIP, TTL
//! decremented, sent by the flow's owner worker); every 4096th (and every
//! warm-up output up to 100k flows) is also parsed by etherparse with IPv4
//! and TCP/UDP checksums verified. The proxy must count no drops, create no
//! session while measuring established traffic, transmit everything it
//! received, and leave nothing on the wrong port; every mbuf must come back.
//!
//! **Noise.** TSC cycles run on while a thread is preempted, so busy cycles
//! include time other processes took. Each worker thread's on-CPU time in the
//! window (`/proc/self/task/TID/schedstat`) is reported as `cpu_share`; a
//! window where a worker had less than 95% of its CPU is flagged
//! `contended`. That does not make a scenario invalid (validity is about
//! correctness), but its cycle figures are then upper bounds. `--retries N`
//! re-runs a contended scenario up to N times and keeps the attempt whose
//! workers had the most CPU.
//!
//! **Output**: a table on stdout and JSON (default
//! `bench-results/replay.json`): `env`, `scenarios` (one object per
//! measured configuration, with per-worker counters), `new_connections`,
//! `handoff` (`extra_cycles_per_packet` = handoff − two_workers), `updates`.
#![forbid(unsafe_code)]

use anyhow::{bail, ensure, Context, Result};
use dataplane::addr::{fmix64, owner_of, Addr, Proto, SockAddr};
use dataplane::dpdk::rcu::{Leaked, Rcu};
use dataplane::dpdk::{self, Eal, Mbuf, Mempool, Port, Ring, RxBurst, TxBuffer};
use dataplane::packet::{checksum, MacAddr};
use dataplane::pipeline::{PacketBuf, PipelineConfig, SNAT_PORTS};
use dataplane::session::{SessionTable, Timeouts};
use dataplane::stats::{DropReason, WorkerStats};
use dataplane::table::{Frontend, Interface, ServiceSpec, ServiceTable, StaticNeighbor, TableSpec};
use dataplane::worker::{self, DataplaneConfig, PortSpec, Running};
use etherparse::{PacketHeaders, PayloadSlice, TransportHeader};
use serde_json::{json, Map, Value};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

// ---- constants ----

/// EAL lcore map: main (generator) on CPU 0, worker 1 on CPU 1, worker 2 on CPU 0.
const LCORE_MAP: &str = "0@0,1@1,2@0";
/// The worker lcore on CPU 1 (the only worker of one-worker scenarios).
const LCORE_CPU1: u32 = 1;
/// The second worker's lcore, on CPU 0 (two-worker scenarios only).
const LCORE_CPU0: u32 = 2;
/// EAL memory with `--no-huge` (MiB).
const EAL_MEMORY_MB: u32 = 1024;
/// 2 MiB hugepages reserved for `--hugepages` (restored afterwards).
const HUGEPAGES_WANT: u64 = 640;
const HUGEPAGES_SYSFS: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

/// Frame length without the FCS: 64 bytes on the wire.
const FRAME_LEN: usize = 60;
/// Bytes of a generated IPv6 frame: Ethernet + IPv6 + UDP with the same
/// 18-byte payload as the IPv4 frames' (84 bytes on the wire).
const FRAME6_LEN: usize = 80;
/// UDP payload marker; the flow id follows it.
const MAGIC: [u8; 4] = *b"DKPR";
/// "No backend recorded yet".
const UNSET: u32 = u32::MAX;

/// Generator mbufs (one pool for the whole run).
const POOL_MBUFS: u32 = (1 << 18) - 1;
/// RTE_PKTMBUF_HEADROOM (128) + room for a 60-byte frame.
const MBUF_DATA_ROOM: u16 = 128 + 128;
/// Wire ring size per queue in generator mode.
const GEN_RING: u32 = 4096;
/// Mbufs circulating in generator mode.
const GEN_IN_FLIGHT: usize = 2048;
/// Mbufs in flight during warm-up passes.
const WARM_IN_FLIGHT: usize = 1024;
/// Packets per prefill round (all queues together).
const PREFILL_PACKETS: usize = 1 << 16;
/// How often the sleeping generator looks at the rings during a drain (each
/// look briefly preempts the worker on CPU 0).
const PREFILL_POLL: Duration = Duration::from_millis(1);
/// Wire ring size per queue in prefill mode (holds a whole round).
const PREFILL_RING: u32 = 1 << 17;
/// Hand-off ring of the two-worker scenarios (the product default is 1024):
/// large enough for a whole round, so a worker descheduled by the host (this
/// is a shared 2-CPU VM) cannot make the other one drop.
const HANDOFF_RING: u32 = 1 << 17;
/// The product default hand-off ring.
const DEFAULT_HANDOFF_RING: u32 = 1024;
/// Every Nth measured output is checked field by field...
const CHECK_EVERY: u64 = 8;
/// ...and every Nth is fully parsed with checksums verified.
const FULL_CHECK_EVERY: u64 = 4096;
/// A worker that received fewer packets per loop than this was not saturated.
const SATURATED_BURST: f64 = 28.0;
/// ...nor one that was idle more than this share of its cycles.
const SATURATED_IDLE: f64 = 0.02;
/// A worker thread with less of its CPU than this was contended (other load).
const CONTENDED_SHARE: f64 = 0.95;
/// Counters are read one by one while the worker runs: counts of one window
/// may differ by a burst at each edge.
const EDGE: u64 = 2 * dpdk::BURST as u64;

/// Client addresses 198.18.1.1 ..= 198.18.1.64 (static neighbours on port 0).
const CLIENT_ADDRS: u32 = 64;
/// First client port.
const FIRST_PORT: u32 = 1024;
/// Source addresses of brand-new connections: 198.18.64.0/18.
const NEW_ADDRS: u32 = 16384;
/// Distinct backend addresses (more backends share addresses, on other ports).
const BACKEND_ADDRS: u32 = 60_000;
const SVC_PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;

const SCENARIOS: [&str; 14] = [
    "established_1flow",
    "established_4k",
    "established_60k",
    "established_60k_v6",
    "established_1m",
    "established_60k_masq",
    "established_1m_masq",
    "established_60k_10k_services",
    "reply_60k",
    "reply_60k_v6",
    "new_connections",
    "two_workers",
    "handoff",
    "updates",
];

/// Backend changes per second of the `updates` scenario (issue 5).
const UPDATE_RATE: f64 = 100.0;
/// The throughput dip the issue allows during updates (%): reported, not enforced.
const DIP_TARGET_PERCENT: f64 = 1.0;
/// A publication whose grace period (or whose version on every worker)
/// takes longer than this is a failure.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

// ---- options ----

struct Opts {
    quick: bool,
    out: PathBuf,
    scenarios: Vec<String>,
    hugepages: bool,
    retries: u32,
    updates_duration: Option<f64>,
    updates_rate: Option<f64>,
    updates_pairs: Option<usize>,
}

const USAGE: &str = "usage: cargo bench --bench replay -- [--quick] [--out FILE] \
[--scenario NAME...] [--hugepages] [--retries N] [--updates-duration SECS] [--updates-rate N] \
[--updates-pairs N]\n\
--retries N: run a scenario whose window was contended (a worker had < 95% of its CPU) up to N \
more times, keep the least contended\n--updates-duration SECS: total time of the `updates` \
scenario's windows with backend changes (default 30, --quick 3; as long again without \
changes for the baseline)\n--updates-rate N: backend changes per second in `updates` (default 100)\n\
--updates-pairs N: baseline/updates window pairs the duration is split into (default 60, --quick \
10)\n\
scenarios: established_1flow established_4k established_60k established_60k_v6 established_1m established_60k_10k_services \
reply_60k reply_60k_v6 new_connections two_workers handoff updates";

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        quick: false,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-results/replay.json"),
        scenarios: vec![],
        hugepages: false,
        retries: 0,
        updates_duration: None,
        updates_rate: None,
        updates_pairs: None,
    };
    let mut it = std::env::args().skip(1).peekable();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--hugepages" => o.hugepages = true,
            "--out" => o.out = PathBuf::from(it.next().context("--out needs a file name")?),
            "--retries" => {
                o.retries = it
                    .next()
                    .context("--retries needs a number")?
                    .parse()
                    .context("--retries needs a number")?
            }
            "--updates-duration" | "--updates-rate" => {
                let v: f64 = it
                    .next()
                    .with_context(|| format!("{a} needs a number"))?
                    .parse()
                    .with_context(|| format!("{a} needs a number"))?;
                ensure!(v.is_finite() && v > 0.0, "{a} must be positive");
                if a == "--updates-rate" {
                    ensure!(v <= 10_000.0, "--updates-rate: at most 10000 per second");
                    o.updates_rate = Some(v);
                } else {
                    ensure!(v <= 3600.0, "--updates-duration: at most 3600 s");
                    o.updates_duration = Some(v);
                }
            }
            "--updates-pairs" => {
                let v: usize = it
                    .next()
                    .context("--updates-pairs needs a number")?
                    .parse()
                    .context("--updates-pairs needs a number")?;
                ensure!(
                    (1..=10_000).contains(&v),
                    "--updates-pairs: from 1 to 10000"
                );
                o.updates_pairs = Some(v);
            }
            "--scenario" | "--scenarios" => {
                let mut any = false;
                while let Some(n) = it.next_if(|n| !n.starts_with("--")) {
                    o.scenarios
                        .extend(n.split(',').filter(|s| !s.is_empty()).map(String::from));
                    any = true;
                }
                ensure!(any, "--scenario needs at least one name\n{USAGE}");
            }
            // cargo bench appends --bench to the arguments of harness = false benches.
            "--bench" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    for s in &o.scenarios {
        ensure!(
            SCENARIOS.contains(&s.as_str()),
            "unknown scenario {s:?}\n{USAGE}"
        );
    }
    Ok(o)
}

/// Durations and sizes of a run.
struct Params {
    window: Duration,
    ramp: Duration,
    rounds: usize,
    new_conn_capacity: usize,
    prewarm_udp_ms: u64,
    flows_1m: u32,
    /// `updates`: total length of the windows with backend changes.
    updates_duration: Duration,
    /// `updates`: baseline/updates window pairs the duration is split into
    /// (many short pairs: the host's throughput drifts over seconds, and
    /// pairs alternating faster than it drifts cancel the drift).
    updates_pairs: usize,
    /// `updates`: backend changes per second.
    updates_rate: f64,
}

impl Params {
    fn new(quick: bool) -> Params {
        if quick {
            Params {
                window: Duration::from_secs(1),
                ramp: Duration::from_millis(100),
                rounds: 20,
                new_conn_capacity: 1 << 19,
                prewarm_udp_ms: 1_500,
                flows_1m: 1_000_000,
                updates_duration: Duration::from_secs(3),
                updates_pairs: 10,
                updates_rate: UPDATE_RATE,
            }
        } else {
            Params {
                window: Duration::from_secs(10),
                ramp: Duration::from_millis(300),
                rounds: 150,
                new_conn_capacity: 1 << 21,
                prewarm_udp_ms: 4_000,
                flows_1m: 1_000_000,
                updates_duration: Duration::from_secs(30),
                updates_pairs: 60,
                updates_rate: UPDATE_RATE,
            }
        }
    }
}

// ---- address plan ----

/// An IPv4 endpoint.
type Ep = ([u8; 4], u16);

/// The Services of a scenario and where every flow goes.
#[derive(Clone, Copy, Debug)]
struct World {
    services: u32,
    per_service: u32,
    /// IPv6: every address of the IPv4 plan mapped into 2001:2::/48 ([`six`]).
    v6: bool,
    /// Every Service masquerades (as `externalTrafficPolicy: Cluster` does
    /// for clients off the cluster): forward packets leave from the node's
    /// address on the backends' port ([`SNAT4`]) and a port of the proxy's.
    masq: bool,
}

/// The masquerade source of [`World::masq`] flows (port 1's address).
const SNAT4: [u8; 4] = [198, 19, 0, 1];

/// IPv6 networks of the IPv6 plan: clients (port 0's 2001:2::/64),
/// backends (port 1's 2001:2:0:1::/64), VIPs (2001:2:0:2::/64).
const NET6_CLIENTS: u8 = 0;
const NET6_BACKENDS: u8 = 1;
const NET6_VIPS: u8 = 2;

/// The IPv6 address of IPv4 address `a` of the plan in network `net`:
/// 2001:2:0:<net>::<a as the last 32 bits>.
fn six(net: u8, a: [u8; 4]) -> [u8; 16] {
    [
        0x20, 0x01, 0, 2, 0, net, 0, 0, 0, 0, 0, 0, a[0], a[1], a[2], a[3],
    ]
}

/// The inverse of [`six`]: (network, IPv4 address).
fn unsix(d: &[u8]) -> Option<(u8, [u8; 4])> {
    let d: &[u8; 16] = d.try_into().ok()?;
    (d[..5] == [0x20, 0x01, 0, 2, 0] && d[6..12] == [0; 6])
        .then_some((d[5], [d[12], d[13], d[14], d[15]]))
}

fn vip(s: u32) -> [u8; 4] {
    [198, 18, 128 + (s >> 8) as u8, s as u8]
}

/// Backend `k` (`k = service * per_service + j`).
fn backend(k: u32) -> Ep {
    let a = k % BACKEND_ADDRS;
    (
        [198, 19, 1 + (a / 250) as u8, 1 + (a % 250) as u8],
        BACKEND_PORT + (k / BACKEND_ADDRS) as u16,
    )
}

/// The index `k` of the backend at `ip:port`.
fn backend_index(ip: [u8; 4], port: u16) -> Option<u32> {
    if ip[..2] != [198, 19] || ip[2] == 0 || ip[3] == 0 || ip[3] > 250 {
        return None;
    }
    let a = u32::from(ip[2] - 1) * 250 + u32::from(ip[3] - 1);
    let hi = u32::from(port.checked_sub(BACKEND_PORT)?);
    (a < BACKEND_ADDRS).then_some(a + hi * BACKEND_ADDRS)
}

fn backend_mac(k: u32) -> MacAddr {
    let a = k % BACKEND_ADDRS;
    MacAddr([2, 0, 1, 0, (a >> 8) as u8, a as u8])
}

fn client_ip(c: u32) -> [u8; 4] {
    [198, 18, 1, 1 + c as u8]
}

fn client_mac(c: u32) -> MacAddr {
    MacAddr([2, 0, 0, 0, 1, c as u8])
}

/// The client endpoint of established flow `f`.
fn client(f: u32) -> Ep {
    (
        client_ip(f % CLIENT_ADDRS),
        (FIRST_PORT + f / CLIENT_ADDRS) as u16,
    )
}

/// The client endpoint of brand-new connection `i`.
fn new_client(i: u32) -> Ep {
    let a = i % NEW_ADDRS;
    (
        [198, 18, 64 + (a >> 8) as u8, a as u8],
        (FIRST_PORT + i / NEW_ADDRS) as u16,
    )
}

fn new_index(ip: [u8; 4], port: u16) -> Option<u32> {
    if ip[..2] != [198, 18] || !(64..128).contains(&ip[2]) || u32::from(port) < FIRST_PORT {
        return None;
    }
    let a = u32::from(ip[2] - 64) * 256 + u32::from(ip[3]);
    Some((u32::from(port) - FIRST_PORT) * NEW_ADDRS + a)
}

const MAX_FLOWS: u32 = CLIENT_ADDRS * (65536 - FIRST_PORT);

impl World {
    /// The Service established flow `f` talks to (spread by a hash).
    fn svc_of_flow(&self, f: u32) -> u32 {
        (fmix64(u64::from(f) ^ 0x5eed_f10e) % u64::from(self.services)) as u32
    }
    fn svc_of_new(&self, i: u32) -> u32 {
        i % self.services
    }
    fn backends(&self) -> u32 {
        self.services * self.per_service
    }
    /// Bytes of this world's frames (without the FCS).
    fn frame_len(&self) -> usize {
        if self.v6 {
            FRAME6_LEN
        } else {
            FRAME_LEN
        }
    }
    /// Neighbour cache capacity for this world (static entries + room).
    fn neighbors(&self) -> usize {
        (self.backends().min(BACKEND_ADDRS) + CLIENT_ADDRS) as usize + 1024
    }
    /// The service table: `services` Services per protocol in `protos`.
    fn table(&self, protos: &[Proto]) -> ServiceTable {
        ServiceTable::new(self.spec(protos), 1)
    }
    /// What [`World::table`] is built from (the IPv4 plan, or with
    /// `v6` every address mapped into 2001:2::/48 by [`six`]).
    fn spec(&self, protos: &[Proto]) -> TableSpec {
        let v6 = self.v6;
        let at = |net: u8, ip: [u8; 4]| {
            if v6 {
                Addr::v6(six(net, ip))
            } else {
                Addr::v4(ip)
            }
        };
        let (clients, backends, prefix_len) = if v6 {
            (
                at(NET6_CLIENTS, [0, 0, 0, 1]),
                at(NET6_BACKENDS, [0, 0, 0, 1]),
                64,
            )
        } else {
            (Addr::v4([198, 18, 0, 1]), Addr::v4([198, 19, 0, 1]), 16)
        };
        let mut spec = TableSpec {
            interfaces: vec![
                Interface {
                    port: 0,
                    addr: clients,
                    prefix_len,
                },
                Interface {
                    port: 1,
                    addr: backends,
                    prefix_len,
                },
            ],
            ..Default::default()
        };
        let family = if v6 { "6-" } else { "" };
        for &proto in protos {
            for s in 0..self.services {
                spec.services.push(ServiceSpec {
                    name: format!("replay/svc{family}{s}:{}", proto.as_str()),
                    frontend: Frontend {
                        addr: SockAddr::new(at(NET6_VIPS, vip(s)), SVC_PORT),
                        proto,
                    },
                    backends: (0..self.per_service)
                        .map(|j| {
                            let (ip, port) = backend(s * self.per_service + j);
                            SockAddr::new(at(NET6_BACKENDS, ip), port)
                        })
                        .collect(),
                    no_backends: Default::default(),
                    masquerade: self.masq,
                    external: false,
                    affinity_timeout: None,
                    source_ranges: vec![],
                    short_circuit: vec![],
                    algorithm: Default::default(),
                });
            }
        }
        for a in 0..self.backends().min(BACKEND_ADDRS) {
            spec.neighbors.push(StaticNeighbor {
                addr: at(NET6_BACKENDS, backend(a).0),
                mac: backend_mac(a),
                port: 1,
            });
        }
        for c in 0..CLIENT_ADDRS {
            spec.neighbors.push(StaticNeighbor {
                addr: at(NET6_CLIENTS, client_ip(c)),
                mac: client_mac(c),
                port: 0,
            });
        }
        spec
    }
}

/// Session timeouts of the established scenarios: the defaults, but UDP
/// flows (which see no replies in the forward scenarios) last 10 minutes,
/// so that a slow run (a contended machine: warm-up and window of 1M flows
/// can then take longer than the 30 s default) cannot expire warm-up
/// sessions. A session hit does the same work whatever the timeout.
fn established_timeouts() -> Timeouts {
    Timeouts {
        udp: 600_000,
        udp_stream: 600_000,
        ..Timeouts::default()
    }
}

/// Session capacity for `flows` concurrent flows (the product default at least).
fn session_capacity(flows: u32) -> usize {
    (flows as usize + flows as usize / 4 + 1024).max(PipelineConfig::default().sessions)
}

// ---- frames ----

/// A frame (IPv4 ones use the first [`FRAME_LEN`] bytes).
type Frame = [u8; FRAME6_LEN];

fn write_eth_ipv4(f: &mut [u8], dmac: MacAddr, smac: MacAddr, proto: u8, src: Ep, dst: Ep) {
    let l4_len = if proto == 6 { 20 } else { FRAME_LEN - 34 };
    f[0..6].copy_from_slice(&dmac.0);
    f[6..12].copy_from_slice(&smac.0);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip.fill(0);
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.0);
    ip[16..20].copy_from_slice(&dst.0);
    let c = checksum::ipv4_header(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// A 64-byte UDP frame whose 18-byte payload carries `MAGIC` and `flow`.
fn write_udp(f: &mut [u8], dmac: MacAddr, smac: MacAddr, src: Ep, dst: Ep, flow: u32) {
    write_eth_ipv4(f, dmac, smac, 17, src, dst);
    let u = &mut f[34..FRAME_LEN];
    u.fill(0);
    u[0..2].copy_from_slice(&src.1.to_be_bytes());
    u[2..4].copy_from_slice(&dst.1.to_be_bytes());
    u[4..6].copy_from_slice(&((FRAME_LEN - 34) as u16).to_be_bytes());
    u[8..12].copy_from_slice(&MAGIC);
    u[12..16].copy_from_slice(&flow.to_be_bytes());
    let c = checksum::udp_final(checksum::l4_v4(src.0, dst.0, 17, u));
    u[6..8].copy_from_slice(&c.to_be_bytes());
}

/// [`write_udp`] on the IPv6 plan: `src` in network `nets.0`, `dst` in
/// `nets.1` ([`six`]); an 80-byte frame.
fn write_udp6(
    f: &mut [u8],
    dmac: MacAddr,
    smac: MacAddr,
    (src, dst): (Ep, Ep),
    nets: (u8, u8),
    flow: u32,
) {
    let (s6, d6) = (six(nets.0, src.0), six(nets.1, dst.0));
    let udp_len = FRAME6_LEN - 54;
    f[0..6].copy_from_slice(&dmac.0);
    f[6..12].copy_from_slice(&smac.0);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let ip = &mut f[14..54];
    ip.fill(0);
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    ip[6] = 17;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&s6);
    ip[24..40].copy_from_slice(&d6);
    let u = &mut f[54..FRAME6_LEN];
    u.fill(0);
    u[0..2].copy_from_slice(&src.1.to_be_bytes());
    u[2..4].copy_from_slice(&dst.1.to_be_bytes());
    u[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    u[8..12].copy_from_slice(&MAGIC);
    u[12..16].copy_from_slice(&flow.to_be_bytes());
    let c = checksum::udp_final(checksum::l4_v6(&s6, &d6, 17, u));
    u[6..8].copy_from_slice(&c.to_be_bytes());
}

/// A TCP SYN without options (54 bytes), padded to 60 as on a real wire.
fn write_syn(f: &mut [u8], dmac: MacAddr, smac: MacAddr, src: Ep, dst: Ep, seq: u32) {
    write_eth_ipv4(f, dmac, smac, 6, src, dst);
    let t = &mut f[34..54];
    t.fill(0);
    t[0..2].copy_from_slice(&src.1.to_be_bytes());
    t[2..4].copy_from_slice(&dst.1.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let c = checksum::l4_v4(src.0, dst.0, 6, t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    f[54..FRAME_LEN].fill(0);
}

fn forward_frames(w: &World, flows: u32, port0_mac: MacAddr) -> Vec<Frame> {
    (0..flows)
        .map(|f| {
            let mut fr = [0u8; FRAME6_LEN];
            let (src, dst) = (client(f), (vip(w.svc_of_flow(f)), SVC_PORT));
            let smac = client_mac(f % CLIENT_ADDRS);
            if w.v6 {
                write_udp6(
                    &mut fr,
                    port0_mac,
                    smac,
                    (src, dst),
                    (NET6_CLIENTS, NET6_VIPS),
                    f,
                );
            } else {
                write_udp(&mut fr, port0_mac, smac, src, dst, f);
            }
            fr
        })
        .collect()
}

fn reply_frames(w: &World, backend_of: &[u32], port1_mac: MacAddr) -> Vec<Frame> {
    backend_of
        .iter()
        .enumerate()
        .map(|(f, &k)| {
            let mut fr = [0u8; FRAME6_LEN];
            let (src, dst) = (backend(k), client(f as u32));
            if w.v6 {
                write_udp6(
                    &mut fr,
                    port1_mac,
                    backend_mac(k),
                    (src, dst),
                    (NET6_BACKENDS, NET6_CLIENTS),
                    f as u32,
                );
            } else {
                write_udp(&mut fr, port1_mac, backend_mac(k), src, dst, f as u32);
            }
            fr
        })
        .collect()
}

/// Full parse by an independent implementation (etherparse): IPv4 header
/// checksum, lengths, TCP/UDP checksum.
fn full_check(d: &[u8]) -> Result<(), String> {
    let h = PacketHeaders::from_ethernet_slice(d).map_err(|e| format!("etherparse: {e}"))?;
    if let Some((ip, ext)) = h.net.as_ref().and_then(|n| n.ipv6_ref()) {
        if !ext.is_empty() {
            return Err("IPv6 extension headers".into());
        }
        if 40 + usize::from(ip.payload_length) > d.len() - 14 {
            return Err("IPv6 payload length beyond the frame".into());
        }
        return transport_check(&h, Ip::V6(ip));
    }
    let (ip, _) = h
        .net
        .as_ref()
        .and_then(|n| n.ipv4_ref())
        .ok_or("not IPv4")?;
    if ip.header_checksum != ip.calc_header_checksum() {
        return Err("bad IPv4 header checksum".into());
    }
    if usize::from(ip.total_len) > d.len() - 14 {
        return Err("IPv4 total length beyond the frame".into());
    }
    transport_check(&h, Ip::V4(ip))
}

/// The network header a transport checksum covers.
enum Ip<'a> {
    V4(&'a etherparse::Ipv4Header),
    V6(&'a etherparse::Ipv6Header),
}

/// [`full_check`]'s TCP/UDP part: UDP length, and the TCP/UDP checksum
/// over the pseudo-header of `ip` (a UDP checksum of 0 is refused: it is
/// invalid in IPv6, and the proxy's IPv4 output always carries one here).
fn transport_check(h: &PacketHeaders, ip: Ip) -> Result<(), String> {
    let payload = match h.payload {
        PayloadSlice::Tcp(p) | PayloadSlice::Udp(p) => p,
        _ => return Err("no TCP/UDP payload".into()),
    };
    match &h.transport {
        Some(TransportHeader::Udp(u)) => {
            if usize::from(u.length) != 8 + payload.len() {
                return Err("bad UDP length".into());
            }
            let sum = match ip {
                Ip::V4(i) => u.calc_checksum_ipv4(i, payload).ok(),
                Ip::V6(i) => u.calc_checksum_ipv6(i, payload).ok(),
            };
            if u.checksum == 0 || Some(u.checksum) != sum {
                return Err(format!("bad UDP checksum {:#06x}", u.checksum));
            }
        }
        Some(TransportHeader::Tcp(t)) => {
            let sum = match ip {
                Ip::V4(i) => t.calc_checksum_ipv4(i, payload).ok(),
                Ip::V6(i) => t.calc_checksum_ipv6(i, payload).ok(),
            };
            if Some(t.checksum) != sum {
                return Err(format!("bad TCP checksum {:#06x}", t.checksum));
            }
        }
        _ => return Err("not TCP/UDP".into()),
    }
    Ok(())
}

// ---- output checks ----

/// What the worker's output must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Client → VIP, DNATed to the flow's backend.
    Forward,
    /// Backend → client, source rewritten back to the VIP.
    Reply,
    /// First packet of a brand-new connection (`Proto::Tcp`: a SYN).
    New(Proto),
}

struct Checker<'a> {
    world: World,
    kind: Kind,
    /// Source MAC of the egress port.
    out_mac: MacAddr,
    workers: usize,
    /// Backend index per flow (`Forward`): recorded in the warm-up, compared after.
    backend_of: &'a mut [u32],
    record: bool,
    every: u64,
    full_every: u64,
    seen: u64,
    checked: u64,
    full: u64,
    errors: u64,
    /// Checked `Forward` outputs whose flow had left its warm-up backend.
    moved: u64,
    /// The distinct flows among them.
    moved_flows: std::collections::BTreeSet<u32>,
    first: Vec<String>,
}

fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

fn ip4(d: &[u8], at: usize) -> [u8; 4] {
    [d[at], d[at + 1], d[at + 2], d[at + 3]]
}

impl<'a> Checker<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        world: World,
        kind: Kind,
        out_mac: MacAddr,
        workers: usize,
        backend_of: &'a mut [u32],
        record: bool,
        every: u64,
        full_every: u64,
    ) -> Self {
        Checker {
            world,
            kind,
            out_mac,
            workers,
            backend_of,
            record,
            every: every.max(1),
            full_every: full_every.max(1),
            seen: 0,
            checked: 0,
            full: 0,
            errors: 0,
            moved: 0,
            moved_flows: Default::default(),
            first: vec![],
        }
    }

    /// Looks at one transmitted frame (from tx queue `q`).
    fn on_output(&mut self, q: usize, d: &[u8]) {
        let n = self.seen;
        self.seen += 1;
        if !n.is_multiple_of(self.every) {
            return;
        }
        self.checked += 1;
        let full = (n / self.every).is_multiple_of(self.full_every);
        let mut r = self.verify(q, d);
        if full && r.is_ok() {
            self.full += 1;
            r = full_check(d);
        }
        if let Err(e) = r {
            self.errors += 1;
            if self.first.len() < 5 {
                self.first
                    .push(format!("{e} (frame {:02x?})", &d[..d.len().min(60)]));
            }
        }
    }

    fn owner_queue(&self, client: Ep) -> usize {
        owner_of(
            &SockAddr::new(Addr::v4(client.0), client.1),
            self.workers as u16,
        ) as usize
    }

    /// The IPv4 header of an output: (protocol, source, destination,
    /// offset of the L4 header).
    fn header4(&self, d: &[u8]) -> Result<(u8, Ep, Ep, usize), String> {
        if d.len() < 54 {
            return Err(format!("short frame ({} bytes)", d.len()));
        }
        if be16(d, 12) != 0x0800 || d[14] != 0x45 {
            return Err("not IPv4 without options".into());
        }
        if d[6..12] != self.out_mac.0 {
            return Err("source MAC is not the egress port's".into());
        }
        if d[22] != 63 {
            return Err(format!("TTL {} (want 63)", d[22]));
        }
        let (src, dst) = ((ip4(d, 26), be16(d, 34)), (ip4(d, 30), be16(d, 36)));
        Ok((d[23], src, dst, 34))
    }

    /// [`Checker::header4`] for IPv6 (no extension header); the addresses
    /// must be in the networks the direction goes between, and are
    /// returned as the IPv4 addresses of the plan ([`unsix`]).
    fn header6(&self, d: &[u8]) -> Result<(u8, Ep, Ep, usize), String> {
        if d.len() < 62 {
            return Err(format!("short frame ({} bytes)", d.len()));
        }
        if be16(d, 12) != 0x86dd || d[14] >> 4 != 6 {
            return Err("not IPv6".into());
        }
        if d[6..12] != self.out_mac.0 {
            return Err("source MAC is not the egress port's".into());
        }
        if d[21] != 63 {
            return Err(format!("hop limit {} (want 63)", d[21]));
        }
        let want = match self.kind {
            Kind::Reply => (NET6_VIPS, NET6_CLIENTS),
            Kind::Forward | Kind::New(_) => (NET6_CLIENTS, NET6_BACKENDS),
        };
        let (sn, s4) = unsix(&d[22..38]).ok_or("source outside the IPv6 plan")?;
        let (dn, d4) = unsix(&d[38..54]).ok_or("destination outside the IPv6 plan")?;
        if (sn, dn) != want {
            return Err(format!("networks {sn} -> {dn}, want {want:?}"));
        }
        Ok((d[20], (s4, be16(d, 54)), (d4, be16(d, 56)), 54))
    }

    fn verify(&mut self, q: usize, d: &[u8]) -> Result<(), String> {
        let (proto, src, dst, l4) = if self.world.v6 {
            self.header6(d)?
        } else {
            self.header4(d)?
        };
        let w = self.world;
        let client_ep = match self.kind {
            Kind::Forward | Kind::Reply => {
                let pl = l4 + 8;
                if proto != 17 || d.len() < pl + 8 || d[pl..pl + 4] != MAGIC {
                    return Err("not one of our UDP frames".into());
                }
                let flow = u32::from_be_bytes([d[pl + 4], d[pl + 5], d[pl + 6], d[pl + 7]]);
                if flow as usize >= self.backend_of.len() {
                    return Err(format!("flow id {flow} out of range"));
                }
                let svc = w.svc_of_flow(flow);
                if self.kind == Kind::Forward {
                    if w.masq {
                        if src.0 != SNAT4 || src.1 < *SNAT_PORTS.start() {
                            return Err(format!("flow {flow}: source {src:?} not masqueraded"));
                        }
                    } else if src != client(flow) {
                        return Err(format!("flow {flow}: client {src:?} rewritten"));
                    }
                    let k = backend_index(dst.0, dst.1)
                        .ok_or_else(|| format!("flow {flow}: {dst:?} is not a backend"))?;
                    let was = self.backend_of[flow as usize];
                    if !self.record && was != k {
                        self.moved += 1;
                        self.moved_flows.insert(flow);
                        return Err(format!("flow {flow} moved from backend {was} to {k}"));
                    }
                    if k >= w.backends() || k / w.per_service != svc {
                        return Err(format!(
                            "flow {flow}: backend {k} is not one of Service {svc}'s"
                        ));
                    }
                    if d[0..6] != backend_mac(k).0 {
                        return Err(format!("flow {flow}: not the MAC of backend {k}"));
                    }
                    let slot = &mut self.backend_of[flow as usize];
                    if self.record {
                        if *slot != UNSET {
                            return Err(format!("flow {flow}: second warm-up output"));
                        }
                        *slot = k;
                    }
                    client(flow)
                } else {
                    if dst != client(flow) {
                        return Err(format!("flow {flow}: reply to {dst:?}"));
                    }
                    if src != (vip(svc), SVC_PORT) {
                        return Err(format!("flow {flow}: reply source {src:?} is not the VIP"));
                    }
                    if d[0..6] != client_mac(flow % CLIENT_ADDRS).0 {
                        return Err(format!("flow {flow}: not the client's MAC"));
                    }
                    dst
                }
            }
            Kind::New(p) => {
                if proto != p as u8 {
                    return Err(format!("protocol {proto}"));
                }
                let i = new_index(src.0, src.1)
                    .ok_or_else(|| format!("{src:?} is not a generated client"))?;
                let svc = w.svc_of_new(i);
                let k = backend_index(dst.0, dst.1)
                    .ok_or_else(|| format!("connection {i}: {dst:?} is not a backend"))?;
                if k >= w.backends() || k / w.per_service != svc {
                    return Err(format!(
                        "connection {i}: backend {k} is not one of Service {svc}'s"
                    ));
                }
                if d[0..6] != backend_mac(k).0 {
                    return Err(format!("connection {i}: not the MAC of backend {k}"));
                }
                if p == Proto::Tcp && d[47] != 0x02 {
                    return Err(format!("connection {i}: TCP flags {:#04x}", d[47]));
                }
                src
            }
        };
        if self.workers > 1 && q != self.owner_queue(client_ep) {
            return Err(format!(
                "{client_ep:?}: sent by worker {q}, not by its owner"
            ));
        }
        Ok(())
    }

    fn summary(&self) -> String {
        format!(
            "{} bad of {} checked ({} fully parsed); first: {}",
            self.errors,
            self.checked,
            self.full,
            self.first.join(" | ")
        )
    }
}

// ---- counters ----

/// One worker's counters at one moment (or a difference of two).
#[derive(Clone, Copy, Debug, Default)]
struct Snap {
    rx: u64,
    tx: u64,
    busy: u64,
    idle: u64,
    loops: u64,
    drops: u64,
    created: u64,
    active: u64,
    ho_in: u64,
    ho_out: u64,
    nat_fwd: u64,
    nat_rev: u64,
    /// Packets of the established-flow fast path.
    fast: u64,
}

impl Snap {
    fn read(s: &WorkerStats) -> Snap {
        let l = |a: &AtomicU64| a.load(Relaxed);
        Snap {
            rx: l(&s.rx_packets),
            tx: l(&s.tx_packets),
            busy: l(&s.busy_cycles),
            idle: l(&s.idle_cycles),
            loops: l(&s.loops),
            drops: s.total_drops(),
            created: l(&s.sessions_created),
            active: l(&s.sessions_active),
            ho_in: l(&s.handoff_in),
            ho_out: l(&s.handoff_out),
            nat_fwd: l(&s.nat_forward),
            nat_rev: l(&s.nat_reverse),
            fast: l(&s.fast_path),
        }
    }
    /// `self - o`; `active` keeps `self`'s value.
    fn minus(&self, o: &Snap) -> Snap {
        Snap {
            rx: self.rx.wrapping_sub(o.rx),
            tx: self.tx.wrapping_sub(o.tx),
            busy: self.busy.wrapping_sub(o.busy),
            idle: self.idle.wrapping_sub(o.idle),
            loops: self.loops.wrapping_sub(o.loops),
            drops: self.drops.wrapping_sub(o.drops),
            created: self.created.wrapping_sub(o.created),
            active: self.active,
            ho_in: self.ho_in.wrapping_sub(o.ho_in),
            ho_out: self.ho_out.wrapping_sub(o.ho_out),
            nat_fwd: self.nat_fwd.wrapping_sub(o.nat_fwd),
            nat_rev: self.nat_rev.wrapping_sub(o.nat_rev),
            fast: self.fast.wrapping_sub(o.fast),
        }
    }
    fn add(&mut self, o: &Snap) {
        self.rx += o.rx;
        self.tx += o.tx;
        self.busy += o.busy;
        self.idle += o.idle;
        self.loops += o.loops;
        self.drops += o.drops;
        self.created += o.created;
        self.active = o.active;
        self.ho_in += o.ho_in;
        self.ho_out += o.ho_out;
        self.nat_fwd += o.nat_fwd;
        self.nat_rev += o.nat_rev;
        self.fast += o.fast;
    }
}

fn snap(stats: &[Arc<WorkerStats>]) -> Vec<Snap> {
    stats.iter().map(|s| Snap::read(s)).collect()
}

fn delta(a: &[Snap], b: &[Snap]) -> Vec<Snap> {
    b.iter().zip(a).map(|(b, a)| b.minus(a)).collect()
}

/// Sum over workers (`active` summed too).
fn total(v: &[Snap]) -> Snap {
    let mut t = Snap::default();
    for s in v {
        t.add(s);
    }
    t.active = v.iter().map(|s| s.active).sum();
    t
}

/// Drops by reason, summed over workers.
fn drop_counts(stats: &[Arc<WorkerStats>]) -> Vec<u64> {
    DropReason::ALL
        .iter()
        .map(|r| stats.iter().map(|s| s.drops_for(*r)).sum())
        .collect()
}

fn drops_since(stats: &[Arc<WorkerStats>], base: &[u64]) -> Map<String, Value> {
    let now = drop_counts(stats);
    DropReason::ALL
        .iter()
        .zip(now.iter().zip(base))
        .filter(|(_, (n, b))| n > b)
        .map(|(r, (n, b))| (r.as_str().to_string(), json!(n - b)))
        .collect()
}

/// Time a thread of this process spent on a CPU and waiting for one (ns),
/// from `/proc/self/task/TID/schedstat`.
#[derive(Clone, Copy, Debug, Default)]
struct Sched {
    run: u64,
    wait: u64,
}

impl Sched {
    fn read(tid: Option<u32>) -> Option<Sched> {
        let path = match tid {
            Some(t) => format!("/proc/self/task/{t}/schedstat"),
            None => "/proc/thread-self/schedstat".into(),
        };
        let s = std::fs::read_to_string(path).ok()?;
        let mut it = s.split_whitespace().map(|v| v.parse::<u64>().ok());
        Some(Sched {
            run: it.next()??,
            wait: it.next()??,
        })
    }
    fn minus(&self, o: &Sched) -> Sched {
        Sched {
            run: self.run.saturating_sub(o.run),
            wait: self.wait.saturating_sub(o.wait),
        }
    }
}

/// The thread ids of the workers on `lcores` (EAL names them `rte-worker-N`).
fn worker_tids(lcores: &[u32]) -> Vec<Option<u32>> {
    let tasks: Vec<(u32, String)> = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                let tid = e.file_name().to_str()?.parse().ok()?;
                let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
                Some((tid, comm.trim().to_string()))
            })
            .collect()
        })
        .unwrap_or_default();
    lcores
        .iter()
        .map(|l| {
            let want = format!("rte-worker-{l}");
            tasks.iter().find(|(_, c)| *c == want).map(|(t, _)| *t)
        })
        .collect()
}

/// On-CPU time of the workers' threads (and of this generator thread).
struct CpuClock {
    tids: Vec<Option<u32>>,
}

impl CpuClock {
    fn new(lcores: &[u32]) -> CpuClock {
        CpuClock {
            tids: worker_tids(lcores),
        }
    }
    /// Per worker, then this (the generator's) thread last.
    fn read(&self) -> Vec<Option<Sched>> {
        let mut v: Vec<Option<Sched>> = self
            .tids
            .iter()
            .map(|t| t.and_then(|t| Sched::read(Some(t))))
            .collect();
        v.push(Sched::read(None));
        v
    }
}

fn sched_delta(a: &[Option<Sched>], b: &[Option<Sched>]) -> Vec<Option<Sched>> {
    a.iter()
        .zip(b)
        .map(|(a, b)| Some(b.as_ref()?.minus(a.as_ref()?)))
        .collect()
}

fn sched_add(acc: &mut [Option<Sched>], d: &[Option<Sched>]) {
    for (a, d) in acc.iter_mut().zip(d) {
        *a = match (*a, d) {
            (Some(a), Some(d)) => Some(Sched {
                run: a.run + d.run,
                wait: a.wait + d.wait,
            }),
            _ => None,
        };
    }
}

/// Counter differences over a measured window.
struct Measured {
    per_worker: Vec<Snap>,
    /// Prefill mode: per worker, (rx packets, loops) over the parts of the
    /// drain during which its rx queue never ran dry.
    saturated_loops: Option<Vec<(u64, u64)>>,
    lcores: Vec<u32>,
    wall: Duration,
    /// On-CPU time in the window: per worker, then the generator thread.
    sched: Vec<Option<Sched>>,
}

impl Measured {
    fn packets(&self) -> u64 {
        self.per_worker.iter().map(|s| s.rx).sum()
    }
    fn busy(&self) -> u64 {
        self.per_worker.iter().map(|s| s.busy).sum()
    }
    fn cycles_per_packet(&self) -> f64 {
        self.busy() as f64 / self.packets().max(1) as f64
    }
    /// Packets per second of busy time of one worker (the average worker).
    fn mpps_per_worker(&self, hz: u64) -> f64 {
        hz as f64 / self.cycles_per_packet() / 1e6
    }
    /// Sum of the workers' own rates: what they forward together when all are busy.
    fn mpps_total(&self, hz: u64) -> f64 {
        self.per_worker
            .iter()
            .filter(|s| s.busy > 0)
            .map(|s| s.rx as f64 * hz as f64 / s.busy as f64 / 1e6)
            .sum()
    }
    /// Packets taken from the ports' rx queues per loop iteration: over the
    /// whole window in generator mode (idle iterations included, so ≈ 32
    /// only when the worker never waited); in prefill mode over the parts of
    /// each drain during which the worker's queue stayed non-empty.
    fn avg_burst(&self) -> f64 {
        match &self.saturated_loops {
            Some(v) => {
                let (rx, loops) = v.iter().fold((0, 0), |(r, l), (rx, lo)| (r + rx, l + lo));
                rx as f64 / loops.max(1) as f64
            }
            None => self.packets_per_loop(),
        }
    }
    /// Packets per loop iteration over the whole window, idle ones included.
    fn packets_per_loop(&self) -> f64 {
        let loops: u64 = self.per_worker.iter().map(|s| s.loops).sum();
        self.packets() as f64 / loops.max(1) as f64
    }
    /// Share of the window a thread was on its CPU (worker `i`; the generator for `i == workers`).
    fn cpu_share(&self, i: usize) -> Option<f64> {
        let s = self.sched.get(i).copied().flatten()?;
        Some(s.run as f64 / self.wall.as_nanos().max(1) as f64)
    }
    /// The smallest CPU share of any worker.
    fn min_worker_share(&self) -> Option<f64> {
        (0..self.per_worker.len())
            .map(|i| self.cpu_share(i))
            .try_fold(f64::INFINITY, |m, s| s.map(|s| m.min(s)))
    }
    /// Whether the worker had packets every time it looked (generator mode).
    fn saturated(&self) -> bool {
        self.packets_per_loop() >= SATURATED_BURST && self.idle_fraction() <= SATURATED_IDLE
    }
    fn idle_fraction(&self) -> f64 {
        let idle: u64 = self.per_worker.iter().map(|s| s.idle).sum();
        idle as f64 / (idle + self.busy()).max(1) as f64
    }
    fn workers_json(&self, hz: u64) -> Value {
        let v: Vec<Value> = self
            .per_worker
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({
                    "worker": i,
                    "lcore": self.lcores[i],
                    "cpu": if self.lcores[i] == LCORE_CPU0 { 0 } else { 1 },
                    "rx_packets": s.rx,
                    "tx_packets": s.tx,
                    "handoff_in": s.ho_in,
                    "handoff_out": s.ho_out,
                    "busy_cycles": s.busy,
                    "idle_cycles": s.idle,
                    "loops": s.loops,
                    "cycles_per_packet": s.busy as f64 / s.rx.max(1) as f64,
                    "mpps": if s.busy > 0 { s.rx as f64 * hz as f64 / s.busy as f64 / 1e6 } else { 0.0 },
                    "avg_burst": match &self.saturated_loops {
                        Some(v) => v[i].0 as f64 / v[i].1.max(1) as f64,
                        None => s.rx as f64 / s.loops.max(1) as f64,
                    },
                    "packets_per_loop": s.rx as f64 / s.loops.max(1) as f64,
                    "cpu_share": self.cpu_share(i),
                    "wait_ms": self.sched.get(i).copied().flatten().map(|s| s.wait as f64 / 1e6),
                })
            })
            .collect();
        Value::Array(v)
    }
}

// ---- wire and dataplane ----

/// The wire side of two ring-backed ports: we produce on `rx`, consume `tx`.
struct Wire {
    /// `rx[port][queue]`.
    rx: Vec<Vec<Ring>>,
    /// `tx[port][queue]`.
    tx: Vec<Vec<Ring>>,
    /// Handles from `from_rings` (never started by us; the dataplane closes the ports).
    _ports: Vec<Port>,
}

/// How to start a dataplane for one scenario.
struct DpSpec {
    lcores: Vec<u32>,
    sessions: usize,
    timeouts: Timeouts,
    neighbors: usize,
    ring: u32,
    handoff_ring: u32,
}

struct Dataplane<'e> {
    eal: &'e Eal,
    running: Option<Running>,
    wire: Wire,
    macs: [MacAddr; 2],
    lcores: Vec<u32>,
    /// The cell the workers read their table from.
    rcu: Arc<Rcu<ServiceTable>>,
}

impl Dataplane<'_> {
    fn stats(&self) -> &[Arc<WorkerStats>] {
        self.running.as_ref().map(|r| &r.stats[..]).unwrap_or(&[])
    }
    fn workers(&self) -> usize {
        self.lcores.len()
    }
    /// Frees whatever is left on any wire ring; returns how many frames that was.
    fn sweep(&self) -> usize {
        let mut b = RxBurst::default();
        let mut n = 0;
        for r in self.wire.rx.iter().chain(&self.wire.tx).flatten() {
            loop {
                let got = r.dequeue(&mut b);
                if got == 0 {
                    break;
                }
                n += got;
                for m in b.by_ref() {
                    drop(m);
                }
            }
        }
        n
    }
    /// Port error counters (ring PMD: tx errors when a tx ring was full).
    fn port_errors(&self) -> Vec<String> {
        let Some(r) = &self.running else {
            return vec![];
        };
        r.port_stats()
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c {
                Some(c) if (c.imissed, c.ierrors, c.oerrors, c.rx_nombuf) != (0, 0, 0, 0) => {
                    Some(format!("port {i} error counters {c:?}"))
                }
                None => Some(format!("port {i}: no statistics")),
                _ => None,
            })
            .collect()
    }
    /// Stops the workers; returns their exit codes.
    fn stop(&mut self) -> Vec<i32> {
        match self.running.take() {
            Some(r) => r.shutdown(self.eal),
            None => vec![],
        }
    }
}

impl Drop for Dataplane<'_> {
    fn drop(&mut self) {
        // Workers stop before the wire rings go.
        self.stop();
    }
}

// ---- the generator ----

/// Which queue a flow's packets are put on (with more than one worker).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// The flow's owner worker.
    Owner,
    /// The other worker: every packet is handed over.
    NonOwner,
}

/// How many frames ahead the generator prefetches its templates.
const GEN_PREFETCH_AHEAD: usize = 16;

/// What recycled mbufs are refilled with.
enum Source<'a> {
    /// Prebuilt frames, replayed cyclically in `order`.
    Frames {
        frames: &'a [Frame],
        /// Bytes of each frame.
        len: usize,
        order: &'a [u32],
        pos: usize,
    },
    /// The first packet of a brand-new connection every time.
    New {
        proto: Proto,
        next: u32,
        dst_mac: MacAddr,
        world: World,
    },
}

impl Source<'_> {
    /// Writes the next frame into `m`; returns the client endpoint of its flow.
    #[inline]
    fn fill(&mut self, m: &mut Mbuf) -> Ep {
        let len = match self {
            Source::Frames { len, .. } => *len,
            Source::New { .. } => FRAME_LEN,
        };
        m.set_len(len);
        let d = m.data_mut();
        match self {
            Source::Frames {
                frames, order, pos, ..
            } => {
                let f = order[*pos];
                // The template a few frames ahead: with 1M flows the
                // templates (80 MB, read in a random order) are in DRAM,
                // and without this the generator, not the worker, sets
                // the pace.
                if let Some(&a) = order.get(*pos + GEN_PREFETCH_AHEAD) {
                    if let Some(t) = frames.get(a as usize) {
                        let p = t.as_ptr();
                        dataplane::dpdk::prefetch_addr(p);
                        dataplane::dpdk::prefetch_addr(p.wrapping_add(len.saturating_sub(1)));
                    }
                }
                *pos += 1;
                if *pos == order.len() {
                    *pos = 0;
                }
                d.copy_from_slice(&frames[f as usize][..len]);
                client(f)
            }
            Source::New {
                proto,
                next,
                dst_mac,
                world,
            } => {
                let i = *next;
                *next = next.wrapping_add(1);
                let src = new_client(i);
                let dst = (vip(world.svc_of_new(i)), SVC_PORT);
                let smac = client_mac(0);
                if *proto == Proto::Tcp {
                    write_syn(d, *dst_mac, smac, src, dst, i);
                } else {
                    write_udp(d, *dst_mac, smac, src, dst, i);
                }
                src
            }
        }
    }
}

/// Feeds one port's rx rings and takes the other port's tx rings.
struct Gen<'a> {
    rx: Vec<&'a Ring>,
    tx: Vec<&'a Ring>,
    bufs: Vec<TxBuffer>,
    place: Placement,
    src: Source<'a>,
    check: Checker<'a>,
    /// Frames to send in total (u64::MAX: no limit).
    limit: u64,
    sent: u64,
    received: u64,
    in_flight: usize,
    /// Mbufs an rx ring did not take (freed; must stay 0).
    lost: u64,
    burst: RxBurst,
}

impl<'a> Gen<'a> {
    fn new(
        wire: &'a Wire,
        in_port: usize,
        out_port: usize,
        place: Placement,
        src: Source<'a>,
        check: Checker<'a>,
        limit: u64,
    ) -> Self {
        let rx: Vec<&Ring> = wire.rx[in_port].iter().collect();
        Gen {
            bufs: rx.iter().map(|_| TxBuffer::default()).collect(),
            rx,
            tx: wire.tx[out_port].iter().collect(),
            place,
            src,
            check,
            limit,
            sent: 0,
            received: 0,
            in_flight: 0,
            lost: 0,
            burst: RxBurst::default(),
        }
    }

    #[inline]
    fn queue_of(&self, c: Ep) -> usize {
        let n = self.rx.len();
        if n == 1 {
            return 0;
        }
        let o = owner_of(&SockAddr::new(Addr::v4(c.0), c.1), n as u16) as usize;
        match self.place {
            Placement::Owner => o,
            Placement::NonOwner => (o + 1) % n,
        }
    }

    fn flush(&mut self, q: usize) {
        let (_, dropped) = self.bufs[q].flush_ring(self.rx[q]);
        if dropped > 0 {
            self.lost += dropped as u64;
            self.in_flight -= dropped;
        }
    }

    fn flush_all(&mut self) {
        for q in 0..self.bufs.len() {
            self.flush(q);
        }
    }

    /// Refills `m` with the next frame and queues it, or retires it once the
    /// source is done.
    #[inline]
    fn feed(&mut self, mut m: Mbuf) {
        if self.sent >= self.limit {
            self.in_flight -= 1;
            return; // `m` goes back to the pool
        }
        let c = self.src.fill(&mut m);
        let q = self.queue_of(c);
        self.sent += 1;
        if self.bufs[q].is_full() {
            self.flush(q);
        }
        self.bufs[q].push(m);
    }

    /// Puts `n` fresh mbufs into circulation.
    fn start(&mut self, pool: &Mempool, n: usize) -> Result<()> {
        for _ in 0..n {
            if self.sent >= self.limit {
                break;
            }
            let m = pool
                .alloc()
                .context("generator mempool exhausted (mbufs leaked?)")?;
            self.in_flight += 1;
            self.feed(m);
        }
        self.flush_all();
        Ok(())
    }

    /// Takes what the workers sent, checks it and refills it.
    #[inline]
    fn pump(&mut self) -> usize {
        let mut got = 0;
        let mut burst = core::mem::take(&mut self.burst);
        for q in 0..self.tx.len() {
            got += self.tx[q].dequeue(&mut burst);
            for m in burst.by_ref() {
                self.received += 1;
                self.check.on_output(q, m.data());
                self.feed(m);
            }
        }
        self.burst = burst;
        self.flush_all();
        if got == 0 {
            dpdk::pause();
        }
        got
    }

    fn done(&self) -> bool {
        self.sent >= self.limit && self.in_flight == 0
    }

    fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while !self.done() && Instant::now() < end {
            self.pump();
        }
    }

    fn run_to_end(&mut self, timeout: Duration, what: &str) -> Result<()> {
        let end = Instant::now() + timeout;
        while !self.done() {
            ensure!(
                Instant::now() < end,
                "{what}: {} frames still out after {timeout:?} (sent {}, received {})",
                self.in_flight,
                self.sent,
                self.received
            );
            self.pump();
        }
        Ok(())
    }

    /// Stops feeding and waits for every mbuf to come back.
    fn drain(&mut self, what: &str) -> Result<()> {
        self.limit = self.sent;
        self.run_to_end(Duration::from_secs(30), what)
    }

    /// One prefill round: fills the rx rings with `packets` frames before
    /// releasing any of them, waits (sleeping) until the workers have sent
    /// them all, takes them back into `batch`. Returns the counter
    /// differences and the wall time from the first enqueue to the last
    /// packet out.
    fn prefill_round(
        &mut self,
        pool: &Mempool,
        stats: &[Arc<WorkerStats>],
        batch: &mut Vec<Mbuf>,
        lists: &mut [Vec<Mbuf>],
        packets: usize,
        clock: &CpuClock,
    ) -> Result<Round> {
        while batch.len() < packets {
            batch.push(pool.alloc().context("generator mempool exhausted")?);
        }
        for mut m in batch.drain(..) {
            let c = self.src.fill(&mut m);
            lists[self.queue_of(c)].push(m);
        }
        self.sent += packets as u64;
        let drops0: u64 = stats.iter().map(|s| s.total_drops()).sum();
        let before = snap(stats);
        let c0 = clock.read();
        let t0 = Instant::now();
        // Release everything, a burst per queue at a time, both queues together.
        let mut lost = 0;
        {
            let mut its: Vec<_> = lists.iter_mut().map(|l| l.drain(..)).collect();
            loop {
                let mut any = false;
                for (q, it) in its.iter_mut().enumerate() {
                    let mut k = 0;
                    for m in it.by_ref().take(dpdk::BURST) {
                        self.bufs[q].push(m);
                        k += 1;
                    }
                    if k > 0 {
                        any = true;
                        lost += self.bufs[q].flush_ring(self.rx[q]).1;
                    }
                }
                if !any {
                    break;
                }
            }
        }
        let expected = packets - lost;
        // Mid-drain samples: between two polls at which a worker's queue
        // still held a full burst, it found one every time it looked (the
        // queue only drains), so those loops show the saturated burst.
        let mut saturated = vec![(0u64, 0u64); self.rx.len()];
        let mut prev = snap(stats);
        loop {
            std::thread::sleep(PREFILL_POLL);
            let left: Vec<u32> = self.rx.iter().map(|r| r.count()).collect();
            let now = snap(stats);
            for (q, n) in left.iter().enumerate() {
                if *n >= dpdk::BURST as u32 {
                    let d = now[q].minus(&prev[q]);
                    saturated[q].0 += d.rx;
                    saturated[q].1 += d.loops;
                }
            }
            prev = now;
            let out: usize = self.tx.iter().map(|r| r.count() as usize).sum();
            if out >= expected {
                break;
            }
            let drops: u64 = stats.iter().map(|s| s.total_drops()).sum();
            if drops != drops0 {
                // Some packets will never come out; the caller reports the drops.
                std::thread::sleep(Duration::from_millis(50));
                break;
            }
            ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "prefill: only {out} of {expected} packets came out in 30 s"
            );
        }
        let wall = t0.elapsed();
        let after = snap(stats);
        let c1 = clock.read();
        let mut burst = core::mem::take(&mut self.burst);
        for q in 0..self.tx.len() {
            while self.tx[q].dequeue(&mut burst) > 0 {
                for m in burst.by_ref() {
                    self.received += 1;
                    self.check.on_output(q, m.data());
                    batch.push(m);
                }
            }
        }
        self.burst = burst;
        self.lost += lost as u64;
        Ok(Round {
            counters: delta(&before, &after),
            saturated,
            sched: sched_delta(&c0, &c1),
            wall,
            lost,
        })
    }
}

/// What one prefill round measured.
struct Round {
    counters: Vec<Snap>,
    /// Per worker: (rx packets, loops) while its queue never ran dry.
    saturated: Vec<(u64, u64)>,
    sched: Vec<Option<Sched>>,
    wall: Duration,
    lost: usize,
}

// ---- results ----

/// Notes on how trustworthy a window's figures are.
fn window_notes(m: &Measured, generator: bool, out: &mut Outcome) {
    if let Some(share) = m.min_worker_share() {
        if share < CONTENDED_SHARE {
            out.notes.push(format!(
                "contended: a worker thread was on its CPU only {:.0}% of the window (other load on \
                 the machine); its busy cycles include the time it was preempted, so cycles/packet \
                 are inflated",
                share * 100.0
            ));
        }
        out.extra
            .insert("contended".into(), json!(share < CONTENDED_SHARE));
        out.extra
            .insert("worker_cpu_share_min".into(), json!(share));
    }
    out.extra
        .insert("packets_per_loop".into(), json!(m.packets_per_loop()));
    if generator {
        out.extra.insert(
            "generator_cpu_share".into(),
            json!(m.cpu_share(m.per_worker.len())),
        );
        out.extra.insert("saturated".into(), json!(m.saturated()));
        if !m.saturated() {
            out.notes.push(format!(
                "worker not saturated ({:.1} packets per loop, idle {:.0}% of its cycles): the \
                 generator limited the rate; cycles/packet counts busy loops only",
                m.packets_per_loop(),
                m.idle_fraction() * 100.0
            ));
        }
    }
}

struct Outcome {
    name: String,
    direction: &'static str,
    flows: u64,
    world: World,
    workers: usize,
    mode: &'static str,
    measured: Option<Measured>,
    drops: u64,
    problems: Vec<String>,
    notes: Vec<String>,
    extra: Map<String, Value>,
}

impl Outcome {
    fn new(
        name: &str,
        direction: &'static str,
        flows: u64,
        world: World,
        workers: usize,
        mode: &'static str,
    ) -> Self {
        Outcome {
            name: name.into(),
            direction,
            flows,
            world,
            workers,
            mode,
            measured: None,
            drops: 0,
            problems: vec![],
            notes: vec![],
            extra: Map::new(),
        }
    }
    fn valid(&self) -> bool {
        self.problems.is_empty() && self.measured.is_some()
    }
    fn require(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(msg());
        }
    }
    fn cpp(&self) -> Option<f64> {
        self.measured.as_ref().map(|m| m.cycles_per_packet())
    }
    fn note(&self) -> String {
        let mut v: Vec<String> = self
            .problems
            .iter()
            .map(|p| format!("INVALID: {p}"))
            .collect();
        v.extend(self.notes.iter().cloned());
        v.join("; ")
    }
    fn to_json(&self, hz: u64) -> Value {
        let m = self.measured.as_ref();
        let mut o = json!({
            "name": self.name,
            "direction": self.direction,
            "flows": self.flows,
            "services": self.world.services,
            "backends_per_service": self.world.per_service,
            "masquerade": self.world.masq,
            "workers": self.workers,
            "packets": m.map(|m| m.packets()),
            "busy_cycles": m.map(|m| m.busy()),
            "cycles_per_packet": m.map(|m| m.cycles_per_packet()),
            "mpps_per_worker": m.map(|m| m.mpps_per_worker(hz)),
            "mpps_total": m.map(|m| m.mpps_total(hz)),
            "avg_burst": m.map(|m| m.avg_burst()),
            "drops": self.drops,
            "valid": self.valid(),
            "note": self.note(),
            "mode": self.mode,
            "frame_bytes": self.world.frame_len() + 4,
            "window_s": m.map(|m| m.wall.as_secs_f64()),
            "mpps_wall": m.map(|m| m.packets() as f64 / m.wall.as_secs_f64().max(1e-9) / 1e6),
            "idle_fraction": m.map(|m| m.idle_fraction()),
            "per_worker": m.map(|m| m.workers_json(hz)),
        });
        if let Value::Object(map) = &mut o {
            map.extend(self.extra.clone());
        }
        o
    }
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.prec$}"),
        _ => "-".into(),
    }
}

fn print_line(o: &Outcome, hz: u64) {
    let m = o.measured.as_ref();
    println!(
        "{:<29} {:<7} {:>8} {:>8} {:>1} {:>10} {:>8} {:>6} {:>6} {:>5} {:>5} {:>4} {:>5} {}",
        o.name,
        o.direction,
        o.flows,
        format!("{}x{}", o.world.services, o.world.per_service),
        o.workers,
        m.map_or_else(|| "-".to_string(), |m| m.packets().to_string()),
        fmt_opt(m.map(|m| m.cycles_per_packet()), 1),
        fmt_opt(m.map(|m| m.mpps_per_worker(hz)), 2),
        fmt_opt(m.map(|m| m.mpps_total(hz)), 2),
        fmt_opt(m.map(|m| m.avg_burst()), 1),
        fmt_opt(m.map(|m| m.idle_fraction() * 100.0), 1),
        fmt_opt(m.and_then(|m| m.min_worker_share()).map(|s| s * 100.0), 0),
        o.drops,
        if o.valid() { "yes" } else { "NO" },
    );
}

fn print_header() {
    println!(
        "{:<29} {:<7} {:>8} {:>8} {:>1} {:>10} {:>8} {:>6} {:>6} {:>5} {:>5} {:>4} {:>5} valid",
        "scenario",
        "dir",
        "flows",
        "svc x be",
        "W",
        "packets",
        "cyc/pkt",
        "Mpps/w",
        "Mpps",
        "burst",
        "idle%",
        "cpu%",
        "drops"
    );
}

// ---- scenarios ----

struct Ctx<'e> {
    eal: &'e Eal,
    pool: Mempool,
    hz: u64,
    p: Params,
    seq: Cell<u32>,
}

impl<'e> Ctx<'e> {
    /// Builds two ring ports and starts the product's dataplane on them.
    fn start(&self, spec: &DpSpec, table: ServiceTable) -> Result<Dataplane<'e>> {
        let n = spec.lcores.len();
        let id = self.seq.get();
        self.seq.set(id + 1);
        let mut rx = vec![];
        let mut tx = vec![];
        let mut ports = vec![];
        let mut specs = vec![];
        for p in 0..2 {
            let name = format!("rp{id}_{p}");
            let r: Vec<Ring> = (0..n)
                .map(|q| Ring::new(&format!("{name}_rx{q}"), spec.ring, 0))
                .collect::<Result<_, _>>()
                .context("wire rx ring")?;
            let t: Vec<Ring> = (0..n)
                .map(|q| Ring::new(&format!("{name}_tx{q}"), spec.ring, 0))
                .collect::<Result<_, _>>()
                .context("wire tx ring")?;
            let rr: Vec<&Ring> = r.iter().collect();
            let tr: Vec<&Ring> = t.iter().collect();
            ports.push(Port::from_rings(&name, &rr, &tr, 0).context("rte_eth_from_rings")?);
            rx.push(r);
            tx.push(t);
            // rte_eth_from_rings(name) registers the device as "net_ring_<name>".
            specs.push(PortSpec {
                device: format!("net_ring_{name}"),
                vlan: None,
                mtu: 1500,
            });
        }
        let cfg = DataplaneConfig {
            ports: specs,
            lcores: spec.lcores.clone(),
            // The ring PMD takes its mbufs from us; the worker's pool only
            // serves packets the worker generates itself (none here).
            mbufs: 2047,
            rx_desc: 1024,
            tx_desc: 1024,
            pipeline: PipelineConfig {
                sessions: spec.sessions,
                timeouts: spec.timeouts,
                neighbors: spec.neighbors,
                ..Default::default()
            },
            idle_sleep_us: 0,
            handoff_ring: spec.handoff_ring,
            exception: None,
            backend_counters: None,
        };
        let rcu = Rcu::new(table, n);
        let running = worker::start(self.eal, &cfg, &rcu).context("worker::start")?;
        let macs = [running.port_info[0].mac, running.port_info[1].mac];
        let dp = Dataplane {
            eal: self.eal,
            running: Some(running),
            wire: Wire {
                rx,
                tx,
                _ports: ports,
            },
            macs,
            lcores: spec.lcores.clone(),
            rcu,
        };
        let t = Instant::now();
        while !dp
            .stats()
            .iter()
            .all(|s| s.table_version.load(Relaxed) == 1)
        {
            ensure!(
                t.elapsed() < Duration::from_secs(30),
                "workers did not take the table"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(dp)
    }
}

/// Sends the first packet of every flow once (creating the sessions) and
/// checks every output; `Kind::Forward` records each flow's backend.
fn warm_up(
    ctx: &Ctx,
    dp: &Dataplane,
    world: World,
    frames: &[Frame],
    kind: Kind,
    backend_of: &mut [u32],
) -> Result<Duration> {
    let t = Instant::now();
    let n = frames.len();
    let order: Vec<u32> = (0..n as u32).collect();
    let before = snap(dp.stats());
    let (inp, outp) = if kind == Kind::Reply { (1, 0) } else { (0, 1) };
    let check = Checker::new(
        world,
        kind,
        dp.macs[outp],
        dp.workers(),
        backend_of,
        kind == Kind::Forward,
        1,
        if n <= 100_000 { 1 } else { 16 },
    );
    let src = Source::Frames {
        frames,
        len: world.frame_len(),
        order: &order,
        pos: 0,
    };
    let mut g = Gen::new(&dp.wire, inp, outp, Placement::Owner, src, check, n as u64);
    g.start(&ctx.pool, WARM_IN_FLIGHT)?;
    g.run_to_end(Duration::from_secs(300), "warm-up")?;
    ensure!(g.check.errors == 0, "warm-up output: {}", g.check.summary());
    ensure!(
        g.received == n as u64 && g.lost == 0,
        "warm-up: sent {n}, received {}, lost {}",
        g.received,
        g.lost
    );
    let d = total(&delta(&before, &snap(dp.stats())));
    ensure!(d.drops == 0, "warm-up: {} drops", d.drops);
    match kind {
        Kind::Forward => ensure!(
            d.created == n as u64,
            "warm-up created {} sessions for {n} flows",
            d.created
        ),
        Kind::Reply => ensure!(
            d.nat_rev == n as u64,
            "reply warm-up: {} reverse translations for {n} flows",
            d.nat_rev
        ),
        Kind::New(_) => {}
    }
    Ok(t.elapsed())
}

/// Generator mode: circulates `GEN_IN_FLIGHT` mbufs, ramps up, measures.
fn measure_generator<'a>(
    ctx: &Ctx,
    dp: &'a Dataplane,
    src: Source<'a>,
    check: Checker<'a>,
    inp: usize,
    limit: u64,
    out: &mut Outcome,
) -> Result<(Measured, u64)> {
    let clock = CpuClock::new(&dp.lcores);
    let outp = 1 - inp;
    let mut g = Gen::new(&dp.wire, inp, outp, Placement::Owner, src, check, limit);
    g.start(&ctx.pool, GEN_IN_FLIGHT)?;
    g.run_for(ctx.p.ramp);
    let a = snap(dp.stats());
    let ca = clock.read();
    let t0 = Instant::now();
    g.run_for(ctx.p.window);
    let b = snap(dp.stats());
    let cb = clock.read();
    let wall = t0.elapsed();
    g.drain("measured pass")?;
    out.require(g.check.errors == 0, || {
        format!("transmitted packets: {}", g.check.summary())
    });
    out.require(g.received == g.sent && g.lost == 0, || {
        format!(
            "generator sent {} frames, got {} back, {} lost",
            g.sent, g.received, g.lost
        )
    });
    out.extra
        .insert("checked_packets".into(), json!(g.check.checked));
    out.extra
        .insert("fully_parsed_packets".into(), json!(g.check.full));
    out.extra
        .insert("in_flight_mbufs".into(), json!(GEN_IN_FLIGHT));
    let m = Measured {
        per_worker: delta(&a, &b),
        saturated_loops: None,
        lcores: dp.lcores.clone(),
        wall,
        sched: sched_delta(&ca, &cb),
    };
    window_notes(&m, true, out);
    Ok((m, g.sent))
}

/// Common end-of-scenario checks; stops the dataplane.
fn finish(
    mut dp: Dataplane,
    base: &[Snap],
    base_drops: &[u64],
    flows: Option<u64>,
    out: &mut Outcome,
) {
    let stats = dp.stats().to_vec();
    // Let the workers finish their last loop.
    std::thread::sleep(Duration::from_millis(5));
    let d = total(&delta(base, &snap(&stats)));
    out.drops = d.drops;
    let by_reason = drops_since(&stats, base_drops);
    out.require(d.drops == 0, || {
        format!("the proxy dropped packets: {by_reason:?}")
    });
    if !by_reason.is_empty() {
        out.extra
            .insert("drops_by_reason".into(), Value::Object(by_reason));
    }
    out.require(d.rx == d.tx, || {
        format!("received {} packets but transmitted {}", d.rx, d.tx)
    });
    if let Some(f) = flows {
        out.require(d.active == f, || {
            format!("{} sessions live at the end, want {f}", d.active)
        });
    }
    for e in dp.port_errors() {
        out.problems.push(e);
    }
    let stray = dp.sweep();
    out.require(stray == 0, || {
        format!("{stray} frames left on wire rings (wrong port?)")
    });
    let codes = dp.stop();
    out.require(codes.iter().all(|&c| c == 0), || {
        format!("worker exit codes {codes:?}")
    });
}

struct Established {
    name: &'static str,
    flows: u32,
    services: u32,
    per_service: u32,
    reply: bool,
    /// Over IPv6.
    v6: bool,
    /// Every Service masquerades ([`World::masq`]).
    masq: bool,
}

fn established(ctx: &Ctx, e: &Established) -> Outcome {
    let world = World {
        services: e.services,
        per_service: e.per_service,
        v6: e.v6,
        masq: e.masq,
    };
    let dir = if e.reply { "reply" } else { "forward" };
    let mut out = Outcome::new(e.name, dir, e.flows.into(), world, 1, "generator");
    if let Err(err) = established_inner(ctx, e, world, &mut out) {
        out.problems.push(format!("{err:#}"));
    }
    out
}

fn established_inner(ctx: &Ctx, e: &Established, world: World, out: &mut Outcome) -> Result<()> {
    ensure!(e.flows <= MAX_FLOWS, "at most {MAX_FLOWS} flows");
    let t = Instant::now();
    let table = world.table(&[Proto::Udp]);
    let cap = session_capacity(e.flows);
    let dp = ctx.start(
        &DpSpec {
            lcores: vec![LCORE_CPU1],
            sessions: cap,
            timeouts: established_timeouts(),
            neighbors: world.neighbors(),
            ring: GEN_RING,
            handoff_ring: DEFAULT_HANDOFF_RING,
        },
        table,
    )?;
    let base = snap(dp.stats());
    let base_drops = drop_counts(dp.stats());
    out.extra.insert("session_capacity".into(), json!(cap));
    if let Some(m) = dp.running.as_ref().and_then(|r| r.table_memory.first()) {
        out.extra.insert("table_bytes".into(), json!(m.bytes));
        out.extra
            .insert("table_huge_page_bytes".into(), json!(m.huge_page_bytes));
    }
    out.extra
        .insert("udp_timeout_ms".into(), json!(established_timeouts().udp));
    out.extra
        .insert("setup_s".into(), json!(t.elapsed().as_secs_f64()));
    let fwd = forward_frames(&world, e.flows, dp.macs[0]);
    let mut backend_of = vec![UNSET; e.flows as usize];
    let wt = warm_up(ctx, &dp, world, &fwd, Kind::Forward, &mut backend_of)?;
    let mut used = backend_of.clone();
    used.sort_unstable();
    used.dedup();
    out.extra.insert("backends_used".into(), json!(used.len()));
    let mut warm_s = wt.as_secs_f64();
    let order = common::permutation(e.flows, 0x7265_706c_6179);
    let rev;
    let (frames, kind, inp) = if e.reply {
        rev = reply_frames(&world, &backend_of, dp.macs[1]);
        warm_s += warm_up(ctx, &dp, world, &rev, Kind::Reply, &mut backend_of)?.as_secs_f64();
        (&rev, Kind::Reply, 1)
    } else {
        (&fwd, Kind::Forward, 0)
    };
    out.extra.insert("warmup_s".into(), json!(warm_s));
    let src = Source::Frames {
        frames,
        len: world.frame_len(),
        order: &order,
        pos: 0,
    };
    let check = Checker::new(
        world,
        kind,
        dp.macs[1 - inp],
        1,
        &mut backend_of,
        false,
        CHECK_EVERY,
        FULL_CHECK_EVERY,
    );
    let (m, _) = measure_generator(ctx, &dp, src, check, inp, u64::MAX, out)?;
    let d = total(&m.per_worker);
    out.require(d.created == 0, || {
        format!(
            "{} sessions created while measuring established flows",
            d.created
        )
    });
    if e.reply {
        out.require(d.nat_rev.abs_diff(d.rx) <= EDGE, || {
            format!("{} of {} packets reverse-translated", d.nat_rev, d.rx)
        });
    } else {
        out.require(d.nat_fwd.abs_diff(d.rx) <= EDGE, || {
            format!("{} of {} packets translated", d.nat_fwd, d.rx)
        });
    }
    out.extra
        .insert("fast_path_share".into(), json!(fast_share(&m)));
    out.measured = Some(m);
    finish(dp, &base, &base_drops, Some(e.flows.into()), out);
    Ok(())
}

/// The `new_connections` scenario and its `new_connections` JSON object.
fn new_connections(ctx: &Ctx) -> (Outcome, Value) {
    let world = World {
        services: 16,
        per_service: 8,
        v6: false,
        masq: false,
    };
    let mut out = Outcome::new("new_connections", "new", 0, world, 1, "generator");
    let mut nc = Map::new();
    if let Err(err) = new_connections_inner(ctx, world, &mut out, &mut nc) {
        out.problems.push(format!("{err:#}"));
    }
    (out, Value::Object(nc))
}

fn new_connections_inner(
    ctx: &Ctx,
    world: World,
    out: &mut Outcome,
    nc: &mut Map<String, Value>,
) -> Result<()> {
    let cap = ctx.p.new_conn_capacity;
    // Reported memory: a table of the worker's capacity, default timeouts.
    let probe = SessionTable::new(cap, Timeouts::default());
    let session_bytes = probe.memory_bytes() as f64 / probe.capacity() as f64;
    drop(probe);
    nc.insert("capacity".into(), json!(cap));
    nc.insert("session_bytes".into(), json!(session_bytes));
    nc.insert(
        "sessions_per_gib".into(),
        json!(((1u64 << 30) as f64 / session_bytes).floor()),
    );
    nc.insert("session_bytes_target".into(), json!(128));
    nc.insert("meets_target".into(), json!(session_bytes <= 128.0));
    // TCP Services are measured; UDP ones (same VIPs) serve the pre-warm.
    let table = world.table(&[Proto::Tcp, Proto::Udp]);
    let timeouts = Timeouts {
        udp: ctx.p.prewarm_udp_ms,
        udp_stream: ctx.p.prewarm_udp_ms,
        ..Timeouts::default()
    };
    let dp = ctx.start(
        &DpSpec {
            lcores: vec![LCORE_CPU1],
            sessions: cap,
            timeouts,
            neighbors: world.neighbors(),
            ring: GEN_RING,
            handoff_ring: DEFAULT_HANDOFF_RING,
        },
        table,
    )?;
    let base = snap(dp.stats());
    let base_drops = drop_counts(dp.stats());

    // Pre-warm: fill the table with short-lived UDP sessions and let them
    // expire, so that the measured connections reuse memory that is already
    // mapped (a fresh process would otherwise measure first-touch page
    // faults, not the steady state).
    let t = Instant::now();
    let prewarm = (cap * 9 / 10) as u64;
    let check = Checker::new(
        world,
        Kind::New(Proto::Udp),
        dp.macs[1],
        1,
        &mut [],
        false,
        64,
        1024,
    );
    let src = Source::New {
        proto: Proto::Udp,
        next: 0,
        dst_mac: dp.macs[0],
        world,
    };
    let live_end;
    {
        let mut g = Gen::new(&dp.wire, 0, 1, Placement::Owner, src, check, prewarm);
        g.start(&ctx.pool, GEN_IN_FLIGHT)?;
        g.run_to_end(Duration::from_secs(600), "pre-warm")?;
        ensure!(
            g.check.errors == 0,
            "pre-warm output: {}",
            g.check.summary()
        );
        let d = total(&delta(&base, &snap(dp.stats())));
        ensure!(
            d.created == prewarm && d.drops == 0,
            "pre-warm: {} sessions created for {prewarm} flows, {} drops",
            d.created,
            d.drops
        );
        live_end = d.active;
    }
    let prewarm_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    while snap(dp.stats()).iter().map(|s| s.active).sum::<u64>() > 0 {
        ensure!(
            t.elapsed() < Duration::from_millis(ctx.p.prewarm_udp_ms) + Duration::from_secs(120),
            "pre-warm sessions did not expire"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Sessions the table held at once: the measured ones reuse their memory.
    let limit = live_end.min(prewarm);
    nc.insert("prewarm_sessions".into(), json!(prewarm));
    nc.insert("prewarm_live_at_end".into(), json!(live_end));
    out.notes.push(format!(
        "table memory pre-faulted by {prewarm} UDP sessions ({prewarm_s:.1} s) that expired before the window \
         (udp timeout {} ms in this run, TCP timeouts default); at most {limit} connections measured",
        ctx.p.prewarm_udp_ms
    ));

    let after_prewarm = snap(dp.stats());
    let check = Checker::new(
        world,
        Kind::New(Proto::Tcp),
        dp.macs[1],
        1,
        &mut [],
        false,
        CHECK_EVERY,
        FULL_CHECK_EVERY,
    );
    let src = Source::New {
        proto: Proto::Tcp,
        next: 0,
        dst_mac: dp.macs[0],
        world,
    };
    let (m, sent) = measure_generator(ctx, &dp, src, check, 0, limit, out)?;
    let w = total(&m.per_worker);
    out.require(w.created.abs_diff(w.rx) <= EDGE, || {
        format!(
            "{} sessions created for {} SYNs in the window",
            w.created, w.rx
        )
    });
    let all = total(&delta(&after_prewarm, &snap(dp.stats())));
    out.require(all.created == sent, || {
        format!("{} sessions created for {sent} SYNs", all.created)
    });
    out.flows = w.rx;
    nc.insert("connections_measured".into(), json!(w.rx));
    nc.insert(
        "per_second_per_worker".into(),
        json!(ctx.hz as f64 / m.cycles_per_packet()),
    );
    nc.insert("cycles_per_connection".into(), json!(m.cycles_per_packet()));
    out.measured = Some(m);
    // Every SYN session is still live (tcp_syn timeout: 60 s).
    finish(dp, &base, &base_drops, Some(sent), out);
    Ok(())
}

/// Prefill mode over 60k established flows, 16 x 8.
fn prefill(ctx: &Ctx, name: &str, workers: usize, place: Placement) -> Outcome {
    let world = World {
        services: 16,
        per_service: 8,
        v6: false,
        masq: false,
    };
    let flows: u32 = 60_000;
    let mut out = Outcome::new(name, "forward", flows.into(), world, workers, "prefill");
    if let Err(err) = prefill_inner(ctx, world, flows, workers, place, &mut out) {
        out.problems.push(format!("{err:#}"));
    }
    out
}

fn prefill_inner(
    ctx: &Ctx,
    world: World,
    flows: u32,
    workers: usize,
    place: Placement,
    out: &mut Outcome,
) -> Result<()> {
    let lcores = if workers == 1 {
        vec![LCORE_CPU1]
    } else {
        vec![LCORE_CPU1, LCORE_CPU0]
    };
    let cap = session_capacity(flows);
    let dp = ctx.start(
        &DpSpec {
            lcores,
            sessions: cap,
            timeouts: established_timeouts(),
            neighbors: world.neighbors(),
            ring: PREFILL_RING,
            handoff_ring: HANDOFF_RING,
        },
        world.table(&[Proto::Udp]),
    )?;
    let base = snap(dp.stats());
    let base_drops = drop_counts(dp.stats());
    let fwd = forward_frames(&world, flows, dp.macs[0]);
    let mut backend_of = vec![UNSET; flows as usize];
    // Sessions are created on their owners.
    let wt = warm_up(ctx, &dp, world, &fwd, Kind::Forward, &mut backend_of)?;
    out.extra.insert("warmup_s".into(), json!(wt.as_secs_f64()));
    out.extra.insert("session_capacity".into(), json!(cap));
    out.extra.insert("handoff_ring".into(), json!(HANDOFF_RING));
    out.extra
        .insert("udp_timeout_ms".into(), json!(established_timeouts().udp));
    let order = common::permutation(flows, 0x7265_706c_6179);
    let src = Source::Frames {
        frames: &fwd,
        len: world.frame_len(),
        order: &order,
        pos: 0,
    };
    let check = Checker::new(
        world,
        Kind::Forward,
        dp.macs[1],
        workers,
        &mut backend_of,
        false,
        CHECK_EVERY,
        FULL_CHECK_EVERY,
    );
    let mut g = Gen::new(&dp.wire, 0, 1, place, src, check, u64::MAX);
    let mut batch = Vec::with_capacity(PREFILL_PACKETS);
    let mut lists: Vec<Vec<Mbuf>> = (0..workers)
        .map(|_| Vec::with_capacity(PREFILL_PACKETS))
        .collect();
    let clock = CpuClock::new(&dp.lcores);
    let mut acc = vec![Snap::default(); workers];
    let mut sched = vec![Some(Sched::default()); workers + 1];
    let mut sat = vec![(0u64, 0u64); workers];
    let mut wall = Duration::ZERO;
    for r in 0..ctx.p.rounds {
        let round = g.prefill_round(
            &ctx.pool,
            dp.stats(),
            &mut batch,
            &mut lists,
            PREFILL_PACKETS,
            &clock,
        )?;
        let (d, w, lost) = (round.counters, round.wall, round.lost);
        sched_add(&mut sched, &round.sched);
        for (a, s) in sat.iter_mut().zip(&round.saturated) {
            a.0 += s.0;
            a.1 += s.1;
        }
        let t = total(&d);
        out.require(lost == 0, || {
            format!("round {r}: rx rings refused {lost} packets")
        });
        out.require(t.rx == (PREFILL_PACKETS - lost) as u64, || {
            format!("round {r}: workers received {} of {PREFILL_PACKETS}", t.rx)
        });
        for (a, d) in acc.iter_mut().zip(&d) {
            a.add(d);
        }
        wall += w;
        if !out.problems.is_empty() {
            break;
        }
    }
    let received = g.received;
    out.require(g.check.errors == 0, || {
        format!("transmitted packets: {}", g.check.summary())
    });
    out.require(received == g.sent, || {
        format!("{} packets released, {received} came back", g.sent)
    });
    out.extra
        .insert("checked_packets".into(), json!(g.check.checked));
    out.extra
        .insert("fully_parsed_packets".into(), json!(g.check.full));
    out.extra.insert("rounds".into(), json!(ctx.p.rounds));
    out.extra
        .insert("packets_per_round".into(), json!(PREFILL_PACKETS));
    drop(g);
    drop(batch);
    let m = Measured {
        per_worker: acc,
        saturated_loops: Some(sat),
        lcores: dp.lcores.clone(),
        wall,
        sched,
    };
    window_notes(&m, false, out);
    let t = total(&m.per_worker);
    out.require(t.created == 0, || {
        format!("{} sessions created while measuring", t.created)
    });
    match place {
        Placement::Owner => out.require(t.ho_out == 0, || {
            format!(
                "{} packets handed over although each arrived at its owner",
                t.ho_out
            )
        }),
        Placement::NonOwner => {
            out.require(
                workers < 2 || (t.ho_out == t.rx && t.ho_in == t.rx),
                || {
                    format!(
                        "{} received, {} handed out, {} handed in: every packet must be handed over once",
                        t.rx, t.ho_out, t.ho_in
                    )
                },
            );
            out.extra.insert("handoff_packets".into(), json!(t.ho_out));
        }
    }
    out.measured = Some(m);
    finish(dp, &base, &base_drops, Some(flows.into()), out);
    Ok(())
}

// ---- hitless updates ----

/// The backend changes of the `updates` scenario. Change `i` touches Service
/// `(i / 2) % services`: an even change adds that Service's extra backend (a
/// new address that no flow uses, with a static neighbour like the other
/// backends), the odd change after it removes it again, so the table
/// alternates between the world's and the world's plus one backend. Backends
/// that established flows use are never removed: kube-proxy flushes the UDP
/// flows of a removed endpoint, which would be a correct move, not a failure
/// of a hitless update. Each table is built the way the control plane builds
/// it: the changed Service (its Maglev table) is rebuilt, the other Services
/// are shared with the previous table (`ServiceTable::with_services`).
struct Changes {
    world: World,
    changes: common::BackendChanges,
}

impl Changes {
    fn new(world: World) -> Changes {
        let mut spec = world.spec(&[Proto::Udp]);
        for s in 0..world.services {
            let k = Self::extra(world, s);
            spec.neighbors.push(StaticNeighbor {
                addr: Addr::v4(backend(k).0),
                mac: backend_mac(k),
                port: 1,
            });
        }
        Changes {
            world,
            changes: common::BackendChanges::new(spec, world.services as usize),
        }
    }

    /// Service `s`'s extra backend: index `backends() + s`, past every
    /// Service's own (so the checker rejects it as a flow's backend).
    fn extra(world: World, s: u32) -> u32 {
        world.backends() + s
    }

    /// The current table as `version`.
    fn table(&self, version: u64) -> ServiceTable {
        self.changes.table(version)
    }

    /// Applies change `i` and returns the new table as `version`
    /// ([`common::BackendChanges::apply`]).
    fn apply(&mut self, i: u64, version: u64) -> ServiceTable {
        let w = self.world;
        self.changes.apply(i, version, |s| {
            let (ip, port) = backend(Self::extra(w, s as u32));
            SockAddr::new(Addr::v4(ip), port)
        })
    }

    fn describe(&self) -> String {
        let w = self.world;
        let ep = |s| {
            let (ip, port) = backend(Self::extra(w, s));
            format!("{}:{port}", Addr::v4(ip))
        };
        format!(
            "change 2j adds an extra backend (a new address no flow uses: {} .. {}) to Service \
             j mod {} ({} backends -> {}), change 2j+1 removes it again; each publication rebuilds \
             the changed Service's Maglev table, shares the other Services and increments the \
             table version; no backend an established flow uses is ever removed",
            ep(0),
            ep(w.services - 1),
            w.services,
            w.per_service,
            w.per_service + 1
        )
    }
}

/// One publication, timed from the `Rcu::publish` call.
#[derive(Clone, Copy, Debug)]
struct Publication {
    /// The grace period `Rcu::publish` reported (swap until every worker
    /// passed a quiescent state).
    grace: Duration,
    /// Until every worker's `table_version` showed the new version.
    seen: Duration,
    /// Every worker already showed it when `publish` returned: `seen` is
    /// then an upper bound (it includes freeing the old table).
    seen_at_return: bool,
}

/// What the publisher did during one window.
#[derive(Default)]
struct PublisherRun {
    pubs: Vec<Publication>,
    failures: Vec<String>,
    leaked: Vec<Leaked>,
    /// Publications that started more than one period after their slot.
    late: usize,
    /// The publisher thread's allowed CPUs.
    cpus: String,
}

/// True when every worker uses table `version` or a newer one.
fn all_on(stats: &[Arc<WorkerStats>], version: u64) -> bool {
    stats
        .iter()
        .all(|s| s.table_version.load(Relaxed) >= version)
}

/// The CPUs the calling thread may run on (`Cpus_allowed_list`).
fn thread_cpus() -> String {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// The publisher: `n` backend changes, evenly paced one per `period` from
/// now, through the cell the workers read. Runs on a plain thread spawned by
/// the generator, so on CPU 0 with it (threads inherit the EAL main lcore's
/// affinity). Each publication is timed from the `publish` call until every
/// worker's `table_version` shows it; `publish` polls the grace period with
/// a zero sleep (a busy wait: `thread::sleep(0)` makes no syscall) and the
/// version is then polled in a tight loop, so the publisher holds its CPU
/// for a few tens of microseconds per change.
fn publish_paced(
    rcu: &Rcu<ServiceTable>,
    stats: &[Arc<WorkerStats>],
    changes: &mut Changes,
    next: &mut u64,
    n: usize,
    period: Duration,
) -> PublisherRun {
    let mut run = PublisherRun {
        cpus: thread_cpus(),
        ..Default::default()
    };
    let start = Instant::now();
    for i in 0..n {
        let slot = start + period.mul_f64(i as f64);
        let now = Instant::now();
        if now < slot {
            std::thread::sleep(slot - now);
        } else if now - slot > period {
            run.late += 1;
        }
        let change = *next;
        *next += 1;
        // Version 1 is the initial table.
        let version = change + 2;
        let table = changes.apply(change, version);
        let t0 = Instant::now();
        let grace = match rcu.publish(table, Duration::ZERO, PUBLISH_TIMEOUT) {
            Ok(g) => Some(g),
            Err(l) => {
                run.failures.push(format!(
                    "version {version}: no grace period within {PUBLISH_TIMEOUT:?}"
                ));
                run.leaked.push(l);
                None
            }
        };
        let seen_at_return = all_on(stats, version);
        let mut seen = true;
        while !all_on(stats, version) {
            if t0.elapsed() > PUBLISH_TIMEOUT {
                run.failures.push(format!(
                    "version {version} not on every worker {PUBLISH_TIMEOUT:?} after publish"
                ));
                seen = false;
                break;
            }
            std::hint::spin_loop();
        }
        let elapsed = t0.elapsed();
        if let (Some(grace), true) = (grace, seen) {
            run.pubs.push(Publication {
                grace,
                seen: elapsed,
                seen_at_return,
            });
        }
    }
    run
}

/// One measured window of the `updates` scenario.
struct Window {
    updating: bool,
    pair: usize,
    m: Measured,
    changes: usize,
    check_errors: u64,
    drops: u64,
}

/// Several windows as one: counters, on-CPU time and wall time summed.
fn combine<'a>(ms: impl Iterator<Item = &'a Measured>) -> Option<Measured> {
    let mut out: Option<Measured> = None;
    for m in ms {
        match &mut out {
            None => {
                out = Some(Measured {
                    per_worker: m.per_worker.clone(),
                    saturated_loops: None,
                    lcores: m.lcores.clone(),
                    wall: m.wall,
                    sched: m.sched.clone(),
                })
            }
            Some(o) => {
                for (a, d) in o.per_worker.iter_mut().zip(&m.per_worker) {
                    a.add(d);
                }
                sched_add(&mut o.sched, &m.sched);
                o.wall += m.wall;
            }
        }
    }
    out
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

/// p50/p99/max/mean of durations, in microseconds.
fn dist_us(v: impl Iterator<Item = Duration>) -> Value {
    let mut us: Vec<f64> = v.map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    json!({
        "p50": percentile(&us, 50.0),
        "p99": percentile(&us, 99.0),
        "max": us.last(),
        "mean": (!us.is_empty()).then(|| us.iter().sum::<f64>() / us.len() as f64),
        "n": us.len(),
    })
}

/// The share of a window's packets that took the established-flow fast path.
fn fast_share(m: &Measured) -> f64 {
    let t = total(&m.per_worker);
    // The counters are read while the worker runs: a burst counted in rx
    // at one edge of the window and processed after the other may tip the
    // ratio a little over 1.
    (t.fast as f64 / t.rx.max(1) as f64).min(1.0)
}

fn sum_flushed(stats: &[Arc<WorkerStats>]) -> u64 {
    stats.iter().map(|s| s.sessions_flushed.load(Relaxed)).sum()
}

/// Flush epochs the workers swept and carried over (summed).
fn sum_epochs(stats: &[Arc<WorkerStats>]) -> (u64, u64) {
    stats.iter().fold((0, 0), |(s, c), w| {
        (
            s + w.flush_epochs_swept.load(Relaxed),
            c + w.flush_epochs_carried.load(Relaxed),
        )
    })
}

/// The `updates` scenario (issue 5, hitless updates): the `established_60k`
/// workload on one worker in generator mode, measured in back-to-back pairs
/// of windows without and with backend changes (`--updates-rate` per second,
/// default 100, published by a thread on CPU 0; the order alternates
/// B U, U B, ... so that a drift over the run cancels). Outcomes
/// `updates_baseline` and `updates`, and the top-level `updates` object.
fn updates(ctx: &Ctx) -> (Vec<Outcome>, Value) {
    let world = World {
        services: 16,
        per_service: 8,
        v6: false,
        masq: false,
    };
    let flows: u32 = 60_000;
    let mut base = Outcome::new(
        "updates_baseline",
        "forward",
        flows.into(),
        world,
        1,
        "generator",
    );
    let mut out = Outcome::new("updates", "forward", flows.into(), world, 1, "generator");
    let mut u = Map::new();
    if let Err(err) = updates_inner(ctx, world, flows, &mut base, &mut out, &mut u) {
        out.problems.push(format!("{err:#}"));
    }
    u.insert("valid".into(), json!(out.valid()));
    u.insert("note".into(), json!(out.note()));
    (vec![base, out], Value::Object(u))
}

fn updates_inner(
    ctx: &Ctx,
    world: World,
    flows: u32,
    base_out: &mut Outcome,
    out: &mut Outcome,
    u: &mut Map<String, Value>,
) -> Result<()> {
    let p = &ctx.p;
    let mut changes = Changes::new(world);
    let what = changes.describe();
    u.insert("what_changed".into(), json!(what));
    let cap = session_capacity(flows);
    let dp = ctx.start(
        &DpSpec {
            lcores: vec![LCORE_CPU1],
            sessions: cap,
            timeouts: established_timeouts(),
            neighbors: world.neighbors(),
            ring: GEN_RING,
            handoff_ring: DEFAULT_HANDOFF_RING,
        },
        changes.table(1),
    )?;
    let stats = dp.stats().to_vec();
    let base = snap(&stats);
    let base_drops = drop_counts(&stats);
    out.extra.insert("session_capacity".into(), json!(cap));
    out.extra
        .insert("udp_timeout_ms".into(), json!(established_timeouts().udp));
    let fwd = forward_frames(&world, flows, dp.macs[0]);
    let mut backend_of = vec![UNSET; flows as usize];
    let wt = warm_up(ctx, &dp, world, &fwd, Kind::Forward, &mut backend_of)?;
    out.extra.insert("warmup_s".into(), json!(wt.as_secs_f64()));
    let order = common::permutation(flows, 0x7265_706c_6179);
    let src = Source::Frames {
        frames: &fwd,
        len: world.frame_len(),
        order: &order,
        pos: 0,
    };
    let check = Checker::new(
        world,
        Kind::Forward,
        dp.macs[1],
        1,
        &mut backend_of,
        false,
        CHECK_EVERY,
        FULL_CHECK_EVERY,
    );
    let clock = CpuClock::new(&dp.lcores);
    let mut g = Gen::new(&dp.wire, 0, 1, Placement::Owner, src, check, u64::MAX);
    g.start(&ctx.pool, GEN_IN_FLIGHT)?;
    g.run_for(p.ramp);

    let pairs = p.updates_pairs.max(1);
    let seg = p.updates_duration.div_f64(pairs as f64);
    let per_window = ((p.updates_rate * seg.as_secs_f64()).round() as usize).max(1);
    let period = Duration::from_secs_f64(1.0 / p.updates_rate);
    let mut next = 0u64;
    let mut windows: Vec<Window> = vec![];
    let mut pubs: Vec<Publication> = vec![];
    let mut failures: Vec<String> = vec![];
    let mut leaked: Vec<Leaked> = vec![];
    let mut late = 0;
    let mut cpus: Vec<String> = vec![];
    let start = snap(&stats);
    let flushed0 = sum_flushed(&stats);
    let epochs0 = sum_epochs(&stats);
    for pair in 0..pairs {
        let kinds = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for updating in kinds {
            let e0 = g.check.errors;
            let a = snap(&stats);
            let ca = clock.read();
            let t0 = Instant::now();
            let mut n = 0;
            if updating {
                let (rcu, st, ch, nx) = (&*dp.rcu, &stats[..], &mut changes, &mut next);
                let gen = &mut g;
                let run = std::thread::scope(|s| -> Result<PublisherRun> {
                    let h = std::thread::Builder::new()
                        .name("replay-publish".into())
                        .spawn_scoped(s, move || {
                            publish_paced(rcu, st, ch, nx, per_window, period)
                        })
                        .context("spawning the publisher")?;
                    while !h.is_finished() || t0.elapsed() < seg {
                        gen.pump();
                    }
                    h.join()
                        .map_err(|_| anyhow::anyhow!("the publisher thread panicked"))
                })?;
                n = per_window;
                pubs.extend(&run.pubs);
                failures.extend(run.failures);
                leaked.extend(run.leaked);
                late += run.late;
                if !cpus.contains(&run.cpus) {
                    cpus.push(run.cpus);
                }
            } else {
                g.run_for(seg);
            }
            let b = snap(&stats);
            let cb = clock.read();
            let wall = t0.elapsed();
            let m = Measured {
                per_worker: delta(&a, &b),
                saturated_loops: None,
                lcores: dp.lcores.clone(),
                wall,
                sched: sched_delta(&ca, &cb),
            };
            windows.push(Window {
                updating,
                pair,
                drops: total(&m.per_worker).drops,
                m,
                changes: n,
                check_errors: g.check.errors - e0,
            });
        }
    }
    let end = snap(&stats);
    let flushed = sum_flushed(&stats) - flushed0;
    let epochs = sum_epochs(&stats);
    let (swept, carried) = (epochs.0 - epochs0.0, epochs.1 - epochs0.1);
    g.drain("updates")?;
    let moved_flows = g.check.moved_flows.len();
    let moved_outputs = g.check.moved;
    out.require(moved_flows == 0, || {
        format!(
            "{moved_flows} established flows moved to another backend ({moved_outputs} sampled \
             outputs)"
        )
    });
    out.require(g.check.errors == 0, || {
        format!("transmitted packets: {}", g.check.summary())
    });
    out.require(g.received == g.sent && g.lost == 0, || {
        format!(
            "generator sent {} frames, got {} back, {} lost",
            g.sent, g.received, g.lost
        )
    });
    let checked = g.check.checked;
    let fully = g.check.full;
    drop(g);
    for l in leaked {
        if let Err(l) = dp.rcu.retry_free(l, Duration::from_secs(5)) {
            failures.push(format!("an old table could not be freed ({l:?})"));
        }
    }
    let failed = failures.len();
    out.require(failures.is_empty(), || {
        format!(
            "{failed} publications failed: {}",
            failures[..failed.min(3)].join("; ")
        )
    });
    let expected = per_window * pairs;
    out.require(next == expected as u64, || {
        format!("{next} changes published, want {expected}")
    });
    let all = total(&delta(&start, &end));
    out.require(all.created == 0, || {
        format!(
            "{} sessions created while measuring established flows",
            all.created
        )
    });
    out.require(flushed == 0, || {
        format!("{flushed} UDP sessions flushed (a backend in use was removed?)")
    });
    out.require(all.nat_fwd.abs_diff(all.rx) <= EDGE, || {
        format!("{} of {} packets translated", all.nat_fwd, all.rx)
    });
    out.require(cpus.iter().all(|c| c == "0"), || {
        format!("the publisher ran on CPUs {cpus:?}, not on CPU 0 with the generator")
    });

    let mb = combine(windows.iter().filter(|w| !w.updating).map(|w| &w.m))
        .context("no baseline window")?;
    let mu = combine(windows.iter().filter(|w| w.updating).map(|w| &w.m))
        .context("no window with updates")?;
    let hz = ctx.hz;
    let (b_mpps, u_mpps) = (mb.mpps_per_worker(hz), mu.mpps_per_worker(hz));
    let dip = (b_mpps - u_mpps) / b_mpps * 100.0;
    let base_errors: u64 = windows
        .iter()
        .filter(|w| !w.updating)
        .map(|w| w.check_errors)
        .sum();
    let base_drops_w: u64 = windows
        .iter()
        .filter(|w| !w.updating)
        .map(|w| w.drops)
        .sum();
    let upd_drops_w: u64 = windows.iter().filter(|w| w.updating).map(|w| w.drops).sum();
    base_out.require(base_errors == 0, || {
        format!("{base_errors} checked outputs wrong in the baseline windows")
    });
    base_out.require(base_drops_w == 0, || {
        format!("the proxy dropped {base_drops_w} packets in the baseline windows")
    });
    base_out.drops = base_drops_w;
    let pair_dips: Vec<Option<f64>> = (0..pairs)
        .map(|pr| {
            let w = |up: bool| {
                windows
                    .iter()
                    .find(|w| w.pair == pr && w.updating == up)
                    .map(|w| w.m.mpps_per_worker(hz))
            };
            let (b, u) = (w(false)?, w(true)?);
            Some((b - u) / b * 100.0)
        })
        .collect();
    let wins: Vec<Value> = windows
        .iter()
        .map(|w| {
            json!({
                "pair": w.pair,
                "updates": w.updating,
                "changes": w.changes,
                "seconds": w.m.wall.as_secs_f64(),
                "packets": w.m.packets(),
                "cycles_per_packet": w.m.cycles_per_packet(),
                "mpps": w.m.mpps_per_worker(hz),
                "saturated": w.m.saturated(),
                "fast_path_share": fast_share(&w.m),
                "worker_cpu_share": w.m.min_worker_share(),
                "generator_cpu_share": w.m.cpu_share(w.m.per_worker.len()),
                "drops": w.drops,
            })
        })
        .collect();
    let contended = windows
        .iter()
        .any(|w| w.m.min_worker_share().is_some_and(|s| s < CONTENDED_SHARE));
    let duration = mu.wall.as_secs_f64();
    let seen_at_return = pubs.iter().filter(|p| p.seen_at_return).count();

    window_notes(&mb, true, base_out);
    window_notes(&mu, true, out);
    base_out.notes.push(format!(
        "the windows of the updates scenario without backend changes ({pairs} x {:.2} s, \
         interleaved with the update windows in the same run)",
        seg.as_secs_f64()
    ));
    out.notes.push(format!(
        "{next} backend changes in {pairs} windows of {:.2} s at {} per second (what changed: \
         updates.what_changed)",
        seg.as_secs_f64(),
        p.updates_rate
    ));
    if seen_at_return > 0 {
        out.notes.push(format!(
            "{seen_at_return} of {} publications were already on every worker when publish \
             returned: their publish->worker time is an upper bound (it includes freeing the old \
             table)",
            pubs.len()
        ));
    }
    for (k, v) in [
        ("checked_packets", json!(checked)),
        ("fully_parsed_packets", json!(fully)),
        ("in_flight_mbufs", json!(GEN_IN_FLIGHT)),
    ] {
        out.extra.insert(k.into(), v.clone());
        base_out.extra.insert(k.into(), v);
    }
    out.extra.insert("changes".into(), json!(next));

    u.insert("changes".into(), json!(next));
    u.insert("duration_s".into(), json!(duration));
    u.insert("rate_per_s".into(), json!(next as f64 / duration.max(1e-9)));
    u.insert("target_rate_per_s".into(), json!(p.updates_rate));
    u.insert("window_pairs".into(), json!(pairs));
    u.insert("window_s".into(), json!(seg.as_secs_f64()));
    u.insert("flows".into(), json!(flows));
    u.insert("flows_moved".into(), json!(moved_flows));
    u.insert("moved_outputs".into(), json!(moved_outputs));
    u.insert("checked_packets".into(), json!(checked));
    u.insert("sessions_created".into(), json!(all.created));
    u.insert("sessions_flushed".into(), json!(flushed));
    u.insert("flush_epochs_swept".into(), json!(swept));
    u.insert("flush_epochs_carried".into(), json!(carried));
    u.insert("drops_during_updates".into(), json!(upd_drops_w));
    u.insert("drops_baseline".into(), json!(base_drops_w));
    u.insert("mpps_baseline".into(), json!(b_mpps));
    u.insert("mpps_during_updates".into(), json!(u_mpps));
    u.insert(
        "cycles_per_packet_baseline".into(),
        json!(mb.cycles_per_packet()),
    );
    u.insert(
        "cycles_per_packet_during_updates".into(),
        json!(mu.cycles_per_packet()),
    );
    u.insert(
        "mpps_metric".into(),
        json!("the worker's own rate: TSC Hz / busy cycles per packet (as mpps_per_worker)"),
    );
    u.insert("dip_percent".into(), json!(dip));
    u.insert("fast_path_share_baseline".into(), json!(fast_share(&mb)));
    u.insert(
        "fast_path_share_during_updates".into(),
        json!(fast_share(&mu)),
    );
    u.insert("dip_target_percent".into(), json!(DIP_TARGET_PERCENT));
    u.insert("dip_met".into(), json!(dip < DIP_TARGET_PERCENT));
    u.insert("pair_dips_percent".into(), json!(pair_dips));
    u.insert(
        "publish_to_all_workers_us".into(),
        dist_us(pubs.iter().map(|p| p.seen)),
    );
    u.insert(
        "grace_period_us".into(),
        dist_us(pubs.iter().map(|p| p.grace)),
    );
    u.insert("seen_when_publish_returned".into(), json!(seen_at_return));
    u.insert("late_publications".into(), json!(late));
    u.insert("publication_failures".into(), json!(failed));
    u.insert("publisher_cpus".into(), json!(cpus.join(" ")));
    u.insert("workers".into(), json!(dp.workers()));
    u.insert("contended".into(), json!(contended));
    u.insert("windows".into(), Value::Array(wins));
    base_out.measured = Some(mb);
    out.measured = Some(mu);
    finish(dp, &base, &base_drops, Some(flows.into()), out);
    u.insert("drops".into(), json!(out.drops));
    if let Some(r) = out.extra.get("drops_by_reason") {
        u.insert("drops_by_reason".into(), r.clone());
    }
    Ok(())
}

/// The summary line of the `updates` object.
fn updates_summary(u: &Value) -> String {
    let f = |k: &str| u.get(k).and_then(Value::as_f64);
    let lat = |k: &str, q: &str| u.get(k).and_then(|v| v.get(q)).and_then(Value::as_f64);
    let dip = f("dip_percent");
    format!(
        "updates: {} changes in {} s ({}/s), {} flows: drops {}, flows moved {}; Mpps {} baseline \
         vs {} during updates: dip {}% ({} window pairs; target < {DIP_TARGET_PERCENT}%: {}); \
         publish -> every \
         worker p50 {} us, p99 {} us, max {} us (grace period p50 {} us, p99 {} us); {}{}",
        u.get("changes").cloned().unwrap_or(Value::Null),
        fmt_opt(f("duration_s"), 1),
        fmt_opt(f("rate_per_s"), 1),
        u.get("flows").cloned().unwrap_or(Value::Null),
        u.get("drops").cloned().unwrap_or(Value::Null),
        u.get("flows_moved").cloned().unwrap_or(Value::Null),
        fmt_opt(f("mpps_baseline"), 3),
        fmt_opt(f("mpps_during_updates"), 3),
        fmt_opt(dip, 2),
        u.get("window_pairs").cloned().unwrap_or(Value::Null),
        match dip {
            Some(d) if d < DIP_TARGET_PERCENT => "met",
            Some(_) => "NOT met",
            None => "-",
        },
        fmt_opt(lat("publish_to_all_workers_us", "p50"), 1),
        fmt_opt(lat("publish_to_all_workers_us", "p99"), 1),
        fmt_opt(lat("publish_to_all_workers_us", "max"), 1),
        fmt_opt(lat("grace_period_us", "p50"), 1),
        fmt_opt(lat("grace_period_us", "p99"), 1),
        if u.get("valid").and_then(Value::as_bool) == Some(true) {
            "valid"
        } else {
            "INVALID"
        },
        if u.get("contended").and_then(Value::as_bool) == Some(true) {
            " (CONTENDED windows: the dip is not meaningful)"
        } else {
            ""
        },
    )
}

// ---- environment ----

/// Reserves 2 MiB hugepages for the run and gives them back afterwards.
struct HugePages {
    before: u64,
}

impl HugePages {
    fn reserve(want: u64) -> Result<HugePages> {
        let read = || -> Result<u64> {
            Ok(std::fs::read_to_string(HUGEPAGES_SYSFS)
                .with_context(|| format!("reading {HUGEPAGES_SYSFS}"))?
                .trim()
                .parse()?)
        };
        let before = read()?;
        if before < want {
            std::fs::write(HUGEPAGES_SYSFS, want.to_string())
                .with_context(|| format!("writing {HUGEPAGES_SYSFS} (root?)"))?;
        }
        let h = HugePages { before };
        let now = read()?;
        ensure!(
            now >= want,
            "only {now} of {want} 2 MiB hugepages could be reserved"
        );
        println!("reserved {want} 2 MiB hugepages (were {before})");
        Ok(h)
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        match std::fs::write(HUGEPAGES_SYSFS, self.before.to_string()) {
            Ok(()) => println!("hugepages restored to {}", self.before),
            Err(e) => eprintln!(
                "could not restore {HUGEPAGES_SYSFS} to {}: {e}",
                self.before
            ),
        }
    }
}

fn eal_args(hugepages: bool) -> Vec<String> {
    let mut a: Vec<String> = vec!["--lcores".into(), LCORE_MAP.into()];
    if hugepages {
        // Anonymous hugepage memory, no hugetlbfs mount or files needed.
        a.push("--in-memory".into());
    } else {
        a.extend(["--no-huge", "-m"].map(String::from));
        a.push(EAL_MEMORY_MB.to_string());
        a.push("--no-shconf".into());
    }
    a.extend(["--no-pci", "--log-level", "*:warning"].map(String::from));
    a
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default()
}

fn git_rev() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        None => "unknown".into(),
    }
}

/// Checks that the frame builders produce what an independent parser accepts.
fn self_test(pool: &Mempool) -> Result<()> {
    let w = World {
        services: 16,
        per_service: 8,
        v6: false,
        masq: false,
    };
    let mac = MacAddr([0; 6]);
    let mut frames = forward_frames(&w, 3, mac);
    frames.extend(reply_frames(&w, &[0, 7, 127], mac));
    let mut syn = [0u8; FRAME6_LEN];
    write_syn(
        &mut syn,
        mac,
        client_mac(0),
        new_client(5),
        (vip(5), SVC_PORT),
        5,
    );
    frames.push(syn);
    for f in &frames {
        full_check(f).map_err(|e| anyhow::anyhow!("frame builder self-test: {e}"))?;
    }
    ensure!(new_index(new_client(123_456).0, new_client(123_456).1) == Some(123_456));
    let b = backend(71_234);
    ensure!(backend_index(b.0, b.1) == Some(71_234));
    checker_self_test(w)?;
    let w6 = World { v6: true, ..w };
    let mut frames6 = forward_frames(&w6, 3, mac);
    frames6.extend(reply_frames(&w6, &[0, 7, 127], mac));
    for f in &frames6 {
        full_check(&f[..FRAME6_LEN])
            .map_err(|e| anyhow::anyhow!("IPv6 frame builder self-test: {e}"))?;
    }
    checker_self_test6(w6)?;
    let mut m = pool.alloc().context("mbuf for the self-test")?;
    m.set_len(FRAME_LEN);
    ensure!(
        m.len() == FRAME_LEN,
        "a generator mbuf cannot hold {FRAME_LEN} bytes"
    );
    Ok(())
}

/// What the worker should make of forward flow `f` sent to backend `k`.
fn expected_forward(f: u32, k: u32, out_mac: MacAddr) -> Frame {
    let mut fr = [0u8; FRAME6_LEN];
    write_udp(&mut fr, backend_mac(k), out_mac, client(f), backend(k), f);
    fr[22] = 63;
    let c = checksum::ipv4_header(&fr[14..34]);
    fr[24..26].copy_from_slice(&c.to_be_bytes());
    fr
}

/// Shows that the checker accepts a correct translation and rejects wrong
/// ones, so that "no errors" in a run means something.
fn checker_self_test(w: World) -> Result<()> {
    let mac = MacAddr([2, 0, 0, 0, 9, 9]);
    let f = 5;
    let svc = w.svc_of_flow(f);
    let k = svc * w.per_service + 3;
    let good = expected_forward(f, k, mac);
    let mut backend_of = vec![UNSET; 16];
    let mut c = Checker::new(w, Kind::Forward, mac, 1, &mut backend_of, true, 1, 1);
    c.on_output(0, &good);
    ensure!(c.errors == 0, "checker self-test: {}", c.summary());
    let mut bad = vec![];
    // Same Service, another backend: the flow moved.
    bad.push(expected_forward(f, svc * w.per_service + 4, mac));
    // A backend of another Service.
    bad.push(expected_forward(
        f,
        ((svc + 1) % w.services) * w.per_service,
        mac,
    ));
    // TTL not decremented.
    let mut b = good;
    b[22] = 64;
    let cs = checksum::ipv4_header(&b[14..34]);
    b[24..26].copy_from_slice(&cs.to_be_bytes());
    bad.push(b);
    // Payload changed without fixing the UDP checksum.
    let mut b = good;
    b[55] ^= 1;
    bad.push(b);
    // Wrong source MAC (not the egress port's).
    let mut b = good;
    b[6] ^= 0x80;
    bad.push(b);
    let mut c = Checker::new(w, Kind::Forward, mac, 1, &mut backend_of, false, 1, 1);
    c.on_output(0, &good);
    ensure!(c.errors == 0, "checker self-test: {}", c.summary());
    for (i, b) in bad.iter().enumerate() {
        let before = c.errors;
        c.on_output(0, b);
        ensure!(
            c.errors == before + 1,
            "checker self-test: bad frame {i} accepted"
        );
    }
    // The first two bad frames send flow `f` elsewhere: counted as moved.
    ensure!(
        c.moved == 2 && c.moved_flows.len() == 1,
        "checker self-test: moved flows counted {} times ({} flows)",
        c.moved,
        c.moved_flows.len()
    );
    // With two workers, a frame sent by the wrong worker is caught.
    let owner = owner_of(&SockAddr::new(Addr::v4(client(f).0), client(f).1), 2) as usize;
    let mut c = Checker::new(w, Kind::Forward, mac, 2, &mut backend_of, false, 1, 1);
    c.on_output(owner, &good);
    c.on_output(1 - owner, &good);
    ensure!(c.errors == 1, "checker self-test: owner check");
    Ok(())
}

/// [`checker_self_test`] for the IPv6 plan.
fn checker_self_test6(w: World) -> Result<()> {
    let mac = MacAddr([2, 0, 0, 0, 9, 9]);
    let f = 5;
    let k = w.svc_of_flow(f) * w.per_service + 3;
    let fwd = |k: u32, nets| {
        let mut fr = [0u8; FRAME6_LEN];
        write_udp6(
            &mut fr,
            backend_mac(k),
            mac,
            (client(f), backend(k)),
            nets,
            f,
        );
        fr[21] = 63;
        fr
    };
    let good = fwd(k, (NET6_CLIENTS, NET6_BACKENDS));
    let mut backend_of = vec![UNSET; 16];
    let mut c = Checker::new(w, Kind::Forward, mac, 1, &mut backend_of, true, 1, 1);
    c.on_output(0, &good);
    ensure!(c.errors == 0, "IPv6 checker self-test: {}", c.summary());
    let mut bad = vec![
        // Another backend: the flow moved.
        fwd(k + 1, (NET6_CLIENTS, NET6_BACKENDS)),
        // The backend's address in the wrong network.
        fwd(k, (NET6_CLIENTS, NET6_VIPS)),
    ];
    // Hop limit not decremented.
    let mut b = good;
    b[21] = 64;
    bad.push(b);
    // Payload changed without fixing the UDP checksum.
    let mut b = good;
    b[75] ^= 1;
    bad.push(b);
    let mut c = Checker::new(w, Kind::Forward, mac, 1, &mut backend_of, false, 1, 1);
    c.on_output(0, &good);
    ensure!(c.errors == 0, "IPv6 checker self-test: {}", c.summary());
    for (i, b) in bad.iter().enumerate() {
        let before = c.errors;
        c.on_output(0, b);
        ensure!(
            c.errors == before + 1,
            "IPv6 checker self-test: bad frame {i} accepted"
        );
    }
    Ok(())
}

// ---- main ----

fn main() {
    let code = match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("replay: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn run() -> Result<i32> {
    let opts = parse_args()?;
    let _huge = if opts.hugepages {
        Some(HugePages::reserve(HUGEPAGES_WANT)?)
    } else {
        None
    };
    run_with(&opts)
}

/// A top-level JSON object a scenario adds to the report (`new_connections`, `updates`).
type Extra = Option<(&'static str, Value)>;

/// Runs one scenario: its outcomes, and for `new_connections` and `updates`
/// their top-level JSON object.
fn run_scenario(ctx: &Ctx, name: &str) -> Result<(Vec<Outcome>, Extra)> {
    let run_est = |n: &'static str, flows: u32, services: u32, per: u32, reply: bool| {
        established(
            ctx,
            &Established {
                name: n,
                flows,
                services,
                per_service: per,
                reply,
                v6: false,
                masq: false,
            },
        )
    };
    // Forward packets of masqueraded flows over 16 Services x 8 backends.
    let run_masq = |n: &'static str, flows: u32| {
        established(
            ctx,
            &Established {
                name: n,
                flows,
                services: 16,
                per_service: 8,
                reply: false,
                v6: false,
                masq: true,
            },
        )
    };
    // 60,000 flows over 16 Services x 8 backends, on IPv6 addresses.
    let run_v6 = |n: &'static str, reply: bool| {
        established(
            ctx,
            &Established {
                name: n,
                flows: 60_000,
                services: 16,
                per_service: 8,
                reply,
                v6: true,
                masq: false,
            },
        )
    };
    let results = match name {
        "established_1flow" => vec![run_est("established_1flow", 1, 16, 8, false)],
        "established_4k" => vec![run_est("established_4k", 4_096, 16, 8, false)],
        "established_60k" => vec![run_est("established_60k", 60_000, 16, 8, false)],
        "established_60k_v6" => vec![run_v6("established_60k_v6", false)],
        "established_1m" => {
            vec![run_est("established_1m", ctx.p.flows_1m, 16, 8, false)]
        }
        "established_60k_masq" => vec![run_masq("established_60k_masq", 60_000)],
        "established_1m_masq" => vec![run_masq("established_1m_masq", ctx.p.flows_1m)],
        "established_60k_10k_services" => vec![run_est(
            "established_60k_10k_services",
            60_000,
            10_000,
            10,
            false,
        )],
        "reply_60k" => vec![run_est("reply_60k", 60_000, 16, 8, true)],
        "reply_60k_v6" => vec![run_v6("reply_60k_v6", true)],
        "new_connections" => {
            let (o, v) = new_connections(ctx);
            return Ok((vec![o], Some(("new_connections", v))));
        }
        "updates" => {
            let (o, v) = updates(ctx);
            return Ok((o, Some(("updates", v))));
        }
        "two_workers" => vec![
            prefill(ctx, "two_workers_baseline_1w", 1, Placement::Owner),
            prefill(ctx, "two_workers", 2, Placement::Owner),
        ],
        "handoff" => vec![prefill(ctx, "handoff", 2, Placement::NonOwner)],
        other => bail!("unknown scenario {other}"),
    };
    Ok((results, None))
}

/// The smallest share of its CPU any worker of these outcomes had (1 if unknown).
fn group_share(v: &[Outcome]) -> f64 {
    v.iter()
        .filter_map(|o| o.measured.as_ref()?.min_worker_share())
        .fold(1.0, f64::min)
}

fn run_with(opts: &Opts) -> Result<i32> {
    let mut p = Params::new(opts.quick);
    if let Some(d) = opts.updates_duration {
        p.updates_duration = Duration::from_secs_f64(d);
    }
    if let Some(r) = opts.updates_rate {
        p.updates_rate = r;
    }
    if let Some(n) = opts.updates_pairs {
        p.updates_pairs = n;
    }
    let mut names: Vec<&str> = if opts.scenarios.is_empty() {
        SCENARIOS.to_vec()
    } else {
        SCENARIOS
            .iter()
            .copied()
            .filter(|s| opts.scenarios.iter().any(|o| o == s))
            .collect()
    };
    let mut added_baseline = false;
    if names.contains(&"handoff") && !names.contains(&"two_workers") {
        // The hand-off cost is measured against two_workers.
        let at = names
            .iter()
            .position(|s| *s == "handoff")
            .unwrap_or(names.len());
        names.insert(at, "two_workers");
        added_baseline = true;
    }

    let args = eal_args(opts.hugepages);
    let eal = Eal::init(&args).context("EAL init (needs root)")?;
    let lcores = eal.worker_lcores();
    ensure!(
        lcores == [LCORE_CPU1, LCORE_CPU0],
        "unexpected worker lcores {lcores:?}"
    );
    let hz = eal.tsc_hz();
    let pool = Mempool::new("replay_gen", POOL_MBUFS, 0, MBUF_DATA_ROOM, 0)
        .context("generator mempool")?;
    self_test(&pool)?;
    println!(
        "replay: DPDK {}, TSC {:.3} GHz, {} mode, EAL {}",
        Eal::version(),
        hz as f64 / 1e9,
        if opts.quick { "quick" } else { "full" },
        args.join(" ")
    );
    if added_baseline {
        println!("(two_workers added: handoff is measured against it)");
    }
    let ctx = Ctx {
        eal: &eal,
        pool,
        hz,
        p,
        seq: Cell::new(0),
    };

    let t_all = Instant::now();
    let mut outcomes: Vec<Outcome> = vec![];
    let mut extras = Map::new();
    for name in &names {
        let t = Instant::now();
        println!("-- {name}");
        print_header();
        let (mut results, mut nc) = run_scenario(&ctx, name)?;
        let mut attempts = 1;
        while attempts <= opts.retries && group_share(&results) < CONTENDED_SHARE {
            println!(
                "   contended (a worker was on its CPU {:.0}% of the window): attempt {} of {}",
                group_share(&results) * 100.0,
                attempts + 1,
                opts.retries + 1
            );
            let (r, n) = run_scenario(&ctx, name)?;
            attempts += 1;
            if group_share(&r) > group_share(&results) {
                (results, nc) = (r, n);
            }
        }
        if let Some((k, v)) = nc {
            extras.insert(k.into(), v);
        }
        for o in &mut results {
            o.extra.insert("attempts".into(), json!(attempts));
            if o.mode == "prefill" {
                o.notes.push(format!(
                    "prefill: {} rounds of {PREFILL_PACKETS} packets released at once and drained by the \
                     workers while the generator sleeps (cold mbufs: compare with the other prefill \
                     scenarios, not with generator mode)",
                    ctx.p.rounds
                ));
            }
            print_line(o, hz);
            for p in &o.problems {
                println!("   INVALID: {p}");
            }
            for n in &o.notes {
                println!("   note: {n}");
            }
        }
        println!("   ({:.1} s)", t.elapsed().as_secs_f64());
        outcomes.extend(results);
    }

    let find = |n: &str| outcomes.iter().find(|o| o.name == n && o.valid());
    let contended = |names: &[&str]| {
        names.iter().any(|n| {
            outcomes
                .iter()
                .filter(|o| o.name == *n)
                .any(|o| group_share(core::slice::from_ref(o)) < CONTENDED_SHARE)
        })
    };
    let handoff_contended = contended(&["handoff", "two_workers"]);
    let scaling_contended = contended(&["two_workers", "two_workers_baseline_1w"]);
    let warn = |c: bool| {
        if c {
            " (CONTENDED windows: not meaningful)"
        } else {
            ""
        }
    };
    let handoff_extra = match (find("handoff"), find("two_workers")) {
        (Some(h), Some(b)) => h.cpp().zip(b.cpp()).map(|(h, b)| h - b),
        _ => None,
    };
    let two_vs_one = match (find("two_workers"), find("two_workers_baseline_1w")) {
        (Some(two), Some(one)) => two
            .measured
            .as_ref()
            .zip(one.measured.as_ref())
            .map(|(a, b)| a.mpps_total(hz) / b.mpps_total(hz)),
        _ => None,
    };

    println!();
    println!(
        "replay results ({} mode, {:.0} s; cycles per packet from the workers' busy TSC cycles; \
         shared machine: figures are noisy)",
        if opts.quick { "quick" } else { "full" },
        t_all.elapsed().as_secs_f64()
    );
    print_header();
    for o in &outcomes {
        print_line(o, hz);
    }
    if let Some(nc) = extras.get("new_connections") {
        println!(
            "new connections: {} per second per worker, {} cycles each; session memory {} bytes \
             ({} sessions per GiB, capacity {})",
            fmt_opt(nc.get("per_second_per_worker").and_then(Value::as_f64), 0),
            fmt_opt(nc.get("cycles_per_connection").and_then(Value::as_f64), 0),
            fmt_opt(nc.get("session_bytes").and_then(Value::as_f64), 1),
            fmt_opt(nc.get("sessions_per_gib").and_then(Value::as_f64), 0),
            nc.get("capacity").cloned().unwrap_or(Value::Null),
        );
    }
    if let Some(x) = two_vs_one {
        println!(
            "two workers / one worker (prefill, total Mpps): {x:.2}x{}",
            warn(scaling_contended)
        );
    }
    if let Some(x) = handoff_extra {
        println!(
            "hand-off: {x:.1} extra cycles per packet (handoff - two_workers){}",
            warn(handoff_contended)
        );
    }
    if let Some(u) = extras.get("updates") {
        println!("{}", updates_summary(u));
        if let Some(w) = u.get("what_changed").and_then(Value::as_str) {
            println!("   changes: {w}");
        }
    }

    let report = json!({
        "env": {
            "cpu_model": cpu_model(),
            "tsc_hz": hz,
            "dpdk_version": Eal::version(),
            "eal_args": args,
            "worker_lcores": lcores,
            "lcore_map": LCORE_MAP,
            "hugepages": opts.hugepages,
            "git_rev": git_rev(),
            "date": jiff::Timestamp::now().to_string(),
            "quick": opts.quick,
            "retries": opts.retries,
            "cpus_online": std::fs::read_to_string("/sys/devices/system/cpu/online")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        },
        "scenarios": outcomes.iter().map(|o| o.to_json(hz)).collect::<Vec<_>>(),
        "new_connections": extras.get("new_connections").cloned().unwrap_or(Value::Null),
        "updates": extras.get("updates").cloned().unwrap_or(Value::Null),
        "handoff": {
            "extra_cycles_per_packet": handoff_extra,
            "baseline": "two_workers",
            "two_workers_over_one": two_vs_one,
            "contended": handoff_contended,
            "two_workers_over_one_contended": scaling_contended,
        },
    });
    if let Some(dir) = opts.out.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let text = serde_json::to_string_pretty(&report)? + "\n";
    std::fs::write(&opts.out, text).with_context(|| format!("writing {}", opts.out.display()))?;
    println!("wrote {}", opts.out.display());

    let invalid: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.valid())
        .map(|o| o.name.as_str())
        .collect();
    drop(ctx);
    drop(eal);
    if invalid.is_empty() {
        Ok(0)
    } else {
        eprintln!("replay: INVALID scenarios: {}", invalid.join(", "));
        Ok(1)
    }
}
