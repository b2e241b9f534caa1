//! `pydeployer schema` checked by a real JSON Schema validator (Python's `jsonschema`, which
//! `.ci/run` installs), and `pydeployer init` run in fresh projects, then validated and run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{Project, git, push_seed};

/// Checks the schema against the draft-07 meta-schema, then validates each instance; prints
/// one line per instance: `OK` or `ERR` and the validator's messages.
const VALIDATE_PY: &str = r#"
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft7Validator.check_schema(schema)
validator = jsonschema.Draft7Validator(schema)
for path in sys.argv[2:]:
    errors = sorted(validator.iter_errors(json.load(open(path))), key=str)
    print("OK" if not errors else "ERR " + " | ".join(e.message for e in errors))
"#;

/// The YAML as JSON, read by the same parser pydeployer uses (so `on`, `yes`, `1.0` mean what
/// they mean to pydeployer, not what PyYAML's YAML 1.1 would make of them).
fn yaml_to_json(yaml: &str) -> serde_json::Value {
    serde_saphyr::from_str::<serde_json::Value>(yaml).expect("YAML")
}

/// `pydeployer schema [ARGS]`, written to `dir/NAME`.
fn write_schema(project: &Project, args: &[&str], name: &str) -> PathBuf {
    let mut full = vec!["schema"];
    full.extend_from_slice(args);
    let (code, stdout, stderr) = project.run(&full);
    assert_eq!(code, 0, "{stderr}");
    let path = project.join(name);
    fs::write(&path, &stdout).expect("write schema");
    path
}

/// Validates each YAML text against `schema` with Python's jsonschema; one result per text.
fn jsonschema_results(dir: &Path, schema: &Path, yamls: &[&str]) -> Vec<String> {
    let mut args = vec![
        "-c".to_owned(),
        VALIDATE_PY.to_owned(),
        schema.display().to_string(),
    ];
    for (i, yaml) in yamls.iter().enumerate() {
        let path = dir.join(format!("instance-{i}.json"));
        fs::write(&path, yaml_to_json(yaml).to_string()).expect("write instance");
        args.push(path.display().to_string());
    }
    let out = std::process::Command::new("python3")
        .args(&args)
        .output()
        .expect("python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'jsonschema'"),
        "Python's jsonschema is missing: python3 -m pip install jsonschema (.ci/run does)"
    );
    assert!(out.status.success(), "jsonschema failed: {stderr}");
    let results: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(results.len(), yamls.len(), "{results:?}");
    results
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_schema_is_valid_draft_07_and_the_repositorys_own_files_pass_it() {
    let project = Project::new();
    let pipeline_schema = write_schema(&project, &[], "pipeline.schema.json");
    let stages_schema = write_schema(&project, &["--stages-file"], "stages.schema.json");

    let pipeline = fs::read_to_string(repo_root().join("pipeline.yml")).expect("pipeline.yml");
    let results = jsonschema_results(project.path(), &pipeline_schema, &[&pipeline]);
    assert_eq!(results, ["OK"], "pipeline.yml");

    let mut stage_files: Vec<PathBuf> = fs::read_dir(repo_root().join("stages.d"))
        .expect("stages.d")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    stage_files.sort();
    assert!(stage_files.len() >= 6, "{stage_files:?}");
    let texts: Vec<String> = stage_files
        .iter()
        .map(|p| fs::read_to_string(p).expect("stage file"))
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let results = jsonschema_results(project.path(), &stages_schema, &texts);
    for (file, result) in stage_files.iter().zip(&results) {
        assert_eq!(result, "OK", "{}", file.display());
    }
    // A stages.d file does not pass as a pipeline.yml (stage names are not settings).
    let results = jsonschema_results(project.path(), &pipeline_schema, &texts[..1]);
    assert!(results[0].starts_with("ERR"), "{results:?}");
}

