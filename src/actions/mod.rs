//! What a stage runs, as typed command lines: `run:` commands and the built-in actions.
//!
//! Nothing here spawns; `exec::process` does. Values from the YAML only ever become separate
//! arguments, never text pasted into a shell line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::events::{DeployKind, Deployed, Published, PublishedFile};
use crate::object_id::ObjectId;
use crate::pipeline::{Action, Builtin, Pipeline, RunCommand, Stage, Uses};

pub mod environment;
pub mod git;
pub mod junit;
pub mod python;

/// One program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandLine {
    pub program: String,
    pub args: Vec<String>,
    /// Exit codes other than 0 that mean success (pytest's 5, "no tests", when allowed).
    pub also_ok: Vec<i32>,
    /// How to show it, when the real command line is a wrapper script.
    shown: Option<String>,
    /// A question the action asks (`git rev-parse HEAD`), not a step of the stage: its output
    /// is its answer, kept for [`post_step`] instead of shown, and any exit code is fine.
    pub probe: bool,
    /// Not a process: the runner asks [`gate`] whether the stage may go on (a deploy of a
    /// commit that did not pass its stages may not).
    pub gate: bool,
    /// Its output is shown, and a copy (the first [`KEPT_OUTPUT`] bytes) is kept for
    /// [`post_step`] (ruff's findings, the files `python -m build` made).
    pub keep_output: bool,
    /// An environment's health check: a failure does not end the stage but makes it
    /// unhealthy (the commands marked [`if_unhealthy`](CommandLine::if_unhealthy) run).
    pub health: bool,
    /// Runs only once a health check of the stage failed (the automatic rollback).
    pub if_unhealthy: bool,
    /// A question to the person at the terminal (its stdin); exit 0 is their yes.
    pub approval: bool,
}

/// How much of a command's output is kept for its action's post-step.
pub const KEPT_OUTPUT: usize = 256 * 1024;

impl CommandLine {
    pub fn new(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        CommandLine {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            also_ok: Vec::new(),
            shown: None,
            probe: false,
            keep_output: false,
            gate: false,
            health: false,
            if_unhealthy: false,
            approval: false,
        }
    }

    /// The [`gate`](CommandLine::gate) of a deploy.
    pub fn gate() -> Self {
        CommandLine {
            gate: true,
            ..CommandLine::new("gate", Vec::<String>::new())
        }
    }

    /// A [`probe`](CommandLine::probe): `git rev-parse …` whose output is data.
    pub fn probe(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        CommandLine {
            probe: true,
            ..CommandLine::new(program, args)
        }
    }

    /// Keeps a copy of the output for the post-step (see [`CommandLine::keep_output`]).
    #[must_use]
    pub fn kept(mut self) -> Self {
        self.keep_output = true;
        self
    }

    #[must_use]
    pub fn shown_as(mut self, text: String) -> Self {
        self.shown = Some(text);
        self
    }
}

impl fmt::Display for CommandLine {
    /// As a shell would need it typed: words with special characters are single-quoted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(shown) = &self.shown {
            return f.write_str(shown);
        }
        write!(f, "{}", quote(&self.program))?;
        for arg in &self.args {
            write!(f, " {}", quote(arg))?;
        }
        Ok(())
    }
}

pub(crate) fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The environment changes for a stage's commands (`None`: remove the variable): the
/// pipeline's and the stage's `env:`, `PYDEPLOYER_STAGE`, and for the built-in git actions
/// the variables that pin git to the workspace clone (see [`git::pinned_environment`]).
pub fn environment(pipeline: &Pipeline, stage: &Stage) -> BTreeMap<String, Option<String>> {
    let mut env: BTreeMap<String, Option<String>> = pipeline
        .env
        .iter()
        .chain(&stage.env)
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    env.insert("PYDEPLOYER_STAGE".into(), Some(stage.name.to_string()));
    if let Action::Uses(Uses::PythonPublish(params)) = &stage.action {
        // twine reads its credentials from these; a token is always user `__token__`.
        if let Some(name) = &params.token_env {
            let token = env
                .get(name)
                .cloned()
                .flatten()
                .or_else(|| std::env::var(name).ok());
            env.insert("TWINE_USERNAME".into(), Some("__token__".into()));
            env.insert("TWINE_PASSWORD".into(), token);
        }
    }
    if let Some(action) = stage.builtin()
        && action.is_git()
    {
        let pinned =
            git::pinned_environment(pipeline.repo.as_ref(), action == Builtin::GitClone, &env);
        env.extend(pinned);
    }
    env
}

