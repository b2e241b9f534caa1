//! The end-of-run table and the wording every reporter shares for results and durations.
//!
//! Everything here returns plain text; the terminal colours it through the `paint` hook of
//! [`render_table_with`], the run log writes it as is.

use std::fmt::Write as _;
use std::time::Duration;

use crate::events::{Outcome, RunSummary, StageResult, SummaryRow};

/// A compact duration: `0.3s`, `12.0s`, `2m03s`, `1h02m`.
pub fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    let tenths = (millis + 50) / 100;
    if tenths < 600 {
        return format!("{}.{}s", tenths / 10, tenths % 10);
    }
    let secs = (millis + 500) / 1000;
    if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    }
}

/// How an attempt ended, in words: `passed in 1.2s`, `failed (exit 1) in 0.3s`,
/// `timed out after 1m`.
pub fn finish_text(outcome: &Outcome, duration: Duration) -> String {
    match outcome {
        // Their description already says how long or that nothing ran.
        Outcome::TimedOut { .. } | Outcome::NotStarted { .. } => outcome.describe(),
        Outcome::Cancelled => format!("{} after {}", outcome.describe(), format_duration(duration)),
        Outcome::Passed | Outcome::Failed { .. } => {
            format!("{} in {}", outcome.describe(), format_duration(duration))
        }
    }
}

/// What follows [`finish_text`] about retries: ` (attempt 2)`, `, will retry`, or nothing.
pub fn attempt_note(attempt: u32, will_retry: bool, note: Option<&str>) -> String {
    let mut text = String::new();
    if attempt > 1 {
        let _ = write!(text, " (attempt {attempt})");
    }
    if will_retry {
        text.push_str(", will retry");
    }
    if let Some(note) = note {
        let _ = write!(text, ": {note}");
    }
    text
}

/// The word for a result in the table's `result` column.
pub fn result_label(result: &StageResult) -> &'static str {
    match result {
        StageResult::Passed => "passed",
        StageResult::Failed => "failed",
        StageResult::FailedAllowed => "failed (allowed)",
        StageResult::TimedOut => "timed out",
        StageResult::Cancelled => "cancelled",
        StageResult::Skipped => "skipped",
        StageResult::Cached => "cached",
    }
}

/// The summary as an aligned plain-text table followed by a totals line.
pub fn render_table(summary: &RunSummary) -> String {
    render_table_with(summary, |_, text| text.to_owned())
}

/// [`render_table`], with `paint` wrapping every result word (and each count of the totals
/// line) so a caller can colour it; alignment is computed on the unpainted text.
pub fn render_table_with(
    summary: &RunSummary,
    paint: impl Fn(&StageResult, &str) -> String,
) -> String {
    let mut out = String::new();
    if !summary.stages.is_empty() {
        let show_attempts = summary.stages.iter().any(|row| row.attempts > 1);
        let mut header = Row {
            stage: "stage".into(),
            result: None,
            duration: "duration".into(),
            attempts: "attempts".into(),
            detail: "detail".into(),
        };
        let mut rows: Vec<Row> = summary.stages.iter().map(Row::new).collect();
        if rows.iter().all(|row| row.detail.is_empty()) {
            header.detail.clear();
        }
        rows.insert(0, header);
        let widths = Widths {
            stage: rows.iter().map(|r| r.stage.len()).max().unwrap_or(0),
            result: rows
                .iter()
                .map(|r| r.result_text().len())
                .max()
                .unwrap_or(0),
            duration: rows.iter().map(|r| r.duration.len()).max().unwrap_or(0),
            attempts: rows.iter().map(|r| r.attempts.len()).max().unwrap_or(0),
        };
        for row in &rows {
            row.write(&mut out, &widths, show_attempts, &paint);
        }
        out.push('\n');
    }
    out.push_str(&totals_line_with(summary, &paint));
    out.push('\n');
    out
}

/// `3 passed, 1 failed, 2 skipped in 4.1s`.
pub fn totals_line(summary: &RunSummary) -> String {
    totals_line_with(summary, &|_: &StageResult, text: &str| text.to_owned())
}

fn totals_line_with(summary: &RunSummary, paint: &impl Fn(&StageResult, &str) -> String) -> String {
    let kinds = [
        (StageResult::Passed, "passed"),
        (StageResult::Failed, "failed"),
        (StageResult::FailedAllowed, "allowed to fail"),
        (StageResult::TimedOut, "timed out"),
        (StageResult::Cancelled, "cancelled"),
        (StageResult::Skipped, "skipped"),
        (StageResult::Cached, "cached"),
    ];
    let counts: Vec<String> = kinds
        .iter()
        .filter_map(|(kind, words)| {
            let count = summary.stages.iter().filter(|r| r.result == *kind).count();
            (count > 0).then(|| paint(kind, &format!("{count} {words}")))
        })
        .collect();
    let counts = if counts.is_empty() {
        "no stages".to_owned()
    } else {
        counts.join(", ")
    };
    format!("{counts} in {}", format_duration(summary.duration))
}

/// One line of the table, as the unpadded text of each cell; `result` is `None` for the header.
struct Row {
    stage: String,
    result: Option<StageResult>,
    duration: String,
    attempts: String,
    detail: String,
}

struct Widths {
    stage: usize,
    result: usize,
    duration: usize,
    attempts: usize,
}