/// Pipelines the validator accepts; the schema must accept them too.
const ACCEPTED: &[&str] = &[
    "stages:\n  a: { run: echo hi }\n",
    "version: 1\nname: app\njobs: 4\ngrace_period: 1h 30m\nsecrets: [TOKEN_1]\nstages:\n  a: { run: [echo, hi], timeout: 90s }\n",
    "repo: { url: https://example.com/a.git, branch: release/1.2, remote: upstream, dir: ws }\nstages:\n  c: { uses: git/clone }\n",
    "env: { N: 1, B: true, F: 1.5, E: ~, S: text }\nlogs: { dir: out, keep: 3 }\narchive: a/b.json\n",
    "env:\nstages:\n",
    "stages:\n  t.1_x-y: { uses: pytest, with: { args: -x, allow_no_tests: true }, timeout: 1h30m, retries: 2 }\n",
    "stages:\n  t: { uses: pytest, with: { args: [-x, tests] }, timeout: 1.5h, when: always }\n",
    "stages:\n  v: { uses: python/venv, with: { requirements: r.txt, python: python3 }, timeout: 2days }\n  w: { uses: python/venv, with: ~ }\n",
    "stages:\n  m: { uses: git/commit, with: { message: hi }, needs: [x], allow_failure: true }\n  x: { run: \"true\", env: { A: b }, workdir: sub, interactive: true, secrets: [A], description: d, when: manual }\nrepo: { url: o.git }\n",
];

/// Pipelines the validator refuses, and what is wrong with each; the schema must refuse them.
const REFUSED: &[(&str, &str)] = &[
    ("colour: red\n", "unknown top-level key"),
    ("stages:\n  a: { run: x, when: sometimes }\n", "bad `when`"),
    (
        "stages:\n  a: { run: x, colour: red }\n",
        "unknown stage key",
    ),
    (
        "stages:\n  a: { run: x, uses: pytest }\n",
        "both `run` and `uses`",
    ),
    ("stages:\n  a: { needs: [b] }\n", "neither `run` nor `uses`"),
    ("stages:\n  a: { uses: docker }\n", "unknown action"),
    (
        "stages:\n  a: { uses: pytest, with: { colour: red } }\n",
        "unknown parameter",
    ),
    (
        "stages:\n  a: { uses: git/clone, with: { args: x } }\nrepo: { url: o.git }\n",
        "parameter of another action",
    ),
    (
        "stages:\n  a: { uses: pytest, with: { allow_no_tests: 1 } }\n",
        "flag that is not a bool",
    ),
    (
        "stages:\n  a: { run: x, with: { args: x } }\n",
        "`with` without `uses`",
    ),
    (
        "stages:\n  .hidden: { run: x }\n",
        "stage name starting with `.`",
    ),
    ("stages:\n  a/b: { run: x }\n", "`/` in a stage name"),
    (
        "stages:\n  a: { run: x, needs: [\"a b\"] }\n",
        "bad name in `needs`",
    ),
    (
        "stages:\n  a: { run: x, timeout: 10 }\n",
        "duration without a unit",
    ),
    (
        "stages:\n  a: { run: x, timeout: ten minutes }\n",
        "not a duration",
    ),
    (
        "stages:\n  a: { run: x, retries: 101 }\n",
        "too many retries",
    ),
    ("stages:\n  a: { run: \"  \" }\n", "empty command"),
    ("stages:\n  a: { run: [] }\n", "empty argv"),
    ("stages:\n  a: { run: true }\n", "a boolean as the command"),
    ("stages:\n  a: { run: [1, 2] }\n", "argv of numbers"),
    (
        "stages:\n  a: { run: x, env: { 1BAD: x } }\n",
        "bad env name",
    ),
    (
        "stages:\n  a: { run: x, secrets: [has-dash] }\n",
        "bad secret name",
    ),
    (
        "stages:\n  a: { run: x, allow_failure: yes please }\n",
        "bool that is not one",
    ),
    ("repo: { branch: main }\n", "repo without url"),
    (
        "repo: { url: \"-oProxyCommand=x\" }\n",
        "url starting with `-`",
    ),
    ("repo: { url: o.git, colour: red }\n", "unknown repo key"),
    ("logs: { keep: 0 }\n", "keep out of range"),
    ("logs: { dir: logs, colour: red }\n", "unknown logs key"),
    ("jobs: 0\n", "jobs out of range"),
    ("version: 2\n", "unknown version"),
    ("name: ~\n", "null name"),
    ("grace_period: soon\n", "bad grace_period"),
    ("env: [A]\n", "env that is not a mapping"),
];

