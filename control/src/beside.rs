//! Beside the host kernel: `role: shared` ports.
//!
//! On a node whose NIC the host kernel keeps, the dataplane runs on an
//! af_xdp port of that NIC. The proxy brings the port's XDP program
//! (`bpf/dkp_xdp.c`, compiled at build time and embedded here as
//! [`XDP_OBJECT`]; DPDK's af_xdp PMD loads it through its `xdp_prog`
//! devarg). The program hands the dataplane only what is the proxy's —
//! Service frontends, the whole of frontend addresses the kernel does not
//! hold (with their ARP/NDP), and answers to masqueraded connections on a
//! node address that no kernel socket claims — and passes everything else
//! to the kernel. This module keeps the program's frontend map
//! (`dkp_frontends`) in step with the published table ([`FrontendMap`]),
//! removes a program a killed proxy left on an interface
//! ([`detach_leftover`]), and mirrors the kernel's neighbour table into the
//! dataplane ([`NeighborMirror`]): the kernel answers ARP/NDP for the node's
//! addresses and receives the replies, so it resolves next hops (asked to
//! with `NTF_USE`) and the dataplane uses its answers as static neighbours.
use crate::kernel_routes::Rtnetlink;
use crate::publisher::ControlMetrics;
use dataplane::addr::{Addr, Proto};
use dataplane::packet::MacAddr;
use dataplane::table::{Route, StaticNeighbor};
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The compiled XDP program of shared ports (an eBPF ELF object).
pub static XDP_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dkp_xdp.o"));
/// Its program name, as the kernel reports it.
pub const XDP_PROG_NAME: &str = "dkp_xdp";
/// The name of its frontend map.
pub const FRONTEND_MAP: &str = "dkp_frontends";
/// The name of its per-CPU counters (redirected, passed).
pub const STATS_MAP: &str = "dkp_stats";
/// Entries the frontend map holds (`max_entries` in `bpf/dkp_xdp.c`).
pub const FRONTEND_MAP_CAPACITY: usize = 131_072;

/// An exact frontend: (protocol, port, address).
pub const FE_EXACT: u32 = 1;
/// A whole frontend address the kernel does not hold.
pub const FE_WHOLE: u32 = 2;
/// A node address the dataplane masquerades to.
pub const FE_SNAT: u32 = 4;
const PROTO_SNAT: u8 = 255;

/// A key of the frontend map (`struct fe_key`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeKey {
    family: u8,
    proto: u8,
    port: u16,
    addr: [u8; 16],
}

impl FeKey {
    fn new(ip: IpAddr, proto: u8, port: u16) -> FeKey {
        let mut addr = [0; 16];
        let family = match ip {
            IpAddr::V4(a) => {
                addr[..4].copy_from_slice(&a.octets());
                4
            }
            IpAddr::V6(a) => {
                addr = a.octets();
                6
            }
        };
        FeKey {
            family,
            proto,
            port,
            addr,
        }
    }

    /// The key's bytes as the program reads them (port in network order).
    pub fn bytes(&self) -> [u8; 20] {
        let mut b = [0; 20];
        b[0] = self.family;
        b[1] = self.proto;
        b[2..4].copy_from_slice(&self.port.to_be_bytes());
        b[4..].copy_from_slice(&self.addr);
        b
    }

    fn from_bytes(b: &[u8]) -> Option<FeKey> {
        let b: &[u8; 20] = b.try_into().ok()?;
        Some(FeKey {
            family: b[0],
            proto: b[1],
            port: u16::from_be_bytes([b[2], b[3]]),
            addr: b[4..].try_into().ok()?,
        })
    }
}

/// The frontend map's wanted contents: an exact entry per frontend, a
/// whole-address entry for every frontend address the kernel does not
/// hold (`node_addresses` from the configuration and `kernel_held`, every
/// address of the host's interfaces: those stay the kernel's but for their
/// Service ports), and an SNAT entry per node address.
pub fn desired(
    frontends: impl IntoIterator<Item = (IpAddr, Proto, u16)>,
    node_addresses: &[IpAddr],
    kernel_held: &BTreeSet<IpAddr>,
) -> BTreeMap<FeKey, u32> {
    let mut m = BTreeMap::new();
    for (ip, proto, port) in frontends {
        *m.entry(FeKey::new(ip, proto as u8, port)).or_insert(0) |= FE_EXACT;
        if !node_addresses.contains(&ip) && !kernel_held.contains(&ip) {
            *m.entry(FeKey::new(ip, 0, 0)).or_insert(0) |= FE_WHOLE;
        }
    }
    for a in node_addresses {
        *m.entry(FeKey::new(*a, PROTO_SNAT, 0)).or_insert(0) |= FE_SNAT;
    }
    m
}

