//! [`BoltActor`]: runs one bolt task.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler, Recipient};
use rustc_hash::FxHashMap;
use tempest_dsl::engine::{Answer, BoltTask, LinkId, Mark, Payload};
use tempest_dsl::{TaskError, TaskId};

use crate::checkpoint::{Aligner, TaskSnapshot};
use crate::executor::outbox::Outbox;

use crate::executor::{
    Committed, Credit, Deliver, Delivery, Propose, Refill, Supervisor, TaskCore, Wire, guarded,
    now_ms, setup,
};
use crate::metrics::TaskMetrics;

/// The most proposals a replicated task keeps in flight to its Raft group; past it, its input
/// waits (and its senders' credits with it).
const MAX_PROPOSALS_IN_FLIGHT: usize = 32;

/// What one upstream task has delivered and this task has not executed yet, in order.
struct SourceQueue {
    source: TaskId,
    items: VecDeque<Delivery>,
    /// Where executed batches return their credit (`None` for a task not wired as upstream).
    credit: Option<Arc<Recipient<Credit>>>,
    /// Links from this task whose end-of-data marker has not arrived yet.
    data_pending: u32,
    /// Links from this task whose end-of-stream marker has not arrived yet. A restarted
    /// upstream task (its node died) may send its markers again: they count once per link.
    ends_pending: u32,
}

impl SourceQueue {
    fn new(source: TaskId, links: u32, credit: Option<Arc<Recipient<Credit>>>) -> Self {
        SourceQueue {
            source,
            items: VecDeque::new(),
            credit,
            data_pending: links,
            ends_pending: links,
        }
    }
}

/// Runs one bolt task: executes the batches that arrive, in order per upstream task and
/// round-robin across them, unless its own output is blocked, in which case they wait (and
/// their credits are not returned, which blocks the senders in turn). A batch the task defers
/// (an upstream whose watermark runs too far ahead of the task's) waits the same way while the
/// other upstream tasks go on, until their marks move the task's watermark: there is no timer
/// that forces it through. Watermark marks are executed in their place among the batches; a
/// mark queued right behind another of the same channel replaces it.
pub(crate) struct BoltActor {
    core: TaskCore,
    task: Box<dyn BoltTask>,
    queues: Vec<SourceQueue>,
    queue_of: FxHashMap<TaskId, usize>,
    /// The non-empty queues, in round-robin order.
    ready: VecDeque<usize>,
    data_ends: u32,
    ends_expected: u32,
    ends_received: u32,
    tick_every: Option<Duration>,
    credit: u32,
    finishing: bool,
    errors_logged: u64,
    supervisor: Option<Supervisor<dyn BoltTask>>,
    /// A replicated task's way to its Raft group, and its own address for the answers.
    propose: Option<Propose>,
    myself: Option<Recipient<Committed>>,
    /// Every input's data ended; the marker goes on once no proposal is pending (it must
    /// follow their outputs).
    data_end_due: bool,
    /// Set when the run takes checkpoints (its inputs are known once wired): when a barrier
    /// has come on every input.
    aligner: Option<Aligner>,
    /// The state to start from: the run is restored from a checkpoint.
    restore: Option<Vec<u8>>,
}

impl BoltActor {
    /// Restarts the task in place when it fails, instead of failing the run.
    pub(crate) fn supervised(mut self, supervisor: Supervisor<dyn BoltTask>) -> Self {
        self.supervisor = Some(supervisor);
        self
    }

    /// Takes part in checkpoints: forwards each barrier once it came on every input, saving
    /// the task's state then if it owns one; with `restore`, starts from that state.
    pub(crate) fn checkpointed(mut self, restore: Option<Vec<u8>>) -> Self {
        self.aligner = Some(Aligner::new([]));
        self.restore = restore;
        self
    }

