//! A worker's neighbour (ARP / NDP) cache.
//!
//! Each worker keeps its own copy, pre-sized so that lookups and updates on
//! the packet path never allocate. What one worker learns from an ARP or
//! neighbour-discovery packet it passes to the others through lock-free
//! queues (see `worker`), so every copy converges.
use crate::addr::{Addr, AddrBuildHasher};
use crate::packet::ethernet::MacAddr;
use hashbrown::HashMap;

/// Ageing parameters, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborTimers {
    /// After this long without confirmation an entry is stale: still used, but re-probed.
    pub reachable: u64,
    /// After this long without confirmation an entry is forgotten.
    pub expire: u64,
    /// Minimum time between two solicitations for one address.
    pub retry: u64,
}

impl Default for NeighborTimers {
    fn default() -> Self {
        NeighborTimers {
            reachable: 30_000,
            expire: 120_000,
            retry: 1_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Incomplete,
    Reachable,
    Static,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    mac: MacAddr,
    port: u16,
    state: State,
    confirmed: u64,
    probed: u64,
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Use this MAC.
    Known(MacAddr),
    /// Use this MAC, and send a solicitation to refresh it.
    Stale(MacAddr),
    /// Unknown: send a solicitation (and drop the packet).
    Solicit,
    /// Unknown, a solicitation is already outstanding.
    Pending,
    /// Unknown, and the cache is full of live entries: nothing to solicit
    /// with (the packet is dropped and counted).
    Full,
}

/// A learned neighbour, as passed between workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborUpdate {
    /// The address.
    pub addr: Addr,
    /// Its MAC.
    pub mac: MacAddr,
    /// The port it answered on.
    pub port: u16,
}

/// See the module docs.
pub struct Neighbors {
    map: HashMap<Addr, Entry, AddrBuildHasher>,
    capacity: usize,
    timers: NeighborTimers,
    /// Bumped by every change to an entry: an answer of
    /// [`Neighbors::fresh_until`] holds while this stays the same.
    generation: u64,
    /// No eviction scan before this time (ms): a flood of new addresses
    /// against a full cache scans it at most once per millisecond.
    evict_at: u64,
    /// Unsolicited neighbours not learned because the cache was above
    /// its high-water mark.
    refused: u64,
}

impl Neighbors {
    /// A cache for up to `capacity` neighbours.
    pub fn new(capacity: usize, timers: NeighborTimers) -> Self {
        let capacity = capacity.max(16);
        Neighbors {
            map: HashMap::with_capacity_and_hasher(capacity * 2, AddrBuildHasher::default()),
            capacity,
            timers,
            generation: 0,
            evict_at: 0,
            refused: 0,
        }
    }

    /// Entries learned without asking (ARP/ND from any sender) stop being
    /// added at this size: the last quarter is kept for the addresses we
    /// resolve ourselves, so a flood of random senders cannot take the
    /// places a new backend or client needs.
    fn high_water(&self) -> usize {
        self.capacity - self.capacity / 4
    }

    /// Unsolicited neighbours refused because the cache was above its
    /// high-water mark (see [`Neighbors::learn`]).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The change counter (see [`Neighbors::fresh_until`]).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of entries (all states).
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Resolves `addr` for transmission at time `now`.
    #[inline]
    pub fn resolve(&mut self, addr: &Addr, now: u64) -> Resolution {
        let r = self.resolve_inner(addr, now);
        if !matches!(r, Resolution::Known(_)) {
            // Every other answer changed an entry (probe time, state, a new one).
            self.generation += 1;
        }
        r
    }

