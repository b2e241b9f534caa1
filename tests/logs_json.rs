//! `pydeployer logs` (a run's log, `--stage`, `--list`, `--follow`), `history`, and the JSON
//! every command prints with `--format json`: it parses and carries the fields README.md
//! documents ("JSON output").

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use common::{Project, finish};
use serde_json::Value;

/// A guard against hangs, not a measurement.
const HANG_GUARD: Duration = Duration::from_mins(1);

/// Two stages; `check` fails while the file `fail` exists; `count` prints `run-N`.
const PIPELINE: &str = "\
name: logs-demo
stages:
  count: { run: 'n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; echo run-$n' }
  check: { run: 'if [ -e fail ]; then echo failing; exit 3; fi; echo fine', needs: [count] }
";

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// Three runs: passed, failed, passed.
fn three_runs() -> Project {
    let project = Project::with_pipeline(PIPELINE);
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    project.file("fail", "");
    assert_eq!(project.run(&["run", "-q"]).0, 1);
    std::fs::remove_file(project.join("fail")).unwrap();
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    project
}

#[test]
fn logs_shows_the_newest_run_and_run_picks_an_older_one() {
    let project = three_runs();
    let (code, out, err) = project.run(&["logs"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[count] run-3\n"), "{out}");
    assert!(out.contains("[pydeployer] pipeline: logs-demo\n"), "{out}");
    assert!(out.contains("[pydeployer] exit code 0\n"), "{out}");
    assert!(!out.contains("run-2"), "{out}");

    let (code, out, err) = project.run(&["logs", "-2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[count] run-2\n"), "{out}");
    assert!(out.contains("[check] failing\n"), "{out}");
    assert!(out.contains("[pydeployer] exit code 1\n"), "{out}");

    // By its file name, with or without `.log`, or by its path.
    // (`Project::logs` sorts by name, where `…-2.log` comes before `….log`.)
    let oldest = project
        .logs()
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .contains("[count] run-1\n")
        })
        .unwrap();
    let name = oldest.file_name().unwrap().to_str().unwrap().to_owned();
    let stamp = name.strip_suffix(".log").unwrap();
    for spec in [name.as_str(), stamp, oldest.to_str().unwrap()] {
        let (code, out, err) = project.run(&["logs", spec]);
        assert_eq!(code, 0, "{spec}: {err}");
        assert!(out.contains("[count] run-1\n"), "{spec}: {out}");
    }

    let (code, _, err) = project.run(&["logs", "-4"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("only 3 run logs"), "{err}");
    let (code, _, err) = project.run(&["logs", "1999-01-01"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no run log is named `1999-01-01`"), "{err}");
}

#[test]
fn logs_stage_prints_only_that_stage_and_says_when_it_has_none() {
    let project = three_runs();
    let (code, out, err) = project.run(&["logs", "-2", "--stage", "check"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|l| l.contains(" [check]")), "{out}");
    assert!(out.contains("[check] failing\n"), "{out}");
    assert!(out.contains("[check] failed (exit 3)"), "{out}");

    // A stage the run does not have: exit 2, naming its stages.
    let (code, out, err) = project.run(&["logs", "--stage", "chek"]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("has no stage `chek`"), "{err}");
    assert!(err.contains("did you mean `check`?"), "{err}");

    // A stage of the run with no line (the run was cut before it started).
    let project = Project::new();
    project.file(
        "logs/2026-01-01_00-00-00.log",
        "00:00:00.000 [pydeployer] pipeline: cut\n\
         00:00:00.000 [pydeployer] started: 2026-01-01T00:00:00.000+00:00\n\
         00:00:00.000 [pydeployer] selection: run\n\
         00:00:00.000 [pydeployer] jobs: 1\n\
         00:00:00.000 [pydeployer] stages: 2\n\
         00:00:00.000 [pydeployer]   a: echo a\n\
         00:00:00.000 [pydeployer]   b: echo b\n\
         00:00:00.010 [a] started: echo a\n",
    );
    project.file("pipeline.yml", "stages:\n  a: { run: echo a }\n");
    let (code, out, err) = project.run(&["logs", "--stage", "b"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("stage `b` has no lines"), "{err}");
}

#[test]
fn logs_list_gives_each_run_its_result_and_duration() {
    let project = three_runs();
    let (code, out, err) = project.run(&["logs", "--list"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].contains("result") && lines[0].contains("duration"),
        "{out}"
    );
    // Oldest first, the newest last as -1.
    assert!(
        lines[1].trim_start().starts_with("-3") && lines[1].contains("passed"),
        "{out}"
    );
    assert!(lines[2].contains("failed (exit 1)"), "{out}");
    assert!(
        lines[3].trim_start().starts_with("-1") && lines[3].contains("passed"),
        "{out}"
    );

    let (code, out, err) = project.run(&["logs", "--list", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let runs = json(&out);
    let runs = runs.as_array().expect("an array");
    assert_eq!(runs.len(), 3);
    let names: Vec<String> = project
        .logs()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for (run, (index, result)) in runs
        .iter()
        .zip([(-3, "passed"), (-2, "failed"), (-1, "passed")])
    {
        assert_eq!(run["index"], index, "{run}");
        assert_eq!(run["result"], result, "{run}");
        assert_eq!(run["exit_code"], i32::from(result == "failed"), "{run}");
        assert!(run["duration_seconds"].as_f64().unwrap() >= 0.0, "{run}");
        assert_eq!(run["pipeline"], "logs-demo", "{run}");
        assert_eq!(run["selection"], "run", "{run}");
        assert!(run["started_at"].as_str().unwrap().contains('T'), "{run}");
        assert!(
            names.contains(&run["name"].as_str().unwrap().to_owned()),
            "{run}"
        );
        assert!(
            std::path::Path::new(run["path"].as_str().unwrap()).is_file(),
            "{run}"
        );
    }

    // A log the runner never finished (killed), and no run holding the lock: `killed`.
    let project = Project::with_pipeline("stages:\n  a: { run: echo a }\n");
    project.file(
        "logs/2026-01-01_00-00-00.log",
        "00:00:00.000 [pydeployer] pipeline: cut\n\
         00:00:00.000 [pydeployer] started: 2026-01-01T00:00:00.000+00:00\n\
         00:00:02.500 [a] started: echo a\n",
    );
    let (code, out, err) = project.run(&["logs", "--list", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let runs = json(&out);
    assert_eq!(runs[0]["result"], "killed", "{out}");
    assert_eq!(runs[0]["exit_code"], Value::Null, "{out}");
    assert_eq!(runs[0]["duration_seconds"], 2.5, "{out}");
}

/// Reads `reader`'s lines on a thread; they arrive on the returned channel.
fn lines_of(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

/// Waits for a line containing `text`; returns every line up to it.
fn until(lines: &mpsc::Receiver<String>, text: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = lines
            .recv_timeout(HANG_GUARD)
            .unwrap_or_else(|_| panic!("no line with {text:?}; got {seen:#?}"));
        let found = line.contains(text);
        seen.push(line);
        if found {
            return seen;
        }
    }
}

const GATED: &str = "\
name: gated
stages:
  wait: { run: 'echo before-gate; while [ ! -e gate ]; do sleep 0.05; done; echo after-gate' }
  last: { run: 'echo last-stage', needs: [wait] }
";

#[test]
fn follow_prints_the_run_in_progress_as_it_goes_and_ends_with_it() {
    let project = Project::with_pipeline(GATED);
    // An older, finished run, which follow must not pick.
    project.file("gate", "");
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    std::fs::remove_file(project.join("gate")).unwrap();

    let mut run = project.spawn(&["run", "-q"]);
    let run_err = lines_of(run.stderr.take().unwrap());
    // The run is in progress once the log holds the stage's first line.
    let start = std::time::Instant::now();
    while !(project.logs().len() == 2 && project.last_log().contains("[wait] before-gate")) {
        assert!(start.elapsed() < HANG_GUARD, "the run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, out, err) = project.run(&["logs", "--list", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let runs = json(&out);
    assert_eq!(runs[1]["result"], "running", "{out}");
    assert_eq!(runs[1]["exit_code"], Value::Null, "{out}");
    assert_eq!(runs[0]["result"], "passed", "{out}");

    let mut follow = project.spawn(&["logs", "--follow"]);
    let lines = lines_of(follow.stdout.take().unwrap());
    let before = until(&lines, "[wait] before-gate");
    assert!(
        before
            .iter()
            .any(|l| l.contains("[pydeployer] pipeline: gated")),
        "{before:#?}"
    );
    assert!(
        !before.iter().any(|l| l.ends_with("[wait] after-gate")),
        "{before:#?}"
    );

    // Written only now, after follow printed what was there.
    project.file("gate", "");
    let after = until(&lines, "[pydeployer] exit code 0");
    assert!(
        after.iter().any(|l| l.ends_with("[wait] after-gate")),
        "{after:#?}"
    );
    assert!(
        after.iter().any(|l| l.ends_with("[last] last-stage")),
        "{after:#?}"
    );
    // Follow ends with the run: its output closes, and it exits 0.
    assert!(
        lines.recv_timeout(HANG_GUARD).is_err(),
        "follow printed past the end"
    );
    let (code, _, err) = finish(follow, HANG_GUARD);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("following"), "{err}");
    assert!(
        run.wait().unwrap().success(),
        "{:?}",
        run_err.try_iter().collect::<Vec<_>>()
    );

    // The same log, read whole afterwards, is what follow printed.
    let mut followed = before;
    followed.extend(after);
    assert_eq!(followed.join("\n") + "\n", project.last_log());
}

#[test]
fn follow_started_before_the_run_waits_for_it_and_filters_a_stage() {
    let project = Project::with_pipeline(GATED);
    project.file("gate", "");
    let mut follow = project.spawn(&["logs", "--follow", "--stage", "last"]);
    let errors = lines_of(follow.stderr.take().unwrap());
    until(&errors, "waiting for the next one");
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    let (code, out, _) = finish(follow, HANG_GUARD);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().all(|l| l.contains(" [last] ")), "{out}");
    assert!(out.contains("[last] last-stage\n"), "{out}");
    assert!(out.contains("[last] passed in"), "{out}");
}

#[test]
fn run_json_is_the_documented_summary() {
    let project = Project::with_pipeline(PIPELINE);
    project.file("fail", "");
    let (code, out, err) = project.run(&["run", "--format", "json"]);
    assert_eq!(code, 1, "{err}");
    let summary = json(&out);
    assert_eq!(summary["pipeline"], "logs-demo");
    assert_eq!(summary["result"], "failed");
    assert_eq!(summary["exit_code"], 1);
    assert!(
        summary["duration_seconds"].as_f64().unwrap() >= 0.0,
        "{out}"
    );
    assert!(
        summary["started_at"].as_str().unwrap().contains('T'),
        "{out}"
    );
    let log = summary["log"].as_str().unwrap();
    assert!(std::path::Path::new(log).is_file(), "{out}");
    assert_eq!(project.logs(), [std::path::PathBuf::from(log)]);
    let stages = summary["stages"].as_array().unwrap();
    let fields: Vec<(&str, &str)> = stages
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["result"].as_str().unwrap()))
        .collect();
    assert_eq!(fields, [("count", "passed"), ("check", "failed")]);
    for stage in stages {
        assert!(
            stage["duration_seconds"].is_f64() || stage["duration_seconds"].is_u64(),
            "{stage}"
        );
        assert_eq!(stage["attempts"], 1, "{stage}");
    }
    assert_eq!(stages[1]["detail"], "failed (exit 3)");

    std::fs::remove_file(project.join("fail")).unwrap();
    let (code, out, err) = project.run(&["run", "--format", "json", "--skip", "check"]);
    assert_eq!(code, 0, "{err}");
    let summary = json(&out);
    assert_eq!(summary["result"], "passed");
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["stages"].as_array().unwrap().len(), 1);
}

#[test]
fn validate_json_gives_every_problem_its_place() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  a:\n",
        "    run: echo a\n",
        "    neds: [b]\n",
        "  b: { run: echo b, retries: lots }\n",
        "  c: { run: echo c, needs: [bb] }\n",
    ));
    let (code, out, err) = project.run(&["validate", "--format", "json"]);
    assert_eq!(code, 2, "{err}");
    let report = json(&out);
    assert_eq!(report["valid"], false);
    assert_eq!(report["file"], "pipeline.yml");
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 3, "{out}");
    for problem in problems {
        assert_eq!(problem["file"], "pipeline.yml", "{problem}");
        assert!(problem["line"].as_u64().unwrap() >= 1, "{problem}");
        assert!(problem["column"].as_u64().unwrap() >= 1, "{problem}");
        assert!(
            !problem["message"].as_str().unwrap().is_empty(),
            "{problem}"
        );
        assert!(problem["label"].is_string(), "{problem}");
        assert!(problem["help"].is_string(), "{problem}");
        assert!(problem["related"].is_array(), "{problem}");
    }
    let find = |text: &str| {
        problems
            .iter()
            .find(|p| p["message"].as_str().unwrap().contains(text))
            .unwrap_or_else(|| panic!("no problem about {text}: {out}"))
    };
    let unknown = find("unknown stage key `neds`");
    assert_eq!(
        (unknown["line"].as_u64(), unknown["column"].as_u64()),
        (Some(4), Some(5))
    );
    assert_eq!(unknown["help"], "did you mean `needs`?");
    let retries = find("`retries` must be a whole number");
    assert_eq!(retries["line"], 5);
    let needs = find("needs `bb`");
    assert_eq!(needs["line"], 6);
    assert_eq!(needs["help"], "did you mean `b`?");

    // Valid: the same object with `valid: true`.
    let project = Project::with_pipeline("stages:\n  a: { run: echo a }\n");
    let (code, out, _) = project.run(&["validate", "--format", "json"]);
    assert_eq!(code, 0);
    let report = json(&out);
    assert_eq!(report["valid"], true);
    assert_eq!(report["stages"], 1);
    assert_eq!(report["problems"], serde_json::json!([]));
}

#[test]
fn json_mode_reports_bad_input_of_any_command_as_json() {
    let project = Project::with_pipeline("stages:\n  a: { run: echo a }\n  b: { run: echo b }\n");
    project.file(
        "stages.d/10-more.yml",
        "c: { run: echo c }\nb: { run: echo again }\n",
    );
    for command in ["plan", "run", "history"] {
        let (code, out, err) = project.run(&[command, "--format", "json"]);
        assert_eq!(code, 2, "{command}: {err}");
        let report = json(&out);
        assert_eq!(report["valid"], false, "{command}");
        let problem = &report["problems"][0];
        assert!(
            problem["message"]
                .as_str()
                .unwrap()
                .contains("declared twice"),
            "{out}"
        );
        assert_eq!(problem["file"], "stages.d/10-more.yml", "{out}");
        assert_eq!(problem["line"], 2, "{out}");
        // The first declaration is a related place, in the other file.
        assert_eq!(problem["related"][0]["file"], "pipeline.yml", "{out}");
        assert_eq!(problem["related"][0]["line"], 3, "{out}");
    }
    assert!(project.logs().is_empty(), "nothing ran");

    // A problem that is in no file: its place is null.
    let project = Project::with_pipeline("stages:\n  a: { run: echo a }\n");
    let (code, out, _) = project.run(&["run", "--format", "json", "nosuch"]);
    assert_eq!(code, 2);
    let report = json(&out);
    assert_eq!(report["problems"][0]["file"], Value::Null, "{out}");
    assert_eq!(report["problems"][0]["line"], Value::Null, "{out}");
}

#[test]
fn plan_json_carries_the_documented_fields() {
    let project = Project::with_pipeline(PIPELINE);
    let (code, out, err) = project.run(&["plan", "--format", "json", "--skip", "check"]);
    assert_eq!(code, 0, "{err}");
    let plan = json(&out);
    assert_eq!(plan["pipeline"], "logs-demo");
    assert!(plan["selection"].is_string());
    assert!(plan["jobs"].as_u64().unwrap() >= 1);
    assert_eq!(plan["waves"], serde_json::json!([["count"]]));
    let stage = &plan["stages"][0];
    assert_eq!(stage["name"], "count");
    assert_eq!(stage["wave"], 1);
    assert_eq!(stage["needs"], serde_json::json!([]));
    assert_eq!(stage["when"], "on_success");
    assert!(stage["command"].is_string());
    assert_eq!(stage["will_skip"], Value::Null);
    let not_run = &plan["not_run"][0];
    assert_eq!(not_run["name"], "check");
    assert!(not_run["why"].is_string(), "{out}");
    assert!(not_run.get("reason").is_some(), "{out}");
}

const LEDGER: &str = r#"[
  {"id": 1, "kind": "deploy", "status": "success",
   "started_at": "2026-01-02T10:00:00.000+00:00", "finished_at": "2026-01-02T10:00:03.500+00:00",
   "repo": "demo/origin.git", "remote": "origin", "branch": "master",
   "commit": "0123456789abcdef0123456789abcdef01234567", "previous_commit": null,
   "log": "logs/2026-01-02_10-00-00.log"},
  {"id": 2, "kind": "rollback", "status": "failed",
   "started_at": "2026-01-03T11:00:00.000+00:00", "finished_at": "2026-01-03T11:01:05.000+00:00",
   "repo": "demo/origin.git", "remote": "origin", "branch": "release",
   "commit": null, "previous_commit": "0123456789abcdef0123456789abcdef01234567",
   "log": null}
]
"#;

