//! What happens during a run, as plain data.
//!
//! The runner produces these and nothing else leaves `exec/`; every reporter (terminal, log
//! file, summary, JSON) is a function of this stream. Times are offsets from the run's start so
//! that producing an event never asks the clock for the time of day.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Local};
use serde::Serialize;

use crate::object_id::ObjectId;
use crate::pipeline::StageName;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    RunStarted(RunHeader),
    StageStarted {
        stage: StageName,
        /// 1 for the first try, 2 for the first retry, …
        attempt: u32,
        /// The command as the user would type it.
        command: String,
        /// Its stdin is the terminal: its output is shown as it comes, and it runs alone.
        interactive: bool,
        elapsed: Duration,
    },
    /// Output of a running stage: whole lines (each ending in `\n`), except that a line longer
    /// than the reader's buffer arrives in pieces, the last piece of a stage may lack `\n`, and
    /// an interactive stage's output comes as it was read (a prompt without its newline).
    /// stdout and stderr are merged in the order the stage wrote them.
    StageOutput {
        stage: StageName,
        #[serde(serialize_with = "lossy")]
        bytes: Vec<u8>,
        elapsed: Duration,
    },
    StageFinished {
        stage: StageName,
        attempt: u32,
        outcome: Outcome,
        /// What the stage's action adds (pytest: counts and failed tests).
        note: Option<String>,
        /// What to show under the stage when it failed for good, instead of the last lines of
        /// its output (pytest: the failure sections, the assertion and its traceback).
        details: Option<String>,
        /// A deploy or rollback stage's last attempt: what it pushed, where. Found by the
        /// action itself (its post-step), not by whoever reads the event.
        deploy: Option<Box<Deployed>>,
        /// A `python/publish` stage's last attempt: what it uploaded, where.
        publish: Option<Box<Published>>,
        /// This attempt's duration.
        duration: Duration,
        /// The scheduler will run the stage again.
        will_retry: bool,
        elapsed: Duration,
    },
    /// A selected stage that will not run, and why.
    StageSkipped {
        stage: StageName,
        reason: SkipReason,
        elapsed: Duration,
    },
    RunFinished(RunSummary),
}

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A person typed a command (or chose it in the menu).
    #[default]
    Manual,
    /// `pydeployer watch`: a new commit on the branch, or a change in the project folder.
    Watch,
    /// A stage's `schedule:` came due (`schedule run`, or cron after `schedule install`).
    Schedule,
    /// `deploy ENV` of an environment that `requires` another: the commit live there.
    Promote,
    /// pydeployer itself: the rollback of an unhealthy deploy.
    Auto,
}

