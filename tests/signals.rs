//! What real machines do to a run: signals, stdin, leaked processes, two runs at once and
//! `kill -9` — done for real to the real binary, then checked: nothing lost, nothing left.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;
use std::fs;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::{Project, alive, bare_origin, finish, git, gone_within, make_executable, signal};

/// A guard against hangs, never a measurement: a healthy run is far quicker.
const LIMIT: Duration = Duration::from_mins(1);

// --- Signals ---------------------------------------------------------------------------

/// A stage that records its pid and its background child's pid, then waits.
const WAITING: &str = "\
stages:
  slow: { run: 'sleep 300 & echo $! > child.pid; echo $$ > main.pid; wait' }
  after: { run: touch after.ran, needs: [slow] }
";

#[test]
fn ctrl_c_ends_the_running_stage_group_reports_cancelled_and_exits_130() {
    let project = Project::with_pipeline(WAITING);
    let run = project.spawn(&["run"]);
    let child = project.pid("child.pid");
    let main = project.pid("main.pid");
    signal(run.id(), libc::SIGINT);
    let (code, _, err) = finish(run, LIMIT);
    assert_eq!(code, 130, "{err}");
    assert!(gone_within(main, LIMIT) && gone_within(child, LIMIT));
    assert!(!project.exists("after.ran"));
    let log = project.last_log();
    assert!(log.contains("[slow] cancelled"), "{log}");
    assert!(
        log.contains("[after] skipped: cancelled before it started"),
        "{log}"
    );
    assert!(!log.contains("leaked"), "{log}");
    assert!(err.contains("cancelled"), "{err}");
}

#[test]
fn sigterm_does_the_same_and_exits_143() {
    let project = Project::with_pipeline(WAITING);
    let run = project.spawn(&["run"]);
    let child = project.pid("child.pid");
    signal(run.id(), libc::SIGTERM);
    let (code, _, err) = finish(run, LIMIT);
    assert_eq!(code, 143, "{err}");
    assert!(gone_within(child, LIMIT));
    assert!(project.last_log().contains("cancelled"));
}

#[test]
fn a_stage_ignoring_term_is_killed_at_once_by_a_second_ctrl_c() {
    // The grace period is far longer than the hang guard: only the second Ctrl-C can end
    // the run in time.
    let project = Project::with_pipeline(concat!(
        "grace_period: 10m\n",
        "stages:\n",
        "  stubborn: { run: 'trap \"\" TERM INT; echo $$ > main.pid; while :; do sleep 0.05; done' }\n",
    ));
    let run = project.spawn(&["run"]);
    let main = project.pid("main.pid");
    signal(run.id(), libc::SIGINT);
    // The first signal's TERM is ignored; the stage keeps running.
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(main), "the stage should still run after TERM");
    signal(run.id(), libc::SIGINT);
    let (code, _, err) = finish(run, LIMIT);
    assert_eq!(code, 130, "{err}");
    assert!(gone_within(main, LIMIT));
}

#[test]
fn the_grace_period_ends_with_kill_when_term_is_ignored() {
    let project = Project::with_pipeline(concat!(
        "grace_period: 200ms\n",
        "stages:\n",
        "  stubborn: { run: 'trap \"\" TERM INT; echo $$ > main.pid; while :; do sleep 0.05; done' }\n",
    ));
    let run = project.spawn(&["run"]);
    let main = project.pid("main.pid");
    signal(run.id(), libc::SIGTERM);
    let (code, _, err) = finish(run, LIMIT);
    assert_eq!(code, 143, "{err}");
    assert!(gone_within(main, LIMIT));
}

#[test]
fn a_deploy_stage_cancelled_mid_push_is_recorded_as_cancelled() {
    let project = Project::with_pipeline(concat!(
        "repo: { url: origin.git }\n",
        "stages:\n",
        "  clone: { uses: git/clone }\n",
        "  deploy: { uses: git/push, needs: [clone] }\n",
    ));
    bare_origin(&project);
    // A pre-push hook that waits: the deploy is in progress when the signal comes.
    let (code, _, err) = project.run(&["run", "--only", "clone"]);
    assert_eq!(code, 0, "{err}");
    project.file(
        "workspace/.git/hooks/pre-push",
        "#!/bin/sh\necho $$ > ../hook.pid\nsleep 300\n",
    );
    make_executable(&project.join("workspace/.git/hooks/pre-push"));
    let run = project.spawn(&["run", "--only", "deploy"]);
    let hook = project.pid("hook.pid");
    signal(run.id(), libc::SIGINT);
    let (code, _, err) = finish(run, LIMIT);
    assert_eq!(code, 130, "{err}");
    assert!(gone_within(hook, LIMIT));
    let ledger: serde_json::Value =
        serde_json::from_str(&project.read("archive/deploy_history.json")).expect("JSON");
    assert_eq!(ledger[0]["status"], "cancelled", "{ledger}");
}

