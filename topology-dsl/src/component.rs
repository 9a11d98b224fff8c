//! The traits users implement: [`Spout`] (a source) and [`Bolt`] (a processing step), with the
//! context a task sees and the error its user code returns.

use std::sync::Arc;

use crate::config::Guarantee;
use crate::emitter::{Emitter, SpoutEmitter};
use crate::ids::{MsgId, TaskId};
use crate::record::Record;
use crate::tuple::Tuple;

/// A source of tuples. Each task of a spout component runs its own clone of the value given to
/// [`spout`](crate::spout).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tempest_dsl::{MsgId, Record, Spout, SpoutEmitter, SpoutStatus, TaskContext, TaskError};
///
/// #[derive(Clone, Debug, Serialize, Deserialize, Record)]
/// struct Number { n: u64 }
///
/// /// Emits 0..limit, split between its tasks, and emits again whatever fails.
/// #[derive(Clone)]
/// struct Numbers { limit: u64, next: u64, step: u64, replay: Vec<u64> }
///
/// impl Spout for Numbers {
///     type Out = Number;
///     const REPLAYABLE: bool = true;
///     fn open(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
///         self.next = u64::from(ctx.task_index());
///         self.step = u64::from(ctx.parallelism());
///         Ok(())
///     }
///     fn next(&mut self, out: &mut SpoutEmitter<Number>) -> Result<SpoutStatus, TaskError> {
///         let n = match self.replay.pop() {
///             Some(n) => n,
///             None if self.next >= self.limit => return Ok(SpoutStatus::Done),
///             None => {
///                 self.next += self.step;
///                 self.next - self.step
///             }
///         };
///         out.emit_tracked(MsgId(n), Number { n }); // one tree per message
///         Ok(SpoutStatus::Active)
///     }
///     fn fail(&mut self, msg: MsgId) {
///         self.replay.push(msg.0); // the next `next` emits it again
///     }
/// }
/// ```
pub trait Spout: Clone + Send + 'static {
    /// The record type of the default stream (and of any named stream the spout declares).
    type Out: Record;

    /// Whether the spout replays what fails: its `fail(msg)` remembers the message and a later
    /// `next` emits it again (the runtime only calls `fail`; replaying is the spout's job, as in
    /// Storm). Exactly-once requires replayable spouts.
    const REPLAYABLE: bool = false;

    /// Whether the spout can be rewound to a checkpoint: [`Spout::snapshot`] records its
    /// position and [`Spout::restore`] goes back to one. Checkpoints
    /// ([`TopologyConfig::checkpoint_interval`](crate::TopologyConfig::checkpoint_interval))
    /// need every spout to be.
    const REWINDABLE: bool = false;

    /// Whether the spout can seek to a message id: [`Spout::seek`] makes it emit again every
    /// message from that id on. Its message ids must grow in the order it first emits them (a
    /// byte offset, a line number, a sequence number). Under exactly-once in a cluster the
    /// runtime records, in the manager, its committed position (the first message whose tree
    /// did not complete; every smaller one's did) and, when the task starts again elsewhere
    /// after its node died, seeks there: what follows is emitted again with the same tuple
    /// ids, and what was applied already is skipped.
    ///
    /// The position also bounds what stateful bolts remember under exactly-once: each tuple
    /// carries its message and the committed position at its emit, and a stateful task
    /// forgets the ids of the messages below the latest position it saw, and skips a tuple of
    /// such a message as stale (its tree completed). So the ids must grow across instances
    /// too: a spout started again continues from where it was sought, never with fresh
    /// messages below ids it emitted before.
    const SEEKABLE: bool = false;

    /// Called once per task before the first `next`. An error stops the topology.
    fn open(&mut self, _ctx: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }

    /// Emits zero or more tuples and says whether there is more to come. The runtime calls it in
    /// a loop (never concurrently with `ack` or `fail`) until the task's output batch is full,
    /// its queues are full, or `max_spout_pending` trees are in flight. Limits are checked
    /// between calls: a call that emits many records may overshoot them, so emit one record
    /// (or a few) per call.
    ///
    /// An `Err` is counted and logged and the task backs off briefly, as for [`SpoutStatus::Idle`].
    fn next(&mut self, out: &mut SpoutEmitter<Self::Out>) -> Result<SpoutStatus, TaskError>;

    /// The tree of a message emitted with [`SpoutEmitter::emit_tracked`] completed. Under
    /// at-most-once it is called right after the emit.
    fn ack(&mut self, _msg: MsgId) {}

    /// The tree of a message failed or timed out; a replayable spout emits it again.
    fn fail(&mut self, _msg: MsgId) {}

    /// Called once when the task stops after draining.
    fn close(&mut self) {}

    /// Its position at a checkpoint barrier (see [`checkpoint`](crate::checkpoint)): what
    /// [`Spout::restore`] needs to emit again everything emitted after this call, including
    /// the messages it still has to replay. Of the messages in flight (emitted, not acked
    /// yet), the runtime saves those whose trees fail afterwards and, after a restore, passes
    /// them to `fail` one by one: the restored spout must be able to emit a message again from
    /// its [`MsgId`] alone (an offset, a line number), or keep what it needs for that in the
    /// snapshot (a spout that holds in-flight payloads in a map must put that map in it). `None` (the default) for a spout that
    /// cannot be rewound: a checkpoint it is asked for then fails.
    fn snapshot(&self) -> Option<crate::SpoutSnapshot> {
        None
    }

    /// Goes back to a position [`Spout::snapshot`] recorded, after `open` and before the
    /// first `next`. An error stops the run (it cannot start where it should).
    fn restore(&mut self, _snapshot: &crate::SpoutSnapshot) -> Result<(), TaskError> {
        Err(TaskError::new(
            "this spout cannot be rewound (Spout::restore)",
        ))
    }

    /// Makes the next `next` calls emit every message from `from` on, in order (see
    /// [`Spout::SEEKABLE`]); called after `open`, before the first `next`. An error stops
    /// the task (it cannot start where it should).
    fn seek(&mut self, _from: MsgId) -> Result<(), TaskError> {
        Err(TaskError::new("this spout cannot seek (Spout::seek)"))
    }
}

