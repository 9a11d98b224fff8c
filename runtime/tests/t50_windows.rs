//! Windowed bolts through the actor runtime: keyed event-time windows, new and expired tuples,
//! late tuples, acking through windows, processing time, idle inputs, count windows and
//! watermark alignment.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde::{Deserialize, Serialize};
use tempest_dsl::*;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Record)]
struct Reading {
    key: u64,
    ts: i64,
    value: i64,
}

/// Emits fixed readings (split over its tasks by position), tracked.
#[derive(Clone)]
struct Readings {
    all: Arc<Vec<Reading>>,
    next: usize,
    step: usize,
    /// Once done, wait for this flag (or a 10 s deadline) before saying Done.
    hold: Option<(Shared, Instant)>,
    log: Option<Arc<Mutex<Vec<String>>>>,
}

impl Readings {
    fn new(all: Vec<Reading>) -> Self {
        Readings {
            all: Arc::new(all),
            next: 0,
            step: 1,
            hold: None,
            log: None,
        }
    }
}

impl Spout for Readings {
    type Out = Reading;
    const REPLAYABLE: bool = true;
    fn open(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.next = ctx.task_index() as usize;
        self.step = ctx.parallelism() as usize;
        if let Some((_, started)) = &mut self.hold {
            *started = Instant::now();
        }
        Ok(())
    }
    fn next(&mut self, out: &mut SpoutEmitter<Reading>) -> Result<SpoutStatus, TaskError> {
        if let Some(r) = self.all.get(self.next) {
            out.emit_tracked(MsgId(self.next as u64), r.clone());
            self.next += self.step;
            return Ok(SpoutStatus::Active);
        }
        match &self.hold {
            Some((shared, started)) if !shared.flag.load(Ordering::SeqCst) => {
                if started.elapsed() < Duration::from_secs(10) {
                    return Ok(SpoutStatus::Idle);
                }
                // The deadline, not the flag, ended the wait: the test fails on this count.
                shared.count.fetch_add(1, Ordering::SeqCst);
                Ok(SpoutStatus::Done)
            }
            _ => Ok(SpoutStatus::Done),
        }
    }
    fn ack(&mut self, msg: MsgId) {
        if let Some(log) = &self.log {
            if let Ok(mut log) = log.lock() {
                log.push(format!("acked {}", msg.0));
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Record)]
struct Summary {
    key: u64,
    start: i64,
    end: i64,
    count: u64,
    sum: i64,
    new: Vec<i64>,
    expired: Vec<i64>,
}

/// Summarises whole windows.
#[derive(Clone, Default)]
struct Summer {
    log: Option<Arc<Mutex<Vec<String>>>>,
}

impl WindowedBolt for Summer {
    type In = Reading;
    type Out = Summary;
    fn on_window(
        &mut self,
        w: &WindowView<'_, Reading>,
        out: &mut Emitter<Summary>,
    ) -> Result<(), TaskError> {
        let first = w.tuples()[0];
        let s = Summary {
            key: first.key,
            start: w.info().start().unwrap_or(-1),
            end: w.info().end().unwrap_or(-1),
            count: w.len() as u64,
            sum: w.tuples().iter().map(|r| r.value).sum(),
            new: w.new_tuples().iter().map(|r| r.value).collect(),
            expired: w.expired_tuples().iter().map(|r| r.value).collect(),
        };
        if let Some(log) = &self.log {
            if let Ok(mut log) = log.lock() {
                for r in w.tuples() {
                    log.push(format!("fired {}", r.value));
                }
            }
        }
        out.emit(s);
        Ok(())
    }
}

/// Counts and sums incrementally.
#[derive(Clone)]
struct Tally;

impl WindowAggregate for Tally {
    type In = Reading;
    type Acc = (u64, u64, i64);
    type Out = Summary;
    fn add(&mut self, acc: &mut (u64, u64, i64), r: &Reading) {
        acc.0 = r.key;
        acc.1 += 1;
        acc.2 += r.value;
    }
    fn merge(&mut self, acc: &mut (u64, u64, i64), other: (u64, u64, i64)) {
        acc.1 += other.1;
        acc.2 += other.2;
    }
    fn emit(
        &mut self,
        acc: &(u64, u64, i64),
        w: &WindowInfo,
        out: &mut Emitter<Summary>,
    ) -> Result<(), TaskError> {
        out.emit(Summary {
            key: acc.0,
            start: w.start().unwrap_or(-1),
            end: w.end().unwrap_or(-1),
            count: acc.1,
            sum: acc.2,
            new: Vec::new(),
            expired: Vec::new(),
        });
        Ok(())
    }
}

fn readings(n: i64, keys: u64, spacing_ms: i64) -> Vec<Reading> {
    (0..n)
        .map(|i| Reading {
            key: i as u64 % keys,
            ts: i * spacing_ms,
            value: i,
        })
        .collect()
}

/// (key, window start) -> (count, sum), computed directly.
fn expected(all: &[Reading], size: i64) -> BTreeMap<(u64, i64), (u64, i64)> {
    let mut m: BTreeMap<(u64, i64), (u64, i64)> = BTreeMap::new();
    for r in all {
        let e = m.entry((r.key, r.ts.div_euclid(size) * size)).or_default();
        e.0 += 1;
        e.1 += r.value;
    }
    m
}

fn by_window(items: Vec<Summary>) -> BTreeMap<(u64, i64), (u64, i64)> {
    let mut m = BTreeMap::new();
    for s in items {
        let prev = m.insert((s.key, s.start), (s.count, s.sum));
        assert!(
            prev.is_none(),
            "window ({}, {}) fired twice",
            s.key,
            s.start
        );
    }
    m
}

#[test]
fn keyed_event_time_windows_are_exact_across_tasks() -> anyhow::Result<()> {
    let all = readings(3000, 7, 3);
    for aggregate in [false, true] {
        tracing::info!(
            aggregate,
            "--- 2 spout tasks, 2 windowed tasks keyed by `key`"
        );
        let (sink, rx) = Collect::<Summary>::new();
        let mut t = TopologyBuilder::new("keyed");
        let src = t.add(spout("readings", Readings::new(all.clone())).parallelism(2));
        let window = Window::tumbling(Duration::from_millis(100))
            .event_time("ts")
            .lag(Duration::from_millis(20));
        let out = if aggregate {
            t.add(
                aggregated("win", Tally, window)
                    .parallelism(2)
                    .fields(&src, ["key"]),
            )
            .output
        } else {
            t.add(
                windowed("win", Summer::default(), window)
                    .parallelism(2)
                    .fields(&src, ["key"]),
            )
            .output
        };
        t.add(bolt("sink", sink).shuffle(&out));
        let report = run(t.build()?, 2)?;
        let got = by_window(all_items(&rx));
        assert_eq!(got, expected(&all, 100));
        let win = report.component("win").expect("win");
        assert_eq!(win.metrics.window_fires, got.len() as u64);
        assert_eq!(win.metrics.late, 0);
    }
    Ok(())
}

#[test]
fn a_sliding_window_sees_its_new_and_expired_tuples() -> anyhow::Result<()> {
    // One key, ts 0, 100, ..., 900; windows of 400 every 200.
    let all = readings(10, 1, 100);
    let (sink, rx) = Collect::<Summary>::new();
    let mut t = TopologyBuilder::new("sliding");
    let src = t.add(spout("readings", Readings::new(all)));
    let window =
        Window::sliding(Duration::from_millis(400), Duration::from_millis(200)).event_time("ts");
    let w = t.add(windowed("win", Summer::default(), window).shuffle(&src));
    t.add(bolt("sink", sink).shuffle(&w.output));
    run(t.build()?, 2)?;
    let mut got = all_items(&rx);
    got.sort_by_key(|s| s.start);
    let view: Vec<(i64, Vec<i64>, Vec<i64>)> = got
        .iter()
        .map(|s| (s.start, s.new.clone(), s.expired.clone()))
        .collect();
    assert_eq!(
        view,
        [
            (-200, vec![0, 1], vec![]),
            (0, vec![2, 3], vec![]),
            (200, vec![4, 5], vec![0, 1]),
            (400, vec![6, 7], vec![2, 3]),
            (600, vec![8, 9], vec![4, 5]),
            (800, vec![], vec![6, 7]),
        ]
    );
    Ok(())
}

#[test]
fn late_tuples_go_to_the_late_stream_and_are_acked() -> anyhow::Result<()> {
    let mut all = readings(20, 1, 100); // ts 0..1900
    all.push(Reading {
        key: 0,
        ts: 50,
        value: 1000,
    }); // behind the watermark by then
    let (sink, rx) = Collect::<Summary>::new();
    let (late_sink, late_rx) = Collect::<Reading>::new();
    let mut t = TopologyBuilder::new("late");
    let src = t.add(spout("readings", Readings::new(all)));
    let window = Window::tumbling(Duration::from_millis(500))
        .event_time("ts")
        .late_to_side_stream();
    let w = t.add(aggregated("win", Tally, window).shuffle(&src));
    t.add(bolt("sink", sink).shuffle(&w.output));
    t.add(bolt("late-sink", late_sink).shuffle(&w.late));
    let report = run(
        t.guarantee(Guarantee::AtLeastOnce)
            .config(TopologyConfig {
                batch_size: 4,
                ..TopologyConfig::default()
            })
            .build()?,
        2,
    )?;
    assert_eq!(
        all_items(&late_rx),
        [Reading {
            key: 0,
            ts: 50,
            value: 1000
        }]
    );
    let got = by_window(all_items(&rx));
    assert_eq!(got.values().map(|v| v.0).sum::<u64>(), 20);
    let win = report.component("win").expect("win");
    assert_eq!(win.metrics.late, 1);
    let spout = report.component("readings").expect("spout");
    assert_eq!((spout.metrics.acked, spout.metrics.tree_failed), (21, 0));
    Ok(())
}

#[test]
fn tuples_are_acked_only_after_their_window_fired() -> anyhow::Result<()> {
    let all = readings(200, 3, 10);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (sink, rx) = Collect::<Summary>::new();
    let mut t = TopologyBuilder::new("acks");
    let mut spout_impl = Readings::new(all);
    spout_impl.log = Some(Arc::clone(&log));
    let src = t.add(spout("readings", spout_impl));
    let window = Window::tumbling(Duration::from_millis(250)).event_time("ts");
    let w = t.add(
        windowed(
            "win",
            Summer {
                log: Some(Arc::clone(&log)),
            },
            window,
        )
        .fields(&src, ["key"]),
    );
    t.add(bolt("sink", sink).shuffle(&w.output));
    let report = run(t.guarantee(Guarantee::AtLeastOnce).build()?, 2)?;
    assert_eq!(all_items(&rx).iter().map(|s| s.count).sum::<u64>(), 200);
    let log = log.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let at: HashMap<&str, usize> = log
        .iter()
        .enumerate()
        .map(|(i, e)| (e.as_str(), i))
        .collect();
    for i in 0..200 {
        let fired = at.get(format!("fired {i}").as_str()).copied();
        let acked = at.get(format!("acked {i}").as_str()).copied();
        match (fired, acked) {
            (Some(f), Some(a)) => assert!(f < a, "reading {i} acked before its window fired"),
            other => panic!("reading {i}: {other:?}"),
        }
    }
    assert_eq!(
        report.component("readings").map(|c| c.metrics.acked),
        Some(200)
    );
    Ok(())
}

/// Raises the shared flag when a window result arrives (which releases held spouts).
#[derive(Clone)]
struct Flagging(Shared);

impl Bolt for Flagging {
    type In = Summary;
    type Out = ();

    fn execute(&mut self, _t: Tuple<Summary>, _out: &mut Emitter<()>) -> Result<(), TaskError> {
        self.0.flag.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn processing_time_windows_fire_on_the_clock() -> anyhow::Result<()> {
    // The spout holds the run open until the sink has seen a window: only the clock can fire it.
    let shared = Shared::default();
    let mut spout_impl = Readings::new(readings(10, 1, 0));
    spout_impl.hold = Some((shared.clone(), Instant::now()));
    let flag = shared.clone();
    let mut t = TopologyBuilder::new("processing");
    let src = t.add(spout("readings", spout_impl));
    let w =
        t.add(aggregated("win", Tally, Window::tumbling(Duration::from_millis(50))).shuffle(&src));
    t.add(bolt("flag", Flagging(flag)).shuffle(&w.output));
    let report = run(t.build()?, 2)?;
    assert_eq!(shared.count(), 0, "no window fired before the deadline");
    assert!(
        report
            .component("win")
            .is_some_and(|c| c.metrics.window_fires >= 1)
    );
    Ok(())
}

#[test]
fn an_idle_input_stops_holding_the_watermark_back() -> anyhow::Result<()> {
    // `active` sends readings then waits for a result; `silent` never sends. Without the idle
    // timeout the watermark (the minimum over both) would not move until the end.
    let shared = Shared::default();
    let mut active = Readings::new(readings(50, 1, 10));
    active.hold = Some((shared.clone(), Instant::now()));
    let mut silent = Readings::new(Vec::new());
    silent.hold = Some((shared.clone(), Instant::now()));
    let mut t = TopologyBuilder::new("idle");
    let a = t.add(spout("active", active));
    let s = t.add(spout("silent", silent));
    let window = Window::tumbling(Duration::from_millis(100))
        .event_time("ts")
        .idle_timeout(Duration::from_millis(50));
    let w = t.add(aggregated("win", Tally, window).shuffle(&a).shuffle(&s));
    t.add(bolt("flag", Flagging(shared.clone())).shuffle(&w.output));
    run(t.build()?, 2)?;
    assert_eq!(shared.count(), 0, "the silent input held every window back");
    Ok(())
}

#[test]
fn count_windows_fire_per_key_and_never_partially() -> anyhow::Result<()> {
    for guarantee in [Guarantee::AtMostOnce, Guarantee::AtLeastOnce] {
        tracing::info!(%guarantee, "--- 23 readings over 2 keys, windows of 5");
        let all = readings(23, 2, 1); // key 0: 12 readings, key 1: 11
        let (sink, rx) = Collect::<Summary>::new();
        let mut t = TopologyBuilder::new("count");
        let src = t.add(spout("readings", Readings::new(all)));
        let window = Window::tumbling(Size::count(5));
        let w = t.add(windowed("win", Summer::default(), window).fields(&src, ["key"]));
        t.add(bolt("sink", sink).shuffle(&w.output));
        let started = Instant::now();
        let report = run(t.guarantee(guarantee).build()?, 2)?;
        let got = all_items(&rx);
        let per_key: Vec<(u64, u64)> = got.iter().map(|s| (s.key, s.count)).collect();
        assert_eq!(per_key, [(0, 5), (0, 5), (1, 5), (1, 5)]);
        // The 3 readings of partial windows never fire, but are acked at the end of the input
        // (not left to time out, which would replay them for ever).
        let spout = report.component("readings").expect("spout");
        if guarantee.is_tracked() {
            assert_eq!((spout.metrics.acked, spout.metrics.timed_out), (23, 0));
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the run waited for timeouts"
        );
    }
    Ok(())
}

#[test]
fn processing_time_windows_fire_at_the_end_of_a_tracked_input() -> anyhow::Result<()> {
    // A long processing-time window cannot fire on the clock in this run: it fires when the
    // input ends, before its tuples' trees time out.
    let all = readings(30, 3, 1);
    let (sink, rx) = Collect::<Summary>::new();
    let mut t = TopologyBuilder::new("processing-end");
    let src = t.add(spout("readings", Readings::new(all)));
    let window = Window::tumbling(Duration::from_secs(20));
    let w = t.add(aggregated("win", Tally, window).fields(&src, ["key"]));
    t.add(bolt("sink", sink).shuffle(&w.output));
    let started = Instant::now();
    let report = run(t.guarantee(Guarantee::AtLeastOnce).build()?, 2)?;
    assert_eq!(all_items(&rx).iter().map(|s| s.count).sum::<u64>(), 30);
    assert_eq!(
        report.component("readings").map(|c| c.metrics.acked),
        Some(30)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    Ok(())
}

#[test]
fn a_fast_upstream_waits_for_the_watermark() -> anyhow::Result<()> {
    // `fast` floods 20 s of event time at once; `slow` covers the same 20 s at about 20 ms of
    // event time per millisecond. Unaligned, `fast` would open all 2000 windows of 10 ms at
    // once; aligned, it may run at most the maximum drift (1 s here: 100 windows) ahead.
    #[derive(Clone)]
    struct Slow(i64);
    impl Spout for Slow {
        type Out = Reading;
        fn next(&mut self, out: &mut SpoutEmitter<Reading>) -> Result<SpoutStatus, TaskError> {
            if self.0 >= 20_000 {
                return Ok(SpoutStatus::Done);
            }
            out.emit(Reading {
                key: 1,
                ts: self.0,
                value: 1,
            });
            self.0 += 20;
            Ok(SpoutStatus::Idle)
        }
    }
    let fast = (0..40_000)
        .map(|i| Reading {
            key: 0,
            ts: i / 2,
            value: 1,
        })
        .collect();
    let (sink, rx) = Collect::<Summary>::new();
    let mut t = TopologyBuilder::new("alignment");
    let f = t.add(spout("fast", Readings::new(fast)));
    let s = t.add(spout("slow", Slow(0)));
    let window = Window::tumbling(Duration::from_millis(10)).event_time("ts");
    let w = t.add(aggregated("win", Tally, window).shuffle(&f).shuffle(&s));
    t.add(bolt("sink", sink).shuffle(&w.output));
    let running = cluster(2).start(t.build()?)?;
    let mut most_open = 0;
    while !running.wait_timeout(Duration::from_millis(1)) {
        most_open = most_open.max(
            running
                .component_metrics("win")
                .map_or(0, |m| m.open_windows),
        );
    }
    running.wait()?;
    let counted: u64 = all_items(&rx).iter().map(|s| s.count).sum();
    assert_eq!(counted, 40_000 + 1000);
    // Within the drift plus what is in flight: far below the 2000 windows of no alignment.
    assert!(most_open < 400, "{most_open} windows open at once");
    Ok(())
}

#[test]
fn alignment_cannot_deadlock_upstream_tasks_that_share_a_source() -> anyhow::Result<()> {
    // One spout feeds two pass-through tasks by key, one key each, and each key lives in its
    // own era of event time (the second key 10^6 ms later): the task holding it is always far
    // ahead. Holding it back blocks it, which blocks the spout, which starves the other task,
    // which the watermark waits for. The bolt's patience must keep the run going.
    #[derive(Clone)]
    struct PassReading;
    impl Bolt for PassReading {
        type In = Reading;
        type Out = Reading;
        fn execute(
            &mut self,
            t: Tuple<Reading>,
            out: &mut Emitter<Reading>,
        ) -> Result<(), TaskError> {
            out.emit(t.into_value());
            Ok(())
        }
    }
    // Two keys that the fields grouping sends to different pass tasks.
    let keys: Vec<u64> = (0..64u64).collect();
    let early = keys[0];
    let late_key = *keys
        .iter()
        .find(|&&k| {
            routing::reduce(stable_hash_of(&k), 2) != routing::reduce(stable_hash_of(&early), 2)
        })
        .expect("some key reaches the other task");
    let all: Vec<Reading> = (0..1200i64)
        .map(|i| {
            let (key, era) = if i % 2 == 0 {
                (early, 0)
            } else {
                (late_key, 1_000_000)
            };
            Reading {
                key,
                ts: era + (i / 2) * 10,
                value: i,
            }
        })
        .collect();
    let (sink, rx) = Collect::<Summary>::new();
    let mut t = TopologyBuilder::new("shared-source");
    let src = t.add(spout("readings", Readings::new(all.clone())));
    let pass = t.add(
        bolt("pass", PassReading)
            .parallelism(2)
            .fields(&src, ["key"]),
    );
    let window = Window::tumbling(Duration::from_millis(100)).event_time("ts");
    let w = t.add(aggregated("win", Tally, window).shuffle(&pass));
    t.add(bolt("sink", sink).shuffle(&w.output));
    let config = TopologyConfig {
        batch_size: 64,
        queue_batches: 1,
        ..TopologyConfig::default()
    };
    run(t.config(config).build()?, 2)?;
    assert_eq!(by_window(all_items(&rx)), expected(&all, 100));
    Ok(())
}
