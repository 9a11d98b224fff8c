//! [`DataMessage`]: what tasks on different nodes send each other over the data lane. Every
//! message names its topology run and the task it is for; a batch carries its records encoded
//! once, by the codec of its subscription, and the watermark riding on it beside them.

use serde::{Deserialize, Serialize};
use tempest_dsl::engine::Mark;
use tempest_dsl::{RootId, TaskId};

use crate::ack::{AckMsg, TreeOutcome};

/// One topology run: its name and the seed it was submitted with (so messages of an older run
/// of the same name are told apart), and its generation (bumped by each rollback of a
/// checkpointed run, so what an earlier generation still sends is dropped).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct RunId {
    pub(crate) name: String,
    pub(crate) seed: u64,
    pub(crate) generation: u32,
}

/// What the nodes of a checkpointed run tell each other about its checkpoints. The run's
/// coordinator is on the node of its first spout task: it triggers each checkpoint at the
/// spouts, collects what every task saved, stores the whole checkpoint and has another node
/// store a copy (see `checkpoints`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum CheckpointMessage {
    /// (Coordinator to nodes.) Spouts here: take checkpoint `id`.
    Trigger { id: u64 },
    /// (Coordinator to nodes.) Checkpoint `id` completed (`ok`) or failed.
    Done { id: u64, ok: bool },
    /// (Node to coordinator.) Task `task` saved its part of checkpoint `id` (or could not).
    Saved {
        task: TaskId,
        id: u64,
        saved: Result<crate::checkpoint::TaskSnapshot, String>,
    },
    /// (Node to coordinator.) Spout task `task` settled its end and waits for a checkpoint.
    Settled { task: TaskId },
    /// (Node to coordinator.) Task `task` ended: it saves no more.
    Ended { task: TaskId },
    /// (Coordinator to the copy's node.) Store this checkpoint file.
    Store {
        id: u64,
        #[serde(with = "serde_bytes")]
        file: Vec<u8>,
    },
    /// (Copy's node to coordinator.) Checkpoint `id` was stored (`ok`) or not.
    Stored { id: u64, ok: bool },
}

/// A message between tasks on different nodes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum DataMessage {
    /// A batch for subscription `input` of `to`, sent over link `link` of `from`.
    Batch {
        run: RunId,
        to: TaskId,
        from: TaskId,
        link: u32,
        input: u16,
        mark: Option<Mark>,
        #[serde(with = "serde_bytes")]
        records: Vec<u8>,
    },
    /// A watermark on subscription `input` of `to`.
    Mark {
        run: RunId,
        to: TaskId,
        from: TaskId,
        input: u16,
        mark: Mark,
    },
    /// `from` has no new data for `to`.
    DataEnd {
        run: RunId,
        to: TaskId,
        from: TaskId,
    },
    /// `from` sends `to` nothing more.
    End {
        run: RunId,
        to: TaskId,
        from: TaskId,
    },
    /// `batches` credits back to link `link` of task `to`.
    Credit {
        run: RunId,
        to: TaskId,
        link: u32,
        batches: u32,
    },
    /// Ack-tree operations for acker task `to`.
    Acks {
        run: RunId,
        to: TaskId,
        ops: Vec<AckMsg>,
    },
    /// An acker's verdicts for spout task `to`.
    Verdicts {
        run: RunId,
        to: TaskId,
        verdicts: Vec<(RootId, TreeOutcome)>,
    },
    /// Node `node` leads the Raft group of replicated task `task` in `term`: send it the
    /// task's input.
    Leader {
        run: RunId,
        task: TaskId,
        node: crate::ids::NodeId,
        term: u64,
    },
    /// About the run's checkpoints.
    Checkpoint {
        run: RunId,
        message: CheckpointMessage,
    },
    /// The sender lost batches with a task that moved: trees of any spout may have gone with
    /// them, so the spouts here fail their trees in flight now.
    TreesLost { run: RunId },
}

impl DataMessage {
    /// The run the message belongs to.
    pub(crate) fn run(&self) -> &RunId {
        match self {
            DataMessage::Batch { run, .. }
            | DataMessage::Mark { run, .. }
            | DataMessage::DataEnd { run, .. }
            | DataMessage::End { run, .. }
            | DataMessage::Credit { run, .. }
            | DataMessage::Acks { run, .. }
            | DataMessage::Verdicts { run, .. }
            | DataMessage::Leader { run, .. }
            | DataMessage::Checkpoint { run, .. }
            | DataMessage::TreesLost { run } => run,
        }
    }
}
