//! The deploy ledger (`archive/deploy_history.json` by default): one JSON object per deploy or
//! rollback, in a JSON array.
//!
//! This module owns the file's format, reading it, and appending to it. An append rewrites the
//! whole array through a temporary file in the same folder, synced and then renamed over the
//! ledger, so a crash leaves either the old file or the new one, never half of one. A ledger
//! that does not parse is never written, renamed or removed: the user gets an error that says
//! which file and where, and decides what to do with it.
//!
//! Concurrent appends are not locked against each other. An append re-reads the file just before
//! writing and builds on what is on disk, which covers a second run that finished while this one
//! was going; two appends in the same instant may still race, and the later rename wins.

use std::fmt::{self, Display};
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, Local, SubsecRound};
use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::events::{Approval, HealthReport, HealthResult, Trigger};
use crate::object_id::ObjectId;

/// One recorded deploy or rollback, as stored in the file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Entry {
    /// 1 for the first entry, then one more than the highest id in the file.
    pub id: u64,
    pub kind: Kind,
    pub status: Status,
    pub started_at: DateTime<FixedOffset>,
    pub finished_at: DateTime<FixedOffset>,
    /// The repository that was deployed (its URL or path, as configured).
    pub repo: String,
    /// The git remote pushed to.
    pub remote: String,
    /// The branch pushed to.
    pub branch: String,
    /// The commit that was pushed; `None` when the deploy failed before there was one.
    /// Checked as it is read: a value that is not a full object id makes the file invalid.
    pub commit: Option<ObjectId>,
    /// What the branch pointed at before; `None` when it did not exist or could not be read.
    pub previous_commit: Option<ObjectId>,
    /// The run log of the run that did it.
    pub log: Option<PathBuf>,
    /// Deployed with `--force`, although it had not passed the stages its deploy needs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// A `publish` entry: what went to the package index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishRecord>,
    /// Why the run that did it started: `manual`, `watch`, `schedule`, `promote`, `auto`
    /// (newer versions may write others; any text is kept as it is). Missing in entries
    /// written before triggers were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The environment deployed to (`environments:`); `None`: `repo.remote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The user who approved the deploy, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<DateTime<FixedOffset>>,
    /// The environment's health check after the push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReport>,
    /// A rollback: the entry whose files it gave back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<u64>,
    /// Fields this version does not know (written by a newer one): kept as they are, and
    /// written back by the next append.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// What a `python/publish` stage uploaded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PublishRecord {
    pub package: String,
    pub version: String,
    /// The index's upload URL.
    pub index: String,
    /// Each file's name and SHA-256 (`null` when it could not be read).
    pub files: Vec<PublishedFileRecord>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PublishedFileRecord {
    pub name: String,
    pub sha256: Option<String>,
}

/// What an entry records.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Deploy,
    Rollback,
    /// A package uploaded to an index (`python/publish`); never a place to roll back to.
    Publish,
}

/// How it ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Failed,
    /// The run was interrupted while the stage ran.
    Cancelled,
    /// It passed, and pushed nothing: the branch already held that commit.
    #[serde(rename = "up_to_date")]
    UpToDate,
    /// It was pushed, and the environment's health check failed.
    Unhealthy,
}

impl Kind {
    /// The word stored in the file: `deploy` or `rollback`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deploy => "deploy",
            Kind::Rollback => "rollback",
            Kind::Publish => "publish",
        }
    }
}

impl Status {
    /// The word stored in the file: `success`, `failed` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::UpToDate => "up_to_date",
            Status::Unhealthy => "unhealthy",
        }
    }
}

impl Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Entry {
    /// It changed what the target holds: pushed (even if then found unhealthy), or found
    /// there already.
    pub fn went_live(&self) -> bool {
        matches!(
            self.status,
            Status::Success | Status::UpToDate | Status::Unhealthy
        ) && self.commit.is_some()
    }

    /// It went live and no health check found it unhealthy.
    pub fn healthy(&self) -> bool {
        self.went_live()
            && self.status != Status::Unhealthy
            && self
                .health
                .as_ref()
                .is_none_or(|h| h.result == HealthResult::Healthy)
    }
}

