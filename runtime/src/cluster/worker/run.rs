//! [`TopologyRun`]: the part of one topology run that lives on this node: an actix system of
//! its own (a thread and its Arbiters) running the tasks assigned here, a relay for every other
//! task they talk to, and the dispatch of what arrives for them from other nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use actix::{Actor, Addr, Arbiter, Context, Handler, Recipient};
use actix_rt::ArbiterHandle;
use dashmap::DashMap;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;
use tempest_dsl::engine::{AckOp, BoltTask, LinkId, Payload, PayloadCodec, SpoutTask, Task};
use tempest_dsl::{TaskId, Topology};

use crate::ack::{AckFolder, AckMsg};
use crate::checkpoint::{Checkpoint, TaskSnapshot, Tracker};
use crate::cluster::worker::checkpoints::{Action, Coordinator};
use crate::cluster::worker::relay::{CreditBack, RelayActor, Retarget};
use crate::cluster::worker::replicated::{LeaderSink, ReplicaHost, ReplicatedTask, run_dir};
use crate::cluster::worker::wire::{CheckpointMessage, DataMessage, RunId};
use crate::cluster::worker::{Outbound, WorkerError};
use crate::executor::Supervisor;
use crate::executor::outbox::Outbox;
use crate::executor::{
    AckBatch, AckerActor, BoltActor, CheckpointDone, Credit, Deliver, Delivery, LocalLink,
    SpoutActor, Start, TaskCore, TaskEvent, TreesLost, TriggerCheckpoint, Verdicts, Wire,
};
use crate::ids::NodeId;
use crate::metrics::TaskMetrics;
use crate::plan::PhysicalPlan;

/// Worker threads per topology run on a node, and the plan's worker count (the plan must be
/// the same on every node, so it does not depend on the node).
pub(crate) const RUN_THREADS: usize = 2;

/// The most marks and end markers kept for one task not started here yet.
const MAX_STASHED: usize = 4096;

/// The most ack operations kept for an acker not started here yet (about a second of a busy
/// run's trees); beyond, they are dropped and their trees time out.
const MAX_STASHED_ACKS: usize = 1 << 20;

/// The addresses of a task running on this node.
#[derive(Clone)]
pub(crate) struct LocalTask {
    pub(crate) deliver: Option<Arc<Recipient<Deliver>>>,
    pub(crate) credit: Option<Arc<Recipient<Credit>>>,
    pub(crate) verdicts: Option<Recipient<Verdicts>>,
    pub(crate) acks: Option<Recipient<AckBatch>>,
    pub(crate) metrics: Arc<TaskMetrics>,
}

/// Where a task is now.
pub(crate) enum Place {
    Local(LocalTask),
    Remote(String),
    Nowhere,
}

/// What the tasks, relays and dispatch of one run share.
pub(crate) struct RunShared {
    pub(crate) run: RunId,
    me: NodeId,
    pub(crate) topology: Topology,
    pub(crate) plan: PhysicalPlan,
    routes: RwLock<BTreeMap<TaskId, NodeId>>,
    addrs: RwLock<BTreeMap<NodeId, String>>,
    locals: DashMap<TaskId, LocalTask>,
    /// The tasks of stateful bolts: each is a Raft group whose leader takes its input.
    replicated: rustc_hash::FxHashSet<TaskId>,
    /// The leader of each replicated task's group, as last learned: (term, node).
    leaders: DashMap<TaskId, (u64, NodeId)>,
    /// The node's heartbeat ([`ReplicaHost::report_now`]): woken when a task finishes here or
    /// a group's first leader becomes known (the run may be ready).
    report_now: Arc<tokio::sync::Notify>,
    /// This node's relays, to retarget when a group's leader moves.
    relay_addrs: DashMap<TaskId, Addr<RelayActor>>,
    /// Where each remote task's batches last came from: credits go back there (the routing
    /// table may not know yet that the task moved, or which replica leads).
    last_sender: DashMap<TaskId, String>,
    /// This node's replicated tasks' actors, to refill when they lead again.
    refills: DashMap<TaskId, Recipient<crate::executor::Refill>>,
    /// When a sender was last told that a replicated task here does not lead its group:
    /// (task, sender address) -> when.
    redirected: DashMap<(TaskId, String), std::time::Instant>,
    /// The codecs of every component's subscriptions, by component and input.
    codecs: Vec<Vec<Arc<dyn PayloadCodec>>>,
    outbound: Outbound,
    /// The run's checkpoint interval, if it takes checkpoints.
    checkpoint_interval: Option<std::time::Duration>,
    /// The spouts here, told to take checkpoints and of their completion.
    spout_controls: DashMap<TaskId, (Recipient<TriggerCheckpoint>, Recipient<CheckpointDone>)>,
    /// The spouts here, told when trees in flight were lost with a task (runs without
    /// checkpoints: a checkpointed run rolls back instead).
    spout_losses: DashMap<TaskId, Recipient<TreesLost>>,
    /// The run's ackers, as this node's tasks reach them (local, or through relays), once
    /// tasks started here: where the trees of a lost batch are failed.
    ackers: RwLock<Option<Arc<[Recipient<AckBatch>]>>>,
    /// The last checkpoint the coordinator here completed on two nodes (`u64::MAX`: none).
    completed_checkpoint: AtomicU64,
    /// A task of this checkpointed run failed here: the run must roll back.
    failed: std::sync::atomic::AtomicBool,
    /// (Coordinator.) Every spout of the run ended: its last checkpoint holds the final states.
    spouts_ended: std::sync::atomic::AtomicBool,
    /// Frames that did not decode or named tasks that do not exist.
    pub(crate) rejected: AtomicU64,
    /// Source alignment of the spout tasks here, by component.
    align: rustc_hash::FxHashMap<usize, Arc<crate::executor::align::AlignGroup>>,
}

impl RunShared {
    /// Where `task` runs now: for a replicated task, where its group's leader is (or, before
    /// one is known, the replica its assignment names).
    pub(crate) fn place(&self, task: TaskId) -> Place {
        let node = if self.replicated.contains(&task) {
            let node = self
                .leaders
                .get(&task)
                .map(|l| l.1)
                .or_else(|| self.routes.read().ok().and_then(|r| r.get(&task).copied()));
            if node == Some(self.me) {
                return self
                    .locals
                    .get(&task)
                    .map_or(Place::Nowhere, |l| Place::Local(l.clone()));
            }
            node
        } else {
            if let Some(l) = self.locals.get(&task) {
                return Place::Local(l.clone());
            }
            self.routes.read().ok().and_then(|r| r.get(&task).copied())
        };
        match node {
            Some(n) if n != self.me => self
                .addrs
                .read()
                .ok()
                .and_then(|a| a.get(&n).cloned())
                .map_or(Place::Nowhere, Place::Remote),
            _ => Place::Nowhere,
        }
    }

    /// Sends `msg` to the node at `addr` on the data lane.
    pub(crate) fn send(&self, addr: &str, msg: &DataMessage) {
        match crate::transport::frame::encode(msg) {
            Ok(bytes) => self.outbound.send(addr, bytes),
            Err(e) => tracing::error!(error = %e, "a data message could not be encoded"),
        }
    }

    /// The codec of batches reaching `task` on subscription `input` (made once, at start).
    pub(crate) fn input_codec(
        &self,
        task: TaskId,
        input: u16,
    ) -> Result<&dyn PayloadCodec, String> {
        let component = self
            .plan
            .tasks
            .get(task.0 as usize)
            .ok_or_else(|| format!("no task {task}"))?
            .component;
        self.codecs[component]
            .get(usize::from(input))
            .map(|c| c.as_ref())
            .ok_or_else(|| format!("task {task} has no input {input}"))
    }