    #[inline]
    fn resolve_inner(&mut self, addr: &Addr, now: u64) -> Resolution {
        let t = self.timers;
        match self.map.get_mut(addr) {
            Some(e) => match e.state {
                State::Static => Resolution::Known(e.mac),
                State::Reachable => {
                    let age = now.saturating_sub(e.confirmed);
                    if age < t.reachable {
                        Resolution::Known(e.mac)
                    } else if age < t.expire {
                        if now.saturating_sub(e.probed) >= t.retry {
                            e.probed = now;
                            Resolution::Stale(e.mac)
                        } else {
                            Resolution::Known(e.mac)
                        }
                    } else {
                        e.state = State::Incomplete;
                        e.probed = now;
                        Resolution::Solicit
                    }
                }
                State::Incomplete => {
                    if now.saturating_sub(e.probed) >= t.retry {
                        e.probed = now;
                        Resolution::Solicit
                    } else {
                        Resolution::Pending
                    }
                }
            },
            None => {
                if self.map.len() >= self.capacity {
                    self.evict(now);
                }
                if self.map.len() >= self.capacity {
                    return Resolution::Full;
                }
                self.map.insert(
                    *addr,
                    Entry {
                        mac: MacAddr([0; 6]),
                        port: 0,
                        state: State::Incomplete,
                        confirmed: 0,
                        probed: now,
                    },
                );
                Resolution::Solicit
            }
        }
    }

    /// The MAC of `addr` when [`Neighbors::resolve`] would answer `Known`
    /// without changing anything (static, or reachable and not due for a
    /// probe), and how long that holds: `(mac, until)` — the same answer at
    /// every time before `until`, as long as [`Neighbors::generation`] does
    /// not change. No side effects. For caching next hops.
    #[inline]
    pub fn fresh_until(&self, addr: &Addr, now: u64) -> Option<(MacAddr, u64)> {
        let t = &self.timers;
        let e = self.map.get(addr)?;
        let until = match e.state {
            State::Static => u64::MAX,
            State::Reachable => {
                // fresh(now) <=> now < confirmed + reachable
                //             || (now < confirmed + expire && now < probed + retry)
                let a = e.confirmed.saturating_add(t.reachable);
                let b = e
                    .confirmed
                    .saturating_add(t.expire)
                    .min(e.probed.saturating_add(t.retry));
                a.max(b)
            }
            State::Incomplete => return None,
        };
        (now < until).then_some((e.mac, until))
    }

    /// The MAC of `addr` if it is known (any state but incomplete); no side effects.
    #[inline]
    pub fn known(&self, addr: &Addr) -> Option<MacAddr> {
        self.map
            .get(addr)
            .filter(|e| e.state != State::Incomplete)
            .map(|e| e.mac)
    }

    /// Records that `addr` is at `mac` on `port` (from an ARP/NDP packet).
    /// Returns true when this is worth telling the other workers: it changed
    /// what we knew, or it confirms an entry not confirmed for a retry
    /// interval (the answer to another worker's solicitation may land here:
    /// replies from one neighbour always reach the same queue, so a worker
    /// whose entry went stale learns only through us).
    /// An entry we have (also one we are resolving) is always updated; a new
    /// one only below the high-water mark (three quarters of the capacity).
    pub fn learn(&mut self, u: NeighborUpdate, now: u64) -> bool {
        self.generation += 1;
        if let Some(e) = self.map.get_mut(&u.addr) {
            if e.state == State::Static {
                return false;
            }
            let changed = e.state != State::Reachable || e.mac != u.mac || e.port != u.port;
            let share = changed || now.saturating_sub(e.confirmed) >= self.timers.retry;
            *e = Entry {
                mac: u.mac,
                port: u.port,
                state: State::Reachable,
                confirmed: now,
                probed: e.probed,
            };
            return share;
        }
        if self.map.len() >= self.high_water() {
            self.evict(now);
            if self.map.len() >= self.high_water() {
                self.refused += 1;
                return false;
            }
        }
        self.map.insert(
            u.addr,
            Entry {
                mac: u.mac,
                port: u.port,
                state: State::Reachable,
                confirmed: now,
                probed: 0,
            },
        );
        true
    }

    /// An answer another worker refused and passed on
    /// ([`crate::pipeline::Pipeline::take_answers`]): taken only to
    /// complete an entry this worker is resolving (incomplete), so a flood
    /// of spoofed answers neither adds nor changes anything else here.
    pub fn resolve_from_peer(&mut self, u: NeighborUpdate, now: u64) {
        if self
            .map
            .get(&u.addr)
            .is_some_and(|e| e.state == State::Incomplete)
        {
            self.learn(u, now);
        }
    }

