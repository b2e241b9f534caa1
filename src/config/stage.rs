//! One stage's keys: `run` or `uses`, `needs`, `env`, `workdir`, `timeout`, `retries`,
//! `allow_failure`, `when`, `description`, `interactive`, `secrets`, `schedule`.

use std::collections::BTreeMap;

use crate::config::raw::{Key, Node, Value};
use crate::config::validate::{ARTIFACT_KEYS, CACHE_KEYS, Checker, MAX_RETRIES, Place, STAGE_KEYS};
use crate::cron::Schedule;
use crate::error::{Problem, SourceFile};
use crate::pipeline::{
    Action, ArtifactSpec, Builtin, CacheSpec, RunCommand, Stage, StageName, Uses, When,
};

impl Checker<'_> {
    pub(super) fn stage<'f>(
        &mut self,
        file: &'f SourceFile,
        key: &Key,
        node: &Node,
    ) -> Option<(Stage, Place<'f>)> {
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
            cache: None,
            artifacts: None,
            schedule: None,
            origin: format!("{}:{}", file.name.display(), key.span.line),
        };
        let mut need_spans = Vec::new();
        let mut schedule_span = None;
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
                "cache" => stage.cache = self.cache_spec(file, value).map(Box::new),
                "artifacts" => stage.artifacts = self.artifact_spec(file, value).map(Box::new),
                "schedule" => {
                    stage.schedule = self.schedule(file, value).map(Box::new);
                    schedule_span = Some(value.span);
                }
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

        if let (true, Some(span)) = (stage.interactive, schedule_span)
            && stage.schedule.is_some()
        {
            self.push(
                Problem::at(
                    file,
                    span,
                    format!(
                        "stage `{}` is interactive and scheduled: nobody is at the terminal when its time comes",
                        key.name
                    ),
                    "scheduled here",
                )
                .with_help("remove `interactive: true`, or the `schedule:`"),
            );
            ok = false;
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
            (None, Some((action, uses_span))) => {
                match self.uses_with(file, action, uses_span, with.map(|(_, node)| node)) {
                    Some(uses) => Action::Uses(uses),
                    None => {
                        // Reported; the rest of the stage is still checked.
                        ok = false;
                        Action::Uses(Uses::GitClone)
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
        let environment_span = super::environments::environment_span(with.map(|(_, node)| node));
        (ok && name.is_some()).then_some((
            stage,
            Place {
                file,
                name_span: key.span,
                need_spans,
                schedule_span,
                environment_span,
            },
        ))
    }

    /// `schedule: "0 3 * * *"`: a cron pattern cron itself would run (see `crate::cron`).
    pub(super) fn schedule(&mut self, file: &SourceFile, node: &Node) -> Option<Schedule> {
        let text = self.string(
            file,
            node,
            "`schedule`",
            "`schedule: \"0 3 * * *\"` (minute hour day-of-month month day-of-week)",
        )?;
        match Schedule::parse(&text) {
            Ok(schedule) => Some(schedule),
            Err(why) => {
                self.push(
                    Problem::at(
                        file,
                        node.span,
                        format!("`{text}` is not a valid schedule: {why}"),
                        "invalid schedule",
                    )
                    .with_help(
                        "five fields, local time: minute (0-59), hour (0-23), day of month \
                         (1-31), month (1-12), day of week (0-7, 0 and 7 are Sunday); e.g. \
                         `0 3 * * *` every day at 3:00, `*/15 * * * 1-5` every quarter hour on \
                         weekdays",
                    ),
                );
                None
            }
        }
    }

    pub(super) fn run_command(&mut self, file: &SourceFile, node: &Node) -> Option<RunCommand> {
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

    pub(super) fn uses(&mut self, file: &SourceFile, node: &Node) -> Option<Builtin> {
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
}

impl Checker<'_> {
    /// `cache: { inputs: [globs], env: [names], outputs: [globs] }`.
    fn cache_spec(&mut self, file: &SourceFile, node: &Node) -> Option<CacheSpec> {
        let example =
            "`cache: { inputs: [\"src/**/*.py\", pyproject.toml], env: [PYTHON_VERSION] }`";
        let entries = self.map(file, node, "`cache`")?;
        let before = self.problems.len();
        self.unknown_keys(file, entries, &CACHE_KEYS, "`cache` key");
        let mut spec = CacheSpec::default();
        for (key, value) in entries {
            match key.name.as_str() {
                "inputs" => spec.inputs = self.globs(file, value, "`cache.inputs`", example),
                "outputs" => {
                    spec.outputs =
                        self.globs(file, value, "`cache.outputs`", "`outputs: [dist/*]`");
                }
                "env" => spec.env = self.secrets_like(file, value, "`cache.env`"),
                _ => {}
            }
        }
        if self.problems.len() > before {
            return None;
        }
        if spec.inputs.is_empty() && spec.env.is_empty() {
            self.push(
                Problem::at(
                    file,
                    node.span,
                    "`cache` names no inputs and no variables",
                    "nothing to key on",
                )
                .with_help(format!("list what the stage reads, for example: {example}")),
            );
            return None;
        }
        Some(spec)
    }

    /// `artifacts: [globs]` or `artifacts: { paths: [globs], when: always | on_success }`.
    fn artifact_spec(&mut self, file: &SourceFile, node: &Node) -> Option<ArtifactSpec> {
        let example = "`artifacts: [dist/*, coverage.xml]`";
        if let Value::Seq(_) = node.value {
            let paths = self.globs(file, node, "`artifacts`", example);
            return (!paths.is_empty()).then_some(ArtifactSpec {
                paths,
                always: false,
            });
        }
        let Value::Map(entries) = &node.value else {
            self.wrong_type(
                file,
                node,
                "`artifacts`",
                "a list of globs or a mapping",
                example,
            );
            return None;
        };
        self.unknown_keys(file, entries, &ARTIFACT_KEYS, "`artifacts` key");
        let mut spec = ArtifactSpec::default();
        for (key, value) in entries {
            match key.name.as_str() {
                "paths" => spec.paths = self.globs(file, value, "`artifacts.paths`", example),
                "when" => {
                    match self
                        .string(file, value, "`artifacts.when`", "`when: always`")
                        .as_deref()
                    {
                        Some("always") => spec.always = true,
                        Some("on_success") => spec.always = false,
                        Some(other) => self.push(
                            Problem::at(
                                file,
                                value.span,
                                format!("unknown `artifacts.when` value `{other}`"),
                                "unknown value",
                            )
                            .with_help(
                                "`always` (also from a failed stage) or `on_success` (the default)",
                            ),
                        ),
                        None => {}
                    }
                }
                _ => {}
            }
        }
        (!spec.paths.is_empty()).then_some(spec)
    }

    /// A list of globs relative to the stage's folder; each one that could reach outside it
    /// (or does not parse) is a problem at its place.
    fn globs(&mut self, file: &SourceFile, node: &Node, what: &str, example: &str) -> Vec<String> {
        let Some(items) = self.string_list(file, node, what, example) else {
            return Vec::new();
        };
        let mut globs = Vec::new();
        for (pattern, span) in items {
            match crate::files::check_glob(&pattern) {
                None => globs.push(pattern),
                Some(why) => self.push(
                    Problem::at(file, span, format!("{what}: {why}"), "refused glob")
                        .with_help("write a glob relative to the stage's folder, e.g. `dist/*`"),
                ),
            }
        }
        globs
    }

    /// A list of environment variable names.
    fn secrets_like(&mut self, file: &SourceFile, node: &Node, what: &str) -> Vec<String> {
        let Some(items) = self.string_list(file, node, what, "`env: [PYTHON_VERSION]`") else {
            return Vec::new();
        };
        let mut names = Vec::new();
        for (name, span) in items {
            if super::settings::is_env_name(&name) {
                names.push(name);
            } else {
                self.push(Problem::at(
                    file,
                    span,
                    format!("`{name}` is not a valid environment variable name"),
                    "invalid name",
                ));
            }
        }
        names
    }
}
