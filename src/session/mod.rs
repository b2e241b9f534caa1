//! A run session: the one way a run happens, whoever asks for it (a command, the menu, the
//! demo; later watch, schedule and the dashboard). It takes a validated [`Pipeline`], a
//! [`RunRequest`] (what to run, and why) and [`RunSettings`] (how to show it), and owns
//! everything a run needs around the runner: the checks before anything starts, the project's
//! lock, the ledger and scratch folder, signals, the run log, the watchdog, and the
//! [`Reporter`] every event goes to.
//!
//! Front ends build the request and the settings; nothing here knows about the command line.

mod outputs;
mod source;

use std::sync::Arc;

use chrono::Local;

use crate::actions::{self, RunContext};
use crate::error::{Failure, Invalid, Problem};
use crate::events::{PlannedStage, RunHeader, Trigger};
use crate::exec::preflight;
use crate::exec::runner::{self, CacheOptions, RunOptions};
use crate::exec::stop::Stop;
use crate::exec::watchdog::Watchdog;
use crate::mask::Masker;
use crate::object_id::ObjectId;
use crate::pipeline::{Builtin, Pipeline};
use crate::plan::{Plan, Selection};
use crate::report::Flow;
use crate::report::terminal::Verbosity;
use crate::store::ledger::{Ledger, LedgerError};
use crate::store::passed::Passed;
use crate::store::state::{LockError, RunLock, StateDir};

pub use outputs::Format;
pub(crate) use outputs::report_delivery;

/// What to run, and why.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// The command's name, recorded in the lock file (`run`, `menu`, `demo`, …).
    pub command: &'static str,
    pub selection: Selection,
    pub trigger: Trigger,
    /// `rollback --to`: the commit whose tree the rollback restores.
    pub revert_to: Option<ObjectId>,
    /// Test the project's checkout as it is on disk, not what was pushed (`run --worktree`).
    pub worktree: bool,
    /// Deploy a commit that has not passed the stages its deploy needs (`--force`).
    pub force: bool,
    /// `run --no-cache`: every stage runs (and what passes is recorded in the cache).
    pub no_cache: bool,
    /// The ledger entry of `revert_to` (the rollback's entry names it).
    pub revert_to_entry: Option<u64>,
    /// `deploy ENV` of an environment that `requires` another: the commit to push.
    pub promote: Option<ObjectId>,
    /// `deploy ENV --approve`: the approval of environments that need one is given.
    pub approve: bool,
    /// `rollback --env ENV`: that environment's deploy stage rolls back instead.
    pub env_rollback: Option<actions::EnvRollback>,
}

/// How the run is shown, and how it waits for another run of the project.
#[derive(Debug, Clone, Copy)]
pub struct RunSettings {
    /// Stages at once; `None`: the pipeline's `jobs:`, else the number of CPUs.
    pub jobs: Option<usize>,
    pub verbosity: Verbosity,
    pub color: bool,
    pub format: Format,
    /// Queue behind another run of the project instead of failing (exit 3).
    pub wait: bool,
}

impl RunSettings {
    /// Stages at once for this pipeline.
    pub fn jobs(&self, pipeline: &Pipeline) -> usize {
        self.jobs
            .or(pipeline.jobs)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
    }
}

