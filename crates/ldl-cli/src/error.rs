//! Why an `ldl` command failed: one type over the libraries' errors and the command's
//! own, printed by `main` after `error: ` with exit status 1.

use std::fmt;
use std::path::PathBuf;

/// Why a command failed. Each message names what is at fault (the config key, the file
/// and line, the argument) and, where it helps, what to do.
#[derive(Debug)]
pub enum CliError {
    /// From training, evaluation, a run folder or a checkpoint: the library's message
    /// already names the config key, the file and line, or the sample.
    Train(ldl_train::Error),
    /// From the Hub (a download, an upload, a repository name).
    Hub(ldl_hub::Error),
    /// A file or folder the command itself reads or writes.
    File {
        /// The file or folder.
        path: PathBuf,
        /// What the command was doing with it (`write`, `list the folder`).
        action: &'static str,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The HTTP server could not start, or stopped with an error.
    Serve(ldl_serve::Error),
    /// Results that could not be written as JSON.
    Json(serde_json::Error),
    /// Arguments that do not fit together: the message says what to give instead.
    Usage(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Train(e) => e.fmt(f),
            CliError::Hub(e) => e.fmt(f),
            CliError::Serve(e) => e.fmt(f),
            CliError::File {
                path,
                action,
                source,
            } => write!(f, "{}: cannot {action}: {source}", path.display()),
            CliError::Json(e) => write!(f, "cannot write the results as JSON: {e}"),
            CliError::Usage(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Train(e) => Some(e),
            CliError::Hub(e) => Some(e),
            CliError::Serve(e) => Some(e),
            CliError::File { source, .. } => Some(source),
            CliError::Json(e) => Some(e),
            CliError::Usage(_) => None,
        }
    }
}

impl From<ldl_train::Error> for CliError {
    fn from(e: ldl_train::Error) -> Self {
        CliError::Train(e)
    }
}

impl From<ldl_hub::Error> for CliError {
    fn from(e: ldl_hub::Error) -> Self {
        CliError::Hub(e)
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        CliError::Json(e)
    }
}

impl CliError {
    /// A failure of `action` on `path`, as a `map_err` closure.
    pub fn file(
        path: impl Into<PathBuf>,
        action: &'static str,
    ) -> impl FnOnce(std::io::Error) -> CliError {
        let path = path.into();
        move |source| CliError::File {
            path,
            action,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_and_the_action() {
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = CliError::file("out/eval.json", "write")(missing);
        assert_eq!(err.to_string(), "out/eval.json: cannot write: no such file");
        let err = CliError::from(ldl_train::Error::Usage("give a run folder".into()));
        assert_eq!(err.to_string(), "give a run folder");
    }
}
