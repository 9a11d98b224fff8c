//! [`Emitter`] and [`SpoutEmitter`]: what user code emits through.
//!
//! An emit routes the record at once: for every subscription of the stream the subscription's
//! router picks the target task(s), and the record (cloned only when it goes to more than one
//! place) is appended to that target's batch. A full batch is set aside for the runtime, which
//! sends it after the user call returns. Under a tracked guarantee each delivered copy gets a
//! fresh random edge id, XOR-ed into its anchors (Storm's ack-tree bookkeeping).

use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::component::TaskError;
use crate::engine::route::Route;
use crate::engine::{AckOp, LinkId, Mark, Payload};
use crate::ids::{EdgeId, MsgId, Origin, RootId, Source, TaskId, TupleId};
use crate::record::Record;
use crate::routing::{DirectOutOfRange, Pick};
use crate::tuple::{Tuple, TupleIds};
use crate::window::EventClock;

/// The output of a bolt task: emit records on the bolt's streams, and (for manual-ack bolts)
/// ack and fail inputs.
///
/// In a default bolt every emit is anchored to the input being executed. See
/// [`Bolt`](crate::Bolt) for an example.
pub struct Emitter<T> {
    streams: Vec<StreamOut<T>>,
    batch_size: usize,
    ready: Vec<(LinkId, Payload)>,
    emitted: u64,
    track: Option<Box<Tracking>>,
    clock: Option<Box<OutClock>>,
    /// The watermark a bolt without its own event time forwards (its inputs'), riding on the
    /// batches it fills; `i64::MIN` for none.
    forwarded: i64,
    manual_ack: bool,
    warned_auto_ack: bool,
}

/// The event time of a task's output: its watermark generator, and the timestamp field of
/// the records it emits (`None` when they have no event time).
pub(crate) struct OutClock {
    pub(crate) clock: EventClock,
    pub(crate) field: Option<usize>,
    /// Whether a spout's trees hold its watermark (the topology has windows).
    pub(crate) holds: bool,
}

impl OutClock {
    /// Notes the emit of `value`, with its timestamp when it has one. Out of line, so that the
    /// emit path of tasks without event time stays small enough to inline.
    #[inline(never)]
    fn observe<T: Record>(&mut self, value: &T) {
        match self.field.and_then(|f| value.timestamp_field(f)) {
            Some(ts) => self.clock.observe(ts),
            None => self.clock.touch(),
        }
    }
}

/// One output stream: its name and its subscriptions.
pub(crate) struct StreamOut<T> {
    pub(crate) name: Arc<str>,
    pub(crate) direct: bool,
    pub(crate) routes: Vec<Route<T>>,
}

/// Ack-tree bookkeeping of a task under a tracked guarantee.
struct Tracking {
    rng: SmallRng,
    /// The ids of the input being executed (auto-ack bolts).
    current: TupleIds,
    /// XOR of the edges emitted anchored to `current`.
    current_xor: u64,
    /// XOR of the edges emitted from the spout message being emitted.
    root_xor: u64,
    acks: Vec<AckOp>,
    scratch: Vec<(RootId, EdgeId)>,
    /// While a window fires: the ids of its tuples, and the edges emitted anchored to each.
    scope: Vec<TupleIds>,
    scope_xors: Vec<u64>,
    in_scope: bool,
    /// Under exactly-once, the salt of this component's deterministic tuple ids (0: none).
    salt: u64,
    /// The identity of the input being executed, and how many tuples it begot so far.
    current_origin: Origin,
    current_begot: u64,
    /// The identity of the spout message being emitted.
    root_origin: Origin,
    /// A seekable spout's task under exactly-once, and its committed position: the
    /// [`Source`] of the messages it emits.
    source_task: Option<TaskId>,
    floor: u64,
}

impl Tracking {
    fn edge(&mut self) -> u64 {
        // Zero would be a no-op in the XOR and could complete a tree early.
        loop {
            let e = self.rng.random::<u64>();
            if e != 0 {
                return e;
            }
        }
    }

