//! ICMPv4 (RFC 792) / ICMPv6 (RFC 4443) view and NDP helpers (RFC 4861).

use super::ethernet::MacAddr;
use super::{be16, be32, checksum, ip_proto, put16, put32, Error};
use core::net::Ipv6Addr;

/// Length of the common ICMP header (type, code, checksum, rest-of-header).
pub const HEADER_LEN: usize = 8;

/// ICMPv4 types and codes.
pub mod v4 {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;

    /// Dest-unreachable code: network unreachable.
    pub const NET_UNREACHABLE: u8 = 0;
    /// Dest-unreachable code: host unreachable.
    pub const HOST_UNREACHABLE: u8 = 1;
    /// Dest-unreachable code: protocol unreachable.
    pub const PROTO_UNREACHABLE: u8 = 2;
    /// Dest-unreachable code: port unreachable.
    pub const PORT_UNREACHABLE: u8 = 3;
    /// Dest-unreachable code: fragmentation needed and DF set.
    pub const FRAG_NEEDED: u8 = 4;
    /// Dest-unreachable code: communication administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 13;
    /// Time-exceeded code: TTL exceeded in transit.
    pub const TTL_EXCEEDED: u8 = 0;

    /// True for error messages that quote the offending packet.
    #[inline]
    pub const fn is_error(msg_type: u8) -> bool {
        matches!(msg_type, 3 | 4 | 5 | 11 | 12)
    }
}

/// ICMPv6 types and codes.
pub mod v6 {
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// NDP router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// NDP router advertisement.
    pub const ROUTER_ADVERT: u8 = 134;
    /// NDP neighbor solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// NDP neighbor advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// NDP redirect.
    pub const REDIRECT: u8 = 137;

    /// Dest-unreachable code: no route to destination.
    pub const NO_ROUTE: u8 = 0;
    /// Dest-unreachable code: administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 1;
    /// Dest-unreachable code: address unreachable.
    pub const ADDR_UNREACHABLE: u8 = 3;
    /// Dest-unreachable code: port unreachable.
    pub const PORT_UNREACHABLE: u8 = 4;
    /// Time-exceeded code: hop limit exceeded in transit.
    pub const HOP_LIMIT_EXCEEDED: u8 = 0;

    /// True for error messages (types < 128) that quote the offending packet.
    #[inline]
    pub const fn is_error(msg_type: u8) -> bool {
        msg_type < 128
    }
}

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
    pub const REST: usize = 4;
}

/// A view over an ICMPv4 or ICMPv6 message (the first 8 bytes are common).
#[derive(Debug, Clone)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wraps a buffer without validation.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// Wraps a buffer, checking it holds at least 8 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(IcmpPacket { buffer })
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier (bytes 4..6).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Echo sequence number (bytes 6..8).
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SEQ)
    }

    /// Bytes 4..8 as a u32 (e.g. MTU for frag-needed / packet-too-big).
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        be32(self.buffer.as_ref(), field::REST)
    }

    /// Bytes after the 8-byte header (echo data, or the quoted packet of errors).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// True if the ICMPv4 checksum over the whole buffer is valid.
    #[inline]
    pub fn verify_checksum_v4(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref(), 0)) == 0xFFFF
    }

    /// True if the ICMPv6 checksum (with pseudo-header) over the whole buffer is valid.
    #[inline]
    pub fn verify_checksum_v6(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        checksum::verify_l4_v6(src, dst, ip_proto::ICMPV6, self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Sets the message code.
    #[inline]
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SEQ, v);
    }

    /// Sets bytes 4..8.
    #[inline]
    pub fn set_rest_of_header(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::REST, v);
    }

    /// Mutable bytes after the 8-byte header.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Computes and stores the ICMPv4 checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum_v4(&mut self) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::sum(self.buffer.as_ref(), 0));
        self.set_checksum(c);
    }

    /// Computes and stores the ICMPv6 checksum (with pseudo-header) over the whole buffer.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        self.set_checksum(0);
        let c = checksum::l4_v6(src, dst, ip_proto::ICMPV6, self.buffer.as_ref());
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for IcmpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

// ---------------------------------------------------------------------------
// NDP (RFC 4861). All functions take the ICMPv6 message (starting at its type
// byte), not the IPv6 packet.

/// NDP option type: source link-layer address.
pub const NDP_OPT_SOURCE_LLA: u8 = 1;
/// NDP option type: target link-layer address.
pub const NDP_OPT_TARGET_LLA: u8 = 2;
/// Neighbor advertisement flag: sender is a router.
pub const NA_FLAG_ROUTER: u8 = 0x80;
/// Neighbor advertisement flag: sent in response to a solicitation.
pub const NA_FLAG_SOLICITED: u8 = 0x40;
/// Neighbor advertisement flag: override existing cache entry.
pub const NA_FLAG_OVERRIDE: u8 = 0x20;
/// Length of an NS/NA message with one link-layer address option.
pub const NDP_NS_NA_LEN: usize = 32;