// --- Stdin -----------------------------------------------------------------------------

#[test]
fn stdin_is_empty_unless_the_stage_is_interactive() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  quiet: { run: 'read -r line; echo \"quiet got [$line]\" > quiet.txt' }\n",
        "  asks: { run: 'read -r line; echo \"asks got [$line]\" > asks.txt', interactive: true, needs: [quiet] }\n",
    ));
    let output = project
        .cmd(&["run"])
        .write_stdin("hello\n")
        .output()
        .expect("run");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(project.read("quiet.txt"), "quiet got []\n");
    assert_eq!(project.read("asks.txt"), "asks got [hello]\n");
}

// --- Leaks -----------------------------------------------------------------------------

#[test]
fn a_stage_that_leaves_a_child_holding_its_output_does_not_hang_the_run() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  leaky: { run: 'sleep 300 & echo $! > child.pid; echo started' }\n",
        "  next: { run: touch next.ran, needs: [leaky] }\n",
    ));
    let run = project.spawn(&["run"]);
    let (code, _, err) = finish(run, LIMIT);
    assert_eq!(code, 0, "{err}");
    assert!(project.exists("next.ran"));
    assert!(gone_within(project.pid("child.pid"), LIMIT));
    assert!(err.contains("leaked processes"), "{err}");
    assert!(project.last_log().contains("leaked processes"));
}

#[test]
fn a_leaked_child_that_keeps_writing_is_ended_too() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  chatty: { run: '(while :; do echo tick; sleep 0.01; done) & echo $! > child.pid' }\n",
    ));
    let (code, _, err) = finish(project.spawn(&["run"]), LIMIT);
    assert_eq!(code, 0, "{err}");
    assert!(gone_within(project.pid("child.pid"), LIMIT));
    assert!(err.contains("leaked processes"), "{err}");
}

#[test]
fn a_background_job_without_the_output_is_ended_with_the_stage() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  daemon: { run: 'sleep 300 >/dev/null 2>&1 & echo $! > child.pid' }\n",
    ));
    let (code, _, err) = finish(project.spawn(&["run"]), LIMIT);
    assert_eq!(code, 0, "{err}");
    assert!(gone_within(project.pid("child.pid"), LIMIT));
    assert!(err.contains("leaked processes"), "{err}");
}

/// A stage whose background job ignores TERM and outlives it.
const STUBBORN_LEFTOVER: &str = "  last: { run: \"sh -c 'trap \\\"\\\" TERM; echo $$ > bg.pid; exec sleep 300' >/dev/null 2>&1 & sleep 0.2; echo hi\" }\n";

#[test]
fn a_leftover_that_ignores_term_gets_kill_before_the_run_ends() {
    let project = Project::with_pipeline(&format!("stages:\n{STUBBORN_LEFTOVER}"));
    let (code, _, err) = finish(project.spawn(&["run"]), LIMIT);
    assert_eq!(code, 0, "{err}");
    let pid = project.pid("bg.pid");
    // Not "soon": the run itself must not end before its leftovers are gone.
    assert!(!alive(pid), "the leftover {pid} outlived the run");
}

#[test]
fn kill_9_while_a_leftover_waits_for_its_kill_still_ends_it() {
    let project = Project::with_pipeline(&format!(
        "stages:\n{STUBBORN_LEFTOVER}  other: {{ run: 'sleep 5' }}\n"
    ));
    let run = project.spawn(&["run", "-j", "2"]);
    let pid = project.pid("bg.pid");
    // Within the half second between TERM and KILL of the leftover (or after it: then the
    // run's own KILL ended it already).
    std::thread::sleep(Duration::from_millis(350));
    signal(run.id(), libc::SIGKILL);
    let _ = finish(run, LIMIT);
    assert!(
        gone_within(pid, LIMIT),
        "the watchdog let the leftover {pid} live"
    );
}

