//! A small YAML writer for the files export and import produce.
//!
//! Hand-written rather than a serializer because the files carry comments (what did not map,
//! where a file came from), and because every scalar must read back as the text it was: a
//! value is written plain only when no YAML 1.1 or 1.2 reader (GitHub's, GitLab's Ruby, ours)
//! could take it for anything but that string; anything else is double-quoted, or a literal
//! block for multi-line scripts. The output depends only on the tree: it is deterministic.

use std::fmt::Write as _;

/// A YAML value to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    /// Written as nothing after the key (`pull_request:`).
    Null,
    Bool(bool),
    Int(u64),
    Str(String),
    Seq(Vec<Yaml>),
    Map(Map),
}

/// A mapping in the order its entries were added, each with comment lines above it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Map {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    comments: Vec<String>,
    key: String,
    /// Written as it is (GitHub's `on:`, which YAML 1.1 would read as `true` if it were data).
    raw_key: bool,
    value: Yaml,
}

impl Map {
    pub fn new() -> Self {
        Map::default()
    }

    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Yaml>) -> &mut Self {
        self.entries.push(Entry {
            comments: Vec::new(),
            key: key.into(),
            raw_key: false,
            value: value.into(),
        });
        self
    }

    /// An entry with comment lines above it.
    pub fn insert_commented(
        &mut self,
        comments: Vec<String>,
        key: impl Into<String>,
        value: impl Into<Yaml>,
    ) -> &mut Self {
        self.insert(key, value);
        if let Some(entry) = self.entries.last_mut() {
            entry.comments = comments;
        }
        self
    }

    /// A structural key written without quotes whatever it looks like.
    pub fn insert_raw_key(&mut self, key: &'static str, value: impl Into<Yaml>) -> &mut Self {
        self.insert(key, value);
        if let Some(entry) = self.entries.last_mut() {
            entry.raw_key = true;
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl From<Map> for Yaml {
    fn from(map: Map) -> Self {
        Yaml::Map(map)
    }
}

impl From<&str> for Yaml {
    fn from(text: &str) -> Self {
        Yaml::Str(text.to_owned())
    }
}

impl From<String> for Yaml {
    fn from(text: String) -> Self {
        Yaml::Str(text)
    }
}

impl From<bool> for Yaml {
    fn from(value: bool) -> Self {
        Yaml::Bool(value)
    }
}

impl From<u64> for Yaml {
    fn from(value: u64) -> Self {
        Yaml::Int(value)
    }
}

impl From<Vec<String>> for Yaml {
    fn from(items: Vec<String>) -> Self {
        Yaml::Seq(items.into_iter().map(Yaml::Str).collect())
    }
}

/// The document: `header` comment lines, then the mapping.
pub fn document(header: &[String], root: &Map) -> String {
    let mut out = String::new();
    for line in header {
        comment(&mut out, 0, line);
    }
    write_map(&mut out, 0, root);
    out
}

fn comment(out: &mut String, indent: usize, text: &str) {
    for line in text.lines() {
        let line: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let line = line.trim_end();
        if line.is_empty() {
            let _ = writeln!(out, "{:indent$}#", "");
        } else {
            let _ = writeln!(out, "{:indent$}# {line}", "");
        }
    }
}

fn write_map(out: &mut String, indent: usize, map: &Map) {
    for entry in &map.entries {
        for line in &entry.comments {
            comment(out, indent, line);
        }
        let key = if entry.raw_key {
            entry.key.clone()
        } else {
            scalar(&entry.key)
        };
        let _ = write!(out, "{:indent$}{key}:", "");
        write_value(out, indent, &entry.value);
    }
}

/// Writes `value` after a `key:` or `- ` already on the line.
fn write_value(out: &mut String, indent: usize, value: &Yaml) {
    match value {
        Yaml::Null => out.push('\n'),
        Yaml::Map(map) if map.is_empty() => out.push_str(" {}\n"),
        Yaml::Map(map) => {
            out.push('\n');
            write_map(out, indent + 2, map);
        }
        Yaml::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Yaml::Seq(items) => match flow(items) {
            Some(line) => {
                let _ = writeln!(out, " {line}");
            }
            None => {
                out.push('\n');
                for item in items {
                    write_item(out, indent + 2, item);
                }
            }
        },
        Yaml::Str(text) => match literal_block(text, indent + 2) {
            Some(block) => out.push_str(&block),
            None => {
                let _ = writeln!(out, " {}", scalar(text));
            }
        },
        Yaml::Bool(b) => {
            let _ = writeln!(out, " {b}");
        }
        Yaml::Int(n) => {
            let _ = writeln!(out, " {n}");
        }
    }
}

fn write_item(out: &mut String, indent: usize, item: &Yaml) {
    match item {
        Yaml::Map(map) if !map.is_empty() => {
            // `- key: value` with the other keys lined up under the first.
            let mut nested = String::new();
            write_map(&mut nested, indent + 2, map);
            let _ = write!(out, "{:indent$}- ", "");
            out.push_str(&nested[indent + 2..]);
        }
        other => {
            let _ = write!(out, "{:indent$}-", "");
            write_value(out, indent, other);
        }
    }
}

/// `[a, b]` for a short list of plain scalars.
fn flow(items: &[Yaml]) -> Option<String> {
    let mut parts = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Yaml::Str(text) if is_plain(text) => parts.push(text.clone()),
            Yaml::Int(n) => parts.push(n.to_string()),
            _ => return None,
        }
    }
    let line = format!("[{}]", parts.join(", "));
    (line.len() <= 72).then_some(line)
}

