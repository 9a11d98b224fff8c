//! [`Topology`]: a built, validated topology, and [`TopologyIr`]: its plain-data description
//! that can be printed, serialized, diffed and drawn as Graphviz DOT.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::component::TaskContext;
use crate::config::{Guarantee, TopologyConfig};
use crate::engine::code::{ComponentCode, Instance, RoutePlan, StreamPlan};
use crate::engine::route::AnyKeyFn;
use crate::engine::{EngineError, Task, TaskSetup};
use crate::event_time::EventTime;
use crate::grouping::Grouping;
use crate::record::FieldType;
use crate::window::Window;

/// The name of every component's default output stream.
pub const DEFAULT_STREAM: &str = "default";

/// A topology as plain data: what runs where and how it is wired, without the user code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopologyIr {
    /// The topology's name.
    pub name: String,
    /// Its delivery guarantee.
    pub guarantee: Guarantee,
    /// Its configuration.
    pub config: TopologyConfig,
    /// Its components, spouts and bolts, in declaration order.
    pub components: Vec<ComponentIr>,
}

/// One component: a spout or a bolt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComponentIr {
    /// The component's name, unique in the topology; also the identity of its state.
    pub name: String,
    /// Spout or bolt.
    pub kind: ComponentKind,
    /// The number of tasks.
    pub parallelism: u32,
    /// The record type a bolt consumes (`None` for spouts).
    pub input_type: Option<RecordIr>,
    /// The output streams; the first is always [`DEFAULT_STREAM`].
    pub streams: Vec<StreamIr>,
    /// The subscriptions (bolts only), in declaration order.
    pub inputs: Vec<InputIr>,
    /// The tick interval of a bolt that asked for ticks.
    pub tick_every: Option<Duration>,
    /// Whether a spout replays failed messages.
    pub replayable: bool,
    /// Whether a spout can be rewound to a checkpoint.
    #[serde(default)]
    pub rewindable: bool,
    /// Whether a bolt acks its inputs itself.
    pub manual_ack: bool,
    /// Whether a bolt's effects are idempotent ([`Bolt::IDEMPOTENT`](crate::Bolt::IDEMPOTENT)):
    /// what exactly-once asks of a sink.
    #[serde(default)]
    pub idempotent: bool,
    /// The window of a windowed bolt.
    pub window: Option<WindowIr>,
    /// The event time of the component's output, where its timestamps originate (declared with
    /// `.event_time(..)`, or moved here by `build()` from a window downstream).
    #[serde(default)]
    pub event_time: Option<EventTime>,
    /// How a stateful bolt's state is kept (`None` for every other component).
    #[serde(default)]
    pub stateful: Option<StatefulIr>,
}

/// How a stateful bolt's state is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatefulIr {
    /// The replicas of each task's state in a cluster (odd: R = 2k + 1 survive k failures).
    pub replicas: u32,
    /// Where a replica keeps its log and snapshots.
    pub storage: crate::stateful::StateStorage,
}

/// The window of a windowed bolt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowIr {
    /// The window specification.
    pub spec: Window,
    /// Whether windows keep an accumulator (incremental aggregation) rather than their tuples.
    pub aggregate: bool,
}

/// What kind of component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ComponentKind {
    /// A source.
    Spout,
    /// A processing step.
    Bolt,
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComponentKind::Spout => "spout",
            ComponentKind::Bolt => "bolt",
        })
    }
}

/// One output stream of a component.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamIr {
    /// The stream's name.
    pub name: String,
    /// Whether it is a direct stream (the emitter picks the task).
    pub direct: bool,
    /// The records it carries.
    pub record: RecordIr,
}

/// A record type as `build()` sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordIr {
    /// The Rust type's name.
    pub type_name: String,
    /// Its fields.
    pub fields: Vec<FieldIr>,
}

impl RecordIr {
    /// The position of the field called `name`.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The short type name (the last path segment).
    pub fn short_name(&self) -> &str {
        let base = self.type_name.split('<').next().unwrap_or(&self.type_name);
        base.rsplit("::").next().unwrap_or(base)
    }
}

/// One field of a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldIr {
    /// The field's name.
    pub name: String,
    /// Its type.
    pub ty: FieldType,
}

/// One subscription of a bolt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputIr {
    /// The upstream component.
    pub component: String,
    /// The upstream stream.
    pub stream: String,
    /// How the stream is spread over the bolt's tasks.
    pub grouping: Grouping,
}

impl TopologyIr {
    /// The index of the component called `name`.
    pub fn component_index(&self, name: &str) -> Option<usize> {
        self.components.iter().position(|c| c.name == name)
    }

