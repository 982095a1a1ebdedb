//! ldl's own requests to the Hub: a file's metadata (HEAD), its download (GET) and a dataset's
//! file listing, with timeouts, a size bound, a progress report and every server value checked
//! before it becomes a path.
//!
//! Why not hf-hub's `download_file`: it writes with the server's values before its caller can
//! look at them. Its HEAD's ETag becomes `blobs/<ETag>` and its `X-Repo-Commit` becomes
//! `snapshots/<commit>/` and the content of `refs/<revision>` (a 404's commit also names a
//! `.no_exist/<commit>/` folder), unchecked, so a Hub, mirror or proxy answering
//! `ETag: "../../x"` writes outside the cache; an ETag that is no hash skips the checksum; and
//! its HTTP client has no timeouts, so a Hub that accepts the connection and never answers
//! hangs the command, and one that announces a huge size fills the disk. Checking its values
//! first and then calling it would not help: it makes its own HEAD request, which a hostile
//! server can answer differently. So ldl makes the requests itself, with the HTTP client hf-hub
//! already brings (reqwest), and writes the cache layout itself (see `cache.rs`); hf-hub is
//! kept for uploads.
//!
//! Limits, each set on [`crate::Hub`], else by an environment variable, else a default:
//! the connect timeout (`LDL_HUB_CONNECT_TIMEOUT`, 30 s), the read timeout (`LDL_HUB_READ_TIMEOUT`,
//! 60 s: the longest wait for the answer's headers and then for each piece of the body) and the
//! largest file downloaded (`LDL_HUB_MAX_FILE_SIZE`, 64 GiB; also never more than the free space
//! of the cache's disk).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, ETAG, LOCATION};
use reqwest::{StatusCode, Url};

use crate::error::{Error, Result};
use crate::untrusted::{bare_etag, shown, BlobId, CommitId};
use crate::{chain, HubRef, Progress};

/// The environment variable of the connect timeout, in seconds.
pub const CONNECT_TIMEOUT_ENV: &str = "LDL_HUB_CONNECT_TIMEOUT";
/// The environment variable of the read timeout, in seconds.
pub const READ_TIMEOUT_ENV: &str = "LDL_HUB_READ_TIMEOUT";
/// The environment variable of the largest file downloaded, in bytes (`K`, `M`, `G`, `T`
/// suffixes: powers of 1024).
pub const MAX_FILE_SIZE_ENV: &str = "LDL_HUB_MAX_FILE_SIZE";
/// The connect timeout when none is set.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The read timeout when none is set.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest file downloaded when no limit is set: 64 GiB (the Hub's own limit per file
/// is 50 GB).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 30;

/// The most a dataset listing may take (a listing of 100,000 files is about 10 MB).
const MAX_LISTING_BYTES: u64 = 256 << 20;
/// The most redirects followed, relative ones for a HEAD and any for a GET.
const MAX_REDIRECTS: usize = 10;

/// The timeouts and the size bound of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) connect: Duration,
    pub(crate) read: Duration,
    pub(crate) max_file_size: u64,
}

impl Limits {
    /// The values given, else those of the environment, else the defaults.
    pub(crate) fn resolve(
        connect: Option<Duration>,
        read: Option<Duration>,
        max_file_size: Option<u64>,
    ) -> Result<Limits> {
        let connect = match connect {
            Some(d) => d,
            None => {
                env_value(CONNECT_TIMEOUT_ENV, parse_seconds)?.unwrap_or(DEFAULT_CONNECT_TIMEOUT)
            }
        };
        let read = match read {
            Some(d) => d,
            None => env_value(READ_TIMEOUT_ENV, parse_seconds)?.unwrap_or(DEFAULT_READ_TIMEOUT),
        };
        let max_file_size = match max_file_size {
            Some(n) => n,
            None => env_value(MAX_FILE_SIZE_ENV, parse_bytes)?.unwrap_or(DEFAULT_MAX_FILE_SIZE),
        };
        Ok(Limits {
            connect,
            read,
            max_file_size,
        })
    }
}

