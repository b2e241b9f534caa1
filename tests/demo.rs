//! `pydeployer demo`, the README's first command, with this repository's own `pipeline.yml`
//! and `stages.d/` (the staging port moved to a free one): the sample app goes through clone,
//! install (pytest from PyPI), build and test, is pushed to its origin and to the staging
//! environment, whose hook serves it on loopback, and the deploy is checked over HTTP. The
//! server the demo leaves running is ended when the test ends.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::targets::{free_port, http_get};
use common::{Project, git, gone_within};

/// The port of the staging environment in the repository's pipeline.yml.
const DEMO_PORT: &str = "18001";

/// The repository's demo pipeline in a temporary folder, serving staging on `port`.
fn demo_project(port: u16) -> Project {
    let project = Project::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline = std::fs::read_to_string(root.join("pipeline.yml")).unwrap();
    assert!(
        pipeline.contains(&format!("http://127.0.0.1:{DEMO_PORT}/health")),
        "pipeline.yml's staging health check moved from port {DEMO_PORT}: update this test and the README"
    );
    project.file(
        "pipeline.yml",
        &pipeline.replace(DEMO_PORT, &port.to_string()),
    );
    project.copy_repository_stages();
    project
}

/// The pid of the demo's staging server, when its pid file names one that runs.
fn server_pid(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("app.server")
        .then_some(pid)
}

/// Kills the demo's staging server when the test ends, however it ends.
struct StagingServer(PathBuf);

impl Drop for StagingServer {
    fn drop(&mut self) {
        if let Some(pid) = server_pid(&self.0) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// A process of the test's own, killed and waited for when the test ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ledger(project: &Project) -> Vec<serde_json::Value> {
    serde_json::from_str(&project.read("archive/deploy_history.json")).unwrap()
}

#[test]
fn the_demo_deploys_to_staging_which_serves_the_app_and_answers_its_health_check() {
    let port = free_port();
    let project = demo_project(port);
    let _server = StagingServer(project.join("demo/staging/server.pid"));
    let health = format!("http://127.0.0.1:{port}/health");

    let (code, out, err) = project.run(&["demo"]);
    assert_eq!(code, 0, "{out}{err}");
    let commit = git(&project.join("demo/origin.git"), &["rev-parse", "master"]);
    assert_eq!(
        git(&project.join("demo/staging.git"), &["rev-parse", "master"]),
        commit,
        "staging does not hold what was pushed to origin"
    );
    assert_eq!(http_get(&health), (200, format!("sample-app {commit}")));
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{port}/add?a=2&b=3")),
        (200, "5".to_owned())
    );
    // The terminal shows the deploy was checked, and where the app is.
    let shown = format!("{out}{err}");
    assert!(
        shown.contains(&format!("staging at {}: healthy after", &commit[..7])),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("curl 'http://127.0.0.1:{port}/add?a=2&b=3'")),
        "{shown}"
    );
    let entries = ledger(&project);
    let staging: Vec<_> = entries
        .iter()
        .filter(|e| e["environment"] == "staging")
        .collect();
    assert_eq!(staging.len(), 1, "{entries:?}");
    assert_eq!(staging[0]["kind"], "deploy");
    assert_eq!(staging[0]["status"], "success");
    assert_eq!(staging[0]["commit"], commit.as_str());
    assert_eq!(staging[0]["health"]["result"], "healthy");
    assert!(
        entries
            .iter()
            .any(|e| e["environment"].is_null() && e["commit"] == commit.as_str()),
        "no deploy to origin: {entries:?}"
    );

    // Again: nothing new to push, and the app still answers.
    let pid = server_pid(&project.join("demo/staging/server.pid")).expect("the staging server");
    let (code, out, err) = project.run(&["demo"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        server_pid(&project.join("demo/staging/server.pid")),
        Some(pid),
        "the server was replaced although nothing was pushed"
    );
    let last = ledger(&project);
    let last = last
        .iter()
        .rev()
        .find(|e| e["environment"] == "staging")
        .unwrap();
    assert_eq!(last["health"]["result"], "healthy", "{last}");

    // Stopped as the README says: the next demo serves the deployed commit again.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(
        gone_within(pid, Duration::from_secs(10)),
        "the server stays"
    );
    assert_eq!(http_get(&health).0, 0, "something still answers");
    let (code, out, err) = project.run(&["demo"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("started it again"), "{err}");
    assert_eq!(http_get(&health), (200, format!("sample-app {commit}")));
}

#[test]
fn a_port_something_else_holds_fails_the_staging_deploy_saying_so() {
    let port = free_port();
    let project = demo_project(port);
    // The demo's check waits 30s; 8s is enough here (its server gives up binding after 5s).
    project.file(
        "pipeline.yml",
        &project
            .read("pipeline.yml")
            .replace("timeout: 30s", "timeout: 8s"),
    );
    let _server = StagingServer(project.join("demo/staging/server.pid"));
    let other = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(project.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _other = Reaped(other);
    let health = format!("http://127.0.0.1:{port}/health");
    let start = std::time::Instant::now();
    while http_get(&health).0 != 404 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "python3 -m http.server does not answer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let (code, out, err) = project.run(&["demo"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("unhealthy after"), "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("something else holds port {port}")),
        "{err}"
    );
    let entries = ledger(&project);
    let staging = entries
        .iter()
        .find(|e| e["environment"] == "staging")
        .unwrap();
    assert_eq!(staging["status"], "unhealthy", "{staging}");
    assert_eq!(staging["health"]["result"], "unhealthy", "{staging}");
    // The other server is left alone.
    assert_eq!(http_get(&health).0, 404);
}
