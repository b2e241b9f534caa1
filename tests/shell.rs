//! `graph`, `completions`, `man` and the help texts, checked with the real tools that read
//! them: Graphviz's `dot`, `bash`, `man`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use clap::CommandFactory;
use common::Project;
use pydeployer::cli::Cli;

/// A diamond (a → b, c → d), a manual stage, an always stage, an on_failure stage, and names
/// that need care: `end` is a Mermaid keyword, `.` and `-` are not plain identifiers.
const PIPELINE: &str = "\
stages:
  a: { run: 'true' }
  b: { run: 'true', needs: [a] }
  unit.test-2: { run: 'true', needs: [a] }
  d: { run: 'true', needs: [b, unit.test-2] }
  ship: { run: 'true', needs: [d], when: manual }
  end: { run: 'true', needs: [d], when: always }
  notify: { run: 'true', when: on_failure, description: tell someone }
";

const STAGES: [&str; 7] = ["a", "b", "unit.test-2", "d", "ship", "end", "notify"];

/// (need, stage) for every `needs` entry of PIPELINE.
fn needs() -> BTreeSet<(String, String)> {
    [
        ("a", "b"),
        ("a", "unit.test-2"),
        ("b", "d"),
        ("unit.test-2", "d"),
        ("d", "ship"),
        ("d", "end"),
    ]
    .iter()
    .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
    .collect()
}

/// Runs `program args…` with `input` on stdin; a missing program fails the test with `hint`.
fn pipe_into(program: &str, args: &[&str], input: &[u8], hint: &str) -> (i32, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "80")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run `{program}` ({err}): {hint}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn graph_dot_is_drawn_by_graphviz() {
    let project = Project::with_pipeline(PIPELINE);
    let (code, dot, err) = project.run(&["graph", "--format", "dot"]);
    assert_eq!(code, 0, "{err}");
    let (code, svg, err) = pipe_into(
        "dot",
        &["-Tsvg"],
        dot.as_bytes(),
        "Graphviz is needed for this test: `apt-get install -y graphviz` (.ci/run installs it)",
    );
    assert_eq!(code, 0, "dot -Tsvg refused the graph: {err}\n{dot}");
    assert!(svg.contains("<svg"), "{svg}");
    // Graphviz writes every node's and edge's name as a <title>.
    // (in XML, with `-` as `&#45;`).
    let xml = |name: &str| name.replace('-', "&#45;");
    for stage in STAGES {
        assert!(
            svg.contains(&format!("<title>{}</title>", xml(stage))),
            "{stage}: {svg}"
        );
    }
    for (need, stage) in needs() {
        assert!(
            svg.contains(&format!(
                "<title>{}&#45;&gt;{}</title>",
                xml(&need),
                xml(&stage)
            )),
            "edge {need} -> {stage}: {svg}"
        );
    }
    // Manual stages dashed; on_failure and always stages look different from the rest.
    let line = |name: &str| {
        dot.lines()
            .find(|l| l.trim_start().starts_with(&format!("\"{name}\"")) && !l.contains("->"))
            .unwrap_or_else(|| panic!("no node line for {name}: {dot}"))
            .to_owned()
    };
    assert!(line("ship").contains("dashed"), "{dot}");
    assert!(!line("a").contains('['), "{dot}");
    assert_ne!(
        line("end").replace("end", ""),
        line("notify").replace("notify", "")
    );
    assert!(
        line("end").contains('[') && line("notify").contains('['),
        "{dot}"
    );
}

