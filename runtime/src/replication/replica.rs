//! [`Replica`]: one member of one Raft group, hosted by this process; the only handle the rest
//! of the runtime has on openraft.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};

use crate::ids::{GroupId, MemberId, NodeId};
use crate::replication::network::{Ballots, Network, RaftGroups};
use crate::replication::type_config::{Command, Raft};
use crate::replication::{LogStore, ReplicatedState, StateMachineStore};
use crate::transport::Transport;

/// Raft timing of a group, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftTimings {
    /// How often the leader heartbeats.
    pub heartbeat_ms: u64,
    /// The shortest election timeout.
    pub election_min_ms: u64,
    /// The longest election timeout.
    pub election_max_ms: u64,
}

impl Default for RaftTimings {
    /// openraft's defaults: failover measured at 0.4-0.56 s on two cores.
    fn default() -> Self {
        RaftTimings {
            heartbeat_ms: 50,
            election_min_ms: 150,
            election_max_ms: 300,
        }
    }
}

impl RaftTimings {
    /// The profile of a replicated task's group: heartbeat 30 ms, election 100-200 ms, for a
    /// failover of about 0.3-0.45 s (a follower waits out the leader's lease, the election
    /// maximum, plus a random election timeout). Shorter risks spurious elections on a busy
    /// machine.
    pub fn replicated_bolts() -> Self {
        RaftTimings {
            heartbeat_ms: 30,
            election_min_ms: 100,
            election_max_ms: 200,
        }
    }
}

/// Why a replica could not start or a write did not go through.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The Raft configuration is invalid.
    #[error("invalid raft timings {timings:?}: {why}")]
    Config {
        /// The timings.
        timings: RaftTimings,
        /// openraft's complaint.
        why: String,
    },
    /// This replica is not the leader; the leader, if known.
    #[error("not the leader of group {group}; the leader is {leader:?}")]
    NotLeader {
        /// The group.
        group: GroupId,
        /// The leader's id and address, if known.
        leader: Option<(NodeId, String)>,
    },
    /// The write failed (the group lost its quorum, or the replica stopped). It may still have
    /// been committed: retried commands must be idempotent.
    #[error("group {group}: {why}")]
    Failed {
        /// The group.
        group: GroupId,
        /// What happened.
        why: String,
    },
}

/// A replica's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// It leads the group.
    Leader,
    /// It follows a leader (or waits for one).
    Follower,
    /// It campaigns.
    Candidate,
    /// It receives the log without voting.
    Learner,
    /// It stopped.
    Shutdown,
}

/// What a replica knows of its group now.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaStatus {
    /// Its role.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// The node of the leader it knows, if any.
    pub leader: Option<NodeId>,
    /// The last log index it has.
    pub last_log: Option<u64>,
    /// The last index it knows committed.
    #[serde(default)]
    pub committed: Option<u64>,
    /// The last index it applied.
    pub applied: Option<u64>,
    /// The term of the leader that wrote the last entry it applied: a new leader's first
    /// commit is the first entry of its own term it applies.
    #[serde(default)]
    pub applied_term: Option<u64>,
}

fn status_of(m: &openraft::RaftMetrics<u64, BasicNode>, log: &LogStore) -> ReplicaStatus {
    ReplicaStatus {
        role: match m.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        },
        term: m.current_term,
        leader: m.current_leader.map(|id| MemberId(id).node()),
        last_log: m.last_log_index,
        // openraft saves the commit index only when it commits; after installing a snapshot
        // what it applied is committed too.
        committed: log.committed().max(m.last_applied.map(|l| l.index)),
        applied: m.last_applied.map(|l| l.index),
        applied_term: m.last_applied.map(|l| l.leader_id.term),
    }
}

/// A replica's status as it changes ([`Replica::watch`]).
pub struct StatusWatch {
    rx: tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, BasicNode>>,
    log: LogStore,
}

impl StatusWatch {
    /// Waits for the next change and returns the status then; `None` once the replica stopped.
    pub async fn changed(&mut self) -> Option<ReplicaStatus> {
        self.rx.changed().await.ok()?;
        Some(status_of(&self.rx.borrow_and_update(), &self.log))
    }
}

/// One member of one Raft group in this process.
pub struct Replica<S> {
    member: MemberId,
    group: GroupId,
    raft: Raft,
    /// Its log, shared with openraft (for the commit index, which openraft's metrics lack).
    log: LogStore,
    state: StateMachineStore<S>,
    groups: Arc<RaftGroups>,
    registration: u64,
}

