//! Watching a run's deploy and rollback stages and writing each one to the ledger.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;

use chrono::{DateTime, Local};

use crate::actions::{CommandLine, git};
use crate::events::{Outcome, RunEvent};
use crate::exec::process;
use crate::pipeline::{Action, Builtin, Pipeline, Repo, StageName};
use crate::report::ledger::{Kind, Ledger, NewEntry, Status};
use crate::report::mask::Masker;

/// Records one ledger entry per `git/push` or `git/revert` stage that ends.
pub struct DeployRecorder {
    ledger: Ledger,
    repo: Option<Repo>,
    watched: HashMap<StageName, Kind>,
    /// Per watched stage in progress: when it started and the remote head before it.
    started: HashMap<StageName, (DateTime<Local>, Option<String>)>,
    log: Option<PathBuf>,
    /// Credentials in the repository URL never reach the ledger.
    masker: Masker,
    /// The first write that failed; the run goes on, the caller reports it.
    pub error: Option<io::Error>,
}

impl DeployRecorder {
    pub fn new(ledger: Ledger, pipeline: &Pipeline, log: Option<PathBuf>, masker: Masker) -> Self {
        let watched = pipeline
            .stages
            .iter()
            .filter_map(|s| match s.action {
                Action::Uses {
                    action: Builtin::GitPush,
                    ..
                } => Some((s.name.clone(), Kind::Deploy)),
                Action::Uses {
                    action: Builtin::GitRevert,
                    ..
                } => Some((s.name.clone(), Kind::Rollback)),
                _ => None,
            })
            .collect();
        DeployRecorder {
            ledger,
            repo: pipeline.repo.clone(),
            watched,
            started: HashMap::new(),
            log,
            masker,
            error: None,
        }
    }

    pub fn observe(&mut self, event: &RunEvent) {
        let Some(repo) = &self.repo else { return };
        match event {
            RunEvent::StageStarted {
                stage, attempt: 1, ..
            } if self.watched.contains_key(stage) => {
                let remote_ref = format!("refs/remotes/{}/{}", repo.remote, repo.branch);
                self.started
                    .insert(stage.clone(), (Local::now(), rev_parse(repo, &remote_ref)));
            }
            RunEvent::StageFinished {
                stage,
                outcome,
                will_retry: false,
                ..
            } => {
                let (Some(kind), Some((started_at, previous_commit))) =
                    (self.watched.get(stage), self.started.remove(stage))
                else {
                    return;
                };
                let entry = NewEntry {
                    kind: *kind,
                    status: match outcome {
                        Outcome::Passed => Status::Success,
                        Outcome::Cancelled => Status::Cancelled,
                        _ => Status::Failed,
                    },
                    started_at,
                    finished_at: Local::now(),
                    repo: self.masker.mask_str(&repo.url).into_owned(),
                    remote: repo.remote.clone(),
                    branch: repo.branch.clone(),
                    commit: rev_parse(repo, "HEAD"),
                    previous_commit,
                    log: self.log.clone(),
                };
                if let Err(err) = self.ledger.append(entry) {
                    self.error.get_or_insert(err);
                }
            }
            _ => {}
        }
    }
}

fn rev_parse(repo: &Repo, what: &str) -> Option<String> {
    let command = CommandLine::new(
        "git",
        ["rev-parse", "--verify", "--quiet", "--end-of-options", what],
    );
    let env = git::pinned_environment(Some(repo), false, &BTreeMap::new());
    process::capture(&command, &repo.dir, &env)
        .ok()
        .filter(|s| !s.is_empty())
}