/// What a map sync did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapSync {
    /// Entries added or changed.
    pub written: usize,
    /// Entries removed.
    pub removed: usize,
    /// Failed writes/removals (the next sync retries them).
    pub errors: usize,
}

/// Operations on a BPF hash map with [`FeKey`] keys and `u32` values.
pub trait KeyValueMap {
    /// Every key in the map.
    fn keys(&self) -> io::Result<Vec<FeKey>>;
    /// Inserts or replaces.
    fn put(&mut self, key: &FeKey, value: u32) -> io::Result<()>;
    /// Removes.
    fn remove(&mut self, key: &FeKey) -> io::Result<()>;
}

/// The frontend map of one shared port's XDP program.
pub struct FrontendMap<M> {
    map: M,
    /// What the map holds, as far as this process wrote it.
    installed: BTreeMap<FeKey, u32>,
    /// What it should hold (the last [`FrontendMap::sync`]).
    want: BTreeMap<FeKey, u32>,
    /// The map must be read back (at start, after an error).
    dirty: bool,
}

impl<M: KeyValueMap> FrontendMap<M> {
    /// Wraps a map; the first [`FrontendMap::sync`] reads it back.
    pub fn new(map: M) -> Self {
        FrontendMap {
            map,
            installed: BTreeMap::new(),
            want: BTreeMap::new(),
            dirty: true,
        }
    }

    /// True while the last sync failed somewhere.
    pub fn needs_retry(&self) -> bool {
        self.dirty
    }

    /// Syncs again toward the last wanted contents (after a failure).
    pub fn retry(&mut self) -> MapSync {
        let want = std::mem::take(&mut self.want);
        self.sync(&want)
    }

    /// Entries installed.
    pub fn len(&self) -> usize {
        self.installed.len()
    }

    /// True when nothing is installed.
    pub fn is_empty(&self) -> bool {
        self.installed.is_empty()
    }

    /// Makes the map hold `want`: a diff against what was written (no
    /// system call when nothing changed); after an error or at the first
    /// call, the map's keys are read back first.
    pub fn sync(&mut self, want: &BTreeMap<FeKey, u32>) -> MapSync {
        if &self.want != want {
            self.want = want.clone();
        }
        let mut out = MapSync::default();
        if self.dirty {
            match self.map.keys() {
                Ok(keys) => {
                    // Values are rewritten below; unknown keys are removed.
                    self.installed = keys.into_iter().map(|k| (k, u32::MAX)).collect();
                    self.dirty = false;
                }
                Err(_) => {
                    out.errors += 1;
                    return out;
                }
            }
        }
        let stale: Vec<FeKey> = self
            .installed
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect();
        // Removals first: the map has a fixed capacity.
        for k in stale {
            match self.map.remove(&k) {
                Ok(()) => {
                    self.installed.remove(&k);
                    out.removed += 1;
                }
                Err(e) if e.raw_os_error() == Some(ENOENT) => {
                    self.installed.remove(&k);
                }
                Err(_) => {
                    out.errors += 1;
                    self.dirty = true;
                }
            }
        }
        for (k, v) in want {
            if self.installed.get(k) == Some(v) {
                continue;
            }
            match self.map.put(k, *v) {
                Ok(()) => {
                    self.installed.insert(*k, *v);
                    out.written += 1;
                }
                Err(_) => {
                    out.errors += 1;
                    self.dirty = true;
                }
            }
        }
        out
    }
}

const ENOENT: i32 = 2;

// The bpf(2) commands used here.
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_MAP_GET_NEXT_KEY: u32 = 4;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_MAP_GET_FD_BY_ID: u32 = 14;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;

/// `union bpf_attr`, large enough for the commands above.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(mut self, off: usize, v: u32) -> Attr {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, off: usize, v: u64) -> Attr {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

#[allow(unsafe_code)]
fn bpf(cmd: u32, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, writable `union bpf_attr` of the size
    // passed; pointers inside it point to live buffers of the sizes the
    // command expects (set up by the callers below).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr.0.as_mut_ptr(),
            attr.0.len() as libc::c_long,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

#[allow(unsafe_code)]
fn fd_of(r: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor to us.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

/// This process's BPF program and map descriptors: (`"prog"` or `"map"`,
/// the kernel's id, the descriptor), from `/proc/self/fd` and `fdinfo`.
fn own_bpf_fds() -> io::Result<Vec<(&'static str, u32, i32)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd")? {
        let e = e?;
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let (kind, key) = match target.to_str() {
            Some("anon_inode:bpf-prog") => ("prog", "prog_id:"),
            Some("anon_inode:bpf-map") => ("map", "map_id:"),
            _ => continue,
        };
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
            continue;
        };
        if let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
        {
            out.push((kind, id, fd));
        }
    }
    Ok(out)
}

