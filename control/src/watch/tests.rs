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

#[test]
fn an_interrupted_relist_is_discarded() {
    let mut m = synced(
        vec![
            svc("a", "198.18.128.10", json!({})),
            svc("b", "198.18.128.11", json!({})),
        ],
        vec![],
    );
    m.sync();
    // A relist breaks off after one object (the list failed) and starts
    // over: the partial list neither drops b nor keeps the stale part.
    m.apply(Change::Service(Event::Init));
    m.apply(Change::Service(Event::InitApply(svc(
        "c",
        "198.18.128.12",
        json!({}),
    ))));
    assert!(!m.has_changes(), "nothing changes before InitDone");
    m.apply(Change::Service(Event::Init));
    m.apply(Change::Service(Event::InitApply(svc(
        "a",
        "198.18.128.10",
        json!({}),
    ))));
    m.apply(Change::Service(Event::InitApply(svc(
        "b",
        "198.18.128.11",
        json!({}),
    ))));
    m.apply(Change::Service(Event::InitDone));
    assert!(!m.has_changes(), "the same objects: nothing to rebuild");
    let names: Vec<&str> = m.entries().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["default/a:http", "default/b:http"]);
}

#[test]
fn expiry_is_recognised_wherever_it_comes_from() {
    let gone = || {
        kube::core::Status::failure("too old resource version: 10 (20)", "Expired").with_code(410)
    };
    assert!(expired(&watcher::Error::WatchError(gone().boxed())));
    assert!(expired(&watcher::Error::WatchStartFailed(
        kube::Error::Api(gone().boxed())
    )));
    assert!(expired(&watcher::Error::InitialListFailed(
        kube::Error::Api(gone().boxed())
    )));
    let other = kube::core::Status::failure("boom", "InternalError").with_code(500);
    assert!(!expired(&watcher::Error::WatchError(other.clone().boxed())));
    assert!(!expired(&watcher::Error::WatchStartFailed(
        kube::Error::Api(other.boxed())
    )));
    assert!(!expired(&watcher::Error::NoResourceVersion));
}

