//! The run logs: one dated file per run, every line timestamped and tagged, 20 kept.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;
use common::Project;

fn is_log_line(line: &str) -> bool {
    // HH:MM:SS.mmm [tag] text
    let b = line.as_bytes();
    b.len() >= 15
        && b[2] == b':'
        && b[5] == b':'
        && b[8] == b'.'
        && b[12] == b' '
        && b[13] == b'['
        && line[..12].bytes().filter(u8::is_ascii_digit).count() == 9
}

#[test]
fn a_run_log_holds_every_line_with_time_and_tag() {
    let project =
        Project::with_pipeline("name: demo\nstages:\n  hello: { run: 'echo out; echo err >&2' }\n");
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    let logs = project.logs();
    assert_eq!(logs.len(), 1);
    let name = logs[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.len() == "2026-01-01_00-00-00.log".len()
            && logs[0].extension().is_some_and(|e| e == "log"),
        "{name}"
    );
    let log = project.last_log();
    assert!(log.lines().all(is_log_line), "{log}");
    assert!(
        log.contains("[hello] out\n") && log.contains("[hello] err\n"),
        "{log}"
    );
    assert!(
        log.contains("demo"),
        "header lacks the pipeline name: {log}"
    );
}

#[test]
fn after_25_runs_20_logs_remain_each_with_its_own_output() {
    let project = Project::with_pipeline(
        "stages:\n  count: { run: 'n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; echo run-$n' }\n",
    );
    for _ in 0..25 {
        assert_eq!(project.run(&["run", "-q"]).0, 0);
    }
    let logs = project.logs();
    assert_eq!(logs.len(), 20, "{logs:?}");
    let mut seen: Vec<u32> = logs
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            assert!(text.lines().all(is_log_line), "{text}");
            let line = text
                .lines()
                .find(|l| l.contains("[count] run-"))
                .expect("stage output in log");
            line.rsplit("run-").next().unwrap().parse().unwrap()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (6..=25).collect::<Vec<_>>(),
        "the newest 20 runs are kept"
    );
}

#[test]
fn keep_is_configurable_and_other_files_are_left_alone() {
    let project =
        Project::with_pipeline("logs: { dir: out/logs, keep: 2 }\nstages:\n  a: { run: 'true' }\n");
    project.file("out/logs/notes.txt", "mine");
    for _ in 0..4 {
        assert_eq!(project.run(&["run", "-q"]).0, 0);
    }
    let entries: Vec<String> = std::fs::read_dir(project.join("out/logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(entries.contains(&"notes.txt".to_owned()));
}

#[test]
fn binary_output_is_kept_not_a_crash() {
    let project =
        Project::with_pipeline("stages:\n  bin: { run: 'printf \"a\\000b\\377c\\n\"' }\n");
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    let raw = std::fs::read(&project.logs()[0]).unwrap();
    assert!(
        raw.windows(5).any(|w| w == b"a\0b\xffc"),
        "raw bytes not kept"
    );
}

#[test]
fn a_shared_logs_folder_never_loses_a_running_log() {
    // Two projects write into one logs folder (one of them through a symlink), keeping one log.
    let shared = tempfile::TempDir::new().unwrap();
    let a = Project::with_pipeline(&format!(
        "logs: {{ dir: {}, keep: 1 }}\nstages:\n  a: {{ run: echo a }}\n",
        shared.path().display()
    ));
    let b = Project::new();
    std::os::unix::fs::symlink(shared.path(), b.join("shared")).unwrap();
    b.file(
        "pipeline.yml",
        "logs: { dir: shared, keep: 1 }\nstages:\n  slow: { run: 'touch started; sleep 30' }\n",
    );
    let running = b.spawn(&["run"]);
    b.wait_for("started", std::time::Duration::from_secs(20));
    let b_log = std::fs::read_dir(shared.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // A's retention runs while B writes its log: B's log stays.
    let (code, _, err) = a.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    assert!(b_log.exists(), "a running log was removed");
    // …and A's listing calls B's run running, not killed.
    let (code, out, err) = a.run(&["logs", "--list", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let b_name = b_log.file_name().unwrap().to_string_lossy().into_owned();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == b_name.as_str())
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(entry["result"], "running", "{out}");
    common::signal(running.id(), libc::SIGTERM);
    let (code, _, _) = common::finish(running, std::time::Duration::from_secs(30));
    assert_eq!(code, 143);
}
