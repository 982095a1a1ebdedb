//! The values a Hub sends that become paths in the cache, checked before any is used.
//!
//! The cache is laid out by what the server says: `blobs/<ETag>`, `snapshots/<X-Repo-Commit>/
//! <file>`, `refs/<revision>` holding the commit, and the file names of a dataset listing.
//! A Hub, a mirror named by `HF_ENDPOINT` or a proxy in between can send anything there, so
//! an ETag of `../../../../tmp/x` would write outside the cache. Each value gets a type here
//! that can only be built from a checked string, and the cache module builds paths from these
//! types only:
//!
//! - [`CommitId`]: 40 hex digits, git's commit id.
//! - [`BlobId`]: 40 hex digits (the git blob SHA-1 of a file kept in git) or 64 (the SHA-256
//!   of an LFS file); it is also what the download is checked against, so a download whose
//!   ETag is neither cannot be checked and is refused.
//! - [`RepoFile`]: a relative path of `/`-separated names, none empty, `.` or `..`, without
//!   `\`, `:` or control characters (NUL included).

use std::fmt;

use crate::checksum::Checksum;

/// Why a value from the server is refused: the value (shortened, escaped) is named by the
/// caller's error, this says what is wrong with it.
pub(crate) type Refusal = String;

/// A git commit id as the server sent it: exactly 40 hex digits (lowercased).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CommitId(String);

impl CommitId {
    /// `value` if it is a commit id.
    pub(crate) fn parse(value: &str) -> Result<CommitId, Refusal> {
        if value.len() == 40 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(CommitId(value.to_ascii_lowercase()))
        } else {
            Err("is not a commit id (40 hex digits)".into())
        }
    }

    /// The 40 hex digits.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A blob id (the ETag of a file): a git blob SHA-1 or a SHA-256, in lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BlobId {
    hex: String,
    checksum: Checksum,
}

impl BlobId {
    /// `etag` (the header's value: quoted, perhaps weak `W/"…"`) if it is a blob id.
    pub(crate) fn parse_etag(etag: &str) -> Result<BlobId, Refusal> {
        let bare = bare_etag(etag);
        match Checksum::of_etag(bare) {
            Some(checksum) => Ok(BlobId {
                hex: bare.to_ascii_lowercase(),
                checksum,
            }),
            None => Err(
                "is not a file hash (40 hex digits for a file kept in git, 64 for an \
                         LFS file), so the download could not be checked against it"
                    .into(),
            ),
        }
    }

    /// The hex digits: the blob's file name in the cache.
    pub(crate) fn as_str(&self) -> &str {
        &self.hex
    }

    /// The hash the id is.
    pub(crate) fn checksum(&self) -> Checksum {
        self.checksum
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex)
    }
}

/// An ETag header's value without the weak mark `W/` and the quotes.
pub(crate) fn bare_etag(etag: &str) -> &str {
    let bare = etag.strip_prefix("W/").unwrap_or(etag);
    bare.strip_prefix('"')
        .and_then(|b| b.strip_suffix('"'))
        .unwrap_or(bare)
}

/// A path in a repository that stays inside the folder it is joined to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RepoFile(String);

impl RepoFile {
    /// `value` if it is a safe relative path.
    pub(crate) fn parse(value: &str) -> Result<RepoFile, Refusal> {
        if value.is_empty() {
            return Err("is empty".into());
        }
        if value.len() > 4096 {
            return Err("is longer than 4096 bytes".into());
        }
        if value.starts_with('/') {
            return Err("is an absolute path".into());
        }
        if let Some(c) = value
            .chars()
            .find(|&c| c == '\\' || c == ':' || c.is_control())
        {
            return Err(format!(
                "has {}, which a path in a repository may not hold",
                describe_char(c)
            ));
        }
        if let Some(part) = value
            .split('/')
            .find(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(format!(
                "has {}, which could lead out of the cache",
                if part.is_empty() {
                    "an empty part (`//` or a trailing `/`)".to_string()
                } else {
                    format!("a `{part}` part")
                }
            ));
        }
        Ok(RepoFile(value.to_string()))
    }

    /// The path, `/`-separated.
    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Its parts, each a plain file or folder name.
    pub(crate) fn parts(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

fn describe_char(c: char) -> String {
    match c {
        '\\' => "a backslash".into(),
        ':' => "a `:` (a drive or stream name)".into(),
        '\0' => "a NUL byte".into(),
        c => format!("the control character U+{:04X}", c as u32),
    }
}

/// `value` as it may appear in a message: escaped, and cut to 120 characters.
pub(crate) fn shown(value: &str) -> String {
    let escaped: String = value.chars().flat_map(char::escape_debug).collect();
    if escaped.chars().count() > 120 {
        let cut: String = escaped.chars().take(120).collect();
        format!("{cut}… ({} bytes)", value.len())
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_40_hex_digits() {
        let c = "0123456789abcdefABCDEF0123456789abcdef01";
        assert_eq!(CommitId::parse(c).unwrap().as_str(), c.to_ascii_lowercase());
        for bad in [
            "",
            "main",
            &"0".repeat(39),
            &"0".repeat(41),
            "../../x",
            &"g".repeat(40),
        ] {
            assert!(CommitId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn blob_ids_are_git_or_lfs_hashes() {
        let git = BlobId::parse_etag(&format!("\"{}\"", "a".repeat(40))).unwrap();
        assert_eq!(git.checksum(), Checksum::GitBlobSha1);
        let lfs = BlobId::parse_etag(&format!("W/\"{}\"", "B".repeat(64))).unwrap();
        assert_eq!(
            (lfs.checksum(), lfs.as_str()),
            (Checksum::Sha256, &*"b".repeat(64))
        );
        for bad in [
            "\"../../../../tmp/x/victim.txt\"",
            "\"abc\"",
            "W/\"not-a-hash\"",
            "",
            &"a".repeat(50),
            &format!("{}/..", "a".repeat(40)),
        ] {
            assert!(BlobId::parse_etag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repo_files_stay_inside() {
        for ok in [
            "model.safetensors",
            "default/train/0000.parquet",
            "a..b/c.d",
            ".gitattributes",
        ] {
            assert_eq!(RepoFile::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\..\\b",
            "C:x",
            "a\0b",
            "a\nb",
        ] {
            assert!(RepoFile::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shown_values_are_escaped_and_short() {
        assert_eq!(shown("a\nb"), "a\\nb");
        let long = shown(&"x".repeat(1000));
        assert!(
            long.ends_with("… (1000 bytes)") && long.len() < 140,
            "{long}"
        );
    }
}
