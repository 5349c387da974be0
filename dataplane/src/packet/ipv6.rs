//! IPv6 header view (RFC 8200) and extension-header walking.

use super::{be16, be32, ip_proto, put16, put32, Error};
use core::net::Ipv6Addr;

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// Maximum number of extension headers [`Ipv6Packet::upper_layer`] will walk.
pub const MAX_EXT_HEADERS: usize = 8;

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// Fragment header information (RFC 8200 section 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fragment {
    /// Fragment offset in bytes.
    pub offset_bytes: u16,
    /// M flag: more fragments follow.
    pub more: bool,
    /// Identification.
    pub ident: u32,
}

/// Result of walking the extension-header chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpperLayer {
    /// Upper-layer protocol (e.g. TCP, UDP, ICMPv6, or 59 "no next header").
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// Fragment header, if one was present. For non-first fragments
    /// (`offset_bytes != 0`) the bytes at `offset` are not an upper-layer header.
    pub fragment: Option<Fragment>,
}

/// A view over an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline(always)]
fn addr16(b: &[u8], start: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[start..start + 16]);
    a
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without validation.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer, checking length, version and that the payload fits.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::BadVersion);
        }
        if HEADER_LEN + usize::from(be16(b, field::PAYLOAD_LEN)) > b.len() {
            return Err(Error::BadLength);
        }
        Ok(Ipv6Packet { buffer })
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (6).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class (DSCP/ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        ((be16(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4) & 0xFF) as u8
    }

    /// 20-bit flow label.
    #[inline]
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000F_FFFF
    }

    /// Payload length field (bytes after the fixed header, incl. extension headers).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// Next header field of the fixed header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address octets.
    #[inline]
    pub fn src_bytes(&self) -> [u8; 16] {
        addr16(self.buffer.as_ref(), field::SRC.start)
    }

    /// Destination address octets.
    #[inline]
    pub fn dst_bytes(&self) -> [u8; 16] {
        addr16(self.buffer.as_ref(), field::DST.start)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_bytes())
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_bytes())
    }

    #[inline]
    fn end(&self) -> usize {
        (HEADER_LEN + usize::from(self.payload_len())).min(self.buffer.as_ref().len())
    }

    /// Payload bytes (40 .. 40 + payload_len), including extension headers.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let e = self.end();
        self.buffer.as_ref().get(HEADER_LEN..e).unwrap_or(&[])
    }

    /// The packet bytes bounded by payload_len (header + payload, no padding).
    #[inline]
    pub fn packet(&self) -> &[u8] {
        let e = self.end();
        &self.buffer.as_ref()[..e]
    }

    /// Walks hop-by-hop, routing, destination-options, fragment and AH headers
    /// (at most [`MAX_EXT_HEADERS`]) to find the upper-layer protocol.
    #[inline]
    pub fn upper_layer(&self) -> Result<UpperLayer, Error> {
        let data = self.packet();
        let end = data.len();
        let mut nh = self.next_header();
        let mut off = HEADER_LEN;
        let mut fragment = None;
        let mut count = 0usize;
        loop {
            let len = match nh {
                ip_proto::HOPOPT | ip_proto::IPV6_ROUTE | ip_proto::IPV6_OPTS => {
                    if off + 2 > end {
                        return Err(Error::Truncated);
                    }
                    (usize::from(data[off + 1]) + 1) * 8
                }
                ip_proto::AH => {
                    if off + 2 > end {
                        return Err(Error::Truncated);
                    }
                    (usize::from(data[off + 1]) + 2) * 4
                }
                ip_proto::IPV6_FRAG => {
                    if off + 8 > end {
                        return Err(Error::Truncated);
                    }
                    let f = be16(data, off + 2);
                    fragment = Some(Fragment {
                        offset_bytes: f & 0xFFF8,
                        more: f & 1 != 0,
                        ident: be32(data, off + 4),
                    });
                    8
                }
                protocol => {
                    return Ok(UpperLayer {
                        protocol,
                        offset: off,
                        fragment,
                    })
                }
            };
            count += 1;
            if count > MAX_EXT_HEADERS {
                return Err(Error::TooManyExtHeaders);
            }
            if off + len > end {
                return Err(Error::Truncated);
            }
            nh = data[off];
            off += len;
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, traffic class and flow label.
    #[inline]
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000F_FFFF);
        put32(self.buffer.as_mut(), field::VER_TC_FLOW, v);
    }

    /// Sets the traffic class, keeping version and flow label.
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let b = self.buffer.as_mut();
        let w = be32(b, 0);
        put32(b, 0, (w & 0xF00F_FFFF) | (u32::from(tc) << 20));
    }

    /// Sets the flow label, keeping version and traffic class.
    #[inline]
    pub fn set_flow_label(&mut self, fl: u32) {
        let b = self.buffer.as_mut();
        let w = be32(b, 0);
        put32(b, 0, (w & 0xFFF0_0000) | (fl & 0x000F_FFFF));
    }

    /// Sets the payload length field.
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::PAYLOAD_LEN, v);
    }

    /// Sets the next header field.
    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = v;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    /// Mutable payload bytes (40 .. 40 + payload_len).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let e = self.end();
        let s = HEADER_LEN.min(e);
        &mut self.buffer.as_mut()[s..e]
    }
}

