//! [`ManagerState`]: what the manager (Storm's Nimbus) replicates through Raft: the nodes of
//! the cluster, the submitted topologies and where their tasks run. Commands are applied on
//! every manager replica in log order; placement happens inside `apply` through the pure
//! [`scheduler`](super::scheduler), so every replica computes the same assignment.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tempest_dsl::TaskId;

use crate::cluster::scheduler::{self, Load};
use crate::ids::NodeId;
use crate::replication::{EntryContext, ReplicatedState};

/// The most tasks one topology may have (components and ackers).
pub const MAX_TOPOLOGY_TASKS: u32 = 100_000;

/// Checks a topology's name: 1 to 128 characters of letters, digits, `.`, `_` and `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid topology name {name:?}: use 1 to 128 letters, digits, `.`, `_` or `-`"
        ))
    }
}

/// Whether a node is counted as alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    /// It heartbeats: tasks may be placed on it.
    Up,
    /// It stopped heartbeating: its tasks were moved.
    Down,
}

/// A node the manager knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The address others reach it at.
    pub addr: String,
    /// Up or down.
    pub status: NodeStatus,
    /// The process's incarnation (drawn at its start): a new one means the node restarted,
    /// and what it ran died with its earlier process.
    #[serde(default)]
    pub incarnation: u64,
}

/// Whether a topology runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopologyStatus {
    /// Its tasks are assigned to nodes.
    Running,
    /// Every one of its component tasks finished (a finite input was processed).
    Finished,
    /// It was killed: no task of it is assigned.
    Killed,
    /// A checkpointed run whose tasks kept failing: rolled back
    /// [`MAX_FAILED_ROLLBACKS`] times in a row without completing a checkpoint, it was
    /// stopped (no task of it is assigned).
    Failed,
}

/// How many rollbacks for failed tasks a checkpointed run may take in a row, with no
/// checkpoint completed between them, before it is stopped as failed (a bug that fails every
/// time would otherwise restart it for ever).
pub const MAX_FAILED_ROLLBACKS: u32 = 5;

/// A submitted topology.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyRecord {
    /// The registered topology it runs (every node builds it from this name and the args).
    pub topology: String,
    /// The arguments it was submitted with.
    pub args: BTreeMap<String, String>,
    /// Its components and their parallelism, in task order (tasks are numbered through them).
    pub components: Vec<(String, u32)>,
    /// Its tasks: the components' and then the ackers'.
    pub tasks: u32,
    /// The run's seed (the tasks' ack-tree ids derive from it, the same on every node).
    pub seed: u64,
    /// The component tasks that finished.
    pub finished: std::collections::BTreeSet<TaskId>,
    /// The nodes that started their tasks of it, as assigned since `assigned_at`.
    pub ready: std::collections::BTreeSet<NodeId>,
    /// The state version at which its assignment last changed: a node is ready only once it
    /// applied a state at least this recent.
    pub assigned_at: u64,
    /// Whether its spouts may run: every node of its first assignment started its tasks, so
    /// no tuple is sent to a task that does not exist yet.
    pub active: bool,
    /// Where each task runs; for a replicated task, the replica that led it when the
    /// assignment was made (senders follow its group's leader as it changes).
    pub assignment: BTreeMap<TaskId, NodeId>,
    /// The replicas of each replicated task, on distinct nodes (they do not move when a node
    /// dies: the group goes on with the others).
    #[serde(default)]
    pub replicas: BTreeMap<TaskId, Vec<NodeId>>,
    /// Running or killed.
    pub status: TopologyStatus,
    /// How many times its tasks were moved off a dead node.
    pub reschedules: u64,
    /// Whether it takes checkpoints (its stateful tasks recover by rolling back to one).
    #[serde(default)]
    pub checkpointed: bool,
    /// How many times it was rolled back: a checkpointed run whose tasks move restarts on
    /// every node from its last recorded checkpoint, as a new generation (what the previous
    /// one still sends is told apart and dropped).
    #[serde(default)]
    pub generation: u32,
    /// Its last checkpoint recorded complete (stored on two nodes): what a rollback restores.
    #[serde(default)]
    pub checkpoint: Option<u64>,
    /// Rollbacks for failed tasks since its last checkpoint was recorded.
    #[serde(default)]
    pub failed_rollbacks: u32,
    /// The committed position of each seekable spout task (exactly-once): every message
    /// before it completed. A spout task that starts again (its node died) seeks there.
    #[serde(default)]
    pub positions: BTreeMap<TaskId, u64>,
}

impl TopologyRecord {
    /// Restarts a checkpointed run everywhere from its last checkpoint: a new generation,
    /// whose nodes start again and whose spouts wait until all of them did.
    fn roll_back(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.finished.clear();
        self.ready.clear();
        self.active = false;
    }
}

