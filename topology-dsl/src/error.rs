//! Build-time errors: [`TopologyError`] (one problem) and [`BuildErrors`] (all of them).

use std::fmt;

use crate::config::{ConfigError, Guarantee};
use crate::record::FieldType;

/// One problem found by `build()`. Each names the component at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// Two components share a name.
    #[error("component `{0}` is declared more than once")]
    DuplicateName(String),
    /// A component or stream name is empty, too long, uses odd characters or a reserved prefix.
    #[error("`{name}` is not a valid name: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A subscription names a component that does not exist.
    #[error("`{component}` subscribes to unknown component `{upstream}`")]
    UnknownComponent {
        /// The subscriber.
        component: String,
        /// The missing upstream.
        upstream: String,
    },
    /// A subscription names a stream its upstream does not declare.
    #[error("`{component}` subscribes to stream `{stream}` that `{upstream}` does not declare")]
    UnknownStream {
        /// The subscriber.
        component: String,
        /// The upstream.
        upstream: String,
        /// The missing stream.
        stream: String,
    },
    /// A component declares the same stream twice.
    #[error("`{component}` declares stream `{stream}` more than once")]
    DuplicateStream {
        /// The component.
        component: String,
        /// The stream.
        stream: String,
    },
    /// A bolt subscribes to the same stream twice.
    #[error("`{component}` subscribes to stream `{stream}` of `{upstream}` more than once")]
    DuplicateInput {
        /// The subscriber.
        component: String,
        /// The upstream.
        upstream: String,
        /// The stream.
        stream: String,
    },
    /// The subscriptions form a cycle (the path starts and ends at the same component).
    #[error("cycle: {}", .path.join(" -> "))]
    Cycle {
        /// The components on the cycle, the first repeated at the end.
        path: Vec<String>,
    },
    /// A fields grouping names a field the upstream record does not have.
    #[error(
        "`{component}` groups on field `{field}` that `{upstream}` does not emit (has {available:?})"
    )]
    MissingField {
        /// The subscriber.
        component: String,
        /// The upstream.
        upstream: String,
        /// The missing field.
        field: String,
        /// The fields the upstream record has.
        available: Vec<String>,
    },
    /// A fields grouping names an opaque field, which cannot be hashed.
    #[error(
        "`{component}` groups on field `{field}` of `{upstream}`, which is opaque and cannot be hashed"
    )]
    FieldNotHashable {
        /// The subscriber.
        component: String,
        /// The upstream.
        upstream: String,
        /// The field.
        field: String,
    },
    /// A fields grouping with no field.
    #[error("`{component}` has a fields grouping on `{upstream}` with no field (use global)")]
    EmptyFields {
        /// The subscriber.
        component: String,
        /// The upstream.
        upstream: String,
    },
    /// An event-time field that cannot carry time.
    #[error("`{component}`: event-time field `{field}` is {found}, expected a timestamp")]
    NotATimestamp {
        /// The windowed bolt.
        component: String,
        /// The field.
        field: String,
        /// Its type.
        found: FieldType,
    },
    /// A direct grouping on a stream that is not declared direct.
    #[error(
        "`{component}`: direct grouping needs `{upstream}` to declare `{stream}` as a direct stream"
    )]
    DirectNotDeclared {
        /// The subscriber.
        component: String,
        /// The upstream.
        upstream: String,
        /// The stream.
        stream: String,
    },
    /// A direct stream subscribed with another grouping.
    #[error(
        "`{component}`: stream `{stream}` of `{upstream}` is direct and needs a direct grouping"
    )]
    DirectRequired {
        /// The subscriber.
        component: String,
        /// The upstream.
        upstream: String,
        /// The stream.
        stream: String,
    },
    /// An invalid window specification.
    #[error("`{component}`: {reason}")]
    BadWindow {
        /// The windowed bolt.
        component: String,
        /// What is wrong.
        reason: String,
    },
    /// An event-time declaration is invalid, missing where timestamps originate, or in
    /// conflict with another.
    #[error("`{component}`: {reason}")]
    BadEventTime {
        /// The component at fault (the one that declares or needs event time).
        component: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The guarantee needs something this component does not provide.
    #[error("`{component}`: {guarantee} requires {needs}")]
    GuaranteeUnsupported {
        /// The component.
        component: String,
        /// The topology's guarantee.
        guarantee: Guarantee,
        /// What it needs.
        needs: &'static str,
    },
    /// Checkpoints are on and a spout cannot be rewound to one.
    #[error(
        "`{component}`: checkpoints (checkpoint_interval) need every spout to be rewindable \
         (Spout::REWINDABLE, with snapshot and restore): a restored run must emit again what \
         followed the checkpoint"
    )]
    NotRewindable {
        /// The spout.
        component: String,
    },
    /// Zero parallelism.
    #[error("`{component}`: parallelism must be at least 1")]
    BadCount {
        /// The component.
        component: String,
    },
    /// A stateful bolt's replica count is even, zero or too large.
    #[error(
        "`{component}`: replicas must be odd and between 1 and {max} (R = 2k + 1 replicas survive k failures), not {replicas}"
    )]
    BadReplicas {
        /// The component.
        component: String,
        /// The replicas asked for.
        replicas: u32,
        /// The most allowed.
        max: u32,
    },
    /// A stateful bolt declared a direct stream (its outputs come back from its replicated
    /// state machine, which picks no task).
    #[error("`{component}`: a stateful bolt cannot declare direct stream `{stream}`")]
    StatefulDirectStream {
        /// The component.
        component: String,
        /// The stream.
        stream: String,
    },
    /// More tasks than the runtime allows, for one component or the whole topology.
    #[error("{scope} asks for {count} tasks, more than the limit of {max}")]
    TooManyTasks {
        /// `` `component` `` or `the topology`.
        scope: String,
        /// The tasks asked for.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// A bolt with no subscription.
    #[error("bolt `{0}` has no inputs")]
    NoInputs(String),
    /// A topology without any spout.
    #[error("the topology has no spout")]
    NoSpouts,
    /// A subscription by name whose record types differ.
    #[error(
        "`{component}` takes `{expected}` but stream `{stream}` of `{upstream}` carries `{found}`"
    )]
    TypeMismatch {
        /// The subscriber.
        component: String,
        /// The upstream.
        upstream: String,
        /// The stream.
        stream: String,
        /// The subscriber's input type.
        expected: String,
        /// The stream's record type.
        found: String,
    },
    /// A key-by grouping without its key function (only `key_by` can make one).
    #[error(
        "`{component}` subscribes to `{upstream}` with key-by but no key function; use key_by()"
    )]
    KeyByWithoutFunction {
        /// The subscriber.
        component: String,
        /// The upstream.
        upstream: String,
    },
    /// A handle from another `TopologyBuilder`.
    #[error("`{component}` subscribes through a handle from another topology builder")]
    ForeignHandle {
        /// The subscriber.
        component: String,
    },
    /// An invalid configuration value.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Every problem `build()` found, in a stable order.
///
/// ```
/// use tempest_dsl::TopologyBuilder;
///
/// let errors = TopologyBuilder::new("empty").build().unwrap_err();
/// assert_eq!(errors.to_string(), "the topology has no spout");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildErrors(pub Vec<TopologyError>);

impl BuildErrors {
    /// The errors.
    pub fn errors(&self) -> &[TopologyError] {
        &self.0
    }
}

impl fmt::Display for BuildErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BuildErrors {}
