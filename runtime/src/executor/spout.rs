//! [`SpoutActor`]: runs one spout task.

use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use tempest_dsl::SpoutStatus;
use tempest_dsl::engine::SpoutTask;

use crate::executor::outbox::Outbox;
use crate::executor::{Credit, Drain, Start, TaskCore, Wire, guarded};
use crate::metrics::TaskMetrics;

/// How long an idle (or erroring) spout waits before it is asked again.
const IDLE_BACKOFF: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Wired, waiting for `Start`.
    Waiting,
    /// Calling `next`.
    Running,
    /// Done or drained: no more `next`; ending once the output is delivered.
    Ending,
}

/// Runs one spout task: calls `next` in rounds of about one batch, yielding to the other actors
/// of its worker thread between rounds, and stops calling it while its output is blocked.
pub(crate) struct SpoutActor {
    core: TaskCore,
    task: Box<dyn SpoutTask>,
    batch_size: usize,
    credit: u32,
    state: State,
    /// A poll is scheduled; at most one is.
    polling: bool,
    errors_logged: u64,
}

impl SpoutActor {
    pub(crate) fn new(
        core: TaskCore,
        task: Box<dyn SpoutTask>,
        batch_size: usize,
        credit: u32,
    ) -> Self {
        SpoutActor {
            core,
            task,
            batch_size,
            credit,
            state: State::Waiting,
            polling: false,
            errors_logged: 0,
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

    /// One round of `next` calls.
    fn poll(&mut self, ctx: &mut Context<Self>) {
        self.polling = false;
        if self.state != State::Running || self.core.has_reported() {
            return;
        }
        if self.core.outbox.is_blocked() {
            // A returning credit polls again.
            return;
        }
        let budget = self.batch_size;
        let task = &mut self.task;
        let result = guarded(|| task.next_batch(budget));
        let status = match result {
            Err(panic) => return self.core.fail(format!("next panicked: {panic}")),
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
        match status {
            SpoutStatus::Active => {
                self.core.maybe_flush(self.task.as_mut(), false);
                self.yield_then_poll(ctx);
            }
            SpoutStatus::Idle => {
                self.core.flush(self.task.as_mut());
                self.poll_later(ctx, IDLE_BACKOFF);
            }
            SpoutStatus::Done => self.end(),
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
        let task = &mut self.task;
        if let Err(panic) = guarded(|| task.close()) {
            return self.core.fail(format!("close panicked: {panic}"));
        }
        self.core.report_if_finished();
    }
}

impl Actor for SpoutActor {
    type Context = Context<Self>;
}

impl Handler<Wire> for SpoutActor {
    type Result = ();

    fn handle(&mut self, wire: Wire, _: &mut Context<Self>) {
        self.core.outbox = Outbox::new(wire.links, self.credit);
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
        self.state = State::Running;
        self.yield_then_poll(ctx);
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

impl Handler<Drain> for SpoutActor {
    type Result = ();

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        match self.state {
            State::Running | State::Waiting => self.end(),
            State::Ending => {}
        }
    }
}