    /// Barrier `id` came on every input: what the task emitted goes out, its state (if it
    /// owns one) is saved, and the barrier follows on every link.
    fn barrier_complete(&mut self, id: u64) {
        self.send_results(true);
        let task = &mut self.task;
        let saved = match guarded(|| task.snapshot_state()) {
            Ok(None) => None,
            Ok(Some(Ok(bytes))) => Some(Ok(TaskSnapshot::State(bytes))),
            Ok(Some(Err(e))) => Some(Err(e.to_string())),
            Err(panic) => Some(Err(format!("snapshot panicked: {panic}"))),
        };
        self.core.outbox.mark(Mark::Barrier(id));
        if let Some(saved) = saved {
            self.core.report_checkpoint(id, saved);
        }
    }

    /// Proposes the task's commands to its Raft group (a replicated stateful task): its
    /// inputs are executed by every replica once committed, and the outputs come back here.
    pub(crate) fn replicated(mut self, propose: Propose) -> Self {
        self.propose = Some(propose);
        self
    }

    /// The task failed: restart it if it failed while executing input (`restartable`) and a
    /// supervisor allows, or report the failure. A failure in `prepare`, `input_ended` or
    /// `finish` is not restarted: the task's life cycle is past the point a fresh instance
    /// could take up.
    fn task_failed(&mut self, error: String, restartable: bool) {
        let fresh = self
            .supervisor
            .as_mut()
            .filter(|_| restartable)
            .and_then(|s| s.restart_with(|task| setup("prepare", || task.prepare())));
        match fresh {
            Some(Ok((task, total))) => {
                self.task = task;
                tracing::warn!(parent: &self.core.span, %error, restarts = total, "task failed and was restarted");
                // The new instance must know which upstream tasks already ended.
                let ended: Vec<TaskId> = self
                    .queues
                    .iter()
                    .filter(|q| q.data_pending == 0)
                    .map(|q| q.source)
                    .collect();
                for from in ended {
                    if !self.run_hook("input_ended", |task| task.input_ended(from, now_ms())) {
                        return;
                    }
                }
                return;
            }
            Some(Err(why)) => {
                return self.task_failed(format!("{error}; the restart failed: {why}"), true);
            }
            None => {}
        }
        self.core.fail(error);
    }

    pub(crate) fn new(
        core: TaskCore,
        task: Box<dyn BoltTask>,
        ends_expected: u32,
        tick_every: Option<Duration>,
        credit: u32,
    ) -> Self {
        BoltActor {
            core,
            task,
            queues: Vec::new(),
            queue_of: FxHashMap::default(),
            ready: VecDeque::new(),
            data_ends: 0,
            ends_expected,
            ends_received: 0,
            tick_every,
            credit,
            finishing: false,
            errors_logged: 0,
            supervisor: None,
            propose: None,
            myself: None,
            data_end_due: false,
            aligner: None,
            restore: None,
        }
    }

    /// Sends the commands the task made to its Raft group; each answer comes back as a
    /// [`Committed`] message.
    fn propose_pending(&mut self) {
        let mut proposals = Vec::new();
        self.task.take_proposals(&mut proposals);
        if proposals.is_empty() {
            return;
        }
        let (Some(propose), Some(myself)) = (&self.propose, &self.myself) else {
            // Not wired to a group: refuse them, so their inputs fail and replay.
            for p in proposals {
                let refused = Err("the task has no replica group".to_owned());
                self.committed(p.seq, refused);
            }
            return;
        };
        for p in proposals {
            let answer = propose(p.command);
            let myself = myself.clone();
            actix_rt::spawn(async move {
                let result = answer.await;
                myself.do_send(Committed { seq: p.seq, result });
            });
        }
    }

    /// A proposal's answer: emit its outputs and ack its inputs, or fail them.
    fn committed(&mut self, seq: u64, result: Result<Answer, String>) {
        let task = &mut self.task;
        match guarded(|| task.committed(seq, result)) {
            Err(panic) => self.task_failed(format!("committing panicked: {panic}"), false),
            Ok(Err(err)) => self.task_failed(err.to_string(), false),
            Ok(Ok(outcome)) => {
                self.core.metrics.note_outcome(&outcome);
                if let Some(err) = outcome.first_error {
                    if outcome.executed == 0 {
                        // Not committed: leadership moved, or the group lost its quorum.
                        tracing::debug!(parent: &self.core.span, error = %err, inputs = outcome.failed, "proposal not committed; its inputs replay");
                    } else {
                        self.log_user_error(&err.to_string(), outcome.failed);
                    }
                }
            }
        }
    }

