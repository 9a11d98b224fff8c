//! [`PendingTrees`]: a spout task's trees in flight, with their timeouts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tempest_dsl::{MsgId, RootId};

use crate::ack::TreeOutcome;

/// Buckets of the rotating timeout map: a tree times out between `timeout` and
/// `timeout * BUCKETS / (BUCKETS - 1)` after it started (Storm uses two buckets, T to 2T).
const BUCKETS: usize = 5;

/// How a tree in flight ended, from the spout's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// The tree completed; `latency` is from the emit to the completion.
    Acked {
        /// The spout's message id.
        msg: MsgId,
        /// The tree's complete latency.
        latency: Duration,
    },
    /// The tree failed.
    Failed {
        /// The spout's message id.
        msg: MsgId,
    },
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    msg: MsgId,
    started: Instant,
}

/// The trees a spout task has in flight. A pure core driven by the spout actor: trees go in on
/// emit, come out on the acker's verdict or, after the message timeout, through [`tick`].
///
/// Timeouts use a rotating map, as Storm's spout does, so memory is proportional to the trees
/// in flight, whatever the timeout.
///
/// [`tick`]: PendingTrees::tick
#[derive(Debug)]
pub struct PendingTrees {
    /// Newest first.
    buckets: VecDeque<FxHashMap<RootId, Pending>>,
    rotate_every: Duration,
    last_rotation: Instant,
    len: usize,
    /// Timed out by a rotation, not yet handed out by `tick`.
    expired: Vec<(RootId, MsgId)>,
}

impl PendingTrees {
    /// An empty table whose trees time out after `timeout` (at most a quarter more).
    pub fn new(timeout: Duration, now: Instant) -> Self {
        PendingTrees {
            buckets: (0..BUCKETS).map(|_| FxHashMap::default()).collect(),
            rotate_every: timeout / (BUCKETS as u32 - 1),
            last_rotation: now,
            len: 0,
            expired: Vec::new(),
        }
    }

    /// How often [`PendingTrees::tick`] should run.
    pub fn tick_interval(&self) -> Duration {
        self.rotate_every
    }

    /// Trees in flight, counting those that timed out and that `tick` has not handed out yet
    /// (their spout has not been told, so they are not settled).
    pub fn len(&self) -> usize {
        self.len + self.expired.len()
    }

    /// Whether no tree is in flight or waiting to be reported as timed out.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The trees in flight and their messages (those timed out and not handed out yet too).
    pub fn in_flight(&self) -> Vec<(RootId, MsgId)> {
        self.buckets
            .iter()
            .flat_map(|b| b.iter().map(|(root, p)| (*root, p.msg)))
            .chain(self.expired.iter().copied())
            .collect()
    }

    /// Whether tree `root` is in flight (not counting one timed out and not handed out yet).
    pub fn contains(&self, root: RootId) -> bool {
        self.buckets.iter().any(|b| b.contains_key(&root))
    }

    /// A tree started for message `msg`.
    pub fn insert(&mut self, root: RootId, msg: MsgId, now: Instant) {
        // Rotate first, so that the newest bucket is the one for `now`.
        self.rotate(now);
        if self.buckets[0]
            .insert(root, Pending { msg, started: now })
            .is_none()
        {
            self.len += 1;
        }
    }

    fn remove(&mut self, root: RootId) -> Option<Pending> {
        for bucket in &mut self.buckets {
            if let Some(p) = bucket.remove(&root) {
                self.len -= 1;
                return Some(p);
            }
        }
        None
    }

    /// The acker decided tree `root`. `None` if the tree is unknown: it already timed out (a
    /// late verdict is ignored, its message was failed and replayed) or it was reset.
    pub fn settle(&mut self, root: RootId, outcome: TreeOutcome, now: Instant) -> Option<Settled> {
        match outcome {
            TreeOutcome::Acked => self.remove(root).map(|p| Settled::Acked {
                msg: p.msg,
                latency: now.saturating_duration_since(p.started),
            }),
            TreeOutcome::Failed => self.remove(root).map(|p| Settled::Failed { msg: p.msg }),
            TreeOutcome::Parked => None,
            TreeOutcome::Reset => {
                // Restart the timeout: move it to the newest bucket, keeping its start time.
                if let Some(p) = self.remove(root) {
                    self.buckets[0].insert(root, p);
                    self.len += 1;
                }
                None
            }
        }
    }

    /// Takes out every tree in flight started before `at` (a task they went through was lost:
    /// they cannot complete) into `failed`, with their messages. Trees that timed out already
    /// are left to `tick`.
    pub fn fail_started_before(&mut self, at: Instant, failed: &mut Vec<(RootId, MsgId)>) {
        for bucket in &mut self.buckets {
            bucket.retain(|root, p| {
                let lost = p.started < at;
                if lost {
                    failed.push((*root, p.msg));
                }
                !lost
            });
        }
        self.len = self.buckets.iter().map(|b| b.len()).sum();
    }

    /// Rotates the buckets as time has passed; the trees that timed out go to `expired`, with
    /// their messages.
    pub fn tick(&mut self, now: Instant, expired: &mut Vec<(RootId, MsgId)>) {
        self.rotate(now);
        expired.append(&mut self.expired);
    }