impl Ipv6Packet<&mut [u8]> {
    /// Writes a 40-byte header (traffic class 0, flow label 0); returns 40.
    #[inline]
    pub fn emit_header(
        buf: &mut [u8],
        src: Ipv6Addr,
        dst: Ipv6Addr,
        next_header: u8,
        payload_len: usize,
        hop_limit: u8,
    ) -> Result<usize, Error> {
        let pl = u16::try_from(payload_len).map_err(|_| Error::BadLength)?;
        let h = buf.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
        let mut p = Ipv6Packet::new_unchecked(h);
        p.set_version_tc_flow(0, 0);
        p.set_payload_len(pl);
        p.set_next_header(next_header);
        p.set_hop_limit(hop_limit);
        p.set_src_addr(src);
        p.set_dst_addr(dst);
        Ok(HEADER_LEN)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv6Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::golden::*;
    use proptest::prelude::*;

    const ETH: usize = 14;

    #[test]
    fn tcp_syn_golden() {
        let ip = Ipv6Packet::new_checked(&TCP6_SYN[ETH..]).unwrap();
        assert_eq!(ip.version(), 6);
        assert_eq!(ip.traffic_class(), 0);
        assert_eq!(ip.flow_label(), 0x68d7a);
        assert_eq!(ip.payload_len(), 40);
        assert_eq!(ip.next_header(), ip_proto::TCP);
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!(ip.src_addr(), Ipv6Addr::LOCALHOST);
        assert_eq!(ip.dst_addr(), Ipv6Addr::LOCALHOST);
        assert_eq!(ip.payload().len(), 40);
        assert_eq!(
            ip.upper_layer(),
            Ok(UpperLayer {
                protocol: ip_proto::TCP,
                offset: 40,
                fragment: None
            })
        );
        let mut buf = [0u8; 40];
        Ipv6Packet::emit_header(&mut buf, ip.src_addr(), ip.dst_addr(), 6, 40, 64).unwrap();
        Ipv6Packet::new_unchecked(&mut buf[..]).set_flow_label(0x68d7a);
        assert_eq!(&buf[..], &TCP6_SYN[ETH..ETH + 40]);
    }

    #[test]
    fn ns_golden() {
        let ip = Ipv6Packet::new_checked(&ICMP6_NS[ETH..]).unwrap();
        assert_eq!(ip.payload_len(), 32);
        assert_eq!(ip.next_header(), ip_proto::ICMPV6);
        assert_eq!(ip.hop_limit(), 255);
        assert_eq!(ip.src_addr(), "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            ip.dst_addr(),
            "ff02::1:ff00:77".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(ip.src_bytes(), ip.src_addr().octets());
        assert_eq!(ip.dst_bytes(), ip.dst_addr().octets());
        let mut buf = [0u8; 40];
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
        p.set_version_tc_flow(0, 0);
        p.set_payload_len(32);
        p.set_next_header(58);
        p.set_hop_limit(255);
        p.set_src_addr(ip.src_addr());
        p.set_dst_addr(ip.dst_addr());
        assert_eq!(&buf[..], &ICMP6_NS[ETH..ETH + 40]);
        let eh = etherparse::Ipv6HeaderSlice::from_slice(&ICMP6_NS[ETH..]).unwrap();
        assert_eq!(eh.payload_length(), ip.payload_len());
    }

    fn build(exts: &[(u8, Vec<u8>)], last: u8, tail: &[u8]) -> Vec<u8> {
        // exts: (type, body incl. the 2 first bytes which will be overwritten)
        let mut body = Vec::new();
        for (i, (_, e)) in exts.iter().enumerate() {
            let mut e = e.clone();
            e[0] = exts.get(i + 1).map(|x| x.0).unwrap_or(last);
            body.extend_from_slice(&e);
        }
        body.extend_from_slice(tail);
        let mut v = vec![0u8; 40];
        let first = exts.first().map(|x| x.0).unwrap_or(last);
        Ipv6Packet::emit_header(
            &mut v,
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::LOCALHOST,
            first,
            body.len(),
            64,
        )
        .unwrap();
        v.extend_from_slice(&body);
        v
    }

    #[test]
    fn ext_header_chain() {
        let hbh = vec![0u8, 0, 1, 4, 0, 0, 0, 0]; // 8 bytes, PadN
        let mut rt = vec![0u8; 24];
        rt[1] = 2; // 24 bytes
        let mut frag = vec![0u8; 8];
        frag[2..4].copy_from_slice(&(185u16 << 3 | 1).to_be_bytes());
        frag[4..8].copy_from_slice(&0xdeadbeefu32.to_be_bytes());
        let mut ah = vec![0u8; 16];
        ah[1] = 2; // (2+2)*4 = 16
        let pkt = build(
            &[(0, hbh), (43, rt), (44, frag), (51, ah), (60, vec![0u8; 8])],
            17,
            &[0u8; 8],
        );
        let ip = Ipv6Packet::new_checked(&pkt[..]).unwrap();
        let ul = ip.upper_layer().unwrap();
        assert_eq!(ul.protocol, 17);
        assert_eq!(ul.offset, 40 + 8 + 24 + 8 + 16 + 8);
        assert_eq!(
            ul.fragment,
            Some(Fragment {
                offset_bytes: 1480,
                more: true,
                ident: 0xdeadbeef
            })
        );

        // Cross-check with etherparse.
        let ep = etherparse::SlicedPacket::from_ip(&pkt).unwrap();
        let net = ep.net.unwrap();
        let etherparse::NetSlice::Ipv6(v6) = net else {
            panic!()
        };
        assert_eq!(v6.payload().ip_number.0, 17);
        assert_eq!(
            v6.payload().payload.as_ptr() as usize - pkt.as_ptr() as usize,
            ul.offset
        );

        // No next header.
        let pkt = build(&[(60, vec![0u8; 8])], 59, &[]);
        let ul = Ipv6Packet::new_checked(&pkt[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!((ul.protocol, ul.offset), (59, 48));
    }

    #[test]
    fn ext_header_malformed() {
        // 8 dest-option headers are fine, 9 are too many ("loop").
        let eight: Vec<_> = (0..8).map(|_| (60u8, vec![0u8; 8])).collect();
        let pkt = build(&eight, 6, &[0u8; 20]);
        assert_eq!(
            Ipv6Packet::new_checked(&pkt[..])
                .unwrap()
                .upper_layer()
                .unwrap()
                .offset,
            40 + 64
        );
        let nine: Vec<_> = (0..9).map(|_| (60u8, vec![0u8; 8])).collect();
        let pkt = build(&nine, 6, &[0u8; 20]);
        assert_eq!(
            Ipv6Packet::new_checked(&pkt[..]).unwrap().upper_layer(),
            Err(Error::TooManyExtHeaders)
        );
        // A self-referencing header chain filling the packet.
        let mut pkt = build(&[], 0, &[0u8; 200]);
        for i in (40..pkt.len()).step_by(8) {
            pkt[i] = 0;
        }
        assert_eq!(
            Ipv6Packet::new_checked(&pkt[..]).unwrap().upper_layer(),
            Err(Error::TooManyExtHeaders)
        );

        // Header length beyond the payload.
        let mut rt = vec![0u8; 8];
        rt[1] = 5;
        let pkt = build(&[(43, rt)], 6, &[0u8; 8]);
        assert_eq!(
            Ipv6Packet::new_checked(&pkt[..]).unwrap().upper_layer(),
            Err(Error::Truncated)
        );
        // Ext header claimed but no bytes at all.
        let pkt = build(&[], 0, &[]);
        assert_eq!(
            Ipv6Packet::new_checked(&pkt[..]).unwrap().upper_layer(),
            Err(Error::Truncated)
        );
        let pkt = build(&[], 44, &[0u8; 7]);
        assert_eq!(
            Ipv6Packet::new_checked(&pkt[..]).unwrap().upper_layer(),
            Err(Error::Truncated)
        );
        let pkt = build(&[], 51, &[0u8; 1]);
        assert_eq!(
            Ipv6Packet::new_checked(&pkt[..]).unwrap().upper_layer(),
            Err(Error::Truncated)
        );
        // Bytes beyond payload_len (padding) are not used for the walk.
        let mut pkt = build(&[], 60, &[]);
        pkt.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Ipv6Packet::new_checked(&pkt[..]).unwrap().upper_layer(),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn malformed() {
        let good = &TCP6_SYN[ETH..];
        assert_eq!(
            Ipv6Packet::new_checked(&good[..39]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Ipv6Packet::new_checked(&good[..79]).err(),
            Some(Error::BadLength)
        );
        let mut b = good.to_vec();
        b[0] = 0x46;
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).err(),
            Some(Error::BadVersion)
        );
        assert_eq!(
            Ipv6Packet::emit_header(
                &mut [0u8; 39],
                Ipv6Addr::LOCALHOST,
                Ipv6Addr::LOCALHOST,
                6,
                0,
                1
            ),
            Err(Error::Truncated)
        );
        assert_eq!(
            Ipv6Packet::emit_header(
                &mut [0u8; 40],
                Ipv6Addr::LOCALHOST,
                Ipv6Addr::LOCALHOST,
                6,
                65536,
                1
            ),
            Err(Error::BadLength)
        );
    }

    #[test]
    fn setters() {
        let mut b = TCP6_SYN[ETH..].to_vec();
        b.extend_from_slice(&[0xAA; 6]); // padding
        let mut p = Ipv6Packet::new_checked(&mut b[..]).unwrap();
        p.set_traffic_class(0xb8);
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0xb8, 0x68d7a)
        );
        p.set_flow_label(0xfffff);
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0xb8, 0xfffff)
        );
        assert_eq!(p.payload_mut().len(), 40);
        assert_eq!(p.payload().len(), 40);
    }

    proptest! {
        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..200), fix in any::<bool>()) {
            if fix && data.len() >= 40 {
                data[0] = 0x60;
                let pl = (data.len() - 40).saturating_sub(usize::from(data[5]) % 4) as u16;
                data[4..6].copy_from_slice(&pl.to_be_bytes());
                if data[7] & 1 == 0 { data[6] = [0u8, 43, 44, 51, 60][usize::from(data[7]) % 5]; }
            }
            if let Ok(ip) = Ipv6Packet::new_checked(&data[..]) {
                let _ = (ip.version(), ip.traffic_class(), ip.flow_label(), ip.payload_len());
                let _ = (ip.next_header(), ip.hop_limit(), ip.src_addr(), ip.dst_addr(), ip.packet());
                prop_assert_eq!(ip.payload().len(), usize::from(ip.payload_len()));
                if let Ok(ul) = ip.upper_layer() {
                    prop_assert!(ul.offset <= 40 + usize::from(ip.payload_len()));
                }
            }
        }
    }
}
