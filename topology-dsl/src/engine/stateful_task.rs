//! The typed task behind every [`StatefulBolt`], in its two modes, and the state machine a
//! replicated task's Raft group applies.
//!
//! - **Local** (an in-process run): the task owns the state and executes each batch at once.
//! - **Replicated** (a cluster): the task owns no state. Each input batch becomes one command
//!   ([`Proposal`]) that the runtime proposes to the task's Raft group; every replica's
//!   [`StateMachine`] applies the committed command to its own copy of the state and returns
//!   the outputs, and only the proposer (the leader) gets them back, through
//!   [`BoltTask::committed`], to emit them anchored to their inputs and ack those. A command
//!   that does not commit fails its inputs' trees, which replay.
//!
//! Both modes run the same code ([`StateCore::run`]), so a topology behaves the same in both.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::component::TaskError;
use crate::emitter::Emitter;
use crate::engine::input::InputAdapter;
use crate::engine::{
    AckOp, BatchOutcome, BoltTask, EngineError, LinkId, Mark, Payload, TaskOutput,
};
use crate::ids::{Origin, Source, TaskId, TupleId};
use crate::stateful::{StateEmitter, StatefulBolt};
use crate::tuple::{Tuple, TupleIds};
use crate::window::{Channel, Valve};

/// A command a replicated task asks the runtime to propose to its Raft group: one input batch.
#[derive(Debug)]
pub struct Proposal {
    /// The task's number for it, given back with [`BoltTask::committed`].
    pub seq: u64,
    /// The encoded command.
    pub command: Vec<u8>,
}

/// What a replicated task's state machine answers the replica that proposed a command: its
/// outputs, as a value (the answer never leaves the proposer's process), for
/// [`BoltTask::committed`] to take back.
pub type Answer = Box<dyn std::any::Any + Send>;

/// A replicated task's state as its Raft group applies it: the same on every replica, given
/// the same commands in the same order. Bad bytes are an error, never a panic.
pub trait StateMachine: Send {
    /// Applies one committed command (entry `index` of the log) and returns the outputs, for
    /// the proposer; `answer` is false on a replica that did not propose it (nobody reads its
    /// answer, so it keeps no outputs: the answer is then `()`).
    fn apply(&mut self, command: &[u8], index: u64, answer: bool) -> Result<Answer, EngineError>;
    /// The whole state, encoded.
    fn snapshot(&self) -> Result<Vec<u8>, EngineError>;
    /// The user's state alone, encoded: what a run exports as the task's final state (under
    /// exactly-once a snapshot also holds the ids applied).
    fn export(&self) -> Result<Vec<u8>, EngineError> {
        self.snapshot()
    }
    /// Replaces the state with an encoded one.
    fn restore(&mut self, bytes: &[u8]) -> Result<(), EngineError>;
}

/// One input batch as it travels through the log.
#[derive(Serialize, Deserialize)]
struct Command<In> {
    /// The proposer's processing time.
    time_ms: i64,
    source: TaskId,
    input: u16,
    values: Vec<In>,
    /// Under exactly-once, each input's identity (deterministic id and source); otherwise
    /// empty.
    #[serde(default)]
    origins: Vec<Origin>,
}

/// What executing one batch did: per input, whether it succeeded and how many records it
/// emitted; then every emitted record (stream, record), in order; how many inputs were
/// replays of inputs applied before (skipped, their stored outputs emitted again); and under
/// exactly-once how many input ids the task remembers after it.
#[derive(Debug, PartialEq)]
struct BatchResults<Out> {
    ok: Vec<bool>,
    emitted: Vec<u32>,
    outs: Vec<(u16, Out)>,
    skipped: u32,
    remembered: Option<u64>,
}

