//! The outputs of a run: one [`Reporter`] made of sinks, each turning the run's events into
//! one output (the terminal, the run log, the deploy ledger, the JSON summary, the JSON Lines
//! stream, what goes to the cloud). Events arrive here already masked (`exec::boundary`).
//!
//! A sink is fallible; what its failure means is decided here, once, by the [`OnFailure`] it
//! was added with, not by the sink or the session. Adding an output is one file implementing
//! [`Sink`] and one line where the session builds the reporter.

pub mod artifacts;
mod clock;
pub mod cloud;
#[cfg(test)]
mod fixtures;
pub mod json;
pub mod jsonl;
pub mod lastrun;
pub mod ledger;
pub mod logfile;
pub mod summary;
pub mod terminal;

use std::io;

use crate::events::RunEvent;

/// One output of a run.
pub trait Sink {
    /// Renders `event`. An error ends this sink's part in the run (see [`OnFailure`]).
    fn report(&mut self, event: &RunEvent) -> io::Result<()>;
}

/// What a sink's failure does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// The run cannot go on without it (the run log, the evidence): nothing more starts, and
    /// the run ends with a tool error.
    StopRun,
    /// The run goes on; the failure is reported when it ends, as a tool error (the ledger).
    ReportAfter,
    /// The run goes on and its result stands; the failure is told as a warning when it ends
    /// (what the cloud sink could not put in the outbox).
    Warn,
    /// The output is dropped silently (a terminal or reader that went away).
    Drop,
}

/// Whether the run may go on after an event was reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// A sink that failed, and what it was.
#[derive(Debug)]
pub struct SinkFailure {
    /// `the run log logs/2024-…log`, for messages.
    pub what: String,
    pub on_failure: OnFailure,
    pub error: io::Error,
}

struct Part<'a> {
    sink: Box<dyn Sink + 'a>,
    what: String,
    on_failure: OnFailure,
    failed: Option<io::Error>,
}

/// Every output of one run, fed in order.
#[derive(Default)]
pub struct Reporter<'a> {
    parts: Vec<Part<'a>>,
}

impl<'a> Reporter<'a> {
    pub fn new() -> Self {
        Reporter { parts: Vec::new() }
    }

    /// Adds an output; `what` names it in messages (`the run log …`).
    #[must_use]
    pub fn with(
        mut self,
        what: impl Into<String>,
        on_failure: OnFailure,
        sink: impl Sink + 'a,
    ) -> Self {
        self.parts.push(Part {
            sink: Box::new(sink),
            what: what.into(),
            on_failure,
            failed: None,
        });
        self
    }

    /// Hands `event` to every sink that has not failed, in the order they were added.
    pub fn report(&mut self, event: &RunEvent) -> Flow {
        // A run whose log or ledger could not be written ends with exit code 1 whatever its
        // stages did: the run's last event says so too, so that the log, the terminal, the
        // JSON and `logs --list` tell the same as the exit code.
        let corrected;
        let event = match event {
            RunEvent::RunFinished(summary) if summary.exit_code == 0 && self.has_failed() => {
                let mut summary = summary.clone();
                summary.exit_code = 1;
                corrected = RunEvent::RunFinished(summary);
                &corrected
            }
            _ => event,
        };
        let mut flow = Flow::Continue;
        for part in &mut self.parts {
            if part.failed.is_some() {
                continue;
            }
            if let Err(error) = part.sink.report(event) {
                if part.on_failure == OnFailure::StopRun {
                    flow = Flow::Stop;
                }
                part.failed = Some(error);
            }
        }
        flow
    }

    /// The sinks that failed and whose failure is to be told (not the dropped ones), in the
    /// order they were added.
    /// Whether an output that counts (not the terminal) has failed.
    fn has_failed(&self) -> bool {
        self.parts
            .iter()
            .any(|part| part.failed.is_some() && part.on_failure != OnFailure::Drop)
    }

    pub fn finish(self) -> Vec<SinkFailure> {
        self.parts
            .into_iter()
            .filter(|part| part.on_failure != OnFailure::Drop)
            .filter_map(|part| {
                Some(SinkFailure {
                    error: part.failed?,
                    what: part.what,
                    on_failure: part.on_failure,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::sample_run;

    /// Fails from its `n`th event on, counting what it saw.
    struct FailsAt {
        n: usize,
        seen: std::rc::Rc<std::cell::Cell<usize>>,
    }

    impl Sink for FailsAt {
        fn report(&mut self, _: &RunEvent) -> io::Result<()> {
            self.seen.set(self.seen.get() + 1);
            if self.seen.get() >= self.n {
                return Err(io::Error::other("full"));
            }
            Ok(())
        }
    }

    fn sink(n: usize) -> (FailsAt, std::rc::Rc<std::cell::Cell<usize>>) {
        let seen = std::rc::Rc::default();
        (
            FailsAt {
                n,
                seen: std::rc::Rc::clone(&seen),
            },
            seen,
        )
    }

    #[test]
    fn each_failure_is_handled_by_its_policy() {
        let (log, log_seen) = sink(2);
        let (ledger, _) = sink(1);
        let (terminal, terminal_seen) = sink(1);
        let mut reporter = Reporter::new()
            .with("the run log", OnFailure::StopRun, log)
            .with("the ledger", OnFailure::ReportAfter, ledger)
            .with("the terminal", OnFailure::Drop, terminal);
        let flows: Vec<Flow> = sample_run(chrono::Local::now(), None)
            .iter()
            .map(|e| reporter.report(e))
            .collect();
        // The log's failure (at its second event) stops the run, once.
        assert_eq!(flows[0], Flow::Continue);
        assert_eq!(flows[1], Flow::Stop);
        assert!(flows[2..].iter().all(|f| *f == Flow::Continue));
        // A failed sink is not fed again.
        assert_eq!(log_seen.get(), 2);
        assert_eq!(terminal_seen.get(), 1);
        let failures = reporter.finish();
        let told: Vec<(&str, OnFailure)> = failures
            .iter()
            .map(|f| (f.what.as_str(), f.on_failure))
            .collect();
        assert_eq!(
            told,
            [
                ("the run log", OnFailure::StopRun),
                ("the ledger", OnFailure::ReportAfter)
            ]
        );
    }
}
