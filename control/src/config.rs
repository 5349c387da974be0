//! The YAML configuration file (`dpdk-kube-proxy --config FILE`).
//!
//! Two formats map to the one [`Config`]: this crate's native YAML, and
//! kube-proxy's `KubeProxyConfiguration` with a `dpdk:` section
//! ([`crate::kubeproxy`]); [`Config::parse`] tells them apart by
//! `apiVersion`/`kind`.
//!
//! Unknown fields are errors (`deny_unknown_fields`), and every error names
//! the offending field, e.g. `services[2].backends[0]`.
use crate::{Error, Result};
use dataplane::addr::{Addr, Proto, SockAddr};
use dataplane::packet::MacAddr;
use dataplane::pipeline::{Exception, PipelineConfig};
use dataplane::session::Timeouts;
use dataplane::table::{
    Algorithm, Frontend, Interface, NoBackends, Route, ServiceSpec, StaticNeighbor, TableSpec,
};
use dataplane::worker::{DataplaneConfig, PortSpec};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// EAL settings.
    #[serde(default)]
    pub eal: EalConfig,
    /// Ports, in order: a port's number is its index here.
    pub ports: Vec<PortConfig>,
    /// Static routes (connected routes come from port addresses).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Static neighbours.
    #[serde(default)]
    pub neighbors: Vec<NeighborConfig>,
    /// The node's pods behind the exception port (with `ports[].role: exception`).
    #[serde(default)]
    pub exception: ExceptionConfig,
    /// Worker sizing.
    #[serde(default)]
    pub workers: WorkersConfig,
    /// Session timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Admin HTTP server.
    #[serde(default)]
    pub admin: AdminConfig,
    /// What `/metrics` exports beyond the node-wide series.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Masquerade every Service connection (kube-proxy's `masqueradeAll`).
    #[serde(default)]
    pub masquerade_all: bool,
    /// Cluster (pod) CIDRs, `ADDR/LEN` (kube-proxy's `clusterCIDR`): clients
    /// outside them reaching a Service are masqueraded. Empty: no detection.
    #[serde(default)]
    pub cluster_cidrs: Vec<String>,
    /// Service (ClusterIP) CIDRs, `ADDR/LEN` (the API server's
    /// `--service-cluster-ip-range`; the `--service-cluster-ip-range` flag
    /// here): with an exception port, the host kernel routes them toward it
    /// (see [`KernelRoutesConfig`]). Empty: a host route per ClusterIP instead.
    #[serde(default)]
    pub service_cidrs: Vec<String>,
    /// Routes the proxy installs in the host kernel toward the exception
    /// port, so the node's own (and its pods') Service traffic reaches the
    /// dataplane.
    #[serde(default)]
    pub kernel_routes: KernelRoutesConfig,
    /// Service ports (static mode).
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// The node-wide load-balancing algorithm for new connections:
    /// `maglev` (default), `round-robin`, `random` or `source-hash`. A
    /// Service may override it (`load_balancing` of a static Service, the
    /// `dpdk-kube-proxy.io/load-balancing` annotation in cluster mode).
    #[serde(default = "default_algorithm")]
    pub load_balancing: String,
    /// Cluster mode: where the API server is, who this node is, how often to
    /// sync (kube-proxy's flags of the same names override these).
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
}

/// Cluster-mode settings: kube-proxy's `--kubeconfig`, `--hostname-override`,
/// `--sync-period`, `--min-sync-period`, `--nodeport-addresses`,
/// `--bind-address`, `--healthz-bind-address` and `--oom-score-adj`, and the
/// `KubeProxyConfiguration` fields they stand for.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// kubeconfig of the cluster to watch (`clientConnection.kubeconfig`).
    /// Unset: in-cluster config when running in a pod, else no cluster.
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// This node's name (`hostnameOverride`; default `$NODE_NAME`, else the
    /// host name).
    #[serde(default)]
    pub hostname_override: Option<String>,
    /// Every Service is rebuilt this often (`syncPeriod`, default 30s).
    #[serde(default = "default_sync_period", with = "humantime_serde")]
    pub sync_period: Duration,
    /// At most one table publication per period (`minSyncPeriod`, default 1s).
    #[serde(default = "default_min_sync_period", with = "humantime_serde")]
    pub min_sync_period: Duration,
    /// Where NodePorts are served (`nodePortAddresses`): CIDRs, `primary`
    /// (the node's primary address of each family: `bind_address`, else the
    /// first dataplane address of that family) or `all`. Empty: `primary`
    /// (kube-proxy's nftables-mode default).
    #[serde(default)]
    pub nodeport_addresses: Vec<String>,
    /// The node's primary IP (`bindAddress`), for `primary` above.
    #[serde(default)]
    pub bind_address: Option<IpAddr>,
    /// `/healthz` + `/livez` server (`healthzBindAddress`). Unset: 0.0.0.0:10256
    /// when watching a cluster, off otherwise.
    #[serde(default)]
    pub healthz_bind_address: Option<SocketAddr>,
    /// The process's `oom_score_adj` (`oomScoreAdj`, -1000..=1000). Unset:
    /// left as is.
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
}

fn default_sync_period() -> Duration {
    Duration::from_secs(30)
}

fn default_min_sync_period() -> Duration {
    Duration::from_secs(1)
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            kubeconfig: None,
            hostname_override: None,
            sync_period: default_sync_period(),
            min_sync_period: default_min_sync_period(),
            nodeport_addresses: vec![],
            bind_address: None,
            healthz_bind_address: None,
            oom_score_adj: None,
        }
    }
}

/// A `nodePortAddresses` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePortAddress {
    /// Every node address.
    All,
    /// The node's primary address of each family.
    Primary,
    /// The node addresses inside `ADDR/LEN`.
    Cidr(Addr, u8),
}

/// Parses a `nodePortAddresses` entry (`field` names it in the error).
pub fn parse_nodeport_address(s: &str, field: &str) -> Result<NodePortAddress> {
    match s.trim() {
        "all" => Ok(NodePortAddress::All),
        "primary" => Ok(NodePortAddress::Primary),
        "localhost" => Err(invalid(
            field,
            "\"localhost\" is not supported: the DPDK dataplane has no loopback NodePorts",
        )),
        c => parse_prefix(c, field)
            .map(|(a, l)| NodePortAddress::Cidr(a, l))
            .map_err(|_| {
                invalid(
                    field,
                    format!("{s:?} is not a CIDR, \"primary\" or \"all\""),
                )
            }),
    }
}
/// EAL settings. The generated command line is `--lcores L [--no-huge] [-m M]
/// --no-shconf [--no-pci | -a PCI...] [--vdev V...] ARGS...`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EalConfig {
    /// `--lcores` map; the first lcore is the main (control) lcore, every
    /// other one runs a worker. `auto`: one lcore per CPU this process may
    /// run on (its cpuset, e.g. the exclusive CPUs the kubelet's static CPU
    /// manager gives a Guaranteed pod), the first for the main lcore.
    #[serde(default = "default_lcores")]
    pub lcores: String,
    /// Run without hugepages.
    #[serde(default)]
    pub no_huge: bool,
    /// Memory in MB (`-m`), 0 = EAL default.
    #[serde(default)]
    pub memory_mb: u32,
    /// PCI devices to use (`-a`); empty means `--no-pci`.
    #[serde(default)]
    pub pci: Vec<String>,
    /// Virtual devices (`--vdev`), e.g. `net_af_packet0,iface=eth1,qpairs=2`.
    #[serde(default)]
    pub vdevs: Vec<String>,
    /// Pass `--no-shconf` (no shared runtime config; lets several DPDK
    /// processes run without `--file-prefix`). Default true.
    #[serde(default = "default_true")]
    pub no_shconf: bool,
    /// Extra EAL arguments, appended as given.
    #[serde(default)]
    pub args: Vec<String>,
}

fn default_true() -> bool {
    true
}

fn default_lcores() -> String {
    "0,1".into()
}

impl Default for EalConfig {
    fn default() -> Self {
        EalConfig {
            lcores: default_lcores(),
            no_huge: false,
            memory_mb: 0,
            pci: vec![],
            vdevs: vec![],
            no_shconf: true,
            args: vec![],
        }
    }
}

/// A port.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// DPDK device name: a vdev name (`net_af_packet0`) or PCI address.
    pub device: String,
    /// Node addresses on this port, `ADDR/LEN`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// 802.1Q VLAN id.
    #[serde(default)]
    pub vlan: Option<u16>,
    /// Largest IP packet sent on this port (default 1500). Larger packets
    /// get ICMP fragmentation-needed / packet-too-big (PMTU discovery).
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// What the port is: an `uplink` the dataplane owns (the default), or
    /// the `exception` port into the host kernel (a TAP vdev) that carries
    /// the uplink's non-Service traffic to the kernel and the kernel's out of
    /// the uplink. At most one exception port; it pairs with the first
    /// uplink and takes its MAC address and MTU at start. Or `shared`: an
    /// af_xdp port (`net_af_xdpN,iface=IF` in `eal.vdevs`) on a NIC the
    /// host kernel keeps ("beside the kernel"): the proxy attaches its own
    /// XDP program to the interface, which hands the dataplane only Service
    /// traffic and the answers to its masqueraded connections; everything
    /// else stays the kernel's. `addresses` are the kernel's addresses on
    /// that interface.
    #[serde(default)]
    pub role: PortRole,
}

