//! The run log: one file per run in the logs folder, streamed as the run goes.
//!
//! Every line is `HH:MM:SS.mmm [tag] text`, where the tag is a stage's name or `pydeployer` for
//! the runner's own lines. A stage's output is kept byte for byte (invalid UTF-8, NUL and `\r`
//! included): the log is the evidence of what happened, not a rendering of it. The file is
//! flushed after every event, so a runner killed halfway leaves a log that is complete up to the
//! last event it handled.
//!
//! Logs are named after the run's local start time, `YYYY-MM-DD_HH-MM-SS.log`, with `-2`, `-3`, …
//! before `.log` when runs share a second; `store::logs::prune` keeps the newest of them.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Local, SecondsFormat};

use super::clock::WallClock;
use super::summary::{attempt_note, finish_text, render_table};
use crate::events::{RunEvent, RunHeader, RunSummary};
use crate::pipeline::RUNNER_TAG;
use crate::store::logs::LogKey;

/// Big enough that one batch of stage output (up to ~64 KiB) is written in one or two calls.
const BUFFER_SIZE: usize = 64 * 1024;

/// How many runs may share a second before [`RunLog::create`] gives up.
const MAX_SUFFIX: u32 = 10_000;

impl super::Sink for RunLog {
    fn report(&mut self, event: &RunEvent) -> io::Result<()> {
        self.write_event(event)
    }
}

/// The log of the run in progress.
#[derive(Debug)]
pub struct RunLog {
    path: PathBuf,
    out: BufWriter<File>,
    clock: WallClock,
    /// `HH:MM:SS.mmm [tag] ` of the event being written; reused so a line costs no allocation.
    prefix: Vec<u8>,
    /// Run logs that were in the folder when this one was created.
    others: usize,
}

impl RunLog {
    /// Whether, with this log, the folder may hold more than `keep` run logs (so that
    /// `store::logs::prune` has something to do; logs written meanwhile by other runs aside).
    pub fn may_exceed(&self, keep: usize) -> bool {
        self.others + 1 > keep
    }

