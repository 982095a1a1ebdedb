//! Datasets on the Hub: the parquet files of one config and split, listed by the Hub (the
//! same listing `candle-datasets`' `hub::from_hub` uses: the dataset's info at the revision
//! `refs/convert/parquet`) and downloaded through [`Hub`]'s checked, offline-aware path.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::cache::RepoCache;
use crate::error::{Error, Result};
use crate::transfer::RepoKind;
use crate::untrusted::{shown, CommitId, RepoFile};
use crate::{Hub, HubRef};

/// The revision where the Hub keeps its parquet conversion of a dataset: one folder per
/// config, one sub-folder per split (`default/train/0000.parquet`, …).
pub const PARQUET_REVISION: &str = "refs/convert/parquet";

/// A dataset repository on the Hub: `owner/name[@revision]`. Without a revision, its
/// parquet conversion ([`PARQUET_REVISION`]) is read.
///
/// ```
/// use ldl_hub::DatasetSpec;
/// let d: DatasetSpec = "ldl-rs/faces".parse()?;
/// assert_eq!((d.owner.as_str(), d.name.as_str(), d.revision()), ("ldl-rs", "faces", "refs/convert/parquet"));
/// let d: DatasetSpec = "ldl-rs/faces@main".parse()?;
/// assert_eq!(d.revision(), "main");
/// # Ok::<(), ldl_hub::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DatasetSpec {
    /// The user or organisation.
    pub owner: String,
    /// The dataset's name.
    pub name: String,
    /// A branch, tag or commit; `None` for [`PARQUET_REVISION`].
    pub revision_given: Option<String>,
}

impl DatasetSpec {
    /// The revision read: the one given, else [`PARQUET_REVISION`].
    pub fn revision(&self) -> &str {
        self.revision_given.as_deref().unwrap_or(PARQUET_REVISION)
    }

    /// `owner/name`.
    pub fn repo_id(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// The Hub path of a file of the dataset, for messages:
    /// `hf://datasets/owner/name[@revision]/path` (the revision shown when one was given).
    pub fn file_name(&self, path: &str) -> String {
        match &self.revision_given {
            Some(r) => format!("hf://datasets/{}/{}@{r}/{path}", self.owner, self.name),
            None => format!("hf://datasets/{}/{}/{path}", self.owner, self.name),
        }
    }

    fn cache_folder(&self) -> String {
        format!("datasets--{}--{}", self.owner, self.name)
    }
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)?;
        if let Some(r) = &self.revision_given {
            write!(f, "@{r}")?;
        }
        Ok(())
    }
}

impl FromStr for DatasetSpec {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        let bad = |reason: String| Error::BadDataset {
            input: input.to_string(),
            reason,
        };
        let text = input
            .strip_prefix("hf://datasets/")
            .or_else(|| input.strip_prefix("datasets/"))
            .unwrap_or(input);
        let (repo, revision) = match text.split_once('@') {
            Some((repo, revision)) => (repo, Some(revision)),
            None => (text, None),
        };
        let (owner, name) = repo
            .split_once('/')
            .ok_or_else(|| bad("it has no `/` between owner and name".into()))?;
        if let Some(problem) = crate::hub_ref::name_problem("owner", owner)
            .or_else(|| crate::hub_ref::name_problem("name", name))
        {
            return Err(bad(problem));
        }
        if let Some(r) = revision {
            // Branch names of the Hub may hold `/` (refs/convert/parquet, refs/pr/1).
            if r.is_empty()
                || r.starts_with('/')
                || r.ends_with('/')
                || r.contains("//")
                || r.contains("..")
                || r.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | '\\'))
            {
                return Err(bad(format!(
                    "the revision `{r}` is empty, or has a space, `\\`, `@`, `..` or an empty part"
                )));
            }
        }
        Ok(DatasetSpec {
            owner: owner.to_string(),
            name: name.to_string(),
            revision_given: revision.map(str::to_string),
        })
    }
}

/// A parquet file of a dataset, in the local cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetFile {
    /// Its Hub path, for messages: `hf://datasets/owner/name/default/train/0000.parquet`.
    pub name: String,
    /// Its path in the repository.
    pub path_in_repo: String,
    /// The file in the cache.
    pub local: PathBuf,
}

/// The config and split a parquet file of a dataset belongs to, from its path:
/// `CONFIG/SPLIT/NNNN.parquet` (the Hub's conversion; `partial-SPLIT` for a partial one),
/// `CONFIG/NAME-SPLIT.parquet` (older conversions), `data/SPLIT-00000-of-00001.parquet`
/// (`push_to_hub`), `SPLIT.parquet`.
fn config_and_split(path: &str) -> Option<(String, String)> {
    let stem = path.strip_suffix(".parquet")?;
    let parts: Vec<&str> = stem.split('/').collect();
    let (config, split) = match parts.as_slice() {
        [file] => ("default".to_string(), split_of_stem(file)),
        [config, file] => (config.to_string(), split_of_stem(file)),
        [config, split, ..] => (config.to_string(), split.to_string()),
        [] => return None,
    };
    let split = split
        .strip_prefix("partial-")
        .map(str::to_string)
        .unwrap_or(split);
    Some((config, split))
}

