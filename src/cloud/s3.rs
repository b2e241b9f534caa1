//! S3 uploads: one `PutObject` for a small file, a multipart upload for a large one, its parts
//! read from the file one at a time (never the whole file in memory).
//!
//! Every request carries the SHA-256 of its body, signed (`x-amz-content-sha256`): S3 checks it
//! against what it received and refuses the request when they differ. A single `PutObject`
//! also carries `x-amz-checksum-sha256`, which S3 checks and keeps with the object.

use std::fs::File;
use std::os::unix::fs::FileExt;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::http::{Call, Client, Payload, SendError, escape, xml_text};
use super::sigv4::{self, Credentials, Scope};

/// The size of a multipart upload's parts (S3 takes 5 MiB to 5 GiB; at most 10 000 parts, so
/// objects up to 80 GB): a 200 MB log goes in 24 parts, each read from the file twice (its
/// SHA-256 first, then as it is sent), 64 KiB at a time.
pub(crate) const PART_SIZE: usize = 8 * 1024 * 1024;

/// Where an object goes.
pub(crate) struct Object<'a> {
    pub(crate) bucket: &'a str,
    pub(crate) key: &'a str,
    pub(crate) region: &'a str,
    /// An S3-compatible endpoint (path-style addressing); `None`: AWS.
    pub(crate) endpoint: Option<&'a str>,
    pub(crate) content_type: &'a str,
}

struct Address {
    /// `scheme://host[:port]`.
    base: String,
    host: String,
    /// Encoded, from `/`.
    path: String,
}

impl Object<'_> {
    fn address(&self) -> Address {
        let key = sigv4::encode_path(self.key);
        match self.endpoint {
            Some(endpoint) => {
                let (scheme, rest) = endpoint.split_once("://").unwrap_or(("https", endpoint));
                let (authority, prefix) = match rest.find('/') {
                    Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
                    None => (rest, ""),
                };
                let host = match (scheme, authority.rsplit_once(':')) {
                    ("http", Some((host, "80"))) | ("https", Some((host, "443"))) => host,
                    _ => authority,
                };
                Address {
                    base: format!("{scheme}://{authority}"),
                    host: host.to_owned(),
                    path: format!("{prefix}/{}/{key}", self.bucket),
                }
            }
            None => {
                let domain = if self.region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                // Virtual-hosted style, except for names with dots (TLS would not match).
                let (host, path) = if self.bucket.contains('.') {
                    (
                        format!("s3.{}.{domain}", self.region),
                        format!("/{}/{key}", self.bucket),
                    )
                } else {
                    (
                        format!("{}.s3.{}.{domain}", self.bucket, self.region),
                        format!("/{key}"),
                    )
                };
                Address {
                    base: format!("https://{host}"),
                    host,
                    path,
                }
            }
        }
    }
}

/// Uploads the `len` bytes of `file` to `object`.
pub(crate) fn upload(
    client: &mut Client,
    credentials: &Credentials,
    object: &Object<'_>,
    file: &File,
    len: u64,
) -> Result<(), SendError> {
    let shown = format!("s3://{}/{}", object.bucket, object.key);
    let address = object.address();
    let part = PART_SIZE as u64;
    if len <= part {
        let digest = section_sha256(file, 0, len)
            .map_err(|err| SendError::Invalid(format!("{shown}: cannot read it: {err}")))?;
        let checksum = base64::engine::general_purpose::STANDARD.encode(digest);
        request(
            client,
            credentials,
            object,
            &address,
            &Request {
                method: "PUT",
                query: &[],
                headers: &[
                    ("content-type", object.content_type),
                    ("x-amz-checksum-sha256", &checksum),
                    // What the AWS SDKs send with it (S3 emulators key on it).
                    ("x-amz-sdk-checksum-algorithm", "SHA256"),
                ],
                body: Payload::Section {
                    file,
                    offset: 0,
                    len,
                },
                payload_sha256: Some(sigv4::hex(&digest)),
                shown: &shown,
            },
        )?;
        return Ok(());
    }
    let created = request(
        client,
        credentials,
        object,
        &address,
        &Request {
            method: "POST",
            query: &[("uploads", "")],
            headers: &[("content-type", object.content_type)],
            body: Payload::Bytes(b""),
            payload_sha256: None,
            shown: &shown,
        },
    )?;
    let upload_id = xml_text(&created.body, "UploadId")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| SendError::Refused(format!("{shown}: S3 gave no UploadId")))?;
    let completed = (|| {
        let mut etags = Vec::new();
        let mut offset = 0;
        while offset < len {
            let size = part.min(len - offset);
            let digest = section_sha256(file, offset, size)
                .map_err(|err| SendError::Invalid(format!("{shown}: cannot read it: {err}")))?;
            let number = (etags.len() + 1).to_string();
            let reply = request(
                client,
                credentials,
                object,
                &address,
                &Request {
                    method: "PUT",
                    query: &[("partNumber", &number), ("uploadId", &upload_id)],
                    headers: &[],
                    body: Payload::Section {
                        file,
                        offset,
                        len: size,
                    },
                    payload_sha256: Some(sigv4::hex(&digest)),
                    shown: &shown,
                },
            )?;
            let etag = reply.etag.ok_or_else(|| {
                SendError::Refused(format!("{shown}: S3 gave part {number} no ETag"))
            })?;
            etags.push(etag);
            offset += size;
        }
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (number, etag) in etags.iter().enumerate() {
            xml.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                number + 1,
                escape(etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let reply = request(
            client,
            credentials,
            object,
            &address,
            &Request {
                method: "POST",
                query: &[("uploadId", &upload_id)],
                headers: &[("content-type", "application/xml")],
                body: Payload::Bytes(xml.as_bytes()),
                payload_sha256: None,
                shown: &shown,
            },
        )?;
        // S3 may answer 200 and still fail the completion, in the body.
        if reply.body.contains("<Error>") {
            let code = xml_text(&reply.body, "Code").unwrap_or_default();
            return Err(SendError::Refused(format!(
                "{shown}: completing the upload failed: {code}"
            )));
        }
        Ok(())
    })();
    if completed.is_err() {
        // Best effort: the parts already sent are not kept (and not billed).
        let _ = request(
            client,
            credentials,
            object,
            &address,
            &Request {
                method: "DELETE",
                query: &[("uploadId", &upload_id)],
                headers: &[],
                body: Payload::Bytes(b""),
                payload_sha256: None,
                shown: &shown,
            },
        );
    }
    completed
}

/// The SHA-256 of `len` bytes of `file` from `offset`, read in small pieces.
fn section_sha256(file: &File, offset: u64, len: u64) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let want = buf
            .len()
            .min(usize::try_from(end - at).unwrap_or(usize::MAX));
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file got shorter while it was read",
            ));
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hasher.finalize().into())
}

