//! The typed task behind windowed bolts: [`WindowedTask`] reads key and time from its input,
//! drives a [`WindowCore`] and keeps the acking; a [`WindowMode`] says what a window holds:
//! its tuples ([`Whole`], for a [`WindowedBolt`]) or an accumulator ([`Aggregate`], for a
//! [`WindowAggregate`]).
//!
//! Acking: a tuple is acked when no window holds it any more (after the firing of the last
//! window that held it, or at once when it is late), with the edges of the results anchored to
//! it; a failed `on_window` or `emit` fails the trees of the window's tuples.

use std::collections::{VecDeque, hash_map};
use std::marker::PhantomData;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::component::{TaskContext, TaskError};
use crate::emitter::Emitter;
use crate::engine::input::InputAdapter;
use crate::engine::route::KeyExtract;
use crate::engine::{
    AckOp, BatchOutcome, BoltTask, EngineError, LinkId, Mark, Payload, TaskOutput, WindowStats,
};
use crate::ids::TaskId;
use crate::key_hasher::KeyHasher;
use crate::record::Record;
use crate::tuple::TupleIds;
use crate::window::{
    Bounds, Channel, ExactKeys, Valve, Window, WindowAggregate, WindowCore, WindowHost, WindowInfo,
    WindowView, WindowedBolt,
};

/// How a windowed task reads key and time from its input, and its watermark.
pub(crate) struct WindowInput<In> {
    /// The key (the fields of a fields grouping); `None` for unkeyed windows, all in key 0.
    key: KeyExtract<In>,
    /// Unless the key's hash tells keys apart by itself: the window key of each exact key.
    exact: Option<ExactKeys>,
    /// The event-time field, for event-time windows.
    time_field: Option<usize>,
    /// The watermark of the input channels.
    valve: Valve,
    /// How far an upstream task's watermark may run ahead of the task's before its batches
    /// wait (event time only) ...
    max_drift_ms: i64,
    /// ... while more windows than this are open.
    max_open_windows: usize,
    _in: PhantomData<fn(In)>,
}

impl<In: Record> WindowInput<In> {
    pub(crate) fn new(
        key: KeyExtract<In>,
        time_field: Option<usize>,
        channels: &[Channel],
        max_drift_ms: i64,
        max_open_windows: usize,
    ) -> Self {
        WindowInput {
            exact: (!key.is_injective()).then(ExactKeys::default),
            key,
            time_field,
            valve: Valve::new(channels),
            max_drift_ms,
            max_open_windows,
            _in: PhantomData,
        }
    }

    /// The window key of the element's key: its hash, unless another key with the same hash
    /// has windows (see [`ExactKeys`]).
    #[inline]
    fn window_key(&mut self, value: &In) -> u64 {
        let Some(keys) = &mut self.exact else {
            return self.key.hash(value);
        };
        let mut hasher = KeyHasher::recording();
        self.key.write(value, &mut hasher);
        let hash = hasher.finish();
        KeyHasher::with_recorded(|exact| keys.key(hash, exact))
    }

    /// The element's event time (`Ok(0)` for processing-time and count windows).
    #[inline]
    fn time(&self, value: &In) -> Result<i64, TaskError> {
        match self.time_field {
            None => Ok(0),
            Some(f) => value
                .timestamp_field(f)
                .ok_or_else(|| TaskError::new("the tuple has no event time")),
        }
    }

    /// Watermark alignment: whether, with `open` windows open, `source`'s watermark is more
    /// than the drift ahead of the task's while too many windows are open. Its batches then
    /// wait (and with them its credits, so it stops) until a mark from a slower channel moves
    /// the task's watermark and windows close. The slowest channel is never ahead, so the
    /// watermark keeps moving.
    fn defers(&self, source: TaskId, open: usize) -> bool {
        self.time_field.is_some()
            && open > self.max_open_windows
            && self
                .valve
                .source_watermark(source)
                .is_some_and(|w| w.saturating_sub(self.valve.current()) > self.max_drift_ms)
    }
}

/// A step run on a window core with a host for clock-driven firings.
type CoreStep<'f, C> = dyn FnMut(&mut WindowCore<u64, C>, &mut dyn WindowHost<u64, C>) + 'f;

/// A tuple held by windows.
#[derive(Clone)]
struct Element<V> {
    value: V,
    ids: TupleIds,
    ack_val: u64,
    refs: u32,
    /// Its trees were failed (a window's function failed): it is not acked when released.
    failed: bool,
}

