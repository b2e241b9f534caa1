//! `pydeployer export github|gitlab`, checked by the CIs' own tools: actionlint and
//! check-jsonschema (GitHub's and GitLab's schemas), and gitlab-ci-local, which runs the
//! exported pipeline with its shell executor. A missing tool fails the test (`./test.sh`
//! installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Project, git};
use serde_json::Value;

/// A pipeline that uses every key export knows today.
const EVERY_KEY: &str = r#"
name: every-key
repo: { url: "https://example.com/acme/app.git", branch: main, remote: origin, dir: workspace }
logs: { dir: logs, keep: 5 }
archive: archive/deploy_history.json
jobs: 3
env: { PIP_DISABLE_PIP_VERSION_CHECK: "1", PRICE: "$5 ${HOME}", VERSION: "3.10" }
secrets: [DEPLOY_TOKEN]
grace_period: 10s
stages:
  clone: { uses: git/clone, description: "clone or pull" }
  install:
    uses: python/venv
    with: { requirements: requirements-dev.txt, python: python3.11 }
    needs: [clone]
  lint:
    run: ruff check .
    needs: [install]
    env: { RUFF_CACHE_DIR: /tmp/ruff }
    workdir: workspace/src
    timeout: 90s
    retries: 3
    allow_failure: true
  build.test: { run: "echo '${{ github.token }}'", needs: [clone] }
  build_test: { run: [python, -c, "print('argv')"], needs: [clone] }
  commit: { uses: git/commit, with: { message: "build it" }, needs: [clone] }
  test:
    uses: pytest
    with: { args: [-x, -q], allow_no_tests: true }
    needs: [install, lint, build.test, build_test]
    timeout: 10m
  deploy: { uses: git/push, needs: [test, commit], secrets: [PUSH_TOKEN] }
  notify: { run: "echo failed", when: on_failure, needs: [test] }
  cleanup: { run: "echo done", when: always }
  shell: { run: "bash", interactive: true, when: manual }
  rollback: { uses: git/revert, when: manual }
"#;

/// A pipeline of `run:` stages only, which gitlab-ci-local can run: a diamond of needs, a
/// `$` in `env:` GitLab must not expand, a `${{` GitHub must not evaluate, two stages whose
/// names collide as GitHub job ids.
const RUN_ONLY: &str = r#"
name: run-only
env: { GREETING: "price $5 ${HOME}" }
stages:
  first: { run: "echo first-ran" }
  b: { run: "echo \"b: $GREETING\"", needs: [first] }
  build.test: { run: "echo '${{ github.token }}'", needs: [first] }
  build_test: { run: [echo, "argv with 'quotes' and $dollar"], needs: [first] }
  last: { run: "echo last-ran", needs: [b, build.test, build_test] }
"#;

/// The program `name`, found on PATH (with the Node 22 `./test.sh` installs first); the
/// test fails when it is missing.
fn tool(name: &str) -> PathBuf {
    let path = search_path();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run ./test.sh, which installs it (see README)")
        })
}

/// PATH with the folder of Node 22 and gitlab-ci-local (`PYDEPLOYER_NODE_BIN`, set by
/// `./test.sh`) first.
fn search_path() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(extra) = std::env::var_os("PYDEPLOYER_NODE_BIN") {
        dirs.push(PathBuf::from(extra));
    }
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

