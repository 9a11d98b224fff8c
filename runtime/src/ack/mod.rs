//! Ack trees (at-least-once): the pure cores behind Storm's acker, and how acks travel.
//!
//! A tracked spout message gets a random 64-bit root id; every delivered copy of an anchored
//! tuple gets a random 64-bit edge id. The acker that owns a root keeps one 64-bit value, the
//! XOR of every edge id it has heard of: each edge is XOR-ed in once when it is created (by the
//! spout's init or by the ack of the tuple that emitted it) and once when its tuple is acked.
//! **The value is zero exactly when every edge created so far has been acked**, so the tree is
//! complete (with a 2^-64 chance of a false zero per update, as in Storm).
//!
//! ```text
//!   spout ──tuple(r, e1)──► split ──tuple(r, e2)──► count
//!     │                       │                       │
//!     │ Init(r, e1)           │ Ack(r, e1 ^ e2)        │ Ack(r, e2)
//!     ▼                       ▼                       ▼
//!   acker[r mod A]:  0 ^ e1 ^ (e1 ^ e2) ^ e2 = 0  ──► spout: ack(msg)
//! ```
//!
//! Going beyond Storm's one message per ack, a task folds the ack operations of one input
//! batch per root (XOR-ing them locally) and sends one message per acker per batch
//! ([`AckFolder`]). The spout keeps its trees in flight with their deadlines
//! ([`PendingTrees`]); a tree not complete in time is failed there, and a late completion is
//! ignored. The acker's [`AckLedger`] forgets entries untouched for a few timeouts.

mod fold;
mod ledger;
mod pending;

pub use fold::{AckFolder, AckKind, AckMsg, acker_for};
pub use ledger::{AckLedger, TreeOutcome};
pub use pending::{PendingTrees, Settled};
