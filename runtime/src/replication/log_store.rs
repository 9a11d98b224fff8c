//! [`LogStore`]: a Raft group's log and vote, in memory or in one checksummed append-only file.
//!
//! On disk every change is a record `[len: u32][!len: u32][crc32: u32][rmp-serde of Record]`,
//! appended and fsynced before openraft is told it is durable. The length is stored twice (the
//! second time inverted), so a damaged length is told from a record cut short. On start the file is replayed: a record cut
//! short at the end (a crash mid-write) is dropped and the file truncated there; a bad record
//! anywhere else is corruption, and the store refuses to open rather than serve a wrong log.
//! Once enough records are dead (purged or truncated entries), the file is rewritten with only
//! what is live (write a temporary file, fsync, rename, fsync the directory).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use crate::replication::type_config::{Entry, LogId, StorageError, TypeConfig};

const LOG_FILE: &str = "raft.log";
const LOG_TMP: &str = "raft.log.tmp";

/// The bytes before a record's body: its length, the length inverted, its checksum.
const HEADER: usize = 12;

/// The largest record a log holds: a longer length is corruption, not a torn write.
const MAX_RECORD_BYTES: usize = 256 << 20;

/// Why a stored log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file could not be read or written.
    #[error("raft log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A record in the middle of the file is damaged.
    #[error(
        "raft log {path} is corrupt at byte {offset}: {why}; this replica refuses to start rather \
         than serve a wrong log"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong with it.
        why: String,
    },
}

#[derive(Serialize, Deserialize)]
enum Record {
    Append(Vec<Entry>),
    /// Entries from this index on are gone.
    Truncate(u64),
    Purge(LogId),
    Vote(Vote<u64>),
    Committed(Option<LogId>),
}

#[derive(Default)]
struct Inner {
    file: Option<(PathBuf, File)>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    log: BTreeMap<u64, Entry>,
    /// Records written since the file last held only live state.
    records: usize,
}

/// A Raft group's log and vote. Clones share the same log.
#[derive(Clone, Default)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn io_err(path: &Path, source: std::io::Error) -> LogError {
    LogError::Io {
        path: path.to_owned(),
        source,
    }
}

fn frame(record: &Record) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let body = rmp_serde::to_vec(record)?;
    let mut out = Vec::with_capacity(body.len() + HEADER);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&(!(body.len() as u32)).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads the records of `bytes`; returns them and the length of the valid prefix.
fn parse(bytes: &[u8], path: &Path) -> Result<(Vec<Record>, usize), LogError> {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < HEADER {
            break; // a torn header at the tail
        }
        let word = |i: usize| u32::from_be_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        let (len, check, crc) = (word(0), word(4), word(8));
        let corrupt = |why: String| LogError::Corrupt {
            path: path.to_owned(),
            offset: at as u64,
            why,
        };
        if len != !check {
            return Err(corrupt("a damaged record length".into()));
        }
        let len = len as usize;
        if len > MAX_RECORD_BYTES {
            return Err(corrupt(format!("a record of {len} bytes")));
        }
        let Some(body) = rest.get(HEADER..HEADER + len) else {
            break; // a torn record at the tail
        };
        let is_last = at + HEADER + len == bytes.len();
        if crc32fast::hash(body) != crc {
            if is_last {
                break; // a torn write of the last record
            }
            return Err(corrupt("checksum mismatch".into()));
        }
        let record = rmp_serde::from_slice(body).map_err(|e| corrupt(e.to_string()))?;
        records.push(record);
        at += HEADER + len;
    }
    Ok((records, at))
}

impl Inner {
    fn replay(&mut self, record: Record) {
        match record {
            Record::Append(entries) => {
                for e in entries {
                    self.log.insert(e.log_id.index, e);
                }
            }
            Record::Truncate(from) => {
                self.log.split_off(&from);
            }
            Record::Purge(id) => {
                self.log = self.log.split_off(&(id.index + 1));
                self.last_purged = Some(id);
            }
            Record::Vote(v) => self.vote = Some(v),
            Record::Committed(c) => self.committed = c,
        }
    }

