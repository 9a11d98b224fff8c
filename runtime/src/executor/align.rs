//! Source alignment (Flink's watermark alignment of sources): the spout tasks of one component
//! publish their watermarks to an [`AlignGroup`], and a task whose watermark is more than the
//! component's maximum drift ahead of the group's slowest stops emitting until that one
//! catches up. A task that waits registers for a [`Wake`], sent when the slowest watermark
//! rises.
//!
//! A slot holds `i64::MAX` for a task that holds nobody back: idle (past its idle timeout),
//! done, stopped, not polled yet, or (in a cluster) running on another node (each node aligns
//! the tasks it runs). A task that has polled but emitted nothing holds the others at the
//! beginning of time, as in Flink. The slowest task is never held, so the group always moves
//! on.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use actix::{Message, Recipient};
use rustc_hash::FxHashMap;
use tempest_dsl::{ComponentKind, TopologyIr};

/// Tells a waiting spout to check its alignment again.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Wake;

/// The watermarks of one spout component's tasks, for source alignment.
pub(crate) struct AlignGroup {
    drift: i64,
    /// Per task index: its watermark, `i64::MAX` if it holds nobody back.
    marks: Box<[AtomicI64]>,
    waiting: Mutex<Vec<Recipient<Wake>>>,
}

impl AlignGroup {
    /// A group of `tasks` tasks that may run `drift` ms ahead of the slowest. A task holds
    /// nobody back until it publishes its watermark.
    pub(crate) fn new(drift: i64, tasks: usize) -> Self {
        AlignGroup {
            drift,
            marks: (0..tasks).map(|_| AtomicI64::new(i64::MAX)).collect(),
            waiting: Mutex::new(Vec::new()),
        }
    }

    /// The slowest task's watermark.
    fn min(&self) -> i64 {
        self.marks
            .iter()
            .map(|m| m.load(Ordering::SeqCst))
            .min()
            .unwrap_or(i64::MAX)
    }

    /// The watermark a task may emit up to: the slowest task's plus the drift.
    pub(crate) fn limit(&self) -> i64 {
        self.min().saturating_add(self.drift)
    }

    /// Whether a task at `watermark` must wait for the others.
    pub(crate) fn holds(&self, watermark: i64) -> bool {
        watermark != i64::MAX && watermark > self.limit()
    }

    /// Task `slot`'s watermark is now `watermark`; wakes the waiting tasks when that raised
    /// the slowest task's. (Of concurrent publishes that raise it together, the last one to
    /// swap sees the rise.)
    pub(crate) fn publish(&self, slot: usize, watermark: i64) {
        let Some(mark) = self.marks.get(slot) else {
            return;
        };
        if mark.load(Ordering::SeqCst) == watermark {
            return;
        }
        let min_before = self.min();
        let before = mark.swap(watermark, Ordering::SeqCst);
        if watermark > before && self.min() > min_before {
            let waiting = match self.waiting.lock() {
                Ok(mut w) => std::mem::take(&mut *w),
                Err(_) => return,
            };
            for w in waiting {
                w.do_send(Wake);
            }
        }
    }

    /// Registers `waiter` for the next [`Wake`]. The caller checks [`AlignGroup::holds`] again
    /// afterwards: a rise published before the registration wakes nobody.
    pub(crate) fn wait(&self, waiter: Recipient<Wake>) {
        if let Ok(mut w) = self.waiting.lock() {
            w.push(waiter);
        }
    }
}

/// The alignment groups of a run, by component index: one per spout component whose event
/// time sets a maximum drift.
pub(crate) fn groups(ir: &TopologyIr) -> FxHashMap<usize, std::sync::Arc<AlignGroup>> {
    ir.components
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == ComponentKind::Spout)
        .filter_map(|(i, c)| {
            let drift = c.event_time.as_ref()?.max_drift_ms?;
            let group = AlignGroup::new(drift, c.parallelism as usize);
            Some((i, std::sync::Arc::new(group)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_task_waits_and_the_slowest_never_does() {
        let g = AlignGroup::new(100, 3);
        assert!(
            !g.holds(i64::MIN),
            "everyone starts at the beginning of time"
        );
        assert!(!g.holds(500), "nobody published yet");
        g.publish(0, 500);
        g.publish(1, 50);
        assert_eq!(
            g.limit(),
            150,
            "task 2 runs elsewhere: it holds nobody back"
        );
        assert!(g.holds(500));
        assert!(!g.holds(50), "the slowest task goes on");
        // Task 0 waits; a rise of the slowest task wakes it, a rise of another does not.
        let (tx, rx) = std::sync::mpsc::channel();
        let system = actix::System::new();
        let waiter = system.block_on(async move {
            struct W(std::sync::mpsc::Sender<()>);
            impl actix::Actor for W {
                type Context = actix::Context<Self>;
            }
            impl actix::Handler<Wake> for W {
                type Result = ();
                fn handle(&mut self, _: Wake, _: &mut actix::Context<Self>) {
                    let _ = self.0.send(());
                }
            }
            actix::Actor::start(W(tx)).recipient()
        });
        // Runs the actor for up to `ms`, or until it was woken.
        let woken = |ms: u64| {
            system.block_on(async {
                let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms);
                while std::time::Instant::now() < deadline {
                    if rx.try_recv().is_ok() {
                        return true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                false
            })
        };
        g.wait(waiter.clone());
        g.publish(0, 600);
        g.publish(1, 450);
        assert!(woken(5_000), "the slowest task's rise woke it");
        g.wait(waiter);
        g.publish(0, 700);
        assert!(!woken(50), "task 0's own rise did not");
        g.publish(0, 500);
        assert!(!g.holds(500));
        // An idle or done task holds nobody back.
        g.publish(1, i64::MAX);
        assert_eq!(g.limit(), 600, "task 0 alone counts");
        g.publish(0, i64::MAX);
        assert!(!g.holds(i64::MAX - 1), "nobody holds anybody back");
    }
}
