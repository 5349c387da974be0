//! Beside the kernel, end to end: the node's kernel keeps its NIC (a veth
//! with the node's addresses) and the proxy serves Services on it through
//! an af_xdp `role: shared` port whose XDP program hands the dataplane only
//! Service traffic.
//!
//! ```text
//!  P-client 198.18.0.2 ─┐                        P-node (the proxy runs here)
//!  2001:2::2            ├─ bridge (P-lan) ─ veth ─ Pu: the kernel's interface,
//!  P-be 198.18.0.11 ────┘                          198.18.0.1/24, 2001:2::1/64, a TCP
//!  2001:2::11 (backend)                            service on :8022; net_af_xdp0 on it
//!                                                  (XDP: NodePorts 30080/30053, ExternalIPs
//!                                                  198.18.0.50 and 2001:2::50, answers to
//!                                                  masqueraded connections → dataplane)
//! ```
//!
//! No static neighbours: the backend's MAC comes from the kernel's
//! neighbour table (mirrored by the proxy, resolution asked with NTF_USE).
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::node::{assert_all, wait_json, NodeProxy};
use support::{cap_eff, require_root, sh};

/// The node, LAN, client and backend namespaces, with the servers and
/// the proxy's configuration.
fn up(p: &str) -> NodeProxy {
    let mut n = NodeProxy::new(p, &["node", "lan", "client", "be"]);
    n.ip("lan", &format!("link add {p}br type bridge"));
    n.ip("lan", &format!("link set {p}br up"));
    for (ns, dev, end) in [
        ("node", "u", "lu"),
        ("client", "c", "lc"),
        ("be", "b", "lb"),
    ] {
        sh(Command::new("ip").args([
            "link",
            "add",
            &format!("{p}{dev}"),
            "netns",
            &n.ns(ns),
            "type",
            "veth",
            "peer",
            "name",
            &format!("{p}{end}"),
            "netns",
            &n.ns("lan"),
        ]));
        n.ip("lan", &format!("link set {p}{end} master {p}br up"));
    }
    for (ns, dev, v4, v6) in [
        ("node", "u", "198.18.0.1/24", "2001:2::1/64"),
        ("client", "c", "198.18.0.2/24", "2001:2::2/64"),
        ("be", "b", "198.18.0.11/24", "2001:2::11/64"),
    ] {
        let d = format!("{p}{dev}");
        n.ip(ns, &format!("addr add {v4} dev {d}"));
        n.ip(ns, &format!("addr add {v6} dev {d} nodad"));
        n.ip(ns, &format!("link set {d} up"));
        // Checksums computed by the sender (XDP sees them unfilled otherwise).
        let _ = n
            .exec(
                ns,
                &["ethtool", "-K", &d, "tx", "off", "tso", "off", "gso", "off"],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    // The kernel's own connections use ports inside the dataplane's
    // SNAT range (32768-65535), as by default: the XDP program must
    // leave their answers to the kernel.
    n.sysctl("node", &["net.ipv4.ip_local_port_range=40000 40100"]);
    n.serve("node", "node", "8022", "5022");
    n.serve("be", "be", "8080", "5353");
    let text = format!(
        r#"eal:
  lcores: "0@(0-1),1@(0-1)"
  no_huge: true
  memory_mb: 256
  vdevs: ["net_af_xdp0,iface={p}u"]
  args: ["--log-level", "*:warning"]
ports:
  - device: net_af_xdp0
    role: shared
    addresses: ["198.18.0.1/24", "2001:2::1/64"]
workers:
  sessions: 4096
  idle_sleep_us: 100
admin:
  bind: {admin}
services:
  - name: node/web
    vip: 198.18.100.1
    port: 80
    protocol: TCP
    node_port: 30080
    external_ips: [198.18.0.50]
    backends: ["198.18.0.11:8080"]
  - name: node/dns
    vip: 198.18.100.1
    port: 53
    protocol: UDP
    node_port: 30053
    backends: ["198.18.0.11:5353"]
  - name: node/web6
    vip: "2001:2:0:100::1"
    port: 80
    protocol: TCP
    external_ips: ["2001:2::50"]
    backends: ["[2001:2::11]:8080"]
"#,
        admin = n.admin
    );
    std::fs::write(&n.config, text).unwrap();
    n
}

/// The XDP program attached to the node's interface, if any.
fn xdp_prog(n: &NodeProxy) -> Option<String> {
    let out = sh(&mut n.exec(
        "node",
        &["ip", "-d", "-j", "link", "show", &format!("{}u", n.p)],
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["xdp"]["prog"]["name"].as_str().map(String::from)
}

/// The node kernel's TCP RSTs sent and UDP datagrams to closed ports.
fn kernel_refusals(n: &NodeProxy) -> (u64, u64) {
    let snmp = sh(&mut n.exec("node", &["cat", "/proc/net/snmp"]));
    let field = |proto: &str, name: &str| {
        let mut lines = snmp.lines().filter(|l| l.starts_with(proto));
        let (h, v) = (lines.next().unwrap(), lines.next().unwrap());
        let i = h.split_whitespace().position(|f| f == name).unwrap();
        v.split_whitespace().nth(i).unwrap().parse::<u64>().unwrap()
    };
    (field("Tcp:", "OutRsts"), field("Udp:", "NoPorts"))
}

/// Waits until the proxy mirrored the kernel's neighbours and
/// published them (the backend's MAC comes from there).
fn wait_neighbors(n: &NodeProxy) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while n.metric("dpdk_kube_proxy_kernel_neighbors", "") < 2 {
        assert!(
            Instant::now() < deadline,
            "no kernel neighbours mirrored: {}",
            n.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn clients(n: &NodeProxy, ns: &str, vip: &str, extra: &[&str]) -> Value {
    let mut args = vec!["clients", "--vip", vip, "--concurrency", "4"];
    args.extend_from_slice(extra);
    n.peer(ns, &args)
}

/// The node's kernel: ping and its TCP service, from the client.
fn check_kernel(n: &NodeProxy) {
    for addr in ["198.18.0.1", "2001:2::1"] {
        let r = n.peer("client", &["ping", addr, "--count", "3"]);
        assert_eq!(r["received"], 3, "ping {addr}: {r}");
    }
    let v = clients(
        n,
        "client",
        "198.18.0.1",
        &["--tcp-port", "8022", "--proto", "tcp", "--count", "10"],
    );
    assert_all(&v, "tcp", 10, "node", "198.18.0.2");
}

/// The Services, through the dataplane; the kernel never sees them.
fn check_services(n: &NodeProxy) {
    let before = kernel_refusals(n);
    let v = clients(
        n,
        "client",
        "198.18.0.1",
        &[
            "--tcp-port",
            "30080",
            "--udp-port",
            "30053",
            "--count",
            "40",
        ],
    );
    assert_all(&v, "tcp", 40, "be", "198.18.0.1");
    assert_all(&v, "udp", 40, "be", "198.18.0.1");
    // On-link ExternalIPs: the dataplane answers ARP and NDP for them.
    let v = clients(
        n,
        "client",
        "198.18.0.50",
        &["--proto", "tcp", "--count", "20"],
    );
    assert_all(&v, "tcp", 20, "be", "198.18.0.1");
    let v = clients(
        n,
        "client",
        "2001:2::50",
        &["--proto", "tcp", "--count", "20"],
    );
    assert_all(&v, "tcp", 20, "be", "2001:2::1");
    // Not one SYN or datagram reached the kernel, which would refuse it.
    assert_eq!(kernel_refusals(n), before, "the kernel saw Service traffic");
}

#[test]
fn shared_port_serves_services_beside_the_kernel() {
    require_root();
    let t0 = Instant::now();
    let mut n = up("dkx");
    n.start_proxy();
    assert_eq!(xdp_prog(&n).as_deref(), Some("dkp_xdp"));
    wait_neighbors(&n);
    check_kernel(&n);
    check_services(&n);
    // The kernel's own connections from ports in the SNAT range, while
    // Service traffic is masqueraded on the same address.
    let nodeport = n.spawn_peer(
        "client",
        &[
            "clients",
            "--vip",
            "198.18.0.1",
            "--tcp-port",
            "30080",
            "--udp-port",
            "30053",
            "--count",
            "60",
            "--concurrency",
            "4",
        ],
    );
    let own = clients(
        &n,
        "node",
        "198.18.0.11",
        &["--tcp-port", "8080", "--udp-port", "5353", "--count", "60"],
    );
    assert_all(&own, "tcp", 60, "be", "198.18.0.1");
    assert_all(&own, "udp", 60, "be", "198.18.0.1");
    let nodeport = wait_json(nodeport);
    assert_all(&nodeport, "tcp", 60, "be", "198.18.0.1");
    assert_all(&nodeport, "udp", 60, "be", "198.18.0.1");
    // What the proxy reports: the map (NodePorts, ExternalIPs with their
    // whole addresses, ClusterIPs, one SNAT entry per node address), the
    // packets redirected and passed, the mirrored neighbours.
    assert_eq!(n.metric("dpdk_kube_proxy_xdp_frontends", ""), 13);
    assert!(n.metric("dpdk_kube_proxy_xdp_redirected_packets_total", "") >= 600);
    assert!(n.metric("dpdk_kube_proxy_xdp_passed_packets_total", "") > 0);
    assert_eq!(n.metric("dpdk_kube_proxy_xdp_errors_total", ""), 0);
    assert!(n.metric("dpdk_kube_proxy_kernel_neighbors", "") >= 2);

    // SIGTERM: the program goes with the proxy; the kernel answers alone
    // (a NodePort is refused, the node itself works).
    n.stop_proxy();
    assert_eq!(xdp_prog(&n), None);
    check_kernel(&n);
    let v = clients(
        &n,
        "client",
        "198.18.0.1",
        &["--tcp-port", "30080", "--proto", "tcp", "--count", "2"],
    );
    assert_eq!(v["tcp"]["errors"], 2, "{v}");

    // With only the capabilities the DaemonSet grants a shared port
    // (deploy/README.md): NET_ADMIN, NET_RAW, IPC_LOCK, BPF, PERFMON.
    let caps = [
        "setpriv",
        "--bounding-set=-all,+net_admin,+net_raw,+ipc_lock,+bpf,+perfmon",
        "--no-new-privs",
        "--",
    ];
    n.start_proxy_wrapped(&caps);
    // CAP_NET_ADMIN 12, CAP_NET_RAW 13, CAP_IPC_LOCK 14, CAP_PERFMON 38, CAP_BPF 39.
    assert_eq!(cap_eff(n.proxy.as_ref().unwrap().id()), 0xc0_0000_7000);
    wait_neighbors(&n);
    check_services(&n);
    // SIGKILL leaves the program, with no AF_XDP socket behind it: the
    // kernel gets everything and the node keeps working; a restart removes
    // the leftover (recognised by the id the killed run recorded, since it
    // cannot read other processes' programs without CAP_SYS_ADMIN) and
    // serves again.
    n.kill_proxy();
    assert_eq!(xdp_prog(&n).as_deref(), Some("dkp_xdp"));
    check_kernel(&n);
    n.start_proxy_wrapped(&caps);
    assert!(
        n.log_text()
            .contains("removed the XDP program a previous run left attached"),
        "{}",
        n.log_text()
    );
    wait_neighbors(&n);
    check_services(&n);
    check_kernel(&n);
    n.stop_proxy();
    assert_eq!(xdp_prog(&n), None);
    eprintln!("beside-the-kernel e2e: {:.1?}", t0.elapsed());
}