struct Request<'a> {
    method: &'a str,
    query: &'a [(&'a str, &'a str)],
    headers: &'a [(&'a str, &'a str)],
    body: Payload<'a>,
    /// The body's SHA-256 (hex), when already known; else it is computed (bytes only).
    payload_sha256: Option<String>,
    shown: &'a str,
}

fn request(
    client: &mut Client,
    credentials: &Credentials,
    object: &Object<'_>,
    address: &Address,
    request: &Request<'_>,
) -> Result<super::http::Reply, SendError> {
    let payload = match (&request.payload_sha256, request.body) {
        (Some(hash), _) => hash.clone(),
        (None, Payload::Bytes(bytes)) => sigv4::sha256_hex(bytes),
        (None, Payload::Section { .. }) => sigv4::UNSIGNED_PAYLOAD.to_owned(),
    };
    let query = sigv4::canonical_query(request.query);
    let url = if query.is_empty() {
        format!("{}{}", address.base, address.path)
    } else {
        format!("{}{}?{query}", address.base, address.path)
    };
    let headers = || {
        let mut signed: Vec<(&str, &str)> = request.headers.to_vec();
        signed.push(("x-amz-content-sha256", &payload));
        let auth = sigv4::sign(
            credentials,
            &Scope {
                region: object.region,
                service: "s3",
            },
            &sigv4::Request {
                method: request.method,
                host: &address.host,
                path: &address.path,
                query: request.query,
                headers: &signed,
                payload_sha256: &payload,
            },
            chrono::Utc::now(),
        );
        let mut all: Vec<(String, String)> = signed
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        all.push(("host".into(), address.host.clone()));
        all.extend(auth.into_iter().map(|(n, v)| (n.to_owned(), v)));
        Ok(all)
    };
    client.send(&Call {
        method: request.method,
        url: &url,
        body: request.body,
        headers: &headers,
        shown_as: request.shown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(endpoint: Option<&'static str>, bucket: &'static str) -> Object<'static> {
        Object {
            bucket,
            key: "app/logs/2026-01-01_12-00-00.log",
            region: "eu-west-3",
            endpoint,
            content_type: "text/plain",
        }
    }

    #[test]
    fn addresses_are_virtual_hosted_on_aws_and_path_style_elsewhere() {
        let aws = object(None, "acme-ci").address();
        assert_eq!(aws.base, "https://acme-ci.s3.eu-west-3.amazonaws.com");
        assert_eq!(aws.path, "/app/logs/2026-01-01_12-00-00.log");
        let dotted = object(None, "acme.ci").address();
        assert_eq!(dotted.host, "s3.eu-west-3.amazonaws.com");
        assert_eq!(dotted.path, "/acme.ci/app/logs/2026-01-01_12-00-00.log");
        let moto = object(Some("http://127.0.0.1:5000"), "acme-ci").address();
        assert_eq!(moto.base, "http://127.0.0.1:5000");
        assert_eq!(moto.host, "127.0.0.1:5000");
        assert_eq!(moto.path, "/acme-ci/app/logs/2026-01-01_12-00-00.log");
        let minio = object(Some("https://minio.example.org:443/s3"), "b-1").address();
        assert_eq!(minio.host, "minio.example.org");
        assert_eq!(minio.path, "/s3/b-1/app/logs/2026-01-01_12-00-00.log");
    }
}
