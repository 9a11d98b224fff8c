//! The history of a chaos run as files, written by the checking topology's tasks inside the node
//! processes and read back by the checker after the run: what each source attempted, what was
//! acked and failed, and what the sink saw. Plain text, one event per line, so a post-mortem can
//! read them; a line cut short by a SIGKILL is skipped and counted, never fatal.
//!
//! - A source task incarnation writes `source-<pid>-<instance>.log` in the history directory:
//!   `a FROM TO` before it emits any id in `FROM..TO` (written before the emit, so an id that
//!   reached the sink is always known as attempted), `k ID` when the tree of `ID` completed,
//!   `f ID` when it failed (it is emitted again), `d` when the task ended.
//! - A sink task incarnation writes `sink-<pid>-<random>.log` in the output directory: `ID PART`
//!   for every record it received, written before the record is acked, and under exactly-once
//!   `ID PART TUPLE`, the record's deterministic tuple id in hex (the key of an idempotent
//!   sink's upsert: a second line with the same tuple id rewrites the first).
//!
//! A record id is `instance << 32 | sequence`: a source task draws a random instance when it
//! starts, so a source restarted elsewhere never reuses an id.

use std::io::Write;
use std::ops::Range;
use std::path::Path;

/// What the history files of a run say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Id ranges the sources announced before emitting from them.
    pub attempted: Vec<Range<u64>>,
    /// Ids whose trees completed (each once per ack line).
    pub acked: Vec<u64>,
    /// Failures reported to the sources (each is emitted again).
    pub failed: u64,
    /// Source task incarnations, and how many ended.
    pub sources: u64,
    /// Source task incarnations that ended.
    pub sources_done: u64,
    /// Every (id, part, tuple id) the sinks received, once per delivery (tuple id 0: none,
    /// under the other guarantees).
    pub delivered: Vec<(u64, u8, u64)>,
    /// Lines that did not parse (cut short by a kill).
    pub torn: u64,
}

/// Reads the source files of `history_dir` and the sink files of `output_dir`.
pub fn read(history_dir: &Path, output_dir: &Path) -> std::io::Result<History> {
    let mut h = History::default();
    for path in files(history_dir, "source-")? {
        h.sources += 1;
        let text = std::fs::read(&path)?;
        let (cut, lines) = whole_lines(&text);
        h.torn += u64::from(cut);
        for line in lines {
            let mut f = line.split_ascii_whitespace();
            let parsed = match (f.next(), f.next(), f.next()) {
                (Some("a"), Some(a), Some(b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
                    (Ok(a), Ok(b)) if a < b => {
                        h.attempted.push(a..b);
                        true
                    }
                    _ => false,
                },
                (Some("k"), Some(id), None) => id.parse().map(|id| h.acked.push(id)).is_ok(),
                (Some("f"), Some(id), None) => id.parse::<u64>().map(|_| h.failed += 1).is_ok(),
                (Some("d"), None, None) => {
                    h.sources_done += 1;
                    true
                }
                _ => false,
            };
            if !parsed {
                h.torn += 1;
            }
        }
    }
    for path in files(output_dir, "sink-")? {
        let text = std::fs::read(&path)?;
        let (cut, lines) = whole_lines(&text);
        h.torn += u64::from(cut);
        for line in lines {
            let mut f = line.split_ascii_whitespace();
            let tuple = match f.nth(2).map(|t| u64::from_str_radix(t, 16)) {
                None => Ok(0),
                Some(Ok(t)) if t != 0 => Ok(t),
                Some(_) => Err(()),
            };
            let mut f = line.split_ascii_whitespace();
            match (f.next().map(str::parse), f.next().map(str::parse), tuple) {
                (Some(Ok(id)), Some(Ok(part)), Ok(tuple)) if f.nth(1).is_none() => {
                    h.delivered.push((id, part, tuple))
                }
                _ => h.torn += 1,
            }
        }
    }
    Ok(h)
}

/// The lines of `text` that end with a newline (a last line without one was cut short by a
/// kill: it counts as torn, since a number cut short could read as another).
fn whole_lines(text: &[u8]) -> (bool, impl Iterator<Item = std::borrow::Cow<'_, str>>) {
    let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    let lines = text[..whole]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(String::from_utf8_lossy);
    (whole < text.len(), lines)
}

/// The files of `dir` whose names start with `prefix` (none if the directory does not exist).
fn files(dir: &Path, prefix: &str) -> std::io::Result<Vec<std::path::PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(prefix) {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The history file of one source task incarnation.
#[derive(Debug)]
pub struct SourceLog {
    file: std::io::BufWriter<std::fs::File>,
}

impl SourceLog {
    /// Creates `source-<pid>-<instance>.log` in `dir`.
    pub fn create(dir: &Path, instance: u32) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("source-{}-{instance:08x}.log", std::process::id()));
        Ok(SourceLog {
            file: std::io::BufWriter::new(std::fs::File::create(path)?),
        })
    }

    /// Announces `ids` and writes the announcement through before returning.
    pub fn attempt(&mut self, ids: Range<u64>) -> std::io::Result<()> {
        writeln!(self.file, "a {} {}", ids.start, ids.end)?;
        self.file.flush()
    }

    /// Records an ack and writes it through (an ack lost to a kill would hide a loss of its
    /// record from the checker).
    pub fn acked(&mut self, id: u64) -> std::io::Result<()> {
        writeln!(self.file, "k {id}")?;
        self.file.flush()
    }

    /// Records a failure and writes it through.
    pub fn failed(&mut self, id: u64) -> std::io::Result<()> {
        writeln!(self.file, "f {id}")?;
        self.file.flush()
    }

    /// Records the end of the task and writes everything through.
    pub fn done(&mut self) -> std::io::Result<()> {
        writeln!(self.file, "d")?;
        self.file.flush()
    }
}

