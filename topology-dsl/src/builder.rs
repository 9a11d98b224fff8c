//! [`TopologyBuilder`]: declare spouts and bolts, wire them with typed handles, build.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tempest_dsl::*;
//!
//! #[derive(Clone, Debug, Serialize, Deserialize, Record)]
//! struct Line { text: String }
//! #[derive(Clone, Debug, Serialize, Deserialize, Record)]
//! struct Word { word: String }
//!
//! #[derive(Clone)]
//! struct Lines;
//! impl Spout for Lines {
//!     type Out = Line;
//!     fn next(&mut self, _out: &mut SpoutEmitter<Line>) -> Result<SpoutStatus, TaskError> {
//!         Ok(SpoutStatus::Done)
//!     }
//! }
//! #[derive(Clone)]
//! struct Split;
//! impl Bolt for Split {
//!     type In = Line;
//!     type Out = Word;
//!     fn execute(&mut self, t: Tuple<Line>, out: &mut Emitter<Word>) -> Result<(), TaskError> {
//!         t.text.split_whitespace().for_each(|w| out.emit(Word { word: w.into() }));
//!         Ok(())
//!     }
//! }
//! #[derive(Clone)]
//! struct Count;
//! impl Bolt for Count {
//!     type In = Word;
//!     type Out = Word;
//!     fn execute(&mut self, _t: Tuple<Word>, _out: &mut Emitter<Word>) -> Result<(), TaskError> {
//!         Ok(())
//!     }
//! }
//!
//! let mut t = TopologyBuilder::new("word-count");
//! let lines = t.add(spout("lines", Lines).parallelism(2));
//! let words = t.add(bolt("split", Split).parallelism(4).shuffle(&lines));
//! t.add(bolt("count", Count).parallelism(4).fields(&words, ["word"]));
//! let topology = t.guarantee(Guarantee::AtMostOnce).build().expect("a valid topology");
//! assert_eq!(topology.ir().task_count(), 10);
//! ```

use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::component::{Bolt, Spout};
use crate::config::{Guarantee, TopologyConfig};
use crate::engine::code::{BoltCode, ComponentCode, Proto, SpoutCode, StatefulCode, WindowCode};
use crate::engine::input::{Convert, InputAdapter};
use crate::engine::route::{AnyKeyFn, KeyFn};
use crate::engine::window_task::{Aggregate, Whole, WindowMode};
use crate::error::{BuildErrors, TopologyError};
use crate::event_time::EventTime;
use crate::grouping::Grouping;
use crate::record::{FieldKind, Record, stable_hash_of};
use crate::stateful::{StateStorage, StatefulBolt};
use crate::topology::{
    ComponentEntry, ComponentIr, ComponentKind, DEFAULT_STREAM, FieldIr, InputIr, RecordIr,
    StatefulIr, StreamIr, Topology, TopologyIr, WindowIr,
};
use crate::validate;
use crate::window::{LATE_STREAM, Window, WindowAggregate, WindowedBolt};

static NEXT_BUILDER_ID: AtomicU64 = AtomicU64::new(1);

/// A typed reference to one output stream of a component added to a [`TopologyBuilder`].
///
/// A bolt may subscribe to a `Handle<X>` only if its input type implements `From<X>`, so a
/// wiring mismatch does not compile.
pub struct Handle<T> {
    builder: u64,
    component: usize,
    stream: &'static str,
    _record: PhantomData<fn() -> T>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Handle<T> {}

impl<T> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("component", &self.component)
            .field("stream", &self.stream)
            .finish()
    }
}

impl<T> Handle<T> {
    fn new(builder: u64, component: usize, stream: &'static str) -> Self {
        Handle {
            builder,
            component,
            stream,
            _record: PhantomData,
        }
    }

    /// The same component's stream called `name`, declared with `.stream(name)` or
    /// `.direct_stream(name)` (checked by `build()`).
    pub fn stream(&self, name: &'static str) -> Handle<T> {
        Handle {
            stream: name,
            ..*self
        }
    }

