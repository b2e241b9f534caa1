//! `pydeployer import github|gitlab`: the seed workflow on a real Python project (real git,
//! pip, flake8, pytest, build), matrices and needs, unsupported actions, a round trip through
//! `export`, and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Project, git};
use serde_json::Value;

/// The workflow of the original plan (`../shared/seed-workflow.yml`), kept here so that a
/// clone of this repository alone runs the tests.
const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/seed-workflow.yml"
);

/// The seed workflow: from the shared folder beside the repository (CI lays it there).
fn seed() -> String {
    std::fs::read_to_string(SEED).unwrap_or_else(|e| panic!("cannot read {SEED}: {e}"))
}

/// Each stage's needs, and whether a plain run runs it.
type Stages = BTreeMap<String, (Vec<String>, bool)>;

/// `plan --format json`: the stages, and the waves of a plain run.
fn plan(project: &Project) -> (Stages, Vec<Vec<String>>) {
    let (code, out, err) = project.run(&["plan", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    let mut stages = BTreeMap::new();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    for stage in plan["stages"].as_array().unwrap() {
        stages.insert(
            stage["name"].as_str().unwrap().to_owned(),
            (strings(&stage["needs"]), true),
        );
    }
    for left in plan["not_run"].as_array().unwrap() {
        stages.insert(
            left["name"].as_str().unwrap().to_owned(),
            (Vec::new(), false),
        );
    }
    let waves = plan["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(strings)
        .collect();
    (stages, waves)
}

/// A small Python project in a git repository (branch `master`): a module, its tests, and
/// what the seed workflow installs.
fn python_project() -> Project {
    let project = Project::new();
    project
        .file("calc.py", "def add(a, b):\n    return a + b\n")
        .file(
            "tests/test_calc.py",
            "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        )
        .file("requirements.txt", "flake8\npytest\nbuild\n")
        .file(".flake8", "[flake8]\nexclude = .venv,build,dist,workspace\n")
        .file(
            "pyproject.toml",
            "[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n\n[project]\nname = \"calc\"\nversion = \"0.1.0\"\n\n[tool.setuptools]\npy-modules = [\"calc\"]\n\n[tool.pytest.ini_options]\npythonpath = [\".\"]\n",
        )
        .file(".gitignore", "workspace/\nlogs/\n.pydeployer/\n");
    git(project.path(), &["init", "-q", "-b", "master"]);
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
            "calc",
        ],
    );
    project
}

#[test]
fn the_seed_workflow_runs_green_here_with_publish_left_out_and_said_why() {
    let project = python_project();
    project.file("seed.yml", &seed());
    let (code, out, err) = project.run(&["import", "github", "seed.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    // The report: what was not carried over, and why publish is left out.
    assert!(out.contains("Not carried over:"), "{out}");
    assert!(out.contains("`on:`"), "{out}");
    assert!(
        out.contains("GitHub runs it only on main") && out.contains("PYPI_PASSWORD"),
        "{out}"
    );
    let (code, validated, err) = project.run(&["validate"]);
    assert_eq!(code, 0, "{err}");
    assert!(validated.contains("no problems"));
    let (stages, _) = plan(&project);
    let publish = stages
        .iter()
        .find(|(name, _)| name.contains("deploy"))
        .expect("a publish stage");
    assert!(!publish.1.1, "publish is not part of a plain run");
    let stages_file = project.read("stages.d/30-build.yml");
    assert!(
        stages_file.contains("secrets: [PYPI_PASSWORD, PYPI_USERNAME]"),
        "{stages_file}"
    );
    assert!(
        stages_file.contains("TWINE_PASSWORD=\"${PYPI_PASSWORD}\""),
        "{stages_file}"
    );

    let output = project
        .cmd(&["run"])
        .env_remove("PYPI_USERNAME")
        .env_remove("PYPI_PASSWORD")
        .output()
        .unwrap();
    let run_err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{run_err}\n{}",
        project.last_log()
    );
    let log = project.last_log();
    assert!(log.contains("1 passed"), "pytest ran: {log}");
    assert!(
        project.join("workspace/dist").is_dir(),
        "python -m build ran: {log}"
    );
    // Asked for by name without the tokens, it stops before anything runs.
    let (code, _, err) = project.run(&["run", "--only", publish.0]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("PYPI_"), "{err}");
    // With them, on master, the step says why it does nothing.
    let output = project
        .cmd(&["run", "--only", publish.0, "-v"])
        .env("PYPI_USERNAME", "user")
        .env("PYPI_PASSWORD", "pass-word-123")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(
        project
            .last_log()
            .contains("skipped: GitHub runs it only on main"),
        "{}",
        project.last_log()
    );
}

const MATRIX: &str = r#"
name: matrix
on: [push]
env:
  GREETING: hello
jobs:
  lint:
    runs-on: ubuntu-latest
    steps:
      - run: echo lint > lint.txt
  test:
    needs: lint
    runs-on: ubuntu-latest
    timeout-minutes: 5
    strategy:
      matrix:
        os: [linux, mac]
        py: ['3.11', '3.12']
    env:
      WHERE: ${{ matrix.os }}
    steps:
      - name: Run the tests
        run: echo "$GREETING ${{ env.WHERE }} ${{ matrix.py }}" > "out-${{ matrix.os }}-${{ matrix.py }}.txt"
      - name: Not everywhere
        if: failure()
        run: echo failed
  package:
    needs: [test]
    runs-on: ubuntu-latest
    services:
      redis: { image: redis }
    steps:
      - run: cat out-*.txt > all.txt
      - uses: docker/build-push-action@v5
        with: { push: false }
  report:
    needs: package
    runs-on: ubuntu-latest
    continue-on-error: true
    steps:
      - run: test -s all.txt
"#;

#[test]
fn a_matrix_becomes_a_stage_per_combination_in_githubs_order() {
    let project = Project::new();
    project.file("matrix.yml", MATRIX);
    let (code, out, err) = project.run(&["import", "github", "matrix.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    let (stages, waves) = plan(&project);
    let tests = [
        "test-linux-3.11",
        "test-linux-3.12",
        "test-mac-3.11",
        "test-mac-3.12",
    ];
    for test in tests {
        assert_eq!(stages[test], (vec!["lint".to_owned()], true), "{test}");
    }
    assert_eq!(stages["package"].0, tests);
    assert_eq!(stages["report"].0, ["package"]);
    // GitHub's order: lint, then the four combinations at once, then package, then report.
    assert_eq!(waves[0], ["lint"]);
    assert_eq!(waves[1], tests);
    assert!(waves[2].contains(&"package".to_owned()), "{waves:?}");
    assert_eq!(waves[3], ["report"]);
    // What could not come: the service, the action (a stage that says why, left out).
    assert!(
        out.contains("job `package`: `services:` is not carried over"),
        "{out}"
    );
    let action = "package-build-push-action";
    assert!(out.contains(&format!("stage `{action}`")), "{out}");
    assert!(!stages[action].1, "{stages:?}");
    // The `if: failure()` step reacts to the job's failure.
    assert!(stages.contains_key("test-linux-3.11-not-everywhere"));

    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}\n{}", project.last_log());
    assert_eq!(
        project.read("all.txt"),
        "hello linux 3.11\nhello linux 3.12\nhello mac 3.11\nhello mac 3.12\n"
    );
    let (code, _, err) = project.run(&["run", action]);
    assert_ne!(code, 0, "{err}");
    assert!(
        project.last_log().contains("has no local equivalent"),
        "{}",
        project.last_log()
    );
}

#[test]
fn export_then_import_gives_back_the_stages_and_their_needs() {
    let every_key = r#"
name: round-trip
repo: { url: "https://example.com/acme/app.git", branch: main }
env: { A: "$1 ${{ x }}" }
secrets: [DEPLOY_TOKEN]
stages:
  clone: { uses: git/clone }
  install: { uses: python/venv, with: { python: python3.11 }, needs: [clone] }
  lint: { run: ruff check ., needs: [install], timeout: 90s, allow_failure: true }
  build.test: { run: "echo '${{ github.token }}'", needs: [clone] }
  build_test: { run: [echo, hi], needs: [clone] }
  commit: { uses: git/commit, needs: [clone] }
  test: { uses: pytest, needs: [install, lint, build.test, build_test] }
  deploy: { uses: git/push, needs: [test, commit], secrets: [PUSH_TOKEN] }
  notify: { run: echo failed, when: on_failure, needs: [test] }
  cleanup: { run: echo done, when: always }
  rollback: { uses: git/revert, when: manual }
"#;
    let demo = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline.yml"))
        .unwrap();
    let demo_stages: Vec<(String, String)> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("stages.d"))
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                (
                    format!("stages.d/{}", path.file_name().unwrap().to_str().unwrap()),
                    std::fs::read_to_string(&path).unwrap(),
                )
            })
            .collect();
    for (label, pipeline, extra) in [
        ("demo", demo.as_str(), demo_stages),
        ("every key", every_key, Vec::new()),
    ] {
        let original = Project::with_pipeline(pipeline);
        for (path, text) in &extra {
            original.file(path, text);
        }
        let (code, _, err) = original.run(&["export", "github", "-o", "ci.yml"]);
        assert_eq!(code, 0, "{err}");
        let back = Project::new();
        back.file("ci.yml", &original.read("ci.yml"));
        let (code, out, err) = back.run(&["import", "github", "ci.yml"]);
        assert_eq!(code, 0, "{label}: {out}{err}");
        assert_eq!(plan(&back).0, plan(&original).0, "{label}:\n{out}");
    }
}

#[test]
fn gitlab_files_import_with_stage_order_matrix_and_dollars() {
    let project = Project::new();
    project.file(
        ".gitlab-ci.yml",
        r#"
stages: [build, test, deploy]
variables:
  PRICE: "$$5"
  HOMEDIR: "$HOME/x"
build:
  stage: build
  script:
    - echo "$PRICE" > price.txt
test:
  stage: test
  parallel:
    matrix:
      - PY: ["3.11", "3.12"]
  script: echo "py $PY" > "py-$PY.txt"
  after_script: [echo cleanup]
deploy:
  stage: deploy
  when: manual
  script: [echo deploy]
  rules:
    - if: $CI_COMMIT_BRANCH == "main"
"#,
    );
    let (code, out, err) = project.run(&["import", "gitlab", ".gitlab-ci.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("job `deploy`: `rules:` is not carried over"),
        "{out}"
    );
    let (stages, _) = plan(&project);
    assert_eq!(stages["test-3.11"].0, ["build"]);
    assert_eq!(stages["test-3.12"].0, ["build"]);
    assert!(!stages["deploy"].1, "manual");
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}\n{}", project.last_log());
    assert_eq!(project.read("price.txt"), "$5\n");
    assert_eq!(project.read("py-3.12.txt"), "py 3.12\n");
}

#[test]
fn bad_input_is_exit_2_with_the_place_and_writes_nothing() {
    let project = Project::new();
    let (code, _, err) = project.run(&["import", "github", "missing.yml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read missing.yml"), "{err}");

    project.file("bad.yml", "name: x\njobs:\n  a: [unclosed\n");
    let (code, _, err) = project.run(&["import", "github", "bad.yml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.yml:") && err.contains("invalid YAML"),
        "{err}"
    );

    project.file(
        "needs.yml",
        "jobs:\n  a:\n    runs-on: x\n    steps: [{ run: echo }]\n  b:\n    needs: [aa]\n    steps: [{ run: echo }]\n",
    );
    let (code, _, err) = project.run(&["import", "github", "needs.yml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("needs.yml:6:") && err.contains("did you mean `a`"),
        "{err}"
    );
    assert!(!project.exists("pipeline.yml") && !project.exists("stages.d"));

    let (code, _, err) = project.run(&["import", "circleci", "needs.yml"]);
    assert_eq!(code, 2, "{err}");

    project.file("pipeline.yml", "stages: { a: { run: echo } }\n");
    project.file("ok.yml", "jobs:\n  a:\n    steps: [{ run: echo }]\n");
    let (code, _, err) = project.run(&["import", "github", "ok.yml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("never overwrites"), "{err}");
    assert!(!project.exists("stages.d"));
}
