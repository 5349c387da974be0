//! SCTP common header and chunk view (RFC 9260).
//!
//! ```text
//!  0                   1                   2                   3
//! +-------------------------------+-------------------------------+
//! |     Source Port Number        |     Destination Port Number   |
//! +-------------------------------+-------------------------------+
//! |                      Verification Tag                         |
//! +---------------------------------------------------------------+
//! |                           Checksum                            |
//! +---------------------------------------------------------------+
//! | Chunk Type    | Chunk Flags   |        Chunk Length           |  (repeated)
//! +---------------+---------------+-------------------------------+
//! ```
//!
//! The checksum is CRC32c (Castagnoli) over the whole SCTP packet with the
//! checksum field set to zero, and — unlike TCP/UDP — no IP pseudo-header.
//! So an address-only rewrite leaves it valid, while a port rewrite needs a
//! recomputation over the packet ([`fill_checksum`]). The CRC is stored in
//! the order RFC 9260 appendix A (and RFC 3720 B.4) gives: the 32-bit CRC
//! value's least significant byte first; [`SctpPacket::checksum`] returns the
//! value in that sense, so it compares directly with [`crc32c`].
//!
//! [`SctpPacket::new_checked`] validates the common header and walks every
//! chunk: a chunk shorter than its 4-byte header or reaching past the packet
//! is [`Error::BadChunk`]; so is a packet without any chunk.

use super::{be16, be32, put16, put32, Error};

/// Length of the SCTP common header.
pub const HEADER_LEN: usize = 12;
/// Length of a chunk header (type, flags, length).
pub const CHUNK_HEADER_LEN: usize = 4;

/// Chunk types (RFC 9260 section 3.2).
pub mod chunk {
    /// Payload data.
    pub const DATA: u8 = 0;
    /// Initiation.
    pub const INIT: u8 = 1;
    /// Initiation acknowledgement.
    pub const INIT_ACK: u8 = 2;
    /// Selective acknowledgement.
    pub const SACK: u8 = 3;
    /// Heartbeat request.
    pub const HEARTBEAT: u8 = 4;
    /// Heartbeat acknowledgement.
    pub const HEARTBEAT_ACK: u8 = 5;
    /// Abort.
    pub const ABORT: u8 = 6;
    /// Shutdown.
    pub const SHUTDOWN: u8 = 7;
    /// Shutdown acknowledgement.
    pub const SHUTDOWN_ACK: u8 = 8;
    /// Operation error.
    pub const ERROR: u8 = 9;
    /// State cookie.
    pub const COOKIE_ECHO: u8 = 10;
    /// Cookie acknowledgement.
    pub const COOKIE_ACK: u8 = 11;
    /// Shutdown complete.
    pub const SHUTDOWN_COMPLETE: u8 = 14;
}

/// One bit per chunk type the connection tracker cares about: the summary
/// of a packet's chunks ([`SctpPacket::chunk_bits`]) fits in a `u8`.
pub mod bits {
    /// An INIT chunk is present.
    pub const INIT: u8 = 0x01;
    /// An INIT ACK chunk is present.
    pub const INIT_ACK: u8 = 0x02;
    /// A COOKIE ECHO chunk is present.
    pub const COOKIE_ECHO: u8 = 0x04;
    /// A COOKIE ACK chunk is present.
    pub const COOKIE_ACK: u8 = 0x08;
    /// A SHUTDOWN chunk is present.
    pub const SHUTDOWN: u8 = 0x10;
    /// A SHUTDOWN ACK chunk is present.
    pub const SHUTDOWN_ACK: u8 = 0x20;
    /// A SHUTDOWN COMPLETE chunk is present.
    pub const SHUTDOWN_COMPLETE: u8 = 0x40;
    /// An ABORT chunk is present.
    pub const ABORT: u8 = 0x80;

    /// The bit of chunk type `ty` (0 for types without one).
    #[inline]
    pub const fn of(ty: u8) -> u8 {
        match ty {
            super::chunk::INIT => INIT,
            super::chunk::INIT_ACK => INIT_ACK,
            super::chunk::COOKIE_ECHO => COOKIE_ECHO,
            super::chunk::COOKIE_ACK => COOKIE_ACK,
            super::chunk::SHUTDOWN => SHUTDOWN,
            super::chunk::SHUTDOWN_ACK => SHUTDOWN_ACK,
            super::chunk::SHUTDOWN_COMPLETE => SHUTDOWN_COMPLETE,
            super::chunk::ABORT => ABORT,
            _ => 0,
        }
    }
}

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const VTAG: usize = 4;
    pub const CHECKSUM: usize = 8;
}

