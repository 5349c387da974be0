//! Translation of Kubernetes Services and EndpointSlices into the dataplane's
//! [`ServiceSpec`]s, with kube-proxy's semantics (`pkg/proxy`).
//!
//! Pure: no network, no client. The caller watches Services and
//! EndpointSlices and passes, for one Service, the slices labelled
//! `kubernetes.io/service-name=<name>` in its namespace (slices whose label or
//! namespace do not match are ignored).
//!
//! What kube-proxy does and this module does too:
//! - skips ExternalName Services, Services without a ClusterIP (headless,
//!   `None` or empty), and Services labelled `service.kubernetes.io/headless`
//!   or `service.kubernetes.io/service-proxy-name` (another proxy owns them);
//! - one [`ServiceSpec`] per (Service port × frontend). Frontends: every
//!   `spec.clusterIPs` entry; for NodePort/LoadBalancer Services the
//!   `nodePort` on every node address of the ClusterIP's family;
//!   `spec.externalIPs`; `status.loadBalancer.ingress[].ip` (LoadBalancer
//!   only, and not those with `ipMode: Proxy`, which the load balancer
//!   proxies itself). Each IP family gets only the endpoints of EndpointSlices
//!   of that `addressType`; externalIPs and ingress IPs of a family the
//!   Service has no ClusterIP for are ignored (as kube-proxy's per-family
//!   proxiers do);
//! - endpoints: the slice port with the Service port's name (an unnamed
//!   Service port matches the unnamed slice port) and protocol, so named
//!   `targetPort`s resolve per slice; only `addresses[0]` of an endpoint is
//!   used; endpoints are deduplicated across slices (a node-local duplicate
//!   wins); conditions `ready` (nil: true), `serving` (nil: ready),
//!   `terminating` (nil: false) select ready endpoints, else serving and
//!   terminating ones ([`usable_endpoints`]);
//! - `externalTrafficPolicy: Local`: external frontends use only endpoints on
//!   this node and are not masqueraded, except kube-proxy's short-circuit
//!   ([`ServiceSpec::short_circuit`]): clients in the cluster CIDRs (pods)
//!   and on a node address (the host, masqueraded) get the cluster-wide
//!   endpoints. Other clients keep their IP (the frontends are
//!   [`ServiceSpec::external`], so neither `masqueradeAll` nor the
//!   off-cluster-client rule applies to them, as in kube-proxy, where both
//!   match ClusterIP traffic only). `Cluster` (default): external frontends
//!   masquerade;
//! - `internalTrafficPolicy: Local`: ClusterIP frontends use only node-local
//!   endpoints;
//! - REJECT vs DROP ([`ServiceSpec::no_backends`]): a Service with no usable
//!   endpoint anywhere REJECTs (TCP RST, ICMP(v6) port unreachable); one
//!   with endpoints, but none on this node for a frontend whose policy is
//!   `Local`, DROPs (counted as `no_local_endpoints`; short-circuited
//!   clients still reach the endpoints elsewhere), as kube-proxy does;
//! - `sessionAffinity: ClientIP` with `timeoutSeconds` (default 10800);
//! - `loadBalancerSourceRanges` apply to LoadBalancer frontends only. All
//!   ranges are passed on unfiltered: a range of the other family never
//!   matches a client, so a Service whose ranges are all of the other family
//!   admits no client of this family (kube-proxy does the same);
//! - topology: when every ready endpoint has node hints (`hints.forNodes`,
//!   `trafficDistribution: PreferSameNode`) and one is for this node, only
//!   those; else when every ready endpoint has zone hints and one is for this
//!   node's zone, only the ready endpoints hinted for that zone; else all.
//!   Applied to the cluster-wide endpoint set (not to `Local` policies).
//! - load balancing: the annotation [`ANNOTATION_LOAD_BALANCING`] picks the
//!   Service's algorithm, else the node-wide default
//!   ([`NodeInfo::algorithm`]); an unknown value keeps the default (the
//!   caller reports it, see [`annotated_algorithm`]), never drops the
//!   Service. Affinity still wins; the candidate set is decided first.
//!
//! - protocols `TCP`, `UDP` and `SCTP` (the Kubernetes default is `TCP`);
//!   an SCTP port and a TCP port with the same number are distinct frontends.
//!
//! Not done: FQDN slices are ignored (as kube-proxy does); pods are told
//! apart by the cluster CIDRs only (kube-proxy's `ClusterCIDR` local-traffic
//! detector; no `NodeCIDR`/interface detectors); `healthCheckNodePort`
//! serving is the caller's.
use crate::config::{usable_endpoints, EndpointConditions};
use dataplane::addr::{Addr, Proto, SockAddr};
use dataplane::table::{Algorithm, Frontend, NoBackends, ServiceSpec};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use std::collections::HashMap;
use std::net::IpAddr;

/// Label kube-proxy uses to leave a Service to another proxy.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Label marking a headless Service.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Label linking an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Service annotation selecting its load-balancing algorithm (`maglev`,
/// `round-robin`, `random`, `source-hash`).
pub const ANNOTATION_LOAD_BALANCING: &str = "dpdk-kube-proxy.io/load-balancing";
/// Default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
/// Largest allowed `timeoutSeconds` (Kubernetes validation).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86_400;

/// The node this proxy runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// `metadata.name` of the Node (compared with endpoints' `nodeName`).
    pub name: String,
    /// `topology.kubernetes.io/zone` of the Node, if any.
    pub zone: Option<String>,
    /// Addresses NodePorts are served on (`nodePortAddresses`).
    pub node_addresses: Vec<IpAddr>,
    /// The node-wide load-balancing algorithm.
    pub algorithm: Algorithm,
}

