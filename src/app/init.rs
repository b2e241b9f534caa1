//! `pydeployer init`: a commented `pipeline.yml` and `stages.d/` for the project in a folder.
//!
//! What it writes depends on what it finds there:
//!
//! - a git remote `origin`: `repo:` with its URL and branch, a `clone` stage, and `deploy` and
//!   `rollback` stages that are `manual` (a plain `pydeployer run` never pushes anywhere);
//!   without one, no `repo:`: the stages run in the folder itself, and nothing deploys;
//! - `requirements.txt`: an `install` stage (`python/venv`);
//! - tests (`tests/`, `test/`, `test_*.py`, `*_test.py`): a `test` stage (`pytest`); Python
//!   code without tests gets one that accepts "no tests collected";
//! - nothing of this: one placeholder `build` stage to replace.
//!
//! Nothing is ever overwritten: if any file it would write exists (or `stages.d/` already holds
//! stage files), it writes nothing and exits 2. The generated files are validated (in a
//! temporary folder) before anything is written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::actions::{CommandLine, git};
use crate::cli::{Cli, Format};
use crate::config::{self, STAGES_DIR};
use crate::error::{Failure, Invalid, Problem};
use crate::exec::process;
use crate::mask;

/// What `init` found in the folder.
#[derive(Debug, Default)]
struct Detected {
    /// The folder's name: the pipeline's name.
    name: String,
    remote: Option<Remote>,
    /// `requirements.txt` is there.
    requirements: bool,
    /// `requirements.txt`, `requirements-dev.txt`: those that are there.
    requirement_files: Vec<String>,
    /// Where the tests were found (`tests/`, `test_calc.py`, …), if anywhere.
    tests: Option<String>,
    /// Any sign of Python: `.py` files, `pyproject.toml`, `setup.py`, requirements.
    python: bool,
    /// A package: `pyproject.toml`, `setup.py` or `setup.cfg` (then the whole Python kit:
    /// lint, tests with coverage, build and a manual publish).
    package: bool,
    /// The project configures pytest itself (`pytest.ini`, `[tool.pytest…]`, a root
    /// `conftest.py`, …), so `init` adds no pytest options.
    pytest_configured: bool,
    /// The extra of pyproject.toml's `[project.optional-dependencies]` that holds the test
    /// tools (`test`, `tests`, `testing`), installed with the project.
    test_extra: Option<String>,
}

#[derive(Debug)]
struct Remote {
    url: String,
    branch: String,
    /// The URL held a password or token, which was left out of the file.
    credentials_removed: bool,
    /// Where the folder is inside the repository (`services/api`; empty at its top): the
    /// stages that work on the project run there, inside the clone.
    prefix: String,
}