#[test]
fn a_retry_is_not_confused_with_the_attempt_given_up_on() {
    // Attempt 1 leaves a process outside its group holding the output and times out; it is
    // given up on. Attempt 2 succeeds, and must be reported as it is.
    let project = Project::with_pipeline(concat!(
        "grace_period: 100ms\n",
        "stages:\n",
        "  flaky:\n",
        "    timeout: 1s\n",
        "    retries: 1\n",
        "    run: |\n",
        "      if [ ! -e first ]; then touch first; setsid sleep 4 & echo $! > escaped.pid; sleep 100; fi\n",
        "      echo second attempt done\n",
    ));
    let (code, _, err) = finish(project.spawn(&["run"]), LIMIT);
    assert_eq!(code, 0, "{err}");
    let log = project.last_log();
    assert!(log.contains("left running"), "{log}");
    assert!(log.contains("[flaky] second attempt done"), "{log}");
    assert!(log.contains("passed"), "{log}");
    // The escaped process is ours to clean up in a test.
    signal(
        u32::try_from(project.pid("escaped.pid")).expect("pid"),
        libc::SIGKILL,
    );
}

// --- Interactive stages in a real terminal ---------------------------------------------

/// Runs `pydeployer ARGS` in a pseudo-terminal (util-linux `script`), typing `input` once the
/// file `ready` exists; returns (exit code, what the terminal showed).
fn in_terminal(project: &Project, args: &str, input: &[u8]) -> (i32, String) {
    let bin = assert_cmd::cargo::cargo_bin!("pydeployer");
    in_terminal_shell(project, &format!("{} {args}", bin.display()), input)
}

/// Like [`in_terminal`], with a whole shell command line (`$PYDEPLOYER` is the binary).
fn in_terminal_shell(project: &Project, command: &str, input: &[u8]) -> (i32, String) {
    let bin = assert_cmd::cargo::cargo_bin!("pydeployer");
    let mut child = std::process::Command::new("script")
        .args(["-qfec", command, "/dev/null"])
        .env("PYDEPLOYER", bin)
        .current_dir(project.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) is needed for the terminal tests");
    let mut stdin = child.stdin.take().expect("stdin");
    project.wait_for("ready", LIMIT);
    stdin.write_all(input).expect("type");
    let (code, out, err) = finish(child, LIMIT);
    drop(stdin);
    (code, format!("{out}{err}"))
}

#[test]
fn an_interactive_stage_owns_the_terminal_and_sees_what_is_typed() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  ask: { run: 'printf \"name? \"; touch ready; read -r n; echo \"hi $n\"', interactive: true }\n",
    ));
    let (code, screen) = in_terminal(&project, "run", b"alice\n");
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("name? "), "{screen}");
    assert!(screen.contains("hi alice"), "{screen}");
}

#[test]
fn ctrl_c_typed_into_an_interactive_stage_stops_the_run() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  ask: { run: 'touch ready; read -r n; echo got it', interactive: true }\n",
        "  after: { run: touch after.ran, needs: [ask] }\n",
    ));
    let (code, screen) = in_terminal(&project, "run", b"\x03");
    assert_eq!(code, 130, "{screen}");
    assert!(!project.exists("after.ran"));
    assert!(project.last_log().contains("cancelled"));
}

#[test]
fn ctrl_z_in_an_interactive_stage_does_not_stop_the_run() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  ask: { run: 'touch ready; read -r n; echo \"hi $n\"', interactive: true }\n",
    ));
    let (code, screen) = in_terminal(&project, "run", b"\x1aalice\n");
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("hi alice"), "{screen}");
}

#[test]
fn with_tostop_pydeployer_writing_while_the_stage_owns_the_terminal_is_not_stopped() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  ask: { run: 'echo first line; touch ready; read -r n; echo \"hi $n\"', interactive: true }\n",
    ));
    let (code, screen) = in_terminal_shell(&project, "stty tostop; \"$PYDEPLOYER\" run", b"bob\n");
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains("first line") && screen.contains("hi bob"),
        "{screen}"
    );
}

#[test]
fn an_interactive_stage_is_refused_when_pydeployer_runs_in_the_background() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  ask: { run: 'read -r n; echo \"hi $n\"', interactive: true }\n",
    ));
    // An interactive shell puts a `&` job in a background process group.
    let (code, screen) = in_terminal_shell(
        &project,
        "touch ready; bash --norc -ic '\"$PYDEPLOYER\" run & wait $!; echo \"exit=$?\"'",
        b"",
    );
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("exit=1"), "{screen}");
    assert!(screen.contains("runs in the background"), "{screen}");
}

