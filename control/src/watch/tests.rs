use super::*;
use serde_json::json;

fn node() -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        zone: None,
        algorithm: Default::default(),
        node_addresses: vec!["198.18.0.1".parse().unwrap()],
    }
}

fn svc(name: &str, ip: &str, extra: serde_json::Value) -> Service {
    let mut v = json!({
        "metadata": {"namespace": "default", "name": name},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
        }
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// A slice of `svc` with endpoints (address, node, ready, zone hint).
fn slice(name: &str, svc: &str, eps: &[(&str, &str, bool, Option<&str>)]) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(a, n, r, z)| {
            let mut e = json!({"addresses": [a], "nodeName": n, "conditions": {"ready": r}});
            if let Some(z) = z {
                e["hints"] = json!({"forZones": [{"name": z}]});
            }
            e
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": name,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn synced(services: Vec<Service>, slices: Vec<EndpointSlice>) -> Model {
    let mut m = Model::new(node());
    m.apply(Change::Service(Event::Init));
    for s in services {
        m.apply(Change::Service(Event::InitApply(s)));
    }
    assert!(!m.synced());
    m.apply(Change::Service(Event::InitDone));
    assert!(!m.synced(), "EndpointSlices not listed yet");
    m.apply(Change::Slice(Event::Init));
    for s in slices {
        m.apply(Change::Slice(Event::InitApply(s)));
    }
    m.apply(Change::Slice(Event::InitDone));
    assert!(m.synced());
    m
}

fn backends_of(m: &Model, name: &str) -> Vec<String> {
    let mut v: Vec<String> = m
        .entries()
        .filter(|e| e.name.starts_with(&format!("default/{name}:")))
        .flat_map(|e| e.backends.iter().map(|b| b.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn syncs_after_both_lists_and_builds_entries() {
    let mut m = synced(
        vec![
            svc("a", "198.18.128.10", json!({})),
            svc("b", "198.18.128.11", json!({})),
        ],
        vec![
            slice("a-1", "a", &[("198.18.1.11", "node-a", true, None)]),
            slice("b-1", "b", &[("198.18.1.12", "node-b", true, None)]),
        ],
    );
    let r = m.sync();
    assert_eq!(r.rebuilt, 2);
    assert_eq!(r.errors, 0);
    assert_eq!(m.entry_count(), 2);
    assert_eq!(backends_of(&m, "a"), ["198.18.1.11:8080"]);
    assert_eq!(backends_of(&m, "b"), ["198.18.1.12:8080"]);
    assert!(!m.has_changes());
}

#[test]
fn one_change_rebuilds_one_service() {
    let mut m = synced(
        (0..50)
            .map(|i| {
                svc(
                    &format!("s{i}"),
                    &format!("198.18.128.{}", 10 + i),
                    json!({}),
                )
            })
            .collect(),
        (0..50)
            .map(|i| {
                slice(
                    &format!("s{i}-1"),
                    &format!("s{i}"),
                    &[("198.18.1.11", "node-a", true, None)],
                )
            })
            .collect(),
    );
    assert_eq!(m.sync().rebuilt, 50);
    let before: Vec<Arc<Built>> = m.entries().cloned().collect();
    // The slice of s7 gains an endpoint: only s7 is rebuilt.
    m.apply(Change::Slice(Event::Apply(slice(
        "s7-1",
        "s7",
        &[
            ("198.18.1.11", "node-a", true, None),
            ("198.18.1.12", "node-b", true, None),
        ],
    ))));
    let r = m.sync();
    assert_eq!(r.rebuilt, 1);
    assert_eq!(
        backends_of(&m, "s7"),
        ["198.18.1.11:8080", "198.18.1.12:8080"]
    );
    // Every other Service's built entry (Maglev table) is the same object.
    let after: Vec<Arc<Built>> = m.entries().cloned().collect();
    let same = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| Arc::ptr_eq(a, b))
        .count();
    assert_eq!((after.len(), same), (50, 49));
    // An identical re-delivery (e.g. a resync) rebuilds nothing.
    m.apply(Change::Slice(Event::Apply(slice(
        "s7-1",
        "s7",
        &[
            ("198.18.1.11", "node-a", true, None),
            ("198.18.1.12", "node-b", true, None),
        ],
    ))));
    assert!(!m.has_changes());
    // mark_all (syncPeriod) rebuilds everything.
    m.mark_all();
    assert_eq!(m.sync().rebuilt, 50);
}

#[test]
fn relist_applies_changes_made_during_an_outage() {
    let mut m = synced(
        vec![
            svc("a", "198.18.128.10", json!({})),
            svc("b", "198.18.128.11", json!({})),
        ],
        vec![
            slice("a-1", "a", &[("198.18.1.11", "node-a", true, None)]),
            slice("b-1", "b", &[("198.18.1.12", "node-a", true, None)]),
        ],
    );
    m.sync();
    // The watch broke; meanwhile b was deleted and a's endpoint changed.
    // The watcher relists (Init .. InitDone).
    m.apply(Change::Service(Event::Init));
    m.apply(Change::Service(Event::InitApply(svc(
        "a",
        "198.18.128.10",
        json!({}),
    ))));
    m.apply(Change::Service(Event::InitDone));
    m.apply(Change::Slice(Event::Init));
    m.apply(Change::Slice(Event::InitApply(slice(
        "a-1",
        "a",
        &[("198.18.1.13", "node-a", true, None)],
    ))));
    m.apply(Change::Slice(Event::InitDone));
    let r = m.sync();
    assert_eq!(r.rebuilt, 2, "a (changed) and b (deleted)");
    assert_eq!(backends_of(&m, "a"), ["198.18.1.13:8080"]);
    assert!(backends_of(&m, "b").is_empty());
    assert_eq!(m.entry_count(), 1);
}

#[test]
fn malformed_object_is_skipped_and_others_still_build() {
    let mut m = synced(
        vec![
            svc("a", "198.18.128.10", json!({})),
            svc("b", "198.18.128.11", json!({})),
        ],
        vec![],
    );
    m.sync();
    assert_eq!(m.entry_count(), 2);
    // b's update is malformed: b keeps its last good entries; a new bad
    // Service gets none; the good one next to it builds.
    m.apply(Change::Service(Event::Apply(svc(
        "b",
        "198.18.128.11",
        json!({"spec": {"ports": [{"port": 0}]}}),
    ))));
    m.apply(Change::Service(Event::Apply(svc(
        "c",
        "not-an-ip",
        json!({}),
    ))));
    m.apply(Change::Service(Event::Apply(svc(
        "d",
        "198.18.128.13",
        json!({}),
    ))));
    let r = m.sync();
    assert_eq!(r.errors, 2);
    assert_eq!(m.translate_errors, 2);
    let names: Vec<&str> = m.entries().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["default/a:http", "default/b:http", "default/d:http"]
    );
}

#[test]
fn deletions_and_slice_moves() {
    let mut m = synced(
        vec![
            svc("a", "198.18.128.10", json!({})),
            svc("b", "198.18.128.11", json!({})),
        ],
        vec![slice("x", "a", &[("198.18.1.11", "node-a", true, None)])],
    );
    m.sync();
    assert_eq!(backends_of(&m, "a"), ["198.18.1.11:8080"]);
    // The slice is relabelled to b: a loses the endpoint, b gains it.
    m.apply(Change::Slice(Event::Apply(slice(
        "x",
        "b",
        &[("198.18.1.11", "node-a", true, None)],
    ))));
    assert_eq!(m.sync().rebuilt, 2);
    assert!(backends_of(&m, "a").is_empty());
    assert_eq!(backends_of(&m, "b"), ["198.18.1.11:8080"]);
    m.apply(Change::Slice(Event::Delete(slice("x", "b", &[]))));
    m.apply(Change::Service(Event::Delete(svc(
        "a",
        "198.18.128.10",
        json!({}),
    ))));
    assert_eq!(m.sync().rebuilt, 2);
    assert!(backends_of(&m, "b").is_empty());
    assert_eq!(m.entry_count(), 1, "b stays, without endpoints");
}

#[test]
fn zone_change_rebuilds_with_hints() {
    let eps = [
        ("198.18.1.11", "node-a", true, Some("z1")),
        ("198.18.1.12", "node-b", true, Some("z2")),
    ];
    let mut m = synced(
        vec![svc("a", "198.18.128.10", json!({}))],
        vec![slice("a-1", "a", &eps)],
    );
    m.sync();
    assert_eq!(
        backends_of(&m, "a").len(),
        2,
        "no zone known: all endpoints"
    );
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-a", "labels": {LABEL_ZONE: "z2"}}
    }))
    .unwrap();
    m.apply(Change::Node(Event::Apply(node)));
    assert!(m.has_changes());
    m.sync();
    assert_eq!(backends_of(&m, "a"), ["198.18.1.12:8080"]);
    // Another node's object is ignored.
    let other: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-b", "labels": {LABEL_ZONE: "z1"}}
    }))
    .unwrap();
    m.apply(Change::Node(Event::Apply(other)));
    assert!(!m.has_changes());
}

