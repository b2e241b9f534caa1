//! A built-in action's `with:` parameters: each key checked against the action's list and its
//! type, then decoded into the action's typed parameters ([`Uses`]). Nothing after `config/`
//! reads `with:` again.

use std::collections::BTreeMap;

use crate::config::raw::{Node, Span, Value};
use crate::config::validate::Checker;
use crate::error::{Problem, SourceFile};
use crate::pipeline::{
    Builtin, CoverageParams, LintParams, Param, Percent, PublishParams, PytestParams, Uses,
    VenvParams,
};

/// One parameter's value, of the type its action declares.
enum ParamValue {
    Text(String),
    Words(Vec<String>),
    Flag(bool),
    Percent(Percent),
}

impl Checker<'_> {
    /// The action with its parameters (`node` is the `with:` map, `None` when absent); `None`
    /// when a parameter has a problem (reported).
    pub(super) fn uses_with(
        &mut self,
        file: &SourceFile,
        action: Builtin,
        uses_span: Span,
        node: Option<&Node>,
    ) -> Option<Uses> {
        let mut values = match node {
            Some(node) => self.with(file, action, node)?,
            None => BTreeMap::new(),
        };
        let missing: Vec<&str> = action
            .required()
            .iter()
            .copied()
            .filter(|key| !values.contains_key(*key))
            .collect();
        if !missing.is_empty() {
            let place = node.map_or(uses_span, |n| n.span);
            self.push(
                Problem::at(
                    file,
                    place,
                    format!("`{}` needs `with: {{ {} }}`", action.name(), missing.join(", ")),
                    "required parameter missing",
                )
                .with_help(match action {
                    Builtin::PythonPublish => "name the index to upload to, e.g. `with: { repository_url: \"https://upload.pypi.org/legacy/\" }`: nothing is published to an index nobody named",
                    _ => "add the parameter under `with:`",
                }),
            );
            return None;
        }
        let mut text = |key: &str| match values.remove(key) {
            Some(ParamValue::Text(text)) => Some(text),
            _ => None,
        };
        let python = text("python");
        let message = text("message");
        let repository_url = text("repository_url");
        let token_env = text("token_env");
        let environment = text("environment");
        let mut words = |key: &str| match values.remove(key) {
            Some(ParamValue::Words(words)) => words,
            _ => Vec::new(),
        };
        let args = words("args");
        let requirements = words("requirements");
        let packages = words("packages");
        let extras = words("extras");
        let mut flag = |key: &str| matches!(values.remove(key), Some(ParamValue::Flag(true)));
        let allow_no_tests = flag("allow_no_tests");
        let format = flag("format");
        let skip_existing = flag("skip_existing");
        let project = flag("project");
        let fail_under = match values.remove("fail_under") {
            Some(ParamValue::Percent(p)) => Some(p),
            _ => None,
        };
        Some(match action {
            Builtin::GitClone => Uses::GitClone,
            Builtin::GitPush => Uses::GitPush { environment },
            Builtin::GitRevert => Uses::GitRevert,
            Builtin::GitCommit => Uses::GitCommit { message },
            Builtin::PythonVenv => Uses::PythonVenv(Box::new(VenvParams {
                requirements,
                packages,
                python,
                project: project || !extras.is_empty(),
                extras,
            })),
            Builtin::Pytest => Uses::Pytest(PytestParams {
                args,
                allow_no_tests,
            }),
            Builtin::PythonLint => Uses::PythonLint(Box::new(LintParams { format, args })),
            Builtin::PythonCoverage => Uses::PythonCoverage(Box::new(CoverageParams {
                args,
                fail_under,
                allow_no_tests,
            })),
            Builtin::PythonBuild => Uses::PythonBuild,
            Builtin::PythonPublish => Uses::PythonPublish(Box::new(PublishParams {
                repository_url: repository_url.unwrap_or_default(),
                token_env,
                skip_existing,
            })),
        })
    }

    /// Every key of `with:`, checked; `None` when one has a problem.
    fn with(
        &mut self,
        file: &SourceFile,
        action: Builtin,
        node: &Node,
    ) -> Option<BTreeMap<String, ParamValue>> {
        let entries = self.map(file, node, "`with`")?;
        let params = action.parameters();
        let known: Vec<&str> = params.iter().map(|(name, _)| *name).collect();
        let before = self.problems.len();
        let mut with = BTreeMap::new();
        for (key, value) in entries {
            if let Some((_, param)) = params.iter().find(|(name, _)| *name == key.name) {
                let what = format!("`with.{}`", key.name);
                let decoded = match param {
                    Param::Text => self
                        .text_param(file, action, &key.name, value, &what)
                        .map(ParamValue::Text),
                    Param::Flag => self.boolean(file, value, &what).map(ParamValue::Flag),
                    Param::Percent => self.percent(file, value, &what).map(ParamValue::Percent),
                    // One string is split at spaces: `args: -x -q`.
                    Param::Words => match &value.value {
                        Value::Str(words) => Some(ParamValue::Words(
                            words.split_whitespace().map(str::to_owned).collect(),
                        )),
                        _ => self
                            .string_list(file, value, &what, "`args: [-x, tests/unit]`")
                            .map(|items| {
                                ParamValue::Words(items.into_iter().map(|(s, _)| s).collect())
                            }),
                    },
                };
                if let Some(decoded) = decoded {
                    with.insert(key.name.clone(), decoded);
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
}

impl Checker<'_> {
    /// A text parameter, checked for what it will become: a URL, a variable's name.
    fn text_param(
        &mut self,
        file: &SourceFile,
        action: Builtin,
        key: &str,
        value: &Node,
        what: &str,
    ) -> Option<String> {
        match key {
            "repository_url" => {
                let url = self.non_empty_string(
                    file,
                    value,
                    what,
                    "`repository_url: \"https://upload.pypi.org/legacy/\"`",
                )?;
                let ok = (url.starts_with("https://") || url.starts_with("http://"))
                    && !url.chars().any(|c| c.is_whitespace() || c.is_control());
                if !ok {
                    self.push(
                        Problem::at(
                            file,
                            value.span,
                            format!("`{url}` is not an http(s) URL"),
                            "not a URL",
                        )
                        .with_help(
                            "the index's upload URL, e.g. `https://upload.pypi.org/legacy/`",
                        ),
                    );
                    return None;
                }
                Some(url)
            }
            "token_env" => {
                let name = self.non_empty_string(file, value, what, "`token_env: PYPI_TOKEN`")?;
                let valid = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    self.push(
                        Problem::at(file, value.span, format!("`{name}` is not a variable name"), "not a variable name")
                            .with_help("the name of the environment variable holding the token, e.g. `PYPI_TOKEN`, also listed under `secrets:`"),
                    );
                    return None;
                }
                Some(name)
            }
            _ => {
                let example = match action {
                    Builtin::PythonVenv => "`python: python3.12`",
                    _ => "`message: release build`",
                };
                self.string(file, value, what, example)
            }
        }
    }

    /// A percentage: a number from 0 to 100.
    fn percent(&mut self, file: &SourceFile, node: &Node, what: &str) -> Option<Percent> {
        #[expect(
            clippy::cast_precision_loss,
            reason = "checked to be at most 100 first"
        )]
        let number = match &node.value {
            Value::Int(n) if (0..=100).contains(n) => Some(*n as f64),
            Value::Float(f) => Some(*f),
            Value::Int(_) => None,
            _ => {
                self.wrong_type(
                    file,
                    node,
                    what,
                    "a number from 0 to 100",
                    "`fail_under: 85`",
                );
                return None;
            }
        };
        let percent = number.and_then(Percent::from_f64);
        if percent.is_none() {
            self.push(
                Problem::at(
                    file,
                    node.span,
                    format!("{what} must be between 0 and 100"),
                    "out of range",
                )
                .with_help("a percentage, for example: `fail_under: 85`"),
            );
        }
        percent
    }
}
