//! Membership changes of a replicated task's group: how a replica that has no vote in its group
//! (a new identity after its log was lost or damaged, or a replica placed on a node that replaces
//! a lost one) becomes a voter, and how the member it replaces leaves.
//!
//! The new member asks ([`JoinRequest`], sent to every node assigned to the group until the
//! leader's answers). The leader decides with [`decide`], a pure function of its membership and
//! replication progress:
//!
//! 1. a member that is not known yet is added as a **learner** (it receives the log, or a
//!    snapshot, and does not vote);
//! 2. once it is within [`CATCH_UP_SLACK`] entries of the leader's log, the voters become the
//!    current voters on the nodes assigned to the group (as the leader's node knows the
//!    manager's assignment; the request's view only when the leader's node has none), minus
//!    any other member on the joiner's own node (its old identity), plus the joiner: one
//!    joint-consensus change, never one that leaves fewer voters than there are;
//! 3. learners left behind by members that died before promotion, on the joiner's node or on a
//!    node no longer assigned, are removed.
//!
//! A request repeats until the leader answers that its member is a voter of a settled (not
//! joint) membership, so every step may fail and is retried. A joint membership left behind by
//! a leader that died between the two steps of a change is finished by the next leader that
//! gets a request.

use std::collections::{BTreeMap, BTreeSet};

use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use crate::ids::{GroupId, MemberId, NodeId};
use crate::replication::type_config::Raft;

/// How many entries a learner may trail the leader's log by and still be promoted.
pub const CATCH_UP_SLACK: u64 = 256;

/// A replica's request to become a voter of its group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Who asks.
    pub member: MemberId,
    /// The address its node listens on.
    pub addr: String,
    /// The nodes the group's replicas are assigned to, as the asker's node knows it.
    pub assigned: BTreeSet<NodeId>,
}

/// What the leader did with a [`JoinRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Admission {
    /// It is a voter already: nothing to do.
    Voter,
    /// It was added as a learner.
    LearnerAdded,
    /// It is a learner still catching up: this many entries behind (`None`: nothing matched
    /// yet).
    CatchingUp(Option<u64>),
    /// The change that makes it a voter was started.
    Promoting,
}

/// What the leader does with a join request, given what it knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The request is refused: why.
    Refuse(String),
    /// Answer at once.
    Answer(Admission),
    /// Add the member as a learner.
    AddLearner,
    /// Replace the voters with these, then remove these learners.
    Promote {
        /// The new voters.
        voters: BTreeSet<MemberId>,
        /// Learners to remove afterwards.
        stale: BTreeSet<MemberId>,
    },
}

/// The leader's decision on `req`, given the group's `voters` and `learners`, what each member's
/// log matches on the leader (`matched`), and the leader's last log index.
pub fn decide(
    req: &JoinRequest,
    voters: &BTreeSet<MemberId>,
    learners: &BTreeSet<MemberId>,
    matched: &BTreeMap<MemberId, Option<u64>>,
    last_log: u64,
) -> Decision {
    let node = req.member.node();
    if voters.contains(&req.member) {
        return Decision::Answer(Admission::Voter);
    }
    if !req.assigned.contains(&node) {
        return Decision::Refuse(format!(
            "{} asks to join, but its node is not among the assigned {:?}",
            req.member, req.assigned
        ));
    }
    if !learners.contains(&req.member) {
        return Decision::AddLearner;
    }
    let at = matched.get(&req.member).copied().flatten();
    match at {
        Some(i) if last_log.saturating_sub(i) <= CATCH_UP_SLACK => {}
        _ => {
            return Decision::Answer(Admission::CatchingUp(
                at.map(|i| last_log.saturating_sub(i)),
            ));
        }
    }
    let keep = |m: &MemberId| m.node() != node && req.assigned.contains(&m.node());
    let mut next: BTreeSet<MemberId> = voters.iter().copied().filter(keep).collect();
    next.insert(req.member);
    if next.len() < voters.len() {
        return Decision::Refuse(format!(
            "making {} a voter would shrink the group from {} to {} voters (assigned {:?})",
            req.member,
            voters.len(),
            next.len(),
            req.assigned
        ));
    }
    let stale = learners
        .iter()
        .copied()
        .filter(|m| *m != req.member && !keep(m))
        .collect();
    Decision::Promote {
        voters: next,
        stale,
    }
}

/// Members as a list: `n1,n2,n4.0000abcd`.
pub fn list(members: &BTreeSet<MemberId>) -> String {
    let names: Vec<String> = members.iter().map(ToString::to_string).collect();
    names.join(",")
}

