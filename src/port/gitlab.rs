//! Export to a `.gitlab-ci.yml`: one job per stage, each with explicit `needs` (a DAG), in a
//! GitLab stage per wave of the local plan, so that stage order and `needs` agree.
//!
//! GitLab clones the repository by itself. Python stages get a `python:` image and install
//! what the venv held. GitLab expands `$` in `variables:`: values are written with `$$`, the
//! documented escape, so they reach the job as written. Scripts are not expanded by GitLab
//! (the job's shell sees them as locally).

use crate::pipeline::{Pipeline, When};
use crate::port::yaml::{self, Map};
use crate::port::{
    BuiltinUse, Ci, Exported, builtin_commands, builtin_use, checkout_relative, commit_identity,
    common_losses, header, job_ids, minutes, pipeline_losses, python_stage, python_version,
    shell_text, venv_for, waits_for,
};

/// Top-level keys of a `.gitlab-ci.yml` that are not jobs (import reads jobs as the rest).
pub(crate) const GLOBAL_KEYS: &[&str] = &[
    "image",
    "services",
    "stages",
    "types",
    "before_script",
    "after_script",
    "variables",
    "cache",
    "include",
    "default",
    "workflow",
    "spec",
];

/// GitLab's most retries for a job.
const MAX_RETRY: u32 = 2;

/// A `variables:` value as GitLab must read it to give back `value` (`$` is written `$$`).
pub fn variable(value: &str) -> String {
    value.replace('$', "$$")
}

/// Not a global key, nor `pages` (a job GitLab publishes as a website).
fn valid_id(name: &str) -> bool {
    !GLOBAL_KEYS.contains(&name) && name != "pages"
}

fn fix_id(name: &str) -> String {
    format!("{name}-job")
}

