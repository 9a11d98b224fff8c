//! [`LatencyHistogram`]: a latency distribution in nanoseconds.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The histograms a task hands to the run report when it ends.
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskHistograms {
    /// Execute latency per record.
    pub(crate) execute: LatencyHistogram,
    /// Complete latency of spout trees.
    pub(crate) complete: LatencyHistogram,
    /// Time skew (processing time minus event time), one sample per flush that saw event
    /// time; a sample from the future counts as zero.
    pub(crate) skew: LatencyHistogram,
}

impl TaskHistograms {
    /// Adds another task's histograms.
    pub(crate) fn merge(&mut self, other: &TaskHistograms) {
        self.execute.merge(&other.execute);
        self.complete.merge(&other.complete);
        self.skew.merge(&other.skew);
    }
}

/// A latency distribution with 2 significant digits (1% precision), from 1 ns to about 146
/// years (time skews of replayed history fit too).
///
/// Its buckets (about 56 KB) are allocated on the first sample: every task has histograms, and
/// most of them never record (a spout executes nothing, a bolt completes no tree).
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram {
    inner: Option<Histogram<u64>>,
}

const MAX_NS: u64 = 1 << 62;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 2).expect("constant histogram bounds are valid")
}

impl LatencyHistogram {
    /// Records `count` samples of `latency`.
    pub fn record_n(&mut self, latency: Duration, count: u64) {
        let ns = (latency.as_nanos().min(u128::from(MAX_NS)) as u64).max(1);
        // Values are clamped to the bounds, so recording cannot fail.
        let _ = self.inner.get_or_insert_with(histogram).record_n(ns, count);
    }

    /// Records a batch of `count` records that took `elapsed` in all, as `count` samples of
    /// their mean.
    pub fn record_batch(&mut self, elapsed: Duration, count: u64) {
        if count > 0 {
            self.record_n(elapsed / count.min(u64::from(u32::MAX)) as u32, count);
        }
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if let Some(theirs) = &other.inner {
            // Same bounds on both sides, so adding cannot fail.
            let _ = self.inner.get_or_insert_with(histogram).add(theirs);
        }
    }

    /// The number of samples.
    pub fn count(&self) -> u64 {
        self.inner.as_ref().map_or(0, Histogram::len)
    }

    /// The latency at quantile `q` (0.0 to 1.0), or zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        match &self.inner {
            Some(h) if !h.is_empty() => Duration::from_nanos(h.value_at_quantile(q)),
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = LatencyHistogram::default();
        for ms in 1..=100u64 {
            h.record_n(Duration::from_millis(ms), 1);
        }
        let p50 = h.quantile(0.5).as_millis();
        let p99 = h.quantile(0.99).as_millis();
        assert!((49..=51).contains(&p50), "p50 {p50}");
        assert!((98..=101).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn batches_record_their_mean_per_record() {
        let mut h = LatencyHistogram::default();
        h.record_batch(Duration::from_micros(100), 100);
        assert_eq!(h.count(), 100);
        let p50 = h.quantile(0.5).as_nanos();
        assert!((990..=1010).contains(&p50), "p50 {p50}");
    }

    #[test]
    fn merge_and_empty() {
        let mut a = LatencyHistogram::default();
        assert_eq!(a.quantile(0.5), Duration::ZERO);
        let mut b = LatencyHistogram::default();
        b.record_n(Duration::from_nanos(10), 3);
        a.merge(&b);
        assert_eq!(a.count(), 3);
    }
}
