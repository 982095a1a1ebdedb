//! The checks ldl makes on what a Hub sends, callable without a network: the answer to a
//! file's metadata request (its status and headers) and a dataset's file listing.
//!
//! These run the code of the downloads ([`crate::Hub::resolve`],
//! [`crate::Hub::dataset_files`]) on values given here instead of values read from a
//! connection, so what they accept is exactly what ldl would go on to use: a blob id and a
//! commit that name files and folders in the cache, a size that bounds a download, a
//! redirect followed with the token, file names joined to a snapshot folder. They exist so
//! that this can be tested on any input, by fuzzing or by a tool that checks what a mirror
//! answers.

use reqwest::{StatusCode, Url};

use crate::dataset::{checked_selection, Unusable};
use crate::error::{Error, Result};
use crate::transfer::{listing_names, relative_redirect, remote_of, Remote};
use crate::untrusted::shown;

/// What ldl makes of an answer to a file's metadata request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseSummary {
    /// A redirect ldl follows itself: the next URL, on the same scheme, host and port.
    Redirect(String),
    /// The file's checked metadata: what a download would be checked against and bounded by.
    File(CheckedFile),
}

/// A file's metadata as the Hub announced it, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedFile {
    /// The blob id (the `X-Linked-Etag`, else the `ETag`): 40 (a git blob SHA-1) or 64 (a
    /// SHA-256) lowercase hex digits; the blob's file name in the cache.
    pub blob_id: String,
    /// The hash the blob id is: `SHA-256` or `git SHA-1`.
    pub hash: &'static str,
    /// The commit (`X-Repo-Commit`): 40 lowercase hex digits; a snapshot folder's name.
    pub commit: String,
    /// The size in bytes (`X-Linked-Size`, else `Content-Length`), at most the limit given.
    pub size: u64,
}

/// Checks the answer to the metadata request (`HEAD`) of the file at `url` as ldl does
/// before it downloads anything: `status` and `headers` (names in any case; the first of
/// a repeated header counts, as in ldl's HTTP client).
///
/// A redirect status with a `Location` relative to `url` on the same host is a
/// [`ResponseSummary::Redirect`]; any other success or redirect must carry the file's blob
/// id, commit and size, each checked, with the size at most `max_file_size`. An error
/// status, a value ldl refuses or a size over the limit is an error, as from
/// [`crate::Hub::resolve`].
pub fn check_response(
    status: u16,
    url: &str,
    headers: &[(&str, &str)],
    max_file_size: u64,
) -> Result<ResponseSummary> {
    let asked = Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
        .ok_or_else(|| Error::Other {
            what: shown(url),
            detail: "not an http:// or https:// URL".into(),
        })?;
    let status = StatusCode::from_u16(status).map_err(|_| Error::Other {
        what: asked.to_string(),
        detail: format!("{status} is not an HTTP status"),
    })?;
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_string())
    };
    if status.is_redirection() {
        if let Some(next) = header("location").and_then(|l| relative_redirect(&asked, &l)) {
            return Ok(ResponseSummary::Redirect(next.to_string()));
        }
    }
    if !(status.is_success() || status.is_redirection()) {
        return Err(Error::Other {
            what: asked.to_string(),
            detail: format!("HTTP {status}"),
        });
    }
    let Remote { id, commit, size } = remote_of(header).map_err(|bad| Error::UnsafeResponse {
        endpoint: asked.origin().ascii_serialization(),
        what: asked.to_string(),
        field: bad.field.to_string(),
        value: shown(&bad.value),
        reason: bad.reason,
    })?;
    if size > max_file_size {
        return Err(Error::TooLarge {
            what: asked.to_string(),
            size,
            limit: max_file_size,
        });
    }
    Ok(ResponseSummary::File(CheckedFile {
        blob_id: id.as_str().to_string(),
        hash: id.checksum().name(),
        commit: commit.as_str().to_string(),
        size,
    }))
}

