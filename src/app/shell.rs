//! `pydeployer completions SHELL` and `pydeployer man`: the shell's view of the command line.
//!
//! Completion is dynamic (clap_complete's `CompleteEnv`): the script `completions` prints is
//! a small shell function that asks the binary itself, as
//! `PYDEPLOYER_COMPLETE=bash pydeployer -- pydeployer run te`, so subcommands, flags and values
//! come from the same clap definition that parses them, and stage names come from the
//! pipeline in the current folder (or the one `-f` names on the line being completed).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::env::{self, EnvCompleter};

use crate::cli::{Cli, CompletionShell, ManArgs};
use crate::error::{Failure, Problem};

/// The environment variable that turns a run of the binary into a completion request.
pub const COMPLETE_VAR: &str = "PYDEPLOYER_COMPLETE";

/// Answers a completion request and exits, when `PYDEPLOYER_COMPLETE` is set; returns
/// otherwise. Called first thing in `main`.
pub fn complete_if_asked() {
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(COMPLETE_VAR)
        .complete();
}

/// Prints the script that registers the completion function with `shell`.
pub(crate) fn completions(shell: CompletionShell) -> Result<(), Failure> {
    let completer: &dyn EnvCompleter = match shell {
        CompletionShell::Bash => &env::Bash,
        CompletionShell::Zsh => &env::Zsh,
        CompletionShell::Fish => &env::Fish,
        CompletionShell::Powershell => &env::Powershell,
        CompletionShell::Elvish => &env::Elvish,
    };
    let mut script = Vec::new();
    completer
        .write_registration(
            COMPLETE_VAR,
            "pydeployer",
            "pydeployer",
            &completer_path(),
            &mut script,
        )
        .map_err(|err| Failure::Tool(miette::miette!("cannot write the script: {err}")))?;
    let _ = std::io::stdout().lock().write_all(&script);
    Ok(())
}

/// How the script calls this binary back: as it was called now, made absolute when it was
/// called by a path (`./target/release/pydeployer`), by name when it was found on PATH.
fn completer_path() -> String {
    let argv0 = std::env::args_os()
        .next()
        .map_or_else(|| PathBuf::from("pydeployer"), PathBuf::from);
    let path = if argv0.components().count() > 1 {
        std::env::current_dir().map_or(argv0.clone(), |cwd| cwd.join(&argv0))
    } else {
        argv0
    };
    path.to_string_lossy().into_owned()
}

/// Prints the man page of pydeployer, or of one of its commands; or writes them all to a
/// folder.
pub(crate) fn man(args: &ManArgs) -> Result<(), Failure> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    if let Some(dir) = &args.dir {
        return write_pages(cmd, dir);
    }
    let page = match &args.command {
        None => cmd,
        Some(name) => {
            let Some(sub) = cmd
                .get_subcommands()
                .find(|s| !s.is_hide_set() && s.get_name() == name)
            else {
                let names: Vec<&str> = cmd
                    .get_subcommands()
                    .filter(|s| !s.is_hide_set())
                    .map(clap::Command::get_name)
                    .collect();
                return Err(Problem::general(format!("`{name}` is not a command"))
                    .with_help(format!("the commands: {}", names.join(", ")))
                    .into());
            };
            sub.clone()
        }
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .map_err(|err| Failure::Tool(miette::miette!("cannot render the man page: {err}")))?;
    let _ = std::io::stdout().lock().write_all(&roff);
    Ok(())
}

fn write_pages(cmd: clap::Command, dir: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)
        .and_then(|()| clap_mangen::generate_to(cmd, dir))
        .map_err(|err| {
            Failure::Tool(miette::miette!(
                "cannot write the man pages to {}: {err}",
                dir.display()
            ))
        })?;
    crate::errln!("wrote the man pages to {}", dir.display());
    Ok(())
}
