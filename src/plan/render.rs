//! The plan as text (for people) and as JSON (for scripts). What a stage runs comes from the
//! caller (`describe`: the actions know their command lines).

use std::fmt::Write as _;

use serde::Serialize;

use crate::pipeline::{Pipeline, Stage, When};
use crate::plan::{LeftOut, Plan};

#[derive(Debug, Serialize)]
pub struct PlanJson<'a> {
    pub pipeline: &'a str,
    pub selection: &'a str,
    pub jobs: usize,
    pub waves: Vec<Vec<&'a str>>,
    pub stages: Vec<StageJson<'a>>,
    pub not_run: Vec<NotRunJson<'a>>,
}

#[derive(Debug, Serialize)]
pub struct StageJson<'a> {
    pub name: &'a str,
    pub wave: usize,
    pub needs: Vec<&'a str>,
    pub when: When,
    pub command: String,
    /// Set when the stage is selected but will be skipped (it needs an unselected manual stage).
    pub will_skip: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct NotRunJson<'a> {
    pub name: &'a str,
    pub reason: &'a LeftOut,
    pub why: &'static str,
}

pub fn to_json<'a>(
    pipeline: &'a Pipeline,
    plan: &'a Plan,
    jobs: usize,
    describe: &dyn Fn(&Stage) -> String,
) -> PlanJson<'a> {
    let name = |i: usize| pipeline.stages[i].name.as_str();
    PlanJson {
        pipeline: &pipeline.name,
        selection: &plan.selection,
        jobs,
        waves: plan
            .waves()
            .into_iter()
            .map(|wave| {
                wave.into_iter()
                    .map(|s| name(plan.steps[s].stage))
                    .collect()
            })
            .collect(),
        stages: plan
            .steps
            .iter()
            .map(|step| {
                let stage = &pipeline.stages[step.stage];
                StageJson {
                    name: stage.name.as_str(),
                    wave: step.wave + 1,
                    needs: stage
                        .needs
                        .iter()
                        .map(super::super::pipeline::StageName::as_str)
                        .collect(),
                    when: stage.when,
                    command: describe(stage),
                    will_skip: step
                        .needs_manual
                        .as_ref()
                        .map(|m| format!("needs manual stage `{m}`, which was not selected"))
                        .or_else(|| step.cached_since.as_ref().map(|r| cached(r))),
                }
            })
            .collect(),
        not_run: plan
            .left_out
            .iter()
            .map(|(i, reason)| NotRunJson {
                name: name(*i),
                reason,
                why: reason.describe(),
            })
            .collect(),
    }
}

pub fn to_text(
    pipeline: &Pipeline,
    plan: &Plan,
    jobs: usize,
    describe: &dyn Fn(&Stage) -> String,
) -> String {
    let mut out = String::new();
    let waves = plan.waves();
    let width = pipeline
        .stages
        .iter()
        .map(|s| s.name.as_str().len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "Plan for {} ({}): {} stage{} in {} wave{}, up to {jobs} at once",
        pipeline.name,
        plan.selection,
        plan.steps.len(),
        if plan.steps.len() == 1 { "" } else { "s" },
        waves.len(),
        if waves.len() == 1 { "" } else { "s" },
    );
    for (w, wave) in waves.iter().enumerate() {
        let _ = writeln!(out, "\nwave {}", w + 1);
        for &s in wave {
            let step = &plan.steps[s];
            let stage = &pipeline.stages[step.stage];
            let _ = write!(out, "  {:width$}  {}", stage.name.as_str(), describe(stage));
            let mut notes = Vec::new();
            if !stage.needs.is_empty() {
                notes.push(format!(
                    "needs {}",
                    stage
                        .needs
                        .iter()
                        .map(super::super::pipeline::StageName::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            match stage.when {
                When::OnFailure => notes.push("only if something failed".into()),
                When::Always => notes.push("always".into()),
                When::OnSuccess | When::Manual => {}
            }
            if let Some(schedule) = &stage.schedule {
                notes.push(format!("scheduled: {schedule}"));
            }
            if stage.allow_failure {
                notes.push("may fail".into());
            }
            if let Some(manual) = &step.needs_manual {
                notes.push(format!("will be skipped: needs manual stage `{manual}`"));
            } else if let Some(since) = &step.cached_since {
                notes.push(format!("will be skipped: {}", cached(since)));
            }
            if notes.is_empty() {
                out.push('\n');
            } else {
                let _ = writeln!(out, "   ({})", notes.join("; "));
            }
        }
    }
    if !plan.left_out.is_empty() {
        let _ = writeln!(out, "\nnot run");
        for (i, reason) in &plan.left_out {
            let _ = writeln!(
                out,
                "  {:width$}  {}",
                pipeline.stages[*i].name.as_str(),
                reason.describe()
            );
        }
    }
    out
}

/// What the plan says of a stage its cache would skip.
fn cached(since: &str) -> String {
    format!("cached (unchanged since {since}, as the files are now)")
}
