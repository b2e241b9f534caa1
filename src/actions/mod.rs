//! What a stage runs, as typed command lines: `run:` commands and the built-in actions.
//!
//! Nothing here spawns; `exec::process` does. Values from the YAML only ever become separate
//! arguments, never text pasted into a shell line.

use std::fmt;

use serde::Serialize;

use crate::pipeline::{Action, Pipeline, RunCommand, Stage};

/// One program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandLine {
    pub program: String,
    pub args: Vec<String>,
}

impl CommandLine {
    pub fn new(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        CommandLine {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }
}

impl fmt::Display for CommandLine {
    /// As a shell would need it typed: words with special characters are single-quoted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", quote(&self.program))?;
        for arg in &self.args {
            write!(f, " {}", quote(arg))?;
        }
        Ok(())
    }
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Shell builtins and keywords that have no program of their own (or behave differently as
/// one): a command starting with them must go through `sh -c`.
const SHELL_ONLY: &[&str] = &[
    ".", ":", "alias", "bg", "break", "cd", "command", "continue", "eval", "exec", "exit",
    "export", "fc", "fg", "getopts", "hash", "jobs", "local", "read", "readonly", "return", "set",
    "shift", "source", "times", "trap", "type", "ulimit", "umask", "unalias", "unset", "wait",
    "if", "then", "else", "elif", "fi", "case", "esac", "for", "while", "until", "do", "done",
    "function", "select", "time", "!", "{", "}", "[[", "]]",
];

/// A `run:` string as a command line: split into words and run directly when it holds no
/// shell syntax (as make does; one process instead of two), else `sh -c`.
pub fn shell_command(script: &str) -> CommandLine {
    let simple = script
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" \t-_./=:,@%+".contains(&b));
    let words: Vec<&str> = script.split_ascii_whitespace().collect();
    match words.split_first() {
        Some((first, rest)) if simple && !SHELL_ONLY.contains(first) && !first.contains('=') => {
            CommandLine::new(*first, rest.iter().copied())
        }
        _ => CommandLine::new("sh", ["-c", script]),
    }
}

/// The commands a stage runs, in order; the stage fails at the first that fails.
pub fn commands(_pipeline: &Pipeline, stage: &Stage) -> Vec<CommandLine> {
    match &stage.action {
        Action::Run(RunCommand::Shell(script)) => vec![shell_command(script)],
        Action::Run(RunCommand::Argv(argv)) => vec![CommandLine::new(&argv[0], &argv[1..])],
        Action::Uses { action, .. } => vec![CommandLine::new(
            "false",
            [format!(
                "built-in action {} is not implemented yet",
                action.name()
            )],
        )],
    }
}

/// How the plan and the log show what a stage runs.
pub fn describe(pipeline: &Pipeline, stage: &Stage) -> String {
    match &stage.action {
        Action::Run(RunCommand::Shell(script)) => script.clone(),
        _ => commands(pipeline, stage)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" && "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_commands_run_without_a_shell() {
        assert_eq!(
            shell_command("pytest -v tests/"),
            CommandLine::new("pytest", ["-v", "tests/"])
        );
        assert_eq!(
            shell_command("  sleep 1 "),
            CommandLine::new("sleep", ["1"])
        );
    }

    #[test]
    fn shell_syntax_and_builtins_go_through_sh() {
        for script in [
            "echo $HOME",
            "a && b",
            "exit 3",
            "cd docs",
            "FOO=1 make",
            "echo 'x'",
            "ls > out",
            "sleep 30 & sleep 30",
        ] {
            assert_eq!(shell_command(script).program, "sh", "{script}");
        }
    }

    #[test]
    fn display_quotes_what_needs_quoting() {
        let cmd = CommandLine::new("git", ["commit", "-m", "it's done"]);
        assert_eq!(cmd.to_string(), r"git commit -m 'it'\''s done'");
    }
}