/// Shell builtins and keywords that have no program of their own (or behave differently as
/// one): a command starting with them must go through `sh -c`.
const SHELL_ONLY: &[&str] = &[
    ".", ":", "alias", "bg", "break", "cd", "command", "continue", "eval", "exec", "exit",
    "export", "fc", "fg", "getopts", "hash", "jobs", "local", "read", "readonly", "return", "set",
    "shift", "source", "times", "trap", "type", "ulimit", "umask", "unalias", "unset", "wait",
    "if", "then", "else", "elif", "fi", "case", "esac", "for", "while", "until", "do", "done",
    "function", "select", "time", "!", "{", "}", "[[", "]]",
];

/// A `run:` string as a command line: split into words and run directly when it holds no
/// shell syntax (as make does; one process instead of two), else `sh -c`.
pub fn shell_command(script: &str) -> CommandLine {
    let simple = script
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" \t-_./=:,@%+".contains(&b));
    let words: Vec<&str> = script.split_ascii_whitespace().collect();
    match words.split_first() {
        Some((first, rest)) if simple && !SHELL_ONLY.contains(first) && !first.contains('=') => {
            CommandLine::new(*first, rest.iter().copied())
        }
        _ => CommandLine::new("sh", ["-c", script]),
    }
}

/// What the actions need to know about the run they are part of.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    /// A folder for this run's reports (pytest's JUnit XML), removed after the run.
    pub scratch: PathBuf,
    /// `rollback --to`: the commit whose tree the rollback restores.
    pub revert_to: Option<ObjectId>,
    /// The ledger entry of that commit (the rollback's entry names it).
    pub revert_to_entry: Option<u64>,
    /// `run --worktree`: `git/clone` takes a snapshot of this checkout instead of cloning.
    pub snapshot: Option<Snapshot>,
    /// `--force`: deploy what did not pass its stages (the ledger says so).
    pub force: bool,
    /// Per environment, its last healthy deploy (ledger id, commit): where an unhealthy
    /// deploy is rolled back to.
    pub last_healthy: BTreeMap<String, (u64, ObjectId)>,
    /// `deploy ENV` of an environment that `requires` another: the commit live and healthy
    /// there, pushed instead of the workspace's HEAD.
    pub promote: Option<ObjectId>,
    /// `deploy ENV --approve`: the approval is given already.
    pub approved: Option<crate::events::Approval>,
    /// `rollback --env ENV`: the environment's deploy stage rolls back instead.
    pub env_rollback: Option<EnvRollback>,
    /// This program, which runs the HTTP health checks (`pydeployer __health-check`).
    pub program: Option<PathBuf>,
    /// Why the run was started: what its ledger entries say.
    pub trigger: crate::events::Trigger,
}

/// `rollback --env ENV [--to ID]`: the ledger entry whose files the environment gets back.
#[derive(Debug, Clone)]
pub struct EnvRollback {
    pub entry: u64,
    pub commit: ObjectId,
    /// Said in the rollback commit's message.
    pub reason: String,
}

/// The project's own checkout, as `run --worktree` copies it into the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Its top folder (`git rev-parse --show-toplevel`).
    pub checkout: PathBuf,
    /// Folders inside it that are pydeployer's own (logs, ledger, workspace, `.pydeployer`),
    /// relative to `checkout`: never copied, even where git does not ignore them.
    pub exclude: Vec<String>,
}

