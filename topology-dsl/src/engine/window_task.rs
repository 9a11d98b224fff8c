//! The typed tasks behind windowed bolts: [`WindowTask`] (whole windows) and [`AggregateTask`]
//! (incremental aggregation). Both read key and time from their input the same way
//! ([`WindowInput`]) and drive a [`WindowCore`]; they differ in what a window holds.
//!
//! Acking: a tuple is acked when no window holds it any more (after the firing of the last
//! window that held it, or at once when it is late), with the edges of the results anchored to
//! it; a failed `on_window` or `emit` fails the trees of the window's tuples.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustc_hash::FxHashMap;

use crate::component::{TaskContext, TaskError};
use crate::emitter::Emitter;
use crate::engine::input::InputAdapter;
use crate::engine::{
    AckOp, BatchOutcome, BoltTask, EngineError, LinkId, Payload, TaskOutput, WindowStats,
};
use crate::ids::TaskId;
use crate::key_hasher::KeyHasher;
use crate::record::Record;
use crate::tuple::TupleIds;
use crate::window::{
    Bounds, Watermarks, WindowAggregate, WindowCore, WindowHost, WindowInfo, WindowView,
    WindowedBolt,
};

/// Milliseconds since the epoch: processing time.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How a windowed task reads key and time from its input, and its watermark.
pub(crate) struct WindowInput<In> {
    /// Fields of the key (a fields grouping); empty for unkeyed windows.
    key_fields: Box<[usize]>,
    /// The event-time field, for event-time windows.
    time_field: Option<usize>,
    watermarks: Option<Watermarks>,
    /// How far an upstream task may run ahead of the watermark before its batches wait.
    max_drift_ms: i64,
    _in: PhantomData<fn(In)>,
}

impl<In: Record> WindowInput<In> {
    pub(crate) fn new(
        key_fields: Box<[usize]>,
        time_field: Option<usize>,
        watermarks: Option<Watermarks>,
        max_drift_ms: i64,
    ) -> Self {
        WindowInput {
            key_fields,
            time_field,
            watermarks,
            max_drift_ms,
            _in: PhantomData,
        }
    }

    fn defers(&self, source: TaskId) -> bool {
        self.watermarks
            .as_ref()
            .is_some_and(|w| w.is_ahead(source, self.max_drift_ms))
    }

    #[inline]
    fn key(&self, value: &In) -> u64 {
        if self.key_fields.is_empty() {
            return 0;
        }
        let mut h = KeyHasher::new();
        for &f in self.key_fields.iter() {
            value.hash_field(f, &mut h);
        }
        h.finish()
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
}

/// A tuple held by windows.
struct Element<V> {
    value: V,
    ids: TupleIds,
    ack_val: u64,
    refs: u32,
}

/// The tuples windows hold, by arrival number.
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
            },
        );
        id
    }

    /// One window less holds `id`; acks it when none does.
    fn release<O: Record>(&mut self, id: u64, out: &mut Emitter<O>) {
        if let Some(e) = self.elements.get_mut(&id) {
            e.refs = e.refs.saturating_sub(1);
            if e.refs == 0 {
                if let Some(e) = self.elements.remove(&id) {
                    out.ack_ids(&e.ids, e.ack_val);
                }
            }
        }
    }

    /// Acks `id` if no window took it.
    fn release_if_unheld<O: Record>(&mut self, id: u64, out: &mut Emitter<O>) {
        if self.elements.get(&id).is_some_and(|e| e.refs == 0) {
            if let Some(e) = self.elements.remove(&id) {
                out.ack_ids(&e.ids, e.ack_val);
            }
        }
    }
}

/// Sends a late tuple to the late stream (anchored to it) if there is one; returns the edges to
/// fold into its ack.
fn send_late<In: Record>(late: Option<&mut Emitter<In>>, value: &In, ids: &TupleIds) -> u64 {
    let Some(late) = late else {
        return 0;
    };
    let mut xors = Vec::new();
    late.begin_scope(std::iter::once(ids));
    late.emit(value.clone());
    late.end_scope(&mut xors);
    xors.first().copied().unwrap_or(0)
}

fn note_error(outcome: &mut BatchOutcome, err: TaskError) {
    outcome.failed += 1;
    if outcome.first_error.is_none() {
        outcome.first_error = Some(err);
    }
}

