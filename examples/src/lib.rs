//! Runnable Tempest topologies and the helpers of the `tempest` command.
//!
//! - [`wordcount`]: Storm's classic word count, benchmark workload W1 (README, "Benchmarks").
//! - [`window_count`]: event-time tumbling window counts, benchmark workload W2 (README, "Benchmarks").
//! - [`windows`]: `tempest windows`, replaying JSON lines through a window specification.
//! - [`bench`]: peak memory, medians and `RESULT` lines for benchmark commands.

pub mod bench;
pub mod window_count;
pub mod windows;
pub mod wordcount;

/// The README's examples, compiled and run as doctests so that they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
