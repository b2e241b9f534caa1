//! The JSON that `--format json` prints: stable field names, documented in README.md ("JSON
//! output"). These types are the contract; the internal types they are made from may change.

use std::path::Path;

use chrono::{DateTime, Local, SecondsFormat};
use miette::Diagnostic;
use serde::Serialize;

use crate::error::{Invalid, Problem};
use crate::events::{RunSummary, StageResult};
use crate::report::logread::RunResult;
use crate::report::mask::Masker;

/// `{ "valid": false, "file": …, "problems": [...] }`: what any command given `--format json`
/// prints on stdout when it stops on bad input (exit 2).
#[derive(Debug, Serialize)]
pub struct InvalidJson {
    pub valid: bool,
    pub file: String,
    pub problems: Vec<ProblemJson>,
}

/// One diagnostic. `file`, `line` and `column` (1-based) are `null` for a problem that is not
/// in a file (the command line, a secret that is not set, …).
#[derive(Debug, Serialize)]
pub struct ProblemJson {
    pub message: String,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub column: Option<u64>,
    /// The short text shown under the place (`unknown key`).
    pub label: Option<String>,
    /// What to do about it (`did you mean `needs`?`).
    pub help: Option<String>,
    /// Other places that belong to this problem (the first declaration of a duplicate stage).
    pub related: Vec<ProblemJson>,
}

impl InvalidJson {
    /// The document, pretty-printed.
    pub fn render(invalid: &Invalid, file: &Path) -> String {
        serde_json::to_string_pretty(&InvalidJson::new(invalid, file)).unwrap_or_default()
    }

    pub fn new(invalid: &Invalid, file: &Path) -> Self {
        InvalidJson {
            valid: false,
            file: file.display().to_string(),
            problems: invalid.problems.iter().map(ProblemJson::new).collect(),
        }
    }
}

impl ProblemJson {
    pub fn new(problem: &Problem) -> Self {
        let place = problem.place();
        // The primary label (the first one) is the one at the place.
        let label = problem
            .labels()
            .and_then(|mut labels| labels.next())
            .and_then(|label| label.label().map(str::to_owned));
        ProblemJson {
            message: problem.message().to_owned(),
            file: place.map(|p| p.file.display().to_string()),
            line: place.map(|p| p.line),
            column: place.map(|p| p.column),
            label,
            help: problem.help_text().map(str::to_owned),
            related: problem
                .related_problems()
                .iter()
                .map(ProblemJson::new)
                .collect(),
        }
    }
}

/// `run --format json`: the final summary.
#[derive(Debug, Serialize)]
pub struct RunJson {
    pub pipeline: String,
    /// RFC 3339, local time, milliseconds.
    pub started_at: String,
    /// `passed`, `failed` or `cancelled` (from `exit_code`).
    pub result: &'static str,
    /// The process's exit code (see "Exit codes").
    pub exit_code: i32,
    pub duration_seconds: f64,
    /// The run log's path.
    pub log: Option<String>,
    /// Every selected stage, in plan order.
    pub stages: Vec<StageRunJson>,
}

#[derive(Debug, Serialize)]
pub struct StageRunJson {
    pub name: String,
    /// `passed`, `failed`, `failed_allowed`, `timed_out`, `cancelled` or `skipped`.
    pub result: StageResult,
    /// Over every attempt; 0 when skipped.
    pub duration_seconds: f64,
    /// 0 when skipped.
    pub attempts: u32,
    /// The outcome or the reason it was skipped, in words (`failed (exit 1)`).
    pub detail: String,
}

impl RunJson {
    pub fn new(summary: &RunSummary, pipeline: &str, started_at: DateTime<Local>) -> Self {
        RunJson {
            pipeline: pipeline.to_owned(),
            started_at: started_at.to_rfc3339_opts(SecondsFormat::Millis, false),
            result: RunResult::of_exit_code(summary.exit_code).as_str(),
            exit_code: summary.exit_code,
            duration_seconds: seconds(summary.duration),
            log: summary.log.as_ref().map(|p| p.display().to_string()),
            stages: summary
                .stages
                .iter()
                .map(|row| StageRunJson {
                    name: row.stage.to_string(),
                    result: row.result.clone(),
                    duration_seconds: seconds(row.duration),
                    attempts: row.attempts,
                    detail: row.detail.clone(),
                })
                .collect(),
        }
    }
}

impl RunJson {
    /// With every text masked (the summary's texts are masked already; the pipeline's name
    /// and the log's path are not).
    #[must_use]
    pub fn masked(mut self, masker: &Masker) -> Self {
        let mask = |text: &mut String| {
            if let std::borrow::Cow::Owned(masked) = masker.mask_str(text) {
                *text = masked;
            }
        };
        mask(&mut self.pipeline);
        if let Some(log) = &mut self.log {
            mask(log);
        }
        for stage in &mut self.stages {
            mask(&mut stage.name);
            mask(&mut stage.detail);
        }
        self
    }
}

/// Seconds with millisecond precision (`1.234`), as every JSON duration is given.
pub fn seconds(duration: std::time::Duration) -> f64 {
    // Milliseconds fit an f64 exactly for any run shorter than 285 000 years.
    #[allow(clippy::cast_precision_loss)]
    let millis = duration.as_millis() as f64;
    millis / 1000.0
}
