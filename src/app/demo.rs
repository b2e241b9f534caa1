//! `pydeployer demo`: a local bare origin holding a small Python app, a local push-to-deploy
//! target for the pipeline's `staging` environment, then the pipeline.
//!
//! The app's files are embedded in the binary, so the demo needs no network but PyPI (for
//! the `install` stage's pytest). The staging target is a bare repository whose
//! `post-receive` hook checks each pushed commit out and (re)starts the app's own HTTP server
//! (`python3 -m app.server`, standard library only) on the loopback port of the environment's
//! health check, so the deploy stage's health check asks the app that was just pushed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::actions::{CommandLine, git};
use crate::cli::Cli;
use crate::error::{Failure, Problem};
use crate::exec::process;
use crate::pipeline::{Environment, HealthCheck};
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
        "app/server.py",
        include_str!("../../demo-app/app/server.py"),
    ),
    (
        "tests/__init__.py",
        include_str!("../../demo-app/tests/__init__.py"),
    ),
    (
        "tests/test_calc.py",
        include_str!("../../demo-app/tests/test_calc.py"),
    ),
    (
        "tests/test_server.py",
        include_str!("../../demo-app/tests/test_server.py"),
    ),
];

/// The staging repository's `post-receive` hook: each push of the branch goes to `serve.sh`.
const STAGING_HOOK: &str = r#"#!/bin/sh
# pydeployer demo: push-to-deploy. Each push of @BRANCH@ is checked out and served by serve.sh,
# in the folder next to this repository.
repo=$(cd "$(dirname "$0")/.." && pwd)
while read -r old new ref; do
  [ "$ref" = refs/heads/@BRANCH@ ] || continue
  [ "$new" = 0000000000000000000000000000000000000000 ] && continue
  "${repo%.git}/serve.sh" "$new"
done
"#;

/// `serve.sh COMMIT`: the commit's files into `app/`, the previous server stopped, the app's
/// server started, detached (a session of its own, no terminal, its output in `server.log`),
/// so that the push returns.
const STAGING_SERVE: &str = r#"#!/bin/sh
# pydeployer demo: serves COMMIT of the staging repository on http://127.0.0.1:@PORT@/
# (GET /health answers 200 and `sample-app COMMIT`). The repository's post-receive hook runs it
# after each push; `pydeployer demo` runs it when the server is not running.
# Stop the server: kill "$(cat @SITE@/server.pid)"
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE
site=$(cd "$(dirname "$0")" && pwd)
commit=$1 port=@PORT@
# The previous server, if the pid file still names it (a pid can be reused).
if [ -f "$site/server.pid" ]; then
  pid=$(cat "$site/server.pid")
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-m app.server --port "; then
    kill "$pid"
  fi
  rm -f "$site/server.pid"
