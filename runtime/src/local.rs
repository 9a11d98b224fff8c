//! Local mode: runs a whole topology in this process.
//!
//! [`LocalCluster::start`] plans the topology, starts one actix Arbiter (a worker thread) per
//! core, places every task's actor on one of them, wires the actors together and starts the
//! spouts. A coordinator actor on the system thread counts finished tasks, logs metrics
//! periodically and builds the [`RunReport`]. A finite run ends when every spout is done and
//! every queue has drained; [`RunningTopology::drain`] (Ctrl-C in the CLI) ends an endless one
//! the same way.
//!
//! A topology with a checkpoint interval has the coordinator trigger checkpoints at the
//! spouts and collect what the spouts and stateful bolts save (see [`crate::checkpoint`]);
//! with [`LocalOptions::checkpoint_dir`] they are stored there, and a run started on a
//! directory that holds a checkpoint of the same topology resumes from it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter, AsyncContext, Context, Handler, Message, Recipient};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;
use tempest_dsl::engine::Task;
use tempest_dsl::{ComponentKind, Guarantee, TaskId, Topology, TopologyIr};
use tokio::sync::oneshot;

use crate::checkpoint::{
    Checkpoint, CheckpointReport, CheckpointStore, TaskSnapshot, Tick, Tracker,
};
use crate::error::RuntimeError;
use crate::executor::outbox::Outbox;
use crate::executor::{
    AckBatch, AckerActor, BoltActor, CheckpointDone, Credit, Deliver, Drain, LocalLink, SpoutActor,
    Start, TaskCore, TaskEvent, TriggerCheckpoint, Verdicts, Wire,
};
use crate::metrics::{ComponentReport, MetricsSnapshot, RunReport, TaskHistograms, TaskMetrics};
use crate::plan::PhysicalPlan;

/// The most worker threads a local cluster runs.
pub const MAX_WORKERS: usize = 256;

/// The most links between tasks a local run sets up (each task of a component links to every
/// task of each component it feeds, so links grow with the square of the parallelism).
pub const MAX_LOCAL_LINKS: usize = 2_000_000;

/// Options of a local run.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Worker threads (actix Arbiters) that run the tasks. Default: the number of cores.
    pub workers: usize,
    /// How often per-component metrics are logged at `info`; `None` turns it off.
    pub metrics_interval: Option<Duration>,
    /// The run seed every task's generator (its ack-tree ids) is seeded from; `None` draws one.
    /// The run report gives it, so a run can be replayed with the same ids.
    pub seed: Option<u64>,
    /// Where a topology that takes checkpoints (`TopologyConfig::checkpoint_interval`) keeps
    /// them. A run started on a directory that holds a checkpoint of the same topology (same
    /// name, components and parallelism) restores it: its stateful bolts start from their
    /// saved states and its spouts from their saved positions. `None`: checkpoints are taken
    /// (and measured) but not kept.
    pub checkpoint_dir: Option<PathBuf>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            metrics_interval: Some(Duration::from_secs(10)),
            seed: None,
            checkpoint_dir: None,
        }
    }
}

impl LocalOptions {
    /// Checks the options.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(RuntimeError::Options {
                field: "workers",
                value: self.workers.to_string(),
                expected: "between 1 and 256",
            });
        }
        if self.metrics_interval.is_some_and(|d| d.is_zero()) {
            return Err(RuntimeError::Options {
                field: "metrics_interval",
                value: "0s".into(),
                expected: "above zero (or None)",
            });
        }
        Ok(())
    }
}

/// Runs topologies in this process.
///
/// ```no_run
/// # fn topology() -> tempest_dsl::Topology { unimplemented!() }
/// use tempest_runtime::{LocalCluster, LocalOptions};
///
/// let cluster = LocalCluster::new(LocalOptions::default())?;
/// let report = cluster.run(topology())?;
/// println!("{report}");
/// # Ok::<(), tempest_runtime::RuntimeError>(())
/// ```
#[derive(Clone, Debug)]
pub struct LocalCluster {
    options: LocalOptions,
}

