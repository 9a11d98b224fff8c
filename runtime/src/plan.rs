//! The physical plan: which tasks exist, which worker thread runs each, and every link between
//! them. A pure core: no actors, no I/O.
//!
//! Tasks get dense ids in component order. Every task of a producer has one link to every task
//! of each subscribing bolt (a link per (subscription, target task) pair), numbered densely per
//! producer task in the order: stream, subscriber component, subscription, target task. The
//! engine's routers pick among those links; the runtime only moves batches along them.

use tempest_dsl::engine::{LinkId, RouteSetup, TaskSetup};
use tempest_dsl::{ComponentKind, TaskId, TopologyIr};

/// One task of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskPlan {
    /// The task's id.
    pub id: TaskId,
    /// Its component's index in the IR.
    pub component: usize,
    /// Its index within the component.
    pub index: u32,
    /// The worker (thread) that runs it.
    pub worker: usize,
    /// What kind of component.
    pub kind: ComponentKind,
    /// Its outgoing links, indexed by [`LinkId`].
    pub links: Vec<LinkPlan>,
    /// For each output stream, its subscriptions as the engine sees them.
    pub outputs: Vec<Vec<RouteSetup>>,
    /// How many end-of-stream markers it waits for before it finishes (one per upstream task
    /// per subscription).
    pub upstream_links: u32,
}

/// One outgoing link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkPlan {
    /// The receiving task.
    pub target: TaskId,
    /// The subscription of the receiver that this link feeds.
    pub input: u16,
}

/// Every task of a topology, placed on workers, with its links.
#[derive(Clone, Debug)]
pub struct PhysicalPlan {
    /// The tasks, indexed by `TaskId`.
    pub tasks: Vec<TaskPlan>,
    /// The number of workers.
    pub workers: usize,
    /// For each component, the id of its task 0 (its tasks are consecutive).
    pub first_task: Vec<TaskId>,
    /// The acker tasks (tracked guarantees only), with the worker of each. Their ids follow
    /// the component tasks'.
    pub ackers: Vec<(TaskId, usize)>,
    /// For each task, the tasks with links to it and how many links each has.
    upstream: Vec<Vec<(TaskId, u32)>>,
}

impl PhysicalPlan {
    /// Plans `ir` (already validated) over `workers` worker threads. Tasks are dealt round-robin
    /// over the workers in component order, so with parallelism equal to the worker count every
    /// worker runs one task of every component.
    pub fn new(ir: &TopologyIr, workers: usize) -> PhysicalPlan {
        let workers = workers.max(1);
        let mut first_task = Vec::with_capacity(ir.components.len());
        let mut tasks = Vec::new();
        for (ci, c) in ir.components.iter().enumerate() {
            first_task.push(TaskId(tasks.len() as u32));
            for index in 0..c.parallelism {
                let id = tasks.len();
                tasks.push(TaskPlan {
                    id: TaskId(id as u32),
                    component: ci,
                    index,
                    worker: id % workers,
                    kind: c.kind,
                    links: Vec::new(),
                    outputs: vec![Vec::new(); c.streams.len()],
                    upstream_links: 0,
                });
            }
        }

        // Subscriptions per (producer, stream): (consumer, input), in consumer then input order.
        for (pi, producer) in ir.components.iter().enumerate() {
            for (si, stream) in producer.streams.iter().enumerate() {
                let subscriptions: Vec<(usize, usize)> = ir
                    .components
                    .iter()
                    .enumerate()
                    .flat_map(|(ci, c)| {
                        c.inputs
                            .iter()
                            .enumerate()
                            .filter(|(_, input)| {
                                input.component == producer.name && input.stream == stream.name
                            })
                            .map(move |(ii, _)| (ci, ii))
                    })
                    .collect();
                for &(ci, ii) in &subscriptions {
                    let consumer = &ir.components[ci];
                    for t in 0..consumer.parallelism {
                        let target = first_task[ci].0 + t;
                        tasks[target as usize].upstream_links += producer.parallelism;
                    }
                    for p in 0..producer.parallelism {
                        let sender = (first_task[pi].0 + p) as usize;
                        let sender_worker = tasks[sender].worker;
                        let first_link = LinkId(tasks[sender].links.len() as u32);
                        let mut preferred = Vec::new();
                        for t in 0..consumer.parallelism {
                            let target = TaskId(first_task[ci].0 + t);
                            if tasks[target.0 as usize].worker == sender_worker {
                                preferred.push(t);
                            }
                            tasks[sender].links.push(LinkPlan {
                                target,
                                input: ii as u16,
                            });
                        }
                        tasks[sender].outputs[si].push(RouteSetup {
                            consumer: ci,
                            input: ii,
                            first_link,
                            tasks: consumer.parallelism,
                            preferred,
                        });
                    }
                }
            }
        }
        // One acker per worker unless configured; none when nothing is tracked.
        let acker_count = if ir.guarantee.is_tracked() {
            ir.config.ackers.map_or(workers, |a| a as usize)
        } else {
            0
        };
        let ackers = (0..acker_count)
            .map(|a| (TaskId((tasks.len() + a) as u32), a % workers))
            .collect();
        // Links are grouped by sender, so counting runs of equal (target, sender) is enough.
        let mut upstream: Vec<Vec<(TaskId, u32)>> = vec![Vec::new(); tasks.len()];
        for t in &tasks {
            for link in &t.links {
                let ups = &mut upstream[link.target.0 as usize];
                match ups.last_mut() {
                    Some((sender, n)) if *sender == t.id => *n += 1,
                    _ => ups.push((t.id, 1)),
                }
            }
        }
        PhysicalPlan {
            tasks,
            workers,
            first_task,
            ackers,
            upstream,
        }
    }