/// A minimal API server for the watch loop: lists Services and
/// EndpointSlices, holds watches open until [`MockApi::cut`], and answers
/// watches from before `oldest` (etcd compacted) with "410 Gone" — as a
/// watch event, or as the HTTP answer to the watch request.
mod mock {
    use axum::body::{Body, Bytes};
    use axum::extract::{Query, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use serde_json::{json, Value};
    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    pub struct Objects {
        pub rv: u64,
        /// Watches from an older resource version get 410.
        pub oldest: u64,
        pub services: BTreeMap<String, Value>,
        pub slices: BTreeMap<String, Value>,
        /// 410 as the HTTP status of the watch request, not as an event.
        pub gone_as_status: bool,
        /// Answer this many list requests with 410 (an expired `continue`
        /// token), per resource.
        pub lists_gone: HashMap<&'static str, u32>,
        /// Answer watch requests with this HTTP error status.
        pub watch_status: Option<u16>,
        /// List requests served, per resource.
        pub lists: HashMap<&'static str, u32>,
    }

    pub struct MockApi {
        pub objects: Mutex<Objects>,
        cut: tokio::sync::watch::Sender<u64>,
    }

    fn status(code: u16, reason: &str, message: &str) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code})
    }

    impl MockApi {
        pub async fn start() -> (Arc<MockApi>, kube::Client) {
            let api = Arc::new(MockApi {
                objects: Mutex::new(Objects {
                    rv: 10,
                    ..Default::default()
                }),
                cut: tokio::sync::watch::channel(0).0,
            });
            let app = axum::Router::new()
                .route(
                    "/api/v1/services",
                    axum::routing::get(
                        |s: State<Arc<MockApi>>, q: Query<HashMap<String, String>>| async move {
                            s.0.serve("services", &q.0)
                        },
                    ),
                )
                .route(
                    "/apis/discovery.k8s.io/v1/endpointslices",
                    axum::routing::get(
                        |s: State<Arc<MockApi>>, q: Query<HashMap<String, String>>| async move {
                            s.0.serve("endpointslices", &q.0)
                        },
                    ),
                )
                .with_state(api.clone());
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(l, app).await });
            let cfg = kube::Config::new(format!("http://{addr}").parse().unwrap());
            (api, kube::Client::try_from(cfg).unwrap())
        }

        /// Ends every open watch (as a relay or an API server restart would).
        pub fn cut(&self) {
            self.cut.send_modify(|g| *g += 1);
        }

        pub fn lists(&self, what: &str) -> u32 {
            let o = self.objects.lock().unwrap();
            o.lists.get(what).copied().unwrap_or(0)
        }

        fn serve(&self, what: &'static str, q: &HashMap<String, String>) -> Response {
            let mut o = self.objects.lock().unwrap();
            let json = |code: u16, v: Value| {
                (
                    StatusCode::from_u16(code).unwrap(),
                    [("content-type", "application/json")],
                    v.to_string(),
                )
                    .into_response()
            };
            if q.get("watch").map(String::as_str) != Some("true") {
                if let Some(n) = o.lists_gone.get_mut(what).filter(|n| **n > 0) {
                    *n -= 1;
                    return json(
                        410,
                        status(410, "Expired", "the provided continue parameter is too old"),
                    );
                }
                *o.lists.entry(what).or_default() += 1;
                let items: Vec<Value> = if what == "services" {
                    o.services.values().cloned().collect()
                } else {
                    o.slices.values().cloned().collect()
                };
                return json(
                    200,
                    json!({"apiVersion": "v1", "kind": "List",
                           "metadata": {"resourceVersion": o.rv.to_string()}, "items": items}),
                );
            }
            if let Some(code) = o.watch_status {
                return json(code, status(code, "InternalError", "boom"));
            }
            let from: u64 = q
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let msg = format!("too old resource version: {from} ({})", o.oldest);
            if from < o.oldest {
                if o.gone_as_status {
                    return json(410, status(410, "Expired", &msg));
                }
                let ev = json!({"type": "ERROR", "object": status(410, "Expired", &msg)});
                let line = Bytes::from(format!("{ev}\n"));
                let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(line)]);
                return (StatusCode::OK, Body::from_stream(body)).into_response();
            }
            // Open until the next cut.
            let mut cut = self.cut.subscribe();
            let body = futures::stream::once(async move {
                let _ = cut.changed().await;
            })
            .filter_map(|()| async { None::<Result<Bytes, std::convert::Infallible>> });
            (StatusCode::OK, Body::from_stream(body)).into_response()
        }
    }

    use futures::StreamExt;
}

fn object(mut v: serde_json::Value, rv: u64) -> serde_json::Value {
    v["metadata"]["resourceVersion"] = json!(rv.to_string());
    v
}

/// The next change, or a panic after 10 s.
async fn next_change(rx: &mut mpsc::Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no watch event within 10 s")
        .expect("watch channel closed")
}

/// Applies changes until `n` more lists (InitDone events) of each kind
/// arrived; returns the watch errors seen meanwhile.
async fn apply_lists(m: &mut Model, rx: &mut mpsc::Receiver<Change>, n: usize) -> Vec<String> {
    let (mut svc_done, mut slice_done, mut errors) = (0, 0, vec![]);
    while svc_done < n || slice_done < n {
        let c = next_change(rx).await;
        match &c {
            Change::Service(Event::InitDone) => svc_done += 1,
            Change::Slice(Event::InitDone) => slice_done += 1,
            Change::Error(what, e) => errors.push(format!("{what}: {e}")),
            _ => {}
        }
        m.apply(c);
    }
    errors
}

