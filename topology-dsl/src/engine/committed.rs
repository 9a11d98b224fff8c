//! [`Committed`]: the committed position of a seekable spout under exactly-once, the first
//! message id whose tree is not complete (every smaller id's is). Pure: it sees emits and
//! completions, in the order the task sees them.
//!
//! A seekable spout's message ids grow in the order it first emits them (a byte offset, a
//! line number), and a failed message stays open until a replay of it completes. So a
//! restarted spout that seeks to the committed position emits again every message whose
//! effects may be missing, and only messages at or past it (their tuples carry the same
//! ids, so what was applied already is skipped).
//!
//! Only a message read for the first time moves the position's upper bound: a replay (of a
//! message that failed, whichever instance of the spout emitted it, or one in flight when a
//! checkpoint was taken) does not, since the messages before it may not have been read again
//! yet. A position that ran ahead of a message not applied would lose it: stateful tasks skip
//! the messages below a position they saw.

use std::collections::BTreeSet;

use crate::ids::MsgId;

/// The committed position of one spout task.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    /// Messages emitted whose trees did not complete yet (failed ones included, until a replay
    /// completes).
    open: BTreeSet<u64>,
    /// One past the largest id read for the first time, or the position sought.
    next: u64,
    /// Failed messages whose replay was not emitted yet: their emit is a replay.
    replays: BTreeSet<u64>,
}

impl Committed {
    /// A message was emitted (for the first time, or again as the replay of a failure).
    pub(crate) fn emitted(&mut self, msg: MsgId) {
        self.open.insert(msg.0);
        if !self.replays.remove(&msg.0) {
            self.next = self.next.max(msg.0.saturating_add(1));
        }
    }

    /// A message's tree failed (or it was in flight at the checkpoint the spout was restored
    /// to): it stays open until a replay of it completes, and its next emit is that replay.
    pub(crate) fn failed(&mut self, msg: MsgId) {
        self.open.insert(msg.0);
        self.replays.insert(msg.0);
    }

    /// A message's tree completed. (One complete at emit is `emitted`, then `completed`.) An
    /// ack of a message it never saw emitted (a tree of an earlier instance of the spout)
    /// moves nothing.
    pub(crate) fn completed(&mut self, msg: MsgId) {
        self.open.remove(&msg.0);
    }

    /// The spout sought `from`: it emits again from there.
    pub(crate) fn sought(&mut self, from: MsgId) {
        self.open.clear();
        self.replays.clear();
        self.next = from.0;
    }

    /// The first message not complete: every smaller id's tree completed. (A failed message
    /// of an earlier instance can be open past the messages read so far: those not read
    /// again yet are not complete either.)
    pub(crate) fn position(&self) -> MsgId {
        MsgId(self.open.first().map_or(self.next, |&o| o.min(self.next)))
    }

    /// The failed messages whose replay was not emitted yet.
    pub(crate) fn owed_replays(&self) -> Vec<MsgId> {
        self.replays.iter().map(|&m| MsgId(m)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_is_the_first_message_not_complete() {
        let mut c = Committed::default();
        assert_eq!(c.position(), MsgId(0));
        for m in [10, 11, 12, 13] {
            c.emitted(MsgId(m));
        }
        assert_eq!(c.position(), MsgId(10));
        c.completed(MsgId(11));
        c.completed(MsgId(13));
        assert_eq!(c.position(), MsgId(10), "10 is still open");
        c.completed(MsgId(10));
        assert_eq!(c.position(), MsgId(12), "12 failed or is in flight");
        // 12 failed: it stays open until its replay completes.
        c.emitted(MsgId(12));
        assert_eq!(c.position(), MsgId(12));
        c.completed(MsgId(12));
        assert_eq!(c.position(), MsgId(14));
        // A message complete at emit moves it along too.
        c.emitted(MsgId(20));
        c.completed(MsgId(20));
        assert_eq!(c.position(), MsgId(21));
        // A late ack of a message this instance never emitted moves nothing.
        c.completed(MsgId(90));
        assert_eq!(c.position(), MsgId(21));
        c.sought(MsgId(5));
        assert_eq!(c.position(), MsgId(5));
        c.emitted(MsgId(5));
        assert_eq!(c.position(), MsgId(5));
    }

    #[test]
    fn a_replay_does_not_move_the_position_past_messages_not_read_again() {
        // An instance restarted at 100 reads 100 and 101; the earlier instance's tree of 300
        // fails, and 300 is replayed before 102..300 are read again.
        let mut c = Committed::default();
        c.sought(MsgId(100));
        c.emitted(MsgId(100));
        c.emitted(MsgId(101));
        c.failed(MsgId(300));
        assert_eq!(c.position(), MsgId(100));
        c.completed(MsgId(100));
        c.completed(MsgId(101));
        assert_eq!(
            c.position(),
            MsgId(102),
            "300 is open, but 102 was not read again yet"
        );
        assert_eq!(c.owed_replays(), [MsgId(300)]);
        c.emitted(MsgId(300));
        assert!(c.owed_replays().is_empty());
        for m in [100, 101, 300] {
            c.completed(MsgId(m));
        }
        assert_eq!(c.position(), MsgId(102), "102 was not read again yet");
        // Restored from a checkpoint that had 40 in flight, reading on from 90.
        let mut c = Committed::default();
        c.failed(MsgId(40));
        c.emitted(MsgId(90));
        c.completed(MsgId(90));
        assert_eq!(
            c.position(),
            MsgId(40),
            "40 holds it until its replay completes"
        );
        c.emitted(MsgId(40));
        c.completed(MsgId(40));
        assert_eq!(c.position(), MsgId(91));
    }
}
