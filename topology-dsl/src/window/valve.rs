//! [`Valve`]: a task's watermark from the watermarks of its input channels (Flink's
//! `StatusWatermarkValve`), and [`Mark`]: the control message that carries a watermark.
//!
//! A channel is one (upstream task, subscription) pair: one link. Each channel's watermark only
//! moves forward. The task's watermark is the minimum over the channels that are active and
//! aligned; an idle channel does not count. A channel that comes back from idleness with a
//! watermark behind the task's does not count either until it catches up (it is not aligned),
//! so the task's watermark never moves back. When every channel is idle the task's output goes
//! idle too, after moving to the largest watermark among them (no channel will advance it). An
//! ended channel counts as `i64::MAX`, so once every channel has ended the watermark is
//! `i64::MAX`. Data on an idle channel makes it active again.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::ids::TaskId;

/// A watermark control message, sent on a link in order with its batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mark {
    /// No tuple with a smaller timestamp follows on this link (late ones excepted). The
    /// channel is active.
    Time(i64),
    /// The sender is idle: the channel stops holding watermarks back until its next tuple or
    /// watermark.
    Idle,
    /// Checkpoint barrier `n` (see [`checkpoint`](crate::checkpoint)): what the sender sent
    /// before it belongs to checkpoint `n`. It says nothing of time: a valve ignores it.
    Barrier(u64),
}

/// One input channel of a task: the upstream task and the subscription it sends on.
pub type Channel = (TaskId, u16);

#[derive(Clone, Copy, Debug)]
struct State {
    watermark: i64,
    idle: bool,
    /// Its watermark has reached the task's, so it takes part in the minimum.
    aligned: bool,
}

/// A task's input watermarks. A pure core: see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Valve {
    channels: FxHashMap<Channel, State>,
    /// The task's watermark.
    output: i64,
    /// Whether the task's output is idle (every channel is).
    idle: bool,
    /// Marks for downstream not taken yet (a watermark, then idleness, at most).
    pending: Vec<Mark>,
}

impl Valve {
    /// A valve over `channels`, all active at the beginning of time.
    pub fn new(channels: &[Channel]) -> Valve {
        Valve {
            channels: channels
                .iter()
                .map(|&c| {
                    (
                        c,
                        State {
                            watermark: i64::MIN,
                            idle: false,
                            aligned: true,
                        },
                    )
                })
                .collect(),
            output: i64::MIN,
            idle: false,
            pending: Vec::new(),
        }
    }

    /// The task's watermark.
    pub fn current(&self) -> i64 {
        self.output
    }

    /// Whether every channel is idle.
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// The watermark a task forwards on its batches: the current one, or `i64::MIN` while
    /// every channel is idle (an idle task holds nobody back).
    pub fn forwarded(&self) -> i64 {
        if self.idle { i64::MIN } else { self.output }
    }

    /// The watermark of channel `c`, if the valve has it.
    pub fn channel(&self, c: Channel) -> Option<i64> {
        self.channels.get(&c).map(|s| s.watermark)
    }

    /// The smallest watermark among the active channels of upstream task `source`, if any:
    /// a task is only as far ahead as its slowest channel (its channels share one queue, so
    /// holding it back holds them all).
    pub fn source_watermark(&self, source: TaskId) -> Option<i64> {
        self.channels
            .iter()
            .filter(|((t, _), s)| *t == source && !s.idle)
            .map(|(_, s)| s.watermark)
            .min()
    }

    /// A mark arrived on channel `c`. Returns the task's new watermark if it moved.
    pub fn mark(&mut self, c: Channel, mark: Mark) -> Option<i64> {
        let before = self.output;
        let state = self.channels.get_mut(&c)?;
        match mark {
            Mark::Time(w) => {
                let was_idle = state.idle;
                state.idle = false;
                state.watermark = state.watermark.max(w);
                if state.watermark >= self.output {
                    state.aligned = true;
                }
                if was_idle && self.idle {
                    self.set_active();
                }
            }
            Mark::Idle => {
                state.idle = true;
                state.aligned = false;
            }
            Mark::Barrier(_) => return None,
        }
        self.recompute();
        (self.output > before).then_some(self.output)
    }

