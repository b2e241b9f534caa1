//! Diagnostics shown to the user, and the exit codes that go with them.
//!
//! A problem in the user's files is a [`Problem`] that points at its file, line and column;
//! all problems found by one check travel together in an [`Invalid`] (exit code 2). A failed
//! stage is not an error: it is an outcome, reported by the run summary (exit code 1).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};
use serde::Serialize;
use thiserror::Error;

use crate::mask;

/// A byte range in one source file, with its 1-based line and column for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
    pub line: u64,
    pub column: u64,
}

/// Exit codes, as documented in the README.
pub mod exit {
    /// Every selected stage succeeded (or was allowed to fail).
    pub const OK: i32 = 0;
    /// A stage failed.
    pub const STAGE_FAILED: i32 = 1;
    /// The pipeline or the command line is invalid; nothing ran.
    pub const INVALID: i32 = 2;
    /// Another run holds the workspace (and `--wait` was not given); nothing ran.
    pub const BUSY: i32 = 3;
    /// The terminal hung up (SIGHUP): 128 + 1.
    pub const HANGUP: i32 = 129;
    /// Interrupted by Ctrl-C (SIGINT): 128 + 2, as shells report it.
    pub const INTERRUPTED: i32 = 130;
    /// Terminated by SIGTERM: 128 + 15.
    pub const TERMINATED: i32 = 143;
}

/// A source file the diagnostics can quote.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path as shown to the user.
    pub name: PathBuf,
    pub text: Arc<str>,
}

impl SourceFile {
    pub fn new(name: &Path, text: String) -> Self {
        SourceFile {
            name: name.to_path_buf(),
            text: Arc::from(text),
        }
    }

    /// The text as diagnostics quote it: credentials in URLs hidden (same length, so that
    /// every span still points where it did).
    fn named(&self) -> NamedSource<Arc<str>> {
        let text = match hide_url_credentials(&self.text) {
            Some(hidden) => Arc::from(hidden),
            None => Arc::clone(&self.text),
        };
        NamedSource::new(self.name.display().to_string(), text).with_language("yaml")
    }
}

/// `text` with credentials in URLs hidden (see [`hide_url_credentials`]).
fn hidden(text: String) -> String {
    hide_url_credentials(&text).unwrap_or(text)
}

/// `text` with the password (or, without one, the user name) of every `scheme://user:pass@`
/// replaced by as many `*` bytes; `None` when there is none.
fn hide_url_credentials(text: &str) -> Option<String> {
    let mut bytes = text.as_bytes().to_vec();
    let mut changed = false;
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let start = from + found + 3;
        let end = text[start..]
            // Quotes and commas may be part of a password; `@` before the host decides.
            .find(|c: char| c.is_whitespace() || "/?#".contains(c))
            .map_or(text.len(), |n| start + n);
        let scheme_start = text[..start - 3]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
            .map_or(0, |i| i + 1);
        let scheme = &text[scheme_start..start - 3];
        if let Some(range) = mask::credentials_range(scheme, &text[start..end]) {
            for b in &mut bytes[start + range.start..start + range.end] {
                *b = b'*';
                changed = true;
            }
        }
        from = end.max(start);
    }
    // Replacing whole UTF-8 sequences byte by byte with `*` leaves valid UTF-8.
    changed.then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// Where a problem is, for machine-readable output.
#[derive(Debug, Clone, Serialize)]
pub struct Place {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
}

