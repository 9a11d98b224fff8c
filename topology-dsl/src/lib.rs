//! Tempest's topology DSL: what a user writes.
//!
//! A topology is a graph of **spouts** (sources) and **bolts** (processing steps). Each component
//! has a name, a parallelism (its number of tasks) and, for bolts, subscriptions to upstream
//! streams with a **grouping** that says which task gets each record. Records are plain Rust
//! structs deriving [`Record`](derive@Record); wiring is typed, so subscribing a bolt to a stream
//! of the wrong type does not compile, and [`TopologyBuilder::build`] reports every other problem
//! at once. The built [`Topology`] is plain data ([`TopologyIr`]) plus the user code, and the
//! `tempest-runtime` crate runs it.
//!
//! This crate has no actors, no async runtime and no I/O: it is types, validation and the
//! per-record engine (routing, batching, ack-tree bookkeeping) the runtime drives.
//!
//! # Word count
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use std::collections::HashMap;
//! use tempest_dsl::*;
//!
//! #[derive(Clone, Debug, Serialize, Deserialize, Record)]
//! struct Line { text: String }
//! #[derive(Clone, Debug, Serialize, Deserialize, Record)]
//! struct Word { word: String }
//! #[derive(Clone, Debug, Serialize, Deserialize, Record)]
//! struct WordCount { word: String, count: u64 }
//!
//! #[derive(Clone)]
//! struct Lines(Vec<&'static str>);
//! impl Spout for Lines {
//!     type Out = Line;
//!     fn next(&mut self, out: &mut SpoutEmitter<Line>) -> Result<SpoutStatus, TaskError> {
//!         match self.0.pop() {
//!             Some(text) => { out.emit(Line { text: text.into() }); Ok(SpoutStatus::Active) }
//!             None => Ok(SpoutStatus::Done),
//!         }
//!     }
//! }
//!
//! #[derive(Clone)]
//! struct Split;
//! impl Bolt for Split {
//!     type In = Line;
//!     type Out = Word;
//!     fn execute(&mut self, t: Tuple<Line>, out: &mut Emitter<Word>) -> Result<(), TaskError> {
//!         t.text.split_whitespace().for_each(|w| out.emit(Word { word: w.to_lowercase() }));
//!         Ok(())
//!     }
//! }
//!
//! #[derive(Clone, Default)]
//! struct Count(HashMap<String, u64>);
//! impl Bolt for Count {
//!     type In = Word;
//!     type Out = WordCount;
//!     fn execute(&mut self, t: Tuple<Word>, out: &mut Emitter<WordCount>) -> Result<(), TaskError> {
//!         let count = self.0.entry(t.word.clone()).or_default();
//!         *count += 1;
//!         out.emit(WordCount { word: t.into_value().word, count: *count });
//!         Ok(())
//!     }
//! }
//!
//! let mut t = TopologyBuilder::new("word-count");
//! let lines = t.add(spout("lines", Lines(vec!["a b", "b c"])));
//! let words = t.add(bolt("split", Split).parallelism(2).shuffle(&lines));
//! t.add(bolt("count", Count::default()).parallelism(2).fields(&words, ["word"]));
//! let topology = t.guarantee(Guarantee::AtMostOnce).build().expect("valid");
//! println!("{topology}");            // a readable summary
//! let dot = topology.to_dot();       // a Graphviz drawing
//! assert!(dot.contains("\"split\" -> \"count\""));
//! ```

#![forbid(unsafe_code)]

// The derive names `::tempest_dsl` paths; unit tests inside the crate derive records too.
#[cfg(test)]
extern crate self as tempest_dsl;

mod builder;
pub mod checkpoint;
mod component;
mod config;
pub mod connectors;
mod emitter;
pub mod engine;
mod error;
mod event_time;
mod grouping;
mod ids;
mod key_hasher;
mod record;
pub mod routing;
mod stateful;
mod topology;
mod tuple;
mod validate;
pub mod window;

pub use builder::{
    AggregatedSpec, BoltSpec, ComponentSpec, Handle, SpoutSpec, StatefulSpec, TopologyBuilder,
    Windowed, WindowedSpec, aggregated, bolt, spout, stateful, windowed,
};
pub use checkpoint::SpoutSnapshot;
pub use component::{Bolt, Spout, SpoutStatus, TaskContext, TaskError};
pub use config::{ConfigError, Guarantee, TopologyConfig, UnknownGuarantee, limits};
pub use emitter::{Emitter, SpoutEmitter};
pub use error::{BuildErrors, TopologyError};
pub use event_time::{ALIGN_STEPS, EventTime};
pub use grouping::Grouping;
pub use ids::{EdgeId, MsgId, Origin, RootId, Source, TaskId, TupleId};
pub use key_hasher::KeyHasher;
pub use record::{Field, FieldKind, FieldType, Record, Timestamp, stable_hash_of};
pub use stateful::{HashedMap, HashedState, KeyedState, StateEmitter, StateStorage, StatefulBolt};
pub use tempest_dsl_derive::Record;
pub use topology::{
    ComponentIr, ComponentKind, DEFAULT_STREAM, FieldIr, InputIr, RecordIr, StatefulIr, StreamIr,
    Topology, TopologyIr, WindowIr,
};
pub use tuple::{Tuple, TupleIds};
pub use validate::{MAX_NAME_LEN, MAX_REPLICAS};
pub use window::{
    Bounds, LATE_STREAM, Size, TimeDomain, Window, WindowAggregate, WindowInfo, WindowKind,
    WindowView, WindowedBolt,
};