/// Checks a dataset listing (the JSON the Hub answers for a dataset at a revision) as
/// [`crate::Hub::dataset_files`] does: the files of `config` and `split`, sorted by path,
/// each a relative path that stays inside the folder it is joined to. A listing that is no
/// JSON, has no such files, or names one of them unsafely is an error.
pub fn check_listing(json: &[u8], config: &str, split: &str) -> Result<Vec<String>> {
    let what = "the file list of the dataset";
    let names = listing_names(json).map_err(|detail| Error::Other {
        what: what.into(),
        detail,
    })?;
    checked_selection(&names, config, split).map_err(|unusable| match unusable {
        Unusable::NoFiles { present } => Error::NoParquetFiles {
            dataset: "the dataset".into(),
            wanted: format!("config `{config}`, split `{split}`"),
            present,
        },
        Unusable::UnsafeName { name, reason } => Error::UnsafeResponse {
            endpoint: "the Hub".into(),
            what: what.into(),
            field: "the file name".into(),
            value: shown(&name),
            reason,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://hub.example/o/n/resolve/main/model.safetensors";

    fn file(headers: &[(&str, &str)]) -> Result<ResponseSummary> {
        check_response(200, URL, headers, 1 << 30)
    }

    #[test]
    fn a_normal_answer_gives_the_checked_values() {
        let sha = "A".repeat(64);
        let etag = format!("\"{sha}\"");
        let commit = "0123456789ABCDEF0123456789abcdef01234567";
        let got = file(&[
            ("ETag", &etag),
            ("X-Repo-Commit", commit),
            ("Content-Length", "64"),
        ])
        .unwrap();
        assert_eq!(
            got,
            ResponseSummary::File(CheckedFile {
                blob_id: "a".repeat(64),
                hash: "SHA-256",
                commit: commit.to_ascii_lowercase(),
                size: 64,
            })
        );
    }

    #[test]
    fn hostile_values_are_refused_as_downloads_refuse_them() {
        let commit = "0".repeat(40);
        let e = file(&[
            ("etag", "\"../../x\""),
            ("x-repo-commit", &commit),
            ("content-length", "1"),
        ])
        .unwrap_err();
        assert!(
            matches!(&e, Error::UnsafeResponse { field, .. } if field == "ETag"),
            "{e}"
        );
        let e = check_response(
            200,
            URL,
            &[
                ("etag", &"a".repeat(40)),
                ("x-repo-commit", &commit),
                ("content-length", "11"),
            ],
            10,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                Error::TooLarge {
                    size: 11,
                    limit: 10,
                    ..
                }
            ),
            "{e}"
        );
        assert!(matches!(
            check_response(404, URL, &[], 10),
            Err(Error::Other { .. })
        ));
    }

    #[test]
    fn only_redirects_to_the_same_host_are_followed() {
        let to = |location: &str| check_response(302, URL, &[("Location", location)], 10);
        assert_eq!(
            to("/O/n/resolve/main/model.safetensors").unwrap(),
            ResponseSummary::Redirect(
                "https://hub.example/O/n/resolve/main/model.safetensors".into()
            )
        );
        // Elsewhere: the answer itself must carry the file's metadata (X-Linked-*).
        for location in ["https://cdn.example/x", "/\\evil.example/x"] {
            let e = to(location).unwrap_err();
            assert!(
                matches!(&e, Error::UnsafeResponse { field, .. } if field == "ETag"),
                "{e}"
            );
        }
    }

    #[test]
    fn listings_give_the_split_s_files_with_safe_names_only() {
        let listing = |names: &[&str]| {
            let siblings: Vec<String> = names
                .iter()
                .map(|n| serde_json::json!({ "rfilename": n }).to_string())
                .collect();
            format!("{{\"siblings\":[{}]}}", siblings.join(","))
        };
        let ok = listing(&[
            "default/train/0001.parquet",
            "default/train/0000.parquet",
            "default/test/0000.parquet",
        ]);
        assert_eq!(
            check_listing(ok.as_bytes(), "default", "train").unwrap(),
            ["default/train/0000.parquet", "default/train/0001.parquet"]
        );
        let e = check_listing(ok.as_bytes(), "default", "validation").unwrap_err();
        assert!(matches!(e, Error::NoParquetFiles { .. }), "{e}");
        let bad = listing(&["default/train/../../../x.parquet"]);
        let e = check_listing(bad.as_bytes(), "default", "train").unwrap_err();
        assert!(matches!(e, Error::UnsafeResponse { .. }), "{e}");
        assert!(matches!(
            check_listing(b"<html>", "default", "train"),
            Err(Error::Other { .. })
        ));
    }
}
