//! Import: a workflow becomes stages, written as a `pipeline.yml` and `stages.d/` that use
//! today's keys only.
//!
//! `github` and `gitlab` read their file (a spanned YAML tree, so that problems point at
//! lines) into an [`Imported`]; [`Imported::files`] writes it. What cannot be carried over
//! goes into the report, which the command prints.

pub mod github;
pub mod gitlab;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::actions::quote;
use crate::config::STAGES_DIR;
use crate::config::raw::{Node, Value};
use crate::error::{Invalid, Problem, SourceFile};
use crate::pipeline::StageName;
use crate::port::yaml::{self, Map, Yaml};

/// A pipeline read from another CI's file.
#[derive(Debug, Default)]
pub struct Imported {
    /// The pipeline's name (the workflow's), if it has one.
    pub name: Option<String>,
    /// `repo:` for a `git/clone` stage: the project itself, on this branch.
    pub clone_branch: Option<String>,
    pub env: BTreeMap<String, String>,
    /// Secrets the whole workflow reads (its `env:`): every run needs them.
    pub secrets: BTreeSet<String>,
    /// In the order the workflow gives them.
    pub stages: Vec<NewStage>,
    /// What could not be carried over, one line each.
    pub report: Vec<String>,
    /// How things were carried over where it is not obvious.
    pub notes: Vec<String>,
}

/// One stage to write.
#[derive(Debug, Clone, Default)]
pub struct NewStage {
    pub name: String,
    /// The job it comes from: stages of one job share a file in `stages.d/`.
    pub job: String,
    pub description: Option<String>,
    pub body: Body,
    pub needs: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// A duration as pydeployer reads it (`10m`).
    pub timeout: Option<String>,
    pub retries: u32,
    pub allow_failure: bool,
    /// `None`: on_success.
    pub when: Option<&'static str>,
    pub secrets: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A shell script.
    Run(String),
    /// A built-in action and its `with:` text parameters.
    Uses(&'static str, Vec<(String, String)>),
}

impl Default for Body {
    fn default() -> Self {
        Body::Run(String::new())
    }
}

impl Imported {
    /// `pipeline.yml` and the files of `stages.d/`, paths relative to the output folder.
    pub fn files(&self, source: &str, ci: &str) -> Vec<(PathBuf, String)> {
        let header = vec![
            format!("Imported by `pydeployer import {ci}` from {source}."),
            "`pydeployer plan` shows what runs; the import report said what was not carried over."
                .to_owned(),
        ];
        let mut main = Map::new();
        if let Some(name) = &self.name {
            main.insert("name", name.as_str());
        }
        if let Some(branch) = &self.clone_branch {
            let mut repo = Map::new();
            repo.insert("url", ".");
            repo.insert("branch", branch.as_str());
            repo.insert("dir", "workspace");
            main.insert_commented(
                vec![
                    "The workflow checks the repository out: here `git/clone` clones this project's".into(),
                    "committed work into workspace/, where the stages run (as on a fresh runner).".into(),
                ],
                "repo",
                repo,
            );
        }
        if !self.env.is_empty() {
            let mut env = Map::new();
            for (k, v) in &self.env {
                env.insert(k.clone(), v.as_str());
            }
            main.insert("env", env);
        }
        if !self.secrets.is_empty() {
            main.insert(
                "secrets",
                Yaml::Seq(
                    self.secrets
                        .iter()
                        .map(|s| Yaml::from(s.as_str()))
                        .collect(),
                ),
            );
        }
        let mut files = vec![(
            PathBuf::from("pipeline.yml"),
            yaml::document(&header, &main),
        )];

        let mut jobs: Vec<&str> = Vec::new();
        for stage in &self.stages {
            if !jobs.contains(&stage.job.as_str()) {
                jobs.push(&stage.job);
            }
        }
        for (n, job) in jobs.iter().enumerate() {
            let mut map = Map::new();
            for stage in self.stages.iter().filter(|s| s.stage_job() == *job) {
                map.insert(stage.name.clone(), stage.to_yaml());
            }
            let safe: String = job
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            let path = PathBuf::from(STAGES_DIR).join(format!("{:02}-{safe}.yml", (n + 1) * 10));
            files.push((path, yaml::document(&header[..1], &map)));
        }
        files
    }