/// What went live on one target (the entries `on` picks), oldest first, as rollbacks left it:
/// a rollback to entry X takes away what came after X and stands in X's place (its commit has
/// X's files). The last is what is live now; the one before it, where `rollback` returns to.
pub fn live_stack(entries: &[Entry], on: impl Fn(&Entry) -> bool) -> Vec<&Entry> {
    let mut stack: Vec<&Entry> = Vec::new();
    for entry in entries.iter().filter(|e| on(e) && e.went_live()) {
        match entry.kind {
            Kind::Deploy => stack.push(entry),
            // What went to a package index is not on a deploy target.
            Kind::Publish => {}
            Kind::Rollback => {
                match entry
                    .rolled_back_to
                    .and_then(|to| stack.iter().rposition(|e| e.id == to))
                {
                    Some(at) => stack.truncate(at),
                    // An entry written before rollbacks named their target: one step back.
                    None => {
                        stack.pop();
                        stack.pop();
                    }
                }
                stack.push(entry);
            }
        }
    }
    stack
}

/// A temporary ledger file this old was left by a run that died mid-write.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_mins(10);

/// An entry to append: everything but the id, which the ledger assigns.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEntry {
    pub kind: Kind,
    pub status: Status,
    pub started_at: DateTime<Local>,
    pub finished_at: DateTime<Local>,
    pub repo: String,
    pub remote: String,
    pub branch: String,
    pub commit: Option<ObjectId>,
    pub previous_commit: Option<ObjectId>,
    pub log: Option<PathBuf>,
    pub forced: bool,
    pub publish: Option<PublishRecord>,
    pub environment: Option<String>,
    pub trigger: Trigger,
    pub approved_by: Option<Approval>,
    pub health: Option<HealthReport>,
    pub rolled_back_to: Option<u64>,
}

impl NewEntry {
    fn with_id(self, id: u64) -> Entry {
        Entry {
            id,
            kind: self.kind,
            status: self.status,
            // Milliseconds are plenty for a deploy and keep the file readable.
            started_at: self.started_at.fixed_offset().trunc_subsecs(3),
            finished_at: self.finished_at.fixed_offset().trunc_subsecs(3),
            repo: self.repo,
            remote: self.remote,
            branch: self.branch,
            commit: self.commit,
            previous_commit: self.previous_commit,
            forced: self.forced,
            publish: self.publish,
            environment: self.environment,
            trigger: Some(self.trigger.name().to_owned()),
            approved_by: self.approved_by.as_ref().map(|a| a.by.clone()),
            approved_at: self.approved_by.map(|a| a.at.trunc_subsecs(0)),
            health: self.health,
            rolled_back_to: self.rolled_back_to,
            // JSON strings are UTF-8: a path that is not would make the whole append fail,
            // and a slightly mangled log path is better than a deploy left unrecorded.
            log: self
                .log
                .map(|path| PathBuf::from(path.to_string_lossy().into_owned())),
            other: serde_json::Map::new(),
        }
    }
}

/// Why the ledger could not be read. The file is left as it was in every case.
#[derive(Debug, Error, Diagnostic)]
pub enum LedgerError {
    #[error("cannot read the deploy ledger {}", path.display())]
    #[diagnostic(help(
        "the file was left untouched; check that it is a readable file (not a folder) \
             and run again"
    ))]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the deploy ledger {} cannot be used: {source}", path.display())]
    #[diagnostic(help(
        "the ledger must be a regular file (or not exist yet); set `archive:` to a file path \
         and run again; nothing was run or written"
    ))]
    NotAFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the deploy ledger {} is not a valid deploy history: {reason}", path.display())]
    #[diagnostic(
        help(
            "the file was left untouched; fix or move it away (e.g. `mv {} {}.bad`) and run again",
            path.display(),
            path.display()
        )
    )]
    Corrupt {
        path: PathBuf,
        /// serde_json's account of the problem, with its line and column.
        reason: String,
    },
}

/// The ledger as read from its file, and the way to add to it.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    entries: Vec<Entry>,
}

