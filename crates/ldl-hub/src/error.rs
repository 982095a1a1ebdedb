//! The error type of `ldl-hub`: one line each, naming the thing and what to try.

/// Everything that can go wrong between ldl and the Hub.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A string that is not a Hub path.
    #[error(
        "`{input}` is not a Hub path: {reason}; expected hf://owner/name[@revision][/path/in/repo], \
         e.g. hf://ldl-rs/ages or hf://ldl-rs/ages@v1/model.safetensors"
    )]
    BadPath {
        /// The string given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A string that is not a repository id.
    #[error(
        "`{input}` is not a model repository: {reason}; expected owner/name[@revision], \
         e.g. ldl-rs/ages or ldl-rs/ages@v1"
    )]
    BadRepo {
        /// The string given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The repository does not exist (or is private and the token cannot see it).
    #[error(
        "repository {repo} not found on {endpoint}: check the owner/name spelling; \
         if it is private, set HF_TOKEN to a token that can read it"
    )]
    RepoNotFound {
        /// `owner/name`.
        repo: String,
        /// The Hub's base URL.
        endpoint: String,
    },

    /// The repository has no such branch, tag or commit.
    #[error(
        "revision `{revision}` not found in {repo}: name a branch, tag or commit of the \
         repository after @ (the default is main)"
    )]
    RevisionNotFound {
        /// `owner/name`.
        repo: String,
        /// The revision asked for.
        revision: String,
    },

    /// The repository exists but has no such file at that revision.
    #[error(
        "{repo} has no file `{file}` at revision {revision}: check the path after the \
         repository (the default is model.safetensors), or the revision"
    )]
    FileNotFound {
        /// `owner/name`.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The path in the repository.
        file: String,
    },

    /// The Hub wants (other) credentials: HTTP 401 or 403.
    #[error("{}", auth_message(.repo, *.status, *.gated, *.token_set))]
    AuthRequired {
        /// `owner/name`.
        repo: String,
        /// The HTTP status (401 or 403).
        status: u16,
        /// Whether the Hub said the repository is gated.
        gated: bool,
        /// Whether a token was sent.
        token_set: bool,
    },

    /// The Hub could not be reached (connection refused, DNS failure, timeout).
    #[error(
        "cannot reach the Hub at {endpoint} ({detail}): check the network connection and \
         HF_ENDPOINT, or work from the cache with --offline / HF_HUB_OFFLINE=1"
    )]
    NoNetwork {
        /// The Hub's base URL.
        endpoint: String,
        /// The transport error.
        detail: String,
    },

    /// Offline, and the file is not in the cache.
    #[error(
        "{what} is not in the cache at {cache}; run `ldl fetch {repo}` with network, \
         or unset HF_HUB_OFFLINE"
    )]
    NotCached {
        /// The Hub path.
        what: String,
        /// `owner/name[@revision]`, as `ldl fetch` takes it.
        repo: String,
        /// The cache folder.
        cache: String,
    },

    /// A download that does not match what the Hub announced; it was removed from the cache.
    #[error(
        "the download of {what} is corrupt or truncated: {detail}; nothing was kept in the \
         cache: run the command again"
    )]
    Corrupt {
        /// The Hub path.
        what: String,
        /// What did not match.
        detail: String,
    },

    /// The Hub (or a mirror, or a proxy) sent a value ldl will not use: one that would name a
    /// path outside the cache, or that leaves a download unchecked or unbounded. Nothing was
    /// written for it.
    #[error(
        "the Hub at {endpoint} answered for {what} with {}: refused, nothing was written; \
         a Hub, mirror or proxy that answers this is broken or hostile: check HF_ENDPOINT \
         and any HTTP proxy",
        unsafe_value(.field, .value, .reason)
    )]
    UnsafeResponse {
        /// The Hub's base URL.
        endpoint: String,
        /// The Hub path or repository asked about.
        what: String,
        /// The header or field (`ETag`, `X-Repo-Commit`, a file name in the listing, …).
        field: String,
        /// The value sent, escaped and shortened; empty when it was missing.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The Hub accepted the connection but sent nothing for the read timeout.
    #[error(
        "{what}: the Hub at {endpoint} sent nothing for {seconds} s, so the request was given \
         up and nothing was kept in the cache: check the network, or give a slow Hub more \
         time with LDL_HUB_READ_TIMEOUT=SECONDS"
    )]
    Stalled {
        /// The Hub path or repository asked about.
        what: String,
        /// The Hub's base URL.
        endpoint: String,
        /// The read timeout, in seconds.
        seconds: String,
    },

    /// A file larger than the most ldl downloads.
    #[error(
        "{what} is {} as the Hub announces it, more than the {} ldl downloads at most; \
         nothing was downloaded: if the file really is that large, raise the limit with \
         LDL_HUB_MAX_FILE_SIZE=BYTES (e.g. 100G)",
        bytes(*.size), bytes(*.limit)
    )]
    TooLarge {
        /// The Hub path.
        what: String,
        /// The size announced, in bytes.
        size: u64,
        /// The limit, in bytes.
        limit: u64,
    },

    /// A file larger than the free space of the cache's disk.
    #[error(
        "{what} is {} as the Hub announces it, but only {} are free on the disk of the cache \
         {cache}; nothing was downloaded: free some space, or set HF_HUB_CACHE to a folder on \
         a larger disk",
        bytes(*.size), bytes(*.free)
    )]
    NoSpace {
        /// The Hub path.
        what: String,
        /// The size announced, in bytes.
        size: u64,
        /// The free space, in bytes.
        free: u64,
        /// The cache folder.
        cache: String,
    },

    /// An environment variable of ldl-hub with a value it cannot use.
    #[error("{name}=`{value}` is not {expected}: set it to one, or unset it for the default")]
    BadSetting {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
        /// What it should be.
        expected: String,
    },

    /// Pushing without a token.
    #[error(
        "pushing needs a Hub token with write access: set HF_TOKEN \
         (create one at https://huggingface.co/settings/tokens)"
    )]
    TokenMissing,

    /// Pushing in offline mode.
    #[error("cannot push in offline mode: unset HF_HUB_OFFLINE to upload")]
    OfflinePush,

    /// The folder to push is not an exported model folder.
    #[error(
        "{folder} is not a model folder: it has no {file}; write one with \
         `ldl export RUN_DIR --out DIR`, or push a run folder with `ldl push RUN_DIR owner/name`"
    )]
    NotAModelFolder {
        /// The folder given.
        folder: String,
        /// The missing file.
        file: String,
    },

    /// The Hub refused an upload.
    #[error(
        "the Hub refused the upload to {repo} ({detail}): HF_TOKEN needs write access to \
         that namespace"
    )]
    PushDenied {
        /// `owner/name`.
        repo: String,
        /// The Hub's answer.
        detail: String,
    },

    /// The client could not be set up (typically a malformed endpoint URL).
    #[error("cannot set up a Hub client for {endpoint}: {detail}; check HF_ENDPOINT")]
    Client {
        /// The Hub's base URL.
        endpoint: String,
        /// Why.
        detail: String,
    },

    /// A string that is not a dataset id.
    #[error(
        "`{input}` is not a dataset: {reason}; expected owner/name[@revision], \
         e.g. data.hub.dataset = \"ldl-rs/faces\" or \"ldl-rs/faces@main\""
    )]
    BadDataset {
        /// The string given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The dataset has no parquet conversion on the Hub.
    #[error(
        "dataset {dataset} has no parquet conversion on the Hub (no revision \
         refs/convert/parquet); if it keeps parquet files on a branch, name it: \
         data.hub.dataset = \"{dataset}@main\""
    )]
    NotConverted {
        /// `owner/name`.
        dataset: String,
    },

    /// No parquet files of the requested config and split.
    #[error(
        "dataset {dataset} has no parquet files for {wanted}; it has: {present}; set \
         data.hub.config and data.hub.split (or validation_split, test_split) to one of these"
    )]
    NoParquetFiles {
        /// `owner/name` and the revision listed.
        dataset: String,
        /// The config and split asked for.
        wanted: String,
        /// The config and split pairs that exist.
        present: String,
    },

    /// Offline (or the Hub unreachable), and the dataset's files are not in the cache.
    #[error(
        "the parquet files of dataset {dataset} (revision {revision}) are not in the cache \
         at {cache}; run once with network (unset HF_HUB_OFFLINE) to download them"
    )]
    DatasetNotCached {
        /// `owner/name[@revision]`.
        dataset: String,
        /// The revision.
        revision: String,
        /// The cache folder.
        cache: String,
    },

    /// Offline (or the Hub unreachable), and a split's files are not all in the cache: it was
    /// never downloaded whole, or some of its files were removed since.
    #[error(
        "{wanted} of dataset {dataset} (revision {revision}) is not complete in the cache: \
         {detail}; run once with network (unset HF_HUB_OFFLINE) to download it"
    )]
    SplitNotCached {
        /// `owner/name[@revision]`.
        dataset: String,
        /// The revision.
        revision: String,
        /// `split `train` of config `default``.
        wanted: String,
        /// What is missing.
        detail: String,
    },

    /// A file that is not a readable parquet file, or one ldl cannot read.
    #[error("{file}: {detail}")]
    Parquet {
        /// The file's Hub path.
        file: String,
        /// What is wrong and what to do.
        detail: String,
    },

    /// A column named in the config that the parquet file does not have.
    #[error("{file}: no column `{column}`; the columns are: {available}")]
    MissingColumn {
        /// The file's Hub path.
        file: String,
        /// The column asked for.
        column: String,
        /// The file's columns, with their types.
        available: String,
    },

    /// A token file (`HF_TOKEN_PATH`, or `$HF_HOME/token`) that cannot be a token: not a
    /// regular file, too large, or not text.
    #[error(
        "the Hub token file {path} (named by {origin}) {problem}; a token file holds one \
         line, the token: fix the file, or {}",
        if origin == "HF_HOME" { "remove it" } else { "unset HF_TOKEN_PATH" }
    )]
    TokenFile {
        /// The file's path.
        path: String,
        /// The environment variable that leads to it.
        origin: String,
        /// What is wrong with it.
        problem: String,
    },

    /// Anything else the Hub or the cache reported.
    #[error("Hub request for {what} failed: {detail}")]
    Other {
        /// The Hub path or repository.
        what: String,
        /// The underlying error.
        detail: String,
    },
}

