//! The Python actions: a virtual environment with the project's requirements, and pytest.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::actions::CommandLine;

/// pytest's exit code when it collected no tests.
const NO_TESTS_COLLECTED: i32 = 5;

/// `pytest -v [args…] --junitxml=<report>`, with the workspace's `.venv` pytest when there is
/// one, else pytest from PATH.
pub fn pytest(
    dir: &Path,
    with: &BTreeMap<String, Value>,
    report: &Path,
) -> Result<CommandLine, String> {
    let venv_pytest = dir.join(".venv/bin/pytest");
    let program = if venv_pytest.is_file() {
        venv_pytest.display().to_string()
    } else {
        "pytest".to_owned()
    };
    let mut args = vec!["-v".to_owned()];
    args.extend(strings(with, "args")?);
    // The user's own JUnit report wins (pytest writes only the last one given); the summary
    // note then comes without the counts from it.
    let own_report = args
        .iter()
        .any(|a| a.starts_with("--junitxml") || a.starts_with("--junit-xml"));
    if !report.as_os_str().is_empty() && !own_report {
        args.push(format!("--junitxml={}", report.display()));
    }
    let mut command = CommandLine::new(program, args);
    match with.get("allow_no_tests") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => command.also_ok.push(NO_TESTS_COLLECTED),
        Some(_) => return Err("`with.allow_no_tests` must be true or false".into()),
    }
    Ok(command)
}

/// `python3 -m venv .venv` (unless it exists) and `pip install -r requirements.txt` (when the
/// file is there, or named by `with: {requirements}`).
pub fn venv(dir: &Path, with: &BTreeMap<String, Value>) -> Result<Vec<CommandLine>, String> {
    let python = text(with, "python")?.unwrap_or_else(|| "python3".to_owned());
    let named = text(with, "requirements")?;
    let requirements = named
        .clone()
        .unwrap_or_else(|| "requirements.txt".to_owned());
    let venv_python = dir.join(".venv/bin/python");
    let mut commands = Vec::new();
    if !venv_python.is_file() {
        commands.push(CommandLine::new(python, ["-m", "venv", ".venv"]));
    }
    if dir.join(&requirements).is_file() {
        commands.push(CommandLine::new(
            venv_python.display().to_string(),
            [
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-r",
                &requirements,
            ],
        ));
    } else if named.is_some() {
        return Err(format!("{requirements} is not in {}", dir.display()));
    }
    Ok(commands)
}

fn text(with: &BTreeMap<String, Value>, key: &str) -> Result<Option<String>, String> {
    match with.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`with.{key}` must be a string")),
    }
}

fn strings(with: &BTreeMap<String, Value>, key: &str) -> Result<Vec<String>, String> {
    match with.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("`with.{key}` must be a list of strings"))
            })
            .collect(),
        Some(Value::String(s)) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Some(_) => Err(format!("`with.{key}` must be a list of strings")),
    }
}
