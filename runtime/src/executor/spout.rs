//! [`SpoutActor`]: runs one spout task.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use tempest_dsl::engine::{AckOp, Mark, SpoutTask};
use tempest_dsl::{MsgId, RootId, SpoutStatus};

use crate::ack::{PendingTrees, Settled, TreeOutcome};
use crate::checkpoint::{SpoutRestore, TaskSnapshot};
use crate::executor::align::{AlignGroup, Wake};
use crate::executor::outbox::Outbox;
use crate::executor::{
    CheckpointDone, Credit, Drain, Start, Supervisor, TaskCore, TaskEvent, TreesLost,
    TriggerCheckpoint, Verdicts, Wire, guarded, setup,
};
use crate::metrics::TaskMetrics;

/// How long an idle (or erroring) spout waits before it is asked again.
const IDLE_BACKOFF: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Wired, waiting for `Start`.
    Waiting,
    /// Calling `next`.
    Running,
    /// The source said `Done`, or a drain was asked for: no `next` calls while the trees in
    /// flight settle (a failure brings a finished, undrained spout back to `Running`, so it can
    /// replay).
    Settling,
    /// The links are closed; the task ends once they have delivered everything.
    Ending,
}

/// A spout's part in checkpoints.
#[derive(Default)]
struct Checkpointing {
    /// The position (and messages in flight) to go back to when it opens: the run is
    /// restored from a checkpoint.
    restore: Option<SpoutRestore>,
    /// The first checkpoint triggered while it was done and settled: once that completes it
    /// may end.
    settled_at: Option<u64>,
    /// It told the coordinator it settled (since it last went back to running).
    announced: bool,
    /// The last checkpoint completed.
    completed: u64,
    /// Checkpoints from `settled_at` on that failed.
    failed_since: u32,
    /// A checkpoint whose position is taken and whose report waits for the trees that were in
    /// flight at its barrier to settle.
    awaiting: Option<Awaiting>,
    /// The trees in flight that a window parked.
    parked: rustc_hash::FxHashSet<RootId>,
}

/// A spout's part of a checkpoint, waiting for the trees in flight at its barrier. A tree
/// emitted before the barrier went through every task before the barrier did, so if it
/// completes, the checkpoint holds its effects and a restore must not replay it; if it fails,
/// a restore replays it. A tree a window parked is the exception: the window may fire it after
/// the barrier (windows are not in checkpoints), so it is replayed whatever its outcome. The
/// part is reported once every such tree settled (within the message timeout).
struct Awaiting {
    id: u64,
    position: Vec<u8>,
    /// The trees still in flight from before the barrier that no window parked, with their
    /// messages.
    waiting: rustc_hash::FxHashMap<RootId, MsgId>,
    /// The messages a restore replays.
    replay: Vec<MsgId>,
    /// The replays the spout owed at the barrier (exactly-once: see [`TaskSnapshot::Spout`]).
    owed: Vec<MsgId>,
}

impl Awaiting {
    /// Tree `root` settled (`failed`, or completed); returns whether none from before the
    /// barrier is left.
    fn settled(&mut self, root: RootId, failed: bool) -> bool {
        if let Some(msg) = self.waiting.remove(&root) {
            if failed {
                self.replay.push(msg);
            }
        }
        self.waiting.is_empty()
    }

    /// The part, once none is left waiting: the position and the messages to replay.
    fn into_snapshot(self) -> TaskSnapshot {
        TaskSnapshot::Spout {
            position: self.position,
            in_flight: self.replay,
            owed: self.owed,
        }
    }

    /// A window holds tree `root`: it is replayed whatever its outcome, so the part does not
    /// wait for it (a window may hold it far longer than a checkpoint may take). Returns
    /// whether none from before the barrier is left.
    fn parked(&mut self, root: RootId) -> bool {
        if let Some(msg) = self.waiting.remove(&root) {
            self.replay.push(msg);
        }
        self.waiting.is_empty()
    }
}

/// How many checkpoints holding its end may fail before a done spout ends without one (a
/// restore would then replay its input: logged).
const END_AFTER_FAILED_CHECKPOINTS: u32 = 3;

