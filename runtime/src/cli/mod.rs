//! The cluster command line as a library, so a user's own binary is a [`Registry`] plus one
//! call:
//!
//! ```no_run
//! use tempest_runtime::cli;
//! use tempest_runtime::cluster::Registry;
//!
//! fn main() -> std::process::ExitCode {
//!     let registry = Registry::new(); // .register("mine", "what it does", |args| build(args))
//!     cli::main(registry)
//! }
//! ```
//!
//! That binary then has `node`, `submit`, `status`, `kill` and `nodes` ([`ClusterCommand`]); a
//! binary with commands of its own flattens [`ClusterCommand`] into its clap parser and calls
//! [`run`].
//!
//! Exit codes a script can rely on: 0 success; 1 the cluster refused or failed the command
//! (unknown topology, already running, not found); 2 bad input (flags, config, secret);
//! 3 the cluster cannot be reached or has no manager leader now (retrying later may help).

// The command line is the binary's edge: printing is its interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::cluster::admin::{AdminError, AdminReply, AdminRequest, ClientError};
use crate::cluster::manager::{NodeStatus, TopologyStatus};
use crate::cluster::{AdminClient, Node, NodeConfig, NodeSettings, Registry};
use crate::transport::ClusterSecret;

/// Success.
pub const EXIT_OK: u8 = 0;
/// The cluster refused or failed the command.
pub const EXIT_FAILED: u8 = 1;
/// Bad flags, config or secret.
pub const EXIT_USAGE: u8 = 2;
/// The cluster cannot be reached, or has no manager leader now.
pub const EXIT_UNAVAILABLE: u8 = 3;

/// The cluster commands.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Run a cluster node until SIGTERM or Ctrl-C.
    Node(NodeArgs),
    /// Start a registered topology on the cluster.
    Submit(SubmitArgs),
    /// Show the cluster's topologies (or one) and where their tasks run.
    Status(StatusArgs),
    /// Stop a topology.
    Kill(KillArgs),
    /// Show the cluster's nodes.
    Nodes(ClientArgs),
}

/// `tempest node`: flags override the config file.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// This node's id (at least 1, unique, never reused by a node that lost its data).
    #[arg(long)]
    pub id: Option<u64>,
    /// Address to listen on (host:port).
    #[arg(long)]
    pub listen: Option<String>,
    /// Address others reach this node at (default: --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// The cluster's node addresses, comma-separated, the same list on every node; the first
    /// --managers of them run the manager.
    #[arg(long, value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// Where the node keeps its Raft logs and snapshots.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// File holding the cluster secret (at least 16 bytes).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Run without authentication (trusted test machines only).
    #[arg(long)]
    pub insecure: bool,
    /// How many of --peers run the manager (odd; default 3).
    #[arg(long)]
    pub managers: Option<usize>,
    /// Heartbeat interval to the manager, ms (default 100).
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Silence after which a node is declared down and its tasks move, ms (default 1000).
    #[arg(long)]
    pub node_timeout_ms: Option<u64>,
    /// Silence after which a node's replicas of stateful tasks move to other nodes, ms
    /// (default 10000).
    #[arg(long)]
    pub replace_after_ms: Option<u64>,
    /// A TOML file with the same settings (snake_case keys); flags win.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// How a client reaches the cluster.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Any node of the cluster (host:port); it forwards to the manager's leader.
    #[arg(long)]
    pub node: Option<String>,
    /// File holding the cluster secret.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Talk to an insecure cluster.
    #[arg(long)]
    pub insecure: bool,
    /// A node's TOML config file, for its address and secret.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// How long to wait for an answer, ms.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

/// `tempest submit`.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The registered topology.
    pub topology: String,
    /// The name it runs under (default: the topology's); one topology can run under several.
    #[arg(long = "name")]
    pub name: Option<String>,
    /// An argument of the topology, as key=value (repeatable).
    #[arg(long = "arg", value_parser = parse_arg)]
    pub args: Vec<(String, String)>,
    #[command(flatten)]
    /// How to reach the cluster.
    pub client: ClientArgs,
}

/// `tempest status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only this topology.
    pub name: Option<String>,
    #[command(flatten)]
    /// How to reach the cluster.
    pub client: ClientArgs,
}

/// `tempest kill`.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// The topology.
    pub name: String,
    #[command(flatten)]
    /// How to reach the cluster.
    pub client: ClientArgs,
}

fn parse_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

#[derive(Parser, Debug)]
#[command(name = "tempest", version, about = "A Tempest cluster binary")]
struct Cli {
    #[command(subcommand)]
    command: ClusterCommand,
}

/// Parses the process's arguments as a cluster command, runs it, and returns its exit code.
pub fn main(registry: Registry) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    run(cli.command, registry)
}

/// Runs one cluster command and returns its exit code (messages go to stdout and stderr).
pub fn run(command: ClusterCommand, registry: Registry) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = rt.block_on(async move {
        match command {
            ClusterCommand::Node(args) => node(args, registry).await,
            ClusterCommand::Submit(a) => {
                let args: BTreeMap<_, _> = a.args.into_iter().collect();
                let name = a.name.unwrap_or_else(|| a.topology.clone());
                let request = AdminRequest::Submit {
                    topology: a.topology,
                    name: name.clone(),
                    args,
                };
                client(&a.client, request, |r| {
                    if let AdminReply::Submitted { tasks, nodes } = r {
                        println!("submitted {name}: {tasks} tasks on {nodes} nodes");
                    }
                })
                .await
            }
            ClusterCommand::Status(a) => {
                client(
                    &a.client,
                    AdminRequest::Status { name: a.name },
                    print_status,
                )
                .await
            }
            ClusterCommand::Kill(a) => {
                let name = a.name.clone();
                client(&a.client, AdminRequest::Kill { name: a.name }, |_| {
                    println!("killed {name}");
                })
                .await
            }
            ClusterCommand::Nodes(a) => client(&a, AdminRequest::Nodes, print_nodes).await,
        }
    });
    ExitCode::from(code)
}

