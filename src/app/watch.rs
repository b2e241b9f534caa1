//! `pydeployer watch`: a run on each new commit of the branch (`git ls-remote`, polled), or
//! with `--files` on each change in the project folder (inotify, through notify and its full
//! debouncer). One run at a time, each a plain session run with trigger `watch`.
//!
//! The signals are held for the whole watch (`Stop::hold`): Ctrl-C during a run ends it as it
//! always does, and between runs it ends the watch at once; either way watch exits 130 (143,
//! 129), having started nothing that outlives it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, event::AccessKind, event::AccessMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};

use crate::actions::{CommandLine, git};
use crate::cli::{Cli, WatchArgs};
use crate::error::{Failure, Problem, exit};
use crate::events::Trigger;
use crate::exec::process;
use crate::exec::stop::Stop;
use crate::mask::Masker;
use crate::object_id::ObjectId;
use crate::pipeline::Pipeline;
use crate::session::{self, RunRequest};

/// How often a wait looks at the signals.
const TICK: Duration = Duration::from_millis(100);
/// Changes closer together than this are one change (an editor's save is several events).
const DEBOUNCE: Duration = Duration::from_millis(500);

pub(super) fn run(cli: &Cli, args: &WatchArgs) -> Result<(), Failure> {
    // A pipeline that does not load is refused before anything starts (exit 2).
    let pipeline = super::load(cli)?;
    if args.files {
        if pipeline.repo.is_some() {
            return Err(Problem::general(
                "`watch --files` is for a pipeline without `repo:`; this one tests what is pushed to its repository",
            )
            .with_help("`pydeployer watch` runs it on each new commit of the branch; `pydeployer run --worktree` tests what is on disk")
            .into());
        }
        files(cli, args, &pipeline)
    } else {
        if pipeline.repo.is_none() {
            return Err(Problem::general(
                "`watch` polls the repository's branch, and this pipeline has no `repo:`",
            )
            .with_help("`pydeployer watch --files` runs it on each change in the project folder")
            .into());
        }
        commits(cli, args, &pipeline)
    }
}

fn request(args: &WatchArgs) -> RunRequest {
    RunRequest {
        command: "watch",
        selection: super::selection(&args.select),
        trigger: Trigger::Watch,
        ..RunRequest::default()
    }
}

/// Polls the branch; a head that differs from the last one run (or the first one seen) starts
/// a run. Polling again as soon as a run ends coalesces what was pushed meanwhile into one run
/// on the newest commit.
fn commits(cli: &Cli, args: &WatchArgs, first: &Pipeline) -> Result<(), Failure> {
    let (stop, _hold) = hold()?;
    let request = request(args);
    let settings = super::settings(cli, true);
    let mut last_run: Option<ObjectId> = None;
    let mut last_problem: Option<String> = None;
    let mut pipeline = first.clone();
    crate::errln!(
        "watch: polling {} every {} (Ctrl-C to stop)",
        describe_branch(&pipeline),
        humantime::format_duration(args.interval)
    );
    loop {
        let head = remote_head(&pipeline);
        if let Some(code) = Stop::interrupted() {
            return Err(Failure::Exit(code));
        }
        match head {
            Ok(Some(head)) if last_run.as_ref() != Some(&head) => {
                last_problem = None;
                crate::errln!(
                    "watch: {} is at {}: running",
                    describe_branch(&pipeline),
                    head.short()
                );
                last_run = Some(head);
                // What is on disk now: an edit of pipeline.yml applies from the next run on.
                match crate::config::load(&cli.file) {
                    Ok(fresh) => pipeline = fresh,
                    Err(invalid) => {
                        show(Err(invalid.into()));
                        crate::errln!(
                            "watch: the pipeline does not load; waiting for the next commit"
                        );
                        continue;
                    }
                }
                let result = session::run(&pipeline, &request, &settings);
                if stop.signalled() {
                    return Err(Failure::Exit(
                        Stop::interrupted().unwrap_or(exit::INTERRUPTED),
                    ));
                }
                show(result);
                // At once: what was pushed during the run is the next run.
                continue;
            }
            Ok(Some(_)) => last_problem = None,
            Ok(None) => {
                let problem = format!(
                    "watch: {} has no such branch (yet); waiting",
                    describe_branch(&pipeline)
                );
                say_once(&mut last_problem, problem);
            }
            Err(why) => {
                let masker = Masker::for_pipeline(&pipeline);
                let problem = format!("watch: cannot ask the remote: {}", masker.mask_str(&why));
                say_once(&mut last_problem, problem);
            }
        }
        sleep(args.interval)?;
    }
}

/// Says `problem` unless it was the last thing said.
fn say_once(last: &mut Option<String>, problem: String) {
    if last.as_ref() != Some(&problem) {
        crate::errln!("{problem}");
        *last = Some(problem);
    }
}

fn describe_branch(pipeline: &Pipeline) -> String {
    let masker = Masker::for_pipeline(pipeline);
    pipeline.repo.as_ref().map_or_else(String::new, |repo| {
        format!("{} {}", masker.mask_str(&repo.url), repo.branch)
    })
}