    /// The identity of a tuple emitted with `anchor` (id 0 when ids are off or the anchor has
    /// none): emit number `k` from its parent, with this component's salt, and the parent's
    /// source. Out of line, so that the emit path of the other guarantees stays small enough
    /// to inline.
    #[inline(never)]
    fn origin<A>(&mut self, anchor: &Anchor<'_, A>) -> Origin {
        match anchor {
            Anchor::None => Origin::default(),
            // Windows do not run under exactly-once (`build()` refuses them).
            Anchor::Current if self.in_scope => Origin::default(),
            Anchor::Current => {
                if self.current_origin.id.0 == 0 {
                    return Origin::default();
                }
                let k = self.current_begot;
                self.current_begot += 1;
                Origin {
                    id: TupleId::derive(self.current_origin.id.0, self.salt, k),
                    source: self.current_origin.source,
                }
            }
            Anchor::Tuples(anchors) => {
                // A join: from the first anchor's id and its emits so far, mixed with the
                // other anchors' ids (so [a, b] and [b, a] differ, and [a, a] has an id).
                let Some((first, rest)) = anchors.split_first() else {
                    return Origin::default();
                };
                let parent = first.origin().id;
                if parent.0 == 0 {
                    return Origin::default();
                }
                let own = TupleId::derive(parent.0, self.salt, first.next_begot());
                let others = rest.iter().fold(0u64, |acc, a| acc ^ a.origin().id.0);
                Origin {
                    id: TupleId((own.0 ^ others.rotate_left(1)).max(1)),
                    source: Source::joined(anchors.iter().map(|a| a.origin().source)),
                }
            }
            Anchor::Root(_) => self.root_origin,
        }
    }
}

/// What a new tuple is anchored to.
enum Anchor<'a, A> {
    /// Nothing: the tuple is not tracked.
    None,
    /// The input being executed (auto-ack bolts).
    Current,
    /// These inputs (manual-ack bolts; several make a join).
    Tuples(&'a [&'a Tuple<A>]),
    /// A new tree rooted at this spout message.
    Root(RootId),
}

impl<T: Record> Emitter<T> {
    pub(crate) fn new(
        streams: Vec<StreamOut<T>>,
        batch_size: usize,
        tracking_seed: Option<u64>,
        id_salt: Option<u64>,
        manual_ack: bool,
    ) -> Self {
        Emitter {
            streams,
            batch_size,
            ready: Vec::new(),
            emitted: 0,
            track: tracking_seed.map(|seed| {
                Box::new(Tracking {
                    rng: SmallRng::seed_from_u64(seed),
                    current: TupleIds::Untracked,
                    current_xor: 0,
                    root_xor: 0,
                    acks: Vec::new(),
                    scratch: Vec::new(),
                    scope: Vec::new(),
                    scope_xors: Vec::new(),
                    in_scope: false,
                    salt: id_salt.unwrap_or(0),
                    current_origin: Origin::default(),
                    current_begot: 0,
                    root_origin: Origin::default(),
                    source_task: None,
                    floor: 0,
                })
            }),
            clock: None,
            forwarded: i64::MIN,
            manual_ack,
            warned_auto_ack: false,
        }
    }

    /// Gives the task's output a watermark generator.
    pub(crate) fn with_clock(mut self, clock: OutClock) -> Self {
        self.clock = Some(Box::new(clock));
        self
    }

    /// Sets the watermark that rides on the batches filled from now on (bolts that forward
    /// their inputs' watermark).
    pub(crate) fn set_forwarded(&mut self, watermark: i64) {
        self.forwarded = watermark;
    }

    /// Trees in flight that no window has taken yet, where spouts track that (topologies with
    /// windows).
    pub(crate) fn unparked(&self) -> Option<usize> {
        self.clock
            .as_deref()
            .filter(|c| c.holds)
            .map(|c| c.clock.unparked())
    }

