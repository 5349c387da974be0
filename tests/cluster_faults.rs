//! API faults, against a real kube-apiserver + etcd: the API server killed
//! (SIGKILL) and restarted, the proxy's watch connections cut while the API
//! server stays up, objects deleted while the proxy is disconnected, and
//! resource versions expiring (410 Gone) while it is away. Through all of
//! them a long-lived TCP flow and a UDP flow keep their backend and new
//! connections are served with the last table; after each, the dataplane
//! converges on what changed meanwhile.
//!
//! The proxy reaches the API server through a TCP relay (peer.py `relay`)
//! the test can cut (RST) or stop; the test talks to the API server
//! directly. The API server runs without a watch cache, so watches are
//! served by etcd and a watch resuming from before an etcd compaction gets
//! "410 Gone". Needs root; builds (or reuses the cached) kube-apiserver and
//! etcd.
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

mod support;
use support::k8s::*;
use support::*;

/// Service port name → its backends, from the proxy's `/debug/services`
/// (without the API server's own `kubernetes` Service).
fn table(t: &Topology) -> BTreeMap<String, Vec<String>> {
    let text = t.try_get("/debug/services").expect("/debug/services");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut b: Vec<String> = s["backends"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_str().unwrap().to_string())
                .collect();
            b.sort();
            (s["name"].as_str().unwrap().to_string(), b)
        })
        .filter(|(name, _)| !name.starts_with("default/kubernetes:"))
        .collect()
}

/// The table the proxy should have: each Service (web ports) with backends
/// be<i> for i in its list.
fn expected(want: &[(&str, &[u8])]) -> BTreeMap<String, Vec<String>> {
    let mut m = BTreeMap::new();
    for (name, bes) in want {
        for (port, target) in [("http", 8080), ("dns", 5353)] {
            let b = bes.iter().map(|i| format!("198.18.1.1{i}:{target}"));
            m.insert(format!("default/{name}:{port}"), b.collect());
        }
    }
    m
}

