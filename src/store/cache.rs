//! `.pydeployer/cache/<stage>.json`: the key of each stage's last successful run, and the
//! keys themselves.
//!
//! A stage's key is a BLAKE3 hash of its definition (action, `env:`, folder, `cache:`), the
//! values of the variables its `cache.env` names, the sorted paths and bytes of the files its
//! `cache.inputs` match, and the keys of the stages it needs (a need without `cache:` counts
//! with its definition and its own needs' keys). Files are hashed on every core; there is no
//! shortcut by size and modification time (a write within the same clock tick, or a tool that
//! restores times, would make it skip a stage that changed).
//!
//! An entry read back is untrusted: a regular file, at most [`MAX_ENTRY`] bytes, whose stage,
//! key and run are checked; anything else is a miss with a warning, never a hit.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::files;
use crate::pipeline::{Pipeline, Stage};

const VERSION: u32 = 1;
const MAX_ENTRY: u64 = 64 * 1024;

pub use crate::plan::cache::Entry;

fn folder(state_dir: &Path) -> PathBuf {
    state_dir.join("cache")
}

/// The stage's entry: `Ok(None)` when there is none, `Err` (a warning) when it cannot be
/// trusted.
pub fn lookup(state_dir: &Path, stage: &str) -> Result<Option<Entry>, String> {
    let path = folder(state_dir).join(format!("{stage}.json"));
    let meta = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cache entry {}: {err}", path.display())),
    };
    if !meta.is_file() {
        return Err(format!(
            "cache entry {} is not a regular file",
            path.display()
        ));
    }
    let mut text = String::new();
    fs::File::open(&path)
        .and_then(|f| f.take(MAX_ENTRY + 1).read_to_string(&mut text))
        .map_err(|err| format!("cache entry {}: {err}", path.display()))?;
    if text.len() as u64 > MAX_ENTRY {
        return Err(format!("cache entry {} is too large", path.display()));
    }
    let entry: Entry = serde_json::from_str(&text)
        .map_err(|err| format!("cache entry {} does not parse: {err}", path.display()))?;
    let hex = entry.key.len() == 64
        && entry
            .key
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let run_ok = !entry.run.is_empty()
        && entry.run.len() <= 64
        && entry
            .run
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b'_');
    if entry.version != VERSION || entry.stage != stage || !hex || !run_ok {
        return Err(format!("cache entry {} is not valid", path.display()));
    }
    Ok(Some(entry))
}

/// Records a successful run of `stage` with `key` (atomically).
pub fn save(state_dir: &Path, stage: &str, key: &str, run: &str) -> io::Result<()> {
    let dir = folder(state_dir);
    fs::create_dir_all(&dir)?;
    let entry = Entry {
        version: VERSION,
        stage: stage.to_owned(),
        key: key.to_owned(),
        run: run.to_owned(),
    };
    let mut file = tempfile::NamedTempFile::new_in(&dir)?;
    // One write, not one per token (an unbuffered writer costs a system call each).
    let mut text = serde_json::to_vec(&entry)?;
    text.push(b'\n');
    file.write_all(&text)?;
    file.as_file().sync_all()?;
    file.persist(dir.join(format!("{stage}.json")))
        .map_err(|e| e.error)?;
    Ok(())
}

/// Each `outputs` glob matches a regular file; else the first that does not.
pub fn missing_output(dir: &Path, outputs: &[String]) -> io::Result<Option<String>> {
    for pattern in outputs {
        let found = files::matching(dir, std::slice::from_ref(pattern))?;
        if !found.iter().any(|f| !f.symlink) {
            return Ok(Some(pattern.clone()));
        }
    }
    Ok(None)
}

/// The environment a stage's commands get (`None`: removed), as the actions make it.
pub type Environment = fn(&Pipeline, &Stage) -> BTreeMap<String, Option<String>>;

/// Stage keys, each computed once per run (a need's key is the one it had when its
/// dependents asked).
#[derive(Debug)]
pub struct Keys {
    known: HashMap<String, String>,
    /// Where the values of `cache.env`'s variables come from.
    environment: Environment,
}

