//! The logs folder as a store: which files are run logs and in what order, their retention, and
//! reading a log back: which run a name points at, what its header and summary say, and which
//! lines belong to a stage. The format itself is written by `report::logfile`.
//!
//! A log line is `HH:MM:SS.mmm [tag] text`; the header is the runner's (`[pydeployer]`) first
//! lines (`pipeline:`, `started:`, `trigger:`, `selection:`, `jobs:`, `stages:` and one
//! `  name: command` per stage), and a finished run's last line is `[pydeployer] exit code N`.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Timelike};

use crate::pipeline::RUNNER_TAG;

/// What the head of a log is read for: the header is a few lines, unless a stage's command is
/// a long script.
const HEAD_BYTES: u64 = 256 * 1024;
/// What the end of a log is read for: the last line.
const TAIL_BYTES: u64 = 16 * 1024;

/// How a run ended, as its log tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunResult {
    /// Exit code 0.
    Passed,
    /// Any other exit code but those of a signal.
    Failed,
    /// Exit code 129, 130 or 143: interrupted by a signal.
    Cancelled,
    /// No summary yet, and the run that writes it holds the project's lock.
    Running,
    /// No summary, and nothing writes it any more: the runner was killed (or could not write
    /// its log).
    Killed,
}

impl RunResult {
    /// The word used in `logs --list` and its JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Passed => "passed",
            RunResult::Failed => "failed",
            RunResult::Cancelled => "cancelled",
            RunResult::Running => "running",
            RunResult::Killed => "killed",
        }
    }

    /// The result of a finished run that exited with `code`.
    pub fn of_exit_code(code: i32) -> RunResult {
        match code {
            0 => RunResult::Passed,
            129 | 130 | 143 => RunResult::Cancelled,
            _ => RunResult::Failed,
        }
    }
}

/// What a log's header and last line say.
#[derive(Debug, Clone, Default)]
pub struct LogInfo {
    pub pipeline: Option<String>,
    pub started_at: Option<DateTime<FixedOffset>>,
    pub selection: Option<String>,
    /// Why the run started (`manual`, `watch`, `schedule`, …); `None` in a log written before
    /// triggers were recorded. Read back as text: a value this version does not know is kept.
    pub trigger: Option<String>,
    /// The stages the run planned, in plan order.
    pub stages: Vec<String>,
    /// From the summary's last line; `None` while the run goes (or when it was killed).
    pub exit_code: Option<i32>,
    /// From the start to the last line: the run's duration once it finished.
    pub duration: Option<Duration>,
}

impl LogInfo {
    /// Reads the header from the head of the file and the last line from its end.
    pub fn read(path: &Path) -> io::Result<LogInfo> {
        let mut file = crate::files::open_regular(path)?;
        let len = file.metadata()?.len();
        let mut head = Vec::new();
        (&mut file).take(HEAD_BYTES).read_to_end(&mut head)?;
        let tail = if len <= HEAD_BYTES {
            head.clone()
        } else {
            let mut tail = Vec::new();
            file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
            file.read_to_end(&mut tail)?;
            tail
        };
        Ok(LogInfo::parse(&head, &tail))
    }

    /// `head`: the file's first bytes; `tail`: its last bytes (the same bytes for a small log).
    pub fn parse(head: &[u8], tail: &[u8]) -> LogInfo {
        let mut info = LogInfo::default();
        let mut in_stages = false;
        for line in head.split(|b| *b == b'\n') {
            let Some(parsed) = LogLine::parse(line) else {
                continue;
            };
            if parsed.tag != RUNNER_TAG.as_bytes() {
                // The header ends where the first stage starts.
                break;
            }
            let text = String::from_utf8_lossy(parsed.text);
            if in_stages {
                // `  name: command`, continued by lines indented further.
                if let Some(rest) = text.strip_prefix("  ")
                    && !rest.starts_with(' ')
                    && let Some((name, _)) = rest.split_once(':')
                {
                    info.stages.push(name.to_owned());
                    continue;
                }
                if text.starts_with("    ") {
                    continue;
                }
                break;
            }
            if let Some(name) = text.strip_prefix("pipeline: ") {
                info.pipeline = Some(name.to_owned());
            } else if let Some(started) = text.strip_prefix("started: ") {
                info.started_at = DateTime::parse_from_rfc3339(started).ok();
            } else if let Some(trigger) = text.strip_prefix("trigger: ") {
                info.trigger = Some(trigger.to_owned());
            } else if let Some(selection) = text.strip_prefix("selection: ") {
                info.selection = Some(selection.to_owned());
            } else if text.starts_with("stages: ") {
                in_stages = true;
            }
        }
        let last = tail.split(|b| *b == b'\n').rev().find_map(LogLine::parse);
        if let Some(last) = last {
            if last.tag == RUNNER_TAG.as_bytes() {
                info.exit_code = std::str::from_utf8(last.text)
                    .ok()
                    .and_then(|t| t.strip_prefix("exit code "))
                    .and_then(|code| code.parse().ok());
            }
            if let Some(started) = info.started_at {
                info.duration = Some(since(started, last.millis_of_day));
            }
        }
        info
    }

