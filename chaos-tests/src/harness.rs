//! The harness: starts real `node` processes of this binary on loopback, each with its own data
//! directory, and a fault proxy on every directed link between them; submits the checking
//! topology; injects a scenario's faults on its seeded schedule; then heals everything, lets the
//! topology drain and finish, and hands the history, the sink's output and every replica's
//! exported state to the checker.
//!
//! It only ever signals the processes it started ([`NodeProcs`] kills them all when dropped,
//! also when the run fails), and keeps everything a post-mortem needs in the run's directory:
//! `node-<id>.log`, `node-<id>/`, `history/`, `output/`, `states/`, `schedule.txt`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::io::Write as _;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempest_dsl::{Guarantee, StateStorage};
use tempest_examples::node_procs::{
    NodeDir, NodeProcs, dir_lines, first_commit_in, leaders_in, log_field, poll,
};
use tempest_runtime::cluster::AdminClient;
use tempest_runtime::cluster::admin::{AdminReply, AdminRequest};
use tempest_runtime::cluster::manager::{NodeStatus, TopologyStatus};
use tempest_runtime::transport::ClusterSecret;

use crate::checker::{self, ReplicaState, Report};
use crate::history;
use crate::proxy::{Flow, LinkFaults, LinkProxy};
use crate::schedule::{Fault, Scenario, Step, schedule};
use crate::topology::{ChaosTopology, TOPOLOGY};

/// How a chaos run goes.
#[derive(Clone, Debug)]
pub struct Options {
    /// What to inject.
    pub scenario: Scenario,
    /// The schedule's seed.
    pub seed: u64,
    /// How long the sources emit new records (faults happen within it).
    pub load: Duration,
    /// The topology's delivery guarantee.
    pub guarantee: Guarantee,
    /// Node processes (the first three run the manager).
    pub nodes: usize,
    /// Records a second per source task (two tasks).
    pub rate: u64,
    /// Counter groups.
    pub groups: u32,
    /// The run's directory (created; kept).
    pub dir: PathBuf,
    /// The binary with the `node` command and the checking topology (this one).
    pub bin: PathBuf,
    /// Make the sink lose every n-th delivery (0: none): a run that must fail the check.
    pub sink_drops: u64,
    /// Make the sink record random tuple ids (not idempotent): under exactly-once, a run that
    /// must fail the check.
    pub sink_random_ids: bool,
}

/// Replicas per counter group.
const REPLICAS: u32 = 3;
/// Source tasks.
const SOURCES: u32 = 2;

/// What a run found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The options it ran with.
    pub options: Options,
    /// The checker's report.
    pub report: Report,
    /// History lines cut short by a kill (skipped).
    pub torn: u64,
    /// Nodes that exited without being killed by the harness: (node id, exit status).
    pub crashes: Vec<(u64, String)>,
    /// Steps run (faults and quiet spells).
    pub steps: u32,
    /// Steps skipped (no target, or behind schedule).
    pub skipped: u32,
    /// SIGKILLs sent.
    pub kills: u32,
    /// Faults injected.
    pub faults: u32,
    /// Per fault that took a leader away: the fault to the new leader's first commit, in ms.
    pub failover_ms: Vec<f64>,
    /// Such faults after which no leader's first commit was seen within 10 s (a paused leader
    /// resumed before anyone else was elected goes on in its term without a new first commit).
    pub failover_unseen: u32,
    /// Parts delivered a second over the load.
    pub throughput: f64,
    /// Parts delivered a second while a follower was slowed, if one was.
    pub slow_throughput: Option<f64>,
    /// Parts offered a second (sources x rate x 2).
    pub offered: f64,
    /// Seconds from the submission to the last state exported.
    pub seconds: f64,
    /// Per lost node: its kill to every group it held having R voters without it, in ms.
    pub replaced_ms: Vec<f64>,
    /// Lost nodes whose replicas were not replaced within 30 s.
    pub unreplaced: u32,
    /// Per node whose replicas lost their logs (damaged or wiped): its kill to every one of
    /// them being a voter again under its new identity, in ms.
    pub rejoined_ms: Vec<f64>,
    /// Such nodes whose replicas were not all voters again within 30 s.
    pub unrejoined: u32,
    /// Replicas that found their stored state damaged and were repaired from their peers.
    pub repairs: usize,
    /// Per kill of a checkpointed run's node: the kill to the run's next generation delivering
    /// output (rolled back on every node, restored, replaying), in ms.
    pub rollback_ms: Vec<f64>,
    /// Such kills after which the run did not deliver again within 60 s.
    pub unrecovered: u32,
    /// Submitting clients SIGKILLed mid-submission (the driver-kill scenario).
    pub driver_kills: u32,
    /// Whether one of them had handed its submission over (it committed, once; otherwise
    /// the retry submitted it).
    pub driver_committed: bool,
}

impl Outcome {
    /// Whether the run kept its guarantee: at-least-once needs nothing lost, nothing
    /// unexpected and agreeing replicas (duplicates are counted); exactly-once needs no
    /// duplicate besides. Either way, no node may have crashed, something must have been acked
    /// and, when the schedule had steps, at least one ran. (A group that never recovered fails
    /// the run: it cannot drain.)
    pub fn ok(&self) -> bool {
        let r = &self.report;
        let base = r.at_least_once()
            && self.crashes.is_empty()
            && self.unreplaced == 0
            && self.unrejoined == 0
            && self.unrecovered == 0
            && r.acked > 0
            && (self.steps > 0 || self.skipped == 0);
        match self.options.guarantee {
            Guarantee::ExactlyOnce => base && r.duplicated == 0 && r.applied_again == 0,
            _ => base,
        }
    }

    /// The p99 of the failovers (0 when there were none).
    pub fn failover_p99_ms(&self) -> f64 {
        percentile(&self.failover_ms, 0.99)
    }

