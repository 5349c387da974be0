//! Cluster: a real kube-apiserver + etcd (scripts/k8s-test-env.sh), the real
//! binary watching it, af_packet ports in network namespaces and kernel
//! peers. Objects are created through the API as the EndpointSlice
//! controller would, and traffic follows every change.
//!
//! The API server runs inside the proxy's namespace (on its 127.0.0.1), where
//! the proxy can reach it; the test talks to it with curl in that namespace.
//! Needs root; builds (or reuses the cached) kube-apiserver and etcd.
use serde_json::{json, Value};
use std::time::{Duration, Instant};

mod support;
use support::k8s::*;
use support::*;

#[test]
fn cluster_objects_drive_the_dataplane() {
    require_root();
    let prefix = format!("dc{}", std::process::id() % 100_000);
    let mut t = Topology::up(&prefix);
    // Declared after the topology: dropped (stopped) before its namespace goes.
    let api = ApiServer::up(&t);
    // kube-proxy's configuration file.
    let healthz = format!("127.0.0.1:{}", free_port());
    t.write_config_text(&kube_proxy_config(
        &t,
        &api.kubeconfig(),
        &healthz,
        ("200ms", "30s"),
    ));
    // The flag overrides the file (the Node of this test is node-a).
    t.start_proxy_with(&[
        "--health-check-bind-address",
        "127.0.0.1",
        "--hostname-override",
        "node-a",
    ]);
    let get = |addr: &str, path: &str| http_get(&t, addr, path);

    // A ClusterIP Service with a TCP and a UDP port (named target ports).
    let web = api.create(
        SVCS,
        &json!({"metadata": {"name": "web"}, "spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
            {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"}]}}),
    );
    let vip = web["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(vip.starts_with("198.18."), "{web}");
    api.create(
        SLICES,
        &slice(
            "web-1",
            "web",
            WEB_PORTS,
            &[(1, "node-a", READY), (2, "node-b", READY)],
        ),
    );
    // /healthz turns 200 once Services and EndpointSlices are listed and
    // programmed.
    wait_healthy(&t, &healthz);
    let args = ["--vip", &vip, "--count", "40", "--concurrency", "8"];
    let both = |v: &Value, want: &[&str]| {
        answered(v, "tcp").is_some_and(|b| b == want)
            && answered(v, "udp").is_some_and(|b| b == want)
    };
    let v = eventually(&t, "initial endpoints", &args, |v| both(v, &["be1", "be2"]));
    // The client is outside clusterCIDR (the pods' 198.18.1.0/24): an
    // off-cluster client reaching a ClusterIP is masqueraded to the node.
    assert_sources(&v, &["198.18.1.1"]);

    // Scale up.
    let path = format!("{SLICES}/web-1");
    let all3 = [
        (1, "node-a", READY),
        (2, "node-b", READY),
        (3, "node-b", READY),
    ];
    api.put(&path, &slice("web-1", "web", WEB_PORTS, &all3));
    eventually(&t, "scaled up", &args, |v| both(v, &["be1", "be2", "be3"]));

    // The load-balancing annotation, through the API server: round-robin
    // on this Service (one rotation over both workers: 30 new connections,
    // exactly 10 per backend); an unknown value is counted and the node's
    // default (maglev) serves; removing it keeps the default.
    let svc = format!("{SVCS}/web");
    let annotate = |v: Value| {
        api.patch(
            &svc,
            &json!({"metadata": {"annotations": {"dpdk-kube-proxy.io/load-balancing": v}}}),
        );
    };
    let wait_lb = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while lb_of(&t, "default/web:http") != want {
            assert!(
                Instant::now() < deadline,
                "load balancing never {want}: {}",
                t.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    annotate(json!("round-robin"));
    wait_lb("round-robin");
    let v = t.peer(
        "client",
        &[
            "clients",
            "--vip",
            &vip,
            "--count",
            "30",
            "--concurrency",
            "4",
        ],
    );
    let (c, errors) = counts(&v, "tcp");
    assert_eq!(errors, 0, "{v}");
    let per: Vec<u64> = c.iter().map(|x| x.1).collect();
    assert_eq!(per, [10, 10, 10], "round-robin over three backends: {v}");
    annotate(json!("fastest"));
    wait_lb("maglev");
    assert!(t.metric_sum("dpdk_kube_proxy_annotation_errors_total", "") >= 1);
    annotate(Value::Null);
    eventually(&t, "annotation removed", &args, |v| {
        both(v, &["be1", "be2", "be3"])
    });
    assert_eq!(lb_of(&t, "default/web:http"), "maglev");

    // be1 terminating: no new connections to it.
    let term1 = [
        (1, "node-a", TERMINATING),
        (2, "node-b", READY),
        (3, "node-b", READY),
    ];
    api.put(&path, &slice("web-1", "web", WEB_PORTS, &term1));
    eventually(&t, "terminating endpoint", &args, |v| {
        both(v, &["be2", "be3"])
    });

    // The API server restarts: the dataplane keeps serving meanwhile, and the
    // watches resume and converge.
    let mut restart = api.restart();
    let v = t.peer(
        "client",
        &[
            "clients",
            "--vip",
            &vip,
            "--count",
            "40",
            "--concurrency",
            "8",
        ],
    );
    assert!(
        both(&v, &["be2", "be3"]),
        "during the API server restart: {v}"
    );
    let st = restart.wait().unwrap();
    assert!(st.success(), "restart-apiserver failed");
    api.put(
        &path,
        &slice("web-1", "web", WEB_PORTS, &[(3, "node-b", READY)]),
    );
    eventually(&t, "after the restart", &args, |v| both(v, &["be3"]));

    // Stale UDP: a UDP flow keeps its backend while it stays; when the
    // EndpointSlice drops that backend (its process still answers), the flow
    // is flushed and moves on, with no restart of the client.
    api.put(
        &path,
        &slice("web-1", "web", WEB_PORTS, &[(3, "node-b", READY)]),
    );
    let stream = t.spawn_peer(
        "client",
        &[
            "udp-stream",
            "--vip",
            &vip,
            "--duration",
            "5",
            "--interval",
            "0.05",
            "--timeout",
            "0.3",
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    api.put(
        &path,
        &slice("web-1", "web", WEB_PORTS, &[(2, "node-b", READY)]),
    );
    let out = stream.wait_with_output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs: Vec<&str> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(
        runs,
        ["be3", "be2"],
        "stale UDP flow: {v}\n{}",
        t.log_text()
    );
    assert!(t.metric_sum("dpdk_kube_proxy_sessions_flushed_total", "") >= 1);

    // externalTrafficPolicy: Local LoadBalancer: node-local endpoints only,
    // client address preserved, healthCheckNodePort answers.
    let lb = api.create(
        SVCS,
        &json!({"metadata": {"name": "lb"}, "spec": {
            "type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}),
    );
    let node_port = lb["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .unwrap()
        .to_string();
    let hc_port = lb["spec"]["healthCheckNodePort"].as_u64().unwrap();
    api.patch(
        &format!("{SVCS}/lb/status"),
        &json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.18.100.50"}]}}}),
    );
    let lb_ports = [("http", 8080, "TCP")];
    api.create(
        SLICES,
        &slice(
            "lb-1",
            "lb",
            &lb_ports,
            &[(1, "node-a", READY), (2, "node-b", READY)],
        ),
    );
    for (what, addr, port) in [
        ("NodePort", "198.18.0.1", node_port.as_str()),
        ("LoadBalancer IP", "198.18.100.50", "80"),
    ] {
        let v = eventually(
            &t,
            what,
            &[
                "--vip",
                addr,
                "--tcp-port",
                port,
                "--proto",
                "tcp",
                "--count",
                "30",
            ],
            |v| answered(v, "tcp").is_some_and(|b| b == ["be1"]),
        );
        assert_sources(&v, &["198.18.0.2"]);
    }
    let hc = format!("127.0.0.1:{hc_port}");
    let r = get(&hc, "/");
    assert!(r.starts_with("200"), "{r}");
    assert!(
        r.contains(r#""localEndpoints":1"#) && r.contains(r#""name":"lb""#),
        "{r}"
    );
    api.put(
        &format!("{SLICES}/lb-1"),
        &slice(
            "lb-1",
            "lb",
            &lb_ports,
            &[(1, "node-a", TERMINATING), (2, "node-b", READY)],
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(&hc, "/");
        if r.starts_with("503") && r.contains(r#""localEndpoints":0"#) {
            break;
        }
        assert!(Instant::now() < deadline, "health check still {r}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Deleting the Service removes its frontends.
    api.ok("DELETE", &format!("{SVCS}/web"), None, "application/json");
    eventually(
        &t,
        "deleted Service",
        &["--vip", &vip, "--count", "6", "--timeout", "0.5"],
        |v| counts(v, "tcp").1 == 6 && counts(v, "udp").1 == 6,
    );

    // kube-proxy's metrics.
    let m = t.try_get("/metrics").unwrap();
    let val = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert!(
        val("kubeproxy_network_programming_duration_seconds_count") >= 4.0,
        "{m}"
    );
    assert!(
        val("kubeproxy_sync_proxy_rules_endpoint_changes_total") >= 6.0,
        "{m}"
    );
    assert!(
        val("kubeproxy_sync_proxy_rules_service_changes_total") >= 3.0,
        "{m}"
    );
}

/// The load-balancing algorithm `/debug/services` shows for the frontends of
/// the Service port `name` (empty when it has none; "mixed" if they differ).
fn lb_of(t: &Topology, name: &str) -> String {
    let Some(text) = t.try_get("/debug/services") else {
        return String::new();
    };
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut algos: Vec<String> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with(name)))
        .map(|s| s["loadBalancing"].as_str().unwrap().to_string())
        .collect();
    algos.sort();
    algos.dedup();
    match algos.len() {
        0 => String::new(),
        1 => algos.remove(0),
        _ => "mixed".into(),
    }
}
