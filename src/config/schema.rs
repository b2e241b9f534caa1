//! A JSON Schema of `pipeline.yml` and of a `stages.d/` file, for editors (`pydeployer schema`).
//!
//! The configuration is read by hand from a spanned tree (see `validate.rs`), so there are no
//! serde structs to derive a schema from. The types here only describe the YAML: they are never
//! built, only handed to schemars, and their doc comments become the schema's descriptions. The
//! key lists, the built-in actions and their `with:` parameters, and the `when` values come from
//! the same constants the validator uses; the unit tests below check that they agree.
//!
//! Draft-07, because the YAML language server (VS Code's YAML extension, and the editors that
//! embed it) validates draft-07 and not the newer drafts.

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::transform::{RecursiveTransform, Transform};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value, json};

use crate::pipeline::{Builtin, NotifyOn, Param, When};

/// Which file the schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    /// `pipeline.yml`: the settings, and optional inline `stages:`.
    Pipeline,
    /// A `stages.d/*.yml` file: stage names as keys.
    StagesFile,
}

/// The schema, as pretty JSON.
pub fn schema_json(kind: SchemaKind) -> String {
    let schema = schema(kind);
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

/// The schema of `kind` (draft-07).
pub fn schema(kind: SchemaKind) -> Schema {
    let generator = SchemaSettings::draft07()
        .with_transform(RecursiveTransform(unwrap_descriptions))
        .into_generator();
    let mut root = match kind {
        SchemaKind::Pipeline => generator.into_root_schema_for::<PipelineFile>(),
        SchemaKind::StagesFile => generator.into_root_schema_for::<StagesFile>(),
    };
    // A file holding only comments is an empty document (null), which `validate` accepts.
    if root.get("type") == Some(&Value::String("object".into())) {
        root.insert("type".into(), Value::from(vec!["object", "null"]));
    }
    if kind == SchemaKind::Pipeline {
        // `x-…` keys are the user's own: anchors for stages to merge (`<<: *defaults`).
        let pattern = format!("^{}", super::validate::EXTENSION_PREFIX);
        root.insert(
            "patternProperties".into(),
            serde_json::json!({ pattern: { "description": "ignored by pydeployer: a place for YAML anchors" } }),
        );
    }
    root
}

/// Doc comments are wrapped at 100 columns; a description is one paragraph, so that editors
/// show it as the text wraps in their hover box, not as the source did.
fn unwrap_descriptions(schema: &mut Schema) {
    if let Some(Value::String(text)) = schema.get_mut("description") {
        *text = text
            .split("\n\n")
            .map(|paragraph| {
                paragraph
                    .split('\n')
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n\n");
    }
}

/// Optional keys are `Option`s, which schemars also lets be `null`; the validator refuses
/// `key: ~` except where an empty mapping is meant (`env:`, `logs:`, `stages:`, `with:` with
/// nothing under them). This takes `null` away from every other property.
#[derive(Clone, Copy)]
struct NotNull {
    /// Properties that keep `null`.
    except: &'static [&'static str],
}

impl Transform for NotNull {
    fn transform(&mut self, schema: &mut Schema) {
        let Some(Value::Object(properties)) = schema.get_mut("properties") else {
            return;
        };
        for (name, property) in properties.iter_mut() {
            if !self.except.contains(&name.as_str()) {
                remove_null(property);
            }
        }
    }
}

fn remove_null(schema: &mut Value) {
    let Value::Object(object) = schema else {
        return;
    };
    // `"type": ["string", "null"]` → `"type": "string"`
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            object.insert("type".into(), only);
        }
    }
    // `"enum": [a, b, null]` → `"enum": [a, b]`
    if let Some(Value::Array(values)) = object.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    // `"anyOf": [X, {"type": "null"}]` → X (keeping this schema's own description)
    if let Some(Value::Array(any_of)) = object.get_mut("anyOf") {
        any_of.retain(|s| s.get("type").is_none_or(|t| t != "null"));
        if any_of.len() == 1 {
            let Some(Value::Object(only)) = object
                .remove("anyOf")
                .and_then(|mut a| a.get_mut(0).map(Value::take))
            else {
                return;
            };
            for (key, value) in only {
                object.entry(key).or_insert(value);
            }
        }
    }
}