/// The tuples windows hold, by arrival number.
#[derive(Clone)]
struct Store<V> {
    elements: FxHashMap<u64, Element<V>>,
    next: u64,
}

impl<V> Store<V> {
    fn new() -> Self {
        Store {
            elements: FxHashMap::default(),
            next: 0,
        }
    }

    fn insert(&mut self, value: V, ids: TupleIds) -> u64 {
        let id = self.next;
        self.next += 1;
        self.elements.insert(
            id,
            Element {
                value,
                ids,
                ack_val: 0,
                refs: 0,
                failed: false,
            },
        );
        id
    }

    /// One more window holds `id`.
    fn hold(&mut self, id: u64) {
        if let Some(e) = self.elements.get_mut(&id) {
            e.refs += 1;
        }
    }

    /// One window less holds `id`; acks it when none does.
    fn release<O: Record>(&mut self, id: u64, out: &mut Emitter<O>) {
        if let hash_map::Entry::Occupied(mut e) = self.elements.entry(id) {
            let refs = &mut e.get_mut().refs;
            *refs = refs.saturating_sub(1);
            if *refs == 0 {
                Self::ack_removed(e.remove(), out);
            }
        }
    }

    /// Acks `id` if no window holds it (unless its trees were failed).
    fn ack_unheld<O: Record>(&mut self, id: u64, out: &mut Emitter<O>) {
        if let hash_map::Entry::Occupied(e) = self.elements.entry(id) {
            if e.get().refs == 0 {
                Self::ack_removed(e.remove(), out);
            }
        }
    }

    /// Acks an element no window holds any more, unless its trees were failed.
    fn ack_removed<O: Record>(e: Element<V>, out: &mut Emitter<O>) {
        if !e.failed {
            out.ack_ids(&e.ids, e.ack_val);
        }
    }

    /// Runs `emit` with the emitter anchored to the tuples `ids`, folds the edges it created
    /// into their acks, and fails their trees if it failed.
    fn anchored<O: Record>(
        &mut self,
        ids: &[u64],
        out: &mut Emitter<O>,
        outcome: &mut BatchOutcome,
        emit: impl FnOnce(&Store<V>, &mut Emitter<O>) -> Result<(), TaskError>,
    ) {
        if !out.is_tracking() {
            if let Err(err) = emit(self, out) {
                outcome.note_error(err);
            }
            return;
        }
        // One scope entry per id, in order (an id no longer stored anchors nothing).
        static GONE: TupleIds = TupleIds::Untracked;
        out.begin_scope(
            ids.iter()
                .map(|id| self.elements.get(id).map_or(&GONE, |e| &e.ids)),
        );
        let result = emit(self, out);
        let mut xors = Vec::new();
        out.end_scope(&mut xors);
        for (id, x) in ids.iter().zip(xors) {
            if let Some(e) = self.elements.get_mut(id) {
                e.ack_val ^= x;
            }
        }
        if let Err(err) = result {
            outcome.note_error(err);
            for id in ids {
                if let Some(e) = self.elements.get_mut(id) {
                    if !e.failed {
                        e.failed = true;
                        out.fail_ids(&e.ids);
                    }
                }
            }
        }
    }
}

/// The output side of a windowed task, shared by both modes.
pub(crate) struct WindowIo<In, Out> {
    out: Emitter<Out>,
    late: Option<Emitter<In>>,
    stats: WindowStats,
    outcome: BatchOutcome,
}

impl<In: Record, Out: Record> WindowIo<In, Out> {
    pub(crate) fn new(out: Emitter<Out>, late: Option<Emitter<In>>) -> Self {
        WindowIo {
            out,
            late,
            stats: WindowStats::new(),
            outcome: BatchOutcome::default(),
        }
    }

    /// A late tuple: sent to the late stream (anchored to it) if there is one, then acked.
    fn late(&mut self, value: &In, ids: &TupleIds, ack_val: u64) {
        self.stats.late += 1;
        let mut x = 0;
        if let Some(late) = self.late.as_mut() {
            let mut xors = Vec::new();
            late.begin_scope(std::iter::once(ids));
            late.emit(value.clone());
            late.end_scope(&mut xors);
            x = xors.first().copied().unwrap_or(0);
        }
        self.out.ack_ids(ids, ack_val ^ x);
    }
}