/// A descriptor of our own, duplicated (close-on-exec).
#[allow(unsafe_code)]
fn dup(fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor number; it fails
    // cleanly if the number is not open. The result is a new descriptor
    // owned by nobody else.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd_of(i64::from(r)))
    }
}

/// `struct bpf_prog_info` fields: `nr_map_ids` at 52, `map_ids` at 56,
/// `name` at 64..80.
fn prog_info(fd: &OwnedFd, map_ids: &mut [u32]) -> io::Result<(String, usize)> {
    let mut info = [0u8; 256];
    info[52..56].copy_from_slice(&(map_ids.len() as u32).to_ne_bytes());
    info[56..64].copy_from_slice(&(map_ids.as_mut_ptr() as u64).to_ne_bytes());
    let mut a = Attr::new()
        .u32(0, fd.as_raw_fd() as u32)
        .u32(4, info.len() as u32)
        .u64(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    let n = u32::from_ne_bytes([info[52], info[53], info[54], info[55]]) as usize;
    Ok((c_name(&info[64..80]), n))
}

fn c_name(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A BPF map opened by id.
pub struct BpfMap {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
    name: String,
}

impl BpfMap {
    fn by_id(id: u32) -> io::Result<BpfMap> {
        let mut a = Attr::new().u32(0, id);
        BpfMap::of_fd(fd_of(bpf(BPF_MAP_GET_FD_BY_ID, &mut a)?))
    }

    fn of_fd(fd: OwnedFd) -> io::Result<BpfMap> {
        // `struct bpf_map_info`: key_size at 8, value_size at 12, name at 24..40.
        let mut info = [0u8; 128];
        let mut a = Attr::new()
            .u32(0, fd.as_raw_fd() as u32)
            .u32(4, info.len() as u32)
            .u64(8, info.as_mut_ptr() as u64);
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
        let word = |o: usize| u32::from_ne_bytes([info[o], info[o + 1], info[o + 2], info[o + 3]]);
        Ok(BpfMap {
            key_size: word(8) as usize,
            value_size: word(12) as usize,
            name: c_name(&info[24..40]),
            fd,
        })
    }

    /// The maps of the XDP program attached to interface `ifindex`, which
    /// must be the proxy's. The af_xdp PMD loaded it in this process, which
    /// still holds the program's and maps' descriptors: they are found in
    /// `/proc/self/fd` (no CAP_SYS_ADMIN needed, unlike opening by id,
    /// which is the fallback).
    pub fn of_interface(nl: &mut Rtnetlink, ifindex: u32) -> io::Result<Vec<BpfMap>> {
        let Some(id) = xdp_prog_id(nl, ifindex)? else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no XDP program on interface {ifindex}"),
            ));
        };
        let own = own_bpf_fds()?;
        let prog = match own.iter().find(|(kind, i, _)| *kind == "prog" && *i == id) {
            Some((_, _, fd)) => dup(*fd)?,
            None => {
                let mut a = Attr::new().u32(0, id);
                fd_of(bpf(BPF_PROG_GET_FD_BY_ID, &mut a)?)
            }
        };
        let mut ids = [0u32; 16];
        let (name, n) = prog_info(&prog, &mut ids)?;
        if name != XDP_PROG_NAME {
            return Err(io::Error::other(format!(
                "interface {ifindex} runs XDP program {name:?}, not the proxy's"
            )));
        }
        ids[..n.min(ids.len())]
            .iter()
            .map(
                |id| match own.iter().find(|(k, i, _)| *k == "map" && i == id) {
                    Some((_, _, fd)) => BpfMap::of_fd(dup(*fd)?),
                    None => BpfMap::by_id(*id),
                },
            )
            .collect()
    }

    /// The map's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<()> {
        let mut a = Attr::new()
            .u32(0, self.fd.as_raw_fd() as u32)
            .u64(8, key.as_ptr() as u64)
            .u64(16, value.as_mut_ptr() as u64);
        bpf(BPF_MAP_LOOKUP_ELEM, &mut a).map(|_| ())
    }

    /// Sums a per-CPU array's `u64` slot `index` over every possible CPU.
    pub fn percpu_sum(&self, index: u32) -> io::Result<u64> {
        let cpus = possible_cpus()?;
        let stride = self.value_size.div_ceil(8) * 8;
        let mut v = vec![0u8; stride * cpus];
        self.lookup(&index.to_ne_bytes(), &mut v)?;
        Ok(v.chunks(stride)
            .map(|c| u64::from_ne_bytes(c[..8].try_into().unwrap_or([0; 8])))
            .sum())
    }
}

