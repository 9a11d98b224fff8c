//! Stateful bolts: [`StatefulBolt`], whose state the runtime owns and (in a cluster) replicates
//! through Raft, with the helpers its determinism contract needs ([`KeyedState`],
//! [`HashedState`], [`StateEmitter::entry_time_ms`], [`StateEmitter::entry_seed`]).
//!
//! # The determinism contract
//!
//! In a cluster every task of a stateful bolt is a Raft group of `replicas` members on distinct
//! nodes. The group's leader proposes each input batch as one log entry; every replica executes
//! the same entries in the same order on its own copy of the state; only the leader emits and
//! acks. Replicas stay identical only if `execute` computes the same state and output from the
//! same state and input, on every machine. So `execute` must not:
//!
//! - read a clock: use [`StateEmitter::entry_time_ms`], the leader's time written into the entry;
//! - draw unseeded randomness: seed a generator with [`StateEmitter::entry_seed`];
//! - iterate a randomly seeded hash map (`std::collections::HashMap` with its default hasher)
//!   where the order reaches the state or the output: use [`KeyedState`] (ordered by key),
//!   [`HashedState`] (constant-time lookups, ordered by first insertion), a `BTreeMap`, or a
//!   hasher with a fixed seed;
//! - read files, the network, the environment or anything else outside its state and input;
//! - keep anything that matters in the bolt value itself: `execute` takes `&self`, and only the
//!   state is replicated, snapshotted and restored.
//!
//! A panic or an `Err` in `execute` fails that input's tree (it is replayed under
//! at-least-once); what `execute` changed in the state before it stays, the same on every
//! replica.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::component::TaskError;
use crate::record::Record;
use crate::tuple::Tuple;

/// A bolt whose state the runtime owns: in memory for an in-process run, replicated through
/// Raft on `replicas` nodes in a cluster. See the [module docs](self) for the determinism
/// contract `execute` must keep.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tempest_dsl::{KeyedState, Record, StateEmitter, StatefulBolt, TaskError, Tuple};
///
/// #[derive(Clone, Debug, Serialize, Deserialize, Record)]
/// struct Word { word: String }
/// #[derive(Clone, Debug, Serialize, Deserialize, Record)]
/// struct WordCount { word: String, count: u64 }
///
/// #[derive(Clone)]
/// struct Count;
///
/// impl StatefulBolt for Count {
///     type In = Word;
///     type Out = WordCount;
///     type State = KeyedState<String, u64>;
///     fn execute(
///         &self,
///         counts: &mut KeyedState<String, u64>,
///         word: Tuple<Word>,
///         out: &mut StateEmitter<WordCount>,
///     ) -> Result<(), TaskError> {
///         let word = word.into_value().word;
///         let count = counts.entry(word.clone()).or_default();
///         *count += 1;
///         out.emit(WordCount { word, count: *count });
///         Ok(())
///     }
/// }
/// ```
pub trait StatefulBolt: Clone + Send + Sync + 'static {
    /// The record type this bolt consumes.
    type In: Record;
    /// The record type of its output streams.
    type Out: Record;
    /// Its state: what is replicated, snapshotted and restored. Starts as `Default`.
    type State: Serialize + DeserializeOwned + Default + Send + 'static;

    /// Executes one input against the state. Deterministic: see the [module docs](self). Emits
    /// are anchored to the input; the input is acked once its entry is committed (`Ok`) or
    /// failed (`Err`, or a panic).
    fn execute(
        &self,
        state: &mut Self::State,
        input: Tuple<Self::In>,
        out: &mut StateEmitter<Self::Out>,
    ) -> Result<(), TaskError>;
}

/// Where a replicated stateful bolt keeps its Raft log and snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateStorage {
    /// In memory: a replica that restarts catches up from its peers (it survives as long as a
    /// majority of its group does). The fastest.
    #[default]
    Memory,
    /// On disk, in the node's data directory: the log, vote and snapshots are written and
    /// fsynced before an input is acked (one fsync covers every entry of an append), so a
    /// replica restarted with its disk resumes where it was.
    Disk,
}

impl std::fmt::Display for StateStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StateStorage::Memory => "memory",
            StateStorage::Disk => "disk",
        })
    }
}