    /// The output's watermark generator, when its records have event time.
    pub(crate) fn clock(&self) -> Option<&EventClock> {
        self.clock
            .as_deref()
            .filter(|c| c.field.is_some())
            .map(|c| &c.clock)
    }

    /// The output's watermark generator, if it has one.
    pub(crate) fn clock_mut(&mut self) -> Option<&mut EventClock> {
        self.clock.as_deref_mut().map(|c| &mut c.clock)
    }

    /// Emits on the default stream. In a default (auto-ack) bolt the record is anchored to the
    /// input being executed; in a manual-ack bolt it is unanchored (use
    /// [`Emitter::emit_anchored`]).
    #[inline]
    pub fn emit(&mut self, value: T) {
        let anchor = if self.manual_ack {
            Anchor::None
        } else {
            Anchor::Current
        };
        // The default stream is never direct, so this cannot fail.
        let _ = self.dispatch::<()>(0, None, value, anchor);
    }

    /// Emits on the named stream, declared on the component with `.stream(name)`.
    pub fn emit_to(&mut self, stream: &str, value: T) -> Result<(), TaskError> {
        let index = self.stream_index(stream, false)?;
        let anchor = if self.manual_ack {
            Anchor::None
        } else {
            Anchor::Current
        };
        self.dispatch::<()>(index, None, value, anchor)
            .map_err(TaskError::from)
    }

    /// Emits on a direct stream (declared with `.direct_stream(name)`) to task `task_index` of
    /// each subscribing bolt.
    pub fn emit_direct(
        &mut self,
        stream: &str,
        task_index: u32,
        value: T,
    ) -> Result<(), TaskError> {
        let index = self.stream_index(stream, true)?;
        let anchor = if self.manual_ack {
            Anchor::None
        } else {
            Anchor::Current
        };
        self.dispatch::<()>(index, Some(task_index), value, anchor)
            .map_err(TaskError::from)
    }

    /// Emits on the default stream anchored to `anchors` (manual-ack bolts). Anchoring to inputs
    /// of several trees makes the record part of each of them. In a default (auto-ack) bolt the
    /// record is anchored to the input being executed, as [`Emitter::emit`] does.
    pub fn emit_anchored<A>(&mut self, anchors: &[&Tuple<A>], value: T) {
        // The default stream always exists and is not direct: nothing to report.
        let _ = self.dispatch_anchored(0, anchors, value);
    }

    /// Emits on a named stream anchored to `anchors` (manual-ack bolts; in a default bolt,
    /// anchored to the input being executed).
    pub fn emit_anchored_to<A>(
        &mut self,
        stream: &str,
        anchors: &[&Tuple<A>],
        value: T,
    ) -> Result<(), TaskError> {
        let index = self.stream_index(stream, false)?;
        self.dispatch_anchored(index, anchors, value)
            .map_err(TaskError::from)
    }

    /// Dispatches on `stream` anchored to `anchors` in a manual-ack bolt, to the current input
    /// in a default one.
    fn dispatch_anchored<A>(
        &mut self,
        stream: usize,
        anchors: &[&Tuple<A>],
        value: T,
    ) -> Result<(), DirectOutOfRange> {
        if self.manual_ack {
            self.dispatch(stream, None, value, Anchor::Tuples(anchors))
        } else {
            self.dispatch::<()>(stream, None, value, Anchor::Current)
        }
    }

    /// Emits on the default stream without any anchor: the record is not tracked, so its loss
    /// downstream does not fail any tree.
    pub fn emit_unanchored(&mut self, value: T) {
        let _ = self.dispatch::<()>(0, None, value, Anchor::None);
    }

    /// Acks an input (manual-ack bolts): its part of the tree is done, and the tuples emitted
    /// anchored to it join the tree.
    pub fn ack<A>(&mut self, input: Tuple<A>) {
        if !self.allow_manual("ack") {
            return;
        }
        let (_, ids, ack_val) = input.into_parts();
        self.ack_ids(&ids, ack_val);
    }

