//! The JSON that `--format json` prints: stable field names, documented in README.md ("JSON
//! output"). These types are the contract; the internal types they are made from may change.

use std::path::Path;

use miette::Diagnostic;
use serde::Serialize;

use crate::error::{Invalid, Problem};

/// `{ "valid": false, "file": …, "problems": [...] }`: what any command given `--format json`
/// prints on stdout when it stops on bad input (exit 2).
#[derive(Debug, Serialize)]
pub struct InvalidJson {
    pub valid: bool,
    pub file: String,
    pub problems: Vec<ProblemJson>,
}

/// One diagnostic. `file`, `line` and `column` (1-based) are `null` for a problem that is not
/// in a file (the command line, a secret that is not set, …).
#[derive(Debug, Serialize)]
pub struct ProblemJson {
    pub message: String,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub column: Option<u64>,
    /// The short text shown under the place (`unknown key`).
    pub label: Option<String>,
    /// What to do about it (`did you mean `needs`?`).
    pub help: Option<String>,
    /// Other places that belong to this problem (the first declaration of a duplicate stage).
    pub related: Vec<ProblemJson>,
}

impl InvalidJson {
    /// The document, pretty-printed.
    pub fn render(invalid: &Invalid, file: &Path) -> String {
        serde_json::to_string_pretty(&InvalidJson::new(invalid, file)).unwrap_or_default()
    }

    pub fn new(invalid: &Invalid, file: &Path) -> Self {
        InvalidJson {
            valid: false,
            file: file.display().to_string(),
            problems: invalid.problems.iter().map(ProblemJson::new).collect(),
        }
    }
}

impl ProblemJson {
    pub fn new(problem: &Problem) -> Self {
        let place = problem.place();
        // The primary label (the first one) is the one at the place.
        let label = problem
            .labels()
            .and_then(|mut labels| labels.next())
            .and_then(|label| label.label().map(str::to_owned));
        ProblemJson {
            message: problem.message().to_owned(),
            file: place.map(|p| p.file.display().to_string()),
            line: place.map(|p| p.line),
            column: place.map(|p| p.column),
            label,
            help: problem.help_text().map(str::to_owned),
            related: problem
                .related_problems()
                .iter()
                .map(ProblemJson::new)
                .collect(),
        }
    }
}

pub use crate::report::json::seconds;
