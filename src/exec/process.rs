//! The one place stage processes are started and stopped.
//!
//! Every stage command runs in a session of its own (and so in a process group of its own;
//! see `family.rs` for why a session), with stdin from `/dev/null`, and stdout and stderr
//! merged into one pipe that is read in bounded chunks, so the runner can end everything the
//! command started (children and grandchildren too, also in other groups) and never holds
//! more than a chunk of output. An interactive stage runs in a process group of the runner's
//! session instead (the terminal belongs to that session), which is made the terminal's
//! foreground group while it runs. The watchdog (see `watchdog.rs`) ends the stages if the
//! runner dies; without one, each command is told to die with the thread that started it
//! (`PR_SET_PDEATHSIG`).
//!
//! Starting a session takes a step between fork and exec (`setsid`), so stage commands are
//! started with fork and exec rather than `posix_spawn`.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::actions::CommandLine;
use crate::events::Outcome;

pub use libc::{SIGINT, SIGKILL, SIGTERM};

/// Output is handed on in pieces of at most this many bytes.
pub const CHUNK: usize = 64 * 1024;

/// How long the output may stay open after a command's main process exited before the
/// processes holding it are treated as leaked (cargo-nextest's "leak timeout").
pub const LEAK_WAIT: Duration = Duration::from_millis(500);

/// How often the main process is looked at while its output keeps coming.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// A line left unfinished this long (a prompt, a progress indicator, a program that stopped
/// mid-line) is handed on as it is, and its end comes as a line of its own: the log holds it
/// even if the runner is killed meanwhile.
pub const PARTIAL_WAIT: Duration = Duration::from_secs(1);

/// Whom to signal to end a command: its process group and the rest of its session (or a
/// single process).
///
/// A stage command leads a session of its own, whose id is that of its group: the processes
/// of the session that moved to another group (GNU `timeout`, `set -m`) are reached too (see
/// `family.rs`). For a group that is not a session (an interactive stage, pydeployer's own
/// commands), no process has that session id, and only the group is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub id: i32,
    pub group: bool,
}

impl Target {
    /// Sends `signal`; a target that is already gone is fine.
    pub fn signal(self, signal: i32) {
        if self.id <= 0 {
            return;
        }
        // SAFETY: kill/killpg have no memory-safety preconditions; a stale id yields ESRCH.
        unsafe {
            if self.group {
                libc::killpg(self.id, signal);
            } else {
                libc::kill(self.id, signal);
            }
        }
        if self.group {
            for pid in super::family::others(self.id) {
                // SAFETY: as above. The pid was read from /proc a moment ago; one that ended
                // meanwhile cannot have been reused by another process yet while its session
                // (this target's id) still holds members.
                unsafe { libc::kill(pid, signal) };
            }
        }
    }

    /// Whether a process of the group or session still runs (zombies waiting to be reaped do
    /// not count).
    pub fn has_members(self) -> bool {
        if self.id <= 0 {
            return false;
        }
        // SAFETY: signal 0 only checks for existence.
        let answered = unsafe { libc::killpg(self.id, 0) } == 0;
        // EPERM: members are there, none of them ours to signal (a setuid program, `sudo`).
        let group_answers =
            answered || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !self.group {
            return group_answers;
        }
        super::family::has_members(self.id, group_answers)
    }
}

/// How to start one command of a stage.
pub struct Spawn<'a> {
    pub command: &'a CommandLine,
    pub dir: &'a Path,
    /// Added to (or, for `None`, removed from) the runner's environment.
    pub env: &'a BTreeMap<String, Option<String>>,
    /// Inherit the terminal's stdin, and own the terminal while it runs.
    pub interactive: bool,
    /// Ask the kernel to TERM the command when the runner dies (when no watchdog does more).
    pub die_with_runner: bool,
    /// The watchdog's pipe: the child writes `+<its group>` there before exec.
    pub announce: Option<RawFd>,
}

/// A running stage command, driven by whoever polls its file descriptors (the runner's one
/// loop): [`read`](Running::read) when the output is readable,
/// [`check`](Running::check) when the process fd is readable or a deadline passed, until
/// [`ended`](Running::ended) says how it ended.
pub struct Running {
    handle: Child,
    /// The read end of the output pipe; `None` once it closed or was given up on.
    output: Option<io::PipeReader>,
    /// Readable once the main process has exited (`pidfd_open`); `None` without one (then
    /// the process is looked at every [`CHECK_EVERY`]) or once it exited.
    pidfd: Option<OwnedFd>,
    target: Target,
    interactive: bool,
    /// Its group was made the terminal's foreground group (and SIGTTOU is ignored meanwhile);
    /// ours is given back when it ends.
    foreground: Option<IgnoreTtou>,
    /// Output read but not handed on yet (the end of a line, or of a secret, to come).
    buf: Vec<u8>,
    filled: usize,
    /// Since when `buf` holds the start of a line whose end has not come.
    partial_since: Option<Instant>,
    /// The main process's status, once it exited.
    status: Option<std::process::ExitStatus>,
    leak: LeakWatch,
    /// When the process (and, in the foreground, whether it is stopped) is looked at next.
    next_check: Instant,
    /// Without a pidfd, once the output closed, the process is looked at again this soon
    /// (doubling up to [`CHECK_EVERY`]): it is about to exit.
    backoff: Duration,
    /// Processes of the group left after the command ended were sent TERM: KILL them then.
    pub linger: Option<Target>,
}