impl LocalCluster {
    /// A local cluster with these options.
    pub fn new(options: LocalOptions) -> Result<Self, RuntimeError> {
        options.validate()?;
        Ok(LocalCluster { options })
    }

    /// Runs `topology` to its end (every spout done, every queue drained) and reports.
    pub fn run(&self, topology: Topology) -> Result<RunReport, RuntimeError> {
        self.start(topology)?.wait()
    }

    /// Starts `topology` on its own threads and returns a handle to watch, drain and await it.
    pub fn start(&self, topology: Topology) -> Result<RunningTopology, RuntimeError> {
        let ir = topology.ir().clone();
        let plan = PhysicalPlan::new(&ir, self.options.workers);
        let links: usize = plan.tasks.iter().map(|t| t.links.len()).sum();
        if links > MAX_LOCAL_LINKS {
            return Err(RuntimeError::TooLarge {
                links,
                max: MAX_LOCAL_LINKS,
            });
        }
        let metrics: Arc<[Arc<TaskMetrics>]> = plan
            .tasks
            .iter()
            .map(|_| Arc::new(TaskMetrics::default()))
            .collect();
        let checkpoints = match (ir.config.checkpoint_interval, &self.options.checkpoint_dir) {
            (Some(_), Some(dir)) => {
                let store = CheckpointStore::open(dir)?;
                let restore = store.latest(&ir.name, &crate::checkpoint::shape(&ir))?;
                if let Some(c) = &restore {
                    tracing::info!(topology = %ir.name, checkpoint = c.id, dir = %dir.display(), "restoring from a checkpoint");
                }
                Some((Some(store), restore))
            }
            (Some(_), None) => Some((None, None)),
            (None, _) => None,
        };
        let restored_from = checkpoints
            .as_ref()
            .and_then(|(_, c)| c.as_ref())
            .map(|c| c.id);
        let (control_tx, control_rx) = std::sync::mpsc::channel();
        let options = self.options.clone();
        let thread_metrics = Arc::clone(&metrics);
        // Never sent on: the sender drops when the system thread ends (even by a panic), which
        // is what `wait_timeout` waits for.
        let (ended_tx, ended_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("tempest-{}", ir.name))
            .spawn(move || {
                let _ended = ended_tx;
                run_system(
                    topology,
                    plan,
                    options,
                    thread_metrics,
                    control_tx,
                    checkpoints,
                )
            })
            .map_err(RuntimeError::Spawn)?;
        // The system thread sends the coordinator's address once it exists, or drops the
        // sender if setup failed (the error then comes from `wait`).
        let control = control_rx.recv().ok();
        Ok(RunningTopology {
            ir,
            metrics,
            restored_from,
            control,
            ended: Mutex::new(ended_rx),
            thread,
        })
    }
}

/// A topology running in this process.
pub struct RunningTopology {
    ir: TopologyIr,
    metrics: Arc<[Arc<TaskMetrics>]>,
    restored_from: Option<u64>,
    control: Option<Addr<Coordinator>>,
    ended: Mutex<std::sync::mpsc::Receiver<()>>,
    thread: JoinHandle<Result<RunReport, RuntimeError>>,
}

impl RunningTopology {
    /// Asks every spout to stop emitting; the run then ends like a finite one, once everything
    /// in flight has been processed.
    pub fn drain(&self) {
        if let Some(control) = &self.control {
            control.do_send(DrainAll);
        }
    }

    /// The checkpoint the run was restored from, if it was (see
    /// [`LocalOptions::checkpoint_dir`]).
    pub fn restored_from(&self) -> Option<u64> {
        self.restored_from
    }

    /// Live counters per component, in declaration order.
    pub fn metrics(&self) -> Vec<(String, MetricsSnapshot)> {
        let mut per_component: Vec<(String, MetricsSnapshot)> = self
            .ir
            .components
            .iter()
            .map(|c| (c.name.clone(), MetricsSnapshot::default()))
            .collect();
        let mut task = 0usize;
        for (ci, c) in self.ir.components.iter().enumerate() {
            for _ in 0..c.parallelism {
                per_component[ci].1.merge(&self.metrics[task].snapshot());
                task += 1;
            }
        }
        per_component
    }

