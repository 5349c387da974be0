//! A real kube-apiserver + etcd for the cluster tests (scripts/k8s-test-env.sh),
//! run inside the proxy's namespace on its 127.0.0.1, where the proxy can
//! reach it; the tests talk to it with curl in that namespace. Also: a TCP
//! relay in front of it (to cut the proxy's connections without touching the
//! API server), the KubeProxyConfiguration of those tests, and the objects
//! they create.
use super::{root, sh, Topology};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The API server + etcd of one test, stopped and removed on drop.
pub struct ApiServer {
    pub dir: PathBuf,
    pub ns: String,
    pub server: String,
    pub token: String,
}

impl ApiServer {
    pub fn up(t: &Topology) -> ApiServer {
        Self::up_with(t, &[])
    }

    /// Started with extra kube-apiserver flags.
    pub fn up_with(t: &Topology, flags: &[&str]) -> ApiServer {
        let dir = std::env::temp_dir().join(format!("{}-k8s", t.prefix));
        let ns = t.ns("proxy");
        let mut api = ApiServer {
            dir: dir.clone(),
            ns: ns.clone(),
            server: String::new(),
            token: String::new(),
        };
        // From here on, drop takes it down again (also after a failed up).
        sh(Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(root().join("scripts/k8s-test-env.sh"))
            .arg("up")
            .arg(&dir)
            .env("DKP_K8S_APISERVER_ARGS", flags.join(" ")));
        api.server = api.env("DKP_K8S_SERVER");
        api.token = api.env("DKP_K8S_TOKEN");
        api
    }

    /// A value from the environment's `env` file.
    pub fn env(&self, k: &str) -> String {
        let env = std::fs::read_to_string(self.dir.join("env")).unwrap();
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} not in {env}"))
            .trim_matches('\'')
            .to_string()
    }

    /// The API server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.env("DKP_APISERVER_PORT").parse().unwrap()
    }

    pub fn kubeconfig(&self) -> String {
        self.dir.join("kubeconfig").to_string_lossy().into_owned()
    }

    /// A kubeconfig that reaches the API server through 127.0.0.1:`port`
    /// (a [`Relay`]); the serving certificate is for 127.0.0.1, so TLS
    /// verification still holds.
    pub fn kubeconfig_via(&self, port: u16) -> String {
        let text = std::fs::read_to_string(self.kubeconfig()).unwrap();
        let from = format!("server: https://127.0.0.1:{}", self.port());
        assert!(text.contains(&from), "{text}");
        let path = self.dir.join(format!("kubeconfig-via-{port}"));
        std::fs::write(
            &path,
            text.replace(&from, &format!("server: https://127.0.0.1:{port}")),
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    }

    /// One API request; returns (HTTP status, body).
    pub fn req(&self, method: &str, path: &str, body: Option<&Value>, ctype: &str) -> (u16, Value) {
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

    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>, ctype: &str) -> Value {
        let (code, v) = self.req(method, path, body, ctype);
        assert!((200..300).contains(&code), "{method} {path}: {code} {v}");
        v
    }

    pub fn create(&self, path: &str, obj: &Value) -> Value {
        self.ok("POST", path, Some(obj), "application/json")
    }

    pub fn put(&self, path: &str, obj: &Value) -> Value {
        self.ok("PUT", path, Some(obj), "application/json")
    }

    pub fn patch(&self, path: &str, patch: &Value) -> Value {
        self.ok("PATCH", path, Some(patch), "application/merge-patch+json")
    }

    pub fn delete(&self, path: &str) -> Value {
        self.ok("DELETE", path, None, "application/json")
    }

    fn script(&self, cmd: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns])
            .arg(root().join("scripts/k8s-test-env.sh"))
            .arg(cmd)
            .arg(&self.dir);
        c
    }

    /// Restarts kube-apiserver (SIGTERM, then start) in the background.
    pub fn restart(&self) -> Child {
        self.script("restart-apiserver")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// SIGKILLs kube-apiserver (etcd keeps running).
    pub fn kill(&self) {
        sh(&mut self.script("kill-apiserver"));
    }

    /// Starts kube-apiserver again after [`kill`](Self::kill); returns once
    /// it is ready.
    pub fn start(&self) {
        sh(&mut self.script("start-apiserver"));
    }

    /// Compacts etcd at its current revision: older resource versions are
    /// gone (a watch resuming from one gets 410). Returns the revision.
    pub fn compact_etcd(&self) -> u64 {
        sh(&mut self.script("compact-etcd")).trim().parse().unwrap()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/k8s-test-env.sh"))
            .arg("down")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .status();
    }
}

