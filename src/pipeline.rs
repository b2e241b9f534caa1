//! The validated pipeline: owned types that are known to be consistent.
//!
//! Nothing here is built except by `config::load`; everything after it can rely on stage names
//! being unique and well-formed, `needs` naming existing stages, the graph being acyclic and
//! every value being in range.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// The tag of the runner's own lines in the run log; no stage may take it.
pub const RUNNER_TAG: &str = "pydeployer";

/// Between TERM and KILL when a stage is stopped, unless `grace_period:` says otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// A stage's name: letters, digits, `-`, `_`, `.`; safe to use in file names and tags.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StageName(String);

impl StageName {
    /// Checks the characters; the error says what is wrong.
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("a stage name cannot be empty".into());
        }
        if name.len() > 100 {
            return Err("a stage name is at most 100 characters".into());
        }
        if name.starts_with('.') {
            return Err("a stage name cannot start with `.`".into());
        }
        if name == RUNNER_TAG {
            return Err(format!(
                "`{RUNNER_TAG}` is reserved: the run log tags pydeployer's own lines with it"
            ));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!(
                "`{bad}` is not allowed in a stage name (use letters, digits, `-`, `_`, `.`)"
            ));
        }
        Ok(StageName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Stands in for an invalid name while the rest of its stage is still checked; a stage
    /// with it is never part of a `Pipeline`.
    pub(crate) fn placeholder() -> Self {
        StageName(String::new())
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The whole pipeline, ready to plan.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    /// The folder holding `pipeline.yml`; relative paths start here.
    pub root: PathBuf,
    /// The `pipeline.yml` itself, as given (for messages).
    pub file: PathBuf,
    pub repo: Option<Repo>,
    pub logs: LogSettings,
    /// The deploy ledger, absolute.
    pub archive: PathBuf,
    /// Stages run at once; `None`: the number of available CPUs.
    pub jobs: Option<usize>,
    pub env: BTreeMap<String, String>,
    /// Names of environment variables whose values are masked in every output.
    pub secrets: Vec<String>,
    /// Between TERM and KILL when a stage is stopped (timeout, Ctrl-C).
    pub grace_period: Duration,
    /// In declaration order (`pipeline.yml` first, then `stages.d/` by file name).
    pub stages: Vec<Stage>,
    /// `cloud:` — uploads to S3 and an SNS topic; `None`: nothing of it runs.
    pub cloud: Option<Cloud>,
    /// `notify:` — webhooks told of the run's events.
    pub notify: Vec<Webhook>,
    /// `environments:` — where deploy stages that name one push, in declaration order.
    pub environments: Vec<Environment>,
}

impl Pipeline {
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name.as_str() == name)
    }

    /// Where `stage` runs, as things are now: its `workdir`, else the clone once there is
    /// one, else the root.
    /// Each stage's position in `stages`, by name.
    pub fn index(&self) -> HashMap<&str, usize> {
        self.stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect()
    }

    /// The stages a deploy stage must have passed on the commit it deploys: everything it
    /// needs, transitively, but the built-in git actions and `python/venv` (which make the
    /// workspace rather than test it).
    pub fn guards<'a>(&'a self, stage: &'a Stage) -> Vec<&'a StageName> {
        let mut seen: Vec<&'a StageName> = Vec::new();
        let mut todo: Vec<&'a StageName> = stage.needs.iter().collect();
        while let Some(name) = todo.pop() {
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            if let Some(need) = self.stage(name.as_str()) {
                todo.extend(&need.needs);
            }
        }
        let mut guards: Vec<&'a StageName> = seen
            .into_iter()
            .filter(|name| {
                self.stage(name.as_str()).is_some_and(|s| {
                    !s.builtin()
                        .is_some_and(|b| b.is_git() || b == Builtin::PythonVenv)
                })
            })
            .collect();
        guards.sort();
        guards
    }

    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    /// The deploy stages (`git/push`) that push to environment `name`, in declaration order.
    pub fn deploys_to<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Stage> + 'a {
        self.stages
            .iter()
            .filter(move |s| s.environment() == Some(name))
    }

    pub fn workdir(&self, stage: &Stage) -> PathBuf {
        if let Some(dir) = &stage.workdir {
            return dir.clone();
        }
        match &self.repo {
            Some(repo) if repo.dir.is_dir() => repo.dir.clone(),
            _ => self.root.clone(),
        }
    }
}

