//! Keeping secrets out of everything the runner writes: the terminal, the run log, JSON, the ledger.
//!
//! A secret is the value of an environment variable the pipeline lists under `secrets:`. A value
//! rarely shows up only as itself, so [`Masker`] also looks for the forms tools put it in: each
//! line of a multi-line value, its base64 (alone, or inside a longer base64 string such as an HTTP
//! basic-auth header) and its percent-encoding. Every match becomes [`MASK`]; overlapping forms
//! are masked by the longest.
//!
//! Stage output arrives in chunks cut wherever the pipe happened to be read, so a secret may be
//! split across two reads or more. [`MaskStream`] holds back the few bytes at the end of a chunk
//! that could be the start of a secret and masks them with what follows. No form of a secret
//! contains a newline, so a chunk that ends a line is shown whole, at once.
//!
//! Bytes are masked as bytes: invalid UTF-8 around a secret passes through untouched.

use crate::pipeline::{Action, Pipeline, Uses};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::mem;
use std::ops::Range;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::GeneralPurpose;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// What replaces a secret.
pub const MASK: &str = "***";

/// Forms derived from a value (base64, percent-encoding) shorter than this are not masked: a
/// two-letter secret must not blank out every `YW` in a log.
const MIN_DERIVED_LEN: usize = 4;

/// What percent-encoding leaves alone: the unreserved characters of RFC 3986.
const UNRESERVED_KEPT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The base64 alphabets a secret is looked for in, each as (padded, unpadded).
const BASE64_ENGINES: [(GeneralPurpose, GeneralPurpose); 2] =
    [(STANDARD, STANDARD_NO_PAD), (URL_SAFE, URL_SAFE_NO_PAD)];

/// A secret shorter than this is masked all the same, but masks that text wherever it is
/// (every `a` of the output for `TOK=a`): a run says so before it starts.
pub const SHORT_SECRET: usize = 4;

