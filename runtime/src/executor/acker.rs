//! [`AckerActor`]: one acker task, a thin shell around [`AckLedger`].

use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Recipient};
use rustc_hash::FxHashMap;
use tempest_dsl::{RootId, TaskId};

use crate::ack::{AckKind, AckLedger, TreeOutcome};
use crate::executor::{AckBatch, AckerWire, Verdicts};

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
    pub(crate) fn new(message_timeout: Duration, span: tracing::Span) -> Self {
        AckerActor {
            ledger: AckLedger::new(),
            spouts: FxHashMap::default(),
            verdicts: FxHashMap::default(),
            sweep_every: AckLedger::sweep_interval(message_timeout),
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

impl Handler<AckerWire> for AckerActor {
    type Result = ();

    fn handle(&mut self, wire: AckerWire, _: &mut Context<Self>) {
        self.spouts = wire.spouts.into_iter().collect();
    }
}

impl Handler<AckBatch> for AckerActor {
    type Result = ();

    fn handle(&mut self, AckBatch(ops): AckBatch, _: &mut Context<Self>) {
        for op in ops {
            let decided = match op.kind {
                AckKind::Init { xor, spout } => self.ledger.init(op.root, xor, spout),
                AckKind::Ack { xor } => self.ledger.ack(op.root, xor),
                AckKind::Fail => self.ledger.fail(op.root),
                AckKind::Reset => self.ledger.reset(op.root),
            };
            if let Some((spout, outcome)) = decided {
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
