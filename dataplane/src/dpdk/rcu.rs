//! Quiescent-state-based RCU for publishing immutable tables to workers.
//!
//! The writer swaps in a new `Box<T>` with one atomic store; readers (the
//! workers) load the pointer once per burst and announce a quiescent state
//! once per loop, after which they hold no reference. The writer frees the
//! old value only after every registered reader has announced a quiescent
//! state newer than the swap (or is offline). No reader ever locks,
//! allocates or touches a reference count.
//!
//! Borrowing makes misuse a compile error: [`Reader::read`] and
//! [`Reader::quiescent`] both take `&mut self`, so a reference obtained from
//! `read` cannot be alive across a quiescent point.
use core::marker::PhantomData;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use crossbeam_utils::CachePadded;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reader counter value meaning "offline: holds no reference".
const OFFLINE: u64 = u64::MAX;

/// The shared cell. See the module docs.
pub struct Rcu<T> {
    ptr: AtomicPtr<T>,
    epoch: AtomicU64,
    readers: Box<[CachePadded<AtomicU64>]>,
    claimed: Box<[CachePadded<AtomicU64>]>,
    _owns: PhantomData<Box<T>>,
}

// SAFETY: readers only get `&T` (needs T: Sync); the writer drops T possibly on
// another thread (needs T: Send).
unsafe impl<T: Send + Sync> Send for Rcu<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Rcu<T> {}

impl<T> Rcu<T> {
    /// A cell holding `init`, with room for `max_readers` readers.
    pub fn new(init: T, max_readers: usize) -> Arc<Self> {
        Arc::new(Rcu {
            ptr: AtomicPtr::new(Box::into_raw(Box::new(init))),
            epoch: AtomicU64::new(1),
            readers: (0..max_readers)
                .map(|_| CachePadded::new(AtomicU64::new(OFFLINE)))
                .collect(),
            claimed: (0..max_readers)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            _owns: PhantomData,
        })
    }

    /// Registers reader `id` (< max_readers). Each id can be held by one reader at a time.
    pub fn reader(self: &Arc<Self>, id: usize) -> Option<Reader<T>> {
        let c = self.claimed.get(id)?;
        if c.swap(1, Ordering::AcqRel) != 0 {
            return None;
        }
        self.readers[id].store(self.epoch.load(Ordering::Acquire), Ordering::SeqCst);
        core::sync::atomic::fence(Ordering::SeqCst);
        Some(Reader {
            rcu: self.clone(),
            id,
        })
    }

    /// Publishes `new`, waits until no reader can still see the old value
    /// (polling every `poll`, giving up after `timeout`), then drops it.
    /// Returns the time it took every reader to pass a quiescent point, or
    /// `Err(old_value)` on timeout (the old value is then leaked on purpose
    /// by the caller's choice; we hand it back instead of freeing it unsafely).
    pub fn publish(&self, new: T, poll: Duration, timeout: Duration) -> Result<Duration, Leaked> {
        let start = Instant::now();
        let old = self
            .ptr
            .swap(Box::into_raw(Box::new(new)), Ordering::AcqRel);
        let target = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        // Pairs with the fence in `Reader::online`: either a reader coming
        // online sees the new pointer, or we see it online (and wait).
        core::sync::atomic::fence(Ordering::SeqCst);
        loop {
            if self.all_passed(target) {
                // SAFETY: every reader has announced a quiescent state after the
                // swap, so none holds a reference to `old`; only we free it.
                drop(unsafe { Box::from_raw(old) });
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return Err(Leaked {
                    ptr: old as usize,
                    target,
                });
            }
            std::thread::sleep(poll);
        }
    }

