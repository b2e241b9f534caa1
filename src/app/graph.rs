//! `pydeployer graph`: the stage graph as Mermaid (GitHub markdown) or Graphviz dot source.
//!
//! Every stage of the pipeline is a node (not only those a run would select), every `needs`
//! entry one edge from the need to the stage that needs it. Manual stages have a dashed
//! outline; `on_failure` and `always` stages have their own look, so they stand out without
//! colour too (a double or octagonal outline in dot, a thick or dotted one in Mermaid).

use std::fmt::Write as _;
use std::io::Write as _;

use crate::cli::{Cli, Format, GraphArgs, GraphFormat};
use crate::error::{Failure, Problem};
use crate::pipeline::{Pipeline, When};

/// Loads the pipeline and prints its graph.
pub(crate) fn print(cli: &Cli, args: &GraphArgs) -> Result<(), Failure> {
    // `pydeployer --format json graph`: the global format, given before the command.
    if args.global_format == Some(Format::Json) {
        return Err(Problem::general("`graph` draws Mermaid or dot, not JSON")
            .with_help("use `pydeployer graph --format dot` or `--format mermaid` (the default)")
            .into());
    }
    let pipeline = super::load(cli)?;
    let text = match args.format {
        GraphFormat::Mermaid => mermaid(&pipeline),
        GraphFormat::Dot => dot(&pipeline),
    };
    // A closed pipe (`pydeployer graph | head`) is not an error worth a message.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

/// A `flowchart TD` that GitHub renders in a ```` ```mermaid ```` block.
///
/// Node ids are `s0`, `s1`, … (a stage may be called `end` or `graph`, which are Mermaid
/// keywords); the stage's name is the quoted label.
pub(crate) fn mermaid(pipeline: &Pipeline) -> String {
    let index = pipeline.index();
    let mut out = String::new();
    let _ = writeln!(out, "%% pipeline {}", one_line(&pipeline.name));
    out.push_str("flowchart TD\n");
    for (i, stage) in pipeline.stages.iter().enumerate() {
        let class = match stage.when {
            When::OnSuccess => "",
            When::Manual => ":::manual",
            When::OnFailure => ":::on_failure",
            When::Always => ":::always",
        };
        let _ = writeln!(
            out,
            "    s{i}[\"{}\"]{class}",
            mermaid_label(stage.name.as_str())
        );
    }
    for (i, stage) in pipeline.stages.iter().enumerate() {
        for need in &stage.needs {
            if let Some(from) = index.get(need.as_str()) {
                let _ = writeln!(out, "    s{from} --> s{i}");
            }
        }
    }
    let used = |when: When| pipeline.stages.iter().any(|s| s.when == when);
    if used(When::Manual) {
        out.push_str("    classDef manual stroke-dasharray: 6 4\n");
    }
    if used(When::OnFailure) {
        out.push_str("    classDef on_failure stroke:#c0392b,stroke-width:3px\n");
    }
    if used(When::Always) {
        out.push_str("    classDef always stroke:#2471a3,stroke-width:3px,stroke-dasharray: 2 2\n");
    }
    out
}

/// A `digraph` that `dot -Tsvg` draws.
pub(crate) fn dot(pipeline: &Pipeline) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_id(&pipeline.name));
    out.push_str("    rankdir=TB;\n");
    out.push_str("    node [shape=box, style=rounded, fontname=\"sans-serif\"];\n");
    for stage in &pipeline.stages {
        let name = dot_id(stage.name.as_str());
        let attributes = match stage.when {
            When::OnSuccess => "",
            When::Manual => " [style=\"rounded,dashed\", tooltip=\"manual\"]",
            When::OnFailure => {
                " [shape=octagon, style=bold, color=\"#c0392b\", tooltip=\"on_failure\"]"
            }
            When::Always => " [peripheries=2, color=\"#2471a3\", tooltip=\"always\"]",
        };
        let _ = writeln!(out, "    {name}{attributes};");
    }
    for stage in &pipeline.stages {
        for need in &stage.needs {
            let _ = writeln!(
                out,
                "    {} -> {};",
                dot_id(need.as_str()),
                dot_id(stage.name.as_str())
            );
        }
    }
    out.push_str("}\n");
    out
}

/// A double-quoted dot ID: `"` and `\` escaped, line breaks as spaces.
fn dot_id(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in one_line(text).chars() {
        if matches!(c, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Text inside a quoted Mermaid label: characters Mermaid would read as syntax as entity
/// codes (`#quot;`), line breaks as spaces.
fn mermaid_label(text: &str) -> String {
    let mut label = String::with_capacity(text.len());
    for c in one_line(text).chars() {
        match c {
            '"' => label.push_str("#quot;"),
            '#' => label.push_str("#35;"),
            '<' => label.push_str("#lt;"),
            '>' => label.push_str("#gt;"),
            c => label.push(c),
        }
    }
    label
}

fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_escaped() {
        assert_eq!(dot_id(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(dot_id("two\nlines"), "\"two lines\"");
        assert_eq!(
            mermaid_label("say \"hi\" #1 <b>"),
            "say #quot;hi#quot; #35;1 #lt;b#gt;"
        );
        assert_eq!(mermaid_label("unit-tests_2.py"), "unit-tests_2.py");
    }
}