    /// Fails an input (manual-ack bolts): its tree fails and the spout replays it.
    pub fn fail<A>(&mut self, input: Tuple<A>) {
        if !self.allow_manual("fail") {
            return;
        }
        self.fail_ids(input.ids());
    }

    /// Restarts the message timeout of the trees `input` belongs to, for inputs held a long time
    /// (in a default bolt: of the input being executed).
    pub fn reset_timeout<A>(&mut self, input: &Tuple<A>) {
        if let Some(track) = self.track.as_deref_mut() {
            let ids = if self.manual_ack {
                input.ids()
            } else {
                &track.current
            };
            for &(root, _) in ids.pairs() {
                track.acks.push(AckOp::Reset { root });
            }
        }
    }

    fn allow_manual(&mut self, what: &str) -> bool {
        if self.manual_ack {
            return true;
        }
        if !self.warned_auto_ack {
            self.warned_auto_ack = true;
            tracing::warn!(
                call = what,
                "ignored: this bolt acks automatically (set MANUAL_ACK to ack inputs yourself)"
            );
        }
        false
    }

    fn stream_index(&self, name: &str, direct: bool) -> Result<usize, TaskError> {
        match self.streams.iter().position(|s| &*s.name == name) {
            Some(i) if self.streams[i].direct == direct => Ok(i),
            Some(_) if direct => Err(TaskError::new(format!(
                "stream `{name}` is not a direct stream; use emit_to"
            ))),
            Some(_) => Err(TaskError::new(format!(
                "stream `{name}` is a direct stream; use emit_direct"
            ))),
            None => Err(TaskError::new(format!(
                "stream `{name}` is not declared on this component"
            ))),
        }
    }

    /// Routes one record to every subscription of `stream`. Inlined into the emit calls (the
    /// hot path of every bolt): what only tasks with event time need is out of line.
    #[inline]
    fn dispatch<A>(
        &mut self,
        stream: usize,
        direct: Option<u32>,
        value: T,
        anchor: Anchor<'_, A>,
    ) -> Result<(), DirectOutOfRange> {
        let Emitter {
            streams,
            batch_size,
            ready,
            emitted,
            track,
            clock,
            forwarded,
            ..
        } = self;
        let routes = &mut streams[stream].routes;
        if let Some(index) = direct {
            // Check every subscription first so that a bad index delivers nothing.
            for route in routes.iter() {
                route.router.pick_direct(index)?;
            }
        }
        *emitted += 1;
        if let Some(clock) = clock.as_deref_mut() {
            clock.observe(&value);
        }
        let id = match track.as_deref_mut() {
            Some(t) if t.salt != 0 => t.origin(&anchor),
            _ => Origin::default(),
        };
        let ready_before = ready.len();
        let n = routes.len();
        let mut value = Some(value);
        for (i, route) in routes.iter_mut().enumerate() {
            let pick = match direct {
                Some(index) => route.router.pick_direct(index)?,
                None => {
                    let key = match value.as_ref() {
                        Some(v) if route.router.needs_key() => route.key.hash(v),
                        _ => 0,
                    };
                    route.router.pick(key)
                }
            };
            let last_route = i + 1 == n;
            match pick {
                Pick::One(target) => {
                    let v = if last_route {
                        value.take()
                    } else {
                        value.clone()
                    };
                    if let Some(v) = v {
                        let ids = new_ids(track.as_deref_mut(), &anchor);
                        route.push(target, v, ids, id, *batch_size, ready);
                    }
                }
                Pick::All(tasks) => {
                    for target in 0..tasks {
                        let v = if last_route && target + 1 == tasks {
                            value.take()
                        } else {
                            value.clone()
                        };
                        if let Some(v) = v {
                            let ids = new_ids(track.as_deref_mut(), &anchor);
                            route.push(target, v, ids, id, *batch_size, ready);
                        }
                    }
                }
                Pick::None => {}
            }
        }
        if ready.len() > ready_before {
            mark_filled(clock.as_deref(), *forwarded, &mut ready[ready_before..]);
        }
        Ok(())
    }

