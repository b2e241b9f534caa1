//! The record of how each stage of the run ended (`store::lastrun`), for `run --failed`;
//! written when the run ends.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;

use crate::events::{RunEvent, SkipReason, StageResult};
use crate::store::lastrun::{self, LastRun, StageEnd};

pub struct LastRunSink {
    state_dir: PathBuf,
    /// Stages skipped because something before them failed (or the run was cancelled).
    skipped_by_failure: HashMap<String, bool>,
}

impl LastRunSink {
    pub fn new(state_dir: PathBuf) -> Self {
        LastRunSink {
            state_dir,
            skipped_by_failure: HashMap::new(),
        }
    }
}

impl super::Sink for LastRunSink {
    fn report(&mut self, event: &RunEvent) -> io::Result<()> {
        match event {
            RunEvent::StageSkipped { stage, reason, .. } => {
                let by_failure = matches!(
                    reason,
                    SkipReason::Blocked { .. }
                        | SkipReason::FailedBefore { .. }
                        | SkipReason::Cancelled
                );
                self.skipped_by_failure
                    .insert(stage.to_string(), by_failure);
            }
            RunEvent::RunFinished(summary) => {
                let stages = summary
                    .stages
                    .iter()
                    .map(|row| {
                        let name = row.stage.to_string();
                        let rerun = match row.result {
                            StageResult::Failed
                            | StageResult::TimedOut
                            | StageResult::Cancelled => true,
                            StageResult::Skipped => {
                                self.skipped_by_failure.get(&name).copied().unwrap_or(false)
                            }
                            _ => false,
                        };
                        let result = serde_json::to_value(&row.result)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        StageEnd {
                            name,
                            result,
                            rerun,
                        }
                    })
                    .collect();
                let run = LastRun {
                    log: summary
                        .log
                        .as_ref()
                        .and_then(|l| l.file_name())
                        .map(|n| n.to_string_lossy().into_owned()),
                    stages,
                };
                lastrun::save(&self.state_dir, &run)?;
            }
            _ => {}
        }
        Ok(())
    }
}
