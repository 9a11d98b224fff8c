//! `tempest-chaos`: runs chaos scenarios against node processes of this same binary (which is
//! why it also has the cluster commands: its nodes host the checking topology).

// The command line is the binary's edge: printing is its interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tempest_chaos::harness::{self, Options};
use tempest_chaos::schedule::Scenario;
use tempest_dsl::Guarantee;
use tempest_runtime::cli::ClusterCommand;

#[derive(Parser, Debug)]
#[command(name = "tempest-chaos", version, about = "Tempest's chaos tests")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scenario (or all of them) and check it; ends with a RESULT line per scenario.
    Run(RunArgs),
    #[command(flatten)]
    Cluster(ClusterCommand),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The scenario, or `all` (see --list).
    #[arg(long, required_unless_present = "list")]
    scenario: Option<String>,
    /// The schedule's seed: the same seed replays the same faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long the sources emit (for `all`: in all, shared by the scenarios, at least 12 s
    /// each). Seconds, or with a unit: 90s, 10m, 1h.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// The topology's delivery guarantee.
    #[arg(long, default_value_t = Guarantee::AtLeastOnce)]
    guarantee: Guarantee,
    /// Node processes (the first three run the manager).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Records a second per source task (two tasks; each record becomes two parts).
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Counter groups (each replicated on 3 nodes).
    #[arg(long, default_value_t = 4)]
    groups: u32,
    /// Where to keep the runs (a directory per scenario inside); default: the system's
    /// temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// List the scenarios, one line each.
    #[arg(long)]
    list: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (30s, 10m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "ms" => return Ok(Duration::from_millis(n)),
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    Ok(Duration::from_secs(secs))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { 2 } else { 0 });
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Cluster(command) => {
            tempest_runtime::cli::run(command, tempest_chaos::topology::registry())
        }
        Command::Run(args) => run(args),
    }
}

fn run(args: RunArgs) -> ExitCode {
    if args.list {
        for s in Scenario::ALL {
            println!("{:<20} {}", s.name(), s.about());
        }
        return ExitCode::SUCCESS;
    }
    let name = args.scenario.as_deref().unwrap_or_default();
    let scenarios: Vec<Scenario> = if name == "all" {
        Scenario::ALL.to_vec()
    } else if let Some(s) = Scenario::from_name(name) {
        vec![s]
    } else {
        eprintln!("error: no scenario `{name}` (see --list)");
        return ExitCode::from(2);
    };
    let load = if scenarios.len() > 1 {
        (args.duration / scenarios.len() as u32).max(Duration::from_secs(12))
    } else {
        args.duration
    };
    let bin = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot find this binary: {e}");
            return ExitCode::from(1);
        }
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("tempest-chaos"));
    let mut all_ok = true;
    let (mut kills, mut lost, mut failovers) = (0, 0, Vec::new());
    for scenario in &scenarios {
        let options = Options {
            scenario: *scenario,
            seed: args.seed,
            load,
            guarantee: args.guarantee,
            nodes: args.nodes,
            rate: args.rate,
            groups: args.groups,
            dir: root.join(format!("{}-seed{}-{stamp}", scenario.name(), args.seed)),
            bin: bin.clone(),
            sink_drops: 0,
            sink_random_ids: false,
        };
        eprintln!(
            "running {} (seed {}, load {:?}) in {}",
            scenario.name(),
            args.seed,
            load,
            options.dir.display()
        );
        let replay = format!(
            "tempest-chaos run --scenario {} --seed {} --duration {}s --guarantee {} --nodes {} --rate {} --groups {}",
            scenario.name(),
            args.seed,
            load.as_secs(),
            args.guarantee,
            args.nodes,
            args.rate,
            args.groups
        );
        match harness::run(&options) {
            Ok(outcome) => {
                println!("{}", outcome.result_line());
                kills += outcome.kills;
                lost += outcome.report.lost;
                failovers.extend(outcome.failover_ms.iter().copied());
                if !outcome.ok() {
                    all_ok = false;
                    eprintln!(
                        "FAILED: {:?}; replay: {replay}; logs and history in {}",
                        outcome.report,
                        options.dir.display()
                    );
                }
            }
            Err(e) => {
                all_ok = false;
                println!(
                    "RESULT scenario={} seed={} guarantee={} ok=false error={:?}",
                    scenario.name(),
                    args.seed,
                    args.guarantee,
                    format!("{e:#}")
                );
                eprintln!(
                    "FAILED: {e:#}; replay: {replay}; logs and history in {}",
                    options.dir.display()
                );
            }
        }
    }
    if scenarios.len() > 1 {
        let p50 = harness::percentile(&failovers, 0.5);
        let p99 = harness::percentile(&failovers, 0.99);
        println!(
            "RESULT scenario=all seed={} guarantee={} scenarios={} kills={kills} lost={lost} failovers={} failover_p50_ms={p50:.0} failover_p99_ms={p99:.0} ok={all_ok}",
            args.seed,
            args.guarantee,
            scenarios.len(),
            failovers.len(),
        );
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
