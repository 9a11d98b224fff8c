//! Runnable Tempest topologies and the helpers of the `tempest` command.
//!
//! - [`wordcount`]: Storm's classic word count, workload W1 of BENCHMARKS.md.
//! - [`window_count`]: event-time tumbling window counts, workload W2 of BENCHMARKS.md.
//! - [`windows`]: `tempest windows`, replaying JSON lines through a window specification.
//! - [`bench`]: peak memory, medians and `RESULT` lines for benchmark commands.

pub mod bench;
pub mod window_count;
pub mod windows;
pub mod wordcount;
