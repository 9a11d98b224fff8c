//! Raft groups over the real transport on loopback: a 3-replica group elects a leader, commits
//! writes on every replica, fails over to a new leader in a higher term when the leader stops,
//! and a replica restarted from its disk resumes with its log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tempest_runtime::replication::{
    EntryContext, LogStore, RaftGroups, RaftTimings, Replica, ReplicatedState, ReplicationError,
    Role, StateMachineStore,
};
use tempest_runtime::transport::{
    ClusterSecret, Handler, PeerRole, Service, Transport, TransportConfig,
};
use tempest_runtime::{GroupId, NodeId};
use tokio::net::TcpListener;

/// A log of every command, in order: replicas agree exactly when their logs are equal.
#[derive(Default)]
struct Journal(Vec<(u64, Vec<u8>)>);

impl ReplicatedState for Journal {
    fn apply(&mut self, command: &[u8], at: EntryContext) -> Vec<u8> {
        self.0.push((at.index, command.to_vec()));
        (self.0.len() as u64).to_be_bytes().to_vec()
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec(&self.0).map_err(|e| e.to_string())
    }
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.0 = rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(())
    }
}

struct Rpc(Arc<RaftGroups>);

impl Handler for Rpc {
    fn request(
        &self,
        _: &PeerRole,
        service: Service,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        match service {
            Service::Raft(g) => self.0.handle(g, body),
            _ => futures_util::future::ready(Err("not served".to_owned())).boxed(),
        }
    }
    fn oneway(&self, _: &PeerRole, _: Service, _: Vec<u8>) {}
}

struct Member {
    replica: Replica<Journal>,
    transport: Transport,
}

async fn member(
    id: u64,
    listener: TcpListener,
    dir: Option<&std::path::Path>,
) -> anyhow::Result<Member> {
    let addr = listener.local_addr()?.to_string();
    let groups = Arc::new(RaftGroups::default());
    let secret = ClusterSecret::from_bytes(b"replication test secret").ok();
    let config = TransportConfig::new(
        PeerRole::Node {
            id: NodeId(id),
            addr,
        },
        NodeId(id),
        secret,
    );
    let transport = Transport::serve(listener, config, Arc::new(Rpc(groups.clone())));
    let (log, state) = match dir {
        Some(d) => (
            LogStore::open(d)?,
            StateMachineStore::open(Journal::default(), d)?,
        ),
        None => (
            LogStore::in_memory(),
            StateMachineStore::in_memory(Journal::default()),
        ),
    };
    let replica = Replica::start(
        NodeId(id),
        GroupId(7),
        RaftTimings::default(),
        log,
        state,
        transport.clone(),
        groups,
        true,
    )
    .await?;
    Ok(Member { replica, transport })
}

async fn leader_of(members: &[Option<Member>], deadline: Duration) -> anyhow::Result<&Member> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(m) = members
            .iter()
            .flatten()
            .find(|m| m.replica.status().role == Role::Leader)
        {
            return Ok(m);
        }
        anyhow::ensure!(Instant::now() < end, "no leader within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn write(members: &[Option<Member>], cmd: &[u8]) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let leader = leader_of(members, Duration::from_secs(10)).await?;
        match leader.replica.write(cmd.to_vec()).await {
            Ok(_) => return Ok(()),
            Err(e @ (ReplicationError::NotLeader { .. } | ReplicationError::Failed { .. })) => {
                anyhow::ensure!(Instant::now() < end, "write never went through: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn applied_everywhere(
    members: &[Option<Member>],
    n: usize,
) -> anyhow::Result<Vec<Vec<(u64, Vec<u8>)>>> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let journals: Vec<_> = members
            .iter()
            .flatten()
            .map(|m| m.replica.read(|j| j.0.clone()))
            .collect();
        if journals.iter().all(|j| j.len() == n) {
            return Ok(journals);
        }
        anyhow::ensure!(
            Instant::now() < end,
            "not applied everywhere: {:?}",
            journals.iter().map(Vec::len).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_fails_over_to_a_new_leader_and_keeps_its_log() -> anyhow::Result<()> {
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let listeners = [
        TcpListener::bind("127.0.0.1:0").await?,
        TcpListener::bind("127.0.0.1:0").await?,
        TcpListener::bind("127.0.0.1:0").await?,
    ];
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
    let mut members = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        members.push(Some(member(i as u64 + 1, l, Some(dirs[i].path())).await?));
    }
    let membership: BTreeMap<NodeId, String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (NodeId(i as u64 + 1), a.clone()))
        .collect();
    members[0]
        .as_ref()
        .expect("started")
        .replica
        .initialize(&membership)
        .await?;

    tracing::info!("--- writes commit on every replica");
    for i in 0..20u8 {
        write(&members, &[i]).await?;
    }
    let journals = applied_everywhere(&members, 20).await?;
    assert!(
        journals.windows(2).all(|w| w[0] == w[1]),
        "replicas disagree"
    );

    tracing::info!("--- the leader stops: another takes over in a higher term");
    let old = leader_of(&members, Duration::from_secs(5)).await?;
    let (old_id, old_term) = (
        members
            .iter()
            .position(|m| m.as_ref().is_some_and(|m| std::ptr::eq(m, old)))
            .expect("a member"),
        old.replica.status().term,
    );
    let stopped = members[old_id].take().expect("the leader");
    stopped.replica.shutdown().await;
    stopped.transport.shutdown();
    let killed_at = Instant::now();
    let new = leader_of(&members, Duration::from_secs(5)).await?;
    let failover = killed_at.elapsed();
    let new_status = new.replica.status();
    assert!(
        new_status.term > old_term,
        "a new term: {} after {}",
        new_status.term,
        old_term
    );
    tracing::info!(?failover, term = new_status.term, "failed over");
    for i in 20..30u8 {
        write(&members, &[i]).await?;
    }
    let journals = applied_everywhere(&members, 30).await?;
    assert!(
        journals.windows(2).all(|w| w[0] == w[1]),
        "survivors disagree"
    );

    tracing::info!("--- the old leader restarts from its disk and catches up");
    let listener = TcpListener::bind(&addrs[old_id]).await?;
    members[old_id] = Some(member(old_id as u64 + 1, listener, Some(dirs[old_id].path())).await?);
    let journals = applied_everywhere(&members, 30).await?;
    assert!(
        journals.windows(2).all(|w| w[0] == w[1]),
        "the restarted replica disagrees"
    );
    for m in members.into_iter().flatten() {
        m.replica.shutdown().await;
        m.transport.shutdown();
    }
    Ok(())
}