    /// The `RESULT` line.
    pub fn result_line(&self) -> String {
        let r = &self.report;
        let o = &self.options;
        format!(
            "RESULT scenario={} seed={} guarantee={} attempted={} acked={} lost={} duplicated={} \
             unexpected={} replicas_agree={} kills={} failover_p99_ms={:.0} ok={} \
             recovered={} applied_again={} rewrites={} conflicting={} faults={} failovers={} failovers_unseen={} \
             failover_p50_ms={:.0} \
             failover_max_ms={:.0} \
             throughput={:.0} offered={:.0}{} replaced={} unreplaced={} replace_max_ms={:.0} \
             repairs={} rejoined={} unrejoined={} rejoin_max_ms={:.0} rollbacks={} \
             unrecovered={} rollback_p50_ms={:.0} rollback_max_ms={:.0} driver_kills={} \
             driver_committed={} steps={} skipped={} \
             crashes={} torn={} seconds={:.1} dir={}",
            o.scenario.name(),
            o.seed,
            o.guarantee,
            r.attempted,
            r.acked,
            r.lost,
            r.duplicated,
            r.unexpected,
            r.replicas_agree,
            self.kills,
            self.failover_p99_ms(),
            self.ok(),
            r.recovered,
            r.applied_again,
            r.rewrites,
            r.conflicting,
            self.faults,
            self.failover_ms.len(),
            self.failover_unseen,
            percentile(&self.failover_ms, 0.5),
            self.failover_ms.iter().copied().fold(0.0, f64::max),
            self.throughput,
            self.offered,
            self.slow_throughput
                .map(|t| format!(" slow_throughput={t:.0}"))
                .unwrap_or_default(),
            self.replaced_ms.len(),
            self.unreplaced,
            self.replaced_ms.iter().copied().fold(0.0, f64::max),
            self.repairs,
            self.rejoined_ms.len(),
            self.unrejoined,
            self.rejoined_ms.iter().copied().fold(0.0, f64::max),
            self.rollback_ms.len(),
            self.unrecovered,
            percentile(&self.rollback_ms, 0.5),
            self.rollback_ms.iter().copied().fold(0.0, f64::max),
            self.driver_kills,
            self.driver_committed,
            self.steps,
            self.skipped,
            self.crashes.len(),
            self.torn,
            self.seconds,
            o.dir.display(),
        )
    }
}

/// The `q` quantile of `values` (nearest rank; 0 for none).
pub use tempest_runtime::metrics::percentile;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A counter group as the node logs show it.
#[derive(Clone, Debug, Default)]
struct Group {
    task: u32,
    replicas: BTreeSet<u64>,
}

/// What the harness reads in the node logs, read as they grow: (node id, line) for every line
/// that says a replica started, who leads a group, or a leader's first commit.
#[derive(Debug, Default)]
struct LogTail {
    offsets: BTreeMap<u64, u64>,
    lines: Vec<(u64, String)>,
}

impl LogTail {
    const KEPT: [&'static str; 6] = [
        "replica started",
        "group leader",
        "leader's first commit",
        "group membership",
        "the replica is repaired",
        "replica is a voter of its group",
    ];

    /// Reads what the logs gained since the last call (whole lines only).
    fn refresh(&mut self, procs: &NodeProcs) {
        use std::io::{Read, Seek, SeekFrom};
        for n in &procs.nodes {
            let Ok(mut f) = std::fs::File::open(procs.log_path(n.id)) else {
                continue;
            };
            let offset = self.offsets.entry(n.id).or_default();
            let mut buf = Vec::new();
            if f.seek(SeekFrom::Start(*offset)).is_err() || f.read_to_end(&mut buf).is_err() {
                continue;
            }
            let whole = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            *offset += whole as u64;
            for line in String::from_utf8_lossy(&buf[..whole]).lines() {
                if Self::KEPT.iter().any(|k| line.contains(k)) {
                    self.lines.push((n.id, line.to_owned()));
                }
            }
        }
    }

    fn all(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(|(_, l)| l.as_str())
    }

    /// "replica started" lines of node `id`.
    fn replicas_started(&self, id: u64) -> usize {
        self.count(id, "replica started")
    }

    /// Lines of node `id` that say `what`.
    fn count(&self, id: u64, what: &str) -> usize {
        self.lines
            .iter()
            .filter(|(n, l)| *n == id && l.contains(what))
            .count()
    }

    /// The voters of each group, from the "group membership" lines: those of the highest term,
    /// the last read of them (a replica behind may log an older membership in the same term).
    fn voters(&self) -> BTreeMap<String, (u64, BTreeSet<u64>)> {
        let mut out: BTreeMap<String, (u64, BTreeSet<u64>)> = BTreeMap::new();
        for (_, line) in self
            .lines
            .iter()
            .filter(|(_, l)| l.contains("group membership"))
        {
            let (Some(group), Some(voters), Some(term)) = (
                log_field(line, "group"),
                log_field(line, "voters"),
                log_field(line, "term").and_then(|t| t.parse::<u64>().ok()),
            ) else {
                continue;
            };
            let nodes: BTreeSet<u64> = voters
                .split(',')
                .filter_map(|m| m.split('.').next()?.strip_prefix('n')?.parse().ok())
                .collect();
            let e = out.entry(group.to_owned()).or_default();
            if term >= e.0 {
                *e = (term, nodes);
            }
        }
        out
    }

    /// Replicas that set their damaged state aside and were repaired.
    fn repairs(&self) -> usize {
        self.lines
            .iter()
            .filter(|(_, l)| l.contains("the replica is repaired"))
            .count()
    }

    /// The counter groups: their replicas from the latest membership of R voters, or the
    /// "replica started" lines before any.
    fn groups(&self) -> BTreeMap<String, Group> {
        let mut out = self.started();
        for (group, (_, voters)) in self.voters() {
            if let Some(g) = out.get_mut(&group) {
                if voters.len() == REPLICAS as usize {
                    g.replicas = voters;
                }
            }
        }
        out
    }

    /// The counter groups, from the "replica started" lines.
    fn started(&self) -> BTreeMap<String, Group> {
        let mut out: BTreeMap<String, Group> = BTreeMap::new();
        for (id, line) in self
            .lines
            .iter()
            .filter(|(_, l)| l.contains("replica started"))
        {
            let (Some(group), Some(task)) = (log_field(line, "group"), log_field(line, "task"))
            else {
                continue;
            };
            let g = out.entry(group.to_owned()).or_default();
            g.task = task.parse().unwrap_or(u32::MAX);
            g.replicas.insert(*id);
        }
        out
    }
}

