//! From a pipeline and the user's selection to an ordered plan of what runs and what does not.
//!
//! The plan is computed once, before anything runs, and is what `plan`/`--dry-run` shows and
//! what the scheduler obeys: each step lists the steps it waits for, so the scheduler never
//! looks at the pipeline's graph again.

pub mod cache;
pub(crate) mod check;
pub mod graph;
pub mod render;
pub mod select;

use std::collections::{HashMap, HashSet};

use crate::error::{Invalid, Problem};
use crate::pipeline::{Pipeline, StageName};

pub use select::{LeftOut, Selection};

/// One selected stage.
#[derive(Debug, Clone)]
pub struct Step {
    /// Index into `Pipeline::stages`.
    pub stage: usize,
    /// Steps (indices into `Plan::steps`) that must end before this one is decided.
    pub after: Vec<usize>,
    /// A manual stage this one needs that was not selected: it will be skipped.
    pub needs_manual: Option<StageName>,
    /// 0-based wave: the longest chain of `after` before it.
    pub wave: usize,
    /// `cache:` — the run it would be unchanged since, as the files are now (set by
    /// [`Plan::forecast_cache`]; a stage before it may still change its inputs).
    pub cached_since: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// Selected stages, needs first.
    pub steps: Vec<Step>,
    /// Stages of the pipeline that are not part of this run, with the reason.
    pub left_out: Vec<(usize, LeftOut)>,
    pub selection: String,
}

impl Plan {
    pub fn build(pipeline: &Pipeline, selection: &Selection) -> Result<Plan, Invalid> {
        let selected = select::select(pipeline, selection)?;
        let chosen: HashSet<usize> = selected.stages.iter().copied().collect();
        let index_of = pipeline.index();

        // The graph among the selected stages. A need that is not part of the run is
        // replaced by its own needs, transitively: `--skip test` still runs `deploy` after
        // `build`, never beside it.
        let local: HashMap<usize, usize> = selected
            .stages
            .iter()
            .enumerate()
            .map(|(l, &i)| (i, l))
            .collect();
        let needs_of = |i: usize| {
            pipeline.stages[i]
                .needs
                .iter()
                .filter_map(|n| index_of.get(n.as_str()).copied())
        };
        let mut needs: Vec<Vec<usize>> = selected
            .stages
            .iter()
            .map(|&i| {
                let mut found = Vec::new();
                let mut seen = HashSet::new();
                let mut stack: Vec<usize> = needs_of(i).collect();
                while let Some(j) = stack.pop() {
                    if !seen.insert(j) {
                        continue;
                    }
                    match local.get(&j) {
                        Some(&l) => found.push(l),
                        None => stack.extend(needs_of(j)),
                    }
                }
                found.sort_unstable();
                found
            })
            .collect();
        // An on_failure/always stage that needs nothing reacts to the whole run: it waits
        // for every regular stage (like a `post` block in Jenkins) — except the ones that come
        // after an on_failure/always stage (they react to the run too), which would close a
        // cycle: `notify` (on_failure) and `ticket` (needs notify), `cleanup` (always) and
        // `report` (needs cleanup) wait for the regular stages, not for each other's.
        let mut dependents = vec![Vec::new(); needs.len()];
        for (l, its_needs) in needs.iter().enumerate() {
            for &n in its_needs {
                dependents[n].push(l);
            }
        }
        let is_post = |l: usize| pipeline.stages[selected.stages[l]].when.is_post();
        let mut after_post = vec![false; needs.len()];
        for l in (0..needs.len()).filter(|&l| is_post(l)) {
            for (r, reached) in graph::reachable(&dependents, l).into_iter().enumerate() {
                after_post[r] |= reached;
            }
        }
        for (l, &i) in selected.stages.iter().enumerate() {
            let stage = &pipeline.stages[i];
            if stage.when.is_post() && stage.needs.is_empty() {
                needs[l] = (0..selected.stages.len())
                    .filter(|&r| !is_post(r) && !after_post[r])
                    .collect();
            }
        }
        let order = graph::order(&needs).ok_or_else(|| {
            Invalid::one(Problem::general(
                "the selected stages wait on each other in a cycle (an on_failure/always stage and the stages it reacts to)",
            ))
        })?;
        let mut position = vec![0; order.len()];
        for (p, &l) in order.iter().enumerate() {
            position[l] = p;
        }

        let manual_blocks = selection.only.is_empty();
        let mut steps: Vec<Step> = Vec::with_capacity(order.len());
        for &l in &order {
            let stage = selected.stages[l];
            let after: Vec<usize> = needs[l].iter().map(|&n| position[n]).collect();
            let wave = after.iter().map(|&a| steps[a].wave + 1).max().unwrap_or(0);
            steps.push(Step {
                stage,
                after,
                needs_manual: if manual_blocks {
                    select::manual_need(pipeline, &index_of, stage, &chosen).cloned()
                } else {
                    None
                },
                wave,
                cached_since: None,
            });
        }
        Ok(Plan {
            steps,
            left_out: selected.left_out,
            selection: selection.describe(),
        })
    }

    /// Says which stages would be cached, given each stage's key and cache entry as they are
    /// now (`verdict` computes them).
    pub fn forecast_cache(
        &mut self,
        pipeline: &Pipeline,
        mut verdict: impl FnMut(&crate::pipeline::Stage) -> Option<cache::Verdict>,
    ) {
        for step in &mut self.steps {
            let stage = &pipeline.stages[step.stage];
            if let Some(cache::Verdict::Hit { since }) = verdict(stage) {
                step.cached_since = Some(since);
            }
        }
    }

    /// Steps grouped by wave: each wave's steps can run together once the previous waves ended.
    pub fn waves(&self) -> Vec<Vec<usize>> {
        let count = self.steps.iter().map(|s| s.wave + 1).max().unwrap_or(0);
        let mut waves = vec![Vec::new(); count];
        for (i, step) in self.steps.iter().enumerate() {
            waves[step.wave].push(i);
        }
        waves
    }
}
