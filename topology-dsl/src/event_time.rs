//! [`EventTime`]: where a stream's timestamps and watermarks come from.
//!
//! Event time follows Flink's model. Timestamps are read where they originate, normally at the
//! spout (one watermark generator per spout task, as Flink assigns them per source split), or
//! after any bolt that makes them (Flink's `assignTimestampsAndWatermarks`). The generator's
//! watermark trails the largest timestamp emitted by the lag (bounded out-of-orderness:
//! `watermark = max_ts - lag - 1`) and travels downstream as a control message on every link,
//! in order with the batches of that link, to every downstream task whether or not data went
//! there. A task's watermark is the minimum over its input channels (upstream task x stream),
//! ignoring idle channels; it forwards that minimum to its own outputs.
//!
//! A spout that emits nothing for the idle timeout marks its channels idle, so they stop
//! holding the watermark back; its next tuple makes them active again. A finished spout sends
//! the largest watermark there is (`i64::MAX`).
//!
//! Under a tracked guarantee a spout's watermark never passes the timestamp of a tree it still
//! has in flight and that has not reached a window yet, nor of a failed tree it has not replayed
//! yet (a replayable spout replays a message under the same [`MsgId`](crate::MsgId)), so a tuple
//! that fails before its window and is replayed is not late because of its own failure. The
//! cost: a failed tree holds its spout's watermark until its replay is emitted, and a tuple
//! held long by a bolt that acks late (a manual-ack bolt that batches) holds it as long.
//!
//! **Source alignment** (Flink's watermark alignment of sources): with `.max_drift(d)`, a spout
//! task whose watermark is more than `d` ahead of the slowest task of its component stops
//! emitting until that one catches up, so a fast task cannot fill the windows downstream with
//! event time the slow one has not reached (behind a bolt that mixes the tasks' tuples, the
//! windows cannot tell them apart to hold the fast one back themselves). Tasks that are idle
//! (which needs an idle timeout) or done do not hold the others; a task that has emitted
//! nothing yet holds them at the beginning of time, as in Flink. A window's `.event_time(..)`
//! that `build()` moves up to the spouts brings alignment with it, with a drift of
//! [`ALIGN_STEPS`] of the window's step (the first window's, when several windows'
//! declarations reach one spout).
//!
//! ```
//! use std::time::Duration;
//! use tempest_dsl::EventTime;
//!
//! let et = EventTime::field("ts")
//!     .lag(Duration::from_millis(100))
//!     .idle_timeout(Duration::from_secs(2))
//!     .max_drift(Duration::from_secs(30));
//! assert_eq!(et.lag_ms, 100);
//! assert_eq!(et.idle_timeout_ms, Some(2000));
//! assert_eq!(et.max_drift_ms, Some(30_000));
//! ```

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::TopologyError;
use crate::topology::{ComponentIr, ComponentKind, TopologyIr};
use crate::window::TimeDomain;

/// The event time of a component's output: its timestamp field and watermark strategy.
/// Declared with `.event_time(..)` on a spout or a bolt, or moved up to the spouts by
/// `build()` from a window's `.event_time(..)` (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventTime {
    /// The timestamp field (milliseconds) of the component's output record.
    pub field: String,
    /// How far the watermark trails the largest timestamp emitted (bounded out-of-orderness).
    pub lag_ms: i64,
    /// A task that emits nothing for this long marks its outputs idle.
    pub idle_timeout_ms: Option<i64>,
    /// The window whose `.event_time(..)` `build()` moved here, if it was not declared here.
    pub derived_from: Option<String>,
    /// Source alignment (spouts): how far a task's watermark may run ahead of the slowest
    /// task of its component before it stops emitting; `None`: no alignment.
    #[serde(default)]
    pub max_drift_ms: Option<i64>,
}

/// How many of a window's steps (its size, its slide, or a session's gap) ahead of the slowest
/// spout task a spout task may run when `build()` moves the window's `.event_time(..)` up to
/// the spouts.
pub const ALIGN_STEPS: i64 = 8;

impl EventTime {
    /// Timestamps from field `name`, with no lag and no idle timeout.
    pub fn field(name: impl Into<String>) -> EventTime {
        EventTime {
            field: name.into(),
            lag_ms: 0,
            idle_timeout_ms: None,
            derived_from: None,
            max_drift_ms: None,
        }
    }

