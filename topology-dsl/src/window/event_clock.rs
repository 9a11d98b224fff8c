//! [`EventClock`]: the watermark generator of a task that assigns event time (a spout, or a
//! bolt that declares `.event_time(..)`), with the replay-aware hold of a spout.
//!
//! The watermark trails the largest timestamp emitted by the lag (`max_ts - lag - 1`, Flink's
//! bounded out-of-orderness). A spout's watermark is also held below the timestamp of every
//! tree it has in flight that no window has taken yet, and of every failed tree it has not
//! replayed yet, so a replay is never late because of its own failure. Once the source is done
//! the bound from timestamps goes to `i64::MAX`, and the holds alone remain. A task that emits
//! nothing for the idle timeout goes idle; its next emit makes it active again.
//!
//! A pure core: processing time comes in as an argument.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::ids::{MsgId, RootId};
use crate::window::valve::Mark;

/// A task's watermark generator. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct EventClock {
    lag: i64,
    idle_timeout_ms: Option<i64>,
    /// Whether a failed message is replayed (and holds the watermark until it is).
    replayable: bool,
    max_ts: i64,
    /// The largest timestamp observed since the last `take_seen`.
    seen: i64,
    /// Trees in flight that no window has taken yet, with their timestamps.
    trees: FxHashMap<RootId, i64>,
    /// Failed messages whose replay has not been emitted yet, with their timestamps.
    awaiting: FxHashMap<MsgId, i64>,
    /// The timestamps of `trees` and `awaiting`, as a multiset, for their minimum.
    held: BTreeMap<i64, u32>,
    done: bool,
    /// Something was emitted since the last `take_marks`.
    active: bool,
    last_active_ms: Option<i64>,
    idle: bool,
    /// Whether the source says it has nothing to emit (a spout's `Idle`): a task that emits
    /// nothing because it is held back (backpressure) is not idle.
    quiet: bool,
    sent: i64,
}

impl EventClock {
    /// A generator with this lag (`None` for a task whose output has no event time: its
    /// watermark is the beginning of time until it is done), idle timeout, and replay rule.
    pub fn new(lag_ms: Option<i64>, idle_timeout_ms: Option<i64>, replayable: bool) -> Self {
        EventClock {
            // `i64::MAX` as lag keeps `max_ts - lag - 1` at the beginning of time.
            lag: lag_ms.map_or(i64::MAX, |l| l.max(0)),
            idle_timeout_ms,
            replayable,
            max_ts: i64::MIN,
            seen: i64::MIN,
            trees: FxHashMap::default(),
            awaiting: FxHashMap::default(),
            held: BTreeMap::new(),
            done: false,
            active: false,
            last_active_ms: None,
            idle: false,
            quiet: true,
            sent: i64::MIN,
        }
    }

    /// A record with timestamp `ts` was emitted.
    #[inline]
    pub fn observe(&mut self, ts: i64) {
        self.max_ts = self.max_ts.max(ts);
        self.seen = self.seen.max(ts);
        self.active = true;
    }

    /// The largest timestamp observed since the last call, if any (for time skew).
    pub fn take_seen(&mut self) -> Option<i64> {
        let seen = std::mem::replace(&mut self.seen, i64::MIN);
        (seen != i64::MIN).then_some(seen)
    }

    /// An emit without a timestamp (the task is active).
    #[inline]
    pub fn touch(&mut self) {
        self.active = true;
    }

    /// Tree `root` of message `msg`, with timestamp `ts` (`i64::MIN` when it has none), was
    /// emitted. If it is the replay of a failed message, that message's hold passes to it.
    pub fn hold(&mut self, root: RootId, msg: MsgId, ts: i64) {
        match self.awaiting.remove(&msg) {
            // The replay keeps the earlier of the two timestamps held.
            Some(before) if before <= ts => {
                self.trees.insert(root, before);
            }
            Some(before) => {
                dec(&mut self.held, before);
                self.hold_tree(root, ts);
            }
            None => self.hold_tree(root, ts),
        }
    }

    fn hold_tree(&mut self, root: RootId, ts: i64) {
        self.trees.insert(root, ts);
        *self.held.entry(ts).or_insert(0) += 1;
    }

