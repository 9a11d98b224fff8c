//! Rollback recovery in a cluster: the checkpoints of a run that takes them
//! (`TopologyConfig::checkpoint_interval`), and where they are kept.
//!
//! - **Coordinator.** The node of the run's first spout task coordinates ([`Coordinator`], a
//!   pure core: time is an input). It triggers each checkpoint at every spout (on every node),
//!   the barriers flow with the data (across nodes in order with the batches of each link),
//!   and every task that saves (spouts, stateful bolts) sends what it saved to the
//!   coordinator.
//! - **Two copies.** Once every task saved, the coordinator writes the whole checkpoint to its
//!   node's store and sends a copy to another node, which stores it and answers. Only then is
//!   the checkpoint complete: the spouts hear of it, and the node reports it to the manager,
//!   which records it in the run's state (`ManagerCommand::Checkpointed`).
//! - **Rollback.** When a node of the run dies, or a task of it fails (a spout or a stateful
//!   task at once, a stateless bolt once its node's supervisor gives up on it), the manager
//!   moves its tasks if need be and rolls the run back: a new generation starts on every node from the recorded checkpoint, each node
//!   fetching the file from another one if it does not store it; the spouts go back to their
//!   positions and replay what followed.
//! - **Retention.** A node keeps the recorded checkpoint and any newer one of each running run,
//!   and deletes the others and those of runs that ended.

use std::path::Path;
use std::time::Instant;

use tempest_dsl::TaskId;

use crate::checkpoint::{Checkpoint, CheckpointStore, TaskSnapshot, Tick, Tracker};
use crate::cluster::admin::Placement;
use crate::cluster::worker::wire::CheckpointMessage;

/// The directory holding the checkpoints of every run on a node.
fn root(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("checkpoints")
}

fn run_dir_name(name: &str, seed: u64) -> String {
    format!("{name}-{seed:016x}")
}

/// The directory of the checkpoints of run `name`, `seed`: one plain path component per run
/// (a name from the network that is not a topology name is refused, so it cannot lead out of
/// the data directory).
fn run_dir(data_dir: &Path, name: &str, seed: u64) -> Result<std::path::PathBuf, String> {
    crate::cluster::manager::check_name(name)?;
    Ok(root(data_dir).join(run_dir_name(name, seed)))
}

/// The store of the checkpoints of run `name`, `seed` on the node whose data directory is
/// `data_dir`, created if missing.
pub(crate) fn store(data_dir: &Path, name: &str, seed: u64) -> Result<CheckpointStore, String> {
    CheckpointStore::open(&run_dir(data_dir, name, seed)?).map_err(|e| e.to_string())
}

/// The store of run `name`, `seed` if this node has one (nothing is created).
fn existing_store(data_dir: &Path, name: &str, seed: u64) -> Option<CheckpointStore> {
    let dir = run_dir(data_dir, name, seed).ok()?;
    if !dir.is_dir() {
        return None;
    }
    CheckpointStore::open(&dir).ok()
}

/// Checkpoint `id` of run `name`, `seed`, if this node stores it whole (nothing is created).
pub(crate) fn read(data_dir: &Path, name: &str, seed: u64, id: u64) -> Option<Checkpoint> {
    existing_store(data_dir, name, seed)?.read(id)
}

/// Checkpoint `id`'s file, checked whole, if this node stores it (nothing is created).
pub(crate) fn read_file(data_dir: &Path, name: &str, seed: u64, id: u64) -> Option<Vec<u8>> {
    existing_store(data_dir, name, seed)?.read_file(id)
}

/// Stores checkpoint file `bytes`, which must hold checkpoint `id` whole.
pub(crate) fn store_file(
    data_dir: &Path,
    name: &str,
    seed: u64,
    id: u64,
    bytes: &[u8],
) -> Result<(), String> {
    let checkpoint = CheckpointStore::decode(bytes)?;
    if checkpoint.id != id || checkpoint.topology != name {
        return Err(format!(
            "the file holds checkpoint {} of `{}`, not {id} of `{name}`",
            checkpoint.id, checkpoint.topology
        ));
    }
    store(data_dir, name, seed)?
        .write_file(id, bytes)
        .map_err(|e| e.to_string())
}

