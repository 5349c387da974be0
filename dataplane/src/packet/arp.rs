//! ARP for Ethernet/IPv4 (RFC 826).

use super::ethernet::{ethertype, MacAddr};
use super::{be16, put16, Error};
use core::net::Ipv4Addr;

/// Length of an Ethernet/IPv4 ARP body.
pub const PACKET_LEN: usize = 28;
/// Hardware type for Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;

/// ARP operation codes.
pub mod operation {
    /// ARP request.
    pub const REQUEST: u16 = 1;
    /// ARP reply.
    pub const REPLY: u16 = 2;
}

mod field {
    use core::ops::Range;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// A view over an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline(always)]
fn mac_at(b: &[u8], r: core::ops::Range<usize>) -> MacAddr {
    let s = r.start;
    MacAddr([b[s], b[s + 1], b[s + 2], b[s + 3], b[s + 4], b[s + 5]])
}

#[inline(always)]
fn ip_at(b: &[u8], r: core::ops::Range<usize>) -> [u8; 4] {
    let s = r.start;
    [b[s], b[s + 1], b[s + 2], b[s + 3]]
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without validation.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps a buffer, checking length (>= 28) and the Ethernet/IPv4 format.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if be16(b, field::HTYPE) != HTYPE_ETHERNET
            || be16(b, field::PTYPE) != ethertype::IPV4
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Error::Unsupported);
        }
        Ok(ArpPacket { buffer })
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type (1 = Ethernet).
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        be16(self.buffer.as_ref(), field::HTYPE)
    }

    /// Protocol type (0x0800 = IPv4).
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PTYPE)
    }

    /// Operation (see [`operation`]).
    #[inline]
    pub fn operation(&self) -> u16 {
        be16(self.buffer.as_ref(), field::OPER)
    }

    /// Sender hardware address.
    #[inline]
    pub fn sender_hw_addr(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::SHA)
    }

    /// Sender protocol address.
    #[inline]
    pub fn sender_proto_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(ip_at(self.buffer.as_ref(), field::SPA))
    }

    /// Target hardware address.
    #[inline]
    pub fn target_hw_addr(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::THA)
    }

    /// Target protocol address.
    #[inline]
    pub fn target_proto_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(ip_at(self.buffer.as_ref(), field::TPA))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, op: u16) {
        put16(self.buffer.as_mut(), field::OPER, op);
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_sender_hw_addr(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&m.0);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_sender_proto_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&a.octets());
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_target_hw_addr(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&m.0);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_target_proto_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&a.octets());
    }
}

