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
