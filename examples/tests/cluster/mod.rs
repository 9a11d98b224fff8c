//! A cluster of real `tempest node` processes on loopback for tests: free ports from the OS,
//! its own temporary directory, and every process it started killed when it is dropped (even
//! when the test fails). It only ever signals the processes it started.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tempest");

/// A node process and how to restart it.
pub(crate) struct NodeProc {
    pub(crate) id: u64,
    pub(crate) addr: String,
    pub(crate) child: Option<Child>,
}

/// What `tempest nodes` printed.
#[derive(Debug)]
pub(crate) struct Membership {
    pub(crate) term: u64,
    pub(crate) nodes: Vec<NodeLine>,
}

/// One node of `tempest nodes`.
#[derive(Debug)]
pub(crate) struct NodeLine {
    pub(crate) id: u64,
    pub(crate) up: bool,
    pub(crate) leader: bool,
}

impl Membership {
    pub(crate) fn leader(&self) -> Option<u64> {
        self.nodes.iter().find(|n| n.leader).map(|n| n.id)
    }
}

pub(crate) struct Cluster {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) secret: PathBuf,
    pub(crate) nodes: Vec<NodeProc>,
    peers: String,
    extra: Vec<String>,
}

/// A port the OS says is free now (bound, then released).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Cluster {
    /// Starts `n` nodes, all of them manager peers when `n` <= 3, with `extra` flags each.
    pub(crate) fn start(n: usize, extra: &[&str]) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "a cluster secret for the cluster tests\n")?;
        let addrs: Vec<String> = (0..n)
            .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
            .collect::<Result<_, _>>()?;
        let mut c = Cluster {
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
        };
        for i in 0..n {
            c.spawn(i)?;
        }
        Ok(c)
    }

    /// Starts (or restarts, with its data kept) node `i`.
    pub(crate) fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let data = self.dir.path().join(format!("node-{}", node.id));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{}.log", node.id)))?;
        let child = Command::new(BIN)
            .args(["node", "--id", &node.id.to_string(), "--listen", &node.addr])
            .args(["--peers", &self.peers])
            .arg("--data-dir")
            .arg(&data)
            .arg("--secret-file")
            .arg(&self.secret)
            .args(&self.extra)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// SIGKILLs node `i` (a process this cluster started) and reaps it.
    pub(crate) fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Runs a client command against node `i`.
    pub(crate) fn cli(&self, i: usize, args: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new(BIN)
            .args(args)
            .args(["--node", &self.nodes[i].addr])
            .arg("--secret-file")
            .arg(&self.secret)
            .output()?)
    }

    /// `tempest nodes` through node `i`, if it answered.
    pub(crate) fn nodes(&self, i: usize) -> anyhow::Result<Option<Membership>> {
        let out = self.cli(i, &["nodes", "--timeout-ms", "3000"])?;
        if !out.status.success() {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut term = 0;
        let mut nodes = Vec::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("manager term=") {
                term = t.trim().parse()?;
            } else if let Some(rest) = line.strip_prefix('n') {
                let id: u64 = rest.split_whitespace().next().unwrap_or("").parse()?;
                nodes.push(NodeLine {
                    id,
                    up: line.contains(" up "),
                    leader: line.contains("manager-leader"),
                });
            }
        }
        Ok(Some(Membership { term, nodes }))
    }

    /// The node log of node `id`, for failure messages.
    pub(crate) fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some`, or fails after `deadline`.
pub(crate) fn poll<T>(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        anyhow::ensure!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
