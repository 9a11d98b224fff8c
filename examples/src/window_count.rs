//! Event-time tumbling window counts (benchmark workload W2; see the README).
//!
//! Event `i` (0 <= i < N) has `key = i % 1000` and `ts = max(0, i - (i*7919 % 51))`: 1000 events
//! per simulated second, up to 50 ms out of order. A windowed bolt counts events per key in
//! tumbling one-second event-time windows, with a 100 ms lag, keeping a count per window (not
//! its events); a sink counts the results, adds their counts up, and folds every (key, window,
//! count) into an order-independent fingerprint that the driver compares with the one computed
//! from the formula, so a window that fires twice, fires short or goes missing is caught.
//! With [`W2Options::through_bolt`] a pass-through bolt sits between the spout and the window
//! and fails a share of the events before it emits them (at-least-once replays them).

use std::sync::mpsc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
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

/// Passes events on, failing a share of them (before emitting anything) at random.
#[derive(Clone, Debug)]
pub struct FailingPass {
    fail_rate: f64,
    seed: u64,
    rng: SmallRng,
}

impl FailingPass {
    /// A pass-through bolt that fails `fail_rate` (0.0 to 1.0) of its events, drawing from a
    /// generator seeded with `seed` and the task index.
    pub fn new(fail_rate: f64, seed: u64) -> Self {
        FailingPass {
            fail_rate,
            seed,
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

impl Bolt for FailingPass {
    type In = Event;
    type Out = Event;

    fn prepare(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.rng = SmallRng::seed_from_u64(self.seed ^ u64::from(ctx.task_index()));
        Ok(())
    }

    fn execute(&mut self, t: Tuple<Event>, out: &mut Emitter<Event>) -> Result<(), TaskError> {
        if self.fail_rate > 0.0 && self.rng.random_bool(self.fail_rate) {
            return Err(TaskError::new("injected failure"));
        }
        out.emit(t.into_value());
        Ok(())
    }
}

/// One (key, window, count) term of a result fingerprint: a strong 64-bit mix, summed with
/// wrapping over all results, so the sum does not depend on their order.
pub fn fingerprint_term(key: u64, start: i64, count: u64) -> u64 {
    let mut x = key
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((start as u64).rotate_left(21))
        .wrapping_add(count.wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
    // splitmix64's finaliser.
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// What one sink task received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkTotals {
    /// Window results.
    pub results: u64,
    /// The sum of their counts.
    pub counted: u64,
    /// The wrapping sum of [`fingerprint_term`] over the results.
    pub fingerprint: u64,
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
        self.totals.fingerprint = self
            .totals
            .fingerprint
            .wrapping_add(fingerprint_term(t.key, t.start, t.count));
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

/// Options of W2 beyond the number of events.
#[derive(Clone, Debug)]
pub struct W2Options {
    /// Tasks per component.
    pub parallelism: u32,
    /// The delivery guarantee.
    pub guarantee: Guarantee,
    /// The topology config.
    pub config: TopologyConfig,
    /// A pass-through bolt between the spout and the window (shuffle grouping).
    pub through_bolt: bool,
    /// The share of events that bolt fails (replayed under at-least-once).
    pub fail_rate: f64,
    /// Seed of those failures.
    pub seed: u64,
}

impl Default for W2Options {
    fn default() -> Self {
        W2Options {
            parallelism: 2,
            guarantee: Guarantee::AtMostOnce,
            config: TopologyConfig::default(),
            through_bolt: false,
            fail_rate: 0.0,
            seed: 42,
        }
    }
}

/// Builds W2 over `events` events.
pub fn topology(events: u64, options: &W2Options) -> Result<WindowCountJob, BuildErrors> {
    let parallelism = options.parallelism;
    let (tx, totals) = mpsc::channel();
    let window = Window::tumbling(Duration::from_millis(WINDOW_MS.unsigned_abs()))
        .event_time("ts")
        .lag(Duration::from_millis(LAG_MS));
    let mut t = TopologyBuilder::new("window-count");
    let mut events = t.add(spout("events", EventSpout::new(events)).parallelism(parallelism));
    if options.through_bolt {
        events = t.add(
            bolt("pass", FailingPass::new(options.fail_rate, options.seed))
                .parallelism(parallelism)
                .shuffle(&events),
        );
    }
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
    let topology = t
        .guarantee(options.guarantee)
        .config(options.config.clone())
        .build()?;
    Ok(WindowCountJob { topology, totals })
}

/// What the results of events `0..n` must be, computed from the formula.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Distinct (key, window) pairs: one result each.
    pub results: u64,
    /// The wrapping sum of [`fingerprint_term`] over the exact (key, window, count) triples.
    pub fingerprint: u64,
}

/// The expected results of events `0..n`. Per key, timestamps only grow (consecutive events
/// of a key are 1000 apart, at most 50 out of order), so each change of window closes a pair.
pub fn expected(n: u64) -> Expected {
    // Per key: (window, events in it so far).
    let mut open = vec![(i64::MIN, 0u64); KEYS as usize];
    let mut e = Expected::default();
    let close = |key: u64, (window, count): (i64, u64), e: &mut Expected| {
        if count > 0 {
            e.results += 1;
            e.fingerprint =
                e.fingerprint
                    .wrapping_add(fingerprint_term(key, window * WINDOW_MS, count));
        }
    };
    for i in 0..n {
        let key = i % KEYS;
        let window = event_ts(i).div_euclid(WINDOW_MS);
        let slot = &mut open[key as usize];
        if slot.0 != window {
            close(key, *slot, &mut e);
            *slot = (window, 0);
        }
        slot.1 += 1;
    }
    for (key, slot) in open.into_iter().enumerate() {
        close(key as u64, slot, &mut e);
    }
    e
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
    fn expected_results_of_a_small_run() {
        // 3000 events: 3 simulated seconds, each key in windows 0, 1 and 2 (ts < 3000).
        let n = 3000;
        let mut counts = std::collections::HashMap::new();
        for i in 0..n {
            *counts
                .entry((i % KEYS, event_ts(i).div_euclid(WINDOW_MS) * WINDOW_MS))
                .or_insert(0u64) += 1;
        }
        let fingerprint = counts.iter().fold(0u64, |f, (&(k, s), &c)| {
            f.wrapping_add(fingerprint_term(k, s, c))
        });
        assert_eq!(
            expected(n),
            Expected {
                results: counts.len() as u64,
                fingerprint
            }
        );
    }

    #[test]
    fn the_fingerprint_sees_a_double_firing_and_a_missing_window() {
        let good = fingerprint_term(1, 0, 3).wrapping_add(fingerprint_term(2, 0, 1));
        // The same number of results and the same total count, but wrong windows.
        let swapped = fingerprint_term(1, 0, 1).wrapping_add(fingerprint_term(2, 0, 3));
        let twice = fingerprint_term(1, 0, 3).wrapping_add(fingerprint_term(1, 0, 1));
        assert_ne!(good, swapped);
        assert_ne!(good, twice);
    }
}
