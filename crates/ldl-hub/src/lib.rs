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

mod cache;
pub mod checks;
mod checksum;
mod dataset;
mod error;
mod hub_ref;
mod local_file;
mod parquet_footer;
mod parquet_rows;
mod transfer;
mod untrusted;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cache::RepoCache;
use hf_hub::repository::CommitOperation;
use hf_hub::{HFClientSync, HFError, RepoTypeModel};
use transfer::{Http, Limits, Remote, RepoKind};
use untrusted::{CommitId, RepoFile};

pub use dataset::{DatasetSpec, ParquetFile, PARQUET_REVISION};
pub use error::{Error, Result};
pub use hub_ref::{HubRef, RepoSpec};
pub use parquet_rows::{
    open_parquet, ColumnKind, ParquetFileReader, ParquetRows, ReadBudget, Value,
};
pub use transfer::{
    CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_FILE_SIZE, DEFAULT_READ_TIMEOUT,
    MAX_FILE_SIZE_ENV, READ_TIMEOUT_ENV,
};

/// The prefix of a Hub path.
pub const SCHEME: &str = "hf://";
/// The revision used when a Hub path names none.
pub const DEFAULT_REVISION: &str = "main";
/// The file used when a Hub path names none.
pub const DEFAULT_FILE: &str = "model.safetensors";
/// The files of an ldl model repository, in the order `ldl export` writes them.
pub const MODEL_FILES: [&str; 3] = ["model.safetensors", "ldl.toml", "README.md"];
/// Files a model folder may hold besides [`MODEL_FILES`] (`ldl export --onnx` writes
/// `model.onnx`); [`Hub::push`] uploads those present.
pub const OPTIONAL_MODEL_FILES: [&str; 1] = ["model.onnx"];

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

/// How far a download is: reported to the callback of [`Hub::progress`] when a download
/// starts (`done` 0), as its bytes arrive, and when it ends (`done == total`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The Hub path of the file, e.g. `hf://owner/name`.
    pub file: String,
    /// The bytes received so far.
    pub done: u64,
    /// The size the Hub announced, in bytes.
    pub total: u64,
}

/// The callback of [`Hub::progress`].
#[derive(Clone)]
struct ProgressCallback(Arc<dyn Fn(&Progress) + Send + Sync>);

impl std::fmt::Debug for ProgressCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressCallback")
    }
}

/// Where and how to talk to the Hub. Unset fields fall back to the environment
/// (`HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME`, `HF_TOKEN`, `LDL_HUB_CONNECT_TIMEOUT`,
/// `LDL_HUB_READ_TIMEOUT`, `LDL_HUB_MAX_FILE_SIZE`) and then to the defaults
/// (`https://huggingface.co`, `~/.cache/huggingface/hub`, 30 s, 60 s, 64 GiB).
#[derive(Debug, Clone, Default)]
pub struct Hub {
    endpoint: Option<String>,
    cache_dir: Option<PathBuf>,
    token: Option<String>,
    offline: bool,
    retries: Option<usize>,
    ignore_env_token: bool,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    max_file_size: Option<u64>,
    progress: Option<ProgressCallback>,
}

/// What downloads need: the HTTP clients and the cache folder.
struct Session {
    http: Http,
    cache: PathBuf,
}

/// A file in the cache, and the commit it belongs to.
struct Cached {
    path: PathBuf,
    commit: CommitId,
}

/// Removes a partial download unless it was kept.
struct PartialFile<'a>(&'a Path);

