//! Hostile input: secrets that must not leak, output that tries to drive the terminal or
//! exhaust memory, names and values that try to escape, and a runner environment that tries
//! to point git somewhere else.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;
use std::fs;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Project, git};

/// Guards against a hang (a deadlock would otherwise stall the whole test run); not a
/// measure of speed.
const HANG_GUARD: Duration = Duration::from_mins(3);

/// The most memory the runner may use while a stage prints hundreds of megabytes.
const MAX_RSS_KIB: u64 = 64 * 1024;

/// The bytes of the newest run log, unaltered.
fn last_log_bytes(project: &Project) -> Vec<u8> {
    let newest = project
        .logs()
        .into_iter()
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("a run log");
    fs::read(newest).expect("read log")
}

fn last_log_len(project: &Project) -> u64 {
    let newest = project
        .logs()
        .into_iter()
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("a run log");
    fs::metadata(newest).expect("log metadata").len()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs `pydeployer ARGS…` under `/usr/bin/time` and returns (exit code, stderr, peak RSS of
/// the runner and the processes it waited for, in KiB).
fn run_measured(project: &Project, args: &[&str]) -> (i32, String, u64) {
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "/usr/bin/time is needed to measure the runner's peak memory (apt-get install time)"
    );
    let report = tempfile::NamedTempFile::new().expect("temp file");
    let output = assert_cmd::Command::new(time)
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(report.path())
        .arg(env!("CARGO_BIN_EXE_pydeployer"))
        .args(args)
        .current_dir(project.path())
        .env("NO_COLOR", "1")
        .env_remove("PYDEPLOYER_STAGE")
        .timeout(HANG_GUARD)
        .output()
        .expect("run pydeployer under /usr/bin/time");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let text = fs::read_to_string(report.path()).expect("read /usr/bin/time report");
    let rss = text
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no peak RSS in /usr/bin/time's report: {text:?}\n{stderr}"));
    (output.status.code().unwrap_or(-1), stderr, rss)
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

const TOKEN: &str = "s3cr3t-Value_42";
const SPECIAL: &str = "p@ss w/rd!xyz";

const LEAKY_PIPELINE: &str = r#"secrets: [MY_TOKEN, SPECIAL_TOKEN]
stages:
  leak:
    run: |
      echo "plain: $MY_TOKEN"
      printf %s "$MY_TOKEN" | base64
      printf 'user:%s' "$MY_TOKEN" | base64
      echo "special: $SPECIAL_TOKEN"
      printf %s "$SPECIAL_TOKEN" | base64
      python3 -c 'import urllib.parse,os;print(urllib.parse.quote(os.environ["SPECIAL_TOKEN"], safe=""))'
      printf 'split: %s' "${MY_TOKEN%%V*}"; sleep 0.2; printf '%s\n' "${MY_TOKEN#*-}"
      echo "on stderr: $MY_TOKEN" >&2
"#;

/// Every form of the two secrets the leaky stage prints.
fn leaked_forms() -> Vec<String> {
    vec![
        TOKEN.to_owned(),
        STANDARD.encode(TOKEN),
        STANDARD.encode(format!("user:{TOKEN}")),
        SPECIAL.to_owned(),
        STANDARD.encode(SPECIAL),
        "p%40ss%20w%2Frd%21xyz".to_owned(),
        // Pieces of the split write (the command builds them from the variable, so they are
        // not in its text), in case it were shown half masked.
        "s3cr3t".to_owned(),
        "Value_42".to_owned(),
    ]
}

fn assert_no_leak(what: &str, text: &str) {
    for form in leaked_forms() {
        assert!(
            !text.contains(&form),
            "{what} contains the secret form {form:?}:\n{text}"
        );
    }
}

#[test]
fn secrets_and_their_encodings_are_masked_in_terminal_json_and_log() {
    let project = Project::with_pipeline(LEAKY_PIPELINE);
    for args in [&["run", "-v"][..], &["run", "--format", "json", "-v"][..]] {
        let output = project
            .cmd(args)
            .env("MY_TOKEN", TOKEN)
            .env("SPECIAL_TOKEN", SPECIAL)
            .timeout(HANG_GUARD)
            .output()
            .expect("run pydeployer");
        let out = String::from_utf8_lossy(&output.stdout);
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {err}");
        assert_no_leak(&format!("stdout of {args:?}"), &out);
        assert_no_leak(&format!("stderr of {args:?}"), &err);
        assert!(err.contains("***"), "{args:?}: no mask in stderr:\n{err}");
        let log = project.last_log();
        assert_no_leak(&format!("log of {args:?}"), &log);
        assert!(
            log.contains("[leak] plain: ***"),
            "{args:?}: plain secret not masked in the log:\n{log}"
        );
        assert!(
            log.contains("[leak] special: ***"),
            "{args:?}: special secret not masked in the log:\n{log}"
        );
        assert!(
            log.contains("[leak] split: ***\n"),
            "{args:?}: secret written in two pieces not masked in the log:\n{log}"
        );
        assert!(
            log.contains("[leak] on stderr: ***"),
            "{args:?}: stderr secret not masked in the log:\n{log}"
        );
        if args.contains(&"json") {
            let summary: serde_json::Value =
                serde_json::from_str(&out).unwrap_or_else(|e| panic!("JSON summary: {e}\n{out}"));
            assert!(summary.is_object() || summary.is_array(), "{out}");
        }
    }
}

#[test]
fn each_line_of_a_multi_line_secret_is_masked() {
    let project = Project::with_pipeline(concat!(
        "secrets: [MY_TOKEN]\n",
        "stages:\n",
        "  leak:\n",
        "    run: |\n",
        "      printf '%s\\n' \"$MY_TOKEN\"\n",
        "      echo \"first: line-one-AAA\"\n",
        "      echo \"second: line-two-BBB\" >&2\n",
    ));
    let output = project
        .cmd(&["run", "-v"])
        .env("MY_TOKEN", "line-one-AAA\nline-two-BBB")
        .output()
        .expect("run pydeployer");
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{err}");
    let log = project.last_log();
    for (what, text) in [("stdout", &*out), ("stderr", &*err), ("log", &*log)] {
        for line in ["line-one-AAA", "line-two-BBB"] {
            assert!(!text.contains(line), "{what} shows {line:?}:\n{text}");
        }
    }
    assert!(log.contains("[leak] first: ***"), "{log}");
    assert!(log.contains("[leak] second: ***"), "{log}");
}

#[test]
fn an_unset_pipeline_secret_stops_the_run_before_anything_runs() {
    let project = Project::with_pipeline("secrets: [MY_TOKEN]\nstages:\n  a: { run: touch ran }\n");
    let output = project
        .cmd(&["run"])
        .env_remove("MY_TOKEN")
        .output()
        .expect("run pydeployer");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("MY_TOKEN"), "the secret is not named:\n{err}");
    assert!(err.contains("not set"), "{err}");
    assert!(
        !project.exists("ran"),
        "a stage ran although a secret is missing"
    );
}

#[test]
fn a_stage_secret_is_needed_only_when_that_stage_is_selected() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  publish: { run: touch published, secrets: [PUBLISH_KEY] }\n",
        "  other: { run: touch other }\n",
    ));
    let output = project
        .cmd(&["run"])
        .env_remove("PUBLISH_KEY")
        .output()
        .expect("run pydeployer");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("publish") && err.contains("PUBLISH_KEY"),
        "the stage and its secret are not named:\n{err}"
    );
    assert!(!project.exists("published") && !project.exists("other"));

    let output = project
        .cmd(&["run", "--only", "other"])
        .env_remove("PUBLISH_KEY")
        .output()
        .expect("run pydeployer");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(project.exists("other") && !project.exists("published"));
}

