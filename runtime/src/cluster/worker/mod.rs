//! The data plane of a node: runs the tasks the manager assigned to it, each topology run in
//! an actix system of its own ([`run`]), and moves what tasks on different nodes send each
//! other over the transport's data lane ([`wire`], [`relay`]).
//!
//! ```text
//!   node A                                   node B
//!   task ──Deliver──► relay(t7) ══data lane══► dispatch ──Deliver──► task t7
//!   task ◄──Credit─── relay(t7) ◄═════════════ Credit (one per executed batch)
//! ```

mod checkpoints;
mod relay;
mod replicated;
mod run;
mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use tempest_dsl::TaskId;
use tokio::sync::mpsc;

use crate::cluster::admin::Placement;
use crate::cluster::registry::{Registry, TopologyArgs};
use crate::ids::NodeId;
use crate::transport::{Lane, Service, Transport, frame};

pub(crate) use replicated::ReplicaHost;
pub(crate) use run::RUN_THREADS;

use run::TopologyRun;
use wire::{DataMessage, RunId};

/// Why a topology run could not start on this node.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The run's thread could not be started.
    #[error("could not start a thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The topology or a task could not be set up.
    #[error("{0}")]
    Setup(String),
}

/// Sends data messages to other nodes, one queue and one sending task per node, so a send from
/// an actor never blocks. Flow control is the links' credits; what is queued here is bounded by
/// them (and by the acks and marks that go with the batches).
#[derive(Clone)]
pub(crate) struct Outbound {
    transport: Transport,
    runtime: tokio::runtime::Handle,
    queues: Arc<DashMap<String, mpsc::UnboundedSender<Vec<u8>>>>,
}

impl Outbound {
    fn new(transport: Transport, runtime: tokio::runtime::Handle) -> Self {
        Outbound {
            transport,
            runtime,
            queues: Arc::default(),
        }
    }

    /// Queues `bytes` for the node at `addr`.
    pub(crate) fn send(&self, addr: &str, bytes: Vec<u8>) {
        if let Some(tx) = self.queues.get(addr) {
            let _ = tx.send(bytes);
            return;
        }
        let tx = self
            .queues
            .entry(addr.to_owned())
            .or_insert_with(|| {
                let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
                let transport = self.transport.clone();
                let addr = addr.to_owned();
                self.runtime.spawn(async move {
                    // In order, each message into the peer's queue, where it waits for a
                    // connection: credits and end markers must not be lost to a dropped
                    // connection. Once the node left the cluster's view (`retain`), what is
                    // still here is dropped.
                    while let Some(bytes) = rx.recv().await {
                        if rx.is_closed() {
                            continue;
                        }
                        if let Err(e) = transport
                            .send_queued(&addr, Lane::Data, Service::Data, bytes)
                            .await
                        {
                            tracing::warn!(%addr, error = %e, "data message dropped");
                        }
                    }
                });
                tx
            })
            .clone();
        let _ = tx.send(bytes);
    }

    /// Keeps the queues of the nodes in `addrs` and drops the others (nodes declared down:
    /// what was queued for them is lost with them, and their trees replay).
    fn retain(&self, addrs: &BTreeSet<String>) {
        self.queues.retain(|a, _| {
            let keep = addrs.contains(a);
            if !keep {
                self.transport.forget(a, Lane::Data);
            }
            keep
        });
    }
}

/// The topology runs of this node.
pub(crate) struct Worker {
    me: NodeId,
    registry: Arc<Registry>,
    outbound: Outbound,
    host: ReplicaHost,
    runs: Mutex<BTreeMap<RunId, Arc<TopologyRun>>>,
    /// Data messages that did not decode.
    rejected: std::sync::atomic::AtomicU64,
}