impl KeyValueMap for BpfMap {
    fn keys(&self) -> io::Result<Vec<FeKey>> {
        let mut out = Vec::new();
        let mut prev: Option<Vec<u8>> = None;
        loop {
            let mut next = vec![0u8; self.key_size];
            let mut a = Attr::new()
                .u32(0, self.fd.as_raw_fd() as u32)
                .u64(8, prev.as_ref().map_or(0, |p| p.as_ptr() as u64))
                .u64(16, next.as_mut_ptr() as u64);
            match bpf(BPF_MAP_GET_NEXT_KEY, &mut a) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(ENOENT) => return Ok(out),
                Err(e) => return Err(e),
            }
            if let Some(k) = FeKey::from_bytes(&next) {
                out.push(k);
            }
            prev = Some(next);
            if out.len() > FRONTEND_MAP_CAPACITY {
                return Err(io::Error::other("frontend map iteration does not end"));
            }
        }
    }

    fn put(&mut self, key: &FeKey, value: u32) -> io::Result<()> {
        let k = key.bytes();
        let v = value.to_ne_bytes();
        let mut a = Attr::new()
            .u32(0, self.fd.as_raw_fd() as u32)
            .u64(8, k.as_ptr() as u64)
            .u64(16, v.as_ptr() as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
    }

    fn remove(&mut self, key: &FeKey) -> io::Result<()> {
        let k = key.bytes();
        let mut a = Attr::new()
            .u32(0, self.fd.as_raw_fd() as u32)
            .u64(8, k.as_ptr() as u64);
        bpf(BPF_MAP_DELETE_ELEM, &mut a).map(|_| ())
    }
}

/// The number of possible CPUs (the per-CPU map value count).
fn possible_cpus() -> io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for part in s.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (
            a.parse().map_err(io::Error::other)?,
            b.parse().map_err(io::Error::other)?,
        );
        n = n.max(b + 1).max(a + 1);
    }
    Ok(n.max(1))
}

/// The id of the XDP program attached to `ifindex`, if any.
pub fn xdp_prog_id(nl: &mut Rtnetlink, ifindex: u32) -> io::Result<Option<u32>> {
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    let replies = nl.request(RouteNetlinkMessage::GetLink(m), NLM_F_REQUEST | NLM_F_ACK)?;
    for (t, p) in replies {
        if t != RTM_NEWLINK {
            continue;
        }
        let m = <LinkMessage as netlink_packet_core::Parseable<[u8]>>::parse(&p[..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        for a in &m.attributes {
            if let LinkAttribute::Xdp(x) = a {
                for x in x {
                    if let LinkXdp::ProgId(id) = x {
                        return Ok((*id != 0).then_some(*id));
                    }
                }
            }
        }
    }
    Ok(None)
}

/// The name of the program with this id.
fn prog_name(id: u32) -> io::Result<String> {
    let mut a = Attr::new().u32(0, id);
    let prog = fd_of(bpf(BPF_PROG_GET_FD_BY_ID, &mut a)?);
    prog_info(&prog, &mut []).map(|(n, _)| n)
}

/// Removes the proxy's XDP program from `ifindex` if one is attached (a
/// killed proxy leaves it behind, and the af_xdp PMD refuses to replace an
/// attached program): the one `recorded` by a previous run, else one named
/// [`XDP_PROG_NAME`] (telling needs CAP_SYS_ADMIN). Returns whether one was
/// removed; another program is an error naming it (the proxy does not
/// remove what is not its own).
pub fn detach_leftover(
    nl: &mut Rtnetlink,
    ifindex: u32,
    recorded: Option<u32>,
) -> io::Result<bool> {
    let Some(id) = xdp_prog_id(nl, ifindex)? else {
        return Ok(false);
    };
    let name = if recorded == Some(id) {
        Ok(XDP_PROG_NAME.to_string())
    } else {
        prog_name(id)
    };
    let name = name.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "interface {ifindex} has an XDP program attached (id {id}) whose owner cannot be \
                 told ({e}; reading another process's program needs CAP_SYS_ADMIN): if it is a \
                 killed proxy's, remove it (`ip link set dev IFACE xdp off`) and start again"
            ),
        )
    })?;
    if name != XDP_PROG_NAME {
        return Err(io::Error::other(format!(
            "interface {ifindex} already runs XDP program {name:?} (id {id}): remove it, the \
             shared port brings its own"
        )));
    }
    // Without a mode flag the kernel detaches from the mode it would attach
    // in (native when the driver has it); the generic mode is tried next.
    for flags in [0u32, XDP_FLAGS_SKB_MODE] {
        let mut m = LinkMessage::default();
        m.header.index = ifindex;
        m.attributes.push(LinkAttribute::Xdp(vec![
            LinkXdp::Fd(-1),
            LinkXdp::Flags(flags),
        ]));
        // A mode the program is not in answers an error: try the next.
        let _ = nl.request(RouteNetlinkMessage::SetLink(m), NLM_F_REQUEST | NLM_F_ACK);
        if xdp_prog_id(nl, ifindex)?.is_none() {
            return Ok(true);
        }
    }
    Err(io::Error::other(format!(
        "could not remove the proxy's leftover XDP program (id {id}) from interface {ifindex}"
    )))
}