    fn rotate(&mut self, now: Instant) {
        let behind = now.saturating_duration_since(self.last_rotation);
        if !self.rotate_every.is_zero() && behind >= self.rotate_every * BUCKETS as u32 {
            // Idle for longer than the whole wheel: everything is due.
            for bucket in &mut self.buckets {
                self.expired.extend(bucket.drain().map(|(r, p)| (r, p.msg)));
            }
            self.len = 0;
            self.last_rotation = now;
            return;
        }
        while now.saturating_duration_since(self.last_rotation) >= self.rotate_every {
            self.last_rotation += self.rotate_every;
            if let Some(oldest) = self.buckets.pop_back() {
                self.len -= oldest.len();
                self.expired
                    .extend(oldest.into_iter().map(|(r, p)| (r, p.msg)));
            }
            self.buckets.push_front(FxHashMap::default());
            if self.rotate_every.is_zero() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(400);

    #[test]
    fn acked_trees_report_their_latency() {
        let t0 = Instant::now();
        let mut p = PendingTrees::new(T, t0);
        p.insert(RootId(1), MsgId(10), t0);
        assert_eq!(p.len(), 1);
        let done = p.settle(RootId(1), TreeOutcome::Acked, t0 + Duration::from_millis(5));
        assert_eq!(
            done,
            Some(Settled::Acked {
                msg: MsgId(10),
                latency: Duration::from_millis(5)
            })
        );
        assert!(p.is_empty());
        assert_eq!(
            p.settle(RootId(1), TreeOutcome::Acked, t0),
            None,
            "only once"
        );
    }

    #[test]
    fn trees_time_out_between_t_and_five_quarters_of_t() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = PendingTrees::new(T, t0);
        p.insert(RootId(1), MsgId(1), t0);
        p.insert(RootId(2), MsgId(2), t0 + ms(150));
        let mut expired = Vec::new();
        p.tick(t0 + T - ms(1), &mut expired);
        assert!(expired.is_empty(), "nothing times out before T");
        p.tick(t0 + T * 5 / 4, &mut expired);
        assert_eq!(expired, [(RootId(1), MsgId(1))], "root 1 is due by 5/4 T");
        p.tick(t0 + ms(150) + T, &mut expired);
        assert_eq!(
            expired,
            [(RootId(1), MsgId(1))],
            "root 2 is not due before T after its start"
        );
        p.tick(t0 + ms(150) + T * 5 / 4, &mut expired);
        assert_eq!(expired, [(RootId(1), MsgId(1)), (RootId(2), MsgId(2))]);
        assert!(p.is_empty());
        // A verdict after the timeout is ignored.
        assert_eq!(p.settle(RootId(2), TreeOutcome::Acked, t0 + T * 2), None);
    }

    #[test]
    fn trees_started_before_a_loss_fail_at_once_and_later_ones_stay() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = PendingTrees::new(T, t0);
        // Across buckets: 1 and 2 before the loss, 3 after it.
        p.insert(RootId(1), MsgId(1), t0);
        p.insert(RootId(2), MsgId(2), t0 + T / 2);
        p.insert(RootId(3), MsgId(3), t0 + T / 2 + ms(10));
        let mut failed = Vec::new();
        p.fail_started_before(t0 + T / 2 + ms(5), &mut failed);
        failed.sort_unstable_by_key(|(root, _)| root.0);
        assert_eq!(failed, [(RootId(1), MsgId(1)), (RootId(2), MsgId(2))]);
        assert_eq!(p.len(), 1);
        assert!(p.contains(RootId(3)) && !p.contains(RootId(1)));
        // A late verdict for a failed tree is ignored; the one left still completes.
        assert_eq!(p.settle(RootId(1), TreeOutcome::Acked, t0 + T), None);
        assert!(p.settle(RootId(3), TreeOutcome::Acked, t0 + T).is_some());
        assert!(p.is_empty());
    }

    #[test]
    fn reset_restarts_the_timeout() {
        let t0 = Instant::now();
        let mut p = PendingTrees::new(T, t0);
        p.insert(RootId(1), MsgId(1), t0);
        let mut expired = Vec::new();
        p.tick(t0 + T * 3 / 4, &mut expired);
        assert_eq!(
            p.settle(RootId(1), TreeOutcome::Reset, t0 + T * 3 / 4),
            None
        );
        p.tick(t0 + T * 3 / 2, &mut expired);
        assert!(expired.is_empty(), "reset at 3/4 T: still alive at 3/2 T");
        p.tick(t0 + T * 2, &mut expired);
        assert_eq!(expired, [(RootId(1), MsgId(1))]);
    }

    #[test]
    fn a_timed_out_tree_is_pending_until_tick_reports_it() {
        let t0 = Instant::now();
        let mut p = PendingTrees::new(T, t0);
        p.insert(RootId(1), MsgId(1), t0);
        // A later insert rotates the wheel: tree 1 times out inside the table.
        p.insert(RootId(2), MsgId(2), t0 + T * 2);
        p.settle(RootId(2), TreeOutcome::Acked, t0 + T * 2);
        assert!(
            !p.is_empty(),
            "tree 1 timed out but its spout has not been told: not settled"
        );
        let mut expired = Vec::new();
        p.tick(t0 + T * 2, &mut expired);
        assert_eq!(expired, [(RootId(1), MsgId(1))]);
        assert!(p.is_empty());
    }

    #[test]
    fn failures_report_the_message() {
        let t0 = Instant::now();
        let mut p = PendingTrees::new(T, t0);
        p.insert(RootId(3), MsgId(30), t0);
        assert_eq!(
            p.settle(RootId(3), TreeOutcome::Failed, t0),
            Some(Settled::Failed { msg: MsgId(30) })
        );
    }
}
