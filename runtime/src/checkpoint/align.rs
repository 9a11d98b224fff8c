//! [`Aligner`]: when a task has barrier `n` from all its inputs. A pure core.

use std::collections::{BTreeMap, BTreeSet};

use tempest_dsl::TaskId;

/// Counts barrier arrivals over a task's input links, per upstream task: barrier `n` is
/// complete once every upstream task delivered it on each of its links to this task, or ended
/// all of them. (An upstream task sends a barrier on all its links before it ends any, and each
/// link delivers in order: a link that ended after delivering `n` does not stand for one of its
/// siblings that has not delivered it yet.) Links deliver in order, so a later barrier never
/// completes before an earlier one; a barrier at or below the last completed is stale.
#[derive(Debug)]
pub(crate) struct Aligner {
    /// Per upstream task: its links to this task and how many of them ended.
    sources: BTreeMap<TaskId, (u32, u32)>,
    /// Barriers seen on some links and not complete yet: per upstream task, the subscriptions
    /// (one link each) that delivered it.
    seen: BTreeMap<u64, BTreeMap<TaskId, BTreeSet<u16>>>,
    /// The last barrier completed.
    done: u64,
}

impl Aligner {
    /// An aligner over the links of the upstream tasks `sources` (task, links to this task).
    pub(crate) fn new(sources: impl IntoIterator<Item = (TaskId, u32)>) -> Self {
        Aligner {
            sources: sources.into_iter().map(|(t, l)| (t, (l, 0))).collect(),
            seen: BTreeMap::new(),
            done: 0,
        }
    }

    /// Barrier `id` arrived from `source` on its subscription `input`; returns the barrier this
    /// completes, if any.
    ///
    /// A link delivers barriers in order, so one that delivers `id` without an older barrier
    /// still in progress here will never deliver that one (its sender could not save its part,
    /// or never got the trigger): the older barrier is given up (that checkpoint fails), or the
    /// inputs that delivered it would be held for ever.
    pub(crate) fn barrier(&mut self, (source, input): (TaskId, u16), id: u64) -> Option<u64> {
        if id <= self.done {
            return None;
        }
        let skipped = self
            .seen
            .range(..id)
            .rev()
            .find(|(_, by)| {
                by.get(&source)
                    .is_none_or(|inputs| !inputs.contains(&input))
            })
            .map(|(k, _)| *k);
        if let Some(k) = skipped {
            self.done = k;
            self.seen.retain(|n, _| *n > k);
        }
        self.sources.entry(source).or_insert((1, 0));
        self.seen
            .entry(id)
            .or_default()
            .entry(source)
            .or_default()
            .insert(input);
        self.complete()
    }

    /// Whether `source` delivered the oldest barrier in progress on all its links: what it
    /// sends next is after the barrier, and waits until the barrier completes (aligned
    /// checkpoints: a task's snapshot holds exactly what came before the barrier on every
    /// input).
    pub(crate) fn holds(&self, source: TaskId) -> bool {
        let Some((_, seen)) = self.seen.first_key_value() else {
            return false;
        };
        let links = self.sources.get(&source).map_or(1, |(l, _)| *l);
        seen.get(&source).is_some_and(|s| s.len() as u32 >= links)
    }

    /// Whether a barrier is in progress (some input delivered it, not all).
    pub(crate) fn aligning(&self) -> bool {
        !self.seen.is_empty()
    }

    /// One link from `source` ended: it delivers no more barriers. Returns the barrier this
    /// completes, if any.
    pub(crate) fn link_ended(&mut self, source: TaskId) -> Option<u64> {
        let (links, ended) = self.sources.entry(source).or_insert((1, 0));
        *ended = (*ended + 1).min(*links);
        self.complete()
    }

