//! A proxy running inside a "node" network namespace among others the
//! test creates (`P-node`, `P-lan`, …): the namespaces, the proxy process
//! (its admin server on the node's 127.0.0.1), the peers, and their cleanup.
use super::{bin, http_get_in, metric_sum_of, peer_in, root, sh, spawn_peer_in};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NodeProxy {
    /// The test's name prefix: namespace `n` is `{p}-{n}`.
    pub p: String,
    pub admin: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub proxy: Option<Child>,
    /// Servers and clients killed at the end.
    pub children: Vec<Child>,
    namespaces: Vec<&'static str>,
}

impl NodeProxy {
    /// Namespaces `namespaces` (the proxy's is "node"), created afresh
    /// (leftovers of an earlier run removed) with `lo` up.
    pub fn new(p: &str, namespaces: &[&'static str]) -> NodeProxy {
        let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free admin port")
            .port();
        let n = NodeProxy {
            p: p.into(),
            admin: format!("127.0.0.1:{admin_port}"),
            config: std::env::temp_dir().join(format!("{p}-node.yaml")),
            log: std::env::temp_dir().join(format!("{p}-node.log")),
            proxy: None,
            children: vec![],
            namespaces: namespaces.to_vec(),
        };
        n.down();
        for ns in namespaces {
            sh(Command::new("ip").args(["netns", "add", &n.ns(ns)]));
            n.ip(ns, "link set lo up");
        }
        n
    }

    pub fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.p)
    }

    /// `ip -n NS ARGS...` (split on whitespace).
    pub fn ip(&self, ns: &str, args: &str) {
        sh(Command::new("ip")
            .args(["-n", &self.ns(ns)])
            .args(args.split_whitespace()));
    }

    pub fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(ns)]).args(args);
        c
    }

    /// Starts `peer.py serve --name NAME --tcp TCP --udp UDP` in `ns`
    /// (killed at the end).
    pub fn serve(&mut self, ns: &str, name: &str, tcp: &str, udp: &str) {
        let child = self
            .exec(ns, &["python3"])
            .arg(root().join("tests/e2e/peer.py"))
            .args(["serve", "--name", name, "--tcp", tcp, "--udp", udp])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("peer server");
        self.children.push(child);
    }

    pub fn sysctl(&self, ns: &str, settings: &[&str]) {
        let mut args = vec!["sysctl", "-qw"];
        args.extend_from_slice(settings);
        sh(&mut self.exec(ns, &args));
    }

    pub fn try_get(&self, path: &str) -> Option<String> {
        http_get_in(&self.ns("node"), &self.admin, path)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metric(&self, name: &str, filter: &str) -> u64 {
        metric_sum_of(&self.try_get("/metrics").expect("metrics"), name, filter)
    }

    pub fn peer(&self, ns: &str, args: &[&str]) -> Value {
        peer_in(&self.ns(ns), args)
    }

    pub fn spawn_peer(&self, ns: &str, args: &[&str]) -> Child {
        spawn_peer_in(&self.ns(ns), args)
    }

    /// Starts the proxy in the node namespace with `config`; returns once
    /// its admin server answers.
    pub fn start_proxy(&mut self) {
        self.start_proxy_wrapped(&[]);
    }

    /// As [`NodeProxy::start_proxy`], under `wrapper` (e.g. `setpriv ...
    /// --`).
    pub fn start_proxy_wrapped(&mut self, wrapper: &[&str]) {
        let log = std::fs::File::create(&self.log).unwrap();
        let bin = bin();
        let mut args: Vec<&str> = wrapper.to_vec();
        args.extend([bin.as_str(), "--config"]);
        let c = self
            .exec("node", &args)
            .arg(&self.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("proxy");
        self.proxy = Some(c);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.try_get("/proxyMode").as_deref() != Some("dpdk") {
            if let Some(st) = self.proxy.as_mut().unwrap().try_wait().unwrap() {
                panic!("proxy exited with {st}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "proxy did not come up: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM; the proxy must exit cleanly.
    pub fn stop_proxy(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &p.id().to_string()])
                .status();
            let st = p.wait().unwrap();
            assert!(st.success(), "proxy exit: {st}: {}", self.log_text());
        }
    }

    /// SIGKILL: nothing is cleaned up.
    pub fn kill_proxy(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    fn down(&self) {
        let listed = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for ns in &self.namespaces {
            let ns = self.ns(ns);
            if listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns.as_str()))
            {
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            }
        }
    }
}

impl Drop for NodeProxy {
    fn drop(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &p.id().to_string()])
                .status();
            let _ = p.wait();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting the namespaces deletes their veths, bridges and TAPs.
        self.down();
        let _ = std::fs::remove_file(&self.config);
        if std::thread::panicking() {
            eprintln!("--- proxy log ---\n{}", self.log_text());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A `clients` report: answers by `name` only, every one of `n`, from
/// `source` as the server saw it.
pub fn assert_all(v: &Value, proto: &str, n: u64, name: &str, source: &str) {
    let r = &v[proto];
    assert_eq!(r["errors"], 0, "{proto}: {v}");
    assert_eq!(r["counts"][name].as_u64(), Some(n), "{proto}: {v}");
    assert_eq!(r["counts"].as_object().unwrap().len(), 1, "{proto}: {v}");
    assert_eq!(r["sources"][name][source].as_u64(), Some(n), "{proto}: {v}");
}

/// The JSON report of a peer started with `spawn_peer`.
pub fn wait_json(c: Child) -> Value {
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "peer failed");
    let s = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("bad peer output {s:?}: {e}"))
}