/// Each secret of the pipeline that is set, by name, with its value: from the environment, or
/// from an `env:` of the pipeline. With `cloud:`, the AWS secret key and session token are
/// secrets; with `notify:`, each webhook's URL.
pub fn secret_values(pipeline: &Pipeline) -> Vec<(String, String)> {
    let mut names: Vec<&str> = pipeline
        .secrets
        .iter()
        .chain(pipeline.stages.iter().flat_map(|s| &s.secrets))
        .map(String::as_str)
        .collect();
    if pipeline.cloud.is_some() {
        names.extend(["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]);
    }
    names.extend(pipeline.notify.iter().map(|hook| hook.env.as_str()));
    let from_env = names
        .iter()
        .filter_map(|name| Some(((*name).to_owned(), std::env::var(name).ok()?)));
    let from_yaml = std::iter::once(&pipeline.env)
        .chain(pipeline.stages.iter().map(|s| &s.env))
        .flat_map(|env| env.iter())
        .filter(|(key, _)| names.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()));
    from_env.chain(from_yaml).collect()
}

/// The names of secrets shorter than [`SHORT_SECRET`] (but not empty).
pub fn short_secrets(pipeline: &Pipeline) -> Vec<String> {
    let mut names: Vec<String> = secret_values(pipeline)
        .into_iter()
        .filter(|(_, value)| {
            let len = value.trim().chars().count();
            len > 0 && len < SHORT_SECRET
        })
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Above this many bytes of patterns, the automaton is the compact one.
const COMPACT_ABOVE: usize = 16 * 1024;

/// Finds the secrets of one run and masks them.
///
/// Cheap to clone: the automaton is shared.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// None when there is nothing to mask.
    matcher: Option<Matcher>,
    /// The length of the longest pattern, in bytes.
    longest: usize,
}

#[derive(Debug, Clone)]
enum Matcher {
    /// Leftmost-longest search over every form of every secret (the forms kept too, to tell
    /// whether the end of a chunk may be the start of one).
    Patterns(AhoCorasick, Arc<[Vec<u8>]>),
    /// The automaton could not be built (far more secret text than any environment holds): every
    /// line is masked whole rather than any secret being let through.
    Everything,
}

impl Masker {
    /// Hides the values of the pipeline's secrets (those that are set) and the credentials in
    /// its repository URL and its environments' URLs.
    pub fn for_pipeline(pipeline: &Pipeline) -> Masker {
        Masker::for_pipeline_and(pipeline, Vec::new())
    }

    /// [`for_pipeline`](Masker::for_pipeline), and `extra` values (the AWS chain's secrets
    /// read from a profile file). With `cloud:`, the AWS secret key and session token are
    /// secrets; with `notify:`, each webhook's URL.
    pub fn for_pipeline_and(pipeline: &Pipeline, extra: Vec<String>) -> Masker {
        let values = secret_values(pipeline).into_iter().map(|(_, value)| value);
        let credentials = pipeline
            .repo
            .as_ref()
            .map(|repo| url_credentials(&repo.url))
            .unwrap_or_default()
            .into_iter()
            .chain(
                pipeline
                    .environments
                    .iter()
                    .flat_map(|environment| url_credentials(&environment.url)),
            )
            .chain(
                pipeline
                    .stages
                    .iter()
                    .flat_map(|stage| match &stage.action {
                        // A package index's upload URL (`https://user:password@host/`).
                        Action::Uses(Uses::PythonPublish(params)) => {
                            url_credentials(&params.repository_url)
                        }
                        _ => Vec::new(),
                    }),
            );
        Masker::new(values.chain(credentials).chain(extra))
    }

    /// Builds the patterns for these secret values.
    ///
    /// Values that are empty or only whitespace mask nothing.
    pub fn new<I, S>(values: I) -> Masker
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns = patterns(values);
        let Some(longest) = patterns.iter().map(String::len).max() else {
            return Masker::default();
        };
        let total: usize = patterns.iter().map(String::len).sum();
        let mut builder = AhoCorasick::builder();
        builder.match_kind(MatchKind::LeftmostLongest);
        if total > COMPACT_ABOVE {
            // A DFA (or dense NFA states) costs kilobytes per byte of secret: a long secret
            // (a key file in `env:`) is matched by the compact NFA instead, linear in its size.
            builder
                .kind(Some(aho_corasick::AhoCorasickKind::ContiguousNFA))
                .dense_depth(0);
        }
        let built = builder.build(&patterns);
        let matcher = match built {
            Ok(automaton) => Matcher::Patterns(
                automaton,
                patterns.into_iter().map(String::into_bytes).collect(),
            ),
            Err(_) => Matcher::Everything,
        };
        Masker {
            matcher: Some(matcher),
            longest,
        }
    }

    /// Whether there is no secret to mask, so that text passes through unchanged.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `text` with every secret replaced by [`MASK`]; borrowed when there was none.
    pub fn mask_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.mask_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Patterns are UTF-8, so matches in UTF-8 text start and end on character boundaries
            // and the result is UTF-8 too; the lossy path is never taken.
            Cow::Owned(bytes) => Cow::Owned(
                String::from_utf8(bytes)
                    .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned()),
            ),
        }
    }

    /// `bytes` with every secret replaced by [`MASK`]; borrowed when there was none.
    pub fn mask_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let mut spans = self.spans(bytes).peekable();
        if spans.peek().is_none() {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut shown = 0;
        for span in spans {
            out.extend_from_slice(&bytes[shown..span.start]);
            out.extend_from_slice(MASK.as_bytes());
            shown = span.end;
        }
        out.extend_from_slice(&bytes[shown..]);
        Cow::Owned(out)
    }

    /// A masker for one output stream that may cut a secret anywhere.
    ///
    /// The stream owns its share of the patterns, so it can be moved into the thread that reads
    /// the stream.
    pub fn stream(&self) -> MaskStream {
        MaskStream {
            masker: self.clone(),
            held: Vec::new(),
        }
    }

    /// How many bytes at the end of `tail` (which holds no newline) may be the start of a
    /// secret: the longest end of it that begins some pattern. Holding back no more than that
    /// lets a prompt without a newline (`Password: `) show at once.
    fn held(&self, tail: &[u8]) -> usize {
        match &self.matcher {
            None => 0,
            Some(Matcher::Patterns(_, patterns)) => {
                let most = tail.len().min(self.longest.saturating_sub(1));
                (1..=most)
                    .rev()
                    .find(|&k| {
                        let end = &tail[tail.len() - k..];
                        patterns.iter().any(|p| p.starts_with(end))
                    })
                    .unwrap_or(0)
            }
            Some(Matcher::Everything) => tail.len(),
        }
    }

    /// Where the secrets are in `hay`, in order and not overlapping.
    fn spans<'a>(&'a self, hay: &'a [u8]) -> Spans<'a> {
        match &self.matcher {
            None => Spans::Nothing,
            Some(Matcher::Patterns(automaton, _)) => Spans::Patterns(automaton.find_iter(hay)),
            Some(Matcher::Everything) => Spans::Lines { hay, at: 0 },
        }
    }
}

