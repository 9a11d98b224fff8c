//! [`Aligner`]: when a task has barrier `n` from all its inputs. A pure core.

use std::collections::{BTreeMap, BTreeSet};

use tempest_dsl::TaskId;

/// One input channel: the upstream task and the subscription it sends on (one link each).
type Channel = (TaskId, u16);

/// Counts barrier arrivals over a task's input links: barrier `n` is complete once every link
/// whose data has not ended delivered it. Links deliver in order, so a later barrier never
/// completes before an earlier one; a barrier at or below the last completed is stale.
#[derive(Debug)]
pub(crate) struct Aligner {
    /// Links whose data has not ended.
    open: u32,
    /// Barriers seen on some links and not complete yet.
    seen: BTreeMap<u64, BTreeSet<Channel>>,
    /// The last barrier completed.
    done: u64,
}

impl Aligner {
    /// An aligner over `links` input links.
    pub(crate) fn new(links: u32) -> Self {
        Aligner {
            open: links,
            seen: BTreeMap::new(),
            done: 0,
        }
    }

    /// Barrier `id` arrived on `channel`; returns the barrier this completes, if any.
    pub(crate) fn barrier(&mut self, channel: Channel, id: u64) -> Option<u64> {
        if id <= self.done {
            return None;
        }
        self.seen.entry(id).or_default().insert(channel);
        self.complete()
    }

    /// The data of one input link ended: it delivers no more barriers. Returns the barrier
    /// this completes, if any.
    pub(crate) fn link_ended(&mut self) -> Option<u64> {
        self.open = self.open.saturating_sub(1);
        self.complete()
    }

    fn complete(&mut self) -> Option<u64> {
        let (&id, channels) = self.seen.first_key_value()?;
        if (channels.len() as u32) < self.open {
            return None;
        }
        self.done = id;
        self.seen.retain(|n, _| *n > id);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Channel = (TaskId(0), 0);
    const B: Channel = (TaskId(1), 0);

    #[test]
    fn a_barrier_completes_once_every_link_delivered_it() {
        let mut a = Aligner::new(2);
        assert_eq!(a.barrier(A, 1), None);
        assert_eq!(a.barrier(A, 2), None, "a fast link runs ahead");
        assert_eq!(a.barrier(B, 1), Some(1));
        assert_eq!(a.barrier(B, 2), Some(2));
        assert_eq!(a.barrier(A, 2), None, "stale");
    }

    #[test]
    fn an_ended_link_no_longer_holds_a_barrier_back() {
        let mut a = Aligner::new(2);
        assert_eq!(a.barrier(A, 1), None);
        assert_eq!(a.link_ended(), Some(1));
        assert_eq!(a.barrier(A, 2), Some(2), "one link left");
        let mut none = Aligner::new(1);
        assert_eq!(none.link_ended(), None, "nothing seen, nothing completes");
    }
}
