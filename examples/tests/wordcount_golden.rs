//! Word count on small inputs gives exactly the expected counts, at parallelism 1 and 4.

use std::sync::mpsc;

use tempest_dsl::*;
use tempest_examples::wordcount::{
    self, CountBolt, CountTotals, SinkBolt, SplitBolt, WordCountOptions,
};
use tempest_runtime::{LocalCluster, LocalOptions};

fn cluster(workers: usize) -> LocalCluster {
    LocalCluster::new(LocalOptions {
        workers,
        metrics_interval: None,
        ..LocalOptions::default()
    })
    .expect("valid options")
}

fn run_formula(sentences: u64, parallelism: u32, workers: usize) -> anyhow::Result<()> {
    let job = wordcount::topology(&WordCountOptions {
        sentences: Some(sentences),
        parallelism,
        ..WordCountOptions::default()
    })?;
    let report = cluster(workers).run(job.topology)?;
    let counts = wordcount::merge_totals(job.totals.try_iter())
        .ok_or_else(|| anyhow::anyhow!("a word was counted by two tasks"))?;
    assert_eq!(counts, wordcount::expected_counts(sentences));
    let sink: u64 = job.sink_counts.try_iter().sum();
    assert_eq!(sink, sentences * wordcount::WORDS_PER_SENTENCE);
    let count = report.component("count").expect("count");
    assert_eq!(count.tasks, parallelism);
    assert_eq!(count.metrics.executed, sentences * 10);
    Ok(())
}

#[test]
fn formula_counts_at_parallelism_1() -> anyhow::Result<()> {
    run_formula(2_000, 1, 1)
}

#[test]
fn formula_counts_at_parallelism_4() -> anyhow::Result<()> {
    run_formula(2_000, 4, 2)
}

/// A fixed text, so the expected counts can be written down by hand.
#[derive(Clone)]
struct Text(Vec<&'static str>, usize);

impl Spout for Text {
    type Out = wordcount::Sentence;
    fn open(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.1 = ctx.task_index() as usize;
        Ok(())
    }
    fn next(
        &mut self,
        out: &mut SpoutEmitter<wordcount::Sentence>,
    ) -> Result<SpoutStatus, TaskError> {
        // Task k of P emits lines k, k+P, ... (P = 1 here and there is a single spout).
        let Some(line) = self.0.get(self.1) else {
            return Ok(SpoutStatus::Done);
        };
        out.emit(wordcount::Sentence {
            id: self.1 as u64,
            text: (*line).to_owned(),
        });
        self.1 += 1;
        Ok(SpoutStatus::Active)
    }
}

fn golden_text(parallelism: u32) -> anyhow::Result<Vec<(String, u64)>> {
    let lines = vec![
        "the quick brown fox",
        "jumps over the lazy dog",
        "the dog sleeps",
        "a fox is quick",
    ];
    let (totals_tx, totals_rx) = mpsc::channel::<CountTotals>();
    let (sink_tx, sink_rx) = mpsc::channel();
    let mut t = TopologyBuilder::new("golden");
    let text = t.add(spout("text", Text(lines, 0)));
    let words = t.add(
        bolt("split", SplitBolt::default())
            .parallelism(parallelism)
            .shuffle(&text),
    );
    let counts = t.add(
        bolt("count", CountBolt::new(totals_tx))
            .parallelism(parallelism)
            .fields(&words, ["word"]),
    );
    t.add(bolt("sink", SinkBolt::new(sink_tx)).shuffle(&counts));
    cluster(2).run(t.build()?)?;
    assert_eq!(sink_rx.try_iter().sum::<u64>(), 16);
    let mut all: Vec<(String, u64)> = totals_rx
        .try_iter()
        .flatten()
        .map(|(w, c)| (w.to_string(), c))
        .collect();
    all.sort();
    Ok(all)
}

#[test]
fn golden_text_counts() -> anyhow::Result<()> {
    let expected: Vec<(String, u64)> = [
        ("a", 1),
        ("brown", 1),
        ("dog", 2),
        ("fox", 2),
        ("is", 1),
        ("jumps", 1),
        ("lazy", 1),
        ("over", 1),
        ("quick", 2),
        ("sleeps", 1),
        ("the", 3),
    ]
    .into_iter()
    .map(|(w, c)| (w.to_owned(), c))
    .collect();
    assert_eq!(golden_text(1)?, expected);
    assert_eq!(golden_text(4)?, expected);
    Ok(())
}
