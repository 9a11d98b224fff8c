//! Checkpoints in an in-process run: barriers flow from rewindable spouts through a stateful
//! bolt, checkpoints complete and are stored, and a run that crashed resumes from the last one
//! with the same final state as a run that did not crash.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use tempest_dsl::*;
use tempest_runtime::checkpoint::{CheckpointStore, TaskSnapshot};
use tempest_runtime::{LocalCluster, LocalOptions, RuntimeError};

/// Emits `0..end` split over its tasks, a few hundred at a time, replaying what fails; can be
/// rewound (its position: the next number and its replay queue). With `crash_after`, each task
/// panics once it emitted that many (a crash of the run: local spouts are not restarted).
#[derive(Clone)]
struct Numbers {
    end: u64,
    next: u64,
    step: u64,
    replay: Vec<u64>,
    emitted: u64,
    crash_after: Option<u64>,
}

impl Numbers {
    fn new(end: u64, crash_after: Option<u64>) -> Self {
        Numbers {
            end,
            next: 0,
            step: 1,
            replay: Vec::new(),
            emitted: 0,
            crash_after,
        }
    }
}

impl Spout for Numbers {
    type Out = N;
    const REPLAYABLE: bool = true;
    const REWINDABLE: bool = true;

    fn open(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.next = u64::from(ctx.task_index());
        self.step = u64::from(ctx.parallelism());
        Ok(())
    }

    fn next(&mut self, out: &mut SpoutEmitter<N>) -> Result<SpoutStatus, TaskError> {
        if self.crash_after.is_some_and(|c| self.emitted >= c) {
            panic!("the run crashes");
        }
        let n = match self.replay.pop() {
            Some(n) => n,
            None if self.next >= self.end => return Ok(SpoutStatus::Done),
            None => {
                self.next += self.step;
                self.next - self.step
            }
        };
        out.emit_tracked(MsgId(n), N { n });
        self.emitted += 1;
        // Paced, so that a run takes a while and checkpoints happen during it.
        Ok(if self.emitted % 200 == 0 {
            SpoutStatus::Idle
        } else {
            SpoutStatus::Active
        })
    }

    fn fail(&mut self, msg: MsgId) {
        self.replay.push(msg.0);
    }

    fn snapshot(&self) -> Option<SpoutSnapshot> {
        SpoutSnapshot::encode(&(self.next, &self.replay)).ok()
    }

    fn restore(&mut self, snapshot: &SpoutSnapshot) -> Result<(), TaskError> {
        (self.next, self.replay) = snapshot.decode()?;
        Ok(())
    }
}

/// Remembers every number it saw: the same set whatever was replayed.
#[derive(Clone)]
struct Seen;

impl StatefulBolt for Seen {
    type In = N;
    type Out = N;
    type State = BTreeSet<u64>;

    fn execute(
        &self,
        seen: &mut BTreeSet<u64>,
        input: Tuple<N>,
        _out: &mut StateEmitter<N>,
    ) -> Result<(), TaskError> {
        seen.insert(input.n);
        Ok(())
    }
}

const END: u64 = 40_000;

fn topology(crash_after: Option<u64>, interval: Duration) -> Result<Topology, BuildErrors> {
    let mut t = TopologyBuilder::new("checkpointed");
    let numbers = t.add(spout("numbers", Numbers::new(END, crash_after)).parallelism(2));
    t.add(
        stateful("seen", Seen)
            .parallelism(2)
            .fields(&numbers, ["n"]),
    );
    t.guarantee(Guarantee::AtLeastOnce)
        .config(TopologyConfig {
            checkpoint_interval: Some(interval),
            ..TopologyConfig::default()
        })
        .build()
}

fn run(dir: &Path, crash_after: Option<u64>) -> Result<tempest_runtime::RunReport, RuntimeError> {
    let cluster = LocalCluster::new(LocalOptions {
        workers: 2,
        checkpoint_dir: Some(dir.to_owned()),
        ..LocalOptions::default()
    })?;
    cluster.run(topology(crash_after, Duration::from_millis(30)).expect("builds"))
}