impl Worker {
    pub(crate) fn new(me: NodeId, registry: Arc<Registry>, host: ReplicaHost) -> Self {
        Worker {
            me,
            registry,
            outbound: Outbound::new(host.transport.clone(), host.runtime.clone()),
            host,
            runs: Mutex::default(),
            rejected: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Brings this node in line with the manager: starts the runs and tasks assigned here,
    /// reroutes the others, and stops runs that ended or were killed. Returns whether all of it
    /// went through (if not, the caller applies the assignment again at the next heartbeat).
    pub(crate) fn apply(
        &self,
        placements: &[Placement],
        addrs: &BTreeMap<NodeId, String>,
        epoch: u64,
    ) -> bool {
        self.outbound.retain(&addrs.values().cloned().collect());
        let Ok(mut runs) = self.runs.lock() else {
            return false;
        };
        let mut complete = true;
        let wanted: BTreeSet<RunId> = placements
            .iter()
            .map(|p| RunId {
                name: p.name.clone(),
                seed: p.seed,
                generation: p.generation,
            })
            .collect();
        let stale: Vec<RunId> = runs
            .keys()
            .filter(|r| !wanted.contains(*r))
            .cloned()
            .collect();
        for r in stale {
            if let Some(run) = runs.remove(&r) {
                let rolled_back = wanted.iter().any(|w| w.name == r.name && w.seed == r.seed);
                if rolled_back {
                    tracing::warn!(topology = %r.name, generation = r.generation, "run rolls back to its last checkpoint: stopping this generation's tasks here");
                } else {
                    tracing::info!(topology = %r.name, "run ended or killed: stopping its tasks here");
                    run.export_final_states();
                }
                stop(run, !rolled_back);
            }
        }
        // After the exports above, which read the checkpoints of runs that ended.
        checkpoints::tidy(&self.host.data_dir, placements);
        for p in placements {
            let id = RunId {
                name: p.name.clone(),
                seed: p.seed,
                generation: p.generation,
            };
            // Leaders here admit their groups' members by the manager's word.
            for (task, nodes) in &p.replicas {
                self.host.groups.set_assigned(
                    replicated::group_id(&id, *task),
                    nodes.iter().copied().collect(),
                );
            }
            if let Some(r) = runs.get(&id) {
                if r.runs_elsewhere(&p.assignment, &p.replicas) {
                    // This node was declared down while alive and its tasks moved: start over
                    // with what is assigned here now.
                    tracing::warn!(topology = %p.name, "tasks of this node moved elsewhere: restarting the run here");
                    if let Some(r) = runs.remove(&id) {
                        stop(r, false);
                    }
                }
            }
            let run = match runs.get(&id) {
                Some(r) => Arc::clone(r),
                None => {
                    let topology = match self
                        .registry
                        .build(&p.topology, &TopologyArgs(p.args.clone()))
                    {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::error!(topology = %p.name, error = %e, "cannot build an assigned topology");
                            complete = false;
                            continue;
                        }
                    };
                    let restore = match self.restore_point(p) {
                        Ok(r) => r,
                        Err(why) => {
                            tracing::warn!(topology = %p.name, %why, "cannot restart the run from its checkpoint yet");
                            complete = false;
                            continue;
                        }
                    };
                    match TopologyRun::start(
                        id.clone(),
                        topology,
                        self.me,
                        self.outbound.clone(),
                        self.host.clone(),
                        restore,
                    ) {
                        Ok(r) => {
                            let r = Arc::new(r);
                            runs.insert(id, Arc::clone(&r));
                            r
                        }
                        Err(e) => {
                            tracing::error!(topology = %p.name, error = %e, "cannot start a run");
                            complete = false;
                            continue;
                        }
                    }
                }
            };
            let moved = run.route(p.assignment.clone(), addrs.clone());
            let mine: Vec<TaskId> = p
                .assignment
                .iter()
                .filter(|(t, n)| {
                    let here =
                        **n == self.me || p.replicas.get(t).is_some_and(|r| r.contains(&self.me));
                    here && !p.finished.contains(t) && !run.runs(**t)
                })
                .map(|(t, _)| *t)
                .collect();
            if !mine.is_empty() {
                tracing::info!(topology = %p.name, tasks = mine.len(), "starting tasks");
                let started = run.start_tasks(
                    &mine,
                    &p.finished,
                    epoch,
                    &p.replicas,
                    !p.active,
                    &p.positions,
                );
                if let Err(e) = &started {
                    tracing::error!(topology = %p.name, error = %e, "tasks did not start");
                    complete = false;
                }
                if started.is_err() {
                    run.set_applied(None);
                    run.retarget(&moved);
                    continue;
                }
            }
            run.set_applied(Some(epoch));
            run.retarget(&moved);
            if p.active {
                run.activate();
            }
        }
        complete
    }

    /// The checkpoint run `p` restarts from on this node, read from this node's store:
    /// `None` for a run that starts afresh (its first generation, or no checkpoint recorded).
    fn restore_point(
        &self,
        p: &Placement,
    ) -> Result<Option<crate::checkpoint::Checkpoint>, String> {
        let Some(id) = p.checkpoint.filter(|_| p.generation > 0) else {
            return Ok(None);
        };
        checkpoints::read(&self.host.data_dir, &p.name, p.seed, id)
            .map(Some)
            .ok_or_else(|| format!("checkpoint {id} is not stored here"))
    }

    /// The checkpoints that runs about to start here restart from and that this node does not
    /// store: (name, seed, checkpoint).
    pub(crate) fn missing_checkpoints(&self, placements: &[Placement]) -> Vec<(String, u64, u64)> {
        let Ok(runs) = self.runs.lock() else {
            return Vec::new();
        };
        placements
            .iter()
            .filter(|p| {
                let here = p.assignment.values().any(|n| *n == self.me);
                let id = RunId {
                    name: p.name.clone(),
                    seed: p.seed,
                    generation: p.generation,
                };
                here && p.generation > 0 && !runs.contains_key(&id)
            })
            .filter_map(|p| {
                let id = p.checkpoint?;
                let stored = checkpoints::read(&self.host.data_dir, &p.name, p.seed, id).is_some();
                (!stored).then(|| (p.name.clone(), p.seed, id))
            })
            .collect()
    }

    /// Stores checkpoint file `bytes` (checkpoint `id` of run `name`, `seed`), checked.
    pub(crate) fn store_checkpoint(
        &self,
        name: &str,
        seed: u64,
        id: u64,
        bytes: &[u8],
    ) -> Result<(), String> {
        checkpoints::store_file(&self.host.data_dir, name, seed, id, bytes)
    }

    /// Checkpoint `id` of run `name`, `seed`, as its file, if this node stores it whole.
    pub(crate) fn checkpoint_file(&self, name: &str, seed: u64, id: u64) -> Option<Vec<u8>> {
        checkpoints::read_file(&self.host.data_dir, name, seed, id)
    }

    /// What `report` says of each run here, with the run's name, seed and generation.
    fn per_run<T>(&self, report: impl Fn(&TopologyRun) -> Option<T>) -> Vec<(String, u64, u32, T)> {
        let Ok(runs) = self.runs.lock() else {
            return Vec::new();
        };
        runs.iter()
            .filter_map(|(id, r)| Some((id.name.clone(), id.seed, id.generation, report(r)?)))
            .collect()
    }

    /// The last checkpoint each run coordinated here completed and stored on two nodes:
    /// (name, seed, generation, checkpoint).
    pub(crate) fn checkpoints(&self) -> Vec<(String, u64, u32, u64)> {
        self.per_run(TopologyRun::completed_checkpoint)
    }

    /// The committed positions of the seekable spouts running here: (name, seed, task,
    /// position).
    pub(crate) fn positions(&self) -> Vec<(String, u64, TaskId, u64)> {
        self.per_run(|r| Some(r.positions()))
            .into_iter()
            .flat_map(|(name, seed, _, positions)| {
                positions
                    .into_iter()
                    .map(move |(task, p)| (name.clone(), seed, task, p))
            })
            .collect()
    }

    /// The checkpointed runs a task of which failed here: (name, seed, generation).
    pub(crate) fn failed_runs(&self) -> Vec<(String, u64, u32)> {
        self.per_run(|r| r.failed().then_some(()))
            .into_iter()
            .map(|(name, seed, generation, ())| (name, seed, generation))
            .collect()
    }

    /// The tasks that finished on this node, per run: (name, seed, generation, tasks).
    pub(crate) fn finished(&self) -> Vec<(String, u64, u32, Vec<TaskId>)> {
        self.per_run(|r| {
            let tasks: Vec<TaskId> = r.finished().into_iter().collect();
            (!tasks.is_empty()).then_some(tasks)
        })
    }

    /// The runs whose tasks here are all started: (name, seed, generation, the state version
    /// whose assignment they started).
    pub(crate) fn ready(&self) -> Vec<(String, u64, u32, u64)> {
        self.per_run(TopologyRun::applied)
    }

    /// The groups led here, with the nodes of their settled voters: (topology, run seed, task,
    /// nodes).
    pub(crate) fn led_voters(&self) -> Vec<(String, u64, TaskId, Vec<NodeId>)> {
        let Ok(runs) = self.runs.lock() else {
            return Vec::new();
        };
        runs.iter()
            .flat_map(|(id, run)| {
                run.led_voters()
                    .into_iter()
                    .map(|(task, nodes)| (id.name.clone(), id.seed, task, nodes))
            })
            .collect()
    }

    /// Takes a data message from the node at `sender`.
    pub(crate) fn on_data(&self, sender: &str, body: &[u8]) {
        let msg: DataMessage = match frame::decode(body) {
            Ok(m) => m,
            Err(e) => {
                let n = self
                    .rejected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, rejected = n + 1, "a data message that does not decode");
                return;
            }
        };
        if let DataMessage::Checkpoint {
            run,
            message: wire::CheckpointMessage::Store { id, file },
        } = &msg
        {
            // A copy of another node's checkpoint: kept whether or not the run has tasks here.
            let stored =
                checkpoints::store_file(&self.host.data_dir, &run.name, run.seed, *id, file);
            if let Err(why) = &stored {
                tracing::warn!(topology = %run.name, checkpoint = id, %why, "a checkpoint copy was not stored");
            }
            let answer = DataMessage::Checkpoint {
                run: run.clone(),
                message: wire::CheckpointMessage::Stored {
                    id: *id,
                    ok: stored.is_ok(),
                },
            };
            if let Ok(bytes) = frame::encode(&answer) {
                self.outbound.send(sender, bytes);
            }
            return;
        }
        let run = self
            .runs
            .lock()
            .ok()
            .and_then(|r| r.get(msg.run()).cloned());
        match (run, msg) {
            (Some(r), msg) => r.dispatch(msg, sender),
            (
                None,
                DataMessage::Batch {
                    run, from, link, ..
                },
            ) => {
                // Not (or no longer) here: the sender gets its credit back, so its link is not
                // starved; the batch's trees replay.
                tracing::debug!(topology = %run.name, "a batch for a run not here");
                let credit = DataMessage::Credit {
                    run,
                    to: from,
                    link,
                    batches: 1,
                };
                if let Ok(bytes) = frame::encode(&credit) {
                    self.outbound.send(sender, bytes);
                }
            }
            (None, msg) => tracing::debug!(topology = %msg.run().name, "data for a run not here"),
        }
    }

