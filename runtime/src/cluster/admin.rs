//! The admin protocol: what clients (`tempest submit`, `status`, `kill`, `nodes`) ask any node,
//! what nodes ask the manager's leader, and heartbeats. Requests travel on the control lane,
//! rmp-serde encoded; [`AdminClient`] is the client side.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use tempest_dsl::TaskId;

use crate::cluster::manager::{ManagerCommand, ManagerReply, NodeStatus, TopologyStatus};
use crate::ids::NodeId;
use crate::transport::{
    ClusterSecret, Handler, Lane, PeerRole, Service, Transport, TransportConfig, TransportError,
    frame,
};

/// A request to a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Who are you?
    Identify,
    /// Start a registered topology.
    Submit {
        /// The registered topology.
        topology: String,
        /// The name it runs under.
        name: String,
        /// Its arguments.
        args: BTreeMap<String, String>,
    },
    /// Stop a topology.
    Kill {
        /// Its name.
        name: String,
    },
    /// The topologies (or one).
    Status {
        /// Only this one.
        name: Option<String>,
    },
    /// The nodes.
    Nodes,
    /// (Node to manager leader.) Propose a command.
    Propose(ManagerCommand),
    /// (Node to manager leader.) The leader's applied state.
    ReadState,
    /// (Node to node.) The file of a run's checkpoint, if this node stores it.
    FetchCheckpoint {
        /// The topology.
        name: String,
        /// The run's seed.
        seed: u64,
        /// The checkpoint.
        id: u64,
    },
}

/// A node's identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Its id.
    pub node: NodeId,
    /// Its address.
    pub addr: String,
    /// Whether it runs a manager replica.
    pub manager: bool,
    /// Whether its manager replica has a membership (the group was initialized).
    pub initialized: bool,
}

/// One topology, as `tempest status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyView {
    /// Its name.
    pub name: String,
    /// The registered topology it runs.
    pub topology: String,
    /// Running or killed.
    pub status: TopologyStatus,
    /// Its tasks.
    pub tasks: u32,
    /// Tasks per node.
    pub nodes: BTreeMap<NodeId, u32>,
    /// Times its tasks moved off a dead node.
    pub reschedules: u64,
    /// Whether it takes checkpoints.
    #[serde(default)]
    pub checkpointed: bool,
    /// Times it rolled back to a checkpoint (its generation).
    #[serde(default)]
    pub generation: u32,
    /// Its last checkpoint recorded complete.
    #[serde(default)]
    pub checkpoint: Option<u64>,
    /// Whether its spouts run (every node started its tasks of the current generation).
    #[serde(default)]
    pub active: bool,
    /// The committed positions of its seekable spout tasks (exactly-once): every message
    /// before a task's position completed.
    #[serde(default)]
    pub committed: BTreeMap<TaskId, u64>,
    /// Its arguments.
    pub args: BTreeMap<String, String>,
}

/// One node, as `tempest nodes` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Its id.
    pub node: NodeId,
    /// Its address.
    pub addr: String,
    /// Up or down.
    pub status: NodeStatus,
    /// Tasks assigned to it.
    pub tasks: usize,
    /// Whether it leads the manager group.
    pub leader: bool,
}

/// A node's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AdminReply {
    /// Who it is.
    Identity(Identity),
    /// The topology was submitted.
    Submitted {
        /// Its tasks.
        tasks: u32,
        /// The nodes they went to.
        nodes: usize,
    },
    /// The topology was killed.
    Killed,
    /// The topologies.
    Status(Vec<TopologyView>),
    /// The nodes, and the manager's term as its leader knows it.
    Nodes {
        /// The nodes.
        nodes: Vec<NodeView>,
        /// The manager's current term.
        term: u64,
    },
    /// A proposal's outcome.
    Applied(ManagerReply),
    /// The manager's state, encoded, and its leader's term.
    State {
        /// The state.
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
        /// The term.
        term: u64,
    },
    /// A checkpoint's file (as `CheckpointStore` writes it), or `None`: not stored here.
    Checkpoint(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    /// The request failed.
    Error(AdminError),
}

/// Why an admin request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AdminError {
    /// The topology is not registered or does not build.
    #[error("{0}")]
    BadTopology(String),
    /// The manager refused (already running, not running, no live node).
    #[error("refused: {0}")]
    Refused(String),
    /// No topology of that name.
    #[error("no topology `{0}`")]
    NotFound(String),
    /// The manager has no leader now (an election, or no quorum).
    #[error("the manager has no leader reachable now (election in progress or quorum lost)")]
    NoLeader,
    /// This node does not lead the manager; the leader's address if known.
    #[error("not the manager's leader (leader: {0:?})")]
    NotLeader(Option<String>),
    /// Something else went wrong on the node.
    #[error("node error: {0}")]
    Internal(String),
}

