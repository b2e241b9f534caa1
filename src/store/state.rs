//! `.pydeployer/` in the project root: the run lock and the runs' scratch folders.
//!
//! One run at a time per project: `run`, `all`, `rollback` and `demo` hold an exclusive
//! `flock` on `.pydeployer/lock` for the whole run. The lock belongs to the open file, which
//! is close-on-exec (no stage inherits it), and the kernel releases it when the process dies,
//! however it dies: a lock left by a killed run never blocks the next one. The file itself
//! stays; its text only says who holds it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local};
use serde::{Deserialize, Serialize};

/// The size of the lock file's holder record.
const HOLDER_RECORD: usize = 256;

/// The folder, once checked.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
}

/// The run lock; released when dropped (or when the process dies), or by
/// [`release`](RunLock::release).
#[derive(Debug)]
pub struct RunLock {
    file: File,
}

impl RunLock {
    /// The locked file. A process that inherits a copy of it (the watchdog) holds the lock
    /// too, for as long as it lives: a run killed with `kill -9` stays locked until the
    /// watchdog has ended its stages, so the next run never meets them.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Releases the lock now, for every process holding a copy of the file.
    pub fn release(&self) {
        let _ = self.file.unlock();
    }
}

/// Who holds the lock, as written in the lock file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub started_at: DateTime<Local>,
    pub command: String,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LockError {
    #[error("another run holds {path}{}", describe(.holder.as_ref()))]
    Busy {
        path: PathBuf,
        holder: Option<Holder>,
    },
    /// Given up while waiting: the front end was told to end (a signal while it held them).
    #[error("stopped while waiting for another run to release {path}")]
    GaveUp { path: PathBuf },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn describe(holder: Option<&Holder>) -> String {
    match holder {
        Some(h) => format!(
            " (`pydeployer {}`, pid {}, started {})",
            h.command,
            h.pid,
            h.started_at.format("%Y-%m-%d %H:%M:%S")
        ),
        None => String::new(),
    }
}

impl StateDir {
    /// `.pydeployer/` under `root`, created if needed (with a `.gitignore` so that git does
    /// not list it). A symbolic link in its place is refused rather than followed.
    pub fn open(root: &Path) -> Result<StateDir, LockError> {
        let path = root.join(".pydeployer");
        let io_error = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(io_error(err)),
        }
        let meta = fs::symlink_metadata(&path).map_err(io_error)?;
        if !meta.is_dir() {
            return Err(io_error(io::Error::other(
                "it is not a folder (a symbolic link or a file is in its place); remove it",
            )));
        }
        match create_new(&path.join(".gitignore")) {
            Ok(mut file) => file.write_all(b"*\n").map_err(io_error)?,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(io_error(err)),
        }
        Ok(StateDir { path })
    }

    /// The folder itself (`.pydeployer/`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the run lock. When another run holds it: an error naming that run, or with
    /// `wait`, `waiting(holder)` is called once and the lock is awaited.
    pub fn lock(
        &self,
        command: &str,
        wait: bool,
        waiting: impl FnOnce(Option<&Holder>),
    ) -> Result<RunLock, LockError> {
        self.lock_unless(command, wait, waiting, || false)
    }

    /// [`lock`](StateDir::lock), whose wait ends with [`LockError::GaveUp`] as soon as
    /// `give_up()` says so (checked every 50 ms).
    pub fn lock_unless(
        &self,
        command: &str,
        wait: bool,
        waiting: impl FnOnce(Option<&Holder>),
        give_up: impl Fn() -> bool,
    ) -> Result<RunLock, LockError> {
        let path = self.path.join("lock");
        let io_error = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            // Not a FIFO either: opening one must not wait for a writer.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)
            .map_err(io_error)?;
        crate::files::check_regular(&path, &file).map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file);
                // A run that was killed: its watchdog holds the lock while it ends the run's
                // stages, which takes moments. Waiting for it is not waiting for a run.
                let cleaning_up = holder.as_ref().is_some_and(|h| !alive(h.pid));
                if !wait && !cleaning_up {
                    return Err(LockError::Busy { path, holder });
                }
                if !cleaning_up {
                    waiting(holder.as_ref());
                }
                loop {
                    match file.try_lock() {
                        Ok(()) => break,
                        Err(fs::TryLockError::WouldBlock) => {}
                        Err(fs::TryLockError::Error(err)) => return Err(io_error(err)),
                    }
                    if give_up() {
                        return Err(LockError::GaveUp { path });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            Err(fs::TryLockError::Error(err)) => return Err(io_error(err)),
        }
        let holder = Holder {
            pid: std::process::id(),
            started_at: Local::now(),
            command: command.to_owned(),
        };
        // A record of one fixed size, written over the last holder's in place: no truncation
        // (which costs more than the rest of taking the lock), and JSON ignores the padding.
        let mut text = serde_json::to_vec(&holder).map_err(|e| io_error(e.into()))?;
        if text.len() < HOLDER_RECORD - 1 {
            text.resize(HOLDER_RECORD - 1, b' ');
        }
        text.push(b'\n');
        file.write_all_at(&text, 0).map_err(io_error)?;
        Ok(RunLock { file })
    }

    /// The outbox: what runs could not send yet (see `store::outbox`).
    pub fn outbox(&self) -> io::Result<crate::store::outbox::Outbox> {
        crate::store::outbox::Outbox::open(self.path.join("outbox"))
    }

    /// A fresh scratch folder for one run, under `.pydeployer/tmp/`. Call it holding the
    /// lock: every other `run-*` folder there was left by a run that was killed, and is
    /// removed. A symbolic link in place of `tmp/` is refused, never followed (a cloned
    /// project could carry one pointing anywhere).
    pub fn scratch(&self, _lock: &RunLock) -> io::Result<tempfile::TempDir> {
        let tmp = self.path.join("tmp");
        match fs::create_dir(&tmp) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
        if !fs::symlink_metadata(&tmp)?.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a folder (a symbolic link or a file is in its place); remove it",
                tmp.display()
            )));
        }
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            let left_by_a_run = entry.file_name().to_string_lossy().starts_with("run-");
            // `file_type` does not follow symbolic links: a link is removed, not its target.
            if left_by_a_run && entry.file_type()?.is_dir() {
                fs::remove_dir_all(entry.path())?;
            }
        }
        tempfile::Builder::new().prefix("run-").tempdir_in(&tmp)
    }
}

