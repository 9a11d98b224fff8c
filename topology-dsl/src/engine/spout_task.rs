//! The typed task behind every spout: calls `next` until a batch's worth was emitted, and
//! delivers acks and fails.

use crate::component::{Spout, SpoutStatus, TaskContext, TaskError};
use crate::emitter::SpoutEmitter;
use crate::engine::committed::Committed;
use crate::engine::{AckOp, LinkId, Mark, Payload, SpoutTask, TaskOutput};
use crate::ids::{MsgId, RootId};

/// How many `next` calls pass between two looks at source alignment's limit.
const LIMIT_EVERY: u64 = 32;

pub(crate) struct SpoutTaskImpl<S: Spout> {
    spout: S,
    context: TaskContext,
    out: SpoutEmitter<S::Out>,
    /// Under exactly-once, a seekable spout's committed position.
    committed: Option<Committed>,
    /// Source alignment: the watermark past which `next_batch` stops.
    limit: Option<i64>,
}

impl<S: Spout> SpoutTaskImpl<S> {
    pub(crate) fn new(
        spout: S,
        context: TaskContext,
        out: SpoutEmitter<S::Out>,
        exact: bool,
    ) -> Self {
        SpoutTaskImpl {
            spout,
            context,
            out,
            committed: (exact && S::SEEKABLE).then(Committed::default),
            limit: None,
        }
    }

    /// Whether source alignment stops this round: the watermark passed the limit.
    fn past_limit(&mut self) -> bool {
        let Some(limit) = self.limit else {
            return false;
        };
        self.out
            .inner_mut()
            .clock_mut()
            .is_some_and(|c| c.current() > limit)
    }

    /// Acks the messages that completed at emit time.
    fn ack_immediate(&mut self) {
        let acks = self.out.immediate_acks_mut();
        if acks.is_empty() {
            return;
        }
        let mut acks = std::mem::take(acks);
        for msg in acks.drain(..) {
            if let Some(c) = &mut self.committed {
                c.emitted(msg);
                c.completed(msg);
            }
            self.spout.ack(msg);
        }
        // Hand the (now empty) buffer back so its capacity is reused.
        *self.out.immediate_acks_mut() = acks;
    }
}

impl<S: Spout> SpoutTask for SpoutTaskImpl<S> {
    fn open(&mut self) -> Result<(), TaskError> {
        self.spout.open(&self.context)
    }

    fn next_batch(&mut self, budget: usize) -> Result<SpoutStatus, TaskError> {
        if let Some(c) = &self.committed {
            // Every message emitted in this batch is at or past the committed position.
            let task = self.context.task_id();
            self.out.inner_mut().set_source(task, c.position().0);
        }
        let start = self.out.inner().emitted();
        let budget = budget.max(1) as u64;
        let mut calls = 0u64;
        let result = loop {
            match self.spout.next(&mut self.out) {
                Ok(SpoutStatus::Active) => {
                    calls += 1;
                    // Bounded by calls too, so a spout that is Active but emits nothing still
                    // yields to the runtime.
                    if self.out.inner().emitted() - start >= budget || calls >= budget {
                        break Ok(SpoutStatus::Active);
                    }
                    // Every few calls: the watermark is not free to read, and a few records
                    // past the limit do not matter.
                    if calls % LIMIT_EVERY == 0 && self.past_limit() {
                        break Ok(SpoutStatus::Active);
                    }
                }
                other => break other,
            }
        };
        self.ack_immediate();
        if let (Ok(status), Some(clock)) = (&result, self.out.inner_mut().clock_mut()) {
            // Only a source that says it has nothing can go idle (not one held back).
            clock.set_quiet(*status == SpoutStatus::Idle);
        }
        result
    }

    fn ack(&mut self, root: RootId, msg: MsgId) {
        self.parked(root);
        if let Some(c) = &mut self.committed {
            c.completed(msg);
        }
        self.spout.ack(msg);
    }

    fn fail(&mut self, root: RootId, msg: MsgId) {
        if let Some(clock) = self.out.inner_mut().clock_mut() {
            clock.failed(root, msg);
        }
        if let Some(c) = &mut self.committed {
            c.failed(msg);
        }
        self.spout.fail(msg);
    }

    fn parked(&mut self, root: RootId) {
        if let Some(clock) = self.out.inner_mut().clock_mut() {
            clock.release(root);
        }
    }

    fn unparked(&self) -> Option<usize> {
        self.out.inner().unparked()
    }

    fn end_of_data(&mut self, replays_follow: bool) {
        if let Some(clock) = self.out.inner_mut().clock_mut() {
            clock.done();
            if !replays_follow {
                clock.no_replays();
            }
        }
    }

    fn close(&mut self) {
        self.spout.close();
    }

    fn snapshot(&mut self) -> Option<Vec<u8>> {
        self.spout.snapshot().map(|s| s.as_bytes().to_vec())
    }

    fn committed(&self) -> Option<MsgId> {
        self.committed.as_ref().map(Committed::position)
    }

    fn aligned_watermark(&self) -> Option<i64> {
        let clock = self.out.inner().clock()?;
        Some(if clock.is_idle_or_done() {
            i64::MAX
        } else {
            clock.current()
        })
    }

    fn owed_replays(&self) -> Vec<MsgId> {
        self.committed
            .as_ref()
            .map(Committed::owed_replays)
            .unwrap_or_default()
    }

    fn set_watermark_limit(&mut self, limit: Option<i64>) {
        self.limit = limit;
    }

    fn seek(&mut self, from: MsgId) -> Result<(), TaskError> {
        self.spout.seek(from)?;
        if let Some(c) = &mut self.committed {
            c.sought(from);
        }
        Ok(())
    }

    fn restore(
        &mut self,
        position: &[u8],
        in_flight: &[MsgId],
        owed: &[MsgId],
    ) -> Result<(), TaskError> {
        self.spout
            .restore(&crate::SpoutSnapshot::from_bytes(position.to_vec()))?;
        if let Some(c) = &mut self.committed {
            // Its position holds these replays: they stay open until they complete.
            for msg in owed {
                c.failed(*msg);
            }
        }
        for msg in in_flight {
            if let Some(c) = &mut self.committed {
                c.failed(*msg);
            }
            self.spout.fail(*msg);
        }
        Ok(())
    }
}

impl<S: Spout> TaskOutput for SpoutTaskImpl<S> {
    fn take_ready(&mut self, out: &mut Vec<(LinkId, Payload)>) {
        self.out.inner_mut().take_ready(out);
    }
    fn flush(&mut self) {
        self.out.inner_mut().flush();
    }
    fn take_acks(&mut self, out: &mut Vec<AckOp>) {
        let from = out.len();
        self.out.inner_mut().take_acks(out);
        if let Some(c) = &mut self.committed {
            for op in &out[from..] {
                if let AckOp::Init { msg, .. } = op {
                    c.emitted(*msg);
                }
            }
        }
    }
    fn take_marks(&mut self, now_ms: i64, out: &mut Vec<Mark>) {
        self.out.inner_mut().take_marks(now_ms, out);
    }
    fn take_event_time(&mut self) -> Option<i64> {
        self.out.inner_mut().take_event_time()
    }
    fn emitted(&self) -> u64 {
        self.out.inner().emitted()
    }
}
