//! AWS Signature Version 4, in the request headers (`Authorization`), as S3 and SNS take it.
//!
//! Written here on the `hmac` and `sha2` crates rather than taken from a crate: the S3 crates
//! that stay out of I/O sign presigned URLs only (the signature in the query), which S3
//! emulators such as moto cannot check, and AWS's own signer comes with its async runtime.
//! The unit tests hold it to AWS's published SigV4 test suite.

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The payload hash of a body that is not hashed (never used for a body we send).
pub(crate) const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The SHA-256 of no bytes, as a hex string.
#[cfg(test)]
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An access key, with the session token of temporary credentials.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, never the token.
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What is signed of one request.
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    /// The `Host` header as sent: `host`, or `host:port` for a port that is not the scheme's.
    pub(crate) host: &'a str,
    /// The path, already URI-encoded (S3: each segment once; see [`encode_path`]).
    pub(crate) path: &'a str,
    /// The query parameters, not encoded; [`canonical_query`] encodes and sorts them.
    pub(crate) query: &'a [(&'a str, &'a str)],
    /// Other headers to sign (every `x-amz-*` header sent must be among them).
    pub(crate) headers: &'a [(&'a str, &'a str)],
    /// The hex SHA-256 of the body.
    pub(crate) payload_sha256: &'a str,
}

/// Where the signature applies: a region and a service (`s3`, `sns`).
pub(crate) struct Scope<'a> {
    pub(crate) region: &'a str,
    pub(crate) service: &'a str,
}

/// The headers to add to the request: `x-amz-date`, `x-amz-security-token` (with temporary
/// credentials) and `authorization`.
pub(crate) fn sign(
    credentials: &Credentials,
    scope: &Scope<'_>,
    request: &Request<'_>,
    at: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    let amz_date = at.format("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz_date[..8];
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), trim_value(value)))
        .collect();
    headers.push(("host".into(), request.host.to_owned()));
    headers.push(("x-amz-date".into(), amz_date.clone()));
    if let Some(token) = &credentials.session_token {
        headers.push(("x-amz-security-token".into(), token.clone()));
    }
    headers.sort();
    let signed_headers = headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut canonical_headers = String::new();
    for (name, value) in &headers {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(value);
        canonical_headers.push('\n');
    }
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        request.method,
        request.path,
        canonical_query(request.query),
        request.payload_sha256
    );
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{credential_scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let key = signing_key(&credentials.secret_access_key, date, scope);
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    let mut out = vec![("x-amz-date", amz_date)];
    if let Some(token) = &credentials.session_token {
        out.push(("x-amz-security-token", token.clone()));
    }
    out.push((
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
            credentials.access_key_id
        ),
    ));
    out
}

/// The query as signed, and as it must be sent: each name and value URI-encoded, sorted.
pub(crate) fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(name, value)| (encode(name), encode(value)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// URI-encodes every byte but the unreserved characters (`A-Z a-z 0-9 - . _ ~`), as SigV4
/// requires (`%20` for a space, never `+`).
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A path of `/`-separated segments, each URI-encoded once (S3's canonical form of a key).
pub(crate) fn encode_path(path: &str) -> String {
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A header's value as signed: trimmed, inner runs of spaces made one.
fn trim_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn signing_key(secret: &str, date: &str, scope: &Scope<'_>) -> Vec<u8> {
    let key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let key = hmac(&key, scope.region.as_bytes());
    let key = hmac(&key, scope.service.as_bytes());
    hmac(&key, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    //! AWS's SigV4 test suite (`aws-sig-v4-test-suite`, as kept in aws-c-auth's
    //! `tests/aws-signing-test-suite/v4/`): every case signs for `AKIDEXAMPLE` in `us-east-1`,
    //! service `service`, at 2015-08-30T12:36:00Z.

    use super::*;
    use chrono::TimeZone;

    fn suite_credentials(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_owned),
        }
    }

    fn suite(
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
        token: Option<&str>,
    ) -> String {
        let at = Utc.with_ymd_and_hms(2015, 8, 30, 12, 36, 0).unwrap();
        let payload = sha256_hex(body);
        let request = Request {
            method,
            host: "example.amazonaws.com",
            path,
            query,
            headers,
            payload_sha256: &payload,
        };
        let scope = Scope {
            region: "us-east-1",
            service: "service",
        };
        let signed = sign(&suite_credentials(token), &scope, &request, at);
        assert_eq!(signed[0], ("x-amz-date", "20150830T123600Z".to_owned()));
        signed.last().unwrap().1.clone()
    }

    fn signature(authorization: &str) -> &str {
        authorization.rsplit_once("Signature=").unwrap().1
    }

    #[test]
    fn get_vanilla() {
        let auth = suite("GET", "/", &[], &[], b"", None);
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn get_vanilla_query_order_key_case() {
        let query = [("Param2", "value2"), ("Param1", "value1")];
        assert_eq!(canonical_query(&query), "Param1=value1&Param2=value2");
        let auth = suite("GET", "/", &query, &[], b"", None);
        assert_eq!(
            signature(&auth),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn get_utf8() {
        let path = encode_path("/ሴ");
        assert_eq!(path, "/%E1%88%B4");
        let auth = suite("GET", &path, &[], &[], b"", None);
        assert_eq!(
            signature(&auth),
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"
        );
    }

    #[test]
    fn post_vanilla() {
        let auth = suite("POST", "/", &[], &[], b"", None);
        assert_eq!(
            signature(&auth),
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
    }

    #[test]
    fn post_x_www_form_urlencoded() {
        let body = b"Param1=value1";
        assert_eq!(
            sha256_hex(body),
            "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        );
        let auth = suite(
            "POST",
            "/",
            &[],
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body,
            None,
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn get_vanilla_with_session_token() {
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        let at = Utc.with_ymd_and_hms(2015, 8, 30, 12, 36, 0).unwrap();
        let request = Request {
            method: "GET",
            host: "example.amazonaws.com",
            path: "/",
            query: &[],
            headers: &[],
            payload_sha256: EMPTY_SHA256,
        };
        let scope = Scope {
            region: "us-east-1",
            service: "service",
        };
        let signed = sign(&suite_credentials(Some(token)), &scope, &request, at);
        assert_eq!(signed[1], ("x-amz-security-token", token.to_owned()));
        assert_eq!(
            signed[2].1,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date;x-amz-security-token, \
             Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
        );
    }

    /// The example of S3's documentation ("Signature Calculations for the Authorization
    /// Header: Transferring Payload in a Single Chunk", GET Object): the S3 flavour, with
    /// `x-amz-content-sha256` signed.
    #[test]
    fn s3_get_object_example() {
        let at = Utc.with_ymd_and_hms(2013, 5, 24, 0, 0, 0).unwrap();
        let credentials = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let request = Request {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: &encode_path("/test.txt"),
            query: &[],
            headers: &[
                ("Range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_SHA256),
            ],
            payload_sha256: EMPTY_SHA256,
        };
        let scope = Scope {
            region: "us-east-1",
            service: "s3",
        };
        let signed = sign(&credentials, &scope, &request, at);
        assert_eq!(
            signed[1].1,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn encoding_keeps_only_unreserved_characters() {
        assert_eq!(encode("a b+c/d~e"), "a%20b%2Bc%2Fd~e");
        assert_eq!(
            encode_path("logs/2026-01-01 x.log"),
            "logs/2026-01-01%20x.log"
        );
        assert!(format!("{:?}", suite_credentials(Some("t"))).contains("AKIDEXAMPLE"));
        assert!(!format!("{:?}", suite_credentials(Some("tok"))).contains("EXAMPLEKEY"));
    }
}
