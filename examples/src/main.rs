//! `tempest`: run, inspect and benchmark Tempest topologies.
//!
//! Exit codes: 0 on success, 1 when a run fails or its check does not hold, 2 for bad input
//! (unknown flags, invalid values, a topology or config that does not validate).

// Printing is this binary's interface; the libraries log through `tracing` instead.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tempest_dsl::{BuildErrors, Guarantee, TopologyConfig};
use tempest_examples::bench::{ResultLine, median, peak_rss_kb};
use tempest_examples::window_count;
use tempest_examples::windows::{
    ReplayError, WindowArgs, ignored_window_args, replay, window_from_args,
};
use tempest_examples::wordcount::{self, WordCountOptions};
use tempest_runtime::cli::ClusterCommand;
use tempest_runtime::{LocalCluster, LocalOptions, RunReport, RunningTopology, RuntimeError};

#[derive(Parser, Debug)]
#[command(
    name = "tempest",
    version,
    about = "Tempest: a stream-processing runtime in the model of Apache Storm"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a topology in this process.
    Local {
        #[command(subcommand)]
        topology: LocalTopology,
    },
    /// Run a benchmark workload and print its RESULT line.
    Bench {
        #[command(subcommand)]
        workload: BenchWorkload,
    },
    /// Replay JSON lines (events, watermarks, processing-time advances, marks) through a
    /// window specification, writing one JSON line per firing and per late element.
    Windows {
        #[command(flatten)]
        window: WindowArgs,
        /// Read from this file instead of stdin.
        #[arg(long)]
        input: Option<std::path::PathBuf>,
    },
    /// Cluster commands: node, submit, status, kill, nodes.
    #[command(flatten)]
    Cluster(ClusterCommand),
    /// Print a topology's plan, as text or as a Graphviz DOT graph.
    Show {
        /// The topology: wordcount.
        #[arg(value_enum)]
        topology: TopologyName,
        /// Print Graphviz DOT instead of text.
        #[arg(long)]
        dot: bool,
        /// Tasks per component.
        #[arg(long, allow_negative_numbers = true, default_value_t = 2)]
        parallelism: u32,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum TopologyName {
    Wordcount,
}

#[derive(Subcommand, Debug)]
enum LocalTopology {
    /// Count words of generated sentences; print the top words and the totals.
    Wordcount(LocalWordcount),
}

#[derive(Subcommand, Debug)]
enum BenchWorkload {
    /// W1: word count (sentences -> split -> count -> sink).
    Wordcount(BenchWordcount),
    /// W2: event-time tumbling one-second windows counting events per key.
    Window(BenchWindow),
    /// W3: the word count on 3 node processes with the count bolt replicated 3 ways through
    /// Raft, at-least-once.
    Replicated(BenchReplicated),
    /// W4: W3 at a steady paced load while the node leading a count group is SIGKILLed (and
    /// restarted) again and again: failover time, output gap, lost words.
    Failover(BenchFailover),
    /// W1 at-least-once with a stateful count bolt, checkpointed every second beside the same
    /// runs without checkpoints; then a local run SIGKILLed mid-way and resumed from its last
    /// checkpoint: recovery time and lost words.
    Checkpoint(BenchCheckpoint),
}

#[derive(Args, Debug)]
struct BenchCheckpoint {
    /// Sentences per timed run (10 words each).
    #[arg(long, allow_negative_numbers = true, default_value_t = 3_000_000)]
    sentences: u64,
    /// Pairs of runs (without, then with checkpoints); the RESULT line gives medians.
    #[arg(long, allow_negative_numbers = true, default_value_t = 3)]
    runs: u32,
    /// The checkpoint interval, ms.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1000)]
    interval_ms: u64,
    /// Sentences of the run that is killed and resumed.
    #[arg(long, allow_negative_numbers = true, default_value_t = 6_000_000)]
    kill_sentences: u64,
    /// Skip the kill and resume.
    #[arg(long)]
    no_kill: bool,
    /// Tasks per component.
    #[arg(long, allow_negative_numbers = true, default_value_t = 2)]
    parallelism: u32,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
}

#[derive(Args, Debug)]
struct BenchReplicated {
    /// Where the replicas keep their Raft logs: memory or disk (fsynced before an ack).
    #[arg(long, default_value = "memory")]
    state: tempest_dsl::StateStorage,
    /// Sentences to emit (10 words each).
    #[arg(long, allow_negative_numbers = true, default_value_t = 200_000)]
    sentences: u64,
    /// Tasks per component.
    #[arg(long, allow_negative_numbers = true, default_value_t = 2)]
    parallelism: u32,
    /// Runs; the RESULT line gives medians, and each run prints a RUN line.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1)]
    runs: u32,
    /// Trees in flight per spout task, at least 1 (the runtime's default, 1000, unless given).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_spout_pending: Option<u64>,
}

#[derive(Args, Debug)]
struct BenchFailover {
    /// SIGKILLs of a count group leader's node (each restarted once a new leader committed).
    #[arg(long, allow_negative_numbers = true, default_value_t = 20)]
    kills: u32,
    /// Sentences a second per spout task (2 tasks, 10 words each): the steady load.
    #[arg(long, allow_negative_numbers = true, default_value_t = 5_000)]
    rate: u64,
    /// Where the replicas keep their Raft logs: memory or disk.
    #[arg(long, default_value = "memory")]
    state: tempest_dsl::StateStorage,
    /// Seconds of steady load between a restart and the next kill.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    settle: f64,
}

#[derive(Args, Debug)]
struct BenchWindow {
    /// Events to emit (1000 per simulated second, 1000 keys).
    #[arg(long, allow_negative_numbers = true, default_value_t = 20_000_000)]
    events: u64,
    /// Runs; the RESULT line gives medians, and each run prints a RUN line.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1)]
    runs: u32,
    /// Put a pass-through bolt (shuffle grouping) between the spout and the window.
    #[arg(long)]
    through_bolt: bool,
    /// Share of events in [0, 1) that the pass-through bolt fails before emitting them
    /// (needs --through-bolt and at-least-once): every count must still come out exact.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    fail_rate: f64,
    /// Seed of the injected failures.
    #[arg(long, allow_negative_numbers = true, default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct Common {
    /// Tasks per component.
    #[arg(long, allow_negative_numbers = true, default_value_t = 2)]
    parallelism: u32,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Delivery guarantee: at-most-once, at-least-once or exactly-once (which needs a replayable
    /// source, idempotent sinks and replicated or checkpointed state: `build()` says what is missing).
    #[arg(long, default_value = "at-most-once")]
    guarantee: Guarantee,
    /// Tuples per batch.
    #[arg(long, allow_negative_numbers = true)]
    batch_size: Option<usize>,
    /// The run seed of the tasks' ack-tree ids (the run report prints the one drawn otherwise).
    #[arg(long)]
    run_seed: Option<u64>,
    /// Most ack trees in flight per spout task (tracked guarantees); 0 for no bound.
    /// Default: the topology config's (1000).
    #[arg(long, allow_negative_numbers = true)]
    max_spout_pending: Option<usize>,
}

/// Checkpoints of a local word count (rollback recovery).
#[derive(Args, Debug, Clone)]
struct CheckpointFlags {
    /// Count in a stateful bolt (its state owned by the runtime) instead of a plain one.
    #[arg(long)]
    stateful_count: bool,
    /// Take a checkpoint this often, in ms (needs --stateful-count to save any state).
    #[arg(long)]
    checkpoint_every_ms: Option<u64>,
    /// Keep checkpoints here; a run started on a directory that holds one resumes from it.
    #[arg(long, requires = "checkpoint_every_ms")]
    checkpoint_dir: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
struct LocalWordcount {
    /// Sentences to emit.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1_000_000)]
    sentences: u64,
    #[command(flatten)]
    checkpoints: CheckpointFlags,
    /// Run until Ctrl-C or SIGTERM instead (which drains and stops it).
    #[arg(long, conflicts_with = "sentences")]
    endless: bool,
    /// How many of the most frequent words to print.
    #[arg(long, allow_negative_numbers = true, default_value_t = 10)]
    top: usize,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct BenchWordcount {
    /// Sentences to emit (10 words each). Default: 3000000, or 200000 with --nodes.
    #[arg(long, allow_negative_numbers = true)]
    sentences: Option<u64>,
    /// Run on this many node processes of this binary (started and stopped by the bench), with
    /// the same topology in one process beside it for the ratio.
    #[arg(long)]
    nodes: Option<usize>,
    /// Runs; the RESULT line gives medians, and each run prints a RUN line.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1)]
    runs: u32,
    /// Share of sentences in [0, 1) that the split bolt fails at random, to show replay under load.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    fail_rate: f64,
    /// Seed of the injected failures.
    #[arg(long, allow_negative_numbers = true, default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    common: Common,
}

/// A failure at the binary's edge, with its exit code.
enum Failure {
    /// Bad input: exit code 2.
    Usage(String),
    /// A failed run or check: exit code 1.
    Run(anyhow::Error),
    /// Whoever read stdout went away (`| head`): stop quietly.
    Closed,
}

impl Failure {
    /// A failure to write to stdout.
    fn output(err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::Closed
        } else {
            Failure::Run(err.into())
        }
    }
}

/// Writes a line to stdout; a closed stdout ends the command quietly instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(Failure::output)?;
    }};
}

