//! A project in a temporary folder, and the real `pydeployer` binary run inside it.

#![allow(dead_code, unreachable_pub)]

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