fn run_tool(program: &Path, args: &[&str], dir: &Path) -> (i32, String) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("PATH", search_path())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// `plan --format json` with every stage selected: name → needs.
fn stage_needs(project: &Project) -> BTreeMap<String, Vec<String>> {
    let (code, out, err) = project.run(&["plan", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    let mut needs = BTreeMap::new();
    for stage in plan["stages"].as_array().unwrap() {
        let list = stage["needs"].as_array().unwrap();
        needs.insert(
            stage["name"].as_str().unwrap().to_owned(),
            list.iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect(),
        );
    }
    for left in plan["not_run"].as_array().unwrap() {
        needs.insert(left["name"].as_str().unwrap().to_owned(), Vec::new());
    }
    needs
}

/// Exports `pipeline` for `ci` into the project; returns the file's text and stderr.
fn export(project: &Project, ci: &str, file: &str) -> (String, String) {
    let (code, _, err) = project.run(&["export", ci, "-o", file]);
    assert_eq!(code, 0, "{err}");
    (project.read(file), err)
}

fn lint_github(project: &Project, file: &str) {
    let (code, out) = run_tool(&tool("actionlint"), &["-no-color", file], project.path());
    assert_eq!(
        (code, out.as_str()),
        (0, ""),
        "actionlint:\n{}",
        project.read(file)
    );
    let (code, out) = run_tool(
        &tool("check-jsonschema"),
        &["--builtin-schema", "vendor.github-workflows", file],
        project.path(),
    );
    assert_eq!(code, 0, "{out}\n{}", project.read(file));
}

fn lint_gitlab(project: &Project, file: &str) {
    let (code, out) = run_tool(
        &tool("check-jsonschema"),
        &["--builtin-schema", "vendor.gitlab-ci", file],
        project.path(),
    );
    assert_eq!(code, 0, "{out}\n{}", project.read(file));
}

fn demo_project() -> Project {
    let project = Project::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    project.file(
        "pipeline.yml",
        &std::fs::read_to_string(root.join("pipeline.yml")).unwrap(),
    );
    project.copy_repository_stages();
    project
}

/// The job ids GitHub gets, by stage name (`name:` when the id differs).
fn github_jobs(workflow: &Value) -> BTreeMap<String, (String, Vec<String>)> {
    let mut jobs = BTreeMap::new();
    for (id, job) in workflow["jobs"].as_object().unwrap() {
        let name = job["name"].as_str().unwrap_or(id).to_owned();
        let needs = match &job["needs"] {
            Value::Array(items) => items
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect(),
            Value::Null => Vec::new(),
            other => panic!("needs: {other}"),
        };
        jobs.insert(name, (id.clone(), needs));
    }
    jobs
}

#[test]
fn github_workflows_pass_actionlint_and_the_schema_with_the_stages_needs() {
    for project in [demo_project(), Project::with_pipeline(EVERY_KEY)] {
        let (text, _) = export(&project, "github", ".github/workflows/pydeployer.yml");
        assert!(text.starts_with("# Generated by `pydeployer export github` from pipeline.yml"));
        lint_github(&project, ".github/workflows/pydeployer.yml");
        let workflow = yaml(&text);
        let jobs = github_jobs(&workflow);
        let id_of = |stage: &str| jobs[stage].0.clone();
        let stages = stage_needs(&project);
        assert_eq!(
            jobs.keys().collect::<Vec<_>>(),
            stages.keys().collect::<Vec<_>>()
        );
        for (stage, needs) in &stages {
            let expected: Vec<String> = needs.iter().map(|n| id_of(n)).collect();
            if stage == "cleanup" {
                // An `always` stage without needs waits for every regular stage (not the
                // on_failure `notify`, nor the manual ones).
                let regular = [
                    "clone",
                    "install",
                    "lint",
                    "build.test",
                    "build_test",
                    "commit",
                    "test",
                    "deploy",
                ];
                let expected: Vec<String> = regular.iter().map(|s| id_of(s)).collect();
                assert_eq!(jobs[stage].1, expected);
                continue;
            }
            assert_eq!(jobs[stage].1, expected, "needs of {stage}");
        }
    }
}

#[test]
fn every_key_maps_to_github_and_what_does_not_is_said() {
    let project = Project::with_pipeline(EVERY_KEY);
    let (text, err) = export(&project, "github", "ci.yml");
    let workflow = yaml(&text);
    let jobs = &workflow["jobs"];
    assert_eq!(
        workflow["env"]["DEPLOY_TOKEN"],
        "${{ secrets.DEPLOY_TOKEN }}"
    );
    assert_eq!(workflow["env"]["PRICE"], "$5 ${HOME}");
    assert_eq!(workflow["env"]["VERSION"], "3.10");
    assert_eq!(workflow["on"]["push"]["branches"][0], "main");
    assert_eq!(jobs["lint"]["timeout-minutes"], 2, "90s is rounded up");
    assert_eq!(jobs["lint"]["continue-on-error"], true);
    assert_eq!(jobs["lint"]["env"]["RUFF_CACHE_DIR"], "/tmp/ruff");
    let lint_steps = jobs["lint"]["steps"].as_array().unwrap();
    assert_eq!(lint_steps.last().unwrap()["working-directory"], "src");
    assert_eq!(jobs["notify"]["if"], "failure()");
    assert_eq!(jobs["cleanup"]["if"], "always()");
    assert_eq!(jobs["rollback"]["if"], "inputs.rollback");
    assert_eq!(
        workflow["on"]["workflow_dispatch"]["inputs"]["rollback"]["type"],
        "boolean"
    );
    assert_eq!(
        jobs["deploy"]["env"]["PUSH_TOKEN"],
        "${{ secrets.PUSH_TOKEN }}"
    );
    let install = jobs["install"]["steps"].to_string();
    assert!(
        install.contains("actions/setup-python") && install.contains("\"3.11\""),
        "{install}"
    );
    assert!(
        install.contains("pip install -r requirements-dev.txt"),
        "{install}"
    );
    let test = jobs["test"]["steps"].to_string();
    assert!(
        test.contains("python -m pytest -v -x -q || test $? -eq 5"),
        "{test}"
    );
    assert!(
        jobs["build_test"]["steps"]
            .to_string()
            .contains("python -c 'print('\\\\''argv'\\\\'')'")
    );
    // No equivalent: a warning on stderr and a comment in the file, each.
    for lost in [
        "`jobs: 3`",
        "`grace_period: 10s`",
        "`retries: 3`",
        "stage `shell` is interactive",
        "stage `commit` commits on the runner",
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("warning: ") && l.contains(lost)),
            "{lost}: {err}"
        );
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("# pydeployer: ") && l.contains(lost)),
            "{lost}"
        );
    }
    // build.test and build_test: valid, distinct job ids, reported.
    assert!(
        err.contains("note: stage `build.test` is job `build_test-2`"),
        "{err}"
    );
    assert_eq!(jobs["build_test-2"]["name"], "build.test");
    assert!(jobs["build_test"]["name"].is_null());
}

