use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A map in memory that fails on request.
#[derive(Default)]
struct FakeMap {
    m: BTreeMap<FeKey, u32>,
    calls: usize,
    fail_put: bool,
}

impl KeyValueMap for FakeMap {
    fn keys(&self) -> io::Result<Vec<FeKey>> {
        Ok(self.m.keys().copied().collect())
    }
    fn put(&mut self, key: &FeKey, value: u32) -> io::Result<()> {
        self.calls += 1;
        if self.fail_put {
            return Err(io::Error::from_raw_os_error(7)); // E2BIG: map full
        }
        self.m.insert(*key, value);
        Ok(())
    }
    fn remove(&mut self, key: &FeKey) -> io::Result<()> {
        self.calls += 1;
        self.m
            .remove(key)
            .map(|_| ())
            .ok_or_else(|| io::Error::from_raw_os_error(ENOENT))
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

#[test]
fn key_bytes_match_the_programs_struct() {
    let k = FeKey::new(v4(198, 18, 0, 10), 6, 30080);
    let b = k.bytes();
    assert_eq!(b[0], 4);
    assert_eq!(b[1], 6);
    assert_eq!(&b[2..4], &30080u16.to_be_bytes());
    assert_eq!(&b[4..8], &[198, 18, 0, 10]);
    assert!(b[8..].iter().all(|x| *x == 0));
    assert_eq!(FeKey::from_bytes(&b), Some(k));
    let a6: Ipv6Addr = "2001:2::a".parse().unwrap();
    let k6 = FeKey::new(IpAddr::V6(a6), 17, 53).bytes();
    assert_eq!(k6[0], 6);
    assert_eq!(&k6[4..], &a6.octets());
    assert_eq!(FeKey::from_bytes(&k6[..19]), None);
}

#[test]
fn desired_entries_keep_node_addresses_for_the_kernel() {
    let node = v4(198, 18, 0, 2);
    let vip = v4(198, 18, 5, 10);
    let want = desired(
        [
            (vip, Proto::Tcp, 80),
            (vip, Proto::Udp, 53),
            (node, Proto::Tcp, 30080),
        ],
        &[node],
        &BTreeSet::new(),
    );
    assert_eq!(want.get(&FeKey::new(vip, 6, 80)), Some(&FE_EXACT));
    assert_eq!(want.get(&FeKey::new(vip, 17, 53)), Some(&FE_EXACT));
    // The VIP is the proxy's as a whole (other ports get rejected there).
    assert_eq!(want.get(&FeKey::new(vip, 0, 0)), Some(&FE_WHOLE));
    // The node address is the kernel's but for its NodePort and the
    // answers to masqueraded connections.
    assert_eq!(want.get(&FeKey::new(node, 6, 30080)), Some(&FE_EXACT));
    assert_eq!(want.get(&FeKey::new(node, 0, 0)), None);
    assert_eq!(want.get(&FeKey::new(node, PROTO_SNAT, 0)), Some(&FE_SNAT));
    assert_eq!(want.len(), 5);
}

#[test]
fn sync_reads_back_then_applies_diffs() {
    let vip = v4(198, 18, 5, 10);
    let mut fake = FakeMap::default();
    // Left by an earlier run.
    let stale = FeKey::new(v4(198, 18, 5, 99), 0, 0);
    fake.m.insert(stale, FE_WHOLE);
    let mut fm = FrontendMap::new(fake);
    let none = BTreeSet::new();
    let want = desired([(vip, Proto::Tcp, 80)], &[], &none);
    let s = fm.sync(&want);
    assert_eq!((s.written, s.removed, s.errors), (2, 1, 0));
    assert_eq!(fm.map.m, want);
    // Unchanged: no system call.
    let calls = fm.map.calls;
    assert_eq!(fm.sync(&want), MapSync::default());
    assert_eq!(fm.map.calls, calls);
    // A change writes only the difference.
    let want2 = desired([(vip, Proto::Tcp, 80), (vip, Proto::Tcp, 443)], &[], &none);
    let s = fm.sync(&want2);
    assert_eq!((s.written, s.removed), (1, 0));
    assert_eq!(fm.map.m, want2);
    assert_eq!(fm.len(), 3);
    // Removing everything.
    let s = fm.sync(&BTreeMap::new());
    assert_eq!((s.written, s.removed), (0, 3));
    assert!(fm.map.m.is_empty() && fm.is_empty());
}

#[test]
fn failed_writes_are_counted_and_retried() {
    let vip = v4(198, 18, 5, 10);
    let mut fm = FrontendMap::new(FakeMap {
        fail_put: true,
        ..FakeMap::default()
    });
    let want = desired([(vip, Proto::Tcp, 80)], &[], &BTreeSet::new());
    assert_eq!(fm.sync(&want).errors, 2);
    assert!(fm.map.m.is_empty() && fm.needs_retry());
    // The retry (the periodic tick) goes for what was wanted, not for
    // what got written.
    fm.map.fail_put = false;
    let s = fm.retry();
    assert_eq!((s.written, s.errors), (2, 0));
    assert_eq!(fm.map.m, want);
    assert!(!fm.needs_retry());
    assert_eq!(fm.retry(), MapSync::default());
}

#[test]
fn addresses_the_kernel_holds_are_never_taken_whole() {
    // A Service naming an address the host holds (a keepalived VIP, a
    // secondary address not listed in the configuration): only its ports.
    let held_vip = v4(198, 18, 0, 77);
    let want = desired(
        [(held_vip, Proto::Tcp, 443)],
        &[v4(198, 18, 0, 2)],
        &BTreeSet::from([held_vip]),
    );
    assert_eq!(want.get(&FeKey::new(held_vip, 6, 443)), Some(&FE_EXACT));
    assert_eq!(want.get(&FeKey::new(held_vip, 0, 0)), None);
}

#[test]
fn every_receive_queue_needs_a_socket() {
    let s = |queue_count, start_queue| SharedIface {
        port: 0,
        iface: "eth0".into(),
        queue_count,
        start_queue,
    };
    assert!(queue_coverage(&s(1, 0), 1).is_ok());
    assert!(queue_coverage(&s(4, 0), 4).is_ok());
    let e = queue_coverage(&s(1, 0), 4).unwrap_err().to_string();
    assert!(
        e.contains("eth0 has 4 receive queue(s)") && e.contains("queue_count=4"),
        "{e}"
    );
    assert!(queue_coverage(&s(4, 1), 4).is_err());
}

#[test]
fn next_hops_follow_the_longest_prefix_on_the_port() {
    use dataplane::table::Interface;
    let ifs = [Interface {
        port: 0,
        addr: Addr::from(v4(198, 18, 0, 2)),
        prefix_len: 24,
    }];
    let routes = [
        Route {
            prefix: Addr::from(v4(198, 19, 0, 0)),
            len: 16,
            port: 0,
            via: Some(Addr::from(v4(198, 18, 0, 1))),
        },
        Route {
            prefix: Addr::from(v4(198, 19, 7, 0)),
            len: 24,
            port: 1,
            via: None,
        },
    ];
    let hop = |d| next_hop(&ifs, &routes, 0, Addr::from(d));
    assert_eq!(hop(v4(198, 18, 0, 9)), Some(v4(198, 18, 0, 9)));
    assert_eq!(hop(v4(198, 19, 3, 4)), Some(v4(198, 18, 0, 1)));
    // Leaves by port 1: not this port's to resolve.
    assert_eq!(hop(v4(198, 19, 7, 4)), None);
    assert_eq!(hop(v4(203, 0, 113, 1)), None);
}

#[test]
fn the_embedded_program_is_an_ebpf_object_with_the_maps_named_here() {
    // ELF, 64-bit, little endian, machine EM_BPF (247).
    assert_eq!(&XDP_OBJECT[..4], b"\x7fELF");
    assert_eq!(XDP_OBJECT[4], 2);
    assert_eq!(u16::from_le_bytes([XDP_OBJECT[18], XDP_OBJECT[19]]), 247);
    let has = |s: &str| XDP_OBJECT.windows(s.len()).any(|w| w == s.as_bytes());
    for name in ["xsks_map", FRONTEND_MAP, STATS_MAP, XDP_PROG_NAME] {
        assert!(has(name), "{name}");
    }
}

#[test]
fn the_programs_snat_range_is_the_dataplanes() {
    // The program redirects answers to ports from SNAT_FIRST up; the
    // dataplane masquerades to ports of SNAT_PORTS.
    let src = include_str!("../../bpf/dkp_xdp.c");
    let first: u16 = src
        .lines()
        .find_map(|l| l.strip_prefix("#define SNAT_FIRST "))
        .and_then(|v| v.trim().parse().ok())
        .expect("SNAT_FIRST in dkp_xdp.c");
    let range = dataplane::pipeline::SNAT_PORTS;
    assert_eq!(first, *range.start());
    assert_eq!(*range.end(), u16::MAX);
}