/// What became of processes that outlived the command's main process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leak {
    /// They outlived the main process (holding its output open, or not), and their group was
    /// ended.
    Ended,
    /// Something outside the stage's session (`setsid`) still held the output after the
    /// session was ended; it was left running and its output is no longer read.
    Escaped,
}

impl Leak {
    pub fn describe(self) -> &'static str {
        match self {
            Leak::Ended => "leaked processes: they outlived the stage's command and were ended",
            Leak::Escaped => {
                "leaked processes: a process that left the stage's session (setsid) kept its output open; it was left running"
            }
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub outcome: Outcome,
    pub leak: Option<Leak>,
}

/// The main process of a stage command.
enum Child {
    /// Started by duct (fork, then the steps before exec).
    Duct(Box<duct::Handle>),
    /// Started by `posix_spawn` in a session of its own; reaped here.
    Spawned {
        pid: i32,
        status: Option<std::process::ExitStatus>,
    },
}

impl Child {
    fn pid(&self) -> u32 {
        match self {
            Child::Duct(handle) => handle.pids().first().copied().unwrap_or(0),
            Child::Spawned { pid, .. } => pid.unsigned_abs(),
        }
    }

    fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        match self {
            Child::Duct(handle) => Ok(handle.try_wait()?.map(|output| output.status)),
            Child::Spawned {
                status: Some(status),
                ..
            } => Ok(Some(*status)),
            Child::Spawned { pid, status } => {
                let mut raw = 0;
                // SAFETY: waitpid on our own child, without blocking; `raw` is valid.
                let got = unsafe { libc::waitpid(*pid, &raw mut raw, libc::WNOHANG) };
                if got < 0 {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        return Ok(None);
                    }
                    return Err(err);
                }
                if got == 0 {
                    return Ok(None);
                }
                let done = std::os::unix::process::ExitStatusExt::from_raw(raw);
                *status = Some(done);
                Ok(Some(done))
            }
        }
    }
}

/// Starts one stage command.
///
/// The common case (no terminal, a watchdog on duty) starts it with `posix_spawn` in a
/// session of its own (`POSIX_SPAWN_SETSID`): as cheap as the process group std's spawn gives,
/// where any step of our own between fork and exec would make every stage pay for a fork.
pub fn spawn(spawn: &Spawn<'_>) -> io::Result<Running> {
    let (reader, writer) = io::pipe()?;
    if !spawn.interactive && !spawn.die_with_runner {
        let pid = spawn_session(spawn, &writer)?;
        drop(writer);
        set_nonblocking(&reader)?;
        return Ok(Running::new(
            Child::Spawned { pid, status: None },
            reader,
            false,
            None,
        ));
    }
    let interactive = spawn.interactive;
    let die_with_runner = spawn.die_with_runner;
    let announce = spawn.announce;
    // SAFETY: getpid and isatty are always safe.
    let runner = if die_with_runner {
        unsafe { libc::getpid() }
    } else {
        0
    };
    let terminal = interactive && unsafe { libc::isatty(libc::STDIN_FILENO) } == 1;
    if terminal && !in_foreground() {
        return Err(io::Error::other(
            "an interactive stage needs the terminal, and pydeployer runs in the background: run it in the foreground (without `&`)",
        ));
    }
    // While the stage holds the terminal, our own writes to it must not stop us (`stty
    // tostop`), nor taking it back: SIGTTOU is ignored meanwhile, as shells do.
    let ttou = terminal.then(IgnoreTtou::new);
    let mut expression = duct::cmd(&spawn.command.program, &spawn.command.args)
        .dir(spawn.dir)
        // Inner redirections apply last: stderr joins stdout, which is the pipe.
        .stderr_to_stdout()
        .stdout_file(writer)
        .unchecked()
        .before_spawn(move |cmd| {
            if interactive {
                // The terminal belongs to the runner's session: the stage's group stays in it.
                cmd.process_group(0);
            }
            // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
            // system calls (setsid, getpid, write, prctl, getppid, _exit, signal, tcsetpgrp).
            unsafe {
                cmd.pre_exec(move || {
                    if !interactive {
                        // A session of its own (and so a group): whatever the command starts
                        // stays in it, even in another group. Fails only for a group leader,
                        // which a fresh child is not.
                        libc::setsid();
                    }
                    if let Some(fd) = announce {
                        announce_to_watchdog(fd);
                    }
                    if die_with_runner {
                        die_with_parent(runner);
                    }
                    if terminal {
                        // SIGTTOU is ignored here (inherited): taking the terminal works.
                        libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid());
                        libc::signal(libc::SIGTTOU, libc::SIG_DFL);
                        // Ctrl-Z would stop the stage with nobody to continue it.
                        libc::signal(libc::SIGTSTP, libc::SIG_IGN);
                    }
                    Ok(())
                });
            }
            Ok(())
        });
    if !interactive {
        expression = expression.stdin_null();
    }
    for (key, value) in spawn.env {
        expression = match value {
            Some(value) => expression.env(key, value),
            None => expression.env_remove(key),
        };
    }
    let handle = expression.start()?;
    // The expression (and its copy of the pipe's write end) is gone: the pipe closes when the
    // command and whatever inherited its output are done.
    drop(expression);
    set_nonblocking(&reader)?;
    Ok(Running::new(
        Child::Duct(Box::new(handle)),
        reader,
        interactive,
        ttou,
    ))
}