#[test]
fn expressions_in_run_are_printed_as_text_by_github() {
    let project = Project::with_pipeline(RUN_ONLY);
    let (text, _) = export(&project, "github", "ci.yml");
    let workflow = yaml(&text);
    let run = workflow["jobs"]["build_test-2"]["steps"][1]["run"]
        .as_str()
        .unwrap()
        .to_owned();
    // GitHub evaluates `${{ '${{' }}` to the text `${{`; the rest is not an expression.
    assert_eq!(run, "echo '${{ '${{' }} github.token }}'");
    assert_eq!(evaluate_like_github(&run), "echo '${{ github.token }}'");
    lint_github(&project, "ci.yml");
}

/// What GitHub makes of the string literals in `${{ … }}` (all this test needs).
fn evaluate_like_github(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").unwrap() + start;
        let inner = rest[start + 3..end].trim();
        let literal = inner
            .strip_prefix('\'')
            .and_then(|s| s.strip_suffix('\''))
            .unwrap_or_else(|| panic!("GitHub would evaluate `{inner}`"));
        out.push_str(&literal.replace("''", "'"));
        rest = &rest[end + 2..];
    }
    out + rest
}

#[test]
fn gitlab_files_pass_the_schema() {
    for project in [demo_project(), Project::with_pipeline(EVERY_KEY)] {
        let (text, _) = export(&project, "gitlab", ".gitlab-ci.yml");
        assert!(text.starts_with("# Generated by `pydeployer export gitlab` from pipeline.yml"));
        lint_gitlab(&project, ".gitlab-ci.yml");
        let file = yaml(&text);
        for (stage, needs) in stage_needs(&project) {
            if stage == "cleanup" {
                continue;
            }
            let job = &file[&stage];
            let got: Vec<String> = job["needs"]
                .as_array()
                .unwrap_or_else(|| panic!("{stage}: {job}"))
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(got, needs, "needs of {stage}");
        }
    }
    let project = Project::with_pipeline(EVERY_KEY);
    let (text, err) = export(&project, "gitlab", ".gitlab-ci.yml");
    let file = yaml(&text);
    assert_eq!(file["variables"]["PRICE"], "$$5 $${HOME}");
    assert_eq!(file["lint"]["retry"], 2);
    assert!(
        err.contains("GitLab retries a job at most 2 times"),
        "{err}"
    );
    assert_eq!(file["lint"]["timeout"], "2m");
    assert_eq!(file["notify"]["when"], "on_failure");
    assert_eq!(file["rollback"]["when"], "manual");
    assert!(
        text.contains("define DEPLOY_TOKEN as masked CI/CD variables"),
        "{text}"
    );
}

