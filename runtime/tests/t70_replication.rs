//! Raft groups over the real transport on loopback: a 3-replica group elects a leader, commits
//! writes on every replica, fails over to a new leader in a higher term when the leader stops,
//! and a replica restarted from its disk resumes with its log. A replica that lost its log
//! rejoins under a new identity, and a lost member is replaced by one on another node, both
//! through the leader's membership change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tempest_runtime::replication::membership::{Admission, JoinRequest};
use tempest_runtime::replication::{
    EntryContext, LogStore, RaftGroups, RaftTimings, Replica, ReplicatedState, ReplicationError,
    Role, StateMachineStore, request_join,
};
use tempest_runtime::transport::{
    ClusterSecret, Handler, PeerRole, Service, Transport, TransportConfig,
};
use tempest_runtime::{GroupId, MemberId, NodeId};
use tokio::net::TcpListener;

/// A log of every command, in order: replicas agree exactly when their logs are equal.
#[derive(Default)]
struct Journal(Vec<(u64, Vec<u8>)>);

impl ReplicatedState for Journal {
    /// The journal's length after the command.
    type Answer = u64;
    fn apply(&mut self, command: &[u8], at: EntryContext) -> u64 {
        self.0.push((at.index, command.to_vec()));
        self.0.len() as u64
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec(&self.0).map_err(|e| e.to_string())
    }
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.0 = rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The test's transport handler: Raft RPCs to the groups, closed connections to the groups'
/// early elections. While `deaf` is set it refuses the RPCs larger than [`DEAF_ABOVE`] bytes:
/// appends that carry entries of [`BIG`] commands, not votes or heartbeats.
struct Rpc(
    Arc<RaftGroups>,
    Arc<std::sync::OnceLock<Transport>>,
    Arc<AtomicBool>,
);

/// A command size whose appends a deaf member refuses.
const BIG: usize = 2048;
/// The RPC size above which a deaf member refuses.
const DEAF_ABOVE: usize = 1024;

impl Handler for Rpc {
    fn request(
        &self,
        _: &PeerRole,
        service: Service,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        match service {
            Service::Raft(_) if self.2.load(Ordering::Relaxed) && body.len() > DEAF_ABOVE => {
                futures_util::future::ready(Err("deaf to entries".to_owned())).boxed()
            }
            Service::Raft(g) => self.0.handle(g, body),
            _ => futures_util::future::ready(Err("not served".to_owned())).boxed(),
        }
    }
    fn oneway(&self, _: &PeerRole, _: Service, _: Vec<u8>) {}
    fn closed(&self, from: &PeerRole) {
        if let Some(t) = self.1.get() {
            self.0.on_closed(t, from);
        }
    }
}

struct Member {
    replica: Replica<Journal>,
    transport: Transport,
    groups: Arc<RaftGroups>,
    /// Refuses appends of entries while set ([`Rpc`]).
    deaf: Arc<AtomicBool>,
}

async fn member(
    id: u64,
    listener: TcpListener,
    dir: Option<&std::path::Path>,
) -> anyhow::Result<Member> {
    member_as(MemberId::founding(NodeId(id)), listener, dir, true).await
}

async fn member_as(
    me: MemberId,
    listener: TcpListener,
    dir: Option<&std::path::Path>,
    campaign: bool,
) -> anyhow::Result<Member> {
    member_timed(me, listener, dir, campaign, RaftTimings::default()).await
}

async fn member_timed(
    me: MemberId,
    listener: TcpListener,
    dir: Option<&std::path::Path>,
    campaign: bool,
    timings: RaftTimings,
) -> anyhow::Result<Member> {
    let id = me.node().0;
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
    let cell = Arc::new(std::sync::OnceLock::new());
    let deaf = Arc::new(AtomicBool::new(false));
    let transport = Transport::serve(
        listener,
        config,
        Arc::new(Rpc(groups.clone(), Arc::clone(&cell), Arc::clone(&deaf))),
    );
    let _ = cell.set(transport.clone());
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
        me,
        GroupId(7),
        timings,
        log,
        state,
        transport.clone(),
        groups.clone(),
        campaign,
    )
    .await?;
    Ok(Member {
        replica,
        transport,
        groups,
        deaf,
    })
}