/// The variable `name` parsed by `parse` (which says what it expected), if it is set.
fn env_value<T>(
    name: &str,
    parse: fn(&str) -> std::result::Result<T, &'static str>,
) -> Result<Option<T>> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => parse(text.trim())
            .map(Some)
            .map_err(|expected| Error::BadSetting {
                name: name.to_string(),
                value: text.clone(),
                expected: expected.to_string(),
            }),
    }
}

/// `30`, `0.5`: a positive number of seconds.
fn parse_seconds(text: &str) -> std::result::Result<Duration, &'static str> {
    const EXPECTED: &str = "a number of seconds above 0, e.g. 30 or 0.5";
    let seconds: f64 = text.parse().map_err(|_| EXPECTED)?;
    if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(EXPECTED)
    }
}

/// `1000000`, `512M`, `64G`, `1TiB`: a number of bytes, the suffixes powers of 1024.
fn parse_bytes(text: &str) -> std::result::Result<u64, &'static str> {
    const EXPECTED: &str = "a number of bytes, e.g. 1000000, 512M or 64G";
    let lower = text.to_ascii_lowercase();
    let unit = lower.trim_end_matches("ib").trim_end_matches('b');
    let (digits, shift) = match unit.chars().last() {
        Some('k') => (&unit[..unit.len() - 1], 10),
        Some('m') => (&unit[..unit.len() - 1], 20),
        Some('g') => (&unit[..unit.len() - 1], 30),
        Some('t') => (&unit[..unit.len() - 1], 40),
        _ => (unit, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| EXPECTED)?;
    n.checked_mul(1 << shift).filter(|&n| n > 0).ok_or(EXPECTED)
}

/// A model or a dataset repository: where its URLs and cache folder are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RepoKind {
    /// A model repository: `/{owner}/{name}/…`, `models--owner--name`.
    Model,
    /// A dataset repository: `/datasets/{owner}/{name}/…`, `datasets--owner--name`.
    Dataset,
}

impl RepoKind {
    /// The repository's folder in the cache.
    pub(crate) fn cache_folder(self, owner: &str, name: &str) -> String {
        match self {
            RepoKind::Model => format!("models--{owner}--{name}"),
            RepoKind::Dataset => format!("datasets--{owner}--{name}"),
        }
    }
}

/// What the Hub says about a file, checked: the blob id (its hash), the commit the revision
/// is at, and the size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Remote {
    pub(crate) id: BlobId,
    pub(crate) commit: CommitId,
    pub(crate) size: u64,
}

/// The HTTP side of a session: two clients (HEAD without redirects, GET following checked
/// ones), the endpoint, the token and the limits.
pub(crate) struct Http {
    endpoint: Url,
    endpoint_name: String,
    head: Client,
    get: Client,
    token: Option<String>,
    retries: usize,
    limits: Limits,
}

impl Http {
    /// Clients for `endpoint` (its base URL).
    pub(crate) fn new(
        endpoint_name: String,
        token: Option<String>,
        retries: usize,
        limits: Limits,
    ) -> Result<Http> {
        let failed = |detail: String| Error::Client {
            endpoint: endpoint_name.clone(),
            detail,
        };
        let endpoint = Url::parse(endpoint_name.trim_end_matches('/'))
            .map_err(|e| failed(format!("not a URL ({e})")))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.cannot_be_a_base() {
            return Err(failed("not an http:// or https:// URL".into()));
        }
        let builder = || {
            Client::builder()
                .user_agent(concat!("ldl-hub/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(limits.connect)
                // The blocking client's timeout bounds the wait for the answer's headers,
                // then each read of the body: a read timeout.
                .timeout(limits.read)
        };
        let head = builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| failed(chain(&e)))?;
        let get = builder()
            .redirect(reqwest::redirect::Policy::custom(checked_redirect))
            .build()
            .map_err(|e| failed(chain(&e)))?;
        Ok(Http {
            endpoint,
            endpoint_name,
            head,
            get,
            token,
            retries,
            limits,
        })
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether a token is sent.
    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `{endpoint}/[datasets/]{owner}/{name}/resolve/{revision}/{file}`, each part encoded
    /// (the revision as one segment: `refs%2Fconvert%2Fparquet`).
    fn resolve_url(&self, kind: RepoKind, r: &HubRef) -> Url {
        let mut parts = Vec::new();
        if kind == RepoKind::Dataset {
            parts.push("datasets");
        }
        parts.extend([
            r.owner.as_str(),
            r.name.as_str(),
            "resolve",
            r.revision.as_str(),
        ]);
        parts.extend(r.file.split('/'));
        self.url(&parts)
    }

    fn url(&self, parts: &[&str]) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(parts);
        }
        url
    }

