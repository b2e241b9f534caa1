//! The git actions: clone or pull, commit, push, revert.
//!
//! Values from the YAML are checked by `config` (no leading `-`, valid branch names) and are
//! still passed after `--end-of-options` or as positional parameters of a fixed script, never
//! pasted into a command line.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::actions::CommandLine;
use crate::object_id::ObjectId;
use crate::pipeline::Repo;

/// Git identity used only when the user has none configured (a fresh CI-like machine).
pub(crate) const FALLBACK_IDENTITY: &str = r"git config user.name >/dev/null || export GIT_AUTHOR_NAME=pydeployer GIT_COMMITTER_NAME=pydeployer
git config user.email >/dev/null || export GIT_AUTHOR_EMAIL=pydeployer@localhost GIT_COMMITTER_EMAIL=pydeployer@localhost
";

/// `GIT_*` variables that only say who commits or how to reach a remote. Every other one
/// (`GIT_DIR`, `GIT_WORK_TREE`, `GIT_INDEX_FILE`, `GIT_OBJECT_DIRECTORY`, `GIT_CONFIG_*`,
/// `GIT_EXEC_PATH`, …) can point git at another repository or other programs, and is removed
/// from pydeployer's own git calls.
const GIT_KEPT: &[&str] = &[
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_COMMITTER_DATE",
    "GIT_ASKPASS",
    "GIT_TERMINAL_PROMPT",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_SSH_VARIANT",
];
const GIT_KEPT_PREFIXES: &[&str] = &["GIT_TRACE", "GIT_HTTP_", "GIT_SSL_"];

