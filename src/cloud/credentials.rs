//! AWS's credential chain, as its own tools read it: the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), else the profile
//! (`AWS_PROFILE`, default `default`) in `~/.aws/credentials` and `~/.aws/config`
//! (`AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE` move them). The region: `AWS_REGION`,
//! `AWS_DEFAULT_REGION`, else the profile's `region`.
//!
//! Read only when the pipeline has `cloud:`; the files are input (bounded, regular files).

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

use super::sigv4::Credentials;

/// A profile file larger than this is not read.
const MAX_FILE: u64 = 1024 * 1024;

/// What the chain found.
#[derive(Debug, Default)]
pub(crate) struct Chain {
    pub(crate) credentials: Option<Credentials>,
    pub(crate) region: Option<String>,
    /// Where the credentials were looked for, for the message when there are none.
    pub(crate) looked: String,
}

impl Chain {
    pub(crate) fn load() -> Chain {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let credentials_file = env("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
        let config_file = env("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
        let config = config_file
            .as_ref()
            .and_then(|path| read_ini(path))
            .map(|mut sections| {
                let name = if profile == "default" {
                    "default".to_owned()
                } else {
                    format!("profile {profile}")
                };
                sections.remove(&name).unwrap_or_default()
            })
            .unwrap_or_default();
        let from_env = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Some(Credentials {
                access_key_id,
                secret_access_key,
                session_token: env("AWS_SESSION_TOKEN"),
            }),
            _ => None,
        };
        let credentials = from_env.or_else(|| {
            let mut section = credentials_file
                .as_ref()
                .and_then(|path| read_ini(path))
                .and_then(|mut sections| sections.remove(&profile))
                .unwrap_or_default();
            // The config file may hold keys too; the credentials file wins.
            for (key, value) in &config {
                section.entry(key.clone()).or_insert_with(|| value.clone());
            }
            Some(Credentials {
                access_key_id: section.remove("aws_access_key_id")?,
                secret_access_key: section.remove("aws_secret_access_key")?,
                session_token: section.remove("aws_session_token"),
            })
        });
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| config.get("region").cloned())
            .filter(|r| crate::config::is_region(r));
        let looked = format!(
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or profile `{profile}` in {}",
            credentials_file
                .as_ref()
                .map_or_else(|| "~/.aws/credentials".into(), |p| p.display().to_string())
        );
        Chain {
            credentials,
            region,
            looked,
        }
    }
}

/// `[section]` → `key = value`, from an INI file as AWS writes them; `None` when it cannot be
/// read (missing, not a regular file, too large, not UTF-8).
fn read_ini(path: &std::path::Path) -> Option<HashMap<String, HashMap<String, String>>> {
    let file = std::fs::File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_FILE).read_to_string(&mut text).ok()?;
    Some(parse_ini(&text))
}

fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        // A nested block (`s3 =` then indented lines) is left alone: its lines have no section
        // key we read.
        if let (Some(section), Some((key, value))) = (&current, line.split_once('=')) {
            sections
                .entry(section.clone())
                .or_default()
                .insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_as_aws_writes_them() {
        let text = "# comment\n[default]\naws_access_key_id = AKIA1\naws_secret_access_key=s1\n\n[ci]\naws_access_key_id = AKIA2\naws_secret_access_key = s2\naws_session_token = t2\n[profile ci]\nregion = eu-west-3\n";
        let sections = parse_ini(text);
        assert_eq!(sections["default"]["aws_access_key_id"], "AKIA1");
        assert_eq!(sections["default"]["aws_secret_access_key"], "s1");
        assert_eq!(sections["ci"]["aws_session_token"], "t2");
        assert_eq!(sections["profile ci"]["region"], "eu-west-3");
    }
}