/// Under exactly-once, what a stateful task remembers of the inputs it applied: per
/// deterministic tuple id, the outputs it emitted for it, to emit them again for a replay
/// instead of applying the input twice. Part of the state (replicated, snapshotted,
/// checkpointed with it).
///
/// An input that descends from a seekable spout's message ([`Source`]) is remembered until a
/// later input of that spout task shows its committed position past the message: the source
/// acked past it, so it never comes again (a copy still in flight from an earlier attempt is
/// stale, and skipped). Any other input is remembered `retention_ms` of entry time.
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "Out: Serialize", deserialize = "Out: Deserialize<'de>"))]
struct Applied<Out> {
    outputs: BTreeMap<TupleId, Vec<(u16, Out)>>,
    /// The ids without a source, in the order applied, with the entry time of their
    /// application.
    order: VecDeque<(i64, TupleId)>,
    /// The ids with a source, by spout task and message.
    #[serde(default)]
    by_source: BTreeMap<(TaskId, u64), Vec<TupleId>>,
    /// Per spout task, the highest committed position its inputs showed.
    #[serde(default)]
    floors: BTreeMap<TaskId, u64>,
}

impl<Out> Default for Applied<Out> {
    fn default() -> Self {
        Applied {
            outputs: BTreeMap::new(),
            order: VecDeque::new(),
            by_source: BTreeMap::new(),
            floors: BTreeMap::new(),
        }
    }
}

impl<Out> Applied<Out> {
    /// Forgets the ids without a source applied before `before` (entry time).
    fn forget_before(&mut self, before: i64) {
        while let Some(&(at, id)) = self.order.front() {
            if at >= before {
                break;
            }
            self.order.pop_front();
            self.outputs.remove(&id);
        }
    }

    /// Takes in the committed position `source` shows for its spout task: forgets the ids of
    /// that task's messages below it.
    fn raise_floor(&mut self, source: Source) {
        let floor = self.floors.entry(source.task).or_insert(0);
        if source.floor <= *floor {
            return;
        }
        *floor = source.floor;
        let below = (source.task, 0)..(source.task, source.floor);
        while let Some(key) = self.by_source.range(below.clone()).next().map(|(k, _)| *k) {
            for id in self.by_source.remove(&key).unwrap_or_default() {
                self.outputs.remove(&id);
            }
        }
    }

    /// Whether an input of `source` is stale: its message is below a committed position of
    /// its spout task, so its tree completed, with this input applied (or another attempt's).
    fn is_stale(&self, source: Source) -> bool {
        self.floors
            .get(&source.task)
            .is_some_and(|&floor| source.msg < floor)
    }

    /// Remembers an input applied at entry time `at`, with the outputs it emitted.
    fn remember(&mut self, origin: Origin, at: i64, outputs: Vec<(u16, Out)>) {
        self.outputs.insert(origin.id, outputs);
        match origin.source {
            Some(s) => self
                .by_source
                .entry((s.task, s.msg))
                .or_default()
                .push(origin.id),
            None => self.order.push_back((at, origin.id)),
        }
    }
}

/// A snapshot of a stateful task under exactly-once: the user's state and the ids applied,
/// each encoded on its own so that the state can be exported without the ids
/// ([`exported_state`]).
#[derive(Serialize, Deserialize)]
struct DedupSnapshot {
    #[serde(with = "serde_bytes")]
    state: Vec<u8>,
    #[serde(with = "serde_bytes")]
    applied: Vec<u8>,
}

/// The user's state in a stateful task's snapshot: the snapshot itself, or under exactly-once
/// (`exact`) its state part (without the ids applied). Bad bytes are an error.
pub fn exported_state(snapshot: &[u8], exact: bool) -> Result<Vec<u8>, EngineError> {
    if !exact {
        return Ok(snapshot.to_vec());
    }
    rmp_serde::from_slice::<DedupSnapshot>(snapshot)
        .map(|s| s.state)
        .map_err(|e| codec_error("stateful snapshot", "decode", e))
}

/// The user's bolt, its state, and what `execute` needs to run deterministically.
pub(crate) struct StateCore<B: StatefulBolt> {
    bolt: B,
    state: B::State,
    streams: Arc<[Arc<str>]>,
    task_index: u32,
    /// Under exactly-once: the inputs applied, and how long they are remembered.
    dedup: Option<(Applied<B::Out>, i64)>,
}

/// A seed from an entry's index, an input's place in it and the task: the same on every
/// replica (SplitMix64's finalizer over the mixed inputs).
fn entry_seed(index: u64, position: usize, task_index: u32) -> u64 {
    crate::ids::mix64(
        index
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add((position as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9))
            .wrapping_add(u64::from(task_index).rotate_left(40)),
    )
}

