//! Stateful bolts in an in-process run: the state lives in the task, `execute` sees every input
//! once per delivery, failures upstream replay without counting twice, and a panic in `execute`
//! fails that input's tree.

mod common;

use std::time::Duration;

use common::*;
use serde::{Deserialize, Serialize};
use tempest_dsl::*;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Record)]
struct Keyed {
    key: u64,
    n: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Record)]
struct Count {
    key: u64,
    count: u64,
}

/// `n` to `(n % 10, n)`, failing every `fail_every`-th first delivery (a replayed one passes).
#[derive(Clone)]
struct ToKey {
    fail_every: u64,
    seen: std::collections::HashSet<u64>,
}

impl Bolt for ToKey {
    type In = N;
    type Out = Keyed;
    fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<Keyed>) -> Result<(), TaskError> {
        let n = t.n;
        if self.fail_every > 0 && n % self.fail_every == 0 && self.seen.insert(n) {
            return Err(TaskError::new("fails once"));
        }
        out.emit(Keyed { key: n % 10, n });
        Ok(())
    }
}

/// Counts per key; the count goes out with every input. Panics on `panic_on` the first time
/// (the state remembers it panicked, so the replay passes).
#[derive(Clone)]
struct CountPerKey {
    panic_on: Option<u64>,
}

#[derive(Default, Serialize, Deserialize)]
struct CountState {
    counts: KeyedState<u64, u64>,
    panicked: bool,
}

impl StatefulBolt for CountPerKey {
    type In = Keyed;
    type Out = Count;
    type State = CountState;
    fn execute(
        &self,
        state: &mut CountState,
        t: Tuple<Keyed>,
        out: &mut StateEmitter<Count>,
    ) -> Result<(), TaskError> {
        if Some(t.n) == self.panic_on && !state.panicked {
            state.panicked = true;
            panic!("a bad input");
        }
        let count = state.counts.entry(t.key).or_default();
        *count += 1;
        out.emit(Count {
            key: t.key,
            count: *count,
        });
        Ok(())
    }
}

fn topology(
    total: u64,
    guarantee: Guarantee,
    fail_every: u64,
    panic_on: Option<u64>,
) -> (Topology, std::sync::mpsc::Receiver<Collected<Count>>) {
    let (sink, rx) = Collect::<Count>::new();
    let mut t = TopologyBuilder::new("stateful");
    let numbers = t.add(spout("numbers", Numbers::new(total)).parallelism(2));
    let keyed = t.add(
        bolt(
            "key",
            ToKey {
                fail_every,
                seen: Default::default(),
            },
        )
        .parallelism(2)
        .shuffle(&numbers),
    );
    let counts = t.add(
        stateful("count", CountPerKey { panic_on })
            .parallelism(3)
            .fields(&keyed, ["key"]),
    );
    t.add(bolt("sink", sink).shuffle(&counts));
    let topology = build(t, guarantee).expect("valid");
    (topology, rx)
}

/// Builds with small batches. Replays here come from failures (at once), never from
/// timeouts: the timeout is long, so a loaded machine does not replay whole batches, which
/// at-least-once would count twice.
fn build(t: TopologyBuilder, guarantee: Guarantee) -> Result<Topology, BuildErrors> {
    t.guarantee(guarantee)
        .config(TopologyConfig {
            message_timeout: Duration::from_secs(30),
            batch_size: 32,
            ..TopologyConfig::default()
        })
        .build()
}

/// For each key, the counts seen, sorted.
fn counts_by_key(items: Vec<Count>) -> std::collections::BTreeMap<u64, Vec<u64>> {
    let mut by: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    for c in items {
        by.entry(c.key).or_default().push(c.count);
    }
    for v in by.values_mut() {
        v.sort_unstable();
    }
    by
}

#[test]
fn a_stateful_bolt_counts_every_input_once_under_both_guarantees() -> anyhow::Result<()> {
    for guarantee in [Guarantee::AtMostOnce, Guarantee::AtLeastOnce] {
        let (topology, rx) = topology(2_000, guarantee, 0, None);
        run(topology, 2)?;
        let by = counts_by_key(all_items(&rx));
        assert_eq!(by.len(), 10, "{guarantee}");
        for (key, counts) in by {
            assert_eq!(
                counts,
                (1..=200).collect::<Vec<_>>(),
                "{guarantee}: key {key}"
            );
        }
    }
    Ok(())
}

#[test]
fn failures_upstream_replay_and_are_counted_once() -> anyhow::Result<()> {
    let (topology, rx) = topology(2_000, Guarantee::AtLeastOnce, 7, None);
    let report = run(topology, 2)?;
    let spout = report.component("numbers").expect("spout");
    assert!(spout.metrics.tree_failed > 0, "nothing failed upstream?");
    let by = counts_by_key(all_items(&rx));
    for (key, counts) in by {
        assert_eq!(counts, (1..=200).collect::<Vec<_>>(), "key {key}");
    }
    Ok(())
}

#[test]
fn a_panic_in_execute_fails_the_input_and_its_replay_is_counted() -> anyhow::Result<()> {
    let (topology, rx) = topology(1_000, Guarantee::AtLeastOnce, 0, Some(13));
    let report = run(topology, 2)?;
    let count = report.component("count").expect("count");
    assert_eq!(count.metrics.failed, 1, "the panic failed one input");
    let by = counts_by_key(all_items(&rx));
    // Key 3 saw 13 twice (the panic, then its replay): its count still ends at 100 because the
    // panicking execution changed nothing but the flag.
    for (key, counts) in by {
        assert_eq!(counts, (1..=100).collect::<Vec<_>>(), "key {key}");
    }
    Ok(())
}