impl<S: ReplicatedState> Replica<S> {
    /// Starts a replica of `group` as `member`, with its log and state, reachable through
    /// `transport`, and registers it with `groups` so its peers' RPCs reach it. Without
    /// `campaign` it votes but starts no election until [`Replica::campaign`].
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        member: MemberId,
        group: GroupId,
        timings: RaftTimings,
        log: LogStore,
        state: StateMachineStore<S>,
        transport: Transport,
        groups: Arc<RaftGroups>,
        campaign: bool,
    ) -> Result<Self, ReplicationError> {
        let config = openraft::Config {
            cluster_name: format!("tempest-{group}"),
            heartbeat_interval: timings.heartbeat_ms,
            election_timeout_min: timings.election_min_ms,
            election_timeout_max: timings.election_max_ms,
            enable_elect: campaign,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| ReplicationError::Config {
            timings,
            why: e.to_string(),
        })?;
        let ballots = Arc::new(Ballots::default());
        let network = Network {
            transport,
            group,
            ballots: Arc::clone(&ballots),
        };
        let raft = Raft::new(
            member.0,
            Arc::new(config),
            network,
            log.clone(),
            state.clone(),
        )
        .await
        .map_err(|e| ReplicationError::Failed {
            group,
            why: e.to_string(),
        })?;
        // openraft publishes the stored vote, log and membership in its metrics once its core
        // started, and answers requests only after that: wait for it, so that what this
        // replica reports from the start (term, role, voters) is its stored state and not a
        // blank one (a restarted replica that read itself as no voter enabled its elections
        // before the leader reached it, and deposed the leader).
        raft.with_raft_state(|_| ())
            .await
            .map_err(|e| ReplicationError::Failed {
                group,
                why: e.to_string(),
            })?;
        let registration = groups.insert(group, raft.clone(), ballots);
        Ok(Replica {
            member,
            group,
            raft,
            log,
            state,
            groups,
            registration,
        })
    }

    /// Lets this replica start elections (a replica started with `campaign` off waits for
    /// this: openraft 0.9 has no pre-vote, so a replica that rejoins and campaigns before it
    /// hears from the leader deposes a healthy one).
    pub fn campaign(&self) {
        self.raft.runtime_config().elect(true);
    }

    /// Makes the founding members of the nodes `members` (node and address) the group's first
    /// membership. Only on one member, once; a group that is already initialized is left as
    /// it is.
    pub async fn initialize(
        &self,
        members: &BTreeMap<NodeId, String>,
    ) -> Result<(), ReplicationError> {
        let members: BTreeMap<u64, BasicNode> = members
            .iter()
            .map(|(id, addr)| (MemberId::founding(*id).0, BasicNode { addr: addr.clone() }))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ReplicationError::Failed {
                group: self.group,
                why: e.to_string(),
            }),
        }
    }

    /// Proposes `command` and returns what applying it answered, once committed and applied
    /// here. Fails at once on a follower, naming the leader.
    pub async fn write(&self, command: Vec<u8>) -> Result<S::Answer, ReplicationError> {
        match self.raft.client_write(Command(command)).await {
            Ok(r) => r.data.take().ok_or_else(|| ReplicationError::Failed {
                group: self.group,
                why: "the entry gave no answer of the state's type".into(),
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ReplicationError::NotLeader {
                    group: self.group,
                    leader: f.leader_id.map(|id| {
                        (
                            MemberId(id).node(),
                            f.leader_node.map(|n| n.addr).unwrap_or_default(),
                        )
                    }),
                })
            }
            Err(e) => Err(ReplicationError::Failed {
                group: self.group,
                why: e.to_string(),
            }),
        }
    }

    /// The group's state as this replica has applied it.
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        self.state.read(f)
    }

    /// What this replica knows now.
    pub fn status(&self) -> ReplicaStatus {
        status_of(&self.raft.metrics().borrow(), &self.log)
    }

    /// Follows this replica's status as it changes.
    pub fn watch(&self) -> StatusWatch {
        StatusWatch {
            rx: self.raft.metrics(),
            log: self.log.clone(),
        }
    }

    /// Waits until this replica applied entry `index`, at most `timeout`; whether it did.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "applied")
            .await
            .is_ok()
    }

    /// The node and address of the leader, if this replica knows one.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())?;
        Some((MemberId(id).node(), addr))
    }

    /// Whether this replica leads its group now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.member.0)
    }

    /// This replica's identity in its group.
    pub fn member(&self) -> MemberId {
        self.member
    }

    /// The nodes of the group's members (voters and learners) and their addresses.
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (MemberId(*id).node(), n.addr.clone()))
            .collect()
    }

    /// The group's voters as this replica knows them (the last membership in its log, joint
    /// or not).
    pub fn voters(&self) -> BTreeSet<MemberId> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .voter_ids()
            .map(MemberId)
            .collect()
    }

    /// The group's voters if its membership (as this replica knows it) is settled, `None`
    /// while a change is half done (joint).
    pub fn settled_voters(&self) -> Option<BTreeSet<MemberId>> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        (membership.get_joint_config().len() == 1)
            .then(|| membership.voter_ids().map(MemberId).collect())
    }

    /// Whether the group (as this replica knows it) has members that do not vote yet.
    pub fn has_learners(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .learner_ids()
            .next()
            .is_some()
    }

    /// On a leader whose group is in a joint membership (a change its previous leader left
    /// half done), finishes the change; otherwise does nothing.
    pub async fn finish_joint(&self) {
        let target = {
            let m = self.raft.metrics().borrow().clone();
            if m.current_leader != Some(self.member.0) {
                return;
            }
            let joint = m.membership_config.membership().get_joint_config().clone();
            if joint.len() < 2 {
                return;
            }
            joint.last().cloned().unwrap_or_default()
        };
        if let Err(e) = self.raft.change_membership(target, false).await {
            tracing::info!(group = %self.group, error = %e, "finishing a joint membership failed (retried)");
        }
    }

    /// Waits until this replica knows a leader, at most `timeout`; the leader's node.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        let r = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .ok()?;
        r.current_leader.map(|id| MemberId(id).node())
    }

    /// Stops the replica; it stays registered until its Raft stopped, so a new replica of
    /// the same group in this process (which waits for [`RaftGroups::is_registered`] to turn
    /// false) never shares its files with a running one.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(group = %self.group, error = %e, "raft shutdown");
        }
        self.groups.remove(self.group, self.registration);
    }
}