pub(crate) fn run(cli: &Cli) -> Result<(), Failure> {
    let pipeline_file = cli.file.clone();
    let folder = match pipeline_file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !folder.is_dir() {
        return Err(
            Problem::general(format!("{} is not a folder", folder.display()))
                .with_help("run `pydeployer init` in the project's folder")
                .into(),
        );
    }
    let detected = detect(&folder);
    let file_name = pipeline_file.file_name().map_or_else(
        || "pipeline.yml".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let files = generate(&detected, &file_name);

    let problems = existing(&folder, &files);
    if !problems.is_empty() {
        return Err(Invalid { problems }.into());
    }
    check(&files)?;
    write(&folder, &files).map_err(|err| {
        Failure::Tool(miette::miette!(
            help = "nothing was left behind; fix the folder's permissions or free some space",
            "cannot write the pipeline in {}: {err}",
            folder.display()
        ))
    })?;

    let mut notes = notes(&detected, &file_name);
    match ignore_our_folders(&folder, &detected) {
        Ok(added) if !added.is_empty() => notes.push(format!(
            "added {} to .gitignore (pydeployer writes them; git need not track them)",
            added.join(", ")
        )),
        Ok(_) => {}
        Err(err) => notes.push(format!(
            "could not add pydeployer's folders to .gitignore: {err}"
        )),
    }
    let out = match cli.format {
        Format::Json | Format::Jsonl => {
            let json = InitJson {
                written: files
                    .iter()
                    .map(|(path, _)| shown(&folder, path).display().to_string())
                    .collect(),
                name: &detected.name,
                remote: detected.remote.as_ref().map(|r| RemoteJson {
                    url: &r.url,
                    branch: &r.branch,
                    folder: &r.prefix,
                    credentials_removed: r.credentials_removed,
                }),
                requirements: detected.requirements,
                tests: detected.tests.as_deref(),
                python: detected.python,
                notes,
            };
            serde_json::to_string_pretty(&json).unwrap_or_default() + "\n"
        }
        Format::Text => {
            let mut out = String::new();
            for (path, _) in &files {
                let _ = writeln!(out, "wrote {}", shown(&folder, path).display());
            }
            let _ = writeln!(out, "\n{}", summary(&detected));
            for note in &notes {
                let _ = writeln!(out, "note: {note}");
            }
            let _ = writeln!(
                out,
                "\nNext: pydeployer validate   # check it\n      pydeployer plan       # what `run` does, without running it\n      pydeployer run        # run it"
            );
            out
        }
    };
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(())
}

/// `init --format json`: what was written and what was found.
#[derive(Debug, serde::Serialize)]
struct InitJson<'a> {
    /// The files written, as the text output names them (relative to the current folder).
    written: Vec<String>,
    /// The pipeline's name (the folder's).
    name: &'a str,
    remote: Option<RemoteJson<'a>>,
    requirements: bool,
    /// Where the tests were found (`tests/`, `test_calc.py`, …), or null.
    tests: Option<&'a str>,
    python: bool,
    notes: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
struct RemoteJson<'a> {
    /// Without any password or token it held.
    url: &'a str,
    branch: &'a str,
    /// Where the folder is inside the repository (empty at its top).
    folder: &'a str,
    credentials_removed: bool,
}

/// What the user should know about the files written.
fn notes(detected: &Detected, file_name: &str) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(remote) = &detected.remote {
        if remote.credentials_removed {
            notes.push(format!(
                "the remote's URL holds a password or token; it was left out of {file_name} (git's credential helper or an SSH key should provide it)"
            ));
        }
    }
    notes
}

/// The folders pydeployer writes in the project, added to its `.gitignore` (created if need
/// be) unless a line there already names them; returns those added. A `.gitignore` that is not
/// a regular file is left alone.
fn ignore_our_folders(folder: &Path, detected: &Detected) -> std::io::Result<Vec<String>> {
    let path = folder.join(".gitignore");
    let text = match crate::files::read_regular(&path, 1 << 20) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err),
    };
    let mut ours = vec!["logs/", "archive/", ".venv/"];
    if detected.remote.is_some() {
        ours.push("workspace/");
    }
    let present = |entry: &str| {
        let bare = entry.trim_end_matches('/');
        text.lines().any(|line| {
            let line = line.trim().trim_start_matches('/').trim_end_matches('/');
            line == bare
        })
    };
    let added: Vec<String> = ours
        .into_iter()
        .filter(|e| !present(e))
        .map(str::to_owned)
        .collect();
    if added.is_empty() {
        return Ok(added);
    }
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let mut lines = String::new();
    if !text.is_empty() && !text.ends_with('\n') {
        lines.push('\n');
    }
    lines.push_str("# written by pydeployer (logs, the deploy ledger, the venv, the workspace)\n");
    for entry in &added {
        lines.push_str(entry);
        lines.push('\n');
    }
    file.write_all(lines.as_bytes())?;
    Ok(added)
}

/// One line saying what was found.
fn summary(detected: &Detected) -> String {
    let mut found = Vec::new();
    match &detected.remote {
        Some(remote) => found.push(format!(
            "git remote origin ({}, branch {})",
            remote.url, remote.branch
        )),
        None => found.push("no git remote (the stages run in this folder)".to_owned()),
    }
    if detected.requirements {
        found.push("requirements.txt".to_owned());
    }
    match &detected.tests {
        Some(tests) => found.push(format!("tests ({tests})")),
        None if detected.python => found.push("Python code, no tests".to_owned()),
        None => found.push("no Python project".to_owned()),
    }
    format!("found: {}", found.join(", "))
}