/// The algorithm `svc`'s [`ANNOTATION_LOAD_BALANCING`] asks for: `Ok(None)`
/// without the annotation, `Err(value)` for a value that names none.
pub fn annotated_algorithm(svc: &Service) -> Result<Option<Algorithm>, String> {
    match svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_LOAD_BALANCING))
    {
        None => Ok(None),
        Some(v) => Algorithm::from_name(v.trim())
            .map(Some)
            .ok_or_else(|| v.clone()),
    }
}

/// A Kubernetes object could not be translated; names the object
/// (`namespace/name`) and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// A field of the Service is missing or invalid.
    #[error("{object}: {field}: {msg}")]
    Service {
        /// `namespace/name` of the Service.
        object: String,
        /// JSON path of the field, e.g. `spec.ports[1].port`.
        field: String,
        /// What is wrong.
        msg: String,
    },
    /// A field of an EndpointSlice is invalid.
    #[error("endpointslice {object}: {field}: {msg}")]
    EndpointSlice {
        /// `namespace/name` of the EndpointSlice.
        object: String,
        /// JSON path of the field, e.g. `endpoints[0].addresses[0]`.
        field: String,
        /// What is wrong.
        msg: String,
    },
}

/// IP family, as in `addressType` and `ipFamilies`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    fn of_slice(address_type: &str) -> Option<Family> {
        match address_type {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None, // FQDN: ignored by kube-proxy
        }
    }
}

/// One endpoint for one Service port, as kube-proxy's endpoint cache keeps it.
#[derive(Clone, Debug)]
struct Ep {
    addr: SockAddr,
    cond: EndpointConditions,
    local: bool,
    zones: Vec<String>,
    nodes: Vec<String>,
}

fn object_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

fn parse_proto(p: Option<&str>) -> Result<Proto, String> {
    match p.unwrap_or("TCP") {
        "TCP" => Ok(Proto::Tcp),
        "UDP" => Ok(Proto::Udp),
        "SCTP" => Ok(Proto::Sctp),
        o => Err(format!("{o:?} is not TCP, UDP or SCTP")),
    }
}

fn parse_port(p: i32) -> Result<u16, String> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{p} is not in 1..=65535"))
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address"))
}

fn parse_cidr(s: &str) -> Result<(Addr, u8), String> {
    let s = s.trim();
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not ADDR/LEN"))?;
    let ip = parse_ip(a)?;
    let len: u8 = l
        .parse()
        .map_err(|_| format!("{l:?} is not a prefix length"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("prefix length {len} > {max}"));
    }
    Ok((Addr::from(ip), len))
}

/// The endpoints of every slice port named `port_name` with protocol `proto`,
/// deduplicated by address (a node-local duplicate wins, as in kube-proxy).
fn slice_endpoints(
    slices: &[EndpointSlice],
    svc_ns: Option<&str>,
    svc_name: Option<&str>,
    family: Family,
    port_name: &str,
    proto: Proto,
    node: &NodeInfo,
) -> Result<Vec<Ep>, TranslateError> {
    let mut order: Vec<SockAddr> = Vec::new();
    let mut by_addr: HashMap<SockAddr, Ep> = HashMap::new();
    for slice in slices {
        let meta = &slice.metadata;
        let owner = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SERVICE_NAME))
            .map(String::as_str);
        if owner != svc_name || meta.namespace.as_deref() != svc_ns {
            continue;
        }
        if Family::of_slice(&slice.address_type) != Some(family) {
            continue;
        }
        let serr = |field: String, msg: String| TranslateError::EndpointSlice {
            object: object_name(meta),
            field,
            msg,
        };
        // The slice port for this Service port: same name, same protocol.
        let mut port = None;
        for (i, p) in slice.ports.iter().flatten().enumerate() {
            if p.name.as_deref().unwrap_or("") != port_name {
                continue;
            }
            let pr = parse_proto(p.protocol.as_deref())
                .map_err(|m| serr(format!("ports[{i}].protocol"), m))?;
            if pr != proto {
                continue;
            }
            // A slice port without a number: the target port could not be
            // resolved for these endpoints; kube-proxy ignores it.
            if let Some(n) = p.port {
                port = Some(parse_port(n).map_err(|m| serr(format!("ports[{i}].port"), m))?);
            }
            break;
        }
        let Some(port) = port else { continue };
        for (j, ep) in slice.endpoints.iter().flatten().enumerate() {
            // kube-proxy uses the first address only.
            let Some(a) = ep.addresses.first() else {
                continue;
            };
            let ip = parse_ip(a).map_err(|m| serr(format!("endpoints[{j}].addresses[0]"), m))?;
            if Family::of(&ip) != family {
                return Err(serr(
                    format!("endpoints[{j}].addresses[0]"),
                    format!("{a} is not of addressType {}", slice.address_type),
                ));
            }
            let e = Ep {
                addr: SockAddr::new(Addr::from(ip), port),
                cond: conditions(ep),
                local: ep.node_name.as_deref() == Some(node.name.as_str()),
                zones: ep
                    .hints
                    .iter()
                    .flat_map(|h| h.for_zones.iter().flatten())
                    .map(|z| z.name.clone())
                    .collect(),
                nodes: ep
                    .hints
                    .iter()
                    .flat_map(|h| h.for_nodes.iter().flatten())
                    .map(|n| n.name.clone())
                    .collect(),
            };
            match by_addr.get(&e.addr) {
                Some(_) if !e.local => {}
                Some(_) => {
                    by_addr.insert(e.addr, e);
                }
                None => {
                    order.push(e.addr);
                    by_addr.insert(e.addr, e);
                }
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|a| by_addr.remove(&a))
        .collect())
}

fn conditions(ep: &Endpoint) -> EndpointConditions {
    let c = ep.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    EndpointConditions {
        ready,
        serving: c.and_then(|c| c.serving).unwrap_or(ready),
        terminating: c.and_then(|c| c.terminating).unwrap_or(false),
    }
}