    /// Data arrived on channel `c`: an idle channel is active again (aligned only once its
    /// watermark catches up).
    pub fn data(&mut self, c: Channel) {
        if let Some(state) = self.channels.get_mut(&c) {
            if state.idle {
                state.idle = false;
                state.aligned = state.watermark >= self.output;
                if self.idle {
                    self.set_active();
                }
            }
        }
    }

    /// Every channel of upstream task `source` has ended. Returns the new watermark if it moved.
    pub fn end(&mut self, source: TaskId) -> Option<i64> {
        let channels: Vec<Channel> = self
            .channels
            .keys()
            .filter(|(t, _)| *t == source)
            .copied()
            .collect();
        let before = self.output;
        for c in channels {
            self.mark(c, Mark::Time(i64::MAX));
        }
        (self.output > before).then_some(self.output)
    }

    /// Moves the marks to send downstream (the task's watermark or idleness changed since the
    /// last call) into `out`, oldest first.
    pub fn take_marks(&mut self, out: &mut Vec<Mark>) {
        out.append(&mut self.pending);
    }

    /// Drops the marks not taken (a task that makes its own watermarks ignores these).
    pub fn discard_marks(&mut self) {
        self.pending.clear();
    }

    fn set_idle(&mut self) {
        // No live channel will advance the watermark: move it to the largest of theirs (an
        // ended channel's end of time is not theirs: the others may still send).
        let max = self
            .channels
            .values()
            .filter(|s| s.watermark != i64::MAX)
            .map(|s| s.watermark)
            .max()
            .unwrap_or(i64::MIN);
        self.advance(max);
        self.idle = true;
        self.pending.push(Mark::Idle);
    }

    fn set_active(&mut self) {
        self.idle = false;
        self.pending.clear();
        self.pending.push(Mark::Time(self.output));
    }

    /// The output from the channels. An ended channel (at the end of time) waits for nothing;
    /// the end of time comes only once every channel has ended.
    fn recompute(&mut self) {
        let live = |s: &&State| s.watermark != i64::MAX;
        if !self.channels.values().any(|s| live(&s)) {
            // Every channel ended (or a task without inputs): nothing to wait for.
            self.advance(i64::MAX);
            return;
        }
        if self.channels.values().filter(live).all(|s| s.idle) {
            if !self.idle {
                self.set_idle();
            }
            return;
        }
        if self.idle {
            return;
        }
        let min = self
            .channels
            .values()
            .filter(live)
            .filter(|s| !s.idle && s.aligned)
            .map(|s| s.watermark)
            .min();
        if let Some(min) = min {
            self.advance(min);
        }
    }

