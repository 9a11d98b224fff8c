//! The contract between a built [`Topology`](crate::Topology) and the runtime that executes it.
//!
//! User code never calls this module; the runtime does. The split keeps every piece of code that
//! is generic over user record types here, where the typed builder can reach it, and leaves the
//! runtime free of user types: it moves type-erased [`Payload`]s between tasks and drives
//! [`SpoutTask`]s and [`BoltTask`]s through trait objects, one call per batch.
//!
//! ```text
//!   runtime (actors, links, acker)             engine (typed, per task)
//!   ------------------------------             ------------------------
//!   Data{input, source, Payload} ──► BoltTask::execute_batch ──► Bolt::execute ──► Emitter
//!                                                                      │ routes, batches
//!   links / credits ◄── take_ready(LinkId, Payload) ◄──────────────────┘
//!   ackers          ◄── take_acks(AckOp)
//!   links (in order) ◄── take_marks(Mark)      watermarks, after the data they follow
//!   Mark{input, source} ──► BoltTask::on_mark   a channel's watermark moved
//! ```
//!
//! Watermarks are control messages ([`Mark`]) on every link, in order with its batches. A
//! spout's come from its [`EventClock`](crate::window::EventClock); a bolt forwards the minimum
//! over its input channels ([`Valve`](crate::window::Valve)), unless it declares its own event
//! time. The runtime sends a task's marks whenever it flushes the task's partial batches, so a
//! mark always follows the data emitted before it.

pub(crate) mod batch;
pub(crate) mod bolt_task;
pub(crate) mod code;
pub(crate) mod committed;
pub(crate) mod input;
pub(crate) mod route;
pub(crate) mod spout_task;
pub(crate) mod stateful_task;
pub(crate) mod window_task;

pub use crate::window::{Channel, Mark};
pub use batch::{Payload, PayloadCodec, TypedBatch};
pub use stateful_task::{Answer, Proposal, StateMachine, exported_state};

use crate::component::{SpoutStatus, TaskError};
use crate::ids::{MsgId, RootId, TaskId};

/// An outgoing link of a task: one (subscription, target task) pair. A task's links are
/// numbered densely; the runtime assigns the numbers in [`RouteSetup::first_link`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u32);

/// An ack-tree operation recorded by a task, for the runtime to send to the acker that owns the
/// root (or, for `Init`, to remember at the spout as well).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOp {
    /// A spout started tree `root` for message `msg`; `xor` is the XOR of its first edges.
    Init {
        /// The tree.
        root: RootId,
        /// XOR of the edge ids of the spout tuple's delivered copies.
        xor: u64,
        /// The spout's message id.
        msg: MsgId,
    },
    /// A tuple of tree `root` was processed: `xor` is its edge XOR the edges of its children.
    Ack {
        /// The tree.
        root: RootId,
        /// Edge of the acked tuple XOR the edges emitted anchored to it.
        xor: u64,
    },
    /// A tuple of tree `root` failed: the whole tree fails.
    Fail {
        /// The tree.
        root: RootId,
    },
    /// Restart the timeout of tree `root`.
    Reset {
        /// The tree.
        root: RootId,
    },
    /// A window took a tuple of tree `root`: the tree no longer holds its spout's watermark
    /// (it stays in flight until the window lets go of the tuple).
    Park {
        /// The tree.
        root: RootId,
    },
}

/// What the runtime tells a task about its place in the physical plan.
#[derive(Clone, Debug)]
pub struct TaskSetup {
    /// The task's id.
    pub task_id: TaskId,
    /// The task's index within its component.
    pub task_index: u32,
    /// For every output stream of the component (in the IR's order), its subscriptions.
    pub outputs: Vec<Vec<RouteSetup>>,
    /// A random seed for the task's ack-tree ids.
    pub id_seed: u64,
    /// The input channels of this task, (upstream task, subscription) pairs: its watermark
    /// is the minimum over them.
    pub channels: Vec<Channel>,
    /// Whether a stateful task's state lives in its Raft group (a cluster) rather than in the
    /// task (an in-process run).
    pub replicated: bool,
}

/// One subscription of one output stream, from one sending task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSetup {
    /// The subscribing component's index in the IR.
    pub consumer: usize,
    /// The index of the subscription among the consumer's inputs.
    pub input: usize,
    /// The link to the consumer's task 0; task `i` is `first_link + i`.
    pub first_link: LinkId,
    /// The number of the consumer's tasks.
    pub tasks: u32,
    /// The consumer's task indices local to the sender, best first (for local-or-shuffle).
    pub preferred: Vec<u32>,
}

/// An instantiated task.
pub enum Task {
    /// A spout task.
    Spout(Box<dyn SpoutTask>),
    /// A bolt task.
    Bolt(Box<dyn BoltTask>),
}

