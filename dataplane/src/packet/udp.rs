//! UDP header view (RFC 768).

use super::{be16, put16, Error};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// Byte offset of the checksum field inside the UDP header.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM;

/// A view over a UDP datagram.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without validation.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a buffer, checking length (>= 8) and 8 <= length field <= buffer length.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let l = usize::from(be16(b, field::LENGTH));
        if l < HEADER_LEN || l > b.len() {
            return Err(Error::BadLength);
        }
        Ok(UdpPacket { buffer })
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field (header + payload).
    #[inline]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// True if the length field says there is no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum field (0 = none for IPv4).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    fn payload_range(&self) -> (usize, usize) {
        let e = usize::from(self.len()).min(self.buffer.as_ref().len());
        (HEADER_LEN.min(e), e)
    }

    /// Datagram bytes bounded by the length field (header + payload).
    #[inline]
    pub fn datagram(&self) -> &[u8] {
        let (_, e) = self.payload_range();
        &self.buffer.as_ref()[..e]
    }

    /// Payload bytes (8..length).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let (s, e) = self.payload_range();
        &self.buffer.as_ref()[s..e]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Mutable payload bytes (8..length).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (s, e) = self.payload_range();
        &mut self.buffer.as_mut()[s..e]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::checksum;
    use crate::packet::golden::*;
    use crate::packet::{Ipv4Packet, Ipv6Packet};
    use proptest::prelude::*;

    #[test]
    fn dns_golden() {
        let ip = Ipv4Packet::new_checked(&UDP4_DNS[14..]).unwrap();
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(u.src_port(), 58909);
        assert_eq!(u.dst_port(), 53);
        assert_eq!(u.len(), 37);
        assert!(!u.is_empty());
        assert_eq!(u.checksum(), 0xabb4);
        assert_eq!(u.payload().len(), 29);
        assert_eq!(&u.payload()[..2], &[0x1a, 0x2b]); // DNS id
        assert_eq!(&u.payload()[13..20], b"example");
        assert!(checksum::verify_l4_v4(
            ip.src_bytes(),
            ip.dst_bytes(),
            17,
            u.datagram()
        ));

        let (eh, p) = etherparse::UdpHeader::from_slice(ip.payload()).unwrap();
        assert_eq!(
            eh.calc_checksum_ipv4_raw(ip.src_bytes(), ip.dst_bytes(), p)
                .unwrap(),
            0xabb4
        );

        // Rebuild: header via setters, then the checksum from scratch.
        let mut buf = [0u8; 37];
        buf[8..].copy_from_slice(u.payload());
        let mut n = UdpPacket::new_unchecked(&mut buf[..]);
        n.set_src_port(58909);
        n.set_dst_port(53);
        n.set_len(37);
        n.set_checksum(0);
        let c = checksum::udp_final(checksum::l4_v4(ip.src_bytes(), ip.dst_bytes(), 17, &buf));
        UdpPacket::new_unchecked(&mut buf[..]).set_checksum(c);
        assert_eq!(&buf[..], ip.payload());
    }

    #[test]
    fn payload_bounded_by_len() {
        let mut b = [0u8; 20];
        let mut u = UdpPacket::new_unchecked(&mut b[..]);
        u.set_len(10);
        let mut u = UdpPacket::new_checked(&mut b[..]).unwrap();
        assert_eq!(u.payload().len(), 2);
        assert_eq!(u.payload_mut().len(), 2);
        assert_eq!(u.datagram().len(), 10);
    }

    #[test]
    fn malformed() {
        let d = &UDP4_DNS[34..];
        assert_eq!(
            UdpPacket::new_checked(&d[..7]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            UdpPacket::new_checked(&d[..36]).err(),
            Some(Error::BadLength)
        );
        let mut b = d.to_vec();
        b[4] = 0;
        b[5] = 7;
        assert_eq!(UdpPacket::new_checked(&b[..]).err(), Some(Error::BadLength));
        b[5] = 8;
        assert!(UdpPacket::new_checked(&b[..]).unwrap().payload().is_empty());
    }

    #[test]
    fn ipv6_etherparse_built_and_nat() {
        let builder = etherparse::PacketBuilder::ipv6([0xfd; 16], [0x20; 16], 5).udp(5353, 53);
        let mut v = Vec::new();
        builder.write(&mut v, &[9u8; 31]).unwrap();
        let mut ip = Ipv6Packet::new_checked(&mut v[..]).unwrap();
        let (src, dst) = (ip.src_bytes(), ip.dst_bytes());
        assert!(checksum::verify_l4_v6(&src, &dst, 17, ip.payload()));
        // DNAT the destination address + port incrementally.
        let new_dst = [0x10u8; 16];
        ip.set_dst_addr(new_dst.into());
        let mut u = UdpPacket::new_checked(ip.payload_mut()).unwrap();
        let c = checksum::adjust_udp(u.checksum(), &dst, &new_dst);
        let c = checksum::adjust_udp16(c, u.dst_port(), 8053);
        u.set_dst_port(8053);
        u.set_checksum(c);
        let ip = Ipv6Packet::new_checked(&v[..]).unwrap();
        assert!(checksum::verify_l4_v6(&src, &new_dst, 17, ip.payload()));
        let (eh, p) = etherparse::UdpHeader::from_slice(ip.payload()).unwrap();
        assert_eq!(
            eh.calc_checksum_ipv6_raw(src, new_dst, p).unwrap(),
            eh.checksum
        );
    }

    proptest! {
        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..200), fix in any::<bool>()) {
            if fix && data.len() >= 8 {
                let l = (data.len() - usize::from(data[0]) % 4).max(8) as u16;
                data[4..6].copy_from_slice(&l.to_be_bytes());
            }
            if let Ok(u) = UdpPacket::new_checked(&data[..]) {
                let _ = (u.src_port(), u.dst_port(), u.checksum(), u.is_empty(), u.datagram());
                prop_assert_eq!(u.payload().len() + 8, usize::from(u.len()));
            }
        }

        #[test]
        fn checksum_matches_etherparse(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            src6 in any::<[u8; 16]>(), dst6 in any::<[u8; 16]>(),
            ports in any::<(u16, u16)>(), payload in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut seg = vec![0u8; 8];
            let mut u = UdpPacket::new_unchecked(&mut seg[..]);
            u.set_src_port(ports.0);
            u.set_dst_port(ports.1);
            u.set_len((8 + payload.len()) as u16);
            seg.extend_from_slice(&payload);
            let (eh, p) = etherparse::UdpHeader::from_slice(&seg).unwrap();
            prop_assert_eq!(
                checksum::udp_final(checksum::l4_v4(src, dst, 17, &seg)),
                eh.calc_checksum_ipv4_raw(src, dst, p).unwrap()
            );
            prop_assert_eq!(
                checksum::udp_final(checksum::l4_v6(&src6, &dst6, 17, &seg)),
                eh.calc_checksum_ipv6_raw(src6, dst6, p).unwrap()
            );
        }
    }
}
