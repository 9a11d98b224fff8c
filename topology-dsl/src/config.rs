//! Per-topology configuration: delivery guarantee, batching, queue bounds and ack-tree settings.
//!
//! Config is a typed struct with defaults and a [`TopologyConfig::validate`] that reports every
//! bad value at once; `build()` runs it together with the structural checks.
//!
//! ```
//! use std::time::Duration;
//! use tempest_dsl::TopologyConfig;
//!
//! let config = TopologyConfig { batch_size: 512, ..TopologyConfig::default() };
//! assert!(config.validate().is_ok());
//! let bad = TopologyConfig { batch_size: 0, flush_interval: Duration::ZERO, ..config };
//! assert_eq!(bad.validate().unwrap_err().len(), 2);
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The delivery guarantee of a whole topology.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Guarantee {
    /// No tracking: a tuple lost to a failure is not replayed. No acker traffic at all.
    #[default]
    AtMostOnce,
    /// Storm's XOR ack trees: every spout message is acked once its whole tree is processed, and
    /// replayed by a replayable spout when any part fails or times out.
    AtLeastOnce,
    /// Ack trees plus deduplicating replicated state and idempotent sinks.
    ExactlyOnce,
}

impl Guarantee {
    /// Whether tuples carry ack-tree ids under this guarantee.
    pub const fn is_tracked(self) -> bool {
        !matches!(self, Guarantee::AtMostOnce)
    }

    /// The name used on the command line and in reports: `at-most-once`, `at-least-once`,
    /// `exactly-once`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Guarantee::AtMostOnce => "at-most-once",
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::ExactlyOnce => "exactly-once",
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A guarantee name that is not one of `at-most-once`, `at-least-once`, `exactly-once`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown guarantee `{0}`: expected at-most-once, at-least-once or exactly-once")]
pub struct UnknownGuarantee(pub String);

impl FromStr for Guarantee {
    type Err = UnknownGuarantee;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "at-most-once" => Ok(Guarantee::AtMostOnce),
            "at-least-once" => Ok(Guarantee::AtLeastOnce),
            "exactly-once" => Ok(Guarantee::ExactlyOnce),
            other => Err(UnknownGuarantee(other.to_owned())),
        }
    }
}

/// Limits that keep every value sane; a value outside them is refused by `validate()`.
pub mod limits {
    use std::time::Duration;

    /// The largest batch a link carries.
    pub const MAX_BATCH_SIZE: usize = 1 << 16;
    /// The most batches one link may have in flight.
    pub const MAX_QUEUE_BATCHES: usize = 1024;
    /// The longest flush interval.
    pub const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
    /// The shortest message timeout.
    pub const MIN_MESSAGE_TIMEOUT: Duration = Duration::from_millis(10);
    /// The longest message timeout.
    pub const MAX_MESSAGE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
    /// The most trees in flight per spout task.
    pub const MAX_SPOUT_PENDING: usize = 1 << 24;
    /// The most acker tasks.
    pub const MAX_ACKERS: u32 = 1024;
    /// The most tasks of one component.
    pub const MAX_PARALLELISM: u32 = 4096;
    /// The largest `max_open_windows`.
    pub const MAX_OPEN_WINDOWS: usize = 1 << 30;
    /// The most tasks of a whole topology.
    pub const MAX_TASKS: u32 = 65_536;
    /// The shortest checkpoint interval.
    pub const MIN_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(10);
    /// The longest checkpoint interval.
    pub const MAX_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
    /// The longest dedup retention.
    pub const MAX_DEDUP_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
}

