//! Routes in the host kernel toward the exception port (`kernel_routes`).
//!
//! With an exception port the node's kernel holds the node's addresses on
//! the exception interface (a TAP). Its own Service traffic — and that of
//! pods routed through it — reaches the dataplane only if the kernel routes
//! Service addresses onto that interface. The proxy installs those routes
//! itself, over rtnetlink:
//!
//! - every `service_cidrs` prefix;
//! - a host route (/32, /128) for every other frontend address of the
//!   current table that is not a node address: ExternalIPs, load-balancer
//!   ingress IPs, ClusterIPs outside the Service CIDRs.
//!
//! Every route it installs carries a routing protocol number of its own
//! (`rtm_protocol`, [`crate::config::DEFAULT_ROUTE_PROTOCOL`] unless
//! configured), in the main table, and it only ever adds, or removes,
//! routes carrying that number: an administrator's route to the same
//! destination is left alone (the add fails, counted and logged).
//!
//! The [`KernelRoutes`] reconciler compares the wanted set with what the
//! kernel holds. A publication whose set did not change makes no netlink
//! call; a changed set is applied as a diff; after a failure, at start and
//! on [`KernelRoutes::resync`] the kernel's routes with the mark are read
//! back (one dump) and repaired: missing ones added, stale ones (left by a
//! crash, or on another interface) removed. Errors are counted, never
//! fatal, and retried at the next reconcile.
use crate::publisher::ControlMetrics;
use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_DONE,
    NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// A destination routed to the exception interface: a prefix with its host
/// bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelRoute {
    addr: IpAddr,
    len: u8,
}

impl KernelRoute {
    /// `addr/len`, host bits cleared; `None` when `len` is too long.
    pub fn new(addr: IpAddr, len: u8) -> Option<KernelRoute> {
        let addr = match addr {
            IpAddr::V4(a) if len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) if len <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
            _ => return None,
        };
        Some(KernelRoute { addr, len })
    }

    /// A host route (/32 or /128).
    pub fn host(addr: IpAddr) -> KernelRoute {
        KernelRoute {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// The destination address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// True for `0.0.0.0/0` and `::/0`.
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// True when `ip` is inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        KernelRoute::new(ip, self.len).is_some_and(|r| r.addr == self.addr)
    }
}

impl fmt::Display for KernelRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An address the kernel must keep to itself (never routed to the
/// dataplane): unspecified, loopback, multicast, link-local.
fn unroutable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_link_local()
        }
        IpAddr::V6(a) => {
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The routes wanted: every Service CIDR, and a host route for every
/// frontend address that is neither a node address nor inside a Service
/// CIDR (nor unspecified, loopback, multicast or link-local).
pub fn desired(
    service_cidrs: &[(IpAddr, u8)],
    frontends: impl IntoIterator<Item = IpAddr>,
    node_addresses: &[IpAddr],
) -> BTreeSet<KernelRoute> {
    let cidrs: BTreeSet<KernelRoute> = service_cidrs
        .iter()
        .filter_map(|&(a, l)| KernelRoute::new(a, l))
        .collect();
    let mut out = cidrs.clone();
    for ip in frontends {
        if unroutable(ip) || node_addresses.contains(&ip) || cidrs.iter().any(|c| c.contains(ip)) {
            continue;
        }
        out.insert(KernelRoute::host(ip));
    }
    out
}

/// One of our routes as the kernel holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Installed {
    /// The destination.
    pub route: KernelRoute,
    /// Its output interface (0: none, e.g. a multipath route).
    pub oif: u32,
}

/// What a reconcile changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Our routes to remove: not wanted, or on another interface.
    pub remove: Vec<Installed>,
    /// Wanted routes to add.
    pub add: Vec<KernelRoute>,
}

impl Plan {
    /// True when nothing is to change.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }
}

/// The diff from `current` (our routes in the kernel) to `desired` on
/// interface `oif`. Removals come first: a wanted destination left on
/// another interface is removed there and added on `oif`.
pub fn plan(desired: &BTreeSet<KernelRoute>, current: &[Installed], oif: u32) -> Plan {
    let mut keep = BTreeSet::new();
    let mut remove = Vec::new();
    for i in current {
        if i.oif == oif && desired.contains(&i.route) && keep.insert(i.route) {
            continue;
        }
        remove.push(*i);
    }
    let add = desired.difference(&keep).copied().collect();
    Plan { remove, add }
}

