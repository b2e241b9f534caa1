//! A git object id, checked: the one form in which a commit read from disk (the ledger) or
//! from git's own output (a probe's answer) may reach a command line.
//!
//! Anything else a file may hold in its place (`--output=victim.txt`, `HEAD~3`, a branch
//! name) is refused where it is read, so it can never be taken by git as an option or as a
//! revision to resolve.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A full object id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectId(String);

/// Why a text is not an [`ObjectId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{}` is not a full commit id (40 or 64 lowercase hex digits)", shown(.0))]
pub struct NotAnObjectId(pub String);

/// The text as quoted in an error: printable, and short.
fn shown(text: &str) -> String {
    let mut shown: String = text.chars().take(80).flat_map(char::escape_debug).collect();
    if text.chars().count() > 80 {
        shown.push('…');
    }
    shown
}

impl ObjectId {
    /// The id as git prints it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its first 7 digits, as `git log --oneline` shows it.
    pub fn short(&self) -> &str {
        &self.0[..7]
    }
}

impl TryFrom<String> for ObjectId {
    type Error = NotAnObjectId;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let hex = text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if matches!(text.len(), 40 | 64) && hex {
            Ok(ObjectId(text))
        } else {
            Err(NotAnObjectId(text))
        }
    }
}

impl std::str::FromStr for ObjectId {
    type Err = NotAnObjectId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ObjectId::try_from(text.to_owned())
    }
}

impl From<ObjectId> for String {
    fn from(id: ObjectId) -> String {
        id.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_lowercase_hex_ids_pass() {
        let sha1 = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(sha1.parse::<ObjectId>().map(String::from), Ok(sha1.into()));
        let sha256 = "a".repeat(64);
        assert!(sha256.parse::<ObjectId>().is_ok());
        for bad in [
            "",
            "--output=victim.txt",
            "HEAD~3",
            "HEAD",
            "master",
            "0123456",
            "0123456789ABCDEF0123456789ABCDEF01234567",
            "-123456789abcdef0123456789abcdef01234567",
            "0123456789abcdef0123456789abcdef0123456 ",
            &"a".repeat(41),
        ] {
            assert!(bad.parse::<ObjectId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_ledger_value_that_is_not_an_id_does_not_deserialize() {
        let err = serde_json::from_str::<ObjectId>("\"--output=victim.txt\"").expect_err("bad");
        assert!(err.to_string().contains("not a full commit id"), "{err}");
        let id: ObjectId =
            serde_json::from_str("\"0123456789abcdef0123456789abcdef01234567\"").expect("id");
        assert_eq!(
            serde_json::to_string(&id).expect("json"),
            "\"0123456789abcdef0123456789abcdef01234567\""
        );
    }
}