/// The matches of a [`Masker`] in one haystack.
enum Spans<'a> {
    Nothing,
    Patterns(aho_corasick::FindIter<'a, 'a>),
    /// Every run of bytes between newlines.
    Lines {
        hay: &'a [u8],
        at: usize,
    },
}

impl Iterator for Spans<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        match self {
            Spans::Nothing => None,
            Spans::Patterns(matches) => matches.next().map(|m| m.range()),
            Spans::Lines { hay, at } => {
                let rest = hay.get(*at..)?;
                let start = *at + rest.iter().position(|b| *b != b'\n')?;
                let len = hay[start..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .unwrap_or(hay.len() - start);
                *at = start + len;
                Some(start..start + len)
            }
        }
    }
}

/// Masks a stream that arrives in chunks cut at arbitrary points.
///
/// What [`push`](MaskStream::push) and [`finish`](MaskStream::finish) return, put together, is
/// exactly [`Masker::mask_bytes`] of the whole stream, however it was cut.
#[derive(Debug, Clone)]
pub struct MaskStream {
    masker: Masker,
    /// The end of what was pushed that may be the start of a secret: never more than the longest
    /// pattern less one byte, and nothing before the last newline.
    held: Vec<u8>,
}

impl MaskStream {
    /// Masks `chunk`, returning what can be shown now; may hold back a tail that could be the
    /// start of a secret.
    ///
    /// A chunk that ends with a newline is returned whole, with whatever was held before it.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.masker.is_empty() {
            return chunk.to_vec();
        }
        let mut buf = mem::take(&mut self.held);
        buf.extend_from_slice(chunk);

        // No pattern holds a newline, so none goes on past one; and a match that starts more
        // than the longest pattern before the end is already complete. Every match that starts
        // before `settled` is therefore the one the whole stream would have there.
        let after_newline = buf.iter().rposition(|b| *b == b'\n').map_or(0, |at| at + 1);
        let settled = buf.len() - self.masker.held(&buf[after_newline..]);

        let mut out = Vec::with_capacity(settled + MASK.len());
        let mut shown = 0;
        for span in self.masker.spans(&buf) {
            if span.start >= settled {
                break;
            }
            out.extend_from_slice(&buf[shown..span.start]);
            out.extend_from_slice(MASK.as_bytes());
            shown = span.end;
        }
        // A match that straddles `settled` has just been masked whole; the cut moves past it.
        let cut = shown.max(settled);
        out.extend_from_slice(&buf[shown..cut]);
        buf.drain(..cut);
        self.held = buf;
        out
    }

    /// The end of the stream: masks and returns whatever is held back.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = mem::take(&mut self.held);
        self.masker.mask_bytes(&held).into_owned()
    }
}

