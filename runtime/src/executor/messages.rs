//! The messages executors exchange with each other and with the coordinator.

use std::sync::Arc;

use actix::{Message, Recipient};
use tempest_dsl::engine::{Answer, LinkId, Mark, Payload};
use tempest_dsl::{RootId, TaskId};

use crate::ack::{AckMsg, TreeOutcome};
use crate::checkpoint::TaskSnapshot;

use crate::executor::LocalLink;
use crate::metrics::TaskHistograms;

/// Something arriving on a link. One message type for data and end of stream, so both travel
/// in one FIFO mailbox and the end always comes after the link's last batch.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Deliver(pub(crate) Delivery);

/// What arrives on a link.
pub(crate) enum Delivery {
    /// A batch for subscription `input`, sent over the sender's `link`.
    Batch {
        from: TaskId,
        link: LinkId,
        input: u16,
        payload: Payload,
    },
    /// A watermark on subscription `input`, after the batches sent before it.
    Mark {
        from: TaskId,
        input: u16,
        mark: Mark,
    },
    /// The sender's input is exhausted and its trees settled: nothing new follows.
    DataEnd { from: TaskId },
    /// The sender will send nothing more on this link.
    End { from: TaskId },
}

/// A receiver executed `batches` batches of the sender's `link`: they may be replaced.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Credit {
    pub(crate) link: LinkId,
    pub(crate) batches: u32,
}

/// The addresses a task needs, sent once every actor exists and before any data flows.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Wire {
    /// Outgoing links, indexed by `LinkId`.
    pub(crate) links: Vec<LocalLink>,
    /// Where to return credits, per upstream task, with its number of links to this task.
    pub(crate) upstream: Vec<(TaskId, u32, Arc<Recipient<Credit>>)>,
    /// The ackers, by index (empty when the topology is untracked), shared by every task.
    pub(crate) ackers: Arc<[Recipient<AckBatch>]>,
}

/// Ack-tree operations for one acker, folded per root by the sending task.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AckBatch(pub(crate) Vec<AckMsg>);

/// An acker's verdicts on trees of one spout task.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Verdicts(pub(crate) Vec<(RootId, TreeOutcome)>);

/// Starts a spout.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Start;

/// Asks a spout to stop emitting and end its task once its trees complete.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Drain;

/// What a task tells the coordinator.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) enum TaskEvent {
    /// The task ended normally; its histograms go into the run report.
    Finished {
        task: TaskId,
        histograms: Box<TaskHistograms>,
    },
    /// The task hit a fatal error (a panic, a failed open, a bad batch): the run stops.
    Failed { task: TaskId, error: String },
    /// The task saved its part of checkpoint `id` (or could not: why).
    Checkpointed {
        task: TaskId,
        id: u64,
        saved: Result<TaskSnapshot, String>,
    },
    /// A spout's source is done (or drained) and its trees settled: it waits for a checkpoint
    /// that holds its end, so the next one should come now.
    Settled { task: TaskId },
}

/// Asks a spout to take its part of checkpoint `id`: record its position, then send the
/// barrier on all its links.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TriggerCheckpoint(pub(crate) u64);

/// A task that trees of this run went through was lost at this instant (its node died, or a
/// replicated task's leader changed): a spout fails at once every tree it started before,
/// instead of waiting out the message timeout, so it replays them and its window of pending
/// trees frees up.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TreesLost(pub(crate) std::time::Instant);

/// Checkpoint `id` completed (`ok`) or failed: a spout whose source is done and settled may
/// end once a checkpoint taken after that completed (a restore then never rewinds it), or
/// after a few such checkpoints failed (it does not wait for ever).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CheckpointDone {
    pub(crate) id: u64,
    pub(crate) ok: bool,
}

/// A replicated task's proposal `seq` was committed and applied (`Ok`: what the state machine
/// returned) or not (`Err`: why).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Committed {
    pub(crate) seq: u64,
    pub(crate) result: Result<Answer, String>,
}

/// Proposes a replicated task's command to its Raft group and resolves once it is committed
/// and applied (with what applying it returned), or refused.
pub(crate) type Propose = Arc<
    dyn Fn(Vec<u8>) -> futures_util::future::BoxFuture<'static, Result<Answer, String>>
        + Send
        + Sync,
>;

/// A replicated task leads its group again: credits of batches it sent before went elsewhere,
/// so its links start over with their initial credit.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Refill;