/// Whether process `pid` exists.
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    Read::take(&mut *file, HOLDER_RECORD as u64 * 4)
        .read_to_string(&mut text)
        .ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// Creates a file that must not exist yet; a symbolic link in its place is an error, never
/// followed.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_free_after_the_first_is_dropped() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::open(root.path()).unwrap();
        let first = state.lock("run", false, |_| {}).unwrap();
        match state.lock("all", false, |_| {}) {
            Err(LockError::Busy {
                holder: Some(holder),
                ..
            }) => {
                assert_eq!(holder.pid, std::process::id());
                assert_eq!(holder.command, "run");
            }
            other => panic!("expected busy, got {other:?}"),
        }
        drop(first);
        assert!(state.lock("all", false, |_| {}).is_ok());
    }

    #[test]
    fn the_folder_ignores_itself_and_a_symlink_in_its_place_is_refused() {
        let root = tempfile::tempdir().unwrap();
        StateDir::open(root.path()).unwrap();
        assert_eq!(
            fs::read_to_string(root.path().join(".pydeployer/.gitignore")).unwrap(),
            "*\n"
        );
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(other.path(), other.path().join("link")).unwrap();
        let root2 = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(other.path(), root2.path().join(".pydeployer")).unwrap();
        assert!(StateDir::open(root2.path()).is_err());
        assert!(!other.path().join(".gitignore").exists());
    }

    #[test]
    fn a_symlink_in_place_of_the_scratch_folder_is_refused_and_its_target_kept() {
        let root = tempfile::tempdir().unwrap();
        let victim = tempfile::tempdir().unwrap();
        fs::write(victim.path().join("file.txt"), "x").unwrap();
        fs::create_dir_all(victim.path().join("run-1")).unwrap();
        let state = StateDir::open(root.path()).unwrap();
        std::os::unix::fs::symlink(victim.path(), root.path().join(".pydeployer/tmp")).unwrap();
        let lock = state.lock("run", false, |_| {}).unwrap();
        assert!(state.scratch(&lock).is_err());
        assert!(victim.path().join("file.txt").exists());
        assert!(victim.path().join("run-1").exists());
    }

    #[test]
    fn scratch_removes_what_killed_runs_left() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::open(root.path()).unwrap();
        let lock = state.lock("run", false, |_| {}).unwrap();
        let left = root.path().join(".pydeployer/tmp/run-old");
        fs::create_dir_all(left.join("inner")).unwrap();
        let scratch = state.scratch(&lock).unwrap();
        assert!(!left.exists());
        assert!(scratch.path().is_dir());
    }
}