    /// Stops every run.
    pub(crate) fn shutdown(&self) {
        if let Ok(mut runs) = self.runs.lock() {
            for (_, r) in std::mem::take(&mut *runs) {
                stop(r, false);
            }
        }
    }
}

/// Stops a run off the caller's thread (joining its system thread blocks); `discard` deletes
/// the files of a run that ended.
fn stop(run: Arc<TopologyRun>, discard: bool) {
    std::thread::spawn(move || run.stop(discard));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Handler, PeerRole, TransportConfig};
    use futures_util::FutureExt;
    use futures_util::future::BoxFuture;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Vec<u8>>>);

    impl Handler for Collect {
        fn request(
            &self,
            _: &PeerRole,
            _: Service,
            _: Vec<u8>,
        ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
            futures_util::future::ready(Err("no requests".to_owned())).boxed()
        }
        fn oneway(&self, _: &PeerRole, _: Service, body: Vec<u8>) {
            if let Ok(mut got) = self.0.lock() {
                got.push(body);
            }
        }
    }

    fn config(id: u64, addr: &str) -> TransportConfig {
        let role = PeerRole::Node {
            id: NodeId(id),
            addr: addr.to_owned(),
        };
        let mut c = TransportConfig::new(role, NodeId(id), None);
        c.backoff_max = std::time::Duration::from_millis(100);
        c
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_data_waits_for_a_node_that_comes_up_and_keeps_its_order() -> anyhow::Result<()>
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let b_addr = listener.local_addr()?.to_string();
        drop(listener); // B is down for now.
        let a = Transport::client(config(1, "127.0.0.1:1"), Arc::new(Collect::default()));
        let out = Outbound::new(a.clone(), tokio::runtime::Handle::current());
        for i in 0..100u8 {
            out.send(&b_addr, vec![i]);
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;

        let got = Arc::new(Collect::default());
        let listener = tokio::net::TcpListener::bind(&b_addr).await?;
        let _b = Transport::serve(listener, config(2, &b_addr), got.clone());
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let n = got.0.lock().map(|g| g.len()).unwrap_or(0);
            if n == 100 {
                break;
            }
            anyhow::ensure!(std::time::Instant::now() < end, "only {n} of 100 arrived");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let got = got.0.lock().map(|g| g.clone()).unwrap_or_default();
        let expected: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i]).collect();
        assert_eq!(got, expected, "in order, none lost, none twice");
        a.shutdown();
        Ok(())
    }
}
