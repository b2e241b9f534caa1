//! `deploy ENV`, `status`, `rollback` (of `repo.remote` or of an environment), and the
//! internal `__health-check`: what the ledger says is live where, and the runs that change it.

use std::time::Duration;

use crate::actions::EnvRollback;
use crate::cli::{Cli, DeployArgs, Format, HealthCheckArgs, StatusArgs};
use crate::error::{Failure, Problem};
use crate::events::Trigger;
use crate::object_id::ObjectId;
use crate::pipeline::{Environment, HealthCheck, Pipeline, Stage};
use crate::plan::Selection;
use crate::session::{self, RunRequest};
use crate::store::ledger::{Entry, Ledger, live_stack};

/// The environment named on the command line, or the list of those there are.
fn environment<'a>(pipeline: &'a Pipeline, name: &str) -> Result<&'a Environment, Failure> {
    pipeline.environment(name).ok_or_else(|| {
        let names: Vec<&str> = pipeline
            .environments
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        let help = if names.is_empty() {
            "this pipeline declares no `environments:`".to_owned()
        } else {
            format!("environments: {}", names.join(", "))
        };
        Problem::general(format!("no environment `{name}`"))
            .with_help(help)
            .into()
    })
}

/// The deploy stages of `environment`; none is refused.
fn deploy_stages<'a>(
    pipeline: &'a Pipeline,
    environment: &'a Environment,
) -> Result<Vec<&'a Stage>, Failure> {
    let stages: Vec<&Stage> = pipeline.deploys_to(&environment.name).collect();
    if stages.is_empty() {
        return Err(Problem::general(format!(
            "no stage deploys to environment `{}`",
            environment.name
        ))
        .with_help(format!(
            "add one, e.g. `deploy-{0}: {{ uses: git/push, with: {{ environment: {0} }}, needs: [test] }}`",
            environment.name
        ))
        .into());
    }
    Ok(stages)
}

fn open_ledger(pipeline: &Pipeline) -> Result<Ledger, Failure> {
    Ledger::open(&pipeline.archive).map_err(session::ledger_failure)
}

fn short(commit: Option<&ObjectId>) -> &str {
    commit.map_or("-", ObjectId::short)
}

/// A refusal before anything runs: nothing was pushed (exit 1).
fn refuse(message: &str, help: &str) -> Failure {
    Failure::Tool(miette::miette!(help = help.to_owned(), "{message}"))
}

/// `pydeployer deploy ENV [--approve]`.
pub(super) fn deploy(cli: &Cli, args: &DeployArgs) -> Result<(), Failure> {
    let pipeline = super::load(cli)?;
    let environment = environment(&pipeline, &args.environment)?;
    let stages = deploy_stages(&pipeline, environment)?;
    let mut request = RunRequest {
        command: "deploy",
        selection: Selection {
            only: stages.iter().map(|s| s.name.to_string()).collect(),
            ..Selection::default()
        },
        approve: args.approve,
        force: args.force,
        ..RunRequest::default()
    };
    if let Some(required) = &environment.requires {
        let ledger = open_ledger(&pipeline)?;
        let stack = live_stack(ledger.entries(), |e| {
            e.environment.as_deref() == Some(required.as_str())
        });
        let Some(live) = stack.last() else {
            return Err(refuse(
                &format!(
                    "refusing to deploy to {}: it requires a commit live and healthy on {required}, and nothing was deployed to {required}",
                    environment.name
                ),
                &format!(
                    "deploy to {required} first (`pydeployer run`, or `pydeployer deploy {required}`); nothing was pushed"
                ),
            ));
        };
        if !live.healthy() {
            return Err(refuse(
                &format!(
                    "refusing to deploy to {}: the commit live on {required}, {} (ledger entry {}), is {}",
                    environment.name,
                    short(live.commit.as_ref()),
                    live.id,
                    if live.went_live() {
                        "unhealthy"
                    } else {
                        "not deployed"
                    }
                ),
                &format!(
                    "fix it and deploy a healthy commit to {required} first; nothing was pushed"
                ),
            ));
        }
        crate::errln!(
            "promoting {} to {}: the commit live and healthy on {required} (ledger entry {})",
            short(live.commit.as_ref()),
            environment.name,
            live.id
        );
        request.promote.clone_from(&live.commit);
        request.trigger = Trigger::Promote;
    }
    session::run(&pipeline, &request, &super::settings(cli, args.lock.wait))
}

