//! Identifiers of the distributed runtime: nodes and Raft groups.

use serde::{Deserialize, Serialize};

/// A node process of a cluster (`tempest node --id N`). Never reused for a node that lost its
/// data: a wiped node rejoins under a new id.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeId(pub u64);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A Raft group: the manager's, or (later) one replicated task's. Messages of many groups share
/// one transport, tagged with this id.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct GroupId(pub u64);

impl GroupId {
    /// The manager's group.
    pub const MANAGER: GroupId = GroupId(0);
}

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "g{}", self.0)
    }
}
