//! Runnable Tempest topologies and the helpers of the `tempest` command.
//!
//! - [`wordcount`]: Storm's classic word count, workload W1 of BENCHMARKS.md.
//! - [`bench`]: peak memory, medians and `RESULT` lines for benchmark commands.

pub mod bench;
pub mod wordcount;