/// The previous firing of a key, for a view's new and expired tuples.
struct Prev<In> {
    bounds: Option<Bounds>,
    firing: u32,
    ids: Vec<u64>,
    values: Vec<In>,
    /// Clock time after which no later window of the key can follow this one.
    expires_at: i64,
}

/// The task behind a [`WindowedBolt`]: windows hold their tuples.
pub(crate) struct WindowTask<B: WindowedBolt> {
    bolt: B,
    context: TaskContext,
    inputs: Arc<[Arc<dyn InputAdapter<B::In>>]>,
    out: Emitter<B::Out>,
    late: Option<Emitter<B::In>>,
    core: WindowCore<u64, Vec<u64>>,
    input: WindowInput<B::In>,
    store: Store<B::In>,
    prev: FxHashMap<u64, Prev<B::In>>,
    /// How long after a window's end the next window of its key may fire (slide or gap).
    horizon: i64,
    stats: WindowStats,
}

impl<B: WindowedBolt> WindowTask<B> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        bolt: B,
        context: TaskContext,
        inputs: Arc<[Arc<dyn InputAdapter<B::In>>]>,
        out: Emitter<B::Out>,
        late: Option<Emitter<B::In>>,
        core: WindowCore<u64, Vec<u64>>,
        input: WindowInput<B::In>,
        horizon: i64,
    ) -> Self {
        WindowTask {
            bolt,
            context,
            inputs,
            out,
            late,
            core,
            input,
            store: Store::new(),
            prev: FxHashMap::default(),
            horizon,
            stats: WindowStats::new(),
        }
    }
}

/// What the core calls back while a [`WindowTask`] runs it.
struct WholeHost<'a, B: WindowedBolt> {
    bolt: &'a mut B,
    out: &'a mut Emitter<B::Out>,
    late: Option<&'a mut Emitter<B::In>>,
    store: &'a mut Store<B::In>,
    prev: &'a mut FxHashMap<u64, Prev<B::In>>,
    stats: &'a mut WindowStats,
    outcome: &'a mut BatchOutcome,
    current: u64,
    horizon: i64,
}

impl<B: WindowedBolt> WindowHost<u64, Vec<u64>> for WholeHost<'_, B> {
    fn add(&mut self, _key: &u64, contents: &mut Vec<u64>) {
        contents.push(self.current);
        if let Some(e) = self.store.elements.get_mut(&self.current) {
            e.refs += 1;
        }
    }

    fn merge(&mut self, _key: &u64, into: &mut Vec<u64>, from: Vec<u64>) {
        into.extend(from);
        // Arrival numbers grow with arrival, so this restores arrival order.
        into.sort_unstable();
    }

    fn fire(&mut self, key: &u64, bounds: Option<Bounds>, contents: &mut Vec<u64>) {
        self.stats.fires += 1;
        let prev = self.prev.remove(key);
        let firing = match &prev {
            Some(p) if p.bounds == bounds && bounds.is_some() => p.firing + 1,
            _ => 0,
        };
        let result = {
            let store = &*self.store;
            let tuples: Vec<&B::In> = contents
                .iter()
                .filter_map(|id| store.elements.get(id).map(|e| &e.value))
                .collect();
            let (new, expired) = match &prev {
                None => (tuples.clone(), Vec::new()),
                Some(p) => {
                    let new = contents
                        .iter()
                        .filter(|id| p.ids.binary_search(id).is_err())
                        .filter_map(|id| store.elements.get(id).map(|e| &e.value))
                        .collect();
                    let expired = p
                        .ids
                        .iter()
                        .zip(&p.values)
                        .filter(|(id, _)| contents.binary_search(id).is_err())
                        .map(|(_, v)| v)
                        .collect();
                    (new, expired)
                }
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
            self.out.begin_scope(
                contents
                    .iter()
                    .filter_map(|id| store.elements.get(id).map(|e| &e.ids)),
            );
            self.bolt.on_window(&view, self.out)
        };
        let mut xors = Vec::new();
        self.out.end_scope(&mut xors);
        let held: Vec<u64> = contents
            .iter()
            .copied()
            .filter(|id| self.store.elements.contains_key(id))
            .collect();
        for (id, x) in held.iter().zip(xors) {
            if let Some(e) = self.store.elements.get_mut(id) {
                e.ack_val ^= x;
            }
        }
        if let Err(err) = result {
            note_error(self.outcome, err);
            for id in &held {
                if let Some(e) = self.store.elements.get(id) {
                    self.out.fail_ids(&e.ids);
                }
            }
        }
        let values = held
            .iter()
            .filter_map(|id| self.store.elements.get(id).map(|e| e.value.clone()))
            .collect();
        let expires_at = bounds.map_or(i64::MAX, |b| b.end.saturating_add(self.horizon));
        self.prev.insert(
            *key,
            Prev {
                bounds,
                firing,
                ids: held,
                values,
                expires_at,
            },
        );
    }

    fn purge(&mut self, _key: &u64, contents: Vec<u64>) {
        for id in contents {
            self.store.release(id, self.out);
        }
    }

    fn evict(&mut self, _key: &u64, contents: &mut Vec<u64>, keep: usize) {
        if contents.len() > keep {
            let n = contents.len() - keep;
            for id in contents.drain(..n) {
                self.store.release(id, self.out);
            }
        }
    }

    fn late(&mut self, _key: &u64) {
        self.stats.late += 1;
        if let Some(e) = self.store.elements.remove(&self.current) {
            let x = send_late(self.late.as_deref_mut(), &e.value, &e.ids);
            self.out.ack_ids(&e.ids, e.ack_val ^ x);
        }
    }
}