    fn auth(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = self
            .token
            .as_ref()
            .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
        {
            headers.insert(AUTHORIZATION, value);
        }
        headers
    }

    /// Sends the request `build` makes, again after a refused connection or a 429/5xx answer,
    /// up to `retries` more times. A timeout is not retried: it already took its time.
    fn send(&self, build: impl Fn() -> RequestBuilder) -> reqwest::Result<Response> {
        let mut attempt = 0;
        loop {
            let result = build().headers(self.auth()).send();
            let again = match &result {
                Err(e) => e.is_connect() && !e.is_timeout(),
                Ok(r) => {
                    r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS
                }
            };
            if !again || attempt >= self.retries {
                return result;
            }
            std::thread::sleep(Duration::from_millis(500 << attempt.min(4)));
            attempt += 1;
        }
    }

    /// The checked metadata of `r`'s file: a HEAD of its resolve URL, following relative
    /// redirects (a renamed repository); an absolute one (to a CDN) carries the file's
    /// metadata in `X-Linked-Etag` and `X-Linked-Size`, as the Hub sends them.
    pub(crate) fn metadata(&self, kind: RepoKind, r: &HubRef) -> Result<Remote> {
        let mut url = self.resolve_url(kind, r);
        for _ in 0..=MAX_REDIRECTS {
            let response = self
                .send(|| self.head.head(url.clone()))
                .map_err(|e| self.transport(r, e))?;
            let status = response.status();
            if status.is_redirection() {
                if let Some(next) = header(&response, LOCATION.as_str())
                    .and_then(|location| relative_redirect(&url, &location))
                {
                    url = next;
                    continue;
                }
            }
            if !(status.is_success() || status.is_redirection()) {
                return Err(self.status_error(r, &response, Missing::File));
            }
            return self.remote(r, &response);
        }
        Err(self.refused(
            r,
            "redirect",
            "",
            &format!("is one of more than {MAX_REDIRECTS}"),
        ))
    }

    /// The blob id, commit and size the HEAD `response` announces, each checked.
    fn remote(&self, r: &HubRef, response: &Response) -> Result<Remote> {
        remote_of(|name| header(response, name))
            .map_err(|bad| self.refused(r, bad.field, &bad.value, &bad.reason))
    }