/// What `rollback` returns to: entry `to` (checked), or the deploy before the live one.
fn rollback_target<'a>(
    stack: &[&'a Entry],
    to: Option<&'a Entry>,
    what: &str,
) -> Result<&'a Entry, Failure> {
    if let Some(entry) = to {
        return Ok(entry);
    }
    match stack {
        [.., before, _] => Ok(before),
        [live] => Err(Problem::general(format!(
            "nothing to roll back to: {what} holds deploy {} ({}), and nothing was deployed there before it",
            live.id,
            short(live.commit.as_ref())
        ))
        .with_help("`pydeployer history` lists what was deployed; nothing was run")
        .into()),
        [] => Err(Problem::general(format!(
            "nothing to roll back: the ledger holds no deploy to {what}"
        ))
        .with_help("`pydeployer history` lists what was deployed; nothing was run")
        .into()),
    }
}

/// What `rollback` would do: the stage that runs it, the entry it returns to, what it rolls
/// back (in words), and the entry live there now.
struct Choice<'a> {
    stage: &'a Stage,
    target: &'a Entry,
    what: String,
    live: Option<&'a Entry>,
}

/// The choice of [`rollback`], made from the pipeline and its ledger (nothing runs).
fn choose<'a>(
    pipeline: &'a Pipeline,
    ledger: &'a Ledger,
    to: Option<u64>,
    env: Option<&str>,
) -> Result<Choice<'a>, Failure> {
    let (stage, target, what, live) = match env {
        Some(name) => {
            let environment = environment(pipeline, name)?;
            let stage = deploy_stages(pipeline, environment)?[0];
            let stack = live_stack(ledger.entries(), |e| e.environment.as_deref() == Some(name));
            let to = match to {
                Some(id) => Some(entry_of(ledger, id, |e| {
                    (e.environment.as_deref() == Some(name))
                        .then_some(())
                        .ok_or_else(|| {
                            format!(
                                "ledger entry {id} is not a deploy to environment {name} (it is of {})",
                                e.environment.as_deref().unwrap_or("repo.remote")
                            )
                        })
                })?),
                None => None,
            };
            let target = rollback_target(&stack, to, &format!("environment {name}"))?;
            (
                stage,
                target,
                format!("environment {name}"),
                stack.last().copied(),
            )
        }
        None => {
            let stage = super::rollback_stage(pipeline)?;
            let repo = pipeline.repo.as_ref();
            let ours = |e: &Entry| {
                e.environment.is_none()
                    && repo.is_none_or(|r| {
                        e.repo == r.url && e.remote == r.remote && e.branch == r.branch
                    })
            };
            let stack = live_stack(ledger.entries(), ours);
            let to = match to {
                Some(id) => Some(super::rollback_entry(pipeline, ledger, id)?),
                None => None,
            };
            let target = rollback_target(&stack, to, "the remote")?;
            let what = repo.map_or_else(
                || "the remote".to_owned(),
                |r| format!("{}/{}", r.remote, r.branch),
            );
            (stage, target, what, stack.last().copied())
        }
    };
    Ok(Choice {
        stage,
        target,
        what,
        live,
    })
}

/// The menu's question before a rollback: what goes back to what, by commit.
pub(crate) fn rollback_question(cli: &Cli) -> Result<String, Failure> {
    let pipeline = super::load(cli)?;
    let ledger = open_ledger(&pipeline)?;
    let Choice {
        target, what, live, ..
    } = choose(&pipeline, &ledger, None, None)?;
    Ok(match live {
        Some(live) => format!(
            "roll {what} back from {} (ledger entry {}) to the files of {} (entry {}), in a revert commit pushed on top?",
            short(live.commit.as_ref()),
            live.id,
            short(target.commit.as_ref()),
            target.id
        ),
        None => format!(
            "roll {what} back to the files of {} (entry {}), in a revert commit pushed on top?",
            short(target.commit.as_ref()),
            target.id
        ),
    })
}

