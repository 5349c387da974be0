//! TCP header view (RFC 9293).

use super::{be16, be32, put16, put32, Error};

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = 20;

/// TCP flag bits (byte 13).
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DOFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// Byte offset of the checksum field inside the TCP header.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM;

/// A view over a TCP segment.
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without validation.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps a buffer, checking length (>= 20) and data offset (5 <= doff, doff*4 <= len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = usize::from(b[field::DOFF] >> 4) * 4;
        if hl < HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        if hl > b.len() {
            return Err(Error::BadHeaderLen);
        }
        Ok(TcpPacket { buffer })
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DOFF] >> 4) * 4
    }

    /// Flag byte (see [`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// True if all bits of `mask` are set in the flags.
    #[inline]
    pub fn has_flags(&self, mask: u8) -> bool {
        self.flags() & mask == mask
    }

    /// Window size.
    #[inline]
    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    #[inline]
    fn hl_clamped(&self) -> usize {
        self.header_len().min(self.buffer.as_ref().len())
    }

    /// Options bytes (20..header_len).
    #[inline]
    pub fn options(&self) -> &[u8] {
        let hl = self.hl_clamped();
        self.buffer.as_ref().get(HEADER_LEN..hl).unwrap_or(&[])
    }

    /// Payload bytes after the header (the whole rest of the buffer).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let hl = self.hl_clamped();
        &self.buffer.as_ref()[hl..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::SEQ, v);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::ACK, v);
    }

    /// Sets the header length in bytes (multiple of 4, 20..=60), keeping the low nibble.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let b = self.buffer.as_mut();
        b[field::DOFF] = (((len / 4) as u8) << 4) | (b[field::DOFF] & 0x0F);
    }

    /// Sets the flag byte.
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    /// Sets the window size.
    #[inline]
    pub fn set_window(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::WINDOW, v);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::URGENT, v);
    }

    /// Mutable options bytes.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.hl_clamped();
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..hl)
            .unwrap_or(&mut [])
    }

    /// Mutable payload bytes.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.hl_clamped();
        &mut self.buffer.as_mut()[hl..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for TcpPacket<T> {
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

    fn check_syn(seg: &[u8], sport: u16, dport: u16, seq: u32, win: u16, csum: u16) {
        let t = TcpPacket::new_checked(seg).unwrap();
        assert_eq!(t.src_port(), sport);
        assert_eq!(t.dst_port(), dport);
        assert_eq!(t.seq_number(), seq);
        assert_eq!(t.ack_number(), 0);
        assert_eq!(t.header_len(), 40);
        assert_eq!(t.flags(), flags::SYN);
        assert!(t.has_flags(flags::SYN) && !t.has_flags(flags::SYN | flags::ACK));
        assert_eq!(t.window(), win);
        assert_eq!(t.checksum(), csum);
        assert_eq!(t.urgent(), 0);
        assert_eq!(t.options().len(), 20);
        assert_eq!(&t.options()[..2], &[2, 4]); // MSS
        assert!(t.payload().is_empty());

        // Rebuild with setters into a zeroed buffer.
        let mut buf = [0u8; 40];
        let mut n = TcpPacket::new_unchecked(&mut buf[..]);
        n.set_src_port(sport);
        n.set_dst_port(dport);
        n.set_seq_number(seq);
        n.set_ack_number(0);
        n.set_header_len(40);
        n.set_flags(flags::SYN);
        n.set_window(win);
        n.set_urgent(0);
        n.options_mut().copy_from_slice(t.options());
        n.set_checksum(csum);
        assert_eq!(&buf[..], seg);
    }

    #[test]
    fn ipv4_syn_golden() {
        let ip = Ipv4Packet::new_checked(&TCP4_SYN[14..]).unwrap();
        let seg = ip.payload();
        check_syn(seg, 39234, 8081, 3231455018, 65280, 0x1858);
        assert!(checksum::verify_l4_v4(
            ip.src_bytes(),
            ip.dst_bytes(),
            6,
            seg
        ));
        let mut z = seg.to_vec();
        z[16] = 0;
        z[17] = 0;
        assert_eq!(
            checksum::l4_v4(ip.src_bytes(), ip.dst_bytes(), 6, &z),
            0x1858
        );
        let (eh, payload) = etherparse::TcpHeader::from_slice(seg).unwrap();
        assert_eq!(
            eh.calc_checksum_ipv4_raw(ip.src_bytes(), ip.dst_bytes(), payload)
                .unwrap(),
            0x1858
        );
    }

    #[test]
    fn ipv6_syn_golden() {
        let ip = Ipv6Packet::new_checked(&TCP6_SYN[14..]).unwrap();
        let seg = ip.payload();
        check_syn(seg, 53574, 8081, 2255435761, 65476, 0x5050);
        assert!(checksum::verify_l4_v6(
            &ip.src_bytes(),
            &ip.dst_bytes(),
            6,
            seg
        ));
        let (eh, payload) = etherparse::TcpHeader::from_slice(seg).unwrap();
        assert_eq!(
            eh.calc_checksum_ipv6_raw(ip.src_bytes(), ip.dst_bytes(), payload)
                .unwrap(),
            0x5050
        );
    }

    #[test]
    fn dnat_port_and_addr_incremental() {
        // Rewrite dst 192.0.2.1:8081 -> 198.18.1.7:80 incrementally; result must verify.
        let mut frame = TCP4_SYN;
        let mut ip = Ipv4Packet::new_checked(&mut frame[14..]).unwrap();
        let old_dst = ip.dst_bytes();
        let new_dst = [198, 18, 1, 7];
        ip.set_dst_addr(new_dst.into());
        let c = checksum::adjust(ip.checksum(), &old_dst, &new_dst);
        ip.set_checksum(c);
        assert!(ip.verify_checksum());
        let mut t = TcpPacket::new_checked(ip.payload_mut()).unwrap();
        let mut c = checksum::adjust(t.checksum(), &old_dst, &new_dst);
        c = checksum::adjust16(c, t.dst_port(), 80);
        t.set_dst_port(80);
        t.set_checksum(c);
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert!(checksum::verify_l4_v4(
            ip.src_bytes(),
            ip.dst_bytes(),
            6,
            ip.payload()
        ));
    }

    #[test]
    fn malformed() {
        let seg = &TCP4_SYN[34..];
        assert_eq!(
            TcpPacket::new_checked(&seg[..19]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            TcpPacket::new_checked(&seg[..39]).err(),
            Some(Error::BadHeaderLen)
        );
        let mut b = seg.to_vec();
        b[12] = 0x40; // doff 4
        assert_eq!(
            TcpPacket::new_checked(&b[..]).err(),
            Some(Error::BadHeaderLen)
        );
        b[12] = 0x00;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).err(),
            Some(Error::BadHeaderLen)
        );
        b[12] = 0xf0; // 60 > 40
        assert_eq!(
            TcpPacket::new_checked(&b[..]).err(),
            Some(Error::BadHeaderLen)
        );
    }

    #[test]
    fn etherparse_built() {
        let builder = etherparse::PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .tcp(1234, 443, 77, 1000)
            .syn()
            .ack(99);
        let mut v = Vec::new();
        builder.write(&mut v, b"hello").unwrap();
        let ip = Ipv6Packet::new_checked(&v[..]).unwrap();
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (t.src_port(), t.dst_port(), t.seq_number(), t.ack_number()),
            (1234, 443, 77, 99)
        );
        assert_eq!(t.flags(), flags::SYN | flags::ACK);
        assert_eq!(t.window(), 1000);
        assert_eq!(t.payload(), b"hello");
        assert!(checksum::verify_l4_v6(
            &ip.src_bytes(),
            &ip.dst_bytes(),
            6,
            ip.payload()
        ));
    }

    proptest! {
        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..200), fix in any::<bool>()) {
            if fix && data.len() >= 20 {
                data[12] = ((5 + (data.len() - 20) / 4 % 11) as u8) << 4;
            }
            if let Ok(t) = TcpPacket::new_checked(&data[..]) {
                let _ = (t.src_port(), t.dst_port(), t.seq_number(), t.ack_number(), t.flags());
                let _ = (t.window(), t.checksum(), t.urgent(), t.options());
                prop_assert_eq!(t.header_len() + t.payload().len(), data.len());
            }
        }

        #[test]
        fn checksum_matches_etherparse(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            src6 in any::<[u8; 16]>(), dst6 in any::<[u8; 16]>(),
            hdr in any::<[u8; 20]>(), payload in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut seg = hdr.to_vec();
            seg[12] = 0x50;
            seg[16] = 0; seg[17] = 0;
            seg.extend_from_slice(&payload);
            let (eh, p) = etherparse::TcpHeader::from_slice(&seg).unwrap();
            prop_assert_eq!(checksum::l4_v4(src, dst, 6, &seg), eh.calc_checksum_ipv4_raw(src, dst, p).unwrap());
            prop_assert_eq!(checksum::l4_v6(&src6, &dst6, 6, &seg), eh.calc_checksum_ipv6_raw(src6, dst6, p).unwrap());
        }
    }
}