#[test]
fn the_schema_and_the_validator_agree() {
    let project = Project::new();
    let schema = write_schema(&project, &[], "pipeline.schema.json");
    let results = jsonschema_results(project.path(), &schema, ACCEPTED);
    for (yaml, result) in ACCEPTED.iter().zip(&results) {
        assert_eq!(result, "OK", "the schema refuses:\n{yaml}");
        let case = Project::with_pipeline(yaml);
        // A pipeline needs a stage somewhere; the schema of pipeline.yml cannot require one
        // there, since stages.d/ may hold them all.
        case.file("stages.d/99-any.yml", "any-stage: { run: 'true' }\n");
        let (code, _, stderr) = case.run(&["validate"]);
        assert_eq!(code, 0, "the validator refuses:\n{yaml}\n{stderr}");
    }
    let yamls: Vec<&str> = REFUSED.iter().map(|(yaml, _)| *yaml).collect();
    let results = jsonschema_results(project.path(), &schema, &yamls);
    for ((yaml, what), result) in REFUSED.iter().zip(&results) {
        assert!(
            result.starts_with("ERR"),
            "the schema accepts {what}:\n{yaml}"
        );
        let case = Project::with_pipeline(yaml);
        let (code, _, _) = case.run(&["validate"]);
        assert_eq!(code, 2, "the validator accepts {what}:\n{yaml}");
    }
}

#[test]
fn a_broken_stage_file_is_refused_by_the_stages_file_schema() {
    let project = Project::new();
    let schema = write_schema(&project, &["--stages-file"], "stages.schema.json");
    let results = jsonschema_results(
        project.path(),
        &schema,
        &[
            "test:\n  uses: pytest\n  with: { args: [-x] }\n  needs: [install]\n",
            "",
            "test:\n  uses: pytest\n  when: later\n",
            "test:\n  uses: pytest\n  colour: red\n",
        ],
    );
    assert_eq!(results[0], "OK");
    assert_eq!(results[1], "OK", "an empty stage file adds nothing");
    assert!(
        results[2].contains("'later' is not one of"),
        "{}",
        results[2]
    );
    assert!(
        results[3].contains("'colour' was unexpected"),
        "{}",
        results[3]
    );
}

#[test]
fn schema_help_has_an_example() {
    let project = Project::new();
    for command in ["schema", "init"] {
        let (code, stdout, _) = project.run(&[command, "--help"]);
        assert_eq!(code, 0);
        assert!(stdout.contains("Example"), "{command} --help:\n{stdout}");
    }
}

/// A small Python project: a module, its tests, and requirements.txt naming pytest.
fn python_project(project: &Project, dir: &str) {
    project.file(
        &format!("{dir}/calc.py"),
        "def add(a, b):\n    return a + b\n",
    );
    project.file(
        &format!("{dir}/tests/test_calc.py"),
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    );
    project.file(&format!("{dir}/requirements.txt"), "pytest\n");
}

/// Every file under `dir` with its contents.
fn snapshot(project: &Project) -> Vec<(String, Option<String>)> {
    project
        .tree()
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(project.join(&path)).ok();
            (path, text)
        })
        .collect()
}

