//! [`TaskMetrics`]: the live counters of one task.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The live counters of one task. Written by the task, read by reporters.
#[derive(Debug, Default)]
pub struct TaskMetrics {
    /// Records emitted (one per emit call, whatever the fan-out).
    pub emitted: AtomicU64,
    /// Records executed (bolts).
    pub executed: AtomicU64,
    /// Records whose `execute` failed (bolts), or `next` errors (spouts).
    pub failed: AtomicU64,
    /// Records sent to this task and not executed yet: its queue depth.
    pub queued: AtomicI64,
    /// The deepest the queue has been.
    pub queue_max: AtomicU64,
    /// Spout messages whose tree completed.
    pub acked: AtomicU64,
    /// Spout messages whose tree failed (explicitly or by timeout).
    pub tree_failed: AtomicU64,
    /// Spout messages whose tree timed out.
    pub timed_out: AtomicU64,
    /// Spout trees in flight.
    pub pending: AtomicI64,
    /// The most spout trees in flight at once.
    pub pending_max: AtomicU64,
    /// Window firings (windowed bolts).
    pub window_fires: AtomicU64,
    /// Late tuples (windowed bolts).
    pub late: AtomicU64,
    /// Time skew (processing time minus event time, in ms) of the newest tuple at the task's
    /// last flush, for tasks that know event time (those that assign it, and event-time
    /// windows).
    pub time_skew_ms: AtomicI64,
    /// The largest time skew seen, in ms.
    pub time_skew_max_ms: AtomicI64,
    /// Skew samples whose event time was ahead of processing time (from the future).
    pub time_skew_future: AtomicU64,
    /// Windows open now.
    pub open_windows: AtomicU64,
    /// Replayed records a stateful task skipped under exactly-once (applied before: their
    /// stored outputs were emitted again).
    pub deduplicated: AtomicU64,
    /// Under exactly-once, the input ids a stateful task remembers to skip their replays (a
    /// gauge: those of a seekable source are forgotten once it commits past them).
    pub remembered: AtomicU64,
    /// A seekable spout's committed position under exactly-once, plus one (0: none).
    pub committed: AtomicU64,
}

impl TaskMetrics {
    /// Notes that `n` records were queued to this task (called by senders).
    #[inline]
    pub fn enqueue(&self, n: usize) {
        let depth = self.queued.fetch_add(n as i64, Ordering::Relaxed) + n as i64;
        self.queue_max
            .fetch_max(depth.max(0) as u64, Ordering::Relaxed);
    }

    /// Notes that `n` queued records were taken for execution.
    #[inline]
    pub fn dequeue(&self, n: usize) {
        self.queued.fetch_sub(n as i64, Ordering::Relaxed);
    }

    /// Whether nothing is queued to this task.
    #[inline]
    pub fn queue_empty(&self) -> bool {
        self.queued.load(Ordering::Relaxed) <= 0
    }

    /// Counts what executing (or committing) one batch did.
    pub fn note_outcome(&self, outcome: &tempest_dsl::engine::BatchOutcome) {
        TaskMetrics::add(&self.executed, outcome.executed);
        TaskMetrics::add(&self.failed, outcome.failed);
        TaskMetrics::add(&self.deduplicated, outcome.skipped);
        if let Some(n) = outcome.remembered {
            self.remembered.store(n, Ordering::Relaxed);
        }
    }

    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Publishes a windowed task's counters.
    pub fn set_window(&self, stats: &tempest_dsl::engine::WindowStats) {
        self.window_fires.store(stats.fires, Ordering::Relaxed);
        self.late.store(stats.late, Ordering::Relaxed);
        self.open_windows
            .store(stats.open_windows, Ordering::Relaxed);
    }

    /// Publishes a seekable spout's committed position.
    pub fn set_committed(&self, position: tempest_dsl::MsgId) {
        self.committed
            .store(position.0.saturating_add(1), Ordering::Relaxed);
    }

    /// A seekable spout's committed position, if it published one.
    pub fn committed(&self) -> Option<tempest_dsl::MsgId> {
        match self.committed.load(Ordering::Relaxed) {
            0 => None,
            p => Some(tempest_dsl::MsgId(p - 1)),
        }
    }