impl<B: StatefulBolt> StateCore<B> {
    /// A core with its state at `Default`; `dedup_retention_ms` (exactly-once) makes it
    /// remember the inputs it applied for that long.
    pub(crate) fn new(
        bolt: B,
        streams: Arc<[Arc<str>]>,
        task_index: u32,
        dedup_retention_ms: Option<i64>,
    ) -> Self {
        StateCore {
            bolt,
            state: B::State::default(),
            streams,
            task_index,
            dedup: dedup_retention_ms.map(|ms| (Applied::default(), ms)),
        }
    }

    /// Executes every input of one batch (entry `index`) against the state. Under
    /// exactly-once an input whose id was applied before is skipped, and the outputs stored
    /// for it are emitted again (so downstream gets them, whichever attempt reached it); a
    /// stale one (its spout's committed position passed its message) is skipped with none.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        source: TaskId,
        input: u16,
        values: Vec<B::In>,
        origins: &[Origin],
        time_ms: i64,
        index: u64,
        keep: bool,
    ) -> BatchResults<B::Out> {
        let mut ok = Vec::with_capacity(values.len());
        let mut emitted = Vec::with_capacity(values.len());
        let mut skipped = 0;
        // Every replica stores the outputs of what it applies: it must keep them to emit.
        let dedup = self.dedup.as_mut().filter(|_| !origins.is_empty());
        let mut out =
            StateEmitter::new(Arc::clone(&self.streams), time_ms, keep || dedup.is_some());
        let mut applied = dedup.map(|(applied, retention)| {
            applied.forget_before(time_ms.saturating_sub(*retention));
            applied
        });
        for (position, value) in values.into_iter().enumerate() {
            let origin = origins.get(position).copied().unwrap_or_default();
            let id = origin.id;
            if let Some(a) = applied.as_deref_mut().filter(|_| id.0 != 0) {
                if let Some(s) = origin.source {
                    a.raise_floor(s);
                    if a.is_stale(s) {
                        ok.push(true);
                        emitted.push(0);
                        skipped += 1;
                        continue;
                    }
                }
                if let Some(stored) = a.outputs.get(&id) {
                    out.replay(stored);
                    ok.push(true);
                    emitted.push(stored.len() as u32);
                    skipped += 1;
                    continue;
                }
            }
            out.next_input(entry_seed(index, position, self.task_index));
            let before = out.emitted();
            let tuple = Tuple::new_untracked(value, source, input).with_origin(origin);
            let (bolt, state) = (&self.bolt, &mut self.state);
            // A panic is that input's failure, the same on every replica; the state keeps
            // what `execute` changed before it.
            let done = matches!(
                catch_unwind(AssertUnwindSafe(|| bolt.execute(state, tuple, &mut out))),
                Ok(Ok(()))
            );
            ok.push(done);
            emitted.push((out.emitted() - before) as u32);
            // Only a success counts as applied: a failed input is executed again on replay.
            if let Some(a) = applied.as_deref_mut().filter(|_| done && id.0 != 0) {
                a.remember(origin, time_ms, out.kept_since(before).to_vec());
            }
        }
        BatchResults {
            ok,
            emitted,
            outs: out.into_outs(),
            skipped,
            remembered: applied.map(|a| a.outputs.len() as u64),
        }
    }
}

fn codec_error(record: &'static str, action: &'static str, why: impl ToString) -> EngineError {
    EngineError::Codec {
        record,
        action,
        why: why.to_string(),
    }
}

impl<B: StatefulBolt> StateMachine for StateCore<B> {
    fn apply(&mut self, command: &[u8], index: u64, answer: bool) -> Result<Answer, EngineError> {
        let cmd: Command<B::In> = rmp_serde::from_slice(command)
            .map_err(|e| codec_error(std::any::type_name::<B::In>(), "decode", e))?;
        let results = self.run(
            cmd.source,
            cmd.input,
            cmd.values,
            &cmd.origins,
            cmd.time_ms,
            index,
            answer,
        );
        if !answer {
            return Ok(Box::new(()));
        }
        Ok(Box::new(results))
    }

