//! Window assignment arithmetic (Flink's): which `[start, end)` windows hold a timestamp.
//!
//! Computed in 128 bits where 64 would overflow, and clamped to `i64`, so timestamps near the
//! ends of the range saturate instead of wrapping.

/// `[start, end)` of a time window. Its elements' result time is `end - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bounds {
    /// The first millisecond in the window.
    pub start: i64,
    /// The first millisecond after it.
    pub end: i64,
}

impl Bounds {
    /// The window `[start, start + size)`, saturating at `i64::MAX`.
    pub fn new(start: i64, size: i64) -> Bounds {
        Bounds {
            start,
            end: start.saturating_add(size),
        }
    }

    /// The largest timestamp in the window, `end - 1`: the window fires when time reaches it.
    pub fn max_timestamp(&self) -> i64 {
        self.end.saturating_sub(1)
    }

    /// Whether the windows overlap or touch (session merging).
    pub fn meets(&self, other: &Bounds) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &Bounds) -> Bounds {
        Bounds {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

fn clamp(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The start of the window of `slide` (aligned to the epoch plus `offset`) that holds `ts`:
/// `ts - (ts - offset).rem_euclid(slide)`.
pub fn window_start(ts: i64, offset: i64, slide: i64) -> i64 {
    clamp(start_wide(ts, offset, slide))
}

fn start_wide(ts: i64, offset: i64, slide: i64) -> i128 {
    let slide = slide.max(1);
    // In 64 bits whenever nothing overflows, which is every timestamp short of the ends of the
    // range: a 128-bit remainder is a library call, on every element of every window.
    if let Some(start) = ts
        .checked_sub(offset)
        .and_then(|d| ts.checked_sub(d.rem_euclid(slide)))
    {
        return i128::from(start);
    }
    let (ts, offset, slide) = (i128::from(ts), i128::from(offset), i128::from(slide));
    ts - (ts - offset).rem_euclid(slide)
}

/// The window `[start, start + size)` computed in 128 bits, then clamped: the end comes from
/// the true start, so windows cut by the ends of the range still meet their neighbours
/// exactly (never overlap) and hold their elements.
fn bounds_wide(start: i128, size: i64) -> Bounds {
    Bounds {
        start: clamp(start),
        end: clamp(start + i128::from(size)),
    }
}

/// The tumbling window of `size` holding `ts`.
pub fn tumbling(ts: i64, size: i64, offset: i64) -> Bounds {
    bounds_wide(start_wide(ts, offset, size), size)
}

/// Every sliding window of `size` and `slide` holding `ts`, latest start first.
pub fn sliding(ts: i64, size: i64, slide: i64, offset: i64, out: &mut Vec<Bounds>) {
    out.clear();
    let (size, slide) = (size.max(1), slide.max(1));
    let last = start_wide(ts, offset, slide);
    let lowest = i128::from(ts) - i128::from(size);
    let mut start = last;
    while start > lowest {
        let b = bounds_wide(start, size);
        if b.start == b.end {
            // Wholly below the range: it cannot hold `ts`.
            break;
        }
        out.push(b);
        start -= i128::from(slide);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_are_epoch_aligned_with_an_offset() {
        assert_eq!(window_start(1999, 0, 1000), 1000);
        assert_eq!(window_start(2000, 0, 1000), 2000);
        assert_eq!(window_start(-1, 0, 1000), -1000, "floor, not truncation");
        assert_eq!(window_start(1999, 100, 1000), 1100);
        assert_eq!(window_start(50, 100, 1000), -900);
        assert_eq!(window_start(50, -100, 1000), -100);
    }

    #[test]
    fn tumbling_windows() {
        assert_eq!(
            tumbling(0, 3000, 0),
            Bounds {
                start: 0,
                end: 3000
            }
        );
        assert_eq!(
            tumbling(2999, 3000, 0),
            Bounds {
                start: 0,
                end: 3000
            }
        );
        assert_eq!(tumbling(3000, 3000, 0).max_timestamp(), 5999);
    }

    #[test]
    fn sliding_windows_cover_every_start_that_holds_the_timestamp() {
        let mut out = Vec::new();
        sliding(3999, 3000, 1000, 0, &mut out);
        assert_eq!(
            out,
            [
                Bounds {
                    start: 3000,
                    end: 6000
                },
                Bounds {
                    start: 2000,
                    end: 5000
                },
                Bounds {
                    start: 1000,
                    end: 4000
                }
            ]
        );
        // A slide that does not divide the size (Flink: size 5, slide 2 gives 2 or 3 windows).
        sliding(4, 5, 2, 0, &mut out);
        assert_eq!(
            out,
            [
                Bounds { start: 4, end: 9 },
                Bounds { start: 2, end: 7 },
                Bounds { start: 0, end: 5 }
            ]
        );
        sliding(5, 5, 2, 0, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn windows_near_the_limits_hold_their_elements_and_never_overlap() {
        // Every timestamp within 3000 of either end (but i64::MAX itself, which no `[start,
        // end)` of i64 can hold), with sizes and offsets that do not divide the range.
        let near = (i64::MIN..i64::MIN + 3000).chain(i64::MAX - 3000..i64::MAX);
        let mut out = Vec::new();
        let mut previous: Option<(i64, Bounds)> = None;
        for ts in near {
            let b = tumbling(ts, 1000, 7);
            assert!(b.start <= ts && ts < b.end, "{ts} not in {b:?}");
            if let Some((prev_ts, p)) = previous.filter(|(p, _)| *p + 1 == ts) {
                assert!(
                    p == b || p.end == b.start,
                    "windows of {prev_ts} and {ts} overlap or leave a gap: {p:?} {b:?}"
                );
            }
            previous = Some((ts, b));
            sliding(ts, 3000, 700, -13, &mut out);
            assert!(!out.is_empty(), "{ts} in no sliding window");
            for w in &out {
                assert!(w.start <= ts && ts < w.end, "{ts} not in {w:?}");
            }
            // Distinct windows, latest first (near either end several share a clamped start or
            // end, never both).
            assert!(
                out.windows(2)
                    .all(|p| p[0].start >= p[1].start && p[0].end >= p[1].end && p[0] != p[1]),
                "{out:?}"
            );
        }
        // The window cut by the bottom of the range ends where its true (uncut) end is.
        let low = tumbling(i64::MIN + 5, 1000, 0);
        assert_eq!(low.start, i64::MIN, "start clamps");
        assert_eq!(
            tumbling(low.end, 1000, 0).start,
            low.end,
            "the next window starts at its end"
        );
        assert!(
            low.end < i64::MIN + 1000,
            "the end is not start + size after clamping"
        );
        assert_eq!(
            tumbling(i64::MAX - 10, 1000, 0).end,
            i64::MAX,
            "end saturates"
        );
    }

    proptest::proptest! {
        /// The 64-bit shortcut gives the 128-bit formula's start wherever it applies, and
        /// the formula's elsewhere.
        #[test]
        fn starts_agree_with_the_wide_formula(
            ts in proptest::prop_oneof![
                proptest::prelude::any::<i64>(),
                -10_000i64..10_000,
                i64::MIN..i64::MIN + 10_000,
                i64::MAX - 10_000..=i64::MAX,
            ],
            offset in proptest::prop_oneof![-5_000i64..5_000, proptest::prelude::any::<i64>()],
            slide in proptest::prop_oneof![1i64..5_000, proptest::prelude::any::<i64>()],
        ) {
            let (t, o, s) = (i128::from(ts), i128::from(offset), i128::from(slide.max(1)));
            proptest::prop_assert_eq!(start_wide(ts, offset, slide), t - (t - o).rem_euclid(s));
        }
    }

    #[test]
    fn sessions_merge_when_they_touch() {
        let a = Bounds { start: 0, end: 10 };
        assert!(a.meets(&Bounds { start: 10, end: 20 }));
        assert!(!a.meets(&Bounds { start: 11, end: 20 }));
        assert_eq!(
            a.cover(&Bounds { start: 5, end: 30 }),
            Bounds { start: 0, end: 30 }
        );
    }
}
