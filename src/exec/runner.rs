//! Runs a plan: one thread per running stage, the scheduler's decisions, timeouts, events.
//!
//! The runner does not communicate with the outside world except through the `report`
//! callback it is given: every event goes there, in order, from the calling thread. Worker
//! threads only talk to the runner through a bounded channel (so a stage that prints faster
//! than the reporter writes is slowed down instead of filling memory).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use crate::actions::junit;
use crate::actions::{self, CommandLine, RunContext};
use crate::error::exit;
use crate::events::{
    Outcome, RunEvent, RunHeader, RunSummary, SkipReason, StageResult, SummaryRow,
};
use crate::exec::process::{self, SIGKILL, SIGTERM};
use crate::exec::scheduler::{Decision, Scheduler, StepPolicy};
use crate::pipeline::Pipeline;
use crate::plan::Plan;

/// How long a stage gets between TERM and KILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

pub struct RunOptions {
    pub jobs: usize,
    pub context: RunContext,
    /// Between TERM and KILL when a stage times out or the run is interrupted.
    pub grace: Duration,
}

/// Messages from stage threads; never leave this module.
enum WorkerMsg {
    Spawned {
        step: usize,
        pgid: i32,
    },
    Output {
        step: usize,
        bytes: Vec<u8>,
        elapsed: Duration,
    },
    Done {
        step: usize,
        outcome: Outcome,
        note: Option<String>,
    },
}

/// A stage attempt in progress.
struct Active {
    attempt: u32,
    started: Instant,
    deadline: Option<Instant>,
    pgid: Option<i32>,
    /// Where ending it stands, once the runner decided to (timeout or interrupt).
    ending: Ending,
    timed_out: bool,
    stop: Arc<AtomicBool>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    No,
    /// TERM sent; KILL at this instant.
    Termed(Instant),
    /// KILL sent; if the output is still open at this instant, a process that left the
    /// group holds it, and the stage is given up on.
    Killed(Instant),
}

#[derive(Default, Clone)]
struct Tally {
    attempts: u32,
    duration: Duration,
    result: Option<(StageResult, String)>,
}

/// Runs every step of `plan`, reporting each event to `report`; returns the summary (also
/// reported as the last event). `interrupted` is polled: once set, running stages are ended
/// and nothing new starts.
pub fn execute(
    pipeline: &Pipeline,
    plan: &Plan,
    header: RunHeader,
    options: &RunOptions,
    interrupted: &AtomicBool,
    report: impl FnMut(&RunEvent),
) -> RunSummary {
    let log = header.log.clone();
    let policies = plan
        .steps
        .iter()
        .map(|step| {
            let stage = &pipeline.stages[step.stage];
            StepPolicy {
                name: stage.name.clone(),
                after: step.after.clone(),
                when: stage.when,
                allow_failure: stage.allow_failure,
                retries: stage.retries,
                needs_manual: step.needs_manual.clone(),
            }
        })
        .collect();
    let (tx, rx) = sync_channel::<WorkerMsg>(64);
    let mut run = Run {
        pipeline,
        plan,
        options,
        report,
        start: Instant::now(),
        scheduler: Scheduler::new(policies, options.jobs),
        active: BTreeMap::new(),
        tally: vec![Tally::default(); plan.steps.len()],
        cancelled: false,
        tx,
    };
    (run.report)(&RunEvent::RunStarted(header));

    loop {
        if !run.cancelled && interrupted.load(Ordering::Relaxed) {
            run.cancelled = true;
            let now = Instant::now();
            for a in run.active.values_mut() {
                end_attempt(a, now, options.grace);
            }
        }
        if !run.cancelled {
            while let Some(decision) = run.scheduler.next_decision() {
                match decision {
                    Decision::Start { step, attempt } => run.start(step, attempt),
                    Decision::Skip { step, reason } => run.skip(step, reason),
                }
            }
        }
        if run.active.is_empty() && (run.cancelled || run.scheduler.is_done()) {
            break;
        }
        let wake = next_wake(&run.active);
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(WorkerMsg::Spawned { step, pgid }) => {
                if let Some(a) = run.active.get_mut(&step) {
                    a.pgid = Some(pgid);
                    if a.ending != Ending::No {
                        process::signal_group(pgid, SIGTERM);
                    }
                }
            }
            Ok(WorkerMsg::Output {
                step,
                bytes,
                elapsed,
            }) => {
                let stage = pipeline.stages[plan.steps[step].stage].name.clone();
                (run.report)(&RunEvent::StageOutput {
                    stage,
                    bytes,
                    elapsed,
                });
            }
            Ok(WorkerMsg::Done {
                step,
                outcome,
                note,
            }) => run.finish(step, outcome, note),
            Err(RecvTimeoutError::Timeout) => {}
            // Unreachable while `run` holds a sender; nothing more can arrive anyway.
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // Deadlines are checked after every message: a stage that never stops printing
        // must not keep its own (or anyone's) timeout from firing.
        run.enforce_deadlines(Instant::now());
    }
    run.summary(log)
}