/// `pipeline.yml`: the pipeline's settings. Stages go under `stages:` here or in `stages.d/*.yml`
/// files next to it (their own schema: `pydeployer schema --stages-file`).
#[derive(JsonSchema)]
#[schemars(
    title = "pydeployer pipeline.yml",
    deny_unknown_fields,
    transform = NotNull { except: &["env", "logs", "stages"] }
)]
#[allow(dead_code)]
pub(crate) struct PipelineFile {
    /// The format's version; only `1` exists, and leaving it out means `1`.
    #[schemars(range(min = 1, max = 1))]
    version: Option<i64>,
    /// The pipeline's name in logs and messages; default: the name of the folder holding
    /// pipeline.yml.
    #[schemars(regex(pattern = r"\S"))]
    name: Option<String>,
    /// The git repository the stages work on. Without it, stages run in the project root.
    repo: Option<RepoSettings>,
    /// Where run logs go, and how many are kept. Default: `{ dir: logs, keep: 20 }`.
    logs: Option<LogsSettings>,
    /// The deploy ledger (a JSON file), relative to pipeline.yml. Default:
    /// `archive/deploy_history.json`.
    #[schemars(regex(pattern = r"\S"))]
    archive: Option<String>,
    /// How many stages run at once. Default: the number of CPUs. `-j N` on the command line
    /// wins.
    #[schemars(range(min = 1, max = 1024))]
    jobs: Option<i64>,
    /// Environment variables for every stage (a stage's own `env:` adds to and overrides
    /// these). Numbers and booleans are passed as written (`3.10` stays `3.10`).
    env: Option<Env>,
    /// Names of environment variables every run needs (set in your environment, or by `env:`);
    /// their values never appear in any output: terminal, log, JSON, ledger.
    secrets: Option<Vec<EnvName>>,
    /// Between TERM and KILL when a stage is stopped (timeout, Ctrl-C), e.g. `5s`. Default:
    /// `5s`.
    grace_period: Option<Duration>,
    /// Stages declared inline (stage name → stage); `stages.d/*.yml` files add more.
    stages: Option<Stages>,
    /// After every run: its log, the ledger and a JSON summary uploaded to S3, and an SNS
    /// message on the events of `sns.on`. Credentials come from AWS's chain (environment,
    /// `AWS_PROFILE`, `~/.aws/`), never from this file.
    cloud: Option<CloudSettings>,
    /// Webhooks told of the run's events: a JSON POST to the URL held by an environment
    /// variable.
    notify: Option<Vec<NotifyEntry>>,
    /// Where deploy stages push (`with: { environment: NAME }`): name → a git URL and branch,
    /// what must be live first (`requires`), an approval, and a health check after each push.
    environments: Option<std::collections::BTreeMap<String, EnvironmentSettings>>,
}

/// One environment.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, transform = NotNull { except: &[] })]
#[allow(dead_code)]
struct EnvironmentSettings {
    /// Any git URL to push to (a bare repository with a post-receive hook, Dokku, Heroku,
    /// `ssh://deploy@vps/srv/app.git`), or a path relative to pipeline.yml.
    #[schemars(required, regex(pattern = r"^(?!-|ext::|fd::).*\S"))]
    url: String,
    /// The branch pushed to. Default: `master`.
    #[schemars(regex(pattern = r"^(?!-)[^\s~^:?*\[\\]+$"))]
    branch: Option<String>,
    /// Another environment: only a commit live and healthy there is deployed here
    /// (`pydeployer deploy NAME` promotes it).
    requires: Option<String>,
    /// `true`: a person says yes first (asked on a terminal; `deploy NAME --approve`
    /// otherwise). Default: `false`.
    approval: Option<bool>,
    /// Checked after each push; unhealthy: rolled back at once to the last healthy deploy.
    health: Option<HealthSettings>,
}

