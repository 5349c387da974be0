//! The `control_translate` target: configuration text and Kubernetes
//! objects through the control plane's parsers and translation, into a table.
use control::config::Config;
use control::k8s::{service_specs, NodeInfo};
use control::watch::{Change, Model};
use dataplane::table::{ServiceTable, TableSpec};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use serde_json::Value;
use std::hint::black_box;

/// Input mode, the first byte of a `control_translate` input.
pub mod mode {
    /// The rest is a configuration file (native or KubeProxyConfiguration).
    pub const CONFIG: u8 = 0;
    /// The rest is a KubeProxyConfiguration, whatever it says its kind is.
    pub const KUBE_PROXY: u8 = 1;
    /// The rest is a JSON cluster: `{"node", "services", "slices", "events"}`.
    pub const CLUSTER: u8 = 2;
    /// The rest is one JSON object, tried as a Service, an EndpointSlice and
    /// a Node.
    pub const OBJECT: u8 = 3;
}

/// Parses / translates `data` as its first byte says; errors are fine.
pub fn control_translate(data: &[u8]) {
    black_box(translate(data));
}

/// [`control_translate`], returning how far the input got: the number of
/// table entries built (configuration Services, or translated cluster
/// Services), `None` when it was rejected.
pub fn translate(data: &[u8]) -> Option<usize> {
    let (&m, rest) = data.split_first()?;
    match m % 4 {
        mode::CONFIG => config(&String::from_utf8_lossy(rest), false),
        mode::KUBE_PROXY => config(&String::from_utf8_lossy(rest), true),
        mode::CLUSTER => cluster(&serde_json::from_slice::<Value>(rest).ok()?),
        _ => object(serde_json::from_slice::<Value>(rest).ok()?),
    }
}

fn config(text: &str, kube_proxy: bool) -> Option<usize> {
    let parsed = if kube_proxy {
        control::kubeproxy::parse(text, "fuzz")
    } else {
        Config::parse(text, "fuzz")
    };
    let c = parsed.ok()?;
    // A parsed configuration is a validated one: everything derived from it
    // must work (or fail with an error, never a panic).
    let _ = black_box(c.validate());
    let _ = black_box(c.nodeport_addresses());
    black_box(c.timeouts());
    black_box(c.eal_args());
    black_box(c.dataplane(vec![1, 2]));
    black_box(c.restart_needed(&c));
    let spec = c.table_spec().ok()?;
    let n = spec.services.len();
    black_box(ServiceTable::new(spec, 1));
    Some(n)
}

fn node_info(v: &Value) -> NodeInfo {
    let addrs = v
        .get("nodeAddresses")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str()?.parse().ok()).collect())
        .unwrap_or_else(|| vec!["198.18.0.1".parse().expect("address")]);
    NodeInfo {
        algorithm: v
            .get("loadBalancing")
            .and_then(Value::as_str)
            .and_then(dataplane::table::Algorithm::from_name)
            .unwrap_or_default(),
        name: v
            .get("nodeName")
            .and_then(Value::as_str)
            .unwrap_or("node-a")
            .into(),
        zone: v.get("zone").and_then(Value::as_str).map(Into::into),
        node_addresses: addrs,
    }
}

fn list<T: serde::de::DeserializeOwned>(v: &Value, key: &str) -> Vec<T> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|o| serde_json::from_value(o.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The base table the cluster's Services are added to (node addresses).
fn base_spec(node: &NodeInfo) -> TableSpec {
    TableSpec {
        interfaces: node
            .node_addresses
            .iter()
            .map(|a| dataplane::table::Interface {
                port: 0,
                addr: (*a).into(),
                prefix_len: if a.is_ipv4() { 24 } else { 64 },
            })
            .collect(),
        ..Default::default()
    }
}

/// A cluster: the initial lists, then watch events, through the model the
/// watchers feed, synced and built into a table.
fn cluster(v: &Value) -> Option<usize> {
    let node = node_info(v);
    let services: Vec<Service> = list(v, "services");
    let slices: Vec<EndpointSlice> = list(v, "slices");
    // Direct translation of each Service with all slices.
    for s in &services {
        let _ = black_box(service_specs(s, &slices, &node).map(|v| v.len()));
    }
    let mut m = Model::new(node.clone());
    m.apply(Change::Service(Event::Init));
    for s in services {
        m.apply(Change::Service(Event::InitApply(s)));
    }
    m.apply(Change::Service(Event::InitDone));
    m.apply(Change::Slice(Event::Init));
    for s in slices {
        m.apply(Change::Slice(Event::InitApply(s)));
    }
    m.apply(Change::Slice(Event::InitDone));
    if let Some(n) = v.get("node").cloned() {
        if let Ok(n) = serde_json::from_value::<Node>(n) {
            m.apply(Change::Node(Event::Apply(n)));
        }
    }
    let mut n = build(&mut m, &node);
    // Then the watch events, a sync after each.
    for e in v
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let delete = e.get("op").and_then(Value::as_str) == Some("delete");
        let Some(obj) = e.get("object").cloned() else {
            continue;
        };
        let change = match e.get("kind").and_then(Value::as_str) {
            Some("Service") => serde_json::from_value::<Service>(obj).ok().map(|s| {
                Change::Service(if delete {
                    Event::Delete(s)
                } else {
                    Event::Apply(s)
                })
            }),
            Some("EndpointSlice") => serde_json::from_value::<EndpointSlice>(obj).ok().map(|s| {
                Change::Slice(if delete {
                    Event::Delete(s)
                } else {
                    Event::Apply(s)
                })
            }),
            Some("Node") => serde_json::from_value::<Node>(obj).ok().map(|n| {
                Change::Node(if delete {
                    Event::Delete(n)
                } else {
                    Event::Apply(n)
                })
            }),
            _ => None,
        };
        if let Some(c) = change {
            m.apply(c);
            n = build(&mut m, &node);
        }
    }
    Some(n)
}

fn build(m: &mut Model, node: &NodeInfo) -> usize {
    black_box(m.synced());
    black_box(m.node_eligible());
    let r = m.sync();
    black_box(r);
    black_box(m.health_checks().len());
    let built: Vec<_> = m.entries().cloned().collect();
    let n = built.len();
    black_box(ServiceTable::with_services(base_spec(node), built, 1));
    n
}

/// One object, tried as each kind.
fn object(v: Value) -> Option<usize> {
    let node = NodeInfo {
        algorithm: Default::default(),
        name: "node-a".into(),
        zone: Some("zone-a".into()),
        node_addresses: vec![
            "198.18.0.1".parse().expect("address"),
            "2001:2::1".parse().expect("address"),
        ],
    };
    let slice = serde_json::from_value::<EndpointSlice>(v.clone()).ok();
    let slices: Vec<EndpointSlice> = slice.into_iter().collect();
    let mut n = None;
    if let Ok(s) = serde_json::from_value::<Service>(v.clone()) {
        if let Ok(specs) = service_specs(&s, &slices, &node) {
            n = Some(specs.len());
            let spec = TableSpec {
                services: specs,
                ..base_spec(&node)
            };
            black_box(ServiceTable::new(spec, 1));
        }
    }
    if let Ok(node_obj) = serde_json::from_value::<Node>(v) {
        let mut m = Model::new(node.clone());
        m.apply(Change::Node(Event::Apply(node_obj)));
        n = n.or(Some(build(&mut m, &node)));
    }
    n
}