    /// The engine's setup for task `id`, with `id_seed` for its ack-tree ids.
    pub fn task_setup(&self, id: TaskId, id_seed: u64) -> TaskSetup {
        let task = &self.tasks[id.0 as usize];
        TaskSetup {
            task_id: task.id,
            task_index: task.index,
            outputs: task.outputs.clone(),
            id_seed,
            channels: self.channels_of(id),
            replicated: false,
        }
    }

    /// The input channels of `target`: (upstream task, subscription) for every link to it.
    pub fn channels_of(&self, target: TaskId) -> Vec<(TaskId, u16)> {
        let mut channels: Vec<(TaskId, u16)> = self
            .upstream_links_of(target)
            .iter()
            .flat_map(|&(up, _)| {
                self.tasks[up.0 as usize]
                    .links
                    .iter()
                    .filter(move |l| l.target == target)
                    .map(move |l| (up, l.input))
            })
            .collect();
        channels.sort_unstable();
        channels.dedup();
        channels
    }

    /// The tasks of component `component`.
    pub fn tasks_of(&self, component: usize) -> impl Iterator<Item = &TaskPlan> {
        self.tasks.iter().filter(move |t| t.component == component)
    }

    /// The tasks with a link to `target`, each once.
    pub fn upstream_of(&self, target: TaskId) -> Vec<TaskId> {
        self.upstream_links_of(target)
            .iter()
            .map(|&(t, _)| t)
            .collect()
    }