    /// The stream's name.
    pub fn stream_name(&self) -> &'static str {
        self.stream
    }
}

pub(crate) mod private {
    use super::*;

    /// Where a subscription points.
    pub(crate) enum Source {
        Handle {
            builder: u64,
            component: usize,
            stream: &'static str,
        },
        Name {
            component: String,
            stream: String,
        },
    }

    pub(crate) struct InputDecl {
        pub(crate) source: Source,
        pub(crate) grouping: Grouping,
        pub(crate) key_fn: Option<AnyKeyFn>,
        /// For subscriptions by name: the input type the stream must carry.
        pub(crate) expects: Option<(TypeId, &'static str)>,
    }

    /// A component as declared, before `build()` resolves names.
    pub struct Decl {
        pub(crate) name: String,
        pub(crate) kind: ComponentKind,
        pub(crate) parallelism: u32,
        pub(crate) input_type: Option<RecordIr>,
        pub(crate) out_record: RecordIr,
        pub(crate) out_type: TypeId,
        pub(crate) streams: Vec<(String, bool)>,
        pub(crate) inputs: Vec<InputDecl>,
        pub(crate) tick_every: Option<Duration>,
        pub(crate) replayable: bool,
        pub(crate) rewindable: bool,
        pub(crate) manual_ack: bool,
        pub(crate) idempotent: bool,
        pub(crate) window: Option<WindowIr>,
        pub(crate) event_time: Option<EventTime>,
        pub(crate) stateful: Option<StatefulIr>,
        pub(crate) code: Arc<dyn ComponentCode>,
    }

    impl Decl {
        /// A bolt of input `In` and output `Out`, with a window or not.
        pub(crate) fn bolt<In: Record, Out: Record>(
            common: Common,
            inputs: Vec<InputDecl>,
            window: Option<WindowIr>,
            code: Arc<dyn ComponentCode>,
        ) -> Decl {
            let tick_every = window.as_ref().and_then(|w| window_tick(&w.spec));
            Decl {
                name: common.name,
                kind: ComponentKind::Bolt,
                parallelism: common.parallelism,
                input_type: Some(record_ir::<In>()),
                out_record: record_ir::<Out>(),
                out_type: TypeId::of::<Out>(),
                streams: common.streams,
                inputs,
                tick_every,
                replayable: false,
                rewindable: false,
                manual_ack: false,
                idempotent: false,
                window,
                event_time: None,
                stateful: None,
                code,
            }
        }
    }

    /// Implemented by the spec types only.
    pub trait Sealed {
        /// What `TopologyBuilder::add` returns.
        type Handle;
        fn into_decl(self) -> Decl;
        fn handle(builder: u64, component: usize) -> Self::Handle;
    }
}

use private::{Decl, InputDecl, Source};

/// A component declaration that [`TopologyBuilder::add`] accepts: [`SpoutSpec`] or [`BoltSpec`].
pub trait ComponentSpec: private::Sealed {
    /// The record type of the component's streams.
    type Out: Record;
}

/// How often a windowed bolt is ticked: often enough for processing-time windows to fire
/// close to their time and for idle inputs to be noticed; count windows need no tick.
fn window_tick(window: &Window) -> Option<Duration> {
    if window.is_count() {
        return None;
    }
    let span = window.step_ms()?;
    let span = if window.is_event_time() {
        window.idle_timeout_ms.unwrap_or(400)
    } else {
        span
    };
    let ms = (span / 10).clamp(1, 100);
    Some(Duration::from_millis(ms.unsigned_abs()))
}

fn record_ir<T: Record>() -> RecordIr {
    RecordIr {
        type_name: std::any::type_name::<T>().to_owned(),
        fields: T::FIELDS
            .iter()
            .map(|f| FieldIr {
                name: f.name.to_owned(),
                ty: f.ty,
            })
            .collect(),
    }
}

/// Settings every component has.
pub(crate) struct Common {
    name: String,
    parallelism: u32,
    streams: Vec<(String, bool)>,
}

impl Common {
    fn new(name: String) -> Self {
        Common {
            name,
            parallelism: 1,
            streams: Vec::new(),
        }
    }
}

/// A spout declaration; made by [`spout`].
pub struct SpoutSpec<S: Spout> {
    common: Common,
    spout: S,
    event_time: Option<EventTime>,
}

/// Declares a spout called `name`. Each of its tasks runs a clone of `spout`.
pub fn spout<S: Spout>(name: impl Into<String>, spout: S) -> SpoutSpec<S> {
    SpoutSpec {
        common: Common::new(name.into()),
        spout,
        event_time: None,
    }
}

impl<S: Spout> SpoutSpec<S> {
    /// The number of tasks (default 1).
    pub fn parallelism(mut self, tasks: u32) -> Self {
        self.common.parallelism = tasks;
        self
    }

