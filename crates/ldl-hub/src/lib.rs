//! Hugging Face Hub support for `ldl`: `hf://owner/name[@revision][/file]` checkpoint paths,
//! fetching an exported model folder into the standard Hugging Face cache, and pushing one;
//! and the parquet files of datasets ([`Hub::dataset_files`], [`open_parquet`]), the
//! training data of `[data] source = "hub"`.
//!
//! A model repository written by `ldl export` holds [`MODEL_FILES`]: `model.safetensors`
//! (weights, with the label space and config in its header), `ldl.toml` and a model card
//! `README.md`.
//!
//! ```
//! use ldl_hub::HubRef;
//! let r: HubRef = "hf://ldl-rs/ages@v1".parse()?;
//! assert_eq!((r.owner.as_str(), r.name.as_str()), ("ldl-rs", "ages"));
//! assert_eq!((r.revision.as_str(), r.file.as_str()), ("v1", "model.safetensors"));
//! # Ok::<(), ldl_hub::Error>(())
//! ```
//!
//! Configuration comes from the environment as in other Hugging Face tools: `HF_ENDPOINT`,
//! `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN` (read by the underlying client) and
//! `HF_HUB_OFFLINE` (read here, see [`Hub::from_env`]). [`Hub`] can also be configured
//! explicitly, which is what tests do.
#![warn(missing_docs)]

mod checksum;
mod dataset;
mod error;
mod hub_ref;
mod parquet_footer;
mod parquet_rows;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use checksum::Checksum;
use hf_hub::repository::CommitOperation;
use hf_hub::{HFClientSync, HFError, HFRepositorySync, RepoType, RepoTypeModel};

pub use dataset::{DatasetSpec, ParquetFile, PARQUET_REVISION};
pub use error::{Error, Result};
pub use hub_ref::{HubRef, RepoSpec};
pub use parquet_rows::{
    open_parquet, ColumnKind, ParquetFileReader, ParquetRows, ReadBudget, Value,
};

/// The prefix of a Hub path.
pub const SCHEME: &str = "hf://";
/// The revision used when a Hub path names none.
pub const DEFAULT_REVISION: &str = "main";
/// The file used when a Hub path names none.
pub const DEFAULT_FILE: &str = "model.safetensors";
/// The files of an ldl model repository, in the order `ldl export` writes them.
pub const MODEL_FILES: [&str; 3] = ["model.safetensors", "ldl.toml", "README.md"];

/// Whether `path` is a Hub path (`hf://…`) rather than a local one.
pub fn is_hub_path(path: &str) -> bool {
    path.starts_with(SCHEME)
}

/// Whether the environment asks for offline mode: `HF_HUB_OFFLINE` set to `1`, `true`,
/// `yes` or `on` (any case).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| truthy(&v))
        .unwrap_or(false)
}

fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// A local path for `path`: a Hub path (`hf://…`) is downloaded, or found in the cache, with
/// the configuration from the environment ([`Hub::from_env`]); anything else is returned
/// as it is.
pub fn local_path(path: &str) -> Result<PathBuf> {
    if is_hub_path(path) {
        Hub::from_env().resolve(&path.parse()?)
    } else {
        Ok(PathBuf::from(path))
    }
}

/// Downloads the file `hub_ref` names, or finds it in the cache, with the configuration from
/// the environment; `offline` (or `HF_HUB_OFFLINE`) uses the cache only.
pub fn resolve(hub_ref: &HubRef, offline: bool) -> Result<PathBuf> {
    Hub::from_env()
        .offline(offline || offline_from_env())
        .resolve(hub_ref)
}

/// Fetches the model folder of `repo` (`owner/name[@revision]`) with the configuration from
/// the environment; `offline` (or `HF_HUB_OFFLINE`) uses the cache only. Returns the cached
/// snapshot folder holding [`MODEL_FILES`].
pub fn fetch(repo: &str, offline: bool) -> Result<PathBuf> {
    Hub::from_env()
        .offline(offline || offline_from_env())
        .fetch(&repo.parse()?)
}

/// Uploads the model folder `folder` (as written by `ldl export`) to the model repository
/// `repo` (`owner/name`), creating it if needed, with the token in `HF_TOKEN`.
pub fn push(folder: &Path, repo: &str) -> Result<Pushed> {
    Hub::from_env().push(folder, &repo.parse()?)
}

/// What [`Hub::push`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The repository, `owner/name`.
    pub repo: String,
    /// The files uploaded, by name in the repository.
    pub files: Vec<String>,
    /// The commit's URL, when the Hub returned one.
    pub commit_url: Option<String>,
}

