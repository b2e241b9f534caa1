//! `pydeployer logs`: a run's log, one stage's lines of it, the list of runs, and following the
//! run in progress.
//!
//! Which run is in progress is told by the project's run lock (`.pydeployer/lock`, see
//! [`crate::state`]): the lock file names the run holding it and when it took the lock, and the
//! kernel's table of locks (`/proc/locks`) says whether that run still holds it. Nothing here
//! takes the lock, not even for an instant, so `logs` never makes a run starting at the same
//! moment fail as busy.

use std::fs;
use std::io::{self, BufRead as _, IsTerminal, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Local, SecondsFormat};
use serde::Serialize;

use super::json::seconds;
use crate::cli::{Cli, Format, LogsArgs};
use crate::config;
use crate::error::{Failure, Problem};
use crate::pipeline::RUNNER_TAG;
use crate::report::summary::format_duration;
use crate::report::terminal::sanitize_for_terminal;
use crate::store::logs::list_runs;
use crate::store::logs::{LogInfo, LogLine, RunResult, resolve};
use crate::store::state::Holder;

/// How often `--follow` looks for more lines (and for a run to start).
const POLL: Duration = Duration::from_millis(100);
/// The longest piece of a line read at once from a log (pydeployer writes at most 64 KiB).
const MAX_LINE: u64 = 1 << 20;

/// Where a project keeps its logs and its lock.
struct Project {
    /// The logs folder.
    dir: PathBuf,
    /// The folder holding `.pydeployer/`.
    root: PathBuf,
}

pub(crate) fn run(cli: &Cli, args: &LogsArgs) -> Result<(), Failure> {
    let project = locate(cli);
    if args.list {
        return list(cli, &project);
    }
    let mut out = Output::new(cli);
    if args.follow {
        let path = match &args.run {
            Some(spec) => pick(&project, spec)?,
            None => match wait_for_run(cli, &project)? {
                Some(path) => path,
                None => return Ok(()),
            },
        };
        if !cli.quiet {
            crate::errln!("following {}", path.display());
        }
        return follow(cli, &project, &path, args.stage.as_deref(), &mut out);
    }
    let path = pick(&project, args.run.as_deref().unwrap_or("-1"))?;
    // Read as a stream, a line (or a piece of a very long one) at a time: a log may be
    // hundreds of megabytes, and the file may be anything someone put in the folder.
    let file = crate::files::open_regular(&path).map_err(|err| read_error(&path, &err))?;
    let mut reader = io::BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::new();
    let mut found = false;
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .map_err(|err| read_error(&path, &err))?;
        if n == 0 {
            break;
        }
        match &args.stage {
            None => out.write(&line),
            Some(stage) if is_stage_line(&line, stage) => {
                found = true;
                out.write(&line);
            }
            Some(_) => {}
        }
    }
    if let Some(stage) = &args.stage
        && !found
    {
        let info = LogInfo::read(&path).map_err(|err| read_error(&path, &err))?;
        no_lines(cli, &path, &info, stage)?;
    }
    Ok(())
}

/// The logs folder and the lock of the pipeline; when the pipeline does not load, `logs/`
/// beside its file, so that the logs stay readable while pipeline.yml is being fixed.
fn locate(cli: &Cli) -> Project {
    match config::load(&cli.file) {
        Ok(pipeline) => Project {
            dir: pipeline.logs.dir,
            root: pipeline.root,
        },
        Err(invalid) => {
            let root = match cli.file.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => PathBuf::from("."),
            };
            crate::errln!(
                "warning: {} does not load ({invalid}; see `pydeployer validate`); reading the logs in {}",
                cli.file.display(),
                root.join("logs").display()
            );
            Project {
                dir: root.join("logs"),
                root,
            }
        }
    }
}

