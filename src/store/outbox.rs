//! `.pydeployer/outbox/`: what a run has to send (uploads, messages, webhook POSTs) until it is
//! sent. A run puts its items here first and then sends the whole outbox, so an item that could
//! not be sent (or a run killed while sending) is simply still here for the next run or
//! `pydeployer sync`.
//!
//! An item is `<id>.json` (what to send, where) and, for an upload, `<id>.body` (the bytes: a
//! hard link to the run's log when it can be, else a copy). The JSON is written last, under a
//! temporary name renamed into place, so a half-written item is never read. Sending one
//! claims it by renaming `<id>.json` to `<id>.claim-<pid>`: two senders at once never both
//! send it, and the claim of a sender that died goes back to the outbox.
//!
//! What is read back is untrusted input: only regular files are read, each of bounded size,
//! and every value is checked (bucket, key, region, ARN, endpoint, variable name) before it
//! reaches a request. A webhook's URL is never written here, only the name of its variable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

use crate::config::{check_bucket, check_endpoint, is_env_name, is_region, topic_region};

/// An item's JSON larger than this is refused.
const MAX_ITEM: u64 = 1024 * 1024;
/// S3's largest object.
const MAX_BODY: u64 = 5 * 1024 * 1024 * 1024 * 1024;
/// SNS's largest message, and so the largest notification.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// One thing to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Item {
    /// An upload of `<id>.body` to `s3://bucket/key`.
    S3 {
        bucket: String,
        key: String,
        region: String,
        /// `endpoint:` of the pipeline; `None`: the AWS variables, else AWS.
        endpoint: Option<String>,
        content_type: String,
        /// For messages: `the run log logs/….log`.
        what: String,
    },
    /// An SNS `Publish`.
    Sns {
        topic: String,
        region: String,
        endpoint: Option<String>,
        subject: String,
        message: String,
        /// Also the deduplication id of a FIFO topic.
        id: String,
    },
    /// A JSON POST to the URL in the variable `env`.
    Webhook { env: String, body: String },
}

impl Item {
    /// What it is, for messages: `s3://acme-ci/app/logs/x.log`, `SNS message to arn:…`.
    pub fn describe(&self) -> String {
        match self {
            Item::S3 { bucket, key, .. } => format!("s3://{bucket}/{key}"),
            Item::Sns { topic, .. } => format!("SNS message to {topic}"),
            Item::Webhook { env, .. } => format!("webhook ${env}"),
        }
    }

    /// Every value as a request may take it; the error says what is wrong.
    fn check(&self) -> Result<(), String> {
        let endpoint = |e: &Option<String>| match e {
            Some(url) => check_endpoint(url)
                .map(|_| ())
                .map_err(|why| format!("endpoint: {why}")),
            None => Ok(()),
        };
        match self {
            Item::S3 {
                bucket,
                key,
                region,
                endpoint: url,
                content_type,
                what,
            } => {
                check_bucket(bucket).map_err(|why| format!("bucket: {why}"))?;
                if key.is_empty()
                    || key.len() > 1024
                    || key.starts_with('/')
                    || key.chars().any(char::is_control)
                    || key.split('/').any(|p| p == ".." || p == ".")
                {
                    return Err("key: not a plain S3 key".into());
                }
                if !is_region(region) {
                    return Err("region: not an AWS region".into());
                }
                endpoint(url)?;
                if content_type.len() > 200
                    || !content_type
                        .chars()
                        .all(|c| c.is_ascii_graphic() || c == ' ')
                {
                    return Err("content_type: not a media type".into());
                }
                if what.len() > 4096 || what.chars().any(char::is_control) {
                    return Err("what: not one line".into());
                }
                Ok(())
            }
            Item::Sns {
                topic,
                region,
                endpoint: url,
                subject,
                message,
                id,
            } => {
                if topic_region(topic).as_ref() != Ok(region) {
                    return Err("topic: not an SNS topic ARN of that region".into());
                }
                endpoint(url)?;
                if subject.is_empty()
                    || subject.len() >= 100
                    || !subject.chars().all(|c| c.is_ascii_graphic() || c == ' ')
                {
                    return Err("subject: not 1 to 99 printable ASCII characters".into());
                }
                if message.is_empty() || message.len() > MAX_MESSAGE {
                    return Err("message: empty or larger than 256 KiB".into());
                }
                if !is_id(id) {
                    return Err("id: not an outbox id".into());
                }
                Ok(())
            }
            Item::Webhook { env, body } => {
                if !is_env_name(env) {
                    return Err("env: not a variable name".into());
                }
                if body.len() > MAX_MESSAGE
                    || serde_json::from_str::<serde_json::Value>(body).is_err()
                {
                    return Err("body: not a JSON document of at most 256 KiB".into());
                }
                Ok(())
            }
        }
    }
}

