//! The cluster: node processes, the manager (Storm's Nimbus) replicated through Raft, and the
//! scheduling of tasks on nodes.
//!
//! - [`config`]: a node's settings, from flags or TOML, validated;
//! - [`scheduler`]: pure placement (even spread, minimal moves, distinct replicas);
//! - [`manager`]: the manager's replicated state and its commands;
//! - [`admin`]: the protocol of clients and nodes, and [`AdminClient`];
//! - [`registry`]: the topologies a binary can run, by name;
//! - [`node`]: the node process itself.

pub mod admin;
pub mod config;
pub mod manager;
mod node;
mod registry;
pub mod scheduler;
pub mod worker;

pub use admin::AdminClient;
pub use config::{ConfigError, NodeConfig, NodeSettings};
pub use node::{Node, NodeError};
pub use registry::{Registry, RegistryError, TopologyArgs};