    /// The address to send credits for `task`'s batches to: the node its last batch came from,
    /// or where it runs.
    pub(crate) fn credit_place(&self, task: TaskId) -> Place {
        match self.place(task) {
            Place::Local(l) => Place::Local(l),
            other => self
                .last_sender
                .get(&task)
                .map_or(other, |a| Place::Remote(a.clone())),
        }
    }

    /// The setup of task `id` in this run: the plan's, replicated for a stateful bolt's task.
    fn task_setup(&self, id: TaskId, seed: u64) -> tempest_dsl::engine::TaskSetup {
        let mut setup = self.plan.task_setup(id, seed);
        setup.replicated = self.replicated.contains(&id);
        setup
    }

    /// The run's first spout task: its node coordinates the run's checkpoints.
    fn first_spout(&self) -> Option<TaskId> {
        self.plan
            .tasks
            .iter()
            .find(|t| t.kind == tempest_dsl::ComponentKind::Spout)
            .map(|t| t.id)
    }

    /// Where the run's checkpoints are coordinated: here (`Local`), at an address, or not
    /// known yet (`Nowhere`).
    fn coordinator(&self) -> Place {
        self.first_spout()
            .map_or(Place::Nowhere, |spout| self.place(spout))
    }

    /// Tells this node's spouts that trees in flight now may have been lost with a task (what
    /// went to it is gone): they fail them at once and replay, rather than stall their window
    /// of pending trees until the message timeout. Trees that were not lost complete as well
    /// and count twice (at-least-once; exactly-once deduplicates them).
    fn trees_lost(&self, why: &str) {
        if self.spout_losses.is_empty() {
            return;
        }
        tracing::debug!(topology = %self.run.name, why, "trees in flight may be lost: the spouts here replay them");
        let at = std::time::Instant::now();
        for s in self.spout_losses.iter() {
            s.value().do_send(TreesLost(at));
        }
    }

    /// Fails the trees of a batch for `to` that is dropped because its task is not here
    /// (moved, or not started yet), decoded by `codec`: their spouts replay them at once
    /// instead of at the message timeout. Nothing to do for an untracked batch, or before any
    /// task of the run started here (no acker is known yet: the trees time out).
    fn fail_lost_batch(&self, to: TaskId, codec: &dyn PayloadCodec, payload: &Payload) {
        let Some(ackers) = self.ackers.read().ok().and_then(|a| a.clone()) else {
            return;
        };
        let roots = match codec.roots(payload) {
            Ok(roots) => roots,
            Err(e) => return tracing::debug!(task = to.0, error = %e, "no trees of a lost batch"),
        };
        tracing::debug!(topology = %self.run.name, task = to.0, trees = roots.len(), "a batch was lost: its trees fail now");
        let mut folder = AckFolder::new(ackers.len() as u32);
        for root in roots {
            folder.add(to, AckOp::Fail { root });
        }
        folder.drain(|a, list| ackers[a as usize].do_send(AckBatch(list)));
    }

    /// Batches sent to a task were lost (it moved): they held trees of spouts anywhere, so
    /// the spouts here and on every other node of the run fail their trees in flight.
    pub(crate) fn batches_lost(&self) {
        self.trees_lost("batches lost with a task that moved");
        let msg = DataMessage::TreesLost {
            run: self.run.clone(),
        };
        for (_, addr) in self.other_nodes() {
            self.send(&addr, &msg);
        }
    }

    /// Tells this node's spouts about a checkpoint.
    fn tell_spouts(&self, message: &CheckpointMessage) {
        for s in self.spout_controls.iter() {
            let (trigger, done) = s.value();
            match *message {
                CheckpointMessage::Trigger { id } => trigger.do_send(TriggerCheckpoint(id)),
                CheckpointMessage::Done { id, ok } => done.do_send(CheckpointDone { id, ok }),
                _ => {}
            }
        }
    }