/// The commit the remote's branch points at, as `git ls-remote` says (killed after 10 s).
fn remote_head(pipeline: &Pipeline) -> Result<Option<ObjectId>, String> {
    let Some(repo) = &pipeline.repo else {
        return Ok(None);
    };
    let mut env = git::pinned_environment(None, false, &BTreeMap::new());
    // Nobody is there to type a password: a remote that asks fails instead of waiting.
    env.insert("GIT_TERMINAL_PROMPT".into(), Some("0".into()));
    let answer = process::capture(&git::ls_remote(repo), &pipeline.root, &env)
        .map_err(|err| err.to_string())?;
    git::remote_head(repo, &answer)
}

/// Waits `how_long`, or less when a signal comes (then watch ends with its exit code).
fn sleep(how_long: Duration) -> Result<(), Failure> {
    let until = Instant::now() + how_long;
    loop {
        if let Some(code) = Stop::interrupted() {
            return Err(Failure::Exit(code));
        }
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        std::thread::sleep(TICK.min(until - now));
    }
}

fn hold() -> Result<(Arc<Stop>, crate::exec::stop::HoldGuard), Failure> {
    Stop::hold().map_err(|err| Failure::Tool(miette::miette!("cannot watch for Ctrl-C: {err}")))
}

/// How a run ended, in one line (its summary is above); watch goes on whatever it was.
fn show(result: Result<(), Failure>) {
    match result {
        Ok(()) => crate::errln!("watch: passed; waiting for the next change"),
        Err(Failure::Exit(code)) => {
            crate::errln!("watch: failed (exit {code}); waiting for the next change");
        }
        Err(Failure::Invalid(invalid)) => {
            let summary = invalid.to_string();
            for problem in invalid.problems {
                crate::errln!("{:?}", miette::Report::new(problem));
            }
            crate::errln!("{summary}");
            crate::errln!("watch: nothing ran; waiting for the next change");
        }
        Err(Failure::Tool(report) | Failure::Busy(report)) => {
            crate::errln!("{report:?}");
            crate::errln!("watch: the run stopped; waiting for the next change");
        }
    }
}

/// `watch --files`: a run now, then one after each change; a change during a run cancels it
/// (as Ctrl-C would, without ending the watch) and starts again.
fn files(cli: &Cli, args: &WatchArgs, first: &Pipeline) -> Result<(), Failure> {
    let (stop, _hold) = hold()?;
    let request = request(args);
    let settings = super::settings(cli, true);
    let ignore = Ignore::new(first);
    let running = Arc::new(AtomicBool::new(false));
    let (changes, changed) = mpsc::channel::<Vec<PathBuf>>();
    let handler = {
        let stop = Arc::clone(&stop);
        let running = Arc::clone(&running);
        move |result: DebounceEventResult| {
            let Ok(events) = result else {
                return;
            };
            let paths: Vec<PathBuf> = events
                .iter()
                .filter(|event| is_change(event.kind))
                .flat_map(|event| event.paths.iter().cloned())
                .collect();
            let paths = ignore.relevant(paths);
            if paths.is_empty() {
                return;
            }
            if running.load(Ordering::SeqCst) {
                stop.cancel();
            }
            let _ = changes.send(paths);
        }
    };
    let mut debouncer = new_debouncer(DEBOUNCE, None, handler)
        .map_err(|err| Failure::Tool(miette::miette!("cannot watch the project folder: {err}")))?;
    debouncer
        .watch(&first.root, RecursiveMode::Recursive)
        .map_err(|err| {
            Failure::Tool(miette::miette!(
                help = "on Linux, `sysctl fs.inotify.max_user_watches` bounds how many folders can be watched",
                "cannot watch {}: {err}",
                first.root.display()
            ))
        })?;
    crate::errln!(
        "watch: running on each change in {} (Ctrl-C to stop)",
        first.root.display()
    );
    let mut restart = false;
    loop {
        // What came before this run is in it.
        let mut seen = Vec::new();
        while let Ok(paths) = changed.try_recv() {
            seen.extend(paths);
        }
        if restart {
            crate::errln!(
                "watch: changed during the run: {}; starting again",
                describe_paths(&first.root, &seen)
            );
        }
        stop.clear_cancel();
        running.store(true, Ordering::SeqCst);
        let result = match crate::config::load(&cli.file) {
            Ok(pipeline) => session::run(&pipeline, &request, &settings),
            Err(invalid) => Err(invalid.into()),
        };
        running.store(false, Ordering::SeqCst);
        if stop.signalled() {
            return Err(Failure::Exit(
                Stop::interrupted().unwrap_or(exit::INTERRUPTED),
            ));
        }
        restart = matches!(result, Err(Failure::Exit(exit::INTERRUPTED)));
        if restart {
            continue;
        }
        show(result);
        // Until something changes, or a signal ends the watch.
        loop {
            if let Some(code) = Stop::interrupted() {
                return Err(Failure::Exit(code));
            }
            match changed.recv_timeout(TICK) {
                Ok(paths) => {
                    crate::errln!("watch: changed: {}", describe_paths(&first.root, &paths));
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Failure::Tool(miette::miette!(
                        "the watch on the project folder ended"
                    )));
                }
            }
        }
    }
}

