//! The Python CI kit, the cache, artifacts and `run --failed`, on the real binary: fast cases
//! with `run:` stages, and real ruff, coverage, build and twine (installed into the test
//! project's .venv by the pipeline itself) on a real PyPI sdist, published to a real
//! pypiserver on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Project, git};

/// The summary row of `stage` in a run's stderr.
fn row<'a>(stderr: &'a str, stage: &str) -> &'a str {
    stderr
        .lines()
        .rev()
        .find(|l| l.split_whitespace().next() == Some(stage))
        .unwrap_or_else(|| panic!("no summary row for {stage} in:\n{stderr}"))
}

#[test]
fn globs_that_leave_the_stage_folder_and_a_publish_without_an_index_are_refused() {
    let project = Project::with_pipeline(
        "stages:\n  build:\n    run: \"true\"\n    artifacts: [\"../../etc/passwd\"]\n  lint:\n    run: \"true\"\n    cache: { inputs: [/etc/passwd] }\n  publish:\n    uses: python/publish\n",
    );
    let (code, _, stderr) = project.run(&["validate"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("pipeline.yml:4:17"), "{stderr}");
    assert!(
        stderr.contains("cannot reach outside the stage's folder"),
        "{stderr}"
    );
    assert!(stderr.contains("pipeline.yml:7:23"), "{stderr}");
    assert!(
        stderr.contains("`python/publish` needs `with: { repository_url }`"),
        "{stderr}"
    );
    assert!(stderr.contains("3 problems"), "{stderr}");
    let (code, _, _) = project.run(&["run"]);
    assert_eq!(code, 2);
    assert!(!project.exists("logs"), "nothing ran");
}

const CACHED: &str = "\
stages:
  lint: { run: \"echo lint >> ran\", cache: { inputs: [\"src/**/*.py\"], env: [FLAVOR] } }
  test: { run: \"echo test >> ran\", needs: [lint], cache: { inputs: [tests/t.py] } }
  build:
    run: \"echo build >> ran && mkdir -p dist && echo w > dist/app.whl\"
    needs: [test]
    cache: { inputs: [pyproject.toml], outputs: [dist/*] }
    artifacts: [dist/*]
  report: { run: \"echo report >> ran\", needs: [build] }
";

/// Runs the pipeline, returning the stages that ran (in the order they wrote `ran`).
fn ran(project: &Project, args: &[&str], env: &[(&str, &str)]) -> (Vec<String>, String) {
    let _ = fs::remove_file(project.join("ran"));
    let mut cmd = project.cmd(args);
    cmd.env_remove("FLAVOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let text = fs::read_to_string(project.join("ran")).unwrap_or_default();
    (text.lines().map(str::to_owned).collect(), stderr)
}

#[test]
fn the_cache_skips_what_did_not_change_and_nothing_else() {
    let project = Project::with_pipeline(CACHED);
    project
        .file("src/app.py", "x = 1\n")
        .file("tests/t.py", "def test(): pass\n")
        .file("pyproject.toml", "[project]\nname='app'\n");
    let (first, _) = ran(&project, &["run"], &[]);
    assert_eq!(first, ["lint", "test", "build", "report"]);

    // Unchanged: every cached stage is skipped with its reason; the one without cache runs.
    let (second, stderr) = ran(&project, &["run"], &[]);
    assert_eq!(second, ["report"]);
    assert!(
        row(&stderr, "lint").contains("cached (unchanged since 20"),
        "{stderr}"
    );
    let (code, plan, _) = project.run(&["plan", "--format", "json"]);
    assert_eq!(code, 0);
    assert!(plan.contains("cached (unchanged since"), "{plan}");

    // One input of test changes: test and what needs it rerun, not lint.
    project.file("tests/t.py", "def test(): assert True\n");
    assert_eq!(ran(&project, &["run"], &[]).0, ["test", "build", "report"]);
    // A listed variable is part of the key.
    assert_eq!(
        ran(&project, &["run"], &[("FLAVOR", "x")]).0,
        ["lint", "test", "build", "report"]
    );
    assert_eq!(ran(&project, &["run"], &[("FLAVOR", "x")]).0, ["report"]);
    // A changed definition is a miss.
    project.file(
        "pipeline.yml",
        &CACHED.replace("echo test >>", "echo  test >>"),
    );
    assert_eq!(
        ran(&project, &["run"], &[("FLAVOR", "x")]).0,
        ["test", "build", "report"]
    );
    // A missing output is a miss.
    fs::remove_dir_all(project.join("dist")).unwrap();
    assert_eq!(
        ran(&project, &["run"], &[("FLAVOR", "x")]).0,
        ["build", "report"]
    );
    // --no-cache runs everything.
    assert_eq!(
        ran(&project, &["run", "--no-cache"], &[("FLAVOR", "x")]).0,
        ["lint", "test", "build", "report"]
    );
    // A corrupted entry is a miss with a warning, never a hit.
    fs::write(
        project.join(".pydeployer/cache/lint.json"),
        "{\"version\":1,\"stage\":\"lint\",\"key\":\"0\"",
    )
    .unwrap();
    let (again, stderr) = ran(&project, &["run"], &[("FLAVOR", "x")]);
    assert_eq!(again, ["lint", "report"]);
    assert!(row(&stderr, "lint").contains("does not parse"), "{stderr}");
}

#[test]
fn a_failed_stage_is_never_a_hit() {
    let project = Project::with_pipeline(
        "stages:\n  check: { run: \"echo check >> ran; test -f ok\", cache: { inputs: [src.py] } }\n",
    );
    project.file("src.py", "1\n");
    let (code, _, _) = project.run(&["run"]);
    assert_eq!(code, 1);
    let (code, _, stderr) = project.run(&["run"]);
    assert_eq!(code, 1, "the failed stage ran again: {stderr}");
    assert_eq!(project.read("ran").lines().count(), 2);
}

#[test]
fn artifacts_are_kept_listed_and_pruned_with_their_log() {
    let project = Project::with_pipeline(
        "logs: { keep: 1 }\nstages:\n  build:\n    run: \"mkdir -p dist && echo wheel > dist/app.whl && ln -sf /etc/passwd dist/passwd\"\n    artifacts: [dist/*]\n  fail:\n    run: \"echo x > out.txt; false\"\n    artifacts: { paths: [out.txt], when: always }\n",
    );
    let (code, _, _) = project.run(&["run"]);
    assert_eq!(code, 1);
    let log = project.logs().pop().unwrap();
    let stem = log.file_stem().unwrap().to_str().unwrap().to_owned();
    assert_eq!(
        project.read(&format!("artifacts/{stem}/build/dist/app.whl")),
        "wheel\n"
    );
    assert!(project.exists(&format!("artifacts/{stem}/fail/out.txt")));
    assert!(
        !project.exists(&format!("artifacts/{stem}/build/dist/passwd")),
        "a link out is not followed"
    );

    let (code, stdout, _) = project.run(&["artifacts"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("build") && stdout.contains("dist/app.whl"),
        "{stdout}"
    );
    let (code, json, _) = project.run(&["artifacts", "--format", "json"]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let paths: Vec<&str> = doc["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["dist/app.whl", "out.txt"]);

    // keep: 1 — the next run removes the first run's log, and its artifacts with it.
    std::thread::sleep(Duration::from_millis(1100));
    let _ = project.run(&["run"]);
    assert!(
        !project.exists(&format!("artifacts/{stem}")),
        "{:?}",
        project.tree()
    );
}

#[test]
fn run_failed_reruns_what_failed_and_after_a_green_run_nothing() {
    let project = Project::with_pipeline(
        "stages:\n  clone: { run: \"echo clone >> ran\" }\n  install: { run: \"echo install >> ran\", needs: [clone] }\n  build: { run: \"echo build >> ran\", needs: [install] }\n  test: { run: \"echo test >> ran; test -f ok\", needs: [build] }\n  deploy: { run: \"echo deploy >> ran\", needs: [test] }\n",
    );
    let (code, _, _) = project.run(&["run"]);
    assert_eq!(code, 1);
    fs::remove_file(project.join("ran")).unwrap();
    project.file("ok", "");
    let (code, _, stderr) = project.run(&["run", "--failed"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(project.read("ran"), "test\ndeploy\n");
    fs::remove_file(project.join("ran")).unwrap();
    let (code, _, stderr) = project.run(&["run", "--failed"]);
    assert_eq!(code, 0);
    assert!(stderr.contains("nothing to run again"), "{stderr}");
    assert!(!project.exists("ran"));
}

// ---- real tools ----

/// A folder shared by the tests of this binary: the sdist, pip's downloads.
fn shared() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("pydeployer-pykit-tests");
        fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// more-itertools 10.5.0's sdist from PyPI, unpacked (once per test binary).
fn real_sdist() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = shared().join("sdist");
        let unpacked = dir.join("more-itertools-10.5.0");
        if !unpacked.join("pyproject.toml").is_file() {
            fs::create_dir_all(&dir).unwrap();
            let ok = Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    "more-itertools==10.5.0",
                    "-d",
                ])
                .arg(&dir)
                .status()
                .unwrap()
                .success();
            assert!(
                ok,
                "pip download of the more-itertools sdist failed (PyPI needed)"
            );
            let ok = Command::new("tar")
                .args(["xzf", "more-itertools-10.5.0.tar.gz"])
                .current_dir(&dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "tar");
        }
        unpacked
    })
}

/// A real pypiserver on a free loopback port with upload enabled (user `__token__`, the
/// token below), started once per test binary; it ends with the binary (PR_SET_PDEATHSIG is
/// not available here, so it is killed by the guard's drop at exit… and by the OS otherwise).
struct Index {
    url: String,
    _child: Child,
}

const TOKEN: &str = "pypi-test-token-Zx81qv";

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("pypiserver-").tempdir().unwrap().keep();
        let htpasswd = dir.join("htpasswd");
        let ok = Command::new("python3")
            .args(["-c", "import sys; from passlib.apache import HtpasswdFile; h = HtpasswdFile(sys.argv[1], new=True); h.set_password('__token__', sys.argv[2]); h.save()"])
            .arg(&htpasswd)
            .arg(TOKEN)
            .status()
            .unwrap()
            .success();
        assert!(ok, "passlib (installed by test.sh with pypiserver) is needed");
        fs::create_dir_all(dir.join("packages")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "pypiserver", "run", "-i", "127.0.0.1", "-p", &port.to_string(), "-P"])
            .arg(&htpasswd)
            .args(["-a", "update"])
            .arg(dir.join("packages"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pypiserver (test.sh installs it)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "pypiserver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Index {
            url: format!("http://127.0.0.1:{port}/"),
            _child: child,
        }
    })
}

/// The sdist as a git repository with a bare origin, in `project/seed`.
fn sdist_repository(project: &Project) -> PathBuf {
    let seed = project.join("seed");
    let ok = Command::new("cp")
        .arg("-r")
        .arg(real_sdist())
        .arg(&seed)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    git(
        project.path(),
        &["init", "-q", "--bare", "-b", "master", "origin.git"],
    );
    git(&seed, &["init", "-q", "-b", "master"]);
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "-q", "-m", "more-itertools 10.5.0"]);
    git(&seed, &["remote", "add", "origin", "../origin.git"]);
    git(&seed, &["push", "-q", "origin", "master"]);
    seed
}

fn pydeployer(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("pydeployer"));
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("PYDEPLOYER_STAGE")
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_python_kit_on_a_real_sdist_from_init_to_publish() {
    let project = Project::new();
    let seed = sdist_repository(&project);
    let (code, _, stderr) = pydeployer(&seed, &["init"], &[]);
    assert_eq!(code, 0, "{stderr}");
    for file in [
        "20-install.yml",
        "25-lint.yml",
        "30-test.yml",
        "40-build.yml",
        "60-publish.yml",
    ] {
        assert!(
            seed.join("stages.d").join(file).is_file(),
            "{file}: {stderr}"
        );
    }
    // The publish stage goes to the test's index.
    let publish = fs::read_to_string(seed.join("stages.d/60-publish.yml")).unwrap();
    fs::write(
        seed.join("stages.d/60-publish.yml"),
        publish.replace("https://upload.pypi.org/legacy/", &index().url),
    )
    .unwrap();

    let (code, _, stderr) = pydeployer(&seed, &["run"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        row(&stderr, "lint").contains(" findings: ")
            || row(&stderr, "lint").contains("no findings"),
        "{stderr}"
    );
    assert!(
        row(&stderr, "lint").contains(".py:"),
        "file:line in the summary: {stderr}"
    );
    let test = row(&stderr, "test");
    assert!(
        test.contains("coverage 9") && test.contains("663 passed, 0 failed, 1 skipped"),
        "{stderr}"
    );
    assert!(
        row(&stderr, "build").contains("dist/more_itertools-10.5.0-py3-none-any.whl ("),
        "{stderr}"
    );
    // Artifacts of build and test.
    let (code, listing, _) = pydeployer(&seed, &["artifacts", "--format", "json"], &[]);
    assert_eq!(code, 0);
    assert!(
        listing.contains("\"stage\": \"build\"")
            && listing.contains("more_itertools-10.5.0.tar.gz"),
        "{listing}"
    );
    assert!(listing.contains("coverage.xml"), "{listing}");

    // Unchanged: build is cached; a touched input reruns it.
    let (code, _, stderr) = pydeployer(&seed, &["run"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        row(&stderr, "build").contains("cached (unchanged since"),
        "{stderr}"
    );

    // Publish: the token is needed, used, and shown nowhere.
    let env = [("PYPI_TOKEN", TOKEN)];
    let (code, stdout, stderr) = pydeployer(&seed, &["run", "publish", "--format", "jsonl"], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("\"publish\":{") && stdout.contains("\"version\":\"10.5.0\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"sha256\":\""), "{stdout}");
    let logs: String = fs::read_dir(seed.join("logs"))
        .unwrap()
        .map(|e| fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    for text in [&stdout, &stderr, &logs] {
        assert!(!text.contains(TOKEN), "the token leaked");
    }
    // pip installs that version back from the index.
    let venv = project.join("check-venv");
    assert!(
        Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .unwrap()
            .success()
    );
    let ok = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--index-url",
        ])
        .arg(format!(
            "http://__token__:{TOKEN}@{}simple/",
            index().url.trim_start_matches("http://")
        ))
        .arg("more-itertools==10.5.0")
        .status()
        .unwrap()
        .success();
    assert!(ok, "pip install from the test index");
    // The same version again fails clearly; with skip_existing it is skipped.
    let (code, _, stderr) = pydeployer(&seed, &["run", "publish"], &env);
    assert_eq!(code, 1);
    assert!(
        row(&stderr, "publish").contains("10.5.0 is already on"),
        "{stderr}"
    );
    let publish = fs::read_to_string(seed.join("stages.d/60-publish.yml")).unwrap();
    fs::write(
        seed.join("stages.d/60-publish.yml"),
        publish.replace(
            "token_env: PYPI_TOKEN",
            "token_env: PYPI_TOKEN\n    skip_existing: true",
        ),
    )
    .unwrap();
    let (code, _, stderr) = pydeployer(&seed, &["run", "publish"], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(row(&stderr, "publish").contains("skipped"), "{stderr}");
    // The ledger records each publish: package, version, files with their sha256, index.
    let ledger: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(seed.join("archive/deploy_history.json")).unwrap(),
    )
    .unwrap();
    let publishes: Vec<&serde_json::Value> = ledger
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "publish")
        .collect();
    let statuses: Vec<&str> = publishes
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["success", "failed", "up_to_date"], "{ledger}");
    let first = &publishes[0]["publish"];
    // As the dist files name it (PEP 625 normalises `-` to `_`).
    assert_eq!(first["package"], "more_itertools");
    assert_eq!(first["version"], "10.5.0");
    assert_eq!(first["index"].as_str().unwrap(), index().url);
    let files = first["files"].as_array().unwrap();
    assert!(!files.is_empty(), "{first}");
    assert!(
        files
            .iter()
            .all(|f| f["sha256"].as_str().is_some_and(|h| h.len() == 64)),
        "{first}"
    );
    assert!(!ledger.to_string().contains(TOKEN));
}

#[test]
fn a_lint_error_and_coverage_below_fail_under_fail_their_stages() {
    let project = Project::with_pipeline(
        "stages:\n  install: { uses: python/venv, with: { packages: [pytest, ruff, coverage] } }\n  lint: { uses: python/lint, needs: [install] }\n  test: { uses: python/coverage, needs: [lint], with: { fail_under: 99, args: [-o, pythonpath=.] } }\n  after: { run: \"true\", needs: [test] }\n",
    );
    project
        .file("calc.py", "import os\n\n\ndef add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n")
        .file("tests/test_calc.py", "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n");
    let (code, _, stderr) = project.run(&["run"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(row(&stderr, "lint").contains("calc.py:1: F401"), "{stderr}");
    assert!(row(&stderr, "test").contains("skipped"), "{stderr}");
    assert!(row(&stderr, "after").contains("skipped"), "{stderr}");

    project.file(
        "calc.py",
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n",
    );
    let (code, _, stderr) = project.run(&["run"]);
    assert_eq!(code, 1, "{stderr}");
    let test = row(&stderr, "test");
    assert!(
        test.contains("below fail_under 99%") && test.contains("coverage 8"),
        "{stderr}"
    );
    assert!(test.contains("1 passed"), "{stderr}");
    assert!(row(&stderr, "after").contains("skipped"), "{stderr}");
}

#[test]
fn a_tool_nothing_installs_is_named_with_the_line_to_add() {
    let project = Project::with_pipeline(
        "stages:\n  install: { uses: python/venv, with: { packages: [pytest] } }\n  lint: { uses: python/lint, needs: [install] }\n",
    );
    let (code, _, stderr) = project.run(&["run"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nothing installs `ruff`"), "{stderr}");
    assert!(stderr.contains("with: { packages: [ruff] }"), "{stderr}");
}

#[test]
fn init_installs_a_pyproject_project_with_its_test_extra_and_runs_green() {
    // A project as they are written today: pyproject.toml, its test tools in an extra, and
    // tests that import it as installed (no `pythonpath` trick).
    let project = Project::new();
    project
        .file(
            "app/pyproject.toml",
            "[build-system]\nrequires = [\"setuptools>=64\"]\nbuild-backend = \"setuptools.build_meta\"\n\n[project]\nname = \"calcpkg\"\nversion = \"0.1.0\"\n\n[project.optional-dependencies]\ntest = [\"pytest\"]\n\n[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\n",
        )
        .file("app/src/calcpkg/__init__.py", "def add(a, b):\n    return a + b\n")
        .file(
            "app/tests/test_calc.py",
            "from calcpkg import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        );
    let app = project.join("app");
    let (code, _, stderr) = pydeployer(&app, &["init"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let install = fs::read_to_string(app.join("stages.d/20-install.yml")).unwrap();
    assert!(install.contains("extras: [test]"), "{install}");
    let (code, _, stderr) = pydeployer(&app, &["run", "install", "test"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(row(&stderr, "test").contains("passed"), "{stderr}");
    // The project is installed in the venv (editable), with pytest from its extra.
    let show = Command::new(app.join(".venv/bin/pip"))
        .args(["show", "calcpkg"])
        .output()
        .unwrap();
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
}
