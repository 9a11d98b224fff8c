//! The typed task behind every plain bolt: decodes a batch, runs `execute` per record with the
//! anchoring and acking of a `BasicBolt` (or none, for manual-ack bolts), and collects output.

use std::sync::Arc;

use crate::component::{Bolt, TaskContext, TaskError};
use crate::emitter::Emitter;
use crate::engine::input::InputAdapter;
use crate::engine::{
    AckOp, BatchOutcome, BoltTask, EngineError, LinkId, Mark, Payload, TaskOutput,
};
use crate::ids::{Origin, TaskId};
use crate::tuple::Tuple;
use crate::window::{Channel, Valve};

pub(crate) struct BoltTaskImpl<B: Bolt> {
    bolt: B,
    context: TaskContext,
    inputs: Arc<[Arc<dyn InputAdapter<B::In>>]>,
    out: Emitter<B::Out>,
    /// The watermark of the inputs: forwarded downstream, unless the bolt assigns its own
    /// event time (its emitter then has a clock, done once every input has ended).
    valve: Valve,
}

impl<B: Bolt> BoltTaskImpl<B> {
    pub(crate) fn new(
        bolt: B,
        context: TaskContext,
        inputs: Arc<[Arc<dyn InputAdapter<B::In>>]>,
        out: Emitter<B::Out>,
        channels: &[Channel],
    ) -> Self {
        BoltTaskImpl {
            bolt,
            context,
            inputs,
            out,
            valve: Valve::new(channels),
        }
    }
}

impl<B: Bolt> BoltTaskImpl<B> {
    /// Executes one tracked input: the emitter acks it for the bolt, unless the bolt acks by
    /// hand.
    #[inline(always)]
    fn execute_tracked(&mut self, tuple: Tuple<B::In>, origin: Origin, outcome: &mut BatchOutcome) {
        let tuple = tuple.with_origin(origin);
        if B::MANUAL_ACK {
            outcome.note(self.bolt.execute(tuple, &mut self.out));
            return;
        }
        // The tuple's copy of its ids is for reading.
        self.out.begin_input(tuple.ids().clone(), origin);
        let ok = outcome.note(self.bolt.execute(tuple, &mut self.out));
        self.out.end_input(ok);
    }
}

impl<B: Bolt> BoltTask for BoltTaskImpl<B> {
    fn prepare(&mut self) -> Result<(), TaskError> {
        self.bolt.prepare(&self.context)
    }

    fn execute_batch(
        &mut self,
        input: u16,
        source: TaskId,
        payload: Payload,
        _now_ms: i64,
    ) -> Result<BatchOutcome, EngineError> {
        let batch = crate::engine::input::adapt(&self.inputs, input, payload)?;
        self.valve.data((source, input));
        let mut outcome = BatchOutcome::default();
        let mark = self.out.ack_mark();
        if batch.ids.is_empty() || !self.out.is_tracking() {
            for value in batch.values {
                let tuple = Tuple::new_untracked(value, source, input);
                let result = self.bolt.execute(tuple, &mut self.out);
                outcome.note(result);
            }
        } else if batch.origins.is_empty() {
            // At-least-once: no deterministic ids. A loop of its own, so that this path (W1)
            // does not step through an empty iterator of origins per tuple.
            for (value, ids) in batch.values.into_iter().zip(batch.ids) {
                let tuple = Tuple::with_ids(value, source, input, ids);
                self.execute_tracked(tuple, Origin::default(), &mut outcome);
            }
        } else {
            // Exactly-once: each tuple carries its deterministic id.
            let inputs = batch.values.into_iter().zip(batch.ids).zip(batch.origins);
            for ((value, ids), origin) in inputs {
                let tuple = Tuple::with_ids(value, source, input, ids);
                self.execute_tracked(tuple, origin, &mut outcome);
            }
        }
        if let Err(err) = self.bolt.flush() {
            // Nothing of the batch is durable: every input it acked fails and replays.
            self.out.fail_since(mark);
            outcome.failed = outcome.executed;
            outcome.first_error = Some(err);
        }
        Ok(outcome)
    }

    fn tick(&mut self, _inputs_waiting: bool, _now_ms: i64) -> Result<(), TaskError> {
        self.bolt.tick(&mut self.out)
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        self.bolt.finish(&mut self.out)
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

impl<B: Bolt> BoltTaskImpl<B> {
    /// What the inputs' watermark changes downstream: the watermark that rides on the batches
    /// filled from now on (everything emitted before came from inputs before it); for a bolt
    /// that assigns its own event time, only the end of time.
    fn watermark_moved(&mut self) {
        let wm = self.valve.current();
        match self.out.clock_mut() {
            Some(clock) if wm == i64::MAX => clock.done(),
            Some(_) => {}
            None => self.out.set_forwarded(self.valve.forwarded()),
        }
    }
}

impl<B: Bolt> TaskOutput for BoltTaskImpl<B> {
    fn take_ready(&mut self, out: &mut Vec<(LinkId, Payload)>) {
        self.out.take_ready(out);
    }
    fn flush(&mut self) {
        self.out.flush();
    }
    fn take_acks(&mut self, out: &mut Vec<AckOp>) {
        self.out.take_acks(out);
    }
    fn take_marks(&mut self, now_ms: i64, out: &mut Vec<Mark>) {
        if self.out.clock_mut().is_some() {
            // Its own event time: the inputs' watermarks stop here (Flink's
            // assignTimestampsAndWatermarks), except the end of time.
            self.valve.discard_marks();
            self.out.take_marks(now_ms, out);
        } else {
            self.valve.take_marks(out);
        }
    }
    fn take_event_time(&mut self) -> Option<i64> {
        self.out.take_event_time()
    }
    fn emitted(&self) -> u64 {
        self.out.emitted()
    }
}