#[test]
fn a_hangup_ignored_by_whoever_started_pydeployer_stays_ignored() {
    let project = Project::with_pipeline(GATED);
    // `nohup`: SIGHUP ignored before exec.
    let run = std::process::Command::new("sh")
        .args(["-c", "trap '' HUP; exec \"$PYDEPLOYER\" run"])
        .env("PYDEPLOYER", assert_cmd::cargo::cargo_bin!("pydeployer"))
        .current_dir(project.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh");
    project.wait_for("started", LIMIT);
    signal(run.id(), libc::SIGHUP);
    fs::write(project.join("open"), "").expect("open the gate");
    let (code, _, err) = finish(run, LIMIT);
    assert_eq!(code, 0, "{err}");
}

// --- One run at a time -----------------------------------------------------------------

const GATED: &str = "\
stages:
  gate: { run: 'touch started; while [ ! -e open ]; do sleep 0.02; done' }
";

#[test]
fn a_second_run_fails_at_once_naming_the_first_and_can_wait_for_it() {
    let project = Project::with_pipeline(GATED);
    let first = project.spawn(&["run"]);
    project.wait_for("started", LIMIT);

    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("another run holds"), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(err.contains("started 20"), "{err}");
    assert!(err.contains("--wait"), "{err}");
    // With --format json, stdout says so too.
    let (code, out, err) = project.run(&["--format", "json", "run"]);
    assert_eq!(code, 3, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(json["busy"], true, "{out}");
    assert_eq!(json["exit_code"], 3, "{out}");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("another run holds"),
        "{out}"
    );

    fs::remove_file(project.join("started")).expect("rm");
    let waiting = project.spawn(&["run", "--wait"]);
    // It waits for the lock: its stage cannot start while the first run holds it.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !project.exists("started"),
        "the waiting run started a stage"
    );
    fs::write(project.join("open"), "").expect("open the gate");
    let (code, _, err) = finish(first, LIMIT);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = finish(waiting, LIMIT);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("waiting for another run"), "{err}");
    assert!(project.exists("started"));
}

#[test]
fn plan_and_validate_do_not_need_the_lock() {
    let project = Project::with_pipeline(GATED);
    let first = project.spawn(&["run"]);
    project.wait_for("started", LIMIT);
    assert_eq!(project.run(&["plan"]).0, 0);
    assert_eq!(project.run(&["validate"]).0, 0);
    fs::write(project.join("open"), "").expect("open the gate");
    assert_eq!(finish(first, LIMIT).0, 0);
}

// --- kill -9 ---------------------------------------------------------------------------

const DEPLOYING: &str = "\
repo: { url: origin.git }
stages:
  clone: { uses: git/clone }
  change: { run: 'date +%s%N >> changes.txt', needs: [clone] }
  build: { uses: git/commit, needs: [change], with: { message: change } }
  deploy: { uses: git/push, needs: [build] }
";

#[test]
fn kill_9_leaves_no_stage_running_and_a_lock_that_does_not_block() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  slow: { run: 'sleep 300 & echo $! > child.pid; echo $$ > main.pid; echo working; wait' }\n",
    ));
    let run = project.spawn(&["run"]);
    let child = project.pid("child.pid");
    let main = project.pid("main.pid");
    project.wait_for_log("[slow] working", LIMIT);
    signal(run.id(), libc::SIGKILL);
    let (code, _, _) = finish(run, LIMIT);
    assert_eq!(code, 128 + libc::SIGKILL);
    // The main process dies with the runner; the watchdog ends the rest of its group.
    assert!(
        gone_within(main, LIMIT),
        "the stage's main process outlived the runner"
    );
    assert!(
        gone_within(child, LIMIT),
        "the stage's background child outlived the runner"
    );
    // The log written so far is readable.
    let log = project.last_log();
    assert!(log.contains("[slow] working"), "{log}");
    // The lock died with the process.
    fs::write(
        project.join("pipeline.yml"),
        "stages:\n  quick: { run: 'true' }\n",
    )
    .expect("write");
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_line_left_unfinished_reaches_the_log_and_survives_kill_9() {
    // `printf 'partial'` and a pause: the line has no end yet. It must be in the log within
    // moments (not only once its newline comes), so that a `kill -9` of the runner keeps it.
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  slow: { run: 'printf \"half a line\"; echo $$ > main.pid; sleep 300' }\n",
    ));
    let run = project.spawn(&["run"]);
    let main = project.pid("main.pid");
    // The piece comes after about a second.
    project.wait_for_log("[slow] half a line", LIMIT);
    signal(run.id(), libc::SIGKILL);
    let _ = finish(run, LIMIT);
    assert!(gone_within(main, LIMIT), "the stage outlived the runner");
    assert!(project.last_log().contains("[slow] half a line\n"));
}

