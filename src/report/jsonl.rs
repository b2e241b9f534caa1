//! `run --format jsonl`: the run as it happens, one JSON object per line on stdout, flushed
//! per line, for programs to read (a dashboard, an editor, a script). Field names are a
//! contract, documented in README.md ("JSON Lines event stream").
//!
//! Every object has `event` and `elapsed` (seconds since the run started, milliseconds
//! precision). A stage's output comes one object per line, without its newline.

use std::io::{self, Write};

use chrono::SecondsFormat;
use serde::Serialize;
use serde_json::json;

use super::json::{RunJson, seconds};
use crate::events::{Outcome, RunEvent};

/// Writes each event as a line of JSON.
pub struct JsonLines<W> {
    out: W,
    pipeline: String,
    started_at: Option<chrono::DateTime<chrono::Local>>,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        JsonLines {
            out,
            pipeline: String::new(),
            started_at: None,
        }
    }

    fn line(&mut self, value: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

impl<W: Write> super::Sink for JsonLines<W> {
    fn report(&mut self, event: &RunEvent) -> io::Result<()> {
        match event {
            RunEvent::RunStarted(header) => {
                self.pipeline.clone_from(&header.pipeline);
                self.started_at = Some(header.started_at);
                let stages: Vec<_> = header
                    .stages
                    .iter()
                    .map(|s| json!({ "name": s.name, "command": s.command }))
                    .collect();
                self.line(&json!({
                    "event": "run_started",
                    "elapsed": 0.0,
                    "pipeline": header.pipeline,
                    "started_at": header.started_at.to_rfc3339_opts(SecondsFormat::Millis, false),
                    "trigger": header.trigger,
                    "selection": header.selection,
                    "jobs": header.jobs,
                    "log": header.log,
                    "stages": stages,
                }))
            }
            RunEvent::StageStarted {
                stage,
                attempt,
                command,
                interactive,
                elapsed,
            } => self.line(&json!({
                "event": "stage_started",
                "elapsed": seconds(*elapsed),
                "stage": stage,
                "attempt": attempt,
                "command": command,
                "interactive": interactive,
            })),
            RunEvent::StageOutput {
                stage,
                bytes,
                elapsed,
            } => {
                for line in bytes.split_inclusive(|b| *b == b'\n') {
                    let line = line.strip_suffix(b"\n").unwrap_or(line);
                    self.line(&json!({
                        "event": "stage_output",
                        "elapsed": seconds(*elapsed),
                        "stage": stage,
                        "text": String::from_utf8_lossy(line),
                    }))?;
                }
                Ok(())
            }
            RunEvent::StageFinished {
                stage,
                attempt,
                outcome,
                note,
                details,
                deploy,
                publish,
                duration,
                will_retry,
                elapsed,
            } => {
                let (code, signal, message) = match outcome {
                    Outcome::Failed { code, signal } => (*code, *signal, None),
                    Outcome::NotStarted { message } => (None, None, Some(message.as_str())),
                    _ => (None, None, None),
                };
                self.line(&json!({
                    "event": "stage_finished",
                    "elapsed": seconds(*elapsed),
                    "stage": stage,
                    "attempt": attempt,
                    "outcome": outcome_kind(outcome),
                    "exit_code": code,
                    "signal": signal,
                    "message": message,
                    "detail": outcome.describe(),
                    "note": note,
                    "details": details,
                    "duration": seconds(*duration),
                    "will_retry": will_retry,
                    "deploy": deploy,
                    "publish": publish,
                }))
            }
            RunEvent::StageSkipped {
                stage,
                reason,
                elapsed,
            } => self.line(&json!({
                "event": "stage_skipped",
                "elapsed": seconds(*elapsed),
                "stage": stage,
                "reason": reason,
                "detail": reason.describe(),
            })),
            RunEvent::RunFinished(summary) => {
                let started_at = self.started_at.unwrap_or_default();
                let run = RunJson::new(summary, &self.pipeline, started_at);
                let mut value = serde_json::to_value(run)?;
                if let Some(fields) = value.as_object_mut() {
                    fields.insert("event".into(), json!("run_finished"));
                    fields.insert("elapsed".into(), json!(seconds(summary.duration)));
                }
                self.line(&value)
            }
        }
    }
}

fn outcome_kind(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Passed => "passed",
        Outcome::Failed { .. } => "failed",
        Outcome::TimedOut { .. } => "timed_out",
        Outcome::NotStarted { .. } => "not_started",
        Outcome::Cancelled => "cancelled",
    }
}
