//! The one validator behind `build()` and [`TopologyIr::validate`]: every structural check of a
//! topology, run on its plain-data description, returning every error found.

use std::collections::{HashMap, HashSet};

use crate::config::{Guarantee, TopologyConfig, limits};
use crate::error::{BuildErrors, TopologyError};
use crate::grouping::Grouping;
use crate::topology::{ComponentIr, ComponentKind, TopologyIr, WindowIr};
use crate::window::{Size, TimeDomain, WindowKind};

/// The most replicas a stateful bolt's task may have.
pub const MAX_REPLICAS: u32 = 7;

/// The longest component or stream name.
pub const MAX_NAME_LEN: usize = 128;

impl TopologyIr {
    /// Runs every check `build()` runs that needs no user code (all but type checks), for a
    /// topology described by name: a spec file, or an IR received from elsewhere.
    pub fn validate(&self) -> Result<(), BuildErrors> {
        let errors = validate(self);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(BuildErrors(errors))
        }
    }
}

fn check_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("names cannot be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("names are at most 128 bytes")
    } else if name.starts_with("__") {
        Some("names starting with `__` are reserved for the runtime")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        Some("names use ASCII letters, digits, `_`, `-` and `.` only")
    } else {
        None
    }
}

/// Every structural error of `ir`, in a stable order.
pub(crate) fn validate(ir: &TopologyIr) -> Vec<TopologyError> {
    let mut errors = Vec::new();

    if let Err(config_errors) = ir.config.validate() {
        errors.extend(config_errors.into_iter().map(TopologyError::Config));
    }
    if let Some(reason) = check_name(&ir.name) {
        errors.push(TopologyError::InvalidName {
            name: ir.name.clone(),
            reason,
        });
    }

    // Names and counts.
    let mut seen = HashSet::new();
    let mut duplicates = HashSet::new();
    for c in &ir.components {
        if let Some(reason) = check_name(&c.name) {
            errors.push(TopologyError::InvalidName {
                name: c.name.clone(),
                reason,
            });
        }
        if !seen.insert(c.name.as_str()) && duplicates.insert(c.name.as_str()) {
            errors.push(TopologyError::DuplicateName(c.name.clone()));
        }
        if c.parallelism == 0 {
            errors.push(TopologyError::BadCount {
                component: c.name.clone(),
            });
        } else if c.parallelism > limits::MAX_PARALLELISM {
            errors.push(TopologyError::TooManyTasks {
                scope: format!("`{}`", c.name),
                count: u64::from(c.parallelism),
                max: u64::from(limits::MAX_PARALLELISM),
            });
        }
        if let Some(state) = &c.stateful {
            if state.replicas % 2 == 0 || state.replicas > MAX_REPLICAS {
                errors.push(TopologyError::BadReplicas {
                    component: c.name.clone(),
                    replicas: state.replicas,
                    max: MAX_REPLICAS,
                });
            }
            for s in c.streams.iter().filter(|s| s.direct) {
                errors.push(TopologyError::StatefulDirectStream {
                    component: c.name.clone(),
                    stream: s.name.clone(),
                });
            }
        }
        let mut streams = HashSet::new();
        for s in &c.streams {
            if let Some(reason) = check_name(&s.name) {
                errors.push(TopologyError::InvalidName {
                    name: s.name.clone(),
                    reason,
                });
            }
            if !streams.insert(s.name.as_str()) {
                errors.push(TopologyError::DuplicateStream {
                    component: c.name.clone(),
                    stream: s.name.clone(),
                });
            }
        }
    }
    let total = ir.task_count();
    if total > u64::from(limits::MAX_TASKS) {
        errors.push(TopologyError::TooManyTasks {
            scope: "the topology".to_owned(),
            count: total,
            max: u64::from(limits::MAX_TASKS),
        });
    }
    if !ir.components.iter().any(|c| c.kind == ComponentKind::Spout) {
        errors.push(TopologyError::NoSpouts);
    }

    // Subscriptions.
    let by_name: HashMap<&str, &ComponentIr> =
        ir.components.iter().map(|c| (c.name.as_str(), c)).collect();
    for c in &ir.components {
        if c.kind == ComponentKind::Bolt && c.inputs.is_empty() {
            errors.push(TopologyError::NoInputs(c.name.clone()));
        }
        let mut subscribed = HashSet::new();
        for input in &c.inputs {
            check_input(c, input, &by_name, &mut subscribed, &mut errors);
        }
    }

    errors.extend(find_cycles(ir));

    for c in &ir.components {
        if let Some(window) = &c.window {
            check_window(ir, c, window, &mut errors);
        }
    }

    if ir.config.checkpoint_interval.is_some() {
        for c in ir
            .components
            .iter()
            .filter(|c| c.kind == ComponentKind::Spout && !c.rewindable)
        {
            errors.push(TopologyError::NotRewindable {
                component: c.name.clone(),
            });
        }
    }

    // Guarantees.
    if ir.guarantee == Guarantee::ExactlyOnce {
        for c in ir
            .components
            .iter()
            .filter(|c| c.kind == ComponentKind::Spout)
        {
            if !c.replayable {
                errors.push(TopologyError::GuaranteeUnsupported {
                    component: c.name.clone(),
                    guarantee: ir.guarantee,
                    needs: "a replayable spout (Spout::REPLAYABLE)",
                });
            }
        }
        exactly_once_bolts(ir, &mut errors);
    }
    errors
}