/// Runs the request to its end; `Ok` is exit code 0, a failed stage `Failure::Exit(1)`.
pub fn run(
    pipeline: &Pipeline,
    request: &RunRequest,
    settings: &RunSettings,
) -> Result<(), Failure> {
    let (pipeline, snapshot) = source::workspace(pipeline, request.worktree)?;
    let pipeline = pipeline.as_ref();
    let plan = checked_plan(pipeline, &request.selection)?;
    source::say_if_differs(pipeline, &plan);
    let masker = masker(pipeline);
    // One run at a time per project; everything below happens under the lock.
    let state = StateDir::open(&pipeline.root).map_err(|err| Failure::Tool(err.into()))?;
    let lock = lock(&state, request.command, settings.wait)?;
    let ledger = ledger(pipeline, &plan)?;
    let scratch = scratch(pipeline, &plan, &state, &lock)?;
    let (stop, _signals) = Stop::for_run()
        .map_err(|err| Failure::Tool(miette::miette!("cannot watch for Ctrl-C: {err}")))?;
    let started_at = Local::now();
    let log = outputs::create_log(pipeline, started_at)?;
    let log_path = log.path().to_path_buf();
    let prune = log.may_exceed(pipeline.logs.keep);
    let context = context(
        pipeline,
        request,
        scratch.as_ref(),
        snapshot,
        ledger.as_ref(),
    );
    let (held, asks) = approvals(pipeline, &plan, &context);
    let header = header(
        pipeline, &plan, request, settings, &context, started_at, &log_path,
    );
    // Without a watchdog the stages' main processes still die with the runner
    // (PR_SET_PDEATHSIG); only their background children would outlive a `kill -9`.
    // Started before the terminal: it is forked, and the runner has no thread yet.
    let watchdog = Watchdog::start(lock.file()).ok().map(Arc::new);
    let hung_up = || stop.hung_up();
    let cloud = outputs::cloud_sink(pipeline, &state)?;
    let mut reporter = outputs::reporter(
        pipeline,
        state.path(),
        settings,
        log,
        ledger,
        cloud,
        &hung_up,
    );
    let guards = guards(pipeline, &plan);
    let options = RunOptions {
        passed: passed_before(pipeline, &guards),
        held,
        asks,
        context,
        jobs: header.jobs,
        grace: pipeline.grace_period,
        watchdog: watchdog.clone(),
        masker,
        cache: cache_options(pipeline, &state, &log_path, request.no_cache),
    };
    let summary = runner::execute(pipeline, &plan, header, &options, &stop, |event| {
        if reporter.report(event) == Flow::Stop {
            // An output the run cannot go without failed (the log): nothing more starts.
            stop.fail();
        }
    });
    release(&lock, watchdog.as_deref());
    outputs::record_passed(pipeline, &guards, &summary, options.passed, &log_path);
    let failures = reporter.finish();
    if prune {
        outputs::prune_logs(pipeline, &log_path);
    }
    drop(lock);
    // After the lock: a cloud that does not answer holds up this run's end, not the next run.
    let delivered = outputs::deliver(pipeline, &state, settings);
    outputs::verdict(&failures, summary.exit_code).and(delivered)
}

/// The end of the run for the lock and the watchdog: the lock is released first (the watchdog
/// holds a copy of it, and exits on its own time).
fn release(lock: &RunLock, watchdog: Option<&Watchdog>) {
    lock.release();
    if let Some(watchdog) = watchdog {
        watchdog.finish();
    }
}

/// Every secret of the run, the AWS chain's too (also a profile's, from ~/.aws/) when the
/// pipeline uses the cloud; a secret of a few characters is said to be short.
fn masker(pipeline: &Pipeline) -> Masker {
    let cloud_secrets = if pipeline.cloud.is_some() {
        crate::cloud::chain_secrets()
    } else {
        Vec::new()
    };
    outputs::warn_short_secrets(pipeline);
    Masker::for_pipeline_and(pipeline, cloud_secrets)
}

/// What passed before, read only by a run with a deploy or a stage a deploy needs.
fn passed_before(
    pipeline: &Pipeline,
    guards: &std::collections::BTreeSet<crate::pipeline::StageName>,
) -> Passed {
    if guards.is_empty() {
        return Passed::default();
    }
    let record = crate::store::passed::path(&pipeline.root);
    Passed::load(&record, |warning| crate::errln!("warning: {warning}"))
}

/// The cache's settings, when a stage has `cache:`.
fn cache_options(
    pipeline: &Pipeline,
    state: &StateDir,
    log: &std::path::Path,
    no_cache: bool,
) -> Option<CacheOptions> {
    pipeline
        .stages
        .iter()
        .any(|s| s.cache.is_some())
        .then(|| CacheOptions {
            state_dir: state.path().to_path_buf(),
            run: log
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            no_cache,
        })
}