/// The cluster under test: the node processes, the proxies between them, the paused nodes.
struct Cluster {
    procs: NodeProcs,
    rt: tokio::runtime::Runtime,
    /// (from, to) node index -> the proxy `from` dials `to` through.
    links: BTreeMap<(usize, usize), LinkProxy>,
    paused: BTreeSet<usize>,
    secret: ClusterSecret,
    logs: LogTail,
    /// Nodes that exited without the harness killing them: (node id, status).
    crashes: Vec<(u64, String)>,
}

/// A string as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Cluster {
    fn start(o: &Options) -> anyhow::Result<Cluster> {
        let mut procs = NodeProcs::prepare(&o.bin, NodeDir::Kept(o.dir.clone()), o.nodes, &[])?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let addrs: Vec<String> = procs.nodes.iter().map(|n| n.addr.clone()).collect();
        let mut links = BTreeMap::new();
        for (from, _) in addrs.iter().enumerate() {
            let mut routes = String::from("[routes]\n");
            for (to, addr) in addrs.iter().enumerate().filter(|(to, _)| *to != from) {
                let target = addr.parse().context("a node address")?;
                // Not on a port a node is about to listen on.
                let proxy = loop {
                    let p = rt.block_on(LinkProxy::start(target))?;
                    if !addrs.contains(&p.addr.to_string()) {
                        break p;
                    }
                };
                routes.push_str(&format!(
                    "{} = {}\n",
                    toml_string(addr),
                    toml_string(&proxy.addr.to_string())
                ));
                links.insert((from, to), proxy);
            }
            let config = o.dir.join(format!("node-{}.toml", from + 1));
            let states = o.dir.join("states");
            std::fs::write(
                &config,
                // Replicas of a node down 4 s move elsewhere: past every fault's hold but a
                // lost node's.
                format!(
                    "state_export_dir = {}\nreplace_after_ms = 4000\n{routes}",
                    toml_string(&states.display().to_string())
                ),
            )?;
            procs.set_own_flags(from, vec!["--config".into(), config.display().to_string()]);
        }
        for i in 0..o.nodes {
            procs.spawn(i)?;
        }
        let secret = ClusterSecret::from_file(&procs.secret)?;
        Ok(Cluster {
            procs,
            rt,
            links,
            paused: BTreeSet::new(),
            secret,
            logs: LogTail::default(),
            crashes: Vec::new(),
        })
    }

    /// Notes every node that exited on its own since the last look (a crash: the runtime
    /// panicked or aborted); the harness's own kills do not count.
    fn look_for_crashes(&mut self, log: &mut impl std::io::Write) -> anyhow::Result<()> {
        for i in 0..self.procs.nodes.len() {
            if let Some(status) = self.procs.exited(i) {
                let id = self.procs.nodes[i].id;
                writeln!(log, "          n{id} exited on its own: {status}")?;
                tracing::error!(node = id, %status, "a node exited on its own");
                self.crashes.push((id, status.to_string()));
            }
        }
        Ok(())
    }

    /// Asks the cluster through the first running node that answers.
    fn call(&mut self, req: &AdminRequest, timeout: Duration) -> anyhow::Result<AdminReply> {
        let mut last = None;
        for i in 0..self.procs.nodes.len() {
            if !self.procs.running(i) || self.paused.contains(&i) {
                continue;
            }
            let addr = self.procs.nodes[i].addr.clone();
            let secret = self.secret.clone();
            let answer = self.rt.block_on(async move {
                AdminClient::new(&addr, Some(secret), timeout)
                    .call(req)
                    .await
            });
            match answer {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(|| anyhow::anyhow!("no node runs"), anyhow::Error::from))
    }

    /// Node index of node id `id`.
    fn index(id: u64) -> usize {
        id as usize - 1
    }

    fn set_links(&self, node: usize, faults: LinkFaults, inbound: LinkFaults) {
        for ((from, to), p) in &self.links {
            if *from == node {
                p.set(faults);
            } else if *to == node {
                p.set(inbound);
            }
        }
    }

    fn heal_links(&self) {
        for p in self.links.values() {
            p.set(LinkFaults::HEALTHY);
        }
    }

    /// Sends `sig` to node `i`, only while it runs (a reaped process's id may be another's).
    fn signal(&mut self, i: usize, sig: Signal) -> anyhow::Result<()> {
        anyhow::ensure!(self.procs.running(i), "node {} is not running", i + 1);
        let pid = self.procs.pid(i).context("the node is not running")?;
        let pid = i32::try_from(pid).context("a process id")?;
        kill(Pid::from_raw(pid), sig).with_context(|| format!("{sig} to node {}", i + 1))?;
        match sig {
            Signal::SIGSTOP => {
                self.paused.insert(i);
            }
            Signal::SIGCONT => {
                self.paused.remove(&i);
            }
            _ => {}
        }
        Ok(())
    }

    /// Restarts the nodes `nodes` (all first, since a node may need the others for a
    /// majority), then waits until each runs again the replicas it held.
    fn restart(&mut self, nodes: &[(usize, usize)]) -> anyhow::Result<()> {
        self.logs.refresh(&self.procs);
        let before: Vec<usize> = nodes
            .iter()
            .map(|(i, _)| self.logs.replicas_started(*i as u64 + 1))
            .collect();
        for (i, _) in nodes {
            self.procs.spawn(*i)?;
        }
        poll(
            "the restarted nodes' replicas",
            Duration::from_secs(30),
            || {
                self.logs.refresh(&self.procs);
                Ok(nodes
                    .iter()
                    .zip(&before)
                    .all(|((i, hosted), b)| self.logs.replicas_started(*i as u64 + 1) >= b + hosted)
                    .then_some(()))
            },
        )
    }

    /// Whether every group of `groups` that had a replica on node `gone` has R voters now,
    /// none of them on it (as the replicas' logs say).
    fn replaced(&mut self, gone: u64, groups: &BTreeMap<String, Group>) -> bool {
        self.logs.refresh(&self.procs);
        let voters = self.logs.voters();
        groups
            .iter()
            .filter(|(_, g)| g.replicas.contains(&gone))
            .all(|(name, _)| {
                voters
                    .get(name)
                    .is_some_and(|(_, v)| v.len() == REPLICAS as usize && !v.contains(&gone))
            })
    }

    /// Brings back every node and heals every link.
    fn heal_all(&mut self) -> anyhow::Result<()> {
        self.heal_links();
        for i in self.paused.clone() {
            self.signal(i, Signal::SIGCONT)?;
        }
        for i in 0..self.procs.nodes.len() {
            if !self.procs.running(i) {
                self.procs.spawn(i)?;
            }
        }
        Ok(())
    }
}