/// The commands a stage runs, in order; the stage fails at the first that fails. Built-in
/// actions look at the workspace as it is when the stage starts (clone or pull?).
pub fn commands(
    pipeline: &Pipeline,
    stage: &Stage,
    context: &RunContext,
) -> Result<Vec<CommandLine>, String> {
    let repo = || {
        pipeline
            .repo
            .as_ref()
            .ok_or_else(|| format!("`{}` needs `repo:` in the pipeline file", stage.name))
    };
    Ok(match &stage.action {
        Action::Run(RunCommand::Shell(script)) => vec![shell_command(script)],
        Action::Run(RunCommand::Argv(argv)) => vec![CommandLine::new(&argv[0], &argv[1..])],
        Action::Uses(uses) => match uses {
            Uses::GitClone => match &context.snapshot {
                Some(snapshot) => git::snapshot(repo()?, snapshot),
                None => git::clone_or_pull(repo()?)?,
            },
            Uses::GitCommit { message } => {
                let message = message.clone().unwrap_or_else(|| {
                    format!(
                        "pydeployer build {}",
                        chrono::Local::now().format("%Y-%m-%d %H:%M:%S")
                    )
                });
                git::commit(&message)
            }
            Uses::GitPush {
                environment: Some(name),
            } => {
                if context.snapshot.is_some() {
                    git::refuse_uncommitted_snapshot(repo()?)?;
                }
                let environment = pipeline
                    .environment(name)
                    .ok_or_else(|| format!("no environment `{name}`"))?;
                environment::deploy(pipeline, environment, context)
            }
            Uses::GitPush { environment: None } => {
                if context.snapshot.is_some() {
                    git::refuse_uncommitted_snapshot(repo()?)?;
                }
                let mut push = vec![git::head(), CommandLine::gate()];
                push.extend(git::push(repo()?));
                git::probed(repo()?, push)
            }
            Uses::GitRevert => {
                let mut revert = git::revert(repo()?, context.revert_to.as_ref());
                let fetch = revert.remove(0);
                let mut commands = vec![fetch];
                commands.extend(git::probed(repo()?, revert));
                commands
            }
            Uses::Pytest(params) => vec![python::pytest(
                &pipeline.workdir(stage),
                params,
                &context.scratch.join(format!("junit-{}.xml", stage.name)),
            )],
            Uses::PythonVenv(params) => python::venv(&pipeline.workdir(stage), params)?,
            Uses::PythonLint(params) => vec![python::lint(&pipeline.workdir(stage), params)],
            Uses::PythonCoverage(params) => python::coverage(
                &pipeline.workdir(stage),
                params,
                &context.scratch.join(format!("junit-{}.xml", stage.name)),
            ),
            Uses::PythonBuild => vec![python::build(&pipeline.workdir(stage))],
            Uses::PythonPublish(params) => python::publish(&pipeline.workdir(stage), params)?,
        },
    })
}

/// The action writes a report into the run's scratch folder (pytest's JUnit XML).
pub fn needs_scratch(stage: &Stage) -> bool {
    matches!(
        stage.builtin(),
        Some(Builtin::Pytest | Builtin::PythonCoverage)
    )
}

/// Where pytest writes its JUnit report for `stage`, when the stage runs pytest.
pub fn junit_report(stage: &Stage, context: &RunContext) -> Option<PathBuf> {
    needs_scratch(stage).then(|| context.scratch.join(format!("junit-{}.xml", stage.name)))
}