impl Checkpointing {
    /// A failure brought the spout back to running: its end is not settled any more.
    fn running_again(&mut self) {
        self.settled_at = None;
        self.announced = false;
        self.failed_since = 0;
    }

    /// Whether a checkpoint holding its end completed, or enough of them failed.
    fn end_saved(&self) -> bool {
        self.settled_at.is_some_and(|at| {
            self.completed >= at || self.failed_since >= END_AFTER_FAILED_CHECKPOINTS
        })
    }
}

/// Tracking state of a spout under a tracked guarantee.
struct Tracking {
    pending: PendingTrees,
    max_pending: Option<usize>,
}

/// Runs one spout task: calls `next` in rounds of about one batch, yielding to the other actors
/// of its worker thread between rounds. It stops calling `next` while its output is blocked or
/// `max_spout_pending` trees are in flight, and ends once its source is done and every tree it
/// started has been acked.
pub(crate) struct SpoutActor {
    core: TaskCore,
    task: Box<dyn SpoutTask>,
    batch_size: usize,
    credit: u32,
    state: State,
    draining: bool,
    opened: bool,
    /// A poll is scheduled; at most one is.
    polling: bool,
    tracking: Option<Tracking>,
    errors_logged: u64,
    supervisor: Option<Supervisor<dyn SpoutTask>>,
    /// Set when the run takes checkpoints.
    checkpoints: Option<Checkpointing>,
    /// Where a seekable spout starts (its committed position, recorded in the cluster), when
    /// it is not restored from a checkpoint.
    seek_to: Option<MsgId>,
    /// Source alignment: its component's group and its place there, and whether it waits for
    /// a [`Wake`].
    align: Option<(Arc<AlignGroup>, usize)>,
    align_waiting: bool,
}

impl SpoutActor {
    /// Takes part in checkpoints: saves its position at each barrier, and once its source is
    /// done ends only after a checkpoint that holds its end completed. With `restore`, it
    /// goes back to that position (and replays those messages) when it opens.
    pub(crate) fn checkpointed(mut self, restore: Option<SpoutRestore>) -> Self {
        self.checkpoints = Some(Checkpointing {
            restore,
            ..Checkpointing::default()
        });
        self
    }

    /// Takes part in source alignment as task `slot` of `group`.
    pub(crate) fn aligned(mut self, group: Arc<AlignGroup>, slot: usize) -> Self {
        self.align = Some((group, slot));
        self
    }

    /// Publishes the task's watermark to its alignment group (`i64::MAX`: it holds nobody
    /// back any more).
    fn publish_watermark(&self, ended: bool) {
        if let Some((group, slot)) = &self.align {
            let wm = if ended {
                i64::MAX
            } else {
                self.task.aligned_watermark().unwrap_or(i64::MAX)
            };
            group.publish(*slot, wm);
        }
    }

    /// Source alignment: whether the task must wait for the slower tasks of its component
    /// (it then waits for a [`Wake`]); otherwise it may emit up to the group's limit.
    fn held_by_alignment(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some((group, _)) = &self.align else {
            return false;
        };
        let wm = self.task.aligned_watermark().unwrap_or(i64::MAX);
        if group.holds(wm) {
            if !self.align_waiting {
                self.align_waiting = true;
                group.wait(ctx.address().recipient());
            }
            // A rise published before the registration woke nobody: look again.
            if group.holds(wm) {
                return true;
            }
        }
        let limit = group.limit();
        self.task.set_watermark_limit(Some(limit));
        false
    }

    /// Starts the spout at `from`, its committed position as the cluster recorded it (a
    /// seekable spout under exactly-once, starting again after its node died).
    pub(crate) fn seek_to(mut self, from: Option<MsgId>) -> Self {
        self.seek_to = from;
        self
    }

    /// A settling spout that is not drained runs again (a tree failed: it replays); its end is
    /// not settled any more.
    fn back_to_running(&mut self) {
        if self.state == State::Settling && !self.draining {
            self.state = State::Running;
            if let Some(c) = &mut self.checkpoints {
                c.running_again();
            }
        }
    }