    /// Live counters of the component called `name`, summed over its tasks.
    pub fn component_metrics(&self, name: &str) -> Option<MetricsSnapshot> {
        self.metrics()
            .into_iter()
            .find_map(|(component, m)| (component == name).then_some(m))
    }

    /// Whether the run has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits at most `timeout` for the run to end and says whether it has; returns as soon as
    /// it does, so callers can poll for progress without delaying the end they measure.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        if self.is_finished() {
            return true;
        }
        let ended = self
            .ended
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match ended.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        }
    }

    /// Waits for the end of the run.
    pub fn wait(self) -> Result<RunReport, RuntimeError> {
        match self.thread.join() {
            Ok(result) => result,
            Err(panic) => Err(RuntimeError::Crashed(
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "the runtime thread panicked".to_owned()),
            )),
        }
    }
}

/// The body of the runtime's system thread.
fn run_system(
    topology: Topology,
    plan: PhysicalPlan,
    options: LocalOptions,
    metrics: Arc<[Arc<TaskMetrics>]>,
    control: std::sync::mpsc::Sender<Addr<Coordinator>>,
    checkpoints: Option<(Option<CheckpointStore>, Option<Checkpoint>)>,
) -> Result<RunReport, RuntimeError> {
    let system = actix_rt::System::new();
    system.block_on(async move {
        let ir = topology.ir().clone();
        let (done_tx, done_rx) = oneshot::channel();
        let seed = options.seed.unwrap_or_else(rand::random);
        let (store, restore) = match checkpoints {
            Some((store, restore)) => (store, restore),
            None => (None, None),
        };
        let mut coordinator = Coordinator::new(
            &ir,
            &plan,
            Arc::clone(&metrics),
            options.metrics_interval,
            seed,
            done_tx,
        );
        if let Some(interval) = ir.config.checkpoint_interval {
            coordinator.checkpoints = Some(Checkpoints::new(
                &ir,
                &plan,
                interval,
                store,
                restore.as_ref(),
            ));
        }
        let coordinator = coordinator.start();
        let workers: Vec<Arbiter> = (0..plan.workers).map(|_| Arbiter::new()).collect();
        let started = start_tasks(
            &topology,
            &plan,
            &workers,
            &metrics,
            &coordinator,
            seed,
            restore.as_ref(),
        );
        let result = match started {
            Ok(()) => {
                let _ = control.send(coordinator.clone());
                done_rx.await.unwrap_or_else(|_| {
                    Err(RuntimeError::Crashed("the coordinator stopped".into()))
                })
            }
            Err(err) => Err(err),
        };
        for worker in &workers {
            worker.stop();
        }
        for worker in workers {
            let _ = worker.join();
        }
        result
    })
}

/// The addresses of one task's actor, shared by every task that talks to it.
struct TaskAddrs {
    deliver: Option<Arc<Recipient<Deliver>>>,
    credit: Arc<Recipient<Credit>>,
    wire: Recipient<Wire>,
}

