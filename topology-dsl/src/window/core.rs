//! [`WindowCore`]: the windows of every key, their timers, lateness and session merging.
//!
//! A pure state machine: callers insert elements and advance the watermark or the processing
//! time; the core decides which windows exist, take, fire and go, and calls back a
//! [`WindowHost`] that owns what a window holds (its tuples, or an accumulator). The same core
//! runs inside a windowed bolt and behind `tempest windows`.
//!
//! Semantics are Flink's: time windows are `[start, end)`; a window fires when the watermark
//! reaches `end - 1` (or processing time has passed it: Flink's timers fire at least 1 ms
//! after their time), keeps its contents until `end - 1 + allowed_lateness`, and fires again
//! with its whole contents for each late element it takes in that time; an element is late when
//! every window it would join is past that point. Count windows are per key and never fire
//! partially. Session windows merge when they overlap or touch, and lateness is judged on the
//! merged session. Empty windows never exist, so they never fire.

use std::collections::{BTreeMap, btree_map};
use std::hash::Hash;

use rustc_hash::FxHashMap;

use crate::window::assign::{self, Bounds};
use crate::window::spec::{Size, Window, WindowKind};

/// What a window holds, owned by the caller of [`WindowCore`].
pub trait WindowHost<K, C> {
    /// Adds the element being inserted to a window's contents.
    fn add(&mut self, key: &K, contents: &mut C);
    /// Merges the contents of a session window into another (`from` is gone afterwards).
    fn merge(&mut self, key: &K, into: &mut C, from: C);
    /// A window fires with its contents, which it keeps. `bounds` is `None` for count windows.
    fn fire(&mut self, key: &K, bounds: Option<Bounds>, contents: &mut C);
    /// A window is gone; its contents leave it.
    fn purge(&mut self, key: &K, contents: C);
    /// A sliding count window keeps only its last `keep` elements; the others leave it.
    fn evict(&mut self, key: &K, contents: &mut C, keep: usize);
    /// The element being inserted is late: no window takes it.
    fn late(&mut self, key: &K);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Tumbling { size: i64, offset: i64 },
    Sliding { size: i64, slide: i64, offset: i64 },
    Session { gap: i64 },
    CountTumbling { size: u64 },
    CountSliding { size: u64, slide: u64 },
}

#[derive(Debug)]
struct Win<C> {
    id: u64,
    bounds: Bounds,
    contents: C,
}

/// A key's count window and the elements since it last fired.
#[derive(Debug)]
struct CountWin<C> {
    contents: C,
    since_fire: u64,
}

/// The windows of every key. See the [module docs](self).
///
/// Storage is shaped for many open windows per key (a fast upstream can run far ahead of the
/// watermark): aligned windows are found by `(key, bounds)` in a hash map (near the ends of the
/// range several windows share a clamped start or end, never both), sessions in a per-key
/// ordered map, count windows by key; timers are ordered maps from time to windows.
#[derive(Debug)]
pub struct WindowCore<K, C> {
    shape: Shape,
    event_time: bool,
    lateness: i64,
    watermark: i64,
    now: i64,
    /// Tumbling and sliding windows by (key, bounds).
    aligned: FxHashMap<(K, Bounds), Win<C>>,
    /// Session windows by key, then start (disjoint and not touching).
    sessions: FxHashMap<K, BTreeMap<i64, Win<C>>>,
    /// Count windows by key.
    counts: FxHashMap<K, CountWin<C>>,
    /// Fire timers: (max timestamp, start) -> windows (key, id) in creation order.
    timers: BTreeMap<(i64, i64), Vec<(K, u64)>>,
    /// Cleanup timers (event time with allowed lateness): time -> windows (key, bounds, id).
    cleanups: BTreeMap<i64, Vec<(K, Bounds, u64)>>,
    next_id: u64,
    scratch: Vec<Bounds>,
    open: usize,
}

/// A window specification the core cannot run (see [`Window::check`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid window: {}", .0.join("; "))]
pub struct InvalidWindow(pub Vec<String>);

/// Registers the timers of a new window.
#[allow(clippy::too_many_arguments)]
fn register<K: Clone>(
    timers: &mut BTreeMap<(i64, i64), Vec<(K, u64)>>,
    cleanups: &mut BTreeMap<i64, Vec<(K, Bounds, u64)>>,
    event_time: bool,
    lateness: i64,
    watermark: i64,
    key: &K,
    bounds: Bounds,
    id: u64,
) {
    let max_ts = bounds.max_timestamp();
    // An event-time window already due fires at once (a late firing), not through a timer;
    // a processing-time window always gets one (`insert` fires what is due right after).
    if !event_time || max_ts > watermark {
        timers
            .entry((max_ts, bounds.start))
            .or_default()
            .push((key.clone(), id));
    }
    if event_time && lateness > 0 {
        cleanups
            .entry(max_ts.saturating_add(lateness))
            .or_default()
            .push((key.clone(), bounds, id));
    }
}

