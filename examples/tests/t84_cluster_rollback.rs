//! Rollback recovery across three node processes of the real binary: word count whose count
//! bolt is stateful but not replicated, checkpointed every 300 ms. A node with tasks of the
//! run is SIGKILLed mid-run; the run rolls back on every node to its last checkpoint (copied
//! to a second node, fetched by the nodes that lack it), the spouts rewind and replay, and the
//! final counts equal a run without the kill: every word's count is exact, none lower (state
//! lost) nor higher (counted twice). A spout task that fails (a panic) rolls the run back the
//! same way (restarting it in place would start its source over).

// Phases and measured figures go to the test's output.
#![allow(clippy::print_stderr)]

mod cluster;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster::{Cluster, finished, lines, poll, stderr, stdout, three_up};
use tempest_examples::cluster_wordcount::{CountedWord, check_output};

/// How many times the sink saw each word counted 1: once per word when its count went on
/// from a restored state, twice for words counted again from zero.
fn first_counts(dir: &std::path::Path) -> anyhow::Result<BTreeMap<String, u32>> {
    let mut firsts = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            if let Ok(c) = serde_json::from_str::<CountedWord>(line) {
                if c.count == 1 {
                    *firsts.entry(c.word.to_string()).or_default() += 1;
                }
            }
        }
    }
    Ok(firsts)
}

/// Submits the checkpointed word count (every 300 ms, 4,000 sentences a second per spout
/// task) of `sentences` into `out` through node `via`, with `extra` arguments.
fn submit(
    c: &Cluster,
    via: usize,
    out: &std::path::Path,
    sentences: u64,
    extra: &[&str],
) -> anyhow::Result<()> {
    let output = format!("output={}", out.display());
    let sentences = format!("sentences={sentences}");
    let mut args = vec![
        "submit",
        "wordcount",
        "--arg",
        &output,
        "--arg",
        &sentences,
        "--arg",
        "checkpoint_ms=300",
        "--arg",
        "rate=4000",
    ];
    for a in extra {
        args.extend(["--arg", a]);
    }
    let o = c.cli(via, &args)?;
    anyhow::ensure!(o.status.success(), "submit failed: {}", stderr(&o));
    Ok(())
}

/// The last checkpoint `tempest status` reports for the run, if any.
fn recorded_checkpoint(c: &Cluster, via: usize) -> anyhow::Result<Option<u64>> {
    let o = c.cli(via, &["status", "wordcount"])?;
    let s = stdout(&o);
    Ok(s.split_whitespace()
        .find_map(|f| f.strip_prefix("checkpoint="))
        .and_then(|c| c.parse().ok()))
}

/// One cluster at a time: each is three processes on a two-core machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Asserts the counts are exact and went on from restored states.
fn assert_restored_exactly(out: &std::path::Path, sentences: u64) -> anyhow::Result<()> {
    let check = check_output(out, sentences)?;
    eprintln!("{check:?}");
    assert!(
        check.exact(),
        "counts after the rollback differ from a run without a failure: {check:?}"
    );
    // Exact counts could also come from starting over: the counts went on from the restored
    // states instead (every word was counted before the checkpoint restored).
    let firsts = first_counts(out)?;
    let again: Vec<_> = firsts.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(firsts.len(), 1000, "every word was counted");
    assert!(
        again.is_empty(),
        "{} words were counted again from zero, as if no state was restored: {:?}",
        again.len(),
        again.iter().take(5).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn a_spout_task_that_panics_rolls_the_run_back() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start(3, &[])?;
    let out = c.dir.path().join("out");
    three_up(&c)?;
    let sentences = 40_000u64;
    // A spout task panics once per process, after 8,000 sentences (about half of its share).
    submit(&c, 0, &out, sentences, &["spout_panic_after=8000"])?;
    let status = finished(&c, 0, Duration::from_secs(240))?;
    eprintln!("{status}");
    for n in 1..=3 {
        for line in c
            .log(n)
            .lines()
            .filter(|l| l.contains("failed") || l.contains("roll"))
        {
            eprintln!("n{n}: {line}");
        }
    }
    assert!(
        !status.contains("rollbacks=0"),
        "the panic rolled the run back: {status}"
    );
    assert!(
        (1..=3).any(|n| c.log(n).contains("a task of a checkpointed run failed")),
        "a spout task failed"
    );
    assert_restored_exactly(&out, sentences)
}

#[test]
fn a_killed_node_s_stateful_tasks_roll_back_to_a_checkpoint_and_count_exactly() -> anyhow::Result<()>
{
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start(3, &[])?;
    let out = c.dir.path().join("out");
    let m = three_up(&c)?;
    let leader = m.leader().expect("a leader");
    // A node that does not lead the manager: every node holds tasks of the run.
    let victim = (1..=3u64).find(|n| *n != leader).expect("another node");
    let via = (1..=3u64).find(|n| *n != victim).expect("a survivor") as usize - 1;
    let sentences = 60_000u64;
    let output = format!("output={}", out.display());

    // A replicated stateful bolt would count a rollback's replay again: refused, clearly.
    let o = c.cli(
        via,
        &[
            "submit",
            "wordcount",
            "--arg",
            &output,
            "--arg",
            "checkpoint_ms=300",
            "--arg",
            "replicas=3",
        ],
    )?;
    assert!(
        !o.status.success(),
        "a replicated bolt in a checkpointed run is refused"
    );
    assert!(
        stderr(&o).contains("`.replicas(1)`"),
        "the refusal says what to do: {}",
        stderr(&o)
    );

    submit(&c, via, &out, sentences, &["message_timeout_ms=5000"])?;

    eprintln!("--- SIGKILL node {victim} once a checkpoint is recorded and words flow");
    // A quarter through the input, with a few checkpoints behind it.
    let recorded = poll("a recorded checkpoint", Duration::from_secs(60), || {
        let c = recorded_checkpoint(&c, via)?;
        Ok(c.filter(|c| *c >= 2 && lines(&out) > 150_000))
    })?;
    let before = lines(&out);
    c.kill(victim as usize - 1)?;
    let killed_at = Instant::now();

    let status = finished(&c, via, Duration::from_secs(240))?;
    eprintln!(
        "killed after {before} lines, checkpoint {recorded} recorded; finished {:?} after the kill: {status}",
        killed_at.elapsed()
    );
    assert!(
        status.contains("rollbacks=1"),
        "the run rolled back once: {status}"
    );
    let survivors: Vec<u64> = (1..=3).filter(|n| *n != victim).collect();
    let rolled: Vec<u64> = survivors
        .iter()
        .copied()
        .filter(|n| c.log(*n).contains("run rolls back to its last checkpoint"))
        .collect();
    assert_eq!(rolled, survivors, "every surviving node restarted the run");
    assert_restored_exactly(&out, sentences)?;
    Ok(())
}