/// A health check: an HTTP GET (`url`) or a command (`run`).
#[derive(JsonSchema)]
#[schemars(
    deny_unknown_fields,
    transform = NotNull { except: &[] },
    extend("oneOf" = [
        { "required": ["url"], "not": { "required": ["run"] } },
        { "required": ["run"], "not": { "required": ["url"] } },
    ])
)]
#[allow(dead_code)]
struct HealthSettings {
    /// GET this `http://` or `https://` URL until it answers `expect`.
    #[schemars(regex(pattern = r"^https?://[^\s/?#]+"))]
    url: Option<String>,
    /// A command (`sh -c`, in the workspace) run until it exits 0.
    run: Option<String>,
    /// The HTTP status of a healthy answer. Default: 200.
    #[schemars(range(min = 100, max = 599))]
    expect: Option<i64>,
    /// Text a healthy answer's body holds.
    contains: Option<String>,
    /// How long the check may take before the deploy is unhealthy. Default: `60s`.
    timeout: Option<Duration>,
    /// Between tries. Default: `2s`.
    interval: Option<Duration>,
}

/// `cloud:`: S3, SNS, or both.
#[derive(JsonSchema)]
#[schemars(
    deny_unknown_fields,
    transform = NotNull { except: &[] },
    extend("anyOf" = [{ "required": ["s3"] }, { "required": ["sns"] }])
)]
#[allow(dead_code)]
struct CloudSettings {
    /// Where each run's log (`PREFIX/logs/`), the ledger (`PREFIX/archive/`) and the run's
    /// JSON summary (`PREFIX/runs/`) go.
    s3: Option<S3Settings>,
    /// The SNS topic told of the events in `on`.
    sns: Option<SnsSettings>,
    /// `true`: a send that fails fails the run (exit 1). Default: `false` (a warning; what was
    /// not sent waits in `.pydeployer/outbox/` for the next run or `pydeployer sync`).
    required: Option<bool>,
    /// The longest one request may take, start to end (at most 1h). Default: `30s`.
    timeout: Option<Duration>,
}

/// `cloud.s3`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, transform = NotNull { except: &[] })]
#[allow(dead_code)]
struct S3Settings {
    /// The bucket: 3 to 63 lowercase letters, digits, `-` and `.`.
    #[schemars(required, regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    bucket: String,
    /// Put before every key, e.g. `sample-app/`. Default: none.
    prefix: Option<String>,
    /// The bucket's region, e.g. `eu-west-3`. Default: `AWS_REGION`, the profile's region,
    /// else `us-east-1`.
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,3}$"))]
    region: Option<String>,
    /// An S3-compatible endpoint (MinIO, Ceph, moto): `http://…` or `https://…`. Default:
    /// `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, else AWS.
    #[schemars(regex(pattern = r"^https?://[^\s/?#@]+(/[^\s?#]*)?$"))]
    endpoint: Option<String>,
}

/// `cloud.sns`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, transform = NotNull { except: &[] })]
#[allow(dead_code)]
struct SnsSettings {
    /// The topic's ARN, `arn:aws:sns:REGION:ACCOUNT:NAME`.
    #[schemars(
        required,
        regex(
            pattern = r"^arn:aws(-[a-z-]+)?:sns:[a-z]{2}(-[a-z]+)+-[0-9]{1,3}:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$"
        )
    )]
    topic: String,
    /// The events that send a message. Default: `[failure]`.
    on: Option<Vec<NotifyEvent>>,
    /// An SNS-compatible endpoint: `http://…` or `https://…`. Default:
    /// `AWS_ENDPOINT_URL_SNS`, `AWS_ENDPOINT_URL`, else AWS.
    #[schemars(regex(pattern = r"^https?://[^\s/?#@]+(/[^\s?#]*)?$"))]
    endpoint: Option<String>,
}

/// One webhook.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, transform = NotNull { except: &[] })]
#[allow(dead_code)]
struct NotifyEntry {
    /// The environment variable holding the webhook's URL (a secret: masked everywhere).
    #[schemars(required)]
    webhook_env: EnvName,
    /// The events that send a POST. Default: `[failure]`.
    on: Option<Vec<NotifyEvent>>,
}

