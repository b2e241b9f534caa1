//! `pydeployer menu` driven for real: the binary runs in a pseudo-terminal, keys are typed into
//! it, and what it draws is read back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Project, finish, git, push_seed};

/// A guard against hangs, never a measurement: a healthy run is far quicker.
const LIMIT: Duration = Duration::from_mins(1);

const DOWN: &str = "\x1b[B";
const ENTER: &str = "\r";

/// `build`, then `test` (real pytest on a real test file), then a stage that fails.
const PIPELINE: &str = "\
name: app
stages:
  build: { run: echo built, description: pretend to build }
  test: { uses: pytest, needs: [build], description: the unit tests }
  broken: { run: 'echo oops; exit 4' }
";

fn project() -> Project {
    let project = Project::with_pipeline(PIPELINE);
    project.file(
        "tests/test_app.py",
        "def test_adds():\n    assert 1 + 1 == 2\n",
    );
    project
}

/// The menu's question, drawn each time the menu comes (back).
const PROMPT: &str = "app: what to run?";

/// `pydeployer ARGS…` with a pseudo-terminal as its stdin, stdout and stderr (and controlling
/// terminal), 120 columns by 40 rows.
struct Pty {
    child: Option<Child>,
    master: File,
    screen: Arc<Mutex<Vec<u8>>>,
    /// Where the next `wait_for` starts looking.
    seen: usize,
}

