//! The `packet_views` target: every view over the input at every layer
//! offset a real frame could put it at.
use dataplane::packet::{
    checksum, icmp, sctp, ArpPacket, EthernetFrame, IcmpPacket, Ipv4Packet, Ipv6Packet, SctpPacket,
    TcpPacket, UdpPacket,
};
use std::hint::black_box;

/// Runs every packet view over `data`: as a frame, and each view directly
/// on the bytes (and past an Ethernet header), reading every field.
pub fn packet_views(data: &[u8]) {
    // The first byte picks an extra offset, so the views also see
    // unaligned and mid-header starts; the rest is the frame.
    let Some((&b, data)) = data.split_first() else {
        return;
    };
    let skip = usize::from(b & 0x3f).min(data.len());
    for d in [data, &data[skip..]] {
        frame(d);
        for off in [0, 14, 18] {
            if let Some(b) = d.get(off..) {
                views(b);
            }
        }
    }
    // Setters over a copy, where the views validate.
    let mut buf = data.to_vec();
    setters(&mut buf);
}

/// An Ethernet frame, as the pipeline reads it: Ethernet [+ VLAN], then
/// ARP / IPv4 / IPv6 and what they carry.
fn frame(d: &[u8]) {
    let Ok(e) = EthernetFrame::new_checked(d) else {
        return;
    };
    black_box((
        e.dst_addr(),
        e.src_addr(),
        e.is_tagged(),
        e.outer_ethertype(),
        e.ethertype(),
        e.vlan_tci(),
        e.vlan_id(),
        e.header_len(),
    ));
    let p = e.payload();
    match e.ethertype() {
        0x0806 => arp(p),
        0x0800 => ipv4(p),
        0x86dd => ipv6(p),
        _ => {}
    }
}

fn views(b: &[u8]) {
    arp(b);
    ipv4(b);
    ipv6(b);
    tcp(b);
    udp(b);
    sctp_view(b);
    icmp_view(b, None);
}

fn arp(b: &[u8]) {
    if let Ok(a) = ArpPacket::new_checked(b) {
        black_box((
            a.hardware_type(),
            a.protocol_type(),
            a.operation(),
            a.sender_hw_addr(),
            a.sender_proto_addr(),
            a.target_hw_addr(),
            a.target_proto_addr(),
        ));
    }
}

fn ipv4(b: &[u8]) {
    let Ok(p) = Ipv4Packet::new_checked(b) else {
        return;
    };
    black_box((
        p.version(),
        p.header_len(),
        p.dscp_ecn(),
        p.total_len(),
        p.ident(),
        p.dont_frag(),
        p.more_frags(),
        p.frag_offset(),
        p.is_fragment(),
        p.ttl(),
        p.next_header(),
        p.checksum(),
        p.src_addr(),
        p.dst_addr(),
        p.header().len(),
        p.options().len(),
        p.verify_checksum(),
    ));
    let l4 = p.payload();
    let (s, d) = (p.src_bytes(), p.dst_bytes());
    black_box((
        checksum::l4_v4(s, d, p.protocol(), l4),
        checksum::verify_l4_v4(s, d, p.protocol(), l4),
    ));
    upper(p.protocol(), l4, None);
}

fn ipv6(b: &[u8]) {
    let Ok(p) = Ipv6Packet::new_checked(b) else {
        return;
    };
    black_box((
        p.version(),
        p.traffic_class(),
        p.flow_label(),
        p.payload_len(),
        p.next_header(),
        p.hop_limit(),
        p.src_addr(),
        p.dst_addr(),
        p.payload().len(),
        p.packet().len(),
    ));
    let Ok(ul) = p.upper_layer() else {
        return;
    };
    black_box(&ul);
    let pkt = p.packet();
    let Some(l4) = pkt.get(ul.offset..) else {
        panic!(
            "upper layer offset {} past the packet {}",
            ul.offset,
            pkt.len()
        );
    };
    let (s, d) = (p.src_bytes(), p.dst_bytes());
    black_box((
        checksum::l4_v6(&s, &d, ul.protocol, l4),
        checksum::verify_l4_v6(&s, &d, ul.protocol, l4),
    ));
    if ul.fragment.is_none_or(|f| f.offset_bytes == 0) {
        upper(ul.protocol, l4, Some((s, d)));
    }
}

