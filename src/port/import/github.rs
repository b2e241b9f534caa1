//! Import of a GitHub Actions workflow.
//!
//! A job becomes a stage whose script is its `run:` steps in order, under `set -e`; a matrix
//! becomes one stage per combination. `actions/checkout` becomes a `git/clone` stage and
//! `actions/setup-python` a `python/venv` stage; a job made of nothing else *is* that stage
//! (so an exported pipeline comes back with its stages), other jobs share one of each. A step
//! that needs secrets, or that GitHub runs only under a condition that has no local meaning,
//! becomes a stage of its own that a plain `run` leaves out (`when: manual`), with its reason.
//! Any other `uses:` becomes such a stage that says why it cannot run here.

use std::collections::{BTreeSet, HashMap};

use crate::config::raw::{Node, Value};
use crate::error::{Invalid, Problem, SourceFile};
use crate::port::import::{
    Body, Imported, NewStage, Part, branch_test, entries, export_line, get, in_script, is_var_name,
    minutes_text, plain, scalar_text,
};

/// What the import needs to know about this machine.
pub struct Machine<'a> {
    /// The branch checked out in the output folder's repository, if it is one.
    pub branch: Option<String>,
    /// Whether a program is on PATH (`python3.11`).
    pub has_program: &'a dyn Fn(&str) -> bool,
}

/// When GitHub runs a job or a step.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cond {
    /// When everything before it succeeded: the local default.
    Success,
    Failure,
    Always,
    Never,
    /// Only when the checked-out branch is (`true`) or is not (`false`) this one.
    Branch(bool, String),
    /// A condition with no local meaning: the stage runs only when asked for.
    Manual(String),
}

fn condition(node: Option<&Node>) -> Cond {
    let Some(text) = node.and_then(scalar_text) else {
        return Cond::Success;
    };
    let mut text = text.trim();
    if let Some(inner) = text.strip_prefix("${{").and_then(|t| t.strip_suffix("}}")) {
        text = inner.trim();
    }
    match text {
        "" | "success()" | "true" => return Cond::Success,
        "failure()" => return Cond::Failure,
        "always()" | "!cancelled()" | "success() || failure()" => return Cond::Always,
        "cancelled()" | "false" => return Cond::Never,
        _ => {}
    }
    for input in ["inputs.", "github.event.inputs."] {
        if let Some(name) = text.strip_prefix(input) {
            if is_var_name(&name.replace('-', "_")) {
                return Cond::Manual(format!(
                    "GitHub runs it when the workflow is started by hand with `{name}` set"
                ));
            }
        }
    }
    if !text.contains("&&") && !text.contains("||") {
        for (op, equal) in [("==", true), ("!=", false)] {
            let Some((left, right)) = text.split_once(op) else {
                continue;
            };
            let (left, right) = (left.trim(), right.trim());
            let literal = |s: &str| {
                s.strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .map(|s| s.replace("''", "'"))
            };
            let (field, value) = match (literal(left), literal(right)) {
                (None, Some(v)) => (left, v),
                (Some(v), None) => (right, v),
                _ => break,
            };
            match field {
                "github.ref" => {
                    if let Some(branch) = value.strip_prefix("refs/heads/") {
                        return Cond::Branch(equal, branch.to_owned());
                    }
                }
                "github.ref_name" => return Cond::Branch(equal, value),
                "github.event_name" if value == "push" => {
                    return if equal { Cond::Success } else { Cond::Never };
                }
                _ => {}
            }
        }
    }
    Cond::Manual(format!("GitHub runs it only when `{text}`"))
}

/// Resolves the `${{ … }}` in `text`: matrix values and string literals become text,
/// `env.X` and `secrets.X` the variable `X` (secrets are added to `secrets`), a few `github.*`
/// values what git says. `Err` names an expression with no local value.
fn resolve(
    text: &str,
    matrix: &[(String, String)],
    secrets: &mut BTreeSet<String>,
) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_owned()));
        }
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else {
            return Err(rest[start..].to_owned());
        };
        let inner = after[..end].trim();
        parts
            .extend(value_of(inner, matrix, secrets).ok_or_else(|| format!("${{{{ {inner} }}}}"))?);
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

