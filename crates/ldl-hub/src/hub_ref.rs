//! Parsing `hf://owner/name[@revision][/path/in/repo]` and `owner/name[@revision]`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::{DEFAULT_FILE, DEFAULT_REVISION, SCHEME};

/// A file in a model repository on the Hub: `hf://owner/name[@revision][/path/in/repo]`.
/// The revision defaults to `main`, the file to `model.safetensors`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HubRef {
    /// The user or organisation.
    pub owner: String,
    /// The repository name.
    pub name: String,
    /// A branch, tag or commit.
    pub revision: String,
    /// The path of the file in the repository.
    pub file: String,
}

/// A model repository at a revision: `owner/name[@revision]` (an `hf://` prefix is accepted).
/// The revision defaults to `main`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoSpec {
    /// The user or organisation.
    pub owner: String,
    /// The repository name.
    pub name: String,
    /// A branch, tag or commit.
    pub revision: String,
}

/// Why `part` is not a valid owner or repository name, if it is not.
pub(crate) fn name_problem(what: &str, part: &str) -> Option<String> {
    if part.is_empty() {
        return Some(format!("the {what} is empty"));
    }
    if part.len() > 96 {
        return Some(format!("the {what} is longer than 96 characters"));
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Some(format!(
            "the {what} `{part}` has `{c}`; use letters, digits, `-`, `_` and `.`"
        ));
    }
    if part.contains("..") || part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
        return Some(format!(
            "the {what} `{part}` starts or ends with `-` or `.`, or has `..`"
        ));
    }
    None
}

fn revision_problem(revision: &str) -> Option<String> {
    if revision.is_empty() {
        return Some("the revision after @ is empty".into());
    }
    if revision
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | '\\' | '/'))
    {
        return Some(format!(
            "the revision `{revision}` has a space, `/`, `\\` or `@`"
        ));
    }
    None
}

/// Splits `owner/name[@revision]`; `Err(reason)` when it is not one.
fn split_repo(text: &str) -> std::result::Result<(String, String, String), String> {
    let (owner, rest) = text
        .split_once('/')
        .ok_or_else(|| "it has no `/` between owner and name".to_string())?;
    let (name, revision) = match rest.split_once('@') {
        Some((name, revision)) => (name, Some(revision)),
        None => (rest, None),
    };
    if let Some(problem) = name_problem("owner", owner).or_else(|| name_problem("name", name)) {
        return Err(problem);
    }
    let revision = match revision {
        Some(r) => {
            if let Some(problem) = revision_problem(r) {
                return Err(problem);
            }
            r.to_string()
        }
        None => DEFAULT_REVISION.to_string(),
    };
    Ok((owner.to_string(), name.to_string(), revision))
}

impl HubRef {
    /// Parses `hf://owner/name[@revision][/path/in/repo]`.
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: String| Error::BadPath {
            input: input.to_string(),
            reason,
        };
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it does not start with hf://".into()))?;
        // owner / name[@revision] / file…
        let (owner, after_owner) = rest
            .split_once('/')
            .ok_or_else(|| bad("it has no `/` between owner and name".into()))?;
        let (repo_part, file) = match after_owner.split_once('/') {
            Some((repo, file)) => (repo, Some(file)),
            None => (after_owner, None),
        };
        let (owner, name, revision) = split_repo(&format!("{owner}/{repo_part}")).map_err(bad)?;
        let file = match file {
            None => DEFAULT_FILE.to_string(),
            Some(file) => {
                if file.is_empty() || file.ends_with('/') {
                    return Err(bad("the path in the repository is empty or a folder".into()));
                }
                if file.contains('\\')
                    || file
                        .split('/')
                        .any(|s| s.is_empty() || s == "." || s == "..")
                {
                    return Err(bad(format!(
                        "the path in the repository `{file}` has an empty, `.` or `..` part, or `\\`"
                    )));
                }
                file.to_string()
            }
        };
        Ok(HubRef {
            owner,
            name,
            revision,
            file,
        })
    }

    /// `owner/name`.
    pub fn repo_id(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// `owner/name`, with `@revision` unless it is `main`: what `ldl fetch` takes.
    pub fn repo_spec(&self) -> String {
        RepoSpec {
            owner: self.owner.clone(),
            name: self.name.clone(),
            revision: self.revision.clone(),
        }
        .to_string()
    }
}

