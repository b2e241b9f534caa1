//! Import of a `.gitlab-ci.yml`.
//!
//! A job becomes a stage: `before_script` and `script` as one script under `set -e`,
//! `after_script` a stage of its own that runs whatever happened (`when: always`). A job
//! without `needs` waits for every job of the earlier GitLab stages, as GitLab runs it.
//! `parallel: matrix:` becomes one stage per combination, with the values as its
//! environment. GitLab clones by itself; here the stages run in the project folder.
//! `variables:` are GitLab-expanded: `$$` is a `$`, and a value that names other variables is
//! set by the script instead.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::raw::{Node, Value};
use crate::error::{Invalid, Problem, SourceFile};
use crate::port::import::{
    Body, Imported, NewStage, Part, entries, export_line, get, is_var_name, plain, scalar_text,
};

use crate::port::gitlab::GLOBAL_KEYS as GLOBAL;

/// GitLab's stages when the file lists none.
const DEFAULT_STAGES: &[&str] = &[".pre", "build", "test", "deploy", ".post"];

/// Keys of a job that carry over.
const CARRIED: &[&str] = &[
    "script",
    "before_script",
    "after_script",
    "stage",
    "needs",
    "variables",
    "when",
    "allow_failure",
    "timeout",
    "retry",
    "parallel",
    "image",
    "tags",
    "interruptible",
];

/// A `variables:` value: `$$` is a `$`; `$NAME` and `${NAME}` refer to other variables.
fn variable_parts(value: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = value.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '$' {
            text.push(c);
            continue;
        }
        let rest = &value[i + 1..];
        if rest.starts_with('$') {
            text.push('$');
            chars.next();
            continue;
        }
        let (name, skip) = if let Some(inner) = rest.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], end)
        };
        if is_var_name(name) {
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Var(name.to_owned()));
            for _ in 0..skip {
                chars.next();
            }
        } else {
            text.push('$');
        }
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    parts
}

/// The lines of a `script`-like key: a string or a list (nested lists are flattened).
fn lines(node: Option<&Node>) -> Vec<String> {
    fn walk(node: &Node, out: &mut Vec<String>) {
        match &node.value {
            Value::Seq(items) => items.iter().for_each(|i| walk(i, out)),
            _ => out.extend(scalar_text(node)),
        }
    }
    let mut out = Vec::new();
    if let Some(node) = node {
        walk(node, &mut out);
    }
    out
}

