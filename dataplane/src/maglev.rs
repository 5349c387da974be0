//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) for backend selection.
//!
//! A [`Maglev`] is a lookup table of `M` slots (`M` prime), each holding the
//! index of a backend in the caller's backend list. Every backend `i` has a
//! stable 64-bit identity `keys[i]` (see [`stable_key`]) from which two fixed,
//! process-independent mixers derive the paper's permutation
//! `offset = h1(key) % M`, `skip = h2(key) % (M - 1) + 1`; backends then take
//! turns claiming the next free slot of their permutation until the table is
//! full. With equal weights every backend ends up with `floor(M/N)` or
//! `ceil(M/N)` slots, and adding or removing a backend moves few other slots.
//!
//! Lookups reduce the flow hash with a plain `hash % M`: a 64-bit division is
//! a few tens of cycles but, unlike multiply-shift range reduction, it is
//! correct for weak or narrow hashes too (e.g. a 32-bit NIC RSS hash).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Table sizes (primes) used by [`table_size_for`], smallest first.
const TABLE_SIZES: [usize; 9] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521];

/// Largest table size (a prime) and the cap applied by [`Maglev::with_size`].
pub const MAX_TABLE_SIZE: usize = 65521;

/// Maximum number of backends a table can address (indices are `u16`).
pub const MAX_BACKENDS: usize = u16::MAX as usize;

/// A Maglev lookup table mapping flow hashes to backend indices `0..n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maglev {
    /// Slot -> backend index; empty when there are no (non-zero-weight) backends.
    table: Box<[u16]>,
    /// Number of backends the table was built for (after truncation to [`MAX_BACKENDS`]).
    backends: usize,
}

/// Returns the table size for `n_backends`: the smallest listed prime `>= 100 * n` (capped at 65521).
pub fn table_size_for(n_backends: usize) -> usize {
    let want = n_backends.saturating_mul(100);
    TABLE_SIZES
        .iter()
        .copied()
        .find(|&m| m >= want)
        .unwrap_or(MAX_TABLE_SIZE)
}

/// Deterministic 64-bit hash of a byte string (FNV-1a 64 then fmix64), e.g. for `"ip:port"` keys.
pub fn stable_key(bytes: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    fmix64(h)
}

/// MurmurHash3's 64-bit finalizer.
#[inline]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Stafford's "Mix13" variant of the splitmix64 finalizer (different constants from fmix64).
#[inline]
fn mix13(mut k: u64) -> u64 {
    k ^= k >> 30;
    k = k.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    k ^= k >> 27;
    k = k.wrapping_mul(0x94d0_49bb_1331_11eb);
    k ^= k >> 31;
    k
}

/// First permutation hash (offset).
#[inline]
fn h1(key: u64) -> u64 {
    fmix64(key ^ 0x9e37_79b9_7f4a_7c15)
}

/// Second permutation hash (skip), independent of [`h1`].
#[inline]
fn h2(key: u64) -> u64 {
    mix13(key ^ 0xc2b2_ae3d_27d4_eb4f)
}

/// Trial-division primality test (inputs are at most [`MAX_TABLE_SIZE`]).
fn is_prime(n: usize) -> bool {
    // `rem_euclid` rather than `%` keeps clippy's `manual_is_multiple_of`
    // quiet without needing `is_multiple_of` (Rust 1.87, above our MSRV).
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| n.rem_euclid(d) != 0)
}

/// Smallest prime `>= m`, with `m` clamped to `[2, MAX_TABLE_SIZE]` (itself prime).
fn prime_at_least(m: usize) -> usize {
    let mut p = m.clamp(2, MAX_TABLE_SIZE);
    while !is_prime(p) {
        p += 1;
    }
    p
}

/// Per-backend cursor into its permutation of the table slots.
#[derive(Clone, Copy)]
struct Cursor {
    /// Current position `(offset + next * skip) % M`.
    pos: u32,
    /// Permutation stride, in `1..M`.
    skip: u32,
}

impl Cursor {
    /// Starts backend `key`'s permutation of a table of prime size `m`.
    #[inline]
    fn new(key: u64, m: usize) -> Cursor {
        let m64 = m as u64;
        // m >= 2 and m <= MAX_TABLE_SIZE, so both values fit in u32.
        Cursor {
            pos: (h1(key) % m64) as u32,
            skip: (h2(key) % (m64 - 1) + 1) as u32,
        }
    }