/// The configuration of one topology. Every field has a default; see [`TopologyConfig::validate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopologyConfig {
    /// Tuples per batch between two tasks. Larger batches cost less per tuple and add latency.
    pub batch_size: usize,
    /// The longest a partly filled batch waits before it is sent anyway. A task that runs out of
    /// input sends its partial batches at once, so this only bounds latency under steady load.
    pub flush_interval: Duration,
    /// Batches in flight per link (sender task to receiver task). When they are all in flight the
    /// sender stops taking input, so a slow bolt slows its spout instead of growing memory.
    pub queue_batches: usize,
    /// A spout message whose ack tree is not complete within this time is failed and replayed
    /// (at-least-once and exactly-once only).
    pub message_timeout: Duration,
    /// The most ack trees in flight per spout task; `None` is unbounded (at-least-once and
    /// exactly-once only). A tree a window has taken does not count: windows hold their
    /// tuples' trees until they fire, and their memory is bounded by alignment (event time)
    /// or by keys times size (count windows), not by this. Default 1000: measured on W1 and W2
    /// (two spout tasks), it keeps W1's rate within about 10% of unbounded, makes W2's
    /// at-least-once rate 1.6x faster, and cuts W1's complete latency p99 from about 14 ms
    /// to 3 ms.
    pub max_spout_pending: Option<usize>,
    /// The number of acker tasks; `None` gives one per worker thread.
    pub ackers: Option<u32>,
    /// Watermark alignment: while an event-time windowed task has more windows open than this,
    /// it stops reading every input whose watermark runs more than one window ahead of its own
    /// (their credits are not returned, so those upstream tasks stop), until the slower inputs
    /// catch up and windows close. The slowest input is never stopped. Measured on W2 (1000
    /// keys, two spout tasks): 1024 keeps the inputs close and the windows in cache (about
    /// 20 M events/s); 8192 let them drift seconds of event time apart (about 6 M events/s).
    pub max_open_windows: usize,
    /// Checkpoints for rollback recovery (see [`Spout::snapshot`](crate::Spout::snapshot)):
    /// every this often the spouts record their position and send a barrier through the
    /// topology, and every stateful bolt that is not replicated saves its state once the
    /// barrier has come on all its inputs. A run restarted from a completed checkpoint
    /// restores those states and rewinds the spouts to it. `None` (the default): off. Every
    /// spout must then be rewindable ([`Spout::REWINDABLE`](crate::Spout::REWINDABLE)).
    pub checkpoint_interval: Option<Duration>,
    /// Exactly-once only: how long a stateful bolt remembers a tuple it applied (by its
    /// deterministic id, with the outputs it emitted for it), to skip a replay of it and emit
    /// those outputs again, when the tuple does not descend from one message of a seekable
    /// spout ([`Spout::SEEKABLE`](crate::Spout::SEEKABLE); a tuple that does is remembered
    /// until that spout's committed position passes its message, however long that takes). A
    /// replay that comes later than this after the first application is applied again, so
    /// keep it well above `message_timeout` (a failed tree is replayed within one timeout of
    /// its failure). Memory: the outputs of the inputs applied within this time, per stateful
    /// task. Default 5 minutes; at least `message_timeout`.
    pub dedup_retention: Duration,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            batch_size: 1024,
            flush_interval: Duration::from_millis(1),
            queue_batches: 4,
            message_timeout: Duration::from_secs(30),
            max_spout_pending: Some(1000),
            ackers: None,
            max_open_windows: 1_024,
            checkpoint_interval: None,
            dedup_retention: Duration::from_secs(300),
        }
    }
}

/// One bad configuration value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("config `{field}` = {value}: {expected}")]
pub struct ConfigError {
    /// The field's name.
    pub field: &'static str,
    /// The value given, rendered.
    pub value: String,
    /// What it should have been.
    pub expected: String,
}

impl ConfigError {
    /// A bad `value` for `field`, which should have been `expected`.
    pub fn new(field: &'static str, value: impl fmt::Debug, expected: impl Into<String>) -> Self {
        ConfigError {
            field,
            value: format!("{value:?}"),
            expected: expected.into(),
        }
    }
}

