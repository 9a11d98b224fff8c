//! Exactly-once end to end across three node processes of the real binary: the `counter`
//! example reads JSON lines from a file, counts per key in a replicated stateful bolt (three
//! replicas, state on disk) and writes one file per input record through the idempotent
//! file sink. The node running the source is SIGKILLed mid-run and started again with the
//! same flags, then the node leading a count group the same: the output directory must hold,
//! for each key, exactly the counts 1..n, each once.

// Phases and measured figures go to the test's output.
#![allow(clippy::print_stderr)]

mod cluster;

use std::path::Path;
use std::time::{Duration, Instant};

use cluster::{Cluster, finished_named, poll, stderr, stdout, three_up};
use tempest_examples::counter::check;

/// Output files written so far.
fn outputs(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count()
    })
}

/// The node whose log shows the `input` spout task opened most recently after `since` lines.
fn source_node(c: &Cluster) -> Option<usize> {
    (1..=3).find(|n| {
        c.log(*n as u64)
            .lines()
            .any(|l| l.contains("component=input") && l.contains("spout opened"))
    })
}

/// What `tempest status counter` says, through node `via`.
fn status(c: &Cluster, via: usize) -> anyhow::Result<String> {
    Ok(stdout(&c.cli(via, &["status", "counter"])?))
}

#[test]
fn killed_nodes_restarted_with_the_same_flags_leave_each_count_once() -> anyhow::Result<()> {
    let mut c = Cluster::start(3, &[])?;
    let dir = c.dir.path().to_owned();
    let input = dir.join("input.jsonl");
    let out = dir.join("out");
    let records = 4_000u64;
    let mut text = String::new();
    for i in 0..records {
        text.push_str(&format!("{{\"key\":\"k{}\",\"value\":{i}}}\n", i % 37));
    }
    // A line that is not a record: skipped with an error, nothing else lost.
    text.insert_str(0, "not json\n");
    std::fs::write(&input, text)?;
    let m = three_up(&c)?;
    let leader = m.leader().expect("a manager leader");

    let o = c.cli(
        0,
        &[
            "submit",
            "counter",
            "--arg",
            &format!("input={}", input.display()),
            "--arg",
            &format!("output={}", out.display()),
        ],
    )?;
    anyhow::ensure!(o.status.success(), "submit failed: {}", stderr(&o));

    // Kill the source's node once a quarter of the output is written (if it leads the
    // manager, a failover of the manager comes with it), and start it again.
    let source = poll("the source to start", Duration::from_secs(60), || {
        Ok(source_node(&c))
    })?;
    poll("a quarter of the output", Duration::from_secs(120), || {
        Ok((outputs(&out) as u64 >= records / 4).then_some(()))
    })?;
    eprintln!(
        "--- SIGKILL n{source} (the source's node; manager leader n{leader}) at {} outputs: {}",
        outputs(&out),
        status(&c, source % 3)?
    );
    c.kill(source - 1)?;
    let killed = Instant::now();
    // Its tasks move: the source resumes elsewhere from its committed position.
    let resumed = poll("the source to resume", Duration::from_secs(60), || {
        Ok((1..=3u64).find(|n| {
            *n as usize != source
                && c.log(*n)
                    .contains("spout resumes from its committed position")
        }))
    })?;
    eprintln!(
        "source resumed on n{resumed} {:?} after the kill",
        killed.elapsed()
    );
    c.spawn(source - 1)?;

    // Then a second node, once half is written, started again at once.
    poll("half of the output", Duration::from_secs(120), || {
        Ok((outputs(&out) as u64 >= records / 2).then_some(()))
    })?;
    let second = (1..=3).find(|n| *n != source).expect("another node");
    eprintln!("--- SIGKILL n{second} at {} outputs", outputs(&out));
    c.kill(second - 1)?;
    c.spawn(second - 1)?;

    let via = (1..=3).find(|n| *n != second).expect("a node") - 1;
    let done = finished_named(&c, via, "counter", Duration::from_secs(240))?;
    eprintln!("{done}");
    let check = check(&input, &out)?;
    eprintln!(
        "outputs={} keys={} wrong={:?}",
        check.outputs,
        check.expected.len(),
        check.wrong_keys
    );
    assert_eq!(check.expected.values().sum::<u64>(), records);
    assert!(check.ok(), "not each count once: {check:?}");
    assert!(
        (1..=3).any(|n| c.log(n).contains("a line that is not a record")),
        "the bad line was reported"
    );
    Ok(())
}
