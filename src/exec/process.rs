//! The one place stage processes are started and stopped.
//!
//! Every stage command runs in its own process group, with stdin from `/dev/null` and stdout
//! and stderr merged into one pipe that is read in bounded chunks, so the runner can end the
//! whole group (children and grandchildren too) and never holds more than a chunk of output.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;

use crate::actions::CommandLine;
use crate::events::Outcome;

/// Output is handed on in pieces of at most this many bytes.
pub const CHUNK: usize = 64 * 1024;

/// A running stage command.
pub struct Running {
    handle: duct::ReaderHandle,
    /// The process group id (the leader's pid).
    pgid: i32,
}

/// Starts `command` in `dir` with `env` added to the runner's environment.
pub fn spawn(
    command: &CommandLine,
    dir: &Path,
    env: &BTreeMap<String, String>,
) -> io::Result<Running> {
    let mut expression = duct::cmd(&command.program, &command.args)
        .dir(dir)
        .stdin_null()
        .stderr_to_stdout()
        .unchecked()
        .before_spawn(|cmd| {
            cmd.process_group(0);
            Ok(())
        });
    for (key, value) in env {
        expression = expression.env(key, value);
    }
    let handle = expression.reader()?;
    let pid = handle.pids().first().copied().unwrap_or(0);
    let pgid = i32::try_from(pid).map_err(|_| io::Error::other("process id out of range"))?;
    Ok(Running { handle, pgid })
}

impl Running {
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Reads output until the pipe closes, handing `sink` whole lines (a line longer than
    /// [`CHUNK`] arrives in pieces), then waits for the process and says how it ended.
    pub fn stream(self, mut sink: impl FnMut(Vec<u8>)) -> io::Result<Outcome> {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        loop {
            let n = match (&self.handle).read(&mut buf[filled..]) {
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            if n == 0 {
                if filled > 0 {
                    sink(buf[..filled].to_vec());
                }
                break;
            }
            filled += n;
            // Hand on everything up to the last newline; keep the partial line, unless it
            // already fills the buffer (a huge line without newlines goes out in pieces).
            let cut = match memrchr_newline(&buf[..filled]) {
                Some(last) => last + 1,
                None if filled == buf.len() => filled,
                None => continue,
            };
            sink(buf[..cut].to_vec());
            buf.copy_within(cut..filled, 0);
            filled -= cut;
        }
        let output = self
            .handle
            .try_wait()?
            .ok_or_else(|| io::Error::other("the process did not exit after closing its output"))?;
        let status = output.status;
        Ok(if status.success() {
            Outcome::Passed
        } else {
            Outcome::Failed {
                code: status.code(),
                signal: status.signal(),
            }
        })
    }
}

/// Runs a short command to completion and returns its trimmed stdout when it succeeds
/// (pydeployer's own bookkeeping: `git rev-parse`, the demo's setup).
pub fn capture(command: &CommandLine, dir: &Path) -> io::Result<String> {
    let output = duct::cmd(&command.program, &command.args)
        .dir(dir)
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(io::Error::other(format!(
            "`{command}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

fn memrchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().rposition(|&b| b == b'\n')
}

/// Sends `signal` to every process of the group; a group that is already gone is fine.
pub fn signal_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: killpg has no memory-safety preconditions; a stale pgid only yields ESRCH.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }
}

pub use libc::{SIGKILL, SIGTERM};

#[cfg(test)]
mod tests {
    use super::*;

    fn run(script: &str) -> (Vec<Vec<u8>>, Outcome) {
        let mut chunks = Vec::new();
        let running = spawn(
            &CommandLine::new("sh", ["-c", script]),
            Path::new("."),
            &BTreeMap::new(),
        )
        .unwrap();
        let outcome = running.stream(|c| chunks.push(c)).unwrap();
        (chunks, outcome)
    }

    #[test]
    fn stdout_and_stderr_arrive_as_whole_lines() {
        let (chunks, outcome) = run("echo one; echo two >&2; printf 'tail'");
        assert_eq!(outcome, Outcome::Passed);
        let all: Vec<u8> = chunks.concat();
        assert_eq!(all, b"one\ntwo\ntail");
        assert!(
            chunks
                .iter()
                .take(chunks.len() - 1)
                .all(|c| c.ends_with(b"\n"))
        );
    }

    #[test]
    fn exit_codes_and_signals_are_reported() {
        assert_eq!(
            run("exit 3").1,
            Outcome::Failed {
                code: Some(3),
                signal: None
            }
        );
        assert_eq!(
            run("kill -9 $$").1,
            Outcome::Failed {
                code: None,
                signal: Some(9)
            }
        );
    }

    #[test]
    fn a_long_line_without_newline_is_cut_into_bounded_pieces() {
        let (chunks, _) = run("head -c 200000 /dev/zero");
        assert!(chunks.iter().all(|c| c.len() <= CHUNK));
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 200_000);
    }

    #[test]
    fn stdin_is_empty() {
        let (chunks, outcome) = run("cat; echo done");
        assert_eq!(outcome, Outcome::Passed);
        assert_eq!(chunks.concat(), b"done\n");
    }

    #[test]
    fn a_missing_program_is_an_error_not_a_panic() {
        assert!(
            spawn(
                &CommandLine::new("no-such-program-pydeployer", Vec::<String>::new()),
                Path::new("."),
                &BTreeMap::new()
            )
            .is_err()
        );
    }
}
