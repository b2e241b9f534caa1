//! The terminal: the only place that draws.
//!
//! Progress and the final summary go to stderr, as cargo does, so stdout stays free for machine
//! output. On a terminal (`fancy`) each running stage has an indicatif spinner showing its last
//! output line, replaced by a result line when it ends; elsewhere every change is one
//! time-stamped line. Whatever a stage prints passes through [`sanitize_for_terminal`] first, so
//! it can neither move the cursor nor pass itself off as one of our status lines.
//!
//! Writing is best effort: a closed stderr must not stop a run, so write errors are ignored.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use chrono::Local;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::clock::WallClock;
use super::summary::{attempt_note, finish_text, render_table_with};
use crate::events::{Outcome, RunEvent, RunHeader, RunSummary, SkipReason, StageResult};
use crate::pipeline::StageName;

/// How much a stage's last line may take up next to its spinner.
const MESSAGE_CHARS: usize = 60;

/// Enough bytes of a line for [`MESSAGE_CHARS`] characters, even of four-byte UTF-8.
const MESSAGE_BYTES: usize = MESSAGE_CHARS * 4;

/// How often a spinner turns and its elapsed time moves, with or without output.
const TICK: Duration = Duration::from_millis(120);

/// A stage that fails shows its last lines of output under its result (all of them are in
/// the log), unless `-v` already showed them as they came.
const TAIL_LINES: usize = 15;

/// How much of each of those lines is shown.
const TAIL_CHARS: usize = 300;

/// How much the user wants to see (`-q`, default, `-v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// The summary and the stages that failed.
    Quiet,
    /// Progress and results.
    #[default]
    Normal,
    /// Also every line the stages print.
    Verbose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalOptions {
    /// stderr is a terminal: draw spinners instead of time-stamped lines.
    pub fancy: bool,
    /// Colour results with ANSI codes.
    pub color: bool,
    pub verbosity: Verbosity,
}

/// Renders run events for a person watching the run.
pub struct Terminal {
    options: TerminalOptions,
    clock: WallClock,
    /// Where our lines go; in fancy mode always written through `MultiProgress::suspend`.
    out: Box<dyn Write + Send>,
    /// Present in fancy mode unless quiet (quiet shows no progress).
    bars: Option<Bars>,
    log: Option<PathBuf>,
    /// Whether anything was printed before the summary (which is then set apart by a blank line).
    printed: bool,
    /// Interactive stages: their output is shown as it comes, prompts included.
    /// (and the end of a character split between two reads, held until the rest comes).
    live: std::collections::HashMap<StageName, Vec<u8>>,
    /// The last lines of each running stage's output, and how many it printed: shown if it
    /// fails.
    tails: HashMap<StageName, Tail>,
}

#[derive(Default)]
struct Tail {
    /// The last lines as read (at most [`TAIL_CHARS`] characters' worth of bytes each).
    lines: std::collections::VecDeque<Vec<u8>>,
    total: usize,
}

impl Tail {
    /// Keeps the last lines of `bytes` (whole lines, the last perhaps without its `\n`). Only
    /// the end of a chunk is looked at: a stage printing millions of lines costs a count.
    fn keep(&mut self, bytes: &[u8]) {
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        self.total += memchr::memchr_iter(b'\n', body).count() + 1;
        let last: Vec<&[u8]> = body.rsplit(|&b| b == b'\n').take(TAIL_LINES).collect();
        for line in last.into_iter().rev() {
            self.lines
                .push_back(line[..line.len().min(TAIL_CHARS * 4)].to_vec());
        }
        while self.lines.len() > TAIL_LINES {
            self.lines.pop_front();
        }
    }
}

struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
    running: HashMap<StageName, ProgressBar>,
}

impl Terminal {
    /// A reporter writing to stderr.
    pub fn new(options: TerminalOptions) -> Self {
        Self::build(
            options,
            Box::new(io::stderr()),
            ProgressDrawTarget::stderr(),
        )
    }

    /// A reporter writing its lines to `out`; spinners, if `fancy`, are kept but not drawn.
    pub fn with_writer(options: TerminalOptions, out: Box<dyn Write + Send>) -> Self {
        Self::build(options, out, ProgressDrawTarget::hidden())
    }

