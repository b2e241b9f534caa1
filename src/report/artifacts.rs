//! Artifacts as a run's output: after each stage's last attempt, the files its `artifacts:`
//! globs match are copied into `artifacts/<run>/<stage>/` (`store::artifacts`).

use std::io;
use std::path::PathBuf;

use crate::events::RunEvent;
use crate::pipeline::Pipeline;
use crate::store::artifacts;

pub struct ArtifactSink<'a> {
    pipeline: &'a Pipeline,
    /// `artifacts/<run>`, once the run started.
    dir: Option<PathBuf>,
}

impl<'a> ArtifactSink<'a> {
    pub fn new(pipeline: &'a Pipeline) -> Self {
        ArtifactSink {
            pipeline,
            dir: None,
        }
    }
}

impl super::Sink for ArtifactSink<'_> {
    fn report(&mut self, event: &RunEvent) -> io::Result<()> {
        match event {
            RunEvent::RunStarted(header) => {
                self.dir = header
                    .log
                    .as_deref()
                    .and_then(|log| artifacts::run_dir(&self.pipeline.root, log));
            }
            RunEvent::StageFinished {
                stage,
                outcome,
                will_retry: false,
                ..
            } => {
                let Some(stage) = self.pipeline.stage(stage.as_str()) else {
                    return Ok(());
                };
                let (Some(spec), Some(dir)) = (&stage.artifacts, &self.dir) else {
                    return Ok(());
                };
                if outcome.passed() || spec.always {
                    let workdir = self.pipeline.workdir(stage);
                    artifacts::keep(&workdir, &spec.paths, &dir.join(stage.name.as_str()))?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