    /// Declares a named output stream (of the same record type).
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.common.streams.push((name.into(), false));
        self
    }

    /// Declares a named direct stream: its emitter picks the receiving task.
    pub fn direct_stream(mut self, name: impl Into<String>) -> Self {
        self.common.streams.push((name.into(), true));
        self
    }

    /// Declares the event time of the spout's records: each task generates watermarks from
    /// the timestamps it emits (see [`EventTime`]). `build()` checks the field.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use serde::{Deserialize, Serialize};
    /// # use tempest_dsl::*;
    /// # #[derive(Clone, Debug, Serialize, Deserialize, Record)]
    /// # struct Reading { ts: i64 }
    /// # #[derive(Clone)] struct Readings;
    /// # impl Spout for Readings {
    /// #     type Out = Reading;
    /// #     fn next(&mut self, _: &mut SpoutEmitter<Reading>) -> Result<SpoutStatus, TaskError> { Ok(SpoutStatus::Done) }
    /// # }
    /// let mut t = TopologyBuilder::new("readings");
    /// t.add(spout("readings", Readings)
    ///     .event_time(EventTime::field("ts").lag(Duration::from_millis(100))));
    /// # assert!(t.build().is_ok());
    /// ```
    pub fn event_time(mut self, event_time: EventTime) -> Self {
        self.event_time = Some(event_time);
        self
    }
}

impl<S: Spout> private::Sealed for SpoutSpec<S> {
    type Handle = Handle<S::Out>;

    fn handle(builder: u64, component: usize) -> Self::Handle {
        Handle::new(builder, component, DEFAULT_STREAM)
    }

    fn into_decl(self) -> Decl {
        Decl {
            name: self.common.name,
            kind: ComponentKind::Spout,
            parallelism: self.common.parallelism,
            input_type: None,
            out_record: record_ir::<S::Out>(),
            out_type: TypeId::of::<S::Out>(),
            streams: self.common.streams,
            inputs: Vec::new(),
            tick_every: None,
            replayable: S::REPLAYABLE,
            rewindable: S::REWINDABLE,
            manual_ack: false,
            idempotent: false,
            window: None,
            event_time: self.event_time,
            stateful: None,
            code: Arc::new(SpoutCode {
                proto: Proto::new(self.spout),
            }),
        }
    }
}

impl<S: Spout> ComponentSpec for SpoutSpec<S> {
    type Out = S::Out;
}

/// The subscriptions of a bolt being declared, with the adapters that turn each upstream's
/// records into the bolt's input type.
struct Subscriptions<In> {
    inputs: Vec<InputDecl>,
    adapters: Vec<Arc<dyn InputAdapter<In>>>,
}

impl<In: Record> Subscriptions<In> {
    fn new() -> Self {
        Subscriptions {
            inputs: Vec::new(),
            adapters: Vec::new(),
        }
    }

