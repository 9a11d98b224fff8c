//! Placement of tasks on nodes: a pure core, the same on every replica of the manager (it runs
//! inside `apply`), so it is deterministic: ordered maps, ties broken by node id.
//!
//! Tasks go to the live node with the fewest tasks of every running topology; when a node
//! dies, only its tasks move, each to the least-loaded live node. Replicas of one group go to
//! distinct nodes.

use std::collections::{BTreeMap, BTreeSet};

use tempest_dsl::TaskId;

use crate::ids::NodeId;

/// Tasks per live node (every live node present, with 0 if it has none).
pub type Load = BTreeMap<NodeId, usize>;

/// The least-loaded node of `load` not in `exclude` (lowest id on a tie).
fn least_loaded(load: &Load, exclude: &BTreeSet<NodeId>) -> Option<NodeId> {
    load.iter()
        .filter(|(n, _)| !exclude.contains(n))
        .min_by_key(|(n, l)| (**l, **n))
        .map(|(n, _)| *n)
}

/// Places `tasks` tasks on the nodes of `load`, evenly, and counts them into `load`. `None`
/// when there is no live node.
pub fn place(tasks: u32, load: &mut Load) -> Option<BTreeMap<TaskId, NodeId>> {
    let mut out = BTreeMap::new();
    for t in 0..tasks {
        let node = least_loaded(load, &BTreeSet::new())?;
        *load.entry(node).or_default() += 1;
        out.insert(TaskId(t), node);
    }
    Some(out)
}

/// Moves the tasks of `assignment` that are not on a node of `load` to the least-loaded live
/// nodes. Returns how many moved; `None` (and nothing moved) when no node is live.
pub fn reschedule(assignment: &mut BTreeMap<TaskId, NodeId>, load: &mut Load) -> Option<usize> {
    if load.is_empty() {
        return None;
    }
    let mut moved = 0;
    for node in assignment.values_mut() {
        if load.contains_key(node) {
            continue;
        }
        let to = least_loaded(load, &BTreeSet::new())?;
        *load.entry(to).or_default() += 1;
        *node = to;
        moved += 1;
    }
    Some(moved)
}

/// Picks `replicas` distinct nodes for one replicated group, least-loaded first; `None` when
/// fewer live nodes exist.
pub fn place_replicas(replicas: usize, load: &mut Load) -> Option<Vec<NodeId>> {
    let mut chosen = BTreeSet::new();
    let mut out = Vec::with_capacity(replicas);
    for _ in 0..replicas {
        let node = least_loaded(load, &chosen)?;
        chosen.insert(node);
        out.push(node);
    }
    for n in &out {
        *load.entry(*n).or_default() += 1;
    }
    Some(out)
}

/// Picks one live node of `load` not in `taken` for a replica that replaces a lost one (the
/// least loaded, lowest id on a tie) and counts it in; `None` when every live node is taken.
pub fn place_replacement(load: &mut Load, taken: &BTreeSet<NodeId>) -> Option<NodeId> {
    let node = least_loaded(load, taken)?;
    *load.entry(node).or_default() += 1;
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(nodes: &[(u64, usize)]) -> Load {
        nodes.iter().map(|(n, l)| (NodeId(*n), *l)).collect()
    }

    fn counts(a: &BTreeMap<TaskId, NodeId>) -> BTreeMap<NodeId, usize> {
        let mut c = BTreeMap::new();
        for n in a.values() {
            *c.entry(*n).or_default() += 1;
        }
        c
    }

    #[test]
    fn tasks_spread_evenly_and_fill_the_emptiest_first() {
        let mut l = load(&[(1, 0), (2, 0), (3, 0)]);
        let a = place(10, &mut l).expect("live nodes");
        let c = counts(&a);
        assert!(c.values().all(|n| (3..=4).contains(n)), "{c:?}");
        let mut l = load(&[(1, 5), (2, 0), (3, 1)]);
        let a = place(4, &mut l).expect("live nodes");
        assert_eq!(counts(&a), [(NodeId(2), 3), (NodeId(3), 1)].into());
        assert_eq!(place(1, &mut Load::new()), None);
    }

    #[test]
    fn a_dead_node_s_tasks_move_and_no_other_task_does() {
        let mut l = load(&[(1, 0), (2, 0), (3, 0)]);
        let before = place(9, &mut l).expect("placed");
        let mut after = before.clone();
        let mut live = load(&[(1, 3), (3, 3)]);
        assert_eq!(reschedule(&mut after, &mut live), Some(3));
        for (t, n) in &before {
            if *n != NodeId(2) {
                assert_eq!(after[t], *n, "task {t} moved off a live node");
            }
        }
        assert!(after.values().all(|n| *n != NodeId(2)));
        assert_eq!(live, load(&[(1, 5), (3, 4)]));
        assert_eq!(reschedule(&mut after, &mut Load::new()), None);
    }

    #[test]
    fn replicas_go_to_distinct_nodes() {
        let mut l = load(&[(1, 0), (2, 7), (3, 1), (4, 0)]);
        let r = place_replicas(3, &mut l).expect("enough nodes");
        assert_eq!(r, [NodeId(1), NodeId(4), NodeId(3)]);
        assert_eq!(place_replicas(5, &mut l), None);
    }

    proptest::proptest! {
        #[test]
        fn placement_is_balanced_and_deterministic(nodes in 1u64..8, tasks in 0u32..64) {
            let mut l: Load = (1..=nodes).map(|n| (NodeId(n), 0)).collect();
            let mut l2 = l.clone();
            let a = place(tasks, &mut l).expect("live nodes");
            proptest::prop_assert_eq!(&a, &place(tasks, &mut l2).expect("live nodes"));
            let max = l.values().max().copied().unwrap_or(0);
            let min = l.values().min().copied().unwrap_or(0);
            proptest::prop_assert!(max - min <= 1);
        }
    }
}
