//! Which stage runs next: pure decisions, no processes, no clock, no I/O.
//!
//! The failure policy lives here as data (`when`, `allow_failure`, `retries`, the `after`
//! lists of the plan). The runner asks [`Scheduler::next`] what to do, does it, and reports
//! back with [`Scheduler::finished`]; everything it decides can be tested without spawning.

use std::collections::VecDeque;

use crate::events::SkipReason;
use crate::pipeline::{StageName, When};

/// What the scheduler needs to know about one step of the plan.
#[derive(Debug, Clone)]
pub struct StepPolicy {
    pub name: StageName,
    /// Steps that must end before this one is decided.
    pub after: Vec<usize>,
    pub when: When,
    pub allow_failure: bool,
    pub retries: u32,
    /// A manual stage it needs that is not part of the run.
    pub needs_manual: Option<StageName>,
    /// Runs alone (an interactive stage owns the terminal): it starts when nothing else
    /// runs, and nothing starts beside it.
    pub exclusive: bool,
    /// Would run, but is held back for this reason (a deploy that needs an approval nobody
    /// can give now): skipped, which fails nothing.
    pub held: Option<SkipReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Ready,
    Running,
    Passed,
    /// Failed; `allowed` when `allow_failure` makes that harmless.
    Failed {
        allowed: bool,
    },
    Skipped,
}

/// What the runner should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start attempt `attempt` (1-based) of the step.
    Start { step: usize, attempt: u32 },
    /// The step will not run.
    Skip { step: usize, reason: SkipReason },
}

#[derive(Debug)]
pub struct Scheduler {
    policies: Vec<StepPolicy>,
    state: Vec<State>,
    attempts: Vec<u32>,
    /// Per step: how many of its `after` steps have not ended.
    pending: Vec<usize>,
    /// Per step: the steps that have it in their `after`.
    dependents: Vec<Vec<usize>>,
    /// A failure (not allowed) happened at or upstream of this step.
    tainted: Vec<bool>,
    ready: VecDeque<usize>,
    skips: VecDeque<(usize, SkipReason)>,
    running: usize,
    /// An exclusive step is running.
    alone: bool,
    jobs: usize,
    ended: usize,
}

impl Scheduler {
    pub fn new(policies: Vec<StepPolicy>, jobs: usize) -> Self {
        let n = policies.len();
        let mut dependents = vec![Vec::new(); n];
        for (i, policy) in policies.iter().enumerate() {
            for &a in &policy.after {
                dependents[a].push(i);
            }
        }
        let pending = policies.iter().map(|p| p.after.len()).collect();
        let mut scheduler = Scheduler {
            policies,
            state: vec![State::Waiting; n],
            attempts: vec![0; n],
            pending,
            dependents,
            tainted: vec![false; n],
            ready: VecDeque::new(),
            skips: VecDeque::new(),
            running: 0,
            alone: false,
            jobs: jobs.max(1),
            ended: 0,
        };
        for i in 0..n {
            if scheduler.pending[i] == 0 {
                scheduler.decide(i);
            }
        }
        scheduler
    }

    /// The next thing to do, or `None` until a running step finishes (or all is done).
    /// Skips come first: they need no slot and may unblock nothing, but must be reported.
    pub fn next_decision(&mut self) -> Option<Decision> {
        if let Some((step, reason)) = self.skips.pop_front() {
            return Some(Decision::Skip { step, reason });
        }
        if self.running >= self.jobs || self.alone {
            return None;
        }
        let &next = self.ready.front()?;
        let exclusive = self.policies[next].exclusive;
        if exclusive && self.running > 0 {
            return None;
        }
        let step = self.ready.pop_front()?;
        self.state[step] = State::Running;
        self.running += 1;
        self.alone = exclusive;
        self.attempts[step] += 1;
        Some(Decision::Start {
            step,
            attempt: self.attempts[step],
        })
    }

