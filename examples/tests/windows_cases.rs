//! `tempest windows` against data-driven cases: each file in `tests/windows/` is a command
//! line, input lines, `----`, and the expected output lines. Lines starting with `#` are
//! comments. A regression test is a text edit.
//!
//! ```text
//! # what the case restates
//! args: --kind tumbling --size 3000
//! {"key":"a","value":1,"ts":0}
//! ----
//! {"key":"a","start":0,"end":3000,"count":1,"sum":1,"values":[1]}
//! ```

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use common::{assert_refused, tempest_command};

use serde_json::Value;

struct Case {
    args: Vec<String>,
    input: String,
    expected: Vec<Value>,
}

fn parse(path: &Path) -> anyhow::Result<Case> {
    let text = std::fs::read_to_string(path)?;
    let mut args = None;
    let mut input = String::new();
    let mut expected = Vec::new();
    let mut after = false;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(a) = line.strip_prefix("args:") {
            args = Some(a.split_whitespace().map(str::to_owned).collect());
        } else if line == "----" {
            after = true;
        } else if after {
            expected.push(serde_json::from_str(line)?);
        } else {
            input.push_str(line);
            input.push('\n');
        }
    }
    Ok(Case {
        args: args.ok_or_else(|| anyhow::anyhow!("{}: no args line", path.display()))?,
        input,
        expected,
    })
}

fn run(case: &Case) -> anyhow::Result<(Vec<Value>, String, Option<i32>)> {
    let mut child = tempest_command()
        .arg("windows")
        .args(&case.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    // A command that refuses its spec exits without reading: a broken pipe is expected then.
    match stdin.write_all(case.input.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    drop(stdin);
    let out = child.wait_with_output()?;
    let lines = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<Value>, _>>()?;
    Ok((lines, String::from_utf8(out.stderr)?, out.status.code()))
}

#[test]
fn every_case_gives_its_expected_output() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/windows");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "case"));
    paths.sort();
    assert!(paths.len() >= 20, "only {} cases", paths.len());
    let mut failures = Vec::new();
    for path in &paths {
        let case = parse(path)?;
        let (got, stderr, code) = run(&case)?;
        if code != Some(0) || got != case.expected {
            failures.push(format!(
                "{}: exit {code:?} {stderr}\n  expected: {}\n  got:      {}",
                path.display(),
                case.expected
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n            "),
                got.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n            "),
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

fn refused(args: &[&str], input: &str, needle: &str) -> anyhow::Result<()> {
    let case = Case {
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        input: input.to_owned(),
        expected: Vec::new(),
    };
    let (_, stderr, code) = run(&case)?;
    assert_refused(&args, code, &stderr, needle);
    Ok(())
}

#[test]
fn invalid_window_specs_exit_2_before_reading_input() -> anyhow::Result<()> {
    // The input is malformed too: a spec error must come first.
    let junk = "not json\n";
    refused(
        &["--kind", "tumbling", "--size", "0"],
        junk,
        "the window size must be above zero",
    )?;
    refused(
        &["--kind", "sliding", "--size", "1000", "--slide", "2000"],
        junk,
        "the slide (2000 ms) is larger than the window size (1000 ms)",
    )?;
    refused(
        &[
            "--kind",
            "tumbling",
            "--measure",
            "count",
            "--size",
            "5",
            "--lag",
            "10",
        ],
        junk,
        "a lag applies to event-time windows, not to count windows",
    )?;
    refused(
        &[
            "--kind",
            "sliding",
            "--measure",
            "count",
            "--size",
            "2",
            "--slide",
            "3",
        ],
        junk,
        "is larger than the window size",
    )?;
    refused(
        &["--kind", "session", "--gap", "0"],
        junk,
        "the session gap must be above zero",
    )?;
    refused(&["--kind", "session"], junk, "--gap is required")?;
    refused(
        &["--kind", "sliding", "--size", "10"],
        junk,
        "--size and --slide are required",
    )?;
    refused(
        &["--kind", "tumbling", "--size", "1000", "--offset", "1000"],
        junk,
        "must be smaller than the slide",
    )?;
    refused(
        &[
            "--kind",
            "tumbling",
            "--size",
            "1000",
            "--time",
            "processing",
            "--lag",
            "5",
        ],
        junk,
        "a lag applies to event-time windows, not to processing time",
    )?;
    refused(
        &["--kind", "hopping", "--size", "10"],
        junk,
        "invalid value 'hopping'",
    )?;
    refused(
        &["--kind", "tumbling", "--size", "-5"],
        junk,
        "invalid value '-5'",
    )?;
    Ok(())
}

#[test]
fn malformed_lines_stop_with_their_number() -> anyhow::Result<()> {
    let args = ["--kind", "tumbling", "--size", "1000"];
    let ok = "{\"key\":\"a\",\"value\":1,\"ts\":5}\n";
    refused(&args, &format!("{ok}not json\n"), "error: line 2: not JSON")?;
    refused(
        &args,
        &format!("{ok}{ok}[1,2]\n"),
        "error: line 3: expected a JSON object",
    )?;
    refused(
        &args,
        "{\"key\":\"a\",\"ts\":5}\n",
        "error: line 1: expected an event",
    )?;
    refused(
        &args,
        "{\"value\":1}\n",
        "error: line 1: `ts` is required for event-time windows",
    )?;
    refused(
        &args,
        "{\"value\":1.5,\"ts\":1}\n",
        "error: line 1: `value` must be an integer",
    )?;
    refused(
        &args,
        "{\"value\":1,\"ts\":\"x\"}\n",
        "error: line 1: `ts` must be an integer",
    )?;
    refused(
        &args,
        "{\"key\":3,\"value\":1,\"ts\":1}\n",
        "error: line 1: `key` must be a string",
    )?;
    refused(
        &args,
        "{\"watermark\":\"soon\"}\n",
        "error: line 1: `watermark` must be an integer",
    )?;
    refused(
        &args,
        "{\"value\":1,\"ts\":1,\"watermark\":3}\n",
        "error: line 1: a line is one of",
    )?;
    refused(
        &args,
        "{\"value\":99999999999999999999,\"ts\":1}\n",
        "error: line 1: `value` is out of range",
    )?;
    let long = format!("{ok}{{\"mark\":\"{}\"}}\n", "x".repeat(2 << 20));
    refused(&args, &long, "error: line 2: longer than 1048576 bytes")?;
    Ok(())
}