/// The bytes of an upload, as a run hands them over.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// A file: hard-linked into the outbox when it can be (no copy of a large log), else copied.
    File(&'a Path),
    Bytes(&'a [u8]),
}

/// The folder.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
}

/// An item taken out of the outbox to be sent; give it back with [`Claimed::release`] or end it
/// with [`Claimed::done`].
#[derive(Debug)]
pub struct Claimed {
    pub id: String,
    pub item: Item,
    claim: PathBuf,
    body: PathBuf,
    dir: PathBuf,
}

/// Items are named in the order they were made: the time, the process, a counter.
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

impl Outbox {
    /// `dir` (`.pydeployer/outbox`), created if needed; a symbolic link or a file in its place
    /// is refused.
    pub fn open(dir: PathBuf) -> io::Result<Outbox> {
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
        if !fs::symlink_metadata(&dir)?.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a folder (a symbolic link or a file is in its place); remove it",
                dir.display()
            )));
        }
        Ok(Outbox { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Adds an item (with its bytes, for an upload); returns its id.
    pub fn put(&self, item: &Item, body: Option<Body<'_>>) -> io::Result<String> {
        item.check().map_err(io::Error::other)?;
        let id = format!(
            "{}-{}-{:04}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let body_path = self.dir.join(format!("{id}.body"));
        match body {
            Some(Body::File(path)) if fs::hard_link(path, &body_path).is_err() => {
                let mut from = File::open(path)?;
                let mut to = create_new(&body_path)?;
                io::copy(&mut from, &mut to)?;
                to.sync_all()?;
            }
            Some(Body::File(_)) | None => {}
            Some(Body::Bytes(bytes)) => {
                let mut to = create_new(&body_path)?;
                to.write_all(bytes)?;
                to.sync_all()?;
            }
        }
        let text = serde_json::to_vec_pretty(item).map_err(io::Error::other)?;
        let temporary = self.dir.join(format!("{id}.tmp"));
        let mut file = create_new(&temporary)?;
        file.write_all(&text)?;
        file.sync_all()?;
        fs::rename(&temporary, self.dir.join(format!("{id}.json")))?;
        Ok(id)
    }

    /// Every item waiting, claimed by this process, oldest first; and the files that are not
    /// items (each with why), which are left where they are and never sent.
    pub fn claim_all(&self) -> io::Result<(Vec<Claimed>, Vec<String>)> {
        let mut ids = Vec::new();
        let mut refused = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else {
                refused.push(format!("{}: not a UTF-8 name", name.to_string_lossy()));
                continue;
            };
            if let Some(id) = name.strip_suffix(".json") {
                ids.push(id.to_owned());
            } else if let Some((id, pid)) = name.split_once(".claim-") {
                // A sender that died left its claim: the item goes back.
                let dead = pid.parse::<i32>().is_ok_and(|pid| !alive(pid));
                if dead
                    && is_id(id)
                    && fs::rename(self.dir.join(name), self.dir.join(format!("{id}.json"))).is_ok()
                {
                    ids.push(id.to_owned());
                }
            }
        }
        ids.sort();
        ids.dedup();
        let mut claimed = Vec::new();
        for id in ids {
            if !is_id(&id) {
                refused.push(format!("{id}.json: not an outbox item name"));
                continue;
            }
            let claim = self.dir.join(format!("{id}.claim-{}", std::process::id()));
            // Another sender took it first.
            if fs::rename(self.dir.join(format!("{id}.json")), &claim).is_err() {
                continue;
            }
            match read_item(&claim) {
                Ok(item) => claimed.push(Claimed {
                    body: self.dir.join(format!("{id}.body")),
                    dir: self.dir.clone(),
                    id,
                    item,
                    claim,
                }),
                Err(why) => {
                    refused.push(format!("{id}.json: {why}"));
                    let _ = fs::rename(&claim, self.dir.join(format!("{id}.json")));
                }
            }
        }
        Ok((claimed, refused))
    }
}

impl Claimed {
    /// The bytes of an upload: a regular file (never through a symbolic link) and its size.
    pub fn body(&self) -> io::Result<(File, u64)> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.body)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("its body is not a regular file"));
        }
        if meta.len() > MAX_BODY {
            return Err(io::Error::other("its body is larger than S3 takes (5 TiB)"));
        }
        Ok((file, meta.len()))
    }

    /// Sent: the item and its bytes are removed.
    pub fn done(self) {
        let _ = fs::remove_file(&self.body);
        let _ = fs::remove_file(&self.claim);
    }

    /// Not sent: back to the outbox.
    pub fn release(self) {
        let _ = fs::rename(&self.claim, self.dir.join(format!("{}.json", self.id)));
    }
}

