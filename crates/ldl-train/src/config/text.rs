//! Config text: [`Config::load`] and [`Config::parse`] read a file, apply `--set
//! key=value` overrides, anchor relative paths at the file's folder, and check the
//! result; toml's messages come with the nearest valid key suggested.
//!
//! A config that `ldl` saved itself (a run folder's `config.toml`, a checkpoint's header)
//! is read with [`Config::load_saved`] and [`Config::parse_saved`]: the same checks, except
//! that loss parameters the loss kind does not read are dropped rather than refused, since
//! earlier versions saved them (see [`super::loss`]).

use std::path::Path;

use ldl_core::files::{read_text, FileKind, FileProblem};
use serde::de::DeserializeOwned;

use super::checked::Budget;
use super::loss::drop_other_kinds;
use super::{CheckedConfig, Config};
use crate::error::{Error, Result};
use crate::suggest::nearest;

impl Config {
    /// Reads and checks a config file, applying `key.path=value` overrides (as from
    /// `--set`). Relative data paths are resolved against the file's folder.
    pub fn load(path: &Path, overrides: &[String]) -> Result<CheckedConfig> {
        let text = read(path)?;
        Config::parse(path, &text, overrides)
    }

    /// Parses and checks config text; `path` names it in messages and anchors relative
    /// paths.
    pub fn parse(path: &Path, text: &str, overrides: &[String]) -> Result<CheckedConfig> {
        Config::parse_as(Author::User, path, text, overrides)
    }

    /// [`Config::load`] for a config `ldl` saved: a run folder's `config.toml`, read again
    /// to resume or inspect the run. The `overrides` are checked as a user's.
    pub fn load_saved(path: &Path, overrides: &[String]) -> Result<CheckedConfig> {
        let text = read(path)?;
        Config::parse_as(Author::Saved, path, &text, overrides)
    }

    /// [`Config::parse`] for a config `ldl` saved, such as a checkpoint's `train.config`.
    pub fn parse_saved(path: &Path, text: &str) -> Result<CheckedConfig> {
        Config::parse_as(Author::Saved, path, text, &[])
    }

    fn parse_as(
        author: Author,
        path: &Path,
        text: &str,
        overrides: &[String],
    ) -> Result<CheckedConfig> {
        let mut config: Config = parse(author, path, text, overrides)?;
        let folder = path.parent().unwrap_or(Path::new(""));
        config.data.resolve_paths(folder);
        if let Some(init) = &config.model.init_from {
            // `hf://owner/name` is a Hub path, not a file next to the config.
            let hub = init.to_str().is_some_and(ldl_hub::is_hub_path);
            if init.is_relative() && !hub {
                let joined = folder.join(init);
                config.model.init_from = Some(std::path::absolute(&joined).unwrap_or(joined));
            }
        }
        // A saved config is budgeted when a run trains on it (`trainer.rs`), not when
        // it is read to inspect a run or to predict.
        config.check_as(match author {
            Author::User => Budget::Check,
            Author::Saved => Budget::Skip,
        })
    }
}

/// The text of the config file at `path`.
pub(super) fn read(path: &Path) -> Result<String> {
    read_text(path, FileKind::Config).map_err(|e| {
        let reason = match e.problem {
            FileProblem::NotText => {
                "cannot read: not UTF-8 text; a config is a TOML text file".to_string()
            }
            problem => problem.to_string(),
        };
        Error::Config(format!("{}: {reason}", path.display()))
    })
}

/// Who wrote a config's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Author {
    /// A user: every key must have an effect.
    User,
    /// `ldl` itself, perhaps an earlier version: loss parameters of another loss kind are
    /// dropped.
    Saved,
}

/// `text` parsed, with `overrides` applied; `path` names it in messages.
fn parse<T: DeserializeOwned>(
    author: Author,
    path: &Path,
    text: &str,
    overrides: &[String],
) -> Result<T> {
    let at = |e: toml::de::Error| Error::Config(format!("{}: {}", path.display(), explain(&e)));
    if author == Author::User {
        // Parse the text as written first, so that errors point at its lines.
        let parsed: T = toml::from_str(text).map_err(at)?;
        if overrides.is_empty() {
            return Ok(parsed);
        }
    }
    let mut value: toml::Value = toml::from_str(text).map_err(at)?;
    if author == Author::Saved {
        if let Some(toml::Value::Table(loss)) = value.get_mut("loss") {
            drop_other_kinds(loss);
        }
        keep_earlier_defaults(&mut value);
    }
    if overrides.is_empty() {
        return value.try_into().map_err(at);
    }
    for assignment in overrides {
        apply_override(&mut value, assignment)?;
    }
    value.try_into().map_err(|e: toml::de::Error| {
        Error::Config(format!(
            "{} with --set {}: {}",
            path.display(),
            overrides.join(" "),
            explain(&e)
        ))
    })
}

