//! The built topology is plain serde data that prints and draws.

mod common;

use common::*;
use tempest_dsl::*;

fn topology() -> Topology {
    let mut t = TopologyBuilder::new("wc");
    let lines = t.add(spout("lines", Lines).parallelism(2).stream("side"));
    let words = t.add(bolt("split", Split).parallelism(3).shuffle(&lines));
    t.add(
        bolt("sink", WordSink)
            .fields(&words, ["word", "ts"])
            .parallelism(2),
    );
    t.add(bolt("by-key", WordSink).key_by(&words.stream("default"), |w: &Word| w.word.clone()));
    t.guarantee(Guarantee::AtLeastOnce).build().expect("valid")
}

#[test]
fn ir_round_trips_through_serde() {
    let ir = topology().ir().clone();
    let json = serde_json::to_string(&ir).expect("serializes");
    let back: TopologyIr = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, ir);
    back.validate().expect("a deserialized IR validates alike");
}

#[test]
fn ir_validation_catches_what_by_name_edits_break() {
    let mut ir = topology().ir().clone();
    ir.components[1].inputs[0].component = "gone".into();
    let errs = ir.validate().expect_err("invalid");
    assert_eq!(
        errs.0,
        [TopologyError::UnknownComponent {
            component: "split".into(),
            upstream: "gone".into()
        }]
    );
}

#[test]
fn display_is_readable() {
    let text = topology().to_string();
    let expected = "\
topology `wc` (at-least-once, 8 tasks)
  spout `lines` x2
    -> default Line { text: Str }
    -> side Line { text: Str }
  bolt `split` x3 takes Line
    <- lines.default (shuffle)
    -> default Word { word: Str, ts: Int, extra: Opaque }
  bolt `sink` x2 takes Word
    <- split.default (fields(word, ts))
    -> default Word { word: Str, ts: Int, extra: Opaque }
  bolt `by-key` x1 takes Word
    <- split.default (key-by)
    -> default Word { word: Str, ts: Int, extra: Opaque }
";
    assert_eq!(text, expected);
}

#[test]
fn dot_has_a_node_per_component_and_an_edge_per_subscription() {
    let dot = topology().to_dot();
    let expected = r#"digraph "wc" {
  rankdir=LR;
  "lines" [shape=invhouse, label="lines\nx2"];
  "split" [shape=box, label="split\nx3"];
  "sink" [shape=box, label="sink\nx2"];
  "by-key" [shape=box, label="by-key\nx1"];
  "lines" -> "split" [label="shuffle"];
  "split" -> "sink" [label="fields(word, ts)"];
  "split" -> "by-key" [label="key-by"];
}
"#;
    assert_eq!(dot, expected);
}