impl std::str::FromStr for StateStorage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "memory" => Ok(StateStorage::Memory),
            "disk" => Ok(StateStorage::Disk),
            other => Err(format!("unknown state storage `{other}` (memory or disk)")),
        }
    }
}

/// A keyed map state with a fixed iteration order (by key), so iterating it is deterministic
/// on every replica. It is a `BTreeMap` (and dereferences to one), serialized as a map. For
/// a state looked up by key on every input, [`HashedState`] is faster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
#[serde(bound(
    serialize = "K: Ord + Serialize, V: Serialize",
    deserialize = "K: Ord + Deserialize<'de>, V: Deserialize<'de>"
))]
pub struct KeyedState<K, V>(BTreeMap<K, V>);

impl<K, V> Default for KeyedState<K, V> {
    fn default() -> Self {
        KeyedState(BTreeMap::new())
    }
}

impl<K, V> Deref for KeyedState<K, V> {
    type Target = BTreeMap<K, V>;
    fn deref(&self) -> &BTreeMap<K, V> {
        &self.0
    }
}

impl<K, V> DerefMut for KeyedState<K, V> {
    fn deref_mut(&mut self) -> &mut BTreeMap<K, V> {
        &mut self.0
    }
}

impl<K, V> KeyedState<K, V> {
    /// The map, by value.
    pub fn into_inner(self) -> BTreeMap<K, V> {
        self.0
    }
}

/// The map inside a [`HashedState`]: an [`IndexMap`] (indexmap 2) hashed with rustc-hash 2's
/// `FxBuildHasher`. Its own `==` ignores the order; [`HashedState`]'s does not.
pub type HashedMap<K, V> = IndexMap<K, V, rustc_hash::FxBuildHasher>;

/// A keyed map state with constant-time lookups, for a state read and written by key on every
/// input (a count per word): a hash map that iterates in the order its keys were first
/// inserted ([`IndexMap`]), whatever the hasher. That order depends only on the inputs
/// applied, so it is the same on every replica, and snapshots keep it (the map is serialized
/// in order). It dereferences to a [`HashedMap`]. Removing a key: `swap_remove` (constant
/// time, moves the last key into its place) or `shift_remove` (keeps the order, linear); both
/// are deterministic. The hasher (Fx, unseeded) is there for speed: keys chosen to collide
/// (by whoever feeds the source) make lookups slow, never wrong. [`KeyedState`] iterates by
/// key instead and hashes nothing, at the cost of a tree search per lookup.
///
/// ```
/// use tempest_dsl::HashedState;
///
/// let mut counts: HashedState<String, u64> = HashedState::default();
/// for word in ["b", "a", "b"] {
///     *counts.entry(word.to_owned()).or_default() += 1;
/// }
/// let order: Vec<(&str, u64)> = counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
/// assert_eq!(order, [("b", 2), ("a", 1)]);
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
#[serde(bound(
    serialize = "K: Hash + Eq + Serialize, V: Serialize",
    deserialize = "K: Hash + Eq + Deserialize<'de>, V: Deserialize<'de>"
))]
pub struct HashedState<K, V>(HashedMap<K, V>);

impl<K, V> Default for HashedState<K, V> {
    fn default() -> Self {
        HashedState(IndexMap::default())
    }
}

/// Equal when they hold the same entries in the same order (the order is part of the state:
/// it is what iterating it gives).
impl<K: Hash + Eq, V: PartialEq> PartialEq for HashedState<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().eq(other.0.iter())
    }
}

impl<K: Hash + Eq, V: Eq> Eq for HashedState<K, V> {}

impl<K, V> Deref for HashedState<K, V> {
    type Target = HashedMap<K, V>;
    fn deref(&self) -> &HashedMap<K, V> {
        &self.0
    }
}

impl<K, V> DerefMut for HashedState<K, V> {
    fn deref_mut(&mut self) -> &mut HashedMap<K, V> {
        &mut self.0
    }
}

impl<K, V> HashedState<K, V> {
    /// The map, by value.
    pub fn into_inner(self) -> HashedMap<K, V> {
        self.0
    }
}