    /// The watermark trails the largest timestamp by `lag`: `watermark = max_ts - lag - 1`.
    pub fn lag(mut self, lag: Duration) -> EventTime {
        self.lag_ms = i64::try_from(lag.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// A task that emits nothing for `timeout` marks its outputs idle, so they stop holding the
    /// watermark back downstream, until it emits again.
    pub fn idle_timeout(mut self, timeout: Duration) -> EventTime {
        self.idle_timeout_ms = Some(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
        self
    }

    /// Source alignment: a spout task whose watermark is more than `drift` ahead of the
    /// slowest task of its component stops emitting until that one catches up (see the
    /// [module docs](self)). Only spouts align: `build()` refuses it on a bolt.
    pub fn max_drift(mut self, drift: Duration) -> EventTime {
        self.max_drift_ms = Some(i64::try_from(drift.as_millis()).unwrap_or(i64::MAX));
        self
    }

    /// Every problem with this declaration, as sentences (empty when valid).
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.field.is_empty() {
            errors.push("event time needs a timestamp field".to_owned());
        }
        if self.lag_ms < 0 {
            errors.push("the lag must not be negative".to_owned());
        }
        if self.idle_timeout_ms.is_some_and(|t| t <= 0) {
            errors.push("the idle timeout must be above zero".to_owned());
        }
        if self.max_drift_ms.is_some_and(|d| d <= 0) {
            errors.push("the maximum drift must be above zero".to_owned());
        }
        errors
    }
}

/// Places event time where timestamps originate, for the windows that read event time but
/// whose input does not carry watermarks yet, and checks every declaration. Runs in `build()`
/// before validation.
///
/// A window's `.event_time(field)` (with its `.lag(..)` and `.idle_timeout(..)`) is moved up
/// along its inputs, through bolts whose input and output record types are the window's
/// record type, to the spouts that emit that type: each spout task then generates the
/// watermarks, and they flow down through those bolts. Where a bolt (or a `From` conversion)
/// changes the record type, the timestamps originate there, and `build()` asks for an
/// `.event_time(..)` declaration on it (or on a component above it). An input that already
/// carries watermarks (declared upstream) needs nothing, but then the window may not set its
/// own lag or idle timeout: they would mean nothing.
pub(crate) fn place(ir: &mut TopologyIr) -> Vec<TopologyError> {
    let mut errors = Vec::new();
    let index: HashMap<String, usize> = ir
        .components
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.clone(), i))
        .collect();
    for c in &ir.components {
        if let Some(et) = &c.event_time {
            check_declaration(c, et, &mut errors);
        }
    }
    let windows: Vec<usize> = (0..ir.components.len())
        .filter(|&i| {
            ir.components[i]
                .window
                .as_ref()
                .is_some_and(|w| w.spec.is_event_time() && !w.spec.is_count())
        })
        .collect();
    for w in windows {
        place_for_window(ir, &index, w, &mut errors);
    }
    errors
}

fn check_declaration(c: &ComponentIr, et: &EventTime, errors: &mut Vec<TopologyError>) {
    let bad = |reason: String| TopologyError::BadEventTime {
        component: c.name.clone(),
        reason,
    };
    errors.extend(et.check().into_iter().map(bad));
    if et.max_drift_ms.is_some() && c.kind != ComponentKind::Spout {
        errors.push(bad(
            "`max_drift` aligns spouts only: a bolt cannot hold its upstream back".to_owned(),
        ));
    }
    let Some(record) = c.streams.first().map(|s| &s.record) else {
        return;
    };
    if et.field.is_empty() {
        return;
    }
    match record.fields.iter().find(|f| f.name == et.field) {
        None => errors.push(bad(format!(
            "event-time field `{}` is not a field of its output `{}` (has {:?})",
            et.field,
            record.short_name(),
            record
                .fields
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
        ))),
        Some(f) if !f.ty.is_timestamp() => errors.push(TopologyError::NotATimestamp {
            component: c.name.clone(),
            field: et.field.clone(),
            found: f.ty,
        }),
        Some(_) => {}
    }
}

/// Whether component `i`'s output carries watermarks: it declares event time, or it is a bolt
/// all of whose inputs carry them.
fn timed(ir: &TopologyIr, index: &HashMap<String, usize>, i: usize, depth: usize) -> bool {
    let c = &ir.components[i];
    if c.event_time.is_some() {
        return true;
    }
    // Cycles are reported elsewhere; do not follow one for ever.
    if c.kind == ComponentKind::Spout || c.inputs.is_empty() || depth > ir.components.len() {
        return false;
    }
    c.inputs.iter().all(|input| {
        index
            .get(&input.component)
            .is_some_and(|&u| timed(ir, index, u, depth + 1))
    })
}

