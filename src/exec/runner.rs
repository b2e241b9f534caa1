//! Runs a plan in one thread: the scheduler's decisions, every running command's output and
//! exit, timeouts, signals, events.
//!
//! One loop polls the output pipe and the process fd (pidfd) of every running command, so a
//! stage costs what make's does: a process, and no thread, channel or wake-up of ours. Each
//! poll reads at most one chunk per pipe and hands it to `report` before reading more, so a
//! stage that prints faster than the reporter writes is slowed down instead of filling memory,
//! and no stage's output can starve another's (or a timeout).
//!
//! The runner does not communicate with the outside world except through the `report`
//! callback it is given: every event goes there, in order.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actions::{self, CommandLine, RunContext};
use crate::error::exit;
use crate::events::{
    Outcome, RunEvent, RunHeader, RunSummary, SkipReason, StageResult, SummaryRow,
};
use crate::exec::boundary::Boundary;
use crate::exec::process::{
    self, Ended, LEAK_WAIT, Leak, Running, SIGKILL, SIGTERM, Spawn, Target,
};
use crate::exec::scheduler::{Decision, Scheduler, StepPolicy};
use crate::exec::stop::{Request, Stop};
use crate::exec::watchdog::Watchdog;
use crate::mask::Masker;
use crate::pipeline::{Pipeline, StageName};
use crate::plan::Plan;
use crate::plan::cache::Verdict;
use crate::store;
use crate::store::passed::Passed;

/// After KILL, how long a stage's main process may take to go before the stage is given up
/// on (at least; the grace period when it is longer).
const GIVE_UP_AFTER_KILL: Duration = Duration::from_secs(2);

/// How long an action's probe (`git rev-parse HEAD`) may take: a question answered now or
/// not at all (a hung filesystem must not hold the run).
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// The longest the loop sleeps: signals are noticed at least this often.
const POLL: Duration = Duration::from_millis(100);

pub struct RunOptions {
    pub jobs: usize,
    pub context: RunContext,
    /// Between TERM and KILL when a stage times out or the run is interrupted.
    pub grace: Duration,
    /// Ends the stages' process groups if the runner dies.
    pub watchdog: Option<Arc<Watchdog>>,
    /// Hides secrets in every event, where events leave the runner.
    pub masker: Masker,
    /// Which commit passed which stages in earlier runs, for a deploy's gate.
    pub passed: Passed,
    /// Stages held back, and why (a deploy that needs an approval nobody can give).
    pub held: BTreeMap<StageName, SkipReason>,
    /// Stages that ask the person at the terminal (an approval): they run alone.
    pub asks: std::collections::BTreeSet<StageName>,
    /// Where stages with `cache:` are looked up and recorded; `None`: no cache at all.
    pub cache: Option<CacheOptions>,
}

/// The cache of a run.
pub struct CacheOptions {
    /// `.pydeployer/`.
    pub state_dir: PathBuf,
    /// This run's log stem, recorded with each entry.
    pub run: String,
    /// `--no-cache`: look nothing up (still record).
    pub no_cache: bool,
}

/// A stage attempt in progress.
struct Active {
    attempt: u32,
    started: Instant,
    deadline: Option<Instant>,
    /// Where ending it stands, once the runner decided to (timeout or interrupt).
    ending: Ending,
    timed_out: bool,
    /// The command running now.
    running: Option<Current>,
    /// The commands still to run after it.
    rest: VecDeque<CommandLine>,
    dir: PathBuf,
    env: BTreeMap<String, Option<String>>,
    interactive: bool,
    leak: Option<Leak>,
    /// The answers of the action's probes so far, in order, for its post-step.
    answers: Vec<String>,
    /// What the commands that keep their output printed (bounded), for the post-step.
    kept: Vec<u8>,
    /// A command failed: only the probes after it still run, then the stage ends so.
    failed: Option<Outcome>,
    /// `cache:`: the key to record when the stage passes.
    cache_key: Option<String>,
    /// Said in the stage's note: a cache entry that could not be trusted, say.
    cache_warning: Option<String>,
    /// The last line of output, for an action whose post-step reads it.
    last_line: Option<LastLine>,
    /// The deploy's gate let it through only because of `--force`.
    forced: bool,
    /// The environment's health checks so far: the deploy's, then its rollback's.
    health: Vec<crate::events::HealthReport>,
    /// A health check failed: the commands for that case run.
    unhealthy: bool,
    /// The person at the terminal said yes.
    approved: Option<crate::events::Approval>,
    /// The person at the terminal said no: nothing was pushed, nothing is recorded.
    declined: bool,
}