    fn snapshot(&self) -> Result<Vec<u8>, EngineError> {
        let state = rmp_serde::to_vec(&self.state)
            .map_err(|e| codec_error(std::any::type_name::<B::State>(), "encode", e))?;
        let Some((applied, _)) = &self.dedup else {
            return Ok(state);
        };
        let applied = rmp_serde::to_vec(applied)
            .map_err(|e| codec_error(std::any::type_name::<B::Out>(), "encode", e))?;
        rmp_serde::to_vec(&DedupSnapshot { state, applied })
            .map_err(|e| codec_error("stateful snapshot", "encode", e))
    }

    fn export(&self) -> Result<Vec<u8>, EngineError> {
        rmp_serde::to_vec(&self.state)
            .map_err(|e| codec_error(std::any::type_name::<B::State>(), "encode", e))
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), EngineError> {
        let decode_state = |bytes: &[u8]| {
            rmp_serde::from_slice::<B::State>(bytes)
                .map_err(|e| codec_error(std::any::type_name::<B::State>(), "decode", e))
        };
        match &mut self.dedup {
            None => self.state = decode_state(bytes)?,
            Some((applied, _)) => {
                let snapshot: DedupSnapshot = rmp_serde::from_slice(bytes)
                    .map_err(|e| codec_error("stateful snapshot", "decode", e))?;
                let restored = rmp_serde::from_slice(&snapshot.applied)
                    .map_err(|e| codec_error(std::any::type_name::<B::Out>(), "decode", e))?;
                self.state = decode_state(&snapshot.state)?;
                *applied = restored;
            }
        }
        Ok(())
    }
}

/// The two modes of a stateful task.
enum Mode<B: StatefulBolt> {
    /// The task owns the state; `index` numbers its batches (the seed's "entry").
    Local { core: Box<StateCore<B>>, index: u64 },
    /// The state lives in the task's Raft group; `pending` holds the ids of the inputs of each
    /// proposal not committed yet.
    Replicated {
        next_seq: u64,
        proposals: Vec<Proposal>,
        pending: BTreeMap<u64, (Vec<TupleIds>, Vec<Origin>)>,
    },
}

pub(crate) struct StatefulTaskImpl<B: StatefulBolt> {
    mode: Mode<B>,
    inputs: Arc<[Arc<dyn InputAdapter<B::In>>]>,
    out: Emitter<B::Out>,
    valve: Valve,
    /// Watermarks that moved while proposals were pending, each with the last proposal made
    /// before it: released once every proposal up to that one is answered (a watermark must
    /// not overtake the outputs of the inputs before it, and must not wait for later ones).
    held: std::collections::VecDeque<Held>,
    /// Marks released from `held`, to send.
    released: Vec<Mark>,
}

/// A watermark change waiting for the proposals made before it.
struct Held {
    /// The last proposal made before the change.
    after: u64,
    /// The watermark to forward on the batches (`i64::MIN` when the inputs are idle).
    forwarded: i64,
    /// The marks to send.
    marks: Vec<Mark>,
}

impl<B: StatefulBolt> StatefulTaskImpl<B> {
    pub(crate) fn new(
        core: StateCore<B>,
        replicated: bool,
        inputs: Arc<[Arc<dyn InputAdapter<B::In>>]>,
        out: Emitter<B::Out>,
        channels: &[Channel],
    ) -> Self {
        let mode = if replicated {
            Mode::Replicated {
                next_seq: 0,
                proposals: Vec::new(),
                pending: BTreeMap::new(),
            }
        } else {
            Mode::Local {
                core: Box::new(core),
                index: 0,
            }
        };
        StatefulTaskImpl {
            mode,
            inputs,
            out,
            valve: Valve::new(channels),
            held: std::collections::VecDeque::new(),
            released: Vec::new(),
        }
    }

    /// Emits each input's outputs anchored to it, and acks it (or fails it).
    fn emit_results(
        &mut self,
        ids: Vec<TupleIds>,
        origins: &[Origin],
        results: BatchResults<B::Out>,
        outcome: &mut BatchOutcome,
    ) {
        let tracked = self.out.is_tracking() && !ids.is_empty();
        let mut ids = ids.into_iter();
        let mut origins = origins.iter().copied();
        let mut outs = results.outs.into_iter();
        outcome.skipped += u64::from(results.skipped);
        outcome.remembered = results.remembered.or(outcome.remembered);
        for (ok, n) in results.ok.into_iter().zip(results.emitted) {
            if tracked {
                let origin = origins.next().unwrap_or_default();
                self.out.begin_input(ids.next().unwrap_or_default(), origin);
            }
            for (stream, value) in outs.by_ref().take(n as usize) {
                self.out.emit_on(usize::from(stream), value);
            }
            if tracked {
                self.out.end_input(ok);
            }
            outcome.executed += 1;
            if !ok {
                outcome.note_error(TaskError::new("execute failed or panicked"));
            }
        }
    }