/// What a [`StatefulBolt`] emits while it executes one input, and what it may know besides its
/// state: the time and a seed taken from the Raft entry, the same on every replica.
pub struct StateEmitter<T> {
    streams: Arc<[Arc<str>]>,
    outs: Vec<(u16, T)>,
    /// Outputs emitted, kept or not.
    count: usize,
    /// Whether outputs are kept: a replica whose answer nobody reads drops them.
    keep: bool,
    time_ms: i64,
    seed: u64,
}

impl<T> StateEmitter<T> {
    pub(crate) fn new(streams: Arc<[Arc<str>]>, time_ms: i64, keep: bool) -> Self {
        StateEmitter {
            streams,
            outs: Vec::new(),
            count: 0,
            keep,
            time_ms,
            seed: 0,
        }
    }

    fn push(&mut self, stream: u16, value: T) {
        self.count += 1;
        if self.keep {
            self.outs.push((stream, value));
        }
    }

    /// Emits on the default stream, anchored to the input.
    pub fn emit(&mut self, value: T) {
        self.push(0, value);
    }

    /// Emits on the named stream (declared with `.stream(name)`), anchored to the input.
    pub fn emit_to(&mut self, stream: &str, value: T) -> Result<(), TaskError> {
        let index = self
            .streams
            .iter()
            .position(|s| &**s == stream)
            .and_then(|i| u16::try_from(i).ok())
            .ok_or_else(|| TaskError::new(format!("no stream `{stream}` declared")))?;
        self.push(index, value);
        Ok(())
    }

    /// The processing time of the entry that carries this input, in milliseconds since the
    /// epoch: the leader's clock when it proposed the entry, the same on every replica.
    pub fn entry_time_ms(&self) -> i64 {
        self.time_ms
    }

    /// A seed for this input, the same on every replica (from the entry's position in the log
    /// and the input's position in the entry): seed a generator with it.
    pub fn entry_seed(&self) -> u64 {
        self.seed
    }

    /// Starts the next input of the batch: its seed.
    pub(crate) fn next_input(&mut self, seed: u64) {
        self.seed = seed;
    }

    /// Outputs emitted so far in the batch.
    pub(crate) fn emitted(&self) -> usize {
        self.count
    }

    pub(crate) fn into_outs(self) -> Vec<(u16, T)> {
        self.outs
    }

    /// The outputs kept since `before` outputs were emitted (all are kept, or none).
    pub(crate) fn kept_since(&self, before: usize) -> &[(u16, T)] {
        self.outs.get(before..).unwrap_or(&[])
    }

    /// Emits again the outputs stored for a replayed input.
    pub(crate) fn replay(&mut self, stored: &[(u16, T)])
    where
        T: Clone,
    {
        self.count += stored.len();
        if self.keep {
            self.outs.extend_from_slice(stored);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_state_keeps_its_insertion_order_through_a_snapshot() {
        let mut a: HashedState<String, u64> = HashedState::default();
        for (i, w) in ["kiwi", "apple", "fig", "banana", "apple"]
            .iter()
            .enumerate()
        {
            *a.entry((*w).to_owned()).or_default() += i as u64;
        }
        a.swap_remove("kiwi");
        let order = |s: &HashedState<String, u64>| -> Vec<String> { s.keys().cloned().collect() };
        assert_eq!(
            order(&a),
            ["banana", "apple", "fig"],
            "the last key took kiwi's place"
        );
        let bytes = rmp_serde::to_vec(&a).expect("encodes");
        let b: HashedState<String, u64> = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!(order(&b), order(&a));
        assert_eq!(a, b);
        assert_eq!(
            rmp_serde::to_vec(&b).expect("encodes"),
            bytes,
            "the same bytes again"
        );
        // The same entries in another order are another state: iterating them differs.
        let mut c: HashedState<String, u64> = HashedState::default();
        for (k, v) in a.iter().rev() {
            c.insert(k.clone(), *v);
        }
        assert_ne!(a, c);
        // A keyed state reads the same bytes back as a map (both serialize as maps).
        let keyed: KeyedState<String, u64> = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!(keyed.get("apple"), Some(&5));
    }
}
