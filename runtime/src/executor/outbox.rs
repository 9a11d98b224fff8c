//! [`Outbox`]: a task's outgoing links with credit-based flow control. A pure core: what it
//! sends goes through a [`LinkSender`], an actor address in local mode (a connection later).
//!
//! Each link starts with `queue_batches` credits. Sending a batch spends one; the receiver
//! returns it once it has executed the batch. A batch with no credit left waits in the link's
//! queue, and while any link has a waiting batch the outbox is *blocked*: its task stops taking
//! input, so a slow bolt slows its upstream instead of growing memory.
//!
//! ```text
//!   sender                         receiver
//!   credit 4 ── Data ──────────►   executes batch
//!   credit 3 ◄──────── Credit ──   (one per executed batch)
//!   credit 4
//! ```
//!
//! Watermark marks and the end markers take no credit but are queued behind the waiting
//! batches of their link, so they keep their place in its order; a mark waiting behind
//! batches is replaced by a newer one (only the latest watermark matters). End of stream is
//! always the last thing a link delivers.

use std::collections::VecDeque;

use tempest_dsl::engine::{LinkId, Mark, Payload};

/// Sends along one link.
pub(crate) trait LinkSender {
    /// Delivers a batch (sent over `link` of the sending task).
    fn send_data(&self, link: LinkId, payload: Payload);
    /// Delivers a watermark mark.
    fn send_mark(&self, mark: Mark);
    /// Delivers the end-of-data marker: nothing new will come.
    fn send_data_end(&self);
    /// Delivers the end-of-stream marker.
    fn send_eos(&self);
}

enum Item {
    Batch(Payload),
    Mark(Mark),
    DataEnd,
    Eos,
}

struct Link<S> {
    sender: S,
    credit: u32,
    waiting: VecDeque<Item>,
}

/// The outgoing links of one task.
pub(crate) struct Outbox<S> {
    links: Vec<Link<S>>,
    /// Links with a non-empty `waiting` queue.
    blocked: usize,
    data_ended: bool,
    closed: bool,
    /// The credit each link starts with.
    initial: u32,
}

impl<S: LinkSender> Outbox<S> {
    /// An outbox over `senders`, indexed by `LinkId`, each with `credit` batches in flight.
    pub(crate) fn new(senders: Vec<S>, credit: u32) -> Self {
        Outbox {
            links: senders
                .into_iter()
                .map(|sender| Link {
                    sender,
                    credit,
                    waiting: VecDeque::new(),
                })
                .collect(),
            blocked: 0,
            data_ended: false,
            closed: false,
            initial: credit,
        }
    }

    /// Gives every link back at least its initial credit: the credits of batches sent before
    /// will not come back (a replicated task that leads again: they went back to the leader
    /// of the time in between).
    pub(crate) fn refill(&mut self) {
        for i in 0..self.links.len() {
            let missing = self.initial.saturating_sub(self.links[i].credit);
            if missing > 0 {
                self.credit(LinkId(i as u32), missing);
            }
        }
    }

    /// Sends a batch now if the link has credit, or queues it.
    pub(crate) fn send(&mut self, link: LinkId, payload: Payload) {
        debug_assert!(!self.closed, "send after close");
        let Some(l) = self.links.get_mut(link.0 as usize) else {
            // The engine only produces links of the plan; this is a bug, not bad input.
            tracing::error!(link = link.0, "batch for an unknown link dropped");
            return;
        };
        if l.credit > 0 && l.waiting.is_empty() {
            l.credit -= 1;
            l.sender.send_data(link, payload);
        } else {
            if l.waiting.is_empty() {
                self.blocked += 1;
            }
            l.waiting.push_back(Item::Batch(payload));
        }
    }