/// Creates every task's actor on its worker, wires them, and starts the spouts.
fn start_tasks(
    topology: &Topology,
    plan: &PhysicalPlan,
    workers: &[Arbiter],
    metrics: &[Arc<TaskMetrics>],
    coordinator: &Addr<Coordinator>,
    seed: u64,
    restore: Option<&Checkpoint>,
) -> Result<(), RuntimeError> {
    let ir = topology.ir();
    let config = &ir.config;
    let checkpointing = config.checkpoint_interval.is_some();
    let saved = |id: TaskId| restore.and_then(|c| c.tasks.get(&id));
    let credit = config.queue_batches as u32;
    // One generator from the run seed, drawn in task order: each task's seed depends only on
    // the run seed and the plan.
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut addrs = Vec::with_capacity(plan.tasks.len());
    let mut spouts = Vec::new();
    let mut verdicts: Vec<(TaskId, Recipient<Verdicts>)> = Vec::new();
    let tracking = ir
        .guarantee
        .is_tracked()
        .then_some((config.message_timeout, config.max_spout_pending));
    let align = crate::executor::align::groups(ir);
    for task in &plan.tasks {
        let component = &ir.components[task.component];
        let setup = plan.task_setup(task.id, rng.random());
        let instance = topology
            .instantiate(task.component, &setup)
            .map_err(|source| RuntimeError::Setup {
                component: component.name.clone(),
                task: task.id,
                source,
            })?;
        // ERROR level: a span is only entered when its level passes the filter, and the task's
        // fields must reach every event that does (the CLI logs at `warn` by default).
        let span = tracing::error_span!("task", component = %component.name, task = task.id.0);
        let core = TaskCore::new(
            task.id,
            span,
            Outbox::new(Vec::new(), credit),
            Arc::clone(&metrics[task.id.0 as usize]),
            coordinator.clone().recipient(),
            config.flush_interval,
        );
        let arbiter = workers[task.worker].handle();
        match instance {
            Task::Spout(spout) => {
                let batch_size = config.batch_size;
                let position = saved(task.id).and_then(TaskSnapshot::spout_restore);
                let group = align.get(&task.component).cloned();
                let slot = task.index as usize;
                let addr = SpoutActor::start_in_arbiter(&arbiter, move |_| {
                    let mut actor = SpoutActor::new(core, spout, batch_size, credit, tracking);
                    if let Some(group) = group {
                        actor = actor.aligned(group, slot);
                    }
                    if checkpointing {
                        actor.checkpointed(position)
                    } else {
                        actor
                    }
                });
                spouts.push(SpoutAddrs {
                    start: addr.clone().recipient(),
                    drain: addr.clone().recipient(),
                    trigger: addr.clone().recipient(),
                    done: addr.clone().recipient(),
                });
                verdicts.push((task.id, addr.clone().recipient()));
                addrs.push(TaskAddrs {
                    deliver: None,
                    credit: Arc::new(addr.clone().recipient()),
                    wire: addr.recipient(),
                });
            }
            Task::Bolt(bolt) => {
                let ends = task.upstream_links;
                let tick = component.tick_every;
                let state = match saved(task.id) {
                    Some(TaskSnapshot::State(bytes)) => Some(bytes.clone()),
                    _ => None,
                };
                let addr = BoltActor::start_in_arbiter(&arbiter, move |_| {
                    let actor = BoltActor::new(core, bolt, ends, tick, credit);
                    if checkpointing {
                        actor.checkpointed(state)
                    } else {
                        actor
                    }
                });
                addrs.push(TaskAddrs {
                    deliver: Some(Arc::new(addr.clone().recipient())),
                    credit: Arc::new(addr.clone().recipient()),
                    wire: addr.recipient(),
                });
            }
        }
    }
    // The ackers start once the spouts exist, so that they know where to send verdicts.
    let spout_verdicts: FxHashMap<TaskId, Recipient<Verdicts>> = verdicts.into_iter().collect();
    let mut ackers: Vec<Recipient<AckBatch>> = Vec::with_capacity(plan.ackers.len());
    for &(id, worker) in &plan.ackers {
        // ERROR level: a span is only entered when its level passes the filter, and the task's
        // fields must reach every event that does (the CLI logs at `warn` by default).
        let span = tracing::error_span!("task", component = "__acker", task = id.0);
        let timeout = config.message_timeout;
        let spouts = spout_verdicts.clone();
        let addr = AckerActor::start_in_arbiter(&workers[worker].handle(), move |_| {
            AckerActor::new(timeout, spouts, span)
        });
        ackers.push(addr.recipient());
    }
    let ackers: Arc<[Recipient<AckBatch>]> = ackers.into();
    for task in &plan.tasks {
        let mut links = Vec::with_capacity(task.links.len());
        for link in &task.links {
            let target = &addrs[link.target.0 as usize];
            let to = target.deliver.clone().ok_or_else(|| {
                RuntimeError::Crashed(format!("task {} has a link to a spout", task.id))
            })?;
            links.push(LocalLink {
                from: task.id,
                input: link.input,
                to,
                target_metrics: Arc::clone(&metrics[link.target.0 as usize]),
            });
        }
        let upstream = plan
            .upstream_links_of(task.id)
            .iter()
            .map(|&(up, links)| (up, links, Arc::clone(&addrs[up.0 as usize].credit)))
            .collect();
        addrs[task.id.0 as usize].wire.do_send(Wire {
            links,
            upstream,
            ackers: Arc::clone(&ackers),
        });
    }
    coordinator.do_send(Begin { spouts });
    Ok(())
}

