//! Which stages a run runs: targets with their needs, `--only`, `--skip`, manual stages.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;
use common::Project;

/// build ← test ← deploy, lint independent, release manual (needs deploy).
const PIPELINE: &str = "stages:\n  build: { run: touch build }\n  test: { run: touch test, needs: [build] }\n  deploy: { run: touch deploy, needs: [test] }\n  lint: { run: touch lint }\n  release: { run: touch release, needs: [deploy], when: manual }\n";

fn ran(project: &Project) -> Vec<&'static str> {
    ["build", "test", "deploy", "lint", "release"]
        .into_iter()
        .filter(|s| project.exists(s))
        .collect()
}

#[test]
fn run_runs_every_stage_but_manual_ones() {
    let project = Project::with_pipeline(PIPELINE);
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(ran(&project), ["build", "test", "deploy", "lint"]);
}

#[test]
fn all_is_run() {
    let project = Project::with_pipeline(PIPELINE);
    assert_eq!(project.run(&["all"]).0, 0);
    assert_eq!(ran(&project), ["build", "test", "deploy", "lint"]);
}

#[test]
fn a_target_runs_with_its_transitive_needs() {
    let project = Project::with_pipeline(PIPELINE);
    assert_eq!(project.run(&["run", "deploy"]).0, 0);
    assert_eq!(ran(&project), ["build", "test", "deploy"]);
}

#[test]
fn only_runs_exactly_the_named_stages() {
    let project = Project::with_pipeline(PIPELINE);
    assert_eq!(
        project.run(&["run", "--only", "test", "--only", "lint"]).0,
        0
    );
    assert_eq!(ran(&project), ["test", "lint"]);
}

#[test]
fn a_manual_stage_runs_only_when_named() {
    let project = Project::with_pipeline(PIPELINE);
    assert_eq!(project.run(&["run", "release"]).0, 0);
    assert_eq!(ran(&project), ["build", "test", "deploy", "release"]);
}

#[test]
fn skip_leaves_a_stage_out_and_its_dependents_still_run() {
    let project = Project::with_pipeline(PIPELINE);
    let (code, _, err) = project.run(&["run", "--skip", "test"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(ran(&project), ["build", "deploy", "lint"]);
}

#[test]
fn needing_an_unselected_manual_stage_skips_with_the_reason() {
    let project = Project::with_pipeline(
        "stages:\n  approve: { run: touch approve, when: manual }\n  ship: { run: touch ship, needs: [approve] }\n",
    );
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    assert!(!project.exists("ship"));
    assert!(err.contains("needs manual stage `approve`"), "{err}");
}

#[test]
fn a_skipped_stage_still_orders_what_is_around_it() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  build: { run: 'sleep 0.5; echo built > artifact' }\n",
        "  test: { run: 'test -f artifact', needs: [build] }\n",
        "  deploy: { run: 'cat artifact', needs: [test] }\n",
    ));
    let (code, out, _) = project.run(&["plan", "--skip", "test"]);
    assert_eq!(code, 0);
    assert!(out.contains("2 stages in 2 waves"), "{out}");
    let (code, _, err) = project.run(&["run", "--skip", "test"]);
    assert_eq!(code, 0, "deploy ran before build: {err}");
}

#[test]
fn a_stage_may_need_an_on_failure_stage() {
    let project = Project::with_pipeline(
        "stages:\n  build: { run: 'exit 1' }\n  notify: { run: touch notified, when: on_failure }\n  page: { run: touch paged, needs: [notify] }\n",
    );
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(project.exists("notified"), "{err}");
}

#[test]
fn a_named_stage_that_needs_an_unnamed_manual_stage_is_refused() {
    // Skipping it would pass the run without doing what was asked.
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  approve: { run: 'touch approved', when: manual }\n",
        "  ship: { run: 'touch shipped', needs: [approve] }\n",
    ));
    let (code, _, err) = project.run(&["run", "ship"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`ship` needs `approve`, a manual stage"),
        "{err}"
    );
    assert!(err.contains("pydeployer run approve ship"), "{err}");
    assert!(!project.exists("shipped") && !project.exists("logs"));
    // Named together, both run.
    let (code, _, err) = project.run(&["run", "approve", "ship"]);
    assert_eq!(code, 0, "{err}");
    assert!(project.exists("shipped"));
}
