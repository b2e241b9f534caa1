//! Runs a plan: one thread per running stage, the scheduler's decisions, timeouts, events.
//!
//! The runner does not communicate with the outside world except through the `report`
//! callback it is given: every event goes there, in order, from the calling thread. Worker
//! threads only talk to the runner through a bounded channel (so a stage that prints faster
//! than the reporter writes is slowed down instead of filling memory).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, channel, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use crate::actions::junit;
use crate::actions::{self, CommandLine, RunContext};
use crate::error::exit;
use crate::events::{
    Outcome, RunEvent, RunHeader, RunSummary, SkipReason, StageResult, SummaryRow,
};
use crate::exec::process::{self, SIGKILL, SIGTERM, Spawn, Target};
use crate::exec::scheduler::{Decision, Scheduler, StepPolicy};
use crate::exec::stop::{Request, Stop};
use crate::exec::watchdog::Watchdog;
use crate::pipeline::Pipeline;
use crate::plan::Plan;
use crate::report::mask::Masker;

/// How long a stage gets between TERM and KILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

pub struct RunOptions {
    pub jobs: usize,
    pub context: RunContext,
    /// Between TERM and KILL when a stage times out or the run is interrupted.
    pub grace: Duration,
    /// Ends the stages' process groups if the runner dies.
    pub watchdog: Option<Arc<Watchdog>>,
    /// Hides secrets in the stages' output.
    pub masker: Masker,
}

/// After KILL, how long the output may stay open before the stage is given up on (at least;
/// the grace period when it is longer). Ending hundreds of processes takes the kernel a moment.
const GIVE_UP_AFTER_KILL: Duration = Duration::from_secs(2);

/// Which attempt of which step a worker runs: a worker given up on may still report, and must
/// not be mistaken for the retry that replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    step: usize,
    attempt: u32,
}

/// Messages from stage threads; never leave this module.
enum WorkerMsg {
    Output {
        of: Attempt,
        bytes: Vec<u8>,
        elapsed: Duration,
    },
    Done {
        of: Attempt,
        outcome: Outcome,
        note: Option<String>,
    },
}

/// A stage attempt in progress.
struct Active {
    attempt: u32,
    started: Instant,
    deadline: Option<Instant>,
    /// Where ending it stands, once the runner decided to (timeout or interrupt).
    ending: Ending,
    timed_out: bool,
    control: Arc<Control>,
}

/// What the runner and the worker running an attempt share, without a message (and the
/// thread wake-up it costs) per command: the running command's group, and whether the runner
/// wants it ended. Each side writes its part, then reads the other's, so whichever comes
/// second sends the signal (both may: a second TERM or KILL is harmless).
#[derive(Debug, Default)]
struct Control {
    /// The running command's process group; 0 before the first starts.
    pgid: AtomicI32,
    /// 0: run on; otherwise the signal asked for (TERM, then KILL). No further command starts.
    ending: AtomicI32,
}

impl Control {
    /// Runner: end the attempt with `signal`.
    fn end(&self, signal: i32) {
        self.ending.store(signal, Ordering::SeqCst);
        Control::send(self.pgid.load(Ordering::SeqCst), signal);
    }

    /// Worker: a command started in group `pgid`.
    fn started(&self, pgid: i32) {
        self.pgid.store(pgid, Ordering::SeqCst);
        Control::send(pgid, self.ending.load(Ordering::SeqCst));
    }

    fn stopping(&self) -> bool {
        self.ending.load(Ordering::SeqCst) != 0
    }

    fn send(pgid: i32, signal: i32) {
        if pgid > 0 && signal != 0 {
            Target {
                id: pgid,
                group: true,
            }
            .signal(signal);
        }
    }
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
/// reported as the last event). `stop` is polled: once it asks, running stages are ended
/// (TERM, then KILL; at once on a second signal) and nothing new starts.
pub fn execute(
    pipeline: &Pipeline,
    plan: &Plan,
    header: RunHeader,
    options: &RunOptions,
    stop: &Stop,
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
                exclusive: stage.interactive,
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
        stopped: None,
        killed: false,
        pool: Pool::new(tx),
    };
    (run.report)(&RunEvent::RunStarted(header));