/// Binds `addr` again once the transport that held it let it go (its accept loop ends in the
/// background).
async fn rebind(addr: &str) -> anyhow::Result<TcpListener> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() < end && e.kind() == std::io::ErrorKind::AddrInUse => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A founded group of three members (nodes 1 to 3, in `dirs` or in memory) on free ports, and
/// `spares` more listeners for members to come; returns the members, every address and the
/// spare listeners.
async fn founded_group(
    dirs: Option<&[tempfile::TempDir]>,
    spares: usize,
) -> anyhow::Result<(Vec<Option<Member>>, Vec<String>, Vec<TcpListener>)> {
    founded_group_timed(dirs, spares, RaftTimings::default()).await
}

async fn founded_group_timed(
    dirs: Option<&[tempfile::TempDir]>,
    spares: usize,
    timings: RaftTimings,
) -> anyhow::Result<(Vec<Option<Member>>, Vec<String>, Vec<TcpListener>)> {
    let mut listeners = Vec::new();
    for _ in 0..3 + spares {
        listeners.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
    let spare = listeners.split_off(3);
    let mut members = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let dir = dirs.map(|d| d[i].path());
        let me = MemberId::founding(NodeId(i as u64 + 1));
        members.push(Some(member_timed(me, l, dir, true, timings).await?));
    }
    let founding: BTreeMap<NodeId, String> = (0..3)
        .map(|i| (NodeId(i as u64 + 1), addrs[i].clone()))
        .collect();
    members[0]
        .as_ref()
        .expect("started")
        .replica
        .initialize(&founding)
        .await?;
    Ok((members, addrs, spare))
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

/// Stops the leader (its replica, then its transport: connections close, its port refuses)
/// and takes it out of `members`; returns its position and its term.
async fn stop_leader(members: &mut [Option<Member>]) -> anyhow::Result<(usize, u64)> {
    let old = leader_of(members, Duration::from_secs(10)).await?;
    let term = old.replica.status().term;
    let at = members
        .iter()
        .position(|m| m.as_ref().is_some_and(|m| std::ptr::eq(m, old)))
        .expect("a member");
    let stopped = members[at].take().expect("the leader");
    stopped.replica.shutdown().await;
    stopped.transport.shutdown();
    Ok((at, term))
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

/// Elections no sooner than 1000 ms after the leader's lease (1100 ms): what the early
/// campaigns do shows before any timer could.
const SLOW_ELECTIONS: RaftTimings = RaftTimings {
    heartbeat_ms: 100,
    election_min_ms: 1000,
    election_max_ms: 1100,
};

/// A leader whose process is gone (its connections close and its port refuses) is replaced
/// after one election timeout, without the followers waiting out its lease first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_process_is_gone_is_replaced_without_waiting_out_its_lease()
-> anyhow::Result<()> {
    // Waiting out the lease (the election maximum, 1100 ms, from the leader's last message,
    // at most one 100 ms heartbeat before the stop) and then an election timeout (at least
    // 1000 ms), no survivor campaigns in the first 1900 ms: a higher term within 700 ms can
    // only come from the early campaign. (A split vote among the survivors is the next
    // test's.)
    let (mut members, _, _) = founded_group_timed(None, 0, SLOW_ELECTIONS).await?;
    for i in 0..5u8 {
        write(&members, &[i]).await?;
    }
    applied_everywhere(&members, 5).await?;
    let (_, old_term) = stop_leader(&mut members).await?;
    let stopped_at = Instant::now();
    let campaigned = loop {
        let highest = members
            .iter()
            .flatten()
            .map(|m| m.replica.status().term)
            .max()
            .unwrap_or(0);
        if highest > old_term {
            break stopped_at.elapsed();
        }
        assert!(
            stopped_at.elapsed() < Duration::from_millis(700),
            "no survivor campaigned within 700 ms: they wait out the lease"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let early: u64 = members
        .iter()
        .flatten()
        .map(|m| m.groups.early_elections())
        .sum();
    assert!(early >= 1, "no survivor campaigned early");
    let new = leader_of(&members, Duration::from_secs(10)).await?;
    assert!(new.replica.status().term > old_term, "a new term");
    tracing::info!(?campaigned, failover = ?stopped_at.elapsed(), early, "failed over early");
    write(&members, &[9]).await?;
    applied_everywhere(&members, 6).await?;
    Ok(())
}

/// The survivors of a leader whose process is gone campaign together, in one term. When the
/// one openraft prefers (the higher id) has the shorter log, the other refuses it and their
/// votes split; that one campaigns again at once, in the next term, and wins, rather than
/// both waiting for an election timeout (here at least 1000 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_vote_after_the_leader_is_gone_is_settled_without_an_election_timeout()
-> anyhow::Result<()> {
    let (mut members, _, _) = founded_group_timed(None, 0, SLOW_ELECTIONS).await?;
    for i in 0..3u8 {
        write(&members, &[i]).await?;
    }
    applied_everywhere(&members, 3).await?;
    let leader = leader_of(&members, Duration::from_secs(10))
        .await?
        .replica
        .member();
    let followers: Vec<usize> = (0..members.len())
        .filter(|&i| {
            members[i]
                .as_ref()
                .is_some_and(|m| m.replica.member() != leader)
        })
        .collect();
    let id = |i: usize| members[i].as_ref().map_or(0, |m| m.replica.member().0);
    let (high, low) = match followers[..] {
        [a, b] if id(a) > id(b) => (a, b),
        [a, b] => (b, a),
        _ => anyhow::bail!("two followers expected: {followers:?}"),
    };

    tracing::info!("--- the follower with the higher id misses the last entries");
    let deaf = members[high].as_ref().map(|m| Arc::clone(&m.deaf));
    let deaf = deaf.ok_or_else(|| anyhow::anyhow!("a member"))?;
    deaf.store(true, Ordering::Relaxed);
    for i in 3..6u8 {
        write(&members, &[i; BIG]).await?;
    }
    let lengths = |members: &[Option<Member>]| {
        let len = |i: usize| members[i].as_ref().map(|m| m.replica.read(|j| j.0.len()));
        (len(high), len(low))
    };
    let end = Instant::now() + Duration::from_secs(5);
    while lengths(&members) != (Some(3), Some(6)) {
        anyhow::ensure!(Instant::now() < end, "logs: {:?}", lengths(&members));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let following = |i: usize| members[i].as_ref().and_then(|m| m.replica.status().leader);
    assert_eq!(
        following(high),
        Some(leader.node()),
        "still follows the leader"
    );

    tracing::info!("--- the leader stops: the survivors split, the longer log wins at once");
    let (_, old_term) = stop_leader(&mut members).await?;
    let stopped_at = Instant::now();
    // Still deaf: an append the old leader sent before it stopped must not land now.
    let winner = loop {
        if let Some(m) = members
            .iter()
            .flatten()
            .find(|m| m.replica.status().role == Role::Leader)
        {
            break m;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_millis(700),
            "no leader within 700 ms: the split vote waited for an election timeout"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let status = winner.replica.status();
    tracing::info!(failover = ?stopped_at.elapsed(), term = status.term, "split settled");
    deaf.store(false, Ordering::Relaxed);
    assert_eq!(
        Some(winner.replica.member()),
        members[low].as_ref().map(|m| m.replica.member()),
        "the longer log wins"
    );
    assert!(status.term >= old_term + 2, "a second campaign: {status:?}");
    write(&members, &[9]).await?;
    applied_everywhere(&members, 7).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_fails_over_to_a_new_leader_and_keeps_its_log() -> anyhow::Result<()> {
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let (mut members, addrs, _) = founded_group(Some(&dirs), 0).await?;

    tracing::info!("--- writes commit on every replica");
    for i in 0..20u8 {
        write(&members, &[i]).await?;
    }
    let journals = applied_everywhere(&members, 20).await?;
    assert!(
        journals.windows(2).all(|w| w[0] == w[1]),
        "replicas disagree"
    );
    for m in members.iter().flatten() {
        // Every replica, followers too, knows the commit index of what it applied.
        let st = m.replica.status();
        assert!(
            st.applied.is_some() && st.committed >= st.applied && st.committed <= st.last_log,
            "commit index out of place: {st:?}"
        );
    }

    tracing::info!("--- the leader stops: another takes over in a higher term");
    let (old_id, old_term) = stop_leader(&mut members).await?;
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
    let back = member(old_id as u64 + 1, listener, Some(dirs[old_id].path())).await?;
    // From the moment it started it reports what it stored: its term and its group's voters.
    let st = back.replica.status();
    assert!(
        st.term >= old_term && back.replica.voters().len() == 3,
        "a restarted replica reports a blank state: {st:?}, voters {:?}",
        back.replica.voters()
    );
    members[old_id] = Some(back);
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

/// Asks every address of `peers` until the leader makes `req.member` a voter of group 7, which
/// `joiner` then sees; returns the admissions answered on the way.
async fn join_until_voter(
    joiner: &Member,
    req: &JoinRequest,
    peers: &[String],
) -> anyhow::Result<Vec<Admission>> {
    let end = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !joiner.replica.voters().contains(&req.member) {
        anyhow::ensure!(
            Instant::now() < end,
            "{} never became a voter; answers {seen:?}",
            req.member
        );
        for addr in peers {
            if let Ok(a) = request_join(
                &joiner.transport,
                addr,
                GroupId(7),
                req,
                Duration::from_secs(1),
            )
            .await
            {
                if seen.last() != Some(&a) {
                    seen.push(a);
                }
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    joiner.replica.campaign();
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_its_log_rejoins_under_a_new_identity_and_a_lost_one_is_replaced()
-> anyhow::Result<()> {
    let (mut members, addrs, mut spares) = founded_group(None, 1).await?;
    let spare = spares.pop().expect("a fourth listener");
    let founding: Vec<NodeId> = (1..=3).map(NodeId).collect();
    for i in 0..40u8 {
        write(&members, &[i]).await?;
    }
    applied_everywhere(&members, 40).await?;

    tracing::info!("--- a follower loses its log (in memory) and comes back as n3, incarnation 5");
    let leader = leader_of(&members, Duration::from_secs(5)).await?;
    let follower = (0..3)
        .rev()
        .find(|i| {
            members[*i]
                .as_ref()
                .is_some_and(|m| !std::ptr::eq(m, leader))
        })
        .expect("a follower");
    let gone = members[follower].take().expect("the follower");
    gone.replica.shutdown().await;
    gone.transport.shutdown();
    for i in 40..60u8 {
        write(&members, &[i]).await?;
    }
    let node = NodeId(follower as u64 + 1);
    let fresh = MemberId::new(node, 5);
    let listener = TcpListener::bind(&addrs[follower]).await?;
    let joiner = member_as(fresh, listener, None, false).await?;
    let req = JoinRequest {
        member: fresh,
        addr: addrs[follower].clone(),
        assigned: founding.iter().copied().collect(),
    };
    let peers: Vec<String> = (0..3)
        .filter(|i| *i != follower)
        .map(|i| addrs[i].clone())
        .collect();
    let answers = join_until_voter(&joiner, &req, &peers).await?;
    assert_eq!(
        answers.first(),
        Some(&Admission::LearnerAdded),
        "it joined as a learner first: {answers:?}"
    );
    assert!(answers.contains(&Admission::Promoting), "{answers:?}");
    members[follower] = Some(joiner);
    let voters = members[follower].as_ref().expect("joined").replica.voters();
    assert!(voters.contains(&fresh), "{voters:?}");
    assert!(
        !voters.contains(&MemberId::founding(node)),
        "its old identity left the group: {voters:?}"
    );
    assert_eq!(voters.len(), 3, "{voters:?}");
    for i in 60..70u8 {
        write(&members, &[i]).await?;
    }
    let journals = applied_everywhere(&members, 70).await?;
    assert!(
        journals.windows(2).all(|w| w[0] == w[1]),
        "the rejoined replica holds what it missed"
    );

    tracing::info!("--- another follower's node is lost for good: node 4 replaces it");
    let leader = leader_of(&members, Duration::from_secs(5)).await?;
    let lost = (0..3)
        .find(|i| {
            *i != follower
                && members[*i]
                    .as_ref()
                    .is_some_and(|m| !std::ptr::eq(m, leader))
        })
        .unwrap_or(follower);
    let dead = members[lost].take().expect("a member");
    dead.replica.shutdown().await;
    dead.transport.shutdown();
    let replacement = MemberId::new(NodeId(4), 9);
    let joiner = member_as(replacement, spare, None, false).await?;
    let assigned = (0..3)
        .filter(|i| *i != lost)
        .map(|i| NodeId(i as u64 + 1))
        .chain([NodeId(4)])
        .collect();
    let req = JoinRequest {
        member: replacement,
        addr: addrs[3].clone(),
        assigned,
    };
    let peers: Vec<String> = (0..3)
        .filter(|i| *i != lost)
        .map(|i| addrs[i].clone())
        .collect();
    join_until_voter(&joiner, &req, &peers).await?;
    let voters = joiner.replica.voters();
    assert_eq!(voters.len(), 3, "R members again: {voters:?}");
    assert!(
        voters.iter().all(|m| m.node() != NodeId(lost as u64 + 1)),
        "the lost node left the group: {voters:?}"
    );
    members.push(Some(joiner));
    for i in 70..80u8 {
        write(&members, &[i]).await?;
    }
    let journals = applied_everywhere(&members, 80).await?;
    assert!(
        journals.windows(2).all(|w| w[0] == w[1]),
        "the replacement holds the whole log"
    );

    tracing::info!("--- the group fails over with its new members: its leader stops");
    let (_, old_term) = stop_leader(&mut members).await?;
    let new = leader_of(&members, Duration::from_secs(5)).await?;
    assert!(new.replica.status().term > old_term, "a new term");
    for i in 80..85u8 {
        write(&members, &[i]).await?;
    }
    applied_everywhere(&members, 85).await?;
    for m in members.into_iter().flatten() {
        m.replica.shutdown().await;
        m.transport.shutdown();
    }
    Ok(())
}

/// A replica that lost its log and came back under a new identity must not answer for its old
/// one: with the leader gone, the one voter left cannot be elected by the votes of a member
/// whose earlier vote was lost (it has one of three voters, and the fresh replica refuses the
/// requests addressed to the old identity).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_identity_does_not_vote_for_its_old_one() -> anyhow::Result<()> {
    let (mut members, addrs, _) = founded_group(None, 0).await?;
    for i in 0..10u8 {
        write(&members, &[i]).await?;
    }
    applied_everywhere(&members, 10).await?;
    let leader = leader_of(&members, Duration::from_secs(5)).await?;
    let at = |m: &Member| {
        members
            .iter()
            .position(|x| x.as_ref().is_some_and(|x| std::ptr::eq(x, m)))
            .expect("a member")
    };
    let leader_at = at(leader);
    let follower = (0..3).find(|i| *i != leader_at).expect("a follower");
    let voter = (0..3)
        .find(|i| *i != leader_at && *i != follower)
        .expect("another follower");
    // The follower loses its log and comes back as a new incarnation, not joined.
    let gone = members[follower].take().expect("the follower");
    gone.replica.shutdown().await;
    gone.transport.shutdown();
    let listener = rebind(&addrs[follower]).await?;
    let fresh = MemberId::new(NodeId(follower as u64 + 1), 7);
    members[follower] = Some(member_as(fresh, listener, None, true).await?);
    // The leader stops: the voter left must not win with the fresh replica's vote.
    let stopped = members[leader_at].take().expect("the leader");
    stopped.replica.shutdown().await;
    stopped.transport.shutdown();
    let voter = members[voter].as_ref().expect("the voter");
    let until = Instant::now() + Duration::from_secs(3);
    let mut highest_term = 0;
    while Instant::now() < until {
        let st = voter.replica.status();
        assert_ne!(
            st.role,
            Role::Leader,
            "elected with a vote its group never had"
        );
        highest_term = highest_term.max(st.term);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        highest_term >= 3,
        "it campaigned (term {highest_term}) and could not win"
    );
    for m in members.into_iter().flatten() {
        m.replica.shutdown().await;
        m.transport.shutdown();
    }
    Ok(())
}
