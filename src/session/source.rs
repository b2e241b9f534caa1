//! What the run tests: the pushed branch (a clone), or the project's checkout as it is on disk
//! (`run --worktree`, `repo: { source: worktree }`), and a word when the two differ.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use crate::actions::{CommandLine, Snapshot, git};
use crate::error::{Failure, Problem};
use crate::exec::process;
use crate::pipeline::{Builtin, Pipeline, Repo, Source};
use crate::plan::Plan;

/// Where a worktree run's snapshot lives, under the project's root.
const SNAPSHOT_DIR: &str = ".pydeployer/worktree";

/// The pipeline as this run sees it (a worktree run's workspace is the snapshot), and the
/// snapshot to take.
pub(super) fn workspace(
    pipeline: &Pipeline,
    worktree: bool,
) -> Result<(Cow<'_, Pipeline>, Option<Snapshot>), Failure> {
    let Some(repo) = &pipeline.repo else {
        // Without `repo:` the stages run in the project itself: that is the working tree.
        return Ok((Cow::Borrowed(pipeline), None));
    };
    if !worktree && repo.source == Source::Clone {
        return Ok((settled_workdirs(Cow::Borrowed(pipeline)), None));
    }
    let checkout = git_capture(&pipeline.root, &["rev-parse", "--show-toplevel"]).ok_or_else(|| {
        Failure::from(
            Problem::general(format!(
                "a worktree run tests a snapshot of the project's git checkout, and {} is not in one",
                pipeline.root.display()
            ))
            .with_help("run without --worktree (and without `repo: { source: worktree }`) to test what was pushed"),
        )
    })?;
    let checkout = std::path::PathBuf::from(checkout);
    let snapshot_dir = pipeline.root.join(SNAPSHOT_DIR);
    // pydeployer's own files in the checkout are never part of what is tested.
    let exclude = [
        pipeline.logs.dir.as_path(),
        pipeline.archive.as_path(),
        repo.dir.as_path(),
        &pipeline.root.join(".pydeployer"),
    ]
    .iter()
    .filter_map(|path| inside(path, &checkout))
    .collect();
    let mut adjusted = pipeline.clone();
    adjusted.repo = Some(Repo {
        dir: snapshot_dir,
        source: Source::Worktree,
        ..repo.clone()
    });
    Ok((
        settled_workdirs(Cow::Owned(adjusted)),
        Some(Snapshot { checkout, exclude }),
    ))
}

/// The folder each stage runs in, decided before the run rather than when the stage starts:
/// while there is no workspace yet, a stage that does not need the clone (directly or not)
/// runs in the project's root for the whole run, even if the clone makes the workspace while
/// it waits its turn.
fn settled_workdirs(pipeline: Cow<'_, Pipeline>) -> Cow<'_, Pipeline> {
    let Some(repo) = &pipeline.repo else {
        return pipeline;
    };
    if repo.dir.is_dir() {
        return pipeline;
    }
    let cloners: Vec<&str> = pipeline
        .stages
        .iter()
        .filter(|s| s.builtin() == Some(Builtin::GitClone))
        .map(|s| s.name.as_str())
        .collect();
    let needs_clone = |stage: &crate::pipeline::Stage| {
        let mut todo: Vec<&str> = stage
            .needs
            .iter()
            .map(crate::pipeline::StageName::as_str)
            .collect();
        let mut seen: Vec<&str> = Vec::new();
        while let Some(name) = todo.pop() {
            if cloners.contains(&name) {
                return true;
            }
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            if let Some(need) = pipeline.stage(name) {
                todo.extend(need.needs.iter().map(crate::pipeline::StageName::as_str));
            }
        }
        false
    };
    let rooted: Vec<usize> = pipeline
        .stages
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.workdir.is_none() && s.builtin() != Some(Builtin::GitClone) && !needs_clone(s)
        })
        .map(|(i, _)| i)
        .collect();
    if rooted.is_empty() {
        return pipeline;
    }
    let mut pipeline = pipeline.into_owned();
    for i in rooted {
        pipeline.stages[i].workdir = Some(pipeline.root.clone());
    }
    Cow::Owned(pipeline)
}

/// Says, in one line on stderr, when a clone run tests something other than its checkout.
pub(super) fn say_if_differs(pipeline: &Pipeline, plan: &Plan) {
    if let Some(note) = differs(pipeline, plan) {
        crate::errln!("{note}");
    }
}

/// One line when a clone run tests something other than the checkout it was started from: the
/// checkout (a clone of the same repository) has uncommitted changes, or commits its remote's
/// branch does not have.
fn differs(pipeline: &Pipeline, plan: &Plan) -> Option<String> {
    let repo = pipeline.repo.as_ref()?;
    let clones = plan
        .steps
        .iter()
        .any(|s| pipeline.stages[s.stage].builtin() == Some(Builtin::GitClone));
    if !clones || repo.source != Source::Clone {
        return None;
    }
    let url = git_capture(
        &pipeline.root,
        &["config", "--get", &format!("remote.{}.url", repo.remote)],
    )?;
    if !git::same_repository(&absolute_url(&pipeline.root, &url), &repo.url) {
        return None;
    }
    let changed = git_capture(&pipeline.root, &["diff-index", "--name-only", "HEAD", "--"])
        .is_some_and(|out| !out.is_empty())
        || git_capture(
            &pipeline.root,
            &["ls-files", "--others", "--exclude-standard"],
        )
        .is_some_and(|out| !out.is_empty());
    let head = git_capture(
        &pipeline.root,
        &["rev-parse", "--verify", "--quiet", "HEAD"],
    );
    let pushed = git_capture(
        &pipeline.root,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &format!("refs/remotes/{}/{}", repo.remote, repo.branch),
        ],
    );
    let why = match (changed, head != pushed) {
        (false, false) => return None,
        (true, _) => "has uncommitted changes".to_owned(),
        (false, true) => format!(
            "is at {}, not at {}/{}",
            head.as_deref()
                .map_or("no commit", |h| &h[..h.len().min(7)]),
            repo.remote,
            repo.branch
        ),
    };
    Some(format!(
        "note: your checkout {why}; this run tests {}/{} as pushed (`run --worktree` tests what is on disk)",
        repo.remote, repo.branch
    ))
}

/// `git ARGS` in `dir` (pydeployer's own bookkeeping, killed after 10 s), its output when it
/// succeeds with some.
fn git_capture(dir: &Path, args: &[&str]) -> Option<String> {
    let env = git::pinned_environment(None, false, &BTreeMap::new());
    process::capture(&CommandLine::new("git", args.iter().copied()), dir, &env)
        .ok()
        .filter(|out| !out.is_empty())
}

/// `path` relative to `top`, when it is inside it.
fn inside(path: &Path, top: &Path) -> Option<String> {
    let relative = path.strip_prefix(top).ok()?;
    (!relative.as_os_str().is_empty()).then(|| relative.display().to_string())
}

/// A remote's URL as git would reach it from `dir`: a relative local path made absolute.
fn absolute_url(dir: &Path, url: &str) -> String {
    if crate::config::is_local_path(url) {
        dir.join(url).display().to_string()
    } else {
        url.to_owned()
    }
}