    fn typed<X: Record>(&mut self, from: &Handle<X>, grouping: Grouping, key_fn: Option<AnyKeyFn>)
    where
        In: From<X>,
    {
        self.inputs.push(InputDecl {
            source: Source::Handle {
                builder: from.builder,
                component: from.component,
                stream: from.stream,
            },
            grouping,
            key_fn,
            expects: None,
        });
        self.adapters.push(Arc::new(Convert::<X, In>::new()));
    }

    fn by_name(&mut self, component: String, stream: String, grouping: Grouping) {
        self.inputs.push(InputDecl {
            source: Source::Name { component, stream },
            grouping,
            key_fn: None,
            expects: Some((TypeId::of::<In>(), std::any::type_name::<In>())),
        });
        self.adapters.push(Arc::new(Convert::<In, In>::new()));
    }

    fn adapters(&mut self) -> Arc<[Arc<dyn InputAdapter<In>>]> {
        std::mem::take(&mut self.adapters).into()
    }
}

/// The methods every bolt declaration shares: parallelism, streams and the groupings.
macro_rules! bolt_spec_methods {
    ($in:ty) => {
        /// The number of tasks (default 1).
        pub fn parallelism(mut self, tasks: u32) -> Self {
            self.common.parallelism = tasks;
            self
        }

        /// Declares a named output stream (of the same record type).
        pub fn stream(mut self, name: impl Into<String>) -> Self {
            self.common.streams.push((name.into(), false));
            self
        }

        /// Declares a named direct stream: its emitter picks the receiving task.
        pub fn direct_stream(mut self, name: impl Into<String>) -> Self {
            self.common.streams.push((name.into(), true));
            self
        }

        /// Subscribes with a shuffle grouping: round-robin over this bolt's tasks.
        pub fn shuffle<X: Record>(mut self, from: &Handle<X>) -> Self
        where
            $in: From<X>,
        {
            self.subs.typed(from, Grouping::Shuffle, None);
            self
        }

        /// Subscribes with a local-or-shuffle grouping: round-robin over the tasks in the
        /// sender's process (preferring its own thread), or over all tasks if none is local.
        pub fn local_or_shuffle<X: Record>(mut self, from: &Handle<X>) -> Self
        where
            $in: From<X>,
        {
            self.subs.typed(from, Grouping::LocalOrShuffle, None);
            self
        }

        /// Subscribes with a fields grouping: records with equal values of `fields` reach the
        /// same task. `build()` checks that the upstream record has the fields.
        pub fn fields<X: Record, F: AsRef<str>>(
            mut self,
            from: &Handle<X>,
            fields: impl IntoIterator<Item = F>,
        ) -> Self
        where
            $in: From<X>,
        {
            let fields = fields.into_iter().map(|f| f.as_ref().to_owned()).collect();
            self.subs.typed(from, Grouping::Fields(fields), None);
            self
        }

        /// Subscribes with a key-by grouping: records with equal keys (by the seedless hash of
        /// what `key` returns) reach the same task. Checked at compile time.
        pub fn key_by<X: Record, K: FieldKind>(
            mut self,
            from: &Handle<X>,
            key: impl Fn(&X) -> K + Send + Sync + 'static,
        ) -> Self
        where
            $in: From<X>,
        {
            let f: KeyFn<X> = KeyFn(Arc::new(move |x: &X| stable_hash_of(&key(x))));
            self.subs.typed(from, Grouping::KeyBy, Some(Arc::new(f)));
            self
        }

        /// Subscribes with an all grouping: every record to every task.
        pub fn all<X: Record>(mut self, from: &Handle<X>) -> Self
        where
            $in: From<X>,
        {
            self.subs.typed(from, Grouping::All, None);
            self
        }

        /// Subscribes with a global grouping: every record to the task with the lowest id.
        pub fn global<X: Record>(mut self, from: &Handle<X>) -> Self
        where
            $in: From<X>,
        {
            self.subs.typed(from, Grouping::Global, None);
            self
        }

        /// Subscribes with a direct grouping to a direct stream: the emitter picks the task.
        pub fn direct<X: Record>(mut self, from: &Handle<X>) -> Self
        where
            $in: From<X>,
        {
            self.subs.typed(from, Grouping::Direct, None);
            self
        }

        /// Subscribes by name, for topologies assembled from names (a spec file, a registry).
        /// The stream's record type must be exactly this bolt's input type; `build()` checks
        /// it, the component's existence, and the absence of cycles. `Grouping::KeyBy` needs a
        /// closure and is refused here: use `key_by`.
        pub fn subscribe_by_name(
            mut self,
            component: impl Into<String>,
            stream: impl Into<String>,
            grouping: Grouping,
        ) -> Self {
            self.subs.by_name(component.into(), stream.into(), grouping);
            self
        }
    };
}

