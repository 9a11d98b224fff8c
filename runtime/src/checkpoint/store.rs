//! [`CheckpointStore`]: a run's completed checkpoints in a directory, one file each
//! (`chk-<id>.ckpt`: a CRC-32 of the body, then the rmp-serde body), written whole (temporary
//! file, fsync, rename, fsync of the directory). The newest [`CheckpointStore::RETAIN`] are
//! kept, so a damaged newest one falls back to the one before.

use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::replication::state_machine::{sealed, unsealed};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory or a file could not be read or written.
    #[error("checkpoint store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A checkpoint does not encode.
    #[error("checkpoint {id} does not encode: {why}")]
    Encode {
        /// Its number.
        id: u64,
        /// Why.
        why: String,
    },
    /// The newest checkpoint is of another topology, or of the same one with other tasks.
    #[error(
        "the checkpoints in {path} are of {found}, not of this run ({expected}): use another \
         directory, or remove them"
    )]
    Mismatch {
        /// The directory.
        path: PathBuf,
        /// What they are of.
        found: String,
        /// What this run is.
        expected: String,
    },
}

/// Completed checkpoints in a directory.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
}

const PREFIX: &str = "chk-";
const SUFFIX: &str = ".ckpt";

impl CheckpointStore {
    /// How many completed checkpoints are kept.
    pub const RETAIN: usize = 2;

    /// The store in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        Ok(CheckpointStore {
            dir: dir.to_owned(),
        })
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ids of the checkpoint files present, oldest first.
    fn ids(&self) -> Result<Vec<u64>, StoreError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| StoreError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut ids: Vec<u64> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix(PREFIX)?
                    .strip_suffix(SUFFIX)?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn name(id: u64) -> String {
        format!("{PREFIX}{id:020}{SUFFIX}")
    }

    /// Writes `checkpoint` whole, then deletes all but the newest [`Self::RETAIN`].
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.write(checkpoint)?;
        let ids = self.ids()?;
        for old in ids.iter().rev().skip(Self::RETAIN) {
            self.remove(*old);
        }
        Ok(())
    }

    /// The file of `checkpoint`, as [`Self::save`] writes it: a checksum, then the body.
    pub fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>, StoreError> {
        let body = rmp_serde::to_vec(checkpoint).map_err(|e| StoreError::Encode {
            id: checkpoint.id,
            why: e.to_string(),
        })?;
        Ok(sealed(&body))
    }

    /// A checkpoint file's bytes, checked: the checkpoint they hold, or why they are not one.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        let body = unsealed(bytes).map_err(str::to_owned)?;
        rmp_serde::from_slice::<Checkpoint>(body).map_err(|e| format!("does not decode: {e}"))
    }

    /// Writes `checkpoint` whole, deleting none.
    pub fn write(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.write_file(checkpoint.id, &Self::encode(checkpoint)?)
    }

    /// Writes checkpoint `id`'s file, as [`Self::encode`] made it, whole, deleting none.
    pub fn write_file(&self, id: u64, file: &[u8]) -> Result<(), StoreError> {
        let name = Self::name(id);
        crate::replication::state_machine::write_atomically(&self.dir, &name, file).map_err(
            |source| StoreError::Io {
                path: self.dir.join(&name),
                source,
            },
        )
    }

    /// Deletes every checkpoint older than `id`.
    pub fn prune_below(&self, id: u64) -> Result<(), StoreError> {
        for old in self.ids()?.into_iter().filter(|old| *old < id) {
            self.remove(old);
        }
        Ok(())
    }

    fn remove(&self, id: u64) {
        let path = self.dir.join(Self::name(id));
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "old checkpoint not deleted");
        }
    }

    /// Reads checkpoint `id`; `None` if it is missing or its file is damaged (the reason is
    /// logged).
    pub fn read(&self, id: u64) -> Option<Checkpoint> {
        self.read_checked(id).map(|(c, _)| c)
    }

    /// Checkpoint `id`'s file, checked whole; `None` as for [`Self::read`].
    pub fn read_file(&self, id: u64) -> Option<Vec<u8>> {
        self.read_checked(id).map(|(_, file)| file)
    }

    fn read_checked(&self, id: u64) -> Option<(Checkpoint, Vec<u8>)> {
        let path = self.dir.join(Self::name(id));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "checkpoint unreadable");
                }
                return None;
            }
        };
        match Self::decode(&bytes) {
            Ok(c) if c.id == id => Some((c, bytes)),
            Ok(c) => {
                tracing::warn!(path = %path.display(), inside = c.id, "checkpoint under the wrong name: skipped");
                None
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), why, "checkpoint damaged: skipped");
                None
            }
        }
    }

    /// The newest checkpoint that reads back whole, if any. It must be of topology `topology`
    /// with components `shape` (names and parallelism), or this is an error: restoring it
    /// into other tasks would be wrong, and skipping it would silently start over.
    pub fn latest(
        &self,
        topology: &str,
        shape: &[(String, u32)],
    ) -> Result<Option<Checkpoint>, StoreError> {
        for id in self.ids()?.into_iter().rev() {
            let Some(c) = self.read(id) else { continue };
            if c.topology != topology || c.shape != shape {
                return Err(StoreError::Mismatch {
                    path: self.dir.clone(),
                    found: format!("`{}` {:?}", c.topology, c.shape),
                    expected: format!("`{topology}` {shape:?}"),
                });
            }
            return Ok(Some(c));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tempest_dsl::{MsgId, TaskId};

    use super::*;
    use crate::checkpoint::TaskSnapshot;

    fn checkpoint(id: u64) -> Checkpoint {
        Checkpoint {
            topology: "t".into(),
            shape: vec![("s".into(), 1), ("c".into(), 2)],
            id,
            tasks: BTreeMap::from([
                (
                    TaskId(0),
                    TaskSnapshot::Spout {
                        position: vec![id as u8],
                        in_flight: vec![MsgId(7)],
                        owed: vec![MsgId(3)],
                    },
                ),
                (TaskId(1), TaskSnapshot::State(vec![1, 2, 3])),
            ]),
        }
    }

    #[test]
    fn the_newest_whole_checkpoint_is_restored_and_old_ones_deleted() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = CheckpointStore::open(dir.path())?;
        let shape = checkpoint(0).shape;
        assert_eq!(store.latest("t", &shape)?, None);
        for id in 1..=4 {
            store.save(&checkpoint(id))?;
        }
        assert_eq!(store.ids()?, vec![3, 4], "the newest two are kept");
        assert_eq!(store.latest("t", &shape)?, Some(checkpoint(4)));

        // A damaged newest falls back to the one before.
        let newest = dir.path().join(CheckpointStore::name(4));
        let mut bytes = std::fs::read(&newest)?;
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&newest, bytes)?;
        assert_eq!(store.latest("t", &shape)?, Some(checkpoint(3)));
        std::fs::write(&newest, b"xy")?;
        assert_eq!(store.latest("t", &shape)?, Some(checkpoint(3)));
        Ok(())
    }

    #[test]
    fn a_checkpoint_of_another_run_is_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = CheckpointStore::open(dir.path())?;
        store.save(&checkpoint(1))?;
        let err = store
            .latest("t", &[("s".into(), 2)])
            .expect_err("another shape");
        assert!(err.to_string().contains("not of this run"), "{err}");
        assert!(store.latest("other", &checkpoint(1).shape).is_err());
        Ok(())
    }
}