/// One of `environments:`: a git URL a deploy stage pushes to, and how to tell that what
/// runs there is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// A name as stage names are (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Any git URL; a local path is made absolute.
    pub url: String,
    pub branch: String,
    /// Only a commit live and healthy there may be deployed here (`deploy ENV` promotes it).
    pub requires: Option<String>,
    /// A person says yes before a deploy (on a terminal, or `deploy ENV --approve`).
    pub approval: bool,
    pub health: Option<Health>,
}

/// A health check: tried every `interval` until it passes, for at most `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub check: HealthCheck,
    pub timeout: Duration,
    pub interval: Duration,
}

pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_mins(1);
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// `GET url` answers `expect`, and its body holds `contains` when given.
    Http {
        url: String,
        expect: u16,
        contains: Option<String>,
    },
    /// A command (`sh -c`, in the workspace) exits 0.
    Run(String),
}

/// `cloud:`: where every run's log, ledger and summary go, and the topic told of failures.
/// Credentials never come from here: they are AWS's own chain (environment, profile files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cloud {
    pub s3: Option<S3Target>,
    pub sns: Option<SnsTarget>,
    /// A send that failed fails the run (exit 1); otherwise it is a warning.
    pub required: bool,
    /// The longest one request may take, start to end.
    pub timeout: Duration,
}

/// The default of `cloud.timeout`.
pub const DEFAULT_CLOUD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Target {
    /// Checked against S3's naming rules.
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
    /// `None`: the AWS chain's region (`AWS_REGION`, the profile), else `us-east-1`.
    pub region: Option<String>,
    /// `http://` or `https://`, without a trailing `/`.
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsTarget {
    /// `arn:aws:sns:REGION:ACCOUNT:NAME`, checked.
    pub topic: String,
    /// The topic's region, from its ARN.
    pub region: String,
    pub on: Vec<NotifyOn>,
    pub endpoint: Option<String>,
}

/// One `notify:` entry: a JSON POST to the URL in an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The variable holding the URL (the URL is a secret: it is masked, and never written).
    pub env: String,
    pub on: Vec<NotifyOn>,
}

/// What a notification is sent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    /// A stage failed (the run's exit code is not 0).
    Failure,
    /// The run passed.
    Success,
    /// The run pushed a rollback (`git/revert`).
    Rollback,
    /// A deploy's health check failed (environments).
    Unhealthy,
}

impl NotifyOn {
    pub const NAMES: [&'static str; 4] = ["failure", "success", "rollback", "unhealthy"];
    pub const DEFAULT: [NotifyOn; 1] = [NotifyOn::Failure];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "failure" => Some(NotifyOn::Failure),
            "success" => Some(NotifyOn::Success),
            "rollback" => Some(NotifyOn::Rollback),
            "unhealthy" => Some(NotifyOn::Unhealthy),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub url: String,
    pub branch: String,
    pub remote: String,
    /// Where the clone lives, absolute.
    pub dir: PathBuf,
    /// What `git/clone` puts in the workspace.
    pub source: Source,
}

/// What a run tests: what was pushed, or what is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// `git/clone` clones (or pulls) `url`'s branch.
    #[default]
    Clone,
    /// `git/clone` takes a snapshot of the project's own checkout as it is on disk
    /// (`run --worktree`).
    Worktree,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Absolute.
    pub dir: PathBuf,
    /// How many run logs remain after a run (at least 1).
    pub keep: usize,
}

