//! Synthetic runs shared by the reporters' tests.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Local};

use crate::events::{
    Outcome, PlannedStage, RunEvent, RunHeader, RunSummary, SkipReason, StageResult, SummaryRow,
};
use crate::pipeline::StageName;

pub(crate) fn name(stage: &str) -> StageName {
    StageName::parse(stage).expect("valid stage name")
}

/// `lint` passes while `test` fails, is retried and fails again; `deploy` is then skipped.
pub(crate) fn sample_run(started_at: DateTime<Local>, log: Option<PathBuf>) -> Vec<RunEvent> {
    let ms = Duration::from_millis;
    let failed = Outcome::Failed {
        code: Some(1),
        signal: None,
    };
    vec![
        RunEvent::RunStarted(RunHeader {
            pipeline: "sample-app".into(),
            trigger: crate::events::Trigger::Manual,
            started_at,
            selection: "run deploy".into(),
            jobs: 2,
            log: log.clone(),
            stages: vec![
                PlannedStage {
                    name: name("lint"),
                    command: "ruff check .".into(),
                },
                PlannedStage {
                    name: name("test"),
                    command: "pytest -v".into(),
                },
                PlannedStage {
                    name: name("deploy"),
                    command: "set -e\ngit push origin master\n".into(),
                },
            ],
        }),
        RunEvent::StageStarted {
            stage: name("lint"),
            attempt: 1,
            command: "ruff check .".into(),
            interactive: false,
            elapsed: ms(5),
        },
        RunEvent::StageStarted {
            stage: name("test"),
            attempt: 1,
            command: "pytest -v".into(),
            interactive: false,
            elapsed: ms(10),
        },
        RunEvent::StageOutput {
            stage: name("test"),
            bytes: b"collected 2 items\n\ntest_a.py::test_one PASSED\n".to_vec(),
            elapsed: ms(400),
        },
        RunEvent::StageOutput {
            stage: name("lint"),
            bytes: b"All checks passed!\n".to_vec(),
            elapsed: ms(450),
        },
        RunEvent::StageFinished {
            details: None,
            deploy: None,
            publish: None,
            note: None,
            stage: name("lint"),
            attempt: 1,
            outcome: Outcome::Passed,
            duration: ms(445),
            will_retry: false,
            elapsed: ms(451),
        },
        RunEvent::StageOutput {
            stage: name("test"),
            bytes: b"test_a.py::test_two \x1b[31mFAILED\x1b[0m".to_vec(),
            elapsed: ms(700),
        },
        RunEvent::StageFinished {
            details: None,
            deploy: None,
            publish: None,
            note: None,
            stage: name("test"),
            attempt: 1,
            outcome: failed.clone(),
            duration: ms(700),
            will_retry: true,
            elapsed: ms(710),
        },
        RunEvent::StageStarted {
            stage: name("test"),
            attempt: 2,
            command: "pytest -v".into(),
            interactive: false,
            elapsed: ms(720),
        },
        RunEvent::StageFinished {
            details: None,
            deploy: None,
            publish: None,
            note: None,
            stage: name("test"),
            attempt: 2,
            outcome: failed,
            duration: ms(500),
            will_retry: false,
            elapsed: ms(1_220),
        },
        RunEvent::StageSkipped {
            stage: name("deploy"),
            reason: SkipReason::Blocked { by: name("test") },
            elapsed: ms(1_221),
        },
        RunEvent::RunFinished(RunSummary {
            stages: vec![
                SummaryRow {
                    stage: name("lint"),
                    result: StageResult::Passed,
                    duration: ms(445),
                    attempts: 1,
                    detail: "passed".into(),
                },
                SummaryRow {
                    stage: name("test"),
                    result: StageResult::Failed,
                    duration: ms(1_200),
                    attempts: 2,
                    detail: "failed (exit 1)".into(),
                },
                SummaryRow {
                    stage: name("deploy"),
                    result: StageResult::Skipped,
                    duration: Duration::ZERO,
                    attempts: 0,
                    detail: "`test` did not succeed".into(),
                },
            ],
            duration: ms(1_230),
            exit_code: 1,
            log,
        }),
    ]
}
