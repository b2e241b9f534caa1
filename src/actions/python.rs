//! The Python actions: a virtual environment with the project's requirements and tools,
//! pytest, ruff, pytest under coverage, `python -m build` and twine. Each tool is the
//! workspace's `.venv/bin/<tool>` when there is one, else the one on PATH.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::actions::CommandLine;
use crate::pipeline::{CoverageParams, LintParams, PublishParams, PytestParams, VenvParams};

/// pytest's exit code when it collected no tests.
const NO_TESTS_COLLECTED: i32 = 5;

/// How many findings (or files) a summary names before it says "and N more".
const SHOWN: usize = 5;

/// `.venv/bin/<tool>` in `dir` when it is there, else `tool` (from PATH).
pub fn tool(dir: &Path, tool: &str) -> String {
    let venv = dir.join(".venv/bin").join(tool);
    if venv.is_file() {
        venv.display().to_string()
    } else {
        tool.to_owned()
    }
}

/// `pytest -v [args…] --junitxml=<report>`, with the workspace's `.venv` pytest when there is
/// one, else pytest from PATH.
pub fn pytest(dir: &Path, params: &PytestParams, report: &Path) -> CommandLine {
    let mut command = CommandLine::new(tool(dir, "pytest"), pytest_args(&params.args, report));
    if params.allow_no_tests {
        command.also_ok.push(NO_TESTS_COLLECTED);
    }
    command
}

/// `-v [args…] --junitxml=<report>`; the user's own JUnit report wins (pytest writes only the
/// last one given), and the summary note then comes without the counts from it.
fn pytest_args(user: &[String], report: &Path) -> Vec<String> {
    let mut args = vec!["-v".to_owned()];
    args.extend(user.iter().cloned());
    let own_report = args
        .iter()
        .any(|a| a.starts_with("--junitxml") || a.starts_with("--junit-xml"));
    if !report.as_os_str().is_empty() && !own_report {
        args.push(format!("--junitxml={}", report.display()));
        // xunit1 keeps each test's file: failed tests are named as `pytest ID` takes them.
        args.extend(["-o".to_owned(), "junit_family=xunit1".to_owned()]);
    }
    args
}

/// `python3 -m venv .venv` (unless it exists) and one `pip install` of the requirements files
/// (`requirements.txt` when it is there, or those named by `with: {requirements}`, which must
/// exist) and the `packages:`.
pub fn venv(dir: &Path, params: &VenvParams) -> Result<Vec<CommandLine>, String> {
    let python = params.python.as_deref().unwrap_or("python3");
    let venv_python = dir.join(".venv/bin/python");
    let mut commands = Vec::new();
    if !venv_python.is_file() {
        commands.push(CommandLine::new(python, ["-m", "venv", ".venv"]));
    }
    let mut files = Vec::new();
    if params.requirements.is_empty() {
        if dir.join("requirements.txt").is_file() {
            files.push("requirements.txt".to_owned());
        }
    } else {
        for file in &params.requirements {
            if !dir.join(file).is_file() {
                return Err(format!("{file} is not in {}", dir.display()));
            }
            files.push(file.clone());
        }
    }
    if let Some(bad) = params.extras.iter().find(|e| {
        e.is_empty()
            || !e
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    }) {
        return Err(format!(
            "`{bad}` is not an extra's name (letters, digits, `.`, `_`, `-`)"
        ));
    }
    let project = params.project.then(|| {
        if params.extras.is_empty() {
            ".".to_owned()
        } else {
            format!(".[{}]", params.extras.join(","))
        }
    });
    if project.is_some()
        && !["pyproject.toml", "setup.py", "setup.cfg"]
            .iter()
            .any(|f| dir.join(f).is_file())
    {
        return Err(format!(
            "`project: true` installs the project, and {} has no pyproject.toml, setup.cfg or setup.py",
            dir.display()
        ));
    }
    if files.is_empty() && params.packages.is_empty() && project.is_none() {
        return Ok(commands);
    }
    let mut args: Vec<String> = ["-m", "pip", "install", "--disable-pip-version-check"]
        .map(str::to_owned)
        .into();
    for file in files {
        // `./` keeps a file named like an option from being read as one.
        let file = if file.starts_with('-') {
            format!("./{file}")
        } else {
            file
        };
        args.extend(["-r".to_owned(), file]);
    }
    if let Some(project) = project {
        args.extend(["-e".to_owned(), project]);
    }
    if !params.packages.is_empty() {
        // Requirement specifiers, never options: pip stops reading options after `--`.
        args.push("--".to_owned());
        args.extend(params.packages.iter().cloned());
    }
    commands.push(CommandLine::new(venv_python.display().to_string(), args));
    Ok(commands)
}

