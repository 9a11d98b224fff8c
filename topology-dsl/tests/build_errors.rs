//! `build()` reports each kind of mistake, and all of them at once.

mod common;

use std::time::Duration;

use common::*;
use tempest_dsl::*;

fn errors(t: TopologyBuilder) -> Vec<TopologyError> {
    match t.build() {
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    }
}

fn with_spout(name: &str) -> (TopologyBuilder, Handle<Line>) {
    let mut t = TopologyBuilder::new("test");
    let h = t.add(spout(name, Lines));
    (t, h)
}

#[test]
fn a_valid_topology_builds() {
    let (mut t, lines) = with_spout("lines");
    let words = t.add(bolt("split", Split).parallelism(3).shuffle(&lines));
    t.add(bolt("sink", WordSink).fields(&words, ["word"]));
    let topology = t.build().expect("valid");
    assert_eq!(topology.ir().task_count(), 5);
    assert!(topology.warnings().is_empty());
}

#[test]
fn duplicate_name() {
    let (mut t, _) = with_spout("lines");
    t.add(spout("lines", Lines));
    assert_eq!(errors(t), [TopologyError::DuplicateName("lines".into())]);
}

#[test]
fn invalid_names() {
    let (mut t, lines) = with_spout("bad name!");
    t.add(bolt("__acker", LineEcho).shuffle(&lines));
    t.add(bolt("", LineEcho).shuffle(&lines).stream("a/b"));
    let errs = errors(t);
    let names: Vec<_> = errs
        .iter()
        .map(|e| match e {
            TopologyError::InvalidName { name, .. } => name.as_str(),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(names, ["bad name!", "__acker", "", "a/b"]);
    assert!(errs[1].to_string().contains("reserved"));
}

#[test]
fn unknown_component() {
    let (mut t, _) = with_spout("lines");
    t.add(bolt("echo", LineEcho).subscribe_by_name("nope", DEFAULT_STREAM, Grouping::Shuffle));
    assert_eq!(
        errors(t),
        [TopologyError::UnknownComponent {
            component: "echo".into(),
            upstream: "nope".into()
        }]
    );
}

#[test]
fn unknown_stream() {
    let (mut t, lines) = with_spout("lines");
    t.add(bolt("echo", LineEcho).shuffle(&lines.stream("missing")));
    assert_eq!(
        errors(t),
        [TopologyError::UnknownStream {
            component: "echo".into(),
            upstream: "lines".into(),
            stream: "missing".into()
        }]
    );
}

#[test]
fn duplicate_stream() {
    let mut t = TopologyBuilder::new("test");
    t.add(spout("lines", Lines).stream("x").stream("x"));
    assert_eq!(
        errors(t),
        [TopologyError::DuplicateStream {
            component: "lines".into(),
            stream: "x".into()
        }]
    );
}

#[test]
fn duplicate_input() {
    let (mut t, lines) = with_spout("lines");
    t.add(bolt("echo", LineEcho).shuffle(&lines).all(&lines));
    assert_eq!(
        errors(t),
        [TopologyError::DuplicateInput {
            component: "echo".into(),
            upstream: "lines".into(),
            stream: DEFAULT_STREAM.into()
        }]
    );
}

#[test]
fn cycle_with_its_path() {
    let (mut t, lines) = with_spout("lines");
    t.add(bolt("a", LineEcho).shuffle(&lines).subscribe_by_name(
        "c",
        DEFAULT_STREAM,
        Grouping::Shuffle,
    ));
    t.add(bolt("b", LineEcho).subscribe_by_name("a", DEFAULT_STREAM, Grouping::Shuffle));
    t.add(bolt("c", LineEcho).subscribe_by_name("b", DEFAULT_STREAM, Grouping::Shuffle));
    let errs = errors(t);
    assert_eq!(
        errs,
        [TopologyError::Cycle {
            path: vec!["a".into(), "b".into(), "c".into(), "a".into()]
        }]
    );
    assert_eq!(errs[0].to_string(), "cycle: a -> b -> c -> a");
}

#[test]
fn self_loop_is_a_cycle() {
    let (mut t, _) = with_spout("lines");
    t.add(bolt("a", LineEcho).subscribe_by_name("a", DEFAULT_STREAM, Grouping::Shuffle));
    assert_eq!(
        errors(t),
        [TopologyError::Cycle {
            path: vec!["a".into(), "a".into()]
        }]
    );
}

#[test]
fn missing_field() {
    let (mut t, lines) = with_spout("lines");
    let words = t.add(bolt("split", Split).shuffle(&lines));
    t.add(bolt("sink", WordSink).fields(&words, ["wrod"]));
    let errs = errors(t);
    assert_eq!(
        errs,
        [TopologyError::MissingField {
            component: "sink".into(),
            upstream: "split".into(),
            field: "wrod".into(),
            available: vec!["word".into(), "ts".into(), "extra".into()]
        }]
    );
    assert_eq!(
        errs[0].to_string(),
        "`sink` groups on field `wrod` that `split` does not emit (has [\"word\", \"ts\", \"extra\"])"
    );
}

#[test]
fn opaque_field_cannot_be_grouped_on() {
    let (mut t, lines) = with_spout("lines");
    let words = t.add(bolt("split", Split).shuffle(&lines));
    t.add(bolt("sink", WordSink).fields(&words, ["extra"]));
    assert_eq!(
        errors(t),
        [TopologyError::FieldNotHashable {
            component: "sink".into(),
            upstream: "split".into(),
            field: "extra".into()
        }]
    );
}

#[test]
fn empty_fields() {
    let (mut t, lines) = with_spout("lines");
    t.add(bolt("echo", LineEcho).fields(&lines, Vec::<&str>::new()));
    assert_eq!(
        errors(t),
        [TopologyError::EmptyFields {
            component: "echo".into(),
            upstream: "lines".into()
        }]
    );
}

#[test]
fn direct_grouping_needs_a_direct_stream() {
    let (mut t, lines) = with_spout("lines");
    t.add(bolt("echo", LineEcho).direct(&lines));
    assert_eq!(
        errors(t),
        [TopologyError::DirectNotDeclared {
            component: "echo".into(),
            upstream: "lines".into(),
            stream: DEFAULT_STREAM.into()
        }]
    );
}

#[test]
fn direct_stream_needs_direct_grouping() {
    let mut t = TopologyBuilder::new("test");
    let lines = t.add(spout("lines", Lines).direct_stream("d"));
    t.add(bolt("echo", LineEcho).shuffle(&lines.stream("d")));
    assert_eq!(
        errors(t),
        [TopologyError::DirectRequired {
            component: "echo".into(),
            upstream: "lines".into(),
            stream: "d".into()
        }]
    );
}

#[test]
fn exactly_once_needs_replayable_spouts() {
    let (mut t, lines) = with_spout("lines");
    t.add(bolt("echo", LineEcho).shuffle(&lines));
    let t = t.guarantee(Guarantee::ExactlyOnce);
    assert_eq!(
        errors(t),
        [TopologyError::GuaranteeUnsupported {
            component: "lines".into(),
            guarantee: Guarantee::ExactlyOnce,
            needs: "a replayable spout (Spout::REPLAYABLE)"
        }]
    );
}

/// Counts words in its state.
#[derive(Clone)]
struct CountWords;

impl StatefulBolt for CountWords {
    type In = Word;
    type Out = Word;
    type State = KeyedState<String, u64>;
    fn execute(
        &self,
        _state: &mut KeyedState<String, u64>,
        t: Tuple<Word>,
        out: &mut StateEmitter<Word>,
    ) -> Result<(), TaskError> {
        out.emit(t.into_value());
        Ok(())
    }
}

#[test]
fn exactly_once_needs_idempotent_sinks_surviving_state_and_no_window() {
    let build = |replicas: u32, checkpointed: bool| {
        let mut t = TopologyBuilder::new("test");
        let lines = t.add(spout("lines", Replayable));
        let words = t.add(bolt("split", Split).shuffle(&lines));
        let counted = t.add(
            stateful("count", CountWords)
                .fields(&words, ["word"])
                .replicas(replicas),
        );
        t.add(bolt("sink", WordSink).shuffle(&counted));
        t.add(bolt("echo", LineEcho).shuffle(&lines));
        t.add(windowed("window", WindowCount, Window::tumbling(Size::Count(10))).shuffle(&words));
        let config = TopologyConfig {
            checkpoint_interval: checkpointed.then(|| Duration::from_secs(1)),
            ..TopologyConfig::default()
        };
        errors(t.guarantee(Guarantee::ExactlyOnce).config(config))
    };
    let refused = |errors: &[TopologyError]| -> Vec<String> {
        errors
            .iter()
            .map(|e| match e {
                TopologyError::GuaranteeUnsupported { component, .. } => component.clone(),
                // `Replayable` cannot rewind: beside the point here.
                TopologyError::NotRewindable { .. } => String::new(),
                other => panic!("unexpected {other}"),
            })
            .collect()
    };
    let errors = build(1, false);
    assert_eq!(refused(&errors), ["count", "sink", "window"], "{errors:?}");
    assert!(
        errors[1].to_string().contains("idempotent sink"),
        "{}",
        errors[1]
    );
    // `split` feeds others and `echo` is idempotent; replicated or checkpointed state survives.
    assert_eq!(refused(&build(3, false)), ["sink", "window"]);
    assert_eq!(refused(&build(1, true)), ["", "sink", "window"]);
}

#[test]
fn exactly_once_wants_a_shuffled_stateful_bolt_routed_by_key() {
    let build = |shuffled: bool, parallelism: u32| {
        let mut t = TopologyBuilder::new("test");
        let lines = t.add(spout("lines", Replayable));
        let words = t.add(bolt("split", Split).shuffle(&lines));
        let count = stateful("count", CountWords).parallelism(parallelism);
        let count = if shuffled {
            count.shuffle(&words)
        } else {
            count.fields(&words, ["word"])
        };
        t.add(count);
        errors(t.guarantee(Guarantee::ExactlyOnce))
    };
    let errors = build(true, 2);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].to_string().contains("routed by key"),
        "{}",
        errors[0]
    );
    assert!(build(false, 2).is_empty());
    assert!(build(true, 1).is_empty(), "one task gets every replay");
}