    /// Creates `dir` if needed and a new log file in it named after `started_at`.
    ///
    /// An existing file of that name (or a symlink) is never opened: the suffix after the
    /// highest one of that second is taken instead, so that a newer run never sorts before an
    /// older one even after pruning freed a lower suffix.
    pub fn create(dir: &Path, started_at: DateTime<Local>) -> io::Result<RunLog> {
        fs::create_dir_all(dir)?;
        let stamp = started_at.format("%Y-%m-%d_%H-%M-%S").to_string();
        let mut highest = 0;
        let mut others = 0;
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(key) = name.to_str().and_then(LogKey::parse) else {
                continue;
            };
            others += 1;
            if key.stamp == stamp.as_bytes() {
                highest = highest.max(key.suffix);
            }
        }
        for n in highest + 1..=MAX_SUFFIX {
            let name = if n == 1 {
                format!("{stamp}.log")
            } else {
                format!("{stamp}-{n}.log")
            };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    // Held for as long as the run writes it: retention (also another
                    // project's, sharing the folder) and `logs --list` see the run alive.
                    file.try_lock().map_err(|err| match err {
                        std::fs::TryLockError::Error(err) => err,
                        std::fs::TryLockError::WouldBlock => {
                            io::Error::other("the new log is locked by another process")
                        }
                    })?;
                    return Ok(RunLog {
                        path,
                        out: BufWriter::with_capacity(BUFFER_SIZE, file),
                        clock: WallClock::new(&started_at),
                        prefix: Vec::with_capacity(128),
                        others,
                    });
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} already holds {MAX_SUFFIX} logs for {stamp}",
                dir.display()
            ),
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the event's lines and flushes them to the file.
    pub fn write_event(&mut self, event: &RunEvent) -> io::Result<()> {
        match event {
            RunEvent::RunStarted(header) => self.write_header(header)?,
            RunEvent::StageStarted {
                stage,
                attempt,
                command,
                elapsed,
                ..
            } => {
                let text = if *attempt > 1 {
                    format!("started (attempt {attempt}): {command}")
                } else {
                    format!("started: {command}")
                };
                self.set_prefix(*elapsed, stage.as_str());
                self.write_lines(text.as_bytes())?;
            }
            RunEvent::StageOutput {
                stage,
                bytes,
                elapsed,
            } => {
                self.set_prefix(*elapsed, stage.as_str());
                self.write_lines(bytes)?;
            }
            RunEvent::StageFinished {
                stage,
                attempt,
                outcome,
                note,
                duration,
                will_retry,
                elapsed,
                ..
            } => {
                let text = finish_text(outcome, *duration)
                    + &attempt_note(*attempt, *will_retry, note.as_deref());
                self.set_prefix(*elapsed, stage.as_str());
                self.write_lines(text.as_bytes())?;
            }
            RunEvent::StageSkipped {
                stage,
                reason,
                elapsed,
            } => {
                self.set_prefix(*elapsed, stage.as_str());
                self.write_lines(format!("skipped: {}", reason.describe()).as_bytes())?;
            }
            RunEvent::RunFinished(summary) => self.write_summary(summary)?,
        }
        self.out.flush()
    }

    fn write_header(&mut self, header: &RunHeader) -> io::Result<()> {
        // The header's start is the one every later line is reckoned from.
        self.clock = WallClock::new(&header.started_at);
        let mut text = format!(
            "pipeline: {}\nstarted: {}\ntrigger: {}\nselection: {}\njobs: {}\nstages: {}\n",
            header.pipeline,
            header
                .started_at
                .to_rfc3339_opts(SecondsFormat::Millis, false),
            header.trigger,
            header.selection,
            header.jobs,
            header.stages.len(),
        );
        for stage in &header.stages {
            // A multi-line script stays readable as one indented block under its stage.
            let command = stage.command.trim_end().replace('\n', "\n    ");
            let _ = writeln!(text, "  {}: {command}", stage.name);
        }
        self.set_prefix(Duration::ZERO, RUNNER_TAG);
        self.write_lines(text.as_bytes())
    }

    fn write_summary(&mut self, summary: &RunSummary) -> io::Result<()> {
        let mut text = render_table(summary);
        let _ = writeln!(text, "exit code {}", summary.exit_code);
        self.set_prefix(summary.duration, RUNNER_TAG);
        self.write_lines(text.as_bytes())
    }

    fn set_prefix(&mut self, elapsed: Duration, tag: &str) {
        self.prefix.clear();
        self.prefix
            .extend_from_slice(&self.clock.at(elapsed).millis_bytes());
        self.prefix.extend_from_slice(b" [");
        self.prefix.extend_from_slice(tag.as_bytes());
        self.prefix.extend_from_slice(b"] ");
    }

    /// Writes each line of `bytes` after the current prefix, ending the last one if it is not.
    fn write_lines(&mut self, bytes: &[u8]) -> io::Result<()> {
        let out = &mut self.out;
        let prefix = self.prefix.as_slice();
        // An empty line gets the prefix without its trailing space.
        let bare_prefix = &prefix[..prefix.len().saturating_sub(1)];
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            if line == b"\n" {
                out.write_all(bare_prefix)?;
            } else {
                out.write_all(prefix)?;
            }
            out.write_all(line)?;
            if line.last() != Some(&b'\n') {
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    use chrono::TimeZone;
    use tempfile::TempDir;

    use super::*;
    use crate::pipeline::StageName;
    use crate::report::fixtures::sample_run;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Local> {
        Local
            .with_ymd_and_hms(2024, 3, 5, h, m, s)
            .single()
            .expect("unambiguous local time")
    }

    fn name(stage: &str) -> StageName {
        StageName::parse(stage).expect("valid stage name")
    }

    #[test]
    fn names_the_log_after_the_start_and_suffixes_collisions() {
        let tmp = TempDir::new().expect("tempdir");
        let dir = tmp.path().join("nested/logs");
        let start = at(12, 3, 4);
        let paths: Vec<PathBuf> = (0..3)
            .map(|_| {
                RunLog::create(&dir, start)
                    .expect("create")
                    .path()
                    .to_owned()
            })
            .collect();
        let names: Vec<_> = paths
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "2024-03-05_12-03-04.log",
                "2024-03-05_12-03-04-2.log",
                "2024-03-05_12-03-04-3.log"
            ]
        );
        assert!(paths.iter().all(|p| p.starts_with(&dir)));
    }

    #[cfg(unix)]
    #[test]
    fn never_follows_a_symlink_in_the_way() {
        let tmp = TempDir::new().expect("tempdir");
        let target = tmp.path().join("precious");
        fs::write(&target, b"keep me").expect("write");
        std::os::unix::fs::symlink(&target, tmp.path().join("2024-03-05_12-03-04.log"))
            .expect("symlink");
        let mut log = RunLog::create(tmp.path(), at(12, 3, 4)).expect("create");
        log.write_event(&RunEvent::StageOutput {
            stage: name("test"),
            bytes: b"hello\n".to_vec(),
            elapsed: Duration::ZERO,
        })
        .expect("write");
        assert!(log.path().ends_with("2024-03-05_12-03-04-2.log"));
        assert_eq!(fs::read(&target).expect("read"), b"keep me");
    }

    #[test]
    fn output_bytes_are_kept_as_they_are() {
        let tmp = TempDir::new().expect("tempdir");
        let mut log = RunLog::create(tmp.path(), at(12, 3, 4)).expect("create");
        let raw =
            b"ok \xff\xfe\0end\nprogress 10%\rprogress 100%\n\x1b[31mred\x1b[0m\n\nno newline";
        log.write_event(&RunEvent::StageOutput {
            stage: name("test"),
            bytes: raw.to_vec(),
            elapsed: Duration::from_millis(1_005),
        })
        .expect("write");
        let written = fs::read(log.path()).expect("read");
        let expected: &[u8] = b"12:03:05.005 [test] ok \xff\xfe\0end\n\
            12:03:05.005 [test] progress 10%\rprogress 100%\n\
            12:03:05.005 [test] \x1b[31mred\x1b[0m\n\
            12:03:05.005 [test]\n\
            12:03:05.005 [test] no newline\n";
        assert_eq!(written, expected);
    }

    #[test]
    fn a_whole_run() {
        let tmp = TempDir::new().expect("tempdir");
        let started_at = at(12, 3, 4) + chrono::Duration::milliseconds(250);
        let mut log = RunLog::create(tmp.path(), started_at).expect("create");
        let events = sample_run(started_at, Some(log.path().to_owned()));
        for event in &events {
            log.write_event(event).expect("write");
        }
        let text = fs::read_to_string(log.path()).expect("read");
        // The offset in the RFC 3339 time depends on the machine's time zone.
        let text = text.replace(
            &started_at.to_rfc3339_opts(SecondsFormat::Millis, false),
            "[started_at]",
        );
        insta::assert_snapshot!(text);
    }
}
