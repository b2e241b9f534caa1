//! Raw YAML trees → a [`Pipeline`], collecting every problem before giving up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::load::Parsed;
use crate::config::raw::{Key, Node, Span, Value};
use crate::error::{Problem, SourceFile};
use crate::pipeline::{
    Action, Builtin, LogSettings, Param, Pipeline, Repo, RunCommand, Stage, StageName, When,
};
use crate::plan::graph;

pub(crate) const TOP_KEYS: [&str; 10] = [
    "name",
    "repo",
    "logs",
    "archive",
    "jobs",
    "env",
    "secrets",
    "grace_period",
    "stages",
    "version",
];
pub(crate) const REPO_KEYS: [&str; 4] = ["url", "branch", "remote", "dir"];
pub(crate) const LOGS_KEYS: [&str; 2] = ["dir", "keep"];
pub(crate) const STAGE_KEYS: [&str; 13] = [
    "run",
    "uses",
    "with",
    "needs",
    "env",
    "workdir",
    "timeout",
    "retries",
    "allow_failure",
    "when",
    "description",
    "interactive",
    "secrets",
];
const MAX_RETRIES: i64 = 100;
const MAX_TIMEOUT: Duration = Duration::from_hours(30 * 24);

/// A stage as declared, with the places needed for later messages.
struct Declared<'a> {
    stage: Stage,
    file: &'a SourceFile,
    name_span: Span,
    /// The span of each `needs:` entry, parallel to `stage.needs`.
    need_spans: Vec<Span>,
}

/// Turns the parsed files into a pipeline, or every problem found.
pub(crate) fn validate(
    pipeline_file: &Path,
    main: Option<&Parsed>,
    stage_files: &[Parsed],
    mut problems: Vec<Problem>,
) -> Result<Pipeline, Vec<Problem>> {
    let root = match pipeline_file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let root = std::path::absolute(&root).unwrap_or(root);
    // `absolute` keeps a trailing `.`; the folder's own name is the pipeline's default name.
    let root = if root.ends_with(".") {
        root.parent().map_or(root.clone(), Path::to_path_buf)
    } else {
        root
    };
    let mut check = Checker {
        problems: &mut problems,
        root: &root,
        declared_names: Vec::new(),
    };

    let mut pipeline = Pipeline {
        name: root.file_name().map_or_else(
            || "pipeline".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        ),
        root: root.clone(),
        file: pipeline_file.to_path_buf(),
        repo: None,
        logs: LogSettings {
            dir: root.join("logs"),
            keep: 20,
        },
        archive: root.join("archive/deploy_history.json"),
        jobs: None,
        env: BTreeMap::new(),
        secrets: Vec::new(),
        grace_period: crate::exec::runner::DEFAULT_GRACE,
        stages: Vec::new(),
    };
    let mut declared: Vec<Declared> = Vec::new();

    if let Some(main) = main
        && let Some(entries) = check.map(&main.file, &main.root, "the pipeline file")
    {
        check.unknown_keys(&main.file, entries, &TOP_KEYS, "pipeline setting");
        for (key, value) in entries {
            check.setting(&main.file, key, value, &mut pipeline, &mut declared);
        }
    }
    for parsed in stage_files {
        // An empty drop-in file is harmless: nothing to add.
        if matches!(parsed.root.value, Value::Null) {
            continue;
        }
        if let Some(entries) = check.map(
            &parsed.file,
            &parsed.root,
            "a stage file (stage names as keys)",
        ) {
            for (key, value) in entries {
                if let Some(stage) = check.stage(&parsed.file, key, value) {
                    declared.push(stage);
                }
            }
        }
    }

    if pipeline.repo.is_none() {
        for d in &declared {
            if let Action::Uses { action, .. } = &d.stage.action {
                if action.name().starts_with("git/") {
                    check.push(
                        Problem::at(
                            d.file,
                            d.name_span,
                            format!(
                                "stage `{}` uses `{}`, which needs `repo:` in the pipeline file",
                                d.stage.name,
                                action.name()
                            ),
                            "needs a repository",
                        )
                        .with_help("add `repo: { url: <git URL or path> }` to pipeline.yml"),
                    );
                }
            }
        }
    }
    check.duplicates(&declared);
    check.needs(&declared);
    if check.problems.is_empty() {
        check.cycles(&declared);
    }
    if problems.is_empty() {
        pipeline.stages = declared.into_iter().map(|d| d.stage).collect();
        Ok(pipeline)
    } else {
        Err(problems)
    }
}