/// What the coordinator tells a spout.
struct SpoutAddrs {
    start: Recipient<Start>,
    drain: Recipient<Drain>,
    trigger: Recipient<TriggerCheckpoint>,
    done: Recipient<CheckpointDone>,
}

/// Starts the spouts (sent once every actor is wired).
#[derive(Message)]
#[rtype(result = "()")]
struct Begin {
    spouts: Vec<SpoutAddrs>,
}

/// The coordinator's side of a run's checkpoints.
struct Checkpoints {
    interval: Duration,
    /// Created when the spouts start.
    tracker: Option<Tracker>,
    /// The tasks that save: the spouts and the stateful bolts.
    savers: BTreeSet<TaskId>,
    first_id: u64,
    store: Option<CheckpointStore>,
    topology: String,
    shape: Vec<(String, u32)>,
    triggers: Vec<Recipient<TriggerCheckpoint>>,
    dones: Vec<Recipient<CheckpointDone>>,
    last_bytes: usize,
    restored_from: Option<u64>,
    /// What the restored checkpoint saved, for the tracker.
    restored: std::collections::BTreeMap<TaskId, TaskSnapshot>,
}

impl Checkpoints {
    fn new(
        ir: &TopologyIr,
        plan: &PhysicalPlan,
        interval: Duration,
        store: Option<CheckpointStore>,
        restore: Option<&Checkpoint>,
    ) -> Self {
        let savers = crate::checkpoint::savers(ir, plan);
        Checkpoints {
            interval,
            tracker: None,
            savers,
            first_id: restore.map_or(1, |c| c.id + 1),
            store,
            topology: ir.name.clone(),
            shape: crate::checkpoint::shape(ir),
            triggers: Vec::new(),
            dones: Vec::new(),
            last_bytes: 0,
            restored_from: restore.map(|c| c.id),
            restored: restore.map(|c| c.tasks.clone()).unwrap_or_default(),
        }
    }

    fn tick(&mut self) {
        let Some(tracker) = &mut self.tracker else {
            return;
        };
        match tracker.tick(Instant::now()) {
            Tick::Wait => {}
            Tick::Trigger(id) => {
                for t in &self.triggers {
                    t.do_send(TriggerCheckpoint(id));
                }
            }
            Tick::TimedOut(id) => {
                tracing::warn!(topology = %self.topology, checkpoint = id, "checkpoint timed out");
                self.tell_spouts(id, false);
            }
        }
    }

    /// Tells the spouts that checkpoint `id` completed (`ok`) or failed.
    fn tell_spouts(&self, id: u64, ok: bool) {
        for d in &self.dones {
            d.do_send(CheckpointDone { id, ok });
        }
    }

    /// Stores a completed checkpoint and tells the spouts.
    fn completed(&mut self, id: u64, tasks: std::collections::BTreeMap<TaskId, TaskSnapshot>) {
        let checkpoint = Checkpoint {
            topology: self.topology.clone(),
            shape: self.shape.clone(),
            id,
            tasks,
        };
        let bytes = checkpoint.bytes();
        if let Some(store) = &self.store {
            if let Err(e) = store.save(&checkpoint) {
                tracing::warn!(topology = %self.topology, checkpoint = id, error = %e, "checkpoint not stored");
                if let Some(t) = &mut self.tracker {
                    t.not_stored();
                }
                self.tell_spouts(id, false);
                return;
            }
        }
        tracing::debug!(topology = %self.topology, checkpoint = id, bytes, "checkpoint completed");
        self.last_bytes = bytes;
        self.tell_spouts(id, true);
    }

