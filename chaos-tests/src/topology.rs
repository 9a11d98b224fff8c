//! The checking topology, registered as `chaos`: a sequence source whose records carry unique
//! ids, a stateless fan-out, a counter replicated through Raft in several groups, and a sink that
//! records what it saw. Every task writes its part of the run's history ([`crate::history`]).
//!
//! ```text
//! source (2 tasks) --shuffle--> fanout (2) --fields(key)--> counter (stateful, G groups x R)
//!     --shuffle--> sink (2)
//! ```
//!
//! Each source record becomes two parts (`part` 0 and 1), keyed apart (so usually applied by
//! different counter groups): a record is complete only when both are applied, and its ack tree
//! branches.
//! The counter's state keeps, per block of 64 ids and part, a bitmap of the ids it applied: the
//! checker reads it back from every replica's exported final state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tempest_dsl::*;
use tempest_runtime::cluster::{Registry, TopologyArgs};

use crate::history::{SinkLog, SourceLog};

/// The name the checking topology is registered under.
pub const TOPOLOGY: &str = "chaos";

/// A source record.
#[derive(Clone, Debug, Serialize, Deserialize, Record)]
pub struct Item {
    /// Its unique id (see [`crate::history`]).
    pub id: u64,
}

/// One of the two parts of a record, keyed for the counter.
#[derive(Clone, Debug, Serialize, Deserialize, Record)]
pub struct Part {
    /// The record's id.
    pub id: u64,
    /// 0 or 1.
    pub part: u8,
    /// The counter key: the block of 64 ids and the part ([`block_key`]).
    pub key: u64,
}

/// What the counter applied, for the sink.
#[derive(Clone, Debug, Serialize, Deserialize, Record)]
pub struct Delivery {
    /// The record's id.
    pub id: u64,
    /// Its part.
    pub part: u8,
    /// Whether the counter had applied this part before (a replay under at-least-once).
    pub again: bool,
}

/// The counter key of part `part` of record `id`: its block of 64 ids, and the part.
pub fn block_key(id: u64, part: u8) -> u64 {
    ((id >> 6) << 1) | u64::from(part & 1)
}

/// The counter's state: per key ([`block_key`]), a bitmap of the ids of the block applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Key -> bit `id % 64` set when that id's part was applied.
    pub blocks: BTreeMap<u64, u64>,
    /// Applications in all, replays included.
    pub applications: u64,
    /// Applications of a part applied before.
    pub again: u64,
}

impl Applied {
    /// Applies part `part` of `id`; returns whether it was applied before.
    pub fn apply(&mut self, id: u64, part: u8) -> bool {
        let bits = self.blocks.entry(block_key(id, part)).or_insert(0);
        let bit = 1u64 << (id & 63);
        let again = *bits & bit != 0;
        *bits |= bit;
        self.applications += 1;
        if again {
            self.again += 1;
        }
        again
    }

    /// Whether part `part` of `id` was applied.
    pub fn contains(&self, id: u64, part: u8) -> bool {
        self.blocks
            .get(&block_key(id, part))
            .is_some_and(|bits| bits & (1u64 << (id & 63)) != 0)
    }