/// The output side every task shares: what it emitted, ready to send.
pub trait TaskOutput: Send {
    /// Moves the batches that are full (or flushed) into `out`.
    fn take_ready(&mut self, out: &mut Vec<(LinkId, Payload)>);
    /// Closes every partly filled batch so that `take_ready` returns it.
    fn flush(&mut self);
    /// Moves the ack-tree operations recorded so far into `out`.
    fn take_acks(&mut self, out: &mut Vec<AckOp>);
    /// Moves the watermark marks to send on every outgoing link into `out`, at processing time
    /// `now_ms`. Call right after `flush` and sending what it made ready.
    fn take_marks(&mut self, now_ms: i64, out: &mut Vec<Mark>);
    /// The largest event time the task emitted (or, a windowed task, took in) since the last
    /// call, where it knows event time: the runtime measures time skew from it.
    fn take_event_time(&mut self) -> Option<i64> {
        None
    }
    /// Records emitted so far.
    fn emitted(&self) -> u64;
}

/// A spout task as the runtime drives it.
pub trait SpoutTask: TaskOutput {
    /// Calls `Spout::open`.
    fn open(&mut self) -> Result<(), TaskError>;
    /// Calls `Spout::next` until at least `budget` records were emitted or the spout is not
    /// `Active`. Returns the last status; an `Err` from the spout is returned as is.
    fn next_batch(&mut self, budget: usize) -> Result<SpoutStatus, TaskError>;
    /// Tree `root` of message `msg` completed: calls `Spout::ack`.
    fn ack(&mut self, root: RootId, msg: MsgId);
    /// Tree `root` of message `msg` failed or timed out: calls `Spout::fail`.
    fn fail(&mut self, root: RootId, msg: MsgId);
    /// A window took a tuple of tree `root`: it no longer holds the watermark.
    fn parked(&mut self, _root: RootId) {}
    /// Trees in flight that no window has taken, when the task tracks that (topologies with
    /// windows): `max_spout_pending` bounds these, not the trees windows hold.
    fn unparked(&self) -> Option<usize> {
        None
    }
    /// The spout emits no new data (its source is done, or it was drained: then no replay
    /// follows either): its watermark goes to the end of time once its trees settle.
    fn end_of_data(&mut self, _replays_follow: bool) {}
    /// Calls `Spout::snapshot`: its position at a checkpoint barrier, encoded (`None`: it
    /// cannot be rewound).
    fn snapshot(&mut self) -> Option<Vec<u8>> {
        None
    }
    /// Calls `Spout::restore` with a position `snapshot` recorded, then `Spout::fail` for
    /// each message that was in flight then, so it replays them. `owed` are the replays it
    /// owed at that snapshot ([`SpoutTask::owed_replays`]; its position holds them).
    fn restore(
        &mut self,
        _position: &[u8],
        _in_flight: &[MsgId],
        _owed: &[MsgId],
    ) -> Result<(), TaskError> {
        Err(TaskError::new("this spout cannot be rewound"))
    }
    /// Under exactly-once, for a seekable spout: the messages that failed and whose replay it
    /// has not emitted yet (a checkpoint saves them beside its position).
    fn owed_replays(&self) -> Vec<MsgId> {
        Vec::new()
    }
    /// Calls `Spout::close`.
    fn close(&mut self);
    /// Under exactly-once, for a seekable spout: its committed position, the first message
    /// whose tree is not complete (every smaller id's is). `None` otherwise.
    fn committed(&self) -> Option<MsgId> {
        None
    }
    /// Calls `Spout::seek` (after `open`, before the first `next`): the spout emits again
    /// every message from `from` on.
    fn seek(&mut self, _from: MsgId) -> Result<(), TaskError> {
        Err(TaskError::new("this spout cannot seek"))
    }
    /// Source alignment: the watermark by which the task's progress is compared with its
    /// component's other tasks (`i64::MAX` while it is idle or done: it holds nobody back).
    /// `None` for a spout without event time.
    fn aligned_watermark(&self) -> Option<i64> {
        None
    }
    /// Source alignment: the following `next_batch` calls stop once the watermark passes
    /// `limit` (`None`: no limit).
    fn set_watermark_limit(&mut self, _limit: Option<i64>) {}
}