/// Offset of the options in an NDP message of type `t`, or None if not NDP.
#[inline]
const fn ndp_options_offset(t: u8) -> Option<usize> {
    match t {
        v6::ROUTER_SOLICIT => Some(8),
        v6::ROUTER_ADVERT => Some(16),
        v6::NEIGHBOR_SOLICIT | v6::NEIGHBOR_ADVERT => Some(24),
        v6::REDIRECT => Some(40),
        _ => None,
    }
}

/// Target address (bytes 8..24) of a Neighbor Solicitation/Advertisement with code 0.
#[inline]
pub fn ndp_target(icmp: &[u8]) -> Option<Ipv6Addr> {
    if icmp.len() < 24
        || !matches!(icmp[0], v6::NEIGHBOR_SOLICIT | v6::NEIGHBOR_ADVERT)
        || icmp[1] != 0
    {
        return None;
    }
    let mut a = [0u8; 16];
    a.copy_from_slice(&icmp[8..24]);
    Some(Ipv6Addr::from(a))
}

/// Flags byte (R/S/O in bits 0x80/0x40/0x20) of a Neighbor Advertisement.
#[inline]
pub fn ndp_na_flags(icmp: &[u8]) -> Option<u8> {
    if icmp.len() < 24 || icmp[0] != v6::NEIGHBOR_ADVERT {
        return None;
    }
    Some(icmp[4] & 0xE0)
}

/// Finds the link-layer address option `opt_type` (1 = source, 2 = target) of
/// an NDP message (RS/RA/NS/NA/redirect). Returns None if absent, or if any
/// option has length 0 or overruns the message (RFC 4861: discard).
#[inline]
pub fn ndp_lladdr_option(icmp: &[u8], opt_type: u8) -> Option<MacAddr> {
    let mut off = ndp_options_offset(*icmp.first()?)?;
    let mut found = None;
    while off < icmp.len() {
        if off + 2 > icmp.len() {
            return None;
        }
        let len = usize::from(icmp[off + 1]) * 8;
        if len == 0 || off + len > icmp.len() {
            return None;
        }
        if found.is_none() && icmp[off] == opt_type && len >= 8 {
            let o = &icmp[off + 2..off + 8];
            found = Some(MacAddr([o[0], o[1], o[2], o[3], o[4], o[5]]));
        }
        off += len;
    }
    found
}

/// Writes a 32-byte Neighbor Advertisement (target + target-LLA option) into
/// `buf` and returns 32, or 0 if `buf` is too short. Router flag is clear.
///
/// The checksum field is left 0: the caller must fill it (e.g.
/// [`IcmpPacket::fill_checksum_v6`]) once the IPv6 addresses are known.
pub fn emit_neighbor_advert(
    buf: &mut [u8],
    target: Ipv6Addr,
    mac: MacAddr,
    solicited: bool,
    override_flag: bool,
) -> usize {
    let mut flags = 0u8;
    if solicited {
        flags |= NA_FLAG_SOLICITED;
    }
    if override_flag {
        flags |= NA_FLAG_OVERRIDE;
    }
    emit_ns_na(
        buf,
        v6::NEIGHBOR_ADVERT,
        flags,
        target,
        NDP_OPT_TARGET_LLA,
        mac,
    )
}

/// Writes a 32-byte Neighbor Solicitation (target + source-LLA option) into
/// `buf` and returns 32, or 0 if `buf` is too short.
///
/// The checksum field is left 0: the caller must fill it (e.g.
/// [`IcmpPacket::fill_checksum_v6`]). Send to [`solicited_node_multicast`].
pub fn emit_neighbor_solicit(buf: &mut [u8], target: Ipv6Addr, src_mac: MacAddr) -> usize {
    emit_ns_na(
        buf,
        v6::NEIGHBOR_SOLICIT,
        0,
        target,
        NDP_OPT_SOURCE_LLA,
        src_mac,
    )
}

#[inline]
fn emit_ns_na(buf: &mut [u8], t: u8, flags: u8, target: Ipv6Addr, opt: u8, mac: MacAddr) -> usize {
    let Some(b) = buf.get_mut(..NDP_NS_NA_LEN) else {
        return 0;
    };
    b[0] = t;
    b[1] = 0;
    b[2..4].fill(0);
    b[4] = flags;
    b[5..8].fill(0);
    b[8..24].copy_from_slice(&target.octets());
    b[24] = opt;
    b[25] = 1;
    b[26..32].copy_from_slice(&mac.0);
    NDP_NS_NA_LEN
}

