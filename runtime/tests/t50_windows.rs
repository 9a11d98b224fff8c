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
use tempest_runtime::RunReport;

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
    /// Emitted once the flag is up (after the hold), before Done.
    after_flag: Vec<Reading>,
    /// Positions of failed messages, emitted again first.
    replay: Vec<usize>,
    log: Option<Arc<Mutex<Vec<String>>>>,
}

impl Readings {
    fn new(all: Vec<Reading>) -> Self {
        Readings {
            all: Arc::new(all),
            next: 0,
            step: 1,
            hold: None,
            after_flag: Vec::new(),
            replay: Vec::new(),
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
        if let Some(i) = self.replay.pop() {
            out.emit_tracked(MsgId(i as u64), self.all[i].clone());
            return Ok(SpoutStatus::Active);
        }
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
            _ => match self.after_flag.pop() {
                Some(r) => {
                    let id = (self.all.len() + self.after_flag.len()) as u64;
                    out.emit_tracked(MsgId(id), r);
                    Ok(SpoutStatus::Active)
                }
                None => Ok(SpoutStatus::Done),
            },
        }
    }
    fn fail(&mut self, msg: MsgId) {
        let i = msg.0 as usize;
        if i < self.all.len() {
            self.replay.push(i);
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
    // 20 readings (ts 0..1900), then, once a window has fired, one at ts 50: behind the
    // watermark by then.
    let shared = Shared::default();
    let mut readings_spout = Readings::new(readings(20, 1, 100));
    readings_spout.hold = Some((shared.clone(), Instant::now()));
    readings_spout.after_flag = vec![Reading {
        key: 0,
        ts: 50,
        value: 1000,
    }];
    let (sink, rx) = Collect::<Summary>::new();
    let (late_sink, late_rx) = Collect::<Reading>::new();
    let mut t = TopologyBuilder::new("late");
    let src = t.add(spout("readings", readings_spout));
    let window = Window::tumbling(Duration::from_millis(500))
        .event_time("ts")
        .late_to_side_stream();
    let w = t.add(aggregated("win", Tally, window).shuffle(&src));
    t.add(bolt("sink", sink).shuffle(&w.output));
    t.add(bolt("flag", Flagging(shared.clone())).shuffle(&w.output));
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
    assert_eq!(shared.count(), 0, "no window fired before the deadline");
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

/// Runs `topology` to its end; returns the most windows `win` had open at once.
fn most_open_windows(topology: Topology) -> anyhow::Result<u64> {
    let running = cluster(2).start(topology)?;
    let mut most_open = 0;
    while !running.wait_timeout(Duration::from_millis(1)) {
        most_open = most_open.max(
            running
                .component_metrics("win")
                .map_or(0, |m| m.open_windows),
        );
    }
    running.wait()?;
    Ok(most_open)
}

#[test]
fn a_fast_upstream_waits_for_the_watermark() -> anyhow::Result<()> {
    // `fast` floods 2 s of event time over 50 keys (10,000 windows of 10 ms); `slow` starts
    // 0.8 s late, then covers the same 2 s at about 2 ms of event time per millisecond.
    // Unaligned, `fast` opens thousands of windows before `slow` lets any fire; aligned, once
    // 500 are open it stops until `slow` catches up.
    #[derive(Clone)]
    struct Slow(i64, Instant);
    impl Spout for Slow {
        type Out = Reading;
        fn open(&mut self, _ctx: &TaskContext) -> Result<(), TaskError> {
            self.1 = Instant::now();
            Ok(())
        }
        fn next(&mut self, out: &mut SpoutEmitter<Reading>) -> Result<SpoutStatus, TaskError> {
            if self.1.elapsed() < Duration::from_millis(800) {
                // Late to start: the watermark stays at the beginning of time meanwhile.
                return Ok(SpoutStatus::Idle);
            }
            if self.0 >= 2_000 {
                return Ok(SpoutStatus::Done);
            }
            out.emit(Reading {
                key: 1,
                ts: self.0,
                value: 1,
            });
            self.0 += 2;
            Ok(SpoutStatus::Idle)
        }
    }
    let fast = (0..40_000)
        .map(|i| Reading {
            key: (i % 50) as u64,
            ts: i / 20,
            value: 1,
        })
        .collect();
    let (sink, rx) = Collect::<Summary>::new();
    let mut t = TopologyBuilder::new("alignment");
    let f = t.add(spout("fast", Readings::new(fast)));
    let s = t.add(spout("slow", Slow(0, Instant::now())));
    let window = Window::tumbling(Duration::from_millis(10)).event_time("ts");
    let w = t.add(
        aggregated("win", Tally, window)
            .fields(&f, ["key"])
            .fields(&s, ["key"]),
    );
    t.add(bolt("sink", sink).shuffle(&w.output));
    let config = TopologyConfig {
        max_open_windows: 500,
        batch_size: 64,
        ..TopologyConfig::default()
    };
    let most_open = most_open_windows(t.config(config).build()?)?;
    let counted: u64 = all_items(&rx).iter().map(|s| s.count).sum();
    assert_eq!(counted, 40_000 + 1000);
    // The cap plus what the batches in flight open.
    assert!(most_open < 1500, "{most_open} windows open at once");
    Ok(())
}

#[test]
fn a_fast_spout_task_waits_for_the_slow_one_behind_a_bolt_that_mixes_them() -> anyhow::Result<()> {
    // Source alignment. Task 0 of `readings` floods 2 s of event time over 50 keys (10,000
    // windows of 10 ms); task 1 starts 0.8 s late, then covers the same 2 s at about 2 ms of
    // event time per millisecond. Behind the shuffled pass-through bolt the window cannot tell
    // their tuples apart (the window-level cap is out of reach here), so only the spouts can
    // hold task 0 back: the window's declaration, moved up to them, aligns them to within 8
    // windows (80 ms) of each other. Unaligned, task 0 opens all 10,000 windows before task 1
    // lets any fire.
    #[derive(Clone)]
    struct TwoSpeeds {
        task: u32,
        next: i64,
        started: Instant,
    }
    impl Spout for TwoSpeeds {
        type Out = Reading;
        fn open(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
            self.task = ctx.task_index();
            self.started = Instant::now();
            Ok(())
        }
        fn next(&mut self, out: &mut SpoutEmitter<Reading>) -> Result<SpoutStatus, TaskError> {
            if self.task == 0 {
                if self.next >= 40_000 {
                    return Ok(SpoutStatus::Done);
                }
                let i = self.next;
                self.next += 1;
                out.emit(Reading {
                    key: (i % 50) as u64,
                    ts: i / 20,
                    value: 1,
                });
                return Ok(SpoutStatus::Active);
            }
            if self.started.elapsed() < Duration::from_millis(800) {
                return Ok(SpoutStatus::Idle);
            }
            if self.next >= 2_000 {
                return Ok(SpoutStatus::Done);
            }
            out.emit(Reading {
                key: 1,
                ts: self.next,
                value: 1,
            });
            self.next += 2;
            Ok(SpoutStatus::Idle)
        }
    }
    let (sink, rx) = Collect::<Summary>::new();
    let mut t = TopologyBuilder::new("source-alignment");
    let src = t.add(
        spout(
            "readings",
            TwoSpeeds {
                task: 0,
                next: 0,
                started: Instant::now(),
            },
        )
        .parallelism(2),
    );
    let pass = t.add(
        bolt("pass", PassFailing::new(0))
            .parallelism(2)
            .shuffle(&src),
    );
    let window = Window::tumbling(Duration::from_millis(10)).event_time("ts");
    let w = t.add(aggregated("win", Tally, window).fields(&pass, ["key"]));
    t.add(bolt("sink", sink).shuffle(&w.output));
    let config = TopologyConfig {
        max_open_windows: 100_000,
        batch_size: 64,
        ..TopologyConfig::default()
    };
    let topology = t.config(config).build()?;
    assert_eq!(
        topology.ir().components[0]
            .event_time
            .as_ref()
            .and_then(|e| e.max_drift_ms),
        Some(80)
    );
    let most_open = most_open_windows(topology)?;
    let counted: u64 = all_items(&rx).iter().map(|s| s.count).sum();
    assert_eq!(counted, 40_000 + 1000);
    // 50 keys over the drift, the lag and a round of 64 tuples: some hundreds.
    assert!(most_open < 2_000, "{most_open} windows open at once");
    Ok(())
}

#[test]
fn alignment_cannot_deadlock_upstream_tasks_that_share_a_source() -> anyhow::Result<()> {
    // One spout feeds two pass-through tasks by key, one key each; the task of `slow_key`
    // takes a millisecond per tuple, so the other one's watermark runs ahead at the window,
    // which stops reading it. That blocks it, which blocks the spout; the spout's marks must
    // still reach the slow task, whose progress releases the fast one. The run must end with
    // every window exact.
    #[derive(Clone)]
    struct PassReading(u64);
    impl Bolt for PassReading {
        type In = Reading;
        type Out = Reading;
        fn execute(
            &mut self,
            t: Tuple<Reading>,
            out: &mut Emitter<Reading>,
        ) -> Result<(), TaskError> {
            if t.key == self.0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            out.emit(t.into_value());
            Ok(())
        }
    }
    // Two keys that the fields grouping sends to different pass tasks.
    let keys: Vec<u64> = (0..64u64).collect();
    let fast_key = keys[0];
    let slow_key = *keys
        .iter()
        .find(|&&k| {
            routing::reduce(stable_hash_of(&k), 2) != routing::reduce(stable_hash_of(&fast_key), 2)
        })
        .expect("some key reaches the other task");
    // In event-time order: the spout's own watermark never makes a reading late.
    let all: Vec<Reading> = (0..1200i64)
        .map(|i| Reading {
            key: if i % 4 == 0 { slow_key } else { fast_key },
            ts: i * 10,
            value: i,
        })
        .collect();
    let (sink, rx) = Collect::<Summary>::new();
    let mut t = TopologyBuilder::new("shared-source");
    let src = t.add(spout("readings", Readings::new(all.clone())));
    let pass = t.add(
        bolt("pass", PassReading(slow_key))
            .parallelism(2)
            .fields(&src, ["key"]),
    );
    let window = Window::tumbling(Duration::from_millis(100)).event_time("ts");
    let w = t.add(aggregated("win", Tally, window).fields(&pass, ["key"]));
    t.add(bolt("sink", sink).shuffle(&w.output));
    let config = TopologyConfig {
        batch_size: 16,
        queue_batches: 1,
        ..TopologyConfig::default()
    };
    let report = run(t.config(config).build()?, 2)?;
    assert_eq!(by_window(all_items(&rx)), expected(&all, 100));
    assert_eq!(report.component("win").map(|c| c.metrics.late), Some(0));
    Ok(())
}

/// Passes readings through; under a tracked guarantee, fails the first attempt of every
/// reading whose value is a multiple of `fail_every` (its tree is replayed).
#[derive(Clone)]
struct PassFailing {
    fail_every: i64,
    failed: std::collections::HashSet<i64>,
}

impl PassFailing {
    fn new(fail_every: i64) -> Self {
        PassFailing {
            fail_every,
            failed: std::collections::HashSet::new(),
        }
    }
}

impl Bolt for PassFailing {
    type In = Reading;
    type Out = Reading;
    fn execute(&mut self, t: Tuple<Reading>, out: &mut Emitter<Reading>) -> Result<(), TaskError> {
        if self.fail_every > 0 && t.value % self.fail_every == 0 && self.failed.insert(t.value) {
            return Err(TaskError::new("injected failure"));
        }
        out.emit(t.into_value());
        Ok(())
    }
}

/// (key, window start) -> (count, sum).
type Counts = BTreeMap<(u64, i64), (u64, i64)>;

/// The window results and the report of `spout(2) -> pass(2, shuffle) -> aggregated(fields)`.
fn through_a_bolt(
    all: Vec<Reading>,
    fail_every: i64,
    guarantee: Guarantee,
) -> anyhow::Result<(Counts, Vec<Reading>, RunReport)> {
    let (sink, rx) = Collect::<Summary>::new();
    let (late_sink, late_rx) = Collect::<Reading>::new();
    let mut t = TopologyBuilder::new("through-a-bolt");
    let src = t.add(spout("readings", Readings::new(all)).parallelism(2));
    let pass = t.add(
        bolt("pass", PassFailing::new(fail_every))
            .parallelism(2)
            .shuffle(&src),
    );
    let window = Window::tumbling(Duration::from_secs(1))
        .event_time("ts")
        .lag(Duration::from_millis(100))
        .late_to_side_stream();
    let w = t.add(
        aggregated("win", Tally, window)
            .parallelism(2)
            .fields(&pass, ["key"]),
    );
    t.add(bolt("sink", sink).parallelism(2).shuffle(&w.output));
    t.add(bolt("late-sink", late_sink).shuffle(&w.late));
    let report = run(t.guarantee(guarantee).build()?, 2)?;
    Ok((by_window(all_items(&rx)), all_items(&late_rx), report))
}

#[test]
fn a_bolt_between_the_spouts_and_the_window_keeps_event_time() -> anyhow::Result<()> {
    // The measurement: readings with ts = id from 2 spout tasks, through a pass-through
    // bolt (shuffle), into keyed one-second windows with a 100 ms lag. When the window derived
    // its watermark from the largest timestamp each pass task forwarded, about 40% went late.
    let all = readings(20_000, 10, 1);
    for guarantee in [Guarantee::AtMostOnce, Guarantee::AtLeastOnce] {
        tracing::info!(%guarantee, "--- 20,000 readings through a pass-through bolt");
        let (got, late, report) = through_a_bolt(all.clone(), 0, guarantee)?;
        assert!(late.is_empty(), "{} late under {guarantee}", late.len());
        assert_eq!(got, expected(&all, 1000), "under {guarantee}");
        assert_eq!(report.component("win").map(|c| c.metrics.late), Some(0));
    }
    Ok(())
}

#[test]
fn replays_through_an_event_time_window_are_not_late() -> anyhow::Result<()> {
    // Every 7th reading fails once before the window: its spout's watermark waits for the
    // replay, so the replay is on time and every window count is exact.
    let all = readings(20_000, 10, 1);
    let (got, late, report) = through_a_bolt(all.clone(), 7, Guarantee::AtLeastOnce)?;
    let spout = report.component("readings").expect("spout");
    // Each pass task fails a reading once, and a replay may reach the other task.
    let failing = 20_000 / 7 + 1;
    let failed = spout.metrics.tree_failed;
    assert!(
        (failing..=2 * failing).contains(&failed),
        "{failed} trees failed"
    );
    assert!(late.is_empty(), "{} replays were late", late.len());
    assert_eq!(got, expected(&all, 1000));
    assert_eq!(spout.metrics.acked, 20_000);
    Ok(())
}

#[test]
fn a_window_task_that_gets_no_data_from_a_spout_task_still_fires() -> anyhow::Result<()> {
    // Spout task 0 emits only `a`, spout task 1 only `b`, and the fields grouping sends them
    // to different window tasks: the task of `b` has a channel from spout task 0 that carries
    // no data, only watermarks. Both spouts stay open until a result for `b` arrives (or 10 s
    // pass): before watermarks were messages, that channel held the task of `b` back until
    // spout task 0 ended.
    let a = 0u64;
    let b = (1..64u64)
        .find(|k| routing::reduce(stable_hash_of(k), 2) != routing::reduce(stable_hash_of(&a), 2))
        .expect("some key reaches the other task");
    // Positions alternate between the two spout tasks: even ones (task 0) are `a`.
    let all: Vec<Reading> = (0..400i64)
        .map(|i| Reading {
            key: if i % 2 == 0 { a } else { b },
            ts: i * 10,
            value: i,
        })
        .collect();
    #[derive(Clone)]
    struct FlagOn(Shared, u64);
    impl Bolt for FlagOn {
        type In = Summary;
        type Out = ();
        fn execute(&mut self, t: Tuple<Summary>, _out: &mut Emitter<()>) -> Result<(), TaskError> {
            if t.key == self.1 {
                self.0.flag.store(true, Ordering::SeqCst);
            }
            Ok(())
        }
    }
    let shared = Shared::default();
    let mut held = Readings::new(all);
    held.hold = Some((shared.clone(), Instant::now()));
    let mut t = TopologyBuilder::new("silent-channel");
    let src = t.add(spout("readings", held).parallelism(2));
    let window = Window::tumbling(Duration::from_millis(100)).event_time("ts");
    let w = t.add(
        aggregated("win", Tally, window)
            .parallelism(2)
            .fields(&src, ["key"]),
    );
    t.add(bolt("flag", FlagOn(shared.clone(), b)).shuffle(&w.output));
    run(t.guarantee(Guarantee::AtLeastOnce).build()?, 2)?;
    assert_eq!(
        shared.count(),
        0,
        "the window task of `b` fired only once the spouts ended"
    );
    Ok(())
}

#[test]
fn keyed_count_windows_do_not_stall_a_bounded_spout() -> anyhow::Result<()> {
    // 100 keys, count windows of 5: up to 400 tuples wait in partial windows at once, far more
    // than max_spout_pending (50). Trees a window holds do not count against it, so the spout
    // goes on instead of waiting for their timeouts (Storm's rule could not hold per key).
    let all = readings(1000, 100, 1);
    let (sink, rx) = Collect::<Summary>::new();
    let mut t = TopologyBuilder::new("count-pending");
    let src = t.add(spout("readings", Readings::new(all)));
    let w = t.add(
        windowed("win", Summer::default(), Window::tumbling(Size::count(5))).fields(&src, ["key"]),
    );
    t.add(bolt("sink", sink).shuffle(&w.output));
    let config = TopologyConfig {
        max_spout_pending: Some(50),
        message_timeout: Duration::from_secs(20),
        ..TopologyConfig::default()
    };
    let started = Instant::now();
    let report = run(
        t.guarantee(Guarantee::AtLeastOnce).config(config).build()?,
        2,
    )?;
    let got = all_items(&rx);
    assert_eq!(got.len(), 200, "two windows of 5 per key");
    assert!(got.iter().all(|s| s.count == 5));
    let spout = report.component("readings").expect("spout");
    assert_eq!((spout.metrics.acked, spout.metrics.timed_out), (1000, 0));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the spout waited for timeouts"
    );
    Ok(())
}

#[test]
fn time_skew_is_measured_wherever_event_time_is_known() -> anyhow::Result<()> {
    // A spout that declares event time and stamps readings `offset` ms before (or after) the
    // wall clock, into a plain bolt: no window anywhere, the skew is still measured.
    #[derive(Clone)]
    struct Stamped {
        left: u32,
        offset_ms: i64,
    }
    impl Spout for Stamped {
        type Out = Reading;
        fn next(&mut self, out: &mut SpoutEmitter<Reading>) -> Result<SpoutStatus, TaskError> {
            if self.left == 0 {
                return Ok(SpoutStatus::Done);
            }
            self.left -= 1;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            out.emit(Reading {
                key: 0,
                ts: now - self.offset_ms,
                value: 0,
            });
            Ok(SpoutStatus::Idle)
        }
    }
    let (sink, _rx) = Collect::<Reading>::new();
    let (sink2, _rx2) = Collect::<Reading>::new();
    let mut t = TopologyBuilder::new("skew");
    let past = t.add(
        spout(
            "past",
            Stamped {
                left: 50,
                offset_ms: 5_000,
            },
        )
        .event_time(EventTime::field("ts")),
    );
    let future = t.add(
        spout(
            "future",
            Stamped {
                left: 50,
                offset_ms: -60_000,
            },
        )
        .event_time(EventTime::field("ts")),
    );
    t.add(bolt("sink", sink).shuffle(&past));
    t.add(bolt("sink2", sink2).shuffle(&future));
    let report = run(t.build()?, 2)?;
    let past = report.component("past").expect("past");
    assert!(past.time_skew.count() > 0, "no skew sample");
    let p50 = past.time_skew.quantile(0.5).as_millis();
    assert!((4_900..60_000).contains(&p50), "p50 {p50} ms");
    assert!(past.metrics.time_skew_max_ms >= 5_000);
    assert_eq!(past.metrics.time_skew_future, 0);
    let future = report.component("future").expect("future");
    assert!(
        future.metrics.time_skew_future > 0,
        "samples from the future count"
    );
    assert_eq!(
        report.component("sink").map(|c| c.time_skew.count()),
        Some(0)
    );
    Ok(())
}