const XDP_FLAGS_SKB_MODE: u32 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWNEIGH: u16 = 28;

/// Kernel neighbour states whose link-layer address can be used.
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;

const RTM_NEWADDR: u16 = 20;

/// Every address of the host's interfaces (an `RTM_GETADDR` dump).
pub fn kernel_addresses(nl: &mut Rtnetlink) -> io::Result<BTreeSet<IpAddr>> {
    use netlink_packet_route::address::{AddressAttribute, AddressMessage};
    let mut out = BTreeSet::new();
    let replies = nl.request(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        NLM_F_REQUEST | NLM_F_DUMP,
    )?;
    for (t, p) in replies {
        if t != RTM_NEWADDR {
            continue;
        }
        let Ok(m) = <AddressMessage as netlink_packet_core::Parseable<[u8]>>::parse(&p[..]) else {
            continue;
        };
        for a in &m.attributes {
            if let AddressAttribute::Address(ip) | AddressAttribute::Local(ip) = a {
                out.insert(*ip);
            }
        }
    }
    Ok(out)
}

/// `NUD_STALE`: usable, but not confirmed lately.
const NUD_STALE: u16 = 0x04;

/// Dumps the kernel's usable neighbours on `ifindex`: (address, MAC,
/// whether the entry is stale).
pub fn kernel_neighbors(
    nl: &mut Rtnetlink,
    ifindex: u32,
) -> io::Result<Vec<(IpAddr, MacAddr, bool)>> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut m = NeighbourMessage::default();
        m.header.family = family;
        m.header.ifindex = ifindex;
        let replies = nl.request(
            RouteNetlinkMessage::GetNeighbour(m),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        for (t, p) in replies {
            if t != RTM_NEWNEIGH {
                continue;
            }
            let Ok(m) = <NeighbourMessage as netlink_packet_core::Parseable<[u8]>>::parse(&p[..])
            else {
                continue;
            };
            if m.header.ifindex != ifindex || u16::from(m.header.state) & NUD_USABLE == 0 {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        ip = Some(IpAddr::V4(*a))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                        ip = Some(IpAddr::V6(*a))
                    }
                    NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                        let b: [u8; 6] = l[..].try_into().unwrap_or([0; 6]);
                        mac = Some(MacAddr(b));
                    }
                    _ => {}
                }
            }
            if let (Some(ip), Some(mac)) = (ip, mac) {
                if mac.0 != [0; 6] {
                    out.push((ip, mac, u16::from(m.header.state) == NUD_STALE));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Asks the kernel to resolve `addr` on `ifindex` (`NTF_USE`: as if it
/// were about to send to it): it probes, and the answer lands in its
/// neighbour table.
pub fn resolve(nl: &mut Rtnetlink, ifindex: u32, addr: IpAddr) -> io::Result<()> {
    let mut m = NeighbourMessage::default();
    m.header.family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.ifindex = ifindex;
    m.header.state = NeighbourState::Other(0);
    m.header.flags = NeighbourFlags::Use;
    m.attributes
        .push(NeighbourAttribute::Destination(match addr {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
    nl.request(
        RouteNetlinkMessage::NewNeighbour(m),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
    )
    .map(|_| ())
}

/// The on-link next hop on port `port` toward `dst` by longest prefix over
/// the table's connected subnets and routes; `None` when `dst` leaves by
/// another port or not at all.
pub fn next_hop(
    interfaces: &[dataplane::table::Interface],
    routes: &[Route],
    port: u16,
    dst: Addr,
) -> Option<IpAddr> {
    let mut best: Option<(u8, u16, Addr)> = None;
    for i in interfaces {
        if i.addr.is_v4() == dst.is_v4()
            && dst.in_prefix(&i.addr, i.prefix_len)
            && best.is_none_or(|(l, _, _)| i.prefix_len > l)
        {
            best = Some((i.prefix_len, i.port, dst));
        }
    }
    for r in routes {
        if r.prefix.is_v4() == dst.is_v4()
            && dst.in_prefix(&r.prefix, r.len)
            && best.is_none_or(|(l, _, _)| r.len > l)
        {
            best = Some((r.len, r.port, r.via.unwrap_or(dst)));
        }
    }
    match best {
        Some((_, p, hop)) if p == port => Some(hop.ip()),
        _ => None,
    }
}

/// The kernel's neighbours of the shared ports, as the dataplane's static
/// neighbours, and the next hops the kernel is asked to resolve.
#[derive(Default)]
pub struct NeighborMirror {
    /// The current mirror (sorted).
    current: Vec<StaticNeighbor>,
    /// Next hops the dataplane needs, per shared port.
    wanted: BTreeSet<(u16, IpAddr)>,
}

impl NeighborMirror {
    /// The neighbours to publish.
    pub fn neighbors(&self) -> &[StaticNeighbor] {
        &self.current
    }

    /// Sets the next hops the published table needs.
    pub fn set_wanted(&mut self, wanted: BTreeSet<(u16, IpAddr)>) {
        self.wanted = wanted;
    }

    /// Reads the kernel's neighbours of every shared port (port, ifindex),
    /// asks it to resolve wanted next hops it has no usable entry for, and
    /// returns whether the mirror changed (then a publication is due).
    pub fn refresh(&mut self, nl: &mut Rtnetlink, ports: &[(u16, u32)]) -> io::Result<bool> {
        let mut next = Vec::new();
        for &(port, ifindex) in ports {
            let known = kernel_neighbors(nl, ifindex)?;
            for &(ip, mac, _) in &known {
                next.push(StaticNeighbor {
                    addr: Addr::from(ip),
                    mac,
                    port,
                });
            }
            for &(p, hop) in &self.wanted {
                // Missing, or stale: the kernel never sees the dataplane's
                // traffic, so it would not re-check a stale entry (a
                // backend address reused by another MAC) by itself.
                let fresh = known.iter().any(|(ip, _, stale)| *ip == hop && !stale);
                if p == port && !fresh {
                    // Errors (e.g. an address the kernel will not resolve)
                    // leave the hop as it is; it is asked again next time.
                    let _ = resolve(nl, ifindex, hop);
                }
            }
        }
        next.sort_by_key(|n| (n.port, n.addr.ip()));
        let changed = next != self.current;
        self.current = next;
        Ok(changed)
    }
}

/// The index of interface `name`.
pub fn ifindex_by_name(nl: &mut Rtnetlink, name: &str) -> io::Result<u32> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    let replies = nl
        .request(RouteNetlinkMessage::GetLink(m), NLM_F_REQUEST | NLM_F_ACK)
        .map_err(|e| io::Error::new(e.kind(), format!("interface {name}: {e}")))?;
    replies
        .iter()
        .find(|(t, p)| *t == RTM_NEWLINK && p.len() >= 8)
        .map(|(_, p)| u32::from_ne_bytes([p[4], p[5], p[6], p[7]]))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}")))
}

/// Before EAL initialisation: removes the proxy's program a killed
/// predecessor left on each shared interface, and writes [`XDP_OBJECT`] to
/// a file of this process for the af_xdp PMD's `xdp_prog` (remove it once
/// the ports started). `ifaces`: (port, interface name).
pub fn prepare(ifaces: &[SharedIface]) -> io::Result<std::path::PathBuf> {
    let mut nl = Rtnetlink::open()?;
    for s in ifaces {
        let ifindex = ifindex_by_name(&mut nl, &s.iface)?;
        check_queues(s)?;
        if detach_leftover(&mut nl, ifindex, recorded_prog(&s.iface))? {
            tracing::warn!(port = s.port, iface = %s.iface, "removed the XDP program a previous run left attached");
        }
    }
    let path = std::env::temp_dir().join(format!("dpdk-kube-proxy-{}.xdp.o", std::process::id()));
    std::fs::write(&path, XDP_OBJECT)?;
    Ok(path)
}

/// A `role: shared` port: its number, its kernel interface, the af_xdp
/// queues it takes (`queue_count`, `start_queue` devargs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedIface {
    /// The port number.
    pub port: u16,
    /// The kernel interface (`iface=`).
    pub iface: String,
    /// `queue_count=` (default 1).
    pub queue_count: u32,
    /// `start_queue=` (default 0).
    pub start_queue: u32,
}

/// Every receive queue of the interface must have an AF_XDP socket: the
/// program passes what arrives on a queue without one to the kernel, which
/// would answer Service traffic itself (RSTs, port unreachables).
fn check_queues(s: &SharedIface) -> io::Result<()> {
    let (rx, combined) = match rx_channels(&s.iface) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(iface = %s.iface, "cannot read the interface's channels ({e}): make sure queue_count covers every receive queue");
            return Ok(());
        }
    };
    let queues = rx + combined;
    queue_coverage(s, queues)
}

/// The check of [`check_queues`] on a known queue count.
fn queue_coverage(s: &SharedIface, queues: u32) -> io::Result<()> {
    if s.start_queue != 0 || s.queue_count < queues {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} has {queues} receive queue(s) but the af_xdp port takes {} from queue {}: \
                 Service traffic arriving on the others would reach the kernel. Use \
                 start_queue=0,queue_count={queues} (one worker per queue), or reduce the \
                 interface's queues (ethtool -L {} combined {})",
                s.iface, s.queue_count, s.start_queue, s.iface, s.queue_count
            ),
        ));
    }
    Ok(())
}