fn kept(key: &str) -> bool {
    !key.starts_with("GIT_")
        || GIT_KEPT.contains(&key)
        || GIT_KEPT_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The environment changes that pin pydeployer's own git calls to the workspace clone:
/// every redirecting `GIT_*` variable of the runner's environment and of `set` (the pipeline's
/// `env:`) is removed, and `GIT_DIR`/`GIT_WORK_TREE` name the clone (unless
/// it is about to be cloned: `cloning` and the folder is empty). `None` means "remove".
pub fn pinned_environment(
    repo: Option<&Repo>,
    cloning: bool,
    set: &BTreeMap<String, Option<String>>,
) -> BTreeMap<String, Option<String>> {
    let mut env: BTreeMap<String, Option<String>> = std::env::vars_os()
        .filter_map(|(key, _)| key.into_string().ok())
        .chain(set.keys().cloned())
        .filter(|key| !kept(key))
        .map(|key| (key, None))
        .collect();
    if let Some(repo) = repo {
        let about_to_clone = cloning && is_empty_or_missing(&repo.dir);
        if !about_to_clone {
            // Also where it is not a clone: git must fail there, not find a repository
            // further up (the project's own).
            let git_dir = repo.dir.join(".git");
            env.insert("GIT_DIR".into(), Some(git_dir.display().to_string()));
            env.insert("GIT_WORK_TREE".into(), Some(repo.dir.display().to_string()));
        }
    }
    env
}

/// `git clone` when the workspace is not there yet, `git pull --ff-only` when it is a clone
/// of the same repository; anything else in its place is an error, never overwritten.
pub fn clone_or_pull(repo: &Repo) -> Result<Vec<CommandLine>, String> {
    let dir = &repo.dir;
    if is_empty_or_missing(dir) {
        let parent = dir.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        return Ok(vec![CommandLine::new(
            "git",
            [
                "clone".to_owned(),
                "--branch".to_owned(),
                repo.branch.clone(),
                "--end-of-options".to_owned(),
                repo.url.clone(),
                dir.display().to_string(),
            ],
        )]);
    }
    match remote_url(dir, &repo.remote) {
        Some(url) if same_repository(&url, &repo.url) => Ok(if on_branch(dir, &repo.branch) {
            vec![pull(repo)]
        } else {
            vec![switch_and_pull(repo)]
        }),
        Some(url) => Err(format!(
            "{} is a clone of {url}, not of {}; move it away or set `repo.dir` to another folder",
            dir.display(),
            repo.url
        )),
        None => Err(format!(
            "{} exists and is not a clone of {} (no remote `{}`); move it away or set `repo.dir` to another folder",
            dir.display(),
            repo.url,
            repo.remote
        )),
    }
}

/// Where a snapshot's script leaves word that the checkout held uncommitted changes (inside the
/// snapshot's own `.git`, which only pydeployer writes).
const UNCOMMITTED_MARK: &str = "pydeployer-uncommitted";

/// `run --worktree`: the workspace becomes a snapshot of the project's own checkout as it is
/// on disk, without touching the checkout (its index, stash and files stay as they are): a
/// clone that shares its objects, with the files git would show (tracked, with their changes;
/// untracked, unless ignored) copied over it, and its remote pointed at `repo.url`.
pub fn snapshot(repo: &Repo, snapshot: &super::Snapshot) -> Vec<CommandLine> {
    let script = format!(
        r#"unset GIT_DIR GIT_WORK_TREE
set -e
checkout=$1 dir=$2 url=$3 remote=$4
shift 4
rm -rf -- "$dir"
git clone --quiet --shared --no-checkout --origin "$remote" -- "$checkout" "$dir"
( cd "$checkout" && git ls-files -z --cached --others --exclude-standard -- . "$@" \
    | tar --null --no-recursion --ignore-failed-read -cf - -T - 2>/dev/null ) | tar -xf - -C "$dir"
cd "$dir"
git reset --quiet
git remote set-url -- "$remote" "$url"
if [ -n "$(git status --porcelain)" ]; then
  touch .git/{UNCOMMITTED_MARK}
  echo "the snapshot holds uncommitted changes: it can be tested, not deployed"
  git status --short
else
  echo "the snapshot is $(git rev-parse --short HEAD), with no uncommitted changes"
fi"#
    );
    let checkout = snapshot.checkout.display().to_string();
    let dir = repo.dir.display().to_string();
    let mut args = vec![
        "-c".to_owned(),
        script,
        "git/clone".to_owned(),
        checkout.clone(),
        dir.clone(),
        repo.url.clone(),
        repo.remote.clone(),
    ];
    args.extend(
        snapshot
            .exclude
            .iter()
            .map(|path| format!(":(exclude){path}")),
    );
    vec![CommandLine::new("sh", args).shown_as(format!(
        "snapshot of {checkout} as it is on disk into {dir}"
    ))]
}

/// A deploy from a snapshot that held uncommitted changes is refused: what it would push is
/// not a commit anyone made.
pub fn refuse_uncommitted_snapshot(repo: &Repo) -> Result<(), String> {
    if repo.dir.join(".git").join(UNCOMMITTED_MARK).exists() {
        return Err(format!(
            "refusing to deploy: {} is a snapshot of a checkout with uncommitted changes; commit them and run again (or run without --worktree)",
            repo.dir.display()
        ));
    }
    Ok(())
}

fn pull(repo: &Repo) -> CommandLine {
    CommandLine::new(
        "git",
        [
            "pull",
            "--ff-only",
            "--end-of-options",
            &repo.remote,
            &repo.branch,
        ],
    )
}

/// The workspace is on another branch (`repo.branch` changed): it is switched to the
/// configured one, made to track the remote's, then pulled. A pull into the old branch would
/// mix the two, and the deploy would push the old branch's commits to the new one.
fn switch_and_pull(repo: &Repo) -> CommandLine {
    let script = r#"git fetch --quiet --end-of-options "$1" "+refs/heads/$2:refs/remotes/$1/$2" || exit
if git rev-parse --verify --quiet --end-of-options "refs/heads/$2" >/dev/null; then
  git switch --quiet --end-of-options "$2" || exit
else
  git switch --quiet --create "$2" --end-of-options "refs/remotes/$1/$2" || exit
fi
git branch --quiet --set-upstream-to="$1/$2" || exit
echo "the workspace is now on branch $2 (repo.branch), tracking $1/$2"
exec git pull --ff-only --end-of-options "$1" "$2""#;
    CommandLine::new(
        "sh",
        ["-c", script, "git/clone", &repo.remote, &repo.branch],
    )
    .shown_as(format!(
        "git switch {} && {}",
        super::quote(&repo.branch),
        pull(repo)
    ))
}

/// Whether the clone at `dir` has `branch` checked out, from its `HEAD` file.
fn on_branch(dir: &Path, branch: &str) -> bool {
    crate::files::read_regular(&dir.join(".git").join("HEAD"), SMALL_FILE)
        .is_ok_and(|head| head.trim_ascii() == format!("ref: refs/heads/{branch}").as_bytes())
}

/// The most read of a clone's small files (`HEAD`, `config`).
const SMALL_FILE: u64 = 1 << 20;

/// `git add -A` and a commit with `message`; nothing to commit is a success, said so.
pub fn commit(message: &str) -> Vec<CommandLine> {
    let script = format!(
        "{FALLBACK_IDENTITY}git add -A || exit\nif git diff --cached --quiet; then echo 'nothing to commit: the working tree is clean'; exit 0; fi\ngit commit -m \"$1\""
    );
    vec![
        CommandLine::new("sh", ["-c", &script, "git/commit", message]).shown_as(format!(
            "git add -A && git commit -m {}",
            super::quote(message)
        )),
    ]
}

/// A deploy's commands between two probes: the remote's branch as the workspace saw it before
/// (`previous_commit`), and the commit the workspace holds after (`commit`).
pub fn probed(repo: &Repo, commands: Vec<CommandLine>) -> Vec<CommandLine> {
    let remote_ref = format!("refs/remotes/{}/{}^{{commit}}", repo.remote, repo.branch);
    let mut all = vec![rev_parse(&remote_ref)];
    all.extend(commands);
    all.push(rev_parse("HEAD^{commit}"));
    all
}

/// `git ls-remote` of the repository's branch: what `watch` polls (pydeployer's own
/// bookkeeping, run from the project root, where a relative `repo.url` starts).
pub fn ls_remote(repo: &Repo) -> CommandLine {
    CommandLine::new(
        "git",
        [
            "ls-remote".to_owned(),
            "--end-of-options".to_owned(),
            repo.url.clone(),
            format!("refs/heads/{}", repo.branch),
        ],
    )
}

/// The commit [`ls_remote`] says the branch points at; `None` when the remote has no such
/// branch. An answer that is not `<object id>\trefs/heads/<branch>` is an error (it came from
/// the network).
pub fn remote_head(repo: &Repo, answer: &str) -> Result<Option<ObjectId>, String> {
    let wanted = format!("refs/heads/{}", repo.branch);
    for line in answer.lines() {
        let Some((id, name)) = line.split_once('\t') else {
            return Err(format!(
                "`git ls-remote` answered a line that is not `ID\\tREF`: {line:?}"
            ));
        };
        if name == wanted {
            return id.parse::<ObjectId>().map(Some).map_err(|_| {
                format!("`git ls-remote` answered `{id}`, which is not an object id")
            });
        }
    }
    Ok(None)
}

/// The commit the workspace holds (a probe of a git action, so git is pinned to it).
pub fn head() -> CommandLine {
    rev_parse("HEAD^{commit}")
}

fn rev_parse(what: &str) -> CommandLine {
    CommandLine::probe(
        "git",
        ["rev-parse", "--verify", "--quiet", "--end-of-options", what],
    )
}

/// The answers of [`probed`]'s probes: `(previous_commit, commit)`, each a full object id or
/// `None` (no such ref, or an answer that is not an object id).
pub fn answers(answers: &[String]) -> (Option<ObjectId>, Option<ObjectId>) {
    let id = |answer: Option<&String>| answer.and_then(|a| a.trim().parse::<ObjectId>().ok());
    match answers {
        [previous, .., head] => (id(Some(previous)), id(Some(head))),
        // The stage ended before its last probe ran.
        [previous] => (id(Some(previous)), None),
        [] => (None, None),
    }
}

/// Pushes HEAD to the branch; a rejected push fails with git's message (never forced).
pub fn push(repo: &Repo) -> Vec<CommandLine> {
    vec![CommandLine::new(
        "git",
        [
            "push".to_owned(),
            "--end-of-options".to_owned(),
            repo.remote.clone(),
            format!("HEAD:refs/heads/{}", repo.branch),
        ],
    )]
}

/// Reverts the last deploy (or every commit after `to`, newest first) and pushes.
///
/// It starts from what the remote's branch holds (fetched first, with `--prune`, so a branch
/// deleted there is not resurrected from a stale remote-tracking ref): the workspace may hold
/// a build that was never deployed (its tests failed), and reverting that would publish it. A
/// workspace behind the remote catches up first; one with commits the remote does not have,
/// or with uncommitted changes, stops the rollback, with what to do.
///
/// With `to`, the commit must still be in the branch's history, and the result is checked to
/// hold that commit's tree. Whatever fails (a merge in the range, a check, the push, a
/// signal), the workspace is put back where the rollback found it, so the next run never
/// deploys half a rollback.
pub fn revert(repo: &Repo, to: Option<&ObjectId>) -> Vec<CommandLine> {
    let script = format!(
        r#"{FALLBACK_IDENTITY}deployed="refs/remotes/$2/$3"
git rev-parse --verify --quiet --end-of-options "$deployed^{{commit}}" >/dev/null || {{ echo "$2 has no branch $3: nothing was deployed there" >&2; exit 1; }}
start=$(git rev-parse --verify --quiet --end-of-options "HEAD^{{commit}}") || {{ echo "the workspace has no commit to start from" >&2; exit 1; }}
if ! git diff --quiet HEAD -- || ! git diff --cached --quiet HEAD --; then
  echo "the workspace has uncommitted changes: a rollback starts from a clean workspace, so it stops here" >&2
  echo "commit them with a run, or drop them with: git -C "$PWD" reset --hard" >&2
  exit 1
fi
if ! git merge-base --is-ancestor --end-of-options HEAD "$deployed"; then
  echo "the workspace holds commits that $2/$3 does not (a build that was not deployed): a rollback reverts what was deployed, so it stops here" >&2
  echo "deploy them first, or drop them with: git -C "$PWD" reset --hard $2/$3" >&2
  exit 1
fi
undo() {{
  trap '' TERM INT HUP
  git revert --abort >/dev/null 2>&1
  git reset --quiet --hard --end-of-options "$start" >/dev/null 2>&1
  echo "the rollback failed: the workspace is back at $start, where the rollback found it, and $2/$3 is unchanged" >&2
  exit "${{1:-1}}"
}}
trap 'undo 143' TERM
trap 'undo 130' INT
trap 'undo 129' HUP
git merge --quiet --ff-only --end-of-options "$deployed" || undo
if [ -n "$1" ]; then
  if ! git merge-base --is-ancestor --end-of-options "$1" HEAD 2>/dev/null; then
    echo "commit $1 is no longer in the history of $2/$3 (the branch was rewritten, or force-pushed): reverting what came after it cannot give back its tree" >&2
    undo
  fi
  if git diff --quiet --end-of-options "$1" HEAD --; then echo 'the branch already holds that commit'"'"'s files: nothing to revert'; exit 0; fi
  from=$(git rev-parse --short HEAD) to=$(git rev-parse --short "$1")
  echo "reverting $to..$from ($(git rev-list --count "$1..HEAD") commit(s)) in one commit, back to the files of $to"
  git revert --no-commit --end-of-options "$1..HEAD" || undo
  git commit --quiet -m "Revert $to..$from: back to the files of $to" -m "Rolled back by pydeployer: the files are exactly those of $1; no history is rewritten." || undo
  echo "$2/$3 gets $(git rev-parse --short HEAD), with the files of $to"
  if ! git diff --quiet --end-of-options "$1" HEAD --; then
    echo "the reverts did not give back the tree of $1, so nothing is pushed" >&2
    undo
  fi
else
  git revert --no-edit --end-of-options HEAD || undo
fi
git push --end-of-options "$2" "HEAD:refs/heads/$3" || undo"#
    );
    let target = to.map_or("", ObjectId::as_str);
    let revert = match to {
        Some(commit) => format!("git revert --no-commit {commit}..HEAD && git commit"),
        None => "git revert --no-edit HEAD".to_owned(),
    };
    let push = push(repo)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" && ");
    // Fetched first, with `--prune` (a branch deleted there is not resurrected from a stale
    // remote-tracking ref), so that the probe before the rollback sees what the remote holds.
    let fetch = CommandLine::new(
        "git",
        [
            "fetch",
            "--quiet",
            "--prune",
            "--end-of-options",
            repo.remote.as_str(),
        ],
    );
    vec![
        fetch,
        CommandLine::new(
            "sh",
            [
                "-c",
                &script,
                "git/revert",
                target,
                &repo.remote,
                &repo.branch,
            ],
        )
        .shown_as(format!("{revert} && {push}")),
    ]
}

fn is_empty_or_missing(dir: &Path) -> bool {
    fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

/// The URL of `remote` in the clone at `dir`, read from its config file (no process needed).
fn remote_url(dir: &Path, remote: &str) -> Option<String> {
    let config = crate::files::read_regular(&dir.join(".git").join("config"), SMALL_FILE).ok()?;
    let config = String::from_utf8_lossy(&config);
    let header = format!("[remote \"{remote}\"]");
    let mut in_section = false;
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == header;
        } else if in_section {
            if let Some((key, value)) = line.split_once('=') {
                if key.trim() == "url" {
                    return Some(value.trim().to_owned());
                }
            }
        }
    }
    None
}

/// Whether two URLs or paths name the same repository (paths compared once resolved).
pub fn same_repository(a: &str, b: &str) -> bool {
    let canonical = |s: &str| -> PathBuf {
        fs::canonicalize(s).unwrap_or_else(|_| PathBuf::from(s.trim_end_matches('/')))
    };
    a == b || canonical(a) == canonical(b)
}
