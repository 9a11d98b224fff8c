//! Raft RPCs over the [`Transport`]: the client side (openraft's network factory) and the
//! server side ([`RaftGroups`], which hands an RPC to its group's Raft). Every RPC travels on
//! the control lane, tagged with its group, so heartbeats never wait behind tuples.

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
    registrations: std::sync::atomic::AtomicU64,
    /// Elections started because the leader's process was seen gone ([`RaftGroups::leader_gone`]).
    early_elections: AtomicU64,
    /// The term each group last campaigned early in.
    early: DashMap<GroupId, u64>,
    /// The nodes each group's replicas are assigned to, as this node last learned from the
    /// manager: a leader here admits members by it.
    assigned: DashMap<GroupId, std::collections::BTreeSet<NodeId>>,
}

/// One replica registered with [`RaftGroups`].
struct Registered {
    registration: u64,
    raft: Raft,
}

impl RaftGroups {
    /// Registers `raft` as this process's replica of `group`; returns the registration.
    pub(crate) fn insert(&self, group: GroupId, raft: Raft) -> u64 {
        let registration = self.registrations.fetch_add(1, Ordering::Relaxed);
        self.groups.insert(group, Registered { registration, raft });
        registration
    }

    /// Removes registration `registration` of `group`, if it is still the current one.
    pub(crate) fn remove(&self, group: GroupId, registration: u64) {
        self.groups
            .remove_if(&group, |_, r| r.registration == registration);
    }

    /// The followers here whose leader is on `node`, with the term they follow it in.
    fn led_from(&self, node: NodeId) -> Vec<(GroupId, Raft, u64)> {
        self.groups
            .iter()
            .filter_map(|r| {
                let m = r.raft.metrics();
                let m = m.borrow();
                let led = m.state != ServerState::Leader
                    && m.current_leader.is_some_and(|l| MemberId(l).node() == node);
                led.then(|| (*r.key(), r.raft.clone(), m.current_term))
            })
            .collect()
    }

    /// Whether a replica here follows a leader on `node`.
    pub fn follows(&self, node: NodeId) -> bool {
        !self.led_from(node).is_empty()
    }

    /// The process of `node` is gone (its connection closed and its port refuses): every
    /// replica here that follows a leader there campaigns now, rather than after the
    /// leader's lease and an election timeout. Returns how many started.
    ///
    /// A voter inside its lease of the old leader refuses any vote, so this pays when every
    /// survivor sees the process go, as they do when it dies: they all campaign, which ends
    /// their leases, and split the vote; the first election timeout after that (openraft's
    /// own timer, 100-200 ms by default) elects, the replica with the longer log first. The
    /// failover then takes about one election timeout instead of the lease plus one. Once
    /// per group and term (a node's lanes close one by one, and each reports), and no
    /// quicker retries: a replica with a shorter log would keep raising the term against the
    /// one that can win.
    ///
    /// A replica that rejoined and does not campaign yet (`Replica::campaign`) campaigns
    /// here too: that wait protects a leader that is alive, and this one is gone. A leader
    /// that only lost a connection is never deposed by this: its port answers.
    pub fn leader_gone(&self, node: NodeId) -> usize {
        let mut started = 0;
        for (group, raft, term) in self.led_from(node) {
            let fresh = match self.early.entry(group) {
                dashmap::Entry::Occupied(e) if *e.get() >= term => false,
                e => {
                    e.insert(term);
                    true
                }
            };
            if !fresh {
                continue;
            }
            started += 1;
            tracing::info!(%group, %node, term, "the leader's process is gone: campaigning now");
            tokio::spawn(async move {
                let _ = raft.trigger().elect().await;
            });
        }
        self.early_elections
            .fetch_add(started as u64, Ordering::Relaxed);
        started
    }

    /// Elections started by [`RaftGroups::leader_gone`] so far.
    pub fn early_elections(&self) -> u64 {
        self.early_elections.load(Ordering::Relaxed)
    }

    /// What the transport reports of a closed connection ([`crate::transport::Handler::closed`]):
    /// when it came from a node whose replica leads one of the groups here, dial that node
    /// and, if its port refuses, start elections ([`RaftGroups::leader_gone`]).
    pub fn on_closed(self: &Arc<Self>, transport: &Transport, from: &PeerRole) {
        let PeerRole::Node { id, addr } = from else {
            return;
        };
        if !self.follows(*id) {
            return;
        }
        let (groups, transport, node, addr) =
            (Arc::clone(self), transport.clone(), *id, addr.clone());
        tokio::spawn(async move {
            if transport.refuses(&addr).await {
                groups.leader_gone(node);
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
        let Some(raft) = self.groups.get(&group).map(|r| r.raft.clone()) else {
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
                RaftRpc::Vote(r) => frame::encode(&raft.vote(r).await),
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
}

/// A connection to one member of one group.
pub(crate) struct Client {
    transport: Transport,
    group: GroupId,
    target: u64,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Client {
        Client {
            transport: self.transport.clone(),
            group: self.group,
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
        self.call(RaftRpc::Vote(rpc), option.hard_ttl()).await
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
