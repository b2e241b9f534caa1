//! A small second process that ends the stages if the runner dies without doing so.
//!
//! `PR_SET_PDEATHSIG` kills each stage's main process when the runner dies, but not the rest
//! of its process group (a test server, a background job). The watchdog is pydeployer itself,
//! started as `pydeployer __watchdog` in a process group of its own (so Ctrl-C on the terminal
//! does not reach it). The runner tells it on its stdin which groups are running; when that
//! pipe closes without a final `done` line (the runner was killed, even with `kill -9`), it
//! sends TERM to every group still listed, and KILL two seconds later (a fixed time: the
//! pipeline's `grace_period` is not known here).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::sync::Mutex;
use std::time::Duration;

use crate::exec::process::{SIGKILL, SIGTERM, Target};

/// Between the watchdog's TERM and KILL.
const GRACE: Duration = Duration::from_secs(2);

/// The runner's end of the watchdog.
pub struct Watchdog {
    to_watchdog: Mutex<Option<io::PipeWriter>>,
    handle: duct::Handle,
}

impl Watchdog {
    /// Starts `pydeployer __watchdog` (this same executable). It gets a copy of the run
    /// lock's file as its stdout (and never writes to it): that keeps the run locked, should
    /// the runner die, until the watchdog has ended the stages and exits.
    pub fn start(lock: &File) -> io::Result<Watchdog> {
        let exe = std::env::current_exe()?;
        let (reader, writer) = io::pipe()?;
        let expression = duct::cmd(exe, ["__watchdog"])
            .stdin_file(reader)
            .stdout_file(lock.try_clone()?)
            .stderr_null()
            .unchecked()
            .before_spawn(|cmd| {
                cmd.process_group(0);
                Ok(())
            });
        let handle = expression.start()?;
        drop(expression);
        Ok(Watchdog {
            to_watchdog: Mutex::new(Some(writer)),
            handle,
        })
    }

    /// A stage's process group started.
    pub fn watch(&self, pgid: i32) {
        self.send(&format!("+{pgid}\n"));
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
        // Not waited for: it exits on its own at once, and the run need not pay for that.
        let _ = self.handle.try_wait();
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

/// While the runner talks, the watchdog reads at most this often: one wake-up per batch of
/// lines rather than one per stage (a stage should cost no more than its process).
const BATCH: Duration = Duration::from_millis(50);

/// The watchdog process's main loop; returns its exit code.
pub fn serve(input: impl Read) -> i32 {
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