/// The last non-empty line of a stage's output, kept as it streams by (at most 4 KiB of it).
#[derive(Default)]
struct LastLine {
    done: Vec<u8>,
    partial: Vec<u8>,
}

impl LastLine {
    const MAX: usize = 4096;

    fn push(&mut self, bytes: &[u8]) {
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            let (text, ended) = match line.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (line, false),
            };
            let room = Self::MAX.saturating_sub(self.partial.len());
            self.partial
                .extend_from_slice(&text[..text.len().min(room)]);
            if ended {
                if !self.partial.iter().all(u8::is_ascii_whitespace) {
                    self.done = std::mem::take(&mut self.partial);
                }
                self.partial.clear();
            }
        }
    }

    fn text(&self) -> String {
        let last = if self.partial.iter().all(u8::is_ascii_whitespace) {
            &self.done
        } else {
            &self.partial
        };
        String::from_utf8_lossy(last).into_owned()
    }
}

/// The command a stage is running.
struct Current {
    running: Running,
    /// Its program, for messages.
    program: String,
    /// Exit codes other than 0 that mean success.
    also_ok: Vec<i32>,
    /// A probe: its output is its answer (kept, not shown), and any exit code is fine.
    answer: Option<Vec<u8>>,
    /// A probe is given up on at this instant.
    limit: Option<Instant>,
    /// A copy of its output is kept (see `CommandLine::keep_output`).
    keep: bool,
    /// A health check: how it ends is recorded, and a failure makes the stage unhealthy.
    health: bool,
    /// The approval question: exit 0 is a yes.
    approval: bool,
    started: Instant,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    No,
    /// TERM sent; KILL at this instant.
    Termed(Instant),
    /// KILL sent; if the stage has not ended at this instant, it is given up on.
    Killed(Instant),
}

#[derive(Default, Clone)]
struct Tally {
    attempts: u32,
    duration: Duration,
    result: Option<(StageResult, String)>,
}

/// What a polled file descriptor belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watched {
    Output(usize),
    Exit(usize),
}

/// Runs every step of `plan`, reporting each event to `report`, masked; returns the summary
/// as reported (the last event). `stop` is polled: once it asks, running stages are ended
/// (TERM, then KILL; at once on a second signal) and nothing new starts.
pub fn execute(
    pipeline: &Pipeline,
    plan: &Plan,
    header: RunHeader,
    options: &RunOptions,
    stop: &Stop,
    report: impl FnMut(&RunEvent),
) -> RunSummary {
    // Processes orphaned in a stage become the runner's children, to be found and reaped.
    super::family::become_subreaper();
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
                // The approval question reads the terminal too.
                exclusive: stage.interactive || options.asks.contains(&stage.name),
                held: options.held.get(&stage.name).cloned(),
            }
        })
        .collect();
    let mut run = Run {
        pipeline,
        plan,
        options,
        out: Outlet {
            boundary: Boundary::new(options.masker.clone()),
            report,
        },
        start: Instant::now(),
        scheduler: Scheduler::new(policies, options.jobs),
        active: BTreeMap::new(),
        tally: vec![Tally::default(); plan.steps.len()],
        keys: store::cache::Keys::new(crate::actions::environment),
        stopped: None,
        killed: false,
        lingering: Vec::new(),
        passed_now: std::collections::BTreeSet::new(),
    };
    run.out.send(RunEvent::RunStarted(header));

    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut owners: Vec<Watched> = Vec::new();
    loop {
        run.obey(stop.request());
        if run.stopped.is_none() {
            while let Some(decision) = run.scheduler.next_decision() {
                match decision {
                    Decision::Start { step, attempt } => run.start(step, attempt, stop),
                    Decision::Skip { step, reason } => run.skip(step, reason),
                }
            }
        }
        // Done when nothing runs, nothing more will start, and no group left behind by a stage
        // still waits for its KILL.
        let finished = run.stopped.is_some() || run.scheduler.is_done();
        if run.active.is_empty() && finished && run.lingering.is_empty() {
            break;
        }

        fds.clear();
        owners.clear();
        for (&step, a) in &run.active {
            if let Some(Current { running, .. }) = &a.running {
                for (fd, owner) in [
                    (running.output_fd(), Watched::Output(step)),
                    (running.exit_fd(), Watched::Exit(step)),
                ] {
                    if let Some(fd) = fd {
                        fds.push(libc::pollfd {
                            fd,
                            events: libc::POLLIN,
                            revents: 0,
                        });
                        owners.push(owner);
                    }
                }
            }
        }
        let wake = run.next_wake();
        if let Err(err) = process::poll(&mut fds, wake.saturating_duration_since(Instant::now())) {
            // Cannot wait for anything: stop, and do not spin while the stages end.
            if stop.request() == Request::None {
                crate::errln!("pydeployer: cannot wait for the stages: {err}");
            }
            stop.fail();
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut exited = Vec::new();
        for (pollfd, owner) in fds.iter().zip(&owners) {
            if pollfd.revents == 0 {
                continue;
            }
            match *owner {
                Watched::Output(step) => {
                    run.read(step);
                    // The output closed: the process has most likely exited too; look now
                    // rather than sleep once more until its process fd says so.
                    if run.output_closed(step) {
                        exited.push(step);
                    }
                }
                Watched::Exit(step) => exited.push(step),
            }
        }
        run.check(&exited, Instant::now(), stop);
        // Deadlines are checked after every poll: a stage that never stops printing must not
        // keep its own (or anyone's) timeout from firing.
        run.enforce_deadlines(Instant::now(), stop);
    }
    // No stage is active (each main process was waited for, or given up on): every exited
    // child of a stage's session can be reaped.
    super::family::reap_orphans();
    run.summary(log)
}