/// `train` of `train`, `train-00000-of-00002`, `train-00000-of-00002-5f1c7e2a9b3d4c6e`
/// (`push_to_hub` before datasets 2.15 added a fingerprint) and `faces-train`.
fn split_of_stem(stem: &str) -> String {
    let digits = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    let parts: Vec<&str> = stem.split('-').collect();
    // A shard suffix -NNNNN-of-NNNNN[-FINGERPRINT]: the split comes before it.
    let shard = (1..parts.len().saturating_sub(1))
        .find(|&i| parts[i] == "of" && digits(parts[i - 1]) && digits(parts[i + 1]));
    let name = match shard {
        Some(i) if i >= 2 => &parts[..i - 1],
        _ => &parts[..],
    };
    // A plain split name, or DATASET-SPLIT (older conversions). Split names have no `-`.
    name.last().map(|s| s.to_string()).unwrap_or_default()
}

/// The files of `files` (paths in the repository) of `config` and `split`, sorted by path;
/// `Err` with the `config/split` pairs present when there are none. A `data/` folder (as
/// `push_to_hub` writes) stands for the config `default` when there is no `default/` one.
fn select(files: &[String], config: &str, split: &str) -> std::result::Result<Vec<String>, String> {
    let layouts: Vec<(String, (String, String))> = files
        .iter()
        .filter_map(|f| config_and_split(f).map(|cs| (f.clone(), cs)))
        .collect();
    let has_default = layouts.iter().any(|(_, (c, _))| c == "default");
    let config_of = |c: &str| -> String {
        if c == "data" && !has_default {
            "default".to_string()
        } else {
            c.to_string()
        }
    };
    let mut chosen: Vec<String> = layouts
        .iter()
        .filter(|(_, (c, s))| config_of(c) == config && s == split)
        .map(|(f, _)| f.clone())
        .collect();
    chosen.sort();
    if chosen.is_empty() {
        let mut present: Vec<String> = layouts
            .iter()
            .map(|(_, (c, s))| format!("config `{}` split `{s}`", config_of(c)))
            .collect();
        present.sort();
        present.dedup();
        return Err(if present.is_empty() {
            "no parquet files at all".to_string()
        } else {
            present.join(", ")
        });
    }
    Ok(chosen)
}

/// Why a dataset listing gives no files to download for a config and split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// None of its files is of the config and split: the `config/split` pairs present.
    NoFiles { present: String },
    /// A file of the split has a name that is no safe path; why.
    UnsafeName { name: String, reason: String },
}

/// The files of `files` (a listing) of `config` and `split`, as [`select`] chooses them,
/// each checked as a path in the repository: the names become paths in the cache, so all
/// are checked before any download.
pub(crate) fn checked_selection(
    files: &[String],
    config: &str,
    split: &str,
) -> std::result::Result<Vec<String>, Unusable> {
    let chosen = select(files, config, split).map_err(|present| Unusable::NoFiles { present })?;
    if let Some((name, reason)) = chosen
        .iter()
        .find_map(|f| RepoFile::parse(f).err().map(|reason| (f.clone(), reason)))
    {
        return Err(Unusable::UnsafeName { name, reason });
    }
    Ok(chosen)
}

/// Where the list of a split's files is kept once all of them are downloaded:
/// `CACHE/datasets--OWNER--NAME/ldl-splits/REVISION/CONFIG/SPLIT.json`, with every name
/// reduced to characters that cannot leave the folder.
fn split_record(cache: &Path, dataset: &DatasetSpec, config: &str, split: &str) -> PathBuf {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '%'
                }
            })
            .collect()
    };
    cache
        .join(dataset.cache_folder())
        .join("ldl-splits")
        .join(safe(dataset.revision()))
        .join(safe(config))
        .join(format!("{}.json", safe(split)))
}

/// Anything but a regular file of at most 64 MiB (a FIFO would block the read) counts as
/// no record.
fn read_split_record(path: &Path) -> Option<Vec<String>> {
    // A record lists a split's file names: thousands of shards take well under a megabyte.
    let bytes = crate::local_file::read_small(path, 64 << 20).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Written whole or not at all (a temporary file renamed into place).
fn write_split_record(path: &Path, files: &[String]) -> std::io::Result<()> {
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder)?;
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, serde_json::to_string(files)?)?;
    std::fs::rename(&partial, path)
}

