//! `pydeployer watch`: the real binary against a real bare origin that the test pushes to while
//! it polls, and `watch --files` against real edits in the project folder. Waits have limits
//! (guards against hangs), never measurements; every watch started here is ended here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use std::fs;
use std::time::Duration;

use common::{Project, alive, finish, git, gone_within, guard, signal};

const LIMIT: Duration = Duration::from_mins(1);

/// Ends the watch with Ctrl-C (SIGINT) and returns (exit code, stdout, stderr).
fn interrupt(child: std::process::Child) -> (i32, String, String) {
    signal(child.id(), libc::SIGINT);
    finish(child, LIMIT)
}

/// Commits `file` with `text` in the seed clone and pushes it; returns the new commit.
fn push(project: &Project, file: &str, text: &str) -> String {
    let seed = project.join("seed");
    fs::write(seed.join(file), text).unwrap();
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "-q", "-m", text]);
    git(&seed, &["push", "-q", "origin", "master"]);
    git(&seed, &["rev-parse", "HEAD"])
}

/// Waits until every run log has its last line (`exit code N`).
fn wait_for_finished_logs(project: &Project, n: usize) {
    let start = std::time::Instant::now();
    loop {
        let logs = runs(project);
        let finished = logs
            .iter()
            .filter(|log| {
                fs::read_to_string(log)
                    .unwrap_or_default()
                    .contains("[pydeployer] exit code")
            })
            .count();
        if logs.len() >= n && finished == logs.len() {
            return;
        }
        assert!(start.elapsed() < LIMIT, "never {n} finished run logs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_text(path: &std::path::Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap()).into_owned()
}

/// The run logs in the order the runs started (two runs in one second are `…-SS.log` and
/// `…-SS-2.log`, which sort the other way round by name).
fn runs(project: &Project) -> Vec<std::path::PathBuf> {
    let mut logs: Vec<std::path::PathBuf> = project
        .logs()
        .into_iter()
        .filter(|log| log.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort_by_key(|log| {
        log_text(log)
            .lines()
            .find_map(|l| {
                l.split_once("[pydeployer] started: ")
                    .map(|(_, t)| t.to_owned())
            })
            .unwrap_or_default()
    });
    logs
}

/// A repository pipeline: clone, a stage that shows the commit it tests and, on the first run
/// only, waits for `go` (so that the test can push while it runs), and a deploy.
fn repo_project() -> Project {
    let project = Project::with_pipeline(
        "repo: { url: origin.git }\n\
         stages:\n\
         \x20 clone: { uses: git/clone }\n\
         \x20 check:\n\
         \x20   run: \"echo $$ > ../check.pid; echo testing $(git rev-parse HEAD); if [ ! -e ../first-done ]; then while [ ! -e ../go ]; do sleep 0.05; done; touch ../first-done; fi\"\n\
         \x20   needs: [clone]\n\
         \x20 deploy: { uses: git/push, needs: [check] }\n",
    );
    common::bare_origin(&project);
    project
}

#[test]
fn commits_pushed_during_a_run_make_exactly_one_more_run_on_the_newest() {
    let project = repo_project();
    let first = git(&project.join("seed"), &["rev-parse", "HEAD"]);
    let child = project.spawn(&["watch", "--interval", "1s"]);
    let _guard = guard(&child);
    // The first run tests what the branch holds when watch starts, and waits in `check`.
    project.wait_for_log(&format!("testing {first}"), LIMIT);
    let _second = push(&project, "a.txt", "second");
    let third = push(&project, "b.txt", "third");
    fs::write(project.join("go"), "").unwrap();
    project.wait_for_log(&format!("testing {third}"), LIMIT);
    wait_for_finished_logs(&project, 2);
    // Polls after that find nothing new: give it a few, then a last commit shows that it is
    // still watching, and that nothing ran in between.
    let fourth = push(&project, "c.txt", "fourth");
    project.wait_for_log(&format!("testing {fourth}"), LIMIT);
    wait_for_finished_logs(&project, 3);
    let (code, _, stderr) = interrupt(child);
    assert_eq!(code, 130, "{stderr}");

    let logs = runs(&project);
    assert_eq!(logs.len(), 3, "runs: {logs:?}\n{stderr}");
    // The first run's deploy is refused (the branch moved on meanwhile: git says fetch
    // first); the next runs deploy what they tested.
    assert!(log_text(&logs[0]).contains("[pydeployer] exit code 1"));
    let tested: Vec<String> = logs
        .iter()
        .enumerate()
        .map(|(i, log)| {
            let text = log_text(log);
            assert!(text.contains("[pydeployer] trigger: watch"), "{text}");
            assert!(
                i == 0 || text.contains("[pydeployer] exit code 0"),
                "{text}"
            );
            text.lines()
                .find_map(|l| l.split_once("[check] testing ").map(|(_, c)| c.to_owned()))
                .expect("the commit tested")
        })
        .collect();
    assert_eq!(tested, [first, third, fourth.clone()], "{stderr}");

    // The ledger has the deploys, each with the trigger.
    let ledger: serde_json::Value =
        serde_json::from_str(&project.read("archive/deploy_history.json")).unwrap();
    let entries = ledger.as_array().unwrap();
    assert_eq!(entries.len(), 3, "{ledger}");
    for entry in entries {
        assert_eq!(entry["trigger"], "watch", "{entry}");
    }
    assert_eq!(entries[0]["status"], "failed");
    assert_eq!(entries[2]["commit"], fourth.as_str());
    // `logs --list --format json` reads the trigger back.
    let (code, stdout, _) = project.run(&["logs", "--list", "--format", "json"]);
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|run| run["trigger"] == "watch"),
        "{listed}"
    );
}

#[test]
fn ctrl_c_during_a_run_ends_it_and_watch_exits_130_leaving_nothing() {
    let project = repo_project();
    let child = project.spawn(&["watch", "--interval", "1s"]);
    let _guard = guard(&child);
    project.wait_for_log("testing ", LIMIT);
    let stage = project.pid("check.pid");
    assert!(alive(stage));
    let (code, _, stderr) = interrupt(child);
    assert_eq!(code, 130, "{stderr}");
    assert!(gone_within(stage, LIMIT), "the stage outlived watch");
    let log = project.last_log();
    assert!(log.contains("[pydeployer] exit code 130"), "{log}");
    assert_eq!(project.logs().len(), 1, "{stderr}");
    // The run lock is free: a run can go at once.
    fs::write(project.join("go"), "").unwrap();
    let (code, _, stderr) = project.run(&["run", "check"]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn ctrl_c_between_runs_exits_130() {
    let project = repo_project();
    fs::write(project.join("go"), "").unwrap();
    let child = project.spawn(&["watch", "--interval", "1s"]);
    let _guard = guard(&child);
    wait_for_finished_logs(&project, 1);
    let (code, _, stderr) = interrupt(child);
    assert_eq!(code, 130, "{stderr}");
    assert_eq!(project.logs().len(), 1, "{stderr}");
}

#[test]
fn bad_intervals_and_a_pipeline_without_a_repository_are_refused() {
    let project = repo_project();
    for bad in ["0s", "0", "soon", "2days"] {
        let (code, _, stderr) = project.run(&["watch", "--interval", bad]);
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(stderr.contains("--interval"), "{bad}: {stderr}");
    }
    assert!(project.logs().is_empty(), "something ran");
    let plain = Project::with_pipeline("stages:\n  a: { run: echo a }\n");
    let (code, _, stderr) = plain.run(&["watch"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("watch --files"), "{stderr}");
    let (code, _, stderr) = project.run(&["watch", "--files"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("without `repo:`"), "{stderr}");
    // An invalid pipeline: the place, exit 2, nothing runs.
    let broken = Project::with_pipeline("stages:\n  a: { run: echo a, retries: many }\n");
    let (code, _, stderr) = broken.run(&["watch", "--files"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("pipeline.yml:2:"), "{stderr}");
    assert!(broken.logs().is_empty());
}

/// A project without a repository whose `work` stage prints `src.txt`, and sleeps while
/// `ignored/slow` exists (an ignored path: making and removing it is no change).
fn files_project() -> Project {
    let project = Project::with_pipeline(
        "archive: archive/deploy_history.json\n\
         stages:\n\
         \x20 work:\n\
         \x20   run: \"echo $$ > work.pid; echo src is $(cat src.txt); while [ -e ignored/slow ]; do sleep 0.05; done\"\n",
    );
    project.file(".gitignore", "ignored/\n*.tmp\nwork.pid\n");
    project.file("src.txt", "one\n");
    project
}

#[test]
fn an_edit_reruns_once_and_ignored_paths_start_nothing() {
    let project = files_project();
    let child = project.spawn(&["watch", "--files"]);
    let _guard = guard(&child);
    project.wait_for_log("src is one", LIMIT);
    wait_for_finished_logs(&project, 1);

    // One edit (written in two steps, as editors do): one rerun.
    fs::write(project.join("src.txt"), "tw").unwrap();
    fs::write(project.join("src.txt"), "two\n").unwrap();
    project.wait_for_log("src is two", LIMIT);
    wait_for_finished_logs(&project, 2);

    // Edits where watch does not look, then one where it does: only that one runs.
    project.file("logs/notes.txt", "x");
    project.file("archive/old.json", "x");
    project.file(".pydeployer/x", "x");
    project.file("ignored/a.txt", "x");
    project.file("scratch.tmp", "x");
    project.file("src.txt", "three\n");
    project.wait_for_log("src is three", LIMIT);
    wait_for_finished_logs(&project, 3);
    let (code, _, stderr) = interrupt(child);
    assert_eq!(code, 130, "{stderr}");
    assert_eq!(runs(&project).len(), 3, "{stderr}");
    let changes: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("watch: changed"))
        .collect();
    assert_eq!(changes, ["watch: changed: src.txt"; 2], "{stderr}");
    for log in runs(&project) {
        assert!(log_text(&log).contains("[pydeployer] trigger: watch"));
    }
}

#[test]
fn an_edit_during_a_long_stage_cancels_it_and_starts_again() {
    let project = files_project();
    project.file("ignored/slow", "");
    let child = project.spawn(&["watch", "--files"]);
    let _guard = guard(&child);
    project.wait_for_log("src is one", LIMIT);
    let first = project.pid("work.pid");
    fs::remove_file(project.join("work.pid")).unwrap();
    // Still running (it waits for `ignored/slow` to go): an edit cancels it, and a new run starts.
    project.file("src.txt", "two\n");
    project.wait_for_log("src is two", LIMIT);
    assert!(
        gone_within(first, LIMIT),
        "the cancelled stage is still running"
    );
    let second = project.pid("work.pid");
    fs::remove_file(project.join("ignored/slow")).unwrap();
    wait_for_finished_logs(&project, 2);
    let (code, _, stderr) = interrupt(child);
    assert_eq!(code, 130, "{stderr}");
    assert!(gone_within(second, LIMIT));
    let logs = runs(&project);
    assert_eq!(logs.len(), 2, "{stderr}");
    let cancelled = log_text(&logs[0]);
    assert!(
        cancelled.contains("[pydeployer] exit code 130"),
        "{cancelled}"
    );
    assert!(cancelled.contains("[work] cancelled"), "{cancelled}");
    assert!(log_text(&logs[1]).contains("[pydeployer] exit code 0"));
    assert!(
        stderr.contains("watch: changed during the run: src.txt; starting again"),
        "{stderr}"
    );
}