/// Reads the `.gitlab-ci.yml` in `file` (parsed as `root`).
pub fn import(file: &SourceFile, root: &Node) -> Result<Imported, Invalid> {
    let top = entries(file, root, "a .gitlab-ci.yml")?;
    let mut out = Imported::default();
    out.notes.push(
        "GitLab clones the repository by itself; here the stages run in the project folder".into(),
    );
    let default = get(root, "default");
    let mut global_exports = Vec::new();
    if let Some(vars) = get(root, "variables") {
        for (k, v) in entries(file, vars, "`variables`")? {
            let value = get(v, "value").unwrap_or(v);
            let parts = variable_parts(&scalar_text(value).unwrap_or_default());
            match plain(&parts) {
                Some(text) => {
                    out.env.insert(k.name.clone(), text);
                }
                None => global_exports.push(export_line(&k.name, &parts)),
            }
        }
    }
    let stage_order: Vec<String> = match get(root, "stages") {
        Some(node) => lines(Some(node)),
        None => DEFAULT_STAGES.iter().map(|s| (*s).to_owned()).collect(),
    };
    for (key, _) in top {
        match key.name.as_str() {
            "workflow" => {
                if let Some(name) = get(root, "workflow")
                    .and_then(|w| get(w, "name"))
                    .and_then(scalar_text)
                {
                    out.name = Some(name);
                }
                if get(root, "workflow")
                    .and_then(|w| get(w, "rules"))
                    .is_some()
                {
                    out.report
                        .push("`workflow: rules:` (when a pipeline runs): a local run starts when you run it".into());
                }
            }
            "include" | "image" | "services" | "cache" | "spec" => out
                .report
                .push(format!("`{}:` is not carried over", key.name)),
            _ => {}
        }
    }
    let before_default = lines(
        default
            .and_then(|d| get(d, "before_script"))
            .or(get(root, "before_script")),
    );
    let after_default = lines(
        default
            .and_then(|d| get(d, "after_script"))
            .or(get(root, "after_script")),
    );

    let jobs: Vec<(&str, &Node)> = top
        .iter()
        .filter(|(k, _)| !GLOBAL.contains(&k.name.as_str()) && !k.name.starts_with('.'))
        .map(|(k, v)| (k.name.as_str(), v))
        .collect();
    let ids: Vec<&str> = jobs.iter().map(|(id, _)| *id).collect();
    let stage_of = |job: &Node| {
        get(job, "stage")
            .and_then(scalar_text)
            .unwrap_or_else(|| "test".into())
    };
    let rank = |stage: &str| {
        stage_order
            .iter()
            .position(|s| s == stage)
            .unwrap_or(usize::MAX)
    };

    let mut problems = Vec::new();
    let mut job_needs: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (id, job) in &jobs {
        entries(file, job, &format!("job `{id}`"))?;
        let needs = match get(job, "needs") {
            Some(node) => {
                let mut found = Vec::new();
                let items: Vec<&Node> = match &node.value {
                    Value::Seq(items) => items.iter().collect(),
                    _ => vec![node],
                };
                for item in items {
                    let name = get(item, "job")
                        .and_then(scalar_text)
                        .or_else(|| scalar_text(item))
                        .unwrap_or_default();
                    if ids.contains(&name.as_str()) {
                        found.push(name);
                    } else {
                        problems.push(
                            Problem::at(
                                file,
                                item.span,
                                format!(
                                    "job `{id}` needs `{name}`, which is not a job of this file"
                                ),
                                "unknown job",
                            )
                            .with_suggestion(
                                &name,
                                ids.iter().copied(),
                                "fix the job's `needs:`",
                            ),
                        );
                    }
                }
                found
            }
            // Without `needs`, a job waits for every job of the earlier stages.
            None => {
                let mine = rank(&stage_of(job));
                jobs.iter()
                    .filter(|(_, other)| rank(&stage_of(other)) < mine)
                    .map(|(other, _)| (*other).to_owned())
                    .collect()
            }
        };
        job_needs.insert(id, needs);
    }
    if !problems.is_empty() {
        return Err(Invalid { problems });
    }

    let mut exits: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut pending = Vec::new();
    // GitLab runs jobs stage by stage: write them in that order (the file's order within one).
    let mut ordered = jobs.clone();
    ordered.sort_by_key(|(_, job)| rank(&stage_of(job)));
    for (id, job) in ordered {
        for (k, _) in entries(file, job, &format!("job `{id}`"))? {
            if !CARRIED.contains(&k.name.as_str()) {
                out.report
                    .push(format!("job `{id}`: `{}:` is not carried over", k.name));
            }
        }
        if get(job, "image").is_some() {
            out.report.push(format!(
                "job `{id}`: `image:` is not used: it runs on this machine, not in a container"
            ));
        }
        let when = get(job, "when").and_then(scalar_text);
        let when = match when.as_deref() {
            None | Some("on_success" | "delayed") => None,
            Some("on_failure") => Some("on_failure"),
            Some("always") => Some("always"),
            Some("manual") => Some("manual"),
            Some("never") => {
                out.report
                    .push(format!("job `{id}` never runs (`when: never`): left out"));
                exits.insert(id, Vec::new());
                continue;
            }
            Some(other) => {
                out.report.push(format!(
                    "job `{id}`: `when: {other}` is not known: it runs as on_success"
                ));
                None
            }
        };
        let combos = matrix(file, id, get(job, "parallel"), &mut out.report)?;
        let mut job_exits = Vec::new();
        for combo in combos {
            let base = if combo.is_empty() {
                id.to_owned()
            } else {
                let values: Vec<&str> = combo.iter().map(|(_, v)| v.as_str()).collect();
                format!("{id}-{}", values.join("-"))
            };
            let name = out.free_name(&base);
            let mut stage = NewStage {
                name: name.clone(),
                job: id.to_owned(),
                when,
                ..NewStage::default()
            };
            let mut script = vec!["set -e".to_owned()];
            script.extend(global_exports.iter().cloned());
            for (k, v) in &combo {
                stage.env.insert(k.clone(), v.clone());
            }
            if let Some(vars) = get(job, "variables") {
                for (k, v) in entries(file, vars, &format!("`{id}.variables`"))? {
                    let value = get(v, "value").unwrap_or(v);
                    let parts = variable_parts(&scalar_text(value).unwrap_or_default());
                    match plain(&parts) {
                        Some(text) => {
                            stage.env.insert(k.name.clone(), text);
                        }
                        None => script.push(export_line(&k.name, &parts)),
                    }
                }
            }
            let before = if get(job, "before_script").is_some() {
                lines(get(job, "before_script"))
            } else {
                before_default.clone()
            };
            script.extend(before);
            script.extend(lines(get(job, "script")));
            if get(job, "script").is_none() {
                out.report.push(format!("job `{id}` has no `script:`"));
            }
            stage.body = Body::Run(script.join("\n") + "\n");
            if let Some(timeout) = get(job, "timeout").and_then(scalar_text) {
                match humantime::parse_duration(&timeout.replace(" and ", " ")) {
                    Ok(d) => stage.timeout = Some(format!("{}s", d.as_secs())),
                    Err(_) => out.report.push(format!(
                        "job `{id}`: `timeout: {timeout}` is not understood"
                    )),
                }
            }
            if let Some(retry) = get(job, "retry") {
                let max = get(retry, "max").or(Some(retry)).and_then(scalar_text);
                stage.retries = max.and_then(|m| m.parse().ok()).unwrap_or(0);
            }
            stage.allow_failure = match get(job, "allow_failure") {
                Some(node) => !matches!(node.value, Value::Bool(false)),
                None => false,
            };
            let after = if get(job, "after_script").is_some() {
                lines(get(job, "after_script"))
            } else {
                after_default.clone()
            };
            pending.push((out.stages.len(), job_needs[id].clone()));
            out.stages.push(stage);
            if !after.is_empty() {
                let after_name = out.free_name(&format!("{name}-after"));
                let mut script = vec!["set -e".to_owned()];
                script.extend(after);
                out.stages.push(NewStage {
                    name: after_name,
                    job: id.to_owned(),
                    description: Some(format!("after_script of job `{id}`")),
                    body: Body::Run(script.join("\n") + "\n"),
                    needs: vec![name.clone()],
                    when: Some("always"),
                    ..NewStage::default()
                });
            }
            if when != Some("manual") {
                job_exits.push(name);
            }
        }
        exits.insert(id, job_exits);
    }
    for (index, needed) in pending {
        let mut needs = Vec::new();
        let mut stack: Vec<String> = needed.into_iter().rev().collect();
        let mut seen = BTreeSet::new();
        while let Some(job) = stack.pop() {
            if !seen.insert(job.clone()) {
                continue;
            }
            match exits.get(job.as_str()) {
                Some(stages) if !stages.is_empty() => needs.extend(stages.iter().cloned()),
                _ => stack.extend(job_needs.get(job.as_str()).cloned().unwrap_or_default()),
            }
        }
        needs.dedup();
        out.stages[index].needs = needs;
    }
    out.drop_default_post_needs();
    Ok(out)
}