/// The kernel side of a reconcile (rtnetlink; a fake in tests).
pub trait RouteOps {
    /// Whether interface `ifindex` exists and is up: `Ok(None)` when it
    /// does not exist.
    fn link_up(&mut self, ifindex: u32) -> io::Result<Option<bool>>;
    /// Every route of the main table with routing protocol `protocol`.
    fn dump(&mut self, protocol: u8) -> io::Result<Vec<Installed>>;
    /// Adds `route` via interface `oif` (fails if the destination has a
    /// route already, ours or not).
    fn add(&mut self, route: KernelRoute, oif: u32, protocol: u8) -> io::Result<()>;
    /// Removes our route `r` (only a route with `protocol` matches).
    fn delete(&mut self, r: Installed, protocol: u8) -> io::Result<()>;
}

/// What a reconcile did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Netlink calls made (0: the set had not changed).
    pub calls: usize,
    /// Routes added.
    pub added: usize,
    /// Routes removed.
    pub removed: usize,
    /// Failures (each counted in `dpdk_kube_proxy_route_errors_total`).
    pub errors: usize,
}

impl Outcome {
    /// True when the kernel now holds exactly the wanted routes.
    pub fn ok(&self) -> bool {
        self.errors == 0
    }
}

/// Keeps the kernel's routes toward the exception interface equal to the
/// wanted set. Runs on the control thread only.
pub struct KernelRoutes<O> {
    ops: O,
    oif: u32,
    protocol: u8,
    /// The wanted set, last given (`None` before the first
    /// [`KernelRoutes::update`]: nothing is known to be wanted yet, so
    /// retries and resyncs do nothing).
    desired: Option<BTreeSet<KernelRoute>>,
    /// Ours in the kernel, when known (every one on `oif`): `None` at start
    /// and after a failure, so the next reconcile reads the kernel back.
    applied: Option<BTreeSet<KernelRoute>>,
    metrics: Arc<ControlMetrics>,
}

impl<O: RouteOps> KernelRoutes<O> {
    /// A reconciler for routes via interface `oif` marked with `protocol`;
    /// nothing is done before the first [`KernelRoutes::update`].
    pub fn new(ops: O, oif: u32, protocol: u8, metrics: Arc<ControlMetrics>) -> Self {
        KernelRoutes {
            ops,
            oif,
            protocol,
            desired: None,
            applied: None,
            metrics,
        }
    }

    /// The output interface.
    pub fn oif(&self) -> u32 {
        self.oif
    }

    /// True when the last reconcile failed (or none ran): the caller should
    /// call [`KernelRoutes::retry`] later.
    pub fn needs_retry(&self) -> bool {
        self.desired.is_some() && self.applied.is_none()
    }

    /// Makes `desired` the wanted set. No netlink call when it equals what
    /// the kernel was last brought to; the diff when it differs; a full
    /// read-back and repair when the kernel's state is unknown (first call,
    /// after a failure).
    pub fn update(&mut self, desired: BTreeSet<KernelRoute>) -> Outcome {
        if self.applied.as_ref() == Some(&desired) {
            self.desired = Some(desired);
            return Outcome::default();
        }
        let full = self.applied.is_none();
        self.desired = Some(desired);
        self.reconcile(full)
    }

    /// Tries the wanted set again after a failure (a full reconcile).
    /// Nothing before the first [`KernelRoutes::update`].
    pub fn retry(&mut self) -> Outcome {
        if self.desired.is_none() {
            return Outcome::default();
        }
        self.reconcile(true)
    }

    /// Reads the kernel's routes back and repairs them (one dump; changes
    /// only when someone removed or added routes with our mark). Nothing
    /// before the first [`KernelRoutes::update`].
    pub fn resync(&mut self) -> Outcome {
        self.retry()
    }

    /// Removes every route with our mark (clean shutdown).
    pub fn clear(&mut self) -> Outcome {
        self.desired = Some(BTreeSet::new());
        self.reconcile(true)
    }

    fn error(&self, what: std::fmt::Arguments<'_>, e: &io::Error, out: &mut Outcome) {
        out.errors += 1;
        self.metrics.route_errors.fetch_add(1, Relaxed);
        tracing::warn!("kernel routes: {what}: {e} (retried at the next reconcile)");
    }

