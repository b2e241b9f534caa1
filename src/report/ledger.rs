//! The deploy ledger as a run's output: one entry per deploy (`git/push`), rollback
//! (`git/revert`) or publish (`python/publish`) stage that ends, from what the stage's action said it did (the `deploy` of
//! its finished event). Nothing here runs a process; the file is `store::ledger`'s.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;

use chrono::{DateTime, Local};

use crate::events::Published;
use crate::events::{DeployKind, Deployed, HealthResult, Outcome, RunEvent, Trigger};
use crate::pipeline::StageName;
use crate::store::ledger::{Kind, Ledger, NewEntry, PublishRecord, PublishedFileRecord, Status};

/// Appends an entry to the ledger for each deploy or rollback stage that ends.
pub struct LedgerSink {
    ledger: Ledger,
    log: Option<PathBuf>,
    /// Why the run started, from its header.
    trigger: Trigger,
    /// When each stage's first attempt started.
    started: HashMap<StageName, DateTime<Local>>,
}

impl LedgerSink {
    pub fn new(ledger: Ledger) -> Self {
        LedgerSink {
            ledger,
            log: None,
            trigger: Trigger::default(),
            started: HashMap::new(),
        }
    }
}

impl LedgerSink {
    fn entry(
        &self,
        deploy: &Deployed,
        status: Status,
        started_at: DateTime<Local>,
        finished_at: DateTime<Local>,
    ) -> NewEntry {
        NewEntry {
            kind: match deploy.kind {
                DeployKind::Deploy => Kind::Deploy,
                DeployKind::Rollback => Kind::Rollback,
            },
            status,
            forced: deploy.forced,
            started_at,
            finished_at,
            repo: deploy.repo.clone(),
            remote: deploy.remote.clone(),
            branch: deploy.branch.clone(),
            commit: deploy.commit.clone(),
            previous_commit: deploy.previous_commit.clone(),
            log: self.log.clone(),
            environment: deploy.environment.clone(),
            trigger: deploy.trigger,
            approved_by: deploy.approved_by.clone(),
            health: deploy.health.clone(),
            rolled_back_to: deploy.rolled_back_to,
            publish: None,
        }
    }
}

impl super::Sink for LedgerSink {
    fn report(&mut self, event: &RunEvent) -> io::Result<()> {
        match event {
            RunEvent::RunStarted(header) => {
                self.log.clone_from(&header.log);
                self.trigger = header.trigger;
            }
            RunEvent::StageStarted {
                stage, attempt: 1, ..
            } => {
                self.started.insert(stage.clone(), Local::now());
            }
            RunEvent::StageFinished {
                stage,
                outcome,
                deploy: Some(deploy),
                will_retry: false,
                ..
            } => {
                let finished_at = Local::now();
                let started_at = self.started.remove(stage).unwrap_or(finished_at);
                let status = match outcome {
                    // Found unhealthy after the push (and rolled back, or not).
                    _ if deploy
                        .health
                        .as_ref()
                        .is_some_and(|h| h.result == HealthResult::Unhealthy) =>
                    {
                        Status::Unhealthy
                    }
                    // A deploy that found the branch already there pushed nothing.
                    Outcome::Passed
                        if deploy.kind == DeployKind::Deploy
                            && deploy.commit.is_some()
                            && deploy.commit == deploy.previous_commit =>
                    {
                        Status::UpToDate
                    }
                    // A rollback that changed nothing is not a rollback.
                    Outcome::Passed
                        if deploy.kind == DeployKind::Rollback
                            && deploy.commit.is_some()
                            && deploy.commit == deploy.previous_commit =>
                    {
                        return Ok(());
                    }
                    Outcome::Passed => Status::Success,
                    Outcome::Cancelled => Status::Cancelled,
                    _ => Status::Failed,
                };
                self.ledger
                    .append(self.entry(deploy, status, started_at, finished_at))?;
                if let Some(rollback) = &deploy.auto_rollback {
                    let status = match &rollback.health {
                        Some(h) if h.result == HealthResult::Unhealthy => Status::Unhealthy,
                        _ => Status::Success,
                    };
                    self.ledger
                        .append(self.entry(rollback, status, finished_at, Local::now()))?;
                }
            }
            RunEvent::StageFinished {
                stage,
                outcome,
                publish: Some(publish),
                will_retry: false,
                ..
            } => {
                let finished_at = Local::now();
                let mut entry = publish_entry(
                    publish,
                    outcome,
                    self.started.remove(stage).unwrap_or(finished_at),
                    self.log.clone(),
                );
                entry.trigger = self.trigger;
                self.ledger.append(entry)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A `publish` entry: the index stands where a deploy has its repository; a version the index
/// already had, skipped, is `up_to_date`.
fn publish_entry(
    publish: &Published,
    outcome: &Outcome,
    started_at: DateTime<Local>,
    log: Option<PathBuf>,
) -> NewEntry {
    NewEntry {
        kind: Kind::Publish,
        environment: None,
        approved_by: None,
        health: None,
        rolled_back_to: None,
        status: match outcome {
            Outcome::Passed if publish.skipped => Status::UpToDate,
            Outcome::Passed => Status::Success,
            Outcome::Cancelled => Status::Cancelled,
            _ => Status::Failed,
        },
        forced: false,
        started_at,
        finished_at: Local::now(),
        repo: publish.index.clone(),
        remote: String::new(),
        branch: String::new(),
        commit: None,
        previous_commit: None,
        log,
        trigger: Trigger::default(),
        publish: Some(PublishRecord {
            package: publish.package.clone(),
            version: publish.version.clone(),
            index: publish.index.clone(),
            files: publish
                .files
                .iter()
                .map(|f| PublishedFileRecord {
                    name: f.name.clone(),
                    sha256: f.sha256.clone(),
                })
                .collect(),
        }),
    }
}
