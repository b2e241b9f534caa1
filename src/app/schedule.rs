//! `pydeployer schedule`: the scheduled stages (`schedule:`), their next times, the crontab
//! block that runs them, and a foreground scheduler for machines without cron.
//!
//! The crontab is the user's own file: `install` and `remove` touch only this project's block,
//! between two marker lines that name the project's root, and leave every other line as it was.
//! Each line of the block runs `pydeployer schedule run STAGE` (absolute paths, in the project),
//! which is a plain session run with trigger `schedule`, queued behind any other run.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Local, SecondsFormat};

use crate::actions::CommandLine;
use crate::cli::{Cli, Format, ScheduleAction, ScheduleArgs};
use crate::error::{Failure, Problem, exit};
use crate::events::Trigger;
use crate::exec::process;
use crate::exec::stop::Stop;
use crate::pipeline::{Pipeline, Stage};
use crate::plan::Selection;
use crate::session::{self, RunRequest};

/// How often the scheduler looks at the clock and the signals while it waits.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

pub(super) fn run(cli: &Cli, args: &ScheduleArgs) -> Result<(), Failure> {
    let pipeline = super::load(cli)?;
    match &args.action {
        None => {
            list(cli, &pipeline);
            Ok(())
        }
        Some(ScheduleAction::Install(target)) => install(&pipeline, target.user.as_deref()),
        Some(ScheduleAction::Remove(target)) => remove(&pipeline, target.user.as_deref()),
        Some(ScheduleAction::Run(run)) => match &run.stage {
            Some(stage) => run_now(cli, &pipeline, stage),
            None => scheduler(cli, &pipeline),
        },
    }
}

fn scheduled(pipeline: &Pipeline) -> impl Iterator<Item = (&Stage, &crate::cron::Schedule)> {
    pipeline
        .stages
        .iter()
        .filter_map(|stage| stage.schedule.as_deref().map(|s| (stage, s)))
}

