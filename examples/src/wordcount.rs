//! Word count (benchmark workload W1; see the README): sentences -> split -> count -> sink.
//!
//! Sentence `i` (0 <= i < N) has 10 words; word `j` is `"w" + ((i*7919 + j*104729) % 1000)`,
//! a 1000-word vocabulary. The split bolt cuts a sentence into words, the count bolt keeps a
//! running count per word (fields grouping on the word) and emits `(word, count)` for every
//! word, and the sink counts what it receives. At the end of the input each count task and each
//! sink task hands its totals to the driver, which checks them against [`expected_counts`].
//!
//! With [`WordCountOptions::stateful_count`] the count is a [`StatefulBolt`] (its state owned by
//! the runtime, so it can be checkpointed and restored), and the sink, fed by word, keeps the
//! last count of each word and hands those totals over instead. The spout is rewindable: a run
//! that takes checkpoints resumes from the last one after a crash.

use std::sync::mpsc;

use compact_str::CompactString;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tempest_dsl::{
    Bolt, BuildErrors, Emitter, Guarantee, MsgId, Record, Spout, SpoutEmitter, SpoutSnapshot,
    SpoutStatus, StateEmitter, StatefulBolt, TaskContext, TaskError, Topology, TopologyBuilder,
    TopologyConfig, Tuple, bolt, spout, stateful,
};

/// Words per sentence.
pub const WORDS_PER_SENTENCE: u64 = 10;
/// Distinct words.
pub const VOCABULARY: u64 = 1000;

/// Word `j` of sentence `i`, as a vocabulary index.
pub fn word_index(i: u64, j: u64) -> u64 {
    (i.wrapping_mul(7919).wrapping_add(j.wrapping_mul(104_729))) % VOCABULARY
}

/// A line of text.
#[derive(Clone, Debug, Serialize, Deserialize, Record)]
pub struct Sentence {
    /// The sentence number.
    pub id: u64,
    /// Its words, separated by single spaces.
    pub text: String,
}

/// One word. `CompactString` keeps words of up to 24 bytes inline, so a word costs no heap
/// allocation on its way through the topology.
#[derive(Clone, Debug, Serialize, Deserialize, Record)]
pub struct Word {
    /// The word.
    pub word: CompactString,
}

/// A word and its running count.
#[derive(Clone, Debug, Serialize, Deserialize, Record)]
pub struct WordCount {
    /// The word.
    pub word: CompactString,
    /// How many times the count task has seen it so far.
    pub count: u64,
}

/// Emits sentences `0..sentences` (or forever when `sentences` is `None`), each spout task the
/// ones congruent to its index. Replayable: a failed sentence is emitted again.
#[derive(Clone, Debug)]
pub struct SentenceSpout {
    sentences: Option<u64>,
    next: u64,
    step: u64,
    replay: Vec<u64>,
    text: String,
}

impl SentenceSpout {
    /// A spout of `sentences` sentences, or an endless one.
    pub fn new(sentences: Option<u64>) -> Self {
        SentenceSpout {
            sentences,
            next: 0,
            step: 1,
            replay: Vec::new(),
            text: String::new(),
        }
    }

    /// Writes sentence `i` into `out`.
    pub fn write_sentence(i: u64, out: &mut String) {
        out.clear();
        let mut digits = itoa::Buffer::new();
        for j in 0..WORDS_PER_SENTENCE {
            if j > 0 {
                out.push(' ');
            }
            out.push('w');
            out.push_str(digits.format(word_index(i, j)));
        }
    }

    fn emit(&mut self, i: u64, out: &mut SpoutEmitter<Sentence>) {
        Self::write_sentence(i, &mut self.text);
        out.emit_tracked(
            MsgId(i),
            Sentence {
                id: i,
                text: self.text.clone(),
            },
        );
    }
}

impl Spout for SentenceSpout {
    type Out = Sentence;
    const REPLAYABLE: bool = true;
    const REWINDABLE: bool = true;

    fn open(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.next = u64::from(ctx.task_index());
        self.step = u64::from(ctx.parallelism());
        Ok(())
    }