/// `ruff check --output-format=concise [args…]`, and with `format: true` also
/// `ruff format --check` (both run; the stage fails if either does).
pub fn lint(dir: &Path, params: &LintParams) -> CommandLine {
    let ruff = tool(dir, "ruff");
    let mut check = vec!["check".to_owned(), "--output-format=concise".to_owned()];
    check.extend(params.args.iter().cloned());
    if !params.format {
        return CommandLine::new(ruff, check).kept();
    }
    let shown = format!(
        "{} && {} format --check",
        CommandLine::new(&ruff, &check),
        super::quote(&ruff)
    );
    // Both checks report, whatever the first one found; the exit code is the first failure's.
    let script = r#"ruff=$1; shift; "$ruff" "$@"; c=$?; "$ruff" format --check; f=$?; if [ "$c" -ne 0 ]; then exit "$c"; fi; exit "$f""#;
    let mut args = vec!["-c".to_owned(), script.to_owned(), "sh".to_owned(), ruff];
    args.extend(check);
    CommandLine::new("sh", args).kept().shown_as(shown)
}

/// `coverage run -m pytest -v [args…] --junitxml=<report>`, `coverage xml -o coverage.xml`,
/// `coverage report [--fail-under=N]` (coverage itself fails the stage below the threshold).
pub fn coverage(dir: &Path, params: &CoverageParams, report: &Path) -> Vec<CommandLine> {
    let coverage = tool(dir, "coverage");
    let mut run = vec!["run".to_owned(), "-m".to_owned(), "pytest".to_owned()];
    run.extend(pytest_args(&params.args, report));
    let mut run = CommandLine::new(&coverage, run);
    if params.allow_no_tests {
        run.also_ok.push(NO_TESTS_COLLECTED);
    }
    let mut report_args = vec!["report".to_owned()];
    if let Some(fail_under) = params.fail_under {
        report_args.push(format!("--fail-under={fail_under}"));
    }
    vec![
        run,
        CommandLine::new(&coverage, ["xml", "-o", COVERAGE_XML]),
        CommandLine::new(&coverage, report_args),
    ]
}

/// Where `python/coverage` writes its XML report, in the stage's folder (kept).
pub const COVERAGE_XML: &str = "coverage.xml";

/// `python -m build` (an sdist and a wheel in `dist/`).
pub fn build(dir: &Path) -> CommandLine {
    CommandLine::new(tool(dir, "python"), ["-m", "build"]).kept()
}

/// `twine upload` of the newest build's files in `dist/` (every file of the package and
/// version of the newest one), then `sha256sum` of them as a probe for the ledger.
pub fn publish(dir: &Path, params: &PublishParams) -> Result<Vec<CommandLine>, String> {
    let files = newest_release(&dir.join("dist"))?;
    let mut args = vec![
        "upload".to_owned(),
        "--non-interactive".to_owned(),
        "--disable-progress-bar".to_owned(),
        // The index's answer (a version that exists) is in the output only with it.
        "--verbose".to_owned(),
        "--repository-url".to_owned(),
        params.repository_url.clone(),
    ];
    let paths: Vec<String> = files.iter().map(|f| format!("dist/{}", f.name)).collect();
    args.extend(paths.iter().cloned());
    let mut sha = vec!["--".to_owned()];
    sha.extend(paths);
    let twine = tool(dir, "twine");
    let upload = if params.skip_existing {
        // twine's own `--skip-existing` only works with PyPI itself: the index's answer is
        // read here instead, for any index.
        let shown = format!(
            "{} (a version already there is skipped)",
            CommandLine::new(&twine, &args)
        );
        let mut wrapped = vec![
            "-c".to_owned(),
            SKIP_EXISTING.to_owned(),
            "sh".to_owned(),
            twine,
        ];
        wrapped.extend(args);
        CommandLine::new("sh", wrapped).kept().shown_as(shown)
    } else {
        CommandLine::new(twine, args).kept()
    };
    Ok(vec![upload, CommandLine::probe("sha256sum", sha)])
}

/// Runs twine (`$@`); a failure because the version is already on the index is a success.
const SKIP_EXISTING: &str = r#"out=$("$@" 2>&1); rc=$?; printf '%s\n' "$out"; if [ "$rc" -ne 0 ] && printf '%s' "$out" | grep -qi 'already exist'; then echo 'pydeployer: this version is already on the index: skipped'; exit 0; fi; exit "$rc""#;

/// What the skip-existing wrapper says when it skipped.
pub const SKIPPED: &str = "pydeployer: this version is already on the index: skipped";

/// A file of a release in `dist/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistFile {
    pub name: String,
    pub package: String,
    pub version: String,
}

