//! Load-balancing algorithms end to end: the real binary with two workers on
//! af_packet ports, kernel TCP/UDP clients and backends (scripts/netns.sh
//! topology); the node-wide algorithm changed by rewriting the config file.
//! Needs root.
use serde_json::Value;
use std::process::Command;

mod support;
use support::*;

const VIP: &str = "198.18.100.1";
const BACKENDS: [&str; 3] = ["be1", "be2", "be3"];

/// Sessions each worker created so far.
fn created_per_worker(t: &Topology) -> Vec<u64> {
    let m = t.try_get("/metrics").expect("metrics");
    m.lines()
        .filter(|l| l.starts_with("dpdk_kube_proxy_sessions_created_total{worker="))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

fn config(t: &Topology, algorithm: &str) -> String {
    let c = t.demo_config();
    assert!(c.contains("\nservices:\n"), "demo.yaml has services");
    // UDP sessions expire quickly: each phase starts without the last
    // phase's flows (a datagram from a source port still in a session keeps
    // that session's backend, whatever the algorithm).
    c.replace(
        "\nservices:\n",
        &format!(
            "\nload_balancing: {algorithm}\ntimeouts: {{udp: 1s, udp_stream: 1s}}\nservices:\n"
        ),
    )
}

/// Lets the last phase's UDP sessions expire.
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(2500));
}

/// `dpdk-kube-proxy inspect ARGS` against the running proxy.
fn inspect(t: &Topology, args: &[&str]) -> String {
    sh(Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.ns("proxy"),
            BIN,
            "inspect",
            "--admin",
            &t.admin,
        ])
        .args(args))
}

/// Chi-square statistic of `c` against equal shares.
fn chi2(c: &[(String, u64)]) -> f64 {
    let total: u64 = c.iter().map(|x| x.1).sum();
    let e = total as f64 / c.len() as f64;
    c.iter().map(|(_, o)| (*o as f64 - e).powi(2) / e).sum()
}

fn check_no_errors(v: &Value, proto: &str, total: u64) -> Vec<(String, u64)> {
    let (c, errors) = counts(v, proto);
    assert_eq!(errors, 0, "{proto}: {v}");
    assert_eq!(c.iter().map(|x| x.1).sum::<u64>(), total, "{proto}: {v}");
    c
}

