//! The pipeline's own settings: `name`, `repo`, `logs`, `archive`, `jobs`, `env`, `secrets`,
//! `grace_period`, and the inline `stages:`.

use std::collections::BTreeMap;

use crate::config::decode::as_written;
use crate::config::raw::{Key, Node, Span, Value};
use crate::config::validate::{Checker, Declarations, LOGS_KEYS, REPO_KEYS};
use crate::error::{Problem, SourceFile};
use crate::pipeline::{Pipeline, Repo, Source};

impl Checker<'_> {
    /// `secrets: [NAME, …]`: names of environment variables (their values are masked).
    pub(super) fn secrets(&mut self, file: &SourceFile, node: &Node) -> Vec<String> {
        let mut secrets = Vec::new();
        let Some(names) = self.string_list(file, node, "`secrets`", "`secrets: [PYPI_TOKEN]`")
        else {
            return secrets;
        };
        for (name, span) in names {
            if is_env_name(&name) {
                secrets.push(name);
            } else {
                self.push(
                    Problem::at(
                        file,
                        span,
                        format!("`{name}` is not a valid environment variable name"),
                        "invalid name",
                    )
                    .with_help(
                        "`secrets:` lists the names of environment variables, not their values",
                    ),
                );
            }
        }
        secrets
    }

    /// `env:` — names as the shell accepts them, values any scalar (`1` means "1").
    pub(super) fn env(&mut self, file: &SourceFile, node: &Node) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let Some(entries) = self.map(file, node, "`env`") else {
            return env;
        };
        self.repeated_keys(file, entries, "`env` variable");
        for (key, value) in entries {
            if !is_env_name(&key.name) {
                self.push(
                    Problem::at(
                        file,
                        key.span,
                        format!("`{}` is not a valid environment variable name", key.name),
                        "invalid name",
                    )
                    .with_help("use letters, digits and `_`, not starting with a digit"),
                );
                continue;
            }
            let text = match &value.value {
                Value::Str(s) => s.clone(),
                // As written: `3.10` stays `3.10` (not `3.1`), `0022` stays `0022`, `True`
                // stays `True`. (A value given through an alias or a tag is its value's text.)
                Value::Int(n) => as_written(file, value).unwrap_or_else(|| n.to_string()),
                Value::Float(f) => as_written(file, value).unwrap_or_else(|| f.to_string()),
                Value::Bool(b) => as_written(file, value).unwrap_or_else(|| b.to_string()),
                Value::Null => String::new(),
                Value::Seq(_) | Value::Map(_) => {
                    self.wrong_type(
                        file,
                        value,
                        &format!("env `{}`", key.name),
                        "a string",
                        "`PYTHONUNBUFFERED: \"1\"`",
                    );
                    continue;
                }
            };
            env.insert(key.name.clone(), text);
        }
        env
    }

    pub(super) fn setting<'f>(
        &mut self,
        file: &'f SourceFile,
        key: &Key,
        value: &Node,
        pipeline: &mut Pipeline,
        declared: &mut Declarations<'f>,
    ) {
        match key.name.as_str() {
            "version" => {
                self.integer(file, value, "`version`", (1, 1), "`version: 1`");
            }
            "name" => {
                if let Some(name) =
                    self.non_empty_string(file, value, "`name`", "`name: sample-app`")
                {
                    // The name is shown on the terminal and heads every log: it must not be
                    // able to move the cursor, clear the screen or turn text around.
                    if name.chars().any(is_unprintable) {
                        self.push(
                            Problem::at(
                                file,
                                value.span,
                                "`name` holds control or bidirectional-override characters",
                                "unprintable characters",
                            )
                            .with_help("use plain text, such as `name: sample-app`"),
                        );
                    } else {
                        pipeline.name = name;
                    }
                }
            }
            "repo" => pipeline.repo = self.repo(file, value),
            "logs" => {
                let Some(entries) = self.map(file, value, "`logs`") else {
                    return;
                };
                self.unknown_keys(file, entries, &LOGS_KEYS, "`logs` setting");
                for (key, value) in entries {
                    match key.name.as_str() {
                        "dir" => {
                            if let Some(dir) = self.path(file, value, "`logs.dir`", "`dir: logs`") {
                                pipeline.logs.dir = dir;
                            }
                        }
                        "keep" => {
                            if let Some(keep) =
                                self.integer(file, value, "`logs.keep`", (1, 100_000), "`keep: 20`")
                            {
                                pipeline.logs.keep = usize::try_from(keep).unwrap_or(20);
                            }
                        }
                        _ => {}
                    }
                }
            }
            "archive" => {
                if let Some(path) = self.path(
                    file,
                    value,
                    "`archive`",
                    "`archive: archive/deploy_history.json`",
                ) {
                    pipeline.archive = path;
                }
            }
            "jobs" => {
                if let Some(jobs) = self.integer(file, value, "`jobs`", (1, 1024), "`jobs: 2`") {
                    pipeline.jobs = usize::try_from(jobs).ok();
                }
            }
            "env" => pipeline.env = self.env(file, value),
            "cloud" => pipeline.cloud = self.cloud(file, value),
            "notify" => pipeline.notify = self.notify(file, value),
            "secrets" => pipeline.secrets = self.secrets(file, value),
            "grace_period" => {
                if let Some(grace) =
                    self.duration(file, value, "`grace_period`", "`grace_period: 10s`")
                {
                    pipeline.grace_period = grace;
                }
            }
            "stages" => {
                let Some(entries) = self.map(file, value, "`stages`") else {
                    return;
                };
                declared.reserve(entries.len());
                for (key, value) in entries {
                    if let Some(stage) = self.stage(file, key, value) {
                        declared.push(stage);
                    }
                }
            }
            _ => {} // reported by unknown_keys
        }
    }

    pub(super) fn git_name(
        &mut self,
        file: &SourceFile,
        span: Span,
        what: &str,
        name: &str,
    ) -> bool {
        match check_git_name(name) {
            Ok(()) => true,
            Err(why) => {
                self.push(
                    Problem::at(
                        file,
                        span,
                        format!("refusing {what} name {name:?}: {why}"),
                        format!("invalid {what} name"),
                    )
                    .with_help("use a plain name such as `master`, `main` or `release/1.2`"),
                );
                false
            }
        }
    }

    pub(super) fn repo(&mut self, file: &SourceFile, node: &Node) -> Option<Repo> {
        let entries = self.map(file, node, "`repo`")?;
        self.unknown_keys(file, entries, &REPO_KEYS, "`repo` setting");
        let mut url = None;
        let mut repo = Repo {
            url: String::new(),
            branch: "master".into(),
            remote: "origin".into(),
            dir: self.root.join("workspace"),
            source: Source::Clone,
        };
        for (key, value) in entries {
            match key.name.as_str() {
                "url" => {
                    url = self.non_empty_string(
                        file,
                        value,
                        "`repo.url`",
                        "`url: https://example.com/app.git`",
                    );
                    if let Some(text) = &url {
                        if let Err(why) = check_url(text) {
                            self.push(Problem::at(file, value.span, format!("refusing `repo.url` {text:?}: {why}"), "unsafe URL").with_help("give a plain URL (https://, ssh://, git@host:path) or a path to a repository"));
                            url = None;
                        } else if is_local_path(text) {
                            url = Some(self.root.join(text).display().to_string());
                        }
                    }
                }
                "branch" => {
                    if let Some(branch) = self
                        .non_empty_string(file, value, "`repo.branch`", "`branch: master`")
                        .filter(|b| self.git_name(file, value.span, "branch", b))
                    {
                        repo.branch = branch;
                    }
                }
                "remote" => {
                    if let Some(remote) = self
                        .non_empty_string(file, value, "`repo.remote`", "`remote: origin`")
                        .filter(|r| self.git_name(file, value.span, "remote", r))
                    {
                        repo.remote = remote;
                    }
                }
                "dir" => {
                    if let Some(dir) = self.path(file, value, "`repo.dir`", "`dir: workspace`") {
                        repo.dir = dir;
                    }
                }
                "source" => {
                    let source = self.string(file, value, "`repo.source`", "`source: worktree`");
                    match source.as_deref() {
                        None => {}
                        Some("clone") => repo.source = Source::Clone,
                        Some("worktree") => repo.source = Source::Worktree,
                        Some(other) => self.push(
                            Problem::at(
                                file,
                                value.span,
                                format!("`repo.source` is `clone` or `worktree`, not `{other}`"),
                                "unknown source",
                            )
                            .with_help("`clone`: test what was pushed (the default); `worktree`: test what is on disk"),
                        ),
                    }
                }
                _ => {}
            }
        }
        let Some(url) = url else {
            if !entries.iter().any(|(k, _)| k.name == "url") {
                self.push(
                    Problem::at(file, node.span, "`repo` needs a `url`", "no `url` here")
                        .with_help("add `url: <git URL or path to a repository>`"),
                );
            }
            return None;
        };
        repo.url = url;
        Some(repo)
    }
}