/// What exactly-once asks of bolts: a replay must change nothing twice. A stateful bolt
/// skips what it applied, but only if its state survives a failure (replicated, or
/// checkpointed); a sink must be idempotent; a window would count a replay again.
fn exactly_once_bolts(ir: &TopologyIr, errors: &mut Vec<TopologyError>) {
    let subscribed: HashSet<&str> = ir
        .components
        .iter()
        .flat_map(|c| c.inputs.iter().map(|i| i.component.as_str()))
        .collect();
    let checkpointed = ir.config.checkpoint_interval.is_some();
    for c in ir
        .components
        .iter()
        .filter(|c| c.kind == ComponentKind::Bolt)
    {
        let needs = if c.window.is_some() {
            Some(
                "a bolt without a window (a replayed tuple would count again in a window: \
                 windows do not run under exactly-once yet)",
            )
        } else if let Some(state) = c.stateful {
            let scattered = c.parallelism > 1
                && c.inputs
                    .iter()
                    .any(|i| matches!(i.grouping, Grouping::Shuffle | Grouping::LocalOrShuffle));
            if scattered {
                Some(
                    "inputs routed by key (fields, key_by, global, all or direct), not shuffled: \
                     each task remembers what it applied, and a shuffled replay can reach another task",
                )
            } else {
                (state.replicas < 3 && !checkpointed).then_some(
                    "its state replicated (.replicas(3) or more) or checkpointed \
                     (TopologyConfig::checkpoint_interval), so that what it applied survives a failure",
                )
            }
        } else {
            (!subscribed.contains(c.name.as_str()) && !c.idempotent).then_some(
                "an idempotent sink (Bolt::IDEMPOTENT, keyed by Tuple::id): a replay runs it again",
            )
        };
        if let Some(needs) = needs {
            errors.push(TopologyError::GuaranteeUnsupported {
                component: c.name.clone(),
                guarantee: ir.guarantee,
                needs,
            });
        }
    }
}