/// What a spout's [`Spout::next`] says about its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpoutStatus {
    /// There may be more right now: call `next` again soon.
    Active,
    /// Nothing is available now: back off briefly before calling `next` again.
    Idle,
    /// The source is exhausted (a finite input). Once every tracked message has completed, the
    /// task ends and its downstream tasks drain. If a message fails meanwhile, `fail` runs and
    /// `next` is called again, so a replayable spout can re-emit it.
    Done,
}

/// A processing step. Each task of a bolt component runs its own clone of the value given to
/// [`bolt`](crate::bolt).
///
/// By default a bolt follows Storm's `BasicBolt`: every emit is anchored to the input being
/// executed, and the input is acked when `execute` returns `Ok` and failed (its tree replayed)
/// on `Err`. A bolt that batches or joins sets [`Bolt::MANUAL_ACK`] and calls
/// [`Emitter::ack`], [`Emitter::fail`] and [`Emitter::emit_anchored`] itself.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tempest_dsl::{Bolt, Emitter, Record, TaskError, Tuple};
///
/// #[derive(Clone, Debug, Serialize, Deserialize, Record)]
/// struct Line { text: String }
/// #[derive(Clone, Debug, Serialize, Deserialize, Record)]
/// struct Word { word: String }
///
/// #[derive(Clone)]
/// struct Split;
///
/// impl Bolt for Split {
///     type In = Line;
///     type Out = Word;
///     fn execute(&mut self, line: Tuple<Line>, out: &mut Emitter<Word>) -> Result<(), TaskError> {
///         for w in line.text.split_whitespace() {
///             out.emit(Word { word: w.to_lowercase() }); // anchored to `line`
///         }
///         Ok(()) // `line` is acked
///     }
/// }
/// ```
pub trait Bolt: Clone + Send + 'static {
    /// The record type this bolt consumes. Fan-in from streams of other types works through
    /// `From` impls: a bolt may subscribe to a `Handle<X>` whenever `In: From<X>`.
    type In: Record;
    /// The record type of the default stream (and of any named stream the bolt declares).
    type Out: Record;

    /// Whether the bolt acks its inputs itself (for bolts that batch or join). When `false`
    /// (the default) the runtime acks each input after `execute` returns.
    ///
    /// Under a tracked guarantee a manual-ack bolt must ack what it holds from `execute` or
    /// `tick`, not only in `finish`: `finish` runs once every tree has completed, so tuples held
    /// until then time out and are replayed.
    const MANUAL_ACK: bool = false;

    /// Whether executing the same input again changes nothing more (an upsert keyed by
    /// [`Tuple::id`](crate::Tuple::id), a write of a file named by it, a stateless transform).
    /// Under exactly-once every bolt that emits to no one (a sink) must be idempotent, since
    /// a replay re-runs it: `build()` refuses the topology otherwise.
    const IDEMPOTENT: bool = false;

    /// Called once per task before the first input. An error stops the topology.
    fn prepare(&mut self, _ctx: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }

    /// Processes one input. `Err` fails the input (and, with tracking, replays its tree).
    fn execute(
        &mut self,
        input: Tuple<Self::In>,
        out: &mut Emitter<Self::Out>,
    ) -> Result<(), TaskError>;

    /// Called every `tick_every` interval when the bolt declares one (Storm's tick tuples), for
    /// bolts that flush or expire on time. No input is being executed: emits here are
    /// unanchored, except a manual-ack bolt's `emit_anchored` to tuples it holds.
    fn tick(&mut self, _out: &mut Emitter<Self::Out>) -> Result<(), TaskError> {
        Ok(())
    }

    /// Called after every input batch, before the acks of the batch's inputs leave the task:
    /// a bolt that buffers writes (a sink) makes them durable here, once per batch instead of
    /// once per input (Flink's `SinkWriter::flush`). `Err` fails every input the batch acked
    /// (their trees replay); the task goes on.
    ///
    /// ```
    /// use std::io::Write;
    /// use serde::{Deserialize, Serialize};
    /// use tempest_dsl::{Bolt, Emitter, Record, TaskError, Tuple};
    ///
    /// #[derive(Clone, Debug, Serialize, Deserialize, Record)]
    /// struct Line { text: String }
    ///
    /// #[derive(Clone, Default)]
    /// struct Lines { buffer: Vec<u8> }
    ///
    /// impl Bolt for Lines {
    ///     type In = Line;
    ///     type Out = ();
    ///     fn execute(&mut self, line: Tuple<Line>, _out: &mut Emitter<()>) -> Result<(), TaskError> {
    ///         self.buffer.extend_from_slice(line.text.as_bytes());
    ///         self.buffer.push(b'\n');
    ///         Ok(())
    ///     }
    ///     fn flush(&mut self) -> Result<(), TaskError> {
    ///         std::io::stdout().write_all(&self.buffer)?; // one write per batch
    ///         self.buffer.clear();
    ///         Ok(())
    ///     }
    /// }
    /// ```
    fn flush(&mut self) -> Result<(), TaskError> {
        Ok(())
    }

    /// Called once when every input stream has ended (a finite run, or a drain) and, under a
    /// tracked guarantee, every tree has completed; before the task's own output ends. Emits
    /// here are unanchored unless anchored explicitly, and come after the end-of-data marker:
    /// an event-time window downstream sees them as late.
    fn finish(&mut self, _out: &mut Emitter<Self::Out>) -> Result<(), TaskError> {
        Ok(())
    }
}