#[test]
fn kill_9_ends_the_stages_even_where_close_range_is_refused() {
    // Kernels before 5.9, and seccomp filters older than the call, refuse close_range: the
    // forked watchdog must still let go of its pipe's write end, or it would never see the
    // runner die. strace makes every close_range fail with ENOSYS.
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  slow: { run: 'if [ -e hold ]; then sleep 300 & echo $! > child.pid; echo $$ > main.pid; echo working; wait; fi' }\n",
    ));
    project.file("hold", "");
    let traced = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=close_range"])
        .args(["-e", "inject=close_range:error=ENOSYS"])
        .arg(assert_cmd::cargo::cargo_bin!("pydeployer"))
        .arg("run")
        .current_dir(project.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace (the tests need it; .ci/run installs it)");
    let child = project.pid("child.pid");
    let main = project.pid("main.pid");
    // Killed only once the runner has read the stage's output: the watchdog knows its group
    // by then (between a spawn and that message lies a window, tiny without strace).
    project.wait_for_log("[slow] working", LIMIT);
    // The runner is strace's child: its pid is in the lock's holder record.
    let holder: serde_json::Value =
        serde_json::from_str(project.read(".pydeployer/lock").trim()).expect("holder record");
    let runner = u32::try_from(holder["pid"].as_u64().expect("pid")).expect("pid");
    signal(runner, libc::SIGKILL);
    assert!(
        gone_within(main, LIMIT),
        "the stage's main process outlived the runner"
    );
    assert!(
        gone_within(child, LIMIT),
        "the stage's background child outlived the runner: the watchdog kept its pipe open"
    );
    let _ = finish(traced, LIMIT);
    // The watchdog exited, so the lock is free.
    fs::remove_file(project.join("hold")).expect("rm hold");
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_next_run_after_kill_9_waits_until_the_killed_runs_stages_are_gone() {
    // The old stage takes a while to stop (its TERM trap sleeps); the new one must not start
    // beside it, and must not fail as "busy" either.
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        // (Its output goes elsewhere: with the runner gone, a write to the pipe would end it
        // at once by SIGPIPE, before its trap.)
        "  old: { run: 'exec >/dev/null 2>&1; trap \"sleep 1; rm -f busy; exit 0\" TERM; touch busy; echo $$ > main.pid; while :; do sleep 0.05; done' }\n",
        "  new: { run: 'test ! -e busy' }\n",
    ));
    let run = project.spawn(&["run", "--only", "old"]);
    let main = project.pid("main.pid");
    signal(run.id(), libc::SIGKILL);
    let _ = finish(run, LIMIT);
    let (code, _, err) = project.run(&["run", "--only", "new"]);
    assert_eq!(code, 0, "{err}\n{}", project.last_log());
    assert!(!alive(main));
}

