//! `pydeployer validate` and every command's refusal of a bad pipeline: exit 2, the file and
//! line of each problem, and nothing run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;
use std::fmt::Write as _;

use common::Project;

/// Runs `validate`, expects exit 2, returns stderr.
fn invalid(project: &Project) -> String {
    let (code, _, stderr) = project.run(&["validate"]);
    assert_eq!(code, 2, "expected exit 2, stderr:\n{stderr}");
    stderr
}

#[test]
fn a_valid_pipeline_passes() {
    let project = Project::with_pipeline(
        "stages:\n  a: { run: echo a }\n  b: { run: [echo, b], needs: [a] }\n",
    );
    let (code, stdout, stderr) = project.run(&["validate"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("2 stages, no problems"), "{stdout}");
}

#[test]
fn yaml_syntax_error_names_file_and_line() {
    let project = Project::with_pipeline("stages:\n  a:\n    run: [echo, a\n  b: { run: echo }\n");
    let err = invalid(&project);
    assert!(err.contains("invalid YAML"), "{err}");
    assert!(err.contains("pipeline.yml:"), "{err}");
    // The snippet points where the message says, not at the top of the file.
    let project = Project::with_pipeline("name: p\nstages:\n  a: { run: \"echo a }\n");
    let err = invalid(&project);
    assert!(err.contains("line 3, column 13"), "{err}");
    assert!(err.contains("pipeline.yml:3:13"), "{err}");
    let project = Project::with_pipeline("name: p\nstages:\n\ta: { run: x }\n");
    let err = invalid(&project);
    assert!(err.contains("pipeline.yml:3:"), "{err}");
}

#[test]
fn unknown_key_suggests_the_closest() {
    let project = Project::with_pipeline("stages:\n  a:\n    run: echo a\n    neds: [b]\n");
    let err = invalid(&project);
    assert!(err.contains("unknown stage key `neds`"), "{err}");
    assert!(err.contains("did you mean `needs`?"), "{err}");
    assert!(err.contains("pipeline.yml:4:5"), "{err}");
}

#[test]
fn wrong_type_is_reported_at_the_value() {
    let project = Project::with_pipeline("stages:\n  a:\n    run: echo a\n    retries: lots\n");
    let err = invalid(&project);
    assert!(
        err.contains("`retries` must be a whole number, not a string"),
        "{err}"
    );
    assert!(err.contains("pipeline.yml:4:14"), "{err}");
}

#[test]
fn duplicate_stage_across_files_shows_both_places() {
    let project = Project::with_pipeline("stages:\n  test: { run: pytest }\n");
    project.file(
        "stages.d/10-more.yml",
        "lint: { run: ruff }\ntest: { run: pytest -x }\n",
    );
    let err = invalid(&project);
    assert!(err.contains("stage `test` is declared twice"), "{err}");
    assert!(err.contains("10-more.yml:2:1"), "{err}");
    assert!(err.contains("pipeline.yml:2:3"), "{err}");
}

#[test]
fn unknown_need_suggests_a_stage() {
    let project = Project::with_pipeline(
        "stages:\n  build: { run: make }\n  test: { run: pytest, needs: [biuld] }\n",
    );
    let err = invalid(&project);
    assert!(err.contains("needs `biuld`, which does not exist"), "{err}");
    assert!(err.contains("did you mean `build`?"), "{err}");
    assert!(err.contains("pipeline.yml:3:32"), "{err}");
}

#[test]
fn a_cycle_names_every_stage_and_each_closing_need() {
    let project = Project::with_pipeline(
        "stages:\n  a: { run: x, needs: [c] }\n  b: { run: x, needs: [a] }\n  c: { run: x, needs: [b] }\n",
    );
    let err = invalid(&project);
    assert!(err.contains("a → c → b → a"), "{err}");
    for label in ["`a` needs `c`", "`c` needs `b`", "`b` needs `a`"] {
        assert!(err.contains(label), "missing {label}: {err}");
    }
    assert!(err.contains("pipeline.yml:2:"), "{err}");
}

#[test]
fn run_and_uses_both_or_neither() {
    let project = Project::with_pipeline(
        "stages:\n  both: { run: pytest, uses: pytest }\n  neither: { needs: [both] }\n",
    );
    let err = invalid(&project);
    assert!(
        err.contains("stage `both` has both `run` and `uses`"),
        "{err}"
    );
    assert!(
        err.contains("stage `neither` has neither `run` nor `uses`"),
        "{err}"
    );
    assert!(err.contains("pipeline.yml:3:3"), "{err}");
}

#[test]
fn bad_duration_says_how_to_write_one() {
    let project = Project::with_pipeline(
        "stages:\n  a: { run: x, timeout: 10 minutes please }\n  b: { run: x, timeout: 30 }\n  c: { run: x, timeout: 400000000000y }\n",
    );
    let err = invalid(&project);
    assert!(err.contains("is not a duration"), "{err}");
    assert!(err.contains("`timeout` needs a unit"), "{err}");
    assert!(err.contains("`timeout` is at most 30 days"), "{err}");
    assert!(err.contains("pipeline.yml:3:"), "{err}");
}

#[test]
fn unknown_action_and_when_are_suggested() {
    let project =
        Project::with_pipeline("stages:\n  a: { uses: pytset }\n  b: { run: x, when: manul }\n");
    let err = invalid(&project);
    assert!(
        err.contains("unknown action `pytset`") && err.contains("did you mean `pytest`?"),
        "{err}"
    );
    assert!(
        err.contains("unknown `when` value `manul`") && err.contains("did you mean `manual`?"),
        "{err}"
    );
}

#[test]
fn five_errors_in_one_file_are_reported_together() {
    let project = Project::with_pipeline(concat!(
        "nmae: app\n",  // unknown key
        "jobs: zero\n", // wrong type
        "stages:\n",
        "  a: { run: x, timeout: forever }\n", // bad duration
        "  b: { run: x, needs: [nope] }\n",    // unknown need
        "  c: { run: x, uses: pytest }\n",     // run and uses
        "  d: { run: x, when: sometimes }\n",  // bad when
    ));
    let err = invalid(&project);
    assert!(err.contains("6 problems; nothing was run"), "{err}");
    for line in 1..=7 {
        if line != 3 {
            assert!(
                err.contains(&format!("pipeline.yml:{line}:")),
                "line {line} not named: {err}"
            );
        }
    }
}

#[test]
fn a_bad_pipeline_runs_nothing_and_creates_nothing() {
    let project =
        Project::with_pipeline("stages:\n  a: { run: touch ran }\n  b: { run: x, needs: [zz] }\n");
    let before = project.tree();
    let (code, _, _) = project.run(&["run"]);
    assert_eq!(code, 2);
    assert_eq!(project.tree(), before);
}

#[test]
fn a_missing_program_is_reported_before_anything_runs() {
    let project = Project::with_pipeline(
        "stages:\n  a: { run: touch ran }\n  b: { run: no-such-tool-xyz --flag }\n",
    );
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("stage `b`") && err.contains("`no-such-tool-xyz`, which is not found"),
        "{err}"
    );
    assert!(!project.exists("ran") && !project.exists("logs"));
}