    loop {
        run.obey(stop.request());
        if run.stopped.is_none() {
            while let Some(decision) = run.scheduler.next_decision() {
                match decision {
                    Decision::Start { step, attempt } => run.start(step, attempt),
                    Decision::Skip { step, reason } => run.skip(step, reason),
                }
            }
        }
        if run.active.is_empty() && (run.stopped.is_some() || run.scheduler.is_done()) {
            break;
        }
        let wake = next_wake(&run.active);
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(WorkerMsg::Output { of, bytes, elapsed }) => {
                if run.current(of).is_some() {
                    let stage = pipeline.stages[plan.steps[of.step].stage].name.clone();
                    (run.report)(&RunEvent::StageOutput {
                        stage,
                        bytes,
                        elapsed,
                    });
                }
            }
            Ok(WorkerMsg::Done { of, outcome, note }) => {
                if run.current(of).is_some() {
                    run.finish(of.step, outcome, note, stop);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Unreachable while `run` holds a sender; nothing more can arrive anyway.
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // Deadlines are checked after every message: a stage that never stops printing
        // must not keep its own (or anyone's) timeout from firing.
        run.enforce_deadlines(Instant::now(), stop);
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
    /// The run was told to stop, and will exit with this code.
    stopped: Option<i32>,
    /// The running stages were killed without a grace period (a second Ctrl-C).
    killed: bool,
    pool: Pool,
}

impl<F: FnMut(&RunEvent)> Run<'_, F> {
    /// The attempt in progress, if `of` is it.
    fn current(&mut self, of: Attempt) -> Option<&mut Active> {
        self.active
            .get_mut(&of.step)
            .filter(|a| a.attempt == of.attempt)
    }

    /// Acts on a request to stop: the first ends the running stages politely, a second
    /// kills them now.
    fn obey(&mut self, request: Request) {
        let now = Instant::now();
        let grace = self.options.grace;
        match request {
            Request::Stop { exit_code } if self.stopped.is_none() => {
                self.stopped = Some(exit_code);
                for a in self.active.values_mut() {
                    end_attempt(a, now, grace);
                }
            }
            Request::Kill { exit_code } if !self.killed => {
                self.stopped.get_or_insert(exit_code);
                self.killed = true;
                for a in self.active.values_mut() {
                    a.ending = Ending::Killed(now + grace);
                    a.control.end(SIGKILL);
                }
            }
            Request::None | Request::Stop { .. } | Request::Kill { .. } => {}
        }
    }

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
            interactive: stage.interactive,
            elapsed: self.start.elapsed(),
        });
        let now = Instant::now();
        let control = Arc::new(Control::default());
        self.active.insert(
            step,
            Active {
                attempt,
                started: now,
                // A timeout too far away to represent is no timeout.
                deadline: stage.timeout.and_then(|t| now.checked_add(t)),
                ending: Ending::No,
                timed_out: false,
                control: Arc::clone(&control),
            },
        );
        let work = Work {
            step,
            attempt,
            commands,
            junit: actions::junit_report(stage, &options.context),
            dir: pipeline.workdir(stage),
            env: actions::environment(pipeline, stage, std::env::vars_os()),
            interactive: stage.interactive,
            control,
            start: self.start,
            watchdog: options.watchdog.clone(),
            masker: options.masker.clone(),
        };
        self.pool.run(work);
    }

    fn skip(&mut self, step: usize, reason: SkipReason) {
        let name = self.pipeline.stages[self.plan.steps[step].stage]
            .name
            .clone();
        let result = match reason {
            SkipReason::Cancelled => StageResult::Cancelled,
            _ => StageResult::Skipped,
        };
        self.tally[step].result = Some((result, reason.describe()));
        (self.report)(&RunEvent::StageSkipped {
            stage: name,
            reason,
            elapsed: self.start.elapsed(),
        });
    }

    /// An attempt ended (or was given up on): tell the scheduler, tally, report.
    fn finish(&mut self, step: usize, outcome: Outcome, note: Option<String>, stop: &Stop) {
        let Some(a) = self.active.remove(&step) else {
            return;
        };
        let stage = &self.pipeline.stages[self.plan.steps[step].stage];
        // An interactive stage owns the terminal, so Ctrl-C reaches it and not us: its death
        // by SIGINT is the user's Ctrl-C, and stops the run.
        // (Or it caught the Ctrl-C and exited 130, as programs do.)
        let ctrl_c = matches!(
            outcome,
            Outcome::Failed {
                signal: Some(process::SIGINT),
                ..
            } | Outcome::Failed {
                code: Some(130),
                ..
            }
        );
        if stage.interactive && ctrl_c {
            stop.record(process::SIGINT);
            self.obey(stop.request());
        }
        let duration = a.started.elapsed();
        let outcome = if a.timed_out {
            Outcome::TimedOut {
                after: stage.timeout.unwrap_or_default(),
            }
        } else if self.stopped.is_some() && !outcome.passed() {
            Outcome::Cancelled
        } else {
            outcome
        };
        let passed = outcome.passed();
        let will_retry = self.stopped.is_none() && self.scheduler.finished(step, passed);
        let t = &mut self.tally[step];
        t.attempts = a.attempt;
        t.duration += duration;
        if !will_retry {
            let result = match (&outcome, passed, stage.allow_failure) {
                (_, true, _) => StageResult::Passed,
                (Outcome::Cancelled, _, _) => StageResult::Cancelled,
                (_, false, true) => StageResult::FailedAllowed,
                (Outcome::TimedOut { .. }, _, _) => StageResult::TimedOut,
                _ => StageResult::Failed,
            };
            let mut detail = outcome.describe();
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
    /// output a process outside its group still holds open a while later.
    fn enforce_deadlines(&mut self, now: Instant, stop: &Stop) {
        let grace = self.options.grace;
        let mut abandoned = Vec::new();
        for (&step, a) in &mut self.active {
            match a.ending {
                Ending::No if a.deadline.is_some_and(|d| d <= now) => {
                    a.timed_out = true;
                    end_attempt(a, now, grace);
                }
                Ending::Termed(at) if at <= now => {
                    a.control.end(SIGKILL);
                    a.ending = Ending::Killed(now + grace.max(GIVE_UP_AFTER_KILL));
                }
                Ending::Killed(at) if at <= now => abandoned.push(step),
                _ => {}
            }
        }
        for step in abandoned {
            let note = process::Leak::Escaped.describe().to_owned();
            let outcome = Outcome::Failed {
                code: None,
                signal: Some(SIGKILL),
            };
            self.finish(step, outcome, Some(note), stop);
        }
    }

    fn summary(mut self, log: Option<PathBuf>) -> RunSummary {
        // What a stopped run never got to: each said, in the log and on the terminal too.
        if self.stopped.is_some() {
            let never: Vec<usize> = (0..self.plan.steps.len())
                .filter(|&i| self.tally[i].result.is_none())
                .collect();
            for step in never {
                self.skip(step, SkipReason::Cancelled);
            }
        }
        let mut rows = Vec::with_capacity(self.plan.steps.len());
        for (step, t) in self.plan.steps.iter().zip(std::mem::take(&mut self.tally)) {
            let stage = &self.pipeline.stages[step.stage];
            let (result, detail) = t
                .result
                .unwrap_or_else(|| (StageResult::Cancelled, SkipReason::Cancelled.describe()));
            rows.push(SummaryRow {
                stage: stage.name.clone(),
                result,
                duration: t.duration,
                attempts: t.attempts,
                detail,
            });
        }
        let exit_code = if let Some(code) = self.stopped {
            code
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
    a.ending = Ending::Termed(now + grace);
    a.control.end(SIGTERM);
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
    attempt: u32,
    commands: Result<Vec<CommandLine>, String>,
    /// pytest's JUnit report, summarised into the stage's note.
    junit: Option<PathBuf>,
    dir: PathBuf,
    env: BTreeMap<String, Option<String>>,
    interactive: bool,
    control: Arc<Control>,
    start: Instant,
    watchdog: Option<Arc<Watchdog>>,
    masker: Masker,
}

/// Threads that run stages, kept for the next stage when one ends: starting a thread per
/// stage costs more than the stage's own process (`/bin/true`) does.
struct Pool {
    queue: Sender<Work>,
    waiting: Arc<Mutex<Receiver<Work>>>,
    /// Workers idle or about to be: each can take one job from the queue.
    idle: Arc<AtomicUsize>,
    tx: SyncSender<WorkerMsg>,
}

impl Pool {
    fn new(tx: SyncSender<WorkerMsg>) -> Pool {
        let (queue, waiting) = channel();
        Pool {
            queue,
            waiting: Arc::new(Mutex::new(waiting)),
            idle: Arc::new(AtomicUsize::new(0)),
            tx,
        }
    }

    /// Runs `work` on an idle worker, or on a new one when none is idle (a stage given up on
    /// keeps its worker, so the pool may grow past `jobs`).
    fn run(&self, work: Work) {
        let reserved = self
            .idle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if reserved {
            if let Err(unsent) = self.queue.send(work) {
                // The workers are gone (cannot happen while the pool lives); run it anew.
                self.spawn(unsent.0);
            }
        } else {
            self.spawn(work);
        }
    }

    fn spawn(&self, first: Work) {
        let of = first.attempt_key();
        let (tx, waiting, idle) = (
            self.tx.clone(),
            Arc::clone(&self.waiting),
            Arc::clone(&self.idle),
        );
        let spawned = thread::Builder::new().name("stage".into()).spawn(move || {
            let mut work = first;
            loop {
                run_work(&work, &tx);
                idle.fetch_add(1, Ordering::SeqCst);
                let next = match waiting.lock() {
                    Ok(queue) => queue.recv(),
                    Err(_) => return,
                };
                match next {
                    Ok(next) => work = next,
                    // The run is over.
                    Err(_) => return,
                }
            }
        });
        if let Err(err) = spawned {
            let _ = self.tx.send(WorkerMsg::Done {
                of,
                outcome: Outcome::NotStarted {
                    message: format!("cannot start a thread: {err}"),
                },
                note: None,
            });
        }
    }
}

/// One attempt of a stage, on a worker thread: its commands, then its note, then `Done`.
fn run_work(work: &Work, tx: &SyncSender<WorkerMsg>) {
    let (outcome, leak) = run_commands(work, tx);
    // A group the runner ended itself (timeout, Ctrl-C) leaked nothing worth a word, unless
    // something escaped it.
    let stopped = work.control.stopping();
    let leak = leak.filter(|l| !stopped || *l == process::Leak::Escaped);
    let counts = work.junit.as_deref().and_then(|path| {
        let counts = junit::parse(&std::fs::read_to_string(path).ok()?)?;
        Some(counts.describe())
    });
    let notes: Vec<&str> = [counts.as_deref(), leak.map(process::Leak::describe)]
        .into_iter()
        .flatten()
        .collect();
    let note = (!notes.is_empty()).then(|| work.masker.mask_str(&notes.join("; ")).into_owned());
    let _ = tx.send(WorkerMsg::Done {
        of: work.attempt_key(),
        outcome,
        note,
    });
}

impl Work {
    fn attempt_key(&self) -> Attempt {
        Attempt {
            step: self.step,
            attempt: self.attempt,
        }
    }
}

/// Runs the stage's commands one after the other until one fails; says how the stage ended
/// and whether processes leaked.
fn run_commands(work: &Work, tx: &SyncSender<WorkerMsg>) -> (Outcome, Option<process::Leak>) {
    if !work.dir.is_dir() {
        let message = format!("the folder {} does not exist", work.dir.display());
        return (Outcome::NotStarted { message }, None);
    }
    let commands = match &work.commands {
        Ok(commands) => commands,
        Err(message) => {
            let message = work.masker.mask_str(message).into_owned();
            return (Outcome::NotStarted { message }, None);
        }
    };
    let mut leak = None;
    for command in commands {
        if work.control.stopping() {
            let outcome = Outcome::Failed {
                code: None,
                signal: Some(SIGTERM),
            };
            return (outcome, leak);
        }
        let spawned = process::spawn(&Spawn {
            command,
            dir: &work.dir,
            env: &work.env,
            interactive: work.interactive,
            die_with_runner: work.watchdog.is_none(),
        });
        let running = match spawned {
            Ok(running) => running,
            Err(err) => {
                let message = format!("{}: {err}", command.program);
                let message = work.masker.mask_str(&message).into_owned();
                return (Outcome::NotStarted { message }, leak);
            }
        };
        let target = running.target();
        if let (Some(watchdog), true) = (&work.watchdog, target.group) {
            watchdog.watch(target.id);
        }
        work.control.started(target.id);
        let of = work.attempt_key();
        let mut masked = work.masker.stream();
        let send = |bytes: Vec<u8>| {
            if !bytes.is_empty() {
                let _ = tx.send(WorkerMsg::Output {
                    of,
                    bytes,
                    elapsed: work.start.elapsed(),
                });
            }
        };
        let ended = running.stream(|bytes| send(masked.push(&bytes)));
        send(masked.finish());
        if let (Some(watchdog), true) = (&work.watchdog, target.group) {
            watchdog.unwatch(target.id);
        }
        let ended = match ended {
            Ok(ended) => ended,
            Err(err) => {
                let message = format!("reading the output of {}: {err}", command.program);
                return (Outcome::NotStarted { message }, leak);
            }
        };
        leak = leak.or(ended.leak);
        match ended.outcome {
            Outcome::Passed => {}
            Outcome::Failed {
                code: Some(code), ..
            } if command.also_ok.contains(&code) => {}
            failed => return (failed, leak),
        }
    }
    (Outcome::Passed, leak)
}
