//! Replicated tasks on this node: for every task of a stateful bolt placed here, one replica of
//! the task's Raft group (all groups share the node's transport, their messages tagged with the
//! group id), the [`Propose`] its bolt actor sends its commands through, and a watcher that
//! tells the run (and, from the leader, every node) who leads the group, so senders follow it.
//!
//! ```text
//!   upstream ──► relay ──► leader's bolt actor ──Propose──► Raft group (R replicas)
//!                                   ▲                           │ apply on every replica
//!                                   └──── Committed(outputs) ◄──┘ (only the leader's answer)
//! ```

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::FutureExt;
use sha2::Digest;
use tempest_dsl::engine::{Answer, StateMachine};
use tempest_dsl::{StateStorage, TaskId};
use tokio_util::sync::CancellationToken;

use crate::cluster::worker::wire::RunId;
use crate::executor::Propose;
use crate::ids::{GroupId, MemberId, NodeId};
use crate::replication::membership::{Admission, JoinRequest};
use crate::replication::state_machine;
use crate::replication::{
    EntryContext, LogStore, RaftGroups, RaftTimings, Replica, ReplicaStatus, ReplicatedState, Role,
    StateMachineStore, request_join,
};
use crate::transport::Transport;

/// How long a proposal may wait for its commit before its inputs fail (and replay).
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node gives its runs to host Raft groups.
#[derive(Clone)]
pub(crate) struct ReplicaHost {
    pub(crate) transport: Transport,
    pub(crate) groups: Arc<RaftGroups>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) data_dir: PathBuf,
    pub(crate) timings: RaftTimings,
    /// Where replicas write their final state when their run ends (node config
    /// `state_export_dir`).
    pub(crate) export_dir: Option<PathBuf>,
    /// Wakes the node's heartbeat: what the manager waits for changed here (a task
    /// finished, a run became ready), so it hears of it in a round trip rather than at the
    /// next interval.
    pub(crate) report_now: Arc<tokio::sync::Notify>,
}

/// The group of task `task` of run `run`: the same number on every node, never the manager's.
pub(crate) fn group_id(run: &RunId, task: TaskId) -> GroupId {
    let mut h = rustc_hash::FxHasher::default();
    run.name.hash(&mut h);
    run.seed.hash(&mut h);
    task.0.hash(&mut h);
    GroupId(h.finish() | 1 << 63)
}

/// A task's state machine behind the replication's trait.
struct TaskState {
    machine: Box<dyn StateMachine>,
    /// This replica: it answers only the entries it proposed.
    me: MemberId,
}

impl ReplicatedState for TaskState {
    type Answer = Result<Answer, String>;
    fn apply(&mut self, command: &[u8], at: EntryContext) -> Result<Answer, String> {
        self.machine
            .apply(command, at.index, at.leader == self.me.0)
            .map_err(|e| {
                // The same bytes fail the same way on every replica; the proposer's inputs
                // fail and replay.
                tracing::warn!(index = at.index, error = %e, "a command that does not apply");
                e.to_string()
            })
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        self.machine.snapshot().map_err(|e| e.to_string())
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.machine.restore(bytes).map_err(|e| e.to_string())
    }
}

/// Counters of one group's proposals from this node.
#[derive(Default)]
pub(crate) struct GroupCounters {
    /// Proposals sent (Raft entries proposed here).
    pub(crate) proposals: AtomicU64,
    /// Bytes proposed.
    pub(crate) proposed_bytes: AtomicU64,
    /// Proposals refused (not the leader, no quorum, stopped).
    pub(crate) refused: AtomicU64,
    /// Leader changes seen.
    pub(crate) leader_changes: AtomicU64,
    /// Times this node's replica found its stored state damaged, set it aside and rejoined
    /// under a new identity.
    pub(crate) repairs: AtomicU64,
}

