//! Storage faults and planted symlinks: a log or ledger folder that cannot be written, a disk
//! that fills up mid-run (a real, small tmpfs in a private mount namespace), and symbolic
//! links that try to redirect pydeployer's writes. Nothing may be deployed without its
//! record, and the ledger must never change.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;
use std::fs;
use std::os::unix::fs::symlink;
use std::process::Command;

use chrono::{Local, TimeDelta};
use common::{Project, bare_origin, git};

const DEPLOYING: &str = "\
repo: { url: origin.git }
stages:
  clone: { uses: git/clone }
  noisy: { run: 'seq 1 300000', needs: [clone] }
  change: { run: 'date +%s%N >> changes.txt', needs: [noisy] }
  build: { uses: git/commit, needs: [change], with: { message: change } }
  deploy: { uses: git/push, needs: [build] }
";

/// A project with a local origin and one deploy already in its ledger.
fn deployed_once() -> Project {
    let project = Project::with_pipeline(DEPLOYING);
    bare_origin(&project);
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    project
}

fn origin_head(project: &Project) -> String {
    git(&project.join("origin.git"), &["rev-parse", "master"])
}

/// Runs `script` with `sh` in a private mount namespace (so it may mount a small tmpfs),
/// in the project folder, with `$PYDEPLOYER` set to the binary. Returns (status, stdout,
/// stderr). A machine where this cannot be done fails the test: it must not pass unrun.
fn in_mount_namespace(project: &Project, script: &str) -> (bool, String, String) {
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .current_dir(project.path())
        .env("PYDEPLOYER", assert_cmd::cargo::cargo_bin!("pydeployer"))
        .env("NO_COLOR", "1")
        .output()
        .expect("unshare (util-linux) is needed for the disk-full tests");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_log_folder_that_cannot_be_created_stops_the_run_before_anything_runs() {
    let project = Project::with_pipeline("stages:\n  a: { run: touch ran }\n");
    project.file("logs", "a file where the log folder should be\n");
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot create the run log"), "{err}");
    assert!(!project.exists("ran"));
}

#[test]
fn a_ledger_folder_that_cannot_be_written_stops_the_run_before_anything_runs() {
    let project = deployed_once();
    let head = origin_head(&project);
    let ledger = project.read("archive/deploy_history.json");
    // Move the ledger under a path that cannot be a folder.
    fs::write(
        project.join("pipeline.yml"),
        DEPLOYING.replace("repo:", "archive: blocked/history.json\nrepo:"),
    )
    .expect("write");
    project.file("blocked", "a file where the ledger folder should be\n");
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("deploy ledger"), "{err}");
    assert_eq!(origin_head(&project), head, "something was deployed");
    assert_eq!(project.read("archive/deploy_history.json"), ledger);
}