struct Checker<'p> {
    problems: &'p mut Vec<Problem>,
    root: &'p Path,
    /// Every stage name declared, also of stages with problems (so that `needs: [x]` is not
    /// reported as unknown just because `x` itself has a typo).
    declared_names: Vec<String>,
}

impl Checker<'_> {
    fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    fn wrong_type(
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

    fn map<'n>(
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

    fn unknown_keys(
        &mut self,
        file: &SourceFile,
        entries: &[(Key, Node)],
        known: &[&str],
        what: &str,
    ) {
        self.repeated_keys(file, entries, what);
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
    fn repeated_keys(&mut self, file: &SourceFile, entries: &[(Key, Node)], what: &str) {
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

    fn string(
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

    fn non_empty_string(
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

    fn path(
        &mut self,
        file: &SourceFile,
        node: &Node,
        what: &str,
        example: &str,
    ) -> Option<PathBuf> {
        self.non_empty_string(file, node, what, example)
            .map(|s| self.root.join(s))
    }

    fn boolean(&mut self, file: &SourceFile, node: &Node, what: &str) -> Option<bool> {
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

    fn integer(
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

    fn string_list(
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

    /// `env:` — names as the shell accepts them, values any scalar (`1` means "1").
    /// `secrets: [NAME, …]`: names of environment variables (their values are masked).
    fn secrets(&mut self, file: &SourceFile, node: &Node) -> Vec<String> {
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

    fn env(&mut self, file: &SourceFile, node: &Node) -> BTreeMap<String, String> {
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

    fn setting<'f>(
        &mut self,
        file: &'f SourceFile,
        key: &Key,
        value: &Node,
        pipeline: &mut Pipeline,
        declared: &mut Vec<Declared<'f>>,
    ) {
        match key.name.as_str() {
            "version" => {
                self.integer(file, value, "`version`", (1, 1), "`version: 1`");
            }
            "name" => {
                if let Some(name) =
                    self.non_empty_string(file, value, "`name`", "`name: sample-app`")
                {
                    pipeline.name = name;
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
                for (key, value) in entries {
                    if let Some(stage) = self.stage(file, key, value) {
                        declared.push(stage);
                    }
                }
            }
            _ => {} // reported by unknown_keys
        }
    }

    fn git_name(&mut self, file: &SourceFile, span: Span, what: &str, name: &str) -> bool {
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

    fn repo(&mut self, file: &SourceFile, node: &Node) -> Option<Repo> {
        let entries = self.map(file, node, "`repo`")?;
        self.unknown_keys(file, entries, &REPO_KEYS, "`repo` setting");
        let mut url = None;
        let mut repo = Repo {
            url: String::new(),
            branch: "master".into(),
            remote: "origin".into(),
            dir: self.root.join("workspace"),
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

    fn stage<'f>(&mut self, file: &'f SourceFile, key: &Key, node: &Node) -> Option<Declared<'f>> {
        self.declared_names.push(key.name.clone());
        let name = match StageName::parse(&key.name) {
            Ok(name) => Some(name),
            Err(why) => {
                self.push(Problem::at(
                    file,
                    key.span,
                    format!("invalid stage name `{}`", key.name),
                    why,
                ));
                None
            }
        };
        let entries = self.map(file, node, &format!("stage `{}`", key.name))?;
        self.unknown_keys(file, entries, &STAGE_KEYS, "stage key");

        let mut run = None;
        let mut uses = None;
        let mut with = None;
        let mut stage = Stage {
            name: name.clone().unwrap_or_else(StageName::placeholder),
            action: Action::Run(RunCommand::Argv(Vec::new())),
            needs: Vec::new(),
            env: BTreeMap::new(),
            workdir: None,
            timeout: None,
            retries: 0,
            allow_failure: false,
            when: When::OnSuccess,
            description: None,
            interactive: false,
            secrets: Vec::new(),
            origin: format!("{}:{}", file.name.display(), key.span.line),
        };
        let mut need_spans = Vec::new();
        let mut ok = true;
        for (key, value) in entries {
            let before = self.problems.len();
            match key.name.as_str() {
                "run" => run = self.run_command(file, value).map(|cmd| (cmd, key.span)),
                "uses" => uses = self.uses(file, value).map(|b| (b, key.span)),
                "with" => with = Some((key.span, value)),
                "needs" => {
                    if let Some(needs) =
                        self.string_list(file, value, "`needs`", "`needs: [build, lint]`")
                    {
                        for (need, span) in needs {
                            match StageName::parse(&need) {
                                Ok(need) => {
                                    stage.needs.push(need);
                                    need_spans.push(span);
                                }
                                Err(why) => self.push(Problem::at(
                                    file,
                                    span,
                                    format!("invalid stage name `{need}` in `needs`"),
                                    why,
                                )),
                            }
                        }
                    }
                }
                "env" => stage.env = self.env(file, value),
                "workdir" => {
                    stage.workdir =
                        self.path(file, value, "`workdir`", "`workdir: workspace/docs`");
                }
                "timeout" => {
                    stage.timeout = self.duration(file, value, "`timeout`", "`timeout: 10m`");
                }
                "retries" => {
                    stage.retries = self
                        .integer(file, value, "`retries`", (0, MAX_RETRIES), "`retries: 2`")
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(0);
                }
                "allow_failure" => {
                    stage.allow_failure = self
                        .boolean(file, value, "`allow_failure`")
                        .unwrap_or(false);
                }
                "interactive" => {
                    stage.interactive = self.boolean(file, value, "`interactive`").unwrap_or(false);
                }
                "secrets" => stage.secrets = self.secrets(file, value),
                "when" => {
                    if let Some(text) = self.string(file, value, "`when`", "`when: manual`") {
                        match When::from_name(&text) {
                            Some(when) => stage.when = when,
                            None => {
                                let mut problem = Problem::at(
                                    file,
                                    value.span,
                                    format!("unknown `when` value `{text}`"),
                                    "unknown value",
                                );
                                problem = problem.with_suggestion(
                                    &text,
                                    When::NAMES,
                                    format!("one of {}", When::NAMES.join(", ")),
                                );
                                self.push(problem);
                            }
                        }
                    }
                }
                "description" => {
                    stage.description = self.string(
                        file,
                        value,
                        "`description`",
                        "`description: run the unit tests`",
                    );
                }
                _ => {}
            }
            ok &= self.problems.len() == before;
        }

        stage.action = match (run, uses) {
            (Some((command, _)), None) => {
                if let Some((span, _)) = with {
                    self.push(
                        Problem::at(
                            file,
                            span,
                            "`with` is for `uses:` stages",
                            "`with` without `uses`",
                        )
                        .with_help("pass arguments in the `run:` command itself"),
                    );
                    ok = false;
                }
                Action::Run(command)
            }
            (None, Some((action, _))) => {
                let with = match with {
                    Some((_, node)) => self.with(file, action, node),
                    None => Some(BTreeMap::new()),
                };
                match with {
                    Some(with) => Action::Uses { action, with },
                    None => {
                        ok = false;
                        Action::Uses {
                            action,
                            with: BTreeMap::new(),
                        }
                    }
                }
            }
            (Some((_, run_span)), Some((_, uses_span))) => {
                self.push(
                    Problem::at(file, run_span, format!("stage `{}` has both `run` and `uses`", key.name), "`run` here")
                        .with_label(uses_span, "`uses` here")
                        .with_help("a stage is either a command (`run:`) or a built-in action (`uses:`); split it in two stages"),
                );
                return None;
            }
            (None, None) => {
                // A `run`/`uses` that was present but invalid is already reported.
                if !entries
                    .iter()
                    .any(|(k, _)| k.name == "run" || k.name == "uses")
                {
                    self.push(
                        Problem::at(
                            file,
                            key.span,
                            format!("stage `{}` has neither `run` nor `uses`", key.name),
                            "nothing to do",
                        )
                        .with_help(format!(
                            "add `run: <command>` or `uses: <action>` (actions: {})",
                            Builtin::ALL.map(Builtin::name).join(", ")
                        )),
                    );
                }
                return None;
            }
        };
        (ok && name.is_some()).then_some(Declared {
            stage,
            file,
            name_span: key.span,
            need_spans,
        })
    }

    fn run_command(&mut self, file: &SourceFile, node: &Node) -> Option<RunCommand> {
        match &node.value {
            Value::Str(s) if !s.trim().is_empty() => Some(RunCommand::Shell(s.clone())),
            Value::Seq(_) => {
                let argv = self.string_list(file, node, "`run`", "`run: [pytest, -v]`")?;
                if argv.is_empty() || argv[0].0.is_empty() {
                    self.push(
                        Problem::at(
                            file,
                            node.span,
                            "`run` needs a program to run",
                            "empty command",
                        )
                        .with_help("for example: `run: [pytest, -v]`"),
                    );
                    return None;
                }
                Some(RunCommand::Argv(argv.into_iter().map(|(s, _)| s).collect()))
            }
            Value::Str(_) | Value::Null => {
                self.push(
                    Problem::at(file, node.span, "`run` cannot be empty", "empty command")
                        .with_help("for example: `run: pytest -v`"),
                );
                None
            }
            _ => {
                self.wrong_type(
                    file,
                    node,
                    "`run`",
                    "a string or a list of strings",
                    "`run: pytest -v` or `run: [pytest, -v]`",
                );
                None
            }
        }
    }

    fn uses(&mut self, file: &SourceFile, node: &Node) -> Option<Builtin> {
        let name = self.string(file, node, "`uses`", "`uses: pytest`")?;
        if let Some(action) = Builtin::from_name(&name) {
            return Some(action);
        }
        let names = Builtin::ALL.map(Builtin::name);
        let mut problem = Problem::at(
            file,
            node.span,
            format!("unknown action `{name}`"),
            "not a built-in action",
        );
        problem = problem.with_suggestion(
            &name,
            names,
            format!(
                "built-in actions: {}; anything else is a `run:` stage",
                names.join(", ")
            ),
        );
        self.push(problem);
        None
    }

    fn with(
        &mut self,
        file: &SourceFile,
        action: Builtin,
        node: &Node,
    ) -> Option<BTreeMap<String, serde_json::Value>> {
        let entries = self.map(file, node, "`with`")?;
        let params = action.parameters();
        let known: Vec<&str> = params.iter().map(|(name, _)| *name).collect();
        let before = self.problems.len();
        let mut with = BTreeMap::new();
        for (key, value) in entries {
            if let Some((_, param)) = params.iter().find(|(name, _)| *name == key.name) {
                let what = format!("`with.{}`", key.name);
                let ok = match param {
                    Param::Text => self
                        .string(file, value, &what, "`message: release build`")
                        .is_some(),
                    Param::Flag => self.boolean(file, value, &what).is_some(),
                    Param::Words => {
                        matches!(value.value, Value::Str(_))
                            || self
                                .string_list(file, value, &what, "`args: [-x, tests/unit]`")
                                .is_some()
                    }
                };
                if ok {
                    with.insert(key.name.clone(), to_json(value));
                }
            } else {
                let mut problem = Problem::at(
                    file,
                    key.span,
                    format!("`{}` has no parameter `{}`", action.name(), key.name),
                    "unknown parameter",
                );
                let otherwise = if known.is_empty() {
                    format!("`{}` takes no parameters", action.name())
                } else {
                    format!("parameters of `{}`: {}", action.name(), known.join(", "))
                };
                problem = problem.with_suggestion(&key.name, known.iter().copied(), otherwise);
                self.push(problem);
            }
        }
        (self.problems.len() == before).then_some(with)
    }

    /// A humantime duration, above zero and at most 30 days; `what` names the key
    /// (`` `timeout` ``) and `example` shows one (`` `timeout: 10m` ``).
    fn duration(
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

    fn duplicates(&mut self, declared: &[Declared]) {
        let mut first: HashMap<&StageName, &Declared> = HashMap::new();
        for d in declared {
            match first.get(&d.stage.name) {
                Some(earlier) => {
                    let problem = Problem::at(
                        d.file,
                        d.name_span,
                        format!("stage `{}` is declared twice", d.stage.name),
                        "declared again here",
                    )
                    .with_help("rename one of them, or delete one")
                    .with_related(Problem::at(
                        earlier.file,
                        earlier.name_span,
                        format!("`{}` first declared here", d.stage.name),
                        "first declaration",
                    ));
                    self.push(problem);
                }
                None => {
                    first.insert(&d.stage.name, d);
                }
            }
        }
    }

    fn needs(&mut self, declared: &[Declared]) {
        let all = std::mem::take(&mut self.declared_names);
        let names: Vec<&str> = all.iter().map(String::as_str).collect();
        let known: HashSet<&str> = names.iter().copied().collect();
        for d in declared {
            for (need, span) in d.stage.needs.iter().zip(&d.need_spans) {
                if need == &d.stage.name {
                    self.push(
                        Problem::at(
                            d.file,
                            *span,
                            format!("stage `{need}` needs itself"),
                            "a stage cannot need itself",
                        )
                        .with_help("remove it from `needs`"),
                    );
                } else if !known.contains(need.as_str()) {
                    let mut problem = Problem::at(
                        d.file,
                        *span,
                        format!(
                            "stage `{}` needs `{need}`, which does not exist",
                            d.stage.name
                        ),
                        "unknown stage",
                    );
                    problem = problem.with_suggestion(
                        need.as_str(),
                        names.iter().copied(),
                        format!("stages: {}", names.join(", ")),
                    );
                    self.push(problem);
                }
            }
        }
    }

    fn cycles(&mut self, declared: &[Declared]) {
        let index: HashMap<&StageName, usize> = declared
            .iter()
            .enumerate()
            .map(|(i, d)| (&d.stage.name, i))
            .collect();
        let needs: Vec<Vec<usize>> = declared
            .iter()
            .map(|d| {
                d.stage
                    .needs
                    .iter()
                    .filter_map(|n| index.get(n).copied())
                    .collect()
            })
            .collect();
        for cycle in graph::cycles(&needs) {
            let path: Vec<&str> = cycle
                .iter()
                .chain(cycle.first())
                .map(|&i| declared[i].stage.name.as_str())
                .collect();
            let message = format!(
                "the stages need each other in a cycle: {}",
                path.join(" → ")
            );
            // One label per `needs:` entry that closes an edge of the cycle.
            let edges: Vec<(usize, usize)> = cycle
                .iter()
                .zip(cycle.iter().cycle().skip(1))
                .map(|(&a, &b)| (a, b))
                .collect();
            let mut primary: Option<Problem> = None;
            let mut others = Vec::new();
            for (a, b) in edges {
                let d = &declared[a];
                let Some(pos) = d
                    .stage
                    .needs
                    .iter()
                    .position(|n| *n == declared[b].stage.name)
                else {
                    continue;
                };
                let span = d.need_spans[pos];
                let label = format!("`{}` needs `{}`", d.stage.name, declared[b].stage.name);
                match &mut primary {
                    None => primary = Some(Problem::at(d.file, span, message.clone(), label)),
                    Some(p) if p.place().is_some_and(|place| place.file == d.file.name) => {
                        *p = std::mem::replace(p, Problem::general("")).with_label(span, label);
                    }
                    Some(_) => {
                        others.push(Problem::at(d.file, span, "…which continues here", label));
                    }
                }
            }
            if let Some(mut problem) = primary {
                problem = problem.with_help("remove one of these `needs` to break the cycle");
                for other in others {
                    problem = problem.with_related(other);
                }
                self.push(problem);
            }
        }
    }
}

/// Refuses URLs git would read as an option or that run commands: a leading `-`, a host
/// starting with `-` (`ssh://-oProxyCommand=…`), the `ext::` transport, control characters.
fn check_url(url: &str) -> Result<(), &'static str> {
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

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(n) => J::from(*n),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Str(s) => J::String(s.clone()),
        Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (k.name.clone(), to_json(v)))
                .collect(),
        ),
    }
}

/// What YAML 1.1 read as a boolean and YAML 1.2 reads as text: `yes`, `no`, `on`, `off`, `y`,
/// `n`, in any case.
fn yaml11_boolean(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "yes" | "on" | "y" => Some(true),
        "no" | "off" | "n" => Some(false),
        _ => None,
    }
}

/// The plain scalar `node` as it is written in the file, when its span covers exactly that
/// (not a quoted, tagged, anchored or aliased value).
fn as_written(file: &SourceFile, node: &Node) -> Option<String> {
    let text = file
        .text
        .get(node.span.offset..node.span.offset.checked_add(node.span.len)?)?;
    let plain = !text.is_empty()
        && !text.starts_with(['"', '\'', '!', '&', '*', '|', '>'])
        && !text.contains(['\n', '#']);
    plain.then(|| text.trim().to_owned())
}
