//! `sessionAffinity: ClientIP`, consistent across worker cores.
//!
//! Two layers:
//! 1. The backend for a client is chosen by Maglev over a hash of the client
//!    IP alone (not its port), so every core, and every node with the same
//!    table, makes the same choice with no shared state at all.
//! 2. A shared, lossy, lock-free memory of recent choices (one `AtomicU64`
//!    per slot: client tag, backend key, last-use time) keeps a client on its
//!    backend across table changes until `timeoutSeconds` passes without a
//!    new connection, or the backend goes — as kube-proxy does. A collision
//!    only evicts a memory; the fallback is layer 1.
//!
//! Workers read and write slots with relaxed atomics: no locks, no
//! allocation. Two cores racing on one client both compute the same layer-1
//! answer, so the race is benign.
use crate::addr::{fmix64, Addr, SockAddr};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The shared memory of affinity choices.
pub struct AffinityTable {
    slots: Box<[AtomicU64]>,
    mask: usize,
}

impl core::fmt::Debug for AffinityTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AffinityTable")
            .field("slots", &self.slots.len())
            .finish()
    }
}

/// Hash of a client IP for backend selection under ClientIP affinity.
#[inline]
pub fn client_hash(client: &Addr) -> u64 {
    let b = &client.0;
    let hi = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let lo = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
    fmix64(hi ^ fmix64(lo ^ 0x5bd1_e995))
}

/// A 16-bit identity of a backend, stored in affinity slots.
#[inline]
pub fn backend_key(b: &SockAddr) -> u16 {
    let h = client_hash(&b.addr) ^ (b.port as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (fmix64(h) >> 48) as u16
}

const TIME_BITS: u32 = 24;
const KEY_BITS: u32 = 16;

impl AffinityTable {
    /// A table of `slots` entries (rounded up to a power of two).
    pub fn new(slots: usize) -> Self {
        let n = slots.max(64).next_power_of_two();
        AffinityTable {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: n - 1,
        }
    }

    fn slot_and_tag(&self, service: &SockAddr, client: &Addr) -> (usize, u64) {
        let h = fmix64(client_hash(client) ^ client_hash(&service.addr) ^ service.port as u64);
        ((h as usize) & self.mask, (h >> 40) & 0xff_ffff)
    }

    /// The remembered backend key of `client` for `service`, if it was used
    /// within `timeout_s` seconds of `now_s`.
    #[inline]
    pub fn get(
        &self,
        service: &SockAddr,
        client: &Addr,
        now_s: u64,
        timeout_s: u32,
    ) -> Option<u16> {
        let (i, tag) = self.slot_and_tag(service, client);
        let e = self.slots[i].load(Relaxed);
        if e == 0 || e >> (KEY_BITS + TIME_BITS) != tag {
            return None;
        }
        let t = e & ((1 << TIME_BITS) - 1);
        let now = now_s & ((1 << TIME_BITS) - 1);
        let age = now.wrapping_sub(t) & ((1 << TIME_BITS) - 1);
        (age < timeout_s as u64).then_some(((e >> TIME_BITS) & 0xffff) as u16)
    }

    /// Remembers that `client` uses backend `key` for `service` at `now_s`.
    #[inline]
    pub fn put(&self, service: &SockAddr, client: &Addr, key: u16, now_s: u64) {
        let (i, tag) = self.slot_and_tag(service, client);
        let e = (tag << (KEY_BITS + TIME_BITS))
            | ((key as u64) << TIME_BITS)
            | (now_s & ((1 << TIME_BITS) - 1));
        self.slots[i].store(e.max(1), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_timeout() {
        let t = AffinityTable::new(1024);
        let svc = SockAddr::new(Addr::v4([198, 18, 100, 1]), 80);
        let c = Addr::v4([198, 18, 0, 2]);
        assert_eq!(t.get(&svc, &c, 100, 10), None);
        t.put(&svc, &c, 77, 100);
        assert_eq!(t.get(&svc, &c, 105, 10), Some(77));
        assert_eq!(t.get(&svc, &c, 109, 10), Some(77));
        assert_eq!(t.get(&svc, &c, 110, 10), None);
        // Other clients and other services do not see it.
        assert_eq!(t.get(&svc, &Addr::v4([198, 18, 0, 3]), 105, 10), None);
        assert_eq!(t.get(&SockAddr::new(svc.addr, 81), &c, 105, 10), None);
    }

    #[test]
    fn backend_keys_differ() {
        let a = backend_key(&SockAddr::new(Addr::v4([198, 18, 1, 11]), 8080));
        let b = backend_key(&SockAddr::new(Addr::v4([198, 18, 1, 12]), 8080));
        assert_ne!(a, b);
    }
}