pub(super) fn export(pipeline: &Pipeline) -> Exported {
    let (ids, renamed) = job_ids(
        pipeline,
        valid_id,
        fix_id,
        "it is a reserved word of .gitlab-ci.yml",
    );
    let waits = waits_for(pipeline);
    let waves = waves(&waits);
    let mut warnings = Vec::new();
    let mut root = Map::new();

    let mut comments = Vec::new();
    for lost in pipeline_losses(pipeline) {
        comments.push(format!("pydeployer: {lost}"));
        warnings.push(lost);
    }
    let mut workflow = Map::new();
    workflow.insert("name", pipeline.name.as_str());
    root.insert_commented(comments, "workflow", workflow);
    let count = waves.iter().max().map_or(0, |w| w + 1);
    root.insert(
        "stages",
        (1..=count).map(|w| format!("wave-{w}")).collect::<Vec<_>>(),
    );
    let mut variables = Map::new();
    for (key, value) in &pipeline.env {
        variables.insert(key.clone(), variable(value));
    }
    let secrets: Vec<&str> = pipeline
        .secrets
        .iter()
        .filter(|s| !pipeline.env.contains_key(*s))
        .map(String::as_str)
        .collect();
    let secret_note = (!secrets.is_empty()).then(|| {
        vec![format!(
            "Secrets: define {} as masked CI/CD variables (Settings > CI/CD > Variables).",
            secrets.join(", ")
        )]
    });
    if !variables.is_empty() {
        root.insert_commented(
            secret_note.clone().unwrap_or_default(),
            "variables",
            variables,
        );
    }

    for (i, stage) in pipeline.stages.iter().enumerate() {
        let mut comments = Vec::new();
        if i == 0 && pipeline.env.is_empty() {
            comments.extend(secret_note.clone().unwrap_or_default());
        }
        if let Some(description) = &stage.description {
            comments.push(description.clone());
        }
        let uses = builtin_use(stage);
        let mut lost = common_losses(pipeline, stage);
        let mut job = Map::new();
        job.insert("stage", format!("wave-{}", waves[i] + 1));
        job.insert(
            "needs",
            waits[i].iter().map(|&n| ids[n].clone()).collect::<Vec<_>>(),
        );
        let venv = python_stage(uses.as_ref())
            .then(|| venv_for(pipeline, &waits, i))
            .flatten();
        let python = venv.or(matches!(uses, Some(BuiltinUse::Pytest { .. })).then_some(i));
        if let Some(n) = python {
            let version = match builtin_use(&pipeline.stages[n]) {
                Some(BuiltinUse::Venv { python, .. }) => python_version(python.as_deref()),
                _ => python_version(None),
            };
            let tag = version.strip_suffix(".x").unwrap_or(&version);
            job.insert("image", format!("python:{tag}"));
        }
        let mut job_vars: Vec<(String, String)> = stage
            .env
            .iter()
            .map(|(k, v)| (k.clone(), variable(v)))
            .collect();
        if matches!(uses, Some(BuiltinUse::Commit { .. } | BuiltinUse::Revert)) {
            job_vars.extend(commit_identity(stage));
        }
        if matches!(uses, Some(BuiltinUse::Push | BuiltinUse::Revert)) {
            // A shallow clone cannot be pushed from.
            job_vars.push(("GIT_DEPTH".into(), "0".into()));
        }
        if !job_vars.is_empty() {
            let mut vars = Map::new();
            for (k, v) in job_vars {
                vars.insert(k, v);
            }
            job.insert("variables", vars);
        }
        let own_secrets: Vec<&str> = stage
            .secrets
            .iter()
            .filter(|s| !stage.env.contains_key(*s))
            .map(String::as_str)
            .collect();
        if !own_secrets.is_empty() {
            comments.push(format!(
                "Needs the masked CI/CD variables {}.",
                own_secrets.join(", ")
            ));
        }

        let mut script = Vec::new();
        if let Some(dir) = &stage.workdir {
            script.push(format!(
                "cd -- {}",
                crate::actions::quote(&checkout_relative(pipeline, dir))
            ));
        }
        if python.is_some() {
            match venv.and_then(|n| builtin_use(&pipeline.stages[n])) {
                Some(venv_use) => script.extend(builtin_commands(pipeline, &venv_use)),
                None => script.push("python -m pip install pytest".into()),
            }
        }
        match &uses {
            None => script.extend(shell_text(stage)),
            Some(BuiltinUse::Venv { .. }) => {}
            Some(other) => script.extend(builtin_commands(pipeline, other)),
        }
        job.insert("script", script);

        if let Some(timeout) = stage.timeout {
            job.insert("timeout", format!("{}m", minutes(timeout)));
        }
        if stage.retries > 0 {
            job.insert("retry", u64::from(stage.retries.min(MAX_RETRY)));
            if stage.retries > MAX_RETRY {
                lost.push(format!(
                    "stage `{}` has `retries: {}`: GitLab retries a job at most {MAX_RETRY} times",
                    stage.name, stage.retries
                ));
            }
        }
        if stage.allow_failure {
            job.insert("allow_failure", true);
        }
        match super::when(stage) {
            When::OnSuccess => {}
            When::OnFailure => {
                job.insert("when", "on_failure");
            }
            When::Always => {
                job.insert("when", "always");
            }
            When::Manual => {
                job.insert("when", "manual");
            }
        }
        for text in &lost {
            comments.push(format!("pydeployer: {text}"));
        }
        warnings.extend(lost);
        root.insert_commented(comments, ids[i].clone(), job);
    }
    Exported {
        text: yaml::document(&header(Ci::Gitlab), &root),
        warnings,
        renamed,
    }
}

/// Each stage's wave: the longest chain of stages it waits for.
fn waves(waits: &[Vec<usize>]) -> Vec<usize> {
    let mut wave = vec![0; waits.len()];
    for i in crate::plan::graph::order(waits).unwrap_or_default() {
        wave[i] = waits[i].iter().map(|&n| wave[n] + 1).max().unwrap_or(0);
    }
    wave
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_are_doubled_in_variables() {
        assert_eq!(variable("$HOME and $$"), "$$HOME and $$$$");
        assert_eq!(variable("plain"), "plain");
    }

    #[test]
    fn waves_follow_the_longest_chain() {
        // 0 ← 1 ← 2, 0 ← 2, 3 alone
        assert_eq!(waves(&[vec![], vec![0], vec![0, 1], vec![]]), [0, 1, 2, 0]);
    }
}
