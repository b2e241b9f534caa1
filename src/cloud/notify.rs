//! Notifications: an SNS `Publish` (a form-encoded POST, signed) and a webhook's JSON POST.

use super::http::{Call, Client, Payload, SendError};
use super::sigv4::{self, Credentials, Scope};

/// One SNS message.
pub(crate) struct Message<'a> {
    pub(crate) topic: &'a str,
    pub(crate) region: &'a str,
    /// An SNS-compatible endpoint; `None`: AWS.
    pub(crate) endpoint: Option<&'a str>,
    pub(crate) subject: &'a str,
    pub(crate) text: &'a str,
    /// A FIFO topic's deduplication id: a message sent twice is delivered once.
    pub(crate) id: &'a str,
}

pub(crate) fn publish(
    client: &mut Client,
    credentials: &Credentials,
    message: &Message<'_>,
) -> Result<(), SendError> {
    let shown = format!("SNS message to {}", message.topic);
    let endpoint = message.endpoint.map_or_else(
        || {
            let domain = if message.region.starts_with("cn-") {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            format!("https://sns.{}.{domain}", message.region)
        },
        str::to_owned,
    );
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("https", &endpoint));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], format!("{}/", rest[i..].trim_end_matches('/'))),
        None => (rest, "/".to_owned()),
    };
    let host = match (scheme, authority.rsplit_once(':')) {
        ("http", Some((host, "80"))) | ("https", Some((host, "443"))) => host,
        _ => authority,
    };
    let mut form = vec![
        ("Action", "Publish".to_owned()),
        ("Message", message.text.to_owned()),
        ("Subject", message.subject.to_owned()),
        ("TopicArn", message.topic.to_owned()),
        ("Version", "2010-03-31".to_owned()),
    ];
    let fifo = message.topic.to_ascii_lowercase().ends_with(".fifo");
    if fifo {
        form.push(("MessageDeduplicationId", message.id.to_owned()));
        form.push(("MessageGroupId", "pydeployer".to_owned()));
    }
    let body = form
        .iter()
        .map(|(name, value)| format!("{name}={}", form_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
    let payload = sigv4::sha256_hex(body.as_bytes());
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let headers = || {
        let auth = sigv4::sign(
            credentials,
            &Scope {
                region: message.region,
                service: "sns",
            },
            &sigv4::Request {
                method: "POST",
                host,
                path: &path,
                query: &[],
                headers: &[("content-type", content_type)],
                payload_sha256: &payload,
            },
            chrono::Utc::now(),
        );
        let mut all = vec![
            ("content-type".to_owned(), content_type.to_owned()),
            ("host".to_owned(), host.to_owned()),
        ];
        all.extend(auth.into_iter().map(|(n, v)| (n.to_owned(), v)));
        Ok(all)
    };
    let url = format!("{scheme}://{authority}{path}");
    client
        .send(&Call {
            method: "POST",
            url: &url,
            body: Payload::Bytes(body.as_bytes()),
            headers: &headers,
            shown_as: &shown,
        })
        .map(|_| ())
}

/// `application/x-www-form-urlencoded`: the unreserved characters kept, a space as `+`,
/// every other byte `%XX` (what SNS reads, and what moto re-encodes to check a signature).
fn form_encode(text: &str) -> String {
    text.split(' ')
        .map(sigv4::encode)
        .collect::<Vec<_>>()
        .join("+")
}

/// POSTs `json` to `url`; messages name the variable `env`, never the URL.
pub(crate) fn webhook(
    client: &mut Client,
    env: &str,
    url: &str,
    json: &str,
) -> Result<(), SendError> {
    let shown = format!("webhook ${env}");
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    if !scheme_ok || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(SendError::Invalid(format!(
            "{shown}: its value is not an http:// or https:// URL"
        )));
    }
    let headers = || {
        Ok(vec![(
            "content-type".to_owned(),
            "application/json".to_owned(),
        )])
    };
    client
        .send(&Call {
            method: "POST",
            url,
            body: Payload::Bytes(json.as_bytes()),
            headers: &headers,
            shown_as: &shown,
        })
        .map(|_| ())
}