fn read_item(path: &Path) -> Result<Item, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| err.to_string())?;
    let meta = file.metadata().map_err(|err| err.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_ITEM {
        return Err("larger than 1 MiB".into());
    }
    let mut text = Vec::new();
    file.take(MAX_ITEM)
        .read_to_end(&mut text)
        .map_err(|err| err.to_string())?;
    let item: Item = serde_json::from_slice(&text).map_err(|err| format!("not an item: {err}"))?;
    item.check()?;
    Ok(item)
}

/// `20260101T120000.123Z-4242-0001`: what [`Outbox::put`] names items.
fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with(['.', '-'])
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_item(key: &str) -> Item {
        Item::S3 {
            bucket: "acme-ci".into(),
            key: key.into(),
            region: "eu-west-3".into(),
            endpoint: None,
            content_type: "text/plain; charset=utf-8".into(),
            what: "the run log".into(),
        }
    }

    #[test]
    fn items_go_in_and_come_out_once() {
        let root = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(root.path().join("outbox")).unwrap();
        let log = root.path().join("run.log");
        fs::write(&log, "hello\n").unwrap();
        let first = outbox
            .put(&s3_item("app/logs/run.log"), Some(Body::File(&log)))
            .unwrap();
        outbox
            .put(
                &Item::Webhook {
                    env: "HOOK".into(),
                    body: "{}".into(),
                },
                None,
            )
            .unwrap();
        let (claimed, refused) = outbox.claim_all().unwrap();
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(claimed.len(), 2);
        assert_eq!(claimed[0].id, first);
        let (mut body, len) = claimed[0].body().unwrap();
        let mut text = String::new();
        body.read_to_string(&mut text).unwrap();
        assert_eq!((text.as_str(), len), ("hello\n", 6));
        // Claimed items are not claimed again.
        assert!(outbox.claim_all().unwrap().0.is_empty());
        let mut claimed = claimed.into_iter();
        claimed.next().unwrap().done();
        claimed.next().unwrap().release();
        let (again, _) = outbox.claim_all().unwrap();
        assert_eq!(again.len(), 1);
        assert!(matches!(again[0].item, Item::Webhook { .. }));
    }

    #[test]
    fn what_is_read_back_is_checked() {
        let root = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(root.path().join("outbox")).unwrap();
        let dir = outbox.path();
        fs::write(dir.join("a.json"), "not json").unwrap();
        fs::write(
            dir.join("b.json"),
            r#"{"kind":"s3","bucket":"My_Bucket","key":"k","region":"eu-west-3","endpoint":null,"content_type":"x","what":"w"}"#,
        )
        .unwrap();
        fs::write(
            dir.join("c.json"),
            r#"{"kind":"webhook","env":"HOOK","body":"{}","url":"http://x"}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("d.json")).unwrap();
        fs::write(dir.join("e.json"), vec![b' '; 2 * 1024 * 1024]).unwrap();
        let (claimed, refused) = outbox.claim_all().unwrap();
        assert!(claimed.is_empty());
        assert_eq!(refused.len(), 5, "{refused:?}");
        // Refused files stay where they were.
        assert!(dir.join("a.json").exists());
        assert!(outbox.put(&s3_item("../x"), None).is_err());
    }

    #[test]
    fn a_symlinked_body_is_not_read() {
        let root = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(root.path().join("outbox")).unwrap();
        let id = outbox.put(&s3_item("k"), Some(Body::Bytes(b"x"))).unwrap();
        let body = outbox.path().join(format!("{id}.body"));
        fs::remove_file(&body).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &body).unwrap();
        let (claimed, _) = outbox.claim_all().unwrap();
        assert!(claimed[0].body().is_err());
    }
}
