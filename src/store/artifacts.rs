//! The artifacts folder: `artifacts/<run log stem>/<stage>/<path>`, one folder per run,
//! removed with its run's log.
//!
//! Files are copied, never linked: a symbolic link among the matches is not followed (its
//! target may be outside the stage's folder), and each copy is created new (`O_EXCL`) below a
//! folder made here, so a link planted in the artifacts folder cannot redirect a write.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::files;

/// The folder holding every run's artifacts, beside the pipeline file.
pub fn root(pipeline_root: &Path) -> PathBuf {
    pipeline_root.join("artifacts")
}

/// The run's folder: `artifacts/<log stem>`.
pub fn run_dir(pipeline_root: &Path, log: &Path) -> Option<PathBuf> {
    let stem = log.file_stem()?.to_str()?;
    Some(root(pipeline_root).join(stem))
}

/// What [`keep`] did.
#[derive(Debug, Default)]
pub struct Kept {
    pub files: Vec<String>,
    /// Symbolic links among the matches, not followed.
    pub links: Vec<String>,
}

/// Copies the files under `workdir` matching `patterns` into `dest` (keeping their relative
/// paths).
pub fn keep(workdir: &Path, patterns: &[String], dest: &Path) -> io::Result<Kept> {
    let mut kept = Kept::default();
    for found in files::matching(workdir, patterns)? {
        if found.symlink {
            kept.links.push(found.relative);
            continue;
        }
        let target = dest.join(&found.relative);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut from = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&found.path)?;
        if !from.metadata()?.is_file() {
            continue;
        }
        let mut to = crate::store::state::create_new(&target)?;
        io::copy(&mut from, &mut to)?;
        to.sync_all()?;
        kept.files.push(found.relative);
    }
    Ok(kept)
}

/// One kept file, as `pydeployer artifacts` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Artifact {
    pub stage: String,
    /// Relative to the stage's folder.
    pub path: String,
    /// Where it is kept.
    pub file: PathBuf,
    pub size: u64,
}

/// Every file kept for the run whose folder is `run_dir`, by stage then path. A run without
/// artifacts has none (not an error).
pub fn list(run_dir: &Path) -> io::Result<Vec<Artifact>> {
    let mut out = Vec::new();
    let stages = match fs::read_dir(run_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(err) => return Err(err),
    };
    let mut stages: Vec<fs::DirEntry> = stages.collect::<Result<_, _>>()?;
    stages.sort_by_key(fs::DirEntry::file_name);
    for stage in stages {
        if !stage.file_type()?.is_dir() {
            continue;
        }
        let name = stage.file_name().to_string_lossy().into_owned();
        for found in files::matching(&stage.path(), &["**".to_owned()])? {
            if found.symlink {
                continue;
            }
            let size = File::open(&found.path)?.metadata()?.len();
            out.push(Artifact {
                stage: name.clone(),
                path: found.relative,
                file: found.path,
                size,
            });
        }
    }
    Ok(out)
}

/// Removes the artifacts of the runs whose logs were removed.
pub fn prune(pipeline_root: &Path, removed_logs: &[PathBuf]) -> io::Result<()> {
    for log in removed_logs {
        let Some(dir) = run_dir(pipeline_root, log) else {
            continue;
        };
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&dir)?,
            Ok(_) => fs::remove_file(&dir)?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_files_are_copies_and_links_are_not_followed() {
        let work = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        fs::create_dir(work.path().join("dist")).unwrap();
        fs::write(work.path().join("dist/a.whl"), "wheel").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", work.path().join("dist/passwd")).unwrap();
        let kept = keep(
            work.path(),
            &["dist/*".to_owned()],
            &dest.path().join("build"),
        )
        .unwrap();
        assert_eq!(kept.files, ["dist/a.whl"]);
        assert_eq!(kept.links, ["dist/passwd"]);
        let listed = list(dest.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (
                listed[0].stage.as_str(),
                listed[0].path.as_str(),
                listed[0].size
            ),
            ("build", "dist/a.whl", 5)
        );
    }
}