#[test]
fn node_eligibility() {
    let mut m = Model::new(node());
    assert!(m.node_eligible());
    let tainted: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-a"},
        "spec": {"taints": [{"key": TAINT_TO_BE_DELETED, "effect": "NoSchedule"}]}
    }))
    .unwrap();
    m.apply(Change::Node(Event::Apply(tainted)));
    assert!(!m.node_eligible());
    let ok: Node = serde_json::from_value(json!({"metadata": {"name": "node-a"}})).unwrap();
    m.apply(Change::Node(Event::Apply(ok)));
    assert!(m.node_eligible());
    let deleting: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-a", "deletionTimestamp": "2026-01-01T00:00:00Z"}
    }))
    .unwrap();
    m.apply(Change::Node(Event::Apply(deleting)));
    assert!(!m.node_eligible());
}

#[test]
fn trigger_times_are_reported_once() {
    let mut m = synced(vec![svc("a", "198.18.128.10", json!({}))], vec![]);
    // Trigger times before the proxy started are not its latency.
    let start: jiff::Timestamp = "2026-11-26T10:00:02Z".parse().unwrap();
    m.started = Some(SystemTime::from(start));
    let mut old = slice("a-0", "a", &[("198.18.1.10", "node-a", true, None)]);
    old.metadata.annotations = Some(
        [(
            ANNOTATION_TRIGGER_TIME.to_string(),
            "2026-11-26T10:00:01Z".to_string(),
        )]
        .into(),
    );
    m.apply(Change::Slice(Event::Apply(old)));
    assert!(m.sync().triggers.is_empty());
    m.started = Some(SystemTime::UNIX_EPOCH);
    let mut s = slice("a-1", "a", &[("198.18.1.11", "node-a", true, None)]);
    s.metadata.annotations = Some(
        [(
            ANNOTATION_TRIGGER_TIME.to_string(),
            "2026-11-26T10:00:00Z".to_string(),
        )]
        .into(),
    );
    m.apply(Change::Slice(Event::Apply(s.clone())));
    // A later change before the sync: the oldest trigger counts.
    s.metadata.annotations = Some(
        [(
            ANNOTATION_TRIGGER_TIME.to_string(),
            "2026-11-26T10:00:05Z".to_string(),
        )]
        .into(),
    );
    s.endpoints.as_mut().unwrap()[0].addresses = vec!["198.18.1.12".into()];
    m.apply(Change::Slice(Event::Apply(s)));
    let r = m.sync();
    let want: SystemTime =
        SystemTime::from("2026-11-26T10:00:00Z".parse::<jiff::Timestamp>().unwrap());
    assert_eq!(r.triggers, [want]);
    m.mark_all();
    assert!(m.sync().triggers.is_empty());
}

