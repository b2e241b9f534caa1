//! `pydeployer menu` (and `pydeployer` alone on a terminal): pick what to run from a list,
//! watch it run, pick again.
//!
//! The list is a dialoguer `Select`: one entry per stage (its `description:`, else its
//! command), then `all`, `several…` (a `MultiSelect` of the stages), `rollback` (when the
//! pipeline has a `git/revert` stage), `history` and `quit`. ↑/↓ (or j/k, Tab) and Enter pick;
//! Esc or q quits with exit 0.
//!
//! A picked stage runs alone, like `pydeployer run --only STAGE` (the original tool ran one
//! stage at a time, on the workspace as it is); `all` is `pydeployer all`. Every choice goes
//! through [`run_pipeline`] like the commands do: same plan, lock, progress, log and ledger,
//! and the lock is released when the run ends, before the menu comes back. Whatever the run
//! ends with (a failed stage, an invalid selection, a busy project, a Ctrl-C that cancelled
//! it) is shown and the menu comes back; only SIGTERM and SIGHUP end the menu (exit 143 and
//! 129). Ctrl-C at the menu itself quits with 130, the cursor shown again.

use std::io::{self, IsTerminal};

use dialoguer::console::Term;
use dialoguer::theme::{ColorfulTheme, SimpleTheme, Theme};
use dialoguer::{Confirm, MultiSelect, Select};

use super::environments::{rollback, rollback_question};
use super::{history, load, use_color};
use crate::cli::Cli;
use crate::error::{Failure, Invalid, Problem, exit};
use crate::exec::watchdog;
use crate::pipeline::{Builtin, Pipeline, Stage};
use crate::plan::Selection;
use crate::session::{self, RunRequest};

/// How long the menu waits, after a run, for that run's watchdog to exit (it sleeps at most
/// 50 ms between reads of its pipe).
const REAP_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// One line of the menu.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// Run this stage alone.
    Stage(String),
    /// The whole pipeline (`pydeployer all`).
    All,
    /// Choose several stages, then run them alone (in graph order).
    Several,
    /// `pydeployer rollback`.
    Rollback,
    /// `pydeployer history`.
    History,
    Quit,
}

/// How a prompt ended without a choice.
enum NoChoice {
    /// Esc or q.
    Quit,
    /// Ctrl-C.
    Interrupted,
}

