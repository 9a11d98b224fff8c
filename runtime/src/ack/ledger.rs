//! [`AckLedger`]: the acker's table of trees, `root -> XOR of edge ids`.

use std::collections::hash_map;

use rustc_hash::FxHashMap;
use tempest_dsl::{RootId, TaskId};

use crate::ack::{AckKind, AckMsg};

/// What happened to a tree, for the spout task that owns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TreeOutcome {
    /// Every edge was acked.
    Acked,
    /// Some tuple of the tree failed.
    Failed,
    /// A bolt asked to restart the tree's timeout.
    Reset,
    /// A window took a tuple of the tree: it no longer holds its spout's watermark.
    Parked,
}

#[derive(Clone, Debug)]
struct Entry {
    xor: u64,
    /// The spout task, once its init has arrived.
    spout: Option<TaskId>,
    failed: bool,
    /// A window took a tuple of the tree (the spout is told once).
    parked: bool,
    /// The sweep generation of the last update.
    touched: u64,
}

impl Entry {
    /// The tree's outcome, if it can be decided: once the init has arrived, a failure wins
    /// over completion (Storm checks completion first; then a fail and the acks that overtake
    /// an init would complete a failed tree, and its failure would be lost).
    fn decision(&self) -> Option<(TaskId, TreeOutcome)> {
        let spout = self.spout?;
        if self.failed {
            Some((spout, TreeOutcome::Failed))
        } else if self.xor == 0 {
            Some((spout, TreeOutcome::Acked))
        } else {
            None
        }
    }
}

/// The acker's table: for each root, the XOR of the edge ids heard of, and which spout task
/// started it. A pure core: callers pass operations in and act on the outcomes.
///
/// Invariant: an entry's value is zero exactly when every edge it has heard of was acked; a
/// tree is decided only once its init has arrived (an ack may overtake its init, and XOR does
/// not care about order).
#[derive(Debug, Default)]
pub struct AckLedger {
    entries: FxHashMap<RootId, Entry>,
    generation: u64,
}

/// How many sweeps an untouched entry survives. The spout times a tree out after one message
/// timeout, so an entry untouched for this many is dead; sweeping every timeout keeps it
/// between two and three timeouts, like Storm's three-bucket rotating map.
const SWEEPS_TO_LIVE: u64 = 2;