/// The repository: cloned by `git/clone` into `dir`, pushed to by `git/push`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, transform = NotNull { except: &[] })]
#[allow(dead_code)]
struct RepoSettings {
    /// A git URL (`https://…`, `ssh://…`, `git@host:path`) or a path to a repository, relative
    /// to pipeline.yml. URLs git could read as options (a leading `-`) and the `ext::`/`fd::`
    /// transports are refused.
    #[schemars(required, regex(pattern = r"^(?!-|ext::|fd::).*\S"))]
    url: String,
    /// The branch to clone and push. Default: `master`.
    #[schemars(regex(pattern = r"^(?!-)[^\s~^:?*\[\\]+$"))]
    branch: Option<String>,
    /// The remote `git/push` pushes to. Default: `origin`.
    #[schemars(regex(pattern = r"^(?!-)[^\s~^:?*\[\\]+$"))]
    remote: Option<String>,
    /// Where the clone lives, relative to pipeline.yml. Default: `workspace`.
    #[schemars(regex(pattern = r"\S"))]
    dir: Option<String>,
    /// What `git/clone` puts in the workspace: `clone` (default) clones `url`'s branch, what
    /// was pushed; `worktree` takes a snapshot of this project's own checkout as it is on disk
    /// (as `run --worktree` does).
    source: Option<RepoSource>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum RepoSource {
    Clone,
    Worktree,
}

/// Run logs: one file per run.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, transform = NotNull { except: &[] })]
#[allow(dead_code)]
struct LogsSettings {
    /// The folder of run logs, relative to pipeline.yml. Default: `logs`.
    #[schemars(regex(pattern = r"\S"))]
    dir: Option<String>,
    /// How many run logs remain after a run. Default: 20.
    #[schemars(range(min = 1, max = 100_000))]
    keep: Option<i64>,
}

/// A stage: exactly one of `run` (a command) or `uses` (a built-in action), and optional
/// settings.
#[derive(JsonSchema)]
#[schemars(
    deny_unknown_fields,
    transform = NotNull { except: &["env", "with"] },
    transform = stage_rules
)]
#[allow(dead_code)]
struct Stage {
    /// The command: a string is run by `sh -c` (or directly when it has no shell syntax); a
    /// list is run as argv, with no shell. Not with `uses`.
    run: Option<Run>,
    /// A built-in action (not with `run`): `git/clone` clones or pulls `repo.url` into
    /// `repo.dir`; `python/venv` makes `.venv` and installs `requirements.txt`; `git/commit`
    /// commits everything (`git add -A`); `pytest` runs `pytest -v` and reports the tests;
    /// `git/push` pushes to `repo.remote`/`repo.branch` and records a deploy; `git/revert`
    /// reverts the last commit and pushes it (a rollback); `python/lint` runs ruff;
    /// `python/coverage` runs pytest under coverage; `python/build` runs `python -m build`;
    /// `python/publish` uploads the built files with twine.
    uses: Option<Uses>,
    /// The built-in action's parameters (only with `uses`): `python/venv`: `requirements`,
    /// `packages`, `python`; `git/commit`: `message`; `pytest`: `args`, `allow_no_tests`;
    /// `python/lint`: `format`, `args`; `python/coverage`: `args`, `fail_under`,
    /// `allow_no_tests`; `python/publish`: `repository_url` (required), `token_env`,
    /// `skip_existing`; the other actions take none.
    with: Option<With>,
    /// Stages that must succeed first.
    needs: Option<Vec<StageName>>,
    /// Environment variables for this stage, on top of the pipeline's `env`. Numbers and
    /// booleans are passed as written (`3.10` stays `3.10`).
    env: Option<Env>,
    /// The folder to run in, relative to pipeline.yml. Default: the workspace once cloned,
    /// else the project root.
    #[schemars(regex(pattern = r"\S"))]
    workdir: Option<String>,
    /// The stage's time limit, e.g. `90s`, `10m`, `1h 30m` (at most 30 days): then its process
    /// group gets TERM, and KILL a `grace_period` later.
    timeout: Option<Duration>,
    /// Run a failed stage again, up to this many times.
    #[schemars(range(min = 0, max = 100))]
    retries: Option<i64>,
    /// `true`: a failure is reported but blocks nothing and does not fail the run.
    allow_failure: Option<bool>,
    /// When the stage runs: `on_success` (default: when every stage it needs succeeded),
    /// `on_failure` (only if something before it failed), `always`, `manual` (only when named
    /// on the command line).
    when: Option<WhenName>,
    /// One line for people (shown by `plan` and the menu).
    description: Option<String>,
    /// `true`: stdin is the terminal, output is shown as it comes, and the stage runs alone.
    interactive: Option<bool>,
    /// Names of environment variables this stage needs: a run that selects it stops before
    /// anything runs if one is not set; their values are masked like the pipeline's.
    secrets: Option<Vec<EnvName>>,
    /// Skip the stage when nothing it depends on changed since it last passed: its
    /// definition, its `inputs` (globs, relative to its folder), the `env` variables named, and
    /// the keys of the stages it needs. `outputs` must all exist for a hit.
    cache: Option<CacheSettings>,
    /// Files kept after the stage in `artifacts/<run>/<stage>/`: a list of globs (relative to
    /// the stage's folder, never outside it), or `{ paths, when: always }` to keep them from a
    /// failed stage too.
    artifacts: Option<Artifacts>,
    /// When the stage runs by itself, as a cron pattern in local time: minute hour
    /// day-of-month month day-of-week (`0 3 * * *`: every day at 3:00). A scheduled stage is
    /// left out of a plain `run`; `pydeployer schedule run` (or cron, after `schedule
    /// install`) runs it when its time comes. A sixth field in front counts seconds, for
    /// `schedule run` only.
    schedule: Option<CronPattern>,
}