/// The credentials embedded in a URL (`https://user:token@host/…`): the password, and the user
/// name when it is a token: alone over http(s) (`https://TOKEN@host`; `ssh://deploy@host`
/// names an account), or beside a password when it is long enough to be one
/// (`https://TOKEN:x-oauth-basic@host`, as GitHub documents). Empty for URLs without userinfo,
/// scp-like `git@host:path`, and local paths.
///
/// The credentials are percent-decoded: `https://u:p%40ss@host` gives `p@ss`, whose encoded form
/// a [`Masker`] masks as well.
pub fn url_credentials(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.trim().split_once("://") else {
        return Vec::new();
    };
    let mut scheme_chars = scheme.chars();
    let scheme_ok = scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Vec::new();
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let Some(Secrets { user, password }) = userinfo_secrets(scheme, authority) else {
        return Vec::new();
    };
    [user, password]
        .into_iter()
        .flatten()
        .map(|range| {
            percent_decode_str(&authority[range])
                .decode_utf8_lossy()
                .into_owned()
        })
        .filter(|secret| !secret.trim().is_empty())
        .collect()
}

/// Where the credentials are in a URL's `authority` (what follows `scheme://`, up to the path),
/// as one range to hide: the whole userinfo when it holds a password (either part may be the
/// token), else a user name that is a token (see [`url_credentials`]).
pub fn credentials_range(scheme: &str, authority: &str) -> Option<Range<usize>> {
    let (userinfo, _host) = authority.rsplit_once('@')?;
    match userinfo_secrets(scheme, authority)? {
        Secrets {
            password: Some(_), ..
        } => Some(0..userinfo.len()),
        Secrets { user, .. } => user,
    }
}

/// A user name this long beside a password is taken for a token (GitHub's are 40 characters,
/// GitLab's 26); a person's or a service's account name is shorter.
const TOKEN_LEN: usize = 16;

/// The secret parts of a URL's userinfo, as ranges of its authority.
struct Secrets {
    /// The user name, when it is secret.
    user: Option<Range<usize>>,
    /// The password, when there is one.
    password: Option<Range<usize>>,
}

/// The secret parts of the userinfo of `authority`, after `scheme://`; `None` without userinfo.
fn userinfo_secrets(scheme: &str, authority: &str) -> Option<Secrets> {
    // An unencoded `@` in a password is common enough; the host cannot hold one.
    let (userinfo, _host) = authority.rsplit_once('@')?;
    let user_len = userinfo.find(':').unwrap_or(userinfo.len());
    let user = &userinfo[..user_len];
    let password = (user_len + 1).min(userinfo.len())..userinfo.len();
    let secrets = if password.is_empty() {
        // `https://TOKEN@host`, or `https://TOKEN:@host`; over ssh, an account.
        let web = scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http");
        let secret_user = web && !user.is_empty();
        Secrets {
            user: secret_user.then_some(0..user_len),
            password: None,
        }
    } else {
        let token_user = user.chars().count() >= TOKEN_LEN;
        Secrets {
            user: token_user.then_some(0..user_len),
            password: Some(password),
        }
    };
    Some(secrets)
}

/// Every form of every value that is to be masked; none contains a newline.
fn patterns<I, S>(values: I) -> BTreeSet<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut patterns = BTreeSet::new();
    for value in values {
        add_patterns(value.as_ref(), &mut patterns);
    }
    patterns
}

fn add_patterns(value: &str, patterns: &mut BTreeSet<String>) {
    let trimmed = value.trim_end_matches(['\r', '\n']);
    if trimmed.trim().is_empty() {
        return;
    }
    if trimmed.contains('\n') {
        // Line by line: output is read and shown by lines, and a tool that prints the value
        // (with its own line endings) prints each of them.
        for line in trimmed.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if !line.trim().is_empty() {
                patterns.insert(line.to_owned());
            }
        }
    } else {
        patterns.insert(trimmed.to_owned());
    }

    let mut derived = BTreeSet::new();
    for form in [trimmed, value] {
        add_base64_forms(form.as_bytes(), &mut derived);
        add_percent_forms(form, &mut derived);
    }
    patterns.extend(
        derived
            .into_iter()
            .filter(|p| p.len() >= MIN_DERIVED_LEN && !p.contains('\n')),
    );
}

