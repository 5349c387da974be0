//! IPv4 header view (RFC 791).

use super::{be16, checksum, put16, Error};
use core::net::Ipv4Addr;

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_MASK: u16 = 0x1FFF;

/// A view over an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without validation.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer, validating version, IHL and total length against the buffer.
    ///
    /// The buffer may be longer than `total_len` (e.g. Ethernet padding).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Error::BadVersion);
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0F) * 4;
        if hl < HEADER_LEN || hl > b.len() {
            return Err(Error::BadHeaderLen);
        }
        let tl = usize::from(be16(b, field::TOTAL_LEN));
        if tl < hl || tl > b.len() {
            return Err(Error::BadTotalLen);
        }
        Ok(Ipv4Packet { buffer })
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (4).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0F) * 4
    }

    /// The DSCP/ECN byte (former TOS).
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total length field (header + payload).
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::TOTAL_LEN)
    }

    /// Identification field.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline]
    fn flags_frag(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG)
    }

    /// Don't Fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }

    /// More Fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_frag() & FRAG_MASK) << 3
    }

    /// True if this is a fragment (MF set or non-zero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | FRAG_MASK) != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload (see [`crate::packet::ip_proto`]).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Alias of [`Self::protocol`] matching IPv6 naming.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.protocol()
    }

    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address octets.
    #[inline]
    pub fn src_bytes(&self) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[12], b[13], b[14], b[15]]
    }

    /// Destination address octets.
    #[inline]
    pub fn dst_bytes(&self) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[16], b[17], b[18], b[19]]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_bytes())
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_bytes())
    }

    /// The header bytes (0..header_len, clamped to the buffer).
    #[inline]
    pub fn header(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..self.header_len().min(b.len())]
    }

    /// Options bytes (20..header_len).
    #[inline]
    pub fn options(&self) -> &[u8] {
        let h = self.header();
        h.get(HEADER_LEN..).unwrap_or(&[])
    }

    /// True if the header checksum is valid.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.header(), 0)) == 0xFFFF
    }

    #[inline]
    fn payload_range(&self) -> (usize, usize) {
        let len = self.buffer.as_ref().len();
        let end = usize::from(self.total_len()).min(len);
        let start = self.header_len().min(end);
        (start, end)
    }

    /// Payload bytes from header_len to total_len (excludes link-layer padding).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let (s, e) = self.payload_range();
        &self.buffer.as_ref()[s..e]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the header length in bytes (must be a multiple of 4, 20..=60).
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((len / 4) as u8 & 0x0F);
    }

    /// Sets the DSCP/ECN byte.
    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    /// Sets the total length field.
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::TOTAL_LEN, v);
    }

    /// Sets the identification field.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets DF, MF and the fragment offset (in bytes, multiple of 8).
    #[inline]
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, offset_bytes: u16) {
        let mut v = (offset_bytes >> 3) & FRAG_MASK;
        if dont_frag {
            v |= FLAG_DF;
        }
        if more_frags {
            v |= FLAG_MF;
        }
        put16(self.buffer.as_mut(), field::FLAGS_FRAG, v);
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Sets the protocol field.
    #[inline]
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    /// Sets the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    /// Recomputes the header checksum from scratch and stores it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        let c = checksum::ipv4_header(self.header());
        self.set_checksum(c);
    }

    /// Mutable payload bytes from header_len to total_len.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (s, e) = self.payload_range();
        &mut self.buffer.as_mut()[s..e]
    }
}

