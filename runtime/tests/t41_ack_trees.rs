//! Ack trees without actors: the engine's anchoring and the acker's ledger, driven by hand.
//!
//! Tasks are instantiated from a real topology and fed each other's batches in a chosen order;
//! their ack operations go to an [`AckLedger`]. A tree must complete exactly when every edge
//! has been acked, whatever the order, and never when one operation is missing.

mod common;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use common::{N, Pass};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use tempest_dsl::engine::{AckOp, LinkId, Payload, Task};
use tempest_dsl::*;
use tempest_runtime::ack::{AckFolder, AckKind, AckLedger, AckMsg, TreeOutcome};
use tempest_runtime::plan::PhysicalPlan;

#[derive(Clone)]
struct OneMessage(bool);

impl Spout for OneMessage {
    type Out = N;
    fn next(&mut self, out: &mut SpoutEmitter<N>) -> Result<SpoutStatus, TaskError> {
        if std::mem::replace(&mut self.0, true) {
            return Ok(SpoutStatus::Done);
        }
        out.emit_tracked(MsgId(1), N { n: 0 });
        Ok(SpoutStatus::Active)
    }
}

/// Emits three children per input (fan-out).
#[derive(Clone)]
struct Three;

impl Bolt for Three {
    type In = N;
    type Out = N;
    fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<N>) -> Result<(), TaskError> {
        for i in 0..3 {
            out.emit(N { n: t.n * 10 + i });
        }
        Ok(())
    }
}

/// Records the ack-tree ids of each input, then passes it on (auto-ack).
#[derive(Clone)]
struct RecordIds(Arc<Mutex<Vec<(RootId, EdgeId)>>>);

impl Bolt for RecordIds {
    type In = N;
    type Out = N;
    fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<N>) -> Result<(), TaskError> {
        if let Ok(mut seen) = self.0.lock() {
            seen.extend_from_slice(t.ids().pairs());
        }
        out.emit(t.into_value());
        Ok(())
    }
}

/// Holds `want` inputs, then emits one record anchored to all of them and acks them.
struct JoinAll {
    want: usize,
    held: Vec<Tuple<N>>,
}

/// Tuples cannot be cloned: the runtime clones the prototype, which holds none.
impl Clone for JoinAll {
    fn clone(&self) -> Self {
        JoinAll {
            want: self.want,
            held: Vec::new(),
        }
    }
}

impl Bolt for JoinAll {
    type In = N;
    type Out = N;
    const MANUAL_ACK: bool = true;
    fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<N>) -> Result<(), TaskError> {
        self.held.push(t);
        if self.held.len() == self.want {
            let held = std::mem::take(&mut self.held);
            let anchors: Vec<&Tuple<N>> = held.iter().collect();
            out.emit_anchored(&anchors, N { n: 999 });
            for t in held {
                out.ack(t);
            }
        }
        Ok(())
    }
}

/// Runs a topology's tasks by hand, in one thread, collecting every ack operation.
struct Harness {
    plan: PhysicalPlan,
    tasks: Vec<Task>,
    queue: VecDeque<(TaskId, u16, TaskId, Payload)>,
    ops: Vec<(TaskId, AckOp)>,
    /// Inputs the bolts reported failed.
    failed: u64,
}

impl Harness {
    fn new(topology: &Topology) -> anyhow::Result<Harness> {
        let plan = PhysicalPlan::new(topology.ir(), 1);
        let mut tasks = Vec::new();
        for t in &plan.tasks {
            let setup = plan.task_setup(t.id, 1000 + u64::from(t.id.0));
            tasks.push(topology.instantiate(t.component, &setup)?);
        }
        Ok(Harness {
            plan,
            tasks,
            queue: VecDeque::new(),
            ops: Vec::new(),
            failed: 0,
        })
    }

