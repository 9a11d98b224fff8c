//! Replicated stateful bolts across three node processes of the real binary: the word count's
//! count bolt is a stateful bolt replicated 3 ways through Raft. Its replicas end a run with
//! byte-identical state (equal digests); a SIGKILL of a group's leader mid-stream elects a new
//! leader (a higher term, on another node) and loses no word under at-least-once.

// Phases and measured figures go to the test's output.
#![allow(clippy::print_stderr)]

mod cluster;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cluster::{Cluster, finished, lines, poll, stderr, three_up};
use tempest_examples::cluster_wordcount::check_output;
use tempest_examples::node_procs::{group_leaders, log_field as field};

/// One cluster at a time: each is three processes on a two-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn submit(c: &Cluster, via: usize, out: &std::path::Path, extra: &[&str]) -> anyhow::Result<()> {
    let output = format!("output={}", out.display());
    let mut args = vec![
        "submit",
        "wordcount",
        "--arg",
        &output,
        "--arg",
        "replicas=3",
    ];
    args.extend_from_slice(extra);
    let o = c.cli(via, &args)?;
    anyhow::ensure!(o.status.success(), "submit failed: {}", stderr(&o));
    Ok(())
}

/// The last "replica stopped" line of each replica on the given nodes: group -> [(node,
/// applied, digest)].
fn stopped_replicas(c: &Cluster, nodes: &[u64]) -> BTreeMap<String, Vec<(u64, String, String)>> {
    let mut by_group: BTreeMap<String, Vec<(u64, String, String)>> = BTreeMap::new();
    for &id in nodes {
        for line in c.log(id).lines().filter(|l| l.contains("replica stopped")) {
            let (Some(group), Some(applied), Some(digest)) = (
                field(line, "group"),
                field(line, "applied"),
                field(line, "digest"),
            ) else {
                continue;
            };
            // A node that started the run again (its tasks moved) stopped its replicas then
            // too: its last line counts.
            let replicas = by_group.entry(group.to_owned()).or_default();
            replicas.retain(|r| r.0 != id);
            replicas.push((id, applied.to_owned(), digest.to_owned()));
        }
    }
    by_group
}

#[test]
fn replicas_of_every_group_hold_identical_state_after_a_run() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start(3, &[])?;
    let out = c.dir.path().join("out");
    three_up(&c)?;
    let started = Instant::now();
    submit(&c, 0, &out, &["--arg", "sentences=5000"])?;
    let status = finished(&c, 1, Duration::from_secs(120))?;
    eprintln!("finished in {:?}: {status}", started.elapsed());
    let check = check_output(&out, 5000)?;
    assert!(check.exact(), "{check:?}");
    assert_eq!(check.lines, 50_000, "one line per word: {check:?}");

    // Two count tasks, three replicas each: every replica logs its digest when the run stops.
    let groups = poll("every replica stopped", Duration::from_secs(30), || {
        let g = stopped_replicas(&c, &[1, 2, 3]);
        Ok((g.len() == 2 && g.values().all(|r| r.len() == 3)).then_some(g))
    })?;
    for (group, replicas) in &groups {
        eprintln!("{group}: {replicas:?}");
        let nodes: std::collections::BTreeSet<u64> = replicas.iter().map(|r| r.0).collect();
        assert_eq!(nodes.len(), 3, "{group}: replicas on distinct nodes");
        let (_, applied, digest) = &replicas[0];
        assert!(applied.parse::<u64>()? > 1, "{group} applied entries");
        for (node, a, d) in replicas {
            assert_eq!((a, d), (applied, digest), "{group}: node {node} differs");
        }
    }
    assert_ne!(
        groups.values().next().map(|r| &r[0].2),
        groups.values().nth(1).map(|r| &r[0].2),
        "the two tasks count different words"
    );
    Ok(())
}