#[test]
fn at_least_once_with_a_plain_spout_warns() {
    let (mut t, lines) = with_spout("lines");
    t.add(bolt("echo", LineEcho).shuffle(&lines));
    let topology = t.guarantee(Guarantee::AtLeastOnce).build().expect("valid");
    assert_eq!(topology.warnings().len(), 1);
    assert!(topology.warnings()[0].contains("not replayable"));
}

#[test]
fn max_spout_pending_without_ack_trees_warns() {
    let (mut t, lines) = with_spout("lines");
    t.add(bolt("echo", LineEcho).shuffle(&lines));
    let config = TopologyConfig {
        max_spout_pending: Some(10),
        ..TopologyConfig::default()
    };
    let topology = t.config(config).build().expect("valid");
    assert_eq!(topology.warnings().len(), 1, "{:?}", topology.warnings());
    assert!(topology.warnings()[0].contains("has no effect"));
}

#[test]
fn zero_parallelism() {
    let (mut t, lines) = with_spout("lines");
    t.add(bolt("echo", LineEcho).parallelism(0).shuffle(&lines));
    assert_eq!(
        errors(t),
        [TopologyError::BadCount {
            component: "echo".into()
        }]
    );
}

#[test]
fn too_many_tasks() {
    let (mut t, lines) = with_spout("lines");
    t.add(bolt("echo", LineEcho).parallelism(5000).shuffle(&lines));
    assert_eq!(
        errors(t),
        [TopologyError::TooManyTasks {
            scope: "`echo`".into(),
            count: 5000,
            max: u64::from(limits::MAX_PARALLELISM)
        }]
    );

    let (mut t, lines) = with_spout("lines");
    for i in 0..17 {
        t.add(
            bolt(format!("b{i}"), LineEcho)
                .parallelism(4096)
                .shuffle(&lines),
        );
    }
    let errs = errors(t);
    assert_eq!(
        errs,
        [TopologyError::TooManyTasks {
            scope: "the topology".into(),
            count: 17 * 4096 + 1,
            max: u64::from(limits::MAX_TASKS)
        }]
    );
}