pub(super) fn run(cli: &Cli) -> Result<(), Failure> {
    if !(io::stdin().is_terminal() && io::stderr().is_terminal()) {
        return Err(Problem::general(
            "the menu needs a terminal (stdin and stderr), and this is not one",
        )
        .with_help(
            "use `pydeployer run …` instead: `pydeployer run --only test` (one stage), `pydeployer run test` (a stage and what it needs), `pydeployer all`",
        )
        .into());
    }
    let mut pipeline = load(cli)?;
    let term = Term::stderr();
    let theme: Box<dyn Theme> = if use_color(cli.color) {
        Box::new(ColorfulTheme::default())
    } else {
        Box::new(SimpleTheme)
    };
    let mut last = 0;
    loop {
        let entries = entries(&pipeline);
        let width = usize::from(term.size().1);
        let labels = labels(&pipeline, &entries, width);
        let prompt = format!("{}: what to run? (↑/↓ and Enter; q quits)", pipeline.name);
        let picked = ask(&term, || {
            Select::with_theme(theme.as_ref())
                .with_prompt(&prompt)
                .report(false)
                .items(&labels)
                .default(last.min(entries.len() - 1))
                .interact_on_opt(&term)
        });
        let index = match picked {
            Ok(Some(index)) => index,
            Ok(None) | Err(NoChoice::Quit) => return Ok(()),
            Err(NoChoice::Interrupted) => return Err(Failure::Exit(exit::INTERRUPTED)),
        };
        last = index;
        // What runs is the pipeline as it is now on disk, not as it was when the menu was
        // drawn; a pipeline that no longer loads runs nothing.
        match load(cli) {
            Ok(reloaded) => pipeline = reloaded,
            Err(invalid) => {
                print_invalid(invalid);
                crate::errln!("(nothing was run: fix the pipeline, then pick again)\n");
                continue;
            }
        }
        if let Entry::Stage(name) = &entries[index] {
            if !pipeline.stages.iter().any(|s| s.name.as_str() == name) {
                crate::errln!("`{name}` is no longer a stage of the pipeline\n");
                continue;
            }
        }
        if entries[index] != Entry::Several {
            crate::errln!("» {}", entry_name(&entries[index]));
        }
        let (what, result) = match &entries[index] {
            Entry::Stage(name) => (name.clone(), run_alone(cli, &pipeline, vec![name.clone()])),
            Entry::All => ("all".to_owned(), run_all(cli, &pipeline)),
            Entry::Several => {
                let stages = stage_names(&pipeline);
                let picked = ask(&term, || {
                    MultiSelect::with_theme(theme.as_ref())
                        .with_prompt("stages to run alone (Space picks, Enter runs, Esc goes back)")
                        .report(false)
                        .items(&labels[..stages.len()])
                        .interact_on_opt(&term)
                });
                let chosen: Vec<String> = match picked {
                    Ok(Some(chosen)) => chosen.into_iter().map(|i| stages[i].clone()).collect(),
                    Ok(None) | Err(NoChoice::Quit) => continue,
                    Err(NoChoice::Interrupted) => return Err(Failure::Exit(exit::INTERRUPTED)),
                };
                if chosen.is_empty() {
                    continue;
                }
                crate::errln!("» {}", chosen.join(", "));
                (chosen.join(", "), run_alone(cli, &pipeline, chosen))
            }
            Entry::Rollback => {
                // What goes back to what, by commit; or why there is nothing to roll back.
                let question = match rollback_question(cli) {
                    Ok(question) => question,
                    Err(failure) => {
                        show("rollback", Err(failure))?;
                        continue;
                    }
                };
                // It pushes a revert to the remote: one key press is not enough for that.
                let sure = ask(&term, || {
                    Confirm::with_theme(theme.as_ref())
                        .with_prompt(question.as_str())
                        .default(false)
                        .report(false)
                        .interact_on_opt(&term)
                });
                match sure {
                    Ok(Some(true)) => ("rollback".to_owned(), rollback(cli, None, None, false)),
                    Ok(Some(false) | None) | Err(NoChoice::Quit) => continue,
                    Err(NoChoice::Interrupted) => {
                        return Err(Failure::Exit(exit::INTERRUPTED));
                    }
                }
            }
            Entry::History => {
                // A table needs no "done" under it.
                if let Err(failure) = history(cli, None, None) {
                    show("history", Err(failure))?;
                }
                crate::errln!();
                continue;
            }
            Entry::Quit => return Ok(()),
        };
        // The run's watchdog exits within moments of the run; the menu outlives it, so it
        // reaps it rather than keep an exited child per run.
        watchdog::reap_exited_within(REAP_WAIT);
        show(&what, result)?;
    }
}

/// The stages the menu lists: all but the `git/revert` ones, which `rollback` runs.
fn menu_stages(pipeline: &Pipeline) -> impl Iterator<Item = &Stage> {
    pipeline.stages.iter().filter(|s| !is_revert(s))
}

fn stage_names(pipeline: &Pipeline) -> Vec<String> {
    menu_stages(pipeline).map(|s| s.name.to_string()).collect()
}

fn is_revert(stage: &Stage) -> bool {
    stage.builtin() == Some(Builtin::GitRevert)
}

fn entry_name(entry: &Entry) -> &str {
    match entry {
        Entry::Stage(name) => name,
        Entry::All => "all",
        Entry::Several => "several…",
        Entry::Rollback => "rollback",
        Entry::History => "history",
        Entry::Quit => "quit",
    }
}

