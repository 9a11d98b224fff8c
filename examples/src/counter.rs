//! The exactly-once counter, registered as `counter`: reads JSON lines `{"key": K, "value": V}`
//! from a file, counts the records of each key in a replicated stateful bolt, and writes
//! `{"key": K, "count": C}` for every input record through the idempotent file sink.
//!
//! ```text
//! input (JsonLinesSource) --fields(key)--> count (stateful, replicated) --shuffle--> output
//!                                                                      (IdempotentFileSink)
//! ```
//!
//! Under exactly-once, whatever node processes are SIGKILLed and restarted meanwhile, the
//! output directory ends up holding, for each key, exactly the counts 1..n (n = its records in
//! the input), each once: one file per input record, named by its tuple id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tempest_dsl::connectors::{IdempotentFileSink, JsonLinesSource};
use tempest_dsl::*;
use tempest_runtime::cluster::TopologyArgs;

/// An input record: its key (its other fields, such as `value`, are ignored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Record)]
pub struct Keyed {
    /// The key counted.
    pub key: String,
}

/// An output record: the key and its count so far, one per input record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Record)]
pub struct KeyCount {
    /// The key.
    pub key: String,
    /// Its records up to and including this one.
    pub count: u64,
}

/// Counts records per key in its (replicated) state.
#[derive(Clone, Debug, Default)]
pub struct CountPerKey;

impl StatefulBolt for CountPerKey {
    type In = Keyed;
    type Out = KeyCount;
    type State = KeyedState<String, u64>;

    fn execute(
        &self,
        counts: &mut KeyedState<String, u64>,
        t: Tuple<Keyed>,
        out: &mut StateEmitter<KeyCount>,
    ) -> Result<(), TaskError> {
        let key = t.into_value().key;
        let count = counts.entry(key.clone()).or_default();
        *count += 1;
        out.emit(KeyCount { key, count: *count });
        Ok(())
    }
}

/// How to build the counter.
#[derive(Clone, Debug, PartialEq)]
pub struct Counter {
    /// The JSON-lines input file.
    pub input: PathBuf,
    /// The output directory.
    pub output: PathBuf,
    /// Replicas of each count task's state.
    pub replicas: u32,
    /// Where the replicas keep their logs.
    pub state: StateStorage,
    /// Count tasks (Raft groups).
    pub parallelism: u32,
}

impl Counter {
    /// Reads the arguments: `input` and `output` (required), `replicas` (3), `state` (disk),
    /// `parallelism` (2).
    pub fn from_args(args: &TopologyArgs) -> Result<Self, String> {
        let required = |k: &str| {
            args.get(k)
                .map(PathBuf::from)
                .ok_or_else(|| format!("argument `{k}` is required"))
        };
        Ok(Counter {
            input: required("input")?,
            output: required("output")?,
            replicas: args.parse_or("replicas", 3u32)?,
            state: args.parse_or("state", StateStorage::Disk)?,
            parallelism: args.parse_or("parallelism", 2u32)?,
        })
    }

    /// Builds the topology, exactly-once.
    pub fn topology(&self) -> Result<Topology, BuildErrors> {
        let mut t = TopologyBuilder::new("counter");
        let input = t.add(spout("input", JsonLinesSource::<Keyed>::new(&self.input)));
        let counts = t.add(
            stateful("count", CountPerKey)
                .parallelism(self.parallelism)
                .fields(&input, ["key"])
                .replicas(self.replicas)
                .state(self.state),
        );
        t.add(bolt("output", IdempotentFileSink::<KeyCount>::new(&self.output)).shuffle(&counts));
        let config = TopologyConfig {
            message_timeout: std::time::Duration::from_secs(5),
            ..TopologyConfig::default()
        };
        t.guarantee(Guarantee::ExactlyOnce).config(config).build()
    }
}

/// What an output directory holds, checked against the input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterCheck {
    /// Input records per key.
    pub expected: BTreeMap<String, u64>,
    /// Output files read.
    pub outputs: u64,
    /// Keys whose counts are not exactly 1..n, each once.
    pub wrong_keys: Vec<String>,
    /// Output files that do not parse.
    pub unreadable: u64,
}

impl CounterCheck {
    /// Whether the output is exactly right.
    pub fn ok(&self) -> bool {
        self.wrong_keys.is_empty()
            && self.unreadable == 0
            && self.outputs == self.expected.values().sum::<u64>()
    }
}

/// Checks `output` against `input`: for each key of the input, the counts 1..n, each once.
pub fn check(input: &Path, output: &Path) -> std::io::Result<CounterCheck> {
    let mut c = CounterCheck::default();
    for line in std::fs::read_to_string(input)?.lines() {
        if let Ok(k) = serde_json::from_str::<Keyed>(line) {
            *c.expected.entry(k.key).or_default() += 1;
        }
    }
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for entry in std::fs::read_dir(output)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        c.outputs += 1;
        match serde_json::from_str::<KeyCount>(&std::fs::read_to_string(&path)?) {
            Ok(kc) => seen.entry(kc.key).or_default().push(kc.count),
            Err(_) => c.unreadable += 1,
        }
    }
    for (key, n) in &c.expected {
        let mut counts = seen.remove(key).unwrap_or_default();
        counts.sort_unstable();
        if counts != (1..=*n).collect::<Vec<_>>() {
            c.wrong_keys.push(key.clone());
        }
    }
    c.wrong_keys.extend(seen.into_keys());
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arguments_are_read_and_the_topology_builds_exactly_once() {
        let args = TopologyArgs(
            [
                ("input", "/in.jsonl"),
                ("output", "/out"),
                ("replicas", "5"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        let c = Counter::from_args(&args).expect("parses");
        assert_eq!(
            (c.replicas, c.state, c.parallelism),
            (5, StateStorage::Disk, 2)
        );
        let t = c.topology().expect("builds");
        assert_eq!(t.ir().guarantee, Guarantee::ExactlyOnce);
        assert!(Counter::from_args(&TopologyArgs(BTreeMap::new())).is_err());
    }

    #[test]
    fn the_check_wants_each_count_once() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let input = dir.path().join("in.jsonl");
        std::fs::write(
            &input,
            "{\"key\":\"a\",\"value\":1}\n{\"key\":\"a\"}\n{\"key\":\"b\"}\n",
        )?;
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out)?;
        let write = |name: &str, key: &str, count: u64| {
            std::fs::write(
                out.join(name),
                serde_json::to_string(&KeyCount {
                    key: key.into(),
                    count,
                })
                .unwrap_or_default(),
            )
        };
        write("1.json", "a", 1)?;
        write("2.json", "a", 2)?;
        assert!(!check(&input, &out)?.ok(), "b is missing");
        write("3.json", "b", 1)?;
        assert!(check(&input, &out)?.ok());
        write("4.json", "a", 2)?;
        let c = check(&input, &out)?;
        assert_eq!(c.wrong_keys, ["a"], "a count twice");
        Ok(())
    }
}
