//! [`StateMachineStore`]: applies a group's committed entries to its [`ReplicatedState`] and
//! keeps its snapshots (in memory, or in a checksummed file written atomically).

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::replication::type_config::{Applied, Entry, LogId, StorageError, TypeConfig};

const SNAPSHOT_FILE: &str = "raft.snapshot";

/// Where an entry sits in its group's log; the only context `apply` gets, so every replica
/// computes the same thing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryContext {
    /// The entry's index.
    pub index: u64,
    /// The term of the leader that wrote it.
    pub term: u64,
    /// The member id (Raft node id) of the leader that wrote it: that replica proposed it,
    /// and only its answer is read.
    pub leader: u64,
}

/// The state a Raft group replicates. Every replica applies the same commands in the same
/// order, so `apply` must be deterministic: no clock, no unseeded randomness, no iteration over
/// a randomly seeded hash map. What it needs of time or chance comes in the command.
pub trait ReplicatedState: Send + 'static {
    /// What applying a command answers the replica that proposed it (a value in its process:
    /// see [`Applied`]).
    type Answer: Send + 'static;
    /// Applies one committed command; the answer goes back to whoever proposed it.
    fn apply(&mut self, command: &[u8], at: EntryContext) -> Self::Answer;
    /// The whole state, encoded (an error keeps the previous snapshot).
    fn snapshot(&self) -> Result<Vec<u8>, String>;
    /// Replaces the state with a snapshot's.
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String>;
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, openraft::BasicNode>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

struct Inner<S> {
    state: S,
    last_applied: Option<LogId>,
    membership: StoredMembership<u64, openraft::BasicNode>,
    snapshot: Option<StoredSnapshot>,
    snapshot_seq: u64,
    dir: Option<PathBuf>,
}

/// A group's state machine over a [`ReplicatedState`]. Clones share it.
pub struct StateMachineStore<S> {
    inner: Arc<Mutex<Inner<S>>>,
}

impl<S> Clone for StateMachineStore<S> {
    fn clone(&self) -> Self {
        StateMachineStore {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Why a stored snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file could not be read.
    #[error("raft snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is damaged or does not restore.
    #[error("raft snapshot {path} is corrupt: {why}; this replica refuses to start")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

fn encode_snapshot(s: &StoredSnapshot) -> std::io::Result<Vec<u8>> {
    let body = rmp_serde::to_vec(s).map_err(std::io::Error::other)?;
    Ok(sealed(&body))
}

/// `body` behind its CRC-32 (big-endian): how every small file the runtime stores (snapshots,
/// checkpoints, replica identities) is framed.
pub(crate) fn sealed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of bytes [`sealed`] framed, or why they are not whole.
pub(crate) fn unsealed(bytes: &[u8]) -> Result<&[u8], &'static str> {
    let (crc, body) = bytes.split_first_chunk::<4>().ok_or("too short")?;
    if crc32fast::hash(body) != u32::from_be_bytes(*crc) {
        return Err("checksum mismatch");
    }
    Ok(body)
}

/// Reads and checks the snapshot stored in `dir`; `None` if there is none.
fn read_snapshot(dir: &Path) -> Result<Option<StoredSnapshot>, SnapshotError> {
    let path = dir.join(SNAPSHOT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotError::Io { path, source }),
    };
    let corrupt = |why: String| SnapshotError::Corrupt {
        path: path.clone(),
        why,
    };
    let body = unsealed(&bytes).map_err(|why| corrupt(why.into()))?;
    rmp_serde::from_slice(body)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

/// Writes `bytes` to `dir/name` whole: a temporary file, fsynced, renamed over it.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

impl<S: ReplicatedState> StateMachineStore<S> {
    /// A state machine whose snapshots live in memory.
    pub fn in_memory(state: S) -> Self {
        Self::with(state, None)
    }

    /// A state machine whose snapshots live in `dir`; the last one is loaded now.
    pub fn open(state: S, dir: &Path) -> Result<Self, SnapshotError> {
        let store = Self::with(state, Some(dir.to_owned()));
        let Some(snap) = read_snapshot(dir)? else {
            return Ok(store);
        };
        {
            let mut inner = store.lock();
            inner
                .state
                .restore(&snap.data)
                .map_err(|why| SnapshotError::Corrupt {
                    path: dir.join(SNAPSHOT_FILE),
                    why,
                })?;
            inner.last_applied = snap.meta.last_log_id;
            inner.membership = snap.meta.last_membership.clone();
            inner.snapshot = Some(snap);
        }
        Ok(store)
    }

    /// Checks the snapshot stored in `dir`, if any, without loading it into a state: whether
    /// [`StateMachineStore::open`] would find it whole.
    pub fn verify(dir: &Path) -> Result<(), SnapshotError> {
        read_snapshot(dir).map(|_| ())
    }

    fn with(state: S, dir: Option<PathBuf>) -> Self {
        StateMachineStore {
            inner: Arc::new(Mutex::new(Inner {
                state,
                last_applied: None,
                membership: StoredMembership::default(),
                snapshot: None,
                snapshot_seq: 0,
                dir,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<S>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the applied state.
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.lock().state)
    }

    /// The index of the last applied entry.
    pub fn applied_index(&self) -> Option<u64> {
        self.lock().last_applied.map(|l| l.index)
    }
}

fn snapshot_of(s: &StoredSnapshot) -> Snapshot<TypeConfig> {
    Snapshot {
        meta: s.meta.clone(),
        snapshot: Box::new(Cursor::new(s.data.clone())),
    }
}

impl<S: ReplicatedState> RaftSnapshotBuilder<TypeConfig> for StateMachineStore<S> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let mut inner = self.lock();
        inner.snapshot_seq += 1;
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                inner.last_applied.map_or(0, |l| l.index),
                inner.snapshot_seq
            ),
        };
        let data = inner.state.snapshot().map_err(|why| {
            StorageError::from(StorageIOError::write_snapshot(
                None,
                &std::io::Error::other(why),
            ))
        })?;
        let stored = StoredSnapshot { meta, data };
        if let Some(dir) = &inner.dir {
            let bytes = encode_snapshot(&stored)
                .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, &e)))?;
            write_atomically(dir, SNAPSHOT_FILE, &bytes)
                .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, &e)))?;
        }
        let snapshot = snapshot_of(&stored);
        inner.snapshot = Some(stored);
        Ok(snapshot)
    }
}

impl<S: ReplicatedState> RaftStateMachine<TypeConfig> for StateMachineStore<S> {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, openraft::BasicNode>), StorageError> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let mut out = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            let at = EntryContext {
                index: entry.log_id.index,
                term: entry.log_id.leader_id.term,
                leader: entry.log_id.leader_id.node_id,
            };
            match entry.payload {
                EntryPayload::Blank => out.push(Applied::default()),
                EntryPayload::Normal(cmd) => {
                    out.push(Applied::new(inner.state.apply(&cmd.0, at)));
                }
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(Applied::default());
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut inner = self.lock();
        inner.state.restore(&data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::other(e),
            ))
        })?;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        if let Some(dir) = &inner.dir {
            let bytes = encode_snapshot(&stored)
                .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, &e)))?;
            write_atomically(dir, SNAPSHOT_FILE, &bytes)
                .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, &e)))?;
        }
        inner.snapshot = Some(stored);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.lock().snapshot.as_ref().map(snapshot_of))
    }
}
