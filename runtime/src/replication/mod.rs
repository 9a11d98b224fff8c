//! Raft replication, written once for every group a process hosts: the manager's now, and one
//! per replicated task later. The only home of openraft types: the rest of the runtime sees
//! [`Replica`], [`ReplicatedState`] and [`RaftGroups`].
//!
//! - [`type_config`]: commands are opaque bytes; answers stay values in the proposer's process;
//! - [`LogStore`]: the log and vote, in memory or in a checksummed file;
//! - [`StateMachineStore`]: applies entries to a [`ReplicatedState`], keeps snapshots;
//! - [`RaftGroups`] and the network: Raft RPCs over the transport, tagged with the group;
//! - [`membership`]: how a replica without a vote (a new identity, a replacement) becomes a
//!   voter;
//! - [`Replica`]: start, initialize, write, read, status.

mod log_store;
pub mod membership;
mod network;
mod replica;
pub(crate) mod state_machine;
mod type_config;

#[cfg(test)]
mod suite_test;

pub use log_store::{LogError, LogStore};
pub use network::RaftGroups;
pub use network::request_join;
pub use replica::{RaftTimings, Replica, ReplicaStatus, ReplicationError, Role, StatusWatch};
pub use state_machine::{EntryContext, ReplicatedState, SnapshotError, StateMachineStore};
pub use type_config::{Applied, Command, TypeConfig};