/// Where and how to talk to the Hub. Unset fields fall back to the environment
/// (`HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME`, `HF_TOKEN`) and then to the defaults
/// (`https://huggingface.co`, `~/.cache/huggingface/hub`).
#[derive(Debug, Clone, Default)]
pub struct Hub {
    endpoint: Option<String>,
    cache_dir: Option<PathBuf>,
    token: Option<String>,
    offline: bool,
    retries: Option<usize>,
    ignore_env_token: bool,
}

impl Hub {
    /// A client configured by the environment only; offline when `HF_HUB_OFFLINE` says so.
    pub fn from_env() -> Self {
        Hub::default().offline(offline_from_env())
    }

    /// The Hub's base URL (instead of `HF_ENDPOINT`).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The cache folder, laid out like the Hugging Face cache (instead of `HF_HUB_CACHE`).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// The access token (instead of `HF_TOKEN`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Whether [`Hub::push`] may take its token from `HF_TOKEN` (the default) when none was
    /// given with [`Hub::token`].
    pub fn env_token(mut self, allowed: bool) -> Self {
        self.ignore_env_token = !allowed;
        self
    }

    /// Offline: use the cache only and make no network request.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// How often a failed request is retried (the client's default is 5).
    pub fn retries(mut self, retries: usize) -> Self {
        self.retries = Some(retries);
        self
    }

    /// The blocking client, and its cache folder.
    fn client(&self, token: Option<String>) -> Result<(HFClientSync, PathBuf)> {
        let mut builder = hf_hub::HFClient::builder();
        if let Some(endpoint) = &self.endpoint {
            builder = builder.endpoint(endpoint.clone());
        }
        if let Some(dir) = &self.cache_dir {
            builder = builder.cache_dir(dir.clone());
        }
        if let Some(token) = token.or_else(|| self.token.clone()) {
            builder = builder.token(token);
        }
        if let Some(n) = self.retries {
            builder = builder.retry_max_attempts(n);
        }
        let failed = |e: HFError| Error::Client {
            endpoint: self.endpoint_name(),
            detail: e.to_string(),
        };
        let client = builder.build().map_err(failed)?;
        let cache = client.cache_dir().to_path_buf();
        Ok((HFClientSync::from_inner(client).map_err(failed)?, cache))
    }

    fn endpoint_name(&self) -> String {
        self.endpoint
            .clone()
            .or_else(|| std::env::var("HF_ENDPOINT").ok())
            .unwrap_or_else(|| "https://huggingface.co".to_string())
    }

    /// The file `hub_ref` names, downloaded into the cache or found there. A fresh download
    /// whose ETag is a SHA-256 (as for LFS files) is checked against it; a corrupt or
    /// truncated download is removed from the cache and reported.
    pub fn resolve(&self, hub_ref: &HubRef) -> Result<PathBuf> {
        let client = self.client(None)?;
        self.resolve_with(&client, hub_ref)
    }

    fn resolve_with(
        &self,
        (client, cache): &(HFClientSync, PathBuf),
        hub_ref: &HubRef,
    ) -> Result<PathBuf> {
        let repo = client.model(hub_ref.owner.clone(), hub_ref.name.clone());
        let folder = format!("models--{}--{}", hub_ref.owner, hub_ref.name);
        self.download(&repo, cache, &folder, hub_ref)
    }

    /// Downloads (or finds in the cache) `hub_ref.file` of `repo`, whose cache folder is
    /// `cache/folder`, checking a fresh download against its ETag.
    fn download<T: RepoType>(
        &self,
        repo: &HFRepositorySync<T>,
        cache: &Path,
        folder: &str,
        hub_ref: &HubRef,
    ) -> Result<PathBuf> {
        let blobs = cache.join(folder).join("blobs");
        let before = blob_names(&blobs);
        let result = repo
            .download_file()
            .filename(hub_ref.file.clone())
            .revision(hub_ref.revision.clone())
            .local_files_only(self.offline)
            .send();
        match result {
            Ok(path) => {
                verify_fresh(&path, &before, hub_ref)?;
                Ok(path)
            }
            Err(e) => Err(self.classify(repo, hub_ref, cache, &blobs, &before, e)),
        }
    }

