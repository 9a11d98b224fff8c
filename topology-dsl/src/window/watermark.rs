//! [`Watermarks`]: a windowed bolt's event-time watermark, from the timestamps it receives.
//!
//! Each upstream task's watermark trails the largest timestamp it has sent by the lag
//! (`max_ts - lag - 1`, Flink's bounded out-of-orderness); the bolt's watermark is the minimum
//! over its upstream tasks, so a slow upstream holds it back. An upstream silent for the idle
//! timeout stops holding it back until it sends again; when every live upstream is idle, the
//! watermark moves to the largest of theirs (Flink's `StatusWatermarkValve` flushes the maximum
//! then, since no input will advance). An upstream that has ended no longer counts, and when
//! all have ended the watermark is `i64::MAX`. It never moves backwards.

use rustc_hash::FxHashMap;

use crate::ids::TaskId;

#[derive(Clone, Copy, Debug)]
struct Input {
    /// The largest timestamp received, or `i64::MIN`.
    max_ts: i64,
    /// When (processing time, ms) it last sent something, or when tracking began.
    last_seen_ms: i64,
    ended: bool,
}

/// Per-upstream event-time tracking. A pure core: the caller passes processing time in.
#[derive(Clone, Debug)]
pub struct Watermarks {
    lag: i64,
    idle_timeout_ms: Option<i64>,
    inputs: FxHashMap<TaskId, Input>,
    current: i64,
    /// When tracking began (processing time), for the alignment grace.
    started_ms: i64,
}

/// How long alignment waits for an upstream that has never sent anything, when no idle timeout
/// says otherwise: after that it no longer holds the others back (its windows could not fire
/// either way, but it must not throttle everything for ever).
const ALIGNMENT_GRACE_MS: i64 = 1000;

impl Watermarks {
    /// Tracking for the given upstream tasks, starting at processing time `now_ms`.
    pub fn new(
        lag_ms: i64,
        idle_timeout_ms: Option<i64>,
        upstream: &[TaskId],
        now_ms: i64,
    ) -> Self {
        Watermarks {
            lag: lag_ms.max(0),
            idle_timeout_ms,
            inputs: upstream
                .iter()
                .map(|&t| {
                    (
                        t,
                        Input {
                            max_ts: i64::MIN,
                            last_seen_ms: now_ms,
                            ended: false,
                        },
                    )
                })
                .collect(),
            current: i64::MIN,
            started_ms: now_ms,
        }
    }

    /// The current watermark.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// An element with timestamp `ts` arrived from `source` at processing time `now_ms`.
    #[inline]
    pub fn observe(&mut self, source: TaskId, ts: i64, now_ms: i64) {
        let input = self.inputs.entry(source).or_insert(Input {
            max_ts: i64::MIN,
            last_seen_ms: now_ms,
            ended: false,
        });
        input.max_ts = input.max_ts.max(ts);
        input.last_seen_ms = now_ms;
    }

    /// Something from `source` arrived at processing time `now_ms` (not executed yet): the
    /// source is not idle.
    pub fn touch(&mut self, source: TaskId, now_ms: i64) {
        if let Some(input) = self.inputs.get_mut(&source) {
            input.last_seen_ms = input.last_seen_ms.max(now_ms);
        }
    }

    /// `source` will send nothing more.
    pub fn end(&mut self, source: TaskId) {
        if let Some(input) = self.inputs.get_mut(&source) {
            input.ended = true;
        }
    }

    /// Whether `source` runs more than `max_drift_ms` ahead of the watermark (its own
    /// watermark beyond the bolt's), at processing time `now_ms`. Before every live upstream
    /// has been heard from, any upstream that has sent something is ahead (its windows could
    /// not fire anyway), but only for a grace period (the idle timeout, or a second).
    pub fn is_ahead(&self, source: TaskId, max_drift_ms: i64, now_ms: i64) -> bool {
        if self.current == i64::MIN {
            let grace = self.idle_timeout_ms.unwrap_or(ALIGNMENT_GRACE_MS);
            if now_ms.saturating_sub(self.started_ms) >= grace {
                return false;
            }
        }
        self.inputs.get(&source).is_some_and(|input| {
            !input.ended
                && input.max_ts != i64::MIN
                && input
                    .max_ts
                    .saturating_sub(self.lag)
                    .saturating_sub(1)
                    .saturating_sub(self.current)
                    > max_drift_ms
        })
    }

