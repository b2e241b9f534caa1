//! `environments:`: where deploy stages push (a git URL and branch), what must be live
//! elsewhere first (`requires`), whether a person says yes (`approval`), and the health check
//! run after each push.
//!
//! Each environment is checked where it is written; what needs the whole pipeline (a stage's
//! `with: { environment }` naming one that is not declared, `requires` naming an unknown
//! environment or going round in a circle) is checked by [`Checker::environment_links`] once
//! every file is read.

use std::collections::BTreeMap;

use crate::config::raw::{Node, Span, Value};
use crate::config::settings::{check_url, is_local_path};
use crate::config::validate::{Checker, ENVIRONMENT_KEYS, HEALTH_KEYS};
use crate::error::{Problem, SourceFile};
use crate::pipeline::{
    DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_TIMEOUT, Environment, Health, HealthCheck, StageName,
};

/// Where an environment's `requires:` is written, for the checks across environments.
pub(super) struct Declared<'f> {
    pub(super) file: &'f SourceFile,
    pub(super) requires_span: Option<Span>,
}

impl Checker<'_> {
    pub(super) fn environments<'f>(
        &mut self,
        file: &'f SourceFile,
        node: &Node,
    ) -> Vec<(Environment, Declared<'f>)> {
        let mut out = Vec::new();
        let Some(entries) = self.map(file, node, "`environments`") else {
            return out;
        };
        self.repeated_keys(file, entries, "environment");
        for (key, value) in entries {
            if let Err(why) = StageName::parse(&key.name) {
                self.push(
                    Problem::at(
                        file,
                        key.span,
                        format!("invalid environment name `{}`", key.name),
                        why.replace("stage name", "name"),
                    )
                    .with_help("use letters, digits, `-`, `_` and `.`, e.g. `staging`"),
                );
                continue;
            }
            if let Some((environment, requires_span)) = self.environment(file, &key.name, value) {
                out.push((
                    environment,
                    Declared {
                        file,
                        requires_span,
                    },
                ));
            }
        }
        out
    }

    fn environment(
        &mut self,
        file: &SourceFile,
        name: &str,
        node: &Node,
    ) -> Option<(Environment, Option<Span>)> {
        let what = format!("environment `{name}`");
        let entries = self.map(file, node, &what)?;
        self.unknown_keys(file, entries, &ENVIRONMENT_KEYS, "environment key");
        let mut environment = Environment {
            name: name.to_owned(),
            url: String::new(),
            branch: "master".into(),
            requires: None,
            approval: false,
            health: None,
        };
        let mut requires_span = None;
        for (key, value) in entries {
            let what = format!("`environments.{name}.{}`", key.name);
            match key.name.as_str() {
                "url" => {
                    let example = "`url: ssh://deploy@vps.example.org/srv/app.git`";
                    let Some(url) = self.non_empty_string(file, value, &what, example) else {
                        continue;
                    };
                    if let Err(why) = check_url(&url) {
                        self.push(
                            Problem::at(file, value.span, format!("refusing {what} {url:?}: {why}"), "unsafe URL")
                                .with_help("give a plain git URL (https://, ssh://, git@host:path) or a path to a repository"),
                        );
                    } else if is_local_path(&url) {
                        environment.url = self.root.join(url).display().to_string();
                    } else {
                        environment.url = url;
                    }
                }
                "branch" => {
                    if let Some(branch) = self
                        .non_empty_string(file, value, &what, "`branch: master`")
                        .filter(|b| self.git_name(file, value.span, "branch", b))
                    {
                        environment.branch = branch;
                    }
                }
                "requires" => {
                    environment.requires =
                        self.non_empty_string(file, value, &what, "`requires: staging`");
                    requires_span = Some(value.span);
                }
                "approval" => {
                    environment.approval = self.boolean(file, value, &what).unwrap_or(false);
                }
                "health" => environment.health = self.health(file, name, value),
                _ => {}
            }
        }
        if !entries.iter().any(|(k, _)| k.name == "url") {
            self.push(
                Problem::at(file, node.span, format!("{what} needs a `url`"), "no `url` here")
                    .with_help("add `url:` with the git URL to push to (a bare repository with a post-receive hook, Dokku, Heroku, ssh://…)"),
            );
        }
        // Kept even with a problem (reported; the pipeline is refused anyway), so that the
        // checks across environments still see it.
        Some((environment, requires_span))
    }

    fn health(&mut self, file: &SourceFile, env: &str, node: &Node) -> Option<Health> {
        let prefix = format!("environments.{env}.health");
        let entries = self.map(file, node, &format!("`{prefix}`"))?;
        self.unknown_keys(file, entries, &HEALTH_KEYS, "health check key");
        let mut url = None;
        let mut run = None;
        let mut expect = 200;
        let mut contains = None;
        let mut health = Health {
            check: HealthCheck::Run(String::new()),
            timeout: DEFAULT_HEALTH_TIMEOUT,
            interval: DEFAULT_HEALTH_INTERVAL,
        };
        for (key, value) in entries {
            let what = format!("`{prefix}.{}`", key.name);
            match key.name.as_str() {
                "url" => {
                    let Some(text) = self.non_empty_string(
                        file,
                        value,
                        &what,
                        "`url: http://127.0.0.1:8001/health`",
                    ) else {
                        continue;
                    };
                    match check_http_url(&text) {
                        Ok(()) => url = Some((text, value.span)),
                        Err(why) => self.push(
                            Problem::at(
                                file,
                                value.span,
                                format!("{what} must be an http:// or https:// URL: {why}"),
                                "not an http(s) URL",
                            )
                            .with_help("for example: `url: \"http://127.0.0.1:8001/health\"`; to check some other way, use `run: <command>`"),
                        ),
                    }
                }
                "run" => {
                    run = self
                        .non_empty_string(file, value, &what, "`run: ./smoke.sh production`")
                        .map(|r| (r, value.span));
                }
                "expect" => {
                    if let Some(code) =
                        self.integer(file, value, &what, (100, 599), "`expect: 200`")
                    {
                        expect = u16::try_from(code).unwrap_or(200);
                    }
                }
                "contains" => {
                    contains = self.non_empty_string(file, value, &what, "`contains: ok`");
                }
                "timeout" => {
                    if let Some(timeout) = self.duration(file, value, &what, "`timeout: 60s`") {
                        health.timeout = timeout;
                    }
                }
                "interval" => {
                    if let Some(interval) = self.duration(file, value, &what, "`interval: 2s`") {
                        health.interval = interval;
                    }
                }
                _ => {}
            }
        }
        let has = |name: &str| entries.iter().find(|(k, _)| k.name == name);
        match (url, run) {
            (Some((url, _)), None) => {
                health.check = HealthCheck::Http {
                    url,
                    expect,
                    contains,
                };
            }
            (None, Some((run, _))) => {
                for key in ["expect", "contains"] {
                    if let Some((k, _)) = has(key) {
                        self.push(
                            Problem::at(
                                file,
                                k.span,
                                format!("`{prefix}.{key}` is for an HTTP check (`url:`)"),
                                "not with `run`",
                            )
                            .with_help("a `run:` check passes when the command exits 0"),
                        );
                    }
                }
                health.check = HealthCheck::Run(run);
            }
            (Some((_, url_span)), Some((_, run_span))) => {
                self.push(
                    Problem::at(
                        file,
                        url_span,
                        format!("`{prefix}` has both `url` and `run`"),
                        "`url` here",
                    )
                    .with_label(run_span, "`run` here")
                    .with_help(
                        "a health check is an HTTP GET (`url:`) or a command (`run:`), not both",
                    ),
                );
                return None;
            }
            (None, None) => {
                if has("url").is_none() && has("run").is_none() {
                    self.push(
                        Problem::at(file, node.span, format!("`{prefix}` needs `url` or `run`"), "nothing to check")
                            .with_help("for example: `health: { url: \"http://127.0.0.1:8001/health\", expect: 200 }` or `health: { run: ./smoke.sh }`"),
                    );
                }
                return None;
            }
        }
        Some(health)
    }

    /// What needs every file: `with: { environment }` of each deploy stage names a declared
    /// environment, and `requires:` names one and never leads back to where it started.
    pub(super) fn environment_links(
        &mut self,
        environments: &[(Environment, Declared<'_>)],
        stages: &[(String, &SourceFile, Span)],
    ) {
        let names: Vec<&str> = environments.iter().map(|(e, _)| e.name.as_str()).collect();
        for (name, file, span) in stages {
            if !names.contains(&name.as_str()) {
                let otherwise = if names.is_empty() {
                    "declare it under `environments:` in pipeline.yml".to_owned()
                } else {
                    format!("environments: {}", names.join(", "))
                };
                self.push(
                    Problem::at(
                        file,
                        *span,
                        format!("unknown environment `{name}`"),
                        "not in `environments:`",
                    )
                    .with_suggestion(name, names.iter().copied(), otherwise),
                );
            }
        }
        let by_name: BTreeMap<&str, &(Environment, Declared<'_>)> = environments
            .iter()
            .map(|pair| (pair.0.name.as_str(), pair))
            .collect();
        for (environment, declared) in environments {
            let (Some(requires), Some(span)) = (&environment.requires, declared.requires_span)
            else {
                continue;
            };
            if !by_name.contains_key(requires.as_str()) {
                self.push(
                    Problem::at(
                        declared.file,
                        span,
                        format!("unknown environment `{requires}` in `requires`"),
                        "not in `environments:`",
                    )
                    .with_suggestion(
                        requires,
                        names.iter().copied(),
                        format!("environments: {}", names.join(", ")),
                    ),
                );
                continue;
            }
            // Follow `requires` from here; coming back here is a cycle (reported once, at
            // the environment with the smallest name in it).
            let mut path = vec![environment.name.as_str()];
            let mut at = requires.as_str();
            while let Some((next, _)) = by_name.get(at) {
                if at == environment.name {
                    if path.iter().min() == Some(&environment.name.as_str()) {
                        let mut problem = Problem::at(
                            declared.file,
                            span,
                            format!(
                                "environments require each other in a circle: {} → {}",
                                path.join(" → "),
                                environment.name
                            ),
                            "closes the circle",
                        )
                        .with_help("`requires:` names the environment a commit must be live and healthy on first; one of them must require none");
                        for other in &path[1..] {
                            let (_, d) = by_name[other];
                            if let Some(s) = d.requires_span {
                                problem = problem.with_related(Problem::at(
                                    d.file,
                                    s,
                                    format!("`{other}` requires the next one here"),
                                    "part of the circle",
                                ));
                            }
                        }
                        self.push(problem);
                    }
                    break;
                }
                if path.contains(&at) {
                    break; // a circle that does not pass through here: reported from there
                }
                path.push(at);
                match &next.requires {
                    Some(r) => at = r.as_str(),
                    None => break,
                }
            }
        }
    }
}

/// `http://` or `https://`, a host, no spaces or control characters.
fn check_http_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("it does not start with `http://` or `https://`")?;
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("it holds spaces or control characters");
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err("it has no host");
    }
    Ok(())
}

/// The `with: { environment }` value of a `git/push` stage, with its place, when given.
pub(super) fn environment_span(with: Option<&Node>) -> Option<Span> {
    let Value::Map(entries) = &with?.value else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| k.name == "environment")
        .map(|(_, v)| v.span)
}