/// `pydeployer ARGS…` with git never asking for a password: (exit code, stdout, stderr).
fn run_without_prompts(project: &Project, args: &[&str]) -> (Option<i32>, String, String) {
    let output = project
        .cmd(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .timeout(HANG_GUARD)
        .output()
        .expect("run pydeployer");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn credentials_in_the_repository_url_are_never_shown() {
    let project = Project::with_pipeline(concat!(
        "repo: { url: \"https://user:tok3n-abcdef@127.0.0.1:9/x.git\" }\n",
        "stages:\n",
        "  clone: { uses: git/clone }\n",
    ));
    for args in [
        &["plan"][..],
        &["plan", "--format", "json"][..],
        &["run", "-v"][..],
        &["run", "--format", "json"][..],
    ] {
        let (code, out, err) = run_without_prompts(&project, args);
        if args[0] == "plan" {
            assert_eq!(code, Some(0), "{args:?}: {err}");
            assert!(
                out.contains("https://user:***@127.0.0.1:9/x.git"),
                "{args:?}: plan does not show the masked URL:\n{out}"
            );
            assert!(
                out.contains("clone"),
                "{args:?}: plan does not show the stage:\n{out}"
            );
        } else {
            // Nothing listens on port 9: the clone fails, which is fine here.
            assert_eq!(code, Some(1), "{args:?}: {err}");
        }
        assert!(
            !out.contains("tok3n-abcdef"),
            "{args:?}: stdout leaks:\n{out}"
        );
        assert!(
            !err.contains("tok3n-abcdef"),
            "{args:?}: stderr leaks:\n{err}"
        );
    }
    let log = project.last_log();
    assert!(!log.contains("tok3n-abcdef"), "the log leaks:\n{log}");
    assert!(log.contains("[clone]"), "{log}");
}

#[test]
fn a_token_in_the_user_name_of_the_repository_url_is_never_shown() {
    // GitHub's documented form: `https://TOKEN:x-oauth-basic@github.com/…`.
    let token = "ghp_0123456789abcdefghijKLMN";
    let project = Project::with_pipeline(&format!(
        "repo: {{ url: \"https://{token}:x-oauth-basic@127.0.0.1:9/x.git\" }}\nstages:\n  clone: {{ uses: git/clone }}\n"
    ));
    for args in [&["plan"][..], &["plan", "--format", "json"], &["run", "-v"]] {
        let (_, out, err) = run_without_prompts(&project, args);
        assert!(!out.contains(token), "{args:?}: stdout leaks:\n{out}");
        assert!(!err.contains(token), "{args:?}: stderr leaks:\n{err}");
    }
    let log = project.last_log();
    assert!(!log.contains(token), "the log leaks:\n{log}");
}

#[test]
fn an_ssh_account_in_the_repository_url_is_not_taken_for_a_secret() {
    // `ssh://deploy@server/…` names an account: masking it would hide every `deploy` in the
    // output, the stage's own name included.
    let project = Project::with_pipeline(concat!(
        "repo: { url: \"ssh://deploy@127.0.0.1:9/x.git\" }\n",
        "stages:\n",
        "  clone: { uses: git/clone }\n",
        "  deploy: { uses: git/push, needs: [clone] }\n",
    ));
    let (code, out, err) = project.run(&["plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ssh://deploy@127.0.0.1:9/x.git"), "{out}");
    assert!(!out.contains("***"), "{out}");
}

#[test]
fn credentials_with_json_special_characters_are_masked_in_the_json_plan() {
    let project = Project::with_pipeline(concat!(
        "repo: { url: 'https://u:to\"ken\\abc-zz@127.0.0.1:9/x.git' }\n",
        "stages:\n",
        "  clone: { uses: git/clone }\n",
    ));
    let (code, out, err) = project.run(&["plan", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).expect("the plan is JSON");
    let text = plan.to_string();
    assert!(!text.contains("abc-zz"), "{text}");
    assert!(text.contains("u:***@"), "{text}");
}

#[test]
fn a_secret_given_its_value_in_env_is_masked_too() {
    let project = Project::with_pipeline(concat!(
        "secrets: [DEPLOY_KEY]\n",
        "env: { DEPLOY_KEY: value-from-yaml-123 }\n",
        "stages:\n",
        "  show: { run: 'echo \"key=$DEPLOY_KEY\"' }\n",
    ));
    let output = project
        .cmd(&["run", "-v"])
        .env_remove("DEPLOY_KEY")
        .timeout(HANG_GUARD)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    assert!(err.contains("key=***"), "{err}");
    assert!(!project.last_log().contains("value-from-yaml-123"));
}

#[test]
fn a_secret_printed_in_pieces_by_an_interactive_stage_is_masked_and_its_prompt_shown() {
    // An interactive stage's output is handed on as it is read, so the pieces reach the
    // masker separately: the stream must hold back the start of the secret, and only that.
    let project = Project::with_pipeline(concat!(
        "secrets: [MY_TOKEN]\n",
        "stages:\n",
        "  ask:\n",
        "    interactive: true\n",
        "    run: 'printf \"Password: \"; read -r x; printf \"%s\" \"${MY_TOKEN%%V*}\"; sleep 0.2; printf \"%s\\n\" \"${MY_TOKEN#*-}\"'\n",
    ));
    let output = project
        .cmd(&["run"])
        .env("MY_TOKEN", "s3cr3t-Value_42")
        .write_stdin("typed\n")
        .timeout(HANG_GUARD)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    assert!(err.contains("Password: "), "{err}");
    assert!(err.contains("***"), "{err}");
    assert!(
        !err.contains("s3cr3t") && !err.contains("Value_42"),
        "{err}"
    );
    let log = project.last_log();
    assert!(
        !log.contains("s3cr3t") && !log.contains("Value_42"),
        "{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Terminal safety
// ---------------------------------------------------------------------------------------------

#[test]
fn escape_sequences_are_shown_escaped_and_logged_raw() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  esc: { run: \"printf '\\\\033]0;pwned-title\\\\007\\\\033[2J\\\\033[1Afake line\\\\n'\" }\n",
    ));
    let output = project
        .cmd(&["run", "-v"])
        .output()
        .expect("run pydeployer");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(
        !output.stderr.contains(&0x1b),
        "raw ESC on the terminal:\n{err:?}"
    );
    assert!(
        !output.stderr.contains(&0x07),
        "raw BEL on the terminal:\n{err:?}"
    );
    assert!(!output.stdout.contains(&0x1b) && !output.stdout.contains(&0x07));
    assert!(
        err.contains(r"[esc] \x1b]0;pwned-title\x07\x1b[2J\x1b[1Afake line"),
        "the stage's line is not shown escaped:\n{err}"
    );
    let log = last_log_bytes(&project);
    assert!(
        contains(
            &log,
            b"[esc] \x1b]0;pwned-title\x07\x1b[2J\x1b[1Afake line\n"
        ),
        "the log does not keep the raw bytes:\n{}",
        String::from_utf8_lossy(&log)
    );
}

// ---------------------------------------------------------------------------------------------
// Odd output
// ---------------------------------------------------------------------------------------------

#[test]
fn binary_output_and_nul_bytes_are_logged_raw() {
    let project = Project::with_pipeline(
        "stages:\n  bin: { run: \"head -c 100000 /dev/urandom; printf 'a\\\\0b\\\\n'\" }\n",
    );
    let output = run_verbose(&project);
    assert!(
        !output.stderr.contains(&0) && !output.stderr.contains(&0x1b),
        "raw NUL or ESC of random output reached the terminal"
    );
    let log = last_log_bytes(&project);
    assert!(
        contains(&log, b"a\0b\n"),
        "the NUL line is not in the log raw"
    );
}

#[test]
fn invalid_utf8_is_shown_replaced_and_logged_raw() {
    let project =
        Project::with_pipeline("stages:\n  bad: { run: \"printf '\\\\377\\\\376 bad\\\\n'\" }\n");
    let output = run_verbose(&project);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        std::str::from_utf8(&output.stderr).is_ok(),
        "the terminal got invalid UTF-8: {err:?}"
    );
    assert!(err.contains("[bad] \u{fffd}\u{fffd} bad"), "{err}");
    let log = last_log_bytes(&project);
    assert!(
        contains(&log, b"[bad] \xff\xfe bad\n"),
        "not raw in the log"
    );
}

/// `run -v`, which must succeed without a panic.
fn run_verbose(project: &Project) -> std::process::Output {
    let output = project
        .cmd(&["run", "-v"])
        .output()
        .expect("run pydeployer");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    output
}

/// Runs `stage_yaml` (one stage) under `/usr/bin/time`: it must succeed without a panic, the
/// log must hold at least `min_log` bytes, and the runner's peak memory stay bounded.
fn assert_streams_in_bounded_memory(stage_yaml: &str, min_log: u64, what: &str) {
    let project = Project::with_pipeline(&format!("stages:\n  {stage_yaml}\n"));
    let (code, err, rss) = run_measured(&project, &["run"]);
    eprintln!("peak RSS: {rss} KiB");
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let len = last_log_len(&project);
    assert!(len >= min_log, "the log holds {len} bytes");
    assert!(
        rss < MAX_RSS_KIB,
        "peak RSS {rss} KiB for {what} (limit {MAX_RSS_KIB} KiB)"
    );
}

#[test]
fn a_100_mb_line_without_newline_streams_in_bounded_memory() {
    assert_streams_in_bounded_memory(
        "long: { run: \"head -c 100000000 /dev/zero | tr '\\\\0' x\" }",
        100_000_000,
        "a 100 MB line",
    );
}

#[test]
fn carriage_return_progress_is_logged_raw() {
    let project = Project::with_pipeline(
        "stages:\n  progress: { run: \"for i in 1 2 3; do printf '\\\\r%s%%' $i; done\" }\n",
    );
    let output = run_verbose(&project);
    assert!(!output.stderr.contains(&b'\r'), "raw \\r on the terminal");
    let log = last_log_bytes(&project);
    for step in [&b"\r1%"[..], b"\r2%", b"\r3%"] {
        assert!(
            contains(&log, step),
            "{:?} not in the log:\n{:?}",
            String::from_utf8_lossy(step),
            String::from_utf8_lossy(&log)
        );
    }
}

#[test]
fn hundreds_of_megabytes_on_stdout_and_stderr_at_once_do_not_deadlock_or_grow_memory() {
    assert_streams_in_bounded_memory(
        "flood: { run: 'head -c 300000000 /dev/zero & head -c 300000000 /dev/zero >&2; wait' }",
        600_000_000,
        "2 × 300 MB of output",
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile values
// ---------------------------------------------------------------------------------------------

#[test]
fn stage_names_that_could_escape_a_folder_are_refused() {
    for name in ["a/b", "..", ".hidden", "a b", "../../etc/x"] {
        let project =
            Project::with_pipeline(&format!("stages:\n  \"{name}\": {{ run: touch ran }}\n"));
        let before = project.tree();
        for command in ["validate", "run"] {
            let (code, _, err) = project.run(&[command]);
            assert_eq!(code, 2, "{command} with stage {name:?}: {err}");
            assert!(
                err.contains("stage name"),
                "{command} with stage {name:?} does not name the problem:\n{err}"
            );
            assert_eq!(
                project.tree(),
                before,
                "{command} with stage {name:?} created files"
            );
        }
    }
}

#[test]
fn a_stage_cannot_take_the_runners_own_tag_in_the_log() {
    let project = Project::with_pipeline("stages:\n  pydeployer: { run: echo 'exit code 0' }\n");
    let (code, _, err) = project.run(&["validate"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`pydeployer` is reserved"), "{err}");
}

#[test]
fn invalid_env_keys_are_refused() {
    for key in ["BAD-KEY", "A=B"] {
        for yaml in [
            format!("env: {{ \"{key}\": x }}\nstages:\n  a: {{ run: touch ran }}\n"),
            format!("stages:\n  a: {{ run: touch ran, env: {{ \"{key}\": x }} }}\n"),
        ] {
            let project = Project::with_pipeline(&yaml);
            for command in ["validate", "run"] {
                let (code, _, err) = project.run(&[command]);
                assert_eq!(code, 2, "{command} with\n{yaml}\n{err}");
                assert!(
                    err.contains(key) && err.contains("environment variable name"),
                    "{command} does not name {key:?}:\n{err}"
                );
                assert!(!project.exists("ran"));
            }
        }
    }
}

/// A project with a bare `origin.git` (one commit), an unrelated repository `other` (one commit
/// and an uncommitted change) and an empty bare `elsewhere.git`.
fn project_with_decoy_repositories(extra_top: &str) -> Project {
    let project = Project::new();
    let origin = project.join("origin.git");
    let other = project.join("other");
    let pipeline = format!(
        "{extra_top}repo: {{ url: \"{}\" }}\n\
         stages:\n  \
           clone: {{ uses: git/clone }}\n  \
           change: {{ run: 'echo hello > added.txt', needs: [clone] }}\n  \
           build: {{ uses: git/commit, needs: [clone, change] }}\n  \
           deploy: {{ uses: git/push, needs: [build] }}\n",
        origin.display()
    );
    project
        .file("pipeline.yml", &pipeline)
        .file("seed/app.py", "print('hi')\n")
        .file("other/decoy.txt", "decoy\n");
    let seed = project.join("seed");
    git(
        project.path(),
        &["init", "-q", "--bare", "-b", "master", "origin.git"],
    );
    git(
        project.path(),
        &["init", "-q", "--bare", "-b", "master", "elsewhere.git"],
    );
    git(&seed, &["init", "-q", "-b", "master"]);
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "-q", "-m", "first"]);
    git(&seed, &["push", "-q", "../origin.git", "master"]);
    git(&other, &["init", "-q", "-b", "master"]);
    git(&other, &["add", "-A"]);
    git(&other, &["commit", "-q", "-m", "decoy"]);
    git(
        &other,
        &[
            "remote",
            "add",
            "origin",
            &project.join("elsewhere.git").display().to_string(),
        ],
    );
    project.file("other/untracked.txt", "untracked\n");
    project
}

/// Everything about a repository a misdirected git call could change.
fn repository_state(dir: &Path) -> Vec<String> {
    vec![
        git(dir, &["rev-parse", "HEAD"]),
        git(dir, &["log", "--all", "--format=%H %s"]),
        git(dir, &["status", "--porcelain", "--untracked-files=all"]),
        git(dir, &["config", "--get", "remote.origin.url"]),
        git(dir, &["for-each-ref"]),
    ]
}

fn assert_git_went_to_the_workspace(project: &Project, other_before: &[String], err: &str) {
    let origin = project.join("origin.git");
    let files = git(&origin, &["ls-tree", "--name-only", "master"]);
    assert!(
        files.contains("added.txt") && files.contains("app.py"),
        "the build was not pushed to the configured origin: {files}\n{err}"
    );
    assert_eq!(
        repository_state(&project.join("other")),
        other_before,
        "the other repository changed"
    );
    assert_eq!(
        git(&project.join("elsewhere.git"), &["for-each-ref"]),
        "",
        "something was pushed to the GIT_CONFIG remote"
    );
    let workspace = project.join("workspace");
    assert_eq!(
        git(&workspace, &["log", "-1", "--format=%H", "master"]),
        git(&origin, &["rev-parse", "master"]),
        "the workspace's commit is not the one on origin"
    );
}

#[test]
fn git_variables_in_the_runner_environment_do_not_redirect_built_in_git() {
    let project = project_with_decoy_repositories("");
    let other = project.join("other");
    let before = repository_state(&other);
    let output = project
        .cmd(&["run"])
        .env("GIT_DIR", other.join(".git"))
        .env("GIT_WORK_TREE", &other)
        .env("GIT_INDEX_FILE", other.join(".git/index"))
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "remote.origin.url")
        .env("GIT_CONFIG_VALUE_0", project.join("elsewhere.git"))
        .timeout(HANG_GUARD)
        .output()
        .expect("run pydeployer");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert_git_went_to_the_workspace(&project, &before, &err);
}

#[test]
fn git_dir_in_the_pipeline_env_does_not_redirect_built_in_git() {
    let project = project_with_decoy_repositories("");
    let other = project.join("other");
    // The pipeline's `env:` names the other repository (a path known only once it exists).
    let pipeline = project.read("pipeline.yml");
    project.file(
        "pipeline.yml",
        &format!(
            "env: {{ GIT_DIR: \"{}\", GIT_WORK_TREE: \"{}\" }}\n{pipeline}",
            other.join(".git").display(),
            other.display()
        ),
    );
    let before = repository_state(&other);
    let output = project
        .cmd(&["run"])
        .timeout(HANG_GUARD)
        .output()
        .expect("run pydeployer");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert_git_went_to_the_workspace(&project, &before, &err);
}

#[test]
fn yaml_nested_1000_levels_deep_is_refused() {
    let depth = 1000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let project = Project::with_pipeline("stages:\n  a: { run: 'true' }\n");
    project.file("stages.d/10-deep.yml", &format!("deep:\n  run: {nested}\n"));
    let output = project
        .cmd(&["validate"])
        .timeout(HANG_GUARD)
        .output()
        .expect("run pydeployer");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("10-deep.yml"), "the file is not named:\n{err}");
    // The refusal comes from the parser's depth budget, not from `run` being the wrong type.
    assert!(
        ["recursion", "nest", "depth"]
            .iter()
            .any(|word| err.to_lowercase().contains(word)),
        "the problem is not the nesting:\n{err}"
    );
}

#[test]
fn a_very_short_secret_is_masked_and_said_to_be_short() {
    let project = Project::with_pipeline("secrets: [TOK]\nstages:\n  a: { run: echo a-b-a }\n");
    let output = project.cmd(&["run"]).env("TOK", "a").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("warning: the secret TOK is shorter than 4 characters"),
        "{err}"
    );
    assert!(project.last_log().contains("***-b-***"));
}
