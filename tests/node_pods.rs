//! Pods behind the node reach Services through the dataplane: the proxy owns
//! node 1's only link (an af_packet uplink) and its kernel sits behind a TAP
//! exception port; node 1's pods hang off a bridge in its kernel, node 2 is
//! a plain kernel on the same LAN with a pod of its own. A ClusterIP and a
//! NodePort have both pods as backends: a pod of node 1 reaches both (the
//! local one masqueraded to the exception SNAT address, so its answer comes
//! back through the TAP), over IPv4 and IPv6, as does an outside client
//! through the NodePort — and all of it again after a proxy restart.
//! IPv6: the same layout in 2001:2::/64 (LAN), 2001:2:0:64::/64 and
//! 2001:2:0:65::/64 (pods), Service 2001:2:0:100::1, SNAT 2001:2:0:99::fa.
//!
//! ```text
//!                                   Q-node (node 1, the proxy runs here)
//!  Q-client 198.18.0.2 ─┐           Qu [af_packet uplink, port 0] ── dataplane
//!                       ├─ bridge ─ Qu                                  │
//!  Q-node2 198.18.0.3 ──┘ (Q-lan)   Qt [TAP exception port, port 1] ── kernel: 198.18.0.1/24,
//!    kernel, forwards;                   Service CIDR and 198.18.65.0/24 via 198.18.0.3 on Qt,
//!    198.18.64.0/24 via .1               bridge Qp 198.18.64.1/24 ─┬─ Q-pa 198.18.64.2 (server "pa")
//!    bridge 198.18.65.1/24               (local_pod_cidrs)         └─ Q-pc 198.18.64.3 (client)
//!      └─ Q-pb 198.18.65.2 (server "pb")
//! ```
//!
//! Pods of one node share a bridge (the CNI bridge plugin's layout): without
//! the masquerade, pa's answer to pc would cross the bridge and never reach
//! the dataplane's reverse translation.
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::node::{wait_json, NodeProxy};
use support::{require_root, sh};

const NAMESPACES: [&str; 7] = ["node", "lan", "client", "node2", "pa", "pc", "pb"];

/// The two nodes, their pods, the LAN and the client: a [`NodeProxy`].
struct Cluster(NodeProxy);

