//! `.pydeployer/last-run.json`: how each stage of the last run ended, for `run --failed`.
//!
//! Written once a run ends (a temporary file renamed into place); read back as untrusted
//! input: a regular file, at most [`MAX_SIZE`] bytes, every stage name checked.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pipeline::StageName;

const FILE: &str = "last-run.json";
const MAX_SIZE: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    /// The run's log file name.
    pub log: Option<String>,
    pub stages: Vec<StageEnd>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageEnd {
    pub name: String,
    /// `passed`, `failed`, `failed_allowed`, `timed_out`, `cancelled`, `skipped`, `cached`.
    pub result: String,
    /// It failed, was cancelled, or was skipped because something before it failed: what
    /// `run --failed` runs again.
    pub rerun: bool,
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Replaces the record (atomically).
pub fn save(state_dir: &Path, run: &LastRun) -> io::Result<()> {
    let mut file = tempfile::NamedTempFile::new_in(state_dir)?;
    // One write, not one per token (an unbuffered writer costs a system call each).
    let mut text = serde_json::to_vec_pretty(run)?;
    text.push(b'\n');
    file.write_all(&text)?;
    file.as_file().sync_all()?;
    file.persist(path(state_dir)).map_err(|e| e.error)?;
    Ok(())
}

/// The last run, `Ok(None)` when there is none; an unreadable or invalid record is an error
/// that says why.
pub fn load(state_dir: &Path) -> Result<Option<LastRun>, String> {
    let path = path(state_dir);
    let meta = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("{}: {err}", path.display())),
    };
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut text = String::new();
    fs::File::open(&path)
        .and_then(|f| f.take(MAX_SIZE + 1).read_to_string(&mut text))
        .map_err(|err| format!("{}: {err}", path.display()))?;
    if text.len() as u64 > MAX_SIZE {
        return Err(format!("{} is larger than 1 MiB", path.display()));
    }
    let run: LastRun = serde_json::from_str(&text)
        .map_err(|err| format!("{} does not parse: {err}", path.display()))?;
    if let Some(bad) = run
        .stages
        .iter()
        .find(|s| StageName::parse(&s.name).is_err())
    {
        return Err(format!(
            "{} names an invalid stage `{}`",
            path.display(),
            bad.name
        ));
    }
    Ok(Some(run))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_untrusted_input() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), Ok(None));
        let run = LastRun {
            log: Some("2026-01-01_00-00-00.log".into()),
            stages: vec![StageEnd {
                name: "test".into(),
                result: "failed".into(),
                rerun: true,
            }],
        };
        save(dir.path(), &run).unwrap();
        assert_eq!(load(dir.path()), Ok(Some(run)));
        fs::write(
            dir.path().join(FILE),
            r#"{"log":null,"stages":[{"name":"../x","result":"failed","rerun":true}]}"#,
        )
        .unwrap();
        assert!(load(dir.path()).unwrap_err().contains("invalid stage"));
        fs::write(dir.path().join(FILE), "garbage").unwrap();
        assert!(load(dir.path()).unwrap_err().contains("does not parse"));
    }
}