/// `posix_spawn` of the command in a session of its own, in its folder, stdin `/dev/null`,
/// stdout and stderr the pipe's write end; SIGPIPE back to its default (Rust ignores it) and
/// no signal blocked. A program without `/` is found on the stage's own `PATH`; one with a
/// `/` is taken from the stage's folder, as `sh -c` there would.
fn spawn_session(spawn: &Spawn<'_>, writer: &io::PipeWriter) -> io::Result<i32> {
    use std::ffi::{CString, OsStr, OsString};
    use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};

    let c = |bytes: &[u8]| {
        CString::new(bytes)
            .map_err(|_| io::Error::other("a NUL byte in the command line or its environment"))
    };
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (key, value) in spawn.env {
        match value {
            Some(value) => env.insert(key.into(), value.into()),
            None => env.remove(OsStr::new(key)),
        };
    }
    let program = &spawn.command.program;
    let path = if program.contains('/') {
        std::path::PathBuf::from(program)
    } else {
        let search = env.get(OsStr::new("PATH")).cloned().unwrap_or_default();
        which::which_in(program, Some(search), spawn.dir)
            .map_err(|_| io::Error::new(io::ErrorKind::NotFound, "not found on the stage's PATH"))?
    };
    let path = c(path.as_os_str().as_bytes())?;
    let argv: Vec<CString> = std::iter::once(program.as_bytes())
        .chain(spawn.command.args.iter().map(String::as_bytes))
        .map(c)
        .collect::<io::Result<_>>()?;
    let envp: Vec<CString> = env
        .into_iter()
        .map(|(key, value)| {
            let mut pair = key.into_vec();
            pair.push(b'=');
            pair.extend(value.into_vec());
            c(&pair)
        })
        .collect::<io::Result<_>>()?;
    let dir = c(spawn.dir.as_os_str().as_bytes())?;
    let null = c(b"/dev/null")?;
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> =
        envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp_ptrs.push(std::ptr::null_mut());
    let out = writer.as_raw_fd();
    let check = |ret: libc::c_int| {
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(ret))
        }
    };
    // SAFETY: every pointer handed over is valid for the call (the CStrings and vectors above
    // live until it returns); the attribute and file-action objects are initialised before
    // use and destroyed after.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&raw mut actions))?;
        check(libc::posix_spawnattr_init(&raw mut attr)).inspect_err(|_| {
            libc::posix_spawn_file_actions_destroy(&raw mut actions);
        })?;
        let spawned = (|| {
            check(libc::posix_spawn_file_actions_addopen(
                &raw mut actions,
                libc::STDIN_FILENO,
                null.as_ptr(),
                libc::O_RDONLY,
                0,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &raw mut actions,
                out,
                libc::STDOUT_FILENO,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &raw mut actions,
                out,
                libc::STDERR_FILENO,
            ))?;
            check(libc::posix_spawn_file_actions_addchdir_np(
                &raw mut actions,
                dir.as_ptr(),
            ))?;
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&raw mut none);
            let mut pipe: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&raw mut pipe);
            libc::sigaddset(&raw mut pipe, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigmask(
                &raw mut attr,
                &raw const none,
            ))?;
            check(libc::posix_spawnattr_setsigdefault(
                &raw mut attr,
                &raw const pipe,
            ))?;
            // The flags are small constants; each fits the attribute's c_short.
            let flags = i32::from(libc::POSIX_SPAWN_SETSID)
                | libc::POSIX_SPAWN_SETSIGMASK
                | libc::POSIX_SPAWN_SETSIGDEF;
            let flags = libc::c_short::try_from(flags).map_err(io::Error::other)?;
            check(libc::posix_spawnattr_setflags(&raw mut attr, flags))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &raw mut pid,
                path.as_ptr(),
                &raw const actions,
                &raw const attr,
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
            ))?;
            Ok(pid)
        })();
        libc::posix_spawn_file_actions_destroy(&raw mut actions);
        libc::posix_spawnattr_destroy(&raw mut attr);
        spawned
    }
}