fn print_status(reply: AdminReply) {
    let AdminReply::Status(views) = reply else {
        return;
    };
    if views.is_empty() {
        println!("no topologies");
    }
    for v in views {
        let status = match v.status {
            TopologyStatus::Running => "running",
            TopologyStatus::Finished => "finished",
            TopologyStatus::Killed => "killed",
            TopologyStatus::Failed => "failed",
        };
        let nodes: Vec<String> = v.nodes.iter().map(|(n, c)| format!("{n}:{c}")).collect();
        // A run that takes checkpoints: how often it rolled back, and its last checkpoint.
        let checkpoints = match (v.checkpointed, v.checkpoint) {
            (false, _) => String::new(),
            (true, c) => format!(
                " rollbacks={} checkpoint={}",
                v.generation,
                c.map_or_else(|| "none".to_owned(), |c| c.to_string())
            ),
        };
        // Seekable spouts under exactly-once: where each would resume (all before is done).
        let committed = if v.committed.is_empty() {
            String::new()
        } else {
            let positions: Vec<String> = v
                .committed
                .iter()
                .map(|(t, p)| format!("{t}:{p}"))
                .collect();
            format!(" committed={}", positions.join(","))
        };
        println!(
            "{} topology={} status={status} tasks={} reschedules={}{checkpoints}{committed} nodes={}",
            v.name,
            v.topology,
            v.tasks,
            v.reschedules,
            nodes.join(",")
        );
    }
}

fn print_nodes(reply: AdminReply) {
    let AdminReply::Nodes { nodes, term } = reply else {
        return;
    };
    println!("manager term={term}");
    for v in nodes {
        let status = match v.status {
            NodeStatus::Up => "up",
            NodeStatus::Down => "down",
        };
        let leader = if v.leader { " manager-leader" } else { "" };
        println!("{} {} {status} tasks={}{leader}", v.node, v.addr, v.tasks);
    }
}

fn usage(msg: impl std::fmt::Display) -> u8 {
    eprintln!("error: {msg}");
    EXIT_USAGE
}

async fn client(args: &ClientArgs, request: AdminRequest, print: impl FnOnce(AdminReply)) -> u8 {
    let file = match &args.config {
        Some(f) => match NodeSettings::from_file(f) {
            Ok(s) => s,
            Err(e) => return usage(e),
        },
        None => NodeSettings::default(),
    };
    let Some(node) = args
        .node
        .clone()
        .or(file.advertise.clone())
        .or(file.listen.clone())
    else {
        return usage("no node to talk to: give --node host:port (or --config)");
    };
    let secret_file = args.secret_file.clone().or(file.secret_file.clone());
    let insecure = args.insecure || file.insecure.unwrap_or(false);
    let secret = match (secret_file, insecure) {
        (Some(f), false) => match ClusterSecret::from_file(&f) {
            Ok(s) => Some(s),
            Err(e) => return usage(e),
        },
        (None, true) => None,
        (Some(_), true) => return usage("--insecure and --secret-file contradict each other"),
        (None, false) => {
            return usage(
                "no cluster secret: give --secret-file, or --insecure for an insecure cluster",
            );
        }
    };
    let c = AdminClient::new(&node, secret, Duration::from_millis(args.timeout_ms));
    match c.call(&request).await {
        Ok(reply) => {
            print(reply);
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                ClientError::Transport(t) if t.is_transient() => EXIT_UNAVAILABLE,
                ClientError::Transport(_) => EXIT_USAGE,
                ClientError::Admin(AdminError::NoLeader) => EXIT_UNAVAILABLE,
                ClientError::Admin(_) | ClientError::Decode(_) => EXIT_FAILED,
            }
        }
    }
}

async fn node(args: NodeArgs, registry: Registry) -> u8 {
    let file = match &args.config {
        Some(f) => match NodeSettings::from_file(f) {
            Ok(s) => s,
            Err(e) => return usage(e),
        },
        None => NodeSettings::default(),
    };
    let flags = NodeSettings {
        id: args.id,
        listen: args.listen,
        advertise: args.advertise,
        peers: args.peers,
        data_dir: args.data_dir,
        secret_file: args.secret_file,
        insecure: args.insecure.then_some(true),
        managers: args.managers,
        heartbeat_ms: args.heartbeat_ms,
        node_timeout_ms: args.node_timeout_ms,
        replace_after_ms: args.replace_after_ms,
        ..NodeSettings::default()
    };
    let config = match NodeConfig::from_settings(file.overridden_by(flags)) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    if config.secret.is_none() {
        tracing::warn!("running INSECURE: any process that reaches this node can command it");
    }
    let node = match Node::start(config, Arc::new(registry)).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    if let Some(addr) = node.local_addr() {
        // A line scripts and tests wait for.
        println!("listening on {addr}");
    }
    wait_for_signal().await;
    node.shutdown().await;
    EXIT_OK
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
