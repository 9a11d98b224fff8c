//! The `tempest` command: its contract for users and scripts.

mod common;

use std::process::{Command, Output};

use common::{assert_refused, tempest_command};

fn tempest(args: &[&str]) -> Output {
    tempest_command()
        .args(args)
        .output()
        .expect("the tempest binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn local_wordcount_prints_top_words_totals_and_the_check() {
    let out = tempest(&["local", "wordcount", "--sentences", "3000", "--top", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("top 3 words:"), "{text}");
    assert!(
        text.contains(
            "totals: 3000 sentences, 30000 words counted, 1000 distinct, 30000 records at the sink"
        ),
        "{text}"
    );
    assert!(
        text.contains("check: every word count matches the input"),
        "{text}"
    );
}

#[test]
fn bench_wordcount_ends_with_a_result_line() {
    let out = tempest(&["bench", "wordcount", "--sentences", "5000", "--runs", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("RESULT workload=wordcount guarantee=at-most-once records=5000 "),
        "{last}"
    );
    assert!(last.contains(" words_rate="), "{last}");
    assert!(last.contains(" peak_rss_kb="), "{last}");
    assert!(last.ends_with(" ok=true"), "{last}");
    assert_eq!(text.lines().filter(|l| l.starts_with("RUN ")).count(), 2);
}

#[test]
fn show_prints_text_and_dot() {
    let out = tempest(&["show", "wordcount", "--dot"]);
    assert!(out.status.success());
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph \"word-count\" {"), "{dot}");
    assert!(
        dot.contains("\"split\" -> \"count\" [label=\"fields(word)\"];"),
        "{dot}"
    );
    let out = tempest(&["show", "wordcount"]);
    let text = stdout(&out);
    assert!(text.contains("bolt `count` x2 takes Word"), "{text}");
    assert!(
        text.ends_with("takes WordCount\n    <- count.default (local-or-shuffle)\n    -> default (nothing: a sink)\n"),
        "{text}"
    );
}

fn assert_usage_error(args: &[&str], needle: &str) {
    let out = tempest(args);
    assert_refused(&args, out.status.code(), &stderr(&out), needle);
}

#[test]
fn bad_input_exits_with_code_2_and_a_clear_message() {
    assert_usage_error(
        &["local", "wordcount", "--frobnicate"],
        "unexpected argument '--frobnicate'",
    );
    assert_usage_error(&["local", "nosuch"], "unrecognized subcommand 'nosuch'");
    assert_usage_error(
        &["local", "wordcount", "--parallelism", "0"],
        "parallelism must be at least 1",
    );
    assert_usage_error(
        &["local", "wordcount", "--parallelism", "100000"],
        "asks for 100000 tasks, more than the limit of 4096",
    );
    assert_usage_error(
        &["local", "wordcount", "--parallelism", "-3"],
        "invalid value '-3'",
    );
    assert_usage_error(
        &["local", "wordcount", "--parallelism", "99999999999"],
        "invalid value '99999999999'",
    );
    assert_usage_error(
        &["bench", "wordcount", "--batch-size", "0"],
        "config `batch_size` = 0: must be between 1 and 65536",
    );
    assert_usage_error(
        &["local", "wordcount", "--guarantee", "twice"],
        "unknown guarantee `twice`",
    );
    assert_usage_error(
        &["local", "wordcount", "--workers", "0"],
        "invalid option `workers`",
    );
    assert_usage_error(
        &["bench", "wordcount", "--runs", "0"],
        "--runs must be at least 1",
    );
    assert_usage_error(
        &["local", "wordcount", "--guarantee", "exactly-once"],
        "exactly-once requires an idempotent sink",
    );
    assert_usage_error(
        &["local", "wordcount", "--parallelism", "2000"],
        "lower the parallelism",
    );
    assert_usage_error(
        &[
            "bench",
            "wordcount",
            "--guarantee",
            "at-least-once",
            "--fail-rate",
            "1",
        ],
        "--fail-rate must be at least 0 and below 1",
    );
    assert_usage_error(
        &["bench", "wordcount", "--fail-rate", "0.5"],
        "it needs --guarantee at-least-once",
    );
    assert_usage_error(
        &[
            "windows", "--kind", "tumbling", "--size", "10", "--input", "/",
        ],
        "cannot read /: not a file",
    );
    assert_usage_error(
        &[
            "windows",
            "--kind",
            "sliding",
            "--size",
            "1000000000",
            "--slide",
            "1",
        ],
        "at most 10000 are allowed",
    );
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    for args in [
        &["show", "wordcount", "--dot"][..],
        &["local", "wordcount", "--sentences", "2000", "--top", "1000"][..],
    ] {
        let mut child = tempest_command()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starts");
        // Close the reading end at once, as `| head -0` would: every write fails.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("ends");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
}

#[test]
fn an_empty_run_lists_no_top_words() {
    let out = tempest(&["local", "wordcount", "--sentences", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("top 10 words:\n  (no words counted)\ntotals: 0 sentences"),
        "{text}"
    );
}

#[test]
fn ctrl_c_drains_an_endless_run() {
    signal_drains_an_endless_run("INT");
}

#[test]
fn sigterm_drains_an_endless_run() {
    signal_drains_an_endless_run("TERM");
}

/// Sends `signal` to an endless word count once it runs: it must drain, count everything it
/// emitted, print its report and exit 0.
fn signal_drains_an_endless_run(signal: &str) {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let mut child = tempest_command()
        .args(["local", "wordcount", "--endless", "--top", "2"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the tempest binary starts");
    let pid = child.id();
    let stderr = child.stderr.take().expect("piped stderr");

    // The coordinator logs "starting" once the spouts run; then signal, as a terminal or a
    // process manager would.
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("starting") {
                let _ = started_tx.send(());
            }
        }
    });
    started_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the run started within 60 s");
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());

    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the run did not drain within 60 s of SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("piped stdout"), &mut out)
        .expect("stdout is text");
    assert!(exit.success(), "exit {exit:?}: {out}");
    assert!(out.contains("drained in"), "{out}");
    // Everything emitted before the drain was counted and reached the sink.
    let totals = out
        .lines()
        .find(|l| l.starts_with("totals: "))
        .expect("a totals line");
    let numbers: Vec<u64> = totals
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    let (sentences, words, sink) = (numbers[0], numbers[1], numbers[3]);
    assert_eq!(words, sentences * 10, "{totals}");
    assert_eq!(sink, words, "{totals}");
}