    /// What the inputs' watermark changes downstream (as a plain bolt forwards it). A
    /// replicated task holds the change until the proposals made before it are answered.
    fn watermark_moved(&mut self) {
        let forwarded = self.valve.forwarded();
        match &self.mode {
            Mode::Replicated {
                next_seq, pending, ..
            } if !pending.is_empty() || !self.held.is_empty() => {
                let mut marks = Vec::new();
                self.valve.take_marks(&mut marks);
                self.held.push_back(Held {
                    after: *next_seq,
                    forwarded,
                    marks,
                });
                self.release_held();
            }
            _ => self.out.set_forwarded(forwarded),
        }
    }

    /// Forwards the held watermark changes whose proposals are all answered.
    fn release_held(&mut self) {
        let Mode::Replicated { pending, .. } = &self.mode else {
            return;
        };
        let oldest_pending = pending.keys().next().copied().unwrap_or(u64::MAX);
        while self.held.front().is_some_and(|h| h.after < oldest_pending) {
            let Some(h) = self.held.pop_front() else {
                break;
            };
            self.out.set_forwarded(h.forwarded);
            self.released.extend(h.marks);
        }
    }
}

impl<B: StatefulBolt> BoltTask for StatefulTaskImpl<B> {
    fn prepare(&mut self) -> Result<(), TaskError> {
        Ok(())
    }

    fn execute_batch(
        &mut self,
        input: u16,
        source: TaskId,
        payload: Payload,
        now_ms: i64,
    ) -> Result<BatchOutcome, EngineError> {
        let batch = crate::engine::input::adapt(&self.inputs, input, payload)?;
        self.valve.data((source, input));
        let mut outcome = BatchOutcome::default();
        match &mut self.mode {
            Mode::Local { core, index } => {
                *index += 1;
                let results = core.run(
                    source,
                    input,
                    batch.values,
                    &batch.origins,
                    now_ms,
                    *index,
                    true,
                );
                self.emit_results(batch.ids, &batch.origins, results, &mut outcome);
            }
            Mode::Replicated {
                next_seq,
                proposals,
                pending,
            } => {
                let command = rmp_serde::to_vec(&Command {
                    time_ms: now_ms,
                    source,
                    input,
                    values: batch.values,
                    origins: batch.origins.clone(),
                })
                .map_err(|e| codec_error(std::any::type_name::<B::In>(), "encode", e))?;
                *next_seq += 1;
                proposals.push(Proposal {
                    seq: *next_seq,
                    command,
                });
                pending.insert(*next_seq, (batch.ids, batch.origins));
            }
        }
        Ok(outcome)
    }

    fn snapshot_state(&mut self) -> Option<Result<Vec<u8>, EngineError>> {
        match &self.mode {
            Mode::Local { core, .. } => Some(core.snapshot()),
            Mode::Replicated { .. } => None,
        }
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), EngineError> {
        match &mut self.mode {
            Mode::Local { core, .. } => core.restore(bytes),
            Mode::Replicated { .. } => Err(EngineError::Setup(
                "a replicated task's state lives in its Raft group".into(),
            )),
        }
    }

    fn take_proposals(&mut self, out: &mut Vec<Proposal>) {
        if let Mode::Replicated { proposals, .. } = &mut self.mode {
            out.append(proposals);
        }
    }

    fn in_flight(&self) -> usize {
        match &self.mode {
            Mode::Local { .. } => 0,
            Mode::Replicated { pending, .. } => pending.len(),
        }
    }

