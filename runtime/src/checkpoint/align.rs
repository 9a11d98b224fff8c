//! [`Aligner`]: when a task has barrier `n` from all its inputs. A pure core.

use std::collections::{BTreeMap, BTreeSet};

use tempest_dsl::TaskId;

/// Counts barrier arrivals over a task's input links, per upstream task: barrier `n` is
/// complete once every upstream task delivered it on each of its links to this task, or ended
/// all of them. (An upstream task sends a barrier on all its links before it ends any, and each
/// link delivers in order: a link that ended after delivering `n` does not stand for one of its
/// siblings that has not delivered it yet.) Links deliver in order, so a later barrier never
/// completes before an earlier one, unless the earlier one was given up (some link went past
/// it without delivering it); a barrier at or below the last completed is stale.
#[derive(Debug)]
pub(crate) struct Aligner {
    /// Per upstream task: its links to this task and how many of them ended.
    sources: BTreeMap<TaskId, (u32, u32)>,
    /// Barriers seen on some links and not complete yet: per upstream task, the subscriptions
    /// (one link each) that delivered it.
    seen: BTreeMap<u64, BTreeMap<TaskId, BTreeSet<u16>>>,
    /// The last barrier completed.
    done: u64,
    /// The last barrier each link delivered, by (upstream task, subscription).
    last: BTreeMap<(TaskId, u16), u64>,
}

impl Aligner {
    /// An aligner over the links of the upstream tasks `sources` (task, links to this task).
    pub(crate) fn new(sources: impl IntoIterator<Item = (TaskId, u32)>) -> Self {
        Aligner {
            sources: sources.into_iter().map(|(t, l)| (t, (l, 0))).collect(),
            seen: BTreeMap::new(),
            done: 0,
            last: BTreeMap::new(),
        }
    }

    /// Barrier `id` arrived from `source` on its subscription `input`; returns the barrier this
    /// completes, if any.
    ///
    /// A link delivers barriers in order, so a barrier some link went past without delivering
    /// it will never come on that link (its sender could not save its part, or never got the
    /// trigger): it is given up (that checkpoint fails here), or the inputs that delivered it
    /// would be held for ever.
    pub(crate) fn barrier(&mut self, (source, input): (TaskId, u16), id: u64) -> Option<u64> {
        if id <= self.done {
            return None;
        }
        self.sources.entry(source).or_insert((1, 0));
        self.last.insert((source, input), id);
        // Older barriers in progress that this link skipped.
        self.seen.retain(|k, by| {
            *k >= id
                || by
                    .get(&source)
                    .is_some_and(|inputs| inputs.contains(&input))
        });
        // This one, if a link went past it without delivering it.
        let delivered = |by: Option<&BTreeMap<TaskId, BTreeSet<u16>>>, (t, i): (TaskId, u16)| {
            by.and_then(|by| by.get(&t))
                .is_some_and(|inputs| inputs.contains(&i))
        };
        let seen_id = self.seen.get(&id);
        let dead = self
            .last
            .iter()
            .any(|(ch, last)| *last > id && !delivered(seen_id, *ch));
        if dead {
            self.seen.remove(&id);
        } else {
            self.seen
                .entry(id)
                .or_default()
                .entry(source)
                .or_default()
                .insert(input);
        }
        self.complete()
    }

