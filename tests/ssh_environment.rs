//! An `ssh://` environment for real: Debian's own `/usr/sbin/sshd`, in the foreground on
//! 127.0.0.1 and a free port, with throwaway host and user keys, in front of a bare repository
//! whose `post-receive` hook (re)starts a small HTTP app (tests/common/targets.rs). pydeployer
//! reaches it as a user would: `url: ssh://USER@127.0.0.1:PORT/path`, and `GIT_SSH_COMMAND`
//! naming the key. One sshd serves every test of this file and is ended with the last one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use common::targets::{Targets, commit_upstream, free_port, origin_head, target};
use common::{Project, git, push_seed};

/// A guard against hangs, never a measurement.
const LIMIT: Duration = Duration::from_secs(30);

const SSHD: &str = "/usr/sbin/sshd";

/// Debian's sshd, started by the tests, listening on 127.0.0.1; killed (and waited for) when
/// the last test holding it lets it go.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    child: Child,
}

/// The sshd the running tests share: started by the first that needs it.
static SHARED: Mutex<Weak<Sshd>> = Mutex::new(Weak::new());

fn sshd() -> Arc<Sshd> {
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(sshd) = shared.upgrade() {
        return sshd;
    }
    let sshd = Arc::new(Sshd::start());
    *shared = Arc::downgrade(&sshd);
    sshd
}

