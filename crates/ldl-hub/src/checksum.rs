//! What a downloaded blob's name promises about its content. The Hub's ETag, which the
//! cache uses as the blob's file name, is the SHA-256 of the content for LFS files (weights,
//! parquet) and the git blob SHA-1 for files kept in git (`ldl.toml`, `README.md`), so
//! every fresh download can be checked against it.

use sha1::Digest as _;

/// The hash an ETag is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Checksum {
    /// The SHA-256 of the content (64 hex digits): LFS files.
    Sha256,
    /// git's object id of the content, the SHA-1 of `blob LEN\0` followed by it (40 hex
    /// digits): files stored in git.
    GitBlobSha1,
}

impl Checksum {
    /// The hash `etag` is, or `None` for an ETag that is neither (nothing to check).
    pub(crate) fn of_etag(etag: &str) -> Option<Checksum> {
        if !etag.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        match etag.len() {
            64 => Some(Checksum::Sha256),
            40 => Some(Checksum::GitBlobSha1),
            _ => None,
        }
    }

    /// The name of the hash, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Checksum::Sha256 => "SHA-256",
            Checksum::GitBlobSha1 => "git SHA-1",
        }
    }

    /// A hasher of content of `length` bytes, fed as it arrives.
    pub(crate) fn hasher(self, length: u64) -> Hasher {
        match self {
            Checksum::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Checksum::GitBlobSha1 => {
                let mut hasher = sha1::Sha1::new();
                hasher.update(format!("blob {length}\0").as_bytes());
                Hasher::GitBlobSha1(hasher)
            }
        }
    }

    /// The hash of the file at `path`, in lowercase hex.
    #[cfg(test)]
    pub(crate) fn of_file(self, path: &std::path::Path) -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let length = file.metadata()?.len();
        match self {
            Checksum::Sha256 => digest_reader(sha2::Sha256::new(), &mut file),
            Checksum::GitBlobSha1 => {
                let mut hasher = sha1::Sha1::new();
                hasher.update(format!("blob {length}\0").as_bytes());
                digest_reader(hasher, &mut file)
            }
        }
    }
}

/// A hash being computed over a download (see [`Checksum::hasher`]).
pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    GitBlobSha1(sha1::Sha1),
}

impl Hasher {
    /// Adds the next bytes.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::GitBlobSha1(h) => h.update(bytes),
        }
    }

    /// The hash, in lowercase hex.
    pub(crate) fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => hex(&h.finalize()),
            Hasher::GitBlobSha1(h) => hex(&h.finalize()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
fn digest_reader<D: sha1::Digest>(
    mut hasher: D,
    reader: &mut impl std::io::Read,
) -> std::io::Result<String> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(kind: Checksum, bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, bytes).unwrap();
        kind.of_file(&path).unwrap()
    }

    #[test]
    fn git_blob_ids_match_git() {
        // `git hash-object` of an empty file and of "hello\n".
        assert_eq!(
            hash_of(Checksum::GitBlobSha1, b""),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        assert_eq!(
            hash_of(Checksum::GitBlobSha1, b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn sha256_matches_the_standard_vector() {
        // FIPS 180-2's "abc".
        assert_eq!(
            hash_of(Checksum::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn streamed_hashes_match_file_hashes() {
        for kind in [Checksum::Sha256, Checksum::GitBlobSha1] {
            let mut hasher = kind.hasher(6);
            hasher.update(b"hel");
            hasher.update(b"lo\n");
            assert_eq!(hasher.finish(), hash_of(kind, b"hello\n"), "{kind:?}");
        }
    }

    #[test]
    fn etags_are_told_apart_by_length() {
        assert_eq!(Checksum::of_etag(&"a".repeat(64)), Some(Checksum::Sha256));
        assert_eq!(
            Checksum::of_etag(&"0".repeat(40)),
            Some(Checksum::GitBlobSha1)
        );
        assert_eq!(Checksum::of_etag("W/abc"), None);
        assert_eq!(Checksum::of_etag(&"g".repeat(40)), None);
    }
}