fn detect(folder: &Path) -> Detected {
    let name = std::path::absolute(folder)
        .ok()
        .and_then(|p| {
            // `absolute` keeps a trailing `.`.
            let p = if p.ends_with(".") {
                p.parent()?.to_path_buf()
            } else {
                p
            };
            p.file_name().map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "pipeline".to_owned());
    let root_files: Vec<String> = fs::read_dir(folder)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    // pytest's default `python_files`: `test_*.py` and `*_test.py` (case-sensitive, as there).
    let stem = |name: &str| {
        Path::new(name)
            .extension()
            .is_some_and(|e| e == "py")
            .then(|| name.trim_end_matches(".py").to_owned())
    };
    let is_test_file =
        |name: &str| stem(name).is_some_and(|s| s.starts_with("test_") || s.ends_with("_test"));
    let tests = ["tests", "test"]
        .into_iter()
        .find(|dir| folder.join(dir).is_dir())
        .map(|dir| format!("{dir}/"))
        .or_else(|| {
            let mut files: Vec<&String> = root_files.iter().filter(|f| is_test_file(f)).collect();
            files.sort();
            files.first().map(|f| (*f).clone())
        });
    let requirements = folder.join("requirements.txt").is_file();
    let requirement_files: Vec<String> = ["requirements.txt", "requirements-dev.txt"]
        .into_iter()
        .filter(|f| folder.join(f).is_file())
        .map(str::to_owned)
        .collect();
    let python = requirements
        || tests.is_some()
        || root_files
            .iter()
            .any(|f| stem(f).is_some() || f == "pyproject.toml" || f == "setup.cfg");
    let mentions = |file: &str, section: &str| {
        fs::read_to_string(folder.join(file)).is_ok_and(|text| text.contains(section))
    };
    let pytest_configured = folder.join("pytest.ini").is_file()
        || folder.join("conftest.py").is_file()
        || mentions("pyproject.toml", "[tool.pytest")
        || mentions("setup.cfg", "[tool:pytest]")
        || mentions("tox.ini", "[pytest]");
    let package = ["pyproject.toml", "setup.py", "setup.cfg"]
        .iter()
        .any(|f| root_files.iter().any(|r| r == f));
    Detected {
        name,
        remote: remote(folder),
        package,
        requirements,
        requirement_files,
        tests,
        python,
        pytest_configured,
        test_extra: test_extra(&folder.join("pyproject.toml")),
    }
}

/// The test extra of a pyproject.toml: a key named `test`, `tests` or `testing` in its
/// `[project.optional-dependencies]` table (read as text: a line `name = [` in that table).
fn test_extra(pyproject: &Path) -> Option<String> {
    let text = crate::files::read_regular(pyproject, 1 << 20).ok()?;
    let text = String::from_utf8(text).ok()?;
    let mut in_table = false;
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_table = line == "[project.optional-dependencies]";
        } else if in_table && let Some((key, _)) = line.split_once('=') {
            found.push(key.trim().trim_matches('"').to_owned());
        }
    }
    ["test", "tests", "testing"]
        .into_iter()
        .find(|name| found.iter().any(|f| f == name))
        .map(str::to_owned)
}

/// `origin`'s URL and branch, when the folder is in a git work tree that has one.
fn remote(folder: &Path) -> Option<Remote> {
    // The user's GIT_DIR and friends must not redirect these calls to another repository.
    let env = git::pinned_environment(None, false, &BTreeMap::new());
    let git = |args: &[&str]| {
        process::capture(&CommandLine::new("git", args.iter().copied()), folder, &env)
            .ok()
            .filter(|out| !out.is_empty())
    };
    git(&["rev-parse", "--is-inside-work-tree"]).filter(|out| out == "true")?;
    let url = git(&["remote", "get-url", "origin"])?;
    // A relative path is relative to the work tree's top, pipeline.yml's to its folder.
    let url = match git(&["rev-parse", "--show-toplevel"]) {
        Some(top)
            if config::is_local_path(&url)
                && Path::new(&url).is_relative()
                && fs::canonicalize(&top).ok() != fs::canonicalize(folder).ok() =>
        {
            Path::new(&top).join(&url).display().to_string()
        }
        _ => url,
    };
    let (url, credentials_removed) = without_password(&url);
    let branch = git(&[
        "symbolic-ref",
        "--quiet",
        "--short",
        "refs/remotes/origin/HEAD",
    ])
    .and_then(|b| b.strip_prefix("origin/").map(str::to_owned))
    .or_else(|| git(&["symbolic-ref", "--quiet", "--short", "HEAD"]))
    .unwrap_or_else(|| "master".to_owned());
    let prefix = git(&["rev-parse", "--show-prefix"])
        .map(|p| p.trim_end_matches('/').to_owned())
        .unwrap_or_default();
    Some(Remote {
        url,
        branch,
        credentials_removed,
        prefix,
    })
}