    fn build(
        options: TerminalOptions,
        out: Box<dyn Write + Send>,
        target: ProgressDrawTarget,
    ) -> Self {
        let bars = (options.fancy && options.verbosity != Verbosity::Quiet).then(|| Bars {
            multi: MultiProgress::with_draw_target(target),
            style: spinner_style(options.color, 12),
            running: HashMap::new(),
        });
        Terminal {
            options,
            // Replaced by the header's start; only events arriving before it use this.
            clock: WallClock::new(&Local::now()),
            out,
            bars,
            log: None,
            printed: false,
            live: std::collections::HashMap::new(),
            tails: HashMap::new(),
        }
    }

    pub fn report(&mut self, event: &RunEvent) {
        match event {
            RunEvent::RunStarted(header) => self.run_started(header),
            RunEvent::StageStarted {
                stage,
                attempt,
                command,
                interactive,
                elapsed,
            } => {
                if *interactive {
                    self.live.insert(stage.clone(), Vec::new());
                }
                self.stage_started(stage, *attempt, command, *elapsed);
            }
            RunEvent::StageOutput {
                stage,
                bytes,
                elapsed,
            } => self.stage_output(stage, bytes, *elapsed),
            RunEvent::StageFinished {
                stage,
                attempt,
                outcome,
                note,
                details,
                duration,
                will_retry,
                elapsed,
                ..
            } => {
                // What the action says of a failure (pytest's assertion and traceback) is worth
                // more than the last lines of its output.
                let details = details.as_deref().filter(|_| {
                    !outcome.passed() && !*will_retry && !matches!(outcome, Outcome::Cancelled)
                });
                if details.is_some() {
                    self.tails.remove(stage);
                }
                self.stage_finished(
                    stage,
                    outcome,
                    *duration,
                    *elapsed,
                    &attempt_note(*attempt, *will_retry, note.as_deref()),
                    *will_retry,
                );
                if let Some(details) = details {
                    let mut text = String::new();
                    for line in details.lines() {
                        let line =
                            truncate_chars(sanitize_for_terminal(line.as_bytes()), TAIL_CHARS);
                        let _ = writeln!(text, "  | {line}");
                    }
                    self.print(&text);
                }
            }
            RunEvent::StageSkipped {
                stage,
                reason,
                elapsed,
            } => self.stage_skipped(stage, reason, *elapsed),
            RunEvent::RunFinished(summary) => self.run_finished(summary),
        }
    }

    fn run_started(&mut self, header: &RunHeader) {
        self.clock = WallClock::new(&header.started_at);
        self.log.clone_from(&header.log);
        if let Some(bars) = &mut self.bars {
            let width = header
                .stages
                .iter()
                .map(|s| s.name.as_str().len())
                .max()
                .unwrap_or(0);
            bars.style = spinner_style(self.options.color, width);
        }
        if self.options.verbosity == Verbosity::Quiet {
            return;
        }
        let stages = header.stages.len();
        let line = format!(
            "{}: {} ({stages} stage{}, {} job{})",
            header.pipeline,
            header.selection,
            if stages == 1 { "" } else { "s" },
            header.jobs,
            if header.jobs == 1 { "" } else { "s" },
        );
        self.status_line(Duration::ZERO, &line);
    }

    fn stage_started(&mut self, stage: &StageName, attempt: u32, command: &str, elapsed: Duration) {
        let verbose = self.options.verbosity == Verbosity::Verbose;
        self.tails.remove(stage);
        if self.bars.is_some() && self.live.contains_key(stage) {
            // No spinner redrawing under what the user types.
            self.print(&format!("{stage} started (interactive)\n"));
            return;
        }
        if let Some(bars) = &mut self.bars {
            let bar = bars.multi.add(
                ProgressBar::new_spinner()
                    .with_style(bars.style.clone())
                    .with_prefix(stage.to_string()),
            );
            if attempt > 1 {
                bar.set_message(format!("attempt {attempt}"));
            }
            bar.enable_steady_tick(TICK);
            if let Some(old) = bars.running.insert(stage.clone(), bar) {
                old.finish_and_clear();
                bars.multi.remove(&old);
            }
            if verbose {
                self.print(&format!(
                    "[{stage}] started: {}\n",
                    sanitize_for_terminal(command.as_bytes())
                ));
            }
            return;
        }
        if self.options.verbosity == Verbosity::Quiet {
            return;
        }
        let mut line = format!("{stage} started");
        if attempt > 1 {
            let _ = write!(line, " (attempt {attempt})");
        }
        if verbose {
            let _ = write!(line, ": {}", sanitize_for_terminal(command.as_bytes()));
        }
        self.status_line(elapsed, &line);
    }

