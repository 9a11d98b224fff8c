//! Tempest's runtime: runs a topology built with `tempest-dsl`.
//!
//! Every task is an actix actor; tasks are spread over a pool of worker threads (actix
//! Arbiters), one per core. Tuples move between tasks in batches over links with credit-based
//! flow control, so a slow bolt slows its spout instead of growing memory. In one process a
//! link is an actor address and batches are never serialized.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tempest_dsl::*;
//! use tempest_runtime::{LocalCluster, LocalOptions};
//!
//! #[derive(Clone, Debug, Serialize, Deserialize, Record)]
//! struct N { n: u64 }
//!
//! #[derive(Clone)]
//! struct Count { next: u64, end: u64 }
//! impl Spout for Count {
//!     type Out = N;
//!     fn next(&mut self, out: &mut SpoutEmitter<N>) -> Result<SpoutStatus, TaskError> {
//!         if self.next == self.end { return Ok(SpoutStatus::Done) }
//!         out.emit(N { n: self.next });
//!         self.next += 1;
//!         Ok(SpoutStatus::Active)
//!     }
//! }
//!
//! #[derive(Clone)]
//! struct Double;
//! impl Bolt for Double {
//!     type In = N;
//!     type Out = N;
//!     fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<N>) -> Result<(), TaskError> {
//!         out.emit(N { n: t.n * 2 });
//!         Ok(())
//!     }
//! }
//!
//! let mut t = TopologyBuilder::new("doubles");
//! let numbers = t.add(spout("numbers", Count { next: 0, end: 1000 }));
//! t.add(bolt("double", Double).parallelism(2).shuffle(&numbers));
//! let topology = t.build()?;
//!
//! let options = LocalOptions { workers: 2, ..LocalOptions::default() };
//! let report = LocalCluster::new(options)?.run(topology)?;
//! assert_eq!(report.component("double").map(|c| c.metrics.executed), Some(1000));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod ack;
pub mod checkpoint;
pub mod cli;
pub mod cluster;
mod error;
pub mod executor;
mod ids;
mod local;
pub mod metrics;
pub mod plan;
pub mod replication;
pub mod transport;

pub use error::RuntimeError;
pub use ids::{GroupId, MemberId, NodeId};
pub use local::{LocalCluster, LocalOptions, MAX_LOCAL_LINKS, MAX_WORKERS, RunningTopology};
pub use metrics::{ComponentReport, MetricsSnapshot, RunReport};
