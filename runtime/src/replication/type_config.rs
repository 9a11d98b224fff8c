//! The openraft type configuration shared by every Raft group: commands are opaque bytes,
//! encoded by whoever owns the group's state ([`ReplicatedState`]); answers are its values.
//!
//! [`ReplicatedState`]: super::ReplicatedState

use std::any::Any;
use std::io::Cursor;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One command of a group's log, encoded by the group's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// What applying a command answered ([`ReplicatedState::Answer`]), for the replica that
/// proposed it. openraft hands it back from `client_write` in the proposer's own process: it
/// never crosses the network, so it stays a value (never encoded, and skipped by serde).
#[derive(Default)]
pub struct Applied(Mutex<Option<Box<dyn Any + Send>>>);

/// openraft asks for serde on answers; they never travel, so this writes nothing.
impl Serialize for Applied {
    fn serialize<Se: serde::Serializer>(&self, s: Se) -> Result<Se::Ok, Se::Error> {
        s.serialize_unit()
    }
}

/// Reads back as an empty answer.
impl<'de> Deserialize<'de> for Applied {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Applied::default())
    }
}

impl Applied {
    /// An answer holding `value`.
    pub fn new<T: Send + 'static>(value: T) -> Self {
        Applied(Mutex::new(Some(Box::new(value))))
    }

    /// The value, if it is a `T` (an entry without a command answers nothing).
    pub fn take<T: 'static>(self) -> Option<T> {
        let value = self.0.into_inner().ok().flatten()?;
        value.downcast::<T>().ok().map(|v| *v)
    }
}

impl std::fmt::Debug for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Applied(..)")
    }
}

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
