//! The delivery stages on real git (a local bare origin) and real pytest.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use common::{Project, git, make_executable, push_seed};

const PIPELINE: &str = "\
name: app
repo: { url: origin.git }
stages:
  clone: { uses: git/clone }
  build: { uses: git/commit, needs: [clone] }
  test: { uses: pytest, needs: [build] }
  deploy: { uses: git/push, needs: [test] }
  rollback: { uses: git/revert, when: manual }
";

const CALC: &str = "def add(a, b):\n    return a + b\n";
const TESTS: &str = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\ndef test_zero():\n    assert add(0, 0) == 0\n";

/// A project whose `origin.git` holds a Python project with tests; `seed` is its folder.
fn project_with_origin(tests: &str) -> Project {
    let project = Project::with_pipeline(PIPELINE);
    project
        .file("seed/calc.py", CALC)
        .file("seed/test_calc.py", tests)
        .file("seed/.gitignore", "__pycache__/\n.pytest_cache/\n");
    push_seed(&project);
    project
}

fn origin_head(project: &Project) -> String {
    git(&project.join("origin.git"), &["rev-parse", "master"])
}

fn ledger(project: &Project) -> serde_json::Value {
    serde_json::from_str(&project.read("archive/deploy_history.json")).expect("ledger is JSON")
}

#[test]
fn run_clones_builds_tests_and_deploys() {
    let project = project_with_origin(TESTS);
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    assert!(project.exists("workspace/calc.py"));
    // What the build did, nothing, is said without -v.
    assert!(
        err.contains("build passed") && err.contains("nothing to commit"),
        "{err}"
    );
    let log = project.last_log();
    assert!(
        log.contains("[test] test_calc.py::test_add PASSED"),
        "pytest -v output not in the log:\n{log}"
    );
    assert!(err.contains("2 passed, 0 failed"), "{err}");
    let ledger = ledger(&project);
    assert_eq!(ledger.as_array().unwrap().len(), 1);
    assert_eq!(ledger[0]["kind"], "deploy");
    // origin already held the commit it tested: the deploy pushed nothing, and says so.
    assert_eq!(ledger[0]["status"], "up_to_date");
    assert_eq!(ledger[0]["id"], 1);
    assert_eq!(ledger[0]["commit"], origin_head(&project));
    assert_eq!(ledger[0]["previous_commit"], origin_head(&project));
}

#[test]
fn a_second_run_pulls_new_commits() {
    let project = project_with_origin(TESTS);
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    project.file("seed/NEWS.md", "news\n");
    git(&project.join("seed"), &["add", "-A"]);
    git(&project.join("seed"), &["commit", "-q", "-m", "news"]);
    git(&project.join("seed"), &["push", "-q", "origin", "master"]);
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        project.exists("workspace/NEWS.md"),
        "the new commit did not arrive"
    );
    assert!(
        project.last_log().contains("git pull --ff-only"),
        "second run did not pull"
    );
}

#[test]
fn build_commits_local_changes_and_deploy_pushes_them() {
    let project = project_with_origin(TESTS);
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    project.file("workspace/extra.py", "X = 1\n");
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    let files = git(
        &project.join("origin.git"),
        &["ls-tree", "--name-only", "master"],
    );
    assert!(files.contains("extra.py"), "{files}");
    assert_eq!(
        ledger(&project)[1]["previous_commit"],
        ledger(&project)[0]["commit"]
    );
}

#[test]
fn a_failing_test_stops_the_deploy_and_is_named() {
    let project = project_with_origin(
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 2) == 5\n",
    );
    let before = origin_head(&project);
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("test_calc.py::test_add"),
        "failed test not named: {err}"
    );
    assert!(err.contains("deploy skipped"), "{err}");
    assert!(!project.last_log().contains("[deploy] started"));
    assert_eq!(origin_head(&project), before, "origin changed");
    assert!(!project.exists("archive/deploy_history.json"));
}

