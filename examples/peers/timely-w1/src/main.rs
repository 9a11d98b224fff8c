//! W1 word count in timely-dataflow 0.32, for a side-by-side comparison with
//! `tempest bench wordcount`: sentences of 10 words over 1000 distinct words, split, counted per
//! word after an exchange by word hash, and every running count sunk; two workers.
//!
//! `cargo run --release -- 3000000` (add `--features mi` for mimalloc) prints one line with
//! `words_rate` and `ok` (every word reached the sink).
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Input, Inspect, Operator, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

#[cfg(feature = "mi")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn word(i: u64, j: u64) -> u64 {
    (i * 7919 + j * 104729) % 1000
}

fn hash(s: &str) -> u64 {
    let mut h = 0xcbf29ce484222325u64;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn main() {
    let n: u64 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 3_000_000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("error: the sentence count must be a number: {e}");
            std::process::exit(2);
        }
    };
    let sunk = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let s2 = sunk.clone();
    timely::execute(timely::Config::process(2), move |worker| {
        let index = worker.index() as u64;
        let peers = worker.peers() as u64;
        let mut input = InputHandle::new();
        let probe = ProbeHandle::new();
        let sunk = s2.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            scope
                .input_from(&mut input)
                .flat_map(|s: String| s.split(' ').map(|w| w.to_owned()).collect::<Vec<_>>())
                .unary::<timely::container::CapacityContainerBuilder<Vec<(String, u64)>>, _, _, _>(
                    Exchange::new(|w: &String| hash(w)),
                    "count",
                    move |_, _| {
                        let mut counts: HashMap<String, u64> = HashMap::new();
                        move |input, output| {
                            input.for_each(|time, data: &mut Vec<String>| {
                                let mut session = output.session(&time);
                                for w in data.drain(..) {
                                    let e = counts.entry(w.clone()).or_insert(0);
                                    *e += 1;
                                    session.give((w, *e));
                                }
                            });
                        }
                    },
                )
                .inspect_core(move |x| {
                    if let Ok((_, data)) = x {
                        sunk.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                })
                .probe_with(&probe);
        });
        let mut i = index;
        let mut round = 0u64;
        while i < n {
            for _ in 0..1024 {
                if i >= n {
                    break;
                }
                let mut s = String::with_capacity(48);
                for j in 0..10 {
                    if j > 0 {
                        s.push(' ');
                    }
                    s.push('w');
                    {
                        use std::fmt::Write;
                        let _ = write!(s, "{}", word(i, j));
                    }
                }
                input.send(s);
                i += peers;
            }
            round += 1;
            input.advance_to(round);
            // keep at most a few rounds in flight
            while probe.less_than(&round.saturating_sub(4)) {
                worker.step();
            }
        }
        input.close();
        while worker.step() {}
    })
    .expect("timely runs");
    let secs = start.elapsed().as_secs_f64();
    let words = sunk.load(Ordering::Relaxed);
    println!(
        "timely W1 sentences={n} seconds={secs:.3} words_rate={:.0}/s ok={}",
        words as f64 / secs,
        words == n * 10
    );
}
