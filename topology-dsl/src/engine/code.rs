//! The typed code of each component, kept behind a trait object in the built topology, and how
//! it turns a task's setup into a running [`Task`].

use std::sync::{Arc, Mutex};

use crate::component::{Bolt, Spout, TaskContext};
use crate::emitter::{Emitter, OutClock, SpoutEmitter, StreamOut};
use crate::engine::bolt_task::BoltTaskImpl;
use crate::engine::input::InputAdapter;
use crate::engine::route::{AnyKeyFn, KeyExtract, KeyFn, Route};
use crate::engine::spout_task::SpoutTaskImpl;
use crate::engine::stateful_task::{StateCore, StatefulTaskImpl};
use crate::engine::window_task::{WindowInput, WindowIo, WindowMode, WindowedTask, horizon};
use crate::engine::{EngineError, RouteSetup, Task};
use crate::grouping::Grouping;
use crate::record::Record;
use crate::routing::Router;
use crate::stateful::StatefulBolt;
use crate::topology::{ComponentIr, InputIr};
use crate::window::{Channel, EventClock, LATE_STREAM, Size, TimeDomain, WindowCore, WindowKind};

/// One subscription as the sending task will serve it.
pub(crate) struct RoutePlan {
    pub(crate) setup: RouteSetup,
    pub(crate) grouping: Grouping,
    pub(crate) key_fn: Option<AnyKeyFn>,
}

/// One output stream as the sending task will serve it.
pub(crate) struct StreamPlan {
    pub(crate) name: Arc<str>,
    pub(crate) direct: bool,
    pub(crate) routes: Vec<RoutePlan>,
}

/// What a task is instantiated from, besides its component's code.
pub(crate) struct Instance<'a> {
    pub(crate) context: TaskContext,
    pub(crate) streams: Vec<StreamPlan>,
    pub(crate) batch_size: usize,
    pub(crate) max_open_windows: usize,
    pub(crate) tracking_seed: Option<u64>,
    pub(crate) component: &'a ComponentIr,
    pub(crate) channels: &'a [Channel],
    /// Whether a stateful task's state lives in its Raft group.
    pub(crate) replicated: bool,
    /// Whether the topology has windowed bolts (the only readers of watermarks).
    pub(crate) windowed: bool,
    /// Whether tuples carry deterministic ids (exactly-once).
    pub(crate) exact: bool,
    /// Under exactly-once, how long a stateful task remembers the inputs it applied.
    pub(crate) dedup_retention_ms: Option<i64>,
}

impl Instance<'_> {
    /// The salt of this task's deterministic tuple ids, under exactly-once (a spout's own
    /// message ids are its task's: its salt includes the task).
    fn id_salt(&self, spout: bool) -> Option<u64> {
        (self.exact && self.tracking_seed.is_some()).then(|| {
            crate::ids::TupleId::salt(
                &self.component.name,
                spout.then(|| self.context.task_index()),
            )
        })
    }

    /// The watermark generator of a task whose output record is `T`: from the component's
    /// event-time declaration, or (`untimed`) one that only says when a spout is done.
    fn clock<T: Record>(&self, untimed: bool) -> Result<Option<OutClock>, EngineError> {
        let replayable = self.component.replayable;
        let (clock, field) = match &self.component.event_time {
            Some(et) => {
                let field = T::field_index(&et.field).ok_or_else(|| {
                    EngineError::Setup(format!(
                        "`{}` has no field `{}`",
                        std::any::type_name::<T>(),
                        et.field
                    ))
                })?;
                (
                    EventClock::new(Some(et.lag_ms), et.idle_timeout_ms, replayable),
                    Some(field),
                )
            }
            None if untimed => (EventClock::new(None, None, replayable), None),
            None => return Ok(None),
        };
        Ok(Some(OutClock {
            clock,
            field,
            holds: self.windowed,
        }))
    }
}

