//! Components and helpers shared by the runtime's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tempest_dsl::*;
use tempest_runtime::{LocalCluster, LocalOptions, RunReport, RuntimeError};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Record)]
pub struct N {
    pub n: u64,
}

/// Emits `N { n }` for `n` in `0..end` split over its tasks (or forever), each as a tracked
/// message `n`; replays failed ones.
#[derive(Clone)]
pub struct Numbers {
    pub end: Option<u64>,
    next: u64,
    step: u64,
    replay: Vec<u64>,
    /// Acked message ids, reported at close.
    acked: Vec<u64>,
    report: Option<mpsc::Sender<Vec<u64>>>,
    /// A named stream the odd numbers go to, if any.
    odd_stream: Option<&'static str>,
}

impl Numbers {
    pub fn new(end: u64) -> Self {
        Numbers {
            end: Some(end),
            next: 0,
            step: 1,
            replay: Vec::new(),
            acked: Vec::new(),
            report: None,
            odd_stream: None,
        }
    }

    pub fn endless() -> Self {
        Numbers {
            end: None,
            ..Numbers::new(0)
        }
    }

    pub fn odd_to(mut self, stream: &'static str) -> Self {
        self.odd_stream = Some(stream);
        self
    }

    pub fn report_acks(mut self, tx: mpsc::Sender<Vec<u64>>) -> Self {
        self.report = Some(tx);
        self
    }
}

impl Spout for Numbers {
    type Out = N;
    const REPLAYABLE: bool = true;

    fn open(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.next = u64::from(ctx.task_index());
        self.step = u64::from(ctx.parallelism());
        Ok(())
    }

    fn next(&mut self, out: &mut SpoutEmitter<N>) -> Result<SpoutStatus, TaskError> {
        let n = match self.replay.pop() {
            Some(n) => n,
            None => {
                if self.end.is_some_and(|end| self.next >= end) {
                    return Ok(SpoutStatus::Done);
                }
                let n = self.next;
                self.next += self.step;
                n
            }
        };
        match self.odd_stream {
            Some(stream) if n % 2 == 1 => out.emit_tracked_to(MsgId(n), stream, N { n })?,
            _ => out.emit_tracked(MsgId(n), N { n }),
        }
        Ok(SpoutStatus::Active)
    }

    fn ack(&mut self, msg: MsgId) {
        self.acked.push(msg.0);
    }

    fn fail(&mut self, msg: MsgId) {
        self.replay.push(msg.0);
    }

    fn close(&mut self) {
        if let Some(tx) = &self.report {
            let _ = tx.send(std::mem::take(&mut self.acked));
        }
    }
}

/// Passes records through unchanged.
#[derive(Clone)]
pub struct Pass;

impl Bolt for Pass {
    type In = N;
    type Out = N;
    fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<N>) -> Result<(), TaskError> {
        out.emit(t.into_value());
        Ok(())
    }
}

/// What one task of a [`Collect`] sink received.
#[derive(Debug)]
pub struct Collected<T> {
    pub task_index: u32,
    pub items: Vec<T>,
}

/// Collects what it receives and hands it to the test when its input ends.
#[derive(Clone)]
pub struct Collect<T> {
    items: Vec<T>,
    task_index: u32,
    tx: mpsc::Sender<Collected<T>>,
}

impl<T> Collect<T> {
    pub fn new() -> (Self, mpsc::Receiver<Collected<T>>) {
        let (tx, rx) = mpsc::channel();
        (
            Collect {
                items: Vec::new(),
                task_index: 0,
                tx,
            },
            rx,
        )
    }
}

impl<T: Record> Bolt for Collect<T> {
    type In = T;
    type Out = T;
    fn prepare(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        self.task_index = ctx.task_index();
        Ok(())
    }
    fn execute(&mut self, t: Tuple<T>, _out: &mut Emitter<T>) -> Result<(), TaskError> {
        self.items.push(t.into_value());
        Ok(())
    }
    fn finish(&mut self, _out: &mut Emitter<T>) -> Result<(), TaskError> {
        let _ = self.tx.send(Collected {
            task_index: self.task_index,
            items: std::mem::take(&mut self.items),
        });
        Ok(())
    }
}

/// Every task's collection, sorted by task index.
pub fn collected<T>(rx: &mpsc::Receiver<Collected<T>>) -> Vec<Collected<T>> {
    let mut all: Vec<_> = rx.try_iter().collect();
    all.sort_by_key(|c| c.task_index);
    all
}

/// All collected items, sorted.
pub fn all_items<T: Ord>(rx: &mpsc::Receiver<Collected<T>>) -> Vec<T> {
    let mut items: Vec<T> = rx.try_iter().flat_map(|c| c.items).collect();
    items.sort();
    items
}

pub fn cluster(workers: usize) -> LocalCluster {
    LocalCluster::new(LocalOptions {
        workers,
        metrics_interval: None,
        ..LocalOptions::default()
    })
    .expect("valid options")
}

pub fn run(topology: Topology, workers: usize) -> Result<RunReport, RuntimeError> {
    cluster(workers).run(topology)
}

/// Polls `condition` every millisecond until it holds or `deadline` passes.
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    condition()
}

/// A flag and counter shared between a test and its components.
#[derive(Clone, Default)]
pub struct Shared {
    pub count: Arc<AtomicU64>,
    pub flag: Arc<AtomicBool>,
}

impl Shared {
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}