/// Whether the line of `span` is too long to be shown with a label under it.
fn snippet_too_wide(file: &SourceFile, span: Span) -> bool {
    const WIDEST: usize = 4096;
    let text = file.text.as_bytes();
    let at = span.offset.min(text.len());
    let start = text[..at]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let end = text[at..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(text.len(), |i| at + i);
    end - start > WIDEST || span.len > WIDEST
}

/// One problem, pointing at the place in a file that causes it.
#[derive(Debug, Error, Diagnostic)]
#[error("{message}")]
pub struct Problem {
    message: String,
    #[source_code]
    source_code: Option<NamedSource<Arc<str>>>,
    #[label(collection)]
    labels: Vec<LabeledSpan>,
    #[help]
    help: Option<String>,
    #[related]
    related: Vec<Problem>,
    place: Option<Place>,
}

impl Problem {
    /// A problem at `span` of `file`, with a short label under the span.
    pub fn at(
        file: &SourceFile,
        span: Span,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Self {
        if snippet_too_wide(file, span) {
            // miette cannot draw a label that far to the right (it panics): the place is
            // given in the message instead.
            let mut problem = Problem::general(format!(
                "{}:{}:{}: {}",
                file.name.display(),
                span.line,
                span.column,
                Into::<String>::into(message)
            ));
            problem.place = Some(Place {
                file: file.name.clone(),
                line: span.line,
                column: span.column,
            });
            return problem;
        }
        Problem {
            message: hidden(message.into()),
            source_code: Some(file.named()),
            labels: vec![LabeledSpan::new_primary_with_span(
                Some(hidden(label.into())),
                to_source_span(span),
            )],
            help: None,
            related: Vec::new(),
            place: Some(Place {
                file: file.name.clone(),
                line: span.line,
                column: span.column,
            }),
        }
    }

    /// A problem that is not in a file (the command line, the machine).
    pub fn general(message: impl Into<String>) -> Self {
        Problem {
            message: hidden(message.into()),
            source_code: None,
            labels: Vec::new(),
            help: None,
            related: Vec::new(),
            place: None,
        }
    }

    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(hidden(help.into()));
        self
    }

    /// Another labelled span in the same file.
    #[must_use]
    pub fn with_label(mut self, span: Span, label: impl Into<String>) -> Self {
        self.labels.push(LabeledSpan::new_with_span(
            Some(hidden(label.into())),
            to_source_span(span),
        ));
        self
    }

    /// "did you mean `x`?" when one of `candidates` is close to `word`, else `otherwise`.
    #[must_use]
    pub fn with_suggestion<'a>(
        self,
        word: &str,
        candidates: impl IntoIterator<Item = &'a str>,
        otherwise: impl Into<String>,
    ) -> Self {
        match closest(word, candidates) {
            Some(near) => self.with_help(format!("did you mean `{near}`?")),
            None => self.with_help(otherwise),
        }
    }

    /// A related place, possibly in another file ("first defined here").
    #[must_use]
    pub fn with_related(mut self, related: Problem) -> Self {
        self.related.push(related);
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn place(&self) -> Option<&Place> {
        self.place.as_ref()
    }

    pub fn help_text(&self) -> Option<&str> {
        self.help.as_deref()
    }

    /// The related places added by [`with_related`](Problem::with_related).
    pub fn related_problems(&self) -> &[Problem] {
        &self.related
    }
}

fn to_source_span(span: Span) -> SourceSpan {
    SourceSpan::new(span.offset.into(), span.len)
}

/// Everything wrong with the input, found in one pass. Exit code 2; nothing ran.
#[derive(Debug, Error, Diagnostic)]
pub struct Invalid {
    #[related]
    pub problems: Vec<Problem>,
}

impl Invalid {
    pub fn one(problem: Problem) -> Self {
        Invalid {
            problems: vec![problem],
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.len() {
            1 => write!(f, "1 problem; nothing was run"),
            n => write!(f, "{n} problems; nothing was run"),
        }
    }
}

impl From<Problem> for Invalid {
    fn from(problem: Problem) -> Self {
        Invalid::one(problem)
    }
}

/// Why a command did not finish with exit code 0.
#[derive(Debug)]
pub enum Failure {
    /// Bad input; the diagnostics say where.
    Invalid(Invalid),
    /// The run happened and its summary was shown; exit with this code.
    Exit(i32),
    /// pydeployer itself could not do its job (a log or ledger it cannot write, …).
    Tool(miette::Report),
    /// Another run holds the project's lock; nothing ran.
    Busy(miette::Report),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Invalid(_) => exit::INVALID,
            Failure::Exit(code) => *code,
            Failure::Tool(_) => exit::STAGE_FAILED,
            Failure::Busy(_) => exit::BUSY,
        }
    }
}

impl From<Invalid> for Failure {
    fn from(invalid: Invalid) -> Self {
        Failure::Invalid(invalid)
    }
}

impl From<Problem> for Failure {
    fn from(problem: Problem) -> Self {
        Failure::Invalid(Invalid::one(problem))
    }
}

/// Suggests the closest of `candidates` to a misspelt `word`, if one is close enough.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(distance, c)| *distance <= (c.len().max(word.len()) / 3).max(1) + 1)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::{Problem, closest, hide_url_credentials};

    #[test]
    fn url_credentials_are_hidden_in_quoted_sources_without_moving_spans() {
        let text = "repo: { url: 'https://me:s3cret@host/x.git' }\nb: https://TOKEN@h/y git@github.com:a/b ssh://git@h/z\n";
        let hidden = hide_url_credentials(text).unwrap();
        assert_eq!(hidden.len(), text.len());
        // With a password, the whole userinfo: either part may be the token.
        assert!(hidden.contains("https://*********@host/x.git"), "{hidden}");
        assert!(hidden.contains("https://*****@h/y"), "{hidden}");
        assert!(hidden.contains("ssh://git@h/z"), "{hidden}");
        assert_eq!(hide_url_credentials("url: https://host/x.git"), None);
        // Quotes and commas can be part of a password.
        let quoted = "url: https://deploy:s3cr,et'x@example.com/x.git";
        assert_eq!(
            hide_url_credentials(quoted).unwrap(),
            "url: https://****************@example.com/x.git"
        );
        let problem = Problem::general("refusing `-https://u:secretpw@h/x.git`");
        assert!(!problem.message().contains("secretpw"));
        let problem =
            Problem::general("cannot reach https://ghp_SECRET:x-oauth-basic@github.com/o/r");
        assert!(
            !problem.message().contains("ghp_SECRET"),
            "{}",
            problem.message()
        );
    }

    #[test]
    fn suggestions_are_close_or_absent() {
        let keys = ["needs", "env", "workdir", "timeout", "retries"];
        assert_eq!(closest("need", keys), Some("needs"));
        assert_eq!(closest("timout", keys), Some("timeout"));
        assert_eq!(closest("retires", keys), Some("retries"));
        assert_eq!(closest("zzzzzz", keys), None);
    }
}