fn place_for_window(
    ir: &mut TopologyIr,
    index: &HashMap<String, usize>,
    w: usize,
    errors: &mut Vec<TopologyError>,
) {
    let window = &ir.components[w];
    let Some(spec) = window.window.as_ref().map(|w| &w.spec) else {
        return;
    };
    let TimeDomain::Event { field } = &spec.time else {
        return;
    };
    let Some(ty) = window.input_type.as_ref().map(|r| r.type_name.clone()) else {
        return;
    };
    let wanted = EventTime {
        field: field.clone(),
        lag_ms: spec.lag_ms.unwrap_or(0),
        idle_timeout_ms: spec.idle_timeout_ms,
        derived_from: Some(window.name.clone()),
        max_drift_ms: spec.step_ms().map(|step| step.saturating_mul(ALIGN_STEPS)),
    };
    let own_strategy = spec.lag_ms.is_some() || spec.idle_timeout_ms.is_some();
    // A field the records lack, or that is no timestamp, is reported by the window checks.
    let field_exists = window
        .input_type
        .as_ref()
        .and_then(|r| r.fields.iter().find(|f| &f.name == field))
        .is_some_and(|f| f.ty.is_timestamp());
    let name = window.name.clone();
    let bad = |reason: String| TopologyError::BadEventTime {
        component: name.clone(),
        reason,
    };
    // (component, the stream it sends to the window's path, its record type must be `ty`).
    let mut stack: Vec<(usize, String)> = window
        .inputs
        .iter()
        .filter_map(|input| Some((*index.get(&input.component)?, input.stream.clone())))
        .collect();
    let mut seen = vec![false; ir.components.len()];
    let mut targets = Vec::new();
    while let Some((u, stream)) = stack.pop() {
        let up = &ir.components[u];
        if let Some(et) = &up.event_time {
            let same_records = up
                .streams
                .iter()
                .find(|s| s.name == stream)
                .is_some_and(|s| s.record.type_name == ty);
            if same_records && field_exists && et.field != wanted.field {
                errors.push(bad(format!(
                    "it reads event time from `{}`, but its watermarks come from `{}` of the same \
                     records (declared on `{}`): windows would be assigned by one field and \
                     fired by the other; use one field",
                    wanted.field, et.field, up.name
                )));
                continue;
            }
            match &et.derived_from {
                None if own_strategy => errors.push(bad(format!(
                    "its input carries the watermarks `{}` declares with `.event_time(..)`: \
                     the window's own lag and idle timeout would mean nothing (drop them, or \
                     the declaration on `{}`)",
                    up.name, up.name
                ))),
                Some(other)
                    if (et.lag_ms, et.idle_timeout_ms)
                        != (wanted.lag_ms, wanted.idle_timeout_ms) =>
                {
                    errors.push(bad(format!(
                        "its lag and idle timeout differ from those of window `{other}`, and \
                         both take their watermarks from `{}`: give them the same, or declare \
                         `.event_time(..)` on `{}`",
                        up.name, up.name
                    )))
                }
                _ => {}
            }
            continue;
        }
        if timed(ir, index, u, 0) {
            // Watermarks flow through `u` from declarations further up.
            if own_strategy {
                errors.push(bad(format!(
                    "its input carries watermarks declared above `{}`: the window's own lag \
                     and idle timeout would mean nothing (drop them)",
                    up.name
                )));
            }
            continue;
        }
        if std::mem::replace(&mut seen[u], true) {
            continue;
        }
        let out_type = up
            .streams
            .iter()
            .find(|s| s.name == stream)
            .map(|s| s.record.type_name.as_str());
        let changes_type = out_type != Some(ty.as_str())
            || up.input_type.as_ref().is_some_and(|r| r.type_name != ty);
        if changes_type {
            errors.push(bad(format!(
                "it reads event time from `{}`, which `{}` makes (its records are not the \
                 window's `{}` all the way from a spout): declare `.event_time(..)` on `{}`, \
                 where the timestamps originate",
                field,
                up.name,
                short(&ty),
                up.name
            )));
            continue;
        }
        if up.kind == ComponentKind::Spout {
            targets.push(u);
        } else {
            stack.extend(
                up.inputs.iter().filter_map(|input| {
                    Some((*index.get(&input.component)?, input.stream.clone()))
                }),
            );
        }
    }
    for u in targets {
        ir.components[u].event_time = Some(wanted.clone());
    }
}

fn short(type_name: &str) -> &str {
    let base = type_name.split('<').next().unwrap_or(type_name);
    base.rsplit("::").next().unwrap_or(base)
}