impl Pty {
    fn spawn(project: &Project, args: &[&str]) -> Pty {
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes the two descriptors; the name and termios pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &raw mut master,
                &raw mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &raw const size,
            )
        };
        assert_eq!(rc, 0, "openpty");
        // SAFETY: openpty just opened both; each is owned once.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin!("pydeployer"));
        command
            .current_dir(project.path())
            .env("NO_COLOR", "1")
            .env("TERM", "xterm")
            .env_remove("PYDEPLOYER_STAGE")
            .args(args)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe; the new session makes the pty the
        // child's controlling terminal, as in a terminal emulator.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = command.spawn().expect("start pydeployer");
        // The slave's copies in `command` are closed here; only the child holds the terminal.
        drop(command);
        let master = File::from(master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            // Ends with EIO when the last holder of the terminal is gone.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child: Some(child),
            master,
            screen,
            seen: 0,
        }
    }

    /// Everything drawn so far.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits (up to LIMIT, a guard against hangs) until `needle` is drawn after what earlier
    /// waits found, and moves past it.
    fn wait_for(&mut self, needle: &str) {
        let start = Instant::now();
        loop {
            {
                let screen = self.screen.lock().unwrap();
                let text = String::from_utf8_lossy(&screen[self.seen..]).into_owned();
                if let Some(at) = text.find(needle) {
                    self.seen += text[..at + needle.len()].len();
                    return;
                }
            }
            assert!(
                start.elapsed() < LIMIT,
                "`{needle}` never appeared; the screen:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// At the menu, picks the entry highlighted first and waits for `until`.
    fn run_first_entry(&mut self, until: &str) {
        self.wait_for(PROMPT);
        self.wait_for("quit");
        self.keys(ENTER);
        self.wait_for(until);
    }

    fn keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Waits for the program to end; its exit code (128 + signal when killed).
    fn exit_code(&mut self) -> i32 {
        let child = self.child.take().unwrap();
        let (code, _, _) = finish(child, LIMIT);
        code
    }
}

#[test]
fn pick_test_see_it_run_come_back_to_the_menu_and_quit() {
    let project = project();
    let mut pty = Pty::spawn(&project, &["menu"]);
    pty.wait_for(PROMPT);
    pty.wait_for("2. test      the unit tests");
    pty.wait_for("quit");
    // `build` is highlighted first; one down is `test`.
    pty.keys(DOWN);
    pty.keys(ENTER);
    pty.wait_for("» test");
    pty.wait_for("test passed");
    pty.wait_for("1 passed, 0 failed, 0 skipped");
    pty.wait_for("test: done");
    // The menu is back.
    pty.wait_for(PROMPT);
    pty.wait_for("quit");

    // The run had its log, and it ran `test` alone (as `run --only test` does).
    let logs = project.logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let log = project.last_log();
    assert!(log.contains("[test]"), "{log}");
    assert!(!log.contains("[build]"), "{log}");

    // The menu waiting holds no lock: another run of the project goes ahead meanwhile.
    let (code, _, err) = project.run(&["run", "--only", "build"]);
    assert_eq!(code, 0, "{err}");

    pty.keys("q");
    assert_eq!(pty.exit_code(), 0, "{}", pty.text());
}

#[test]
fn a_failed_stage_comes_back_to_the_menu_and_ctrl_c_there_exits_130() {
    let project = project();
    let mut pty = Pty::spawn(&project, &["menu"]);
    pty.wait_for(PROMPT);
    pty.wait_for("quit");
    pty.keys(DOWN);
    pty.keys(DOWN);
    pty.keys(ENTER);
    pty.wait_for("» broken");
    pty.wait_for("broken: failed (exit 1)");
    pty.wait_for(PROMPT);
    pty.wait_for("quit");
    pty.keys("\x03");
    assert_eq!(pty.exit_code(), 130, "{}", pty.text());
    // The cursor, hidden while the menu is up, is shown again.
    let text = pty.text();
    let hidden = text.rfind("\x1b[?25l").expect("the menu hides the cursor");
    assert!(text[hidden..].contains("\x1b[?25h"), "{text:?}");
}

#[test]
fn no_command_on_a_terminal_opens_the_menu_and_esc_quits() {
    let project = project();
    let mut pty = Pty::spawn(&project, &[]);
    pty.wait_for(PROMPT);
    pty.wait_for("quit");
    pty.keys("\x1b");
    assert_eq!(pty.exit_code(), 0, "{}", pty.text());
    assert!(project.logs().is_empty());
}

#[test]
fn off_a_terminal_the_menu_refuses_at_once_with_a_hint() {
    let project = project();
    // stdin is /dev/null, stdout and stderr are pipes.
    let (code, _, err) = finish(project.spawn(&["menu"]), LIMIT);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs a terminal"), "{err}");
    assert!(err.contains("use `pydeployer run"), "{err}");
    assert!(project.logs().is_empty());
}

#[test]
fn no_command_off_a_terminal_prints_the_help() {
    let project = project();
    let (code, _, err) = finish(project.spawn(&[]), LIMIT);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Usage: pydeployer"), "{err}");
    assert!(err.contains("menu"), "{err}");
}

#[test]
fn runs_from_the_menu_leave_no_trail_of_exited_watchdogs() {
    // Each run's watchdog is a child of the menu's process, which reaps it after the run
    // (before the menu comes back), rather than keep an exited child per run.
    let project = project();
    let mut pty = Pty::spawn(&project, &["menu"]);
    for _ in 0..3 {
        pty.run_first_entry("build passed");
    }
    pty.wait_for(PROMPT);
    pty.wait_for("quit");
    // Time enough for a watchdog nobody reaped to exit (it reads its pipe every 50 ms).
    std::thread::sleep(Duration::from_millis(300));
    let zombies = zombies_of(pty.child.as_ref().unwrap().id());
    assert_eq!(zombies, 0, "exited children of the menu not reaped");
    pty.keys("q");
    assert_eq!(pty.exit_code(), 0, "{}", pty.text());
}

#[test]
fn servers_a_stage_started_in_their_own_session_are_reaped_once_they_exit() {
    // A deploy hook starts a server with `setsid` and returns; when the server ends later, it
    // is a child of the runner (the stages' subreaper). A long-lived runner, the menu here,
    // reaps it after a later run instead of keeping one exited server per deploy.
    let project = Project::with_pipeline(concat!(
        "name: app\n",
        "stages:\n",
        "  serve:\n",
        "    run: \"setsid sh -c 'sleep 0.2; exit 0' </dev/null >/dev/null 2>&1 & exit 0\"\n",
    ));
    let mut pty = Pty::spawn(&project, &["menu"]);
    for _ in 0..4 {
        pty.run_first_entry("serve passed");
        // Each run's server has ended before the next run.
        std::thread::sleep(Duration::from_millis(500));
    }
    pty.wait_for(PROMPT);
    let zombies = zombies_of(pty.child.as_ref().unwrap().id());
    // The last run's server: reaped by the next run, or when the menu exits.
    assert!(zombies <= 1, "{zombies} exited servers kept by the menu");
    pty.keys("q");
    assert_eq!(pty.exit_code(), 0, "{}", pty.text());
}

#[test]
fn the_menus_rollback_names_the_commits_and_no_pushes_nothing() {
    let project = Project::with_pipeline(concat!(
        "name: app\n",
        "repo: { url: origin.git }\n",
        "stages:\n",
        "  clone: { uses: git/clone }\n",
        "  build: { uses: git/commit, needs: [clone] }\n",
        "  deploy: { uses: git/push, needs: [build] }\n",
        "  rollback: { uses: git/revert, when: manual }\n",
    ));
    project.file("seed/app.txt", "one\n");
    push_seed(&project);
    let origin = project.join("origin.git");
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    let first = git(&origin, &["rev-parse", "master"]);
    project.file("workspace/two.txt", "two\n");
    assert_eq!(project.run(&["run", "-q"]).0, 0);
    let second = git(&origin, &["rev-parse", "master"]);

    let mut pty = Pty::spawn(&project, &["menu"]);
    pty.wait_for(PROMPT);
    pty.wait_for("quit");
    // clone, build, deploy, all, several…, then rollback.
    pty.keys(&DOWN.repeat(5));
    pty.keys(ENTER);
    pty.wait_for(&format!(
        "roll origin/master back from {} (ledger entry 2) to the files of {} (entry 1)",
        &second[..7],
        &first[..7]
    ));
    pty.keys("n");
    pty.wait_for(PROMPT);
    pty.wait_for("quit");
    pty.keys("q");
    assert_eq!(pty.exit_code(), 0, "{}", pty.text());
    assert_eq!(git(&origin, &["rev-parse", "master"]), second, "pushed");
}

/// How many exited children of `parent` wait to be reaped.
fn zombies_of(parent: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid …
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() == Some(&"Z") && fields.get(1) == Some(&parent.to_string().as_str())
        })
        .count()
}
