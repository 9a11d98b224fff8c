//! Checkpoints for rollback recovery: what a spout records of itself ([`SpoutSnapshot`]) and
//! the protocol the runtime runs with it.
//!
//! With [`TopologyConfig::checkpoint_interval`](crate::TopologyConfig::checkpoint_interval)
//! set, the runtime takes checkpoint `n` like this (Flink's asynchronous barrier snapshots):
//!
//! 1. every spout task records its position ([`Spout::snapshot`](crate::Spout::snapshot)),
//!    then sends barrier `n` on all its links, behind what it emitted before;
//! 2. every bolt task forwards barrier `n` once it came on all its inputs (an input that ended
//!    does not count), and holds back what an input sends after the barrier until then
//!    (aligned checkpoints); a stateful bolt that is not replicated saves its state then;
//! 3. a spout reports its part once the trees it had in flight at the barrier settled, with
//!    the messages of those that failed;
//! 4. checkpoint `n` is complete when every spout and every such stateful task saved; older
//!    ones are deleted.
//!
//! A run restarted from checkpoint `n` gives each stateful task its saved state and each spout
//! its saved position ([`Spout::restore`](crate::Spout::restore)), then fails the messages
//! whose trees from before the barrier failed, so it replays them: everything after the
//! barrier is emitted again, and nothing before it twice. A tree from before the barrier that
//! completed reached every task before the barrier did, so the saved states hold it (a tree a
//! window parked is replayed whatever its outcome: windows are not in checkpoints). The states
//! a restore starts from are therefore those of a run that never failed, at the barrier (what
//! sinks wrote after it is written again: at-least-once at the sinks). Two limits: an upstream
//! task feeding a bolt on several subscriptions is held only once all of them delivered the
//! barrier, and a bolt that keeps tuples outside its state across a barrier (to emit them
//! later) loses them in a restore.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::component::TaskError;

/// A spout's position at a checkpoint, as the spout encodes it: whatever it needs to emit
/// again everything that follows (an offset, a file position, its queue of messages to
/// replay). Encoded with rmp-serde.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoutSnapshot(Vec<u8>);

impl SpoutSnapshot {
    /// Encodes `value`.
    pub fn encode<T: Serialize>(value: &T) -> Result<Self, TaskError> {
        rmp_serde::to_vec(value)
            .map(SpoutSnapshot)
            .map_err(|e| TaskError::new(format!("a spout snapshot does not encode: {e}")))
    }

    /// Decodes what [`SpoutSnapshot::encode`] encoded.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        rmp_serde::from_slice(&self.0)
            .map_err(|e| TaskError::new(format!("a spout snapshot does not decode: {e}")))
    }

    /// A snapshot from its bytes, as stored.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        SpoutSnapshot(bytes)
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_bad_bytes_are_an_error() {
        let s = SpoutSnapshot::encode(&(7u64, vec![1u64, 2])).expect("encodes");
        let back: (u64, Vec<u64>) = s.decode().expect("decodes");
        assert_eq!(back, (7, vec![1, 2]));
        let bad = SpoutSnapshot::from_bytes(vec![0xc1]);
        assert!(bad.decode::<u64>().is_err());
    }
}