#[test]
fn no_pipeline_file_is_a_clear_error() {
    let project = Project::new();
    let (code, _, err) = project.run(&["validate"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read pipeline.yml"), "{err}");
}

#[test]
fn an_alias_bomb_is_refused_quickly() {
    let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..30 {
        let prev = i - 1;
        let refs = vec![format!("*a{prev}"); 10].join(", ");
        writeln!(yaml, "a{i}: &a{i} [{refs}]").unwrap();
    }
    let project = Project::with_pipeline("stages: {}\n");
    project.file("stages.d/bomb.yml", &yaml);
    let err = invalid(&project);
    assert!(err.contains("bomb.yml"), "{err}");
}

#[test]
fn action_parameters_are_checked_by_name_and_type() {
    let project = Project::with_pipeline(
        "stages:\n  test:\n    uses: pytest\n    with: { allow_no_tests: maybe, arg: [-x] }\n",
    );
    let err = invalid(&project);
    assert!(
        err.contains("`with.allow_no_tests` must be true or false"),
        "{err}"
    );
    assert!(
        err.contains("`pytest` has no parameter `arg`") && err.contains("did you mean `args`?"),
        "{err}"
    );
    assert!(err.contains("pipeline.yml:4:"), "{err}");
}

#[test]
fn yaml_1_1_booleans_are_text_so_no_stays_no() {
    // The "Norway problem": YAML 1.1 read `NO` and `on` as booleans. Here only true and false
    // are (YAML 1.2), so an environment value arrives as written...
    let project = Project::with_pipeline(
        "env:\n  COUNTRY: NO\n  FEATURE: on\nstages:\n  a: { run: 'echo \"$COUNTRY $FEATURE\" > seen', env: { ANSWER: yes } }\n  b: { run: 'echo \"$ANSWER\" >> seen', needs: [a], env: { ANSWER: y } }\n",
    );
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(project.read("seen"), "NO on\ny\n");

    // ...and a flag written `yes` or `off` is refused with the way to write it.
    let project = Project::with_pipeline(
        "stages:\n  a: { run: x, allow_failure: yes }\n  b: { run: x, interactive: Off }\n",
    );
    let err = invalid(&project);
    assert!(
        err.contains("`allow_failure` must be true or false, not the text `yes`"),
        "{err}"
    );
    assert!(err.contains("write `allow_failure: true`"), "{err}");
    assert!(err.contains("write `interactive: false`"), "{err}");
    assert!(err.contains("pipeline.yml:3:"), "{err}");
}

#[test]
fn env_values_reach_the_stage_as_written() {
    // `3.10` is not `3.1`, `0022` is not `22`, `True` is not `true` (YAML would read them as
    // numbers and booleans; a variable is text).
    let project = Project::with_pipeline(concat!(
        "env: { PYTHON_VERSION: 3.10, UMASK: 0022, ID: 007, N: 1_000, E: 1e3, DEBUG: True, I: .inf }\n",
        "stages:\n",
        "  a:\n",
        "    run: 'echo \"$PYTHON_VERSION $UMASK $ID $N $E $DEBUG $I $S $Q\" > seen'\n",
        "    env:\n",
        "      S: 2.50   # a comment\n",
        "      Q: \"3.10\"\n",
    ));
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        project.read("seen"),
        "3.10 0022 007 1_000 1e3 True .inf 2.50 3.10\n"
    );
}

#[test]
fn a_stage_file_that_is_a_broken_link_or_a_folder_is_refused() {
    // Skipping it would silently drop its stages (a deploy, say).
    let project = Project::with_pipeline("stages:\n  a: { run: echo a }\n");
    project.file("stages.d/10-ok.yml", "b: { run: echo b }\n");
    std::os::unix::fs::symlink(
        "/nonexistent/deploy.yml",
        project.join("stages.d/40-deploy.yml"),
    )
    .unwrap();
    std::fs::create_dir_all(project.join("stages.d/50-dir.yaml")).unwrap();
    let err = invalid(&project);
    assert!(err.contains("40-deploy.yml is not a file"), "{err}");
    assert!(err.contains("50-dir.yaml is not a file"), "{err}");
    assert!(!project.exists("logs"), "something ran");
}

#[test]
fn a_key_given_twice_in_one_file_shows_both_places() {
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  a: { run: x }\n",
        "  b: { run: y, needs: [a], run: z }\n",
        "  a: { run: w }\n",
        "env: { X: '1', X: '2' }\n",
    ));
    let err = invalid(&project);
    assert!(err.contains("stage `a` is declared twice"), "{err}");
    assert!(err.contains("`a` first declared here"), "{err}");
    assert!(err.contains("pipeline.yml:4:"), "{err}");
    assert!(err.contains("stage key `run` is given twice"), "{err}");
    assert!(err.contains("`env` variable `X` is given twice"), "{err}");
    // Every problem of the file at once: not only the first duplicate.
    assert!(err.contains("3 problems"), "{err}");
}

