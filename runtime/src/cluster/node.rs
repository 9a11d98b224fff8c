//! [`Node`]: one `tempest node` process: a transport endpoint, a manager replica when the node
//! is one of the first `managers` peers, and the loops that keep the cluster's membership:
//!
//! - **bootstrap** (manager nodes): once every manager peer answered and none has a log, the
//!   one with the lowest id initializes the manager group;
//! - **heartbeat** (every node): reports to the manager's leader and learns its tasks;
//! - **monitor** (the manager's leader): declares down a node silent for the node timeout,
//!   which moves its tasks (in the replicated state, by the pure scheduler).
//!
//! Any node answers clients: submissions are validated against this binary's [`Registry`],
//! and proposals and reads go to the manager's leader, wherever it is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::cluster::admin::{
    AdminError, AdminReply, AdminRequest, Heartbeat, HeartbeatReply, Identity, NodeView,
    TopologyView,
};
use crate::cluster::config::NodeConfig;
use crate::cluster::manager::{
    ManagerCommand, ManagerReply, ManagerState, NodeStatus, TopologyStatus,
};
use crate::cluster::registry::{Registry, TopologyArgs};
use crate::cluster::worker::{RUN_THREADS, Worker};
use crate::ids::{GroupId, MemberId, NodeId};
use crate::replication::{
    LogError, LogStore, RaftGroups, Replica, ReplicationError, SnapshotError, StateMachineStore,
};
use crate::transport::{
    Handler, Lane, PeerRole, Service, Transport, TransportConfig, TransportError, frame,
};
use tempest_dsl::TaskId;

/// How long a proposal or read keeps looking for the manager's leader.
const LEADER_DEADLINE: Duration = Duration::from_secs(5);
/// How long one request to another node may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory could not be created.
    #[error("could not create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The manager's log is unusable.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The manager's snapshot is unusable.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The manager's replica could not start.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    /// The transport could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Each replicated group's settled voters as its leader last reported them, and when: by
/// (topology, run seed, task).
type GroupVoters = BTreeMap<(String, u64, TaskId), (BTreeSet<NodeId>, Instant)>;

struct Shared {
    config: NodeConfig,
    registry: Arc<Registry>,
    transport: OnceLock<Transport>,
    groups: Arc<RaftGroups>,
    manager: OnceLock<Replica<ManagerState>>,
    /// Leader soft state: when each node last heartbeat.
    last_seen: Mutex<BTreeMap<NodeId, Instant>>,
    /// Leader soft state: each replicated group's settled voters as its leader last reported
    /// them, and when.
    group_voters: Mutex<GroupVoters>,
    /// Leader soft state: proposals about nodes in flight (not to repeat them every beat).
    proposing: Mutex<BTreeSet<NodeId>>,
    was_leader: AtomicBool,
    /// The manager leader's address, as last learned.
    leader_hint: Mutex<Option<String>>,
    /// The version of the manager state this node's tasks are from.
    tasks_version: AtomicU64,
    /// The tasks this node runs.
    worker: OnceLock<Worker>,
    /// This process's incarnation: the manager tells a restart from a node that stayed up.
    incarnation: u64,
    /// Wakes the heartbeat loop before its interval: the manager's leader changed the
    /// placements ([`Shared::announce`]), a run here became ready (its tasks started, or its
    /// last replicated task's leader became known), or a task here finished.
    wake: Arc<tokio::sync::Notify>,
}

/// A running node. Dropping it does not stop it: call [`Node::shutdown`].
pub struct Node {
    shared: Arc<Shared>,
    loops: Vec<JoinHandle<()>>,
}

struct NodeHandler(Arc<Shared>);

impl Handler for NodeHandler {
    fn request(
        &self,
        from: &PeerRole,
        service: Service,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let shared = Arc::clone(&self.0);
        match service {
            Service::Raft(group) => {
                if matches!(from, PeerRole::Client) {
                    return futures_util::future::ready(Err("clients take no part in Raft".into()))
                        .boxed();
                }
                shared.groups.handle(group, body)
            }
            Service::Admin => {
                let node = matches!(from, PeerRole::Node { .. });
                async move {
                    let reply = match frame::decode::<AdminRequest>(&body) {
                        // Proposals and raw state are for nodes: a client goes through the commands.
                        Ok(
                            AdminRequest::Propose(_)
                            | AdminRequest::ReadState
                            | AdminRequest::FetchCheckpoint { .. },
                        ) if !node => AdminReply::Error(AdminError::Refused(
                            "a node-to-node request from a client".into(),
                        )),
                        Ok(req) => shared.admin(req).await,
                        Err(e) => AdminReply::Error(AdminError::Internal(e.to_string())),
                    };
                    frame::encode(&reply).map_err(|e| e.to_string())
                }
                .boxed()
            }
            Service::Heartbeat if !matches!(from, PeerRole::Node { .. }) => {
                futures_util::future::ready(Err("heartbeats are for nodes".into())).boxed()
            }
            Service::Heartbeat => async move {
                let hb: Heartbeat = frame::decode(&body).map_err(|e| e.to_string())?;
                frame::encode(&shared.on_heartbeat(hb)).map_err(|e| e.to_string())
            }
            .boxed(),
            Service::Data => {
                futures_util::future::ready(Err("no data requests are served".into())).boxed()
            }
        }
    }

