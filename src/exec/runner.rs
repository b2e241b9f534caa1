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
    /// Set once the runner decided to end it (timeout or interrupt): KILL at this instant.
    kill_at: Option<Instant>,
    timed_out: bool,
    stop: Arc<AtomicBool>,
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
    mut report: impl FnMut(&RunEvent),
) -> RunSummary {
    let log = header.log.clone();
    let start = Instant::now();
    report(&RunEvent::RunStarted(header));

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
    let mut scheduler = Scheduler::new(policies, options.jobs);
    let (tx, rx) = sync_channel::<WorkerMsg>(64);
    let mut active: BTreeMap<usize, Active> = BTreeMap::new();
    let mut tally = vec![Tally::default(); plan.steps.len()];
    let mut cancelled = false;

    loop {
        if !cancelled && interrupted.load(Ordering::Relaxed) {
            cancelled = true;
            let now = Instant::now();
            for a in active.values_mut() {
                end_attempt(a, now, options.grace);
            }
        }
        if !cancelled {
            while let Some(decision) = scheduler.next_decision() {
                match decision {
                    Decision::Start { step, attempt } => {
                        let stage = &pipeline.stages[plan.steps[step].stage];
                        let commands = actions::commands(pipeline, stage, &options.context);
                        let junit = actions::junit_report(stage, &options.context);
                        let elapsed = start.elapsed();
                        report(&RunEvent::StageStarted {
                            stage: stage.name.clone(),
                            attempt,
                            // What actually runs now (clone or pull?), not the plan's description.
                            command: match &commands {
                                Ok(commands) if !commands.is_empty() => actions::display(commands),
                                _ => actions::describe(pipeline, stage),
                            },
                            elapsed,
                        });
                        let now = Instant::now();
                        let stop = Arc::new(AtomicBool::new(false));
                        active.insert(
                            step,
                            Active {
                                attempt,
                                started: now,
                                deadline: stage.timeout.map(|t| now + t),
                                pgid: None,
                                kill_at: None,
                                timed_out: false,
                                stop: Arc::clone(&stop),
                            },
                        );
                        let dir = pipeline.workdir(stage);
                        let mut env = pipeline.env.clone();
                        env.extend(stage.env.iter().map(|(k, v)| (k.clone(), v.clone())));
                        env.insert("PYDEPLOYER_STAGE".into(), stage.name.to_string());
                        spawn_worker(
                            Work {
                                step,
                                commands,
                                junit,
                                dir,
                                env,
                                stop,
                                start,
                            },
                            tx.clone(),
                        );
                    }
                    Decision::Skip { step, reason } => {
                        let name = pipeline.stages[plan.steps[step].stage].name.clone();
                        tally[step].result = Some((StageResult::Skipped, reason.describe()));
                        report(&RunEvent::StageSkipped {
                            stage: name,
                            reason,
                            elapsed: start.elapsed(),
                        });
                    }
                }
            }
        }
        if active.is_empty() && (cancelled || scheduler.is_done()) {
            break;
        }

        let wake = next_wake(&active, cancelled);
        let msg = match wake {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match msg {
            Ok(WorkerMsg::Spawned { step, pgid }) => {
                if let Some(a) = active.get_mut(&step) {
                    a.pgid = Some(pgid);
                    if a.kill_at.is_some() {
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
                report(&RunEvent::StageOutput {
                    stage,
                    bytes,
                    elapsed,
                });
            }
            Ok(WorkerMsg::Done {
                step,
                outcome,
                note,
            }) => {
                let Some(a) = active.remove(&step) else {
                    continue;
                };
                let stage = &pipeline.stages[plan.steps[step].stage];
                let duration = a.started.elapsed();
                let outcome = if a.timed_out {
                    Outcome::TimedOut {
                        after: stage.timeout.unwrap_or_default(),
                    }
                } else {
                    outcome
                };
                let passed = outcome.passed();
                let will_retry = !cancelled && scheduler.finished(step, passed);
                let t = &mut tally[step];
                t.attempts = a.attempt;
                t.duration += duration;
                if !will_retry {
                    let result = match (&outcome, passed, stage.allow_failure) {
                        (_, true, _) => StageResult::Passed,
                        (_, false, true) => StageResult::FailedAllowed,
                        (Outcome::TimedOut { .. }, _, _) => StageResult::TimedOut,
                        _ => StageResult::Failed,
                    };
                    let detail = if cancelled && !passed {
                        "cancelled".to_owned()
                    } else {
                        outcome.describe()
                    };
                    t.result = Some((result, detail));
                }
                report(&RunEvent::StageFinished {
                    stage: stage.name.clone(),
                    attempt: a.attempt,
                    outcome,
                    note,
                    duration,
                    will_retry,
                    elapsed: start.elapsed(),
                });
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                for a in active.values_mut() {
                    if a.kill_at.is_some_and(|at| at <= now) {
                        if let Some(pgid) = a.pgid {
                            process::signal_group(pgid, SIGKILL);
                        }
                        a.kill_at = Some(now + options.grace);
                    } else if a.kill_at.is_none() && a.deadline.is_some_and(|d| d <= now) {
                        a.timed_out = true;
                        end_attempt(a, now, options.grace);
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }

    let mut rows = Vec::with_capacity(plan.steps.len());
    for (step, t) in plan.steps.iter().zip(tally) {
        let stage = &pipeline.stages[step.stage];
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
    let exit_code = if cancelled {
        exit::INTERRUPTED
    } else if scheduler.failed() {
        exit::STAGE_FAILED
    } else {
        exit::OK
    };
    let summary = RunSummary {
        stages: rows,
        duration: start.elapsed(),
        exit_code,
        log,
    };
    report(&RunEvent::RunFinished(summary.clone()));
    summary
}

/// TERM now, KILL after the grace period; the worker starts no further command.
fn end_attempt(a: &mut Active, now: Instant, grace: Duration) {
    a.stop.store(true, Ordering::Relaxed);
    a.kill_at = Some(now + grace);
    if let Some(pgid) = a.pgid {
        process::signal_group(pgid, SIGTERM);
    }
}

/// The earliest instant the loop must act without a message: a deadline or a KILL; while
/// interrupted, also poll (the flag is set from a signal handler).
fn next_wake(active: &BTreeMap<usize, Active>, cancelled: bool) -> Option<Instant> {
    let soonest = active
        .values()
        .filter_map(|a| a.kill_at.or(a.deadline))
        .min();
    let poll = (!cancelled).then(|| Instant::now() + Duration::from_millis(100));
    match (soonest, poll) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
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