impl Trigger {
    /// The word written in the log header, the ledger and the JSON (`manual`, `watch`, …).
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Watch => "watch",
            Trigger::Schedule => "schedule",
            Trigger::Promote => "promote",
            Trigger::Auto => "auto",
        }
    }

    /// Whether a run started this way may have a deploy approved (`approval: true`). A watch
    /// or a schedule never approves: nobody is there to say yes, and a commit must not reach
    /// an approval environment because it was pushed or because it is 3 o'clock; nor does
    /// pydeployer itself (an automatic rollback).
    pub fn may_approve(self) -> bool {
        match self {
            Trigger::Manual | Trigger::Promote => true,
            Trigger::Watch | Trigger::Schedule | Trigger::Auto => false,
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who said yes to a deploy, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Approval {
    /// The user name.
    pub by: String,
    pub at: DateTime<chrono::FixedOffset>,
}

/// What an environment's health check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HealthReport {
    /// `healthy` or `unhealthy`.
    pub result: HealthResult,
    /// How long the check took, in milliseconds.
    pub took_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthResult {
    Healthy,
    Unhealthy,
}

/// What a run is about to do.
#[derive(Debug, Clone, Serialize)]
pub struct RunHeader {
    pub pipeline: String,
    pub trigger: Trigger,
    pub started_at: DateTime<Local>,
    /// How the user selected the stages (`run`, `run test`, `run --only test`, …).
    pub selection: String,
    pub jobs: usize,
    pub log: Option<PathBuf>,
    /// Every stage that may run, in plan order, with its command.
    pub stages: Vec<PlannedStage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedStage {
    pub name: StageName,
    pub command: String,
}

/// What a deploy (`git/push`) or rollback (`git/revert`) stage did, for the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployed {
    pub kind: DeployKind,
    /// Deployed with `--force` although it had not passed the stages it needs.
    pub forced: bool,
    /// The repository's URL or path, as configured (credentials masked like any secret).
    pub repo: String,
    pub remote: String,
    pub branch: String,
    /// The commit the workspace held after the stage (a full object id); `None` when it
    /// could not be read.
    pub commit: Option<ObjectId>,
    /// What the remote's branch pointed at before, as the workspace last saw it; `None` when
    /// it had no such branch.
    pub previous_commit: Option<ObjectId>,
    /// The environment pushed to (`with: { environment }`); `None`: `repo.remote`.
    pub environment: Option<String>,
    /// Why it happened: `manual`, `promote`, `auto` (an unhealthy deploy's rollback).
    pub trigger: Trigger,
    pub approved_by: Option<Approval>,
    /// The environment's health check after the push, when it has one.
    pub health: Option<HealthReport>,
    /// A rollback: the ledger entry whose files it gave back.
    pub rolled_back_to: Option<u64>,
    /// An unhealthy deploy that was rolled back at once: that rollback.
    pub auto_rollback: Option<Box<Deployed>>,
}

impl Deployed {
    /// What the health check of an environment's deploy said, for the stage's summary line:
    /// `staging at 2c72635: healthy after 1.0s`, or unhealthy and what its rollback gave.
    /// `None` without an environment or a health check.
    pub fn health_note(&self) -> Option<String> {
        let environment = self.environment.as_deref()?;
        let report = self.health.as_ref()?;
        let commit = self.commit.as_ref().map_or("-", ObjectId::short);
        let said = |report: &HealthReport| {
            #[expect(
                clippy::cast_precision_loss,
                reason = "milliseconds of a health check, shown to a tenth of a second"
            )]
            let seconds = report.took_ms as f64 / 1000.0;
            match report.result {
                HealthResult::Healthy => format!("healthy after {seconds:.1}s"),
                HealthResult::Unhealthy => format!("unhealthy after {seconds:.1}s"),
            }
        };
        let mut note = format!("{environment} at {commit}: {}", said(report));
        if let Some(rollback) = &self.auto_rollback {
            let back = rollback.commit.as_ref().map_or("-", ObjectId::short);
            note.push_str(&format!("; rolled back to {back}"));
            if let Some(report) = &rollback.health {
                note.push_str(&format!(", {}", said(report)));
            }
        }
        Some(note)
    }
}

/// What a `python/publish` stage uploaded, for the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    pub package: String,
    pub version: String,
    /// The index's upload URL.
    pub index: String,
    pub files: Vec<PublishedFile>,
    /// The version was already there and `skip_existing` skipped it.
    pub skipped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedFile {
    pub name: String,
    /// `None` when it could not be read.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployKind {
    Deploy,
    Rollback,
}

/// How one attempt of a stage ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    /// Exited with a non-zero code, or was killed by a signal.
    Failed {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Ran past its `timeout:` and its process group was ended.
    TimedOut {
        after: Duration,
    },
    /// Could not be started at all (missing program, bad folder, …).
    NotStarted {
        message: String,
    },
    /// Was running when the run was interrupted, and was ended.
    Cancelled,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Passed)
    }

    /// A short human description: `passed`, `failed (exit 3)`, `timed out after 1s`.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Passed => "passed".into(),
            Outcome::Failed {
                code: Some(code), ..
            } => format!("failed (exit {code})"),
            Outcome::Failed {
                signal: Some(sig), ..
            } => format!("failed (killed by signal {sig})"),
            Outcome::Failed { .. } => "failed".into(),
            Outcome::TimedOut { after } => {
                format!("timed out after {}", humantime::format_duration(*after))
            }
            Outcome::NotStarted { message } => format!("could not start: {message}"),
            Outcome::Cancelled => "cancelled".into(),
        }
    }
}

