//! How runs start, end, drain and fail.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use tempest_dsl::*;
use tempest_runtime::{LocalCluster, LocalOptions, RuntimeError};

#[test]
fn drain_ends_an_endless_run_without_losing_what_was_emitted() -> anyhow::Result<()> {
    let (sink, rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("endless");
    let numbers = t.add(spout("numbers", Numbers::endless()).parallelism(2));
    let passed = t.add(bolt("pass", Pass).parallelism(2).shuffle(&numbers));
    t.add(bolt("sink", sink).parallelism(2).shuffle(&passed));
    let running = cluster(2).start(t.build()?)?;

    tracing::info!("--- let it run until the sink has seen something, then drain");
    let seen = wait_until(Duration::from_secs(30), || {
        running
            .component_metrics("sink")
            .is_some_and(|m| m.executed > 10_000)
    });
    assert!(seen, "the sink saw nothing in 30 s");
    running.drain();
    let report = running.wait()?;

    assert!(report.drained);
    let emitted = report.component("numbers").map(|c| c.metrics.emitted);
    let items = all_items(&rx);
    assert_eq!(Some(items.len() as u64), emitted, "drain lost tuples");
    // Each spout task emits its residue class in order, so what arrived is a prefix of each.
    for task in 0..2u64 {
        let mine: Vec<u64> = items
            .iter()
            .map(|x| x.n)
            .filter(|n| n % 2 == task)
            .collect();
        let want: Vec<u64> = (0..mine.len() as u64).map(|i| i * 2 + task).collect();
        assert_eq!(mine, want);
    }
    Ok(())
}

#[test]
fn drain_before_start_ends_at_once() -> anyhow::Result<()> {
    let (sink, _rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("quick");
    let numbers = t.add(spout("numbers", Numbers::endless()));
    t.add(bolt("sink", sink).shuffle(&numbers));
    let running = cluster(1).start(t.build()?)?;
    running.drain();
    let report = running.wait()?;
    assert!(report.drained);
    // An endless spout drained at once: it stopped, everything it emitted reached the sink
    // before the run ended, and the run did not wait for anything.
    let emitted = report.component("numbers").map(|c| c.metrics.emitted);
    let received = report.component("sink").map(|c| c.metrics.executed);
    assert_eq!(emitted, received);
    assert!(report.elapsed < std::time::Duration::from_secs(10));
    Ok(())
}

#[test]
fn a_panicking_bolt_stops_the_run_with_its_message() -> anyhow::Result<()> {
    #[derive(Clone)]
    struct Boom;
    impl Bolt for Boom {
        type In = N;
        type Out = N;
        fn execute(&mut self, t: Tuple<N>, _out: &mut Emitter<N>) -> Result<(), TaskError> {
            if t.n == 77 {
                panic!("boom at 77");
            }
            Ok(())
        }
    }
    let mut t = TopologyBuilder::new("panics");
    let numbers = t.add(spout("numbers", Numbers::endless()));
    t.add(bolt("boom", Boom).shuffle(&numbers));
    match run(t.build()?, 2) {
        Err(RuntimeError::TaskFailed {
            component, error, ..
        }) => {
            assert_eq!(component, "boom");
            assert!(error.contains("boom at 77"), "{error}");
        }
        other => panic!("expected a task failure, got {other:?}"),
    }
    Ok(())
}

#[test]
fn a_failing_open_stops_the_run() -> anyhow::Result<()> {
    #[derive(Clone)]
    struct NoSource;
    impl Spout for NoSource {
        type Out = N;
        fn open(&mut self, _ctx: &TaskContext) -> Result<(), TaskError> {
            Err(TaskError::new("cannot reach the source"))
        }
        fn next(&mut self, _out: &mut SpoutEmitter<N>) -> Result<SpoutStatus, TaskError> {
            Ok(SpoutStatus::Done)
        }
    }
    let mut t = TopologyBuilder::new("no-source");
    let numbers = t.add(spout("numbers", NoSource));
    t.add(bolt("pass", Pass).shuffle(&numbers));
    let err = run(t.build()?, 1).expect_err("open fails");
    assert!(err.to_string().contains("cannot reach the source"), "{err}");
    Ok(())
}

#[test]
fn a_failing_prepare_stops_the_run() -> anyhow::Result<()> {
    #[derive(Clone)]
    struct NoDb;
    impl Bolt for NoDb {
        type In = N;
        type Out = N;
        fn prepare(&mut self, _ctx: &TaskContext) -> Result<(), TaskError> {
            Err(TaskError::new("no database"))
        }
        fn execute(&mut self, _t: Tuple<N>, _out: &mut Emitter<N>) -> Result<(), TaskError> {
            Ok(())
        }
    }
    let mut t = TopologyBuilder::new("no-db");
    let numbers = t.add(spout("numbers", Numbers::endless()));
    t.add(bolt("db", NoDb).shuffle(&numbers));
    let err = run(t.build()?, 1).expect_err("prepare fails");
    match err {
        RuntimeError::TaskFailed {
            component, error, ..
        } => {
            assert_eq!(component, "db");
            assert!(error.contains("no database"));
        }
        other => panic!("unexpected {other}"),
    }
    Ok(())
}

#[test]
fn execute_errors_fail_their_tuples_and_are_counted() -> anyhow::Result<()> {
    #[derive(Clone)]
    struct OddFails;
    impl Bolt for OddFails {
        type In = N;
        type Out = N;
        fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<N>) -> Result<(), TaskError> {
            if t.n % 2 == 1 {
                return Err(TaskError::new("odd"));
            }
            out.emit(t.into_value());
            Ok(())
        }
    }
    let (sink, rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("errors");
    let numbers = t.add(spout("numbers", Numbers::new(1000)));
    let evens = t.add(bolt("odd-fails", OddFails).parallelism(2).shuffle(&numbers));
    t.add(bolt("sink", sink).shuffle(&evens));
    let report = run(t.build()?, 2)?;
    let c = report.component("odd-fails").expect("component");
    assert_eq!((c.metrics.executed, c.metrics.failed), (1000, 500));
    assert_eq!(all_items(&rx).len(), 500);
    Ok(())
}

#[test]
fn ticks_reach_a_bolt_that_asks_for_them() -> anyhow::Result<()> {
    // The spout idles until the bolt has ticked three times, then ends the run.
    #[derive(Clone)]
    struct UntilTicks(Shared);
    impl Spout for UntilTicks {
        type Out = N;
        fn next(&mut self, _out: &mut SpoutEmitter<N>) -> Result<SpoutStatus, TaskError> {
            Ok(if self.0.count() >= 3 {
                SpoutStatus::Done
            } else {
                SpoutStatus::Idle
            })
        }
    }
    #[derive(Clone)]
    struct Ticker(Shared);
    impl Bolt for Ticker {
        type In = N;
        type Out = N;
        fn execute(&mut self, _t: Tuple<N>, _out: &mut Emitter<N>) -> Result<(), TaskError> {
            Ok(())
        }
        fn tick(&mut self, out: &mut Emitter<N>) -> Result<(), TaskError> {
            let n = self.0.count.fetch_add(1, Ordering::SeqCst);
            out.emit(N { n });
            Ok(())
        }
    }
    let shared = Shared::default();
    let (sink, rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("ticks");
    let source = t.add(spout("source", UntilTicks(shared.clone())));
    let ticks = t.add(
        bolt("ticker", Ticker(shared.clone()))
            .tick_every(Duration::from_millis(5))
            .shuffle(&source),
    );
    t.add(bolt("sink", sink).shuffle(&ticks));
    run(t.build()?, 2)?;
    let items = all_items(&rx);
    assert!(items.len() >= 3, "{items:?}");
    assert_eq!(items[..3], [N { n: 0 }, N { n: 1 }, N { n: 2 }]);
    Ok(())
}

#[test]
fn spout_errors_back_off_and_are_counted() -> anyhow::Result<()> {
    #[derive(Clone)]
    struct Flaky(u32);
    impl Spout for Flaky {
        type Out = N;
        fn next(&mut self, out: &mut SpoutEmitter<N>) -> Result<SpoutStatus, TaskError> {
            self.0 += 1;
            match self.0 {
                1..=3 => Err(TaskError::new("source hiccup")),
                4..=13 => {
                    out.emit(N {
                        n: u64::from(self.0),
                    });
                    Ok(SpoutStatus::Active)
                }
                _ => Ok(SpoutStatus::Done),
            }
        }
    }
    let (sink, rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("flaky");
    let source = t.add(spout("flaky", Flaky(0)));
    t.add(bolt("sink", sink).shuffle(&source));
    let report = run(t.build()?, 1)?;
    assert_eq!(report.component("flaky").map(|c| c.metrics.failed), Some(3));
    assert_eq!(all_items(&rx).len(), 10);
    Ok(())
}

#[test]
fn options_are_validated() {
    let err = LocalCluster::new(LocalOptions {
        workers: 0,
        metrics_interval: None,
        ..LocalOptions::default()
    })
    .expect_err("zero workers");
    assert!(err.to_string().contains("workers"), "{err}");
}

#[test]
fn exactly_once_refuses_a_sink_that_is_not_idempotent() {
    let mut t = TopologyBuilder::new("eo");
    let numbers = t.add(spout("numbers", Numbers::new(1)));
    t.add(bolt("pass", Pass).shuffle(&numbers));
    let err = t
        .guarantee(Guarantee::ExactlyOnce)
        .build()
        .expect_err("refused");
    assert!(
        err.to_string()
            .contains("`pass`: exactly-once requires an idempotent sink"),
        "{err}"
    );
}
