//! Whether a stage with `cache:` runs: pure, given its key, its entry and its outputs.

use serde::{Deserialize, Serialize};

/// A stage's last successful run, as `.pydeployer/cache/<stage>.json` holds it (read and written
/// by `store/cache.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub version: u32,
    pub stage: String,
    /// 64 hex digits.
    pub key: String,
    /// The run log's stem (`2026-11-22_12-03-04`).
    pub run: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Unchanged since that run: skipped.
    Hit { since: String },
    /// Runs; `warning` when the entry could not be trusted (said in the stage's note).
    Miss { warning: Option<String> },
}

/// `entry` is what the cache holds (an `Err` is a warning); `missing_output` the first
/// `outputs:` glob that matches nothing.
pub fn decide(
    key: &str,
    entry: Result<Option<Entry>, String>,
    missing_output: Option<&str>,
    no_cache: bool,
) -> Verdict {
    if no_cache {
        return Verdict::Miss { warning: None };
    }
    match entry {
        Err(warning) => Verdict::Miss {
            warning: Some(format!("{warning}; ignored, the stage ran")),
        },
        Ok(Some(entry)) if entry.key == key => match missing_output {
            None => Verdict::Hit { since: entry.run },
            Some(glob) => Verdict::Miss {
                warning: Some(format!(
                    "cache: output `{glob}` is missing, so the stage ran"
                )),
            },
        },
        Ok(_) => Verdict::Miss { warning: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> Entry {
        Entry {
            version: 1,
            stage: "lint".into(),
            key: key.into(),
            run: "2026-01-01_00-00-00".into(),
        }
    }

    #[test]
    fn only_a_matching_key_with_its_outputs_is_a_hit() {
        let hit = Verdict::Hit {
            since: "2026-01-01_00-00-00".into(),
        };
        assert_eq!(decide("k", Ok(Some(entry("k"))), None, false), hit);
        assert_eq!(
            decide("k", Ok(Some(entry("j"))), None, false),
            Verdict::Miss { warning: None }
        );
        assert_eq!(
            decide("k", Ok(None), None, false),
            Verdict::Miss { warning: None }
        );
        assert_eq!(
            decide("k", Ok(Some(entry("k"))), None, true),
            Verdict::Miss { warning: None }
        );
        assert!(matches!(
            decide("k", Ok(Some(entry("k"))), Some("dist/*"), false),
            Verdict::Miss { warning: Some(_) }
        ));
        assert!(matches!(
            decide("k", Err("bad".into()), None, false),
            Verdict::Miss { warning: Some(_) }
        ));
    }
}