/// tests/e2e/peer.py's TCP relay in the proxy's namespace, from
/// 127.0.0.1:`port` to 127.0.0.1:`target`. Killed on drop.
pub struct Relay {
    ns: String,
    pub port: u16,
    target: u16,
    child: Option<Child>,
}

impl Relay {
    pub fn start(t: &Topology, target: u16) -> Relay {
        let mut r = Relay {
            ns: t.ns("proxy"),
            port: free_port(),
            target,
            child: None,
        };
        r.up();
        r
    }

    /// Starts the relay (again), on the same port; returns once it accepts.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "relay already running");
        let mut c = Command::new("ip")
            .args(["netns", "exec", &self.ns, "python3"])
            .arg(root().join("tests/e2e/peer.py"))
            .args(["relay", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--target", &format!("127.0.0.1:{}", self.target)])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // It prints one line once it listens.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(c.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(line.starts_with("relay "), "relay did not start: {line:?}");
        self.child = Some(c);
    }

    /// Resets every relayed connection (RST both ways); keeps listening.
    pub fn cut(&self) {
        let pid = self.child.as_ref().expect("relay running").id();
        sh(Command::new("kill").args(["-USR1", &pid.to_string()]));
    }

    /// SIGKILLs the relay: its connections close and new ones are refused
    /// until [`up`](Self::up).
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.down();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The KubeProxyConfiguration of the cluster tests: the cluster settings in
/// its fields, the demo's dataplane sections (without Services and admin)
/// in `dpdk:`. `sync` is `iptables:`'s (minSyncPeriod, syncPeriod).
pub fn kube_proxy_config(
    t: &Topology,
    kubeconfig: &str,
    healthz: &str,
    sync: (&str, &str),
) -> String {
    let cfg = t.demo_config();
    let cfg = &cfg[..cfg.find("\nservices:").expect("demo.yaml has services")];
    let admin = format!("admin:\n  bind: {}", t.admin);
    assert!(cfg.contains(&admin), "demo.yaml's admin section");
    let dpdk: String = cfg
        .replace(&admin, "")
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect();
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: dpdk\n\
         clientConnection:\n  kubeconfig: {kubeconfig}\nhostnameOverride: file-node\n\
         metricsBindAddress: {}\nhealthzBindAddress: {healthz}\n\
         clusterCIDR: 198.18.1.0/24,2001:2:0:1::/64\n\
         iptables:\n  minSyncPeriod: {}\n  syncPeriod: {}\ndpdk:\n{dpdk}",
        t.admin, sync.0, sync.1
    )
}

/// An HTTP GET from the proxy's namespace: "CODE BODY".
pub fn http_get(t: &Topology, addr: &str, path: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &t.ns("proxy"), "python3"])
        .arg(root().join("tests/e2e/peer.py"))
        .args(["http-get", "--status", &format!("http://{addr}{path}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (20 s at most) until `healthz` answers 200.
pub fn wait_healthy(t: &Topology, healthz: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http_get(t, healthz, "/healthz");
        if r.starts_with("200") {
            return;
        }
        assert!(Instant::now() < deadline, "healthz never became ready: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub const SVCS: &str = "/api/v1/namespaces/default/services";
pub const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// An endpoint: backend index (be1..be3), node, and (ready, serving, terminating).
pub type Ep = (u8, &'static str, (bool, bool, bool));

/// An EndpointSlice as the EndpointSlice controller writes it.
pub fn slice(name: &str, svc: &str, ports: &[(&str, u16, &str)], eps: &[Ep]) -> Value {
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

pub const READY: (bool, bool, bool) = (true, true, false);
pub const TERMINATING: (bool, bool, bool) = (false, true, true);
pub const WEB_PORTS: &[(&str, u16, &str)] = &[("http", 8080, "TCP"), ("dns", 5353, "UDP")];

/// A ClusterIP Service with the web ports (http 80/TCP → "http", dns 53/UDP
/// → "dns"); returns its cluster IP.
pub fn web_service(api: &ApiServer, name: &str) -> String {
    let v = api.create(
        SVCS,
        &json!({"metadata": {"name": name}, "spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
            {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"}]}}),
    );
    let vip = v["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(vip.starts_with("198.18."), "{v}");
    vip
}

/// Runs `clients` until `ok` holds for its report (or panics after 30 s).
pub fn eventually(t: &Topology, what: &str, args: &[&str], ok: impl Fn(&Value) -> bool) -> Value {
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
pub fn answered(v: &Value, proto: &str) -> Option<Vec<String>> {
    let (c, errors) = super::counts(v, proto);
    (errors == 0).then(|| c.into_iter().map(|x| x.0).collect())
}
