//! kube-proxy's configuration file, `KubeProxyConfiguration`
//! (`kubeproxy.config.k8s.io/v1alpha1`), with a `dpdk:` section for what
//! kube-proxy does not have (EAL, ports, routes, neighbours, workers).
//!
//! Every field of v1alpha1 is modelled (`deny_unknown_fields` at every level,
//! so a typo fails with its path) and either mapped onto [`Config`] or
//! accepted and ignored (the iptables/ipvs/nftables/winkernel sections, with
//! one info log). Durations are Go's (`30s`, `1m0s`, `24h0m0s`); as in
//! kube-proxy's defaulting, a zero duration means "unset". Values that cannot
//! work here (`mode: iptables`, `detectLocalMode: NodeCIDR`, ...) are errors
//! naming the field.
//!
//! | KubeProxyConfiguration | [`Config`] |
//! |---|---|
//! | `clientConnection.kubeconfig` | `kubernetes.kubeconfig` |
//! | `hostnameOverride` | `kubernetes.hostname_override` |
//! | `bindAddress` | `kubernetes.bind_address` (the `primary` NodePort address; `::` → IPv6 defaults) |
//! | `healthzBindAddress` | `kubernetes.healthz_bind_address` |
//! | `metricsBindAddress` | `admin.bind` (default `127.0.0.1:10249`) |
//! | `syncPeriod`, `minSyncPeriod` (or under `iptables`/`nftables`/`ipvs`) | `kubernetes.sync_period`, `kubernetes.min_sync_period` |
//! | `clusterCIDR` (comma separated) | `cluster_cidrs` |
//! | `masqueradeAll` (or `iptables.`/`nftables.masqueradeAll`) | `masquerade_all` |
//! | `nodePortAddresses` | `kubernetes.nodeport_addresses` |
//! | `oomScoreAdj` | `kubernetes.oom_score_adj` |
//! | `conntrack.tcpEstablishedTimeout`, `udpTimeout`, `udpStreamTimeout` | `timeouts.tcp_established`, `udp`, `udp_stream` (`tcpCloseWaitTimeout` is checked, not applied: no CLOSE_WAIT state) |
//! | `dpdk.{eal,ports,routes,neighbors,exception,workers,timeouts,services,load_balancing,service_cidrs,kernel_routes,metrics}` | the native sections of the same names |
//! | `ipvs.scheduler` `rr`, `lc`/`wlc`, `sh`, `mh` (when `dpdk.load_balancing` is unset) | `load_balancing` `round-robin`, `least-connections`, `source-hash`, `maglev` (other schedulers: warning, `maglev`) |
use crate::config::{
    default_algorithm, from_yaml, invalid, parse_nodeport_address, parse_prefix, Config, EalConfig,
    ExceptionConfig, KubernetesConfig, NeighborConfig, PortConfig, RouteConfig, ServiceConfig,
    TimeoutsConfig, WorkersConfig,
};
use crate::{duration, Error, Result};
use dataplane::table::Algorithm;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The only `apiVersion` understood.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The `kind`.
pub const KIND: &str = "KubeProxyConfiguration";

/// True when a YAML document claims to be a Kubernetes object (has
/// `apiVersion` or `kind`): it is then parsed, and checked, as a
/// `KubeProxyConfiguration`.
pub fn is_kube_proxy_configuration(doc: &serde_yaml::Value) -> bool {
    doc.get("apiVersion").is_some() || doc.get("kind").is_some()
}

/// `KubeProxyConfiguration`, v1alpha1. Fields are `Option` because
/// generated files (kubeadm, `kube-proxy --write-config-to`) write `null`
/// for unset pointers. Fields that are only accepted are never read
/// (`dead_code` allowed on these structs for that reason).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KubeProxyConfiguration {
    api_version: Option<String>,
    kind: Option<String>,
    feature_gates: Option<BTreeMap<String, bool>>,
    client_connection: Option<ClientConnection>,
    logging: Option<Logging>,
    hostname_override: Option<String>,
    bind_address: Option<String>,
    healthz_bind_address: Option<String>,
    metrics_bind_address: Option<String>,
    bind_address_hard_fail: Option<bool>,
    enable_profiling: Option<bool>,
    show_hidden_metrics_for_version: Option<String>,
    mode: Option<String>,
    iptables: Option<IptablesConfiguration>,
    ipvs: Option<IpvsConfiguration>,
    nftables: Option<NftablesConfiguration>,
    winkernel: Option<WinkernelConfiguration>,
    detect_local_mode: Option<String>,
    detect_local: Option<DetectLocalConfiguration>,
    #[serde(rename = "clusterCIDR")]
    cluster_cidr: Option<String>,
    node_port_addresses: Option<Vec<String>>,
    oom_score_adj: Option<i32>,
    conntrack: Option<ConntrackConfiguration>,
    config_sync_period: Option<String>,
    port_range: Option<String>,
    windows_run_as_service: Option<bool>,
    /// Top-level, as in kube-proxy's internal configuration; v1alpha1 files
    /// have them under `iptables`/`ipvs`/`nftables` (read there too).
    sync_period: Option<String>,
    min_sync_period: Option<String>,
    /// Top-level, as in kube-proxy's internal configuration; v1alpha1
    /// files: `iptables.masqueradeAll` / `nftables.masqueradeAll`.
    masquerade_all: Option<bool>,
    /// This proxy's dataplane.
    dpdk: Option<DpdkConfiguration>,
}