impl TopologyConfig {
    /// Checks every value and returns all the bad ones.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        use limits::*;
        let mut errors = Vec::new();
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            errors.push(ConfigError::new(
                "batch_size",
                self.batch_size,
                format!("must be between 1 and {MAX_BATCH_SIZE}"),
            ));
        }
        if self.flush_interval.is_zero() || self.flush_interval > MAX_FLUSH_INTERVAL {
            errors.push(ConfigError::new(
                "flush_interval",
                self.flush_interval,
                format!("must be above zero and at most {MAX_FLUSH_INTERVAL:?}"),
            ));
        }
        if !(1..=MAX_QUEUE_BATCHES).contains(&self.queue_batches) {
            errors.push(ConfigError::new(
                "queue_batches",
                self.queue_batches,
                format!("must be between 1 and {MAX_QUEUE_BATCHES}"),
            ));
        }
        if !(MIN_MESSAGE_TIMEOUT..=MAX_MESSAGE_TIMEOUT).contains(&self.message_timeout) {
            errors.push(ConfigError::new(
                "message_timeout",
                self.message_timeout,
                format!("must be between {MIN_MESSAGE_TIMEOUT:?} and {MAX_MESSAGE_TIMEOUT:?}"),
            ));
        }
        if let Some(p) = self.max_spout_pending {
            if !(1..=MAX_SPOUT_PENDING).contains(&p) {
                errors.push(ConfigError::new(
                    "max_spout_pending",
                    p,
                    format!("must be between 1 and {MAX_SPOUT_PENDING} (unset: unbounded)"),
                ));
            }
        }
        if let Some(a) = self.ackers {
            if !(1..=MAX_ACKERS).contains(&a) {
                errors.push(ConfigError::new(
                    "ackers",
                    a,
                    format!("must be between 1 and {MAX_ACKERS} (unset: one per worker)"),
                ));
            }
        }
        if !(1..=MAX_OPEN_WINDOWS).contains(&self.max_open_windows) {
            errors.push(ConfigError::new(
                "max_open_windows",
                self.max_open_windows,
                format!("must be between 1 and {MAX_OPEN_WINDOWS}"),
            ));
        }
        if let Some(i) = self.checkpoint_interval {
            if !(MIN_CHECKPOINT_INTERVAL..=MAX_CHECKPOINT_INTERVAL).contains(&i) {
                errors.push(ConfigError::new(
                    "checkpoint_interval",
                    i,
                    format!(
                        "must be between {MIN_CHECKPOINT_INTERVAL:?} and {MAX_CHECKPOINT_INTERVAL:?} (unset: off)"
                    ),
                ));
            }
        }
        if self.dedup_retention < self.message_timeout || self.dedup_retention > MAX_DEDUP_RETENTION
        {
            errors.push(ConfigError::new(
                "dedup_retention",
                self.dedup_retention,
                format!("must be between message_timeout and {MAX_DEDUP_RETENTION:?}"),
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(TopologyConfig::default().validate(), Ok(()));
    }

    #[test]
    fn every_bad_value_is_reported() {
        let config = TopologyConfig {
            batch_size: 0,
            flush_interval: Duration::ZERO,
            queue_batches: 0,
            message_timeout: Duration::from_millis(1),
            max_spout_pending: Some(0),
            ackers: Some(0),
            max_open_windows: 0,
            checkpoint_interval: Some(Duration::ZERO),
            dedup_retention: Duration::ZERO,
        };
        let errors = config.validate().unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "batch_size",
                "flush_interval",
                "queue_batches",
                "message_timeout",
                "max_spout_pending",
                "ackers",
                "max_open_windows",
                "checkpoint_interval",
                "dedup_retention"
            ]
        );
        assert_eq!(
            errors[0].to_string(),
            "config `batch_size` = 0: must be between 1 and 65536"
        );
    }

    #[test]
    fn guarantee_names_round_trip() {
        for g in [
            Guarantee::AtMostOnce,
            Guarantee::AtLeastOnce,
            Guarantee::ExactlyOnce,
        ] {
            assert_eq!(g.as_str().parse::<Guarantee>(), Ok(g));
        }
        assert!("once".parse::<Guarantee>().is_err());
    }
}