/// Byte offset of the checksum field inside the SCTP header.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM;

/// CRC32c of an SCTP packet as if its checksum field were zero (RFC 9260
/// appendix A; no pseudo-header). `packet` is the SCTP packet (common header
/// and chunks) and must be at least [`HEADER_LEN`] long — shorter input
/// yields the CRC of what is there. Never allocates.
#[inline]
pub fn crc32c(packet: &[u8]) -> u32 {
    if packet.len() < HEADER_LEN {
        return ::crc32c::crc32c(packet);
    }
    let c = ::crc32c::crc32c(&packet[..field::CHECKSUM]);
    let c = ::crc32c::crc32c_append(c, &[0; 4]);
    ::crc32c::crc32c_append(c, &packet[HEADER_LEN..])
}

/// Recomputes and stores the checksum of the SCTP packet `packet` (after a
/// port rewrite). Does nothing on a buffer shorter than the common header.
#[inline]
pub fn fill_checksum(packet: &mut [u8]) {
    if packet.len() >= HEADER_LEN {
        let c = crc32c(packet);
        packet[field::CHECKSUM..HEADER_LEN].copy_from_slice(&c.to_le_bytes());
    }
}

/// A view over an SCTP packet (common header + chunks).
#[derive(Debug, Clone)]
pub struct SctpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

/// One chunk of an SCTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Chunk type (see [`chunk`]).
    pub ty: u8,
    /// Chunk flags.
    pub flags: u8,
    /// The chunk's value: `length - 4` bytes after its header (no padding).
    pub value: &'a [u8],
}

/// Iterator over the chunks of a packet; stops at the first malformed chunk
/// (none after [`SctpPacket::new_checked`]).
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    buf: &'a [u8],
    off: usize,
}

impl<'a> Iterator for Chunks<'a> {
    type Item = Chunk<'a>;

    #[inline]
    fn next(&mut self) -> Option<Chunk<'a>> {
        let h = self.buf.get(self.off..self.off + CHUNK_HEADER_LEN)?;
        let len = usize::from(be16(h, 2));
        if len < CHUNK_HEADER_LEN {
            self.off = self.buf.len();
            return None;
        }
        let value = self
            .buf
            .get(self.off + CHUNK_HEADER_LEN..self.off + len)
            .or_else(|| {
                self.off = self.buf.len();
                None
            })?;
        let c = Chunk {
            ty: h[0],
            flags: h[1],
            value,
        };
        // Chunks are padded to a multiple of 4 bytes.
        self.off += (len + 3) & !3;
        Some(c)
    }
}

