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

use crate::ids::MsgId;
use crate::window::valve::Mark;

#[derive(Clone, Copy, Debug)]
struct Hold {
    ts: i64,
    /// Emits of this message in flight (a spout may emit one message id more than once).
    count: u32,
    /// It failed and its replay has not been emitted yet.
    awaiting_replay: bool,
}

/// A task's watermark generator. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct EventClock {
    lag: i64,
    idle_timeout_ms: Option<i64>,
    /// Whether a failed message is replayed (and holds the watermark until it is).
    replayable: bool,
    max_ts: i64,
    holds: FxHashMap<MsgId, Hold>,
    /// The timestamps of `holds`, as a multiset, for their minimum.
    held: BTreeMap<i64, u32>,
    done: bool,
    /// Something was emitted since the last `take_marks`.
    active: bool,
    last_active_ms: Option<i64>,
    idle: bool,
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
            holds: FxHashMap::default(),
            held: BTreeMap::new(),
            done: false,
            active: false,
            last_active_ms: None,
            idle: false,
            sent: i64::MIN,
        }
    }

    /// A record with timestamp `ts` was emitted.
    #[inline]
    pub fn observe(&mut self, ts: i64) {
        self.max_ts = self.max_ts.max(ts);
        self.active = true;
    }

    /// An emit without a timestamp (the task is active).
    #[inline]
    pub fn touch(&mut self) {
        self.active = true;
    }

    /// Tracked message `msg` with timestamp `ts` (`i64::MIN` when it has none) was emitted.
    pub fn hold(&mut self, msg: MsgId, ts: i64) {
        match self.holds.get_mut(&msg) {
            Some(hold) => {
                hold.count += 1;
                hold.awaiting_replay = false;
                if ts < hold.ts {
                    dec(&mut self.held, hold.ts);
                    hold.ts = ts;
                    *self.held.entry(ts).or_insert(0) += 1;
                }
            }
            None => {
                self.holds.insert(
                    msg,
                    Hold {
                        ts,
                        count: 1,
                        awaiting_replay: false,
                    },
                );
                *self.held.entry(ts).or_insert(0) += 1;
            }
        }
    }

    /// Message `msg` no longer holds the watermark: its tree completed, or a window took it.
    pub fn release(&mut self, msg: MsgId) {
        self.settle(msg, false);
    }

    /// Message `msg` failed: a replayable source keeps holding it until it emits it again.
    pub fn failed(&mut self, msg: MsgId) {
        self.settle(msg, self.replayable);
    }

    fn settle(&mut self, msg: MsgId, await_replay: bool) {
        if let Some(hold) = self.holds.get_mut(&msg) {
            hold.count = hold.count.saturating_sub(1);
            hold.awaiting_replay |= await_replay;
            if hold.count == 0 && !hold.awaiting_replay {
                let ts = hold.ts;
                self.holds.remove(&msg);
                dec(&mut self.held, ts);
            }
        }
    }

    /// The source is exhausted: the timestamps no longer bound the watermark, the holds do.
    pub fn done(&mut self) {
        self.done = true;
    }

    /// Messages holding the watermark.
    pub fn held(&self) -> usize {
        self.holds.len()
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
            if !self.idle && !self.done && now_ms.saturating_sub(since) >= timeout {
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
        c.hold(MsgId(1), 1200);
        c.observe(5000);
        c.hold(MsgId(2), 5000);
        assert_eq!(c.current(), 1199);
        c.release(MsgId(2));
        assert_eq!(c.current(), 1199);
        c.release(MsgId(1));
        assert_eq!(c.current(), 4999);
    }

    #[test]
    fn a_failed_tree_holds_until_its_replay_completes() {
        let mut c = EventClock::new(Some(0), None, true);
        c.observe(1000);
        c.hold(MsgId(7), 1000);
        c.observe(9000);
        c.failed(MsgId(7));
        assert_eq!(c.current(), 999, "held until replayed");
        c.hold(MsgId(7), 1000); // the replay
        assert_eq!(c.current(), 999);
        c.release(MsgId(7));
        assert_eq!(c.current(), 8999);
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn a_source_that_cannot_replay_stops_holding_on_failure() {
        let mut c = EventClock::new(Some(0), None, false);
        c.observe(1000);
        c.hold(MsgId(7), 1000);
        c.observe(9000);
        c.failed(MsgId(7));
        assert_eq!(c.current(), 8999);
    }

    #[test]
    fn done_goes_to_the_end_of_time_once_nothing_is_held() {
        let mut c = EventClock::new(None, None, true);
        c.hold(MsgId(1), i64::MIN);
        c.done();
        assert_eq!(
            marks(&mut c, 0),
            [],
            "an untimed hold keeps it at the beginning"
        );
        c.release(MsgId(1));
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
    }

    #[test]
    fn it_never_moves_back() {
        let mut c = EventClock::new(Some(0), None, true);
        c.observe(100);
        assert_eq!(marks(&mut c, 0), [Mark::Time(99)]);
        c.hold(MsgId(1), 50); // out of order by more than the lag: late downstream anyway
        assert_eq!(c.current(), 99);
    }
}