fn upper(proto: u8, l4: &[u8], v6: Option<([u8; 16], [u8; 16])>) {
    match proto {
        6 => tcp(l4),
        17 => udp(l4),
        132 => sctp_view(l4),
        1 | 58 => icmp_view(l4, v6),
        _ => {}
    }
}

fn tcp(b: &[u8]) {
    if let Ok(t) = TcpPacket::new_checked(b) {
        black_box((
            t.src_port(),
            t.dst_port(),
            t.seq_number(),
            t.ack_number(),
            t.header_len(),
            t.flags(),
            t.has_flags(0x12),
            t.window(),
            t.checksum(),
            t.urgent(),
            t.options().len(),
            t.payload().len(),
        ));
    }
}

fn udp(b: &[u8]) {
    if let Ok(u) = UdpPacket::new_checked(b) {
        black_box((
            u.src_port(),
            u.dst_port(),
            u.len(),
            u.is_empty(),
            u.checksum(),
            u.datagram().len(),
            u.payload().len(),
        ));
    }
}

fn sctp_view(b: &[u8]) {
    if let Ok(s) = SctpPacket::new_checked(b) {
        black_box((
            s.src_port(),
            s.dst_port(),
            s.verification_tag(),
            s.checksum(),
            s.compute_checksum(),
            s.verify_checksum(),
            s.chunk_bits(),
        ));
        for c in s.chunks() {
            black_box((c.ty, c.flags, c.value.len()));
        }
    }
    black_box(sctp::crc32c(b));
}

fn icmp_view(b: &[u8], v6: Option<([u8; 16], [u8; 16])>) {
    let Ok(i) = IcmpPacket::new_checked(b) else {
        return;
    };
    black_box((
        i.msg_type(),
        i.code(),
        i.checksum(),
        i.echo_ident(),
        i.echo_seq(),
        i.rest_of_header(),
        i.payload().len(),
        i.verify_checksum_v4(),
    ));
    if let Some((s, d)) = v6 {
        black_box(i.verify_checksum_v6(&s, &d));
    }
    black_box((
        icmp::ndp_target(b),
        icmp::ndp_na_flags(b),
        icmp::ndp_lladdr_option(b, 1),
        icmp::ndp_lladdr_option(b, 2),
    ));
    // The quoted packet of an error.
    if let Some(q) = b.get(8..) {
        ipv4(q);
        ipv6(q);
    }
}

/// Setters of the writable views (they must not panic once `new_checked`
/// accepted the buffer), then the getters again.
fn setters(buf: &mut [u8]) {
    if let Ok(mut p) = Ipv4Packet::new_checked(&mut *buf) {
        p.set_ttl(1);
        p.set_total_len(p.total_len());
        p.set_src_addr([198, 18, 0, 1].into());
        p.set_dst_addr([198, 18, 0, 2].into());
        p.fill_checksum();
        assert!(p.verify_checksum(), "filled IPv4 checksum does not verify");
        let _ = p.payload_mut().len();
    }
    if let Ok(mut p) = Ipv6Packet::new_checked(&mut *buf) {
        p.set_hop_limit(1);
        p.set_flow_label(0xfffff);
        p.set_traffic_class(0xff);
        let _ = p.payload_mut().len();
    }
    if let Ok(mut t) = TcpPacket::new_checked(&mut *buf) {
        t.set_src_port(1);
        t.set_dst_port(2);
        t.set_seq_number(3);
        t.set_ack_number(4);
    }
    if let Ok(mut u) = UdpPacket::new_checked(&mut *buf) {
        u.set_src_port(1);
        u.set_dst_port(2);
        let _ = u.payload_mut().len();
    }
    if let Ok(mut s) = SctpPacket::new_checked(&mut *buf) {
        s.set_src_port(1);
        s.set_dst_port(2);
        s.fill_checksum();
        assert!(s.verify_checksum(), "filled SCTP CRC32c does not verify");
    }
    if let Ok(mut i) = IcmpPacket::new_checked(&mut *buf) {
        i.set_code(0);
        i.fill_checksum_v4();
        assert!(
            i.verify_checksum_v4(),
            "filled ICMP checksum does not verify"
        );
    }
    if let Ok(mut e) = EthernetFrame::new_checked(&mut *buf) {
        e.swap_addrs();
        let _ = e.payload_mut().len();
    }
    frame(buf);
}