/// The value's base64 alone (padded and not), and the part of it that shows inside a longer
/// base64 string, for each of the three places the value can start within a 3-byte group: in the
/// middle of the string, and at its end (padded and not).
fn add_base64_forms(value: &[u8], forms: &mut BTreeSet<String>) {
    for (padded, unpadded) in &BASE64_ENGINES {
        forms.insert(padded.encode(value));
        forms.insert(unpadded.encode(value));
        for skew in 0..3 {
            let mut shifted = vec![0; skew];
            shifted.extend_from_slice(value);
            // Character i carries bits 6i..6i+6: keep those that hold only the value's bits,
            // from the end of the unknown prefix to the start of the unknown suffix. At the end
            // of the string there is no suffix and the last character is the value's too.
            let start = (8 * skew).div_ceil(6);
            let end = 8 * shifted.len() / 6;
            let encoded = unpadded.encode(&shifted);
            for form in [encoded.get(start..end), encoded.get(start..)] {
                forms.extend(form.map(str::to_owned));
            }
            forms.extend(padded.encode(&shifted).get(start..).map(str::to_owned));
        }
    }
}

/// The value percent-encoded, with upper- and lower-case hex, and as a form field (`+` for a
/// space); none when encoding changes nothing.
fn add_percent_forms(value: &str, forms: &mut BTreeSet<String>) {
    let upper = utf8_percent_encode(value, UNRESERVED_KEPT).to_string();
    if upper == value {
        return;
    }
    let lower = lower_hex(&upper);
    if value.contains(' ') {
        forms.insert(upper.replace("%20", "+"));
        forms.insert(lower.replace("%20", "+"));
    }
    forms.insert(upper);
    forms.insert(lower);
}