/// `cache:` of a stage.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, transform = NotNull { except: &[] })]
#[allow(dead_code)]
struct CacheSettings {
    /// Globs of the files the stage reads, relative to its folder (`src/**/*.py`).
    inputs: Option<Vec<Glob>>,
    /// Environment variables whose values are part of the key.
    env: Option<Vec<EnvName>>,
    /// Globs of what the stage makes; each must match a file for a hit.
    outputs: Option<Vec<Glob>>,
}

/// `artifacts:` of a stage.
#[derive(JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code)]
enum Artifacts {
    /// Globs relative to the stage's folder.
    Paths(Vec<Glob>),
    /// Globs, and when to keep them.
    Settings(ArtifactSettings),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, transform = NotNull { except: &[] })]
#[allow(dead_code)]
struct ArtifactSettings {
    /// Globs relative to the stage's folder.
    #[schemars(required)]
    paths: Vec<Glob>,
    /// `on_success` (default) or `always` (also from a failed stage).
    when: Option<ArtifactWhen>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum ArtifactWhen {
    OnSuccess,
    Always,
}

/// A glob relative to the stage's folder: not absolute, no `..`.
struct Glob;

impl JsonSchema for Glob {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Glob".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": r"^(?![/~])(?!(.*/)?\.\.(/|$)).*\S" })
    }
}

/// A cron pattern of five fields (six with seconds first).
struct CronPattern;

impl JsonSchema for CronPattern {
    fn schema_name() -> Cow<'static, str> {
        "CronPattern".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": r"^\s*[0-9A-Za-z*,/-]+(\s+[0-9A-Za-z*,/-]+){4,5}\s*$",
            "description": "A cron pattern: minute hour day-of-month month day-of-week (`0 3 * * *`), numbers, `*`, `,`, `-`, `/` and month or weekday names.",
        })
    }
}

/// What `Stage`'s fields cannot say: exactly one of `run`/`uses`, `with` only with `uses`,
/// and each built-in action's parameters.
fn stage_rules(schema: &mut Schema) {
    schema.insert(
        "oneOf".into(),
        json!([
            { "required": ["run"], "not": { "required": ["uses"] } },
            { "required": ["uses"], "not": { "required": ["run"] } },
        ]),
    );
    schema.insert("dependencies".into(), json!({ "with": ["uses"] }));
    let rules: Vec<Value> = Builtin::ALL
        .into_iter()
        .map(|action| {
            let parameters: Map<String, Value> = action
                .parameters()
                .iter()
                .map(|(name, param)| {
                    let mut schema = match param {
                        Param::Text => json!({ "type": "string" }),
                        Param::Flag => json!({ "type": "boolean" }),
                        Param::Percent => json!({ "type": "number", "minimum": 0, "maximum": 100 }),
                        Param::Words => json!({
                            "anyOf": [
                                { "type": "string" },
                                { "type": "array", "items": { "type": "string" } },
                            ]
                        }),
                    };
                    schema["description"] = parameter_description(action, name).into();
                    ((*name).to_owned(), schema)
                })
                .collect();
            json!({
                "if": { "properties": { "uses": { "const": action.name() } }, "required": ["uses"] },
                "then": {
                    "properties": {
                        "with": {
                            "type": ["object", "null"],
                            "properties": parameters,
                            "additionalProperties": false,
                        }
                    }
                }
            })
        })
        .collect();
    schema.insert("allOf".into(), rules.into());
}