/// The one way out of the runner: every event passes the [`Boundary`] (and is masked there).
struct Outlet<F> {
    boundary: Boundary,
    report: F,
}

impl<F: FnMut(&RunEvent)> Outlet<F> {
    fn send(&mut self, event: RunEvent) -> RunEvent {
        self.boundary.pass(event, &mut self.report)
    }
}

/// The state of one run, owned by the calling thread.
struct Run<'a, F: FnMut(&RunEvent)> {
    pipeline: &'a Pipeline,
    plan: &'a Plan,
    options: &'a RunOptions,
    out: Outlet<F>,
    start: Instant,
    scheduler: Scheduler,
    active: BTreeMap<usize, Active>,
    tally: Vec<Tally>,
    /// The cache keys of the stages so far.
    keys: store::cache::Keys,
    /// The run was told to stop, and will exit with this code.
    stopped: Option<i32>,
    /// The running stages were killed without a grace period (a second Ctrl-C).
    killed: bool,
    /// Groups whose command ended while other processes of theirs ran on: they were sent TERM,
    /// and get KILL at the instant given if still there.
    lingering: Vec<(Instant, Target)>,
    /// The stages that passed in this run, for a deploy's gate.
    passed_now: std::collections::BTreeSet<StageName>,
}

impl<F: FnMut(&RunEvent)> Run<'_, F> {
    /// The latest instant the loop may sleep until.
    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + POLL;
        for a in self.active.values() {
            let ending = match a.ending {
                Ending::No => a.deadline,
                Ending::Termed(at) | Ending::Killed(at) => Some(at),
            };
            let command = a.running.as_ref().map(|c| c.running.deadline());
            let limit = a.running.as_ref().and_then(|c| c.limit);
            for at in [ending, command, limit].into_iter().flatten() {
                wake = wake.min(at);
            }
        }
        for (at, _) in &self.lingering {
            wake = wake.min(*at);
        }
        wake
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
                    a.ending = Ending::Killed(now + grace.max(GIVE_UP_AFTER_KILL));
                    signal(a, SIGKILL);
                }
                for (at, target) in &mut self.lingering {
                    target.signal(SIGKILL);
                    *at = now;
                }
            }
            Request::None | Request::Stop { .. } | Request::Kill { .. } => {}
        }
    }

    fn start(&mut self, step: usize, attempt: u32, stop: &Stop) {
        let (pipeline, options) = (self.pipeline, self.options);
        let stage = &pipeline.stages[self.plan.steps[step].stage];
        let (mut cache_key, mut cache_warning) = (None, None);
        if let (Some(cache), Some(spec), 1) = (&options.cache, &stage.cache, attempt) {
            match self.cache_verdict(cache, stage, spec) {
                Ok((key, Verdict::Hit { since })) => {
                    let _ = key;
                    self.scheduler.finished(step, true);
                    let reason = SkipReason::Cached { since };
                    self.tally[step].result = Some((StageResult::Cached, reason.describe()));
                    self.out.send(RunEvent::StageSkipped {
                        stage: stage.name.clone(),
                        reason,
                        elapsed: self.start.elapsed(),
                    });
                    return;
                }
                Ok((key, Verdict::Miss { warning })) => {
                    cache_key = Some(key);
                    cache_warning = warning;
                }
                Err(err) => cache_warning = Some(format!("cache: {err}; the stage ran")),
            }
        }
        let commands = actions::commands(pipeline, stage, &options.context);
        self.out.send(RunEvent::StageStarted {
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
        let dir = pipeline.workdir(stage);
        let not_started = match &commands {
            Err(message) => Some(message.clone()),
            Ok(_) if !dir.is_dir() => Some(format!("the folder {} does not exist", dir.display())),
            Ok(_) => None,
        };
        self.active.insert(
            step,
            Active {
                attempt,
                started: now,
                // A timeout too far away to represent is no timeout.
                deadline: stage.timeout.and_then(|t| now.checked_add(t)),
                ending: Ending::No,
                timed_out: false,
                running: None,
                rest: commands.unwrap_or_default().into(),
                dir,
                env: actions::environment(pipeline, stage),
                interactive: stage.interactive,
                leak: None,
                answers: Vec::new(),
                kept: Vec::new(),
                failed: None,
                last_line: actions::wants_last_line(stage).then(LastLine::default),
                forced: false,
                cache_key,
                cache_warning,
                health: Vec::new(),
                unhealthy: false,
                approved: None,
                declined: false,
            },
        );
        match not_started {
            Some(message) => self.complete(step, Outcome::NotStarted { message }, stop),
            None => self.next_command(step, stop),
        }
    }

    /// The stage's key, and whether it is a hit.
    fn cache_verdict(
        &mut self,
        cache: &CacheOptions,
        stage: &crate::pipeline::Stage,
        spec: &crate::pipeline::CacheSpec,
    ) -> std::io::Result<(String, Verdict)> {
        let key = self.keys.key(self.pipeline, stage)?;
        let entry = store::cache::lookup(&cache.state_dir, stage.name.as_str());
        let dir = self.pipeline.workdir(stage);
        let missing = store::cache::missing_output(&dir, &spec.outputs)?;
        let verdict = crate::plan::cache::decide(&key, entry, missing.as_deref(), cache.no_cache);
        Ok((key, verdict))
    }

    /// Starts the stage's next command, or completes the stage when there is none left (or
    /// it is being ended, or the command cannot start).
    fn next_command(&mut self, step: usize, stop: &Stop) {
        let Some(a) = self.active.get_mut(&step) else {
            return;
        };
        if a.ending != Ending::No {
            let outcome = Outcome::Failed {
                code: None,
                signal: Some(SIGTERM),
            };
            return self.complete(step, outcome, stop);
        }
        let Some(command) = a.rest.pop_front() else {
            let outcome = a.failed.take().unwrap_or(if a.unhealthy {
                // Rolled back or not, the deploy did not give a healthy environment.
                Outcome::Failed {
                    code: Some(1),
                    signal: None,
                }
            } else {
                Outcome::Passed
            });
            return self.complete(step, outcome, stop);
        };
        if command.if_unhealthy && !a.unhealthy {
            return self.next_command(step, stop);
        }
        if command.gate {
            let stage = &self.pipeline.stages[self.plan.steps[step].stage];
            let context = &self.options.context;
            let (passed, now) = (&self.options.passed, &self.passed_now);
            match actions::gate(self.pipeline, stage, context, &a.answers, passed, now) {
                Ok(forced) => {
                    a.forced = forced;
                    self.next_command(step, stop);
                }
                Err(message) => self.complete(step, Outcome::NotStarted { message }, stop),
            }
            return;
        }

        let spawned = process::spawn(&Spawn {
            command: &command,
            dir: &a.dir,
            env: &a.env,
            // The approval question reads the terminal.
            interactive: a.interactive || command.approval,
            die_with_runner: self.options.watchdog.is_none(),
            announce: self.options.watchdog.as_ref().and_then(|w| w.announce_fd()),
        });
        match spawned {
            Ok(running) => {
                if let Some(watchdog) = &self.options.watchdog {
                    watchdog.watch(running.target().id);
                }
                a.running = Some(Current {
                    running,
                    answer: command.probe.then(Vec::new),
                    limit: command.probe.then(|| Instant::now() + PROBE_LIMIT),
                    keep: command.keep_output,
                    program: command.program,
                    also_ok: command.also_ok,
                    health: command.health,
                    approval: command.approval,
                    started: Instant::now(),
                });
            }
            Err(err) => {
                let message = format!("{}: {err}", command.program);
                self.complete(step, Outcome::NotStarted { message }, stop);
            }
        }
    }

    fn output_closed(&self, step: usize) -> bool {
        self.active
            .get(&step)
            .and_then(|a| a.running.as_ref())
            .is_some_and(|c| c.running.output_fd().is_none())
    }

    /// Output is readable for `step`: reads one chunk and reports what can be shown.
    fn read(&mut self, step: usize) {
        let Some(a) = self.active.get_mut(&step) else {
            return;
        };
        let Some(current) = &mut a.running else {
            return;
        };
        let stage = &self.pipeline.stages[self.plan.steps[step].stage].name;
        let (out, start, answer) = (&mut self.out, self.start, &mut current.answer);
        let last = &mut a.last_line;
        let mut kept = current.keep.then_some(&mut a.kept);
        let result = current
            .running
            .read(|bytes| emit(out, answer, last, kept.as_deref_mut(), stage, start, bytes));
        if let Err(err) = result {
            let message = format!("reading the output of {}: {err}", current.program);
            self.let_go(step);
            self.complete_with_message(step, &message);
        }
    }

    /// Looks at the commands whose process fd fired (`exited`) or whose deadline passed, and
    /// at commands that ended; starts what comes next.
    fn check(&mut self, exited: &[usize], now: Instant, stop: &Stop) {
        let steps: Vec<usize> = self.active.keys().copied().collect();
        for step in steps {
            let Some(a) = self.active.get_mut(&step) else {
                continue;
            };
            let Some(current) = &mut a.running else {
                continue;
            };
            let running = &mut current.running;
            let stage = &self.pipeline.stages[self.plan.steps[step].stage].name;
            if exited.contains(&step) || now >= running.deadline() {
                let (out, start, answer) = (&mut self.out, self.start, &mut current.answer);
                let last = &mut a.last_line;
                let mut kept = current.keep.then_some(&mut a.kept);
                let checked = running.check(now, |b| {
                    emit(out, answer, last, kept.as_deref_mut(), stage, start, b);
                });
                if let Err(err) = checked {
                    let message = format!("waiting for {}: {err}", current.program);
                    self.let_go(step);
                    self.complete_with_message(step, &message);
                    continue;
                }
            }
            if let Some(ended) = running.ended() {
                self.command_ended(step, ended, stop);
            }
        }
        let mut still = Vec::new();
        for (at, target) in self.lingering.drain(..) {
            let gone = !target.has_members();
            if at > now && !gone {
                still.push((at, target));
                continue;
            }
            if !gone {
                target.signal(SIGKILL);
            }
            if let Some(watchdog) = &self.options.watchdog {
                watchdog.unwatch(target.id);
            }
        }
        self.lingering = still;
    }

    /// A command of the stage ended: the next one starts, or the stage is complete.
    fn command_ended(&mut self, step: usize, ended: Ended, stop: &Stop) {
        let Some(a) = self.active.get_mut(&step) else {
            return;
        };
        let Some(Current {
            mut running,
            also_ok,
            answer,
            health,
            approval,
            started,
            ..
        }) = a.running.take()
        else {
            return;
        };
        match running.linger.take() {
            // Processes of its group outlived it and were sent TERM: the group stays watched
            // until it is gone or has had its KILL.
            Some(lingering) => self.lingering.push((Instant::now() + LEAK_WAIT, lingering)),
            None => {
                if let Some(watchdog) = &self.options.watchdog {
                    watchdog.unwatch(running.target().id);
                }
            }
        }
        drop(running);
        a.leak = a.leak.or(ended.leak);
        if let Some(answer) = answer {
            a.answers
                .push(String::from_utf8_lossy(&answer).into_owned());
            return self.next_command(step, stop);
        }
        if health && a.ending == Ending::No {
            let healthy = ended.outcome.passed();
            a.health.push(crate::events::HealthReport {
                result: if healthy {
                    crate::events::HealthResult::Healthy
                } else {
                    crate::events::HealthResult::Unhealthy
                },
                took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
            a.unhealthy |= !healthy;
            return self.next_command(step, stop);
        }
        if approval && a.ending == Ending::No {
            if ended.outcome.passed() {
                a.approved = Some(crate::events::Approval {
                    by: crate::exec::process::user_name(),
                    at: chrono::Local::now().fixed_offset(),
                });
                return self.next_command(step, stop);
            }
            a.declined = true;
            let message = "not approved: nothing was pushed".to_owned();
            return self.complete(step, Outcome::NotStarted { message }, stop);
        }
        match ended.outcome {
            Outcome::Passed => self.next_command(step, stop),
            Outcome::Failed {
                code: Some(code), ..
            } if also_ok.contains(&code) => self.next_command(step, stop),
            // The action's probes still answer (what did the failed deploy leave?).
            failed if a.rest.iter().any(|c| c.probe) => {
                a.rest.retain(|c| c.probe);
                a.failed = Some(failed);
                self.next_command(step, stop);
            }
            failed => self.complete(step, failed, stop),
        }
    }

    /// Gives up on the stage's running command (its output cannot be read, or its state not
    /// known): KILL its group, tell the watchdog, and let the process go.
    fn let_go(&mut self, step: usize) {
        let Some(current) = self.active.get_mut(&step).and_then(|a| a.running.take()) else {
            return;
        };
        let target = current.running.target();
        target.signal(SIGKILL);
        if let Some(watchdog) = &self.options.watchdog {
            watchdog.unwatch(target.id);
        }
    }

    fn complete_with_message(&mut self, step: usize, message: &str) {
        let message = message.to_owned();
        // No Stop at hand here, and none needed: a stage that could not be read did not get
        // a Ctrl-C.
        self.complete_inner(step, Outcome::NotStarted { message }, None);
    }

    /// The stage's last command ended (or none could start): its note, then [`finish`].
    fn complete(&mut self, step: usize, outcome: Outcome, stop: &Stop) {
        self.complete_inner(step, outcome, Some(stop));
    }

    fn complete_inner(&mut self, step: usize, outcome: Outcome, stop: Option<&Stop>) {
        let Some(a) = self.active.get(&step) else {
            return;
        };
        // A group the runner ended itself (timeout, Ctrl-C) leaked nothing worth a word, unless
        // something escaped it.
        let stopping = a.ending != Ending::No;
        let leak = a.leak.filter(|l| !stopping || *l == Leak::Escaped);
        let stage = &self.pipeline.stages[self.plan.steps[step].stage];
        let last_line = a.last_line.as_ref().map(LastLine::text).unwrap_or_default();
        let post = actions::post_step(
            self.pipeline,
            stage,
            &self.options.context,
            &actions::Finished {
                answers: &a.answers,
                output: &a.kept,
                outcome: &outcome,
                last_line: &last_line,
            },
        );
        let forced = a.forced;
        let deploy = post.deploy.filter(|_| !a.declined).map(|deploy| {
            let approved_by = deploy.approved_by.or_else(|| a.approved.clone());
            let health = a.health.first().cloned();
            let auto_rollback = deploy.auto_rollback.map(|rollback| {
                Box::new(crate::events::Deployed {
                    health: a.health.get(1).cloned(),
                    ..*rollback
                })
            });
            crate::events::Deployed {
                forced,
                approved_by,
                health,
                auto_rollback,
                ..deploy
            }
        });
        let health = deploy
            .as_ref()
            .and_then(crate::events::Deployed::health_note);
        let notes: Vec<&str> = [
            post.note.as_deref(),
            health.as_deref(),
            leak.map(Leak::describe),
            a.cache_warning.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        let post = actions::PostStep {
            note,
            deploy,
            ..post
        };
        self.finish(step, outcome, post, stop);
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
        self.out.send(RunEvent::StageSkipped {
            stage: name,
            reason,
            elapsed: self.start.elapsed(),
        });
    }

    /// An attempt ended (or was given up on): tell the scheduler, tally, report.
    fn finish(
        &mut self,
        step: usize,
        outcome: Outcome,
        post: actions::PostStep,
        stop: Option<&Stop>,
    ) {
        let actions::PostStep {
            note,
            details,
            deploy,
            publish,
        } = post;
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
        if let (true, Some(stop)) = (stage.interactive && ctrl_c, stop) {
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
        if passed {
            self.passed_now.insert(stage.name.clone());
        }
        let will_retry = self.stopped.is_none() && self.scheduler.finished(step, passed);
        // Only a pass is remembered: a failed run is never a hit.
        let mut note = note;
        if let (true, Some(key), Some(cache)) = (passed, &a.cache_key, &self.options.cache) {
            if let Err(err) =
                store::cache::save(&cache.state_dir, stage.name.as_str(), key, &cache.run)
            {
                let warning = format!("cache: could not record this run: {err}");
                note = Some(match note {
                    Some(note) => format!("{note}; {warning}"),
                    None => warning,
                });
            }
        }
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
        self.out.send(RunEvent::StageFinished {
            stage: stage.name.clone(),
            attempt: a.attempt,
            outcome,
            note,
            details,
            deploy: deploy.filter(|_| !will_retry).map(Box::new),
            publish: publish.filter(|_| !will_retry),
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
                    signal(a, SIGKILL);
                    a.ending = Ending::Killed(now + grace.max(GIVE_UP_AFTER_KILL));
                }
                Ending::Killed(at) if at <= now => abandoned.push(step),
                _ => {}
            }
        }
        // A probe that gives no answer in time gives none: its group is killed, and the stage
        // goes on without it.
        let unanswered: Vec<usize> = self
            .active
            .iter()
            .filter(|(_, a)| {
                let limit = a.running.as_ref().and_then(|c| c.limit);
                a.ending == Ending::No && limit.is_some_and(|at| at <= now)
            })
            .map(|(&step, _)| step)
            .collect();
        for step in unanswered {
            self.let_go(step);
            if let Some(a) = self.active.get_mut(&step) {
                a.answers.push(String::new());
            }
            self.next_command(step, stop);
        }
        for step in abandoned {
            // Still not ended after KILL: the output is held by a process that left the
            // group, or the main process does not die (uninterruptible sleep). Its pipe and
            // process are let go of; the watchdog is told nothing more about it.
            if let Some(a) = self.active.get_mut(&step) {
                a.running = None;
            }
            let note = Leak::Escaped.describe().to_owned();
            let outcome = Outcome::Failed {
                code: None,
                signal: Some(SIGKILL),
            };
            let post = actions::PostStep {
                note: Some(note),
                ..actions::PostStep::default()
            };
            self.finish(step, outcome, post, Some(stop));
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
        match self.out.send(RunEvent::RunFinished(summary)) {
            RunEvent::RunFinished(summary) => summary,
            _ => unreachable!("the boundary keeps an event's kind"),
        }
    }
}

/// TERM now, KILL after the grace period; no further command of the stage starts.
fn end_attempt(a: &mut Active, now: Instant, grace: Duration) {
    a.ending = Ending::Termed(now + grace);
    signal(a, SIGTERM);
}

/// Sends `sig` to the stage's running command's group, if one runs.
fn signal(a: &Active, sig: i32) {
    if let Some(current) = &a.running {
        current.running.target().signal(sig);
    }
}

/// Reports output of `stage`, or keeps it as a probe's answer.
fn emit(
    out: &mut Outlet<impl FnMut(&RunEvent)>,
    answer: &mut Option<Vec<u8>>,
    last: &mut Option<LastLine>,
    kept: Option<&mut Vec<u8>>,
    stage: &StageName,
    start: Instant,
    bytes: Vec<u8>,
) {
    if let Some(last) = last
        && answer.is_none()
    {
        last.push(&bytes);
    }
    if let Some(answer) = answer {
        // An answer is a few lines (an object id, checksums); a probe that prints more is cut
        // short.
        let room = 16384usize.saturating_sub(answer.len());
        answer.extend_from_slice(&bytes[..bytes.len().min(room)]);
    } else if !bytes.is_empty() {
        if let Some(kept) = kept {
            let room = actions::KEPT_OUTPUT.saturating_sub(kept.len());
            kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        out.send(RunEvent::StageOutput {
            stage: stage.clone(),
            bytes,
            elapsed: start.elapsed(),
        });
    }
}
