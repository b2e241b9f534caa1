//! Rollback and the deploy ledger against what a hand, another project or bad luck leaves on
//! disk and in the remote: hostile ledger values, a shared ledger, merges, force-pushes, a
//! deleted branch, a changed `repo.branch`. Real git, a local bare origin.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use common::{Project, git, push_seed};

const PIPELINE: &str = "\
name: app
repo: { url: origin.git }
stages:
  clone: { uses: git/clone }
  build: { uses: git/commit, needs: [clone] }
  deploy: { uses: git/push, needs: [build] }
  rollback: { uses: git/revert, when: manual }
";

fn project() -> Project {
    let project = Project::with_pipeline(PIPELINE);
    project.file("seed/app.txt", "one\n");
    push_seed(&project);
    project
}

fn origin_head(project: &Project) -> String {
    git(&project.join("origin.git"), &["rev-parse", "master"])
}

fn workspace_head(project: &Project) -> String {
    git(&project.join("workspace"), &["rev-parse", "HEAD"])
}

fn ledger(project: &Project) -> serde_json::Value {
    serde_json::from_str(&project.read("archive/deploy_history.json")).expect("ledger is JSON")
}

fn set_ledger(project: &Project, ledger: &serde_json::Value) {
    project.file(
        "archive/deploy_history.json",
        &serde_json::to_string_pretty(ledger).unwrap(),
    );
}

/// A new commit on origin's master, made in `seed/`.
fn commit_upstream(project: &Project, file: &str, text: &str, message: &str) {
    let seed = project.join("seed");
    project.file(&format!("seed/{file}"), text);
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "-q", "-m", message]);
    git(&seed, &["push", "-q", "origin", "master"]);
}