#[test]
fn rollback_reverts_and_rollback_to_restores_a_deploy() {
    let project = project_with_origin(TESTS);
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    // Right after the first deploy there is nothing to return to: refused, origin intact.
    let before = origin_head(&project);
    let (code, _, err) = project.run(&["rollback"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("nothing was deployed there before it"),
        "{err}"
    );
    assert_eq!(origin_head(&project), before, "origin changed");
    let deployed = origin_head(&project);
    let tree_1 = git(&project.join("origin.git"), &["rev-parse", "master^{tree}"]);

    project.file("workspace/extra.py", "X = 1\n");
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    let second = origin_head(&project);
    assert_ne!(second, deployed);

    let (code, _, err) = project.run(&["rollback"]);
    assert_eq!(code, 0, "{err}");
    // The terminal says what is reverted (the range) and to what, before and after.
    assert!(
        err.contains(&format!(
            "returning it to the files of entry 1 ({}): the commits {}..{} are reverted in one commit",
            &deployed[..7],
            &deployed[..7],
            &second[..7]
        )),
        "{err}"
    );
    assert!(
        err.contains("rolled back: origin/master is now at"),
        "{err}"
    );
    let head = origin_head(&project);
    let origin = project.join("origin.git");
    assert_eq!(
        git(&origin, &["rev-parse", "master^{tree}"]),
        tree_1,
        "not back to the files of deploy 1"
    );
    assert_eq!(
        git(&origin, &["rev-parse", "master^"]),
        second,
        "rollback is a new commit on top"
    );
    assert!(
        git(&origin, &["log", "-1", "--format=%s", "master"]).starts_with("Revert"),
        "not a revert"
    );
    let entries = ledger(&project);
    assert_eq!(entries[2]["kind"], "rollback");
    assert_eq!(entries[2]["commit"], head);
    assert_eq!(entries[2]["rolled_back_to"], 1);
    // Deploy 1 is live again, and nothing was deployed before it: a second rollback refuses.
    let (code, _, err) = project.run(&["rollback"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("nothing was deployed there before it"),
        "{err}"
    );
    assert_eq!(origin_head(&project), head, "origin changed");

    // Back to the tree of deploy 1 from a different state: deploy again, then --to 1.
    project.file("workspace/more.py", "Y = 2\n");
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    let (code, _, err) = project.run(&["rollback", "--to", "1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        git(&origin, &["rev-parse", "master^{tree}"]),
        tree_1,
        "tree of deploy 1 not restored"
    );
    // The log's header says what ran: the range, not a plain revert of HEAD.
    let log = project.last_log();
    assert!(
        log.contains(&format!(
            "[pydeployer]   rollback: git fetch --quiet --prune --end-of-options origin && git revert --no-commit {deployed}..HEAD && git commit"
        )),
        "{log}"
    );
    assert_eq!(
        git(&origin, &["merge-base", "--is-ancestor", &second, "master"]),
        "",
        "history was rewritten"
    );
}

#[test]
fn rollback_never_publishes_what_was_not_deployed() {
    let project = project_with_origin(TESTS);
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    project.file("workspace/extra.py", "X = 1\n");
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    let deployed = origin_head(&project);
    // A change whose tests fail: the build commits it in the workspace, the deploy is skipped.
    project.file("workspace/calc.py", "def add(a, b):\n    return a - b\n");
    assert_eq!(project.run(&["run", "-q"]).0, 1);
    assert_eq!(origin_head(&project), deployed);

    // Reverting "HEAD" now would push the failing commit and its revert: refused.
    let (code, _, err) = project.run(&["rollback"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(origin_head(&project), deployed, "origin changed");
    // Why, under the failure, without -v.
    assert!(err.contains("a build that was not deployed"), "{err}");
    let log = project.last_log();
    assert!(log.contains("a build that was not deployed"), "{log}");
    assert!(
        log.contains("reset --hard origin/master"),
        "no way out shown:\n{log}"
    );

    // A ledger entry that is not a success is no place to return to.
    let mut entries = ledger(&project);
    entries[0]["status"] = "cancelled".into();
    project.file(
        "archive/deploy_history.json",
        &serde_json::to_string_pretty(&entries).unwrap(),
    );
    let (code, _, err) = project.run(&["rollback", "--to", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a cancelled deploy"), "{err}");
    assert_eq!(origin_head(&project), deployed, "origin changed");
}

#[test]
fn rollback_to_the_tree_origin_already_has_changes_nothing() {
    let project = project_with_origin(TESTS);
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    let deployed = origin_head(&project);
    let (code, _, err) = project.run(&["rollback", "--to", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        project.last_log().contains("nothing to revert"),
        "{}",
        project.last_log()
    );
    assert_eq!(origin_head(&project), deployed, "origin changed");
}

#[test]
fn only_test_runs_pytest_alone() {
    let project = project_with_origin(TESTS);
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    let (code, _, err) = project.run(&["run", "--only", "test"]);
    assert_eq!(code, 0, "{err}");
    let log = project.last_log();
    assert!(log.contains("[test] started"), "{log}");
    for other in ["clone", "build", "deploy"] {
        assert!(
            !log.contains(&format!("[{other}] started")),
            "{other} ran:\n{log}"
        );
    }
}

#[test]
fn hostile_urls_and_branches_are_refused_before_anything() {
    for (url, branch) in [
        ("--upload-pack=touch /tmp/pwned", "master"),
        ("ssh://-oProxyCommand=touch pwned/x", "master"),
        ("origin.git", "-x"),
        ("origin.git", "a..b"),
    ] {
        let project = Project::with_pipeline(&format!(
            "repo: {{ url: {url:?}, branch: {branch:?} }}\nstages:\n  clone: {{ uses: git/clone }}\n"
        ));
        let before = project.tree();
        let (code, _, err) = project.run(&["run"]);
        assert_eq!(code, 2, "{url} {branch}: {err}");
        assert!(err.contains("refusing"), "{err}");
        assert_eq!(project.tree(), before, "{url} {branch}: files created");
    }
}

#[test]
fn a_corrupt_ledger_is_reported_and_left_intact() {
    let project = project_with_origin(TESTS);
    let corrupt = "[{\"id\": 1, \"kind\": \"deploy\",";
    project.file("archive/deploy_history.json", corrupt);
    let (code, _, err) = project.run(&["run"]);
    assert_ne!(code, 0);
    assert!(err.contains("deploy_history.json"), "{err}");
    assert_eq!(project.read("archive/deploy_history.json"), corrupt);
    assert!(
        !project.exists("workspace"),
        "stages ran despite the corrupt ledger"
    );
    let (code, _, _) = project.run(&["history"]);
    assert_ne!(code, 0);
    assert_eq!(project.read("archive/deploy_history.json"), corrupt);
}

#[test]
fn a_foreign_folder_in_the_workspace_is_never_overwritten() {
    let project = project_with_origin(TESTS);
    project.file("workspace/mine.txt", "precious");
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a clone of"), "{err}");
    assert_eq!(project.read("workspace/mine.txt"), "precious");
}

#[test]
fn a_fresh_checkout_is_not_judged_before_the_clone() {
    // The requirements file named by the install stage only exists once cloned.
    let project = project_with_origin(TESTS);
    project.file(
        "pipeline.yml",
        "repo: { url: origin.git }\nstages:\n  clone: { uses: git/clone }\n  check: { uses: python/venv, with: { requirements: calc.py }, needs: [clone] }\n",
    );
    let (code, _, err) = project.run(&["plan"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = project.run(&["run", "--skip", "check"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_hung_git_in_the_ledgers_bookkeeping_is_killed_and_the_run_ends() {
    // `git rev-parse HEAD` after the deploy hangs (a wrapper around the real git, as a stuck
    // filesystem would): the run must still end, record the deploy, and leave no process.
    let project = project_with_origin(TESTS);
    project.file(
        "pipeline.yml",
        "repo: { url: origin.git }\nstages:\n  clone: { uses: git/clone }\n  deploy: { uses: git/push, needs: [clone] }\n",
    );
    let real_git = which::which("git").expect("git on PATH");
    project.file(
        "bin/git",
        &format!(
            // Also a descendant outside its process group holding its output open (`setsid`):
            // the 10 s must hold all the same.
            "#!/bin/sh\nif [ \"$*\" = \"rev-parse --verify --quiet --end-of-options HEAD^{{commit}}\" ]; then\n  echo $$ > \"$PIDFILE\"\n  setsid sleep 30 &\n  echo $! > \"$PIDFILE.escaped\"\n  exec sleep 3017\nfi\nexec {} \"$@\"\n",
            real_git.display()
        ),
    );
    make_executable(&project.join("bin/git"));
    let path = format!(
        "{}:{}",
        project.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("pydeployer"))
        .current_dir(project.path())
        .env("NO_COLOR", "1")
        .env("PATH", path)
        .env("PIDFILE", project.join("hung.pid"))
        .env_remove("PYDEPLOYER_STAGE")
        .arg("run")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start pydeployer");
    // A guard against a hang, far above the 10 s the bookkeeping command is given, and below
    // the 30 s of the escaped descendant.
    let (code, _, err) = common::finish(child, std::time::Duration::from_secs(25));
    assert_eq!(code, 0, "{err}");
    let escaped = project.pid("hung.pid.escaped");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(escaped, libc::SIGKILL) };
    let hung = project.pid("hung.pid");
    assert!(
        common::gone_within(hung, std::time::Duration::from_secs(5)),
        "the hung git is still running"
    );
    let ledger = ledger(&project);
    assert_eq!(ledger[0]["status"], "success", "{ledger}");
    assert!(ledger[0]["commit"].is_null(), "{ledger}");
}

#[test]
fn a_junit_report_asked_for_in_the_args_is_written_where_asked() {
    // pytest writes only the last --junitxml it is given: pydeployer's own must not win.
    let project = Project::with_pipeline(
        "stages:\n  test: { uses: pytest, with: { args: [--junitxml=reports/mine.xml] } }\n",
    );
    project.file("calc.py", CALC).file("test_calc.py", TESTS);
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    let report = project.read("reports/mine.xml");
    assert!(report.contains("testsuite"), "{report}");
}

#[test]
fn the_event_stream_says_what_a_deploy_pushed() {
    let project = project_with_origin(TESTS);
    let (code, out, err) = project.run(&["run", "--format", "jsonl"]);
    assert_eq!(code, 0, "{err}");
    let deployed: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).expect("a line of JSON"))
        .filter(|e: &serde_json::Value| e["event"] == "stage_finished" && e["stage"] == "deploy")
        .collect();
    assert_eq!(deployed.len(), 1, "{out}");
    let deploy = &deployed[0]["deploy"];
    assert_eq!(deploy["kind"], "deploy");
    assert_eq!(deploy["branch"], "master");
    // The action's own post-step found the commit it pushed, and the ledger took it from there.
    assert_eq!(deploy["commit"], origin_head(&project));
    assert_eq!(ledger(&project)[0]["commit"], deploy["commit"]);
    // The pytest stage's note came from its JUnit report.
    let test_note = out
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|e| e["event"] == "stage_finished" && e["stage"] == "test")
        .map(|e| e["note"].clone())
        .unwrap();
    assert!(
        test_note.as_str().unwrap().contains("2 passed"),
        "{test_note}"
    );
}

#[test]
fn a_failing_pytest_stage_shows_its_assertion_ids_pytest_takes_and_pytests_counts() {
    let project =
        Project::with_pipeline("stages:\n  test: { uses: pytest, with: { args: [tests] } }\n");
    project.file(
        "tests/test_funcs.py",
        "import pytest\n\n\nclass TestAsDict:\n    def test_shallow(self):\n        assert 1 + 2 == 4\n\n\ndef test_ok():\n    pass\n\n\n@pytest.mark.skip(reason='later')\ndef test_skip():\n    pass\n\n\n@pytest.mark.xfail(reason='known')\ndef test_xfail():\n    assert False\n\n\n@pytest.mark.xfail(reason='fixed?')\ndef test_xpass():\n    pass\n",
    );
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    // Without -v, the assertion and where it is, not the last lines of pytest's output.
    assert!(err.contains(">       assert 1 + 2 == 4"), "{err}");
    assert!(
        err.contains("tests/test_funcs.py:6: AssertionError"),
        "{err}"
    );
    // The counts are pytest's own (its report cannot tell xpassed from passed).
    let pytest = std::process::Command::new("python3")
        .args(["-m", "pytest", "-q", "tests"])
        .current_dir(project.path())
        .output()
        .expect("pytest");
    let summary = String::from_utf8_lossy(&pytest.stdout)
        .lines()
        .last()
        .unwrap()
        .to_owned();
    assert!(
        summary.starts_with("1 failed, 1 passed, 1 skipped, 1 xfailed, 1 xpassed"),
        "{summary}"
    );
    assert!(
        err.contains("1 passed, 1 failed, 1 skipped, 1 xfailed, 1 xpassed"),
        "{err}"
    );
    // The failed test's id is one pytest takes on its command line.
    let id = "tests/test_funcs.py::TestAsDict::test_shallow";
    assert!(err.contains(&format!("failed: {id}")), "{err}");
    let rerun = std::process::Command::new("python3")
        .args(["-m", "pytest", "-q", id])
        .current_dir(project.path())
        .output()
        .expect("pytest");
    let rerun = String::from_utf8_lossy(&rerun.stdout);
    assert!(
        rerun.lines().last().unwrap().starts_with("1 failed in"),
        "{rerun}"
    );
}

#[test]
fn a_commit_that_did_not_pass_its_tests_is_not_deployed_unless_forced() {
    let project = project_with_origin(TESTS);
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    let deployed = origin_head(&project);
    // A change that breaks the tests: the build commits it, the test fails, deploy is skipped.
    project.file("workspace/calc.py", "def add(a, b):\n    return a - b\n");
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    let broken = git(&project.join("workspace"), &["rev-parse", "HEAD"]);
    assert_ne!(broken, deployed);

    // `run --only deploy` right after: refused, naming the commit and the stage.
    let (code, _, err) = project.run(&["run", "--only", "deploy"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refusing to deploy"), "{err}");
    assert!(err.contains(&broken[..10]), "{err}");
    assert!(err.contains("`test`"), "{err}");
    assert_eq!(origin_head(&project), deployed, "origin changed");

    // --force deploys it, and the ledger says so.
    let (code, _, err) = project.run(&["run", "--only", "deploy", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(origin_head(&project), broken);
    let entries = ledger(&project);
    let last = entries.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["status"], "success");
    assert_eq!(last["forced"], true);
    assert_eq!(last["commit"], broken.as_str());

    // A commit that passed (in an earlier run) deploys without --force.
    project.file("workspace/calc.py", "def add(a, b):\n    return a + b\n");
    let (code, _, err) = project.run(&["run", "test"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = project.run(&["run", "--only", "deploy"]);
    assert_eq!(code, 0, "{err}");
    let entries = ledger(&project);
    let last = entries.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["status"], "success");
    assert!(last.get("forced").is_none(), "{last}");
}
