//! Metrics: per-task counters shared with the reporter, per-task latency histograms, and the
//! per-component summary of a run.
//!
//! Counters are relaxed atomics written by the task's own actor, once per batch, and read by
//! whoever reports (the progress bar, the periodic log line, the final report). Latency
//! histograms stay private to each actor and travel to the coordinator when the task ends.

mod latency;
mod report;
mod task_metrics;

pub use latency::LatencyHistogram;
pub(crate) use latency::TaskHistograms;
pub use report::{ComponentReport, RunReport};
pub use task_metrics::{MetricsSnapshot, TaskMetrics};
