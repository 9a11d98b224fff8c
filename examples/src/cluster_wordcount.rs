//! Word count for a cluster: results leave through a file sink, so a test or a benchmark can
//! check them across processes. `tempest submit wordcount --arg output=DIR ...`.
//!
//! A count task keeps its counts in memory; when its node dies, the task restarts elsewhere
//! from zero, and the trees it had not finished are replayed to the new one. So each count task
//! *incarnation* tags what it emits, and the total count of a word is the sum, over
//! incarnations, of the highest count each reached: exact on a run without failures, and never
//! below the true count under at-least-once (an acked tree's word was written by the sink
//! before its tree completed).
//!
//! Output: one JSON-lines file per sink task incarnation, `sink-<task>-<incarnation>.jsonl`,
//! each line `{"word":"w17","count":3,"incarnation":12345}`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use compact_str::CompactString;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tempest_dsl::*;

use crate::wordcount::{Sentence, SentenceSpout, SplitBolt, Word, expected_counts};

/// [`SentenceSpout`] at most `rate` sentences a second per task (0: no limit), for clusters
/// that should carry a steady load rather than run flat out.
#[derive(Clone, Debug)]
pub struct PacedSentences {
    inner: SentenceSpout,
    rate: u64,
    started: Option<std::time::Instant>,
    emitted: u64,
    /// Panic (once per process) after this many sentences: a stand-in for a bug.
    panic_after: Option<u64>,
}

static SPOUT_PANICKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl PacedSentences {
    /// `sentences` sentences at `rate` a second per task.
    pub fn new(sentences: u64, rate: u64) -> Self {
        PacedSentences {
            inner: SentenceSpout::new(Some(sentences)),
            rate,
            started: None,
            emitted: 0,
            panic_after: None,
        }
    }
}

impl Spout for PacedSentences {
    type Out = Sentence;
    const REPLAYABLE: bool = true;
    const REWINDABLE: bool = true;

    fn open(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.started = Some(std::time::Instant::now());
        self.inner.open(ctx)
    }

    fn next(&mut self, out: &mut SpoutEmitter<Sentence>) -> Result<SpoutStatus, TaskError> {
        if self.panic_after == Some(self.emitted)
            && !SPOUT_PANICKED.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("an injected bug after {} sentences", self.emitted);
        }
        if self.rate > 0 {
            let elapsed = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
            if self.emitted as f64 >= elapsed * self.rate as f64 {
                return Ok(SpoutStatus::Idle);
            }
        }
        let status = self.inner.next(out)?;
        if status == SpoutStatus::Active {
            self.emitted += 1;
        }
        Ok(status)
    }

    fn fail(&mut self, msg: MsgId) {
        self.inner.fail(msg);
    }

    fn snapshot(&self) -> Option<SpoutSnapshot> {
        self.inner.snapshot()
    }

    fn restore(&mut self, snapshot: &SpoutSnapshot) -> Result<(), TaskError> {
        self.inner.restore(snapshot)
    }
}

/// A word's running count in one count task incarnation.
#[derive(Clone, Debug, Serialize, Deserialize, Record)]
pub struct CountedWord {
    /// The word.
    pub word: CompactString,
    /// How many times this incarnation has counted it.
    pub count: u64,
    /// The count task incarnation (random, drawn when the task starts).
    pub incarnation: u64,
}

/// Counts words; every emit carries the running count and the task's incarnation.
#[derive(Clone, Debug, Default)]
pub struct IncarnationCount {
    counts: FxHashMap<CompactString, u64>,
    incarnation: u64,
}

impl Bolt for IncarnationCount {
    type In = Word;
    type Out = CountedWord;

    fn prepare(&mut self, _ctx: &TaskContext) -> Result<(), TaskError> {
        self.incarnation = rand::random();
        Ok(())
    }

    fn execute(&mut self, t: Tuple<Word>, out: &mut Emitter<CountedWord>) -> Result<(), TaskError> {
        let word = t.into_value().word;
        let c = self.counts.entry(word.clone()).or_insert(0);
        *c += 1;
        out.emit(CountedWord {
            word,
            count: *c,
            incarnation: self.incarnation,
        });
        Ok(())
    }
}

/// Counts words in replicated state (a stateful bolt): every replica of a count task holds the
/// same counts, so a failover keeps them. Emits under incarnation 0: there is one.
#[derive(Clone, Debug, Default)]
pub struct ReplicatedCount;