#[test]
fn kill_9_at_any_moment_keeps_the_ledger_whole_and_leaves_no_litter_that_grows() {
    let project = Project::with_pipeline(DEPLOYING);
    bare_origin(&project);
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}\n{}", project.last_log());
    let mut entries = ledger_len(&project);
    assert_eq!(entries, 1);
    // Kill runs at spread-out moments: before, during and after the deploy.
    for delay_ms in [0, 5, 20, 40, 60, 80, 100, 130, 160, 200, 250, 300, 400] {
        let run = project.spawn(&["run"]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(i32::try_from(run.id()).expect("pid"), libc::SIGKILL) };
        let _ = finish(run, LIMIT);
        let now = ledger_len(&project);
        assert!(
            now >= entries,
            "the ledger lost entries after a kill at {delay_ms} ms"
        );
        entries = now;
        let litter = litter(&project);
        assert!(litter.len() <= 2, "temporary files pile up: {litter:?}");
    }
    // A normal run afterwards works, cleans up the scratch folders the killed runs left,
    // and appends. (A temporary ledger file is removed once it is ten minutes old.)
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}\n{}", project.last_log());
    assert_eq!(ledger_len(&project), entries + 1);
    let litter = litter(&project);
    assert!(
        !litter.iter().any(|l| l.starts_with(".pydeployer")),
        "{litter:?}"
    );
    assert!(litter.len() <= 2, "{litter:?}");
    // Every log is readable text with the header line.
    for log in project.logs() {
        let text = String::from_utf8_lossy(&fs::read(&log).expect("read")).into_owned();
        assert!(
            text.is_empty() || text.contains("pipeline"),
            "{}",
            log.display()
        );
    }
    // The workspace is still a clone of the origin.
    git(&project.join("workspace"), &["status", "--porcelain"]);
}

/// The ledger's entry count; it must always parse.
fn ledger_len(project: &Project) -> usize {
    let Ok(text) = fs::read_to_string(project.join("archive/deploy_history.json")) else {
        return 0;
    };
    let ledger: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the ledger does not parse: {e}\n{text}"));
    ledger.as_array().expect("an array").len()
}

/// Temporary files of the ledger and scratch folders of runs that were killed.
fn litter(project: &Project) -> Vec<String> {
    let mut found = Vec::new();
    for dir in ["archive", ".pydeployer/tmp"] {
        if let Ok(entries) = fs::read_dir(project.join(dir)) {
            for entry in entries {
                let name = entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                let temporary = std::path::Path::new(&name)
                    .extension()
                    .is_some_and(|ext| ext == "tmp");
                if temporary || name.starts_with("run-") {
                    found.push(format!("{dir}/{name}"));
                }
            }
        }
    }
    found
}

// --- Containment: processes that leave the stage's process group ----------------------

/// GNU `timeout` moves itself into a process group of its own; its child records both pids.
const TIMEOUT_WRAPPED: &str = "timeout 600 sh -c 'echo $PPID > timeout.pid; echo $$ > inner.pid; echo working; exec sleep 300'";

#[test]
fn a_stage_timeout_reaches_a_command_that_left_the_group() {
    let project = Project::with_pipeline(&format!(
        "stages:\n  slow: {{ run: \"{TIMEOUT_WRAPPED}; echo done\", timeout: 2s }}\n"
    ));
    let (code, _, err) = finish(project.spawn(&["run"]), LIMIT);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("timed out"), "{err}");
    for file in ["timeout.pid", "inner.pid"] {
        let pid = project.pid(file);
        assert!(gone_within(pid, LIMIT), "{file}: {pid} outlived its stage");
    }
    assert!(!project.last_log().contains("[slow] done"));
}

#[test]
fn a_job_of_a_shell_with_job_control_is_ended_with_its_stage() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  jobs: { run: \"bash -c 'set -m; sleep 300 >/dev/null 2>&1 & echo $! > bg.pid'\" }\n",
        "  next: { run: touch next.ran, needs: [jobs] }\n",
    ));
    let (code, _, err) = finish(project.spawn(&["run"]), LIMIT);
    assert_eq!(code, 0, "{err}");
    let pid = project.pid("bg.pid");
    assert!(gone_within(pid, LIMIT), "the job {pid} outlived its stage");
    assert!(err.contains("leaked processes"), "{err}");
    assert!(project.exists("next.ran"));
}

#[test]
fn ctrl_c_and_kill_9_reach_a_command_that_left_the_group() {
    for (signal_sent, code) in [(libc::SIGINT, 130), (libc::SIGKILL, 128 + libc::SIGKILL)] {
        let project = Project::with_pipeline(&format!(
            "stages:\n  slow: {{ run: \"{TIMEOUT_WRAPPED}\" }}\n"
        ));
        let run = project.spawn(&["run"]);
        project.wait_for_log("[slow] working", LIMIT);
        let pids = [project.pid("timeout.pid"), project.pid("inner.pid")];
        signal(run.id(), signal_sent);
        let (got, _, err) = finish(run, LIMIT);
        assert_eq!(got, code, "{err}");
        for pid in pids {
            assert!(
                gone_within(pid, LIMIT),
                "signal {signal_sent}: {pid} outlived the run"
            );
        }
    }
}