    // ----- the runtime's side -----

    /// Emits on stream `stream` (by index), anchored as `emit` anchors (a stateful task's
    /// outputs, which come back from its state machine by index).
    pub(crate) fn emit_on(&mut self, stream: usize, value: T) {
        // Out-of-range indices cannot come from a state machine of the same component; a
        // direct stream without a task index is refused by the dispatch, and dropped.
        let _ = self.dispatch::<()>(stream, None, value, Anchor::Current);
    }

    /// Starts executing an input with these ids (auto-ack bolts), and this identity under
    /// exactly-once (id 0 for none).
    pub(crate) fn begin_input(&mut self, ids: TupleIds, origin: Origin) {
        if let Some(track) = self.track.as_deref_mut() {
            track.current = ids;
            track.current_xor = 0;
            track.current_origin = origin;
            track.current_begot = 0;
        }
    }

    /// Ends executing the current input: acks it (with the edges emitted from it) or fails it.
    pub(crate) fn end_input(&mut self, ok: bool) {
        if let Some(track) = self.track.as_deref_mut() {
            let ids = std::mem::take(&mut track.current);
            // Emits outside an input (tick, finish) derive no id from it.
            track.current_origin = Origin::default();
            for &(root, edge) in ids.pairs() {
                if ok {
                    push_folded(&mut track.acks, root, edge.0 ^ track.current_xor);
                } else {
                    track.acks.push(AckOp::Fail { root });
                }
            }
            track.current_xor = 0;
        }
    }