/// Kept small (about 250 bytes): a pipeline can hold thousands, and what few stages use (a
/// cache, artifacts, a schedule, the Python kit's parameters) is boxed.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: StageName,
    pub action: Action,
    pub needs: Vec<StageName>,
    pub env: BTreeMap<String, String>,
    /// Absolute; `None`: `Pipeline::workdir` at the time the stage starts.
    pub workdir: Option<PathBuf>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub allow_failure: bool,
    pub when: When,
    pub description: Option<String>,
    /// Stdin from the terminal; the stage runs alone.
    pub interactive: bool,
    /// Secrets this stage needs: they must be set when it runs (and are masked like the
    /// pipeline's).
    pub secrets: Vec<String>,
    /// `cache:`: skip the stage when nothing it depends on changed since it last passed.
    pub cache: Option<Box<CacheSpec>>,
    /// `artifacts:`: files kept after the stage, in `artifacts/<run>/<stage>/`.
    pub artifacts: Option<Box<ArtifactSpec>>,
    /// `schedule:` — when its time comes (`schedule run`, or cron after `schedule install`);
    /// otherwise it runs only when named, as a manual stage.
    pub schedule: Option<Box<crate::cron::Schedule>>,
    /// `file:line` where the stage is declared, for messages.
    pub origin: String,
}

impl Stage {
    /// Runs only when named on the command line (or, with a `schedule:`, when its time
    /// comes): `when: manual`, or scheduled. A plain `run` leaves it out.
    pub fn on_demand(&self) -> bool {
        self.when == When::Manual || self.schedule.is_some()
    }

    /// The built-in action it uses, if any.
    pub fn builtin(&self) -> Option<Builtin> {
        match &self.action {
            Action::Uses(uses) => Some(uses.builtin()),
            Action::Run(_) => None,
        }
    }

    /// The environment a deploy stage pushes to (`with: { environment: … }`).
    pub fn environment(&self) -> Option<&str> {
        match &self.action {
            Action::Uses(Uses::GitPush {
                environment: Some(name),
            }) => Some(name),
            _ => None,
        }
    }
}

/// A stage's `cache:`: what its key covers besides its definition and its needs' keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheSpec {
    /// Globs of input files, relative to the stage's folder (checked: no `..`, not absolute).
    pub inputs: Vec<String>,
    /// Environment variables whose values are part of the key.
    pub env: Vec<String>,
    /// Globs that must each match a file for a hit (what the stage makes).
    pub outputs: Vec<String>,
}

/// A stage's `artifacts:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactSpec {
    /// Globs relative to the stage's folder (checked: no `..`, not absolute).
    pub paths: Vec<String>,
    /// `when: always`: kept from a failed stage too.
    pub always: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `run:` — a shell string or an argv list.
    Run(RunCommand),
    /// `uses:` — a built-in action with its `with:` parameters, decoded.
    Uses(Uses),
}

