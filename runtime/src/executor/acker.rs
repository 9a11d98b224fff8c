//! [`AckerActor`]: one acker task, a thin shell around [`AckLedger`].

use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Recipient};
use rustc_hash::FxHashMap;
use tempest_dsl::{RootId, TaskId};

use crate::ack::{AckLedger, TreeOutcome};
use crate::executor::{AckBatch, Verdicts};

/// Applies ack-tree operations to its ledger and tells spout tasks about decided trees, one
/// message per spout task per batch of operations.
pub(crate) struct AckerActor {
    ledger: AckLedger,
    spouts: FxHashMap<TaskId, Recipient<Verdicts>>,
    verdicts: FxHashMap<TaskId, Vec<(RootId, TreeOutcome)>>,
    sweep_every: Duration,
    span: tracing::Span,
}

impl AckerActor {
    /// An acker that sends verdicts to `spouts`, the spout tasks by id.
    pub(crate) fn new(
        message_timeout: Duration,
        spouts: FxHashMap<TaskId, Recipient<Verdicts>>,
        span: tracing::Span,
    ) -> Self {
        AckerActor {
            ledger: AckLedger::new(),
            spouts,
            verdicts: FxHashMap::default(),
            // The spout times a tree out after one message timeout; sweeping once per timeout
            // keeps a dead entry between two and three timeouts, like Storm's rotating map.
            sweep_every: message_timeout,
            span,
        }
    }
}

impl Actor for AckerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.sweep_every, |act, _| {
            let dropped = act.ledger.sweep();
            if dropped > 0 {
                tracing::debug!(parent: &act.span, dropped, "forgot trees past their timeout");
            }
        });
    }
}

impl Handler<AckBatch> for AckerActor {
    type Result = ();

    fn handle(&mut self, AckBatch(ops): AckBatch, _: &mut Context<Self>) {
        for op in ops {
            if let Some((spout, outcome)) = self.ledger.apply(op) {
                self.verdicts
                    .entry(spout)
                    .or_default()
                    .push((op.root, outcome));
            }
        }
        let span = &self.span;
        for (spout, list) in self.verdicts.iter_mut() {
            if list.is_empty() {
                continue;
            }
            match self.spouts.get(spout) {
                Some(to) => to.do_send(Verdicts(std::mem::take(list))),
                None => {
                    tracing::warn!(
                        parent: span,
                        spout = spout.0,
                        "verdicts for an unknown spout task dropped"
                    );
                    list.clear();
                }
            }
        }
    }
}
