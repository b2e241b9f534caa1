//! Before anything runs: is every program the selected stages start there?

use std::ffi::OsString;
use std::path::Path;

use crate::actions::{self, RunContext};
use crate::error::Problem;
use crate::pipeline::{Action, Builtin, Pipeline};
use crate::plan::Plan;

/// One problem per stage command whose program cannot be found on PATH, and per built-in
/// action that cannot work with the workspace as it is (a foreign folder where the clone goes).
/// Programs given as a path are the stage's own business: an earlier command may create them.
pub fn missing_programs(pipeline: &Pipeline, plan: &Plan) -> Vec<Problem> {
    let mut problems = Vec::new();
    // A pytest stage uses the workspace's .venv once a python/venv stage made it.
    let venv_coming = plan.steps.iter().any(|s| {
        matches!(
            pipeline.stages[s.stage].action,
            Action::Uses {
                action: Builtin::PythonVenv,
                ..
            }
        )
    });
    for step in &plan.steps {
        let stage = &pipeline.stages[step.stage];
        let dir = pipeline.workdir(stage);
        let path: Option<OsString> = stage
            .env
            .get("PATH")
            .or_else(|| pipeline.env.get("PATH"))
            .map(OsString::from)
            .or_else(|| std::env::var_os("PATH"));
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
        let is_pytest = matches!(
            stage.action,
            Action::Uses {
                action: Builtin::Pytest,
                ..
            }
        );
        for command in commands {
            if is_pytest && venv_coming {
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