/// What a task knows about itself, given to [`Spout::open`] and [`Bolt::prepare`].
#[derive(Clone, Debug)]
pub struct TaskContext {
    topology: Arc<str>,
    component: Arc<str>,
    task_id: TaskId,
    task_index: u32,
    parallelism: u32,
    guarantee: Guarantee,
}

impl TaskContext {
    /// The context of task `task_index` of `parallelism` of `component`.
    pub fn new(
        topology: Arc<str>,
        component: Arc<str>,
        task_id: TaskId,
        task_index: u32,
        parallelism: u32,
        guarantee: Guarantee,
    ) -> Self {
        TaskContext {
            topology,
            component,
            task_id,
            task_index,
            parallelism,
            guarantee,
        }
    }

    /// The topology's name.
    pub fn topology(&self) -> &str {
        &self.topology
    }

    /// The component's name.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// The task's id, unique within the running topology.
    pub fn task_id(&self) -> TaskId {
        self.task_id
    }

    /// The task's index among its component's tasks, `0..parallelism`.
    pub fn task_index(&self) -> u32 {
        self.task_index
    }

    /// The number of tasks of this component.
    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }

    /// The topology's delivery guarantee.
    pub fn guarantee(&self) -> Guarantee {
        self.guarantee
    }
}

/// An error raised by user code in a task. In `execute` it fails the input tuple.
///
/// Any `std::error::Error` converts into it, so `?` works in `execute`:
///
/// ```
/// use tempest_dsl::TaskError;
///
/// fn parse(s: &str) -> Result<u64, TaskError> {
///     Ok(s.parse::<u64>()?)
/// }
/// assert!(parse("12").is_ok());
/// assert_eq!(parse("x").unwrap_err().to_string(), "invalid digit found in string");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskError {
    message: String,
}

impl TaskError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        TaskError {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for TaskError {
    fn from(err: E) -> Self {
        TaskError::new(err.to_string())
    }
}