/// A bolt declaration; made by [`bolt`]. Its grouping methods subscribe it to upstream streams.
pub struct BoltSpec<B: Bolt> {
    common: Common,
    bolt: B,
    subs: Subscriptions<B::In>,
    tick_every: Option<Duration>,
    event_time: Option<EventTime>,
}

/// Declares a bolt called `name`. Each of its tasks runs a clone of `bolt`.
pub fn bolt<B: Bolt>(name: impl Into<String>, bolt: B) -> BoltSpec<B> {
    BoltSpec {
        common: Common::new(name.into()),
        bolt,
        subs: Subscriptions::new(),
        tick_every: None,
        event_time: None,
    }
}

impl<B: Bolt> BoltSpec<B> {
    bolt_spec_methods!(B::In);

    /// Calls [`Bolt::tick`] on every task at this interval.
    pub fn tick_every(mut self, interval: Duration) -> Self {
        self.tick_every = Some(interval);
        self
    }

    /// Declares that this bolt assigns the event time of its output (Flink's
    /// `assignTimestampsAndWatermarks`): its tasks generate watermarks from the timestamps
    /// they emit, and the watermarks of its inputs stop here (see [`EventTime`]). Use it on
    /// the bolt that parses or makes the timestamps when no spout has them.
    pub fn event_time(mut self, event_time: EventTime) -> Self {
        self.event_time = Some(event_time);
        self
    }
}

impl<B: Bolt> private::Sealed for BoltSpec<B> {
    type Handle = Handle<B::Out>;

    fn into_decl(mut self) -> Decl {
        let inputs = self.subs.adapters();
        Decl {
            tick_every: self.tick_every,
            manual_ack: B::MANUAL_ACK,
            idempotent: B::IDEMPOTENT,
            event_time: self.event_time,
            ..Decl::bolt::<B::In, B::Out>(
                self.common,
                self.subs.inputs,
                None,
                Arc::new(BoltCode {
                    proto: Proto::new(self.bolt),
                    inputs,
                }),
            )
        }
    }

    fn handle(builder: u64, component: usize) -> Self::Handle {
        Handle::new(builder, component, DEFAULT_STREAM)
    }
}

impl<B: Bolt> ComponentSpec for BoltSpec<B> {
    type Out = B::Out;
}

/// A stateful bolt declaration; made by [`stateful`]. Besides the groupings of every bolt, it
/// takes the replication of its state: `.replicas(R)` and `.state(storage)`.
pub struct StatefulSpec<B: StatefulBolt> {
    common: Common,
    bolt: B,
    subs: Subscriptions<B::In>,
    state: StatefulIr,
}

