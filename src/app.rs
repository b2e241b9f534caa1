//! One function per command: load → plan → run → report.

mod demo;
mod graph;
mod init;
pub mod json;
mod logs;
mod menu;
pub mod shell;

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use chrono::Local;

use crate::actions::RunContext;
use crate::cli::{Cli, Color, Command, Format, SelectArgs};
use crate::config;
use crate::error::{Failure, Invalid, Problem};
use crate::events::{PlannedStage, RunEvent, RunHeader, RunSummary};
use crate::exec::preflight;
use crate::exec::runner::{self, RunOptions};
use crate::exec::stop::Stop;
use crate::exec::watchdog::Watchdog;
use crate::pipeline::{Action, Builtin, Pipeline};
use crate::plan::{Plan, Selection, render};
use crate::report::deploys::DeployRecorder;
use crate::report::ledger::{self, Ledger, Status};
use crate::report::logfile::{self, RunLog};
use crate::report::mask::{self, Masker};
use crate::report::terminal::{Terminal, TerminalOptions, Verbosity};
use crate::state::{LockError, StateDir};

/// What to run, and how.
pub(crate) struct RunRequest {
    /// The command's name, recorded in the lock file.
    pub command: &'static str,
    pub selection: Selection,
    /// `rollback --to`: the commit to return to.
    pub revert_to: Option<String>,
    /// Wait for another run of the project instead of failing.
    pub wait: bool,
}

/// Runs the command; `Ok` is exit code 0.
pub fn run(cli: &Cli) -> Result<(), Failure> {
    match cli.command.as_ref().unwrap_or(&Command::Menu) {
        Command::Validate => validate(cli),
        Command::Plan(select) => plan(cli, &selection(select)),
        Command::Run(args) if args.dry_run => plan(cli, &selection(&args.select)),
        Command::Run(args) => run_pipeline(
            cli,
            &load(cli)?,
            RunRequest {
                command: "run",
                selection: selection(&args.select),
                revert_to: None,
                wait: args.lock.wait,
            },
        ),
        Command::Rollback(args) => rollback(cli, args.to, args.lock.wait),
        Command::History(args) => history(cli, args.limit.map(|n| n as usize)),
        Command::Demo(args) => demo::run(cli, args.wait),
        Command::All(args) => {
            let selection = Selection {
                skip: args.skip.clone(),
                ..Selection::default()
            };
            if args.dry_run {
                plan(cli, &selection)
            } else {
                let request = RunRequest {
                    command: "all",
                    selection,
                    revert_to: None,
                    wait: args.lock.wait,
                };
                run_pipeline(cli, &load(cli)?, request)
            }
        }
        Command::Graph(args) => graph::print(cli, args),
        Command::Completions(_) | Command::Man(_) if cli.format == Format::Json => {
            let (name, prints) = match &cli.command {
                Some(Command::Man(_)) => ("man", "man pages"),
                _ => ("completions", "a shell script"),
            };
            Err(
                Problem::general(format!("`{name}` prints {prints}, not JSON"))
                    .with_help(format!("run `pydeployer {name}` without `--format json`"))
                    .into(),
            )
        }
        Command::Completions(args) => shell::completions(args.shell),
        Command::Man(args) => shell::man(args),
        Command::Logs(args) => logs::run(cli, args),
        Command::Menu => menu::run(cli),
        Command::Schema(args) => {
            let kind = if args.stages_file {
                config::schema::SchemaKind::StagesFile
            } else {
                config::schema::SchemaKind::Pipeline
            };
            let written = std::io::stdout()
                .lock()
                .write_all(config::schema::schema_json(kind).as_bytes());
            // A closed pipe (`pydeployer schema | head`) is not an error worth a message.
            let _ = written;
            Ok(())
        }
        Command::Init => init::run(cli),
    }
}

/// Whether to color output on stderr.
pub fn use_color(choice: Color) -> bool {
    match choice {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stderr().is_terminal()
        }
    }
}