impl AckLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        AckLedger::default()
    }

    /// The number of trees being tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no tree is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Applies `update` to the entry of `root` (made if new) and decides the tree if it can
    /// be decided, removing it: one lookup per operation.
    fn update(
        &mut self,
        root: RootId,
        update: impl FnOnce(&mut Entry),
    ) -> Option<(TaskId, TreeOutcome)> {
        let generation = self.generation;
        match self.entries.entry(root) {
            hash_map::Entry::Occupied(mut occupied) => {
                let entry = occupied.get_mut();
                entry.touched = generation;
                update(entry);
                let decided = entry.decision()?;
                occupied.remove();
                Some(decided)
            }
            hash_map::Entry::Vacant(vacant) => {
                let mut entry = Entry {
                    xor: 0,
                    spout: None,
                    failed: false,
                    parked: false,
                    touched: generation,
                };
                update(&mut entry);
                let decided = entry.decision();
                if decided.is_none() {
                    vacant.insert(entry);
                }
                decided
            }
        }
    }

    /// Applies one message; returns the tree's outcome if this decided it (or, for a reset,
    /// the spout to tell).
    pub fn apply(&mut self, msg: AckMsg) -> Option<(TaskId, TreeOutcome)> {
        match msg.kind {
            AckKind::Init { xor, spout } => self.init(msg.root, xor, spout),
            AckKind::Ack { xor } => self.ack(msg.root, xor),
            AckKind::Fail => self.fail(msg.root),
            AckKind::Reset => self.reset(msg.root),
            AckKind::Park => self.park(msg.root),
        }
    }

    /// Spout task `spout` started tree `root` with first edges `xor`. A park that overtook
    /// the init is reported now, if nothing decided the tree.
    pub fn init(&mut self, root: RootId, xor: u64, spout: TaskId) -> Option<(TaskId, TreeOutcome)> {
        let mut parked = false;
        let decided = self.update(root, |entry| {
            entry.xor ^= xor;
            entry.spout = Some(spout);
            parked = entry.parked;
        });
        decided.or_else(|| parked.then_some((spout, TreeOutcome::Parked)))
    }

    /// A window took a tuple of `root`: returns the spout to tell, the first time only.
    pub fn park(&mut self, root: RootId) -> Option<(TaskId, TreeOutcome)> {
        let mut tell = None;
        // A park changes nothing a decision depends on, so it never decides the tree.
        let _undecided = self.update(root, |entry| {
            if !entry.parked {
                entry.parked = true;
                tell = entry.spout;
            }
        });
        tell.map(|s| (s, TreeOutcome::Parked))
    }

    /// A tuple of `root` was acked: its edge XOR the edges of its children.
    pub fn ack(&mut self, root: RootId, xor: u64) -> Option<(TaskId, TreeOutcome)> {
        self.update(root, |entry| entry.xor ^= xor)
    }

    /// A tuple of `root` failed.
    pub fn fail(&mut self, root: RootId) -> Option<(TaskId, TreeOutcome)> {
        self.update(root, |entry| entry.failed = true)
    }

    /// A bolt asked to restart the timeout of `root`: returns the spout to tell, if known.
    /// An unknown root is remembered (its init may still be on the way).
    pub fn reset(&mut self, root: RootId) -> Option<(TaskId, TreeOutcome)> {
        let mut spout = None;
        // A reset changes nothing a decision depends on, so it never decides the tree.
        let _undecided = self.update(root, |entry| spout = entry.spout);
        spout.map(|s| (s, TreeOutcome::Reset))
    }

    /// Forgets entries untouched since the previous `SWEEPS_TO_LIVE` sweeps; call once per
    /// message timeout. Returns how many were dropped (their spouts have timed them out).
    pub fn sweep(&mut self) -> usize {
        self.generation += 1;
        let before = self.entries.len();
        let horizon = self.generation.saturating_sub(SWEEPS_TO_LIVE);
        self.entries.retain(|_, e| e.touched >= horizon);
        before - self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPOUT: TaskId = TaskId(7);

    #[test]
    fn a_chain_completes_on_its_last_ack() {
        let mut l = AckLedger::new();
        let r = RootId(1);
        let (e1, e2, e3) = (0x11, 0x2200, 0x330000);
        assert_eq!(l.init(r, e1, SPOUT), None);
        assert_eq!(l.ack(r, e1 ^ e2), None); // spout tuple acked, one child
        assert_eq!(l.ack(r, e2 ^ e3), None);
        assert_eq!(l.ack(r, e3), Some((SPOUT, TreeOutcome::Acked)));
        assert!(l.is_empty());
    }

    #[test]
    fn acks_may_overtake_the_init() {
        let mut l = AckLedger::new();
        let r = RootId(2);
        let (e1, e2) = (0x5, 0x600);
        // The bolts' acks arrive before the spout's init: undecided until the init comes.
        assert_eq!(l.ack(r, e1 ^ e2), None);
        assert_eq!(l.ack(r, e2), None);
        assert_eq!(l.init(r, e1, SPOUT), Some((SPOUT, TreeOutcome::Acked)));
    }

    #[test]
    fn a_fail_fails_the_tree_once_its_spout_is_known() {
        let mut l = AckLedger::new();
        let r = RootId(3);
        assert_eq!(l.fail(r), None);
        assert_eq!(l.init(r, 9, SPOUT), Some((SPOUT, TreeOutcome::Failed)));
        assert!(l.is_empty());
    }

    #[test]
    fn a_failure_wins_over_completion() {
        let mut l = AckLedger::new();
        let r = RootId(5);
        // The fail and every ack overtake the init: the value is back to zero, but it failed.
        assert_eq!(l.fail(r), None);
        assert_eq!(l.ack(r, 7), None);
        assert_eq!(l.init(r, 7, SPOUT), Some((SPOUT, TreeOutcome::Failed)));
    }

    #[test]
    fn reset_reaches_the_spout() {
        let mut l = AckLedger::new();
        let r = RootId(4);
        assert_eq!(l.reset(r), None);
        l.init(r, 1, SPOUT);
        assert_eq!(l.reset(r), Some((SPOUT, TreeOutcome::Reset)));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn a_park_reaches_the_spout_once_even_before_the_init() {
        let mut l = AckLedger::new();
        let r = RootId(6);
        assert_eq!(l.park(r), None, "the spout is not known yet");
        assert_eq!(l.init(r, 3, SPOUT), Some((SPOUT, TreeOutcome::Parked)));
        assert_eq!(l.park(r), None, "once");
        assert_eq!(l.ack(r, 3), Some((SPOUT, TreeOutcome::Acked)));
        let r = RootId(8);
        l.init(r, 5, SPOUT);
        assert_eq!(l.park(r), Some((SPOUT, TreeOutcome::Parked)));
    }

    #[test]
    fn sweeps_forget_untouched_entries_after_two_rounds() {
        let mut l = AckLedger::new();
        l.init(RootId(1), 1, SPOUT);
        assert_eq!(l.sweep(), 0);
        l.ack(RootId(2), 1); // touched in generation 1
        assert_eq!(l.sweep(), 0);
        assert_eq!(l.sweep(), 1, "root 1, untouched since generation 0");
        assert_eq!(l.sweep(), 1, "root 2");
        assert!(l.is_empty());
    }
}