    /// Fetches the model folder of `repo`: [`MODEL_FILES`] at one commit of its revision.
    /// `model.safetensors` and `ldl.toml` must exist; a missing `README.md` is tolerated.
    /// Returns the cached snapshot folder.
    pub fn fetch(&self, repo: &RepoSpec) -> Result<PathBuf> {
        let client = self.client(None)?;
        let first = repo.file(MODEL_FILES[0]);
        let model = self.resolve_with(&client, &first)?;
        let folder = model
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| Error::Other {
                what: first.to_string(),
                detail: "the cache returned a path without a folder".into(),
            })?;
        // The snapshot folder is named by the commit: the other files come from the same one.
        let commit = folder
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.len() == 40 && n.chars().all(|c| c.is_ascii_hexdigit()))
            .map(str::to_string)
            .unwrap_or_else(|| repo.revision.clone());
        for (i, file) in MODEL_FILES.iter().enumerate().skip(1) {
            let mut r = repo.file(file);
            r.revision = commit.clone();
            match self.resolve_with(&client, &r) {
                Ok(_) => {}
                Err(Error::FileNotFound { .. }) if i == 2 => {}
                Err(e) => return Err(e.for_revision(&repo.revision)),
            }
        }
        Ok(folder)
    }

    /// Uploads [`MODEL_FILES`] from `folder` (as written by `ldl export`) to the model
    /// repository `repo` in one commit, creating the repository (public) if it does not exist.
    /// Needs a token with write access: [`Hub::token`] or `HF_TOKEN`; without one this fails
    /// before any network request.
    pub fn push(&self, folder: &Path, repo: &RepoSpec) -> Result<Pushed> {
        let token = self.push_token()?;
        if self.offline {
            return Err(Error::OfflinePush);
        }
        let mut operations = Vec::new();
        let mut files = Vec::new();
        for file in MODEL_FILES {
            let path = folder.join(file);
            if !path.is_file() {
                return Err(Error::NotAModelFolder {
                    folder: folder.display().to_string(),
                    file: file.to_string(),
                });
            }
            operations.push(CommitOperation::add_file(file, path));
            files.push(file.to_string());
        }
        let (client, _) = self.client(Some(token))?;
        let repo_id = repo.repo_id();
        let as_ref = repo.file(MODEL_FILES[0]);
        client
            .create_repository()
            .repo_id(&repo_id)
            .repo_type(RepoTypeModel)
            .exist_ok(true)
            .send()
            .map_err(|e| self.classify_push(&as_ref, e))?;
        let handle = client.model(repo.owner.clone(), repo.name.clone());
        let info = handle
            .create_commit()
            .operations(operations)
            .commit_message("Upload ldl model")
            .revision(repo.revision.clone())
            .send()
            .map_err(|e| self.classify_push(&as_ref, e))?;
        Ok(Pushed {
            repo: repo_id,
            files,
            commit_url: info.commit_url,
        })
    }

    /// The token [`Hub::push`] would use: [`Hub::token`], else `HF_TOKEN`; an error without
    /// one. Makes no request.
    pub fn push_token(&self) -> Result<String> {
        self.token
            .clone()
            .or_else(|| {
                (!self.ignore_env_token)
                    .then(|| std::env::var("HF_TOKEN").ok())
                    .flatten()
            })
            .filter(|t| !t.trim().is_empty())
            .ok_or(Error::TokenMissing)
    }

    fn classify_push(&self, hub_ref: &HubRef, e: HFError) -> Error {
        match e {
            HFError::AuthRequired { .. } | HFError::Forbidden { .. } => Error::PushDenied {
                repo: hub_ref.repo_id(),
                detail: e.to_string(),
            },
            e => self.classify_common(hub_ref, e),
        }
    }

    /// One clear error for a failed download.
    fn classify<T: RepoType>(
        &self,
        repo: &HFRepositorySync<T>,
        hub_ref: &HubRef,
        cache: &Path,
        blobs: &Path,
        before: &HashSet<String>,
        e: HFError,
    ) -> Error {
        match e {
            HFError::LocalEntryNotFound { .. } => {
                if self.offline {
                    Error::NotCached {
                        what: hub_ref.to_string(),
                        repo: hub_ref.repo_spec(),
                        cache: cache.display().to_string(),
                    }
                } else {
                    // Online but unreachable: the client fell back to the cache, which lacks it.
                    Error::NoNetwork {
                        endpoint: self.endpoint_name(),
                        detail: e.to_string(),
                    }
                }
            }
            HFError::EntryNotFound { context: None, .. } if !self.offline => {
                // The download's HEAD request says only "404"; ask once more for the Hub's
                // error code, which tells a missing repository, revision and file apart.
                match repo
                    .get_file_metadata()
                    .filepath(hub_ref.file.clone())
                    .revision(&hub_ref.revision)
                    .send()
                {
                    Err(e2) => self.classify_common(hub_ref, e2),
                    Ok(_) => Error::FileNotFound {
                        repo: hub_ref.repo_id(),
                        revision: hub_ref.revision.clone(),
                        file: hub_ref.file.clone(),
                    },
                }
            }
            HFError::Request { .. } => {
                // A transfer that broke off leaves `<blob>.incomplete` behind: remove it.
                let partial = remove_incomplete(blobs, before);
                if partial || e.to_string().contains("response body") {
                    Error::Corrupt {
                        what: hub_ref.to_string(),
                        detail: format!("the transfer broke off ({})", chain(&e)),
                    }
                } else {
                    self.classify_common(hub_ref, e)
                }
            }
            e => self.classify_common(hub_ref, e),
        }
    }

    fn classify_common(&self, hub_ref: &HubRef, e: HFError) -> Error {
        let repo = hub_ref.repo_id();
        match e {
            HFError::RepoNotFound { .. } => Error::RepoNotFound {
                repo,
                endpoint: self.endpoint_name(),
            },
            HFError::RevisionNotFound { .. } => Error::RevisionNotFound {
                repo,
                revision: hub_ref.revision.clone(),
            },
            HFError::EntryNotFound { ref context, .. } => {
                match context.as_ref().and_then(|c| c.error_code.as_deref()) {
                    Some("RepoNotFound") | Some("RepositoryNotFound") => Error::RepoNotFound {
                        repo,
                        endpoint: self.endpoint_name(),
                    },
                    Some("RevisionNotFound") => Error::RevisionNotFound {
                        repo,
                        revision: hub_ref.revision.clone(),
                    },
                    _ => Error::FileNotFound {
                        repo,
                        revision: hub_ref.revision.clone(),
                        file: hub_ref.file.clone(),
                    },
                }
            }
            HFError::AuthRequired { ref context } | HFError::Forbidden { ref context } => {
                let gated = context.error_code.as_deref() == Some("GatedRepo");
                Error::AuthRequired {
                    repo,
                    status: context.status.as_u16(),
                    gated,
                    token_set: self.token.is_some() || std::env::var("HF_TOKEN").is_ok(),
                }
            }
            HFError::Request { .. } => Error::NoNetwork {
                endpoint: self.endpoint_name(),
                detail: chain(&e),
            },
            e => Error::Other {
                what: hub_ref.to_string(),
                detail: e.to_string(),
            },
        }
    }
}

