//! `tempest windows`: replays JSON lines through a window specification.
//!
//! A user-facing tool (try a window spec on real data before deploying it) and the end-to-end
//! test bed of window semantics: it runs the [`WindowCore`] a windowed bolt runs, keyed by the
//! `key` of each event, with explicit control of the watermark and of processing time.
//!
//! Input lines, in order: `{"key": "a", "value": 3, "ts": 1000}` (an event; `key` defaults to
//! `""`, `ts` is required for event-time time windows), `{"watermark": 2999}`,
//! `{"advance": 3000}` (processing time, absolute) and `{"mark": ...}` (echoed at once); a line
//! holds only its own fields.
//! Output lines: one per firing (`{"key","start","end","count","sum","values"}`, `start` and
//! `end` null for count windows), one `{"late": {"key","value","ts"}}` per late element, and the
//! marks. At the end of the input, watermark and processing time go to `i64::MAX`.

use std::io::{BufRead, Write};

use serde::Serialize;
use serde_json::Value;
use tempest_dsl::window::{Bounds, WindowCore, WindowHost};
use tempest_dsl::{Size, Window};

/// The window shape flag.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindArg {
    /// Fixed, non-overlapping windows.
    Tumbling,
    /// Overlapping windows, one every `--slide`.
    Sliding,
    /// Per-key sessions closed by a `--gap` of inactivity.
    Session,
}

/// What window sizes measure.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeasureArg {
    /// Milliseconds.
    Time,
    /// Elements.
    Count,
}

/// Which clock time windows run on.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeArg {
    /// The `ts` of each event, with watermarks.
    Event,
    /// Processing time: starts at 0 and is set by `{"advance": ms}` lines (absolute; it never
    /// moves back).
    Processing,
}

/// The window specification given on the command line.
#[derive(clap::Args, Debug, Clone)]
pub struct WindowArgs {
    /// Window shape.
    #[arg(long, value_enum)]
    pub kind: KindArg,
    /// What --size and --slide measure.
    #[arg(long, value_enum, default_value = "time")]
    pub measure: MeasureArg,
    /// Window length: milliseconds, or elements with --measure count.
    #[arg(long, allow_negative_numbers = true)]
    pub size: Option<u64>,
    /// Distance between window starts (sliding windows).
    #[arg(long, allow_negative_numbers = true)]
    pub slide: Option<u64>,
    /// Inactivity gap in milliseconds (session windows).
    #[arg(long, allow_negative_numbers = true)]
    pub gap: Option<u64>,
    /// The clock of time windows.
    #[arg(long, value_enum, default_value = "event")]
    pub time: TimeArg,
    /// Generate a watermark after every event, this many ms behind the largest `ts` seen.
    #[arg(long, allow_negative_numbers = true)]
    pub lag: Option<u64>,
    /// How long after its end a window still takes late elements, in ms (event time).
    #[arg(long, allow_negative_numbers = true)]
    pub allowed_lateness: Option<u64>,
    /// Shift of window starts from the epoch, in ms (|offset| < slide).
    #[arg(long, allow_hyphen_values = true)]
    pub offset: Option<i64>,
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Turns the flags into a window specification, or says everything wrong with them.
pub fn window_from_args(args: &WindowArgs) -> Result<Window, Vec<String>> {
    let mut errors = Vec::new();
    let size = |v: u64| match args.measure {
        MeasureArg::Time => Size::TimeMs(ms(v)),
        MeasureArg::Count => Size::Count(v),
    };
    if args.kind != KindArg::Session && args.gap.is_some() {
        errors.push("--gap applies to session windows only".into());
    }
    let mut window = match args.kind {
        KindArg::Tumbling => {
            let Some(s) = args.size else {
                return Err(vec!["--size is required for tumbling windows".into()]);
            };
            if args.slide.is_some_and(|d| d != s) {
                errors.push(
                    "tumbling windows slide by their size: drop --slide, or use --kind sliding"
                        .into(),
                );
            }
            Window::tumbling(size(s))
        }
        KindArg::Sliding => {
            let (Some(s), Some(d)) = (args.size, args.slide) else {
                return Err(vec![
                    "--size and --slide are required for sliding windows".into(),
                ]);
            };
            Window::sliding(size(s), size(d))
        }
        KindArg::Session => {
            let Some(gap) = args.gap else {
                return Err(vec!["--gap is required for session windows".into()]);
            };
            if args.measure == MeasureArg::Count {
                errors.push(
                    "session windows are made of time: --measure count does not apply".into(),
                );
            }
            if args.slide.is_some() {
                errors.push("--slide does not apply to session windows".into());
            }
            Window::session(std::time::Duration::from_millis(gap))
        }
    };
    // Count windows count elements whatever the clock; only time windows take --time.
    if !window.is_count() && args.time == TimeArg::Event {
        window = window.event_time("ts");
    }
    window.lag_ms = args.lag.map(ms);
    window.allowed_lateness_ms = args.allowed_lateness.map_or(0, ms);
    window.offset_ms = args.offset.unwrap_or(0);
    errors.extend(window.check());
    if errors.is_empty() {
        Ok(window)
    } else {
        Err(errors)
    }
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A line that is not one of the four kinds.
    #[error("line {line}: {message}")]
    Malformed {
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// Reading the input or writing the output failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One firing, as written out.
#[derive(Serialize)]
struct FiringLine<'a> {
    key: &'a str,
    start: Option<i64>,
    end: Option<i64>,
    count: usize,
    sum: i128,
    values: Vec<i64>,
}

#[derive(Serialize)]
struct LateElement<'a> {
    key: &'a str,
    value: i64,
    ts: Option<i64>,
}

#[derive(Serialize)]
struct LateLine<'a> {
    late: LateElement<'a>,
}