impl StatefulBolt for ReplicatedCount {
    type In = Word;
    type Out = CountedWord;
    type State = HashedState<CompactString, u64>;

    fn execute(
        &self,
        counts: &mut HashedState<CompactString, u64>,
        t: Tuple<Word>,
        out: &mut StateEmitter<CountedWord>,
    ) -> Result<(), TaskError> {
        let word = t.into_value().word;
        let c = counts.entry(word.clone()).or_insert(0);
        *c += 1;
        out.emit(CountedWord {
            word,
            count: *c,
            incarnation: 0,
        });
        Ok(())
    }
}

/// Writes every record it receives as a JSON line into a file of its own in a directory, and
/// flushes it before the record is acked (so an acked record is in the file even if the
/// process is killed right after; it is not fsynced, so a machine crash can lose it).
///
/// Under exactly-once each line starts with the record's tuple id (`{"id":"<hex>",...}`): the
/// files are then an upsert log keyed by it, and a replayed output rewrites its key with the
/// same record (a reader keeps one line per id), so the sink is idempotent.
#[derive(Debug)]
pub struct FileSink<T> {
    dir: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    line: Vec<u8>,
    _records: std::marker::PhantomData<fn(T)>,
}

impl<T> Clone for FileSink<T> {
    /// A copy that opens a file of its own (each task writes its own file).
    fn clone(&self) -> Self {
        FileSink::new(self.dir.clone())
    }
}

impl<T> FileSink<T> {
    /// A sink writing into `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileSink {
            dir: dir.into(),
            file: None,
            line: Vec::new(),
            _records: std::marker::PhantomData,
        }
    }
}

impl<T: Record> Bolt for FileSink<T> {
    type In = T;
    type Out = ();
    const IDEMPOTENT: bool = true;

    fn prepare(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| TaskError::new(format!("{}: {e}", self.dir.display())))?;
        let path = self.dir.join(format!(
            "sink-{}-{:016x}.jsonl",
            ctx.task_index(),
            rand::random::<u64>()
        ));
        let file = std::fs::File::create(&path)
            .map_err(|e| TaskError::new(format!("{}: {e}", path.display())))?;
        self.file = Some(std::io::BufWriter::new(file));
        Ok(())
    }

    fn execute(&mut self, t: Tuple<T>, _out: &mut Emitter<()>) -> Result<(), TaskError> {
        let Some(file) = &mut self.file else {
            return Err(TaskError::new("the sink file is not open"));
        };
        self.line.clear();
        serde_json::to_writer(&mut self.line, t.value())
            .map_err(|e| TaskError::new(e.to_string()))?;
        if let (Some(id), Some(b'{')) = (t.id(), self.line.first()) {
            // The upsert key first: `{"id":"..",` then the record's fields.
            let empty = self.line.get(1) == Some(&b'}');
            let key = format!("{{\"id\":\"{id}\"{}", if empty { "" } else { "," });
            self.line.splice(..1, key.bytes());
        }
        self.line.push(b'\n');
        file.write_all(&self.line)
            .map_err(|e| TaskError::new(e.to_string()))
    }

    /// Writes the batch's lines through before its inputs are acked: a SIGKILL after the ack
    /// finds them in the file.
    fn flush(&mut self) -> Result<(), TaskError> {
        match &mut self.file {
            Some(file) => file.flush().map_err(|e| TaskError::new(e.to_string())),
            None => Ok(()),
        }
    }
}

/// Splits sentences like [`SplitBolt`], but panics (once per process) on sentence `panic_at`:
/// a stand-in for a bug, to show that a node restarts a failed task.
#[derive(Clone, Debug, Default)]
pub struct SplitOrPanic {
    inner: SplitBolt,
    panic_at: Option<u64>,
}

static PANICKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Bolt for SplitOrPanic {
    type In = Sentence;
    type Out = Word;

    fn prepare(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.inner.prepare(ctx)
    }

    fn execute(&mut self, t: Tuple<Sentence>, out: &mut Emitter<Word>) -> Result<(), TaskError> {
        if self.panic_at == Some(t.id) && !PANICKED.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("an injected bug on sentence {}", t.id);
        }
        self.inner.execute(t, out)
    }
}

