//! The window core's bookkeeping, checked with a recording host: an element that joins windows
//! leaves them as often as it joined (the windowed bolt acks it on its last leave), a late
//! element joins none, and at the end of time only partial count windows still hold elements.
//! Event-time tumbling windows are also checked against a reference model: which windows fire,
//! with what, and after which step (a core that fired only at the end of time would fail).

use std::collections::HashMap;

use proptest::prelude::*;
use tempest_dsl::window::{Bounds, WindowCore, WindowHost};
use tempest_dsl::{Size, Window};

#[derive(Default)]
struct Recorder {
    current: u64,
    holds: HashMap<u64, i64>,
    late: Vec<u64>,
    fired: Vec<(u64, Option<Bounds>, Vec<u64>)>,
}

impl WindowHost<u64, Vec<u64>> for Recorder {
    fn add(&mut self, _key: &u64, contents: &mut Vec<u64>) {
        contents.push(self.current);
        *self.holds.entry(self.current).or_default() += 1;
    }
    fn merge(&mut self, _key: &u64, into: &mut Vec<u64>, from: Vec<u64>) {
        into.extend(from);
        into.sort_unstable();
    }
    fn fire(&mut self, key: &u64, bounds: Option<Bounds>, contents: &mut Vec<u64>) {
        for id in contents.iter() {
            assert!(
                self.holds[id] > 0,
                "a window fired an element it no longer holds"
            );
        }
        self.fired.push((*key, bounds, contents.clone()));
    }
    fn purge(&mut self, _key: &u64, contents: Vec<u64>) {
        for id in contents {
            *self.holds.entry(id).or_default() -= 1;
        }
    }
    fn evict(&mut self, _key: &u64, contents: &mut Vec<u64>, keep: usize) {
        if contents.len() > keep {
            let n = contents.len() - keep;
            for id in contents.drain(..n) {
                *self.holds.entry(id).or_default() -= 1;
            }
        }
    }
    fn late(&mut self, _key: &u64) {
        self.late.push(self.current);
    }
}

#[derive(Clone, Debug)]
enum Step {
    Element { key: u64, ts: i64 },
    Watermark(i64),
    Advance(i64),
}

fn window_strategy() -> impl Strategy<Value = Window> {
    let lateness = prop_oneof![Just(0i64), 1i64..200];
    prop_oneof![
        (1i64..300, lateness.clone()).prop_map(|(s, l)| {
            let mut w = Window::tumbling(Size::TimeMs(s)).event_time("ts");
            w.allowed_lateness_ms = l;
            w
        }),
        (1i64..300, 1i64..300, lateness.clone()).prop_map(|(a, b, l)| {
            let mut w =
                Window::sliding(Size::TimeMs(a.max(b)), Size::TimeMs(a.min(b))).event_time("ts");
            w.allowed_lateness_ms = l;
            w
        }),
        (1i64..100, lateness).prop_map(|(g, l)| {
            let mut w =
                Window::session(std::time::Duration::from_millis(g as u64)).event_time("ts");
            w.allowed_lateness_ms = l;
            w
        }),
        (1i64..300).prop_map(|s| Window::tumbling(Size::TimeMs(s))),
        (1u64..6).prop_map(|n| Window::tumbling(Size::Count(n))),
        (1u64..6, 1u64..6)
            .prop_map(|(a, b)| Window::sliding(Size::Count(a.max(b)), Size::Count(a.min(b)))),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            4 => (0u64..4, -100i64..1000).prop_map(|(key, ts)| Step::Element { key, ts }),
            1 => (-100i64..1200).prop_map(Step::Watermark),
            1 => (0i64..1200).prop_map(Step::Advance),
        ],
        0..80,
    )
}

proptest! {
    #[test]
    fn elements_leave_their_windows_as_often_as_they_joined(window in window_strategy(), steps in steps()) {
        let mut core: WindowCore<u64, Vec<u64>> = WindowCore::new(&window).expect("valid");
        let mut host = Recorder::default();
        let mut elements = 0u64;
        for step in &steps {
            match *step {
                Step::Element { key, ts } => {
                    elements += 1;
                    host.current = elements;
                    core.insert(key, ts, &mut host);
                }
                Step::Watermark(w) => core.advance_watermark(w, &mut host),
                Step::Advance(t) => core.advance_processing_time(t, &mut host),
            }
            prop_assert!(host.holds.values().all(|&h| h >= 0), "an element left more often than it joined");
        }
        core.advance_watermark(i64::MAX, &mut host);
        core.advance_processing_time(i64::MAX, &mut host);

        for id in &host.late {
            prop_assert_eq!(host.holds.get(id).copied().unwrap_or(0), 0, "a late element joined a window");
        }
        let held: Vec<u64> = host.holds.iter().filter(|&(_, h)| *h > 0).map(|(id, _)| *id).collect();
        if window.is_count() {
            // Only partial count windows hold elements, fewer than a window each per key.
            prop_assert_eq!(core.open_windows() > 0, !held.is_empty());
        } else {
            prop_assert!(held.is_empty(), "elements {:?} still held at the end of time", held);
            prop_assert_eq!(core.open_windows(), 0);
        }
        // Every element joined a window or was late (count and processing windows take all).
        let joined = host.holds.len() as u64;
        prop_assert_eq!(joined + host.late.len() as u64, elements);
        // Empty windows never fire.
        prop_assert!(host.fired.iter().all(|(_, _, c)| !c.is_empty()));
    }

    #[test]
    fn a_time_window_fires_exactly_its_elements(size in 1i64..500, ts in prop::collection::vec(0i64..5000, 1..60)) {
        let window = Window::tumbling(Size::TimeMs(size)).event_time("ts");
        let mut core: WindowCore<u64, Vec<u64>> = WindowCore::new(&window).expect("valid");
        let mut host = Recorder::default();
        for (i, &t) in ts.iter().enumerate() {
            host.current = i as u64;
            core.insert(0, t, &mut host);
        }
        core.advance_watermark(i64::MAX, &mut host);
        let mut seen = 0;
        for (_, bounds, contents) in &host.fired {
            let b = bounds.expect("time windows have bounds");
            for &id in contents {
                let t = ts[id as usize];
                prop_assert!(b.start <= t && t < b.end, "{} outside [{}, {})", t, b.start, b.end);
                prop_assert_eq!(b.start, t.div_euclid(size) * size);
            }
            seen += contents.len();
        }
        prop_assert_eq!(seen, ts.len());
    }
}