    /// A running step ended. Returns `true` when it failed and will be tried again.
    pub fn finished(&mut self, step: usize, passed: bool) -> bool {
        debug_assert_eq!(self.state[step], State::Running);
        self.running -= 1;
        self.alone = false;
        let policy = &self.policies[step];
        if !passed && self.attempts[step] <= policy.retries {
            self.state[step] = State::Ready;
            self.ready.push_back(step);
            return true;
        }
        self.state[step] = if passed {
            State::Passed
        } else {
            State::Failed {
                allowed: policy.allow_failure,
            }
        };
        // An on_failure/always stage reacting to a failure does not make it go away: what
        // comes after it still sees the failure upstream.
        let upstream_failed =
            policy.when.is_post() && policy.after.iter().any(|&a| self.tainted[a]);
        self.tainted[step] = (!passed && !policy.allow_failure) || upstream_failed;
        self.end(step);
        false
    }

    /// Every step has ended (passed, failed or skipped) and every skip was handed out.
    pub fn is_done(&self) -> bool {
        self.ended == self.policies.len() && self.skips.is_empty()
    }

    /// Steps currently running.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Some step failed without `allow_failure`.
    pub fn failed(&self) -> bool {
        self.state
            .iter()
            .any(|s| matches!(s, State::Failed { allowed: false }))
    }

    fn end(&mut self, step: usize) {
        self.ended += 1;
        for k in 0..self.dependents[step].len() {
            let dependent = self.dependents[step][k];
            self.pending[dependent] -= 1;
            if self.pending[dependent] == 0 {
                self.decide(dependent);
            }
        }
    }

