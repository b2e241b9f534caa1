//! The decoder's primitives: a YAML node of the expected type (map, string, path, boolean,
//! integer, list, duration), or a problem at its place that says what to write instead.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::raw::{Key, Node, Span, Value};
use crate::config::validate::{Checker, MAX_TIMEOUT};
use crate::error::{Problem, SourceFile};

impl Checker<'_> {
    pub(super) fn wrong_type(
        &mut self,
        file: &SourceFile,
        node: &Node,
        what: &str,
        expected: &str,
        example: &str,
    ) {
        self.push(
            Problem::at(
                file,
                node.span,
                format!("{what} must be {expected}, not {}", node.value.kind()),
                format!("expected {expected}"),
            )
            .with_help(format!("for example: {example}")),
        );
    }

    pub(super) fn map<'n>(
        &mut self,
        file: &SourceFile,
        node: &'n Node,
        what: &str,
    ) -> Option<&'n [(Key, Node)]> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            // An empty file is an empty mapping.
            Value::Null => Some(&[]),
            _ => {
                self.wrong_type(file, node, what, "a mapping", "`key: value` lines");
                None
            }
        }
    }

    pub(super) fn unknown_keys<'e>(
        &mut self,
        file: &SourceFile,
        entries: impl IntoIterator<Item = &'e (Key, Node)> + Clone,
        known: &[&str],
        what: &str,
    ) {
        self.repeated_keys(file, entries.clone(), what);
        for (key, _) in entries {
            if !known.contains(&key.name.as_str()) {
                let mut problem = Problem::at(
                    file,
                    key.span,
                    format!("unknown {what} `{}`", key.name),
                    "unknown key",
                );
                problem = problem.with_suggestion(
                    &key.name,
                    known.iter().copied(),
                    format!("known keys: {}", known.join(", ")),
                );
                self.push(problem);
            }
        }
    }

    /// A key given twice in one mapping (YAML forbids it; the reader passes both on, so that
    /// both places can be shown).
    pub(super) fn repeated_keys<'e>(
        &mut self,
        file: &SourceFile,
        entries: impl IntoIterator<Item = &'e (Key, Node)>,
        what: &str,
    ) {
        let mut first: HashMap<&str, &Key> = HashMap::new();
        for (key, _) in entries {
            match first.get(key.name.as_str()) {
                Some(earlier) => {
                    let problem = Problem::at(
                        file,
                        key.span,
                        format!("{what} `{}` is given twice", key.name),
                        "given again here",
                    )
                    .with_help("keep one of them")
                    .with_related(Problem::at(
                        file,
                        earlier.span,
                        format!("`{}` first given here", key.name),
                        "first",
                    ));
                    self.push(problem);
                }
                None => {
                    first.insert(&key.name, key);
                }
            }
        }
    }

    pub(super) fn string(
        &mut self,
        file: &SourceFile,
        node: &Node,
        what: &str,
        example: &str,
    ) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                self.wrong_type(file, node, what, "a string", example);
                None
            }
        }
    }

    pub(super) fn non_empty_string(
        &mut self,
        file: &SourceFile,
        node: &Node,
        what: &str,
        example: &str,
    ) -> Option<String> {
        let s = self.string(file, node, what, example)?;
        if s.trim().is_empty() {
            self.push(
                Problem::at(file, node.span, format!("{what} cannot be empty"), "empty")
                    .with_help(format!("for example: {example}")),
            );
            return None;
        }
        Some(s)
    }

    pub(super) fn path(
        &mut self,
        file: &SourceFile,
        node: &Node,
        what: &str,
        example: &str,
    ) -> Option<PathBuf> {
        self.non_empty_string(file, node, what, example)
            .map(|s| self.root.join(s))
    }

    pub(super) fn boolean(&mut self, file: &SourceFile, node: &Node, what: &str) -> Option<bool> {
        // The key as written in an example (`with.upgrade` is written `upgrade:`).
        let key = what.trim_matches('`');
        let key = key.rsplit('.').next().unwrap_or(key);
        match &node.value {
            Value::Bool(b) => Some(*b),
            Value::Str(text) if yaml11_boolean(text).is_some() => {
                // `yes`, `off`, …: booleans in YAML 1.1, text in YAML 1.2 (see `load::parse`).
                let value = yaml11_boolean(text).unwrap_or_default();
                self.push(
                    Problem::at(
                        file,
                        node.span,
                        format!("{what} must be true or false, not the text `{text}`"),
                        "expected true or false",
                    )
                    .with_help(format!(
                        "write `{key}: {value}`: pydeployer reads YAML 1.2, where only true and false are booleans (`{text}` is text, as in GitHub Actions)"
                    )),
                );
                None
            }
            _ => {
                self.wrong_type(file, node, what, "true or false", &format!("`{key}: true`"));
                None
            }
        }
    }

    pub(super) fn integer(
        &mut self,
        file: &SourceFile,
        node: &Node,
        what: &str,
        range: (i64, i64),
        example: &str,
    ) -> Option<i64> {
        match &node.value {
            Value::Int(n) if (range.0..=range.1).contains(n) => Some(*n),
            Value::Int(n) => {
                self.push(
                    Problem::at(
                        file,
                        node.span,
                        format!(
                            "{what} must be between {} and {}, not {n}",
                            range.0, range.1
                        ),
                        "out of range",
                    )
                    .with_help(format!("for example: {example}")),
                );
                None
            }
            _ => {
                self.wrong_type(file, node, what, "a whole number", example);
                None
            }
        }
    }

    pub(super) fn string_list(
        &mut self,
        file: &SourceFile,
        node: &Node,
        what: &str,
        example: &str,
    ) -> Option<Vec<(String, Span)>> {
        let Value::Seq(items) = &node.value else {
            self.wrong_type(file, node, what, "a list", example);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            match &item.value {
                Value::Str(s) => out.push((s.clone(), item.span)),
                _ => {
                    self.wrong_type(
                        file,
                        item,
                        &format!("each item of {what}"),
                        "a string",
                        example,
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// A humantime duration, above zero and at most 30 days; `what` names the key
    /// (`` `timeout` ``) and `example` shows one (`` `timeout: 10m` ``).
    pub(super) fn duration(
        &mut self,
        file: &SourceFile,
        node: &Node,
        what: &str,
        example: &str,
    ) -> Option<Duration> {
        let help = "write a duration with its unit, e.g. `90s`, `10m`, `1h 30m`";
        match &node.value {
            Value::Str(text) => match humantime::parse_duration(text) {
                Ok(d) if d.is_zero() => {
                    self.push(
                        Problem::at(
                            file,
                            node.span,
                            format!("{what} must be longer than zero"),
                            "zero",
                        )
                        .with_help(help),
                    );
                    None
                }
                Ok(d) if d > MAX_TIMEOUT => {
                    self.push(
                        Problem::at(
                            file,
                            node.span,
                            format!("{what} is at most 30 days"),
                            "too long",
                        )
                        .with_help(format!("leave {what} out for no limit (or the default)")),
                    );
                    None
                }
                Ok(d) => Some(d),
                Err(err) => {
                    self.push(
                        Problem::at(
                            file,
                            node.span,
                            format!("`{text}` is not a duration: {err}"),
                            "not a duration",
                        )
                        .with_help(help),
                    );
                    None
                }
            },
            Value::Int(n) => {
                self.push(
                    Problem::at(
                        file,
                        node.span,
                        format!("{what} needs a unit: `{n}` what?"),
                        "no unit",
                    )
                    .with_help(format!("write `{n}s` for seconds or `{n}m` for minutes")),
                );
                None
            }
            _ => {
                self.wrong_type(file, node, what, "a duration", example);
                None
            }
        }
    }
}

/// What YAML 1.1 read as a boolean and YAML 1.2 reads as text: `yes`, `no`, `on`, `off`, `y`,
/// `n`, in any case.
pub(super) fn yaml11_boolean(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "yes" | "on" | "y" => Some(true),
        "no" | "off" | "n" => Some(false),
        _ => None,
    }
}

/// The plain scalar `node` as it is written in the file, when its span covers exactly that
/// (not a quoted, tagged, anchored or aliased value).
pub(super) fn as_written(file: &SourceFile, node: &Node) -> Option<String> {
    let text = file
        .text
        .get(node.span.offset..node.span.offset.checked_add(node.span.len)?)?;
    let plain = !text.is_empty()
        && !text.starts_with(['"', '\'', '!', '&', '*', '|', '>'])
        && !text.contains(['\n', '#']);
    plain.then(|| text.trim().to_owned())
}