/// A callback that runs the window core against a host.
pub(crate) type WithHost<'f, C> = dyn FnMut(&mut dyn WindowHost<u64, C>) + 'f;

/// What the two kinds of windowed task differ in: what a window holds.
pub(crate) trait WindowMode: Clone + Send + 'static {
    /// The windowed records.
    type In: Record;
    /// The results.
    type Out: Record;
    /// What one window holds.
    type Contents: Default + Send;

    /// Calls the user's `prepare`.
    fn prepare(&mut self, ctx: &TaskContext) -> Result<(), TaskError>;

    /// Takes in one element: keeps what it must and inserts it into the core.
    #[allow(clippy::too_many_arguments)]
    fn ingest(
        &mut self,
        io: &mut WindowIo<Self::In, Self::Out>,
        core: &mut WindowCore<u64, Self::Contents>,
        key: u64,
        ts: i64,
        value: Self::In,
        ids: TupleIds,
    );

    /// Runs `f` with a host for clock-driven firings (no element being inserted).
    fn with_host(
        &mut self,
        io: &mut WindowIo<Self::In, Self::Out>,
        f: &mut WithHost<'_, Self::Contents>,
    );

    /// Housekeeping at clock time `clock` (ticks).
    fn sweep(&mut self, _clock: i64) {}

    /// Keeps at most `cap` keys' previous firings (whole windows).
    fn limit_previous(&mut self, _cap: usize) {}

    /// Adds the keys whose previous firing is kept to `live`.
    fn previous_keys(&self, _live: &mut FxHashSet<u64>) {}
}

/// The task behind a windowed bolt of either mode.
pub(crate) struct WindowedTask<M: WindowMode> {
    mode: M,
    context: TaskContext,
    inputs: Arc<[Arc<dyn InputAdapter<M::In>>]>,
    io: WindowIo<M::In, M::Out>,
    core: WindowCore<u64, M::Contents>,
    input: WindowInput<M::In>,
    /// The largest event time taken in since the last `take_event_time`.
    seen_ts: i64,
    /// Whether the end of the input was reached (every channel at the end of time, or every
    /// upstream task finished): every time window has fired and partial count windows let go.
    ended: bool,
}

impl<M: WindowMode> WindowedTask<M> {
    pub(crate) fn new(
        mode: M,
        context: TaskContext,
        inputs: Arc<[Arc<dyn InputAdapter<M::In>>]>,
        io: WindowIo<M::In, M::Out>,
        core: WindowCore<u64, M::Contents>,
        input: WindowInput<M::In>,
    ) -> Self {
        WindowedTask {
            mode,
            context,
            inputs,
            io,
            core,
            input,
            seen_ts: i64::MIN,
            ended: false,
        }
    }

    /// Forgets the exact keys that no longer have windows, when enough were added.
    fn sweep_keys(&mut self) {
        let Some(keys) = self.input.exact.as_mut().filter(|k| k.sweep_due()) else {
            return;
        };
        let mut live: FxHashSet<u64> = self.core.keys().copied().collect();
        self.mode.previous_keys(&mut live);
        keys.sweep(&live);
    }

    /// Brings the core's clocks forward: event time to the input watermark, processing time to
    /// `now`, firing what is due. A watermark at the end of time ends the input: every time
    /// window fires and partial count windows let go of their tuples, which are acked (they
    /// never fire).
    fn advance(&mut self, now: i64) {
        let watermark = self.input.valve.current();
        if watermark == i64::MAX {
            return self.end();
        }
        self.run_core(&mut |core, host| {
            if core.is_event_time() {
                core.advance_watermark(watermark, host);
            } else if !core.is_count() {
                core.advance_processing_time(now, host);
            }
        });
    }

    /// Ends the input (every channel at the end of time, or the last upstream task finished).
    fn end(&mut self) {
        self.run_core(&mut |core, host| core.end_of_input(host));
        self.ended = true;
    }

    /// Runs `f` on the core with a host for clock-driven firings, unless the input has ended,
    /// and publishes the window statistics.
    fn run_core(&mut self, f: &mut CoreStep<'_, M::Contents>) {
        if self.ended {
            return;
        }
        let WindowedTask { mode, io, core, .. } = self;
        mode.with_host(io, &mut |host| f(core, host));
        self.io.stats.open_windows = self.core.open_windows() as u64;
        self.io.stats.watermark = self.core.watermark();
    }