/// Two Services with a slice each, watched; then, "while the proxy is
/// disconnected", b and its slice are deleted, c is created and etcd is
/// compacted: every watch is cut and its resume is answered with 410.
/// `expiries`: the 410s each watch is expected to see.
async fn expiry_case(expiries: u64, configure: impl FnOnce(&mut mock::Objects)) {
    let (api, client) = mock::MockApi::start().await;
    {
        let mut o = api.objects.lock().unwrap();
        for (n, ip, be) in [
            ("a", "198.18.128.10", "198.18.1.11"),
            ("b", "198.18.128.11", "198.18.1.12"),
        ] {
            let s = serde_json::to_value(svc(n, ip, json!({}))).unwrap();
            o.services.insert(n.into(), object(s, 5));
            let sl =
                serde_json::to_value(slice(&format!("{n}-1"), n, &[(be, "node-a", true, None)]))
                    .unwrap();
            o.slices.insert(n.into(), object(sl, 5));
        }
    }
    let metrics = Arc::new(ControlMetrics::default());
    // An hour of backoff: a relist that waited for it would never come.
    let backoff = WatchBackoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
    let mut rx = watch_with(client, "", metrics.clone(), backoff);
    let mut m = Model::new(node());
    assert_eq!(apply_lists(&mut m, &mut rx, 1).await, Vec::<String>::new());
    assert!(m.synced());
    m.sync();
    assert_eq!(backends_of(&m, "a"), ["198.18.1.11:8080"]);
    assert_eq!(backends_of(&m, "b"), ["198.18.1.12:8080"]);
    {
        let mut o = api.objects.lock().unwrap();
        o.services.remove("b");
        o.slices.remove("b");
        let s = serde_json::to_value(svc("c", "198.18.128.12", json!({}))).unwrap();
        o.services.insert("c".into(), object(s, 15));
        let sl = serde_json::to_value(slice("c-1", "c", &[("198.18.1.13", "node-a", true, None)]))
            .unwrap();
        o.slices.insert("c".into(), object(sl, 16));
        o.rv = 20;
        o.oldest = 20;
        configure(&mut o);
    }
    api.cut();
    let errors = apply_lists(&mut m, &mut rx, 1).await;
    assert_eq!(
        errors,
        Vec::<String>::new(),
        "an expiry is not a watch error"
    );
    let r = m.sync();
    assert_eq!(r.rebuilt, 2, "b (deleted) and c (new)");
    assert_eq!(backends_of(&m, "a"), ["198.18.1.11:8080"]);
    assert!(
        backends_of(&m, "b").is_empty(),
        "deleted while disconnected"
    );
    assert_eq!(backends_of(&m, "c"), ["198.18.1.13:8080"]);
    assert_eq!(m.entry_count(), 2);
    assert_eq!(api.lists("services"), 2);
    assert_eq!(api.lists("endpointslices"), 2);
    assert_eq!(metrics.watch_errors.load(Relaxed), 0);
    let expired: Vec<(&str, u64)> = metrics.watch_expired.rows().collect();
    assert_eq!(
        expired,
        [
            ("services", expiries),
            ("endpointslices", expiries),
            ("nodes", 0)
        ]
    );
}

#[tokio::test]
async fn gone_in_a_watch_event_relists_at_once() {
    expiry_case(1, |_| {}).await;
}

#[tokio::test]
async fn gone_as_the_answer_to_the_watch_request_relists_at_once() {
    // kube-runtime alone would retry the expired version after its backoff.
    expiry_case(1, |o| o.gone_as_status = true).await;
}

#[tokio::test]
async fn gone_answering_the_relist_lists_again_at_once() {
    // The watch expires, then the first relist's paged list expires too.
    expiry_case(2, |o| {
        o.lists_gone = [("services", 1), ("endpointslices", 1)].into();
    })
    .await;
}