#[test]
fn history_is_a_table_with_a_limit_and_json() {
    let project = Project::with_pipeline("stages:\n  a: { run: echo a }\n");
    let (code, out, _) = project.run(&["history"]);
    assert_eq!(code, 0);
    assert_eq!(out, "no deploys yet\n");
    project.file("archive/deploy_history.json", LEDGER);

    let (code, out, err) = project.run(&["history"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "id", "kind", "status", "branch", "commit", "started", "duration"
        ]
    );
    let first: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &first[..5],
        ["1", "deploy", "success", "master", "0123456789"]
    );
    assert_eq!(first.last(), Some(&"3.5s"));
    let second: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&second[..5], ["2", "rollback", "failed", "release", "-"]);
    assert_eq!(second.last(), Some(&"1m05s"));

    let (code, out, _) = project.run(&["history", "--limit", "1"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.lines().nth(1).unwrap().trim_start().starts_with('2'),
        "{out}"
    );

    let (code, out, _) = project.run(&["history", "--format", "json"]);
    assert_eq!(code, 0);
    let entries = json(&out);
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for field in [
        "id",
        "kind",
        "status",
        "started_at",
        "finished_at",
        "repo",
        "remote",
        "branch",
        "commit",
        "previous_commit",
        "log",
    ] {
        assert!(entries[0].get(field).is_some(), "{field} missing: {out}");
    }
    assert_eq!(entries[1]["kind"], "rollback");
    let (_, out, _) = project.run(&["history", "--format", "json", "--limit", "1"]);
    assert_eq!(json(&out).as_array().unwrap().len(), 1);
}

