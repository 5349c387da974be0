//! Shared pieces of the end-to-end tests: the scripts/netns.sh topology
//! with kernel peers, the proxy binary started in it, and assertions on the
//! peers' JSON reports. Each test binary uses a subset.
#![allow(dead_code)]
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod k8s;
pub mod node;

pub const BIN: &str = env!("CARGO_BIN_EXE_dpdk-kube-proxy");

/// The proxy binary to run: `$DKP_BIN` when set (a copy of this checkout's
/// build, when several checkouts share a target directory and overwrite
/// each other's `target/debug/dpdk-kube-proxy`), else [`BIN`].
pub fn bin() -> String {
    std::env::var("DKP_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// `tests/e2e/peer.py ARGS` in network namespace `netns`.
fn peer_command(netns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns, "python3"])
        .arg(root().join("tests/e2e/peer.py"))
        .args(args);
    c
}

/// Runs `peer.py ARGS` in `netns` and parses its JSON report.
pub fn peer_in(netns: &str, args: &[&str]) -> Value {
    let out = sh(&mut peer_command(netns, args));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bad peer output {out:?}: {e}"))
}

/// Starts `peer.py ARGS` in `netns`, stdout piped.
pub fn spawn_peer_in(netns: &str, args: &[&str]) -> Child {
    peer_command(netns, args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// GET `http://ADMIN/PATH` from `netns`: the body, `None` on any failure.
pub fn http_get_in(netns: &str, admin: &str, path: &str) -> Option<String> {
    let out = peer_command(netns, &["http-get", &format!("http://{admin}{path}")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The sum of the samples of metric `name` whose line contains `filter`.
pub fn metric_sum_of(metrics: &str, name: &str, filter: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Topology {
    pub prefix: String,
    pub children: Vec<Child>,
    pub proxy: Option<Child>,
    pub config: PathBuf,
    pub admin: String,
    pub log: PathBuf,
}

impl Topology {
    pub fn up(prefix: &str) -> Topology {
        // A free port, so concurrent runs (other checkouts) do not clash.
        let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free admin port")
            .port();
        sh(Command::new(root().join("scripts/netns.sh"))
            .env("P0_MTU", "1280")
            .args(["up", prefix]));
        let mut t = Topology {
            prefix: prefix.into(),
            children: vec![],
            proxy: None,
            config: std::env::temp_dir().join(format!("{prefix}-config.yaml")),
            admin: format!("127.0.0.1:{admin_port}"),
            log: std::env::temp_dir().join(format!("{prefix}-proxy.log")),
        };
        for i in 1..=3 {
            let c = Command::new("ip")
                .args(["netns", "exec", &format!("{prefix}-be{i}"), "python3"])
                .arg(root().join("tests/e2e/peer.py"))
                .args(["serve", "--name", &format!("be{i}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("backend server");
            t.children.push(c);
        }
        t
    }

    pub fn ns(&self, n: &str) -> String {
        format!("{}-{}", self.prefix, n)
    }

    /// scripts/demo.yaml for this topology (its ports and admin address).
    pub fn demo_config(&self) -> String {
        let base = std::fs::read_to_string(root().join("scripts/demo.yaml")).unwrap();
        base.replace("iface=P0", &format!("iface={}0", self.prefix))
            .replace("iface=P1", &format!("iface={}1", self.prefix))
            .replace("127.0.0.1:PORT", &self.admin)
            // The proxy's end of the client link has MTU 1280 (see up()).
            .replace(
                "  - device: net_af_packet0\n",
                "  - device: net_af_packet0\n    mtu: 1280\n",
            )
    }

    pub fn write_config(&self, backends_web: &[u8], backends_udp: &[u8]) {
        let text = self.demo_config();
        let list = |port: u16, b: &[u8]| {
            let v: Vec<String> = b
                .iter()
                .map(|i| format!("\"198.18.1.1{i}:{port}\""))
                .collect();
            format!("[{}]", v.join(", "))
        };
        let text = text
            .replace(
                r#"["198.18.1.11:8080", "198.18.1.12:8080", "198.18.1.13:8080"]"#,
                &list(8080, backends_web),
            )
            .replace(
                r#"["198.18.1.11:5353", "198.18.1.12:5353", "198.18.1.13:5353"]"#,
                &list(5353, backends_udp),
            );
        self.write_config_text(&text);
    }

    /// Writes the config atomically (write + rename), as an operator would.
    pub fn write_config_text(&self, text: &str) {
        let tmp = self.config.with_extension("tmp");
        std::fs::File::create(&tmp)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    pub fn start_proxy(&mut self) {
        self.start_proxy_with(&[]);
    }

    /// Starts the proxy in the proxy namespace with extra arguments.
    pub fn start_proxy_with(&mut self, extra: &[&str]) {
        self.start_proxy_wrapped(&[], extra)
    }

    /// Starts the proxy through `wrapper` (a command that execs the rest,
    /// e.g. setpriv), with extra arguments.
    pub fn start_proxy_wrapped(&mut self, wrapper: &[&str], extra: &[&str]) {
        let log = std::fs::File::create(&self.log).unwrap();
        let c = Command::new("ip")
            .args(["netns", "exec", &self.ns("proxy")])
            .args(wrapper)
            .arg(bin())
            .arg("--config")
            .arg(&self.config)
            .args(["--reload-interval", "200ms"])
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("proxy");
        self.proxy = Some(c);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(m) = self.try_get("/proxyMode") {
                assert_eq!(m, "dpdk");
                break;
            }
            if let Some(st) = self.proxy.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "proxy exited with {st}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "proxy did not come up: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn try_get(&self, path: &str) -> Option<String> {
        http_get_in(&self.ns("proxy"), &self.admin, path)
    }

    pub fn metric_sum(&self, name: &str, label_filter: &str) -> u64 {
        metric_sum_of(
            &self.try_get("/metrics").expect("metrics"),
            name,
            label_filter,
        )
    }

    /// Non-zero drop counters, for failure messages.
    pub fn drops(&self) -> String {
        let m = self.try_get("/metrics").unwrap_or_default();
        m.lines()
            .filter(|l| {
                (l.contains("dropped") || l.contains("port_rx_missed"))
                    && !l.starts_with('#')
                    && !l.ends_with(" 0")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn peer(&self, ns: &str, args: &[&str]) -> Value {
        peer_in(&self.ns(ns), args)
    }

    pub fn spawn_peer(&self, ns: &str, args: &[&str]) -> Child {
        spawn_peer_in(&self.ns(ns), args)
    }

    /// Waits until every worker uses table `version`.
    pub fn wait_version(&self, version: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.try_get("/metrics").unwrap_or_default();
            let versions: Vec<u64> = m
                .lines()
                .filter(|l| l.starts_with("dpdk_kube_proxy_worker_table_version{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                .collect();
            if !versions.is_empty() && versions.iter().all(|&v| v == version) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "workers did not reach table {version}: {versions:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(p.id().to_string())
                .status();
            let _ = p.wait();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(root().join("scripts/netns.sh"))
            .args(["down", &self.prefix])
            .status();
        let _ = std::fs::remove_file(&self.config);
        // The proxy's log: shown when the test failed, then removed either way.
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last lines of {} ---", self.log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

pub fn counts(v: &Value, proto: &str) -> (Vec<(String, u64)>, u64) {
    let c = v[proto]["counts"].as_object().expect("counts");
    let mut out: Vec<(String, u64)> = c
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    out.sort();
    (out, v[proto]["errors"].as_u64().unwrap())
}

/// Every backend got its share of `total` randomly spread connections: the
/// bounds are 4.5 binomial standard deviations either side of an even split
/// (a false alarm about once in 10^5 calls), so they widen for small samples
/// — 60 connections over 3 backends allow 4..=36 each, 300 allow 64..=136.
pub fn assert_spread(v: &Value, proto: &str, total: u64, backends: &[&str]) {
    let p = 1.0 / backends.len() as f64;
    let sd = (total as f64 * p * (1.0 - p)).sqrt();
    let slack = 4.5 * sd / total as f64;
    let low = (p - slack).max(1.0 / total as f64);
    assert_spread_within(v, proto, total, backends, low..=p + slack)
}

/// Like [`assert_spread`] with explicit share bounds (smaller samples vary more).
pub fn assert_spread_within(
    v: &Value,
    proto: &str,
    total: u64,
    backends: &[&str],
    bounds: std::ops::RangeInclusive<f64>,
) {
    let (c, errors) = counts(v, proto);
    assert_eq!(errors, 0, "{proto}: {v}");
    let sum: u64 = c.iter().map(|x| x.1).sum();
    assert_eq!(sum, total, "{proto}: {v}");
    let names: Vec<&str> = c.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(names, backends, "{proto}: {v}");
    for (name, n) in &c {
        let share = *n as f64 / total as f64;
        assert!(
            bounds.contains(&share),
            "{proto}: {name} got {share:.2} of connections: {v}"
        );
    }
}

/// `count` TCP and `count` UDP requests from the client to `vip`.
pub fn clients(t: &Topology, vip: &str, count: u32) -> Value {
    let count = count.to_string();
    t.peer(
        "client",
        &[
            "clients",
            "--vip",
            vip,
            "--count",
            &count,
            "--concurrency",
            "12",
        ],
    )
}

/// TCP to `vip` is refused (RST) and UDP gets ECONNREFUSED (ICMP unreachable).
pub fn assert_refused(t: &Topology, vip: &str) -> Value {
    let r = t.peer("client", &["reject", "--vip", vip]);
    assert_eq!(r["tcp"], "refused", "{r}");
    assert_eq!(r["udp"], "refused", "{r}");
    r
}

/// Every backend saw only the given source addresses (for each protocol the
/// report has).
pub fn assert_sources(v: &Value, want: &[&str]) {
    for proto in ["tcp", "udp"] {
        let Some(sources) = v[proto]["sources"].as_object() else {
            continue;
        };
        for (name, per) in sources {
            let got: Vec<&String> = per.as_object().unwrap().keys().collect();
            assert_eq!(got, want, "{proto} {name}: {v}");
        }
    }
}

/// The effective capability set of process `pid` (`CapEff` in its status).
pub fn cap_eff(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("no CapEff: {status}"))
}

pub fn require_root() {
    let uid = sh(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "the end-to-end tests need root (network namespaces, af_packet)"
    );
}