fn entries(pipeline: &Pipeline) -> Vec<Entry> {
    let mut entries: Vec<Entry> = stage_names(pipeline)
        .into_iter()
        .map(Entry::Stage)
        .collect();
    entries.push(Entry::All);
    if entries.len() > 2 {
        entries.push(Entry::Several);
    }
    if pipeline.stages.iter().any(is_revert) {
        entries.push(Entry::Rollback);
    }
    entries.push(Entry::History);
    entries.push(Entry::Quit);
    entries
}

/// One line per entry, cut to the terminal's `width` (a wrapped line would break the
/// redrawing): `  3. test      pytest -v in the workspace`.
fn labels(pipeline: &Pipeline, entries: &[Entry], width: usize) -> Vec<String> {
    let stages: Vec<&Stage> = menu_stages(pipeline).collect();
    let name_width = stages
        .iter()
        .map(|s| s.name.as_str().chars().count())
        .chain([8])
        .max()
        .unwrap_or(8);
    let digits = stages.len().to_string().len();
    let pad = digits + 2;
    let mut number = 0;
    let labels = entries.iter().map(|entry| {
        let (name, text) = match entry {
            Entry::Stage(name) => {
                number += 1;
                let stage = stages.iter().find(|s| s.name.as_str() == name);
                let text = stage.map_or_else(String::new, |stage| {
                    stage
                        .description
                        .clone()
                        .unwrap_or_else(|| crate::actions::describe(pipeline, stage))
                });
                let manual = stage.is_some_and(|s| s.when == crate::pipeline::When::Manual);
                let text = if manual {
                    format!("{text} (manual)")
                } else {
                    text
                };
                return format!(
                    "{:>pad$} {name:<name_width$}  {}",
                    format!("{number}."),
                    first_line(&text)
                );
            }
            other => (
                entry_name(other),
                match other {
                    Entry::All => "every stage but the manual ones (pydeployer all)",
                    Entry::Several => "pick stages with Space, run them with Enter",
                    Entry::Rollback => "revert the last deploy and push the revert",
                    Entry::History => "the deploy ledger",
                    Entry::Stage(_) | Entry::Quit => "",
                },
            ),
        };
        format!("{:>pad$} {name:<name_width$}  {text}", "")
    });
    // Room for the theme's marker in front of each item.
    let room = width.saturating_sub(4).max(20);
    labels.map(|label| cut(label.trim_end(), room)).collect()
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

/// `text`, at most `chars` characters (the last one `…` when cut).
fn cut(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn run_alone(cli: &Cli, pipeline: &Pipeline, stages: Vec<String>) -> Result<(), Failure> {
    let request = RunRequest {
        command: "menu",
        selection: Selection {
            only: stages,
            ..Selection::default()
        },
        ..RunRequest::default()
    };
    session::run(pipeline, &request, &super::settings(cli, false))
}

fn run_all(cli: &Cli, pipeline: &Pipeline) -> Result<(), Failure> {
    let request = RunRequest {
        command: "menu",
        ..RunRequest::default()
    };
    session::run(pipeline, &request, &super::settings(cli, false))
}

/// Shows how the choice ended; `Err` for what ends the menu too (SIGTERM, SIGHUP).
fn show(what: &str, result: Result<(), Failure>) -> Result<(), Failure> {
    let line = match result {
        Ok(()) => format!("{what}: done"),
        Err(Failure::Exit(exit::INTERRUPTED)) => format!("{what}: cancelled (Ctrl-C)"),
        Err(Failure::Exit(code @ (exit::TERMINATED | exit::HANGUP))) => {
            return Err(Failure::Exit(code));
        }
        Err(Failure::Exit(code)) => format!("{what}: failed (exit {code}); the summary is above"),
        Err(Failure::Invalid(invalid)) => {
            print_invalid(invalid);
            format!("{what}: nothing ran")
        }
        Err(Failure::Tool(report)) => {
            crate::errln!("{report:?}");
            format!("{what}: stopped")
        }
        Err(Failure::Busy(report)) => {
            crate::errln!("{report:?}");
            format!("{what}: nothing ran")
        }
    };
    crate::errln!("{line}\n");
    Ok(())
}

fn print_invalid(invalid: Invalid) {
    let summary = invalid.to_string();
    for problem in invalid.problems {
        crate::errln!("{:?}", miette::Report::new(problem));
    }
    crate::errln!("{summary}");
}

/// Runs a dialoguer prompt with Ctrl-C held back: console turns a Ctrl-C typed at the prompt
/// into a SIGINT, whose default action would end pydeployer with the cursor still hidden.
/// Held back, it ends the prompt; the cursor is shown again and the caller quits.
///
/// console puts the terminal in raw mode only while it waits for a key; for the whole prompt
/// (its drawing too) the terminal neither echoes keys nor turns Ctrl-C into a signal itself,
/// so that a key typed while the menu is drawn is read as a key, Ctrl-C included.
fn ask<T>(term: &Term, prompt: impl FnOnce() -> dialoguer::Result<T>) -> Result<T, NoChoice> {
    // Keys typed while a run was going on must not pick something in the menu.
    // SAFETY: tcflush on our own stdin has no memory-safety preconditions.
    unsafe { libc::tcflush(libc::STDIN_FILENO, libc::TCIFLUSH) };
    let held = HeldInterrupt::new();
    let quiet = QuietTerminal::new();
    let answer = prompt();
    drop(quiet);
    let interrupted = held.take();
    drop(held);
    if interrupted {
        let _ = term.show_cursor();
        let _ = term.write_line("");
        return Err(NoChoice::Interrupted);
    }
    match answer {
        Ok(value) => Ok(value),
        Err(dialoguer::Error::IO(err)) => {
            let _ = term.show_cursor();
            if err.kind() != io::ErrorKind::UnexpectedEof {
                crate::errln!("the menu could not read the terminal: {err}");
            }
            Err(NoChoice::Quit)
        }
    }
}

/// stdin without echo, line editing or signal keys until dropped (then as it was).
struct QuietTerminal {
    original: Option<libc::termios>,
}

impl QuietTerminal {
    fn new() -> Self {
        // SAFETY: tcgetattr fills `termios` (used only when it succeeds); tcsetattr reads it.
        unsafe {
            let mut termios: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &raw mut termios) != 0 {
                return QuietTerminal { original: None };
            }
            let original = termios;
            termios.c_lflag &= !(libc::ISIG | libc::ICANON | libc::ECHO);
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw const termios);
            QuietTerminal {
                original: Some(original),
            }
        }
    }
}

impl Drop for QuietTerminal {
    fn drop(&mut self) {
        if let Some(original) = &self.original {
            // SAFETY: restores the settings read in `new`.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, original) };
        }
    }
}

/// SIGINT blocked for this thread (the only one while the menu waits) until dropped.
struct HeldInterrupt {
    set: libc::sigset_t,
    old: libc::sigset_t,
}

impl HeldInterrupt {
    fn new() -> Self {
        // SAFETY: the sets are initialised by sigemptyset before use; pthread_sigmask only
        // reads `set` and writes `old`.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&raw mut set);
            libc::sigaddset(&raw mut set, libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, &raw mut old);
            HeldInterrupt { set, old }
        }
    }

    /// Whether a SIGINT arrived (it is consumed).
    fn take(&self) -> bool {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `set` is a valid signal set; a null info pointer is allowed.
        let signal = unsafe {
            libc::sigtimedwait(&raw const self.set, std::ptr::null_mut(), &raw const zero)
        };
        signal == libc::SIGINT
    }
}

impl Drop for HeldInterrupt {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &raw const self.old, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{cut, first_line};

    #[test]
    fn labels_are_cut_to_the_terminal_and_keep_one_line() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        assert_eq!(first_line("  one\ntwo"), "one");
    }
}
