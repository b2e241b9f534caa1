//! A small second process that ends the stages if the runner dies without doing so.
//!
//! `PR_SET_PDEATHSIG` kills each stage's main process when the runner dies, but not the rest
//! of its process group (a test server, a background job). The watchdog is a fork of the
//! runner (`pydeployer-wd` in `ps`), in a process group of its own (so Ctrl-C on the terminal
//! does not reach it). The runner tells it on its stdin which groups are running; when that
//! pipe closes without a final `done` line (the runner was killed, even with `kill -9`), it
//! sends TERM to every group still listed, and KILL two seconds later (a fixed time: the
//! pipeline's `grace_period` is not known here).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

use crate::exec::process::{SIGKILL, SIGTERM, Target};

/// Between the watchdog's TERM and KILL.
const GRACE: Duration = Duration::from_secs(2);

/// The runner's end of the watchdog.
pub struct Watchdog {
    to_watchdog: Mutex<Option<io::PipeWriter>>,
    pid: libc::pid_t,
}

/// Watchdogs of earlier runs in this process (the menu runs one pipeline after another) that
/// had not exited yet when their run ended: reaped when the next one starts or ends.
static EXITING: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

impl Watchdog {
    /// Starts the watchdog as a fork of the runner, before the runner has any thread: a fork
    /// costs a fraction of starting this executable again, and a run pays for it every time.
    /// The watchdog keeps a copy of the run lock's file: that keeps the run locked, should the
    /// runner die, until the watchdog has ended the stages and exits. Every other file of the
    /// runner is closed in it (a pipe the runner writes to must not stay open after it, and
    /// the watchdog's own pipe must close when the runner dies).
    pub fn start(lock: &File) -> io::Result<Watchdog> {
        reap_exited();
        let (reader, writer) = io::pipe()?;
        let null = File::options().read(true).write(true).open("/dev/null")?;
        let fds = Fds {
            reader: reader.as_raw_fd(),
            writer: writer.as_raw_fd(),
            lock: lock.as_raw_fd(),
            null: null.as_raw_fd(),
        };
        // SAFETY: the child only makes system calls until `serve`, and `serve` needs nothing
        // another thread could hold: the runner is single-threaded here (the watchdog starts
        // before the terminal or any stage), and the child never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the child, which ends in `_exit` below.
            unsafe { become_watchdog(&fds) };
        }
        drop(reader);
        Ok(Watchdog {
            to_watchdog: Mutex::new(Some(writer)),
            pid,
        })
    }

    /// A stage's process group started.
    pub fn watch(&self, pgid: i32) {
        self.send(&format!("+{pgid}\n"));
    }

    /// The watchdog's pipe, for a stage's child process to announce itself on before it runs
    /// anything of the stage (see `process::spawn`): a `kill -9` of the runner between the
    /// start of a stage and [`watch`](Watchdog::watch) then leaves nothing unwatched.
    pub fn announce_fd(&self) -> Option<RawFd> {
        self.to_watchdog
            .lock()
            .ok()
            .and_then(|writer| writer.as_ref().map(AsRawFd::as_raw_fd))
    }

    /// A stage's process group was ended or has finished.
    pub fn unwatch(&self, pgid: i32) {
        self.send(&format!("-{pgid}\n"));
    }

    /// The run is over: the watchdog exits without touching anything. (A stage given up on,
    /// still held open by a process outside its group, is left alone too.)
    pub fn finish(&self) {
        self.send("done\n");
        if let Ok(mut writer) = self.to_watchdog.lock() {
            writer.take();
        }
        // Not waited for: it exits on its own within moments, and the run need not pay for
        // that. Reaped now if it already has, else by the next run of this process (or by
        // whoever reaps this process's children once it exits).
        if let Ok(mut exiting) = EXITING.lock() {
            exiting.push(self.pid);
        }
        reap_exited();
    }

    fn send(&self, line: &str) {
        // A watchdog that died cannot be helped: the run goes on without that safety net.
        if let Ok(mut writer) = self.to_watchdog.lock() {
            if let Some(w) = writer.as_mut() {
                let _ = w.write_all(line.as_bytes());
            }
        }
    }
}

/// Reaps the watchdogs of earlier runs, waiting up to `limit` for those that are still exiting
/// (a process that runs pipeline after pipeline, the menu, keeps no exited child per run).
pub fn reap_exited_within(limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        reap_exited();
        let left = EXITING.lock().map_or(0, |exiting| exiting.len());
        if left == 0 || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reaps the watchdogs of earlier runs that have exited.
fn reap_exited() {
    if let Ok(mut exiting) = EXITING.lock() {
        // SAFETY: waitpid on our own children, without blocking.
        exiting
            .retain(|&pid| unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } == 0);
    }
}

/// The runner's descriptors the forked watchdog deals with.
struct Fds {
    reader: RawFd,
    writer: RawFd,
    lock: RawFd,
    null: RawFd,
}

/// The forked child: its own process group (Ctrl-C on the terminal does not reach it), named
/// `pydeployer-wd` (in `ps -o comm`), the default action for the signals the runner handles,
/// the pipe as stdin, the lock as stdout, `/dev/null` as stderr and no other file; then the
/// watchdog's loop, and `_exit`.
///
/// # Safety
/// Only in the child of `fork` from a single-threaded process; never returns.
unsafe fn become_watchdog(fds: &Fds) -> ! {
    super::family::forget_subreaper();
    // SAFETY: plain system calls on this process.
    unsafe {
        libc::setpgid(0, 0);
        libc::prctl(libc::PR_SET_NAME, c"pydeployer-wd".as_ptr());
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &raw mut current) == 0
                && current.sa_sigaction != libc::SIG_IGN
            {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        // The write end first, by name: whatever else fails, the pipe must close when the
        // runner dies, or the watchdog would wait for ever.
        libc::close(fds.writer);
        libc::dup2(fds.reader, 0);
        libc::dup2(fds.lock, 1);
        libc::dup2(fds.null, 2);
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            // Before Linux 5.9, or under a seccomp filter that does not know the call.
            close_from_3();
        }
    }
    // Reading fd 0 through a `File` that is never dropped: `_exit` follows.
    // SAFETY: fd 0 is the pipe, owned by this process from here on.
    let input = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
    let code =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(&*input))).unwrap_or(1);
    // SAFETY: ends the child without running the runner's exit handlers or destructors.
    unsafe { libc::_exit(code) }
}

/// Closes every descriptor from 3 on, as listed in `/proc/self/fd` (or, without `/proc`, up
/// to the limit of open files).
fn close_from_3() {
    let open: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd >= 3)
            .collect(),
        Err(_) => {
            // SAFETY: sysconf has no preconditions.
            let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
            (3..RawFd::try_from(max.clamp(3, 65_536)).unwrap_or(65_536)).collect()
        }
    };
    for fd in open {
        // SAFETY: closing a descriptor of this process (the directory's own is gone already,
        // or fails harmlessly with EBADF).
        unsafe { libc::close(fd) };
    }
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