#[tokio::test]
async fn other_watch_errors_back_off_and_are_not_expiries() {
    let (api, client) = mock::MockApi::start().await;
    let metrics = Arc::new(ControlMetrics::default());
    let backoff = WatchBackoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
    let mut rx = watch_with(client, "", metrics.clone(), backoff);
    let mut m = Model::new(node());
    apply_lists(&mut m, &mut rx, 1).await;
    api.objects.lock().unwrap().watch_status = Some(500);
    api.cut();
    // One error per watch, then the (hour-long) backoff: no relist.
    let mut errors = 0;
    while errors < 2 {
        if let Change::Error(_, e) = next_change(&mut rx).await {
            assert!(e.contains("boom"), "{e}");
            errors += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "nothing before the backoff ends");
    assert_eq!((api.lists("services"), api.lists("endpointslices")), (1, 1));
    assert_eq!(metrics.watch_expired.rows().map(|r| r.1).sum::<u64>(), 0);
}

#[tokio::test]
async fn a_relist_that_keeps_expiring_backs_off() {
    let (api, client) = mock::MockApi::start().await;
    let metrics = Arc::new(ControlMetrics::default());
    // An hour of backoff: a relist that waits for it never comes.
    let backoff = WatchBackoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
    let mut rx = watch_with(client, "", metrics.clone(), backoff);
    let mut m = Model::new(node());
    apply_lists(&mut m, &mut rx, 1).await;
    {
        let mut o = api.objects.lock().unwrap();
        o.rv = 20;
        o.oldest = 20;
        o.lists_gone = [("services", 10)].into();
    }
    api.cut();
    // The watch expires, two relists at once expire too, then the third
    // waits for the backoff instead of asking again in a tight loop.
    let gone_left = || api.objects.lock().unwrap().lists_gone["services"];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gone_left() > 8 {
        assert!(std::time::Instant::now() < deadline, "no relist");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gone_left(), 8, "two immediate relists, then the backoff");
    let expired: u64 = metrics
        .watch_expired
        .rows()
        .filter(|r| r.0 == "services")
        .map(|r| r.1)
        .sum();
    assert_eq!(expired, 3);
}

#[test]
fn pod_cidrs_of_this_node() {
    let mut m = Model::new(node());
    assert!(m.pod_cidrs().is_empty());
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-a"},
        "spec": {"podCIDR": "198.18.64.0/24", "podCIDRs": ["198.18.64.0/24", "2001:2:0:64::/64"]}
    }))
    .unwrap();
    m.apply(Change::Node(Event::Apply(n.clone())));
    assert_eq!(
        m.pod_cidrs(),
        [
            (dataplane::addr::Addr::v4([198, 18, 64, 0]), 24),
            (
                "2001:2:0:64::".parse::<std::net::IpAddr>().unwrap().into(),
                64
            )
        ]
    );
    assert!(m.has_changes(), "the table's routes must follow");
    m.sync();
    assert!(!m.has_changes());
    m.apply(Change::Node(Event::Apply(n)));
    assert!(!m.has_changes(), "unchanged");
    // Only the singular field (older API servers), another node, a bad value.
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-a"}, "spec": {"podCIDR": "198.18.66.0/24"}
    }))
    .unwrap();
    m.apply(Change::Node(Event::Apply(n)));
    assert_eq!(
        m.pod_cidrs(),
        [(dataplane::addr::Addr::v4([198, 18, 66, 0]), 24)]
    );
    m.sync();
    let other: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-b"}, "spec": {"podCIDRs": ["198.18.65.0/24"]}
    }))
    .unwrap();
    m.apply(Change::Node(Event::Apply(other)));
    assert!(!m.has_changes());
    let bad: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-a"}, "spec": {"podCIDRs": ["nonsense", "198.18.66.0/24"]}
    }))
    .unwrap();
    m.apply(Change::Node(Event::Apply(bad)));
    assert_eq!(m.translate_errors, 1);
    assert_eq!(
        m.pod_cidrs(),
        [(dataplane::addr::Addr::v4([198, 18, 66, 0]), 24)]
    );
}
