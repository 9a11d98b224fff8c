//! Raft RPCs over the [`Transport`]: the client side (openraft's network factory) and the
//! server side ([`RaftGroups`], which hands an RPC to its group's Raft). Every RPC travels on
//! the control lane, tagged with its group, so heartbeats never wait behind tuples.

use std::time::Duration;

use dashmap::DashMap;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::{GroupId, MemberId, NodeId};
use crate::replication::membership::{self, Admission, JoinRequest};
use crate::replication::type_config::{Raft, TypeConfig};
use crate::transport::{Lane, Service, Transport, TransportError, frame};

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
    groups: DashMap<GroupId, (u64, Raft)>,
    registrations: std::sync::atomic::AtomicU64,
    /// The nodes each group's replicas are assigned to, as this node last learned from the
    /// manager: a leader here admits members by it.
    assigned: DashMap<GroupId, std::collections::BTreeSet<NodeId>>,
}

impl RaftGroups {
    /// Registers `raft` as this process's replica of `group`; returns the registration.
    pub(crate) fn insert(&self, group: GroupId, raft: Raft) -> u64 {
        let n = self
            .registrations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.groups.insert(group, (n, raft));
        n
    }

    /// Removes registration `registration` of `group`, if it is still the current one.
    pub(crate) fn remove(&self, group: GroupId, registration: u64) {
        self.groups
            .remove_if(&group, |_, (n, _)| *n == registration);
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
        let Some(raft) = self.groups.get(&group).map(|r| r.1.clone()) else {
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
