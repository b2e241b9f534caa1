//! Why a run stops early: Ctrl-C, SIGTERM, SIGHUP, pydeployer's own failure (a log it
//! cannot write), or its front end's wish (`watch --files`: the files changed, start again).
//! Set from signal handlers, the reporter and the front end, polled by the runner.
//!
//! The handlers are installed once per process and stay; outside a run they act as if they
//! were not there (the signal's default action: pydeployer ends), so that a Ctrl-C between two
//! runs of the menu, or while waiting for the lock, still ends the program. A front end that
//! runs one run after another by itself (`watch`, `schedule run`) [holds](Stop::hold) the
//! signals instead: between runs they are counted too, and it decides when to end.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::exit;

/// The signals that stop a run.
const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

#[derive(Debug, Default)]
pub struct Stop {
    /// A run is in progress: signals are counted, not acted on by default.
    active: AtomicBool,
    /// Stopping signals received during this run.
    signals: AtomicUsize,
    /// The first of them.
    first: AtomicI32,
    /// The run cannot go on (its log cannot be written).
    failed: AtomicBool,
    /// The front end asked the run to stop (and will start another).
    cancelled: AtomicBool,
    /// A front end counts the signals between runs too (see [`Stop::hold`]).
    held: AtomicBool,
}

/// What the runner should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Go on.
    None,
    /// End the running stages politely (TERM, then KILL after the grace period) and start
    /// nothing more; the run exits with this code.
    Stop { exit_code: i32 },
    /// A second signal: KILL the running stages now.
    Kill { exit_code: i32 },
}

/// The process's one `Stop`, which the signal handlers update.
static PROCESS: OnceLock<Arc<Stop>> = OnceLock::new();
/// Whether installing the handlers worked (done once).
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

impl Stop {
    /// The process's `Stop`, reset for a new run, with INT, TERM and HUP counted until the
    /// returned guard is dropped.
    pub fn for_run() -> io::Result<(Arc<Stop>, RunGuard)> {
        let stop = Arc::clone(PROCESS.get_or_init(|| Arc::new(Stop::default())));
        let installed = INSTALLED.get_or_init(|| install(&stop).map_err(|e| e.to_string()));
        if let Err(err) = installed {
            return Err(io::Error::other(err.clone()));
        }
        if !stop.held.load(Ordering::SeqCst) {
            // Held, what came between runs is the front end's to see, and stays.
            stop.signals.store(0, Ordering::SeqCst);
            stop.first.store(0, Ordering::SeqCst);
            stop.cancelled.store(false, Ordering::SeqCst);
        }
        stop.failed.store(false, Ordering::SeqCst);
        stop.active.store(true, Ordering::SeqCst);
        Ok((
            Arc::clone(&stop),
            RunGuard {
                stop: Arc::clone(&stop),
            },
        ))
    }

    /// For a front end that starts runs by itself, one after another (`watch`, `schedule
    /// run`): INT, TERM and HUP are counted from now until the guard is dropped, between runs
    /// too, so that it can end the way a run does (130, 143, 129) rather than die of the
    /// signal, and nothing it started is left behind. A run started meanwhile stops at once
    /// when a signal came before it.
    pub fn hold() -> io::Result<(Arc<Stop>, HoldGuard)> {
        let stop = Arc::clone(PROCESS.get_or_init(|| Arc::new(Stop::default())));
        let installed = INSTALLED.get_or_init(|| install(&stop).map_err(|e| e.to_string()));
        if let Err(err) = installed {
            return Err(io::Error::other(err.clone()));
        }
        stop.signals.store(0, Ordering::SeqCst);
        stop.first.store(0, Ordering::SeqCst);
        stop.cancelled.store(false, Ordering::SeqCst);
        stop.held.store(true, Ordering::SeqCst);
        stop.active.store(true, Ordering::SeqCst);
        Ok((
            Arc::clone(&stop),
            HoldGuard {
                stop: Arc::clone(&stop),
            },
        ))
    }

    /// The exit code a signal received while held asks for (130, 143, 129), if one came.
    /// Outside [`Stop::hold`] a signal ends the process, so this is `None`.
    pub fn interrupted() -> Option<i32> {
        let stop = PROCESS.get()?;
        (stop.held.load(Ordering::SeqCst) && stop.signals.load(Ordering::SeqCst) > 0)
            .then(|| stop.signal_exit_code())
    }

