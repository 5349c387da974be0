//! Internet checksum (RFC 1071) and incremental updates (RFC 1624).
//!
//! Conventions: [`sum`] returns an unfolded 32-bit accumulator that is
//! congruent (mod 0xFFFF) to the ones-complement sum; [`fold`] reduces it to
//! the 16-bit ones-complement sum; [`finish`] complements that to get the
//! value that goes into a checksum field.

/// Ones-complement accumulates `data` as big-endian 16-bit words onto `initial`.
///
/// An odd trailing byte is padded with a zero low byte. The result is not
/// folded; pass it to [`fold`] or [`finish`], or use it as `initial` again
/// (only valid if the previous chunk had even length).
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut acc: u64 = u64::from(initial);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rem = chunks.remainder();
    match *rem {
        [a, b, c] => acc += u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        [a, b] => acc += u64::from(u16::from_be_bytes([a, b])),
        [a] => acc += u64::from(a) << 8,
        _ => {}
    }
    // 2^32 == 1 (mod 0xFFFF), so folding 64 -> 32 bits keeps the sum.
    acc = (acc & 0xFFFF_FFFF) + (acc >> 32);
    acc = (acc & 0xFFFF_FFFF) + (acc >> 32);
    acc as u32
}

/// Folds carries of an accumulator into a 16-bit ones-complement sum (not complemented).
#[inline]
pub fn fold(sum: u32) -> u16 {
    let s = (sum & 0xFFFF) + (sum >> 16);
    let s = (s & 0xFFFF) + (s >> 16);
    s as u16
}

/// Folds and complements an accumulator: the value for a checksum field.
#[inline]
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// Computes the IPv4 header checksum of `hdr` (the checksum field at 10..12 is ignored).
#[inline]
pub fn ipv4_header(hdr: &[u8]) -> u16 {
    match (hdr.get(..10), hdr.get(12..)) {
        (Some(a), Some(b)) => finish(sum(b, sum(a, 0))),
        _ => finish(sum(hdr, 0)),
    }
}

/// True when the 20-byte IPv4 header `hdr` (no options) carries a valid
/// header checksum: `fold(sum(hdr, 0)) == 0xFFFF`, computed over
/// native-endian words (a ones-complement sum read in the other byte order
/// is the byte swap of the sum, and 0xFFFF is its own swap), which saves
/// the per-word byte swaps on the fast path.
#[inline(always)]
pub fn ipv4_header_ok(hdr: &[u8; 20]) -> bool {
    let acc: u64 = hdr
        .chunks_exact(4)
        .map(|c| u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
        .sum();
    fold64(acc) == 0xFFFF
}

/// Folds a 64-bit accumulator of 32-bit (or 16-bit) words into their
/// 16-bit ones-complement sum: the same value as [`fold`] of [`sum`]'s
/// reduction (the unique representative in 1..=0xFFFF of a non-zero
/// accumulator, 0 for 0), in fewer instructions: the 32-bit halves are
/// added with an end-around carry (2^32 == 1 mod 0xFFFF), then the 16-bit
/// halves by adding the word to its rotation, whose high half is the
/// end-around sum.
#[inline(always)]
pub fn fold64(acc: u64) -> u16 {
    let (s, carry) = (acc as u32).overflowing_add((acc >> 32) as u32);
    // No second carry: with one, s <= 0xFFFF_FFFE.
    let s = s + u32::from(carry);
    (s.wrapping_add(s.rotate_right(16)) >> 16) as u16
}

/// Unfolded sum of the IPv4 pseudo-header (src, dst, zero+protocol, upper-layer length).
#[inline]
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u32) -> u32 {
    u32::from(u16::from_be_bytes([src[0], src[1]]))
        + u32::from(u16::from_be_bytes([src[2], src[3]]))
        + u32::from(u16::from_be_bytes([dst[0], dst[1]]))
        + u32::from(u16::from_be_bytes([dst[2], dst[3]]))
        + u32::from(proto)
        + (len >> 16)
        + (len & 0xFFFF)
}