/// Whether a deploy stage may push the commit its probe found (the last answer so far): every
/// stage it needs must have passed, in this run (`passed_now`: the workspace flowed through
/// them to this commit) or, on that very commit, in an earlier one (`passed`). `Ok(true)`: it
/// may only because of `--force`.
pub fn gate(
    pipeline: &Pipeline,
    stage: &Stage,
    context: &RunContext,
    answers: &[String],
    passed: &crate::store::passed::Passed,
    passed_now: &std::collections::BTreeSet<crate::pipeline::StageName>,
) -> Result<bool, String> {
    // A promotion pushes the commit live and healthy on the environment it requires: that
    // is its gate, checked before the run.
    if context.promote.is_some() && stage.environment().is_some() {
        return Ok(false);
    }
    let guards = pipeline.guards(stage);
    if guards.is_empty() {
        return Ok(false);
    }
    let commit = answers
        .last()
        .map(|a| a.trim())
        .filter(|a| a.parse::<crate::object_id::ObjectId>().is_ok());
    let missing: Vec<&str> = match commit {
        Some(commit) => guards
            .iter()
            .filter(|g| !passed_now.contains(**g) && !passed.passed(commit, g))
            .map(|g| g.as_str())
            .collect(),
        None => guards
            .iter()
            .filter(|g| !passed_now.contains(**g))
            .map(|g| g.as_str())
            .collect(),
    };
    if missing.is_empty() {
        return Ok(false);
    }
    if context.force {
        return Ok(true);
    }
    let what = commit.map_or_else(
        || "the workspace's commit".to_owned(),
        |c| format!("commit {}", &c[..10]),
    );
    Err(format!(
        "refusing to deploy {what}: it has not passed {} (in this run or an earlier one); run {} first, or pass --force to deploy it anyway (the ledger will say so)",
        missing
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", "),
        missing
            .iter()
            .map(|m| format!("`pydeployer run {m}`"))
            .collect::<Vec<_>>()
            .join(" or "),
    ))
}

/// What a stage's action adds to its finished event, from its post-step.
#[derive(Debug, Default)]
pub struct PostStep {
    /// pytest: the counts and the failed tests, from its JUnit report; ruff's findings; the
    /// coverage; the files built.
    pub note: Option<String>,
    /// What to show under the stage when it failed, instead of its output's last lines
    /// (pytest: the failure sections).
    pub details: Option<String>,
    pub deploy: Option<Deployed>,
    pub publish: Option<Box<Published>>,
}

/// Whether the action's post-step reads the last line of the stage's output (pytest's
/// summary line has its counts).
pub fn wants_last_line(stage: &Stage) -> bool {
    matches!(
        stage.builtin(),
        Some(Builtin::Pytest | Builtin::GitCommit | Builtin::GitRevert)
    )
}

/// What the post-step learns from the stage's commands.
pub struct Finished<'a> {
    /// The probes' answers, in order.
    pub answers: &'a [String],
    /// What the commands that keep their output printed (bounded).
    pub output: &'a [u8],
    pub outcome: &'a crate::events::Outcome,
    /// The last line of the stage's output, when [`wants_last_line`] (pytest's summary).
    pub last_line: &'a str,
}

/// The action's post-step, once its commands ended: pytest's JUnit report is read, ruff's
/// findings counted, a deploy says what it pushed (from its probes' answers, in order).
pub fn post_step(
    pipeline: &Pipeline,
    stage: &Stage,
    context: &RunContext,
    finished: &Finished<'_>,
) -> PostStep {
    let answers = finished.answers;
    let counts = junit_report(stage, context).and_then(|path| {
        let counts = junit::parse(&std::fs::read_to_string(path).ok()?)?;
        Some(counts.with_summary_line(finished.last_line))
    });
    let dir = pipeline.workdir(stage);
    let mut publish = None;
    let details = counts.as_ref().and_then(junit::TestCounts::details);
    let tests = counts.as_ref().map(junit::TestCounts::describe);
    let note = match &stage.action {
        Action::Uses(Uses::PythonLint(_)) => python::lint_note(finished.output),
        Action::Uses(Uses::PythonCoverage(params)) => {
            coverage_note(&dir, params, tests.as_deref(), finished.outcome)
        }
        Action::Uses(Uses::PythonBuild) => python::build_note(&dir, finished.output),
        Action::Uses(Uses::PythonPublish(params)) => {
            let (note, published) = publish_step(&dir, params, finished);
            publish = published;
            note
        }
        // What the git scripts say when they did nothing is worth seeing without `-v`.
        Action::Uses(Uses::GitCommit { .. } | Uses::GitRevert) => {
            let last = finished.last_line.trim();
            last.contains("nothing to").then(|| last.to_owned())
        }
        _ => tests,
    };
    let kind = match stage.builtin() {
        Some(Builtin::GitPush) => Some(DeployKind::Deploy),
        Some(Builtin::GitRevert) => Some(DeployKind::Rollback),
        _ => None,
    };
    let environment = stage
        .environment()
        .and_then(|name| pipeline.environment(name));
    let deploy = kind
        .zip(pipeline.repo.as_ref())
        .map(|(kind, repo)| match environment {
            Some(environment) => environment_deploy(repo, environment, context, answers),
            None => {
                let (previous_commit, commit) = git::answers(answers);
                Deployed {
                    kind,
                    forced: false,
                    repo: repo.url.clone(),
                    remote: repo.remote.clone(),
                    branch: repo.branch.clone(),
                    commit,
                    previous_commit,
                    environment: None,
                    trigger: context.trigger,
                    approved_by: None,
                    health: None,
                    rolled_back_to: context.revert_to_entry,
                    auto_rollback: None,
                }
            }
        });
    PostStep {
        note,
        details,
        deploy,
        publish,
    }
}