/// A string as one scalar: plain when that is safe, else double-quoted.
pub fn scalar(text: &str) -> String {
    if is_plain(text) {
        text.to_owned()
    } else {
        quoted(text)
    }
}

/// Words every YAML reader in play takes for something other than a string.
const NOT_TEXT: &[&str] = &[
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
];

/// Whether `text` reads back as itself when written plain, in YAML 1.1 and 1.2, as a key,
/// a value and an item of a flow list.
fn is_plain(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_' || first == '/')
        && !NOT_TEXT.contains(&text.to_ascii_lowercase().as_str())
        && !text.ends_with(' ')
        && !text.contains("  ")
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./@=+- ".contains(&b))
}

/// A double-quoted scalar; characters YAML does not allow raw are escaped.
pub fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if printable(c) => out.push(c),
            c if u32::from(c) <= 0xff => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if u32::from(c) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

/// YAML's printable characters, less the line and paragraph separators and the BOM, which
/// some readers take for line breaks or strip.
fn printable(c: char) -> bool {
    matches!(c, ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// ` |-` and the lines of a multi-line script, indented, when a literal block gives back
/// exactly `text`; `None` otherwise (the caller quotes it).
fn literal_block(text: &str, indent: usize) -> Option<String> {
    if !text.contains('\n') {
        return None;
    }
    let body = text.trim_end_matches('\n');
    let trailing = text.len() - body.len();
    let safe = !body.is_empty()
        && !body.starts_with([' ', '\t', '\n'])
        && body.chars().all(|c| c == '\n' || c == '\t' || printable(c))
        && body.lines().all(|line| !line.ends_with([' ', '\t']));
    if !safe {
        return None;
    }
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let mut out = format!(" |{chomp}\n");
    for line in text
        .split('\n')
        .take(body.lines().count() + trailing.saturating_sub(1))
    {
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{:indent$}{line}", "");
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> serde_json::Value {
        serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn every_string_reads_back_as_itself() {
        let cases = [
            "plain",
            "",
            " lead",
            "trail ",
            "yes",
            "No",
            "on",
            "null",
            "~",
            "3.10",
            "0022",
            "1e3",
            ".inf",
            "a: b",
            "a #b",
            "- x",
            "[x]",
            "{x}",
            "*alias",
            "&anchor",
            "!tag",
            "%dir",
            "@at",
            "`tick",
            "'single'",
            "\"double\"",
            "back\\slash",
            "tab\there",
            "ctrl\u{1}\u{7f}\u{85}\u{9b}",
            "sep\u{2028}\u{2029}\u{feff}",
            "é ü 日本",
            "${{ github.token }}",
            "line1\nline2",
            "line1\nline2\n",
            "line1\n\nline2\n\n\n",
            "  indented\nnext",
            "\nleading newline",
            "trailing space \nx",
            "x\n  indented later\n",
            "x\r\ny",
            "ends with backslash\\",
        ];
        for text in cases {
            let mut map = Map::new();
            map.insert("k", text);
            map.insert(text, "v");
            map.insert("list", Yaml::Seq(vec![Yaml::from(text), Yaml::from("z")]));
            let doc = document(&[], &map);
            let value = read(&doc);
            assert_eq!(value["k"], serde_json::json!(text), "{doc}");
            assert_eq!(value[text], serde_json::json!("v"), "{doc}");
            assert_eq!(value["list"][0], serde_json::json!(text), "{doc}");
        }
    }

    #[test]
    fn structure_comments_and_flow_lists() {
        let mut step = Map::new();
        step.insert("uses", "actions/checkout@v4");
        let mut run = Map::new();
        run.insert("run", "echo a\necho b\n");
        run.insert("shell", "sh");
        let mut job = Map::new();
        job.insert("needs", vec!["a".to_owned(), "b-c".to_owned()]);
        job.insert("steps", Yaml::Seq(vec![step.into(), run.into()]));
        job.insert("empty", Yaml::Seq(Vec::new()));
        let mut root = Map::new();
        root.insert_raw_key("on", Yaml::Null);
        root.insert_commented(vec!["a comment\nof two lines".into()], "job", job);
        let doc = document(&["header".into()], &root);
        insta::assert_snapshot!(doc, @r#"
        # header
        on:
        # a comment
        # of two lines
        job:
          needs: [a, b-c]
          steps:
            - uses: actions/checkout@v4
            - run: |
                echo a
                echo b
              shell: sh
          empty: []
        "#);
    }
}