/// A port's role (`ports[].role`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PortRole {
    /// A port the dataplane owns (the default).
    #[default]
    Uplink,
    /// The exception port into the host kernel.
    Exception,
    /// An af_xdp port beside the host kernel, which keeps the NIC.
    Shared,
}

/// A vdev's name: `net_af_xdp0` of `net_af_xdp0,iface=eth0`.
fn vdev_name(vdev: &str) -> &str {
    vdev.split(',').next().unwrap_or("").trim()
}

/// A vdev's `key=value` argument.
fn vdev_arg<'a>(vdev: &'a str, key: &str) -> Option<&'a str> {
    vdev.split(',')
        .skip(1)
        .find_map(|kv| kv.trim().strip_prefix(key)?.strip_prefix('='))
}

fn default_mtu() -> u16 {
    1500
}

/// The node's pods behind the exception port (`exception:`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExceptionConfig {
    /// This node's pod CIDRs, `ADDR/LEN`: the kernel routes them to the
    /// pods, so the dataplane routes them onto the exception port
    /// (translated Service traffic for a local pod goes to the kernel). In
    /// cluster mode the Node's `spec.podCIDRs` are added.
    #[serde(default)]
    pub local_pod_cidrs: Vec<String>,
    /// At most one address per family that the kernel does not hold and
    /// routes onto the exception interface: flows from a local pod or the
    /// node to a local pod backend are masqueraded to it (the backend's
    /// reply must come back through the dataplane). Without one, such
    /// flows are dropped (`no_exception_snat`). Changes need a restart.
    #[serde(default)]
    pub snat_addresses: Vec<IpAddr>,
}

/// `kernel_routes`: routes in the host kernel toward the exception port's
/// interface, for every `service_cidrs` prefix and a host route for every
/// other Service frontend address (ExternalIPs, load-balancer IPs,
/// ClusterIPs outside the Service CIDRs) that is not a node address. They
/// are reconciled at start and at every table publication, and removed at
/// a clean shutdown. Only without an exception port nothing is installed.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KernelRoutesConfig {
    /// Install them (default true; applied at a reload: false removes them).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The routing protocol number (`rtm_protocol`, `ip route ... proto N`)
    /// that marks the proxy's routes: only routes of the main table with this
    /// number are ever added, changed or removed. Default 214 (not one of
    /// iproute2's `rt_protos`); 0-4 belong to the kernel and administrators.
    /// A change needs a restart.
    #[serde(default = "default_route_protocol")]
    pub protocol: u8,
}

/// The default `kernel_routes.protocol`.
pub const DEFAULT_ROUTE_PROTOCOL: u8 = 214;

fn default_route_protocol() -> u8 {
    DEFAULT_ROUTE_PROTOCOL
}

impl Default for KernelRoutesConfig {
    fn default() -> Self {
        KernelRoutesConfig {
            enabled: true,
            protocol: DEFAULT_ROUTE_PROTOCOL,
        }
    }
}

/// A static route.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `ADDR/LEN`.
    pub prefix: String,
    /// Egress port number.
    pub port: u16,
    /// Next hop (omit for on-link).
    #[serde(default)]
    pub via: Option<IpAddr>,
}

/// A static neighbour.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NeighborConfig {
    /// Its address.
    pub address: IpAddr,
    /// Its MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The port it is on.
    pub port: u16,
}

/// Worker sizing.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// Session capacity per worker (memory is reserved at start).
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    /// Neighbour cache capacity per worker.
    #[serde(default = "default_neighbors")]
    pub neighbors: usize,
    /// Mbufs per NUMA socket (0: computed).
    #[serde(default)]
    pub mbufs: u32,
    /// Rx descriptors per queue.
    #[serde(default = "default_desc")]
    pub rx_desc: u16,
    /// Tx descriptors per queue.
    #[serde(default = "default_desc")]
    pub tx_desc: u16,
    /// Sleep this many µs after a run of empty polls (0 = always spin). For
    /// shared-core labs and CI, not production.
    #[serde(default)]
    pub idle_sleep_us: u32,
    /// A worker whose poll loop has not moved for this long is reported
    /// stalled: `/healthz` and `/livez` answer 503 (`0s`: never).
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// On SIGTERM/SIGINT the process stops its workers and exits; if that
    /// takes longer than this it exits anyway, with status 1.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Node-wide per-backend connection counters (one per Service port and
    /// backend; 128 bytes each, reserved at start). Backends beyond them
    /// are not counted (`dpdk_kube_proxy_backend_counters_exhausted`).
    #[serde(default = "default_backend_counters")]
    pub backend_counters: usize,
}

fn default_backend_counters() -> usize {
    16_384
}

/// What `/metrics` exports beyond the node-wide series.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Per-backend series (`dpdk_kube_proxy_backend_*{service,backend}`)
    /// for at most this many Service ports, in name order (0: none). Raise
    /// it to see more; the rest is counted in
    /// `dpdk_kube_proxy_backend_metrics_hidden_services`.
    #[serde(default = "default_per_backend_services")]
    pub per_backend_services: usize,
}

fn default_per_backend_services() -> usize {
    100
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            per_backend_services: default_per_backend_services(),
        }
    }
}

fn default_stall_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_sessions() -> usize {
    1 << 18
}
fn default_neighbors() -> usize {
    4096
}
fn default_desc() -> u16 {
    1024
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            sessions: default_sessions(),
            neighbors: default_neighbors(),
            mbufs: 0,
            rx_desc: default_desc(),
            tx_desc: default_desc(),
            idle_sleep_us: 0,
            stall_timeout: default_stall_timeout(),
            shutdown_timeout: default_shutdown_timeout(),
            backend_counters: default_backend_counters(),
        }
    }
}

/// Session timeouts (humantime: `30s`, `24h`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// TCP before the handshake completes (after the client's SYN, and
    /// after the backend's SYN-ACK until the client's ACK).
    #[serde(with = "humantime_serde")]
    pub tcp_syn: Duration,
    /// Established TCP.
    #[serde(with = "humantime_serde")]
    pub tcp_established: Duration,
    /// TCP after FIN.
    #[serde(with = "humantime_serde")]
    pub tcp_fin: Duration,
    /// TCP after RST.
    #[serde(with = "humantime_serde")]
    pub tcp_closed: Duration,
    /// UDP, one direction seen.
    #[serde(with = "humantime_serde")]
    pub udp: Duration,
    /// UDP with replies.
    #[serde(with = "humantime_serde")]
    pub udp_stream: Duration,
    /// ICMP echo.
    #[serde(with = "humantime_serde")]
    pub icmp: Duration,
    /// SCTP during association setup (INIT, COOKIE ECHO).
    #[serde(with = "humantime_serde")]
    pub sctp_init: Duration,
    /// Established SCTP association.
    #[serde(with = "humantime_serde")]
    pub sctp_established: Duration,
    /// SCTP after SHUTDOWN / SHUTDOWN ACK.
    #[serde(with = "humantime_serde")]
    pub sctp_closing: Duration,
    /// SCTP after ABORT / SHUTDOWN COMPLETE.
    #[serde(with = "humantime_serde")]
    pub sctp_closed: Duration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        let t = Timeouts::default();
        let d = Duration::from_millis;
        TimeoutsConfig {
            tcp_syn: d(t.tcp_syn),
            tcp_established: d(t.tcp_established),
            tcp_fin: d(t.tcp_fin),
            tcp_closed: d(t.tcp_closed),
            udp: d(t.udp),
            udp_stream: d(t.udp_stream),
            icmp: d(t.icmp),
            sctp_init: d(t.sctp_init),
            sctp_established: d(t.sctp_established),
            sctp_closing: d(t.sctp_closing),
            sctp_closed: d(t.sctp_closed),
        }
    }
}

/// Admin HTTP server.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address for `/metrics`, `/healthz`, `/proxyMode`.
    #[serde(default = "default_admin")]
    pub bind: SocketAddr,
}

fn default_admin() -> SocketAddr {
    "127.0.0.1:10249".parse().expect("static address")
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            bind: default_admin(),
        }
    }
}

