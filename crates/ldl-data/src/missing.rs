//! Feature cells without a value: how a table spells them, and what they become. Both the
//! table reader (which keeps such cells for the encoder) and the feature encoder (which
//! fills them or refuses them) need this, so it sits apart from both.

use serde::{Deserialize, Serialize};

/// What a feature cell without a value (empty, `NA`, `NaN`, a null) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// A bad row: an error naming the row and the column (the default).
    #[default]
    Error,
    /// The training split's mean of the column; for a categorical column, each
    /// category's share of the training rows (the mean of its one-hot columns).
    Mean,
}

/// Whether a cell's text means "no value": empty, `NA`, `N/A`, `NaN` or `null` (in any
/// case), as data-frame libraries write a missing value.
pub(crate) fn is_missing_text(text: &str) -> bool {
    let text = text.trim();
    text.is_empty()
        || ["na", "n/a", "nan", "null"]
            .iter()
            .any(|m| text.eq_ignore_ascii_case(m))
}