fn value_of(
    expression: &str,
    matrix: &[(String, String)],
    secrets: &mut BTreeSet<String>,
) -> Option<Vec<Part>> {
    if let Some(text) = expression
        .strip_prefix('\'')
        .and_then(|e| e.strip_suffix('\''))
    {
        return Some(vec![Part::Text(text.replace("''", "'"))]);
    }
    if let Some(key) = expression.strip_prefix("matrix.") {
        return matrix
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| vec![Part::Text(v.clone())]);
    }
    if let Some(name) = expression.strip_prefix("env.") {
        return is_var_name(name).then(|| vec![Part::Var(name.to_owned())]);
    }
    if let Some(name) = expression.strip_prefix("secrets.") {
        if !is_var_name(name) {
            return None;
        }
        secrets.insert(name.to_owned());
        return Some(vec![Part::Var(name.to_owned())]);
    }
    let branch = || Part::Shell("git rev-parse --abbrev-ref HEAD".into());
    Some(match expression {
        "github.sha" => vec![Part::Shell("git rev-parse HEAD".into())],
        "github.ref_name" => vec![branch()],
        "github.ref" => vec![Part::Text("refs/heads/".into()), branch()],
        "github.workspace" => vec![Part::Shell("git rev-parse --show-toplevel".into())],
        "github.event_name" => vec![Part::Text("push".into())],
        "runner.os" => vec![Part::Text("Linux".into())],
        _ => return None,
    })
}

/// A job's role when it does nothing but set up: then it becomes that built-in stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    Clone,
    Venv,
}

fn action_of(step: &Node) -> Option<String> {
    get(step, "uses").and_then(scalar_text)
}

fn is_action(step: &Node, name: &str) -> bool {
    action_of(step).is_some_and(|a| a.split('@').next() == Some(name))
}

/// A `run:` step that only installs Python packages (what a venv set-up does).
fn is_pip_install(step: &Node) -> bool {
    let Some(script) = get(step, "run").and_then(scalar_text) else {
        return false;
    };
    let script = script.trim();
    let script = script
        .strip_prefix("if [ -f requirements.txt ]; then ")
        .and_then(|s| s.strip_suffix("; fi"))
        .unwrap_or(script);
    !script.is_empty()
        && script.lines().all(|line| {
            let line = line.trim();
            line.starts_with("pip install")
                || line.starts_with("python -m pip install")
                || line.starts_with("python3 -m pip install")
        })
}

fn setup_role(steps: &[Node]) -> Option<Setup> {
    let checkout = steps
        .iter()
        .filter(|s| is_action(s, "actions/checkout"))
        .count();
    let python = steps
        .iter()
        .filter(|s| is_action(s, "actions/setup-python"))
        .count();
    let other = steps.len() - checkout - python;
    let pip = steps.iter().filter(|s| is_pip_install(s)).count();
    match (checkout, python) {
        (1, 0) if other == 0 => Some(Setup::Clone),
        (_, 1) if other == pip && steps.iter().all(|s| get(s, "if").is_none()) => Some(Setup::Venv),
        _ => None,
    }
}

/// The requirements file a pip step installs (`-r FILE`), when one is named.
fn requirements_of(steps: &[Node]) -> Option<String> {
    steps.iter().filter(|s| is_pip_install(s)).find_map(|s| {
        let script = get(s, "run").and_then(scalar_text)?;
        let words: Vec<&str> = script.split_whitespace().collect();
        words
            .windows(2)
            .find(|w| w[0] == "-r")
            .map(|w| w[1].trim_end_matches(';').to_owned())
    })
}

