//! Each grouping, end to end through the local runtime.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use serde::{Deserialize, Serialize};
use tempest_dsl::*;

const N: u64 = 5_000;

fn expected(n: u64) -> Vec<N> {
    (0..n).map(|n| N { n }).collect()
}

#[test]
fn shuffle_delivers_everything_evenly() -> anyhow::Result<()> {
    tracing::info!("--- a 2-task spout feeds a 3-task bolt through shuffle");
    let (sink, rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("shuffle");
    let numbers = t.add(spout("numbers", Numbers::new(N)).parallelism(2));
    let passed = t.add(bolt("pass", Pass).parallelism(3).shuffle(&numbers));
    t.add(bolt("sink", sink).parallelism(3).shuffle(&passed));
    let report = run(t.build()?, 2)?;

    let per_task = collected(&rx);
    assert_eq!(per_task.len(), 3);
    let mut items: Vec<N> = per_task.iter().flat_map(|c| c.items.clone()).collect();
    items.sort_by_key(|x| x.n);
    assert_eq!(items, expected(N));
    for c in &per_task {
        // Two senders round-robin over three tasks: within one batch of each sender.
        let share = c.items.len() as i64;
        assert!((share - (N as i64 / 3)).abs() <= 2, "uneven: {share}");
    }
    assert_eq!(
        report.component("pass").map(|c| c.metrics.executed),
        Some(N)
    );
    assert_eq!(
        report.component("numbers").map(|c| c.metrics.emitted),
        Some(N)
    );
    Ok(())
}

#[test]
fn fields_grouping_keeps_each_key_on_one_task() -> anyhow::Result<()> {
    #[derive(Clone, Debug, Serialize, Deserialize, Record)]
    struct Keyed {
        key: String,
        n: u64,
    }
    #[derive(Clone)]
    struct ToKeyed;
    impl Bolt for ToKeyed {
        type In = N;
        type Out = Keyed;
        fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<Keyed>) -> Result<(), TaskError> {
            out.emit(Keyed {
                key: format!("k{}", t.n % 37),
                n: t.n,
            });
            Ok(())
        }
    }

    let (sink, rx) = Collect::<Keyed>::new();
    let mut t = TopologyBuilder::new("fields");
    let numbers = t.add(spout("numbers", Numbers::new(N)).parallelism(2));
    let keyed = t.add(bolt("key", ToKeyed).parallelism(2).shuffle(&numbers));
    t.add(bolt("sink", sink).parallelism(4).fields(&keyed, ["key"]));
    run(t.build()?, 2)?;

    let mut owner: HashMap<String, u32> = HashMap::new();
    let mut total = 0;
    let per_task = collected(&rx);
    assert_eq!(per_task.len(), 4, "every sink task reports");
    for c in per_task {
        for item in c.items {
            total += 1;
            let prev = owner.insert(item.key.clone(), c.task_index);
            assert!(
                prev.is_none() || prev == Some(c.task_index),
                "key {} reached tasks {prev:?} and {}",
                item.key,
                c.task_index
            );
            // The same key goes where the seedless hash says, in every process.
            let want = routing::reduce(stable_hash_of(item.key.as_str()), 4);
            assert_eq!(c.task_index, want);
        }
    }
    assert_eq!(total, N);
    assert_eq!(owner.len(), 37);
    Ok(())
}

