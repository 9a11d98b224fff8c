//! `tempest bench checkpoint`: what checkpoints cost and how a run recovers with them.
//!
//! - [`timed`]: W1 at-least-once with the count as a stateful bolt, in process, with or without
//!   checkpoints (stored in a temporary directory, so their writing is paid for);
//! - [`kill_and_resume`]: `tempest local wordcount` with checkpoints in a child process,
//!   SIGKILLed once it completed two checkpoints, then started again on the same directory: the
//!   time from the kill to the resumed run restoring its checkpoint, and the words lost (the
//!   resumed process checks every count against the input).

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tempest_dsl::{Guarantee, TopologyConfig};
use tempest_runtime::{LocalCluster, LocalOptions};

use crate::node_procs::poll;
use crate::wordcount::{self, WordCountOptions};

/// What every run of the benchmark shares.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Sentences per timed run.
    pub sentences: u64,
    /// Tasks per component.
    pub parallelism: u32,
    /// The checkpoint interval.
    pub interval: Duration,
    /// The local cluster's options.
    pub local: LocalOptions,
}

/// One timed run.
#[derive(Clone, Debug, Default)]
pub struct Timed {
    /// Words a second, over the whole run.
    pub words_rate: f64,
    /// Every word counted at least as often as the input has it.
    pub ok: bool,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// Checkpoints failed or timed out.
    pub failed: u64,
    /// Trigger to completion, median, ms.
    pub p50_ms: f64,
    /// Trigger to completion, 99th percentile, ms.
    pub p99_ms: f64,
}

/// Runs W1 (stateful count, at-least-once) once, with checkpoints or without.
pub fn timed(setup: &Setup, checkpoints: bool) -> anyhow::Result<Timed> {
    let n = setup.sentences;
    let dir = tempfile::tempdir()?;
    let mut local = setup.local.clone();
    let mut config = TopologyConfig::default();
    if checkpoints {
        config.checkpoint_interval = Some(setup.interval);
        local.checkpoint_dir = Some(dir.path().to_owned());
    }
    let wc = wordcount::topology(&WordCountOptions {
        sentences: Some(n),
        parallelism: setup.parallelism,
        guarantee: Guarantee::AtLeastOnce,
        config,
        stateful_count: true,
        ..WordCountOptions::default()
    })?;
    let started = Instant::now();
    let report = LocalCluster::new(local)?.run(wc.topology)?;
    let seconds = started.elapsed().as_secs_f64();
    let sink_total: u64 = wc.sink_counts.try_iter().sum();
    let ok = wordcount::merge_totals(wc.totals.try_iter())
        .is_some_and(|c| wordcount::counts_ok(&c, sink_total, n, true));
    let c = report.checkpoints.unwrap_or_default();
    Ok(Timed {
        words_rate: (n * wordcount::WORDS_PER_SENTENCE) as f64 / seconds,
        ok,
        checkpoints: c.completed,
        failed: c.failed,
        p50_ms: c.p50_ms,
        p99_ms: c.p99_ms,
    })
}

/// What the kill and the resume showed.
#[derive(Clone, Debug, Default)]
pub struct Killed {
    /// The newest checkpoint on disk when the process was killed.
    pub killed_after: u64,
    /// The checkpoint the second process resumed from.
    pub restored_from: Option<u64>,
    /// From the SIGKILL to the second process emitting again from the restored positions, ms
    /// (process start, reading the checkpoint, restoring its tasks, the first sentences out).
    pub recovery_ms: f64,
    /// Words of the input missing from the final counts.
    pub lost: u64,
    /// Sentences the resumed run emitted (fewer than the input: it went on from the
    /// checkpoint's positions).
    pub resumed_sentences: u64,
}

/// A child process killed (SIGKILL) and reaped when dropped, whatever happened.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The newest checkpoint id in `dir`, from the file names.
fn newest(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("chk-")?
                .strip_suffix(".ckpt")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// Runs `bin local wordcount` with checkpoints on `sentences`, SIGKILLs it once two checkpoints
/// completed, starts it again on the same directory and lets it finish.
pub fn kill_and_resume(bin: &Path, setup: &Setup, sentences: u64) -> anyhow::Result<Killed> {
    let dir = tempfile::tempdir()?;
    let ckpt = dir.path().join("checkpoints");
    let args: Vec<String> = vec![
        "local".into(),
        "wordcount".into(),
        "--sentences".into(),
        sentences.to_string(),
        "--guarantee".into(),
        "at-least-once".into(),
        "--stateful-count".into(),
        "--checkpoint-every-ms".into(),
        setup.interval.as_millis().to_string(),
        "--checkpoint-dir".into(),
        ckpt.display().to_string(),
        "--parallelism".into(),
        setup.parallelism.to_string(),
        "--workers".into(),
        setup.local.workers.to_string(),
    ];
    let mut first = Guard(
        Command::new(bin)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the run to kill")?,
    );
    poll("two checkpoints", Duration::from_secs(120), || {
        Ok((newest(&ckpt) >= 2).then_some(()))
    })?;
    anyhow::ensure!(
        first.0.try_wait()?.is_none(),
        "the run finished before it could be killed: give it more --kill-sentences"
    );
    first.0.kill()?;
    first.0.wait()?;
    let killed = Instant::now();
    let killed_after = newest(&ckpt);
    drop(first);

    let mut second = Guard(
        Command::new(bin)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the resumed run")?,
    );
    let stderr = second.0.stderr.take().context("the resumed run's stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(id) = line.strip_prefix("resumed from checkpoint ") {
                let _ = tx.send((killed.elapsed(), id.trim().parse::<u64>().ok()));
            }
        }
    });
    let stdout = second.0.stdout.take().context("the resumed run's stdout")?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut std::io::BufReader::new(stdout), &mut out)?;
    let status = second.0.wait()?;
    let _ = reader.join();
    let (recovery, restored_from) = rx
        .try_recv()
        .map_or((Duration::ZERO, None), |(d, id)| (d, id));
    anyhow::ensure!(status.success(), "the resumed run failed: {out}");
    let lost = out
        .lines()
        .find_map(|l| l.strip_prefix("lost words: "))
        .and_then(|n| n.trim().parse().ok())
        .context("the resumed run did not report lost words")?;
    let resumed_sentences = out
        .lines()
        .find_map(|l| l.strip_prefix("totals: ")?.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("the resumed run did not report its totals")?;
    Ok(Killed {
        killed_after,
        restored_from,
        recovery_ms: recovery.as_secs_f64() * 1000.0,
        lost,
        resumed_sentences,
    })
}