    /// Publishes a time-skew sample, in ms.
    pub fn set_skew(&self, skew_ms: i64) {
        self.time_skew_ms.store(skew_ms, Ordering::Relaxed);
        self.time_skew_max_ms.fetch_max(skew_ms, Ordering::Relaxed);
        if skew_ms < 0 {
            self.time_skew_future.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A consistent-enough copy of the counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            emitted: self.emitted.load(Ordering::Relaxed),
            executed: self.executed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed).max(0) as u64,
            queue_max: self.queue_max.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            tree_failed: self.tree_failed.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed).max(0) as u64,
            pending_max: self.pending_max.load(Ordering::Relaxed),
            window_fires: self.window_fires.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            time_skew_ms: self.time_skew_ms.load(Ordering::Relaxed),
            time_skew_max_ms: self.time_skew_max_ms.load(Ordering::Relaxed),
            time_skew_future: self.time_skew_future.load(Ordering::Relaxed),
            open_windows: self.open_windows.load(Ordering::Relaxed),
            deduplicated: self.deduplicated.load(Ordering::Relaxed),
            remembered: self.remembered.load(Ordering::Relaxed),
        }
    }
}

/// The counters of one task or, summed, of one component.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Records emitted.
    pub emitted: u64,
    /// Records executed.
    pub executed: u64,
    /// Records failed.
    pub failed: u64,
    /// Records queued now.
    pub queued: u64,
    /// The deepest queue seen (the largest of the tasks when summed).
    pub queue_max: u64,
    /// Spout messages acked.
    pub acked: u64,
    /// Spout messages failed.
    pub tree_failed: u64,
    /// Spout messages timed out.
    pub timed_out: u64,
    /// Spout trees in flight.
    pub pending: u64,
    /// The most trees in flight at once (the largest of the tasks when summed).
    pub pending_max: u64,
    /// Window firings.
    pub window_fires: u64,
    /// Late tuples.
    pub late: u64,
    /// Time skew of the last tuple in ms (the largest of the tasks when summed).
    pub time_skew_ms: i64,
    /// The largest time skew seen in ms.
    pub time_skew_max_ms: i64,
    /// Skew samples from the future (event time ahead of processing time).
    pub time_skew_future: u64,
    /// Windows open now.
    pub open_windows: u64,
    /// Replays skipped by stateful tasks (exactly-once).
    pub deduplicated: u64,
    /// Input ids stateful tasks remember now (exactly-once).
    pub remembered: u64,
}

impl MetricsSnapshot {
    /// Adds another task's counters (the queue maximum is the larger one).
    pub fn merge(&mut self, other: &MetricsSnapshot) {
        self.emitted += other.emitted;
        self.executed += other.executed;
        self.failed += other.failed;
        self.queued += other.queued;
        self.queue_max = self.queue_max.max(other.queue_max);
        self.acked += other.acked;
        self.tree_failed += other.tree_failed;
        self.timed_out += other.timed_out;
        self.pending += other.pending;
        self.pending_max = self.pending_max.max(other.pending_max);
        self.window_fires += other.window_fires;
        self.deduplicated += other.deduplicated;
        self.remembered += other.remembered;
        self.late += other.late;
        self.time_skew_ms = self.time_skew_ms.max(other.time_skew_ms);
        self.time_skew_max_ms = self.time_skew_max_ms.max(other.time_skew_max_ms);
        self.time_skew_future += other.time_skew_future;
        self.open_windows += other.open_windows;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_depth_tracks_its_maximum() {
        let m = TaskMetrics::default();
        m.enqueue(10);
        m.enqueue(5);
        m.dequeue(10);
        assert!(!m.queue_empty());
        m.dequeue(5);
        assert!(m.queue_empty());
        let s = m.snapshot();
        assert_eq!((s.queued, s.queue_max), (0, 15));
    }

    #[test]
    fn merge_sums_counts_and_keeps_the_deepest_queue() {
        let mut a = MetricsSnapshot {
            emitted: 1,
            queue_max: 7,
            ..Default::default()
        };
        a.merge(&MetricsSnapshot {
            emitted: 2,
            queue_max: 3,
            ..Default::default()
        });
        assert_eq!((a.emitted, a.queue_max), (3, 7));
    }
}