    /// The outcome of what ran since the last call, as `execute_batch`'s result or an error.
    fn take_outcome(&mut self) -> BatchOutcome {
        std::mem::take(&mut self.io.outcome)
    }

    fn take_error(&mut self) -> Result<(), TaskError> {
        self.take_outcome().first_error.map_or(Ok(()), Err)
    }
}

impl<M: WindowMode> BoltTask for WindowedTask<M> {
    fn prepare(&mut self) -> Result<(), TaskError> {
        self.mode.prepare(&self.context)
    }

    fn execute_batch(
        &mut self,
        input: u16,
        source: TaskId,
        payload: Payload,
        now_ms: i64,
    ) -> Result<BatchOutcome, EngineError> {
        let batch = crate::engine::input::adapt(&self.inputs, input, payload)?;
        self.input.valve.data((source, input));
        let event_time = self.core.is_event_time();
        if !event_time {
            // Processing time first, so the batch joins the windows of now.
            self.advance(now_ms);
        }
        let tracked = !batch.ids.is_empty();
        let mut ids = batch.ids.into_iter();
        for value in batch.values {
            let tuple_ids = if tracked {
                ids.next().unwrap_or_default()
            } else {
                TupleIds::Untracked
            };
            self.io.outcome.executed += 1;
            if self.ended && self.core.is_count() {
                // A replay after the end of the input: count windows have let go of their
                // partial contents, which never fire; so does this tuple.
                self.io.stats.late += 1;
                self.io.out.ack_ids(&tuple_ids, 0);
                continue;
            }
            let ts = match self.input.time(&value) {
                Ok(ts) => ts,
                Err(err) => {
                    self.io.out.fail_ids(&tuple_ids);
                    self.io.outcome.note_error(err);
                    continue;
                }
            };
            if event_time {
                self.seen_ts = self.seen_ts.max(ts);
            }
            let key = self.input.window_key(&value);
            // Taken (or, if late, acked at once): either way it no longer needs to hold its
            // spout's watermark.
            self.io.out.park_ids(&tuple_ids);
            self.mode
                .ingest(&mut self.io, &mut self.core, key, ts, value, tuple_ids);
        }
        self.sweep_keys();
        Ok(self.take_outcome())
    }

    fn tick(&mut self, inputs_waiting: bool, now_ms: i64) -> Result<(), TaskError> {
        if inputs_waiting && !self.core.is_event_time() {
            // Queued batches are not idleness: processing time waits for them to be executed.
            return Ok(());
        }
        self.advance(now_ms);
        self.mode.sweep(self.core.clock());
        self.take_error()
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        self.end();
        self.take_error()
    }

    fn on_mark(
        &mut self,
        source: TaskId,
        input: u16,
        mark: Mark,
        now_ms: i64,
    ) -> Result<(), TaskError> {
        if self.input.valve.mark((source, input), mark).is_some() {
            self.advance(now_ms);
        }
        self.take_error()
    }

    fn input_ended(&mut self, source: TaskId, now_ms: i64) -> Result<(), TaskError> {
        // Results go out before the end-of-data marker this task passes on, and held tuples
        // are acked while their trees are still waited on.
        if self.input.valve.end(source).is_some() {
            self.advance(now_ms);
        }
        self.take_error()
    }

    fn window_stats(&self) -> Option<WindowStats> {
        Some(self.io.stats)
    }

    fn defers(&self, source: TaskId) -> bool {
        self.input.defers(source, self.core.open_windows())
    }
}

impl<M: WindowMode> TaskOutput for WindowedTask<M> {
    fn take_ready(&mut self, out: &mut Vec<(LinkId, Payload)>) {
        self.io.out.take_ready(out);
        if let Some(late) = &mut self.io.late {
            late.take_ready(out);
        }
    }
    fn flush(&mut self) {
        self.io.out.flush();
        if let Some(late) = &mut self.io.late {
            late.flush();
        }
    }
    fn take_acks(&mut self, out: &mut Vec<AckOp>) {
        self.io.out.take_acks(out);
        if let Some(late) = &mut self.io.late {
            late.take_acks(out);
        }
    }
    fn take_event_time(&mut self) -> Option<i64> {
        let seen = std::mem::replace(&mut self.seen_ts, i64::MIN);
        (seen != i64::MIN).then_some(seen)
    }
    fn take_marks(&mut self, _now_ms: i64, out: &mut Vec<Mark>) {
        // The window's watermark, forwarded after the results it fired.
        self.input.valve.take_marks(out);
    }
    fn emitted(&self) -> u64 {
        self.io.out.emitted() + self.io.late.as_ref().map_or(0, Emitter::emitted)
    }
}