    /// All of `step`'s `after` steps have ended: run it or skip it.
    fn decide(&mut self, step: usize) {
        let policy = &self.policies[step];
        let upstream_failed = policy.after.iter().any(|&a| self.tainted[a]);
        let skip = if let Some(manual) = &policy.needs_manual {
            Some(SkipReason::NeedsManual {
                stage: manual.clone(),
            })
        } else {
            match policy.when {
                When::OnSuccess | When::Manual => policy.after.iter().find_map(|&a| {
                    let by = self.policies[a].name.clone();
                    match self.state[a] {
                        State::Passed | State::Failed { allowed: true } if self.tainted[a] => {
                            Some(SkipReason::FailedBefore { via: by })
                        }
                        State::Passed | State::Failed { allowed: true } => None,
                        _ => Some(SkipReason::Blocked { by }),
                    }
                }),
                When::OnFailure => (!upstream_failed).then_some(SkipReason::NothingFailed),
                When::Always => None,
            }
        };
        let skip = skip.or_else(|| policy.held.clone());
        match skip {
            Some(reason) => {
                self.state[step] = State::Skipped;
                self.tainted[step] = upstream_failed;
                self.skips.push_back((step, reason));
                self.end(step);
            }
            None => {
                self.state[step] = State::Ready;
                self.ready.push_back(step);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, after: &[usize]) -> StepPolicy {
        StepPolicy {
            name: StageName::parse(name).unwrap(),
            after: after.to_vec(),
            when: When::OnSuccess,
            allow_failure: false,
            retries: 0,
            needs_manual: None,
            exclusive: false,
            held: None,
        }
    }

    /// Drives the scheduler like the runner would: starts what it may, then ends the oldest
    /// running step with the outcome `outcome(name, attempt)` gives. Returns the log.
    fn drive(
        mut scheduler: Scheduler,
        names: &[&str],
        outcome: impl Fn(&str, u32) -> bool,
    ) -> Vec<String> {
        let mut log = Vec::new();
        let mut running = VecDeque::new();
        while !scheduler.is_done() {
            while let Some(decision) = scheduler.next_decision() {
                match decision {
                    Decision::Start { step, attempt } => {
                        log.push(format!("start {} #{attempt}", names[step]));
                        running.push_back((step, attempt));
                    }
                    Decision::Skip { step, reason } => {
                        log.push(format!("skip {} ({})", names[step], reason.describe()));
                    }
                }
            }
            let Some((step, attempt)) = running.pop_front() else {
                break;
            };
            let passed = outcome(names[step], attempt);
            let retry = scheduler.finished(step, passed);
            log.push(format!(
                "{} {}{}",
                if passed { "pass" } else { "fail" },
                names[step],
                if retry { " (retry)" } else { "" }
            ));
        }
        assert!(scheduler.is_done(), "scheduler stalled: {log:?}");
        log
    }

    #[test]
    fn a_held_step_is_skipped_when_it_would_run_and_fails_nothing() {
        let mut held = step("production", &[0]);
        held.held = Some(SkipReason::NeedsApproval {
            command: "pydeployer deploy production --approve".into(),
        });
        let scheduler = Scheduler::new(vec![step("staging", &[]), held], 2);
        let log = drive(scheduler, &["staging", "production"], |_, _| true);
        assert_eq!(
            log,
            [
                "start staging #1",
                "pass staging",
                "skip production (needs approval: `pydeployer deploy production --approve`)"
            ]
        );
    }

    #[test]
    fn independent_steps_share_the_slots() {
        let s = Scheduler::new(vec![step("a", &[]), step("b", &[]), step("c", &[])], 2);
        let log = drive(s, &["a", "b", "c"], |_, _| true);
        assert_eq!(log[..2], ["start a #1", "start b #1"]);
        assert_eq!(log[2], "pass a");
        assert_eq!(log[3], "start c #1");
    }

    #[test]
    fn an_exclusive_step_runs_alone() {
        let mut alone = step("ask", &[]);
        alone.exclusive = true;
        let s = Scheduler::new(vec![step("a", &[]), alone, step("c", &[])], 3);
        let log = drive(s, &["a", "ask", "c"], |_, _| true);
        // `a` starts; `ask` waits for it (and `c` waits behind `ask`), then runs by itself.
        assert_eq!(
            log,
            [
                "start a #1",
                "pass a",
                "start ask #1",
                "pass ask",
                "start c #1",
                "pass c"
            ]
        );
    }

    #[test]
    fn a_failure_blocks_dependents_but_not_independent_branches() {
        // build ← test ← deploy; lint independent.
        let s = Scheduler::new(
            vec![
                step("build", &[]),
                step("lint", &[]),
                step("test", &[0]),
                step("deploy", &[2]),
            ],
            1,
        );
        let log = drive(s, &["build", "lint", "test", "deploy"], |n, _| n != "test");
        assert!(log.contains(&"pass lint".to_owned()));
        assert!(log.contains(&"fail test".to_owned()));
        assert!(log.contains(&"skip deploy (`test` did not succeed)".to_owned()));
        assert!(!log.iter().any(|l| l == "start deploy #1"));
    }

    #[test]
    fn skipped_steps_block_their_own_dependents_with_the_cause_named() {
        let s = Scheduler::new(vec![step("a", &[]), step("b", &[0]), step("c", &[1])], 2);
        let log = drive(s, &["a", "b", "c"], |_, _| false);
        assert_eq!(
            log,
            [
                "start a #1",
                "fail a",
                "skip b (`a` did not succeed)",
                "skip c (`b` did not succeed)"
            ]
        );
    }

    #[test]
    fn allow_failure_does_not_block() {
        let mut lint = step("lint", &[]);
        lint.allow_failure = true;
        let mut s = Scheduler::new(vec![lint, step("deploy", &[0])], 2);
        assert_eq!(
            s.next_decision(),
            Some(Decision::Start {
                step: 0,
                attempt: 1
            })
        );
        assert!(!s.finished(0, false));
        assert_eq!(
            s.next_decision(),
            Some(Decision::Start {
                step: 1,
                attempt: 1
            })
        );
        s.finished(1, true);
        assert!(s.is_done() && !s.failed());
    }

    #[test]
    fn on_failure_runs_only_after_a_failure_upstream() {
        let mut notify = step("notify", &[1]);
        notify.when = When::OnFailure;
        let names = ["build", "test", "notify"];
        let policies = vec![step("build", &[]), step("test", &[0]), notify];

        let log = drive(Scheduler::new(policies.clone(), 2), &names, |_, _| true);
        assert_eq!(
            log.last().unwrap(),
            "skip notify (on_failure, and nothing failed)"
        );

        // build fails: test is skipped, the failure flows through it to notify.
        let log = drive(Scheduler::new(policies, 2), &names, |n, _| n != "build");
        assert!(log.contains(&"start notify #1".to_owned()), "{log:?}");
    }

    #[test]
    fn always_runs_whatever_happened() {
        let mut cleanup = step("cleanup", &[0]);
        cleanup.when = When::Always;
        let mut s = Scheduler::new(vec![step("a", &[]), cleanup], 2);
        assert_eq!(
            s.next_decision(),
            Some(Decision::Start {
                step: 0,
                attempt: 1
            })
        );
        s.finished(0, false);
        assert_eq!(
            s.next_decision(),
            Some(Decision::Start {
                step: 1,
                attempt: 1
            })
        );
        s.finished(1, true);
        assert!(s.is_done() && s.failed());
    }

    #[test]
    fn a_failure_stays_visible_past_an_always_stage() {
        // test fails; cleanup (always) runs; deploy after cleanup must not.
        let mut cleanup = step("cleanup", &[0]);
        cleanup.when = When::Always;
        let names = ["test", "cleanup", "deploy"];
        let log = drive(
            Scheduler::new(vec![step("test", &[]), cleanup, step("deploy", &[1])], 2),
            &names,
            |n, _| n != "test",
        );
        assert!(log.contains(&"pass cleanup".to_owned()), "{log:?}");
        assert!(
            log.contains(&"skip deploy (a stage before `cleanup` failed)".to_owned()),
            "{log:?}"
        );
    }

    #[test]
    fn retries_rerun_a_failed_step_then_give_up() {
        let mut flaky = step("flaky", &[]);
        flaky.retries = 2;
        let log = drive(
            Scheduler::new(vec![flaky.clone(), step("after", &[0])], 1),
            &["flaky", "after"],
            |n, attempt| n != "flaky" || attempt == 2,
        );
        assert_eq!(
            log,
            [
                "start flaky #1",
                "fail flaky (retry)",
                "start flaky #2",
                "pass flaky",
                "start after #1",
                "pass after"
            ]
        );

        let log = drive(
            Scheduler::new(vec![flaky, step("after", &[0])], 1),
            &["flaky", "after"],
            |_, _| false,
        );
        assert_eq!(
            log.iter().filter(|l| l.starts_with("start flaky")).count(),
            3
        );
        assert_eq!(log.last().unwrap(), "skip after (`flaky` did not succeed)");
    }

    #[test]
    fn a_stage_needing_an_unselected_manual_stage_is_skipped() {
        let mut s = step("publish", &[]);
        s.needs_manual = Some(StageName::parse("approve").unwrap());
        let log = drive(Scheduler::new(vec![s], 1), &["publish"], |_, _| true);
        assert_eq!(
            log,
            ["skip publish (needs manual stage `approve`, which was not selected)"]
        );
    }

    #[test]
    fn the_slot_limit_is_never_exceeded() {
        let policies: Vec<StepPolicy> = (0..10).map(|i| step(&format!("s{i}"), &[])).collect();
        let mut s = Scheduler::new(policies, 3);
        let mut started = 0;
        while let Some(Decision::Start { .. }) = s.next_decision() {
            started += 1;
        }
        assert_eq!(started, 3);
        assert_eq!(s.running(), 3);
    }
}