impl From<BuildErrors> for Failure {
    fn from(errors: BuildErrors) -> Self {
        Failure::Usage(format!("the topology is invalid:\n{errors}"))
    }
}

impl From<RuntimeError> for Failure {
    fn from(err: RuntimeError) -> Self {
        match err {
            RuntimeError::Options { .. } | RuntimeError::TooLarge { .. } => {
                Failure::Usage(err.to_string())
            }
            other => Failure::Run(other.into()),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version go to stdout with code 0; usage errors exit with 2.
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging();
    if let Command::Cluster(command) = cli.command {
        return tempest_runtime::cli::run(command, tempest_examples::registry());
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Run(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
        Err(Failure::Closed) => ExitCode::SUCCESS,
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Local {
            topology: LocalTopology::Wordcount(args),
        } => local_wordcount(args),
        Command::Bench {
            workload: BenchWorkload::Wordcount(args),
        } => bench_wordcount(args),
        Command::Bench {
            workload: BenchWorkload::Window(args),
        } => bench_window(args),
        Command::Bench {
            workload: BenchWorkload::Replicated(args),
        } => bench_replicated(&args),
        Command::Bench {
            workload: BenchWorkload::Failover(args),
        } => bench_failover(&args),
        Command::Bench {
            workload: BenchWorkload::Checkpoint(args),
        } => bench_checkpoint(&args),
        Command::Windows { window, input } => windows(&window, input.as_deref()),
        Command::Cluster(_) => unreachable!("cluster commands return from main"),
        Command::Show {
            topology: TopologyName::Wordcount,
            dot,
            parallelism,
        } => {
            let wc = wordcount::topology(&WordCountOptions {
                parallelism,
                ..WordCountOptions::default()
            })?;
            let text = if dot {
                wc.topology.to_dot()
            } else {
                wc.topology.to_string()
            };
            say!("{}", text.trim_end());
            Ok(())
        }
    }
}

fn windows(args: &WindowArgs, input: Option<&std::path::Path>) -> Result<(), Failure> {
    let window = window_from_args(args)
        .map_err(|errors| Failure::Usage(format!("invalid window: {}", errors.join("; "))))?;
    let stdout = std::io::stdout();
    let out = std::io::BufWriter::new(stdout.lock());
    for warning in ignored_window_args(args) {
        eprintln!("warning: {warning}");
    }
    let result = match input {
        Some(path) => {
            let unreadable =
                |why: String| Failure::Usage(format!("cannot read {}: {why}", path.display()));
            let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
            if !file
                .metadata()
                .map_err(|e| unreadable(e.to_string()))?
                .is_file()
            {
                return Err(unreadable("not a file".into()));
            }
            replay(&window, std::io::BufReader::new(file), out)
        }
        None => replay(&window, std::io::stdin().lock(), out),
    };
    match result {
        Ok(()) => Ok(()),
        Err(err @ ReplayError::Malformed { .. }) => Err(Failure::Usage(err.to_string())),
        Err(ReplayError::Io(err)) => Err(Failure::output(err)),
    }
}

fn print_warnings(topology: &tempest_dsl::Topology) {
    for w in topology.warnings() {
        eprintln!("warning: {w}");
    }
}

/// The topology config the common flags ask for.
fn topology_config(common: &Common) -> TopologyConfig {
    let mut config = TopologyConfig::default();
    if let Some(b) = common.batch_size {
        config.batch_size = b;
    }
    if let Some(m) = common.max_spout_pending {
        config.max_spout_pending = (m > 0).then_some(m);
    }
    config
}

/// The local cluster the common flags ask for.
fn local_options(common: &Common) -> LocalOptions {
    let mut local = LocalOptions::default();
    if let Some(w) = common.workers {
        local.workers = w;
    }
    local.seed = common.run_seed;
    local
}

fn wordcount_options(common: &Common, sentences: Option<u64>) -> WordCountOptions {
    WordCountOptions {
        sentences,
        parallelism: common.parallelism,
        guarantee: common.guarantee,
        config: topology_config(common),
        ..WordCountOptions::default()
    }
}

/// Catches Ctrl-C, SIGTERM and SIGHUP from now on; each arrives on the returned channel.
fn catch_ctrl_c() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    // Fails only if a handler is already set, in which case Ctrl-C keeps its default meaning.
    let _ = ctrlc::set_handler(move || {
        let _ = tx.send(());
    });
    rx
}

/// Waits for the run, drawing a progress bar on a terminal and draining on the first Ctrl-C
/// (a second one exits at once).
fn watch(
    running: RunningTopology,
    total: Option<u64>,
    unit: &str,
    ctrl_c: &mpsc::Receiver<()>,
) -> Result<RunReport, RuntimeError> {
    let mut presses = 0u32;
    let bar = if std::io::stderr().is_terminal() {
        let bar = match total {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        };
        let template = match total {
            Some(_) => format!(
                "{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}})"
            ),
            None => format!(
                "{{spinner}} [{{elapsed_precise}}] {{pos}} {unit} ({{per_sec}}) - Ctrl-C drains"
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        Some(bar)
    } else {
        None
    };
    while !running.wait_timeout(Duration::from_millis(100)) {
        if ctrl_c.try_recv().is_ok() {
            presses += 1;
            if presses == 1 {
                eprintln!("draining (Ctrl-C or SIGTERM again to exit now)");
                running.drain();
            } else {
                std::process::exit(130);
            }
        }
        if let Some(bar) = &bar {
            let emitted = running
                .metrics()
                .first()
                .map(|(_, m)| m.emitted)
                .unwrap_or(0);
            bar.set_position(emitted);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    running.wait()
}

fn local_wordcount(args: LocalWordcount) -> Result<(), Failure> {
    let sentences = (!args.endless).then_some(args.sentences);
    let mut options = wordcount_options(&args.common, sentences);
    let mut local = local_options(&args.common);
    let c = &args.checkpoints;
    options.stateful_count = c.stateful_count;
    if let Some(ms) = c.checkpoint_every_ms {
        options.config.checkpoint_interval = Some(Duration::from_millis(ms));
        local.checkpoint_dir = c.checkpoint_dir.clone();
    }
    let wc = wordcount::topology(&options)?;
    print_warnings(&wc.topology);
    let cluster = LocalCluster::new(local)?;
    // Before the run starts, so that an early Ctrl-C drains instead of killing the process.
    let ctrl_c = catch_ctrl_c();
    let running = cluster.start(wc.topology)?;
    let restored = running.restored_from();
    if let Some(id) = restored {
        // Once the restored spouts emit again (`bench checkpoint` times the recovery to it).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && running
                .metrics()
                .first()
                .is_none_or(|(_, m)| m.emitted == 0)
            && !running.is_finished()
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        eprintln!("resumed from checkpoint {id}");
    }
    let report = watch(running, sentences, "sentences", &ctrl_c)?;

    let parts: Vec<_> = wc.totals.try_iter().collect();
    let sink_total: u64 = wc.sink_counts.try_iter().sum();
    let counts = wordcount::merge_totals(parts)
        .ok_or_else(|| Failure::Run(anyhow::anyhow!("a word was counted by two count tasks")))?;
    let mut ranked: Vec<(usize, u64)> = counts.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    say!("top {} words:", args.top);
    let mut listed = 0;
    for (index, count) in ranked.iter().filter(|(_, c)| *c > 0).take(args.top) {
        say!("  w{index:<6} {count}");
        listed += 1;
    }
    if listed == 0 {
        say!("  (no words counted)");
    }
    let words: u64 = counts.iter().sum();
    let sentences_done = report
        .component("sentences")
        .map(|c| c.metrics.emitted)
        .unwrap_or(0);
    say!(
        "totals: {sentences_done} sentences, {words} words counted, {} distinct, {sink_total} records at the sink",
        counts.iter().filter(|&&c| c > 0).count()
    );
    say!("{report}");
    if let Some(n) = sentences {
        if !report.drained {
            let tracked = args.common.guarantee.is_tracked();
            // A resumed run's sink saw only what followed the checkpoint; the counts (restored
            // with the state) cover the whole input.
            let sink_total = if restored.is_some() {
                u64::MAX
            } else {
                sink_total
            };
            let lost: u64 = wordcount::expected_counts(n)
                .iter()
                .zip(&counts)
                .map(|(e, c)| e.saturating_sub(*c))
                .sum();
            say!("lost words: {lost}");
            if !wordcount::counts_ok(&counts, sink_total, n, tracked) {
                return Err(Failure::Run(anyhow::anyhow!(
                    "the counts do not match the input"
                )));
            }
            say!("check: every word count matches the input");
        }
    }
    Ok(())
}

/// One timed run of a benchmark topology: its warnings on the first run, progress while it
/// runs, and its report on stderr. Returns the report and the wall-clock seconds.
fn timed_run(
    cluster: &LocalCluster,
    topology: tempest_dsl::Topology,
    run: u32,
    total: u64,
    unit: &str,
    ctrl_c: &mpsc::Receiver<()>,
) -> Result<(RunReport, f64), Failure> {
    if run == 1 {
        print_warnings(&topology);
    }
    let started = Instant::now();
    let report = watch(cluster.start(topology)?, Some(total), unit, ctrl_c)?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("{report}");
    Ok((report, seconds))
}

/// `bench checkpoint`: W1 with a stateful count, with and without checkpoints, then a kill
/// and a resume.
fn bench_checkpoint(args: &BenchCheckpoint) -> Result<(), Failure> {
    use tempest_examples::checkpoint_bench::{self as cb, Setup};
    if args.runs == 0 || args.sentences == 0 || args.interval_ms == 0 {
        return Err(Failure::Usage(
            "--runs, --sentences and --interval-ms must be at least 1".into(),
        ));
    }
    let mut local = LocalOptions::default();
    if let Some(w) = args.workers {
        local.workers = w;
    }
    let setup = Setup {
        sentences: args.sentences,
        parallelism: args.parallelism,
        interval: Duration::from_millis(args.interval_ms),
        local: local.clone(),
    };
    let (mut plain, mut checked, mut p50, mut p99, mut taken) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut ok = true;
    for run in 1..=args.runs {
        let a = cb::timed(&setup, false).map_err(Failure::Run)?;
        let b = cb::timed(&setup, true).map_err(Failure::Run)?;
        eprintln!(
            "run {run}: without {:.0} words/s, with {:.0} words/s ({} checkpoints, p99 {:.1} ms)",
            a.words_rate, b.words_rate, b.checkpoints, b.p99_ms
        );
        ok &= a.ok && b.ok && b.checkpoints > 0 && b.failed == 0;
        plain.push(a.words_rate);
        checked.push(b.words_rate);
        p50.push(b.p50_ms);
        p99.push(b.p99_ms);
        taken.push(b.checkpoints as f64);
    }
    let med = |v: &[f64]| median(v).unwrap_or(0.0);
    let (with, without) = (med(&checked), med(&plain));
    let mut line = ResultLine::new()
        .field("workload", "checkpoint")
        .field("guarantee", Guarantee::AtLeastOnce)
        .field("records", args.sentences)
        .field("interval_ms", args.interval_ms)
        .field("words_rate", format!("{with:.0}/s"))
        .field("words_rate_without", format!("{without:.0}/s"))
        .field("ratio", format!("{:.3}", with / without.max(1.0)))
        .field("checkpoints", med(&taken))
        .field("checkpoint_p50_ms", format!("{:.2}", med(&p50)))
        .field("checkpoint_p99_ms", format!("{:.2}", med(&p99)));
    if !args.no_kill {
        let bin = std::env::current_exe().map_err(|e| Failure::Run(e.into()))?;
        let k = cb::kill_and_resume(&bin, &setup, args.kill_sentences).map_err(Failure::Run)?;
        eprintln!("{k:?}");
        ok &= k.lost == 0 && k.restored_from.is_some();
        line = line
            .field("kill_at_checkpoint", k.killed_after)
            .field("restored_from", k.restored_from.unwrap_or(0))
            .field("recovery_ms", format!("{:.0}", k.recovery_ms))
            .field("lost", k.lost);
    }
    let line = line
        .field("parallelism", args.parallelism)
        .field("workers", local.workers)
        .field("runs", args.runs);
    finish_bench(line, ok)
}

/// The median over `runs` of one figure.
fn median_of<F>(runs: &[F], figure: impl Fn(&F) -> f64) -> f64 {
    median(&runs.iter().map(figure).collect::<Vec<_>>()).unwrap_or(0.0)
}

/// The fields every benchmark's line ends with.
fn run_setup_fields(
    line: ResultLine,
    common: &Common,
    local: &LocalOptions,
    runs: u32,
) -> ResultLine {
    let rss = peak_rss_kb().map_or_else(|| "unknown".to_owned(), |kb| kb.to_string());
    line.field("parallelism", common.parallelism)
        .field("workers", local.workers)
        .field("runs", runs)
        .field("peak_rss_kb", rss)
}

/// Prints the `RESULT` line and fails when the benchmark's check did.
/// `bench wordcount --nodes N`: the cluster word count beside the same topology in process.
fn bench_wordcount_cluster(args: &BenchWordcount, nodes: usize) -> Result<(), Failure> {
    if !(1..=9).contains(&nodes) {
        return Err(Failure::Usage(format!(
            "--nodes must be 1 to 9, got {nodes}"
        )));
    }
    if args.fail_rate > 0.0 {
        return Err(Failure::Usage(
            "--fail-rate is for the in-process bench".into(),
        ));
    }
    let bench = tempest_examples::cluster_bench::ClusterBench {
        nodes,
        sentences: args.sentences.unwrap_or(200_000),
        parallelism: args.common.parallelism,
        guarantee: args.common.guarantee,
        // Exactly-once counts in replicated state (a plain count bolt would count a replay
        // again).
        extra: if args.common.guarantee == Guarantee::ExactlyOnce {
            vec![("replicas".to_owned(), "3".to_owned())]
        } else {
            Vec::new()
        },
    };
    let bin = std::env::current_exe().map_err(|e| Failure::Run(e.into()))?;
    let words = (bench.sentences * wordcount::WORDS_PER_SENTENCE) as f64;
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        let r = tempest_examples::cluster_bench::run_once(&bin, &bench).map_err(Failure::Run)?;
        let line = ResultLine::new()
            .field("seconds", format!("{:.3}", r.seconds))
            .field("words_rate", format!("{:.0}/s", words / r.seconds))
            .field(
                "local_words_rate",
                format!("{:.0}/s", words / r.local_seconds),
            );
        if args.runs > 1 {
            say!("{}", line.render(&format!("RUN {run}"), r.ok && r.local_ok));
        }
        runs.push(r);
    }
    let med = |f: fn(&tempest_examples::cluster_bench::ClusterRun) -> f64| {
        median(&runs.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0)
    };
    let (seconds, local_seconds) = (med(|r| r.seconds), med(|r| r.local_seconds));
    let ratio = med(|r| r.local_seconds / r.seconds);
    let ok = runs.iter().all(|r| r.ok && r.local_ok);
    let line = ResultLine::new()
        .field("workload", "wordcount")
        .field("nodes", nodes)
        .field("guarantee", bench.guarantee)
        .field("records", bench.sentences)
        .field("seconds", format!("{seconds:.3}"))
        .field("words_rate", format!("{:.0}/s", words / seconds))
        .field("local_seconds", format!("{local_seconds:.3}"))
        .field(
            "local_words_rate",
            format!("{:.0}/s", words / local_seconds),
        )
        .field("cluster_vs_local", format!("{ratio:.2}"));
    finish_bench(line, ok)
}

/// `bench replicated` (W3): the word count with its count bolt replicated 3 ways, on 3 nodes.
fn bench_replicated(args: &BenchReplicated) -> Result<(), Failure> {
    let bench = tempest_examples::cluster_bench::ClusterBench {
        nodes: 3,
        sentences: args.sentences,
        parallelism: args.parallelism,
        guarantee: Guarantee::AtLeastOnce,
        extra: [
            ("replicas".into(), "3".into()),
            ("state".into(), args.state.to_string()),
        ]
        .into_iter()
        .chain(
            args.max_spout_pending
                .map(|n| ("max_spout_pending".into(), n.to_string())),
        )
        .collect(),
    };
    let bin = std::env::current_exe().map_err(|e| Failure::Run(e.into()))?;
    let words = (bench.sentences * wordcount::WORDS_PER_SENTENCE) as f64;
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        let r = tempest_examples::cluster_bench::run_once(&bin, &bench).map_err(Failure::Run)?;
        let (p50, p99) = r.complete_ms.unwrap_or((f64::NAN, f64::NAN));
        let line = ResultLine::new()
            .field("words_rate", format!("{:.0}/s", words / r.seconds))
            .field("complete_p50_ms", format!("{p50:.1}"))
            .field("complete_p99_ms", format!("{p99:.1}"));
        if args.runs > 1 {
            say!("{}", line.render(&format!("RUN {run}"), r.ok && r.local_ok));
        }
        runs.push(r);
    }
    let seconds = median_of(&runs, |r| r.seconds);
    let local_seconds = median_of(&runs, |r| r.local_seconds);
    let p50 = median_of(&runs, |r| r.complete_ms.map_or(f64::NAN, |c| c.0));
    let p99 = median_of(&runs, |r| r.complete_ms.map_or(f64::NAN, |c| c.1));
    let ok = runs
        .iter()
        .all(|r| r.ok && r.local_ok && r.complete_ms.is_some());
    let line = ResultLine::new()
        .field("workload", "replicated")
        .field("nodes", 3)
        .field("replicas", 3)
        .field("state", args.state)
        .field("guarantee", bench.guarantee)
        .field("records", bench.sentences)
        .field("seconds", format!("{seconds:.3}"))
        .field("words_rate", format!("{:.0}/s", words / seconds))
        .field("complete_p50_ms", format!("{p50:.1}"))
        .field("complete_p99_ms", format!("{p99:.1}"))
        .field(
            "local_words_rate",
            format!("{:.0}/s", words / local_seconds),
        );
    finish_bench(line, ok)
}

/// `bench failover` (W4): SIGKILLs of a count group leader's node under a steady load.
fn bench_failover(args: &BenchFailover) -> Result<(), Failure> {
    if args.kills == 0 || !(0.0..=60.0).contains(&args.settle) || args.rate == 0 {
        return Err(Failure::Usage(
            "--kills and --rate must be at least 1, --settle 0 to 60 seconds".into(),
        ));
    }
    let bench = tempest_examples::failover_bench::FailoverBench {
        kills: args.kills,
        rate: args.rate,
        state: args.state,
        settle: Duration::from_secs_f64(args.settle),
    };
    let bin = std::env::current_exe().map_err(|e| Failure::Run(e.into()))?;
    let r = tempest_examples::failover_bench::run_once(&bin, &bench).map_err(Failure::Run)?;
    let quantile = |v: &[f64], q: f64| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i).copied().unwrap_or(f64::NAN)
    };
    let f = &r.failover_ms;
    eprintln!("failover_ms per kill: {f:.0?}");
    eprintln!("gap_ms per kill: {:.0?}", r.gap_ms);
    eprintln!("gap started, ms after its kill: {:.0?}", r.gap_start_ms);
    let max = f.iter().copied().fold(0.0, f64::max);
    let gap_max = r.gap_ms.iter().copied().fold(0.0, f64::max);
    let ok = r.lost == 0 && f.len() == args.kills as usize;
    let line = ResultLine::new()
        .field("workload", "failover")
        .field("state", args.state)
        .field("kills", f.len())
        .field(
            "words_rate_target",
            format!("{}/s", args.rate * 2 * wordcount::WORDS_PER_SENTENCE),
        )
        .field("failover_p50_ms", format!("{:.0}", quantile(f, 0.5)))
        .field("failover_p99_ms", format!("{:.0}", quantile(f, 0.99)))
        .field("failover_max_ms", format!("{max:.0}"))
        .field("gap_max_ms", format!("{gap_max:.0}"))
        .field("lost", r.lost)
        .field("duplicated_words", r.duplicated)
        .field("seconds", format!("{:.1}", r.seconds));
    finish_bench(line, ok)
}

fn finish_bench(result: ResultLine, ok: bool) -> Result<(), Failure> {
    say!("{}", result.render("RESULT", ok));
    if ok {
        Ok(())
    } else {
        Err(Failure::Run(anyhow::anyhow!(
            "the benchmark's check failed"
        )))
    }
}

/// What one run of the window benchmark measured.
#[derive(Debug, Default, Clone, Copy)]
struct WindowFigures {
    seconds: f64,
    rate: f64,
    ok: bool,
    results: f64,
    counted: f64,
    late: f64,
    replays: f64,
}

fn bench_window(args: BenchWindow) -> Result<(), Failure> {
    if args.runs == 0 {
        return Err(Failure::Usage("--runs must be at least 1".into()));
    }
    if !(0.0..1.0).contains(&args.fail_rate) {
        return Err(Failure::Usage(format!(
            "--fail-rate must be at least 0 and below 1, got {}",
            args.fail_rate
        )));
    }
    if args.fail_rate > 0.0 && !(args.through_bolt && args.common.guarantee.is_tracked()) {
        return Err(Failure::Usage(
            "--fail-rate fails events in the pass-through bolt and shows replay: it needs \
             --through-bolt and --guarantee at-least-once"
                .into(),
        ));
    }
    let n = args.events;
    let expected = window_count::expected(n);
    let config = topology_config(&args.common);
    let options = window_count::W2Options {
        parallelism: args.common.parallelism,
        guarantee: args.common.guarantee,
        config,
        through_bolt: args.through_bolt,
        fail_rate: args.fail_rate,
        seed: args.seed,
    };
    let local = local_options(&args.common);
    let cluster = LocalCluster::new(local.clone())?;
    let ctrl_c = catch_ctrl_c();
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        let job = window_count::topology(n, &options)?;
        let (report, seconds) = timed_run(&cluster, job.topology, run, n, "events", &ctrl_c)?;
        let (results, counted, fingerprint) = job
            .totals
            .try_iter()
            .fold((0u64, 0u64, 0u64), |(r, c, f), t| {
                (r + t.results, c + t.counted, f.wrapping_add(t.fingerprint))
            });
        let late = report.component("count").map_or(0, |c| c.metrics.late);
        let replays = report
            .component("events")
            .map_or(0, |c| c.metrics.tree_failed);
        let figures = WindowFigures {
            seconds,
            rate: n as f64 / seconds,
            // Every (key, window) count exact (the fingerprint), nothing late.
            ok: results == expected.results
                && counted == n
                && fingerprint == expected.fingerprint
                && late == 0,
            results: results as f64,
            counted: counted as f64,
            late: late as f64,
            replays: replays as f64,
        };
        if args.runs > 1 {
            let line = window_line(&args, &local, expected, &figures);
            say!("{}", line.render(&format!("RUN {run}"), figures.ok));
        }
        runs.push(figures);
    }
    let summary = WindowFigures {
        seconds: median_of(&runs, |r| r.seconds),
        rate: median_of(&runs, |r| r.rate),
        ok: runs.iter().all(|r| r.ok),
        results: median_of(&runs, |r| r.results),
        counted: median_of(&runs, |r| r.counted),
        late: median_of(&runs, |r| r.late),
        replays: median_of(&runs, |r| r.replays),
    };
    finish_bench(window_line(&args, &local, expected, &summary), summary.ok)
}

fn window_line(
    args: &BenchWindow,
    local: &LocalOptions,
    expected: window_count::Expected,
    run: &WindowFigures,
) -> ResultLine {
    let line = ResultLine::new()
        .field("workload", "window")
        .field("guarantee", args.common.guarantee)
        .field("records", args.events)
        .field("seconds", format!("{:.3}", run.seconds))
        .field("rate", format!("{:.0}/s", run.rate))
        .field("results", run.results)
        .field("expected_results", expected.results)
        .field("counted", run.counted)
        .field("late", run.late)
        .field("through_bolt", args.through_bolt)
        .field("fail_rate", args.fail_rate)
        .field("replays", run.replays);
    run_setup_fields(line, &args.common, local, args.runs)
}

/// What one benchmark run measured.
#[derive(Debug, Default, Clone, Copy)]
struct RunFigures {
    seconds: f64,
    rate: f64,
    ok: bool,
    complete_p50_ms: f64,
    complete_p99_ms: f64,
    acked: f64,
    replays: f64,
    timed_out: f64,
    duplicates: f64,
}

fn bench_wordcount(args: BenchWordcount) -> Result<(), Failure> {
    if args.runs == 0 {
        return Err(Failure::Usage("--runs must be at least 1".into()));
    }
    if let Some(nodes) = args.nodes {
        return bench_wordcount_cluster(&args, nodes);
    }
    // A rate of 1 would fail every sentence for ever.
    if !(0.0..1.0).contains(&args.fail_rate) {
        return Err(Failure::Usage(format!(
            "--fail-rate must be at least 0 and below 1, got {}",
            args.fail_rate
        )));
    }
    if args.fail_rate > 0.0 && !args.common.guarantee.is_tracked() {
        return Err(Failure::Usage(
            "--fail-rate shows replay: it needs --guarantee at-least-once".into(),
        ));
    }
    let n = args.sentences.unwrap_or(3_000_000);
    let expected_words = n * wordcount::WORDS_PER_SENTENCE;
    let mut wc_options = wordcount_options(&args.common, Some(n));
    wc_options.fail_rate = args.fail_rate;
    wc_options.seed = args.seed;
    let local = local_options(&args.common);
    let tracked = args.common.guarantee.is_tracked();
    let cluster = LocalCluster::new(local.clone())?;
    let ctrl_c = catch_ctrl_c();
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        let wc = wordcount::topology(&wc_options)?;
        let (report, seconds) = timed_run(&cluster, wc.topology, run, n, "sentences", &ctrl_c)?;
        let sink_total: u64 = wc.sink_counts.try_iter().sum();
        let counts = wordcount::merge_totals(wc.totals.try_iter());
        let spout = report.component("sentences");
        let acked = spout.map_or(0, |c| c.metrics.acked);
        // Tracked: every spout message acked once, besides the counts.
        let ok = counts
            .as_ref()
            .is_some_and(|c| wordcount::counts_ok(c, sink_total, n, tracked))
            && (!tracked || acked == n);
        let counted: u64 = counts.as_ref().map_or(0, |c| c.iter().sum());
        let ms = |q: f64| spout.map_or(0.0, |c| c.complete_latency.quantile(q).as_secs_f64() * 1e3);
        let figures = RunFigures {
            seconds,
            rate: n as f64 / seconds,
            ok,
            complete_p50_ms: ms(0.5),
            complete_p99_ms: ms(0.99),
            acked: acked as f64,
            replays: spout.map_or(0, |c| c.metrics.tree_failed) as f64,
            timed_out: spout.map_or(0, |c| c.metrics.timed_out) as f64,
            duplicates: counted.saturating_sub(expected_words) as f64,
        };
        if args.runs > 1 {
            let line = line(&args, &local, n, &figures);
            say!("{}", line.render(&format!("RUN {run}"), ok));
        }
        runs.push(figures);
    }
    let med = |f: fn(&RunFigures) -> f64| median_of(&runs, f);
    let summary = RunFigures {
        seconds: med(|r| r.seconds),
        rate: med(|r| r.rate),
        ok: runs.iter().all(|r| r.ok),
        complete_p50_ms: med(|r| r.complete_p50_ms),
        complete_p99_ms: med(|r| r.complete_p99_ms),
        acked: med(|r| r.acked),
        replays: med(|r| r.replays),
        timed_out: med(|r| r.timed_out),
        duplicates: med(|r| r.duplicates),
    };
    finish_bench(line(&args, &local, n, &summary), summary.ok)
}

fn line(args: &BenchWordcount, local: &LocalOptions, n: u64, run: &RunFigures) -> ResultLine {
    let words_rate = run.rate * wordcount::WORDS_PER_SENTENCE as f64;
    let mut line = ResultLine::new()
        .field("workload", "wordcount")
        .field("guarantee", args.common.guarantee)
        .field("records", n)
        .field("seconds", format!("{:.3}", run.seconds))
        .field("rate", format!("{:.0}/s", run.rate))
        .field("words_rate", format!("{words_rate:.0}/s"));
    if args.common.guarantee.is_tracked() {
        line = line
            .field("complete_p50_ms", format!("{:.2}", run.complete_p50_ms))
            .field("complete_p99_ms", format!("{:.2}", run.complete_p99_ms))
            .field("acked", run.acked)
            .field("replays", run.replays)
            .field("timed_out", run.timed_out)
            .field("duplicates", run.duplicates)
            .field("fail_rate", args.fail_rate);
    }
    run_setup_fields(line, &args.common, local, args.runs)
}