/// Brings the core's clock to processing time `now`: the watermark from the inputs (event time)
/// or the processing time itself, firing what is due.
fn advance_clock<In: Record, C: Default, H: WindowHost<u64, C>>(
    core: &mut WindowCore<u64, C>,
    input: &mut WindowInput<In>,
    now: i64,
    host: &mut H,
) {
    if core.is_event_time() {
        if let Some(w) = input.watermarks.as_mut() {
            core.advance_watermark(w.update(now), host);
        }
    } else if !core.is_count() {
        core.advance_processing_time(now, host);
    }
}

/// The end of the input: every time window fires.
fn end_clock<C: Default, H: WindowHost<u64, C>>(core: &mut WindowCore<u64, C>, host: &mut H) {
    core.advance_watermark(i64::MAX, host);
    core.advance_processing_time(i64::MAX, host);
}

fn record_time(stats: &mut WindowStats, now: i64, ts: i64) {
    let skew = now.saturating_sub(ts);
    stats.skew_ms = skew;
    stats.skew_max_ms = stats.skew_max_ms.max(skew);
}

macro_rules! whole_host {
    ($task:ident, $outcome:expr, $current:expr) => {
        WholeHost {
            bolt: &mut $task.bolt,
            out: &mut $task.out,
            late: $task.late.as_mut(),
            store: &mut $task.store,
            prev: &mut $task.prev,
            stats: &mut $task.stats,
            outcome: $outcome,
            current: $current,
            horizon: $task.horizon,
        }
    };
}

impl<B: WindowedBolt> WindowTask<B> {
    fn after(&mut self) {
        self.stats.open_windows = self.core.open_windows() as u64;
        self.stats.watermark = self.core.watermark();
    }

    /// Forgets previous firings no later window of their key can follow.
    fn sweep_prev(&mut self) {
        let clock = if self.core.is_event_time() {
            self.core.watermark()
        } else {
            self.core.processing_time()
        };
        self.prev.retain(|_, p| p.expires_at > clock);
    }
}

impl<B: WindowedBolt> BoltTask for WindowTask<B> {
    fn prepare(&mut self) -> Result<(), TaskError> {
        self.bolt.prepare(&self.context)
    }

