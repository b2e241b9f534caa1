//! Why a run stops early: Ctrl-C, SIGTERM, or pydeployer's own failure (a log it cannot
//! write). Set from signal handlers and from the reporter, polled by the runner.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use signal_hook::SigId;

use crate::error::exit;

#[derive(Debug, Default)]
pub struct Stop {
    /// INT and TERM signals received so far.
    signals: AtomicUsize,
    /// The first of them.
    first: AtomicI32,
    /// The run cannot go on (its log cannot be written).
    failed: AtomicBool,
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

impl Stop {
    pub fn new() -> Arc<Self> {
        Arc::new(Stop::default())
    }

    /// Counts SIGINT and SIGTERM from now until the returned guard is dropped.
    pub fn watch_signals(self: &Arc<Self>) -> io::Result<SignalGuard> {
        let mut ids = Vec::new();
        for signal in [libc::SIGINT, libc::SIGTERM] {
            let stop = Arc::clone(self);
            // SAFETY: the handler only touches atomics, which is async-signal-safe.
            let id = unsafe {
                signal_hook::low_level::register(signal, move || {
                    let _ =
                        stop.first
                            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
                    stop.signals.fetch_add(1, Ordering::SeqCst);
                })
            }?;
            ids.push(id);
        }
        Ok(SignalGuard { ids })
    }

    /// The run must stop because pydeployer itself cannot go on.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    pub fn request(&self) -> Request {
        let signals = self.signals.load(Ordering::SeqCst);
        let exit_code = match self.first.load(Ordering::SeqCst) {
            libc::SIGTERM => exit::TERMINATED,
            _ => exit::INTERRUPTED,
        };
        match signals {
            0 if self.failed.load(Ordering::SeqCst) => Request::Stop {
                exit_code: exit::STAGE_FAILED,
            },
            0 => Request::None,
            1 => Request::Stop { exit_code },
            _ => Request::Kill { exit_code },
        }
    }

    #[cfg(test)]
    pub fn signal(&self, signal: i32) {
        let _ = self
            .first
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.signals.fetch_add(1, Ordering::SeqCst);
    }
}

/// Restores the signals' previous handling when dropped.
pub struct SignalGuard {
    ids: Vec<SigId>,
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_signal_stops_second_kills_and_the_first_decides_the_exit_code() {
        let stop = Stop::default();
        assert_eq!(stop.request(), Request::None);
        stop.signal(libc::SIGTERM);
        assert_eq!(stop.request(), Request::Stop { exit_code: 143 });
        stop.signal(libc::SIGINT);
        assert_eq!(stop.request(), Request::Kill { exit_code: 143 });
    }

    #[test]
    fn a_failure_of_the_runner_stops_with_exit_1() {
        let stop = Stop::default();
        stop.fail();
        assert_eq!(stop.request(), Request::Stop { exit_code: 1 });
    }
}