/// The manager's replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerState {
    /// Every node that joined, by id.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Every submitted topology, by name.
    pub topologies: BTreeMap<String, TopologyRecord>,
    /// Bumped by every change, so nodes can tell their assignment moved.
    pub version: u64,
}

/// A change to the manager's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManagerCommand {
    /// A node heartbeats for the first time, or again after being down.
    Join {
        /// The node.
        node: NodeId,
        /// Its address.
        addr: String,
        /// Its process's incarnation.
        #[serde(default)]
        incarnation: u64,
    },
    /// A node stopped heartbeating: move its tasks.
    Down {
        /// The node.
        node: NodeId,
    },
    /// A node has been down for the replace timeout: move its replicas of stateful tasks
    /// `tasks` (topology, task) to other live nodes ([`ManagerState::replacements`]; the
    /// leader lists only groups whose voters are the ones assigned).
    Replace {
        /// The node.
        node: NodeId,
        /// The replicated tasks whose replica on `node` moves.
        tasks: Vec<(String, TaskId)>,
    },
    /// Start a topology.
    Submit {
        /// The name it runs under (unique among running topologies).
        name: String,
        /// The registered topology.
        topology: String,
        /// Its arguments.
        args: BTreeMap<String, String>,
        /// Its components and parallelism, from the built topology.
        components: Vec<(String, u32)>,
        /// All its tasks, ackers included.
        tasks: u32,
        /// The run's seed.
        seed: u64,
        /// The replicated tasks (of stateful bolts) and their replica counts.
        #[serde(default)]
        replicated: BTreeMap<TaskId, u32>,
        /// Whether it takes checkpoints.
        #[serde(default)]
        checkpointed: bool,
    },
    /// A node started its tasks of a run.
    Ready {
        /// The topology.
        name: String,
        /// The run's seed.
        seed: u64,
        /// The node.
        node: NodeId,
        /// The state version whose assignment the node started.
        version: u64,
        /// The run's generation the node started.
        #[serde(default)]
        generation: u32,
    },
    /// Tasks of a run finished.
    Finished {
        /// The topology.
        name: String,
        /// The run's seed (reports of an older run of the name are ignored).
        seed: u64,
        /// The tasks.
        tasks: Vec<TaskId>,
        /// The generation they finished in (reports of an earlier one are ignored).
        #[serde(default)]
        generation: u32,
    },
    /// A task of a checkpointed run failed (its state or position is lost with it): the run
    /// rolls back to its last checkpoint, as when a node dies.
    RollBack {
        /// The topology.
        name: String,
        /// The run's seed.
        seed: u64,
        /// The generation a task of which failed (a report about an earlier one is ignored).
        generation: u32,
    },
    /// A checkpointed run's checkpoint completed and was stored on two nodes.
    Checkpointed {
        /// The topology.
        name: String,
        /// The run's seed.
        seed: u64,
        /// The generation that took it.
        generation: u32,
        /// The checkpoint.
        id: u64,
    },
    /// Seekable spout tasks' committed positions moved on (they only grow).
    Committed {
        /// (topology, run seed, task, position).
        positions: Vec<(String, u64, TaskId, u64)>,
    },
    /// Stop a topology.
    Kill {
        /// Its name.
        name: String,
    },
}

/// What applying a command returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManagerReply {
    /// Applied.
    Done,
    /// The topology's tasks were placed on this many nodes.
    Submitted {
        /// Its tasks.
        tasks: u32,
        /// The nodes they went to.
        nodes: usize,
    },
    /// Refused, and why (the state did not change).
    Refused(String),
}

impl ManagerState {
    /// Tasks per live node, over every running topology.
    fn load(&self) -> Load {
        let mut load: Load = self
            .nodes
            .iter()
            .filter(|(_, r)| r.status == NodeStatus::Up)
            .map(|(n, _)| (*n, 0))
            .collect();
        for t in self.topologies.values() {
            if t.status == TopologyStatus::Running {
                for (task, n) in &t.assignment {
                    // A replicated task weighs on each of its replicas' nodes.
                    let nodes = t.replicas.get(task).map_or(std::slice::from_ref(n), |r| r);
                    for n in nodes {
                        if let Some(l) = load.get_mut(n) {
                            *l += 1;
                        }
                    }
                }
            }
        }
        load
    }