impl Drop for PartialFile<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
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

    /// Whether a token may be taken from the environment (`HF_TOKEN`, and for downloads also
    /// `HF_TOKEN_PATH` and `$HF_HOME/token`; the default) when none was given with
    /// [`Hub::token`].
    pub fn env_token(mut self, allowed: bool) -> Self {
        self.ignore_env_token = !allowed;
        self
    }

    /// Offline: use the cache only and make no network request.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// How often a request is retried after a refused connection or a 429/5xx answer (the
    /// default is 2); a timeout is not retried.
    pub fn retries(mut self, retries: usize) -> Self {
        self.retries = Some(retries);
        self
    }

    /// How long to try to connect (instead of `LDL_HUB_CONNECT_TIMEOUT`; default 30 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How long to wait for an answer, and then for each piece of a download, before giving
    /// up (instead of `LDL_HUB_READ_TIMEOUT`; default 60 s).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = Some(timeout);
        self
    }

    /// The largest file downloaded, in bytes (instead of `LDL_HUB_MAX_FILE_SIZE`; default
    /// 64 GiB). A download is also refused when the cache's disk has less space free.
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = Some(bytes);
        self
    }

    /// Calls `report` as downloads progress (see [`Progress`]); files found in the cache are
    /// not reported.
    pub fn progress(mut self, report: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(ProgressCallback(Arc::new(report)));
        self
    }

    /// hf-hub's blocking client, for uploads.
    fn client(&self, token: Option<String>) -> Result<HFClientSync> {
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
        HFClientSync::from_inner(client).map_err(failed)
    }

    /// The clients and cache folder of downloads.
    fn session(&self) -> Result<Session> {
        let limits = Limits::resolve(self.connect_timeout, self.read_timeout, self.max_file_size)?;
        let http = Http::new(
            self.endpoint_name(),
            self.download_token()?,
            self.retries.unwrap_or(2),
            limits,
        )?;
        let cache = self
            .cache_dir
            .clone()
            .unwrap_or_else(hf_hub::resolve_cache_dir);
        Ok(Session { http, cache })
    }

    /// The token downloads send: [`Hub::token`], else (unless [`Hub::env_token`] forbids it)
    /// the one other Hugging Face tools use: `HF_TOKEN`, the file `HF_TOKEN_PATH` names, or
    /// `$HF_HOME/token`; none when `HF_HUB_DISABLE_IMPLICIT_TOKEN` is set.
    /// A token file that is not a regular file of at most [`MAX_TOKEN_FILE_BYTES`] of
    /// UTF-8 text is an error; a missing one is no token.
    fn download_token(&self) -> Result<Option<String>> {
        if self.token.is_some() || self.ignore_env_token {
            return Ok(self.token.clone());
        }
        token_from_env(|name| std::env::var(name).ok(), &hf_hub::hf_home())
    }

    fn endpoint_name(&self) -> String {
        self.endpoint
            .clone()
            .or_else(|| std::env::var("HF_ENDPOINT").ok())
            .unwrap_or_else(|| "https://huggingface.co".to_string())
    }

    /// The file `hub_ref` names, downloaded into the cache or found there. Every value of the
    /// Hub's answer that becomes a path is checked first ([`Error::UnsafeResponse`]); the
    /// download is bounded by the announced size, and checked against its ETag (a SHA-256
    /// for LFS files, a git blob SHA-1 for others); a corrupt, truncated, oversized or stalled
    /// download leaves nothing in the cache.
    pub fn resolve(&self, hub_ref: &HubRef) -> Result<PathBuf> {
        let session = self.session()?;
        Ok(self.download(&session, RepoKind::Model, hub_ref)?.path)
    }

    /// Downloads (or finds in the cache) `hub_ref.file` of the repository: from the cache for a
    /// commit it holds, offline, or when the Hub cannot be reached; else after a metadata
    /// request whose values are checked, downloaded only when the blob is not cached yet.
    fn download(&self, session: &Session, kind: RepoKind, hub_ref: &HubRef) -> Result<Cached> {
        let file = RepoFile::parse(&hub_ref.file).map_err(|reason| Error::BadPath {
            input: hub_ref.to_string(),
            reason: format!("the path in the repository {reason}"),
        })?;
        let repo = RepoCache::new(
            &session.cache,
            &kind.cache_folder(&hub_ref.owner, &hub_ref.name),
        );
        if let Ok(commit) = CommitId::parse(&hub_ref.revision) {
            let path = repo.snapshot_file(&commit, &file);
            if path.is_file() {
                return Ok(Cached { path, commit });
            }
        }
        let from_cache = || {
            repo.cached(&hub_ref.revision, &file)
                .map(|(path, commit)| Cached { path, commit })
        };
        if self.offline {
            return from_cache().ok_or_else(|| Error::NotCached {
                what: hub_ref.to_string(),
                repo: hub_ref.repo_spec(),
                cache: session.cache.display().to_string(),
            });
        }
        let remote = match session.http.metadata(kind, hub_ref) {
            Ok(remote) => remote,
            // Out of reach: the cached copy of the revision, if there is one.
            Err(e @ (Error::NoNetwork { .. } | Error::Stalled { .. })) => {
                return from_cache().ok_or(e)
            }
            Err(e) => return Err(e),
        };
        if !repo.blob(&remote.id).is_file() {
            self.fetch_blob(session, kind, hub_ref, &repo, &remote)?;
        }
        let cache_error = |e: std::io::Error| Error::Other {
            what: hub_ref.to_string(),
            detail: format!(
                "cannot write to the cache at {} ({e})",
                session.cache.display()
            ),
        };
        let path = repo
            .link(&remote.commit, &file, &remote.id)
            .map_err(cache_error)?;
        if CommitId::parse(&hub_ref.revision).is_err() {
            // Branch and tag names were checked by their parsers; a `..` could not get here.
            if let Ok(revision) = RepoFile::parse(&hub_ref.revision) {
                repo.write_ref(&revision, &remote.commit)
                    .map_err(cache_error)?;
            }
        }
        Ok(Cached {
            path,
            commit: remote.commit,
        })
    }

    /// Downloads the blob `remote` announces into `blobs/`, after checking its size against
    /// the limit and the free space; it is renamed into place only once its hash matched.
    fn fetch_blob(
        &self,
        session: &Session,
        kind: RepoKind,
        hub_ref: &HubRef,
        repo: &RepoCache,
        remote: &Remote,
    ) -> Result<()> {
        let limit = session.http.limits().max_file_size;
        if remote.size > limit {
            return Err(Error::TooLarge {
                what: hub_ref.to_string(),
                size: remote.size,
                limit,
            });
        }
        let blob = repo.blob(&remote.id);
        let folder = blob.parent().unwrap_or(&session.cache);
        if let Some(free) = transfer::free_space(folder).filter(|&free| remote.size > free) {
            return Err(Error::NoSpace {
                what: hub_ref.to_string(),
                size: remote.size,
                free,
                cache: session.cache.display().to_string(),
            });
        }
        let cache_error = |e: std::io::Error| Error::Other {
            what: hub_ref.to_string(),
            detail: format!(
                "cannot write to the cache at {} ({e})",
                session.cache.display()
            ),
        };
        std::fs::create_dir_all(folder).map_err(cache_error)?;
        let partial = repo.partial_blob(&remote.id);
        let _remove = PartialFile(&partial);
        let report = |p: &Progress| {
            if let Some(callback) = &self.progress {
                (callback.0)(p)
            }
        };
        session
            .http
            .download(kind, hub_ref, remote, &partial, &report)?;
        repo.store_blob(&partial, &remote.id).map_err(cache_error)?;
        Ok(())
    }

    /// Fetches the model folder of `repo`: [`MODEL_FILES`] at one commit of its revision.
    /// `model.safetensors` and `ldl.toml` must exist; a missing `README.md` is tolerated.
    /// Returns the cached snapshot folder.
    pub fn fetch(&self, repo: &RepoSpec) -> Result<PathBuf> {
        let session = self.session()?;
        let first = self.download(&session, RepoKind::Model, &repo.file(MODEL_FILES[0]))?;
        // The other files come from the same commit.
        for (i, file) in MODEL_FILES.iter().enumerate().skip(1) {
            let mut r = repo.file(file);
            r.revision = first.commit.to_string();
            match self.download(&session, RepoKind::Model, &r) {
                Ok(_) => {}
                Err(Error::FileNotFound { .. }) if i == 2 => {}
                Err(e) => return Err(e.for_revision(&repo.revision)),
            }
        }
        Ok(RepoCache::new(
            &session.cache,
            &RepoKind::Model.cache_folder(&repo.owner, &repo.name),
        )
        .snapshot(&first.commit))
    }

    /// Uploads [`MODEL_FILES`] from `folder` (as written by `ldl export`), and those of
    /// [`OPTIONAL_MODEL_FILES`] it holds, to the model repository `repo` in one commit, creating the repository (public) if it does not exist.
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
        for file in OPTIONAL_MODEL_FILES {
            let path = folder.join(file);
            if path.is_file() {
                operations.push(CommitOperation::add_file(file, path));
                files.push(file.to_string());
            }
        }
        let client = self.client(Some(token))?;
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

