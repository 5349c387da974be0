//! Address newtypes used as hash keys on the fast path.
//!
//! Every IP address is stored as 16 bytes (IPv4 as IPv4-mapped IPv6,
//! `::ffff:a.b.c.d`) so one key type serves both families without an enum
//! discriminant in the hot hash.
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 address in a fixed 16-byte form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Addr(pub [u8; 16]);

impl Addr {
    /// The IPv4-mapped form of `a`.
    #[inline]
    pub const fn v4(a: [u8; 4]) -> Self {
        Addr([
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
        ])
    }
    /// An IPv6 address.
    #[inline]
    pub const fn v6(a: [u8; 16]) -> Self {
        Addr(a)
    }
    /// True for IPv4-mapped addresses.
    #[inline]
    pub fn is_v4(&self) -> bool {
        self.0[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
    }
    /// The four IPv4 octets (meaningful only when [`Addr::is_v4`]).
    #[inline]
    pub fn v4_octets(&self) -> [u8; 4] {
        [self.0[12], self.0[13], self.0[14], self.0[15]]
    }
    /// The address bytes as they appear on the wire: 4 for IPv4, 16 for IPv6.
    #[inline]
    pub fn wire(&self) -> &[u8] {
        if self.is_v4() {
            &self.0[12..]
        } else {
            &self.0
        }
    }
    /// As an IPv4 address (meaningful only when [`Addr::is_v4`]).
    #[inline]
    pub fn ipv4(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.v4_octets())
    }
    /// As an IPv6 address (IPv4 shows in mapped form).
    #[inline]
    pub fn ipv6(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.0)
    }
    /// True for IPv4 multicast/limited broadcast and IPv6 multicast.
    #[inline]
    pub fn is_multicast_or_broadcast(&self) -> bool {
        if self.is_v4() {
            self.0[12] >= 224
        } else {
            self.0[0] == 0xff
        }
    }
    /// Converts to the standard library type.
    pub fn ip(&self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::from(self.v4_octets()))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.0))
        }
    }
    /// True when the first `len` bits of `self` and `prefix` agree (both of one family).
    pub fn in_prefix(&self, prefix: &Addr, len: u8) -> bool {
        if self.is_v4() != prefix.is_v4() {
            return false;
        }
        let len = if self.is_v4() {
            len as usize + 96
        } else {
            len as usize
        };
        let a = u128::from_be_bytes(self.0);
        let b = u128::from_be_bytes(prefix.0);
        if len == 0 {
            return true;
        }
        let mask = if len >= 128 {
            u128::MAX
        } else {
            !(u128::MAX >> len)
        };
        (a & mask) == (b & mask)
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Addr::v4(a.octets()),
            IpAddr::V6(a) => Addr::v6(a.octets()),
        }
    }
}
impl From<Ipv4Addr> for Addr {
    fn from(a: Ipv4Addr) -> Self {
        Addr::v4(a.octets())
    }
}
impl From<Ipv6Addr> for Addr {
    fn from(a: Ipv6Addr) -> Self {
        Addr::v6(a.octets())
    }
}
impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip().fmt(f)
    }
}
impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip().fmt(f)
    }
}

/// Transport protocols the dataplane translates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
#[repr(u8)]
pub enum Proto {
    /// ICMP echo (v4); the echo identifier takes the place of both ports.
    Icmp = 1,
    /// TCP.
    Tcp = 6,
    /// UDP.
    Udp = 17,
    /// ICMPv6 echo.
    Icmp6 = 58,
    /// SCTP (RFC 9260): ports like TCP/UDP, a CRC32c instead of a
    /// pseudo-header checksum.
    Sctp = 132,
}

impl Proto {
    /// Protocol from an IP protocol number, for the ones we translate.
    #[inline]
    pub fn from_ip(p: u8) -> Option<Proto> {
        match p {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            1 => Some(Proto::Icmp),
            58 => Some(Proto::Icmp6),
            132 => Some(Proto::Sctp),
            _ => None,
        }
    }
    /// Lower-case name (`tcp`, `udp`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Icmp6 => "icmpv6",
            Proto::Sctp => "sctp",
        }
    }
}

/// An address and port.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct SockAddr {
    /// The IP address.
    pub addr: Addr,
    /// The port (ICMP echo: identifier).
    pub port: u16,
}

impl SockAddr {
    /// A socket address.
    pub const fn new(addr: Addr, port: u16) -> Self {
        SockAddr { addr, port }
    }
}

impl fmt::Display for SockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.addr.is_v4() {
            write!(f, "{}:{}", self.addr, self.port)
        } else {
            write!(f, "[{}]:{}", self.addr, self.port)
        }
    }
}

