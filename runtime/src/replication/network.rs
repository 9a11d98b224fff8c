//! Raft RPCs over the [`Transport`]: the client side (openraft's network factory) and the
//! server side ([`RaftGroups`], which hands an RPC to its group's Raft). Every RPC travels on
//! the control lane, tagged with its group, so heartbeats never wait behind tuples. Also the
//! early elections of followers whose leader's process is seen gone
//! ([`RaftGroups::on_closed`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, ServerState};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::{GroupId, MemberId, NodeId};
use crate::replication::membership::{self, Admission, JoinRequest};
use crate::replication::type_config::{Raft, TypeConfig};
use crate::transport::{Lane, PeerRole, Service, Transport, TransportError, frame};

#[derive(Serialize, Deserialize)]
enum RaftRpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A replica asks the group's leader to make it a voter ([`membership`]).
    Join(JoinRequest),
}

/// An RPC and the member it is for: a node hosts one replica of a group, and a replica that
/// took a new identity must not answer for its old one (its vote under the old identity is
/// lost with its log). A join is for whoever leads, so its target is not checked.
#[derive(Serialize, Deserialize)]
struct Addressed {
    to: u64,
    rpc: RaftRpc,
}

/// The Raft instances this process hosts, by group; answers the RPCs addressed to them.
#[derive(Default)]
pub struct RaftGroups {
    /// Each group's Raft here, with the registration's number: a replica that stops removes
    /// only its own registration, not a newer replica's of the same group.
    groups: DashMap<GroupId, Registered>,
    registrations: AtomicU64,
    /// Elections started because the leader's process was seen gone ([`RaftGroups::leader_gone`]).
    early_elections: AtomicU64,
    /// The term each group last campaigned early in.
    early: DashMap<GroupId, u64>,
    /// The nodes being dialed to see whether their process is gone.
    probing: DashMap<NodeId, ()>,
    /// The nodes each group's replicas are assigned to, as this node last learned from the
    /// manager: a leader here admits members by it.
    assigned: DashMap<GroupId, std::collections::BTreeSet<NodeId>>,
}

/// A voter that follows a leader: what [`RaftGroups::leader_gone`] campaigns in.
struct Following {
    group: GroupId,
    raft: Raft,
    ballots: Arc<Ballots>,
    /// The leader it follows (a member id).
    leader: u64,
    /// The term it follows it in.
    term: u64,
}

/// How long an early campaign waits for a leader before [`settle_split`] looks at why none
/// came: a vote takes a round trip (a few ms on a busy host).
const SPLIT_WAIT: Duration = Duration::from_millis(50);

/// After an early campaign in a group whose leader followed in `term` is gone: settles a
/// split vote at once instead of on openraft's election timer.
///
/// The survivors campaign together, in the same term, and openraft orders same-term votes by
/// node: the survivor with the highest id wins, unless another has a longer log (that one
/// refuses it) or one of them was still inside the old leader's lease when the other's
/// request came (it refuses that). Then nobody leads until a timer fires: 100-200 ms, plus
/// 400 ms on a replica that once saw a longer log (openraft 0.9 clears that mark only in a
/// timer's election). Instead, a survivor that is not led after [`SPLIT_WAIT`] campaigns
/// again, in the next term, unless its [`Ballots`] say that it granted another candidate its
/// vote in that term or later (that one should win), or that a voter has a longer log (that
/// one should campaign). So the survivor with the longest log retries and the others grant
/// it; survivors with equal logs that retry together are ordered by id again.
async fn settle_split(raft: &Raft, ballots: &Ballots, group: GroupId, term: u64) {
    // The term of this replica's campaign: the early one is the term after the leader's.
    let mut campaign = term + 1;
    for _ in 0..2 {
        let led = raft
            .wait(Some(SPLIT_WAIT))
            .metrics(
                |m| m.current_leader.is_some() && m.current_term > term,
                "a new leader",
            )
            .await
            .is_ok();
        let yields = ballots.granted.load(Ordering::Relaxed) >= campaign
            || ballots.longer_log.load(Ordering::Relaxed) >= campaign;
        let leads = raft.metrics().borrow().state == ServerState::Leader;
        if led || yields || leads {
            return;
        }
        campaign = raft.metrics().borrow().current_term.max(campaign) + 1;
        tracing::info!(%group, term = campaign, "a split vote after an early campaign: campaigning again");
        if raft.trigger().elect().await.is_err() {
            return;
        }
    }
}

/// One replica registered with [`RaftGroups`].
struct Registered {
    registration: u64,
    raft: Raft,
    ballots: Arc<Ballots>,
}

/// What a replica's elections learned that openraft keeps to itself, for [`settle_split`]:
/// the highest term in which it granted another candidate its vote, and the highest term of
/// its own campaigns in which a voter answered with a longer log than its own.
#[derive(Debug, Default)]
pub(crate) struct Ballots {
    granted: AtomicU64,
    longer_log: AtomicU64,
}