    /// Saves the spout's part of checkpoint `id`: what it emitted so far goes out, its
    /// position is recorded, and the barrier follows on every link. The part is reported
    /// once the trees in flight at the barrier settled, with those that failed or that a
    /// window parked (see [`Awaiting`]).
    ///
    /// The barrier goes out even when the part cannot be saved (the checkpoint then fails):
    /// the bolts downstream hold what follows a barrier until it came on all their inputs.
    fn checkpoint(&mut self, id: u64) {
        let saved = match self.state {
            State::Running | State::Settling => {
                self.core.flush(self.task.as_mut());
                let task = &mut self.task;
                match guarded(|| task.snapshot()) {
                    Ok(Some(position)) => {
                        let mut awaiting = Awaiting {
                            id,
                            position,
                            waiting: rustc_hash::FxHashMap::default(),
                            replay: Vec::new(),
                            owed: self.task.owed_replays(),
                        };
                        let in_flight = self
                            .tracking
                            .as_ref()
                            .map(|t| t.pending.in_flight())
                            .unwrap_or_default();
                        for (root, msg) in in_flight {
                            // Parked by a window: replayed whatever its outcome.
                            if self
                                .checkpoints
                                .as_ref()
                                .is_some_and(|c| c.parked.contains(&root))
                            {
                                awaiting.replay.push(msg);
                            } else {
                                awaiting.waiting.insert(root, msg);
                            }
                        }
                        self.core.outbox.mark(Mark::Barrier(id));
                        if !awaiting.waiting.is_empty() {
                            if let Some(c) = &mut self.checkpoints {
                                // A part still waiting for an earlier checkpoint is given up
                                // with it (the coordinator moved on).
                                c.awaiting = Some(awaiting);
                            }
                            self.note_settled_end(id);
                            return;
                        }
                        Ok(awaiting.into_snapshot())
                    }
                    Ok(None) => Err("the spout cannot be rewound (Spout::snapshot)".to_owned()),
                    Err(panic) => Err(format!("snapshot panicked: {panic}")),
                }
            }
            // Its end is in a completed checkpoint already: the coordinator stops waiting for
            // it once it reports its end.
            State::Ending => return,
            State::Waiting => Err("the spout has not started".to_owned()),
        };
        if saved.is_err() {
            self.core.outbox.mark(Mark::Barrier(id));
        }
        self.note_settled_end(id);
        self.core.report_checkpoint(id, saved);
    }

    /// Checkpoint `id` holds the spout's end if its source is done and no tree is in flight.
    fn note_settled_end(&mut self, id: u64) {
        let settled = self.tracking.as_ref().is_none_or(|t| t.pending.is_empty());
        if let Some(c) = &mut self.checkpoints {
            if self.state == State::Settling && settled && c.settled_at.is_none() {
                c.settled_at = Some(id);
            }
        }
    }

    /// Tree `root` settled: a checkpoint part waiting for it may be reported now.
    fn checkpoint_tree_settled(&mut self, root: RootId, failed: bool) {
        let Some(c) = &mut self.checkpoints else {
            return;
        };
        if !c.parked.is_empty() {
            c.parked.remove(&root);
        }
        let done = c.awaiting.as_mut().is_some_and(|a| a.settled(root, failed));
        self.report_awaited(done);
    }

    /// A window parked tree `root` (in flight): a checkpoint part stops waiting for it.
    fn checkpoint_tree_parked(&mut self, root: RootId) {
        let Some(c) = &mut self.checkpoints else {
            return;
        };
        c.parked.insert(root);
        let done = c.awaiting.as_mut().is_some_and(|a| a.parked(root));
        self.report_awaited(done);
    }

    /// Reports the checkpoint part that waited, once `done` waiting.
    fn report_awaited(&mut self, done: bool) {
        let Some(c) = self.checkpoints.as_mut().filter(|_| done) else {
            return;
        };
        if let Some(a) = c.awaiting.take() {
            self.core.report_checkpoint(a.id, Ok(a.into_snapshot()));
        }
    }

    /// Restarts the spout in place when `next`, `ack` or `fail` panics, instead of failing the
    /// run. The new instance is opened afresh (a replayable source starts again from where it
    /// starts: its records may come twice); the trees in flight stay, and their verdicts go to
    /// the new instance.
    pub(crate) fn supervised(mut self, supervisor: Supervisor<dyn SpoutTask>) -> Self {
        self.supervisor = Some(supervisor);
        self
    }