    /// A stage name not taken yet, from `wanted` (made valid).
    pub(crate) fn free_name(&self, wanted: &str) -> String {
        let mut base: String = wanted
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        base = base.trim_start_matches(['.', '-']).to_owned();
        base.truncate(80);
        if base.is_empty() || StageName::parse(&base).is_err() {
            base = format!("{base}-job");
            base = base.trim_start_matches('-').to_owned();
        }
        let taken: HashSet<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
        let mut name = base.clone();
        let mut n = 2;
        while taken.contains(name.as_str()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        name
    }

    /// An `on_failure`/`always` stage whose needs are every regular stage is written without
    /// them: that is what such a stage waits for anyway (and what export writes out).
    pub(crate) fn drop_default_post_needs(&mut self) {
        let regular: BTreeSet<String> = self
            .stages
            .iter()
            .filter(|s| s.when.is_none())
            .map(|s| s.name.clone())
            .collect();
        let after_post = self.after_post();
        let expected: BTreeSet<String> = regular.difference(&after_post).cloned().collect();
        for stage in &mut self.stages {
            let post = matches!(stage.when, Some("on_failure" | "always"));
            let needs: BTreeSet<String> = stage.needs.iter().cloned().collect();
            if post && !needs.is_empty() && needs == expected {
                stage.needs.clear();
            }
        }
    }

    /// Stages that come after an on_failure/always stage.
    fn after_post(&self) -> BTreeSet<String> {
        let mut found: BTreeSet<String> = BTreeSet::new();
        let mut changed = true;
        while changed {
            changed = false;
            for stage in &self.stages {
                if found.contains(&stage.name) {
                    continue;
                }
                let follows = stage.needs.iter().any(|n| {
                    found.contains(n)
                        || self.stages.iter().any(|s| {
                            &s.name == n && matches!(s.when, Some("on_failure" | "always"))
                        })
                });
                if follows {
                    found.insert(stage.name.clone());
                    changed = true;
                }
            }
        }
        found
    }
}

impl NewStage {
    fn stage_job(&self) -> &str {
        &self.job
    }

    fn to_yaml(&self) -> Map {
        let mut map = Map::new();
        if let Some(description) = &self.description {
            map.insert("description", description.as_str());
        }
        match &self.body {
            Body::Run(script) => {
                map.insert("run", script.as_str());
            }
            Body::Uses(action, with) => {
                map.insert("uses", *action);
                if !with.is_empty() {
                    let mut params = Map::new();
                    for (k, v) in with {
                        params.insert(k.clone(), v.as_str());
                    }
                    map.insert("with", params);
                }
            }
        }
        if !self.needs.is_empty() {
            map.insert("needs", self.needs.clone());
        }
        if !self.env.is_empty() {
            let mut env = Map::new();
            for (k, v) in &self.env {
                env.insert(k.clone(), v.as_str());
            }
            map.insert("env", env);
        }
        if let Some(timeout) = &self.timeout {
            map.insert("timeout", timeout.as_str());
        }
        if self.retries > 0 {
            map.insert("retries", u64::from(self.retries));
        }
        if self.allow_failure {
            map.insert("allow_failure", true);
        }
        if let Some(when) = self.when {
            map.insert("when", when);
        }
        if !self.secrets.is_empty() {
            map.insert(
                "secrets",
                Yaml::Seq(
                    self.secrets
                        .iter()
                        .map(|s| Yaml::from(s.as_str()))
                        .collect(),
                ),
            );
        }
        map
    }
}

/// A valid environment variable name.
pub(crate) fn is_var_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `export NAME=…` for a value that refers to shell variables (`parts`: text, or a variable).
pub(crate) fn export_line(name: &str, parts: &[Part]) -> String {
    let mut value = String::new();
    for part in parts {
        match part {
            Part::Text(text) => {
                for c in text.chars() {
                    if matches!(c, '"' | '\\' | '$' | '`') {
                        value.push('\\');
                    }
                    value.push(c);
                }
            }
            Part::Var(var) => {
                let _ = write!(value, "${{{var}}}");
            }
            Part::Shell(command) => {
                let _ = write!(value, "$({command})");
            }
        }
    }
    format!("export {name}=\"{value}\"")
}

/// A piece of a value whose expressions were resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Text(String),
    /// The value of an environment variable (an `env.*` or a secret).
    Var(String),
    /// The output of a command (`git rev-parse HEAD` for `github.sha`).
    Shell(String),
}

/// `parts` as text when they are all text.
pub(crate) fn plain(parts: &[Part]) -> Option<String> {
    parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// `parts` pasted into a script, as GitHub pastes an expression's value into `run:` before
/// the shell reads it; variables and commands become the shell's.
pub(crate) fn in_script(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => t.clone(),
            Part::Var(v) => format!("${{{v}}}"),
            Part::Shell(c) => format!("$({c})"),
        })
        .collect()
}