fi
rm -rf "$site/app.new" && mkdir "$site/app.new" || exit
git --git-dir="$site.git" archive "$commit" | tar -x -C "$site/app.new" || { echo "staging: cannot check out $commit" >&2; exit 1; }
rm -rf "$site/app" && mv "$site/app.new" "$site/app" || exit
cd "$site/app" || exit
setsid python3 -m app.server --port "$port" --commit "$commit" </dev/null >>"$site/server.log" 2>&1 &
echo $! >"$site/server.pid"
echo "staging: serving $commit on http://127.0.0.1:$port/ (log: $site/server.log)"
"#;

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
    let staging = Staging::of(&pipeline)?;
    if let Some(staging) = &staging {
        staging.prepare().map_err(|err| {
            Failure::Tool(miette::miette!(
                "cannot set up the demo's staging environment at {}: {err}",
                staging.repo.display()
            ))
        })?;
    }
    let request = RunRequest {
        command: "demo",
        ..RunRequest::default()
    };
    let result = session::run(&pipeline, &request, &super::settings(cli, wait));
    if let Some(staging) = staging.as_ref().filter(|s| result.is_err() && !s.serving()) {
        staging.why_not_serving();
    }
    if result.is_ok() {
        let served = staging.as_ref().map_or_else(String::new, |staging| {
            format!(
                "\n  curl 'http://127.0.0.1:{port}/add?a=2&b=3'   # the app, as staging serves it\n  pydeployer status              # what is live on staging, and its health now\n  kill \"$(cat '{pid}')\"   # stop the staging app",
                port = staging.port,
                pid = staging.site.join("server.pid").display()
            )
        });
        crate::errln!(
            "\nNext, try:\n  pydeployer run --only test     # pytest alone, in the workspace\n  pydeployer history             # the deploy ledger\n  pydeployer rollback            # revert the last commit and push it\n  pydeployer plan                # what `run` does, without running it{served}"
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

/// The demo's `staging` environment: a bare repository on this machine (`demo/staging.git`),
/// the folder its hook serves from (`demo/staging/`), and the port of its health check.
struct Staging {
    repo: PathBuf,
    site: PathBuf,
    branch: String,
    port: u16,
}

impl Staging {
    /// The pipeline's `staging` environment, when it is a local path (the demo's own
    /// pipeline); its health check must be an HTTP GET on a loopback port, which the app
    /// then serves on.
    fn of(pipeline: &crate::pipeline::Pipeline) -> Result<Option<Staging>, Failure> {
        let Some(environment) = pipeline.environment("staging") else {
            return Ok(None);
        };
        let repo = PathBuf::from(&environment.url);
        if !repo.is_absolute() {
            return Ok(None);
        }
        let port = loopback_port(environment).ok_or_else(|| {
            Problem::general(format!(
                "the demo serves its staging app on the port of `environments.staging.health.url`, and {} has none",
                environment.url
            ))
            .with_help("give staging `health: { url: \"http://127.0.0.1:18001/health\" }`")
        })?;
        let site = repo.with_extension("");
        Ok(Some(Staging {
            repo,
            site,
            branch: environment.branch.clone(),
            port,
        }))
    }

    /// Creates the repository (once), writes its hook and `serve.sh` (each time: they follow
    /// the port in pipeline.yml), and starts the server again when the repository holds a
    /// deploy but nothing serves it (the user stopped it; the machine restarted).
    fn prepare(&self) -> std::io::Result<()> {
        let env = git::pinned_environment(None, false, &BTreeMap::new());
        if !self.repo.join("HEAD").is_file() {
            fs::create_dir_all(&self.repo)?;
            process::capture(
                &CommandLine::new(
                    "git",
                    [
                        "init",
                        "--quiet",
                        "--bare",
                        "--initial-branch",
                        &self.branch,
                        ".",
                    ],
                ),
                &self.repo,
                &env,
            )?;
            crate::errln!(
                "demo: created {}, the staging environment: each push is served on http://127.0.0.1:{}/",
                self.repo.display(),
                self.port
            );
        }
        fs::create_dir_all(&self.site)?;
        let fill = |text: &str| {
            text.replace("@BRANCH@", &self.branch)
                .replace("@PORT@", &self.port.to_string())
                .replace("@SITE@", &self.site.display().to_string())
        };
        let hook = self.repo.join("hooks/post-receive");
        let serve = self.site.join("serve.sh");
        fs::create_dir_all(self.repo.join("hooks"))?;
        fs::write(&hook, fill(STAGING_HOOK))?;
        fs::write(&serve, fill(STAGING_SERVE))?;
        for script in [&hook, &serve] {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(script, fs::Permissions::from_mode(0o755))?;
        }
        let deployed = process::capture(
            &CommandLine::new(
                "git",
                [
                    "rev-parse".to_owned(),
                    "--verify".to_owned(),
                    "--quiet".to_owned(),
                    "--end-of-options".to_owned(),
                    format!("refs/heads/{}^{{commit}}", self.branch),
                ],
            ),
            &self.repo,
            &env,
        )
        .ok()
        .and_then(|out| out.parse::<crate::object_id::ObjectId>().ok());
        if let Some(commit) = deployed
            && !self.serving()
        {
            let said = process::capture(
                &CommandLine::new(serve.display().to_string(), [commit.as_str()]),
                &self.site,
                &env,
            )?;
            crate::errln!("demo: the staging app was not running; started it again\n{said}");
        }
        Ok(())
    }

    /// After a failed run: what the server said last, and what to do when its port is taken.
    fn why_not_serving(&self) {
        let log = self.site.join("server.log");
        let last = fs::read_to_string(&log).unwrap_or_default();
        let Some(last) = last.lines().rev().find(|l| !l.trim().is_empty()) else {
            return;
        };
        crate::errln!(
            "demo: the staging app is not running; the last line of {}:\n  {last}",
            log.display()
        );
        if last.contains("cannot listen") {
            crate::errln!(
                "demo: something else holds port {}: stop it, or move staging to another port in pipeline.yml (`environments.staging.health.url`), then run the demo again",
                self.port
            );
        }
    }

    /// Whether the server the pid file names runs (a zombie's command line is empty).
    fn serving(&self) -> bool {
        let Some(pid) = fs::read_to_string(self.site.join("server.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            return false;
        };
        fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(&format!("-m app.server --port {} ", self.port))
        })
    }
}

/// The port of `http://127.0.0.1:PORT/…` (or `localhost`), the environment's health check.
fn loopback_port(environment: &Environment) -> Option<u16> {
    let HealthCheck::Http { url, .. } = &environment.health.as_ref()?.check else {
        return None;
    };
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (host, port) = authority.rsplit_once(':')?;
    matches!(host, "127.0.0.1" | "localhost")
        .then(|| port.parse().ok())
        .flatten()
}
