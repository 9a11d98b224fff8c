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