    /// Whether the task can take another batch: its output is not blocked and, replicated,
    /// it has room for another proposal.
    fn can_take_input(&self) -> bool {
        !self.core.outbox.is_blocked() && self.task.in_flight() < MAX_PROPOSALS_IN_FLIGHT
    }

    /// Passes the end-of-data marker on once every input's data ended and no proposal is
    /// pending.
    fn maybe_end_data(&mut self) {
        if self.data_end_due && self.task.in_flight() == 0 {
            self.data_end_due = false;
            self.core.flush(self.task.as_mut());
            self.core.outbox.end_data();
        }
    }

    fn is_done(&self) -> bool {
        self.core.has_reported()
    }

    fn inbox_is_empty(&self) -> bool {
        // `ready` holds exactly the non-empty queues.
        self.ready.is_empty()
    }

    fn enqueue(&mut self, delivery: Delivery) {
        let source = match &delivery {
            Delivery::Batch { from, .. }
            | Delivery::Mark { from, .. }
            | Delivery::DataEnd { from }
            | Delivery::End { from } => *from,
        };
        let index = match self.queue_of.get(&source) {
            Some(&i) => i,
            None => self.add_queue(SourceQueue::new(source, 1, None)),
        };
        let queue = &mut self.queues[index];
        if let (
            Delivery::Mark { input, mark, .. },
            Some(Delivery::Mark {
                input: queued_input,
                mark: queued,
                ..
            }),
        ) = (&delivery, queue.items.back_mut())
        {
            // Only the latest watermark of a channel matters (idleness must not hide one, and
            // a barrier is never replaced nor replaces one).
            if input == queued_input
                && matches!(mark, Mark::Time(_))
                && !matches!(queued, Mark::Barrier(_))
            {
                *queued = *mark;
                return;
            }
        }
        if queue.items.is_empty() {
            self.ready.push_back(index);
        }
        queue.items.push_back(delivery);
    }

    fn add_queue(&mut self, queue: SourceQueue) -> usize {
        let index = self.queues.len();
        self.queue_of.insert(queue.source, index);
        self.queues.push(queue);
        index
    }

    /// The next delivery to execute: one per upstream task per pass, skipping the batches the
    /// task defers (what follows them waits behind them).
    fn next_delivery(&mut self) -> Option<(usize, Delivery)> {
        for _ in 0..self.ready.len() {
            let i = self.ready.pop_front()?;
            let queue = &mut self.queues[i];
            // Aligned checkpoints: what an input sent after a barrier waits for the barrier
            // on the other inputs. Meanwhile no input is deferred for watermark alignment
            // (the watermark it waits for may be behind a held barrier).
            let (held, aligning) = self
                .aligner
                .as_ref()
                .map_or((false, false), |a| (a.holds(queue.source), a.aligning()));
            let deferred = !aligning
                && matches!(queue.items.front(), Some(Delivery::Batch { .. }))
                && self.task.defers(queue.source);
            if deferred || held {
                self.ready.push_back(i);
                continue;
            }
            let delivery = queue.items.pop_front()?;
            if !queue.items.is_empty() {
                self.ready.push_back(i);
            }
            return Some((i, delivery));
        }
        None
    }

    /// Executes queued deliveries while the output is not blocked.
    fn pump(&mut self) {
        while self.can_take_input() && !self.is_done() {
            let Some((queue, delivery)) = self.next_delivery() else {
                break;
            };
            match delivery {
                Delivery::Batch {
                    from,
                    link,
                    input,
                    payload,
                } => self.execute(queue, from, link, input, payload),
                Delivery::Mark {
                    from,
                    input,
                    mark: Mark::Barrier(id),
                } => {
                    if let Some(done) = self
                        .aligner
                        .as_mut()
                        .and_then(|a| a.barrier((from, input), id))
                    {
                        self.barrier_complete(done);
                    }
                }
                Delivery::Mark { from, input, mark } => {
                    if self.run_hook("on_mark", |task| task.on_mark(from, input, mark, now_ms())) {
                        self.send_results(false);
                    }
                }
                Delivery::DataEnd { from } => self.data_ended(queue, from),
                Delivery::End { from } => {
                    let pending = &mut self.queues[queue].ends_pending;
                    if *pending > 0 {
                        *pending -= 1;
                        self.ends_received += 1;
                    }
                    tracing::trace!(parent: &self.core.span, from = from.0, "end of stream");
                }
            }
        }
        self.after_work();
    }

