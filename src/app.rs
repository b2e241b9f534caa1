//! One function per command: load → plan → run → report.

mod demo;
pub(crate) mod environments;
mod graph;
mod history;
mod init;
pub mod json;
mod logs;
mod menu;
mod port;
mod schedule;
pub mod shell;
mod watch;

use std::borrow::Cow;
use std::io::{IsTerminal, Write};

use crate::cli::{Cli, Color, Command, Format, SelectArgs};
use crate::config;
use crate::error::{Failure, Invalid, Problem};
use crate::mask::Masker;
use crate::pipeline::{Builtin, Pipeline};
use crate::plan::{Plan, Selection, render};
use crate::report::terminal::Verbosity;
use crate::session::{self, RunRequest, RunSettings};
use crate::store::ledger::{Ledger, Status};
use crate::store::state::StateDir;

/// Runs the command; `Ok` is exit code 0.
pub fn run(cli: &Cli) -> Result<(), Failure> {
    let command = cli.command.as_ref().unwrap_or(&Command::Menu);
    let runs = matches!(
        command,
        Command::Run(_)
            | Command::All(_)
            | Command::Rollback(_)
            | Command::Demo(_)
            | Command::Deploy(_)
    );
    if cli.format == Format::Jsonl && !runs {
        return Err(Problem::general(
            "`--format jsonl` is the event stream of a run (run, all, rollback, demo)",
        )
        .with_help("use `--format json` for this command")
        .into());
    }
    match command {
        Command::Validate => validate(cli),
        Command::Plan(select) => plan(cli, &selection(select), false),
        Command::Run(args) if args.dry_run && !args.failed => {
            plan(cli, &selection(&args.select), args.no_cache)
        }
        Command::Run(args) if args.failed => failed(cli, args),
        Command::Run(args) => {
            let request = RunRequest {
                command: "run",
                selection: selection(&args.select),
                worktree: args.worktree,
                force: args.force,
                no_cache: args.no_cache,
                ..RunRequest::default()
            };
            session::run(&load(cli)?, &request, &settings(cli, args.lock.wait))
        }
        Command::Rollback(args) => {
            environments::rollback(cli, args.to, args.env.as_deref(), args.lock.wait)
        }
        Command::Deploy(args) => environments::deploy(cli, args),
        Command::Status(args) => environments::status(cli, args),
        Command::HealthCheck(args) => environments::health_check(args),
        Command::History(args) => history(cli, args.limit.map(|n| n as usize), args.env.as_deref()),
        Command::Demo(args) => demo::run(cli, args.wait),
        Command::All(args) => {
            let selection = Selection {
                skip: args.skip.clone(),
                ..Selection::default()
            };
            if args.dry_run {
                plan(cli, &selection, false)
            } else {
                let request = RunRequest {
                    command: "all",
                    selection,
                    ..RunRequest::default()
                };
                session::run(&load(cli)?, &request, &settings(cli, args.lock.wait))
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
        Command::Export(args) => port::export(cli, args),
        Command::Import(args) => port::import(cli, args),
        Command::Sync => sync(cli),
        Command::Artifacts(args) => logs::artifacts(cli, args.run.as_deref()),
        Command::Watch(args) => watch::run(cli, args),
        Command::Schedule(args) => schedule::run(cli, args),
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

/// `run --failed`: what the last run left failed, again; nothing when it was green.
fn failed(cli: &Cli, args: &crate::cli::RunArgs) -> Result<(), Failure> {
    let pipeline = load(cli)?;
    let state = pipeline.root.join(".pydeployer");
    let last = crate::store::lastrun::load(&state).map_err(|why| {
        Failure::from(
            Problem::general(format!("cannot read the last run: {why}"))
                .with_help("run the pipeline (`pydeployer run`) to record a new one"),
        )
    })?;
    let Some(last) = last else {
        return Err(
            Problem::general("there is no last run to take the failures of")
                .with_help("`pydeployer run` first")
                .into(),
        );
    };
    let log = last
        .log
        .clone()
        .unwrap_or_else(|| "the last run".to_owned());
    let rerun = last
        .stages
        .iter()
        .filter(|s| s.rerun)
        .map(|s| s.name.as_str());
    let Some(selection) = crate::plan::select::failed(&pipeline, rerun) else {
        crate::errln!("nothing failed in the last run ({log}): nothing to run again");
        return Ok(());
    };
    if args.dry_run {
        return plan(cli, &selection, args.no_cache);
    }
    if !cli.quiet {
        crate::errln!(
            "running again what did not succeed in {log}: {}",
            selection.only.join(", ")
        );
    }
    let request = RunRequest {
        command: "run",
        selection,
        no_cache: args.no_cache,
        worktree: args.worktree,
        ..RunRequest::default()
    };
    session::run(&pipeline, &request, &settings(cli, args.lock.wait))
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

/// How a run started from the command line is shown; `wait` queues it behind another run.
pub(crate) fn settings(cli: &Cli, wait: bool) -> RunSettings {
    RunSettings {
        jobs: cli.jobs.map(usize::from),
        verbosity: if cli.quiet {
            Verbosity::Quiet
        } else if cli.verbose {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        },
        color: use_color(cli.color),
        format: match cli.format {
            Format::Text => session::Format::Text,
            Format::Json => session::Format::Json,
            Format::Jsonl => session::Format::Jsonl,
        },
        wait,
    }
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
        Format::Json | Format::Jsonl => crate::outln!(
            "{}",
            serde_json::json!({ "valid": true, "file": cli.file, "stages": pipeline.stages.len(), "problems": [] })
        ),
    }
    Ok(())
}

/// Marks the stages the cache would skip, as the files are now (nothing with `--no-cache`).
fn forecast_cache(pipeline: &Pipeline, plan: &mut Plan, no_cache: bool) {
    let state = pipeline.root.join(".pydeployer");
    let mut keys = crate::store::cache::Keys::new(crate::actions::environment);
    plan.forecast_cache(pipeline, |stage| {
        let spec = stage.cache.as_ref()?;
        let key = keys.key(pipeline, stage).ok()?;
        let entry = crate::store::cache::lookup(&state, stage.name.as_str());
        let missing =
            crate::store::cache::missing_output(&pipeline.workdir(stage), &spec.outputs).ok()?;
        Some(crate::plan::cache::decide(
            &key,
            entry,
            missing.as_deref(),
            no_cache,
        ))
    });
}

fn plan(cli: &Cli, selection: &Selection, no_cache: bool) -> Result<(), Failure> {
    let pipeline = load(cli)?;
    let mut plan = Plan::build(&pipeline, selection)?;
    forecast_cache(&pipeline, &mut plan, no_cache);
    let jobs = settings(cli, false).jobs(&pipeline);
    // Secrets that are set, and credentials in the repository URL, are hidden here too.
    let masker = Masker::for_pipeline(&pipeline);
    // What each stage runs, as the actions say.
    let describe = |stage: &crate::pipeline::Stage| crate::actions::describe(&pipeline, stage);
    let text = match cli.format {
        Format::Text => render::to_text(&pipeline, &plan, jobs, &describe),
        Format::Json | Format::Jsonl => {
            // Masked value by value: the JSON escaping of a secret is not the secret.
            let mut json = serde_json::to_value(render::to_json(&pipeline, &plan, jobs, &describe))
                .unwrap_or_default();
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

/// The pipeline's one `git/revert` stage; none, or more than one, is refused.
pub(crate) fn rollback_stage(pipeline: &Pipeline) -> Result<&crate::pipeline::Stage, Failure> {
    let mut stages = pipeline
        .stages
        .iter()
        .filter(|s| s.builtin() == Some(Builtin::GitRevert));
    let stage = stages.next().ok_or_else(|| {
        Problem::general("this pipeline has no rollback stage").with_help(
            "add a stage with `uses: git/revert` (see stages.d/90-rollback.yml in the README)",
        )
    })?;
    let others: Vec<String> = stages.map(|s| format!("`{}`", s.name)).collect();
    if !others.is_empty() {
        return Err(Problem::general(format!(
            "this pipeline has more than one rollback stage: `{}`, {}",
            stage.name,
            others.join(", ")
        ))
        .with_help("keep one stage with `uses: git/revert`; `rollback` would not know which to run")
        .into());
    }
    Ok(stage)
}

/// The entry `rollback --to ID` returns to: entry `id` of the ledger, which must be there
/// once, a successful deploy or rollback of this pipeline's repository, remote and branch.
pub(crate) fn rollback_entry<'a>(
    pipeline: &Pipeline,
    ledger: &'a Ledger,
    id: u64,
) -> Result<&'a crate::store::ledger::Entry, Failure> {
    let mut matching = ledger.entries().iter().filter(|e| e.id == id);
    let entry = matching.next().ok_or_else(|| {
        Problem::general(format!("the ledger has no entry {id}"))
            .with_help("`pydeployer history` lists the entries")
    })?;
    let duplicates = matching.count();
    if duplicates > 0 {
        return Err(Problem::general(format!(
            "the ledger {} holds {} entries with id {id}: which one to return to is unclear",
            pipeline.archive.display(),
            duplicates + 1
        ))
        .with_help("fix the ids in the file (each id once), or return to another entry")
        .into());
    }
    if let Some(repo) = &pipeline.repo {
        let differs = [
            ("repository", &entry.repo, &repo.url),
            ("remote", &entry.remote, &repo.remote),
            ("branch", &entry.branch, &repo.branch),
        ]
        .into_iter()
        .find(|(_, theirs, ours)| theirs != ours);
        if let Some((what, theirs, ours)) = differs {
            return Err(Problem::general(format!(
                "ledger entry {id} is a {} of {what} `{theirs}`, not of this pipeline's `{ours}`",
                entry.kind
            ))
            .with_help(
                "the ledger is shared with another pipeline; return to an entry of this one \
                 (`pydeployer history`)",
            )
            .into());
        }
    }
    if entry.kind == crate::store::ledger::Kind::Publish {
        return Err(Problem::general(format!(
            "ledger entry {id} is a publish to a package index, not a deploy"
        ))
        .with_help("return to a deploy or rollback entry (`pydeployer history`)")
        .into());
    }
    // An up-to-date deploy's commit was live too: the branch already held it.
    if !matches!(entry.status, Status::Success | Status::UpToDate) {
        // Its commit may never have reached the remote: returning to it would publish
        // what was never deployed.
        return Err(Problem::general(format!(
            "ledger entry {id} is a {} {}: its commit was never deployed",
            entry.status, entry.kind
        ))
        .with_help("return to an entry whose status is success (`pydeployer history`)")
        .into());
    }
    if let Some(environment) = &entry.environment {
        return Err(Problem::general(format!(
            "ledger entry {id} is a {} to environment {environment}, not to this pipeline's remote",
            entry.kind
        ))
        .with_help(format!(
            "`pydeployer rollback --env {environment} --to {id}`"
        ))
        .into());
    }
    Ok(entry)
}

fn history(cli: &Cli, limit: Option<usize>, env: Option<&str>) -> Result<(), Failure> {
    let pipeline = load(cli)?;
    if let Some(env) = env
        && pipeline.environment(env).is_none()
    {
        return Err(Problem::general(format!("no environment `{env}`"))
            .with_help("`environments:` in pipeline.yml lists them")
            .into());
    }
    let ledger = Ledger::open(&pipeline.archive).map_err(session::ledger_failure)?;
    let entries: Vec<crate::store::ledger::Entry> = ledger
        .entries()
        .iter()
        .filter(|e| env.is_none() || e.environment.as_deref() == env)
        .cloned()
        .collect();
    let shown = &entries[entries.len().saturating_sub(limit.unwrap_or(usize::MAX))..];
    match cli.format {
        Format::Text => crate::out!("{}", history::render_table(shown)),
        Format::Json | Format::Jsonl => crate::outln!(
            "{}",
            serde_json::to_string_pretty(shown).unwrap_or_default()
        ),
    }
    Ok(())
}

/// `pydeployer sync`: sends the outbox; exit 1 when something is still not sent.
fn sync(cli: &Cli) -> Result<(), Failure> {
    let pipeline = load(cli)?;
    let timeout = pipeline
        .cloud
        .as_ref()
        .map_or(crate::pipeline::DEFAULT_CLOUD_TIMEOUT, |c| c.timeout);
    let state = StateDir::open(&pipeline.root).map_err(|err| Failure::Tool(err.into()))?;
    let outbox = state
        .outbox()
        .map_err(|err| Failure::Tool(miette::miette!("cannot use .pydeployer/outbox/: {err}")))?;
    let delivery = crate::cloud::deliver(&outbox, timeout)
        .map_err(|err| Failure::Tool(miette::miette!("cannot read .pydeployer/outbox/: {err}")))?;
    match cli.format {
        Format::Text => {
            if delivery.sent.is_empty() && delivery.failed.is_empty() {
                crate::outln!("nothing to send");
            }
            for what in &delivery.sent {
                crate::outln!("sent {what}");
            }
            session::report_delivery(&delivery, true);
        }
        Format::Json | Format::Jsonl => {
            let failed: Vec<_> = delivery
                .failed
                .iter()
                .map(|(what, why)| serde_json::json!({ "item": what, "why": why }))
                .collect();
            crate::outln!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "sent": delivery.sent,
                    "failed": failed,
                    "ignored": delivery.refused,
                }))
                .unwrap_or_default()
            );
        }
    }
    if delivery.failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::Exit(1))
    }
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