impl Row {
    fn new(row: &SummaryRow) -> Self {
        let skipped = row.result == StageResult::Skipped;
        let label = result_label(&row.result);
        // The detail of a passed stage is usually just "passed": repeating it is noise.
        let detail = if row.detail == label {
            String::new()
        } else {
            row.detail
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        };
        Row {
            stage: row.stage.to_string(),
            result: Some(row.result.clone()),
            duration: if skipped {
                "-".into()
            } else {
                format_duration(row.duration)
            },
            attempts: if skipped {
                "-".into()
            } else {
                row.attempts.to_string()
            },
            detail,
        }
    }

    fn result_text(&self) -> &'static str {
        self.result.as_ref().map_or("result", result_label)
    }

    fn write(
        &self,
        out: &mut String,
        widths: &Widths,
        show_attempts: bool,
        paint: &impl Fn(&StageResult, &str) -> String,
    ) {
        let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n));

        out.push_str(&self.stage);
        pad(out, widths.stage - self.stage.len() + 2);
        let result = self.result_text();
        match &self.result {
            Some(kind) => out.push_str(&paint(kind, result)),
            None => out.push_str(result),
        }
        pad(out, widths.result - result.len() + 2);
        pad(out, widths.duration - self.duration.len());
        out.push_str(&self.duration);
        if show_attempts {
            pad(out, 2 + widths.attempts - self.attempts.len());
            out.push_str(&self.attempts);
        }
        if !self.detail.is_empty() {
            out.push_str("  ");
            out.push_str(&self.detail);
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::StageName;

    fn row(
        stage: &str,
        result: StageResult,
        millis: u64,
        attempts: u32,
        detail: &str,
    ) -> SummaryRow {
        SummaryRow {
            stage: StageName::parse(stage).expect("valid stage name"),
            result,
            duration: Duration::from_millis(millis),
            attempts,
            detail: detail.into(),
        }
    }

    fn sample() -> RunSummary {
        RunSummary {
            stages: vec![
                row("clone", StageResult::Passed, 1_234, 1, "passed"),
                row("build", StageResult::Passed, 300, 1, "passed"),
                row("test", StageResult::Failed, 123_400, 2, "failed (exit 1)"),
                row("lint", StageResult::FailedAllowed, 80, 1, "failed (exit 3)"),
                row(
                    "integration",
                    StageResult::TimedOut,
                    90_000,
                    1,
                    "timed out after 1m 30s",
                ),
                row(
                    "deploy",
                    StageResult::Skipped,
                    0,
                    0,
                    "`test` did not succeed",
                ),
                row(
                    "notify",
                    StageResult::Skipped,
                    0,
                    0,
                    "on_failure, and nothing failed",
                ),
            ],
            duration: Duration::from_millis(216_500),
            exit_code: 1,
            log: None,
        }
    }

    #[test]
    fn table_with_every_result() {
        insta::assert_snapshot!(render_table(&sample()));
    }

    #[test]
    fn table_without_retries_has_no_attempts_column() {
        let summary = RunSummary {
            stages: vec![
                row("clone", StageResult::Passed, 1_234, 1, "passed"),
                row("test", StageResult::Passed, 4_100, 1, "passed"),
            ],
            duration: Duration::from_millis(5_400),
            exit_code: 0,
            log: None,
        };
        insta::assert_snapshot!(render_table(&summary));
    }

    #[test]
    fn empty_run_is_one_line() {
        let summary = RunSummary {
            stages: vec![],
            duration: Duration::from_millis(12),
            exit_code: 0,
            log: None,
        };
        assert_eq!(render_table(&summary), "no stages in 0.0s\n");
    }

    #[test]
    fn painting_does_not_change_alignment() {
        let plain = render_table(&sample());
        let painted = render_table_with(&sample(), |_, text| format!("<{text}>"));
        assert_eq!(painted.replace(['<', '>'], ""), plain);
    }

    #[test]
    fn totals_count_each_result() {
        assert_eq!(
            totals_line(&sample()),
            "2 passed, 1 failed, 1 allowed to fail, 1 timed out, 2 skipped in 3m37s"
        );
    }

    #[test]
    fn durations_are_compact() {
        let cases = [
            (0, "0.0s"),
            (300, "0.3s"),
            (1_250, "1.3s"),
            (12_000, "12.0s"),
            (59_940, "59.9s"),
            (59_960, "1m00s"),
            (123_000, "2m03s"),
            (3_599_600, "1h00m"),
            (3_720_000, "1h02m"),
            (90_000_000, "25h00m"),
        ];
        for (millis, text) in cases {
            assert_eq!(
                format_duration(Duration::from_millis(millis)),
                text,
                "{millis} ms"
            );
        }
    }

    #[test]
    fn finish_text_adds_the_duration_only_when_it_says_something() {
        let d = Duration::from_millis(300);
        assert_eq!(finish_text(&Outcome::Passed, d), "passed in 0.3s");
        let failed = Outcome::Failed {
            code: Some(1),
            signal: None,
        };
        assert_eq!(finish_text(&failed, d), "failed (exit 1) in 0.3s");
        let timed_out = Outcome::TimedOut {
            after: Duration::from_secs(1),
        };
        assert_eq!(finish_text(&timed_out, d), "timed out after 1s");
    }

    #[test]
    fn attempt_note_mentions_retries_only() {
        assert_eq!(attempt_note(1, false, None), "");
        assert_eq!(attempt_note(1, true, None), ", will retry");
        assert_eq!(attempt_note(3, false, None), " (attempt 3)");
        assert_eq!(attempt_note(1, false, Some("2 passed")), ": 2 passed");
    }
}