/// Deletes the checkpoints a node no longer needs: those older than each running run's
/// recorded one, and every checkpoint of runs that are not running.
pub(crate) fn tidy(data_dir: &Path, placements: &[Placement]) {
    let root = root(data_dir);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.file_name().to_string_lossy().into_owned();
        match placements
            .iter()
            .find(|p| run_dir_name(&p.name, p.seed) == dir)
        {
            Some(p) => {
                if let Some(recorded) = p.checkpoint {
                    if let Ok(s) = CheckpointStore::open(&entry.path()) {
                        if let Err(e) = s.prune_below(recorded) {
                            tracing::warn!(topology = %p.name, error = %e, "old checkpoints not deleted");
                        }
                    }
                }
            }
            None => {
                if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "checkpoints of an ended run not deleted");
                }
            }
        }
    }
}

/// What the coordinator asks its node to do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Tell every spout of the run, here and on the other nodes.
    Spouts(CheckpointMessage),
    /// Have another node store checkpoint `id` (its file); with no other node, call
    /// [`Coordinator::stored`] at once.
    Copy { id: u64, file: Vec<u8> },
}

/// The coordinator of a run's checkpoints, on the node of its first spout task.
pub(crate) struct Coordinator {
    tracker: Tracker,
    store: CheckpointStore,
    topology: String,
    shape: Vec<(String, u32)>,
    /// The checkpoint whose copy is awaited, and since when.
    copying: Option<(u64, Instant)>,
    /// The last checkpoint stored on two nodes.
    completed: Option<u64>,
}

impl Coordinator {
    /// A coordinator for run `topology` of components `shape`, following `tracker` (which
    /// knows the tasks that save, the first id, and what the generation restored), storing
    /// into `store`.
    pub(crate) fn new(
        tracker: Tracker,
        store: CheckpointStore,
        topology: String,
        shape: Vec<(String, u32)>,
    ) -> Self {
        Coordinator {
            tracker,
            store,
            topology,
            shape,
            copying: None,
            completed: None,
        }
    }

    /// The last checkpoint stored on two nodes.
    pub(crate) fn completed(&self) -> Option<u64> {
        self.completed
    }