    /// Tree `root` no longer holds the watermark: it completed, or a window took it.
    pub fn release(&mut self, root: RootId) {
        if let Some(ts) = self.trees.remove(&root) {
            dec(&mut self.held, ts);
        }
    }

    /// Tree `root` of message `msg` failed. A replayable source keeps holding its timestamp
    /// until it emits the message again, unless a window had already taken it (its replay
    /// may then be late, as in Storm).
    pub fn failed(&mut self, root: RootId, msg: MsgId) {
        let Some(ts) = self.trees.remove(&root) else {
            return;
        };
        if self.replayable {
            if let Some(previous) = self.awaiting.insert(msg, ts) {
                dec(&mut self.held, previous);
            }
        } else {
            dec(&mut self.held, ts);
        }
    }

    /// The source is exhausted: the timestamps no longer bound the watermark, the holds do.
    pub fn done(&mut self) {
        self.done = true;
    }

    /// No replay will come (the source was drained): failed messages stop holding.
    pub fn no_replays(&mut self) {
        self.replayable = false;
        for (_, ts) in self.awaiting.drain() {
            dec(&mut self.held, ts);
        }
    }

    /// Message `msg` was emitted again but reached no task (it completed at once): it stops
    /// holding as a failed message.
    pub fn replayed_at_once(&mut self, msg: MsgId) {
        if let Some(ts) = self.awaiting.remove(&msg) {
            dec(&mut self.held, ts);
        }
    }

    /// Whether the source says it has nothing to emit now (only then can the task go idle).
    pub fn set_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
    }

    /// Whether the task is idle (it emitted nothing for the idle timeout) or done.
    pub fn is_idle_or_done(&self) -> bool {
        self.idle || self.done
    }

    /// Trees in flight that no window has taken yet.
    pub fn unparked(&self) -> usize {
        self.trees.len()
    }

    /// Trees and failed messages holding the watermark.
    pub fn held(&self) -> usize {
        self.trees.len() + self.awaiting.len()
    }

    /// The watermark now.
    pub fn current(&self) -> i64 {
        let bound = if self.done {
            i64::MAX
        } else {
            self.max_ts.saturating_sub(self.lag).saturating_sub(1)
        };
        let hold = self
            .held
            .first_key_value()
            .map_or(i64::MAX, |(&ts, _)| ts.saturating_sub(1));
        bound.min(hold).max(self.sent)
    }

    /// Moves the marks to send at processing time `now_ms` into `out`: the watermark if it
    /// moved, or idleness if the task emitted nothing for the idle timeout.
    pub fn take_marks(&mut self, now_ms: i64, out: &mut Vec<Mark>) {
        let wm = self.current();
        if self.active {
            self.active = false;
            self.last_active_ms = Some(now_ms);
            if self.idle {
                self.idle = false;
                self.sent = wm;
                out.push(Mark::Time(wm));
                return;
            }
        }
        if wm > self.sent {
            self.sent = wm;
            self.idle = false;
            out.push(Mark::Time(wm));
            return;
        }
        let since = *self.last_active_ms.get_or_insert(now_ms);
        if let Some(timeout) = self.idle_timeout_ms {
            if !self.idle && !self.done && self.quiet && now_ms.saturating_sub(since) >= timeout {
                self.idle = true;
                out.push(Mark::Idle);
            }
        }
    }
}