#[test]
fn x_keys_hold_anchors_that_stages_merge() {
    // As in Compose files: a top-level `x-…` key is the user's own, and `<<: *anchor` merges it.
    let project = Project::with_pipeline(
        "x-defaults: &defaults\n  timeout: 1s\n  env: { GREETING: hi }\nstages:\n  a: { <<: *defaults, run: 'echo \"$GREETING\"' }\n  slow:\n    <<: *defaults\n    run: sleep 5\n    needs: [a]\n",
    );
    let (code, stdout, stderr) = project.run(&["validate"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("2 stages"), "{stdout}");
    let (code, _, stderr) = project.run(&["run"]);
    // The merged timeout holds; the merged env reaches the stage.
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("timed out after 1s"), "{stderr}");
    assert!(project.last_log().contains("[a] hi"));
    // Any other unknown top-level key is still refused.
    let project = Project::with_pipeline("y-defaults: {}\nstages:\n  a: { run: echo a }\n");
    assert!(invalid(&project).contains("unknown pipeline setting `y-defaults`"));
}

// --- What the bug hunt found (issue 12) -------------------------------------------------

#[test]
fn head_is_not_a_branch_name() {
    let project = Project::with_pipeline(
        "repo: { url: origin.git, branch: HEAD }\nstages:\n  deploy: { uses: git/push }\n",
    );
    let err = invalid(&project);
    assert!(err.contains("pipeline.yml:1"), "{err}");
    assert!(err.contains("`HEAD`"), "{err}");
}

