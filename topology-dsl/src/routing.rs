//! The router: which task of a subscribing bolt gets a tuple. A pure core with no I/O.
//!
//! One [`Router`] serves one subscription (one upstream stream to one bolt) inside one sending
//! task. The emitter hands it the tuple's key hash (for fields and key-by groupings) or the
//! requested task (for direct grouping) and gets back a [`Pick`]: an index into the bolt's tasks,
//! which are ordered by task id.

use crate::grouping::Grouping;

/// Where one tuple goes within the subscribing bolt's tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// To the task at this index.
    One(u32),
    /// To every task, `0..n`.
    All(u32),
    /// Nowhere: a direct subscription only receives direct emits, and a direct emit reaches only
    /// direct subscriptions.
    None,
}

/// A direct emit named a task the bolt does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("direct emit to task index {index}, but the bolt has {tasks} tasks")]
pub struct DirectOutOfRange {
    /// The index asked for.
    pub index: u32,
    /// The number of tasks.
    pub tasks: u32,
}

/// Picks target tasks for one subscription.
#[derive(Clone, Debug)]
pub struct Router {
    kind: RouterKind,
}

#[derive(Clone, Debug)]
enum RouterKind {
    RoundRobin { tasks: u32, next: u32 },
    Preferred { candidates: Box<[u32]>, next: usize },
    Hash { tasks: u32 },
    All { tasks: u32 },
    Global,
    Direct { tasks: u32 },
}

impl Router {
    /// A router for `grouping` over `tasks` target tasks (at least one).
    ///
    /// `preferred` lists the targets local to the sender, best first (used by local-or-shuffle;
    /// empty means none is local). `start` staggers round-robin senders so that they do not all
    /// begin with the same target; pass the sending task's index.
    pub fn new(grouping: &Grouping, tasks: u32, preferred: &[u32], start: u32) -> Router {
        assert!(tasks > 0, "a subscription has at least one target task");
        let kind = match grouping {
            Grouping::Shuffle => RouterKind::RoundRobin {
                tasks,
                next: start % tasks,
            },
            Grouping::LocalOrShuffle => {
                let candidates: Box<[u32]> = if preferred.is_empty() {
                    (0..tasks).collect()
                } else {
                    preferred.iter().copied().filter(|&t| t < tasks).collect()
                };
                if candidates.is_empty() {
                    RouterKind::RoundRobin {
                        tasks,
                        next: start % tasks,
                    }
                } else {
                    let next = start as usize % candidates.len();
                    RouterKind::Preferred { candidates, next }
                }
            }
            Grouping::Fields(_) | Grouping::KeyBy => RouterKind::Hash { tasks },
            Grouping::All => RouterKind::All { tasks },
            Grouping::Global => RouterKind::Global,
            Grouping::Direct => RouterKind::Direct { tasks },
        };
        Router { kind }
    }

    /// Whether `pick` needs the tuple's key hash.
    pub fn needs_key(&self) -> bool {
        matches!(self.kind, RouterKind::Hash { .. })
    }

    /// Whether this is a direct subscription.
    pub fn is_direct(&self) -> bool {
        matches!(self.kind, RouterKind::Direct { .. })
    }

    /// The target(s) of one tuple with key hash `key` (ignored unless `needs_key`).
    #[inline]
    pub fn pick(&mut self, key: u64) -> Pick {
        match &mut self.kind {
            RouterKind::RoundRobin { tasks, next } => {
                let t = *next;
                *next = if t + 1 == *tasks { 0 } else { t + 1 };
                Pick::One(t)
            }
            RouterKind::Preferred { candidates, next } => {
                let t = candidates[*next];
                *next = if *next + 1 == candidates.len() {
                    0
                } else {
                    *next + 1
                };
                Pick::One(t)
            }
            RouterKind::Hash { tasks } => Pick::One(reduce(key, *tasks)),
            RouterKind::All { tasks } => Pick::All(*tasks),
            RouterKind::Global => Pick::One(0),
            RouterKind::Direct { .. } => Pick::None,
        }
    }

    /// The target of a direct emit to task `index` of the bolt.
    pub fn pick_direct(&self, index: u32) -> Result<Pick, DirectOutOfRange> {
        match self.kind {
            RouterKind::Direct { tasks } if index < tasks => Ok(Pick::One(index)),
            RouterKind::Direct { tasks } => Err(DirectOutOfRange { index, tasks }),
            _ => Ok(Pick::None),
        }
    }
}