/// Unfolded sum of the IPv6 pseudo-header (src, dst, 32-bit length, next header).
#[inline]
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], proto: u8, len: u32) -> u32 {
    let s = u32::from(fold(sum(src, 0)));
    let d = u32::from(fold(sum(dst, 0)));
    s + d + u32::from(proto) + (len >> 16) + (len & 0xFFFF)
}

/// Full TCP/UDP/ICMP checksum over an IPv4 pseudo-header plus `segment`.
///
/// The checksum field inside `segment` must be zero. For UDP a result of 0
/// must be transmitted as 0xFFFF (see [`udp_final`]).
#[inline]
pub fn l4_v4(src: [u8; 4], dst: [u8; 4], proto: u8, segment: &[u8]) -> u16 {
    finish(sum(
        segment,
        pseudo_header_v4(src, dst, proto, segment.len() as u32),
    ))
}

/// Full TCP/UDP/ICMPv6 checksum over an IPv6 pseudo-header plus `segment`.
///
/// The checksum field inside `segment` must be zero. For UDP a result of 0
/// must be transmitted as 0xFFFF (see [`udp_final`]).
#[inline]
pub fn l4_v6(src: &[u8; 16], dst: &[u8; 16], proto: u8, segment: &[u8]) -> u16 {
    finish(sum(
        segment,
        pseudo_header_v6(src, dst, proto, segment.len() as u32),
    ))
}

/// True if `segment` (checksum field in place) checks out against the IPv4 pseudo-header.
#[inline]
pub fn verify_l4_v4(src: [u8; 4], dst: [u8; 4], proto: u8, segment: &[u8]) -> bool {
    fold(sum(
        segment,
        pseudo_header_v4(src, dst, proto, segment.len() as u32),
    )) == 0xFFFF
}

/// True if `segment` (checksum field in place) checks out against the IPv6 pseudo-header.
#[inline]
pub fn verify_l4_v6(src: &[u8; 16], dst: &[u8; 16], proto: u8, segment: &[u8]) -> bool {
    fold(sum(
        segment,
        pseudo_header_v6(src, dst, proto, segment.len() as u32),
    )) == 0xFFFF
}

/// Maps a computed UDP checksum of 0 to 0xFFFF (RFC 768: 0 means "no checksum").
#[inline]
pub fn udp_final(csum: u16) -> u16 {
    if csum == 0 {
        0xFFFF
    } else {
        csum
    }
}

/// RFC 1624 eqn. 3: updates `csum` after a 16-bit word changed from `old` to `new`.
#[inline]
pub fn adjust16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!csum) + u32::from(!old) + u32::from(new))
}

/// RFC 1624 eqn. 3 for a 32-bit (two-word, 16-bit aligned) field change.
#[inline]
pub fn adjust32(csum: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!csum)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xFFFF);
    !fold(s)
}

/// RFC 1624 eqn. 3 for a multi-word field change (e.g. 4- or 16-byte addresses).
///
/// `old` and `new` must have equal, even length and start at an even offset in
/// the checksummed data; an odd trailing byte is treated as a high byte.
#[inline]
pub fn adjust(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    // ~m summed word-wise == ones-complement negation of the sum of m.
    let s = u32::from(!csum) + u32::from(!fold(sum(old, 0))) + u32::from(fold(sum(new, 0)));
    !fold(s)
}

/// [`adjust`] for UDP: a checksum of 0 ("none") stays 0 and a result of 0 becomes 0xFFFF.
#[inline]
pub fn adjust_udp(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    if csum == 0 {
        return 0;
    }
    udp_final(adjust(csum, old, new))
}