    fn next(&mut self, out: &mut SpoutEmitter<Sentence>) -> Result<SpoutStatus, TaskError> {
        if let Some(i) = self.replay.pop() {
            self.emit(i, out);
            return Ok(SpoutStatus::Active);
        }
        if self.sentences.is_some_and(|n| self.next >= n) {
            return Ok(SpoutStatus::Done);
        }
        let i = self.next;
        self.next += self.step;
        self.emit(i, out);
        Ok(SpoutStatus::Active)
    }

    fn fail(&mut self, msg: MsgId) {
        self.replay.push(msg.0);
    }

    /// The next sentence and the ones to replay.
    fn snapshot(&self) -> Option<SpoutSnapshot> {
        SpoutSnapshot::encode(&(self.next, &self.replay)).ok()
    }

    fn restore(&mut self, snapshot: &SpoutSnapshot) -> Result<(), TaskError> {
        (self.next, self.replay) = snapshot.decode()?;
        Ok(())
    }
}

/// Splits a sentence into words. With a failure rate, it fails that share of its sentences at
/// random (after emitting their words, as a bolt whose last step failed would): under
/// at-least-once the sentence is replayed and its words are counted again.
#[derive(Clone, Debug)]
pub struct SplitBolt {
    fail_rate: f64,
    seed: u64,
    rng: SmallRng,
}

impl Default for SplitBolt {
    fn default() -> Self {
        SplitBolt::failing(0.0, 0)
    }
}