/// The interface's (rx-only, combined) channel counts (`ETHTOOL_GCHANNELS`).
#[allow(unsafe_code)]
fn rx_channels(iface: &str) -> io::Result<(u32, u32)> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    // struct ethtool_channels: cmd, max_rx, max_tx, max_other,
    // max_combined, rx_count, tx_count, other_count, combined_count.
    let mut ch = [0u32; 9];
    ch[0] = ETHTOOL_GCHANNELS;
    let mut ifr = [0u8; 40];
    let name = iface.as_bytes();
    if name.len() >= 16 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    ifr[..name.len()].copy_from_slice(name);
    ifr[16..24].copy_from_slice(&(ch.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: a plain datagram socket, closed below; the ioctl reads the
    // name from `ifr` and writes at most `ch`'s 36 bytes through the
    // pointer in it, both live for the call.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = libc::ioctl(sock, SIOCETHTOOL as _, ifr.as_mut_ptr());
        let err = io::Error::last_os_error();
        libc::close(sock);
        if r < 0 {
            return Err(err);
        }
    }
    Ok((ch[5], ch[8]))
}

/// Where the ids of the programs the proxy attached are recorded (one
/// file per interface), so that a restarted proxy recognises its
/// predecessor's program without CAP_SYS_ADMIN. Survives a container
/// restart when the directory is a volume of the pod (deploy/README.md).
pub const STATE_DIR: &str = "/run/dpdk-kube-proxy";