/// How to build the cluster word count.
#[derive(Clone, Debug)]
pub struct ClusterWordCount {
    /// Sentences to emit.
    pub sentences: u64,
    /// Tasks per component.
    pub parallelism: u32,
    /// The delivery guarantee.
    pub guarantee: Guarantee,
    /// Where the sink writes.
    pub output: PathBuf,
    /// How long a tree may take before it is replayed.
    pub message_timeout: Duration,
    /// Trees a spout task may have in flight (none: the runtime's default).
    pub max_spout_pending: Option<usize>,
    /// Sentences a second per spout task (0: as fast as it goes).
    pub rate: u64,
    /// A split task panics on this sentence, once per process (to show supervision).
    pub panic_at: Option<u64>,
    /// A spout task panics after this many sentences, once per process.
    pub spout_panic_after: Option<u64>,
    /// Count in a stateful bolt replicated this many ways (none: a plain bolt).
    pub replicas: Option<u32>,
    /// Where the replicated count keeps its Raft log and snapshots.
    pub state: StateStorage,
    /// Take checkpoints this often; the count is then a stateful bolt that rolls back to them
    /// (not replicated: `replicas` must be 1 or unset).
    pub checkpoint_interval: Option<Duration>,
}

impl ClusterWordCount {
    /// Reads the options from submission arguments: `output` (required), `sentences`
    /// (100000), `parallelism` (2), `guarantee` (at-least-once), `message_timeout_ms` (30000),
    /// `max_spout_pending` (the runtime's default, 1000, unless given), `rate` (sentences a
    /// second per spout task; 0, the default, for no limit), `panic_at` (a
    /// split task panics once per process on that sentence; none by default),
    /// `spout_panic_after` (a spout task panics once per process after that many sentences),
    /// `replicas` (count in a stateful bolt replicated that many ways through Raft; a plain
    /// bolt by default), `state` (`memory`, the default, or `disk`: where the replicas keep
    /// their log), `checkpoint_ms` (take checkpoints this often and count in a stateful bolt
    /// that rolls back to them: rollback recovery; none by default).
    pub fn from_args(args: &tempest_runtime::cluster::TopologyArgs) -> Result<Self, String> {
        let output = args
            .get("output")
            .ok_or("argument `output` (the sink's directory) is required")?;
        Ok(ClusterWordCount {
            sentences: args.parse_or("sentences", 100_000u64)?,
            parallelism: args.parse_or("parallelism", 2u32)?,
            guarantee: args.parse_or("guarantee", Guarantee::AtLeastOnce)?,
            output: PathBuf::from(output),
            message_timeout: Duration::from_millis(args.parse_or("message_timeout_ms", 30_000u64)?),
            max_spout_pending: optional(args, "max_spout_pending")?
                .map(|n| {
                    usize::try_from(n).map_err(|_| format!("max_spout_pending = {n}: too many"))
                })
                .transpose()?,
            rate: args.parse_or("rate", 0u64)?,
            panic_at: optional(args, "panic_at")?,
            spout_panic_after: optional(args, "spout_panic_after")?,
            replicas: optional(args, "replicas")?
                .map(|r| u32::try_from(r).map_err(|_| format!("replicas = {r}: too many")))
                .transpose()?,
            state: args.parse_or("state", StateStorage::Memory)?,
            checkpoint_interval: optional(args, "checkpoint_ms")?.map(Duration::from_millis),
        })
    }

    /// Builds the topology.
    pub fn topology(&self) -> Result<Topology, BuildErrors> {
        let p = self.parallelism;
        let mut t = TopologyBuilder::new("wordcount");
        let mut source = PacedSentences::new(self.sentences, self.rate);
        source.panic_after = self.spout_panic_after;
        let sentences = t.add(spout("sentences", source).parallelism(p));
        let split = SplitOrPanic {
            inner: SplitBolt::default(),
            panic_at: self.panic_at,
        };
        let words = t.add(bolt("split", split).parallelism(p).shuffle(&sentences));
        let replicas = self.replicas.or(self.checkpoint_interval.map(|_| 1));
        let counts = match replicas {
            Some(r) => t.add(
                stateful("count", ReplicatedCount)
                    .parallelism(p)
                    .fields(&words, ["word"])
                    .replicas(r)
                    .state(self.state),
            ),
            None => t.add(
                bolt("count", IncarnationCount::default())
                    .parallelism(p)
                    .fields(&words, ["word"]),
            ),
        };
        t.add(
            bolt("sink", FileSink::<CountedWord>::new(&self.output))
                .parallelism(p)
                .shuffle(&counts),
        );
        let defaults = TopologyConfig::default();
        let config = TopologyConfig {
            message_timeout: self.message_timeout,
            checkpoint_interval: self.checkpoint_interval,
            max_spout_pending: self.max_spout_pending.or(defaults.max_spout_pending),
            ..defaults
        };
        t.guarantee(self.guarantee).config(config).build()
    }
}