#[test]
fn e2e_load_balancing_algorithms_with_two_workers() {
    require_root();
    let prefix = format!("dl{}", std::process::id() % 100_000);
    let mut t = Topology::up(&prefix);
    t.write_config_text(&config(&t, "round-robin"));
    t.start_proxy();
    t.wait_version(1);

    // Round-robin: one rotation shared by both workers, so 300 new TCP
    // connections (each owned by whichever worker its client port maps to)
    // give every backend exactly 100. UDP requests come from random
    // ephemeral ports: the few that reuse a port still in a session stay on
    // its backend, so UDP is within a few of 100.
    let before = created_per_worker(&t);
    let v = clients(&t, VIP, 300);
    let c = check_no_errors(&v, "tcp", 300);
    let want: Vec<(String, u64)> = BACKENDS.iter().map(|b| (b.to_string(), 100)).collect();
    assert_eq!(c, want, "tcp: {v}");
    let c = check_no_errors(&v, "udp", 300);
    assert_eq!(c.len(), 3, "udp: {v}");
    assert!(c.iter().all(|x| (94..=106).contains(&x.1)), "udp: {v}");
    let after = created_per_worker(&t);
    assert_eq!(after.len(), 2, "two workers");
    for w in 0..2 {
        assert!(
            after[w] - before[w] >= 100,
            "worker {w} created {} of 600 sessions: both cores pick",
            after[w] - before[w]
        );
    }

    // `inspect` names the algorithm; a lookup cannot name the next
    // round-robin backend (and must not move the rotation).
    assert!(inspect(&t, &[]).contains("demo/web  lb round-robin"));
    let l: Value = serde_json::from_str(&inspect(
        &t,
        &["lookup", "198.18.0.2:40000", "198.18.100.1:80"],
    ))
    .unwrap();
    assert_eq!(l["loadBalancing"], "round-robin", "{l}");
    assert_eq!(l["backend"], Value::Null, "{l}");

    // Source hash: the one client address gets one backend for every
    // connection, from both workers.
    t.write_config_text(&config(&t, "source-hash"));
    t.wait_version(2);
    settle();
    let v = clients(&t, VIP, 200);
    for proto in ["tcp", "udp"] {
        let c = check_no_errors(&v, proto, 200);
        assert_eq!(c.len(), 1, "{proto}: one backend for one client: {v}");
    }
    // ... the one `inspect lookup` names, whatever the client port.
    let (tcp, _) = counts(&v, "tcp");
    for port in ["1024", "40000"] {
        let src = format!("198.18.0.2:{port}");
        let l: Value =
            serde_json::from_str(&inspect(&t, &["lookup", &src, "198.18.100.1:80"])).unwrap();
        let be = l["backend"].as_str().unwrap_or_default().to_string();
        let name = format!(
            "be{}",
            be.trim_start_matches("198.18.1.1")
                .split(':')
                .next()
                .unwrap()
        );
        assert_eq!(name, tcp[0].0, "{l}");
    }

    // Random: uniform over the backends (chi-square, 2 degrees of freedom:
    // 23.03 is the 0.00001 point, so a false alarm is rare).
    t.write_config_text(&config(&t, "random"));
    t.wait_version(3);
    settle();
    let v = clients(&t, VIP, 600);
    for proto in ["tcp", "udp"] {
        let c = check_no_errors(&v, proto, 600);
        assert_eq!(c.len(), 3, "{proto}: {v}");
        assert!(chi2(&c) < 23.03, "{proto}: chi2 {} over {c:?}", chi2(&c));
    }

    // An unknown value in the file is rejected with the field named; the
    // running table (random) stays.
    t.write_config_text(&config(&t, "fastest"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        t.log_text()
            .contains("load_balancing: \"fastest\" is not a load-balancing algorithm"),
        "{}",
        t.log_text()
    );
    assert!(t.metric_sum("dpdk_kube_proxy_config_reload_errors_total", "") >= 1);
    let v = clients(&t, VIP, 60);
    check_no_errors(&v, "tcp", 60);
    check_no_errors(&v, "udp", 60);
}

/// `config` with only backends `web` (of be1..be3) for demo/web.
fn config_with_web(t: &Topology, algorithm: &str, web: &[u8]) -> String {
    let list: Vec<String> = web
        .iter()
        .map(|i| format!("\"198.18.1.1{i}:8080\""))
        .collect();
    config(t, algorithm).replace(
        r#"["198.18.1.11:8080", "198.18.1.12:8080", "198.18.1.13:8080"]"#,
        &format!("[{}]", list.join(", ")),
    )
}

/// demo/web's active connections per backend, from `/metrics`.
fn active(t: &Topology) -> Vec<u64> {
    let m = t.try_get("/metrics").expect("metrics");
    (1..=3)
        .map(|i| {
            metric_sum_of(
                &m,
                "dpdk_kube_proxy_backend_active_connections{",
                &format!("service=\"demo/web\",backend=\"198.18.1.1{i}:8080\""),
            )
        })
        .collect()
}

/// Polls `active` until `f` holds (10 s at most); returns the last value.
fn wait_active(t: &Topology, f: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let a = active(t);
        if f(&a) || std::time::Instant::now() > deadline {
            return a;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn e2e_least_connections_avoids_the_backend_holding_long_lived_connections() {
    require_root();
    let prefix = format!("dc{}", std::process::id() % 100_000);
    let mut t = Topology::up(&prefix);
    // Phase 1: demo/web has only be1, which takes 8 long-lived connections.
    t.write_config_text(&config_with_web(&t, "least-connections", &[1]));
    t.start_proxy();
    t.wait_version(1);
    let stop = std::env::temp_dir().join(format!("{prefix}-stop"));
    let _ = std::fs::remove_file(&stop);
    let stop_s = stop.to_string_lossy().into_owned();
    let long = [
        "longlived",
        "--vip",
        VIP,
        "--duration",
        "60",
        "--interval",
        "0.2",
        "--stop-file",
        &stop_s,
    ];
    let first = t.children.len();
    for _ in 0..8 {
        let c = t.spawn_peer("client", &long);
        t.children.push(c);
    }
    let a = wait_active(&t, |a| a[0] == 8);
    assert_eq!(a, [8, 0, 0], "8 long-lived connections on be1");

    // Phase 2: all three backends (be1 kept: a rebuilt Service keeps its
    // counts). 60 new short connections, 4 at a time, all avoid be1: the
    // others never hold more than the 4 in flight.
    t.write_config_text(&config_with_web(&t, "least-connections", &[1, 2, 3]));
    t.wait_version(2);
    assert_eq!(active(&t)[0], 8, "be1's count survived the table swap");
    let v = t.peer(
        "client",
        &[
            "clients",
            "--vip",
            VIP,
            "--count",
            "60",
            "--concurrency",
            "4",
            "--proto",
            "tcp",
        ],
    );
    let c = check_no_errors(&v, "tcp", 60);
    assert!(
        c.iter().all(|(b, _)| b != "be1"),
        "new connections went to be1: {v}"
    );
    assert_eq!(c.len(), 2, "be2 and be3 share them: {v}");
    // Ties (both idle) break at random: a binomial split at worst, and
    // 12 of 60 is 4.6 standard deviations below an even one.
    assert!(c.iter().all(|x| x.1 >= 12), "{v}");

    // Metrics and inspect show the spread: be1 still holds 8; the short
    // connections ended (FIN) and count no longer.
    let a = wait_active(&t, |a| a == [8, 0, 0]);
    assert_eq!(a, [8, 0, 0]);
    let m = t.try_get("/metrics").unwrap();
    let total = |i: u8| {
        metric_sum_of(
            &m,
            "dpdk_kube_proxy_backend_connections_total{",
            &format!("backend=\"198.18.1.1{i}:8080\""),
        )
    };
    assert_eq!(total(1), 8, "{m}");
    // (A client retry would be one more connection.)
    assert!(total(2) + total(3) >= 60, "{m}");
    assert_eq!(
        metric_sum_of(&m, "dpdk_kube_proxy_backend_metrics_hidden_services", ""),
        0
    );
    let out = inspect(&t, &[]);
    assert!(out.contains("demo/web  lb least-connections"), "{out}");
    let be1 = out
        .lines()
        .find(|l| l.contains("-> 198.18.1.11:8080"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(be1.contains("active 8 "), "{out}");
    let s: Value = serde_json::from_str(&t.try_get("/debug/services").unwrap()).unwrap();
    let web = s["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "demo/web" && x["frontend"] == "198.18.100.1:80/tcp")
        .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(web["connections"][0]["active"], 8, "{web}");

    // The long-lived connections end: be1 drains to 0; none had an error or
    // changed backend.
    std::fs::write(&stop, b"").unwrap();
    for mut c in t.children.drain(first..).collect::<Vec<_>>() {
        let out = output_of(&mut c);
        let r: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out:?}: {e}"));
        assert_eq!(r["n_errors"], 0, "{r}");
        assert_eq!(r["backends"], serde_json::json!(["be1"]), "{r}");
    }
    let _ = std::fs::remove_file(&stop);
    let a = wait_active(&t, |a| a == [0, 0, 0]);
    assert_eq!(a, [0, 0, 0], "closed connections no longer count");
}

/// Waits for `c` and reads all of its stdout (piped by `spawn_peer`).
fn output_of(c: &mut std::process::Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut o) = c.stdout.take() {
        let _ = o.read_to_string(&mut s);
    }
    let _ = c.wait();
    s
}
