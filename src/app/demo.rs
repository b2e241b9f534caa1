//! `pydeployer demo`: a local bare origin holding a small Python app, then the pipeline.
//!
//! The app's files are embedded in the binary, so the demo needs no network but PyPI (for
//! the `install` stage's pytest).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::actions::{CommandLine, git};
use crate::cli::Cli;
use crate::error::{Failure, Problem};
use crate::exec::process;
use crate::session::{self, RunRequest};

/// The sample app, as (path, contents).
const APP: &[(&str, &str)] = &[
    ("README.md", include_str!("../../demo-app/README.md")),
    (".gitignore", include_str!("../../demo-app/.gitignore")),
    (
        "requirements.txt",
        include_str!("../../demo-app/requirements.txt"),
    ),
    ("pytest.ini", include_str!("../../demo-app/pytest.ini")),
    (
        "app/__init__.py",
        include_str!("../../demo-app/app/__init__.py"),
    ),
    ("app/calc.py", include_str!("../../demo-app/app/calc.py")),
    (
        "tests/__init__.py",
        include_str!("../../demo-app/tests/__init__.py"),
    ),
    (
        "tests/test_calc.py",
        include_str!("../../demo-app/tests/test_calc.py"),
    ),
];

pub(crate) fn run(cli: &Cli, wait: bool) -> Result<(), Failure> {
    let pipeline = super::load(cli)?;
    let repo = pipeline.repo.as_ref().ok_or_else(|| {
        Problem::general("the demo needs `repo:` in the pipeline file")
            .with_help("run the demo from pydeployer's own folder, whose pipeline.yml has it")
    })?;
    let origin = Path::new(&repo.url);
    if !origin.is_absolute() {
        return Err(Problem::general(format!(
            "the demo creates a local origin, but `repo.url` is {}",
            repo.url
        ))
        .with_help("point `repo.url` at a local path, e.g. `demo/origin.git`")
        .into());
    }
    if origin.join("HEAD").is_file() {
        crate::errln!(
            "demo: {} already exists; running the pipeline against it",
            origin.display()
        );
    } else {
        create_origin(origin, &repo.branch).map_err(|err| {
            Failure::Tool(miette::miette!(
                "cannot create the demo origin at {}: {err}",
                origin.display()
            ))
        })?;
        crate::errln!(
            "demo: created {} holding a small Python app with pytest tests",
            origin.display()
        );
    }
    let request = RunRequest {
        command: "demo",
        ..RunRequest::default()
    };
    let result = session::run(&pipeline, &request, &super::settings(cli, wait));
    if result.is_ok() {
        crate::errln!(
            "\nNext, try:\n  pydeployer run --only test     # pytest alone, in the workspace\n  pydeployer history             # the deploy ledger\n  pydeployer rollback            # revert the last commit and push it\n  pydeployer plan                # what `run` does, without running it"
        );
    }
    result
}

fn create_origin(origin: &Path, branch: &str) -> std::io::Result<()> {
    fs::create_dir_all(origin)?;
    // The user's GIT_DIR and friends must not redirect the demo's git calls either.
    let env = git::pinned_environment(None, false, &BTreeMap::new());
    let git = |args: &[&str], dir: &Path| {
        process::capture(&CommandLine::new("git", args.iter().copied()), dir, &env)
    };
    git(
        &["init", "--quiet", "--bare", "--initial-branch", branch, "."],
        origin,
    )?;
    let work = tempfile::Builder::new()
        .prefix("pydeployer-demo-")
        .tempdir()?;
    for (path, contents) in APP {
        let path = work.path().join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, contents)?;
    }
    let dir = work.path();
    git(&["init", "--quiet", "--initial-branch", branch], dir)?;
    git(&["add", "-A"], dir)?;
    git(
        &[
            "-c",
            "user.name=pydeployer demo",
            "-c",
            "user.email=demo@pydeployer.invalid",
            "commit",
            "--quiet",
            "-m",
            "Sample app: a calculator with tests",
        ],
        dir,
    )?;
    let url = origin.display().to_string();
    git(
        &[
            "push",
            "--quiet",
            "--end-of-options",
            &url,
            &format!("HEAD:refs/heads/{branch}"),
        ],
        dir,
    )?;
    Ok(())
}
