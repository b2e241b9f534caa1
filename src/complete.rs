//! Completing stage names: `run <TAB>`, `--only <TAB>` and `--skip <TAB>` offer the stages of the
//! pipeline named on the line being completed (`-f`), else of `./pipeline.yml`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap_complete::CompletionCandidate;

use crate::config;
use crate::pipeline::When;

/// The stage names of the pipeline, for completing `run`/`plan` STAGE, `--only` and `--skip`.
/// A pipeline that does not load completes nothing (the command itself will say why).
pub(crate) fn stage_candidates() -> Vec<CompletionCandidate> {
    let file = pipeline_file(std::env::args_os());
    let Ok(pipeline) = config::load(&file) else {
        return Vec::new();
    };
    pipeline
        .stages
        .iter()
        .map(|stage| {
            let when = match stage.when {
                When::OnSuccess => None,
                When::OnFailure => Some("on_failure"),
                When::Always => Some("always"),
                When::Manual => Some("manual"),
            };
            let help = stage
                .description
                .clone()
                .or_else(|| when.map(|w| format!("({w})")));
            CompletionCandidate::new(stage.name.as_str()).help(help.map(Into::into))
        })
        .collect()
}

/// The `-f/--file` given on the line being completed (the words after `--`), else
/// `pipeline.yml`.
fn pipeline_file(args: impl Iterator<Item = OsString>) -> PathBuf {
    let words: Vec<OsString> = args.skip_while(|a| a != "--").skip(1).collect();
    let mut file = PathBuf::from("pipeline.yml");
    let mut iter = words.iter().peekable();
    while let Some(word) = iter.next() {
        let word = word.to_string_lossy();
        if word == "-f" || word == "--file" {
            if let Some(value) = iter.peek() {
                file = PathBuf::from(value);
            }
        } else if let Some(value) = word.strip_prefix("--file=") {
            file = PathBuf::from(value);
        } else if let Some(value) = word.strip_prefix("-f").filter(|v| !v.is_empty()) {
            file = PathBuf::from(value.strip_prefix('=').unwrap_or(value));
        }
    }
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(line: &[&str]) -> PathBuf {
        pipeline_file(line.iter().map(OsString::from))
    }

    #[test]
    fn the_pipeline_file_comes_from_the_line_being_completed() {
        let bin = ["pydeployer", "--", "pydeployer"];
        let with = |rest: &[&str]| file_of(&[&bin[..], rest].concat());
        assert_eq!(with(&["run", ""]), PathBuf::from("pipeline.yml"));
        assert_eq!(
            with(&["-f", "ci/p.yml", "run", ""]),
            PathBuf::from("ci/p.yml")
        );
        assert_eq!(with(&["run", "--file=x.yml", ""]), PathBuf::from("x.yml"));
        assert_eq!(with(&["-fy.yml", "plan", ""]), PathBuf::from("y.yml"));
        // Before `--` are the completer's own arguments.
        assert_eq!(
            file_of(&["pydeployer", "-f", "no.yml", "--", "pydeployer", "run"]),
            PathBuf::from("pipeline.yml")
        );
    }
}