/// `coverage 87% (12 passed, 0 failed, 0 skipped)`; below `fail_under`, both numbers.
fn coverage_note(
    dir: &std::path::Path,
    params: &crate::pipeline::CoverageParams,
    tests: Option<&str>,
    outcome: &crate::events::Outcome,
) -> Option<String> {
    // A report left from an earlier run says nothing about this one: only read it when the
    // tests passed (then `coverage xml` wrote it).
    let percent = std::fs::read_to_string(python::coverage_xml(dir))
        .ok()
        .filter(|_| tests.is_none_or(|t| t.contains(" 0 failed")))
        .and_then(|xml| python::coverage_percent(&xml));
    let mut parts = Vec::new();
    if let Some(percent) = percent {
        let shown = format!("{percent:.1}").trim_end_matches(".0").to_owned();
        match params.fail_under {
            Some(threshold) if !outcome.passed() && percent < f64::from(threshold.0) / 100.0 => {
                parts.push(format!("coverage {shown}%, below fail_under {threshold}%"));
            }
            _ => parts.push(format!("coverage {shown}%")),
        }
    }
    if let Some(tests) = tests {
        parts.push(tests.to_owned());
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// What `python/publish` uploaded: the package, version and files (with their sha256, from
/// the probe) for the ledger; a version that was already there is said so.
fn publish_step(
    dir: &std::path::Path,
    params: &crate::pipeline::PublishParams,
    finished: &Finished<'_>,
) -> (Option<String>, Option<Box<Published>>) {
    let sums: std::collections::BTreeMap<String, String> = finished
        .answers
        .first()
        .map(|answer| {
            answer
                .lines()
                .filter_map(|line| {
                    let (sum, path) = line.split_once("  ")?;
                    let valid = sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit());
                    let name = path.trim().strip_prefix("dist/")?;
                    valid.then(|| (name.to_owned(), sum.to_ascii_lowercase()))
                })
                .collect()
        })
        .unwrap_or_default();
    let Ok(files) = python::newest_release(&dir.join("dist")) else {
        return (None, None);
    };
    let Some(first) = files.first() else {
        return (None, None);
    };
    let exists = python::already_published(finished.output);
    let skipped =
        params.skip_existing && String::from_utf8_lossy(finished.output).contains(python::SKIPPED);
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    let note = if exists && !finished.outcome.passed() {
        format!(
            "{} {} is already on {}: nothing uploaded (`skip_existing: true` skips it instead)",
            first.package, first.version, params.repository_url
        )
    } else if skipped {
        format!(
            "{} {} is already on {}: skipped",
            first.package, first.version, params.repository_url
        )
    } else if finished.outcome.passed() {
        format!("uploaded {} to {}", names.join(", "), params.repository_url)
    } else {
        format!("upload of {} failed", names.join(", "))
    };
    let published = Published {
        package: first.package.clone(),
        version: first.version.clone(),
        index: params.repository_url.clone(),
        files: files
            .iter()
            .map(|f| PublishedFile {
                name: f.name.clone(),
                sha256: sums.get(&f.name).cloned(),
            })
            .collect(),
        skipped,
    };
    (Some(note), Some(Box::new(published)))
}

/// What a deploy stage of an environment did: a deploy (and the automatic rollback of it, when
/// its probes saw one), or under `rollback --env` a rollback.
fn environment_deploy(
    repo: &crate::pipeline::Repo,
    environment: &crate::pipeline::Environment,
    context: &RunContext,
    answers: &[String],
) -> Deployed {
    let rollback = context.env_rollback.as_ref();
    let [previous_commit, commit, rolled] = environment::answers(answers, rollback.is_some());
    let base = Deployed {
        kind: if rollback.is_some() {
            DeployKind::Rollback
        } else {
            DeployKind::Deploy
        },
        forced: false,
        repo: repo.url.clone(),
        remote: environment.url.clone(),
        branch: environment.branch.clone(),
        commit: commit.clone(),
        previous_commit,
        environment: Some(environment.name.clone()),
        trigger: context.trigger,
        approved_by: context.approved.clone(),
        health: None,
        rolled_back_to: rollback.map(|r| r.entry),
        auto_rollback: None,
    };
    let auto_rollback = rolled.filter(|r| Some(r) != commit.as_ref()).map(|rolled| {
        Box::new(Deployed {
            kind: DeployKind::Rollback,
            commit: Some(rolled),
            previous_commit: commit.clone(),
            trigger: crate::events::Trigger::Auto,
            approved_by: None,
            rolled_back_to: context
                .last_healthy
                .get(&environment.name)
                .map(|(id, _)| *id),
            ..base.clone()
        })
    });
    Deployed {
        auto_rollback,
        ..base
    }
}

/// Commands as one line, the way a shell would run them in sequence (probes left out).
pub fn display(commands: &[CommandLine]) -> String {
    commands
        .iter()
        .filter(|c| !c.probe)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" && ")
}