#[test]
fn a_nul_byte_anywhere_is_refused_where_it_is() {
    let project = Project::with_pipeline(
        "env: { A: \"x\\0y\" }\nstages:\n  a: { run: \"echo \\0\" }\n  b: { run: [echo, \"\\0\"], env: { \"B\": \"\\x00\" } }\n",
    );
    let err = invalid(&project);
    assert_eq!(err.matches("x a NUL byte").count(), 4, "{err}");
    assert!(
        err.contains("pipeline.yml:1") && err.contains("pipeline.yml:3"),
        "{err}"
    );
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_pipeline_without_stages_is_refused_saying_what_to_add() {
    for yaml in ["", "name: x\n", "stages: {}\n"] {
        let project = Project::with_pipeline(yaml);
        let err = invalid(&project);
        assert!(err.contains("defines no stages"), "{yaml:?}: {err}");
        assert!(err.contains("stages:"), "{err}");
        let (code, _, _) = project.run(&["run"]);
        assert_eq!(code, 2);
    }
    // Stages from stages.d/ alone are fine.
    let project = Project::with_pipeline("name: x\n");
    project.file("stages.d/10.yml", "a: { run: 'true' }\n");
    assert_eq!(project.run(&["validate"]).0, 0);
}

#[test]
fn a_name_that_would_drive_the_terminal_is_refused() {
    for name in ["a\\e[2Jb", "abc\\u202Edcb"] {
        let project = Project::with_pipeline(&format!(
            "name: \"{name}\"\nstages:\n  a: {{ run: 'true' }}\n"
        ));
        let err = invalid(&project);
        assert!(err.contains("bidirectional-override"), "{err}");
        assert!(
            !err.contains('\u{1b}') && !err.contains('\u{202e}'),
            "{err:?}"
        );
    }
}

#[test]
fn editor_files_in_stages_d_are_not_stage_files_and_a_fifo_is_named() {
    let project = Project::with_pipeline("stages:\n  a: { run: 'true' }\n");
    project.file("stages.d/.10.yml", "broken: [\n");
    std::fs::create_dir_all(project.join("stages.d")).unwrap();
    // Emacs's lock: a symbolic link to nowhere.
    std::os::unix::fs::symlink(
        "root@host.1234:1700000000",
        project.join("stages.d/.#10.yml"),
    )
    .unwrap();
    let (code, out, err) = project.run(&["validate"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 stage"), "{out}");

    let status = std::process::Command::new("mkfifo")
        .arg(project.join("stages.d/20.yml"))
        .status()
        .unwrap();
    assert!(status.success());
    let err = invalid(&project);
    assert!(
        err.contains("20.yml is not a file: a named pipe (FIFO)"),
        "{err}"
    );
}

#[test]
fn a_file_over_the_budget_says_so_and_what_to_do() {
    let mut yaml = String::from("stages:\n  a: { run: 'true' }\nx: [");
    yaml.push_str(&vec!["1"; 200_001].join(","));
    yaml.push_str("]\n");
    let project = Project::with_pipeline(&yaml);
    let err = invalid(&project);
    assert!(
        err.contains("too large or too deep"),
        "{}",
        &err[..err.len().min(2000)]
    );
    assert!(err.contains("stages.d/"), "{}", &err[..err.len().min(2000)]);
    assert!(!err.contains("fix the YAML syntax"));
    assert!(!err.contains("panicked"));
}

#[test]
fn rollback_with_two_revert_stages_is_refused() {
    let project = Project::with_pipeline(
        "repo: { url: origin.git }\nstages:\n  r1: { uses: git/revert, when: manual }\n  r2: { uses: git/revert, when: manual }\n",
    );
    let (code, _, err) = project.run(&["rollback"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("more than one rollback stage"), "{err}");
    assert!(err.contains("`r1`") && err.contains("`r2`"), "{err}");
}

#[test]
fn a_file_that_does_not_parse_adds_no_follow_on_errors_for_the_stages_it_hid() {
    let project = Project::with_pipeline("stages:\n  deploy: { run: echo d, needs: [test] }\n");
    project.file("stages.d/10-test.yml", "test:\n  run: [echo, a\n");
    let err = invalid(&project);
    assert!(err.contains("10-test.yml"), "{err}");
    assert!(!err.contains("does not exist"), "{err}");
    assert!(err.contains("1 problem"), "{err}");
}

#[test]
fn a_cycle_of_twenty_thousand_stages_is_named_without_drawing_them_all() {
    // Finding it and showing it were quadratic (tens of seconds); the hang guard of the test
    // harness is the only clock here.
    let mut yaml = String::from("stages:\n");
    for i in 0..20_000 {
        let _ = writeln!(
            yaml,
            "  s{i}: {{ run: \"true\", needs: [s{}] }}",
            (i + 1) % 20_000
        );
    }
    let project = Project::with_pipeline(&yaml);
    let err = invalid(&project);
    assert!(
        err.contains("the stages need each other in a cycle: s0 → s1 →"),
        "{err}"
    );
    assert!(err.contains("(20000 stages in all)"), "{err}");
}
