//! `.pydeployer/passed.json`: which commit passed which stages, so that a deploy of a commit
//! that did not pass the stages it needs is refused, in the run that tests it or a later one
//! (`run --only deploy`).
//!
//! The file is read back as untrusted input: a regular file (a symlink or a device is not
//! read), at most [`MAX_BYTES`], every commit a full object id and every stage a stage name;
//! what does not hold is dropped with a warning, never trusted. It holds the newest
//! [`MAX_COMMITS`] commits and is replaced whole (a temporary file renamed over it).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::object_id::ObjectId;
use crate::pipeline::StageName;

fn is_object_id(text: &str) -> bool {
    text.parse::<ObjectId>().is_ok()
}

const MAX_BYTES: u64 = 4 * 1024 * 1024;
const MAX_COMMITS: usize = 500;

/// One commit and the stages that passed on it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Tested {
    commit: String,
    /// Stage name → the run log of the run where it passed (its file name).
    passed: BTreeMap<String, String>,
}

/// The record, oldest commit first.
#[derive(Debug, Default, Clone)]
pub struct Passed {
    tested: Vec<Tested>,
}

impl Passed {
    /// The record at `path`; a missing file is an empty record, anything unreadable is an
    /// empty record too (and `warning` says why: nothing is passed that was not recorded).
    pub fn load(path: &Path, warning: impl FnOnce(String)) -> Passed {
        match read(path) {
            Ok(passed) => passed,
            Err(err) if err.kind() == io::ErrorKind::NotFound => Passed::default(),
            Err(err) => {
                warning(format!(
                    "ignoring {} ({err}): every deploy needs its stages to pass again",
                    path.display()
                ));
                Passed::default()
            }
        }
    }

    /// Whether `stage` passed on `commit`.
    pub fn passed(&self, commit: &str, stage: &StageName) -> bool {
        self.tested
            .iter()
            .any(|t| t.commit == commit && t.passed.contains_key(stage.as_str()))
    }

    pub fn record(&mut self, commit: &str, stage: &StageName, log: &str) {
        if !is_object_id(commit) {
            return;
        }
        let at = match self.tested.iter().position(|t| t.commit == commit) {
            Some(at) => at,
            None => {
                self.tested.push(Tested {
                    commit: commit.to_owned(),
                    passed: BTreeMap::new(),
                });
                self.tested.len() - 1
            }
        };
        self.tested[at]
            .passed
            .insert(stage.to_string(), log.to_owned());
        if self.tested.len() > MAX_COMMITS {
            self.tested.remove(0);
        }
    }

    /// Writes the record to `path`, through a temporary file renamed over it.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let temp = dir.join(format!(".passed.json.{}", std::process::id()));
        let text = serde_json::to_vec_pretty(&self.tested).map_err(io::Error::other)?;
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&temp)?;
            file.write_all(&text)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::rename(&temp, path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }
}

fn read(path: &Path) -> io::Result<Passed> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    check_regular(&file, path)?;
    let mut text = Vec::new();
    (&mut file).take(MAX_BYTES + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_BYTES {
        return Err(io::Error::other(format!("larger than {MAX_BYTES} bytes")));
    }
    let tested: Vec<Tested> = serde_json::from_slice(&text).map_err(io::Error::other)?;
    let valid = |t: &Tested| {
        is_object_id(&t.commit) && t.passed.keys().all(|s| StageName::parse(s).is_ok())
    };
    if let Some(bad) = tested.iter().find(|t| !valid(t)) {
        return Err(io::Error::other(format!(
            "{:?} is not a commit with stage names",
            bad.commit
        )));
    }
    Ok(Passed { tested })
}

fn check_regular(file: &File, path: &Path) -> io::Result<()> {
    if file.metadata()?.is_file() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )))
    }
}

/// Where the record lives for a project.
pub fn path(root: &Path) -> PathBuf {
    root.join(".pydeployer/passed.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> StageName {
        StageName::parse(s).unwrap()
    }

    const A: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn a_record_survives_a_save_and_bad_files_are_empty() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("passed.json");
        let mut passed = Passed::load(&path, |w| panic!("{w}"));
        passed.record(A, &name("test"), "2026-01-01_00-00-00.log");
        passed.record("HEAD~3", &name("test"), "x.log");
        passed.save(&path).unwrap();
        let again = Passed::load(&path, |w| panic!("{w}"));
        assert!(again.passed(A, &name("test")));
        assert!(!again.passed(A, &name("lint")));
        assert!(!again.passed("HEAD~3", &name("test")));

        for bad in [
            "not json",
            r#"[{"commit": "--output=x", "passed": {"test": "x"}}]"#,
            r#"[{"commit": "0123456789abcdef0123456789abcdef01234567", "passed": {"a b": "x"}}]"#,
        ] {
            fs::write(&path, bad).unwrap();
            let mut warned = None;
            let loaded = Passed::load(&path, |w| warned = Some(w));
            assert!(warned.is_some(), "{bad}");
            assert!(!loaded.passed(A, &name("test")));
        }
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let mut warned = None;
        let _ = Passed::load(&path, |w| warned = Some(w));
        assert!(warned.is_some());
    }
}