    fn oneway(&self, from: &PeerRole, service: Service, body: Vec<u8>) {
        match (service, from) {
            (Service::Data, PeerRole::Node { addr, .. }) => {
                if let Some(w) = self.0.worker.get() {
                    w.on_data(addr, &body);
                }
            }
            // The manager's leader: the placements changed, heartbeat now.
            (Service::Heartbeat, PeerRole::Node { .. }) => self.0.wake.notify_one(),
            _ => tracing::debug!(?service, bytes = body.len(), "one-way message ignored"),
        }
    }

    fn closed(&self, from: &PeerRole) {
        if let Some(transport) = self.0.transport.get() {
            self.0.groups.on_closed(transport, from);
        }
    }
}

impl Node {
    /// Starts a node: binds its address, opens its manager replica if it is a manager node,
    /// and starts its loops (on the current tokio runtime).
    pub async fn start(config: NodeConfig, registry: Arc<Registry>) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let shared = Arc::new(Shared {
            config,
            registry,
            transport: OnceLock::new(),
            groups: Arc::default(),
            manager: OnceLock::new(),
            last_seen: Mutex::default(),
            group_voters: Mutex::default(),
            proposing: Mutex::default(),
            was_leader: AtomicBool::new(false),
            leader_hint: Mutex::default(),
            tasks_version: AtomicU64::new(0),
            worker: OnceLock::new(),
            incarnation: rand::random::<u64>() | 1,
            wake: Arc::new(tokio::sync::Notify::new()),
        });
        let c = &shared.config;
        let role = PeerRole::Node {
            id: c.id,
            addr: c.advertise.clone(),
        };
        let mut tc = TransportConfig::new(role, c.id, c.secret.clone());
        tc.max_frame_bytes = c.max_frame_bytes;
        tc.routes = c.routes.clone();
        let transport =
            Transport::bind(&c.listen, tc, Arc::new(NodeHandler(Arc::clone(&shared)))).await?;
        let _ = shared.transport.set(transport.clone());
        let _ = shared.worker.set(Worker::new(
            c.id,
            Arc::clone(&shared.registry),
            crate::cluster::worker::ReplicaHost {
                transport: transport.clone(),
                groups: Arc::clone(&shared.groups),
                runtime: tokio::runtime::Handle::current(),
                data_dir: c.data_dir.clone(),
                timings: c.group_raft,
                export_dir: c.state_export_dir.clone(),
                report_now: Arc::clone(&shared.wake),
            },
        ));
        if c.is_manager() {
            let dir = c.data_dir.join("manager");
            let log = LogStore::open(&dir)?;
            let state = StateMachineStore::open(ManagerState::default(), &dir)?;
            let replica = Replica::start(
                MemberId::founding(c.id),
                GroupId::MANAGER,
                c.raft,
                log,
                state,
                transport,
                Arc::clone(&shared.groups),
                true,
            )
            .await?;
            let _ = shared.manager.set(replica);
        }
        let span = tracing::info_span!("node", node = %c.id);
        tracing::info!(parent: &span, listen = %c.listen, manager = c.is_manager(), "node started");
        let mut loops = Vec::new();
        if c.is_manager() {
            loops.push(tokio::spawn(
                Arc::clone(&shared).bootstrap().instrument(span.clone()),
            ));
            loops.push(tokio::spawn(
                Arc::clone(&shared).monitor().instrument(span.clone()),
            ));
            loops.push(tokio::spawn(
                Arc::clone(&shared).announce().instrument(span.clone()),
            ));
        }
        loops.push(tokio::spawn(
            Arc::clone(&shared).heartbeat().instrument(span),
        ));
        Ok(Node { shared, loops })
    }

    /// The address the node listens on.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.shared.transport.get().and_then(Transport::local_addr)
    }

    /// Stops the loops, the manager replica and the transport.
    pub async fn shutdown(self) {
        for l in &self.loops {
            l.abort();
        }
        if let Some(w) = self.shared.worker.get() {
            w.shutdown();
        }
        if let Some(m) = self.shared.manager.get() {
            m.shutdown().await;
        }
        if let Some(t) = self.shared.transport.get() {
            t.shutdown();
        }
        tracing::info!(node = %self.shared.config.id, "node stopped");
    }
}