/// The log `spec` names (see [`resolve`]).
fn pick(project: &Project, spec: &str) -> Result<PathBuf, Failure> {
    let runs = list_runs(&project.dir).map_err(|err| read_error(&project.dir, &err))?;
    if runs.is_empty() && spec == "-1" {
        return Err(Problem::general(format!(
            "there are no run logs in {} yet",
            project.dir.display()
        ))
        .with_help("`pydeployer run` writes one per run")
        .into());
    }
    resolve(&runs, spec).map_err(|message| {
        Problem::general(message)
            .with_help(
                "name a run by `-1` (the newest), `-2`, …, or by its log's name; `pydeployer logs --list` lists them",
            )
            .into()
    })
}

fn read_error(path: &Path, err: &io::Error) -> Failure {
    Failure::Tool(miette::miette!("cannot read {}: {err}", path.display()))
}

/// Whether `line` (with or without its `\n`) is one of `stage`'s.
fn is_stage_line(line: &[u8], stage: &str) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    LogLine::parse(line).is_some_and(|l| l.tag == stage.as_bytes())
}

/// `--stage` found no line: an error when the run has no such stage, else a note.
fn no_lines(cli: &Cli, path: &Path, info: &LogInfo, stage: &str) -> Result<(), Failure> {
    let name = file_name(path);
    if info.stages.iter().any(|s| s == stage) {
        if !cli.quiet {
            crate::errln!("stage `{stage}` has no lines in {name}");
        }
        return Ok(());
    }
    let stages = if info.stages.is_empty() {
        "it names no stages".to_owned()
    } else {
        format!("its stages: {}", info.stages.join(", "))
    };
    Err(
        Problem::general(format!("the run {name} has no stage `{stage}`"))
            .with_suggestion(stage, info.stages.iter().map(String::as_str), stages)
            .into(),
    )
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// `logs --list --format json`: one object per run, oldest first.
#[derive(Debug, Serialize)]
struct ListedRun {
    /// `-1` for the newest run, `-2` for the one before, …: what `pydeployer logs RUN` takes.
    index: i64,
    /// The log's file name.
    name: String,
    path: String,
    pipeline: Option<String>,
    /// RFC 3339, from the log's header.
    started_at: Option<String>,
    /// How the stages were selected (`run`, `run test`, `run --only test`, …).
    selection: Option<String>,
    /// Why the run started: `manual`, `watch`, `schedule`; `null` in an older log.
    trigger: Option<String>,
    /// `passed`, `failed`, `cancelled`, `running` or `killed`.
    result: &'static str,
    /// `null` while running or when killed.
    exit_code: Option<i32>,
    /// So far, for a running run; up to its last line, for a killed one.
    duration_seconds: Option<f64>,
}

fn list(cli: &Cli, project: &Project) -> Result<(), Failure> {
    let runs = list_runs(&project.dir).map_err(|err| read_error(&project.dir, &err))?;
    let writer = writer_started(&project.root);
    let count = i64::try_from(runs.len()).unwrap_or(i64::MAX);
    let listed: Vec<ListedRun> = runs
        .iter()
        .zip(0..)
        .map(|(path, i)| {
            let info = LogInfo::read(path).unwrap_or_default();
            let result = match info.result(writer) {
                // Another project's run (a shared logs folder) is alive too.
                RunResult::Killed if crate::store::logs::is_being_written(path) => {
                    RunResult::Running
                }
                result => result,
            };
            let duration = match (result, info.started_at) {
                (RunResult::Running, Some(started)) => {
                    (Local::now().fixed_offset() - started).to_std().ok()
                }
                _ => info.duration,
            };
            ListedRun {
                index: i - count,
                name: file_name(path),
                path: path.display().to_string(),
                pipeline: info.pipeline,
                started_at: info
                    .started_at
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, false)),
                selection: info.selection,
                trigger: info.trigger,
                result: result.as_str(),
                exit_code: info.exit_code,
                duration_seconds: duration.map(seconds),
            }
        })
        .collect();
    let text = match cli.format {
        Format::Json | Format::Jsonl => {
            serde_json::to_string_pretty(&listed).unwrap_or_default() + "\n"
        }
        Format::Text if listed.is_empty() => {
            format!("no run logs yet in {}\n", project.dir.display())
        }
        Format::Text => list_table(&listed),
    };
    // Already JSON (or a table): written as it is.
    Output {
        json: false,
        ..Output::new(cli)
    }
    .write(text.as_bytes());
    Ok(())
}

