//! Environments for real: push-to-deploy targets are bare repositories with a real
//! `post-receive` hook that checks the pushed commit out and (re)starts a small Python HTTP app
//! on a free loopback port, whose `/health` answers with the commit it runs (and 500 when the
//! tree holds `BROKEN`). Every app a test starts is ended when the test ends.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::targets::{Targets, commit_upstream, origin_head, target};
use common::{Project, git, push_seed, webhook_server};

/// A guard against hangs, never a measurement.
const LIMIT: Duration = Duration::from_mins(2);

/// Staging (HTTP check) and production (requires staging, approval, a `run:` check).
fn pipeline(staging: u16, production: u16) -> String {
    format!(
        r#"name: app
repo: {{ url: origin.git }}
environments:
  staging:
    url: envs/staging.git
    health: {{ url: "http://127.0.0.1:{staging}/health", expect: 200, timeout: 20s, interval: 200ms }}
  production:
    url: envs/production.git
    requires: staging
    approval: true
    health:
      run: python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{production}/health', timeout=5)"
      timeout: 20s
      interval: 1s
stages:
  clone: {{ uses: git/clone }}
  build: {{ uses: git/commit, needs: [clone] }}
  test: {{ run: test ! -f FAIL, needs: [build] }}
  deploy-staging: {{ uses: git/push, with: {{ environment: staging }}, needs: [test] }}
  deploy-production: {{ uses: git/push, with: {{ environment: production }}, needs: [deploy-staging] }}
"#
    )
}

fn targets() -> Targets {
    let project = Project::new();
    let staging = target(&project, "staging");
    let production = target(&project, "production");
    project.file("pipeline.yml", &pipeline(staging, production));
    project.file("seed/version.txt", "v1\n");
    push_seed(&project);
    Targets {
        project,
        ports: vec![
            ("staging".into(), staging),
            ("production".into(), production),
        ],
    }
}

