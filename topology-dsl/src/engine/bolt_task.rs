//! The typed task behind every plain bolt: decodes a batch, runs `execute` per record with the
//! anchoring and acking of a `BasicBolt` (or none, for manual-ack bolts), and collects output.

use std::sync::Arc;

use crate::component::{Bolt, TaskContext, TaskError};
use crate::emitter::Emitter;
use crate::engine::input::InputAdapter;
use crate::engine::{AckOp, BatchOutcome, BoltTask, EngineError, LinkId, Payload, TaskOutput};
use crate::ids::TaskId;
use crate::tuple::Tuple;

pub(crate) struct BoltTaskImpl<B: Bolt> {
    bolt: B,
    context: TaskContext,
    inputs: Arc<[Arc<dyn InputAdapter<B::In>>]>,
    out: Emitter<B::Out>,
}

impl<B: Bolt> BoltTaskImpl<B> {
    pub(crate) fn new(
        bolt: B,
        context: TaskContext,
        inputs: Arc<[Arc<dyn InputAdapter<B::In>>]>,
        out: Emitter<B::Out>,
    ) -> Self {
        BoltTaskImpl {
            bolt,
            context,
            inputs,
            out,
        }
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
    ) -> Result<BatchOutcome, EngineError> {
        let adapter = self
            .inputs
            .get(usize::from(input))
            .ok_or(EngineError::NoSuchInput(input))?;
        let batch = adapter.adapt(payload)?;
        let mut outcome = BatchOutcome::default();
        if batch.ids.is_empty() || !self.out.is_tracking() {
            for value in batch.values {
                let tuple = Tuple::new_untracked(value, source, input);
                let result = self.bolt.execute(tuple, &mut self.out);
                outcome.note(result);
            }
        } else if B::MANUAL_ACK {
            for (value, ids) in batch.values.into_iter().zip(batch.ids) {
                let tuple = Tuple::with_ids(value, source, input, ids);
                let result = self.bolt.execute(tuple, &mut self.out);
                outcome.note(result);
            }
        } else {
            for (value, ids) in batch.values.into_iter().zip(batch.ids) {
                // The emitter acks for the bolt; the tuple's copy of its ids is for reading.
                self.out.begin_input(ids.clone());
                let tuple = Tuple::with_ids(value, source, input, ids);
                let result = self.bolt.execute(tuple, &mut self.out);
                let ok = outcome.note(result);
                self.out.end_input(ok);
            }
        }
        Ok(outcome)
    }

    fn tick(&mut self, _inputs_waiting: bool) -> Result<(), TaskError> {
        self.bolt.tick(&mut self.out)
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        self.bolt.finish(&mut self.out)
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
    fn emitted(&self) -> u64 {
        self.out.emitted()
    }
}
