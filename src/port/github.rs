//! Export to a GitHub Actions workflow: one job per stage.
//!
//! Each job starts on a fresh runner: it checks the repository out, sets Python up when it
//! comes after a `python/venv` stage (what the venv held is installed again, as GitHub users
//! do), then runs the stage. Text from the pipeline that GitHub would evaluate (`${{ … }}` in
//! `run:`, `env:`, `name:`, `working-directory:`) is escaped so that it stays text.

use std::collections::BTreeMap;

use crate::pipeline::{Pipeline, When};
use crate::port::yaml::{self, Map, Yaml};
use crate::port::{
    BuiltinUse, Ci, Exported, builtin_commands, builtin_use, checkout_relative, commit_identity,
    common_losses, header, job_ids, minutes, pipeline_losses, python_stage, python_version,
    shell_text, venv_for, waits_for,
};

const CHECKOUT: &str = "actions/checkout@v4";
const SETUP_PYTHON: &str = "actions/setup-python@v5";
const RUNNER: &str = "ubuntu-latest";

/// `text` with every `${{` replaced by an expression that GitHub evaluates to `${{`, so that
/// nothing the pipeline holds is ever evaluated (no expression injection).
pub fn literal(text: &str) -> String {
    text.replace("${{", "${{ '${{' }}")
}

/// GitHub's job ids: a letter or `_` first, then letters, digits, `-` and `_`.
fn valid_id(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn fix_id(name: &str) -> String {
    let mut id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !id.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        id.insert(0, '_');
    }
    id
}

pub(super) fn export(pipeline: &Pipeline) -> Exported {
    let (ids, renamed) = job_ids(
        pipeline,
        valid_id,
        fix_id,
        "GitHub job ids are letters, digits, `-` and `_`, starting with a letter or `_`",
    );
    let waits = waits_for(pipeline);
    let mut warnings = Vec::new();
    let mut root = Map::new();
    let mut top_comments = Vec::new();
    for lost in pipeline_losses(pipeline) {
        top_comments.push(format!("pydeployer: {lost}"));
        warnings.push(lost);
    }
    // A workflow's `name` is not evaluated.
    root.insert_commented(top_comments, "name", pipeline.name.as_str());

    // Triggers: pushes to the branch the pipeline delivers, pull requests, and by hand (with
    // one checkbox per manual stage).
    let mut on = Map::new();
    let mut push = Map::new();
    if let Some(repo) = &pipeline.repo {
        push.insert("branches", vec![repo.branch.clone()]);
    }
    on.insert(
        "push",
        if push.is_empty() {
            Yaml::Null
        } else {
            push.into()
        },
    );
    on.insert("pull_request", Yaml::Null);
    let mut inputs = Map::new();
    for (stage, id) in pipeline.stages.iter().zip(&ids) {
        if super::when(stage) == When::Manual {
            let mut input = Map::new();
            input.insert(
                "description",
                format!("Run the manual stage {}", stage.name),
            );
            input.insert("type", "boolean");
            input.insert("default", false);
            inputs.insert(id.clone(), input);
        }
    }
    let mut dispatch = Map::new();
    if !inputs.is_empty() {
        dispatch.insert("inputs", inputs);
    }
    on.insert(
        "workflow_dispatch",
        if dispatch.is_empty() {
            Yaml::Null
        } else {
            dispatch.into()
        },
    );
    root.insert_raw_key("on", on);

    let mut env = Map::new();
    for (key, value) in &pipeline.env {
        env.insert(key.clone(), literal(value));
    }
    for name in &pipeline.secrets {
        if !pipeline.env.contains_key(name) {
            env.insert(name.clone(), format!("${{{{ secrets.{name} }}}}"));
        }
    }
    if !env.is_empty() {
        root.insert("env", env);
    }

    let mut jobs = Map::new();
    for (i, stage) in pipeline.stages.iter().enumerate() {
        let mut comments = Vec::new();
        if let Some(description) = &stage.description {
            comments.push(description.clone());
        }
        let mut job = Map::new();
        if ids[i] != stage.name.as_str() {
            job.insert("name", literal(stage.name.as_str()));
        }
        job.insert("runs-on", RUNNER);
        if !waits[i].is_empty() {
            job.insert(
                "needs",
                waits[i].iter().map(|&n| ids[n].clone()).collect::<Vec<_>>(),
            );
        }
        match super::when(stage) {
            When::OnSuccess => {}
            When::OnFailure => {
                job.insert("if", "failure()");
            }
            When::Always => {
                job.insert("if", "always()");
            }
            When::Manual => {
                job.insert("if", format!("inputs.{}", ids[i]));
            }
        }
        if let Some(timeout) = stage.timeout {
            job.insert("timeout-minutes", minutes(timeout));
        }
        if stage.allow_failure {
            job.insert("continue-on-error", true);
        }
        let mut lost = common_losses(pipeline, stage);
        if stage.retries > 0 {
            lost.push(format!(
                "stage `{}` has `retries: {}`: GitHub Actions has no retry for a job (re-run it from the run's page)",
                stage.name, stage.retries
            ));
        }
        for text in &lost {
            comments.push(format!("pydeployer: {text}"));
        }
        warnings.extend(lost);

        let uses = builtin_use(stage);
        let mut job_env: BTreeMap<String, String> = stage
            .env
            .iter()
            .map(|(k, v)| (k.clone(), literal(v)))
            .collect();
        if matches!(uses, Some(BuiltinUse::Commit { .. } | BuiltinUse::Revert)) {
            job_env.extend(commit_identity(stage));
        }
        for name in &stage.secrets {
            if !stage.env.contains_key(name) {
                job_env.insert(name.clone(), format!("${{{{ secrets.{name} }}}}"));
            }
        }
        if !job_env.is_empty() {
            let mut env = Map::new();
            for (k, v) in job_env {
                env.insert(k, v);
            }
            job.insert("env", env);
        }
        job.insert(
            "steps",
            Yaml::Seq(steps(pipeline, &waits, i, uses.as_ref())),
        );
        jobs.insert_commented(comments, ids[i].clone(), job);
    }
    root.insert("jobs", jobs);
    Exported {
        text: yaml::document(&header(Ci::Github), &root),
        warnings,
        renamed,
    }
}

