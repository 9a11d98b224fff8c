//! The checker, in the manner of Jepsen's total-queue checker: from what the sources attempted
//! and saw acked, what the sink received, and every replica's final state, it computes what was
//! lost (acked, but not in the output or not in the state), unexpected (seen, never attempted),
//! duplicated (delivered more than once), recovered (seen though never acked) and whether the
//! replicas of every group hold byte-identical state. Pure: it reads nothing itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use crate::history::History;
use crate::topology::Applied;

/// The final state one replica exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaState {
    /// The counter task (its group), as the runtime numbers tasks.
    pub task: u32,
    /// The node it ran on.
    pub node: u64,
    /// Its encoded state, as exported.
    pub bytes: Vec<u8>,
}

/// What the checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Distinct ids announced as attempted.
    pub attempted: u64,
    /// Distinct ids acked.
    pub acked: u64,
    /// Acked ids with a part missing from the sink's output or from the counter's state.
    pub lost: u64,
    /// Of those, missing from the output.
    pub lost_output: u64,
    /// Of those, missing from the state.
    pub lost_state: u64,
    /// Deliveries beyond the first of a part (replays, allowed under at-least-once). Under
    /// exactly-once a delivery that repeats an earlier delivery's tuple id is a rewrite of the
    /// same key in the idempotent sink, not a duplicate.
    pub duplicated: u64,
    /// Deliveries that repeated an earlier delivery's tuple id (exactly-once: absorbed by the
    /// idempotent sink).
    pub rewrites: u64,
    /// Rewrites whose record differs from the first write of that tuple id: the ids are not
    /// deterministic, and an idempotent sink would have overwritten one output with another.
    pub conflicting: u64,
    /// Parts seen in the output or the state whose id was never attempted.
    pub unexpected: u64,
    /// Ids seen whole in the output though never acked (their ack was lost, or their source
    /// died first).
    pub recovered: u64,
    /// Applications the counter's state counted twice (replays applied again).
    pub applied_again: u64,
    /// Whether every group has `replicas` exported states, all byte-identical.
    pub replicas_agree: bool,
    /// Why not, per group.
    pub disagreements: Vec<String>,
    /// A few lost ids, for the post-mortem.
    pub lost_sample: Vec<u64>,
}

impl Report {
    /// Whether the run kept the at-least-once guarantee: nothing lost, nothing invented, and
    /// the replicas agree.
    pub fn at_least_once(&self) -> bool {
        self.lost == 0 && self.unexpected == 0 && self.conflicting == 0 && self.replicas_agree
    }
}

/// Whether `id` lies in one of the sorted, merged `ranges`.
fn in_ranges(ranges: &[Range<u64>], id: u64) -> bool {
    let i = ranges.partition_point(|r| r.end <= id);
    ranges.get(i).is_some_and(|r| r.contains(&id))
}