    /// Recomputes the watermark at processing time `now_ms` and returns it.
    pub fn update(&mut self, now_ms: i64) -> i64 {
        let mut active_min: Option<i64> = None;
        let mut idle_max: Option<i64> = None;
        let mut all_ended = true;
        for input in self.inputs.values() {
            if input.ended {
                continue;
            }
            all_ended = false;
            let wm = if input.max_ts == i64::MIN {
                i64::MIN
            } else {
                input.max_ts.saturating_sub(self.lag).saturating_sub(1)
            };
            let idle = self
                .idle_timeout_ms
                .is_some_and(|t| now_ms.saturating_sub(input.last_seen_ms) >= t);
            if idle {
                idle_max = Some(idle_max.map_or(wm, |m| m.max(wm)));
            } else {
                active_min = Some(active_min.map_or(wm, |m| m.min(wm)));
            }
        }
        let candidate = if all_ended {
            Some(i64::MAX)
        } else {
            active_min.or(idle_max)
        };
        if let Some(c) = candidate {
            self.current = self.current.max(c);
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: TaskId = TaskId(1);
    const B: TaskId = TaskId(2);

    #[test]
    fn the_slowest_input_holds_the_watermark() {
        let mut w = Watermarks::new(100, None, &[A, B], 0);
        w.observe(A, 5000, 0);
        assert_eq!(w.update(0), i64::MIN, "B has sent nothing yet");
        w.observe(B, 3000, 0);
        assert_eq!(w.update(0), 3000 - 100 - 1);
        w.observe(B, 9000, 0);
        assert_eq!(w.update(0), 5000 - 101);
    }

    #[test]
    fn it_never_moves_back() {
        let mut w = Watermarks::new(0, None, &[A], 0);
        w.observe(A, 100, 0);
        assert_eq!(w.update(0), 99);
        w.observe(A, 50, 0);
        assert_eq!(w.update(0), 99);
    }

    #[test]
    fn an_idle_input_stops_holding_it_back() {
        let mut w = Watermarks::new(0, Some(1000), &[A, B], 0);
        w.observe(A, 10_000, 500);
        assert_eq!(w.update(500), i64::MIN);
        assert_eq!(w.update(999), i64::MIN, "B is not idle yet");
        assert_eq!(w.update(1000), 9_999, "B idle since 0");
        w.observe(B, 2000, 1200);
        assert_eq!(
            w.update(1200),
            9_999,
            "B is back, but the watermark never goes back"
        );
        assert_eq!(w.update(2600), 9_999, "A idle, B's 1999 is behind");
        w.observe(B, 20_000, 2700);
        assert_eq!(w.update(2700), 19_999);
    }

    #[test]
    fn all_inputs_idle_flush_the_largest_watermark() {
        let mut w = Watermarks::new(0, Some(10), &[A, B], 0);
        w.observe(A, 100, 0);
        assert_eq!(w.update(5), i64::MIN, "B holds it back until it is idle");
        assert_eq!(w.update(1_000), 99, "both idle: the largest of theirs");
        w.observe(B, 50, 1_000);
        assert_eq!(w.update(1_000), 99, "never backwards");
    }

    #[test]
    fn an_input_far_ahead_is_flagged() {
        let mut w = Watermarks::new(0, None, &[A, B], 0);
        assert!(!w.is_ahead(A, 1000, 0), "nothing received, nothing ahead");
        w.observe(A, 10_000, 0);
        assert!(
            w.is_ahead(A, 1000, 10),
            "ahead of a watermark still at the beginning of time"
        );
        assert!(
            !w.is_ahead(A, 1000, 1000),
            "but not for longer than the grace: B may never send"
        );
        w.observe(B, 1_000, 0);
        w.update(0);
        assert!(w.is_ahead(A, 1000, 2000));
        assert!(!w.is_ahead(A, 9000, 2000));
        assert!(!w.is_ahead(B, 0, 2000), "the slowest input is never ahead");
        w.end(B);
        w.update(0);
        assert!(
            !w.is_ahead(A, 1000, 2000),
            "with B gone, A holds the watermark itself"
        );
    }

    #[test]
    fn ended_inputs_release_it() {
        let mut w = Watermarks::new(0, None, &[A, B], 0);
        w.observe(A, 100, 0);
        w.end(B);
        assert_eq!(w.update(0), 99);
        w.end(A);
        assert_eq!(w.update(0), i64::MAX);
    }
}