impl Shared {
    fn transport(&self) -> &Transport {
        self.transport
            .get()
            .expect("set before any loop or request runs")
    }

    fn identity(&self) -> Identity {
        let initialized = self.manager.get().is_some_and(|m| !m.members().is_empty());
        Identity {
            node: self.config.id,
            addr: self.config.advertise.clone(),
            manager: self.manager.get().is_some(),
            initialized,
        }
    }

    async fn rpc<Resp: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        service: Service,
        body: &impl serde::Serialize,
    ) -> Result<Resp, String> {
        let body = frame::encode(body).map_err(|e| e.to_string())?;
        let answer = self
            .transport()
            .request(addr, Lane::Control, service, body, RPC_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        frame::decode(&answer).map_err(|e| e.to_string())
    }

    /// Manager nodes: initializes the manager group once every manager peer answered and none
    /// has a log yet, from the one with the lowest id.
    async fn bootstrap(self: Arc<Self>) {
        loop {
            if self.identity().initialized {
                return;
            }
            let mut ids = BTreeMap::new();
            let mut any_initialized = false;
            for addr in self.config.manager_addrs() {
                if *addr == self.config.advertise {
                    ids.insert(self.config.id, addr.clone());
                    continue;
                }
                if let Ok(AdminReply::Identity(i)) = self
                    .rpc::<AdminReply>(addr, Service::Admin, &AdminRequest::Identify)
                    .await
                {
                    any_initialized |= i.initialized;
                    ids.insert(i.node, addr.clone());
                }
            }
            if any_initialized {
                // The group exists; our replica will hear from its leader.
                return;
            }
            let complete = ids.len() == self.config.managers;
            if complete && ids.keys().next() == Some(&self.config.id) {
                if let Some(m) = self.manager.get() {
                    match m.initialize(&ids).await {
                        Ok(()) => {
                            tracing::info!(members = ?ids, "manager group initialized");
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "manager initialization failed"),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every node: reports to the manager's leader and learns its tasks.
    async fn heartbeat(self: Arc<Self>) {
        let mut next_seed = 0usize;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.heartbeat) => {}
                () = self.wake.notified() => {}
            }
            let hb = Heartbeat {
                node: self.config.id,
                addr: self.config.advertise.clone(),
                finished: self.worker.get().map(Worker::finished).unwrap_or_default(),
                ready: self.worker.get().map(Worker::ready).unwrap_or_default(),
                incarnation: self.incarnation,
                voters: self
                    .worker
                    .get()
                    .map(Worker::led_voters)
                    .unwrap_or_default(),
                checkpoints: self
                    .worker
                    .get()
                    .map(Worker::checkpoints)
                    .unwrap_or_default(),
                failed: self
                    .worker
                    .get()
                    .map(Worker::failed_runs)
                    .unwrap_or_default(),
                positions: self.worker.get().map(Worker::positions).unwrap_or_default(),
            };
            let reply = if self.is_manager_leader() {
                self.on_heartbeat(hb.clone())
            } else {
                let seeds = self.config.manager_addrs();
                let addr = self.leader_addr().unwrap_or_else(|| {
                    next_seed = (next_seed + 1) % seeds.len();
                    seeds[next_seed].clone()
                });
                match self
                    .rpc::<HeartbeatReply>(&addr, Service::Heartbeat, &hb)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "heartbeat failed");
                        self.set_hint(None);
                        continue;
                    }
                }
            };
            match reply {
                HeartbeatReply::Tasks {
                    version,
                    placements,
                    nodes,
                } => {
                    // Only a newer state: a new leader may not have applied all it has yet.
                    if self.tasks_version.fetch_max(version, Ordering::Relaxed) < version {
                        tracing::debug!(
                            version,
                            topologies = placements.len(),
                            "assignment changed"
                        );
                        // A run restarting from a checkpoint needs its file here first.
                        self.fetch_checkpoints(&placements, &nodes).await;
                        let worker = self.worker.get();
                        // The runs ready here, whatever state version they started.
                        let ready_runs = || -> BTreeSet<(String, u64, u32)> {
                            let ready = worker.map(Worker::ready).unwrap_or_default();
                            ready.into_iter().map(|(n, s, g, _)| (n, s, g)).collect()
                        };
                        let before = ready_runs();
                        let complete = worker.is_none_or(|w| w.apply(&placements, &nodes, version));
                        if !complete {
                            // Try again at the next heartbeat.
                            self.tasks_version.store(0, Ordering::Relaxed);
                        } else if !ready_runs().is_subset(&before) {
                            // A run became ready here: report it at once (the manager
                            // activates a run when every node of it is). Only then: versions
                            // also move with every exactly-once position committed, and a wake
                            // for those would make heartbeats wake themselves.
                            self.wake.notify_one();
                        }
                    }
                }
                HeartbeatReply::NotLeader(hint) => self.set_hint(hint),
            }
        }
    }

    /// The manager's leader: when the placements change (a submission, a node down, tasks
    /// moved), tells every node to heartbeat now (a one-way [`Service::Heartbeat`]) rather
    /// than at its next interval, so tasks start, move and activate in round trips, not
    /// heartbeat intervals.
    async fn announce(self: Arc<Self>) {
        let Some(m) = self.manager.get() else { return };
        let mut changes = m.watch();
        let mut announced = None;
        while changes.changed().await.is_some() {
            if !m.is_leader() {
                announced = None;
                continue;
            }
            // Only what moves tasks: the committed positions change with every heartbeat of
            // an exactly-once run, and a wake for them would make heartbeats wake themselves.
            let (placements, addrs) = m.read(|s| {
                let mut p = s.placements();
                p.iter_mut().for_each(|p| p.positions.clear());
                (p, s.addrs())
            });
            if announced.as_ref() == Some(&placements) {
                continue;
            }
            announced = Some(placements);
            self.wake.notify_one();
            let Some(transport) = self.transport.get() else {
                continue;
            };
            for (node, addr) in addrs {
                if node != self.config.id {
                    let sent = transport
                        .send(&addr, Lane::Control, Service::Heartbeat, Vec::new())
                        .await;
                    if let Err(e) = sent {
                        tracing::debug!(%node, error = %e, "no wake for a node");
                    }
                }
            }
        }
    }

    /// The manager's leader: declares silent nodes down.
    async fn monitor(self: Arc<Self>) {
        // The leader this node followed last: when it takes over, that one has been silent for
        // at least an election timeout already.
        let mut previous_leader = None;
        loop {
            tokio::time::sleep(self.config.heartbeat).await;
            let Some(m) = self.manager.get() else { return };
            if !m.is_leader() {
                self.was_leader.store(false, Ordering::Relaxed);
                previous_leader = m.status().leader.or(previous_leader);
                continue;
            }
            let state = m.read(Clone::clone);
            if !self.was_leader.swap(true, Ordering::Relaxed) {
                // A new leader gives every node a full timeout before judging it, but the old
                // leader's silence started an election ago: openraft's followers wait out the
                // leader lease (election max) plus a random election timeout (at least min).
                let now = Instant::now();
                let election = Duration::from_millis(
                    self.config.raft.election_min_ms + self.config.raft.election_max_ms,
                );
                if let Ok(mut seen) = self.last_seen.lock() {
                    for n in state.nodes.keys() {
                        let since = if Some(*n) == previous_leader && *n != self.config.id {
                            now.checked_sub(election).unwrap_or(now)
                        } else {
                            now
                        };
                        seen.insert(*n, since);
                    }
                }
                tracing::info!(term = m.status().term, "leading the manager");
            }
            let silent: Vec<NodeId> = {
                let Ok(seen) = self.last_seen.lock() else {
                    continue;
                };
                state
                    .nodes
                    .iter()
                    .filter(|(_, r)| r.status == NodeStatus::Up)
                    .filter(|(n, _)| {
                        seen.get(n)
                            .is_some_and(|t| t.elapsed() > self.config.node_timeout)
                    })
                    .map(|(n, _)| *n)
                    .collect()
            };
            // A node this leader has not heard of yet (it joined since it took over) gets a
            // full timeout from now.
            if let Ok(mut seen) = self.last_seen.lock() {
                let now = Instant::now();
                for n in state.nodes.keys() {
                    seen.entry(*n).or_insert(now);
                }
            }
            for node in silent {
                tracing::warn!(%node, "node silent for the node timeout: declared down");
                self.propose_about(node, ManagerCommand::Down { node });
            }
            // One node's replicas at a time, and none while another proposal about a node is
            // in flight: the next waits for the groups' leaders to report the new voters.
            let busy = self.proposing.lock().map_or(true, |p| !p.is_empty());
            if let Some((node, tasks)) = (!busy).then(|| self.next_replacement(&state)).flatten() {
                tracing::warn!(%node, groups = tasks.len(), "node down for the replace timeout: its replicas move to other nodes");
                self.propose_about(node, ManagerCommand::Replace { node, tasks });
            }
        }
    }

    /// The next node down for the replace timeout with replicas that may move now, and those
    /// (topology, task): a group's only while its leader reports settled voters that are the
    /// ones assigned (a replacement still in flight, or voters the manager does not know of,
    /// wait).
    fn next_replacement(&self, state: &ManagerState) -> Option<(NodeId, Vec<(String, TaskId)>)> {
        let (Ok(seen), Ok(voters)) = (self.last_seen.lock(), self.group_voters.lock()) else {
            return None;
        };
        let settled = |name: &String, task: &TaskId| {
            let Some(t) = state.topologies.get(name) else {
                return false;
            };
            let assigned: BTreeSet<NodeId> = t
                .replicas
                .get(task)
                .map(|r| r.iter().copied().collect())
                .unwrap_or_default();
            voters
                .get(&(name.clone(), t.seed, *task))
                .is_some_and(|(v, at)| *v == assigned && at.elapsed() < 10 * self.config.heartbeat)
        };
        state
            .nodes
            .iter()
            .filter(|(n, r)| {
                r.status == NodeStatus::Down
                    && seen
                        .get(n)
                        .is_some_and(|t| t.elapsed() > self.config.replace_after)
            })
            .find_map(|(n, _)| {
                let ready: Vec<(String, TaskId)> = state
                    .replacements(*n)
                    .into_iter()
                    .filter(|(name, task, _)| settled(name, task))
                    .map(|(name, task, _)| (name, task))
                    .collect();
                (!ready.is_empty()).then_some((*n, ready))
            })
    }

    /// Proposes a command about `node` in the background, once at a time per node.
    fn propose_about(self: &Arc<Self>, node: NodeId, cmd: ManagerCommand) {
        if let Ok(mut p) = self.proposing.lock() {
            if !p.insert(node) {
                return;
            }
        }
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = shared.propose(cmd).await {
                tracing::warn!(%node, error = %e, "proposal failed");
            }
            if let Ok(mut p) = shared.proposing.lock() {
                p.remove(&node);
            }
        });
    }

    fn is_manager_leader(&self) -> bool {
        self.manager.get().is_some_and(|m| m.is_leader())
    }

    fn set_hint(&self, hint: Option<String>) {
        if let Ok(mut h) = self.leader_hint.lock() {
            *h = hint;
        }
    }

    fn leader_addr(&self) -> Option<String> {
        if let Some((_, addr)) = self.manager.get().and_then(|m| m.leader()) {
            return Some(addr);
        }
        self.leader_hint.lock().ok()?.clone()
    }

    /// The leader's side of a heartbeat.
    fn on_heartbeat(self: &Arc<Self>, hb: Heartbeat) -> HeartbeatReply {
        let Some(m) = self.manager.get().filter(|m| m.is_leader()) else {
            return HeartbeatReply::NotLeader(self.leader_addr());
        };
        if let Ok(mut seen) = self.last_seen.lock() {
            seen.insert(hb.node, Instant::now());
        }
        if let Ok(mut v) = self.group_voters.lock() {
            for (name, seed, task, nodes) in &hb.voters {
                v.insert(
                    (name.clone(), *seed, *task),
                    (nodes.iter().copied().collect(), Instant::now()),
                );
            }
        }
        let state = m.read(Clone::clone);
        let known = state.nodes.get(&hb.node).is_some_and(|r| {
            r.status == NodeStatus::Up && r.addr == hb.addr && r.incarnation == hb.incarnation
        });
        if !known {
            tracing::info!(node = %hb.node, addr = %hb.addr, "node joins");
            self.propose_about(
                hb.node,
                ManagerCommand::Join {
                    node: hb.node,
                    addr: hb.addr,
                    incarnation: hb.incarnation,
                },
            );
            // No tasks until the state knows this process: a restarted node's old tasks are
            // about to move, and it must not start them first.
            return HeartbeatReply::Tasks {
                version: 0,
                placements: Vec::new(),
                nodes: state.addrs(),
            };
        } else {
            // Runs this node started that the state does not know it started.
            for (name, seed, generation, version) in hb.ready {
                if state.topologies.get(&name).is_some_and(|t| {
                    t.seed == seed
                        && t.status == TopologyStatus::Running
                        && t.generation == generation
                        && !t.ready.contains(&hb.node)
                        && version >= t.assigned_at
                }) {
                    self.propose_about(
                        hb.node,
                        ManagerCommand::Ready {
                            name,
                            seed,
                            node: hb.node,
                            version,
                            generation,
                        },
                    );
                    return HeartbeatReply::Tasks {
                        version: state.version,
                        placements: state.placements(),
                        nodes: state.addrs(),
                    };
                }
            }
            // Finished tasks the state does not record yet.
            for (name, seed, generation, tasks) in hb.finished {
                // Only tasks assigned to the reporting node count (a replicated task is on
                // each of its replicas; its leader, wherever it is, finishes it).
                let new: Vec<_> = match state.topologies.get(&name) {
                    Some(t)
                        if t.seed == seed
                            && t.generation == generation
                            && t.status == TopologyStatus::Running =>
                    {
                        tasks
                            .into_iter()
                            .filter(|task| {
                                let here = t.assignment.get(task) == Some(&hb.node)
                                    || t.replicas.get(task).is_some_and(|r| r.contains(&hb.node));
                                !t.finished.contains(task) && here
                            })
                            .collect()
                    }
                    _ => continue,
                };
                if !new.is_empty() {
                    self.propose_about(
                        hb.node,
                        ManagerCommand::Finished {
                            name,
                            seed,
                            generation,
                            tasks: new,
                        },
                    );
                    break;
                }
            }
            // Checkpoints completed (stored on two nodes) first: a rollback asked for in the
            // same beat then goes back to the newest.
            for (name, seed, generation, id) in hb.checkpoints {
                let newer = state.topologies.get(&name).is_some_and(|t| {
                    t.seed == seed
                        && t.generation == generation
                        && t.status == TopologyStatus::Running
                        && t.checkpoint.is_none_or(|c| c < id)
                });
                if newer {
                    self.propose_about(
                        hb.node,
                        ManagerCommand::Checkpointed {
                            name,
                            seed,
                            generation,
                            id,
                        },
                    );
                    break;
                }
            }
            // Committed positions that moved on, of every run, in one command.
            let moved: Vec<(String, u64, TaskId, u64)> = hb
                .positions
                .into_iter()
                .filter(|(name, seed, task, position)| {
                    state.topologies.get(name).is_some_and(|t| {
                        t.seed == *seed
                            && t.status == TopologyStatus::Running
                            && t.positions.get(task).is_none_or(|p| p < position)
                    })
                })
                .collect();
            if !moved.is_empty() {
                self.propose_about(hb.node, ManagerCommand::Committed { positions: moved });
            }
            // Checkpointed runs whose task failed: they roll back.
            for (name, seed, generation) in hb.failed {
                let current = state.topologies.get(&name).is_some_and(|t| {
                    t.seed == seed
                        && t.generation == generation
                        && t.checkpointed
                        && t.status == TopologyStatus::Running
                });
                if current {
                    tracing::warn!(topology = %name, node = %hb.node, "a task failed: rolling the run back");
                    self.propose_about(
                        hb.node,
                        ManagerCommand::RollBack {
                            name,
                            seed,
                            generation,
                        },
                    );
                    return HeartbeatReply::Tasks {
                        version: state.version,
                        placements: state.placements(),
                        nodes: state.addrs(),
                    };
                }
            }
        }
        HeartbeatReply::Tasks {
            version: state.version,
            placements: state.placements(),
            nodes: state.addrs(),
        }
    }

    /// Fetches, from the other nodes, the checkpoint each run with tasks here restarts from,
    /// where this node does not store it. One that cannot be fetched leaves the run unstarted
    /// here (the next heartbeat tries again).
    async fn fetch_checkpoints(
        &self,
        placements: &[crate::cluster::admin::Placement],
        nodes: &BTreeMap<NodeId, String>,
    ) {
        let Some(worker) = self.worker.get() else {
            return;
        };
        for (name, seed, id) in worker.missing_checkpoints(placements) {
            let request = AdminRequest::FetchCheckpoint {
                name: name.clone(),
                seed,
                id,
            };
            let mut found = false;
            for (node, addr) in nodes.iter().filter(|(n, _)| **n != self.config.id) {
                match self.rpc::<AdminReply>(addr, Service::Admin, &request).await {
                    Ok(AdminReply::Checkpoint(Some(bytes))) => {
                        match worker.store_checkpoint(&name, seed, id, &bytes) {
                            Ok(()) => {
                                tracing::info!(topology = %name, checkpoint = id, from = %node, "checkpoint fetched");
                                found = true;
                                break;
                            }
                            Err(why) => {
                                tracing::warn!(topology = %name, checkpoint = id, from = %node, %why, "a fetched checkpoint was refused");
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(topology = %name, from = %node, error = %e, "checkpoint fetch failed");
                    }
                }
            }
            if !found {
                tracing::warn!(topology = %name, checkpoint = id, "no node could give the checkpoint to restore from");
            }
        }
    }

    /// Applies `cmd` through the manager's leader, wherever it is, retrying through elections.
    async fn propose(&self, cmd: ManagerCommand) -> Result<ManagerReply, AdminError> {
        let bytes = frame::encode(&cmd).map_err(|e| AdminError::Internal(e.to_string()))?;
        let request = AdminRequest::Propose(cmd);
        let answer = self
            .at_leader(&request, |m| {
                let bytes = bytes.clone();
                async move {
                    match m.write(bytes).await {
                        Ok(r) => Ok(AdminReply::Applied(r)),
                        Err(ReplicationError::NotLeader { leader, .. }) => {
                            Err(AdminError::NotLeader(leader.map(|(_, a)| a)))
                        }
                        Err(e) => Err(AdminError::Internal(e.to_string())),
                    }
                }
                .boxed()
            })
            .await?;
        match answer {
            AdminReply::Applied(r) => Ok(r),
            other => Err(AdminError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// The manager leader's applied state and term.
    async fn read_state(&self) -> Result<(ManagerState, u64), AdminError> {
        let answer = self
            .at_leader(&AdminRequest::ReadState, |m| {
                let state = m.read(frame::encode);
                let term = m.status().term;
                async move {
                    state
                        .map(|s| AdminReply::State { state: s, term })
                        .map_err(|e| AdminError::Internal(e.to_string()))
                }
                .boxed()
            })
            .await?;
        match answer {
            AdminReply::State { state, term } => frame::decode(&state)
                .map(|s| (s, term))
                .map_err(|e| AdminError::Internal(e.to_string())),
            other => Err(AdminError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// Runs `local` if this node leads the manager, or sends `request` to the leader; follows
    /// leader hints and retries through elections until [`LEADER_DEADLINE`].
    async fn at_leader<'a>(
        &'a self,
        request: &AdminRequest,
        local: impl Fn(&'a Replica<ManagerState>) -> BoxFuture<'a, Result<AdminReply, AdminError>>,
    ) -> Result<AdminReply, AdminError> {
        let end = Instant::now() + LEADER_DEADLINE;
        let seeds = self.config.manager_addrs();
        let mut next_seed = 0usize;
        loop {
            if Instant::now() > end {
                return Err(AdminError::NoLeader);
            }
            if let Some(m) = self.manager.get().filter(|m| m.is_leader()) {
                match local(m).await {
                    Err(AdminError::NotLeader(_)) => {}
                    other => return other,
                }
            } else {
                let addr = self.leader_addr().unwrap_or_else(|| {
                    next_seed = (next_seed + 1) % seeds.len();
                    seeds[next_seed].clone()
                });
                if addr != self.config.advertise {
                    match self.rpc::<AdminReply>(&addr, Service::Admin, request).await {
                        Ok(AdminReply::Error(AdminError::NotLeader(hint))) => self.set_hint(hint),
                        Ok(AdminReply::Error(AdminError::NoLeader)) => self.set_hint(None),
                        Ok(reply) => return Ok(reply),
                        Err(e) => {
                            tracing::debug!(%addr, error = %e, "manager peer unreachable");
                            self.set_hint(None);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Answers an admin request.
    async fn admin(self: &Arc<Self>, req: AdminRequest) -> AdminReply {
        let result = match req {
            AdminRequest::Identify => Ok(AdminReply::Identity(self.identity())),
            AdminRequest::Propose(cmd) => match self.manager.get().filter(|m| m.is_leader()) {
                None => Err(AdminError::NotLeader(self.leader_addr())),
                Some(_) => self.propose(cmd).await.map(AdminReply::Applied),
            },
            AdminRequest::ReadState => match self.manager.get().filter(|m| m.is_leader()) {
                None => Err(AdminError::NotLeader(self.leader_addr())),
                Some(m) => m
                    .read(frame::encode)
                    .map(|state| AdminReply::State {
                        state,
                        term: m.status().term,
                    })
                    .map_err(|e| AdminError::Internal(e.to_string())),
            },
            AdminRequest::Submit {
                topology,
                name,
                args,
            } => self.submit(topology, name, args).await,
            AdminRequest::Kill { name } => {
                match self
                    .propose(ManagerCommand::Kill { name: name.clone() })
                    .await
                {
                    Ok(ManagerReply::Refused(why)) if why.starts_with("no topology") => {
                        Err(AdminError::NotFound(name))
                    }
                    Ok(ManagerReply::Refused(why)) => Err(AdminError::Refused(why)),
                    Ok(_) => Ok(AdminReply::Killed),
                    Err(e) => Err(e),
                }
            }
            AdminRequest::Status { name } => self.status(name).await,
            AdminRequest::Nodes => self.nodes().await,
            AdminRequest::FetchCheckpoint { name, seed, id } => Ok(AdminReply::Checkpoint(
                self.worker
                    .get()
                    .and_then(|w| w.checkpoint_file(&name, seed, id)),
            )),
        };
        result.unwrap_or_else(AdminReply::Error)
    }

    async fn submit(
        &self,
        topology: String,
        name: String,
        args: BTreeMap<String, String>,
    ) -> Result<AdminReply, AdminError> {
        crate::cluster::manager::check_name(&name).map_err(AdminError::BadTopology)?;
        let built = self
            .registry
            .build(&topology, &TopologyArgs(args.clone()))
            .map_err(|e| AdminError::BadTopology(e.to_string()))?;
        let checkpointed = built.ir().config.checkpoint_interval.is_some();
        if checkpointed {
            // A rollback replays what followed the checkpoint: a replicated bolt, which does
            // not roll back, would count it again.
            let replicated: Vec<&str> = built
                .ir()
                .components
                .iter()
                .filter(|c| c.stateful.is_some_and(|s| s.replicas > 1))
                .map(|c| c.name.as_str())
                .collect();
            if !replicated.is_empty() {
                return Err(AdminError::BadTopology(format!(
                    "a topology that takes checkpoints recovers its stateful bolts from them, \
                     but {} {} replicated: give {} `.replicas(1)`, or drop checkpoint_interval \
                     and keep them replicated",
                    replicated.join(", "),
                    if replicated.len() == 1 { "is" } else { "are" },
                    if replicated.len() == 1 { "it" } else { "them" },
                )));
            }
        }
        let components = built
            .ir()
            .components
            .iter()
            .map(|c| (c.name.clone(), c.parallelism))
            .collect();
        let plan = crate::plan::PhysicalPlan::new(built.ir(), RUN_THREADS);
        let tasks = (plan.tasks.len() + plan.ackers.len()) as u32;
        // A checkpointed run's stateful tasks are not Raft groups: they roll back.
        let replicated = plan
            .tasks
            .iter()
            .filter(|_| !checkpointed)
            .filter_map(|t| {
                let state = built.ir().components.get(t.component)?.stateful?;
                Some((t.id, state.replicas))
            })
            .collect();
        match self
            .propose(ManagerCommand::Submit {
                name,
                topology,
                args,
                components,
                tasks,
                seed: rand::random(),
                replicated,
                checkpointed,
            })
            .await?
        {
            ManagerReply::Submitted { tasks, nodes } => Ok(AdminReply::Submitted { tasks, nodes }),
            ManagerReply::Refused(why) => Err(AdminError::Refused(why)),
            ManagerReply::Done => Err(AdminError::Internal("no placement returned".into())),
        }
    }

    async fn status(&self, name: Option<String>) -> Result<AdminReply, AdminError> {
        let (state, _) = self.read_state().await?;
        if let Some(n) = &name {
            if !state.topologies.contains_key(n) {
                return Err(AdminError::NotFound(n.clone()));
            }
        }
        let views = state
            .topologies
            .iter()
            .filter(|(n, _)| name.as_ref().is_none_or(|want| want == *n))
            .map(|(n, t)| {
                let mut nodes = BTreeMap::new();
                for node in t.assignment.values() {
                    *nodes.entry(*node).or_insert(0u32) += 1;
                }
                TopologyView {
                    name: n.clone(),
                    topology: t.topology.clone(),
                    status: t.status,
                    tasks: t.components.iter().map(|(_, p)| *p).sum(),
                    nodes,
                    reschedules: t.reschedules,
                    checkpointed: t.checkpointed,
                    generation: t.generation,
                    checkpoint: t.checkpoint,
                    active: t.active,
                    committed: t.positions.clone(),
                    args: t.args.clone(),
                }
            })
            .collect();
        Ok(AdminReply::Status(views))
    }

    async fn nodes(&self) -> Result<AdminReply, AdminError> {
        let (state, term) = self.read_state().await?;
        let leader = self
            .manager
            .get()
            .and_then(|m| m.leader())
            .map(|(n, _)| n)
            .or_else(|| {
                let hint = self.leader_hint.lock().ok()?.clone()?;
                state
                    .nodes
                    .iter()
                    .find(|(_, r)| r.addr == hint)
                    .map(|(n, _)| *n)
            });
        let views = state
            .nodes
            .iter()
            .map(|(n, r)| NodeView {
                node: *n,
                addr: r.addr.clone(),
                status: r.status,
                tasks: state.tasks_of(*n).len(),
                leader: leader == Some(*n),
            })
            .collect();
        Ok(AdminReply::Nodes { nodes: views, term })
    }
}