    fn stage_output(&mut self, stage: &StageName, bytes: &[u8], _elapsed: Duration) {
        if let Some(held) = self.live.get_mut(stage) {
            // As it comes (a prompt has no newline yet), sanitised, without a prefix; also
            // with `-q`: the user has to see what they are asked.
            held.extend_from_slice(bytes);
            let whole = held.len() - incomplete_utf8_tail(held);
            let bytes: Vec<u8> = held.drain(..whole).collect();
            let mut text = String::with_capacity(bytes.len());
            for line in bytes.split_inclusive(|b| *b == b'\n') {
                let (line, newline) = match line.strip_suffix(b"\n") {
                    Some(line) => (line, true),
                    None => (line, false),
                };
                push_sanitized(&mut text, line);
                if newline {
                    text.push('\n');
                }
            }
            self.print(&text);
            return;
        }
        if let Some(bar) = self.bars.as_ref().and_then(|bars| bars.running.get(stage)) {
            let line = last_line(bytes);
            if !line.is_empty() {
                let head = &line[..line.len().min(MESSAGE_BYTES)];
                bar.set_message(truncate_chars(sanitize_for_terminal(head), MESSAGE_CHARS));
            }
        }
        if self.options.verbosity != Verbosity::Verbose {
            self.tails.entry(stage.clone()).or_default().keep(bytes);
            return;
        }
        let mut text = String::with_capacity(bytes.len() + bytes.len() / 8);
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let _ = write!(text, "[{stage}]");
            if !line.is_empty() {
                text.push(' ');
                push_sanitized(&mut text, line);
            }
            text.push('\n');
        }
        self.print(&text);
    }

    fn stage_finished(
        &mut self,
        stage: &StageName,
        outcome: &Outcome,
        duration: Duration,
        elapsed: Duration,
        note: &str,
        will_retry: bool,
    ) {
        if let Some(bars) = &mut self.bars
            && let Some(bar) = bars.running.remove(stage)
        {
            bar.finish_and_clear();
            bars.multi.remove(&bar);
        }
        let failed_for_good = !outcome.passed() && !will_retry;
        let tail = self.tails.remove(stage);
        if self.options.verbosity == Verbosity::Quiet && !failed_for_good {
            return;
        }
        let color = match outcome {
            Outcome::Passed => Color::Green,
            _ if will_retry => Color::Yellow,
            _ => Color::Red,
        };
        let text = self.paint(color, &finish_text(outcome, duration));
        let mark = if outcome.passed() {
            Mark::Passed
        } else {
            Mark::Failed
        };
        self.result_line(mark, color, elapsed, &format!("{stage} {text}{note}"));
        let cancelled = matches!(outcome, Outcome::Cancelled);
        if let Some(tail) = tail.filter(|t| failed_for_good && !cancelled && t.total > 0) {
            let mut text = String::new();
            if tail.total > tail.lines.len() {
                let _ = writeln!(
                    text,
                    "  … its last {} of {} lines (`pydeployer logs --stage {stage}` has them all):",
                    tail.lines.len(),
                    tail.total
                );
            }
            for line in &tail.lines {
                let line = truncate_chars(sanitize_for_terminal(line), TAIL_CHARS);
                let _ = writeln!(text, "  | {line}");
            }
            self.print(&text);
        }
    }

    fn stage_skipped(&mut self, stage: &StageName, reason: &SkipReason, elapsed: Duration) {
        if self.options.verbosity == Verbosity::Quiet {
            return;
        }
        let text = self.paint(Color::Yellow, "skipped");
        self.result_line(
            Mark::Skipped,
            Color::Yellow,
            elapsed,
            &format!("{stage} {text}: {}", reason.describe()),
        );
    }

    fn run_finished(&mut self, summary: &RunSummary) {
        if let Some(bars) = &mut self.bars {
            // Stages still spinning here were cut short (an interrupted run).
            for (_, bar) in bars.running.drain() {
                bar.finish_and_clear();
                bars.multi.remove(&bar);
            }
        }
        let mut text = String::new();
        if self.printed {
            text.push('\n');
        }
        text.push_str(&render_table_with(summary, |result, words| {
            self.paint(result_color(result), words)
        }));
        if let Some(log) = summary.log.as_ref().or(self.log.as_ref()) {
            let _ = writeln!(text, "log: {}", log.display());
        }
        self.print(&text);
    }

    /// `[12:03:04] text` when plain; `text` under the spinners when fancy.
    fn status_line(&mut self, elapsed: Duration, text: &str) {
        if self.options.fancy {
            self.print(&format!("{text}\n"));
        } else {
            let time = self.clock.at(elapsed).seconds_string();
            self.print(&format!("[{time}] {text}\n"));
        }
    }

    /// A stage's end: marked with `✔`/`✘`/`-` (or words without colour) when fancy.
    fn result_line(&mut self, mark: Mark, color: Color, elapsed: Duration, text: &str) {
        if self.options.fancy {
            let mark = if self.options.color {
                self.paint(color, mark.symbol())
            } else {
                mark.word().to_owned()
            };
            self.print(&format!("{mark} {text}\n"));
        } else {
            self.status_line(elapsed, text);
        }
    }

    fn print(&mut self, text: &str) {
        self.printed = true;
        let out = self.out.as_mut();
        match &self.bars {
            Some(bars) => {
                // indicatif panics when it cannot redraw (a terminal that hung up): that must
                // not end the run; the bars are dropped and the rest goes on without them.
                let drawn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    bars.multi.suspend(|| write_best_effort(out, text));
                }));
                if drawn.is_err() {
                    self.detach();
                }
            }
            None => write_best_effort(out, text),
        }
    }

    /// The terminal is gone (it hung up): no more bars, nothing more drawn; the log, the
    /// ledger and the exit code are all that is left to do.
    pub fn detach(&mut self) {
        if let Some(bars) = self.bars.take() {
            bars.multi
                .set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        self.out = Box::new(io::sink());
    }

    fn paint(&self, color: Color, text: &str) -> String {
        if self.options.color {
            format!("{}{text}\x1b[0m", color.code())
        } else {
            text.to_owned()
        }
    }
}

