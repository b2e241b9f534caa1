//! What pydeployer keeps on disk between runs: the deploy ledger, the logs folder, and
//! `.pydeployer/` (the run lock, scratch folders, the outbox).
//!
//! Everything read back from here is untrusted input: it may have been edited, truncated or
//! written by another version.

pub mod artifacts;
pub mod cache;
pub mod lastrun;
pub mod ledger;
pub mod logs;
pub mod outbox;
pub mod passed;
pub mod state;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// The most pydeployer reads of the deploy ledger (about 150,000 entries).
pub const LEDGER_LIMIT: u64 = 64 << 20;

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
}
