//! Event-time tumbling window counts (benchmark workload W2; see the README).
//!
//! Event `i` (0 <= i < N) has `key = i % 1000` and `ts = max(0, i - (i*7919 % 51))`: 1000 events
//! per simulated second, up to 50 ms out of order. A windowed bolt counts events per key in
//! tumbling one-second event-time windows, with a 100 ms lag, keeping a count per window (not
//! its events); a sink counts the results and adds their counts up.

use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tempest_dsl::{
    Bolt, BuildErrors, Emitter, Guarantee, MsgId, Record, Spout, SpoutEmitter, SpoutStatus,
    TaskContext, TaskError, Topology, TopologyBuilder, TopologyConfig, Tuple, Window,
    WindowAggregate, WindowInfo, aggregated, bolt, spout,
};

/// Keys.
pub const KEYS: u64 = 1000;
/// Window length.
pub const WINDOW_MS: i64 = 1000;
/// Bounded out-of-orderness of the watermark.
pub const LAG_MS: u64 = 100;

/// The timestamp of event `i`.
pub fn event_ts(i: u64) -> i64 {
    let i = i as i64;
    (i - (i.wrapping_mul(7919) % 51)).max(0)
}

/// One event.
#[derive(Clone, Debug, Serialize, Deserialize, Record)]
pub struct Event {
    /// The key, `i % 1000`.
    pub key: u64,
    /// Event time in milliseconds.
    pub ts: i64,
}

/// One window result.
#[derive(Clone, Debug, Serialize, Deserialize, Record)]
pub struct WindowCount {
    /// The key.
    pub key: u64,
    /// The window's start.
    pub start: i64,
    /// The number of events in the window.
    pub count: u64,
}

/// Emits events `0..n`, each spout task those congruent to its index, and again those that
/// fail.
#[derive(Clone, Debug)]
pub struct EventSpout {
    n: u64,
    next: u64,
    step: u64,
    replay: Vec<u64>,
}

impl EventSpout {
    /// A spout of `n` events.
    pub fn new(n: u64) -> Self {
        EventSpout {
            n,
            next: 0,
            step: 1,
            replay: Vec::new(),
        }
    }
}

impl Spout for EventSpout {
    type Out = Event;
    const REPLAYABLE: bool = true;

    fn open(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.next = u64::from(ctx.task_index());
        self.step = u64::from(ctx.parallelism());
        Ok(())
    }

    fn next(&mut self, out: &mut SpoutEmitter<Event>) -> Result<SpoutStatus, TaskError> {
        let i = match self.replay.pop() {
            Some(i) => i,
            None if self.next >= self.n => return Ok(SpoutStatus::Done),
            None => {
                self.next += self.step;
                self.next - self.step
            }
        };
        out.emit_tracked(
            MsgId(i),
            Event {
                key: i % KEYS,
                ts: event_ts(i),
            },
        );
        Ok(SpoutStatus::Active)
    }

    fn fail(&mut self, msg: MsgId) {
        self.replay.push(msg.0);
    }
}

/// Counts the events of a window (the accumulator is the key and the count).
#[derive(Clone, Debug, Default)]
pub struct CountPerWindow;

impl WindowAggregate for CountPerWindow {
    type In = Event;
    type Acc = (u64, u64);
    type Out = WindowCount;

    fn add(&mut self, acc: &mut (u64, u64), event: &Event) {
        acc.0 = event.key;
        acc.1 += 1;
    }

    fn merge(&mut self, acc: &mut (u64, u64), other: (u64, u64)) {
        acc.1 += other.1;
    }

    fn emit(
        &mut self,
        acc: &(u64, u64),
        window: &WindowInfo,
        out: &mut Emitter<WindowCount>,
    ) -> Result<(), TaskError> {
        out.emit(WindowCount {
            key: acc.0,
            start: window.start().unwrap_or_default(),
            count: acc.1,
        });
        Ok(())
    }
}

/// What one sink task received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkTotals {
    /// Window results.
    pub results: u64,
    /// The sum of their counts.
    pub counted: u64,
}

/// Counts window results and adds their counts up; reports at the end of its input.
#[derive(Clone, Debug)]
pub struct ResultSink {
    totals: SinkTotals,
    report: mpsc::Sender<SinkTotals>,
}

impl Bolt for ResultSink {
    type In = WindowCount;
    type Out = ();

    fn execute(&mut self, t: Tuple<WindowCount>, _out: &mut Emitter<()>) -> Result<(), TaskError> {
        self.totals.results += 1;
        self.totals.counted += t.count;
        Ok(())
    }

    fn finish(&mut self, _out: &mut Emitter<()>) -> Result<(), TaskError> {
        let _ = self.report.send(self.totals);
        Ok(())
    }
}

/// A built W2 topology and the channel its sink tasks report on.
pub struct WindowCountJob {
    /// The topology.
    pub topology: Topology,
    /// One message per sink task.
    pub totals: mpsc::Receiver<SinkTotals>,
}

/// Builds W2 over `events` events with `parallelism` tasks per component.
pub fn topology(
    events: u64,
    parallelism: u32,
    guarantee: Guarantee,
    config: TopologyConfig,
) -> Result<WindowCountJob, BuildErrors> {
    let (tx, totals) = mpsc::channel();
    let window = Window::tumbling(Duration::from_millis(WINDOW_MS.unsigned_abs()))
        .event_time("ts")
        .lag(Duration::from_millis(LAG_MS));
    let mut t = TopologyBuilder::new("window-count");
    let events = t.add(spout("events", EventSpout::new(events)).parallelism(parallelism));
    let counts = t.add(
        aggregated("count", CountPerWindow, window)
            .parallelism(parallelism)
            .fields(&events, ["key"]),
    );
    t.add(
        bolt(
            "sink",
            ResultSink {
                totals: SinkTotals::default(),
                report: tx,
            },
        )
        .parallelism(parallelism)
        .local_or_shuffle(&counts.output),
    );
    let topology = t.guarantee(guarantee).config(config).build()?;
    Ok(WindowCountJob { topology, totals })
}

/// The number of distinct (key, window) pairs among events `0..n`, computed from the formula:
/// per key, timestamps only grow (consecutive events of a key are 1000 apart, at most 50 out
/// of order), so each change of window is a new pair.
pub fn expected_windows(n: u64) -> u64 {
    let mut last = vec![i64::MIN; KEYS as usize];
    let mut pairs = 0;
    for i in 0..n {
        let key = (i % KEYS) as usize;
        let window = event_ts(i).div_euclid(WINDOW_MS);
        if last[key] != window {
            last[key] = window;
            pairs += 1;
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_follow_the_formula() {
        assert_eq!(event_ts(0), 0);
        assert_eq!(event_ts(10), 0);
        assert_eq!(event_ts(100), 100 - (791_900 % 51));
        // Per key, timestamps grow.
        for k in 0..KEYS {
            let mut prev = i64::MIN;
            for j in 0..50 {
                let ts = event_ts(k + j * KEYS);
                assert!(ts > prev);
                prev = ts;
            }
        }
    }

    #[test]
    fn expected_windows_of_a_small_run() {
        // 3000 events: 3 simulated seconds, each key in windows 0, 1 and 2 (ts < 3000).
        let n = 3000;
        let mut pairs = std::collections::HashSet::new();
        for i in 0..n {
            pairs.insert((i % KEYS, event_ts(i).div_euclid(WINDOW_MS)));
        }
        assert_eq!(expected_windows(n), pairs.len() as u64);
    }
}