    /// Claims the next free slot of this permutation for `backend`.
    ///
    /// The table must have a free slot; `m` being prime makes the permutation
    /// visit every slot, so this terminates.
    #[inline]
    fn claim(&mut self, table: &mut [u16], m: u32, backend: u16) {
        loop {
            let slot = self.pos as usize;
            self.pos += self.skip;
            if self.pos >= m {
                self.pos -= m;
            }
            if table[slot] == EMPTY {
                table[slot] = backend;
                return;
            }
        }
    }
}

/// Sentinel for an unfilled slot during construction (never a valid index since `n <= 65535`).
const EMPTY: u16 = u16::MAX;

/// Weighted-fill scheduling entry: backend `idx`'s `k`-th turn happens at time `k / w`.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Turn {
    k: u64,
    w: u64,
    idx: u16,
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the *earliest* turn (smallest k/w, then
        // smallest index) must compare greatest. k <= M and w < 2^32, so the
        // cross products fit in u64.
        let a = self.k * other.w;
        let b = other.k * self.w;
        b.cmp(&a).then_with(|| other.idx.cmp(&self.idx))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Maglev {
    /// Builds a table of size [`table_size_for`]`(keys.len())` for equally weighted backends.
    pub fn new(keys: &[u64]) -> Maglev {
        Maglev::with_size(keys, table_size_for(keys.len()))
    }

    /// Builds a table with size `m` rounded up to a prime (clamped to `[2, 65521]`); for tests.
    pub fn with_size(keys: &[u64], m: usize) -> Maglev {
        let keys = &keys[..keys.len().min(MAX_BACKENDS)];
        let n = keys.len();
        if n == 0 {
            return Maglev::default();
        }
        let m = prime_at_least(m);
        let mut cursors: Vec<Cursor> = keys.iter().map(|&k| Cursor::new(k, m)).collect();
        let mut table = vec![EMPTY; m].into_boxed_slice();
        let m32 = m as u32;
        let mut filled = 0usize;
        // Round-robin: each backend claims one slot per round until full.
        'fill: loop {
            for (i, c) in cursors.iter_mut().enumerate() {
                c.claim(&mut table, m32, i as u16);
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        Maglev { table, backends: n }
    }

    /// Builds a table where backend `i` gets slots proportional to `weights[i]` (missing weights count as 1).
    ///
    /// Backend `i`'s `k`-th turn is scheduled at time `k / weights[i]`; turns
    /// are taken in time order (ties by index), so weight-0 backends get no
    /// slots and equal weights reproduce [`Maglev::new`] exactly. If every
    /// weight is 0 the table is empty.
    pub fn new_weighted(keys: &[u64], weights: &[u32]) -> Maglev {
        let keys = &keys[..keys.len().min(MAX_BACKENDS)];
        let n = keys.len();
        let weight = |i: usize| weights.get(i).copied().unwrap_or(1);
        let mut heap: BinaryHeap<Turn> = (0..n)
            .filter(|&i| weight(i) > 0)
            .map(|i| Turn {
                k: 0,
                w: u64::from(weight(i)),
                idx: i as u16,
            })
            .collect();
        if heap.is_empty() {
            return Maglev {
                table: Box::default(),
                backends: n,
            };
        }
        let m = prime_at_least(table_size_for(n));
        let mut cursors: Vec<Cursor> = keys.iter().map(|&k| Cursor::new(k, m)).collect();
        let mut table = vec![EMPTY; m].into_boxed_slice();
        let m32 = m as u32;
        for _ in 0..m {
            // The heap is never empty here; rescheduling the earliest turn in
            // place costs a single sift-down when the `PeekMut` drops.
            let Some(mut turn) = heap.peek_mut() else {
                break;
            };
            cursors[turn.idx as usize].claim(&mut table, m32, turn.idx);
            turn.k += 1;
        }
        Maglev { table, backends: n }
    }

    /// Returns the backend index for a flow hash (`table[hash % M]`), or `None` if the table is empty.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u16> {
        let m = self.table.len() as u64;
        if m == 0 {
            return None;
        }
        self.table.get((hash % m) as usize).copied()
    }

    /// Returns the number of table slots `M` (0 for an empty table).
    #[inline]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Returns true if the table has no slots (no backends or all weights 0).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Returns the number of backends the table was built for (including weight-0 ones).
    #[inline]
    pub fn backend_count(&self) -> usize {
        self.backends
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| stable_key(format!("198.18.{}.{}:8080", i / 256, i % 256).as_bytes()))
            .collect()
    }

    fn counts(m: &Maglev, n: usize) -> Vec<usize> {
        let mut c = vec![0usize; n];
        for &b in m.table.iter() {
            c[b as usize] += 1;
        }
        c
    }

    /// Number of slots whose backend *identity* (key) differs between two tables.
    fn changed(a: &Maglev, ak: &[u64], b: &Maglev, bk: &[u64]) -> usize {
        assert_eq!(a.len(), b.len());
        a.table
            .iter()
            .zip(b.table.iter())
            .filter(|(&x, &y)| ak[x as usize] != bk[y as usize])
            .count()
    }

    /// Tiny deterministic PRNG for tests.
    fn rng(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix13(*seed)
    }

    #[test]
    fn table_sizes() {
        assert_eq!(table_size_for(0), 251);
        assert_eq!(table_size_for(1), 251);
        assert_eq!(table_size_for(2), 251);
        assert_eq!(table_size_for(3), 509);
        assert_eq!(table_size_for(10), 1021);
        assert_eq!(table_size_for(100), 16381);
        assert_eq!(table_size_for(1000), 65521);
        assert_eq!(table_size_for(usize::MAX), 65521);
        for m in TABLE_SIZES {
            assert!(is_prime(m), "{m}");
        }
    }

    #[test]
    fn distribution_equal_weights() {
        for n in [3usize, 10, 100] {
            let k = keys(n);
            let mg = Maglev::new(&k);
            let m = mg.len();
            assert_eq!(m, table_size_for(n));
            assert_eq!(mg.backend_count(), n);
            let (lo, hi) = (m / n, m.div_ceil(n));
            for (i, c) in counts(&mg, n).into_iter().enumerate() {
                assert!(
                    lo <= c && c <= hi,
                    "n={n} backend {i} owns {c}, want [{lo},{hi}]"
                );
            }
        }
    }

    #[test]
    fn minimal_disruption() {
        let n = 10;
        let k = keys(n + 1);
        let base = &k[..n];
        let m = table_size_for(n);
        let before = Maglev::with_size(base, m);
        let budget = ((1.0 / n as f64 + 0.05) * m as f64) as usize;

        // Remove each backend in turn.
        let mut worst_remove = 0;
        for r in 0..n {
            let mut less: Vec<u64> = base.to_vec();
            less.remove(r);
            let after = Maglev::with_size(&less, m);
            let total = changed(&before, base, &after, &less);
            let own = counts(&before, n)[r];
            let extra = total - own;
            println!("remove {r}: changed {total}/{m} (own share {own}, extra {extra})");
            assert!(total <= budget, "remove {r}: {total} > {budget}");
            assert!(
                extra * 20 <= m,
                "remove {r}: {extra} extra moves > 5% of {m}"
            );
            worst_remove = worst_remove.max(total);
        }

        // Add one backend.
        let after = Maglev::with_size(&k, m);
        let total = changed(&before, base, &after, &k);
        let gained = counts(&after, n + 1)[n];
        println!(
            "add: changed {total}/{m} (new backend gained {gained}, extra {})",
            total - gained
        );
        println!("worst remove: {worst_remove}/{m}, budget {budget}");
        assert!(total <= budget, "add: {total} > {budget}");
        assert!((total - gained) * 20 <= m, "add: too many extra moves");
    }

    #[test]
    fn determinism() {
        let k = keys(10);
        let a = Maglev::new(&k);
        let b = Maglev::new(&k);
        assert_eq!(a.table, b.table);
        assert_eq!(a, b);
        let mut seed = 42;
        for _ in 0..10_000 {
            let h = rng(&mut seed);
            assert_eq!(a.lookup(h), b.lookup(h));
        }
        // Pinned values guard against accidental changes to the hash functions.
        assert_eq!(stable_key(b""), fmix64(0xcbf2_9ce4_8422_2325));
        assert_ne!(stable_key(b"198.18.0.1:80"), stable_key(b"198.18.0.1:81"));
    }

    #[test]
    fn weighted() {
        let k = keys(4);
        let mg = Maglev::new_weighted(&k, &[2, 1, 0, 1]);
        let c = counts(&mg, 4);
        println!("weighted counts {c:?} of {}", mg.len());
        assert_eq!(c[2], 0);
        assert_eq!(c.iter().sum::<usize>(), mg.len());
        for one in [c[1], c[3]] {
            let ratio = c[0] as f64 / one as f64;
            assert!((ratio - 2.0).abs() <= 0.1, "ratio {ratio}");
        }
        // Equal weights reproduce the unweighted table.
        assert_eq!(Maglev::new_weighted(&k, &[5, 5, 5, 5]), Maglev::new(&k));
        assert_eq!(Maglev::new_weighted(&k, &[]), Maglev::new(&k));
        // All-zero weights: empty.
        let z = Maglev::new_weighted(&k, &[0, 0, 0, 0]);
        assert!(z.is_empty());
        assert_eq!(z.lookup(7), None);
        assert_eq!(z.backend_count(), 4);
        // Extreme weight spread still terminates and respects zero weights.
        let x = Maglev::new_weighted(&k, &[u32::MAX, 1, 0, u32::MAX]);
        assert_eq!(counts(&x, 4)[2], 0);
    }

    #[test]
    fn empty_and_edge_cases() {
        let e = Maglev::new(&[]);
        assert!(e.is_empty());
        assert_eq!(e.len(), 0);
        assert_eq!(e.backend_count(), 0);
        assert_eq!(e.lookup(0), None);
        assert_eq!(e.lookup(u64::MAX), None);
        assert_eq!(Maglev::new_weighted(&[], &[1]).lookup(1), None);

        // Single backend owns everything.
        let one = Maglev::new(&[123]);
        assert!(one.table.iter().all(|&b| b == 0));

        // Duplicate keys both get entries.
        let dup = Maglev::new(&[9, 9]);
        let c = counts(&dup, 2);
        assert!(c[0] > 0 && c[1] > 0, "{c:?}");

        // Odd sizes for with_size are rounded up to a prime.
        for m in [0, 1, 2, 4, 1000, 70_000] {
            let t = Maglev::with_size(&keys(3), m);
            assert!(is_prime(t.len()), "{m} -> {}", t.len());
            assert!(t.table.iter().all(|&b| b < 3));
        }

        // More backends than slots: fills without panicking.
        let t = Maglev::with_size(&keys(10), 5);
        assert_eq!(t.len(), 5);
        assert!(t.table.iter().all(|&b| b < 10));
    }

    #[test]
    fn max_backends() {
        let k: Vec<u64> = (0..MAX_BACKENDS as u64 + 10).collect();
        let mg = Maglev::new(&k);
        assert_eq!(mg.len(), MAX_TABLE_SIZE);
        assert_eq!(mg.backend_count(), MAX_BACKENDS);
        assert!(mg.table.iter().all(|&b| (b as usize) < MAX_BACKENDS));
        let w = Maglev::new_weighted(&k, &[3; 70_000]);
        assert!(w.table.iter().all(|&b| (b as usize) < MAX_BACKENDS));
    }

    /// Build-time measurement; run with `cargo test --release -p dataplane maglev -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn build_timing() {
        for n in [10usize, 100, 1000, 65535] {
            let k = keys(n);
            let iters = if n <= 100 { 2000 } else { 20 };
            let t = std::time::Instant::now();
            let mut sink = 0usize;
            for _ in 0..iters {
                sink += Maglev::new(std::hint::black_box(&k)).len();
            }
            let per = t.elapsed() / iters;
            println!("n={n} M={} build {per:?} ({sink})", table_size_for(n));
            let w: Vec<u32> = (0..n as u32).map(|i| i % 7 + 1).collect();
            let t = std::time::Instant::now();
            for _ in 0..iters {
                sink += Maglev::new_weighted(std::hint::black_box(&k), &w).len();
            }
            println!("n={n} weighted build {:?} ({sink})", t.elapsed() / iters);
        }
    }

    proptest! {
        #[test]
        fn lookup_in_range(
            ks in proptest::collection::vec(any::<u64>(), 1..300),
            hashes in proptest::collection::vec(any::<u64>(), 1..64),
        ) {
            let n = ks.len();
            let mg = Maglev::new(&ks);
            prop_assert_eq!(mg.len(), table_size_for(n));
            prop_assert!(mg.table.iter().all(|&b| (b as usize) < n));
            for h in hashes {
                let b = mg.lookup(h);
                prop_assert!(matches!(b, Some(i) if (i as usize) < n));
            }
        }

        #[test]
        fn weighted_lookup_in_range(
            kw in proptest::collection::vec((any::<u64>(), 0u32..5), 1..300),
            hashes in proptest::collection::vec(any::<u64>(), 1..64),
        ) {
            let (ks, ws): (Vec<u64>, Vec<u32>) = kw.into_iter().unzip();
            let n = ks.len();
            let mg = Maglev::new_weighted(&ks, &ws);
            let any_weight = ws.iter().any(|&w| w > 0);
            prop_assert_eq!(mg.is_empty(), !any_weight);
            for &b in mg.table.iter() {
                prop_assert!((b as usize) < n && ws[b as usize] > 0);
            }
            for h in hashes {
                match mg.lookup(h) {
                    Some(i) => prop_assert!((i as usize) < n && ws[i as usize] > 0),
                    None => prop_assert!(!any_weight),
                }
            }
        }
    }
}