    /// The addresses of the other nodes of the run.
    fn other_nodes(&self) -> Vec<(NodeId, String)> {
        let nodes: BTreeSet<NodeId> = self
            .routes
            .read()
            .map(|r| r.values().copied().collect())
            .unwrap_or_default();
        self.addrs
            .read()
            .map(|a| {
                a.iter()
                    .filter(|(n, _)| **n != self.me && nodes.contains(n))
                    .map(|(n, addr)| (*n, addr.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Another live node to hold a copy of a checkpoint: the next one after this node's id
    /// (any node of the cluster, not only the run's).
    fn copy_node(&self) -> Option<String> {
        let addrs = self.addrs.read().ok()?;
        addrs
            .range(NodeId(self.me.0.saturating_add(1))..)
            .chain(addrs.range(..self.me))
            .map(|(_, a)| a.clone())
            .next()
    }

    /// Gives `batches` credits back to link `link` of local task `task`.
    pub(crate) fn credit_local(&self, task: TaskId, link: u32, batches: u32) {
        if let Some(l) = self.locals.get(&task) {
            if let Some(c) = &l.credit {
                c.do_send(Credit {
                    link: LinkId(link),
                    batches,
                });
            }
        }
    }
}

impl RunShared {
    /// A batch for replicated task `task` came from `sender` but this node's replica does not
    /// lead the group: tells the sender who does (at most every 100 ms per sender), so that
    /// its input follows the leader after one round trip instead of failing until the
    /// leader's next announcement reaches it. The batch itself is refused and replays.
    fn redirect(&self, task: TaskId, sender: &str) {
        let Some((term, leader)) = self.leaders.get(&task).map(|l| *l) else {
            return;
        };
        if leader == self.me {
            return;
        }
        let key = (task, sender.to_owned());
        let now = std::time::Instant::now();
        if self
            .redirected
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < std::time::Duration::from_millis(100))
        {
            return;
        }
        self.redirected.insert(key, now);
        self.send(
            sender,
            &DataMessage::Leader {
                run: self.run.clone(),
                task,
                node: leader,
                term,
            },
        );
    }
}

impl LeaderSink for RunShared {
    fn leader_is(&self, task: TaskId, term: u64, leader: NodeId) {
        let before = self.leaders.get(&task).map(|l| *l);
        let changed = match before {
            Some((t, n)) => term > t || (term == t && n != leader),
            None => true,
        };
        if !changed {
            return;
        }
        self.leaders.insert(task, (term, leader));
        if before.is_none() {
            // Readiness waits for it (`TopologyRun::applied`).
            self.report_now.notify_one();
        }
        if leader == self.me && before.is_some_and(|(_, n)| n != self.me) {
            if let Some(r) = self.refills.get(&task) {
                r.do_send(crate::executor::Refill);
            }
        }
        tracing::debug!(topology = %self.run.name, task = task.0, term, %leader, "input follows the group's leader");
        // What went to the old leader is lost (its trees replay); marks and end markers are
        // sent to the new one.
        if let Some(relay) = self.relay_addrs.get(&task) {
            relay.do_send(Retarget);
        }
        if before.is_some_and(|(_, n)| n != leader) {
            self.trees_lost("a replicated task's leader moved");
        }
    }

    fn announce(&self, task: TaskId, term: u64) {
        let msg = DataMessage::Leader {
            run: self.run.clone(),
            task,
            node: self.me,
            term,
        };
        let addrs: Vec<String> = self
            .addrs
            .read()
            .map(|a| {
                a.iter()
                    .filter(|(n, _)| **n != self.me)
                    .map(|(_, addr)| addr.clone())
                    .collect()
            })
            .unwrap_or_default();
        for addr in addrs {
            self.send(&addr, &msg);
        }
    }
}

/// Counts the tasks of this run that finished here, and logs their metrics every 10 s; in a
/// run that takes checkpoints, sends what its tasks save to the run's coordinator, and is the
/// coordinator on the node of the first spout task.
struct RunEvents {
    finished: Arc<Mutex<BTreeSet<TaskId>>>,
    shared: Arc<RunShared>,
    groups: Arc<Mutex<Vec<ReplicatedTask>>>,
    /// Set when the run takes checkpoints.
    checkpoints: Option<RunCheckpoints>,
}

/// A checkpointed run's checkpoints, as one node sees them.
struct RunCheckpoints {
    data_dir: std::path::PathBuf,
    /// The checkpoint this generation started from.
    restored: Option<Arc<Checkpoint>>,
    /// Tasks that ended (reported before the coordinator started, too).
    ended: BTreeSet<TaskId>,
    /// The coordinator, once the run is active, on the first spout task's node.
    coordinator: Option<Coordinator>,
}

/// The run is active: its spouts run (and its checkpoints begin).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Activated;

/// A checkpoint message from another node of the run.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct FromNode(pub(crate) CheckpointMessage);

impl RunEvents {
    /// Starts coordinating the run's checkpoints if this node runs its first spout task.
    fn start_coordinating(&mut self, ctx: &mut Context<Self>) {
        let shared = Arc::clone(&self.shared);
        let (Some(c), Some(interval)) = (&mut self.checkpoints, shared.checkpoint_interval) else {
            return;
        };
        if c.coordinator.is_some() || !matches!(shared.coordinator(), Place::Local(_)) {
            return;
        }
        let ir = shared.topology.ir();
        let mut expected = crate::checkpoint::savers(ir, &shared.plan);
        expected.retain(|t| !c.ended.contains(t));
        let store = match super::checkpoints::store(&c.data_dir, &shared.run.name, shared.run.seed)
        {
            Ok(s) => s,
            Err(why) => {
                tracing::error!(topology = %shared.run.name, %why, "no checkpoint store: this run takes no checkpoints");
                return;
            }
        };
        // Ids grow over the run, and each generation has its own: a checkpoint an earlier
        // generation completed but never recorded can never be taken for one of this one's.
        let floor = u64::from(shared.run.generation) << 32;
        let first_id = c.restored.as_ref().map_or(1, |r| r.id + 1).max(floor + 1);
        let tracker = Tracker::new(
            interval,
            first_id,
            expected,
            c.restored
                .as_ref()
                .map(|r| r.tasks.clone())
                .unwrap_or_default(),
            std::time::Instant::now(),
        );
        c.coordinator = Some(Coordinator::new(
            tracker,
            store,
            shared.run.name.clone(),
            crate::checkpoint::shape(ir),
        ));
        tracing::info!(topology = %shared.run.name, generation = shared.run.generation, "coordinating the run's checkpoints");
        use actix::AsyncContext;
        ctx.run_interval(Tracker::tick_every(interval), |act, _| {
            let actions = act
                .coordinator()
                .map(|c| c.tick(std::time::Instant::now()))
                .unwrap_or_default();
            act.perform(actions);
        });
    }

    fn coordinator(&mut self) -> Option<&mut Coordinator> {
        self.checkpoints.as_mut()?.coordinator.as_mut()
    }

    /// Does what the coordinator asks.
    fn perform(&mut self, actions: Vec<Action>) {
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Spouts(message) => {
                    self.shared.tell_spouts(&message);
                    for (_, addr) in self.shared.other_nodes() {
                        self.shared.send(
                            &addr,
                            &DataMessage::Checkpoint {
                                run: self.shared.run.clone(),
                                message: message.clone(),
                            },
                        );
                    }
                }
                Action::Copy { id, file } => match self.shared.copy_node() {
                    Some(addr) => self.shared.send(
                        &addr,
                        &DataMessage::Checkpoint {
                            run: self.shared.run.clone(),
                            message: CheckpointMessage::Store { id, file },
                        },
                    ),
                    None => {
                        // A cluster of one node: there is no other to copy to.
                        if let Some(c) = self.coordinator() {
                            queue.extend(c.stored(id, true));
                        }
                    }
                },
            }
        }
        if let Some(done) = self.coordinator().and_then(|c| c.completed()) {
            self.shared
                .completed_checkpoint
                .store(done, Ordering::Relaxed);
        }
    }

    /// A checkpoint message for the coordinator, from this node or another.
    fn for_coordinator(&mut self, message: CheckpointMessage) {
        let Some(checkpoints) = &mut self.checkpoints else {
            return;
        };
        if let CheckpointMessage::Ended { task } = &message {
            checkpoints.ended.insert(*task);
            let all = self
                .shared
                .plan
                .tasks
                .iter()
                .filter(|t| t.kind == tempest_dsl::ComponentKind::Spout)
                .all(|t| checkpoints.ended.contains(&t.id));
            if all {
                self.shared.spouts_ended.store(true, Ordering::Relaxed);
            }
        }
        let now = std::time::Instant::now();
        let Some(c) = checkpoints.coordinator.as_mut() else {
            match self.shared.coordinator() {
                Place::Remote(addr) => self.shared.send(
                    &addr,
                    &DataMessage::Checkpoint {
                        run: self.shared.run.clone(),
                        message,
                    },
                ),
                // Not started yet here (the task ended or saved before the run was active on
                // this node): its end was noted above; a save is lost and times out.
                _ => {
                    tracing::debug!(topology = %self.shared.run.name, "a checkpoint message before the coordinator started")
                }
            }
            return;
        };
        let actions = match message {
            CheckpointMessage::Saved { task, id, saved } => c.saved(task, id, saved, now),
            CheckpointMessage::Settled { .. } => {
                c.hurry();
                Vec::new()
            }
            CheckpointMessage::Ended { task } => c.ended(task, now),
            CheckpointMessage::Stored { id, ok } => c.stored(id, ok),
            CheckpointMessage::Trigger { .. }
            | CheckpointMessage::Done { .. }
            | CheckpointMessage::Store { .. } => Vec::new(),
        };
        self.perform(actions);
    }
}

impl Handler<Activated> for RunEvents {
    type Result = ();

    fn handle(&mut self, _: Activated, ctx: &mut Context<Self>) {
        self.start_coordinating(ctx);
    }
}

impl Handler<FromNode> for RunEvents {
    type Result = ();

    fn handle(&mut self, FromNode(message): FromNode, _: &mut Context<Self>) {
        self.for_coordinator(message);
    }
}

impl RunEvents {
    /// Logs the counters of this node's tasks, per component, at `info` (and how many data
    /// messages for the run were rejected, when some were).
    fn log_metrics(&self) {
        let shared = &self.shared;
        let components = &shared.topology.ir().components;
        let mut per: Vec<Option<crate::metrics::MetricsSnapshot>> = vec![None; components.len()];
        for l in shared.locals.iter() {
            if let Some(t) = shared.plan.tasks.get(l.key().0 as usize) {
                per[t.component]
                    .get_or_insert_with(Default::default)
                    .merge(&l.metrics.snapshot());
            }
        }
        let rejected = shared.rejected.load(Ordering::Relaxed);
        if rejected > 0 {
            tracing::warn!(topology = %shared.run.name, rejected, "data messages rejected");
        }
        for (c, m) in components.iter().zip(per) {
            let Some(m) = m else { continue };
            crate::metrics::log_component(&shared.run.name, &c.name, &m);
        }
        if let Some(c) = self
            .checkpoints
            .as_ref()
            .and_then(|c| c.coordinator.as_ref())
        {
            let (completed, failed) = c.counts();
            tracing::info!(
                topology = %shared.run.name,
                generation = shared.run.generation,
                completed,
                failed,
                last = c.completed().unwrap_or(0),
                "checkpoints"
            );
        }
        let Ok(groups) = self.groups.lock() else {
            return;
        };
        for g in groups.iter() {
            let Some(st) = g.status() else { continue };
            let c = &g.counters;
            let proposals = c.proposals.load(Ordering::Relaxed);
            let bytes = c.proposed_bytes.load(Ordering::Relaxed);
            tracing::info!(
                topology = %shared.run.name,
                group = %g.group,
                task = g.task.0,
                role = ?st.role,
                term = st.term,
                leader = ?st.leader.map(|n| n.0),
                last_log = st.last_log.unwrap_or(0),
                committed = st.committed.unwrap_or(0),
                applied = st.applied.unwrap_or(0),
                apply_lag = st.committed.unwrap_or(0).saturating_sub(st.applied.unwrap_or(0)),
                leader_changes = c.leader_changes.load(Ordering::Relaxed),
                proposals,
                mean_proposal_bytes = bytes.checked_div(proposals).unwrap_or(0),
                refused = c.refused.load(Ordering::Relaxed),
                "group"
            );
        }
    }
}

impl Actor for RunEvents {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        use actix::AsyncContext;
        ctx.run_interval(std::time::Duration::from_secs(10), |act, _| {
            act.log_metrics()
        });
    }
}

impl Handler<TaskEvent> for RunEvents {
    type Result = ();

