//! Which processes belong to a stage, from `/proc`, and the runner as their subreaper.
//!
//! A non-interactive stage command starts a session of its own (`setsid`): its session id
//! is its pid, which is also its process group's id. Whatever it starts stays in that session
//! unless it calls `setsid` itself, even when it moves to another process group (GNU
//! `timeout`, a shell with job control `set -m`). So "the stage's processes" are its group
//! and every other process of its session, and ending a stage signals all of them.
//!
//! Finding the others needs a look at `/proc`, which costs more than the `killpg` that
//! reaches the group: it is done only when a stage is ended (timeout, Ctrl-C, a leak, the
//! watchdog), and, at a stage's normal end, only over the runner's own children: the runner
//! is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so a process whose parent died is
//! reparented to it rather than to init. A process of the session that is still running is
//! then in the group, or a descendant of one of the runner's children, which is enough to
//! tell whether anything is left without reading every process of the machine. The runner
//! reaps such orphans once they have exited.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this process is the subreaper of its stages (the runner, not the watchdog).
static SUBREAPER: AtomicBool = AtomicBool::new(false);

/// Makes this process the subreaper of its descendants (once; the attribute stays for the
/// life of the process). Processes orphaned in a stage then become its children, to be found
/// and reaped here rather than by init.
pub fn become_subreaper() {
    if SUBREAPER.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: prctl with an integer argument.
    let ok = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0;
    SUBREAPER.store(ok, Ordering::Relaxed);
}

/// In a forked child (the watchdog): the attribute is not inherited, and orphans go
/// elsewhere, so the whole of `/proc` is looked at.
pub fn forget_subreaper() {
    SUBREAPER.store(false, Ordering::Relaxed);
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// Exited, waiting to be reaped (`Z`), or dead (`X`).
    pub zombie: bool,
    pub pgrp: i32,
    pub session: i32,
}

impl Stat {
    /// A process of the session or group `id` that still runs.
    fn lives_in(&self, id: i32) -> bool {
        !self.zombie && (self.session == id || self.pgrp == id)
    }
}

/// Reads `/proc/<pid>/stat`; `None` when the process is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// `pid (comm) state ppid pgrp session …`; comm may hold spaces and parentheses.
fn parse_stat(pid: i32, text: &[u8]) -> Option<Stat> {
    let close = text.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(Stat {
        pid,
        zombie: matches!(state, "Z" | "X"),
        pgrp,
        session,
    })
}

/// Every process of the machine that `/proc` shows.
fn everyone() -> impl Iterator<Item = Stat> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
}

/// The children of this process. pydeployer starts everything from its main thread, and the
/// kernel gives an orphan to the subreaper's leader while it lives: the leader's one file is
/// enough (read with one `open` and `read`s, no listing of the threads).
fn children() -> Vec<i32> {
    use std::io::Read as _;
    let path = format!("/proc/self/task/{}/children", std::process::id());
    let mut text = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    if let Ok(mut file) = std::fs::File::open(path) {
        while let Ok(n @ 1..) = file.read(&mut buf) {
            text.extend_from_slice(&buf[..n]);
        }
    }
    String::from_utf8_lossy(&text)
        .split_ascii_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .collect()
}

/// The processes of the session or group `id` other than its group (which `killpg`
/// reaches), that still run.
pub fn others(id: i32) -> Vec<i32> {
    everyone()
        .filter(|p| p.lives_in(id) && p.pgrp != id)
        .map(|p| p.pid)
        .collect()
}

/// Whether a process of the session or group `id` still runs. `group_answers`: `killpg(id,
/// 0)` found a member (maybe only zombies).
pub fn has_members(id: i32, group_answers: bool) -> bool {
    if group_answers || !SUBREAPER.load(Ordering::Relaxed) {
        return everyone().any(|p| p.lives_in(id));
    }
    // The group is empty: anything of the session left is an orphan, now a child of ours,
    // or a descendant of one. A stage ends at this check, so it is made with a few system
    // calls per child rather than by reading each child's `/proc/<pid>/stat`.
    let mut found = false;
    for pid in children() {
        match Child::of(pid) {
            // Gone meanwhile; or the main process of a stage, waited for by its own handle:
            // a member of `id` only while it runs, and then its group (`id`) answers.
            Child::Gone | Child::Leader => {}
            // Of the runner's session: the watchdog, pydeployer's own commands, or what an
            // interactive stage (a group in this session) left behind. Not reaped here.
            Child::Runner { group } => found |= group == id && !exited(pid),
            Child::Orphan { session, group } => {
                // An exited orphan is reaped here and counts no more.
                found |= !reap(pid) && (session == id || group == id);
            }
        }
    }
    found
}