    /// Downloads `r`'s file into `to` (a new file), stopping as soon as the body is longer
    /// than `remote.size` or stalls, and checks its hash against `remote.id`. Reports
    /// progress to `progress`. On an error `to` may hold a part: the caller removes it.
    pub(crate) fn download(
        &self,
        kind: RepoKind,
        r: &HubRef,
        remote: &Remote,
        to: &Path,
        progress: &dyn Fn(&Progress),
    ) -> Result<()> {
        let url = self.resolve_url(kind, r);
        let response = self
            .send(|| self.get.get(url.clone()))
            .map_err(|e| self.transport(r, e))?;
        if response.status().is_redirection() {
            // A redirect reqwest would not follow (to another scheme): say where it led.
            let location = header(&response, LOCATION.as_str()).unwrap_or_default();
            let reason = match Url::parse(&location) {
                Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                    format!("leads to a `{}:` URL, not http(s)", u.scheme())
                }
                _ => "could not be followed".to_string(),
            };
            return Err(self.refused(r, "redirect (Location)", &location, &reason));
        }
        if response.status() != StatusCode::OK {
            return Err(if response.status().is_success() {
                Error::Other {
                    what: r.to_string(),
                    detail: format!(
                        "the Hub answered HTTP {} instead of the file",
                        response.status()
                    ),
                }
            } else {
                self.status_error(r, &response, Missing::File)
            });
        }
        if let Some(length) = response.content_length().filter(|&n| n > remote.size) {
            return Err(self.refused(
                r,
                "Content-Length",
                &length.to_string(),
                &format!("is more than the {} bytes announced before", remote.size),
            ));
        }
        let corrupt = |detail: String| Error::Corrupt {
            what: r.to_string(),
            detail,
        };
        let (count, digest) = self.stream(r, response, remote, to, progress)?;
        if count > remote.size {
            return Err(corrupt(format!(
                "the Hub sent more than the {} bytes it announced; the download was stopped there",
                remote.size
            )));
        }
        let name = remote.id.checksum().name();
        if count < remote.size {
            return Err(corrupt(format!(
                "only {count} bytes of the {} announced arrived (the ETag, a {name}, is {})",
                remote.size, remote.id
            )));
        }
        if digest != remote.id.as_str() {
            return Err(corrupt(format!(
                "{count} bytes whose {name} is {digest}, not the ETag {}",
                remote.id
            )));
        }
        Ok(())
    }

    /// Copies the body into `to`, hashing it; stops one byte past the announced size.
    /// Returns the bytes written and their hash.
    fn stream(
        &self,
        r: &HubRef,
        mut response: Response,
        remote: &Remote,
        to: &Path,
        progress: &dyn Fn(&Progress),
    ) -> Result<(u64, String)> {
        let cannot_write = |e: std::io::Error| Error::Other {
            what: r.to_string(),
            detail: format!("cannot write the download to {} ({e})", to.display()),
        };
        let mut file = std::fs::File::create(to).map_err(cannot_write)?;
        let mut hasher = remote.id.checksum().hasher(remote.size);
        let mut report = Progress {
            file: r.to_string(),
            done: 0,
            total: remote.size,
        };
        progress(&report);
        let mut buffer = vec![0u8; 1 << 16];
        while report.done <= remote.size {
            let n = match response.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.body_error(r, &report, e)),
            };
            // Keep at most one byte past the announced size: enough to tell it was exceeded.
            let room = remote.size + 1 - report.done;
            let n = if n as u64 > room { room as usize } else { n };
            hasher.update(&buffer[..n]);
            file.write_all(&buffer[..n]).map_err(cannot_write)?;
            report.done += n as u64;
            if report.done <= remote.size {
                progress(&report);
            }
        }
        file.sync_all().map_err(cannot_write)?;
        Ok((report.done, hasher.finish()))
    }

    /// The file names of a dataset at `revision`: `GET /api/datasets/{owner}/{name}/revision/
    /// {revision}`, the `rfilename` of each of its `siblings`. The names are not checked here.
    pub(crate) fn listing(&self, r: &HubRef) -> Result<Vec<String>> {
        let url = self.url(&[
            "api",
            "datasets",
            &r.owner,
            &r.name,
            "revision",
            &r.revision,
        ]);
        let response = self
            .send(|| self.get.get(url.clone()))
            .map_err(|e| self.transport(r, e))?;
        if !response.status().is_success() {
            return Err(self.status_error(r, &response, Missing::Revision));
        }
        let mut body = Vec::new();
        response
            .take(MAX_LISTING_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.body_error(r, &Progress::default(), e))?;
        let bad = |detail: String| Error::Other {
            what: format!(
                "the file list of datasets/{}/{} at {}",
                r.owner, r.name, r.revision
            ),
            detail,
        };
        listing_names(&body).map_err(bad)
    }

    /// A transport failure of a request about `r`: a timeout, a refused redirect, or the
    /// Hub out of reach.
    fn transport(&self, r: &HubRef, e: reqwest::Error) -> Error {
        if e.is_redirect() {
            let target = e.url().map(Url::to_string).unwrap_or_default();
            return self.refused(r, "redirect (Location)", &target, &redirect_reason(&e));
        }
        if e.is_timeout() && e.is_connect() {
            return Error::NoNetwork {
                endpoint: self.endpoint_name.clone(),
                detail: format!(
                    "no connection within {} s; {CONNECT_TIMEOUT_ENV} sets how long to try",
                    seconds(self.limits.connect)
                ),
            };
        }
        if e.is_timeout() {
            return self.stalled(r);
        }
        Error::NoNetwork {
            endpoint: self.endpoint_name.clone(),
            detail: chain(&e),
        }
    }

    /// A failure while reading a body: a stall, or a transfer that broke off.
    fn body_error(&self, r: &HubRef, report: &Progress, e: std::io::Error) -> Error {
        let timed_out = e.kind() == std::io::ErrorKind::TimedOut
            || e.get_ref()
                .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
                .is_some_and(reqwest::Error::is_timeout);
        if timed_out {
            return self.stalled(r);
        }
        Error::Corrupt {
            what: r.to_string(),
            detail: format!(
                "the transfer broke off after {} of {} bytes ({})",
                report.done,
                report.total,
                chain(&e)
            ),
        }
    }

    fn stalled(&self, r: &HubRef) -> Error {
        Error::Stalled {
            what: r.to_string(),
            endpoint: self.endpoint_name.clone(),
            seconds: seconds(self.limits.read),
        }
    }

    /// The refusal of the value `value` of `field` in the answer about `r`.
    fn refused(&self, r: &HubRef, field: &str, value: &str, reason: &str) -> Error {
        Error::UnsafeResponse {
            endpoint: self.endpoint_name.clone(),
            what: r.to_string(),
            field: field.to_string(),
            value: shown(value),
            reason: reason.to_string(),
        }
    }

    /// One clear error for an HTTP error status about `r`, by the Hub's `X-Error-Code`.
    fn status_error(&self, r: &HubRef, response: &Response, missing: Missing) -> Error {
        let status = response.status();
        let code = header(response, "x-error-code").unwrap_or_default();
        let repo = r.repo_id();
        match status.as_u16() {
            401 | 403 => Error::AuthRequired {
                repo,
                status: status.as_u16(),
                gated: code == "GatedRepo",
                token_set: self.has_token(),
            },
            404 if matches!(code.as_str(), "RepoNotFound" | "RepositoryNotFound") => {
                Error::RepoNotFound {
                    repo,
                    endpoint: self.endpoint_name.clone(),
                }
            }
            404 if code == "RevisionNotFound" || missing == Missing::Revision => {
                Error::RevisionNotFound {
                    repo,
                    revision: r.revision.clone(),
                }
            }
            404 => Error::FileNotFound {
                repo,
                revision: r.revision.clone(),
                file: r.file.clone(),
            },
            _ => Error::Other {
                what: r.to_string(),
                detail: match header(response, "x-error-message") {
                    Some(message) => format!("HTTP {status}: {}", shown(&message)),
                    None => format!("HTTP {status}"),
                },
            },
        }
    }
}

