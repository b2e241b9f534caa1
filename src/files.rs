//! Files pydeployer reads: one file at a time, only a regular one and only up to a limit (never
//! a device, a FIFO or a folder, which a path from the YAML or from disk may name); and file sets
//! named by globs under a stage's folder (`cache: { inputs }`, `artifacts:`), the one place
//! globset and walkdir are used.
//!
//! A glob is relative to the folder and cannot leave it: absolute paths and `..` are refused
//! when the pipeline is checked. The walk never follows a symbolic link, so a link that points
//! outside the folder is not entered (a link to a directory) or is reported as a link (a link
//! to a file), never read through.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// What a file type is called in an error.
pub fn kind_of(file_type: fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a folder"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_fifo() {
        "a named pipe (FIFO)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

fn not_regular(path: &Path, file_type: fs::FileType) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is {}, not a regular file; pydeployer only reads and replaces regular files",
            path.display(),
            kind_of(file_type)
        ),
    )
}

/// Opens `path` for reading when it is a regular file (a symbolic link to one is followed),
/// and refuses anything else, a device, a FIFO or a folder, without blocking on it or reading
/// from it.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        // Opening a FIFO for reading would wait for a writer; a device may do anything.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    check_regular(path, &file)?;
    Ok(file)
}

/// Refuses an open file that is not a regular file.
pub fn check_regular(path: &Path, file: &File) -> io::Result<()> {
    let file_type = file.metadata()?.file_type();
    if file_type.is_file() {
        Ok(())
    } else {
        Err(not_regular(path, file_type))
    }
}

/// The bytes of the regular file at `path`, when it holds at most `limit`; a larger file is
/// an error (`InvalidData`) naming the file and the limit, never read whole.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let too_big = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is larger than the {} MiB pydeployer reads of it",
                path.display(),
                limit >> 20
            ),
        )
    };
    let len = file.metadata()?.len();
    if len > limit {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // The file may grow between the size check and the read.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Before a rename over `path`: it must be absent or a regular file (or a symbolic link,
/// which the rename replaces, not its target). A device, FIFO, socket or folder there is
/// refused, so that `archive: /dev/null` never replaces the system's.
pub fn check_replaceable(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
        Ok(meta) if meta.is_file() || meta.file_type().is_symlink() => Ok(()),
        Ok(meta) => Err(not_regular(path, meta.file_type())),
    }
}

/// Why a glob from the YAML is refused, in words; `None` when it is fine.
pub fn check_glob(pattern: &str) -> Option<String> {
    if pattern.trim().is_empty() {
        return Some("a glob cannot be empty".into());
    }
    let path = Path::new(pattern);
    if path.is_absolute() || pattern.starts_with('~') {
        return Some(format!(
            "`{pattern}` is absolute: globs are relative to the stage's folder and cannot leave it"
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Some(format!(
            "`{pattern}` goes up with `..`: globs cannot reach outside the stage's folder"
        ));
    }
    glob(pattern).err()
}

fn glob(pattern: &str) -> Result<Glob, String> {
    GlobBuilder::new(pattern.trim_start_matches("./"))
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|err| format!("`{pattern}` is not a valid glob: {}", err.kind()))
}

/// A file found under the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Relative to the folder, with `/` separators.
    pub relative: String,
    pub path: PathBuf,
    /// A symbolic link (never followed): its target is not read.
    pub symlink: bool,
}

/// The files under `dir` that match any of `patterns`, sorted by relative path (bytes). A
/// pattern that the config check would refuse matches nothing. Folders named `.git` are not
/// entered, nor `.venv`, unless a pattern starts inside them.
pub fn matching(dir: &Path, patterns: &[String]) -> io::Result<Vec<Found>> {
    let mut builder = GlobSetBuilder::new();
    let mut roots: Vec<PathBuf> = Vec::new();
    for pattern in patterns {
        if check_glob(pattern).is_some() {
            continue;
        }
        if let Ok(glob) = glob(pattern) {
            builder.add(glob);
            roots.push(literal_prefix(pattern.trim_start_matches("./")));
        }
    }
    let set: GlobSet = builder
        .build()
        .map_err(|err| io::Error::other(err.to_string()))?;
    // Walk only below each pattern's literal prefix (`src/**/*.py` → `src`): a glob for the
    // sources does not make pydeployer read `.venv`.
    roots.sort();
    roots.dedup();
    let mut kept: Vec<PathBuf> = Vec::new();
    for root in roots {
        if !kept.iter().any(|k| root.starts_with(k)) {
            kept.push(root);
        }
    }
    let mut found = Vec::new();
    for root in kept {
        let start = dir.join(&root);
        match std::fs::symlink_metadata(&start) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
            Ok(_) => {}
        }
        let walk = walkdir::WalkDir::new(&start)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !skipped(e.file_name(), &root));
        for entry in walk {
            let entry = entry.map_err(|err| {
                let path = err.path().map(Path::to_path_buf);
                let err = io::Error::from(err);
                match path {
                    Some(path) => io::Error::new(err.kind(), format!("{}: {err}", path.display())),
                    None => err,
                }
            })?;
            let kind = entry.file_type();
            if kind.is_dir() {
                continue;
            }
            let Ok(relative) = entry.path().strip_prefix(dir) else {
                continue;
            };
            let Some(text) = relative.to_str() else {
                continue;
            };
            if set.is_match(relative) {
                found.push(Found {
                    relative: text.to_owned(),
                    path: entry.path().to_path_buf(),
                    symlink: kind.is_symlink(),
                });
            }
        }
    }
    found.sort_by(|a, b| a.relative.as_bytes().cmp(b.relative.as_bytes()));
    found.dedup_by(|a, b| a.relative == b.relative);
    Ok(found)
}