/// The description of a built-in action's `with:` parameter.
fn parameter_description(action: Builtin, name: &str) -> &'static str {
    match (action, name) {
        (Builtin::PythonVenv, "requirements") => {
            "The requirements files to install, relative to the workspace (a list, or one \
             name); default `requirements.txt` (skipped when absent, an error when named and absent)."
        }
        (Builtin::PythonVenv, "packages") => {
            "Packages to install besides the requirements, e.g. `[ruff, coverage, build, twine]`."
        }
        (Builtin::PythonLint, "format") => "`true`: also `ruff format --check`.",
        (Builtin::PythonLint, "args") => {
            "More arguments for `ruff check`: a list, or one string split at spaces."
        }
        (Builtin::PythonCoverage, "args") => {
            "More arguments for pytest (run under coverage): a list, or one string split at spaces."
        }
        (Builtin::PythonCoverage, "fail_under") => {
            "The stage fails when the total coverage is below this percentage (0 to 100)."
        }
        (Builtin::PythonPublish, "repository_url") => {
            "Required: the index's upload URL (e.g. `https://upload.pypi.org/legacy/`)."
        }
        (Builtin::PythonPublish, "token_env") => {
            "The environment variable holding the upload token (list it under `secrets:`)."
        }
        (Builtin::PythonPublish, "skip_existing") => {
            "`true`: a version already on the index is skipped instead of failing the stage."
        }
        (Builtin::PythonVenv, "python") => "The Python that creates `.venv`; default `python3`.",
        (Builtin::PythonVenv, "project") => {
            "Install the project itself into `.venv` (`pip install -e .`, from its pyproject.toml, \
             setup.cfg or setup.py)."
        }
        (Builtin::PythonVenv, "extras") => {
            "The project's extras to install with it, e.g. `[test]` (`pip install -e .[test]`); \
             implies `project: true`."
        }
        (Builtin::GitCommit, "message") => "The commit message; default `pydeployer build <date>`.",
        (Builtin::Pytest, "args") => {
            "More arguments for pytest: a list, or one string split at spaces (e.g. `[-x, tests/unit]`)."
        }
        (Builtin::GitPush, "environment") => {
            "Push to this environment (of `environments:`) instead of `repo.remote`, and run its health check."
        }
        (Builtin::Pytest | Builtin::PythonCoverage, "allow_no_tests") => {
            "`true`: collecting no tests (pytest's exit 5) is a success."
        }
        _ => "",
    }
}

/// Stage name → stage.
struct Stages;

impl JsonSchema for Stages {
    fn schema_name() -> Cow<'static, str> {
        "Stages".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let name = generator.subschema_for::<StageName>();
        let stage = generator.subschema_for::<Stage>();
        json_schema!({
            "type": "object",
            "propertyNames": name,
            "additionalProperties": stage,
        })
    }
}

/// A `stages.d/*.yml` file: stage names as keys, each a stage. An empty file adds nothing.
struct StagesFile;

impl JsonSchema for StagesFile {
    fn schema_name() -> Cow<'static, str> {
        "StagesFile".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = Stages::json_schema(generator);
        schema.insert("type".into(), json!(["object", "null"]));
        schema.insert("title".into(), "pydeployer stages.d file".into());
        schema.insert(
            "description".into(),
            "A drop-in stage file (`stages.d/*.yml`, read in file-name order): stage names as \
             keys, each a stage."
                .into(),
        );
        schema
    }
}

/// A stage's name: letters, digits, `-`, `_` and `.`, not starting with `.`, at most 100
/// characters.
struct StageName;

