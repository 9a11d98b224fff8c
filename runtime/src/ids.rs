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

/// One replica's identity in its Raft group (openraft's node id): its node and an
/// incarnation. A replica keeps its identity only together with its log and vote: one that
/// starts without them (its state was in memory, its disk was wiped, its log was damaged and
/// set aside) takes a new incarnation and joins its group as a new member, so a vote it may
/// have cast before is never forgotten under the same identity. The founding members of a
/// group are incarnation 0, whose id is the node's id.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct MemberId(pub u64);

impl MemberId {
    /// Incarnation `incarnation` of a replica on `node` (node ids fit in 32 bits: the
    /// configuration refuses larger ones).
    pub fn new(node: NodeId, incarnation: u32) -> Self {
        MemberId(u64::from(incarnation) << 32 | (node.0 & 0xffff_ffff))
    }

    /// The founding member on `node`: incarnation 0.
    pub fn founding(node: NodeId) -> Self {
        MemberId::new(node, 0)
    }

    /// The node the member runs on.
    pub fn node(self) -> NodeId {
        NodeId(self.0 & 0xffff_ffff)
    }

    /// The member's incarnation on its node.
    pub fn incarnation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.incarnation() {
            0 => write!(f, "{}", self.node()),
            i => write!(f, "{}.{i:08x}", self.node()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_id_holds_its_node_and_incarnation() {
        let m = MemberId::new(NodeId(7), 0xdead_beef);
        assert_eq!((m.node(), m.incarnation()), (NodeId(7), 0xdead_beef));
        assert_eq!(
            MemberId::founding(NodeId(7)).0,
            7,
            "a founder's id is its node's"
        );
        assert_eq!(m.to_string(), "n7.deadbeef");
        assert_eq!(MemberId::founding(NodeId(7)).to_string(), "n7");
    }
}