#[test]
fn logs_json_is_one_object_per_line() {
    let project = three_runs();
    let (code, out, err) = project.run(&["--format", "json", "logs"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out.lines().map(json).collect();
    let log = project.run(&["logs"]).1;
    assert_eq!(lines.len(), log.lines().count(), "{out}");
    assert_eq!(lines[0]["stage"], "pydeployer", "{out}");
    assert_eq!(lines[0]["text"], "pipeline: logs-demo", "{out}");
    let time = lines[0]["time"].as_str().unwrap();
    assert!(
        time.len() == 12 && time.as_bytes()[2] == b':' && time.as_bytes()[8] == b'.',
        "{time}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["stage"] == "count" && l["text"] == "run-3"),
        "{out}"
    );
    assert_eq!(lines.last().unwrap()["text"], "exit code 0", "{out}");

    // One stage's lines, of an older run.
    let (code, out, err) = project.run(&["--format", "json", "logs", "-2", "--stage", "check"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out.lines().map(json).collect();
    assert!(lines.iter().all(|l| l["stage"] == "check"), "{out}");
    assert!(lines.iter().any(|l| l["text"] == "failing"), "{out}");

    // `--follow` streams the same objects (here of a finished run: to its last line).
    let (code, out, err) = project.run(&["--format", "json", "logs", "-1", "--follow"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out.lines().map(json).collect();
    assert_eq!(lines.last().unwrap()["text"], "exit code 0", "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l["stage"] == "count" && l["text"] == "run-3"),
        "{out}"
    );
}

#[test]
fn commands_that_print_scripts_or_pages_refuse_json() {
    let project = Project::with_pipeline(PIPELINE);
    for args in [
        &["--format", "json", "man"][..],
        &["--format", "json", "completions", "bash"],
        &["--format", "json", "graph"],
    ] {
        let (code, out, err) = project.run(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        let report = json(&out);
        assert_eq!(report["valid"], false, "{args:?}: {out}");
        assert!(
            report["problems"][0]["message"]
                .as_str()
                .unwrap()
                .contains("not JSON"),
            "{args:?}: {out}"
        );
    }
}

#[test]
fn follow_ends_when_its_reader_goes_away_even_while_no_line_comes() {
    // `pydeployer logs --follow | head -1`, with no run in progress: like GNU `tail -f`, it
    // ends once nobody reads its output instead of waiting for a run for ever.
    let project = Project::with_pipeline(PIPELINE);
    let mut child = project.spawn(&["logs", "--follow"]);
    drop(child.stdout.take());
    let (code, _, err) = finish(child, HANG_GUARD);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_closed_standard_output_never_turns_into_a_crash() {
    // `pydeployer … | head -1` where head is already gone: the exit code stays the command's
    // (no panic, exit 101).
    let project = three_runs();
    for (args, want) in [
        (&["validate"][..], 0),
        (&["history"], 0),
        (&["--format", "json", "validate"], 0),
        (&["--format", "json", "completions", "bash"], 2),
        (&["--format", "json", "run", "--only", "nope"], 2),
        (&["--format", "json", "run", "-q"], 0),
        (&["plan"], 0),
    ] {
        let mut child = project.spawn(args);
        drop(child.stdout.take());
        let (code, _, err) = finish(child, HANG_GUARD);
        assert_eq!(code, want, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_long_line_of_multibyte_characters_is_cut_between_characters() {
    // 150,000 bytes without a newline go to the log in pieces; none may split a character.
    let project = Project::with_pipeline(
        "stages:\n  euro: { run: [python3, -c, 'import sys; sys.stdout.write(\"€\" * 50000)'] }\n",
    );
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = project.run(&["--format", "json", "logs", "--stage", "euro"]);
    assert_eq!(code, 0, "{err}");
    let pieces: Vec<String> = out
        .lines()
        .map(json)
        .map(|l| l["text"].as_str().unwrap().to_owned())
        .filter(|text| text.starts_with('€'))
        .collect();
    assert!(pieces.len() > 1, "not cut at all: {} pieces", pieces.len());
    let joined: String = pieces.concat();
    assert!(!joined.contains('\u{FFFD}'), "a character was split");
    assert_eq!(joined, "€".repeat(50_000));
}

#[test]
fn history_limit_is_at_least_one() {
    let project = Project::with_pipeline(PIPELINE);
    let (code, _, err) = project.run(&["history", "--limit", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--limit"), "{err}");
}