    fn execute_batch(
        &mut self,
        input: u16,
        source: TaskId,
        payload: Payload,
    ) -> Result<BatchOutcome, EngineError> {
        let adapter = self
            .inputs
            .get(usize::from(input))
            .ok_or(EngineError::NoSuchInput(input))?;
        let batch = adapter.adapt(payload)?;
        let now = now_ms();
        let mut outcome = BatchOutcome::default();
        if !self.core.is_event_time() {
            let mut host = whole_host!(self, &mut outcome, 0);
            advance_clock(&mut self.core, &mut self.input, now, &mut host);
        }
        let tracked = !batch.ids.is_empty();
        let mut ids = batch.ids.into_iter();
        let mut max_ts = i64::MIN;
        for value in batch.values {
            let tuple_ids = if tracked {
                ids.next().unwrap_or_default()
            } else {
                TupleIds::Untracked
            };
            outcome.executed += 1;
            let ts = match self.input.time(&value) {
                Ok(ts) => ts,
                Err(err) => {
                    self.out.fail_ids(&tuple_ids);
                    note_error(&mut outcome, err);
                    continue;
                }
            };
            if self.core.is_event_time() {
                record_time(&mut self.stats, now, ts);
                max_ts = max_ts.max(ts);
            }
            let key = self.input.key(&value);
            let id = self.store.insert(value, tuple_ids);
            let mut host = whole_host!(self, &mut outcome, id);
            self.core.insert(key, ts, &mut host);
            self.store.release_if_unheld(id, &mut self.out);
        }
        if let Some(w) = self.input.watermarks.as_mut() {
            if max_ts != i64::MIN {
                w.observe(source, max_ts, now);
            }
        }
        if self.core.is_event_time() {
            let mut host = whole_host!(self, &mut outcome, 0);
            advance_clock(&mut self.core, &mut self.input, now, &mut host);
        }
        self.after();
        Ok(outcome)
    }

    fn tick(&mut self) -> Result<(), TaskError> {
        let mut outcome = BatchOutcome::default();
        let mut host = whole_host!(self, &mut outcome, 0);
        advance_clock(&mut self.core, &mut self.input, now_ms(), &mut host);
        self.sweep_prev();
        self.after();
        outcome.first_error.map_or(Ok(()), Err)
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        let mut outcome = BatchOutcome::default();
        let mut host = whole_host!(self, &mut outcome, 0);
        end_clock(&mut self.core, &mut host);
        self.after();
        outcome.first_error.map_or(Ok(()), Err)
    }

    fn input_ended(&mut self, source: TaskId) -> Result<(), TaskError> {
        if let Some(w) = self.input.watermarks.as_mut() {
            w.end(source);
        }
        let mut outcome = BatchOutcome::default();
        let mut host = whole_host!(self, &mut outcome, 0);
        advance_clock(&mut self.core, &mut self.input, now_ms(), &mut host);
        self.after();
        outcome.first_error.map_or(Ok(()), Err)
    }

    fn window_stats(&self) -> Option<WindowStats> {
        Some(self.stats)
    }

    fn defers(&self, source: TaskId) -> bool {
        self.input.defers(source)
    }
}