impl Running {
    fn new(
        handle: Child,
        reader: io::PipeReader,
        interactive: bool,
        foreground: Option<IgnoreTtou>,
    ) -> Running {
        let id = i32::try_from(handle.pid()).unwrap_or(0);
        Running {
            handle,
            output: Some(reader),
            pidfd: pidfd_open(id),
            target: Target { id, group: true },
            interactive,
            foreground,
            buf: Vec::new(),
            filled: 0,
            partial_since: None,
            status: None,
            leak: LeakWatch::default(),
            next_check: Instant::now() + CHECK_EVERY,
            backoff: Duration::from_millis(1),
            linger: None,
        }
    }
}

/// One read of a non-blocking pipe: `None` when nothing is there yet.
fn read_some(mut output: &io::PipeReader, buf: &mut [u8]) -> io::Result<Option<usize>> {
    match output.read(buf) {
        Ok(n) => Ok(Some(n)),
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ) =>
        {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// A file descriptor that becomes readable when process `pid` exits; `None` where the kernel
/// has no `pidfd_open` (the process is then looked at periodically).
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd (or -1).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the fd was just opened and is owned by nothing else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_nonblocking(pipe: &io::PipeReader) -> io::Result<()> {
    // A new pipe's read end has no other status flag to keep (O_CLOEXEC is a descriptor flag).
    // SAFETY: fcntl on a valid fd with integer arguments.
    if unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether this process's group is the foreground group of the terminal on stdin.
fn in_foreground() -> bool {
    // SAFETY: tcgetpgrp and getpgrp have no memory-safety preconditions.
    unsafe { libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp() }
}

/// SIGTTOU ignored for as long as one of these lives (the last restores the default).
struct IgnoreTtou;

/// How many [`IgnoreTtou`] live.
static TTOU_IGNORED: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

impl IgnoreTtou {
    fn new() -> IgnoreTtou {
        if let Ok(mut holders) = TTOU_IGNORED.lock() {
            if *holders == 0 {
                // SAFETY: installing SIG_IGN has no memory-safety preconditions.
                unsafe { libc::signal(libc::SIGTTOU, libc::SIG_IGN) };
            }
            *holders += 1;
        }
        IgnoreTtou
    }
}

impl Drop for IgnoreTtou {
    fn drop(&mut self) {
        if let Ok(mut holders) = TTOU_IGNORED.lock() {
            *holders = holders.saturating_sub(1);
            if *holders == 0 {
                // SAFETY: as above.
                unsafe { libc::signal(libc::SIGTTOU, libc::SIG_DFL) };
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.foreground.is_some() {
            // Back to us, unless the stage's group no longer holds it (a retry's does).
            // SAFETY: tcgetpgrp, tcsetpgrp and getpgrp have no memory-safety preconditions;
            // SIGTTOU is still ignored (the guard drops after this).
            unsafe {
                if libc::tcgetpgrp(libc::STDIN_FILENO) == self.target.id {
                    libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
                }
            }
        }
    }
}

/// Whether the process `pid` is stopped (Ctrl-Z, SIGSTOP, SIGTTIN).
fn stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
    })
}

/// In the child, before exec: tells the watchdog of its group (its own pid: a session or group
/// leader), as the runner does once the spawn returns, so that no moment of the stage runs
/// unwatched. Only async-signal-safe calls, no allocation; a watchdog that is gone must not
/// end the child by SIGPIPE.
fn announce_to_watchdog(fd: RawFd) {
    let mut line = [0u8; 16];
    // SAFETY: getpid has no preconditions.
    let mut pid = unsafe { libc::getpid() }.unsigned_abs();
    let mut at = line.len() - 1;
    line[at] = b'\n';
    loop {
        at -= 1;
        line[at] = b'0' + u8::try_from(pid % 10).unwrap_or(0);
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    at -= 1;
    line[at] = b'+';
    // SAFETY: signal and write are async-signal-safe; the buffer is valid for its length.
    unsafe {
        let previous = libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::write(fd, line[at..].as_ptr().cast(), line.len() - at);
        libc::signal(libc::SIGPIPE, previous);
    }
}

/// In the child, before exec: be sent TERM when the thread that started us dies, and if the
/// runner is already gone (it died between fork and here), exit now. TERM rather than KILL
/// lets a program clean up (git removes its `.lock` files); the watchdog sends KILL to the
/// whole group a grace period later.
fn die_with_parent(runner: libc::pid_t) {
    // SAFETY: prctl(PR_SET_PDEATHSIG), getppid and _exit are async-signal-safe.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        if libc::getppid() != runner {
            libc::_exit(137);
        }
    }
}

impl Running {
    pub fn target(&self) -> Target {
        self.target
    }

    /// The output pipe, to poll for reading; `None` once it closed.
    pub fn output_fd(&self) -> Option<RawFd> {
        self.output.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// The process fd, to poll for the main process's exit; `None` once it exited.
    pub fn exit_fd(&self) -> Option<RawFd> {
        match self.status {
            None => self.pidfd.as_ref().map(AsRawFd::as_raw_fd),
            Some(_) => None,
        }
    }

    /// When [`check`](Running::check) must run at the latest.
    pub fn deadline(&self) -> Instant {
        match self.leak.phase {
            Some((since, _)) => self.next_check.min(since + LEAK_WAIT),
            None => self.next_check,
        }
    }

    /// Reads what the pipe holds (once), handing `sink` whole lines (a line longer than
    /// [`CHUNK`] in pieces; an interactive stage's output as it comes, so that prompts show).
    pub fn read(&mut self, mut sink: impl FnMut(Vec<u8>)) -> io::Result<()> {
        let Some(output) = &self.output else {
            return Ok(());
        };
        let read = if self.buf.is_empty() {
            // Most commands of a pipeline print little or nothing: the full buffer is made
            // only once there is something to keep.
            let mut first = [0u8; 1024];
            let read = read_some(output, &mut first);
            if let Ok(Some(n @ 1..)) = read {
                self.buf = vec![0u8; CHUNK];
                self.buf[..n].copy_from_slice(&first[..n]);
            }
            read
        } else {
            read_some(output, &mut self.buf[self.filled..])
        };
        let n = match read {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(()),
            Err(err) => {
                // Nothing more can be read: end the command rather than leave it running.
                self.target.signal(SIGKILL);
                self.output = None;
                return Err(err);
            }
        };
        if n == 0 {
            self.output = None;
            if self.filled > 0 {
                sink(self.buf[..self.filled].to_vec());
                self.filled = 0;
                self.partial_since = None;
            }
            return Ok(());
        }
        self.filled += n;
        // Hand on everything up to the last newline; keep the partial line, unless it already
        // fills the buffer (a huge line without newlines goes out in pieces). A piece never
        // ends inside a UTF-8 character: each piece is a line of the log, and reads as text.
        let filled = self.filled;
        let cut = match memrchr_newline(&self.buf[..filled]) {
            _ if self.interactive => utf8_boundary(&self.buf[..filled]),
            Some(last) => last + 1,
            None if filled == self.buf.len() => utf8_boundary(&self.buf[..filled]),
            None => 0,
        };
        if cut == 0 {
            // The start of a line (or of a character) so far: wait for its rest.
            self.partial_since.get_or_insert_with(Instant::now);
            return Ok(());
        }
        self.hand_on(cut, &mut sink);
        self.partial_since = (self.filled > 0).then(Instant::now);
        Ok(())
    }

    /// Hands on the first `cut` bytes held, and keeps the rest.
    fn hand_on(&mut self, cut: usize, sink: &mut impl FnMut(Vec<u8>)) {
        sink(self.buf[..cut].to_vec());
        self.buf.copy_within(cut..self.filled, 0);
        self.filled -= cut;
    }

    /// Looks at the main process (has it exited?), and moves the leak watch on: when it has
    /// exited but the output stays open for [`LEAK_WAIT`] (whether or not something still
    /// writes), the rest of its group is ended (TERM, then KILL), and after that the output
    /// is given up on. Also continues a foreground stage that got stopped.
    pub fn check(&mut self, now: Instant, mut sink: impl FnMut(Vec<u8>)) -> io::Result<()> {
        if self.status.is_none() {
            if let Some(status) = self.handle.try_wait()? {
                self.status = Some(status);
            }
        }
        if self.foreground.is_some() && self.status.is_none() && stopped(self.target.id) {
            // Stopped in the foreground (a program's own Ctrl-Z handling): nobody else would
            // continue it, and the run would wait for ever.
            self.target.signal(libc::SIGCONT);
        }
        if self
            .partial_since
            .is_some_and(|since| now.saturating_duration_since(since) >= PARTIAL_WAIT)
        {
            let cut = utf8_boundary(&self.buf[..self.filled]);
            if cut > 0 {
                self.hand_on(cut, &mut sink);
            }
            self.partial_since = (self.filled > 0).then_some(now);
        }
        self.next_check = now + CHECK_EVERY;
        if self.status.is_none() && self.output.is_none() && self.pidfd.is_none() {
            self.next_check = now + self.backoff;
            self.backoff = (self.backoff * 2).min(CHECK_EVERY);
        }
        if self.status.is_some() && self.output.is_some() && self.leak.step(self.target, now) {
            // Given up on: hand on what was read, read no more.
            self.output = None;
            if self.filled > 0 {
                sink(self.buf[..self.filled].to_vec());
                self.filled = 0;
                self.partial_since = None;
            }
        }
        Ok(())
    }

    /// How the command ended, once the output is closed (or given up on) and the main
    /// process has exited. Processes of the group that outlived it without holding the output
    /// are sent TERM, reported as a leak, and left in [`linger`](Running::linger) to KILL a
    /// [`LEAK_WAIT`] later.
    pub fn ended(&mut self) -> Option<Ended> {
        if self.output.is_some() {
            return None;
        }
        let status = self.status?;
        if self.leak.found.is_none() && self.target.has_members() {
            // The output closed, but processes of the group outlived the main process (a
            // background job with its output sent elsewhere): the stage is over, so are they.
            self.target.signal(SIGTERM);
            self.leak.found = Some(Leak::Ended);
            self.linger = Some(self.target);
        }
        let outcome = if status.success() {
            Outcome::Passed
        } else {
            Outcome::Failed {
                code: status.code(),
                signal: status.signal(),
            }
        };
        Some(Ended {
            outcome,
            leak: self.leak.found,
        })
    }
}

/// Where watching for leaked processes stands.
#[derive(Default)]
struct LeakWatch {
    /// Once the main process was seen to have exited with the output still open: the phase
    /// and when it began.
    phase: Option<(Instant, LeakPhase)>,
    found: Option<Leak>,
}

#[derive(Clone, Copy)]
enum LeakPhase {
    /// Waiting for the output to close by itself.
    Waiting,
    /// TERM sent to the group.
    Termed,
    /// KILL sent to the group.
    Killed,
}

impl LeakWatch {
    /// The main process has exited and the output is still open: starts the watch, or moves
    /// it on a phase when one has run its time. Returns true when the output is given up on.
    fn step(&mut self, target: Target, now: Instant) -> bool {
        match self.phase {
            None => self.phase = Some((now, LeakPhase::Waiting)),
            Some((since, phase)) if now.duration_since(since) >= LEAK_WAIT => {
                let next = match phase {
                    LeakPhase::Waiting => {
                        self.found = Some(Leak::Ended);
                        target.signal(SIGTERM);
                        LeakPhase::Termed
                    }
                    LeakPhase::Termed => {
                        target.signal(SIGKILL);
                        LeakPhase::Killed
                    }
                    LeakPhase::Killed => {
                        self.found = Some(Leak::Escaped);
                        return true;
                    }
                };
                self.phase = Some((now, next));
            }
            Some(_) => {}
        }
        false
    }
}

/// Waits up to `wait` for any of `fds` to be ready; their `revents` say which. A signal ends
/// the wait early (with no fd ready), so that the caller looks at it at once.
pub fn poll(fds: &mut [libc::pollfd], wait: Duration) -> io::Result<()> {
    let millis = libc::c_int::try_from(wait.as_millis().max(u128::from(!wait.is_zero())))
        .unwrap_or(libc::c_int::MAX);
    let count = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `fds` is a valid slice of pollfd for the duration of the call.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), count, millis) };
    if ready >= 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::Interrupted {
        for fd in fds.iter_mut() {
            fd.revents = 0;
        }
        return Ok(());
    }
    Err(err)
}

