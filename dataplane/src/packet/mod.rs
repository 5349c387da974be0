//! Zero-copy packet views (smoltcp `wire` style).
//!
//! Every view is a thin wrapper around a byte buffer (`T: AsRef<[u8]>`, and
//! `T: AsMut<[u8]>` for setters). `new_checked` validates all lengths once;
//! after it succeeds no getter of that view can panic. `new_unchecked` skips
//! validation (getters may then panic on short buffers). Nothing here
//! allocates; all accessors are `#[inline]` and intended for the per-packet
//! fast path.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod sctp;
pub mod tcp;
pub mod udp;

#[cfg(test)]
pub(crate) mod golden;

pub use arp::ArpPacket;
pub use ethernet::{EthernetFrame, MacAddr};
pub use icmp::IcmpPacket;
pub use ipv4::Ipv4Packet;
pub use ipv6::{Fragment, Ipv6Packet, UpperLayer};
pub use sctp::SctpPacket;
pub use tcp::TcpPacket;
pub use udp::UdpPacket;

/// IP protocol numbers (IPv4 `protocol` / IPv6 `next header`).
pub mod ip_proto {
    /// IPv6 Hop-by-Hop Options extension header.
    pub const HOPOPT: u8 = 0;
    /// Internet Control Message Protocol (v4).
    pub const ICMP: u8 = 1;
    /// Transmission Control Protocol.
    pub const TCP: u8 = 6;
    /// User Datagram Protocol.
    pub const UDP: u8 = 17;
    /// IPv6 Routing extension header.
    pub const IPV6_ROUTE: u8 = 43;
    /// IPv6 Fragment extension header.
    pub const IPV6_FRAG: u8 = 44;
    /// Encapsulating Security Payload.
    pub const ESP: u8 = 50;
    /// Authentication Header.
    pub const AH: u8 = 51;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header".
    pub const IPV6_NONXT: u8 = 59;
    /// IPv6 Destination Options extension header.
    pub const IPV6_OPTS: u8 = 60;
    /// Stream Control Transmission Protocol.
    pub const SCTP: u8 = 132;
}

/// Reasons a packet could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header (or a length field) requires.
    #[error("packet truncated")]
    Truncated,
    /// The IP version field does not match the view.
    #[error("bad IP version")]
    BadVersion,
    /// The header length field (IPv4 IHL, TCP data offset) is invalid.
    #[error("bad header length")]
    BadHeaderLen,
    /// The IPv4 total length is smaller than the header or larger than the buffer.
    #[error("bad IPv4 total length")]
    BadTotalLen,
    /// A length field (UDP length, IPv6 payload length) is invalid.
    #[error("bad length field")]
    BadLength,
    /// The packet uses an unsupported format (e.g. non Ethernet/IPv4 ARP).
    #[error("unsupported packet format")]
    Unsupported,
    /// The IPv6 extension header chain is longer than we are willing to walk.
    #[error("too many IPv6 extension headers")]
    TooManyExtHeaders,
    /// A textual address could not be parsed.
    #[error("bad address syntax")]
    BadAddress,
    /// An SCTP packet without chunks, or a chunk length below 4 or past the packet.
    #[error("bad SCTP chunk")]
    BadChunk,
}

impl Error {
    /// A stable snake_case label for this error (used as a metrics label value).
    pub const fn as_str(&self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::BadVersion => "bad_version",
            Error::BadHeaderLen => "bad_header_len",
            Error::BadTotalLen => "bad_total_len",
            Error::BadLength => "bad_length",
            Error::Unsupported => "unsupported",
            Error::TooManyExtHeaders => "too_many_ext_headers",
            Error::BadAddress => "bad_address",
            Error::BadChunk => "bad_chunk",
        }
    }

    /// All variants, e.g. to pre-register metric label values.
    pub const ALL: [Error; 9] = [
        Error::Truncated,
        Error::BadVersion,
        Error::BadHeaderLen,
        Error::BadTotalLen,
        Error::BadLength,
        Error::Unsupported,
        Error::TooManyExtHeaders,
        Error::BadAddress,
        Error::BadChunk,
    ];
}

/// Reads a big-endian u16 at `i` (caller guarantees bounds).
#[inline(always)]
pub(crate) fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// Reads a big-endian u32 at `i` (caller guarantees bounds).
#[inline(always)]
pub(crate) fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Writes a big-endian u16 at `i` (caller guarantees bounds).
#[inline(always)]
pub(crate) fn put16(b: &mut [u8], i: usize, v: u16) {
    b[i..i + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian u32 at `i` (caller guarantees bounds).
#[inline(always)]
pub(crate) fn put32(b: &mut [u8], i: usize, v: u32) {
    b[i..i + 4].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_labels_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for e in Error::ALL {
            let s = e.as_str();
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
            assert!(seen.insert(s));
            assert!(!e.to_string().is_empty());
        }
    }
}
