//! `cloud:` and `notify:`: what a run has to send, put in the outbox when the run ends.
//!
//! This sink only records and renders: the keys of the run's log, the ledger and its JSON
//! summary in S3, and one notification (the same fields for SNS and for each webhook) when the
//! run's events match their `on:`. The session sends the outbox once the reporter is done
//! (`cloud::deliver`), so nothing here waits on the network.
//!
//! Like every sink, it sees events already masked: the last lines of a failing stage, the
//! pipeline's name and the commands hold no secret.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local, SecondsFormat};
use serde::Serialize;

use super::json::RunJson;
use crate::events::{
    DeployKind, HealthResult, Outcome, RunEvent, RunSummary, StageResult, Trigger,
};
use crate::pipeline::{NotifyOn, S3Target, SnsTarget, StageName, Webhook};
use crate::store::logs::RunResult;
use crate::store::outbox::{Body, Item, MAX_MESSAGE, Outbox};

/// The lines of a failing stage a notification shows.
const TAIL_LINES: usize = 15;
/// A line of a notification is cut after this many characters.
const LINE_CHARS: usize = 300;

/// Where a run's files go, with the region already settled.
#[derive(Debug, Clone)]
pub struct S3Destination {
    pub target: S3Target,
    pub region: String,
}

/// What the run sends, and to whom.
#[derive(Debug, Clone)]
pub struct Destinations {
    pub s3: Option<S3Destination>,
    pub sns: Option<SnsTarget>,
    pub webhooks: Vec<Webhook>,
    /// The deploy ledger, uploaded when it exists.
    pub ledger: PathBuf,
}

pub struct CloudSink {
    outbox: Outbox,
    to: Destinations,
    host: String,
    run: Option<Started>,
    /// The last lines of each stage that is running.
    tails: HashMap<StageName, VecDeque<String>>,
    /// Stages whose last attempt did not pass, in the order they ended.
    failed: Vec<FailedStage>,
    commit: Option<String>,
    rolled_back: bool,
    /// A deploy's health check failed.
    unhealthy: bool,
}

struct Started {
    pipeline: String,
    trigger: Trigger,
    at: DateTime<Local>,
    log: Option<PathBuf>,
}

/// A stage in a notification.
#[derive(Debug, Clone, Serialize)]
pub struct FailedStage {
    pub stage: String,
    /// The exit code, for a stage that exited.
    pub exit_code: Option<i32>,
    /// `failed (exit 1)`, `timed out after 5s`.
    pub detail: String,
    /// Its last lines of output (masked, as every event is).
    pub last_lines: Vec<String>,
}

/// A notification: the webhook's JSON body, and the source of the SNS message.
#[derive(Debug, Serialize)]
pub struct Notification {
    /// The whole message as text (what SNS sends, and what chat webhooks show).
    pub text: String,
    pub pipeline: String,
    /// `passed`, `failed` or `cancelled`.
    pub result: &'static str,
    pub exit_code: i32,
    /// The `on:` events this run matched.
    pub events: Vec<NotifyOn>,
    pub host: String,
    pub trigger: Trigger,
    /// What the run deployed or rolled back to, when it did.
    pub commit: Option<String>,
    pub started_at: String,
    pub failed: Vec<FailedStage>,
    /// `s3://bucket/prefix/logs/<name>`, when the log is uploaded.
    pub log_s3: Option<String>,
    /// The local log's path.
    pub log: Option<String>,
    /// The command that shows the log on the machine that ran it.
    pub command: Option<String>,
}

impl CloudSink {
    pub fn new(outbox: Outbox, to: Destinations) -> Self {
        CloudSink {
            outbox,
            to,
            host: hostname(),
            run: None,
            tails: HashMap::new(),
            failed: Vec::new(),
            commit: None,
            rolled_back: false,
            unhealthy: false,
        }
    }

