//! [`Window`]: what a windowed bolt declares: the window's shape, its time domain, lag,
//! allowed lateness, offset, late-tuple stream and idle timeout.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A window length or slide: a number of tuples, or a span of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Size {
    /// This many tuples (per key).
    Count(u64),
    /// This many milliseconds.
    TimeMs(i64),
}

impl Size {
    /// `n` tuples.
    pub const fn count(n: u64) -> Size {
        Size::Count(n)
    }

    /// A span of time.
    pub fn time(d: Duration) -> Size {
        Size::TimeMs(duration_ms(d))
    }
}

impl From<Duration> for Size {
    fn from(d: Duration) -> Size {
        Size::time(d)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Count(n) => write!(f, "{n} tuples"),
            Size::TimeMs(ms) => write!(f, "{ms} ms"),
        }
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The most sliding windows one element may belong to (size / slide).
pub const MAX_WINDOWS_PER_ELEMENT: u64 = 10_000;

/// The shape of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of `size`.
    Tumbling {
        /// The window length.
        size: Size,
    },
    /// Windows of `size` starting every `slide`; an element belongs to every window that
    /// covers it.
    Sliding {
        /// The window length.
        size: Size,
        /// The distance between window starts.
        slide: Size,
    },
    /// Per key, a window `[ts, ts + gap)` per element; windows that overlap or touch merge.
    Session {
        /// The inactivity gap in milliseconds.
        gap_ms: i64,
    },
}

/// Which clock windows run on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeDomain {
    /// The time the bolt processes a tuple (Storm's "stream time"), in milliseconds.
    Processing,
    /// The time carried in a field of the tuple, in milliseconds, with watermarks.
    Event {
        /// The timestamp field.
        field: String,
    },
}

/// A window specification for a windowed bolt, following Flink's semantics: time windows are
/// `[start, end)` aligned to the epoch plus an offset, a result's time is `end - 1`, the
/// watermark trails the largest event time by the lag, and a window fires when the watermark
/// reaches `end - 1` (or the processing time has passed it).
///
/// ```
/// use std::time::Duration;
/// use tempest_dsl::Window;
///
/// let w = Window::sliding(Duration::from_secs(60), Duration::from_secs(10))
///     .event_time("ts")
///     .lag(Duration::from_secs(5))
///     .allowed_lateness(Duration::from_secs(30))
///     .late_to_side_stream();
/// assert!(w.check().is_empty());
/// assert_eq!(
///     Window::tumbling(tempest_dsl::Size::count(0)).check(),
///     ["the window size must be above zero"]
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    /// The window's shape.
    pub kind: WindowKind,
    /// Its clock.
    pub time: TimeDomain,
    /// How far the watermark trails the largest event time (event time only).
    pub lag_ms: Option<i64>,
    /// How long after its end a window still takes late elements (event time only); each
    /// such element fires the window again with its whole contents.
    pub allowed_lateness_ms: i64,
    /// Shifts time windows off the epoch (`|offset| < slide`).
    pub offset_ms: i64,
    /// Whether late tuples go to the bolt's `late` stream (otherwise they are counted and acked).
    pub late_stream: bool,
    /// An upstream task silent for this long stops holding the watermark back (event time).
    pub idle_timeout_ms: Option<i64>,
}

impl Window {
    fn new(kind: WindowKind) -> Window {
        Window {
            kind,
            time: TimeDomain::Processing,
            lag_ms: None,
            allowed_lateness_ms: 0,
            offset_ms: 0,
            late_stream: false,
            idle_timeout_ms: None,
        }
    }

    /// Tumbling windows of `size` (a count or a `Duration`).
    pub fn tumbling(size: impl Into<Size>) -> Window {
        Window::new(WindowKind::Tumbling { size: size.into() })
    }

    /// Sliding windows of `size`, one starting every `slide`.
    pub fn sliding(size: impl Into<Size>, slide: impl Into<Size>) -> Window {
        Window::new(WindowKind::Sliding {
            size: size.into(),
            slide: slide.into(),
        })
    }

    /// Session windows closing after `gap` without an element of their key.
    pub fn session(gap: Duration) -> Window {
        Window::new(WindowKind::Session {
            gap_ms: duration_ms(gap),
        })
    }