/// Deliveries the sinks wrote so far.
fn delivered(output: &Path) -> u64 {
    dir_lines(output)
}

/// The node indexes running now whose process wrote a file `<prefix><pid>-...` in `dir` that
/// `live` accepts.
fn nodes_with_files(
    c: &mut Cluster,
    dir: &Path,
    prefix: &str,
    live: impl Fn(&Path) -> bool,
) -> Vec<usize> {
    let mut pids = BTreeSet::new();
    if let Ok(d) = std::fs::read_dir(dir) {
        for e in d.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(prefix)
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid.filter(|_| live(&e.path())) {
                pids.insert(pid);
            }
        }
    }
    (0..c.procs.nodes.len())
        .filter(|i| c.procs.running(*i) && c.procs.pid(*i).is_some_and(|p| pids.contains(&p)))
        .collect()
}

/// The node indexes running a source task now: the running processes whose source history
/// files have not ended.
fn source_nodes(c: &mut Cluster, history_dir: &Path) -> Vec<usize> {
    nodes_with_files(c, history_dir, "source-", |path| {
        !std::fs::read_to_string(path).is_ok_and(|t| t.ends_with("d\n"))
    })
}

/// The node indexes running a sink task now: the running processes that opened a sink file
/// (a sink task moves only when its node dies, and a restarted node has a new pid).
fn sink_nodes(c: &mut Cluster, output: &Path) -> Vec<usize> {
    nodes_with_files(c, output, "sink-", |_| true)
}

/// What killing the submitting client did.
#[derive(Clone, Copy, Debug, Default)]
struct DriverKills {
    /// Clients SIGKILLed while they submitted.
    kills: u32,
    /// Whether a killed client's submission committed (the topology runs).
    committed: bool,
}

/// Runs `tempest-chaos submit` as a child process and SIGKILLs it 0-40 ms in (seeded), up
/// to five times or until a killed one's submission committed. After each kill the topology
/// runs or it does not (the manager keys runs by name, so never twice); the caller's retry
/// then must agree: refused as a duplicate exactly when one committed.
fn kill_drivers(
    c: &mut Cluster,
    o: &Options,
    args: &BTreeMap<String, String>,
) -> anyhow::Result<DriverKills> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed ^ 0xd1e5);
    let mut d = DriverKills::default();
    for attempt in 0..5 {
        let node = attempt % c.procs.nodes.len();
        let mut cmd = std::process::Command::new(&o.bin);
        cmd.args(["submit", TOPOLOGY, "--node", &c.procs.nodes[node].addr])
            .arg("--secret-file")
            .arg(&c.procs.secret)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in args {
            cmd.arg("--arg").arg(format!("{k}={v}"));
        }
        let mut child = cmd.spawn().context("the driver did not start")?;
        std::thread::sleep(Duration::from_millis(rng.random_range(0..=40)));
        // `kill` is SIGKILL; a driver that finished already is reaped all the same.
        let _ = child.kill();
        child.wait()?;
        d.kills += 1;
        // Give a submission the driver handed over time to commit, then look.
        std::thread::sleep(Duration::from_millis(500));
        let running = topology_running(c)?;
        tracing::info!(
            attempt,
            committed = running,
            "a driver killed mid-submission"
        );
        if running {
            d.committed = true;
            break;
        }
    }
    Ok(d)
}

/// Whether the checking topology runs, as the manager says (a missing one is not an error;
/// an unanswered request is asked again, for up to 10 s).
fn topology_running(c: &mut Cluster) -> anyhow::Result<bool> {
    let status = AdminRequest::Status {
        name: Some(TOPOLOGY.into()),
    };
    poll("the manager's status", Duration::from_secs(10), || {
        Ok(match c.call(&status, Duration::from_secs(5)) {
            Ok(AdminReply::Status(views)) => Some(
                views
                    .iter()
                    .any(|v| v.name == TOPOLOGY && v.status == TopologyStatus::Running),
            ),
            Err(e) if e.to_string().contains("no topology") => Some(false),
            _ => None,
        })
    })
}

/// What the steps measured.
#[derive(Default)]
struct Figures {
    steps: u32,
    skipped: u32,
    kills: u32,
    faults: u32,
    failover_ms: Vec<f64>,
    failover_unseen: u32,
    slow: Vec<(u64, f64)>,
    replaced_ms: Vec<f64>,
    unreplaced: u32,
    rejoined_ms: Vec<f64>,
    unrejoined: u32,
    rollback_ms: Vec<f64>,
    unrecovered: u32,
}

/// The group a step acts on, its leader, and what the logs said of all groups then.
struct Target {
    group: String,
    term: u64,
    leader: u64,
    groups: BTreeMap<String, Group>,
    leaders: BTreeMap<String, (u64, u64)>,
}

/// Finds the group a step acts on (waiting up to 5 s for one to have a leader).
fn target(c: &mut Cluster, step: &Step) -> Option<Target> {
    poll("a group with a leader", Duration::from_secs(5), || {
        c.logs.refresh(&c.procs);
        let groups = c.logs.groups();
        let leaders = leaders_in(c.logs.all());
        let names: Vec<&String> = groups.keys().filter(|g| leaders.contains_key(*g)).collect();
        if names.is_empty() {
            return Ok(None);
        }
        let group = names[(step.pick % names.len() as u64) as usize].clone();
        let (term, leader) = leaders[&group];
        Ok(Some(Target {
            group,
            term,
            leader,
            groups,
            leaders,
        }))
    })
    .ok()
}