    /// Completes every barrier that is ready, oldest first (a link that ends may complete an
    /// older one and a newer one at once); returns the newest completed.
    fn complete(&mut self) -> Option<u64> {
        let mut completed = None;
        while let Some((&id, seen)) = self.seen.first_key_value() {
            let all = self.sources.iter().all(|(task, (links, ended))| {
                ended == links || seen.get(task).is_some_and(|s| s.len() as u32 >= *links)
            });
            if !all {
                break;
            }
            self.done = id;
            self.seen.retain(|n, _| *n > id);
            completed = Some(id);
        }
        completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_that_delivered_the_barrier_is_held_until_it_completes() {
        let mut a = Aligner::new([(TaskId(1), 1), (TaskId(2), 2)]);
        assert!(!a.holds(TaskId(1)) && !a.holds(TaskId(2)));
        assert_eq!(a.barrier((TaskId(1), 0), 1), None);
        assert!(
            a.holds(TaskId(1)),
            "task 1 delivered barrier 1 on its only link"
        );
        assert_eq!(a.barrier((TaskId(2), 0), 1), None);
        assert!(
            !a.holds(TaskId(2)),
            "task 2 has a link that has not delivered it: its input goes on"
        );
        assert_eq!(a.barrier((TaskId(2), 1), 1), Some(1));
        assert!(
            !a.holds(TaskId(1)) && !a.holds(TaskId(2)),
            "complete: all go on"
        );
    }

    #[test]
    fn a_barrier_an_input_skipped_is_given_up_and_holds_nothing() {
        let mut a = Aligner::new([(TaskId(1), 1), (TaskId(2), 1)]);
        // Task 2 could not save its part of 1 and sent no barrier 1 (or never got the
        // trigger); task 1 did.
        assert_eq!(a.barrier((TaskId(1), 0), 1), None);
        assert!(a.holds(TaskId(1)) && a.aligning());
        // Task 2's barrier 2 comes: 1 can never complete, and is given up.
        assert_eq!(a.barrier((TaskId(2), 0), 2), None);
        assert!(!a.holds(TaskId(1)), "task 1's input goes on");
        assert!(
            a.holds(TaskId(2)),
            "task 2 delivered 2, the oldest in progress now"
        );
        // A late 1 from anyone is stale.
        assert_eq!(a.barrier((TaskId(1), 0), 1), None);
        assert_eq!(a.barrier((TaskId(1), 0), 2), Some(2));
        assert!(!a.aligning());
    }

    const A: TaskId = TaskId(0);
    const B: TaskId = TaskId(1);

    #[test]
    fn a_barrier_completes_once_every_link_delivered_it() {
        let mut a = Aligner::new([(A, 1), (B, 1)]);
        assert_eq!(a.barrier((A, 0), 1), None);
        assert_eq!(a.barrier((A, 0), 2), None, "a fast link runs ahead");
        assert_eq!(a.barrier((B, 0), 1), Some(1));
        assert_eq!(a.barrier((B, 0), 2), Some(2));
        assert_eq!(a.barrier((A, 0), 2), None, "stale");
    }

    #[test]
    fn an_ended_link_no_longer_holds_a_barrier_back() {
        let mut a = Aligner::new([(A, 1), (B, 1)]);
        assert_eq!(a.barrier((A, 0), 1), None);
        assert_eq!(a.link_ended(B), Some(1));
        assert_eq!(a.barrier((A, 0), 2), Some(2), "one link left");
        let mut none = Aligner::new([(A, 1)]);
        assert_eq!(none.link_ended(A), None, "nothing seen, nothing completes");
    }

    #[test]
    fn a_link_that_ends_completes_every_barrier_it_held_back() {
        // B is behind with barrier 1 (its checkpoint timed out) while A delivered 1 and 2.
        let mut a = Aligner::new([(A, 1), (B, 1)]);
        assert_eq!(a.barrier((A, 0), 1), None);
        assert_eq!(a.barrier((A, 0), 2), None);
        assert_eq!(a.link_ended(B), Some(2), "the newest ready one");
        assert_eq!(a.barrier((A, 0), 3), Some(3), "not one behind");
    }

    #[test]
    fn a_link_that_delivered_the_barrier_and_ended_does_not_stand_for_another() {
        // A delivered barrier 1 and ended; B has not delivered it: not complete.
        let mut a = Aligner::new([(A, 1), (B, 1)]);
        assert_eq!(a.barrier((A, 0), 1), None);
        assert_eq!(a.link_ended(A), None);
        assert_eq!(a.barrier((B, 0), 1), Some(1));
        // A task with two links (two subscriptions): both must deliver it.
        let mut two = Aligner::new([(A, 2)]);
        assert_eq!(two.barrier((A, 0), 1), None);
        assert_eq!(
            two.link_ended(A),
            None,
            "its other link has not delivered it"
        );
        assert_eq!(two.barrier((A, 1), 1), Some(1));
    }
}
