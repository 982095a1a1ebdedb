//! Config values spelled as one of a fixed set of names (`model.backbone = "mlp"`,
//! `data.format = "chalearn"`): parsed into an enum once, with an error that names the
//! key, suggests the nearest name and lists the valid ones.

use crate::suggest::suggestion;

/// An enum a config spells as one of a fixed set of names.
pub(crate) trait Keyword: Copy + PartialEq + 'static {
    /// The config key that holds it, for messages (`model.backbone`).
    const KEY: &'static str;
    /// What one value is called in messages (`backbone`).
    const WHAT: &'static str;
    /// Every value with its name, in the order messages list them.
    const NAMES: &'static [(&'static str, Self)];

    /// The name of `self` in a config.
    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, value)| *value == self)
            .map(|(name, _)| *name)
            .expect("NAMES lists every value")
    }

    /// The value named `text`, or a message naming the key and the valid names.
    fn parse(text: &str) -> Result<Self, String> {
        if let Some((_, value)) = Self::NAMES.iter().find(|(name, _)| *name == text) {
            return Ok(*value);
        }
        let names: Vec<&str> = Self::NAMES.iter().map(|(name, _)| *name).collect();
        Err(format!(
            "`{}`: unknown {} `{text}`{}; use one of {}",
            Self::KEY,
            Self::WHAT,
            suggestion(text, &names),
            names.join(", ")
        ))
    }
}

/// Implements `FromStr`, `Display`, and the `String` conversions serde's
/// `try_from`/`into` attributes use, from a type's [`Keyword`] impl.
macro_rules! keyword_conversions {
    ($type:ty) => {
        impl std::str::FromStr for $type {
            type Err = crate::error::Error;
            fn from_str(text: &str) -> crate::error::Result<Self> {
                <$type as crate::config::keyword::Keyword>::parse(text)
                    .map_err(crate::error::Error::Config)
            }
        }
        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(crate::config::keyword::Keyword::name(*self))
            }
        }
        impl TryFrom<String> for $type {
            type Error = String;
            fn try_from(text: String) -> std::result::Result<Self, String> {
                <$type as crate::config::keyword::Keyword>::parse(&text)
            }
        }
        impl From<$type> for String {
            fn from(value: $type) -> String {
                crate::config::keyword::Keyword::name(value).to_string()
            }
        }
    };
}
pub(crate) use keyword_conversions;