    /// Moves every task on a node that is not up to a live one.
    fn reschedule_all(&mut self) {
        let mut load = self.load();
        let next = self.version + 1;
        for t in self.topologies.values_mut() {
            if t.status != TopologyStatus::Running {
                continue;
            }
            // A replicated task's place is one of its replicas: the next live one.
            for (task, replicas) in &t.replicas {
                if let Some(node) = t.assignment.get_mut(task) {
                    if !load.contains_key(node) {
                        if let Some(live) = replicas.iter().find(|n| load.contains_key(n)) {
                            *node = *live;
                        }
                    }
                }
            }
            let (mut fixed, mut movable): (BTreeMap<_, _>, BTreeMap<_, _>) =
                std::mem::take(&mut t.assignment)
                    .into_iter()
                    .partition(|(task, _)| t.replicas.contains_key(task));
            let rescheduled = scheduler::reschedule(&mut movable, &mut load);
            fixed.append(&mut movable);
            t.assignment = fixed;
            if let Some(moved) = rescheduled {
                if moved > 0 {
                    t.reschedules += 1;
                    t.assigned_at = next;
                    if t.checkpointed {
                        // The moved tasks' state is in the last checkpoint, with the other
                        // tasks' and the spouts' positions at that cut: all go back to it.
                        t.roll_back();
                    } else if !t.active {
                        // The nodes that got moved tasks have not started them yet.
                        t.ready.clear();
                    }
                }
            }
        }
    }

    /// Where the replicas on `node` would move if it is replaced now: (topology, task, new
    /// node), for every replicated task of a running topology with a replica on `node`, while
    /// `node` is down. A replica moves only while a majority of its group stays on live nodes
    /// (a group without a quorum cannot add a member, and moving most of a group would leave
    /// its state on the nodes it left) and to a live node holding no replica of the group yet,
    /// the least loaded first.
    pub fn replacements(&self, node: NodeId) -> Vec<(String, TaskId, NodeId)> {
        if self
            .nodes
            .get(&node)
            .is_none_or(|r| r.status != NodeStatus::Down)
        {
            return Vec::new();
        }
        let mut load = self.load();
        let mut out = Vec::new();
        for (name, t) in &self.topologies {
            if t.status != TopologyStatus::Running {
                continue;
            }
            for (task, replicas) in &t.replicas {
                if !replicas.contains(&node) {
                    continue;
                }
                let live = replicas.iter().filter(|n| load.contains_key(n)).count();
                if live < replicas.len() / 2 + 1 {
                    continue;
                }
                let taken: std::collections::BTreeSet<NodeId> = replicas.iter().copied().collect();
                let Some(to) = scheduler::place_replacement(&mut load, &taken) else {
                    continue;
                };
                out.push((name.clone(), *task, to));
            }
        }
        out
    }

    /// The record of run `seed` of topology `name`, if it is running.
    fn running(&mut self, name: &str, seed: u64) -> Option<&mut TopologyRecord> {
        self.topologies
            .get_mut(name)
            .filter(|t| t.seed == seed && t.status == TopologyStatus::Running)
    }

    /// Lets a topology's spouts run once every node its tasks are on has started them (after a
    /// node died, its tasks may have moved to nodes that are all ready).
    fn activate_ready(&mut self) {
        for t in self.topologies.values_mut() {
            if t.status == TopologyStatus::Running
                && !t.active
                && !t.assignment.is_empty()
                && t.assignment.values().all(|n| t.ready.contains(n))
            {
                t.active = true;
            }
        }
    }