/// kube-proxy's `CategorizeEndpoints`: (cluster-wide endpoints with topology
/// applied, node-local endpoints). The first is empty only when the Service
/// has no usable endpoint at all (kube-proxy's `!hasAnyEndpoints`).
fn categorize(eps: &[Ep], node: &NodeInfo) -> (Vec<SockAddr>, Vec<SockAddr>) {
    let ready = || eps.iter().filter(|e| e.cond.ready);
    let all_node_hints = ready().all(|e| !e.nodes.is_empty());
    let for_node = ready().any(|e| e.nodes.contains(&node.name));
    let all_zone_hints = ready().all(|e| !e.zones.is_empty());
    let zone = node.zone.as_deref().filter(|z| !z.is_empty());
    let for_zone = zone.is_some_and(|z| ready().any(|e| e.zones.iter().any(|n| n == z)));
    let cluster = if all_node_hints && for_node {
        ready()
            .filter(|e| e.nodes.contains(&node.name))
            .map(|e| e.addr)
            .collect()
    } else if all_zone_hints && for_zone {
        let z = zone.unwrap_or_default();
        ready()
            .filter(|e| e.zones.iter().any(|n| n == z))
            .map(|e| e.addr)
            .collect()
    } else {
        let v: Vec<_> = eps.iter().map(|e| (e.addr, e.cond)).collect();
        usable_endpoints(&v)
    };
    let local: Vec<_> = eps
        .iter()
        .filter(|e| e.local)
        .map(|e| (e.addr, e.cond))
        .collect();
    (cluster, usable_endpoints(&local))
}