/// What a whole window holds: the arrival numbers of its tuples, and how often it fired.
#[derive(Default)]
pub(crate) struct Held {
    ids: Vec<u64>,
    firing: u32,
}

/// The previous firing of a key, for a view's new and expired tuples.
#[derive(Clone)]
struct Prev<In> {
    ids: Vec<u64>,
    values: Vec<In>,
    /// Clock time after which no later window of the key can follow this one.
    expires_at: i64,
    /// When it was kept, for forgetting the oldest.
    seq: u64,
}

/// The previous firings kept, by key: those of time windows expire on the clock; count
/// windows have no clock, so at most `cap` are kept, the most recent (a key that fires again
/// after its copy was dropped sees no expired tuples).
#[derive(Clone)]
struct Previous<In> {
    by_key: FxHashMap<u64, Prev<In>>,
    /// (key, seq) in the order they were kept; entries whose seq is stale are skipped.
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
    cap: usize,
}

impl<In> Previous<In> {
    fn new() -> Self {
        Previous {
            by_key: FxHashMap::default(),
            order: VecDeque::new(),
            next_seq: 0,
            cap: usize::MAX,
        }
    }

    fn take(&mut self, key: &u64) -> Option<Prev<In>> {
        self.by_key.remove(key)
    }

    fn keep(&mut self, key: u64, ids: Vec<u64>, values: Vec<In>, expires_at: i64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_key.insert(
            key,
            Prev {
                ids,
                values,
                expires_at,
                seq,
            },
        );
        self.order.push_back((key, seq));
        while self.by_key.len() > self.cap {
            let Some((k, s)) = self.order.pop_front() else {
                break;
            };
            if self.by_key.get(&k).is_some_and(|p| p.seq == s) {
                self.by_key.remove(&k);
            }
        }
        if self.order.len() > self.by_key.len().saturating_mul(2) + 16 {
            let by_key = &self.by_key;
            self.order
                .retain(|(k, s)| by_key.get(k).is_some_and(|p| p.seq == *s));
        }
    }

    fn expire(&mut self, clock: i64) {
        self.by_key.retain(|_, p| p.expires_at > clock);
    }
}

/// Whole windows: a window holds its tuples (arrival numbers into a shared store), and a
/// [`WindowedBolt`] sees them with the new and expired ones since the key's previous firing.
#[derive(Clone)]
pub(crate) struct Whole<B: WindowedBolt> {
    bolt: B,
    store: Store<B::In>,
    prev: Previous<B::In>,
    /// How long after a window's end the next window of its key may end.
    horizon: i64,
}

impl<B: WindowedBolt> Whole<B> {
    pub(crate) fn new(bolt: B, window: &Window) -> Self {
        Whole {
            bolt,
            store: Store::new(),
            prev: Previous::new(),
            horizon: horizon(window),
        }
    }
}

/// How long after a window's end the next window of its key may end: the slide (or size) of
/// time windows, the gap of sessions; count windows have no end.
pub(crate) fn horizon(window: &Window) -> i64 {
    window.step_ms().unwrap_or(i64::MAX)
}

struct WholeHost<'a, B: WindowedBolt> {
    mode: &'a mut Whole<B>,
    io: &'a mut WindowIo<B::In, B::Out>,
    /// The element being inserted.
    current: Option<u64>,
}

