//! `pydeployer plan` and `run --dry-run`: the order, the waves, what is left out; nothing runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;
use common::Project;

const DIAMOND: &str = "jobs: 2\nstages:\n  a: { run: touch a }\n  b: { run: touch b, needs: [a] }\n  c: { run: touch c, needs: [a] }\n  d: { run: touch d, needs: [b, c] }\n  ship: { run: touch ship, needs: [d], when: manual }\n";

/// Runs of spaces as one, so column widths do not matter.
fn squeeze(text: &str) -> String {
    text.lines()
        .map(|l| {
            l.split(' ')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn a_diamond_shows_three_waves_and_runs_nothing() {
    let project = Project::with_pipeline(DIAMOND);
    let before = project.tree();
    let (code, out, err) = project.run(&["plan"]);
    assert_eq!(code, 0, "{err}");
    let out = squeeze(&out);
    assert!(
        out.contains("4 stages in 3 waves, up to 2 at once"),
        "{out}"
    );
    let wave = |n: usize| {
        let start = out
            .find(&format!("wave {n}\n"))
            .unwrap_or_else(|| panic!("no wave {n}: {out}"));
        let rest = &out[start + 7..];
        rest[..rest.find("wave").unwrap_or(rest.len())].to_owned()
    };
    assert!(wave(1).contains("a touch a"), "{out}");
    assert!(
        wave(2).contains("b touch b") && wave(2).contains("c touch c"),
        "{out}"
    );
    assert!(wave(3).contains("d touch d"), "{out}");
    assert!(out.contains("ship manual"), "{out}");
    assert_eq!(project.tree(), before, "plan created files");
}

#[test]
fn dry_run_is_the_plan() {
    let project = Project::with_pipeline(DIAMOND);
    let (_, plan, _) = project.run(&["plan", "--skip", "c"]);
    let (code, dry, _) = project.run(&["run", "--dry-run", "--skip", "c"]);
    assert_eq!(code, 0);
    assert_eq!(plan, dry);
    let dry = squeeze(&dry);
    assert!(dry.contains("c left out by --skip"), "{dry}");
    assert!(!project.exists("a") && !project.exists("logs"));
}

#[test]
fn json_plan_parses_and_has_the_waves() {
    let project = Project::with_pipeline(DIAMOND);
    let (code, out, err) = project.run(&["plan", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(plan["waves"], serde_json::json!([["a"], ["b", "c"], ["d"]]));
    assert_eq!(plan["jobs"], 2);
    assert_eq!(plan["stages"][3]["name"], "d");
    assert_eq!(plan["stages"][3]["needs"], serde_json::json!(["b", "c"]));
    assert_eq!(plan["not_run"][0]["name"], "ship");
    assert_eq!(plan["not_run"][0]["reason"], "manual");
}

#[test]
fn an_unknown_stage_on_the_command_line_is_exit_2_with_a_suggestion() {
    let project = Project::with_pipeline(DIAMOND);
    let (code, _, err) = project.run(&["plan", "--only", "shpi"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`shpi` is not a stage") && err.contains("did you mean `ship`?"),
        "{err}"
    );
}

#[test]
fn two_post_stages_with_stages_after_them_do_not_wait_on_each_other() {
    // `notify` (on_failure) and `cleanup` (always) wait for the regular stages, not for the
    // stages that come after the other one: that was a cycle, and `plan` refused the pipeline
    // that `validate` passed.
    let project = Project::with_pipeline(concat!(
        "stages:\n",
        "  test: { run: 'true' }\n",
        "  notify: { run: 'true', when: on_failure }\n",
        "  ticket: { run: 'true', needs: [notify] }\n",
        "  cleanup: { run: 'true', when: always }\n",
        "  report: { run: 'true', needs: [cleanup] }\n",
    ));
    let (code, _, err) = project.run(&["validate"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = project.run(&["plan", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let wave = |name: &str| {
        plan["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["wave"].as_u64().unwrap())
            .unwrap()
    };
    assert_eq!(wave("test"), 1, "{out}");
    assert_eq!(wave("notify"), 2, "{out}");
    assert_eq!(wave("cleanup"), 2, "{out}");
    assert_eq!(wave("ticket"), 3, "{out}");
    assert_eq!(wave("report"), 3, "{out}");
    let (code, _, err) = project.run(&["run"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn from_a_subfolder_the_project_is_found_upward() {
    let project = Project::with_pipeline("name: app\nstages:\n  a: { run: pwd }\n");
    std::fs::create_dir_all(project.join("src/deep")).unwrap();
    let in_sub = |args: &[&str]| {
        let output = project
            .cmd(args)
            .current_dir(project.join("src/deep"))
            .output()
            .unwrap();
        (
            output.status.code().unwrap(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, out, err) = in_sub(&["plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Plan for app"), "{out}");
    // The run happens at the project's root: its log is there, and the stage runs there.
    let (code, _, err) = in_sub(&["run"]);
    assert_eq!(code, 0, "{err}");
    let log = project.last_log();
    let root = std::fs::canonicalize(project.path()).unwrap();
    assert!(log.contains(&format!("[a] {}", root.display())), "{log}");
    assert!(!project.join("src/deep/logs").exists());
    // No pipeline.yml anywhere above: the error names `init`.
    let empty = tempfile::TempDir::new().unwrap();
    let output = project
        .cmd(&["plan"])
        .current_dir(empty.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("pydeployer init"));
}