    /// Anchors the emits that follow to these tuples (a firing window), until `end_scope`.
    pub(crate) fn begin_scope<'a>(&mut self, ids: impl Iterator<Item = &'a TupleIds>) {
        if let Some(track) = self.track.as_deref_mut() {
            track.scope.clear();
            track.scope.extend(ids.cloned());
            track.scope_xors.clear();
            track.scope_xors.resize(track.scope.len(), 0);
            track.in_scope = true;
        }
    }

    /// Ends the scope; `xors[i]` is the XOR of the edges emitted anchored to the scope's tuple
    /// `i`, to fold into its ack.
    pub(crate) fn end_scope(&mut self, xors: &mut Vec<u64>) {
        xors.clear();
        if let Some(track) = self.track.as_deref_mut() {
            track.in_scope = false;
            xors.append(&mut track.scope_xors);
            track.scope.clear();
        }
    }

    /// Acks a tuple the engine held (a window's), with the edges emitted anchored to it.
    pub(crate) fn ack_ids(&mut self, ids: &TupleIds, ack_val: u64) {
        if let Some(track) = self.track.as_deref_mut() {
            for &(root, edge) in ids.pairs() {
                push_folded(&mut track.acks, root, edge.0 ^ ack_val);
            }
        }
    }

    /// Tells the trees of a tuple a window took that it holds them (they stop holding their
    /// spouts' watermarks).
    pub(crate) fn park_ids(&mut self, ids: &TupleIds) {
        if let Some(track) = self.track.as_deref_mut() {
            for &(root, _) in ids.pairs() {
                track.acks.push(AckOp::Park { root });
            }
        }
    }

    /// Fails the trees of a tuple the engine held.
    pub(crate) fn fail_ids(&mut self, ids: &TupleIds) {
        if let Some(track) = self.track.as_deref_mut() {
            for &(root, _) in ids.pairs() {
                track.acks.push(AckOp::Fail { root });
            }
        }
    }

    /// Whether tuples are tracked.
    pub(crate) fn is_tracking(&self) -> bool {
        self.track.is_some()
    }

    /// Under exactly-once, a seekable spout task: the messages it emits from now on carry it
    /// as their [`Source`], with `floor`, its committed position.
    pub(crate) fn set_source(&mut self, task: TaskId, floor: u64) {
        if let Some(track) = self.track.as_deref_mut().filter(|t| t.salt != 0) {
            track.source_task = Some(task);
            track.floor = floor;
        }
    }

    /// Emits a tracked spout message: a new tree. Returns its root if the message reached any
    /// task (when it did not, its tree is trivially complete).
    fn emit_root(
        &mut self,
        msg: MsgId,
        stream: usize,
        direct: Option<u32>,
        value: T,
    ) -> Result<Option<RootId>, DirectOutOfRange> {
        let root = match self.track.as_deref_mut() {
            Some(track) => {
                track.root_xor = 0;
                if track.salt != 0 {
                    track.root_origin = Origin {
                        id: TupleId::derive(msg.0, track.salt, 0),
                        source: track.source_task.map(|task| Source {
                            task,
                            msg: msg.0,
                            floor: track.floor.min(msg.0),
                        }),
                    };
                }
                RootId(track.edge())
            }
            None => {
                self.dispatch::<()>(stream, direct, value, Anchor::None)?;
                return Ok(None);
            }
        };
        self.dispatch::<()>(stream, direct, value, Anchor::Root(root))?;
        let track = self
            .track
            .as_deref_mut()
            .expect("tracking was checked above");
        if track.root_xor == 0 {
            return Ok(None);
        }
        track.acks.push(AckOp::Init {
            root,
            xor: track.root_xor,
            msg,
        });
        Ok(Some(root))
    }

    /// Moves every partly filled batch to the ready list.
    pub(crate) fn flush(&mut self) {
        for stream in &mut self.streams {
            for route in &mut stream.routes {
                route.flush(&mut self.ready);
            }
        }
    }

    /// Hands the batches ready to send to the runtime.
    pub(crate) fn take_ready(&mut self, out: &mut Vec<(LinkId, Payload)>) {
        out.append(&mut self.ready);
    }

    /// Where the ack-tree operations of the batch about to run start, for
    /// [`Emitter::fail_since`].
    pub(crate) fn ack_mark(&self) -> AckMark {
        self.track
            .as_deref()
            .map_or(AckMark::default(), |t| AckMark {
                len: t.acks.len(),
                last: t.acks.last().copied(),
            })
    }

    /// Turns every ack recorded since `mark` into a failure of its tree: the batch's effects
    /// were not made durable ([`Bolt::flush`](crate::Bolt::flush) failed).
    pub(crate) fn fail_since(&mut self, mark: AckMark) {
        let Some(track) = self.track.as_deref_mut() else {
            return;
        };
        let fail = |op: &mut AckOp| {
            if let AckOp::Ack { root, .. } = *op {
                *op = AckOp::Fail { root };
            }
        };
        // The batch's first ack may have been folded into the last one before it (the same
        // tree): that tree fails too.
        if let Some(before) = mark.len.checked_sub(1).and_then(|i| track.acks.get_mut(i)) {
            if Some(*before) != mark.last {
                fail(before);
            }
        }
        track.acks.iter_mut().skip(mark.len).for_each(fail);
    }

    /// Hands the ack-tree operations recorded so far to the runtime.
    pub(crate) fn take_acks(&mut self, out: &mut Vec<AckOp>) {
        if let Some(track) = self.track.as_deref_mut() {
            out.append(&mut track.acks);
        }
    }

    /// The largest event time emitted since the last call, where the output has event time.
    pub(crate) fn take_event_time(&mut self) -> Option<i64> {
        self.clock_mut().and_then(EventClock::take_seen)
    }

    /// Moves the marks of the output's watermark generator into `out`.
    pub(crate) fn take_marks(&mut self, now_ms: i64, out: &mut Vec<Mark>) {
        if let Some(c) = self.clock.as_deref_mut() {
            c.clock.take_marks(now_ms, out);
        }
    }

    /// Records emitted so far (one per emit call, whatever the fan-out).
    pub(crate) fn emitted(&self) -> u64 {
        self.emitted
    }
}