#[test]
fn health_check_counts_local_ready_endpoints() {
    let lb = json!({"spec": {
        "type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 30500,
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]
    }});
    let mut m = synced(
        vec![svc("lb", "198.18.128.10", lb.clone())],
        vec![slice(
            "lb-1",
            "lb",
            &[
                ("198.18.1.11", "node-a", true, None),
                ("198.18.1.12", "node-a", false, None),
                ("198.18.1.13", "node-b", true, None),
            ],
        )],
    );
    m.sync();
    let h = &m.health_checks()[&30500];
    assert_eq!(
        (h.namespace.as_str(), h.name.as_str(), h.local_endpoints),
        ("default", "lb", 1)
    );
    // Policy back to Cluster: no health check port.
    m.apply(Change::Service(Event::Apply(svc(
        "lb",
        "198.18.128.10",
        json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster",
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}}),
    ))));
    m.sync();
    assert!(m.health_checks().is_empty());
    // Back to Local; then a malformed update keeps the health check (and
    // the entries) of the last good translation.
    m.apply(Change::Service(Event::Apply(svc(
        "lb",
        "198.18.128.10",
        lb,
    ))));
    m.sync();
    assert_eq!(m.health_checks()[&30500].local_endpoints, 1);
    m.apply(Change::Service(Event::Apply(svc(
        "lb",
        "198.18.128.10",
        json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                        "healthCheckNodePort": 30500, "ports": [{"port": 0}]}}),
    ))));
    assert_eq!(m.sync().errors, 1);
    assert_eq!(m.health_checks()[&30500].local_endpoints, 1);
    // Deleted: gone.
    m.apply(Change::Service(Event::Delete(svc(
        "lb",
        "198.18.128.10",
        json!({}),
    ))));
    m.sync();
    assert!(m.health_checks().is_empty());
}