    /// Appends and fsyncs a record (nothing to do in memory).
    fn persist(&mut self, record: &Record) -> std::io::Result<()> {
        let Some((_, file)) = &mut self.file else {
            return Ok(());
        };
        let bytes = frame(record).map_err(std::io::Error::other)?;
        file.write_all(&bytes)?;
        file.sync_data()?;
        self.records += 1;
        Ok(())
    }

    /// Rewrites the file with only the live state once it holds many dead records.
    fn maybe_compact(&mut self) -> std::io::Result<()> {
        let Some((path, _)) = &self.file else {
            return Ok(());
        };
        if self.records < 1024 || self.records < 2 * self.log.len() {
            return Ok(());
        }
        let path = path.clone();
        let tmp = path.with_file_name(LOG_TMP);
        let mut out = File::create(&tmp)?;
        let mut live = Vec::new();
        if let Some(p) = self.last_purged {
            live.push(Record::Purge(p));
        }
        if let Some(v) = self.vote {
            live.push(Record::Vote(v));
        }
        live.push(Record::Committed(self.committed));
        live.push(Record::Append(self.log.values().cloned().collect()));
        for r in &live {
            out.write_all(&frame(r).map_err(std::io::Error::other)?)?;
        }
        out.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new().append(true).open(&path)?;
        self.file = Some((path, file));
        self.records = live.len();
        Ok(())
    }
}

impl LogStore {
    /// A log kept in memory only (lost when the process ends).
    pub fn in_memory() -> Self {
        LogStore::default()
    }