/// One Service port.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Name (`namespace/name`), used in metrics and logs.
    pub name: String,
    /// The VIP.
    pub vip: IpAddr,
    /// The Service port.
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP` (any case).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Endpoints: `IP:PORT` (`[IPv6]:PORT`) for a ready endpoint, or
    /// `{address, ready, serving, terminating}` with EndpointSlice conditions.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// `None` (default) or `ClientIP`.
    #[serde(default)]
    pub session_affinity: Option<String>,
    /// ClientIP affinity timeout (`timeoutSeconds`, default 3h as in Kubernetes).
    #[serde(default = "default_affinity_timeout", with = "humantime_serde")]
    pub affinity_timeout: Duration,
    /// Always masquerade (SNAT to the node address) connections to this
    /// frontend, as kube-proxy does for NodePort/ExternalIP/LoadBalancer
    /// traffic with `externalTrafficPolicy: Cluster`.
    #[serde(default)]
    pub masquerade: bool,
    /// NodePort: also serve on this port of every node address (masqueraded,
    /// as with `externalTrafficPolicy: Cluster`).
    #[serde(default)]
    pub node_port: Option<u16>,
    /// ExternalIPs: also serve on these addresses (masqueraded).
    #[serde(default)]
    pub external_ips: Vec<IpAddr>,
    /// LoadBalancer ingress IPs (masqueraded).
    #[serde(default)]
    pub load_balancer_ips: Vec<IpAddr>,
    /// `loadBalancerSourceRanges` (`ADDR/LEN`): only these clients may use
    /// the LoadBalancer IPs; others are dropped. Empty: everyone.
    #[serde(default)]
    pub load_balancer_source_ranges: Vec<String>,
    /// This Service's load-balancing algorithm (default: the node-wide
    /// `load_balancing`).
    #[serde(default)]
    pub load_balancing: Option<String>,
}

/// The default of [`Config::load_balancing`].
pub fn default_algorithm() -> String {
    Algorithm::default().name().into()
}

/// Parses an algorithm name; the error names `field` and the valid names.
pub fn parse_algorithm(s: &str, field: &str) -> Result<Algorithm> {
    Algorithm::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        invalid(
            field,
            format!(
                "{s:?} is not a load-balancing algorithm ({})",
                names.join(", ")
            ),
        )
    })
}

fn default_affinity_timeout() -> Duration {
    Duration::from_secs(10_800)
}

/// An endpoint of a Service.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum BackendConfig {
    /// A ready endpoint.
    Address(String),
    /// An endpoint with EndpointSlice conditions.
    Endpoint(EndpointConfig),
}

/// An endpoint with conditions.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// `IP:PORT`.
    pub address: String,
    /// `conditions.ready` (default true).
    #[serde(default = "default_true")]
    pub ready: bool,
    /// `conditions.serving` (default: same as ready).
    #[serde(default)]
    pub serving: Option<bool>,
    /// `conditions.terminating` (default false).
    #[serde(default)]
    pub terminating: bool,
}

impl BackendConfig {
    fn parts(&self) -> (&str, EndpointConditions) {
        match self {
            BackendConfig::Address(a) => (
                a,
                EndpointConditions {
                    ready: true,
                    serving: true,
                    terminating: false,
                },
            ),
            BackendConfig::Endpoint(e) => (
                &e.address,
                EndpointConditions {
                    ready: e.ready,
                    serving: e.serving.unwrap_or(e.ready),
                    terminating: e.terminating,
                },
            ),
        }
    }
}

/// EndpointSlice endpoint conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointConditions {
    /// Ready for new connections.
    pub ready: bool,
    /// Serving (may be terminating).
    pub serving: bool,
    /// Terminating.
    pub terminating: bool,
}

/// kube-proxy's choice of endpoints for new connections: the ready ones;
/// when none is ready, the serving-and-terminating ones (KEP-1669); else
/// none (the Service rejects).
pub fn usable_endpoints<T: Copy>(eps: &[(T, EndpointConditions)]) -> Vec<T> {
    let ready: Vec<T> = eps
        .iter()
        .filter(|(_, c)| c.ready)
        .map(|(a, _)| *a)
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.iter()
        .filter(|(_, c)| c.serving && c.terminating)
        .map(|(a, _)| *a)
        .collect()
}

fn default_protocol() -> String {
    "TCP".into()
}

/// Deserializes YAML. serde_yaml's errors name the path of the field
/// (`conntrack: unknown field `udpTimeoutt``, `ports[0].mtu: invalid type`).
pub(crate) fn from_yaml<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    serde_yaml::from_str(text).map_err(|e| Error::Parse {
        path: origin.into(),
        msg: e.to_string(),
    })
}

pub(crate) fn invalid(field: impl Into<String>, msg: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        msg: msg.into(),
    }
}

/// Parses `ADDR/LEN`.
pub fn parse_prefix(s: &str, field: &str) -> Result<(Addr, u8)> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| invalid(field, format!("{s:?} is not ADDR/LEN")))?;
    let ip: IpAddr = a
        .parse()
        .map_err(|_| invalid(field, format!("{a:?} is not an IP address")))?;
    let len: u8 = l
        .parse()
        .map_err(|_| invalid(field, format!("{l:?} is not a prefix length")))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(invalid(field, format!("prefix length {len} > {max}")));
    }
    Ok((Addr::from(ip), len))
}

/// `eal.lcores: auto`: lcore i on the i-th CPU of a Linux CPU list
/// (`2-4,7` → `0@2,1@3,2@4,3@7`).
pub fn lcores_from_cpu_list(list: &str) -> Result<String> {
    let bad = || invalid("eal.lcores", format!("auto: {list:?} is not a CPU list"));
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let lo: u32 = lo.parse().map_err(|_| bad())?;
        let hi: u32 = hi.parse().map_err(|_| bad())?;
        if lo > hi || hi - lo > 4096 {
            return Err(bad());
        }
        cpus.extend(lo..=hi);
    }
    if cpus.len() < 2 {
        return Err(invalid(
            "eal.lcores",
            format!("auto: CPUs {list:?} leave no worker (the first CPU runs the main lcore)"),
        ));
    }
    Ok(cpus
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{i}@{c}"))
        .collect::<Vec<_>>()
        .join(","))
}

fn parse_mac(s: &str, field: &str) -> Result<MacAddr> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || invalid(field, format!("{s:?} is not a MAC address"));
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(MacAddr(m))
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &str) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates YAML text (`origin` names it in errors): a
    /// `KubeProxyConfiguration` when the document has `apiVersion` or `kind`,
    /// else the native format.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let doc: serde_yaml::Value = from_yaml(text, origin)?;
        if crate::kubeproxy::is_kube_proxy_configuration(&doc) {
            return crate::kubeproxy::parse(text, origin);
        }
        let c: Config = from_yaml(text, origin)?;
        c.validate()?;
        Ok(c)
    }

    /// Semantic checks; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.ports.is_empty() {
            return Err(invalid("ports", "at least one port is required"));
        }
        for (i, p) in self.ports.iter().enumerate() {
            if p.device.is_empty() {
                return Err(invalid(format!("ports[{i}].device"), "must not be empty"));
            }
            if !(576..=9600).contains(&p.mtu) {
                return Err(invalid(
                    format!("ports[{i}].mtu"),
                    format!("{} is not in 576..=9600", p.mtu),
                ));
            }
            if let Some(v) = p.vlan {
                if v == 0 || v > 4094 {
                    return Err(invalid(
                        format!("ports[{i}].vlan"),
                        format!("{v} is not in 1..=4094"),
                    ));
                }
            }
            for (j, a) in p.addresses.iter().enumerate() {
                parse_prefix(a, &format!("ports[{i}].addresses[{j}]"))?;
            }
        }
        self.check_port_refs()?;
        self.validate_exception()?;
        self.validate_shared()?;
        if self.workers.backend_counters > 1 << 24 {
            return Err(invalid(
                "workers.backend_counters",
                "must be at most 16777216",
            ));
        }
        if self.workers.sessions == 0 {
            return Err(invalid("workers.sessions", "must be > 0"));
        }
        if self.workers.shutdown_timeout.is_zero() {
            return Err(invalid("workers.shutdown_timeout", "must be > 0"));
        }
        if !self.workers.rx_desc.is_power_of_two() || !self.workers.tx_desc.is_power_of_two() {
            return Err(invalid("workers.rx_desc/tx_desc", "must be powers of two"));
        }
        self.validate_kubernetes()?;
        self.service_cidrs()?;
        if self.kernel_routes.protocol <= 4 {
            return Err(invalid(
                "kernel_routes.protocol",
                format!(
                    "{} is the kernel's or an administrator's (0-4: unspec, redirect, kernel, boot, static)",
                    self.kernel_routes.protocol
                ),
            ));
        }
        self.algorithm()?;
        self.table_spec().map(|_| ())
    }

    /// The node-wide load-balancing algorithm.
    pub fn algorithm(&self) -> Result<Algorithm> {
        parse_algorithm(&self.load_balancing, "load_balancing")
    }

    /// `service_cidrs`, parsed.
    pub fn service_cidrs(&self) -> Result<Vec<(IpAddr, u8)>> {
        self.service_cidrs
            .iter()
            .enumerate()
            .map(|(i, c)| parse_prefix(c, &format!("service_cidrs[{i}]")).map(|(a, l)| (a.ip(), l)))
            .collect()
    }

    /// The node's own addresses (every dataplane port address).
    pub fn node_addresses(&self) -> Vec<IpAddr> {
        self.ports
            .iter()
            .flat_map(|p| &p.addresses)
            .filter_map(|a| a.split_once('/')?.0.parse().ok())
            .collect()
    }

    fn validate_kubernetes(&self) -> Result<()> {
        let k = &self.kubernetes;
        if k.sync_period.is_zero() {
            return Err(invalid("kubernetes.sync_period", "must be > 0"));
        }
        for (i, a) in k.nodeport_addresses.iter().enumerate() {
            parse_nodeport_address(a, &format!("kubernetes.nodeport_addresses[{i}]"))?;
        }
        if let Some(o) = k.oom_score_adj {
            if !(-1000..=1000).contains(&o) {
                return Err(invalid(
                    "kubernetes.oom_score_adj",
                    format!("{o} is not in -1000..=1000"),
                ));
            }
        }
        Ok(())
    }

    /// The node addresses NodePorts are served on: the dataplane's
    /// addresses, filtered by `kubernetes.nodeport_addresses` when given.
    pub fn nodeport_addresses(&self) -> Result<Vec<IpAddr>> {
        let k = &self.kubernetes;
        let mut filter = Vec::new();
        for (i, a) in k.nodeport_addresses.iter().enumerate() {
            filter.push(parse_nodeport_address(
                a,
                &format!("kubernetes.nodeport_addresses[{i}]"),
            )?);
        }
        let all: Vec<Addr> = self
            .table_spec()?
            .interfaces
            .iter()
            .map(|i| i.addr)
            .collect();
        let primary = |a: &Addr| match k.bind_address {
            Some(b) if !b.is_unspecified() && b.is_ipv4() == a.is_v4() => Addr::from(b) == *a,
            _ => all.iter().find(|x| x.is_v4() == a.is_v4()) == Some(a),
        };
        Ok(all
            .iter()
            .filter(|a| {
                // Unset: the primary addresses, like kube-proxy's nftables
                // mode (`--nodeport-addresses=primary` is its default).
                (filter.is_empty() && primary(a))
                    || filter.iter().any(|f| match f {
                        NodePortAddress::All => true,
                        NodePortAddress::Primary => primary(a),
                        NodePortAddress::Cidr(p, l) => a.in_prefix(p, *l),
                    })
            })
            .map(|a| a.ip())
            .collect())
    }

    /// At most one exception port, with an uplink to pair with, no
    /// addresses (the kernel holds the node's) and no VLAN.
    fn validate_exception(&self) -> Result<()> {
        let mut seen: Option<usize> = None;
        for (i, p) in self.ports.iter().enumerate() {
            if p.role != PortRole::Exception {
                continue;
            }
            if let Some(j) = seen {
                return Err(invalid(
                    format!("ports[{i}].role"),
                    format!("ports[{j}] is already the exception port; at most one is supported"),
                ));
            }
            seen = Some(i);
            if !p.addresses.is_empty() {
                return Err(invalid(
                    format!("ports[{i}].addresses"),
                    "the exception port has no dataplane addresses: list the node's addresses \
                     on its uplink (the kernel holds them on the exception interface)",
                ));
            }
            if p.vlan.is_some() {
                return Err(invalid(
                    format!("ports[{i}].vlan"),
                    "the exception port takes no VLAN tag",
                ));
            }
        }
        let e = &self.exception;
        if seen.is_none() && (!e.local_pod_cidrs.is_empty() || !e.snat_addresses.is_empty()) {
            return Err(invalid(
                "exception",
                "needs an exception port (a port with role: exception)",
            ));
        }
        for (i, c) in e.local_pod_cidrs.iter().enumerate() {
            parse_prefix(c, &format!("exception.local_pod_cidrs[{i}]"))?;
        }
        for (i, a) in e.snat_addresses.iter().enumerate() {
            let f = format!("exception.snat_addresses[{i}]");
            if e.snat_addresses[..i]
                .iter()
                .any(|b| b.is_ipv4() == a.is_ipv4())
            {
                return Err(invalid(f, "at most one address per family"));
            }
            if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
                return Err(invalid(f, format!("{a} is not a unicast address")));
            }
            let node = self
                .ports
                .iter()
                .flat_map(|p| p.addresses.iter())
                .any(|p| parse_prefix(p, "").is_ok_and(|(n, _)| n == Addr::from(*a)));
            if node {
                return Err(invalid(
                    f,
                    format!("{a} is a node address: the kernel holds it, replies to it would not come back"),
                ));
            }
        }
        if seen.is_some() {
            let Some(x) = self.exception() else {
                return Err(invalid(
                    "ports",
                    "an exception port needs an uplink port (role: uplink) to pair with",
                ));
            };
            // The kernel's frames would leave untagged and tagged frames
            // would reach it with their tag: not supported.
            if self.ports[usize::from(x.uplink)].vlan.is_some() {
                return Err(invalid(
                    format!("ports[{}].vlan", x.uplink),
                    "the uplink paired with the exception port takes no VLAN tag",
                ));
            }
        }
        Ok(())
    }

    /// `role: shared` ports: each an af_xdp vdev with an interface, with
    /// the kernel's addresses listed, without an XDP program of the
    /// operator's (the proxy brings its own) and without an exception port
    /// (the kernel already has the NIC).
    fn validate_shared(&self) -> Result<()> {
        for (i, p) in self.ports.iter().enumerate() {
            if p.role != PortRole::Shared {
                continue;
            }
            let f = format!("ports[{i}].role");
            if self.exception().is_some() {
                return Err(invalid(
                    f,
                    "a shared port (beside the kernel) and an exception port cannot be combined: \
                     the kernel keeps the NIC of a shared port itself",
                ));
            }
            let Some(vdev) = self.eal.vdevs.iter().find(|v| vdev_name(v) == p.device) else {
                return Err(invalid(
                    f,
                    format!(
                        "a shared port must be an af_xdp vdev: add `{},iface=IFACE` to eal.vdevs",
                        p.device
                    ),
                ));
            };
            if !p.device.starts_with("net_af_xdp") {
                return Err(invalid(
                    f,
                    format!(
                        "{} is not an af_xdp port: only af_xdp can keep the kernel from also \
                         answering the Service traffic it hands the dataplane (af_packet only copies it)",
                        p.device
                    ),
                ));
            }
            if vdev_arg(vdev, "iface").is_none() {
                return Err(invalid(
                    format!("eal.vdevs ({vdev})"),
                    "a shared port needs iface=INTERFACE",
                ));
            }
            if vdev_arg(vdev, "xdp_prog").is_some() {
                return Err(invalid(
                    format!("eal.vdevs ({vdev})"),
                    "xdp_prog is set by the proxy for a shared port: remove it",
                ));
            }
            if p.addresses.is_empty() {
                return Err(invalid(
                    format!("ports[{i}].addresses"),
                    "list the kernel's addresses on the shared interface (NodePorts and \
                     masquerading use them)",
                ));
            }
            if p.vlan.is_some() {
                // NICs strip the tag before XDP sees the frame (rx VLAN
                // offload); the VLAN interface is the place to attach.
                return Err(invalid(
                    format!("ports[{i}].vlan"),
                    "a shared port takes no VLAN tag: give af_xdp the VLAN interface (iface=eth0.100)",
                ));
            }
        }
        Ok(())
    }

    /// The `role: shared` ports: number, kernel interface and the af_xdp
    /// queues (`queue_count`, default 1; `start_queue`, default 0).
    pub fn shared_ports(&self) -> Vec<crate::beside::SharedIface> {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.role == PortRole::Shared)
            .filter_map(|(i, p)| {
                let v = self.eal.vdevs.iter().find(|v| vdev_name(v) == p.device)?;
                let num =
                    |k: &str, d: u32| vdev_arg(v, k).and_then(|n| n.parse().ok()).unwrap_or(d);
                Some(crate::beside::SharedIface {
                    port: i as u16,
                    iface: vdev_arg(v, "iface")?.to_string(),
                    queue_count: num("queue_count", 1),
                    start_queue: num("start_queue", 0),
                })
            })
            .collect()
    }

    /// `args` (from [`Config::eal_args_resolved`]) with the proxy's XDP
    /// program `xdp_prog` given to every shared port's vdev.
    pub fn with_xdp_prog(&self, mut args: Vec<String>, prog: &str) -> Vec<String> {
        let shared: Vec<&str> = self
            .ports
            .iter()
            .filter(|p| p.role == PortRole::Shared)
            .map(|p| p.device.as_str())
            .collect();
        for i in 1..args.len() {
            if args[i - 1] == "--vdev" && shared.contains(&vdev_name(&args[i])) {
                args[i] = format!("{},xdp_prog={prog}", args[i]);
            }
        }
        args
    }

    /// The exception path: the exception port and the first uplink.
    pub fn exception(&self) -> Option<Exception> {
        let kernel = self
            .ports
            .iter()
            .position(|p| p.role == PortRole::Exception)?;
        let uplink = self.ports.iter().position(|p| p.role == PortRole::Uplink)?;
        let snat = |v4: bool| {
            self.exception
                .snat_addresses
                .iter()
                .find(|a| a.is_ipv4() == v4)
                .map(|a| Addr::from(*a))
        };
        Some(Exception {
            snat_v4: snat(true),
            snat_v6: snat(false),
            ..Exception::new(uplink as u16, kernel as u16)
        })
    }

    fn check_port_refs(&self) -> Result<()> {
        let n = self.ports.len() as u16;
        for (i, r) in self.routes.iter().enumerate() {
            if r.port >= n {
                return Err(invalid(
                    format!("routes[{i}].port"),
                    format!("port {} does not exist ({} ports)", r.port, n),
                ));
            }
        }
        for (i, r) in self.neighbors.iter().enumerate() {
            if r.port >= n {
                return Err(invalid(
                    format!("neighbors[{i}].port"),
                    format!("port {} does not exist ({} ports)", r.port, n),
                ));
            }
        }
        Ok(())
    }

    /// [`Self::table_spec`] plus `pod_cidrs` (the Node's `spec.podCIDRs`)
    /// routed onto the exception port like `exception.local_pod_cidrs`
    /// (nothing without an exception port).
    pub fn table_spec_with_pods(&self, pod_cidrs: &[(Addr, u8)]) -> Result<TableSpec> {
        let mut spec = self.table_spec()?;
        if let Some(x) = self.exception() {
            for &(prefix, len) in pod_cidrs {
                if !spec
                    .routes
                    .iter()
                    .any(|r| r.prefix == prefix && r.len == len)
                {
                    spec.routes.push(Route {
                        prefix,
                        len,
                        port: x.kernel,
                        via: None,
                    });
                }
            }
        }
        Ok(spec)
    }

    /// Builds the table spec (services, interfaces, routes, neighbours).
    pub fn table_spec(&self) -> Result<TableSpec> {
        let mut spec = TableSpec::default();
        for (i, p) in self.ports.iter().enumerate() {
            for (j, a) in p.addresses.iter().enumerate() {
                let (addr, prefix_len) = parse_prefix(a, &format!("ports[{i}].addresses[{j}]"))?;
                spec.interfaces.push(Interface {
                    port: i as u16,
                    addr,
                    prefix_len,
                });
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let f = format!("routes[{i}]");
            let (prefix, len) = parse_prefix(&r.prefix, &format!("{f}.prefix"))?;
            if let Some(v) = r.via {
                if Addr::from(v).is_v4() != prefix.is_v4() {
                    return Err(invalid(
                        format!("{f}.via"),
                        "address family differs from the prefix",
                    ));
                }
            }
            spec.routes.push(Route {
                prefix,
                len,
                port: r.port,
                via: r.via.map(Addr::from),
            });
        }
        if let Some(x) = self.exception() {
            for (i, c) in self.exception.local_pod_cidrs.iter().enumerate() {
                let (prefix, len) = parse_prefix(c, &format!("exception.local_pod_cidrs[{i}]"))?;
                spec.routes.push(Route {
                    prefix,
                    len,
                    port: x.kernel,
                    via: None,
                });
            }
        }
        for (i, n) in self.neighbors.iter().enumerate() {
            let mac = parse_mac(&n.mac, &format!("neighbors[{i}].mac"))?;
            spec.neighbors.push(StaticNeighbor {
                addr: Addr::from(n.address),
                mac,
                port: n.port,
            });
        }
        spec.masquerade.all = self.masquerade_all;
        for (i, c) in self.cluster_cidrs.iter().enumerate() {
            spec.masquerade
                .cluster_cidrs
                .push(parse_prefix(c, &format!("cluster_cidrs[{i}]"))?);
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let f = format!("services[{i}]");
            let proto = match s.protocol.to_ascii_uppercase().as_str() {
                "TCP" => Proto::Tcp,
                "UDP" => Proto::Udp,
                "SCTP" => Proto::Sctp,
                other => {
                    return Err(invalid(
                        format!("{f}.protocol"),
                        format!("{other:?} is not TCP, UDP or SCTP"),
                    ))
                }
            };
            if s.port == 0 {
                return Err(invalid(format!("{f}.port"), "must be 1..=65535"));
            }
            let frontend = Frontend {
                addr: SockAddr::new(Addr::from(s.vip), s.port),
                proto,
            };
            // (frontend, masquerade, source ranges, label) for every address
            // the Service port answers on.
            let mut frontends = vec![(frontend, s.masquerade, vec![], String::new())];
            if let Some(np) = s.node_port {
                if np == 0 {
                    return Err(invalid(format!("{f}.node_port"), "must be 1..=65535"));
                }
                for i in spec
                    .interfaces
                    .iter()
                    .filter(|i| i.addr.is_v4() == s.vip.is_ipv4())
                {
                    let fe = Frontend {
                        addr: SockAddr::new(i.addr, np),
                        proto,
                    };
                    frontends.push((fe, true, vec![], " nodePort".into()));
                }
            }
            for (j, ip) in s.external_ips.iter().enumerate() {
                if ip.is_ipv4() != s.vip.is_ipv4() {
                    return Err(invalid(
                        format!("{f}.external_ips[{j}]"),
                        "address family differs from the VIP",
                    ));
                }
                let fe = Frontend {
                    addr: SockAddr::new(Addr::from(*ip), s.port),
                    proto,
                };
                frontends.push((fe, true, vec![], " externalIP".into()));
            }
            let mut ranges = Vec::new();
            for (j, r) in s.load_balancer_source_ranges.iter().enumerate() {
                ranges.push(parse_prefix(
                    r,
                    &format!("{f}.load_balancer_source_ranges[{j}]"),
                )?);
            }
            for (j, ip) in s.load_balancer_ips.iter().enumerate() {
                if ip.is_ipv4() != s.vip.is_ipv4() {
                    return Err(invalid(
                        format!("{f}.load_balancer_ips[{j}]"),
                        "address family differs from the VIP",
                    ));
                }
                let fe = Frontend {
                    addr: SockAddr::new(Addr::from(*ip), s.port),
                    proto,
                };
                frontends.push((fe, true, ranges.clone(), " loadBalancer".into()));
            }
            for (fe, ..) in &frontends {
                if !seen.insert(*fe) {
                    return Err(invalid(
                        f.clone(),
                        format!("duplicate frontend {}/{}", fe.addr, proto.as_str()),
                    ));
                }
            }
            let mut backends = Vec::new();
            for (j, be) in s.backends.iter().enumerate() {
                let (b, cond) = be.parts();
                let sa: SocketAddr = b.parse().map_err(|_| {
                    invalid(
                        format!("{f}.backends[{j}]"),
                        format!("{b:?} is not IP:PORT"),
                    )
                })?;
                if sa.is_ipv4() != s.vip.is_ipv4() {
                    return Err(invalid(
                        format!("{f}.backends[{j}]"),
                        "address family differs from the VIP",
                    ));
                }
                if sa.port() == 0 {
                    return Err(invalid(
                        format!("{f}.backends[{j}]"),
                        "port must be 1..=65535",
                    ));
                }
                backends.push((SockAddr::new(Addr::from(sa.ip()), sa.port()), cond));
            }
            let backends = usable_endpoints(&backends);
            let affinity_timeout = match s.session_affinity.as_deref() {
                None | Some("None") => None,
                Some("ClientIP") => {
                    let t = s.affinity_timeout.as_secs();
                    if t == 0 || t > 86_400 {
                        return Err(invalid(
                            format!("{f}.affinity_timeout"),
                            "must be 1s..=86400s",
                        ));
                    }
                    Some(t as u32)
                }
                Some(o) => {
                    return Err(invalid(
                        format!("{f}.session_affinity"),
                        format!("{o:?} is not None or ClientIP"),
                    ))
                }
            };
            let algorithm = match &s.load_balancing {
                Some(a) => parse_algorithm(a, &format!("{f}.load_balancing"))?,
                None => self.algorithm()?,
            };
            for (frontend, masquerade, source_ranges, kind) in frontends {
                spec.services.push(ServiceSpec {
                    affinity_timeout,
                    masquerade,
                    // Every frontend but the VIP has a kind label.
                    external: !kind.is_empty(),
                    // Static backends have no node locality: an empty list
                    // is a Service without endpoints.
                    no_backends: NoBackends::Reject,
                    short_circuit: vec![],
                    algorithm,
                    source_ranges,
                    name: format!("{}{kind}", s.name),
                    frontend,
                    backends: backends.clone(),
                });
            }
        }
        Ok(spec)
    }

    /// The EAL command line with `eal.lcores: auto` resolved against this
    /// process's CPU affinity (`Cpus_allowed_list` of /proc/self/status).
    pub fn eal_args_resolved(&self) -> Result<Vec<String>> {
        let mut a = self.eal_args();
        if self.eal.lcores == "auto" {
            let path = "/proc/self/status";
            let status = std::fs::read_to_string(path).map_err(|source| Error::Io {
                path: path.into(),
                source,
            })?;
            let list = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .ok_or_else(|| {
                    invalid(
                        "eal.lcores",
                        format!("auto: no Cpus_allowed_list in {path}"),
                    )
                })?;
            a[1] = lcores_from_cpu_list(list.trim())?;
        }
        Ok(a)
    }

    /// The EAL command line (without argv[0]).
    pub fn eal_args(&self) -> Vec<String> {
        let e = &self.eal;
        let mut a = vec!["--lcores".to_string(), e.lcores.clone()];
        if e.no_huge {
            a.push("--no-huge".into());
        }
        if e.memory_mb > 0 {
            a.push("-m".into());
            a.push(e.memory_mb.to_string());
        }
        if e.no_shconf {
            a.push("--no-shconf".into());
        }
        if e.pci.is_empty() {
            a.push("--no-pci".into());
        } else {
            for p in &e.pci {
                a.push("-a".into());
                a.push(p.clone());
            }
        }
        for v in &e.vdevs {
            a.push("--vdev".into());
            a.push(v.clone());
        }
        a.extend(e.args.iter().cloned());
        a
    }

    /// Session timeouts in the dataplane's units.
    pub fn timeouts(&self) -> Timeouts {
        let t = &self.timeouts;
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        Timeouts {
            tcp_syn: ms(t.tcp_syn),
            tcp_established: ms(t.tcp_established),
            tcp_fin: ms(t.tcp_fin),
            tcp_closed: ms(t.tcp_closed),
            udp: ms(t.udp),
            udp_stream: ms(t.udp_stream),
            icmp: ms(t.icmp),
            sctp_init: ms(t.sctp_init),
            sctp_established: ms(t.sctp_established),
            sctp_closing: ms(t.sctp_closing),
            sctp_closed: ms(t.sctp_closed),
        }
    }

    /// The dataplane configuration for worker lcores `lcores`.
    pub fn dataplane(&self, lcores: Vec<u32>) -> DataplaneConfig {
        let w = &self.workers;
        DataplaneConfig {
            ports: self
                .ports
                .iter()
                .map(|p| PortSpec {
                    device: p.device.clone(),
                    vlan: p.vlan,
                    mtu: p.mtu,
                })
                .collect(),
            lcores,
            mbufs: w.mbufs,
            rx_desc: w.rx_desc,
            tx_desc: w.tx_desc,
            pipeline: PipelineConfig {
                sessions: w.sessions,
                timeouts: self.timeouts(),
                neighbors: w.neighbors,
                ..PipelineConfig::default()
            },
            idle_sleep_us: w.idle_sleep_us,
            exception: self.exception(),
            ..DataplaneConfig::default()
        }
    }

    /// True when a change from `self` to `new` needs a restart (EAL, ports, sizing).
    pub fn restart_needed(&self, new: &Config) -> Option<&'static str> {
        if self.eal != new.eal {
            return Some("eal");
        }
        if self
            .ports
            .iter()
            .map(|p| (&p.device, p.vlan, p.role))
            .ne(new.ports.iter().map(|p| (&p.device, p.vlan, p.role)))
        {
            return Some("ports");
        }
        if self.workers != new.workers {
            return Some("workers");
        }
        if self.exception.snat_addresses != new.exception.snat_addresses {
            return Some("exception.snat_addresses");
        }
        if self.timeouts != new.timeouts {
            return Some("timeouts");
        }
        if self.admin != new.admin {
            return Some("admin");
        }
        if self.kernel_routes.protocol != new.kernel_routes.protocol {
            return Some("kernel_routes.protocol");
        }
        if self.metrics != new.metrics {
            return Some("metrics");
        }
        // NodePort addresses are applied at once; the rest needs a restart.
        let k = |c: &Config| KubernetesConfig {
            nodeport_addresses: vec![],
            bind_address: None,
            ..c.kubernetes.clone()
        };
        if k(self) != k(new) {
            return Some("kubernetes");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
eal:
  lcores: "0@(0-1),1@(0-1),2@(0-1)"
  no_huge: true
  memory_mb: 256
  vdevs: ["net_af_packet0,iface=veth0,qpairs=2"]
ports:
  - device: net_af_packet0
    addresses: ["198.18.0.1/24", "2001:2::1/64"]
routes:
  - prefix: 198.19.0.0/16
    port: 0
    via: 198.18.0.254
neighbors:
  - address: 198.18.0.254
    mac: "02:00:00:00:00:fe"
    port: 0
timeouts:
  udp: 10s
  sctp_init: 5s
services:
  - name: default/web
    vip: 198.18.100.1
    port: 80
    protocol: TCP
    backends: ["198.18.0.11:8080", "198.18.0.12:8080"]
  - name: default/dns
    vip: 2001:2::100
    port: 53
    protocol: udp
    backends: ["[2001:2::11]:5353"]
  - name: default/sig
    vip: 198.18.100.1
    port: 80
    protocol: sctp
    backends: ["198.18.0.11:9999"]
"#;

    #[test]
    fn parses_a_full_config() {
        let c = Config::parse(GOOD, "test").unwrap();
        let spec = c.table_spec().unwrap();
        assert_eq!(spec.services.len(), 3);
        assert_eq!(spec.services[1].frontend.proto, Proto::Udp);
        // Same VIP and port as the TCP Service: another frontend.
        assert_eq!(spec.services[2].frontend.proto, Proto::Sctp);
        assert_eq!(spec.services[2].frontend.addr.port, 80);
        assert_eq!(c.timeouts().sctp_init, 5_000);
        assert_eq!(
            c.timeouts().sctp_established,
            Timeouts::default().sctp_established
        );
        assert_eq!(spec.interfaces.len(), 2);
        assert_eq!(spec.routes[0].via, Some(Addr::v4([198, 18, 0, 254])));
        assert_eq!(c.timeouts().udp, 10_000);
        assert_eq!(c.timeouts().tcp_established, 86_400_000);
        let args = c.eal_args();
        assert_eq!(
            args,
            [
                "--lcores",
                "0@(0-1),1@(0-1),2@(0-1)",
                "--no-huge",
                "-m",
                "256",
                "--no-shconf",
                "--no-pci",
                "--vdev",
                "net_af_packet0,iface=veth0,qpairs=2"
            ]
        );
        assert_eq!(c.admin.bind.to_string(), "127.0.0.1:10249");
        assert_eq!(c.dataplane(vec![1, 2]).lcores, vec![1, 2]);
    }

    fn err(text: &str) -> String {
        Config::parse(text, "t").unwrap_err().to_string()
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = err("ports: [{device: a}]\nbogus: 1\n");
        assert!(e.contains("bogus"), "{e}");
        let e = err("ports: [{device: a, adresses: []}]\n");
        assert!(e.contains("adresses"), "{e}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let base = "ports: [{device: a, addresses: [198.18.0.1/24]}]\n";
        let cases = [
            (format!("{base}services: [{{name: s, vip: 198.18.100.1, port: 80, backends: [nope]}}]"), "services[0].backends[0]"),
            (format!("{base}services: [{{name: s, vip: 198.18.100.1, port: 80, protocol: ICMP}}]"), "services[0].protocol"),
            (format!("{base}services: [{{name: s, vip: 198.18.100.1, port: 0}}]"), "services[0].port"),
            (format!("{base}services: [{{name: s, vip: 198.18.100.1, port: 80, backends: ['[2001:2::1]:80']}}]"), "services[0].backends[0]"),
            (format!("{base}routes: [{{prefix: 198.19.0.0/33, port: 0}}]"), "routes[0].prefix"),
            (format!("{base}routes: [{{prefix: 198.19.0.0/16, port: 3}}]"), "routes[0].port"),
            (format!("{base}neighbors: [{{address: 198.18.0.2, mac: zz, port: 0}}]"), "neighbors[0].mac"),
            ("ports: [{device: a, addresses: [198.18.0.1]}]".to_string(), "ports[0].addresses[0]"),
            ("ports: []".to_string(), "ports"),
            (format!("{base}workers: {{shutdown_timeout: 0s}}"), "workers.shutdown_timeout"),
            (format!("{base}workers: {{stall_timeout: soon}}"), "stall_timeout"),
            (format!("{base}services: [{{name: a, vip: 198.18.100.1, port: 80}}, {{name: b, vip: 198.18.100.1, port: 80}}]"), "services[1]"),
        ];
        for (text, field) in cases {
            let e = err(&text);
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn endpoint_conditions_pick_ready_then_terminating() {
        let c = |ready, serving, terminating| EndpointConditions {
            ready,
            serving,
            terminating,
        };
        let eps = [
            (1, c(true, true, false)),
            (2, c(false, true, true)),
            (3, c(false, false, false)),
        ];
        assert_eq!(usable_endpoints(&eps), vec![1]);
        let eps = [
            (2, c(false, true, true)),
            (3, c(false, false, false)),
            (4, c(false, true, true)),
        ];
        assert_eq!(usable_endpoints(&eps), vec![2, 4]);
        let eps = [(3, c(false, false, true)), (5, c(false, true, false))];
        assert!(usable_endpoints(&eps).is_empty());
        let text = "ports: [{device: a}]\nservices:\n- name: s\n  vip: 198.18.100.1\n  port: 80\n  session_affinity: ClientIP\n  affinity_timeout: 30s\n  backends:\n  - 198.18.1.1:80\n  - {address: \"198.18.1.2:80\", ready: false, serving: true, terminating: true}\n";
        let spec = Config::parse(text, "t").unwrap().table_spec().unwrap();
        assert_eq!(spec.services[0].backends.len(), 1);
        assert_eq!(spec.services[0].affinity_timeout, Some(30));
        let bad = text.replace("ClientIP", "Sticky");
        assert!(Config::parse(&bad, "t")
            .unwrap_err()
            .to_string()
            .contains("services[0].session_affinity"));
    }

    #[test]
    fn per_backend_metrics_cap_and_counter_capacity() {
        let c = Config::parse("ports: [{device: a}]\n", "t").unwrap();
        assert_eq!(c.metrics.per_backend_services, 100);
        assert_eq!(c.workers.backend_counters, 16_384);
        let c = Config::parse(
            "ports: [{device: a}]\nmetrics: {per_backend_services: 5}\nworkers: {backend_counters: 64}\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.metrics.per_backend_services, 5);
        assert_eq!(c.workers.backend_counters, 64);
        let e = Config::parse(
            "ports: [{device: a}]\nworkers: {backend_counters: 99999999}\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("workers.backend_counters"), "{e}");
        // A changed cap takes effect after a restart.
        let mut d = c.clone();
        d.metrics.per_backend_services = 6;
        assert_eq!(c.restart_needed(&d), Some("metrics"));
    }

    #[test]
    fn load_balancing_node_default_and_per_service() {
        use dataplane::table::Algorithm;
        let text = "ports: [{device: a}]\nload_balancing: round-robin\nservices:\n- {name: s, vip: 198.18.100.1, port: 80, backends: [198.18.1.1:80]}\n- {name: t, vip: 198.18.100.2, port: 80, load_balancing: source-hash, backends: [198.18.1.1:80]}\n";
        let spec = Config::parse(text, "t").unwrap().table_spec().unwrap();
        let algs: Vec<Algorithm> = spec.services.iter().map(|s| s.algorithm).collect();
        assert_eq!(algs, [Algorithm::RoundRobin, Algorithm::SourceHash]);
        let lc = Config::parse(&text.replace("round-robin", "least-connections"), "t").unwrap();
        assert_eq!(lc.algorithm().unwrap(), Algorithm::LeastConnections);
        let dflt = text.replace("load_balancing: round-robin\n", "");
        let c = Config::parse(&dflt, "t").unwrap();
        assert_eq!(c.algorithm().unwrap(), Algorithm::Maglev);
        assert_eq!(
            c.table_spec().unwrap().services[0].algorithm,
            Algorithm::Maglev
        );
        let e = Config::parse(&text.replace("round-robin", "least-time"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("load_balancing: \"least-time\" is not a load-balancing algorithm (maglev, round-robin, random, source-hash, least-connections)"), "{e}");
        let e = Config::parse(&text.replace("source-hash", "sh"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("services[1].load_balancing"), "{e}");
    }

    #[test]
    fn service_cidrs_and_kernel_routes() {
        let base = "ports: [{device: a, addresses: [198.18.0.1/24, 2001:2::1/64]}]\n";
        let c = Config::parse(base, "t").unwrap();
        assert_eq!(c.kernel_routes, KernelRoutesConfig::default());
        assert!(c.kernel_routes.enabled);
        assert_eq!(c.kernel_routes.protocol, 214);
        assert!(c.service_cidrs().unwrap().is_empty());
        assert_eq!(
            c.node_addresses(),
            [
                "198.18.0.1".parse::<IpAddr>().unwrap(),
                "2001:2::1".parse().unwrap()
            ]
        );
        let text = format!("{base}service_cidrs: [198.18.100.0/24, \"2001:2:0:100::/64\"]\nkernel_routes: {{enabled: false, protocol: 99}}\n");
        let c = Config::parse(&text, "t").unwrap();
        assert_eq!(
            c.service_cidrs().unwrap(),
            [
                ("198.18.100.0".parse().unwrap(), 24),
                ("2001:2:0:100::".parse().unwrap(), 64)
            ]
        );
        assert!(!c.kernel_routes.enabled);
        // Enabling/disabling and the CIDRs apply at once; the mark needs a restart.
        let base_cfg = Config::parse(base, "t").unwrap();
        let mut same_proto = c.clone();
        same_proto.kernel_routes.protocol = DEFAULT_ROUTE_PROTOCOL;
        assert_eq!(base_cfg.restart_needed(&same_proto), None);
        assert_eq!(base_cfg.restart_needed(&c), Some("kernel_routes.protocol"));
        for (bad, want) in [
            ("service_cidrs: [198.18.100.0/33]", "service_cidrs[0]"),
            ("service_cidrs: [198.18.100.0/24, x]", "service_cidrs[1]"),
            (
                "kernel_routes: {protocol: 4}",
                "kernel_routes.protocol: 4 is the kernel's",
            ),
            (
                "kernel_routes: {protocol: 0}",
                "kernel_routes.protocol: 0 is the kernel's",
            ),
            ("kernel_routes: {protocol: 256}", "kernel_routes.protocol"),
            ("kernel_routes: {table: 10}", "unknown field `table`"),
        ] {
            let e = Config::parse(&format!("{base}{bad}\n"), "t")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn external_frontends() {
        let text = "ports: [{device: a, addresses: [198.18.0.1/24, 2001:2::1/64]}, {device: b, addresses: [198.18.1.1/24]}]\nservices:\n- name: s\n  vip: 198.18.100.1\n  port: 80\n  node_port: 30080\n  external_ips: [198.18.100.10]\n  load_balancer_ips: [198.18.100.20]\n  load_balancer_source_ranges: [198.18.0.0/24]\n  backends: [198.18.1.11:8080]\n";
        let spec = Config::parse(text, "t").unwrap().table_spec().unwrap();
        let fe: Vec<(String, bool, usize)> = spec
            .services
            .iter()
            .map(|s| {
                (
                    s.frontend.addr.to_string(),
                    s.masquerade,
                    s.source_ranges.len(),
                )
            })
            .collect();
        assert_eq!(
            fe,
            [
                ("198.18.100.1:80".to_string(), false, 0),
                ("198.18.0.1:30080".to_string(), true, 0),
                ("198.18.1.1:30080".to_string(), true, 0),
                ("198.18.100.10:80".to_string(), true, 0),
                ("198.18.100.20:80".to_string(), true, 1),
            ]
        );
        let bad = text.replace("198.18.100.10", "2001:2::10");
        assert!(Config::parse(&bad, "t")
            .unwrap_err()
            .to_string()
            .contains("services[0].external_ips[0]"));
    }

    #[test]
    fn shared_ports_beside_the_kernel() {
        let parse = |vdevs: &str, ports: &str| {
            Config::parse(&format!("eal: {{vdevs: {vdevs}}}\nports: {ports}\n"), "t")
        };
        let c = parse(
            "[\"net_af_xdp0,iface=eth1\", \"net_null0\"]",
            "[{device: net_af_xdp0, role: shared, addresses: [198.18.0.1/24]}, {device: net_null0}]",
        )
        .unwrap();
        assert_eq!(c.ports[0].role, PortRole::Shared);
        let sp = c.shared_ports();
        assert_eq!(sp.len(), 1);
        assert_eq!((sp[0].port, sp[0].iface.as_str()), (0, "eth1"));
        assert_eq!((sp[0].queue_count, sp[0].start_queue), (1, 0));
        assert_eq!(c.exception(), None);
        // The proxy's program goes to the shared port's vdev only.
        let args = c.with_xdp_prog(c.eal_args(), "/run/x.o");
        assert!(
            args.contains(&"net_af_xdp0,iface=eth1,xdp_prog=/run/x.o".to_string()),
            "{args:?}"
        );
        assert!(args.contains(&"net_null0".to_string()), "{args:?}");
        let err = |vdevs: &str, ports: &str| parse(vdevs, ports).unwrap_err().to_string();
        let e = err(
            "[\"net_af_packet0,iface=eth1\"]",
            "[{device: net_af_packet0, role: shared, addresses: [198.18.0.1/24]}]",
        );
        assert!(
            e.contains("ports[0].role") && e.contains("not an af_xdp port"),
            "{e}"
        );
        let e = err(
            "[]",
            "[{device: net_af_xdp0, role: shared, addresses: [198.18.0.1/24]}]",
        );
        assert!(e.contains("must be an af_xdp vdev"), "{e}");
        let e = err(
            "[\"net_af_xdp0,start_queue=0\"]",
            "[{device: net_af_xdp0, role: shared, addresses: [198.18.0.1/24]}]",
        );
        assert!(e.contains("needs iface="), "{e}");
        let e = err(
            "[\"net_af_xdp0,iface=eth1,xdp_prog=/x.o\"]",
            "[{device: net_af_xdp0, role: shared, addresses: [198.18.0.1/24]}]",
        );
        assert!(e.contains("xdp_prog is set by the proxy"), "{e}");
        let e = err(
            "[\"net_af_xdp0,iface=eth1\"]",
            "[{device: net_af_xdp0, role: shared}]",
        );
        assert!(e.contains("ports[0].addresses"), "{e}");
        let e = err(
            "[\"net_af_xdp0,iface=eth1\", \"net_tap0\"]",
            "[{device: a, addresses: [198.18.0.1/24]}, {device: net_af_xdp0, role: shared, addresses: [198.18.1.1/24]}, {device: net_tap0, role: exception}]",
        );
        assert!(
            e.contains("ports[1].role") && e.contains("cannot be combined"),
            "{e}"
        );
    }

    #[test]
    fn port_roles_and_the_exception_port() {
        let base = "eal: {vdevs: [\"net_tap0,iface=node0\"]}\n";
        // Default: every port an uplink, no exception path.
        let c = Config::parse(
            &format!("{base}ports: [{{device: a, addresses: [198.18.0.1/24]}}]\n"),
            "t",
        )
        .unwrap();
        assert_eq!(c.ports[0].role, PortRole::Uplink);
        assert_eq!(c.exception(), None);
        assert_eq!(c.dataplane(vec![1]).exception, None);
        // The exception port pairs with the first uplink, wherever it is listed.
        let c = Config::parse(
            &format!("{base}ports: [{{device: net_tap0, role: exception}}, {{device: a, addresses: [198.18.0.1/24], role: uplink}}]\n"),
            "t",
        )
        .unwrap();
        let x = Exception::new(1, 0);
        assert_eq!(c.exception(), Some(x));
        assert_eq!(c.dataplane(vec![1]).exception, Some(x));
        let err = |ports: &str| {
            Config::parse(&format!("{base}ports: {ports}\n"), "t")
                .unwrap_err()
                .to_string()
        };
        let e = err("[{device: a, addresses: [198.18.0.1/24]}, {device: t, role: exception}, {device: u, role: exception}]");
        assert!(
            e.contains("ports[2].role") && e.contains("ports[1] is already the exception port"),
            "{e}"
        );
        let e = err("[{device: a}, {device: t, role: exception, addresses: [198.18.0.1/24]}]");
        assert!(e.contains("ports[1].addresses"), "{e}");
        let e = err("[{device: a}, {device: t, role: exception, vlan: 5}]");
        assert!(e.contains("ports[1].vlan"), "{e}");
        let e = err("[{device: t, role: exception}]");
        assert!(e.contains("needs an uplink port"), "{e}");
        let e = err("[{device: a, vlan: 7}, {device: t, role: exception}]");
        assert!(
            e.contains("ports[0].vlan") && e.contains("paired with the exception port"),
            "{e}"
        );
        let e = err("[{device: a, role: kernel}]");
        assert!(
            e.contains("ports[0].role") && e.contains("unknown variant"),
            "{e}"
        );
        // A role change needs a restart.
        let a = Config::parse(
            &format!("{base}ports: [{{device: a}}, {{device: t}}]\n"),
            "t",
        )
        .unwrap();
        let b = Config::parse(
            &format!("{base}ports: [{{device: a}}, {{device: t, role: exception}}]\n"),
            "t",
        )
        .unwrap();
        assert_eq!(a.restart_needed(&b), Some("ports"));
    }

    #[test]
    fn exception_section_local_pods_and_snat_addresses() {
        let base = "ports: [{device: a, addresses: [198.18.0.1/24, 2001:2::1/64]}, {device: t, role: exception}]
";
        let text = format!(
            "{base}exception:\n  local_pod_cidrs: [198.18.64.0/24, \"2001:2:0:64::/64\"]\n  snat_addresses: [198.18.0.250, \"2001:2::fa\"]\n"
        );
        let c = Config::parse(&text, "t").unwrap();
        // The local pod CIDRs are routes onto the exception port.
        let spec = c.table_spec().unwrap();
        let to_kernel: Vec<_> = spec
            .routes
            .iter()
            .map(|r| (r.prefix, r.len, r.port, r.via))
            .collect();
        assert_eq!(
            to_kernel,
            vec![
                (Addr::v4([198, 18, 64, 0]), 24, 1, None),
                (
                    "2001:2:0:64::".parse::<IpAddr>().unwrap().into(),
                    64,
                    1,
                    None
                ),
            ]
        );
        let x = c.exception().unwrap();
        assert_eq!(x.snat_v4, Some(Addr::v4([198, 18, 0, 250])));
        assert_eq!(
            x.snat_v6,
            Some("2001:2::fa".parse::<IpAddr>().unwrap().into())
        );
        assert_eq!(c.dataplane(vec![1]).exception, Some(x));
        // The Node's pod CIDRs join them (once each).
        let pods = [
            (Addr::v4([198, 18, 64, 0]), 24),
            (Addr::v4([198, 18, 67, 0]), 24),
        ];
        let spec = c.table_spec_with_pods(&pods).unwrap();
        assert_eq!(spec.routes.len(), 3);
        assert_eq!(
            spec.routes[2],
            Route {
                prefix: Addr::v4([198, 18, 67, 0]),
                len: 24,
                port: 1,
                via: None
            }
        );
        let plain =
            Config::parse("ports: [{device: a, addresses: [198.18.0.1/24]}]\n", "t").unwrap();
        assert!(plain.table_spec_with_pods(&pods).unwrap().routes.is_empty());
        // Pod CIDRs reload; SNAT addresses need a restart.
        let d = Config::parse(&text.replace("198.18.64.0/24", "198.18.66.0/24"), "t").unwrap();
        assert_eq!(c.restart_needed(&d), None);
        let d = Config::parse(&text.replace("198.18.0.250", "198.18.0.251"), "t").unwrap();
        assert_eq!(c.restart_needed(&d), Some("exception.snat_addresses"));
        let err = |ports: &str, exception: &str| {
            Config::parse(&format!("ports: {ports}\nexception: {exception}\n"), "t")
                .unwrap_err()
                .to_string()
        };
        let ports = "[{device: a, addresses: [198.18.0.1/24]}, {device: t, role: exception}]";
        let e = err("[{device: a}]", "{local_pod_cidrs: [198.18.64.0/24]}");
        assert!(
            e.contains("exception") && e.contains("needs an exception port"),
            "{e}"
        );
        let e = err(ports, "{local_pod_cidrs: [198.18.64.0]}");
        assert!(e.contains("exception.local_pod_cidrs[0]"), "{e}");
        let e = err(ports, "{snat_addresses: [198.18.0.250, 198.18.0.251]}");
        assert!(
            e.contains("exception.snat_addresses[1]") && e.contains("one address per family"),
            "{e}"
        );
        let e = err(ports, "{snat_addresses: [198.18.0.1]}");
        assert!(
            e.contains("exception.snat_addresses[0]") && e.contains("node address"),
            "{e}"
        );
        let e = err(ports, "{snat_addresses: [0.0.0.0]}");
        assert!(e.contains("not a unicast address"), "{e}");
        let e = err(ports, "{pod_cidrs: []}");
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn kubernetes_section() {
        let c = Config::parse(GOOD, "t").unwrap();
        assert_eq!(c.kubernetes, KubernetesConfig::default());
        assert_eq!(c.kubernetes.sync_period, Duration::from_secs(30));
        assert_eq!(c.kubernetes.min_sync_period, Duration::from_secs(1));
        assert_eq!(c.nodeport_addresses().unwrap().len(), 2);
        let text = format!(
            "{GOOD}kubernetes:\n  kubeconfig: /etc/k.conf\n  hostname_override: node-a\n  sync_period: 1m\n  min_sync_period: 200ms\n  nodeport_addresses: [2001:2::/48]\n  bind_address: 198.18.0.1\n  healthz_bind_address: 127.0.0.1:10256\n  oom_score_adj: -999\n"
        );
        let c = Config::parse(&text, "t").unwrap();
        let k = &c.kubernetes;
        assert_eq!(k.kubeconfig.as_deref(), Some("/etc/k.conf"));
        assert_eq!(k.hostname_override.as_deref(), Some("node-a"));
        assert_eq!(k.sync_period, Duration::from_secs(60));
        assert_eq!(k.min_sync_period, Duration::from_millis(200));
        assert_eq!(k.bind_address, Some("198.18.0.1".parse().unwrap()));
        assert_eq!(
            k.healthz_bind_address,
            Some("127.0.0.1:10256".parse().unwrap())
        );
        assert_eq!(k.oom_score_adj, Some(-999));
        assert_eq!(
            c.nodeport_addresses().unwrap(),
            ["2001:2::1".parse::<IpAddr>().unwrap()]
        );
        for (bad, field) in [
            ("sync_period: 1m", "sync_period: 0s"),
            (
                "nodeport_addresses: [2001:2::/48]",
                "nodeport_addresses: [2001:2::/48, lo]",
            ),
            ("oom_score_adj: -999", "oom_score_adj: -1001"),
        ] {
            let e = err(&text.replace(bad, field));
            let name = field.split(':').next().unwrap();
            assert!(e.contains(&format!("kubernetes.{name}")), "{e}");
        }
        let e = err(&text.replace("kubeconfig:", "kube_config:"));
        assert!(e.contains("kubernetes: unknown field `kube_config`"), "{e}");
        let mut b = c.clone();
        b.kubernetes.nodeport_addresses.clear();
        assert_eq!(c.restart_needed(&b), None);
        b.kubernetes.min_sync_period = Duration::from_secs(2);
        assert_eq!(c.restart_needed(&b), Some("kubernetes"));
    }

    #[test]
    fn auto_lcores_follow_the_cpuset() {
        assert_eq!(lcores_from_cpu_list("2-4,7").unwrap(), "0@2,1@3,2@4,3@7");
        assert_eq!(lcores_from_cpu_list("0,1").unwrap(), "0@0,1@1");
        for bad in ["3", "", "a-b", "4-2"] {
            let e = lcores_from_cpu_list(bad).unwrap_err().to_string();
            assert!(e.contains("eal.lcores: auto"), "{bad}: {e}");
        }
        let c = Config::parse("eal: {lcores: auto}\nports: [{device: a}]\n", "t").unwrap();
        assert_eq!(c.eal_args()[1], "auto");
        // This process's own affinity (at least one CPU; two for a worker).
        match c.eal_args_resolved() {
            Ok(a) => assert!(a[1].starts_with("0@"), "{a:?}"),
            Err(e) => assert!(e.to_string().contains("leave no worker"), "{e}"),
        }
    }

    #[test]
    fn structural_errors_name_the_path() {
        let e = err("ports: [{device: a, mtu: big}]\n");
        assert!(e.contains("ports[0].mtu: invalid type"), "{e}");
        let e = err("ports: [{device: a}]\ntimeouts: {udp: 3x}\n");
        assert!(e.contains("timeouts.udp:"), "{e}");
    }

    #[test]
    fn restart_needed_only_for_structural_changes() {
        let a = Config::parse(GOOD, "a").unwrap();
        let mut b = a.clone();
        b.services[0].backends.pop();
        b.routes.clear();
        assert_eq!(a.restart_needed(&b), None);
        b.workers.sessions = 5;
        assert_eq!(a.restart_needed(&b), Some("workers"));
    }
}
