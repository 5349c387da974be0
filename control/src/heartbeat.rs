//! Worker heartbeat: a worker that stops making progress is reported.
//!
//! Every worker counts its poll loops (`WorkerStats::loops`, one relaxed
//! store per loop, nothing else on the worker path). The control thread
//! samples the counters; a worker whose count has not moved for the stall
//! timeout is *stalled*: `/healthz` and `/livez` answer 503 and
//! `dpdk_kube_proxy_worker_stalled` is 1 until it moves again. A worker that
//! sleeps between idle polls still counts loops, so idle is not stalled.
use dataplane::stats::WorkerStats;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// What the control thread last saw of one worker.
#[derive(Debug, Default)]
struct Beat {
    loops: AtomicU64,
    /// When (ms, caller's clock) `loops` last moved.
    since_ms: AtomicU64,
    stalled: AtomicBool,
}

/// Progress tracking for all workers.
#[derive(Debug)]
pub struct Heartbeat {
    timeout_ms: u64,
    beats: Vec<Beat>,
}

/// A worker that stalled or resumed in one [`Heartbeat::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Worker index.
    pub worker: usize,
    /// True: it stopped making progress; false: it moved again.
    pub stalled: bool,
    /// Milliseconds since its loop counter last moved.
    pub silent_ms: u64,
}

impl Heartbeat {
    /// Tracks `workers` workers; `timeout_ms` 0 disables detection.
    pub fn new(workers: usize, timeout_ms: u64) -> Self {
        Heartbeat {
            timeout_ms,
            beats: (0..workers).map(|_| Beat::default()).collect(),
        }
    }

    /// The stall timeout in milliseconds (0: disabled).
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// Samples the workers' loop counters at `now_ms` and returns the
    /// workers whose state changed.
    pub fn observe(&self, workers: &[Arc<WorkerStats>], now_ms: u64) -> Vec<Transition> {
        let mut out = Vec::new();
        for (i, (b, w)) in self.beats.iter().zip(workers).enumerate() {
            let loops = w.loops.load(Relaxed);
            let since = b.since_ms.load(Relaxed);
            if loops != b.loops.load(Relaxed) || since == 0 {
                b.loops.store(loops, Relaxed);
                b.since_ms.store(now_ms.max(1), Relaxed);
                if b.stalled.swap(false, Relaxed) {
                    out.push(Transition {
                        worker: i,
                        stalled: false,
                        silent_ms: now_ms.saturating_sub(since),
                    });
                }
                continue;
            }
            let silent = now_ms.saturating_sub(since);
            if self.timeout_ms > 0 && silent > self.timeout_ms && !b.stalled.swap(true, Relaxed) {
                out.push(Transition {
                    worker: i,
                    stalled: true,
                    silent_ms: silent,
                });
            }
        }
        out
    }

    /// Workers currently stalled.
    pub fn stalled(&self) -> Vec<usize> {
        self.beats
            .iter()
            .enumerate()
            .filter(|(_, b)| b.stalled.load(Relaxed))
            .map(|(i, _)| i)
            .collect()
    }

    /// Whether worker `i` is stalled.
    pub fn is_stalled(&self, i: usize) -> bool {
        self.beats.get(i).is_some_and(|b| b.stalled.load(Relaxed))
    }

    /// Samples every `period` until the task is dropped, logging transitions.
    pub async fn run(
        self: Arc<Self>,
        workers: Arc<Vec<Arc<WorkerStats>>>,
        period: std::time::Duration,
    ) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for t in self.observe(&workers, crate::publisher::now_ms()) {
                if t.stalled {
                    tracing::error!(
                        worker = t.worker,
                        silent_ms = t.silent_ms,
                        "worker stopped making progress: unhealthy"
                    );
                } else {
                    tracing::warn!(
                        worker = t.worker,
                        silent_ms = t.silent_ms,
                        "worker making progress again"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(n: usize) -> Vec<Arc<WorkerStats>> {
        (0..n).map(|_| Arc::new(WorkerStats::default())).collect()
    }

    #[test]
    fn a_silent_worker_stalls_after_the_timeout_and_recovers() {
        let w = workers(2);
        let h = Heartbeat::new(2, 1000);
        assert!(h.observe(&w, 10_000).is_empty());
        // Worker 0 keeps looping, worker 1 is silent.
        for t in [10_400, 10_800, 11_000] {
            WorkerStats::add(&w[0].loops, 5);
            assert!(h.observe(&w, t).is_empty(), "at {t}");
        }
        assert!(h.stalled().is_empty(), "silent for exactly the timeout");
        WorkerStats::add(&w[0].loops, 5);
        let t = h.observe(&w, 11_001);
        assert_eq!(
            t,
            vec![Transition {
                worker: 1,
                stalled: true,
                silent_ms: 1001
            }]
        );
        assert_eq!(h.stalled(), vec![1]);
        assert!(h.is_stalled(1) && !h.is_stalled(0) && !h.is_stalled(7));
        // Reported once, not on every sample.
        WorkerStats::add(&w[0].loops, 5);
        assert!(h.observe(&w, 12_000).is_empty());
        assert_eq!(h.stalled(), vec![1]);
        // It moves again.
        WorkerStats::add(&w[1].loops, 1);
        let t = h.observe(&w, 12_500);
        assert_eq!(
            t,
            vec![Transition {
                worker: 1,
                stalled: false,
                silent_ms: 2500
            }]
        );
        assert!(h.stalled().is_empty());
    }

    #[test]
    fn zero_timeout_never_stalls() {
        let w = workers(1);
        let h = Heartbeat::new(1, 0);
        h.observe(&w, 1);
        assert!(h.observe(&w, 1_000_000).is_empty());
        assert!(h.stalled().is_empty());
    }
}
