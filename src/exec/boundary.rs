//! Where events leave the runner: every secret in every event is masked here, once, so no
//! reporter, sink or JSON path after it masks on its own, and a new output is safe by
//! construction.
//!
//! A stage's output is masked as a stream (a secret may arrive cut between two reads): the tail
//! of a read that may start a secret is held back until the next read, or until the stage's
//! finished event, before which it is let out.

use std::collections::HashMap;

use crate::events::{Outcome, RunEvent};
use crate::mask::{MaskStream, Masker};
use crate::pipeline::StageName;

pub(crate) struct Boundary {
    masker: Masker,
    /// One per stage whose output is on its way.
    streams: HashMap<StageName, MaskStream>,
}

impl Boundary {
    pub(crate) fn new(masker: Masker) -> Self {
        Boundary {
            masker,
            streams: HashMap::new(),
        }
    }

    /// Masks `event` and hands it (after any output it let out first) to `report`; returns
    /// the event as it was reported.
    pub(crate) fn pass(&mut self, event: RunEvent, report: &mut impl FnMut(&RunEvent)) -> RunEvent {
        if self.masker.is_empty() {
            report(&event);
            return event;
        }
        let text = |s: &mut String| {
            if let std::borrow::Cow::Owned(masked) = self.masker.mask_str(s) {
                *s = masked;
            }
        };
        let mut event = event;
        match &mut event {
            RunEvent::StageOutput { stage, bytes, .. } => {
                let stream = self
                    .streams
                    .entry(stage.clone())
                    .or_insert_with(|| self.masker.stream());
                *bytes = stream.push(bytes);
                if bytes.is_empty() {
                    // All of it may be the start of a secret: held back.
                    return event;
                }
            }
            RunEvent::RunStarted(header) => {
                text(&mut header.pipeline);
                text(&mut header.selection);
                path(&self.masker, &mut header.log);
                for stage in &mut header.stages {
                    text(&mut stage.command);
                }
            }
            RunEvent::StageStarted { command, .. } => text(command),
            RunEvent::StageFinished {
                stage,
                outcome,
                note,
                details,
                deploy,
                publish,
                elapsed,
                ..
            } => {
                if let Some(mut stream) = self.streams.remove(stage) {
                    let held = stream.finish();
                    if !held.is_empty() {
                        report(&RunEvent::StageOutput {
                            stage: stage.clone(),
                            bytes: held,
                            elapsed: *elapsed,
                        });
                    }
                }
                if let Outcome::NotStarted { message } = outcome {
                    text(message);
                }
                for text_of in [note, details].into_iter().flatten() {
                    text(text_of);
                }
                // The repository and where it went (`repo.remote`, or an environment's URL),
                // for a deploy and the rollback that may have followed it.
                let mut next = deploy.as_deref_mut();
                while let Some(deployed) = next {
                    text(&mut deployed.repo);
                    text(&mut deployed.remote);
                    next = deployed.auto_rollback.as_deref_mut();
                }
                // The index a package went to (its URL may carry a user and password).
                if let Some(published) = publish {
                    text(&mut published.index);
                }
            }
            RunEvent::StageSkipped { .. } => {}
            RunEvent::RunFinished(summary) => {
                path(&self.masker, &mut summary.log);
                for row in &mut summary.stages {
                    text(&mut row.detail);
                }
            }
        }
        report(&event);
        event
    }
}

/// A path with a secret in it (a log folder named after a token) shown masked.
fn path(masker: &Masker, path: &mut Option<std::path::PathBuf>) {
    if let Some(p) = path
        && let std::borrow::Cow::Owned(masked) = masker.mask_str(&p.to_string_lossy())
    {
        *p = masked.into();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Boundary;
    use crate::events::{DeployKind, Deployed, Outcome, Published, RunEvent, Trigger};
    use crate::mask::Masker;
    use crate::pipeline::StageName;

    #[test]
    fn a_deploy_its_automatic_rollback_and_a_publish_leave_with_the_urls_masked() {
        let url = "ssh://deploy:hunter2@vps.example.org/srv/app.git";
        let deployed = Deployed {
            kind: DeployKind::Deploy,
            forced: false,
            repo: "https://user:hunter2@example.org/app.git".into(),
            remote: url.into(),
            branch: "master".into(),
            commit: None,
            previous_commit: None,
            environment: Some("production".into()),
            trigger: Trigger::Manual,
            approved_by: None,
            health: None,
            rolled_back_to: None,
            auto_rollback: None,
        };
        let deployed = Deployed {
            auto_rollback: Some(Box::new(Deployed {
                kind: DeployKind::Rollback,
                trigger: Trigger::Auto,
                ..deployed.clone()
            })),
            ..deployed
        };
        let event = RunEvent::StageFinished {
            stage: StageName::parse("deploy").unwrap(),
            attempt: 1,
            outcome: Outcome::Passed,
            note: None,
            details: None,
            deploy: Some(Box::new(deployed)),
            publish: Some(Box::new(Published {
                package: "app".into(),
                version: "1.0".into(),
                index: "https://alice:hunter2@pypi.example.org/legacy/".into(),
                files: Vec::new(),
                skipped: false,
            })),
            duration: Duration::ZERO,
            will_retry: false,
            elapsed: Duration::ZERO,
        };
        let mut boundary = Boundary::new(Masker::new(["hunter2"]));
        let mut reported = Vec::new();
        boundary.pass(event, &mut |e| reported.push(format!("{e:?}")));
        let [reported] = reported.as_slice() else {
            panic!("{reported:?}");
        };
        assert!(!reported.contains("hunter2"), "{reported}");
        assert!(reported.contains("ssh://deploy:"), "{reported}");
        assert_eq!(reported.matches("vps.example.org").count(), 2, "{reported}");
        assert!(
            reported.contains("alice:***@pypi.example.org"),
            "{reported}"
        );
    }
}