/// How long a replica that rejoins a running group (restarted, or its node back) waits before
/// it may campaign (it votes meanwhile). openraft 0.9 has no pre-vote: a rejoining replica
/// whose election timeout fires before the leader's replication to it resumes (after the
/// leader's backoff, 500 ms, and the transport's redial backoff, up to 2 s) would depose a
/// healthy leader. A whole group restarting at once waits this long before electing.
const REJOIN_GRACE: Duration = Duration::from_millis(2500);

/// How long a proposal waits on a replica that knows no leader (an election is on, or the
/// replica is cut off) before it is refused.
const LEADERLESS_HOLD: Duration = Duration::from_secs(1);

/// This node's replica of one replicated task.
pub(crate) struct ReplicatedTask {
    pub(crate) task: TaskId,
    pub(crate) group: GroupId,
    replica: Arc<OnceLock<Arc<Replica<TaskState>>>>,
    pub(crate) counters: Arc<GroupCounters>,
    stop: CancellationToken,
    host: ReplicaHost,
    /// The task that starts the replica and then watches it; it ends once `stop` is cancelled.
    started: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The file its final state goes to, if the node exports states.
    export: Option<PathBuf>,
}

/// Where a group learned its leader: the run's routing is told, and the leader tells every
/// node.
pub(crate) trait LeaderSink: Send + Sync + 'static {
    /// Group `task` is led by `leader` in `term` (as this node's replica sees it).
    fn leader_is(&self, task: TaskId, term: u64, leader: NodeId);
    /// This node leads `task`'s group in `term`: tell the other nodes.
    fn announce(&self, task: TaskId, term: u64);
}

