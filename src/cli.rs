//! The command line (clap derive only; no logic here).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum, ValueHint};
use clap_complete::ArgValueCandidates;

use crate::complete::stage_candidates;

/// Run your CI/CD pipeline on your own machine.
#[derive(Debug, Parser)]
#[command(name = "pydeployer", version, about, propagate_version = true)]
#[command(after_help = "\
Examples:
  pydeployer run                  every stage but the manual ones
  pydeployer plan                 what `run` would do; runs nothing
  pydeployer run --only test      just the test stage
  pydeployer graph --format dot | dot -Tsvg > stages.svg

Exit codes: 0 success, 1 a stage failed, 2 invalid pipeline or command line (nothing ran), 3 another run holds the project (nothing ran), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).")]
pub struct Cli {
    /// `None`: no command given, which on a terminal opens the menu.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The pipeline file; `stages.d/` next to it adds stages.
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        default_value = "pipeline.yml",
        value_name = "PATH",
        value_hint = ValueHint::FilePath
    )]
    pub file: PathBuf,

    /// Stages run at once (default: `jobs:` of the pipeline, else the number of CPUs).
    #[arg(short = 'j', long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,

    /// Output format of plan, validate, history, logs --list and the run summary (see README
    /// "JSON output"); jsonl: a run's events as they happen, one JSON object per line.
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
    #[command(after_help = "\
Examples:
  pydeployer run                  every stage but the manual ones
  pydeployer run test deploy      those stages and everything they need
  pydeployer run --only test      exactly that stage, not what it needs
  pydeployer run --skip lint      all but lint
  pydeployer run --dry-run        the plan; runs nothing
  pydeployer run --failed         again what failed (or was skipped for it) last time
  pydeployer run --no-cache       every stage, even those whose cache: is unchanged")]
    Run(RunArgs),
    /// The same as `run` with no stage names.
    #[command(after_help = "\
Examples:
  pydeployer all                  every stage but the manual ones
  pydeployer all --skip deploy    all but deploy")]
    All(AllArgs),
    /// Show what `run` would do (order, parallel waves, commands, what is left out); runs nothing.
    #[command(after_help = "\
Examples:
  pydeployer plan                 the whole run
  pydeployer plan deploy          deploy and what it needs
  pydeployer plan --format json   the same as JSON")]
    Plan(SelectArgs),
    /// Load and check the pipeline; report every problem.
    #[command(after_help = "\
Examples:
  pydeployer validate
  pydeployer validate -f ci/pipeline.yml")]
    Validate,
    /// Return the remote (or an environment) to the deploy before the live one, with one
    /// revert commit pushed on top.
    #[command(after_help = "\
Examples:
  pydeployer rollback                   back to the previous deploy in the ledger
  pydeployer rollback --to 1            back to the files of ledger entry 1, in one revert
                                        commit; history is never rewritten
  pydeployer rollback --env staging     the same, for one environment")]
    Rollback(RollbackArgs),
    /// Deploy to one environment: its deploy stage(s) alone. An environment that `requires`
    /// another gets the exact commit live and healthy there (no build, no new commit).
    #[command(after_help = "\
Examples:
  pydeployer deploy staging
  pydeployer deploy production --approve    approve it from a script (the ledger says who)")]
    Deploy(DeployArgs),
    /// Each environment: the commit live there, when and how it got there, and its health now.
    #[command(after_help = "\
Examples:
  pydeployer status
  pydeployer status --no-check --format json")]
    Status(StatusArgs),
    /// (internal) An HTTP health check, run by a deploy stage: GET until healthy or timeout.
    #[command(name = "__health-check", hide = true)]
    HealthCheck(HealthCheckArgs),
    /// The deploy ledger (archive/deploy_history.json) as a table.
    ///
    /// Columns: id, kind, status, branch, short commit, started, duration; oldest first.
    #[command(after_help = "\
Examples:
  pydeployer history
  pydeployer history --limit 5 --format json")]
    History(HistoryArgs),
    /// Run the pipeline on each new commit of the repository's branch (`git ls-remote` every
    /// `--interval`), or with `--files` on each change in the project folder; one run at a time.
    ///
    /// Commits pushed during a run make one more run, on the newest. With `--files` (a pipeline
    /// without `repo:`), a change during a run cancels it and starts again; logs/, archive/,
    /// workspace/, .pydeployer/, .git/ and what .gitignore ignores are not watched. Ctrl-C ends
    /// the run in progress as it always does, then watch exits 130.
    #[command(after_help = "\