    /// Moves time to `now`.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some((id, since)) = self.copying {
            if now.saturating_duration_since(since) >= self.tracker.timeout() {
                tracing::warn!(topology = %self.topology, checkpoint = id, "no node stored a copy of the checkpoint in time");
                actions.extend(self.stored(id, false));
            }
        }
        match self.tracker.tick(now) {
            Tick::Wait => {}
            Tick::Trigger(id) => actions.push(Action::Spouts(CheckpointMessage::Trigger { id })),
            Tick::TimedOut(id) => {
                tracing::warn!(topology = %self.topology, checkpoint = id, "checkpoint timed out");
                actions.push(Action::Spouts(CheckpointMessage::Done { id, ok: false }));
            }
        }
        actions
    }

    /// Task `task` saved its part of checkpoint `id`, or could not.
    pub(crate) fn saved(
        &mut self,
        task: TaskId,
        id: u64,
        saved: Result<TaskSnapshot, String>,
        now: Instant,
    ) -> Vec<Action> {
        match saved {
            Ok(snapshot) => {
                let done = self.tracker.saved(task, id, snapshot, now);
                self.complete(done, now)
            }
            Err(why) => {
                if self.tracker.failed(id) {
                    tracing::warn!(topology = %self.topology, checkpoint = id, task = task.0, %why, "checkpoint failed");
                    return vec![Action::Spouts(CheckpointMessage::Done { id, ok: false })];
                }
                Vec::new()
            }
        }
    }

    /// A spout waits for a checkpoint holding its end: the next one comes now.
    pub(crate) fn hurry(&mut self) {
        self.tracker.hurry();
    }

    /// Task `task` ended: it saves no more.
    pub(crate) fn ended(&mut self, task: TaskId, now: Instant) -> Vec<Action> {
        let done = self.tracker.finished(task, now);
        self.complete(done, now)
    }

    /// Every task saved checkpoint `done`: it is written here and copied to another node.
    fn complete(
        &mut self,
        done: Option<(u64, std::collections::BTreeMap<TaskId, TaskSnapshot>)>,
        now: Instant,
    ) -> Vec<Action> {
        let Some((id, tasks)) = done else {
            return Vec::new();
        };
        let checkpoint = Checkpoint {
            topology: self.topology.clone(),
            shape: self.shape.clone(),
            id,
            tasks,
        };
        // Encoded once: written here, and sent as it is for the copy.
        let file = CheckpointStore::encode(&checkpoint)
            .and_then(|file| self.store.write_file(id, &file).map(|()| file));
        match file {
            Ok(file) => {
                let mut actions = Vec::new();
                if let Some((older, _)) = self.copying.take() {
                    // Superseded before its copy was confirmed: it failed.
                    tracing::warn!(topology = %self.topology, checkpoint = older, "no node stored a copy of the checkpoint before the next one");
                    self.tracker.not_stored();
                    actions.push(Action::Spouts(CheckpointMessage::Done {
                        id: older,
                        ok: false,
                    }));
                }
                self.copying = Some((id, now));
                actions.push(Action::Copy { id, file });
                actions
            }
            Err(e) => {
                tracing::warn!(topology = %self.topology, checkpoint = id, error = %e, "checkpoint not stored");
                self.tracker.not_stored();
                vec![Action::Spouts(CheckpointMessage::Done { id, ok: false })]
            }
        }
    }

    /// The copy of checkpoint `id` was stored on another node (`ok`) or not.
    pub(crate) fn stored(&mut self, id: u64, ok: bool) -> Vec<Action> {
        if self.copying.is_none_or(|(c, _)| c != id) {
            return Vec::new();
        }
        self.copying = None;
        if ok {
            self.completed = Some(id);
            tracing::debug!(topology = %self.topology, checkpoint = id, "checkpoint completed on two nodes");
        } else {
            self.tracker.not_stored();
        }
        vec![Action::Spouts(CheckpointMessage::Done { id, ok })]
    }

    /// Counters of the run's checkpoints here: (completed, failed).
    pub(crate) fn counts(&self) -> (u64, u64) {
        let s = self.tracker.stats();
        (s.completed, s.failed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use super::*;

    fn coordinator(dir: &Path, now: Instant) -> Coordinator {
        let expected: BTreeSet<TaskId> = [TaskId(0), TaskId(1)].into();
        let tracker = Tracker::new(
            Duration::from_millis(100),
            1,
            expected,
            BTreeMap::new(),
            now,
        );
        let store = store(dir, "t", 7).expect("store");
        Coordinator::new(tracker, store, "t".into(), vec![("c".into(), 2)])
    }

    fn spout() -> TaskSnapshot {
        TaskSnapshot::Spout {
            position: vec![1],
            in_flight: Vec::new(),
            owed: Vec::new(),
        }
    }

    #[test]
    fn a_checkpoint_completes_only_once_its_copy_is_stored_elsewhere() {
        let dir = tempfile::tempdir().expect("dir");
        let t0 = Instant::now();
        let mut c = coordinator(dir.path(), t0);
        let t1 = t0 + Duration::from_millis(100);
        let actions = c.tick(t1);
        assert!(matches!(
            actions[..],
            [Action::Spouts(CheckpointMessage::Trigger { id: 1 })]
        ));
        assert!(c.saved(TaskId(0), 1, Ok(spout()), t1).is_empty());
        let actions = c.saved(TaskId(1), 1, Ok(TaskSnapshot::State(vec![9])), t1);
        let [Action::Copy { id: 1, file }] = &actions[..] else {
            panic!("a copy is asked for: {actions:?}");
        };
        assert_eq!(
            c.completed(),
            None,
            "not complete before the copy is stored"
        );
        // The copy's node stores the file as it came.
        let other = tempfile::tempdir().expect("other");
        store_file(other.path(), "t", 7, 1, file).expect("stored");
        assert!(
            store(other.path(), "t", 7)
                .expect("store")
                .read(1)
                .is_some()
        );
        let actions = c.stored(1, true);
        assert!(matches!(
            actions[..],
            [Action::Spouts(CheckpointMessage::Done { id: 1, ok: true })]
        ));
        assert_eq!(c.completed(), Some(1));
        assert_eq!(c.counts(), (1, 0));
        // A file under another id, or damaged, is refused.
        assert!(store_file(other.path(), "t", 7, 2, file).is_err());
        let mut bad = file.clone();
        if let Some(b) = bad.last_mut() {
            *b ^= 1;
        }
        assert!(store_file(other.path(), "t", 7, 1, &bad).is_err());
    }

    #[test]
    fn a_copy_that_never_comes_fails_the_checkpoint_and_the_next_one_follows() {
        let dir = tempfile::tempdir().expect("dir");
        let t0 = Instant::now();
        let mut c = coordinator(dir.path(), t0);
        let t1 = t0 + Duration::from_millis(100);
        c.tick(t1);
        c.saved(TaskId(0), 1, Ok(spout()), t1);
        c.saved(TaskId(1), 1, Ok(spout()), t1);
        // The next checkpoint is triggered meanwhile; the copy times out.
        let late = t1 + Duration::from_secs(61);
        let actions = c.tick(late);
        assert!(
            actions.iter().any(|a| matches!(
                a,
                Action::Spouts(CheckpointMessage::Done { id: 1, ok: false })
            )),
            "{actions:?}"
        );
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Spouts(CheckpointMessage::Trigger { id: 2 }))),
            "{actions:?}"
        );
        assert_eq!(c.completed(), None);
        assert_eq!(c.counts(), (0, 1));
        // A late answer for it changes nothing.
        assert!(c.stored(1, true).is_empty());
        assert_eq!(c.completed(), None);
    }

    #[test]
    fn a_name_that_is_not_a_topology_name_reaches_no_file() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(store(dir.path(), "../escape", 1).is_err());
        assert!(read(dir.path(), "../escape", 1, 1).is_none());
        assert!(store_file(dir.path(), "a/b", 1, 1, b"junk").is_err());
        assert!(!dir.path().join("escape-0000000000000001").exists());
        // Reading what is not stored creates nothing.
        assert!(read(dir.path(), "t", 7, 1).is_none());
        assert!(!root(dir.path()).exists());
    }

    #[test]
    fn tidying_keeps_the_recorded_checkpoint_and_newer_ones_of_running_runs() {
        let dir = tempfile::tempdir().expect("dir");
        let s = store(dir.path(), "t", 7).expect("store");
        for id in 1..=4 {
            s.write(&Checkpoint {
                topology: "t".into(),
                shape: Vec::new(),
                id,
                tasks: BTreeMap::new(),
            })
            .expect("write");
        }
        let gone = store(dir.path(), "old", 1).expect("store");
        drop(gone);
        let placement = Placement {
            name: "t".into(),
            topology: "t".into(),
            args: BTreeMap::new(),
            seed: 7,
            assignment: BTreeMap::new(),
            replicas: BTreeMap::new(),
            finished: BTreeSet::new(),
            active: true,
            generation: 1,
            checkpoint: Some(3),
            positions: BTreeMap::new(),
        };
        tidy(dir.path(), &[placement]);
        let kept: Vec<u64> = (1..=4).filter(|id| s.read(*id).is_some()).collect();
        assert_eq!(kept, [3, 4]);
        assert!(!root(dir.path()).join(run_dir_name("old", 1)).exists());
    }
}
