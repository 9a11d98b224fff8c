//! [`RelayActor`]: stands in, on this node, for a task that runs on another node (or that was
//! elsewhere when this node's tasks were wired). Local tasks send it what they would send the
//! task itself (batches, marks, ends, credits, ack operations, verdicts); it forwards each to
//! wherever the task runs now: encoded once onto the data lane, or straight to the task's actor
//! once the task runs here. Local links never pass through a relay and are never encoded.
//!
//! When its task moves to another node (its node died), the relay gives the local senders
//! back the credits of the batches lost with it and sends the new task what it must not miss:
//! the latest watermark of every channel and the end markers already sent. Lost batches are
//! replayed by their spouts at once (at-least-once): a relay that lost batches tells the
//! spouts of every node of the run to fail their trees in flight. Batches that go unanswered
//! for the message timeout (lost with a broken connection) have their credits given back;
//! their trees time out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler, Message};
use rustc_hash::FxHashMap;
use tempest_dsl::TaskId;
use tempest_dsl::engine::Mark;

use crate::cluster::worker::run::{Place, RunShared};
use crate::cluster::worker::wire::{DataMessage, RunId};
use crate::executor::{AckBatch, Credit, Deliver, Delivery, Verdicts};

/// Credits that came back over the network for link `link` of local task `from`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CreditBack {
    pub(crate) from: TaskId,
    pub(crate) link: u32,
    pub(crate) batches: u32,
}

/// The relay's task moved: settle what went to its old place.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Retarget;

/// This node's stand-in for one task of one topology run.
pub(crate) struct RelayActor {
    shared: Arc<RunShared>,
    target: TaskId,
    /// Batches sent and not credited back, per (local sender, link).
    in_flight: FxHashMap<(TaskId, u32), u32>,
    /// When each (sender, link) with batches in flight last heard back (or began waiting);
    /// `None` once its batches were counted lost, until a credit comes back: a receiver that
    /// is stalled, not gone, is given at most one window more.
    heard: FxHashMap<(TaskId, u32), Option<Instant>>,
    /// Silence after which batches in flight count as lost: the message timeout (their trees
    /// have timed out and replay by then).
    lost_after: Duration,
    /// The latest watermark sent per (sender, subscription).
    marks: FxHashMap<(TaskId, u16), Mark>,
    /// End-of-data markers sent per sender.
    data_ends: FxHashMap<TaskId, u32>,
    /// End-of-stream markers sent per sender.
    ends: FxHashMap<TaskId, u32>,
}

impl RelayActor {
    pub(crate) fn new(shared: Arc<RunShared>, target: TaskId) -> Self {
        let lost_after = shared.topology.ir().config.message_timeout;
        RelayActor {
            shared,
            target,
            in_flight: FxHashMap::default(),
            heard: FxHashMap::default(),
            lost_after,
            marks: FxHashMap::default(),
            data_ends: FxHashMap::default(),
            ends: FxHashMap::default(),
        }
    }

    /// Sends `delivery` to the target, wherever it runs; a batch that cannot go is credited
    /// back at once so its sender is not starved. Marks and end markers are remembered
    /// wherever they went, to be sent again if the task moves.
    fn deliver(&mut self, delivery: Delivery) {
        match &delivery {
            // A barrier is not sent again to a task that moved (its run rolls back instead).
            Delivery::Mark {
                mark: Mark::Barrier(_),
                ..
            } => {}
            Delivery::Mark { from, input, mark } => {
                self.marks.insert((*from, *input), *mark);
            }
            Delivery::DataEnd { from } => *self.data_ends.entry(*from).or_default() += 1,
            Delivery::End { from } => *self.ends.entry(*from).or_default() += 1,
            Delivery::Batch { .. } => {}
        }
        self.send(delivery);
    }