    /// Returns `batches` credits to `link` and sends what they allow.
    pub(crate) fn credit(&mut self, link: LinkId, batches: u32) {
        let Some(l) = self.links.get_mut(link.0 as usize) else {
            tracing::warn!(link = link.0, "credit for an unknown link ignored");
            return;
        };
        l.credit = l.credit.saturating_add(batches);
        let was_blocked = !l.waiting.is_empty();
        while let Some(item) = l.waiting.front() {
            match item {
                Item::Batch(_) if l.credit == 0 => break,
                Item::Batch(_) => {
                    l.credit -= 1;
                    if let Some(Item::Batch(p)) = l.waiting.pop_front() {
                        l.sender.send_data(link, p);
                    }
                }
                Item::Mark(m) => {
                    let m = *m;
                    l.waiting.pop_front();
                    l.sender.send_mark(m);
                }
                Item::DataEnd => {
                    l.waiting.pop_front();
                    l.sender.send_data_end();
                }
                Item::Eos => {
                    l.waiting.pop_front();
                    l.sender.send_eos();
                }
            }
        }
        if was_blocked && l.waiting.is_empty() {
            self.blocked -= 1;
        }
    }

    /// Sends a watermark mark on every link, after whatever is queued there. Nothing is sent
    /// once the data has ended.
    pub(crate) fn mark(&mut self, mark: Mark) {
        if self.data_ended {
            return;
        }
        for l in &mut self.links {
            match (l.waiting.back_mut(), mark) {
                (None, _) => l.sender.send_mark(mark),
                // Only the latest watermark matters; idleness once is enough.
                (Some(Item::Mark(m)), Mark::Time(_)) if matches!(m, Mark::Time(_)) => *m = mark,
                (Some(Item::Mark(Mark::Idle)), Mark::Idle) => {}
                // Behind a watermark, idleness must not hide it; a barrier is never replaced,
                // nor replaces anything.
                (Some(_), _) => l.waiting.push_back(Item::Mark(mark)),
            }
        }
    }

    /// Tells every link that no new data follows: the marker goes out after whatever is
    /// queued. Once only.
    pub(crate) fn end_data(&mut self) {
        if self.data_ended {
            return;
        }
        self.data_ended = true;
        for l in &mut self.links {
            if l.waiting.is_empty() {
                l.sender.send_data_end();
            } else {
                l.waiting.push_back(Item::DataEnd);
            }
        }
    }

    /// Ends every link (after the end-of-data marker, if it was not sent yet): end of stream
    /// goes out after whatever is queued.
    pub(crate) fn close(&mut self) {
        if self.closed {
            return;
        }
        self.end_data();
        self.closed = true;
        for l in &mut self.links {
            if l.waiting.is_empty() {
                l.sender.send_eos();
            } else {
                l.waiting.push_back(Item::Eos);
            }
        }
    }