    fn collect(&mut self, id: TaskId) {
        let mut ready: Vec<(LinkId, Payload)> = Vec::new();
        let mut acks = Vec::new();
        let output: &mut dyn engine::TaskOutput = match &mut self.tasks[id.0 as usize] {
            Task::Spout(s) => s.as_mut(),
            Task::Bolt(b) => b.as_mut(),
        };
        output.flush();
        output.take_ready(&mut ready);
        output.take_acks(&mut acks);
        for (link, payload) in ready {
            let l = self.plan.tasks[id.0 as usize].links[link.0 as usize];
            self.queue.push_back((l.target, l.input, id, payload));
        }
        self.ops.extend(acks.into_iter().map(|op| (id, op)));
    }

    /// Runs every spout to the end and every batch through, in FIFO order.
    fn run(&mut self) -> anyhow::Result<()> {
        for i in 0..self.tasks.len() {
            if let Task::Spout(s) = &mut self.tasks[i] {
                s.open().map_err(|e| anyhow::anyhow!("{e}"))?;
                while s.next_batch(16).map_err(|e| anyhow::anyhow!("{e}"))? != SpoutStatus::Done {}
                self.collect(TaskId(i as u32));
            }
        }
        while let Some((target, input, from, payload)) = self.queue.pop_front() {
            match &mut self.tasks[target.0 as usize] {
                Task::Bolt(b) => {
                    let outcome = b.execute_batch(input, from, payload, 0)?;
                    self.failed += outcome.failed;
                }
                Task::Spout(_) => anyhow::bail!("a batch for a spout"),
            }
            self.collect(target);
        }
        Ok(())
    }

    /// The operations as the acker sees them, one message per operation (unfolded).
    fn messages(&self) -> Vec<AckMsg> {
        self.ops
            .iter()
            .map(|&(task, op)| AckMsg::from_op(task, op))
            .collect()
    }
}

/// Fan-out (3 children, each to both tasks of an all-grouped bolt) then a join anchored to all
/// six copies, then a sink.
fn fan_out_and_join(guarantee: Guarantee) -> anyhow::Result<Topology> {
    fan_out_and_join_through(guarantee, Pass)
}

/// [`fan_out_and_join`] with `both` as the all-grouped bolt.
fn fan_out_and_join_through(
    guarantee: Guarantee,
    both: impl Bolt<In = N, Out = N>,
) -> anyhow::Result<Topology> {
    let mut t = TopologyBuilder::new("tree");
    let s = t.add(spout("s", OneMessage(false)));
    let a = t.add(bolt("three", Three).shuffle(&s));
    let b = t.add(bolt("both", both).parallelism(2).all(&a));
    let j = t.add(
        bolt(
            "join",
            JoinAll {
                want: 6,
                held: Vec::new(),
            },
        )
        .global(&b),
    );
    t.add(bolt("sink", Pass).shuffle(&j));
    Ok(t.guarantee(guarantee).build()?)
}

#[test]
fn a_fan_out_and_join_completes_exactly_on_its_last_ack_in_any_order() -> anyhow::Result<()> {
    let mut h = Harness::new(&fan_out_and_join(Guarantee::AtLeastOnce)?)?;
    h.run()?;
    let messages = h.messages();
    // The init, then the acks of every task that executed a tuple of the tree (each task folds
    // the acks of one batch per root): at least the spout, `three`, one `both`, join and sink.
    assert!(messages.len() >= 5, "{messages:?}");
    let roots: std::collections::HashSet<RootId> = messages.iter().map(|m| m.root).collect();
    assert_eq!(roots.len(), 1, "one spout message, one tree");

    let mut rng = SmallRng::seed_from_u64(5);
    for round in 0..200 {
        let mut order = messages.clone();
        order.shuffle(&mut rng);
        let mut ledger = AckLedger::new();
        for (i, m) in order.iter().enumerate() {
            let outcome = ledger.apply(*m);
            if i + 1 < order.len() {
                assert_eq!(
                    outcome,
                    None,
                    "round {round}: completed early at {i} of {}",
                    order.len()
                );
            } else {
                assert_eq!(
                    outcome,
                    Some((TaskId(0), TreeOutcome::Acked)),
                    "round {round}"
                );
            }
        }
    }

    tracing::info!("--- any one operation missing: the tree never completes");
    for missing in 0..messages.len() {
        let mut ledger = AckLedger::new();
        for (i, m) in messages.iter().enumerate() {
            if i != missing {
                assert_eq!(
                    ledger.apply(*m),
                    None,
                    "completed without message {missing}"
                );
            }
        }
    }
    Ok(())
}