/// How long pydeployer's own bookkeeping commands may take (`git rev-parse` for the ledger, the
/// demo's setup, `init`'s look at the repository): they finish in milliseconds, and one that
/// takes this long is stuck (a filesystem that stopped answering, a hook waiting for input).
pub const CAPTURE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who runs pydeployer, for the ledger's `approved_by`: `USER` (or `LOGNAME`), else the
/// account's name, else `uid N`.
pub fn user_name() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(name) = std::env::var(var)
            && !name.is_empty()
            && !name.chars().any(char::is_control)
        {
            return name;
        }
    }
    // SAFETY: getuid cannot fail; getpwuid's result is read at once, on this thread.
    let uid = unsafe { libc::getuid() };
    let entry = unsafe { libc::getpwuid(uid) };
    if !entry.is_null() {
        // SAFETY: a non-null entry's pw_name is a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).pw_name) };
        if let Ok(name) = name.to_str() {
            return name.to_owned();
        }
    }
    format!("uid {uid}")
}

/// Runs a short command to completion and returns its trimmed stdout when it succeeds
/// (pydeployer's own bookkeeping: `git rev-parse`, the demo's setup). A command still running
/// after [`CAPTURE_TIMEOUT`] is killed, with its process group, and is an error: a hung git
/// must not hold up the run (this runs on the runner's thread).
pub fn capture(
    command: &CommandLine,
    dir: &Path,
    env: &BTreeMap<String, Option<String>>,
) -> io::Result<String> {
    let output = captured(command, dir, env)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(io::Error::other(format!(
            "`{command}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// [`capture`] for a command whose exit code is an answer (`git check-ignore` exits 1 when
/// nothing is ignored): its exit code (`None` when a signal ended it) and its stdout, untrimmed.
pub fn capture_code(
    command: &CommandLine,
    dir: &Path,
    env: &BTreeMap<String, Option<String>>,
) -> io::Result<(Option<i32>, String)> {
    let output = captured(command, dir, env)?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

fn captured(
    command: &CommandLine,
    dir: &Path,
    env: &BTreeMap<String, Option<String>>,
) -> io::Result<std::process::Output> {
    let mut expression = duct::cmd(&command.program, &command.args)
        .dir(dir)
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .before_spawn(|cmd| {
            cmd.process_group(0);
            Ok(())
        });
    for (key, value) in env {
        expression = match value {
            Some(value) => expression.env(key, value),
            None => expression.env_remove(key),
        };
    }
    let handle = expression.start()?;
    if handle.wait_timeout(CAPTURE_TIMEOUT)?.is_none() {
        for pid in handle.pids() {
            if let Ok(id) = i32::try_from(pid) {
                Target { id, group: true }.signal(SIGKILL);
            }
        }
        // Not waited for: something that left the group (`setsid`) may hold the output open
        // for as long as it likes. duct reaps the killed process later; its reading threads
        // end when that output closes.
        drop(handle);
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "`{command}` did not finish within {}s and was killed",
                CAPTURE_TIMEOUT.as_secs()
            ),
        ));
    }
    handle.into_output()
}

/// The longest start of `bytes` that does not end inside a UTF-8 character: `bytes.len()`
/// unless the last one to three bytes begin a character whose rest has not come yet. (Bytes
/// that are not UTF-8 at all are cut anywhere.)
fn utf8_boundary(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(3) {
        let byte = bytes[len - back];
        if byte & 0xC0 == 0x80 {
            // A continuation byte: the character starts further back.
            continue;
        }
        let width = match byte {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if width > back { len - back } else { len };
    }
    len
}

fn memrchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().rposition(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_end_between_utf8_characters() {
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(utf8_boundary(b"abc"), 3);
        assert_eq!(utf8_boundary(euro), 3);
        assert_eq!(utf8_boundary(&euro[..2]), 0);
        assert_eq!(utf8_boundary(&[b'a', euro[0]]), 1);
        assert_eq!(utf8_boundary(&[b'a', euro[0], euro[1]]), 1);
        assert_eq!(utf8_boundary("a😀".as_bytes()), 5);
        assert_eq!(utf8_boundary(&"a😀".as_bytes()[..4]), 1);
        assert_eq!(utf8_boundary("é".as_bytes()), 2);
        // Not UTF-8: cut where the buffer ends.
        assert_eq!(utf8_boundary(&[0x80, 0x80, 0x80, 0x80]), 4);
        assert_eq!(utf8_boundary(b""), 0);
    }

    impl Running {
        /// Drives one command to its end in this thread, as the runner's loop drives many:
        /// hands `sink` what [`read`](Running::read) does, then says how it ended (processes
        /// left in the group are ended before this returns).
        fn stream(mut self, mut sink: impl FnMut(Vec<u8>)) -> io::Result<Ended> {
            loop {
                if let Some(ended) = self.ended() {
                    if let Some(target) = self.linger.take() {
                        end_group(target);
                    }
                    return Ok(ended);
                }
                let mut fds: Vec<libc::pollfd> = [self.output_fd(), self.exit_fd()]
                    .into_iter()
                    .flatten()
                    .map(|fd| libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                let wait = self.deadline().saturating_duration_since(Instant::now());
                poll(&mut fds, wait)?;
                if fds
                    .first()
                    .is_some_and(|p| p.revents != 0 && Some(p.fd) == self.output_fd())
                {
                    self.read(&mut sink)?;
                }
                let now = Instant::now();
                let exited = fds
                    .iter()
                    .any(|p| p.revents != 0 && Some(p.fd) == self.exit_fd());
                if exited || now >= self.deadline() {
                    self.check(now, &mut sink)?;
                }
            }
        }
    }

    /// TERM to the group, then KILL if it is still there a [`LEAK_WAIT`] later (blocking).
    fn end_group(target: Target) {
        let deadline = Instant::now() + LEAK_WAIT;
        while target.has_members() {
            if Instant::now() >= deadline {
                target.signal(SIGKILL);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn start(script: &str, interactive: bool) -> Running {
        let command = CommandLine::new("sh", ["-c", script]);
        spawn(&Spawn {
            command: &command,
            dir: Path::new("."),
            env: &BTreeMap::new(),
            interactive,
            die_with_runner: true,
            announce: None,
        })
        .unwrap()
    }

    fn run(script: &str) -> (Vec<Vec<u8>>, Ended) {
        let mut chunks = Vec::new();
        let ended = start(script, false).stream(|c| chunks.push(c)).unwrap();
        (chunks, ended)
    }

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    /// The process was ended: soon gone, or a zombie waiting for init (which may never reap
    /// it here). It may still be finishing its exit when the output closes, hence the wait (a
    /// guard against hangs, not a measurement).
    fn assert_gone(pid: i32) {
        let start = std::time::Instant::now();
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if !alive(pid) || state.contains(") Z") {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{pid} still runs: {state}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn stdout_and_stderr_arrive_as_whole_lines() {
        let (chunks, ended) = run("echo one; echo two >&2; printf 'tail'");
        assert_eq!(ended.outcome, Outcome::Passed);
        assert_eq!(ended.leak, None);
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
            run("exit 3").1.outcome,
            Outcome::Failed {
                code: Some(3),
                signal: None
            }
        );
        assert_eq!(
            run("kill -9 $$").1.outcome,
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
        let (chunks, ended) = run("cat; echo done");
        assert_eq!(ended.outcome, Outcome::Passed);
        assert_eq!(chunks.concat(), b"done\n");
    }

    #[test]
    fn a_background_child_holding_the_output_is_ended_and_reported() {
        let (chunks, ended) = run("sleep 30 & echo $!; echo started");
        assert_eq!(ended.outcome, Outcome::Passed);
        assert_eq!(ended.leak, Some(Leak::Ended));
        let text = String::from_utf8(chunks.concat()).unwrap();
        assert_gone(text.lines().next().unwrap().parse().unwrap());
    }

    #[test]
    fn a_background_child_with_its_own_output_is_ended_too() {
        let (chunks, ended) = run("sleep 30 >/dev/null 2>&1 & echo $!");
        assert_eq!(ended.outcome, Outcome::Passed);
        assert_eq!(ended.leak, Some(Leak::Ended));
        let text = String::from_utf8(chunks.concat()).unwrap();
        assert_gone(text.trim().parse().unwrap());
    }

    #[test]
    fn a_leaked_child_that_keeps_writing_is_found_and_ended() {
        let (_, ended) = run("(while :; do echo tick; sleep 0.01; done) & exit 0");
        assert_eq!(ended.outcome, Outcome::Passed);
        assert_eq!(ended.leak, Some(Leak::Ended));
    }

    #[test]
    fn a_command_that_waits_for_its_children_leaks_nothing() {
        let (chunks, ended) = run("sleep 0.2 & sleep 0.1 & wait; echo done");
        assert_eq!(ended.leak, None);
        assert_eq!(chunks.concat(), b"done\n");
    }

    #[test]
    fn interactive_output_is_handed_on_without_waiting_for_a_newline() {
        let mut chunks = Vec::new();
        let running = start("printf 'name? '; sleep 0.3; echo", true);
        assert!(running.target().group);
        running.stream(|c| chunks.push(c)).unwrap();
        assert_eq!(chunks.first().map(Vec::as_slice), Some(&b"name? "[..]));
    }

    #[test]
    fn environment_can_be_removed_as_well_as_set() {
        let command = CommandLine::new("sh", ["-c", "echo \"${HOME:-none} $EXTRA\""]);
        let env = BTreeMap::from([
            ("HOME".to_owned(), None),
            ("EXTRA".to_owned(), Some("x".to_owned())),
        ]);
        let mut chunks = Vec::new();
        spawn(&Spawn {
            command: &command,
            dir: Path::new("."),
            env: &env,
            interactive: false,
            die_with_runner: false,
            announce: None,
        })
        .unwrap()
        .stream(|c| chunks.push(c))
        .unwrap();
        assert_eq!(chunks.concat(), b"none x\n");
    }

    #[test]
    fn a_missing_program_is_an_error_not_a_panic() {
        let command = CommandLine::new("no-such-program-pydeployer", Vec::<String>::new());
        assert!(
            spawn(&Spawn {
                command: &command,
                dir: Path::new("."),
                env: &BTreeMap::new(),
                interactive: false,
                die_with_runner: false,
                announce: None,
            })
            .is_err()
        );
    }
}
