//! At-least-once through the actor runtime: failures and losses are replayed, trees complete
//! only when every edge is acked, and `max_spout_pending` bounds the trees in flight.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tempest_dsl::*;

fn tracked(timeout_ms: u64) -> TopologyConfig {
    TopologyConfig {
        message_timeout: Duration::from_millis(timeout_ms),
        batch_size: 64,
        ..TopologyConfig::default()
    }
}

/// Fails `percent`% of its inputs at random (seeded per task).
#[derive(Clone)]
struct Flaky {
    percent: u32,
    rng: SmallRng,
}

impl Bolt for Flaky {
    type In = N;
    type Out = N;
    fn prepare(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.rng = SmallRng::seed_from_u64(7 + u64::from(ctx.task_index()));
        Ok(())
    }
    fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<N>) -> Result<(), TaskError> {
        if self.rng.random_range(0..100) < self.percent {
            return Err(TaskError::new("flaky"));
        }
        out.emit(t.into_value());
        Ok(())
    }
}

/// Silently drops `percent`% of its inputs: neither acks nor fails them (a lost message).
#[derive(Clone)]
struct Lossy {
    percent: u32,
    rng: SmallRng,
}

impl Bolt for Lossy {
    type In = N;
    type Out = N;
    const MANUAL_ACK: bool = true;
    fn prepare(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.rng = SmallRng::seed_from_u64(11 + u64::from(ctx.task_index()));
        Ok(())
    }
    fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<N>) -> Result<(), TaskError> {
        if self.rng.random_range(0..100) < self.percent {
            return Ok(()); // dropped on the floor
        }
        out.emit_anchored(&[&t], N { n: t.n });
        out.ack(t);
        Ok(())
    }
}

#[test]
fn failures_and_losses_are_replayed_until_every_message_is_acked_once() -> anyhow::Result<()> {
    const TOTAL: u64 = 2_000;
    let (acks_tx, acks_rx) = std::sync::mpsc::channel();
    let (sink, rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("replay");
    let numbers = t.add(spout("numbers", Numbers::new(TOTAL).report_acks(acks_tx)).parallelism(2));
    let flaky = t.add(
        bolt(
            "flaky",
            Flaky {
                percent: 10,
                rng: SmallRng::seed_from_u64(0),
            },
        )
        .parallelism(2)
        .shuffle(&numbers),
    );
    let lossy = t.add(
        bolt(
            "lossy",
            Lossy {
                percent: 5,
                rng: SmallRng::seed_from_u64(0),
            },
        )
        .parallelism(2)
        .shuffle(&flaky),
    );
    t.add(bolt("sink", sink).parallelism(2).shuffle(&lossy));
    let topology = t
        .guarantee(Guarantee::AtLeastOnce)
        .config(tracked(300))
        .build()?;
    let report = run(topology, 2)?;

    tracing::info!("--- every message acked exactly once at the spout");
    let mut acked: Vec<u64> = acks_rx.try_iter().flatten().collect();
    acked.sort_unstable();
    assert_eq!(acked, (0..TOTAL).collect::<Vec<_>>());

    tracing::info!("--- nothing lost: the sink saw every number at least once");
    let mut seen: Vec<u64> = all_items(&rx).into_iter().map(|x| x.n).collect();
    let received = seen.len() as u64;
    seen.dedup();
    assert_eq!(seen, (0..TOTAL).collect::<Vec<_>>());

    let spout = report.component("numbers").expect("spout");
    assert_eq!(spout.metrics.acked, TOTAL);
    assert!(
        spout.metrics.tree_failed > 0,
        "the flaky bolt failed nothing?"
    );
    assert!(spout.metrics.timed_out > 0, "the lossy bolt lost nothing?");
    assert_eq!(spout.complete_latency.count(), TOTAL);
    assert!(received >= TOTAL);
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Record)]
struct Half {
    key: u64,
    n: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Record)]
struct Joined {
    key: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    SinkSaw(u64),
    SpoutAcked(u64),
}

/// Sends each number to the join twice, keyed by `n / 2`: numbers 2k and 2k+1 (two trees)
/// meet in one join.
#[derive(Clone)]
struct Fan;

impl Bolt for Fan {
    type In = N;
    type Out = Half;
    fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<Half>) -> Result<(), TaskError> {
        out.emit(Half {
            key: t.n / 2,
            n: t.n,
        });
        out.emit(Half {
            key: t.n / 2,
            n: t.n,
        });
        Ok(())
    }
}

/// Holds halves until all four copies of a key (2 numbers x 2 copies) have arrived, then emits
/// one record anchored to all four (a multi-anchored join across two trees) and acks them.
#[derive(Default)]
struct Join {
    held: std::collections::HashMap<u64, Vec<Tuple<Half>>>,
}