/// Refuses URLs git would read as an option or that run commands: a leading `-`, a host
/// starting with `-` (`ssh://-oProxyCommand=…`), the `ext::` transport, control characters.
pub(super) fn check_url(url: &str) -> Result<(), &'static str> {
    if url.starts_with('-') {
        return Err("it starts with `-`, which git would read as an option");
    }
    if url.chars().any(char::is_control) {
        return Err("it contains control characters");
    }
    if url.starts_with("ext::") || url.starts_with("fd::") {
        return Err("the `ext::`/`fd::` transports run commands");
    }
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split('/').next().unwrap_or("");
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        if host.starts_with('-') || authority.starts_with('-') {
            return Err("its host starts with `-`, which ssh would read as an option");
        }
    }
    Ok(())
}

/// A path on this machine rather than a URL (`scheme://…` or scp-like `host:path`).
pub(crate) fn is_local_path(url: &str) -> bool {
    if url.contains("://") {
        return false;
    }
    match url.split_once(':') {
        Some((host, _)) => host.contains('/'),
        None => true,
    }
}

/// `git check-ref-format --branch` rules (and a remote name's), checked without running git.
#[expect(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "git's own rule is case-sensitive"
)]
fn check_git_name(name: &str) -> Result<(), &'static str> {
    if name.starts_with('-') {
        return Err("it starts with `-`, which git would read as an option");
    }
    if name == "HEAD" {
        return Err("git refuses `HEAD` as a branch name (it names the checked-out commit)");
    }
    if name == "@" || name.contains("..") || name.contains("@{") || name.contains("//") {
        return Err("git refuses `..`, `@{`, `//` and `@` in names");
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == ' ' || "~^:?*[\\".contains(c))
    {
        return Err("git refuses spaces, control characters and any of ~ ^ : ? * [ \\ in names");
    }
    if name.ends_with('/')
        || name.ends_with('.')
        || name.ends_with(".lock")
        || name.starts_with('/')
    {
        return Err("a name cannot start with `/` or end with `/`, `.` or `.lock`");
    }
    if name.split('/').any(|part| part.starts_with('.')) {
        return Err("no part of a name can start with `.`");
    }
    Ok(())
}

/// A control character, or one that turns the direction of text (U+202A–U+202E,
/// U+2066–U+2069, U+200E/F, U+061C): shown raw on a terminal, it can fake or hide text.
pub(crate) fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