    /// Applies one command (deterministic: the same on every replica).
    pub fn execute(&mut self, cmd: ManagerCommand) -> ManagerReply {
        let reply = match cmd {
            ManagerCommand::Join {
                node,
                addr,
                incarnation,
            } => {
                let restarted = self.nodes.get_mut(&node).filter(|r| {
                    r.status == NodeStatus::Up && r.incarnation != 0 && r.incarnation != incarnation
                });
                if let Some(r) = restarted {
                    // It restarted before anyone declared it down: its tasks died with its
                    // earlier process, so they move as if it had been (their senders settle
                    // what they sent to it).
                    r.status = NodeStatus::Down;
                    self.reschedule_all();
                }
                self.nodes.insert(
                    node,
                    NodeRecord {
                        addr,
                        status: NodeStatus::Up,
                        incarnation,
                    },
                );
                // Tasks stranded while no node was live get a home now.
                self.reschedule_all();
                self.activate_ready();
                ManagerReply::Done
            }
            ManagerCommand::Down { node } => {
                match self.nodes.get_mut(&node) {
                    Some(r) if r.status == NodeStatus::Up => r.status = NodeStatus::Down,
                    _ => return ManagerReply::Done,
                }
                self.reschedule_all();
                self.activate_ready();
                ManagerReply::Done
            }
            ManagerCommand::Replace { node, tasks } => {
                let moves: Vec<_> = self
                    .replacements(node)
                    .into_iter()
                    .filter(|(name, task, _)| tasks.iter().any(|(n, t)| n == name && t == task))
                    .collect();
                if moves.is_empty() {
                    return ManagerReply::Done;
                }
                let next = self.version + 1;
                for (name, task, to) in moves {
                    let Some(t) = self.topologies.get_mut(&name) else {
                        continue;
                    };
                    if let Some(r) = t.replicas.get_mut(&task) {
                        for n in r.iter_mut().filter(|n| **n == node) {
                            *n = to;
                        }
                        t.assigned_at = next;
                        t.reschedules += 1;
                    }
                }
                ManagerReply::Done
            }
            ManagerCommand::Submit {
                name,
                topology,
                args,
                components,
                tasks,
                seed,
                replicated,
                checkpointed,
            } => {
                if let Err(why) = check_name(&name) {
                    return ManagerReply::Refused(why);
                }
                let component_tasks = components
                    .iter()
                    .try_fold(0u32, |n, (_, p)| n.checked_add(*p));
                if component_tasks.is_none_or(|c| c > tasks) || tasks > MAX_TOPOLOGY_TASKS {
                    return ManagerReply::Refused(format!(
                        "a topology of {tasks} tasks: at most {MAX_TOPOLOGY_TASKS}, and at least its components' tasks"
                    ));
                }
                if self
                    .topologies
                    .get(&name)
                    .is_some_and(|t| t.status == TopologyStatus::Running)
                {
                    return ManagerReply::Refused(format!("`{name}` is already running"));
                }
                let mut load = self.load();
                let plain = tasks.saturating_sub(replicated.len() as u32);
                let Some(placed) = scheduler::place(plain, &mut load) else {
                    return ManagerReply::Refused("no live node to run it on".into());
                };
                // The plain tasks take the numbers the replicated ones leave free.
                let mut numbers = (0..tasks)
                    .map(TaskId)
                    .filter(|t| !replicated.contains_key(t));
                let mut assignment: BTreeMap<TaskId, NodeId> = placed
                    .into_values()
                    .filter_map(|n| numbers.next().map(|t| (t, n)))
                    .collect();
                let mut replicas = BTreeMap::new();
                for (task, r) in &replicated {
                    if task.0 >= tasks {
                        return ManagerReply::Refused(format!("no task {task} to replicate"));
                    }
                    let Some(nodes) = scheduler::place_replicas(*r as usize, &mut load) else {
                        return ManagerReply::Refused(format!(
                            "{r} replicas of a stateful task need {r} live nodes, and {} are up",
                            load.len()
                        ));
                    };
                    assignment.insert(*task, nodes[0]);
                    replicas.insert(*task, nodes);
                }
                let nodes = assignment
                    .values()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len();
                self.topologies.insert(
                    name,
                    TopologyRecord {
                        topology,
                        args,
                        components,
                        tasks,
                        seed,
                        finished: std::collections::BTreeSet::new(),
                        ready: std::collections::BTreeSet::new(),
                        assigned_at: self.version + 1,
                        active: false,
                        assignment,
                        replicas,
                        status: TopologyStatus::Running,
                        reschedules: 0,
                        checkpointed,
                        generation: 0,
                        checkpoint: None,
                        failed_rollbacks: 0,
                        positions: BTreeMap::new(),
                    },
                );
                ManagerReply::Submitted { tasks, nodes }
            }
            ManagerCommand::Ready {
                name,
                seed,
                node,
                version,
                generation,
            } => {
                let Some(t) = self.running(&name, seed) else {
                    return ManagerReply::Done;
                };
                if version < t.assigned_at || generation != t.generation || !t.ready.insert(node) {
                    return ManagerReply::Done;
                }
                self.activate_ready();
                ManagerReply::Done
            }
            ManagerCommand::Finished {
                name,
                seed,
                tasks,
                generation,
            } => {
                let Some(t) = self
                    .running(&name, seed)
                    .filter(|t| t.generation == generation)
                else {
                    return ManagerReply::Done;
                };
                let before = t.finished.len();
                let components: u32 = t
                    .components
                    .iter()
                    .map(|(_, p)| *p)
                    .fold(0, u32::saturating_add);
                t.finished
                    .extend(tasks.into_iter().filter(|task| task.0 < components));
                if t.finished.len() == before {
                    return ManagerReply::Done;
                }
                if t.finished.len() == components as usize {
                    t.status = TopologyStatus::Finished;
                    t.assignment.clear();
                }
                ManagerReply::Done
            }
            ManagerCommand::RollBack {
                name,
                seed,
                generation,
            } => {
                let next = self.version + 1;
                let Some(t) = self
                    .running(&name, seed)
                    .filter(|t| t.checkpointed && t.generation == generation)
                else {
                    return ManagerReply::Done;
                };
                t.failed_rollbacks += 1;
                if t.failed_rollbacks > MAX_FAILED_ROLLBACKS {
                    t.status = TopologyStatus::Failed;
                    t.assignment.clear();
                } else {
                    t.roll_back();
                    t.assigned_at = next;
                }
                ManagerReply::Done
            }
            ManagerCommand::Checkpointed {
                name,
                seed,
                generation,
                id,
            } => {
                let Some(t) = self
                    .running(&name, seed)
                    .filter(|t| t.checkpointed && t.generation == generation)
                else {
                    return ManagerReply::Done;
                };
                if t.checkpoint.is_some_and(|c| c >= id) {
                    return ManagerReply::Done;
                }
                t.checkpoint = Some(id);
                t.failed_rollbacks = 0;
                ManagerReply::Done
            }
            ManagerCommand::Committed { positions } => {
                for (name, seed, task, position) in positions {
                    if let Some(t) = self.running(&name, seed) {
                        let p = t.positions.entry(task).or_insert(position);
                        *p = (*p).max(position);
                    }
                }
                ManagerReply::Done
            }
            ManagerCommand::Kill { name } => match self.topologies.get_mut(&name) {
                Some(t) if t.status == TopologyStatus::Running => {
                    t.status = TopologyStatus::Killed;
                    t.assignment.clear();
                    ManagerReply::Done
                }
                Some(_) => return ManagerReply::Refused(format!("`{name}` is not running")),
                None => return ManagerReply::Refused(format!("no topology `{name}`")),
            },
        };
        self.version += 1;
        reply
    }