impl ReplicatedTask {
    /// Starts this node's replica of `task`'s group (in the background: proposals fail until
    /// it is up). `members` are the group's replicas and their addresses; `initialize` makes
    /// this replica found the group (the first replica, on the run's first assignment only:
    /// a replica that restarts later rejoins through its peers); `founding_run` says the run
    /// is at its first assignment (otherwise a replica without its log recovers before it
    /// votes).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        host: &ReplicaHost,
        run: &RunId,
        me: NodeId,
        task: TaskId,
        machine: Box<dyn StateMachine>,
        storage: StateStorage,
        members: BTreeMap<NodeId, String>,
        initialize: bool,
        founding_run: bool,
        sink: Arc<dyn LeaderSink>,
    ) -> Self {
        let group = group_id(run, task);
        let slot: Arc<OnceLock<Arc<Replica<TaskState>>>> = Arc::default();
        let stop = CancellationToken::new();
        let counters = Arc::new(GroupCounters::default());
        let dir = run_dir(&host.data_dir, run).join(format!("task-{}", task.0));
        let export = host
            .export_dir
            .as_ref()
            .map(|d| export_path(d, run, task, me));
        let span = tracing::info_span!("group", %group, task = task.0, topology = %run.name);
        let started = {
            let host = host.clone();
            let slot = Arc::clone(&slot);
            let stop = stop.clone();
            let counters = Arc::clone(&counters);
            async move {
                // An earlier replica of the group in this process (the run started again
                // here) must stop before this one opens its files.
                let waited = std::time::Instant::now();
                while host.groups.is_registered(group) {
                    if waited.elapsed() > Duration::from_secs(10) {
                        tracing::error!(
                            "an earlier replica of the group does not stop; not starting"
                        );
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let stored = match storage {
                    StateStorage::Memory => Ok(Stored {
                        log: LogStore::in_memory(),
                        member: new_member(me, founding_run),
                    }),
                    StateStorage::Disk => open_stored(&dir, me, founding_run, &counters),
                };
                let Stored { log, member } = match stored {
                    Ok(s) => s,
                    Err(why) => {
                        tracing::error!(%why, "replica refuses to start: its storage is unusable");
                        return;
                    }
                };
                let state = TaskState {
                    machine,
                    me: member,
                };
                let sm = match storage {
                    StateStorage::Memory => Ok(StateMachineStore::in_memory(state)),
                    StateStorage::Disk => StateMachineStore::open(state, &dir),
                };
                let sm = match sm {
                    Ok(sm) => sm,
                    Err(e) => {
                        // The snapshot checked out, but its state does not decode (a bolt
                        // whose state type changed): nothing a peer could repair.
                        tracing::error!(error = %e, "replica refuses to start: its snapshot does not restore");
                        return;
                    }
                };
                let stored_log = log.last_index();
                // A new identity (no log: kept in memory, wiped, or set aside) joins its
                // group as a learner and votes once promoted; so does a replica placed on
                // a node that replaces a lost one.
                let fresh = member.incarnation() != 0 && stored_log.is_none();
                if fresh {
                    tracing::info!(%member, "replica joins its group under a new identity: a learner until it caught up");
                }
                let replica = match Replica::start(
                    member,
                    group,
                    host.timings,
                    log,
                    sm,
                    host.transport.clone(),
                    Arc::clone(&host.groups),
                    // A replica that rejoins a running group first listens for its leader.
                    founding_run && !fresh,
                )
                .await
                {
                    Ok(r) => Arc::new(r),
                    Err(e) => {
                        tracing::error!(error = %e, "replica did not start");
                        return;
                    }
                };
                if initialize {
                    if let Err(e) = replica.initialize(&members).await {
                        tracing::error!(error = %e, "group not initialized");
                    }
                }
                let st = replica.status();
                tracing::info!(
                    %member,
                    members = members.len(),
                    ?storage,
                    stored_log = stored_log.unwrap_or(0),
                    term = st.term,
                    "replica started"
                );
                let _ = slot.set(Arc::clone(&replica));
                if stop.is_cancelled() {
                    // Stopped while starting: `stop` shuts it down once this task ends.
                    return;
                }
                if !founding_run || fresh {
                    // Not only a fresh identity: a replica that kept its log may have been
                    // replaced meanwhile, or have joined as a learner before it stopped.
                    let req = JoinRequest {
                        addr: members.get(&me).cloned().unwrap_or_default(),
                        assigned: members.keys().copied().collect(),
                        member,
                    };
                    let peers: Vec<String> = members
                        .iter()
                        .filter(|(n, _)| **n != me)
                        .map(|(_, a)| a.clone())
                        .collect();
                    host.runtime.spawn(tracing::Instrument::instrument(
                        join(
                            Arc::clone(&replica),
                            group,
                            req,
                            peers,
                            host.transport.clone(),
                            stop.clone(),
                        ),
                        tracing::Span::current(),
                    ));
                }
                // Jittered, so replicas that restarted together do not all campaign at once.
                let jitter =
                    Duration::from_millis(rand::random_range(0..=host.timings.election_max_ms));
                let grace =
                    (!founding_run && !fresh).then_some((REJOIN_GRACE + jitter, stored_log));
                watch(replica, task, me, sink, counters, stop, grace).await;
            }
        };
        let started = host
            .runtime
            .spawn(tracing::Instrument::instrument(started, span));
        ReplicatedTask {
            task,
            group,
            replica: slot,
            counters,
            stop,
            host: host.clone(),
            started: std::sync::Mutex::new(Some(started)),
            export,
        }
    }

    /// How the task's bolt actor proposes: through this replica while it leads, refused at
    /// once otherwise (the inputs then fail and replay to the leader).
    pub(crate) fn propose(&self) -> Propose {
        let slot = Arc::clone(&self.replica);
        let counters = Arc::clone(&self.counters);
        Arc::new(move |command: Vec<u8>| {
            let replica = slot.get().cloned();
            let counters = Arc::clone(&counters);
            async move {
                let refuse = |why: String| {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    Err(why)
                };
                let Some(replica) = replica else {
                    return refuse("the replica has not started".into());
                };
                if !replica.is_leader() {
                    // Another leader is known: refuse at once (the sender is told who
                    // leads). None is (an election, or this replica is cut off): hold the
                    // proposal a while, since inputs refused at once come straight back as
                    // replays, a storm on a node cut off with its own spout.
                    let mut changes = replica.watch();
                    let until = tokio::time::Instant::now() + LEADERLESS_HOLD;
                    loop {
                        let now = replica.status();
                        if now.role == Role::Leader {
                            break;
                        }
                        if now.leader.is_some() {
                            return refuse("not the leader".into());
                        }
                        tokio::select! {
                            next = changes.changed() => if next.is_none() {
                                return refuse("the replica stopped".into());
                            },
                            () = tokio::time::sleep_until(until) => {
                                return refuse(format!("no leader within {LEADERLESS_HOLD:?}"));
                            }
                        }
                    }
                }
                counters.proposals.fetch_add(1, Ordering::Relaxed);
                counters
                    .proposed_bytes
                    .fetch_add(command.len() as u64, Ordering::Relaxed);
                // A leader cut off from its quorum never answers: its inputs fail and replay
                // (to the new leader) instead of holding the task's proposal slots.
                match tokio::time::timeout(PROPOSAL_TIMEOUT, replica.write(command)).await {
                    Ok(Ok(Ok(answer))) => Ok(answer),
                    Ok(Ok(Err(why))) => refuse(why),
                    Ok(Err(e)) => refuse(e.to_string()),
                    Err(_) => refuse(format!("no commit within {PROPOSAL_TIMEOUT:?}")),
                }
            }
            .boxed()
        })
    }

    /// The nodes of the group's settled voters, if this replica leads it and no member is
    /// joining (a learner: a repair or a replacement in flight).
    pub(crate) fn led_voters(&self) -> Option<Vec<NodeId>> {
        let replica = self.replica.get()?;
        if !replica.is_leader() || replica.has_learners() {
            return None;
        }
        Some(replica.settled_voters()?.iter().map(|m| m.node()).collect())
    }

    /// The replica's status, once it started.
    pub(crate) fn status(&self) -> Option<ReplicaStatus> {
        self.replica.get().map(|r| r.status())
    }

    /// Stops the replica (blocking: call off the runtime's threads), after waiting up to
    /// `settle` for it to apply what it has, and logs its final state's digest; at the end of
    /// its run (`last`), exports the state where the node is told to.
    pub(crate) fn stop(&self, settle: Duration, last: bool) {
        self.stop.cancel();
        // A replica still starting finishes starting first, so it is never left running.
        let started = self.started.lock().ok().and_then(|mut s| s.take());
        if let Some(started) = started {
            let _ = self.host.runtime.block_on(started);
        }
        let Some(replica) = self.replica.get().cloned() else {
            return;
        };
        let group = self.group;
        let task = self.task;
        let export = self.export.clone().filter(|_| last);
        self.host.runtime.block_on(async move {
            let status = replica.status();
            if let Some(last) = status.last_log {
                replica.wait_applied(last, settle).await;
            }
            let status = replica.status();
            let (state, exported) = replica.read(|s| (s.snapshot(), s.machine.export()));
            if let (Ok(bytes), Some(path)) = (&exported, &export) {
                if let Err(e) = write_export(path, bytes) {
                    tracing::warn!(path = %path.display(), error = %e, "final state not exported");
                }
            }
            match state.map(|b| digest(&b)) {
                Ok(digest) => tracing::info!(
                    %group,
                    task = task.0,
                    applied = status.applied.unwrap_or(0),
                    term = status.term,
                    role = ?status.role,
                    %digest,
                    "replica stopped"
                ),
                Err(why) => tracing::warn!(%group, task = task.0, %why, "replica stopped; its state does not encode"),
            }
            replica.shutdown().await;
        });
    }
}

/// Where task `task`'s final state on node `me` is exported under `dir`: one plain path
/// component per run, whatever its name (as for `run_dir`).
pub(crate) fn export_path(dir: &std::path::Path, run: &RunId, task: TaskId, me: NodeId) -> PathBuf {
    dir.join(format!("{}-{:016x}", run.name, run.seed))
        .join(format!("task-{}.n{}.state", task.0, me.0))
}

/// Writes a final state to `path` whole.
pub(crate) fn write_export(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other("an export path without a file name"));
    };
    std::fs::create_dir_all(dir)?;
    crate::replication::state_machine::write_atomically(dir, &name.to_string_lossy(), bytes)
}

