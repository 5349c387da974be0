//! Node integration end to end: the proxy owns the node's only link (an
//! af_packet uplink on a veth) and hands the node's own traffic to the
//! node's kernel through a TAP exception port, while Service traffic goes
//! through the NAT — and both keep working across a proxy restart.
//!
//! ```text
//!  P-client 198.18.0.2 ─┐                        P-node (the proxy runs here)
//!  2001:2::2            ├─ bridge (P-lan) ─ veth ─ Pu  [af_packet uplink, port 0]
//!  P-be 198.18.0.11 ────┘  ("a pod on another      │     dataplane (NodePort 30080/30053,
//!   (NodePort backend)       node")                 │      ExternalIPs 198.18.101.10/.11,
//!                                                   │      2001:2:0:101::10)
//!                                                   Pt  [TAP exception port, port 1]
//!                                                        kernel: 198.18.0.1/24, 2001:2::1/64,
//!                                                        the uplink's MAC and MTU, a TCP
//!                                                        service on :8022; the proxy routes
//!                                                        the Service CIDRs and ExternalIPs
//!                                                        onto the TAP (rtnetlink, proto 214)
//! ```
//!
//! The veth `Pu` also belongs to the node's kernel (af_packet works beside
//! it), which must not answer on it: on a real node the NIC is bound to
//! vfio-pci and the kernel never sees it. So the kernel ignores `Pu`: no
//! IPv6 on it, `arp_ignore=8` (never answer ARP), strict `rp_filter` (the
//! clients' addresses route through the TAP, so IPv4 arriving on `Pu` is
//! dropped as a martian).
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::node::{assert_all, wait_json, NodeProxy};
use support::{require_root, sh};

/// The node: a [`NodeProxy`] over the node, LAN, client and backend
/// namespaces.
struct Node(NodeProxy);