impl<B: WindowedBolt> TaskOutput for WindowTask<B> {
    fn take_ready(&mut self, out: &mut Vec<(LinkId, Payload)>) {
        self.out.take_ready(out);
        if let Some(late) = &mut self.late {
            late.take_ready(out);
        }
    }
    fn flush(&mut self) {
        self.out.flush();
        if let Some(late) = &mut self.late {
            late.flush();
        }
    }
    fn take_acks(&mut self, out: &mut Vec<AckOp>) {
        self.out.take_acks(out);
        if let Some(late) = &mut self.late {
            late.take_acks(out);
        }
    }
    fn emitted(&self) -> u64 {
        self.out.emitted() + self.late.as_ref().map_or(0, Emitter::emitted)
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

/// The task behind a [`WindowAggregate`]: windows hold accumulators.
pub(crate) struct AggregateTask<A: WindowAggregate> {
    agg: A,
    context: TaskContext,
    inputs: Arc<[Arc<dyn InputAdapter<A::In>>]>,
    out: Emitter<A::Out>,
    late: Option<Emitter<A::In>>,
    core: WindowCore<u64, Agg<A::Acc>>,
    input: WindowInput<A::In>,
    /// The ack-tree ids of tuples windows hold (tracked guarantees only).
    store: Store<()>,
    stats: WindowStats,
}

impl<A: WindowAggregate> AggregateTask<A> {
    pub(crate) fn new(
        agg: A,
        context: TaskContext,
        inputs: Arc<[Arc<dyn InputAdapter<A::In>>]>,
        out: Emitter<A::Out>,
        late: Option<Emitter<A::In>>,
        core: WindowCore<u64, Agg<A::Acc>>,
        input: WindowInput<A::In>,
    ) -> Self {
        AggregateTask {
            agg,
            context,
            inputs,
            out,
            late,
            core,
            input,
            store: Store::new(),
            stats: WindowStats::new(),
        }
    }
}

/// What the core calls back while an [`AggregateTask`] runs it.
struct AggHost<'a, A: WindowAggregate> {
    agg: &'a mut A,
    out: &'a mut Emitter<A::Out>,
    late: Option<&'a mut Emitter<A::In>>,
    store: &'a mut Store<()>,
    stats: &'a mut WindowStats,
    outcome: &'a mut BatchOutcome,
    /// The element being inserted, and its id in `store` when tracked.
    current: Option<(&'a A::In, Option<u64>)>,
}

impl<A: WindowAggregate> WindowHost<u64, Agg<A::Acc>> for AggHost<'_, A> {
    fn add(&mut self, _key: &u64, contents: &mut Agg<A::Acc>) {
        let Some((value, id)) = self.current else {
            return;
        };
        self.agg.add(&mut contents.acc, value);
        contents.count += 1;
        if let Some(id) = id {
            contents.ids.push(id);
            if let Some(e) = self.store.elements.get_mut(&id) {
                e.refs += 1;
            }
        }
    }

    fn merge(&mut self, _key: &u64, into: &mut Agg<A::Acc>, from: Agg<A::Acc>) {
        self.agg.merge(&mut into.acc, from.acc);
        into.count += from.count;
        into.firing = into.firing.max(from.firing);
        into.ids.extend(from.ids);
        into.ids.sort_unstable();
    }

    fn fire(&mut self, _key: &u64, bounds: Option<Bounds>, contents: &mut Agg<A::Acc>) {
        self.stats.fires += 1;
        let info = WindowInfo {
            bounds,
            count: contents.count,
            firing: contents.firing,
        };
        contents.firing += 1;
        let store = &*self.store;
        self.out.begin_scope(
            contents
                .ids
                .iter()
                .filter_map(|id| store.elements.get(id).map(|e| &e.ids)),
        );
        let result = self.agg.emit(&contents.acc, &info, self.out);
        let mut xors = Vec::new();
        self.out.end_scope(&mut xors);
        let held: Vec<u64> = contents
            .ids
            .iter()
            .copied()
            .filter(|id| self.store.elements.contains_key(id))
            .collect();
        for (id, x) in held.iter().zip(xors) {
            if let Some(e) = self.store.elements.get_mut(id) {
                e.ack_val ^= x;
            }
        }
        if let Err(err) = result {
            note_error(self.outcome, err);
            for id in &contents.ids {
                if let Some(e) = self.store.elements.get(id) {
                    self.out.fail_ids(&e.ids);
                }
            }
        }
    }

    fn purge(&mut self, _key: &u64, contents: Agg<A::Acc>) {
        for id in contents.ids {
            self.store.release(id, self.out);
        }
    }

    fn evict(&mut self, _key: &u64, _contents: &mut Agg<A::Acc>, _keep: usize) {
        // build() refuses sliding count windows for aggregates: an accumulator cannot give
        // elements back.
    }

    fn late(&mut self, _key: &u64) {
        self.stats.late += 1;
        let Some((value, id)) = self.current else {
            return;
        };
        match id.and_then(|id| self.store.elements.remove(&id)) {
            Some(e) => {
                let x = send_late(self.late.as_deref_mut(), value, &e.ids);
                self.out.ack_ids(&e.ids, e.ack_val ^ x);
            }
            None => {
                send_late(self.late.as_deref_mut(), value, &TupleIds::Untracked);
            }
        }
    }
}

macro_rules! agg_host {
    ($task:ident, $outcome:expr, $current:expr) => {
        AggHost {
            agg: &mut $task.agg,
            out: &mut $task.out,
            late: $task.late.as_mut(),
            store: &mut $task.store,
            stats: &mut $task.stats,
            outcome: $outcome,
            current: $current,
        }
    };
}

impl<A: WindowAggregate> AggregateTask<A> {
    fn after(&mut self) {
        self.stats.open_windows = self.core.open_windows() as u64;
        self.stats.watermark = self.core.watermark();
    }
}

impl<A: WindowAggregate> BoltTask for AggregateTask<A> {
    fn prepare(&mut self) -> Result<(), TaskError> {
        self.agg.prepare(&self.context)
    }