impl<K: Hash + Eq + Clone, C: Default> WindowCore<K, C> {
    /// A core for `window`, with the watermark at `i64::MIN` and processing time at 0.
    pub fn new(window: &Window) -> Result<Self, InvalidWindow> {
        let errors = window.check();
        if !errors.is_empty() {
            return Err(InvalidWindow(errors));
        }
        let shape = match window.kind {
            WindowKind::Tumbling {
                size: Size::TimeMs(size),
            } => Shape::Tumbling {
                size,
                offset: window.offset_ms,
            },
            WindowKind::Sliding {
                size: Size::TimeMs(size),
                slide: Size::TimeMs(slide),
            } => Shape::Sliding {
                size,
                slide,
                offset: window.offset_ms,
            },
            WindowKind::Tumbling {
                size: Size::Count(size),
            } => Shape::CountTumbling { size },
            WindowKind::Sliding {
                size: Size::Count(size),
                slide: Size::Count(slide),
            } => Shape::CountSliding { size, slide },
            WindowKind::Session { gap_ms } => Shape::Session { gap: gap_ms },
            WindowKind::Sliding { .. } => {
                return Err(InvalidWindow(vec![
                    "the size and the slide must both be counts or both be times".into(),
                ]));
            }
        };
        Ok(WindowCore {
            shape,
            event_time: window.is_event_time(),
            lateness: window.allowed_lateness_ms,
            watermark: i64::MIN,
            now: 0,
            aligned: FxHashMap::default(),
            sessions: FxHashMap::default(),
            counts: FxHashMap::default(),
            timers: BTreeMap::new(),
            cleanups: BTreeMap::new(),
            next_id: 0,
            scratch: Vec::new(),
            open: 0,
        })
    }

    /// The current event-time watermark.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The current processing time.
    pub fn processing_time(&self) -> i64 {
        self.now
    }

    /// Windows currently open, over all keys.
    pub fn open_windows(&self) -> usize {
        self.open
    }