/// component-base `ClientConnectionConfiguration`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ClientConnection {
    kubeconfig: Option<String>,
    accept_content_types: Option<String>,
    content_type: Option<String>,
    qps: Option<f64>,
    burst: Option<i32>,
}

/// component-base `LoggingConfiguration` (accepted; logging is configured
/// with `RUST_LOG`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct Logging {
    format: Option<String>,
    /// Nanoseconds or a duration string.
    flush_frequency: Option<serde_yaml::Value>,
    verbosity: Option<u32>,
    vmodule: Option<Vec<VModuleItem>>,
    /// Per-format options (`json`, `text`).
    options: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct VModuleItem {
    file_pattern: Option<String>,
    verbosity: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct IptablesConfiguration {
    masquerade_bit: Option<i32>,
    masquerade_all: Option<bool>,
    localhost_node_ports: Option<bool>,
    #[serde(rename = "snatNodeInternalIP")]
    snat_node_internal_ip: Option<bool>,
    sync_period: Option<String>,
    min_sync_period: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct IpvsConfiguration {
    sync_period: Option<String>,
    min_sync_period: Option<String>,
    scheduler: Option<String>,
    #[serde(rename = "excludeCIDRs")]
    exclude_cidrs: Option<Vec<String>>,
    #[serde(rename = "strictARP")]
    strict_arp: Option<bool>,
    tcp_timeout: Option<String>,
    tcp_fin_timeout: Option<String>,
    udp_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct NftablesConfiguration {
    masquerade_bit: Option<i32>,
    masquerade_all: Option<bool>,
    sync_period: Option<String>,
    min_sync_period: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct WinkernelConfiguration {
    network_name: Option<String>,
    source_vip: Option<String>,
    #[serde(rename = "enableDSR")]
    enable_dsr: Option<bool>,
    root_hns_endpoint_name: Option<String>,
    forward_health_check_vip: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct DetectLocalConfiguration {
    bridge_interface: Option<String>,
    interface_name_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ConntrackConfiguration {
    max_per_core: Option<i32>,
    min: Option<i32>,
    tcp_established_timeout: Option<String>,
    tcp_close_wait_timeout: Option<String>,
    tcp_be_liberal: Option<bool>,
    udp_timeout: Option<String>,
    udp_stream_timeout: Option<String>,
}

/// The `dpdk:` section: the native configuration's dataplane sections, with
/// the same (snake_case) field names. `admin` is not here: the admin server
/// listens on `metricsBindAddress`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DpdkConfiguration {
    #[serde(default)]
    eal: EalConfig,
    ports: Vec<PortConfig>,
    #[serde(default)]
    routes: Vec<RouteConfig>,
    #[serde(default)]
    neighbors: Vec<NeighborConfig>,
    #[serde(default)]
    exception: ExceptionConfig,
    #[serde(default)]
    workers: WorkersConfig,
    /// Session timeouts; the `conntrack` timeouts, when set, win.
    #[serde(default)]
    timeouts: TimeoutsConfig,
    /// Static Service ports, served besides the cluster's.
    #[serde(default)]
    services: Vec<ServiceConfig>,
    /// The node-wide load-balancing algorithm (wins over `ipvs.scheduler`).
    #[serde(default)]
    load_balancing: Option<String>,
    /// Service CIDRs (the API server's `--service-cluster-ip-range`).
    #[serde(default)]
    service_cidrs: Vec<String>,
    /// Routes toward the exception port in the host kernel.
    #[serde(default)]
    kernel_routes: crate::config::KernelRoutesConfig,
    /// Per-backend metrics.
    #[serde(default)]
    metrics: crate::config::MetricsConfig,
}

/// Parses and validates a `KubeProxyConfiguration` (`origin` names the text
/// in structural errors).
pub fn parse(text: &str, origin: &str) -> Result<Config> {
    let kpc: KubeProxyConfiguration = from_yaml(text, origin)?;
    kpc.into_config()
}

/// A non-empty string.
fn set(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A duration field; zero and unset are both `None` (kube-proxy defaults them).
fn dur(s: &Option<String>, field: &str) -> Result<Option<Duration>> {
    match set(s) {
        None => Ok(None),
        Some(v) => Ok(Some(duration::field(v, field)?).filter(|d| !d.is_zero())),
    }
}

fn socket_addr(s: &Option<String>, field: &str) -> Result<Option<SocketAddr>> {
    set(s)
        .map(|v| {
            v.parse::<SocketAddr>()
                .map_err(|_| invalid(field, format!("{v:?} is not IP:PORT")))
        })
        .transpose()
}

/// The first set duration among `fields` (name, value), in order.
fn first_dur(fields: &[(&str, &Option<String>)]) -> Result<Option<Duration>> {
    let mut found = None;
    for (name, v) in fields {
        // Every one is checked, even when an earlier one is used.
        let d = dur(v, name)?;
        found = found.or(d);
    }
    Ok(found)
}

impl KubeProxyConfiguration {
    fn into_config(self) -> Result<Config> {
        match set(&self.api_version) {
            Some(API_VERSION) => {}
            None => {
                return Err(invalid(
                    "apiVersion",
                    format!("missing; must be {API_VERSION:?}"),
                ))
            }
            Some(v) => {
                return Err(invalid(
                    "apiVersion",
                    format!("{v:?} is not supported; must be {API_VERSION:?}"),
                ))
            }
        }
        match set(&self.kind) {
            Some(KIND) => {}
            None => return Err(invalid("kind", format!("missing; must be {KIND:?}"))),
            Some(k) => return Err(invalid("kind", format!("{k:?} is not {KIND:?}"))),
        }
        match set(&self.mode) {
            None | Some("dpdk") => {}
            Some(m) => {
                let why = "this proxy is the DPDK dataplane (set \"dpdk\" or leave it empty)";
                return Err(invalid("mode", format!("{m:?} is not supported: {why}")));
            }
        }
        match set(&self.detect_local_mode) {
            None | Some("ClusterCIDR") => {}
            Some(m @ ("NodeCIDR" | "BridgeInterface" | "InterfaceNamePrefix")) => {
                let why = "by the DPDK dataplane: use \"ClusterCIDR\"";
                return Err(invalid(
                    "detectLocalMode",
                    format!("{m:?} is not supported {why}"),
                ));
            }
            Some(m) => {
                let modes = "ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix";
                return Err(invalid("detectLocalMode", format!("{m:?} is not {modes}")));
            }
        }
        let Some(dpdk) = self.dpdk else {
            return Err(invalid(
                "dpdk",
                "missing: the dataplane's eal, ports, ... (see README: KubeProxyConfiguration)",
            ));
        };

        let mut cluster_cidrs = Vec::new();
        for c in set(&self.cluster_cidr)
            .into_iter()
            .flat_map(|c| c.split(','))
        {
            let c = c.trim();
            parse_prefix(c, "clusterCIDR")?;
            cluster_cidrs.push(c.to_string());
        }
        let mut nodeport_addresses = Vec::new();
        for (i, a) in self.node_port_addresses.iter().flatten().enumerate() {
            parse_nodeport_address(a, &format!("nodePortAddresses[{i}]"))?;
            nodeport_addresses.push(a.trim().to_string());
        }
        let bind_address = set(&self.bind_address)
            .map(|b| {
                b.parse::<IpAddr>()
                    .map_err(|_| invalid("bindAddress", format!("{b:?} is not an IP address")))
            })
            .transpose()?;
        let v6 = bind_address.is_some_and(|b| b.is_ipv6());
        let healthz = socket_addr(&self.healthz_bind_address, "healthzBindAddress")?
            .or_else(|| v6.then(|| "[::]:10256".parse().expect("static address")));
        let metrics = socket_addr(&self.metrics_bind_address, "metricsBindAddress")?.unwrap_or(
            if v6 { "[::1]:10249" } else { "127.0.0.1:10249" }
                .parse()
                .expect("static address"),
        );
        if let Some(o) = self.oom_score_adj {
            if !(-1000..=1000).contains(&o) {
                return Err(invalid(
                    "oomScoreAdj",
                    format!("{o} is not in -1000..=1000"),
                ));
            }
        }
        dur(&self.config_sync_period, "configSyncPeriod")?;

        let ipt = self.iptables.unwrap_or_default();
        let nft = self.nftables.unwrap_or_default();
        let ipvs = self.ipvs.unwrap_or_default();
        for (name, v) in [
            ("ipvs.tcpTimeout", &ipvs.tcp_timeout),
            ("ipvs.tcpFinTimeout", &ipvs.tcp_fin_timeout),
            ("ipvs.udpTimeout", &ipvs.udp_timeout),
        ] {
            dur(v, name)?;
        }
        let load_balancing = match (dpdk.load_balancing, set(&ipvs.scheduler)) {
            (Some(a), _) => a,
            (None, Some(s)) => match scheduler_algorithm(s) {
                Some(a) => a.name().to_string(),
                None => {
                    tracing::warn!(
                        scheduler = s,
                        "ipvs.scheduler has no equivalent here (rr, lc/wlc, sh and mh map to round-robin, least-connections, source-hash and maglev): using maglev"
                    );
                    default_algorithm()
                }
            },
            (None, None) => default_algorithm(),
        };
        let sync_period = first_dur(&[
            ("syncPeriod", &self.sync_period),
            ("iptables.syncPeriod", &ipt.sync_period),
            ("nftables.syncPeriod", &nft.sync_period),
            ("ipvs.syncPeriod", &ipvs.sync_period),
        ])?;
        let min_sync_period = first_dur(&[
            ("minSyncPeriod", &self.min_sync_period),
            ("iptables.minSyncPeriod", &ipt.min_sync_period),
            ("nftables.minSyncPeriod", &nft.min_sync_period),
            ("ipvs.minSyncPeriod", &ipvs.min_sync_period),
        ])?;
        for (name, bit) in [
            ("iptables.masqueradeBit", ipt.masquerade_bit),
            ("nftables.masqueradeBit", nft.masquerade_bit),
        ] {
            if bit.is_some_and(|b| !(0..=31).contains(&b)) {
                return Err(invalid(name, "must be in 0..=31"));
            }
        }
        let ignored: Vec<&str> = [
            (
                "iptables",
                ipt.localhost_node_ports.is_some()
                    || ipt.masquerade_bit.is_some()
                    || ipt.snat_node_internal_ip.is_some(),
            ),
            (
                "ipvs",
                ipvs.scheduler.is_some()
                    || ipvs.exclude_cidrs.is_some()
                    || ipvs.strict_arp.is_some(),
            ),
            ("nftables", nft.masquerade_bit.is_some()),
            ("winkernel", self.winkernel.is_some()),
            ("logging", self.logging.is_some()),
            (
                "featureGates",
                self.feature_gates.as_ref().is_some_and(|f| !f.is_empty()),
            ),
            ("enableProfiling", self.enable_profiling == Some(true)),
            ("detectLocal", self.detect_local.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        if !ignored.is_empty() {
            tracing::info!(
                ?ignored,
                "KubeProxyConfiguration: settings of other proxy modes, logging and feature gates are accepted and ignored"
            );
        }

        let ct = self.conntrack.unwrap_or_default();
        for (name, v) in [
            ("conntrack.maxPerCore", ct.max_per_core),
            ("conntrack.min", ct.min),
        ] {
            if v.is_some_and(|v| v < 0) {
                return Err(invalid(name, "must be >= 0"));
            }
        }
        let mut timeouts = dpdk.timeouts;
        // Checked but not applied: conntrack's CLOSE_WAIT (one side closed)
        // has no state of its own here; our `tcp_fin` covers every state
        // after a FIN, where conntrack uses 2 minutes (FIN_WAIT, TIME_WAIT),
        // so kube-proxy's 1 h default would hold closed sessions for an hour.
        if dur(&ct.tcp_close_wait_timeout, "conntrack.tcpCloseWaitTimeout")?.is_some() {
            tracing::info!("conntrack.tcpCloseWaitTimeout is accepted and ignored (no CLOSE_WAIT state; timeouts.tcp_fin applies after a FIN)");
        }
        for (name, v, slot) in [
            (
                "conntrack.tcpEstablishedTimeout",
                &ct.tcp_established_timeout,
                &mut timeouts.tcp_established,
            ),
            ("conntrack.udpTimeout", &ct.udp_timeout, &mut timeouts.udp),
            (
                "conntrack.udpStreamTimeout",
                &ct.udp_stream_timeout,
                &mut timeouts.udp_stream,
            ),
        ] {
            if let Some(d) = dur(v, name)? {
                *slot = d;
            }
        }

        let defaults = KubernetesConfig::default();
        let config = Config {
            eal: dpdk.eal,
            ports: dpdk.ports,
            routes: dpdk.routes,
            neighbors: dpdk.neighbors,
            exception: dpdk.exception,
            workers: dpdk.workers,
            timeouts,
            admin: crate::config::AdminConfig { bind: metrics },
            metrics: dpdk.metrics,
            masquerade_all: self.masquerade_all.unwrap_or(false)
                || ipt.masquerade_all.unwrap_or(false)
                || nft.masquerade_all.unwrap_or(false),
            cluster_cidrs,
            service_cidrs: dpdk.service_cidrs,
            kernel_routes: dpdk.kernel_routes,
            services: dpdk.services,
            load_balancing,
            kubernetes: KubernetesConfig {
                kubeconfig: set(&self.client_connection.and_then(|c| c.kubeconfig))
                    .map(String::from),
                hostname_override: set(&self.hostname_override).map(String::from),
                sync_period: sync_period.unwrap_or(defaults.sync_period),
                min_sync_period: min_sync_period.unwrap_or(defaults.min_sync_period),
                nodeport_addresses,
                bind_address: bind_address.filter(|b| !b.is_unspecified()),
                healthz_bind_address: healthz,
                oom_score_adj: self.oom_score_adj,
            },
        };
        config.validate().map_err(in_dpdk_section)?;
        Ok(config)
    }
}

/// The algorithm an IPVS scheduler name stands for, when there is one.
fn scheduler_algorithm(s: &str) -> Option<Algorithm> {
    match s {
        "rr" => Some(Algorithm::RoundRobin),
        "sh" => Some(Algorithm::SourceHash),
        "mh" => Some(Algorithm::Maglev),
        // Kubernetes endpoints have no weights: weighted least-connection
        // is least-connection.
        "lc" | "wlc" => Some(Algorithm::LeastConnections),
        _ => None,
    }
}

/// Names a dataplane field by its path in this format (`dpdk.ports[0].mtu`).
fn in_dpdk_section(e: Error) -> Error {
    const DPDK: [&str; 10] = [
        "eal",
        "ports",
        "routes",
        "neighbors",
        "workers",
        "timeouts",
        "services",
        "load_balancing",
        "service_cidrs",
        "kernel_routes",
    ];
    match e {
        Error::Invalid { field, msg }
            if DPDK.iter().any(|s| {
                field
                    .strip_prefix(s)
                    .is_some_and(|r| r.is_empty() || r.starts_with(['.', '[']))
            }) =>
        {
            Error::Invalid {
                field: format!("dpdk.{field}"),
                msg,
            }
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodePortAddress;

    /// What kubeadm / `kube-proxy --write-config-to` write (nulls, `0s`
    /// for unset durations, every section present), plus a `dpdk:` section.
    const KUBEADM: &str = r#"
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 10
  contentType: application/vnd.kubernetes.protobuf
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 5
clusterCIDR: 198.18.128.0/17,2001:2:0:8000::/56
configSyncPeriod: 15m0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
featureGates: {}
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: ""
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
dpdk:
  eal:
    lcores: "0@0,1@2"
    pci: ["0000:3b:00.0"]
  ports:
    - device: "0000:3b:00.0"
      addresses: ["198.18.0.1/24", "198.18.5.1/24", "2001:2::1/64"]
"#;

    fn parse_ok(text: &str) -> Config {
        Config::parse(text, "t").unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn err(text: &str) -> String {
        Config::parse(text, "t").unwrap_err().to_string()
    }

    /// KUBEADM with `key: old` (a whole line, at any indent) replaced.
    fn with(key_line: &str, new: &str) -> String {
        assert!(KUBEADM.contains(key_line), "{key_line}");
        KUBEADM.replacen(key_line, new, 1)
    }

    /// A minimal file: the header, `extra`, and a one-port dpdk section.
    fn minimal(extra: &str) -> String {
        format!("apiVersion: {API_VERSION}\nkind: {KIND}\n{extra}\ndpdk:\n  ports: [{{device: a, addresses: [198.18.0.1/24, 198.18.1.1/24, 2001:2::1/64]}}]\n")
    }

    #[test]
    fn service_cidrs_and_kernel_routes_in_the_dpdk_section() {
        let text = minimal("").replace(
            "dpdk:\n",
            "dpdk:\n  service_cidrs: [198.18.100.0/24]\n  kernel_routes: {enabled: false}\n",
        );
        let c = parse_ok(&text);
        assert_eq!(c.service_cidrs, ["198.18.100.0/24"]);
        assert!(!c.kernel_routes.enabled);
        let e = err(&text.replace("198.18.100.0/24", "198.18.100.0/99"));
        assert!(e.contains("dpdk.service_cidrs[0]"), "{e}");
        let e = err(&text.replace("enabled: false", "protocol: 2"));
        assert!(e.contains("dpdk.kernel_routes.protocol"), "{e}");
    }

    #[test]
    fn load_balancing_from_the_dpdk_section_or_ipvs_scheduler() {
        let lb = |extra: &str, dpdk: &str| {
            let text = minimal(extra) + dpdk;
            Config::parse(&text, "t").map(|c| c.load_balancing)
        };
        assert_eq!(lb("", "").unwrap(), "maglev");
        assert_eq!(lb("ipvs: {scheduler: rr}", "").unwrap(), "round-robin");
        assert_eq!(lb("ipvs: {scheduler: sh}", "").unwrap(), "source-hash");
        assert_eq!(lb("ipvs: {scheduler: mh}", "").unwrap(), "maglev");
        assert_eq!(lb("ipvs: {scheduler: \"\"}", "").unwrap(), "maglev");
        assert_eq!(
            lb("ipvs: {scheduler: lc}", "").unwrap(),
            "least-connections"
        );
        assert_eq!(
            lb("ipvs: {scheduler: wlc}", "").unwrap(),
            "least-connections"
        );
        // No equivalent: a warning and the default, not a failed start.
        assert_eq!(lb("ipvs: {scheduler: sed}", "").unwrap(), "maglev");
        // The dpdk section wins.
        let c = lb("ipvs: {scheduler: rr}", "  load_balancing: random\n").unwrap();
        assert_eq!(c, "random");
        let m = Config::parse(
            &(minimal("") + "  metrics: {per_backend_services: 7}\n"),
            "t",
        )
        .unwrap();
        assert_eq!(m.metrics.per_backend_services, 7);
        let e = lb("", "  load_balancing: fastest\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("dpdk.load_balancing: \"fastest\" is not a load-balancing algorithm"),
            "{e}"
        );
    }

    #[test]
    fn kubeadm_output_parses_with_kube_proxy_defaults() {
        let c = parse_ok(KUBEADM);
        let k = &c.kubernetes;
        assert_eq!(
            k.kubeconfig.as_deref(),
            Some("/var/lib/kube-proxy/kubeconfig.conf")
        );
        assert_eq!(k.hostname_override, None);
        assert_eq!(k.sync_period, Duration::from_secs(30));
        assert_eq!(k.min_sync_period, Duration::from_secs(1));
        assert_eq!(k.bind_address, None, "0.0.0.0 is no primary address");
        assert_eq!(k.healthz_bind_address, None);
        assert!(k.nodeport_addresses.is_empty());
        assert_eq!(k.oom_score_adj, None);
        assert_eq!(c.admin.bind.to_string(), "127.0.0.1:10249");
        assert_eq!(c.cluster_cidrs, ["198.18.128.0/17", "2001:2:0:8000::/56"]);
        assert!(!c.masquerade_all);
        assert_eq!(c.timeouts, TimeoutsConfig::default(), "0s and null: unset");
        assert_eq!(c.eal.pci, ["0000:3b:00.0"]);
        assert_eq!(c.ports.len(), 1);
        assert!(c.services.is_empty());
        assert_eq!(c.eal_args()[..2], ["--lcores", "0@0,1@2"]);
    }

    #[test]
    fn header_is_checked() {
        let e = err(&KUBEADM.replace(API_VERSION, "kubeproxy.config.k8s.io/v1alpha2"));
        assert!(
            e.contains("apiVersion: \"kubeproxy.config.k8s.io/v1alpha2\" is not supported"),
            "{e}"
        );
        let e = err(&KUBEADM.replace("kind: KubeProxyConfiguration", "kind: KubeletConfiguration"));
        assert!(e.contains("kind: \"KubeletConfiguration\""), "{e}");
        let e = err(&KUBEADM.replace("kind: KubeProxyConfiguration\n", ""));
        assert!(e.contains("kind: missing"), "{e}");
        let e = err(&KUBEADM.replace("apiVersion: kubeproxy.config.k8s.io/v1alpha1\n", ""));
        assert!(e.contains("apiVersion: missing"), "{e}");
        // A native file is not mistaken for one.
        let c = parse_ok("ports: [{device: a}]\n");
        assert_eq!(c.kubernetes, KubernetesConfig::default());
    }

    #[test]
    fn mode_must_be_dpdk_or_empty() {
        assert_eq!(parse_ok(&with("mode: \"\"", "mode: dpdk")).ports.len(), 1);
        for m in ["iptables", "ipvs", "nftables", "kernelspace"] {
            let e = err(&with("mode: \"\"", &format!("mode: {m}")));
            assert!(
                e.contains(&format!("mode: \"{m}\" is not supported")),
                "{e}"
            );
        }
    }

    #[test]
    fn detect_local_mode_cluster_cidr_only() {
        let c = parse_ok(&with(
            "detectLocalMode: \"\"",
            "detectLocalMode: ClusterCIDR",
        ));
        assert_eq!(c.cluster_cidrs.len(), 2);
        for m in ["NodeCIDR", "BridgeInterface", "InterfaceNamePrefix"] {
            let e = err(&with(
                "detectLocalMode: \"\"",
                &format!("detectLocalMode: {m}"),
            ));
            assert!(
                e.contains(&format!("detectLocalMode: \"{m}\" is not supported")),
                "{e}"
            );
        }
        let e = err(&with("detectLocalMode: \"\"", "detectLocalMode: Pods"));
        assert!(
            e.contains("detectLocalMode: \"Pods\" is not ClusterCIDR"),
            "{e}"
        );
    }

    #[test]
    fn cluster_cidr_is_comma_separated() {
        let c = parse_ok(&minimal("clusterCIDR: \" 198.18.128.0/17 \""));
        assert_eq!(c.cluster_cidrs, ["198.18.128.0/17"]);
        let spec = c.table_spec().unwrap();
        assert_eq!(spec.masquerade.cluster_cidrs.len(), 1);
        assert!(parse_ok(&minimal("clusterCIDR: \"\""))
            .cluster_cidrs
            .is_empty());
        let e = err(&minimal("clusterCIDR: 198.18.128.0/17,198.18.0.0"));
        assert!(
            e.contains("clusterCIDR: \"198.18.0.0\" is not ADDR/LEN"),
            "{e}"
        );
    }

    #[test]
    fn node_port_addresses() {
        let c = parse_ok(&minimal("nodePortAddresses: [198.18.1.0/24, primary]"));
        assert_eq!(
            c.kubernetes.nodeport_addresses,
            ["198.18.1.0/24", "primary"]
        );
        // primary: the first address of each family; plus the CIDR's.
        let a: Vec<String> = c
            .nodeport_addresses()
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(a, ["198.18.0.1", "198.18.1.1", "2001:2::1"]);
        // bindAddress names the primary address.
        let c = parse_ok(&minimal(
            "nodePortAddresses: [primary]\nbindAddress: 198.18.1.1",
        ));
        let a: Vec<String> = c
            .nodeport_addresses()
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(a, ["198.18.1.1", "2001:2::1"]);
        let c = parse_ok(&minimal("nodePortAddresses: [all]"));
        assert_eq!(c.nodeport_addresses().unwrap().len(), 3);
        // Unset: primary, kube-proxy's nftables-mode default.
        let c = parse_ok(&minimal(""));
        let a: Vec<String> = c
            .nodeport_addresses()
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(a, ["198.18.0.1", "2001:2::1"]);
        let c = parse_ok(&minimal("nodePortAddresses: [2001:2::/64]"));
        assert_eq!(c.nodeport_addresses().unwrap().len(), 1);
        let e = err(&minimal("nodePortAddresses: [198.18.1.0/24, localhost]"));
        assert!(
            e.contains("nodePortAddresses[1]: \"localhost\" is not supported"),
            "{e}"
        );
        let e = err(&minimal("nodePortAddresses: [eth0]"));
        assert!(
            e.contains("nodePortAddresses[0]: \"eth0\" is not a CIDR"),
            "{e}"
        );
        assert_eq!(
            crate::config::parse_nodeport_address("all", "x").unwrap(),
            NodePortAddress::All
        );
    }

    #[test]
    fn masquerade_all_from_any_of_its_places() {
        assert!(!parse_ok(&minimal("")).masquerade_all);
        assert!(parse_ok(&minimal("masqueradeAll: true")).masquerade_all);
        assert!(parse_ok(&minimal("iptables: {masqueradeAll: true}")).masquerade_all);
        assert!(parse_ok(&minimal("nftables: {masqueradeAll: true}")).masquerade_all);
        let c = parse_ok(&with(
            "  masqueradeAll: false\n  masqueradeBit: null\n  minSyncPeriod",
            "  masqueradeAll: true\n  masqueradeBit: null\n  minSyncPeriod",
        ));
        assert!(c.masquerade_all);
        assert!(c.table_spec().unwrap().masquerade.all);
        let e = err(&minimal("iptables: {masqueradeBit: 32}"));
        assert!(
            e.contains("iptables.masqueradeBit: must be in 0..=31"),
            "{e}"
        );
        let e = err(&minimal("nftables: {masqueradeBit: -1}"));
        assert!(e.contains("nftables.masqueradeBit"), "{e}");
    }

    #[test]
    fn conntrack_timeouts_become_session_timeouts() {
        let c = parse_ok(&minimal(
            "conntrack:\n  tcpEstablishedTimeout: 2h30m\n  tcpCloseWaitTimeout: 1m0s\n  udpTimeout: 45s\n  udpStreamTimeout: 5m\n  tcpBeLiberal: true\n  maxPerCore: 32768\n  min: 131072",
        ));
        let t = c.timeouts();
        assert_eq!(t.tcp_established, 9_000_000);
        // tcpCloseWaitTimeout is checked but not applied (see above).
        assert_eq!(
            t.tcp_fin,
            TimeoutsConfig::default().tcp_fin.as_millis() as u64
        );
        let e = err(&minimal("conntrack: {tcpCloseWaitTimeout: 1q}"));
        assert!(e.contains("conntrack.tcpCloseWaitTimeout"), "{e}");
        assert_eq!(t.udp, 45_000);
        assert_eq!(t.udp_stream, 300_000);
        assert_eq!(
            t.tcp_syn,
            TimeoutsConfig::default().tcp_syn.as_millis() as u64
        );
        let e = err(&minimal("conntrack: {udpTimeout: 3x}"));
        assert!(
            e.contains("conntrack.udpTimeout: \"3x\" is not a duration"),
            "{e}"
        );
        let e = err(&minimal("conntrack: {tcpEstablishedTimeout: 24}"));
        assert!(
            e.contains("conntrack.tcpEstablishedTimeout: \"24\" is not a duration"),
            "{e}"
        );
        let e = err(&minimal("conntrack: {maxPerCore: -1}"));
        assert!(e.contains("conntrack.maxPerCore: must be >= 0"), "{e}");
        let e = err(&minimal("conntrack: {min: -5}"));
        assert!(e.contains("conntrack.min: must be >= 0"), "{e}");
        // conntrack wins over dpdk.timeouts; dpdk.timeouts sets the rest.
        let text = minimal("conntrack: {udpTimeout: 20s}")
            .replace("dpdk:\n", "dpdk:\n  timeouts: {udp: 10s, icmp: 5s}\n");
        let t = parse_ok(&text).timeouts();
        assert_eq!((t.udp, t.icmp), (20_000, 5_000));
    }

    #[test]
    fn sync_periods_top_level_or_per_mode() {
        let k = |extra: &str| parse_ok(&minimal(extra)).kubernetes;
        let s = Duration::from_secs;
        let c = k("syncPeriod: 1m0s\nminSyncPeriod: 500ms");
        assert_eq!(
            (c.sync_period, c.min_sync_period),
            (s(60), Duration::from_millis(500))
        );
        let c = k("iptables: {syncPeriod: 45s, minSyncPeriod: 2s}");
        assert_eq!((c.sync_period, c.min_sync_period), (s(45), s(2)));
        let c = k("nftables: {syncPeriod: 46s, minSyncPeriod: 3s}");
        assert_eq!((c.sync_period, c.min_sync_period), (s(46), s(3)));
        let c = k("ipvs: {syncPeriod: 47s, minSyncPeriod: 4s}");
        assert_eq!((c.sync_period, c.min_sync_period), (s(47), s(4)));
        // Top-level wins; zero is unset.
        let c = k("syncPeriod: 24h0m0s\niptables: {syncPeriod: 45s, minSyncPeriod: 0s}");
        assert_eq!((c.sync_period, c.min_sync_period), (s(86_400), s(1)));
        let e = err(&minimal("ipvs: {minSyncPeriod: soon}"));
        assert!(
            e.contains("ipvs.minSyncPeriod: \"soon\" is not a duration"),
            "{e}"
        );
        let e = err(&minimal("syncPeriod: -1s"));
        assert!(
            e.contains("syncPeriod: \"-1s\" is not a duration (negative)"),
            "{e}"
        );
        let e = err(&minimal("ipvs: {tcpTimeout: 1x}"));
        assert!(e.contains("ipvs.tcpTimeout"), "{e}");
        let e = err(&minimal("configSyncPeriod: 15"));
        assert!(
            e.contains("configSyncPeriod: \"15\" is not a duration"),
            "{e}"
        );
        assert_eq!(k("configSyncPeriod: 15m0s").sync_period, s(30));
    }

    #[test]
    fn bind_addresses() {
        let c = parse_ok(&minimal(
            "healthzBindAddress: 198.18.0.1:10256\nmetricsBindAddress: 0.0.0.0:10249\nbindAddressHardFail: true",
        ));
        assert_eq!(
            c.kubernetes.healthz_bind_address,
            Some("198.18.0.1:10256".parse().unwrap())
        );
        assert_eq!(c.admin.bind.to_string(), "0.0.0.0:10249");
        let c = parse_ok(&minimal("bindAddress: \"::\""));
        assert_eq!(c.admin.bind.to_string(), "[::1]:10249");
        assert_eq!(
            c.kubernetes.healthz_bind_address,
            Some("[::]:10256".parse().unwrap())
        );
        assert_eq!(c.kubernetes.bind_address, None);
        let c = parse_ok(&minimal("bindAddress: 2001:2::1"));
        assert_eq!(
            c.kubernetes.bind_address,
            Some("2001:2::1".parse().unwrap())
        );
        for (field, line) in [
            ("healthzBindAddress", "healthzBindAddress: 0.0.0.0"),
            ("metricsBindAddress", "metricsBindAddress: localhost:10249"),
        ] {
            let e = err(&minimal(line));
            assert!(
                e.contains(&format!("{field}: ")) && e.contains("is not IP:PORT"),
                "{e}"
            );
        }
        let e = err(&minimal("bindAddress: node-a"));
        assert!(
            e.contains("bindAddress: \"node-a\" is not an IP address"),
            "{e}"
        );
    }

    #[test]
    fn client_connection_hostname_oom_and_accepted_fields() {
        let c = parse_ok(&minimal(
            "clientConnection: {kubeconfig: /k, qps: 50, burst: 100, contentType: application/json, acceptContentTypes: application/json}\niptables: {snatNodeInternalIP: true, localhostNodePorts: false}\nipvs: {scheduler: rr, excludeCIDRs: [198.18.9.0/24], strictARP: true}\nhostnameOverride: node-a\noomScoreAdj: -999\nfeatureGates: {SomeGate: true}\nenableProfiling: true\nshowHiddenMetricsForVersion: \"1.30\"\nportRange: \"\"\nwindowsRunAsService: false\nlogging: {format: text, flushFrequency: 5s, verbosity: 2, vmodule: [{filePattern: proxier, verbosity: 4}], options: {json: {infoBufferSize: \"0\"}}}\ndetectLocal: {bridgeInterface: cbr0}\nwinkernel: {networkName: x, sourceVip: 198.18.0.9}",
        ));
        assert_eq!(c.kubernetes.kubeconfig.as_deref(), Some("/k"));
        assert_eq!(c.kubernetes.hostname_override.as_deref(), Some("node-a"));
        assert_eq!(c.kubernetes.oom_score_adj, Some(-999));
        let e = err(&minimal("oomScoreAdj: 1001"));
        assert!(
            e.contains("oomScoreAdj: 1001 is not in -1000..=1000"),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_fail_with_their_path() {
        for (text, want) in [
            (minimal("bogus: 1"), "unknown field `bogus`"),
            (
                minimal("conntrack: {udpTimeoutt: 1s}"),
                "conntrack: unknown field `udpTimeoutt`",
            ),
            (
                minimal("clientConnection: {kubeConfig: /k}"),
                "clientConnection: unknown field `kubeConfig`",
            ),
            (
                minimal("logging: {level: 3}"),
                "logging: unknown field `level`",
            ),
            (
                minimal("iptables: {masqueradeALL: true}"),
                "iptables: unknown field `masqueradeALL`",
            ),
            (
                minimal("ipvs: {strictArp: true}"),
                "ipvs: unknown field `strictArp`",
            ),
            (
                minimal("detectLocal: {bridge: cbr0}"),
                "detectLocal: unknown field `bridge`",
            ),
            (minimal("dpdk2: {}"), "unknown field `dpdk2`"),
            (
                minimal("").replace("device: a", "device: a, adresses: []"),
                "dpdk.ports[0]: unknown field `adresses`",
            ),
            (
                minimal("").replace("dpdk:\n", "dpdk:\n  admin: {bind: \"127.0.0.1:1\"}\n"),
                "dpdk: unknown field `admin`",
            ),
            (
                minimal("conntrack: {udpTimeout: 30}"),
                "conntrack.udpTimeout: \"30\" is not a duration (a number without a unit",
            ),
            (
                minimal("masqueradeAll: yes please"),
                "masqueradeAll: invalid type",
            ),
        ] {
            let e = err(&text);
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn dpdk_section_is_required_and_validated() {
        let e = err(&format!("apiVersion: {API_VERSION}\nkind: {KIND}\n"));
        assert!(e.contains("dpdk: missing"), "{e}");
        let e = err(&minimal("").replace("device: a", "device: a, mtu: 100"));
        assert!(
            e.contains("dpdk.ports[0].mtu: 100 is not in 576..=9600"),
            "{e}"
        );
        let e = err(&minimal("").replace("dpdk:\n", "dpdk:\n  workers: {sessions: 0}\n"));
        assert!(e.contains("dpdk.workers.sessions"), "{e}");
        let text = minimal("").replace(
            "dpdk:\n",
            "dpdk:\n  eal: {lcores: \"0,1,2\", no_huge: true}\n  workers: {sessions: 1024}\n  routes: [{prefix: 198.19.0.0/16, port: 0, via: 198.18.0.254}]\n  neighbors: [{address: 198.18.0.254, mac: \"02:00:00:00:00:fe\", port: 0}]\n  services: [{name: s, vip: 198.18.100.1, port: 80, backends: [198.18.0.11:80]}]\n",
        );
        let c = parse_ok(&text);
        assert_eq!(c.eal.lcores, "0,1,2");
        assert_eq!(c.workers.sessions, 1024);
        let spec = c.table_spec().unwrap();
        assert_eq!(
            (spec.routes.len(), spec.neighbors.len(), spec.services.len()),
            (1, 1, 1)
        );
        let e = err(&text.replace("port: 80,", "port: 80, protocol: SCTPX,"));
        assert!(e.contains("dpdk.services[0].protocol"), "{e}");
        let e = err(&text.replace("port: 0, via", "port: 4, via"));
        assert!(e.contains("dpdk.routes[0].port"), "{e}");
    }
}