#[test]
fn mermaid_has_one_node_per_stage_and_one_edge_per_need() {
    let project = Project::with_pipeline(PIPELINE);
    // Mermaid is the default.
    let (code, out, err) = project.run(&["graph"]);
    assert_eq!(code, 0, "{err}");
    let (_, explicit, _) = project.run(&["graph", "--format", "mermaid"]);
    assert_eq!(out, explicit);

    let lines: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("%%"))
        .collect();
    assert_eq!(lines[0], "flowchart TD", "{out}");

    // Node lines: `id["name"]` with an optional `:::class`.
    let mut nodes: BTreeMap<String, String> = BTreeMap::new();
    let mut classes: BTreeMap<String, String> = BTreeMap::new();
    let mut edges: Vec<(String, String)> = Vec::new();
    for line in &lines[1..] {
        if let Some((id, rest)) = line.split_once("[\"") {
            let (label, class) = rest.split_once("\"]").expect("closed label");
            assert!(
                !id.contains(' ') && !nodes.contains_key(id),
                "bad or repeated id: {line}"
            );
            assert!(
                nodes.insert(id.to_owned(), label.to_owned()).is_none(),
                "{out}"
            );
            if let Some(class) = class.strip_prefix(":::") {
                classes.insert(label.to_owned(), class.to_owned());
            } else {
                assert!(class.is_empty(), "{line}");
            }
        } else if let Some((from, to)) = line.split_once(" --> ") {
            edges.push((from.to_owned(), to.to_owned()));
        } else {
            assert!(
                line.starts_with("classDef "),
                "unexpected line {line:?}: {out}"
            );
        }
    }
    let names: BTreeSet<&str> = nodes.values().map(String::as_str).collect();
    assert_eq!(names, STAGES.into_iter().collect(), "{out}");
    assert_eq!(nodes.len(), STAGES.len(), "one node line per stage: {out}");

    let named: Vec<(String, String)> = edges
        .iter()
        .map(|(from, to)| (nodes[from].clone(), nodes[to].clone()))
        .collect();
    assert_eq!(named.len(), needs().len(), "one edge per need: {out}");
    assert_eq!(named.into_iter().collect::<BTreeSet<_>>(), needs(), "{out}");

    // Manual, always and on_failure stages each have their own class, defined once.
    assert_eq!(classes.get("ship").map(String::as_str), Some("manual"));
    assert_eq!(classes.get("end").map(String::as_str), Some("always"));
    assert_eq!(
        classes.get("notify").map(String::as_str),
        Some("on_failure")
    );
    assert_eq!(classes.len(), 3, "{out}");
    for class in ["manual", "always", "on_failure"] {
        let defs = lines
            .iter()
            .filter(|l| l.starts_with(&format!("classDef {class} ")))
            .count();
        assert_eq!(defs, 1, "classDef {class}: {out}");
    }
    // `end` is a Mermaid keyword: it may be a label, never an id.
    assert!(!nodes.contains_key("end"), "{out}");
}