#[test]
fn gitlab_ci_local_runs_the_exported_pipeline_green_in_needs_order() {
    let project = Project::with_pipeline(RUN_ONLY);
    export(&project, "gitlab", ".gitlab-ci.yml");
    lint_gitlab(&project, ".gitlab-ci.yml");
    git(project.path(), &["init", "-q", "-b", "main"]);
    git(project.path(), &["add", "-A"]);
    git(
        project.path(),
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qm",
            "init",
        ],
    );
    let node = tool("node");
    let (code, version) = run_tool(&node, &["--version"], project.path());
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        code == 0 && major >= 22,
        "gitlab-ci-local needs Node 22: {version}"
    );
    let (code, log) = run_tool(
        &tool("gitlab-ci-local"),
        &["--shell-executor-no-image", "--no-color"],
        project.path(),
    );
    assert_eq!(code, 0, "{log}");
    // Each job once, after its needs.
    let at = |job: &str, what: &str| {
        let lines: Vec<usize> = log
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with(job) && l[job.len()..].trim_start().starts_with(what))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(lines.len(), 1, "`{job} {what}` once:\n{log}");
        lines[0]
    };
    let needs = [
        ("b", "first"),
        ("build.test", "first"),
        ("build_test", "first"),
        ("last", "b"),
        ("last", "build.test"),
        ("last", "build_test"),
    ];
    for (job, need) in needs {
        assert!(
            at(need, "finished") < at(job, "starting"),
            "{job} after {need}:\n{log}"
        );
    }
    for job in ["first", "b", "build.test", "build_test", "last"] {
        assert!(log.contains(&format!("PASS  {job}")), "{job}:\n{log}");
    }
    // Printed as written: no `$` expanded by GitLab, no expression evaluated.
    assert!(log.contains("> b: price $5 ${HOME}"), "{log}");
    assert!(log.contains("> ${{ github.token }}"), "{log}");
    assert!(log.contains("> argv with 'quotes' and $dollar"), "{log}");
}

#[test]
fn check_says_whether_the_file_is_stale() {
    let project = Project::with_pipeline(RUN_ONLY);
    let file = ".github/workflows/pydeployer.yml";
    let check = ["export", "github", "-o", file, "--check"];
    let (code, _, err) = project.run(&check);
    assert_eq!(code, 1, "no file yet is stale: {err}");
    export(&project, "github", file);
    let (code, _, err) = project.run(&check);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("is up to date"), "{err}");
    // The same output every time.
    let (_, first, _) = project.run(&["export", "github"]);
    let (_, second, _) = project.run(&["export", "github"]);
    assert_eq!(first, second);
    assert_eq!(first, project.read(file));
    project.file(
        "pipeline.yml",
        &RUN_ONLY.replace("echo last-ran", "echo changed"),
    );
    let before = project.read(file);
    let (code, _, err) = project.run(&check);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is stale") && err.contains("pydeployer export github -o"),
        "{err}"
    );
    assert_eq!(project.read(file), before, "--check writes nothing");
}

#[test]
fn bad_input_is_exit_2_and_writes_nothing() {
    let project = Project::with_pipeline("stages:\n  a: { run: echo, needs: [nope] }\n");
    let (code, _, err) = project.run(&["export", "github", "-o", "out.yml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("pipeline.yml"), "{err}");
    assert!(!project.exists("out.yml"));
    let (code, _, err) = project.run(&["export", "jenkins"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("jenkins") && err.contains("github"), "{err}");
    let (code, _, err) = project.run(&["export", "github", "--check"]);
    assert_eq!(code, 2, "--check needs -o: {err}");
}