/// The stages some deploy of the pipeline needs to have passed, when this plan runs one of them
/// or a deploy: the commit each runs on is recorded when it passes (`run test` now lets
/// `run --only deploy` go later).
fn guards(
    pipeline: &Pipeline,
    plan: &Plan,
) -> std::collections::BTreeSet<crate::pipeline::StageName> {
    let guards: std::collections::BTreeSet<_> = pipeline
        .stages
        .iter()
        .filter(|s| s.builtin() == Some(Builtin::GitPush))
        .flat_map(|deploy| pipeline.guards(deploy))
        .cloned()
        .collect();
    let involved = plan.steps.iter().any(|step| {
        let stage = &pipeline.stages[step.stage];
        guards.contains(&stage.name) || stage.builtin() == Some(Builtin::GitPush)
    });
    if involved {
        guards
    } else {
        std::collections::BTreeSet::new()
    }
}

/// What the actions need to know about this run.
fn context(
    pipeline: &Pipeline,
    request: &RunRequest,
    scratch: Option<&tempfile::TempDir>,
    snapshot: Option<actions::Snapshot>,
    ledger: Option<&Ledger>,
) -> RunContext {
    RunContext {
        scratch: scratch.map(|d| d.path().to_path_buf()).unwrap_or_default(),
        revert_to: request.revert_to.clone(),
        revert_to_entry: request.revert_to_entry,
        snapshot,
        force: request.force,
        last_healthy: last_healthy(pipeline, ledger),
        promote: request.promote.clone(),
        approved: request.approve.then(|| crate::events::Approval {
            by: crate::exec::process::user_name(),
            at: Local::now().fixed_offset(),
        }),
        env_rollback: request.env_rollback.clone(),
        program: std::env::current_exe().ok(),
        trigger: request.trigger,
    }
}

/// Per environment, its last healthy deploy in the ledger: where an unhealthy deploy is
/// rolled back to.
fn last_healthy(
    pipeline: &Pipeline,
    ledger: Option<&Ledger>,
) -> std::collections::BTreeMap<String, (u64, ObjectId)> {
    let Some(ledger) = ledger else {
        return std::collections::BTreeMap::new();
    };
    pipeline
        .environments
        .iter()
        .filter_map(|environment| {
            let stack = crate::store::ledger::live_stack(ledger.entries(), |e| {
                e.environment.as_deref() == Some(environment.name.as_str())
            });
            let healthy = stack.iter().rev().find(|e| e.healthy())?;
            Some((
                environment.name.clone(),
                (healthy.id, healthy.commit.clone()?),
            ))
        })
        .collect()
}

/// The deploy stages of environments that need an approval not given yet: on a terminal, with
/// a person behind the run, they ask (and run alone); otherwise they are held back, with the
/// command that gives the approval.
fn approvals(
    pipeline: &Pipeline,
    plan: &Plan,
    context: &RunContext,
) -> (
    std::collections::BTreeMap<crate::pipeline::StageName, crate::events::SkipReason>,
    std::collections::BTreeSet<crate::pipeline::StageName>,
) {
    use std::io::IsTerminal as _;
    let mut held = std::collections::BTreeMap::new();
    let mut asks = std::collections::BTreeSet::new();
    if context.approved.is_some() || context.env_rollback.is_some() {
        return (held, asks);
    }
    let terminal = context.trigger.may_approve() && std::io::stdin().is_terminal();
    for step in &plan.steps {
        let stage = &pipeline.stages[step.stage];
        let Some(environment) = stage.environment().and_then(|e| pipeline.environment(e)) else {
            continue;
        };
        if !environment.approval {
            continue;
        }
        if terminal {
            asks.insert(stage.name.clone());
        } else {
            held.insert(
                stage.name.clone(),
                crate::events::SkipReason::NeedsApproval {
                    command: format!("pydeployer deploy {} --approve", environment.name),
                },
            );
        }
    }
    (held, asks)
}

/// The plan, once every check before a run holds: a named stage that needs an unnamed manual
/// stage, programs that are not there, secrets that are not set.
fn checked_plan(pipeline: &Pipeline, selection: &Selection) -> Result<Plan, Failure> {
    let plan = Plan::build(pipeline, selection)?;
    let mut problems = preflight::blocked_targets(pipeline, &plan, selection);
    problems.extend(preflight::missing_programs(pipeline, &plan));
    problems.extend(preflight::missing_secrets(pipeline, &plan));
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(Invalid { problems }.into())
    }
}