    /// The spout failed: restart it if `restartable` and a supervisor allows (returns `true`),
    /// or report the failure.
    fn task_failed(&mut self, error: String, restartable: bool) -> bool {
        // A seekable spout starts again from its committed position, not from the beginning.
        let from = self.task.committed();
        let fresh = self
            .supervisor
            .as_mut()
            .filter(|_| restartable)
            .and_then(|s| {
                s.restart_with(|task| {
                    setup("open", || task.open())?;
                    match from {
                        Some(from) => setup("seek", || task.seek(from)),
                        None => Ok(()),
                    }
                })
            });
        match fresh {
            Some(Ok((task, total))) => {
                self.task = task;
                tracing::warn!(parent: &self.core.span, %error, restarts = total, "task failed and was restarted");
                self.back_to_running();
                true
            }
            Some(Err(why)) => self.task_failed(format!("{error}; the restart failed: {why}"), true),
            None => {
                self.core.fail(error);
                false
            }
        }
    }
    pub(crate) fn new(
        core: TaskCore,
        task: Box<dyn SpoutTask>,
        batch_size: usize,
        credit: u32,
        tracking: Option<(Duration, Option<usize>)>,
    ) -> Self {
        SpoutActor {
            core,
            task,
            batch_size,
            credit,
            state: State::Waiting,
            draining: false,
            opened: false,
            polling: false,
            tracking: tracking.map(|(timeout, max_pending)| Tracking {
                pending: PendingTrees::new(timeout, Instant::now()),
                max_pending,
            }),
            errors_logged: 0,
            supervisor: None,
            checkpoints: None,
            seek_to: None,
            align: None,
            align_waiting: false,
        }
    }

    /// Schedules the next round after letting the thread's other actors run.
    fn yield_then_poll(&mut self, ctx: &mut Context<Self>) {
        if self.polling {
            return;
        }
        self.polling = true;
        ctx.spawn(
            tokio::task::yield_now()
                .into_actor(self)
                .map(|_, act, ctx| act.poll(ctx)),
        );
    }

    fn poll_later(&mut self, ctx: &mut Context<Self>, after: Duration) {
        if self.polling {
            return;
        }
        self.polling = true;
        ctx.run_later(after, |act, ctx| act.poll(ctx));
    }

    /// How many records the next round may emit: a batch, or fewer when `max_spout_pending`
    /// leaves less room (trees that windows hold do not count). Zero means wait for verdicts.
    fn budget(&self) -> usize {
        match &self.tracking {
            Some(Tracking {
                pending,
                max_pending: Some(max),
                ..
            }) => {
                let in_flight = self.task.unparked().unwrap_or_else(|| pending.len());
                self.batch_size.min(max.saturating_sub(in_flight))
            }
            _ => self.batch_size,
        }
    }

    /// One round of `next` calls.
    fn poll(&mut self, ctx: &mut Context<Self>) {
        self.polling = false;
        if self.state != State::Running || self.core.has_reported() {
            return;
        }
        // Also while blocked: the watermark may have moved (trees parked or acked), and the
        // tasks held behind this one must hear of it.
        self.publish_watermark(false);
        let budget = self.budget();
        if self.core.outbox.is_blocked() || budget == 0 {
            // Waiting: send what is held back (the trees in flight may be in a partial batch),
            // and let a returning credit or verdict poll again.
            self.core.flush(self.task.as_mut());
            return;
        }
        if self.held_by_alignment(ctx) {
            // Waiting for the slower tasks: send what is held back meanwhile.
            self.core.flush(self.task.as_mut());
            return;
        }
        let task = &mut self.task;
        let result = guarded(|| task.next_batch(budget));
        let status = match result {
            Err(panic) => {
                if self.task_failed(format!("next panicked: {panic}"), true) {
                    self.yield_then_poll(ctx);
                }
                return;
            }
            Ok(Ok(status)) => status,
            Ok(Err(err)) => {
                TaskMetrics::add(&self.core.metrics.failed, 1);
                let _enter = self.core.span.enter();
                if self.errors_logged == 0 {
                    tracing::warn!(error = %err, "next failed (further failures are logged at debug)");
                } else {
                    tracing::debug!(error = %err, "next failed");
                }
                self.errors_logged += 1;
                SpoutStatus::Idle
            }
        };
        self.core.ship(self.task.as_mut());
        self.track_new_trees();
        self.publish_watermark(false);
        match status {
            SpoutStatus::Active => {
                self.core.maybe_flush(self.task.as_mut(), false);
                self.yield_then_poll(ctx);
            }
            SpoutStatus::Idle => {
                self.core.flush(self.task.as_mut());
                self.poll_later(ctx, IDLE_BACKOFF);
            }
            SpoutStatus::Done => self.stop_emitting(),
        }
    }