/// Checks a run: `groups` counter tasks (groups) of `replicas` replicas each.
pub fn check(history: &History, states: &[ReplicaState], groups: u32, replicas: u32) -> Report {
    let mut r = Report::default();
    let mut ranges = history.attempted.clone();
    ranges.sort_by_key(|x| x.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for x in ranges {
        match merged.last_mut() {
            Some(m) if x.start <= m.end => m.end = m.end.max(x.end),
            _ => merged.push(x),
        }
    }
    r.attempted = merged.iter().map(|x| x.end - x.start).sum();
    let acked: HashSet<u64> = history.acked.iter().copied().collect();
    r.acked = acked.len() as u64;

    // Per (id, part), its writes; a delivery with a tuple id seen before rewrites that key.
    let mut delivered: HashMap<(u64, u8), u64> = HashMap::new();
    let mut tuples: HashMap<u64, (u64, u8)> = HashMap::new();
    for &(id, part, tuple) in &history.delivered {
        if tuple != 0 {
            if let Some(first) = tuples.get(&tuple) {
                r.rewrites += 1;
                r.conflicting += u64::from(*first != (id, part));
                continue;
            }
            tuples.insert(tuple, (id, part));
        }
        *delivered.entry((id, part)).or_default() += 1;
    }
    r.duplicated = delivered.values().map(|n| n - 1).sum();

    // Each group's state: the replicas must hold the same bytes; the checker reads the first.
    let mut by_task: BTreeMap<u32, Vec<&ReplicaState>> = BTreeMap::new();
    for s in states {
        by_task.entry(s.task).or_default().push(s);
    }
    r.replicas_agree = true;
    let mut state = Applied::default();
    if by_task.len() != groups as usize {
        r.replicas_agree = false;
        r.disagreements.push(format!(
            "{} counter tasks exported a state, of {groups}",
            by_task.len()
        ));
    }
    for (&task, found) in &by_task {
        if found.len() != replicas as usize {
            r.replicas_agree = false;
            r.disagreements.push(format!(
                "counter task {task}: {} of {replicas} replicas exported a state",
                found.len()
            ));
        }
        if let Some(first) = found.first() {
            if let Some(other) = found.iter().find(|s| s.bytes != first.bytes) {
                r.replicas_agree = false;
                r.disagreements.push(format!(
                    "counter task {task}: the states of n{} and n{} differ",
                    first.node, other.node
                ));
            }
            match rmp_serde::from_slice::<Applied>(&first.bytes) {
                Ok(s) => {
                    r.applied_again += s.again;
                    for (key, bits) in s.blocks {
                        *state.blocks.entry(key).or_default() |= bits;
                    }
                }
                Err(e) => {
                    r.replicas_agree = false;
                    r.disagreements.push(format!(
                        "counter task {task}: the state does not decode: {e}"
                    ));
                }
            }
        }
    }

    for &id in &acked {
        let output = (0..2).all(|p| delivered.contains_key(&(id, p)));
        let applied = (0..2).all(|p| state.contains(id, p));
        if !(output && applied) {
            r.lost += 1;
            r.lost_output += u64::from(!output);
            r.lost_state += u64::from(!applied);
            if r.lost_sample.len() < 10 {
                r.lost_sample.push(id);
            }
        }
    }
    r.lost_sample.sort_unstable();
    let invented = |(id, part): (u64, u8)| part > 1 || !in_ranges(&merged, id);
    r.unexpected = delivered.keys().filter(|k| invented(**k)).count() as u64
        + state
            .parts()
            .filter(|k| invented(*k) && !delivered.contains_key(k))
            .count() as u64;
    let seen_whole: HashSet<u64> = delivered
        .keys()
        .filter(|(id, _)| (0..2).all(|p| delivered.contains_key(&(*id, p))))
        .map(|(id, _)| *id)
        .collect();
    r.recovered = seen_whole
        .iter()
        .filter(|id| !acked.contains(id) && in_ranges(&merged, **id))
        .count() as u64;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clean run: ids 0..n attempted, acked, delivered and applied once, on 2 groups of 3
    /// replicas (parts 0 and 1 by group).
    fn clean(n: u64) -> (History, Vec<ReplicaState>) {
        let mut h = History {
            attempted: std::iter::once(0..n).collect(),
            acked: (0..n).collect(),
            ..History::default()
        };
        let mut groups = [Applied::default(), Applied::default()];
        for id in 0..n {
            for part in 0..2u8 {
                h.delivered.push((id, part, 0));
                groups[part as usize].apply(id, part);
            }
        }
        let states = states(&groups);
        (h, states)
    }

    fn states(groups: &[Applied]) -> Vec<ReplicaState> {
        let mut out = Vec::new();
        for (task, g) in groups.iter().enumerate() {
            for node in 1..=3 {
                out.push(ReplicaState {
                    task: task as u32,
                    node,
                    bytes: rmp_serde::to_vec(g).expect("encodes"),
                });
            }
        }
        out
    }

    #[test]
    fn a_clean_run_passes() {
        let (h, s) = clean(1000);
        let r = check(&h, &s, 2, 3);
        assert!(r.at_least_once(), "{r:?}");
        assert_eq!(
            (r.attempted, r.acked, r.lost, r.duplicated),
            (1000, 1000, 0, 0)
        );
        assert_eq!((r.unexpected, r.recovered), (0, 0));
    }

    #[test]
    fn a_run_that_lost_an_acked_record_from_the_output_fails() {
        let (mut h, s) = clean(100);
        h.delivered.retain(|d| *d != (42, 1, 0));
        let r = check(&h, &s, 2, 3);
        assert_eq!((r.lost, r.lost_output, r.lost_state), (1, 1, 0));
        assert_eq!(r.lost_sample, vec![42]);
        assert!(!r.at_least_once());
    }

    #[test]
    fn a_run_that_lost_an_acked_record_from_every_replica_fails() {
        let (h, _) = clean(100);
        let mut groups = [Applied::default(), Applied::default()];
        for id in (0..100).filter(|id| *id != 7) {
            groups[0].apply(id, 0);
            groups[1].apply(id, 1);
        }
        groups[1].apply(7, 1);
        let r = check(&h, &states(&groups), 2, 3);
        assert_eq!((r.lost, r.lost_state, r.lost_output), (1, 1, 0));
        assert!(r.replicas_agree && !r.at_least_once());
    }

    #[test]
    fn an_unacked_record_that_is_missing_is_not_lost_and_one_seen_is_recovered() {
        let (mut h, s) = clean(100);
        h.acked.retain(|id| *id != 5 && *id != 6);
        h.delivered.retain(|d| d.0 != 6);
        let r = check(&h, &s, 2, 3);
        assert_eq!((r.lost, r.recovered, r.acked), (0, 1, 98));
        assert!(r.at_least_once());
    }

    #[test]
    fn doubled_deliveries_are_counted_not_failed() {
        let (mut h, s) = clean(100);
        h.delivered.push((3, 0, 0));
        h.delivered.push((3, 0, 0));
        h.delivered.push((4, 1, 0));
        let r = check(&h, &s, 2, 3);
        assert_eq!(r.duplicated, 3);
        assert!(r.at_least_once());
    }

    /// The clean run with tuple ids, as an exactly-once sink writes it.
    fn with_tuple_ids(h: &mut History) {
        for (i, d) in h.delivered.iter_mut().enumerate() {
            d.2 = 1000 + i as u64;
        }
    }

    #[test]
    fn a_repeated_tuple_id_is_a_rewrite_and_a_new_one_a_duplicate() {
        let (mut h, s) = clean(100);
        with_tuple_ids(&mut h);
        let first = h.delivered[6];
        h.delivered.push(first);
        let r = check(&h, &s, 2, 3);
        assert_eq!((r.duplicated, r.rewrites, r.conflicting), (0, 1, 0));
        assert!(r.at_least_once());

        // The same record under another tuple id: two writes of one output.
        h.delivered.push((first.0, first.1, 99));
        let r = check(&h, &s, 2, 3);
        assert_eq!((r.duplicated, r.rewrites), (1, 1));

        // A tuple id rewritten with another record: the ids are not deterministic.
        h.delivered.push((7, 0, first.2));
        let r = check(&h, &s, 2, 3);
        assert_eq!(r.conflicting, 1);
        assert!(!r.at_least_once());
    }

    #[test]
    fn invented_records_are_unexpected() {
        let (mut h, mut s) = clean(100);
        h.delivered.push((5000, 0, 0));
        h.delivered.push((3, 2, 0));
        let mut g = Applied::default();
        for id in 0..100 {
            g.apply(id, 0);
        }
        g.apply(7000, 0);
        for r in s.iter_mut().filter(|r| r.task == 0) {
            r.bytes = rmp_serde::to_vec(&g).expect("encodes");
        }
        let r = check(&h, &s, 2, 3);
        assert_eq!(r.unexpected, 3, "{r:?}");
        assert!(!r.at_least_once());
    }

    #[test]
    fn replicas_that_differ_or_are_missing_do_not_agree() {
        let (h, mut s) = clean(100);
        let mut g = Applied::default();
        g.apply(1, 0);
        s[1].bytes = rmp_serde::to_vec(&g).expect("encodes");
        let r = check(&h, &s, 2, 3);
        assert!(!r.replicas_agree);
        assert!(
            r.disagreements[0].contains("differ"),
            "{:?}",
            r.disagreements
        );

        let (h, mut s) = clean(100);
        s.pop();
        let r = check(&h, &s, 2, 3);
        assert!(!r.replicas_agree);
        assert!(
            r.disagreements[0].contains("2 of 3"),
            "{:?}",
            r.disagreements
        );

        let (h, mut s) = clean(100);
        s[0].bytes = b"not a state".to_vec();
        let r = check(&h, &s, 2, 3);
        assert!(!r.replicas_agree);
    }
}