    fn reconcile(&mut self, full: bool) -> Outcome {
        let mut out = Outcome::default();
        let current: Vec<Installed> = if full {
            out.calls += 1;
            match self.ops.dump(self.protocol) {
                Ok(c) => c,
                Err(e) => {
                    self.error(format_args!("reading routes"), &e, &mut out);
                    self.applied = None;
                    return out;
                }
            }
        } else {
            let oif = self.oif;
            self.applied
                .iter()
                .flatten()
                .map(|&route| Installed { route, oif })
                .collect()
        };
        let desired = self.desired.clone().unwrap_or_default();
        let plan = plan(&desired, &current, self.oif);
        let mut installed: BTreeSet<Installed> = current.into_iter().collect();
        // Routes need their interface up (the TAP appears when the EAL
        // probes it and comes up when the port starts).
        let mut link_ok = true;
        if !plan.add.is_empty() {
            out.calls += 1;
            let why = match self.ops.link_up(self.oif) {
                Ok(Some(true)) => None,
                Ok(Some(false)) => Some(io::Error::other("interface is down")),
                Ok(None) => Some(io::Error::other("no such interface")),
                Err(e) => Some(e),
            };
            if let Some(e) = why {
                let oif = self.oif;
                self.error(format_args!("exception interface {oif}"), &e, &mut out);
                link_ok = false;
            }
        }
        for r in &plan.remove {
            out.calls += 1;
            match self.ops.delete(*r, self.protocol) {
                Ok(()) => {
                    out.removed += 1;
                    installed.remove(r);
                }
                // Gone already (e.g. with its interface).
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc_errno::ESRCH | libc_errno::ENOENT)
                    ) =>
                {
                    installed.remove(r);
                }
                Err(e) => self.error(
                    format_args!("removing {} (dev {})", r.route, r.oif),
                    &e,
                    &mut out,
                ),
            }
        }
        if link_ok {
            for r in &plan.add {
                out.calls += 1;
                match self.ops.add(*r, self.oif, self.protocol) {
                    Ok(()) => {
                        out.added += 1;
                        installed.insert(Installed {
                            route: *r,
                            oif: self.oif,
                        });
                    }
                    Err(e) if e.raw_os_error() == Some(libc_errno::EEXIST) => self.error(
                        format_args!("adding {r}: a route to it exists that is not ours (protocol other than {}); left alone", self.protocol),
                        &e,
                        &mut out,
                    ),
                    Err(e) => self.error(format_args!("adding {r}"), &e, &mut out),
                }
            }
        }
        self.metrics
            .kernel_routes
            .store(installed.len() as u64, Relaxed);
        self.applied = out.ok().then_some(desired);
        if out.added + out.removed > 0 {
            tracing::info!(
                added = out.added,
                removed = out.removed,
                errors = out.errors,
                installed = installed.len(),
                "kernel routes toward the exception interface updated"
            );
        }
        out
    }
}

/// The errno values a reconcile tells apart.
mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const ESRCH: i32 = 3;
    pub const EEXIST: i32 = 17;
}

/// The main routing table.
const RT_TABLE_MAIN: u8 = RouteHeader::RT_TABLE_MAIN;

/// [`RouteOps`] over an rtnetlink socket (`NETLINK_ROUTE`), blocking.
pub struct Rtnetlink {
    sock: netlink_sys::Socket,
    seq: u32,
}

impl Rtnetlink {
    /// Opens an rtnetlink socket in the process's network namespace.
    pub fn open() -> io::Result<Rtnetlink> {
        let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Rtnetlink { sock, seq: 0 })
    }

    /// Sends `msg` and collects the replies' payloads (message type, bytes)
    /// until the ACK (or, for a dump, DONE). A NACK is the error.
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<(u16, Vec<u8>)>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut out = Vec::new();
        loop {
            let (buf, _) = self.sock.recv_from_full()?;
            if buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "netlink socket closed",
                ));
            }
            let mut off = 0;
            while off < buf.len() {
                let nl = NetlinkBuffer::new_checked(&buf[off..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = nl.length() as usize;
                off += (len + 3) & !3;
                if nl.sequence_number() != seq {
                    // A late reply to an earlier request.
                    continue;
                }
                match nl.message_type() {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let e = ErrorBuffer::new_checked(nl.payload()).map_err(|e| {
                            io::Error::new(io::ErrorKind::InvalidData, e.to_string())
                        })?;
                        return match e.code() {
                            None => Ok(out),
                            Some(c) => Err(io::Error::from_raw_os_error(c.get().abs())),
                        };
                    }
                    t => out.push((t, nl.payload().to_vec())),
                }
            }
        }
    }

    fn route_message(route: KernelRoute, protocol: u8, add: bool) -> RouteMessage {
        let mut m = RouteMessage::default();
        let h = &mut m.header;
        h.address_family = if route.addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        h.destination_prefix_length = route.len;
        h.table = RT_TABLE_MAIN;
        h.protocol = RouteProtocol::from(protocol);
        // As `ip route`: a route without a gateway has link scope (IPv4);
        // a delete matches any scope.
        h.scope = match (add, route.addr.is_ipv4()) {
            (true, true) => RouteScope::Link,
            (true, false) => RouteScope::Universe,
            (false, _) => RouteScope::NoWhere,
        };
        h.kind = if add {
            RouteType::Unicast
        } else {
            RouteType::Unspec
        };
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(route.addr)));
        m
    }
}