#[test]
fn run_deploys_to_staging_checks_it_and_holds_production_for_approval() {
    let t = targets();
    let (code, out, err) = t.project.run(&["run"]);
    assert_eq!(code, 0, "{out}{err}");
    let c1 = origin_head(&t.project);
    assert_eq!(t.head("staging"), c1);
    let (status, body) = t.get("staging");
    assert_eq!(
        (status, body.split(' ').next().unwrap()),
        (200, c1.as_str())
    );
    assert!(
        err.contains("needs approval: `pydeployer deploy production --approve`"),
        "{err}"
    );
    assert_eq!(t.head("production"), "", "production was pushed to");
    let ledger = t.ledger();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0]["environment"], "staging");
    assert_eq!(ledger[0]["trigger"], "manual");
    assert_eq!(ledger[0]["status"], "success");
    assert_eq!(ledger[0]["health"]["result"], "healthy");
    assert!(ledger[0]["health"]["took_ms"].is_u64());

    // Acceptance 2: promotion of the exact commit, no build, the approver recorded.
    let logs_before = t.project.logs();
    let (code, out, err) = t.project.run(&["deploy", "production", "--approve"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(t.head("production"), c1);
    let (status, body) = t.get("production");
    assert_eq!(
        (status, body.split(' ').next().unwrap()),
        (200, c1.as_str())
    );
    // The new log (two runs in one second sort `…-2.log` before `….log`: not by index).
    let log = t
        .project
        .logs()
        .into_iter()
        .filter(|l| !logs_before.contains(l))
        .map(|l| std::fs::read_to_string(l).unwrap())
        .next()
        .unwrap();
    assert!(!log.contains("[build] started"), "{log}");
    assert!(!log.contains("[clone] started"), "{log}");
    let ledger = t.ledger();
    let production = &ledger[1];
    assert_eq!(production["environment"], "production");
    assert_eq!(production["trigger"], "promote");
    assert_eq!(production["commit"], c1.as_str());
    assert!(!production["approved_by"].as_str().unwrap().is_empty());
    assert!(production["approved_at"].is_string());
    assert_eq!(production["health"]["result"], "healthy");

    // Acceptance 6: status, text and JSON.
    let (code, out, err) = t.project.run(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("staging: {}", &c1[..7])), "{out}");
    assert!(out.contains(&format!("production: {}", &c1[..7])), "{out}");
    assert!(out.contains("promote, approved by"), "{out}");
    assert!(out.contains("health now: healthy"), "{out}");
    let (code, out, err) = t.project.run(&["status", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["environment"], "staging");
    assert_eq!(json[0]["commit"], c1.as_str());
    assert_eq!(json[0]["trigger"], "manual");
    assert_eq!(json[0]["health"], "healthy");
    assert!(json[0]["deployed_at"].is_string());
    assert_eq!(json[1]["trigger"], "promote");
    assert_eq!(json[1]["health"], "healthy");
    let (_, out, _) = t.project.run(&["status", "--no-check", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[1]["health"], "unchecked");

    // history --env.
    let (code, out, _) = t
        .project
        .run(&["history", "--env", "production", "--format", "json"]);
    assert_eq!(code, 0);
    let entries: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 1);
    assert_eq!(entries[0]["environment"], "production");
}

#[test]
fn an_unhealthy_deploy_sends_the_unhealthy_notification_and_a_healthy_one_does_not() {
    let (base, received) = webhook_server();
    let project = Project::new();
    let staging = target(&project, "staging");
    let production = target(&project, "production");
    let text = pipeline(staging, production).replacen(
        "name: app\n",
        "name: app\nnotify:\n  - { webhook_env: HOOK_URL, on: [unhealthy] }\n",
        1,
    );
    project.file("pipeline.yml", &text);
    project.file("seed/version.txt", "v1\n");
    push_seed(&project);
    let t = Targets {
        project,
        ports: vec![("staging".into(), staging)],
    };
    let run = |what: &str| {
        let output = t
            .project
            .cmd(&["run", "deploy-staging"])
            .env("HOOK_URL", format!("{base}/hooks/{what}"))
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, err) = run("first");
    assert_eq!(code, 0, "{err}");
    assert_eq!(received.try_iter().count(), 0, "a healthy deploy notified");

    let broken = commit_upstream(&t.project, "BROKEN", "yes\n", "a broken app");
    let (code, err) = run("second");
    assert_eq!(code, 1, "{err}");
    let posts: Vec<_> = received.try_iter().collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let (line, body) = &posts[0];
    assert!(line.starts_with("POST /hooks/second "), "{line}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["pipeline"], "app", "{body}");
    let said = body.to_string();
    assert!(said.contains("unhealthy"), "{said}");
    assert!(said.contains("staging"), "{said}");
    assert!(
        said.contains(&broken[..7]),
        "the unhealthy commit is not named: {said}"
    );
}

#[test]
fn an_unhealthy_deploy_is_rolled_back_by_itself_and_production_is_untouched() {
    let t = targets();
    assert_eq!(t.project.run(&["run"]).0, 0);
    let c1 = origin_head(&t.project);
    let (_, body) = t.get("staging");
    assert!(body.ends_with(" v1"), "{body}");

    let c2 = commit_upstream(&t.project, "BROKEN", "yes\n", "a broken app");
    t.project.file("seed/version.txt", "v2\n");
    let (code, out, err) = t.project.run(&["run"]);
    assert_eq!(code, 1, "{out}{err}");
    // Served again: the files of c1 (v1, not broken), as a rollback commit on top of c2.
    let (status, body) = t.get("staging");
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with(" v1"), "{body}");
    let head = t.head("staging");
    let staging = t.project.join("envs/staging.git");
    assert_eq!(git(&staging, &["rev-parse", "master^"]), c2, "not on top");
    assert_eq!(
        git(&staging, &["rev-parse", "master^{tree}"]),
        git(&staging, &["rev-parse", &format!("{c1}^{{tree}}")]),
    );
    let ledger = t.ledger();
    assert_eq!(ledger.len(), 3, "{ledger:?}");
    assert_eq!(ledger[1]["status"], "unhealthy");
    assert_eq!(ledger[1]["commit"], c2.as_str());
    assert_eq!(ledger[1]["health"]["result"], "unhealthy");
    assert_eq!(ledger[2]["kind"], "rollback");
    assert_eq!(ledger[2]["trigger"], "auto");
    assert_eq!(ledger[2]["status"], "success");
    assert_eq!(ledger[2]["commit"], head.as_str());
    assert_eq!(ledger[2]["rolled_back_to"], 1);
    assert_eq!(ledger[2]["health"]["result"], "healthy");
    assert_eq!(t.head("production"), "", "production was touched");
    assert!(err.contains("deploy-production"), "{err}");

    // Acceptance 4: production refuses while staging's live commit is unhealthy… the live
    // commit is the healthy rollback now, so make it unhealthy by hand in the ledger.
    let mut entries = t.ledger();
    entries[2]["status"] = "unhealthy".into();
    t.project.file(
        "archive/deploy_history.json",
        &serde_json::to_string_pretty(&entries).unwrap(),
    );
    let (code, _, err) = t.project.run(&["deploy", "production", "--approve"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is unhealthy"), "{err}");
    assert_eq!(t.head("production"), "", "production was pushed to");

    // A fixed commit deploys over pydeployer's rollback commit.
    std::fs::remove_file(t.project.join("seed/BROKEN")).unwrap();
    let c3 = commit_upstream(&t.project, "version.txt", "v3\n", "fixed");
    let (code, out, err) = t.project.run(&["run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(t.head("staging"), c3);
    assert!(t.get("staging").1.ends_with(" v3"));
}

#[test]
fn production_refuses_what_staging_never_had() {
    let t = targets();
    let (code, _, err) = t.project.run(&["deploy", "production", "--approve"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing was deployed to staging"), "{err}");
    assert_eq!(t.head("production"), "");
    assert!(!t.project.exists("archive/deploy_history.json"));
}

#[test]
fn rollback_env_acts_on_that_environment_only() {
    let t = targets();
    assert_eq!(t.project.run(&["run"]).0, 0);
    assert_eq!(t.project.run(&["deploy", "production", "--approve"]).0, 0);
    let production = t.head("production");
    for n in 2..=3 {
        commit_upstream(
            &t.project,
            "version.txt",
            &format!("v{n}\n"),
            &format!("v{n}"),
        );
        let (code, out, err) = t.project.run(&["run"]);
        assert_eq!(code, 0, "{out}{err}");
    }
    assert!(t.get("staging").1.ends_with(" v3"));
    let c3 = t.head("staging");

    let (code, _, err) = t.project.run(&["rollback", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("returning it to the files of entry 3"),
        "{err}"
    );
    assert!(err.contains(&format!("..{}", &c3[..7])), "{err}");
    assert!(
        t.get("staging").1.ends_with(" v2"),
        "{:?}",
        t.get("staging")
    );
    assert_eq!(t.head("production"), production, "production changed");
    let staging = t.project.join("envs/staging.git");
    assert_eq!(git(&staging, &["rev-parse", "master^"]), c3, "not on top");

    let (code, _, err) = t
        .project
        .run(&["rollback", "--env", "staging", "--to", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(t.get("staging").1.ends_with(" v1"));
    assert_eq!(t.head("production"), production, "production changed");
    let ledger = t.ledger();
    let last = ledger.last().unwrap();
    assert_eq!(last["kind"], "rollback");
    assert_eq!(last["environment"], "staging");
    assert_eq!(last["rolled_back_to"], 1);
    assert_eq!(last["health"]["result"], "healthy");

    // Nothing to change: nothing recorded.
    let count = ledger.len();
    let (code, _, err) = t
        .project
        .run(&["rollback", "--env", "staging", "--to", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nothing to revert"), "{err}");
    assert_eq!(t.ledger().len(), count);
    // An entry of production is no place to return staging to.
    let (code, _, err) = t
        .project
        .run(&["rollback", "--env", "staging", "--to", "2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a deploy to environment staging"), "{err}");
}

/// Waits (a guard against hangs) until `path` exists.
fn wait_for_file(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < LIMIT, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `pydeployer deploy production` in a tmux pane; the answer typed; its exit code.
fn approve_in_tmux(t: &Targets, answer: &str) -> (i32, String) {
    let socket = t.project.join(&format!("tmux-{answer}.sock"));
    let done = t.project.join(&format!("done-{answer}"));
    let binary = assert_cmd::cargo::cargo_bin!("pydeployer");
    let script = format!(
        "cd '{}' && NO_COLOR=1 '{}' deploy production; echo $? > '{}'; sleep 600",
        t.project.path().display(),
        binary.display(),
        done.display()
    );
    let tmux = |args: &[&str]| {
        let out = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .output()
            .expect("tmux (test.sh installs it)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    tmux(&["new-session", "-d", "-x", "150", "-y", "50", &script]);
    let start = Instant::now();
    loop {
        let screen = tmux(&["capture-pane", "-p"]);
        if screen.contains("to production? [y/N]") {
            break;
        }
        assert!(start.elapsed() < LIMIT, "no prompt:\n{screen}");
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux(&["send-keys", answer, "Enter"]);
    wait_for_file(&done);
    let screen = tmux(&["capture-pane", "-p", "-S", "-100"]);
    tmux(&["kill-server"]);
    let code = std::fs::read_to_string(&done)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (code, screen)
}

#[test]
fn on_a_terminal_the_approval_is_asked_and_no_pushes_nothing() {
    let t = targets();
    assert_eq!(t.project.run(&["run"]).0, 0);
    let c1 = t.head("staging");
    let (code, screen) = approve_in_tmux(&t, "n");
    assert!(
        screen.contains(&format!("Deploy {} to production? [y/N]", &c1[..7])),
        "{screen}"
    );
    assert_ne!(code, 0, "{screen}");
    assert_eq!(t.head("production"), "", "pushed without a yes");
    let (code, screen) = approve_in_tmux(&t, "y");
    assert_eq!(code, 0, "{screen}");
    assert_eq!(t.head("production"), c1);
    let ledger = t.ledger();
    assert!(ledger.last().unwrap()["approved_by"].is_string());
}

#[test]
fn bad_environments_are_refused_with_their_places() {
    let project = Project::with_pipeline(
        r#"repo: { url: origin.git }
environments:
  staging: { url: a.git, requires: production, health: { url: "ftp://x/health" } }
  production: { url: b.git, requires: staging, health: { run: ./smoke.sh, timeout: 0s } }
stages:
  deploy: { uses: git/push, with: { environment: stagin } }
"#,
    );
    let (code, _, err) = project.run(&["validate"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown environment `stagin`"), "{err}");
    assert!(err.contains("pipeline.yml:6:"), "{err}");
    assert!(err.contains("in a circle"), "{err}");
    assert!(err.contains("pipeline.yml:3:"), "{err}");
    assert!(err.contains("must be an http:// or https:// URL"), "{err}");
    assert!(err.contains("must be longer than zero"), "{err}");
    assert!(err.contains("pipeline.yml:4:"), "{err}");
    let (code, _, _) = project.run(&["run"]);
    assert_eq!(code, 2);
    assert!(!project.exists("logs"));
}

#[test]
fn a_scheduled_deploy_to_an_approval_environment_is_refused() {
    let project = Project::with_pipeline(
        r#"repo: { url: origin.git }
environments:
  production: { url: b.git, approval: true }
stages:
  deploy: { uses: git/push, with: { environment: production }, schedule: "0 3 * * *" }
"#,
    );
    let (code, _, err) = project.run(&["validate"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("which needs approval"), "{err}");
    assert!(err.contains("pipeline.yml:5:"), "{err}");
}