    fn tail(&mut self, stage: &StageName, bytes: &[u8]) {
        let tail = self.tails.entry(stage.clone()).or_default();
        for line in String::from_utf8_lossy(bytes).lines() {
            let line: String = line
                .chars()
                .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
                .take(LINE_CHARS)
                .collect();
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }

    fn finished(&mut self, summary: &RunSummary) -> io::Result<()> {
        let Some(run) = &self.run else {
            return Ok(());
        };
        let log_name = run
            .log
            .as_deref()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .map(str::to_owned);
        let stem = log_name
            .as_deref()
            .map(|n| n.strip_suffix(".log").unwrap_or(n).to_owned());
        let mut log_s3 = None;
        if let (Some(s3), Some(log), Some(name), Some(stem)) =
            (&self.to.s3, &run.log, &log_name, &stem)
        {
            let key = format!("{}logs/{name}", s3.target.prefix);
            log_s3 = Some(format!("s3://{}/{key}", s3.target.bucket));
            self.upload(
                s3,
                key,
                "text/plain; charset=utf-8",
                "the run log",
                Body::File(log),
            )?;
            if self.to.ledger.is_file() {
                let key = format!("{}archive/deploy_history.json", s3.target.prefix);
                let ledger = self.to.ledger.clone();
                self.upload(
                    s3,
                    key,
                    "application/json",
                    "the deploy ledger",
                    Body::File(&ledger),
                )?;
            }
            let json = RunJson::new(summary, &run.pipeline, run.at);
            let mut text = serde_json::to_vec_pretty(&json).map_err(io::Error::other)?;
            text.push(b'\n');
            let key = format!("{}runs/{stem}.json", s3.target.prefix);
            self.upload(
                s3,
                key,
                "application/json",
                "the run summary",
                Body::Bytes(&text),
            )?;
        }
        let mut events = vec![if summary.exit_code == 0 {
            NotifyOn::Success
        } else {
            NotifyOn::Failure
        }];
        if self.rolled_back {
            events.push(NotifyOn::Rollback);
        }
        if self.unhealthy {
            events.push(NotifyOn::Unhealthy);
        }
        let wanted = |on: &[NotifyOn]| on.iter().any(|e| events.contains(e));
        let sns = self.to.sns.as_ref().filter(|sns| wanted(&sns.on));
        let hooks: Vec<&Webhook> = self.to.webhooks.iter().filter(|w| wanted(&w.on)).collect();
        if sns.is_none() && hooks.is_empty() {
            return Ok(());
        }
        let failed_rows: Vec<&str> = summary
            .stages
            .iter()
            .filter(|row| matches!(row.result, StageResult::Failed | StageResult::TimedOut))
            .map(|row| row.stage.as_str())
            .collect();
        let failed: Vec<FailedStage> = self
            .failed
            .iter()
            .filter(|f| failed_rows.contains(&f.stage.as_str()))
            .cloned()
            .collect();
        let mut notification = Notification {
            text: String::new(),
            pipeline: run.pipeline.clone(),
            result: RunResult::of_exit_code(summary.exit_code).as_str(),
            exit_code: summary.exit_code,
            events,
            host: self.host.clone(),
            trigger: run.trigger,
            commit: self.commit.clone(),
            started_at: run.at.to_rfc3339_opts(SecondsFormat::Millis, false),
            failed,
            log_s3,
            log: run.log.as_ref().map(|p| p.display().to_string()),
            command: stem.map(|stem| format!("pydeployer logs {stem}")),
        };
        notification.text = render_text(&notification);
        if let Some(sns) = sns {
            let item = Item::Sns {
                topic: sns.topic.clone(),
                region: sns.region.clone(),
                endpoint: sns.endpoint.clone(),
                subject: subject(&notification),
                message: cut(&notification.text, MAX_MESSAGE - 1024),
                id: format!("{}-{}", notification.started_at, std::process::id())
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect(),
            };
            self.outbox.put(&item, None)?;
        }
        for hook in hooks {
            let mut body = serde_json::to_string(&notification).map_err(io::Error::other)?;
            if body.len() > MAX_MESSAGE {
                // Only the output lines can make it that large.
                let mut smaller = serde_json::to_value(&notification).map_err(io::Error::other)?;
                smaller["failed"] = serde_json::Value::Array(Vec::new());
                body = smaller.to_string();
            }
            let item = Item::Webhook {
                env: hook.env.clone(),
                body,
            };
            self.outbox.put(&item, None)?;
        }
        Ok(())
    }

    fn upload(
        &self,
        s3: &S3Destination,
        key: String,
        content_type: &str,
        what: &str,
        body: Body<'_>,
    ) -> io::Result<()> {
        let item = Item::S3 {
            bucket: s3.target.bucket.clone(),
            key,
            region: s3.region.clone(),
            endpoint: s3.target.endpoint.clone(),
            content_type: content_type.to_owned(),
            what: what.to_owned(),
        };
        self.outbox.put(&item, Some(body)).map(|_| ())
    }
}

impl super::Sink for CloudSink {
    fn report(&mut self, event: &RunEvent) -> io::Result<()> {
        match event {
            RunEvent::RunStarted(header) => {
                self.run = Some(Started {
                    pipeline: header.pipeline.clone(),
                    trigger: header.trigger,
                    at: header.started_at,
                    log: header.log.clone(),
                });
            }
            RunEvent::StageStarted { stage, .. } => {
                self.tails.remove(stage);
            }
            RunEvent::StageOutput { stage, bytes, .. } => self.tail(stage, bytes),
            RunEvent::StageFinished {
                stage,
                outcome,
                deploy,
                will_retry,
                ..
            } => {
                if let Some(deploy) = deploy {
                    self.commit = deploy.commit.as_ref().map(|c| c.as_str().to_owned());
                    if deploy.kind == DeployKind::Rollback && outcome.passed() {
                        self.rolled_back = true;
                    }
                    // An environment's health check failed after the push.
                    if deploy
                        .health
                        .as_ref()
                        .is_some_and(|h| h.result == HealthResult::Unhealthy)
                    {
                        self.unhealthy = true;
                    }
                    if let Some(rollback) = &deploy.auto_rollback {
                        self.rolled_back = true;
                        self.commit = rollback.commit.as_ref().map(|c| c.as_str().to_owned());
                    }
                }
                let tail = self.tails.remove(stage).unwrap_or_default();
                if !outcome.passed() && !will_retry {
                    self.failed.push(FailedStage {
                        stage: stage.to_string(),
                        exit_code: match outcome {
                            Outcome::Failed { code, .. } => *code,
                            _ => None,
                        },
                        detail: outcome.describe(),
                        last_lines: tail.into(),
                    });
                }
            }
            RunEvent::StageSkipped { .. } => {}
            RunEvent::RunFinished(summary) => self.finished(summary)?,
        }
        Ok(())
    }
}

/// The notification as text: SNS's message, and `text` of the webhook's JSON.
fn render_text(n: &Notification) -> String {
    let mut text = format!(
        "{} {} on {} (exit code {})\n\n",
        n.pipeline, n.result, n.host, n.exit_code
    );
    text.push_str(&format!("pipeline: {}\n", n.pipeline));
    text.push_str(&format!(
        "result:   {} (exit code {})\n",
        n.result, n.exit_code
    ));
    text.push_str(&format!("host:     {}\n", n.host));
    text.push_str(&format!("trigger:  {}\n", trigger_name(n.trigger)));
    text.push_str(&format!(
        "commit:   {}\n",
        n.commit.as_deref().unwrap_or("(none deployed)")
    ));
    text.push_str(&format!("started:  {}\n", n.started_at));
    if n.events.contains(&NotifyOn::Rollback) {
        text.push_str("rollback: this run pushed a rollback\n");
    }
    for stage in &n.failed {
        text.push_str(&format!(
            "\nfailed stage: {} — {}",
            stage.stage, stage.detail
        ));
        if let Some(code) = stage.exit_code {
            text.push_str(&format!(" (exit code {code})"));
        }
        text.push('\n');
        if !stage.last_lines.is_empty() {
            text.push_str(&format!("last lines of {}:\n", stage.stage));
            for line in &stage.last_lines {
                text.push_str(&format!("  | {line}\n"));
            }
        }
    }
    text.push('\n');
    match &n.log_s3 {
        Some(url) => text.push_str(&format!("log in S3: {url}\n")),
        None => text.push_str("log in S3: not uploaded (no `cloud.s3`)\n"),
    }
    if let Some(command) = &n.command {
        text.push_str(&format!("on {}: {command}\n", n.host));
    }
    text
}

fn trigger_name(trigger: Trigger) -> &'static str {
    trigger.name()
}

/// SNS's subject: printable ASCII, under 100 characters.
fn subject(n: &Notification) -> String {
    let mut subject = format!("pydeployer: {} {} on {}", n.pipeline, n.result, n.host);
    if let Some(first) = n.failed.first() {
        subject.push_str(&format!(" ({}: {})", first.stage, first.detail));
    }
    let subject: String = subject
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    cut(&subject, 99)
}

/// `text` cut to at most `max` bytes, on a character boundary, with `…` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is NUL-terminated when it fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_stay_under_snss_limit() {
        let n = Notification {
            text: String::new(),
            pipeline: "p".repeat(150),
            result: "failed",
            exit_code: 1,
            events: vec![NotifyOn::Failure],
            host: "hôst".into(),
            trigger: Trigger::Manual,
            commit: None,
            started_at: String::new(),
            failed: Vec::new(),
            log_s3: None,
            log: None,
            command: None,
        };
        let s = subject(&n);
        assert!(s.len() < 100, "{}", s.len());
        assert!(s.chars().all(|c| c.is_ascii_graphic() || c == ' '));
        assert_eq!(cut("héllo", 4), "h...");
    }
}
