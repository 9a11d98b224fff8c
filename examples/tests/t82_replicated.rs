//! Replicated stateful bolts across three node processes of the real binary: the word count's
//! count bolt is a stateful bolt replicated 3 ways through Raft. Its replicas end a run with
//! byte-identical state (equal digests); a SIGKILL of a group's leader mid-stream elects a new
//! leader (a higher term, on another node) and loses no word under at-least-once. A replica
//! that lost its log, or whose log is damaged, rejoins under a new identity and is repaired from
//! its peers; a node that never returns has its replicas replaced on a spare node.

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
    identical_replicas_after_a_run("memory")
}

/// On disk too: a group elects more slowly there, and the spouts must wait for its leader (a
/// first batch sent to no leader replays, and counts twice).
#[test]
fn replicas_on_disk_hold_identical_state_after_a_run() -> anyhow::Result<()> {
    identical_replicas_after_a_run("disk")
}

/// A run without faults: every word counted exactly once, and the replicas of each group end
/// with the same applied index and state digest.
fn identical_replicas_after_a_run(state: &str) -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start(3, &[])?;
    let out = c.dir.path().join("out");
    three_up(&c)?;
    let started = Instant::now();
    let state = format!("state={state}");
    submit(&c, 0, &out, &["--arg", "sentences=5000", "--arg", &state])?;
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

/// The message timeout of the kill test: far longer than its failover, its reassignment and
/// the rest of its input (about 13 s at the kill), so a tree that waits for it shows.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);

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
            // A long timeout and a small window: the trees in flight at the kill fill the
            // window, so the output resumes soon only if the spouts fail them at once.
            "--arg",
            &format!("message_timeout_ms={}", MESSAGE_TIMEOUT.as_millis()),
            "--arg",
            "max_spout_pending=64",
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
    let at_new_leader = lines(&out);
    let resumed = poll("the output to resume", MESSAGE_TIMEOUT / 2, || {
        Ok((lines(&out) > at_new_leader + 2_000).then(|| killed.elapsed()))
    })?;
    eprintln!("output resumed {resumed:?} after the kill (message timeout {MESSAGE_TIMEOUT:?})");
    let via = if victim == manager {
        survivors[0] as usize - 1
    } else {
        via
    };
    let status = finished(&c, via, Duration::from_secs(240))?;
    let took = killed.elapsed();
    eprintln!("killed after {lines_before} lines; finished {took:?} after the kill: {status}");
    // Every tree the kill broke was failed and replayed at once (the spouts fail what was in
    // flight when a task moved or a leader changed; a batch or ack operations for a task not
    // started yet fail or wait for it): none waited out the message timeout.
    assert!(
        took < MESSAGE_TIMEOUT * 2 / 3,
        "finished {took:?} after the kill: a tree waited for the {MESSAGE_TIMEOUT:?} timeout"
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
    let groups = poll("the replicas stopped", Duration::from_secs(30), || {
        let g = stopped_replicas(&c, &[1, 2, 3]);
        Ok((g.len() == 2 && g.values().all(|r| r.len() == 3)).then_some(g))
    })?;
    for (group, replicas) in &groups {
        eprintln!("{group}: {replicas:?}");
        for r in replicas {
            assert_eq!((&r.1, &r.2), (&replicas[0].1, &replicas[0].2), "{group}");
        }
        assert!(
            replicas.iter().any(|r| r.0 == victim),
            "{group}: the restarted replica ran to the end"
        );
    }
    let restarted_log = c.log(victim)[log_before..].to_owned();
    Ok((c, victim, restarted_log))
}

/// The voters each replica of `nodes` last logged, per group: group -> node -> voters.
fn memberships(c: &Cluster, nodes: &[u64]) -> BTreeMap<String, BTreeMap<u64, String>> {
    let mut out: BTreeMap<String, BTreeMap<u64, String>> = BTreeMap::new();
    for &id in nodes {
        for line in c.log(id).lines().filter(|l| l.contains("group membership")) {
            if let (Some(group), Some(voters)) = (field(line, "group"), field(line, "voters")) {
                out.entry(group.to_owned())
                    .or_default()
                    .insert(id, voters.to_owned());
            }
        }
    }
    out
}

/// Whether `voters` (as logged: `n1,n2,n3.0000abcd`) are 3, on distinct nodes, none of them
/// `gone`; and whether the member on `fresh_on` (if given) is a new incarnation.
fn three_voters(voters: &str, gone: Option<u64>, fresh_on: Option<u64>) -> bool {
    let members: Vec<(&str, Option<&str>)> = voters
        .split(',')
        .map(|m| match m.split_once('.') {
            Some((n, inc)) => (n, Some(inc)),
            None => (m, None),
        })
        .collect();
    let nodes: std::collections::BTreeSet<&str> = members.iter().map(|m| m.0).collect();
    let node = |n: u64| format!("n{n}");
    nodes.len() == 3
        && members.len() == 3
        && gone.is_none_or(|g| !nodes.contains(node(g).as_str()))
        && fresh_on.is_none_or(|f| members.iter().any(|m| m.0 == node(f) && m.1.is_some()))
}