    fn event(&mut self, task: TaskId, id: u64, saved: Result<TaskSnapshot, String>) {
        let Some(tracker) = &mut self.tracker else {
            return;
        };
        let done = match saved {
            Ok(snapshot) => tracker.saved(task, id, snapshot, Instant::now()),
            Err(why) => {
                if tracker.failed(id) {
                    tracing::warn!(topology = %self.topology, checkpoint = id, task = task.0, %why, "checkpoint failed");
                    self.tell_spouts(id, false);
                }
                None
            }
        };
        if let Some((id, tasks)) = done {
            self.completed(id, tasks);
        }
    }

    fn finished(&mut self, task: TaskId) {
        let done = self
            .tracker
            .as_mut()
            .and_then(|t| t.finished(task, Instant::now()));
        if let Some((id, tasks)) = done {
            self.completed(id, tasks);
        }
    }

    fn report(&self) -> CheckpointReport {
        let stats = self.tracker.as_ref().map(Tracker::stats);
        let durations = stats.map(|s| s.durations_ms.clone()).unwrap_or_default();
        let q = |q: f64| crate::metrics::percentile(&durations, q);
        CheckpointReport {
            completed: stats.map_or(0, |s| s.completed),
            failed: stats.map_or(0, |s| s.failed),
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            max_ms: durations.iter().copied().fold(0.0, f64::max),
            last_bytes: self.last_bytes,
            restored_from: self.restored_from,
        }
    }
}

/// Drains every spout.
#[derive(Message)]
#[rtype(result = "()")]
struct DrainAll;

/// Counts finished tasks, logs metrics, and reports the end of the run.
struct Coordinator {
    topology: String,
    seed: u64,
    guarantee: Guarantee,
    components: Vec<(String, ComponentKind, u32)>,
    /// Component index of each task.
    task_component: Vec<usize>,
    metrics: Arc<[Arc<TaskMetrics>]>,
    metrics_interval: Option<Duration>,
    finished: Vec<bool>,
    remaining: usize,
    histograms: Vec<TaskHistograms>,
    drains: Vec<Recipient<Drain>>,
    drained: bool,
    started: Instant,
    done: Option<oneshot::Sender<Result<RunReport, RuntimeError>>>,
    /// Set when the topology takes checkpoints.
    checkpoints: Option<Checkpoints>,
}

impl Coordinator {
    fn new(
        ir: &TopologyIr,
        plan: &PhysicalPlan,
        metrics: Arc<[Arc<TaskMetrics>]>,
        metrics_interval: Option<Duration>,
        seed: u64,
        done: oneshot::Sender<Result<RunReport, RuntimeError>>,
    ) -> Self {
        Coordinator {
            topology: ir.name.clone(),
            seed,
            guarantee: ir.guarantee,
            components: ir
                .components
                .iter()
                .map(|c| (c.name.clone(), c.kind, c.parallelism))
                .collect(),
            task_component: plan.tasks.iter().map(|t| t.component).collect(),
            metrics,
            metrics_interval,
            finished: vec![false; plan.tasks.len()],
            remaining: plan.tasks.len(),
            histograms: vec![TaskHistograms::default(); ir.components.len()],
            drains: Vec::new(),
            drained: false,
            started: Instant::now(),
            done: Some(done),
            checkpoints: None,
        }
    }

    fn snapshots(&self) -> Vec<MetricsSnapshot> {
        let mut out = vec![MetricsSnapshot::default(); self.components.len()];
        for (task, m) in self.metrics.iter().enumerate() {
            out[self.task_component[task]].merge(&m.snapshot());
        }
        out
    }

    fn log_metrics(&self) {
        for ((name, _, _), m) in self.components.iter().zip(self.snapshots()) {
            crate::metrics::log_component(&self.topology, name, &m);
        }
    }