    /// Every running topology and where its tasks run, as nodes need them.
    pub fn placements(&self) -> Vec<crate::cluster::admin::Placement> {
        self.topologies
            .iter()
            .filter(|(_, t)| t.status == TopologyStatus::Running)
            .map(|(name, t)| crate::cluster::admin::Placement {
                name: name.clone(),
                topology: t.topology.clone(),
                args: t.args.clone(),
                seed: t.seed,
                assignment: t.assignment.clone(),
                replicas: t.replicas.clone(),
                finished: t.finished.clone(),
                active: t.active,
                generation: t.generation,
                checkpoint: t.checkpoint,
                positions: t.positions.clone(),
            })
            .collect()
    }

    /// The address of every node that is up.
    pub fn addrs(&self) -> BTreeMap<NodeId, String> {
        self.nodes
            .iter()
            .filter(|(_, r)| r.status == NodeStatus::Up)
            .map(|(n, r)| (*n, r.addr.clone()))
            .collect()
    }

    /// The tasks assigned to `node`: (topology, component, task).
    pub fn tasks_of(&self, node: NodeId) -> Vec<(String, String, TaskId)> {
        let mut out = Vec::new();
        for (name, t) in &self.topologies {
            for (task, n) in &t.assignment {
                if *n == node {
                    out.push((name.clone(), component_of(&t.components, *task), *task));
                }
            }
        }
        out
    }
}

/// The component a task belongs to (tasks are numbered through the components in order).
fn component_of(components: &[(String, u32)], task: TaskId) -> String {
    let mut first = 0u32;
    for (name, p) in components {
        let end = first.saturating_add(*p);
        if task.0 < end {
            return name.clone();
        }
        first = end;
    }
    "__acker".to_owned()
}