/// The first few of `paths`, relative to `root`: `src/app.py, README.md and 4 more`.
fn describe_paths(root: &Path, paths: &[PathBuf]) -> String {
    let mut paths = paths.to_vec();
    paths.sort();
    paths.dedup();
    let names: Vec<String> = paths
        .iter()
        .take(3)
        .map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string())
        .collect();
    match paths.len().saturating_sub(names.len()) {
        0 => names.join(", "),
        more => format!("{} and {more} more", names.join(", ")),
    }
}

/// A change to a file's contents, name or metadata; not a read (inotify reports opening a
/// file, and a stage reads many).
fn is_change(kind: EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// What `watch --files` does not react to: pydeployer's own folders (logs, archive, the
/// workspace, `.pydeployer/`), `.git/`, and what the project's `.gitignore` files ignore.
struct Ignore {
    root: PathBuf,
    folders: Vec<PathBuf>,
    files: Vec<PathBuf>,
    /// `git` with the options that make it read the project's ignore files.
    git: Vec<String>,
}

impl Ignore {
    fn new(pipeline: &Pipeline) -> Ignore {
        let root = pipeline.root.clone();
        let mut folders = vec![
            pipeline.logs.dir.clone(),
            root.join("workspace"),
            root.join(".pydeployer"),
            root.join(".git"),
        ];
        let mut files = Vec::new();
        match pipeline.archive.parent() {
            Some(folder) if folder != root => folders.push(folder.to_path_buf()),
            _ => files.push(pipeline.archive.clone()),
        }
        if let Some(repo) = &pipeline.repo {
            folders.push(repo.dir.clone());
        }
        Ignore {
            git: git_for_ignores(&root),
            root,
            folders,
            files,
        }
    }

    /// The paths of `paths` that count as a change, relative to the root.
    fn relevant(&self, paths: Vec<PathBuf>) -> Vec<PathBuf> {
        let mut left: Vec<PathBuf> = paths
            .into_iter()
            .filter(|path| {
                path.starts_with(&self.root)
                    && path != &self.root
                    && !self.folders.iter().any(|f| path.starts_with(f))
                    && !self.files.contains(path)
            })
            .collect();
        left.sort();
        left.dedup();
        if left.is_empty() {
            return left;
        }
        let ignored = self.ignored(&left);
        left.retain(|path| !ignored.contains(path));
        left
    }

    /// Which of `paths` git's ignore rules ignore (none, when git cannot say).
    fn ignored(&self, paths: &[PathBuf]) -> Vec<PathBuf> {
        let env = git::pinned_environment(None, false, &BTreeMap::new());
        let mut ignored = Vec::new();
        for chunk in paths.chunks(200) {
            let relative: Vec<String> = chunk
                .iter()
                .filter_map(|p| p.strip_prefix(&self.root).ok())
                .map(|p| p.display().to_string())
                .collect();
            let args = self
                .git
                .iter()
                .cloned()
                .chain(["check-ignore".to_owned(), "--".to_owned()])
                .chain(relative);
            let command = CommandLine::new("git", args);
            // 0: some are ignored (listed), 1: none is; anything else: git could not say.
            if let Ok((Some(0), out)) = process::capture_code(&command, &self.root, &env) {
                ignored.extend(out.lines().map(|line| self.root.join(line)));
            }
        }
        ignored
    }
}

/// The options that make `git check-ignore` read the ignore files of the project at `root`:
/// none inside a git work tree (git finds it); elsewhere an empty repository of pydeployer's
/// own, in `.pydeployer/`, with the project as its work tree (so `.gitignore` files count
/// even in a folder that is not a repository).
fn git_for_ignores(root: &Path) -> Vec<String> {
    let env = git::pinned_environment(None, false, &BTreeMap::new());
    let inside = process::capture(
        &CommandLine::new("git", ["rev-parse", "--is-inside-work-tree"]),
        root,
        &env,
    )
    .is_ok_and(|answer| answer == "true");
    if inside {
        return Vec::new();
    }
    let private = root.join(".pydeployer").join("ignore.git");
    if !private.join("HEAD").is_file() {
        let _ = crate::store::state::StateDir::open(root);
        let _ = process::capture(
            &CommandLine::new(
                "git",
                [
                    "init".to_owned(),
                    "--quiet".to_owned(),
                    "--bare".to_owned(),
                    "--end-of-options".to_owned(),
                    private.display().to_string(),
                ],
            ),
            root,
            &env,
        );
    }
    vec![
        format!("--git-dir={}", private.display()),
        format!("--work-tree={}", root.display()),
    ]
}