/// Passes its inputs on; its first `flush` (of each clone) fails, like a sink whose write did
/// not go through.
#[derive(Clone)]
struct FlushFailsOnce(bool);

impl Bolt for FlushFailsOnce {
    type In = N;
    type Out = N;
    fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<N>) -> Result<(), TaskError> {
        out.emit(t.into_value());
        Ok(())
    }
    fn flush(&mut self) -> Result<(), TaskError> {
        if std::mem::replace(&mut self.0, true) {
            Ok(())
        } else {
            Err(TaskError::new("the write did not go through"))
        }
    }
}

#[test]
fn a_failed_flush_fails_the_trees_its_batch_acked() -> anyhow::Result<()> {
    for (flush_fails, want) in [(true, TreeOutcome::Failed), (false, TreeOutcome::Acked)] {
        let both = FlushFailsOnce(!flush_fails);
        let mut h = Harness::new(&fan_out_and_join_through(Guarantee::AtLeastOnce, both)?)?;
        h.run()?;
        // Each of the two tasks of `both` executes one batch of three inputs.
        assert_eq!(h.failed, if flush_fails { 6 } else { 0 });
        let fails = h
            .ops
            .iter()
            .filter(|(_, op)| matches!(op, AckOp::Fail { .. }))
            .count();
        assert_eq!(fails > 0, flush_fails, "{:?}", h.ops);
        let mut ledger = AckLedger::new();
        let outcomes: Vec<_> = h
            .messages()
            .into_iter()
            .filter_map(|m| ledger.apply(m))
            .collect();
        assert_eq!(outcomes.first(), Some(&(TaskId(0), want)), "{outcomes:?}");
    }
    Ok(())
}

#[test]
fn folding_per_batch_does_not_change_the_outcome() -> anyhow::Result<()> {
    let mut h = Harness::new(&fan_out_and_join(Guarantee::AtLeastOnce)?)?;
    h.run()?;
    let mut folder = AckFolder::new(3);
    for &(task, op) in &h.ops {
        folder.add(task, op);
    }
    let mut batches = Vec::new();
    folder.drain(|_, list| batches.push(list));
    let mut ledger = AckLedger::new();
    let mut outcomes = Vec::new();
    for m in batches.into_iter().flatten() {
        outcomes.extend(ledger.apply(m));
    }
    assert_eq!(outcomes, [(TaskId(0), TreeOutcome::Acked)]);
    Ok(())
}

#[test]
fn at_most_once_records_no_ack_operation() -> anyhow::Result<()> {
    let mut h = Harness::new(&fan_out_and_join(Guarantee::AtMostOnce)?)?;
    h.run()?;
    assert!(h.ops.is_empty(), "{:?}", h.ops);
    assert!(h.plan.ackers.is_empty());
    Ok(())
}

