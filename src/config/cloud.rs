//! `cloud:` and `notify:`: S3 and SNS targets, webhooks, and the events they are told of.
//!
//! Everything a request would only refuse later is refused here, at its place in the file: S3's
//! bucket naming rules, the form of a region and of a topic's ARN, an endpoint that is not
//! `http://` or `https://`. Credentials are not a key: they come from AWS's own chain.

use crate::config::raw::{Node, Value};
use crate::config::validate::{CLOUD_KEYS, Checker, NOTIFY_KEYS, S3_KEYS, SNS_KEYS};
use crate::error::{Problem, SourceFile};
use crate::pipeline::{Cloud, DEFAULT_CLOUD_TIMEOUT, NotifyOn, S3Target, SnsTarget, Webhook};

/// The longest `cloud.timeout`: a request that takes longer is not worth waiting for.
const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_hours(1);

impl Checker<'_> {
    pub(super) fn cloud(&mut self, file: &SourceFile, node: &Node) -> Option<Cloud> {
        let entries = self.map(file, node, "`cloud`")?;
        self.unknown_keys(file, entries, &CLOUD_KEYS, "`cloud` setting");
        let mut cloud = Cloud {
            s3: None,
            sns: None,
            required: false,
            timeout: DEFAULT_CLOUD_TIMEOUT,
        };
        let mut ok = true;
        for (key, value) in entries {
            match key.name.as_str() {
                "s3" => {
                    cloud.s3 = self.s3(file, value);
                    ok &= cloud.s3.is_some();
                }
                "sns" => {
                    cloud.sns = self.sns(file, value);
                    ok &= cloud.sns.is_some();
                }
                "required" => match self.boolean(file, value, "`cloud.required`") {
                    Some(required) => cloud.required = required,
                    None => ok = false,
                },
                "timeout" => {
                    match self.duration(file, value, "`cloud.timeout`", "`timeout: 30s`") {
                        Some(timeout) if timeout <= MAX_TIMEOUT => cloud.timeout = timeout,
                        Some(_) => {
                            self.push(
                                Problem::at(
                                    file,
                                    value.span,
                                    "`cloud.timeout` is at most 1 hour",
                                    "too long",
                                )
                                .with_help("the default is `30s`"),
                            );
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
                _ => ok = false,
            }
        }
        let given = |name: &str| entries.iter().any(|(k, _)| k.name == name);
        if !given("s3") && !given("sns") {
            self.push(
                Problem::at(file, node.span, "`cloud` needs `s3`, `sns` or both", "nothing to send to")
                    .with_help("for example: `s3: { bucket: acme-ci, prefix: sample-app/, region: eu-west-3 }`"),
            );
            return None;
        }
        ok.then_some(cloud)
    }

    fn s3(&mut self, file: &SourceFile, node: &Node) -> Option<S3Target> {
        let entries = self.map(file, node, "`cloud.s3`")?;
        self.unknown_keys(file, entries, &S3_KEYS, "`cloud.s3` setting");
        let mut target = S3Target {
            bucket: String::new(),
            prefix: String::new(),
            region: None,
            endpoint: None,
        };
        let mut ok = true;
        let mut bucket = false;
        for (key, value) in entries {
            match key.name.as_str() {
                "bucket" => {
                    bucket = true;
                    let name = self.string(file, value, "`cloud.s3.bucket`", "`bucket: acme-ci`");
                    match name.map(|n| (check_bucket(&n), n)) {
                        Some((Ok(()), name)) => target.bucket = name,
                        Some((Err(why), name)) => {
                            self.push(
                                Problem::at(
                                    file,
                                    value.span,
                                    format!("`{name}` is not a valid S3 bucket name: {why}"),
                                    "invalid bucket name",
                                )
                                .with_help(
                                    "S3 bucket names are 3 to 63 lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit (e.g. `acme-ci`)",
                                ),
                            );
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
                "prefix" => {
                    match self.string(file, value, "`cloud.s3.prefix`", "`prefix: sample-app/`") {
                        Some(prefix) => match check_prefix(&prefix) {
                            Ok(prefix) => target.prefix = prefix,
                            Err(why) => {
                                self.push(
                                    Problem::at(
                                        file,
                                        value.span,
                                        format!("refusing `cloud.s3.prefix` {prefix:?}: {why}"),
                                        "invalid prefix",
                                    )
                                    .with_help("a plain folder-like prefix such as `sample-app/`"),
                                );
                                ok = false;
                            }
                        },
                        None => ok = false,
                    }
                }
                "region" => {
                    target.region = self.region(file, value, "`cloud.s3.region`");
                    ok &= target.region.is_some();
                }
                "endpoint" => {
                    target.endpoint = self.endpoint(file, value, "`cloud.s3.endpoint`");
                    ok &= target.endpoint.is_some();
                }
                _ => ok = false,
            }
        }
        if !bucket {
            self.push(
                Problem::at(
                    file,
                    node.span,
                    "`cloud.s3` needs a `bucket`",
                    "no `bucket` here",
                )
                .with_help("add `bucket: <your bucket's name>`"),
            );
            return None;
        }
        ok.then_some(target)
    }

    fn sns(&mut self, file: &SourceFile, node: &Node) -> Option<SnsTarget> {
        let entries = self.map(file, node, "`cloud.sns`")?;
        self.unknown_keys(file, entries, &SNS_KEYS, "`cloud.sns` setting");
        let mut topic = None;
        let mut on = NotifyOn::DEFAULT.to_vec();
        let mut endpoint = None;
        let mut ok = true;
        for (key, value) in entries {
            match key.name.as_str() {
                "topic" => {
                    let example = "`topic: \"arn:aws:sns:eu-west-3:123456789012:ci\"`";
                    let Some(arn) = self.string(file, value, "`cloud.sns.topic`", example) else {
                        ok = false;
                        continue;
                    };
                    match topic_region(&arn) {
                        Ok(region) => topic = Some((arn, region)),
                        Err(why) => {
                            self.push(
                                Problem::at(
                                    file,
                                    value.span,
                                    format!("`{arn}` is not an SNS topic ARN: {why}"),
                                    "invalid topic ARN",
                                )
                                .with_help(format!(
                                    "a topic's ARN is `arn:aws:sns:REGION:ACCOUNT:NAME`, for example: {example}"
                                )),
                            );
                            ok = false;
                        }
                    }
                }
                "on" => match self.events(file, value, "`cloud.sns.on`") {
                    Some(events) => on = events,
                    None => ok = false,
                },
                "endpoint" => {
                    endpoint = self.endpoint(file, value, "`cloud.sns.endpoint`");
                    ok &= endpoint.is_some();
                }
                _ => ok = false,
            }
        }
        let Some((topic, region)) = topic else {
            if !entries.iter().any(|(k, _)| k.name == "topic") {
                self.push(
                    Problem::at(
                        file,
                        node.span,
                        "`cloud.sns` needs a `topic`",
                        "no `topic` here",
                    )
                    .with_help("add `topic: \"arn:aws:sns:REGION:ACCOUNT:NAME\"`"),
                );
            }
            return None;
        };
        ok.then_some(SnsTarget {
            topic,
            region,
            on,
            endpoint,
        })
    }

    pub(super) fn notify(&mut self, file: &SourceFile, node: &Node) -> Vec<Webhook> {
        let mut hooks = Vec::new();
        let Value::Seq(items) = &node.value else {
            self.wrong_type(
                file,
                node,
                "`notify`",
                "a list",
                "`notify: [{ webhook_env: SLACK_WEBHOOK_URL, on: [failure] }]`",
            );
            return hooks;
        };
        for item in items {
            let Some(entries) = self.map(file, item, "each item of `notify`") else {
                continue;
            };
            self.unknown_keys(file, entries, &NOTIFY_KEYS, "`notify` setting");
            let mut env = None;
            let mut on = NotifyOn::DEFAULT.to_vec();
            let mut ok = true;
            for (key, value) in entries {
                match key.name.as_str() {
                    "webhook_env" => {
                        env = self.webhook_env(file, value);
                        ok &= env.is_some();
                    }
                    "on" => match self.events(file, value, "`notify.on`") {
                        Some(events) => on = events,
                        None => ok = false,
                    },
                    _ => ok = false,
                }
            }
            if !entries.iter().any(|(k, _)| k.name == "webhook_env") {
                self.push(
                    Problem::at(file, item.span, "a `notify` entry needs `webhook_env`", "no `webhook_env` here")
                        .with_help("name the environment variable holding the webhook's URL: `webhook_env: SLACK_WEBHOOK_URL`"),
                );
                continue;
            }
            if let (Some(env), true) = (env, ok) {
                hooks.push(Webhook { env, on });
            }
        }
        hooks
    }

    fn webhook_env(&mut self, file: &SourceFile, value: &Node) -> Option<String> {
        let name = self.string(
            file,
            value,
            "`webhook_env`",
            "`webhook_env: SLACK_WEBHOOK_URL`",
        )?;
        if super::settings::is_env_name(&name) {
            return Some(name);
        }
        let help = if name.contains("://") {
            "`webhook_env` names the environment variable holding the URL; the URL itself is a secret and stays out of pipeline.yml"
        } else {
            "use letters, digits and `_`, not starting with a digit"
        };
        self.push(
            Problem::at(
                file,
                value.span,
                format!("`{name}` is not a valid environment variable name"),
                "invalid name",
            )
            .with_help(help),
        );
        None
    }

    /// `on: [failure, rollback]`.
    fn events(&mut self, file: &SourceFile, node: &Node, what: &str) -> Option<Vec<NotifyOn>> {
        let names = self.string_list(file, node, what, "`on: [failure, rollback]`")?;
        let mut events = Vec::new();
        let mut ok = true;
        for (name, span) in names {
            match NotifyOn::from_name(&name) {
                Some(event) if !events.contains(&event) => events.push(event),
                Some(_) => {}
                None => {
                    self.push(
                        Problem::at(
                            file,
                            span,
                            format!("unknown event `{name}` in {what}"),
                            "unknown event",
                        )
                        .with_suggestion(
                            &name,
                            NotifyOn::NAMES.iter().copied(),
                            format!("known events: {}", NotifyOn::NAMES.join(", ")),
                        ),
                    );
                    ok = false;
                }
            }
        }
        events.sort();
        ok.then_some(events)
    }

    fn region(&mut self, file: &SourceFile, node: &Node, what: &str) -> Option<String> {
        let region = self.string(file, node, what, "`region: eu-west-3`")?;
        if is_region(&region) {
            return Some(region);
        }
        self.push(
            Problem::at(
                file,
                node.span,
                format!("`{region}` is not an AWS region"),
                "invalid region",
            )
            .with_help("a region looks like `eu-west-3`, `us-east-1` or `ap-southeast-2`"),
        );
        None
    }

    fn endpoint(&mut self, file: &SourceFile, node: &Node, what: &str) -> Option<String> {
        let url = self.string(file, node, what, "`endpoint: \"http://127.0.0.1:5000\"`")?;
        match check_endpoint(&url) {
            Ok(url) => Some(url),
            Err(why) => {
                self.push(
                    Problem::at(
                        file,
                        node.span,
                        format!("refusing {what} {url:?}: {why}"),
                        "invalid endpoint",
                    )
                    .with_help("give `http://host[:port]` or `https://host[:port]`, e.g. `http://127.0.0.1:9000` for MinIO"),
                );
                None
            }
        }
    }
}

/// S3's bucket naming rules (general purpose buckets).
pub fn check_bucket(name: &str) -> Result<(), &'static str> {
    if !(3..=63).contains(&name.len()) {
        return Err("it must be 3 to 63 characters long");
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(if bad.is_ascii_uppercase() {
            "it has uppercase letters"
        } else if bad == '_' {
            "it has `_`"
        } else {
            "it may only hold lowercase letters, digits, `-` and `.`"
        });
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge(name.chars().next()) || !edge(name.chars().last()) {
        return Err("it must start and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Err("`.` cannot be next to another `.` or a `-`");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("it cannot look like an IP address");
    }
    if ["xn--", "sthree-", "amzn-s3-demo-"]
        .iter()
        .any(|p| name.starts_with(p))
        || ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"]
            .iter()
            .any(|s| name.ends_with(s))
    {
        return Err("it uses a prefix or suffix S3 reserves");
    }
    Ok(())
}

/// A key prefix, ending in `/` unless empty; no leading `/`, no `..` part, nothing invisible.
fn check_prefix(prefix: &str) -> Result<String, &'static str> {
    if prefix.chars().any(char::is_control) {
        return Err("it contains control characters");
    }
    if prefix.len() > 512 {
        return Err("it is longer than 512 bytes");
    }
    let trimmed = prefix.trim_start_matches('/');
    if trimmed.split('/').any(|part| part == ".." || part == ".") {
        return Err("it has a `.` or `..` part");
    }
    if trimmed.is_empty() || trimmed.ends_with('/') {
        Ok(trimmed.to_owned())
    } else {
        Ok(format!("{trimmed}/"))
    }
}

/// `eu-west-3`, `us-gov-west-1`, `ap-southeast-2`, `cn-north-1`: a two-letter area, one or
/// more lowercase words, and a number.
pub fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit()))
}

/// The region of `arn:PARTITION:sns:REGION:ACCOUNT:NAME`, or what is wrong with it.
pub fn topic_region(arn: &str) -> Result<String, &'static str> {
    let parts: Vec<&str> = arn.split(':').collect();
    if parts.len() != 6 || parts[0] != "arn" {
        return Err("it must have six parts: arn:aws:sns:REGION:ACCOUNT:NAME");
    }
    let partition = parts[1];
    if !(partition == "aws"
        || partition.strip_prefix("aws-").is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        }))
    {
        return Err("its partition must be `aws` (or `aws-cn`, `aws-us-gov`, …)");
    }
    if parts[2] != "sns" {
        return Err("its service must be `sns`");
    }
    if !is_region(parts[3]) {
        return Err("its region is not an AWS region");
    }
    if parts[4].len() != 12 || !parts[4].chars().all(|c| c.is_ascii_digit()) {
        return Err("its account must be 12 digits");
    }
    let name = parts[5];
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    if base.is_empty()
        || name.len() > 256
        || !base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("its name must be 1 to 256 letters, digits, `-` and `_`");
    }
    Ok(parts[3].to_owned())
}

