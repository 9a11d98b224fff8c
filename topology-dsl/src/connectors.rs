//! Ready-made components for exactly-once pipelines over files: [`JsonLinesSource`], a
//! replayable, rewindable and seekable source of JSON lines, and [`IdempotentFileSink`], a sink
//! that writes each record to a file named by its tuple id, atomically.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tempest_dsl::connectors::{IdempotentFileSink, JsonLinesSource};
//! use tempest_dsl::*;
//!
//! #[derive(Clone, Debug, Serialize, Deserialize, Record)]
//! struct Reading { key: String, value: i64 }
//!
//! let dir = std::env::temp_dir();
//! let mut t = TopologyBuilder::new("copy");
//! let readings = t.add(spout("input", JsonLinesSource::<Reading>::new(dir.join("in.jsonl"))));
//! t.add(bolt("output", IdempotentFileSink::<Reading>::new(dir.join("out"))).shuffle(&readings));
//! assert!(t.guarantee(Guarantee::ExactlyOnce).build().is_ok());
//! ```

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::checkpoint::SpoutSnapshot;
use crate::component::{Bolt, Spout, SpoutStatus, TaskContext, TaskError};
use crate::emitter::{Emitter, SpoutEmitter};
use crate::ids::MsgId;
use crate::key_hasher::KeyHasher;
use crate::record::Record;
use crate::tuple::Tuple;

/// The longest line [`JsonLinesSource`] reads (a longer one is skipped, with an error logged).
pub const MAX_LINE: usize = 1 << 20;

/// Reads a file of JSON lines, one record per line, and emits each as a tracked message whose
/// id is the line's byte offset. It replays what fails (reading the line again at its
/// offset), can be rewound to a checkpoint, and can seek to an offset, so it serves every
/// guarantee: under exactly-once in a cluster its committed position (the offset before which
/// every line's tree completed) is recorded in the manager, and a task started again after
/// its node died resumes there.
///
/// With several tasks, task `i` of `n` reads the lines whose offset hashes to `i` (each line
/// goes to one task, the same one after any restart). A line that is not a record of `T` (or
/// is longer than [`MAX_LINE`]) is skipped with an error in the log and counted
/// ([`JsonLinesSource::skipped`] in tests); the source is done at the end of the file.
#[derive(Debug)]
pub struct JsonLinesSource<T> {
    path: PathBuf,
    reader: Option<BufReader<File>>,
    /// The offset of the next line to read.
    offset: u64,
    replay: VecDeque<u64>,
    task: u64,
    tasks: u64,
    skipped: u64,
    line: Vec<u8>,
    _records: PhantomData<fn() -> T>,
}

impl<T> Clone for JsonLinesSource<T> {
    /// A copy that opens the file for itself, from the start.
    fn clone(&self) -> Self {
        JsonLinesSource::new(self.path.clone())
    }
}

impl<T> JsonLinesSource<T> {
    /// A source reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonLinesSource {
            path: path.into(),
            reader: None,
            offset: 0,
            replay: VecDeque::new(),
            task: 0,
            tasks: 1,
            skipped: 0,
            line: Vec::new(),
            _records: PhantomData,
        }
    }

    /// Lines skipped so far because they were not records.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn io_error(&self, e: std::io::Error) -> TaskError {
        TaskError::new(format!("{}: {e}", self.path.display()))
    }

    /// Whether this task reads the line at `offset`.
    fn mine(&self, offset: u64) -> bool {
        if self.tasks <= 1 {
            return true;
        }
        let mut h = KeyHasher::new();
        h.write_u64(offset);
        h.finish() % self.tasks == self.task
    }

    /// Positions the reader at `offset`.
    fn seek_reader(&mut self, offset: u64) -> Result<(), TaskError> {
        let file = File::open(&self.path).map_err(|e| self.io_error(e))?;
        let mut reader = BufReader::new(file);
        reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| self.io_error(e))?;
        self.reader = Some(reader);
        self.offset = offset;
        Ok(())
    }
}

/// Reads one line (without its newline) from `reader` into `line`; `Ok(None)` at the end of the
/// file, `Ok(Some(len))` with the bytes consumed. A line longer than [`MAX_LINE`] is consumed
/// whole but leaves `line` empty and returns its length: the caller skips it.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<Option<u64>> {
    line.clear();
    let mut consumed = 0u64;
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((consumed > 0).then_some(consumed));
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let n = chunk.len();
        if !too_long {
            if line.len() + n > MAX_LINE + 1 {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        reader.consume(n);
        consumed += n as u64;
        if done {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            return Ok(Some(consumed));
        }
    }
}

impl<T: Record> JsonLinesSource<T> {
    /// Parses `line` (read at `offset`); a line that is not a record is logged and skipped.
    fn parse(&mut self, offset: u64) -> Option<T> {
        let text = self.line.trim_ascii();
        if text.is_empty() {
            return None;
        }
        match serde_json::from_slice::<T>(text) {
            Ok(record) => Some(record),
            Err(e) => {
                self.skipped += 1;
                tracing::error!(file = %self.path.display(), offset, error = %e, "a line that is not a record: skipped");
                None
            }
        }
    }