#[derive(Serialize)]
struct MarkLine<'a> {
    mark: &'a Value,
}

/// The element being inserted.
#[derive(Clone, Copy)]
struct Current {
    seq: u64,
    value: i64,
    ts: Option<i64>,
}

/// Window contents: (arrival number, value) in arrival order.
type Contents = Vec<(u64, i64)>;

struct JsonHost<W: Write> {
    out: W,
    current: Option<Current>,
    error: Option<std::io::Error>,
}

impl<W: Write> JsonHost<W> {
    fn write<T: Serialize>(&mut self, line: &T) {
        if self.error.is_some() {
            return;
        }
        let result = serde_json::to_writer(&mut self.out, line)
            .map_err(std::io::Error::other)
            .and_then(|()| self.out.write_all(b"\n"));
        if let Err(e) = result {
            self.error = Some(e);
        }
    }
}

impl<W: Write> WindowHost<String, Contents> for JsonHost<W> {
    fn add(&mut self, _key: &String, contents: &mut Contents) {
        if let Some(c) = self.current {
            contents.push((c.seq, c.value));
        }
    }

    fn merge(&mut self, _key: &String, into: &mut Contents, from: Contents) {
        into.extend(from);
        into.sort_unstable_by_key(|&(seq, _)| seq);
    }

    fn fire(&mut self, key: &String, bounds: Option<Bounds>, contents: &mut Contents) {
        let values: Vec<i64> = contents.iter().map(|&(_, v)| v).collect();
        let line = FiringLine {
            key,
            start: bounds.map(|b| b.start),
            end: bounds.map(|b| b.end),
            count: values.len(),
            sum: values.iter().map(|&v| i128::from(v)).sum(),
            values,
        };
        self.write(&line);
    }

    fn purge(&mut self, _key: &String, _contents: Contents) {}

    fn evict(&mut self, _key: &String, contents: &mut Contents, keep: usize) {
        if contents.len() > keep {
            contents.drain(..contents.len() - keep);
        }
    }

    fn late(&mut self, key: &String) {
        if let Some(c) = self.current {
            self.write(&LateLine {
                late: LateElement {
                    key,
                    value: c.value,
                    ts: c.ts,
                },
            });
        }
    }
}

/// One parsed input line.
enum Line {
    Event {
        key: String,
        value: i64,
        ts: Option<i64>,
    },
    Watermark(i64),
    Advance(i64),
    Mark(Value),
}