/// `parallel: matrix:` as combinations of (name, value).
fn matrix(
    file: &SourceFile,
    id: &str,
    parallel: Option<&Node>,
    report: &mut Vec<String>,
) -> Result<Vec<Vec<(String, String)>>, Invalid> {
    let Some(parallel) = parallel else {
        return Ok(vec![Vec::new()]);
    };
    let Some(rows) = get(parallel, "matrix") else {
        report.push(format!("job `{id}`: `parallel: N` runs it once here"));
        return Ok(vec![Vec::new()]);
    };
    let Value::Seq(rows) = &rows.value else {
        return Err(Problem::at(
            file,
            rows.span,
            format!("job `{id}`: `parallel: matrix:` must be a list"),
            "not a list",
        )
        .with_help("GitLab's matrix is a list of mappings of variables to values")
        .into());
    };
    let mut all = Vec::new();
    for row in rows {
        let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for (k, v) in entries(file, row, "a matrix row")? {
            let values: Vec<String> = match &v.value {
                Value::Seq(items) => items.iter().filter_map(scalar_text).collect(),
                _ => scalar_text(v).into_iter().collect(),
            };
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |value| {
                        let mut c = c.clone();
                        c.push((k.name.clone(), value.clone()));
                        c
                    })
                })
                .collect();
        }
        all.extend(combos);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_unescape_dollars_and_find_references() {
        assert_eq!(variable_parts("a $$b"), vec![Part::Text("a $b".into())]);
        assert_eq!(
            variable_parts("$HOME/x${Y}z"),
            vec![
                Part::Var("HOME".into()),
                Part::Text("/x".into()),
                Part::Var("Y".into()),
                Part::Text("z".into())
            ]
        );
        assert_eq!(
            variable_parts("cost: 5$"),
            vec![Part::Text("cost: 5$".into())]
        );
    }
}
