//! `run --format json`: the run's summary as one JSON document on stdout when the run ends.
//! Field names are a contract, documented in README.md ("JSON output").

use std::io::{self, Write};

use chrono::{DateTime, Local, SecondsFormat};
use serde::Serialize;

use crate::events::{RunEvent, RunSummary, StageResult};
use crate::store::logs::RunResult;

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

/// Prints the [`RunJson`] of the run when it finishes.
pub struct JsonSummary<W> {
    out: W,
    started: Option<(String, DateTime<Local>)>,
}

impl<W: Write> JsonSummary<W> {
    pub fn new(out: W) -> Self {
        JsonSummary { out, started: None }
    }
}

impl<W: Write> super::Sink for JsonSummary<W> {
    fn report(&mut self, event: &RunEvent) -> io::Result<()> {
        match event {
            RunEvent::RunStarted(header) => {
                self.started = Some((header.pipeline.clone(), header.started_at));
            }
            RunEvent::RunFinished(summary) => {
                let (pipeline, started_at) = self.started.clone().unwrap_or_default();
                let json = RunJson::new(summary, &pipeline, started_at);
                serde_json::to_writer_pretty(&mut self.out, &json)?;
                self.out.write_all(b"\n")?;
                self.out.flush()?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Seconds with millisecond precision (`1.234`), as every JSON duration is given.
pub fn seconds(duration: std::time::Duration) -> f64 {
    // Milliseconds fit an f64 exactly for any run shorter than 285 000 years.
    #[allow(clippy::cast_precision_loss)]
    let millis = duration.as_millis() as f64;
    millis / 1000.0
}
