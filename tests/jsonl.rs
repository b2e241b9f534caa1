//! `run --format jsonl`: the run's events as JSON Lines on stdout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use std::io::{BufRead, BufReader};

use common::Project;
use serde_json::Value;

const SECRET: &str = "hunter2-s3cr3t-value";

/// Three stages: `hello` prints the secret; `fail` needs it and fails; `after` needs `fail`.
const PIPELINE: &str = "\
secrets: [TOKEN]
stages:
  hello: { run: 'echo \"token is $TOKEN\"; printf \"no newline $TOKEN\"' }
  fail: { run: 'echo \"$TOKEN\" >&2; exit 3', needs: [hello] }
  after: { run: echo never, needs: [fail] }
";

fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

#[test]
fn every_event_is_a_line_of_json_in_order_and_masked() {
    let project = Project::with_pipeline(PIPELINE);
    let output = project
        .cmd(&["run", "--format", "jsonl", "-j", "1"])
        .env("TOKEN", SECRET)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let out = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(!out.contains(SECRET), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    let events = lines(&out);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    // Stage events come in the order the run had them: started, its output, finished.
    let of_stage = |stage: &str| -> Vec<&str> {
        events
            .iter()
            .filter(|e| e["stage"] == stage)
            .map(|e| e["event"].as_str().unwrap())
            .collect()
    };
    // (A line the stage leaves unfinished may come in pieces: the end of it could have been
    // the start of a secret, and was held back until the stage ended.)
    let hello = of_stage("hello");
    assert_eq!(hello.first(), Some(&"stage_started"));
    assert_eq!(hello.last(), Some(&"stage_finished"));
    assert!(
        hello[1..hello.len() - 1]
            .iter()
            .all(|e| *e == "stage_output")
    );
    assert_eq!(
        of_stage("fail"),
        ["stage_started", "stage_output", "stage_finished"]
    );
    assert_eq!(of_stage("after"), ["stage_skipped"]);
    // Elapsed times never go back.
    let elapsed: Vec<f64> = events
        .iter()
        .map(|e| e["elapsed"].as_f64().unwrap())
        .collect();
    assert!(elapsed.windows(2).all(|w| w[0] <= w[1]), "{elapsed:?}");

    let header = &events[0];
    assert_eq!(header["trigger"], "manual");
    let planned: Vec<&str> = header["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(planned, ["hello", "fail", "after"]);

    let texts: Vec<&str> = of(&events, "stage_output")
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert!(texts.contains(&"token is ***"), "{texts:?}");
    assert!(texts.contains(&"***"), "{texts:?}");
    assert!(texts.concat().contains("no newline ***"), "{texts:?}");

    let finished = of(&events, "stage_finished");
    assert_eq!(finished[0]["outcome"], "passed");
    assert_eq!(finished[1]["outcome"], "failed");
    assert_eq!(finished[1]["exit_code"], 3);
    assert_eq!(finished[1]["detail"], "failed (exit 3)");
    let skipped = of(&events, "stage_skipped");
    assert_eq!(skipped[0]["reason"]["kind"], "blocked");
    assert_eq!(skipped[0]["reason"]["by"], "fail");

    let last = events.last().unwrap();
    assert_eq!(last["exit_code"], 1);
    assert_eq!(last["result"], "failed");
    let results: Vec<(&str, &str)> = last["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        results,
        [
            ("hello", "passed"),
            ("fail", "failed"),
            ("after", "skipped")
        ]
    );
    // The log is masked the same way.
    assert!(!project.last_log().contains(SECRET));
}

#[test]
fn a_reader_that_goes_away_ends_nothing_and_nothing_panics() {
    let project = Project::with_pipeline(
        "stages:\n  a: { run: echo one }\n  b: { run: 'sleep 0.3; echo two', needs: [a] }\n  c: { run: echo three, needs: [b] }\n",
    );
    let mut child = project.spawn(&["run", "--format", "jsonl"]);
    // `| head -1`: read one line, then close the pipe.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .expect("read");
    let started: Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(started["event"], "run_started");
    let (code, _, err) = common::finish(child, std::time::Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The run went on to its end.
    assert!(project.last_log().contains("[c] three"));
}

#[test]
fn other_commands_refuse_jsonl_and_bad_input_is_one_line() {
    let project = Project::with_pipeline("stages:\n  a: { run: echo one, needs: [nope] }\n");
    let (code, out, _) = project.run(&["run", "--format", "jsonl"]);
    assert_eq!(code, 2);
    let events = lines(&out);
    assert_eq!(events.len(), 1, "{out}");
    assert_eq!(events[0]["valid"], false);
    let (code, out, _) = project.run(&["history", "--format", "jsonl"]);
    assert_eq!(code, 2, "{out}");
    let refused = lines(&out);
    assert_eq!(refused.len(), 1, "{out}");
    let help = refused[0]["problems"][0]["help"].as_str().unwrap();
    assert!(help.contains("--format json"), "{help}");
}
