//! Rollback recovery: consistent checkpoints of a run's spout positions and non-replicated
//! stateful tasks' states, taken with barriers on the watermarks' control path (Flink's
//! asynchronous barrier snapshots; the protocol is described in
//! [`tempest_dsl::checkpoint`]).
//!
//! - [`Aligner`]: a task's view of one barrier's progress over its input links (a pure core);
//! - [`Tracker`]: the coordinator's view of the checkpoints in flight, completed, failed or
//!   timed out (a pure core: time is an input);
//! - [`CheckpointStore`]: completed checkpoints in a directory, checksummed, written whole,
//!   the oldest deleted.
//!
//! Why aligned barriers (and not unaligned checkpoints): a barrier travels in order with the
//! batches of each link, and a task holds back what an input sends after the barrier until
//! every input delivered it, so a task's snapshot holds what preceded the barrier on each input
//! (and nothing after it, but from an upstream task feeding the task on several subscriptions,
//! which is held only once all of them delivered the barrier); with the spouts' parts reported once their trees from before the barrier
//! settled (the failed ones replay after a restore), a restored run's states are those of a
//! run that never failed. Unaligned checkpoints would let the barrier overtake queued batches
//! under backpressure at the cost of storing those batches with the snapshot; with Tempest's
//! credit-bounded links (a few batches per link) a barrier waits behind at most
//! `queue_batches` batches per link, so alignment takes about one batch round-trip per stage
//! and unaligned checkpoints are not worth their size and complexity here.

mod align;
mod store;
mod tracker;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tempest_dsl::{MsgId, TaskId};

pub(crate) use align::Aligner;
pub use store::{CheckpointStore, StoreError};
pub(crate) use tracker::{Tick, Tracker};

/// Every component's name and parallelism: what a checkpoint must match to be restored.
pub(crate) fn shape(ir: &tempest_dsl::TopologyIr) -> Vec<(String, u32)> {
    ir.components
        .iter()
        .map(|c| (c.name.clone(), c.parallelism))
        .collect()
}

/// The tasks that save a part of each checkpoint: the spouts and the stateful tasks.
pub(crate) fn savers(
    ir: &tempest_dsl::TopologyIr,
    plan: &crate::plan::PhysicalPlan,
) -> std::collections::BTreeSet<TaskId> {
    plan.tasks
        .iter()
        .filter(|t| {
            let c = &ir.components[t.component];
            c.kind == tempest_dsl::ComponentKind::Spout || c.stateful.is_some()
        })
        .map(|t| t.id)
        .collect()
}

/// What one task saved for a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskSnapshot {
    /// A spout: its position (as `Spout::snapshot` encoded it) and the messages it had in
    /// flight at the barrier whose trees failed, which a restore fails so the spout replays
    /// them.
    Spout {
        /// The encoded position.
        #[serde(with = "serde_bytes")]
        position: Vec<u8>,
        /// Messages in flight at the barrier whose trees failed.
        in_flight: Vec<MsgId>,
        /// Under exactly-once, messages that had failed before the barrier and whose replay
        /// was not emitted yet (the spout's position holds them): they stay open in its
        /// committed position after a restore.
        #[serde(default)]
        owed: Vec<MsgId>,
    },
    /// A stateful task's state, encoded.
    State(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// What a spout restored from a checkpoint goes back to: its position, the messages in flight
/// at the barrier whose trees failed (replayed), and those it owed replays of then.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SpoutRestore {
    pub(crate) position: Vec<u8>,
    pub(crate) in_flight: Vec<MsgId>,
    pub(crate) owed: Vec<MsgId>,
}

impl TaskSnapshot {
    /// A spout's part, as what its task restores (`None` for a stateful task's).
    pub(crate) fn spout_restore(&self) -> Option<SpoutRestore> {
        match self {
            TaskSnapshot::Spout {
                position,
                in_flight,
                owed,
            } => Some(SpoutRestore {
                position: position.clone(),
                in_flight: in_flight.clone(),
                owed: owed.clone(),
            }),
            TaskSnapshot::State(_) => None,
        }
    }
}

/// A completed checkpoint of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The topology's name.
    pub topology: String,
    /// The shape of the run it was taken of: every component's name and parallelism (a
    /// checkpoint restores only into the same tasks).
    pub shape: Vec<(String, u32)>,
    /// Its number, increasing over a run and the runs restored from it.
    pub id: u64,
    /// What each task saved.
    pub tasks: BTreeMap<TaskId, TaskSnapshot>,
}

impl Checkpoint {
    /// Its size in bytes of saved state and positions.
    pub fn bytes(&self) -> usize {
        self.tasks
            .values()
            .map(|s| match s {
                TaskSnapshot::Spout {
                    position,
                    in_flight,
                    owed,
                } => position.len() + (in_flight.len() + owed.len()) * 8,
                TaskSnapshot::State(b) => b.len(),
            })
            .sum()
    }
}

/// What a run's checkpoints did, for its report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointReport {
    /// Checkpoints completed.
    pub completed: u64,
    /// Checkpoints that failed (a task could not save) or timed out.
    pub failed: u64,
    /// From trigger to completion, per completed checkpoint, in ms: median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Longest.
    pub max_ms: f64,
    /// Bytes of the last completed checkpoint.
    pub last_bytes: usize,
    /// The checkpoint the run was restored from, if any.
    pub restored_from: Option<u64>,
}
