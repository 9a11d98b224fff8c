//! A slow bolt slows its spout: queues stay within their credit bounds.

mod common;

use std::time::Duration;

use common::*;
use tempest_dsl::*;

#[derive(Clone)]
struct Slow;

impl Bolt for Slow {
    type In = N;
    type Out = N;
    fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<N>) -> Result<(), TaskError> {
        std::thread::sleep(Duration::from_micros(50));
        out.emit(t.into_value());
        Ok(())
    }
}

#[test]
fn a_slow_bolt_bounds_every_queue() -> anyhow::Result<()> {
    const BATCH: usize = 16;
    const CREDIT: usize = 2;
    const TOTAL: u64 = 3_000;
    let (sink, rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("slow");
    let numbers = t.add(spout("numbers", Numbers::new(TOTAL)).parallelism(2));
    let passed = t.add(bolt("pass", Pass).parallelism(2).shuffle(&numbers));
    let slow = t.add(bolt("slow", Slow).shuffle(&passed));
    t.add(bolt("sink", sink).shuffle(&slow));
    let topology = t
        .config(TopologyConfig {
            batch_size: BATCH,
            queue_batches: CREDIT,
            ..TopologyConfig::default()
        })
        .build()?;
    let running = cluster(2).start(topology)?;

    tracing::info!("--- while the slow bolt works, the spouts cannot run ahead of it");
    let mut max_gap = 0u64;
    while !running.wait_timeout(Duration::from_millis(2)) {
        // One snapshot, so both counters are read at the same moment.
        let m = running.metrics();
        let of = |name: &str| m.iter().find(|(c, _)| c == name).map(|(_, s)| s);
        let emitted = of("numbers").map_or(0, |s| s.emitted);
        let slow_done = of("slow").map_or(0, |s| s.executed);
        max_gap = max_gap.max(emitted.saturating_sub(slow_done));
    }
    let report = running.wait()?;
    assert_eq!(all_items(&rx).len() as u64, TOTAL);

    // The slow bolt has 2 upstream tasks with CREDIT batches each in flight.
    let slow = report.component("slow").expect("slow");
    let bound = (2 * CREDIT * BATCH) as u64;
    assert!(
        slow.metrics.queue_max <= bound,
        "queue {} over its bound {bound}",
        slow.metrics.queue_max
    );
    // What the spouts emitted but the slow bolt had not executed: the queues in between (pass's
    // and slow's), the batches waiting in pass's outboxes, and one spout round per spout task.
    let in_flight_bound = (2 * 2 * CREDIT * BATCH + 2 * CREDIT * BATCH + 2 * 2 * BATCH * 2) as u64;
    assert!(
        max_gap <= in_flight_bound,
        "spouts ran {max_gap} tuples ahead of the slow bolt (bound {in_flight_bound})"
    );
    assert!(max_gap > 0, "the watcher never saw a run in progress");
    Ok(())
}