    /// Every (id, part) applied.
    pub fn parts(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        self.blocks.iter().flat_map(|(key, bits)| {
            let (base, part) = ((key >> 1) << 6, (key & 1) as u8);
            (0..64)
                .filter(move |b| bits & (1u64 << b) != 0)
                .map(move |b| (base | b, part))
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Ids a source announces at a time.
const ANNOUNCE: u64 = 256;

/// The sequence source: unique ids at a steady rate until a wall-clock end, then done; replays
/// what fails. Its history file says what it attempted and what completed.
#[derive(Clone, Debug)]
pub struct SeqSource {
    history: PathBuf,
    end_ms: u64,
    rate: u64,
    log: Option<std::sync::Arc<std::sync::Mutex<SourceLog>>>,
    next: u64,
    announced: u64,
    replay: Vec<u64>,
    started: Option<Instant>,
    emitted: u64,
}

impl SeqSource {
    fn log<R>(&self, f: impl FnOnce(&mut SourceLog) -> std::io::Result<R>) -> Result<R, TaskError> {
        let log = self
            .log
            .as_ref()
            .ok_or_else(|| TaskError::new("the history file is not open"))?;
        let mut log = log
            .lock()
            .map_err(|_| TaskError::new("the history file's lock is poisoned"))?;
        f(&mut log).map_err(|e| TaskError::new(format!("history: {e}")))
    }
}

impl Spout for SeqSource {
    type Out = Item;
    const REPLAYABLE: bool = true;
    const REWINDABLE: bool = true;

    fn open(&mut self, _ctx: &TaskContext) -> Result<(), TaskError> {
        let instance = rand::random::<u32>() | 1;
        let log = SourceLog::create(&self.history, instance)
            .map_err(|e| TaskError::new(format!("{}: {e}", self.history.display())))?;
        self.log = Some(std::sync::Arc::new(std::sync::Mutex::new(log)));
        self.next = u64::from(instance) << 32;
        self.announced = self.next;
        self.started = Some(Instant::now());
        Ok(())
    }

    fn next(&mut self, out: &mut SpoutEmitter<Item>) -> Result<SpoutStatus, TaskError> {
        if let Some(id) = self.replay.pop() {
            out.emit_tracked(MsgId(id), Item { id });
            return Ok(SpoutStatus::Active);
        }
        if now_ms() >= self.end_ms {
            return Ok(SpoutStatus::Done);
        }
        let elapsed = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        if self.rate > 0 && self.emitted as f64 >= elapsed * self.rate as f64 {
            return Ok(SpoutStatus::Idle);
        }
        if self.next == self.announced {
            let from = self.next;
            self.log(|l| l.attempt(from..from + ANNOUNCE))?;
            self.announced = from + ANNOUNCE;
        }
        let id = self.next;
        self.next += 1;
        self.emitted += 1;
        out.emit_tracked(MsgId(id), Item { id });
        Ok(SpoutStatus::Active)
    }

    fn ack(&mut self, msg: MsgId) {
        if let Err(e) = self.log(|l| l.acked(msg.0)) {
            tracing::warn!(error = %e, "ack not recorded");
        }
    }

    fn fail(&mut self, msg: MsgId) {
        if let Err(e) = self.log(|l| l.failed(msg.0)) {
            tracing::warn!(error = %e, "failure not recorded");
        }
        self.replay.push(msg.0);
    }

    fn close(&mut self) {
        if let Err(e) = self.log(SourceLog::done) {
            tracing::warn!(error = %e, "end not recorded");
        }
    }

    // Its position: the next id, how far its ids are announced, and what it has to replay. A
    // restored source keeps its new history file (announcements and acks go there).
    fn snapshot(&self) -> Option<SpoutSnapshot> {
        SpoutSnapshot::encode(&(self.next, self.announced, &self.replay)).ok()
    }

    fn restore(&mut self, snapshot: &SpoutSnapshot) -> Result<(), TaskError> {
        (self.next, self.announced, self.replay) = snapshot.decode()?;
        Ok(())
    }
}

/// Sends each record on as its two parts.
#[derive(Clone, Debug, Default)]
pub struct FanOut;

impl Bolt for FanOut {
    type In = Item;
    type Out = Part;

    fn execute(&mut self, t: Tuple<Item>, out: &mut Emitter<Part>) -> Result<(), TaskError> {
        let id = t.value().id;
        for part in 0..2 {
            out.emit(Part {
                id,
                part,
                key: block_key(id, part),
            });
        }
        Ok(())
    }
}

/// Applies parts to its replicated state and tells the sink.
#[derive(Clone, Debug, Default)]
pub struct Counter;

impl StatefulBolt for Counter {
    type In = Part;
    type Out = Delivery;
    type State = Applied;

    fn execute(
        &self,
        state: &mut Applied,
        t: Tuple<Part>,
        out: &mut StateEmitter<Delivery>,
    ) -> Result<(), TaskError> {
        let p = t.into_value();
        let again = state.apply(p.id, p.part);
        out.emit(Delivery {
            id: p.id,
            part: p.part,
            again,
        });
        Ok(())
    }
}

/// Records every delivery in its file before acking it (unless told to lose some, to show
/// that the checker sees it).
#[derive(Debug)]
pub struct Sink {
    dir: PathBuf,
    log: Option<SinkLog>,
    /// Acks every `drop_every`-th delivery without recording it (0: never).
    drop_every: u64,
    /// Records a random tuple id instead of the delivery's (not idempotent).
    random_ids: bool,
    seen: u64,
}

impl Clone for Sink {
    /// A copy that opens a file of its own.
    fn clone(&self) -> Self {
        Sink {
            dir: self.dir.clone(),
            log: None,
            drop_every: self.drop_every,
            random_ids: self.random_ids,
            seen: 0,
        }
    }
}

impl Bolt for Sink {
    type In = Delivery;
    type Out = ();
    // Under exactly-once each line carries the tuple id, the key the checker upserts by.
    const IDEMPOTENT: bool = true;

    fn prepare(&mut self, _ctx: &TaskContext) -> Result<(), TaskError> {
        self.log = Some(
            SinkLog::create(&self.dir)
                .map_err(|e| TaskError::new(format!("{}: {e}", self.dir.display())))?,
        );
        Ok(())
    }

    fn execute(&mut self, t: Tuple<Delivery>, _out: &mut Emitter<()>) -> Result<(), TaskError> {
        let log = self
            .log
            .as_mut()
            .ok_or_else(|| TaskError::new("the sink file is not open"))?;
        let d = t.value();
        self.seen += 1;
        if self.drop_every > 0 && self.seen % self.drop_every == 0 {
            return Ok(());
        }
        let tuple = t.id().map(|id| {
            if self.random_ids {
                rand::random::<u64>() | 1
            } else {
                id.0
            }
        });
        log.delivered(d.id, d.part, tuple)
            .map_err(|e| TaskError::new(format!("sink: {e}")))
    }

    /// Writes the batch's deliveries through before they are acked: a SIGKILL after an ack
    /// finds them in the file.
    fn flush(&mut self) -> Result<(), TaskError> {
        match &mut self.log {
            Some(log) => log
                .flush()
                .map_err(|e| TaskError::new(format!("sink: {e}"))),
            None => Ok(()),
        }
    }
}

/// How to build the checking topology.
#[derive(Clone, Debug, PartialEq)]
pub struct ChaosTopology {
    /// Where the sources write their history.
    pub history: PathBuf,
    /// Where the sinks write what they saw.
    pub output: PathBuf,
    /// The wall-clock ms (since the epoch) at which the sources stop emitting new ids.
    pub end_ms: u64,
    /// Records a second per source task.
    pub rate: u64,
    /// Source tasks.
    pub sources: u32,
    /// Counter tasks, each its own Raft group.
    pub groups: u32,
    /// Replicas per group.
    pub replicas: u32,
    /// Where the replicas keep their logs.
    pub state: StateStorage,
    /// The delivery guarantee.
    pub guarantee: Guarantee,
    /// How long a tree may take before it is replayed.
    pub message_timeout: Duration,
    /// A deliberately lossy sink: it acks every `sink_drops`-th delivery without recording
    /// it (0, the default: it loses nothing). For testing the checker on a run that lost data.
    pub sink_drops: u64,
    /// A deliberately faulty sink: it records random tuple ids, so that under exactly-once a
    /// replay shows as a second write (false, the default). For testing the checker on a run
    /// that wrote twice.
    pub sink_random_ids: bool,
    /// Take a checkpoint this often (0, the default: none). The counter then recovers by
    /// rolling back to them, and must have one replica.
    pub checkpoint_ms: u64,
}

impl ChaosTopology {
    /// Reads the options from submission arguments: `history` and `output` (required
    /// directories), `end_ms` (required), `rate` (500), `sources` (2), `groups` (4), `replicas`
    /// (3), `state` (disk), `guarantee` (at-least-once), `message_timeout_ms` (5000),
    /// `sink_drops` (0), `sink_random_ids` (false), `checkpoint_ms` (0: none).
    pub fn from_args(args: &TopologyArgs) -> Result<Self, String> {
        let required = |k: &str| {
            args.get(k)
                .map(str::to_owned)
                .ok_or_else(|| format!("argument `{k}` is required"))
        };
        Ok(ChaosTopology {
            history: required("history")?.into(),
            output: required("output")?.into(),
            end_ms: required("end_ms")?
                .parse()
                .map_err(|e| format!("argument `end_ms`: {e}"))?,
            rate: args.parse_or("rate", 500u64)?,
            sources: args.parse_or("sources", 2u32)?,
            groups: args.parse_or("groups", 4u32)?,
            replicas: args.parse_or("replicas", 3u32)?,
            state: args.parse_or("state", StateStorage::Disk)?,
            guarantee: args.parse_or("guarantee", Guarantee::AtLeastOnce)?,
            message_timeout: Duration::from_millis(args.parse_or("message_timeout_ms", 5000u64)?),
            sink_drops: args.parse_or("sink_drops", 0u64)?,
            sink_random_ids: args.parse_or("sink_random_ids", false)?,
            checkpoint_ms: args.parse_or("checkpoint_ms", 0u64)?,
        })
    }

    /// The submission arguments that [`ChaosTopology::from_args`] reads back.
    pub fn args(&self) -> BTreeMap<String, String> {
        [
            ("history", self.history.display().to_string()),
            ("output", self.output.display().to_string()),
            ("end_ms", self.end_ms.to_string()),
            ("rate", self.rate.to_string()),
            ("sources", self.sources.to_string()),
            ("groups", self.groups.to_string()),
            ("replicas", self.replicas.to_string()),
            ("state", self.state.to_string()),
            ("guarantee", self.guarantee.to_string()),
            (
                "message_timeout_ms",
                self.message_timeout.as_millis().to_string(),
            ),
            ("sink_drops", self.sink_drops.to_string()),
            ("sink_random_ids", self.sink_random_ids.to_string()),
            ("checkpoint_ms", self.checkpoint_ms.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Builds the topology.
    pub fn topology(&self) -> Result<Topology, BuildErrors> {
        let mut t = TopologyBuilder::new(TOPOLOGY);
        let source = SeqSource {
            history: self.history.clone(),
            end_ms: self.end_ms,
            rate: self.rate,
            log: None,
            next: 0,
            announced: 0,
            replay: Vec::new(),
            started: None,
            emitted: 0,
        };
        let items = t.add(spout("source", source).parallelism(self.sources));
        let parts = t.add(bolt("fanout", FanOut).parallelism(2).shuffle(&items));
        let applied = t.add(
            stateful("counter", Counter)
                .parallelism(self.groups)
                .fields(&parts, ["key"])
                .replicas(self.replicas)
                .state(self.state),
        );
        t.add(
            bolt(
                "sink",
                Sink {
                    dir: self.output.clone(),
                    log: None,
                    drop_every: self.sink_drops,
                    random_ids: self.sink_random_ids,
                    seen: 0,
                },
            )
            .parallelism(2)
            .shuffle(&applied),
        );
        let config = TopologyConfig {
            message_timeout: self.message_timeout,
            checkpoint_interval: (self.checkpoint_ms > 0)
                .then(|| Duration::from_millis(self.checkpoint_ms)),
            ..TopologyConfig::default()
        };
        t.guarantee(self.guarantee).config(config).build()
    }
}

/// The topologies of the `tempest-chaos` binary's nodes: the checking topology.
pub fn registry() -> Registry {
    Registry::new().register(
        TOPOLOGY,
        "the chaos tests' checking topology (unique ids, fan-out, replicated counter, sink)",
        |args| {
            ChaosTopology::from_args(args)?
                .topology()
                .map_err(|e| e.to_string())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_holds_each_part_once_and_counts_again() {
        let mut s = Applied::default();
        let id = (7u64 << 32) | 130;
        assert!(!s.apply(id, 0));
        assert!(!s.apply(id, 1));
        assert!(s.apply(id, 1));
        assert!(s.contains(id, 0) && s.contains(id, 1) && !s.contains(id + 1, 0));
        assert_eq!((s.applications, s.again), (3, 1));
        let mut parts: Vec<(u64, u8)> = s.parts().collect();
        parts.sort_unstable();
        assert_eq!(parts, vec![(id, 0), (id, 1)]);
    }

    #[test]
    fn the_topology_builds_and_its_arguments_round_trip() {
        let t = ChaosTopology {
            history: "/h".into(),
            output: "/o".into(),
            end_ms: 5,
            rate: 10,
            sources: 2,
            groups: 3,
            replicas: 3,
            state: StateStorage::Disk,
            guarantee: Guarantee::AtLeastOnce,
            message_timeout: Duration::from_secs(2),
            sink_drops: 0,
            sink_random_ids: false,
            checkpoint_ms: 0,
        };
        let back = ChaosTopology::from_args(&TopologyArgs(t.args())).expect("parses");
        assert_eq!(back, t);
        t.topology().expect("builds");
        let checkpointed = ChaosTopology {
            checkpoint_ms: 500,
            replicas: 1,
            ..t.clone()
        };
        let back = ChaosTopology::from_args(&TopologyArgs(checkpointed.args())).expect("parses");
        assert_eq!(back, checkpointed);
        checkpointed
            .topology()
            .expect("a checkpointed one builds: its source rewinds");
        assert!(ChaosTopology::from_args(&TopologyArgs(BTreeMap::new())).is_err());
    }
}