    /// Whether `source` delivered a barrier in progress on all its links: what it sends next
    /// is after the barrier, and waits until the barrier completes (aligned checkpoints: a
    /// task's snapshot holds exactly what came before the barrier on every input).
    pub(crate) fn holds(&self, source: TaskId) -> bool {
        if self.seen.is_empty() {
            return false;
        }
        let links = self.sources.get(&source).map_or(1, |(l, _)| *l);
        self.seen
            .values()
            .any(|by| by.get(&source).is_some_and(|s| s.len() as u32 >= links))
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
    use proptest::prelude::*;

    /// What one upstream task sends on its one link: data, barrier `n`, and at the end, the end.
    #[derive(Clone, Debug)]
    enum Item {
        Data,
        Barrier(u64),
    }

    /// A source's stream: barriers 1..=5 in order, some skipped (its sender could not save its
    /// part), with data between them.
    fn stream() -> impl Strategy<Value = Vec<Item>> {
        proptest::collection::vec((any::<bool>(), 0usize..3), 5).prop_map(|steps| {
            let mut items = Vec::new();
            for (n, (skip, data)) in steps.into_iter().enumerate() {
                items.extend(std::iter::repeat_n(Item::Data, data));
                if !skip {
                    items.push(Item::Barrier(n as u64 + 1));
                }
            }
            items.push(Item::Data);
            items
        })
    }

    proptest! {
        /// A task taking its inputs in any order, holding what the aligner holds, always gets
        /// through all of them (no input is held for ever), from upstream tasks on one link or
        /// two; barriers complete in order, and one every upstream task sent completes; and no
        /// input from an upstream task on one link is taken past a barrier while that barrier
        /// is in progress (the snapshot holds exactly what came before it).
        #[test]
        fn inputs_are_never_held_for_ever_and_never_taken_past_an_open_barrier(
            sources in proptest::collection::vec(
                (stream(), any::<bool>(), proptest::collection::vec(any::<bool>(), 24)),
                1..4,
            ),
            picks in proptest::collection::vec(any::<u32>(), 200),
        ) {
            // The newest barrier every source sent: it must complete.
            let whole = (1..=5u64)
                .filter(|n| {
                    sources
                        .iter()
                        .all(|(s, _, _)| s.iter().any(|i| matches!(i, Item::Barrier(b) if b == n)))
                })
                .max()
                .unwrap_or(0);
            // What reaches the task from each upstream task, in order: its stream on one link,
            // or on two links (subscriptions 0 and 1: the same barriers on both) interleaved,
            // each link ending with an end marker (`None`).
            let mut queues: Vec<std::collections::VecDeque<(u16, Option<Item>)>> = Vec::new();
            let mut links = Vec::new();
            for (stream, two, mix) in &sources {
                let n = if *two { 2 } else { 1 };
                links.push(n);
                let mut cursors = vec![0usize; n];
                let mut queue = std::collections::VecDeque::new();
                let mut mix = mix.iter().cycle();
                while cursors.iter().any(|c| *c <= stream.len()) {
                    let open: Vec<usize> = (0..n).filter(|l| cursors[*l] <= stream.len()).collect();
                    let l = if open.len() == 2 && *mix.next().unwrap_or(&false) { open[1] } else { open[0] };
                    queue.push_back((l as u16, stream.get(cursors[l]).cloned()));
                    cursors[l] += 1;
                }
                queues.push(queue);
            }
            let ids: Vec<TaskId> = (0..queues.len() as u32).map(TaskId).collect();
            let mut a = Aligner::new(ids.iter().zip(&links).map(|(t, n)| (*t, *n as u32)));
            // Per single-link source: the barrier it delivered last.
            let mut open: Vec<Option<u64>> = vec![None; queues.len()];
            let mut last_done = 0;
            let mut picks = picks.into_iter().cycle();
            loop {
                let ready: Vec<usize> = (0..queues.len())
                    .filter(|i| !queues[*i].is_empty() && !a.holds(ids[*i]))
                    .collect();
                if ready.is_empty() {
                    prop_assert!(
                        queues.iter().all(|q| q.is_empty()),
                        "held for ever: {a:?}"
                    );
                    prop_assert!(last_done >= whole, "barrier {whole} never completed: {a:?}");
                    break;
                }
                let i = ready[picks.next().unwrap_or(0) as usize % ready.len()];
                let Some((input, item)) = queues[i].pop_front() else {
                    continue;
                };
                let done = match item {
                    Some(Item::Data) => {
                        // Exact for a source on one link (one on several is held only once
                        // all delivered the barrier); a barrier given up holds nothing.
                        if let (1, Some(b)) = (links[i], open[i]) {
                            prop_assert!(
                                !a.seen.contains_key(&b),
                                "source {i} taken past barrier {b} while it is in progress"
                            );
                        }
                        None
                    }
                    Some(Item::Barrier(n)) => {
                        open[i] = Some(n);
                        a.barrier((ids[i], input), n)
                    }
                    None => {
                        a.link_ended(ids[i])
                    }
                };
                if let Some(d) = done {
                    prop_assert!(d > last_done, "completed {d} after {last_done}");
                    last_done = d;
                }
            }
        }
    }

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
