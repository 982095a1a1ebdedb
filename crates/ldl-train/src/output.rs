//! Writing the files a run or a command produces: whole or not at all.

use std::path::Path;

use crate::error::{Error, Result};

/// Writes `path` whole or not at all ([`ldl_models::durable::write_atomically`]).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    ldl_models::durable::write_atomically(path, bytes).map_err(|e| Error::output(path, e))
}