/// A running topology as the manager describes it to a node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    /// The name it runs under.
    pub name: String,
    /// The registered topology.
    pub topology: String,
    /// Its arguments.
    pub args: BTreeMap<String, String>,
    /// The seed of this run.
    pub seed: u64,
    /// Where every task runs (component tasks, then ackers); a replicated task's entry names
    /// one of its replicas.
    pub assignment: BTreeMap<TaskId, NodeId>,
    /// The replicas of every replicated task (each runs it; its group's leader executes).
    #[serde(default)]
    pub replicas: BTreeMap<TaskId, Vec<NodeId>>,
    /// The tasks that finished (not to be started again).
    pub finished: BTreeSet<TaskId>,
    /// Whether its spouts may run (every node started its tasks).
    pub active: bool,
    /// Its generation: bumped by every rollback of a checkpointed run.
    #[serde(default)]
    pub generation: u32,
    /// Its last checkpoint recorded complete: a generation starts from it.
    #[serde(default)]
    pub checkpoint: Option<u64>,
    /// The committed positions of its seekable spouts (exactly-once): a spout task that
    /// starts again seeks there.
    #[serde(default)]
    pub positions: BTreeMap<TaskId, u64>,
}

/// A node's liveness report to the manager's leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The node.
    pub node: NodeId,
    /// Its address.
    pub addr: String,
    /// Tasks that finished on it: (topology, run seed, generation, tasks).
    pub finished: Vec<(String, u64, u32, Vec<TaskId>)>,
    /// Runs whose tasks here are all started: (topology, run seed, generation, the state
    /// version whose assignment they started).
    pub ready: Vec<(String, u64, u32, u64)>,
    /// The process's incarnation, drawn at its start.
    #[serde(default)]
    pub incarnation: u64,
    /// The groups this node's replicas lead, with the nodes of their voters when their
    /// membership is settled: (topology, run seed, task, nodes). The manager moves a group's
    /// replica only while its voters are the ones assigned (no change in flight).
    #[serde(default)]
    pub voters: Vec<(String, u64, TaskId, Vec<NodeId>)>,
    /// The last checkpoint each checkpointed run coordinated here completed and stored on two
    /// nodes: (topology, run seed, generation, checkpoint).
    #[serde(default)]
    pub checkpoints: Vec<(String, u64, u32, u64)>,
    /// Checkpointed runs a task of which failed on it: (topology, run seed, generation).
    #[serde(default)]
    pub failed: Vec<(String, u64, u32)>,
    /// The committed positions of the seekable spouts running on it (exactly-once):
    /// (topology, run seed, task, position).
    #[serde(default)]
    pub positions: Vec<(String, u64, TaskId, u64)>,
}

/// The leader's answer to a heartbeat: every running topology and where its tasks run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum HeartbeatReply {
    /// The running topologies as of `version` of the manager's state.
    Tasks {
        /// The state's version.
        version: u64,
        /// The running topologies.
        placements: Vec<Placement>,
        /// Every node's address.
        nodes: BTreeMap<NodeId, String>,
    },
    /// Not the leader; the leader's address if known.
    NotLeader(Option<String>),
}

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node could not be reached or refused us.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The node answered with an error.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The node's answer did not decode.
    #[error("an answer that does not decode: {0}")]
    Decode(String),
}

struct NoRequests;

impl Handler for NoRequests {
    fn request(
        &self,
        _: &PeerRole,
        _: Service,
        _: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        futures_util::future::ready(Err("a client serves nothing".to_owned())).boxed()
    }
    fn oneway(&self, _: &PeerRole, _: Service, _: Vec<u8>) {}
}

/// The client side of the admin protocol, as the command line uses it. Its connection redials
/// in a task of the tokio runtime it is used on, so use it on a multi-threaded runtime (on a
/// current-thread one that task only runs during calls, and a node that was down at one call
/// may look unreachable at the next).
pub struct AdminClient {
    transport: Transport,
    node: String,
    timeout: Duration,
}

impl AdminClient {
    /// A client of the node at `node`, authenticating with `secret` (`None`: insecure).
    pub fn new(node: &str, secret: Option<ClusterSecret>, timeout: Duration) -> Self {
        let config = TransportConfig::new(PeerRole::Client, NodeId(0), secret);
        AdminClient {
            transport: Transport::client(config, Arc::new(NoRequests)),
            node: node.to_owned(),
            timeout,
        }
    }

    /// Sends `request` and returns the node's answer; an error answer is an error.
    pub async fn call(&self, request: &AdminRequest) -> Result<AdminReply, ClientError> {
        let body = frame::encode(request).map_err(|e| ClientError::Decode(e.to_string()))?;
        let answer = self
            .transport
            .request(
                &self.node,
                Lane::Control,
                Service::Admin,
                body,
                self.timeout,
            )
            .await?;
        match frame::decode::<AdminReply>(&answer)
            .map_err(|e| ClientError::Decode(e.to_string()))?
        {
            AdminReply::Error(e) => Err(e.into()),
            reply => Ok(reply),
        }
    }
}

impl Drop for AdminClient {
    fn drop(&mut self) {
        self.transport.shutdown();
    }
}