fn selection(args: &SelectArgs) -> Selection {
    Selection {
        targets: args.stages.clone(),
        only: args.only.clone(),
        skip: args.skip.clone(),
    }
}

fn load(cli: &Cli) -> Result<Pipeline, Invalid> {
    config::load(&cli.file)
}

fn jobs(cli: &Cli, pipeline: &Pipeline) -> usize {
    cli.jobs
        .map(usize::from)
        .or(pipeline.jobs)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

fn validate(cli: &Cli) -> Result<(), Failure> {
    let pipeline = load(cli)?;
    let message = format!(
        "{}: {} stage{}, no problems",
        cli.file.display(),
        pipeline.stages.len(),
        if pipeline.stages.len() == 1 { "" } else { "s" }
    );
    match cli.format {
        Format::Text => crate::outln!("{message}"),
        Format::Json => crate::outln!(
            "{}",
            serde_json::json!({ "valid": true, "file": cli.file, "stages": pipeline.stages.len(), "problems": [] })
        ),
    }
    Ok(())
}

fn plan(cli: &Cli, selection: &Selection) -> Result<(), Failure> {
    let pipeline = load(cli)?;
    let plan = Plan::build(&pipeline, selection)?;
    let jobs = jobs(cli, &pipeline);
    // Secrets that are set, and credentials in the repository URL, are hidden here too.
    let masker = masker(&pipeline);
    let text = match cli.format {
        Format::Text => render::to_text(&pipeline, &plan, jobs),
        Format::Json => {
            // Masked value by value: the JSON escaping of a secret is not the secret.
            let mut json =
                serde_json::to_value(render::to_json(&pipeline, &plan, jobs)).unwrap_or_default();
            mask_json(&masker, &mut json);
            serde_json::to_string_pretty(&json).unwrap_or_default() + "\n"
        }
    };
    let written = std::io::stdout()
        .lock()
        .write_all(masker.mask_str(&text).as_bytes());
    // A closed pipe (`pydeployer plan | head`) is not an error worth a message.
    let _ = written;
    Ok(())
}

fn rollback(cli: &Cli, to: Option<u64>, wait: bool) -> Result<(), Failure> {
    let pipeline = load(cli)?;
    let stage = pipeline
        .stages
        .iter()
        .find(|s| {
            matches!(
                s.action,
                Action::Uses {
                    action: Builtin::GitRevert,
                    ..
                }
            )
        })
        .ok_or_else(|| {
            Problem::general("this pipeline has no rollback stage").with_help(
                "add a stage with `uses: git/revert` (see stages.d/90-rollback.yml in the README)",
            )
        })?;
    let revert_to = match to {
        None => None,
        Some(id) => {
            let ledger =
                Ledger::open(&pipeline.archive).map_err(|err| Failure::Tool(err.into()))?;
            let entry = ledger.get(id).ok_or_else(|| {
                Problem::general(format!("the ledger has no entry {id}"))
                    .with_help("`pydeployer history` lists the entries")
            })?;
            if entry.status != Status::Success {
                // Its commit may never have reached the remote: returning to it would publish
                // what was never deployed.
                return Err(Problem::general(format!(
                    "ledger entry {id} is a {} {}: its commit was never deployed",
                    entry.status, entry.kind
                ))
                .with_help("return to an entry whose status is success (`pydeployer history`)")
                .into());
            }
            let commit = entry.commit.clone().ok_or_else(|| {
                Problem::general(format!("ledger entry {id} has no commit to return to"))
            })?;
            Some(commit)
        }
    };
    let request = RunRequest {
        command: "rollback",
        selection: Selection {
            only: vec![stage.name.to_string()],
            ..Selection::default()
        },
        revert_to,
        wait,
    };
    run_pipeline(cli, &pipeline, request)
}

fn history(cli: &Cli, limit: Option<usize>) -> Result<(), Failure> {
    let pipeline = load(cli)?;
    let ledger = Ledger::open(&pipeline.archive).map_err(|err| Failure::Tool(err.into()))?;
    let entries = ledger.entries();
    let shown = &entries[entries.len().saturating_sub(limit.unwrap_or(usize::MAX))..];
    match cli.format {
        Format::Text => crate::out!("{}", ledger::render_table(shown)),
        Format::Json => crate::outln!(
            "{}",
            serde_json::to_string_pretty(shown).unwrap_or_default()
        ),
    }
    Ok(())
}

/// Hides the values of the pipeline's secrets (those that are set) and the credentials in
/// its repository URL.
fn masker(pipeline: &Pipeline) -> Masker {
    let names: Vec<&String> = pipeline
        .secrets
        .iter()
        .chain(pipeline.stages.iter().flat_map(|s| &s.secrets))
        .collect();
    // The value a stage sees: from the environment, or set by an `env:` of the pipeline.
    let from_env = names.iter().filter_map(|name| std::env::var(name).ok());
    let from_yaml = std::iter::once(&pipeline.env)
        .chain(pipeline.stages.iter().map(|s| &s.env))
        .flat_map(|env| env.iter())
        .filter(|(key, _)| names.contains(key))
        .map(|(_, value)| value.clone());
    let values = from_env.chain(from_yaml);
    let credentials = pipeline
        .repo
        .as_ref()
        .map(|repo| mask::url_credentials(&repo.url))
        .unwrap_or_default();
    Masker::new(values.chain(credentials))
}

/// A stage named on the command line (`run post`) that needs a manual stage which was not
/// named would be skipped, and the run would pass without doing what was asked: refused.
fn blocked_targets(pipeline: &Pipeline, plan: &Plan, selection: &Selection) -> Vec<Problem> {
    plan.steps
        .iter()
        .filter_map(|step| {
            let stage = &pipeline.stages[step.stage];
            let manual = step.needs_manual.as_ref()?;
            selection
                .targets
                .iter()
                .any(|t| t == stage.name.as_str())
                .then(|| {
                    Problem::general(format!(
                        "`{}` needs `{manual}`, a manual stage, which runs only when named",
                        stage.name
                    ))
                    .with_help(format!(
                        "name it too: `pydeployer run {manual} {}`",
                        stage.name
                    ))
                })
        })
        .collect()
}

/// Every secret the run needs must be set (in the environment, or by the pipeline's `env:`):
/// the pipeline's, and those of the selected stages.
fn missing_secrets(pipeline: &Pipeline, plan: &Plan) -> Vec<Problem> {
    let unset = |name: &str, stage_env: Option<&std::collections::BTreeMap<String, String>>| {
        let blank = |v: &String| v.trim().is_empty();
        std::env::var(name).map_or(true, |v| blank(&v))
            && pipeline.env.get(name).is_none_or(blank)
            && stage_env.and_then(|env| env.get(name)).is_none_or(blank)
    };
    let mut problems = Vec::new();
    for name in pipeline.secrets.iter().filter(|n| unset(n, None)) {
        problems.push(
            Problem::general(format!(
                "the secret `{name}` (listed under `secrets:` in {}) is not set",
                pipeline.file.display()
            ))
            .with_help(format!(
                "export {name}=… before running; a secret only some stages need belongs under those stages' `secrets:`"
            )),
        );
    }
    for step in &plan.steps {
        let stage = &pipeline.stages[step.stage];
        for name in stage.secrets.iter().filter(|n| unset(n, Some(&stage.env))) {
            problems.push(
                Problem::general(format!(
                    "stage `{}` ({}) needs the secret `{name}`, which is not set",
                    stage.name, stage.origin
                ))
                .with_help(format!(
                    "export {name}=… before running, or leave the stage out with `--skip {}`",
                    stage.name
                )),
            );
        }
    }
    problems
}

/// The event as it may be shown: secrets in its texts replaced. Output was already masked by
/// the stage's reader, which sees it whole even when a secret arrives in pieces.
fn masked<'e>(masker: &Masker, event: &'e RunEvent) -> Cow<'e, RunEvent> {
    if masker.is_empty() {
        return Cow::Borrowed(event);
    }
    let text = |s: &str| masker.mask_str(s).into_owned();
    let mut event = event.clone();
    match &mut event {
        RunEvent::StageOutput { .. } | RunEvent::StageSkipped { .. } => {}
        RunEvent::RunStarted(header) => {
            header.selection = text(&header.selection);
            for stage in &mut header.stages {
                stage.command = text(&stage.command);
            }
        }
        RunEvent::StageStarted { command, .. } => *command = text(command),
        RunEvent::StageFinished { outcome, note, .. } => {
            if let crate::events::Outcome::NotStarted { message } = outcome {
                *message = text(message);
            }
            if let Some(note) = note {
                *note = text(note);
            }
        }
        RunEvent::RunFinished(summary) => mask_summary(masker, summary),
    }
    Cow::Owned(event)
}