/// How the plan and the log show what a stage runs.
pub fn describe(pipeline: &Pipeline, stage: &Stage) -> String {
    describe_with(pipeline, stage, &RunContext::default())
}

/// [`describe`], for a run with this context (`rollback --to` reverts a range).
pub fn describe_with(pipeline: &Pipeline, stage: &Stage, context: &RunContext) -> String {
    match &stage.action {
        Action::Run(RunCommand::Shell(script)) => script.clone(),
        Action::Uses(Uses::GitClone) => match (&pipeline.repo, &context.snapshot) {
            (Some(repo), Some(snapshot)) => format!(
                "snapshot of {} as it is on disk (tracked files with their changes, untracked files git does not ignore) into {}",
                snapshot.checkout.display(),
                repo.dir.display()
            ),
            (Some(repo), None) => format!(
                "git clone (or pull) {} into {}",
                repo.url,
                repo.dir.display()
            ),
            (None, _) => "git clone".to_owned(),
        },
        _ => match commands(pipeline, stage, context) {
            Ok(commands) => display(&commands),
            Err(err) => format!("{} ({err})", stage_action_name(stage)),
        },
    }
}

fn stage_action_name(stage: &Stage) -> &'static str {
    stage.builtin().map_or("run", Builtin::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_commands_run_without_a_shell() {
        assert_eq!(
            shell_command("pytest -v tests/"),
            CommandLine::new("pytest", ["-v", "tests/"])
        );
        assert_eq!(
            shell_command("  sleep 1 "),
            CommandLine::new("sleep", ["1"])
        );
    }

    #[test]
    fn shell_syntax_and_builtins_go_through_sh() {
        for script in [
            "echo $HOME",
            "a && b",
            "exit 3",
            "cd docs",
            "FOO=1 make",
            "echo 'x'",
            "ls > out",
            "sleep 30 & sleep 30",
        ] {
            assert_eq!(shell_command(script).program, "sh", "{script}");
        }
    }

    #[test]
    fn display_quotes_what_needs_quoting() {
        let cmd = CommandLine::new("git", ["commit", "-m", "it's done"]);
        assert_eq!(cmd.to_string(), r"git commit -m 'it'\''s done'");
    }
}