impl RaftGroups {
    /// Registers `raft` as this process's replica of `group`; returns the registration.
    pub(crate) fn insert(&self, group: GroupId, raft: Raft, ballots: Arc<Ballots>) -> u64 {
        let registration = self.registrations.fetch_add(1, Ordering::Relaxed);
        self.groups.insert(
            group,
            Registered {
                registration,
                raft,
                ballots,
            },
        );
        registration
    }

    /// Removes registration `registration` of `group`, if it is still the current one.
    pub(crate) fn remove(&self, group: GroupId, registration: u64) {
        if self
            .groups
            .remove_if(&group, |_, r| r.registration == registration)
            .is_some()
        {
            // A replica registered later under this group starts its terms afresh.
            self.early.remove(&group);
        }
    }

    /// The voters here that follow a leader on `node` (at `addr`, if given: a node restarted
    /// at a new address is a new process): each with the leader and the term they follow it
    /// in.
    fn led_from(&self, node: NodeId, addr: Option<&str>) -> Vec<Following> {
        self.groups
            .iter()
            .filter_map(|r| {
                let m = r.raft.metrics();
                let m = m.borrow();
                let leader = m.current_leader.filter(|l| MemberId(*l).node() == node)?;
                let membership = m.membership_config.membership();
                if let Some(addr) = addr {
                    membership.get_node(&leader).filter(|n| n.addr == addr)?;
                }
                let voter = membership.voter_ids().any(|v| v == m.id);
                (voter && m.state != ServerState::Leader).then(|| Following {
                    group: *r.key(),
                    raft: r.raft.clone(),
                    ballots: Arc::clone(&r.ballots),
                    leader,
                    term: m.current_term,
                })
            })
            .collect()
    }

    /// The process of `node` is gone (its connection closed and its port refuses): every
    /// voter here that follows a leader there campaigns now, rather than after the leader's
    /// lease and an election timeout. Returns how many started. Call it within a tokio
    /// runtime.
    ///
    /// A voter inside its lease of the old leader refuses any vote, so this pays when every
    /// survivor sees the process go, as they do when it dies: they all campaign, which ends
    /// their leases. The survivor with the highest id wins at once unless another has a
    /// longer log; that split is settled by [`settle_split`], a few tens of ms later. The
    /// failover then takes milliseconds instead of the lease plus an election timeout. Once
    /// per group and term (a node's lanes close one by one, and each reports).
    ///
    /// A replica that rejoined and does not campaign yet (`Replica::campaign`) campaigns
    /// here too: that wait protects a leader that is alive, and this one is gone.
    pub fn leader_gone(&self, node: NodeId) -> usize {
        self.campaign_early(node, self.led_from(node, None))
    }

    /// Starts an election for each of `following` that still follows the same leader in
    /// the same term (the leader may have changed while its node was dialed).
    fn campaign_early(&self, node: NodeId, following: Vec<Following>) -> usize {
        let mut started = 0;
        for f in following {
            let unchanged = {
                let m = f.raft.metrics();
                let m = m.borrow();
                m.current_leader == Some(f.leader) && m.current_term == f.term
            };
            if !unchanged {
                continue;
            }
            match self.early.entry(f.group) {
                dashmap::Entry::Occupied(e) if *e.get() >= f.term => continue,
                e => {
                    e.insert(f.term);
                }
            }
            started += 1;
            let (group, term, raft, ballots) = (f.group, f.term, f.raft, f.ballots);
            tracing::info!(%group, %node, term, "the leader's process is gone: campaigning now");
            tokio::spawn(async move {
                let _ = raft.trigger().elect().await;
                settle_split(&raft, &ballots, group, term).await;
            });
        }
        self.early_elections
            .fetch_add(started as u64, Ordering::Relaxed);
        started
    }

    /// Elections started by [`RaftGroups::leader_gone`] so far (each counted once, not its
    /// [`settle_split`] retries).
    pub fn early_elections(&self) -> u64 {
        self.early_elections.load(Ordering::Relaxed)
    }

    /// What the transport reports of a closed connection ([`crate::transport::Handler::closed`]):
    /// when it came from a node whose replica leads one of the groups here, dial that node
    /// and, if its port refuses, start elections in the groups that still follow the same
    /// leader in the same term ([`RaftGroups::leader_gone`]). One dialing per node at a time
    /// (each of a node's lanes reports its close). Call it within a tokio runtime.
    pub fn on_closed(self: &Arc<Self>, transport: &Transport, from: &PeerRole) {
        let PeerRole::Node { id, addr } = from else {
            return;
        };
        let node = *id;
        let following = self.led_from(node, Some(addr));
        if following.is_empty() || self.probing.insert(node, ()).is_some() {
            return;
        }
        let (groups, transport, addr) = (Arc::clone(self), transport.clone(), addr.clone());
        tokio::spawn(async move {
            let gone = transport.refuses(&addr).await;
            groups.probing.remove(&node);
            if gone {
                groups.campaign_early(node, following);
            }
        });
    }