    /// The front end wants the run in progress (or the next one to start) stopped: its
    /// stages end as for Ctrl-C, and it exits 130. A signal still decides the exit code.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Forgets an earlier [`cancel`](Stop::cancel), before the front end starts the next run.
    pub fn clear_cancel(&self) {
        self.cancelled.store(false, Ordering::SeqCst);
    }

    /// Whether a stopping signal came (since the run, or the hold, began).
    pub fn signalled(&self) -> bool {
        self.signals.load(Ordering::SeqCst) > 0
    }

    /// 128 + the first signal, as shells report a process it ended.
    fn signal_exit_code(&self) -> i32 {
        match self.first.load(Ordering::SeqCst) {
            libc::SIGTERM => exit::TERMINATED,
            libc::SIGHUP => exit::HANGUP,
            _ => exit::INTERRUPTED,
        }
    }

    /// The run must stop because pydeployer itself cannot go on.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    /// Counts `signal` as received (also when an interactive stage got the user's Ctrl-C
    /// instead of us).
    pub fn record(&self, signal: i32) {
        let _ = self
            .first
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.signals.fetch_add(1, Ordering::SeqCst);
    }

    /// The terminal hung up (SIGHUP came first).
    pub fn hung_up(&self) -> bool {
        self.signals.load(Ordering::SeqCst) > 0 && self.first.load(Ordering::SeqCst) == libc::SIGHUP
    }

    pub fn request(&self) -> Request {
        let signals = self.signals.load(Ordering::SeqCst);
        let exit_code = self.signal_exit_code();
        match signals {
            0 if self.failed.load(Ordering::SeqCst) => Request::Stop {
                exit_code: exit::STAGE_FAILED,
            },
            0 if self.cancelled.load(Ordering::SeqCst) => Request::Stop {
                exit_code: exit::INTERRUPTED,
            },
            0 => Request::None,
            1 => Request::Stop { exit_code },
            _ => Request::Kill { exit_code },
        }
    }
}

fn install(stop: &Arc<Stop>) -> io::Result<()> {
    for signal in SIGNALS {
        if ignored(signal) {
            // `nohup pydeployer run`, or a `&` job of a script: whoever started us chose to
            // have this signal ignored, and it stays so.
            continue;
        }
        let stop = Arc::clone(stop);
        // SAFETY: the handler only touches atomics, or ends the process with the signal's
        // default action (signal-hook's emulation is made for use in a handler).
        unsafe {
            signal_hook::low_level::register(signal, move || {
                if stop.active.load(Ordering::SeqCst) {
                    stop.record(signal);
                } else {
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                }
            })
        }?;
    }
    Ok(())
}

/// Whether `signal` was ignored when pydeployer started.
fn ignored(signal: i32) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &raw mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Marks the end of the run: signals take their default action again.
pub struct RunGuard {
    stop: Arc<Stop>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if !self.stop.held.load(Ordering::SeqCst) {
            self.stop.active.store(false, Ordering::SeqCst);
        }
    }
}

/// Marks the end of a front end's [hold](Stop::hold): signals take their default action again.
pub struct HoldGuard {
    stop: Arc<Stop>,
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.stop.held.store(false, Ordering::SeqCst);
        self.stop.active.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_signal_stops_second_kills_and_the_first_decides_the_exit_code() {
        let stop = Stop::default();
        assert_eq!(stop.request(), Request::None);
        stop.record(libc::SIGTERM);
        assert_eq!(stop.request(), Request::Stop { exit_code: 143 });
        stop.record(libc::SIGINT);
        assert_eq!(stop.request(), Request::Kill { exit_code: 143 });
    }

    #[test]
    fn a_hangup_exits_129() {
        let stop = Stop::default();
        stop.record(libc::SIGHUP);
        assert_eq!(stop.request(), Request::Stop { exit_code: 129 });
    }

    #[test]
    fn a_cancel_stops_with_130_and_a_signal_still_decides() {
        let stop = Stop::default();
        stop.cancel();
        assert_eq!(stop.request(), Request::Stop { exit_code: 130 });
        assert!(!stop.signalled());
        stop.record(libc::SIGTERM);
        assert_eq!(stop.request(), Request::Stop { exit_code: 143 });
        assert!(stop.signalled());
    }

    #[test]
    fn a_failure_of_the_runner_stops_with_exit_1() {
        let stop = Stop::default();
        stop.fail();
        assert_eq!(stop.request(), Request::Stop { exit_code: 1 });
    }
}