/// The output file of one sink task incarnation.
#[derive(Debug)]
pub struct SinkLog {
    file: std::io::BufWriter<std::fs::File>,
}

impl SinkLog {
    /// Creates `sink-<pid>-<random>.log` in `dir`.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!(
            "sink-{}-{:016x}.log",
            std::process::id(),
            rand::random::<u64>()
        ));
        Ok(SinkLog {
            file: std::io::BufWriter::new(std::fs::File::create(path)?),
        })
    }

    /// Records a delivery, with its tuple id when it has one; [`SinkLog::flush`] writes it
    /// through (before the record is acked).
    pub fn delivered(&mut self, id: u64, part: u8, tuple: Option<u64>) -> std::io::Result<()> {
        match tuple {
            Some(t) => writeln!(self.file, "{id} {part} {t:x}"),
            None => writeln!(self.file, "{id} {part}"),
        }
    }

    /// Writes the deliveries recorded so far through.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back_and_a_torn_line_is_counted() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (hist, out) = (dir.path().join("h"), dir.path().join("o"));
        let mut s = SourceLog::create(&hist, 7)?;
        s.attempt(10..20)?;
        s.acked(11)?;
        s.failed(12)?;
        s.acked(12)?;
        s.done()?;
        let mut k = SinkLog::create(&out)?;
        k.delivered(11, 0, None)?;
        k.delivered(11, 1, Some(0xab))?;
        k.flush()?;
        std::fs::write(
            out.join("sink-1-cut.log"),
            "12 0\n12 1 zz\n12 1 0\n12 1 5 6\n12",
        )?;
        // An inverted range (a line cut short and completed by chance) is refused.
        std::fs::write(hist.join("source-2-cut.log"), "a 50 40\nk 7")?;
        let h = read(&hist, &out)?;
        assert_eq!(h.attempted, std::iter::once(10..20).collect::<Vec<_>>());
        assert_eq!(h.acked, vec![11, 12]);
        assert_eq!((h.failed, h.sources, h.sources_done, h.torn), (1, 2, 1, 6));
        assert_eq!(h.delivered, [(12, 0, 0), (11, 0, 0), (11, 1, 0xab)]);
        Ok(())
    }
}