/// Three deploys, each with a new file.
fn three_deploys(project: &Project) {
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    for n in 2..=3 {
        project.file(&format!("workspace/f{n}.txt"), "x\n");
        let (code, _, err) = project.run(&["run", "-q"]);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(ledger(project).as_array().unwrap().len(), 3);
}

#[test]
fn a_ledger_commit_that_is_an_option_never_reaches_git() {
    let project = project();
    three_deploys(&project);
    let before = origin_head(&project);
    let original = ledger(&project);
    for hostile in ["--output=victim.txt", "HEAD~3", "master"] {
        project.file("victim.txt", "precious\n");
        project.file("workspace/victim.txt", "precious\n");
        let mut entries = original.clone();
        entries[2]["commit"] = hostile.into();
        set_ledger(&project, &entries);
        let written = project.read("archive/deploy_history.json");
        let (code, _, err) = project.run(&["rollback", "--to", "3"]);
        assert_eq!(code, 2, "{hostile}: {err}");
        assert!(err.contains("deploy_history.json"), "{err}");
        assert!(err.contains("not a full commit id"), "{err}");
        assert!(err.contains("line "), "the place is not named: {err}");
        assert_eq!(project.read("victim.txt"), "precious\n");
        assert_eq!(project.read("workspace/victim.txt"), "precious\n");
        assert_eq!(origin_head(&project), before, "origin changed");
        // Nothing ran, nothing was written.
        assert_eq!(project.read("archive/deploy_history.json"), written);
        // A deploy refuses the ledger too rather than rewrite it.
        let (code, _, err) = project.run(&["run", "-q"]);
        assert_eq!(code, 2, "{err}");
        assert_eq!(project.read("archive/deploy_history.json"), written);
    }
}

#[test]
fn rollback_to_refuses_an_entry_of_another_pipeline_or_an_ambiguous_id() {
    let project = project();
    three_deploys(&project);
    let before = origin_head(&project);
    let original = ledger(&project);
    for (field, value) in [
        ("branch", "release"),
        ("remote", "upstream"),
        ("repo", "other.git"),
    ] {
        let mut entries = original.clone();
        entries[0][field] = value.into();
        set_ledger(&project, &entries);
        let (code, _, err) = project.run(&["rollback", "--to", "1"]);
        assert_eq!(code, 2, "{field}: {err}");
        assert!(err.contains(&format!("`{value}`")), "{err}");
        assert!(err.contains("not of this pipeline's"), "{err}");
    }
    let mut entries = original.clone();
    entries[1]["id"] = 1.into();
    set_ledger(&project, &entries);
    let (code, _, err) = project.run(&["rollback", "--to", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("2 entries with id 1"), "{err}");
    assert_eq!(origin_head(&project), before, "origin changed");
}

#[test]
fn a_failed_rollback_to_leaves_the_workspace_as_it_found_it() {
    let project = project();
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    // A merge commit, then c2, between deploy 1 and the next deploy.
    let seed = project.join("seed");
    git(&seed, &["checkout", "-q", "-b", "side"]);
    commit_upstream(&project, "side.txt", "side\n", "side");
    git(&seed, &["checkout", "-q", "master"]);
    commit_upstream(&project, "main.txt", "main\n", "main");
    git(
        &seed,
        &["merge", "-q", "--no-ff", "-m", "merge side", "side"],
    );
    git(&seed, &["push", "-q", "origin", "master"]);
    commit_upstream(&project, "c2.txt", "c2\n", "c2");
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    let deployed = origin_head(&project);
    assert_eq!(workspace_head(&project), deployed);

    let (code, _, err) = project.run(&["rollback", "--to", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("back at"), "{err}");
    assert_eq!(origin_head(&project), deployed, "origin changed");
    assert_eq!(workspace_head(&project), deployed, "a half revert was left");
    let workspace = project.join("workspace");
    assert_eq!(git(&workspace, &["status", "--porcelain"]), "");
    assert!(!project.exists("workspace/.git/REVERT_HEAD"));
    assert!(!project.exists("workspace/.git/sequencer"));
    assert_eq!(ledger(&project)[2]["status"], "failed");

    // The next plain run has nothing of the rollback to deploy.
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    assert_eq!(
        origin_head(&project),
        deployed,
        "a half rollback was deployed"
    );
}

#[test]
fn rollback_does_not_resurrect_a_branch_deleted_on_the_remote() {
    let project = project();
    three_deploys(&project);
    git(
        &project.join("origin.git"),
        &["update-ref", "-d", "refs/heads/master"],
    );
    let (code, _, err) = project.run(&["rollback"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("has no branch master"), "{err}");
    let branches = git(&project.join("origin.git"), &["branch", "--list"]);
    assert_eq!(branches, "", "the branch came back");
}

#[test]
fn rollback_to_after_a_force_push_fails_clearly_instead_of_claiming_success() {
    let project = project();
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    project.file("workspace/two.txt", "two\n");
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    // Someone rewrites history: the first commit amended, force-pushed.
    let seed = project.join("seed");
    project.file("seed/app.txt", "rewritten\n");
    git(&seed, &["commit", "-q", "-a", "--amend", "-m", "rewritten"]);
    git(&seed, &["push", "-q", "--force", "origin", "master"]);
    let workspace = project.join("workspace");
    git(&workspace, &["fetch", "-q", "origin"]);
    git(&workspace, &["reset", "-q", "--hard", "origin/master"]);
    let forced = origin_head(&project);

    let (code, _, err) = project.run(&["rollback", "--to", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no longer in the history"), "{err}");
    assert_eq!(origin_head(&project), forced, "origin changed");
    assert_eq!(workspace_head(&project), forced);
    assert_eq!(ledger(&project)[2]["status"], "failed");
}

#[test]
fn changing_the_branch_switches_the_workspace_to_it() {
    let project = project();
    // `release` is behind master: master has a commit that was never released.
    git(
        &project.join("origin.git"),
        &["branch", "release", "master"],
    );
    assert_eq!(project.run(&["run", "-q", "clone"]).0, 0);
    commit_upstream(&project, "unreleased.txt", "wip\n", "unreleased");
    assert_eq!(project.run(&["run", "-q", "clone"]).0, 0);
    let release = git(&project.join("origin.git"), &["rev-parse", "release"]);

    project.file(
        "pipeline.yml",
        &PIPELINE.replace(
            "{ url: origin.git }",
            "{ url: origin.git, branch: release }",
        ),
    );
    let (code, _, err) = project.run(&["run", "clone", "deploy"]);
    assert_eq!(code, 0, "{err}");
    let workspace = project.join("workspace");
    assert_eq!(
        git(&workspace, &["symbolic-ref", "--short", "HEAD"]),
        "release"
    );
    assert_eq!(
        git(&workspace, &["rev-parse", "--abbrev-ref", "@{upstream}"]),
        "origin/release"
    );
    assert!(!project.exists("workspace/unreleased.txt"));
    assert_eq!(
        git(&project.join("origin.git"), &["rev-parse", "release"]),
        release,
        "master's unreleased commit was pushed to release"
    );
}