/// A random ack DAG: spout-level nodes hang off the root; every later node has one or two
/// parents among earlier nodes (two parents = a multi-anchored tuple). Each parent-to-child link
/// is an edge with a random id. The init carries the root's edges; a node's ack carries its
/// incoming edges XOR its outgoing ones.
fn dag_messages(
    spout_nodes: usize,
    parents: &[(usize, Option<usize>)],
    edges: &[u64],
) -> Vec<AckMsg> {
    let n = spout_nodes + parents.len();
    let mut ack = vec![0u64; n];
    let mut init = 0u64;
    let mut e = edges.iter().copied();
    let mut next_edge = move || e.next().unwrap_or(1).max(1);
    for node in ack.iter_mut().take(spout_nodes) {
        let edge = next_edge();
        init ^= edge;
        *node ^= edge;
    }
    for (i, &(p1, p2)) in parents.iter().enumerate() {
        let child = spout_nodes + i;
        for p in std::iter::once(p1).chain(p2) {
            let parent = p % child;
            let edge = next_edge();
            ack[parent] ^= edge;
            ack[child] ^= edge;
        }
    }
    let root = RootId(77);
    let mut out = vec![AckMsg {
        root,
        kind: AckKind::Init {
            xor: init,
            spout: TaskId(0),
        },
    }];
    out.extend(ack.into_iter().map(|xor| AckMsg {
        root,
        kind: AckKind::Ack { xor },
    }));
    out
}

proptest! {
    /// Any interleaving of init and acks completes the tree if and only if every edge was acked,
    /// and completes it on the last message.
    #[test]
    fn a_tree_completes_iff_every_edge_is_acked(
        spout_nodes in 1usize..4,
        parents in prop::collection::vec((0usize..64, prop::option::of(0usize..64)), 0..24),
        edges in prop::collection::vec(any::<u64>(), 128),
        order_seed in any::<u64>(),
        drop in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut messages = dag_messages(spout_nodes, &parents, &edges);
        let complete = drop.is_none();
        if let Some(index) = drop {
            messages.remove(index.index(messages.len()));
        }
        messages.shuffle(&mut SmallRng::seed_from_u64(order_seed));
        let mut ledger = AckLedger::new();
        let mut outcomes = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if let Some(o) = ledger.apply(*m) {
                outcomes.push((i, o));
            }
        }
        if complete {
            prop_assert_eq!(outcomes, vec![(messages.len() - 1, (TaskId(0), TreeOutcome::Acked))]);
        } else {
            prop_assert!(outcomes.is_empty(), "completed with a message missing: {:?}", outcomes);
        }
    }

    /// A failure anywhere fails the tree (once its init is known), in any order.
    #[test]
    fn a_failure_fails_the_tree_in_any_order(
        parents in prop::collection::vec((0usize..64, prop::option::of(0usize..64)), 1..16),
        edges in prop::collection::vec(any::<u64>(), 64),
        order_seed in any::<u64>(),
        victim in any::<prop::sample::Index>(),
    ) {
        let mut messages = dag_messages(1, &parents, &edges);
        let v = 1 + victim.index(messages.len() - 1);
        messages[v].kind = AckKind::Fail;
        messages.shuffle(&mut SmallRng::seed_from_u64(order_seed));
        let mut ledger = AckLedger::new();
        let mut outcomes = Vec::new();
        for m in &messages {
            outcomes.extend(ledger.apply(*m));
        }
        // The victim's ack never arrives, so the value never returns to zero: decided once,
        // as failed, whenever the fail arrives relative to the init.
        prop_assert_eq!(outcomes, vec![(TaskId(0), TreeOutcome::Failed)]);
    }
}

#[test]
fn edges_are_per_copy_and_per_anchor() -> anyhow::Result<()> {
    // Every delivered copy carries its own edge id: 3 children, each to both tasks of `both`,
    // make 6 copies with 6 distinct edges, all in the one tree.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let topology = fan_out_and_join_through(Guarantee::AtLeastOnce, RecordIds(seen.clone()))?;
    let mut h = Harness::new(&topology)?;
    h.run()?;
    let seen = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    assert_eq!(seen.len(), 6, "{seen:?}");
    let edges: HashSet<EdgeId> = seen.iter().map(|&(_, edge)| edge).collect();
    assert_eq!(edges.len(), 6, "{seen:?}");
    let roots: HashSet<RootId> = seen.iter().map(|&(root, _)| root).collect();
    assert_eq!(roots.len(), 1, "{seen:?}");
    Ok(())
}