    /// The total number of tasks.
    pub fn task_count(&self) -> u64 {
        self.components
            .iter()
            .map(|c| u64::from(c.parallelism))
            .sum()
    }

    /// The topology as a Graphviz DOT graph: one node per component (with its parallelism), one
    /// edge per subscription (with its stream and grouping).
    pub fn to_dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", quote(&self.name));
        let _ = writeln!(out, "  rankdir=LR;");
        for c in &self.components {
            let shape = match c.kind {
                ComponentKind::Spout => "invhouse",
                ComponentKind::Bolt => "box",
            };
            // `\n` is DOT's line break inside a label, so it is added after escaping the name.
            let _ = writeln!(
                out,
                "  {} [shape={shape}, label=\"{}\\nx{}\"];",
                quote(&c.name),
                escape(&c.name),
                c.parallelism
            );
        }
        for c in &self.components {
            for input in &c.inputs {
                let label = if input.stream == DEFAULT_STREAM {
                    input.grouping.to_string()
                } else {
                    format!("{}: {}", input.stream, input.grouping)
                };
                let _ = writeln!(
                    out,
                    "  {} -> {} [label={}];",
                    quote(&input.component),
                    quote(&c.name),
                    quote(&label)
                );
            }
        }
        out.push_str("}\n");
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn quote(s: &str) -> String {
    format!("\"{}\"", escape(s))
}

impl fmt::Display for TopologyIr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "topology `{}` ({}, {} tasks)",
            self.name,
            self.guarantee,
            self.task_count()
        )?;
        for c in &self.components {
            write!(f, "  {} `{}` x{}", c.kind, c.name, c.parallelism)?;
            if let Some(input) = &c.input_type {
                write!(f, " takes {}", input.short_name())?;
            }
            if let Some(w) = &c.window {
                write!(
                    f,
                    " window {:?} on {:?}{}",
                    w.spec.kind,
                    w.spec.time,
                    if w.aggregate { " (aggregate)" } else { "" }
                )?;
            }
            writeln!(f)?;
            for input in &c.inputs {
                writeln!(
                    f,
                    "    <- {}.{} ({})",
                    input.component, input.stream, input.grouping
                )?;
            }
            for s in &c.streams {
                if s.record.type_name == "()" {
                    writeln!(f, "    -> {} (nothing: a sink)", s.name)?;
                    continue;
                }
                let fields: Vec<_> = s
                    .record
                    .fields
                    .iter()
                    .map(|fi| format!("{}: {:?}", fi.name, fi.ty))
                    .collect();
                writeln!(
                    f,
                    "    -> {}{} {} {{ {} }}",
                    s.name,
                    if s.direct { " (direct)" } else { "" },
                    s.record.short_name(),
                    fields.join(", ")
                )?;
            }
        }
        Ok(())
    }
}

/// The code of one component and its subscriptions' key functions.
#[derive(Clone)]
pub(crate) struct ComponentEntry {
    pub(crate) code: Arc<dyn ComponentCode>,
    /// For each input of the component, the `key_by` closure if it has one.
    pub(crate) key_fns: Vec<Option<AnyKeyFn>>,
}

/// A built, validated topology: its [`TopologyIr`] plus the user code the runtime instantiates.
///
/// Cheap to clone; the user code is shared, and every task gets its own clone of its component.
#[derive(Clone)]
pub struct Topology {
    ir: TopologyIr,
    entries: Arc<[ComponentEntry]>,
    warnings: Vec<String>,
}

impl Topology {
    pub(crate) fn new(ir: TopologyIr, entries: Vec<ComponentEntry>, warnings: Vec<String>) -> Self {
        Topology {
            ir,
            entries: entries.into(),
            warnings,
        }
    }

    /// The plain-data description.
    pub fn ir(&self) -> &TopologyIr {
        &self.ir
    }

    /// The topology's name.
    pub fn name(&self) -> &str {
        &self.ir.name
    }

    /// Things `build()` accepted but that are probably mistakes.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The topology as a Graphviz DOT graph.
    pub fn to_dot(&self) -> String {
        self.ir.to_dot()
    }

    /// The codec of the batches that reach component `component` on its subscription `input`,
    /// for links between processes (`None` for a spout or an unknown input).
    pub fn input_codec(
        &self,
        component: usize,
        input: usize,
    ) -> Option<std::sync::Arc<dyn crate::engine::PayloadCodec>> {
        self.entries.get(component)?.code.input_codec(input)
    }