    fn execute(&mut self, queue: usize, from: TaskId, link: LinkId, input: u16, payload: Payload) {
        let n = payload.len();
        let mark = payload.mark();
        let started = Instant::now();
        let task = &mut self.task;
        let result = guarded(|| task.execute_batch(input, from, payload, now_ms()));
        let elapsed = started.elapsed();
        self.core.metrics.dequeue(n);
        if let Some(sender) = &self.queues[queue].credit {
            sender.do_send(Credit { link, batches: 1 });
        }
        match result {
            Err(panic) => return self.task_failed(format!("execute panicked: {panic}"), true),
            Ok(Err(err)) => return self.task_failed(err.to_string(), true),
            Ok(Ok(outcome)) => {
                self.core.metrics.note_outcome(&outcome);
                self.core
                    .histograms
                    .execute
                    .record_batch(elapsed, outcome.executed);
                if let Some(err) = outcome.first_error {
                    self.log_user_error(&err.to_string(), outcome.failed);
                }
            }
        }
        self.propose_pending();
        if let Some(mark) = mark {
            // The watermark that rode on the batch, after its data.
            if !self.run_hook("on_mark", |task| task.on_mark(from, input, mark, now_ms())) {
                return;
            }
        }
        self.send_results(false);
    }

    /// Sends what the task produced (all of it with `flush`, else full batches) and its ack
    /// operations, and publishes its window statistics.
    fn send_results(&mut self, flush: bool) {
        if flush {
            self.core.flush(self.task.as_mut());
        } else {
            self.core.ship(self.task.as_mut());
        }
        self.core.forward_acks(self.task.as_mut());
        self.publish_window_stats();
    }

    /// An upstream link's data ended: once all of a task's links have, tell the engine (event
    /// time moves past that task); once all links have, pass the marker on.
    fn data_ended(&mut self, queue: usize, from: TaskId) {
        let remaining = &mut self.queues[queue].data_pending;
        if *remaining == 0 {
            // A marker sent again by a restarted upstream task.
            return;
        }
        *remaining -= 1;
        let source_ended = *remaining == 0;
        self.data_ends += 1;
        if let Some(done) = self.aligner.as_mut().and_then(|a| a.link_ended(from)) {
            self.barrier_complete(done);
        }
        if source_ended {
            if !self.run_hook("input_ended", |task| task.input_ended(from, now_ms())) {
                return;
            }
            self.send_results(false);
        }
        if self.data_ends >= self.ends_expected {
            self.data_end_due = true;
            self.maybe_end_data();
        }
    }

    /// Runs one of the task's hooks, named `what` in messages. An error is counted as failed
    /// and logged; a panic fails the whole task, and then this returns `false`.
    fn run_hook(
        &mut self,
        what: &str,
        hook: impl FnOnce(&mut dyn BoltTask) -> Result<(), TaskError>,
    ) -> bool {
        let task = self.task.as_mut();
        match guarded(|| hook(task)) {
            Err(panic) => {
                let restartable = matches!(what, "on_mark" | "tick");
                self.task_failed(format!("{what} panicked: {panic}"), restartable);
                false
            }
            Ok(Err(err)) => {
                TaskMetrics::add(&self.core.metrics.failed, 1);
                self.log_user_error(&err.to_string(), 1);
                true
            }
            Ok(Ok(())) => true,
        }
    }

    fn publish_window_stats(&self) {
        if let Some(stats) = self.task.window_stats() {
            self.core.metrics.set_window(&stats);
        }
    }

    fn log_user_error(&mut self, error: &str, count: u64) {
        let _enter = self.core.span.enter();
        if self.errors_logged == 0 {
            tracing::warn!(%error, failed_tuples = count, "execute failed (further failures are logged at debug)");
        } else {
            tracing::debug!(%error, failed_tuples = count, "execute failed");
        }
        self.errors_logged += count;
    }