    /// The source is done or drained: send what is held back, with the watermark (at the
    /// end of time once no tree holds it), and settle. The end-of-data marker waits until the
    /// trees have settled: replays may still come.
    fn stop_emitting(&mut self) {
        self.publish_watermark(true);
        self.task.end_of_data(!self.draining);
        self.core.flush(self.task.as_mut());
        self.state = State::Settling;
        self.end_if_settled();
    }

    /// Records the trees the last round started and sends their inits to the ackers.
    fn track_new_trees(&mut self) {
        self.core.collect_acks(self.task.as_mut());
        if let Some(tracking) = &mut self.tracking {
            let now = Instant::now();
            for op in &self.core.acks {
                if let AckOp::Init { root, msg, .. } = *op {
                    tracking.pending.insert(root, msg, now);
                }
            }
            self.publish_pending();
        }
        self.core.send_acks();
    }

    fn publish_pending(&self) {
        if let Some(tracking) = &self.tracking {
            let n = tracking.pending.len() as u64;
            self.core.metrics.pending.store(n as i64, Ordering::Relaxed);
            self.core
                .metrics
                .pending_max
                .fetch_max(n, Ordering::Relaxed);
            if let Some(position) = self.task.committed() {
                self.core.metrics.set_committed(position);
            }
        }
    }

    /// A tree failed or timed out: tell the spout, and let a finished spout replay. (The
    /// caller counts it.)
    fn on_failed(&mut self, root: RootId, msg: MsgId, ctx: &mut Context<Self>) {
        self.checkpoint_tree_settled(root, true);
        let task = &mut self.task;
        if let Err(panic) = guarded(|| task.fail(root, msg)) {
            if !self.task_failed(format!("fail panicked: {panic}"), true) {
                return;
            }
        }
        self.back_to_running();
        if self.state == State::Running {
            self.yield_then_poll(ctx);
        }
    }

    /// A tree completed: tell the spout. (The caller counts it.)
    fn on_acked(&mut self, root: RootId, msg: MsgId, latency: Duration) {
        self.checkpoint_tree_settled(root, false);
        self.core.histograms.complete.record_n(latency, 1);
        let task = &mut self.task;
        if let Err(panic) = guarded(|| task.ack(root, msg)) {
            self.task_failed(format!("ack panicked: {panic}"), true);
        }
    }

    /// Times out the trees past their deadline.
    fn expire(&mut self, ctx: &mut Context<Self>) {
        let Some(tracking) = &mut self.tracking else {
            return;
        };
        let mut expired = Vec::new();
        tracking.pending.tick(Instant::now(), &mut expired);
        let count = expired.len() as u64;
        TaskMetrics::add(&self.core.metrics.timed_out, count);
        TaskMetrics::add(&self.core.metrics.tree_failed, count);
        for (root, msg) in expired {
            self.on_failed(root, msg, ctx);
        }
        self.publish_pending();
        if count > 0 && self.state == State::Settling {
            // No more polls: the watermark the timed-out trees held goes out now.
            self.core.flush(self.task.as_mut());
        }
        self.end_if_settled();
    }