    /// Reads the line at `offset` again, for a replay.
    fn reread(&mut self, offset: u64) -> Result<Option<T>, TaskError> {
        let mut file = File::open(&self.path).map_err(|e| self.io_error(e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| self.io_error(e))?;
        let mut reader = BufReader::new(file.take(MAX_LINE as u64 + 2));
        let mut line = std::mem::take(&mut self.line);
        let read = read_line(&mut reader, &mut line).map_err(|e| self.io_error(e));
        self.line = line;
        Ok(read?.and_then(|_| self.parse(offset)))
    }
}

impl<T: Record + DeserializeOwned> Spout for JsonLinesSource<T> {
    type Out = T;
    const REPLAYABLE: bool = true;
    const REWINDABLE: bool = true;
    const SEEKABLE: bool = true;

    fn open(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.task = u64::from(ctx.task_index());
        self.tasks = u64::from(ctx.parallelism()).max(1);
        self.seek_reader(0)
    }

    fn next(&mut self, out: &mut SpoutEmitter<T>) -> Result<SpoutStatus, TaskError> {
        if let Some(offset) = self.replay.pop_front() {
            match self.reread(offset) {
                Ok(Some(record)) => out.emit_tracked(MsgId(offset), record),
                Ok(None) => {}
                Err(e) => {
                    // Not lost: tried again on a later call.
                    self.replay.push_front(offset);
                    return Err(e);
                }
            }
            return Ok(SpoutStatus::Active);
        }
        let Some(mut reader) = self.reader.take() else {
            return Err(TaskError::new("the source is not open"));
        };
        let mut line = std::mem::take(&mut self.line);
        let read = read_line(&mut reader, &mut line);
        self.reader = Some(reader);
        self.line = line;
        let offset = self.offset;
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                // The reader may be partway through the line: start it again there.
                self.seek_reader(offset)?;
                return Err(self.io_error(e));
            }
        };
        match read {
            None => Ok(SpoutStatus::Done),
            Some(consumed) => {
                self.offset += consumed;
                if self.mine(offset) {
                    if self.line.is_empty() && consumed > MAX_LINE as u64 + 1 {
                        self.skipped += 1;
                        tracing::error!(file = %self.path.display(), offset, "a line longer than {MAX_LINE} bytes: skipped");
                    } else if let Some(record) = self.parse(offset) {
                        out.emit_tracked(MsgId(offset), record);
                    }
                }
                Ok(SpoutStatus::Active)
            }
        }
    }

    fn fail(&mut self, msg: MsgId) {
        self.replay.push_back(msg.0);
    }

    /// The offset of the next line and the offsets to replay.
    fn snapshot(&self) -> Option<SpoutSnapshot> {
        SpoutSnapshot::encode(&(self.offset, &self.replay)).ok()
    }

    fn restore(&mut self, snapshot: &SpoutSnapshot) -> Result<(), TaskError> {
        let (offset, replay): (u64, VecDeque<u64>) = snapshot.decode()?;
        self.seek_reader(offset)?;
        self.replay = replay;
        Ok(())
    }

    /// Goes to the first line that starts at or after byte `from`.
    fn seek(&mut self, from: MsgId) -> Result<(), TaskError> {
        self.replay.clear();
        if from.0 == 0 {
            return self.seek_reader(0);
        }
        // From the byte before: past the end of the line it belongs to (if `from` starts a
        // line, that byte is the previous line's newline).
        self.seek_reader(from.0 - 1)?;
        let Some(mut reader) = self.reader.take() else {
            return Err(TaskError::new("the source is not open"));
        };
        let mut line = std::mem::take(&mut self.line);
        let skipped = read_line(&mut reader, &mut line);
        self.reader = Some(reader);
        self.line = line;
        self.offset += skipped.map_err(|e| self.io_error(e))?.unwrap_or(0);
        Ok(())
    }
}

/// Writes every record it receives to a file of its own in a directory, named by the record's
/// tuple id (`<id in hex>.json`, one JSON line), atomically: written to a temporary file,
/// fsynced, then renamed over the name, and the directory fsynced, before the record is acked.
/// Under exactly-once a replayed output carries the tuple id it had, so writing it again
/// changes nothing: the directory holds each output once ([`Bolt::IDEMPOTENT`]).
///
/// Under the other guarantees tuples have no ids: each record then gets a file of its own
/// named by the task and a sequence (`<task>-<n>.json`), and a replay writes a second file.
/// One fsync per record makes it suited to outputs of modest rate (results, alerts), not to
/// every tuple of a fast stream.
#[derive(Debug)]
pub struct IdempotentFileSink<T> {
    dir: PathBuf,
    task: u32,
    written: u64,
    line: Vec<u8>,
    _records: PhantomData<fn(T)>,
}

impl<T> Clone for IdempotentFileSink<T> {
    fn clone(&self) -> Self {
        IdempotentFileSink::new(self.dir.clone())
    }
}