impl Hub {
    /// The parquet files of `split` in `config` of the dataset, downloaded into the cache or
    /// found there, sorted by path (the row order is the files' order, then each file's).
    ///
    /// The Hub lists the files of the dataset's revision (by default its parquet conversion,
    /// [`PARQUET_REVISION`]); each is downloaded like a model file (checked against its
    /// SHA-256 ETag). Offline ([`Hub::offline`]), or when the Hub cannot be reached, the
    /// files come from the cached snapshot of that revision.
    pub fn dataset_files(
        &self,
        dataset: &DatasetSpec,
        config: &str,
        split: &str,
    ) -> Result<Vec<ParquetFile>> {
        let session = self.session()?;
        let cache = &session.cache;
        let revision = dataset.revision();
        let as_ref = |file: &str| HubRef {
            owner: dataset.owner.clone(),
            name: dataset.name.clone(),
            revision: revision.to_string(),
            file: file.to_string(),
        };
        let listed = if self.offline {
            None
        } else {
            match session.http.listing(&as_ref("")) {
                Ok(files) => Some(files),
                Err(e @ (Error::NoNetwork { .. } | Error::Stalled { .. })) => {
                    // Unreachable: work from the cache if it has the revision.
                    if self.cached_snapshot(cache, dataset).is_none() {
                        return Err(self.dataset_error(dataset, cache, e));
                    }
                    None
                }
                Err(e) => return Err(self.dataset_error(dataset, cache, e)),
            }
        };
        let Some(files) = listed else {
            return self.cached_split_files(cache, dataset, config, split);
        };
        let chosen = self.chosen_files(&files, dataset, config, split)?;
        let files = chosen
            .iter()
            .map(|f| {
                let local = self
                    .download(&session, RepoKind::Dataset, &as_ref(f))
                    .map_err(|e| self.dataset_error(dataset, cache, e))?
                    .path;
                Ok(ParquetFile {
                    name: dataset.file_name(f),
                    local,
                    path_in_repo: f.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Best effort: without the record, offline use of this split says to go online.
        let _ = write_split_record(&split_record(cache, dataset, config, split), &chosen);
        Ok(files)
    }

    /// The files of `split` in `config` from the cached snapshot of the dataset's revision,
    /// as an earlier run left it: only a split recorded as downloaded whole, with every
    /// file still there (a run killed half-way must not leave a smaller split that looks
    /// complete).
    fn cached_split_files(
        &self,
        cache: &Path,
        dataset: &DatasetSpec,
        config: &str,
        split: &str,
    ) -> Result<Vec<ParquetFile>> {
        let revision = dataset.revision();
        let Some(snapshot) = self.cached_snapshot(cache, dataset) else {
            return Err(Error::DatasetNotCached {
                dataset: dataset.to_string(),
                revision: revision.to_string(),
                cache: cache.display().to_string(),
            });
        };
        let not_cached = |detail: String| Error::SplitNotCached {
            dataset: dataset.to_string(),
            revision: revision.to_string(),
            wanted: format!("split `{split}` of config `{config}`"),
            detail,
        };
        let record = split_record(cache, dataset, config, split);
        let chosen = read_split_record(&record)
            .filter(|files| files.iter().all(|f| RepoFile::parse(f).is_ok()))
            .ok_or_else(|| not_cached("it was never downloaded whole".into()))?;
        let missing: Vec<&String> = chosen
            .iter()
            .filter(|f| !snapshot.join(f).is_file())
            .collect();
        if let Some(first) = missing.first() {
            return Err(not_cached(format!(
                "{} of its {} files are missing (`{first}` …)",
                missing.len(),
                chosen.len()
            )));
        }
        Ok(chosen
            .into_iter()
            .map(|f| ParquetFile {
                name: dataset.file_name(&f),
                local: snapshot.join(&f),
                path_in_repo: f,
            })
            .collect())
    }

    /// The parquet files of `split` in `config` among the Hub's listing `files`, each name
    /// checked before it becomes a path.
    fn chosen_files(
        &self,
        files: &[String],
        dataset: &DatasetSpec,
        config: &str,
        split: &str,
    ) -> Result<Vec<String>> {
        let revision = dataset.revision();
        checked_selection(files, config, split).map_err(|unusable| match unusable {
            Unusable::NoFiles { present } => Error::NoParquetFiles {
                dataset: format!("{} (revision {revision})", dataset.repo_id()),
                wanted: format!("config `{config}`, split `{split}`"),
                present,
            },
            Unusable::UnsafeName { name, reason } => Error::UnsafeResponse {
                endpoint: self.endpoint_name(),
                what: format!("the file list of datasets/{}", dataset),
                field: "the file name".into(),
                value: shown(&name),
                reason,
            },
        })
    }

    /// The cached snapshot folder of the dataset's revision, if the cache has one.
    fn cached_snapshot(&self, cache: &Path, dataset: &DatasetSpec) -> Option<PathBuf> {
        let repo = RepoCache::new(cache, &dataset.cache_folder());
        let revision = dataset.revision();
        let commit = CommitId::parse(revision)
            .ok()
            .or_else(|| repo.read_ref(&RepoFile::parse(revision).ok()?))?;
        let snapshot = repo.snapshot(&commit);
        snapshot.is_dir().then_some(snapshot)
    }

    /// A model-worded error, reworded for a dataset.
    fn dataset_error(&self, dataset: &DatasetSpec, cache: &Path, e: Error) -> Error {
        match e {
            Error::RepoNotFound { endpoint, .. } => Error::RepoNotFound {
                repo: format!("datasets/{}", dataset.repo_id()),
                endpoint,
            },
            Error::RevisionNotFound { .. } if dataset.revision_given.is_none() => {
                Error::NotConverted {
                    dataset: dataset.repo_id(),
                }
            }
            Error::RevisionNotFound { revision, .. } => Error::RevisionNotFound {
                repo: format!("datasets/{}", dataset.repo_id()),
                revision,
            },
            Error::AuthRequired {
                repo,
                status,
                gated,
                token_set,
            } => Error::AuthRequired {
                repo: format!("datasets/{repo}"),
                status,
                gated,
                token_set,
            },
            Error::NotCached { .. } => Error::DatasetNotCached {
                dataset: dataset.to_string(),
                revision: dataset.revision().to_string(),
                cache: cache.display().to_string(),
            },
            Error::Corrupt { what, detail } => Error::Corrupt {
                what: dataset_path(&what),
                detail,
            },
            Error::Stalled {
                what,
                endpoint,
                seconds,
            } => Error::Stalled {
                what: dataset_path(&what),
                endpoint,
                seconds,
            },
            Error::UnsafeResponse {
                endpoint,
                what,
                field,
                value,
                reason,
            } => Error::UnsafeResponse {
                endpoint,
                what: dataset_path(&what),
                field,
                value,
                reason,
            },
            Error::TooLarge { what, size, limit } => Error::TooLarge {
                what: dataset_path(&what),
                size,
                limit,
            },
            Error::NoSpace {
                what,
                size,
                free,
                cache,
            } => Error::NoSpace {
                what: dataset_path(&what),
                size,
                free,
                cache,
            },
            e => e,
        }
    }
}

/// A model-worded Hub path (`hf://o/n@rev/file`, `hf://o/n@rev/` for the listing) as the
/// dataset's: `hf://datasets/o/n@rev/file`, `hf://datasets/o/n@rev`.
fn dataset_path(what: &str) -> String {
    what.replacen("hf://", "hf://datasets/", 1)
        .trim_end_matches('/')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        for (path, config, split) in [
            ("default/train/0000.parquet", "default", "train"),
            ("default/partial-train/0003.parquet", "default", "train"),
            ("plain_text/test/0000.parquet", "plain_text", "test"),
            (
                "default/utkface-validation.parquet",
                "default",
                "validation",
            ),
            ("data/train-00000-of-00002.parquet", "data", "train"),
            (
                "data/test-00000-of-00001-5f1c7e2a9b3d4c6e.parquet",
                "data",
                "test",
            ),
            ("test.parquet", "default", "test"),
        ] {
            assert_eq!(
                config_and_split(path),
                Some((config.to_string(), split.to_string())),
                "{path}"
            );
        }
        assert_eq!(config_and_split("README.md"), None);
    }

    #[test]
    fn selection_is_sorted_and_lists_what_exists() {
        let files: Vec<String> = [
            "default/train/0001.parquet",
            "default/test/0000.parquet",
            "default/train/0000.parquet",
            ".gitattributes",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            select(&files, "default", "train").unwrap(),
            ["default/train/0000.parquet", "default/train/0001.parquet"]
        );
        let e = select(&files, "default", "val").unwrap_err();
        assert_eq!(
            e,
            "config `default` split `test`, config `default` split `train`"
        );
        let pushed: Vec<String> = ["data/train-00000-of-00001.parquet".to_string()].to_vec();
        assert_eq!(select(&pushed, "default", "train").unwrap(), pushed);
    }

    #[test]
    fn dataset_ids() {
        let d: DatasetSpec = "hf://datasets/o/n@refs/pr/1".parse().unwrap();
        assert_eq!(d.revision(), "refs/pr/1");
        assert_eq!(
            d.file_name("a.parquet"),
            "hf://datasets/o/n@refs/pr/1/a.parquet"
        );
        for bad in ["o", "o/", "/n", "o/n@", "o/n@a b", "o/n@../x"] {
            let e = bad.parse::<DatasetSpec>().unwrap_err();
            assert!(matches!(e, Error::BadDataset { .. }), "{bad}: {e:?}");
        }
    }
}