/// `run  log  result  duration  selection`, oldest first, the run's index on the left.
fn list_table(runs: &[ListedRun]) -> String {
    let rows: Vec<[String; 5]> =
        std::iter::once(["run", "log", "result", "duration", "selection"].map(String::from))
            .chain(runs.iter().map(|run| {
                let result = match run.exit_code {
                    Some(code) if code != 0 => format!("{} (exit {code})", run.result),
                    _ => run.result.to_owned(),
                };
                let duration = run.duration_seconds.map_or_else(
                    || "-".to_owned(),
                    |s| format_duration(Duration::from_secs_f64(s)),
                );
                [
                    run.index.to_string(),
                    run.name.clone(),
                    result,
                    duration,
                    // A log is text written by a run; keep the table on its lines.
                    sanitize_for_terminal(run.selection.as_deref().unwrap_or("-").as_bytes()),
                ]
            }))
            .collect();
    let mut widths = [0; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let [index, name, result, duration, selection] = row;
        let line = format!(
            "{index:>w0$}  {name:<w1$}  {result:<w2$}  {duration:>w3$}  {selection}",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// When the run holding the project's lock took it; `None` when no run holds it.
fn writer_started(root: &Path) -> Option<DateTime<FixedOffset>> {
    let path = root.join(".pydeployer").join("lock");
    let text = crate::files::read_regular(&path, 64 * 1024).ok()?;
    let holder: Holder = serde_json::from_str(String::from_utf8_lossy(&text).trim()).ok()?;
    let inode = fs::metadata(&path).ok()?.ino();
    let held = match fs::read_to_string("/proc/locks") {
        Ok(locks) => locks.lines().any(|line| holds(line, holder.pid, inode)),
        // Without the table of locks, a live process of that id is taken for the holder.
        Err(_) => Path::new("/proc").join(holder.pid.to_string()).exists(),
    };
    held.then(|| holder.started_at.fixed_offset())
}

/// Whether a line of `/proc/locks` is an exclusive `flock` of process `pid` on the file
/// `inode`: `1: FLOCK  ADVISORY  WRITE 4065 fe:00:10010648 0 EOF` (a process waiting for a
/// lock has `->` after the number instead).
fn holds(line: &str, pid: u32, inode: u64) -> bool {
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.as_slice() {
        [_, "FLOCK", _, "WRITE", holder, file, ..] => {
            holder.parse() == Ok(pid)
                && file.rsplit(':').next().and_then(|i| i.parse().ok()) == Some(inode)
        }
        _ => false,
    }
}

/// The log of the run in progress, or of the next run to start (waited for); `None` when the
/// reader of standard output went away meanwhile.
fn wait_for_run(cli: &Cli, project: &Project) -> Result<Option<PathBuf>, Failure> {
    let listing = || list_runs(&project.dir).map_err(|err| read_error(&project.dir, &err));
    let seen = listing()?;
    if let Some(newest) = seen.last() {
        let info = LogInfo::read(newest).unwrap_or_default();
        if info.exit_code.is_none() && info.written_by(writer_started(&project.root)) {
            return Ok(Some(newest.clone()));
        }
    }
    let mut told = false;
    loop {
        if let Some(new) = listing()?.into_iter().rev().find(|p| !seen.contains(p)) {
            return Ok(Some(new));
        }
        if !told && !cli.quiet {
            crate::errln!("no run in progress; waiting for the next one (Ctrl-C to stop)");
        }
        told = true;
        if reader_gone() {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// Prints the log as it grows, until its last line is written or its run is gone.
fn follow(
    cli: &Cli,
    project: &Project,
    path: &Path,
    stage: Option<&str>,
    out: &mut Output,
) -> Result<(), Failure> {
    let mut file = crate::files::open_regular(path).map_err(|err| read_error(path, &err))?;
    let mut tail = Tail {
        stage,
        pending: Vec::new(),
        head: Vec::new(),
        header_done: false,
        started_at: None,
        found: false,
        ended: false,
    };
    let mut buf = vec![0; 64 * 1024];
    loop {
        // Asked before reading: once the run is gone, one more read gets all it wrote.
        let probe = LogInfo {
            started_at: tail.started_at,
            ..LogInfo::default()
        };
        let writing = probe.written_by(writer_started(&project.root));
        loop {
            let n = file.read(&mut buf).map_err(|err| read_error(path, &err))?;
            if n == 0 {
                break;
            }
            tail.push(&buf[..n], out);
            if out.closed {
                // The reader went away (`logs --follow | head -1`): nothing more to do.
                return Ok(());
            }
            if let Some(stage) = stage
                && tail.header_done
                && !tail.found
            {
                let info = LogInfo::parse(&tail.head, &[]);
                if !info.stages.iter().any(|s| s == stage) {
                    return no_lines(cli, path, &info, stage);
                }
            }
            if tail.ended {
                return tail.done(cli, path);
            }
        }
        if !writing {
            if !tail.pending.is_empty() {
                let mut last = std::mem::take(&mut tail.pending);
                last.push(b'\n');
                tail.push(&last, out);
            }
            if !cli.quiet {
                crate::errln!(
                    "{}: the run ended without its summary (it was killed, or could not write its log)",
                    file_name(path)
                );
            }
            return tail.done(cli, path);
        }
        if reader_gone() {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// Whether standard output is a pipe whose reader has gone (as GNU `tail -f` checks, so that
/// `logs --follow | head -1` ends even while no line comes).
fn reader_gone() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd, without waiting.
    let ready = unsafe { libc::poll(&raw mut fd, 1, 0) };
    ready > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// What `--follow` knows of the log read so far.
struct Tail<'a> {
    stage: Option<&'a str>,
    /// The start of a line whose end is not written yet.
    pending: Vec<u8>,
    /// The header's lines.
    head: Vec<u8>,
    header_done: bool,
    /// From the header: the run writing this log took the lock before this.
    started_at: Option<DateTime<FixedOffset>>,
    /// A line of `stage` was printed.
    found: bool,
    /// The run's last line was read.
    ended: bool,
}

impl Tail<'_> {
    /// The end: says so when `--stage` found no line.
    fn done(&self, cli: &Cli, path: &Path) -> Result<(), Failure> {
        match self.stage {
            Some(stage) if !self.found => {
                no_lines(cli, path, &LogInfo::parse(&self.head, &[]), stage)
            }
            _ => Ok(()),
        }
    }

    fn push(&mut self, bytes: &[u8], out: &mut Output) {
        self.pending.extend_from_slice(bytes);
        let Some(end) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let rest = self.pending.split_off(end + 1);
        let complete = std::mem::replace(&mut self.pending, rest);
        for line in complete.split_inclusive(|b| *b == b'\n') {
            if self.ended {
                break;
            }
            let parsed = LogLine::parse(line.strip_suffix(b"\n").unwrap_or(line));
            if let Some(parsed) = parsed {
                let runner = parsed.tag == RUNNER_TAG.as_bytes();
                if !self.header_done {
                    if runner {
                        self.head.extend_from_slice(line);
                        if let Some(started) = parsed.text.strip_prefix(b"started: ") {
                            self.started_at = std::str::from_utf8(started)
                                .ok()
                                .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
                        }
                    } else {
                        self.header_done = true;
                    }
                }
                self.ended = parsed.ends_run();
                if self.ended {
                    self.header_done = true;
                }
            }
            let shown = match self.stage {
                None => true,
                Some(stage) => parsed.is_some_and(|l| l.tag == stage.as_bytes()),
            };
            if shown {
                self.found = true;
                out.write(line);
            }
        }
        out.flush();
    }
}

/// Standard output: the log's bytes as they are, or made safe to show on a terminal (escape
/// sequences written out, as the run's own terminal output does), or with `--format json` one
/// JSON object per line (JSON Lines, as `journalctl -o json` prints). A closed pipe
/// (`pydeployer logs | head`) ends the output quietly.
struct Output {
    terminal: bool,
    json: bool,
    closed: bool,
}

/// A log line in JSON: `{"time": "12:03:04.567", "stage": "test", "text": "…"}`; `time` and
/// `stage` are null for a line that is not in the log's format (a log edited by hand).
#[derive(Debug, Serialize)]
struct JsonLine<'a> {
    time: Option<&'a str>,
    /// The stage's name, or `pydeployer` for the run's own lines (header and summary).
    stage: Option<std::borrow::Cow<'a, str>>,
    text: std::borrow::Cow<'a, str>,
}

impl<'a> JsonLine<'a> {
    fn of(line: &'a [u8]) -> Self {
        match LogLine::parse(line) {
            Some(parsed) => JsonLine {
                time: std::str::from_utf8(&line[..12]).ok(),
                stage: Some(String::from_utf8_lossy(parsed.tag)),
                text: String::from_utf8_lossy(parsed.text),
            },
            None => JsonLine {
                time: None,
                stage: None,
                text: String::from_utf8_lossy(line),
            },
        }
    }
}

impl Output {
    fn new(cli: &Cli) -> Self {
        Output {
            terminal: io::stdout().is_terminal(),
            json: cli.format == Format::Json,
            closed: false,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        let mut stdout = io::stdout().lock();
        let written = if self.json {
            bytes.split_inclusive(|b| *b == b'\n').try_for_each(|line| {
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                serde_json::to_writer(&mut stdout, &JsonLine::of(line)).map_err(io::Error::from)?;
                stdout.write_all(b"\n")
            })
        } else if self.terminal {
            bytes.split_inclusive(|b| *b == b'\n').try_for_each(|line| {
                let text = line.strip_suffix(b"\n").unwrap_or(line);
                stdout.write_all(sanitize_for_terminal(text).as_bytes())?;
                stdout.write_all(b"\n")
            })
        } else {
            stdout.write_all(bytes)
        };
        if written.is_err() {
            self.closed = true;
        }
    }

    fn flush(&mut self) {
        if io::stdout().flush().is_err() {
            self.closed = true;
        }
    }
}

/// `pydeployer artifacts [RUN]`: the files kept for a run (default: the newest), by stage.
pub(crate) fn artifacts(cli: &Cli, spec: Option<&str>) -> Result<(), Failure> {
    let project = locate(cli);
    let log = pick(&project, spec.unwrap_or("-1"))?;
    let dir = crate::store::artifacts::run_dir(&project.root, &log)
        .ok_or_else(|| Failure::Tool(miette::miette!("{} is not a run log", log.display())))?;
    let listed = crate::store::artifacts::list(&dir).map_err(|err| read_error(&dir, &err))?;
    if cli.format == crate::cli::Format::Json {
        let doc = serde_json::json!({
            "run": log.file_name().map(|n| n.to_string_lossy().into_owned()),
            "log": log,
            "dir": dir,
            "artifacts": listed,
        });
        crate::outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    if listed.is_empty() {
        crate::errln!("no artifacts were kept for {}", log.display());
        return Ok(());
    }
    let width = listed
        .iter()
        .map(|a| a.stage.len())
        .max()
        .unwrap_or(5)
        .max(5);
    crate::outln!("{:width$}  {:>10}  path", "stage", "size");
    for artifact in &listed {
        crate::outln!(
            "{:width$}  {:>10}  {}",
            artifact.stage,
            crate::actions::python::human_size(artifact.size),
            artifact.file.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::holds;

    #[test]
    fn an_exclusive_flock_of_the_pid_on_the_inode_is_a_holder() {
        let line = "1: FLOCK  ADVISORY  WRITE 4065 fe:00:10010648 0 EOF";
        assert!(holds(line, 4065, 10_010_648));
        assert!(!holds(line, 4066, 10_010_648));
        assert!(!holds(line, 4065, 10_010_649));
        assert!(!holds(
            "1: -> FLOCK  ADVISORY  WRITE 4065 fe:00:10010648 0 EOF",
            4065,
            10_010_648
        ));
        assert!(!holds(
            "2: POSIX  ADVISORY  WRITE 4065 fe:00:10010648 0 EOF",
            4065,
            10_010_648
        ));
    }
}