/// The dataplane entries for `svc` on `node`; see the module docs. Skipped
/// Services give `Ok(vec![])`.
pub fn service_specs(
    svc: &Service,
    slices: &[EndpointSlice],
    node: &NodeInfo,
) -> Result<Vec<ServiceSpec>, TranslateError> {
    let meta = &svc.metadata;
    let object = object_name(meta);
    let err = |field: &str, msg: String| TranslateError::Service {
        object: object.clone(),
        field: field.into(),
        msg,
    };
    if let Some(l) = &meta.labels {
        if l.contains_key(LABEL_SERVICE_PROXY_NAME) || l.contains_key(LABEL_HEADLESS) {
            return Ok(vec![]);
        }
    }
    let Some(spec) = &svc.spec else {
        return Err(err("spec", "missing".into()));
    };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if ty == "ExternalName" {
        return Ok(vec![]);
    }
    let (ips_field, ips): (&str, Vec<&str>) = match &spec.cluster_ips {
        Some(v) if !v.is_empty() => ("spec.clusterIPs", v.iter().map(String::as_str).collect()),
        _ => (
            "spec.clusterIP",
            spec.cluster_ip.iter().map(String::as_str).collect(),
        ),
    };
    if !ips
        .first()
        .is_some_and(|ip| !ip.is_empty() && *ip != "None")
    {
        return Ok(vec![]); // headless
    }
    let mut cluster_ips: Vec<IpAddr> = Vec::new();
    for (i, s) in ips.iter().enumerate() {
        let f = if ips_field == "spec.clusterIP" {
            ips_field.to_string()
        } else {
            format!("{ips_field}[{i}]")
        };
        let ip = parse_ip(s).map_err(|m| err(&f, m))?;
        if cluster_ips.iter().any(|c| Family::of(c) == Family::of(&ip)) {
            return Err(err(&f, "second address of one IP family".into()));
        }
        cluster_ips.push(ip);
    }
    let node_ports_on = matches!(ty, "NodePort" | "LoadBalancer");
    let ext_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let int_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let affinity_timeout = if spec.session_affinity.as_deref() == Some("ClientIP") {
        let t = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds);
        match t {
            None => Some(DEFAULT_AFFINITY_TIMEOUT),
            Some(t) => Some(
                u32::try_from(t)
                    .ok()
                    .filter(|t| (1..=MAX_AFFINITY_TIMEOUT).contains(t))
                    .ok_or_else(|| {
                        err(
                            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                            format!("{t} is not in 1..={MAX_AFFINITY_TIMEOUT}"),
                        )
                    })?,
            ),
        }
    } else {
        None
    };
    let algorithm = annotated_algorithm(svc)
        .ok()
        .flatten()
        .unwrap_or(node.algorithm);
    let mut external_ips = Vec::new();
    for (i, s) in spec.external_ips.iter().flatten().enumerate() {
        external_ips.push(parse_ip(s).map_err(|m| err(&format!("spec.externalIPs[{i}]"), m))?);
    }
    let mut lb_ips = Vec::new();
    if ty == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref());
        for (i, ing) in ingress.into_iter().flatten().enumerate() {
            // Hostname-only ingress has no IP; `ipMode: Proxy` means the load
            // balancer delivers to the node itself, not to the VIP.
            if ing.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            let Some(s) = ing.ip.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            lb_ips.push(
                parse_ip(s).map_err(|m| err(&format!("status.loadBalancer.ingress[{i}].ip"), m))?,
            );
        }
    }
    let mut source_ranges = Vec::new();
    for (i, s) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        source_ranges.push(
            parse_cidr(s).map_err(|m| err(&format!("spec.loadBalancerSourceRanges[{i}]"), m))?,
        );
    }

    let mut out = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let proto = parse_proto(p.protocol.as_deref())
            .map_err(|m| err(&format!("spec.ports[{i}].protocol"), m))?;
        let port = parse_port(p.port).map_err(|m| err(&format!("spec.ports[{i}].port"), m))?;
        let node_port = match p.node_port {
            Some(np) if node_ports_on && np != 0 => {
                Some(parse_port(np).map_err(|m| err(&format!("spec.ports[{i}].nodePort"), m))?)
            }
            _ => None,
        };
        let port_name = p.name.as_deref().unwrap_or("");
        let name = if port_name.is_empty() {
            format!("{object}:{port}")
        } else {
            format!("{object}:{port_name}")
        };
        for cip in &cluster_ips {
            let family = Family::of(cip);
            let eps = slice_endpoints(
                slices,
                meta.namespace.as_deref(),
                meta.name.as_deref(),
                family,
                port_name,
                proto,
                node,
            )?;
            let (cluster, local) = categorize(&eps, node);
            let internal = if int_local { &local } else { &cluster };
            let ext_eps = if ext_local { &local } else { &cluster };
            // kube-proxy REJECTs only when the Service has no usable endpoint
            // anywhere; a `Local` policy without a local endpoint DROPs.
            let no_backends = if cluster.is_empty() {
                NoBackends::Reject
            } else {
                NoBackends::Drop
            };
            let mut push =
                |addr: IpAddr, port: u16, external: bool, ranges: Vec<(Addr, u8)>, kind: &str| {
                    out.push(ServiceSpec {
                        name: format!("{name}{kind}"),
                        frontend: Frontend {
                            addr: SockAddr::new(Addr::from(addr), port),
                            proto,
                        },
                        backends: if external {
                            ext_eps.clone()
                        } else {
                            internal.clone()
                        },
                        no_backends,
                        masquerade: external && !ext_local,
                        external,
                        affinity_timeout,
                        algorithm,
                        source_ranges: ranges,
                        short_circuit: if external && ext_local {
                            cluster.clone()
                        } else {
                            vec![]
                        },
                    });
                };
            push(*cip, port, false, vec![], "");
            if let Some(np) = node_port {
                for a in node
                    .node_addresses
                    .iter()
                    .filter(|a| Family::of(a) == family)
                {
                    push(*a, np, true, vec![], " nodePort");
                }
            }
            for a in external_ips.iter().filter(|a| Family::of(a) == family) {
                push(*a, port, true, vec![], " externalIP");
            }
            for a in lb_ips.iter().filter(|a| Family::of(a) == family) {
                push(*a, port, true, source_ranges.clone(), " loadBalancer");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec as KSpec,
        ServiceStatus, SessionAffinityConfig,
    };
    use k8s_openapi::api::discovery::v1::{
        EndpointConditions as KCond, EndpointHints, EndpointPort, ForNode, ForZone,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use std::collections::BTreeMap;

    fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>()
            }),
            ..Default::default()
        }
    }

    fn port(name: Option<&str>, port: i32, target: IntOrString) -> ServicePort {
        ServicePort {
            name: name.map(Into::into),
            port,
            protocol: Some("TCP".into()),
            target_port: Some(target),
            ..Default::default()
        }
    }

    fn svc(cluster_ips: &[&str], ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: meta("web", &[]),
            spec: Some(KSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: cluster_ips.first().map(|s| s.to_string()),
                cluster_ips: Some(cluster_ips.iter().map(|s| s.to_string()).collect()),
                ports: Some(ports),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn spec_mut(s: &mut Service) -> &mut KSpec {
        s.spec.as_mut().unwrap()
    }

    /// An endpoint: address, node, (ready, serving, terminating) as given.
    fn ep(
        addr: &str,
        node: &str,
        cond: Option<(Option<bool>, Option<bool>, Option<bool>)>,
    ) -> Endpoint {
        Endpoint {
            addresses: vec![addr.into()],
            node_name: Some(node.into()),
            conditions: cond.map(|(ready, serving, terminating)| KCond {
                ready,
                serving,
                terminating,
            }),
            ..Default::default()
        }
    }

    fn slice(
        name: &str,
        ty: &str,
        ports: &[(Option<&str>, i32)],
        eps: Vec<Endpoint>,
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: meta(name, &[(LABEL_SERVICE_NAME, "web")]),
            address_type: ty.into(),
            endpoints: Some(eps),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: n.map(Into::into),
                        port: Some(*p),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    fn node() -> NodeInfo {
        NodeInfo {
            name: "node-a".into(),
            zone: Some("zone-a".into()),
            algorithm: Default::default(),
            node_addresses: vec![
                "198.18.0.1".parse().unwrap(),
                "198.18.1.1".parse().unwrap(),
                "2001:2::1".parse().unwrap(),
            ],
        }
    }

    fn sa(s: &str) -> SockAddr {
        let a: std::net::SocketAddr = s.parse().unwrap();
        SockAddr::new(Addr::from(a.ip()), a.port())
    }

    fn sas(v: &[&str]) -> Vec<SockAddr> {
        v.iter().map(|s| sa(s)).collect()
    }

    fn ready() -> Option<(Option<bool>, Option<bool>, Option<bool>)> {
        None
    }

    /// (frontend, backends, masquerade) summary.
    fn summary(v: &[ServiceSpec]) -> Vec<(String, String, Vec<SockAddr>, bool)> {
        v.iter()
            .map(|s| {
                let mut b = s.backends.clone();
                b.sort();
                (s.name.clone(), s.frontend.addr.to_string(), b, s.masquerade)
            })
            .collect()
    }

    #[test]
    fn cluster_ip_basic() {
        let s = svc(
            &["198.18.100.1"],
            vec![port(None, 80, IntOrString::Int(8080))],
        );
        let sl = slice(
            "web-1",
            "IPv4",
            &[(None, 8080)],
            vec![
                ep("198.18.2.1", "node-a", ready()),
                ep("198.18.2.2", "node-b", Some((Some(true), None, None))),
                ep("198.18.2.3", "node-b", Some((Some(false), None, None))),
            ],
        );
        // The same endpoint in a second slice is deduplicated.
        let dup = slice(
            "web-2",
            "IPv4",
            &[(None, 8080)],
            vec![ep("198.18.2.1", "node-a", ready())],
        );
        let out = service_specs(&s, &[sl, dup], &node()).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].name, "default/web:80");
        assert_eq!(out[0].frontend.addr, sa("198.18.100.1:80"));
        assert_eq!(out[0].frontend.proto, Proto::Tcp);
        assert_eq!(
            out[0].backends,
            sas(&["198.18.2.1:8080", "198.18.2.2:8080"])
        );
        assert!(!out[0].masquerade);
        assert_eq!(out[0].affinity_timeout, None);
        assert!(out[0].source_ranges.is_empty());
    }

    #[test]
    fn slices_of_other_services_are_ignored() {
        let s = svc(
            &["198.18.100.1"],
            vec![port(None, 80, IntOrString::Int(8080))],
        );
        let mut other = slice(
            "db-1",
            "IPv4",
            &[(None, 8080)],
            vec![ep("198.18.2.9", "node-a", ready())],
        );
        other.metadata.labels = Some([(LABEL_SERVICE_NAME.to_string(), "db".to_string())].into());
        let out = service_specs(&s, &[other], &node()).unwrap();
        assert!(out[0].backends.is_empty());
    }

    #[test]
    fn named_target_port_resolves_per_slice() {
        let s = svc(
            &["198.18.100.1"],
            vec![
                port(Some("http"), 80, IntOrString::String("web".into())),
                port(Some("metrics"), 9090, IntOrString::String("metrics".into())),
            ],
        );
        let a = slice(
            "web-a",
            "IPv4",
            &[(Some("http"), 8080), (Some("metrics"), 9100)],
            vec![ep("198.18.2.1", "node-a", ready())],
        );
        let b = slice(
            "web-b",
            "IPv4",
            &[(Some("http"), 8081), (Some("metrics"), 9101)],
            vec![ep("198.18.2.2", "node-b", ready())],
        );
        let out = service_specs(&s, &[a, b], &node()).unwrap();
        assert_eq!(
            summary(&out),
            [
                (
                    "default/web:http".into(),
                    "198.18.100.1:80".into(),
                    sas(&["198.18.2.1:8080", "198.18.2.2:8081"]),
                    false
                ),
                (
                    "default/web:metrics".into(),
                    "198.18.100.1:9090".into(),
                    sas(&["198.18.2.1:9100", "198.18.2.2:9101"]),
                    false
                ),
            ]
        );
    }

    #[test]
    fn ready_then_serving_terminating() {
        let s = svc(
            &["198.18.100.1"],
            vec![port(None, 80, IntOrString::Int(8080))],
        );
        let t = Some((Some(false), Some(true), Some(true)));
        let sl = |eps| slice("web-1", "IPv4", &[(None, 8080)], eps);
        // A ready endpoint hides terminating ones.
        let out = service_specs(
            &s,
            &[sl(vec![
                ep("198.18.2.1", "node-a", ready()),
                ep("198.18.2.2", "node-a", t),
            ])],
            &node(),
        )
        .unwrap();
        assert_eq!(out[0].backends, sas(&["198.18.2.1:8080"]));
        // None ready: the serving terminating ones; not-serving ones never.
        let out = service_specs(
            &s,
            &[sl(vec![
                ep("198.18.2.2", "node-a", t),
                ep(
                    "198.18.2.3",
                    "node-a",
                    Some((Some(false), Some(false), Some(true))),
                ),
                // serving nil = ready (false)
                ep(
                    "198.18.2.4",
                    "node-a",
                    Some((Some(false), None, Some(true))),
                ),
            ])],
            &node(),
        )
        .unwrap();
        assert_eq!(out[0].backends, sas(&["198.18.2.2:8080"]));
    }

    fn nodeport_svc(policy: &str) -> (Service, Vec<EndpointSlice>) {
        let mut s = svc(
            &["198.18.100.1"],
            vec![ServicePort {
                node_port: Some(30080),
                ..port(None, 80, IntOrString::Int(8080))
            }],
        );
        spec_mut(&mut s).type_ = Some("NodePort".into());
        spec_mut(&mut s).external_traffic_policy = Some(policy.into());
        spec_mut(&mut s).external_ips = Some(vec!["198.18.100.10".into(), "2001:2::10".into()]);
        let sl = slice(
            "web-1",
            "IPv4",
            &[(None, 8080)],
            vec![
                ep("198.18.2.1", "node-a", ready()),
                ep("198.18.2.2", "node-b", ready()),
            ],
        );
        (s, vec![sl])
    }

    #[test]
    fn node_port_cluster_policy_masquerades() {
        let (s, sl) = nodeport_svc("Cluster");
        let all = sas(&["198.18.2.1:8080", "198.18.2.2:8080"]);
        assert_eq!(
            summary(&service_specs(&s, &sl, &node()).unwrap()),
            [
                (
                    "default/web:80".into(),
                    "198.18.100.1:80".into(),
                    all.clone(),
                    false
                ),
                (
                    "default/web:80 nodePort".into(),
                    "198.18.0.1:30080".into(),
                    all.clone(),
                    true
                ),
                (
                    "default/web:80 nodePort".into(),
                    "198.18.1.1:30080".into(),
                    all.clone(),
                    true
                ),
                // the IPv6 externalIP is ignored: no IPv6 ClusterIP
                (
                    "default/web:80 externalIP".into(),
                    "198.18.100.10:80".into(),
                    all,
                    true
                ),
            ]
        );
        // A ClusterIP Service has no NodePort frontends even with nodePort set.
        let (mut s, sl) = nodeport_svc("Cluster");
        spec_mut(&mut s).type_ = Some("ClusterIP".into());
        assert_eq!(service_specs(&s, &sl, &node()).unwrap().len(), 2);
    }

    #[test]
    fn external_policy_local() {
        let (s, sl) = nodeport_svc("Local");
        let out = service_specs(&s, &sl, &node()).unwrap();
        let local = sas(&["198.18.2.1:8080"]);
        assert_eq!(
            summary(&out),
            [
                (
                    "default/web:80".into(),
                    "198.18.100.1:80".into(),
                    sas(&["198.18.2.1:8080", "198.18.2.2:8080"]),
                    false
                ),
                (
                    "default/web:80 nodePort".into(),
                    "198.18.0.1:30080".into(),
                    local.clone(),
                    false
                ),
                (
                    "default/web:80 nodePort".into(),
                    "198.18.1.1:30080".into(),
                    local.clone(),
                    false
                ),
                (
                    "default/web:80 externalIP".into(),
                    "198.18.100.10:80".into(),
                    local,
                    false
                ),
            ]
        );
        // No local endpoint: external frontends get none; ClusterIP keeps all.
        let other = NodeInfo {
            name: "node-c".into(),
            ..node()
        };
        let out = service_specs(&s, &sl, &other).unwrap();
        assert_eq!(out[0].backends.len(), 2);
        assert!(out[1..]
            .iter()
            .all(|s| s.backends.is_empty() && !s.masquerade && s.external));
        // The Service has endpoints elsewhere: those frontends drop.
        assert!(out.iter().all(|s| s.no_backends == NoBackends::Drop));
        assert!(!out[0].external);
        // In-cluster clients short-circuit to every endpoint.
        assert!(out[0].short_circuit.is_empty());
        assert!(out[1..].iter().all(|s| s.short_circuit.len() == 2));
        // No endpoint anywhere: every frontend rejects.
        let out = service_specs(&s, &[], &other).unwrap();
        assert!(out
            .iter()
            .all(|s| s.backends.is_empty() && s.no_backends == NoBackends::Reject));
    }

    #[test]
    fn internal_policy_local() {
        let (mut s, sl) = nodeport_svc("Cluster");
        spec_mut(&mut s).internal_traffic_policy = Some("Local".into());
        let out = service_specs(&s, &sl, &node()).unwrap();
        assert_eq!(out[0].backends, sas(&["198.18.2.1:8080"]));
        // External frontends (eTP Cluster) still use every endpoint.
        assert_eq!(out[1].backends.len(), 2);
        // No local endpoint: the ClusterIP drops, the others keep all.
        let other = NodeInfo {
            name: "node-c".into(),
            ..node()
        };
        let out = service_specs(&s, &sl, &other).unwrap();
        assert!(out[0].backends.is_empty());
        assert_eq!(out[0].no_backends, NoBackends::Drop);
        assert_eq!(out[1].backends.len(), 2);
    }

    #[test]
    fn dual_stack() {
        let mut s = svc(
            &["2001:2::100", "198.18.100.1"],
            vec![ServicePort {
                node_port: Some(30080),
                ..port(Some("http"), 80, IntOrString::Int(8080))
            }],
        );
        spec_mut(&mut s).type_ = Some("NodePort".into());
        let v4 = slice(
            "web-v4",
            "IPv4",
            &[(Some("http"), 8080)],
            vec![ep("198.18.2.1", "node-a", ready())],
        );
        let v6 = slice(
            "web-v6",
            "IPv6",
            &[(Some("http"), 8080)],
            vec![ep("2001:2::2:1", "node-b", ready())],
        );
        let out = service_specs(&s, &[v4, v6], &node()).unwrap();
        let v4b = sas(&["198.18.2.1:8080"]);
        let v6b = sas(&["[2001:2::2:1]:8080"]);
        assert_eq!(
            summary(&out),
            [
                (
                    "default/web:http".into(),
                    "[2001:2::100]:80".into(),
                    v6b.clone(),
                    false
                ),
                (
                    "default/web:http nodePort".into(),
                    "[2001:2::1]:30080".into(),
                    v6b,
                    true
                ),
                (
                    "default/web:http".into(),
                    "198.18.100.1:80".into(),
                    v4b.clone(),
                    false
                ),
                (
                    "default/web:http nodePort".into(),
                    "198.18.0.1:30080".into(),
                    v4b.clone(),
                    true
                ),
                (
                    "default/web:http nodePort".into(),
                    "198.18.1.1:30080".into(),
                    v4b,
                    true
                ),
            ]
        );
    }

    #[test]
    fn load_balancer_ingress_and_source_ranges() {
        let mut s = svc(
            &["198.18.100.1"],
            vec![ServicePort {
                node_port: Some(30080),
                ..port(None, 80, IntOrString::Int(8080))
            }],
        );
        let sp = spec_mut(&mut s);
        sp.type_ = Some("LoadBalancer".into());
        sp.load_balancer_source_ranges =
            Some(vec!["198.18.0.0/24".into(), " 198.19.0.0/16".into()]);
        s.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![
                    LoadBalancerIngress {
                        ip: Some("198.18.100.20".into()),
                        ..Default::default()
                    },
                    LoadBalancerIngress {
                        hostname: Some("lb.example".into()),
                        ..Default::default()
                    },
                    LoadBalancerIngress {
                        ip: Some("198.18.100.21".into()),
                        ip_mode: Some("Proxy".into()),
                        ..Default::default()
                    },
                ]),
            }),
            ..Default::default()
        });
        let sl = slice(
            "web-1",
            "IPv4",
            &[(None, 8080)],
            vec![ep("198.18.2.1", "node-b", ready())],
        );
        let out = service_specs(&s, &[sl], &node()).unwrap();
        let fe: Vec<_> = out
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.frontend.addr.to_string(),
                    s.source_ranges.len(),
                    s.masquerade,
                )
            })
            .collect();
        assert_eq!(
            fe,
            [
                ("default/web:80", "198.18.100.1:80".to_string(), 0, false),
                (
                    "default/web:80 nodePort",
                    "198.18.0.1:30080".to_string(),
                    0,
                    true
                ),
                (
                    "default/web:80 nodePort",
                    "198.18.1.1:30080".to_string(),
                    0,
                    true
                ),
                (
                    "default/web:80 loadBalancer",
                    "198.18.100.20:80".to_string(),
                    2,
                    true
                ),
            ]
        );
        assert_eq!(
            out[3].source_ranges,
            [
                (Addr::v4([198, 18, 0, 0]), 24),
                (Addr::v4([198, 19, 0, 0]), 16)
            ]
        );
        // allocateLoadBalancerNodePorts: false → no nodePort in the object.
        spec_mut(&mut s).ports.as_mut().unwrap()[0].node_port = None;
        assert_eq!(service_specs(&s, &[], &node()).unwrap().len(), 2);
        spec_mut(&mut s).load_balancer_source_ranges = Some(vec!["198.18.0.0/33".into()]);
        let e = service_specs(&s, &[], &node()).unwrap_err().to_string();
        assert!(
            e.contains("default/web: spec.loadBalancerSourceRanges[0]"),
            "{e}"
        );
    }

    #[test]
    fn session_affinity() {
        let mut s = svc(
            &["198.18.100.1"],
            vec![port(None, 80, IntOrString::Int(8080))],
        );
        spec_mut(&mut s).session_affinity = Some("ClientIP".into());
        assert_eq!(
            service_specs(&s, &[], &node()).unwrap()[0].affinity_timeout,
            Some(10_800)
        );
        spec_mut(&mut s).session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(60),
            }),
        });
        assert_eq!(
            service_specs(&s, &[], &node()).unwrap()[0].affinity_timeout,
            Some(60)
        );
        spec_mut(&mut s).session_affinity = Some("None".into());
        assert_eq!(
            service_specs(&s, &[], &node()).unwrap()[0].affinity_timeout,
            None
        );
        spec_mut(&mut s).session_affinity = Some("ClientIP".into());
        spec_mut(&mut s).session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(0),
            }),
        });
        let e = service_specs(&s, &[], &node()).unwrap_err().to_string();
        assert!(
            e.contains("spec.sessionAffinityConfig.clientIP.timeoutSeconds"),
            "{e}"
        );
    }

    #[test]
    fn load_balancing_annotation_overrides_the_node_default() {
        use dataplane::table::Algorithm;
        let mut s = svc(
            &["198.18.100.1"],
            vec![port(None, 80, IntOrString::Int(8080))],
        );
        let alg = |s: &Service, n: &NodeInfo| service_specs(s, &[], n).unwrap()[0].algorithm;
        let rr = NodeInfo {
            algorithm: Algorithm::RoundRobin,
            ..node()
        };
        assert_eq!(alg(&s, &node()), Algorithm::Maglev);
        assert_eq!(alg(&s, &rr), Algorithm::RoundRobin);
        assert_eq!(annotated_algorithm(&s), Ok(None));
        let mut set = |v: &str| {
            s.metadata.annotations =
                Some([(ANNOTATION_LOAD_BALANCING.to_string(), v.to_string())].into());
            s.clone()
        };
        assert_eq!(alg(&set("random"), &rr), Algorithm::Random);
        assert_eq!(alg(&set(" source-hash "), &node()), Algorithm::SourceHash);
        assert_eq!(
            alg(&set("least-connections"), &rr),
            Algorithm::LeastConnections
        );
        // Unknown: reported to the caller, the node default used, the
        // Service still served.
        let bad = set("least-time");
        assert_eq!(annotated_algorithm(&bad), Err("least-time".into()));
        assert_eq!(alg(&bad, &rr), Algorithm::RoundRobin);
    }

    #[test]
    fn skipped_services() {
        let base = svc(
            &["198.18.100.1"],
            vec![port(None, 80, IntOrString::Int(8080))],
        );
        let sl = [slice(
            "web-1",
            "IPv4",
            &[(None, 8080)],
            vec![ep("198.18.2.1", "node-a", ready())],
        )];
        assert_eq!(service_specs(&base, &sl, &node()).unwrap().len(), 1);

        let mut s = base.clone();
        spec_mut(&mut s).type_ = Some("ExternalName".into());
        spec_mut(&mut s).external_name = Some("db.example".into());
        spec_mut(&mut s).cluster_ip = None;
        spec_mut(&mut s).cluster_ips = None;
        assert!(service_specs(&s, &sl, &node()).unwrap().is_empty());

        let mut s = base.clone();
        spec_mut(&mut s).cluster_ip = Some("None".into());
        spec_mut(&mut s).cluster_ips = Some(vec!["None".into()]);
        assert!(service_specs(&s, &sl, &node()).unwrap().is_empty());

        for label in [LABEL_HEADLESS, LABEL_SERVICE_PROXY_NAME] {
            let mut s = base.clone();
            s.metadata.labels = Some([(label.to_string(), "x".to_string())].into());
            assert!(
                service_specs(&s, &sl, &node()).unwrap().is_empty(),
                "{label}"
            );
        }
    }

    #[test]
    fn sctp_ports_are_translated_with_their_own_endpoints() {
        // A TCP and an SCTP port with the same number and name-less twin
        // ports in the slice, told apart by protocol.
        let s = svc(
            &["198.18.100.1", "2001:2::100"],
            vec![
                port(Some("http"), 80, IntOrString::Int(8080)),
                ServicePort {
                    protocol: Some("SCTP".into()),
                    ..port(Some("sig"), 80, IntOrString::Int(9999))
                },
            ],
        );
        let mut sl = slice(
            "web-1",
            "IPv4",
            &[(Some("http"), 8080), (Some("sig"), 9999)],
            vec![ep("198.18.2.1", "node-a", ready())],
        );
        sl.ports.as_mut().unwrap()[1].protocol = Some("SCTP".into());
        let out = service_specs(&s, &[sl.clone()], &node()).unwrap();
        let got: Vec<_> = out
            .iter()
            .map(|o| (o.frontend.proto, o.frontend.addr, o.backends.clone()))
            .collect();
        assert!(
            got.contains(&(
                Proto::Sctp,
                sa("198.18.100.1:80"),
                sas(&["198.18.2.1:9999"])
            )),
            "{got:?}"
        );
        assert!(
            got.contains(&(Proto::Tcp, sa("198.18.100.1:80"), sas(&["198.18.2.1:8080"]))),
            "{got:?}"
        );
        // The IPv6 frontend exists too (no IPv6 slice: no endpoints).
        assert!(
            got.contains(&(Proto::Sctp, sa("[2001:2::100]:80"), vec![])),
            "{got:?}"
        );
        // A slice port of the wrong protocol does not serve the SCTP port.
        let mut tcp_only = sl;
        tcp_only.ports.as_mut().unwrap()[1].protocol = Some("TCP".into());
        let out = service_specs(&s, &[tcp_only], &node()).unwrap();
        let sctp = out
            .iter()
            .find(|o| o.frontend.proto == Proto::Sctp && o.frontend.addr.addr.is_v4())
            .expect("SCTP frontend");
        assert!(sctp.backends.is_empty(), "{sctp:?}");
        // Unknown protocols are errors, named by field.
        let mut bad = s.clone();
        spec_mut(&mut bad).ports.as_mut().unwrap()[1].protocol = Some("DCCP".into());
        let e = service_specs(&bad, &[], &node()).unwrap_err().to_string();
        assert!(e.contains("spec.ports[1].protocol"), "{e}");
    }

    #[test]
    fn malformed_objects_name_the_field() {
        let base = svc(
            &["198.18.100.1"],
            vec![port(None, 80, IntOrString::Int(8080))],
        );
        let e = |s: &Service, sl: &[EndpointSlice]| {
            service_specs(s, sl, &node()).unwrap_err().to_string()
        };

        let mut s = base.clone();
        spec_mut(&mut s).cluster_ips = Some(vec!["198.18.100.1".into(), "198.18.300.1".into()]);
        assert_eq!(
            e(&s, &[]),
            "default/web: spec.clusterIPs[1]: \"198.18.300.1\" is not an IP address"
        );

        let mut s = base.clone();
        spec_mut(&mut s).cluster_ips = None;
        spec_mut(&mut s).cluster_ip = Some("bogus".into());
        assert!(e(&s, &[]).starts_with("default/web: spec.clusterIP: "));

        let mut s = base.clone();
        spec_mut(&mut s)
            .ports
            .as_mut()
            .unwrap()
            .push(port(Some("b"), 0, IntOrString::Int(1)));
        assert_eq!(
            e(&s, &[]),
            "default/web: spec.ports[1].port: 0 is not in 1..=65535"
        );

        let mut s = base.clone();
        spec_mut(&mut s).ports.as_mut().unwrap()[0].protocol = Some("ICMP".into());
        assert!(e(&s, &[]).contains("spec.ports[0].protocol"));

        let mut s = base.clone();
        spec_mut(&mut s).type_ = Some("NodePort".into());
        spec_mut(&mut s).ports.as_mut().unwrap()[0].node_port = Some(70_000);
        assert!(e(&s, &[]).contains("spec.ports[0].nodePort"));

        let mut s = base.clone();
        s.spec = None;
        assert_eq!(e(&s, &[]), "default/web: spec: missing");

        let bad = slice(
            "web-1",
            "IPv4",
            &[(None, 8080)],
            vec![
                ep("198.18.2.1", "n", ready()),
                ep("2001:2::1", "n", ready()),
            ],
        );
        assert_eq!(
            e(&base, &[bad]),
            "endpointslice default/web-1: endpoints[1].addresses[0]: 2001:2::1 is not of addressType IPv4"
        );
        let bad = slice("web-1", "IPv4", &[(None, 0)], vec![]);
        assert!(e(&base, &[bad]).contains("endpointslice default/web-1: ports[0].port"));
    }

    #[test]
    fn topology_hints() {
        let s = svc(
            &["198.18.100.1"],
            vec![port(None, 80, IntOrString::Int(8080))],
        );
        let hinted = |addr: &str, zone: &str| Endpoint {
            hints: Some(EndpointHints {
                for_zones: Some(vec![ForZone { name: zone.into() }]),
                ..Default::default()
            }),
            ..ep(addr, "node-x", ready())
        };
        let sl = |eps| [slice("web-1", "IPv4", &[(None, 8080)], eps)];
        // All hinted, one for our zone: only those.
        let out = service_specs(
            &s,
            &sl(vec![
                hinted("198.18.2.1", "zone-a"),
                hinted("198.18.2.2", "zone-b"),
            ]),
            &node(),
        )
        .unwrap();
        assert_eq!(out[0].backends, sas(&["198.18.2.1:8080"]));
        // None for our zone: all.
        let out = service_specs(
            &s,
            &sl(vec![
                hinted("198.18.2.1", "zone-c"),
                hinted("198.18.2.2", "zone-b"),
            ]),
            &node(),
        )
        .unwrap();
        assert_eq!(out[0].backends.len(), 2);
        // One ready endpoint without hints: all.
        let out = service_specs(
            &s,
            &sl(vec![
                hinted("198.18.2.1", "zone-a"),
                ep("198.18.2.2", "node-x", ready()),
            ]),
            &node(),
        )
        .unwrap();
        assert_eq!(out[0].backends.len(), 2);
        // Node hints (PreferSameNode) take precedence over zone hints.
        let both = |addr: &str, n: &str| Endpoint {
            hints: Some(EndpointHints {
                for_nodes: Some(vec![ForNode { name: n.into() }]),
                for_zones: Some(vec![ForZone {
                    name: "zone-a".into(),
                }]),
            }),
            ..ep(addr, n, ready())
        };
        let out = service_specs(
            &s,
            &sl(vec![
                both("198.18.2.1", "node-a"),
                both("198.18.2.2", "node-b"),
            ]),
            &node(),
        )
        .unwrap();
        assert_eq!(out[0].backends, sas(&["198.18.2.1:8080"]));
        // Node has no zone: all.
        let nz = NodeInfo {
            zone: None,
            ..node()
        };
        let out = service_specs(
            &s,
            &sl(vec![
                hinted("198.18.2.1", "zone-a"),
                hinted("198.18.2.2", "zone-b"),
            ]),
            &nz,
        )
        .unwrap();
        assert_eq!(out[0].backends.len(), 2);
    }
}