/// `.git` and `.venv` are not entered (a glob like `**/*.py` means the project's files, not
/// the virtual environment's), unless the pattern starts inside them.
fn skipped(name: &std::ffi::OsStr, root: &Path) -> bool {
    [".git", ".venv"]
        .iter()
        .any(|dir| name == *dir && !root.starts_with(dir))
}

/// The leading components of `pattern` without glob syntax: where a walk must start.
fn literal_prefix(pattern: &str) -> PathBuf {
    let mut prefix = PathBuf::new();
    let components: Vec<&str> = pattern.split('/').collect();
    // The last component is a file name (or a glob of one): never a folder to start in.
    for part in &components[..components.len().saturating_sub(1)] {
        if part.is_empty() || part.contains(['*', '?', '[', ']', '{', '}', '\\']) {
            break;
        }
        prefix.push(part);
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read_and_within_the_limit() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let file = dir.path().join("f");
        fs::write(&file, b"12345").expect("write");
        assert_eq!(read_regular(&file, 5).expect("read"), b"12345");
        let err = read_regular(&file, 4).expect_err("too big");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let err = read_regular(dir.path(), 10).expect_err("a folder");
        assert!(err.to_string().contains("a folder"), "{err}");
        let err = read_regular(Path::new("/dev/null"), 10).expect_err("a device");
        assert!(err.to_string().contains("character device"), "{err}");
        let err = check_replaceable(Path::new("/dev/null")).expect_err("a device");
        assert!(err.to_string().contains("character device"), "{err}");

        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Refused at once, not waited on.
        let err = read_regular(&fifo, 10).expect_err("a FIFO");
        assert!(err.to_string().contains("FIFO"), "{err}");
        assert!(check_replaceable(&fifo).is_err());
        assert!(check_replaceable(&file).is_ok());
        assert!(check_replaceable(&dir.path().join("absent")).is_ok());
    }

    #[test]
    fn globs_cannot_leave_the_folder() {
        for bad in [
            "../../etc/passwd",
            "/etc/passwd",
            "src/../../x",
            "~/x",
            "",
            "a/[b",
        ] {
            assert!(check_glob(bad).is_some(), "{bad:?} accepted");
        }
        for good in ["dist/*", "coverage.xml", "src/**/*.py", "./pyproject.toml"] {
            assert_eq!(check_glob(good), None, "{good:?} refused");
        }
    }

    #[test]
    fn matching_is_sorted_relative_and_starts_below_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "src/b.py",
            "src/a/c.py",
            "src/a/d.txt",
            ".venv/x.py",
            "top.py",
        ] {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, file).unwrap();
        }
        let names = |patterns: &[&str]| -> Vec<String> {
            let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
            matching(root, &patterns)
                .unwrap()
                .into_iter()
                .map(|f| f.relative)
                .collect()
        };
        assert_eq!(names(&["src/**/*.py"]), ["src/a/c.py", "src/b.py"]);
        assert_eq!(names(&["*.py"]), ["top.py"]);
        // `.venv` is not entered by `**`, only by a glob that starts there.
        assert_eq!(
            names(&["**/*.py", "src/b.py"]),
            ["src/a/c.py", "src/b.py", "top.py"]
        );
        assert_eq!(names(&[".venv/*.py"]), [".venv/x.py"]);
        assert_eq!(literal_prefix("src/**/*.py"), PathBuf::from("src"));
        assert_eq!(literal_prefix("dist/*"), PathBuf::from("dist"));
        assert_eq!(literal_prefix("*.py"), PathBuf::new());
    }

    #[test]
    fn symlinks_are_reported_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("dist")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("dist/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("dist/etc")).unwrap();
        let found = matching(root, &["dist/**".to_owned()]).unwrap();
        let names: Vec<(&str, bool)> = found
            .iter()
            .map(|f| (f.relative.as_str(), f.symlink))
            .collect();
        assert_eq!(names, [("dist/etc", true), ("dist/passwd", true)]);
    }
}
