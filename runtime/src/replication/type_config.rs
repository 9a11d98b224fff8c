//! The openraft type configuration shared by every Raft group: commands and responses are
//! opaque bytes, encoded by whoever owns the group's state ([`ReplicatedState`]).
//!
//! [`ReplicatedState`]: super::ReplicatedState

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// One command of a group's log, encoded by the group's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// What applying a command returned, encoded by the group's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "command of {} bytes", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// Tempest's Raft types: node ids are `u64`, a node is its address.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A Raft instance of Tempest's types.
pub(crate) type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub(crate) type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub(crate) type LogId = openraft::LogId<u64>;
/// A storage error.
pub(crate) type StorageError = openraft::StorageError<u64>;