#[test]
fn an_invalid_window_is_refused() {
    let err =
        WindowCore::<u64, Vec<u64>>::new(&Window::tumbling(Size::Count(0))).expect_err("zero");
    assert_eq!(
        err.to_string(),
        "invalid window: the window size must be above zero"
    );
}

/// Firings: (after which step, window start, elements).
type Firings = Vec<(usize, i64, Vec<u64>)>;

/// An event-time tumbling window as a reference model: what fires after each step, and the
/// late elements.
fn model_firings(size: i64, steps: &[Step]) -> (Firings, Vec<u64>) {
    let mut watermark = i64::MIN;
    let mut open: std::collections::BTreeMap<i64, Vec<u64>> = Default::default();
    let mut fired = Vec::new();
    let mut late = Vec::new();
    let fire_upto = |step: usize,
                     wm: i64,
                     open: &mut std::collections::BTreeMap<i64, Vec<u64>>,
                     fired: &mut Firings| {
        while let Some((&start, _)) = open.first_key_value() {
            if start + size - 1 > wm {
                break;
            }
            if let Some(ids) = open.remove(&start) {
                fired.push((step, start, ids));
            }
        }
    };
    for (i, step) in steps.iter().enumerate() {
        match *step {
            Step::Element { ts, .. } => {
                let start = ts.div_euclid(size) * size;
                if start + size - 1 <= watermark {
                    late.push(i as u64);
                } else {
                    open.entry(start).or_default().push(i as u64);
                }
            }
            Step::Watermark(w) if w > watermark => {
                watermark = w;
                fire_upto(i, watermark, &mut open, &mut fired);
            }
            _ => {}
        }
    }
    fire_upto(steps.len(), i64::MAX, &mut open, &mut fired);
    (fired, late)
}

proptest! {
    #[test]
    fn event_time_tumbling_windows_fire_when_the_model_says(
        size in 1i64..300,
        raw in prop::collection::vec((0u8..4, 0i64..3000), 1..80),
    ) {
        // Elements (3 in 4) and watermarks (1 in 4), on one key.
        let steps: Vec<Step> = raw
            .iter()
            .map(|&(kind, t)| if kind == 0 { Step::Watermark(t) } else { Step::Element { key: 0, ts: t } })
            .collect();
        let window = Window::tumbling(Size::TimeMs(size)).event_time("ts");
        let mut core: WindowCore<u64, Vec<u64>> = WindowCore::new(&window).expect("valid");
        let mut host = Recorder::default();
        let mut fired = Vec::new();
        let record = |host: &mut Recorder, step: usize, fired: &mut Firings| {
            for (_, bounds, contents) in host.fired.drain(..) {
                let b = bounds.expect("time windows have bounds");
                fired.push((step, b.start, contents));
            }
        };
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Step::Element { key, ts } => {
                    host.current = i as u64;
                    core.insert(key, ts, &mut host);
                }
                Step::Watermark(w) => core.advance_watermark(w, &mut host),
                Step::Advance(_) => {}
            }
            record(&mut host, i, &mut fired);
        }
        core.end_of_input(&mut host);
        record(&mut host, steps.len(), &mut fired);
        let (expected, late) = model_firings(size, &steps);
        prop_assert_eq!(fired, expected);
        prop_assert_eq!(host.late, late);
    }
}

#[test]
fn merging_sessions_delete_the_timers_of_what_they_merge() {
    // One long session: every element extends it, which replaces the session by its cover.
    let window = Window::session(std::time::Duration::from_millis(100)).event_time("ts");
    let mut core: WindowCore<u64, Vec<u64>> = WindowCore::new(&window).expect("valid");
    let mut host = Recorder::default();
    for i in 0..1000 {
        host.current = i;
        core.insert(0, i as i64 * 10, &mut host);
    }
    assert_eq!(core.open_windows(), 1);
    assert_eq!(core.timers(), 1, "one session, one timer");
}
