//! The scenarios and their seeded fault schedules. Pure: a scenario, a seed and a load duration
//! give the same steps every time, so a failing seed replays the same faults. A step names its
//! fault abstractly ("the leader of a group"); the harness resolves it against the running
//! cluster, choosing among the candidates with the step's `pick`.

use std::time::Duration;

use rand::{Rng, SeedableRng};

/// A fault the harness can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the node leading a counter group; restart it (disk kept) after the hold.
    KillLeader,
    /// SIGKILL a node following a counter group; restart it after the hold.
    KillFollower,
    /// SIGSTOP the node leading a counter group; SIGCONT it after the hold.
    PauseLeader,
    /// Cut the node leading a counter group from every other node, both ways; heal after the
    /// hold. Its group's majority elects a new leader; the old one can commit nothing.
    PartitionLeader,
    /// Cut one way: nothing the leading node of a group sends reaches the others, while what
    /// they send still reaches it.
    OneWayLeader,
    /// SIGKILL a node running a source task; restart it after the hold.
    KillSource,
    /// SIGKILL the node leading the manager group; restart it after the hold.
    KillManager,
    /// Delay every byte to and from a node following a counter group by `delay` for the hold.
    SlowFollower {
        /// The delay added each way.
        delay: Duration,
    },
    /// SIGKILL every node holding a replica of one counter group at once; restart them all
    /// from their disks after the hold.
    KillGroup,
    /// SIGKILL a node following a counter group, damage the Raft log of every replica on it,
    /// restart it after the hold: its replicas set the damaged files aside and are repaired
    /// from their peers under new identities.
    CorruptLog,
    /// SIGKILL a node following a counter group, wipe its data (a manager node keeps its
    /// manager log: a manager whose disk is wiped rejoins under a new node id), restart it
    /// after the hold: its replicas rejoin under new identities.
    WipeDisk,
    /// SIGKILL a node following a counter group and keep it down until the manager has moved
    /// its replicas to other nodes and every group has R voters again (at most 30 s), then
    /// bring it back as a spare.
    LoseNode,
    /// SIGKILL a node running tasks of a checkpointed run (whose counter is not replicated);
    /// restart it after the hold. The run rolls back to its last checkpoint on every node.
    KillCheckpointed,
    /// SIGKILL a node running a sink task; restart it after the hold.
    KillSink,
    /// Cut a node running a sink task from every other node, both ways; heal after the hold:
    /// the connection to the sink is lost.
    CutSink,
    /// No fault: the cluster runs undisturbed for the hold.
    Quiet,
}

impl Fault {
    /// SIGKILLs the fault sends (a group kill sends one per replica).
    pub fn kills(self, replicas: u32) -> u32 {
        match self {
            Fault::KillLeader
            | Fault::KillFollower
            | Fault::KillSource
            | Fault::KillManager
            | Fault::CorruptLog
            | Fault::WipeDisk
            | Fault::LoseNode
            | Fault::KillCheckpointed
            | Fault::KillSink => 1,
            Fault::KillGroup => replicas,
            _ => 0,
        }
    }

    /// Whether the fault takes a group's leader away (so a failover is measured).
    pub fn fails_over(self) -> bool {
        matches!(
            self,
            Fault::KillLeader | Fault::PauseLeader | Fault::PartitionLeader | Fault::OneWayLeader
        )
    }
}

/// One step of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// When to inject it, from the start of the load (later if the previous step is still
    /// healing).
    pub at: Duration,
    /// What to inject.
    pub fault: Fault,
    /// How long the fault lasts before it is healed (the node restarted, resumed, reconnected).
    pub hold: Duration,
    /// Chooses among the candidates (groups, nodes) the harness finds.
    pub pick: u64,
}

/// A named scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Group leaders SIGKILLed, one at a time.
    LeaderKill,
    /// Group followers SIGKILLed.
    FollowerKill,
    /// Group leaders paused with SIGSTOP past their election timeout.
    PausedLeader,
    /// Group leaders partitioned from their majority (both ways, then one way).
    PartitionedLeader,
    /// The nodes of the source tasks SIGKILLed.
    SourceKill,
    /// The manager's leader SIGKILLed.
    ManagerKill,
    /// A follower's links slowed down.
    SlowFollower,
    /// Every replica of a group SIGKILLed together, restarted from disk.
    GroupKill,
    /// A follower's logs damaged while it is down.
    CorruptLog,
    /// A follower's disk wiped while it is down.
    WipedDisk,
    /// A follower's node lost until its replicas are replaced.
    LostNode,
    /// Nodes of a checkpointed run (its counter not replicated) SIGKILLed: rollback recovery.
    Rollback,
    /// The nodes of the sink tasks SIGKILLed.
    SinkKill,
    /// The nodes of the sink tasks cut from the others.
    SinkCut,
    /// The submitting client SIGKILLed mid-submission (the submission happens once or not
    /// at all), then the nodes of the source tasks SIGKILLed.
    DriverKill,
    /// A random mix of all of these, and quiet spells.
    Soak,
}

