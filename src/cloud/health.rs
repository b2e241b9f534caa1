//! An HTTP health check: `GET url` until it answers the expected status (and holds the
//! expected text), or the time is up. It runs in a process of its own (`pydeployer
//! __health-check`, a command of the deploy stage), so its waiting never holds up the runner's
//! poll loop, and it is timed out, interrupted and logged like any stage command.

use std::io::Read;
use std::time::{Duration, Instant};

/// At most this much of an answer is read and searched for `contains`.
const MAX_BODY: u64 = 1 << 20;

/// What to ask, and what a healthy answer is.
pub struct HttpCheck<'a> {
    pub url: &'a str,
    pub expect: u16,
    pub contains: Option<&'a str>,
    pub timeout: Duration,
    pub interval: Duration,
}

/// Asks until healthy or `timeout`; each try is one line through `say`. `Ok` holds how long it
/// took; `Err` the last answer.
pub fn wait_healthy(check: &HttpCheck<'_>, mut say: impl FnMut(&str)) -> Result<Duration, String> {
    let start = Instant::now();
    let deadline = start + check.timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // One request never outlasts the check (nor takes more than 10 s of it).
        let per_try = left
            .min(Duration::from_secs(10))
            .max(Duration::from_millis(100));
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(per_try))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!(
                "pydeployer/",
                env!("CARGO_PKG_VERSION"),
                " health check"
            ))
            .build()
            .new_agent();
        let last = match agent.get(check.url).call() {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let mut body = Vec::new();
                let _ = response
                    .body_mut()
                    .as_reader()
                    .take(MAX_BODY)
                    .read_to_end(&mut body);
                let body = String::from_utf8_lossy(&body);
                let first_line: String = body
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(120)
                    .collect();
                let has_text = check.contains.is_none_or(|text| body.contains(text));
                if status == check.expect && has_text {
                    say(&format!(
                        "GET {} → {status} {first_line}: healthy",
                        check.url
                    ));
                    return Ok(start.elapsed());
                }
                match check.contains {
                    Some(text) if status == check.expect => {
                        format!("{status}, without `{text}` in the answer ({first_line})")
                    }
                    _ => format!("{status} {first_line} (expected {})", check.expect),
                }
            }
            Err(err) => err.to_string(),
        };
        say(&format!("GET {} → {last}", check.url));
        let now = Instant::now();
        if now + check.interval >= deadline {
            return Err(last);
        }
        std::thread::sleep(check.interval);
    }
}