/// Declares a stateful bolt called `name` (see [`StatefulBolt`]). In a cluster each of its
/// tasks is replicated on `replicas` nodes (default 3) through Raft; in an in-process run its
/// state lives in the task.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use tempest_dsl::*;
/// # #[derive(Clone, Debug, Serialize, Deserialize, Record)]
/// # struct Word { word: String }
/// # #[derive(Clone)]
/// # struct Words;
/// # impl Spout for Words {
/// #     type Out = Word;
/// #     fn next(&mut self, _: &mut SpoutEmitter<Word>) -> Result<SpoutStatus, TaskError> {
/// #         Ok(SpoutStatus::Done)
/// #     }
/// # }
/// #[derive(Clone)]
/// struct Count;
/// impl StatefulBolt for Count {
///     type In = Word;
///     type Out = Word;
///     type State = KeyedState<String, u64>;
///     fn execute(&self, counts: &mut Self::State, w: Tuple<Word>, out: &mut StateEmitter<Word>)
///         -> Result<(), TaskError> {
///         *counts.entry(w.word.clone()).or_default() += 1;
///         out.emit(w.into_value());
///         Ok(())
///     }
/// }
/// let mut t = TopologyBuilder::new("counts");
/// let words = t.add(spout("words", Words));
/// t.add(stateful("count", Count).parallelism(4).fields(&words, ["word"])
///     .replicas(3).state(StateStorage::Disk));
/// let topology = t.build().expect("valid");
/// assert_eq!(topology.ir().components[1].stateful.map(|s| s.replicas), Some(3));
/// ```
pub fn stateful<B: StatefulBolt>(name: impl Into<String>, bolt: B) -> StatefulSpec<B> {
    StatefulSpec {
        common: Common::new(name.into()),
        bolt,
        subs: Subscriptions::new(),
        state: StatefulIr {
            replicas: 3,
            storage: StateStorage::Memory,
        },
    }
}

impl<B: StatefulBolt> StatefulSpec<B> {
    bolt_spec_methods!(B::In);

    /// The replicas of each task's state in a cluster: odd, so that R = 2k + 1 replicas
    /// survive k failures (default 3). A cluster needs at least R nodes to run it.
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.state.replicas = replicas;
        self
    }

    /// Where each replica keeps its Raft log and snapshots (default in memory).
    pub fn state(mut self, storage: StateStorage) -> Self {
        self.state.storage = storage;
        self
    }
}

impl<B: StatefulBolt> private::Sealed for StatefulSpec<B> {
    type Handle = Handle<B::Out>;

    fn into_decl(mut self) -> Decl {
        let inputs = self.subs.adapters();
        Decl {
            stateful: Some(self.state),
            ..Decl::bolt::<B::In, B::Out>(
                self.common,
                self.subs.inputs,
                None,
                Arc::new(StatefulCode {
                    proto: Proto::new(self.bolt),
                    inputs,
                }),
            )
        }
    }

    fn handle(builder: u64, component: usize) -> Self::Handle {
        Handle::new(builder, component, DEFAULT_STREAM)
    }
}

impl<B: StatefulBolt> ComponentSpec for StatefulSpec<B> {
    type Out = B::Out;
}

/// The handles of a windowed bolt: its results, and its late tuples (when the window sends
/// them to a side stream).
pub struct Windowed<In, Out> {
    /// The window results.
    pub output: Handle<Out>,
    /// The late tuples, on the `late` stream.
    pub late: Handle<In>,
}

/// A whole-window bolt declaration; made by [`windowed`].
pub struct WindowedSpec<B: WindowedBolt> {
    common: Common,
    bolt: B,
    window: Window,
    subs: Subscriptions<B::In>,
}

/// Declares a bolt called `name` that sees whole windows of its input. Windows are per key of
/// its fields grouping, or per task when it has none.
pub fn windowed<B: WindowedBolt>(
    name: impl Into<String>,
    bolt: B,
    window: Window,
) -> WindowedSpec<B> {
    WindowedSpec {
        common: Common::new(name.into()),
        bolt,
        window,
        subs: Subscriptions::new(),
    }
}

impl<B: WindowedBolt> WindowedSpec<B> {
    bolt_spec_methods!(B::In);
}

/// The declaration of a windowed bolt of either mode.
fn windowed_decl<M: WindowMode>(
    common: Common,
    mut subs: Subscriptions<M::In>,
    window: Window,
    aggregate: bool,
    mode: M,
) -> Decl {
    let inputs = subs.adapters();
    Decl::bolt::<M::In, M::Out>(
        common,
        subs.inputs,
        Some(WindowIr {
            spec: window,
            aggregate,
        }),
        Arc::new(WindowCode {
            proto: Proto::new(mode),
            inputs,
        }),
    )
}

