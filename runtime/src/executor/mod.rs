//! Executors: the actors that run tasks. [`SpoutActor`] drives a spout, [`BoltActor`] a bolt;
//! both are thin shells around the engine's typed task (`tempest_dsl::engine`) and share
//! [`TaskCore`] for output, flow control, flushing and the end of the task.
//!
//! ```text
//!   SpoutActor ──Deliver(Batch)──► BoltActor ──Deliver(Batch)──► BoltActor
//!        ▲                            │  ▲                          │
//!        └────────── Credit ──────────┘  └───────── Credit ─────────┘
//!   ... then Deliver(End) on every link once a task has nothing more to send.
//! ```

mod acker;
pub(crate) mod align;
mod bolt;
mod messages;
pub(crate) mod outbox;
mod spout;
mod supervisor;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Recipient;
use tempest_dsl::TaskId;
use tempest_dsl::engine::{AckOp, LinkId, Mark, Payload, TaskOutput};

pub(crate) use acker::AckerActor;
pub(crate) use bolt::BoltActor;
pub(crate) use messages::{
    AckBatch, CheckpointDone, Committed, Credit, Deliver, Delivery, Drain, Propose, Refill, Start,
    TaskEvent, TreesLost, TriggerCheckpoint, Verdicts, Wire,
};
pub(crate) use spout::SpoutActor;
pub(crate) use supervisor::Supervisor;

use crate::ack::AckFolder;
use crate::metrics::{TaskHistograms, TaskMetrics};
use outbox::{LinkSender, Outbox};

/// A link to a task in the same process: its actor's address.
pub(crate) struct LocalLink {
    pub(crate) from: TaskId,
    pub(crate) input: u16,
    /// Shared by every link to the same task: an actix address clone costs a few allocations.
    pub(crate) to: Arc<Recipient<Deliver>>,
    pub(crate) target_metrics: Arc<TaskMetrics>,
}

impl LinkSender for LocalLink {
    fn send_data(&self, link: LinkId, payload: Payload) {
        self.target_metrics.enqueue(payload.len());
        // Flow control is the outbox's credits, so the unbounded `do_send` is bounded here.
        self.to.do_send(Deliver(Delivery::Batch {
            from: self.from,
            link,
            input: self.input,
            payload,
        }));
    }

    fn send_mark(&self, mark: Mark) {
        self.to.do_send(Deliver(Delivery::Mark {
            from: self.from,
            input: self.input,
            mark,
        }));
    }

    fn send_data_end(&self) {
        self.to
            .do_send(Deliver(Delivery::DataEnd { from: self.from }));
    }

    fn send_eos(&self) {
        self.to.do_send(Deliver(Delivery::End { from: self.from }));
    }
}

/// Processing time in milliseconds since the epoch, as the engine's watermark generators and
/// windows get it.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Runs user code, turning a panic into an error message so one bad task cannot take down a
/// worker thread (the run is stopped with the message instead).
pub(crate) fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        if let Some(s) = panic.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = panic.downcast_ref::<String>() {
            s.clone()
        } else {
            "a panic with a non-string payload".to_owned()
        }
    })
}

/// Runs a task's set-up hook (`prepare`, `open`) named `what`, its error or panic as text.
pub(crate) fn setup(
    what: &str,
    hook: impl FnOnce() -> Result<(), tempest_dsl::TaskError>,
) -> Result<(), String> {
    match guarded(hook) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{what} failed: {e}")),
        Err(panic) => Err(format!("{what} panicked: {panic}")),
    }
}

/// What spout and bolt actors share: output, flushing, and reporting the end of the task.
pub(crate) struct TaskCore {
    pub(crate) id: TaskId,
    pub(crate) span: tracing::Span,
    pub(crate) outbox: Outbox<LocalLink>,
    pub(crate) metrics: Arc<TaskMetrics>,
    pub(crate) events: Recipient<TaskEvent>,
    /// Execute and complete latency, and time skew, for the run report.
    pub(crate) histograms: TaskHistograms,
    ready: Vec<(LinkId, Payload)>,
    marks: Vec<Mark>,
    /// Ack-tree operations taken from the task, not yet sent.
    pub(crate) acks: Vec<AckOp>,
    folder: AckFolder,
    ackers: Arc<[Recipient<AckBatch>]>,
    last_flush: Instant,
    flush_interval: Duration,
    reported: bool,
}

impl TaskCore {
    /// Reports this task's part of checkpoint `id` (or why it could not save it) to the
    /// coordinator; a failure is logged.
    pub(crate) fn report_checkpoint(
        &self,
        id: u64,
        saved: Result<crate::checkpoint::TaskSnapshot, String>,
    ) {
        if let Err(why) = &saved {
            tracing::warn!(parent: &self.span, checkpoint = id, %why, "checkpoint not saved");
        }
        self.events.do_send(TaskEvent::Checkpointed {
            task: self.id,
            id,
            saved,
        });
    }

