//! The Python actions: a virtual environment with the project's requirements, and pytest.

use std::path::Path;

use crate::actions::CommandLine;
use crate::pipeline::{PytestParams, VenvParams};

/// pytest's exit code when it collected no tests.
const NO_TESTS_COLLECTED: i32 = 5;

/// `pytest -v [args…] --junitxml=<report>`, with the workspace's `.venv` pytest when there is
/// one, else pytest from PATH.
pub fn pytest(dir: &Path, params: &PytestParams, report: &Path) -> CommandLine {
    let venv_pytest = dir.join(".venv/bin/pytest");
    let program = if venv_pytest.is_file() {
        venv_pytest.display().to_string()
    } else {
        "pytest".to_owned()
    };
    let mut args = vec!["-v".to_owned()];
    args.extend(params.args.iter().cloned());
    // The user's own JUnit report wins (pytest writes only the last one given); the summary
    // note then comes without the counts from it.
    let own_report = args
        .iter()
        .any(|a| a.starts_with("--junitxml") || a.starts_with("--junit-xml"));
    if !report.as_os_str().is_empty() && !own_report {
        args.push(format!("--junitxml={}", report.display()));
        // xunit1 keeps each test's file: failed tests are named as `pytest ID` takes them.
        args.extend(["-o".to_owned(), "junit_family=xunit1".to_owned()]);
    }
    let mut command = CommandLine::new(program, args);
    if params.allow_no_tests {
        command.also_ok.push(NO_TESTS_COLLECTED);
    }
    command
}

/// `python3 -m venv .venv` (unless it exists) and `pip install -r requirements.txt` (when the
/// file is there, or named by `with: {requirements}`).
pub fn venv(dir: &Path, params: &VenvParams) -> Result<Vec<CommandLine>, String> {
    let python = params.python.as_deref().unwrap_or("python3");
    let requirements = params.requirements.as_deref().unwrap_or("requirements.txt");
    let venv_python = dir.join(".venv/bin/python");
    let mut commands = Vec::new();
    if !venv_python.is_file() {
        commands.push(CommandLine::new(python, ["-m", "venv", ".venv"]));
    }
    if dir.join(requirements).is_file() {
        commands.push(CommandLine::new(
            venv_python.display().to_string(),
            [
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-r",
                requirements,
            ],
        ));
    } else if params.requirements.is_some() {
        return Err(format!("{requirements} is not in {}", dir.display()));
    }
    Ok(commands)
}