impl<In, Out> Windowed<In, Out> {
    fn new(builder: u64, component: usize) -> Self {
        Windowed {
            output: Handle::new(builder, component, DEFAULT_STREAM),
            late: Handle::new(builder, component, LATE_STREAM),
        }
    }
}

impl<B: WindowedBolt> private::Sealed for WindowedSpec<B> {
    type Handle = Windowed<B::In, B::Out>;

    fn into_decl(self) -> Decl {
        let mode = Whole::new(self.bolt, &self.window);
        windowed_decl(self.common, self.subs, self.window, false, mode)
    }

    fn handle(builder: u64, component: usize) -> Self::Handle {
        Windowed::new(builder, component)
    }
}

impl<B: WindowedBolt> ComponentSpec for WindowedSpec<B> {
    type Out = B::Out;
}

/// An aggregating windowed bolt declaration; made by [`aggregated`].
pub struct AggregatedSpec<A: WindowAggregate> {
    common: Common,
    agg: A,
    window: Window,
    subs: Subscriptions<A::In>,
}

/// Declares a bolt called `name` that folds each window of its input into an accumulator
/// (incremental aggregation). Windows are per key of its fields grouping, or per task.
pub fn aggregated<A: WindowAggregate>(
    name: impl Into<String>,
    agg: A,
    window: Window,
) -> AggregatedSpec<A> {
    AggregatedSpec {
        common: Common::new(name.into()),
        agg,
        window,
        subs: Subscriptions::new(),
    }
}

impl<A: WindowAggregate> AggregatedSpec<A> {
    bolt_spec_methods!(A::In);
}

impl<A: WindowAggregate> private::Sealed for AggregatedSpec<A> {
    type Handle = Windowed<A::In, A::Out>;

    fn into_decl(self) -> Decl {
        windowed_decl(
            self.common,
            self.subs,
            self.window,
            true,
            Aggregate::new(self.agg),
        )
    }

    fn handle(builder: u64, component: usize) -> Self::Handle {
        Windowed::new(builder, component)
    }
}

impl<A: WindowAggregate> ComponentSpec for AggregatedSpec<A> {
    type Out = A::Out;
}

/// Declares a topology. See the [module docs](self) for an example.
pub struct TopologyBuilder {
    id: u64,
    name: String,
    guarantee: Guarantee,
    config: TopologyConfig,
    decls: Vec<Decl>,
}

impl TopologyBuilder {
    /// A builder for a topology called `name`, at-most-once with the default config.
    pub fn new(name: impl Into<String>) -> Self {
        TopologyBuilder {
            id: NEXT_BUILDER_ID.fetch_add(1, Ordering::Relaxed),
            name: name.into(),
            guarantee: Guarantee::default(),
            config: TopologyConfig::default(),
            decls: Vec::new(),
        }
    }

    /// Adds a spout or bolt; returns a handle to its default stream (for a windowed bolt,
    /// [`Windowed`] handles to its results and its late tuples).
    pub fn add<C: ComponentSpec>(&mut self, spec: C) -> C::Handle {
        let decl = private::Sealed::into_decl(spec);
        self.decls.push(decl);
        C::handle(self.id, self.decls.len() - 1)
    }

    /// Sets the delivery guarantee (default at-most-once).
    pub fn guarantee(mut self, guarantee: Guarantee) -> Self {
        self.guarantee = guarantee;
        self
    }

    /// Sets the configuration (default [`TopologyConfig::default`]).
    pub fn config(mut self, config: TopologyConfig) -> Self {
        self.config = config;
        self
    }