/// What a 404 without a more precise error code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    File,
    Revision,
}

/// A header's value as text (bytes that are not UTF-8 replaced, so they can be shown).
fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// A value of an answer that ldl refuses: the header or field, its value as it may be shown
/// (empty when it was missing), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadValue {
    pub(crate) field: &'static str,
    pub(crate) value: String,
    pub(crate) reason: String,
}

impl BadValue {
    fn new(field: &'static str, value: &str, reason: &str) -> BadValue {
        BadValue {
            field,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// The blob id, commit and size a HEAD answer announces, each checked; `header` gives the
/// value of a header by its lowercase name. The `X-Linked-*` headers, which the Hub sends
/// with a redirect to a CDN, come before `ETag` and `Content-Length`.
pub(crate) fn remote_of(
    header: impl Fn(&str) -> Option<String>,
) -> std::result::Result<Remote, BadValue> {
    let etag = header("x-linked-etag")
        .or_else(|| header(ETAG.as_str()))
        .ok_or_else(|| {
            BadValue::new(
                "ETag",
                "",
                "is missing, so the download could not be checked",
            )
        })?;
    let id =
        BlobId::parse_etag(&etag).map_err(|why| BadValue::new("ETag", bare_etag(&etag), &why))?;
    let commit =
        header("x-repo-commit").ok_or_else(|| BadValue::new("X-Repo-Commit", "", "is missing"))?;
    let commit =
        CommitId::parse(&commit).map_err(|why| BadValue::new("X-Repo-Commit", &commit, &why))?;
    let (field, size) = match header("x-linked-size") {
        Some(size) => ("X-Linked-Size", size),
        None => (
            "Content-Length",
            header(CONTENT_LENGTH.as_str()).ok_or_else(|| {
                BadValue::new(
                    "Content-Length",
                    "",
                    "is missing, so the download could not be bounded",
                )
            })?,
        ),
    };
    let size = size
        .trim()
        .parse::<u64>()
        .map_err(|_| BadValue::new(field, &size, "is not a number of bytes"))?;
    Ok(Remote { id, commit, size })
}

/// The URL a relative `Location` leads to from `url`; `None` for an absolute one, and for
/// one that leads to another scheme, host or port.
///
/// The HEAD requests follow these by hand, with the token: a location that only looks
/// relative (`/\host/x`, `\\host/x`, ` //host/x`, which URL parsing reads as `//host/x`)
/// must not take it to another host.
pub(crate) fn relative_redirect(url: &Url, location: &str) -> Option<Url> {
    // A location that parses alone has a scheme: absolute. `//host/…` keeps the scheme only.
    let relative = Url::parse(location).is_err() && !location.starts_with("//");
    relative
        .then(|| url.join(location).ok())
        .flatten()
        .filter(|next| next.origin() == url.origin())
}

/// The file names of a dataset listing (the JSON of `/api/datasets/{owner}/{name}/revision/
/// {revision}`): the `rfilename` of each of its `siblings`; the names are not checked here.
/// `Err` says what is wrong with the answer.
pub(crate) fn listing_names(body: &[u8]) -> std::result::Result<Vec<String>, String> {
    if body.len() as u64 > MAX_LISTING_BYTES {
        return Err(format!("the Hub sent more than {MAX_LISTING_BYTES} bytes"));
    }
    let info: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the Hub's answer is not JSON ({e})"))?;
    let siblings = info["siblings"].as_array().cloned().unwrap_or_default();
    siblings
        .iter()
        .map(|s| {
            s["rfilename"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| "a file of the listing has no `rfilename`".to_string())
        })
        .collect()
}

/// The redirect policy of downloads: at most [`MAX_REDIRECTS`], to http(s) only, and never
/// from https to plain http. (The token is not sent to another host: reqwest drops it.)
fn checked_redirect(attempt: reqwest::redirect::Attempt) -> reqwest::redirect::Action {
    let from_https = attempt.previous().iter().any(|u| u.scheme() == "https");
    let reason = match attempt.url().scheme() {
        _ if attempt.previous().len() > MAX_REDIRECTS => {
            Some(format!("is one of more than {MAX_REDIRECTS} redirects"))
        }
        "https" => None,
        "http" if !from_https => None,
        "http" => Some("leads from https to plain http".to_string()),
        other => Some(format!("leads to a `{other}:` URL, not http(s)")),
    };
    match reason {
        None => attempt.follow(),
        Some(reason) => attempt.error(RedirectRefused(reason)),
    }
}

/// Why a redirect was not followed, carried through reqwest's error.
#[derive(Debug)]
struct RedirectRefused(String);

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectRefused {}

fn redirect_reason(e: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<RedirectRefused>() {
            return refused.0.clone();
        }
        source = s.source();
    }
    "was refused".to_string()
}

/// `60`, `0.5`: a duration in seconds, for messages.
pub(crate) fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

/// The space free to this user on the file system holding `dir` (or its nearest existing
/// ancestor), when the system says.
#[cfg(unix)]
pub(crate) fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let existing = dir.ancestors().find(|p| p.exists())?;
    let path = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stats` a buffer of the right type, which
    // statvfs fills when it returns 0; it is read only then.
    let stats = unsafe {
        if libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) != 0 {
            return None;
        }
        stats.assume_init()
    };
    #[allow(clippy::unnecessary_cast)] // The field types differ between systems.
    Some((stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}

/// Not known on this system: only the maximum file size bounds a download.
#[cfg(not(unix))]
pub(crate) fn free_space(_dir: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "x", "inf", "NaN"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("64GiB"), Ok(64 << 30));
        assert_eq!(parse_bytes("2tb"), Ok(2 << 40));
        for bad in ["", "0", "x", "1.5G", "99999999999T"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(seconds(Duration::from_secs(60)), "60");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5");
    }

    #[test]
    fn only_relative_locations_are_followed_by_hand() {
        let url = Url::parse("https://hub.example/o/n/resolve/main/f").unwrap();
        assert_eq!(
            relative_redirect(&url, "/O/n/resolve/main/f")
                .unwrap()
                .as_str(),
            "https://hub.example/O/n/resolve/main/f"
        );
        assert!(relative_redirect(&url, "https://cdn.example/x").is_none());
        assert!(relative_redirect(&url, "//cdn.example/x").is_none());
    }

    #[test]
    fn a_location_that_only_looks_relative_does_not_leave_the_host() {
        // URL parsing reads a `\` as `/` in http(s) URLs, skips leading spaces and drops
        // tabs and newlines: each of these is `//evil.example/x`, another host, to which
        // the HEAD request would carry the token.
        let url = Url::parse("https://hub.example/o/n/resolve/main/f").unwrap();
        for location in [
            "/\\evil.example/x",
            "\\\\evil.example/x",
            "\\/evil.example/x",
            " //evil.example/x",
            "/\t/evil.example/x",
            "/\n/evil.example:8080/x",
        ] {
            assert_eq!(relative_redirect(&url, location), None, "{location:?}");
        }
        // Relative ones on the same host still lead there.
        for (location, to) in [
            ("../../other/f", "https://hub.example/o/n/other/f"),
            ("f2?x=1", "https://hub.example/o/n/resolve/main/f2?x=1"),
        ] {
            assert_eq!(relative_redirect(&url, location).unwrap().as_str(), to);
        }
    }

