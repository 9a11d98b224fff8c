//! [`Tracker`]: the coordinator's side of the checkpoints of one run. A pure core: the time is
//! passed in, so a test replays it.
//!
//! One checkpoint is in flight at a time (as Flink's default). It is triggered `interval` after
//! the previous trigger, completes once every task that saves (the spouts and the stateful
//! tasks that own their state) saved it, fails when one cannot, and times out after
//! [`Tracker::timeout`]: a failed or timed-out checkpoint is counted and the next one follows
//! on schedule; the run goes on. A task that ended saves no more: later checkpoints carry what
//! it saved last (a spout that ended is restored at its end, not rewound to its start).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tempest_dsl::TaskId;

use crate::checkpoint::TaskSnapshot;

/// Counters of a run's checkpoints.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TrackerStats {
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    /// Trigger to completion of each completed checkpoint, in ms.
    pub(crate) durations_ms: Vec<f64>,
}

struct InFlight {
    id: u64,
    started: Instant,
    saved: BTreeMap<TaskId, TaskSnapshot>,
}

/// What [`Tracker::tick`] asks of the coordinator.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tick {
    /// Nothing now.
    Wait,
    /// Trigger checkpoint `id` at the spouts.
    Trigger(u64),
    /// Checkpoint `id` timed out (counted as failed).
    TimedOut(u64),
}

/// The checkpoints of one run.
pub(crate) struct Tracker {
    interval: Duration,
    expected: BTreeSet<TaskId>,
    next_id: u64,
    last_trigger: Instant,
    /// A checkpoint was asked for before its time (a spout waits to end on it).
    hurried: bool,
    in_flight: Option<InFlight>,
    /// What each task saved in the last completed checkpoint (or the one restored).
    last: BTreeMap<TaskId, TaskSnapshot>,
    /// What the tasks that ended saved last, carried into every later checkpoint.
    carried: BTreeMap<TaskId, TaskSnapshot>,
    stats: TrackerStats,
}

impl Tracker {
    /// A tracker that triggers every `interval` (the first one `interval` after `now`),
    /// numbering from `first_id`, waiting on the tasks `expected`; `restored` is what the
    /// checkpoint the run restored saved (empty for a fresh run).
    pub(crate) fn new(
        interval: Duration,
        first_id: u64,
        expected: BTreeSet<TaskId>,
        restored: BTreeMap<TaskId, TaskSnapshot>,
        now: Instant,
    ) -> Self {
        Tracker {
            interval,
            expected,
            next_id: first_id,
            last_trigger: now,
            hurried: false,
            in_flight: None,
            last: restored,
            carried: BTreeMap::new(),
            stats: TrackerStats::default(),
        }
    }

    /// How long a checkpoint may take before it is given up: ten intervals, at least a minute
    /// (a barrier waits behind the batches queued before it, and under backpressure that is
    /// as long as those take).
    pub(crate) fn timeout(&self) -> Duration {
        (self.interval * 10).max(Duration::from_secs(60))
    }

    /// How often a coordinator of checkpoints every `interval` should move time: a tenth of
    /// the interval, within 5 ms to 100 ms.
    pub(crate) fn tick_every(interval: Duration) -> Duration {
        (interval / 10).clamp(Duration::from_millis(5), Duration::from_millis(100))
    }