/// A bolt task as the runtime drives it.
pub trait BoltTask: TaskOutput {
    /// Calls `Bolt::prepare`.
    fn prepare(&mut self) -> Result<(), TaskError>;
    /// Executes every record of a batch that arrived on subscription `input` from `source`,
    /// at processing time `now_ms` (the engine reads no clock: the runtime passes it in).
    fn execute_batch(
        &mut self,
        input: u16,
        source: TaskId,
        payload: Payload,
        now_ms: i64,
    ) -> Result<BatchOutcome, EngineError>;
    /// Calls `Bolt::tick` at processing time `now_ms`. `inputs_waiting` says deliveries are
    /// queued and not executed yet.
    fn tick(&mut self, inputs_waiting: bool, now_ms: i64) -> Result<(), TaskError>;
    /// Calls `Bolt::finish`.
    fn finish(&mut self) -> Result<(), TaskError>;
    /// A watermark mark arrived on channel (`source`, `input`), after every batch the channel
    /// delivered before it, at processing time `now_ms`.
    fn on_mark(
        &mut self,
        source: TaskId,
        input: u16,
        mark: Mark,
        now_ms: i64,
    ) -> Result<(), TaskError>;
    /// Upstream task `source` will send no more data (its channels' watermarks go to the end
    /// of time), at processing time `now_ms`.
    fn input_ended(&mut self, source: TaskId, now_ms: i64) -> Result<(), TaskError>;
    /// Window counters, for windowed bolts.
    fn window_stats(&self) -> Option<WindowStats> {
        None
    }
    /// Whether batches from `source` should wait: an event-time windowed bolt holds back an
    /// upstream task whose watermark runs too far ahead of its own (watermark alignment), so
    /// that its windows do not pile up. The runtime keeps such batches, and their credits (so
    /// the upstream task stops), until this turns false, which only a mark can make happen;
    /// batches of the other upstream tasks go on.
    fn defers(&self, _source: TaskId) -> bool {
        false
    }
    /// A stateful task that owns its state (not replicated): the state, encoded, for a
    /// checkpoint. `None` for every other task.
    fn snapshot_state(&mut self) -> Option<Result<Vec<u8>, EngineError>> {
        None
    }
    /// Replaces the state of a stateful task that owns it with one `snapshot_state` encoded.
    fn restore_state(&mut self, _bytes: &[u8]) -> Result<(), EngineError> {
        Err(EngineError::Setup(
            "the task has no state to restore".into(),
        ))
    }
    /// A replicated stateful task: moves the commands its batches became into `out`, for the
    /// runtime to propose to the task's Raft group in order (other tasks have none).
    fn take_proposals(&mut self, _out: &mut Vec<Proposal>) {}
    /// Proposals not committed (or refused) yet.
    fn in_flight(&self) -> usize {
        0
    }
    /// Proposal `seq` was committed and applied (`Ok`, with what the state machine returned)
    /// or did not commit (`Err`): its inputs' outputs are emitted and the inputs acked, or
    /// their trees failed.
    fn committed(
        &mut self,
        _seq: u64,
        _applied: Result<Answer, String>,
    ) -> Result<BatchOutcome, EngineError> {
        Err(EngineError::Setup("the task proposes nothing".into()))
    }
}

/// What a windowed bolt task has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Window firings.
    pub fires: u64,
    /// Late tuples (sent to the late stream, or counted and acked).
    pub late: u64,
    /// Windows open now.
    pub open_windows: u64,
    /// The event-time watermark.
    pub watermark: i64,
}

impl WindowStats {
    /// Counters at zero, the watermark at the beginning of time.
    pub fn new() -> Self {
        WindowStats {
            watermark: i64::MIN,
            ..WindowStats::default()
        }
    }
}

/// What executing one batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Records executed (successfully or not).
    pub executed: u64,
    /// Records whose `execute` returned `Err`.
    pub failed: u64,
    /// The first error of the batch, for the log.
    pub first_error: Option<TaskError>,
    /// Records a stateful task skipped as replays of records it applied before
    /// (exactly-once), their stored outputs emitted again.
    pub skipped: u64,
    /// Under exactly-once, how many input ids a stateful task remembers after the batch.
    pub remembered: Option<u64>,
}

impl BatchOutcome {
    /// Counts a failure, keeping the first error.
    pub fn note_error(&mut self, err: TaskError) {
        self.failed += 1;
        if self.first_error.is_none() {
            self.first_error = Some(err);
        }
    }

    /// Counts one executed record and its result; returns whether it succeeded.
    pub fn note(&mut self, result: Result<(), TaskError>) -> bool {
        self.executed += 1;
        match result {
            Ok(()) => true,
            Err(err) => {
                self.note_error(err);
                false
            }
        }
    }
}

/// A failure of the engine itself (not of user code): a batch of the wrong type, an unknown
/// input, a component instantiated as the wrong kind. It points at a bug or a corrupt frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// A batch held records of another type than the subscription carries.
    #[error("a batch holds `{found}` records, but the subscription carries `{expected}`")]
    PayloadType {
        /// The type the subscription expects.
        expected: &'static str,
        /// The type the batch held.
        found: &'static str,
    },
    /// A batch named a subscription the bolt does not have.
    #[error("the bolt has no input {0}")]
    NoSuchInput(u16),
    /// The plan asked for something the topology does not have.
    #[error("task setup does not match the topology: {0}")]
    Setup(String),
    /// A batch could not be encoded or decoded (a corrupt or foreign frame).
    #[error("a batch of `{record}` does not {action}: {why}")]
    Codec {
        /// The record type.
        record: &'static str,
        /// `encode` or `decode`.
        action: &'static str,
        /// What went wrong.
        why: String,
    },
}