fn integer(object: &serde_json::Map<String, Value>, field: &str) -> Result<Option<i64>, String> {
    match object.get(field) {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(i) => Ok(Some(i)),
            None if v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0) => Err(format!(
                "`{field}` is out of range: {v} (a 64-bit signed integer)"
            )),
            None => Err(format!("`{field}` must be an integer, got {v}")),
        },
    }
}

/// The longest input line accepted.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Reads one line of at most `MAX_LINE_BYTES` (without its newline) into `buf`; `Ok(false)` at
/// the end of the input.
fn read_line(
    input: &mut impl BufRead,
    buf: &mut Vec<u8>,
    number: usize,
) -> Result<bool, ReplayError> {
    buf.clear();
    let limit = (MAX_LINE_BYTES + 1) as u64;
    let read = std::io::Read::take(&mut *input, limit).read_until(b'\n', buf)?;
    if read == 0 {
        return Ok(false);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE_BYTES {
        return Err(ReplayError::Malformed {
            line: number,
            message: format!("longer than {MAX_LINE_BYTES} bytes"),
        });
    }
    Ok(true)
}

/// The flags that do not apply to the given window and are ignored, as warnings.
pub fn ignored_window_args(args: &WindowArgs) -> Vec<String> {
    let mut warnings = Vec::new();
    if args.kind == KindArg::Session && args.size.is_some() {
        warnings
            .push("--size is ignored by session windows (their length comes from --gap)".into());
    }
    if args.measure == MeasureArg::Count && args.time == TimeArg::Processing {
        warnings.push("--time is ignored by count windows (they count elements)".into());
    }
    warnings
}

/// The field that makes a line an event, a watermark, an advance or a mark.
const LINE_KINDS: [&str; 4] = ["value", "watermark", "advance", "mark"];

fn parse_line(text: &str, needs_ts: bool) -> Result<Line, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut object) = value else {
        return Err("expected a JSON object".into());
    };
    let kinds = LINE_KINDS
        .iter()
        .filter(|k| object.contains_key(**k))
        .count();
    if kinds == 0 {
        return Err(
            "expected an event (with \"value\"), a \"watermark\", an \"advance\" or a \"mark\""
                .into(),
        );
    }
    if kinds > 1 {
        return Err("a line is one of an event, a watermark, an advance or a mark".into());
    }
    // An event has `key`, `value` and `ts`; the other kinds of line stand alone.
    let allowed: &[&str] = if object.contains_key("value") {
        &["key", "value", "ts"]
    } else {
        &LINE_KINDS
    };
    if let Some(extra) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(if allowed == LINE_KINDS {
            format!("unexpected field `{extra}`: a watermark, an advance or a mark stands alone")
        } else {
            format!("unexpected field `{extra}` in an event (it has `key`, `value` and `ts`)")
        });
    }
    if let Some(mark) = object.remove("mark") {
        return Ok(Line::Mark(mark));
    }
    if let Some(w) = integer(&object, "watermark")? {
        return Ok(Line::Watermark(w));
    }
    if let Some(t) = integer(&object, "advance")? {
        return Ok(Line::Advance(t));
    }
    let value = integer(&object, "value")?.ok_or("`value` is required")?;
    let key = match object.remove("key") {
        None => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => return Err(format!("`key` must be a string, got {other}")),
    };
    let ts = integer(&object, "ts")?;
    if needs_ts && ts.is_none() {
        return Err("`ts` is required for event-time windows".into());
    }
    Ok(Line::Event { key, value, ts })
}