    /// Refreshes the confirmation time of an entry we already have (gleaning
    /// from ARP traffic that does not concern us must not create entries).
    pub fn refresh(&mut self, u: NeighborUpdate, now: u64) -> bool {
        if self.map.contains_key(&u.addr) {
            self.learn(u, now)
        } else {
            false
        }
    }

    /// Installs a static entry (never aged).
    pub fn set_static(&mut self, addr: Addr, mac: MacAddr, port: u16) {
        if self
            .map
            .get(&addr)
            .is_some_and(|e| e.state == State::Static && e.mac == mac && e.port == port)
        {
            // Re-applied with every table: unchanged, so cached next hops stay.
            return;
        }
        self.generation += 1;
        self.map.insert(
            addr,
            Entry {
                mac,
                port,
                state: State::Static,
                confirmed: 0,
                probed: 0,
            },
        );
    }

    /// Drops expired and incomplete entries to make room. Control-rate only
    /// (called when the table is full).
    fn evict(&mut self, now: u64) {
        if now < self.evict_at {
            return;
        }
        self.evict_at = now + 1;
        self.generation += 1;
        let t = self.timers;
        self.map.retain(|_, e| match e.state {
            State::Static => true,
            State::Reachable => now.saturating_sub(e.confirmed) < t.expire,
            State::Incomplete => now.saturating_sub(e.probed) < t.retry,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Addr = Addr::v4([198, 18, 1, 11]);
    const M: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    #[test]
    fn miss_solicits_once_per_retry_interval() {
        let mut n = Neighbors::new(16, NeighborTimers::default());
        assert_eq!(n.resolve(&A, 0), Resolution::Solicit);
        assert_eq!(n.resolve(&A, 500), Resolution::Pending);
        assert_eq!(n.resolve(&A, 1000), Resolution::Solicit);
        assert!(n.learn(
            NeighborUpdate {
                addr: A,
                mac: M,
                port: 1
            },
            1100
        ));
        assert_eq!(n.resolve(&A, 1200), Resolution::Known(M));
        assert!(!n.learn(
            NeighborUpdate {
                addr: A,
                mac: M,
                port: 1
            },
            1300
        ));
    }

    #[test]
    fn entries_age_to_stale_then_expire() {
        let t = NeighborTimers::default();
        let mut n = Neighbors::new(16, t);
        n.learn(
            NeighborUpdate {
                addr: A,
                mac: M,
                port: 1,
            },
            0,
        );
        assert_eq!(n.resolve(&A, t.reachable - 1), Resolution::Known(M));
        assert_eq!(n.resolve(&A, t.reachable), Resolution::Stale(M));
        assert_eq!(n.resolve(&A, t.reachable + 1), Resolution::Known(M));
        assert_eq!(n.resolve(&A, t.reachable + t.retry), Resolution::Stale(M));
        n.learn(
            NeighborUpdate {
                addr: A,
                mac: M,
                port: 1,
            },
            t.reachable + t.retry,
        );
        assert_eq!(
            n.resolve(&A, t.reachable + t.retry + 1),
            Resolution::Known(M)
        );
        assert_eq!(
            n.resolve(&A, t.reachable + t.retry + t.expire),
            Resolution::Solicit
        );
    }

    #[test]
    fn static_entries_never_age_or_change() {
        let mut n = Neighbors::new(16, NeighborTimers::default());
        n.set_static(A, M, 0);
        assert_eq!(n.resolve(&A, u64::MAX / 2), Resolution::Known(M));
        assert!(!n.learn(
            NeighborUpdate {
                addr: A,
                mac: MacAddr([2, 0, 0, 0, 0, 9]),
                port: 0
            },
            5
        ));
        assert_eq!(n.resolve(&A, 6), Resolution::Known(M));
    }

    #[test]
    fn refresh_does_not_create() {
        let mut n = Neighbors::new(16, NeighborTimers::default());
        assert!(!n.refresh(
            NeighborUpdate {
                addr: A,
                mac: M,
                port: 0
            },
            0
        ));
        assert!(n.is_empty());
    }

    #[test]
    fn capacity_is_bounded() {
        let mut n = Neighbors::new(16, NeighborTimers::default());
        for i in 0..100u8 {
            n.learn(
                NeighborUpdate {
                    addr: Addr::v4([198, 18, 2, i]),
                    mac: M,
                    port: 0,
                },
                0,
            );
            let _ = n.resolve(&Addr::v4([198, 18, 3, i]), 0);
        }
        assert!(n.len() <= 16);
    }

    fn learn_v4(n: &mut Neighbors, a: [u8; 4], now: u64) -> bool {
        n.learn(
            NeighborUpdate {
                addr: Addr::v4(a),
                mac: M,
                port: 0,
            },
            now,
        )
    }

    #[test]
    fn a_flood_of_unsolicited_senders_leaves_room_to_resolve() {
        let mut n = Neighbors::new(16, NeighborTimers::default());
        // Random senders (ARP requests for us, unsolicited replies) fill
        // three quarters, no more; the rest are refused and counted.
        let learned = (0..100u8)
            .filter(|&i| learn_v4(&mut n, [198, 18, 2, i], 10))
            .count();
        assert_eq!(learned, 12);
        assert_eq!(n.refused(), 88);
        // Our own resolutions still get places, and their answers complete
        // them although the cache is above the mark.
        for i in 0..4u8 {
            assert_eq!(
                n.resolve(&Addr::v4([198, 18, 1, i]), 11),
                Resolution::Solicit
            );
            assert!(learn_v4(&mut n, [198, 18, 1, i], 12));
            assert_eq!(
                n.resolve(&Addr::v4([198, 18, 1, i]), 13),
                Resolution::Known(M)
            );
        }
        // Full of live entries: a new address is refused, not solicited
        // (no solicitation per packet).
        assert_eq!(n.resolve(&Addr::v4([198, 18, 3, 1]), 14), Resolution::Full);
        assert_eq!(n.len(), 16);
        // Once the flood's entries expire there is room again.
        let later = 14 + NeighborTimers::default().expire;
        assert_eq!(
            n.resolve(&Addr::v4([198, 18, 3, 1]), later),
            Resolution::Solicit
        );
    }

    #[test]
    fn confirmations_are_shared_once_per_retry_interval() {
        let t = NeighborTimers::default();
        let mut n = Neighbors::new(16, t);
        assert!(learn_v4(&mut n, [198, 18, 1, 1], 1000), "new");
        assert!(!learn_v4(&mut n, [198, 18, 1, 1], 1000 + t.retry - 1));
        // Unchanged, but last confirmed a retry interval ago: share it.
        assert!(learn_v4(&mut n, [198, 18, 1, 1], 1000 + 2 * t.retry));
        assert!(!learn_v4(&mut n, [198, 18, 1, 1], 1000 + 2 * t.retry + 1));
    }

    #[test]
    fn eviction_scans_at_most_once_per_millisecond() {
        let t = NeighborTimers::default();
        let mut n = Neighbors::new(16, t);
        for i in 0..16u8 {
            assert_eq!(
                n.resolve(&Addr::v4([198, 18, 1, i]), 0),
                Resolution::Solicit
            );
        }
        // All incomplete and past their retry: evictable, but the scan at
        // this millisecond already ran (and found nothing then).
        assert_eq!(n.resolve(&Addr::v4([198, 18, 3, 1]), 0), Resolution::Full);
        let g = n.generation();
        assert_eq!(n.resolve(&Addr::v4([198, 18, 3, 2]), 0), Resolution::Full);
        assert_eq!(n.generation(), g + 1, "only the Full answer, no new scan");
        assert_eq!(
            n.resolve(&Addr::v4([198, 18, 3, 3]), t.retry),
            Resolution::Solicit
        );
    }
}