fn dec(held: &mut BTreeMap<i64, u32>, ts: i64) {
    if let Some(n) = held.get_mut(&ts) {
        *n -= 1;
        if *n == 0 {
            held.remove(&ts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(c: &mut EventClock, now: i64) -> Vec<Mark> {
        let mut out = Vec::new();
        c.take_marks(now, &mut out);
        out
    }

    #[test]
    fn the_watermark_trails_the_largest_timestamp() {
        let mut c = EventClock::new(Some(100), None, true);
        assert_eq!(marks(&mut c, 0), []);
        c.observe(5000);
        c.observe(4000);
        assert_eq!(marks(&mut c, 0), [Mark::Time(4899)]);
        assert_eq!(marks(&mut c, 1), [], "unchanged: nothing to send");
        c.done();
        assert_eq!(marks(&mut c, 2), [Mark::Time(i64::MAX)]);
    }

    #[test]
    fn a_pending_tree_holds_the_watermark_until_it_completes() {
        let mut c = EventClock::new(Some(0), None, true);
        c.observe(1200);
        c.hold(RootId(1), MsgId(1), 1200);
        c.observe(5000);
        c.hold(RootId(2), MsgId(2), 5000);
        assert_eq!(c.current(), 1199);
        c.release(RootId(2));
        assert_eq!(c.current(), 1199);
        c.release(RootId(1));
        assert_eq!(c.current(), 4999);
    }

    #[test]
    fn a_failed_tree_holds_until_its_replay_completes() {
        let mut c = EventClock::new(Some(0), None, true);
        c.observe(1000);
        c.hold(RootId(1), MsgId(7), 1000);
        c.observe(9000);
        c.failed(RootId(1), MsgId(7));
        assert_eq!(c.current(), 999, "held until replayed");
        c.hold(RootId(2), MsgId(7), 1000); // the replay, a new tree
        assert_eq!(c.current(), 999);
        assert_eq!(c.held(), 1);
        c.release(RootId(2));
        assert_eq!(c.current(), 8999);
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn a_source_that_cannot_replay_stops_holding_on_failure() {
        let mut c = EventClock::new(Some(0), None, false);
        c.observe(1000);
        c.hold(RootId(1), MsgId(7), 1000);
        c.observe(9000);
        c.failed(RootId(1), MsgId(7));
        assert_eq!(c.current(), 8999);
    }

    #[test]
    fn done_goes_to_the_end_of_time_once_nothing_is_held() {
        let mut c = EventClock::new(None, None, true);
        c.hold(RootId(1), MsgId(1), i64::MIN);
        c.done();
        assert_eq!(
            marks(&mut c, 0),
            [],
            "an untimed hold keeps it at the beginning"
        );
        c.release(RootId(1));
        assert_eq!(marks(&mut c, 0), [Mark::Time(i64::MAX)]);
    }

    #[test]
    fn idleness_after_the_timeout_and_back_on_the_next_emit() {
        let mut c = EventClock::new(Some(0), Some(100), true);
        c.observe(10);
        assert_eq!(marks(&mut c, 0), [Mark::Time(9)]);
        assert_eq!(marks(&mut c, 99), []);
        assert_eq!(marks(&mut c, 100), [Mark::Idle]);
        assert_eq!(marks(&mut c, 500), [], "once");
        c.observe(11);
        assert_eq!(marks(&mut c, 501), [Mark::Time(10)]);
        c.observe(11);
        assert_eq!(marks(&mut c, 502), [], "active, watermark unchanged");
        // Held back (not quiet), a task that emits nothing does not go idle.
        c.set_quiet(false);
        assert_eq!(marks(&mut c, 10_000), []);
        c.set_quiet(true);
        assert_eq!(marks(&mut c, 10_001), [Mark::Idle]);
    }

    #[test]
    fn failed_messages_stop_holding_when_no_replay_can_come() {
        let mut c = EventClock::new(Some(0), None, true);
        c.observe(1000);
        c.hold(RootId(1), MsgId(7), 1000);
        c.hold(RootId(2), MsgId(8), 1000);
        c.observe(9000);
        c.failed(RootId(1), MsgId(7));
        c.failed(RootId(2), MsgId(8));
        c.replayed_at_once(MsgId(7));
        assert_eq!(c.held(), 1, "7 was replayed to nobody");
        c.no_replays();
        assert_eq!(c.held(), 0, "drained: 8 will not be replayed");
        assert_eq!(c.current(), 8999);
        c.hold(RootId(3), MsgId(9), 9500);
        c.failed(RootId(3), MsgId(9));
        assert_eq!(c.held(), 0, "nor will a failure after the drain");
    }

    #[test]
    fn a_tree_a_window_took_does_not_hold_its_replay() {
        let mut c = EventClock::new(Some(0), None, true);
        c.observe(1000);
        c.hold(RootId(1), MsgId(7), 1000);
        c.release(RootId(1)); // parked
        c.observe(9000);
        c.failed(RootId(1), MsgId(7));
        assert_eq!(c.current(), 8999);
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn it_never_moves_back() {
        let mut c = EventClock::new(Some(0), None, true);
        c.observe(100);
        assert_eq!(marks(&mut c, 0), [Mark::Time(99)]);
        c.hold(RootId(1), MsgId(1), 50); // out of order by more than the lag: late anyway
        assert_eq!(c.current(), 99);
    }
}