/// Runs one step: resolves its target, injects the fault, holds it, heals it, and waits until
/// the cluster recovered. A step whose target cannot be found (no source task runs right now,
/// say) is skipped and logged.
fn run_step(
    c: &mut Cluster,
    step: &Step,
    history_dir: &Path,
    output: &Path,
    f: &mut Figures,
    log: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    if step.fault == Fault::KillCheckpointed {
        return rollback_step(c, step, output, f, log);
    }
    let Some(Target {
        group,
        term,
        leader,
        groups,
        leaders,
    }) = target(c, step)
    else {
        f.skipped += 1;
        writeln!(
            log,
            "{:>8} ms  skipped: no group has a leader",
            step.at.as_millis()
        )?;
        return Ok(());
    };
    let hosted = |node: u64| {
        groups
            .values()
            .filter(|g| g.replicas.contains(&node))
            .count()
    };
    let leader_i = Cluster::index(leader);
    let pick = |v: &[usize]| {
        v.get((step.pick / 7 % v.len().max(1) as u64) as usize)
            .copied()
    };
    let followers: Vec<u64> = groups[&group]
        .replicas
        .iter()
        .copied()
        .filter(|n| *n != leader)
        .collect();
    let started_at = now_ms();
    let started = Instant::now();
    // What to undo once the hold is over.
    let mut restart: Vec<usize> = Vec::new();
    let mut resume = None;
    let mut relink = false;
    let mut slow_from = None;
    let mut lost = None;
    let what: Option<String> = match step.fault {
        Fault::Quiet => Some("quiet".into()),
        // Run by `rollback_step`.
        Fault::KillCheckpointed => None,
        Fault::KillLeader => {
            c.procs.kill(leader_i)?;
            restart.push(leader_i);
            Some(format!("SIGKILL n{leader} (leads {group} in term {term})"))
        }
        Fault::KillFollower => {
            let v: Vec<usize> = followers.iter().map(|n| Cluster::index(*n)).collect();
            pick(&v).map(|v| {
                restart.push(v);
                format!("SIGKILL n{} (follows {group})", v + 1)
            })
        }
        Fault::CorruptLog | Fault::WipeDisk => {
            let v: Vec<usize> = followers.iter().map(|n| Cluster::index(*n)).collect();
            match pick(&v) {
                Some(v) => {
                    c.procs.kill(v)?;
                    restart.push(v);
                    let data = c.procs.dir.path().join(format!("node-{}", v + 1));
                    Some(if step.fault == Fault::CorruptLog {
                        let n = damage_logs(&data.join("groups"))?;
                        format!(
                            "SIGKILL n{} (follows {group}), damage its {n} replica logs",
                            v + 1
                        )
                    } else {
                        wipe(&data)?;
                        format!("SIGKILL n{} (follows {group}), wipe its data", v + 1)
                    })
                }
                None => None,
            }
        }
        Fault::LoseNode => {
            let v: Vec<usize> = followers.iter().map(|n| Cluster::index(*n)).collect();
            pick(&v).map(|v| {
                restart.push(v);
                lost = Some(v as u64 + 1);
                format!(
                    "SIGKILL n{} (follows {group}) until its replicas are replaced",
                    v + 1
                )
            })
        }
        Fault::PauseLeader => {
            c.signal(leader_i, Signal::SIGSTOP)?;
            resume = Some(leader_i);
            Some(format!("SIGSTOP n{leader} (leads {group} in term {term})"))
        }
        Fault::PartitionLeader => {
            let cut = LinkFaults {
                refuse: true,
                ..LinkFaults::HEALTHY
            };
            c.set_links(leader_i, cut, cut);
            relink = true;
            Some(format!(
                "partition n{leader} from every node (leads {group} in term {term})"
            ))
        }
        Fault::OneWayLeader => {
            // Its own connections refused; on the others' connections to it, its answers held.
            let out = LinkFaults {
                refuse: true,
                ..LinkFaults::HEALTHY
            };
            let inbound = LinkFaults {
                backward: Flow::Hold,
                ..LinkFaults::HEALTHY
            };
            c.set_links(leader_i, out, inbound);
            relink = true;
            Some(format!(
                "cut n{leader}'s outbound traffic (leads {group} in term {term})"
            ))
        }
        Fault::KillSource => {
            let found = poll("a source task", Duration::from_secs(5), || {
                Ok(pick(&source_nodes(c, history_dir)))
            });
            found.ok().map(|v| {
                restart.push(v);
                format!("SIGKILL n{} (runs a source task)", v + 1)
            })
        }
        Fault::KillSink | Fault::CutSink => {
            let found = poll("a sink task", Duration::from_secs(5), || {
                Ok(pick(&sink_nodes(c, output)))
            });
            found.ok().map(|v| {
                if step.fault == Fault::KillSink {
                    restart.push(v);
                    return format!("SIGKILL n{} (runs a sink task)", v + 1);
                }
                let cut = LinkFaults {
                    refuse: true,
                    ..LinkFaults::HEALTHY
                };
                c.set_links(v, cut, cut);
                relink = true;
                format!("partition n{} (runs a sink task) from every node", v + 1)
            })
        }
        Fault::KillManager => {
            let found = poll("the manager's leader", Duration::from_secs(5), || {
                Ok(match c.call(&AdminRequest::Nodes, Duration::from_secs(2)) {
                    Ok(AdminReply::Nodes { nodes, .. }) => {
                        nodes.iter().find(|n| n.leader).map(|n| n.node.0)
                    }
                    _ => None,
                })
            });
            found.ok().map(|id| {
                restart.push(Cluster::index(id));
                format!("SIGKILL n{id} (leads the manager)")
            })
        }
        Fault::SlowFollower { delay } => {
            // A follower that leads no group, where there is one: slow replication, not a
            // slow leader.
            let leading: BTreeSet<u64> = leaders.values().map(|(_, l)| *l).collect();
            let idle: Vec<usize> = followers
                .iter()
                .filter(|n| !leading.contains(n))
                .map(|n| Cluster::index(*n))
                .collect();
            let any: Vec<usize> = followers.iter().map(|n| Cluster::index(*n)).collect();
            pick(&idle).or_else(|| pick(&any)).map(|v| {
                let slow = LinkFaults {
                    forward: Flow::Delay(delay),
                    backward: Flow::Delay(delay),
                    refuse: false,
                };
                c.set_links(v, slow, slow);
                relink = true;
                slow_from = Some(delivered(output));
                format!("delay n{}'s links by {delay:?} (follows {group})", v + 1)
            })
        }
        Fault::KillGroup => {
            restart.extend(groups[&group].replicas.iter().map(|n| Cluster::index(*n)));
            Some(format!(
                "SIGKILL {:?} (every replica of {group})",
                groups[&group].replicas
            ))
        }
    };
    let Some(what) = what else {
        f.skipped += 1;
        writeln!(
            log,
            "{:>8} ms  skipped {:?}: no target",
            step.at.as_millis(),
            step.fault
        )?;
        return Ok(());
    };
    // Kills not done above (the leader's was, at once) happen here, together.
    for i in &restart {
        if c.procs.running(*i) {
            c.procs.kill(*i)?;
        }
    }
    f.steps += 1;
    f.faults += u32::from(step.fault != Fault::Quiet);
    f.kills += restart.len() as u32;
    writeln!(log, "{:>8} ms  {what}", step.at.as_millis())?;
    tracing::info!(fault = %what, "injected");
    // The first commit after the fault by a leader of its term or a later one, on any replica:
    // the victim itself may lead again once it is back (restarted from its disk, resumed,
    // reconnected), in a new term or, if no one else was elected meanwhile, in its old one.
    let mut failover = None;
    // For a lost node: when every group it held had R voters again, none on it.
    let mut replaced = None;
    while started.elapsed() < step.hold {
        if step.fault.fails_over() && failover.is_none() {
            c.logs.refresh(&c.procs);
            failover = first_commit_in(c.logs.all(), &group, term, started_at as f64);
        }
        if let Some(gone) = lost.filter(|_| replaced.is_none()) {
            replaced = c.replaced(gone, &groups).then(|| started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(from) = slow_from {
        let secs = started.elapsed().as_secs_f64();
        f.slow.push((delivered(output) - from, secs));
    }
    if let Some(gone) = lost {
        let replaced = match replaced {
            Some(after) => Ok(after),
            None => poll(
                "the lost node's replicas replaced",
                Duration::from_secs(30).saturating_sub(started.elapsed()),
                || Ok(c.replaced(gone, &groups).then(|| started.elapsed())),
            ),
        };
        match replaced {
            Ok(after) => {
                f.replaced_ms.push(after.as_secs_f64() * 1000.0);
                writeln!(log, "          replaced after {} ms", after.as_millis())?;
            }
            Err(_) => {
                f.unreplaced += 1;
                writeln!(log, "          n{gone}'s replicas not replaced within 30 s")?;
            }
        }
    }
    // Heal.
    if relink {
        c.heal_links();
    }
    if let Some(i) = resume {
        c.signal(i, Signal::SIGCONT)?;
    }
    // A lost node comes back without the replicas that moved away; a wiped or damaged one
    // starts them anew.
    let restart: Vec<(usize, usize)> = restart
        .iter()
        .map(|i| {
            (
                *i,
                if lost.is_some() {
                    0
                } else {
                    hosted(*i as u64 + 1)
                },
            )
        })
        .collect();
    // A node whose replicas lost their logs: how many "voter" lines they have logged so far.
    let voter_lines = |c: &Cluster, i: usize| {
        c.logs
            .count(i as u64 + 1, "replica is a voter of its group")
    };
    let rejoining: Vec<(usize, usize, usize)> =
        if matches!(step.fault, Fault::CorruptLog | Fault::WipeDisk) {
            c.logs.refresh(&c.procs);
            restart
                .iter()
                .map(|(i, hosted)| (*i, *hosted, voter_lines(c, *i)))
                .collect()
        } else {
            Vec::new()
        };
    c.restart(&restart)?;
    // They are voters again before the next fault: one failure at a time (R = 3 survives one;
    // a second replica of a group losing its log while the first still catches up would leave
    // the group without a quorum of the identities it has).
    if !rejoining.is_empty() {
        let back = poll(
            "the repaired replicas voters again",
            Duration::from_secs(30).saturating_sub(started.elapsed()),
            || {
                c.logs.refresh(&c.procs);
                Ok(rejoining
                    .iter()
                    .all(|(i, hosted, before)| voter_lines(c, *i) >= before + hosted)
                    .then(|| started.elapsed()))
            },
        );
        match back {
            Ok(after) => f.rejoined_ms.push(after.as_secs_f64() * 1000.0),
            Err(_) => {
                f.unrejoined += 1;
                writeln!(
                    log,
                    "          its replicas were not voters again within 30 s"
                )?;
            }
        }
    }
    if step.fault.fails_over() {
        let found = poll(
            "a new leader's first commit",
            Duration::from_secs(10),
            || {
                c.logs.refresh(&c.procs);
                Ok(failover
                    .or_else(|| first_commit_in(c.logs.all(), &group, term, started_at as f64)))
            },
        );
        match found {
            Ok(at) => f.failover_ms.push(at - started_at as f64),
            Err(_) => {
                f.failover_unseen += 1;
                writeln!(log, "          no leader committed in {group} within 10 s")?;
            }
        }
    }
    Ok(())
}

/// The generation of the checking topology's run (how often it rolled back), whether that
/// generation is active (its spouts run), and the nodes its tasks are assigned to, if the
/// manager answers.
fn run_view(c: &mut Cluster) -> Option<(u32, bool, Vec<u64>)> {
    match c.call(
        &AdminRequest::Status {
            name: Some(TOPOLOGY.into()),
        },
        Duration::from_secs(2),
    ) {
        Ok(AdminReply::Status(v)) => v.first().map(|t| {
            let nodes = t
                .nodes
                .iter()
                .filter(|(_, tasks)| **tasks > 0)
                .map(|(n, _)| n.0)
                .collect();
            (t.generation, t.active, nodes)
        }),
        _ => None,
    }
}

/// A step of the rollback scenario: SIGKILLs a node running tasks of the checkpointed run,
/// restarts it after the hold, and measures the kill to the next generation's first output.
fn rollback_step(
    c: &mut Cluster,
    step: &Step,
    output: &Path,
    f: &mut Figures,
    log: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let Some((before, _, hosts)) = run_view(c) else {
        f.skipped += 1;
        writeln!(log, "{:>8} ms  skipped: no status", step.at.as_millis())?;
        return Ok(());
    };
    // A node with tasks of the run (one that came back after a kill has none: tasks do not
    // move back).
    let live: Vec<usize> = hosts
        .iter()
        .map(|n| Cluster::index(*n))
        .filter(|i| c.procs.running(*i))
        .collect();
    let Some(&victim) = live.get((step.pick % live.len().max(1) as u64) as usize) else {
        f.skipped += 1;
        writeln!(
            log,
            "{:>8} ms  skipped: no live node runs tasks of the run",
            step.at.as_millis()
        )?;
        return Ok(());
    };
    let started = Instant::now();
    c.procs.kill(victim)?;
    f.steps += 1;
    f.faults += 1;
    f.kills += 1;
    let what = format!(
        "SIGKILL n{} (runs tasks of the checkpointed run, generation {before})",
        victim + 1
    );
    writeln!(log, "{:>8} ms  {what}", step.at.as_millis())?;
    tracing::info!(fault = %what, "injected");
    while started.elapsed() < step.hold {
        std::thread::sleep(Duration::from_millis(50));
    }
    c.procs.spawn(victim)?;
    // Rolled back (a new generation, active: its spouts run on every node), and delivering
    // again after that (output the old generation's tasks wrote while they stopped does not
    // count).
    let recovered = poll(
        "the run rolled back and delivering",
        Duration::from_secs(60),
        || {
            Ok(run_view(c)
                .filter(|(g, active, _)| *g > before && *active)
                .map(|_| delivered(output)))
        },
    )
    .and_then(|at| {
        poll(
            "output after the rollback",
            Duration::from_secs(60).saturating_sub(started.elapsed()),
            || Ok((delivered(output) > at).then(|| started.elapsed())),
        )
    });
    match recovered {
        Ok(after) => {
            f.rollback_ms.push(after.as_secs_f64() * 1000.0);
            writeln!(
                log,
                "          rolled back, delivering again after {} ms",
                after.as_millis()
            )?;
        }
        Err(_) => {
            f.unrecovered += 1;
            writeln!(log, "          no rollback delivering again within 60 s")?;
        }
    }
    Ok(())
}

/// Runs one scenario and checks it.
pub fn run(o: &Options) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(&o.dir)?;
    let history_dir = o.dir.join("history");
    let output = o.dir.join("output");
    let mut c = Cluster::start(o)?;
    let n = o.nodes;
    poll("every node up", Duration::from_secs(60), || {
        Ok(match c.call(&AdminRequest::Nodes, Duration::from_secs(2)) {
            Ok(AdminReply::Nodes { nodes, .. }) => (nodes.len() == n
                && nodes.iter().all(|v| v.status == NodeStatus::Up)
                && nodes.iter().any(|v| v.leader))
            .then_some(()),
            _ => None,
        })
    })?;
    let steps = schedule(o.scenario, o.seed, o.load);
    // The rollback scenario runs the counter unreplicated, recovering from checkpoints.
    let rollback = o.scenario == Scenario::Rollback;
    let replicas = if rollback { 1 } else { REPLICAS };
    // The sources stop emitting at `end_ms`: the load, plus what starting the topology takes.
    const STARTUP: Duration = Duration::from_secs(3);
    let topology = ChaosTopology {
        history: history_dir.clone(),
        output: output.clone(),
        end_ms: now_ms() + (o.load + STARTUP).as_millis() as u64,
        rate: o.rate,
        sources: SOURCES,
        groups: o.groups,
        replicas,
        state: StateStorage::Disk,
        guarantee: o.guarantee,
        message_timeout: Duration::from_secs(5),
        sink_drops: o.sink_drops,
        sink_random_ids: o.sink_random_ids,
        checkpoint_ms: if rollback { 500 } else { 0 },
    };
    let submitted = Instant::now();
    let driver = if o.scenario == Scenario::DriverKill {
        kill_drivers(&mut c, o, &topology.args())?
    } else {
        DriverKills::default()
    };
    // One submission, with time to commit: a retry through another node could be refused as
    // a duplicate of one that did commit. After killed drivers it is that retry: refused
    // exactly when one of them committed.
    let submission = c.call(
        &AdminRequest::Submit {
            topology: TOPOLOGY.into(),
            name: TOPOLOGY.into(),
            args: topology.args(),
        },
        Duration::from_secs(15),
    );
    match submission {
        Ok(AdminReply::Submitted { .. }) if !driver.committed => {}
        Ok(AdminReply::Submitted { .. }) => {
            anyhow::bail!("a killed driver's submission committed, and the retry ran it again")
        }
        Err(e) if driver.committed && e.to_string().contains("already running") => {}
        // A killed driver's submission that committed after the harness looked: the retry
        // is refused, once.
        Err(e) if e.to_string().contains("already running") && topology_running(&mut c)? => {
            tracing::info!("a killed driver's submission committed late; the retry was refused");
        }
        Ok(other) => anyhow::bail!("the submission was refused: {other:?}"),
        Err(e) => return Err(e.context("the submission failed")),
    }
    let expected = (o.groups * replicas) as usize;
    if !rollback {
        poll("every replica started", Duration::from_secs(30), || {
            c.logs.refresh(&c.procs);
            let g = c.logs.groups();
            Ok((g.values().map(|g| g.replicas.len()).sum::<usize>() >= expected).then_some(()))
        })?;
    }
    poll("the first output", Duration::from_secs(30), || {
        Ok((delivered(&output) > 0).then_some(()))
    })?;

    // The schedule's clock starts with the first output, and ends where the sources do.
    let mut log = std::fs::File::create(o.dir.join("schedule.txt"))?;
    let mut figures = Figures::default();
    let clock = Instant::now();
    let load_end = submitted + o.load + STARTUP;
    for step in &steps {
        let due = clock + step.at;
        while Instant::now() < due {
            std::thread::sleep(Duration::from_millis(10));
        }
        c.look_for_crashes(&mut log)?;
        // Recoveries can put the run behind its schedule: a fault must heal before the load
        // ends, so the drain sees a whole cluster.
        if Instant::now() + step.hold + Duration::from_secs(1) > load_end {
            let left = steps.len() as u32 - figures.steps - figures.skipped;
            figures.skipped += left;
            writeln!(
                log,
                "{:>8} ms  the last {left} steps skipped: behind schedule",
                step.at.as_millis()
            )?;
            break;
        }
        run_step(&mut c, step, &history_dir, &output, &mut figures, &mut log)
            .with_context(|| format!("step {step:?}"))?;
    }
    // Drain: heal everything, let the sources end and every tree complete.
    c.look_for_crashes(&mut log)?;
    c.heal_all()?;
    while Instant::now() < load_end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let throughput = delivered(&output) as f64 / (load_end - submitted).as_secs_f64();
    poll("the topology to finish", Duration::from_secs(120), || {
        Ok(
            match c.call(
                &AdminRequest::Status {
                    name: Some(TOPOLOGY.into()),
                },
                Duration::from_secs(2),
            ) {
                Ok(AdminReply::Status(v)) => v
                    .iter()
                    .any(|t| t.status == TopologyStatus::Finished)
                    .then_some(()),
                _ => None,
            },
        )
    })?;
    // `states/chaos-<seed>/`: the one run of this cluster.
    let states_root = o.dir.join("states");
    let states_dir = || {
        std::fs::read_dir(&states_root)
            .ok()
            .and_then(|d| {
                d.flatten().map(|e| e.path()).find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(TOPOLOGY))
                })
            })
            .unwrap_or_else(|| states_root.join(TOPOLOGY))
    };
    let exported = || {
        std::fs::read_dir(states_dir())
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".state"))
                    .count()
            })
            .unwrap_or(0)
    };
    // Every replica exports when its node stops the finished run; a missing one is reported
    // by the checker, not waited for forever.
    let _ = poll("every replica's state", Duration::from_secs(30), || {
        Ok((exported() >= expected).then_some(()))
    });
    c.look_for_crashes(&mut log)?;
    let seconds = submitted.elapsed().as_secs_f64();
    let crashes = c.crashes.clone();
    c.logs.refresh(&c.procs);
    let repairs = c.logs.repairs();
    drop(c);

    let h = history::read(&history_dir, &output)?;
    let states = read_states(&states_dir())?;
    let report = checker::check(&h, &states, o.groups, replicas);
    let slow_throughput = (!figures.slow.is_empty()).then(|| {
        let (parts, secs) = figures
            .slow
            .iter()
            .fold((0u64, 0.0), |(p, s), (dp, ds)| (p + dp, s + ds));
        parts as f64 / secs.max(1e-9)
    });
    Ok(Outcome {
        options: o.clone(),
        report,
        torn: h.torn,
        crashes,
        steps: figures.steps,
        skipped: figures.skipped,
        kills: figures.kills,
        faults: figures.faults,
        failover_ms: figures.failover_ms,
        failover_unseen: figures.failover_unseen,
        throughput,
        slow_throughput,
        offered: f64::from(SOURCES) * o.rate as f64 * 2.0,
        seconds,
        replaced_ms: figures.replaced_ms,
        unreplaced: figures.unreplaced,
        rejoined_ms: figures.rejoined_ms,
        unrejoined: figures.unrejoined,
        repairs,
        rollback_ms: figures.rollback_ms,
        unrecovered: figures.unrecovered,
        driver_kills: driver.kills,
        driver_committed: driver.committed,
    })
}