/// `encoded` with the two hex digits after each `%` in lower case. Every `%` in a
/// percent-encoded string starts an escape, a literal one being `%25`.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            out.push(c);
            if c == '%' {
                hex_left = 2;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(masker: &Masker, text: &str) -> String {
        masker.mask_str(text).into_owned()
    }

    /// Pushes `input` cut at `cuts` (ascending offsets) and returns everything shown.
    fn stream_with_cuts(masker: &Masker, input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut stream = masker.stream();
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([input.len()].iter()) {
            out.extend(stream.push(&input[from..cut]));
            from = cut;
        }
        out.extend(stream.finish());
        out
    }

    /// Streamed in two pieces, cut anywhere, `input` masks as `whole` does.
    fn assert_every_cut_gives(masker: &Masker, input: &[u8], whole: &[u8]) {
        for cut in 0..=input.len() {
            assert_eq!(
                stream_with_cuts(masker, input, &[cut]),
                whole,
                "cut at {cut}"
            );
        }
    }

    const MULTI_LINE: &str = "-----BEGIN KEY-----\r\nAbCdEf0123\r\n\r\n   \r\nZyXw9876==\r\n";

    fn stream_masker() -> Masker {
        Masker::new(["hunter22", "tok-ABCDEFGH", MULTI_LINE, "p@ss w/rd"])
    }

    fn stream_input() -> Vec<u8> {
        let mut input = Vec::new();
        input.extend_from_slice(b"start hunter22 and tok-ABCDEFGH\n");
        input.extend_from_slice(MULTI_LINE.as_bytes());
        input.extend_from_slice(b"auth: Basic ");
        input.extend_from_slice(STANDARD.encode("user:hunter22").as_bytes());
        input.extend_from_slice(b"\nurl: https://u:p%40ss%20w%2Frd@host/x \xff\xfe hunter2");
        input.extend_from_slice(b"2hunter22tok-ABCDEFG");
        input.extend_from_slice(b"\n\nno newline at the end: tok-ABCD");
        input
    }

    #[test]
    fn masks_a_plain_value_everywhere() {
        let masker = Masker::new(["s3cret-value"]);
        assert!(!masker.is_empty());
        assert_eq!(
            masked(&masker, "a s3cret-value, s3cret-values\ns3cret-value"),
            "a ***, ***s\n***"
        );
        assert!(matches!(
            masker.mask_str("nothing secret here"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_trailing_newline_is_not_part_of_the_value() {
        let masker = Masker::new(["token1234\n"]);
        assert_eq!(masked(&masker, "token1234 end"), "*** end");
        assert_eq!(masked(&masker, "x\ny"), "x\ny");
    }

    #[test]
    fn masks_each_line_of_a_multi_line_value_but_not_blank_ones() {
        let masker = Masker::new(["first-line\r\n\r\n  \nsecond-line\n"]);
        assert_eq!(
            masked(&masker, "first-line\r\n\r\n  \nsecond-line\n"),
            "***\r\n\r\n  \n***\n"
        );
        assert_eq!(masked(&masker, "only second-line here"), "only *** here");
        assert_eq!(masked(&masker, "\n\n  \n"), "\n\n  \n");
        assert!(
            patterns(["first-line\r\n\r\n  \nsecond-line\n"])
                .iter()
                .all(|p| !p.contains('\n'))
        );
    }

    #[test]
    fn masks_base64_in_both_alphabets_padded_or_not() {
        // `?>?` encodes to `Pz4/`, so the two alphabets differ.
        let secret = "tok?>?en!";
        let masker = Masker::new([secret]);
        let standard = STANDARD.encode(secret);
        let url_safe = URL_SAFE.encode(secret);
        assert_ne!(standard, url_safe);
        for encoded in [
            standard.clone(),
            STANDARD_NO_PAD.encode(secret),
            url_safe,
            URL_SAFE_NO_PAD.encode(secret),
        ] {
            assert_eq!(
                masked(&masker, &format!("[{encoded}]")),
                "[***]",
                "{encoded}"
            );
        }
        // An odd length, so that padding is there to be masked.
        let masker = Masker::new(["odd-length"]);
        let padded = STANDARD.encode("odd-length");
        assert!(padded.ends_with('='));
        assert_eq!(masked(&masker, &format!("v={padded};")), "v=***;");
    }

    #[test]
    fn masks_the_secret_inside_a_longer_base64_string() {
        let secret = "hunter22-is-secret";
        let masker = Masker::new([secret]);
        let header = format!(
            "Authorization: Basic {}",
            STANDARD.encode(format!("user:{secret}"))
        );
        let out = masked(&masker, &header);
        assert!(out.starts_with("Authorization: Basic "));
        assert!(out.contains(MASK), "{out}");
        // Every alignment, in both alphabets, with something after the secret too.
        for prefix in ["", "a", "ab", "abc", "user:"] {
            for (engine, _) in &BASE64_ENGINES {
                let encoded = engine.encode(format!("{prefix}{secret}>>tail"));
                let out = masked(&masker, &encoded);
                let (before, after) = out.split_once(MASK).expect("masked");
                // What is left shows the prefix and the tail, give or take a character, and
                // not the secret.
                assert!(
                    before.len() <= 4 * prefix.len() / 3 + 2,
                    "{prefix:?}: {out}"
                );
                assert!(
                    after.len() <= 4 * ">>tail".len() / 3 + 4,
                    "{prefix:?}: {out}"
                );
            }
        }
    }

    #[test]
    fn masks_percent_encoded_forms() {
        let masker = Masker::new(["p@ss w/rd"]);
        for form in [
            "p%40ss%20w%2Frd",
            "p%40ss%20w%2frd",
            "p%40ss+w%2Frd",
            "p%40ss+w%2frd",
        ] {
            assert_eq!(masked(&masker, &format!("x={form}&y")), "x=***&y", "{form}");
        }
        assert_eq!(masked(&masker, "p@ss w/rd"), "***");
        // Nothing to encode, nothing added.
        let plain = patterns(["Plain-token_1.2~3"]);
        assert!(plain.iter().all(|p| !p.contains('%')));
    }

    #[test]
    fn a_short_secret_masks_itself_but_derives_nothing_short() {
        let all = patterns(["ab"]);
        assert!(all.contains("ab"));
        assert!(
            all.iter().all(|p| p == "ab" || p.len() >= MIN_DERIVED_LEN),
            "{all:?}"
        );
        let masker = Masker::new(["ab"]);
        assert_eq!(masked(&masker, "xxabxx YWxx"), "xx***xx YWxx");
    }

    #[test]
    fn an_empty_masker_borrows() {
        for masker in [
            Masker::default(),
            Masker::new(Vec::<String>::new()),
            Masker::new(["", "\n", "  \r\n"]),
        ] {
            assert!(masker.is_empty());
            assert!(matches!(masker.mask_str("text"), Cow::Borrowed("text")));
            assert!(matches!(masker.mask_bytes(b"\xff"), Cow::Borrowed(b"\xff")));
            let mut stream = masker.stream();
            assert_eq!(stream.push(b"abc"), b"abc");
            assert!(stream.finish().is_empty());
        }
    }

    #[test]
    fn leftmost_longest_masks_overlaps_once() {
        let masker = Masker::new(["abcd", "abcdefgh", "efghij"]);
        assert_eq!(masked(&masker, "abcdefghij"), "***ij");
        assert_eq!(masked(&masker, "xabcdefxefghij"), "x***efx***");
    }

    #[test]
    fn finds_credentials_in_urls() {
        let cases: [(&str, &[&str]); 17] = [
            ("https://user:tok@host/x.git", &["tok"]),
            ("https://tok@host/x", &["tok"]),
            ("https://tok:@host/x", &["tok"]),
            ("ssh://git@host/x", &[]),
            ("ssh://git:pw@host/x", &["pw"]),
            // Over ssh a user name names an account ("deploy" must not vanish from output).
            ("ssh://deploy@host/x", &[]),
            ("git@github.com:a/b.git", &[]),
            ("/local/path", &[]),
            ("C:\\local\\path", &[]),
            ("file:///local/path", &[]),
            ("https://host/x", &[]),
            ("https://host/x?to=a@b", &[]),
            ("https://u:p%40ss@host", &["p@ss"]),
            ("https://u:p@ss@host/x", &["p@ss"]),
            ("  https://user:tok@host  ", &["tok"]),
            // GitHub's documented form: the token is the user name.
            (
                "https://ghp_0123456789abcdefghij:x-oauth-basic@github.com/o/r.git",
                &["ghp_0123456789abcdefghij", "x-oauth-basic"],
            ),
            (
                "https://x-access-token:ghs_0123456789abcdef@github.com/o/r",
                &["ghs_0123456789abcdef"],
            ),
        ];
        for (url, want) in cases {
            assert_eq!(url_credentials(url), want, "{url}");
        }
        // The decoded password is masked in its encoded form too.
        let masker = Masker::new(url_credentials("https://u:p%40ss@host"));
        assert_eq!(
            masked(&masker, "https://u:p%40ss@host"),
            "https://u:***@host"
        );
        // Hidden as one range: the whole userinfo when it has a password.
        assert_eq!(
            credentials_range("https", "tok:x-oauth-basic@github.com"),
            Some(0..17)
        );
        assert_eq!(credentials_range("https", "tok@github.com"), Some(0..3));
        assert_eq!(credentials_range("ssh", "git@github.com"), None);
        assert_eq!(credentials_range("ssh", "deploy@server"), None);
    }

    #[test]
    fn stream_matches_the_whole_for_every_single_cut() {
        let masker = stream_masker();
        let input = stream_input();
        let whole = masker.mask_bytes(&input).into_owned();
        assert!(!whole.windows(8).any(|w| w == b"hunter22"));
        assert!(whole.windows(2).any(|w| w == b"\xff\xfe"));
        let shown = String::from_utf8_lossy(&whole);
        assert!(shown.contains("Basic dXNlcjp***\n"), "{shown}");
        assert!(shown.contains("https://u:***@host"), "{shown}");
        assert!(
            shown.contains("***\r\n***\r\n\r\n   \r\n***\r\n"),
            "{shown}"
        );
        assert_every_cut_gives(&masker, &input, &whole);
    }

    #[test]
    fn stream_matches_the_whole_one_byte_at_a_time() {
        let masker = stream_masker();
        let input = stream_input();
        let cuts: Vec<usize> = (1..input.len()).collect();
        assert_eq!(
            stream_with_cuts(&masker, &input, &cuts),
            masker.mask_bytes(&input).into_owned()
        );
    }

    #[test]
    fn stream_matches_the_whole_for_pseudo_random_chunks() {
        let masker = stream_masker();
        let input = stream_input();
        let whole = masker.mask_bytes(&input).into_owned();
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..500 {
            let mut cuts = Vec::new();
            let mut at = 0;
            loop {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                at += usize::try_from(state >> 60).expect("4 bits") + 1;
                if at >= input.len() {
                    break;
                }
                cuts.push(at);
            }
            assert_eq!(stream_with_cuts(&masker, &input, &cuts), whole, "{cuts:?}");
        }
    }

    #[test]
    fn stream_never_shows_a_secret_split_across_chunks() {
        let masker = Masker::new(["hunter22"]);
        let mut stream = masker.stream();
        let mut shown = Vec::new();
        for chunk in [&b"x hun"[..], b"te", b"r2", b"2 y"] {
            let out = stream.push(chunk);
            assert!(!out.windows(3).any(|w| w == b"hun"), "{out:?}");
            shown.extend(out);
        }
        shown.extend(stream.finish());
        assert_eq!(shown, b"x *** y");
    }

    #[test]
    fn stream_holds_only_what_may_start_a_secret() {
        let masker = Masker::new(["hunter22"]);
        let mut stream = masker.stream();
        // Nothing in a prompt can start a secret: it shows at once.
        assert_eq!(stream.push(b"Password: "), b"Password: ");
        assert!(stream.held.is_empty());
        // The start of the secret is held, and masked with what follows.
        assert_eq!(stream.push(b"x hunt"), b"x ");
        assert_eq!(stream.held, b"hunt");
        assert_eq!(stream.push(b"er22 def\n"), b"*** def\n");
        assert!(stream.held.is_empty());
        // A long line of bytes that start no secret is not held at all.
        assert_eq!(stream.push(&[b' '; 100]), vec![b' '; 100]);
        // Never more than the longest pattern less one byte.
        let longest = masker.longest;
        let mut line = vec![b'a'; 100];
        line.extend_from_slice(b"hunter2");
        let _ = stream.push(&line);
        assert!(stream.held.len() < longest);
        assert_eq!(stream.finish(), b"hunter2");
        assert!(stream.finish().is_empty());
    }

    #[test]
    fn stream_keeps_a_straddling_match_whole() {
        let masker = Masker::new(["abcdefgh", "defghijk"]);
        let input = b"..abcdefghijk..";
        let whole = masker.mask_bytes(input).into_owned();
        assert_eq!(whole, b"..***ijk..");
        assert_every_cut_gives(&masker, input, &whole);
    }

    #[test]
    fn non_utf8_passes_through() {
        let masker = Masker::new(["hunter22"]);
        assert_eq!(
            masker.mask_bytes(b"\xff\xfehunter22\x80\n").into_owned(),
            b"\xff\xfe***\x80\n"
        );
        let mut stream = masker.stream();
        assert_eq!(stream.push(b"\xc3"), b"\xc3");
        assert_eq!(stream.push(b"\xa9\n\xff"), b"\xa9\n\xff");
        assert!(stream.finish().is_empty());
    }

    #[test]
    fn fails_closed_when_there_is_no_automaton() {
        let masker = Masker {
            matcher: Some(Matcher::Everything),
            longest: 8,
        };
        assert_eq!(masked(&masker, "one\n\ntwo"), "***\n\n***");
        let input = b"one line\nand another";
        let whole = masker.mask_bytes(input).into_owned();
        assert_every_cut_gives(&masker, input, &whole);
    }

    #[test]
    fn a_stream_can_move_to_another_thread() {
        fn send_and_sync<T: Send + Sync + 'static>(_: &T) {}
        let masker = Masker::new(["hunter22"]);
        let stream = masker.stream();
        send_and_sync(&stream);
        let out = std::thread::spawn(move || {
            let mut stream = stream;
            let mut out = stream.push(b"hunter22");
            out.extend(stream.finish());
            out
        })
        .join()
        .expect("thread");
        assert_eq!(out, b"***");
    }
}