impl ArpPacket<&mut [u8]> {
    /// Writes a complete 28-byte Ethernet/IPv4 ARP body into `buf`; returns 28.
    #[inline]
    pub fn emit(
        buf: &mut [u8],
        op: u16,
        sender_mac: MacAddr,
        sender_ip: Ipv4Addr,
        target_mac: MacAddr,
        target_ip: Ipv4Addr,
    ) -> Result<usize, Error> {
        let b = buf.get_mut(..PACKET_LEN).ok_or(Error::Truncated)?;
        put16(b, field::HTYPE, HTYPE_ETHERNET);
        put16(b, field::PTYPE, ethertype::IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        let mut p = ArpPacket::new_unchecked(b);
        p.set_operation(op);
        p.set_sender_hw_addr(sender_mac);
        p.set_sender_proto_addr(sender_ip);
        p.set_target_hw_addr(target_mac);
        p.set_target_proto_addr(target_ip);
        Ok(PACKET_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ethernet::{EthernetFrame, HEADER_LEN};
    use proptest::prelude::*;

    /// Captured: who-has 192.0.2.77 tell 192.0.2.2 (Ethernet frame, 42 bytes).
    const ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0xfc, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0xfc, 0x00, 0x00, 0x00, 0x01, 0xc0, 0x00,
        0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x02, 0x4d,
    ];
    /// Captured: 192.0.2.2 is-at 02:fc:00:00:00:01 (reply to 192.0.2.1).
    const ARP_REPLY: [u8; 42] = [
        0x02, 0xfc, 0x00, 0x00, 0x00, 0x05, 0x02, 0xfc, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0xfc, 0x00, 0x00, 0x00, 0x01, 0xc0, 0x00,
        0x02, 0x02, 0x02, 0xfc, 0x00, 0x00, 0x00, 0x05, 0xc0, 0x00, 0x02, 0x01,
    ];

    #[test]
    fn request_golden() {
        let eth = EthernetFrame::new_checked(&ARP_REQUEST[..]).unwrap();
        assert_eq!(eth.ethertype(), ethertype::ARP);
        assert!(eth.dst_addr().is_broadcast());
        let arp = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(arp.hardware_type(), 1);
        assert_eq!(arp.protocol_type(), 0x0800);
        assert_eq!(arp.operation(), operation::REQUEST);
        assert_eq!(arp.sender_hw_addr(), MacAddr([2, 0xfc, 0, 0, 0, 1]));
        assert_eq!(arp.sender_proto_addr(), Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(arp.target_hw_addr(), MacAddr::ZERO);
        assert_eq!(arp.target_proto_addr(), Ipv4Addr::new(192, 0, 2, 77));

        let mut buf = [0u8; 42];
        let n =
            EthernetFrame::emit(&mut buf, eth.dst_addr(), eth.src_addr(), ethertype::ARP).unwrap();
        let m = ArpPacket::emit(
            &mut buf[n..],
            arp.operation(),
            arp.sender_hw_addr(),
            arp.sender_proto_addr(),
            arp.target_hw_addr(),
            arp.target_proto_addr(),
        )
        .unwrap();
        assert_eq!(n + m, 42);
        assert_eq!(buf, ARP_REQUEST);

        let ep = etherparse::Ethernet2Slice::from_slice_without_fcs(&ARP_REQUEST).unwrap();
        assert_eq!(ep.ether_type(), etherparse::EtherType::ARP);
        assert_eq!(ep.payload_slice(), arp.into_inner());
    }

    #[test]
    fn reply_via_setters() {
        // Turn the captured request into the captured reply using setters.
        let req = ArpPacket::new_checked(&ARP_REQUEST[HEADER_LEN..]).unwrap();
        let mut buf = ARP_REQUEST;
        let mut arp = ArpPacket::new_checked(&mut buf[HEADER_LEN..]).unwrap();
        arp.set_operation(operation::REPLY);
        arp.set_target_hw_addr(MacAddr([2, 0xfc, 0, 0, 0, 5]));
        arp.set_target_proto_addr(Ipv4Addr::new(192, 0, 2, 1));
        arp.set_sender_hw_addr(req.sender_hw_addr());
        arp.set_sender_proto_addr(req.sender_proto_addr());
        let mut eth = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        eth.set_dst_addr(MacAddr([2, 0xfc, 0, 0, 0, 5]));
        assert_eq!(buf, ARP_REPLY);
    }

    #[test]
    fn malformed() {
        let body = &ARP_REQUEST[HEADER_LEN..];
        assert_eq!(
            ArpPacket::new_checked(&body[..27]).err(),
            Some(Error::Truncated)
        );
        for (i, v) in [(1usize, 6u8), (3, 0xdd), (4, 8), (5, 16)] {
            let mut b = [0u8; 28];
            b.copy_from_slice(body);
            b[i] = v;
            assert_eq!(
                ArpPacket::new_checked(&b[..]).err(),
                Some(Error::Unsupported)
            );
        }
        assert_eq!(
            ArpPacket::emit(
                &mut [0u8; 27],
                1,
                MacAddr::ZERO,
                Ipv4Addr::UNSPECIFIED,
                MacAddr::ZERO,
                Ipv4Addr::UNSPECIFIED
            ),
            Err(Error::Truncated)
        );
    }

    proptest! {
        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..200), fix in any::<bool>()) {
            if fix && data.len() >= 6 {
                data[..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
            }
            if let Ok(a) = ArpPacket::new_checked(&data[..]) {
                let _ = (a.operation(), a.sender_hw_addr(), a.sender_proto_addr());
                let _ = (a.target_hw_addr(), a.target_proto_addr(), a.hardware_type(), a.protocol_type());
            }
        }
    }
}