/// What [`IdSink`] wrote: per tuple id (or, without ids, per arrival) the count, and how many
/// writes of an id already written carried a different value.
#[derive(Default)]
struct Written {
    by_id: std::collections::BTreeMap<TupleId, Count>,
    without_id: Vec<Count>,
    conflicts: u64,
}

/// An idempotent sink: an upsert of each count keyed by its tuple id. Fails the first delivery
/// of every fifth (key, count), which fails its tree after the counter applied it.
#[derive(Clone)]
struct IdSink {
    written: std::sync::Arc<std::sync::Mutex<Written>>,
    failed: std::collections::HashSet<(u64, u64)>,
}

impl Bolt for IdSink {
    type In = Count;
    type Out = ();
    const IDEMPOTENT: bool = true;
    fn execute(&mut self, t: Tuple<Count>, _out: &mut Emitter<()>) -> Result<(), TaskError> {
        let c = t.value().clone();
        if (c.key * 31 + c.count) % 5 == 0 && self.failed.insert((c.key, c.count)) {
            return Err(TaskError::new("the sink fails a first delivery"));
        }
        let mut w = self.written.lock().expect("not poisoned");
        match t.id() {
            Some(id) => {
                if let Some(before) = w.by_id.insert(id, c.clone()) {
                    if before != c {
                        w.conflicts += 1;
                    }
                }
            }
            None => w.without_id.push(c),
        }
        Ok(())
    }
}

fn failing_sink_run(guarantee: Guarantee) -> anyhow::Result<(tempest_runtime::RunReport, Written)> {
    let mut t = TopologyBuilder::new("exactly-once");
    let numbers = t.add(spout("numbers", Numbers::new(2_000)).parallelism(2));
    let keyed = t.add(
        bolt(
            "key",
            ToKey {
                fail_every: 0,
                seen: Default::default(),
            },
        )
        .parallelism(2)
        .shuffle(&numbers),
    );
    count_into_a_failing_sink(t, &keyed, guarantee)
}

/// Adds `count` (3 tasks, by key) after `keyed` and an [`IdSink`] after it, and runs `t`.
fn count_into_a_failing_sink(
    mut t: TopologyBuilder,
    keyed: &Handle<Keyed>,
    guarantee: Guarantee,
) -> anyhow::Result<(tempest_runtime::RunReport, Written)> {
    let written = std::sync::Arc::new(std::sync::Mutex::new(Written::default()));
    let counts = t.add(
        stateful("count", CountPerKey { panic_on: None })
            .parallelism(3)
            .fields(keyed, ["key"]),
    );
    t.add(
        bolt(
            "sink",
            IdSink {
                written: std::sync::Arc::clone(&written),
                failed: Default::default(),
            },
        )
        .shuffle(&counts),
    );
    let report = run(build(t, guarantee)?, 2)?;
    let written = std::mem::take(&mut *written.lock().expect("not poisoned"));
    Ok((report, written))
}

#[test]
fn exactly_once_a_failure_after_the_state_replays_without_counting_twice() -> anyhow::Result<()> {
    let (report, written) = failing_sink_run(Guarantee::ExactlyOnce)?;
    let spout = report.component("numbers").expect("spout");
    let count = report.component("count").expect("count");
    assert!(spout.metrics.tree_failed > 0, "the sink failed nothing?");
    assert!(
        count.metrics.deduplicated > 0,
        "no replay reached the counter: {report}"
    );
    assert!(written.without_id.is_empty(), "every tuple carries an id");
    assert_eq!(written.conflicts, 0, "a replay wrote a different value");
    let by = counts_by_key(written.by_id.into_values().collect());
    assert_eq!(by.len(), 10);
    for (key, counts) in by {
        assert_eq!(counts, (1..=200).collect::<Vec<_>>(), "key {key}");
    }

    // The same failures under at-least-once count replays again: what the test would see if
    // the counter did not skip them.
    let (_, written) = failing_sink_run(Guarantee::AtLeastOnce)?;
    assert!(written.by_id.is_empty(), "no ids under at-least-once");
    let by = counts_by_key(written.without_id);
    assert!(
        by.values().any(|counts| counts.last() > Some(&200)),
        "at-least-once counted no replay twice"
    );
    Ok(())
}

/// Under exactly-once, a stateful task fed by a seekable source forgets the ids it applied as
/// the source commits past them: after a run of 5 000 records (with replays), it remembers
/// only the last ones. Were ids kept for the retention time (5 minutes), it would remember
/// all 5 000.
#[test]
fn exactly_once_ids_are_forgotten_once_the_source_commits_past_them() -> anyhow::Result<()> {
    use std::io::Write;
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("in.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input)?);
    for n in 0..5_000u64 {
        writeln!(file, "{{\"key\": {}, \"n\": {n}}}", n % 10)?;
    }
    file.into_inner()?.sync_all()?;

    let mut t = TopologyBuilder::new("forgets");
    let keyed = t.add(spout(
        "input",
        tempest_dsl::connectors::JsonLinesSource::<Keyed>::new(&input),
    ));
    let (report, written) = count_into_a_failing_sink(t, &keyed, Guarantee::ExactlyOnce)?;
    let count = report.component("count").expect("count");
    assert!(
        count.metrics.deduplicated > 0,
        "no replay reached the counter: {report}"
    );
    let remembered = count.metrics.remembered;
    assert!(
        remembered > 0 && remembered < 1_000,
        "the counter remembers {remembered} of 5000 ids: {report}"
    );
    assert_eq!(written.conflicts, 0, "a replay wrote a different value");
    let by = counts_by_key(written.by_id.into_values().collect());
    assert_eq!(by.len(), 10);
    for (key, counts) in by {
        assert_eq!(counts, (1..=500).collect::<Vec<_>>(), "key {key}");
    }
    Ok(())
}
