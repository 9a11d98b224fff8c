//! [`BoltActor`]: runs one bolt task.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler, Recipient};
use rustc_hash::FxHashMap;
use tempest_dsl::TaskId;
use tempest_dsl::engine::{BoltTask, LinkId, Payload};

use crate::executor::outbox::Outbox;
use crate::executor::{Credit, Deliver, Delivery, TaskCore, Wire, guarded};
use crate::metrics::TaskMetrics;

/// Runs one bolt task: executes the batches that arrive, in arrival order, unless its own
/// output is blocked, in which case they wait (and their credits are not returned, which
/// blocks the senders in turn).
pub(crate) struct BoltActor {
    core: TaskCore,
    task: Box<dyn BoltTask>,
    inbox: VecDeque<Delivery>,
    upstream: FxHashMap<TaskId, Recipient<Credit>>,
    ends_expected: u32,
    ends_received: u32,
    tick_every: Option<Duration>,
    credit: u32,
    finishing: bool,
    errors_logged: u64,
}

impl BoltActor {
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
            inbox: VecDeque::new(),
            upstream: FxHashMap::default(),
            ends_expected,
            ends_received: 0,
            tick_every,
            credit,
            finishing: false,
            errors_logged: 0,
        }
    }

    fn is_done(&self) -> bool {
        self.core.has_reported()
    }

    /// Executes queued deliveries while the output is not blocked.
    fn pump(&mut self) {
        while !self.core.outbox.is_blocked() && !self.is_done() {
            let Some(delivery) = self.inbox.pop_front() else {
                break;
            };
            match delivery {
                Delivery::Batch {
                    from,
                    link,
                    input,
                    payload,
                } => self.execute(from, link, input, payload),
                Delivery::End { from } => {
                    self.ends_received += 1;
                    tracing::trace!(parent: &self.core.span, from = from.0, "end of stream");
                }
            }
        }
        self.after_work();
    }

    fn execute(&mut self, from: TaskId, link: LinkId, input: u16, payload: Payload) {
        let n = payload.len();
        let started = Instant::now();
        let task = &mut self.task;
        let result = guarded(|| task.execute_batch(input, from, payload));
        let elapsed = started.elapsed();
        self.core.metrics.dequeue(n);
        if let Some(sender) = self.upstream.get(&from) {
            sender.do_send(Credit { link, batches: 1 });
        }
        match result {
            Err(panic) => return self.core.fail(format!("execute panicked: {panic}")),
            Ok(Err(err)) => return self.core.fail(err.to_string()),
            Ok(Ok(outcome)) => {
                TaskMetrics::add(&self.core.metrics.executed, outcome.executed);
                TaskMetrics::add(&self.core.metrics.failed, outcome.failed);
                self.core.latency.record_batch(elapsed, outcome.executed);
                if let Some(err) = outcome.first_error {
                    self.log_user_error(&err.to_string(), outcome.failed);
                }
            }
        }
        self.core.ship(self.task.as_mut());
        self.core.forward_acks(self.task.as_mut());
    }

    fn log_user_error(&mut self, error: &str, count: u64) {
        let _enter = self.core.span.enter();
        if self.errors_logged == 0 {
            tracing::warn!(%error, count, "execute failed (further failures are logged at debug)");
        } else {
            tracing::debug!(%error, count, "execute failed");
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
            let idle = self.inbox.is_empty() && self.core.metrics.queue_empty();
            self.core.maybe_flush(self.task.as_mut(), idle);
        }
        if self.ends_received >= self.ends_expected && self.inbox.is_empty() {
            self.finish();
        }
    }

    /// Every input has ended and been executed: run `finish`, send the rest and end the links.
    fn finish(&mut self) {
        self.finishing = true;
        let task = &mut self.task;
        match guarded(|| task.finish()) {
            Err(panic) => return self.core.fail(format!("finish panicked: {panic}")),
            Ok(Err(err)) => {
                TaskMetrics::add(&self.core.metrics.failed, 1);
                self.log_user_error(&err.to_string(), 1);
            }
            Ok(Ok(())) => {}
        }
        self.core.flush(self.task.as_mut());
        self.core.forward_acks(self.task.as_mut());
        self.core.outbox.close();
        self.core.report_if_finished();
    }

    fn on_tick(&mut self) {
        if self.finishing || self.is_done() {
            return;
        }
        let task = &mut self.task;
        match guarded(|| task.tick()) {
            Err(panic) => return self.core.fail(format!("tick panicked: {panic}")),
            Ok(Err(err)) => {
                TaskMetrics::add(&self.core.metrics.failed, 1);
                self.log_user_error(&err.to_string(), 1);
            }
            Ok(Ok(())) => {}
        }
        self.core.flush(self.task.as_mut());
        self.core.forward_acks(self.task.as_mut());
    }
}

impl Actor for BoltActor {
    type Context = Context<Self>;
}

impl Handler<Wire> for BoltActor {
    type Result = ();

    fn handle(&mut self, wire: Wire, ctx: &mut Context<Self>) {
        self.core.outbox = Outbox::new(wire.links, self.credit);
        self.upstream = wire.upstream.into_iter().collect();
        self.core.set_ackers(wire.ackers);
        let task = &mut self.task;
        match guarded(|| task.prepare()) {
            Err(panic) => return self.core.fail(format!("prepare panicked: {panic}")),
            Ok(Err(err)) => return self.core.fail(format!("prepare failed: {err}")),
            Ok(Ok(())) => {}
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
        self.inbox.push_back(delivery);
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