impl<T> IdempotentFileSink<T> {
    /// A sink writing into `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        IdempotentFileSink {
            dir: dir.into(),
            task: 0,
            written: 0,
            line: Vec::new(),
            _records: PhantomData,
        }
    }
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, fsynced, renamed over the name,
/// and the directory fsynced.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    // A temporary name of this write's own: two tasks may write the same id at once.
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

impl<T: Record> Bolt for IdempotentFileSink<T> {
    type In = T;
    type Out = ();
    const IDEMPOTENT: bool = true;

    fn prepare(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.task = ctx.task_index();
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| TaskError::new(format!("{}: {e}", self.dir.display())))
    }

    fn execute(&mut self, t: Tuple<T>, _out: &mut Emitter<()>) -> Result<(), TaskError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, t.value())
            .map_err(|e| TaskError::new(format!("the record does not encode: {e}")))?;
        self.line.push(b'\n');
        let name = match t.id() {
            Some(id) => format!("{id}.json"),
            None => {
                self.written += 1;
                format!(
                    "{}-{}-{:08x}.json",
                    self.task,
                    self.written,
                    rand::random::<u32>()
                )
            }
        };
        write_atomically(&self.dir, &name, &self.line)
            .map_err(|e| TaskError::new(format!("{}: {e}", self.dir.join(&name).display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;
    use crate::ids::{TaskId, TupleId};
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, Serialize, Deserialize, Record)]
    struct Line {
        text: String,
    }

    fn line(text: &str) -> Line {
        Line { text: text.into() }
    }

    #[test]
    fn lines_read_back_with_their_offsets_and_a_long_one_is_consumed_whole() {
        let text = b"one\n\ntwo\r\nthree".to_vec();
        let mut reader = BufReader::with_capacity(2, &text[..]);
        let mut line = Vec::new();
        let mut got = Vec::new();
        while let Some(n) = read_line(&mut reader, &mut line).expect("reads") {
            got.push((String::from_utf8_lossy(&line).into_owned(), n));
        }
        assert_eq!(
            got,
            [
                ("one".to_owned(), 4),
                (String::new(), 1),
                ("two\r".to_owned(), 5),
                ("three".to_owned(), 5)
            ]
        );
        let long = [vec![b'x'; MAX_LINE + 10], b"\nok\n".to_vec()].concat();
        let mut reader = BufReader::new(&long[..]);
        assert_eq!(
            read_line(&mut reader, &mut line).expect("reads"),
            Some(MAX_LINE as u64 + 11)
        );
        assert!(line.is_empty(), "a line too long is not kept");
        assert_eq!(read_line(&mut reader, &mut line).expect("reads"), Some(3));
        assert_eq!(line, b"ok");
    }

    #[test]
    fn a_seek_goes_to_the_first_line_at_or_after_the_offset() -> Result<(), TaskError> {
        let path = std::env::temp_dir().join(format!("tempest-src-{:016x}", rand::random::<u64>()));
        // Lines start at 0, 14 and 28; the file ends at 42.
        std::fs::write(
            &path,
            "{\"text\":\"aa\"}\n{\"text\":\"bb\"}\n{\"text\":\"cc\"}\n",
        )
        .map_err(|e| TaskError::new(e.to_string()))?;
        let mut source = JsonLinesSource::<Line>::new(&path);
        for (from, next) in [
            (0, 0),
            (14, 14),
            (15, 28),
            (27, 28),
            (28, 28),
            (29, 42),
            (99, 98),
        ] {
            source.seek(MsgId(from))?;
            assert_eq!(source.offset, next, "seek({from})");
        }
        source.seek(MsgId(15))?;
        let mut line = Vec::new();
        let reader = source.reader.as_mut().expect("open");
        read_line(reader, &mut line).map_err(|e| TaskError::new(e.to_string()))?;
        assert_eq!(line, b"{\"text\":\"cc\"}");
        let _ = std::fs::remove_file(&path);
        Ok(())
    }

    #[test]
    fn the_sink_writes_a_replay_over_the_same_file() -> Result<(), TaskError> {
        let dir = std::env::temp_dir().join(format!("tempest-sink-{:016x}", rand::random::<u64>()));
        let mut sink = IdempotentFileSink::<Line>::new(&dir);
        let ctx = TaskContext::new(
            "t".into(),
            "sink".into(),
            TaskId(0),
            0,
            1,
            crate::Guarantee::ExactlyOnce,
        );
        sink.prepare(&ctx)?;
        let mut out = Emitter::new(Vec::new(), 1, None, None, false);
        for _ in 0..2 {
            let t = Tuple::new_untracked(line("a"), TaskId(1), 0).with_id(TupleId(0xab));
            sink.execute(t, &mut out)?;
        }
        sink.execute(Tuple::new_untracked(line("b"), TaskId(1), 0), &mut out)?;
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| TaskError::new(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(names[1], "00000000000000ab.json");
        let text = std::fs::read_to_string(dir.join(&names[1]))
            .map_err(|e| TaskError::new(e.to_string()))?;
        assert_eq!(text, "{\"text\":\"a\"}\n");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
