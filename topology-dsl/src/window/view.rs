//! The traits windowed bolts implement, and what they see of a window.

use crate::component::{TaskContext, TaskError};
use crate::emitter::Emitter;
use crate::record::Record;
use crate::window::assign::Bounds;

/// Where and what a firing window is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowInfo {
    pub(crate) bounds: Option<Bounds>,
    pub(crate) count: u64,
    pub(crate) firing: u32,
}

impl WindowInfo {
    /// The window's `[start, end)`, or `None` for count windows.
    pub fn bounds(&self) -> Option<Bounds> {
        self.bounds
    }

    /// The window's first millisecond (time windows).
    pub fn start(&self) -> Option<i64> {
        self.bounds.map(|b| b.start)
    }

    /// The first millisecond after the window (time windows).
    pub fn end(&self) -> Option<i64> {
        self.bounds.map(|b| b.end)
    }

    /// The time of the window's result, `end - 1` (time windows).
    pub fn max_timestamp(&self) -> Option<i64> {
        self.bounds.map(|b| b.max_timestamp())
    }

    /// How many elements the window holds.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// 0 for a window's first firing; 1, 2, ... for the firings late elements cause.
    pub fn firing(&self) -> u32 {
        self.firing
    }
}

/// A firing window as a [`WindowedBolt`] sees it: its elements in arrival order, the ones new
/// since the key's previous firing and the ones that left since then (Storm's `TupleWindow`).
pub struct WindowView<'a, T> {
    pub(crate) info: WindowInfo,
    pub(crate) tuples: Vec<&'a T>,
    pub(crate) new: Vec<&'a T>,
    pub(crate) expired: Vec<&'a T>,
}

impl<'a, T> WindowView<'a, T> {
    /// Where and what the window is.
    pub fn info(&self) -> &WindowInfo {
        &self.info
    }

    /// The window's elements, in arrival order.
    pub fn tuples(&self) -> &[&'a T] {
        &self.tuples
    }

    /// The elements that were not in the key's previous firing.
    pub fn new_tuples(&self) -> &[&'a T] {
        &self.new
    }

    /// The elements of the key's previous firing that are no longer in the window.
    pub fn expired_tuples(&self) -> &[&'a T] {
        &self.expired
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.tuples.len()
    }

    /// Whether the window is empty (never, for a firing window).
    pub fn is_empty(&self) -> bool {
        self.tuples.is_empty()
    }
}

/// A bolt that sees whole windows. Its emits in `on_window` are anchored to every tuple of the
/// window, and those tuples are acked once no window holds them any more.
///
/// Windows are per key of the bolt's fields grouping (by the key itself: two distinct keys whose
/// 64-bit hashes collide still get windows of their own), or per task without one. Under at-least-once, a tuple replayed after its window fired is late, as
/// in Storm: send late tuples to the late stream to see them.
pub trait WindowedBolt: Clone + Send + 'static {
    /// The record type of the windowed stream.
    type In: Record;
    /// The record type of the results.
    type Out: Record;

    /// Called once per task before the first input.
    fn prepare(&mut self, _ctx: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }

    /// A window fired.
    fn on_window(
        &mut self,
        window: &WindowView<'_, Self::In>,
        out: &mut Emitter<Self::Out>,
    ) -> Result<(), TaskError>;
}

/// Incremental aggregation: each window keeps an accumulator, not its tuples (Flink's
/// `AggregateFunction`). Emits in `emit` are anchored to the window's tuples, whose ack-tree ids
/// (not their values) the window keeps under a tracked guarantee.
pub trait WindowAggregate: Clone + Send + 'static {
    /// The record type of the windowed stream.
    type In: Record;
    /// The per-window accumulator; a new window starts from `Default`.
    type Acc: Default + Send + 'static;
    /// The record type of the results.
    type Out: Record;

    /// Called once per task before the first input.
    fn prepare(&mut self, _ctx: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }

    /// Folds one element into a window's accumulator.
    fn add(&mut self, acc: &mut Self::Acc, input: &Self::In);

    /// Folds another accumulator in (session windows merging).
    fn merge(&mut self, acc: &mut Self::Acc, other: Self::Acc);

    /// A window fired: emit its result.
    fn emit(
        &mut self,
        acc: &Self::Acc,
        window: &WindowInfo,
        out: &mut Emitter<Self::Out>,
    ) -> Result<(), TaskError>;
}