/// `pydeployer rollback [--env ENV] [--to ID]`: back to the deploy before the live one (or
/// to entry ID), in one revert commit pushed on top; the terminal says what, before and after.
pub(crate) fn rollback(
    cli: &Cli,
    to: Option<u64>,
    env: Option<&str>,
    wait: bool,
) -> Result<(), Failure> {
    let pipeline = super::load(cli)?;
    let ledger = open_ledger(&pipeline)?;
    let Choice {
        stage,
        target,
        what,
        live,
    } = choose(&pipeline, &ledger, to, env)?;
    let commit = target.commit.clone().ok_or_else(|| {
        Failure::from(Problem::general(format!(
            "ledger entry {} has no commit to return to",
            target.id
        )))
    })?;
    match live {
        Some(live) => crate::errln!(
            "rollback: {what} is at {} (ledger entry {}); returning it to the files of entry {} ({}): the commits {}..{} are reverted in one commit pushed on top",
            short(live.commit.as_ref()),
            live.id,
            target.id,
            short(Some(&commit)),
            short(Some(&commit)),
            short(live.commit.as_ref()),
        ),
        None => crate::errln!(
            "rollback: returning {what} to the files of entry {} ({})",
            target.id,
            short(Some(&commit))
        ),
    }
    let mut request = RunRequest {
        command: "rollback",
        selection: Selection {
            only: vec![stage.name.to_string()],
            ..Selection::default()
        },
        ..RunRequest::default()
    };
    if env.is_some() {
        request.env_rollback = Some(EnvRollback {
            entry: target.id,
            commit: commit.clone(),
            reason: format!("`pydeployer rollback` back to ledger entry {}", target.id),
        });
    } else {
        request.revert_to = Some(commit.clone());
        request.revert_to_entry = Some(target.id);
    }
    let before = ledger.entries().len();
    session::run(&pipeline, &request, &super::settings(cli, wait))?;
    // After: what the rollback recorded, or that it changed nothing.
    let after = open_ledger(&pipeline)?;
    match after.entries().get(before..).and_then(|new| new.last()) {
        Some(entry) => crate::errln!(
            "rolled back: {what} is now at {} (ledger entry {}), with the files of entry {} ({})",
            short(entry.commit.as_ref()),
            entry.id,
            target.id,
            short(Some(&commit))
        ),
        None => crate::errln!(
            "nothing to revert: {what} already has the files of entry {} ({}); nothing was recorded",
            target.id,
            short(Some(&commit))
        ),
    }
    Ok(())
}

/// Entry `id`, there once, that went live, and that `fits`.
fn entry_of(
    ledger: &Ledger,
    id: u64,
    fits: impl Fn(&Entry) -> Result<(), String>,
) -> Result<&Entry, Failure> {
    let mut matching = ledger.entries().iter().filter(|e| e.id == id);
    let entry = matching.next().ok_or_else(|| {
        Problem::general(format!("the ledger has no entry {id}"))
            .with_help("`pydeployer history --env ENV` lists the entries")
    })?;
    if matching.next().is_some() {
        return Err(Problem::general(format!(
            "the ledger holds more than one entry with id {id}: which one to return to is unclear"
        ))
        .into());
    }
    fits(entry).map_err(Problem::general)?;
    if !entry.healthy() {
        return Err(Problem::general(format!(
            "ledger entry {id} is a {} {}: returning to it would not give a healthy deploy",
            entry.status, entry.kind
        ))
        .with_help("return to an entry whose status is success (`pydeployer history --env ENV`)")
        .into());
    }
    Ok(entry)
}

/// One environment in `status`.
#[derive(serde::Serialize)]
struct EnvironmentStatus {
    environment: String,
    url: String,
    branch: String,
    commit: Option<String>,
    /// When it got there.
    deployed_at: Option<String>,
    /// `deploy` or `rollback`.
    kind: Option<String>,
    trigger: Option<String>,
    approved_by: Option<String>,
    ledger_id: Option<u64>,
    /// As recorded after the push.
    recorded_health: Option<String>,
    /// Checked now: `healthy`, `unhealthy`, `unchecked` (`--no-check`, or no `health:`).
    health: String,
    health_detail: Option<String>,
}

