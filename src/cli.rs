//! The command line (clap derive only; no logic here).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run your CI/CD pipeline on your own machine.
#[derive(Debug, Parser)]
#[command(name = "pydeployer", version, about, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 success, 1 a stage failed, 2 invalid pipeline or command line (nothing ran), 3 another run holds the project (nothing ran), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// The pipeline file; `stages.d/` next to it adds stages.
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        default_value = "pipeline.yml",
        value_name = "PATH"
    )]
    pub file: PathBuf,

    /// Stages run at once (default: `jobs:` of the pipeline, else the number of CPUs).
    #[arg(short = 'j', long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,

    /// Output format of plan, validate and the run summary.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Colors on the terminal (`NO_COLOR` is honoured with `auto`).
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto, value_name = "WHEN")]
    pub color: Color,

    /// Only the summary and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Also show every line the stages print, as they print it.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline: every stage but the manual ones, or the named ones and what they need.
    ///
    /// Examples: `pydeployer run`, `pydeployer run test deploy`, `pydeployer run --only test`,
    /// `pydeployer run --skip lint`, `pydeployer run --dry-run`.
    Run(RunArgs),
    /// The same as `run` with no stage names.
    All(AllArgs),
    /// Show what `run` would do (order, parallel waves, commands, what is left out); runs nothing.
    Plan(SelectArgs),
    /// Load and check the pipeline; report every problem.
    Validate,
    /// Revert the last deploy and push the revert (runs the `git/revert` stage alone).
    ///
    /// Examples: `pydeployer rollback`, `pydeployer rollback --to 1` (back to the tree of
    /// ledger entry 1, with revert commits; history is never rewritten).
    Rollback(RollbackArgs),
    /// The deploy ledger (archive/deploy_history.json) as a table.
    History(HistoryArgs),
    /// Create the demo's local origin (a small Python app with tests) and run the pipeline.
    Demo(LockArgs),
    /// (internal) Ends the stages' process groups if the run that started it dies.
    #[command(name = "__watchdog", hide = true)]
    Watchdog,
    /// Print a JSON Schema (draft-07) of pipeline.yml, or of a stages.d file, for editors.
    ///
    /// Examples: `pydeployer schema > .pydeployer-schema.json` (for pipeline.yml),
    /// `pydeployer schema --stages-file > .pydeployer-stages-schema.json` (for stages.d/*.yml);
    /// then point the YAML language server at them (see the README).
    Schema(SchemaArgs),
    /// Write a commented pipeline.yml and stages.d/ for the project in this folder.
    ///
    /// Detects a git remote (`origin`: clone, test, and manual deploy and rollback stages), a
    /// requirements.txt (a `python/venv` stage) and tests (a `pytest` stage). Refuses to
    /// overwrite any file (exit 2, nothing written). The folder is the one of `-f`
    /// (default: this one).
    ///
    /// Example: `cd my-project && pydeployer init && pydeployer run`.
    Init,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// The schema of a stages.d/*.yml file (stage names as keys) instead of pipeline.yml.
    #[arg(long)]
    pub stages_file: bool,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// When another run of this project is in progress, wait for it instead of failing.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Return the branch to the tree of this ledger entry (see `pydeployer history`).
    #[arg(long, value_name = "ID")]
    pub to: Option<u64>,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only the newest N entries.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Show the plan instead of running it.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct AllArgs {
    /// Leave this stage out (repeatable).
    #[arg(long, value_name = "STAGE")]
    pub skip: Vec<String>,
    /// Show the plan instead of running it.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct SelectArgs {
    /// Run these stages and everything they need.
    #[arg(value_name = "STAGE", conflicts_with = "only")]
    pub stages: Vec<String>,
    /// Run exactly this stage, not what it needs (repeatable).
    #[arg(long, value_name = "STAGE")]
    pub only: Vec<String>,
    /// Leave this stage out (repeatable).
    #[arg(long, value_name = "STAGE")]
    pub skip: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}