/// Each scheduled stage with its pattern and next three times.
fn list(cli: &Cli, pipeline: &Pipeline) {
    let now = Local::now();
    let rows: Vec<(&Stage, &crate::cron::Schedule, Vec<DateTime<Local>>)> = scheduled(pipeline)
        .map(|(stage, schedule)| (stage, schedule, schedule.upcoming(&now, 3)))
        .collect();
    if cli.format != Format::Text {
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|(stage, schedule, next)| {
                serde_json::json!({
                    "stage": stage.name,
                    "schedule": schedule.to_string(),
                    "next": next
                        .iter()
                        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, false))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
        return;
    }
    if rows.is_empty() {
        crate::outln!("no stage has a `schedule:`");
        return;
    }
    let name_width = rows
        .iter()
        .map(|(s, ..)| s.name.as_str().len())
        .max()
        .unwrap_or(0);
    let pattern_width = rows
        .iter()
        .map(|(_, p, _)| p.to_string().len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (stage, schedule, next) in &rows {
        let format = if schedule.has_seconds() {
            "%Y-%m-%d %H:%M:%S"
        } else {
            "%Y-%m-%d %H:%M"
        };
        let times: Vec<String> = next.iter().map(|t| t.format(format).to_string()).collect();
        let _ = writeln!(
            out,
            "{:<name_width$}  {:<pattern_width$}  next: {}",
            stage.name.as_str(),
            schedule.to_string(),
            times.join(", ")
        );
    }
    crate::out!("{out}");
}

/// `schedule run STAGE`: the stage (and what it needs) now, as its time would run it; what
/// each crontab line calls.
fn run_now(cli: &Cli, pipeline: &Pipeline, name: &str) -> Result<(), Failure> {
    let Some(stage) = pipeline.stage(name) else {
        let names = scheduled(pipeline).map(|(s, _)| s.name.as_str());
        return Err(
            Problem::general(format!("`{name}` is not a stage of this pipeline"))
                .with_suggestion(
                    name,
                    names,
                    "`pydeployer schedule` lists the scheduled stages",
                )
                .into(),
        );
    };
    if stage.schedule.is_none() {
        return Err(
            Problem::general(format!("stage `{name}` has no `schedule:`"))
                .with_help(format!("run it with `pydeployer run {name}`"))
                .into(),
        );
    }
    session::run(pipeline, &request(name), &super::settings(cli, true))
}

fn request(stage: &str) -> RunRequest {
    RunRequest {
        command: "schedule",
        selection: Selection {
            targets: vec![stage.to_owned()],
            ..Selection::default()
        },
        trigger: Trigger::Schedule,
        ..RunRequest::default()
    }
}

/// `schedule run`: waits for the next time of any scheduled stage, runs the stages due then
/// (one run each, in the order they are declared, each behind any other run of the project),
/// and waits again, until a signal. A time that passes while a run goes is not made up for.
/// `pipeline.yml` is read again before each wait, so an edited schedule applies from then on.
fn scheduler(cli: &Cli, first: &Pipeline) -> Result<(), Failure> {
    let (stop, _hold) = Stop::hold()
        .map_err(|err| Failure::Tool(miette::miette!("cannot watch for Ctrl-C: {err}")))?;
    let settings = super::settings(cli, true);
    let mut pipeline = first.clone();
    if scheduled(&pipeline).next().is_none() {
        return Err(Problem::general("no stage of this pipeline has a `schedule:`")
            .with_help("add `schedule: \"0 3 * * *\"` to a stage (minute hour day-of-month month day-of-week)")
            .into());
    }
    crate::errln!(
        "schedule: running {} when their time comes (Ctrl-C to stop)",
        scheduled(&pipeline)
            .map(|(s, p)| format!("{} ({p})", s.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut since = Local::now();
    loop {
        let next = scheduled(&pipeline)
            .filter_map(|(_, schedule)| schedule.next_after(&since))
            .min();
        let Some(next) = next else {
            return Err(Problem::general("no scheduled stage has a time to come").into());
        };
        // Until it is time, or a signal ends the scheduler.
        loop {
            if let Some(code) = Stop::interrupted() {
                return Err(Failure::Exit(code));
            }
            let now = Local::now();
            if now >= next {
                break;
            }
            let left = (next - now).to_std().unwrap_or_default();
            std::thread::sleep(TICK.min(left));
        }
        let due: Vec<String> = scheduled(&pipeline)
            .filter(|(_, schedule)| schedule.next_after(&since).is_some_and(|t| t <= next))
            .map(|(stage, _)| stage.name.to_string())
            .collect();
        for name in &due {
            crate::errln!(
                "schedule: {name} is due ({}): running",
                next.format("%Y-%m-%d %H:%M:%S")
            );
            let result = session::run(&pipeline, &request(name), &settings);
            if stop.signalled() {
                return Err(Failure::Exit(
                    Stop::interrupted().unwrap_or(exit::INTERRUPTED),
                ));
            }
            match result {
                Ok(()) => crate::errln!("schedule: {name} passed"),
                Err(Failure::Exit(code)) => crate::errln!("schedule: {name} failed (exit {code})"),
                Err(Failure::Invalid(invalid)) => {
                    for problem in invalid.problems {
                        crate::errln!("{:?}", miette::Report::new(problem));
                    }
                    crate::errln!("schedule: {name}: nothing ran");
                }
                Err(Failure::Tool(report) | Failure::Busy(report)) => {
                    crate::errln!("{report:?}");
                    crate::errln!("schedule: {name}: the run stopped");
                }
            }
        }
        // Times that came while the stages ran are not made up for: the next one is after now.
        since = Local::now().max(next);
        match crate::config::load(&cli.file) {
            Ok(fresh) if scheduled(&fresh).next().is_some() => pipeline = fresh,
            Ok(_) => crate::errln!(
                "schedule: pipeline.yml has no scheduled stage any more; keeping the schedules it had"
            ),
            Err(invalid) => {
                crate::errln!("{invalid}; keeping the schedules it had");
            }
        }
    }
}

/// The marker lines of this project's block in a crontab.
fn markers(pipeline: &Pipeline) -> (String, String) {
    let root = pipeline.root.display();
    (
        format!(
            "# pydeployer schedule begin {root} (written by `pydeployer schedule install`; `pydeployer schedule remove` removes it)"
        ),
        format!("# pydeployer schedule end {root}"),
    )
}

/// Whether `line` is one of this project's markers.
fn is_marker(line: &str, marker: &str) -> bool {
    // The begin marker's explanation may differ between versions: the root decides.
    let head = |text: &str| {
        text.split(" (")
            .next()
            .unwrap_or(text)
            .trim_end()
            .to_owned()
    };
    head(line) == head(marker)
}

/// `crontab` (as the user, or `-u USER`).
fn crontab(user: Option<&str>, args: &[&str]) -> CommandLine {
    let mut all: Vec<String> = Vec::new();
    if let Some(user) = user {
        all.push("-u".into());
        all.push(user.into());
    }
    all.extend(args.iter().map(|&a| a.to_owned()));
    CommandLine::new("crontab", all)
}

/// The crontab as it is (empty when the user has none).
fn read_crontab(pipeline: &Pipeline, user: Option<&str>) -> Result<String, Failure> {
    let env = std::collections::BTreeMap::new();
    match process::capture_code(&crontab(user, &["-l"]), &pipeline.root, &env) {
        Ok((Some(0), text)) => Ok(text),
        // `no crontab for USER`: exit 1 and nothing listed.
        Ok((Some(1), text)) if text.trim().is_empty() => Ok(String::new()),
        Ok((code, _)) => Err(Failure::Tool(miette::miette!(
            "`crontab -l` failed (exit {})",
            code.map_or_else(|| "by a signal".to_owned(), |c| c.to_string())
        ))),
        Err(err) => Err(crontab_missing(&err)),
    }
}

fn crontab_missing(err: &std::io::Error) -> Failure {
    Failure::Tool(miette::miette!(
        help = "install cron (Debian: `apt-get install cron`), or run `pydeployer schedule run` in the foreground",
        "cannot run `crontab`: {err}"
    ))
}

/// Replaces the crontab with `text` (through a file, as `crontab FILE` does).
fn write_crontab(pipeline: &Pipeline, user: Option<&str>, text: &str) -> Result<(), Failure> {
    let file = tempfile::Builder::new()
        .prefix("pydeployer-crontab-")
        .tempfile()
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, text.as_bytes())?;
            Ok(file)
        })
        .map_err(|err| Failure::Tool(miette::miette!("cannot write a new crontab: {err}")))?;
    let path = file.path().display().to_string();
    let env = std::collections::BTreeMap::new();
    process::capture(&crontab(user, &[&path]), &pipeline.root, &env)
        .map(|_| ())
        .map_err(|err| {
            Failure::Tool(miette::miette!(
                "`crontab` refused the new crontab: {err}; the old one is unchanged"
            ))
        })
}

/// `text` without this project's block; whether there was one. A block whose end marker is
/// missing (an edit by hand) is refused rather than guessed at.
fn without_block(pipeline: &Pipeline, text: &str) -> Result<(String, bool), Failure> {
    let (begin, end) = markers(pipeline);
    let mut out = String::new();
    let mut inside = false;
    let mut found = false;
    for line in text.lines() {
        if !inside && is_marker(line, &begin) {
            inside = true;
            found = true;
            continue;
        }
        if inside {
            if is_marker(line, &end) {
                inside = false;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if inside {
        return Err(Problem::general(format!(
            "the crontab holds the first line of this project's block (`{begin}`) but not its last"
        ))
        .with_help("fix the crontab by hand (`crontab -e`): remove the block's lines, or add its last line")
        .into());
    }
    Ok((out, found))
}

/// A word for `sh -c`, in single quotes, with cron's `%` (a newline to cron) escaped.
fn cron_word(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''")).replace('%', r"\%")
}

/// This project's block: the markers and one line per scheduled stage.
fn block(pipeline: &Pipeline) -> Result<String, Failure> {
    let exe = std::env::current_exe()
        .map_err(|err| Failure::Tool(miette::miette!("cannot tell where pydeployer is: {err}")))?;
    let file = std::path::absolute(&pipeline.file).unwrap_or_else(|_| pipeline.file.clone());
    let output = pipeline.logs.dir.join("cron.log");
    let mut problems = Vec::new();
    for (what, path) in [
        ("the project's folder", pipeline.root.as_path()),
        ("pydeployer's path", exe.as_path()),
        ("the pipeline file", file.as_path()),
        ("the logs folder", output.as_path()),
    ] {
        if !crontab_safe(path) {
            problems.push(
                Problem::general(format!(
                    "{what} ({}) has a character a crontab line cannot hold (a newline or another control character)",
                    path.display()
                ))
                .with_help("move the project (or pydeployer) to a path without them"),
            );
        }
    }
    for (stage, schedule) in scheduled(pipeline) {
        if schedule.has_seconds() {
            problems.push(
                Problem::general(format!(
                    "stage `{}` ({}) is scheduled to the second (`{schedule}`), and cron counts minutes",
                    stage.name, stage.origin
                ))
                .with_help("write five fields (minute hour day-of-month month day-of-week), or run `pydeployer schedule run` in the foreground"),
            );
        }
    }
    if !problems.is_empty() {
        return Err(crate::error::Invalid { problems }.into());
    }
    let (begin, end) = markers(pipeline);
    let path = std::env::var("PATH").unwrap_or_default();
    let mut text = format!("{begin}\n");
    for (stage, schedule) in scheduled(pipeline) {
        let _ = writeln!(
            text,
            "{schedule} cd {} && PATH={} {} -f {} schedule run {} >> {} 2>&1",
            cron_word(&pipeline.root.display().to_string()),
            cron_word(&path),
            cron_word(&exe.display().to_string()),
            cron_word(&file.display().to_string()),
            cron_word(stage.name.as_str()),
            cron_word(&output.display().to_string()),
        );
    }
    text.push_str(&end);
    text.push('\n');
    Ok(text)
}

fn crontab_safe(path: &Path) -> bool {
    path.to_str()
        .is_some_and(|text| !text.chars().any(char::is_control))
}

/// `schedule install`: this project's block, replaced (never a second one), one line per
/// scheduled stage.
fn install(pipeline: &Pipeline, user: Option<&str>) -> Result<(), Failure> {
    let before = read_crontab(pipeline, user)?;
    let (mut text, replaced) = without_block(pipeline, &before)?;
    let count = scheduled(pipeline).count();
    if count == 0 {
        if replaced {
            write_crontab(pipeline, user, &text)?;
            crate::outln!(
                "no stage has a `schedule:`: removed this project's lines from the crontab"
            );
        } else {
            crate::outln!("no stage has a `schedule:`: nothing to install");
        }
        return Ok(());
    }
    let block = block(pipeline)?;
    // cron's output goes there; the folder must be there for the line to run at all.
    std::fs::create_dir_all(&pipeline.logs.dir).map_err(|err| {
        Failure::Tool(miette::miette!(
            "cannot create {}: {err}",
            pipeline.logs.dir.display()
        ))
    })?;
    text.push_str(&block);
    write_crontab(pipeline, user, &text)?;
    let whose = user.map_or_else(
        || "your crontab".to_owned(),
        |u| format!("the crontab of {u}"),
    );
    crate::outln!(
        "{} {count} line{} in {whose}:",
        if replaced {
            "replaced with"
        } else {
            "installed"
        },
        if count == 1 { "" } else { "s" }
    );
    for (stage, schedule) in scheduled(pipeline) {
        crate::outln!("  {schedule}  {}", stage.name);
    }
    crate::outln!(
        "their output goes to {}, each run's log to {}",
        pipeline.logs.dir.join("cron.log").display(),
        pipeline.logs.dir.display()
    );
    Ok(())
}

/// `schedule remove`: this project's block out of the crontab, nothing else.
fn remove(pipeline: &Pipeline, user: Option<&str>) -> Result<(), Failure> {
    let before = read_crontab(pipeline, user)?;
    let (text, found) = without_block(pipeline, &before)?;
    if !found {
        crate::outln!("the crontab has no lines of this project: nothing to remove");
        return Ok(());
    }
    write_crontab(pipeline, user, &text)?;
    crate::outln!("removed this project's lines from the crontab");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crontab_word_keeps_quotes_and_percent_signs() {
        assert_eq!(cron_word("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(cron_word("it's"), r"'it'\''s'");
        assert_eq!(cron_word("100%"), r"'100\%'");
    }
}