#[test]
fn bolt_without_inputs() {
    let (mut t, _) = with_spout("lines");
    t.add(bolt("echo", LineEcho));
    assert_eq!(errors(t), [TopologyError::NoInputs("echo".into())]);
}

#[test]
fn no_spouts() {
    let mut t = TopologyBuilder::new("test");
    t.add(bolt("echo", LineEcho).subscribe_by_name("x", DEFAULT_STREAM, Grouping::Shuffle));
    let errs = errors(t);
    assert_eq!(errs[0], TopologyError::NoSpouts);
}

#[test]
fn type_mismatch_by_name() {
    let (mut t, _) = with_spout("lines");
    t.add(bolt("sink", WordSink).subscribe_by_name("lines", DEFAULT_STREAM, Grouping::Shuffle));
    let errs = errors(t);
    match &errs[..] {
        [
            TopologyError::TypeMismatch {
                component,
                upstream,
                expected,
                found,
                ..
            },
        ] => {
            assert_eq!((component.as_str(), upstream.as_str()), ("sink", "lines"));
            assert!(expected.ends_with("Word"), "{expected}");
            assert!(found.ends_with("Line"), "{found}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn by_name_with_the_right_type_builds() {
    let (mut t, _) = with_spout("lines");
    t.add(bolt("echo", LineEcho).subscribe_by_name("lines", DEFAULT_STREAM, Grouping::Shuffle));
    assert!(t.build().is_ok());
}

#[test]
fn key_by_needs_its_function() {
    let (mut t, _) = with_spout("lines");
    t.add(bolt("echo", LineEcho).subscribe_by_name("lines", DEFAULT_STREAM, Grouping::KeyBy));
    assert_eq!(
        errors(t),
        [TopologyError::KeyByWithoutFunction {
            component: "echo".into(),
            upstream: "lines".into()
        }]
    );
}

#[test]
fn handles_from_another_builder() {
    let (_other, foreign) = with_spout("elsewhere");
    let (mut t, _) = with_spout("lines");
    t.add(bolt("echo", LineEcho).shuffle(&foreign));
    assert_eq!(
        errors(t),
        [TopologyError::ForeignHandle {
            component: "echo".into()
        }]
    );
}

#[test]
fn invalid_config() {
    let (mut t, lines) = with_spout("lines");
    t.add(bolt("echo", LineEcho).shuffle(&lines));
    let t = t.config(TopologyConfig {
        batch_size: 0,
        ..TopologyConfig::default()
    });
    let errs = errors(t);
    assert_eq!(errs.len(), 1);
    assert!(matches!(&errs[0], TopologyError::Config(c) if c.field == "batch_size"));
}

#[test]
fn every_error_is_reported_at_once() {
    let mut t = TopologyBuilder::new("test");
    let lines = t.add(spout("lines", Lines).parallelism(0));
    t.add(spout("lines", Lines));
    let words = t.add(bolt("split", Split).shuffle(&lines));
    t.add(bolt("sink", WordSink).fields(&words, ["nope"]));
    t.add(bolt("orphan", LineEcho));
    t.add(bolt("x", LineEcho).subscribe_by_name("y", DEFAULT_STREAM, Grouping::Shuffle));
    let t = t.config(TopologyConfig {
        queue_batches: 0,
        ..TopologyConfig::default()
    });
    let errs = t.build().expect_err("invalid");
    let rendered = errs.to_string();
    assert_eq!(
        rendered.lines().collect::<Vec<_>>(),
        [
            "config `queue_batches` = 0: must be between 1 and 1024",
            "`lines`: parallelism must be at least 1",
            "component `lines` is declared more than once",
            "`sink` groups on field `nope` that `split` does not emit (has [\"word\", \"ts\", \"extra\"])",
            "bolt `orphan` has no inputs",
            "`x` subscribes to unknown component `y`",
        ]
    );
}

#[test]
fn replayable_spouts_satisfy_exactly_once_checks() {
    let mut t = TopologyBuilder::new("test");
    let lines = t.add(spout("lines", Replayable));
    t.add(bolt("echo", LineEcho).shuffle(&lines));
    assert!(errors(t.guarantee(Guarantee::ExactlyOnce)).is_empty());
}

/// Words made by a bolt, which declares their event time (its timestamps originate there).
fn split_words() -> (TopologyBuilder, Handle<Word>) {
    let (mut t, lines) = with_spout("lines");
    let words = t.add(
        bolt("split", Split)
            .shuffle(&lines)
            .event_time(EventTime::field("ts").lag(Duration::from_secs(1))),
    );
    (t, words)
}

fn bad_window(errs: &[TopologyError]) -> Vec<String> {
    errs.iter()
        .map(|e| match e {
            TopologyError::BadWindow { component, reason } => {
                assert_eq!(component, "win");
                reason.clone()
            }
            other => panic!("unexpected {other}"),
        })
        .collect()
}

#[test]
fn a_valid_windowed_topology_builds() {
    let (mut t, words) = split_words();
    let window = Window::sliding(Duration::from_secs(10), Duration::from_secs(5))
        .event_time("ts")
        .late_to_side_stream();
    let w = t.add(windowed("win", WindowCount, window).fields(&words, ["word"]));
    t.add(bolt("late-sink", WordSink).shuffle(&w.late));
    t.add(bolt("sink", WordSink).shuffle(&w.output));
    let topology = t.build().expect("valid");
    let ir = topology.ir();
    let win = &ir.components[2];
    assert_eq!(
        win.streams.last().map(|s| s.name.as_str()),
        Some(LATE_STREAM)
    );
    assert!(win.tick_every.is_some(), "windowed bolts are ticked");
}

#[test]
fn invalid_window_specs() {
    let (mut t, words) = split_words();
    t.add(windowed("win", WindowCount, Window::tumbling(Size::count(0))).shuffle(&words));
    assert_eq!(
        bad_window(&errors(t)),
        ["the window size must be above zero"]
    );

    let (mut t, words) = split_words();
    let w = Window::sliding(Duration::from_secs(1), Duration::from_secs(2));
    t.add(windowed("win", WindowCount, w).shuffle(&words));
    assert_eq!(
        bad_window(&errors(t)),
        ["the slide (2000 ms) is larger than the window size (1000 ms)"]
    );

    let (mut t, words) = split_words();
    let w = Window::tumbling(Size::count(5)).lag(Duration::from_secs(1));
    t.add(aggregated("win", WordTally, w).shuffle(&words));
    assert_eq!(
        bad_window(&errors(t)),
        ["a lag applies to event-time windows, not to count windows"]
    );
}

#[test]
fn event_time_needs_a_timestamp_field() {
    let (mut t, words) = split_words();
    let w = Window::tumbling(Duration::from_secs(1)).event_time("when");
    t.add(windowed("win", WindowCount, w).shuffle(&words));
    assert_eq!(
        bad_window(&errors(t)),
        ["event-time field `when` is not a field of `Word` (has [\"word\", \"ts\", \"extra\"])"]
    );

    let (mut t, words) = split_words();
    let w = Window::tumbling(Duration::from_secs(1)).event_time("word");
    t.add(windowed("win", WindowCount, w).shuffle(&words));
    let errs = errors(t);
    assert_eq!(
        errs,
        [TopologyError::NotATimestamp {
            component: "win".into(),
            field: "word".into(),
            found: FieldType::Str
        }]
    );
    assert_eq!(
        errs[0].to_string(),
        "`win`: event-time field `word` is a string, expected a timestamp"
    );
}

#[test]
fn keyed_windows_need_one_fields_grouping() {
    let (mut t, lines) = with_spout("lines");
    let a = t.add(bolt("a", Split).shuffle(&lines));
    let b = t.add(bolt("b", Split).shuffle(&lines));
    let w = Window::tumbling(Duration::from_secs(1));
    t.add(
        windowed("win", WindowCount, w)
            .fields(&a, ["word"])
            .shuffle(&b),
    );
    assert_eq!(
        bad_window(&errors(t)),
        [
            "the inputs of a windowed bolt must all use the same fields grouping (keyed windows) or none (windows per task)"
        ]
    );
}

#[test]
fn sliding_count_windows_cannot_aggregate() {
    let (mut t, words) = split_words();
    let w = Window::sliding(Size::count(4), Size::count(2));
    t.add(aggregated("win", WordTally, w).shuffle(&words));
    assert_eq!(bad_window(&errors(t)).len(), 1);
    // The same window is fine for a whole-window bolt.
    let (mut t, words) = split_words();
    let w = Window::sliding(Size::count(4), Size::count(2));
    t.add(windowed("win", WindowCount, w).shuffle(&words));
    assert!(errors(t).is_empty());
}

#[test]
fn tracked_windows_must_fit_in_the_message_timeout() {
    let (mut t, words) = split_words();
    let w = Window::tumbling(Duration::from_secs(40)).event_time("ts");
    t.add(windowed("win", WindowCount, w).shuffle(&words));
    let reasons = bad_window(&errors(t.guarantee(Guarantee::AtLeastOnce)));
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].contains("message timeout (30000 ms)"),
        "{reasons:?}"
    );
}

#[test]
fn the_late_stream_exists_only_when_asked_for() {
    let (mut t, words) = split_words();
    let w = t.add(
        windowed(
            "win",
            WindowCount,
            Window::tumbling(Duration::from_secs(1)).event_time("ts"),
        )
        .shuffle(&words),
    );
    t.add(bolt("late-sink", WordSink).shuffle(&w.late));
    assert_eq!(
        errors(t),
        [TopologyError::UnknownStream {
            component: "late-sink".into(),
            upstream: "win".into(),
            stream: LATE_STREAM.into()
        }]
    );
}

#[test]
fn windows_are_keyed_by_fields_not_by_closures() {
    let (mut t, words) = split_words();
    let w = Window::tumbling(Duration::from_secs(1));
    t.add(windowed("win", WindowCount, w).key_by(&words, |w: &Word| w.word.clone()));
    let reasons = bad_window(&errors(t));
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].contains("key_by"), "{reasons:?}");
}

