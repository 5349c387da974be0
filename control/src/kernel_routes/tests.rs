use super::*;

const OURS: u8 = 214;
const STATIC: u8 = 4;
const TAP: u32 = 7;
const OTHER_DEV: u32 = 3;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn r(s: &str) -> KernelRoute {
    let (a, l) = s.split_once('/').unwrap();
    KernelRoute::new(ip(a), l.parse().unwrap()).unwrap()
}

fn set(routes: &[&str]) -> BTreeSet<KernelRoute> {
    routes.iter().map(|s| r(s)).collect()
}

/// A kernel main table: (route, oif, protocol), with the same add/delete
/// rules as Linux (an add fails if the destination has any route; a delete
/// matches protocol, destination and interface). Shared, so a test can
/// change the kernel under a running reconciler.
#[derive(Default)]
struct Kernel {
    routes: Vec<(Installed, u8)>,
    link: Option<bool>,
    /// Netlink calls made.
    calls: usize,
    fail_dump: bool,
    /// An errno for adds of this destination.
    fail_add: Option<(KernelRoute, i32)>,
}

#[derive(Clone, Default)]
struct Fake(std::rc::Rc<std::cell::RefCell<Kernel>>);

impl Fake {
    fn with_tap_up() -> Fake {
        let f = Fake::default();
        f.k().link = Some(true);
        f
    }

    fn k(&self) -> std::cell::RefMut<'_, Kernel> {
        self.0.borrow_mut()
    }

    fn push(&self, route: &str, oif: u32, protocol: u8) {
        self.k().routes.push((
            Installed {
                route: r(route),
                oif,
            },
            protocol,
        ));
    }

    fn ours(&self) -> BTreeSet<Installed> {
        self.k()
            .routes
            .iter()
            .filter(|(_, p)| *p == OURS)
            .map(|(i, _)| *i)
            .collect()
    }

    fn has(&self, route: &str, oif: u32, protocol: u8) -> bool {
        self.k().routes.contains(&(
            Installed {
                route: r(route),
                oif,
            },
            protocol,
        ))
    }

    fn calls(&self) -> usize {
        self.k().calls
    }
}

impl RouteOps for Fake {
    fn link_up(&mut self, ifindex: u32) -> io::Result<Option<bool>> {
        let mut k = self.k();
        k.calls += 1;
        assert_eq!(ifindex, TAP);
        Ok(k.link)
    }

    fn dump(&mut self, protocol: u8) -> io::Result<Vec<Installed>> {
        let mut k = self.k();
        k.calls += 1;
        if k.fail_dump {
            return Err(io::Error::from_raw_os_error(16));
        }
        Ok(k.routes
            .iter()
            .filter(|(_, p)| *p == protocol)
            .map(|(i, _)| *i)
            .collect())
    }

