//! [`RunReport`]: what a finished run did, per component.

use std::fmt;
use std::time::Duration;

use tempest_dsl::{ComponentKind, Guarantee};

use crate::metrics::{LatencyHistogram, MetricsSnapshot};

/// One component's totals over a run.
#[derive(Clone, Debug)]
pub struct ComponentReport {
    /// The component's name.
    pub name: String,
    /// Spout or bolt.
    pub kind: ComponentKind,
    /// Its number of tasks.
    pub tasks: u32,
    /// Its counters, summed over its tasks.
    pub metrics: MetricsSnapshot,
    /// Execute latency per record (bolts), merged over its tasks. Each batch records the mean
    /// of its records, so a slow record inside a fast batch does not show in the tail.
    pub execute_latency: LatencyHistogram,
    /// Complete latency of spout trees (tracked guarantees), merged over its tasks.
    pub complete_latency: LatencyHistogram,
    /// Time skew (processing time minus event time, one sample per task flush that saw event
    /// time; samples from the future count as zero), merged over its tasks; empty where the
    /// component knows no event time.
    pub time_skew: LatencyHistogram,
}

/// What a run did: per-component counters and latencies, and how long it took.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The topology's name.
    pub topology: String,
    /// Its guarantee.
    pub guarantee: Guarantee,
    /// From the first spout call to the last task's end.
    pub elapsed: Duration,
    /// Whether the run was drained on request (Ctrl-C) rather than ending on its own.
    pub drained: bool,
    /// The run seed (set it in `LocalOptions::seed` to replay the run's ack-tree ids).
    pub seed: u64,
    /// One entry per component, in declaration order.
    pub components: Vec<ComponentReport>,
    /// What its checkpoints did, when it took some.
    pub checkpoints: Option<crate::checkpoint::CheckpointReport>,
}

impl RunReport {
    /// The component called `name`.
    pub fn component(&self, name: &str) -> Option<&ComponentReport> {
        self.components.iter().find(|c| c.name == name)
    }
}

fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else {
        format!("{us:.1}µs")
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "topology `{}` ({}) {} in {:.3}s, run seed {}",
            self.topology,
            self.guarantee,
            if self.drained { "drained" } else { "finished" },
            self.elapsed.as_secs_f64(),
            self.seed
        )?;
        writeln!(
            f,
            "  {:<16} {:>5} {:>12} {:>12} {:>8} {:>9} {:>10} {:>10}",
            "component",
            "tasks",
            "emitted",
            "executed",
            "failed",
            "queue max",
            "exec p50*",
            "exec p99*"
        )?;
        for c in &self.components {
            let (p50, p99) = match c.kind {
                ComponentKind::Spout => ("-".to_owned(), "-".to_owned()),
                ComponentKind::Bolt => (
                    micros(c.execute_latency.quantile(0.5)),
                    micros(c.execute_latency.quantile(0.99)),
                ),
            };
            writeln!(
                f,
                "  {:<16} {:>5} {:>12} {:>12} {:>8} {:>9} {:>10} {:>10}",
                c.name,
                c.tasks,
                c.metrics.emitted,
                c.metrics.executed,
                c.metrics.failed,
                c.metrics.queue_max,
                p50,
                p99
            )?;
        }
        writeln!(
            f,
            "  * per record, as the mean of its batch (a slow record in a fast batch is hidden)"
        )?;
        for c in self
            .components
            .iter()
            .filter(|c| c.metrics.window_fires > 0 || c.metrics.late > 0)
        {
            writeln!(
                f,
                "  windows `{}`: fired {} late {} open {}",
                c.name, c.metrics.window_fires, c.metrics.late, c.metrics.open_windows,
            )?;
        }
        for c in self
            .components
            .iter()
            .filter(|c| c.metrics.deduplicated > 0 || c.metrics.remembered > 0)
        {
            writeln!(
                f,
                "  exactly-once `{}`: {} replays skipped (applied before), {} ids remembered",
                c.name, c.metrics.deduplicated, c.metrics.remembered,
            )?;
        }
        for c in self.components.iter().filter(|c| c.time_skew.count() > 0) {
            writeln!(
                f,
                "  time skew `{}`: p50 {} ms max {} ms ({} from the future)",
                c.name,
                // The histogram's 1% buckets can overshoot the exact maximum.
                (c.time_skew.quantile(0.5).as_millis() as i64).min(c.metrics.time_skew_max_ms),
                c.metrics.time_skew_max_ms,
                c.metrics.time_skew_future,
            )?;
        }
        if self.guarantee.is_tracked() {
            for c in self
                .components
                .iter()
                .filter(|c| c.kind == ComponentKind::Spout)
            {
                writeln!(
                    f,
                    "  spout `{}`: acked {} failed {} timed out {}; complete latency p50 {} p99 {}",
                    c.name,
                    c.metrics.acked,
                    c.metrics.tree_failed,
                    c.metrics.timed_out,
                    micros(c.complete_latency.quantile(0.5)),
                    micros(c.complete_latency.quantile(0.99)),
                )?;
            }
        }
        if let Some(c) = &self.checkpoints {
            writeln!(
                f,
                "  checkpoints: completed {} failed {}; p50 {:.1} ms p99 {:.1} ms max {:.1} ms; last {} bytes{}",
                c.completed,
                c.failed,
                c.p50_ms,
                c.p99_ms,
                c.max_ms,
                c.last_bytes,
                c.restored_from
                    .map(|id| format!("; restored from checkpoint {id}"))
                    .unwrap_or_default(),
            )?;
        }
        Ok(())
    }
}