#[test]
fn sliding_windows_cannot_multiply_elements_without_bound() {
    let (mut t, words) = split_words();
    let w = Window::sliding(Duration::from_secs(86_400), Duration::from_millis(1));
    t.add(windowed("win", WindowCount, w).shuffle(&words));
    let reasons = bad_window(&errors(t));
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].contains("86400000 sliding windows"),
        "{reasons:?}"
    );
}

#[test]
fn tracked_count_windows_larger_than_max_spout_pending_are_fine() {
    // Trees a window holds do not count against max_spout_pending, so Storm's rule (size plus
    // slide within it) is not needed: keyed count windows could never meet it anyway.
    let (mut t, words) = split_words();
    t.add(windowed("win", WindowCount, Window::tumbling(Size::count(100))).shuffle(&words));
    let t = t.guarantee(Guarantee::AtLeastOnce).config(TopologyConfig {
        max_spout_pending: Some(50),
        ..TopologyConfig::default()
    });
    assert!(errors(t).is_empty());
}

#[test]
fn tracked_processing_time_windows_must_fit_in_the_message_timeout() {
    let (mut t, words) = split_words();
    t.add(
        windowed(
            "win",
            WindowCount,
            Window::tumbling(Duration::from_secs(60)),
        )
        .shuffle(&words),
    );
    let reasons = bad_window(&errors(t.guarantee(Guarantee::AtLeastOnce)));
    assert_eq!(reasons.len(), 1);
}

