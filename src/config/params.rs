//! A built-in action's `with:` parameters: each key checked against the action's list and its
//! type, then decoded into the action's typed parameters ([`Uses`]). Nothing after `config/`
//! reads `with:` again.

use std::collections::BTreeMap;

use crate::config::raw::{Node, Value};
use crate::config::validate::Checker;
use crate::error::{Problem, SourceFile};
use crate::pipeline::{Builtin, Param, PytestParams, Uses, VenvParams};

/// One parameter's value, of the type its action declares.
enum ParamValue {
    Text(String),
    Words(Vec<String>),
    Flag(bool),
}

impl Checker<'_> {
    /// The action with its parameters (`node` is the `with:` map, `None` when absent); `None`
    /// when a parameter has a problem (reported).
    pub(super) fn uses_with(
        &mut self,
        file: &SourceFile,
        action: Builtin,
        node: Option<&Node>,
    ) -> Option<Uses> {
        let mut values = match node {
            Some(node) => self.with(file, action, node)?,
            None => BTreeMap::new(),
        };
        let mut text = |key: &str| match values.remove(key) {
            Some(ParamValue::Text(text)) => Some(text),
            _ => None,
        };
        Some(match action {
            Builtin::GitClone => Uses::GitClone,
            Builtin::GitPush => Uses::GitPush,
            Builtin::GitRevert => Uses::GitRevert,
            Builtin::GitCommit => Uses::GitCommit {
                message: text("message"),
            },
            Builtin::PythonVenv => Uses::PythonVenv(VenvParams {
                requirements: text("requirements"),
                python: text("python"),
            }),
            Builtin::Pytest => Uses::Pytest(PytestParams {
                args: match values.remove("args") {
                    Some(ParamValue::Words(words)) => words,
                    _ => Vec::new(),
                },
                allow_no_tests: matches!(
                    values.remove("allow_no_tests"),
                    Some(ParamValue::Flag(true))
                ),
            }),
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
                        .string(file, value, &what, "`message: release build`")
                        .map(ParamValue::Text),
                    Param::Flag => self.boolean(file, value, &what).map(ParamValue::Flag),
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