    fn committed(
        &mut self,
        seq: u64,
        applied: Result<Answer, String>,
    ) -> Result<BatchOutcome, EngineError> {
        let Mode::Replicated { pending, .. } = &mut self.mode else {
            return Err(EngineError::Setup(
                "a commit for a task that is not replicated".into(),
            ));
        };
        let Some((ids, origins)) = pending.remove(&seq) else {
            return Ok(BatchOutcome::default());
        };
        let mut outcome = BatchOutcome::default();
        let results = applied.and_then(|answer| {
            answer
                .downcast::<BatchResults<B::Out>>()
                .map(|r| *r)
                .map_err(|_| "the state machine answered something else".to_owned())
        });
        match results {
            Ok(results) => self.emit_results(ids, &origins, results, &mut outcome),
            Err(why) => {
                // Not committed (not the leader, or the group lost its quorum): the inputs'
                // trees fail and replay.
                for id in &ids {
                    self.out.fail_ids(id);
                }
                outcome.failed = ids.len() as u64;
                outcome.first_error = Some(TaskError::new(why));
            }
        }
        self.release_held();
        Ok(outcome)
    }

    fn tick(&mut self, _inputs_waiting: bool, _now_ms: i64) -> Result<(), TaskError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        Ok(())
    }

    fn on_mark(
        &mut self,
        source: TaskId,
        input: u16,
        mark: Mark,
        _now_ms: i64,
    ) -> Result<(), TaskError> {
        self.valve.mark((source, input), mark);
        self.watermark_moved();
        Ok(())
    }

    fn input_ended(&mut self, source: TaskId, _now_ms: i64) -> Result<(), TaskError> {
        self.valve.end(source);
        self.watermark_moved();
        Ok(())
    }
}