    /// Ends the task once the source is done (or drained) and no tree is in flight, and,
    /// when the run takes checkpoints, once a checkpoint saved since then completed (so a
    /// restored run never has to rewind a spout that ended).
    fn end_if_settled(&mut self) {
        let settled = self.tracking.as_ref().is_none_or(|t| t.pending.is_empty());
        if self.state != State::Settling || !settled {
            return;
        }
        let Some(c) = &mut self.checkpoints else {
            return self.end();
        };
        if c.end_saved() {
            if c.completed < c.settled_at.unwrap_or(0) {
                let failed = c.failed_since;
                tracing::warn!(parent: &self.core.span, failed, "ending without a checkpoint of its end: a restore would replay this spout's input");
            }
            self.end();
        } else if !c.announced {
            // Ask for the checkpoint that lets it end now, not an interval later.
            c.announced = true;
            self.core
                .events
                .do_send(TaskEvent::Settled { task: self.core.id });
        }
    }

    /// No more `next`: send what is left, end the links, close the spout.
    fn end(&mut self) {
        if self.state == State::Ending {
            return;
        }
        self.state = State::Ending;
        self.core.flush(self.task.as_mut());
        self.core.outbox.close();
        if self.opened {
            let task = &mut self.task;
            if let Err(panic) = guarded(|| task.close()) {
                return self.core.fail(format!("close panicked: {panic}"));
            }
        }
        self.core.report_if_finished();
    }
}

impl Actor for SpoutActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        // A stopped task holds its component's other tasks back no more.
        self.publish_watermark(true);
    }

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(tracking) = &self.tracking {
            let every = tracking
                .pending
                .tick_interval()
                .max(Duration::from_millis(1));
            ctx.run_interval(every, |act, ctx| act.expire(ctx));
        }
    }
}

impl Handler<Wake> for SpoutActor {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.align_waiting = false;
        if self.state == State::Running {
            self.yield_then_poll(ctx);
        }
    }
}

impl Handler<Wire> for SpoutActor {
    type Result = ();

    fn handle(&mut self, wire: Wire, _: &mut Context<Self>) {
        self.core.outbox = Outbox::new(wire.links, self.credit);
        self.core.set_ackers(wire.ackers);
    }
}

impl Handler<Start> for SpoutActor {
    type Result = ();

    fn handle(&mut self, _: Start, ctx: &mut Context<Self>) {
        if self.state != State::Waiting {
            return;
        }
        let task = &mut self.task;
        match guarded(|| task.open()) {
            Err(panic) => return self.core.fail(format!("open panicked: {panic}")),
            Ok(Err(err)) => return self.core.fail(format!("open failed: {err}")),
            Ok(Ok(())) => {}
        }
        self.opened = true;
        tracing::info!(parent: &self.core.span, "spout opened");
        if let Some(restore) = self.checkpoints.as_mut().and_then(|c| c.restore.take()) {
            let task = &mut self.task;
            match guarded(|| task.restore(&restore.position, &restore.in_flight, &restore.owed)) {
                Err(panic) => return self.core.fail(format!("restore panicked: {panic}")),
                Ok(Err(err)) => return self.core.fail(format!("restore failed: {err}")),
                Ok(Ok(())) => {
                    tracing::info!(parent: &self.core.span, replays = restore.in_flight.len(), "spout restored from a checkpoint");
                }
            }
        } else if let Some(from) = self.seek_to.take() {
            let task = &mut self.task;
            match guarded(|| task.seek(from)) {
                Err(panic) => return self.core.fail(format!("seek panicked: {panic}")),
                Ok(Err(err)) => return self.core.fail(format!("seek failed: {err}")),
                Ok(Ok(())) => {
                    tracing::info!(parent: &self.core.span, from = from.0, "spout resumes from its committed position");
                    self.core.metrics.set_committed(from);
                }
            }
        }
        self.state = State::Running;
        self.yield_then_poll(ctx);
    }
}

impl Handler<TriggerCheckpoint> for SpoutActor {
    type Result = ();

    fn handle(&mut self, TriggerCheckpoint(id): TriggerCheckpoint, _: &mut Context<Self>) {
        self.checkpoint(id);
    }
}

impl Handler<CheckpointDone> for SpoutActor {
    type Result = ();

