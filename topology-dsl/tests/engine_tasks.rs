//! The engine's tasks driven by hand, as the runtime drives them: watermark marks and the
//! processing time the runtime passes in.

use serde::{Deserialize, Serialize};
use tempest_dsl::engine::{
    BoltTask, LinkId, Mark, Payload, RouteSetup, Task, TaskSetup, TypedBatch,
};
use tempest_dsl::*;

#[derive(Clone, Debug, Serialize, Deserialize, Record)]
struct R {
    ts: i64,
}

#[derive(Clone)]
struct Src;
impl Spout for Src {
    type Out = R;
    fn next(&mut self, _out: &mut SpoutEmitter<R>) -> Result<SpoutStatus, TaskError> {
        Ok(SpoutStatus::Done)
    }
}

#[derive(Clone)]
struct Pass;
impl Bolt for Pass {
    type In = R;
    type Out = R;
    fn execute(&mut self, t: Tuple<R>, out: &mut Emitter<R>) -> Result<(), TaskError> {
        out.emit(t.into_value());
        Ok(())
    }
}

/// Task 0 of component 1 in a chain `src -> (1) -> sink` of one task each, as the runtime
/// would set it up.
fn middle_task(topology: &Topology) -> Box<dyn BoltTask> {
    middle_task_of(topology, false)
}

fn middle_task_of(topology: &Topology, replicated: bool) -> Box<dyn BoltTask> {
    let setup = TaskSetup {
        task_id: TaskId(1),
        task_index: 0,
        outputs: vec![vec![RouteSetup {
            consumer: 2,
            input: 0,
            first_link: LinkId(0),
            tasks: 1,
            preferred: vec![0],
        }]],
        id_seed: 1,
        channels: vec![(TaskId(0), 0)],
        replicated,
    };
    match topology.instantiate(1, &setup) {
        Ok(Task::Bolt(task)) => task,
        _ => panic!("a bolt task"),
    }
}

#[test]
fn a_forwarded_watermark_rides_only_on_batches_filled_after_it() {
    // src -> pass -> sink, batches of 2. `pass` executes 3 records (one full batch, one in a
    // partial batch), then a mark at 100 arrives, then 1 more record.
    let mut t = TopologyBuilder::new("marks");
    let src = t.add(spout("src", Src));
    let pass = t.add(bolt("pass", Pass).shuffle(&src));
    t.add(bolt("sink", Pass).shuffle(&pass));
    let topology = t
        .config(TopologyConfig {
            batch_size: 2,
            ..TopologyConfig::default()
        })
        .build()
        .expect("valid");
    let mut task = middle_task(&topology);
    let batch = |ts: &[i64]| {
        Payload::local(TypedBatch {
            values: ts.iter().map(|&ts| R { ts }).collect(),
            ..TypedBatch::default()
        })
    };
    task.execute_batch(0, TaskId(0), batch(&[10, 20, 30]), 0)
        .expect("executes");
    task.on_mark(TaskId(0), 0, Mark::Time(100), 0)
        .expect("marks");
    let mut ready = Vec::new();
    task.take_ready(&mut ready);
    assert_eq!(ready.len(), 1);
    assert_eq!(
        ready[0].1.mark(),
        None,
        "record 30 still waits in a partial batch: the mark must not overtake it"
    );
    task.execute_batch(0, TaskId(0), batch(&[110]), 0)
        .expect("executes");
    task.take_ready(&mut ready);
    assert_eq!(ready.len(), 2);
    assert_eq!(
        ready[1].1.mark(),
        Some(Mark::Time(100)),
        "the batch holding 30 and 110 filled after the mark: it carries it"
    );
}

#[derive(Clone, Debug, Serialize, Deserialize, Record)]
struct Total {
    count: u64,
}

#[derive(Clone)]
struct CountAll;
impl WindowAggregate for CountAll {
    type In = R;
    type Acc = u64;
    type Out = Total;
    fn add(&mut self, acc: &mut u64, _r: &R) {
        *acc += 1;
    }
    fn merge(&mut self, acc: &mut u64, other: u64) {
        *acc += other;
    }
    fn emit(
        &mut self,
        acc: &u64,
        _w: &WindowInfo,
        out: &mut Emitter<Total>,
    ) -> Result<(), TaskError> {
        out.emit(Total { count: *acc });
        Ok(())
    }
}