/// The state of one run, owned by the calling thread.
struct Run<'a, F: FnMut(&RunEvent)> {
    pipeline: &'a Pipeline,
    plan: &'a Plan,
    options: &'a RunOptions,
    report: F,
    start: Instant,
    scheduler: Scheduler,
    active: BTreeMap<usize, Active>,
    tally: Vec<Tally>,
    cancelled: bool,
    tx: SyncSender<WorkerMsg>,
}

impl<F: FnMut(&RunEvent)> Run<'_, F> {
    fn start(&mut self, step: usize, attempt: u32) {
        let (pipeline, options) = (self.pipeline, self.options);
        let stage = &pipeline.stages[self.plan.steps[step].stage];
        let commands = actions::commands(pipeline, stage, &options.context);
        (self.report)(&RunEvent::StageStarted {
            stage: stage.name.clone(),
            attempt,
            // What actually runs now (clone or pull?), not the plan's description.
            command: match &commands {
                Ok(commands) if !commands.is_empty() => actions::display(commands),
                _ => actions::describe(pipeline, stage),
            },
            elapsed: self.start.elapsed(),
        });
        let now = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        self.active.insert(
            step,
            Active {
                attempt,
                started: now,
                // A timeout too far away to represent is no timeout.
                deadline: stage.timeout.and_then(|t| now.checked_add(t)),
                pgid: None,
                ending: Ending::No,
                timed_out: false,
                stop: Arc::clone(&stop),
            },
        );
        let mut env = pipeline.env.clone();
        env.extend(stage.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.insert("PYDEPLOYER_STAGE".into(), stage.name.to_string());
        let work = Work {
            step,
            commands,
            junit: actions::junit_report(stage, &options.context),
            dir: pipeline.workdir(stage),
            env,
            stop,
            start: self.start,
        };
        spawn_worker(work, self.tx.clone());
    }

    fn skip(&mut self, step: usize, reason: SkipReason) {
        let name = self.pipeline.stages[self.plan.steps[step].stage]
            .name
            .clone();
        self.tally[step].result = Some((StageResult::Skipped, reason.describe()));
        (self.report)(&RunEvent::StageSkipped {
            stage: name,
            reason,
            elapsed: self.start.elapsed(),
        });
    }

    /// An attempt ended (or was given up on): tell the scheduler, tally, report.
    fn finish(&mut self, step: usize, outcome: Outcome, note: Option<String>) {
        // A worker given up on may still report later; it was already accounted for.
        let Some(a) = self.active.remove(&step) else {
            return;
        };
        let stage = &self.pipeline.stages[self.plan.steps[step].stage];
        let duration = a.started.elapsed();
        let outcome = if a.timed_out {
            Outcome::TimedOut {
                after: stage.timeout.unwrap_or_default(),
            }
        } else {
            outcome
        };
        let passed = outcome.passed();
        let will_retry = !self.cancelled && self.scheduler.finished(step, passed);
        let t = &mut self.tally[step];
        t.attempts = a.attempt;
        t.duration += duration;
        if !will_retry {
            let result = match (&outcome, passed, stage.allow_failure) {
                (_, true, _) => StageResult::Passed,
                (_, false, true) => StageResult::FailedAllowed,
                (Outcome::TimedOut { .. }, _, _) => StageResult::TimedOut,
                _ => StageResult::Failed,
            };
            let mut detail = if self.cancelled && !passed {
                "cancelled".to_owned()
            } else {
                outcome.describe()
            };
            if let Some(note) = &note {
                detail = format!("{detail}: {note}");
            }
            t.result = Some((result, detail));
        }
        (self.report)(&RunEvent::StageFinished {
            stage: stage.name.clone(),
            attempt: a.attempt,
            outcome,
            note,
            duration,
            will_retry,
            elapsed: self.start.elapsed(),
        });
    }

    /// TERM at the deadline, KILL after the grace period, and give up on a stage whose
    /// output a process outside its group still holds open another grace period later.
    fn enforce_deadlines(&mut self, now: Instant) {
        let grace = self.options.grace;
        let mut abandoned = Vec::new();
        for (&step, a) in &mut self.active {
            match a.ending {
                Ending::No if a.deadline.is_some_and(|d| d <= now) => {
                    a.timed_out = true;
                    end_attempt(a, now, grace);
                }
                Ending::Termed(at) if at <= now => {
                    if let Some(pgid) = a.pgid {
                        process::signal_group(pgid, SIGKILL);
                    }
                    a.ending = Ending::Killed(now + grace);
                }
                Ending::Killed(at) if at <= now => abandoned.push(step),
                _ => {}
            }
        }
        for step in abandoned {
            let note = "a process that left the stage's process group kept its output open; it was left running".to_owned();
            self.finish(
                step,
                Outcome::Failed {
                    code: None,
                    signal: Some(SIGKILL),
                },
                Some(note),
            );
        }
    }

    fn summary(mut self, log: Option<PathBuf>) -> RunSummary {
        let mut rows = Vec::with_capacity(self.plan.steps.len());
        for (step, t) in self.plan.steps.iter().zip(std::mem::take(&mut self.tally)) {
            let stage = &self.pipeline.stages[step.stage];
            let (result, detail) = t
                .result
                .unwrap_or_else(|| (StageResult::Skipped, SkipReason::Cancelled.describe()));
            rows.push(SummaryRow {
                stage: stage.name.clone(),
                result,
                duration: t.duration,
                attempts: t.attempts,
                detail,
            });
        }
        let exit_code = if self.cancelled {
            exit::INTERRUPTED
        } else if self.scheduler.failed() {
            exit::STAGE_FAILED
        } else {
            exit::OK
        };
        let summary = RunSummary {
            stages: rows,
            duration: self.start.elapsed(),
            exit_code,
            log,
        };
        (self.report)(&RunEvent::RunFinished(summary.clone()));
        summary
    }
}

