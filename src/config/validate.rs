//! Raw YAML trees → a [`Pipeline`], collecting every problem before giving up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::load::Parsed;
use crate::config::raw::{Span, Value};
use crate::error::{Problem, SourceFile};
use crate::pipeline::{LogSettings, Pipeline, Stage};
use crate::plan::check;

pub(crate) const TOP_KEYS: [&str; 13] = [
    "name",
    "repo",
    "logs",
    "archive",
    "jobs",
    "env",
    "secrets",
    "grace_period",
    "stages",
    "version",
    "cloud",
    "notify",
    "environments",
];
/// Top-level keys with this prefix are the user's own (anchor holders), never settings.
pub(crate) const EXTENSION_PREFIX: &str = "x-";
pub(crate) const REPO_KEYS: [&str; 5] = ["url", "branch", "remote", "dir", "source"];
pub(crate) const CLOUD_KEYS: [&str; 4] = ["s3", "sns", "required", "timeout"];
pub(crate) const S3_KEYS: [&str; 4] = ["bucket", "prefix", "region", "endpoint"];
pub(crate) const SNS_KEYS: [&str; 3] = ["topic", "on", "endpoint"];
pub(crate) const NOTIFY_KEYS: [&str; 2] = ["webhook_env", "on"];
pub(crate) const ENVIRONMENT_KEYS: [&str; 5] = ["url", "branch", "requires", "approval", "health"];
pub(crate) const HEALTH_KEYS: [&str; 6] =
    ["url", "run", "expect", "contains", "timeout", "interval"];
pub(crate) const LOGS_KEYS: [&str; 2] = ["dir", "keep"];
pub(crate) const STAGE_KEYS: [&str; 16] = [
    "run",
    "uses",
    "with",
    "needs",
    "env",
    "workdir",
    "timeout",
    "retries",
    "allow_failure",
    "when",
    "description",
    "interactive",
    "secrets",
    "cache",
    "artifacts",
    "schedule",
];
pub(crate) const CACHE_KEYS: [&str; 3] = ["inputs", "env", "outputs"];
pub(crate) const ARTIFACT_KEYS: [&str; 2] = ["paths", "when"];
pub(super) const MAX_RETRIES: i64 = 100;
pub(super) const MAX_TIMEOUT: Duration = Duration::from_hours(30 * 24);

/// Where a stage was declared, for later messages.
pub(super) struct Place<'a> {
    pub(super) file: &'a SourceFile,
    pub(super) name_span: Span,
    /// The span of each `needs:` entry, parallel to the stage's `needs`.
    pub(super) need_spans: Vec<Span>,
    /// The span of the `schedule:` value, when there is one.
    pub(super) schedule_span: Option<Span>,
    /// Where `with: { environment }` is written, for a deploy stage that names one.
    pub(super) environment_span: Option<Span>,
}

/// The stages declared so far and their places, in two parallel lists: the stages become the
/// pipeline's as they are, without a copy (a pipeline can hold thousands of them).
#[derive(Default)]
pub(super) struct Declarations<'a> {
    stages: Vec<Stage>,
    places: Vec<Place<'a>>,
}

impl<'a> Declarations<'a> {
    /// Room for `more` stages: made once for a file's stages (a `Vec` that doubles while they
    /// are pushed holds two copies at once), and still grown in steps over many files.
    pub(super) fn reserve(&mut self, more: usize) {
        self.stages.reserve(more);
        self.places.reserve(more);
    }