#[test]
fn tracked_windows_warn_about_sessions() {
    let (mut t, words) = split_words();
    let w = Window::session(Duration::from_secs(1)).event_time("ts");
    t.add(windowed("win", WindowCount, w).shuffle(&words));
    let topology = t
        .guarantee(Guarantee::AtLeastOnce)
        .config(TopologyConfig {
            max_spout_pending: Some(1000),
            ..TopologyConfig::default()
        })
        .build()
        .expect("valid, with warnings");
    let warnings = topology.warnings();
    assert!(
        warnings.iter().any(|w| w.contains("a session holds")),
        "{warnings:?}"
    );
}

fn event_time_errors(errs: &[TopologyError]) -> Vec<(String, String)> {
    errs.iter()
        .map(|e| match e {
            TopologyError::BadEventTime { component, reason } => {
                (component.clone(), reason.clone())
            }
            other => panic!("unexpected {other}"),
        })
        .collect()
}

#[test]
fn a_window_event_time_moves_up_to_the_spouts_through_bolts_that_keep_the_type() {
    let mut t = TopologyBuilder::new("test");
    let words = t.add(spout("words", Words).parallelism(2));
    let passed = t.add(bolt("pass", WordSink).parallelism(2).shuffle(&words));
    let window = Window::tumbling(Duration::from_secs(1))
        .event_time("ts")
        .lag(Duration::from_millis(100))
        .idle_timeout(Duration::from_secs(3));
    t.add(windowed("win", WindowCount, window).fields(&passed, ["word"]));
    let topology = t.build().expect("valid");
    let ir = topology.ir();
    let spout = &ir.components[0];
    assert_eq!(
        spout.event_time,
        Some(EventTime {
            field: "ts".into(),
            lag_ms: 100,
            idle_timeout_ms: Some(3000),
            derived_from: Some("win".into()),
            max_drift_ms: Some(1000 * ALIGN_STEPS),
        }),
        "the spout tasks generate the watermarks, aligned to within 8 windows"
    );
    assert_eq!(ir.components[1].event_time, None, "`pass` forwards them");
}