/// Both of `victim`'s replicas are voters again, and every replica of every group sees three
/// voters, `victim`'s a new incarnation.
fn rejoined_as_new_identities(c: &Cluster, victim: u64, log: &str) {
    assert!(
        log.matches("is a voter of its group").count() >= 2,
        "node {victim}:\n{log}"
    );
    for (group, by_node) in memberships(c, &[1, 2, 3]) {
        for (node, voters) in by_node {
            assert!(
                three_voters(&voters, None, Some(victim)),
                "{group} on n{node}: {voters}"
            );
        }
    }
}

#[test]
fn a_killed_follower_without_its_log_rejoins_under_a_new_identity() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (c, victim, log) = restart_a_follower("memory", false)?;
    // Both replicas join anew (again, if the node started the run again when its tasks moved),
    // as learners first, and are voters in the end.
    assert!(
        log.matches("joins its group under a new identity").count() >= 2,
        "node {victim}: both replicas take a new identity:\n{log}"
    );
    rejoined_as_new_identities(&c, victim, &log);
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
    assert!(
        !log.contains("under a new identity"),
        "a replica with its disk keeps its identity: {log}"
    );
    Ok(())
}

#[test]
fn a_corrupted_log_is_set_aside_and_its_replica_repaired_from_its_peers() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (c, victim, log) = restart_a_follower("disk", true)?;
    // Once per group: the damaged files are set aside (kept until the run's files are removed
    // at its end), the replica rejoins under a new identity, catches up from its peers and
    // ends the run with their digest (checked by `restart_a_follower`).
    assert!(
        log.matches("set aside; the replica is repaired").count() >= 2,
        "node {victim}:\n{log}"
    );
    assert!(log.contains("is corrupt"), "{log}");
    rejoined_as_new_identities(&c, victim, &log);
    Ok(())
}

#[test]
fn a_node_that_never_returns_has_its_replicas_replaced() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start(4, &["--replace-after-ms", "3000"])?;
    let out = c.dir.path().join("out");
    poll("four nodes up", Duration::from_secs(30), || {
        Ok(c.nodes(0)?
            .filter(|m| m.nodes.len() == 4 && m.nodes.iter().all(|n| n.up) && m.leader().is_some()))
    })?;
    let sentences = 20_000;
    submit(
        &c,
        0,
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
        Ok((lines(&out) > 20_000).then_some(()))
    })?;
    let before = memberships(&c, &[1, 2, 3, 4]);
    anyhow::ensure!(before.len() == 2, "two groups: {before:?}");
    // The node that holds replicas of both groups, not the manager's leader.
    let manager = c.nodes(0)?.and_then(|m| m.leader()).unwrap_or(0);
    let holds = |n: u64| before.values().all(|by_node| by_node.contains_key(&n));
    let victim = (1..=4u64)
        .filter(|n| *n != manager && holds(*n))
        .max()
        .ok_or_else(|| anyhow::anyhow!("no node holds replicas of both groups: {before:?}"))?;
    let spare = (1..=4u64).find(|n| before.values().all(|by_node| !by_node.contains_key(n)));
    eprintln!("--- SIGKILL node {victim} for good (spare node: {spare:?})");
    c.kill(victim as usize - 1)?;
    let killed = Instant::now();
    let live: Vec<u64> = (1..=4).filter(|n| *n != victim).collect();
    let groups = poll(
        "every group back to 3 voters",
        Duration::from_secs(30),
        || {
            let m = memberships(&c, &live);
            let back = m.len() == 2
                && m.values().all(|by_node| {
                    by_node.len() == 3
                        && by_node
                            .values()
                            .all(|v| three_voters(v, Some(victim), None))
                });
            Ok(back.then_some(m))
        },
    )?;
    let replaced_in = killed.elapsed();
    eprintln!("R members again {replaced_in:?} after the kill: {groups:?}");
    let status = finished(&c, 0, Duration::from_secs(240))?;
    eprintln!("{status}");
    let check = check_output(&out, sentences)?;
    eprintln!("{check:?}");
    assert!(check.at_least_once(), "a word was lost: {check:?}");
    let stopped = poll("the replicas stopped", Duration::from_secs(30), || {
        let g = stopped_replicas(&c, &live);
        Ok((g.len() == 2 && g.values().all(|r| r.len() == 3)).then_some(g))
    })?;
    for (group, replicas) in &stopped {
        eprintln!("{group}: {replicas:?}");
        for r in replicas {
            assert_eq!((&r.1, &r.2), (&replicas[0].1, &replicas[0].2), "{group}");
        }
    }
    Ok(())
}