/// A connection 5-tuple as seen on the wire, in one direction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FlowKey {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Protocol.
    pub proto: Proto,
}

impl FlowKey {
    /// The key of the opposite direction.
    #[inline]
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }
}

/// A fast, deterministic 64-bit mix of an endpoint, used to pick the owning
/// worker of a flow. The same function runs on every core.
#[inline]
pub fn endpoint_hash(ep: &SockAddr) -> u64 {
    let b = &ep.addr.0;
    let hi = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let lo = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
    fmix64(
        hi.rotate_left(17)
            ^ lo
            ^ ((ep.port as u64) << 48 | ep.port as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

/// A deterministic hash of a whole flow key (backend selection).
#[inline]
pub fn flow_hash(k: &FlowKey) -> u64 {
    let a = endpoint_hash(&SockAddr::new(k.src, k.sport));
    let b = endpoint_hash(&SockAddr::new(k.dst, k.dport));
    fmix64(a ^ b.rotate_left(31) ^ (k.proto as u64))
}

/// A cheap hasher for maps keyed by [`Addr`] on the packet path (the
/// neighbour cache): two multiply-rotate rounds over the 16 address bytes
/// and a finaliser. The length prefix of the array is ignored (every key
/// has the same length). Not DoS-resistant: use it only for tables whose
/// keys an outsider cannot choose freely or that are capacity-bounded.
#[derive(Clone, Copy, Default)]
pub struct AddrHasher(u64);

impl core::hash::Hasher for AddrHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.0 = (self.0 ^ u64::from_le_bytes(w))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(29);
        }
    }
    #[inline]
    fn write_usize(&mut self, _len: usize) {}
    #[inline]
    fn finish(&self) -> u64 {
        fmix64(self.0)
    }
}

/// [`AddrHasher`] as a `BuildHasher`.
pub type AddrBuildHasher = core::hash::BuildHasherDefault<AddrHasher>;

/// MurmurHash3's 64-bit finaliser.
#[inline]
pub const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The worker that owns a flow whose client endpoint is `client`.
#[inline]
pub fn owner_of(client: &SockAddr, n_workers: u16) -> u16 {
    if n_workers <= 1 {
        return 0;
    }
    // Multiply-shift reduction: uniform and branch-free.
    (((endpoint_hash(client) >> 32) * n_workers as u64) >> 32) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapping_round_trips() {
        let a = Addr::from(Ipv4Addr::new(198, 18, 0, 1));
        assert!(a.is_v4());
        assert_eq!(a.wire(), &[198, 18, 0, 1]);
        assert_eq!(a.to_string(), "198.18.0.1");
        let b = Addr::from("2001:2::1".parse::<Ipv6Addr>().unwrap());
        assert!(!b.is_v4());
        assert_eq!(b.wire().len(), 16);
    }

    #[test]
    fn prefixes() {
        let a = Addr::from(Ipv4Addr::new(198, 18, 1, 7));
        assert!(a.in_prefix(&Addr::from(Ipv4Addr::new(198, 18, 0, 0)), 15));
        assert!(a.in_prefix(&Addr::from(Ipv4Addr::new(198, 18, 1, 0)), 24));
        assert!(!a.in_prefix(&Addr::from(Ipv4Addr::new(198, 18, 2, 0)), 24));
        assert!(a.in_prefix(&Addr::from(Ipv4Addr::new(0, 0, 0, 0)), 0));
        assert!(a.in_prefix(&a, 32));
        let v6 = Addr::from("2001:2::5".parse::<Ipv6Addr>().unwrap());
        assert!(!v6.in_prefix(&Addr::from(Ipv4Addr::new(0, 0, 0, 0)), 0));
        assert!(v6.in_prefix(&Addr::from("2001:2::".parse::<Ipv6Addr>().unwrap()), 48));
    }

    #[test]
    fn owners_spread_and_agree() {
        let mut counts = [0u32; 2];
        for p in 0..10_000u16 {
            let ep = SockAddr::new(Addr::v4([198, 18, 0, 2]), 20_000 + p);
            let o = owner_of(&ep, 2);
            assert_eq!(o, owner_of(&ep, 2));
            counts[o as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 4_500), "{counts:?}");
        assert_eq!(owner_of(&SockAddr::default(), 1), 0);
    }

    #[test]
    fn protocol_numbers_round_trip() {
        for p in [
            Proto::Icmp,
            Proto::Tcp,
            Proto::Udp,
            Proto::Icmp6,
            Proto::Sctp,
        ] {
            assert_eq!(Proto::from_ip(p as u8), Some(p));
        }
        assert_eq!(Proto::from_ip(132), Some(Proto::Sctp));
        assert_eq!(Proto::Sctp.as_str(), "sctp");
        assert_eq!(Proto::from_ip(50), None);
    }
}