impl JsonSchema for StageName {
    fn schema_name() -> Cow<'static, str> {
        "StageName".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": STAGE_NAME_PATTERN,
            "description": "A stage's name: letters, digits, `-`, `_` and `.`, not starting with `.`.",
        })
    }
}

/// What `StageName::parse` accepts.
const STAGE_NAME_PATTERN: &str = r"^(?!pydeployer$)[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$";

/// An environment variable's name.
struct EnvName;

impl JsonSchema for EnvName {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "EnvName".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": ENV_NAME_PATTERN })
    }
}

const ENV_NAME_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";

/// Variable name → value.
struct Env;

impl JsonSchema for Env {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Env".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "propertyNames": { "pattern": ENV_NAME_PATTERN },
            "additionalProperties": { "type": ["string", "number", "boolean", "null"] },
        })
    }
}

/// A humantime duration: numbers with units, e.g. `90s`, `10m`, `1h 30m`, `1.5h`.
struct Duration;

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration with its unit: `90s`, `10m`, `1h 30m`, `1.5h`, `2days`.",
        })
    }
}

/// humantime's grammar: numbers (maybe with a fraction), each with a unit, spaces allowed.
const DURATION_PATTERN: &str = concat!(
    r"^\s*(?:[0-9]+(?:\.[0-9]+)?\s*",
    r"(?:nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m",
    r"|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)\s*)+$"
);

/// `run:` — a command line, or an argv list.
struct Run;

impl JsonSchema for Run {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Run".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "string", "pattern": r"\S" },
                {
                    "type": "array",
                    "minItems": 1,
                    "items": [{ "type": "string", "minLength": 1 }],
                    "additionalItems": { "type": "string" },
                },
            ],
        })
    }
}

/// `uses:` — a built-in action's name.
struct Uses;

impl JsonSchema for Uses {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Uses".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "enum": Builtin::ALL.map(Builtin::name) })
    }
}

/// `with:` — checked per action by `stage_rules`.
struct With;

impl JsonSchema for With {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "With".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "object" })
    }
}

/// `on:` values.
struct NotifyEvent;

impl JsonSchema for NotifyEvent {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "NotifyEvent".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "enum": NotifyOn::NAMES })
    }
}

/// `when:` values.
struct WhenName;

