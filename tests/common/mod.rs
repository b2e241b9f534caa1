//! A project in a temporary folder, and the real `pydeployer` binary run inside it.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

pub struct Project {
    dir: TempDir,
}

impl Project {
    /// An empty project folder.
    pub fn new() -> Self {
        Project {
            dir: tempfile::Builder::new()
                .prefix("pydeployer-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// A project whose `pipeline.yml` is `yaml`.
    pub fn with_pipeline(yaml: &str) -> Self {
        let project = Project::new();
        project.file("pipeline.yml", yaml);
        project
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Writes a file (creating its folders).
    pub fn file(&self, relative: &str, contents: &str) -> &Self {
        let path = self.join(relative);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, contents).expect("write");
        self
    }

    /// This repository's own `stages.d/` (the demo pipeline's drop-in stages), copied in.
    pub fn copy_repository_stages(&self) -> &Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("stages.d");
        for entry in fs::read_dir(root).expect("stages.d") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).expect("name");
            self.file(
                &format!("stages.d/{name}"),
                &fs::read_to_string(&path).expect("read"),
            );
        }
        self
    }

    pub fn read(&self, relative: &str) -> String {
        fs::read_to_string(self.join(relative)).unwrap_or_else(|e| panic!("read {relative}: {e}"))
    }

    pub fn exists(&self, relative: &str) -> bool {
        self.join(relative).exists()
    }

    /// `pydeployer ARGS…` in the project folder, without colors.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("pydeployer").expect("binary");
        cmd.current_dir(self.path())
            .env("NO_COLOR", "1")
            .env_remove("PYDEPLOYER_STAGE")
            .args(args);
        cmd
    }

    /// Runs `pydeployer ARGS…` and returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let output = self.cmd(args).output().expect("run pydeployer");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The run logs in `logs/`, oldest first.
    pub fn logs(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(self.join("logs")) else {
            return Vec::new();
        };
        let mut logs: Vec<PathBuf> = entries.map(|e| e.expect("entry").path()).collect();
        logs.sort();
        logs
    }

    /// The text of the only (or newest) run log.
    pub fn last_log(&self) -> String {
        let logs = self.logs();
        let newest = logs
            .iter()
            .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
            .expect("a run log");
        String::from_utf8_lossy(&fs::read(newest).expect("read log")).into_owned()
    }

    /// Every file and folder under the project, relative, sorted.
    pub fn tree(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(self.path(), self.path(), &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        out.push(
            path.strip_prefix(root)
                .expect("prefix")
                .display()
                .to_string(),
        );
        if path.is_dir() {
            walk(root, &path, out);
        }
    }
}

impl Project {
    /// Starts `pydeployer ARGS…` in the project folder without waiting; stdout and stderr
    /// are piped (read them with `wait_with_output`).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin!("pydeployer"))
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .env_remove("PYDEPLOYER_STAGE")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start pydeployer")
    }

    /// Waits (up to `limit`, a guard against hangs, not a measurement) until `relative`
    /// exists; panics with `what` otherwise.
    pub fn wait_for(&self, relative: &str, limit: std::time::Duration) {
        let start = std::time::Instant::now();
        while !self.exists(relative) {
            assert!(start.elapsed() < limit, "{relative} never appeared");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Waits (up to `limit`, a guard against hangs) until a run log holds `text`. A line of a
    /// stage's output in the log also tells that the runner has read it, so it is past
    /// starting that stage (and telling the watchdog of its group).
    pub fn wait_for_log(&self, text: &str, limit: std::time::Duration) {
        let start = std::time::Instant::now();
        while !self
            .logs()
            .iter()
            .any(|log| fs::read_to_string(log).unwrap_or_default().contains(text))
        {
            assert!(start.elapsed() < limit, "`{text}` never reached the log");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The pid written in the file `relative`.
    pub fn pid(&self, relative: &str) -> i32 {
        let start = std::time::Instant::now();
        loop {
            let text = fs::read_to_string(self.join(relative)).unwrap_or_default();
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "{relative} holds no pid"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Whether the process runs (a zombie waiting for its parent to reap it does not).
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Waits (up to `limit`, a guard against hangs) until the process is gone.
pub fn gone_within(pid: i32, limit: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    while alive(pid) {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: i32) {
    let pid = i32::try_from(pid).expect("pid");
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill {pid}");
}

/// Waits for the child (up to `limit`, a guard against hangs) and returns (code or
/// 128 + signal, stdout, stderr).
pub fn finish(child: std::process::Child, limit: std::time::Duration) -> (i32, String, String) {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            std::thread::sleep(std::time::Duration::from_millis(50));
            if !alive(i32::try_from(pid).unwrap_or(0)) {
                return;
            }
        }
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(i32::try_from(pid).unwrap_or(0), libc::SIGKILL) };
    });
    let output = child.wait_with_output().expect("wait");
    let _ = watchdog.join();
    let code = output
        .status
        .code()
        .or(output.status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    (
        code,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `git ARGS…` in `dir` with a fixed identity; panics when it fails; returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Makes `origin.git` in the project: a bare repository whose `master` holds one commit with
/// `README`.
pub fn bare_origin(project: &Project) {
    project.file("seed/README", "hello\n");
    push_seed(project);
}

/// Makes `origin.git` in the project from what is in its `seed/` folder: one commit on
/// `master`.
pub fn push_seed(project: &Project) {
    let seed = project.join("seed");
    git(
        project.path(),
        &["init", "-q", "--bare", "-b", "master", "origin.git"],
    );
    git(&seed, &["init", "-q", "-b", "master"]);
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "-q", "-m", "first"]);
    git(&seed, &["remote", "add", "origin", "../origin.git"]);
    git(&seed, &["push", "-q", "origin", "master"]);
}

/// `chmod 755`.
pub fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Kills the process (SIGKILL; its watchdog then ends its stages) if the test ends, or
/// panics, before it was ended: no long-running pydeployer (watch, scheduler) outlives its
/// test.
pub struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// A [`KillOnDrop`] for `child`.
pub fn guard(child: &std::process::Child) -> KillOnDrop {
    KillOnDrop(i32::try_from(child.id()).expect("pid"))
}

pub mod targets;

/// A webhook receiver: answers 200 to each request, hands over each body.
pub fn webhook_server() -> (String, std::sync::mpsc::Receiver<(String, String)>) {
    use std::io::{BufRead as _, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .unwrap();
            tx.send((request_line, String::from_utf8(body).unwrap()))
                .unwrap();
        }
    });
    (format!("http://127.0.0.1:{port}"), rx)
}