/// Maps a 64-bit hash onto `0..n` without division bias (Lemire's multiply-shift reduction).
/// Part of the fixed partitioning contract, like the hash itself.
#[inline]
pub fn reduce(hash: u64, n: u32) -> u32 {
    ((u128::from(hash) * u128::from(n)) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::stable_hash_of;

    fn picks(router: &mut Router, keys: &[u64]) -> Vec<Pick> {
        keys.iter().map(|&k| router.pick(k)).collect()
    }

    #[test]
    fn shuffle_round_robins_from_a_staggered_start() {
        let mut r = Router::new(&Grouping::Shuffle, 3, &[], 1);
        assert_eq!(
            picks(&mut r, &[0; 5]),
            [
                Pick::One(1),
                Pick::One(2),
                Pick::One(0),
                Pick::One(1),
                Pick::One(2)
            ]
        );
    }

    #[test]
    fn shuffle_is_even() {
        let mut r = Router::new(&Grouping::Shuffle, 4, &[], 0);
        let mut counts = [0; 4];
        for _ in 0..4000 {
            let Pick::One(t) = r.pick(0) else {
                panic!("shuffle picks one task")
            };
            counts[t as usize] += 1;
        }
        assert_eq!(counts, [1000; 4]);
    }

    #[test]
    fn fields_sends_equal_keys_to_the_same_task() {
        let mut a = Router::new(&Grouping::Fields(vec!["word".into()]), 7, &[], 0);
        let mut b = Router::new(&Grouping::Fields(vec!["word".into()]), 7, &[], 5);
        for word in ["the", "a", "tempest", "w17"] {
            let key = stable_hash_of(word);
            assert_eq!(a.pick(key), b.pick(key), "two senders disagree on {word}");
            assert_eq!(a.pick(key), a.pick(key));
        }
    }

    #[test]
    fn fields_routing_is_fixed_across_processes() {
        // Pinned: a change moves keys between tasks of a running cluster.
        let mut r = Router::new(&Grouping::Fields(vec!["word".into()]), 4, &[], 0);
        let got: Vec<_> = ["w0", "w1", "w2", "w3", "w4", "w5"]
            .iter()
            .map(|w| r.pick(stable_hash_of(*w)))
            .collect();
        assert_eq!(
            got,
            [
                Pick::One(2),
                Pick::One(1),
                Pick::One(3),
                Pick::One(3),
                Pick::One(0),
                Pick::One(0)
            ]
        );
    }

    #[test]
    fn key_by_uses_the_hash_like_fields() {
        let mut r = Router::new(&Grouping::KeyBy, 5, &[], 0);
        assert!(r.needs_key());
        assert_eq!(r.pick(u64::MAX), Pick::One(4));
        assert_eq!(r.pick(0), Pick::One(0));
    }

    #[test]
    fn all_goes_everywhere() {
        let mut r = Router::new(&Grouping::All, 3, &[], 2);
        assert_eq!(r.pick(0), Pick::All(3));
    }

    #[test]
    fn global_goes_to_the_lowest_task() {
        let mut r = Router::new(&Grouping::Global, 3, &[], 2);
        assert_eq!(picks(&mut r, &[1, 2, 3]), [Pick::One(0); 3]);
    }

    #[test]
    fn direct_checks_the_index() {
        let r = Router::new(&Grouping::Direct, 2, &[], 0);
        assert!(r.is_direct());
        let mut r2 = r.clone();
        assert_eq!(r2.pick(0), Pick::None);
        assert_eq!(r.pick_direct(1), Ok(Pick::One(1)));
        assert_eq!(
            r.pick_direct(2),
            Err(DirectOutOfRange { index: 2, tasks: 2 })
        );
    }

    #[test]
    fn local_or_shuffle_prefers_local_targets() {
        let mut r = Router::new(&Grouping::LocalOrShuffle, 4, &[1, 3], 0);
        assert_eq!(
            picks(&mut r, &[0; 4]),
            [Pick::One(1), Pick::One(3), Pick::One(1), Pick::One(3)]
        );
    }

    #[test]
    fn local_or_shuffle_without_local_targets_shuffles() {
        let mut r = Router::new(&Grouping::LocalOrShuffle, 3, &[], 0);
        assert_eq!(
            picks(&mut r, &[0; 3]),
            [Pick::One(0), Pick::One(1), Pick::One(2)]
        );
        // Preferred indices beyond the bolt's tasks are ignored.
        let mut r = Router::new(&Grouping::LocalOrShuffle, 2, &[7], 0);
        assert_eq!(picks(&mut r, &[0; 2]), [Pick::One(0), Pick::One(1)]);
    }

    #[test]
    fn reduce_stays_in_range() {
        for n in [1u32, 2, 3, 1000, u32::MAX] {
            for h in [0u64, 1, u64::MAX / 2, u64::MAX] {
                assert!(reduce(h, n) < n);
            }
        }
    }
}
