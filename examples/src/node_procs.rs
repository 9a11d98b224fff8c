//! [`NodeProcs`]: `tempest node` processes on loopback, for benchmarks and tests: free ports
//! from the OS (below the ephemeral range, so a killed node gets its port back), a directory
//! of their own (data, logs, secret), and every process they started killed when they are
//! dropped, even on a failure. They only ever signal the processes they started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A node process and how to restart it.
#[derive(Debug)]
pub struct NodeProc {
    /// Its node id (1-based).
    pub id: u64,
    /// The address it listens on.
    pub addr: String,
    /// The process, while it runs.
    pub child: Option<Child>,
}

/// Where a cluster's files live: a temporary directory deleted at the end, or a directory
/// kept for a post-mortem.
#[derive(Debug)]
pub enum NodeDir {
    /// Deleted when dropped (unless `TEMPEST_KEEP_NODE_DIRS` is set).
    Temp(tempfile::TempDir),
    /// Kept.
    Kept(PathBuf),
}

impl NodeDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        match self {
            NodeDir::Temp(t) => t.path(),
            NodeDir::Kept(p) => p,
        }
    }
}

/// A cluster of node processes of one binary.
#[derive(Debug)]
pub struct NodeProcs {
    /// The binary (with a `node` command).
    pub bin: PathBuf,
    /// Their directory: `node-<id>/` data, `node-<id>.log`, `secret`.
    pub dir: NodeDir,
    /// The cluster secret file.
    pub secret: PathBuf,
    /// The nodes.
    pub nodes: Vec<NodeProc>,
    peers: String,
    extra: Vec<String>,
    /// Flags of each node's own, after `extra`.
    own: Vec<Vec<String>>,
}

/// A port the OS says is free now (bound, then released).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A port for a node: free now (bound, then released) and, on Linux, below the ephemeral
/// range, so that no outgoing connection takes it while the node is down between a kill and
/// its restart on the same address. Elsewhere, any free port.
pub fn node_port() -> std::io::Result<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok());
    if let Some(low) = low.filter(|l| *l > 12_000) {
        for _ in 0..64 {
            let port = rand::random_range(10_000..low);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    free_port()
}

impl NodeProcs {
    /// Starts `n` nodes of `bin` (the first three run the manager), each with `extra` flags,
    /// in a temporary directory.
    pub fn start(bin: &Path, n: usize, extra: &[&str]) -> std::io::Result<NodeProcs> {
        let mut procs = Self::prepare(bin, NodeDir::Temp(tempfile::tempdir()?), n, extra)?;
        for i in 0..n {
            procs.spawn(i)?;
        }
        Ok(procs)
    }

    /// The cluster of [`NodeProcs::start`] in `dir`, with addresses and a secret but no
    /// process started yet: set each node's own flags with [`NodeProcs::set_own_flags`], then
    /// [`NodeProcs::spawn`] them.
    pub fn prepare(bin: &Path, dir: NodeDir, n: usize, extra: &[&str]) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.path())?;
        let secret = dir.path().join("secret");
        std::fs::write(&secret, format!("{:032x}\n", rand::random::<u128>()))?;
        let addrs: Vec<String> = (0..n)
            .map(|_| node_port().map(|p| format!("127.0.0.1:{p}")))
            .collect::<Result<_, _>>()?;
        Ok(NodeProcs {
            bin: bin.to_owned(),
            dir,
            secret,
            nodes: addrs
                .iter()
                .enumerate()
                .map(|(i, a)| NodeProc {
                    id: i as u64 + 1,
                    addr: a.clone(),
                    child: None,
                })
                .collect(),
            peers: addrs.join(","),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            own: vec![Vec::new(); n],
        })
    }

    /// Flags node `i` starts with after the common ones (from its next start on).
    pub fn set_own_flags(&mut self, i: usize, flags: Vec<String>) {
        self.own[i] = flags;
    }

    /// The process id of node `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// If node `i` exited on its own (it was not killed from here): its exit status, once
    /// (the process is reaped and forgotten).
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let status = self.nodes[i].child.as_mut()?.try_wait().ok()??;
        self.nodes[i].child = None;
        Some(status)
    }

    /// Whether node `i` runs (a process started here that has not exited).
    pub fn running(&mut self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts (or restarts, with its data kept) node `i`.
    pub fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let node = &self.nodes[i];
        let data = self.dir.path().join(format!("node-{}", node.id));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(node.id))?;
        let child = Command::new(&self.bin)
            .args(["node", "--id", &node.id.to_string(), "--listen", &node.addr])
            .args(["--peers", &self.peers])
            .arg("--data-dir")
            .arg(&data)
            .arg("--secret-file")
            .arg(&self.secret)
            .args(&self.extra)
            .args(&self.own[i])
            .env(
                "RUST_LOG",
                std::env::var("TEMPEST_NODE_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// SIGKILLs node `i` (a process started here) and reaps it.
    pub fn kill(&mut self, i: usize) -> std::io::Result<()> {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// The log file of node `id`.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    /// The log of node `id`, for failure messages.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }
}

impl Drop for NodeProcs {
    /// Kills every node still running and deletes the directory, unless
    /// `TEMPEST_KEEP_NODE_DIRS` is set (for a post-mortem of the logs).
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::env::var_os("TEMPEST_KEEP_NODE_DIRS").is_some() {
            if let NodeDir::Temp(t) =
                std::mem::replace(&mut self.dir, NodeDir::Kept(PathBuf::new()))
            {
                let kept = t.keep();
                tracing::warn!(dir = %kept.display(), "node directory kept");
            }
        }
    }
}

/// Lines written so far into the files of `dir` (0 if it does not exist).
pub fn dir_lines(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read(e.path()).ok())
                .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
                .sum()
        })
        .unwrap_or(0)
}