    fn send(&mut self, delivery: Delivery) {
        let run = self.shared.run.clone();
        let to = self.target;
        match self.shared.place(to) {
            Place::Local(task) => {
                if let Some(d) = &task.deliver {
                    if let Delivery::Batch { payload, .. } = &delivery {
                        task.metrics.enqueue(payload.len());
                    }
                    d.do_send(Deliver(delivery));
                }
            }
            Place::Remote(addr) => {
                let msg = match delivery {
                    Delivery::Batch {
                        from,
                        link,
                        input,
                        payload,
                    } => {
                        let records = self
                            .shared
                            .input_codec(to, input)
                            .and_then(|c| c.encode(&payload).map_err(|e| e.to_string()));
                        let records = match records {
                            Ok(r) => r,
                            Err(why) => {
                                // A bug, not bad input: the engine made a batch it cannot encode.
                                tracing::error!(task = to.0, %why, "a batch could not be encoded; dropped");
                                self.shared.credit_local(from, link.0, 1);
                                return;
                            }
                        };
                        let key = (from, link.0);
                        let n = self.in_flight.entry(key).or_default();
                        let starts = *n == 0;
                        *n += 1;
                        // It begins waiting now, unless its last batches were written off and
                        // no credit came since.
                        if starts && !matches!(self.heard.get(&key), Some(None)) {
                            self.heard.insert(key, Some(Instant::now()));
                        }
                        DataMessage::Batch {
                            run,
                            to,
                            from,
                            link: link.0,
                            input,
                            mark: payload.mark(),
                            records,
                        }
                    }
                    Delivery::Mark { from, input, mark } => DataMessage::Mark {
                        run,
                        to,
                        from,
                        input,
                        mark,
                    },
                    Delivery::DataEnd { from } => DataMessage::DataEnd { run, to, from },
                    Delivery::End { from } => DataMessage::End { run, to, from },
                };
                self.shared.send(&addr, &msg);
            }
            Place::Nowhere => {
                // Its trees fail when the task gets a place (`Retarget`'s `TreesLost`), not
                // here: a replay would only come back here while it has none.
                if let Delivery::Batch { from, link, .. } = delivery {
                    self.shared.credit_local(from, link.0, 1);
                }
            }
        }
    }
}

impl RelayActor {
    fn send_remote(&self, place: Place, remote: impl FnOnce(RunId, TaskId) -> DataMessage) {
        if let Place::Remote(addr) = place {
            self.shared
                .send(&addr, &remote(self.shared.run.clone(), self.target));
        }
    }
}

impl RelayActor {
    /// Gives the local senders back the credits of batches that went unanswered for the
    /// message timeout: lost with a connection that broke, or in the queue of a peer that was
    /// declared down. Without this a link would stay blocked for good; their trees have timed
    /// out and replay. A link written off is not written off again until a credit comes back,
    /// so a receiver that was only stalled gets at most one window more in flight (its late
    /// credits then count against newer batches: exact accounting needs numbered credits).
    fn reclaim(&mut self) {
        for (key, n) in unanswered(
            &mut self.in_flight,
            &mut self.heard,
            Instant::now(),
            self.lost_after,
        ) {
            tracing::info!(
                task = self.target.0,
                from = key.0.0,
                batches = n,
                "batches not credited back within the message timeout: counted lost (their trees replay)"
            );
            self.shared.credit_local(key.0, key.1, n);
        }
    }
}

/// Takes out of `in_flight` the batches of every (sender, link) that has not heard back for
/// `lost_after` (by `heard`) and returns them; those links are not watched again until a
/// credit comes back for them.
fn unanswered(
    in_flight: &mut FxHashMap<(TaskId, u32), u32>,
    heard: &mut FxHashMap<(TaskId, u32), Option<Instant>>,
    now: Instant,
    lost_after: Duration,
) -> Vec<((TaskId, u32), u32)> {
    let mut lost = Vec::new();
    for (key, n) in in_flight.iter_mut() {
        let silent =
            matches!(heard.get(key), Some(Some(at)) if now.duration_since(*at) >= lost_after);
        if *n > 0 && silent {
            lost.push((*key, *n));
            *n = 0;
        }
    }
    lost.sort_unstable();
    for (key, _) in &lost {
        heard.insert(*key, None);
    }
    lost
}

impl Actor for RelayActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = (self.lost_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        ctx.run_interval(every, |act, _| act.reclaim());
    }
}

impl Handler<Deliver> for RelayActor {
    type Result = ();

    fn handle(&mut self, Deliver(delivery): Deliver, _: &mut Context<Self>) {
        self.deliver(delivery);
    }
}

impl Handler<Credit> for RelayActor {
    type Result = ();

    /// A local bolt returns credit to the (remote) upstream task this relay stands for: to the
    /// node its batches came from.
    fn handle(&mut self, credit: Credit, _: &mut Context<Self>) {
        let (link, batches) = (credit.link.0, credit.batches);
        match self.shared.credit_place(self.target) {
            Place::Local(task) => {
                if let Some(c) = &task.credit {
                    c.do_send(credit);
                }
            }
            place => self.send_remote(place, |run, to| DataMessage::Credit {
                run,
                to,
                link,
                batches,
            }),
        }
    }
}

impl Handler<CreditBack> for RelayActor {
    type Result = ();

    /// Credits for batches this relay sent: at most what is in flight, so a late credit from a
    /// task's old place (after [`Retarget`] gave them back) adds nothing.
    fn handle(&mut self, back: CreditBack, _: &mut Context<Self>) {
        let Some(n) = self.in_flight.get_mut(&(back.from, back.link)) else {
            return;
        };
        let batches = back.batches.min(*n);
        *n -= batches;
        self.heard
            .insert((back.from, back.link), Some(Instant::now()));
        if batches > 0 {
            self.shared.credit_local(back.from, back.link, batches);
        }
    }
}