/// Waits until the proxy's table is `want`; returns how long since `since`.
fn converge(t: &Topology, what: &str, want: &[(&str, &[u8])], since: Instant) -> Duration {
    let want = expected(want);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = table(t);
        if got == want {
            let d = since.elapsed();
            eprintln!(
                "api faults: {what}: converged {:.2} s after reconnecting",
                d.as_secs_f64()
            );
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: table {got:#?}\nwant {want:#?}\nlog:\n{}",
            t.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// New TCP and UDP connections to `vip` all reach exactly `backends`.
fn serves(t: &Topology, what: &str, vip: &str, backends: &[&str]) {
    let args = ["--vip", vip, "--count", "9", "--concurrency", "9"];
    eventually(t, what, &args, |v| {
        ["tcp", "udp"]
            .iter()
            .all(|p| answered(v, p).is_some_and(|b| b == backends))
    });
}

/// `vip` is no Service frontend any more: not NATed.
fn not_nated(t: &Topology, what: &str, vip: &str) {
    let q = format!("/debug/lookup?src=198.18.0.2:40000&dst={vip}:80");
    let v: Value = serde_json::from_str(&t.try_get(&q).unwrap()).unwrap();
    assert!(v["service"].is_null(), "{what}: {v}");
    let r = t.peer(
        "client",
        &[
            "clients",
            "--vip",
            vip,
            "--proto",
            "tcp",
            "--count",
            "2",
            "--timeout",
            "0.3",
        ],
    );
    assert_eq!(counts(&r, "tcp"), (vec![], 2), "{what}: {r}");
}

/// A Service with one EndpointSlice of `backends`; returns its VIP.
fn service(api: &ApiServer, name: &str, backends: &[u8]) -> String {
    let vip = web_service(api, name);
    let eps: Vec<Ep> = backends.iter().map(|i| (*i, "node-a", READY)).collect();
    api.create(SLICES, &slice(&format!("{name}-1"), name, WEB_PORTS, &eps));
    vip
}

/// The long-lived flows, killed on drop (a failed test) so they do not
/// outlive it.
struct Flows(Vec<Child>);

impl Drop for Flows {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn expired(t: &Topology, resource: &str) -> u64 {
    t.metric_sum(
        "dpdk_kube_proxy_watch_expired_total",
        &format!("resource=\"{resource}\""),
    )
}

#[test]
fn api_faults_keep_forwarding_and_converge() {
    require_root();
    let started = Instant::now();
    let prefix = format!("df{}", std::process::id() % 100_000);
    let mut t = Topology::up(&prefix);
    // Declared after the topology: dropped (stopped) before its namespace goes.
    let api = ApiServer::up_with(&t, &["--watch-cache=false"]);
    let mut relay = Relay::start(&t, api.port());
    let healthz = format!("127.0.0.1:{}", free_port());
    t.write_config_text(&kube_proxy_config(
        &t,
        &api.kubeconfig_via(relay.port),
        &healthz,
        ("100ms", "1h"),
    ));
    t.start_proxy_with(&["--hostname-override", "node-a"]);

    // web carries the long-lived flows and never changes; gone<i> are
    // deleted in fault i, new<i> created; drain loses its EndpointSlice.
    let web = service(&api, "web", &[1, 2, 3]);
    let gone: Vec<String> = (1..=3)
        .map(|i| service(&api, &format!("gone{i}"), &[i]))
        .collect();
    let drain = service(&api, "drain", &[2]);
    wait_healthy(&t, &healthz);
    let mut want: Vec<(&str, &[u8])> = vec![
        ("web", &[1, 2, 3]),
        ("gone1", &[1]),
        ("gone2", &[2]),
        ("gone3", &[3]),
        ("drain", &[2]),
    ];
    converge(&t, "initial", &want, Instant::now());
    serves(&t, "web", &web, &["be1", "be2", "be3"]);
    let stop = std::env::temp_dir().join(format!("{prefix}-flows-stop"));
    let _ = std::fs::remove_file(&stop);
    let stop_s = stop.to_string_lossy().into_owned();
    let mut flows = Flows(vec![
        t.spawn_peer(
            "client",
            &[
                "longlived",
                "--vip",
                &web,
                "--duration",
                "150",
                "--interval",
                "0.1",
                "--stop-file",
                &stop_s,
            ],
        ),
        t.spawn_peer(
            "client",
            &[
                "udp-stream",
                "--vip",
                &web,
                "--duration",
                "150",
                "--interval",
                "0.05",
                "--timeout",
                "0.5",
                "--stop-file",
                &stop_s,
            ],
        ),
    ]);
    let setup = started.elapsed();

    // a. The API server is killed. The dataplane keeps the last table and
    // serves new connections with it; after the restart, a Service created
    // and another deleted converge.
    let before = table(&t);
    api.kill();
    let down = Instant::now();
    // New connections: every one answered, by web's backends.
    let v = clients(&t, &web, 24);
    for p in ["tcp", "udp"] {
        let b = answered(&v, p).unwrap_or_default();
        assert!(
            !b.is_empty()
                && b.iter()
                    .all(|b| ["be1", "be2", "be3"].contains(&b.as_str())),
            "while the API server is down: {v}"
        );
    }
    serves(&t, "gone1 while the API server is down", &gone[0], &["be1"]);
    std::thread::sleep(Duration::from_secs(2).saturating_sub(down.elapsed()));
    assert_eq!(
        table(&t),
        before,
        "the table changed while the API server was down"
    );
    assert!(
        t.try_get("/healthz").is_some(),
        "unhealthy while the API server is down"
    );
    api.start();
    let restarted = Instant::now();
    let outage = down.elapsed();
    let new1 = service(&api, "new1", &[1]);
    api.delete(&format!("{SVCS}/gone1"));
    want.retain(|w| w.0 != "gone1");
    want.push(("new1", &[1]));
    let conv_a = converge(&t, "a. API server killed", &want, restarted);
    serves(&t, "new1", &new1, &["be1"]);
    not_nated(&t, "gone1", &gone[0]);

    // b. The watch connections are cut (RST) while the API server stays up,
    // three times, with changes in between.
    let cut = Instant::now();
    relay.cut();
    let new2 = service(&api, "new2", &[2]);
    relay.cut();
    api.put(
        &format!("{SLICES}/new1-1"),
        &slice("new1-1", "new1", WEB_PORTS, &[(3, "node-a", READY)]),
    );
    relay.cut();
    want.retain(|w| w.0 != "new1");
    want.push(("new1", &[3]));
    want.push(("new2", &[2]));
    let conv_b = converge(&t, "b. watch streams cut", &want, cut);
    serves(&t, "new2", &new2, &["be2"]);
    serves(&t, "new1 moved", &new1, &["be3"]);

    // c. Disconnected (relay down): a Service and another one's only
    // EndpointSlice are deleted and a Service is created. The proxy keeps
    // its table meanwhile; after the reconnect (the watches resume) the
    // deleted ones are gone and the new one works.
    let before = table(&t);
    relay.down();
    api.delete(&format!("{SVCS}/gone2"));
    api.delete(&format!("{SLICES}/drain-1"));
    let new3 = service(&api, "new3", &[3]);
    serves(&t, "gone2 while disconnected", &gone[1], &["be2"]);
    assert_eq!(table(&t), before, "the table changed while disconnected");
    relay.up();
    let up = Instant::now();
    want.retain(|w| w.0 != "gone2" && w.0 != "drain");
    want.push(("drain", &[]));
    want.push(("new3", &[3]));
    let conv_c = converge(&t, "c. deleted while disconnected", &want, up);
    serves(&t, "new3", &new3, &["be3"]);
    not_nated(&t, "gone2", &gone[1]);
    assert_refused(&t, &drain);

    // d. Disconnected again; changes, then etcd is compacted: the resumed
    // watches get 410 Gone, relist at once and replace their state.
    let exp0 = (expired(&t, "services"), expired(&t, "endpointslices"));
    relay.down();
    api.delete(&format!("{SVCS}/gone3"));
    let new4 = service(&api, "new4", &[1]);
    api.put(
        &format!("{SLICES}/new2-1"),
        &slice("new2-1", "new2", WEB_PORTS, &[(1, "node-a", READY)]),
    );
    let rev = api.compact_etcd();
    relay.up();
    let up = Instant::now();
    want.retain(|w| w.0 != "gone3" && w.0 != "new2");
    want.push(("new2", &[1]));
    want.push(("new4", &[1]));
    let conv_d = converge(&t, "d. 410 Gone", &want, up);
    serves(&t, "new4", &new4, &["be1"]);
    serves(&t, "new2 moved", &new2, &["be1"]);
    not_nated(&t, "gone3", &gone[2]);
    let exp1 = (expired(&t, "services"), expired(&t, "endpointslices"));
    assert!(
        exp1.0 > exp0.0 && exp1.1 > exp0.1,
        "watch_expired {exp0:?} -> {exp1:?} (etcd compacted at {rev})\n{}",
        t.log_text()
    );
    let log = t.log_text();
    assert!(
        log.contains("resource version expired") && log.contains("relisted"),
        "{log}"
    );

    // The long-lived flows kept their backend, without an error.
    std::fs::write(&stop, "").unwrap();
    let outs: Vec<Value> = flows
        .0
        .drain(..)
        .map(|c| serde_json::from_slice(&c.wait_with_output().unwrap().stdout).unwrap())
        .collect();
    let _ = std::fs::remove_file(&stop);
    let (tcp, udp) = (&outs[0], &outs[1]);
    assert_eq!(tcp["n_errors"], 0, "long-lived TCP: {tcp}");
    assert_eq!(tcp["backends"].as_array().unwrap().len(), 1, "{tcp}");
    assert!(tcp["requests"].as_u64().unwrap() > 100, "{tcp}");
    assert_eq!(udp["n_errors"], 0, "UDP flow: {udp}");
    assert_eq!(udp["runs"].as_array().unwrap().len(), 1, "UDP flow: {udp}");
    assert!(t.try_get("/healthz").is_some());
    for l in log.lines().filter(|l| l.contains("relist")) {
        eprintln!("proxy: {l}");
    }
    eprintln!(
        "api faults: setup {:.1} s; API server down {:.1} s; converged a {:.2} s, b {:.2} s, \
         c {:.2} s, d {:.2} s; TCP flow {} requests, UDP flow {} datagrams, 0 errors; \
         expired {exp0:?} -> {exp1:?}; total {:.1} s",
        setup.as_secs_f64(),
        outage.as_secs_f64(),
        conv_a.as_secs_f64(),
        conv_b.as_secs_f64(),
        conv_c.as_secs_f64(),
        conv_d.as_secs_f64(),
        tcp["requests"],
        udp["runs"][0][1],
        started.elapsed().as_secs_f64()
    );
}