fn steps(
    pipeline: &Pipeline,
    waits: &[Vec<usize>],
    i: usize,
    uses: Option<&BuiltinUse>,
) -> Vec<Yaml> {
    let stage = &pipeline.stages[i];
    let mut steps = Vec::new();
    let mut checkout = Map::new();
    checkout.insert("uses", CHECKOUT);
    if matches!(uses, Some(BuiltinUse::Push | BuiltinUse::Revert)) {
        // A shallow clone cannot be pushed from.
        let mut with = Map::new();
        with.insert("fetch-depth", 0);
        checkout.insert("with", with);
    }
    steps.push(checkout.into());
    let venv = python_stage(uses)
        .then(|| venv_for(pipeline, waits, i))
        .flatten();
    let python = venv.or(matches!(uses, Some(BuiltinUse::Pytest { .. })).then_some(i));
    if let Some(n) = python {
        let version = match builtin_use(&pipeline.stages[n]) {
            Some(BuiltinUse::Venv { python, .. }) => python_version(python.as_deref()),
            _ => python_version(None),
        };
        let mut with = Map::new();
        with.insert("python-version", version);
        let mut setup = Map::new();
        setup.insert("uses", SETUP_PYTHON);
        setup.insert("with", with);
        steps.push(setup.into());
        match venv.map(|n| builtin_use(&pipeline.stages[n])) {
            Some(Some(venv_use)) => {
                for command in builtin_commands(pipeline, &venv_use) {
                    steps.push(run_step(&command, None));
                }
            }
            _ => steps.push(run_step("python -m pip install pytest", None)),
        }
    }
    let workdir = stage
        .workdir
        .as_ref()
        .map(|dir| checkout_relative(pipeline, dir));
    let own = match uses {
        None => shell_text(stage).into_iter().collect(),
        // The checkout and the venv's set-up above are the whole stage.
        Some(BuiltinUse::Clone | BuiltinUse::Venv { .. }) => Vec::new(),
        Some(other) => builtin_commands(pipeline, other),
    };
    for command in own {
        steps.push(run_step(&command, workdir.as_deref()));
    }
    steps
}

fn run_step(command: &str, workdir: Option<&str>) -> Yaml {
    let mut step = Map::new();
    step.insert("run", literal(command));
    if let Some(dir) = workdir {
        step.insert("working-directory", literal(dir));
    }
    step.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_in_text_stay_text() {
        assert_eq!(
            literal("echo '${{ github.token }}'"),
            "echo '${{ '${{' }} github.token }}'"
        );
        assert_eq!(literal("echo ${HOME} $$ }}"), "echo ${HOME} $$ }}");
    }

    #[test]
    fn job_ids_are_made_valid() {
        assert!(valid_id("build_test") && valid_id("_x") && valid_id("a-b"));
        assert!(!valid_id("build.test") && !valid_id("1st") && !valid_id("-x"));
        assert_eq!(fix_id("build.test"), "build_test");
        assert_eq!(fix_id("1st"), "_1st");
    }
}