/// Handles `req` on this process's replica `raft` of `group`: refused unless it leads.
/// `assigned` is the group's assignment as this node knows it, which wins over the request's.
pub(crate) async fn admit(
    raft: Raft,
    group: GroupId,
    mut req: JoinRequest,
    assigned: Option<BTreeSet<NodeId>>,
) -> Result<Admission, String> {
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(m.id) {
        return Err(format!("not the leader of group {group}"));
    }
    if let Some(assigned) = assigned {
        req.assigned = assigned;
    }
    let membership = m.membership_config.membership();
    if membership.get_joint_config().len() > 1 {
        // A change left half done (its leader died between the two steps): finish it.
        let target: BTreeSet<u64> = membership
            .get_joint_config()
            .last()
            .cloned()
            .unwrap_or_default();
        tokio::spawn(async move {
            if let Err(e) = raft.change_membership(target, false).await {
                tracing::info!(%group, error = %e, "finishing a joint membership failed (retried on the next request)");
            }
        });
        return Err(format!(
            "group {group}: a membership change is being finished"
        ));
    }
    let voters: BTreeSet<MemberId> = membership.voter_ids().map(MemberId).collect();
    let learners: BTreeSet<MemberId> = membership.learner_ids().map(MemberId).collect();
    let matched: BTreeMap<MemberId, Option<u64>> = m
        .replication
        .iter()
        .flatten()
        .map(|(id, log)| (MemberId(*id), log.map(|l| l.index)))
        .collect();
    let last_log = m.last_log_index.unwrap_or(0);
    match decide(&req, &voters, &learners, &matched, last_log) {
        Decision::Refuse(why) => Err(why),
        Decision::Answer(a) => Ok(a),
        Decision::AddLearner => {
            raft.add_learner(req.member.0, BasicNode { addr: req.addr }, false)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(%group, member = %req.member, "a new member joins as a learner");
            Ok(Admission::LearnerAdded)
        }
        Decision::Promote {
            voters: next,
            stale,
        } => {
            tracing::info!(%group, member = %req.member, voters = %list(&next), "promoting a caught-up learner");
            // Two commits (joint, then final): not inside the request's deadline.
            tokio::spawn(async move {
                let ids: BTreeSet<u64> = next.iter().map(|m| m.0).collect();
                if let Err(e) = raft.change_membership(ids, false).await {
                    tracing::info!(%group, error = %e, "membership change not made (retried on the next request)");
                    return;
                }
                tracing::info!(%group, voters = %list(&next), "voters changed");
                if !stale.is_empty() {
                    let ids: BTreeSet<u64> = stale.iter().map(|m| m.0).collect();
                    let remove = openraft::ChangeMembers::RemoveNodes(ids);
                    if let Err(e) = raft.change_membership(remove, false).await {
                        tracing::info!(%group, error = %e, "stale learners not removed");
                    }
                }
            });
            Ok(Admission::Promoting)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(node: u64, inc: u32) -> MemberId {
        MemberId::new(NodeId(node), inc)
    }

    fn req(member: MemberId, assigned: &[u64]) -> JoinRequest {
        JoinRequest {
            member,
            addr: "127.0.0.1:1".into(),
            assigned: assigned.iter().map(|n| NodeId(*n)).collect(),
        }
    }

    fn set(ms: &[MemberId]) -> BTreeSet<MemberId> {
        ms.iter().copied().collect()
    }

    #[test]
    fn a_repaired_replica_is_added_then_promoted_in_place_of_its_old_identity() {
        let voters = set(&[m(1, 0), m(2, 0), m(3, 0)]);
        let fresh = m(3, 9);
        let r = req(fresh, &[1, 2, 3]);
        assert_eq!(
            decide(&r, &voters, &set(&[]), &BTreeMap::new(), 1000),
            Decision::AddLearner
        );
        let learners = set(&[fresh]);
        let behind = BTreeMap::from([(fresh, Some(100))]);
        assert_eq!(
            decide(&r, &voters, &learners, &behind, 1000),
            Decision::Answer(Admission::CatchingUp(Some(900)))
        );
        let nothing = BTreeMap::from([(fresh, None)]);
        assert_eq!(
            decide(&r, &voters, &learners, &nothing, 1000),
            Decision::Answer(Admission::CatchingUp(None))
        );
        let close = BTreeMap::from([(fresh, Some(1000 - CATCH_UP_SLACK))]);
        assert_eq!(
            decide(&r, &voters, &learners, &close, 1000),
            Decision::Promote {
                voters: set(&[m(1, 0), m(2, 0), fresh]),
                stale: set(&[]),
            }
        );
        let now = set(&[m(1, 0), m(2, 0), fresh]);
        assert_eq!(
            decide(&r, &now, &set(&[]), &close, 1000),
            Decision::Answer(Admission::Voter)
        );
    }

    #[test]
    fn a_replacement_drops_the_lost_node_and_stale_learners() {
        // Node 3 is gone; node 4 replaces it. A learner of an earlier try on node 4 and one
        // on the lost node are dropped with it.
        let voters = set(&[m(1, 0), m(2, 0), m(3, 0)]);
        let fresh = m(4, 5);
        let learners = set(&[fresh, m(4, 2), m(3, 7)]);
        let matched = BTreeMap::from([(fresh, Some(50))]);
        assert_eq!(
            decide(&req(fresh, &[1, 2, 4]), &voters, &learners, &matched, 60),
            Decision::Promote {
                voters: set(&[m(1, 0), m(2, 0), fresh]),
                stale: set(&[m(4, 2), m(3, 7)]),
            }
        );
    }

    #[test]
    fn a_change_that_would_shrink_the_group_is_refused() {
        // A stale view that assigns only the joiner's node and one other.
        let voters = set(&[m(1, 0), m(2, 0), m(3, 0)]);
        let fresh = m(3, 4);
        let matched = BTreeMap::from([(fresh, Some(10))]);
        let d = decide(&req(fresh, &[1, 3]), &voters, &set(&[fresh]), &matched, 10);
        assert!(
            matches!(&d, Decision::Refuse(why) if why.contains("shrink")),
            "{d:?}"
        );
    }

    #[test]
    fn a_node_not_assigned_to_the_group_is_refused() {
        let voters = set(&[m(1, 0), m(2, 0), m(3, 0)]);
        let d = decide(
            &req(m(5, 1), &[1, 2, 3]),
            &voters,
            &set(&[]),
            &BTreeMap::new(),
            0,
        );
        assert!(matches!(d, Decision::Refuse(why) if why.contains("not among the assigned")));
    }
}