/// What a child of the runner is, from `getsid` and `getpgid`.
enum Child {
    /// In the runner's own session.
    Runner {
        group: i32,
    },
    /// Leads a session of its own: a stage's main process.
    Leader,
    /// In a stage's session without leading it: left behind when its parent ended.
    Orphan {
        session: i32,
        group: i32,
    },
    Gone,
}

impl Child {
    fn of(pid: i32) -> Child {
        // SAFETY: getsid and getpgid have no memory-safety preconditions; a pid that is gone
        // gives ESRCH.
        let (session, group) = unsafe { (libc::getsid(pid), libc::getpgid(pid)) };
        let (session, group) = if session >= 0 && group >= 0 {
            (session, group)
        } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            return Child::Gone;
        } else {
            // Refused (a security module can deny both calls): `/proc` still says.
            match stat(pid) {
                Some(stat) => (stat.session, stat.pgrp),
                None => return Child::Gone,
            }
        };
        if session == own_session() {
            Child::Runner { group }
        } else if session == pid {
            Child::Leader
        } else {
            Child::Orphan { session, group }
        }
    }
}

/// The runner's session (it never changes it).
fn own_session() -> i32 {
    static OWN: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    // SAFETY: getsid(0) has no preconditions.
    *OWN.get_or_init(|| unsafe { libc::getsid(0) })
}

/// Reaps the child `pid` if it has exited; whether it had (or is no child of ours any more).
fn reap(pid: i32) -> bool {
    // SAFETY: waitpid on a child of ours, without blocking.
    let got = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    got == pid || got < 0
}

/// Whether the child `pid` has exited (or is gone), leaving it to be reaped by its owner.
fn exited(pid: i32) -> bool {
    let Ok(id) = libc::id_t::try_from(pid) else {
        return true;
    };
    // SAFETY: an all-zero siginfo_t is valid; waitid writes into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: waitid on a child of ours, without blocking or reaping; `info` is valid.
    let ret = unsafe { libc::waitid(libc::P_PID, id, &raw mut info, flags) };
    // SAFETY: si_pid is set by waitid (0 when the child has not changed state).
    ret != 0 || unsafe { info.si_pid() } != 0
}

/// Reaps every exited orphan of the stages: a zombie child of ours in a stage's session, or
/// leading one (a server a deploy hook started with `setsid`, which a long-lived runner, `watch`
/// or the menu, would otherwise collect; or a stage's main process given up on). Called once no
/// stage is left to wait for its own main process: at the runner's end. Nothing of the runner's
/// own session (the watchdog, pydeployer's own commands) is touched.
pub fn reap_orphans() {
    if SUBREAPER.load(Ordering::Relaxed) {
        for pid in children() {
            if let Child::Orphan { .. } | Child::Leader = Child::of(pid) {
                reap(pid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_with_odd_command_names() {
        let line = b"4065 (a) b (c)) S 1 4065 4000 0 -1 4194560 107 0 0 0";
        assert_eq!(
            parse_stat(4065, line),
            Some(Stat {
                pid: 4065,
                zombie: false,
                pgrp: 4065,
                session: 4000
            })
        );
        let zombie = b"12 (sleep) Z 1 11 10 0";
        assert!(parse_stat(12, zombie).is_some_and(|s| s.zombie));
        assert_eq!(parse_stat(1, b"garbage"), None);
    }

    #[test]
    fn children_are_told_apart_by_their_session_and_looked_at_without_being_reaped() {
        use std::os::unix::process::CommandExt as _;
        let mut plain = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let mut leader = std::process::Command::new("sleep");
        leader.arg("30");
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            leader.pre_exec(|| {
                (libc::setsid() >= 0)
                    .then_some(())
                    .ok_or_else(std::io::Error::last_os_error)
            })
        };
        let mut leader = leader.spawn().expect("sleep in a session");
        let pid = |child: &std::process::Child| i32::try_from(child.id()).expect("pid");
        // SAFETY: getpgid(0) has no preconditions.
        let own_group = unsafe { libc::getpgid(0) };
        assert!(matches!(Child::of(pid(&plain)), Child::Runner { group } if group == own_group));
        assert!(matches!(Child::of(pid(&leader)), Child::Leader));
        assert!(!exited(pid(&plain)));

        plain.kill().expect("kill");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !exited(pid(&plain)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never exited"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Looked at, not reaped: its owner still gets its status.
        assert!(plain.wait().is_ok_and(|status| !status.success()));
        leader.kill().expect("kill");
        leader.wait().expect("wait");
        assert!(matches!(Child::of(pid(&leader)), Child::Gone));
    }

    #[test]
    fn this_process_is_found_in_its_own_session() {
        // SAFETY: getsid(0) has no preconditions.
        let session = unsafe { libc::getsid(0) };
        let me = stat(i32::try_from(std::process::id()).expect("pid")).expect("own stat");
        assert_eq!(me.session, session);
        assert!(has_members(session, true));
    }
}