/// Offsets in `struct rtmsg` (after the netlink header).
const RTM_DST_LEN: usize = 1;
const RTM_TABLE: usize = 4;
const RTM_PROTOCOL: usize = 5;
/// `struct ifinfomsg`: `ifi_flags` at 8..12; `IFF_UP`.
const IFI_FLAGS: usize = 8;
const IFF_UP: u32 = 1;
/// `RTM_NEWROUTE`, `RTM_NEWLINK`.
const RTM_NEWROUTE: u16 = 24;
const RTM_NEWLINK: u16 = 16;

impl RouteOps for Rtnetlink {
    fn link_up(&mut self, ifindex: u32) -> io::Result<Option<bool>> {
        let mut m = LinkMessage::default();
        m.header.index = ifindex;
        match self.request(RouteNetlinkMessage::GetLink(m), NLM_F_REQUEST | NLM_F_ACK) {
            Ok(replies) => Ok(replies
                .iter()
                .find(|(t, p)| *t == RTM_NEWLINK && p.len() >= IFI_FLAGS + 4)
                .map(|(_, p)| {
                    let flags = u32::from_ne_bytes([
                        p[IFI_FLAGS],
                        p[IFI_FLAGS + 1],
                        p[IFI_FLAGS + 2],
                        p[IFI_FLAGS + 3],
                    ]);
                    flags & IFF_UP != 0
                })),
            Err(e) if e.raw_os_error() == Some(19) => Ok(None), // ENODEV
            Err(e) => Err(e),
        }
    }

    fn dump(&mut self, protocol: u8) -> io::Result<Vec<Installed>> {
        let mut out = Vec::new();
        let replies = self.request(
            RouteNetlinkMessage::GetRoute(RouteMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        for (t, p) in replies {
            // Only ours are decoded: other routes are not our business (and
            // may carry attributes the decoder does not know).
            if t != RTM_NEWROUTE
                || p.len() <= RTM_PROTOCOL
                || p[RTM_PROTOCOL] != protocol
                || p[RTM_TABLE] != RT_TABLE_MAIN
            {
                continue;
            }
            let m = <RouteMessage as netlink_packet_core::Parseable<[u8]>>::parse(&p[..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let family_v4 = m.header.address_family == AddressFamily::Inet;
            let mut dst = if family_v4 {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            };
            let mut oif = 0;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = IpAddr::V4(*a),
                    RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = IpAddr::V6(*a),
                    RouteAttribute::Oif(i) => oif = *i,
                    _ => {}
                }
            }
            if let Some(route) = KernelRoute::new(dst, p[RTM_DST_LEN]) {
                out.push(Installed { route, oif });
            }
        }
        Ok(out)
    }

    fn add(&mut self, route: KernelRoute, oif: u32, protocol: u8) -> io::Result<()> {
        let mut m = Self::route_message(route, protocol, true);
        m.attributes.push(RouteAttribute::Oif(oif));
        self.request(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(|_| ())
    }

    fn delete(&mut self, r: Installed, protocol: u8) -> io::Result<()> {
        let mut m = Self::route_message(r.route, protocol, false);
        if r.oif != 0 {
            m.attributes.push(RouteAttribute::Oif(r.oif));
        }
        self.request(RouteNetlinkMessage::DelRoute(m), NLM_F_REQUEST | NLM_F_ACK)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests;