impl DistFile {
    /// `attrs-24.2.0.tar.gz`, `attrs-24.2.0-py3-none-any.whl` → name and version; `None` for
    /// anything else.
    pub fn parse(name: &str) -> Option<DistFile> {
        let stem = name
            .strip_suffix(".tar.gz")
            .or_else(|| name.strip_suffix(".zip"))
            .map(|s| (s, false))
            .or_else(|| name.strip_suffix(".whl").map(|s| (s, true)))?;
        let (package, version) = match stem {
            (sdist, false) => sdist.rsplit_once('-')?,
            (wheel, true) => {
                let mut parts = wheel.splitn(3, '-');
                (parts.next()?, parts.next()?)
            }
        };
        let ok = |s: &str| {
            !s.is_empty()
                && !s.starts_with(['-', '.'])
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '!'))
        };
        (ok(package) && ok(version)).then(|| DistFile {
            name: name.to_owned(),
            package: package.to_owned(),
            version: version.to_owned(),
        })
    }

    /// The package's name as an index compares it (PEP 503: lower case, runs of `-_.` as `-`).
    pub fn normalized(&self) -> String {
        normalize(&self.package)
    }
}

fn normalize(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The files in `dist` of the package and version of the newest sdist or wheel there.
pub fn newest_release(dist: &Path) -> Result<Vec<DistFile>, String> {
    let entries = std::fs::read_dir(dist).map_err(|err| {
        format!(
            "no {} to publish ({err}); build first (`uses: python/build`)",
            dist.display()
        )
    })?;
    let mut files: Vec<(std::time::SystemTime, DistFile)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let file = DistFile::parse(e.file_name().to_str()?)?;
            Some((e.metadata().ok()?.modified().ok()?, file))
        })
        .collect();
    let newest = files
        .iter()
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)))
        .map(|(_, f)| (f.normalized(), f.version.clone()))
        .ok_or_else(|| format!("{} holds no sdist or wheel to publish", dist.display()))?;
    files.retain(|(_, f)| f.normalized() == newest.0 && f.version == newest.1);
    let mut files: Vec<DistFile> = files.into_iter().map(|(_, f)| f).collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// ruff's findings, from its concise output: the count and the first few as