/// The terminal as a run's output: when the terminal hung up (`hung_up` says so), the bars
/// are dropped and nothing more is drawn; the run goes on.
pub struct TerminalSink<'a> {
    pub terminal: Terminal,
    pub hung_up: &'a dyn Fn() -> bool,
}

impl super::Sink for TerminalSink<'_> {
    fn report(&mut self, event: &RunEvent) -> io::Result<()> {
        if (self.hung_up)() {
            self.terminal.detach();
        }
        self.terminal.report(event);
        Ok(())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // A finished bar stops its ticking thread and leaves no half-drawn line behind.
        if let Some(bars) = &mut self.bars {
            for (_, bar) in bars.running.drain() {
                bar.finish_and_clear();
            }
        }
    }
}

/// A closed stderr (the reader went away) must not stop the run, so errors are dropped.
fn write_best_effort(out: &mut dyn Write, text: &str) {
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

#[derive(Debug, Clone, Copy)]
enum Color {
    Green,
    Red,
    Yellow,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Color::Green => "\x1b[32m",
            Color::Red => "\x1b[31m",
            Color::Yellow => "\x1b[33m",
        }
    }
}

fn result_color(result: &StageResult) -> Color {
    match result {
        StageResult::Passed | StageResult::Cached => Color::Green,
        StageResult::Failed | StageResult::TimedOut => Color::Red,
        StageResult::FailedAllowed | StageResult::Cancelled | StageResult::Skipped => Color::Yellow,
    }
}

#[derive(Debug, Clone, Copy)]
enum Mark {
    Passed,
    Failed,
    Skipped,
}