#[test]
fn graph_takes_only_picture_formats() {
    let project = Project::with_pipeline(PIPELINE);
    let (code, _, err) = project.run(&["graph", "--format", "json"]);
    assert_eq!(code, 2);
    assert!(err.contains("[possible values: mermaid, dot]"), "{err}");
    // The global --format, before the command, is refused with a hint too.
    // (With the global --format json, the problem itself is JSON on stdout.)
    let (code, out, err) = project.run(&["--format", "json", "graph"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("graph --format dot"), "{out}\n{err}");
    // …and the other commands take text, json (and jsonl, which only a run streams).
    let (code, _, err) = project.run(&["plan", "--format", "dot"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("[possible values: text, json, jsonl]"),
        "{err}"
    );
    let (code, out, err) = project.run(&["plan", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(&out).expect("plan JSON");
}

#[test]
fn graph_of_an_invalid_pipeline_is_exit_2() {
    let project = Project::with_pipeline("stages:\n  a: { run: 'true', needs: [nope] }\n");
    let (code, out, err) = project.run(&["graph", "--format", "dot"]);
    assert_eq!(code, 2);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("nope"), "{err}");
}

/// Loads `pydeployer completions bash` in a real bash, then asks its completion function for
/// the candidates of `words` (the last one being completed), as bash does on TAB.
fn complete_in_bash(project: &Project, words: &[&str]) -> Vec<String> {
    let (code, script, err) = project.run(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().expect("temp dir");
    let script_path = dir.path().join("pydeployer.bash");
    std::fs::write(&script_path, script).expect("write script");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let program = format!(
        "source '{script}' || exit 10
spec=$(complete -p pydeployer) || exit 11
[[ $spec == *'-F _clap_complete_pydeployer'* ]] || {{ echo \"bad spec: $spec\" >&2; exit 12; }}
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE=\"${{COMP_WORDS[*]}}\"
COMP_POINT=${{#COMP_LINE}}
COMP_TYPE=9
_clap_complete_pydeployer pydeployer \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"
printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script = script_path.display(),
        words = quoted.join(" "),
    );
    let output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .current_dir(project.path())
        .env_remove("PYDEPLOYER_COMPLETE")
        .output()
        .expect("bash must be installed to test completions");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bash: {stderr}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completes_commands_flags_and_stage_names() {
    let project = Project::with_pipeline(PIPELINE);
    project.file("other.yml", "stages:\n  lint: { run: 'true' }\n");

    assert_eq!(complete_in_bash(&project, &["pydeployer", "ru"]), ["run"]);
    let commands = complete_in_bash(&project, &["pydeployer", ""]);
    for command in ["run", "plan", "graph", "completions", "man"] {
        assert!(commands.iter().any(|c| c == command), "{commands:?}");
    }
    assert!(
        !commands.iter().any(|c| c.starts_with("__")),
        "hidden command offered: {commands:?}"
    );

    // `run`/`plan` STAGE, --only and --skip: the stages of ./pipeline.yml.
    let run = complete_in_bash(&project, &["pydeployer", "run", ""]);
    for stage in STAGES {
        assert!(run.iter().any(|c| c == stage), "{stage}: {run:?}");
    }
    assert_eq!(
        complete_in_bash(&project, &["pydeployer", "plan", "--only", "u"]),
        ["unit.test-2"]
    );
    assert_eq!(
        complete_in_bash(&project, &["pydeployer", "run", "--skip", "sh"]),
        ["ship"]
    );
    assert_eq!(
        complete_in_bash(&project, &["pydeployer", "all", "--skip", "no"]),
        ["notify"]
    );
    // -f on the line picks the pipeline the stages come from.
    assert_eq!(
        complete_in_bash(&project, &["pydeployer", "-f", "other.yml", "run", ""])
            .iter()
            .filter(|c| !c.starts_with('-'))
            .collect::<Vec<_>>(),
        ["lint"]
    );
    // Flags and values clap knows.
    assert_eq!(
        complete_in_bash(&project, &["pydeployer", "graph", "--format", ""]),
        ["mermaid", "dot"]
    );
    assert_eq!(
        complete_in_bash(&project, &["pydeployer", "run", "--dr"]),
        ["--dry-run"]
    );
}

#[test]
fn every_shell_gets_a_script_that_calls_back() {
    let project = Project::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let (code, out, err) = project.run(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains("PYDEPLOYER_COMPLETE"), "{shell}: {out}");
    }
    let (code, _, err) = project.run(&["completions", "tcsh"]);
    assert_eq!(code, 2);
    assert!(err.contains("possible values"), "{err}");
}

fn render_man(roff: &str) -> String {
    let (code, text, err) = pipe_into(
        "man",
        &["-l", "-"],
        roff.as_bytes(),
        "man is needed for this test: `apt-get install -y man-db` (.ci/run installs it)",
    );
    assert_eq!(code, 0, "man -l - failed: {err}");
    assert!(
        !err.contains("warning") && !err.contains("error"),
        "man complained: {err}"
    );
    text
}

#[test]
fn man_pages_render_with_man() {
    let project = Project::new();
    let (code, roff, err) = project.run(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH pydeployer"),
        "{roff}"
    );
    let page = render_man(&roff);
    for text in [
        "pydeployer",
        "NAME",
        "SYNOPSIS",
        "pydeployer-graph(1)",
        "Examples:",
    ] {
        assert!(page.contains(text), "{text}: {page}");
    }

    let (code, roff, err) = project.run(&["man", "graph"]);
    assert_eq!(code, 0, "{err}");
    let page = render_man(&roff);
    assert!(
        page.contains("pydeployer-graph") && page.contains("mermaid"),
        "{page}"
    );
    assert!(
        !page.contains("output-format"),
        "hidden option shown: {page}"
    );

    let (code, _, err) = project.run(&["man", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("graph"), "{err}");

    let (code, _, err) = project.run(&["man", "--dir", "pages"]);
    assert_eq!(code, 0, "{err}");
    for page in ["pydeployer.1", "pydeployer-run.1", "pydeployer-graph.1"] {
        let roff = project.read(&format!("pages/{page}"));
        render_man(&roff);
    }
    assert!(!project.exists("pages/pydeployer-__watchdog.1"));
}

#[test]
fn every_command_and_flag_has_help_and_every_command_an_example() {
    let mut cli = Cli::command();
    cli.build();
    let mut commands = vec![&cli];
    // (`help` is clap's own: `pydeployer help run` is `pydeployer run --help`.)
    commands.extend(
        cli.get_subcommands()
            .filter(|c| !c.is_hide_set() && c.get_name() != "help"),
    );
    let project = Project::new();
    for command in commands {
        let name = command.get_name();
        assert!(command.get_about().is_some(), "`{name}` has no help");
        for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                !help.trim().is_empty() && !help.contains('\n'),
                "`{name} {}` needs a one-line help",
                arg.get_id()
            );
        }
        let args: Vec<&str> = if command.get_name() == cli.get_name() {
            vec!["--help"]
        } else {
            vec![name, "--help"]
        };
        let (code, out, err) = project.run(&args);
        assert_eq!(code, 0, "{err}");
        let examples = out
            .split_once("Examples:\n")
            .unwrap_or_else(|| panic!("`{name} --help` shows no example: {out}"))
            .1;
        assert!(
            examples.contains("  pydeployer"),
            "`{name} --help`: {examples}"
        );
    }
}

/// The README documents each new command and how to install completions and man pages.
#[test]
fn readme_documents_the_commands() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    for text in [
        "pydeployer graph",
        "pydeployer completions",
        "pydeployer man",
    ] {
        assert!(readme.contains(text), "README lacks {text}");
    }
}