    /// Opens (or creates) the log in `dir`, replaying what it holds.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let path = dir.join(LOG_FILE);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(|e| io_err(&path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, e)),
        }
        let (records, valid) = parse(&bytes, &path)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        if valid < bytes.len() {
            tracing::warn!(path = %path.display(), dropped = bytes.len() - valid, "dropped a torn record at the end of the raft log");
            file.set_len(valid as u64).map_err(|e| io_err(&path, e))?;
            file.sync_all().map_err(|e| io_err(&path, e))?;
        }
        let mut inner = Inner {
            records: records.len(),
            ..Inner::default()
        };
        for r in records {
            inner.replay(r);
        }
        inner.file = Some((path, file));
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// Whether the log holds nothing: no vote, no entry, nothing purged (a replica that
    /// never voted nor took an entry, or whose log was lost).
    pub fn is_blank(&self) -> bool {
        let inner = self.lock();
        inner.vote.is_none() && inner.log.is_empty() && inner.last_purged.is_none()
    }

    /// The index of the last entry the log holds (or purged into a snapshot), if any.
    pub fn last_index(&self) -> Option<u64> {
        let inner = self.lock();
        let last = inner.log.values().next_back().map(|e| e.log_id);
        last.or(inner.last_purged).map(|l| l.index)
    }

    /// The index of the last entry this replica knows committed (what openraft last saved
    /// through [`RaftLogStorage::save_committed`]): on a follower, what the leader told it.
    pub fn committed(&self) -> Option<u64> {
        self.lock().committed.map(|l| l.index)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the maps consistent (each change is one
        // insert or split), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn write_err(e: std::io::Error) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .lock()
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        let last = inner.log.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner
            .persist(&Record::Vote(*vote))
            .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut inner = self.lock();
        // Not fsynced on its own: losing it only means re-applying committed entries later.
        if let Some((_, file)) = &mut inner.file {
            let bytes = frame(&Record::Committed(committed))
                .map_err(|e| write_err(std::io::Error::other(e)))?;
            file.write_all(&bytes).map_err(write_err)?;
            inner.records += 1;
        }
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut inner = self.lock();
        let record = Record::Append(entries);
        let result = inner.persist(&record);
        if let Err(e) = result {
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return Err(write_err(e));
        }
        inner.replay(record);
        drop(inner);
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let record = Record::Truncate(log_id.index);
        inner.persist(&record).map_err(write_err)?;
        inner.replay(record);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let record = Record::Purge(log_id);
        inner.persist(&record).map_err(write_err)?;
        inner.replay(record);
        inner.maybe_compact().map_err(write_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(crate::replication::Command(vec![index as u8; 10])),
        }
    }

    fn append(store: &LogStore, from: u64, to: u64) {
        let mut inner = store.lock();
        let r = Record::Append((from..=to).map(entry).collect());
        inner.persist(&r).expect("append");
        inner.replay(r);
    }

    #[test]
    fn a_reopened_log_has_what_was_written() {
        let dir = tempfile::tempdir().expect("dir");
        let store = LogStore::open(dir.path()).expect("open");
        append(&store, 1, 10);
        {
            let mut inner = store.lock();
            for r in [Record::Truncate(8), Record::Purge(entry(3).log_id)] {
                inner.persist(&r).expect("persist");
                inner.replay(r);
            }
        }
        drop(store);
        let back = LogStore::open(dir.path()).expect("reopen");
        let inner = back.lock();
        assert_eq!(inner.log.keys().copied().collect::<Vec<_>>(), [4, 5, 6, 7]);
        assert_eq!(inner.last_purged.map(|l| l.index), Some(3));
    }

    #[test]
    fn a_torn_tail_is_dropped_and_corruption_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let store = LogStore::open(dir.path()).expect("open");
        append(&store, 1, 5);
        append(&store, 6, 9);
        drop(store);
        let path = dir.path().join(LOG_FILE);
        let whole = std::fs::read(&path).expect("read");

        // Cut in the middle of the second record: the first survives.
        std::fs::write(&path, &whole[..whole.len() - 7]).expect("write");
        let back = LogStore::open(dir.path()).expect("torn tail is fine");
        assert_eq!(back.lock().log.len(), 5);
        drop(back);

        // A length over the limit is corruption even at the end.
        let mut huge = whole.clone();
        huge[0] = 0xff;
        std::fs::write(&path, &huge).expect("write");
        assert!(matches!(
            LogStore::open(dir.path()).err(),
            Some(LogError::Corrupt { offset: 0, .. })
        ));

        // A damaged length that points past the end is not a torn tail.
        let mut long = whole.clone();
        long[2] ^= 0x10;
        std::fs::write(&path, &long).expect("write");
        assert!(matches!(
            LogStore::open(dir.path()).err(),
            Some(LogError::Corrupt { offset: 0, .. })
        ));

        // Flip a byte inside the first record, with a good record after it.
        let mut bad = whole.clone();
        bad[12] ^= 0xff;
        std::fs::write(&path, &bad).expect("write");
        let err = LogStore::open(dir.path()).err().expect("corrupt");
        assert!(matches!(err, LogError::Corrupt { offset: 0, .. }), "{err}");
    }

    #[test]
    fn compaction_keeps_the_live_log() {
        let dir = tempfile::tempdir().expect("dir");
        let store = LogStore::open(dir.path()).expect("open");
        for i in 0..1100u64 {
            append(&store, i * 2 + 1, i * 2 + 2);
        }
        {
            let mut inner = store.lock();
            let r = Record::Purge(entry(2000).log_id);
            inner.persist(&r).expect("purge");
            inner.replay(r);
            inner.maybe_compact().expect("compact");
            assert!(inner.records < 10, "rewritten: {}", inner.records);
        }
        drop(store);
        let back = LogStore::open(dir.path()).expect("reopen");
        let inner = back.lock();
        assert_eq!(inner.log.len(), 200);
        assert_eq!(inner.log.keys().next(), Some(&2001));
    }
}
