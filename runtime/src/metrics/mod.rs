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

/// Logs one component's counters at `info` (the periodic metrics line, in one process or on a
/// node).
pub(crate) fn log_component(topology: &str, component: &str, m: &MetricsSnapshot) {
    tracing::info!(
        topology,
        component,
        emitted = m.emitted,
        executed = m.executed,
        failed = m.failed,
        queued = m.queued,
        acked = m.acked,
        pending = m.pending,
        window_fires = m.window_fires,
        late = m.late,
        open_windows = m.open_windows,
        deduplicated = m.deduplicated,
        remembered = m.remembered,
        time_skew_ms = m.time_skew_ms,
        "metrics"
    );
}

/// The `q` quantile of `values` (nearest rank; 0 for none).
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}