impl Keys {
    pub fn new(environment: Environment) -> Keys {
        Keys {
            known: HashMap::new(),
            environment,
        }
    }

    /// The key of `stage`, as its files are now.
    pub fn key(&mut self, pipeline: &Pipeline, stage: &Stage) -> io::Result<String> {
        if let Some(key) = self.known.get(stage.name.as_str()) {
            return Ok(key.clone());
        }
        let mut needs = Vec::new();
        for need in &stage.needs {
            if let Some(need) = pipeline.stage(need.as_str()) {
                needs.push((need.name.to_string(), self.key(pipeline, need)?));
            }
        }
        let mut hasher = blake3::Hasher::new();
        field(&mut hasher, b"pydeployer cache key v1");
        field(&mut hasher, definition(pipeline, stage).as_bytes());
        for (name, key) in &needs {
            field(&mut hasher, name.as_bytes());
            field(&mut hasher, key.as_bytes());
        }
        if let Some(spec) = &stage.cache {
            let env = (self.environment)(pipeline, stage);
            for name in &spec.env {
                field(&mut hasher, name.as_bytes());
                let value = match env.get(name) {
                    Some(set) => set.clone(),
                    None => std::env::var(name).ok(),
                };
                match value {
                    Some(value) => field(&mut hasher, format!("={value}").as_bytes()),
                    None => field(&mut hasher, b"unset"),
                }
            }
            let dir = pipeline.workdir(stage);
            let found = files::matching(&dir, &spec.inputs)?;
            let digests = hash_files(&found)?;
            for (file, digest) in found.iter().zip(digests) {
                field(&mut hasher, file.relative.as_bytes());
                field(&mut hasher, digest.as_bytes());
            }
        }
        let key = hasher.finalize().to_hex().to_string();
        self.known.insert(stage.name.to_string(), key.clone());
        Ok(key)
    }
}

/// A length-prefixed field, so that no two different inputs hash the same bytes.
fn field(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// What the stage is, as the user wrote it (everything but the name's place and the
/// description).
fn definition(pipeline: &Pipeline, stage: &Stage) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        stage.action, pipeline.env, stage.env, stage.workdir, stage.cache, stage.when
    )
}

/// Each file's BLAKE3 (a link's target text, never followed), on every core; in order.
fn hash_files(found: &[files::Found]) -> io::Result<Vec<blake3::Hash>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(found.len().max(1));
    let chunk = found.len().div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = found
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || part.iter().map(hash_one).collect::<io::Result<Vec<_>>>())
            })
            .collect();
        let mut out = Vec::with_capacity(found.len());
        for handle in handles {
            let part = handle
                .join()
                .map_err(|_| io::Error::other("a hashing thread panicked"))??;
            out.extend(part);
        }
        Ok(out)
    })
}

fn hash_one(file: &files::Found) -> io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    if file.symlink {
        let target = fs::read_link(&file.path)?;
        hasher.update(b"link:");
        hasher.update(target.as_os_str().as_encoded_bytes());
    } else {
        let mut handle = fs::File::open(&file.path)
            .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", file.path.display())))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = handle.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_are_warnings() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(lookup(dir.path(), "lint"), Ok(None));
        let key = "a".repeat(64);
        save(dir.path(), "lint", &key, "2026-01-01_00-00-00").unwrap();
        assert_eq!(lookup(dir.path(), "lint").unwrap().unwrap().key, key);
        let path = dir.path().join("cache/lint.json");
        fs::write(&path, "{not json").unwrap();
        assert!(
            lookup(dir.path(), "lint")
                .unwrap_err()
                .contains("does not parse")
        );
        fs::write(
            &path,
            r#"{"version":1,"stage":"lint","key":"zz","run":"x"}"#,
        )
        .unwrap();
        assert!(
            lookup(dir.path(), "lint")
                .unwrap_err()
                .contains("not valid")
        );
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert!(
            lookup(dir.path(), "lint")
                .unwrap_err()
                .contains("not a regular file")
        );
    }
}