    /// Whether some batch waits for credit.
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked > 0
    }

    /// Whether the outbox was closed and everything, end of stream included, has gone out.
    pub(crate) fn is_finished(&self) -> bool {
        self.closed && self.blocked == 0
    }

    /// Batches waiting for credit, over all links.
    #[cfg(test)]
    pub(crate) fn waiting_batches(&self) -> usize {
        self.links
            .iter()
            .map(|l| {
                l.waiting
                    .iter()
                    .filter(|i| matches!(i, Item::Batch(_)))
                    .count()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use tempest_dsl::engine::TypedBatch;

    #[derive(Clone, Debug, PartialEq)]
    enum Sent {
        Data(u32, usize),
        Mark(u32, Mark),
        DataEnd(u32),
        Eos(u32),
    }

    struct Fake {
        id: u32,
        log: Rc<RefCell<Vec<Sent>>>,
    }

    impl LinkSender for Fake {
        fn send_data(&self, _link: LinkId, payload: Payload) {
            self.log
                .borrow_mut()
                .push(Sent::Data(self.id, payload.len()));
        }
        fn send_mark(&self, mark: Mark) {
            self.log.borrow_mut().push(Sent::Mark(self.id, mark));
        }
        fn send_data_end(&self) {
            self.log.borrow_mut().push(Sent::DataEnd(self.id));
        }
        fn send_eos(&self) {
            self.log.borrow_mut().push(Sent::Eos(self.id));
        }
    }

    fn batch(n: usize) -> Payload {
        Payload::local(TypedBatch {
            values: vec![0u8; n],
            ..TypedBatch::default()
        })
    }

    fn outbox(links: u32, credit: u32) -> (Outbox<Fake>, Rc<RefCell<Vec<Sent>>>) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let senders = (0..links)
            .map(|id| Fake {
                id,
                log: Rc::clone(&log),
            })
            .collect();
        (Outbox::new(senders, credit), log)
    }

    #[test]
    fn sends_while_credit_lasts_then_blocks() {
        let (mut out, log) = outbox(1, 2);
        out.send(LinkId(0), batch(1));
        out.send(LinkId(0), batch(2));
        assert!(!out.is_blocked());
        out.send(LinkId(0), batch(3));
        assert!(out.is_blocked());
        assert_eq!(out.waiting_batches(), 1);
        assert_eq!(*log.borrow(), [Sent::Data(0, 1), Sent::Data(0, 2)]);
        out.credit(LinkId(0), 1);
        assert!(!out.is_blocked());
        assert_eq!(log.borrow().last(), Some(&Sent::Data(0, 3)));
    }

    #[test]
    fn a_blocked_link_keeps_order() {
        let (mut out, log) = outbox(1, 1);
        for n in 1..=4 {
            out.send(LinkId(0), batch(n));
        }
        for _ in 0..3 {
            out.credit(LinkId(0), 1);
        }
        let sizes: Vec<_> = log
            .borrow()
            .iter()
            .map(|s| match s {
                Sent::Data(_, n) => *n,
                Sent::Mark(..) | Sent::DataEnd(_) | Sent::Eos(_) => 0,
            })
            .collect();
        assert_eq!(sizes, [1, 2, 3, 4]);
    }

    #[test]
    fn end_of_stream_waits_behind_queued_batches() {
        let (mut out, log) = outbox(2, 1);
        out.send(LinkId(0), batch(1));
        out.send(LinkId(0), batch(2)); // waits
        out.close();
        assert!(!out.is_finished());
        assert_eq!(
            *log.borrow(),
            [Sent::Data(0, 1), Sent::DataEnd(1), Sent::Eos(1)],
            "link 1 had nothing queued, so it ends at once"
        );
        out.credit(LinkId(0), 1);
        assert!(out.is_finished());
        assert_eq!(
            log.borrow()[3..],
            [Sent::Data(0, 2), Sent::DataEnd(0), Sent::Eos(0)]
        );
    }

    #[test]
    fn marks_keep_their_place_and_coalesce_behind_waiting_batches() {
        let (mut out, log) = outbox(2, 1);
        out.send(LinkId(0), batch(1));
        out.send(LinkId(0), batch(2)); // waits
        out.mark(Mark::Time(10));
        out.mark(Mark::Time(20));
        assert_eq!(
            *log.borrow(),
            [
                Sent::Data(0, 1),
                Sent::Mark(1, Mark::Time(10)),
                Sent::Mark(1, Mark::Time(20))
            ],
            "link 1 had nothing queued: both go at once"
        );
        out.credit(LinkId(0), 1);
        assert_eq!(
            log.borrow()[3..],
            [Sent::Data(0, 2), Sent::Mark(0, Mark::Time(20))],
            "link 0: after the batch sent before it, only the latest"
        );
        out.send(LinkId(0), batch(3));
        out.send(LinkId(0), batch(4)); // waits
        out.mark(Mark::Time(30));
        out.mark(Mark::Idle);
        out.credit(LinkId(0), 5);
        assert!(
            log.borrow().ends_with(&[
                Sent::Data(0, 4),
                Sent::Mark(0, Mark::Time(30)),
                Sent::Mark(0, Mark::Idle)
            ]),
            "idleness does not hide a watermark that moved: {:?}",
            log.borrow()
        );
    }

    #[test]
    fn blocked_counts_links_not_batches() {
        let (mut out, _log) = outbox(2, 0);
        out.send(LinkId(0), batch(1));
        out.send(LinkId(0), batch(1));
        out.send(LinkId(1), batch(1));
        out.credit(LinkId(0), 5);
        assert!(out.is_blocked(), "link 1 still waits");
        out.credit(LinkId(1), 1);
        assert!(!out.is_blocked());
    }

    #[test]
    fn unknown_links_are_ignored() {
        let (mut out, log) = outbox(1, 1);
        out.send(LinkId(9), batch(1));
        out.credit(LinkId(9), 1);
        assert!(log.borrow().is_empty());
    }
}