    fn advance(&mut self, to: i64) {
        if to > self.output {
            self.output = to;
            if !self.idle {
                // Only the latest watermark matters downstream.
                self.pending.retain(|m| !matches!(m, Mark::Time(_)));
                self.pending.push(Mark::Time(to));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Channel = (TaskId(1), 0);
    const B: Channel = (TaskId(2), 0);
    const B2: Channel = (TaskId(2), 1);

    fn taken(v: &mut Valve) -> Vec<Mark> {
        let mut out = Vec::new();
        v.take_marks(&mut out);
        out
    }

    #[test]
    fn the_slowest_channel_holds_the_watermark() {
        let mut v = Valve::new(&[A, B]);
        assert_eq!(
            v.mark(A, Mark::Time(5000)),
            None,
            "B is at the beginning of time"
        );
        assert_eq!(v.mark(B, Mark::Time(1200)), Some(1200));
        assert_eq!(taken(&mut v), [Mark::Time(1200)]);
        assert_eq!(v.mark(B, Mark::Time(9000)), Some(5000));
        assert_eq!(taken(&mut v), [Mark::Time(5000)]);
        assert_eq!(taken(&mut v), [], "taken once");
    }

    #[test]
    fn it_never_moves_back() {
        let mut v = Valve::new(&[A]);
        v.mark(A, Mark::Time(100));
        assert_eq!(v.mark(A, Mark::Time(50)), None);
        assert_eq!(v.current(), 100);
        assert_eq!(v.channel(A), Some(100));
    }

    #[test]
    fn an_idle_channel_stops_holding_it_back_and_rejoins_when_aligned() {
        let mut v = Valve::new(&[A, B]);
        v.mark(A, Mark::Time(10_000));
        assert_eq!(v.current(), i64::MIN);
        assert_eq!(v.mark(B, Mark::Idle), Some(10_000));
        assert!(!v.is_idle());
        // B's data comes back behind the watermark: it does not pull it back, nor hold it.
        v.data(B);
        assert_eq!(
            v.mark(A, Mark::Time(12_000)),
            Some(12_000),
            "B is not aligned yet"
        );
        v.mark(B, Mark::Time(11_000));
        assert_eq!(v.current(), 12_000);
        assert_eq!(
            v.mark(B, Mark::Time(13_000)),
            None,
            "aligned now: B holds nothing back yet"
        );
        assert_eq!(
            v.mark(A, Mark::Time(20_000)),
            Some(13_000),
            "B holds it now"
        );
    }

    #[test]
    fn all_idle_flushes_the_largest_and_goes_idle() {
        let mut v = Valve::new(&[A, B]);
        v.mark(A, Mark::Time(100));
        taken(&mut v);
        v.mark(A, Mark::Idle);
        assert_eq!(v.mark(B, Mark::Idle), Some(100));
        assert!(v.is_idle());
        assert_eq!(
            taken(&mut v),
            [Mark::Time(100), Mark::Idle],
            "the largest watermark, then idleness"
        );
        v.mark(B, Mark::Time(50));
        assert!(!v.is_idle());
        assert_eq!(v.current(), 100, "never backwards");
        assert_eq!(taken(&mut v), [Mark::Time(100)], "active again");
    }

    #[test]
    fn ended_sources_release_it() {
        let mut v = Valve::new(&[A, B, B2]);
        v.mark(A, Mark::Time(100));
        assert_eq!(v.end(TaskId(2)), Some(100), "both channels of task 2 ended");
        assert_eq!(v.end(TaskId(1)), Some(i64::MAX));
        assert_eq!(v.source_watermark(TaskId(1)), Some(i64::MAX));
        let mut v = Valve::new(&[A, B, B2]);
        v.mark(B, Mark::Time(9000));
        assert_eq!(
            v.source_watermark(TaskId(2)),
            Some(i64::MIN),
            "task 2 is as far ahead as its slowest channel"
        );
    }

    #[test]
    fn an_ended_channel_does_not_end_time_while_the_others_are_idle() {
        let mut v = Valve::new(&[A, B]);
        v.mark(A, Mark::Time(100));
        v.mark(B, Mark::Time(50));
        assert_eq!(v.end(TaskId(1)), None, "A ended: B alone holds it, at 50");
        v.mark(B, Mark::Idle);
        assert!(v.is_idle());
        assert_eq!(v.current(), 50, "B idle: not the end of time");
        v.mark(B, Mark::Time(70));
        assert_eq!(v.current(), 70);
        assert_eq!(v.end(TaskId(2)), Some(i64::MAX), "both ended");
    }

    #[test]
    fn unknown_channels_change_nothing() {
        let mut v = Valve::new(&[A]);
        assert_eq!(v.mark((TaskId(9), 0), Mark::Time(5)), None);
        v.data((TaskId(9), 0));
        assert_eq!(v.current(), i64::MIN);
    }
}
