//! The one HTTP client: ureq, blocking, with the limits every request shares.
//!
//! - Connecting may take 5 s (or `cloud.timeout` if shorter); a whole request, from connecting
//!   to the last byte of the answer, `cloud.timeout` (default 30 s).
//! - An answer of 5xx, 429 or a throttling error (`SlowDown`, `Throttling`, …) is tried again
//!   after 0.5 s, 1 s and 2 s (four tries in all).
//! - A request that gets no answer at all (refused, no route, timed out, TLS failure) marks its
//!   endpoint down: nothing more is sent there in this delivery, so an endpoint that swallows
//!   requests costs one timeout, not one per file.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use ureq::http;

/// At most this much of an answer is read (XML of a few hundred bytes, an error page).
const MAX_ANSWER: u64 = 64 * 1024;
const TRIES: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A 2xx answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) body: String,
    pub(crate) etag: Option<String>,
}

/// Why a request did not succeed.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No answer: the endpoint is down for the rest of this delivery.
    Unreachable(String),
    /// An answer that is not a success (after the tries it deserved).
    Refused(String),
    /// The endpoint was found down earlier; not tried.
    Skipped(String),
    /// Nothing was sent: the request could not be made (no credentials, a bad URL).
    Invalid(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Unreachable(why) | SendError::Refused(why) | SendError::Invalid(why) => {
                f.write_str(why)
            }
            SendError::Skipped(origin) => write!(
                f,
                "not tried: {origin} did not answer an earlier request of this delivery"
            ),
        }
    }
}

/// What a request sends.
#[derive(Clone, Copy)]
pub(crate) enum Payload<'a> {
    Bytes(&'a [u8]),
    /// `len` bytes of the file from `offset`, read as they are sent (never all in memory).
    Section {
        file: &'a File,
        offset: u64,
        len: u64,
    },
}

/// A section of a file as a reader, by positional reads (a retry reads it again).
struct SectionReader<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl Read for SectionReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.end - self.at).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file got shorter while it was sent",
            ));
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// One request, made anew for each try (a signature holds the time it was made).
pub(crate) struct Call<'a> {
    pub(crate) method: &'a str,
    pub(crate) url: &'a str,
    pub(crate) body: Payload<'a>,
    /// The headers of one try.
    pub(crate) headers: &'a dyn Fn() -> Result<Vec<(String, String)>, SendError>,
    /// Shown in messages instead of the URL (a webhook's URL is a secret).
    pub(crate) shown_as: &'a str,
}

pub(crate) struct Client {
    agent: ureq::Agent,
    /// Endpoints (`scheme://host:port`) that did not answer.
    down: HashSet<String>,
}

impl Client {
    pub(crate) fn new(timeout: Duration) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT.min(timeout)))
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("pydeployer/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Client {
            agent,
            down: HashSet::new(),
        }
    }

    /// Sends `call`, trying again on 5xx and throttling; a 2xx answer is `Ok`.
    pub(crate) fn send(&mut self, call: &Call<'_>) -> Result<Reply, SendError> {
        let origin = origin(call.url);
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=TRIES {
            if self.down.contains(&origin) {
                return Err(SendError::Skipped(call.shown_as.to_owned()));
            }
            let mut request = http::Request::builder().method(call.method).uri(call.url);
            for (name, value) in (call.headers)()? {
                request = request.header(name, value);
            }
            let invalid =
                |err: http::Error| SendError::Invalid(format!("{}: {err}", call.shown_as));
            let sent = match call.body {
                Payload::Bytes(bytes) => self.agent.run(request.body(bytes).map_err(invalid)?),
                Payload::Section { file, offset, len } => {
                    let mut reader = SectionReader {
                        file,
                        at: offset,
                        end: offset + len,
                    };
                    let request = request
                        .header("content-length", len)
                        .body(ureq::SendBody::from_reader(&mut reader))
                        .map_err(invalid)?;
                    self.agent.run(request)
                }
            };
            let mut response = match sent {
                Ok(response) => response,
                Err(err) => {
                    self.down.insert(origin);
                    return Err(SendError::Unreachable(format!(
                        "{}: {}",
                        call.shown_as,
                        describe(&err)
                    )));
                }
            };
            let status = response.status().as_u16();
            let etag = response
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut body = Vec::new();
            let read = response
                .body_mut()
                .as_reader()
                .take(MAX_ANSWER)
                .read_to_end(&mut body);
            let body = String::from_utf8_lossy(&body).into_owned();
            if (200..300).contains(&status) {
                if let Err(err) = read {
                    return Err(SendError::Unreachable(format!(
                        "{}: the answer was cut: {err}",
                        call.shown_as
                    )));
                }
                return Ok(Reply { body, etag });
            }
            let code = xml_text(&body, "Code").unwrap_or_default();
            let retry = status >= 500 || status == 429 || THROTTLED.contains(&code.as_str());
            if retry && attempt < TRIES {
                std::thread::sleep(backoff);
                backoff *= 2;
                continue;
            }
            let message = xml_text(&body, "Message").unwrap_or_default();
            let detail = match (code.is_empty(), message.is_empty()) {
                (false, false) => format!(" {code}: {message}"),
                (false, true) => format!(" {code}"),
                (true, false) => format!(" {message}"),
                (true, true) => String::new(),
            };
            let tries = if attempt > 1 {
                format!(" (after {attempt} tries)")
            } else {
                String::new()
            };
            return Err(SendError::Refused(format!(
                "{}: HTTP {status}{detail}{tries}",
                call.shown_as
            )));
        }
        Err(SendError::Refused(format!("{}: no answer", call.shown_as)))
    }
}

/// The error codes AWS answers when a caller goes too fast.
const THROTTLED: [&str; 7] = [
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
];

/// `scheme://authority` of a URL.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    format!("{scheme}://{authority}")
}

/// A transport error in words, without the URL (which may be a secret).
fn describe(err: &ureq::Error) -> String {
    match err {
        ureq::Error::Timeout(_) => "no answer before the timeout".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "could not connect".into(),
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::ConnectionReset => "connection reset".into(),
            std::io::ErrorKind::TimedOut => "no answer before the timeout".into(),
            _ => format!("{io}"),
        },
        ureq::Error::Tls(why) => format!("TLS: {why}"),
        ureq::Error::Rustls(err) => format!("TLS: {err}"),
        ureq::Error::BadUri(_) => "not a valid URL".into(),
        other => other.to_string(),
    }
}

/// The text of the first `<tag>…</tag>` of an XML answer, entities decoded.
pub(crate) fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(unescape(&xml[start..end]))
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// `text` as XML character data.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_answers_are_read_and_written() {
        let xml = "<?xml version=\"1.0\"?><InitiateMultipartUploadResult><UploadId>a&amp;b&lt;</UploadId></InitiateMultipartUploadResult>";
        assert_eq!(xml_text(xml, "UploadId").as_deref(), Some("a&b<"));
        assert_eq!(xml_text(xml, "Code"), None);
        assert_eq!(escape("\"a&b\""), "&quot;a&amp;b&quot;");
        assert_eq!(unescape(&escape("<'&\">")), "<'&\">");
    }

    #[test]
    fn an_origin_is_scheme_and_authority() {
        assert_eq!(
            origin("http://127.0.0.1:5000/b/k?x"),
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            origin("https://s3.eu-west-3.amazonaws.com"),
            "https://s3.eu-west-3.amazonaws.com"
        );
    }
}