/// Why a selected stage did not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// A stage it needs failed, timed out or was itself skipped.
    Blocked { by: StageName },
    /// What it needs succeeded, but only as an on_failure/always stage reacting to a
    /// failure further up.
    FailedBefore { via: StageName },
    /// `when: on_failure` and nothing before it failed.
    NothingFailed,
    /// A stage it needs is manual and was not named on the command line.
    NeedsManual { stage: StageName },
    /// The run was interrupted before the stage could start.
    Cancelled,
    /// `cache:` — nothing it depends on changed since that run (a log's stem), when it passed.
    Cached { since: String },
    /// A deploy to an environment with `approval: true`, and nobody at a terminal to ask.
    NeedsApproval { command: String },
}

impl SkipReason {
    pub fn describe(&self) -> String {
        match self {
            SkipReason::Blocked { by } => format!("`{by}` did not succeed"),
            SkipReason::FailedBefore { via } => format!("a stage before `{via}` failed"),
            SkipReason::NothingFailed => "on_failure, and nothing failed".into(),
            SkipReason::NeedsManual { stage } => {
                format!("needs manual stage `{stage}`, which was not selected")
            }
            SkipReason::Cancelled => "cancelled before it started".into(),
            SkipReason::Cached { since } => format!("cached (unchanged since {since})"),
            SkipReason::NeedsApproval { command } => format!("needs approval: `{command}`"),
        }
    }
}

/// How a stage ended, for the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageResult {
    Passed,
    Failed,
    /// Failed, but `allow_failure: true`.
    FailedAllowed,
    TimedOut,
    /// Ended early because the run was interrupted.
    Cancelled,
    Skipped,
    /// Not run: unchanged since it last passed (`cache:`); counts as passed.
    Cached,
}

#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    pub stage: StageName,
    pub result: StageResult,
    /// Total over every attempt; zero when skipped.
    pub duration: Duration,
    pub attempts: u32,
    /// The outcome or skip reason in words.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub stages: Vec<SummaryRow>,
    pub duration: Duration,
    pub exit_code: i32,
    pub log: Option<PathBuf>,
}

fn lossy<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&String::from_utf8_lossy(bytes))
}

#[cfg(test)]
mod tests {
    use super::{DeployKind, Deployed, HealthReport, HealthResult, Trigger};

    fn deployed(commit: char, health: Option<(HealthResult, u64)>) -> Deployed {
        Deployed {
            kind: DeployKind::Deploy,
            forced: false,
            repo: "origin.git".into(),
            remote: "staging.git".into(),
            branch: "master".into(),
            commit: Some(commit.to_string().repeat(40).parse().unwrap()),
            previous_commit: None,
            environment: Some("staging".into()),
            trigger: Trigger::Manual,
            approved_by: None,
            health: health.map(|(result, took_ms)| HealthReport { result, took_ms }),
            rolled_back_to: None,
            auto_rollback: None,
        }
    }

    #[test]
    fn the_health_note_says_where_what_and_how_it_answered() {
        let healthy = deployed('a', Some((HealthResult::Healthy, 1_040)));
        assert_eq!(
            healthy.health_note().as_deref(),
            Some("staging at aaaaaaa: healthy after 1.0s")
        );
        let unhealthy = Deployed {
            auto_rollback: Some(Box::new(deployed('b', Some((HealthResult::Healthy, 200))))),
            ..deployed('c', Some((HealthResult::Unhealthy, 20_000)))
        };
        assert_eq!(
            unhealthy.health_note().as_deref(),
            Some(
                "staging at ccccccc: unhealthy after 20.0s; rolled back to bbbbbbb, healthy after 0.2s"
            )
        );
        assert_eq!(deployed('a', None).health_note(), None);
        let to_origin = Deployed {
            environment: None,
            ..healthy
        };
        assert_eq!(to_origin.health_note(), None);
    }
}