/// `pydeployer status [--no-check]`.
pub(super) fn status(cli: &Cli, args: &StatusArgs) -> Result<(), Failure> {
    let pipeline = super::load(cli)?;
    if pipeline.environments.is_empty() {
        return Err(
            Problem::general("this pipeline declares no `environments:`")
                .with_help("`pydeployer history` shows the deploys to `repo.remote`")
                .into(),
        );
    }
    let ledger = open_ledger(&pipeline)?;
    let mut rows = Vec::new();
    for environment in &pipeline.environments {
        let stack = live_stack(ledger.entries(), |e| {
            e.environment.as_deref() == Some(environment.name.as_str())
        });
        let live = stack.last();
        let (health, detail) = match (&environment.health, args.no_check) {
            (Some(check), false) if live.is_some() => {
                match check_now(&pipeline, environment, check) {
                    Ok(detail) => ("healthy".to_owned(), Some(detail)),
                    Err(detail) => ("unhealthy".to_owned(), Some(detail)),
                }
            }
            _ => ("unchecked".to_owned(), None),
        };
        rows.push(EnvironmentStatus {
            environment: environment.name.clone(),
            url: environment.url.clone(),
            branch: environment.branch.clone(),
            commit: live
                .and_then(|e| e.commit.as_ref())
                .map(|c| c.as_str().to_owned()),
            deployed_at: live.map(|e| e.finished_at.to_rfc3339()),
            kind: live.map(|e| e.kind.to_string()),
            trigger: live.and_then(|e| e.trigger.clone()),
            approved_by: live.and_then(|e| e.approved_by.clone()),
            ledger_id: live.map(|e| e.id),
            recorded_health: live
                .map(|e| if e.healthy() { "healthy" } else { "unhealthy" }.to_owned()),
            health,
            health_detail: detail,
        });
    }
    let masker = crate::mask::Masker::for_pipeline(&pipeline);
    let text = match cli.format {
        Format::Text => {
            let mut text = String::new();
            for row in &rows {
                let Some(commit) = &row.commit else {
                    text.push_str(&format!(
                        "{}: nothing deployed ({})\n",
                        row.environment, row.url
                    ));
                    continue;
                };
                text.push_str(&format!(
                    "{}: {} ({} {}, {}{}), {}; health now: {}{}\n",
                    row.environment,
                    &commit[..7],
                    row.kind.as_deref().unwrap_or("deploy"),
                    row.ledger_id.unwrap_or_default(),
                    row.trigger.as_deref().unwrap_or("manual"),
                    row.approved_by
                        .as_ref()
                        .map(|who| format!(", approved by {who}"))
                        .unwrap_or_default(),
                    row.deployed_at.as_deref().unwrap_or("-"),
                    row.health,
                    row.health_detail
                        .as_ref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default(),
                ));
            }
            text
        }
        Format::Json | Format::Jsonl => {
            serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n"
        }
    };
    crate::out!("{}", masker.mask_str(&text));
    Ok(())
}

/// The environment's health check, once (with a short timeout): `Ok` healthy, with what
/// answered.
fn check_now(
    pipeline: &Pipeline,
    environment: &Environment,
    health: &crate::pipeline::Health,
) -> Result<String, String> {
    match &health.check {
        HealthCheck::Http {
            url,
            expect,
            contains,
        } => {
            let check = crate::cloud::health::HttpCheck {
                url,
                expect: *expect,
                contains: contains.as_deref(),
                timeout: health.timeout.min(Duration::from_secs(10)),
                interval: Duration::from_hours(1),
            };
            let mut said = String::new();
            crate::cloud::health::wait_healthy(&check, |line| line.clone_into(&mut said))
                .map(|_| said.clone())
        }
        HealthCheck::Run(script) => {
            let dir = pipeline
                .repo
                .as_ref()
                .filter(|r| r.dir.is_dir())
                .map_or_else(|| pipeline.root.clone(), |r| r.dir.clone());
            let env = crate::actions::git::pinned_environment(
                None,
                false,
                &pipeline
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect(),
            );
            let command = crate::actions::CommandLine::new(
                "sh",
                [
                    "-c",
                    r#"sh -c "$1" >/dev/null 2>&1 && echo ok || echo failed"#,
                    "health",
                    script,
                ],
            );
            let _ = environment;
            match crate::exec::process::capture(&command, &dir, &env) {
                Ok(out) if out.trim() == "ok" => Ok(format!("{script}: exit 0")),
                Ok(_) => Err(format!("{script}: failed")),
                Err(err) => Err(format!("{script}: {err}")),
            }
        }
    }
}

/// `pydeployer __health-check`: the HTTP check of a deploy stage, in its own process.
pub(super) fn health_check(args: &HealthCheckArgs) -> Result<(), Failure> {
    let seconds = |s: f64| Duration::try_from_secs_f64(s).unwrap_or(Duration::from_secs(1));
    let check = crate::cloud::health::HttpCheck {
        url: &args.url,
        expect: args.expect,
        contains: args.contains.as_deref(),
        timeout: seconds(args.timeout),
        interval: seconds(args.interval),
    };
    match crate::cloud::health::wait_healthy(&check, |line| crate::outln!("health: {line}")) {
        Ok(took) => {
            crate::outln!("health: healthy after {:.1}s", took.as_secs_f64());
            Ok(())
        }
        Err(last) => {
            crate::outln!(
                "health: unhealthy: no healthy answer within {}s (last: {last})",
                args.timeout
            );
            Err(Failure::Exit(1))
        }
    }
}