impl Scenario {
    /// Every scenario, in the order `--scenario all` runs them.
    pub const ALL: [Scenario; 16] = [
        Scenario::LeaderKill,
        Scenario::FollowerKill,
        Scenario::PausedLeader,
        Scenario::PartitionedLeader,
        Scenario::SourceKill,
        Scenario::ManagerKill,
        Scenario::SlowFollower,
        Scenario::GroupKill,
        Scenario::CorruptLog,
        Scenario::WipedDisk,
        Scenario::LostNode,
        Scenario::SinkKill,
        Scenario::SinkCut,
        Scenario::DriverKill,
        Scenario::Rollback,
        Scenario::Soak,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::LeaderKill => "leader-kill",
            Scenario::FollowerKill => "follower-kill",
            Scenario::PausedLeader => "paused-leader",
            Scenario::PartitionedLeader => "partitioned-leader",
            Scenario::SourceKill => "source-kill",
            Scenario::ManagerKill => "manager-kill",
            Scenario::SlowFollower => "slow-follower",
            Scenario::GroupKill => "group-kill",
            Scenario::CorruptLog => "corrupt-log",
            Scenario::WipedDisk => "wiped-disk",
            Scenario::LostNode => "lost-node",
            Scenario::Rollback => "rollback",
            Scenario::SinkKill => "sink-kill",
            Scenario::SinkCut => "sink-cut",
            Scenario::DriverKill => "driver-kill",
            Scenario::Soak => "soak",
        }
    }

    /// One line on what it does.
    pub fn about(self) -> &'static str {
        match self {
            Scenario::LeaderKill => {
                "SIGKILL the node leading a counter group, restart it with its disk; repeat"
            }
            Scenario::FollowerKill => {
                "SIGKILL a node following a counter group, restart it; repeat"
            }
            Scenario::PausedLeader => {
                "SIGSTOP a group's leader past its election timeout, then SIGCONT; repeat"
            }
            Scenario::PartitionedLeader => {
                "cut a group's leader from its majority (both ways, or one way), then heal; no split brain"
            }
            Scenario::SourceKill => "SIGKILL a node running a source task, restart it; repeat",
            Scenario::ManagerKill => "SIGKILL the manager's leader, restart it; repeat",
            Scenario::SlowFollower => "delay every byte to and from a group's follower; repeat",
            Scenario::GroupKill => {
                "SIGKILL all replicas of a group at once, restart them from disk; repeat"
            }
            Scenario::CorruptLog => {
                "SIGKILL a group's follower, damage its replicas' logs, restart it: repaired from its peers; repeat"
            }
            Scenario::WipedDisk => {
                "SIGKILL a group's follower, wipe its data, restart it: rejoins under new identities; repeat"
            }
            Scenario::LostNode => {
                "SIGKILL a group's follower and keep it down until its replicas are replaced elsewhere; repeat"
            }
            Scenario::Rollback => {
                "SIGKILL a node of a checkpointed run whose counter is not replicated, restart it: the run rolls back to its last checkpoint; repeat"
            }
            Scenario::SinkKill => "SIGKILL a node running a sink task, restart it; repeat",
            Scenario::SinkCut => {
                "cut a node running a sink task from every other node, then heal; repeat"
            }
            Scenario::DriverKill => {
                "SIGKILL the submitting client mid-submission (once or not at all), then SIGKILL source nodes; repeat"
            }
            Scenario::Soak => {
                "a seeded random mix of every fault above on the replicated run, with quiet spells"
            }
        }
    }

    /// The scenario called `name`.
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The faults it draws from.
    fn faults(self, rng: &mut impl Rng) -> Fault {
        match self {
            Scenario::LeaderKill => Fault::KillLeader,
            Scenario::FollowerKill => Fault::KillFollower,
            Scenario::PausedLeader => Fault::PauseLeader,
            Scenario::PartitionedLeader => {
                if rng.random_bool(0.5) {
                    Fault::PartitionLeader
                } else {
                    Fault::OneWayLeader
                }
            }
            Scenario::SourceKill => Fault::KillSource,
            Scenario::ManagerKill => Fault::KillManager,
            Scenario::SlowFollower => Fault::SlowFollower {
                delay: Duration::from_millis(rng.random_range(50..=200)),
            },
            Scenario::GroupKill => Fault::KillGroup,
            Scenario::CorruptLog => Fault::CorruptLog,
            Scenario::WipedDisk => Fault::WipeDisk,
            Scenario::LostNode => Fault::LoseNode,
            Scenario::Rollback => Fault::KillCheckpointed,
            Scenario::SinkKill => Fault::KillSink,
            Scenario::SinkCut => Fault::CutSink,
            // The driver is killed while it submits, before the schedule starts.
            Scenario::DriverKill => Fault::KillSource,
            Scenario::Soak => {
                // Every other scenario's faults on the replicated run (rollback's need a
                // checkpointed one; rollback and the soak are last).
                let pool = &Scenario::ALL[..Scenario::ALL.len() - 2];
                // About a quarter of the time, nothing.
                if rng.random_bool(0.25) {
                    Fault::Quiet
                } else {
                    pool[rng.random_range(0..pool.len())].faults(rng)
                }
            }
        }
    }
}

