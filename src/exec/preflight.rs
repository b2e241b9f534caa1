//! Before anything runs: is every program the selected stages start there?

use std::ffi::OsString;
use std::path::Path;

use crate::actions::{self, RunContext};
use crate::error::Problem;
use crate::pipeline::{Builtin, Pipeline};
use crate::plan::{Plan, Selection};

/// One problem per stage command whose program cannot be found on PATH, and per built-in
/// action that cannot work with the workspace as it is (a foreign folder where the clone goes).
/// Programs given as a path are the stage's own business: an earlier command may create them.
pub fn missing_programs(pipeline: &Pipeline, plan: &Plan) -> Vec<Problem> {
    let mut problems = Vec::new();
    // A pytest stage uses the workspace's .venv once a python/venv stage made it.
    let venv_coming = plan
        .steps
        .iter()
        .any(|s| pipeline.stages[s.stage].builtin() == Some(Builtin::PythonVenv));
    problems.extend(missing_venv_tools(pipeline, plan));
    for step in &plan.steps {
        let stage = &pipeline.stages[step.stage];
        let dir = pipeline.workdir(stage);
        let path: Option<OsString> = stage
            .env
            .get("PATH")
            .or_else(|| pipeline.env.get("PATH"))
            .map(OsString::from)
            .or_else(|| std::env::var_os("PATH"));
        // What it uploads is only known once the build before it ran.
        if stage.builtin() == Some(Builtin::PythonPublish) {
            continue;
        }
        let commands = match actions::commands(pipeline, stage, &RunContext::default()) {
            Ok(commands) => commands,
            // Without the clone, a stage that will run in it cannot be judged yet (its
            // requirements file, say): the stage itself reports it if it still holds then.
            Err(_) if waits_for_clone(pipeline, stage) => continue,
            Err(err) => {
                problems.push(Problem::general(format!(
                    "stage `{}` ({}) cannot run: {err}",
                    stage.name, stage.origin
                )));
                continue;
            }
        };
        let is_python = matches!(
            stage.builtin(),
            Some(
                Builtin::Pytest
                    | Builtin::PythonLint
                    | Builtin::PythonCoverage
                    | Builtin::PythonBuild
                    | Builtin::PythonPublish
            )
        );
        for command in commands {
            // Its tools come from the workspace's .venv: `missing_venv_tools` checks them.
            if (is_python
                && (venv_coming || stage.builtin().and_then(Builtin::venv_tool).is_some()))
                || command.gate
            {
                continue;
            }
            if !found(&command.program, path.as_ref(), &dir) {
                let hint = if command.program.contains('/') {
                    format!(
                        "check the path (relative to {}) and that the file is executable",
                        dir.display()
                    )
                } else {
                    format!(
                        "install `{}` or put it on PATH, or change the stage's command",
                        command.program
                    )
                };
                problems.push(
                    Problem::general(format!(
                        "stage `{}` ({}) runs `{}`, which is not found",
                        stage.name, stage.origin, command.program
                    ))
                    .with_help(hint),
                );
            }
        }
    }
    problems
}

/// The stage will run in the workspace, which is not cloned yet.
fn waits_for_clone(pipeline: &Pipeline, stage: &crate::pipeline::Stage) -> bool {
    stage.workdir.is_none()
        && pipeline
            .repo
            .as_ref()
            .is_some_and(|repo| !repo.dir.is_dir())
}

fn found(program: &str, path: Option<&OsString>, dir: &Path) -> bool {
    program.contains('/') || which::which_in(program, path, dir).is_ok()
}

/// A stage named on the command line (`run post`) that needs a manual stage which was not
/// named would be skipped, and the run would pass without doing what was asked: refused.
pub fn blocked_targets(pipeline: &Pipeline, plan: &Plan, selection: &Selection) -> Vec<Problem> {
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
                    let scheduled = pipeline
                        .stage(manual.as_str())
                        .is_some_and(|s| s.schedule.is_some());
                    let kind = if scheduled {
                        "a scheduled stage, which runs when its time comes or when named"
                    } else {
                        "a manual stage, which runs only when named"
                    };
                    Problem::general(format!("`{}` needs `{manual}`, {kind}", stage.name))
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
pub fn missing_secrets(pipeline: &Pipeline, plan: &Plan) -> Vec<Problem> {
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

/// A Python action's tool (ruff, coverage, build, twine) that will not be in the workspace's
/// `.venv`: not there now, not among the `packages:` (or requirements files) of a
/// `python/venv` stage of the run, and not on PATH. The problem names the line to add.
pub fn missing_venv_tools(pipeline: &Pipeline, plan: &Plan) -> Vec<Problem> {
    let venvs: Vec<&crate::pipeline::Stage> = plan
        .steps
        .iter()
        .map(|s| &pipeline.stages[s.stage])
        .filter(|s| s.builtin() == Some(Builtin::PythonVenv))
        .collect();
    let mut problems = Vec::new();
    for step in &plan.steps {
        let stage = &pipeline.stages[step.stage];
        let Some((program, package)) = stage.builtin().and_then(Builtin::venv_tool) else {
            continue;
        };
        let dir = pipeline.workdir(stage);
        if dir.join(".venv/bin").join(program).is_file() {
            continue;
        }
        let installed_by = |venv: &&crate::pipeline::Stage| {
            let crate::pipeline::Action::Uses(crate::pipeline::Uses::PythonVenv(params)) =
                &venv.action
            else {
                return false;
            };
            if params
                .packages
                .iter()
                .any(|p| requirement_names(p, package))
            {
                return true;
            }
            let venv_dir = pipeline.workdir(venv);
            let files: Vec<String> = if params.requirements.is_empty() {
                vec!["requirements.txt".to_owned()]
            } else {
                params.requirements.clone()
            };
            files.iter().any(|file| {
                match std::fs::read_to_string(venv_dir.join(file)) {
                    Ok(text) => text.lines().any(|line| requirement_names(line, package)),
                    // Not readable yet (the workspace is not cloned): the stage will tell.
                    Err(_) => waits_for_clone(pipeline, venv),
                }
            })
        };
        if venvs.iter().any(installed_by) {
            continue;
        }
        if venvs.is_empty() && which::which(program).is_ok() {
            continue;
        }
        let help = match venvs.first() {
            Some(venv) => format!(
                "add `{package}` to the `packages:` of stage `{}` ({}): `with: {{ packages: [{package}] }}`",
                venv.name, venv.origin
            ),
            None => format!(
                "add a stage that installs it: `install: {{ uses: python/venv, with: {{ packages: [{package}] }} }}` and `needs: [install]`"
            ),
        };
        problems.push(
            Problem::general(format!(
                "stage `{}` ({}) runs `{program}` from the workspace's .venv, and nothing installs `{package}` there",
                stage.name, stage.origin
            ))
            .with_help(help),
        );
    }
    problems
}

/// A requirement line or specifier (`ruff==0.6.9`, `coverage[toml]>=7`) names `package`.
fn requirement_names(line: &str, package: &str) -> bool {
    let line = line.trim();
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(line.len());
    let name = &line[..end];
    let norm = |s: &str| s.to_ascii_lowercase().replace(['_', '.'], "-");
    !name.is_empty() && norm(name) == norm(package)
}
