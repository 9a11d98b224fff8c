//! Node processes of the real binary on loopback: a cluster forms, takes submissions, refuses
//! bad ones with exit codes a script can rely on, and its manager survives the SIGKILL of its
//! leader: a new leader in a higher term, a submission and a reschedule within 2 s.

// Phases and the measured failover go to the test's output.
#![allow(clippy::print_stderr)]

mod cluster;

use std::time::{Duration, Instant};

use cluster::{BIN, Cluster, Membership, poll, stderr, stdout};

fn all_up(c: &Cluster, via: usize, n: usize) -> anyhow::Result<Membership> {
    poll("every node up", Duration::from_secs(30), || {
        Ok(c.nodes(via)?
            .filter(|m| m.nodes.len() == n && m.nodes.iter().all(|x| x.up) && m.leader().is_some()))
    })
}

#[test]
fn a_cluster_forms_and_answers_clients() -> anyhow::Result<()> {
    // Four nodes: the first three run the manager, the fourth joins as a worker.
    let c = Cluster::start(4, &[])?;
    tracing_phase("--- four nodes join; the manager has a leader");
    all_up(&c, 3, 4)?;

    tracing_phase("--- a submission is placed over every node, through any node");
    let out = c.cli(
        2,
        &[
            "submit",
            "wordcount",
            "--name",
            "wc1",
            "--arg",
            &format!("output={}", c.dir.path().join("out").display()),
            "--arg",
            "rate=100",
        ],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "submitted wc1: 10 tasks on 4 nodes");
    let out = c.cli(0, &["status", "wc1"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(
        s.starts_with("wc1 topology=wordcount status=running tasks=8 reschedules=0 nodes=n1:"),
        "{s}"
    );

    tracing_phase("--- bad requests fail with their exit code and a reason");
    let again = c.cli(
        1,
        &[
            "submit",
            "wordcount",
            "--name",
            "wc1",
            "--arg",
            "output=/tmp",
        ],
    )?;
    refused(&again, "already running");
    let unknown = c.cli(1, &["submit", "nope"])?;
    refused(&unknown, "registered: counter, wordcount");
    let bad_arg = c.cli(
        1,
        &[
            "submit",
            "wordcount",
            "--name",
            "x",
            "--arg",
            "output=/tmp",
            "--arg",
            "sentences=many",
        ],
    )?;
    refused(&bad_arg, "sentences");
    let missing = c.cli(1, &["status", "nope"])?;
    assert_eq!(missing.status.code(), Some(1));
    let killed = c.cli(1, &["kill", "wc1"])?;
    assert!(killed.status.success(), "{}", stderr(&killed));
    assert_eq!(c.cli(1, &["kill", "wc1"])?.status.code(), Some(1));

    tracing_phase("--- a client cannot speak for a node");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let secret = tempest_runtime::transport::ClusterSecret::from_file(&c.secret)?;
    let client = tempest_runtime::cluster::AdminClient::new(
        &c.nodes[0].addr,
        Some(secret),
        Duration::from_secs(5),
    );
    let down = tempest_runtime::cluster::admin::AdminRequest::Propose(
        tempest_runtime::cluster::manager::ManagerCommand::Down {
            node: tempest_runtime::NodeId(2),
        },
    );
    let proposal = rt.block_on(client.call(&down));
    assert!(
        matches!(
            proposal,
            Err(tempest_runtime::cluster::admin::ClientError::Admin(
                tempest_runtime::cluster::admin::AdminError::Refused(_)
            ))
        ),
        "{proposal:?}"
    );
    let bad_name = c.cli(
        1,
        &[
            "submit",
            "wordcount",
            "--name",
            "no spaces",
            "--arg",
            "output=/tmp",
        ],
    )?;
    refused(&bad_name, "invalid topology name");

    tracing_phase("--- a wrong secret is refused; a node without a secret does not start");
    let wrong = c.dir.path().join("wrong");
    std::fs::write(&wrong, "not the cluster secret at all")?;
    let out = std::process::Command::new(BIN)
        .args(["nodes", "--node", &c.nodes[0].addr, "--secret-file"])
        .arg(&wrong)
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        stderr(&out)
    );
    let dir = c.dir.path().join("lonely");
    let out = std::process::Command::new(BIN)
        .args([
            "node",
            "--id",
            "9",
            "--listen",
            "127.0.0.1:0",
            "--peers",
            "127.0.0.1:1",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no cluster secret"),
        "{}",
        stderr(&out)
    );
    let unreachable = std::process::Command::new(BIN)
        .args([
            "nodes",
            "--timeout-ms",
            "500",
            "--node",
            &format!("127.0.0.1:{}", cluster::free_port()?),
            "--secret-file",
        ])
        .arg(&c.secret)
        .output()?;
    assert_eq!(
        unreachable.status.code(),
        Some(3),
        "{}",
        stderr(&unreachable)
    );
    Ok(())
}

#[test]
fn the_manager_survives_the_sigkill_of_its_leader() -> anyhow::Result<()> {
    let mut c = Cluster::start(3, &[])?;
    let before = all_up(&c, 0, 3)?;
    let output = format!("output={}", c.dir.path().join("out").display());
    let out = c.cli(
        0,
        &[
            "submit",
            "wordcount",
            "--name",
            "wc1",
            "--arg",
            &output,
            "--arg",
            "rate=100",
        ],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    let leader = before.leader().expect("a leader");
    let leader_idx = (leader - 1) as usize;
    let survivor = (leader_idx + 1) % 3;

    tracing_phase("--- SIGKILL the manager's leader");
    c.kill(leader_idx)?;
    let killed_at = Instant::now();

    let resubmitted = poll(
        "a submission through a survivor",
        Duration::from_secs(10),
        || {
            let out = c.cli(
                survivor,
                &[
                    "submit",
                    "wordcount",
                    "--name",
                    "wc2",
                    "--arg",
                    &output,
                    "--arg",
                    "rate=100",
                    "--timeout-ms",
                    "3000",
                ],
            )?;
            Ok(out.status.success().then(|| killed_at.elapsed()))
        },
    )?;
    let rescheduled = poll(
        "the dead node's tasks moved",
        Duration::from_secs(10),
        || {
            let out = c.cli(survivor, &["status", "wc1"])?;
            let s = stdout(&out);
            Ok(
                (s.contains("reschedules=1") && !s.contains(&format!("n{leader}:")))
                    .then(|| killed_at.elapsed()),
            )
        },
    )?;
    let after = poll("a new leader", Duration::from_secs(10), || {
        Ok(c.nodes(survivor)?.filter(|m| m.leader().is_some()))
    })?;
    let new_leader = after.leader().expect("a leader");
    let (term, new_term) = (before.term, after.term);
    assert_ne!(new_leader, leader, "a new leader");
    assert!(new_term > term, "a new term: {new_term} after {term}");
    assert!(
        after.nodes.iter().any(|n| n.id == leader && !n.up),
        "the killed node is down: {after:?}"
    );
    eprintln!(
        "manager failover: submission after {resubmitted:?}, reschedule after {rescheduled:?}, term {term} -> {new_term}"
    );
    assert!(
        resubmitted < Duration::from_secs(2),
        "submission took {resubmitted:?}\n{}",
        c.log(new_leader)
    );
    assert!(
        rescheduled < Duration::from_secs(2),
        "reschedule took {rescheduled:?}\n{}",
        c.log(new_leader)
    );

    tracing_phase("--- the killed node restarts from its disk and rejoins");
    c.spawn(leader_idx)?;
    poll("the node up again", Duration::from_secs(30), || {
        Ok(c.nodes(survivor)?.filter(|m| m.nodes.iter().all(|x| x.up)))
    })?;
    Ok(())
}

/// The command failed with exit code 1, saying `why`.
fn refused(out: &std::process::Output, why: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    assert!(stderr(out).contains(why), "{}", stderr(out));
}

fn tracing_phase(phase: &str) {
    eprintln!("{phase}");
}
