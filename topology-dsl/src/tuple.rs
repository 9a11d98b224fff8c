//! [`Tuple`]: one record delivered to a bolt, with where it came from and the ack trees it
//! belongs to.

use std::cell::Cell;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

use crate::ids::{EdgeId, Origin, RootId, TaskId, TupleId};

/// One input of a bolt: a record plus its envelope. It dereferences to the record.
///
/// A tuple is not `Clone`: its place in an ack tree (the edges emitted anchored to it, which
/// its ack reports) must live in one value, or anchoring to a copy and acking the original
/// would complete the tree while the copy's children are in flight. Clone the record
/// (`t.value().clone()`) to keep it. A manual-ack bolt that holds tuples implements `Clone` by
/// hand: the runtime clones the bolt only as a prototype, before it holds any.
///
/// ```
/// use tempest_dsl::{TaskId, Tuple};
///
/// let t = Tuple::new_untracked("hello".to_string(), TaskId(3), 0);
/// assert_eq!(t.len(), 5);          // Deref to the record
/// assert_eq!(t.source_task(), TaskId(3));
/// assert_eq!(t.into_value(), "hello");
/// ```
#[derive(Debug)]
pub struct Tuple<T> {
    value: T,
    source_task: TaskId,
    input: u16,
    ids: TupleIds,
    /// XOR of the edge ids of every tuple emitted anchored to this one since it arrived; folded
    /// into its ack (Storm's `ackVal`). Only manual-ack bolts use it.
    ack_val: Cell<u64>,
    /// Its deterministic id under exactly-once (0: none), and the spout message it descends
    /// from.
    origin: Origin,
    /// Tuples emitted anchored to it so far (manual-ack bolts under exactly-once: the ids of
    /// what it begets are numbered by it).
    begot: Cell<u64>,
}

impl<T> Tuple<T> {
    /// A tuple that belongs to no ack tree (at-most-once, or built in a test).
    pub fn new_untracked(value: T, source_task: TaskId, input: u16) -> Self {
        Tuple::with_ids(value, source_task, input, TupleIds::Untracked)
    }

    /// A tuple with explicit ack-tree ids, as the runtime delivers it.
    pub fn with_ids(value: T, source_task: TaskId, input: u16, ids: TupleIds) -> Self {
        Tuple {
            value,
            source_task,
            input,
            ids,
            ack_val: Cell::new(0),
            origin: Origin {
                id: TupleId(0),
                source: None,
            },
            begot: Cell::new(0),
        }
    }

    /// The same tuple with deterministic id `id` (as the runtime delivers it under
    /// exactly-once; for tests of a sink that keys its writes by [`Tuple::id`]).
    pub fn with_id(mut self, id: TupleId) -> Self {
        self.origin.id = id;
        self
    }

    /// The same tuple with this identity (its id and the spout message it descends from).
    pub(crate) fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    /// Its deterministic id under exactly-once: the same for every replay of the spout message
    /// it descends from, so an idempotent sink can key its writes by it (a replayed write then
    /// changes nothing). `None` under the other guarantees and for an unanchored tuple.
    ///
    /// ```
    /// use tempest_dsl::{TaskId, Tuple, TupleId};
    ///
    /// let t = Tuple::new_untracked(1u32, TaskId(0), 0);
    /// assert_eq!(t.id(), None);
    /// assert_eq!(t.with_id(TupleId(42)).id(), Some(TupleId(42)));
    /// ```
    pub fn id(&self) -> Option<TupleId> {
        (self.origin.id.0 != 0).then_some(self.origin.id)
    }

    /// The number of the next tuple emitted anchored to this one (manual-ack bolts).
    pub(crate) fn next_begot(&self) -> u64 {
        let k = self.begot.get();
        self.begot.set(k + 1);
        k
    }

    /// Its identity under exactly-once (id 0 for none).
    pub(crate) fn origin(&self) -> Origin {
        self.origin
    }

    /// The record.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The record, consuming the tuple (its ack-tree membership is dropped: under a manual-ack
    /// bolt, keep the tuple itself if it still has to be acked).
    pub fn into_value(self) -> T {
        self.value
    }

    /// The task that emitted this tuple.
    pub fn source_task(&self) -> TaskId {
        self.source_task
    }

    /// Which of the bolt's subscriptions delivered it: the position of the grouping call
    /// (`shuffle`, `fields`, ...) in the bolt's declaration, from 0.
    pub fn input(&self) -> u16 {
        self.input
    }

    /// The ack trees this tuple belongs to, with its edge in each (`Untracked` under
    /// at-most-once or for an unanchored tuple).
    pub fn ids(&self) -> &TupleIds {
        &self.ids
    }

    pub(crate) fn xor_ack_val(&self, edge: u64) {
        self.ack_val.set(self.ack_val.get() ^ edge);
    }

    pub(crate) fn into_parts(self) -> (T, TupleIds, u64) {
        let ack_val = self.ack_val.get();
        (self.value, self.ids, ack_val)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contributions_of_one_root_merge_by_xor() {
        let r = |n| RootId(n);
        let e = |n| EdgeId(n);
        assert_eq!(TupleIds::from_contributions(&[]), TupleIds::Untracked);
        assert_eq!(
            TupleIds::from_contributions(&[(r(1), e(0b01)), (r(1), e(0b10))]),
            TupleIds::One((r(1), e(0b11)))
        );
        assert_eq!(
            TupleIds::from_contributions(&[(r(2), e(4)), (r(1), e(1)), (r(2), e(1))]),
            TupleIds::Many(vec![(r(1), e(1)), (r(2), e(5))].into_boxed_slice())
        );
    }
}

impl<T> Deref for Tuple<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// The ack trees a tuple belongs to: for each root, the edge id of this copy of the tuple.
///
/// Most tracked tuples belong to one tree; a tuple anchored to inputs of several trees (a join)
/// belongs to each of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TupleIds {
    /// Not tracked.
    #[default]
    Untracked,
    /// In one tree: `(root, edge)`.
    One((RootId, EdgeId)),
    /// In several trees (each root at most once).
    Many(Box<[(RootId, EdgeId)]>),
}

impl TupleIds {
    /// Whether the tuple belongs to any tree.
    pub fn is_tracked(&self) -> bool {
        !matches!(self, TupleIds::Untracked)
    }

    /// The (root, edge) pairs.
    pub fn pairs(&self) -> &[(RootId, EdgeId)] {
        match self {
            TupleIds::Untracked => &[],
            TupleIds::One(pair) => std::slice::from_ref(pair),
            TupleIds::Many(pairs) => pairs,
        }
    }

    /// Builds the ids of a new tuple from (root, edge) contributions, XOR-ing the edges of a root
    /// that appears more than once (Storm's `newTuple.ids[r] ^= e`).
    pub fn from_contributions(contributions: &[(RootId, EdgeId)]) -> TupleIds {
        match contributions {
            [] => TupleIds::Untracked,
            [pair] => TupleIds::One(*pair),
            _ => {
                // Sort by root, then XOR the edges of equal roots: O(n log n) for the thousands
                // of anchors of a window's output.
                let mut merged = contributions.to_vec();
                merged.sort_unstable_by_key(|(r, _)| r.0);
                merged.dedup_by(|later, kept| {
                    let same_root = later.0 == kept.0;
                    if same_root {
                        kept.1.0 ^= later.1.0;
                    }
                    same_root
                });
                if merged.len() == 1 {
                    TupleIds::One(merged[0])
                } else {
                    TupleIds::Many(merged.into_boxed_slice())
                }
            }
        }
    }
}