#[test]
fn a_group_leader_killed_mid_stream_fails_over_and_loses_no_word() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start(3, &[])?;
    let out = c.dir.path().join("out");
    let m = three_up(&c)?;
    let manager = m.leader().expect("a manager leader");
    let sentences = 30_000;
    let via = manager as usize - 1;
    submit(
        &c,
        via,
        &out,
        &[
            "--arg",
            &format!("sentences={sentences}"),
            "--arg",
            "rate=1000",
            "--arg",
            "message_timeout_ms=3000",
        ],
    )?;
    poll("words in the sink", Duration::from_secs(60), || {
        Ok((lines(&out) > 40_000).then_some(()))
    })?;
    // A node that leads a count group but not the manager, if there is one.
    let before = group_leaders(&c, &[1, 2, 3]);
    anyhow::ensure!(before.len() == 2, "two groups with leaders: {before:?}");
    let (group, (term, victim)) = before
        .iter()
        .find(|(_, (_, l))| *l != manager)
        .or_else(|| before.iter().next())
        .map(|(g, l)| (g.clone(), *l))
        .expect("a group");
    eprintln!("--- SIGKILL node {victim}, leader of {group} in term {term}");
    let lines_before = lines(&out);
    c.kill(victim as usize - 1)?;
    let killed = Instant::now();
    let survivors: Vec<u64> = (1..=3).filter(|n| *n != victim).collect();
    let (new_term, new_leader) = poll("a new leader", Duration::from_secs(10), || {
        Ok(group_leaders(&c, &survivors)
            .get(&group)
            .copied()
            .filter(|(t, l)| *t > term && *l != victim))
    })?;
    eprintln!(
        "new leader n{new_leader} in term {new_term} seen {:?} after the kill",
        killed.elapsed()
    );
    let via = if victim == manager {
        survivors[0] as usize - 1
    } else {
        via
    };
    let status = finished(&c, via, Duration::from_secs(240))?;
    eprintln!(
        "killed after {lines_before} lines; finished {:?} after the kill: {status}",
        killed.elapsed()
    );
    let check = check_output(&out, sentences)?;
    eprintln!("{check:?}");
    assert!(check.at_least_once(), "a word was lost: {check:?}");
    // The survivors of each group agree.
    let groups = poll(
        "the surviving replicas stopped",
        Duration::from_secs(30),
        || {
            let g = stopped_replicas(&c, &survivors);
            Ok((g.len() == 2 && g.values().all(|r| r.len() == 2)).then_some(g))
        },
    )?;
    for (group, replicas) in &groups {
        assert_eq!(
            (&replicas[0].1, &replicas[0].2),
            (&replicas[1].1, &replicas[1].2),
            "{group}: {replicas:?}"
        );
    }
    Ok(())
}