    /// The keys that have a window (a key may come more than once).
    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.aligned
            .keys()
            .map(|(k, _)| k)
            .chain(self.sessions.keys())
            .chain(self.counts.keys())
    }

    /// Whether windows run on event time.
    pub fn is_event_time(&self) -> bool {
        self.event_time
    }

    /// Whether windows count elements.
    pub fn is_count(&self) -> bool {
        matches!(
            self.shape,
            Shape::CountTumbling { .. } | Shape::CountSliding { .. }
        )
    }

    /// Inserts an element of `key` with event time `ts` (ignored by processing-time and count
    /// windows): it joins its windows, or is reported late.
    pub fn insert<H: WindowHost<K, C> + ?Sized>(&mut self, key: K, ts: i64, host: &mut H) {
        let t = if self.event_time { ts } else { self.now };
        match self.shape {
            Shape::CountTumbling { size } => self.insert_count(key, size, None, host),
            Shape::CountSliding { size, slide } => self.insert_count(key, size, Some(slide), host),
            Shape::Session { gap } => self.insert_session(key, t, gap, host),
            Shape::Tumbling { size, offset } => {
                self.scratch.clear();
                self.scratch.push(assign::tumbling(t, size, offset));
                self.insert_aligned(key, host);
            }
            Shape::Sliding {
                size,
                slide,
                offset,
            } => {
                let mut scratch = std::mem::take(&mut self.scratch);
                assign::sliding(t, size, slide, offset, &mut scratch);
                self.scratch = scratch;
                self.insert_aligned(key, host);
            }
        }
        if !self.event_time {
            // A processing-time window due now fires now.
            self.fire_due(host);
        }
    }

    /// The end of the input: every time window fires (watermark and processing time go to
    /// `i64::MAX`), and partial count windows, which never fire, let go of their elements.
    pub fn end_of_input<H: WindowHost<K, C> + ?Sized>(&mut self, host: &mut H) {
        self.advance_watermark(i64::MAX, host);
        self.advance_processing_time(i64::MAX, host);
        for (key, win) in self.counts.drain() {
            self.open -= 1;
            host.purge(&key, win.contents);
        }
    }

    /// Moves the watermark forward (never back) and fires what is due.
    pub fn advance_watermark<H: WindowHost<K, C> + ?Sized>(
        &mut self,
        watermark: i64,
        host: &mut H,
    ) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        if self.event_time {
            self.fire_due(host);
        }
    }

    /// Moves processing time forward (never back) and fires what is due.
    pub fn advance_processing_time<H: WindowHost<K, C> + ?Sized>(
        &mut self,
        now: i64,
        host: &mut H,
    ) {
        if now <= self.now {
            return;
        }
        self.now = now;
        if !self.event_time {
            self.fire_due(host);
        }
    }

    fn is_late(&self, bounds: &Bounds) -> bool {
        self.event_time && bounds.max_timestamp().saturating_add(self.lateness) <= self.watermark
    }

    /// The time windows fire by: the watermark (event time) or the processing time.
    pub fn clock(&self) -> i64 {
        if self.event_time {
            self.watermark
        } else {
            self.now
        }
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.open += 1;
        self.next_id
    }

    fn insert_aligned<H: WindowHost<K, C> + ?Sized>(&mut self, key: K, host: &mut H) {
        let windows = std::mem::take(&mut self.scratch);
        let mut taken = false;
        for &bounds in &windows {
            if self.is_late(&bounds) {
                continue;
            }
            taken = true;
            let WindowCore {
                aligned,
                timers,
                cleanups,
                event_time,
                lateness,
                watermark,
                next_id,
                open,
                ..
            } = self;
            let win = aligned.entry((key.clone(), bounds)).or_insert_with(|| {
                *next_id += 1;
                *open += 1;
                let id = *next_id;
                register(
                    timers,
                    cleanups,
                    *event_time,
                    *lateness,
                    *watermark,
                    &key,
                    bounds,
                    id,
                );
                Win {
                    id,
                    bounds,
                    contents: C::default(),
                }
            });
            host.add(&key, &mut win.contents);
            if *event_time && bounds.max_timestamp() <= *watermark {
                host.fire(&key, Some(bounds), &mut win.contents);
            }
        }
        self.scratch = windows;
        if !taken {
            host.late(&key);
        }
    }

    fn insert_session<H: WindowHost<K, C> + ?Sized>(
        &mut self,
        key: K,
        t: i64,
        gap: i64,
        host: &mut H,
    ) {
        let proto = Bounds::new(t, gap);
        // Sessions of a key are disjoint and do not touch, so those meeting `proto` are the
        // run that ends with the last one starting at or before `proto.end`.
        let meeting: Vec<i64> = self
            .sessions
            .get(&key)
            .map(|m| {
                m.range(..=proto.end)
                    .rev()
                    .take_while(|(_, w)| w.bounds.end >= proto.start)
                    .map(|(&start, _)| start)
                    .collect()
            })
            .unwrap_or_default();
        let start = if meeting.is_empty() {
            // Lateness is judged on the session an element would join: alone, its own window.
            if self.is_late(&proto) {
                host.late(&key);
                return;
            }
            self.open_session(&key, proto, C::default())
        } else {
            let map = self.sessions.entry(key.clone()).or_default();
            let merged = meeting
                .iter()
                .filter_map(|s| map.get(s))
                .fold(proto, |b, w| b.cover(&w.bounds));
            if meeting.len() == 1 && map.get(&meeting[0]).is_some_and(|w| w.bounds == merged) {
                meeting[0]
            } else {
                // Fold the met sessions (earliest first) into one and open their cover.
                let mut parts: Vec<Win<C>> = meeting.iter().filter_map(|s| map.remove(s)).collect();
                parts.sort_by_key(|w| w.bounds.start);
                self.open -= parts.len();
                for part in &parts {
                    self.unregister(&key, part.bounds, part.id);
                }
                let mut parts = parts.into_iter();
                let mut contents = parts.next().map(|w| w.contents).unwrap_or_default();
                for other in parts {
                    host.merge(&key, &mut contents, other.contents);
                }
                self.open_session(&key, merged, contents)
            }
        };
        let (event_time, watermark) = (self.event_time, self.watermark);
        if let Some(win) = self.sessions.get_mut(&key).and_then(|m| m.get_mut(&start)) {
            host.add(&key, &mut win.contents);
            if event_time && win.bounds.max_timestamp() <= watermark {
                host.fire(&key, Some(win.bounds), &mut win.contents);
            }
        }
    }

    /// Deletes the timers of window `id` (a session merged into another), as Flink deletes
    /// them, so timer state does not grow with every element of a long session.
    fn unregister(&mut self, key: &K, bounds: Bounds, id: u64) {
        let max_ts = bounds.max_timestamp();
        if let btree_map::Entry::Occupied(mut e) = self.timers.entry((max_ts, bounds.start)) {
            e.get_mut().retain(|(k, i)| !(*i == id && k == key));
            if e.get().is_empty() {
                e.remove();
            }
        }
        if let btree_map::Entry::Occupied(mut e) =
            self.cleanups.entry(max_ts.saturating_add(self.lateness))
        {
            e.get_mut().retain(|(k, _, i)| !(*i == id && k == key));
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// Timers pending (fire and cleanup), for tests of their bookkeeping.
    pub fn timers(&self) -> usize {
        self.timers.values().map(Vec::len).sum::<usize>()
            + self.cleanups.values().map(Vec::len).sum::<usize>()
    }

    fn open_session(&mut self, key: &K, bounds: Bounds, contents: C) -> i64 {
        let id = self.new_id();
        register(
            &mut self.timers,
            &mut self.cleanups,
            self.event_time,
            self.lateness,
            self.watermark,
            key,
            bounds,
            id,
        );
        self.sessions.entry(key.clone()).or_default().insert(
            bounds.start,
            Win {
                id,
                bounds,
                contents,
            },
        );
        bounds.start
    }

    fn insert_count<H: WindowHost<K, C> + ?Sized>(
        &mut self,
        key: K,
        size: u64,
        slide: Option<u64>,
        host: &mut H,
    ) {
        let open = &mut self.open;
        let win = self.counts.entry(key.clone()).or_insert_with(|| {
            *open += 1;
            CountWin {
                contents: C::default(),
                since_fire: 0,
            }
        });
        host.add(&key, &mut win.contents);
        win.since_fire += 1;
        match slide {
            None if win.since_fire >= size => {
                if let Some(mut win) = self.counts.remove(&key) {
                    self.open -= 1;
                    host.fire(&key, None, &mut win.contents);
                    host.purge(&key, win.contents);
                }
            }
            Some(slide) if win.since_fire >= slide => {
                win.since_fire = 0;
                let keep = usize::try_from(size).unwrap_or(usize::MAX);
                host.evict(&key, &mut win.contents, keep);
                host.fire(&key, None, &mut win.contents);
            }
            _ => {}
        }
    }

    /// Removes window (`key`, `bounds`) if it is still window `id` (a session is found by its
    /// start: merging may have moved its end).
    fn take_window(&mut self, key: &K, bounds: Bounds, id: u64) -> Option<Win<C>> {
        let win = match self.shape {
            Shape::Session { .. } => {
                let map = self.sessions.get_mut(key)?;
                if map.get(&bounds.start)?.id != id {
                    return None;
                }
                let win = map.remove(&bounds.start);
                if map.is_empty() {
                    self.sessions.remove(key);
                }
                win
            }
            _ => {
                let k = (key.clone(), bounds);
                if self.aligned.get(&k)?.id != id {
                    return None;
                }
                self.aligned.remove(&k)
            }
        };
        self.open -= usize::from(win.is_some());
        win
    }

    fn window_mut(&mut self, key: &K, bounds: Bounds, id: u64) -> Option<&mut Win<C>> {
        let win = match self.shape {
            Shape::Session { .. } => self.sessions.get_mut(key)?.get_mut(&bounds.start)?,
            _ => self.aligned.get_mut(&(key.clone(), bounds))?,
        };
        (win.id == id).then_some(win)
    }

    /// Fires every window whose time has come, in (max timestamp, start, creation) order, then
    /// removes the windows past their cleanup time.
    fn fire_due<H: WindowHost<K, C> + ?Sized>(&mut self, host: &mut H) {
        // A processing-time timer fires once the clock has passed its time (Flink's fire at
        // least 1 ms late): elements that arrive while the clock reads `end - 1` still join
        // the window, and it fires once for all of them.
        let clock = if self.event_time {
            self.watermark
        } else {
            self.now.saturating_sub(1)
        };
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > clock {
                break;
            }
            let ((max_ts, start), windows) = entry.remove_entry();
            // Windows are never empty, so their end is above `i64::MIN`.
            let bounds = Bounds {
                start,
                end: max_ts.saturating_add(1),
            };
            let gone = !self.event_time || max_ts.saturating_add(self.lateness) <= clock;
            for (key, id) in windows {
                if gone {
                    // Fired and removed at once (merged-away sessions are skipped).
                    if let Some(mut win) = self.take_window(&key, bounds, id) {
                        host.fire(&key, Some(win.bounds), &mut win.contents);
                        host.purge(&key, win.contents);
                    }
                } else if let Some(win) = self.window_mut(&key, bounds, id) {
                    host.fire(&key, Some(win.bounds), &mut win.contents);
                }
            }
        }
        while let Some(entry) = self.cleanups.first_entry() {
            if *entry.key() > clock {
                break;
            }
            for (key, bounds, id) in entry.remove() {
                if let Some(win) = self.take_window(&key, bounds, id) {
                    host.purge(&key, win.contents);
                }
            }
        }
    }
}
