//! The typed code of each component, kept behind a trait object in the built topology, and how
//! it turns a task's setup into a running [`Task`].

use std::sync::{Arc, Mutex};

use crate::component::{Bolt, Spout, TaskContext};
use crate::emitter::{Emitter, SpoutEmitter, StreamOut};
use crate::engine::bolt_task::BoltTaskImpl;
use crate::engine::input::InputAdapter;
use crate::engine::route::{AnyKeyFn, KeyExtract, KeyFn, Route};
use crate::engine::spout_task::SpoutTaskImpl;
use crate::engine::{EngineError, RouteSetup, Task};
use crate::grouping::Grouping;
use crate::record::Record;
use crate::routing::Router;

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

/// A component's user code, type-erased.
pub(crate) trait ComponentCode: Send + Sync {
    fn instantiate(
        &self,
        context: TaskContext,
        streams: Vec<StreamPlan>,
        batch_size: usize,
        tracking_seed: Option<u64>,
    ) -> Result<Task, EngineError>;
}

/// Builds the typed output streams of a task whose streams all carry `T`.
pub(crate) fn build_streams<T: Record>(
    streams: Vec<StreamPlan>,
    sender_index: u32,
    tracked: bool,
) -> Result<Vec<StreamOut<T>>, EngineError> {
    streams
        .into_iter()
        .map(|stream| {
            let routes = stream
                .routes
                .into_iter()
                .map(|plan| build_route::<T>(plan, sender_index, tracked))
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
    fn instantiate(
        &self,
        context: TaskContext,
        streams: Vec<StreamPlan>,
        batch_size: usize,
        tracking_seed: Option<u64>,
    ) -> Result<Task, EngineError> {
        let streams =
            build_streams::<S::Out>(streams, context.task_index(), tracking_seed.is_some())?;
        let out = SpoutEmitter::new(Emitter::new(streams, batch_size, tracking_seed, false));
        Ok(Task::Spout(Box::new(SpoutTaskImpl::new(
            self.proto.instance(),
            context,
            out,
        ))))
    }
}

/// The code of a plain bolt component, with the adapters of its subscriptions.
pub(crate) struct BoltCode<B: Bolt> {
    pub(crate) proto: Proto<B>,
    pub(crate) inputs: Arc<[Arc<dyn InputAdapter<B::In>>]>,
}

impl<B: Bolt> ComponentCode for BoltCode<B> {
    fn instantiate(
        &self,
        context: TaskContext,
        streams: Vec<StreamPlan>,
        batch_size: usize,
        tracking_seed: Option<u64>,
    ) -> Result<Task, EngineError> {
        let streams =
            build_streams::<B::Out>(streams, context.task_index(), tracking_seed.is_some())?;
        let out = Emitter::new(streams, batch_size, tracking_seed, B::MANUAL_ACK);
        Ok(Task::Bolt(Box::new(BoltTaskImpl::new(
            self.proto.instance(),
            context,
            Arc::clone(&self.inputs),
            out,
        ))))
    }
}
