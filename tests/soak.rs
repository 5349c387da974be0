//! A short run of the soak test (`scripts/soak.sh`, 10 minutes by default):
//! the real binary on af_packet ports with kernel peers, mixed TCP/UDP with
//! the table changed every second for 30 s; mbufs in use, live sessions and
//! RSS back at their baseline afterwards, no established flow broken.
//! Needs root.
use serde_json::Value;
use std::process::Command;

mod support;
use support::*;

#[test]
fn soak_short_run() {
    require_root();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
        .to_string();
    let out = Command::new(root().join("scripts/soak.sh"))
        .args(["--bin", BIN, "--duration", "30", "--warmup", "5"])
        .args(["--admin-port", &admin])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no report ({e}): {stderr}"));
    assert!(out.status.success(), "{r}\n{stderr}");
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["failures"].as_array().unwrap().is_empty(), "{r}");
    // The churn happened and traffic flowed.
    assert!(r["table_changes"].as_u64().unwrap() >= 27, "{r}");
    assert!(r["table_version"].as_f64().unwrap() >= 28.0, "{r}");
    assert!(r["sessions_created"].as_f64().unwrap() > 1000.0, "{r}");
    assert_eq!(r["long_lived_tcp"].as_array().unwrap().len(), 4, "{r}");
    for l in r["long_lived_tcp"].as_array().unwrap() {
        assert_eq!(l["n_errors"], 0, "{r}");
    }
    // Back at the baseline.
    assert_eq!(r["after"]["sessions"], r["baseline"]["sessions"], "{r}");
    assert_eq!(
        r["after"]["mbufs_in_use"], r["baseline"]["mbufs_in_use"],
        "{r}"
    );
    eprintln!("{stderr}");
}