    /// Validates the topology and returns it, or every problem found.
    pub fn build(self) -> Result<Topology, BuildErrors> {
        let mut errors = Vec::new();
        let names: Vec<String> = self.decls.iter().map(|d| d.name.clone()).collect();
        let mut components = Vec::with_capacity(self.decls.len());
        let mut entries = Vec::with_capacity(self.decls.len());
        let mut type_checks = Vec::new();
        for decl in self.decls {
            let mut inputs = Vec::with_capacity(decl.inputs.len());
            let mut key_fns = Vec::with_capacity(decl.inputs.len());
            for input in decl.inputs {
                let (component, stream) = match input.source {
                    Source::Handle {
                        builder,
                        component,
                        stream,
                    } => {
                        if builder != self.id {
                            errors.push(TopologyError::ForeignHandle {
                                component: decl.name.clone(),
                            });
                            continue;
                        }
                        (names[component].clone(), stream.to_owned())
                    }
                    Source::Name { component, stream } => (component, stream),
                };
                if input.grouping == Grouping::KeyBy && input.key_fn.is_none() {
                    errors.push(TopologyError::KeyByWithoutFunction {
                        component: decl.name.clone(),
                        upstream: component.clone(),
                    });
                }
                if let Some(expected) = input.expects {
                    type_checks.push((
                        decl.name.clone(),
                        component.clone(),
                        stream.clone(),
                        expected,
                    ));
                }
                inputs.push(InputIr {
                    component,
                    stream,
                    grouping: input.grouping,
                });
                key_fns.push(input.key_fn);
            }
            let mut streams = vec![StreamIr {
                name: DEFAULT_STREAM.to_owned(),
                direct: false,
                record: decl.out_record.clone(),
            }];
            streams.extend(decl.streams.into_iter().map(|(name, direct)| StreamIr {
                name,
                direct,
                record: decl.out_record.clone(),
            }));
            // The late stream carries the windowed input.
            let late_stream = decl.window.as_ref().is_some_and(|w| w.spec.late_stream);
            if let Some(record) = decl.input_type.clone().filter(|_| late_stream) {
                streams.push(StreamIr {
                    name: LATE_STREAM.to_owned(),
                    direct: false,
                    record,
                });
            }
            components.push((
                decl.out_type,
                ComponentIr {
                    name: decl.name,
                    kind: decl.kind,
                    parallelism: decl.parallelism,
                    input_type: decl.input_type,
                    streams,
                    inputs,
                    tick_every: decl.tick_every,
                    replayable: decl.replayable,
                    rewindable: decl.rewindable,
                    manual_ack: decl.manual_ack,
                    idempotent: decl.idempotent,
                    window: decl.window,
                    event_time: decl.event_time,
                    stateful: decl.stateful,
                },
            ));
            entries.push(ComponentEntry {
                code: decl.code,
                key_fns,
            });
        }
        // Subscriptions by name must carry exactly the bolt's input type.
        for (component, upstream, stream, (expected, expected_name)) in type_checks {
            if let Some((found, ir)) = components.iter().find(|(_, c)| c.name == upstream) {
                if *found != expected && ir.streams.iter().any(|s| s.name == stream) {
                    errors.push(TopologyError::TypeMismatch {
                        component,
                        upstream,
                        stream,
                        expected: expected_name.to_owned(),
                        found: ir.streams[0].record.type_name.clone(),
                    });
                }
            }
        }
        let mut ir = TopologyIr {
            name: self.name,
            guarantee: self.guarantee,
            config: self.config,
            components: components.into_iter().map(|(_, c)| c).collect(),
        };
        errors.extend(crate::event_time::place(&mut ir));
        // A bolt whose only subscriptions were foreign handles was already reported.
        let foreign = |c: &String| {
            errors
                .iter()
                .any(|e| matches!(e, TopologyError::ForeignHandle { component } if component == c))
        };
        let more: Vec<TopologyError> = validate::validate(&ir)
            .into_iter()
            .filter(|e| !matches!(e, TopologyError::NoInputs(c) if foreign(c)))
            .collect();
        errors.extend(more);
        if !errors.is_empty() {
            return Err(BuildErrors(errors));
        }
        let warnings = validate::warnings(&ir);
        Ok(Topology::new(ir, entries, warnings))
    }
}