/// The matrix's combinations, each as (key, value) in the matrix's key order.
fn combinations(
    file: &SourceFile,
    job_id: &str,
    strategy: Option<&Node>,
    report: &mut Vec<String>,
) -> Result<Vec<Vec<(String, String)>>, Invalid> {
    let Some(matrix) = strategy.and_then(|s| get(s, "matrix")) else {
        return Ok(vec![Vec::new()]);
    };
    let Value::Map(keys) = &matrix.value else {
        return Err(Problem::at(
            file,
            matrix.span,
            format!("job `{job_id}`: a matrix made by an expression cannot be imported"),
            "not a list of values",
        )
        .with_help("write the matrix out (`python: ['3.11', '3.12']`) and import again")
        .into());
    };
    let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
    let mut include = Vec::new();
    let mut exclude = Vec::new();
    for (key, values) in keys {
        match key.name.as_str() {
            "include" => include.push(values),
            "exclude" => exclude.push(values),
            name => {
                let Value::Seq(items) = &values.value else {
                    return Err(Problem::at(
                        file,
                        values.span,
                        format!("job `{job_id}`: `matrix.{name}` must be a list of values"),
                        "not a list",
                    )
                    .with_help("write the values out as a list and import again")
                    .into());
                };
                let mut next = Vec::new();
                for combo in &combos {
                    for item in items {
                        let Some(text) = scalar_text(item) else {
                            return Err(Problem::at(
                                file,
                                item.span,
                                format!("job `{job_id}`: only plain values can be imported in `matrix.{name}`"),
                                "a list or mapping",
                            )
                            .with_help("use plain values (strings, numbers) in the matrix").into());
                        };
                        let mut c = combo.clone();
                        c.push((name.to_owned(), text));
                        next.push(c);
                    }
                }
                combos = next;
            }
        }
    }
    let pairs = |node: &Node| -> Vec<Vec<(String, String)>> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        items
            .into_iter()
            .filter_map(|item| match &item.value {
                Value::Map(entries) => Some(
                    entries
                        .iter()
                        .filter_map(|(k, v)| Some((k.name.clone(), scalar_text(v)?)))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    };
    for node in exclude {
        for rule in pairs(node) {
            combos.retain(|c| !rule.iter().all(|pair| c.contains(pair)));
        }
    }
    let base_keys: Vec<String> = combos
        .first()
        .map(|c| c.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    for node in include {
        for extra in pairs(node) {
            let matches_base = |c: &Vec<(String, String)>| {
                extra
                    .iter()
                    .filter(|(k, _)| base_keys.contains(k))
                    .all(|pair| c.contains(pair))
            };
            let original = extra.iter().any(|(k, _)| base_keys.contains(k));
            let mut extended = false;
            if original || base_keys.is_empty() {
                for combo in combos
                    .iter_mut()
                    .filter(|c| !c.is_empty() && matches_base(c))
                {
                    for (k, v) in &extra {
                        if !combo.iter().any(|(ck, _)| ck == k) {
                            combo.push((k.clone(), v.clone()));
                        }
                    }
                    extended = true;
                }
            }
            if !extended {
                combos.retain(|c| !c.is_empty());
                combos.push(extra);
            }
        }
    }
    if combos.is_empty() {
        report.push(format!(
            "job `{job_id}`: its matrix has no combination left, so it has no stage"
        ));
    }
    Ok(combos)
}

/// Reads the workflow in `file` (parsed as `root`).
pub fn import(file: &SourceFile, root: &Node, machine: &Machine<'_>) -> Result<Imported, Invalid> {
    let top = entries(file, root, "a workflow")?;
    let mut out = Imported::default();
    let mut secrets_all = BTreeSet::new();
    for (key, value) in top {
        match key.name.as_str() {
            "name" => out.name = scalar_text(value).filter(|n| !n.trim().is_empty()),
            "on" | "true" => out.report.push(
                "`on:` (the triggers): a local run starts when you run `pydeployer run`".into(),
            ),
            "env" | "jobs" | "defaults" | "permissions" | "run-name" => {}
            other => out
                .report
                .push(format!("`{other}:` of the workflow is not carried over")),
        }
    }
    // The workflow's env: plain values for every stage, the rest set by each script.
    let mut workflow_exports = Vec::new();
    if let Some(env) = get(root, "env") {
        for (key, value) in entries(file, env, "`env`")? {
            let text = scalar_text(value).unwrap_or_default();
            match resolve(&text, &[], &mut out.secrets) {
                Ok(parts) => match plain(&parts) {
                    Some(v) => {
                        out.env.insert(key.name.clone(), v);
                    }
                    None => workflow_exports.push(export_line(&key.name, &parts)),
                },
                Err(expr) => out.report.push(format!(
                    "`env.{}` of the workflow: `{expr}` has no local value; set it yourself",
                    key.name
                )),
            }
        }
    }
    let workflow_dir = get(root, "defaults")
        .and_then(|d| get(d, "run"))
        .and_then(|r| get(r, "working-directory"))
        .and_then(scalar_text);

    let Some(jobs_node) = get(root, "jobs") else {
        return Err(
            Problem::at(file, root.span, "the workflow has no `jobs:`", "here")
                .with_help("a GitHub Actions workflow lists its jobs under `jobs:`")
                .into(),
        );
    };
    let jobs = entries(file, jobs_node, "`jobs`")?;
    let ids: Vec<&str> = jobs.iter().map(|(k, _)| k.name.as_str()).collect();

    // Each job's needs, checked.
    let mut problems = Vec::new();
    let mut job_needs: HashMap<&str, Vec<String>> = HashMap::new();
    for (key, job) in jobs {
        let mut needs = Vec::new();
        if let Some(node) = get(job, "needs") {
            let items: Vec<&Node> = match &node.value {
                Value::Seq(items) => items.iter().collect(),
                _ => vec![node],
            };
            for item in items {
                let name = scalar_text(item).unwrap_or_default();
                if ids.contains(&name.as_str()) {
                    needs.push(name);
                } else {
                    problems.push(
                        Problem::at(
                            file,
                            item.span,
                            format!(
                                "job `{}` needs `{name}`, which is not a job of this workflow",
                                key.name
                            ),
                            "unknown job",
                        )
                        .with_suggestion(
                            &name,
                            ids.iter().copied(),
                            "fix the workflow's `needs:`",
                        ),
                    );
                }
            }
        }
        job_needs.insert(key.name.as_str(), needs);
    }
    if !problems.is_empty() {
        return Err(Invalid { problems });
    }
    let steps_of = |job: &Node| -> Vec<Node> {
        match get(job, "steps").map(|s| &s.value) {
            Some(Value::Seq(steps)) => steps.clone(),
            _ => Vec::new(),
        }
    };
    let roles: HashMap<&str, Option<Setup>> = jobs
        .iter()
        .map(|(k, job)| {
            let plain_job = get(job, "strategy").is_none() && get(job, "if").is_none();
            (
                k.name.as_str(),
                plain_job.then(|| setup_role(&steps_of(job))).flatten(),
            )
        })
        .collect();
    let upstream = |id: &str| -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        let mut stack: Vec<&str> = job_needs
            .get(id)
            .map(|n| n.iter().map(String::as_str).collect())
            .unwrap_or_default();
        while let Some(j) = stack.pop() {
            if seen.contains(&j) {
                continue;
            }
            seen.push(j);
            if let Some(more) = job_needs.get(j) {
                stack.extend(more.iter().map(String::as_str));
            }
        }
        seen
    };

    let mut exits: HashMap<String, Vec<String>> = HashMap::new();
    // (stage index, jobs it needs), resolved once every job has its stages.
    let mut pending: Vec<(usize, Vec<String>)> = Vec::new();
    let mut shared_checkout: Option<String> = None;
    let mut shared_venv: Option<(String, Option<String>)> = None;

    for (key, job) in jobs {
        let id = key.name.as_str();
        let steps = steps_of(job);
        for (k, _) in entries(file, job, &format!("job `{id}`"))? {
            match k.name.as_str() {
                "runs-on" | "steps" | "needs" | "if" | "env" | "strategy" | "name"
                | "timeout-minutes" | "continue-on-error" | "defaults" | "permissions" | "uses" => {
                }
                other => out
                    .report
                    .push(format!("job `{id}`: `{other}:` is not carried over")),
            }
        }
        if let Some(workflow) = get(job, "uses").and_then(scalar_text) {
            let name = out.free_name(id);
            out.report.push(format!(
                "job `{id}` calls the workflow `{workflow}`: stage `{name}` only says so (run that workflow's jobs by importing it)"
            ));
            let index = out.stages.len();
            out.stages.push(skipped_stage(
                name,
                id,
                &format!("`uses: {workflow}` (a reusable workflow) cannot run here"),
            ));
            pending.push((index, job_needs[id].clone()));
            continue;
        }
        let up = upstream(id);
        // A set-up job before this one made the workspace (or the venv) already; so did it
        // for a job run by hand, later.
        let by_hand = matches!(condition(get(job, "if")), Cond::Manual(_));
        let covered = |role: Setup| {
            up.iter().any(|j| roles[j] == Some(role))
                || (by_hand && roles.values().any(|r| *r == Some(role)))
        };
        let clone_covered = covered(Setup::Clone);
        let venv_covered = covered(Setup::Venv);

        // A job that only sets up is that built-in stage.
        if let Some(role) = roles[id] {
            let name = out.free_name(&job_stage_name(job, id, &ids));
            let mut stage = NewStage {
                name: name.clone(),
                job: id.to_owned(),
                ..NewStage::default()
            };
            match role {
                Setup::Clone => {
                    out.clone_branch
                        .get_or_insert_with(|| default_branch(machine, &mut out.notes));
                    stage.body = Body::Uses("git/clone", Vec::new());
                }
                Setup::Venv => {
                    let version = steps
                        .iter()
                        .find(|s| is_action(s, "actions/setup-python"))
                        .and_then(|s| get(s, "with"))
                        .and_then(|w| get(w, "python-version"))
                        .and_then(scalar_text);
                    let mut with = python_param(version.as_deref(), machine, &mut out.notes);
                    if let Some(file) = requirements_of(&steps) {
                        with.push(("requirements".into(), file));
                    }
                    stage.body = Body::Uses("python/venv", with);
                    let checkout = steps.iter().any(|s| is_action(s, "actions/checkout"));
                    if checkout && !clone_covered {
                        let clone =
                            shared_stage(&mut out, &mut shared_checkout, "checkout", machine);
                        stage.needs.push(clone);
                    }
                }
            }
            let index = out.stages.len();
            out.stages.push(stage);
            pending.push((index, job_needs[id].clone()));
            exits.insert(id.to_owned(), vec![name]);
            continue;
        }

        let combos = combinations(file, id, get(job, "strategy"), &mut out.report)?;
        let job_cond = condition(get(job, "if"));
        if job_cond == Cond::Never {
            out.report.push(format!(
                "job `{id}` never runs (`if:` is always false): left out"
            ));
            exits.insert(id.to_owned(), Vec::new());
            continue;
        }
        let mut job_exits = Vec::new();
        let uses_python = steps.iter().any(|s| is_action(s, "actions/setup-python"));
        for combo in &combos {
            let base = if combo.is_empty() {
                job_stage_name(job, id, &ids)
            } else {
                let values: Vec<&str> = combo.iter().map(|(_, v)| v.as_str()).collect();
                format!("{id}-{}", values.join("-"))
            };
            let name = out.free_name(&base);
            let mut secrets = BTreeSet::new();
            let mut stage = NewStage {
                name: name.clone(),
                job: id.to_owned(),
                ..NewStage::default()
            };
            // What every script of this job starts with: set -e, the environment that refers
            // to variables, the venv, the job's folder.
            let mut prefix = vec!["set -e".to_owned()];
            prefix.extend(workflow_exports.iter().cloned());
            let mut set_up_needs = Vec::new();
            let mut reasons = Vec::new();
            if let Some(env) = get(job, "env") {
                for (k, v) in entries(file, env, &format!("`jobs.{id}.env`"))? {
                    let text = scalar_text(v).unwrap_or_default();
                    match resolve(&text, combo, &mut secrets) {
                        Ok(parts) => match plain(&parts) {
                            Some(value) => {
                                stage.env.insert(k.name.clone(), value);
                            }
                            None => prefix.push(export_line(&k.name, &parts)),
                        },
                        Err(expr) => out.report.push(format!(
                            "stage `{name}`: `env.{}` uses `{expr}`, which has no local value",
                            k.name
                        )),
                    }
                }
            }
            if uses_python {
                prefix.push(". ./.venv/bin/activate".into());
            }
            if let Some(dir) = get(job, "defaults")
                .and_then(|d| get(d, "run"))
                .and_then(|r| get(r, "working-directory"))
                .and_then(scalar_text)
                .or_else(|| workflow_dir.clone())
            {
                prefix.push(format!("cd -- {}", crate::actions::quote(&dir)));
            }
            match &job_cond {
                Cond::Success | Cond::Never => {}
                Cond::Failure => stage.when = Some("on_failure"),
                Cond::Always => stage.when = Some("always"),
                Cond::Branch(equal, branch) => prefix.push(format!(
                    "if ! {}; then echo \"skipped: GitHub runs this job only {} {}\"; exit 0; fi",
                    branch_test(branch, *equal),
                    if *equal { "on" } else { "off" },
                    sh_text(branch)
                )),
                Cond::Manual(reason) => {
                    stage.when = Some("manual");
                    reasons.push(reason.clone());
                    out.report
                        .push(format!("stage `{name}` is manual: {reason}"));
                }
            }
            if let Some(minutes) = get(job, "timeout-minutes").and_then(scalar_text) {
                match minutes.parse::<f64>().ok().and_then(minutes_text) {
                    Some(t) => stage.timeout = Some(t),
                    None => out.report.push(format!(
                        "stage `{name}`: `timeout-minutes: {minutes}` is not a number of minutes"
                    )),
                }
            }
            if let Some(flag) = get(job, "continue-on-error").and_then(scalar_text) {
                match resolve(&flag, combo, &mut secrets)
                    .ok()
                    .and_then(|p| plain(&p))
                {
                    Some(v) if v == "true" => stage.allow_failure = true,
                    Some(_) => {}
                    None => out.report.push(format!(
                        "stage `{name}`: `continue-on-error: {flag}` has no local value"
                    )),
                }
            }

            let mut lines: Vec<String> = Vec::new();
            let mut split_off: Vec<NewStage> = Vec::new();
            for (n, step) in steps.iter().enumerate() {
                let step_name = get(step, "name")
                    .and_then(scalar_text)
                    .unwrap_or_else(|| format!("step {}", n + 1));
                if is_action(step, "actions/checkout") {
                    if !clone_covered {
                        set_up_needs.push(shared_stage(
                            &mut out,
                            &mut shared_checkout,
                            "checkout",
                            machine,
                        ));
                    }
                    continue;
                }
                if is_action(step, "actions/setup-python") {
                    let version = get(step, "with")
                        .and_then(|w| get(w, "python-version"))
                        .and_then(scalar_text)
                        .and_then(|v| resolve(&v, combo, &mut secrets).ok())
                        .and_then(|p| plain(&p));
                    if !venv_covered {
                        set_up_needs.push(shared_python(
                            &mut out,
                            &mut shared_venv,
                            shared_checkout.as_deref(),
                            &name,
                            version.as_deref(),
                            machine,
                        ));
                    }
                    continue;
                }
                if let Some(action) = action_of(step) {
                    let skipped = out.free_name(&format!("{name}-{}", slug(&action)));
                    let reason = format!("`uses: {action}` has no local equivalent");
                    out.report.push(format!(
                        "stage `{skipped}` (step `{step_name}` of job `{id}`) is manual: {reason}"
                    ));
                    let mut s = skipped_stage(skipped, id, &reason);
                    s.needs.push(name.clone());
                    split_off.push(s);
                    continue;
                }
                if get(step, "run").is_none() {
                    out.report.push(format!(
                        "step `{step_name}` of job `{id}` has neither `run:` nor `uses:`: left out"
                    ));
                    continue;
                }
                if let Some(shell) = get(step, "shell").and_then(scalar_text) {
                    let program = shell.split_whitespace().next().unwrap_or("");
                    if !matches!(program, "bash" | "sh") {
                        out.report.push(format!(
                            "step `{step_name}` of job `{id}` runs with `shell: {shell}`: left out (only sh and bash steps are carried over)"
                        ));
                        continue;
                    }
                }
                let Some((body, step_secrets)) = step_body(file, step, combo, &step_name)
                    ?
                    .map_err(|expr| {
                        out.report.push(format!(
                            "step `{step_name}` of job `{id}` uses `{expr}`, which has no local value: left out"
                        ));
                    })
                    .ok()
                else {
                    continue;
                };
                if get(step, "timeout-minutes").is_some() {
                    out.report.push(format!(
                        "step `{step_name}` of job `{id}`: its own `timeout-minutes` is not carried over (the job's is)"
                    ));
                }
                let cond = match condition(get(step, "if")) {
                    Cond::Success if !step_secrets.is_empty() => Cond::Manual(String::new()),
                    other => other,
                };
                match cond {
                    Cond::Success => {
                        if !split_off.is_empty() {
                            out.notes.push(format!(
                                "step `{step_name}` of job `{id}` runs in stage `{name}`, before the steps of that job that became stages of their own"
                            ));
                        }
                        lines.push(format!("# {}", one_line(&step_name)));
                        lines.push(body);
                    }
                    Cond::Never => out.report.push(format!(
                        "step `{step_name}` of job `{id}` never runs (`if:` is always false): left out"
                    )),
                    Cond::Branch(equal, branch) if step_secrets.is_empty() => {
                        lines.push(format!("# {}", one_line(&step_name)));
                        lines.push(format!(
                            "if {}; then\n{body}\nelse\n  echo \"skipped {}: GitHub runs it only {} {}\"\nfi",
                            branch_test(&branch, equal),
                            sh_text(&step_name),
                            if equal { "on" } else { "off" },
                            sh_text(&branch)
                        ));
                    }
                    other => {
                        let own = out.free_name(&format!("{name}-{}", slug(&step_name)));
                        let mut s = own_stage(&own, &step_name, id, &other, &body, step_secrets);
                        s.needs.push(name.clone());
                        s.env.clone_from(&stage.env);
                        s.timeout.clone_from(&stage.timeout);
                        if s.when == Some("manual") {
                            out.report.push(format!(
                                "stage `{own}`: {}",
                                s.description.as_deref().unwrap_or_default()
                            ));
                        }
                        split_off.push(s);
                    }
                }
            }
            secrets_all.extend(secrets.iter().cloned());
            if !reasons.is_empty() {
                stage.description =
                    Some(format!("left out of a plain run: {}", reasons.join("; ")));
            }
            set_up_needs.dedup();
            let has_main = !lines.is_empty();
            if has_main {
                let mut script = prefix.clone();
                script.extend(lines);
                stage.needs.clone_from(&set_up_needs);
                stage.secrets.clone_from(&secrets);
                stage.body = Body::Run(script.join("\n") + "\n");
                pending.push((out.stages.len(), job_needs[id].clone()));
                out.stages.push(stage);
                job_exits.push(name.clone());
            } else {
                job_exits.extend(set_up_needs.iter().cloned());
            }
            for mut s in split_off {
                if let Body::Run(own) = &s.body {
                    let mut script = prefix.clone();
                    script.push(own.clone());
                    s.body = Body::Run(script.join("\n") + "\n");
                }
                s.secrets.extend(secrets.iter().cloned());
                secrets_all.extend(s.secrets.iter().cloned());
                if !has_main {
                    s.needs.clone_from(&set_up_needs);
                    pending.push((out.stages.len(), job_needs[id].clone()));
                }
                out.stages.push(s);
            }
        }
        exits.insert(id.to_owned(), job_exits);
    }

    // Needs on jobs become needs on their stages (a job with no stage passes its own needs on).
    for (index, needed_jobs) in pending {
        let mut needs = out.stages[index].needs.clone();
        let mut stack: Vec<String> = needed_jobs.into_iter().rev().collect();
        let mut seen = BTreeSet::new();
        while let Some(job) = stack.pop() {
            if !seen.insert(job.clone()) {
                continue;
            }
            match exits.get(&job) {
                Some(stages) if !stages.is_empty() => needs.extend(stages.iter().cloned()),
                _ => stack.extend(job_needs.get(job.as_str()).cloned().unwrap_or_default()),
            }
        }
        let mut unique = Vec::new();
        for need in needs {
            if !unique.contains(&need) && need != out.stages[index].name {
                unique.push(need);
            }
        }
        out.stages[index].needs = unique;
    }
    out.drop_default_post_needs();
    secrets_all.extend(out.secrets.iter().cloned());
    if !secrets_all.is_empty() {
        out.notes.push(format!(
            "secrets become environment variables: export {} before running the stages that need them",
            secrets_all.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(out)
}

/// A `run:` step as script text: in a subshell of its own when it has its own folder or
/// environment (as each GitHub step is a new shell), and the secrets it reads. `Err` names an
/// expression with no local value.
fn step_body(
    file: &SourceFile,
    step: &Node,
    combo: &[(String, String)],
    step_name: &str,
) -> Result<Result<(String, BTreeSet<String>), String>, Invalid> {
    let mut secrets = BTreeSet::new();
    let mut block = Vec::new();
    if let Some(dir) = get(step, "working-directory").and_then(scalar_text) {
        block.push(format!("cd -- {}", crate::actions::quote(&dir)));
    }
    if let Some(env) = get(step, "env") {
        for (k, v) in entries(file, env, "a step's `env`")? {
            let text = scalar_text(v).unwrap_or_default();
            match resolve(&text, combo, &mut secrets) {
                Ok(parts) => block.push(export_line(&k.name, &parts)),
                Err(expr) => return Ok(Err(expr)),
            }
        }
    }
    let run = get(step, "run").and_then(scalar_text).unwrap_or_default();
    match resolve(&run, combo, &mut secrets) {
        Ok(parts) => block.push(in_script(&parts).trim_end().to_owned()),
        Err(expr) => return Ok(Err(expr)),
    }
    let own_shell = block.len() > 1;
    let mut body = if own_shell {
        format!("(\n{}\n)", block.join("\n"))
    } else {
        block.join("\n")
    };
    if get(step, "continue-on-error")
        .and_then(scalar_text)
        .as_deref()
        == Some("true")
    {
        if !own_shell {
            body = format!("(\n{body}\n)");
        }
        body = format!(
            "{body} || echo \"step {} failed; continue-on-error lets the job go on\"",
            sh_text(step_name)
        );
    }
    Ok(Ok((body, secrets)))
}

/// A step that becomes a stage of its own: it reacts to the job's failure, or a plain run
/// leaves it out (it needs secrets, or runs under a condition with no local meaning).
fn own_stage(
    name: &str,
    step_name: &str,
    job: &str,
    cond: &Cond,
    body: &str,
    secrets: BTreeSet<String>,
) -> NewStage {
    let mut why = Vec::new();
    let mut when = "manual";
    let mut script = format!("# {}\n", one_line(step_name));
    match cond {
        Cond::Failure if secrets.is_empty() => when = "on_failure",
        Cond::Always if secrets.is_empty() => when = "always",
        Cond::Failure => why.push("GitHub runs it when a step before it failed".to_owned()),
        Cond::Always => why.push("GitHub runs it whatever happened before".to_owned()),
        Cond::Branch(equal, branch) => {
            let side = if *equal { "on" } else { "off" };
            why.push(format!("GitHub runs it only {side} {branch}"));
            script.push_str(&format!(
                "if ! {}; then echo \"skipped: GitHub runs it only {side} {}\"; exit 0; fi\n",
                branch_test(branch, *equal),
                sh_text(branch)
            ));
        }
        Cond::Manual(reason) if !reason.is_empty() => why.push(reason.clone()),
        _ => {}
    }
    script.push_str(body);
    if !secrets.is_empty() {
        why.push(format!(
            "it needs the secrets {}",
            secrets.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let description = (when == "manual").then(|| {
        format!(
            "step `{step_name}` of job `{job}`, left out of a plain run: {}; `pydeployer run {name}` runs it",
            why.join("; ")
        )
    });
    NewStage {
        name: name.to_owned(),
        job: job.to_owned(),
        description,
        body: Body::Run(script),
        when: Some(when),
        secrets,
        ..NewStage::default()
    }
}

/// The `python/venv` stage jobs share, made on first use with the first version asked for;
/// a later job asking for another version is reported.
fn shared_python(
    out: &mut Imported,
    slot: &mut Option<(String, Option<String>)>,
    clone: Option<&str>,
    stage: &str,
    version: Option<&str>,
    machine: &Machine<'_>,
) -> String {
    if let Some((name, first)) = slot {
        if let (Some(first), Some(asked)) = (first.as_deref(), version) {
            if first != asked {
                out.report.push(format!(
                    "stage `{stage}`: Python {asked} asked for, but the stages share one .venv, made with Python {first}"
                ));
            }
        }
        return name.clone();
    }
    let name = out.free_name("setup-python");
    let with = python_param(version, machine, &mut out.notes);
    out.stages.push(NewStage {
        name: name.clone(),
        job: "setup-python".into(),
        body: Body::Uses("python/venv", with),
        needs: clone.map(str::to_owned).into_iter().collect(),
        ..NewStage::default()
    });
    *slot = Some((name.clone(), version.map(str::to_owned)));
    name
}

/// A job's stage name: its `name:` when that is a valid stage name used by no other job,
/// else its id.
fn job_stage_name(job: &Node, id: &str, ids: &[&str]) -> String {
    get(job, "name")
        .and_then(scalar_text)
        .filter(|n| {
            crate::pipeline::StageName::parse(n).is_ok() && (n == id || !ids.contains(&n.as_str()))
        })
        .unwrap_or_else(|| id.to_owned())
}

/// The `checkout` (git/clone) stage jobs share, made on first use.
fn shared_stage(
    out: &mut Imported,
    slot: &mut Option<String>,
    wanted: &str,
    machine: &Machine<'_>,
) -> String {
    if let Some(name) = slot {
        return name.clone();
    }
    let name = out.free_name(wanted);
    out.clone_branch
        .get_or_insert_with(|| default_branch(machine, &mut out.notes));
    out.stages.push(NewStage {
        name: name.clone(),
        job: wanted.to_owned(),
        body: Body::Uses("git/clone", Vec::new()),
        ..NewStage::default()
    });
    *slot = Some(name.clone());
    name
}

fn default_branch(machine: &Machine<'_>, notes: &mut Vec<String>) -> String {
    if let Some(branch) = &machine.branch {
        return branch.clone();
    }
    notes.push(
        "the output folder is not a git repository with a commit: `git/clone` clones its branch `main` once it is one"
            .into(),
    );
    "main".into()
}

/// `with: {python: python3.11}` when that interpreter is here; nothing (python3) otherwise.
fn python_param(
    version: Option<&str>,
    machine: &Machine<'_>,
    notes: &mut Vec<String>,
) -> Vec<(String, String)> {
    let Some(version) = version.filter(|v| !v.is_empty()) else {
        return Vec::new();
    };
    let plain = version.trim_end_matches(".x");
    if !plain.bytes().all(|b| b.is_ascii_digit() || b == b'.') || plain.is_empty() {
        notes.push(format!(
            "Python `{version}` is not a version number: the venv uses python3"
        ));
        return Vec::new();
    }
    let program = format!("python{plain}");
    if (machine.has_program)(&program) {
        vec![("python".into(), program)]
    } else {
        notes.push(format!("{program} is not on PATH: the venv uses python3"));
        Vec::new()
    }
}

/// A stage that stands for something that cannot run here: manual, and failing with why.
fn skipped_stage(name: String, job: &str, reason: &str) -> NewStage {
    NewStage {
        description: Some(format!("skipped: {reason}")),
        body: Body::Run(format!(
            "echo \"{}: nothing to run here\" >&2\nexit 1\n",
            sh_text(reason)
        )),
        name,
        job: job.to_owned(),
        when: Some("manual"),
        ..NewStage::default()
    }
}

/// `text` safe inside double quotes in a script.
fn sh_text(text: &str) -> String {
    let mut out = String::new();
    for c in one_line(text).chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A short name part from a step's name or an action (`Deploy to PyPI` → `deploy-to-pypi`).
fn slug(text: &str) -> String {
    let name = text.rsplit('/').next().unwrap_or(text);
    let name = name.split('@').next().unwrap_or(name);
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    let mut short: String = slug.split('-').take(4).collect::<Vec<_>>().join("-");
    if short.is_empty() {
        short = "step".into();
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(text: &str) -> Node {
        serde_saphyr::from_str(text).unwrap()
    }

    #[test]
    fn simple_conditions_are_understood() {
        let cond =
            |text: &str| condition(Some(&node(&format!("c: {text}"))).and_then(|n| get(n, "c")));
        assert_eq!(cond("failure()"), Cond::Failure);
        assert_eq!(cond("${{ always() }}"), Cond::Always);
        assert_eq!(
            cond("github.ref == 'refs/heads/main'"),
            Cond::Branch(true, "main".into())
        );
        assert_eq!(
            cond("\"'main' != github.ref_name\""),
            Cond::Branch(false, "main".into())
        );
        assert_eq!(cond("github.event_name == 'push'"), Cond::Success);
        assert!(matches!(cond("inputs.deploy"), Cond::Manual(_)));
        assert!(matches!(
            cond("github.actor == 'me' && success()"),
            Cond::Manual(_)
        ));
    }

    #[test]
    fn expressions_resolve_to_values_or_variables() {
        let mut secrets = BTreeSet::new();
        let matrix = vec![("py".to_owned(), "3.11".to_owned())];
        let parts = resolve(
            "v${{ matrix.py }} ${{ env.HOME }} ${{ secrets.TOKEN }} ${{ '${{' }} x }}",
            &matrix,
            &mut secrets,
        )
        .unwrap();
        assert_eq!(in_script(&parts), "v3.11 ${HOME} ${TOKEN} ${{ x }}");
        assert!(secrets.contains("TOKEN"));
        assert_eq!(
            resolve(
                "${{ github.event.head_commit.message }}",
                &matrix,
                &mut secrets
            ),
            Err("${{ github.event.head_commit.message }}".into())
        );
    }

    #[test]
    fn slugs_are_short() {
        assert_eq!(slug("Deploy (example to PyPI)"), "deploy-example-to-pypi");
        assert_eq!(slug("docker/build-push-action@v5"), "build-push-action");
    }
}