/// Polls `f` every 20 ms until it returns `Some`, or fails after `deadline`.
pub fn poll<T>(
    what: &str,
    deadline: std::time::Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let end = std::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        anyhow::ensure!(
            std::time::Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The value of `key=` in a node's log line (a field or a span's), without quotes.
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = [' ', '{']
        .iter()
        .filter_map(|c| line.find(&format!("{c}{key}=")))
        .min()?
        + key.len()
        + 2;
    let rest = &line[at..];
    let end = rest.find([' ', '}', ':']).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// The wall-clock ms of the first commit of `group` by a leader of term `term` or later,
/// stamped at `since_ms` or later, from the "leader's first commit" lines of `nodes`' logs: a
/// failover's end (the leader of the term may be new, or the old one back from a restart).
pub fn first_commit_after(
    procs: &NodeProcs,
    nodes: &[u64],
    group: &str,
    term: u64,
    since_ms: f64,
) -> Option<f64> {
    let logs: Vec<String> = nodes.iter().map(|id| procs.log(*id)).collect();
    first_commit_in(logs.iter().flat_map(|l| l.lines()), group, term, since_ms)
}

/// [`first_commit_after`] over log lines.
pub fn first_commit_in<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    group: &str,
    term: u64,
    since_ms: f64,
) -> Option<f64> {
    lines
        .into_iter()
        .filter(|l| l.contains("leader's first commit"))
        .filter(|l| log_field(l, "group") == Some(group))
        .filter(|l| log_field(l, "term").and_then(|t| t.parse::<u64>().ok()) >= Some(term))
        .filter_map(|l| log_field(l, "at_ms")?.parse::<f64>().ok())
        .filter(|at| *at >= since_ms)
        .reduce(f64::min)
}

/// The latest (term, leader) of each replicated task's group, from the "group leader" lines of
/// `nodes`' logs: group -> (term, leader node id).
pub fn group_leaders(procs: &NodeProcs, nodes: &[u64]) -> BTreeMap<String, (u64, u64)> {
    let logs: Vec<String> = nodes.iter().map(|id| procs.log(*id)).collect();
    leaders_in(logs.iter().flat_map(|l| l.lines()))
}

/// [`group_leaders`] over log lines.
pub fn leaders_in<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in lines.into_iter().filter(|l| l.contains("group leader")) {
        let parsed = (|| {
            let group = log_field(line, "group")?.to_owned();
            let term: u64 = log_field(line, "term")?.parse().ok()?;
            let leader: u64 = log_field(line, "leader")?
                .trim_start_matches('n')
                .parse()
                .ok()?;
            Some((group, term, leader))
        })();
        if let Some((group, term, leader)) = parsed {
            let e = out.entry(group).or_default();
            if term >= e.0 {
                *e = (term, leader);
            }
        }
    }
    out
}