/// A batch an emit filled holds all its link's data up to now: the watermark of now rides on
/// it, so event time moves with the data, not only at flushes. Once per batch, out of line.
#[cold]
#[inline(never)]
fn mark_filled(clock: Option<&OutClock>, forwarded: i64, batches: &mut [(LinkId, Payload)]) {
    let wm = match clock {
        Some(c) if c.field.is_some() => c.clock.current(),
        Some(_) => i64::MIN,
        None => forwarded,
    };
    if wm > i64::MIN {
        for (_, payload) in batches {
            payload.set_mark(Mark::Time(wm));
        }
    }
}

/// Where a batch's ack-tree operations start ([`Emitter::ack_mark`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AckMark {
    len: usize,
    last: Option<AckOp>,
}

/// Records an ack, XOR-ing it into the previous one when that is an ack of the same tree. The
/// inputs of one tree tend to arrive together (a sentence's words travel in one batch), so this
/// folds most acks for the price of a comparison; the runtime folds the rest per batch.
#[inline]
fn push_folded(acks: &mut Vec<AckOp>, root: RootId, xor: u64) {
    if let Some(AckOp::Ack {
        root: last,
        xor: folded,
    }) = acks.last_mut()
    {
        if *last == root {
            *folded ^= xor;
            return;
        }
    }
    acks.push(AckOp::Ack { root, xor });
}

/// Draws the ids of one delivered copy of a new tuple.
#[inline]
fn new_ids<A>(track: Option<&mut Tracking>, anchor: &Anchor<'_, A>) -> TupleIds {
    let Some(track) = track else {
        return TupleIds::Untracked;
    };
    match anchor {
        Anchor::None => TupleIds::Untracked,
        Anchor::Current if track.in_scope => {
            // A fresh edge per anchor, as for any multi-anchored emit.
            let mut scratch = std::mem::take(&mut track.scratch);
            scratch.clear();
            for i in 0..track.scope.len() {
                if !track.scope[i].is_tracked() {
                    continue;
                }
                let edge = track.edge();
                track.scope_xors[i] ^= edge;
                scratch.extend(
                    track.scope[i]
                        .pairs()
                        .iter()
                        .map(|&(r, _)| (r, EdgeId(edge))),
                );
            }
            let ids = TupleIds::from_contributions(&scratch);
            track.scratch = scratch;
            ids
        }
        Anchor::Current => {
            let root = match &track.current {
                TupleIds::Untracked => return TupleIds::Untracked,
                TupleIds::One((root, _)) => Some(*root),
                TupleIds::Many(_) => None,
            };
            let edge = track.edge();
            track.current_xor ^= edge;
            if let Some(root) = root {
                // The common case: the input belongs to one tree.
                return TupleIds::One((root, EdgeId(edge)));
            }
            let mut scratch = std::mem::take(&mut track.scratch);
            scratch.clear();
            scratch.extend(
                track
                    .current
                    .pairs()
                    .iter()
                    .map(|&(r, _)| (r, EdgeId(edge))),
            );
            let ids = TupleIds::from_contributions(&scratch);
            track.scratch = scratch;
            ids
        }
        Anchor::Tuples(anchors) => {
            // A fresh edge per anchor (Storm's rule): two anchors of the same tree must not
            // cancel out, each is XOR-ed into the new tuple's id for that tree.
            let mut scratch = std::mem::take(&mut track.scratch);
            scratch.clear();
            for a in anchors.iter() {
                if !a.ids().is_tracked() {
                    continue;
                }
                let edge = track.edge();
                a.xor_ack_val(edge);
                scratch.extend(a.ids().pairs().iter().map(|&(r, _)| (r, EdgeId(edge))));
            }
            let ids = TupleIds::from_contributions(&scratch);
            track.scratch = scratch;
            ids
        }
        Anchor::Root(root) => {
            let edge = track.edge();
            track.root_xor ^= edge;
            TupleIds::One((*root, EdgeId(edge)))
        }
    }
}

/// The output of a spout task.
///
/// [`SpoutEmitter::emit`] sends an untracked record; [`SpoutEmitter::emit_tracked`] starts an
/// ack tree under a tracked guarantee, and the spout's `ack` or `fail` later receives its
/// [`MsgId`].
pub struct SpoutEmitter<T> {
    inner: Emitter<T>,
    immediate_acks: Vec<MsgId>,
}

