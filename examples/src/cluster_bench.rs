//! `tempest bench wordcount --nodes N` and `tempest bench replicated` (W3): the cluster word
//! count on N node processes of this binary (started and stopped by the bench), beside the same
//! topology in one process, in the same run, so the ratio holds on a noisy machine. With
//! `replicas`, the count bolt is a stateful bolt replicated through Raft.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tempest_dsl::Guarantee;
use tempest_runtime::cluster::AdminClient;
use tempest_runtime::cluster::admin::{AdminReply, AdminRequest};
use tempest_runtime::cluster::manager::{NodeStatus, TopologyStatus};
use tempest_runtime::transport::ClusterSecret;
use tempest_runtime::{LocalCluster, LocalOptions};

use crate::cluster_wordcount::{ClusterWordCount, check_output};
use crate::node_procs::{NodeProcs, log_field, poll as wait};

/// What one cluster bench run measures.
#[derive(Clone, Debug)]
pub struct ClusterRun {
    /// Seconds from the submission to the end of the topology, on the cluster.
    pub seconds: f64,
    /// Whether the cluster's counts were exact.
    pub ok: bool,
    /// Seconds of the same topology in one process.
    pub local_seconds: f64,
    /// Whether the in-process counts were exact.
    pub local_ok: bool,
    /// The complete latency of the cluster's spout trees, p50 and p99 in ms: the worst spout
    /// task's (each node logs its spout tasks' percentiles when they finish).
    pub complete_ms: Option<(f64, f64)>,
}

/// How the bench runs.
#[derive(Clone, Debug)]
pub struct ClusterBench {
    /// Node processes.
    pub nodes: usize,
    /// Sentences (10 words each).
    pub sentences: u64,
    /// Tasks per component.
    pub parallelism: u32,
    /// The delivery guarantee.
    pub guarantee: Guarantee,
    /// More submission arguments (`replicas`, `state`, ...).
    pub extra: Vec<(String, String)>,
}

/// Runs the bench once: the cluster, then the same topology in this process.
pub fn run_once(bin: &Path, bench: &ClusterBench) -> anyhow::Result<ClusterRun> {
    let procs = NodeProcs::start(bin, bench.nodes, &[])?;
    // Multi-threaded, so the client's connection keeps redialing between calls (a node that
    // was not listening yet at the first call is reached once it is).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let secret = ClusterSecret::from_file(&procs.secret)?;
    let client = AdminClient::new(&procs.nodes[0].addr, Some(secret), Duration::from_secs(10));
    let call = |req: AdminRequest| rt.block_on(client.call(&req));
    wait("every node up", Duration::from_secs(60), || {
        Ok(match call(AdminRequest::Nodes) {
            Ok(AdminReply::Nodes { nodes, .. })
                if nodes.len() == bench.nodes
                    && nodes.iter().all(|n| n.status == NodeStatus::Up) =>
            {
                Some(())
            }
            _ => None,
        })
    })?;
    let out = procs.dir.path().join("out");
    let args: BTreeMap<String, String> = [
        ("output", out.display().to_string()),
        ("sentences", bench.sentences.to_string()),
        ("parallelism", bench.parallelism.to_string()),
        ("guarantee", bench.guarantee.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(bench.extra.iter().cloned())
    .collect();
    let started = Instant::now();
    call(AdminRequest::Submit {
        topology: "wordcount".into(),
        name: "bench".into(),
        args: args.clone(),
    })?;
    wait("the topology to finish", Duration::from_secs(1800), || {
        Ok(
            match call(AdminRequest::Status {
                name: Some("bench".into()),
            })? {
                AdminReply::Status(v) if v.iter().any(|t| t.status == TopologyStatus::Finished) => {
                    Some(())
                }
                _ => None,
            },
        )
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let ok = check_output(&out, bench.sentences)?.exact();
    let complete_ms = wait("the spouts' latency", Duration::from_secs(10), || {
        Ok(spout_latency(&procs, bench.parallelism as usize))
    })
    .ok();
    drop(procs);

    let local_dir = tempfile::tempdir()?;
    let mut local_args = tempest_runtime::cluster::TopologyArgs(args);
    local_args
        .0
        .insert("output".into(), local_dir.path().display().to_string());
    let topology = ClusterWordCount::from_args(&local_args)
        .map_err(anyhow::Error::msg)?
        .topology()?;
    let options = LocalOptions {
        metrics_interval: None,
        ..LocalOptions::default()
    };
    let started = Instant::now();
    LocalCluster::new(options)?.run(topology)?;
    let local_seconds = started.elapsed().as_secs_f64();
    let local_ok = check_output(local_dir.path(), bench.sentences)?.exact();
    Ok(ClusterRun {
        seconds,
        ok,
        local_seconds,
        local_ok,
        complete_ms,
    })
}

/// The worst complete-latency p50 and p99 (ms) the nodes logged for `spouts` spout tasks, once
/// all of them have.
fn spout_latency(procs: &NodeProcs, spouts: usize) -> Option<(f64, f64)> {
    let mut found = Vec::new();
    for node in &procs.nodes {
        for line in procs
            .log(node.id)
            .lines()
            .filter(|l| l.contains("spout task finished"))
        {
            let us = |k| log_field(line, k).and_then(|v| v.parse::<f64>().ok());
            if let (Some(p50), Some(p99)) = (us("complete_p50_us"), us("complete_p99_us")) {
                found.push((p50 / 1000.0, p99 / 1000.0));
            }
        }
    }
    (found.len() >= spouts).then(|| {
        found.iter().fold((0.0, 0.0), |(a, b), (p50, p99)| {
            (f64::max(a, *p50), f64::max(b, *p99))
        })
    })
}