/// The solicited-node multicast address ff02::1:ffXX:XXXX for `addr`.
#[inline]
pub fn solicited_node_multicast(addr: &Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ethernet::EthernetFrame;
    use crate::packet::golden::*;
    use crate::packet::{Ipv4Packet, Ipv6Packet};
    use proptest::prelude::*;

    #[test]
    fn echo_golden() {
        let ip = Ipv4Packet::new_checked(&ICMP4_ECHO_REQ[14..]).unwrap();
        let icmp = IcmpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), v4::ECHO_REQUEST);
        assert_eq!(icmp.code(), 0);
        assert_eq!(icmp.checksum(), 0xf3c8);
        assert_eq!(icmp.echo_ident(), 0x1234);
        assert_eq!(icmp.echo_seq(), 1);
        assert_eq!(icmp.rest_of_header(), 0x1234_0001);
        assert_eq!(icmp.payload().len(), 32);
        assert_eq!(icmp.payload()[0], 0x10);
        assert!(icmp.verify_checksum_v4());
        let es = etherparse::Icmpv4Slice::from_slice(ip.payload()).unwrap();
        assert_eq!(es.icmp_type().calc_checksum(es.payload()), 0xf3c8);

        // Rebuild the request into a zeroed buffer.
        let mut buf = [0u8; 40];
        let mut p = IcmpPacket::new_unchecked(&mut buf[..]);
        p.set_msg_type(v4::ECHO_REQUEST);
        p.set_code(0);
        p.set_echo_ident(0x1234);
        p.set_echo_seq(1);
        p.payload_mut().copy_from_slice(icmp.payload());
        p.fill_checksum_v4();
        assert_eq!(&buf[..], ip.payload());

        // Turn it into the captured reply: type change + incremental checksum.
        let mut req = ICMP4_ECHO_REQ;
        let mut p = IcmpPacket::new_checked(&mut req[34..]).unwrap();
        let c = checksum::adjust16(
            p.checksum(),
            u16::from(v4::ECHO_REQUEST) << 8,
            u16::from(v4::ECHO_REPLY) << 8,
        );
        p.set_msg_type(v4::ECHO_REPLY);
        p.set_checksum(c);
        assert_eq!(&req[34..], &ICMP4_ECHO_REPLY[34..]);
    }

    #[test]
    fn port_unreachable_golden() {
        let ip = Ipv4Packet::new_checked(&ICMP4_PORT_UNREACH[14..]).unwrap();
        let icmp = IcmpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (icmp.msg_type(), icmp.code()),
            (v4::DEST_UNREACHABLE, v4::PORT_UNREACHABLE)
        );
        assert!(v4::is_error(icmp.msg_type()) && !v4::is_error(v4::ECHO_REQUEST));
        assert_eq!(icmp.rest_of_header(), 0);
        assert!(icmp.verify_checksum_v4());
        let inner = Ipv4Packet::new_checked(icmp.payload()).unwrap();
        assert_eq!(inner.protocol(), 17);
        assert!(inner.verify_checksum());
    }

    #[test]
    fn ns_golden() {
        let eth = EthernetFrame::new_checked(&ICMP6_NS[..]).unwrap();
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        let body = ip.payload();
        let icmp = IcmpPacket::new_checked(body).unwrap();
        assert_eq!(icmp.msg_type(), v6::NEIGHBOR_SOLICIT);
        assert_eq!(icmp.code(), 0);
        assert_eq!(icmp.checksum(), 0x7bb0);
        assert_eq!(icmp.rest_of_header(), 0);
        assert!(icmp.verify_checksum_v6(&ip.src_bytes(), &ip.dst_bytes()));
        let es = etherparse::Icmpv6Slice::from_slice(body).unwrap();
        assert!(es.is_checksum_valid(ip.src_bytes(), ip.dst_bytes()));

        let target: Ipv6Addr = "fd00::77".parse().unwrap();
        assert_eq!(ndp_target(body), Some(target));
        assert_eq!(
            ndp_lladdr_option(body, NDP_OPT_SOURCE_LLA),
            Some(MacAddr([2, 0xfc, 0, 0, 0, 1]))
        );
        assert_eq!(ndp_lladdr_option(body, NDP_OPT_TARGET_LLA), None);
        assert_eq!(ndp_na_flags(body), None);
        assert_eq!(solicited_node_multicast(&target), ip.dst_addr());
        assert_eq!(MacAddr::from_ipv6_multicast(&ip.dst_addr()), eth.dst_addr());

        // Rebuild the whole frame byte-exact.
        let mut buf = [0u8; 86];
        let mut n = EthernetFrame::emit(&mut buf, eth.dst_addr(), eth.src_addr(), 0x86dd).unwrap();
        n += Ipv6Packet::emit_header(&mut buf[n..], ip.src_addr(), ip.dst_addr(), 58, 32, 255)
            .unwrap();
        assert_eq!(
            emit_neighbor_solicit(&mut buf[n..], target, eth.src_addr()),
            32
        );
        IcmpPacket::new_unchecked(&mut buf[n..]).fill_checksum_v6(&ip.src_bytes(), &ip.dst_bytes());
        assert_eq!(buf, ICMP6_NS);
    }

    #[test]
    fn neighbor_advert() {
        let target: Ipv6Addr = "fd00::2".parse().unwrap();
        let mac = MacAddr([2, 0xfc, 0, 0, 0, 1]);
        let (src, dst) = (
            target.octets(),
            "fd00::77".parse::<Ipv6Addr>().unwrap().octets(),
        );
        let mut buf = [0u8; 40];
        assert_eq!(emit_neighbor_advert(&mut buf, target, mac, true, true), 32);
        let body = &mut buf[..32];
        IcmpPacket::new_unchecked(&mut *body).fill_checksum_v6(&src, &dst);
        let expected: [u8; 32] = [
            136, 0, 0, 0, 0x60, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 1,
            2, 0xfc, 0, 0, 0, 1,
        ];
        assert_eq!(&body[4..], &expected[4..]);
        assert_eq!(&body[..2], &expected[..2]);
        let es = etherparse::Icmpv6Slice::from_slice(body).unwrap();
        assert!(es.is_checksum_valid(src, dst));
        assert_eq!(ndp_target(body), Some(target));
        assert_eq!(
            ndp_na_flags(body),
            Some(NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE)
        );
        assert_eq!(ndp_lladdr_option(body, NDP_OPT_TARGET_LLA), Some(mac));
        assert_eq!(ndp_lladdr_option(body, NDP_OPT_SOURCE_LLA), None);

        emit_neighbor_advert(&mut buf, target, mac, false, false);
        assert_eq!(ndp_na_flags(&buf[..32]), Some(0));
        emit_neighbor_advert(&mut buf, target, mac, true, false);
        assert_eq!(buf[4], NA_FLAG_SOLICITED);
        assert_eq!(
            emit_neighbor_advert(&mut buf[..31], target, mac, true, false),
            0
        );
        assert_eq!(emit_neighbor_solicit(&mut buf[..31], target, mac), 0);
    }

    #[test]
    fn ndp_malformed() {
        let body = &ICMP6_NS[54..];
        // Option with length 0: reject.
        let mut b = body.to_vec();
        b[25] = 0;
        assert_eq!(ndp_lladdr_option(&b, 1), None);
        // Option overrunning the message.
        b[25] = 2;
        assert_eq!(ndp_lladdr_option(&b, 1), None);
        // Truncated option header / message.
        assert_eq!(ndp_lladdr_option(&body[..25], 1), None);
        assert_eq!(ndp_lladdr_option(&body[..30], 1), None);
        assert_eq!(ndp_lladdr_option(&[], 1), None);
        assert_eq!(ndp_target(&body[..23]), None);
        // Second option valid after a first unknown option; bad trailing option rejects all.
        let mut b = body.to_vec();
        b.extend_from_slice(&[14, 1, 0, 0, 0, 0, 0, 0]);
        assert!(ndp_lladdr_option(&b, 1).is_some());
        b.extend_from_slice(&[14, 0]);
        assert_eq!(ndp_lladdr_option(&b, 1), None);
        // Not NS/NA, or non-zero code.
        let mut b = body.to_vec();
        b[1] = 1;
        assert_eq!(ndp_target(&b), None);
        b[0] = v6::ECHO_REQUEST;
        b[1] = 0;
        assert_eq!(ndp_target(&b), None);
        assert_eq!(ndp_lladdr_option(&b, 1), None);
        assert_eq!(
            IcmpPacket::new_checked(&body[..7]).err(),
            Some(Error::Truncated)
        );
    }

    proptest! {
        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..200), t in 133u8..138, opt in 0u8..3) {
            if let Ok(p) = IcmpPacket::new_checked(&data[..]) {
                let _ = (p.msg_type(), p.code(), p.checksum(), p.echo_ident(), p.echo_seq());
                let _ = (p.rest_of_header(), p.payload(), p.verify_checksum_v4(), p.verify_checksum_v6(&[0; 16], &[1; 16]));
            }
            let _ = (ndp_target(&data), ndp_lladdr_option(&data, opt), ndp_na_flags(&data));
            if !data.is_empty() {
                data[0] = t;
                if data.len() > 1 { data[1] = 0; }
                let _ = (ndp_target(&data), ndp_lladdr_option(&data, opt), ndp_na_flags(&data));
            }
        }
    }
}