/// Damages every replica's Raft log under `groups` (16 bytes flipped a third of the way in);
/// returns how many.
fn damage_logs(groups: &Path) -> anyhow::Result<usize> {
    let mut damaged = 0;
    for run in std::fs::read_dir(groups).into_iter().flatten().flatten() {
        for task in std::fs::read_dir(run.path())?.flatten() {
            let log = task.path().join("raft.log");
            let Ok(mut bytes) = std::fs::read(&log) else {
                continue;
            };
            if bytes.len() < 64 {
                continue;
            }
            let at = bytes.len() / 3;
            for b in &mut bytes[at..at + 16] {
                *b ^= 0x5a;
            }
            std::fs::write(&log, bytes)?;
            damaged += 1;
        }
    }
    Ok(damaged)
}

/// Wipes a node's data directory, but for its manager log: a manager replica that lost its
/// log would rejoin its group under its old identity (an operator gives a wiped manager node a
/// new node id).
fn wipe(data: &Path) -> anyhow::Result<()> {
    for e in std::fs::read_dir(data).into_iter().flatten().flatten() {
        if e.file_name() == "manager" {
            continue;
        }
        let path = e.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Reads the exported states: `task-<task>.n<node>.state`.
fn read_states(dir: &Path) -> anyhow::Result<Vec<ReplicaState>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix("task-")
            .and_then(|r| r.strip_suffix(".state"))
        else {
            continue;
        };
        let Some((task, node)) = rest.split_once(".n") else {
            continue;
        };
        let (Ok(task), Ok(node)) = (task.parse(), node.parse()) else {
            continue;
        };
        out.push(ReplicaState {
            task,
            node,
            bytes: std::fs::read(e.path())?,
        });
    }
    out.sort_by_key(|s| (s.task, s.node));
    Ok(out)
}