fn mask_json(masker: &Masker, value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => {
            if let Cow::Owned(masked) = masker.mask_str(text) {
                *text = masked;
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                mask_json(masker, item);
            }
        }
        serde_json::Value::Object(fields) => {
            for item in fields.values_mut() {
                mask_json(masker, item);
            }
        }
        _ => {}
    }
}

fn mask_summary(masker: &Masker, summary: &mut RunSummary) {
    for row in &mut summary.stages {
        row.detail = masker.mask_str(&row.detail).into_owned();
    }
}

pub(crate) fn run_pipeline(
    cli: &Cli,
    pipeline: &Pipeline,
    request: RunRequest,
) -> Result<(), Failure> {
    let plan = Plan::build(pipeline, &request.selection)?;
    let mut problems = blocked_targets(pipeline, &plan, &request.selection);
    problems.extend(preflight::missing_programs(pipeline, &plan));
    problems.extend(missing_secrets(pipeline, &plan));
    if !problems.is_empty() {
        return Err(Invalid { problems }.into());
    }
    let jobs = jobs(cli, pipeline);
    let masker = masker(pipeline);

    // One run at a time per project; everything below happens under the lock.
    let state = StateDir::open(&pipeline.root).map_err(|err| Failure::Tool(err.into()))?;
    let lock = state
        .lock(request.command, request.wait, |holder| {
            let who = holder.map_or_else(String::new, |h| format!(" (pid {})", h.pid));
            crate::errln!("waiting for another run of this project{who} to finish…");
        })
        .map_err(|err| match err {
            busy @ LockError::Busy { .. } => Failure::Busy(miette::miette!(
                help = "wait for it to finish, or pass `--wait` to queue behind it",
                "{busy}"
            )),
            other => Failure::Tool(other.into()),
        })?;

    // A ledger that does not parse, or a folder that cannot take the next write, stops the
    // run before anything runs, and the ledger stays untouched.
    let deploys = plan.steps.iter().any(|s| {
        matches!(
            pipeline.stages[s.stage].action,
            Action::Uses {
                action: Builtin::GitPush | Builtin::GitRevert,
                ..
            }
        )
    });
    let ledger = if deploys {
        let ledger = Ledger::open(&pipeline.archive).map_err(|err| Failure::Tool(err.into()))?;
        ledger.prepare_for_run().map_err(|err| {
            Failure::Tool(miette::miette!(
                help = "free some space or fix the folder's permissions; nothing was run",
                "the deploy ledger {} cannot be written: {err}",
                pipeline.archive.display()
            ))
        })?;
        Some(ledger)
    } else {
        None
    };
    // Only pytest stages need a scratch folder (their JUnit reports).
    let pytest = plan.steps.iter().any(|s| {
        matches!(
            pipeline.stages[s.stage].action,
            Action::Uses {
                action: Builtin::Pytest,
                ..
            }
        )
    });
    let scratch = if pytest {
        let made = state.scratch(&lock).map_err(|err| {
            Failure::Tool(miette::miette!(
                "cannot create a scratch folder in .pydeployer/tmp: {err}"
            ))
        })?;
        Some(made)
    } else {
        None
    };

    let (stop, _signals) = Stop::for_run()
        .map_err(|err| Failure::Tool(miette::miette!("cannot watch for Ctrl-C: {err}")))?;

    let started_at = Local::now();
    let mut log = RunLog::create(&pipeline.logs.dir, started_at).map_err(|err| {
        Failure::Tool(miette::miette!(
            help = "check that the folder is writable and has space, or set `logs: { dir: … }` in pipeline.yml",
            "cannot create the run log in {}: {err}",
            pipeline.logs.dir.display()
        ))
    })?;
    // The header shows what runs: `rollback --to` reverts a range.
    let described = RunContext {
        revert_to: request.revert_to.clone(),
        ..RunContext::default()
    };
    let header = RunHeader {
        pipeline: pipeline.name.clone(),
        started_at,
        selection: plan.selection.clone(),
        jobs,
        log: Some(log.path().to_path_buf()),
        stages: plan
            .steps
            .iter()
            .map(|step| {
                let stage = &pipeline.stages[step.stage];
                PlannedStage {
                    name: stage.name.clone(),
                    command: crate::actions::describe_with(pipeline, stage, &described),
                }
            })
            .collect(),
    };

    // Without a watchdog the stages' main processes still die with the runner
    // (PR_SET_PDEATHSIG); only their background children would outlive a `kill -9`.
    // Started before the terminal: it is forked, and the runner has no thread yet.
    let watchdog = Watchdog::start(lock.file()).ok().map(Arc::new);
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else if cli.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let mut terminal = Terminal::new(TerminalOptions {
        fancy: cli.format == Format::Text && std::io::stderr().is_terminal(),
        color: use_color(cli.color),
        verbosity,
    });
    let mut recorder = ledger.map(|ledger| {
        DeployRecorder::new(
            ledger,
            pipeline,
            Some(log.path().to_path_buf()),
            masker.clone(),
        )
    });
    let options = RunOptions {
        context: RunContext {
            scratch: scratch
                .as_ref()
                .map(|dir| dir.path().to_path_buf())
                .unwrap_or_default(),
            revert_to: request.revert_to,
        },
        jobs,
        grace: pipeline.grace_period,
        watchdog: watchdog.clone(),
        masker: masker.clone(),
    };
    let mut log_error = None;
    let summary = runner::execute(pipeline, &plan, header, &options, &stop, |event| {
        let event = masked(&masker, event);
        if log_error.is_none()
            && let Err(err) = log.write_event(&event)
        {
            // Without its log the run is stopped: nothing more starts (no deploy).
            log_error = Some(err);
            stop.fail();
        }
        if stop.hung_up() {
            terminal.detach();
        }
        terminal.report(&event);
        if let Some(recorder) = &mut recorder {
            recorder.observe(&event);
        }
    });
    // The lock is released first: the watchdog holds a copy of it, and exits on its own time.
    lock.release();
    if let Some(watchdog) = &watchdog {
        watchdog.finish();
    }
    if let Some(err) = recorder.and_then(|r| r.error) {
        return Err(Failure::Tool(miette::miette!(
            "the deploy ledger {} could not be written: {err}",
            pipeline.archive.display()
        )));
    }
    if cli.format == Format::Json {
        let mut summary = summary.clone();
        mask_summary(&masker, &mut summary);
        let json = json::RunJson::new(&summary, &pipeline.name, started_at).masked(&masker);
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    }
    let prune = if log.may_exceed(pipeline.logs.keep) {
        logfile::prune(&pipeline.logs.dir, pipeline.logs.keep, log.path())
    } else {
        Ok(Vec::new())
    };
    if let Err(err) = prune {
        crate::errln!(
            "warning: could not remove old logs in {}: {err}",
            pipeline.logs.dir.display()
        );
    }
    if let Some(err) = log_error {
        return Err(Failure::Tool(miette::miette!(
            help = "free some space in the log folder (or set `logs: { dir: … }`); stages after the failure were not started",
            "the run log {} could not be written, so the run was stopped: {err}",
            log.path().display()
        )));
    }
    drop(lock);
    match summary.exit_code {
        0 => Ok(()),
        code => Err(Failure::Exit(code)),
    }
}