#[test]
fn processing_time_windows_run_on_the_time_the_runtime_passes_in() {
    // The engine reads no clock: a paused clock (plain numbers) drives the window.
    let mut t = TopologyBuilder::new("paused");
    let src = t.add(spout("src", Src));
    let w = t.add(
        aggregated(
            "win",
            CountAll,
            Window::tumbling(std::time::Duration::from_millis(100)),
        )
        .shuffle(&src),
    );
    t.add(bolt("sink", Sink).shuffle(&w.output));
    let topology = t.build().expect("valid");
    let mut task = middle_task(&topology);
    let batch = |n: i64| {
        Payload::local(TypedBatch {
            values: (0..n).map(|ts| R { ts }).collect(),
            ..TypedBatch::default()
        })
    };
    let fired = |task: &mut Box<dyn BoltTask>| {
        task.flush();
        let mut ready = Vec::new();
        task.take_ready(&mut ready);
        ready.len()
    };
    task.execute_batch(0, TaskId(0), batch(3), 1_000)
        .expect("executes");
    task.execute_batch(0, TaskId(0), batch(2), 1_099)
        .expect("executes");
    task.tick(false, 1_099).expect("ticks");
    assert_eq!(
        fired(&mut task),
        0,
        "[1000, 1100) is not due while the clock reads 1099"
    );
    task.tick(false, 1_100).expect("ticks");
    assert_eq!(fired(&mut task), 1, "one firing, for all five");
    assert_eq!(task.window_stats().map(|s| s.fires), Some(1));
}

#[derive(Clone)]
struct Sink;
impl Bolt for Sink {
    type In = Total;
    type Out = ();
    fn execute(&mut self, _t: Tuple<Total>, _out: &mut Emitter<()>) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Keeps the largest timestamp seen; emits every record with it.
#[derive(Clone)]
struct MaxTs;
impl StatefulBolt for MaxTs {
    type In = R;
    type Out = R;
    type State = i64;
    fn execute(
        &self,
        max: &mut i64,
        t: Tuple<R>,
        out: &mut StateEmitter<R>,
    ) -> Result<(), TaskError> {
        *max = (*max).max(t.ts);
        out.emit(t.into_value());
        Ok(())
    }
}

#[test]
fn a_replicated_task_proposes_emits_what_its_group_answers_and_holds_marks_only_for_earlier_proposals()
 {
    let mut t = TopologyBuilder::new("replicated");
    let src = t.add(spout("src", Src));
    let max = t.add(stateful("max", MaxTs).shuffle(&src));
    t.add(bolt("sink", Pass).shuffle(&max));
    let topology = t
        .config(TopologyConfig {
            batch_size: 1,
            ..TopologyConfig::default()
        })
        .build()
        .expect("valid");
    let mut task = middle_task_of(&topology, true);
    let mut machine = topology.state_machine(1, 0).expect("a stateful bolt");
    let batch = |ts: &[i64]| {
        Payload::local(TypedBatch {
            values: ts.iter().map(|&ts| R { ts }).collect(),
            ..TypedBatch::default()
        })
    };
    let mut proposals = Vec::new();
    task.execute_batch(0, TaskId(0), batch(&[10, 20]), 0)
        .expect("executes");
    task.on_mark(TaskId(0), 0, Mark::Time(100), 0)
        .expect("marks");
    task.execute_batch(0, TaskId(0), batch(&[150]), 0)
        .expect("executes");
    task.take_proposals(&mut proposals);
    assert_eq!(proposals.len(), 2, "one command per batch");
    assert_eq!(task.in_flight(), 2);
    let (mut ready, mut marks) = (Vec::new(), Vec::new());
    task.take_ready(&mut ready);
    task.take_marks(0, &mut marks);
    assert!(ready.is_empty(), "nothing is emitted before the commit");
    assert!(
        marks.is_empty(),
        "the mark waits for the proposal made before it"
    );

    // The group applies the first command; its answer carries the outputs.
    let answer = machine
        .apply(&proposals[0].command, 1, true)
        .expect("applies");
    task.committed(proposals[0].seq, Ok(answer))
        .expect("commits");
    task.take_ready(&mut ready);
    task.take_marks(0, &mut marks);
    assert_eq!(ready.len(), 2, "both records of the first batch");
    assert_eq!(
        marks,
        [Mark::Time(100)],
        "released: the proposal after it need not commit first"
    );

    // The second is refused (leadership moved): nothing is emitted for it.
    task.committed(proposals[1].seq, Err("not the leader".into()))
        .expect("settles");
    assert_eq!(task.in_flight(), 0);
    task.take_ready(&mut ready);
    assert_eq!(ready.len(), 2);
    let snapshot = machine.snapshot().expect("encodes");
    assert_eq!(rmp_serde::from_slice::<i64>(&snapshot).ok(), Some(20));
}

#[derive(Clone, Debug, Serialize, Deserialize, Record)]
struct Pair {
    a: u64,
    b: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Record)]