fn state_file(iface: &str) -> std::path::PathBuf {
    std::path::Path::new(STATE_DIR).join(format!("xdp-{iface}.id"))
}

/// The program id recorded for `iface`, if any.
fn recorded_prog(iface: &str) -> Option<u32> {
    std::fs::read_to_string(state_file(iface))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Records the id of the program attached to `iface` (best effort: without
/// it a restart needs CAP_SYS_ADMIN to recognise a leftover).
pub fn record_prog(iface: &str, id: u32) {
    let r = std::fs::create_dir_all(STATE_DIR)
        .and_then(|()| std::fs::write(state_file(iface), format!("{id}\n")));
    if let Err(e) = r {
        tracing::warn!(%iface, "recording the XDP program id in {STATE_DIR}: {e}");
    }
}

/// Forgets the record of `iface` (its program is gone).
pub fn forget_prog(iface: &str) {
    let _ = std::fs::remove_file(state_file(iface));
}

/// One shared port at run time.
struct SharedPort {
    port: u16,
    ifindex: u32,
    frontends: FrontendMap<BpfMap>,
    stats: Option<BpfMap>,
}

/// The shared ports of a running proxy: their XDP maps and the kernel
/// neighbour mirror, driven by the control thread.
pub struct SharedPorts {
    nl: Rtnetlink,
    ports: Vec<SharedPort>,
    mirror: NeighborMirror,
    metrics: Arc<ControlMetrics>,
}

impl SharedPorts {
    /// Opens the maps of the programs the af_xdp PMD attached and records
    /// their ids ([`record_prog`]); `ports`: (shared port, interface index).
    pub fn open(
        ports: &[(&SharedIface, u32)],
        metrics: Arc<ControlMetrics>,
    ) -> io::Result<SharedPorts> {
        let mut nl = Rtnetlink::open()?;
        let mut out = Vec::new();
        for &(shared, ifindex) in ports {
            let port = shared.port;
            // Recorded first: a restart must recognise this program even if
            // this process dies in what follows.
            let prog_id = xdp_prog_id(&mut nl, ifindex)?.unwrap_or(0);
            if prog_id != 0 {
                record_prog(&shared.iface, prog_id);
            }
            let mut frontends = None;
            let mut stats = None;
            for m in BpfMap::of_interface(&mut nl, ifindex)? {
                match m.name() {
                    FRONTEND_MAP => frontends = Some(m),
                    STATS_MAP => stats = Some(m),
                    _ => {}
                }
            }
            let Some(f) = frontends else {
                return Err(io::Error::other(format!(
                    "the XDP program on interface {ifindex} has no {FRONTEND_MAP} map"
                )));
            };
            if (f.key_size, f.value_size) != (20, 4) {
                return Err(io::Error::other(format!(
                    "{FRONTEND_MAP} on interface {ifindex} has {}-byte keys and {}-byte values, \
                     not 20 and 4: not this build's program",
                    f.key_size, f.value_size
                )));
            }
            out.push(SharedPort {
                port,
                ifindex,
                frontends: FrontendMap::new(f),
                stats,
            });
        }
        Ok(SharedPorts {
            nl,
            ports: out,
            mirror: NeighborMirror::default(),
            metrics,
        })
    }

    /// After a publication: the frontend maps follow the table, and the
    /// next hops of its backends are the ones to resolve.
    pub fn update(
        &mut self,
        frontends: &BTreeSet<(IpAddr, Proto, u16)>,
        node_addresses: &[IpAddr],
        interfaces: &[dataplane::table::Interface],
        routes: &[Route],
        backends: &BTreeSet<Addr>,
    ) {
        // The kernel's own addresses (all interfaces) are never taken as a
        // whole, even when a Service names one (a keepalived VIP, say).
        let held = match kernel_addresses(&mut self.nl) {
            Ok(a) => a,
            Err(e) => {
                self.metrics.xdp_errors.fetch_add(1, Relaxed);
                tracing::warn!("reading the kernel's addresses: {e}");
                BTreeSet::new()
            }
        };
        let want = desired(frontends.iter().copied(), node_addresses, &held);
        let mut installed = 0;
        for p in &mut self.ports {
            let s = p.frontends.sync(&want);
            if s.errors > 0 {
                self.metrics.xdp_errors.fetch_add(s.errors as u64, Relaxed);
                tracing::error!(
                    port = p.port,
                    errors = s.errors,
                    entries = want.len(),
                    "XDP frontend map update failed (retried at the next publication or tick)"
                );
            }
            installed += p.frontends.len();
        }
        self.metrics.xdp_frontends.store(installed as u64, Relaxed);
        let mut hops = BTreeSet::new();
        for p in &self.ports {
            for b in backends {
                if let Some(h) = next_hop(interfaces, routes, p.port, *b) {
                    hops.insert((p.port, h));
                }
            }
        }
        self.mirror.set_wanted(hops);
    }

    /// The periodic tick: retries failed map writes, reads the XDP
    /// counters, refreshes the neighbour mirror. Returns true when the
    /// mirror changed (a publication is due).
    pub fn tick(&mut self) -> bool {
        let (mut redirected, mut passed) = (0, 0);
        for p in &mut self.ports {
            if p.frontends.needs_retry() {
                let s = p.frontends.retry();
                self.metrics.xdp_errors.fetch_add(s.errors as u64, Relaxed);
            }
            if let Some(m) = &p.stats {
                redirected += m.percpu_sum(0).unwrap_or(0);
                passed += m.percpu_sum(1).unwrap_or(0);
            }
        }
        self.metrics.xdp_redirected.store(redirected, Relaxed);
        self.metrics.xdp_passed.store(passed, Relaxed);
        let ifs: Vec<(u16, u32)> = self.ports.iter().map(|p| (p.port, p.ifindex)).collect();
        match self.mirror.refresh(&mut self.nl, &ifs) {
            Ok(changed) => {
                self.metrics
                    .kernel_neighbors
                    .store(self.mirror.neighbors().len() as u64, Relaxed);
                changed
            }
            Err(e) => {
                self.metrics.xdp_errors.fetch_add(1, Relaxed);
                tracing::warn!("kernel neighbour dump failed: {e} (retried)");
                false
            }
        }
    }

    /// The kernel's neighbours, to publish as static neighbours.
    pub fn neighbors(&self) -> &[StaticNeighbor] {
        self.mirror.neighbors()
    }
}

#[cfg(test)]
mod tests;