impl Ledger {
    /// Reads the ledger at `path`. A missing file is an empty ledger, and nothing is created
    /// until the first [`append`](Ledger::append).
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        Ok(Ledger {
            path: path.to_path_buf(),
            entries: read_entries(path)?,
        })
    }

    /// Every entry, in the order of the file (oldest first).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.id == id)
    }

    /// Before a run that may deploy: removes temporary files an earlier run left when it was
    /// killed mid-write (those older than ten minutes), then proves that the folder takes a write the size of the next rewrite, so
    /// a full or read-only disk is found before anything is pushed, not after.
    pub fn prepare_for_run(&self) -> io::Result<()> {
        crate::files::check_replaceable(&self.path)?;
        // The next id must exist: found now, before a push, not when recording it.
        if self.entries.iter().any(|e| e.id == u64::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} already uses the highest possible id, so no further deploy could be \
                     recorded; renumber its entries (or start a new ledger)",
                    self.path.display()
                ),
            ));
        }
        let parent = parent_folder(&self.path);
        fs::create_dir_all(parent)?;
        let prefix = temp_prefix(&self.path);
        for entry in fs::read_dir(parent)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Only old ones: a ledger shared by several projects (each with its own lock) may
            // have another run's write in progress.
            let stale = entry
                .metadata()?
                .modified()?
                .elapsed()
                .is_ok_and(|age| age > STALE_TEMP);
            if name.starts_with(&prefix)
                && name.ends_with(".tmp")
                && entry.file_type()?.is_file()
                && stale
            {
                fs::remove_file(entry.path())?;
            }
        }
        let size = fs::metadata(&self.path).map_or(0, |m| m.len()) + 4096;
        let mut probe = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .tempfile_in(parent)?;
        let block = [b' '; 4096];
        let mut left = usize::try_from(size).unwrap_or(usize::MAX);
        while left > 0 {
            let n = left.min(block.len());
            probe.write_all(&block[..n])?;
            left -= n;
        }
        probe.as_file().sync_all()?;
        probe.close()
    }

    /// Records `entry` under the next id and rewrites the file atomically.
    ///
    /// The file is read again first, and what is on disk is the base: entries another run
    /// appended since [`open`](Ledger::open) are kept and the new id follows theirs. If the file
    /// no longer parses, or holds fewer entries than when it was opened (something other than
    /// an append changed it), nothing is written and the error (kind `InvalidData`) says why.
    pub fn append(&mut self, entry: NewEntry) -> io::Result<&Entry> {
        let mut entries = match read_entries(&self.path) {
            Ok(entries) => entries,
            Err(err) => {
                let kind = match &err {
                    LedgerError::Io { source, .. } | LedgerError::NotAFile { source, .. } => {
                        source.kind()
                    }
                    LedgerError::Corrupt { .. } => io::ErrorKind::InvalidData,
                };
                return Err(io::Error::new(kind, err));
            }
        };
        if entries.len() < self.entries.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the deploy ledger {} now holds {} entries, fewer than the {} it held when \
                     this run read it; something changed it meanwhile, so it was not overwritten",
                    self.path.display(),
                    entries.len(),
                    self.entries.len()
                ),
            ));
        }
        let id = entries
            .iter()
            .map(|e| e.id)
            .max()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the deploy ledger {} already uses the highest possible id",
                        self.path.display()
                    ),
                )
            })?;
        entries.push(entry.with_id(id));
        write_atomically(&self.path, &entries)?;
        self.entries = entries;
        Ok(&self.entries[self.entries.len() - 1])
    }
}

/// The entries in the file at `path`; none when it is missing or blank.
fn read_entries(path: &Path) -> Result<Vec<Entry>, LedgerError> {
    let bytes = match crate::files::read_regular(path, super::LEDGER_LIMIT) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source)
            if matches!(
                source.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData
            ) =>
        {
            return Err(LedgerError::NotAFile {
                path: path.to_path_buf(),
                source,
            });
        }
        Err(source) => {
            return Err(LedgerError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    // A file created empty (`touch`) holds nothing yet; treating it as corrupt would only annoy.
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|err| LedgerError::Corrupt {
        path: path.to_path_buf(),
        reason: err.to_string(),
    })
}