impl Ipv4Packet<&mut [u8]> {
    /// Writes a 20-byte header (DF set, ident 0, DSCP 0) with a valid checksum; returns 20.
    #[inline]
    pub fn emit_header(
        buf: &mut [u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        payload_len: usize,
        ttl: u8,
    ) -> Result<usize, Error> {
        let total = u16::try_from(payload_len + HEADER_LEN).map_err(|_| Error::BadTotalLen)?;
        let h = buf.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
        let mut p = Ipv4Packet::new_unchecked(h);
        p.set_header_len(HEADER_LEN);
        p.set_dscp_ecn(0);
        p.set_total_len(total);
        p.set_ident(0);
        p.set_frag(true, false, 0);
        p.set_ttl(ttl);
        p.set_protocol(protocol);
        p.set_src_addr(src);
        p.set_dst_addr(dst);
        p.fill_checksum();
        Ok(HEADER_LEN)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::golden::*;
    use crate::packet::ip_proto;
    use proptest::prelude::*;

    const ETH: usize = 14;

    #[test]
    fn tcp_syn_header_golden() {
        let ip = Ipv4Packet::new_checked(&TCP4_SYN[ETH..]).unwrap();
        assert_eq!(ip.version(), 4);
        assert_eq!(ip.header_len(), 20);
        assert_eq!(ip.dscp_ecn(), 0);
        assert_eq!(ip.total_len(), 60);
        assert_eq!(ip.ident(), 0x835f);
        assert!(ip.dont_frag());
        assert!(!ip.more_frags());
        assert_eq!(ip.frag_offset(), 0);
        assert!(!ip.is_fragment());
        assert_eq!(ip.ttl(), 64);
        assert_eq!(ip.protocol(), ip_proto::TCP);
        assert_eq!(ip.next_header(), ip_proto::TCP);
        assert_eq!(ip.checksum(), 0x3359);
        assert_eq!(ip.src_addr(), Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(ip.src_bytes(), [192, 0, 2, 2]);
        assert_eq!(ip.dst_bytes(), [192, 0, 2, 1]);
        assert!(ip.verify_checksum());
        assert!(ip.options().is_empty());
        assert_eq!(ip.payload().len(), 40);

        let eh = etherparse::Ipv4HeaderSlice::from_slice(&TCP4_SYN[ETH..])
            .unwrap()
            .to_header();
        assert_eq!(eh.calc_header_checksum(), ip.checksum());

        // Rebuild via emit_header + set_ident.
        let mut buf = [0u8; 20];
        let n = Ipv4Packet::emit_header(
            &mut buf,
            ip.src_addr(),
            ip.dst_addr(),
            ip_proto::TCP,
            40,
            64,
        )
        .unwrap();
        assert_eq!(n, 20);
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        assert!(p.verify_checksum());
        p.set_ident(0x835f);
        p.fill_checksum();
        assert_eq!(&buf[..], &TCP4_SYN[ETH..ETH + 20]);
    }

    #[test]
    fn udp_and_icmp_headers_golden() {
        let ip = Ipv4Packet::new_checked(&UDP4_DNS[ETH..]).unwrap();
        assert_eq!(
            (ip.total_len(), ip.ident(), ip.protocol()),
            (57, 0x6c6c, ip_proto::UDP)
        );
        assert_eq!(ip.checksum(), 0x4a44);
        assert!(ip.verify_checksum());

        let ip = Ipv4Packet::new_checked(&ICMP4_ECHO_REPLY[ETH..]).unwrap();
        assert!(!ip.dont_frag());
        assert_eq!(
            (ip.ident(), ip.protocol(), ip.checksum()),
            (0xfd09, ip_proto::ICMP, 0xf9b3)
        );
        assert!(ip.verify_checksum());
        // Rebuild with setters into a zeroed buffer.
        let mut buf = [0u8; 20];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_header_len(20);
        p.set_total_len(60);
        p.set_ident(0xfd09);
        p.set_frag(false, false, 0);
        p.set_ttl(64);
        p.set_protocol(ip_proto::ICMP);
        p.set_src_addr(ip.src_addr());
        p.set_dst_addr(ip.dst_addr());
        p.fill_checksum();
        assert_eq!(&buf[..], &ICMP4_ECHO_REPLY[ETH..ETH + 20]);

        let ip = Ipv4Packet::new_checked(&ICMP4_PORT_UNREACH[ETH..]).unwrap();
        assert_eq!(ip.dscp_ecn(), 0xc0);
        assert!(ip.verify_checksum());
    }

    #[test]
    fn padding_excluded_from_payload() {
        // ARP-sized minimum frame: a 40-byte IPv4/TCP packet padded to 46 bytes.
        let mut b = [0u8; 46];
        Ipv4Packet::emit_header(&mut b, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 6, 20, 64)
            .unwrap();
        let mut ip = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(ip.payload().len(), 20);
        assert_eq!(ip.payload_mut().len(), 20);
    }

    #[test]
    fn fragments_and_options() {
        let mut b = [0u8; 64];
        Ipv4Packet::emit_header(&mut b, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 17, 40, 1)
            .unwrap();
        let mut ip = Ipv4Packet::new_unchecked(&mut b[..]);
        ip.set_frag(false, true, 0);
        assert!(ip.is_fragment() && ip.more_frags() && ip.frag_offset() == 0);
        ip.set_frag(false, false, 1480);
        assert!(ip.is_fragment() && !ip.more_frags());
        assert_eq!(ip.frag_offset(), 1480);
        ip.set_frag(false, false, 65528);
        assert_eq!(ip.frag_offset(), 65528);
        // 24-byte header with a 4-byte NOP option.
        ip.set_header_len(24);
        ip.fill_checksum();
        let ip = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(ip.options(), &[0, 0, 0, 0]);
        assert!(ip.verify_checksum());
        assert_eq!(ip.payload().len(), 36);
    }

    #[test]
    fn malformed() {
        let good = &UDP4_DNS[ETH..];
        assert_eq!(
            Ipv4Packet::new_checked(&good[..19]).err(),
            Some(Error::Truncated)
        );
        let mut b = good.to_vec();
        b[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(Error::BadVersion)
        );
        b[0] = 0x44; // IHL < 5
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(Error::BadHeaderLen)
        );
        b[0] = 0x4f; // 60 bytes > 57-byte buffer
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(Error::BadHeaderLen)
        );
        b[0] = 0x45;
        b[2..4].copy_from_slice(&58u16.to_be_bytes()); // total_len > buffer
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(Error::BadTotalLen)
        );
        b[2..4].copy_from_slice(&19u16.to_be_bytes()); // total_len < header
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(Error::BadTotalLen)
        );
        b[0] = 0x46;
        b[2..4].copy_from_slice(&22u16.to_be_bytes()); // total_len < 24-byte header
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(Error::BadTotalLen)
        );
        let mut bad = b.clone();
        bad[10] ^= 1;
        assert!(!Ipv4Packet::new_unchecked(&bad[..]).verify_checksum());
        assert_eq!(
            Ipv4Packet::emit_header(
                &mut [0u8; 19],
                Ipv4Addr::LOCALHOST,
                Ipv4Addr::LOCALHOST,
                6,
                0,
                1
            ),
            Err(Error::Truncated)
        );
        assert_eq!(
            Ipv4Packet::emit_header(
                &mut [0u8; 20],
                Ipv4Addr::LOCALHOST,
                Ipv4Addr::LOCALHOST,
                6,
                65516,
                1
            ),
            Err(Error::BadTotalLen)
        );
    }

    #[test]
    fn etherparse_built_packet() {
        let builder =
            etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 96, 0, 10], 33).udp(40000, 53);
        let payload = [1u8, 2, 3, 4, 5];
        let mut v = Vec::new();
        builder.write(&mut v, &payload).unwrap();
        let ip = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.ttl(), 33);
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(ip.payload().len(), 13);
        assert!(checksum::verify_l4_v4(
            ip.src_bytes(),
            ip.dst_bytes(),
            17,
            ip.payload()
        ));
    }

    proptest! {
        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..200), fix in any::<bool>()) {
            if fix && data.len() >= 4 {
                data[0] = 0x40 | (data[0] & 0x0F);
                let l = data.len().min(usize::from(u16::MAX)) as u16;
                let tl = l - (u16::from(data[3]) % 8).min(l);
                data[2..4].copy_from_slice(&tl.to_be_bytes());
            }
            if let Ok(ip) = Ipv4Packet::new_checked(&data[..]) {
                let _ = (ip.version(), ip.header_len(), ip.dscp_ecn(), ip.total_len(), ip.ident());
                let _ = (ip.dont_frag(), ip.more_frags(), ip.frag_offset(), ip.is_fragment(), ip.ttl());
                let _ = (ip.protocol(), ip.checksum(), ip.src_addr(), ip.dst_addr(), ip.verify_checksum());
                let _ = (ip.options(), ip.header());
                prop_assert!(ip.header_len() + ip.payload().len() == usize::from(ip.total_len()));
            }
        }

        #[test]
        fn fill_checksum_matches_etherparse(hdr in any::<[u8; 20]>()) {
            let mut h = hdr;
            h[0] = 0x45;
            h[2..4].copy_from_slice(&20u16.to_be_bytes());
            h[6] &= 0x7f; // reserved flag must be 0 for etherparse
            if let Ok(eh) = etherparse::Ipv4HeaderSlice::from_slice(&h).map(|e| e.to_header()) {
                let mut p = Ipv4Packet::new_checked(&mut h[..]).unwrap();
                p.fill_checksum();
                prop_assert!(p.verify_checksum());
                prop_assert_eq!(p.checksum(), eh.calc_header_checksum());
            }
        }
    }
}
