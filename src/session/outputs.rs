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
use crate::report::artifacts::ArtifactSink;
use crate::report::cloud::{CloudSink, Destinations, S3Destination};
use crate::report::json::JsonSummary;
use crate::report::jsonl::JsonLines;
use crate::report::lastrun::LastRunSink;
use crate::report::ledger::LedgerSink;
use crate::report::logfile::RunLog;
use crate::report::terminal::{Terminal, TerminalOptions, TerminalSink, Verbosity};
use crate::report::{OnFailure, Reporter, SinkFailure};
use crate::store::ledger::Ledger;
use crate::store::passed::Passed;
use crate::store::state::StateDir;

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
    pipeline: &'a Pipeline,
    state_dir: &Path,
    settings: &RunSettings,
    log: RunLog,
    ledger: Option<Ledger>,
    cloud: Option<(CloudSink, OnFailure)>,
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
    let what = format!("the record of this run in {}", state_dir.display());
    reporter = reporter.with(
        what,
        OnFailure::ReportAfter,
        LastRunSink::new(state_dir.to_path_buf()),
    );
    if pipeline.stages.iter().any(|s| s.artifacts.is_some()) {
        let what = format!(
            "the artifacts folder {}",
            crate::store::artifacts::root(&pipeline.root).display()
        );
        reporter = reporter.with(what, OnFailure::ReportAfter, ArtifactSink::new(pipeline));
    }
    if let Some(ledger) = ledger {
        let what = format!("the deploy ledger {}", ledger.path().display());
        reporter = reporter.with(what, OnFailure::ReportAfter, LedgerSink::new(ledger));
    }
    if let Some((sink, on_failure)) = cloud {
        reporter = reporter.with("the outbox (.pydeployer/outbox/)", on_failure, sink);
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
    let pruned = crate::store::logs::prune(&pipeline.logs.dir, pipeline.logs.keep, current)
        .and_then(|removed| crate::store::artifacts::prune(&pipeline.root, &removed));
    if let Err(err) = pruned {
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

/// A secret of a few characters is masked wherever that text appears: said before the run.
pub(super) fn warn_short_secrets(pipeline: &Pipeline) {
    for name in crate::mask::short_secrets(pipeline) {
        crate::errln!(
            "warning: the secret {name} is shorter than {} characters: it is masked wherever that text appears, mangling the output around it",
            crate::mask::SHORT_SECRET
        );
    }
}

/// The run's result: an output that failed is a tool error (the first one, in the order the
/// outputs were added), else the stages' exit code.
pub(super) fn verdict(failures: &[SinkFailure], exit_code: i32) -> Result<(), Failure> {
    for warned in failures.iter().filter(|f| f.on_failure == OnFailure::Warn) {
        crate::errln!(
            "warning: {} could not be written: {}; nothing of this run was sent to the cloud",
            warned.what,
            warned.error
        );
    }
    if let Some(failure) = failures.iter().find(|f| f.on_failure != OnFailure::Warn) {
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
            OnFailure::ReportAfter | OnFailure::Warn | OnFailure::Drop => {
                miette::miette!("{what} could not be written: {error}")
            }
        }));
    }
    match exit_code {
        0 => Ok(()),
        code => Err(Failure::Exit(code)),
    }
}

/// The sink of `cloud:` and `notify:`, when the pipeline has either (else nothing of them runs:
/// no outbox, no look at `~/.aws/`). Its failure fails the run only with `cloud.required`.
pub(super) fn cloud_sink(
    pipeline: &Pipeline,
    state: &StateDir,
) -> Result<Option<(CloudSink, OnFailure)>, Failure> {
    if pipeline.cloud.is_none() && pipeline.notify.is_empty() {
        return Ok(None);
    }
    let required = pipeline.cloud.as_ref().is_some_and(|c| c.required);
    let outbox = match state.outbox() {
        Ok(outbox) => outbox,
        Err(err) if required => {
            return Err(Failure::Tool(miette::miette!(
                help = "`cloud.required` is set: the run does not start without somewhere to keep what it sends",
                "cannot use .pydeployer/outbox/: {err}"
            )));
        }
        Err(err) => {
            crate::errln!(
                "warning: cannot use .pydeployer/outbox/ ({err}): nothing of this run will be sent to the cloud"
            );
            return Ok(None);
        }
    };
    let s3 = pipeline
        .cloud
        .as_ref()
        .and_then(|c| c.s3.clone())
        .map(|target| S3Destination {
            region: target
                .region
                .clone()
                .or_else(crate::cloud::chain_region)
                .unwrap_or_else(|| "us-east-1".into()),
            target,
        });
    let to = Destinations {
        s3,
        sns: pipeline.cloud.as_ref().and_then(|c| c.sns.clone()),
        webhooks: pipeline.notify.clone(),
        ledger: pipeline.archive.clone(),
    };
    let on_failure = if required {
        OnFailure::ReportAfter
    } else {
        OnFailure::Warn
    };
    Ok(Some((CloudSink::new(outbox, to), on_failure)))
}

/// Sends what waits in the outbox (this run's items, and any left by earlier runs); says what
/// was not sent. `Err` only when `cloud.required` is set and something was not sent.
pub(super) fn deliver(
    pipeline: &Pipeline,
    state: &StateDir,
    settings: &RunSettings,
) -> Result<(), Failure> {
    if pipeline.cloud.is_none() && pipeline.notify.is_empty() {
        return Ok(());
    }
    let required = pipeline.cloud.as_ref().is_some_and(|c| c.required);
    let timeout = pipeline
        .cloud
        .as_ref()
        .map_or(crate::pipeline::DEFAULT_CLOUD_TIMEOUT, |c| c.timeout);
    let delivery = state
        .outbox()
        .and_then(|outbox| crate::cloud::deliver(&outbox, timeout));
    let delivery = match delivery {
        Ok(delivery) => delivery,
        Err(err) => {
            crate::errln!("warning: cannot read .pydeployer/outbox/: {err}");
            return if required {
                Err(Failure::Tool(miette::miette!(
                    "nothing could be sent to the cloud: {err}"
                )))
            } else {
                Ok(())
            };
        }
    };
    report_delivery(&delivery, settings.verbosity == Verbosity::Quiet);
    if required && !delivery.failed.is_empty() {
        return Err(Failure::Tool(miette::miette!(
            help = "`pydeployer sync` sends it when the cloud is back; `cloud.required` makes this fail the run",
            "{} of this run could not be sent to the cloud",
            plural(delivery.failed.len(), "item")
        )));
    }
    Ok(())
}

/// What a delivery did, on stderr: a line of what was sent (unless `quiet`), a warning for each
/// item that was not.
pub(crate) fn report_delivery(delivery: &crate::cloud::Delivery, quiet: bool) {
    if !delivery.sent.is_empty() && !quiet {
        crate::errln!("sent: {}", delivery.sent.join(", "));
    }
    for (what, why) in &delivery.failed {
        crate::errln!("warning: not sent: {what}: {why}");
    }
    if !delivery.failed.is_empty() {
        crate::errln!(
            "warning: {} waiting in .pydeployer/outbox/: the next run or `pydeployer sync` sends {}",
            plural(delivery.failed.len(), "item"),
            if delivery.failed.len() == 1 {
                "it"
            } else {
                "them"
            }
        );
    }
    for refused in &delivery.refused {
        crate::errln!("warning: ignoring .pydeployer/outbox/{refused} (never sent; remove it)");
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
