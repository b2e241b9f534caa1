//! Running stages: parallelism, failures and their policy, retries, timeouts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;
use std::fs;

use common::Project;

#[test]
fn independent_stages_run_at_the_same_time() {
    // Each stage waits until the other has started: they can only both finish if they run
    // at once. The timeout turns a serial run into a failure instead of a hang.
    let project = Project::with_pipeline(concat!(
        "jobs: 2\n",
        "stages:\n",
        "  a: { run: 'touch a.started; while [ ! -e b.started ]; do sleep 0.01; done', timeout: 20s }\n",
        "  b: { run: 'touch b.started; while [ ! -e a.started ]; do sleep 0.01; done', timeout: 20s }\n",
    ));
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn jobs_1_runs_one_at_a_time() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  a: { run: 'mkdir lock && sleep 0.2 && rmdir lock' }\n",
        "  b: { run: 'mkdir lock && sleep 0.2 && rmdir lock' }\n",
        "  c: { run: 'mkdir lock && sleep 0.2 && rmdir lock' }\n",
    ));
    let (code, _, err) = project.run(&["run", "-j", "1"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_failure_blocks_dependents_lets_others_finish_and_runs_on_failure() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  build: { run: touch build }\n",
        "  test: { run: 'echo boom; exit 3', needs: [build] }\n",
        "  deploy: { run: touch deploy, needs: [test] }\n",
        "  docs: { run: 'sleep 0.3; touch docs' }\n",
        "  notify: { run: touch notified, when: on_failure }\n",
        "  cleanup: { run: touch cleaned, when: always, needs: [deploy] }\n",
    ));
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(project.exists("build") && project.exists("docs"), "{err}");
    assert!(
        !project.exists("deploy"),
        "a dependent of a failed stage ran"
    );
    assert!(project.exists("notified"), "on_failure stage did not run");
    assert!(project.exists("cleaned"), "always stage did not run");
    assert!(
        err.contains("deploy skipped: `test` did not succeed"),
        "{err}"
    );
    let log = project.last_log();
    assert!(log.contains("[test] boom"), "{log}");
    assert!(log.contains("failed (exit 3)"), "{log}");
}

#[test]
fn on_failure_does_not_run_when_all_is_well() {
    let project = Project::with_pipeline(
        "stages:\n  a: { run: 'true' }\n  notify: { run: touch notified, when: on_failure }\n",
    );
    assert_eq!(project.run(&["run"]).0, 0);
    assert!(!project.exists("notified"));
}

#[test]
fn allow_failure_reports_but_does_not_block() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  lint: { run: 'exit 1', allow_failure: true }\n",
        "  deploy: { run: touch deploy, needs: [lint] }\n",
    ));
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    assert!(project.exists("deploy"));
    assert!(
        err.contains("lint") && err.contains("failed (allowed)"),
        "{err}"
    );
}

#[test]
fn retries_rerun_a_failed_stage() {
    // Fails the first time (no marker yet), passes the second.
    let project = Project::with_pipeline(
        "stages:\n  flaky: { run: 'if [ -e tried ]; then exit 0; fi; touch tried; exit 1', retries: 2 }\n",
    );
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    let log = project.last_log();
    assert!(log.contains("will retry"), "{log}");
}

#[test]
fn a_timeout_ends_the_whole_process_group() {
    let project = Project::with_pipeline(
        "stages:\n  hang: { run: 'sleep 300 & echo $! > bg.pid; sleep 300', timeout: 1s }\n",
    );
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("timed out after 1s"), "{err}");
    let pid = project.read("bg.pid").trim().to_owned();
    // The background sleep was in the stage's group: it is gone (or a zombie being reaped).
    let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z"),
        "background child {pid} still running: {state}"
    );
}

#[test]
fn stage_env_and_workdir_apply() {
    let project = Project::with_pipeline(concat!(
        "env: { GREETING: hello, NUM: 1 }\n",
        "stages:\n",
        "  a: { run: 'echo \"$GREETING $WHO $NUM\" > out.txt', env: { WHO: world }, workdir: sub }\n",
    ));
    fs::create_dir(project.join("sub")).unwrap();
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(project.read("sub/out.txt"), "hello world 1\n");
}

