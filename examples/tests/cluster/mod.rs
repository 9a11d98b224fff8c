//! A cluster of real `tempest node` processes on loopback for tests ([`NodeProcs`] kills them
//! when dropped, even when the test fails), and helpers to talk to it.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use tempest_examples::node_procs::NodeProcs;
#[allow(unused_imports)] // used by some test binaries only
pub(crate) use tempest_examples::node_procs::free_port;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tempest");

/// A cluster of node processes of the `tempest` binary, with client helpers.
pub(crate) struct Cluster {
    pub(crate) procs: NodeProcs,
}

impl std::ops::Deref for Cluster {
    type Target = NodeProcs;
    fn deref(&self) -> &NodeProcs {
        &self.procs
    }
}

impl Cluster {
    /// Starts `n` nodes with `extra` flags each.
    pub(crate) fn start(n: usize, extra: &[&str]) -> anyhow::Result<Cluster> {
        Ok(Cluster {
            procs: NodeProcs::start(Path::new(BIN), n, extra)?,
        })
    }

    /// Starts (or restarts, with its data kept) node `i`.
    pub(crate) fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        Ok(self.procs.spawn(i)?)
    }

    /// SIGKILLs node `i` and reaps it.
    pub(crate) fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        Ok(self.procs.kill(i)?)
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
}

pub(crate) use tempest_examples::node_procs::poll;

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
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

/// Polls `tempest status wordcount` through node `via` until the topology finished.
pub(crate) fn finished(
    c: &Cluster,
    via: usize,
    deadline: std::time::Duration,
) -> anyhow::Result<String> {
    finished_named(c, via, "wordcount", deadline)
}

/// Polls `tempest status NAME` through node `via` until the topology finished.
pub(crate) fn finished_named(
    c: &Cluster,
    via: usize,
    name: &str,
    deadline: std::time::Duration,
) -> anyhow::Result<String> {
    poll("the topology to finish", deadline, || {
        let o = c.cli(via, &["status", name])?;
        let s = stdout(&o);
        Ok(s.contains("status=finished").then_some(s))
    })
}

/// Waits until three nodes are up and the manager has a leader.
pub(crate) fn three_up(c: &Cluster) -> anyhow::Result<Membership> {
    poll("three nodes up", std::time::Duration::from_secs(30), || {
        Ok(c.nodes(0)?
            .filter(|m| m.nodes.len() == 3 && m.nodes.iter().all(|n| n.up) && m.leader().is_some()))
    })
}

/// Lines the sink wrote so far into `dir`.
pub(crate) fn lines(dir: &Path) -> u64 {
    tempest_examples::node_procs::dir_lines(dir)
}