/// A component's user code, type-erased.
pub(crate) trait ComponentCode: Send + Sync {
    fn instantiate(&self, instance: Instance<'_>) -> Result<Task, EngineError>;
    /// The codec of the batches arriving on subscription `input` (none for a spout).
    fn input_codec(&self, input: usize) -> Option<Arc<dyn crate::engine::PayloadCodec>>;
    /// A fresh state machine of a stateful bolt's task (none for other components).
    /// `dedup_retention_ms` (exactly-once): how long it remembers the inputs it applied.
    fn state_machine(
        &self,
        _streams: Arc<[Arc<str>]>,
        _task_index: u32,
        _dedup_retention_ms: Option<i64>,
    ) -> Option<Box<dyn crate::engine::StateMachine>> {
        None
    }
}

/// Builds the typed output streams of a task whose streams all carry `T`.
pub(crate) fn build_streams<T: Record>(
    streams: Vec<StreamPlan>,
    sender_index: u32,
    tracked: bool,
    exact: bool,
) -> Result<Vec<StreamOut<T>>, EngineError> {
    streams
        .into_iter()
        .map(|stream| {
            let routes = stream
                .routes
                .into_iter()
                .map(|plan| build_route::<T>(plan, sender_index, tracked, exact))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(StreamOut {
                name: stream.name,
                direct: stream.direct,
                routes,
            })
        })
        .collect()
}

fn build_route<T: Record>(
    plan: RoutePlan,
    sender_index: u32,
    tracked: bool,
    exact: bool,
) -> Result<Route<T>, EngineError> {
    let key = match &plan.grouping {
        Grouping::Fields(names) => {
            let indices = names
                .iter()
                .map(|name| {
                    T::field_index(name).ok_or_else(|| {
                        EngineError::Setup(format!(
                            "`{}` has no field `{name}`",
                            std::any::type_name::<T>()
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            KeyExtract::Fields(indices.into_boxed_slice())
        }
        Grouping::KeyBy => {
            let any = plan.key_fn.ok_or_else(|| {
                EngineError::Setup("a key-by grouping without its key function".into())
            })?;
            let f = any.downcast_ref::<KeyFn<T>>().ok_or_else(|| {
                EngineError::Setup(format!(
                    "the key function does not take `{}`",
                    std::any::type_name::<T>()
                ))
            })?;
            KeyExtract::Func(f.clone())
        }
        _ => KeyExtract::None,
    };
    if plan.setup.tasks == 0 {
        return Err(EngineError::Setup("a route with no target task".into()));
    }
    let router = Router::new(
        &plan.grouping,
        plan.setup.tasks,
        &plan.setup.preferred,
        sender_index,
    );
    Ok(Route::new(
        router,
        key,
        plan.setup.first_link,
        plan.setup.tasks,
        tracked,
        exact,
    ))
}

/// The prototype every task clones. Behind a mutex because user components need only be `Send`,
/// while the built topology is shared between threads; it is locked once per task start.
pub(crate) struct Proto<T>(Mutex<T>);

impl<T: Clone> Proto<T> {
    pub(crate) fn new(value: T) -> Self {
        Proto(Mutex::new(value))
    }

    fn instance(&self) -> T {
        // A panic while cloning cannot leave the prototype half-written: clone takes `&self`.
        match self.0.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The code of a spout component.
pub(crate) struct SpoutCode<S: Spout> {
    pub(crate) proto: Proto<S>,
}

impl<S: Spout> ComponentCode for SpoutCode<S> {
    fn instantiate(&self, i: Instance<'_>) -> Result<Task, EngineError> {
        let tracked = i.tracking_seed.is_some();
        let clock = i.clock::<S::Out>(true)?;
        let salt = i.id_salt(true);
        let streams = build_streams::<S::Out>(i.streams, i.context.task_index(), tracked, i.exact)?;
        let mut emitter = Emitter::new(streams, i.batch_size, i.tracking_seed, salt, false);
        if let Some(clock) = clock {
            emitter = emitter.with_clock(clock);
        }
        let out = SpoutEmitter::new(emitter);
        Ok(Task::Spout(Box::new(SpoutTaskImpl::new(
            self.proto.instance(),
            i.context,
            out,
            i.exact,
        ))))
    }

    fn input_codec(&self, _input: usize) -> Option<Arc<dyn crate::engine::PayloadCodec>> {
        None
    }
}

/// The code of a plain bolt component, with the adapters of its subscriptions.
pub(crate) struct BoltCode<B: Bolt> {
    pub(crate) proto: Proto<B>,
    pub(crate) inputs: Arc<[Arc<dyn InputAdapter<B::In>>]>,
}

impl<B: Bolt> ComponentCode for BoltCode<B> {
    fn input_codec(&self, input: usize) -> Option<Arc<dyn crate::engine::PayloadCodec>> {
        self.inputs.get(input).map(|a| a.codec())
    }

    fn instantiate(&self, i: Instance<'_>) -> Result<Task, EngineError> {
        let tracked = i.tracking_seed.is_some();
        let clock = i.clock::<B::Out>(false)?;
        let salt = i.id_salt(false);
        let streams = build_streams::<B::Out>(i.streams, i.context.task_index(), tracked, i.exact)?;
        let mut out = Emitter::new(streams, i.batch_size, i.tracking_seed, salt, B::MANUAL_ACK);
        if let Some(clock) = clock {
            out = out.with_clock(clock);
        }
        Ok(Task::Bolt(Box::new(BoltTaskImpl::new(
            self.proto.instance(),
            i.context,
            Arc::clone(&self.inputs),
            out,
            i.channels,
        ))))
    }
}

/// The code of a stateful bolt component.
pub(crate) struct StatefulCode<B: StatefulBolt> {
    pub(crate) proto: Proto<B>,
    pub(crate) inputs: Arc<[Arc<dyn InputAdapter<B::In>>]>,
}

impl<B: StatefulBolt> ComponentCode for StatefulCode<B> {
    fn input_codec(&self, input: usize) -> Option<Arc<dyn crate::engine::PayloadCodec>> {
        self.inputs.get(input).map(|a| a.codec())
    }

    fn instantiate(&self, i: Instance<'_>) -> Result<Task, EngineError> {
        let tracked = i.tracking_seed.is_some();
        let names: Arc<[Arc<str>]> = i.streams.iter().map(|s| Arc::clone(&s.name)).collect();
        let index = i.context.task_index();
        let salt = i.id_salt(false);
        let streams = build_streams::<B::Out>(i.streams, index, tracked, i.exact)?;
        let out = Emitter::new(streams, i.batch_size, i.tracking_seed, salt, false);
        let core = StateCore::new(self.proto.instance(), names, index, i.dedup_retention_ms);
        Ok(Task::Bolt(Box::new(StatefulTaskImpl::new(
            core,
            i.replicated,
            Arc::clone(&self.inputs),
            out,
            i.channels,
        ))))
    }

    fn state_machine(
        &self,
        streams: Arc<[Arc<str>]>,
        task_index: u32,
        dedup_retention_ms: Option<i64>,
    ) -> Option<Box<dyn crate::engine::StateMachine>> {
        Some(Box::new(StateCore::new(
            self.proto.instance(),
            streams,
            task_index,
            dedup_retention_ms,
        )))
    }
}

/// The code of a windowed bolt, of either mode (whole windows or aggregation).
pub(crate) struct WindowCode<M: WindowMode> {
    pub(crate) proto: Proto<M>,
    pub(crate) inputs: Arc<[Arc<dyn InputAdapter<M::In>>]>,
}

impl<M: WindowMode> ComponentCode for WindowCode<M> {
    fn input_codec(&self, input: usize) -> Option<Arc<dyn crate::engine::PayloadCodec>> {
        self.inputs.get(input).map(|a| a.codec())
    }

    fn instantiate(&self, i: Instance<'_>) -> Result<Task, EngineError> {
        let window = i
            .component
            .window
            .as_ref()
            .map(|w| w.spec.clone())
            .ok_or_else(|| EngineError::Setup("a windowed bolt without a window".into()))?;
        let tracked = i.tracking_seed.is_some();
        let index = i.context.task_index();
        let (late_plans, out_plans): (Vec<_>, Vec<_>) = i
            .streams
            .into_iter()
            .partition(|s| window.late_stream && &*s.name == LATE_STREAM);
        let out = Emitter::new(
            build_streams::<M::Out>(out_plans, index, tracked, false)?,
            i.batch_size,
            i.tracking_seed,
            None,
            false,
        );
        let late = if late_plans.is_empty() {
            None
        } else {
            Some(Emitter::new(
                build_streams::<M::In>(late_plans, index, tracked, false)?,
                i.batch_size,
                i.tracking_seed.map(|s| s.rotate_left(17) ^ 0x5bd1_e995),
                None,
                false,
            ))
        };
        let field = |name: &str| {
            M::In::field_index(name).ok_or_else(|| {
                EngineError::Setup(format!(
                    "`{}` has no field `{name}`",
                    std::any::type_name::<M::In>()
                ))
            })
        };
        let key_fields = keyed_fields(&i.component.inputs)
            .iter()
            .map(|f| field(f))
            .collect::<Result<Vec<_>, _>>()?;
        let time_field = match &window.time {
            TimeDomain::Event { field: name } if !window.is_count() => Some(field(name)?),
            _ => None,
        };
        // Watermark alignment: past `max_open_windows`, an upstream may run one window ahead of
        // the slowest one.
        let max_drift_ms = match window.kind {
            WindowKind::Sliding {
                size: Size::TimeMs(s),
                ..
            } => s,
            _ => horizon(&window),
        };
        let key = if key_fields.is_empty() {
            KeyExtract::None
        } else {
            KeyExtract::Fields(key_fields.into_boxed_slice())
        };
        let input = WindowInput::new(
            key,
            time_field,
            i.channels,
            max_drift_ms,
            i.max_open_windows,
        );
        let core = WindowCore::new(&window).map_err(|e| EngineError::Setup(e.to_string()))?;
        let mut mode = self.proto.instance();
        mode.limit_previous(i.max_open_windows);
        Ok(Task::Bolt(Box::new(WindowedTask::new(
            mode,
            i.context,
            Arc::clone(&self.inputs),
            WindowIo::new(out, late),
            core,
            input,
        ))))
    }
}

/// The key fields of a windowed bolt: those of its fields grouping, when every input has the
/// same one (validated by `build()`); none for unkeyed windows.
pub(crate) fn keyed_fields(inputs: &[InputIr]) -> &[String] {
    match inputs.first().map(|i| &i.grouping) {
        Some(Grouping::Fields(fields))
            if inputs
                .iter()
                .all(|i| matches!(&i.grouping, Grouping::Fields(f) if f == fields)) =>
        {
            fields
        }
        _ => &[],
    }
}