/// The largest token file read: a Hub token is a line of about 40 characters.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The token other Hugging Face tools would use, from the environment variables `var` looks
/// up and the Hugging Face home folder `hf_home`: `HF_TOKEN`, else the file `HF_TOKEN_PATH`
/// names, else `hf_home/token`; none when `HF_HUB_DISABLE_IMPLICIT_TOKEN` is set. A token
/// file that is missing or blank gives no token; one that is not a small regular file of
/// text is an error rather than a hang (a FIFO) or an endless read (`/dev/zero`).
fn token_from_env(var: impl Fn(&str) -> Option<String>, hf_home: &Path) -> Result<Option<String>> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if set("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_some() {
        return Ok(None);
    }
    if let Some(token) = set("HF_TOKEN") {
        return Ok(Some(token));
    }
    let from_file = |path: &Path, origin: &str| {
        let bad = |problem: String| Error::TokenFile {
            path: path.display().to_string(),
            origin: origin.to_string(),
            problem,
        };
        match local_file::read_small(path, MAX_TOKEN_FILE_BYTES) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| bad("is not UTF-8 text".into()))?;
                Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
            }
            Err(local_file::Problem::NotFound) => Ok(None),
            Err(problem) => Err(bad(problem.to_string())),
        }
    };
    if let Some(path) = set("HF_TOKEN_PATH") {
        if let Some(token) = from_file(Path::new(&path), "HF_TOKEN_PATH")? {
            return Ok(Some(token));
        }
    }
    from_file(&hf_home.join("token"), "HF_HOME")
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
    fn token_files_are_read_bounded_and_only_when_regular() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let env = |pairs: Vec<(&'static str, String)>| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.clone())
            }
        };
        let token_path = |path: &Path| env(vec![("HF_TOKEN_PATH", path.display().to_string())]);
        // A token file, the home folder's, and none.
        let file = dir.path().join("token");
        std::fs::write(&file, "hf_abc\n").unwrap();
        assert_eq!(
            token_from_env(token_path(&file), &home).unwrap().as_deref(),
            Some("hf_abc")
        );
        std::fs::write(home.join("token"), " hf_home \n").unwrap();
        assert_eq!(
            token_from_env(env(vec![]), &home).unwrap().as_deref(),
            Some("hf_home")
        );
        let missing = dir.path().join("missing");
        assert_eq!(
            token_from_env(token_path(&missing), &home)
                .unwrap()
                .as_deref(),
            Some("hf_home"),
            "a missing HF_TOKEN_PATH file falls back to the home folder's"
        );
        // A file far larger than a token, not text, a directory, a device.
        let large = dir.path().join("large");
        std::fs::write(&large, vec![b'a'; 1 << 20]).unwrap();
        let e = token_from_env(token_path(&large), &home)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "the Hub token file {} (named by HF_TOKEN_PATH) is larger than the 4096 bytes",
                large.display()
            )),
            "{e}"
        );
        assert!(e.contains("unset HF_TOKEN_PATH"), "{e}");
        let binary = dir.path().join("binary");
        std::fs::write(&binary, [0xff, 0xfe]).unwrap();
        let e = token_from_env(token_path(&binary), &home)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not UTF-8 text"), "{e}");
        let e = token_from_env(token_path(dir.path()), &home)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a directory, not a regular file"), "{e}");
        #[cfg(unix)]
        {
            let e = token_from_env(token_path(Path::new("/dev/zero")), &home)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("is a character device, not a regular file"),
                "{e}"
            );
            // A FIFO with no writer: an error at once, not a wait for ever.
            let fifo = dir.path().join("fifo");
            local_file::make_fifo(&fifo);
            let fifo_env = token_path(&fifo);
            let e = local_file::within_seconds(move || token_from_env(fifo_env, &home))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("is a FIFO (named pipe), not a regular file"),
                "{e}"
            );
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
