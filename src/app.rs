//! One function per command: load → plan → run → report.

mod demo;

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use chrono::Local;

use crate::actions::RunContext;
use crate::cli::{Cli, Color, Command, Format, SelectArgs};
use crate::config;
use crate::error::{Failure, Invalid, Problem};
use crate::events::{PlannedStage, RunHeader};
use crate::exec::preflight;
use crate::exec::runner::{self, RunOptions};
use crate::pipeline::{Action, Builtin, Pipeline};
use crate::plan::{Plan, Selection, render};
use crate::report::deploys::DeployRecorder;
use crate::report::ledger::{self, Ledger};
use crate::report::logfile::{self, RunLog};
use crate::report::terminal::{Terminal, TerminalOptions, Verbosity};

/// Runs the command; `Ok` is exit code 0.
pub fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Validate => validate(cli),
        Command::Plan(select) => plan(cli, &selection(select)),
        Command::Run(args) if args.dry_run => plan(cli, &selection(&args.select)),
        Command::Run(args) => run_pipeline(cli, &load(cli)?, &selection(&args.select), None),
        Command::Rollback(args) => rollback(cli, args.to),
        Command::History(args) => history(cli, args.limit),
        Command::Demo => demo::run(cli),
        Command::All(args) => {
            let selection = Selection {
                skip: args.skip.clone(),
                ..Selection::default()
            };
            if args.dry_run {
                plan(cli, &selection)
            } else {
                run_pipeline(cli, &load(cli)?, &selection, None)
            }
        }
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
        Format::Text => println!("{message}"),
        Format::Json => println!(
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
    let mut out = std::io::stdout().lock();
    let written = match cli.format {
        Format::Text => out.write_all(render::to_text(&pipeline, &plan, jobs).as_bytes()),
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &render::to_json(&pipeline, &plan, jobs))
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
        }
    };
    // A closed pipe (`pydeployer plan | head`) is not an error worth a message.
    let _ = written;
    Ok(())
}

fn rollback(cli: &Cli, to: Option<u64>) -> Result<(), Failure> {
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
            let commit = entry.commit.clone().ok_or_else(|| {
                Problem::general(format!("ledger entry {id} has no commit to return to"))
            })?;
            Some(commit)
        }
    };
    let selection = Selection {
        only: vec![stage.name.to_string()],
        ..Selection::default()
    };
    run_pipeline(cli, &pipeline, &selection, revert_to)
}

fn history(cli: &Cli, limit: Option<usize>) -> Result<(), Failure> {
    let pipeline = load(cli)?;
    let ledger = Ledger::open(&pipeline.archive).map_err(|err| Failure::Tool(err.into()))?;
    let entries = ledger.entries();
    let shown = &entries[entries.len().saturating_sub(limit.unwrap_or(usize::MAX))..];
    match cli.format {
        Format::Text => print!("{}", ledger::render_table(shown)),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(shown).unwrap_or_default()
        ),
    }
    Ok(())
}

pub(crate) fn run_pipeline(
    cli: &Cli,
    pipeline: &Pipeline,
    selection: &Selection,
    revert_to: Option<String>,
) -> Result<(), Failure> {
    let plan = Plan::build(pipeline, selection)?;
    let missing = preflight::missing_programs(pipeline, &plan);
    if !missing.is_empty() {
        return Err(Invalid { problems: missing }.into());
    }
    let jobs = jobs(cli, pipeline);
    // A ledger that does not parse stops the run before anything runs, and stays untouched.
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
        Some(Ledger::open(&pipeline.archive).map_err(|err| Failure::Tool(err.into()))?)
    } else {
        None
    };
    let scratch = tempfile::Builder::new()
        .prefix("pydeployer-run-")
        .tempdir()
        .map_err(|err| Failure::Tool(miette::miette!("cannot create a temporary folder: {err}")))?;

    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .map_err(|err| Failure::Tool(miette::miette!("cannot watch for Ctrl-C: {err}")))?;
    }

    let started_at = Local::now();
    let mut log = RunLog::create(&pipeline.logs.dir, started_at).map_err(|err| {
        Failure::Tool(miette::miette!(
            help = "check that the folder is writable, or set `logs: {{ dir: … }}` in pipeline.yml",
            "cannot create the run log in {}: {err}",
            pipeline.logs.dir.display()
        ))
    })?;
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
                    command: crate::actions::describe(pipeline, stage),
                }
            })
            .collect(),
    };

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
    let mut recorder =
        ledger.map(|ledger| DeployRecorder::new(ledger, pipeline, Some(log.path().to_path_buf())));
    let mut log_error = None;
    let options = RunOptions {
        context: RunContext {
            scratch: scratch.path().to_path_buf(),
            revert_to,
        },
        jobs,
        grace: runner::DEFAULT_GRACE,
    };
    let summary = runner::execute(pipeline, &plan, header, &options, &interrupted, |event| {
        if log_error.is_none()
            && let Err(err) = log.write_event(event)
        {
            log_error = Some(err);
        }
        terminal.report(event);
        if let Some(recorder) = &mut recorder {
            recorder.observe(event);
        }
    });
    if let Some(err) = recorder.and_then(|r| r.error) {
        return Err(Failure::Tool(miette::miette!(
            "the deploy ledger {} could not be written: {err}",
            pipeline.archive.display()
        )));
    }
    if cli.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    }
    if let Err(err) = logfile::prune(&pipeline.logs.dir, pipeline.logs.keep, log.path()) {
        eprintln!(
            "warning: could not remove old logs in {}: {err}",
            pipeline.logs.dir.display()
        );
    }
    if let Some(err) = log_error {
        return Err(Failure::Tool(miette::miette!(
            "the run log {} is incomplete: {err}",
            log.path().display()
        )));
    }
    match summary.exit_code {
        0 => Ok(()),
        code => Err(Failure::Exit(code)),
    }
}