/// `http(s)://host[:port][/path]`, returned without a trailing `/`.
pub fn check_endpoint(url: &str) -> Result<String, &'static str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("it has no scheme (http:// or https://)");
    };
    if scheme != "http" && scheme != "https" {
        return Err("only http:// and https:// are supported");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("it contains spaces or control characters");
    }
    if rest.contains(['?', '#']) {
        return Err("it cannot have a query or a fragment");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err("it cannot hold credentials (they come from the AWS chain)");
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            if !host.contains(']') && host.contains(':') {
                return Err("an IPv6 host must be in brackets");
            }
            if port.parse::<u16>().is_err() {
                return Err("its port is not a number from 0 to 65535");
            }
            host
        }
        _ => authority,
    };
    if host.is_empty() || host.starts_with('-') {
        return Err("it has no host");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3s_rules() {
        for good in ["acme-ci", "abc", "a.b-c.d", "123bucket"] {
            assert!(check_bucket(good).is_ok(), "{good}");
        }
        for bad in [
            "My_Bucket",
            "ab",
            "-abc",
            "abc-",
            "a..b",
            "a.-b",
            "192.168.1.1",
            "xn--abc",
            "abc-s3alias",
            "acme_ci",
            &"a".repeat(64),
        ] {
            assert!(check_bucket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn regions_and_topic_arns() {
        for good in [
            "eu-west-3",
            "us-east-1",
            "us-gov-west-1",
            "ap-southeast-2",
            "cn-north-1",
        ] {
            assert!(is_region(good), "{good}");
        }
        for bad in ["moon-1", "eu-west", "EU-west-3", "eu--3", "e-west-3", ""] {
            assert!(!is_region(bad), "{bad}");
        }
        assert_eq!(
            topic_region("arn:aws:sns:eu-west-3:123456789012:ci").as_deref(),
            Ok("eu-west-3")
        );
        assert!(topic_region("arn:aws-cn:sns:cn-north-1:123456789012:ci.fifo").is_ok());
        for bad in [
            "arn:aws:sns:eu-west-3:123:ci",
            "arn:aws:sqs:eu-west-3:123456789012:ci",
            "arn:aws:sns:moon-1:123456789012:ci",
            "ci",
            "arn:aws:sns:eu-west-3:123456789012:c i",
            "arn:aws:sns:eu-west-3:123456789012:ci:extra",
        ] {
            assert!(topic_region(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_are_http_or_https() {
        assert_eq!(
            check_endpoint("http://127.0.0.1:5000/").as_deref(),
            Ok("http://127.0.0.1:5000")
        );
        assert!(check_endpoint("https://minio.example.org").is_ok());
        assert!(check_endpoint("http://[::1]:9000").is_ok());
        for bad in [
            "ftp://x",
            "x",
            "http://",
            "http://a:b@host",
            "http://host:99999",
            "http://host?x=1",
            "http://ho st",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_end_in_a_slash() {
        assert_eq!(check_prefix("sample-app").as_deref(), Ok("sample-app/"));
        assert_eq!(check_prefix("/a/b/").as_deref(), Ok("a/b/"));
        assert_eq!(check_prefix("").as_deref(), Ok(""));
        assert!(check_prefix("a/../b").is_err());
        assert!(check_prefix("a\nb").is_err());
    }
}