/// The shell test for "the checked-out branch is (not) `branch`".
pub(crate) fn branch_test(branch: &str, equal: bool) -> String {
    format!(
        "[ \"$(git rev-parse --abbrev-ref HEAD)\" {} {} ]",
        if equal { "=" } else { "!=" },
        quote(branch)
    )
}

/// The text of a scalar node (numbers as YAML gave them), `None` for a list or mapping.
pub(crate) fn scalar_text(node: &Node) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        Value::Seq(_) | Value::Map(_) => None,
    }
}

/// The entries of a mapping node, or a problem at it.
pub(crate) fn entries<'n>(
    file: &SourceFile,
    node: &'n Node,
    what: &str,
) -> Result<&'n [(crate::config::raw::Key, Node)], Invalid> {
    match &node.value {
        Value::Map(entries) => Ok(entries),
        other => Err(Problem::at(
            file,
            node.span,
            format!("{what} must be a mapping, found {}", other.kind()),
            "here",
        )
        .with_help(
            "check the file against the CI's documentation; it does not look like a workflow",
        )
        .into()),
    }
}

/// The value under `key` in a mapping node.
pub(crate) fn get<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    match &node.value {
        Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
        _ => None,
    }
}

/// A duration in whole minutes, as pydeployer reads it.
pub(crate) fn minutes_text(minutes: f64) -> Option<String> {
    (minutes.is_finite() && minutes > 0.0).then(|| {
        let seconds = (minutes * 60.0).round();
        if seconds % 60.0 == 0.0 {
            format!("{}m", seconds / 60.0)
        } else {
            format!("{seconds}s")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_escape_text_and_keep_variables() {
        let parts = [
            Part::Text("a \"b\" $c `d` \\".into()),
            Part::Var("TOKEN".into()),
            Part::Shell("git rev-parse HEAD".into()),
        ];
        assert_eq!(
            export_line("X", &parts),
            r#"export X="a \"b\" \$c \`d\` \\${TOKEN}$(git rev-parse HEAD)""#
        );
        assert_eq!(plain(&parts), None);
        assert_eq!(plain(&[Part::Text("x".into())]).as_deref(), Some("x"));
    }

    #[test]
    fn free_names_are_valid_and_distinct() {
        let mut imported = Imported::default();
        imported.stages.push(NewStage {
            name: "build".into(),
            ..NewStage::default()
        });
        assert_eq!(imported.free_name("build"), "build-2");
        assert_eq!(imported.free_name("Run tests (3.11)"), "Run-tests--3.11-");
        assert_eq!(imported.free_name("pydeployer"), "pydeployer-job");
        assert_eq!(imported.free_name(".hidden"), "hidden");
    }

    #[test]
    fn minutes_become_durations() {
        assert_eq!(minutes_text(10.0).as_deref(), Some("10m"));
        assert_eq!(minutes_text(0.5).as_deref(), Some("30s"));
        assert_eq!(minutes_text(0.0), None);
    }
}
