//! [`ExactKeys`]: a window key of its own for every distinct grouping key, so that windows are
//! keyed by the key itself and not by its 64-bit hash.
//!
//! Windows are found by a 64-bit key. A key's hash is its window key unless a different key
//! (compared by its exact bytes, as [`KeyHasher`](crate::KeyHasher) records them) owns that
//! hash already; the later key then probes for a window key of its own. Two keys whose hashes
//! collide therefore never share a window. Owners whose windows are all gone are forgotten in
//! sweeps, so the table grows with the keys that have windows, not with every key ever seen.
//!
//! Pure: the caller gives the hash, the exact bytes and, when sweeping, which window keys are
//! still in use.

use rustc_hash::{FxHashMap, FxHashSet};

/// The owner of a window key: the exact bytes of its grouping key, and that key's hash (where
/// its probe sequence starts).
#[derive(Debug)]
struct Owner {
    hash: u64,
    exact: Box<[u8]>,
}

/// The fewest owners at which a sweep runs.
const MIN_SWEEP: usize = 1024;

/// The window key of every distinct grouping key. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct ExactKeys {
    owners: FxHashMap<u64, Owner>,
    /// Owners beyond which the next [`ExactKeys::sweep`] is due.
    sweep_at: usize,
}

/// Probe number `i` (from 1) of a probe sequence that starts at `hash`.
fn probe(hash: u64, i: u64) -> u64 {
    crate::ids::mix64(hash ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

impl Default for ExactKeys {
    fn default() -> Self {
        ExactKeys {
            owners: FxHashMap::default(),
            sweep_at: MIN_SWEEP,
        }
    }
}

impl ExactKeys {
    /// The window key of the grouping key whose hash is `hash` and whose exact bytes are
    /// `exact`: the hash itself unless another key owns it.
    pub(crate) fn key(&mut self, hash: u64, exact: &[u8]) -> u64 {
        let mut key = hash;
        let mut i = 0;
        loop {
            match self.owners.get(&key) {
                Some(owner) if *owner.exact == *exact => return key,
                Some(_) => {
                    i += 1;
                    key = probe(hash, i);
                }
                None => {
                    self.owners.insert(
                        key,
                        Owner {
                            hash,
                            exact: exact.into(),
                        },
                    );
                    return key;
                }
            }
        }
    }

    /// Whether enough owners were added since the last sweep for another one.
    pub(crate) fn sweep_due(&self) -> bool {
        self.owners.len() >= self.sweep_at
    }

    /// Forgets the owners of window keys not in `live`, except those a live key's probe
    /// sequence passes (a key that probed past an owner must find that slot taken again).
    pub(crate) fn sweep(&mut self, live: &FxHashSet<u64>) {
        let mut keep: FxHashSet<u64> = FxHashSet::default();
        for (&key, owner) in &self.owners {
            if !live.contains(&key) {
                continue;
            }
            keep.insert(key);
            let (mut at, mut i) = (owner.hash, 0);
            while at != key && i < 64 {
                keep.insert(at);
                i += 1;
                at = probe(owner.hash, i);
            }
        }
        self.owners.retain(|key, _| keep.contains(key));
        self.sweep_at = (self.owners.len() * 2).max(MIN_SWEEP);
    }

    /// How many window keys have an owner.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.owners.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colliding_keys_get_window_keys_of_their_own() {
        let mut keys = ExactKeys::default();
        let a = keys.key(7, b"a");
        let b = keys.key(7, b"b");
        let c = keys.key(7, b"c");
        assert_eq!(a, 7, "the first owner keeps its hash");
        assert!(a != b && b != c && a != c);
        assert_eq!(
            keys.key(7, b"b"),
            b,
            "the same key finds its window key again"
        );
        assert_eq!(keys.key(7, b"a"), a);
        assert_eq!(keys.key(9, b"d"), 9);
    }

    #[test]
    fn a_sweep_forgets_dead_owners_but_keeps_the_probe_sequences_of_live_ones() {
        let mut keys = ExactKeys::default();
        let a = keys.key(7, b"a");
        let b = keys.key(7, b"b");
        let d = keys.key(9, b"d");
        // Only b is live: a's slot stays taken (b probed past it), d's goes.
        keys.sweep(&[b].into_iter().collect());
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.key(7, b"b"), b, "b still finds its window key");
        assert_eq!(
            keys.key(9, b"e"),
            d,
            "d's window key is free for another key"
        );
        // Once b is gone too, both go.
        keys.sweep(&FxHashSet::default());
        assert_eq!(keys.len(), 0);
        assert_eq!(keys.key(7, b"b"), a, "b now owns its hash");
    }

    #[test]
    fn sweeps_come_due_as_owners_double() {
        let mut keys = ExactKeys::default();
        for k in 0..MIN_SWEEP as u64 - 1 {
            keys.key(k, &k.to_le_bytes());
        }
        assert!(!keys.sweep_due());
        keys.key(u64::MAX, b"x");
        assert!(keys.sweep_due());
        let live: FxHashSet<u64> = (0..600).collect();
        keys.sweep(&live);
        assert_eq!(keys.len(), 600);
        assert!(!keys.sweep_due(), "next at {}", MIN_SWEEP);
    }
}