#[test]
fn bookkeeping_only_updates_rebuild_nothing_and_are_not_kept() {
    let mut m = synced(vec![svc("a", "198.18.128.10", json!({}))], vec![]);
    m.sync();
    let mut s = svc("a", "198.18.128.10", json!({}));
    s.metadata.resource_version = Some("42".into());
    s.metadata.managed_fields = Some(vec![Default::default()]);
    s.metadata.annotations = Some(
        [(
            "kubectl.kubernetes.io/last-applied-configuration".to_string(),
            "{}".to_string(),
        )]
        .into(),
    );
    m.apply(Change::Service(Event::Apply(s)));
    assert!(!m.has_changes(), "only bookkeeping changed");
    let kept = &m.services["default/a"].metadata;
    assert!(kept.managed_fields.is_none() && kept.resource_version.is_none());
}

#[test]
fn an_unknown_load_balancing_annotation_is_counted_and_the_default_used() {
    use dataplane::table::Algorithm;
    let mut m = Model::new(node());
    m.apply(Change::Service(Event::Apply(svc(
        "a",
        "198.18.128.10",
        json!({"metadata": {"annotations": {"dpdk-kube-proxy.io/load-balancing": "round-robin"}}}),
    ))));
    m.apply(Change::Service(Event::Apply(svc(
        "b",
        "198.18.128.11",
        json!({"metadata": {"annotations": {"dpdk-kube-proxy.io/load-balancing": "fastest"}}}),
    ))));
    let r = m.sync();
    assert_eq!(r.errors, 0);
    assert_eq!(m.annotation_errors, 1);
    let algs: Vec<(&str, Algorithm)> = m
        .entries()
        .map(|e| (e.name.as_str(), e.algorithm))
        .collect();
    assert_eq!(
        algs,
        [
            ("default/a:http", Algorithm::RoundRobin),
            ("default/b:http", Algorithm::Maglev)
        ]
    );
    // A new node-wide default rebuilds every Service.
    m.set_algorithm(Algorithm::Random);
    m.sync();
    assert_eq!(m.annotation_errors, 2);
    let algs: Vec<Algorithm> = m.entries().map(|e| e.algorithm).collect();
    assert_eq!(algs, [Algorithm::RoundRobin, Algorithm::Random]);
}
