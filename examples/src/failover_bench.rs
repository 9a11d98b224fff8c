//! `tempest bench failover --kills K` (W4): the replicated word count on three node processes at
//! a steady paced load; over and over, the node leading one count group is SIGKILLed, and
//! restarted once a new leader took over. Measures, per kill, the failover (the kill to the new
//! leader's first commit, from the wall-clock stamp the new leader logs) and the longest pause
//! in the sink's output around it; at the end, whether any word was lost.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempest_dsl::StateStorage;
use tempest_runtime::cluster::AdminClient;
use tempest_runtime::cluster::admin::{AdminReply, AdminRequest};
use tempest_runtime::cluster::manager::{NodeStatus, TopologyStatus};
use tempest_runtime::transport::ClusterSecret;

use crate::cluster_wordcount::check_output;
use crate::node_procs::{NodeProcs, first_commit_after, group_leaders, poll as wait};

/// How the failover bench runs.
#[derive(Clone, Debug)]
pub struct FailoverBench {
    /// Kills of a group leader's node.
    pub kills: u32,
    /// Sentences a second per spout task (two tasks, ten words each).
    pub rate: u64,
    /// Where the replicas keep their logs.
    pub state: StateStorage,
    /// Steady load between a restart and the next kill.
    pub settle: Duration,
}

/// What one failover bench run measured.
#[derive(Clone, Debug, Default)]
pub struct FailoverRun {
    /// Per kill: SIGKILL to the new leader's first commit, in ms.
    pub failover_ms: Vec<f64>,
    /// Per kill: the longest pause in the sink's output from the kill to the next kill (at
    /// most 10 s after), in ms.
    pub gap_ms: Vec<f64>,
    /// Per kill: when that pause started, in ms after the kill.
    pub gap_start_ms: Vec<f64>,
    /// Words counted less often than they occur (0 under at-least-once).
    pub lost: usize,
    /// Words counted more often (replays).
    pub duplicated: usize,
    /// Seconds from the submission to the end of the topology.
    pub seconds: f64,
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Bytes the sink has written so far.
fn sink_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Runs the bench once.
pub fn run_once(bin: &Path, bench: &FailoverBench) -> anyhow::Result<FailoverRun> {
    let mut procs = NodeProcs::start(bin, 3, &[])?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let secret = ClusterSecret::from_file(&procs.secret)?;
    let addrs: Vec<String> = procs.nodes.iter().map(|n| n.addr.clone()).collect();
    let call = |req: AdminRequest| -> anyhow::Result<AdminReply> {
        // Through whichever node answers: the one asked may be the one just killed.
        let mut last = None;
        for addr in &addrs {
            let client = AdminClient::new(addr, Some(secret.clone()), Duration::from_secs(3));
            match rt.block_on(client.call(&req)) {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(|| anyhow::anyhow!("no node"), anyhow::Error::from))
    };
    wait("every node up", Duration::from_secs(60), || {
        Ok(match call(AdminRequest::Nodes) {
            Ok(AdminReply::Nodes { nodes, .. })
                if nodes.len() == 3 && nodes.iter().all(|n| n.status == NodeStatus::Up) =>
            {
                Some(())
            }
            _ => None,
        })
    })?;
    let out = procs.dir.path().join("out");
    // Long enough to span every kill; a spout on a killed node starts over elsewhere.
    let cycle_s = bench.settle.as_secs_f64() + 4.0;
    let sentences = (bench.rate as f64 * 2.0 * (f64::from(bench.kills) * cycle_s + 10.0)) as u64;
    let args: BTreeMap<String, String> = [
        ("output", out.display().to_string()),
        ("sentences", sentences.to_string()),
        ("rate", bench.rate.to_string()),
        ("replicas", "3".to_owned()),
        ("state", bench.state.to_string()),
        ("message_timeout_ms", "3000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let started = Instant::now();
    call(AdminRequest::Submit {
        topology: "wordcount".into(),
        name: "failover".into(),
        args,
    })?;
    wait("output", Duration::from_secs(60), || {
        Ok((sink_bytes(&out) > 0).then_some(()))
    })?;

    // Every pause in the sink's output: (start, end) instants.
    let pauses: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (pauses, stop, out) = (Arc::clone(&pauses), Arc::clone(&stop), out.clone());
        std::thread::spawn(move || {
            let (mut size, mut since) = (sink_bytes(&out), Instant::now());
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(2));
                let now_size = sink_bytes(&out);
                if now_size != size {
                    let now = Instant::now();
                    if now - since > Duration::from_millis(20) {
                        if let Ok(mut p) = pauses.lock() {
                            p.push((since, now));
                        }
                    }
                    (size, since) = (now_size, now);
                }
            }
        })
    };

    let mut run = FailoverRun::default();
    let mut kill_instants = Vec::new();
    for k in 0..bench.kills {
        std::thread::sleep(bench.settle);
        let led = group_leaders(&procs, &[1, 2, 3]);
        let groups: Vec<&String> = led.keys().collect();
        anyhow::ensure!(!groups.is_empty(), "no group has a leader");
        let group = groups[k as usize % groups.len()].clone();
        let (term, victim) = led[&group];
        let survivors: Vec<u64> = (1..=3).filter(|n| *n != victim).collect();
        let kill_at = now_ms();
        kill_instants.push(Instant::now());
        procs.kill(victim as usize - 1)?;
        let at = wait(
            "the new leader's first commit",
            Duration::from_secs(15),
            || {
                Ok(first_commit_after(
                    &procs,
                    &survivors,
                    &group,
                    term + 1,
                    kill_at,
                ))
            },
        )?;
        run.failover_ms.push(at - kill_at);
        // Back with its data dir: it rejoins and catches up before the next kill.
        let before = procs.log(victim).len();
        procs.spawn(victim as usize - 1)?;
        let memory = bench.state == StateStorage::Memory;
        wait("the restarted replicas", Duration::from_secs(60), || {
            let log = procs.log(victim);
            let fresh = log.get(before..).unwrap_or("");
            let started = fresh.matches("replica started").count() >= 2;
            // A memory replica comes back without its log: under a new identity, a voter once
            // the leader promoted it.
            let caught_up =
                !memory || fresh.matches("replica is a voter of its group").count() >= 2;
            Ok((started && caught_up).then_some(()))
        })?;
    }
    wait("the topology to finish", Duration::from_secs(1800), || {
        Ok(
            match call(AdminRequest::Status {
                name: Some("failover".into()),
            }) {
                Ok(AdminReply::Status(v))
                    if v.iter().any(|t| t.status == TopologyStatus::Finished) =>
                {
                    Some(())
                }
                _ => None,
            },
        )
    })?;
    run.seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let pauses = pauses.lock().map(|p| p.clone()).unwrap_or_default();
    for (k, kill) in kill_instants.iter().enumerate() {
        // Up to the next kill (each pause counts for the kill it followed), at most 10 s.
        let window = kill_instants
            .get(k + 1)
            .copied()
            .unwrap_or(*kill + Duration::from_secs(10));
        let longest = pauses
            .iter()
            .filter(|(from, to)| *to >= *kill && *from < window)
            .max_by_key(|(from, to)| *to - *from);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (gap, starts) = longest.map_or((0.0, 0.0), |(from, to)| {
            let starts = if from >= kill {
                ms(*from - *kill)
            } else {
                -ms(*kill - *from)
            };
            (ms(*to - *from), starts)
        });
        run.gap_ms.push(gap);
        run.gap_start_ms.push(starts);
    }
    let check = check_output(&out, sentences)?;
    run.lost = check.below;
    run.duplicated = check.above;
    Ok(run)
}