    /// Tries again to free a value whose publish timed out.
    pub fn retry_free(&self, leaked: Leaked, timeout: Duration) -> Result<(), Leaked> {
        let start = Instant::now();
        loop {
            if self.all_passed(leaked.target) {
                // SAFETY: as in publish: every reader passed a quiescent point
                // after the pointer was unlinked, so none can hold it.
                drop(unsafe { Box::from_raw(leaked.ptr as *mut T) });
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(leaked);
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn all_passed(&self, target: u64) -> bool {
        self.readers.iter().all(|r| {
            let v = r.load(Ordering::Acquire);
            v == OFFLINE || v >= target
        })
    }
}

impl<T> Drop for Rcu<T> {
    fn drop(&mut self) {
        // SAFETY: no readers remain (each holds an Arc to us), so we own the value.
        drop(unsafe { Box::from_raw(self.ptr.load(Ordering::Acquire)) });
    }
}

/// A value whose publication timed out: some reader never passed a quiescent
/// point. Holding it keeps the memory alive; see [`Rcu::retry_free`].
#[derive(Debug)]
pub struct Leaked {
    ptr: usize,
    target: u64,
}

/// One reader's handle (one per worker).
pub struct Reader<T> {
    rcu: Arc<Rcu<T>>,
    id: usize,
}

impl<T> Reader<T> {
    /// The current value; valid until the next [`Reader::quiescent`] or [`Reader::offline`].
    #[inline(always)]
    pub fn read(&mut self) -> &T {
        // SAFETY: we are online (our counter is not OFFLINE after `online`/creation)
        // and have not announced a quiescent state since this load, so the writer
        // will not free this value while the returned borrow (tied to &mut self) lives.
        unsafe { &*self.rcu.ptr.load(Ordering::Acquire) }
    }

    /// Announces that this reader holds no reference (once per poll loop).
    #[inline(always)]
    pub fn quiescent(&mut self) {
        let e = self.rcu.epoch.load(Ordering::Acquire);
        let r = &self.rcu.readers[self.id];
        if r.load(Ordering::Relaxed) != e {
            r.store(e, Ordering::Release);
        }
    }

    /// Goes offline (e.g. before sleeping): writers need not wait for us.
    pub fn offline(&mut self) {
        self.rcu.readers[self.id].store(OFFLINE, Ordering::Release);
    }

    /// Comes back online after [`Reader::offline`].
    pub fn online(&mut self) {
        self.rcu.readers[self.id].store(self.rcu.epoch.load(Ordering::Acquire), Ordering::SeqCst);
        // Store-load ordering against the writer's pointer swap (see `publish`),
        // as DPDK's rte_rcu_qsbr_thread_online does.
        core::sync::atomic::fence(Ordering::SeqCst);
    }
}

impl<T> Drop for Reader<T> {
    fn drop(&mut self) {
        self.offline();
        self.rcu.claimed[self.id].store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    struct Counted(u64, Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn old_value_waits_for_readers() {
        let drops = Arc::new(AtomicUsize::new(0));
        let rcu = Rcu::new(Counted(1, drops.clone()), 2);
        let mut r = rcu.reader(0).unwrap();
        assert!(rcu.reader(0).is_none(), "one reader per id");
        assert_eq!(r.read().0, 1);
        // Reader 0 has not passed a quiescent point: publish must time out.
        let leaked = rcu.publish(
            Counted(2, drops.clone()),
            Duration::from_micros(10),
            Duration::from_millis(20),
        );
        assert!(leaked.is_err());
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        r.quiescent();
        rcu.retry_free(leaked.unwrap_err(), Duration::from_secs(1))
            .unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(r.read().0, 2);
        r.quiescent();
        // An offline reader does not block publication.
        r.offline();
        rcu.publish(
            Counted(3, drops.clone()),
            Duration::from_micros(10),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        r.online();
        assert_eq!(r.read().0, 3);
        drop(r);
        drop(rcu);
        assert_eq!(drops.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn concurrent_readers_never_see_freed_values() {
        let drops = Arc::new(AtomicUsize::new(0));
        let rcu = Rcu::new(Counted(0, drops.clone()), 2);
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = vec![];
        for id in 0..2 {
            let mut r = rcu.reader(id).unwrap();
            let stop = stop.clone();
            handles.push(std::thread::spawn(move || {
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    let v = r.read().0;
                    assert!(v >= last, "versions go forward");
                    last = v;
                    r.quiescent();
                }
                last
            }));
        }
        for v in 1..=200 {
            rcu.publish(
                Counted(v, drops.clone()),
                Duration::from_micros(1),
                Duration::from_secs(10),
            )
            .unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(drops.load(Ordering::SeqCst), 200);
    }
}