/// Keys a config ldl saved before they existed trained without: read each missing one as
/// the behaviour the run had, so that it resumes and its checkpoint loads as it was
/// trained (new configs get today's defaults): `model.trunk` as `shared` (one MLP under
/// the heads), `model.head_init` as `uniform`, `model.linear_path` as false,
/// `data.feature_noise` as 0 (no noise) and `run.monitor` as `loss`.
fn keep_earlier_defaults(document: &mut toml::Value) {
    let Some(root) = document.as_table_mut() else {
        return;
    };
    let earlier = [
        ("model", "trunk", toml::Value::String("shared".into())),
        ("model", "head_init", toml::Value::String("uniform".into())),
        ("model", "linear_path", toml::Value::Boolean(false)),
        ("data", "feature_noise", toml::Value::Float(0.0)),
        ("run", "monitor", toml::Value::String("loss".into())),
    ];
    for (table, key, value) in earlier {
        let table = root
            .entry(table)
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let Some(table) = table.as_table_mut() {
            table.entry(key).or_insert(value);
        }
    }
}

/// Sets `a.b.c = value` in a TOML document; the value is read as TOML (`0.01`, `true`,
/// `[1, 2]`, `"text"`), or taken as a string if it does not parse.
fn apply_override(document: &mut toml::Value, assignment: &str) -> Result<()> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| {
        Error::Config(format!(
            "--set `{assignment}`: expected KEY=VALUE, e.g. optim.lr=0.01"
        ))
    })?;
    let key = key.trim();
    let value = match toml::from_str::<toml::Table>(&format!("v = {}", raw.trim())) {
        // One value and nothing after it: `0.01`, `[8, 4]`, `"text"`.
        Ok(mut table) => match (table.remove("v"), table.is_empty()) {
            (Some(value), true) => value,
            // More: a line break and further TOML after the value.
            _ => {
                return Err(Error::Config(format!(
                    "--set `{key}`: the value holds more than one TOML value (a line break \
                     and more after it); give one value, e.g. optim.lr=0.01"
                )))
            }
        },
        Err(_) if raw.contains(['\n', '\r']) => {
            return Err(Error::Config(format!(
                "--set `{key}`: the value holds a line break; give one value on one line"
            )))
        }
        Err(_) if looks_numeric(raw.trim()) => {
            return Err(Error::Config(format!(
                "--set `{key}`: `{}` is an integer too large for TOML (at most {}); give a \
                 smaller one",
                raw.trim(),
                i64::MAX
            )))
        }
        Err(_) => toml::Value::String(raw.trim().to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = document;
    for (i, part) in parts.iter().enumerate() {
        let table = node.as_table_mut().ok_or_else(|| {
            Error::Config(format!(
                "--set `{key}`: `{}` is not a table",
                parts[..i].join(".")
            ))
        })?;
        if i + 1 == parts.len() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        node = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    Err(Error::Config(format!("--set `{assignment}`: empty key")))
}

/// Whether `text` is written as an integer (`-12`, `1_000`) though TOML could not read it:
/// one too large for 64 bits, reported as such instead of becoming a string.
fn looks_numeric(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    digits.starts_with(|c: char| c.is_ascii_digit())
        && digits.chars().all(|c| c.is_ascii_digit() || c == '_')
}

/// The longest line of a config's text an error message shows: toml quotes the line of
/// the error, which in a damaged or generated file can be megabytes long.
const MAX_QUOTED_LINE: usize = 200;

/// `message` with every line longer than [`MAX_QUOTED_LINE`] characters cut there.
fn shorten_lines(message: &str) -> String {
    message
        .split('\n')
        .map(|line| match line.char_indices().nth(MAX_QUOTED_LINE) {
            Some((end, _)) => format!(
                "{}… ({} more characters)",
                &line[..end],
                line[end..].chars().count()
            ),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// toml's message, with the nearest valid key suggested for an unknown one.
fn explain(error: &toml::de::Error) -> String {
    let message = shorten_lines(&error.to_string());
    let Some(rest) = message.split("unknown field `").nth(1) else {
        return message;
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message;
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match nearest(unknown, &candidates) {
        Some(key) => format!("{}\nhint: did you mean `{key}`?", message.trim_end()),
        None => message,
    }
}