    /// Runs on event time read from the timestamp field `field` (milliseconds).
    pub fn event_time(mut self, field: impl Into<String>) -> Window {
        self.time = TimeDomain::Event {
            field: field.into(),
        };
        self
    }

    /// Runs on processing time (the default).
    pub fn processing_time(mut self) -> Window {
        self.time = TimeDomain::Processing;
        self
    }

    /// The watermark trails the largest event time seen by `lag` (bounded out-of-orderness):
    /// `watermark = max_ts - lag - 1`.
    pub fn lag(mut self, lag: Duration) -> Window {
        self.lag_ms = Some(duration_ms(lag));
        self
    }

    /// Windows take late elements for `lateness` after their end, firing again each time.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Window {
        self.allowed_lateness_ms = duration_ms(lateness);
        self
    }

    /// Shifts window starts by `offset_ms` from the epoch (e.g. time zones).
    pub fn offset_ms(mut self, offset_ms: i64) -> Window {
        self.offset_ms = offset_ms;
        self
    }

    /// Sends late tuples to the bolt's `late` stream instead of only counting them.
    pub fn late_to_side_stream(mut self) -> Window {
        self.late_stream = true;
        self
    }

    /// An upstream task that sends nothing for `timeout` stops holding the watermark back.
    pub fn idle_timeout(mut self, timeout: Duration) -> Window {
        self.idle_timeout_ms = Some(duration_ms(timeout));
        self
    }

    /// Whether the window counts tuples rather than time.
    pub fn is_count(&self) -> bool {
        match self.kind {
            WindowKind::Tumbling { size } | WindowKind::Sliding { size, .. } => {
                matches!(size, Size::Count(_))
            }
            WindowKind::Session { .. } => false,
        }
    }

    /// How far apart the ends of a key's successive time windows are: the size of a tumbling
    /// time window, the slide of a sliding one, the gap of a session; `None` by count.
    pub(crate) fn step_ms(&self) -> Option<i64> {
        match self.kind {
            WindowKind::Tumbling {
                size: Size::TimeMs(s),
            }
            | WindowKind::Sliding {
                slide: Size::TimeMs(s),
                ..
            } => Some(s),
            WindowKind::Session { gap_ms } => Some(gap_ms),
            _ => None,
        }
    }

    /// Whether the window runs on event time.
    pub fn is_event_time(&self) -> bool {
        matches!(self.time, TimeDomain::Event { .. })
    }

    /// Every problem with this specification, as sentences (empty when valid).
    pub fn check(&self) -> Vec<String> {
        let mut errors: Vec<String> = Vec::new();
        let (size, slide) = match self.kind {
            WindowKind::Tumbling { size } => (Some(size), None),
            WindowKind::Sliding { size, slide } => (Some(size), Some(slide)),
            WindowKind::Session { gap_ms } => {
                if gap_ms <= 0 {
                    errors.push("the session gap must be above zero".into());
                }
                (None, None)
            }
        };
        let positive = |s: Size| match s {
            Size::Count(n) => n > 0,
            Size::TimeMs(ms) => ms > 0,
        };
        if let Some(size) = size {
            if !positive(size) {
                errors.push("the window size must be above zero".into());
            }
        }
        if let (Some(size), Some(slide)) = (size, slide) {
            if !positive(slide) {
                errors.push("the slide must be above zero".into());
            }
            let ratio = match (size, slide) {
                (Size::Count(a), Size::Count(b)) if b > 0 => a / b,
                (Size::TimeMs(a), Size::TimeMs(b)) if b > 0 => a.unsigned_abs() / b.unsigned_abs(),
                _ => 0,
            };
            if ratio > MAX_WINDOWS_PER_ELEMENT {
                errors.push(format!(
                    "each element would be in {ratio} sliding windows (size / slide); at most \
                     {MAX_WINDOWS_PER_ELEMENT} are allowed"
                ));
            }
            match (size, slide) {
                (Size::Count(a), Size::Count(b)) if b > a => errors.push(format!(
                    "the slide ({b} tuples) is larger than the window size ({a} tuples)"
                )),
                (Size::TimeMs(a), Size::TimeMs(b)) if b > a => errors.push(format!(
                    "the slide ({b} ms) is larger than the window size ({a} ms)"
                )),
                (Size::Count(_), Size::TimeMs(_)) | (Size::TimeMs(_), Size::Count(_)) => errors
                    .push("the size and the slide must both be counts or both be times".into()),
                _ => {}
            }
        }
        if self.is_count() {
            if self.lag_ms.is_some() {
                errors.push("a lag applies to event-time windows, not to count windows".into());
            }
            if self.is_event_time() {
                errors.push("count windows count tuples: they take no event time".into());
            }
            if self.allowed_lateness_ms != 0 {
                errors.push(
                    "allowed lateness applies to event-time windows, not to count windows".into(),
                );
            }
            if self.offset_ms != 0 {
                errors.push("an offset applies to time windows, not to count windows".into());
            }
        } else if !self.is_event_time() {
            if self.lag_ms.is_some() {
                errors.push("a lag applies to event-time windows, not to processing time".into());
            }
            if self.allowed_lateness_ms != 0 {
                errors.push(
                    "allowed lateness applies to event-time windows, not to processing time".into(),
                );
            }
        }
        if self.lag_ms.is_some_and(|l| l < 0) {
            errors.push("the lag must not be negative".into());
        }
        if self.allowed_lateness_ms < 0 {
            errors.push("the allowed lateness must not be negative".into());
        }
        if self.idle_timeout_ms.is_some_and(|t| t <= 0) {
            errors.push("the idle timeout must be above zero".into());
        }
        if let TimeDomain::Event { field } = &self.time {
            if field.is_empty() {
                errors.push("event time needs a timestamp field".into());
            }
        }
        if self.late_stream && !self.is_event_time() {
            errors.push("only event-time windows have late tuples to send to a late stream".into());
        }
        // Time windows: |offset| < slide (the slide of a tumbling window is its size).
        let time_slide = match self.kind {
            WindowKind::Session { .. } => {
                if self.offset_ms != 0 {
                    errors.push(
                        "an offset applies to tumbling and sliding windows, not to sessions".into(),
                    );
                }
                None
            }
            _ => self.step_ms(),
        };
        if let Some(slide) = time_slide {
            if slide > 0 && self.offset_ms.unsigned_abs() >= slide.unsigned_abs() {
                errors.push(format!(
                    "|offset| ({}) must be smaller than the slide ({slide} ms)",
                    self.offset_ms
                ));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn valid_specs() {
        assert!(Window::tumbling(secs(1)).check().is_empty());
        assert!(Window::tumbling(Size::count(10)).check().is_empty());
        assert!(
            Window::sliding(Size::count(10), Size::count(3))
                .check()
                .is_empty()
        );
        assert!(
            Window::session(secs(5))
                .event_time("ts")
                .lag(secs(1))
                .check()
                .is_empty()
        );
        assert!(
            Window::sliding(secs(10), secs(5))
                .event_time("ts")
                .offset_ms(-4999)
                .check()
                .is_empty()
        );
    }

    #[test]
    fn invalid_specs_say_why() {
        let cases: Vec<(Window, &str)> = vec![
            (
                Window::tumbling(Size::count(0)),
                "the window size must be above zero",
            ),
            (
                Window::tumbling(Duration::ZERO),
                "the window size must be above zero",
            ),
            (
                Window::sliding(secs(1), secs(2)),
                "the slide (2000 ms) is larger than the window size (1000 ms)",
            ),
            (
                Window::sliding(Size::count(2), Size::count(3)),
                "the slide (3 tuples) is larger than the window size (2 tuples)",
            ),
            (
                Window::tumbling(Size::count(5)).lag(secs(1)),
                "a lag applies to event-time windows, not to count windows",
            ),
            (
                Window::tumbling(Size::count(5)).event_time("ts"),
                "count windows count tuples: they take no event time",
            ),
            (
                Window::session(Duration::ZERO),
                "the session gap must be above zero",
            ),
            (
                Window::tumbling(secs(1)).event_time("ts").offset_ms(1000),
                "|offset| (1000) must be smaller than the slide (1000 ms)",
            ),
            (
                Window::tumbling(secs(1)).lag(secs(1)),
                "a lag applies to event-time windows, not to processing time",
            ),
            (
                Window::sliding(Size::count(2), secs(1)),
                "the size and the slide must both be counts or both be times",
            ),
            (
                Window::tumbling(secs(1)).event_time(""),
                "event time needs a timestamp field",
            ),
        ];
        for (window, reason) in cases {
            let errors = window.check();
            assert!(errors.iter().any(|e| e == reason), "{window:?}: {errors:?}");
        }
    }
}