impl std::ops::Deref for Cluster {
    type Target = NodeProxy;
    fn deref(&self) -> &NodeProxy {
        &self.0
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut NodeProxy {
        &mut self.0
    }
}

impl Cluster {
    /// A veth pair `a` (in namespace `na`) – `b` (in `nb`).
    fn veth(&self, na: &str, a: &str, nb: &str, b: &str) {
        sh(Command::new("ip").args([
            "link",
            "add",
            a,
            "netns",
            &self.ns(na),
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            &self.ns(nb),
        ]));
        // Checksums computed by the sender (af_packet sees them unfilled otherwise).
        for (ns, dev) in [(na, a), (nb, b)] {
            let _ = self
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
    }

    /// A pod: namespace `pod` behind bridge `br` of namespace `node`, at
    /// `addr`/24 and `addr6`/64 (gateways: `.1` and `::1` of those subnets).
    fn pod(&self, node: &str, br: &str, pod: &str, addr: &str, addr6: &str) {
        let p = &self.p;
        let (host_end, pod_end) = (format!("{p}h{pod}"), format!("{p}e{pod}"));
        self.veth(node, &host_end, pod, &pod_end);
        self.ip(node, &format!("link set {host_end} master {br} up"));
        self.ip(pod, &format!("addr add {addr}/24 dev {pod_end}"));
        self.ip(pod, &format!("addr add {addr6}/64 dev {pod_end} nodad"));
        self.ip(pod, &format!("link set {pod_end} up"));
        // The last component replaced by 1.
        let gw = |a: &str| format!("{}1", &a[..a.rfind(['.', ':']).unwrap() + 1]);
        self.ip(pod, &format!("route add default via {}", gw(addr)));
        self.ip(pod, &format!("-6 route add default via {}", gw(addr6)));
    }

    fn up(p: &str) -> Cluster {
        let mut c = Cluster(NodeProxy::new(p, &NAMESPACES));
        c.ip("lan", &format!("link add {p}br type bridge"));
        c.ip("lan", &format!("link set {p}br up"));
        // Node 1's only link: the uplink veth, its far end on the LAN.
        let u = format!("{p}u");
        c.veth("node", &u, "lan", &format!("{p}lu"));
        c.veth("client", &format!("{p}c"), "lan", &format!("{p}lc"));
        c.veth("node2", &format!("{p}n"), "lan", &format!("{p}ln"));
        for end in ["lu", "lc", "ln"] {
            c.ip("lan", &format!("link set {p}{end} master {p}br up"));
        }
        // Node 1's kernel keeps out of the uplink (as in tests/node.rs: on
        // a real node the NIC is bound to vfio-pci) and forwards for its pods.
        c.sysctl(
            "node",
            &[
                &format!("net.ipv6.conf.{u}.disable_ipv6=1"),
                &format!("net.ipv4.conf.{u}.arp_ignore=8"),
                &format!("net.ipv4.conf.{u}.rp_filter=1"),
                "net.ipv4.conf.all.rp_filter=1",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
        );
        c.ip("node", &format!("link set {u} up"));
        c.ip("node", &format!("link add {p}p type bridge"));
        c.ip("node", &format!("addr add 198.18.64.1/24 dev {p}p"));
        c.ip(
            "node",
            &format!("addr add 2001:2:0:64::1/64 dev {p}p nodad"),
        );
        c.ip("node", &format!("link set {p}p up"));
        let br = format!("{p}p");
        c.pod("node", &br, "pa", "198.18.64.2", "2001:2:0:64::2");
        c.pod("node", &br, "pc", "198.18.64.3", "2001:2:0:64::3");
        // Node 2: a plain kernel routing node 1's pod CIDR to node 1.
        c.sysctl(
            "node2",
            &["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"],
        );
        c.ip("node2", &format!("addr add 198.18.0.3/24 dev {p}n"));
        c.ip("node2", &format!("addr add 2001:2::3/64 dev {p}n nodad"));
        c.ip("node2", &format!("link set {p}n up"));
        c.ip("node2", &format!("link add {p}q type bridge"));
        c.ip("node2", &format!("addr add 198.18.65.1/24 dev {p}q"));
        c.ip(
            "node2",
            &format!("addr add 2001:2:0:65::1/64 dev {p}q nodad"),
        );
        c.ip("node2", &format!("link set {p}q up"));
        c.ip("node2", "route add 198.18.64.0/24 via 198.18.0.1");
        c.ip("node2", "-6 route add 2001:2:0:64::/64 via 2001:2::1");
        let br = format!("{p}q");
        c.pod("node2", &br, "pb", "198.18.65.2", "2001:2:0:65::2");
        c.ip("client", &format!("addr add 198.18.0.2/24 dev {p}c"));
        c.ip("client", &format!("link set {p}c up"));
        for pod in ["pa", "pb"] {
            c.serve(pod, pod, "8080", "5353");
        }
        c.write_config();
        c
    }

    fn write_config(&self) {
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
  - device: net_tap0
    role: exception
routes:
  - {{prefix: 198.18.65.0/24, port: 0, via: 198.18.0.3}}
  - {{prefix: "2001:2:0:65::/64", port: 0, via: "2001:2::3"}}
exception:
  local_pod_cidrs: [198.18.64.0/24, "2001:2:0:64::/64"]
  snat_addresses: [198.18.99.250, "2001:2:0:99::fa"]
cluster_cidrs: [198.18.64.0/23, "2001:2:0:64::/63"]
service_cidrs: [198.18.100.0/24, "2001:2:0:100::/64"]
workers:
  sessions: 4096
  idle_sleep_us: 100
  rx_desc: 512
  tx_desc: 512
admin:
  bind: {admin}
services:
  - name: pods/web
    vip: 198.18.100.1
    port: 80
    protocol: TCP
    node_port: 30080
    backends: ["198.18.64.2:8080", "198.18.65.2:8080"]
  - name: pods/dns
    vip: 198.18.100.1
    port: 53
    protocol: UDP
    node_port: 30053
    backends: ["198.18.64.2:5353", "198.18.65.2:5353"]
  - name: pods/web6
    vip: "2001:2:0:100::1"
    port: 80
    protocol: TCP
    backends: ["[2001:2:0:64::2]:8080", "[2001:2:0:65::2]:8080"]
  - name: pods/dns6
    vip: "2001:2:0:100::1"
    port: 53
    protocol: UDP
    backends: ["[2001:2:0:64::2]:5353", "[2001:2:0:65::2]:5353"]
"#,
            admin = self.admin
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// Starts the proxy, then configures node 1's side of the TAP.
    fn start(&mut self) {
        self.start_proxy();
        // The node's configuration: its address on the TAP (kept across
        // restarts: the TAP persists), and the routes to node 2's pods
        // through the TAP (they go when it goes down). The routes onto the
        // TAP for the Service CIDRs and for the SNAT addresses (outside the
        // node's subnets: only the proxy's host routes lead there) are the
        // proxy's own (kernel_routes).
        let tap = format!("{}t", self.p);
        let addrs = sh(&mut self.exec("node", &["ip", "-br", "addr", "show", &tap]));
        if !addrs.contains("198.18.0.1/24") {
            self.sysctl(
                "node",
                &[&format!("net.ipv6.conf.{tap}.keep_addr_on_down=1")],
            );
            self.ip("node", &format!("addr add 198.18.0.1/24 dev {tap}"));
            self.ip("node", &format!("addr add 2001:2::1/64 dev {tap} nodad"));
        }
        for route in [
            "route replace 198.18.65.0/24 via 198.18.0.3 dev TAP",
            "-6 route replace 2001:2:0:65::/64 via 2001:2::3 dev TAP",
        ] {
            self.ip("node", &route.replace("TAP", &tap));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metric("dpdk_kube_proxy_kernel_routes", "") != 4 {
            assert!(
                Instant::now() < deadline,
                "the proxy did not route the two Service CIDRs and two SNAT addresses onto the TAP: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Non-zero drop counters, for failure messages.
    fn drops(&self) -> String {
        let m = self.try_get("/metrics").unwrap_or_default();
        m.lines()
            .filter(|l| l.starts_with("dpdk_kube_proxy_dropped") && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `n` answers for `proto`, no errors, from both pods; `sources[pod]` is
/// the address each pod saw the connections come from.
fn assert_both(c: &Cluster, v: &Value, proto: &str, n: u64, sources: &[(&str, &str)]) {
    let r = &v[proto];
    let ctx = || format!("{proto}: {v}\ndrops:\n{}", c.drops());
    assert_eq!(r["errors"], 0, "{}", ctx());
    let counts = r["counts"].as_object().expect("counts");
    let total: u64 = counts.values().filter_map(Value::as_u64).sum();
    assert_eq!(total, n, "{}", ctx());
    for (pod, source) in sources {
        let got = counts.get(*pod).and_then(Value::as_u64).unwrap_or(0);
        assert!(got > 0, "no answer from {pod}: {}", ctx());
        let seen = &r["sources"][*pod];
        assert_eq!(
            seen.as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec![source.to_string()]),
            "{pod} saw: {}",
            ctx()
        );
    }
}

fn clients<'a>(vip: &'a str, tcp: &'a str, udp: &'a str) -> [&'a str; 11] {
    [
        "clients",
        "--vip",
        vip,
        "--tcp-port",
        tcp,
        "--udp-port",
        udp,
        "--count",
        "40",
        "--concurrency",
        "4",
    ]
}

/// Pods and an outside client reach both backends, all at once.
fn check_pods(c: &Cluster) {
    let cluster_ip = clients("198.18.100.1", "80", "53");
    let node_port = clients("198.18.0.1", "30080", "30053");
    // Pod pc (node 1) to the ClusterIP; pod pa to the ClusterIP (one of
    // whose backends is pa itself); the outside client to the NodePort.
    let cluster_ip6 = clients("2001:2:0:100::1", "80", "53");
    let pc6 = c.spawn_peer("pc", &cluster_ip6);
    let pc = c.spawn_peer("pc", &cluster_ip);
    let pa = c.spawn_peer("pa", &cluster_ip);
    let outside = c.peer("client", &node_port);
    let (pc, pa, pc6) = (wait_json(pc), wait_json(pa), wait_json(pc6));
    for proto in ["tcp", "udp"] {
        // The remote pod sees the client pod itself (DNAT only; its answer
        // comes back over the LAN to the uplink); the local pod sees the
        // exception SNAT address.
        assert_both(
            c,
            &pc,
            proto,
            40,
            &[("pa", "198.18.99.250"), ("pb", "198.18.64.3")],
        );
        assert_both(
            c,
            &pa,
            proto,
            40,
            &[("pa", "198.18.99.250"), ("pb", "198.18.64.2")],
        );
        // NodePort traffic is masqueraded: to the node address toward the
        // remote pod, to the SNAT address toward the local one.
        assert_both(
            c,
            &pc6,
            proto,
            40,
            &[("pa", "2001:2:0:99::fa"), ("pb", "2001:2:0:64::3")],
        );
        assert_both(
            c,
            &outside,
            proto,
            40,
            &[("pa", "198.18.99.250"), ("pb", "198.18.0.1")],
        );
    }
}

#[test]
fn pods_behind_the_node_reach_services_through_the_dataplane() {
    require_root();
    let t0 = Instant::now();
    let mut c = Cluster::up("dkpp");
    c.start();
    check_pods(&c);
    let to_kernel = c.metric("dpdk_kube_proxy_exception_packets_total", "to_kernel");
    let masq = c.metric("dpdk_kube_proxy_sessions_masqueraded_total", "");
    eprintln!(
        "first run: to_kernel {to_kernel}, masqueraded {masq}, drops: [{}]",
        c.drops()
    );
    // A restart: the TAP persists with the node's address; the new proxy
    // takes it over and everything works again.
    c.stop_proxy();
    c.start();
    check_pods(&c);
    eprintln!("drops after restart: [{}]", c.drops());
    eprintln!("node_pods test took {:?}", t0.elapsed());
}