    fn execute_batch(
        &mut self,
        input: u16,
        source: TaskId,
        payload: Payload,
    ) -> Result<BatchOutcome, EngineError> {
        let adapter = self
            .inputs
            .get(usize::from(input))
            .ok_or(EngineError::NoSuchInput(input))?;
        let batch = adapter.adapt(payload)?;
        let now = now_ms();
        let mut outcome = BatchOutcome::default();
        if !self.core.is_event_time() {
            let mut host = agg_host!(self, &mut outcome, None);
            advance_clock(&mut self.core, &mut self.input, now, &mut host);
        }
        let tracked = !batch.ids.is_empty();
        let mut ids = batch.ids.into_iter();
        let mut max_ts = i64::MIN;
        for value in &batch.values {
            let tuple_ids = if tracked {
                ids.next().unwrap_or_default()
            } else {
                TupleIds::Untracked
            };
            outcome.executed += 1;
            let ts = match self.input.time(value) {
                Ok(ts) => ts,
                Err(err) => {
                    self.out.fail_ids(&tuple_ids);
                    note_error(&mut outcome, err);
                    continue;
                }
            };
            if self.core.is_event_time() {
                record_time(&mut self.stats, now, ts);
                max_ts = max_ts.max(ts);
            }
            let key = self.input.key(value);
            let id = tracked.then(|| self.store.insert((), tuple_ids));
            let mut host = agg_host!(self, &mut outcome, Some((value, id)));
            self.core.insert(key, ts, &mut host);
            if let Some(id) = id {
                self.store.release_if_unheld(id, &mut self.out);
            }
        }
        if let Some(w) = self.input.watermarks.as_mut() {
            if max_ts != i64::MIN {
                w.observe(source, max_ts, now);
            }
        }
        if self.core.is_event_time() {
            let mut host = agg_host!(self, &mut outcome, None);
            advance_clock(&mut self.core, &mut self.input, now, &mut host);
        }
        self.after();
        Ok(outcome)
    }

    fn tick(&mut self) -> Result<(), TaskError> {
        let mut outcome = BatchOutcome::default();
        let mut host = agg_host!(self, &mut outcome, None);
        advance_clock(&mut self.core, &mut self.input, now_ms(), &mut host);
        self.after();
        outcome.first_error.map_or(Ok(()), Err)
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        let mut outcome = BatchOutcome::default();
        let mut host = agg_host!(self, &mut outcome, None);
        end_clock(&mut self.core, &mut host);
        self.after();
        outcome.first_error.map_or(Ok(()), Err)
    }

    fn input_ended(&mut self, source: TaskId) -> Result<(), TaskError> {
        if let Some(w) = self.input.watermarks.as_mut() {
            w.end(source);
        }
        let mut outcome = BatchOutcome::default();
        let mut host = agg_host!(self, &mut outcome, None);
        advance_clock(&mut self.core, &mut self.input, now_ms(), &mut host);
        self.after();
        outcome.first_error.map_or(Ok(()), Err)
    }

    fn window_stats(&self) -> Option<WindowStats> {
        Some(self.stats)
    }

    fn defers(&self, source: TaskId) -> bool {
        self.input.defers(source)
    }
}

impl<A: WindowAggregate> TaskOutput for AggregateTask<A> {
    fn take_ready(&mut self, out: &mut Vec<(LinkId, Payload)>) {
        self.out.take_ready(out);
        if let Some(late) = &mut self.late {
            late.take_ready(out);
        }
    }
    fn flush(&mut self) {
        self.out.flush();
        if let Some(late) = &mut self.late {
            late.flush();
        }
    }
    fn take_acks(&mut self, out: &mut Vec<AckOp>) {
        self.out.take_acks(out);
        if let Some(late) = &mut self.late {
            late.take_acks(out);
        }
    }
    fn emitted(&self) -> u64 {
        self.out.emitted() + self.late.as_ref().map_or(0, Emitter::emitted)
    }
}