/// Runs a paced replicated word count with `state` storage, SIGKILLs a node that leads no count
/// group (nor the manager, when one such exists), restarts it with its data dir, optionally
/// damaging its replicas' logs in between; returns the cluster, the victim and the survivors'
/// and victim's logs to check, after checking that no word was lost and that the replicas that
/// ran to the end agree.
fn restart_a_follower(state: &str, corrupt: bool) -> anyhow::Result<(Cluster, u64, String)> {
    let mut c = Cluster::start(3, &[])?;
    let out = c.dir.path().join("out");
    let m = three_up(&c)?;
    let manager = m.leader().expect("a manager leader");
    let sentences = 20_000;
    submit(
        &c,
        manager as usize - 1,
        &out,
        &[
            "--arg",
            &format!("sentences={sentences}"),
            "--arg",
            "rate=1000",
            "--arg",
            "message_timeout_ms=3000",
            "--arg",
            &format!("state={state}"),
        ],
    )?;
    poll("words in the sink", Duration::from_secs(60), || {
        Ok((lines(&out) > 30_000).then_some(()))
    })?;
    let led = group_leaders(&c, &[1, 2, 3]);
    anyhow::ensure!(led.len() == 2, "two groups with leaders: {led:?}");
    let leading: Vec<u64> = led.values().map(|(_, l)| *l).collect();
    let victim = (1..=3u64)
        .filter(|n| !leading.contains(n))
        .min_by_key(|n| *n == manager)
        .expect("three nodes and two groups leave a follower of both");
    eprintln!("--- SIGKILL node {victim} (a follower of both groups), then restart it");
    c.kill(victim as usize - 1)?;
    let log_before = c.log(victim).len();
    if corrupt {
        let data = c.dir.path().join(format!("node-{victim}")).join("groups");
        let mut damaged = 0;
        for run in std::fs::read_dir(&data)?.flatten() {
            for task in std::fs::read_dir(run.path())?.flatten() {
                let log = task.path().join("raft.log");
                let mut bytes = std::fs::read(&log)?;
                anyhow::ensure!(bytes.len() > 3000, "a log of {} bytes", bytes.len());
                let at = bytes.len() / 3;
                for b in &mut bytes[at..at + 16] {
                    *b ^= 0x5a;
                }
                std::fs::write(&log, bytes)?;
                damaged += 1;
            }
        }
        anyhow::ensure!(damaged == 2, "{damaged} logs damaged");
    }
    c.spawn(victim as usize - 1)?;
    let status = finished(&c, manager as usize - 1, Duration::from_secs(240))?;
    eprintln!("{status}");
    let check = check_output(&out, sentences)?;
    eprintln!("{check:?}");
    assert!(check.at_least_once(), "a word was lost: {check:?}");
    let expect = if corrupt { 2 } else { 3 };
    let groups = poll("the replicas stopped", Duration::from_secs(30), || {
        let g = stopped_replicas(&c, &[1, 2, 3]);
        Ok((g.len() == 2 && g.values().all(|r| r.len() == expect)).then_some(g))
    })?;
    for (group, replicas) in &groups {
        eprintln!("{group}: {replicas:?}");
        for r in replicas {
            assert_eq!((&r.1, &r.2), (&replicas[0].1, &replicas[0].2), "{group}");
        }
        let victim_there = replicas.iter().any(|r| r.0 == victim);
        assert_eq!(victim_there, !corrupt, "{group}: the restarted replica");
    }
    let restarted_log = c.log(victim)[log_before..].to_owned();
    Ok((c, victim, restarted_log))
}

#[test]
fn a_killed_follower_without_its_log_rejoins_catches_up_and_only_then_votes() -> anyhow::Result<()>
{
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (_c, victim, log) = restart_a_follower("memory", false)?;
    // Both replicas recover (again, if the node started the run again when its tasks moved).
    assert!(
        log.matches("rejoins without its log").count() >= 2,
        "node {victim}: both replicas recover:\n{log}"
    );
    assert!(
        log.matches("caught up: it votes again").count() >= 2,
        "node {victim}:\n{log}"
    );
    Ok(())
}

#[test]
fn a_replica_restarted_with_its_disk_resumes_from_its_log() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (_c, victim, log) = restart_a_follower("disk", false)?;
    let resumed: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("replica started"))
        .filter_map(|l| field(l, "stored_log")?.parse().ok())
        .collect();
    assert!(resumed.len() >= 2, "node {victim}:\n{log}");
    assert!(
        resumed.iter().all(|n| *n > 1),
        "both replicas resumed from their logs: {resumed:?}"
    );
    assert!(!log.contains("rejoins without its log"), "{log}");
    Ok(())
}

#[test]
fn a_corrupted_log_keeps_its_replica_out_while_the_others_serve() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (_c, victim, log) = restart_a_follower("disk", true)?;
    // Once per group, and again if the node started the run again (it was declared down).
    assert!(
        log.matches("replica refuses to start").count() >= 2,
        "node {victim}:\n{log}"
    );
    assert!(log.contains("is corrupt"), "{log}");
    Ok(())
}