struct PairCount {
    a: u64,
    b: u64,
    count: u64,
}

#[derive(Clone)]
struct CountPairs;
impl WindowAggregate for CountPairs {
    type In = Pair;
    type Acc = (u64, u64, u64);
    type Out = PairCount;
    fn add(&mut self, acc: &mut (u64, u64, u64), p: &Pair) {
        *acc = (p.a, p.b, acc.2 + 1);
    }
    fn merge(&mut self, acc: &mut (u64, u64, u64), other: (u64, u64, u64)) {
        acc.2 += other.2;
    }
    fn emit(
        &mut self,
        acc: &(u64, u64, u64),
        _w: &WindowInfo,
        out: &mut Emitter<PairCount>,
    ) -> Result<(), TaskError> {
        out.emit(PairCount {
            a: acc.0,
            b: acc.1,
            count: acc.2,
        });
        Ok(())
    }
}

#[derive(Clone)]
struct PairSrc;
impl Spout for PairSrc {
    type Out = Pair;
    fn next(&mut self, _out: &mut SpoutEmitter<Pair>) -> Result<SpoutStatus, TaskError> {
        Ok(SpoutStatus::Done)
    }
}

#[derive(Clone)]
struct PairSink;
impl Bolt for PairSink {
    type In = PairCount;
    type Out = ();
    fn execute(&mut self, _t: Tuple<PairCount>, _out: &mut Emitter<()>) -> Result<(), TaskError> {
        Ok(())
    }
}

/// The grouping hash of a key of two integers: (a, b).
fn pair_hash(a: u64, b: u64) -> u64 {
    let mut h = KeyHasher::new();
    h.write_u64(a);
    h.write_u64(b);
    h.finish()
}

#[test]
fn two_keys_whose_hashes_collide_get_windows_of_their_own() {
    // The hash of two words is not one to one: for any `a2`, some `b2` makes (a2, b2) hash
    // like (a1, b1). Mirror the hasher's mixing step to find it.
    let step = |s: u64, v: u64| (s ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    let first = |a: u64| step(0x243F_6A88_85A3_08D3, a);
    let (a1, b1, a2) = (1u64, 2u64, 3u64);
    let b2 = first(a1) ^ b1 ^ first(a2);
    assert_eq!(pair_hash(a1, b1), pair_hash(a2, b2), "a collision");

    let mut t = TopologyBuilder::new("collide");
    let src = t.add(spout("src", PairSrc));
    let w = t.add(
        aggregated(
            "win",
            CountPairs,
            Window::tumbling(std::time::Duration::from_millis(100)),
        )
        .fields(&src, ["a", "b"]),
    );
    t.add(bolt("sink", PairSink).shuffle(&w.output));
    let topology = t.build().expect("valid");
    let mut task = middle_task(&topology);
    let pairs = [(a1, b1), (a2, b2), (a1, b1), (a2, b2), (a1, b1)];
    let batch = Payload::local(TypedBatch {
        values: pairs.iter().map(|&(a, b)| Pair { a, b }).collect(),
        ..TypedBatch::default()
    });
    task.execute_batch(0, TaskId(0), batch, 1_000)
        .expect("executes");
    task.tick(false, 1_100).expect("ticks");
    task.flush();
    let mut ready = Vec::new();
    task.take_ready(&mut ready);
    let mut counts: Vec<(u64, u64, u64)> = ready
        .into_iter()
        .flat_map(|(_, p)| p.downcast::<PairCount>().expect("counts").values)
        .map(|c| (c.a, c.b, c.count))
        .collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        [(a1, b1, 3), (a2, b2, 2)],
        "each key counted in a window of its own"
    );
}
