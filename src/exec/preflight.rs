//! Before anything runs: is every program the selected stages start there?

use std::ffi::OsString;
use std::path::Path;

use crate::actions;
use crate::error::Problem;
use crate::pipeline::Pipeline;
use crate::plan::Plan;

/// One problem per stage command whose program cannot be found.
pub fn missing_programs(pipeline: &Pipeline, plan: &Plan) -> Vec<Problem> {
    let mut problems = Vec::new();
    for step in &plan.steps {
        let stage = &pipeline.stages[step.stage];
        let dir = stage
            .workdir
            .clone()
            .unwrap_or_else(|| pipeline.default_workdir());
        let path: Option<OsString> = stage
            .env
            .get("PATH")
            .or_else(|| pipeline.env.get("PATH"))
            .map(OsString::from)
            .or_else(|| std::env::var_os("PATH"));
        for command in actions::commands(pipeline, stage) {
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

fn found(program: &str, path: Option<&OsString>, dir: &Path) -> bool {
    if program.contains('/') {
        // Relative to the stage's folder, which may not exist yet (a clone still to come):
        // then it cannot be checked now, and the stage itself will say so.
        return !dir.is_dir() || which::which_in(program, None::<&str>, dir).is_ok();
    }
    which::which_in(program, path, dir).is_ok()
}