fn lock(state: &StateDir, command: &'static str, wait: bool) -> Result<RunLock, Failure> {
    // A front end that holds the signals (`watch`, `schedule run`) is ended by one while it
    // waits, too.
    state
        .lock_unless(
            command,
            wait,
            |holder| {
                let who = holder.map_or_else(String::new, |h| format!(" (pid {})", h.pid));
                crate::errln!("waiting for another run of this project{who} to finish…");
            },
            || Stop::interrupted().is_some(),
        )
        .map_err(|err| match err {
            busy @ LockError::Busy { .. } => Failure::Busy(miette::miette!(
                help = "wait for it to finish, or pass `--wait` to queue behind it",
                "{busy}"
            )),
            LockError::GaveUp { .. } => {
                Failure::Exit(Stop::interrupted().unwrap_or(crate::error::exit::INTERRUPTED))
            }
            other => Failure::Tool(other.into()),
        })
}

/// The ledger, when the plan may deploy: one that does not parse, or a folder that cannot
/// take the next write, stops the run before anything runs, and the ledger stays untouched.
fn ledger(pipeline: &Pipeline, plan: &Plan) -> Result<Option<Ledger>, Failure> {
    let deploys = plan.steps.iter().any(|s| {
        matches!(
            pipeline.stages[s.stage].builtin(),
            Some(Builtin::GitPush | Builtin::GitRevert | Builtin::PythonPublish)
        )
    });
    if !deploys {
        return Ok(None);
    }
    let ledger = Ledger::open(&pipeline.archive).map_err(ledger_failure)?;
    ledger.prepare_for_run().map_err(|err| {
        Failure::Tool(miette::miette!(
            help = "free some space or fix the folder's permissions; nothing was run",
            "the deploy ledger {} cannot be written: {err}",
            pipeline.archive.display()
        ))
    })?;
    Ok(Some(ledger))
}

/// A ledger that cannot be read: one that is not a regular file, too big or not a deploy
/// history is bad input (exit 2: nothing ran, the file is untouched); a read that failed is
/// pydeployer's (exit 1).
pub(crate) fn ledger_failure(err: LedgerError) -> Failure {
    match err {
        LedgerError::Io { .. } => Failure::Tool(err.into()),
        LedgerError::NotAFile { .. } | LedgerError::Corrupt { .. } => {
            use miette::Diagnostic as _;
            let help = err.help().map(|h| h.to_string()).unwrap_or_default();
            let message = match &err {
                LedgerError::NotAFile { source, .. } => format!("{err}: {source}"),
                _ => err.to_string(),
            };
            Problem::general(message).with_help(help).into()
        }
    }
}

/// A scratch folder for the run, when a stage needs one (pytest's JUnit reports).
fn scratch(
    pipeline: &Pipeline,
    plan: &Plan,
    state: &StateDir,
    lock: &RunLock,
) -> Result<Option<tempfile::TempDir>, Failure> {
    let reports = plan
        .steps
        .iter()
        .any(|s| actions::needs_scratch(&pipeline.stages[s.stage]));
    if !reports {
        return Ok(None);
    }
    state.scratch(lock).map(Some).map_err(|err| {
        Failure::Tool(miette::miette!(
            "cannot create a scratch folder in .pydeployer/tmp: {err}"
        ))
    })
}

/// What the run is about to do, as its first event says.
fn header(
    pipeline: &Pipeline,
    plan: &Plan,
    request: &RunRequest,
    settings: &RunSettings,
    context: &RunContext,
    started_at: chrono::DateTime<Local>,
    log: &std::path::Path,
) -> RunHeader {
    RunHeader {
        pipeline: pipeline.name.clone(),
        trigger: request.trigger,
        started_at,
        selection: plan.selection.clone(),
        jobs: settings.jobs(pipeline),
        log: Some(log.to_path_buf()),
        stages: plan
            .steps
            .iter()
            .map(|step| {
                let stage = &pipeline.stages[step.stage];
                PlannedStage {
                    name: stage.name.clone(),
                    // `rollback --to` reverts a range: the header shows it.
                    command: actions::describe_with(pipeline, stage, context),
                }
            })
            .collect(),
    }
}