    /// The result, given whether a run holds the project's lock now and when it took it.
    pub fn result(&self, writer_started: Option<DateTime<FixedOffset>>) -> RunResult {
        match self.exit_code {
            Some(code) => RunResult::of_exit_code(code),
            None if self.written_by(writer_started) => RunResult::Running,
            None => RunResult::Killed,
        }
    }

    /// Whether the run that took the lock at `writer_started` is the one writing this log (a
    /// run takes the lock, then creates its log). A log without a header yet is just being
    /// created.
    pub fn written_by(&self, writer_started: Option<DateTime<FixedOffset>>) -> bool {
        let Some(writer) = writer_started else {
            return false;
        };
        // The header's time is cut to the millisecond.
        self.started_at
            .is_none_or(|started| started + chrono::Duration::milliseconds(1) >= writer)
    }
}

/// The time from `start` to the time of day `millis_of_day` (a line's time), assumed to be
/// less than a day later.
fn since(start: DateTime<FixedOffset>, millis_of_day: u32) -> Duration {
    const DAY: u32 = 86_400_000;
    let start_millis = start.num_seconds_from_midnight() * 1000 + start.nanosecond() / 1_000_000;
    Duration::from_millis(u64::from((millis_of_day + DAY - start_millis % DAY) % DAY))
}

/// One line of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub millis_of_day: u32,
    /// The stage's name, or `pydeployer`.
    pub tag: &'a [u8],
    /// What follows `] ` (empty for an empty line).
    pub text: &'a [u8],
}