impl Mark {
    fn symbol(self) -> &'static str {
        match self {
            Mark::Passed => "✔",
            Mark::Failed => "✘",
            Mark::Skipped => "-",
        }
    }

    /// Without colour a symbol is easy to miss; a word of the same width reads at a glance.
    fn word(self) -> &'static str {
        match self {
            Mark::Passed => "ok  ",
            Mark::Failed => "FAIL",
            Mark::Skipped => "skip",
        }
    }
}

fn spinner_style(color: bool, name_width: usize) -> ProgressStyle {
    let template = if color {
        format!(
            "{{spinner:.cyan}} {{prefix:<{name_width}.bold}} {{elapsed:>4.dim}} {{wide_msg:.dim}}"
        )
    } else {
        format!("{{spinner}} {{prefix:<{name_width}}} {{elapsed:>4}} {{wide_msg}}")
    };
    ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// The line a terminal would be showing after `bytes`: the last non-empty line, and of a line
/// redrawn with `\r` (a progress counter), its last state.
fn last_line(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r'))
        .map_or(0, |i| i + 1);
    let bytes = &bytes[..end];
    let start = bytes
        .iter()
        .rposition(|b| matches!(b, b'\n' | b'\r'))
        .map_or(0, |i| i + 1);
    &bytes[start..]
}

fn truncate_chars(text: String, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if text[cut..].chars().nth(1).is_some() => {
            let mut text = text;
            text.truncate(cut);
            text.push('…');
            text
        }
        _ => text,
    }
}

/// How many bytes at the end of `bytes` begin a UTF-8 character whose rest has not come yet.
fn incomplete_utf8_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: the lead is further back
        }
        let needed = match b {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

/// Makes a stage's bytes safe to show: lossy UTF-8, with every control character but tab
/// (escape sequences included) and every bidirectional override written out as an escape.
pub fn sanitize_for_terminal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    push_sanitized(&mut out, bytes);
    out
}