impl<T: Record> SpoutEmitter<T> {
    pub(crate) fn new(inner: Emitter<T>) -> Self {
        SpoutEmitter {
            inner,
            immediate_acks: Vec::new(),
        }
    }

    /// Emits an untracked record on the default stream.
    #[inline]
    pub fn emit(&mut self, value: T) {
        self.inner.emit_unanchored(value);
    }

    /// Emits an untracked record on a named stream.
    pub fn emit_to(&mut self, stream: &str, value: T) -> Result<(), TaskError> {
        let index = self.inner.stream_index(stream, false)?;
        self.inner
            .dispatch::<()>(index, None, value, Anchor::None)
            .map_err(TaskError::from)
    }

    /// Emits an untracked record on a direct stream to task `task_index` of each subscriber.
    pub fn emit_direct(
        &mut self,
        stream: &str,
        task_index: u32,
        value: T,
    ) -> Result<(), TaskError> {
        let index = self.inner.stream_index(stream, true)?;
        self.inner
            .dispatch::<()>(index, Some(task_index), value, Anchor::None)
            .map_err(TaskError::from)
    }

    /// Emits a record on the default stream as message `msg`: under at-least-once it starts an
    /// ack tree, and `ack(msg)` or `fail(msg)` follows; under at-most-once `ack(msg)` follows at
    /// once.
    #[inline]
    pub fn emit_tracked(&mut self, msg: MsgId, value: T) {
        let ts = self.timestamp(&value);
        match self.inner.emit_root(msg, 0, None, value) {
            Ok(Some(root)) => self.hold(root, msg, ts),
            // Untracked, or no task subscribes: the message is complete already.
            Ok(None) | Err(_) => self.complete_at_once(msg),
        }
    }

    /// The event time of `value` (`i64::MIN` when it has none).
    #[inline]
    fn timestamp(&self, value: &T) -> i64 {
        self.inner
            .clock
            .as_deref()
            .and_then(|c| c.field)
            .and_then(|f| value.timestamp_field(f))
            .unwrap_or(i64::MIN)
    }

    /// A message complete at emit time: acked right after `next`; if it was a failed
    /// message's replay, that message stops holding the watermark.
    fn complete_at_once(&mut self, msg: MsgId) {
        if let Some(clock) = self.inner.clock_mut() {
            clock.replayed_at_once(msg);
        }
        self.immediate_acks.push(msg);
    }

    /// A tree started: it holds the watermark until a window takes it or it completes (only
    /// where windows read watermarks: elsewhere no one waits for them).
    #[inline]
    fn hold(&mut self, root: RootId, msg: MsgId, ts: i64) {
        if let Some(c) = self.inner.clock.as_deref_mut().filter(|c| c.holds) {
            c.clock.hold(root, msg, ts);
        }
    }

    /// Emits a record on a named stream as message `msg` (see [`SpoutEmitter::emit_tracked`]).
    pub fn emit_tracked_to(&mut self, msg: MsgId, stream: &str, value: T) -> Result<(), TaskError> {
        let index = self.inner.stream_index(stream, false)?;
        let ts = self.timestamp(&value);
        match self.inner.emit_root(msg, index, None, value) {
            Ok(Some(root)) => self.hold(root, msg, ts),
            Ok(None) => self.complete_at_once(msg),
            Err(e) => return Err(TaskError::new(e.to_string())),
        }
        Ok(())
    }

    pub(crate) fn inner_mut(&mut self) -> &mut Emitter<T> {
        &mut self.inner
    }

    pub(crate) fn inner(&self) -> &Emitter<T> {
        &self.inner
    }

    /// The messages complete at emit time (untracked, or with no subscriber), to be acked to
    /// the spout right after `next` returns.
    pub(crate) fn immediate_acks_mut(&mut self) -> &mut Vec<MsgId> {
        &mut self.immediate_acks
    }
}