/// `file:line: code message`; and the files `ruff format --check` would change.
pub fn lint_note(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let mut findings = Vec::new();
    let mut reformat = Vec::new();
    let mut total: Option<usize> = None;
    for line in text.lines() {
        if let Some(file) = line.strip_prefix("Would reformat: ") {
            reformat.push(file.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("Found ") {
            // `Found 3 errors.` / `Found 1 error (1 fixed, 0 remaining).`
            total = rest.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if let Some(finding) = concise_finding(line) {
            findings.push(finding);
        }
    }
    let count = total.unwrap_or(findings.len()).max(findings.len());
    if count == 0 && reformat.is_empty() && !text.contains("All checks passed") {
        return None;
    }
    let mut note = match count {
        0 => "lint: no findings".to_owned(),
        1 => "lint: 1 finding".to_owned(),
        n => format!("lint: {n} findings"),
    };
    if !findings.is_empty() {
        note.push_str(": ");
        note.push_str(
            &findings
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
        );
        if count > SHOWN {
            let _ = write!(note, " and {} more", count - SHOWN);
        }
    }
    if !reformat.is_empty() {
        let _ = write!(
            note,
            "; {} to reformat: {}",
            plural(reformat.len(), "file"),
            reformat
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Some(note)
}

/// `app.py:1:8: F401 [*] `os` imported but unused` → `app.py:1: F401 `os` imported but unused`.
fn concise_finding(line: &str) -> Option<String> {
    let mut parts = line.splitn(4, ':');
    let (file, row, col, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if file.is_empty() || row.parse::<u64>().is_err() || col.parse::<u64>().is_err() {
        return None;
    }
    let rest = rest.trim().replacen("[*] ", "", 1);
    Some(format!("{file}:{row}: {rest}"))
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The total coverage in `coverage.xml` (Cobertura, as `coverage xml` writes it): covered
/// lines and branches over all of them, in percent. `None` if it is not such a report.
pub fn coverage_percent(xml: &str) -> Option<f64> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event().ok()? {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e)
                if e.name().as_ref() == b"coverage" =>
            {
                let number = |name: &str| -> Option<f64> {
                    let value = e.try_get_attribute(name).ok()??;
                    let text = value.unescape_value().ok()?;
                    text.parse::<f64>()
                        .ok()
                        .filter(|n| n.is_finite() && *n >= 0.0)
                };
                let lines = number("lines-valid")?;
                let covered = number("lines-covered")?;
                let branches = number("branches-valid").unwrap_or(0.0);
                let branches_covered = number("branches-covered").unwrap_or(0.0);
                let all = lines + branches;
                if all == 0.0 {
                    return Some(100.0);
                }
                return Some((100.0 * (covered + branches_covered) / all).min(100.0));
            }
            quick_xml::events::Event::Eof => return None,
            _ => {}
        }
    }
}

/// The files `python -m build` says it made (`Successfully built a.tar.gz and a.whl`), each
/// with its size from `dist/`.
pub fn build_note(dir: &Path, output: &[u8]) -> Option<String> {
    let files = built_files(output);
    if files.is_empty() {
        return None;
    }
    let listed: Vec<String> = files
        .iter()
        .map(|name| {
            let size = std::fs::metadata(dir.join("dist").join(name)).map(|m| m.len());
            match size {
                Ok(size) => format!("dist/{name} ({})", human_size(size)),
                Err(_) => format!("dist/{name}"),
            }
        })
        .collect();
    Some(format!("built {}", listed.join(", ")))
}

/// The file names in build's last `Successfully built …` line.
pub fn built_files(output: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(output);
    let Some(line) = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Successfully built "))
    else {
        return Vec::new();
    };
    line.split(" and ")
        .map(|s| s.trim().trim_end_matches('.'))
        .filter(|s| DistFile::parse(s).is_some())
        .map(str::to_owned)
        .collect()
}

/// `1.2 KB`, `34 B`, `5.0 MB` (powers of 1000, as PyPI shows sizes).
pub fn human_size(bytes: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "a size shown with one decimal")]
    let b = bytes as f64;
    if bytes < 1000 {
        format!("{bytes} B")
    } else if b < 1e6 {
        format!("{:.1} KB", b / 1e3)
    } else {
        format!("{:.1} MB", b / 1e6)
    }
}

/// twine's output says the version is already on the index.
pub fn already_published(output: &[u8]) -> bool {
    let text = String::from_utf8_lossy(output).to_ascii_lowercase();
    text.contains("already exists")
        || text.contains("already been used")
        || text.contains("409 conflict")
}

/// The coverage stage's folder file.
pub fn coverage_xml(dir: &Path) -> PathBuf {
    dir.join(COVERAGE_XML)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruff_findings_become_a_short_note() {
        let out = b"app.py:1:8: F401 [*] `os` imported but unused\napp.py:3:5: F841 Local variable `x` is assigned to but never used\nFound 2 errors.\n[*] 1 fixable with the `--fix` option.\n";
        assert_eq!(
            lint_note(out).unwrap(),
            "lint: 2 findings: app.py:1: F401 `os` imported but unused; app.py:3: F841 Local variable `x` is assigned to but never used"
        );
        assert_eq!(
            lint_note(b"All checks passed!\n").unwrap(),
            "lint: no findings"
        );
        assert_eq!(
            lint_note(b"All checks passed!\nWould reformat: app.py\n1 file would be reformatted\n")
                .unwrap(),
            "lint: no findings; 1 file to reformat: app.py"
        );
    }

    #[test]
    fn dist_file_names() {
        let sdist = DistFile::parse("more_itertools-10.5.0.tar.gz").unwrap();
        assert_eq!(
            (sdist.package.as_str(), sdist.version.as_str()),
            ("more_itertools", "10.5.0")
        );
        assert_eq!(sdist.normalized(), "more-itertools");
        let wheel = DistFile::parse("more_itertools-10.5.0-py3-none-any.whl").unwrap();
        assert_eq!(wheel.version, "10.5.0");
        assert_eq!(DistFile::parse("notes.txt"), None);
        assert_eq!(DistFile::parse("-rf-1.0.tar.gz"), None);
    }

    #[test]
    fn build_output_names_the_files() {
        let out = b"* Building wheel...\nSuccessfully built demo-0.1.0.tar.gz and demo-0.1.0-py3-none-any.whl\n";
        assert_eq!(
            built_files(out),
            ["demo-0.1.0.tar.gz", "demo-0.1.0-py3-none-any.whl"]
        );
    }

    #[test]
    fn coverage_total_counts_lines_and_branches() {
        let xml = r#"<?xml version="1.0" ?><coverage version="7.6.1" timestamp="1" lines-valid="200" lines-covered="150" line-rate="0.75" branches-covered="0" branches-valid="0" branch-rate="0" complexity="0"></coverage>"#;
        assert_eq!(coverage_percent(xml), Some(75.0));
        assert_eq!(coverage_percent("<x/>"), None);
    }

    #[test]
    fn packages_come_after_the_end_of_options() {
        let dir = tempfile::tempdir().unwrap();
        let params = VenvParams {
            packages: vec!["ruff".into(), "--index-url=x".into()],
            ..VenvParams::default()
        };
        let commands = venv(dir.path(), &params).unwrap();
        let install = &commands[1];
        assert_eq!(
            install.args[install.args.len() - 3..],
            ["--", "ruff", "--index-url=x"]
        );
    }
}