    fn handle(&mut self, CheckpointDone { id, ok }: CheckpointDone, _: &mut Context<Self>) {
        if let Some(c) = &mut self.checkpoints {
            if ok {
                c.completed = c.completed.max(id);
            } else if c.settled_at.is_some_and(|at| id >= at) {
                c.failed_since += 1;
            }
        }
        self.end_if_settled();
    }
}

impl Handler<Credit> for SpoutActor {
    type Result = ();

    fn handle(&mut self, credit: Credit, ctx: &mut Context<Self>) {
        self.core.outbox.credit(credit.link, credit.batches);
        match self.state {
            State::Running if !self.core.outbox.is_blocked() => self.yield_then_poll(ctx),
            State::Ending => {
                self.core.report_if_finished();
            }
            _ => {}
        }
    }
}

impl Handler<Verdicts> for SpoutActor {
    type Result = ();

    fn handle(&mut self, Verdicts(verdicts): Verdicts, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let (mut acked, mut failed) = (0, 0);
        for (root, outcome) in verdicts {
            let Some(tracking) = &mut self.tracking else {
                return;
            };
            if outcome == TreeOutcome::Parked {
                if tracking.pending.contains(root) {
                    self.checkpoint_tree_parked(root);
                }
                self.task.parked(root);
                continue;
            }
            match tracking.pending.settle(root, outcome, now) {
                Some(Settled::Acked { msg, latency }) => {
                    acked += 1;
                    self.on_acked(root, msg, latency);
                }
                Some(Settled::Failed { msg }) => {
                    failed += 1;
                    self.on_failed(root, msg, ctx);
                }
                None => {}
            }
        }
        TaskMetrics::add(&self.core.metrics.acked, acked);
        TaskMetrics::add(&self.core.metrics.tree_failed, failed);
        self.publish_pending();
        match self.state {
            State::Running => self.yield_then_poll(ctx),
            // No more polls: the watermark the settled trees held goes out now.
            State::Settling => self.core.flush(self.task.as_mut()),
            State::Waiting | State::Ending => {}
        }
        self.end_if_settled();
    }
}

impl Handler<TreesLost> for SpoutActor {
    type Result = ();

    fn handle(&mut self, TreesLost(at): TreesLost, ctx: &mut Context<Self>) {
        let Some(tracking) = &mut self.tracking else {
            return;
        };
        let mut lost = Vec::new();
        tracking.pending.fail_started_before(at, &mut lost);
        if lost.is_empty() {
            return;
        }
        tracing::info!(parent: &self.core.span, trees = lost.len(), "trees in flight through a lost task: failed now, not at their timeout");
        TaskMetrics::add(&self.core.metrics.tree_failed, lost.len() as u64);
        for (root, msg) in lost {
            self.on_failed(root, msg, ctx);
        }
        self.publish_pending();
        if self.state == State::Settling {
            self.core.flush(self.task.as_mut());
        }
        self.end_if_settled();
    }
}

impl Handler<Drain> for SpoutActor {
    type Result = ();

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        self.draining = true;
        match self.state {
            State::Running | State::Waiting => self.stop_emitting(),
            State::Settling | State::Ending => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn awaiting(trees: &[(u64, u64)]) -> Awaiting {
        Awaiting {
            id: 1,
            position: Vec::new(),
            waiting: trees
                .iter()
                .map(|(root, msg)| (RootId(*root), MsgId(*msg)))
                .collect(),
            replay: Vec::new(),
            owed: Vec::new(),
        }
    }

    #[test]
    fn a_part_waits_for_its_trees_and_replays_the_failed_and_the_parked_only() {
        let mut a = awaiting(&[(1, 10), (2, 20), (3, 30), (4, 40)]);
        assert!(
            !a.settled(RootId(1), false),
            "completed: in the states already"
        );
        assert!(
            !a.settled(RootId(2), true),
            "failed: replayed after a restore"
        );
        assert!(
            !a.parked(RootId(3)),
            "parked by a window: replayed, and not waited for"
        );
        assert!(!a.settled(RootId(3), false));
        // A tree started after the barrier, even under a message id of the ones waited for,
        // does not count.
        assert!(!a.settled(RootId(9), true));
        assert!(a.settled(RootId(4), false), "the last one settled");
        assert_eq!(a.replay, [MsgId(20), MsgId(30)]);
    }
}