/// A remote URL fit for a file that may be committed: no password and no token.
///
/// Over http(s) the whole userinfo goes (`https://user:TOKEN@host`, `https://TOKEN@host`,
/// `https://TOKEN:x-oauth-basic@host`: either part may be the token; git's credential helper
/// supplies what is needed), and so does a query (`?private_token=…`). Over other schemes the
/// password goes, and the user name too when it is a token (see [`mask::url_credentials`]);
/// `ssh://git@host` stays.
fn without_password(url: &str) -> (String, bool) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), false);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let web = scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http");
    let (path, query_removed) = match path.find('?') {
        Some(query) if web => (&path[..query], true),
        _ => (path, false),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (format!("{scheme}://{authority}{path}"), query_removed);
    };
    let secrets = mask::url_credentials(url);
    let user = userinfo.split(':').next().unwrap_or_default();
    // Over ssh a user name is an account (`ssh://deploy@host`), unless it is a token.
    let keep_user = !web && !user.is_empty() && !secrets.iter().any(|s| s == user);
    let removed = web || userinfo.contains(':') || (!keep_user && !user.is_empty());
    let url = if keep_user {
        format!("{scheme}://{user}@{host}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    };
    (url, removed || query_removed)
}

/// A YAML scalar: plain when that is unambiguous, else a double-quoted (JSON) string.
fn scalar(text: &str) -> String {
    let plain = text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        text.to_owned()
    } else {
        serde_json::to_string(text).unwrap_or_default()
    }
}