    pub(super) fn push(&mut self, (stage, place): (Stage, Place<'a>)) {
        self.stages.push(stage);
        self.places.push(place);
    }

    fn iter(&self) -> impl Iterator<Item = (&Stage, &Place<'a>)> {
        self.stages.iter().zip(&self.places)
    }
}

/// Turns the parsed files into a pipeline, or every problem found.
pub(crate) fn validate(
    pipeline_file: &Path,
    main: Option<&Parsed>,
    stage_files: &[Parsed],
    mut problems: Vec<Problem>,
) -> Result<Pipeline, Vec<Problem>> {
    let root = match pipeline_file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // `absolute` keeps `.` and `..` (`../../pipeline.yml`, found from a subfolder): they are
    // folded away, so that the folder's own name is the pipeline's default name.
    let root = lexically_normal(&std::path::absolute(&root).unwrap_or(root));
    // A file that could not be read or parsed hides its stages: a `needs:` naming one of them
    // is not worth a second error.
    let files_unread = !problems.is_empty();
    let mut check = Checker {
        problems: &mut problems,
        root: &root,
        declared_names: Vec::new(),
    };

    let mut pipeline = Pipeline {
        name: root.file_name().map_or_else(
            || "pipeline".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        ),
        root: root.clone(),
        file: pipeline_file.to_path_buf(),
        repo: None,
        logs: LogSettings {
            dir: root.join("logs"),
            keep: 20,
        },
        archive: root.join("archive/deploy_history.json"),
        jobs: None,
        env: BTreeMap::new(),
        secrets: Vec::new(),
        grace_period: crate::pipeline::DEFAULT_GRACE,
        stages: Vec::new(),
        cloud: None,
        notify: Vec::new(),
        environments: Vec::new(),
    };
    let mut declared = Declarations::default();
    let mut environments = Vec::new();

    if let Some(main) = main
        && let Some(entries) = check.map(&main.file, &main.root, "the pipeline file")
    {
        // `x-…` keys hold YAML anchors for the stages to merge (`<<: *defaults`), as in
        // Compose files: not settings.
        // (Borrowed, not cloned: `stages:` can be thousands of stages.)
        let entries = entries
            .iter()
            .filter(|(key, _)| !key.name.starts_with(EXTENSION_PREFIX));
        check.unknown_keys(&main.file, entries.clone(), &TOP_KEYS, "pipeline setting");
        for (key, value) in entries {
            if key.name == "environments" {
                environments = check.environments(&main.file, value);
            } else {
                check.setting(&main.file, key, value, &mut pipeline, &mut declared);
            }
        }
    }
    for parsed in stage_files {
        // An empty drop-in file is harmless: nothing to add.
        if matches!(parsed.root.value, Value::Null) {
            continue;
        }
        if let Some(entries) = check.map(
            &parsed.file,
            &parsed.root,
            "a stage file (stage names as keys)",
        ) {
            declared.reserve(entries.len());
            for (key, value) in entries {
                if let Some(stage) = check.stage(&parsed.file, key, value) {
                    declared.push(stage);
                }
            }
        }
    }

    if check.declared_names.is_empty() && check.problems.is_empty() {
        // Nothing to run is a mistake (a file emptied by accident, a stages.d/ that is not
        // there), not a successful run: make, go-task and GitLab refuse it too.
        check.push(
            Problem::general(format!("{} defines no stages", pipeline_file.display())).with_help(
                format!(
                    "add stages under `stages:` (for example `test: {{ run: pytest }}`), or stage \
                 files in {}/ next to it",
                    super::load::STAGES_DIR
                ),
            ),
        );
    }
    if pipeline.repo.is_none() {
        for (stage, at) in declared.iter() {
            if let Some(action) = stage.builtin() {
                if action.is_git() {
                    check.push(
                        Problem::at(
                            at.file,
                            at.name_span,
                            format!(
                                "stage `{}` uses `{}`, which needs `repo:` in the pipeline file",
                                stage.name,
                                action.name()
                            ),
                            "needs a repository",
                        )
                        .with_help("add `repo: { url: <git URL or path> }` to pipeline.yml"),
                    );
                }
            }
        }
    }
    for (stage, at) in declared.iter() {
        if let crate::pipeline::Action::Uses(crate::pipeline::Uses::PythonPublish(params)) =
            &stage.action
            && let Some(name) = &params.token_env
            && !pipeline.secrets.contains(name)
            && !stage.secrets.contains(name)
        {
            check.push(
                Problem::at(
                    at.file,
                    at.name_span,
                    format!(
                        "stage `{}` uploads with the token in `{name}`, which is not listed under `secrets:`",
                        stage.name
                    ),
                    "token not a secret",
                )
                .with_help(format!(
                    "add `secrets: [{name}]` to the stage: a run then stops before anything runs if it is not set, and its value never appears in any output"
                )),
            );
        }
    }
    let deploys: Vec<(String, &SourceFile, Span)> = declared
        .iter()
        .filter_map(|(stage, at)| {
            Some((
                stage.environment()?.to_owned(),
                at.file,
                at.environment_span?,
            ))
        })
        .collect();
    check.environment_links(&environments, &deploys);
    pipeline.environments = environments.into_iter().map(|(e, _)| e).collect();
    for (stage, at) in declared.iter() {
        if let (Some(span), Some(environment)) =
            (at.schedule_span, approval_environment(&pipeline, stage))
        {
            check.push(
                Problem::at(
                    at.file,
                    span,
                    format!(
                        "stage `{}` is scheduled, and deploys to `{environment}`, which needs approval",
                        stage.name
                    ),
                    "scheduled here",
                )
                .with_help(format!(
                    "a schedule never approves a deploy: remove the `schedule:`, or deploy with \
                     `pydeployer deploy {environment} --approve`"
                )),
            );
        }
    }
    let graph: Vec<check::Declared> = declared
        .iter()
        .map(|(stage, at)| check::Declared {
            name: &stage.name,
            needs: &stage.needs,
            file: at.file,
            name_span: at.name_span,
            need_spans: &at.need_spans,
        })
        .collect();
    check::duplicates(&graph, check.problems);
    check::needs(&graph, &check.declared_names, files_unread, check.problems);
    if check.problems.is_empty() {
        check::cycles(&graph, check.problems);
    }
    drop(graph);
    if problems.is_empty() {
        pipeline.stages = declared.stages;
        Ok(pipeline)
    } else {
        Err(problems)
    }
}

/// The environment needing approval (`approval: true`) that `stage` deploys to, if any: a
/// scheduled stage must not (a schedule never approves). The one place that says which
/// deploy does.
fn approval_environment<'p>(pipeline: &'p Pipeline, stage: &Stage) -> Option<&'p str> {
    let environment = pipeline.environment(stage.environment()?)?;
    environment.approval.then_some(environment.name.as_str())
}

pub(super) struct Checker<'p> {
    pub(super) problems: &'p mut Vec<Problem>,
    pub(super) root: &'p Path,
    /// Every stage name declared, also of stages with problems (so that `needs: [x]` is not
    /// reported as unknown just because `x` itself has a typo).
    pub(super) declared_names: Vec<String>,
}

impl Checker<'_> {
    pub(super) fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }
}

/// `path` without `.` and `..` components, folded as written (no symlink is resolved).
fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_are_folded_away() {
        assert_eq!(
            lexically_normal(Path::new("/tmp/app/sub/deeper/../..")),
            PathBuf::from("/tmp/app")
        );
        assert_eq!(
            lexically_normal(Path::new("/tmp/app/.")),
            PathBuf::from("/tmp/app")
        );
    }
}