#[test]
fn key_by_groups_like_fields() -> anyhow::Result<()> {
    let (sink, rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("key-by");
    let numbers = t.add(spout("numbers", Numbers::new(N)));
    t.add(
        bolt("sink", sink)
            .parallelism(3)
            .key_by(&numbers, |x: &N| x.n % 10),
    );
    run(t.build()?, 2)?;
    let mut total = 0;
    for c in collected(&rx) {
        let keys: HashSet<u64> = c.items.iter().map(|x| x.n % 10).collect();
        for k in &keys {
            assert_eq!(routing::reduce(stable_hash_of(k), 3), c.task_index);
        }
        total += c.items.len() as u64;
    }
    assert_eq!(total, N);
    Ok(())
}

#[test]
fn all_grouping_reaches_every_task() -> anyhow::Result<()> {
    let (sink, rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("all");
    let numbers = t.add(spout("numbers", Numbers::new(500)).parallelism(2));
    t.add(bolt("sink", sink).parallelism(3).all(&numbers));
    run(t.build()?, 2)?;
    let per_task = collected(&rx);
    assert_eq!(per_task.len(), 3);
    for c in per_task {
        let mut items = c.items;
        items.sort_by_key(|x| x.n);
        assert_eq!(items, expected(500), "task {}", c.task_index);
    }
    Ok(())
}

#[test]
fn global_grouping_reaches_only_the_lowest_task() -> anyhow::Result<()> {
    let (sink, rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("global");
    let numbers = t.add(spout("numbers", Numbers::new(500)).parallelism(2));
    t.add(bolt("sink", sink).parallelism(3).global(&numbers));
    run(t.build()?, 2)?;
    let per_task = collected(&rx);
    assert_eq!(per_task.len(), 3, "every sink task reports");
    assert_eq!(per_task[0].items.len(), 500);
    assert!(per_task[1].items.is_empty() && per_task[2].items.is_empty());
    Ok(())
}

#[test]
fn direct_grouping_reaches_the_chosen_task() -> anyhow::Result<()> {
    #[derive(Clone)]
    struct Director;
    impl Bolt for Director {
        type In = N;
        type Out = N;
        fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<N>) -> Result<(), TaskError> {
            let target = (t.n % 3) as u32;
            out.emit_direct("picked", target, t.into_value())
        }
    }
    let (sink, rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("direct");
    let numbers = t.add(spout("numbers", Numbers::new(900)));
    let directed = t.add(
        bolt("director", Director)
            .parallelism(2)
            .direct_stream("picked")
            .shuffle(&numbers),
    );
    t.add(
        bolt("sink", sink)
            .parallelism(3)
            .direct(&directed.stream("picked")),
    );
    run(t.build()?, 2)?;
    let per_task = collected(&rx);
    assert_eq!(per_task.len(), 3, "every sink task reports");
    for c in &per_task {
        assert_eq!(c.items.len(), 300);
        assert!(c.items.iter().all(|x| (x.n % 3) as u32 == c.task_index));
    }
    Ok(())
}

#[test]
fn direct_emit_to_a_missing_task_fails_the_tuple() -> anyhow::Result<()> {
    #[derive(Clone)]
    struct Overshoot;
    impl Bolt for Overshoot {
        type In = N;
        type Out = N;
        fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<N>) -> Result<(), TaskError> {
            out.emit_direct("picked", 5, t.into_value())
        }
    }
    let (sink, rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("direct-bad");
    let numbers = t.add(spout("numbers", Numbers::new(10)));
    let directed = t.add(
        bolt("over", Overshoot)
            .direct_stream("picked")
            .shuffle(&numbers),
    );
    t.add(
        bolt("sink", sink)
            .parallelism(2)
            .direct(&directed.stream("picked")),
    );
    let report = run(t.build()?, 2)?;
    assert_eq!(report.component("over").map(|c| c.metrics.failed), Some(10));
    assert!(all_items(&rx).is_empty());
    Ok(())
}

#[test]
fn local_or_shuffle_delivers_everything() -> anyhow::Result<()> {
    let (sink, rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("local");
    let numbers = t.add(spout("numbers", Numbers::new(N)).parallelism(2));
    t.add(bolt("sink", sink).parallelism(2).local_or_shuffle(&numbers));
    run(t.build()?, 2)?;
    let per_task = collected(&rx);
    assert_eq!(per_task.len(), 2, "every sink task reports");
    // Spout task i and sink task i share worker i, so each sink gets its own spout's half.
    for c in &per_task {
        assert!(c.items.iter().all(|x| x.n % 2 == u64::from(c.task_index)));
    }
    let mut items: Vec<N> = per_task.into_iter().flat_map(|c| c.items).collect();
    items.sort_by_key(|x| x.n);
    assert_eq!(items, expected(N));
    Ok(())
}

#[test]
fn named_streams_route_separately() -> anyhow::Result<()> {
    let (evens, even_rx) = Collect::<N>::new();
    let (odds, odd_rx) = Collect::<N>::new();
    let mut t = TopologyBuilder::new("streams");
    let numbers = t.add(spout("numbers", Numbers::new(100).odd_to("odd")).stream("odd"));
    t.add(bolt("evens", evens).shuffle(&numbers));
    t.add(bolt("odds", odds).shuffle(&numbers.stream("odd")));
    run(t.build()?, 2)?;
    let evens = all_items(&even_rx);
    let odds = all_items(&odd_rx);
    assert_eq!(evens.len(), 50);
    assert_eq!(odds.len(), 50);
    assert!(evens.iter().all(|x| x.n % 2 == 0));
    assert!(odds.iter().all(|x| x.n % 2 == 1));
    Ok(())
}

#[test]
fn fan_in_through_from_impls() -> anyhow::Result<()> {
    #[derive(Clone, Debug, Serialize, Deserialize, Record)]
    struct Text {
        text: String,
    }
    #[derive(Clone, Debug, Serialize, Deserialize, Record)]
    enum Either {
        Number(u64),
        Text(String),
    }
    impl From<N> for Either {
        fn from(x: N) -> Self {
            Either::Number(x.n)
        }
    }
    impl From<Text> for Either {
        fn from(x: Text) -> Self {
            Either::Text(x.text)
        }
    }
    #[derive(Clone)]
    struct ToText;
    impl Bolt for ToText {
        type In = N;
        type Out = Text;
        fn execute(&mut self, t: Tuple<N>, out: &mut Emitter<Text>) -> Result<(), TaskError> {
            out.emit(Text {
                text: t.n.to_string(),
            });
            Ok(())
        }
    }
    let (sink, rx) = Collect::<Either>::new();
    let mut t = TopologyBuilder::new("fan-in");
    let numbers = t.add(spout("numbers", Numbers::new(20)));
    let texts = t.add(bolt("text", ToText).shuffle(&numbers));
    t.add(bolt("sink", sink).shuffle(&numbers).shuffle(&texts));
    run(t.build()?, 2)?;
    let items: Vec<Either> = rx.try_iter().flat_map(|c| c.items).collect();
    let numbers = items
        .iter()
        .filter(|e| matches!(e, Either::Number(_)))
        .count();
    let texts = items
        .iter()
        .filter(|e| matches!(e, Either::Text(_)))
        .count();
    assert_eq!((numbers, texts), (20, 20));
    Ok(())
}