fn parent_folder(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Temporary files are named after the ledger, so one left by a power cut says what it was
/// (and the next run can remove it).
fn temp_prefix(path: &Path) -> String {
    format!(
        ".{}.",
        path.file_name()
            .map_or_else(|| "ledger".into(), |name| name.to_string_lossy())
    )
}

/// Replaces the file at `path` with `entries`, through a synced temporary file and a rename.
fn write_atomically(path: &Path, entries: &[Entry]) -> io::Result<()> {
    let parent = parent_folder(path);
    fs::create_dir_all(parent)?;

    let mut json = serde_json::to_vec_pretty(entries)?;
    json.push(b'\n');

    let mut temp = tempfile::Builder::new()
        .prefix(&temp_prefix(path))
        .suffix(".tmp")
        .tempfile_in(parent)?;
    // The temporary file is created private; the rewrite should not change who can read it.
    if let Ok(meta) = fs::metadata(path) {
        temp.as_file().set_permissions(meta.permissions())?;
    }
    temp.write_all(&json)?;
    temp.as_file().sync_all()?;
    // Checked again just before the rename: a device or FIFO put there since is not replaced.
    crate::files::check_replaceable(path)?;
    // On failure the returned temporary file is dropped, which removes it.
    temp.persist(path).map_err(|err| err.error)?;

    // Makes the rename itself durable. Not every platform can sync a folder, and the data is
    // already safe in the file, so a failure here is not worth failing the deploy over.
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::TimeZone;

    use chrono::Duration;
    use tempfile::TempDir;

    use super::*;

    fn at(h: u32, m: u32, s: u32, ms: i64) -> DateTime<Local> {
        Local
            .with_ymd_and_hms(2024, 3, 5, h, m, s)
            .single()
            .expect("unambiguous local time")
            + Duration::milliseconds(ms)
    }

    /// A commit id made of one repeated hex digit.
    fn oid(digit: char) -> ObjectId {
        digit.to_string().repeat(40).parse().expect("an object id")
    }

    fn deploy(commit: Option<char>) -> NewEntry {
        NewEntry {
            kind: Kind::Deploy,
            status: Status::Success,
            started_at: at(12, 0, 0, 0),
            finished_at: at(12, 0, 4, 250),
            repo: "https://example.com/app.git".into(),
            remote: "origin".into(),
            branch: "master".into(),
            commit: commit.map(oid),
            previous_commit: None,
            log: Some(PathBuf::from("logs/2024-03-05_12-00-00.log")),
            forced: false,
            publish: None,
            environment: None,
            trigger: Trigger::Manual,
            approved_by: None,
            health: None,
            rolled_back_to: None,
        }
    }

    fn ledger_path(dir: &TempDir) -> PathBuf {
        dir.path().join("archive").join("deploy_history.json")
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_missing_file_is_an_empty_ledger_and_nothing_is_created() {
        let dir = TempDir::new().expect("temp dir");
        let path = ledger_path(&dir);
        let ledger = Ledger::open(&path).expect("open");
        assert!(ledger.entries().is_empty());
        assert_eq!(ledger.path(), path);
        assert!(!dir.path().join("archive").exists());
    }

    #[test]
    fn appends_number_entries_and_write_the_documented_fields() {
        let dir = TempDir::new().expect("temp dir");
        let path = ledger_path(&dir);
        let mut ledger = Ledger::open(&path).expect("open");
        assert_eq!(ledger.append(deploy(Some('a'))).expect("append").id, 1);
        let mut rollback = deploy(None);
        rollback.kind = Kind::Rollback;
        rollback.status = Status::Failed;
        rollback.previous_commit = Some(oid('a'));
        rollback.log = None;
        assert_eq!(ledger.append(rollback).expect("append").id, 2);

        let text = fs::read_to_string(&path).expect("read ledger");
        assert!(text.ends_with("]\n"));
        let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let array = json.as_array().expect("a JSON array");
        assert_eq!(array.len(), 2);
        let expected: BTreeSet<&str> = [
            "id",
            "kind",
            "status",
            "started_at",
            "finished_at",
            "repo",
            "remote",
            "branch",
            "commit",
            "previous_commit",
            "log",
            "trigger",
        ]
        .into();
        for object in array {
            let keys: BTreeSet<&str> = object
                .as_object()
                .expect("an object")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, expected);
        }
        let (first, second) = (&array[0], &array[1]);
        assert_eq!(first["id"], 1);
        assert_eq!(first["kind"], "deploy");
        assert_eq!(first["status"], "success");
        assert_eq!(first["commit"], "a".repeat(40));
        assert_eq!(first["previous_commit"], serde_json::Value::Null);
        assert_eq!(first["log"], "logs/2024-03-05_12-00-00.log");
        let finished = first["finished_at"].as_str().expect("a string");
        let finished = DateTime::parse_from_rfc3339(finished).expect("RFC 3339");
        assert_eq!(finished, at(12, 0, 4, 250).fixed_offset());
        assert_eq!(second["id"], 2);
        assert_eq!(second["kind"], "rollback");
        assert_eq!(second["status"], "failed");
        assert_eq!(second["commit"], serde_json::Value::Null);
        assert_eq!(second["previous_commit"], "a".repeat(40));
        assert_eq!(second["log"], serde_json::Value::Null);

        let reopened = Ledger::open(&path).expect("reopen");
        assert_eq!(reopened.entries(), ledger.entries());
        assert_eq!(reopened.get(2).map(|e| e.kind), Some(Kind::Rollback));
        assert_eq!(reopened.get(3), None);
    }

    #[test]
    fn a_corrupt_file_is_reported_and_left_untouched() {
        let dir = TempDir::new().expect("temp dir");
        let path = ledger_path(&dir);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let bytes = b"[\n  {\"id\": 1,\n   \"kind\": \"deploy\",,\n";
        fs::write(&path, bytes).expect("write");

        let err = Ledger::open(&path).expect_err("corrupt ledger");
        assert!(matches!(err, LedgerError::Corrupt { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("line 3 column"), "{message}");
        let help = err.help().expect("help").to_string();
        assert!(help.contains("left untouched"), "{help}");
        assert!(help.contains(".bad"), "{help}");

        assert_eq!(fs::read(&path).expect("read"), bytes);
        assert_eq!(
            files_in(path.parent().expect("parent")),
            ["deploy_history.json"]
        );
    }

    #[test]
    fn valid_json_of_the_wrong_shape_is_corrupt_too() {
        let dir = TempDir::new().expect("temp dir");
        let path = dir.path().join("deploy_history.json");
        for text in [
            "{\"id\": 1}",
            "[{\"id\": 1}]",
            "[{\"id\": 1, \"kind\": \"deploy\", \"note\": \"mine\"}]",
        ] {
            fs::write(&path, text).expect("write");
            let err = Ledger::open(&path).expect_err(text);
            assert!(
                matches!(err, LedgerError::Corrupt { .. }),
                "{text}: {err:?}"
            );
            assert_eq!(fs::read_to_string(&path).expect("read"), text);
        }
    }

    #[test]
    fn a_folder_or_a_device_in_place_of_the_file_is_refused() {
        let dir = TempDir::new().expect("temp dir");
        let err = Ledger::open(dir.path()).expect_err("a folder");
        assert!(matches!(err, LedgerError::NotAFile { .. }), "{err:?}");
        let err = Ledger::open(Path::new("/dev/null")).expect_err("a device");
        assert!(matches!(err, LedgerError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn a_commit_that_is_not_an_object_id_makes_the_file_invalid() {
        let dir = TempDir::new().expect("temp dir");
        let path = ledger_path(&dir);
        let mut ledger = Ledger::open(&path).expect("open");
        ledger.append(deploy(Some('a'))).expect("append");
        let good = fs::read_to_string(&path).expect("read");
        for bad in ["--output=victim.txt", "HEAD~3"] {
            let text = good.replace(&"a".repeat(40), bad);
            fs::write(&path, &text).expect("write");
            let err = Ledger::open(&path).expect_err(bad);
            assert!(matches!(err, LedgerError::Corrupt { .. }), "{err:?}");
            assert!(err.to_string().contains("not a full commit id"), "{err}");
            assert!(err.to_string().contains("line "), "{err}");
            assert!(ledger.append(deploy(None)).is_err());
            assert_eq!(fs::read_to_string(&path).expect("read"), text);
        }
    }

    #[test]
    fn unknown_fields_are_kept_by_the_next_append() {
        let dir = TempDir::new().expect("temp dir");
        let path = ledger_path(&dir);
        let mut ledger = Ledger::open(&path).expect("open");
        ledger.append(deploy(Some('a'))).expect("append");
        let text = fs::read_to_string(&path).expect("read").replace(
            "\"id\": 1,",
            "\"id\": 1,\n    \"dashboard\": {\"name\": \"staging\"},",
        );
        fs::write(&path, text).expect("write");
        let mut ledger = Ledger::open(&path).expect("a newer version's ledger");
        ledger.append(deploy(Some('b'))).expect("append");
        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).expect("read")).expect("JSON");
        assert_eq!(json[0]["dashboard"]["name"], "staging");
        assert_eq!(json[1].get("dashboard"), None);
    }

    #[test]
    fn an_empty_file_is_an_empty_ledger() {
        let dir = TempDir::new().expect("temp dir");
        let path = dir.path().join("deploy_history.json");
        fs::write(&path, "").expect("write");
        let mut ledger = Ledger::open(&path).expect("open");
        assert!(ledger.entries().is_empty());
        assert_eq!(ledger.append(deploy(None)).expect("append").id, 1);
    }

    #[test]
    fn append_builds_on_entries_another_run_added_since_open() {
        let dir = TempDir::new().expect("temp dir");
        let path = ledger_path(&dir);
        let mut this_run = Ledger::open(&path).expect("open");
        let mut other_run = Ledger::open(&path).expect("open");
        other_run.append(deploy(Some('a'))).expect("append");

        let appended = this_run.append(deploy(Some('b'))).expect("append");
        assert_eq!(appended.id, 2);
        let on_disk = Ledger::open(&path).expect("reopen");
        let commits: Vec<_> = on_disk
            .entries()
            .iter()
            .map(|e| (e.id, e.commit.as_ref().map(ObjectId::as_str)))
            .collect();
        assert_eq!(
            commits,
            [
                (1, Some("a".repeat(40).as_str())),
                (2, Some("b".repeat(40).as_str()))
            ]
        );
        assert_eq!(this_run.entries(), on_disk.entries());
    }

    #[test]
    fn append_leaves_a_file_that_became_corrupt_untouched() {
        let dir = TempDir::new().expect("temp dir");
        let path = ledger_path(&dir);
        let mut ledger = Ledger::open(&path).expect("open");
        ledger.append(deploy(Some('a'))).expect("append");
        fs::write(&path, "[ oops").expect("write");

        let err = ledger.append(deploy(Some('b'))).expect_err("corrupt");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("deploy_history.json"), "{err}");
        assert_eq!(fs::read_to_string(&path).expect("read"), "[ oops");
        assert_eq!(ledger.entries().len(), 1);
        assert_eq!(
            files_in(path.parent().expect("parent")),
            ["deploy_history.json"]
        );
    }

    #[test]
    fn append_refuses_a_file_that_lost_entries_since_open() {
        let dir = TempDir::new().expect("temp dir");
        let path = ledger_path(&dir);
        let mut ledger = Ledger::open(&path).expect("open");
        ledger.append(deploy(Some('a'))).expect("append");
        fs::write(&path, "[]\n").expect("write");

        let err = ledger.append(deploy(Some('b'))).expect_err("shrunk");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(fs::read_to_string(&path).expect("read"), "[]\n");
    }

    #[test]
    fn append_leaves_no_temporary_file_behind() {
        let dir = TempDir::new().expect("temp dir");
        let path = ledger_path(&dir);
        let mut ledger = Ledger::open(&path).expect("open");
        for _ in 0..3 {
            ledger.append(deploy(None)).expect("append");
        }
        assert_eq!(
            files_in(path.parent().expect("parent")),
            ["deploy_history.json"]
        );
    }
}