fn optional(
    args: &tempest_runtime::cluster::TopologyArgs,
    key: &str,
) -> Result<Option<u64>, String> {
    args.get(key)
        .map(|v| {
            v.parse()
                .map_err(|e| format!("argument `{key}` = {v:?}: {e}"))
        })
        .transpose()
}

/// What a sink directory says about the counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountCheck {
    /// Words whose total is below the true count (lost).
    pub below: usize,
    /// Words whose total is above it (counted again after a replay).
    pub above: usize,
    /// Words whose total is exact.
    pub exact: usize,
    /// Lines read.
    pub lines: u64,
    /// Lines that did not parse (a line cut short by a killed process).
    pub torn: u64,
}

impl CountCheck {
    /// Whether every word was counted exactly.
    pub fn exact(&self) -> bool {
        self.below == 0 && self.above == 0
    }

    /// Whether every word was counted at least once.
    pub fn at_least_once(&self) -> bool {
        self.below == 0
    }
}

/// Reads every sink file in `dir` and compares the totals with the true counts of
/// `sentences` sentences.
pub fn check_output(dir: &Path, sentences: u64) -> std::io::Result<CountCheck> {
    // (word, incarnation) -> highest count.
    let mut best: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let (mut lines, mut torn) = (0, 0);
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        let file = std::io::BufReader::new(std::fs::File::open(&path)?);
        for line in file.lines() {
            let line = line?;
            match serde_json::from_str::<CountedWord>(&line) {
                Ok(c) => {
                    lines += 1;
                    let b = best.entry((c.word.to_string(), c.incarnation)).or_default();
                    *b = (*b).max(c.count);
                }
                Err(_) => torn += 1,
            }
        }
    }
    let mut totals: FxHashMap<String, u64> = FxHashMap::default();
    for ((word, _), c) in best {
        *totals.entry(word).or_default() += c;
    }
    let expected = expected_counts(sentences);
    let (mut below, mut above, mut exact) = (0, 0, 0);
    for (i, want) in expected.iter().enumerate() {
        if *want == 0 {
            continue;
        }
        let got = totals.get(&format!("w{i}")).copied().unwrap_or(0);
        match got.cmp(want) {
            std::cmp::Ordering::Less => below += 1,
            std::cmp::Ordering::Greater => above += 1,
            std::cmp::Ordering::Equal => exact += 1,
        }
    }
    Ok(CountCheck {
        below,
        above,
        exact,
        lines,
        torn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, lines: &[(&str, u64, u64)]) {
        let mut f = std::fs::File::create(dir.join(name)).expect("create");
        for (w, c, i) in lines {
            writeln!(f, r#"{{"word":"{w}","count":{c},"incarnation":{i}}}"#).expect("write");
        }
    }

    #[test]
    fn the_checker_sums_incarnations_and_sees_losses() {
        // Sentence 0 alone: its words, once each.
        let words: Vec<String> = (0..crate::wordcount::WORDS_PER_SENTENCE)
            .map(|j| format!("w{}", crate::wordcount::word_index(0, j)))
            .collect();
        let dir = tempfile::tempdir().expect("dir");
        let all: Vec<(&str, u64, u64)> = words.iter().map(|w| (w.as_str(), 1, 7)).collect();
        write(dir.path(), "sink-0-a.jsonl", &all);
        let c = check_output(dir.path(), 1).expect("reads");
        assert!(c.exact(), "{c:?}");

        // Lose one word: below.
        let dir = tempfile::tempdir().expect("dir");
        write(dir.path(), "sink-0-a.jsonl", &all[1..]);
        let c = check_output(dir.path(), 1).expect("reads");
        assert_eq!((c.below, c.at_least_once()), (1, false));

        // A second incarnation counted the first word again: above, still at least once; a
        // torn line is counted, not fatal.
        let dir = tempfile::tempdir().expect("dir");
        write(dir.path(), "sink-0-a.jsonl", &all);
        write(dir.path(), "sink-1-b.jsonl", &[(all[0].0, 1, 8)]);
        std::fs::write(dir.path().join("sink-2-c.jsonl"), "{\"word\":\"w1\",\"cou").expect("write");
        let c = check_output(dir.path(), 1).expect("reads");
        assert_eq!((c.above, c.torn), (1, 1));
        assert!(c.at_least_once() && !c.exact());
    }
}