    /// Records the nodes `group`'s replicas are assigned to (the manager's word, as this node
    /// last heard it).
    pub fn set_assigned(&self, group: GroupId, nodes: std::collections::BTreeSet<NodeId>) {
        self.assigned.insert(group, nodes);
    }

    /// Whether a replica of `group` is registered in this process.
    pub fn is_registered(&self, group: GroupId) -> bool {
        self.groups.contains_key(&group)
    }

    /// Answers one Raft RPC for `group` (a request of [`Service::Raft`]).
    pub fn handle(
        &self,
        group: GroupId,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let Some((raft, ballots)) = self
            .groups
            .get(&group)
            .map(|r| (r.raft.clone(), Arc::clone(&r.ballots)))
        else {
            return futures_util::future::ready(Err(format!("no replica of group {group} here")))
                .boxed();
        };
        let Addressed { to, rpc } = match frame::decode(&body) {
            Ok(rpc) => rpc,
            Err(e) => return futures_util::future::ready(Err(e.to_string())).boxed(),
        };
        let here = raft.metrics().borrow().id;
        if to != here && !matches!(rpc, RaftRpc::Join(_)) {
            return futures_util::future::ready(Err(format!(
                "group {group}: the replica here is {}, not {}",
                MemberId(here),
                MemberId(to)
            )))
            .boxed();
        }
        let assigned = self.assigned.get(&group).map(|a| a.clone());
        async move {
            let encoded = match rpc {
                RaftRpc::Append(r) => frame::encode(&raft.append_entries(r).await),
                RaftRpc::Vote(r) => {
                    let term = r.vote.leader_id().term;
                    let answer = raft.vote(r).await;
                    if answer.as_ref().is_ok_and(|a| a.vote_granted) {
                        ballots.granted.fetch_max(term, Ordering::Relaxed);
                    }
                    frame::encode(&answer)
                }
                RaftRpc::Snapshot(r) => frame::encode(&raft.install_snapshot(r).await),
                RaftRpc::Join(r) => {
                    frame::encode(&membership::admit(raft, group, r, assigned).await)
                }
            };
            encoded.map_err(|e| e.to_string())
        }
        .boxed()
    }
}

/// openraft's network factory over the transport, for one group.
#[derive(Clone)]
pub(crate) struct Network {
    pub(crate) transport: Transport,
    pub(crate) group: GroupId,
    pub(crate) ballots: Arc<Ballots>,
}

/// A connection to one member of one group.
pub(crate) struct Client {
    transport: Transport,
    group: GroupId,
    ballots: Arc<Ballots>,
    target: u64,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Client {
        Client {
            transport: self.transport.clone(),
            group: self.group,
            ballots: Arc::clone(&self.ballots),
            target,
            addr: node.addr.clone(),
        }
    }
}

impl Client {
    async fn call<Resp, E>(
        &self,
        rpc: RaftRpc,
        ttl: Duration,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = frame::encode(&Addressed {
            to: self.target,
            rpc,
        })
        .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = self
            .transport
            .request(
                &self.addr,
                Lane::Control,
                Service::Raft(self.group),
                body,
                ttl,
            )
            .await
            .map_err(|e| match e {
                TransportError::Unreachable { .. }
                | TransportError::Refused { .. }
                | TransportError::Handshake(_) => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        let result: Result<Resp, RaftError<u64, E>> =
            frame::decode(&answer).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Client {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(RaftRpc::Append(rpc), option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(RaftRpc::Snapshot(rpc), option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let (term, mine) = (rpc.vote.leader_id().term, rpc.last_log_id);
        let answer: VoteResponse<u64> = self.call(RaftRpc::Vote(rpc), option.hard_ttl()).await?;
        if answer.last_log_id > mine {
            self.ballots.longer_log.fetch_max(term, Ordering::Relaxed);
        }
        Ok(answer)
    }
}

/// Sends `req` to the node at `addr`, for its replica of `group` (which answers only if it
/// leads the group).
pub async fn request_join(
    transport: &Transport,
    addr: &str,
    group: GroupId,
    req: &JoinRequest,
    ttl: Duration,
) -> Result<Admission, String> {
    let body = frame::encode(&Addressed {
        to: 0,
        rpc: RaftRpc::Join(req.clone()),
    })
    .map_err(|e| e.to_string())?;
    let answer = transport
        .request(addr, Lane::Control, Service::Raft(group), body, ttl)
        .await
        .map_err(|e| e.to_string())?;
    frame::decode::<Result<Admission, String>>(&answer).map_err(|e| e.to_string())?
}