impl JsonSchema for WhenName {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "When".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "enum": When::NAMES })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::{
        CLOUD_KEYS, ENVIRONMENT_KEYS, HEALTH_KEYS, LOGS_KEYS, NOTIFY_KEYS, REPO_KEYS, S3_KEYS,
        SNS_KEYS, STAGE_KEYS, TOP_KEYS,
    };

    fn keys(schema: &Value) -> Vec<String> {
        let mut keys: Vec<String> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn sorted(known: &[&str]) -> Vec<String> {
        let mut keys: Vec<String> = known.iter().map(|k| (*k).to_owned()).collect();
        keys.sort();
        keys
    }

    fn definition<'a>(root: &'a Value, name: &str) -> &'a Value {
        &root["definitions"][name]
    }

    #[test]
    fn the_schema_knows_the_keys_the_validator_knows() {
        let root = schema(SchemaKind::Pipeline).to_value();
        assert_eq!(keys(&root), sorted(&TOP_KEYS));
        assert_eq!(keys(definition(&root, "RepoSettings")), sorted(&REPO_KEYS));
        assert_eq!(keys(definition(&root, "LogsSettings")), sorted(&LOGS_KEYS));
        assert_eq!(keys(definition(&root, "Stage")), sorted(&STAGE_KEYS));
        assert_eq!(
            keys(definition(&root, "CloudSettings")),
            sorted(&CLOUD_KEYS)
        );
        assert_eq!(keys(definition(&root, "S3Settings")), sorted(&S3_KEYS));
        assert_eq!(keys(definition(&root, "SnsSettings")), sorted(&SNS_KEYS));
        assert_eq!(keys(definition(&root, "NotifyEntry")), sorted(&NOTIFY_KEYS));
        assert_eq!(
            keys(definition(&root, "EnvironmentSettings")),
            sorted(&ENVIRONMENT_KEYS)
        );
        assert_eq!(
            keys(definition(&root, "HealthSettings")),
            sorted(&HEALTH_KEYS)
        );
        for object in [
            &root,
            definition(&root, "RepoSettings"),
            definition(&root, "LogsSettings"),
            definition(&root, "Stage"),
        ] {
            assert_eq!(object["additionalProperties"], false);
        }
        assert_eq!(
            definition(&root, "RepoSettings")["required"],
            json!(["url"])
        );
    }

    #[test]
    fn every_key_has_a_description() {
        let root = schema(SchemaKind::Pipeline).to_value();
        for object in [
            &root,
            definition(&root, "RepoSettings"),
            definition(&root, "LogsSettings"),
            definition(&root, "Stage"),
            definition(&root, "CloudSettings"),
            definition(&root, "S3Settings"),
            definition(&root, "SnsSettings"),
            definition(&root, "NotifyEntry"),
        ] {
            for (key, property) in object["properties"].as_object().expect("properties") {
                let text = property["description"].as_str().unwrap_or_default();
                assert!(!text.is_empty(), "`{key}` has no description: {property}");
            }
        }
    }

    #[test]
    fn uses_and_when_list_what_the_validator_accepts() {
        let root = schema(SchemaKind::Pipeline).to_value();
        let stage = definition(&root, "Stage");
        let names: Vec<&str> = Builtin::ALL.map(Builtin::name).to_vec();
        assert_eq!(stage["properties"]["uses"]["enum"], json!(names));
        assert_eq!(stage["properties"]["when"]["enum"], json!(When::NAMES));
        for name in &names {
            assert!(Builtin::from_name(name).is_some());
        }
        for name in When::NAMES {
            assert!(When::from_name(name).is_some());
        }
    }

    #[test]
    fn every_parameter_of_every_action_is_described() {
        let root = schema(SchemaKind::Pipeline).to_value();
        let rules = definition(&root, "Stage")["allOf"]
            .as_array()
            .expect("allOf");
        assert_eq!(rules.len(), Builtin::ALL.len());
        for (action, rule) in Builtin::ALL.into_iter().zip(rules) {
            assert_eq!(rule["if"]["properties"]["uses"]["const"], action.name());
            let with = &rule["then"]["properties"]["with"]["properties"];
            let described = with.as_object().expect("parameters");
            assert_eq!(described.len(), action.parameters().len());
            for (name, _) in action.parameters() {
                assert!(
                    !parameter_description(action, name).is_empty(),
                    "{}: `{name}` has no description",
                    action.name()
                );
                assert!(described.contains_key(*name));
            }
        }
    }

    #[test]
    fn optional_keys_are_not_nullable_unless_the_validator_takes_null() {
        let root = schema(SchemaKind::Pipeline).to_value();
        let text = |v: &Value| v.to_string();
        assert_eq!(root["properties"]["name"]["type"], "string");
        assert_eq!(root["properties"]["jobs"]["type"], "integer");
        assert!(text(&root["properties"]["repo"]).contains("RepoSettings"));
        assert!(!text(&root["properties"]["repo"]).contains("null"));
        assert!(text(&root["properties"]["env"]).contains("null"));
        assert!(text(&root["properties"]["stages"]).contains("null"));
        let stage = definition(&root, "Stage");
        assert!(!text(&stage["properties"]["run"]).contains("null"));
        assert!(!text(&stage["properties"]["needs"]).contains("null"));
        assert!(text(&stage["properties"]["with"]).contains("null"));
    }

    #[test]
    fn descriptions_are_not_wrapped_like_the_source() {
        let text = schema(SchemaKind::Pipeline).to_value().to_string();
        assert!(!text.contains("Default:\\n"), "{text}");
        assert!(text.contains("Default: `archive/deploy_history.json`"));
    }

    #[test]
    fn the_stages_file_schema_is_a_map_of_stages() {
        let root = schema(SchemaKind::StagesFile).to_value();
        assert_eq!(root["type"], json!(["object", "null"]));
        assert_eq!(root["additionalProperties"]["$ref"], "#/definitions/Stage");
        assert_eq!(root["propertyNames"]["$ref"], "#/definitions/StageName");
        assert_eq!(root["$schema"], "http://json-schema.org/draft-07/schema#");
    }
}
