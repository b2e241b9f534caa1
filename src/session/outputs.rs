//! The run's outputs: which sinks a run gets (the one place to add one), the run log's
//! creation and retention, and what their failures make of the run's result.

use std::io::IsTerminal;
use std::path::Path;

use chrono::{DateTime, Local};

use std::collections::{BTreeMap, BTreeSet};

use super::RunSettings;
use crate::actions::{CommandLine, git};
use crate::error::Failure;
use crate::events::{RunSummary, StageResult};
use crate::exec::process;
use crate::pipeline::Pipeline;
use crate::pipeline::StageName;
use crate::report::json::JsonSummary;
use crate::report::jsonl::JsonLines;
use crate::report::ledger::LedgerSink;
use crate::report::logfile::RunLog;
use crate::report::terminal::{Terminal, TerminalOptions, TerminalSink};
use crate::report::{OnFailure, Reporter, SinkFailure};
use crate::store::ledger::Ledger;
use crate::store::passed::Passed;

/// What stdout carries during a run; progress and the summary table go to stderr always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Nothing (the terminal output is on stderr).
    #[default]
    Text,
    /// The summary as one JSON document when the run ends.
    Json,
    /// Every event as it happens, one JSON object per line.
    Jsonl,
}

/// Every output of the run, in the order each event reaches them.
pub(super) fn reporter<'a>(
    settings: &RunSettings,
    log: RunLog,
    ledger: Option<Ledger>,
    hung_up: &'a dyn Fn() -> bool,
) -> Reporter<'a> {
    let what_log = format!("the run log {}", log.path().display());
    let terminal = Terminal::new(TerminalOptions {
        fancy: settings.format == Format::Text && std::io::stderr().is_terminal(),
        color: settings.color,
        verbosity: settings.verbosity,
    });
    let mut reporter = Reporter::new()
        .with(what_log, OnFailure::StopRun, log)
        .with(
            "the terminal",
            OnFailure::Drop,
            TerminalSink { terminal, hung_up },
        );
    if let Some(ledger) = ledger {
        let what = format!("the deploy ledger {}", ledger.path().display());
        reporter = reporter.with(what, OnFailure::ReportAfter, LedgerSink::new(ledger));
    }
    match settings.format {
        Format::Text => reporter,
        Format::Json => reporter.with(
            "stdout",
            OnFailure::Drop,
            JsonSummary::new(std::io::stdout()),
        ),
        Format::Jsonl => {
            reporter.with("stdout", OnFailure::Drop, JsonLines::new(std::io::stdout()))
        }
    }
}

pub(super) fn create_log(
    pipeline: &Pipeline,
    started_at: DateTime<Local>,
) -> Result<RunLog, Failure> {
    RunLog::create(&pipeline.logs.dir, started_at).map_err(|err| {
        Failure::Tool(miette::miette!(
            help = "check that the folder is writable and has space, or set `logs: { dir: … }` in pipeline.yml",
            "cannot create the run log in {}: {err}",
            pipeline.logs.dir.display()
        ))
    })
}

/// Keeps the newest `logs.keep` run logs; a failure is worth a warning, not the run's result.
pub(super) fn prune_logs(pipeline: &Pipeline, current: &Path) {
    if let Err(err) = crate::store::logs::prune(&pipeline.logs.dir, pipeline.logs.keep, current) {
        crate::errln!(
            "warning: could not remove old logs in {}: {err}",
            pipeline.logs.dir.display()
        );
    }
}

/// Records the stages some deploy needs that passed in this run, on the commit the workspace
/// holds now (the one a later `run --only deploy` would push).
pub(super) fn record_passed(
    pipeline: &Pipeline,
    guards: &BTreeSet<StageName>,
    summary: &RunSummary,
    mut passed: Passed,
    log: &Path,
) {
    let (Some(repo), false) = (&pipeline.repo, guards.is_empty()) else {
        return;
    };
    let now: Vec<&StageName> = summary
        .stages
        .iter()
        .filter(|row| row.result == StageResult::Passed && guards.contains(&row.stage))
        .map(|row| &row.stage)
        .collect();
    if now.is_empty() {
        return;
    }
    let env = git::pinned_environment(Some(repo), false, &BTreeMap::new());
    let head = CommandLine::new("git", ["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]);
    let Ok(commit) = process::capture(&head, &repo.dir, &env) else {
        return;
    };
    let log = log
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    for stage in now {
        passed.record(&commit, stage, &log);
    }
    let record = crate::store::passed::path(&pipeline.root);
    if let Err(err) = passed.save(&record) {
        crate::errln!(
            "warning: could not record what passed in {}: {err}; a deploy of this commit needs its stages to pass again",
            record.display()
        );
    }
}

/// The run's result: an output that failed is a tool error (the first one, in the order the
/// outputs were added), else the stages' exit code.
pub(super) fn verdict(failures: &[SinkFailure], exit_code: i32) -> Result<(), Failure> {
    if let Some(failure) = failures.first() {
        let SinkFailure {
            what,
            on_failure,
            error,
        } = failure;
        return Err(Failure::Tool(match on_failure {
            OnFailure::StopRun => miette::miette!(
                help = "free some space there (or set `logs: { dir: … }`); stages after the failure were not started",
                "{what} could not be written, so the run was stopped: {error}"
            ),
            OnFailure::ReportAfter | OnFailure::Drop => {
                miette::miette!("{what} could not be written: {error}")
            }
        }));
    }
    match exit_code {
        0 => Ok(()),
        code => Err(Failure::Exit(code)),
    }
}