impl SplitBolt {
    /// A split bolt that fails `fail_rate` (0.0 to 1.0) of its sentences, drawing from a
    /// generator seeded with `seed` and the task index.
    pub fn failing(fail_rate: f64, seed: u64) -> Self {
        SplitBolt {
            fail_rate,
            seed,
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

impl Bolt for SplitBolt {
    type In = Sentence;
    type Out = Word;

    fn prepare(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.rng = SmallRng::seed_from_u64(self.seed ^ u64::from(ctx.task_index()));
        Ok(())
    }

    fn execute(&mut self, t: Tuple<Sentence>, out: &mut Emitter<Word>) -> Result<(), TaskError> {
        for word in t.text.split(' ') {
            out.emit(Word {
                word: CompactString::new(word),
            });
        }
        if self.fail_rate > 0.0 && self.rng.random_bool(self.fail_rate) {
            return Err(TaskError::new("injected failure"));
        }
        Ok(())
    }
}

/// Final word counts of one count task, sent to the driver at the end of the input.
pub type CountTotals = FxHashMap<CompactString, u64>;

/// Counts words and emits the running count of each; hands its totals to the driver when its
/// input ends.
#[derive(Clone, Debug)]
pub struct CountBolt {
    counts: CountTotals,
    totals: mpsc::Sender<CountTotals>,
}

impl CountBolt {
    /// A count bolt that reports its totals on `totals`.
    pub fn new(totals: mpsc::Sender<CountTotals>) -> Self {
        CountBolt {
            counts: CountTotals::default(),
            totals,
        }
    }
}

impl Bolt for CountBolt {
    type In = Word;
    type Out = WordCount;

    fn execute(&mut self, t: Tuple<Word>, out: &mut Emitter<WordCount>) -> Result<(), TaskError> {
        let word = t.into_value().word;
        let count = match self.counts.get_mut(&word) {
            Some(c) => {
                *c += 1;
                *c
            }
            None => {
                self.counts.insert(word.clone(), 1);
                1
            }
        };
        out.emit(WordCount { word, count });
        Ok(())
    }

    fn finish(&mut self, _out: &mut Emitter<WordCount>) -> Result<(), TaskError> {
        // The driver may have stopped listening (it gave up); that is not this task's error.
        let _ = self.totals.send(std::mem::take(&mut self.counts));
        Ok(())
    }
}

/// The count as a stateful bolt: the runtime owns its counts (and checkpoints them when the
/// topology takes checkpoints). A fixed-seed hash map keeps `execute` deterministic.
#[derive(Clone, Debug, Default)]
pub struct StatefulCount;

impl StatefulBolt for StatefulCount {
    type In = Word;
    type Out = WordCount;
    type State = CountTotals;

    fn execute(
        &self,
        counts: &mut CountTotals,
        t: Tuple<Word>,
        out: &mut StateEmitter<WordCount>,
    ) -> Result<(), TaskError> {
        let word = t.into_value().word;
        let count = match counts.get_mut(&word) {
            Some(c) => {
                *c += 1;
                *c
            }
            None => {
                counts.insert(word.clone(), 1);
                1
            }
        };
        out.emit(WordCount { word, count });
        Ok(())
    }
}

/// The sink of the stateful count: counts what it receives and keeps each word's last (and
/// highest) count, which it hands to the driver as the totals.
#[derive(Clone, Debug)]
pub struct LastCountSink {
    received: u64,
    last: CountTotals,
    report: mpsc::Sender<u64>,
    totals: mpsc::Sender<CountTotals>,
}

impl Bolt for LastCountSink {
    type In = WordCount;
    type Out = ();

    fn execute(&mut self, t: Tuple<WordCount>, _out: &mut Emitter<()>) -> Result<(), TaskError> {
        self.received += 1;
        let WordCount { word, count } = t.into_value();
        let last = self.last.entry(word).or_default();
        *last = (*last).max(count);
        Ok(())
    }

    fn finish(&mut self, _out: &mut Emitter<()>) -> Result<(), TaskError> {
        let _ = self.report.send(self.received);
        let _ = self.totals.send(std::mem::take(&mut self.last));
        Ok(())
    }
}

/// Discards what it receives, counting it; hands the count to the driver at the end.
#[derive(Clone, Debug)]
pub struct SinkBolt {
    received: u64,
    report: mpsc::Sender<u64>,
}

impl SinkBolt {
    /// A sink that reports how many records it received on `report`.
    pub fn new(report: mpsc::Sender<u64>) -> Self {
        SinkBolt {
            received: 0,
            report,
        }
    }
}

impl Bolt for SinkBolt {
    type In = WordCount;
    type Out = ();

    fn execute(&mut self, _t: Tuple<WordCount>, _out: &mut Emitter<()>) -> Result<(), TaskError> {
        self.received += 1;
        Ok(())
    }

    fn finish(&mut self, _out: &mut Emitter<()>) -> Result<(), TaskError> {
        let _ = self.report.send(self.received);
        Ok(())
    }
}

/// How to build the word-count topology.
#[derive(Clone, Debug)]
pub struct WordCountOptions {
    /// Sentences to emit, or `None` for an endless run.
    pub sentences: Option<u64>,
    /// Tasks per component.
    pub parallelism: u32,
    /// The delivery guarantee.
    pub guarantee: Guarantee,
    /// The topology configuration.
    pub config: TopologyConfig,
    /// The share of sentences the split bolt fails (0.0 to 1.0).
    pub fail_rate: f64,
    /// The seed of the split bolt's failures.
    pub seed: u64,
    /// Count in a [`StatefulCount`] (state owned by the runtime, checkpointable) instead of the
    /// plain [`CountBolt`].
    pub stateful_count: bool,
}

impl Default for WordCountOptions {
    fn default() -> Self {
        WordCountOptions {
            sentences: Some(100_000),
            parallelism: 2,
            guarantee: Guarantee::AtMostOnce,
            config: TopologyConfig::default(),
            fail_rate: 0.0,
            seed: 42,
            stateful_count: false,
        }
    }
}

/// A built word-count topology and the channels its count and sink tasks report on.
pub struct WordCountJob {
    /// The topology.
    pub topology: Topology,
    /// One message per count task: its final counts.
    pub totals: mpsc::Receiver<CountTotals>,
    /// One message per sink task: how many records it received.
    pub sink_counts: mpsc::Receiver<u64>,
}

/// Builds the word-count topology.
pub fn topology(options: &WordCountOptions) -> Result<WordCountJob, BuildErrors> {
    let (totals_tx, totals) = mpsc::channel();
    let (sink_tx, sink_counts) = mpsc::channel();
    let p = options.parallelism;

    let mut t = TopologyBuilder::new("word-count");
    let sentences = t.add(spout("sentences", SentenceSpout::new(options.sentences)).parallelism(p));
    let split = SplitBolt::failing(options.fail_rate, options.seed);
    let words = t.add(
        bolt("split", split)
            .parallelism(p)
            .local_or_shuffle(&sentences),
    );
    if options.stateful_count {
        let counts = t.add(
            stateful("count", StatefulCount)
                .parallelism(p)
                .fields(&words, ["word"]),
        );
        let sink = LastCountSink {
            received: 0,
            last: CountTotals::default(),
            report: sink_tx,
            totals: totals_tx,
        };
        // By word, so that each word's last count is in one sink task.
        t.add(bolt("sink", sink).parallelism(p).fields(&counts, ["word"]));
    } else {
        let counts = t.add(
            bolt("count", CountBolt::new(totals_tx))
                .parallelism(p)
                .fields(&words, ["word"]),
        );
        t.add(
            bolt("sink", SinkBolt::new(sink_tx))
                .parallelism(p)
                .local_or_shuffle(&counts),
        );
    }
    let topology = t
        .guarantee(options.guarantee)
        .config(options.config.clone())
        .build()?;
    Ok(WordCountJob {
        topology,
        totals,
        sink_counts,
    })
}

/// The count of every word over sentences `0..sentences`, computed from the formula alone.
pub fn expected_counts(sentences: u64) -> Vec<u64> {
    let mut counts = vec![0u64; VOCABULARY as usize];
    for i in 0..sentences {
        for j in 0..WORDS_PER_SENTENCE {
            counts[word_index(i, j) as usize] += 1;
        }
    }
    counts
}

/// Whether a finished run of `sentences` counted right: exactly, with one record per word at
/// the sink (`tracked` false); or, where replays add duplicates (`tracked`), every word at least
/// its expected count and at least that many records at the sink.
pub fn counts_ok(counts: &[u64], sink_total: u64, sentences: u64, tracked: bool) -> bool {
    let expected = expected_counts(sentences);
    let words = sentences * WORDS_PER_SENTENCE;
    if tracked {
        counts.len() == expected.len()
            && counts.iter().zip(&expected).all(|(c, e)| c >= e)
            && sink_total >= words
    } else {
        counts == expected && sink_total == words
    }
}

/// Merges the totals of every count task into one count per vocabulary index. Returns `None` if
/// a word outside the vocabulary appears, or two tasks counted the same word (the fields
/// grouping must send a word to one task only).
pub fn merge_totals(parts: impl IntoIterator<Item = CountTotals>) -> Option<Vec<u64>> {
    let mut counts = vec![0u64; VOCABULARY as usize];
    let mut seen = vec![false; VOCABULARY as usize];
    for part in parts {
        for (word, count) in part {
            let index: usize = word.strip_prefix('w')?.parse().ok()?;
            if index >= counts.len() || std::mem::replace(&mut seen[index], true) {
                return None;
            }
            counts[index] = count;
        }
    }
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_checked_exactly_or_at_least() {
        let exact = expected_counts(20);
        assert!(counts_ok(&exact, 200, 20, false));
        assert!(counts_ok(&exact, 200, 20, true));
        let mut more = exact.clone();
        more[3] += 1;
        assert!(
            !counts_ok(&more, 201, 20, false),
            "a duplicate is not exact"
        );
        assert!(counts_ok(&more, 201, 20, true), "replays may duplicate");
        let mut fewer = exact.clone();
        let lost = fewer.iter().position(|&c| c > 0).unwrap_or(0);
        fewer[lost] -= 1;
        assert!(!counts_ok(&fewer, 199, 20, true), "a lost word is never ok");
        assert!(!counts_ok(&exact, 199, 20, false), "the sink lost a record");
    }

    #[test]
    fn sentences_follow_the_formula() {
        let mut s = String::new();
        SentenceSpout::write_sentence(0, &mut s);
        assert_eq!(s, "w0 w729 w458 w187 w916 w645 w374 w103 w832 w561");
        SentenceSpout::write_sentence(3, &mut s);
        assert_eq!(s.split(' ').count(), 10);
        assert!(s.starts_with("w757 "), "{s}");
    }

    #[test]
    fn expected_counts_add_up() {
        let counts = expected_counts(1000);
        assert_eq!(counts.iter().sum::<u64>(), 10_000);
    }

    #[test]
    fn merging_refuses_a_word_counted_twice() {
        let mut a = CountTotals::default();
        a.insert("w1".into(), 3);
        let b = a.clone();
        assert!(merge_totals([a.clone()]).is_some());
        assert!(merge_totals([a, b]).is_none());
    }
}