impl<B: StatefulBolt> TaskOutput for StatefulTaskImpl<B> {
    fn take_ready(&mut self, out: &mut Vec<(LinkId, Payload)>) {
        self.out.take_ready(out);
    }
    fn flush(&mut self) {
        self.out.flush();
    }
    fn take_acks(&mut self, out: &mut Vec<AckOp>) {
        self.out.take_acks(out);
    }
    fn take_marks(&mut self, _now_ms: i64, out: &mut Vec<Mark>) {
        out.append(&mut self.released);
        if self.held.is_empty() {
            self.valve.take_marks(out);
        }
    }
    fn emitted(&self) -> u64 {
        self.out.emitted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;
    use crate::stateful::KeyedState;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Record)]
    struct Word {
        word: String,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Record)]
    struct WordCount {
        word: String,
        count: u64,
    }

    #[derive(Clone)]
    struct Count;

    impl StatefulBolt for Count {
        type In = Word;
        type Out = WordCount;
        type State = KeyedState<String, u64>;
        fn execute(
            &self,
            state: &mut KeyedState<String, u64>,
            input: Tuple<Word>,
            out: &mut StateEmitter<WordCount>,
        ) -> Result<(), TaskError> {
            let word = input.into_value().word;
            if word == "boom" {
                panic!("a bad word");
            }
            let count = state.entry(word.clone()).or_default();
            *count += 1;
            let count = *count;
            out.emit(WordCount { word, count });
            Ok(())
        }
    }

    fn core() -> StateCore<Count> {
        StateCore::new(Count, Arc::from(vec![Arc::from("default")]), 0, None)
    }

    fn command(values: &[&str]) -> Vec<u8> {
        command_at(7, values, &[])
    }

    fn command_at(time_ms: i64, values: &[&str], ids: &[u64]) -> Vec<u8> {
        let cmd = Command {
            time_ms,
            source: TaskId(1),
            input: 0,
            values: values
                .iter()
                .map(|s| Word {
                    word: s.to_string(),
                })
                .collect::<Vec<_>>(),
            origins: ids
                .iter()
                .map(|&i| Origin {
                    id: TupleId(i),
                    source: None,
                })
                .collect(),
        };
        rmp_serde::to_vec(&cmd).expect("encodes")
    }

    /// A command whose inputs descend from seekable spout messages: (word, id, spout task,
    /// message, committed position).
    fn command_from(time_ms: i64, inputs: &[(&str, u64, u32, u64, u64)]) -> Vec<u8> {
        let cmd = Command {
            time_ms,
            source: TaskId(1),
            input: 0,
            values: inputs
                .iter()
                .map(|(w, ..)| Word {
                    word: w.to_string(),
                })
                .collect::<Vec<_>>(),
            origins: inputs
                .iter()
                .map(|&(_, id, task, msg, floor)| Origin {
                    id: TupleId(id),
                    source: Some(Source {
                        task: TaskId(task),
                        msg,
                        floor,
                    }),
                })
                .collect(),
        };
        rmp_serde::to_vec(&cmd).expect("encodes")
    }

    fn results(answer: Answer) -> BatchResults<WordCount> {
        *answer
            .downcast::<BatchResults<WordCount>>()
            .expect("the outputs")
    }

    /// Whether `answer` is the empty answer of a replica that did not propose.
    fn is_empty(answer: Answer) -> bool {
        answer.downcast::<()>().is_ok()
    }

    fn wc(word: &str, count: u64) -> (u16, WordCount) {
        (
            0,
            WordCount {
                word: word.into(),
                count,
            },
        )
    }

    #[test]
    fn exactly_once_skips_a_replayed_input_and_emits_its_stored_outputs_again() {
        let exact = || StateCore::new(Count, Arc::from(vec![Arc::from("default")]), 0, Some(1000));
        let (mut leader, mut follower) = (exact(), exact());
        let first = command_at(10, &["a", "b", "boom"], &[1, 2, 3]);
        let r = results(leader.apply(&first, 1, true).expect("applies"));
        assert!(is_empty(follower.apply(&first, 1, false).expect("applies")));
        assert_eq!(r.outs, [wc("a", 1), wc("b", 1)]);
        assert_eq!((r.ok.as_slice(), r.skipped), (&[true, true, false][..], 0));

        // A replay of 1 and 3 (3 failed, so it runs again), beside a new input 4.
        let replay = command_at(20, &["a", "boom", "a"], &[1, 3, 4]);
        let r = results(leader.apply(&replay, 2, true).expect("applies"));
        assert_eq!(
            r.outs,
            [wc("a", 1), wc("a", 2)],
            "1's output again, then 4's"
        );
        assert_eq!(r.emitted, [1, 0, 1]);
        assert_eq!(r.skipped, 1);
        assert!(is_empty(
            follower.apply(&replay, 2, false).expect("applies")
        ));
        assert_eq!(leader.state.get("a"), Some(&2), "1 was not applied twice");
        assert_eq!(
            leader.snapshot().expect("snapshots"),
            follower.snapshot().expect("snapshots"),
            "a replica that did not propose remembers the same ids and outputs"
        );

        // A copy restored from the snapshot still skips 1 and 4.
        let mut copy = exact();
        copy.restore(&leader.snapshot().expect("snapshots"))
            .expect("restores");
        let r = results(
            copy.apply(&command_at(30, &["a", "a"], &[4, 1]), 3, true)
                .expect("applies"),
        );
        assert_eq!((r.skipped, r.outs), (2, vec![wc("a", 2), wc("a", 1)]));

        // Past the retention (1000 ms of entry time) an id is forgotten and applies again.
        let late = command_at(1015, &["a"], &[4]);
        let r = results(copy.apply(&late, 4, true).expect("applies"));
        assert_eq!(
            (r.skipped, r.outs),
            (1, vec![wc("a", 2)]),
            "applied at 20: kept until 1020"
        );
        let later = command_at(1031, &["a"], &[1]);
        let r = results(copy.apply(&later, 5, true).expect("applies"));
        assert_eq!(
            (r.skipped, r.outs),
            (0, vec![wc("a", 3)]),
            "applied at 10: forgotten"
        );

        // The exported state is the user's state alone.
        let exported = exported_state(&copy.snapshot().expect("snapshots"), true).expect("exports");
        let state: KeyedState<String, u64> = rmp_serde::from_slice(&exported).expect("the state");
        assert_eq!(state.get("a"), Some(&3));
        assert!(exported_state(b"\xc1", true).is_err());
    }

    #[test]
    fn ids_of_a_seekable_source_are_forgotten_once_its_committed_position_passes_them() {
        let exact = || StateCore::new(Count, Arc::from(vec![Arc::from("default")]), 0, Some(1000));
        let (mut leader, mut follower) = (exact(), exact());
        let mut apply = |cmd: &[u8], index: u64| {
            assert!(is_empty(
                follower.apply(cmd, index, false).expect("applies")
            ));
            let r = results(leader.apply(cmd, index, true).expect("applies"));
            (r, leader.state.get("a").copied())
        };
        // Messages 10 and 11 of spout task 0, whose committed position was 10.
        let (r, _) = apply(
            &command_from(10, &[("a", 1, 0, 10, 10), ("b", 2, 0, 11, 10)]),
            1,
        );
        assert_eq!(
            (r.outs, r.remembered),
            (vec![wc("a", 1), wc("b", 1)], Some(2))
        );
        // A replay of 10 is skipped and its output emitted again.
        let (r, _) = apply(&command_from(20, &[("a", 1, 0, 10, 10)]), 2);
        assert_eq!((r.skipped, r.outs), (1, vec![wc("a", 1)]));
        // Message 12 shows the position at 12: 10 and 11 are forgotten. Spout task 1's
        // messages are its own.
        let (r, _) = apply(
            &command_from(30, &[("a", 3, 0, 12, 12), ("c", 4, 1, 5, 0)]),
            3,
        );
        assert_eq!(
            (r.outs, r.remembered),
            (vec![wc("a", 2), wc("c", 1)], Some(2))
        );
        // A copy of message 10 still in flight (from an earlier attempt) is stale: skipped,
        // with nothing emitted and nothing applied.
        let (r, a) = apply(
            &command_from(40, &[("a", 1, 0, 10, 10), ("b", 2, 0, 11, 10)]),
            4,
        );
        assert_eq!(
            (r.ok, r.emitted, r.skipped),
            (vec![true, true], vec![0, 0], 2)
        );
        assert!(r.outs.is_empty());
        assert_eq!(a, Some(2));
        // Ids with a source do not expire with time: message 12 is still known long after.
        let (r, _) = apply(&command_from(1_000_000, &[("a", 3, 0, 12, 12)]), 5);
        assert_eq!((r.skipped, r.outs), (1, vec![wc("a", 2)]));
        assert_eq!(
            leader.snapshot().expect("snapshots"),
            follower.snapshot().expect("snapshots")
        );
        // The positions survive a snapshot: a restored copy still finds 11 stale.
        let mut copy = exact();
        copy.restore(&leader.snapshot().expect("snapshots"))
            .expect("restores");
        let r = results(
            copy.apply(&command_from(50, &[("b", 2, 0, 11, 10)]), 6, true)
                .expect("applies"),
        );
        assert_eq!((r.skipped, r.outs.len(), r.remembered), (1, 0, Some(2)));
        assert_eq!(copy.state.get("b"), Some(&1));
    }

    #[test]
    fn replicas_applying_the_same_commands_hold_the_same_state() {
        let (mut a, mut b) = (core(), core());
        for (i, words) in [&["a", "b"][..], &["a", "boom", "c"], &["a"]]
            .iter()
            .enumerate()
        {
            let ra = a.apply(&command(words), i as u64, true).expect("applies");
            let rb = b.apply(&command(words), i as u64, true).expect("applies");
            assert_eq!(results(ra), results(rb));
        }
        assert_eq!(a.snapshot().ok(), b.snapshot().ok());
        let results = results(a.apply(&command(&["a", "boom"]), 9, true).expect("applies"));
        let a4 = WordCount {
            word: "a".into(),
            count: 4,
        };
        assert_eq!(results.ok, [true, false], "a panic fails its input");
        assert_eq!(results.emitted, [1, 0]);
        assert_eq!(results.outs, [(0, a4)]);
        assert!(
            is_empty(a.apply(&command(&["a"]), 10, false).expect("applies")),
            "a replica that did not propose answers nothing"
        );
        let mut c = core();
        c.restore(&a.snapshot().expect("snapshots"))
            .expect("restores");
        assert_eq!(c.state.get("a"), Some(&5), "the silent apply counted too");
    }

    #[test]
    fn bad_bytes_are_an_error() {
        let mut a = core();
        assert!(a.apply(b"\xff\x00garbage", 1, true).is_err());
        assert!(a.restore(b"\xc1").is_err());
    }

    #[test]
    fn entry_seeds_differ_by_entry_position_and_task() {
        let s = entry_seed(1, 0, 0);
        assert_ne!(s, entry_seed(2, 0, 0));
        assert_ne!(s, entry_seed(1, 1, 0));
        assert_ne!(s, entry_seed(1, 0, 1));
        assert_eq!(s, entry_seed(1, 0, 0));
    }
}