fn check_input(
    c: &ComponentIr,
    input: &crate::topology::InputIr,
    by_name: &HashMap<&str, &ComponentIr>,
    subscribed: &mut HashSet<(String, String)>,
    errors: &mut Vec<TopologyError>,
) {
    if !subscribed.insert((input.component.clone(), input.stream.clone())) {
        errors.push(TopologyError::DuplicateInput {
            component: c.name.clone(),
            upstream: input.component.clone(),
            stream: input.stream.clone(),
        });
    }
    let Some(upstream) = by_name.get(input.component.as_str()) else {
        errors.push(TopologyError::UnknownComponent {
            component: c.name.clone(),
            upstream: input.component.clone(),
        });
        return;
    };
    let Some(stream) = upstream.streams.iter().find(|s| s.name == input.stream) else {
        errors.push(TopologyError::UnknownStream {
            component: c.name.clone(),
            upstream: upstream.name.clone(),
            stream: input.stream.clone(),
        });
        return;
    };
    match &input.grouping {
        Grouping::Direct if !stream.direct => errors.push(TopologyError::DirectNotDeclared {
            component: c.name.clone(),
            upstream: upstream.name.clone(),
            stream: stream.name.clone(),
        }),
        Grouping::Direct => {}
        _ if stream.direct => errors.push(TopologyError::DirectRequired {
            component: c.name.clone(),
            upstream: upstream.name.clone(),
            stream: stream.name.clone(),
        }),
        Grouping::Fields(fields) if fields.is_empty() => errors.push(TopologyError::EmptyFields {
            component: c.name.clone(),
            upstream: upstream.name.clone(),
        }),
        Grouping::Fields(fields) => {
            for field in fields {
                match stream.record.fields.iter().find(|f| &f.name == field) {
                    None => errors.push(TopologyError::MissingField {
                        component: c.name.clone(),
                        upstream: upstream.name.clone(),
                        field: field.clone(),
                        available: stream
                            .record
                            .fields
                            .iter()
                            .map(|f| f.name.clone())
                            .collect(),
                    }),
                    Some(f) if !f.ty.is_hashable() => {
                        errors.push(TopologyError::FieldNotHashable {
                            component: c.name.clone(),
                            upstream: upstream.name.clone(),
                            field: field.clone(),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        _ => {}
    }
}

fn check_window(
    ir: &TopologyIr,
    c: &ComponentIr,
    window: &WindowIr,
    errors: &mut Vec<TopologyError>,
) {
    let bad = |reason: String| TopologyError::BadWindow {
        component: c.name.clone(),
        reason,
    };
    let spec = &window.spec;
    errors.extend(spec.check().into_iter().map(bad));
    let Some(input) = &c.input_type else {
        return;
    };
    let fields: Vec<String> = input.fields.iter().map(|f| f.name.clone()).collect();
    if let TimeDomain::Event { field } = &spec.time {
        if !field.is_empty() && !spec.is_count() {
            match input.fields.iter().find(|f| &f.name == field) {
                None => errors.push(bad(format!(
                    "event-time field `{field}` is not a field of `{}` (has {fields:?})",
                    input.short_name()
                ))),
                Some(f) if !f.ty.is_timestamp() => errors.push(TopologyError::NotATimestamp {
                    component: c.name.clone(),
                    field: field.clone(),
                    found: f.ty,
                }),
                Some(_) => {}
            }
        }
    }
    let any_fields = c
        .inputs
        .iter()
        .any(|i| matches!(i.grouping, Grouping::Fields(_)));
    let keys = crate::engine::code::keyed_fields(&c.inputs);
    if any_fields && keys.is_empty() {
        errors.push(bad(
            "the inputs of a windowed bolt must all use the same fields grouping (keyed \
             windows) or none (windows per task)"
                .into(),
        ));
    }
    for key in keys {
        if !fields.contains(key) {
            errors.push(bad(format!(
                "keyed windows read the key `{key}` from the bolt's input `{}`, which has \
                 no such field (has {fields:?})",
                input.short_name()
            )));
        }
    }
    if window.aggregate
        && matches!(
            spec.kind,
            WindowKind::Sliding {
                size: Size::Count(_),
                ..
            }
        )
    {
        errors.push(bad(
            "sliding count windows evict elements, which an accumulator cannot give back: use \
             a whole-window bolt (windowed) instead of aggregated"
                .into(),
        ));
    }
    if c.inputs
        .iter()
        .any(|i| matches!(i.grouping, Grouping::KeyBy))
    {
        errors.push(bad(
            "windows are keyed by a fields grouping, which they read from the tuple; a key_by \
             closure cannot key them (use fields(...))"
                .into(),
        ));
    }
    // Under a tracked guarantee a tuple stays in its tree until its window lets go of it.
    if ir.guarantee.is_tracked() {
        let length = match spec.kind {
            WindowKind::Tumbling {
                size: Size::TimeMs(s),
            } => Some(s),
            WindowKind::Sliding {
                size: Size::TimeMs(s),
                slide: Size::TimeMs(d),
            } => Some(s.saturating_add(d)),
            _ => None,
        };
        let timeout = i64::try_from(ir.config.message_timeout.as_millis()).unwrap_or(i64::MAX);
        if let Some(length) = length {
            let held = length
                .saturating_add(spec.lag_ms.unwrap_or(0))
                .saturating_add(spec.allowed_lateness_ms);
            if held >= timeout {
                errors.push(bad(format!(
                    "under {} a tuple is held until its window lets go of it: the window, lag \
                     and allowed lateness ({held} ms) must stay under the message timeout \
                     ({timeout} ms)",
                    ir.guarantee
                )));
            }
        }
    }
}

/// Finds the cycles among subscriptions: Kahn's algorithm removes every component not on or
/// behind a cycle, then a depth-first walk over what is left reports one path per cycle.
fn find_cycles(ir: &TopologyIr) -> Vec<TopologyError> {
    let n = ir.components.len();
    let index: HashMap<&str, usize> = ir
        .components
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    // Edges upstream -> subscriber, deduplicated.
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for (i, c) in ir.components.iter().enumerate() {
        let mut ups: Vec<usize> = c
            .inputs
            .iter()
            .filter_map(|input| index.get(input.component.as_str()).copied())
            .collect();
        ups.sort_unstable();
        ups.dedup();
        for u in ups {
            downstream[u].push(i);
            indegree[i] += 1;
        }
    }
    let mut queue: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut removed = vec![false; n];
    while let Some(u) = queue.pop() {
        removed[u] = true;
        for &d in &downstream[u] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                queue.push(d);
            }
        }
    }

    let mut errors = Vec::new();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; n];
    for start in 0..n {
        if removed[start] || state[start] != 0 {
            continue;
        }
        // Iterative DFS keeping the path, so deep graphs cannot overflow the stack.
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(top) = path.last_mut() {
            let (node, next) = *top;
            let Some(&d) = downstream[node].get(next) else {
                state[node] = 2;
                path.pop();
                continue;
            };
            top.1 += 1;
            if removed[d] {
                continue;
            }
            match state[d] {
                0 => {
                    state[d] = 1;
                    path.push((d, 0));
                }
                1 => {
                    let from = path.iter().position(|&(p, _)| p == d).unwrap_or(0);
                    let mut names: Vec<String> = path[from..]
                        .iter()
                        .map(|&(p, _)| ir.components[p].name.clone())
                        .collect();
                    names.push(ir.components[d].name.clone());
                    errors.push(TopologyError::Cycle { path: names });
                }
                _ => {}
            }
        }
    }
    errors
}

/// Things that are valid but probably mistakes.
pub(crate) fn warnings(ir: &TopologyIr) -> Vec<String> {
    let mut warnings = Vec::new();
    if ir.guarantee.is_tracked() {
        for c in &ir.components {
            let Some(window) = &c.window else { continue };
            if matches!(window.spec.kind, WindowKind::Session { .. }) {
                warnings.push(format!(
                    "`{}`: a session holds its tuples' trees until it closes; sessions longer \
                     than the message timeout time out and are replayed",
                    c.name
                ));
            }
        }
        for c in ir
            .components
            .iter()
            .filter(|c| c.kind == ComponentKind::Spout)
        {
            if !c.replayable {
                warnings.push(format!(
                    "spout `{}` is not replayable: under {} a failed message is reported to it \
                     but not re-emitted",
                    c.name, ir.guarantee
                ));
            }
        }
    } else if ir.config.max_spout_pending != TopologyConfig::default().max_spout_pending {
        warnings.push(format!(
            "max_spout_pending bounds ack trees, and {} tracks none: it has no effect (queue \
             bounds still hold the spouts back)",
            ir.guarantee
        ));
    }
    warnings
}
