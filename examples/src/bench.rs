//! Helpers shared by the benchmark commands: peak memory, medians, and the `RESULT` line.

use std::fmt::Write as _;

/// The process's peak resident set size in KiB (Linux `VmHWM`), or `None` where unknown.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The median of `values` (the mean of the middle two for an even count), or `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// Builds a `RESULT key=value ...` line, `ok` last: the last line of every benchmark, for scripts.
#[derive(Debug, Default)]
pub struct ResultLine {
    fields: Vec<(String, String)>,
}

impl ResultLine {
    /// An empty line.
    pub fn new() -> Self {
        ResultLine::default()
    }

    /// Adds `key=value`.
    pub fn field(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        self.fields.push((key.to_owned(), value.to_string()));
        self
    }

    /// Renders the line with `prefix` (`RESULT`, or `RUN` for one of several runs) and `ok`.
    pub fn render(&self, prefix: &str, ok: bool) -> String {
        let mut line = prefix.to_owned();
        for (k, v) in &self.fields {
            let _ = write!(line, " {k}={v}");
        }
        let _ = write!(line, " ok={ok}");
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn result_lines_end_with_ok() {
        let line = ResultLine::new()
            .field("workload", "wordcount")
            .field("rate", "10/s")
            .render("RESULT", true);
        assert_eq!(line, "RESULT workload=wordcount rate=10/s ok=true");
    }

    #[test]
    fn peak_rss_is_known_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_kb().is_some_and(|kb| kb > 0));
        }
    }
}