impl FromStr for HubRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        HubRef::parse(s)
    }
}

impl fmt::Display for HubRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.owner, self.name)?;
        if self.revision != DEFAULT_REVISION {
            write!(f, "@{}", self.revision)?;
        }
        if self.file != DEFAULT_FILE {
            write!(f, "/{}", self.file)?;
        }
        Ok(())
    }
}

impl RepoSpec {
    /// Parses `owner/name[@revision]`, with or without a leading `hf://`.
    pub fn parse(input: &str) -> Result<Self> {
        let text = input.strip_prefix(SCHEME).unwrap_or(input);
        let (owner, name, revision) = split_repo(text).map_err(|reason| Error::BadRepo {
            input: input.to_string(),
            reason,
        })?;
        Ok(RepoSpec {
            owner,
            name,
            revision,
        })
    }

    /// `owner/name`.
    pub fn repo_id(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// The Hub path of `file` in this repository at this revision.
    pub fn file(&self, file: &str) -> HubRef {
        HubRef {
            owner: self.owner.clone(),
            name: self.name.clone(),
            revision: self.revision.clone(),
            file: file.to_string(),
        }
    }
}

impl FromStr for RepoSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        RepoSpec::parse(s)
    }
}

impl fmt::Display for RepoSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)?;
        if self.revision != DEFAULT_REVISION {
            write!(f, "@{}", self.revision)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> HubRef {
        HubRef::parse(s).unwrap()
    }

    #[test]
    fn defaults_and_parts() {
        let a = r("hf://ldl-rs/ages");
        assert_eq!(
            (&*a.owner, &*a.name, &*a.revision, &*a.file),
            ("ldl-rs", "ages", "main", "model.safetensors")
        );
        let b = r("hf://o/n@v1.2/sub/dir/weights.safetensors");
        assert_eq!(
            (&*b.revision, &*b.file),
            ("v1.2", "sub/dir/weights.safetensors")
        );
        let c = r("hf://o/n/ldl.toml");
        assert_eq!((&*c.revision, &*c.file), ("main", "ldl.toml"));
        assert_eq!(b.repo_id(), "o/n");
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "hf://o/n",
            "hf://o/n@dev",
            "hf://o/n/ldl.toml",
            "hf://o.x/n_y@0123456789abcdef0123456789abcdef01234567/a/b.bin",
        ] {
            assert_eq!(r(s).to_string(), s);
        }
        assert_eq!(r("hf://o/n@main/model.safetensors").to_string(), "hf://o/n");
    }

    #[test]
    fn errors_name_the_input_and_the_form() {
        for (input, why) in [
            ("o/n", "does not start with hf://"),
            ("hf://", "no `/`"),
            ("hf://ages", "no `/`"),
            ("hf:///n", "owner is empty"),
            ("hf://o/", "name is empty"),
            ("hf://o/n@", "revision after @ is empty"),
            ("hf://o/n@a b", "revision `a b`"),
            ("hf://o/n/", "empty or a folder"),
            ("hf://o/n/../x", "`..`"),
            ("hf://o/n//x", "empty"),
            ("hf://o w/n", "`o w` has ` `"),
            ("hf://-o/n", "starts or ends"),
        ] {
            let e = HubRef::parse(input).unwrap_err().to_string();
            assert!(e.contains(&format!("`{input}`")), "{e}");
            assert!(e.contains(why), "{input}: {e}");
            assert!(
                e.contains("hf://owner/name[@revision][/path/in/repo]"),
                "{e}"
            );
        }
    }

    #[test]
    fn repo_specs() {
        let s = RepoSpec::parse("ldl-rs/ages@v1").unwrap();
        assert_eq!(
            (&*s.owner, &*s.name, &*s.revision),
            ("ldl-rs", "ages", "v1")
        );
        assert_eq!(RepoSpec::parse("hf://o/n").unwrap().to_string(), "o/n");
        assert_eq!(s.to_string(), "ldl-rs/ages@v1");
        assert_eq!(
            s.file("ldl.toml").to_string(),
            "hf://ldl-rs/ages@v1/ldl.toml"
        );
        for input in ["ages", "o/n/x", "o/n@"] {
            let e = RepoSpec::parse(input).unwrap_err().to_string();
            assert!(e.contains(&format!("`{input}`")), "{e}");
            assert!(e.contains("owner/name[@revision]"), "{e}");
        }
    }
}