    fn handle(&mut self, event: TaskEvent, _: &mut Context<Self>) {
        match event {
            TaskEvent::Finished { task, histograms } => {
                tracing::debug!(topology = %self.shared.run.name, task = task.0, "task finished");
                let complete = &histograms.complete;
                if complete.count() > 0 {
                    let us = |q: f64| complete.quantile(q).as_micros();
                    tracing::info!(
                        topology = %self.shared.run.name,
                        task = task.0,
                        trees = complete.count(),
                        complete_p50_us = us(0.5),
                        complete_p99_us = us(0.99),
                        "spout task finished"
                    );
                }
                if let Ok(mut f) = self.finished.lock() {
                    f.insert(task);
                }
                self.shared.report_now.notify_one();
                self.for_coordinator(CheckpointMessage::Ended { task });
            }
            TaskEvent::Failed { task, error } => {
                tracing::error!(topology = %self.shared.run.name, task = task.0, %error, "task failed");
                if self.shared.checkpoint_interval.is_some() {
                    // Its state (or its source's position) is lost with it: the run goes back
                    // to its last checkpoint, as when a node dies.
                    tracing::warn!(topology = %self.shared.run.name, task = task.0, "a task of a checkpointed run failed: asking for a rollback");
                    self.shared.failed.store(true, Ordering::Relaxed);
                }
            }
            TaskEvent::Checkpointed { task, id, saved } => {
                self.for_coordinator(CheckpointMessage::Saved { task, id, saved });
            }
            TaskEvent::Settled { task } => {
                self.for_coordinator(CheckpointMessage::Settled { task });
            }
        }
    }
}

#[derive(Clone)]
struct RelayHandle {
    addr: Addr<RelayActor>,
    deliver: Arc<Recipient<Deliver>>,
    credit: Arc<Recipient<Credit>>,
    metrics: Arc<TaskMetrics>,
}

/// One topology run's tasks on this node.
pub(crate) struct TopologyRun {
    shared: Arc<RunShared>,
    host: ReplicaHost,
    /// This node's replicas of the run's replicated tasks.
    groups: Arc<Mutex<Vec<ReplicatedTask>>>,
    seeds: Vec<u64>,
    relays: Mutex<FxHashMap<TaskId, RelayHandle>>,
    finished: Arc<Mutex<BTreeSet<TaskId>>>,
    events: Addr<RunEvents>,
    system: actix_rt::System,
    /// The checkpoint this generation of the run starts from.
    restore: Option<Arc<Checkpoint>>,
    arbiters: Vec<ArbiterHandle>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Marks and end markers for tasks not started here yet.
    stash: Mutex<FxHashMap<TaskId, Vec<Delivery>>>,
    /// Ack operations for ackers not started here yet (a sender learned of an acker's move
    /// before this node started it): without them their trees could only time out. Taken
    /// under `stash`'s lock.
    ack_stash: Mutex<FxHashMap<TaskId, Vec<AckMsg>>>,
    /// The state version whose assignment the tasks here match (`u64::MAX`: none yet, or some
    /// did not start).
    applied: AtomicU64,
    /// Whether this node logged that the run waits for its groups' leaders.
    leaderless_logged: std::sync::atomic::AtomicBool,
    /// Spouts wired but not started: they start once the run is active.
    waiting: Mutex<Vec<Recipient<Start>>>,
    active: std::sync::atomic::AtomicBool,
}

impl TopologyRun {
    /// Starts the run's actix system on a thread of its own; no task runs yet.
    pub(crate) fn start(
        run: RunId,
        topology: Topology,
        me: NodeId,
        outbound: Outbound,
        host: ReplicaHost,
        restore: Option<Checkpoint>,
    ) -> Result<Self, WorkerError> {
        let plan = PhysicalPlan::new(topology.ir(), RUN_THREADS);
        let checkpoint_interval = topology.ir().config.checkpoint_interval;
        let restore = restore.map(Arc::new);
        if let Some(c) = &restore {
            let shape = crate::checkpoint::shape(topology.ir());
            if c.shape != shape {
                return Err(WorkerError::Setup(format!(
                    "checkpoint {} is of components {:?}, and the registered topology now has \
                     {shape:?}",
                    c.id, c.shape
                )));
            }
        }
        // A checkpointed run's stateful tasks roll back to checkpoints instead.
        let replicated = plan
            .tasks
            .iter()
            .filter(|t| {
                checkpoint_interval.is_none()
                    && topology.ir().components[t.component].stateful.is_some()
            })
            .map(|t| t.id)
            .collect();
        // The same seeds on every node: drawn from the run's seed in task order.
        let mut rng = SmallRng::seed_from_u64(run.seed);
        let seeds = plan.tasks.iter().map(|_| rng.random()).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("tempest-{:04x}", run.seed & 0xffff))
            .spawn(move || {
                let system = actix_rt::System::new();
                let arbiters: Vec<Arbiter> =
                    system.block_on(async { (0..RUN_THREADS).map(|_| Arbiter::new()).collect() });
                let _ = tx.send((
                    actix_rt::System::current(),
                    arbiters.iter().map(Arbiter::handle).collect::<Vec<_>>(),
                ));
                let _ = system.run();
                for a in &arbiters {
                    a.stop();
                }
                for a in arbiters {
                    let _ = a.join();
                }
            })
            .map_err(WorkerError::Spawn)?;
        let (system, arbiters) = rx
            .recv()
            .map_err(|_| WorkerError::Setup("the run's system thread did not start".into()))?;
        let finished = Arc::new(Mutex::new(BTreeSet::new()));
        let codecs = (0..topology.ir().components.len())
            .map(|c| {
                (0..)
                    .map_while(|input| topology.input_codec(c, input))
                    .collect()
            })
            .collect();
        let align = crate::executor::align::groups(topology.ir());
        let shared = Arc::new(RunShared {
            run,
            me,
            topology,
            plan,
            routes: RwLock::default(),
            addrs: RwLock::default(),
            locals: DashMap::new(),
            replicated,
            leaders: DashMap::new(),
            relay_addrs: DashMap::new(),
            refills: DashMap::new(),
            last_sender: DashMap::new(),
            redirected: DashMap::new(),
            codecs,
            outbound,
            checkpoint_interval,
            spout_controls: DashMap::new(),
            spout_losses: DashMap::new(),
            ackers: RwLock::new(None),
            completed_checkpoint: AtomicU64::new(u64::MAX),
            failed: std::sync::atomic::AtomicBool::new(false),
            spouts_ended: std::sync::atomic::AtomicBool::new(false),
            rejected: AtomicU64::new(0),
            align,
            report_now: Arc::clone(&host.report_now),
        });
        let groups = Arc::default();
        let events = RunEvents {
            finished: Arc::clone(&finished),
            shared: Arc::clone(&shared),
            groups: Arc::clone(&groups),
            checkpoints: checkpoint_interval.map(|_| RunCheckpoints {
                data_dir: host.data_dir.clone(),
                restored: restore.clone(),
                ended: BTreeSet::new(),
                coordinator: None,
            }),
        };
        let events = RunEvents::start_in_arbiter(&arbiters[0], |_| events);
        Ok(TopologyRun {
            shared,
            host,
            groups,
            seeds,
            relays: Mutex::default(),
            finished,
            events,
            system,
            restore,
            arbiters,
            thread: Mutex::new(Some(thread)),
            stash: Mutex::default(),
            ack_stash: Mutex::default(),
            waiting: Mutex::default(),
            active: std::sync::atomic::AtomicBool::new(false),
            applied: AtomicU64::new(u64::MAX),
            leaderless_logged: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Records the state version whose assignment this node's tasks of the run match (`None`:
    /// some did not start).
    pub(crate) fn set_applied(&self, version: Option<u64>) {
        self.applied
            .store(version.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// The state version whose assignment this node's tasks of the run match, if they all
    /// started and the leader of every replicated task is known here: a spout that started
    /// before a group elected sent its first batches to no leader, and replayed them.
    pub(crate) fn applied(&self) -> Option<u64> {
        let v = self.applied.load(Ordering::SeqCst);
        if v == u64::MAX {
            return None;
        }
        let shared = &self.shared;
        let leaderless = |t: &&TaskId| !shared.leaders.contains_key(t);
        if !shared.replicated.iter().any(|t| leaderless(&t)) {
            return Some(v);
        }
        if !self.leaderless_logged.swap(true, Ordering::Relaxed) {
            // Once: a group that cannot elect (most of its replicas down) holds the run here.
            let tasks: Vec<u32> = shared
                .replicated
                .iter()
                .filter(leaderless)
                .map(|t| t.0)
                .collect();
            tracing::info!(topology = %shared.run.name, ?tasks, "tasks started here: the run waits for these replicated tasks' leaders before its spouts start");
        }
        None
    }

    /// Lets the spouts run (every node of the run started its tasks); spouts started later
    /// start at once.
    pub(crate) fn activate(&self) {
        if self.active.swap(true, Ordering::SeqCst) {
            return;
        }
        self.events.do_send(Activated);
        if let Ok(mut w) = self.waiting.lock() {
            for s in w.drain(..) {
                s.do_send(Start);
            }
        }
    }

    /// The tasks of this run that finished on this node.
    pub(crate) fn finished(&self) -> BTreeSet<TaskId> {
        self.finished.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// The committed positions of the seekable spouts running here (exactly-once): (task,
    /// position).
    pub(crate) fn positions(&self) -> Vec<(TaskId, u64)> {
        self.shared
            .locals
            .iter()
            .filter_map(|l| Some((*l.key(), l.metrics.committed()?.0)))
            .collect()
    }

    /// Exports the final states of the run's checkpointed stateful tasks where the node is
    /// told to (`state_export_dir`), as replicated tasks export theirs, if this node
    /// coordinated the run's checkpoints and every spout ended: a spout ends once a checkpoint
    /// holding its end completed (or, logged, after a few failed), so the last checkpoint holds
    /// the final states. A run killed midway exports nothing.
    pub(crate) fn export_final_states(&self) {
        let shared = &self.shared;
        if !shared.spouts_ended.load(Ordering::Relaxed) {
            return;
        }
        let (Some(dir), Some(id)) = (&self.host.export_dir, self.completed_checkpoint()) else {
            return;
        };
        let checkpoint =
            super::checkpoints::read(&self.host.data_dir, &shared.run.name, shared.run.seed, id);
        let Some(checkpoint) = checkpoint else {
            tracing::warn!(topology = %shared.run.name, checkpoint = id, "the last checkpoint cannot be read: no final states exported");
            return;
        };
        for (task, saved) in &checkpoint.tasks {
            if let TaskSnapshot::State(bytes) = saved {
                let path = super::replicated::export_path(dir, &shared.run, *task, shared.me);
                let written = shared
                    .topology
                    .exported_state(bytes)
                    .map_err(std::io::Error::other)
                    .and_then(|bytes| super::replicated::write_export(&path, &bytes));
                if let Err(e) = written {
                    tracing::warn!(path = %path.display(), error = %e, "final state not exported");
                }
            }
        }
    }

    /// Whether a task of this checkpointed run failed here (the run must roll back).
    pub(crate) fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// The last checkpoint the run's coordinator here completed on two nodes.
    pub(crate) fn completed_checkpoint(&self) -> Option<u64> {
        let c = self.shared.completed_checkpoint.load(Ordering::Relaxed);
        (c != u64::MAX).then_some(c)
    }

    /// Whether `task` runs here.
    pub(crate) fn runs(&self, task: TaskId) -> bool {
        self.shared.locals.contains_key(&task)
    }

    /// Takes a new assignment: where every task runs and every node's address. Returns the
    /// tasks that moved, for [`TopologyRun::retarget`] once the ones that moved here started.
    pub(crate) fn route(
        &self,
        routes: BTreeMap<TaskId, NodeId>,
        addrs: BTreeMap<NodeId, String>,
    ) -> Vec<TaskId> {
        let moved: Vec<TaskId> = {
            let Ok(mut current) = self.shared.routes.write() else {
                return Vec::new();
            };
            let moved = routes
                .iter()
                .filter(|(t, n)| current.get(t).is_some_and(|old| old != *n))
                .map(|(t, _)| *t)
                .collect();
            *current = routes;
            moved
        };
        if let Ok(mut a) = self.shared.addrs.write() {
            *a = addrs;
        }
        moved
    }

    /// Relays of tasks that moved settle what went to their old place.
    pub(crate) fn retarget(&self, moved: &[TaskId]) {
        if !moved.is_empty() {
            self.shared.trees_lost("tasks moved");
        }
        if let Ok(relays) = self.relays.lock() {
            for t in moved {
                if let Some(r) = relays.get(t) {
                    r.addr.do_send(Retarget);
                }
            }
        }
    }

    /// A fresh instance of task `id` for its `restart`-th restart, with ack-tree ids of its own.
    fn instance(shared: &RunShared, id: TaskId, seed: u64, restart: u32) -> Result<Task, String> {
        let component = shared
            .plan
            .tasks
            .get(id.0 as usize)
            .ok_or_else(|| format!("no task {id}"))?
            .component;
        let setup = shared.task_setup(
            id,
            seed ^ u64::from(restart).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        shared
            .topology
            .instantiate(component, &setup)
            .map_err(|e| e.to_string())
    }

    /// Restarts bolt task `id` in place after a failure: at most 5 times a minute.
    fn bolt_supervisor(&self, id: TaskId, seed: u64) -> Supervisor<dyn BoltTask> {
        let shared = Arc::clone(&self.shared);
        let make = move |restart: u32| match Self::instance(&shared, id, seed, restart)? {
            Task::Bolt(b) => Ok(b),
            Task::Spout(_) => Err("the component is a spout".to_owned()),
        };
        Supervisor::new(Box::new(make), 5, std::time::Duration::from_secs(60))
    }

    /// Restarts spout task `id` in place after a failure: at most 5 times a minute.
    fn spout_supervisor(&self, id: TaskId, seed: u64) -> Supervisor<dyn SpoutTask> {
        let shared = Arc::clone(&self.shared);
        let make = move |restart: u32| match Self::instance(&shared, id, seed, restart)? {
            Task::Spout(s) => Ok(s),
            Task::Bolt(_) => Err("the component is a bolt".to_owned()),
        };
        Supervisor::new(Box::new(make), 5, std::time::Duration::from_secs(60))
    }

    /// This node's relay for `task`, started on first use.
    fn relay(&self, task: TaskId) -> Result<RelayHandle, WorkerError> {
        let mut relays = self
            .relays
            .lock()
            .map_err(|_| WorkerError::Setup("relay table poisoned".into()))?;
        let r = relays.entry(task).or_insert_with(|| {
            let shared = Arc::clone(&self.shared);
            let arbiter = &self.arbiters[task.0 as usize % self.arbiters.len()];
            let addr =
                RelayActor::start_in_arbiter(arbiter, move |_| RelayActor::new(shared, task));
            self.shared.relay_addrs.insert(task, addr.clone());
            RelayHandle {
                deliver: Arc::new(addr.clone().recipient()),
                credit: Arc::new(addr.clone().recipient()),
                metrics: Arc::new(TaskMetrics::default()),
                addr,
            }
        });
        Ok(r.clone())
    }

    /// Starts `tasks` (component tasks and ackers of this run) on this node, wires them to the
    /// tasks already here and to relays for the others, and starts the spouts among them once
    /// the run is active. `finished` are tasks that ended (elsewhere, perhaps on a node that
    /// died since): their end markers are given to the new tasks here, as they sent them to
    /// the tasks' earlier instances. `epoch` (the manager state's version) makes the ack-tree
    /// ids of a task started again elsewhere differ from its earlier instance's.
    ///
    /// A replicated task (of a stateful bolt) starts on each of its `replicas` with a replica
    /// of its Raft group; the first replica founds the group when `found_groups` (the run's
    /// first assignment).
    pub(crate) fn start_tasks(
        &self,
        tasks: &[TaskId],
        finished: &BTreeSet<TaskId>,
        epoch: u64,
        replicas: &BTreeMap<TaskId, Vec<NodeId>>,
        found_groups: bool,
        positions: &BTreeMap<TaskId, u64>,
    ) -> Result<(), WorkerError> {
        let shared = &self.shared;
        let plan = &shared.plan;
        let ir = shared.topology.ir();
        let config = &ir.config;
        let credit = config.queue_batches as u32;
        let tracking = ir
            .guarantee
            .is_tracked()
            .then_some((config.message_timeout, config.max_spout_pending));
        let component_tasks = plan.tasks.len();
        let checkpointing = shared.checkpoint_interval.is_some();
        let mut wires: Vec<(TaskId, Recipient<Wire>)> = Vec::new();
        let mut spouts = Vec::new();
        // Registered for dispatch only once wired, so no batch overtakes a task's `Wire`.
        let mut fresh: FxHashMap<TaskId, LocalTask> = FxHashMap::default();
        for &id in tasks.iter().filter(|t| (t.0 as usize) < component_tasks) {
            if self.runs(id) {
                continue;
            }
            let task = &plan.tasks[id.0 as usize];
            let component = &ir.components[task.component];
            let seed = self.seeds[id.0 as usize] ^ epoch.wrapping_mul(0xd6e8_feb8_6659_fd93);
            let setup = shared.task_setup(id, seed);
            let instance = shared
                .topology
                .instantiate(task.component, &setup)
                .map_err(|e| {
                    WorkerError::Setup(format!("task {id} of `{}`: {e}", component.name))
                })?;
            let span = tracing::error_span!("task", topology = %shared.run.name, component = %component.name, task = id.0);
            let metrics = Arc::new(TaskMetrics::default());
            let core = TaskCore::new(
                id,
                span,
                Outbox::new(Vec::new(), credit),
                Arc::clone(&metrics),
                self.events.clone().recipient(),
                config.flush_interval,
            );
            let arbiter = &self.arbiters[task.worker % self.arbiters.len()];
            let saved = self.restore.as_ref().and_then(|c| c.tasks.get(&id));
            let local = match instance {
                Task::Spout(spout) => {
                    // A checkpointed run's spout is not restarted in place (a fresh instance
                    // would start its source over, behind the checkpoints' backs): its failure
                    // rolls the run back.
                    let supervisor = (!checkpointing).then(|| self.spout_supervisor(id, seed));
                    let position = saved.and_then(TaskSnapshot::spout_restore);
                    let batch_size = config.batch_size;
                    // A seekable spout starts again where the cluster recorded it (a
                    // checkpointed run rewinds to its checkpoint instead).
                    let seek_to = positions
                        .get(&id)
                        .filter(|_| !checkpointing)
                        .map(|p| tempest_dsl::MsgId(*p));
                    let align = shared
                        .align
                        .get(&task.component)
                        .map(|g| (Arc::clone(g), task.index as usize));
                    let addr = SpoutActor::start_in_arbiter(arbiter, move |_| {
                        let mut actor = SpoutActor::new(core, spout, batch_size, credit, tracking)
                            .seek_to(seek_to);
                        if let Some((group, slot)) = align {
                            actor = actor.aligned(group, slot);
                        }
                        if checkpointing {
                            actor = actor.checkpointed(position);
                        }
                        if let Some(supervisor) = supervisor {
                            actor = actor.supervised(supervisor);
                        }
                        actor
                    });
                    if checkpointing {
                        shared
                            .spout_controls
                            .insert(id, (addr.clone().recipient(), addr.clone().recipient()));
                    } else {
                        shared.spout_losses.insert(id, addr.clone().recipient());
                    }
                    spouts.push(addr.clone().recipient::<Start>());
                    wires.push((id, addr.clone().recipient()));
                    LocalTask {
                        deliver: None,
                        credit: Some(Arc::new(addr.clone().recipient())),
                        verdicts: Some(addr.recipient()),
                        acks: None,
                        metrics,
                    }
                }
                Task::Bolt(bolt) => {
                    let ends = task.upstream_links;
                    let tick = component.tick_every;
                    let addr = if setup.replicated {
                        // Not restarted in place: a fresh instance would take the answers
                        // of its predecessor's proposals for its own.
                        let propose =
                            self.start_group(id, task.component, replicas, found_groups)?;
                        let addr = BoltActor::start_in_arbiter(arbiter, move |_| {
                            BoltActor::new(core, bolt, ends, tick, credit).replicated(propose)
                        });
                        shared.refills.insert(id, addr.clone().recipient());
                        addr
                    } else {
                        // A stateful task of a checkpointed run is not restarted in place (a
                        // fresh instance would lose its state): its failure rolls the run back.
                        let supervisor = (!checkpointing || component.stateful.is_none())
                            .then(|| self.bolt_supervisor(id, seed));
                        let state = match saved {
                            Some(TaskSnapshot::State(bytes)) => Some(bytes.clone()),
                            _ => None,
                        };
                        BoltActor::start_in_arbiter(arbiter, move |_| {
                            let mut actor = BoltActor::new(core, bolt, ends, tick, credit);
                            if checkpointing {
                                actor = actor.checkpointed(state);
                            }
                            if let Some(supervisor) = supervisor {
                                actor = actor.supervised(supervisor);
                            }
                            actor
                        })
                    };
                    wires.push((id, addr.clone().recipient()));
                    LocalTask {
                        deliver: Some(Arc::new(addr.clone().recipient())),
                        credit: Some(Arc::new(addr.recipient())),
                        verdicts: None,
                        acks: None,
                        metrics,
                    }
                }
            };
            fresh.insert(id, local);
        }
        let lookup = |fresh: &FxHashMap<TaskId, LocalTask>, t: TaskId| {
            fresh
                .get(&t)
                .cloned()
                .or_else(|| shared.locals.get(&t).map(|l| l.clone()))
        };
        // Ackers, once the spouts here exist: verdicts go to them or to relays.
        for &id in tasks.iter().filter(|t| (t.0 as usize) >= component_tasks) {
            if self.runs(id) || !plan.ackers.iter().any(|(a, _)| *a == id) {
                continue;
            }
            let mut spouts_of: FxHashMap<TaskId, Recipient<Verdicts>> = FxHashMap::default();
            for t in plan
                .tasks
                .iter()
                .filter(|t| t.kind == tempest_dsl::ComponentKind::Spout)
            {
                let to = match lookup(&fresh, t.id).and_then(|l| l.verdicts) {
                    Some(v) => v,
                    None => self.relay(t.id)?.addr.recipient(),
                };
                spouts_of.insert(t.id, to);
            }
            let span = tracing::error_span!("task", topology = %shared.run.name, component = "__acker", task = id.0);
            let timeout = config.message_timeout;
            let arbiter = &self.arbiters[id.0 as usize % self.arbiters.len()];
            let addr = AckerActor::start_in_arbiter(arbiter, move |_| {
                AckerActor::new(timeout, spouts_of, span)
            });
            fresh.insert(
                id,
                LocalTask {
                    deliver: None,
                    credit: None,
                    verdicts: None,
                    acks: Some(addr.recipient()),
                    metrics: Arc::new(TaskMetrics::default()),
                },
            );
        }
        let mut ackers: Vec<Recipient<AckBatch>> = Vec::with_capacity(plan.ackers.len());
        for &(a, _) in &plan.ackers {
            match lookup(&fresh, a).and_then(|l| l.acks) {
                Some(r) => ackers.push(r),
                None => ackers.push(self.relay(a)?.addr.recipient()),
            }
        }
        let ackers: Arc<[Recipient<AckBatch>]> = ackers.into();
        if let Ok(mut a) = self.shared.ackers.write() {
            *a = Some(Arc::clone(&ackers));
        }
        for (id, wire) in wires {
            let task = &plan.tasks[id.0 as usize];
            let mut links = Vec::with_capacity(task.links.len());
            for link in &task.links {
                // A replicated target is reached through its relay even from here: its leader
                // may be elsewhere, and may move.
                let local = lookup(&fresh, link.target)
                    .filter(|_| !shared.replicated.contains(&link.target))
                    .and_then(|l| l.deliver.map(|d| (d, l.metrics)));
                let (to, target_metrics) = match local {
                    Some(found) => found,
                    None => {
                        let r = self.relay(link.target)?;
                        (r.deliver, r.metrics)
                    }
                };
                links.push(LocalLink {
                    from: id,
                    input: link.input,
                    to,
                    target_metrics,
                });
            }
            let mut upstream = Vec::new();
            for &(up, n) in plan.upstream_links_of(id) {
                // Credits for a replicated upstream go to its leader, wherever it is.
                let credit = match lookup(&fresh, up)
                    .filter(|_| !shared.replicated.contains(&up))
                    .and_then(|l| l.credit)
                {
                    Some(c) => c,
                    None => self.relay(up)?.credit,
                };
                upstream.push((up, n, credit));
            }
            wire.do_send(Wire {
                links,
                upstream,
                ackers: Arc::clone(&ackers),
            });
        }
        for (id, local) in fresh {
            let deliver = local.deliver.clone();
            let acks = local.acks.clone();
            // Registered and its stash emptied under the stash's lock, so a control message
            // either finds the task or lands in the stash before it is emptied, in order.
            let Ok(mut stash) = self.stash.lock() else {
                shared.locals.insert(id, local);
                continue;
            };
            shared.locals.insert(id, local);
            if let Some(acks) = acks {
                let early = self
                    .ack_stash
                    .lock()
                    .ok()
                    .and_then(|mut s| s.remove(&id))
                    .unwrap_or_default();
                if !early.is_empty() {
                    acks.do_send(AckBatch(early));
                }
            }
            let stashed = stash.remove(&id).unwrap_or_default();
            let Some(deliver) = deliver else { continue };
            // End markers of upstream tasks that already finished.
            for &(up, n) in plan.upstream_links_of(id) {
                if finished.contains(&up) {
                    for _ in 0..n {
                        deliver.do_send(Deliver(Delivery::DataEnd { from: up }));
                        deliver.do_send(Deliver(Delivery::End { from: up }));
                    }
                }
            }
            // Control messages that came before the task started here.
            for d in stashed {
                deliver.do_send(Deliver(d));
            }
            drop(stash);
        }
        if self.active.load(Ordering::SeqCst) {
            for s in spouts {
                s.do_send(Start);
            }
        } else if let Ok(mut w) = self.waiting.lock() {
            w.extend(spouts);
        }
        Ok(())
    }

    /// Starts this node's replica of replicated task `id`'s group; returns how its bolt actor
    /// proposes.
    fn start_group(
        &self,
        id: TaskId,
        component: usize,
        replicas: &BTreeMap<TaskId, Vec<NodeId>>,
        found_groups: bool,
    ) -> Result<crate::executor::Propose, WorkerError> {
        let shared = &self.shared;
        let ir = shared.topology.ir();
        let c = &ir.components[component];
        let state = c
            .stateful
            .ok_or_else(|| WorkerError::Setup(format!("`{}` is not stateful", c.name)))?;
        let task_index = shared.plan.tasks[id.0 as usize].index;
        let machine = shared
            .topology
            .state_machine(component, task_index)
            .ok_or_else(|| WorkerError::Setup(format!("`{}` has no state machine", c.name)))?;
        let nodes = replicas
            .get(&id)
            .ok_or_else(|| WorkerError::Setup(format!("task {id} has no replicas assigned")))?;
        let members: BTreeMap<NodeId, String> = {
            let addrs = shared
                .addrs
                .read()
                .map_err(|_| WorkerError::Setup("address table poisoned".into()))?;
            nodes
                .iter()
                .map(|n| (*n, addrs.get(n).cloned().unwrap_or_default()))
                .collect()
        };
        let sink: Arc<dyn LeaderSink> = Arc::clone(shared) as Arc<dyn LeaderSink>;
        let group = ReplicatedTask::start(
            &self.host,
            &shared.run,
            shared.me,
            id,
            machine,
            state.storage,
            members,
            found_groups && nodes.first() == Some(&shared.me),
            found_groups,
            sink,
        );
        let propose = group.propose();
        self.groups
            .lock()
            .map_err(|_| WorkerError::Setup("group table poisoned".into()))?
            .push(group);
        Ok(propose)
    }

    /// Hands a message from the node at `sender` to the task it is for.
    pub(crate) fn dispatch(&self, msg: DataMessage, sender: &str) {
        let shared = &self.shared;
        let plan = &shared.plan;
        let reject = |why: &str| {
            shared.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(topology = %shared.run.name, why, "data message rejected");
        };
        match msg {
            DataMessage::Batch {
                to,
                from,
                link,
                input,
                mark,
                records,
                ..
            } => {
                let valid = plan
                    .tasks
                    .get(from.0 as usize)
                    .and_then(|t| t.links.get(link as usize))
                    .is_some_and(|l| l.target == to && l.input == input);
                if !valid {
                    return reject("a batch on a link the plan does not have");
                }
                if shared.last_sender.get(&from).is_none_or(|a| *a != sender) {
                    shared.last_sender.insert(from, sender.to_owned());
                }
                if shared.replicated.contains(&to) {
                    shared.redirect(to, sender);
                }
                let bounce = || {
                    // Not here (moved, or not started yet): give the sender its credit back,
                    // and fail the batch's trees.
                    if let Ok(codec) = shared.input_codec(to, input) {
                        if let Ok(payload) = codec.decode(&records) {
                            shared.fail_lost_batch(to, codec, &payload);
                        }
                    }
                    shared.send(
                        sender,
                        &DataMessage::Credit {
                            run: shared.run.clone(),
                            to: from,
                            link,
                            batches: 1,
                        },
                    );
                };
                let Some(local) = shared.locals.get(&to).map(|l| l.clone()) else {
                    return bounce();
                };
                let Some(deliver) = &local.deliver else {
                    return reject("a batch for a task that takes none");
                };
                let payload = shared
                    .input_codec(to, input)
                    .and_then(|c| c.decode(&records).map_err(|e| e.to_string()));
                match payload {
                    Ok(mut payload) => {
                        if let Some(m) = mark {
                            payload.set_mark(m);
                        }
                        local.metrics.enqueue(payload.len());
                        deliver.do_send(Deliver(Delivery::Batch {
                            from,
                            link: LinkId(link),
                            input,
                            payload,
                        }));
                    }
                    Err(why) => {
                        reject(&why);
                        bounce();
                    }
                }
            }
            DataMessage::Mark {
                to,
                from,
                input,
                mark,
                ..
            } => self.deliver_control(to, Delivery::Mark { from, input, mark }),
            DataMessage::DataEnd { to, from, .. } => {
                self.deliver_control(to, Delivery::DataEnd { from })
            }
            DataMessage::End { to, from, .. } => self.deliver_control(to, Delivery::End { from }),
            DataMessage::Credit {
                to, link, batches, ..
            } => {
                let Some(target) = plan
                    .tasks
                    .get(to.0 as usize)
                    .and_then(|t| t.links.get(link as usize))
                    .map(|l| l.target)
                else {
                    return reject("a credit for a link the plan does not have");
                };
                if !self.runs(to) {
                    return;
                }
                // Through the relay that sent the batches, which counts what is in flight.
                match self.relay(target) {
                    Ok(relay) => relay.addr.do_send(CreditBack {
                        from: to,
                        link,
                        batches,
                    }),
                    Err(e) => tracing::warn!(error = %e, "credit dropped"),
                }
            }
            DataMessage::Acks { to, ops, .. } => self.deliver_acks(to, ops),
            DataMessage::Verdicts { to, verdicts, .. } => {
                if let Some(v) = shared.locals.get(&to).and_then(|l| l.verdicts.clone()) {
                    v.do_send(Verdicts(verdicts));
                }
            }
            DataMessage::TreesLost { .. } => shared.trees_lost("a peer lost batches"),
            DataMessage::Leader {
                task, node, term, ..
            } => {
                if !shared.replicated.contains(&task) {
                    return reject("a leader for a task that is not replicated");
                }
                shared.leader_is(task, term, node);
            }
            DataMessage::Checkpoint { message, .. } => {
                if shared.checkpoint_interval.is_none() {
                    return reject("a checkpoint message for a run that takes none");
                }
                match message {
                    CheckpointMessage::Trigger { .. } | CheckpointMessage::Done { .. } => {
                        shared.tell_spouts(&message)
                    }
                    other => self.events.do_send(FromNode(other)),
                }
            }
        }
    }

    /// Delivers ack operations to an acker here, or keeps them for one that has not started
    /// here yet.
    fn deliver_acks(&self, to: TaskId, ops: Vec<AckMsg>) {
        let local = || self.shared.locals.get(&to).and_then(|l| l.acks.clone());
        // Without the lock while the acker is here (the ledger takes operations in any
        // order, so these may pass stashed ones).
        if let Some(a) = local() {
            return a.do_send(AckBatch(ops));
        }
        if !self.shared.plan.ackers.iter().any(|(a, _)| *a == to) {
            return;
        }
        let Ok(_order) = self.stash.lock() else {
            return;
        };
        if let Some(a) = local() {
            return a.do_send(AckBatch(ops));
        }
        if let Ok(mut stash) = self.ack_stash.lock() {
            let kept = stash.entry(to).or_default();
            if kept.len() + ops.len() <= MAX_STASHED_ACKS {
                kept.extend(ops);
            }
        }
    }

    /// Delivers a mark or end marker, or keeps it for a task that has not started here yet
    /// (the sender may know of the task's move before this node does).
    fn deliver_control(&self, to: TaskId, delivery: Delivery) {
        // Spouts take no deliveries; ids beyond the plan are not tasks.
        let takes_input = self
            .shared
            .plan
            .tasks
            .get(to.0 as usize)
            .is_some_and(|t| t.kind != tempest_dsl::ComponentKind::Spout);
        if !takes_input {
            return;
        }
        let Ok(mut stash) = self.stash.lock() else {
            return;
        };
        if let Some(d) = self.shared.locals.get(&to).and_then(|l| l.deliver.clone()) {
            d.do_send(Deliver(delivery));
            return;
        }
        let kept = stash.entry(to).or_default();
        // Only the latest watermark of a channel matters (a barrier is kept, and kept in its
        // place); end markers are bounded by the links.
        if let Delivery::Mark { from, input, mark } = &delivery {
            if !matches!(mark, tempest_dsl::engine::Mark::Barrier(_)) {
                kept.retain(|d| {
                    !matches!(d, Delivery::Mark { from: f, input: i, mark: m }
                        if f == from && i == input && !matches!(m, tempest_dsl::engine::Mark::Barrier(_)))
                });
            }
        }
        if kept.len() < MAX_STASHED {
            kept.push(delivery);
        }
    }

    /// Stops every task of the run on this node and waits for its threads; then stops its
    /// replicas (each logs its state's digest) and, for a run that ended (`discard`), exports
    /// their final states (where the node is told to) and deletes their files.
    pub(crate) fn stop(&self, discard: bool) {
        self.system.stop();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
        let groups = self
            .groups
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default();
        for g in &groups {
            g.stop(std::time::Duration::from_secs(2), discard);
        }
        if discard && !groups.is_empty() {
            let dir = run_dir(&self.host.data_dir, &self.shared.run);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "a finished run's replica files were not deleted");
                }
            }
        }
    }

    /// The groups whose replica here leads, with the nodes of their settled voters.
    pub(crate) fn led_voters(&self) -> Vec<(TaskId, Vec<NodeId>)> {
        let Ok(groups) = self.groups.lock() else {
            return Vec::new();
        };
        groups
            .iter()
            .filter_map(|g| Some((g.task, g.led_voters()?)))
            .collect()
    }

    /// Whether tasks run here that the assignment puts elsewhere (this node was declared down
    /// while it was alive). A replicated task runs on each of its replicas.
    pub(crate) fn runs_elsewhere(
        &self,
        assignment: &BTreeMap<TaskId, NodeId>,
        replicas: &BTreeMap<TaskId, Vec<NodeId>>,
    ) -> bool {
        let me = self.shared.me;
        self.shared.locals.iter().any(|l| {
            let replica_here = replicas.get(l.key()).is_some_and(|r| r.contains(&me));
            !replica_here && assignment.get(l.key()).is_some_and(|n| *n != me)
        })
    }
}

impl Drop for TopologyRun {
    fn drop(&mut self) {
        // Never leave the run's threads behind (its tasks would go on).
        self.system.stop();
    }
}