#[test]
fn init_in_a_fresh_python_project_writes_a_pipeline_that_validates_and_runs() {
    let project = Project::new();
    python_project(&project, ".");

    let (code, stdout, stderr) = project.run(&["init"]);
    assert_eq!(code, 0, "{stderr}");
    for file in [
        "pipeline.yml",
        "stages.d/20-install.yml",
        "stages.d/30-test.yml",
    ] {
        assert!(stdout.contains(&format!("wrote {file}")), "{stdout}");
        assert!(project.exists(file), "{file}");
    }
    assert!(stdout.contains("no git remote"), "{stdout}");
    let pipeline = project.read("pipeline.yml");
    assert!(
        !pipeline.contains("\nrepo:"),
        "no remote, no repo:\n{pipeline}"
    );
    assert!(pipeline.starts_with('#'), "commented:\n{pipeline}");
    assert!(!project.exists("stages.d/10-clone.yml"));
    assert!(!project.exists("stages.d/50-deploy.yml"));

    // The generated files pass the schema too.
    let schema = write_schema(&project, &[], ".pipeline.schema.json");
    let stages_schema = write_schema(&project, &["--stages-file"], ".stages.schema.json");
    assert_eq!(
        jsonschema_results(project.path(), &schema, &[&pipeline]),
        ["OK"]
    );
    let install = project.read("stages.d/20-install.yml");
    let test = project.read("stages.d/30-test.yml");
    assert_eq!(
        jsonschema_results(project.path(), &stages_schema, &[&install, &test]),
        ["OK", "OK"]
    );

    let (code, stdout, stderr) = project.run(&["validate"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("2 stages, no problems"), "{stdout}");

    let (code, stdout, stderr) = project.run(&["run"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("1 passed, 0 failed"), "{stderr}");
    assert!(
        project.exists(".venv/bin/pytest"),
        "installed in the project's .venv"
    );

    // A second init refuses, says once that the folder is set up, and changes nothing.
    let before = snapshot(&project);
    let (code, _, stderr) = project.run(&["init"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("this folder already has a pipeline (pipeline.yml)"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(stderr.contains("1 problem"), "{stderr}");
    assert_eq!(snapshot(&project), before);
}

#[test]
fn init_writes_nothing_when_a_single_file_is_in_the_way() {
    let project = Project::new();
    python_project(&project, ".");
    project.file("stages.d/30-test.yml", "mine: { run: echo mine }\n");
    let before = snapshot(&project);
    let (code, _, stderr) = project.run(&["init"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("stages.d/30-test.yml already exists"),
        "{stderr}"
    );
    assert!(!project.exists("pipeline.yml"));
    assert_eq!(snapshot(&project), before);

    // Another stage file would join the generated pipeline: refused too.
    let project = Project::new();
    python_project(&project, ".");
    project.file("stages.d/05-lint.yml", "lint: { run: echo lint }\n");
    let (code, _, stderr) = project.run(&["init"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("stages.d/05-lint.yml"), "{stderr}");
    assert!(!project.exists("pipeline.yml"));
}

#[test]
fn init_without_python_writes_a_placeholder_that_runs() {
    let project = Project::new();
    project.file("README", "hello\n");
    let (code, stdout, stderr) = project.run(&["init"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("wrote stages.d/30-build.yml"), "{stdout}");
    let (code, stdout, stderr) = project.run(&["run"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
}

#[test]
fn init_in_a_clone_builds_from_its_remote_and_deploys_only_when_asked() {
    let project = Project::new();
    python_project(&project, "seed");
    push_seed(&project);
    git(project.path(), &["clone", "-q", "origin.git", "app"]);

    let (code, stdout, stderr) = project.run(&["-f", "app/pipeline.yml", "init"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("git remote origin"), "{stdout}");
    for file in [
        "app/pipeline.yml",
        "app/stages.d/10-clone.yml",
        "app/stages.d/20-install.yml",
        "app/stages.d/30-test.yml",
        "app/stages.d/50-deploy.yml",
    ] {
        assert!(project.exists(file), "{file}\n{stdout}");
    }
    let pipeline = project.read("app/pipeline.yml");
    assert!(pipeline.contains("\nrepo:"), "{pipeline}");
    assert!(pipeline.contains("origin.git"), "{pipeline}");
    assert!(pipeline.contains("branch: master"), "{pipeline}");

    let (code, _, stderr) = project.run(&["-f", "app/pipeline.yml", "validate"]);
    assert_eq!(code, 0, "{stderr}");
    // `run` clones, installs and tests; deploy and rollback are manual.
    let (code, stdout, stderr) = project.run(&["-f", "app/pipeline.yml", "run"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("1 passed, 0 failed"), "{stderr}");
    assert!(project.exists("app/workspace/calc.py"), "cloned");
    assert!(
        !project.exists("app/archive/deploy_history.json"),
        "nothing deployed"
    );
    // Named, deploy runs after the tests and is recorded.
    let (code, stdout, stderr) = project.run(&["-f", "app/pipeline.yml", "run", "deploy"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let ledger = project.read("app/archive/deploy_history.json");
    assert!(ledger.contains("\"deploy\""), "{ledger}");
}

#[test]
fn init_json_says_what_was_written_and_found() {
    let project = Project::new();
    python_project(&project, "seed");
    push_seed(&project);
    git(project.path(), &["clone", "-q", "origin.git", "app"]);
    let (code, stdout, stderr) =
        project.run(&["--format", "json", "-f", "app/pipeline.yml", "init"]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"));
    let written: Vec<&str> = json["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // As the text output names them: relative to where pydeployer ran.
    assert!(written.contains(&"app/pipeline.yml"), "{json}");
    assert!(written.contains(&"app/stages.d/50-deploy.yml"), "{json}");
    for file in &written {
        assert!(project.exists(file), "{file}");
    }
    assert_eq!(json["name"], "app", "{json}");
    assert!(
        json["remote"]["url"]
            .as_str()
            .unwrap()
            .ends_with("origin.git"),
        "{json}"
    );
    assert_eq!(json["remote"]["branch"], "master", "{json}");
    assert_eq!(json["remote"]["credentials_removed"], false, "{json}");
    assert_eq!(json["requirements"], true, "{json}");
    assert_eq!(json["tests"], "tests/", "{json}");
    assert!(
        json["notes"][0].as_str().unwrap().contains("workspace/"),
        "{json}"
    );
}

#[test]
fn init_never_writes_or_prints_a_token_from_the_remote_url() {
    for (remote, token) in [
        (
            "https://ghp_SECRET0123456789:x-oauth-basic@github.com/o/r.git",
            "ghp_SECRET0123456789",
        ),
        (
            "https://ghp_SECRET0123456789@github.com/o/r.git",
            "ghp_SECRET0123456789",
        ),
        (
            "https://deploy:pa55w0rd-XYZ@example.com/o/r.git",
            "pa55w0rd-XYZ",
        ),
        (
            "https://gitlab.com/o/r.git?private_token=glpat-SECRET42",
            "glpat-SECRET42",
        ),
    ] {
        let project = Project::new();
        python_project(&project, ".");
        git(project.path(), &["init", "-q"]);
        git(project.path(), &["remote", "add", "origin", remote]);
        for format in ["text", "json"] {
            let _ = std::fs::remove_file(project.join("pipeline.yml"));
            let _ = std::fs::remove_dir_all(project.join("stages.d"));
            let (code, stdout, stderr) = project.run(&["--format", format, "init"]);
            assert_eq!(code, 0, "{remote}: {stderr}");
            assert!(!stdout.contains(token), "{remote}: {stdout}");
            assert!(!stderr.contains(token), "{remote}: {stderr}");
            assert!(stdout.contains("password or token"), "{remote}: {stdout}");
            for file in project.tree() {
                let path = project.join(&file);
                if path.is_file() && !file.starts_with(".git") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    assert!(!text.contains(token), "{remote}: {file} holds the token");
                }
            }
        }
    }
}

#[test]
fn init_adds_pydeployers_folders_to_gitignore_and_says_so() {
    let project = Project::new();
    python_project(&project, ".");
    project.file(".gitignore", "__pycache__/\n/logs\n");
    let (code, stdout, stderr) = project.run(&["init"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("added archive/, .venv/ to .gitignore"),
        "{stdout}"
    );
    let ignore = project.read(".gitignore");
    assert!(ignore.starts_with("__pycache__/\n/logs\n"), "{ignore}");
    assert_eq!(ignore.matches("logs").count(), 2, "{ignore}"); // the comment names them
    assert!(ignore.contains("\narchive/\n.venv/\n"), "{ignore}");
}