    fn after_work(&mut self) {
        if self.is_done() {
            return;
        }
        if self.finishing {
            self.core.report_if_finished();
            return;
        }
        if !self.core.outbox.is_blocked() {
            let idle = self.inbox_is_empty() && self.core.metrics.queue_empty();
            self.core.maybe_flush(self.task.as_mut(), idle);
        }
        self.maybe_end_data();
        if self.ends_received >= self.ends_expected
            && self.inbox_is_empty()
            && self.task.in_flight() == 0
        {
            self.finish();
        }
    }

    /// Every input has ended and been executed: run `finish`, send the rest and end the links.
    fn finish(&mut self) {
        self.finishing = true;
        if !self.run_hook("finish", |task| task.finish()) {
            return;
        }
        self.send_results(true);
        self.core.outbox.close();
        self.core.report_if_finished();
    }

    fn on_tick(&mut self) {
        if self.finishing || self.is_done() {
            return;
        }
        // Deliveries waiting (output blocked, or deferred) mean the inputs are not idle: a
        // windowed task must not move event time past what is queued.
        let waiting = !self.inbox_is_empty();
        if !self.run_hook("tick", |task| task.tick(waiting, now_ms())) {
            return;
        }
        self.send_results(true);
        // Time has passed: a deferred upstream may go on (an idle one stopped holding it).
        self.pump();
    }
}

impl Actor for BoltActor {
    type Context = Context<Self>;
}

impl Handler<Wire> for BoltActor {
    type Result = ();

    fn handle(&mut self, wire: Wire, ctx: &mut Context<Self>) {
        self.myself = Some(ctx.address().recipient());
        self.core.outbox = Outbox::new(wire.links, self.credit);
        if let Some(aligner) = &mut self.aligner {
            *aligner = Aligner::new(wire.upstream.iter().map(|(task, links, _)| (*task, *links)));
        }
        for (task, links, credit) in wire.upstream {
            self.add_queue(SourceQueue::new(task, links, Some(credit)));
        }
        self.core.set_ackers(wire.ackers);
        let task = &mut self.task;
        match guarded(|| task.prepare()) {
            Err(panic) => return self.task_failed(format!("prepare panicked: {panic}"), false),
            Ok(Err(err)) => return self.task_failed(format!("prepare failed: {err}"), false),
            Ok(Ok(())) => {}
        }
        if let Some(state) = self.restore.take() {
            let task = &mut self.task;
            match guarded(|| task.restore_state(&state)) {
                Err(panic) => return self.task_failed(format!("restore panicked: {panic}"), false),
                Ok(Err(err)) => return self.task_failed(format!("restore failed: {err}"), false),
                Ok(Ok(())) => {
                    tracing::info!(parent: &self.core.span, bytes = state.len(), "state restored from a checkpoint");
                }
            }
        }
        if let Some(every) = self.tick_every {
            ctx.run_interval(every, |act, _| act.on_tick());
        }
    }
}

impl Handler<Deliver> for BoltActor {
    type Result = ();

    fn handle(&mut self, Deliver(delivery): Deliver, _: &mut Context<Self>) {
        if self.is_done() {
            return;
        }
        self.enqueue(delivery);
        self.pump();
    }
}

impl Handler<Credit> for BoltActor {
    type Result = ();

    fn handle(&mut self, credit: Credit, _: &mut Context<Self>) {
        self.core.outbox.credit(credit.link, credit.batches);
        self.pump();
    }
}

impl Handler<Committed> for BoltActor {
    type Result = ();

    fn handle(&mut self, Committed { seq, result }: Committed, _: &mut Context<Self>) {
        if self.is_done() {
            return;
        }
        self.committed(seq, result);
        self.send_results(false);
        self.pump();
    }
}

impl Handler<Refill> for BoltActor {
    type Result = ();

    fn handle(&mut self, _: Refill, _: &mut Context<Self>) {
        self.core.outbox.refill();
        self.pump();
    }
}