/// The files to write: (path relative to the folder, contents).
fn generate(detected: &Detected, file_name: &str) -> Vec<(PathBuf, String)> {
    let mut files = vec![(PathBuf::from(file_name), pipeline_yml(detected, file_name))];
    let stage_file = |name: &str, text: String| (Path::new(STAGES_DIR).join(name), text);
    let remote = detected.remote.is_some();
    // The stage the next one needs, as the chain grows.
    let mut last: Option<&str> = None;
    let needs = |last: Option<&str>| last.map_or_else(String::new, |l| format!("  needs: [{l}]\n"));

    if remote {
        files.push(stage_file(
            "10-clone.yml",
            "\
# Clones repo.url into workspace/, or pulls when it is already there. The stages after it run in
# that clone: they build and test what is pushed, not the files in this folder.
clone:
  uses: git/clone
  description: clone the repository into workspace/, or pull
  timeout: 10m
"
            .to_owned(),
        ));
        last = Some("clone");
    }
    // In a repository's subfolder (a monorepo), the project is that folder of the clone.
    let workdir = detected
        .remote
        .as_ref()
        .filter(|r| !r.prefix.is_empty())
        .map_or_else(String::new, |r| {
            format!(
                "  workdir: {}\n",
                scalar(&format!("workspace/{}", r.prefix))
            )
        });
    let place = match &detected.remote {
        Some(r) if !r.prefix.is_empty() => format!("workspace/{}/", r.prefix),
        Some(_) => "workspace/".to_owned(),
        None => "this folder".to_owned(),
    };
    if detected.package {
        let requirements: Vec<&str> = ["requirements.txt", "requirements-dev.txt"]
            .into_iter()
            .filter(|f| detected.requirement_files.iter().any(|r| r == f))
            .collect();
        files.extend(python_kit(detected, last, &workdir, &place, &requirements));
        last = Some("build");
    } else if detected.requirements {
        files.push(stage_file(
            "20-install.yml",
            format!(
                "\
# Creates .venv in {place} (unless it is there) and installs requirements.txt into it with
# pip (from PyPI, or your pip's index). Other parameters:
#   with: {{ requirements: requirements-dev.txt, python: python3.12 }}
install:
  uses: python/venv
  description: create .venv and pip install -r requirements.txt
{}{workdir}  timeout: 15m
",
                needs(last)
            ),
        ));
        last = Some("install");
    }
    if detected.package {
        // Written above, with the rest of the kit.
    } else if detected.python {
        let mut with = Vec::new();
        let mut notes = String::new();
        if !detected.pytest_configured {
            with.push("args: [-o, pythonpath=.]".to_owned());
            notes.push_str(
                "# `-o pythonpath=.`: the tests import the project's modules from its root (pytest 7+;\n\
                 # drop it once pytest.ini or pyproject.toml configures pytest).\n",
            );
        }
        if detected.tests.is_none() {
            with.push("allow_no_tests: true".to_owned());
            notes.push_str(
                "# No tests were found, so \"no tests collected\" passes for now: remove\n\
                 # `allow_no_tests` once there are tests.\n",
            );
        }
        let with = if with.is_empty() {
            String::new()
        } else {
            format!("  with: {{ {} }}\n", with.join(", "))
        };
        let found = detected
            .tests
            .as_ref()
            .map_or_else(String::new, |t| format!("\n# Tests found: {t}"));
        files.push(stage_file(
            "30-test.yml",
            format!(
                "\
# Runs `pytest -v` in {place}, with .venv's pytest when there is one, else pytest from
# PATH; the summary lists passed, failed and skipped tests.{found}
{notes}test:
  uses: pytest
  description: run the tests with pytest
{}{with}{workdir}  timeout: 30m
",
                needs(last)
            ),
        ));
        last = Some("test");
    } else {
        files.push(stage_file(
            "30-build.yml",
            "\
# No Python project was found here (no requirements.txt, tests or .py files): replace this
# stage with your build and test commands. `run:` takes a command line (run by `sh -c` when
# it has shell syntax) or a list (run as argv, no shell); `needs:` orders stages.
build:
  run: [echo, \"replace stages.d/30-build.yml with the build\"]
  description: a placeholder for the build
"
            .to_owned(),
        ));
        last = Some("build");
    }
    if let Some(remote) = &detected.remote {
        files.push(stage_file(
            "50-deploy.yml",
            format!(
                "\
# Deploying pushes the workspace's HEAD to {remote_name}/{branch} (never forced; a rejected push
# fails) and records it in the deploy ledger (archive/deploy_history.json). Both stages are
# manual, so `pydeployer run` never pushes:
#   pydeployer run deploy     # clone, install, test, then push
#   pydeployer rollback       # revert the last commit and push the revert
# A stage that commits build output in the workspace (`uses: git/commit`) gives deploy
# something to push.
deploy:
  uses: git/push
  description: push the workspace's HEAD to {remote_name}/{branch} and record it
{}  when: manual

rollback:
  uses: git/revert
  description: revert the last commit and push the revert (pydeployer rollback)
  when: manual
",
                needs(last),
                remote_name = "origin",
                branch = remote.branch,
            ),
        ));
    }
    files
}

/// The Python kit for a package: install (with the tools), lint, tests under coverage, build,
/// and a manual publish.
fn python_kit(
    detected: &Detected,
    last: Option<&str>,
    workdir: &str,
    place: &str,
    requirements: &[&str],
) -> Vec<(PathBuf, String)> {
    let stage_file = |name: &str, text: String| (Path::new(STAGES_DIR).join(name), text);
    let needs = |last: Option<&str>| last.map_or_else(String::new, |l| format!("  needs: [{l}]\n"));
    let requirements_line = if requirements.is_empty() {
        String::new()
    } else {
        format!("    requirements: [{}]\n", requirements.join(", "))
    };
    // The project itself, with its test extra: its tests import it as installed.
    let extra_line = detected
        .test_extra
        .as_ref()
        .map_or_else(String::new, |extra| format!("    extras: [{extra}]\n"));
    let mut test_with = Vec::new();
    if !detected.pytest_configured {
        test_with.push("args: [-o, pythonpath=.]".to_owned());
    }
    if detected.tests.is_none() {
        test_with.push("allow_no_tests: true".to_owned());
    }
    let test_with = if test_with.is_empty() {
        String::new()
    } else {
        format!("  with: {{ {} }}\n", test_with.join(", "))
    };
    let found = detected
        .tests
        .as_ref()
        .map_or_else(String::new, |t| format!(" Tests found: {t}."));
    vec![
        stage_file(
            "20-install.yml",
            format!(
                "\
# Creates .venv in {place} (unless it is there) and installs the project's requirements and the
# tools the stages after it use (pytest, ruff, coverage, build, twine), from PyPI or your pip's
# index. Pin them (`ruff==0.6.9`) for runs that do not change under you.
install:
  uses: python/venv
  description: create .venv with the requirements and the CI tools
  with:
{requirements_line}{extra_line}    packages: [pytest, ruff, coverage, build, twine]
{}{workdir}  timeout: 15m
",
                needs(last)
            ),
        ),
        stage_file(
            "25-lint.yml",
            format!(
                "\
# `ruff check` (with its configuration from pyproject.toml, if any); the summary shows the number
# of findings and the first few as file:line: code message. `with: {{ format: true }}` also runs
# `ruff format --check`. Findings do not block the build yet (`allow_failure`): remove that line
# once `ruff check` is clean. Skipped while no .py file or pyproject.toml changed (`cache:`).
lint:
  uses: python/lint
  description: ruff check
  needs: [install]
  allow_failure: true
  cache: {{ inputs: [\"**/*.py\", pyproject.toml] }}
{workdir}  timeout: 10m
"
            ),
        ),
        stage_file(
            "30-test.yml",
            format!(
                "\
# pytest under coverage:{found} The summary shows the tests and the total coverage;
# coverage.xml is kept with the run's artifacts. `with: {{ fail_under: 85 }}` fails the stage
# below 85%. `-o pythonpath=.`, when there, lets the tests import the project from its root.
test:
  uses: python/coverage
  description: pytest under coverage
  needs: [install]
{test_with}  artifacts: [coverage.xml]
{workdir}  timeout: 30m
"
            ),
        ),
        stage_file(
            "40-build.yml",
            format!(
                "\
# `python -m build`: an sdist and a wheel in dist/, listed with their sizes in the summary and
# kept in artifacts/<run>/build/. Skipped while nothing it reads changed and dist/ is there.
build:
  uses: python/build
  description: python -m build (sdist and wheel)
  needs: [lint, test]
  artifacts: [dist/*]
  cache: {{ inputs: [\"**/*.py\", pyproject.toml, setup.cfg, setup.py, MANIFEST.in], outputs: [dist/*] }}
{workdir}  timeout: 15m
"
            ),
        ),
        stage_file(
            "60-publish.yml",
            format!(
                "\
# Uploads the newest build in dist/ with twine, and records it in the ledger. Manual: only
# `pydeployer run publish` publishes. The token is read from $PYPI_TOKEN (never shown in any
# output); repository_url names the index (TestPyPI: https://test.pypi.org/legacy/).
publish:
  uses: python/publish
  description: upload dist/ to the package index
  needs: [build]
  when: manual
  secrets: [PYPI_TOKEN]
  with:
    repository_url: \"https://upload.pypi.org/legacy/\"
    token_env: PYPI_TOKEN
{workdir}"
            ),
        ),
    ]
}

fn pipeline_yml(detected: &Detected, file_name: &str) -> String {
    let mut text = format!(
        "\
# {file_name}: written by `pydeployer init`; edit it freely.
#   pydeployer validate     check this file and stages.d/
#   pydeployer plan         the order, parallel waves and commands, without running anything
#   pydeployer run          run every stage but the manual ones
# The stages are in stages.d/ (one file each, read in file-name order). The README describes
# every key; `pydeployer schema > .pydeployer-schema.json` gives editors completion and checks.
name: {}
",
        scalar(&detected.name)
    );
    match &detected.remote {
        Some(remote) => {
            let _ = write!(
                text,
                "\
repo:                       # the repository the stages work on (found: git remote origin)
  url: {}
  branch: {}
  remote: origin            # where deploy pushes
  dir: workspace            # where the clone lives
",
                scalar(&remote.url),
                scalar(&remote.branch)
            );
        }
        None => text.push_str(
            "\
# No git remote was found, so there is no `repo:` and the stages run in this folder. To build
# from a repository instead (cloned into workspace/, pushed to by a `git/push` deploy stage):
# repo:
#   url: https://example.com/you/app.git
#   branch: main
",
        ),
    }
    text.push_str(
        "\
logs: { dir: logs, keep: 20 }   # one log file per run; the newest 20 are kept
env:                            # for every stage
  PIP_DISABLE_PIP_VERSION_CHECK: \"1\"
  PYTHONDONTWRITEBYTECODE: \"1\"
# secrets: [PYPI_TOKEN]         # variables every run needs; their values never appear in output
# jobs: 2                       # stages run at once; default: the number of CPUs
",
    );
    text
}

/// `path` in `folder`, as the user would write it (no `./` in front).
fn shown(folder: &Path, path: &Path) -> PathBuf {
    if folder == Path::new(".") {
        path.to_path_buf()
    } else {
        folder.join(path)
    }
}

/// Every file `init` would write that exists, and stage files already in `stages.d/` (they
/// would join the generated pipeline).
fn existing(folder: &Path, files: &[(PathBuf, String)]) -> Vec<Problem> {
    // A folder that has a pipeline is set up: said once, not once per file.
    let pipeline = folder.join("pipeline.yml");
    if pipeline.symlink_metadata().is_ok() {
        return vec![
            Problem::general(format!(
                "{} already has a pipeline ({}): `pydeployer init` starts one and never overwrites a file, so nothing was written",
                if folder == Path::new(".") { "this folder".to_owned() } else { folder.display().to_string() },
                shown(folder, Path::new("pipeline.yml")).display()
            ))
            .with_help("edit it by hand (`pydeployer schema` helps an editor), or move it away and run `pydeployer init` again"),
        ];
    }
    let mut problems = Vec::new();
    for (path, _) in files {
        if folder.join(path).symlink_metadata().is_ok() {
            problems.push(
                Problem::general(format!(
                    "{} already exists; `pydeployer init` never overwrites a file, so nothing was written",
                    shown(folder, path).display()
                ))
                .with_help("move it away (or edit the pipeline by hand) and run `pydeployer init` again"),
            );
        }
    }
    let ours: Vec<PathBuf> = files.iter().map(|(p, _)| folder.join(p)).collect();
    if let Ok(entries) = fs::read_dir(folder.join(STAGES_DIR)) {
        let mut others: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|ext| ext == "yml" || ext == "yaml")
                    && !ours.contains(p)
            })
            .collect();
        others.sort();
        for path in others {
            problems.push(
                Problem::general(format!(
                    "{} already exists and would join the generated pipeline, so nothing was written",
                    path.strip_prefix(".").unwrap_or(&path).display()
                ))
                .with_help("`pydeployer init` starts a pipeline; this folder already has stages"),
            );
        }
    }
    problems
}

/// The files must make a valid pipeline: they are loaded from a temporary folder first.
fn check(files: &[(PathBuf, String)]) -> Result<(), Failure> {
    let scratch = tempfile::Builder::new()
        .prefix("pydeployer-init-")
        .tempdir()
        .map_err(|err| Failure::Tool(miette::miette!("cannot create a temporary folder: {err}")))?;
    let written = (|| -> std::io::Result<()> {
        fs::create_dir_all(scratch.path().join(STAGES_DIR))?;
        for (path, text) in files {
            fs::write(scratch.path().join(path), text)?;
        }
        Ok(())
    })();
    written.map_err(|err| {
        Failure::Tool(miette::miette!("cannot write to a temporary folder: {err}"))
    })?;
    match config::load(&scratch.path().join(&files[0].0)) {
        Ok(_) => Ok(()),
        Err(invalid) => {
            let mut problems = vec![Problem::general(
                "the pipeline `init` would write does not validate, so nothing was written",
            )
            .with_help("this is what was found in the folder (a git remote's URL or branch, most likely) that pydeployer refuses; see below")];
            problems.extend(invalid.problems);
            Err(Invalid { problems }.into())
        }
    }
}

/// Writes the files, each created anew (never replacing one); on an error removes what it
/// wrote.
pub(super) fn write(folder: &Path, files: &[(PathBuf, String)]) -> std::io::Result<()> {
    let stages_dir = folder.join(STAGES_DIR);
    let made_dir = !stages_dir.exists() && files.iter().any(|(p, _)| p.starts_with(STAGES_DIR));
    if made_dir {
        fs::create_dir(&stages_dir)?;
    }
    let mut written: Vec<PathBuf> = Vec::new();
    let result = files.iter().try_for_each(|(path, text)| {
        let full = folder.join(path);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&full)?;
        written.push(full);
        file.write_all(text.as_bytes())?;
        file.sync_all()
    });
    if result.is_err() {
        for path in &written {
            let _ = fs::remove_file(path);
        }
        if made_dir {
            let _ = fs::remove_dir(&stages_dir);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_left_out_of_remote_urls() {
        let cases = [
            (
                "https://me:s3cret@example.com/a.git",
                "https://example.com/a.git",
                true,
            ),
            (
                "https://:tok@example.com/a.git",
                "https://example.com/a.git",
                true,
            ),
            (
                "git@example.com:me/a.git",
                "git@example.com:me/a.git",
                false,
            ),
            // A user name alone over https is most often a token (`https://ghp_…@github.com`).
            (
                "https://ghp_abcSECRET@github.com/a@b.git",
                "https://github.com/a@b.git",
                true,
            ),
            // GitHub's documented form puts the token in the user name.
            (
                "https://ghp_SECRET:x-oauth-basic@github.com/o/r.git",
                "https://github.com/o/r.git",
                true,
            ),
            (
                "https://ghp_SECRET:@github.com/o/r.git",
                "https://github.com/o/r.git",
                true,
            ),
            (
                "https://gitlab.com/o/r.git?private_token=SECRET",
                "https://gitlab.com/o/r.git",
                true,
            ),
            (
                "ssh://git@example.com/a.git",
                "ssh://git@example.com/a.git",
                false,
            ),
            (
                "ssh://deploy@example.com/a.git",
                "ssh://deploy@example.com/a.git",
                false,
            ),
            (
                "ssh://git:pw@example.com/a.git",
                "ssh://git@example.com/a.git",
                true,
            ),
            (
                "ssh://deploy_0123456789abcdef:pw@example.com/a.git",
                "ssh://example.com/a.git",
                true,
            ),
            (
                "https://example.com/a.git",
                "https://example.com/a.git",
                false,
            ),
        ];
        for (url, want, removed) in cases {
            assert_eq!(without_password(url), (want.to_owned(), removed), "{url}");
        }
    }

    #[test]
    fn scalars_are_quoted_when_yaml_could_misread_them() {
        assert_eq!(scalar("my-app"), "my-app");
        assert_eq!(scalar("release/1.2"), "release/1.2");
        assert_eq!(scalar("yes"), "\"yes\"");
        assert_eq!(scalar("1.0"), "\"1.0\"");
        assert_eq!(scalar("git@host:a b.git"), "\"git@host:a b.git\"");
        assert_eq!(scalar("a \"b\""), "\"a \\\"b\\\"\"");
    }

    #[test]
    fn every_combination_validates() {
        for remote in [false, true] {
            for requirements in [false, true] {
                for tests in [false, true] {
                    for python in [false, true] {
                        let detected = Detected {
                            name: "yes".to_owned(),
                            remote: remote.then(|| Remote {
                                url: "git@example.com:me/app.git".to_owned(),
                                branch: "main".to_owned(),
                                credentials_removed: false,
                                prefix: if python {
                                    "services/api".to_owned()
                                } else {
                                    String::new()
                                },
                            }),
                            requirements,
                            requirement_files: Vec::new(),
                            package: python && tests,
                            tests: tests.then(|| "tests/".to_owned()),
                            python: python || requirements || tests,
                            pytest_configured: python,
                            test_extra: None,
                        };
                        let files = generate(&detected, "pipeline.yml");
                        if let Err(Failure::Invalid(invalid)) = check(&files) {
                            panic!("{detected:?}: {:?}", invalid.problems);
                        }
                    }
                }
            }
        }
    }
}