/// Runs a tool the test needs; a missing one fails the test, naming the package.
fn tool(program: &str, args: &[&str], package: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): install {package} (./test.sh installs it)")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Sshd {
    fn start() -> Sshd {
        assert!(
            Path::new(SSHD).is_file(),
            "{SSHD} is missing: install Debian's openssh-server (./test.sh installs it)"
        );
        let user = tool("id", &["-un"], "coreutils");
        // SAFETY: getuid has no preconditions and cannot fail.
        let root = unsafe { libc::getuid() } == 0;
        if root {
            // Run as root, sshd wants its privilege separation folder (Debian's service makes it).
            std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        }
        let dir = tempfile::Builder::new()
            .prefix("pydeployer-sshd-")
            .tempdir()
            .unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        for key in ["host_key", "user_key", "stranger_key"] {
            tool(
                "ssh-keygen",
                &["-q", "-t", "ed25519", "-N", "", "-C", key, "-f", &path(key)],
                "openssh-client",
            );
        }
        std::fs::copy(path("user_key.pub"), path("authorized_keys")).unwrap();
        let port = free_port();
        // The hook runs with sshd's PATH unless told: give it the tests' own (the same git
        // and python3).
        let search_path = std::env::var("PATH").unwrap_or_default();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {host}\nPidFile {pid}\n\
             AuthorizedKeysFile {keys}\nStrictModes no\nUsePAM no\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin {root}\nAllowUsers {user}\nPrintMotd no\nSetEnv \"PATH={search_path}\"\n",
            host = path("host_key"),
            pid = path("sshd.pid"),
            keys = path("authorized_keys"),
            root = if root { "yes" } else { "no" },
        );
        std::fs::write(path("sshd_config"), config).unwrap();
        let log = std::fs::File::create(path("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f", &path("sshd_config")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}"));
        let mut sshd = Sshd {
            dir,
            port,
            user,
            child,
        };
        let start = Instant::now();
        while !sshd.log().contains("Server listening on 127.0.0.1") {
            if let Some(status) = sshd.child.try_wait().unwrap() {
                panic!("sshd ended ({status}) before listening:\n{}", sshd.log());
            }
            assert!(
                start.elapsed() < LIMIT,
                "sshd is not listening after {LIMIT:?}:\n{}",
                sshd.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Logging in must work before pydeployer tries: a failure here is the setup's.
        let ssh = Command::new("sh")
            .args([
                "-c",
                &format!("{} -p {port} \"$1\" true", sshd.ssh_command()),
            ])
            .arg("ssh")
            .arg(format!("{}@127.0.0.1", sshd.user))
            .stdin(Stdio::null())
            .output()
            .expect("ssh (openssh-client; ./test.sh installs it)");
        assert!(
            ssh.status.success(),
            "cannot log in to the test's sshd as {}: {}\n{}",
            sshd.user,
            String::from_utf8_lossy(&ssh.stderr),
            sshd.log()
        );
        sshd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// `GIT_SSH_COMMAND` with the user's key (`key: user_key`) or one sshd does not know
    /// (`stranger_key`).
    fn command_with(&self, key: &str) -> String {
        format!(
            "ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o BatchMode=yes",
            self.dir.path().join(key).display()
        )
    }

    fn ssh_command(&self) -> String {
        self.command_with("user_key")
    }

    /// The `ssh://` URL of `repo` (an absolute path) through this sshd.
    fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(5) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A project whose staging environment is the bare repository `envs/staging.git` reached over
/// `url` (made from its path), checked over HTTP on the app's port.
fn project_over_ssh(url: impl Fn(&Path) -> String) -> Targets {
    let project = Project::new();
    let port = target(&project, "staging");
    let url = url(&project.join("envs/staging.git"));
    project.file(
        "pipeline.yml",
        &format!(
            r#"name: app
repo: {{ url: origin.git }}
environments:
  staging:
    url: "{url}"
    health: {{ url: "http://127.0.0.1:{port}/health", expect: 200, timeout: 20s, interval: 200ms }}
stages:
  clone: {{ uses: git/clone }}
  build: {{ uses: git/commit, needs: [clone] }}
  test: {{ run: test ! -f FAIL, needs: [build] }}
  deploy-staging: {{ uses: git/push, with: {{ environment: staging }}, needs: [test] }}
"#
        ),
    );
    project.file("seed/version.txt", "v1\n");
    push_seed(&project);
    Targets {
        project,
        ports: vec![("staging".into(), port)],
    }
}

/// `pydeployer ARGS…` with `GIT_SSH_COMMAND`; (exit code, stdout, stderr).
fn run(t: &Targets, ssh_command: &str, args: &[&str]) -> (i32, String, String) {
    let out = t
        .project
        .cmd(args)
        .env("GIT_SSH_COMMAND", ssh_command)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_ssh_environment_deploys_through_sshd_passes_its_health_check_and_rolls_back() {
    let sshd = sshd();
    let t = project_over_ssh(|repo| sshd.url(repo));
    let ssh = sshd.ssh_command();

    let (code, out, err) = run(&t, &ssh, &["run"]);
    assert_eq!(code, 0, "{out}{err}\n{}", sshd.log());
    let c1 = origin_head(&t.project);
    assert_eq!(t.head("staging"), c1);
    let (status, body) = t.get("staging");
    assert_eq!((status, body.as_str()), (200, format!("{c1} v1").as_str()));
    // Through sshd, as the user: the account is part of the URL, never masked.
    let accepted = format!("Accepted publickey for {} from 127.0.0.1", sshd.user);
    assert!(sshd.log().contains(&accepted), "{}", sshd.log());
    let log = t.project.last_log();
    assert!(
        log.contains(&format!("git push ssh://{}@127.0.0.1:", sshd.user)),
        "{log}"
    );
    assert!(log.contains("health: healthy after"), "{log}");
    assert!(
        err.contains(&format!("staging at {}: healthy after", &c1[..7])),
        "{err}"
    );
    let ledger = t.ledger();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0]["kind"], "deploy");
    assert_eq!(ledger[0]["environment"], "staging");
    assert_eq!(ledger[0]["status"], "success");
    assert_eq!(ledger[0]["commit"], c1.as_str());
    assert_eq!(ledger[0]["health"]["result"], "healthy");

    // An unhealthy deploy: rolled back over ssh by itself (a fetch, a commit on top, a push).
    let c2 = commit_upstream(&t.project, "BROKEN", "yes\n", "a broken app");
    let (code, out, err) = run(&t, &ssh, &["run"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("staging at {}: unhealthy after", &c2[..7])),
        "{err}"
    );
    let (status, body) = t.get("staging");
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with(" v1"), "{body}");
    let staging = t.project.join("envs/staging.git");
    assert_eq!(git(&staging, &["rev-parse", "master^"]), c2, "not on top");
    let ledger = t.ledger();
    assert_eq!(ledger.len(), 3, "{ledger:?}");
    assert_eq!(ledger[1]["status"], "unhealthy");
    assert_eq!(ledger[1]["health"]["result"], "unhealthy");
    assert_eq!(ledger[2]["kind"], "rollback");
    assert_eq!(ledger[2]["trigger"], "auto");
    assert_eq!(ledger[2]["environment"], "staging");
    assert_eq!(ledger[2]["health"]["result"], "healthy");

    // A fixed commit deploys over the rollback commit; `rollback --env` takes it back.
    std::fs::remove_file(t.project.join("seed/BROKEN")).unwrap();
    let c3 = commit_upstream(&t.project, "version.txt", "v3\n", "fixed");
    let (code, out, err) = run(&t, &ssh, &["run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(t.head("staging"), c3);
    assert_eq!(t.get("staging").1, format!("{c3} v3"));
    let (code, out, err) = run(&t, &ssh, &["rollback", "--env", "staging"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        t.get("staging").1.ends_with(" v1"),
        "{:?}",
        t.get("staging")
    );
    assert_eq!(git(&staging, &["rev-parse", "master^"]), c3, "not on top");
    let ledger = t.ledger();
    let last = ledger.last().unwrap();
    assert_eq!(last["kind"], "rollback");
    assert_eq!(last["trigger"], "manual");
    assert_eq!(last["environment"], "staging");
    assert_eq!(last["health"]["result"], "healthy");
}

#[test]
fn a_key_sshd_refuses_fails_the_deploy_naming_the_environment() {
    let sshd = sshd();
    let t = project_over_ssh(|repo| sshd.url(repo));
    let (code, out, err) = run(&t, &sshd.command_with("stranger_key"), &["run"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("deploy-staging"), "{err}");
    assert!(err.contains("Permission denied (publickey)"), "{err}");
    let log = t.project.last_log();
    assert!(
        log.contains(&format!(
            "cannot reach environment staging ({})",
            sshd.url(&t.project.join("envs/staging.git"))
        )),
        "{log}"
    );
    assert_eq!(t.head("staging"), "", "something was pushed");
    assert_eq!(t.get("staging").0, 0, "an app runs: something was deployed");
    let ledger = t.ledger();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0]["environment"], "staging");
    assert_eq!(ledger[0]["status"], "failed");
    assert!(ledger[0]["health"].is_null(), "{ledger:?}");
}

#[test]
fn a_password_in_an_ssh_environment_url_is_masked() {
    let sshd = sshd();
    // git hands `USER:PASSWORD@HOST:PORT` to ssh, which cannot use it: the deploy fails, and
    // the password must show nowhere (terminal, log, ledger).
    let t = project_over_ssh(|repo| {
        format!(
            "ssh://{}:hunter2@127.0.0.1:{}{}",
            sshd.user,
            sshd.port,
            repo.display()
        )
    });
    let (code, out, err) = run(&t, &sshd.ssh_command(), &["run"]);
    assert_eq!(code, 1, "{out}{err}");
    let log = t.project.last_log();
    assert!(log.contains("cannot reach environment staging"), "{log}");
    assert!(log.contains(&format!("ssh://{}:", sshd.user)), "{log}");
    let ledger = t.project.read("archive/deploy_history.json");
    assert!(
        ledger.contains(&format!("ssh://{}:", sshd.user)),
        "{ledger}"
    );
    for (what, text) in [
        ("stdout", out),
        ("stderr", err),
        ("log", log),
        ("ledger", ledger),
    ] {
        assert!(
            !text.contains("hunter2"),
            "{what} shows the password:\n{text}"
        );
    }
    let (code, out, err) = run(&t, &sshd.ssh_command(), &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("staging: nothing deployed (ssh://"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
}