    fn add(&mut self, route: KernelRoute, oif: u32, protocol: u8) -> io::Result<()> {
        let mut k = self.k();
        k.calls += 1;
        if let Some((d, errno)) = k.fail_add {
            if d == route {
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        if k.routes.iter().any(|(i, _)| i.route == route) {
            return Err(io::Error::from_raw_os_error(libc_errno::EEXIST));
        }
        k.routes.push((Installed { route, oif }, protocol));
        Ok(())
    }

    fn delete(&mut self, d: Installed, protocol: u8) -> io::Result<()> {
        let mut k = self.k();
        k.calls += 1;
        let before = k.routes.len();
        k.routes.retain(|(i, p)| {
            !(*p == protocol && i.route == d.route && (d.oif == 0 || i.oif == d.oif))
        });
        if k.routes.len() == before {
            return Err(io::Error::from_raw_os_error(libc_errno::ESRCH));
        }
        Ok(())
    }
}

fn reconciler(k: &Fake) -> (KernelRoutes<Fake>, Arc<ControlMetrics>) {
    let m = Arc::new(ControlMetrics::default());
    (KernelRoutes::new(k.clone(), TAP, OURS, m.clone()), m)
}

fn at(s: &str, oif: u32) -> Installed {
    Installed { route: r(s), oif }
}

fn on_tap(want: &BTreeSet<KernelRoute>) -> BTreeSet<Installed> {
    want.iter()
        .map(|&route| Installed { route, oif: TAP })
        .collect()
}

#[test]
fn routes_are_normalised_prefixes() {
    assert_eq!(r("198.18.100.77/24").to_string(), "198.18.100.0/24");
    assert_eq!(r("2001:2:0:100::1/64").to_string(), "2001:2:0:100::/64");
    assert_eq!(r("198.18.0.1/0").to_string(), "0.0.0.0/0");
    assert!(r("0.0.0.0/0").is_default());
    assert_eq!(KernelRoute::new(ip("198.18.0.1"), 33), None);
    assert_eq!(KernelRoute::new(ip("::1"), 129), None);
    assert!(r("198.18.100.0/24").contains(ip("198.18.100.255")));
    assert!(!r("198.18.100.0/24").contains(ip("198.18.101.0")));
    assert!(!r("198.18.100.0/24").contains(ip("2001:2::1")));
    assert!(r("0.0.0.0/0").contains(ip("198.18.0.1")));
    assert_eq!(
        KernelRoute::host(ip("2001:2::5")).to_string(),
        "2001:2::5/128"
    );
}

#[test]
fn desired_is_the_cidrs_and_host_routes_for_frontends_outside_them() {
    let cidrs = [(ip("198.18.100.9"), 24), (ip("2001:2:0:100::"), 64)];
    let node = [ip("198.18.0.1"), ip("2001:2::1")];
    let frontends = [
        "198.18.100.1",     // ClusterIP inside the Service CIDR
        "198.18.100.1",     // again (another port)
        "198.18.101.10",    // ExternalIP
        "198.18.0.1",       // NodePort on a node address
        "2001:2:0:100::1",  // IPv6 ClusterIP inside
        "2001:2:0:101::10", // IPv6 load-balancer IP
        "127.0.0.1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "fe80::1",
        "169.254.1.1",
    ]
    .map(ip);
    assert_eq!(
        desired(&cidrs, frontends, &node),
        set(&[
            "198.18.100.0/24",
            "198.18.101.10/32",
            "2001:2:0:100::/64",
            "2001:2:0:101::10/128"
        ])
    );
    // No Service CIDRs: a host route per ClusterIP.
    assert_eq!(
        desired(&[], [ip("198.18.100.1"), ip("198.18.100.2")], &node),
        set(&["198.18.100.1/32", "198.18.100.2/32"])
    );
    assert!(desired(&[], [], &node).is_empty());
}

#[test]
fn plan_removes_unwanted_and_misplaced_routes_and_adds_missing_ones() {
    let want = set(&["198.18.100.0/24", "198.18.101.10/32", "2001:2:0:100::/64"]);
    let current = [
        at("198.18.100.0/24", TAP),        // kept
        at("198.18.101.10/32", OTHER_DEV), // wanted, on the wrong interface
        at("198.18.101.11/32", TAP),       // stale
        at("198.18.100.0/24", TAP),        // a duplicate: removed once
    ];
    let p = plan(&want, &current, TAP);
    assert_eq!(
        p.remove,
        [
            at("198.18.101.10/32", OTHER_DEV),
            at("198.18.101.11/32", TAP),
            at("198.18.100.0/24", TAP)
        ]
    );
    assert_eq!(p.add, [r("198.18.101.10/32"), r("2001:2:0:100::/64")]);
    let all: Vec<Installed> = on_tap(&want).into_iter().collect();
    assert!(plan(&want, &all, TAP).is_empty());
    assert_eq!(plan(&BTreeSet::new(), &all, TAP).remove, all);
}

#[test]
fn start_repairs_what_a_crash_left_and_touches_only_our_routes() {
    let k = Fake::with_tap_up();
    // Left by a killed proxy: a wanted route, a stale one (an ExternalIP
    // removed while it was down), a wanted one on an interface that no
    // longer carries the exception path. And an administrator's route.
    k.push("198.18.100.0/24", TAP, OURS);
    k.push("198.18.101.11/32", TAP, OURS);
    k.push("198.18.101.10/32", OTHER_DEV, OURS);
    k.push("198.18.102.0/24", OTHER_DEV, STATIC);
    let (mut kr, m) = reconciler(&k);
    let want = set(&["198.18.100.0/24", "198.18.101.10/32", "2001:2:0:100::/64"]);
    let out = kr.update(want.clone());
    assert_eq!((out.added, out.removed, out.errors), (2, 2, 0), "{out:?}");
    assert!(!kr.needs_retry());
    assert_eq!(k.ours(), on_tap(&want));
    assert!(
        k.has("198.18.102.0/24", OTHER_DEV, STATIC),
        "foreign route kept"
    );
    assert_eq!(m.kernel_routes.load(Relaxed), 3);
    assert_eq!(m.route_errors.load(Relaxed), 0);
}

#[test]
fn an_unchanged_set_makes_no_netlink_call_and_a_change_only_its_diff() {
    let k = Fake::with_tap_up();
    let (mut kr, m) = reconciler(&k);
    let want = set(&["198.18.100.0/24", "198.18.101.10/32"]);
    let out = kr.update(want.clone());
    // dump + link + 2 adds.
    assert_eq!((out.calls, out.added), (4, 2), "{out:?}");
    // The same set again (every publication): nothing.
    for _ in 0..3 {
        assert_eq!(kr.update(want.clone()), Outcome::default());
    }
    assert_eq!(k.calls(), 4);
    // One ExternalIP goes, another comes: one delete, one link check, one
    // add; no dump.
    let out = kr.update(set(&["198.18.100.0/24", "198.18.101.12/32"]));
    assert_eq!((out.calls, out.added, out.removed), (3, 1, 1), "{out:?}");
    // Only removals: no link check either.
    let out = kr.update(set(&["198.18.100.0/24"]));
    assert_eq!((out.calls, out.added, out.removed), (1, 0, 1), "{out:?}");
    assert_eq!(k.ours(), [at("198.18.100.0/24", TAP)].into());
    assert_eq!(k.calls(), 4 + 3 + 1);
    assert_eq!(m.kernel_routes.load(Relaxed), 1);
}

#[test]
fn routes_wait_for_the_interface_to_be_up() {
    let k = Fake::default();
    let (mut kr, m) = reconciler(&k);
    let want = set(&["198.18.100.0/24"]);
    for link in [None, Some(false)] {
        k.k().link = link;
        let out = kr.update(want.clone());
        assert_eq!((out.added, out.errors), (0, 1), "{link:?}: {out:?}");
        assert!(kr.needs_retry());
        assert_eq!(kr.retry().errors, 1, "{link:?}");
    }
    assert!(k.k().routes.is_empty());
    assert_eq!(m.route_errors.load(Relaxed), 4);
    k.k().link = Some(true);
    let out = kr.retry();
    assert_eq!((out.added, out.errors), (1, 0), "{out:?}");
    assert!(!kr.needs_retry());
    assert!(k.has("198.18.100.0/24", TAP, OURS));
    assert_eq!(m.kernel_routes.load(Relaxed), 1);
}

#[test]
fn failures_are_counted_and_retried_with_a_read_back() {
    let k = Fake::with_tap_up();
    // An administrator's route to a Service address: ours cannot be added,
    // theirs is left alone.
    k.push("198.18.101.10/32", OTHER_DEV, STATIC);
    k.k().fail_add = Some((r("2001:2:0:100::/64"), 22)); // EINVAL
    let (mut kr, m) = reconciler(&k);
    let want = set(&["198.18.100.0/24", "198.18.101.10/32", "2001:2:0:100::/64"]);
    let out = kr.update(want.clone());
    assert_eq!((out.added, out.errors), (1, 2), "{out:?}");
    assert!(kr.needs_retry());
    assert_eq!(m.route_errors.load(Relaxed), 2);
    assert_eq!(m.kernel_routes.load(Relaxed), 1);
    // Even an unchanged set is tried again while the kernel is not right.
    let out = kr.update(want.clone());
    assert_eq!((out.added, out.errors), (0, 2), "{out:?}");
    assert!(k.has("198.18.101.10/32", OTHER_DEV, STATIC));
    // The obstacles go: the retry reads the kernel back and completes.
    k.k().routes.retain(|(_, p)| *p != STATIC);
    k.k().fail_add = None;
    let out = kr.retry();
    assert_eq!((out.added, out.removed, out.errors), (2, 0, 0), "{out:?}");
    assert!(!kr.needs_retry());
    assert_eq!(k.ours(), on_tap(&want));
    assert_eq!(m.kernel_routes.load(Relaxed), 3);
}

#[test]
fn a_failed_read_back_changes_nothing_and_is_retried() {
    let k = Fake::with_tap_up();
    k.k().fail_dump = true;
    let (mut kr, m) = reconciler(&k);
    let out = kr.update(set(&["198.18.100.0/24"]));
    assert_eq!((out.calls, out.added, out.errors), (1, 0, 1));
    assert!(kr.needs_retry());
    assert_eq!(m.route_errors.load(Relaxed), 1);
    assert!(k.k().routes.is_empty());
    k.k().fail_dump = false;
    assert!(kr.retry().ok());
    assert!(k.has("198.18.100.0/24", TAP, OURS));
}

#[test]
fn a_resync_restores_a_route_that_vanished() {
    let k = Fake::with_tap_up();
    let (mut kr, m) = reconciler(&k);
    let want = set(&["198.18.100.0/24", "198.18.101.10/32"]);
    kr.update(want.clone());
    // E.g. the interface bounced and the kernel flushed it; or an
    // administrator removed it.
    k.k()
        .routes
        .retain(|(i, _)| i.route != r("198.18.101.10/32"));
    let out = kr.resync();
    assert_eq!((out.calls, out.added, out.removed), (3, 1, 0), "{out:?}");
    assert_eq!(k.ours(), on_tap(&want));
    // Nothing missing: a resync is one dump.
    assert_eq!(kr.resync().calls, 1);
    assert_eq!(m.kernel_routes.load(Relaxed), 2);
}

#[test]
fn clear_removes_every_route_with_our_mark_and_nothing_else() {
    let k = Fake::with_tap_up();
    k.push("198.18.102.0/24", OTHER_DEV, STATIC);
    k.push("198.18.103.0/24", OTHER_DEV, OURS);
    let (mut kr, m) = reconciler(&k);
    kr.update(set(&["198.18.100.0/24", "2001:2:0:100::/64"]));
    assert_eq!(
        k.ours().len(),
        2,
        "the stale one went at the first reconcile"
    );
    let out = kr.clear();
    assert_eq!((out.removed, out.errors), (2, 0), "{out:?}");
    assert_eq!(k.ours(), BTreeSet::new());
    assert!(k.has("198.18.102.0/24", OTHER_DEV, STATIC));
    assert_eq!(m.kernel_routes.load(Relaxed), 0);
    // Nothing left: a clear is one dump, no error.
    let out = kr.clear();
    assert_eq!((out.calls, out.errors), (1, 0));
}

#[test]
fn removing_a_route_already_gone_is_not_an_error() {
    let k = Fake::with_tap_up();
    let (mut kr, m) = reconciler(&k);
    kr.update(set(&["198.18.100.0/24", "198.18.101.10/32"]));
    // Gone under the reconciler (its interface bounced).
    k.k()
        .routes
        .retain(|(i, _)| i.route != r("198.18.101.10/32"));
    let out = kr.update(set(&["198.18.100.0/24"]));
    assert_eq!((out.calls, out.removed, out.errors), (1, 0, 0), "{out:?}");
    assert!(!kr.needs_retry());
    assert_eq!(m.route_errors.load(Relaxed), 0);
    assert_eq!(m.kernel_routes.load(Relaxed), 1);
}

#[test]
fn nothing_is_done_before_the_wanted_set_is_known() {
    // Cluster mode: until the first publication after the API sync, the
    // routes a crash left stay (they are probably still wanted).
    let k = Fake::with_tap_up();
    k.push("198.18.101.10/32", TAP, OURS);
    let (mut kr, m) = reconciler(&k);
    assert!(!kr.needs_retry());
    assert_eq!(kr.retry(), Outcome::default());
    assert_eq!(kr.resync(), Outcome::default());
    assert_eq!(k.calls(), 0);
    assert_eq!(k.ours().len(), 1);
    assert_eq!(m.kernel_routes.load(Relaxed), 0);
}