impl<T: AsRef<[u8]>> SctpPacket<T> {
    /// Wraps a buffer without validation (getters may then panic on short buffers).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        SctpPacket { buffer }
    }

    /// Wraps a buffer holding exactly one SCTP packet, checking the common
    /// header and every chunk's length.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let mut off = HEADER_LEN;
        let mut n = 0usize;
        while off < b.len() {
            if b.len() - off < CHUNK_HEADER_LEN {
                return Err(Error::BadChunk);
            }
            let len = usize::from(be16(b, off + 2));
            if len < CHUNK_HEADER_LEN || len > b.len() - off {
                return Err(Error::BadChunk);
            }
            // The last chunk's padding may be absent (it is not counted).
            off += (len + 3) & !3;
            n += 1;
        }
        if n == 0 {
            return Err(Error::BadChunk);
        }
        Ok(SctpPacket { buffer })
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

    /// Verification tag.
    #[inline]
    pub fn verification_tag(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VTAG)
    }

    /// The checksum field as a CRC32c value (stored least significant byte first).
    #[inline]
    pub fn checksum(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_le_bytes([b[8], b[9], b[10], b[11]])
    }

    /// The CRC32c this packet should carry.
    #[inline]
    pub fn compute_checksum(&self) -> u32 {
        crc32c(self.buffer.as_ref())
    }

    /// True when the checksum field holds the packet's CRC32c.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        self.checksum() == self.compute_checksum()
    }

    /// The chunks, in order.
    #[inline]
    pub fn chunks(&self) -> Chunks<'_> {
        Chunks {
            buf: self.buffer.as_ref(),
            off: HEADER_LEN,
        }
    }

    /// The [`bits`] of every chunk type present, or-ed together.
    #[inline]
    pub fn chunk_bits(&self) -> u8 {
        self.chunks().fold(0, |a, c| a | bits::of(c.ty))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SctpPacket<T> {
    /// Sets the source port (the checksum must then be recomputed).
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port (the checksum must then be recomputed).
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the verification tag.
    #[inline]
    pub fn set_verification_tag(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::VTAG, v);
    }

    /// Stores `v` (a CRC32c value) in the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u32) {
        self.buffer.as_mut()[field::CHECKSUM..HEADER_LEN].copy_from_slice(&v.to_le_bytes());
    }

    /// Recomputes and stores the checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        fill_checksum(self.buffer.as_mut());
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for SctpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The independent oracle: the `crc` crate's CRC-32/ISCSI (= CRC32c).
    fn oracle(data: &[u8]) -> u32 {
        crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(data)
    }

    /// Golden SCTP INIT (port 40000 -> 9999, initiate tag 0x11223344) laid
    /// out like a Linux INIT: the common header with verification tag 0, one
    /// INIT chunk with IPv4 address, supported address types and ECN
    /// parameters. The checksum bytes were computed with a table-driven
    /// Python CRC32c (the e2e peer's), a third implementation.
    const INIT: [u8; 52] = [
        0x9c, 0x40, 0x27, 0x0f, // ports
        0x00, 0x00, 0x00, 0x00, // verification tag
        0x7c, 0xd2, 0x4d, 0x31, // checksum (CRC32c, LSB first)
        0x01, 0x00, 0x00, 0x28, // INIT, flags 0, length 40
        0x11, 0x22, 0x33, 0x44, // initiate tag
        0x00, 0x01, 0xa0, 0x00, // a_rwnd 106496
        0x00, 0x0a, 0xff, 0xff, // outbound / inbound streams
        0x6b, 0x8b, 0x45, 0x67, // initial TSN
        0x00, 0x05, 0x00, 0x08, 0xc6, 0x12, 0x00, 0x02, // IPv4 address 198.18.0.2
        0x00, 0x0c, 0x00, 0x06, 0x00, 0x05, 0x00, 0x00, // supported types: IPv4 (+pad)
        0x80, 0x00, 0x00, 0x04, // ECN capable (param 0x8000, length 4)
    ];

    #[test]
    fn rfc3720_crc32c_vectors() {
        // RFC 3720 B.4: the CRC bytes as they appear on the wire.
        let zeros = [0u8; 32];
        let ones = [0xffu8; 32];
        let inc: Vec<u8> = (0..32).collect();
        let dec: Vec<u8> = (0..32).rev().collect();
        for (data, wire) in [
            (&zeros[..], [0xaa, 0x36, 0x91, 0x8a]),
            (&ones[..], [0x43, 0xab, 0xa8, 0x62]),
            (&inc[..], [0x4e, 0x79, 0xdd, 0x46]),
            (&dec[..], [0x5c, 0xdb, 0x3f, 0x11]),
        ] {
            assert_eq!(::crc32c::crc32c(data).to_le_bytes(), wire);
            assert_eq!(oracle(data).to_le_bytes(), wire);
        }
        // The catalogue check value of CRC-32/ISCSI.
        assert_eq!(::crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn init_golden() {
        let p = SctpPacket::new_checked(&INIT[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (40000, 9999));
        assert_eq!(p.verification_tag(), 0);
        assert_eq!(p.checksum(), 0x314d_d27c);
        assert!(p.verify_checksum());
        let mut z = INIT;
        z[8..12].fill(0);
        assert_eq!(oracle(&z), p.checksum());
        let chunks: Vec<_> = p.chunks().collect();
        assert_eq!(chunks.len(), 1);
        assert_eq!((chunks[0].ty, chunks[0].flags), (chunk::INIT, 0));
        assert_eq!(chunks[0].value.len(), 36);
        assert_eq!(&chunks[0].value[..4], &[0x11, 0x22, 0x33, 0x44]);
        assert_eq!(p.chunk_bits(), bits::INIT);

        // Rebuild byte-exact with the setters.
        let mut buf = [0u8; 52];
        buf[12..].copy_from_slice(&INIT[12..]);
        let mut n = SctpPacket::new_unchecked(&mut buf[..]);
        n.set_src_port(40000);
        n.set_dst_port(9999);
        n.set_verification_tag(0);
        n.fill_checksum();
        assert_eq!(buf, INIT);
    }

    #[test]
    fn port_rewrite_needs_a_new_crc_address_rewrite_does_not() {
        let mut b = INIT;
        let mut p = SctpPacket::new_checked(&mut b[..]).unwrap();
        p.set_dst_port(8080);
        assert!(!p.verify_checksum(), "a port change invalidates the CRC");
        p.fill_checksum();
        assert!(p.verify_checksum());
        let mut z = b;
        z[8..12].fill(0);
        assert_eq!(oracle(&z).to_le_bytes(), b[8..12]);
    }

    #[test]
    fn bundled_chunks_are_summarised() {
        // COOKIE ECHO (cookie of 5 bytes, padded) bundled with DATA, then ABORT.
        let mut b = vec![0u8; 12];
        b.extend_from_slice(&[chunk::COOKIE_ECHO, 0, 0, 9, 1, 2, 3, 4, 5, 0, 0, 0]);
        b.extend_from_slice(&[chunk::DATA, 3, 0, 20]);
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&[chunk::ABORT, 0, 0, 4]);
        let p = SctpPacket::new_checked(&b[..]).unwrap();
        let c: Vec<_> = p.chunks().map(|c| (c.ty, c.value.len())).collect();
        assert_eq!(
            c,
            [
                (chunk::COOKIE_ECHO, 5),
                (chunk::DATA, 16),
                (chunk::ABORT, 0)
            ]
        );
        assert_eq!(p.chunk_bits(), bits::COOKIE_ECHO | bits::ABORT);
        for ty in 0..=255u8 {
            let want = matches!(ty, 1 | 2 | 6 | 7 | 8 | 10 | 11 | 14);
            assert_eq!(bits::of(ty) != 0, want, "{ty}");
        }
    }

    #[test]
    fn malformed() {
        assert_eq!(
            SctpPacket::new_checked(&INIT[..11]).err(),
            Some(Error::Truncated)
        );
        // No chunk at all.
        assert_eq!(
            SctpPacket::new_checked(&INIT[..12]).err(),
            Some(Error::BadChunk)
        );
        // Fewer than 4 bytes of chunk header.
        assert_eq!(
            SctpPacket::new_checked(&INIT[..14]).err(),
            Some(Error::BadChunk)
        );
        // Chunk longer than the packet.
        assert_eq!(
            SctpPacket::new_checked(&INIT[..51]).err(),
            Some(Error::BadChunk)
        );
        for len in [0u16, 3] {
            let mut b = INIT;
            b[14..16].copy_from_slice(&len.to_be_bytes());
            assert_eq!(
                SctpPacket::new_checked(&b[..]).err(),
                Some(Error::BadChunk),
                "{len}"
            );
            // Unchecked iteration stops instead of looping or panicking.
            assert_eq!(SctpPacket::new_unchecked(&b[..]).chunks().count(), 0);
        }
        // A trailing chunk without padding is accepted (length 5, no pad).
        let mut b = INIT[..12].to_vec();
        b.extend_from_slice(&[chunk::DATA, 0, 0, 5, 9]);
        assert_eq!(SctpPacket::new_checked(&b[..]).unwrap().chunks().count(), 1);
    }

    proptest! {
        #[test]
        fn crc_matches_the_oracle(data in proptest::collection::vec(any::<u8>(), 12..400)) {
            let mut z = data.clone();
            z[8..12].fill(0);
            prop_assert_eq!(crc32c(&data), oracle(&z));
            let mut d = data.clone();
            fill_checksum(&mut d);
            prop_assert_eq!(&d[8..12], &oracle(&z).to_le_bytes()[..]);
            prop_assert!(SctpPacket::new_unchecked(&d[..]).verify_checksum());
        }

        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..200), fix in any::<bool>()) {
            if fix && data.len() >= 16 {
                let l = (data.len() - 12 - usize::from(data[0]) % 4).max(4) as u16;
                data[14..16].copy_from_slice(&l.to_be_bytes());
            }
            if let Ok(p) = SctpPacket::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.verification_tag(), p.checksum());
                let _ = (p.verify_checksum(), p.chunk_bits());
                // The chunks account for every byte after the header (padding
                // of the last chunk aside).
                let total: usize = p.chunks().map(|c| (c.value.len() + 4 + 3) & !3).sum();
                prop_assert!(total >= data.len() - 12 && total < data.len() - 12 + 4);
                prop_assert!(p.chunks().count() >= 1);
            }
            let _ = SctpPacket::new_unchecked(&data[..]).chunks().count();
        }
    }
}