#[test]
fn a_bolt_that_makes_the_records_must_declare_their_event_time() {
    let (mut t, lines) = with_spout("lines");
    let words = t.add(bolt("split", Split).shuffle(&lines));
    let w = Window::tumbling(Duration::from_secs(1)).event_time("ts");
    t.add(windowed("win", WindowCount, w).fields(&words, ["word"]));
    let errs = event_time_errors(&errors(t));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, "win");
    assert!(
        errs[0].1.contains("declare `.event_time(..)` on `split`"),
        "{}",
        errs[0].1
    );
}

#[test]
fn a_window_lag_conflicts_with_watermarks_declared_upstream() {
    let (mut t, words) = split_words();
    let w = Window::tumbling(Duration::from_secs(1))
        .event_time("ts")
        .lag(Duration::from_secs(2));
    t.add(windowed("win", WindowCount, w).fields(&words, ["word"]));
    let errs = event_time_errors(&errors(t));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].1.contains("would mean nothing"), "{}", errs[0].1);
}

#[test]
fn two_windows_that_derive_different_strategies_from_one_spout_conflict() {
    let mut t = TopologyBuilder::new("test");
    let words = t.add(spout("words", Words));
    let w1 = Window::tumbling(Duration::from_secs(1))
        .event_time("ts")
        .lag(Duration::from_millis(100));
    let w2 = Window::tumbling(Duration::from_secs(1))
        .event_time("ts")
        .lag(Duration::from_millis(500));
    t.add(windowed("a", WindowCount, w1).fields(&words, ["word"]));
    t.add(windowed("b", WindowCount, w2.clone()).fields(&words, ["word"]));
    let errs = event_time_errors(&errors(t));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, "b");
    // The same strategy twice is fine.
    let mut t = TopologyBuilder::new("test");
    let words = t.add(spout("words", Words));
    t.add(windowed("a", WindowCount, w2.clone()).fields(&words, ["word"]));
    t.add(windowed("b", WindowCount, w2).fields(&words, ["word"]));
    assert!(errors(t).is_empty());
}