/// When the first fault comes: the topology has been running a while.
const FIRST_FAULT: Duration = Duration::from_millis(1500);
/// How long before the end of the load the last fault must have healed.
const LAST_HEAL: Duration = Duration::from_millis(1000);

/// The schedule of `scenario` for `seed` over a load of `load`.
pub fn schedule(scenario: Scenario, seed: u64, load: Duration) -> Vec<Step> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ name_hash(scenario.name()));
    let mut steps = Vec::new();
    let mut at = FIRST_FAULT;
    loop {
        let fault = scenario.faults(&mut rng);
        let hold_ms = match fault {
            Fault::KillLeader
            | Fault::KillFollower
            | Fault::KillSource
            | Fault::KillManager
            | Fault::CorruptLog
            | Fault::WipeDisk
            | Fault::KillCheckpointed
            | Fault::KillSink => rng.random_range(300..=1500),
            Fault::CutSink => rng.random_range(1000..=2500),
            // Past the harness's replace timeout (4 s) and the new replica's catching up.
            Fault::LoseNode => rng.random_range(5000..=7000),
            Fault::KillGroup => rng.random_range(500..=1500),
            Fault::PauseLeader => rng.random_range(500..=2000),
            Fault::PartitionLeader | Fault::OneWayLeader => rng.random_range(1000..=2500),
            Fault::SlowFollower { .. } => rng.random_range(2000..=4000),
            Fault::Quiet => rng.random_range(1000..=2000),
        };
        let hold = Duration::from_millis(hold_ms);
        if at + hold + LAST_HEAL > load {
            break;
        }
        steps.push(Step {
            at,
            fault,
            hold,
            pick: rng.random(),
        });
        // Time to recover (a restarted node rejoins) before the next fault.
        at += hold + Duration::from_millis(rng.random_range(1000..=2500));
    }
    steps
}

/// A stable hash of a name (FNV-1a), so each scenario draws its own schedule from a seed.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_schedule_and_another_seed_differs() {
        let load = Duration::from_secs(60);
        for s in Scenario::ALL {
            let a = schedule(s, 7, load);
            assert_eq!(a, schedule(s, 7, load), "{}", s.name());
            let least = if s == Scenario::LostNode { 6 } else { 10 };
            assert!(a.len() >= least, "{}: {} steps", s.name(), a.len());
            assert_ne!(a, schedule(s, 8, load), "{}", s.name());
        }
    }

    #[test]
    fn steps_are_ordered_and_heal_before_the_load_ends() {
        let load = Duration::from_secs(30);
        for s in Scenario::ALL {
            let steps = schedule(s, 1, load);
            for w in steps.windows(2) {
                assert!(w[0].at + w[0].hold < w[1].at);
            }
            for st in &steps {
                assert!(st.at >= FIRST_FAULT && st.at + st.hold + LAST_HEAL <= load);
            }
        }
    }

    #[test]
    fn the_soak_mixes_faults_and_every_name_parses() {
        let steps = schedule(Scenario::Soak, 3, Duration::from_secs(600));
        let kinds: std::collections::BTreeSet<String> = steps
            .iter()
            .map(|s| {
                format!("{:?}", s.fault)
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        assert!(kinds.len() >= 11, "{kinds:?}");
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
        }
        assert_eq!(Scenario::from_name("nope"), None);
    }
}