impl Handler<AckBatch> for RelayActor {
    type Result = ();

    /// Ack operations for the acker this relay stands for. While it is nowhere (its node
    /// is down and it has no new place yet, or it is about to start here) they are tried
    /// again every 20 ms for a second, then dropped (their trees time out).
    fn handle(&mut self, AckBatch(ops): AckBatch, ctx: &mut Context<Self>) {
        self.deliver_acks(ops, ACK_RETRIES, ctx);
    }
}

/// How often ack operations for an acker that is nowhere are tried again, 20 ms apart.
const ACK_RETRIES: u32 = 50;

impl RelayActor {
    fn deliver_acks(
        &mut self,
        ops: Vec<crate::ack::AckMsg>,
        retries: u32,
        ctx: &mut Context<Self>,
    ) {
        match self.shared.place(self.target) {
            Place::Local(task) => {
                if let Some(a) = &task.acks {
                    a.do_send(AckBatch(ops));
                }
            }
            Place::Nowhere if retries > 0 => {
                ctx.run_later(Duration::from_millis(20), move |act, ctx| {
                    act.deliver_acks(ops, retries - 1, ctx);
                });
            }
            place => self.send_remote(place, |run, to| DataMessage::Acks { run, to, ops }),
        }
    }
}

impl Handler<Verdicts> for RelayActor {
    type Result = ();

    fn handle(&mut self, Verdicts(verdicts): Verdicts, _: &mut Context<Self>) {
        match self.shared.place(self.target) {
            Place::Local(task) => {
                if let Some(v) = &task.verdicts {
                    v.do_send(Verdicts(verdicts));
                }
            }
            place => self.send_remote(place, |run, to| DataMessage::Verdicts { run, to, verdicts }),
        }
    }
}

impl Handler<Retarget> for RelayActor {
    type Result = ();

    fn handle(&mut self, _: Retarget, _: &mut Context<Self>) {
        let lost: u32 = self.in_flight.values().sum();
        if lost > 0 {
            tracing::info!(
                task = self.target.0,
                batches = lost,
                "task moved: batches in flight to it are lost (their trees replay)"
            );
            self.shared.batches_lost();
        }
        self.heard.clear();
        for ((from, link), n) in self.in_flight.drain() {
            if n > 0 {
                self.shared.credit_local(from, link, n);
            }
        }
        let marks: Vec<_> = self.marks.iter().map(|(k, m)| (*k, *m)).collect();
        let data_ends: Vec<_> = self.data_ends.iter().map(|(k, n)| (*k, *n)).collect();
        let ends: Vec<_> = self.ends.iter().map(|(k, n)| (*k, *n)).collect();
        // Kept: the task may move again. The receiver counts end markers once per link.
        for ((from, input), mark) in marks {
            self.send(Delivery::Mark { from, input, mark });
        }
        for (from, n) in data_ends {
            for _ in 0..n {
                self.send(Delivery::DataEnd { from });
            }
        }
        for (from, n) in ends {
            for _ in 0..n {
                self.send(Delivery::End { from });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_unanswered_for_the_timeout_are_counted_lost_once() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(5);
        let (a, b, c) = ((TaskId(1), 0), (TaskId(1), 1), (TaskId(2), 0));
        let mut in_flight: FxHashMap<_, _> = [(a, 3), (b, 2), (c, 0)].into_iter().collect();
        // `a` last heard at t0, `b` 4 s later; `c` has nothing in flight.
        let mut heard: FxHashMap<_, _> = [
            (a, Some(t0)),
            (b, Some(t0 + Duration::from_secs(4))),
            (c, Some(t0)),
        ]
        .into_iter()
        .collect();
        let at = |s| t0 + Duration::from_secs(s);
        assert!(unanswered(&mut in_flight, &mut heard, at(4), timeout).is_empty());
        let lost = unanswered(&mut in_flight, &mut heard, at(6), timeout);
        assert_eq!(lost, vec![(a, 3)]);
        assert_eq!((in_flight[&a], in_flight[&b]), (0, 2));
        assert_eq!(heard[&a], None);
        // `a` sends again while stalled: written off, it is not counted lost a second time
        // until a credit comes back (at most one window more for a stalled receiver).
        *in_flight.get_mut(&a).expect("a") = 4;
        let later = unanswered(&mut in_flight, &mut heard, at(20), timeout);
        assert_eq!(later, vec![(b, 2)]);
        heard.insert(a, Some(at(20)));
        let after_credit = unanswered(&mut in_flight, &mut heard, at(26), timeout);
        assert_eq!(after_credit, vec![(a, 4)]);
    }
}