    /// A fresh state machine (its state at `Default`) for task `task_index` of stateful bolt
    /// `component`, for a replica of the task's Raft group; `None` for any other component.
    pub fn state_machine(
        &self,
        component: usize,
        task_index: u32,
    ) -> Option<Box<dyn crate::engine::StateMachine>> {
        let ir = self.ir.components.get(component)?;
        let streams: Arc<[Arc<str>]> = ir
            .streams
            .iter()
            .map(|s| Arc::from(s.name.as_str()))
            .collect();
        self.entries.get(component)?.code.state_machine(
            streams,
            task_index,
            self.dedup_retention_ms(),
        )
    }

    /// Creates the task `setup` describes, of component `component` (an index into the IR's
    /// components). Called by the runtime once per task.
    pub fn instantiate(&self, component: usize, setup: &TaskSetup) -> Result<Task, EngineError> {
        let ir =
            self.ir.components.get(component).ok_or_else(|| {
                EngineError::Setup(format!("no component with index {component}"))
            })?;
        let entry = &self.entries[component];
        if setup.outputs.len() != ir.streams.len() {
            return Err(EngineError::Setup(format!(
                "`{}` has {} streams, the setup has {}",
                ir.name,
                ir.streams.len(),
                setup.outputs.len()
            )));
        }
        if setup.task_index >= ir.parallelism {
            return Err(EngineError::Setup(format!(
                "`{}` has {} tasks, the setup asks for task index {}",
                ir.name, ir.parallelism, setup.task_index
            )));
        }
        let mut streams = Vec::with_capacity(ir.streams.len());
        for (stream, routes) in ir.streams.iter().zip(&setup.outputs) {
            let mut plans = Vec::with_capacity(routes.len());
            for route in routes {
                let consumer = self.ir.components.get(route.consumer).ok_or_else(|| {
                    EngineError::Setup(format!("no consumer with index {}", route.consumer))
                })?;
                let input = consumer.inputs.get(route.input).ok_or_else(|| {
                    EngineError::Setup(format!("`{}` has no input {}", consumer.name, route.input))
                })?;
                if input.component != ir.name || input.stream != stream.name {
                    return Err(EngineError::Setup(format!(
                        "input {} of `{}` does not subscribe to `{}.{}`",
                        route.input, consumer.name, ir.name, stream.name
                    )));
                }
                if route.tasks != consumer.parallelism {
                    return Err(EngineError::Setup(format!(
                        "route to `{}` has {} tasks, the component {}",
                        consumer.name, route.tasks, consumer.parallelism
                    )));
                }
                let key_fn = self.entries[route.consumer]
                    .key_fns
                    .get(route.input)
                    .cloned()
                    .flatten();
                plans.push(RoutePlan {
                    setup: route.clone(),
                    grouping: input.grouping.clone(),
                    key_fn,
                });
            }
            streams.push(StreamPlan {
                name: Arc::from(stream.name.as_str()),
                direct: stream.direct,
                routes: plans,
            });
        }
        let context = TaskContext::new(
            Arc::from(self.ir.name.as_str()),
            Arc::from(ir.name.as_str()),
            setup.task_id,
            setup.task_index,
            ir.parallelism,
            self.ir.guarantee,
        );
        let tracking_seed = self.ir.guarantee.is_tracked().then_some(setup.id_seed);
        entry.code.instantiate(Instance {
            context,
            streams,
            batch_size: self.ir.config.batch_size,
            max_open_windows: self.ir.config.max_open_windows,
            tracking_seed,
            component: ir,
            channels: &setup.channels,
            replicated: setup.replicated,
            windowed: self.ir.components.iter().any(|c| c.window.is_some()),
            exact: self.is_exactly_once(),
            dedup_retention_ms: self.dedup_retention_ms(),
        })
    }

    /// Whether the topology runs exactly-once (its tuples carry deterministic ids, and its
    /// stateful tasks' snapshots hold the ids they applied).
    pub fn is_exactly_once(&self) -> bool {
        self.ir.guarantee == crate::config::Guarantee::ExactlyOnce
    }

    fn dedup_retention_ms(&self) -> Option<i64> {
        self.is_exactly_once()
            .then(|| i64::try_from(self.ir.config.dedup_retention.as_millis()).unwrap_or(i64::MAX))
    }

    /// The user's state in a snapshot of one of this topology's stateful tasks (under
    /// exactly-once a snapshot also holds the ids the task applied): what a run exports as
    /// a task's final state. Bad bytes are an error.
    pub fn exported_state(&self, snapshot: &[u8]) -> Result<Vec<u8>, crate::engine::EngineError> {
        crate::engine::exported_state(snapshot, self.is_exactly_once())
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ir.fmt(f)
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology").field("ir", &self.ir).finish()
    }
}
