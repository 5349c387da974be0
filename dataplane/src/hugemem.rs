//! Fixed-capacity arrays for the worker's large tables, on huge pages
//! where the kernel gives them and with every page faulted in up front.
//!
//! A million sessions are ~150 MiB of index and slab per worker: read at
//! random, on 4 KiB pages, nearly every lookup also misses the TLB (a
//! page walk that is itself a chain of cache misses). [`HugeVec`] maps its
//! memory anonymously, aligned to 2 MiB, asks for transparent huge pages
//! (`madvise(MADV_HUGEPAGE)`, honoured when
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`)
//! and touches every page at creation, so the worker never takes a page
//! fault (nor a 2 MiB zeroing) on its path. Explicit hugetlbfs pages are
//! left to the EAL's mempools (taking reserved pages here could starve
//! them). Where the kernel has no huge page to give, the same mapping is
//! simply on base pages.
//!
//! Only for `Copy` element types (nothing to drop), allocated at control
//! time; never grows.
#![allow(unsafe_code)]
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

/// The size of the huge pages asked for (x86-64 and arm64 with 4 KiB base pages).
pub const HUGE_PAGE: usize = 2 << 20;
/// The base page size the up-front touch steps by.
const BASE_PAGE: usize = 4096;

/// A vector with a capacity fixed at creation (see the module docs).
pub struct HugeVec<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    cap: usize,
    /// The mapping (`ptr` is `map` rounded up to a huge page); null for
    /// zero-sized requests.
    map: *mut libc::c_void,
    map_len: usize,
}

// SAFETY: a HugeVec owns its elements like a Vec does; `T: Copy` has no
// drop glue and the raw pointers are never shared outside `&self`/`&mut self`.
unsafe impl<T: Copy + Send> Send for HugeVec<T> {}
// SAFETY: as above; shared access only hands out `&[T]`.
unsafe impl<T: Copy + Sync> Sync for HugeVec<T> {}

impl<T: Copy> HugeVec<T> {
    /// An empty vector with room for exactly `cap` elements, its memory
    /// mapped and faulted in now. Aborts like `Vec::with_capacity` when
    /// the memory cannot be had (a size the configuration allowed).
    pub fn with_capacity(cap: usize) -> Self {
        let size = cap
            .checked_mul(core::mem::size_of::<T>())
            .expect("HugeVec capacity overflow");
        assert!(
            core::mem::align_of::<T>() <= HUGE_PAGE,
            "HugeVec element alignment above 2 MiB"
        );
        if size == 0 {
            return HugeVec {
                ptr: NonNull::dangling(),
                len: 0,
                cap,
                map: core::ptr::null_mut(),
                map_len: 0,
            };
        }
        // Room to align the start to a huge page (so the first and last
        // partial huge pages are not wasted on base pages).
        let map_len = size.div_ceil(BASE_PAGE) * BASE_PAGE + HUGE_PAGE;
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked below.
        let map = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            std::alloc::handle_alloc_error(
                std::alloc::Layout::from_size_align(size, BASE_PAGE)
                    .unwrap_or(std::alloc::Layout::new::<T>()),
            );
        }
        let start = (map as usize).next_multiple_of(HUGE_PAGE);
        let used = size.next_multiple_of(BASE_PAGE);
        // SAFETY: [start, start + used) lies within the mapping (map_len has
        // a whole huge page of slack for the alignment). A refusal
        // (THP compiled out or disabled) only leaves base pages.
        unsafe {
            libc::madvise(start as *mut libc::c_void, used, libc::MADV_HUGEPAGE);
        }
        // Fault every page in now, not on the worker's path. The mapping is
        // zero-filled already; writing a zero keeps it so.
        let mut at = start;
        while at < start + used {
            // SAFETY: within the mapping, writable, and not yet handed out.
            unsafe { core::ptr::write_volatile(at as *mut u8, 0) };
            at += BASE_PAGE;
        }
        HugeVec {
            // SAFETY: `start` is inside a successful mapping, so non-null,
            // and a multiple of 2 MiB, so aligned for T (asserted above).
            ptr: unsafe { NonNull::new_unchecked(start as *mut T) },
            len: 0,
            cap,
            map,
            map_len,
        }
    }

    /// `n` copies of `value` (like `vec![value; n]`).
    pub fn from_elem(value: T, n: usize) -> Self {
        let mut v = Self::with_capacity(n);
        // Capacity n: every push fits.
        while v.len() < n && v.push(value).is_ok() {}
        v
    }

    /// Appends `value`, or gives it back when the vector is full (it never
    /// reallocates).
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), T> {
        if self.len == self.cap {
            return Err(value);
        }
        // SAFETY: len < cap, so the place is inside the mapping.
        unsafe { self.ptr.as_ptr().add(self.len).write(value) };
        self.len += 1;
        Ok(())
    }

    /// The fixed capacity.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes of this vector's mapping that the kernel backs with huge
    /// pages right now (`AnonHugePages` of its `/proc/self/smaps` entry):
    /// for start-up logs and tests, never the worker path. `None` when
    /// that cannot be read, or for an empty vector.
    pub fn huge_page_bytes(&self) -> Option<usize> {
        if self.map.is_null() {
            return None;
        }
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        // At most this vector's own pages (were its entry ever merged with
        // a neighbour's).
        let own = (self.cap * core::mem::size_of::<T>()).next_multiple_of(HUGE_PAGE);
        huge_bytes_in(&smaps, self.ptr.as_ptr() as usize).map(|b| b.min(own))
    }
}

/// The `AnonHugePages` (bytes) of the `smaps` entry whose range holds `addr`.
fn huge_bytes_in(smaps: &str, addr: usize) -> Option<usize> {
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
                continue;
            }
        }
        if inside {
            if let Some(rest) = line.strip_prefix("AnonHugePages:") {
                let kb: usize = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
                return Some(kb * 1024);
            }
        }
    }
    None
}

impl<T: Copy> Drop for HugeVec<T> {
    fn drop(&mut self) {
        if !self.map.is_null() {
            // SAFETY: the mapping this vector created, unmapped once.
            unsafe { libc::munmap(self.map, self.map_len) };
        }
    }
}

impl<T: Copy> Deref for HugeVec<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: the first `len` elements are initialised (push).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> DerefMut for HugeVec<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` is exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy + core::fmt::Debug> core::fmt::Debug for HugeVec<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_until_full_then_refuse_without_reallocating() {
        let mut v = HugeVec::<u64>::with_capacity(3);
        let at = v.as_ptr();
        for i in 0..3 {
            assert_eq!(v.push(i * 10), Ok(()));
        }
        assert_eq!(v.push(99), Err(99));
        assert_eq!(&v[..], &[0, 10, 20]);
        assert_eq!(v.as_ptr(), at);
        assert_eq!(v.capacity(), 3);
        v[1] = 11;
        assert_eq!(v.iter().sum::<u64>(), 31);
        assert_eq!(v.as_ptr() as usize % HUGE_PAGE, 0, "aligned to a huge page");
    }

    #[test]
    fn from_elem_and_empty() {
        #[derive(Clone, Copy, PartialEq, Debug)]
        #[repr(align(64))]
        struct Line([u32; 16]);
        let v = HugeVec::from_elem(Line([7; 16]), 1000);
        assert_eq!(v.len(), 1000);
        assert!(v.iter().all(|l| *l == Line([7; 16])));
        let e = HugeVec::<u32>::from_elem(1, 0);
        assert!(e.is_empty());
        assert_eq!(e.huge_page_bytes(), None);
        let z = HugeVec::<()>::from_elem((), 5);
        assert_eq!(z.len(), 5);
    }

    #[test]
    fn large_tables_are_on_transparent_huge_pages_when_the_kernel_offers_them() {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        let v = HugeVec::<u64>::from_elem(0, 16 << 20 >> 3);
        let huge = v.huge_page_bytes().expect("its smaps entry");
        if thp.contains("[never]") || thp.is_empty() {
            eprintln!("transparent huge pages are off here: {huge} bytes");
            return;
        }
        // 16 MiB aligned to 2 MiB: at least most of it on huge pages (the
        // kernel may fall back for some when memory is fragmented).
        assert!(
            huge >= 8 << 20,
            "only {huge} bytes of 16 MiB on huge pages (THP: {thp})"
        );
    }

    #[test]
    fn smaps_parsing() {
        let smaps = "\
7f0000000000-7f0000400000 rw-p 00000000 00:00 0
Size:               4096 kB
AnonHugePages:      2048 kB
7f0000400000-7f0000401000 rw-p 00000000 00:00 0
AnonHugePages:         0 kB
";
        assert_eq!(huge_bytes_in(smaps, 0x7f00_0010_0000), Some(2 << 20));
        assert_eq!(huge_bytes_in(smaps, 0x7f00_0040_0000), Some(0));
        assert_eq!(huge_bytes_in(smaps, 0x1000), None);
    }
}
