//! A small second process that ends the stages if the runner dies without doing so.
//!
//! `PR_SET_PDEATHSIG` kills each stage's main process when the runner dies, but not the rest
//! of its process group (a test server, a background job). The watchdog is a fork of the
//! runner, in a process group of its own (so Ctrl-C on the terminal does not reach it). The runner tells it on its stdin which groups are running; when that
//! pipe closes without a final `done` line (the runner was killed, even with `kill -9`), it
//! sends TERM to every group still listed, and KILL two seconds later (a fixed time: the
//! pipeline's `grace_period` is not known here).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Mutex;
use std::time::Duration;

use crate::exec::process::{SIGKILL, SIGTERM, Target};

/// Between the watchdog's TERM and KILL.
const GRACE: Duration = Duration::from_secs(2);

/// The runner's end of the watchdog.
pub struct Watchdog {
    link: Mutex<Link>,
    pid: libc::pid_t,
}

/// The pipe to the watchdog, and the groups that ended since the last write: those go with the
/// next line (or [`Watchdog::flush`]), so a stage costs one write, not two.
struct Link {
    writer: Option<io::PipeWriter>,
    ended: String,
}

impl Watchdog {
    /// Starts the watchdog as a fork of the runner, before the runner has any thread: a fork
    /// costs a fraction of starting this executable again, and a run pays for it every time.
    /// The watchdog keeps a copy of the run lock's file: that keeps the run locked, should the
    /// runner die, until the watchdog has ended the stages and exits. Every other file of the
    /// runner is closed in it (a pipe the runner writes to must not stay open after it).
    pub fn start(lock: &File) -> io::Result<Watchdog> {
        let (reader, writer) = io::pipe()?;
        let null = File::options().read(true).write(true).open("/dev/null")?;
        let fds = [reader.as_raw_fd(), lock.as_raw_fd(), null.as_raw_fd()];
        // SAFETY: the child only calls async-signal-safe functions until `serve`, and `serve`
        // needs nothing another thread could hold: the runner is single-threaded here (the
        // watchdog starts before the terminal or any stage), and the child never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the child, which ends in `_exit` below.
            unsafe { become_watchdog(fds) };
        }
        drop(reader);
        Ok(Watchdog {
            link: Mutex::new(Link {
                writer: Some(writer),
                ended: String::new(),
            }),
            pid,
        })
    }

    /// A stage's process group started: the watchdog is told at once.
    pub fn watch(&self, pgid: i32) {
        self.send(&format!("+{pgid}\n"));
    }

    /// A stage's process group was ended or has finished. Told with the next line, or at the
    /// latest by [`flush`](Watchdog::flush) before the runner waits: until then the watchdog
    /// may still send TERM to a group that is already gone, which does nothing.
    pub fn unwatch(&self, pgid: i32) {
        if let Ok(mut link) = self.link.lock() {
            use std::fmt::Write as _;
            let _ = writeln!(link.ended, "-{pgid}");
        }
    }

    /// Tells the watchdog of the groups that ended (the runner is about to wait, and a
    /// group id may be reused by another process in the meantime).
    pub fn flush(&self) {
        self.send("");
    }

    /// The run is over: the watchdog exits without touching anything. (A stage given up on,
    /// still held open by a process outside its group, is left alone too.)
    pub fn finish(&self) {
        self.send("done\n");
        if let Ok(mut link) = self.link.lock() {
            link.writer.take();
        }
        // Not waited for: it exits on its own at once, and the run need not pay for that
        // (reaped here if it already has).
        // SAFETY: waitpid on our own child, without blocking.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), libc::WNOHANG) };
    }

    fn send(&self, line: &str) {
        // A watchdog that died cannot be helped: the run goes on without that safety net.
        if let Ok(mut link) = self.link.lock() {
            let Link { writer, ended } = &mut *link;
            if ended.is_empty() && line.is_empty() {
                return;
            }
            ended.push_str(line);
            if let Some(w) = writer.as_mut() {
                let _ = w.write_all(ended.as_bytes());
            }
            ended.clear();
        }
    }
}

/// The forked child: its own process group (Ctrl-C on the terminal does not reach it), the
/// default action for the signals the runner handles, the pipe as stdin, the lock as stdout,
/// `/dev/null` as stderr and no other file; then the watchdog's loop, and `_exit`.
///
/// # Safety
/// Only in the child of `fork` from a single-threaded process; never returns.
unsafe fn become_watchdog([reader, lock, null]: [i32; 3]) -> ! {
    // SAFETY: plain system calls on this process; a failure leaves a less tidy but working
    // watchdog (the pipe is read through its own descriptor below either way).
    unsafe {
        libc::setpgid(0, 0);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &raw mut current) == 0
                && current.sa_sigaction != libc::SIG_IGN
            {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        libc::dup2(reader, 0);
        libc::dup2(lock, 1);
        libc::dup2(null, 2);
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
    // Reading fd 0 through a `File` that is never dropped: `_exit` follows.
    // SAFETY: fd 0 is the pipe, owned by this process from here on.
    let input = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
    let code =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(&*input))).unwrap_or(1);
    // SAFETY: ends the child without running the runner's exit handlers or destructors.
    unsafe { libc::_exit(code) }
}

/// While the runner talks, the watchdog reads at most this often: one wake-up per batch of
/// lines rather than one per stage (a stage should cost no more than its process).
const BATCH: Duration = Duration::from_millis(50);

/// The watchdog process's main loop; returns its exit code.
fn serve(input: impl Read) -> i32 {
    let mut input = BufReader::new(input);
    let mut groups = BTreeSet::new();
    let mut line = String::new();
    loop {
        if input.buffer().is_empty() {
            std::thread::sleep(BATCH);
        }
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = line.trim_end();
        if line == "done" {
            return 0;
        }
        let (sign, pgid) = line.split_at(line.len().min(1));
        let Ok(pgid) = pgid.parse::<i32>() else {
            continue;
        };
        match sign {
            "+" => groups.insert(pgid),
            "-" => groups.remove(&pgid),
            _ => false,
        };
    }
    // The runner is gone without saying done: end what it left, and only then exit (which
    // releases the run lock this process holds a copy of).
    let targets: Vec<Target> = groups
        .into_iter()
        .map(|id| Target { id, group: true })
        .collect();
    for target in &targets {
        target.signal(SIGTERM);
    }
    if !all_gone_within(&targets, GRACE) {
        for target in &targets {
            target.signal(SIGKILL);
        }
        all_gone_within(&targets, GRACE);
    }
    0
}

/// Waits up to `limit` for every group to be gone.
fn all_gone_within(targets: &[Target], limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if !targets.iter().any(|t| t.has_members()) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_group_announced_and_not_withdrawn_is_ended_when_the_runner_is_gone() {
        let mut sleeper = std::process::Command::new("sh")
            .args(["-c", "sleep 300 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = sleeper.id();
        // The runner's pipe closes (it died) after announcing the group, without `done`.
        let input = format!("+{pgid}\n");
        assert_eq!(serve(input.as_bytes()), 0);
        let status = sleeper.wait().unwrap();
        assert!(!status.success(), "the group was not ended: {status}");
        assert!(
            !Target {
                id: i32::try_from(pgid).unwrap(),
                group: true
            }
            .has_members(),
            "the group's background sleep is still there"
        );
    }

    #[test]
    fn done_leaves_the_groups_alone() {
        let mut sleeper = std::process::Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = sleeper.id();
        assert_eq!(serve(format!("+{pgid}\ndone\n").as_bytes()), 0);
        assert!(
            sleeper.try_wait().unwrap().is_none(),
            "a finished run ended a group"
        );
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }
}
