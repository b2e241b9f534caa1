//! Local first: `run --worktree` tests the checkout as it is on disk, and never deploys a
//! snapshot of uncommitted changes; a clone run says when it tests something else.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use common::{Project, git};

const PIPELINE: &str = "\
repo: { url: ../origin.git }
stages:
  clone: { uses: git/clone }
  test: { uses: pytest, needs: [clone] }
  deploy: { uses: git/push, needs: [test] }
";

/// `app/` is the project (a checkout with pipeline.yml and the code), pushed to `origin.git`.
fn checkout() -> (Project, std::path::PathBuf) {
    let project = Project::new();
    git(
        project.path(),
        &["init", "-q", "--bare", "-b", "master", "origin.git"],
    );
    project
        .file("app/pipeline.yml", PIPELINE)
        .file("app/calc.py", "def add(a, b):\n    return a + b\n")
        .file(
            "app/test_calc.py",
            "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        )
        .file(
            "app/.gitignore",
            "logs/\narchive/\nworkspace/\n__pycache__/\n.pytest_cache/\n",
        );
    let app = project.join("app");
    git(&app, &["init", "-q", "-b", "master"]);
    git(&app, &["add", "-A"]);
    git(&app, &["commit", "-q", "-m", "first"]);
    git(&app, &["remote", "add", "origin", "../origin.git"]);
    git(&app, &["push", "-q", "origin", "master"]);
    (project, app)
}

fn pydeployer(app: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin!("pydeployer"))
        .args(args)
        .current_dir(app)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `git status`, the index and the stash say, to compare before and after.
fn state(app: &std::path::Path) -> (String, Vec<u8>, String) {
    (
        git(app, &["status", "--porcelain", "--untracked-files=all"]),
        std::fs::read(app.join(".git/index")).unwrap(),
        git(app, &["stash", "list"]),
    )
}

#[test]
fn the_worktree_is_tested_as_it_is_and_left_as_it_was() {
    let (project, app) = checkout();
    // An uncommitted change that breaks the test, a staged file, an untracked file, a stash.
    project.file("app/notes.txt", "stashed\n");
    git(&app, &["add", "notes.txt"]);
    git(&app, &["stash", "-q"]);
    project.file("app/calc.py", "def add(a, b):\n    return a - b\n");
    project.file("app/staged.txt", "staged\n");
    git(&app, &["add", "staged.txt"]);
    project.file("app/untracked.txt", "new\n");
    let before = state(&app);

    // A clone run tests what was pushed (green), and says the checkout differs.
    let (code, err) = pydeployer(&app, &["run", "test"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("note: your checkout has uncommitted changes"),
        "{err}"
    );

    // The worktree run tests what is on disk: red, on the test the change broke.
    let (code, err) = pydeployer(&app, &["run", "--worktree"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("test_calc.py::test_add"), "{err}");
    assert!(err.contains("deploy skipped"), "{err}");
    assert_eq!(state(&app), before, "the checkout changed");
    let snapshot = app.join(".pydeployer/worktree");
    assert!(snapshot.join("untracked.txt").exists());
    assert!(snapshot.join("staged.txt").exists());
    // pydeployer's own folders are not part of what is tested.
    assert!(!snapshot.join("logs").exists());
}

#[test]
fn a_snapshot_of_uncommitted_changes_is_never_deployed_and_a_clean_one_is() {
    let (project, app) = checkout();
    let origin = project.join("origin.git");
    let pushed = git(&origin, &["rev-parse", "master"]);
    // A harmless uncommitted change: the tests pass, the deploy refuses.
    project.file("app/README", "readme\n");
    let (code, err) = pydeployer(&app, &["run", "--worktree"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refusing to deploy"), "{err}");
    assert!(err.contains("uncommitted changes"), "{err}");
    assert_eq!(git(&origin, &["rev-parse", "master"]), pushed);
    // Committed (not pushed): the snapshot is clean, and its commit is deployed.
    git(&app, &["add", "README"]);
    git(&app, &["commit", "-q", "-m", "readme"]);
    let (code, err) = pydeployer(&app, &["run", "--worktree"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        git(&origin, &["rev-parse", "master"]),
        git(&app, &["rev-parse", "HEAD"])
    );
    // The same from the YAML.
    project.file(
        "app/pipeline.yml",
        &PIPELINE.replace("url: ../origin.git", "url: ../origin.git, source: worktree"),
    );
    project.file("app/README", "changed\n");
    let (code, err) = pydeployer(&app, &["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refusing to deploy"), "{err}");
}