    #[test]
    fn announced_values_are_checked_with_the_linked_headers_first() {
        let lfs = "a".repeat(64);
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let headers = |extra: &[(&str, String)]| {
            let mut all: Vec<(String, String)> = vec![
                ("etag".into(), format!("\"{}\"", "b".repeat(40))),
                ("x-repo-commit".into(), commit.into()),
                ("content-length".into(), "1234".into()),
            ];
            all.extend(extra.iter().map(|(n, v)| (n.to_string(), v.clone())));
            all
        };
        let get = |all: Vec<(String, String)>| {
            move |name: &str| {
                all.iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            }
        };
        let plain = remote_of(get(headers(&[]))).unwrap();
        assert_eq!((plain.id.as_str(), plain.size), (&*"b".repeat(40), 1234));
        let linked = remote_of(get(headers(&[
            ("x-linked-etag", format!("W/\"{lfs}\"")),
            ("x-linked-size", "99".into()),
        ])))
        .unwrap();
        assert_eq!((linked.id.as_str(), linked.size), (&*lfs, 99));
        let bad = remote_of(get(headers(&[("x-repo-commit", "../x".into())]))).unwrap_err();
        assert_eq!((bad.field, bad.value.as_str()), ("X-Repo-Commit", "../x"));
        let bad = remote_of(get(headers(&[("content-length", "-1".into())]))).unwrap_err();
        assert_eq!(bad.reason, "is not a number of bytes");
    }

    #[test]
    fn listings_give_the_names_of_the_siblings() {
        let body = br#"{"sha":"x","siblings":[{"rfilename":"a.parquet"},{"rfilename":"b/c"}]}"#;
        assert_eq!(listing_names(body).unwrap(), ["a.parquet", "b/c"]);
        assert_eq!(listing_names(b"{}").unwrap(), Vec::<String>::new());
        assert!(listing_names(b"[").unwrap_err().contains("not JSON"));
        let unnamed = listing_names(br#"{"siblings":[{"size":3}]}"#).unwrap_err();
        assert!(unnamed.contains("no `rfilename`"), "{unnamed}");
    }

    #[cfg(unix)]
    #[test]
    fn free_space_is_known_for_a_missing_folder_below_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_space(&dir.path().join("not/yet")).is_some());
    }
}
