//! [`Grouping`]: how a bolt's subscription spreads an upstream stream over the bolt's tasks.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How tuples of one upstream stream are spread over a bolt's tasks (Storm's stream groupings).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Grouping {
    /// Round-robin over the bolt's tasks: even load, no affinity.
    Shuffle,
    /// Like shuffle, but only over tasks in the sender's own process (and, among those, on the
    /// sender's own worker thread) when there are any.
    LocalOrShuffle,
    /// By the seedless hash of the named fields: equal keys always reach the same task.
    Fields(Vec<String>),
    /// By the seedless hash of a key computed by a closure (`key_by`); the IR records only that
    /// a closure is used.
    KeyBy,
    /// Every tuple to every task.
    All,
    /// Every tuple to the task with the lowest id.
    Global,
    /// The emitter picks the task (`emit_direct`); the stream must be declared direct.
    Direct,
}

impl fmt::Display for Grouping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grouping::Shuffle => f.write_str("shuffle"),
            Grouping::LocalOrShuffle => f.write_str("local-or-shuffle"),
            Grouping::Fields(fields) => write!(f, "fields({})", fields.join(", ")),
            Grouping::KeyBy => f.write_str("key-by"),
            Grouping::All => f.write_str("all"),
            Grouping::Global => f.write_str("global"),
            Grouping::Direct => f.write_str("direct"),
        }
    }
}