/// The states of the stateful tasks in the newest checkpoint of `dir`.
fn final_states(dir: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let store = CheckpointStore::open(dir)?;
    let shape = vec![("numbers".to_owned(), 2), ("seen".to_owned(), 2)];
    let c = store
        .latest("checkpointed", &shape)?
        .ok_or_else(|| anyhow::anyhow!("no checkpoint in {}", dir.display()))?;
    Ok(c.tasks
        .values()
        .filter_map(|s| match s {
            TaskSnapshot::State(b) => Some(b.clone()),
            TaskSnapshot::Spout { .. } => None,
        })
        .collect())
}

#[test]
fn a_crashed_run_resumes_from_its_last_checkpoint_with_the_state_of_a_clean_run()
-> anyhow::Result<()> {
    let clean = tempfile::tempdir()?;
    let report = run(clean.path(), None)?;
    let c = report.checkpoints.clone().expect("checkpoints were taken");
    eprintln!("{report}");
    assert!(c.completed >= 2, "{c:?}");
    assert_eq!(c.failed, 0, "{c:?}");
    assert_eq!(c.restored_from, None);
    let expected = final_states(clean.path())?;
    let mut all = BTreeSet::new();
    for bytes in &expected {
        let part: BTreeSet<u64> = rmp_serde::from_slice(bytes)?;
        all.extend(part);
    }
    assert_eq!(
        all,
        (0..END).collect(),
        "the last checkpoint holds the final state"
    );

    let crashed = tempfile::tempdir()?;
    let err = run(crashed.path(), Some(END / 4)).expect_err("the run crashes");
    assert!(err.to_string().contains("the run crashes"), "{err}");
    let kept = final_states(crashed.path())?;
    assert_ne!(kept, expected, "the crash came before the end");
    // What the spouts must emit again: from each saved position to the end, the replay queue,
    // and the messages in flight at the checkpoint (failed, so replayed).
    let store = CheckpointStore::open(crashed.path())?;
    let shape = vec![("numbers".to_owned(), 2), ("seen".to_owned(), 2)];
    let saved = store.latest("checkpointed", &shape)?.expect("a checkpoint");
    let mut again = 0u64;
    for s in saved.tasks.values() {
        if let TaskSnapshot::Spout {
            position,
            in_flight,
            ..
        } = s
        {
            let (next, replay): (u64, Vec<u64>) = SpoutSnapshot::from_bytes(position.clone())
                .decode()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            again += END.saturating_sub(next).div_ceil(2) + replay.len() as u64;
            again += in_flight.len() as u64;
        }
    }
    let resumed = run(crashed.path(), None)?;
    let c = resumed.checkpoints.clone().expect("checkpoints");
    eprintln!("{resumed}");
    assert!(c.restored_from.is_some_and(|id| id >= 1), "{c:?}");
    let emitted = resumed
        .component("numbers")
        .map_or(0, |n| n.metrics.emitted);
    assert_eq!(
        emitted, again,
        "the spouts went on from their saved positions and replayed what was in flight"
    );
    assert_eq!(
        final_states(crashed.path())?,
        expected,
        "the resumed run ends with the clean run's state"
    );
    Ok(())
}

#[test]
fn checkpoints_need_rewindable_spouts() {
    #[derive(Clone)]
    struct Plain;
    impl Spout for Plain {
        type Out = N;
        fn next(&mut self, _: &mut SpoutEmitter<N>) -> Result<SpoutStatus, TaskError> {
            Ok(SpoutStatus::Done)
        }
    }
    let mut t = TopologyBuilder::new("plain");
    let s = t.add(spout("plain", Plain));
    t.add(stateful("seen", Seen).fields(&s, ["n"]));
    let errors = t
        .config(TopologyConfig {
            checkpoint_interval: Some(Duration::from_secs(1)),
            ..TopologyConfig::default()
        })
        .build()
        .expect_err("refused");
    assert!(
        errors.to_string().contains("rewindable"),
        "a clear reason: {errors}"
    );
}