Examples:
  pydeployer watch                    poll the branch every 30s, run on each new commit
  pydeployer watch --interval 5s test only test (and what it needs) on each commit
  pydeployer watch --files            rerun on each save (a pipeline without repo:)")]
    Watch(WatchArgs),
    /// The scheduled stages (`schedule:`): list them with their next times, install them in
    /// your crontab, remove them from it, or run them in the foreground when their time comes.
    #[command(after_help = "\
Examples:
  pydeployer schedule                 each scheduled stage and its next three times
  pydeployer schedule install         one crontab line per scheduled stage (run twice: same)
  pydeployer schedule remove          take pydeployer's lines out of the crontab
  pydeployer schedule run             a foreground scheduler (containers, no cron)
  pydeployer schedule run cleanup     run that stage now, as its schedule would")]
    Schedule(ScheduleArgs),
    /// Create the demo's local origin (a small Python app with tests) and run the pipeline.
    #[command(after_help = "\
Examples:
  pydeployer demo
  pydeployer demo --wait          queue behind a run in progress")]
    Demo(LockArgs),
    /// Print the stage graph as Mermaid (renders in GitHub markdown) or Graphviz dot source.
    #[command(after_help = "\
Examples:
  pydeployer graph > stages.mmd                        Mermaid, for a ```mermaid block
  pydeployer graph --format dot | dot -Tsvg > stages.svg

Every stage is a node and every `needs` entry an edge; manual stages are dashed,
on_failure and always stages have their own outline.")]
    Graph(GraphArgs),
    /// Print the shell script that makes TAB complete commands, flags and stage names.
    #[command(after_help = "\
Examples:
  echo 'source <(pydeployer completions bash)' >> ~/.bashrc
  echo 'source <(pydeployer completions zsh)' >> ~/.zshrc
  pydeployer completions fish > ~/.config/fish/completions/pydeployer.fish
  pydeployer completions powershell | Out-String | Invoke-Expression

Stage names come from pipeline.yml in the current folder (or the one -f names).")]
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per command to a folder.
    #[command(after_help = "\
Examples:
  pydeployer man | man -l -
  pydeployer man run | man -l -
  pydeployer man --dir ~/.local/share/man/man1")]
    Man(ManArgs),
    /// Show a run's log (the newest by default), list the runs, or follow the one in progress.
    ///
    /// RUN is `-1` (the newest run, the default), `-2` (the one before), …; or the log's name,
    /// with or without `.log` (`2026-11-22_12-03-04`, `2026-11-22_12-03-04-2`); or the start
    /// of exactly one log's name (`2026-11-22_12`); or the path of a log file.
    #[command(after_help = "\
Examples:
  pydeployer logs                     the newest run's log
  pydeployer logs -2 --stage test     the test stage's lines of the run before
  pydeployer logs --list              every run with its result and duration
  pydeployer logs --list --format json
  pydeployer logs --follow            the run in progress, as it goes")]
    Logs(LogsArgs),
    /// Pick stages from a list and run them, one choice after another (also `pydeployer` alone
    /// on a terminal).
    ///
    /// ↑/↓ (or j/k) and Enter pick an entry: a stage runs alone (like `run --only STAGE`), `all`
    /// runs the pipeline; then the menu comes back. Esc or q quits (exit 0), Ctrl-C at the menu
    /// quits with 130. Needs a terminal: in scripts and CI use `pydeployer run`.
    #[command(after_help = "\
Examples:
  pydeployer menu
  pydeployer -f other/pipeline.yml menu")]
    Menu,
    /// Print a JSON Schema (draft-07) of pipeline.yml, or of a stages.d file, for editors.
    #[command(after_help = "\
Examples:
  pydeployer schema > .pydeployer-schema.json                          for pipeline.yml
  pydeployer schema --stages-file > .pydeployer-stages-schema.json     for stages.d/*.yml

Then point the YAML language server at them (see the README).")]
    Schema(SchemaArgs),
    /// Send what earlier runs could not send to the cloud (S3 uploads, SNS messages, webhooks).
    ///
    /// Runs keep what they could not send in .pydeployer/outbox/; the next run sends it too.
    /// Sending twice is harmless. Exit 1 when something is still not sent (it stays).
    #[command(after_help = "\
Examples:
  pydeployer sync
  pydeployer sync --format json")]
    Sync,
    /// Write a commented pipeline.yml and stages.d/ for the project in this folder.
    ///
    /// Detects a git remote (`origin`: clone, test, and manual deploy and rollback stages), a
    /// requirements.txt (a `python/venv` stage) and tests (a `pytest` stage). Refuses to
    /// overwrite any file (exit 2, nothing written). The folder is the one of `-f`
    /// (default: this one).
    #[command(after_help = "\
Examples:
  cd my-project && pydeployer init && pydeployer run
  pydeployer -f services/api/pipeline.yml init")]
    Init,
    /// Write the pipeline as a GitHub Actions workflow or a .gitlab-ci.yml (stdout by default).
    ///
    /// One job per stage, with its needs. What has no equivalent on the CI is a comment in the
    /// file and a warning. `--check` compares with the file `-o` names: exit 1 when it is stale.
    #[command(after_help = "\
Examples:
  pydeployer export github -o .github/workflows/pydeployer.yml
  pydeployer export gitlab -o .gitlab-ci.yml
  pydeployer export github -o .github/workflows/pydeployer.yml --check   in a pre-commit hook")]
    Export(ExportArgs),
    /// Turn a GitHub Actions workflow (or a .gitlab-ci.yml) into pipeline.yml and stages.d/.
    ///
    /// Each job becomes a stage (a matrix: one per combination); what cannot be carried over is
    /// listed in the report. Never overwrites: the folder must have no pipeline yet.
    #[command(after_help = "\
Examples:
  pydeployer import github .github/workflows/ci.yml && pydeployer run
  pydeployer import gitlab .gitlab-ci.yml -o local/")]
    Import(ImportArgs),
    /// List the files a run kept (`artifacts:` of its stages), by stage.
    ///
    /// RUN names a run as `pydeployer logs` does (default: the newest). The files are in
    /// `artifacts/<run>/<stage>/`, removed with the run's log.
    #[command(after_help = "\
Examples:
  pydeployer artifacts                 the newest run's files
  pydeployer artifacts -2 --format json")]
    Artifacts(ArtifactsArgs),
}

/// The hosted CIs `export` and `import` know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CiKind {
    /// GitHub Actions.
    Github,
    /// GitLab CI/CD.
    Gitlab,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The CI to write for.
    #[arg(value_enum, value_name = "CI")]
    pub target: CiKind,
    /// Write to this file instead of stdout (its folders are created).
    #[arg(short, long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub output: Option<PathBuf>,
    /// Write nothing: exit 0 when FILE is what export would write, 1 when it is stale.
    #[arg(long, requires = "output")]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CI the file is for.
    #[arg(value_enum, value_name = "CI")]
    pub source: CiKind,
    /// The workflow: .github/workflows/NAME.yml, or .gitlab-ci.yml.
    #[arg(value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub workflow: PathBuf,
    /// The folder to write pipeline.yml and stages.d/ in (default: the folder of `-f`).
    #[arg(short, long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ArtifactsArgs {
    /// Which run: `-1` (newest), `-2`, …, or a log's name.
    #[arg(value_name = "RUN", allow_negative_numbers = true)]
    pub run: Option<String>,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// The schema of a stages.d/*.yml file (stage names as keys) instead of pipeline.yml.
    #[arg(long)]
    pub stages_file: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Which run: `-1` (newest), `-2`, …, or a log's name (see above).
    #[arg(value_name = "RUN", allow_negative_numbers = true)]
    pub run: Option<String>,
    /// Only this stage's lines (e.g. `--stage test`).
    #[arg(long, value_name = "STAGE", add = ArgValueCandidates::new(stage_candidates))]
    pub stage: Option<String>,
    /// List the runs, oldest first (newest last, as `-1`), with result and duration.
    #[arg(long, conflicts_with_all = ["run", "stage", "follow"])]
    pub list: bool,
    /// Follow the run in progress (or wait for the next) until it ends, like `tail -f`.
    #[arg(long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// When another run of this project is in progress, wait for it instead of failing.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// How often to ask the remote for the branch's head, e.g. `30s`, `5m`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_interval, conflicts_with = "files")]
    pub interval: std::time::Duration,
    /// Rerun on each change in the project folder instead (a pipeline without `repo:`).
    #[arg(long)]
    pub files: bool,
}

/// `--interval`: a duration with its unit, above zero and at most a day.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let interval = humantime::parse_duration(text)
        .map_err(|err| format!("`{text}` is not a duration ({err}); write e.g. `30s` or `5m`"))?;
    if interval.is_zero() {
        return Err("the interval must be longer than zero; write e.g. `30s`".into());
    }
    if interval > std::time::Duration::from_hours(24) {
        return Err("the interval is at most a day (`24h`)".into());
    }
    Ok(interval)
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// What to do; without it, list the scheduled stages and their next times.
    #[command(subcommand)]
    pub action: Option<ScheduleAction>,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleAction {
    /// Write one crontab line per scheduled stage into your crontab, in a block marked for this
    /// project (replaced, never duplicated, when run again).
    Install(CrontabArgs),
    /// Remove this project's block from your crontab; every other line stays as it was.
    Remove(CrontabArgs),
    /// Run each scheduled stage when its time comes, in the foreground, one run at a time
    /// behind any other run of the project; or, naming a stage, run it now as its schedule
    /// would (what the crontab lines do).
    Run(ScheduleRunArgs),
}

#[derive(Debug, Args)]
pub struct CrontabArgs {
    /// The crontab of this user instead of yours (`crontab -u USER`; root only).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct ScheduleRunArgs {
    /// Run this scheduled stage now (and what it needs), with trigger `schedule`, then exit.
    #[arg(value_name = "STAGE", add = ArgValueCandidates::new(stage_candidates))]
    pub stage: Option<String>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Return the branch to the tree of this ledger entry (see `pydeployer history`).
    #[arg(long, value_name = "ID")]
    pub to: Option<u64>,
    /// Roll back this environment (of `environments:`) instead of `repo.remote`.
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only the newest N entries (N ≥ 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Only the entries of this environment.
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The environment (of `environments:`).
    #[arg(value_name = "ENV")]
    pub environment: String,
    /// Approve the deploy of an environment with `approval: true` (the ledger records your
    /// user name and the time).
    #[arg(long)]
    pub approve: bool,
    /// Deploy even a commit that has not passed the stages its deploy needs.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Do not run the health checks; show what the ledger says.
    #[arg(long)]
    pub no_check: bool,
}

#[derive(Debug, Args)]
pub struct HealthCheckArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value_t = 200)]
    pub expect: u16,
    #[arg(long)]
    pub contains: Option<String>,
    /// Seconds.
    #[arg(long)]
    pub timeout: f64,
    /// Seconds.
    #[arg(long)]
    pub interval: f64,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Test the project's checkout as it is on disk (uncommitted changes, untracked files git
    /// does not ignore) instead of what was pushed; it is never deployed with uncommitted changes.
    #[arg(long)]
    pub worktree: bool,
    /// Deploy even a commit that has not passed the stages its deploy needs (the ledger says
    /// it was forced).
    #[arg(long)]
    pub force: bool,
    /// Show the plan instead of running it.
    #[arg(long)]
    pub dry_run: bool,
    /// Run the stages that failed, were cancelled or were skipped because of a failure in the
    /// last run (not what they need, unless that did not succeed either).
    #[arg(long, conflicts_with_all = ["stages", "only", "skip"])]
    pub failed: bool,
    /// Run every stage, cached or not (what passes is still recorded in the cache).
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct AllArgs {
    /// Leave this stage out (repeatable).
    #[arg(long, value_name = "STAGE", add = ArgValueCandidates::new(stage_candidates))]
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
    #[arg(value_name = "STAGE", conflicts_with = "only", add = ArgValueCandidates::new(stage_candidates))]
    pub stages: Vec<String>,
    /// Run exactly this stage, not what it needs (repeatable).
    #[arg(long, value_name = "STAGE", add = ArgValueCandidates::new(stage_candidates))]
    pub only: Vec<String>,
    /// Leave this stage out (repeatable).
    #[arg(long, value_name = "STAGE", add = ArgValueCandidates::new(stage_candidates))]
    pub skip: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    /// A run's events as they happen, one JSON object per line (run, all, rollback, demo).
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The picture's language.
    #[arg(
        id = "graph_format",
        long = "format",
        value_name = "FORMAT",
        value_enum,
        default_value_t = GraphFormat::Mermaid
    )]
    pub format: GraphFormat,
    /// (internal) The global `--format text|json` does not apply to `graph`. Declaring its
    /// id here keeps clap from adding it (a second `--format`) to this command; the value
    /// given before `graph`, if any, lands here and is ignored.
    #[arg(id = "format", long = "output-format", hide = true, value_enum)]
    pub global_format: Option<Format>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Mermaid `flowchart TD` (GitHub renders it in a ```mermaid block).
    Mermaid,
    /// Graphviz dot (`dot -Tsvg`).
    Dot,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print the script for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Powershell,
    Elvish,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The page of this command (`run`, `plan`, …) instead of the main page.
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
    /// Write every page (pydeployer.1, pydeployer-run.1, …) to this folder instead.
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath, conflicts_with = "command")]
    pub dir: Option<PathBuf>,
}