/// A built-in action and its parameters, typed: nothing after `config/` reads `with:` again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uses {
    GitClone,
    GitCommit {
        /// The commit message; `None`: `pydeployer build <date>`.
        message: Option<String>,
    },
    Pytest(PytestParams),
    PythonVenv(Box<VenvParams>),
    PythonLint(Box<LintParams>),
    PythonCoverage(Box<CoverageParams>),
    PythonBuild,
    PythonPublish(Box<PublishParams>),
    GitPush {
        /// Push to this one of `environments:` instead of `repo.remote`.
        environment: Option<String>,
    },
    GitRevert,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PytestParams {
    /// After `-v`, before pydeployer's `--junitxml`.
    pub args: Vec<String>,
    /// Exit code 5 ("no tests collected") passes.
    pub allow_no_tests: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VenvParams {
    /// Requirements files that must exist; empty: `requirements.txt` when it is there.
    pub requirements: Vec<String>,
    /// Packages installed besides the requirements (`ruff`, `coverage==7.6.1`).
    pub packages: Vec<String>,
    /// The interpreter that makes the venv; `None`: `python3`.
    pub python: Option<String>,
    /// Install the project itself (`pip install -e .`), from its pyproject.toml or setup.py.
    pub project: bool,
    /// The project's extras to install with it (`[test]`); implies `project`.
    pub extras: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LintParams {
    /// Also `ruff format --check`.
    pub format: bool,
    /// More arguments for `ruff check` (after `check`, before the paths).
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoverageParams {
    /// More arguments for pytest.
    pub args: Vec<String>,
    /// The stage fails when the total coverage is below this percentage.
    pub fail_under: Option<Percent>,
    /// Exit code 5 ("no tests collected") passes.
    pub allow_no_tests: bool,
}

/// A percentage from 0 to 100, in hundredths (`85.5` is 8550): exact, comparable, hashable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Percent(pub u16);

impl Percent {
    /// `None` unless `value` is a number from 0 to 100.
    pub fn from_f64(value: f64) -> Option<Percent> {
        if !(0.0..=100.0).contains(&value) {
            return None;
        }
        let hundredths = (value * 100.0).round();
        // In range: 0 ≤ hundredths ≤ 10 000.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked above"
        )]
        Some(Percent(hundredths as u16))
    }
}

impl fmt::Display for Percent {
    /// `85`, `85.5`, `85.25`: as short as it is exact.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, part) = (self.0 / 100, self.0 % 100);
        match part {
            0 => write!(f, "{whole}"),
            p if p % 10 == 0 => write!(f, "{whole}.{}", p / 10),
            p => write!(f, "{whole}.{p:02}"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishParams {
    /// The index's upload URL; required.
    pub repository_url: String,
    /// The variable holding the token (listed in `secrets:`); twine gets it as its password,
    /// with the user name `__token__`.
    pub token_env: Option<String>,
    /// A version that is already there is skipped instead of failing.
    pub skip_existing: bool,
}

impl Uses {
    pub fn builtin(&self) -> Builtin {
        match self {
            Uses::GitClone => Builtin::GitClone,
            Uses::GitCommit { .. } => Builtin::GitCommit,
            Uses::Pytest(_) => Builtin::Pytest,
            Uses::PythonVenv(_) => Builtin::PythonVenv,
            Uses::PythonLint(_) => Builtin::PythonLint,
            Uses::PythonCoverage(_) => Builtin::PythonCoverage,
            Uses::PythonBuild => Builtin::PythonBuild,
            Uses::PythonPublish(_) => Builtin::PythonPublish,
            Uses::GitPush { .. } => Builtin::GitPush,
            Uses::GitRevert => Builtin::GitRevert,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunCommand {
    /// Run by `sh -c` (or directly, when it has no shell syntax).
    Shell(String),
    /// Run as given, no shell.
    Argv(Vec<String>),
}

/// The built-in actions `uses:` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Builtin {
    #[serde(rename = "git/clone")]
    GitClone,
    #[serde(rename = "git/commit")]
    GitCommit,
    #[serde(rename = "pytest")]
    Pytest,
    #[serde(rename = "python/venv")]
    PythonVenv,
    #[serde(rename = "python/lint")]
    PythonLint,
    #[serde(rename = "python/coverage")]
    PythonCoverage,
    #[serde(rename = "python/build")]
    PythonBuild,
    #[serde(rename = "python/publish")]
    PythonPublish,
    #[serde(rename = "git/push")]
    GitPush,
    #[serde(rename = "git/revert")]
    GitRevert,
}

impl Builtin {
    /// Runs git on the workspace clone.
    pub fn is_git(self) -> bool {
        matches!(
            self,
            Builtin::GitClone | Builtin::GitCommit | Builtin::GitPush | Builtin::GitRevert
        )
    }
}

impl Builtin {
    pub const ALL: [Builtin; 10] = [
        Builtin::GitClone,
        Builtin::GitCommit,
        Builtin::Pytest,
        Builtin::PythonVenv,
        Builtin::PythonLint,
        Builtin::PythonCoverage,
        Builtin::PythonBuild,
        Builtin::PythonPublish,
        Builtin::GitPush,
        Builtin::GitRevert,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::GitClone => "git/clone",
            Builtin::GitCommit => "git/commit",
            Builtin::Pytest => "pytest",
            Builtin::PythonVenv => "python/venv",
            Builtin::PythonLint => "python/lint",
            Builtin::PythonCoverage => "python/coverage",
            Builtin::PythonBuild => "python/build",
            Builtin::PythonPublish => "python/publish",
            Builtin::GitPush => "git/push",
            Builtin::GitRevert => "git/revert",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The `with:` keys the action accepts, and what each holds.
    pub fn parameters(self) -> &'static [(&'static str, Param)] {
        match self {
            Builtin::GitClone | Builtin::GitRevert | Builtin::PythonBuild => &[],
            Builtin::GitPush => &[("environment", Param::Text)],
            Builtin::GitCommit => &[("message", Param::Text)],
            Builtin::Pytest => &[("args", Param::Words), ("allow_no_tests", Param::Flag)],
            Builtin::PythonVenv => &[
                ("requirements", Param::Words),
                ("packages", Param::Words),
                ("python", Param::Text),
                ("project", Param::Flag),
                ("extras", Param::Words),
            ],
            Builtin::PythonLint => &[("format", Param::Flag), ("args", Param::Words)],
            Builtin::PythonCoverage => &[
                ("args", Param::Words),
                ("fail_under", Param::Percent),
                ("allow_no_tests", Param::Flag),
            ],
            Builtin::PythonPublish => &[
                ("repository_url", Param::Text),
                ("token_env", Param::Text),
                ("skip_existing", Param::Flag),
            ],
        }
    }

    /// The parameters that must be given.
    pub fn required(self) -> &'static [&'static str] {
        match self {
            Builtin::PythonPublish => &["repository_url"],
            _ => &[],
        }
    }

    /// The program the action runs from the workspace's `.venv/bin`, and the package that
    /// installs it (for `python/venv`'s `packages:`).
    pub fn venv_tool(self) -> Option<(&'static str, &'static str)> {
        match self {
            Builtin::PythonLint => Some(("ruff", "ruff")),
            Builtin::PythonCoverage => Some(("coverage", "coverage")),
            Builtin::PythonBuild => Some(("pyproject-build", "build")),
            Builtin::PythonPublish => Some(("twine", "twine")),
            _ => None,
        }
    }
}

/// The type of a built-in action's parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// A string.
    Text,
    /// A list of strings (or one string, split at spaces).
    Words,
    /// true or false.
    Flag,
    /// A number from 0 to 100.
    Percent,
}

/// When a stage runs, given how the stages before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Only if every stage it needs succeeded.
    #[default]
    OnSuccess,
    /// Only if something before it failed.
    OnFailure,
    /// Whatever happened before it.
    Always,
    /// Only when named on the command line.
    Manual,
}

impl When {
    pub const NAMES: [&'static str; 4] = ["on_success", "on_failure", "always", "manual"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "on_success" => Some(When::OnSuccess),
            "on_failure" => Some(When::OnFailure),
            "always" => Some(When::Always),
            "manual" => Some(When::Manual),
            _ => None,
        }
    }

    /// `on_failure`/`always` stages react to the outcome of others instead of needing success.
    pub fn is_post(self) -> bool {
        matches!(self, When::OnFailure | When::Always)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_are_file_name_safe() {
        assert!(StageName::parse("unit-tests_2.py").is_ok());
        for bad in ["", "a/b", "..", ".hidden", "a b", "é", "x;rm"] {
            assert!(StageName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