impl<B: WindowedBolt> WindowHost<u64, Held> for WholeHost<'_, B> {
    fn add(&mut self, _key: &u64, contents: &mut Held) {
        if let Some(id) = self.current {
            contents.ids.push(id);
            self.mode.store.hold(id);
        }
    }

    fn merge(&mut self, _key: &u64, into: &mut Held, from: Held) {
        into.ids.extend(from.ids);
        // Arrival numbers grow with arrival, so this restores arrival order.
        into.ids.sort_unstable();
        into.firing = into.firing.max(from.firing);
    }

    fn fire(&mut self, key: &u64, bounds: Option<Bounds>, held: &mut Held) {
        self.io.stats.fires += 1;
        let firing = held.firing;
        held.firing += 1;
        let contents = &held.ids;
        let Whole {
            bolt,
            store,
            prev,
            horizon,
        } = &mut *self.mode;
        let previous = prev.take(key);
        store.anchored(
            contents,
            &mut self.io.out,
            &mut self.io.outcome,
            |store, out| {
                let value = |id: &u64| store.elements.get(id).map(|e| &e.value);
                let tuples: Vec<&B::In> = contents.iter().filter_map(value).collect();
                let (new, expired) = match &previous {
                    None => (tuples.clone(), Vec::new()),
                    Some(p) => (
                        contents
                            .iter()
                            .filter(|id| p.ids.binary_search(id).is_err())
                            .filter_map(value)
                            .collect(),
                        p.ids
                            .iter()
                            .zip(&p.values)
                            .filter(|(id, _)| contents.binary_search(id).is_err())
                            .map(|(_, v)| v)
                            .collect(),
                    ),
                };
                let view = WindowView {
                    info: WindowInfo {
                        bounds,
                        count: tuples.len() as u64,
                        firing,
                    },
                    tuples,
                    new,
                    expired,
                };
                bolt.on_window(&view, out)
            },
        );
        let (ids, values): (Vec<u64>, Vec<B::In>) = contents
            .iter()
            .filter_map(|id| store.elements.get(id).map(|e| (*id, e.value.clone())))
            .unzip();
        let expires_at = bounds.map_or(i64::MAX, |b| b.end.saturating_add(*horizon));
        prev.keep(*key, ids, values, expires_at);
    }

    fn purge(&mut self, _key: &u64, contents: Held) {
        for id in contents.ids {
            self.mode.store.release(id, &mut self.io.out);
        }
    }

    fn evict(&mut self, _key: &u64, contents: &mut Held, keep: usize) {
        if contents.ids.len() > keep {
            let n = contents.ids.len() - keep;
            for id in contents.ids.drain(..n) {
                self.mode.store.release(id, &mut self.io.out);
            }
        }
    }

    fn late(&mut self, _key: &u64) {
        if let Some(e) = self
            .current
            .and_then(|id| self.mode.store.elements.remove(&id))
        {
            self.io.late(&e.value, &e.ids, e.ack_val);
        }
    }
}

impl<B: WindowedBolt> WindowMode for Whole<B> {
    type In = B::In;
    type Out = B::Out;
    type Contents = Held;

    fn prepare(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.bolt.prepare(ctx)
    }

    fn ingest(
        &mut self,
        io: &mut WindowIo<B::In, B::Out>,
        core: &mut WindowCore<u64, Held>,
        key: u64,
        ts: i64,
        value: B::In,
        ids: TupleIds,
    ) {
        let id = self.store.insert(value, ids);
        let mut host = WholeHost {
            mode: self,
            io,
            current: Some(id),
        };
        core.insert(key, ts, &mut host);
        self.store.ack_unheld(id, &mut io.out);
    }

    fn with_host(&mut self, io: &mut WindowIo<B::In, B::Out>, f: &mut WithHost<'_, Held>) {
        f(&mut WholeHost {
            mode: self,
            io,
            current: None,
        });
    }

    fn limit_previous(&mut self, cap: usize) {
        self.prev.cap = cap;
    }

    fn previous_keys(&self, live: &mut FxHashSet<u64>) {
        live.extend(self.prev.by_key.keys());
    }

    /// Forgets previous firings no later window of their key can follow.
    fn sweep(&mut self, clock: i64) {
        self.prev.expire(clock);
    }
}

/// What an aggregated window holds: its accumulator and, when tracked, which tuples it took.
pub(crate) struct Agg<Acc> {
    acc: Acc,
    count: u64,
    firing: u32,
    ids: Vec<u64>,
}

impl<Acc: Default> Default for Agg<Acc> {
    fn default() -> Self {
        Agg {
            acc: Acc::default(),
            count: 0,
            firing: 0,
            ids: Vec::new(),
        }
    }
}

/// Incremental aggregation: a window holds an accumulator, plus the ack-tree ids (not the
/// values) of its tuples under a tracked guarantee.
#[derive(Clone)]
pub(crate) struct Aggregate<A: WindowAggregate> {
    agg: A,
    store: Store<()>,
}

impl<A: WindowAggregate> Aggregate<A> {
    pub(crate) fn new(agg: A) -> Self {
        Aggregate {
            agg,
            store: Store::new(),
        }
    }
}