/// Tuples cannot be cloned: the runtime clones the prototype, which holds none.
impl Clone for Join {
    fn clone(&self) -> Self {
        Join::default()
    }
}

impl Bolt for Join {
    type In = Half;
    type Out = Joined;
    const MANUAL_ACK: bool = true;
    fn execute(&mut self, t: Tuple<Half>, out: &mut Emitter<Joined>) -> Result<(), TaskError> {
        let key = t.key;
        let held = self.held.entry(key).or_default();
        held.push(t);
        if held.len() == 4 {
            let tuples = self.held.remove(&key).unwrap_or_default();
            let anchors: Vec<&Tuple<Half>> = tuples.iter().collect();
            out.emit_anchored(&anchors, Joined { key });
            for t in tuples {
                out.ack(t);
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
struct LogSink(Arc<Mutex<Vec<Event>>>);

impl Bolt for LogSink {
    type In = Joined;
    type Out = Joined;
    fn execute(&mut self, t: Tuple<Joined>, _out: &mut Emitter<Joined>) -> Result<(), TaskError> {
        if let Ok(mut log) = self.0.lock() {
            log.push(Event::SinkSaw(t.key));
        }
        Ok(())
    }
}

#[derive(Clone)]
struct LoggedNumbers(Numbers, Arc<Mutex<Vec<Event>>>);

impl Spout for LoggedNumbers {
    type Out = N;
    const REPLAYABLE: bool = true;
    fn open(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.0.open(ctx)
    }
    fn next(&mut self, out: &mut SpoutEmitter<N>) -> Result<SpoutStatus, TaskError> {
        self.0.next(out)
    }
    fn ack(&mut self, msg: MsgId) {
        if let Ok(mut log) = self.1.lock() {
            log.push(Event::SpoutAcked(msg.0));
        }
    }
    fn fail(&mut self, msg: MsgId) {
        self.0.fail(msg);
    }
}

#[test]
fn a_multi_anchored_join_completes_both_trees_only_after_its_output_is_acked() -> anyhow::Result<()>
{
    const TOTAL: u64 = 400;
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut t = TopologyBuilder::new("join");
    let numbers = t.add(spout(
        "numbers",
        LoggedNumbers(Numbers::new(TOTAL), Arc::clone(&log)),
    ));
    let halves = t.add(bolt("fan", Fan).parallelism(2).shuffle(&numbers));
    let joined = t.add(
        bolt("join", Join::default())
            .parallelism(2)
            .fields(&halves, ["key"]),
    );
    t.add(
        bolt("sink", LogSink(Arc::clone(&log)))
            .parallelism(2)
            .shuffle(&joined),
    );
    let report = run(
        t.guarantee(Guarantee::AtLeastOnce)
            .config(tracked(30_000))
            .build()?,
        2,
    )?;

    let log = log.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let position = |e: &Event| log.iter().position(|x| x == e);
    for n in 0..TOTAL {
        let acked = position(&Event::SpoutAcked(n)).expect("every message acked");
        let sunk = position(&Event::SinkSaw(n / 2)).expect("every pair joined");
        assert!(
            sunk < acked,
            "message {n} was acked before its joined record reached the sink"
        );
    }
    let spout = report.component("numbers").expect("spout");
    assert_eq!((spout.metrics.acked, spout.metrics.tree_failed), (TOTAL, 0));
    Ok(())
}

#[test]
fn max_spout_pending_bounds_the_trees_in_flight() -> anyhow::Result<()> {
    #[derive(Clone)]
    struct Slow;
    impl Bolt for Slow {
        type In = N;
        type Out = N;
        fn execute(&mut self, _t: Tuple<N>, _out: &mut Emitter<N>) -> Result<(), TaskError> {
            std::thread::sleep(Duration::from_micros(200));
            Ok(())
        }
    }
    const MAX: usize = 8;
    let mut t = TopologyBuilder::new("pending");
    let numbers = t.add(spout("numbers", Numbers::new(600)).parallelism(2));
    t.add(bolt("slow", Slow).shuffle(&numbers));
    let config = TopologyConfig {
        max_spout_pending: Some(MAX),
        ..tracked(30_000)
    };
    let running = cluster(2).start(t.guarantee(Guarantee::AtLeastOnce).config(config).build()?)?;
    let mut most = 0;
    while !running.wait_timeout(Duration::from_millis(1)) {
        most = most.max(
            running
                .component_metrics("numbers")
                .map_or(0, |m| m.pending),
        );
    }
    let report = running.wait()?;
    let spout = report.component("numbers").expect("spout");
    assert_eq!(spout.metrics.acked, 600);
    assert!(
        spout.metrics.pending_max <= MAX as u64,
        "a spout task had {} trees in flight, more than {MAX}",
        spout.metrics.pending_max
    );
    assert!(spout.metrics.pending_max > 0);
    assert!(most <= 2 * MAX as u64, "{most} in flight over 2 tasks");
    Ok(())
}

#[test]
fn reset_timeout_keeps_a_slow_tree_alive() -> anyhow::Result<()> {
    /// Holds every input for 40 ticks of 25 ms (2.5 message timeouts of 400 ms), resetting their
    /// timeouts on each tick: a tick may come up to about 375 ms late before a tree times out.
    #[derive(Default)]
    struct Holder {
        held: Vec<(Tuple<N>, u32)>,
    }
    impl Clone for Holder {
        fn clone(&self) -> Self {
            Holder::default()
        }
    }
    impl Bolt for Holder {
        type In = N;
        type Out = N;
        const MANUAL_ACK: bool = true;
        fn execute(&mut self, t: Tuple<N>, _out: &mut Emitter<N>) -> Result<(), TaskError> {
            self.held.push((t, 0));
            Ok(())
        }
        fn tick(&mut self, out: &mut Emitter<N>) -> Result<(), TaskError> {
            let mut keep = Vec::new();
            for (t, ticks) in self.held.drain(..) {
                if ticks >= 40 {
                    out.ack(t);
                } else {
                    out.reset_timeout(&t);
                    keep.push((t, ticks + 1));
                }
            }
            self.held = keep;
            Ok(())
        }
    }
    let mut t = TopologyBuilder::new("reset");
    let numbers = t.add(spout("numbers", Numbers::new(20)));
    t.add(
        bolt("holder", Holder::default())
            .tick_every(Duration::from_millis(25))
            .shuffle(&numbers),
    );
    let report = run(
        t.guarantee(Guarantee::AtLeastOnce)
            .config(tracked(400))
            .build()?,
        2,
    )?;
    let spout = report.component("numbers").expect("spout");
    assert_eq!(spout.metrics.acked, 20);
    assert_eq!(
        spout.metrics.timed_out, 0,
        "reset_timeout did not keep the trees alive"
    );
    Ok(())
}

#[test]
fn at_most_once_acks_at_emit_and_tracks_nothing() -> anyhow::Result<()> {
    let (acks_tx, acks_rx) = std::sync::mpsc::channel();
    let (sink, rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("amo");
    let numbers = t.add(spout("numbers", Numbers::new(300).report_acks(acks_tx)));
    t.add(bolt("sink", sink).shuffle(&numbers));
    let report = run(t.build()?, 2)?;
    // The spout's `ack` runs right after each emit, as Storm does with no ackers.
    let mut acked: Vec<u64> = acks_rx.try_iter().flatten().collect();
    acked.sort_unstable();
    assert_eq!(acked, (0..300).collect::<Vec<_>>());
    assert_eq!(all_items(&rx).len(), 300);
    let spout = report.component("numbers").expect("spout");
    assert_eq!((spout.metrics.acked, spout.metrics.pending_max), (0, 0));
    assert_eq!(spout.complete_latency.count(), 0);
    Ok(())
}

#[test]
fn the_run_seed_replays_the_ack_tree_ids() -> anyhow::Result<()> {
    // Every task's generator comes from the run seed: a spout task's root ids, and so its
    // tuples' ids, are the same in two runs with the same seed (and differ with another).
    #[derive(Clone)]
    struct Ids(Arc<Mutex<Vec<String>>>);
    impl Bolt for Ids {
        type In = N;
        type Out = N;
        fn execute(&mut self, t: Tuple<N>, _out: &mut Emitter<N>) -> Result<(), TaskError> {
            if let Ok(mut ids) = self.0.lock() {
                ids.push(format!("{} {:?}", t.n, t.ids()));
            }
            Ok(())
        }
    }
    let ids_of = |seed: u64| -> anyhow::Result<(Vec<String>, u64)> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut t = TopologyBuilder::new("seeded");
        let numbers = t.add(spout("numbers", Numbers::new(200)));
        t.add(bolt("ids", Ids(Arc::clone(&log))).shuffle(&numbers));
        let report = tempest_runtime::LocalCluster::new(tempest_runtime::LocalOptions {
            workers: 2,
            metrics_interval: None,
            seed: Some(seed),
            ..tempest_runtime::LocalOptions::default()
        })?
        .run(t.guarantee(Guarantee::AtLeastOnce).build()?)?;
        let mut ids = log.lock().map(|l| l.clone()).unwrap_or_default();
        ids.sort();
        Ok((ids, report.seed))
    };
    let (a, seed_a) = ids_of(7)?;
    let (b, _) = ids_of(7)?;
    let (c, _) = ids_of(8)?;
    assert_eq!(seed_a, 7, "the report gives the seed");
    assert_eq!(a.len(), 200);
    assert_eq!(a, b, "same seed, same ids");
    assert_ne!(a, c, "another seed, other ids");
    Ok(())
}