/// The digest of an encoded state: the first 16 hex digits of its SHA-256.
fn digest(bytes: &[u8]) -> String {
    let hash = sha2::Sha256::digest(bytes);
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Where a run's groups keep their files on this node.
pub(crate) fn run_dir(data_dir: &std::path::Path, run: &RunId) -> PathBuf {
    data_dir
        .join("groups")
        .join(format!("{}-{:016x}", run.name, run.seed))
}

/// A replica's log and identity, as opened at its start.
struct Stored {
    log: LogStore,
    member: MemberId,
}

/// The file that holds a disk replica's identity, beside its log.
const MEMBER_FILE: &str = "member";

/// The identity of a replica that starts without a log: the founding one in the run's first
/// assignment, a new incarnation otherwise.
fn new_member(me: NodeId, founding_run: bool) -> MemberId {
    if founding_run {
        MemberId::founding(me)
    } else {
        MemberId::new(me, rand::random_range(1..=u32::MAX))
    }
}

/// Reads the identity stored in `dir`: `None` if there is none; an error if it is damaged.
fn read_member(dir: &std::path::Path) -> Result<Option<MemberId>, String> {
    let path = dir.join(MEMBER_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let damaged = |why: &str| format!("{} is damaged: {why}", path.display());
    let body = state_machine::unsealed(&bytes).map_err(damaged)?;
    let id: [u8; 8] = body.try_into().map_err(|_| damaged("not an identity"))?;
    Ok(Some(MemberId(u64::from_be_bytes(id))))
}

/// Stores `member` as the identity of the replica in `dir` (before its log holds anything).
fn write_member(dir: &std::path::Path, member: MemberId) -> Result<(), String> {
    let bytes = state_machine::sealed(&member.0.to_be_bytes());
    state_machine::write_atomically(dir, MEMBER_FILE, &bytes)
        .map_err(|e| format!("{}: {e}", dir.join(MEMBER_FILE).display()))
}

/// Opens the log and identity of a disk replica in `dir` and checks its snapshot. A damaged
/// log, snapshot or identity is set aside whole (renamed `<dir>.damaged-<ms>`, kept for a
/// look) and the replica starts empty under a new identity, to be repaired from its peers: it
/// never votes on a log it cannot trust, nor under an identity whose votes it lost.
fn open_stored(
    dir: &std::path::Path,
    me: NodeId,
    founding_run: bool,
    counters: &GroupCounters,
) -> Result<Stored, String> {
    let opened = LogStore::open(dir)
        .map_err(|e| e.to_string())
        .and_then(|log| {
            StateMachineStore::<TaskState>::verify(dir).map_err(|e| e.to_string())?;
            Ok((log, read_member(dir)?))
        });
    match opened {
        // An identity whose log is blank may have voted in a log that is gone (deleted, or
        // cut to nothing): a new incarnation is always safe, reusing it is not.
        Ok((log, Some(member)))
            if log.is_blank() && (member.incarnation() != 0 || !founding_run) =>
        {
            let member = new_member(me, false);
            write_member(dir, member)?;
            Ok(Stored { log, member })
        }
        Ok((log, Some(member))) => Ok(Stored { log, member }),
        Ok((log, None)) => {
            // A log without an identity file was written by a founding member (before
            // identities were stored); no log: a first start, or a wiped disk.
            let member = if log.last_index().is_some() {
                MemberId::founding(me)
            } else {
                new_member(me, founding_run)
            };
            write_member(dir, member)?;
            Ok(Stored { log, member })
        }
        Err(why) => {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let mut aside = dir.as_os_str().to_owned();
            aside.push(format!(".damaged-{at}"));
            let aside = PathBuf::from(aside);
            std::fs::rename(dir, &aside).map_err(|e| {
                format!(
                    "{why}; and it could not be set aside to {}: {e}",
                    aside.display()
                )
            })?;
            counters.repairs.fetch_add(1, Ordering::Relaxed);
            let log = LogStore::open(dir).map_err(|e| e.to_string())?;
            let member = new_member(me, false);
            write_member(dir, member)?;
            tracing::error!(
                %why,
                set_aside = %aside.display(),
                %member,
                "replica's stored state is damaged: set aside; the replica is repaired from its peers under a new identity"
            );
            Ok(Stored { log, member })
        }
    }
}

/// How often a replica that is not a voter asks its group's leader to make it one.
const JOIN_EVERY: Duration = Duration::from_millis(300);

/// Asks the group's leader (trying every peer of `peers`) until it answers that this replica is
/// a voter and the replica sees a settled membership with itself in it; then a new member may
/// campaign.
async fn join(
    replica: Arc<Replica<TaskState>>,
    group: GroupId,
    req: JoinRequest,
    peers: Vec<String>,
    transport: Transport,
    stop: CancellationToken,
) {
    let mut last: Option<Admission> = None;
    // Its own log may say it is a voter and be stale (it was replaced meanwhile): only the
    // leader's answer counts.
    let fresh = !replica.voters().contains(&req.member);
    // A replica that restarts as the leader of its old term is not one: only a leader
    // elected since (a higher term, an entry of its own committed) stands for itself.
    let started_in = replica.status().term;
    loop {
        let settled = replica
            .settled_voters()
            .is_some_and(|v| v.contains(&req.member));
        let st = replica.status();
        let elected =
            st.role == Role::Leader && st.term > started_in && st.applied_term == Some(st.term);
        if settled && (last == Some(Admission::Voter) || elected) {
            if fresh {
                tracing::info!(member = %req.member, "replica is a voter of its group");
                // A replica that kept its log campaigns when the rejoin grace says.
                replica.campaign();
            }
            return;
        }
        for addr in &peers {
            match request_join(&transport, addr, group, &req, Duration::from_secs(1)).await {
                Ok(a) => {
                    if last.as_ref() != Some(&a) {
                        tracing::info!(admission = ?a, "asked the group's leader to join");
                    }
                    last = Some(a);
                    break;
                }
                Err(why) => tracing::trace!(%addr, %why, "join not answered"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(JOIN_EVERY) => {}
        }
    }
}

/// Follows the replica's leader: tells the run's routing at every change, and announces this
/// node to the others when it leads (again every second, for nodes that missed it).
async fn watch(
    replica: Arc<Replica<TaskState>>,
    task: TaskId,
    me: NodeId,
    sink: Arc<dyn LeaderSink>,
    counters: Arc<GroupCounters>,
    stop: CancellationToken,
    grace: Option<(Duration, Option<u64>)>,
) {
    let mut changes = replica.watch();
    // A rejoining replica campaigns once a leader reached it, or after its grace: never
    // before a live leader could have. A leader reached it when its log grew past what it
    // stored (a leader or term it knew of when it stopped proves nothing: that shows up in
    // its metrics at start). It votes meanwhile, so the others can elect without it.
    let mut silent_until = grace.map(|(g, _)| tokio::time::Instant::now() + g);
    let stored = grace.and_then(|(_, stored)| stored);
    let mut known: Option<(u64, NodeId)> = None;
    // The term whose first commit by this replica as leader was logged.
    let mut first_commit_logged = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut status = replica.status();
    // A replica that is leader when it starts (resumed from its disk, in its old term) has
    // applied only its old log: its first commit is an entry applied after that. One elected
    // later applied its term's blank entry while leading.
    let resumed = (status.role == Role::Leader).then_some((status.term, status.applied));
    let mut voters = std::collections::BTreeSet::new();
    loop {
        let now = replica.voters();
        if now != voters {
            let list = crate::replication::membership::list(&now);
            tracing::info!(voters = %list, term = status.term, "group membership");
            voters = now;
        }
        if let Some(leader) = status.leader {
            if known != Some((status.term, leader)) {
                if known.is_some_and(|(_, l)| l != leader) || known.is_none() {
                    counters.leader_changes.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(term = status.term, leader = %leader, role = ?status.role, "group leader");
                known = Some((status.term, leader));
                sink.leader_is(task, status.term, leader);
                if leader == me {
                    sink.announce(task, status.term);
                }
            }
        }
        if silent_until.is_some() && status.last_log > stored {
            silent_until = None;
            replica.campaign();
        }
        if status.role == Role::Leader
            && status.applied_term == Some(status.term)
            && first_commit_logged != status.term
            && resumed.is_none_or(|(term, from)| term != status.term || status.applied > from)
        {
            // The wall clock, for measuring failover across processes (`bench failover`).
            let at_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            first_commit_logged = status.term;
            tracing::info!(
                term = status.term,
                index = status.applied.unwrap_or(0),
                at_ms,
                "leader's first commit"
            );
        }
        tokio::select! {
            () = stop.cancelled() => return,
            next = changes.changed() => match next {
                Some(s) => status = s,
                None => return,
            },
            _ = tick.tick() => {
                if status.role == Role::Leader {
                    sink.announce(task, status.term);
                    // A change a dead leader left half done is finished by the next one.
                    replica.finish_joint().await;
                }
            }
            () = async {
                match silent_until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                silent_until = None;
                tracing::debug!("the rejoin grace is over: the replica may campaign");
                replica.campaign();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_without_its_log_or_damaged_is_not_reused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let task = dir.path().join("task-1");
        let counters = GroupCounters::default();
        let me = NodeId(3);
        // First start, in a run past its founding: a new incarnation, stored.
        let first = open_stored(&task, me, false, &counters).map_err(anyhow::Error::msg)?;
        assert_ne!(first.member.incarnation(), 0);
        assert_eq!(
            read_member(&task).map_err(anyhow::Error::msg)?,
            Some(first.member)
        );
        let first_member = first.member;
        drop(first);
        // Its log never held anything (or was lost): the identity is not reused.
        let again = open_stored(&task, me, false, &counters).map_err(anyhow::Error::msg)?;
        assert_ne!(again.member, first_member);
        let stored = read_member(&task).map_err(anyhow::Error::msg)?;
        assert_eq!(stored, Some(again.member));
        drop(again);
        // A damaged identity file: the directory is set aside and a new identity taken.
        std::fs::write(task.join(MEMBER_FILE), b"garbage!garbage!")?;
        let repaired = open_stored(&task, me, false, &counters).map_err(anyhow::Error::msg)?;
        assert_ne!(Some(repaired.member), stored);
        assert_eq!(counters.repairs.load(Ordering::Relaxed), 1);
        let aside = std::fs::read_dir(dir.path())?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
            .count();
        assert_eq!(aside, 1, "the damaged directory is kept");
        Ok(())
    }

    #[test]
    fn group_ids_differ_by_run_and_task_and_are_never_the_manager_s() {
        let run = |name: &str, seed| RunId {
            name: name.into(),
            seed,
            generation: 0,
        };
        let a = group_id(&run("a", 1), TaskId(3));
        assert_eq!(a, group_id(&run("a", 1), TaskId(3)));
        assert_ne!(a, group_id(&run("a", 2), TaskId(3)));
        assert_ne!(a, group_id(&run("b", 1), TaskId(3)));
        assert_ne!(a, group_id(&run("a", 1), TaskId(4)));
        assert_ne!(a, GroupId::MANAGER);
    }
}