/// [`adjust16`] with UDP semantics (see [`adjust_udp`]), e.g. for port rewrites.
#[inline]
pub fn adjust_udp16(csum: u16, old: u16, new: u16) -> u16 {
    if csum == 0 {
        return 0;
    }
    udp_final(adjust16(csum, old, new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straightforward RFC 1071 reference implementation.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            s += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
            s = (s & 0xFFFF) + (s >> 16);
            i += 2;
        }
        if i < data.len() {
            s += u32::from(data[i]) << 8;
            s = (s & 0xFFFF) + (s >> 16);
        }
        !(s as u16)
    }

    /// Same ones-complement value (0 and 0xFFFF are both "zero").
    fn same(a: u16, b: u16) -> bool {
        a == b || (a | b == 0xFFFF && (a == 0 || b == 0))
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: sum of these words is ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d, 0)), 0xddf2);
        assert_eq!(finish(sum(&d, 0)), !0xddf2);
    }

    #[test]
    fn ipv4_header_known() {
        // Captured 192.0.2.2 -> 192.0.2.1 ICMP echo, checksum d4f3.
        let h = [
            0x45, 0x00, 0x00, 0x3c, 0xe1, 0xc9, 0x40, 0x00, 0x40, 0x01, 0xd4, 0xf3, 0xc0, 0x00,
            0x02, 0x02, 0xc0, 0x00, 0x02, 0x01,
        ];
        assert_eq!(ipv4_header(&h), 0xd4f3);
        assert_eq!(fold(sum(&h, 0)), 0xFFFF);
        let eh = etherparse::Ipv4HeaderSlice::from_slice(&h)
            .unwrap()
            .to_header();
        assert_eq!(eh.calc_header_checksum(), 0xd4f3);
        // Too-short input must not panic.
        let _ = ipv4_header(&h[..5]);
    }

    #[test]
    fn adjust_udp_zero_rules() {
        assert_eq!(adjust_udp(0, &[1, 2], &[3, 4]), 0);
        assert_eq!(adjust_udp16(0, 1, 2), 0);
        assert_eq!(udp_final(0), 0xFFFF);
        assert_eq!(udp_final(5), 5);
    }

    /// [`sum`]'s 64 -> 32-bit reduction followed by [`fold`].
    fn fold_slow(acc: u64) -> u16 {
        let acc = (acc & 0xFFFF_FFFF) + (acc >> 32);
        let acc = (acc & 0xFFFF_FFFF) + (acc >> 32);
        fold(acc as u32)
    }

    #[test]
    fn fold64_edges() {
        for acc in [
            0,
            1,
            0xFFFF,
            0x1_0000,
            0xFFFF_FFFF,
            0x1_0000_0000,
            0x1_FFFF_FFFE,
            0xFFFF_FFFF_0000_0001,
            u64::MAX,
        ] {
            assert_eq!(fold64(acc), fold_slow(acc), "{acc:#x}");
        }
        assert_eq!(fold64(0), 0);
        assert_eq!(fold64(0xFFFF), 0xFFFF);
        assert_eq!(fold64(0x1_0000_0000), 1);
    }

    proptest! {
        #[test]
        fn fold64_is_the_folded_sum(acc in any::<u64>(), small in 0u64..(1 << 36)) {
            prop_assert_eq!(fold64(acc), fold_slow(acc));
            prop_assert_eq!(fold64(small), fold_slow(small));
        }

        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(finish(sum(&data, 0)), reference(&data));
            // Splitting at an even boundary composes.
            let mid = (data.len() / 2) & !1;
            prop_assert_eq!(fold(sum(&data[mid..], sum(&data[..mid], 0))), fold(sum(&data, 0)));
        }

        #[test]
        fn ipv4_header_ok_is_the_header_sum_check(
            mut hdr in proptest::array::uniform20(any::<u8>()), valid in any::<bool>(),
        ) {
            if valid {
                // Fill the checksum field so that the header checks.
                hdr[10] = 0; hdr[11] = 0;
                let c = finish(sum(&hdr, 0));
                hdr[10..12].copy_from_slice(&c.to_be_bytes());
            }
            let want = fold(sum(&hdr, 0)) == 0xFFFF;
            prop_assert_eq!(ipv4_header_ok(&hdr), want);
            prop_assert!(!valid || want);
            // Any one-bit flip breaks a valid header.
            if want {
                let mut bad = hdr;
                bad[(hdr[0] as usize) % 20] ^= 1 << (hdr[1] % 8);
                prop_assert!(!ipv4_header_ok(&bad));
            }
        }

        #[test]
        fn adjust16_matches_recompute(
            mut hdr in proptest::collection::vec(any::<u8>(), 20..64),
            pos in 0usize..32, new in any::<u16>(),
        ) {
            let len = hdr.len() & !1;
            hdr.truncate(len);
            let pos = (pos * 2) % (len - 2);
            // Checksum field at 0..2 (zero while computing), word under change elsewhere.
            let pos = if pos == 0 { 2 } else { pos };
            hdr[0] = 0; hdr[1] = 0;
            let c0 = finish(sum(&hdr, 0));
            let old = u16::from_be_bytes([hdr[pos], hdr[pos + 1]]);
            hdr[pos..pos + 2].copy_from_slice(&new.to_be_bytes());
            let c1 = finish(sum(&hdr, 0));
            prop_assert!(same(adjust16(c0, old, new), c1));
            prop_assert!(same(adjust(c0, &old.to_be_bytes(), &new.to_be_bytes()), c1));
        }

        #[test]
        fn adjust32_and_addr4_match_recompute(
            mut hdr in proptest::collection::vec(any::<u8>(), 20..21),
            new in any::<[u8; 4]>(),
        ) {
            // IPv4 header: rewrite source address (12..16).
            let c0 = ipv4_header(&hdr);
            let old: [u8; 4] = hdr[12..16].try_into().unwrap();
            hdr[12..16].copy_from_slice(&new);
            let c1 = ipv4_header(&hdr);
            prop_assert!(same(adjust(c0, &old, &new), c1));
            prop_assert!(same(adjust32(c0, u32::from_be_bytes(old), u32::from_be_bytes(new)), c1));
        }

        #[test]
        fn addr16_pseudo_header_adjust_matches_recompute(
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), new in any::<[u8; 16]>(),
            mut seg in proptest::collection::vec(any::<u8>(), 8..80),
        ) {
            seg[6] = 0; seg[7] = 0; // checksum field (UDP layout)
            let c0 = l4_v6(&src, &dst, 17, &seg);
            let c1 = l4_v6(&new, &dst, 17, &seg);
            prop_assert!(same(adjust(c0, &src, &new), c1));
            seg[6..8].copy_from_slice(&c1.to_be_bytes());
            prop_assert!(verify_l4_v6(&new, &dst, 17, &seg));
        }

        #[test]
        fn addr4_pseudo_header_adjust_matches_recompute(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), new in any::<[u8; 4]>(),
            mut seg in proptest::collection::vec(any::<u8>(), 20..80),
        ) {
            seg[16] = 0; seg[17] = 0; // checksum field (TCP layout)
            let c0 = l4_v4(src, dst, 6, &seg);
            let c1 = l4_v4(src, new, 6, &seg);
            prop_assert!(same(adjust(c0, &dst, &new), c1));
            seg[16..18].copy_from_slice(&c1.to_be_bytes());
            prop_assert!(verify_l4_v4(src, new, 6, &seg));
        }

        #[test]
        fn adjust_udp_never_yields_zero(c in 1u16.., old in any::<[u8; 16]>(), new in any::<[u8; 16]>(),
                                        o16 in any::<u16>(), n16 in any::<u16>()) {
            prop_assert_ne!(adjust_udp(c, &old, &new), 0);
            prop_assert_ne!(adjust_udp(c, &old[..4], &new[..4]), 0);
            prop_assert_ne!(adjust_udp16(c, o16, n16), 0);
        }
    }
}