/// Replays `input` through `window`, writing results to `output`. With `lag`, a watermark of
/// `max_ts - lag - 1` follows every event. Stops at the first malformed line.
pub fn replay(
    window: &Window,
    mut input: impl BufRead,
    mut output: impl Write,
) -> Result<(), ReplayError> {
    let mut core: WindowCore<String, Contents> =
        WindowCore::new(window).map_err(|e| ReplayError::Malformed {
            line: 0,
            message: e.to_string(),
        })?;
    let needs_ts = core.is_event_time();
    let lag = window.lag_ms;
    let mut host = JsonHost {
        out: &mut output,
        current: None,
        error: None,
    };
    let mut max_ts = i64::MIN;
    let mut seq = 0u64;
    let mut buf = Vec::new();
    let mut number = 0;
    while read_line(&mut input, &mut buf, number + 1)? {
        number += 1;
        let text = std::str::from_utf8(&buf).map_err(|e| ReplayError::Malformed {
            line: number,
            message: format!("not UTF-8: {e}"),
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let parsed = parse_line(text, needs_ts).map_err(|message| ReplayError::Malformed {
            line: number,
            message,
        })?;
        match parsed {
            Line::Event { key, value, ts } => {
                seq += 1;
                host.current = Some(Current { seq, value, ts });
                core.insert(key, ts.unwrap_or(0), &mut host);
                host.current = None;
                if let (Some(lag), Some(ts)) = (lag, ts.filter(|_| needs_ts)) {
                    max_ts = max_ts.max(ts);
                    let wm = max_ts.saturating_sub(lag).saturating_sub(1);
                    core.advance_watermark(wm, &mut host);
                }
            }
            Line::Watermark(w) => core.advance_watermark(w, &mut host),
            Line::Advance(t) => core.advance_processing_time(t, &mut host),
            Line::Mark(mark) => {
                host.write(&MarkLine { mark: &mark });
                host.out.flush()?;
            }
        }
        if let Some(e) = host.error.take() {
            return Err(e.into());
        }
    }
    core.advance_watermark(i64::MAX, &mut host);
    core.advance_processing_time(i64::MAX, &mut host);
    if let Some(e) = host.error.take() {
        return Err(e.into());
    }
    host.out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kind: KindArg) -> WindowArgs {
        WindowArgs {
            kind,
            measure: MeasureArg::Time,
            size: Some(3000),
            slide: None,
            gap: None,
            time: TimeArg::Event,
            lag: None,
            allowed_lateness: None,
            offset: None,
        }
    }

    fn run(window: &Window, input: &str) -> Vec<String> {
        let mut out = Vec::new();
        replay(window, input.as_bytes(), &mut out).expect("replays");
        String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_tumbling_window_fires_at_the_end_of_the_input() {
        let w = window_from_args(&args(KindArg::Tumbling)).expect("valid");
        let out = run(
            &w,
            "{\"key\":\"a\",\"value\":2,\"ts\":0}\n{\"key\":\"a\",\"value\":3,\"ts\":2999}\n",
        );
        assert_eq!(
            out,
            [r#"{"key":"a","start":0,"end":3000,"count":2,"sum":5,"values":[2,3]}"#]
        );
    }

    #[test]
    fn malformed_lines_name_their_number() {
        let w = window_from_args(&args(KindArg::Tumbling)).expect("valid");
        let mut out = Vec::new();
        let err =
            replay(&w, "{\"mark\":1}\n\n{\"value\":1}\n".as_bytes(), &mut out).expect_err("no ts");
        assert_eq!(
            err.to_string(),
            "line 3: `ts` is required for event-time windows"
        );
    }

    #[test]
    fn lines_of_one_kind_refuse_the_fields_of_another() {
        let w = window_from_args(&args(KindArg::Tumbling)).expect("valid");
        for (line, message) in [
            (
                r#"{"watermark":1,"key":"a"}"#,
                "line 1: unexpected field `key`: a watermark, an advance or a mark stands alone",
            ),
            (
                r#"{"value":1,"ts":5,"tss":6}"#,
                "line 1: unexpected field `tss` in an event (it has `key`, `value` and `ts`)",
            ),
            (
                r#"{"value":1,"ts":5,"mark":"m"}"#,
                "line 1: a line is one of an event, a watermark, an advance or a mark",
            ),
        ] {
            let err = replay(&w, line.as_bytes(), &mut Vec::new()).expect_err(line);
            assert_eq!(err.to_string(), message, "{line}");
        }
    }
}