impl std::ops::Deref for Node {
    type Target = NodeProxy;
    fn deref(&self) -> &NodeProxy {
        &self.0
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut NodeProxy {
        &mut self.0
    }
}

impl Node {
    fn up(p: &str) -> Node {
        let mut n = Node(NodeProxy::new(p, &["node", "lan", "client", "be"]));
        let (u, c, b) = (format!("{p}u"), format!("{p}c"), format!("{p}b"));
        n.ip("lan", &format!("link add {p}br type bridge"));
        n.ip("lan", &format!("link set {p}br up"));
        // The node's only link: the uplink veth, its far end on the bridge.
        sh(Command::new("ip").args([
            "link",
            "add",
            &u,
            "netns",
            &n.ns("node"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("{p}lu"),
            "netns",
            &n.ns("lan"),
        ]));
        for (ns, dev) in [("client", &c), ("be", &b)] {
            sh(Command::new("ip").args([
                "link",
                "add",
                dev,
                "netns",
                &n.ns(ns),
                "type",
                "veth",
                "peer",
                "name",
                &format!("{p}l{}", &dev[dev.len() - 1..]),
                "netns",
                &n.ns("lan"),
            ]));
        }
        for end in ["lu", "lc", "lb"] {
            n.ip("lan", &format!("link set {p}{end} master {p}br up"));
        }
        // The node's kernel keeps out of the uplink (see the module docs).
        sh(&mut n.exec(
            "node",
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{u}.disable_ipv6=1"),
                &format!("net.ipv4.conf.{u}.arp_ignore=8"),
                &format!("net.ipv4.conf.{u}.rp_filter=1"),
                "net.ipv4.conf.all.rp_filter=1",
            ],
        ));
        n.ip("node", &format!("link set {u} up"));
        n.ip("client", &format!("addr add 198.18.0.2/24 dev {c}"));
        n.ip("client", &format!("addr add 2001:2::2/64 dev {c} nodad"));
        n.ip("client", &format!("link set {c} up"));
        n.ip("client", "route add 198.18.100.0/24 via 198.18.0.1");
        n.ip("client", "route add 198.18.101.0/24 via 198.18.0.1");
        n.ip("be", &format!("addr add 198.18.0.11/24 dev {b}"));
        n.ip("be", &format!("addr add 2001:2::11/64 dev {b} nodad"));
        n.ip("be", &format!("link set {b} up"));
        for (ns, dev) in [("client", &c), ("be", &b), ("node", &u)] {
            // Checksums computed by the sender (af_packet sees them unfilled otherwise).
            let _ = n
                .exec(
                    ns,
                    &[
                        "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off",
                    ],
                )
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // A TCP service of the node itself, and the NodePort's backend pod.
        n.serve("node", "node", "8022", "5022");
        n.serve("be", "be", "8080", "5353");
        n.write_config(true);
        n
    }

    /// The proxy's configuration; `second_external` adds the ExternalIP
    /// 198.18.101.11 to node/web.
    fn write_config(&self, second_external: bool) {
        let externals = if second_external {
            "[198.18.101.10, 198.18.101.11]"
        } else {
            "[198.18.101.10]"
        };
        let p = &self.p;
        let text = format!(
            r#"eal:
  lcores: "0@(0-1),1@(0-1),2@(0-1)"
  no_huge: true
  memory_mb: 256
  vdevs:
    - net_af_packet0,iface={p}u,qpairs=2
    - net_tap0,iface={p}t,persist
  args: ["--log-level", "*:warning"]
ports:
  - device: net_af_packet0
    addresses: ["198.18.0.1/24", "2001:2::1/64"]
    mtu: 1400
  - device: net_tap0
    role: exception
workers:
  sessions: 4096
  idle_sleep_us: 100
  rx_desc: 512
  tx_desc: 512
admin:
  bind: {admin}
service_cidrs: [198.18.100.0/24, "2001:2:0:100::/64"]
services:
  - name: node/web
    vip: 198.18.100.1
    port: 80
    protocol: TCP
    node_port: 30080
    external_ips: {externals}
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
    external_ips: ["2001:2:0:101::10"]
    backends: ["[2001:2::11]:8080"]
"#,
            admin = self.admin
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// Routes of the node's main table with routing protocol `proto`,
    /// IPv4 and IPv6, as `DST dev DEV` (`ip -j route`).
    fn routes(&self, proto: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for family in ["-4", "-6"] {
            let text = sh(&mut self.exec(
                "node",
                &[
                    "ip", "-j", family, "route", "show", "table", "main", "proto", proto,
                ],
            ));
            let v: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
            for r in v.as_array().into_iter().flatten() {
                out.insert(format!(
                    "{} dev {}",
                    r["dst"].as_str().unwrap_or("?"),
                    r["dev"].as_str().unwrap_or("?")
                ));
            }
        }
        out
    }

    /// Waits until the proxy's routes (protocol 214) are exactly `want`.
    fn wait_routes(&mut self, want: &BTreeSet<String>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let have = self.routes(PROTO);
            if &have == want {
                return;
            }
            if let Some(st) = self.proxy.as_mut().and_then(|p| p.try_wait().unwrap()) {
                panic!("proxy exited with {st}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "kernel routes: have {have:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `ip -j link show dev` in the node namespace.
    fn link(&self, dev: &str) -> Value {
        let out = sh(&mut self.exec("node", &["ip", "-j", "link", "show", dev]));
        serde_json::from_str::<Value>(&out).unwrap()[0].clone()
    }
}

/// Ping from the client: every echo answered exactly once (no duplicates).
fn ping(n: &Node, addr: &str) {
    let r = n.peer("client", &["ping", addr, "--count", "5"]);
    assert_eq!(
        (&r["received"], &r["duplicates"], &r["bad"]),
        (&Value::from(5), &Value::from(0), &Value::from(0)),
        "ping {addr}: {r}"
    );
}

/// The node's kernel and the Services, at the same time.
fn check_node_and_services(n: &Node) {
    // The kernel answers ping (ARP/ND for the node address included).
    ping(n, "198.18.0.1");
    ping(n, "2001:2::1");
    // A TCP service of the node, a NodePort and an ExternalIP, concurrently.
    let kernel = n.spawn_peer(
        "client",
        &[
            "clients",
            "--vip",
            "198.18.0.1",
            "--tcp-port",
            "8022",
            "--proto",
            "tcp",
            "--count",
            "40",
            "--concurrency",
            "4",
        ],
    );
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
            "40",
            "--concurrency",
            "4",
        ],
    );
    let external = n.peer(
        "client",
        &[
            "clients",
            "--vip",
            "198.18.101.10",
            "--proto",
            "tcp",
            "--count",
            "20",
            "--concurrency",
            "4",
        ],
    );
    // The node's own connections to a ClusterIP: the kernel routes the
    // Service CIDR onto the TAP and the dataplane translates them.
    let own = n.peer(
        "node",
        &[
            "clients",
            "--vip",
            "198.18.100.1",
            "--count",
            "20",
            "--concurrency",
            "4",
        ],
    );
    let kernel = wait_json(kernel);
    let nodeport = wait_json(nodeport);
    assert_all(&own, "tcp", 20, "be", "198.18.0.1");
    assert_all(&own, "udp", 20, "be", "198.18.0.1");
    let own6 = n.peer(
        "node",
        &[
            "clients",
            "--vip",
            "2001:2:0:100::1",
            "--proto",
            "tcp",
            "--count",
            "20",
            "--concurrency",
            "4",
        ],
    );
    assert_all(&own6, "tcp", 20, "be", "2001:2::1");
    // The node's own connections to an ExternalIP and an IPv6 one: their
    // host routes lead to the TAP.
    for (vip, src) in [
        ("198.18.101.10", "198.18.0.1"),
        ("2001:2:0:101::10", "2001:2::1"),
    ] {
        let own = n.peer(
            "node",
            &[
                "clients",
                "--vip",
                vip,
                "--proto",
                "tcp",
                "--count",
                "10",
                "--concurrency",
                "2",
            ],
        );
        assert_all(&own, "tcp", 10, "be", src);
    }
    // The node's kernel sees the client itself; the backend sees the node
    // (NodePort and ExternalIP traffic is masqueraded).
    assert_all(&kernel, "tcp", 40, "node", "198.18.0.2");
    assert_all(&nodeport, "tcp", 40, "be", "198.18.0.1");
    assert_all(&nodeport, "udp", 40, "be", "198.18.0.1");
    assert_all(&external, "tcp", 20, "be", "198.18.0.1");
}

/// The routing protocol number of the proxy's routes (the default of
/// `kernel_routes.protocol`).
const PROTO: &str = "214";

/// The routes the proxy installs for this node's configuration.
fn wanted(tap: &str, second_external: bool) -> BTreeSet<String> {
    let mut dsts = vec![
        "198.18.100.0/24",
        "198.18.101.10",
        "2001:2:0:100::/64",
        "2001:2:0:101::10",
    ];
    if second_external {
        dsts.push("198.18.101.11");
    }
    dsts.iter().map(|d| format!("{d} dev {tap}")).collect()
}

#[test]
fn node_keeps_working_behind_the_proxy() {
    require_root();
    let t0 = Instant::now();
    let mut n = Node::up("dkn");
    let (tap, uplink) = (format!("{}t", n.p), format!("{}u", n.p));
    // What an earlier proxy would have left after a crash: a route with our
    // mark toward an interface that is not the exception port; and an
    // administrator's route, which is none of the proxy's business.
    n.ip(
        "node",
        &format!("route add 198.18.102.0/24 dev {uplink} proto {PROTO}"),
    );
    n.ip(
        "node",
        &format!("route add 198.18.103.0/24 dev {uplink} proto static"),
    );
    let foreign: BTreeSet<String> = [format!("198.18.103.0/24 dev {uplink}")].into();
    n.start_proxy();
    // The proxy made the TAP in the node's namespace with the uplink's MAC
    // and MTU; the node's addresses go on it (as the node's network
    // configuration would put them on its NIC).

    let (t, u) = (n.link(&tap), n.link(&uplink));
    assert_eq!(
        t["address"], u["address"],
        "TAP MAC is the uplink's: {t} {u}"
    );
    assert_eq!(t["mtu"], 1400, "TAP MTU is the uplink's: {t}");
    // The TAP goes down while no proxy holds it: keep the IPv6 address then
    // too (IPv4 addresses stay anyway).
    sh(&mut n.exec(
        "node",
        &[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{tap}.keep_addr_on_down=1"),
        ],
    ));
    n.ip("node", &format!("addr add 198.18.0.1/24 dev {tap}"));
    n.ip("node", &format!("addr add 2001:2::1/64 dev {tap} nodad"));
    // The proxy routed the Service CIDRs and the ExternalIPs onto the TAP
    // (and removed the stale route with its mark); the administrator's
    // route is untouched.
    n.wait_routes(&wanted(&tap, true));
    assert_eq!(n.routes("static"), foreign);
    assert_eq!(n.metric("dpdk_kube_proxy_kernel_routes", ""), 5);
    assert_eq!(n.metric("dpdk_kube_proxy_route_errors_total", ""), 0);
    check_node_and_services(&n);
    let to_kernel = n.metric("dpdk_kube_proxy_exception_packets_total", "to_kernel");
    let from_kernel = n.metric("dpdk_kube_proxy_exception_packets_total", "from_kernel");
    // At least the pings and the 40 connections' segments, both ways.
    assert!(
        to_kernel >= 40 * 3 && from_kernel >= 40 * 3,
        "exception counters: to {to_kernel}, from {from_kernel}"
    );
    let drops = n.metric("dpdk_kube_proxy_dropped_packets_total", "");
    eprintln!("first run: to_kernel {to_kernel}, from_kernel {from_kernel}, drops {drops}");

    // SIGTERM: the proxy removes its routes itself (before its TAP goes
    // down, which would flush them too).
    n.stop_proxy();
    assert_eq!(n.routes(PROTO), BTreeSet::new());
    assert_eq!(n.routes("static"), foreign);
    let log = n.log_text();
    assert!(
        log.contains("kernel routes toward the exception interface removed removed=5 errors=0"),
        "no removal logged: {log}"
    );
    // A restart: the TAP is persistent (`persist`), so the node keeps its
    // addresses while the proxy is away and the new proxy takes it over.
    let addrs = sh(&mut n.exec("node", &["ip", "-br", "addr", "show", &tap]));
    assert!(
        addrs.contains("198.18.0.1/24") && addrs.contains("2001:2::1/64"),
        "{addrs}"
    );
    n.start_proxy();
    n.wait_routes(&wanted(&tap, true));
    let t = n.link(&tap);
    assert_eq!(t["address"], u["address"], "after restart: {t}");
    check_node_and_services(&n);

    // SIGKILL, and an ExternalIP removed while the proxy is down: the
    // restarted proxy removes the stale route (the one it left, and one with
    // its mark elsewhere) and keeps the wanted ones.
    n.kill_proxy();
    // A crash leaves the routes (the persistent TAP stays up).
    assert_eq!(n.routes(PROTO), wanted(&tap, true));
    n.ip(
        "node",
        &format!("route add 198.18.102.0/24 dev {uplink} proto {PROTO}"),
    );
    n.write_config(false);
    n.start_proxy();
    n.wait_routes(&wanted(&tap, false));
    // Repaired by the proxy: the four it wants kept, the two stale removed.
    let log = n.log_text();
    assert!(
        log.contains("kernel routes toward the exception interface updated added=0 removed=2 errors=0 installed=4"),
        "{log}"
    );
    assert_eq!(n.routes("static"), foreign);
    assert_eq!(n.metric("dpdk_kube_proxy_kernel_routes", ""), 4);
    let own = n.peer(
        "node",
        &[
            "clients",
            "--vip",
            "198.18.100.1",
            "--count",
            "10",
            "--concurrency",
            "2",
        ],
    );
    assert_all(&own, "tcp", 10, "be", "198.18.0.1");
    n.stop_proxy();
    assert_eq!(n.routes(PROTO), BTreeSet::new());
    eprintln!("node test took {:?}", t0.elapsed());
}
