//! `schedule:` stages and `pydeployer schedule`: the next times, a real crontab (Debian's
//! `cron` package; a throwaway user's crontab, never the machine user's, which is checked to be
//! unchanged), and the foreground scheduler under the run lock. Waits have limits (guards
//! against hangs); "on time" is checked loosely.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Project, finish, gone_within, guard, signal};

const LIMIT: Duration = Duration::from_mins(1);

/// The user whose crontab the tests write (made by test.sh).
const CRON_USER: &str = "pydeployer-cron";

fn log_text(path: &std::path::Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned()
}

/// The run logs (not other files of logs/), oldest run first; a log that has no header yet
/// (its run is starting) is not counted yet.
fn runs(project: &Project) -> Vec<String> {
    let mut texts: Vec<String> = project
        .logs()
        .iter()
        // Run logs are named after their start; cron's output (cron.log) is not one.
        .filter(|log| {
            log.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(|log| log_text(log))
        .filter(|text| text.contains("[pydeployer] started: "))
        .collect();
    texts.sort_by_key(|text| started(text));
    texts
}

/// The `started:` time of a log's header.
fn started(log: &str) -> chrono::DateTime<chrono::FixedOffset> {
    log.lines()
        .find_map(|l| {
            l.split_once("[pydeployer] started: ")
                .map(|(_, t)| t.to_owned())
        })
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .expect("a started: line")
}

fn pipeline() -> Project {
    Project::with_pipeline(
        "stages:\n\
         \x20 build: { run: echo build }\n\
         \x20 cleanup: { run: \"echo cleaning 100%\", schedule: \"0 3 * * *\", needs: [build] }\n\
         \x20 often: { run: echo often, schedule: \"*/15 9-17 * * mon-fri\" }\n",
    )
}

#[test]
fn schedule_lists_each_scheduled_stage_with_its_next_three_times() {
    let project = pipeline();
    let (code, stdout, stderr) = project.run(&["schedule"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("cleanup  0 3 * * *"), "{stdout}");
    assert!(lines[0].contains(" 03:00, "), "{stdout}");
    assert!(
        lines[1].starts_with("often    */15 9-17 * * mon-fri"),
        "{stdout}"
    );
    for line in &lines {
        let (_, times) = line.split_once("next: ").expect("next:");
        assert_eq!(times.split(", ").count(), 3, "{line}");
    }
    let (code, stdout, _) = project.run(&["schedule", "--format", "json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let cleanup = &json[0];
    assert_eq!(cleanup["stage"], "cleanup");
    assert_eq!(cleanup["schedule"], "0 3 * * *");
    let next: Vec<chrono::DateTime<chrono::FixedOffset>> = cleanup["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(next.len(), 3);
    for pair in next.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::days(1), "{next:?}");
    }
    for time in &next {
        assert_eq!(time.format("%H:%M:%S").to_string(), "03:00:00");
    }

    // A plain run leaves scheduled stages out, and the plan says why; naming one runs it.
    let (code, stdout, _) = project.run(&["plan", "--format", "json"]);
    assert_eq!(code, 0);
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let reasons: Vec<(&str, &str)> = plan["not_run"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(reasons, [("cleanup", "scheduled"), ("often", "scheduled")]);
    let (code, _, stderr) = project.run(&["run", "cleanup"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(project.last_log().contains("[pydeployer] trigger: manual"));
    assert!(project.last_log().contains("[cleanup] cleaning 100%"));
}

/// `crontab ARGS…` (with the throwaway user's `-u`), its exit code and output.
fn crontab(args: &[&str], input: Option<&str>) -> (i32, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("crontab")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("crontab (Debian's cron package; ./test.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Removes the throwaway user's crontab when the test ends, however it ends.
struct ClearCrontab;

impl Drop for ClearCrontab {
    fn drop(&mut self) {
        let _ = crontab(&["-u", CRON_USER, "-r"], None);
    }
}

#[test]
fn install_twice_gives_one_block_whose_line_runs_the_stage_and_remove_leaves_the_rest() {
    let exists = std::process::Command::new("id")
        .arg(CRON_USER)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        exists,
        "the user {CRON_USER} is missing: run ./test.sh, which makes it"
    );
    // The machine user's crontab, as found: it must be the same at the end.
    let mine_before = crontab(&["-l"], None);
    let _clear = ClearCrontab;
    let theirs = "MAILTO=\"\"\n# the user's own line, kept as it is\n17 4 * * * echo kept 50\\%\n";
    assert_eq!(crontab(&["-u", CRON_USER, "-"], Some(theirs)).0, 0);

    let project = pipeline();
    for _ in 0..2 {
        let (code, stdout, stderr) = project.run(&["schedule", "install", "--user", CRON_USER]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("2 lines"), "{stdout}");
    }
    let (code, installed) = crontab(&["-u", CRON_USER, "-l"], None);
    assert_eq!(code, 0);
    assert!(installed.starts_with(theirs), "{installed}");
    let root = project.path().display().to_string();
    assert_eq!(
        installed
            .matches(&format!("# pydeployer schedule begin {root}"))
            .count(),
        1,
        "{installed}"
    );
    assert_eq!(
        installed.matches("schedule run").count(),
        2,
        "one line per stage: {installed}"
    );
    let line = installed
        .lines()
        .find(|l| l.starts_with("0 3 * * * "))
        .expect("the line of cleanup");
    assert!(line.contains(&format!("cd '{root}'")), "{line}");
    let exe = assert_cmd::cargo::cargo_bin!("pydeployer")
        .display()
        .to_string();
    assert!(line.contains(&format!("'{exe}'")), "{line}");

    // The line, run by hand as cron would (`%` is cron's newline; `\%` a percent sign).
    let command = line["0 3 * * * ".len()..].replace(r"\%", "%");
    let status = std::process::Command::new("sh")
        .args(["-c", &command])
        .current_dir("/")
        .status()
        .unwrap();
    assert!(status.success());
    let logs = runs(&project);
    assert_eq!(logs.len(), 1);
    assert!(
        logs[0].contains("[pydeployer] trigger: schedule"),
        "{}",
        logs[0]
    );
    assert!(logs[0].contains("[pydeployer] selection: run cleanup"));
    assert!(logs[0].contains("[cleanup] cleaning 100%"), "{}", logs[0]);
    assert!(logs[0].contains("[pydeployer] exit code 0"));
    let output = project.read("logs/cron.log");
    assert!(output.contains("cleanup"), "{output}");

    let (code, stdout, stderr) = project.run(&["schedule", "remove", "--user", CRON_USER]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("removed"), "{stdout}");
    assert_eq!(
        crontab(&["-u", CRON_USER, "-l"], None),
        (0, theirs.to_owned())
    );
    let (code, stdout, _) = project.run(&["schedule", "remove", "--user", CRON_USER]);
    assert_eq!(code, 0);
    assert!(stdout.contains("nothing to remove"), "{stdout}");
    assert_eq!(crontab(&["-l"], None), mine_before);
}

/// Reads a child's stderr as it comes, into a string the test can look at.
fn collect_stderr(child: &mut std::process::Child) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}

fn wait_for_text(text: &Arc<Mutex<String>>, wanted: &str) {
    wait_for_count(text, wanted, 1);
}

/// Waits until `wanted` was said `count` times.
fn wait_for_count(text: &Arc<Mutex<String>>, wanted: &str, count: usize) {
    let start = std::time::Instant::now();
    while text.lock().unwrap().matches(wanted).count() < count {
        assert!(
            start.elapsed() < LIMIT,
            "`{wanted}` never came: {}",
            text.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn schedule_run_runs_a_stage_on_time_and_waits_its_turn_behind_a_running_pipeline() {
    let project = Project::with_pipeline(
        "stages:\n\
         \x20 long: { run: \"echo $$ > long.pid; while [ ! -e go ]; do sleep 0.05; done\", when: manual }\n\
         \x20 tick: { run: echo ticked, schedule: \"*/5 * * * * *\" }\n",
    );
    // On time: the run starts in the second its time names (on a busy machine, up to two later).
    let mut child = project.spawn(&["schedule", "run"]);
    let _guard = guard(&child);
    let said = collect_stderr(&mut child);
    project.wait_for_log("[tick] ticked", LIMIT);
    wait_for_text(&said, "schedule: tick passed");
    let logs = runs(&project);
    let first = &logs[0];
    assert!(first.contains("[pydeployer] trigger: schedule"), "{first}");
    let second = chrono::Timelike::second(&started(first));
    assert!(second % 5 <= 2, "started at second {second}: {first}");

    // Behind a running pipeline: the due stage waits for the lock, then runs.
    let long = project.spawn(&["run", "long"]);
    let _long_guard = guard(&long);
    let long_pid = project.pid("long.pid");
    wait_for_text(&said, "waiting for another run of this project");
    let before = runs(&project).len();
    let long_started = runs(&project)
        .iter()
        .find(|l| l.contains("[long] started"))
        .map(|l| started(l))
        .expect("long's log");
    assert!(
        runs(&project).iter().all(|l| started(l) <= long_started),
        "nothing starts beside `long`"
    );
    let passed_before = said
        .lock()
        .unwrap()
        .matches("schedule: tick passed")
        .count();
    std::fs::write(project.join("go"), "").unwrap();
    let (code, _, stderr) = finish(long, LIMIT);
    assert_eq!(code, 0, "{stderr}");
    assert!(gone_within(long_pid, LIMIT));
    let start = std::time::Instant::now();
    while runs(&project).len() < before + 1 {
        assert!(start.elapsed() < LIMIT, "the waiting stage never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for_count(&said, "schedule: tick passed", passed_before + 1);
    signal(child.id(), libc::SIGINT);
    let (code, _, _) = finish(child, LIMIT);
    assert_eq!(code, 130, "{}", said.lock().unwrap());
    let logs = runs(&project);
    let long_log = logs
        .iter()
        .find(|l| l.contains("[long] started"))
        .expect("long's log");
    let queued = logs
        .iter()
        .find(|l| l.contains("[tick] ticked") && started(l) > started(long_log))
        .expect("the tick that waited");
    let long_end = long_log
        .lines()
        .rfind(|l| l.contains("[pydeployer] exit code"))
        .unwrap();
    // The waiting run started after `long` ended (log times are of the day).
    assert!(
        queued.lines().next().unwrap().get(..12).unwrap() >= long_end.get(..12).unwrap(),
        "{queued}\n{long_log}"
    );
}

#[test]
fn bad_schedules_are_refused_with_the_place_and_nothing_runs() {
    let project = Project::with_pipeline(
        "stages:\n\
         \x20 a: { run: echo a, schedule: \"61 * * * *\" }\n\
         \x20 b: { run: echo b, schedule: \"0 0 L * *\" }\n\
         \x20 c: { run: echo c, schedule: 5 }\n\
         \x20 d: { run: echo d, schedule: \"0 3 * * *\", interactive: true }\n",
    );
    let (code, _, stderr) = project.run(&["validate"]);
    assert_eq!(code, 2, "{stderr}");
    for (place, why) in [
        ("pipeline.yml:2:", "61 is not a valid minute"),
        ("pipeline.yml:3:", "`L` is not a valid day of month"),
        ("pipeline.yml:4:", "`schedule` must be a string"),
        ("pipeline.yml:5:", "interactive and scheduled"),
    ] {
        assert!(stderr.contains(place), "{place}: {stderr}");
        assert!(stderr.contains(why), "{why}: {stderr}");
    }
    for args in [
        &["run"][..],
        &["schedule"],
        &["schedule", "run"],
        &["run", "a"],
    ] {
        let (code, _, stderr) = project.run(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
    }
    assert!(project.logs().is_empty(), "something ran");

    // A stage to the second cannot go into a crontab; a stage without a schedule cannot be
    // run as scheduled.
    let seconds = Project::with_pipeline(
        "stages:\n  a: { run: echo a }\n  b: { run: echo b, schedule: \"*/5 * * * * *\" }\n",
    );
    let (code, _, stderr) = seconds.run(&["schedule", "install", "--user", CRON_USER]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cron counts minutes"), "{stderr}");
    let (code, _, stderr) = seconds.run(&["schedule", "run", "a"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("has no `schedule:`"), "{stderr}");
    assert!(seconds.logs().is_empty());
}
