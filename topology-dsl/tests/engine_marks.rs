//! Watermark marks through the engine's tasks, driven as the runtime drives them.

use serde::{Deserialize, Serialize};
use tempest_dsl::engine::{LinkId, Mark, Payload, RouteSetup, Task, TaskSetup, TypedBatch};
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
    };
    let Ok(Task::Bolt(mut task)) = topology.instantiate(1, &setup) else {
        panic!("a bolt task");
    };
    let batch = |ts: &[i64]| {
        Payload::local(TypedBatch {
            values: ts.iter().map(|&ts| R { ts }).collect(),
            ids: vec![],
        })
    };
    task.execute_batch(0, TaskId(0), batch(&[10, 20, 30]))
        .expect("executes");
    task.on_mark(TaskId(0), 0, Mark::Time(100)).expect("marks");
    let mut ready = Vec::new();
    task.take_ready(&mut ready);
    assert_eq!(ready.len(), 1);
    assert_eq!(
        ready[0].1.mark(),
        None,
        "record 30 still waits in a partial batch: the mark must not overtake it"
    );
    task.execute_batch(0, TaskId(0), batch(&[110]))
        .expect("executes");
    task.take_ready(&mut ready);
    assert_eq!(ready.len(), 2);
    assert_eq!(
        ready[1].1.mark(),
        Some(Mark::Time(100)),
        "the batch holding 30 and 110 filled after the mark: it carries it"
    );
}