#[test]
fn a_missing_workdir_fails_the_stage_clearly() {
    let project = Project::with_pipeline("stages:\n  a: { run: 'true', workdir: nowhere }\n");
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn an_argv_run_passes_arguments_untouched() {
    let project = Project::with_pipeline(
        "stages:\n  a: { run: [sh, -c, 'printf %s \"$1\" > out.txt', sh, '$HOME; rm -rf /'] }\n",
    );
    assert_eq!(project.run(&["run"]).0, 0);
    assert_eq!(project.read("out.txt"), "$HOME; rm -rf /");
}

#[test]
fn json_summary_on_stdout() {
    let project = Project::with_pipeline("stages:\n  a: { run: 'true' }\n  b: { run: 'exit 2' }\n");
    let (code, out, _) = project.run(&["run", "--format", "json"]);
    assert_eq!(code, 1);
    let summary: serde_json::Value = serde_json::from_str(&out).expect("JSON summary");
    assert_eq!(summary["exit_code"], 1);
    assert_eq!(summary["stages"][0]["result"], "passed");
    assert_eq!(summary["stages"][1]["result"], "failed");
}

#[test]
fn a_timeout_fires_while_the_stage_keeps_printing() {
    let project = Project::with_pipeline(
        "stages:\n  chatty: { run: 'while :; do echo line; done', timeout: 1s }\n  other: { run: 'sleep 300', timeout: 1s }\n",
    );
    let (code, _, err) = project.run(&["run", "-j", "2"]);
    assert_eq!(code, 1, "{err}");
    for stage in ["chatty", "other"] {
        assert!(
            err.contains(&format!("{stage} timed out after 1s")),
            "{stage} did not time out: {err}"
        );
    }
}

#[test]
fn a_process_escaping_the_group_does_not_hold_the_run_forever() {
    // `setsid` moves the sleep out of the stage's process group; it keeps stdout open.
    let project = Project::with_pipeline(
        "stages:\n  leak: { run: 'setsid sleep 60 & echo $! > leak.pid; echo started', timeout: 1s }\n",
    );
    let (code, _, err) = project.run(&["run"]);
    let pid = project.read("leak.pid").trim().to_owned();
    let _ = std::process::Command::new("kill").arg(&pid).status();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("kept its output open"), "{err}");
}

#[test]
fn an_always_stage_does_not_hide_a_failure_from_what_follows() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  test: { run: 'false' }\n",
        "  cleanup: { run: touch cleaned, when: always, needs: [test] }\n",
        "  deploy: { run: touch deployed, needs: [cleanup] }\n",
    ));
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(project.exists("cleaned"));
    assert!(
        !project.exists("deployed"),
        "deployed after a failing test: {err}"
    );
}

#[test]
fn a_failed_stage_shows_its_last_lines_and_a_passed_one_does_not() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  noisy: { run: 'for i in $(seq 1 40); do echo \"line $i\"; done; echo \"the reason\" >&2; exit 3' }\n",
        "  quiet: { run: 'echo all good' }\n",
    ));
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 1, "{err}");
    // The last lines, stderr included, under the failure: not the first ones.
    assert!(err.contains("  | line 40\n  | the reason\n"), "{err}");
    assert!(!err.contains("| line 1\n"), "{err}");
    assert!(
        err.contains("its last 15 of 41 lines (`pydeployer logs --stage noisy` has them all)"),
        "{err}"
    );
    // A stage that passed shows nothing of its output (without -v).
    assert!(!err.contains("all good"), "{err}");
    // With -v the lines were shown as they came: not again.
    let (_, _, err) = project.run(&["run", "-v"]);
    assert_eq!(err.matches("[noisy] the reason").count(), 1, "{err}");
    assert!(!err.contains("| the reason"), "{err}");
}

#[test]
fn a_relative_program_runs_from_the_stages_folder() {
    let project = Project::with_pipeline(
        "stages:\n  here: { run: ./t.sh, workdir: sub }\n  argv: { run: [./t.sh, x], workdir: sub }\n",
    );
    project.file("t.sh", "#!/bin/sh\necho from-the-root\n");
    project.file("sub/t.sh", "#!/bin/sh\necho from-sub \"$@\"\n");
    common::make_executable(&project.join("t.sh"));
    common::make_executable(&project.join("sub/t.sh"));
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    let log = project.last_log();
    assert!(log.contains("[here] from-sub"), "{log}");
    assert!(log.contains("[argv] from-sub x"), "{log}");
    assert!(!log.contains("from-the-root"), "{log}");
}

#[test]
fn where_a_stage_runs_is_decided_before_the_run_not_by_timing() {
    let project = Project::new();
    common::bare_origin(&project);
    // `later` does not need the clone: it waits for `slow` while the clone makes the
    // workspace, and still runs where the run began with no workspace, the project's root.
    project.file(
        "pipeline.yml",
        "repo: { url: origin.git }\nstages:\n  clone: { uses: git/clone }\n  slow: { run: sleep 1 }\n  later: { run: pwd, needs: [slow] }\n",
    );
    let (code, _, err) = project.run(&["run", "-j", "2"]);
    assert_eq!(code, 0, "{err}");
    let root = std::fs::canonicalize(project.path()).unwrap();
    let log = project.last_log();
    assert!(
        log.contains(&format!("[later] {}\n", root.display())),
        "{log}"
    );
    // Once the workspace exists, stages without `workdir` run in it.
    let (code, _, err) = project.run(&["run", "-j", "2"]);
    assert_eq!(code, 0, "{err}");
    let log = project.last_log();
    assert!(
        log.contains(&format!("[later] {}\n", root.join("workspace").display())),
        "{log}"
    );
}