fn auth_message(repo: &str, status: u16, gated: bool, token_set: bool) -> String {
    if gated {
        format!(
            "{repo} is gated (HTTP {status}): accept its conditions on the repository's Hub \
             page, then set HF_TOKEN to a token of that account"
        )
    } else if token_set {
        format!(
            "{repo} refused the token in HF_TOKEN (HTTP {status}): use a token that can read \
             this repository, or check the owner/name spelling"
        )
    } else {
        format!(
            "{repo} needs authentication (HTTP {status}): it is private or does not exist; \
             set HF_TOKEN to a token that can read it, or check the owner/name spelling"
        )
    }
}

fn unsafe_value(field: &str, value: &str, reason: &str) -> String {
    if value.is_empty() {
        format!("no {field}: it {reason}")
    } else {
        format!("{field} `{value}`, which {reason}")
    }
}

/// `10000000000000 bytes (9.1 TiB)`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = None;
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = Some(u);
    }
    match unit {
        Some(u) => format!("{n} bytes ({value:.1} {u})"),
        None => format!("{n} bytes"),
    }
}

impl Error {
    /// The same error about `revision` where it named the commit a fetch pinned instead.
    pub(crate) fn for_revision(self, revision: &str) -> Self {
        match self {
            Error::FileNotFound { repo, file, .. } => Error::FileNotFound {
                repo,
                file,
                revision: revision.to_string(),
            },
            e => e,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