    fn report(&mut self) -> RunReport {
        let snapshots = self.snapshots();
        RunReport {
            topology: self.topology.clone(),
            guarantee: self.guarantee,
            elapsed: self.started.elapsed(),
            drained: self.drained,
            seed: self.seed,
            components: self
                .components
                .iter()
                .zip(snapshots)
                .enumerate()
                .map(|(i, ((name, kind, tasks), metrics))| ComponentReport {
                    name: name.clone(),
                    kind: *kind,
                    tasks: *tasks,
                    metrics,
                    execute_latency: std::mem::take(&mut self.histograms[i].execute),
                    complete_latency: std::mem::take(&mut self.histograms[i].complete),
                    time_skew: std::mem::take(&mut self.histograms[i].skew),
                })
                .collect(),
            checkpoints: self.checkpoints.as_ref().map(Checkpoints::report),
        }
    }

    fn finish(&mut self, result: Result<RunReport, RuntimeError>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(every) = self.metrics_interval {
            ctx.run_interval(every, |act, _| act.log_metrics());
        }
        if let Some(c) = &self.checkpoints {
            ctx.run_interval(Tracker::tick_every(c.interval), |act, _| {
                if let Some(c) = &mut act.checkpoints {
                    c.tick();
                }
            });
        }
    }
}

impl Handler<Begin> for Coordinator {
    type Result = ();

    fn handle(&mut self, begin: Begin, _: &mut Context<Self>) {
        tracing::info!(topology = %self.topology, tasks = self.finished.len(), "starting");
        self.started = Instant::now();
        if let Some(c) = &mut self.checkpoints {
            c.tracker = Some(Tracker::new(
                c.interval,
                c.first_id,
                c.savers.clone(),
                std::mem::take(&mut c.restored),
                Instant::now(),
            ));
        }
        for spout in begin.spouts {
            spout.start.do_send(Start);
            self.drains.push(spout.drain);
            if let Some(c) = &mut self.checkpoints {
                c.triggers.push(spout.trigger);
                c.dones.push(spout.done);
            }
        }
        if self.drained {
            for drain in &self.drains {
                drain.do_send(Drain);
            }
        }
    }
}

impl Handler<DrainAll> for Coordinator {
    type Result = ();

    fn handle(&mut self, _: DrainAll, _: &mut Context<Self>) {
        if self.drained {
            return;
        }
        tracing::info!(topology = %self.topology, "draining");
        self.drained = true;
        for drain in &self.drains {
            drain.do_send(Drain);
        }
    }
}

impl Handler<TaskEvent> for Coordinator {
    type Result = ();

    fn handle(&mut self, event: TaskEvent, _: &mut Context<Self>) {
        match event {
            TaskEvent::Finished {
                task, histograms, ..
            } => {
                let Some(finished) = self.finished.get_mut(task.0 as usize) else {
                    return;
                };
                if std::mem::replace(finished, true) {
                    return;
                }
                let component = self.task_component[task.0 as usize];
                self.histograms[component].merge(&histograms);
                if let Some(c) = &mut self.checkpoints {
                    c.finished(task);
                }
                self.remaining -= 1;
                if self.remaining == 0 {
                    let report = self.report();
                    tracing::info!(
                        topology = %self.topology,
                        seconds = report.elapsed.as_secs_f64(),
                        "finished"
                    );
                    self.finish(Ok(report));
                }
            }
            TaskEvent::Failed { task, error } => {
                let component = self
                    .task_component
                    .get(task.0 as usize)
                    .map(|&c| self.components[c].0.clone())
                    .unwrap_or_default();
                self.finish(Err(RuntimeError::TaskFailed {
                    component,
                    task,
                    error,
                }));
            }
            TaskEvent::Checkpointed { task, id, saved } => {
                if let Some(c) = &mut self.checkpoints {
                    c.event(task, id, saved);
                }
            }
            TaskEvent::Settled { task } => {
                if let Some(t) = self.checkpoints.as_mut().and_then(|c| c.tracker.as_mut()) {
                    tracing::debug!(task = task.0, "a spout waits for a checkpoint of its end");
                    t.hurry();
                }
            }
        }
    }
}