impl ReplicatedState for ManagerState {
    type Answer = ManagerReply;
    fn apply(&mut self, command: &[u8], _at: EntryContext) -> ManagerReply {
        match rmp_serde::from_slice::<ManagerCommand>(command) {
            Ok(cmd) => self.execute(cmd),
            // Every replica refuses the same bytes the same way.
            Err(e) => ManagerReply::Refused(format!("an undecodable command: {e}")),
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec(self).map_err(|e| e.to_string())
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        *self = rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn join(s: &mut ManagerState, n: u64) {
        s.execute(ManagerCommand::Join {
            node: NodeId(n),
            addr: format!("10.0.0.{n}:7000"),
            incarnation: 1,
        });
    }

    fn submit(s: &mut ManagerState, name: &str) -> ManagerReply {
        s.execute(ManagerCommand::Submit {
            checkpointed: false,
            name: name.into(),
            topology: "wordcount".into(),
            args: BTreeMap::new(),
            components: vec![("spout".into(), 2), ("bolt".into(), 4)],
            tasks: 6,
            seed: 1,
            replicated: BTreeMap::new(),
        })
    }

    #[test]
    fn a_checkpointed_run_rolls_back_everywhere_when_a_node_with_its_tasks_dies() {
        let mut s = ManagerState::default();
        for n in 1..=3 {
            join(&mut s, n);
        }
        s.execute(ManagerCommand::Submit {
            checkpointed: true,
            name: "wc".into(),
            topology: "wordcount".into(),
            args: BTreeMap::new(),
            components: vec![("spout".into(), 3), ("count".into(), 3)],
            tasks: 6,
            seed: 1,
            replicated: BTreeMap::new(),
        });
        let version = s.version;
        for n in 1..=3 {
            s.execute(ManagerCommand::Ready {
                name: "wc".into(),
                seed: 1,
                node: NodeId(n),
                version,
                generation: 0,
            });
        }
        assert!(s.topologies["wc"].active);
        let checkpointed = |s: &mut ManagerState, generation, id| {
            s.execute(ManagerCommand::Checkpointed {
                name: "wc".into(),
                seed: 1,
                generation,
                id,
            })
        };
        checkpointed(&mut s, 0, 4);
        checkpointed(&mut s, 0, 3); // An older one changes nothing.
        s.execute(ManagerCommand::Finished {
            name: "wc".into(),
            seed: 1,
            tasks: vec![TaskId(0)],
            generation: 0,
        });
        assert_eq!(s.topologies["wc"].checkpoint, Some(4));

        s.execute(ManagerCommand::Down { node: NodeId(2) });
        let t = &s.topologies["wc"];
        assert_eq!(t.generation, 1, "rolled back");
        assert!(!t.active, "its spouts wait for every node to restart");
        assert!(
            t.finished.is_empty(),
            "every task runs again from the checkpoint"
        );
        assert!(t.assignment.values().all(|n| *n != NodeId(2)));
        let p = s.placements();
        assert_eq!((p[0].generation, p[0].checkpoint), (1, Some(4)));

        // Reports of the earlier generation are ignored; the new one's count.
        let version = s.version;
        s.execute(ManagerCommand::Finished {
            name: "wc".into(),
            seed: 1,
            tasks: vec![TaskId(1)],
            generation: 0,
        });
        checkpointed(&mut s, 0, 9);
        for n in [1, 3] {
            s.execute(ManagerCommand::Ready {
                name: "wc".into(),
                seed: 1,
                node: NodeId(n),
                version,
                generation: 0,
            });
        }
        let t = &s.topologies["wc"];
        assert!(t.finished.is_empty() && !t.active && t.checkpoint == Some(4));
        for n in [1, 3] {
            s.execute(ManagerCommand::Ready {
                name: "wc".into(),
                seed: 1,
                node: NodeId(n),
                version,
                generation: 1,
            });
        }
        checkpointed(&mut s, 1, 5);
        let t = &s.topologies["wc"];
        assert!(t.active);
        assert_eq!(t.checkpoint, Some(5));

        // A node without tasks of the run dies: no rollback.
        join(&mut s, 4);
        s.execute(ManagerCommand::Down { node: NodeId(4) });
        assert_eq!(s.topologies["wc"].generation, 1);

        // A task fails: a rollback, once per generation; a checkpoint between them resets the
        // count, and failures with none between them stop the run in the end.
        let roll_back = |s: &mut ManagerState, generation| {
            s.execute(ManagerCommand::RollBack {
                name: "wc".into(),
                seed: 1,
                generation,
            })
        };
        roll_back(&mut s, 1);
        roll_back(&mut s, 1); // The same failure reported again.
        assert_eq!(s.topologies["wc"].generation, 2);
        checkpointed(&mut s, 2, 9);
        for g in 2..2 + MAX_FAILED_ROLLBACKS {
            roll_back(&mut s, g);
            assert_eq!(s.topologies["wc"].status, TopologyStatus::Running);
        }
        roll_back(&mut s, 2 + MAX_FAILED_ROLLBACKS);
        let t = &s.topologies["wc"];
        assert_eq!(t.status, TopologyStatus::Failed, "it kept failing");
        assert!(t.assignment.is_empty());
        assert_eq!(t.checkpoint, Some(9));
    }

    #[test]
    fn a_submission_spreads_and_a_dead_node_s_tasks_move() {
        let mut s = ManagerState::default();
        assert!(
            matches!(submit(&mut s, "wc"), ManagerReply::Refused(_)),
            "no node yet"
        );
        for n in 1..=3 {
            join(&mut s, n);
        }
        assert_eq!(
            submit(&mut s, "wc"),
            ManagerReply::Submitted { tasks: 6, nodes: 3 }
        );
        assert!(matches!(submit(&mut s, "wc"), ManagerReply::Refused(_)));
        assert_eq!(s.tasks_of(NodeId(1)).len(), 2);
        assert_eq!(s.tasks_of(NodeId(1))[0].1, "spout");
        s.execute(ManagerCommand::Down { node: NodeId(2) });
        assert!(s.tasks_of(NodeId(2)).is_empty());
        assert_eq!(s.tasks_of(NodeId(1)).len() + s.tasks_of(NodeId(3)).len(), 6);
        assert_eq!(s.topologies["wc"].reschedules, 1);
        s.execute(ManagerCommand::Finished {
            generation: 0,
            name: "wc".into(),
            seed: 1,
            tasks: vec![TaskId(0), TaskId(1)],
        });
        assert_eq!(s.topologies["wc"].status, TopologyStatus::Running);
        s.execute(ManagerCommand::Finished {
            generation: 0,
            name: "wc".into(),
            seed: 99,
            tasks: (0..6).map(TaskId).collect(),
        });
        assert_eq!(
            s.topologies["wc"].status,
            TopologyStatus::Running,
            "another run's report"
        );
        s.execute(ManagerCommand::Kill { name: "wc".into() });
        assert!(s.tasks_of(NodeId(1)).is_empty());
        assert_eq!(
            submit(&mut s, "wc"),
            ManagerReply::Submitted { tasks: 6, nodes: 2 },
            "a killed topology can be submitted again"
        );
        s.execute(ManagerCommand::Finished {
            generation: 0,
            name: "wc".into(),
            seed: 1,
            tasks: (0..6).map(TaskId).collect(),
        });
        assert_eq!(s.topologies["wc"].status, TopologyStatus::Finished);
        assert!(s.tasks_of(NodeId(1)).is_empty());
    }

    #[test]
    fn spouts_start_once_every_node_is_ready_even_after_one_died() {
        let mut s = ManagerState::default();
        for n in 1..=3 {
            join(&mut s, n);
        }
        submit(&mut s, "wc");
        let ready = |s: &mut ManagerState, n: u64| {
            let version = s.version;
            s.execute(ManagerCommand::Ready {
                generation: 0,
                name: "wc".into(),
                seed: 1,
                node: NodeId(n),
                version,
            })
        };
        ready(&mut s, 1);
        ready(&mut s, 2);
        assert!(
            !s.topologies["wc"].active,
            "node 3 has not started its tasks"
        );
        // Node 3 dies before it is ready: its tasks move to nodes that must start them first.
        s.execute(ManagerCommand::Down { node: NodeId(3) });
        assert!(!s.topologies["wc"].active);
        let stale = s.topologies["wc"].assigned_at - 1;
        s.execute(ManagerCommand::Ready {
            generation: 0,
            name: "wc".into(),
            seed: 1,
            node: NodeId(1),
            version: stale,
        });
        assert!(
            s.topologies["wc"].ready.is_empty(),
            "a report from before the move"
        );
        ready(&mut s, 1);
        ready(&mut s, 2);
        assert!(s.topologies["wc"].active, "both started what they have now");
    }

    #[test]
    fn a_node_that_restarted_unnoticed_loses_its_tasks_to_the_others() {
        let mut s = ManagerState::default();
        for n in 1..=3 {
            join(&mut s, n);
        }
        submit(&mut s, "wc");
        let before = s.tasks_of(NodeId(2)).len();
        assert!(before > 0);
        join(&mut s, 2); // the same incarnation: nothing changes
        assert_eq!(s.tasks_of(NodeId(2)).len(), before);
        s.execute(ManagerCommand::Join {
            node: NodeId(2),
            addr: "10.0.0.2:7000".into(),
            incarnation: 2,
        });
        assert!(s.tasks_of(NodeId(2)).is_empty(), "its tasks moved");
        assert_eq!(s.nodes[&NodeId(2)].status, NodeStatus::Up);
        assert_eq!(s.topologies["wc"].reschedules, 1);
    }

    #[test]
    fn replicated_tasks_go_to_distinct_nodes_and_stay_there_when_one_dies() {
        let mut s = ManagerState::default();
        join(&mut s, 1);
        join(&mut s, 2);
        let submit_replicated = |s: &mut ManagerState| {
            s.execute(ManagerCommand::Submit {
                checkpointed: false,
                name: "counter".into(),
                topology: "t".into(),
                args: BTreeMap::new(),
                components: vec![("spout".into(), 2), ("count".into(), 2)],
                tasks: 5,
                seed: 1,
                replicated: [(TaskId(2), 3), (TaskId(3), 3)].into(),
            })
        };
        assert!(
            matches!(submit_replicated(&mut s), ManagerReply::Refused(why) if why.contains("3 live nodes")),
            "two nodes cannot hold three replicas"
        );
        join(&mut s, 3);
        join(&mut s, 4);
        assert!(matches!(
            submit_replicated(&mut s),
            ManagerReply::Submitted { tasks: 5, .. }
        ));
        let t = &s.topologies["counter"];
        assert_eq!(t.assignment.len(), 5, "every task has a place");
        for task in [TaskId(2), TaskId(3)] {
            let r = &t.replicas[&task];
            assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 3, "distinct nodes");
            assert_eq!(t.assignment[&task], r[0]);
        }
        let leader_node = t.assignment[&TaskId(2)];
        let before = t.replicas.clone();
        s.execute(ManagerCommand::Down { node: leader_node });
        let t = &s.topologies["counter"];
        assert_eq!(t.replicas, before, "replicas do not move");
        assert!(before[&TaskId(2)].contains(&t.assignment[&TaskId(2)]));
        assert_ne!(
            t.assignment[&TaskId(2)],
            leader_node,
            "its place is a live replica"
        );
        assert!(t.assignment.values().all(|n| *n != leader_node));
    }

    #[test]
    fn a_lost_node_s_replicas_move_to_spare_nodes_while_their_groups_keep_a_quorum() {
        let mut s = ManagerState::default();
        for n in 1..=4 {
            join(&mut s, n);
        }
        s.execute(ManagerCommand::Submit {
            checkpointed: false,
            name: "counter".into(),
            topology: "t".into(),
            args: BTreeMap::new(),
            components: vec![("spout".into(), 1), ("count".into(), 2)],
            tasks: 4,
            seed: 1,
            replicated: [(TaskId(1), 3), (TaskId(2), 3)].into(),
        });
        let before = s.topologies["counter"].replicas.clone();
        let lost = before[&TaskId(1)][1];
        assert!(
            s.replacements(lost).is_empty(),
            "nothing moves off a node that is up"
        );
        s.execute(ManagerCommand::Down { node: lost });
        let moves = s.replacements(lost);
        assert!(!moves.is_empty());
        let tasks = moves.iter().map(|(n, t, _)| (n.clone(), *t)).collect();
        s.execute(ManagerCommand::Replace { node: lost, tasks });
        let t = &s.topologies["counter"];
        for (task, r) in &t.replicas {
            assert_eq!(r.len(), 3, "{task}: R replicas again");
            assert!(!r.contains(&lost), "{task}: off the lost node");
            assert_eq!(
                r.iter().collect::<BTreeSet<_>>().len(),
                3,
                "{task}: on distinct nodes"
            );
            // Only the lost node's replica moved.
            let kept: Vec<_> = before[task].iter().filter(|n| **n != lost).collect();
            assert!(kept.iter().all(|n| r.contains(n)), "{task}");
        }
        assert!(s.replacements(lost).is_empty(), "done once");

        // Two of a group's three nodes down: no quorum, nothing moves (its state would be
        // left behind on the nodes it left).
        let t = &s.topologies["counter"];
        let r = t.replicas[&TaskId(1)].clone();
        join(&mut s, 5);
        s.execute(ManagerCommand::Down { node: r[0] });
        s.execute(ManagerCommand::Down { node: r[1] });
        assert!(
            s.replacements(r[0])
                .iter()
                .all(|(_, task, _)| *task != TaskId(1)),
            "a group without a quorum keeps its replicas"
        );
    }

    #[test]
    fn oversized_or_badly_named_submissions_are_refused_by_every_replica() {
        let mut s = ManagerState::default();
        join(&mut s, 1);
        let mut bad = |name: &str, components: Vec<(String, u32)>, tasks: u32| {
            s.execute(ManagerCommand::Submit {
                checkpointed: false,
                name: name.into(),
                topology: "t".into(),
                args: BTreeMap::new(),
                components,
                tasks,
                seed: 1,
                replicated: BTreeMap::new(),
            })
        };
        assert!(matches!(
            bad("x", vec![("a".into(), 5)], u32::MAX),
            ManagerReply::Refused(_)
        ));
        assert!(matches!(
            bad("x", vec![("a".into(), u32::MAX), ("b".into(), 2)], 10),
            ManagerReply::Refused(_)
        ));
        assert!(matches!(
            bad("x", vec![("a".into(), 5)], 3),
            ManagerReply::Refused(_)
        ));
        assert!(matches!(
            bad("a\0b", vec![("a".into(), 1)], 1),
            ManagerReply::Refused(_)
        ));
        assert!(matches!(
            bad("", vec![("a".into(), 1)], 1),
            ManagerReply::Refused(_)
        ));
        assert!(s.topologies.is_empty());
    }

    #[test]
    fn replicas_applying_the_same_commands_agree_byte_for_byte() {
        let cmds: Vec<Vec<u8>> = [
            ManagerCommand::Join {
                node: NodeId(3),
                addr: "c".into(),
                incarnation: 1,
            },
            ManagerCommand::Join {
                node: NodeId(1),
                addr: "a".into(),
                incarnation: 1,
            },
            ManagerCommand::Submit {
                checkpointed: false,
                name: "x".into(),
                topology: "t".into(),
                args: BTreeMap::new(),
                components: vec![("s".into(), 5)],
                tasks: 5,
                seed: 3,
                replicated: BTreeMap::new(),
            },
            ManagerCommand::Down { node: NodeId(3) },
        ]
        .iter()
        .map(|c| rmp_serde::to_vec(c).expect("encodes"))
        .chain([vec![0xc1, 0x00]])
        .collect();
        let run = || {
            let mut s = ManagerState::default();
            for (i, c) in cmds.iter().enumerate() {
                s.apply(
                    c,
                    EntryContext {
                        index: i as u64,
                        term: 1,
                        leader: 1,
                    },
                );
            }
            s.snapshot().expect("encodes")
        };
        assert_eq!(run(), run());
        let mut back = ManagerState::default();
        back.restore(&run()).expect("restores");
        assert_eq!(back.tasks_of(NodeId(1)).len(), 5);
    }
}