fn push_sanitized(out: &mut String, bytes: &[u8]) {
    if bytes.iter().all(|b| matches!(b, b' '..=b'~' | b'\t')) {
        // Printable ASCII, by far the common case, is valid UTF-8 as it is.
        out.push_str(std::str::from_utf8(bytes).unwrap_or_default());
        return;
    }
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\t' => out.push('\t'),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\0'..='\x1f' | '\x7f' => {
                    let _ = write!(out, "\\x{:02x}", u32::from(c));
                }
                // C1 controls (U+009B is a one-character CSI to some terminals) and the
                // characters that reorder text on screen ("Trojan Source").
                '\u{80}'..='\u{9f}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}' => {
                    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use chrono::{DateTime, TimeZone};

    use super::*;
    use crate::report::fixtures::{name, sample_run};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
        }
    }

    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    fn started_at() -> DateTime<Local> {
        Local
            .with_ymd_and_hms(2024, 3, 5, 12, 3, 4)
            .single()
            .expect("unambiguous local time")
    }

    fn render(fancy: bool, color: bool, verbosity: Verbosity) -> String {
        let out = Shared::default();
        let options = TerminalOptions {
            fancy,
            color,
            verbosity,
        };
        let mut terminal = Terminal::with_writer(options, Box::new(out.clone()));
        for event in sample_run(
            started_at(),
            Some(PathBuf::from("logs/2024-03-05_12-03-04.log")),
        ) {
            terminal.report(&event);
        }
        drop(terminal);
        out.text()
    }

    #[test]
    fn plain_normal() {
        insta::assert_snapshot!(render(false, false, Verbosity::Normal));
    }

    #[test]
    fn plain_verbose() {
        insta::assert_snapshot!(render(false, false, Verbosity::Verbose));
    }

    #[test]
    fn plain_quiet() {
        insta::assert_snapshot!(render(false, false, Verbosity::Quiet));
    }

    #[test]
    fn fancy_normal() {
        insta::assert_snapshot!(render(true, false, Verbosity::Normal));
    }

    #[test]
    fn fancy_verbose_in_color() {
        insta::assert_snapshot!(render(true, true, Verbosity::Verbose).replace('\x1b', "<ESC>"));
    }

    #[test]
    fn fancy_quiet_shows_only_the_failure_and_the_summary() {
        insta::assert_snapshot!(render(true, false, Verbosity::Quiet));
    }

    #[test]
    fn a_closed_stream_is_ignored() {
        for fancy in [false, true] {
            let options = TerminalOptions {
                fancy,
                color: true,
                verbosity: Verbosity::Verbose,
            };
            let mut terminal = Terminal::with_writer(options, Box::new(Closed));
            for event in sample_run(started_at(), None) {
                terminal.report(&event);
            }
        }
    }

    #[test]
    fn the_spinner_shows_the_last_line_of_output() {
        let options = TerminalOptions {
            fancy: true,
            color: false,
            verbosity: Verbosity::Normal,
        };
        let mut terminal = Terminal::with_writer(options, Box::new(Shared::default()));
        let events = sample_run(started_at(), None);
        for event in &events[..4] {
            terminal.report(event);
        }
        let message = |terminal: &Terminal| {
            terminal
                .bars
                .as_ref()
                .expect("fancy")
                .running
                .get(&name("test"))
                .expect("test is running")
                .message()
        };
        assert_eq!(message(&terminal), "test_a.py::test_one PASSED");

        terminal.report(&RunEvent::StageOutput {
            stage: name("test"),
            bytes: format!("{}\x1b[2K\rdone\n\n", "x".repeat(10_000)).into_bytes(),
            elapsed: Duration::from_secs(1),
        });
        assert_eq!(message(&terminal), "done");

        terminal.report(&RunEvent::StageOutput {
            stage: name("test"),
            bytes: "é".repeat(100).into_bytes(),
            elapsed: Duration::from_secs(1),
        });
        assert_eq!(message(&terminal), format!("{}…", "é".repeat(59)));
    }

    #[test]
    fn a_character_split_between_reads_is_held_until_whole() {
        assert_eq!(incomplete_utf8_tail(b"caf\xc3"), 1);
        assert_eq!(incomplete_utf8_tail(b"caf\xc3\xa9"), 0);
        assert_eq!(incomplete_utf8_tail(b"\xe2\x82"), 2);
        assert_eq!(incomplete_utf8_tail(b"ok\n"), 0);
        assert_eq!(incomplete_utf8_tail(b""), 0);
    }

    #[test]
    fn last_line_is_what_the_screen_would_show() {
        assert_eq!(last_line(b"a\nb\n"), b"b");
        assert_eq!(last_line(b"a\nb\n\n\r\n"), b"b");
        assert_eq!(last_line(b"10%\r20%\r"), b"20%");
        assert_eq!(last_line(b"partial"), b"partial");
        assert_eq!(last_line(b"\n\n"), b"");
        assert_eq!(last_line(b""), b"");
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate_chars("abc".into(), 3), "abc");
        assert_eq!(truncate_chars("abcd".into(), 3), "ab…");
        assert_eq!(truncate_chars("ééé".into(), 3), "ééé");
        assert_eq!(truncate_chars("éééé".into(), 3), "éé…");
    }

    #[test]
    fn sanitize_escapes_what_could_drive_the_terminal() {
        assert_eq!(sanitize_for_terminal(b"plain text\tok"), "plain text\tok");
        assert_eq!(
            sanitize_for_terminal(b"\x1b[2J\x1b[H\xe2\x9c\x94 deploy passed"),
            "\\x1b[2J\\x1b[H✔ deploy passed"
        );
        assert_eq!(
            sanitize_for_terminal(b"a\rb\nc\x07\x08\x7f"),
            "a\\rb\\nc\\x07\\x08\\x7f"
        );
        assert_eq!(sanitize_for_terminal(b"nul\0"), "nul\\x00");
        assert_eq!(sanitize_for_terminal("\u{9b}31m".as_bytes()), "\\u{9b}31m");
        assert_eq!(
            sanitize_for_terminal("abc\u{202e}def".as_bytes()),
            "abc\\u{202e}def"
        );
        assert_eq!(sanitize_for_terminal("héllo ✓".as_bytes()), "héllo ✓");
    }

    #[test]
    fn sanitize_replaces_invalid_utf8() {
        assert_eq!(
            sanitize_for_terminal(b"ok \xff\xfe end"),
            "ok \u{fffd}\u{fffd} end"
        );
        assert_eq!(sanitize_for_terminal(b"cut \xe2\x9c"), "cut \u{fffd}");
    }
}