/// The error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The names of the files in a cache's `blobs` folder.
fn blob_names(blobs: &Path) -> HashSet<String> {
    std::fs::read_dir(blobs)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the `*.incomplete` files that appeared in `blobs` since `before`; whether any did.
fn remove_incomplete(blobs: &Path, before: &HashSet<String>) -> bool {
    let mut removed = false;
    for name in blob_names(blobs) {
        if name.ends_with(".incomplete") && !before.contains(&name) {
            removed |= std::fs::remove_file(blobs.join(&name)).is_ok();
        }
    }
    removed
}

/// Checks a blob downloaded by this call against its ETag (a SHA-256 for LFS files, a git
/// blob SHA-1 for files in git); a mismatch removes the blob and its snapshot link, so the
/// next try downloads it again.
fn verify_fresh(path: &Path, before: &HashSet<String>, hub_ref: &HubRef) -> Result<()> {
    let Ok(target) = std::fs::read_link(path) else {
        return Ok(()); // Not a link into blobs (a copy): nothing to compare against.
    };
    let blob = match path.parent() {
        Some(parent) => parent.join(&target),
        None => return Ok(()),
    };
    let Some(etag) = blob
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
    else {
        return Ok(());
    };
    if before.contains(&etag) {
        return Ok(());
    }
    let Some(checksum) = Checksum::of_etag(&etag) else {
        return Ok(());
    };
    let actual = match checksum.of_file(&blob) {
        Ok(digest) => digest,
        Err(e) => {
            return Err(Error::Other {
                what: hub_ref.to_string(),
                detail: format!("cannot read the download {}: {e}", blob.display()),
            })
        }
    };
    if actual.eq_ignore_ascii_case(&etag) {
        return Ok(());
    }
    let size = std::fs::metadata(&blob).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(&blob);
    Err(Error::Corrupt {
        what: hub_ref.to_string(),
        detail: format!(
            "{size} bytes whose {} is {actual}, not the ETag {etag}",
            checksum.name()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_values() {
        for v in ["1", "true", "TRUE", " yes ", "on"] {
            assert!(truthy(v), "{v}");
        }
        for v in ["", "0", "false", "no", "off", "2"] {
            assert!(!truthy(v), "{v}");
        }
    }

    #[test]
    fn chain_joins_sources() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::Other {
            what: "x".into(),
            detail: chain(&io),
        };
        assert!(e.to_string().contains("refused"));
    }
}
