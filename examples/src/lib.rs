//! Runnable Tempest topologies and the helpers of the `tempest` command.
//!
//! - [`wordcount`]: Storm's classic word count, benchmark workload W1 (README, "Benchmarks").
//! - [`window_count`]: event-time tumbling window counts, benchmark workload W2 (README, "Benchmarks").
//! - [`windows`]: `tempest windows`, replaying JSON lines through a window specification.
//! - [`counter`]: the exactly-once counter (`tempest submit counter`).
//! - [`bench`]: peak memory, medians and `RESULT` lines for benchmark commands.

pub mod bench;
pub mod checkpoint_bench;
pub mod cluster_bench;
pub mod cluster_wordcount;
pub mod counter;
pub mod failover_bench;
pub mod node_procs;
pub mod window_count;
pub mod windows;
pub mod wordcount;

/// The README's examples, compiled and run as doctests so that they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The topologies the `tempest` binary can submit to a cluster, by name. Every node runs this
/// same binary, so each can build a submitted topology from its name and arguments.
///
/// - `wordcount`: word count with a file sink ([`cluster_wordcount`]); arguments `output`
///   (required: the sink's directory), `sentences` (default 100000), `parallelism` (2),
///   `guarantee` (`at-least-once`), `message_timeout_ms` (30000).
/// - `counter`: the exactly-once counter ([`counter`]); arguments `input` and `output`
///   (required), `replicas` (3), `state` (disk), `parallelism` (2).
pub fn registry() -> tempest_runtime::cluster::Registry {
    tempest_runtime::cluster::Registry::new()
        .register(
            "wordcount",
            "count the words of generated sentences into JSON-lines files (W1)",
            |args| {
                cluster_wordcount::ClusterWordCount::from_args(args)?
                    .topology()
                    .map_err(|e| e.to_string())
            },
        )
        .register(
            "counter",
            "count JSON-lines records per key, exactly once, into one file per record",
            |args| {
                counter::Counter::from_args(args)?
                    .topology()
                    .map_err(|e| e.to_string())
            },
        )
}
