//! Talking to the cloud: S3 uploads, SNS messages and webhook POSTs, over blocking HTTP (ureq)
//! with AWS Signature V4. This module owns ureq and the signing; nothing else talks to the
//! network.
//!
//! [`deliver`] sends what waits in the outbox (a run's items go there first): uploads, SNS
//! messages and webhooks each in a thread of their own, so an endpoint that never answers
//! delays the end of a run by one timeout at most, whatever else there is to send. Items are
//! sent in the order they were made within each kind (an older ledger never overwrites a newer
//! one); what was sent leaves the outbox, what was not stays for the next run or `sync`.

mod credentials;
pub mod health;
mod http;
mod notify;
mod s3;
pub(crate) mod sigv4;

use std::time::Duration;

use crate::store::outbox::{Claimed, Item, Outbox};

pub(crate) use credentials::Chain;

/// What a delivery did.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Each item sent, described (`s3://bucket/key`).
    pub sent: Vec<String>,
    /// Each item not sent, described, and why; it stays in the outbox.
    pub failed: Vec<(String, String)>,
    /// Files in the outbox that are not items, and why; never sent, left where they are.
    pub refused: Vec<String>,
}

/// The region the AWS chain names (`AWS_REGION`, the profile), for S3 when `region:` is not
/// given.
pub fn chain_region() -> Option<String> {
    Chain::load().region
}

/// The secrets of the AWS chain (the secret key and session token, from the environment or
/// the profile), to be masked.
pub fn chain_secrets() -> Vec<String> {
    let chain = Chain::load();
    chain
        .credentials
        .map(|c| {
            let mut secrets = vec![c.secret_access_key];
            secrets.extend(c.session_token);
            secrets
        })
        .unwrap_or_default()
}

/// Sends everything in the outbox; each request may take `timeout`.
pub fn deliver(outbox: &Outbox, timeout: Duration) -> std::io::Result<Delivery> {
    let (claimed, refused) = outbox.claim_all()?;
    let mut delivery = Delivery {
        refused,
        ..Delivery::default()
    };
    if claimed.is_empty() {
        return Ok(delivery);
    }
    let needs_aws = claimed
        .iter()
        .any(|c| !matches!(c.item, Item::Webhook { .. }));
    let chain = if needs_aws {
        Chain::load()
    } else {
        Chain::default()
    };
    let (mut uploads, mut messages, mut hooks) = (Vec::new(), Vec::new(), Vec::new());
    for item in claimed {
        match item.item {
            Item::S3 { .. } => uploads.push(item),
            Item::Sns { .. } => messages.push(item),
            Item::Webhook { .. } => hooks.push(item),
        }
    }
    let results: Vec<Vec<(String, Result<(), String>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = [uploads, messages, hooks]
            .into_iter()
            .filter(|group| !group.is_empty())
            .map(|group| {
                let chain = &chain;
                scope.spawn(move || send_group(group, chain, timeout))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for (what, result) in results.into_iter().flatten() {
        match result {
            Ok(()) => delivery.sent.push(what),
            Err(why) => delivery.failed.push((what, why)),
        }
    }
    Ok(delivery)
}

fn send_group(
    group: Vec<Claimed>,
    chain: &Chain,
    timeout: Duration,
) -> Vec<(String, Result<(), String>)> {
    let mut client = http::Client::new(timeout);
    let mut results = Vec::new();
    for claimed in group {
        let what = claimed.item.describe();
        let result = send_one(&mut client, chain, &claimed).map_err(|err| {
            let why = err.to_string();
            // Each error names its item; the caller names it already.
            why.strip_prefix(&format!("{what}: "))
                .map_or_else(|| why.clone(), str::to_owned)
        });
        if result.is_ok() {
            claimed.done();
        } else {
            claimed.release();
        }
        results.push((what, result));
    }
    results
}

fn send_one(
    client: &mut http::Client,
    chain: &Chain,
    claimed: &Claimed,
) -> Result<(), http::SendError> {
    let credentials = || {
        chain.credentials.as_ref().ok_or_else(|| {
            http::SendError::Invalid(format!("no AWS credentials (looked for {})", chain.looked))
        })
    };
    match &claimed.item {
        Item::S3 {
            bucket,
            key,
            region,
            endpoint,
            content_type,
            ..
        } => {
            let endpoint = endpoint_for(endpoint.as_deref(), "AWS_ENDPOINT_URL_S3")?;
            let credentials = credentials()?;
            let (file, len) = claimed.body().map_err(|err| {
                http::SendError::Invalid(format!(
                    "s3://{bucket}/{key}: its bytes in the outbox: {err}"
                ))
            })?;
            let object = s3::Object {
                bucket,
                key,
                region,
                endpoint: endpoint.as_deref(),
                content_type,
            };
            s3::upload(client, credentials, &object, &file, len)
        }
        Item::Sns {
            topic,
            region,
            endpoint,
            subject,
            message,
            id,
        } => {
            let endpoint = endpoint_for(endpoint.as_deref(), "AWS_ENDPOINT_URL_SNS")?;
            let credentials = credentials()?;
            notify::publish(
                client,
                credentials,
                &notify::Message {
                    topic,
                    region,
                    endpoint: endpoint.as_deref(),
                    subject,
                    text: message,
                    id,
                },
            )
        }
        Item::Webhook { env, body } => {
            let url = std::env::var(env)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    http::SendError::Invalid(format!("webhook ${env}: the variable is not set"))
                })?;
            // The URL is a secret: whatever the error says, it is not shown.
            let masker = crate::mask::Masker::new([url.as_str()]);
            notify::webhook(client, env, &url, body).map_err(|err| match err {
                http::SendError::Unreachable(why) => {
                    http::SendError::Unreachable(masker.mask_str(&why).into_owned())
                }
                http::SendError::Refused(why) => {
                    http::SendError::Refused(masker.mask_str(&why).into_owned())
                }
                http::SendError::Invalid(why) => {
                    http::SendError::Invalid(masker.mask_str(&why).into_owned())
                }
                skipped @ http::SendError::Skipped(_) => skipped,
            })
        }
    }
}

/// The endpoint of a request: `endpoint:` of the pipeline, else the service's AWS variable,
/// else `AWS_ENDPOINT_URL`, else AWS itself (`None`).
fn endpoint_for(
    configured: Option<&str>,
    variable: &str,
) -> Result<Option<String>, http::SendError> {
    if let Some(url) = configured {
        return Ok(Some(url.to_owned()));
    }
    for name in [variable, "AWS_ENDPOINT_URL"] {
        if let Some(url) = std::env::var(name).ok().filter(|v| !v.trim().is_empty()) {
            return crate::config::check_endpoint(url.trim())
                .map(Some)
                .map_err(|why| http::SendError::Invalid(format!("{name}={url:?}: {why}")));
        }
    }
    Ok(None)
}