    /// Moves time to `now`.
    pub(crate) fn tick(&mut self, now: Instant) -> Tick {
        if let Some(f) = &self.in_flight {
            if now.saturating_duration_since(f.started) >= self.timeout() {
                let id = f.id;
                self.in_flight = None;
                self.stats.failed += 1;
                return Tick::TimedOut(id);
            }
            return Tick::Wait;
        }
        if self.expected.is_empty()
            || (!self.hurried && now.saturating_duration_since(self.last_trigger) < self.interval)
        {
            return Tick::Wait;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.last_trigger = now;
        self.hurried = false;
        self.in_flight = Some(InFlight {
            id,
            started: now,
            saved: BTreeMap::new(),
        });
        Tick::Trigger(id)
    }

    /// Triggers the next checkpoint at the next tick (once none is in flight), not an interval
    /// after the last.
    pub(crate) fn hurry(&mut self) {
        self.hurried = true;
    }

    /// Task `task` saved `snapshot` for checkpoint `id`; returns the checkpoint if that
    /// completed it (its id and what every task saved).
    pub(crate) fn saved(
        &mut self,
        task: TaskId,
        id: u64,
        snapshot: TaskSnapshot,
        now: Instant,
    ) -> Option<(u64, BTreeMap<TaskId, TaskSnapshot>)> {
        let f = self.in_flight.as_mut().filter(|f| f.id == id)?;
        if self.expected.contains(&task) {
            f.saved.insert(task, snapshot);
        }
        self.complete(now)
    }

    /// Task `task` could not save checkpoint `id`: the checkpoint fails.
    pub(crate) fn failed(&mut self, id: u64) -> bool {
        if self.in_flight.as_ref().is_some_and(|f| f.id == id) {
            self.in_flight = None;
            self.stats.failed += 1;
            return true;
        }
        false
    }

    /// Task `task` ended: it saves no more. Returns the checkpoint in flight if that was all
    /// it waited for.
    pub(crate) fn finished(
        &mut self,
        task: TaskId,
        now: Instant,
    ) -> Option<(u64, BTreeMap<TaskId, TaskSnapshot>)> {
        self.expected.remove(&task);
        if let Some(f) = &mut self.in_flight {
            f.saved.remove(&task);
        }
        if let Some(s) = self.last.get(&task) {
            self.carried.insert(task, s.clone());
        }
        self.complete(now)
    }

    fn complete(&mut self, now: Instant) -> Option<(u64, BTreeMap<TaskId, TaskSnapshot>)> {
        let f = self.in_flight.as_ref()?;
        if f.saved.len() < self.expected.len() || self.expected.is_empty() {
            return None;
        }
        let mut f = self.in_flight.take()?;
        self.stats.completed += 1;
        self.stats
            .durations_ms
            .push(now.saturating_duration_since(f.started).as_secs_f64() * 1000.0);
        for (task, s) in &self.carried {
            f.saved.entry(*task).or_insert_with(|| s.clone());
        }
        self.last = f.saved.clone();
        Some((f.id, f.saved))
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> &TrackerStats {
        &self.stats
    }

    /// A completed checkpoint could not be stored: count it as failed instead.
    pub(crate) fn not_stored(&mut self) {
        self.stats.completed = self.stats.completed.saturating_sub(1);
        self.stats.durations_ms.pop();
        self.stats.failed += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(b: u8) -> TaskSnapshot {
        TaskSnapshot::State(vec![b])
    }

    #[test]
    fn a_checkpoint_completes_once_every_task_saved_and_the_next_follows_on_schedule() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = Tracker::new(s, 5, [TaskId(0), TaskId(1)].into(), BTreeMap::new(), t0);
        assert_eq!(t.tick(t0 + s / 2), Tick::Wait);
        assert_eq!(t.tick(t0 + s), Tick::Trigger(5));
        assert_eq!(t.tick(t0 + s * 2), Tick::Wait, "one in flight at a time");
        assert_eq!(t.saved(TaskId(0), 5, state(0), t0 + s * 2), None);
        assert_eq!(t.saved(TaskId(1), 4, state(1), t0 + s * 2), None, "stale");
        let (id, saved) = t
            .saved(TaskId(1), 5, state(1), t0 + s * 2)
            .expect("complete");
        assert_eq!((id, saved.len()), (5, 2));
        assert_eq!(t.stats().completed, 1);
        assert_eq!(t.stats().durations_ms, vec![1000.0]);
        assert_eq!(t.tick(t0 + s * 2), Tick::Trigger(6), "overdue: at once");
        assert_eq!(t.saved(TaskId(0), 6, state(0), t0 + s * 2), None);
        let (id, _) = t
            .saved(TaskId(1), 6, state(1), t0 + s * 2)
            .expect("complete");
        assert_eq!(id, 6);
        assert_eq!(t.tick(t0 + s * 2), Tick::Wait, "not due");
        t.hurry();
        assert_eq!(t.tick(t0 + s * 2), Tick::Trigger(7), "asked for");
        assert_eq!(t.tick(t0 + s * 3), Tick::Wait, "in flight");
    }

    #[test]
    fn failures_and_timeouts_are_counted_and_do_not_stop_the_next() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = Tracker::new(s, 1, [TaskId(0), TaskId(1)].into(), BTreeMap::new(), t0);
        assert_eq!(t.tick(t0 + s), Tick::Trigger(1));
        assert!(t.failed(1));
        assert!(!t.failed(1), "once");
        assert_eq!(t.tick(t0 + s * 2), Tick::Trigger(2));
        let late = t0 + s * 2 + t.timeout();
        assert_eq!(t.tick(late), Tick::TimedOut(2));
        assert_eq!(t.stats().failed, 2);
        assert_eq!(t.tick(late), Tick::Trigger(3));
        // A task that ends no longer holds a checkpoint back.
        t.saved(TaskId(0), 3, state(0), late);
        let (_, saved) = t.finished(TaskId(1), late).expect("complete");
        assert_eq!(saved.len(), 1, "task 1 never saved: nothing to carry");
        assert_eq!(t.stats().completed, 1);
    }

    #[test]
    fn a_task_that_ended_is_carried_into_later_checkpoints() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let restored = BTreeMap::from([(TaskId(1), state(9))]);
        let mut t = Tracker::new(s, 4, [TaskId(0), TaskId(1)].into(), restored, t0);
        // Task 1 ends before any checkpoint of this run: the restored one's save is carried.
        assert!(t.finished(TaskId(1), t0).is_none());
        assert_eq!(t.tick(t0 + s), Tick::Trigger(4));
        let (_, saved) = t.saved(TaskId(0), 4, state(0), t0 + s).expect("complete");
        assert_eq!(saved.get(&TaskId(1)), Some(&state(9)));
        // Task 0 ends later: its last save is carried too.
        assert!(t.finished(TaskId(0), t0 + s).is_none());
        t.hurry();
        assert_eq!(t.tick(t0 + s), Tick::Wait, "nothing left to save");
    }
}
