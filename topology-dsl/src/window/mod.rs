//! Windows: what a windowed bolt declares ([`Window`]), what it implements
//! ([`WindowedBolt`] for the whole window, [`WindowAggregate`] for incremental aggregation),
//! what it sees ([`WindowView`], [`WindowInfo`]), and the pure cores behind them
//! ([`WindowCore`], [`Valve`], [`EventClock`]).
//!
//! ```
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use tempest_dsl::*;
//!
//! #[derive(Clone, Debug, Serialize, Deserialize, Record)]
//! struct Click { page: String, ts: i64 }
//! #[derive(Clone, Debug, Serialize, Deserialize, Record)]
//! struct PageCount { page: String, end: i64, clicks: u64 }
//!
//! /// Clicks per page per minute, kept as a running count (not the clicks themselves).
//! #[derive(Clone)]
//! struct CountClicks;
//! impl WindowAggregate for CountClicks {
//!     type In = Click;
//!     type Acc = (String, u64);
//!     type Out = PageCount;
//!     fn add(&mut self, acc: &mut (String, u64), click: &Click) {
//!         acc.0.clone_from(&click.page);
//!         acc.1 += 1;
//!     }
//!     fn merge(&mut self, acc: &mut (String, u64), other: (String, u64)) {
//!         acc.1 += other.1;
//!     }
//!     fn emit(&mut self, acc: &(String, u64), w: &WindowInfo, out: &mut Emitter<PageCount>)
//!         -> Result<(), TaskError> {
//!         out.emit(PageCount { page: acc.0.clone(), end: w.end().unwrap_or(0), clicks: acc.1 });
//!         Ok(())
//!     }
//! }
//!
//! # #[derive(Clone)] struct Clicks;
//! # impl Spout for Clicks {
//! #     type Out = Click;
//! #     fn next(&mut self, _: &mut SpoutEmitter<Click>) -> Result<SpoutStatus, TaskError> { Ok(SpoutStatus::Done) }
//! # }
//! let mut t = TopologyBuilder::new("clicks");
//! let clicks = t.add(spout("clicks", Clicks));
//! let window = Window::tumbling(Duration::from_secs(60))
//!     .event_time("ts")
//!     .lag(Duration::from_secs(5))
//!     .late_to_side_stream();
//! let counts = t.add(aggregated("per-page", CountClicks, window).fields(&clicks, ["page"]));
//! // `counts.output` carries PageCount; `counts.late` carries the late clicks.
//! assert!(t.build().is_ok());
//! ```

mod assign;
mod core;
mod event_clock;
mod keys;
mod spec;
mod valve;
mod view;

pub use assign::{Bounds, sliding, tumbling, window_start};
pub use core::{InvalidWindow, WindowCore, WindowHost};
pub use event_clock::EventClock;
pub(crate) use keys::ExactKeys;
pub use spec::{MAX_WINDOWS_PER_ELEMENT, Size, TimeDomain, Window, WindowKind};
pub use valve::{Channel, Mark, Valve};
pub use view::{WindowAggregate, WindowInfo, WindowView, WindowedBolt};

/// The name of a windowed bolt's late-tuple stream.
pub const LATE_STREAM: &str = "late";
