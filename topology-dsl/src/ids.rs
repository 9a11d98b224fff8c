//! Identifier newtypes shared by the DSL and the runtime. No bare `u64` crosses a module boundary.

use serde::{Deserialize, Serialize};

/// A task of a running topology: one instance of a component. Task ids are dense, starting at 0,
/// in component order, so `TaskId` also orders tasks (Storm's global grouping picks the lowest).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct TaskId(pub u32);

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// A spout's own id for a message it emitted with tracking; handed back to `ack` and `fail`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct MsgId(pub u64);

/// The root of an ack tree: a random 64-bit id drawn for each tracked spout message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RootId(pub u64);

/// One edge of an ack tree: a random 64-bit id drawn for each delivered copy of an anchored tuple.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EdgeId(pub u64);

/// SplitMix64's finalizer: spreads every bit of `z` over the result. Stable across processes,
/// versions and machines (what replicas and replays derive from must be).
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A tuple's deterministic id under exactly-once: derived from its spout message (the spout
/// component, its task and the [`MsgId`]) and its path (each bolt that emitted it on the way,
/// and which of that bolt's emits for its input it was), so that a replay of a message gives
/// every tuple of its tree the id the first attempt gave it. Stateful bolts skip an input
/// whose id they applied already; an idempotent sink keys its writes by it
/// ([`Tuple::id`](crate::Tuple::id)). Never zero.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct TupleId(pub u64);

impl std::fmt::Display for TupleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Under exactly-once, the seekable spout message a tuple descends from: the spout task, the
/// message, and that task's committed position when it emitted the message (every message
/// below it had completed its tree then, and none is ever applied again).
///
/// A stateful task remembers the ids it applied until a later tuple of the same spout task
/// shows the committed position past their message (the source acked past them), and skips as
/// stale a tuple whose message is below a committed position it has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The spout task.
    pub task: TaskId,
    /// The message (a seekable spout's message ids grow in the order first emitted).
    pub msg: u64,
    /// The spout task's committed position when it emitted the message; at most `msg`.
    pub floor: u64,
}

impl Source {
    /// The source of a tuple anchored to tuples of these sources: their spout task's, with the
    /// largest message and floor, when all have one and it is the same task (the tuple is then
    /// complete once that message is); `None` otherwise.
    pub(crate) fn joined(mut sources: impl Iterator<Item = Option<Source>>) -> Option<Source> {
        let first = sources.next()??;
        sources.try_fold(first, |acc, s| {
            let s = s.filter(|s| s.task == acc.task)?;
            Some(Source {
                task: acc.task,
                msg: acc.msg.max(s.msg),
                floor: acc.floor.max(s.floor),
            })
        })
    }
}

/// A tuple's identity under exactly-once: its deterministic [`TupleId`] and, when it descends
/// from one message of one seekable spout task, that [`Source`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The deterministic id (0: none).
    pub id: TupleId,
    /// The spout message it descends from, when known.
    pub source: Option<Source>,
}

impl TupleId {
    /// The id of emit number `k` (from 0) derived from `parent` (a spout message's id, or the
    /// input a bolt executes) by the component whose salt is `salt`. SplitMix64's finalizer
    /// over the mixed inputs: stable across processes, versions and machines.
    pub(crate) fn derive(parent: u64, salt: u64, k: u64) -> TupleId {
        let z = mix64(
            parent
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(salt.rotate_left(29))
                .wrapping_add(k.wrapping_mul(0xbf58_476d_1ce4_e5b9)),
        );
        // Zero means "no id".
        TupleId(z.max(1))
    }

    /// The salt of a component's ids: a stable hash of the topology-unique component name,
    /// and of the task index for a spout (whose message ids are its task's own).
    pub(crate) fn salt(component: &str, spout_task: Option<u32>) -> u64 {
        let mut h = crate::key_hasher::KeyHasher::new();
        h.write_bytes(component.as_bytes());
        if let Some(task) = spout_task {
            h.write_bytes(&task.to_le_bytes());
        }
        h.finish() | 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(task: u32, msg: u64, floor: u64) -> Option<Source> {
        Some(Source {
            task: TaskId(task),
            msg,
            floor,
        })
    }

    #[test]
    fn a_tuple_anchored_to_one_spout_task_keeps_its_latest_message_and_position() {
        let joined = |s: &[Option<Source>]| Source::joined(s.iter().copied());
        assert_eq!(joined(&[src(1, 5, 2)]), src(1, 5, 2));
        assert_eq!(joined(&[src(1, 5, 4), src(1, 9, 3)]), src(1, 9, 4));
        assert_eq!(
            joined(&[src(1, 5, 2), src(2, 9, 3)]),
            None,
            "two spout tasks"
        );
        assert_eq!(joined(&[src(1, 5, 2), None]), None, "one without a source");
        assert_eq!(joined(&[None, src(1, 5, 2)]), None);
        assert_eq!(joined(&[]), None);
    }
}