struct AggHost<'a, 'v, A: WindowAggregate> {
    mode: &'a mut Aggregate<A>,
    io: &'a mut WindowIo<A::In, A::Out>,
    /// The element being inserted, and its id in the store when tracked.
    current: Option<(&'v A::In, Option<u64>)>,
}

impl<A: WindowAggregate> WindowHost<u64, Agg<A::Acc>> for AggHost<'_, '_, A> {
    fn add(&mut self, _key: &u64, contents: &mut Agg<A::Acc>) {
        let Some((value, id)) = self.current else {
            return;
        };
        self.mode.agg.add(&mut contents.acc, value);
        contents.count += 1;
        if let Some(id) = id {
            contents.ids.push(id);
            self.mode.store.hold(id);
        }
    }

    fn merge(&mut self, _key: &u64, into: &mut Agg<A::Acc>, from: Agg<A::Acc>) {
        self.mode.agg.merge(&mut into.acc, from.acc);
        into.count += from.count;
        into.firing = into.firing.max(from.firing);
        into.ids.extend(from.ids);
        into.ids.sort_unstable();
    }

    fn fire(&mut self, _key: &u64, bounds: Option<Bounds>, contents: &mut Agg<A::Acc>) {
        self.io.stats.fires += 1;
        let info = WindowInfo {
            bounds,
            count: contents.count,
            firing: contents.firing,
        };
        contents.firing += 1;
        let Aggregate { agg, store } = &mut *self.mode;
        let acc = &contents.acc;
        store.anchored(
            &contents.ids,
            &mut self.io.out,
            &mut self.io.outcome,
            |_, out| agg.emit(acc, &info, out),
        );
    }

    fn purge(&mut self, _key: &u64, contents: Agg<A::Acc>) {
        for id in contents.ids {
            self.mode.store.release(id, &mut self.io.out);
        }
    }

    fn evict(&mut self, _key: &u64, _contents: &mut Agg<A::Acc>, _keep: usize) {
        // build() refuses sliding count windows for aggregates: an accumulator cannot give
        // elements back.
    }

    fn late(&mut self, _key: &u64) {
        let Some((value, id)) = self.current else {
            return;
        };
        match id.and_then(|id| self.mode.store.elements.remove(&id)) {
            Some(e) => self.io.late(value, &e.ids, e.ack_val),
            None => self.io.late(value, &TupleIds::Untracked, 0),
        }
    }
}

impl<A: WindowAggregate> WindowMode for Aggregate<A> {
    type In = A::In;
    type Out = A::Out;
    type Contents = Agg<A::Acc>;

    fn prepare(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.agg.prepare(ctx)
    }

    fn ingest(
        &mut self,
        io: &mut WindowIo<A::In, A::Out>,
        core: &mut WindowCore<u64, Agg<A::Acc>>,
        key: u64,
        ts: i64,
        value: A::In,
        ids: TupleIds,
    ) {
        let id = ids.is_tracked().then(|| self.store.insert((), ids));
        let mut host = AggHost {
            mode: self,
            io,
            current: Some((&value, id)),
        };
        core.insert(key, ts, &mut host);
        if let Some(id) = id {
            self.store.ack_unheld(id, &mut io.out);
        }
    }

    fn with_host(&mut self, io: &mut WindowIo<A::In, A::Out>, f: &mut WithHost<'_, Agg<A::Acc>>) {
        f(&mut AggHost {
            mode: self,
            io,
            current: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_windows_keep_the_most_recent_previous_firings_only() {
        let mut p: Previous<u64> = Previous::new();
        p.cap = 3;
        for key in 0..10u64 {
            p.keep(key, vec![key], vec![key], i64::MAX);
        }
        assert_eq!(p.by_key.len(), 3);
        assert!(
            p.take(&9).is_some() && p.take(&6).is_none(),
            "the oldest went first"
        );
        // A key that fires again and again neither grows the map nor the order.
        for _ in 0..1000 {
            p.keep(1, vec![1], vec![1], i64::MAX);
        }
        assert!(p.by_key.len() <= 3);
        assert!(
            p.order.len() <= 2 * 3 + 16,
            "{} order entries",
            p.order.len()
        );
        p.expire(0);
        assert!(
            p.by_key.len() <= 3,
            "count windows never expire on the clock"
        );
    }
}
