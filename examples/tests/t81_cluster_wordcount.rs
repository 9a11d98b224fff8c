//! Word count across three node processes of the real binary: exact counts through the file
//! sink; then, under at-least-once, a worker node SIGKILLed mid-run: its tasks move, its trees
//! replay, every word is counted at least once and the topology finishes.

// Phases and measured figures go to the test's output.
#![allow(clippy::print_stderr)]

mod cluster;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cluster::{Cluster, finished, lines, poll, stderr, three_up};
use tempest_examples::cluster_wordcount::check_output;

/// One cluster at a time: each is three processes on a two-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn submit(
    c: &Cluster,
    via: usize,
    out: &std::path::Path,
    sentences: u64,
    extra: &[&str],
) -> anyhow::Result<()> {
    let output = format!("output={}", out.display());
    let sentences = format!("sentences={sentences}");
    let mut args = vec!["submit", "wordcount", "--arg", &output, "--arg", &sentences];
    args.extend_from_slice(extra);
    let o = c.cli(via, &args)?;
    anyhow::ensure!(o.status.success(), "submit failed: {}", stderr(&o));
    Ok(())
}

#[test]
fn a_task_that_panics_is_restarted_by_its_node() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start(3, &[])?;
    let out = c.dir.path().join("out");
    three_up(&c)?;
    // Sentence 777 makes its split task panic, and a spout panics after 500 sentences (once per
    // process each); the trees they held time out in 2 s and are replayed.
    submit(
        &c,
        0,
        &out,
        3000,
        &[
            "--arg",
            "panic_at=777",
            "--arg",
            "spout_panic_after=500",
            "--arg",
            "message_timeout_ms=2000",
        ],
    )?;
    let status = finished(&c, 0, Duration::from_secs(120))?;
    eprintln!("{status}");
    let logs: String = (1..=3).map(|id| c.log(id)).collect();
    // Each panic happens once per process, on whichever nodes run a split and a spout task.
    assert!(
        logs.matches("task failed and was restarted").count() >= 2,
        "a bolt and a spout were restarted:\n{logs}"
    );
    assert!(
        logs.contains("execute panicked") && logs.contains("next panicked"),
        "{logs}"
    );
    let check = check_output(&out, 3000)?;
    assert!(check.at_least_once(), "{check:?}");
    Ok(())
}

#[test]
fn word_count_across_three_nodes_is_exact() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start(3, &[])?;
    let out = c.dir.path().join("out");
    three_up(&c)?;
    let started = Instant::now();
    submit(&c, 1, &out, 5000, &[])?;
    let status = finished(&c, 2, Duration::from_secs(120))?;
    eprintln!("finished in {:?}: {status}", started.elapsed());
    let check = check_output(&out, 5000)?;
    assert!(check.exact(), "{check:?}");
    assert_eq!(
        check.lines, 50_000,
        "one line per word, no replay: {check:?}"
    );
    Ok(())
}

#[test]
fn a_worker_killed_mid_run_loses_no_word() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start(3, &[])?;
    let out = c.dir.path().join("out");
    let m = three_up(&c)?;
    let leader = m.leader().expect("a leader");
    // A worker that does not lead the manager, so the manager keeps its leader.
    let victim = (1..=3u64).find(|n| *n != leader).expect("another node");
    let via = (1..=3u64).find(|n| *n != victim).expect("a survivor") as usize - 1;
    let sentences = 40_000;
    submit(
        &c,
        via,
        &out,
        sentences,
        &["--arg", "message_timeout_ms=3000"],
    )?;

    eprintln!("--- SIGKILL node {victim} once words reach the sink");
    poll("words in the sink", Duration::from_secs(60), || {
        Ok((lines(&out) > 20_000).then_some(()))
    })?;
    let before = lines(&out);
    c.kill(victim as usize - 1)?;
    let killed_at = Instant::now();

    let status = finished(&c, via, Duration::from_secs(180))?;
    eprintln!(
        "killed after {before} lines; finished {:?} after the kill: {status}",
        killed_at.elapsed()
    );
    assert!(
        status.contains("reschedules=1"),
        "the dead node's tasks moved: {status}"
    );
    let check = check_output(&out, sentences)?;
    eprintln!("{check:?}");
    assert!(check.at_least_once(), "a word was lost: {check:?}");
    Ok(())
}