#[test]
fn event_time_declarations_are_checked() {
    let mut t = TopologyBuilder::new("test");
    t.add(spout("a", Words).event_time(EventTime::field("nope")));
    t.add(spout("b", Words).event_time(EventTime::field("word")));
    t.add(spout("c", Words).event_time(EventTime::field("ts").idle_timeout(Duration::ZERO)));
    let errs = errors(t);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        matches!(&errs[0], TopologyError::BadEventTime { component, reason }
        if component == "a" && reason.contains("`nope` is not a field"))
    );
    assert!(matches!(&errs[1], TopologyError::NotATimestamp { component, .. } if component == "b"));
    assert!(
        matches!(&errs[2], TopologyError::BadEventTime { component, reason }
        if component == "c" && reason == "the idle timeout must be above zero")
    );
}

#[test]
fn only_spouts_align_their_event_time() {
    let mut t = TopologyBuilder::new("test");
    let words = t.add(spout("words", Words));
    t.add(
        bolt("pass", WordSink)
            .event_time(EventTime::field("ts").max_drift(Duration::from_secs(1)))
            .shuffle(&words),
    );
    let errs = errors(t);
    assert!(
        errs.iter().any(
            |e| matches!(e, TopologyError::BadEventTime { component, reason }
            if component == "pass" && reason.contains("aligns spouts only"))
        ),
        "{errs:?}"
    );
}

#[test]
fn a_window_must_read_the_field_its_watermarks_come_from() {
    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize, Record)]
    struct Two {
        ts: i64,
        ts2: i64,
    }
    #[derive(Clone)]
    struct Twos;
    impl Spout for Twos {
        type Out = Two;
        fn next(&mut self, _out: &mut SpoutEmitter<Two>) -> Result<SpoutStatus, TaskError> {
            Ok(SpoutStatus::Done)
        }
    }
    #[derive(Clone)]
    struct Nothing;
    impl WindowedBolt for Nothing {
        type In = Two;
        type Out = Two;
        fn on_window(
            &mut self,
            _w: &WindowView<'_, Two>,
            _out: &mut Emitter<Two>,
        ) -> Result<(), TaskError> {
            Ok(())
        }
    }
    let mut t = TopologyBuilder::new("test");
    let twos = t.add(spout("twos", Twos).event_time(EventTime::field("ts")));
    let w = Window::tumbling(Duration::from_secs(1)).event_time("ts2");
    t.add(windowed("win", Nothing, w).shuffle(&twos));
    let errs = event_time_errors(&errors(t));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].1.contains("watermarks come from `ts`"),
        "{}",
        errs[0].1
    );
}