#[test]
fn a_log_disk_that_fills_up_mid_run_stops_the_run_before_the_deploy() {
    let project = deployed_once();
    let head = origin_head(&project);
    let ledger = project.read("archive/deploy_history.json");
    // `noisy` prints ~2 MB; the log folder holds 256 KiB.
    let (_, out, err) = in_mount_namespace(
        &project,
        "mount -t tmpfs -o size=256k tmpfs logs && \"$PYDEPLOYER\" run; echo \"exit=$?\"",
    );
    assert!(out.contains("exit=1"), "{out}\n{err}");
    assert!(err.contains("could not be written"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        origin_head(&project),
        head,
        "deployed without a complete log"
    );
    assert_eq!(project.read("archive/deploy_history.json"), ledger);
}

#[test]
fn a_full_ledger_disk_stops_the_run_before_anything_runs_and_keeps_the_ledger() {
    let project = deployed_once();
    let head = origin_head(&project);
    let ledger = project.read("archive/deploy_history.json");
    fs::write(project.join("ledger.orig"), &ledger).expect("copy");
    // A 64 KiB disk holding the ledger, then filled up.
    let (_, out, err) = in_mount_namespace(
        &project,
        "mount -t tmpfs -o size=64k tmpfs archive && cp ledger.orig archive/deploy_history.json \
         && (dd if=/dev/zero of=archive/filler bs=1k count=128 2>/dev/null; true) \
         && \"$PYDEPLOYER\" run; echo \"exit=$?\"; cmp ledger.orig archive/deploy_history.json && echo same",
    );
    assert!(out.contains("exit=1"), "{out}\n{err}");
    assert!(out.contains("same"), "the ledger changed: {out}");
    assert!(err.contains("deploy ledger"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(
        origin_head(&project),
        head,
        "deployed without room to record it"
    );
    assert_eq!(
        project.logs().len(),
        1,
        "a run started although the ledger could not be written"
    );
}

#[test]
fn symlinks_planted_where_logs_will_be_written_are_not_followed() {
    let project = Project::with_pipeline("stages:\n  a: { run: echo hello }\n");
    project.file("victim.txt", "precious\n");
    fs::create_dir_all(project.join("logs")).expect("mkdir");
    // The log's name is predictable: plant a link for each of the next seconds.
    let now = Local::now();
    for s in 0..20 {
        let stamp = (now + TimeDelta::seconds(s)).format("%Y-%m-%d_%H-%M-%S");
        symlink(
            project.join("victim.txt"),
            project.join(&format!("logs/{stamp}.log")),
        )
        .expect("symlink");
    }
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(project.read("victim.txt"), "precious\n");
    let written: Vec<_> = project
        .logs()
        .into_iter()
        .filter(|p| !p.is_symlink())
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(
        fs::read_to_string(&written[0])
            .expect("log")
            .contains("hello")
    );
}

#[test]
fn a_symlinked_ledger_is_replaced_not_written_through() {
    let project = deployed_once();
    project.file("victim.json", "[]\n");
    fs::remove_file(project.join("archive/deploy_history.json")).expect("rm");
    symlink(
        project.join("victim.json"),
        project.join("archive/deploy_history.json"),
    )
    .expect("symlink");
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(project.read("victim.json"), "[]\n");
    assert!(!project.join("archive/deploy_history.json").is_symlink());
}

#[test]
fn a_symlinked_lock_or_state_folder_is_refused() {
    let project = Project::with_pipeline("stages:\n  a: { run: touch ran }\n");
    project.file("victim.txt", "precious\n");
    fs::create_dir_all(project.join(".pydeployer")).expect("mkdir");
    symlink(project.join("victim.txt"), project.join(".pydeployer/lock")).expect("symlink");
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(".pydeployer/lock"), "{err}");
    assert_eq!(project.read("victim.txt"), "precious\n");
    assert!(!project.exists("ran"));

    let other = Project::with_pipeline("stages:\n  a: { run: touch ran }\n");
    let elsewhere = Project::new();
    symlink(elsewhere.path(), other.join(".pydeployer")).expect("symlink");
    let (code, _, err) = other.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a folder"), "{err}");
    assert!(elsewhere.tree().is_empty(), "{:?}", elsewhere.tree());
}

#[test]
fn a_symlinked_scratch_folder_is_refused_and_its_target_kept() {
    // The scratch folder is made for pytest stages (their JUnit reports).
    let project = Project::with_pipeline(
        "stages:\n  a: { run: touch ran }\n  t: { uses: pytest, needs: [a] }\n",
    );
    let victim = Project::new();
    victim
        .file("precious.txt", "x\n")
        .file("run-1/inside.txt", "y\n");
    fs::create_dir_all(project.join(".pydeployer")).expect("mkdir");
    symlink(victim.path(), project.join(".pydeployer/tmp")).expect("symlink");
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a folder"), "{err}");
    assert!(victim.exists("precious.txt") && victim.exists("run-1/inside.txt"));
    assert!(!project.exists("ran"));
}

/// `mknod PATH c 1 3`: a character device (the same as /dev/null) at `path`.
fn null_device(path: &std::path::Path) {
    let status = Command::new("mknod")
        .arg(path)
        .args(["c", "1", "3"])
        .status()
        .expect("mknod");
    assert!(status.success(), "mknod needs root (the tests run as root)");
}

#[test]
fn a_device_or_fifo_in_place_of_the_ledger_is_refused_never_replaced() {
    for (kind, make) in [
        ("character device", null_device as fn(&std::path::Path)),
        ("FIFO", |path: &std::path::Path| {
            let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
            assert!(status.success());
        }),
    ] {
        let project = Project::with_pipeline(&DEPLOYING.replace(
            "repo: { url: origin.git }",
            "repo: { url: origin.git }\narchive: nulldev",
        ));
        bare_origin(&project);
        make(&project.join("nulldev"));
        let tree = || -> Vec<String> {
            // The lock is taken before the ledger is read.
            project
                .tree()
                .into_iter()
                .filter(|p| !p.starts_with(".pydeployer"))
                .collect()
        };
        let before = tree();
        let (code, _, err) = project.run(&["run"]);
        assert_eq!(code, 2, "{kind}: {err}");
        assert!(err.contains("nulldev"), "{err}");
        assert!(err.contains(kind), "{err}");
        assert!(err.contains("regular file"), "{err}");
        assert_eq!(tree(), before, "{kind}: something ran or was written");
        let meta = fs::symlink_metadata(project.join("nulldev")).expect("still there");
        assert!(!meta.is_file(), "{kind} replaced by a file");
        // Reading it back is refused the same way.
        let (code, _, err) = project.run(&["history"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(kind), "{err}");
    }
}

#[test]
fn a_device_in_place_of_the_lock_is_refused() {
    let project = Project::with_pipeline("stages:\n  a: { run: touch ran }\n");
    fs::create_dir_all(project.join(".pydeployer")).expect("mkdir");
    null_device(&project.join(".pydeployer/lock"));
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(".pydeployer/lock"), "{err}");
    assert!(err.contains("character device"), "{err}");
    assert!(!project.exists("ran"));
}

#[test]
fn a_fifo_named_like_a_log_does_not_hang_the_listing_or_count_as_a_run() {
    let project = Project::with_pipeline("logs: { keep: 1 }\nstages:\n  a: { run: 'true' }\n");
    fs::create_dir_all(project.join("logs")).expect("mkdir");
    let status = Command::new("mkfifo")
        .arg(project.join("logs/2000-01-01_00-00-00.log"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let child = project.spawn(&["logs", "--list"]);
    let (code, out, err) = common::finish(child, std::time::Duration::from_secs(20));
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("2000-01-01"), "{out}");
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    let child = project.spawn(&["logs", "--list"]);
    let (code, out, err) = common::finish(child, std::time::Duration::from_secs(20));
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("2000-01-01"), "{out}");
}

#[test]
fn a_ledger_that_cannot_be_written_after_the_push_makes_every_output_say_exit_1() {
    let project = deployed_once();
    let ledger = project.join("archive/deploy_history.json");
    // Between the ledger's check before the run and its append: something spoils it.
    project.file(
        "pipeline.yml",
        &DEPLOYING.replace(
            "  deploy: { uses: git/push, needs: [build] }\n",
            &format!(
                "  spoil: {{ run: \"sh -c 'printf \\\"[ oops\\\" > \\\"$0\\\"' {}\", needs: [build] }}\n  deploy: {{ uses: git/push, needs: [spoil] }}\n",
                ledger.display()
            ),
        ),
    );
    let (code, out, err) = project.run(&["run", "--format", "json"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("could not be written"), "{err}");
    let log = project.last_log();
    assert!(log.trim_end().ends_with("exit code 1"), "{log}");
    // The run's summary, then the error document.
    let json: serde_json::Value = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .next()
        .expect("a JSON summary")
        .expect("JSON");
    assert_eq!(json["exit_code"], 1, "{json}");
    let (_, listing, _) = project.run(&["logs", "--list"]);
    let last = listing.lines().last().unwrap_or_default().to_owned();
    assert!(
        !last.contains("success") && !last.contains(" ok"),
        "{listing}"
    );
    assert_eq!(project.read("archive/deploy_history.json"), "[ oops");
}

#[test]
fn a_ledger_whose_next_id_would_overflow_stops_the_run_before_the_push() {
    let project = deployed_once();
    let before = origin_head(&project);
    let text = project
        .read("archive/deploy_history.json")
        .replace("\"id\": 1,", "\"id\": 18446744073709551615,");
    project.file("archive/deploy_history.json", &text);
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("highest possible id"), "{err}");
    assert!(err.contains("nothing was run"), "{err}");
    assert_eq!(origin_head(&project), before);
    assert_eq!(project.read("archive/deploy_history.json"), text);
}