/// TERM now, KILL after the grace period; the worker starts no further command.
fn end_attempt(a: &mut Active, now: Instant, grace: Duration) {
    a.stop.store(true, Ordering::Relaxed);
    a.ending = Ending::Termed(now + grace);
    if let Some(pgid) = a.pgid {
        process::signal_group(pgid, SIGTERM);
    }
}

/// The latest instant the loop may sleep until: the next deadline or step of ending a
/// stage, and never more than 100 ms (the interrupt flag is set from a signal handler).
fn next_wake(active: &BTreeMap<usize, Active>) -> Instant {
    let poll = Instant::now() + Duration::from_millis(100);
    let soonest = active
        .values()
        .filter_map(|a| match a.ending {
            Ending::No => a.deadline,
            Ending::Termed(at) | Ending::Killed(at) => Some(at),
        })
        .min();
    soonest.map_or(poll, |at| at.min(poll))
}

struct Work {
    step: usize,
    commands: Result<Vec<CommandLine>, String>,
    /// pytest's JUnit report, summarised into the stage's note.
    junit: Option<PathBuf>,
    dir: PathBuf,
    env: BTreeMap<String, String>,
    stop: Arc<AtomicBool>,
    start: Instant,
}

fn spawn_worker(work: Work, tx: SyncSender<WorkerMsg>) {
    let step = work.step;
    let fallback = tx.clone();
    let spawned = thread::Builder::new()
        .name(format!("stage-{step}"))
        .spawn(move || {
            let outcome = run_commands(&work, &tx);
            let note = work.junit.as_deref().and_then(|path| {
                let counts = junit::parse(&std::fs::read_to_string(path).ok()?)?;
                Some(counts.describe())
            });
            let _ = tx.send(WorkerMsg::Done {
                step,
                outcome,
                note,
            });
        });
    if let Err(err) = spawned {
        let _ = fallback.send(WorkerMsg::Done {
            step,
            outcome: Outcome::NotStarted {
                message: format!("cannot start a thread: {err}"),
            },
            note: None,
        });
    }
}

fn run_commands(work: &Work, tx: &SyncSender<WorkerMsg>) -> Outcome {
    if !work.dir.is_dir() {
        return Outcome::NotStarted {
            message: format!("the folder {} does not exist", work.dir.display()),
        };
    }
    let commands = match &work.commands {
        Ok(commands) => commands,
        Err(message) => {
            return Outcome::NotStarted {
                message: message.clone(),
            };
        }
    };
    for command in commands {
        if work.stop.load(Ordering::Relaxed) {
            return Outcome::Failed {
                code: None,
                signal: Some(SIGTERM),
            };
        }
        let running = match process::spawn(command, &work.dir, &work.env) {
            Ok(running) => running,
            Err(err) => {
                return Outcome::NotStarted {
                    message: format!("{}: {err}", command.program),
                };
            }
        };
        let _ = tx.send(WorkerMsg::Spawned {
            step: work.step,
            pgid: running.pgid(),
        });
        let outcome = running.stream(|bytes| {
            let _ = tx.send(WorkerMsg::Output {
                step: work.step,
                bytes,
                elapsed: work.start.elapsed(),
            });
        });
        match outcome {
            Ok(Outcome::Passed) => {}
            Ok(Outcome::Failed {
                code: Some(code), ..
            }) if command.also_ok.contains(&code) => {}
            Ok(failed) => return failed,
            Err(err) => {
                return Outcome::NotStarted {
                    message: format!("reading the output of {}: {err}", command.program),
                };
            }
        }
    }
    Outcome::Passed
}