    pub(crate) fn new(
        id: TaskId,
        span: tracing::Span,
        outbox: Outbox<LocalLink>,
        metrics: Arc<TaskMetrics>,
        events: Recipient<TaskEvent>,
        flush_interval: Duration,
    ) -> Self {
        TaskCore {
            id,
            span,
            outbox,
            metrics,
            events,
            histograms: TaskHistograms::default(),
            ready: Vec::new(),
            marks: Vec::new(),
            acks: Vec::new(),
            folder: AckFolder::new(1),
            ackers: Arc::new([]),
            last_flush: Instant::now(),
            flush_interval,
            reported: false,
        }
    }

    /// Moves the task's ready batches into the outbox and publishes its emit count.
    pub(crate) fn ship(&mut self, task: &mut dyn TaskOutput) {
        task.take_ready(&mut self.ready);
        for (link, payload) in self.ready.drain(..) {
            self.outbox.send(link, payload);
        }
        self.metrics
            .emitted
            .store(task.emitted(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets where ack-tree operations go (from the task's `Wire`).
    pub(crate) fn set_ackers(&mut self, ackers: Arc<[Recipient<AckBatch>]>) {
        self.folder = AckFolder::new(ackers.len() as u32);
        self.ackers = ackers;
    }

    /// Moves the task's ack-tree operations into `self.acks`.
    pub(crate) fn collect_acks(&mut self, task: &mut dyn TaskOutput) {
        task.take_acks(&mut self.acks);
    }

    /// Folds the operations in `self.acks` per root and sends one message per acker.
    pub(crate) fn send_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        if self.ackers.is_empty() {
            // Untracked topologies record no operations; anything here is a bug upstream.
            tracing::error!(parent: &self.span, ops = self.acks.len(), "ack operations without ackers dropped");
            self.acks.clear();
            return;
        }
        for op in self.acks.drain(..) {
            self.folder.add(self.id, op);
        }
        let ackers = &self.ackers;
        self.folder
            .drain(|a, list| ackers[a as usize].do_send(AckBatch(list)));
    }

    /// Sends the task's ack-tree operations (bolts; spouts inspect theirs first).
    pub(crate) fn forward_acks(&mut self, task: &mut dyn TaskOutput) {
        self.collect_acks(task);
        self.send_acks();
    }

    /// Sends partly filled batches too, then the task's watermark marks (after the data they
    /// follow).
    pub(crate) fn flush(&mut self, task: &mut dyn TaskOutput) {
        task.flush();
        self.ship(task);
        let now = now_ms();
        task.take_marks(now, &mut self.marks);
        for mark in self.marks.drain(..) {
            self.outbox.mark(mark);
        }
        if let Some(ts) = task.take_event_time() {
            // Time skew, the seed's definition: stream (processing) time minus event time.
            let skew = now.saturating_sub(ts);
            self.metrics.set_skew(skew);
            let ms = Duration::from_millis(u64::try_from(skew).unwrap_or(0));
            self.histograms.skew.record_n(ms, 1);
        }
        self.last_flush = Instant::now();
    }

    /// Flushes when the task is idle or the flush interval has passed.
    pub(crate) fn maybe_flush(&mut self, task: &mut dyn TaskOutput, idle: bool) {
        if idle || self.last_flush.elapsed() >= self.flush_interval {
            self.flush(task);
        }
    }

    /// Reports a fatal error of this task to the coordinator, which stops the run.
    pub(crate) fn fail(&mut self, error: String) {
        let _enter = self.span.enter();
        tracing::error!(%error, "task failed");
        if !self.reported {
            self.reported = true;
            self.events.do_send(TaskEvent::Failed {
                task: self.id,
                error,
            });
        }
    }

    /// Reports the end of the task once its outbox has delivered everything. Returns whether
    /// it has (now or before).
    pub(crate) fn report_if_finished(&mut self) -> bool {
        if self.reported {
            return true;
        }
        if !self.outbox.is_finished() {
            return false;
        }
        self.reported = true;
        let _enter = self.span.enter();
        tracing::debug!("task finished");
        self.events.do_send(TaskEvent::Finished {
            task: self.id,
            histograms: Box::new(std::mem::take(&mut self.histograms)),
        });
        true
    }

    /// Whether the task has reported its end or its failure.
    pub(crate) fn has_reported(&self) -> bool {
        self.reported
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_turns_panics_into_messages() {
        assert_eq!(guarded(|| 3), Ok(3));
        assert_eq!(
            guarded(|| -> u32 { panic!("boom") }),
            Err("boom".to_owned())
        );
        let n = 7;
        assert_eq!(
            guarded(|| -> u32 { panic!("bad {n}") }),
            Err("bad 7".to_owned())
        );
    }
}