impl<'a> LogLine<'a> {
    /// Parses `HH:MM:SS.mmm [tag] text` (without its `\n`); `None` for anything else.
    pub fn parse(line: &'a [u8]) -> Option<LogLine<'a>> {
        let time = line.get(..12)?;
        let digit = |i: usize| -> Option<u32> {
            let b = *time.get(i)?;
            b.is_ascii_digit().then(|| u32::from(b - b'0'))
        };
        if time[2] != b':' || time[5] != b':' || time[8] != b'.' {
            return None;
        }
        let two = |i| Some(digit(i)? * 10 + digit(i + 1)?);
        let millis = digit(9)? * 100 + digit(10)? * 10 + digit(11)?;
        let millis_of_day = ((two(0)? * 60 + two(3)?) * 60 + two(6)?) * 1000 + millis;
        let rest = line.get(12..)?.strip_prefix(b" [")?;
        let close = rest.iter().position(|b| *b == b']')?;
        let tag = &rest[..close];
        let after = &rest[close + 1..];
        let text = after.strip_prefix(b" ").unwrap_or(after);
        Some(LogLine {
            millis_of_day,
            tag,
            text,
        })
    }

    /// Whether this is the last line of a finished run.
    pub fn ends_run(&self) -> bool {
        self.tag == RUNNER_TAG.as_bytes() && self.text.starts_with(b"exit code ")
    }
}

/// Finds the log `spec` names among the logs in `dir` (oldest first in `runs`).
///
/// `spec` is one of: `-N` (`-1` the newest, `-2` the one before, …); a log's file name, with or
/// without `.log`; the beginning of exactly one log's name (`2026-11-22_12`); a path to a file.
pub fn resolve(runs: &[PathBuf], spec: &str) -> Result<PathBuf, String> {
    if let Some(digits) = spec.strip_prefix('-')
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        let n: usize = digits
            .parse()
            .map_err(|_| format!("`{spec}` is not a run"))?;
        if n == 0 {
            return Err("runs are counted from -1 (the newest)".to_owned());
        }
        return runs
            .len()
            .checked_sub(n)
            .map(|i| runs[i].clone())
            .ok_or_else(|| match runs.len() {
                0 => "there are no run logs yet".to_owned(),
                1 => format!("there is only 1 run log, so `{spec}` names none"),
                len => format!("there are only {len} run logs, so `{spec}` names none"),
            });
    }
    let name_of = |path: &PathBuf| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let wanted = spec.strip_suffix(".log").unwrap_or(spec);
    if let Some(exact) = runs.iter().find(|p| name_of(p) == format!("{wanted}.log")) {
        return Ok(exact.clone());
    }
    if spec.contains('/') || Path::new(spec).extension().is_some_and(|e| e == "log") {
        let path = PathBuf::from(spec);
        if fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            return Ok(path);
        }
    }
    let matching: Vec<&PathBuf> = runs
        .iter()
        .filter(|p| !wanted.is_empty() && name_of(p).starts_with(wanted))
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!("no run log is named `{spec}`")),
        many => Err(format!(
            "`{spec}` names {} run logs ({}); give more of the name",
            many.len(),
            many.iter()
                .map(|p| name_of(p))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Removes all but the `keep` newest run logs in `dir`, never `current`; returns what it removed.
///
/// Only files named like run logs count; anything else in the folder is left alone. A missing
/// folder holds no logs.
pub fn prune(dir: &Path, keep: usize, current: &Path) -> io::Result<Vec<PathBuf>> {
    let runs = list_runs(dir)?;
    let excess = runs.len().saturating_sub(keep);
    let current_name = current.file_name();
    let current_canonical = fs::canonicalize(current).ok();
    let is_current = |path: &Path| {
        path == current
            || (path.file_name() == current_name
                && current_canonical.is_some()
                && fs::canonicalize(path).ok() == current_canonical)
    };
    let mut removed = Vec::new();
    for path in runs.into_iter().take(excess) {
        // A log whose run is alive is never removed, whoever writes it.
        if is_current(&path) || is_being_written(&path) {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            // Someone else (another run pruning at the same time) got there first.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(removed)
}

/// Whether a run is writing the log at `path` now: the run holds a lock on its log for as long
/// as it lives (a run killed with `kill -9` holds none).
pub fn is_being_written(path: &Path) -> bool {
    let Ok(file) = crate::files::open_regular(path) else {
        return false;
    };
    matches!(file.try_lock_shared(), Err(fs::TryLockError::WouldBlock))
}

/// The run logs in `dir`, oldest first. A missing folder holds no logs.
pub fn list_runs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut runs = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(key) = entry.file_name().to_str().and_then(LogKey::parse) else {
            continue;
        };
        // Only regular files (or links to one): a FIFO or a device named like a log is not
        // one, and reading it could block or do anything.
        let file_type = entry.file_type()?;
        let regular = file_type.is_file()
            || (file_type.is_symlink() && fs::metadata(entry.path()).is_ok_and(|m| m.is_file()));
        if !regular {
            continue;
        }
        runs.push((key, entry.path()));
    }
    runs.sort_by(|(a, _), (b, _)| a.cmp(b));
    Ok(runs.into_iter().map(|(_, path)| path).collect())
}

/// The order of run logs: start time, then suffix (`.log` is 1, `-2.log` is 2, …).
///
/// Names cannot be compared as strings: `…-2.log` sorts before `….log` although it is newer.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct LogKey {
    /// `YYYY-MM-DD_HH-MM-SS`, whose string order is time order.
    pub(crate) stamp: [u8; 19],
    pub(crate) suffix: u32,
}

impl LogKey {
    pub(crate) fn parse(name: &str) -> Option<LogKey> {
        const SHAPE: &[u8; 19] = b"dddd-dd-dd_dd-dd-dd";
        let bytes = name.as_bytes();
        let stamp: [u8; 19] = bytes.get(..19)?.try_into().ok()?;
        let shape_ok = stamp.iter().zip(SHAPE).all(|(b, s)| match s {
            b'd' => b.is_ascii_digit(),
            other => b == other,
        });
        if !shape_ok {
            return None;
        }
        let rest = name[19..].strip_suffix(".log")?;
        let suffix = if rest.is_empty() {
            1
        } else {
            let digits = rest.strip_prefix('-')?;
            if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
                return None;
            }
            digits.parse().ok()?
        };
        Some(LogKey { stamp, suffix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    fn file_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn touch(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, b"").expect("write");
        path
    }

    #[test]
    fn prune_keeps_the_newest_by_time_then_suffix() {
        let tmp = TempDir::new().expect("tempdir");
        // 13 seconds, each with a plain and a `-2` log, but the last second has no `-2`: 25.
        let mut all = Vec::new();
        for s in 0..13 {
            all.push(format!("2024-03-05_12-00-{s:02}.log"));
            if s < 12 {
                all.push(format!("2024-03-05_12-00-{s:02}-2.log"));
            }
        }
        for name in &all {
            touch(tmp.path(), name);
        }
        let current = tmp.path().join("2024-03-05_12-00-12.log");

        let mut removed: Vec<String> = prune(tmp.path(), 20, &current)
            .expect("prune")
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        removed.sort();

        // A string sort would have removed `12-00-02-2.log` and kept `12-00-02.log`.
        assert_eq!(
            removed,
            [
                "2024-03-05_12-00-00-2.log",
                "2024-03-05_12-00-00.log",
                "2024-03-05_12-00-01-2.log",
                "2024-03-05_12-00-01.log",
                "2024-03-05_12-00-02.log",
            ]
        );
        let remaining = file_names(tmp.path());
        assert_eq!(remaining.len(), 20);
        assert!(remaining.contains(&"2024-03-05_12-00-02-2.log".to_owned()));
    }

    #[test]
    fn prune_never_removes_the_current_log() {
        let tmp = TempDir::new().expect("tempdir");
        let oldest = touch(tmp.path(), "2024-03-05_11-00-00.log");
        for s in 0..5 {
            touch(tmp.path(), &format!("2024-03-05_12-00-0{s}.log"));
        }

        prune(tmp.path(), 2, &oldest).expect("prune");
        assert_eq!(
            file_names(tmp.path()),
            [
                "2024-03-05_11-00-00.log",
                "2024-03-05_12-00-03.log",
                "2024-03-05_12-00-04.log"
            ]
        );

        // The same file named by another path is still the current log.
        let dir_name = tmp.path().file_name().expect("tempdir has a name");
        let roundabout = tmp
            .path()
            .join("..")
            .join(dir_name)
            .join("2024-03-05_11-00-00.log");
        prune(tmp.path(), 0, &roundabout).expect("prune");
        assert_eq!(file_names(tmp.path()), ["2024-03-05_11-00-00.log"]);
    }

    #[test]
    fn prune_ignores_what_is_not_a_run_log() {
        let tmp = TempDir::new().expect("tempdir");
        let others = [
            "notes.txt",
            "latest.log",
            "2024-03-05_12-03-04.log.gz",
            "2024-03-05_12-03-04-02.log",
            "2024-03-05_12-03-04-.log",
            "2024-3-05_12-03-04.log",
            "2024-03-05 12-03-04.log",
            "x2024-03-05_12-03-04.log",
        ];
        for name in others {
            touch(tmp.path(), name);
        }
        fs::create_dir(tmp.path().join("2024-03-05_12-00-00.log")).expect("mkdir");
        let current = touch(tmp.path(), "2024-03-05_13-00-00.log");
        touch(tmp.path(), "2024-03-05_12-59-59.log");

        let removed = prune(tmp.path(), 0, &current).expect("prune");
        assert_eq!(removed, [tmp.path().join("2024-03-05_12-59-59.log")]);
        assert_eq!(file_names(tmp.path()).len(), others.len() + 2);
    }

    #[test]
    fn prune_of_a_missing_folder_removes_nothing() {
        let tmp = TempDir::new().expect("tempdir");
        let dir = tmp.path().join("none");
        assert!(
            prune(&dir, 1, &dir.join("x.log"))
                .expect("prune")
                .is_empty()
        );
    }

    #[test]
    fn list_runs_is_oldest_first() {
        let tmp = TempDir::new().expect("tempdir");
        for name in [
            "2024-03-05_12-00-01.log",
            "2024-03-05_12-00-00-10.log",
            "2024-03-05_12-00-00-2.log",
            "2024-03-05_12-00-00.log",
            "2023-12-31_23-59-59.log",
            "readme.md",
        ] {
            touch(tmp.path(), name);
        }
        let names: Vec<_> = list_runs(tmp.path())
            .expect("list")
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "2023-12-31_23-59-59.log",
                "2024-03-05_12-00-00.log",
                "2024-03-05_12-00-00-2.log",
                "2024-03-05_12-00-00-10.log",
                "2024-03-05_12-00-01.log",
            ]
        );
    }

    const LOG: &str = "\
12:03:04.250 [pydeployer] pipeline: sample-app
12:03:04.250 [pydeployer] started: 2024-03-05T12:03:04.250+01:00
12:03:04.250 [pydeployer] trigger: watch
12:03:04.250 [pydeployer] selection: run deploy
12:03:04.250 [pydeployer] jobs: 2
12:03:04.250 [pydeployer] stages: 3
12:03:04.250 [pydeployer]   lint: ruff check .
12:03:04.250 [pydeployer]   test: pytest -v
12:03:04.250 [pydeployer]   deploy: set -e
12:03:04.250 [pydeployer]     git push origin master
12:03:04.255 [lint] started: ruff check .
12:03:04.650 [test]
12:03:05.471 [deploy] skipped: `test` did not succeed
12:03:05.480 [pydeployer] 1 passed, 1 failed, 1 skipped in 1.2s
12:03:05.480 [pydeployer] exit code 1
";

    #[test]
    fn reads_the_header_and_the_summary() {
        let info = LogInfo::parse(LOG.as_bytes(), LOG.as_bytes());
        assert_eq!(info.pipeline.as_deref(), Some("sample-app"));
        assert_eq!(info.selection.as_deref(), Some("run deploy"));
        assert_eq!(info.trigger.as_deref(), Some("watch"));
        assert_eq!(info.stages, ["lint", "test", "deploy"]);
        assert_eq!(info.exit_code, Some(1));
        assert_eq!(info.duration, Some(Duration::from_millis(1230)));
        assert_eq!(info.result(None), RunResult::Failed);
    }

    #[test]
    fn a_log_without_summary_is_running_or_killed() {
        let cut = &LOG[..LOG.find("12:03:05.480").unwrap()];
        let info = LogInfo::parse(cut.as_bytes(), cut.as_bytes());
        assert_eq!(info.exit_code, None);
        assert_eq!(info.duration, Some(Duration::from_millis(1221)));
        let started = info.started_at.unwrap();
        assert_eq!(info.result(None), RunResult::Killed);
        assert_eq!(info.result(Some(started)), RunResult::Running);
        // A run that took the lock after this log was begun is not writing it.
        let later = started + chrono::Duration::seconds(1);
        assert_eq!(info.result(Some(later)), RunResult::Killed);
        assert_eq!(LogInfo::default().result(Some(started)), RunResult::Running);
    }

    #[test]
    fn lines_parse_and_others_do_not() {
        let line = LogLine::parse(b"23:59:59.999 [a.b] x ] y").unwrap();
        assert_eq!(line.millis_of_day, 86_399_999);
        assert_eq!(line.tag, b"a.b");
        assert_eq!(line.text, b"x ] y");
        assert_eq!(LogLine::parse(b"12:03:04.650 [test]").unwrap().text, b"");
        assert!(LogLine::parse(b"12:03:04 [test] x").is_none());
        assert!(LogLine::parse(b"").is_none());
        assert!(
            LogLine::parse(b"12:03:05.480 [pydeployer] exit code 0")
                .unwrap()
                .ends_run()
        );
    }

    #[test]
    fn a_run_past_midnight_has_a_positive_duration() {
        let start = DateTime::parse_from_rfc3339("2024-03-05T23:59:59.500+00:00").unwrap();
        assert_eq!(since(start, 700), Duration::from_millis(1200));
    }

    #[test]
    fn runs_are_named_by_index_name_stamp_or_unique_prefix() {
        let runs: Vec<PathBuf> = [
            "2024-03-05_12-00-00.log",
            "2024-03-05_12-00-00-2.log",
            "2024-03-06_09-00-00.log",
        ]
        .iter()
        .map(|n| Path::new("logs").join(n))
        .collect();
        let pick = |spec| resolve(&runs, spec).map(|p| p.file_name().unwrap().to_owned());
        assert_eq!(pick("-1").unwrap(), "2024-03-06_09-00-00.log");
        assert_eq!(pick("-3").unwrap(), "2024-03-05_12-00-00.log");
        assert!(pick("-4").unwrap_err().contains("only 3"));
        assert!(pick("-0").is_err());
        assert_eq!(
            pick("2024-03-05_12-00-00").unwrap(),
            "2024-03-05_12-00-00.log"
        );
        assert_eq!(
            pick("2024-03-05_12-00-00-2.log").unwrap(),
            "2024-03-05_12-00-00-2.log"
        );
        assert_eq!(pick("2024-03-06").unwrap(), "2024-03-06_09-00-00.log");
        assert!(pick("2024-03-05").unwrap_err().contains("names 2 run logs"));
        assert!(pick("nope").unwrap_err().contains("no run log"));
    }
}
