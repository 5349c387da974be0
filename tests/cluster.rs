//! Cluster: a real kube-apiserver + etcd (scripts/k8s-test-env.sh), the real
//! binary watching it, af_packet ports in network namespaces and kernel
//! peers. Objects are created through the API as the EndpointSlice
//! controller would, and traffic follows every change.
//!
//! The API server runs inside the proxy's namespace (on its 127.0.0.1), where
//! the proxy can reach it; the test talks to it with curl in that namespace.
//! Needs root; builds (or reuses the cached) kube-apiserver and etcd.
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::*;

/// The API server + etcd of one test, stopped and removed on drop.
struct ApiServer {
    dir: PathBuf,
    ns: String,
    server: String,
    token: String,
}

impl ApiServer {
    fn up(t: &Topology) -> ApiServer {
        let dir = std::env::temp_dir().join(format!("{}-k8s", t.prefix));
        let ns = t.ns("proxy");
        let api = ApiServer {
            dir: dir.clone(),
            ns: ns.clone(),
            server: String::new(),
            token: String::new(),
        };
        sh(Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(root().join("scripts/k8s-test-env.sh"))
            .arg("up")
            .arg(&dir));
        let env = std::fs::read_to_string(dir.join("env")).unwrap();
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{k} not in {env}"))
                .trim_matches('\'')
                .to_string()
        };
        let mut api = api;
        api.server = get("DKP_K8S_SERVER");
        api.token = get("DKP_K8S_TOKEN");
        api
    }

    fn kubeconfig(&self) -> String {
        self.dir.join("kubeconfig").to_string_lossy().into_owned()
    }

    /// One API request; returns (HTTP status, body).
    fn req(&self, method: &str, path: &str, body: Option<&Value>, ctype: &str) -> (u16, Value) {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "curl", "-sS", "--max-time", "10"])
            .arg("--cacert")
            .arg(self.dir.join("pki/ca.crt"))
            .args(["-H", &format!("Authorization: Bearer {}", self.token)])
            .args(["-H", &format!("Content-Type: {ctype}")])
            .args(["-X", method, "-w", "\n%{http_code}"]);
        if let Some(b) = body {
            c.args(["--data-binary", &b.to_string()]);
        }
        c.arg(format!("{}{}", self.server, path));
        let out = sh(&mut c);
        let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
        let code: u16 = code.parse().unwrap_or(0);
        (code, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    fn ok(&self, method: &str, path: &str, body: Option<&Value>, ctype: &str) -> Value {
        let (code, v) = self.req(method, path, body, ctype);
        assert!((200..300).contains(&code), "{method} {path}: {code} {v}");
        v
    }

    fn create(&self, path: &str, obj: &Value) -> Value {
        self.ok("POST", path, Some(obj), "application/json")
    }

    fn put(&self, path: &str, obj: &Value) -> Value {
        self.ok("PUT", path, Some(obj), "application/json")
    }

    fn patch(&self, path: &str, patch: &Value) -> Value {
        self.ok("PATCH", path, Some(patch), "application/merge-patch+json")
    }

    fn restart(&self) -> std::process::Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(root().join("scripts/k8s-test-env.sh"))
            .arg("restart-apiserver")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/k8s-test-env.sh"))
            .arg("down")
            .arg(&self.dir)
            .status();
    }
}

const SVCS: &str = "/api/v1/namespaces/default/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// An endpoint: backend index (be1..be3), node, and (ready, serving, terminating).
type Ep = (u8, &'static str, (bool, bool, bool));

/// An EndpointSlice as the EndpointSlice controller writes it.
fn slice(name: &str, svc: &str, ports: &[(&str, u16, &str)], eps: &[Ep]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": svc,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
            },
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": now_rfc3339()}
        },
        "addressType": "IPv4",
        "ports": ports.iter().map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto})).collect::<Vec<_>>(),
        "endpoints": eps.iter().map(|(i, node, (r, s, t))| json!({
            "addresses": [format!("198.18.1.1{i}")],
            "nodeName": node,
            "conditions": {"ready": r, "serving": s, "terminating": t}
        })).collect::<Vec<_>>(),
    })
}

const READY: (bool, bool, bool) = (true, true, false);
const TERMINATING: (bool, bool, bool) = (false, true, true);
const WEB_PORTS: &[(&str, u16, &str)] = &[("http", 8080, "TCP"), ("dns", 5353, "UDP")];

/// Runs `clients` until `ok` holds for its report (or panics after 30 s).
fn eventually(t: &Topology, what: &str, args: &[&str], ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut a = vec!["clients"];
        a.extend_from_slice(args);
        let v = t.peer("client", &a);
        if ok(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last report {v}\ndrops: {}\nlog:\n{}",
            t.drops(),
            t.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The backends that answered `proto`, with no errors; None if any failed.
fn answered(v: &Value, proto: &str) -> Option<Vec<String>> {
    let (c, errors) = counts(v, proto);
    (errors == 0).then(|| c.into_iter().map(|x| x.0).collect())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn cluster_objects_drive_the_dataplane() {
    require_root();
    let prefix = format!("dc{}", std::process::id() % 100_000);
    let mut t = Topology::up(&prefix);
    // Declared after the topology: dropped (stopped) before its namespace goes.
    let api = ApiServer::up(&t);
    // kube-proxy's configuration file: the cluster settings in its fields,
    // the demo's dataplane sections (without Services and admin) in `dpdk:`.
    let cfg = t.demo_config();
    let cfg = &cfg[..cfg.find("\nservices:").expect("demo.yaml has services")];
    let admin = format!("admin:\n  bind: {}", t.admin);
    assert!(cfg.contains(&admin), "demo.yaml's admin section");
    let dpdk: String = cfg
        .replace(&admin, "")
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect();
    let healthz = format!("127.0.0.1:{}", free_port());
    t.write_config_text(&format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: dpdk\n\
         clientConnection:\n  kubeconfig: {}\nhostnameOverride: file-node\n\
         metricsBindAddress: {}\nhealthzBindAddress: {healthz}\n\
         clusterCIDR: 198.18.1.0/24,2001:2:0:1::/64\n\
         iptables:\n  minSyncPeriod: 200ms\n  syncPeriod: 30s\ndpdk:\n{dpdk}",
        api.kubeconfig(),
        t.admin
    ));
    // The flag overrides the file (the Node of this test is node-a).
    t.start_proxy_with(&[
        "--health-check-bind-address",
        "127.0.0.1",
        "--hostname-override",
        "node-a",
    ]);
    let get = |addr: &str, path: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", &t.ns("proxy"), "python3"])
            .arg(root().join("tests/e2e/peer.py"))
            .args(["http-get", "--status", &format!("http://{addr}{path}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

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
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(&healthz, "/healthz");
        if r.starts_with("200") {
            break;
        }
        assert!(Instant::now() < deadline, "healthz never became ready: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
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