    /// The tasks with links to `target`, with how many each has (one per subscription).
    pub fn upstream_links_of(&self, target: TaskId) -> &[(TaskId, u32)] {
        self.upstream
            .get(target.0 as usize)
            .map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempest_dsl::{
        ComponentIr, DEFAULT_STREAM, Grouping, Guarantee, InputIr, RecordIr, StreamIr,
        TopologyConfig,
    };

    fn component(name: &str, kind: ComponentKind, p: u32, inputs: &[(&str, &str)]) -> ComponentIr {
        ComponentIr {
            name: name.into(),
            kind,
            parallelism: p,
            input_type: None,
            streams: vec![
                StreamIr {
                    name: DEFAULT_STREAM.into(),
                    direct: false,
                    record: RecordIr {
                        type_name: "R".into(),
                        fields: vec![],
                    },
                },
                StreamIr {
                    name: "side".into(),
                    direct: false,
                    record: RecordIr {
                        type_name: "R".into(),
                        fields: vec![],
                    },
                },
            ],
            inputs: inputs
                .iter()
                .map(|(c, s)| InputIr {
                    component: (*c).into(),
                    stream: (*s).into(),
                    grouping: Grouping::Shuffle,
                })
                .collect(),
            tick_every: None,
            replayable: false,
            rewindable: false,
            manual_ack: false,
            idempotent: false,
            window: None,
            event_time: None,
            stateful: None,
        }
    }

    fn ir() -> TopologyIr {
        TopologyIr {
            name: "t".into(),
            guarantee: Guarantee::AtMostOnce,
            config: TopologyConfig::default(),
            components: vec![
                component("s", ComponentKind::Spout, 2, &[]),
                component("a", ComponentKind::Bolt, 3, &[("s", DEFAULT_STREAM)]),
                component(
                    "b",
                    ComponentKind::Bolt,
                    2,
                    &[("s", "side"), ("a", DEFAULT_STREAM)],
                ),
            ],
        }
    }

    #[test]
    fn tasks_are_dense_and_dealt_over_workers() {
        let plan = PhysicalPlan::new(&ir(), 2);
        let ids: Vec<_> = plan
            .tasks
            .iter()
            .map(|t| (t.id.0, t.component, t.index, t.worker))
            .collect();
        assert_eq!(
            ids,
            [
                (0, 0, 0, 0),
                (1, 0, 1, 1),
                (2, 1, 0, 0),
                (3, 1, 1, 1),
                (4, 1, 2, 0),
                (5, 2, 0, 1),
                (6, 2, 1, 0)
            ]
        );
        assert_eq!(plan.first_task, [TaskId(0), TaskId(2), TaskId(5)]);
    }

    #[test]
    fn every_sender_links_to_every_subscriber_task() {
        let plan = PhysicalPlan::new(&ir(), 2);
        let s0 = &plan.tasks[0];
        // default stream -> a (3 tasks), side stream -> b (2 tasks)
        assert_eq!(s0.links.len(), 5);
        assert_eq!(s0.outputs[0].len(), 1);
        assert_eq!(s0.outputs[0][0].first_link, LinkId(0));
        assert_eq!(s0.outputs[0][0].tasks, 3);
        assert_eq!(s0.outputs[1][0].first_link, LinkId(3));
        assert_eq!(s0.outputs[1][0].consumer, 2);
        assert_eq!(s0.outputs[1][0].input, 0);
        assert_eq!(
            s0.links[3],
            LinkPlan {
                target: TaskId(5),
                input: 0
            }
        );
        // a's tasks feed b's input 1.
        assert_eq!(
            plan.tasks[2].links,
            [
                LinkPlan {
                    target: TaskId(5),
                    input: 1
                },
                LinkPlan {
                    target: TaskId(6),
                    input: 1
                }
            ]
        );
    }

    #[test]
    fn end_of_stream_counts_cover_every_upstream_task() {
        let plan = PhysicalPlan::new(&ir(), 2);
        assert_eq!(plan.tasks[0].upstream_links, 0);
        assert_eq!(plan.tasks[2].upstream_links, 2); // from s's 2 tasks
        assert_eq!(plan.tasks[5].upstream_links, 2 + 3); // s.side and a
        assert_eq!(
            plan.upstream_of(TaskId(5)),
            [TaskId(0), TaskId(1), TaskId(2), TaskId(3), TaskId(4)]
        );
    }

    #[test]
    fn ackers_only_when_tracked() {
        let mut topology = ir();
        assert!(PhysicalPlan::new(&topology, 2).ackers.is_empty());
        topology.guarantee = Guarantee::AtLeastOnce;
        let plan = PhysicalPlan::new(&topology, 2);
        assert_eq!(plan.ackers, [(TaskId(7), 0), (TaskId(8), 1)]);
        topology.config.ackers = Some(3);
        assert_eq!(PhysicalPlan::new(&topology, 2).ackers.len(), 3);
    }

    #[test]
    fn preferred_targets_share_the_sender_worker() {
        let plan = PhysicalPlan::new(&ir(), 2);
        // s0 runs on worker 0; a's tasks 0 and 2 (ids 2 and 4) run on worker 0.
        assert_eq!(plan.tasks[0].outputs[0][0].preferred, [0, 2]);
        assert_eq!(plan.tasks[1].outputs[0][0].preferred, [1]);
    }
}
