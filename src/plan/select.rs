//! Which stages a command runs, which it leaves out, and why.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::error::{Invalid, Problem};
use crate::pipeline::{Pipeline, StageName, When};

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Run these and everything they need (empty: every stage but the manual ones).
    pub targets: Vec<String>,
    /// Run exactly these, without their needs.
    pub only: Vec<String>,
    /// Leave these out.
    pub skip: Vec<String>,
}

impl Selection {
    /// The selection as the user would type it, for the plan and the log header.
    pub fn describe(&self) -> String {
        let mut words = vec!["run".to_owned()];
        words.extend(self.targets.iter().cloned());
        words.extend(self.only.iter().map(|s| format!("--only {s}")));
        words.extend(self.skip.iter().map(|s| format!("--skip {s}")));
        words.join(" ")
    }
}

/// Why a stage of the pipeline is not part of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftOut {
    /// `when: manual` and not named.
    Manual,
    /// `schedule:` and not named: it runs when its time comes.
    Scheduled,
    /// Named by `--skip`.
    Skipped,
    /// Not among the targets or their needs, or not named by `--only`.
    NotSelected,
}

impl LeftOut {
    pub fn describe(&self) -> &'static str {
        match self {
            LeftOut::Manual => "manual: runs only when named (`pydeployer run <stage>`)",
            LeftOut::Scheduled => {
                "scheduled: runs when its time comes (`pydeployer schedule`), or when named"
            }
            LeftOut::Skipped => "left out by --skip",
            LeftOut::NotSelected => "not selected",
        }
    }
}

/// The stages selected (pipeline indices, in declaration order) and the ones left out.
pub(crate) struct Selected {
    pub(crate) stages: Vec<usize>,
    pub(crate) left_out: Vec<(usize, LeftOut)>,
}

pub(crate) fn select(pipeline: &Pipeline, selection: &Selection) -> Result<Selected, Invalid> {
    let index = pipeline.index();
    let index_of = |name: &str| index.get(name).copied();
    let mut problems = Vec::new();
    let mut resolve = |names: &[String], flag: &str| -> Vec<usize> {
        names
            .iter()
            .filter_map(|name| {
                let found = index_of(name);
                if found.is_none() {
                    let mut problem =
                        Problem::general(format!("{flag}`{name}` is not a stage of this pipeline"));
                    let names = pipeline.stages.iter().map(|s| s.name.as_str());
                    problem =
                        problem.with_suggestion(name, names, "`pydeployer plan` lists the stages");
                    problems.push(problem);
                }
                found
            })
            .collect()
    };
    let targets = resolve(&selection.targets, "");
    let only = resolve(&selection.only, "--only: ");
    let skip: HashSet<usize> = resolve(&selection.skip, "--skip: ").into_iter().collect();
    if !problems.is_empty() {
        return Err(Invalid { problems });
    }

    let n = pipeline.stages.len();
    let mut chosen = vec![false; n];
    if !only.is_empty() {
        for i in only {
            chosen[i] = true;
        }
    } else if !targets.is_empty() {
        // Targets and what they need, transitively; a manual need is not pulled in by
        // being needed (the dependent is then blocked, and the plan says why).
        let mut stack = targets.clone();
        let named: HashSet<usize> = targets.into_iter().collect();
        while let Some(i) = stack.pop() {
            if chosen[i] || (pipeline.stages[i].on_demand() && !named.contains(&i)) {
                continue;
            }
            chosen[i] = true;
            for need in &pipeline.stages[i].needs {
                if let Some(j) = index_of(need.as_str()) {
                    stack.push(j);
                }
            }
        }
    } else {
        for (i, stage) in pipeline.stages.iter().enumerate() {
            chosen[i] = !stage.on_demand();
        }
    }

    let mut stages = Vec::new();
    let mut left_out = Vec::new();
    for (i, stage) in pipeline.stages.iter().enumerate() {
        if skip.contains(&i) {
            left_out.push((i, LeftOut::Skipped));
        } else if chosen[i] {
            stages.push(i);
        } else if stage.when == When::Manual {
            left_out.push((i, LeftOut::Manual));
        } else if stage.schedule.is_some() {
            left_out.push((i, LeftOut::Scheduled));
        } else {
            left_out.push((i, LeftOut::NotSelected));
        }
    }
    Ok(Selected { stages, left_out })
}

/// The first manual stage that `stage` needs and that is not selected, if any; `index` is
/// [`Pipeline::index`].
pub(crate) fn manual_need<'p>(
    pipeline: &'p Pipeline,
    index: &HashMap<&str, usize>,
    stage: usize,
    selected: &HashSet<usize>,
) -> Option<&'p StageName> {
    pipeline.stages[stage].needs.iter().find(|need| {
        index
            .get(need.as_str())
            .is_some_and(|&j| pipeline.stages[j].on_demand() && !selected.contains(&j))
    })
}

/// `run --failed`: the stages the last run marked to run again (`rerun`), that this pipeline still has,
/// as an `--only` selection (what they need runs only if it is among them: it did not
/// succeed either). `None` when there is nothing to run again.
pub fn failed<'a>(
    pipeline: &Pipeline,
    rerun: impl IntoIterator<Item = &'a str>,
) -> Option<Selection> {
    let only: Vec<String> = rerun
        .into_iter()
        .filter(|name| pipeline.stage(name).is_some())
        .map(str::to_owned)
        .collect();
    (!only.is_empty()).then(|| Selection {
        only,
        ..Selection::default()
    })
}
