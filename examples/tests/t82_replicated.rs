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

use cluster::{Cluster, poll, stderr, stdout};
use tempest_examples::cluster_wordcount::check_output;

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

fn finished(c: &Cluster, via: usize, deadline: Duration) -> anyhow::Result<String> {
    poll("the topology to finish", deadline, || {
        let o = c.cli(via, &["status", "wordcount"])?;
        let s = stdout(&o);
        Ok(s.contains("status=finished").then_some(s))
    })
}

fn three_up(c: &Cluster) -> anyhow::Result<cluster::Membership> {
    poll("three nodes up", Duration::from_secs(30), || {
        Ok(c.nodes(0)?
            .filter(|m| m.nodes.len() == 3 && m.nodes.iter().all(|n| n.up) && m.leader().is_some()))
    })
}

/// The value of `key=` in a log line (a field or a span's; without quotes).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = [' ', '{']
        .iter()
        .filter_map(|c| line.find(&format!("{c}{key}=")))
        .min()?
        + key.len()
        + 2;
    let rest = &line[at..];
    let end = rest.find([' ', '}', ':']).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// Every "replica stopped" line of the given nodes: group -> [(node, applied, digest)].
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
            by_group.entry(group.to_owned()).or_default().push((
                id,
                applied.to_owned(),
                digest.to_owned(),
            ));
        }
    }
    by_group
}

/// The latest (term, leader) each group's replicas logged on `nodes`: group -> (term, leader).
fn leaders(c: &Cluster, nodes: &[u64]) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for &id in nodes {
        for line in c.log(id).lines().filter(|l| l.contains("group leader")) {
            let parsed = (|| {
                let group = field(line, "group")?.to_owned();
                let term: u64 = field(line, "term")?.parse().ok()?;
                let leader: u64 = field(line, "leader")?
                    .trim_start_matches('n')
                    .parse()
                    .ok()?;
                Some((group, term, leader))
            })();
            if let Some((group, term, leader)) = parsed {
                let e = out.entry(group).or_default();
                if term >= e.0 {
                    *e = (term, leader);
                }
            }
        }
    }
    out
}

fn lines(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read(e.path()).ok())
                .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
                .sum()
        })
        .unwrap_or(0)
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
    let before = leaders(&c, &[1, 2, 3]);
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
        Ok(leaders(&c, &survivors)
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
