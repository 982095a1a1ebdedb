//! `[loss]`: which loss, with the parameters of that loss only, and the loss it builds.
//!
//! A config file spells the section as a flat table (`kind = "dldl-v2"`, `lambda = 0.1`);
//! it is read into [`LossConfig`], an enum whose variants carry only their own
//! parameters. In a config a user writes, a parameter of another kind is refused unless it
//! holds its default value: it would have no effect. A saved config (a run folder's
//! `config.toml`, a checkpoint's header) is read with such parameters dropped by
//! [`drop_other_kinds`], since earlier versions wrote them out with whatever value `--set`
//! gave them, and the loss that trained the run never read them.
//!
//! | `kind` | parameters |
//! |---|---|
//! | `full-kl` (default) | `target_moments` |
//! | `full-kl-rel` | `target_moments` |
//! | `kl` | none |
//! | `dldl-v2` | `lambda` (1), `axis_lambda` (none), `target_moments` |
//! | `mean-variance` | `lambda_mean` (0.2), `lambda_variance` (0.05) |

use std::collections::BTreeMap;

use ldl_core::loss::{DldlV2, FullKl, FullKlRelative, Kl, Loss, MeanVariance, TargetMoments};
use ldl_core::LabelSpace;
use serde::{Deserialize, Serialize};

use super::keyword::{keyword_conversions, Keyword};
use crate::error::{Error, Result};

/// `[loss]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LossTable", into = "LossTable")]
pub enum LossConfig {
    /// The full-KL loss: KL of the distributions, of their normal approximations, and a
    /// smoothness KL (`full-kl`, the default).
    FullKl {
        /// Where the target's mean and variance come from.
        target_moments: TargetMoments,
    },
    /// The full-KL loss with its smoothness term measured against the target's own, which
    /// the target minimises (`full-kl-rel`).
    FullKlRelative {
        /// Where the target's mean and variance come from.
        target_moments: TargetMoments,
    },
    /// The KL divergence of the distributions alone (`kl`).
    Kl,
    /// DLDL-v2: KL plus λ times the L1 distance of the expectations (`dldl-v2`).
    DldlV2 {
        /// λ for every axis (default 1).
        lambda: f64,
        /// λ per axis, overriding `lambda`.
        axis_lambda: BTreeMap<String, f64>,
        /// Where the target's mean comes from.
        target_moments: TargetMoments,
    },
    /// The mean-variance loss (`mean-variance`).
    MeanVariance {
        /// λ1, the weight of the mean term (default 0.2).
        lambda_mean: f64,
        /// λ2, the weight of the variance term (default 0.05).
        lambda_variance: f64,
    },
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig::FullKl {
            target_moments: TargetMoments::Pmf,
        }
    }
}

/// `loss.kind`: the name of a [`LossConfig`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// `full-kl`.
    FullKl,
    /// `full-kl-rel`.
    FullKlRelative,
    /// `kl`.
    Kl,
    /// `dldl-v2`.
    DldlV2,
    /// `mean-variance`.
    MeanVariance,
}

impl Keyword for LossKind {
    const KEY: &'static str = "loss.kind";
    const WHAT: &'static str = "loss";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("full-kl", LossKind::FullKl),
        ("full-kl-rel", LossKind::FullKlRelative),
        ("kl", LossKind::Kl),
        ("dldl-v2", LossKind::DldlV2),
        ("mean-variance", LossKind::MeanVariance),
    ];
}
keyword_conversions!(LossKind);

/// `loss.target_moments`: `pmf` or `nominal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MomentsName(TargetMoments);

impl Keyword for MomentsName {
    const KEY: &'static str = "loss.target_moments";
    const WHAT: &'static str = "target moments";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("pmf", MomentsName(TargetMoments::Pmf)),
        ("nominal", MomentsName(TargetMoments::Nominal)),
    ];
}

impl LossConfig {
    /// The loss's name in a config (`full-kl`, `dldl-v2`, …).
    pub fn kind(&self) -> LossKind {
        match self {
            LossConfig::FullKl { .. } => LossKind::FullKl,
            LossConfig::FullKlRelative { .. } => LossKind::FullKlRelative,
            LossConfig::Kl => LossKind::Kl,
            LossConfig::DldlV2 { .. } => LossKind::DldlV2,
            LossConfig::MeanVariance { .. } => LossKind::MeanVariance,
        }
    }

    /// The loss of `kind` with its parameters at their defaults.
    pub fn of_kind(kind: LossKind) -> LossConfig {
        let defaults = LossTable::default();
        LossTable {
            kind: kind.to_string(),
            ..defaults
        }
        .try_into()
        .expect("the defaults of every kind are valid")
    }

    /// Where the target moments come from, for the kinds that read them.
    pub fn target_moments(&self) -> Option<TargetMoments> {
        match self {
            LossConfig::FullKl { target_moments }
            | LossConfig::FullKlRelative { target_moments }
            | LossConfig::DldlV2 { target_moments, .. } => Some(*target_moments),
            LossConfig::Kl | LossConfig::MeanVariance { .. } => None,
        }
    }

    /// The same loss with `moments` as its target moments (unchanged for the kinds that
    /// do not read them).
    pub fn with_target_moments(mut self, moments: TargetMoments) -> LossConfig {
        if let LossConfig::FullKl { target_moments }
        | LossConfig::FullKlRelative { target_moments }
        | LossConfig::DldlV2 { target_moments, .. } = &mut self
        {
            *target_moments = moments;
        }
        self
    }

    /// The loss itself, for the axes of `space`; an error names the key of a parameter
    /// the loss refuses, or an `axis_lambda` axis that is not in `space`.
    pub fn build(&self, space: &LabelSpace) -> Result<Box<dyn Loss>> {
        let bad = |key: &str, e: ldl_core::Error| Error::Config(format!("`loss.{key}`: {e}"));
        Ok(match self {
            LossConfig::FullKl { target_moments } => {
                Box::new(FullKl::default().with_target_moments(*target_moments))
            }
            LossConfig::FullKlRelative { target_moments } => {
                Box::new(FullKlRelative::default().with_target_moments(*target_moments))
            }
            LossConfig::Kl => Box::new(Kl),
            LossConfig::DldlV2 {
                lambda,
                axis_lambda,
                target_moments,
            } => {
                let mut loss = DldlV2::new(*lambda)
                    .map_err(|e| bad("lambda", e))?
                    .with_target_moments(*target_moments);
                for (axis, lambda) in axis_lambda {
                    if space.axis(axis).is_none() {
                        return Err(Error::Config(format!(
                            "`loss.axis_lambda.{axis}`: `{axis}` is not an axis of [task]"
                        )));
                    }
                    loss = loss
                        .with_axis_lambda(axis.clone(), *lambda)
                        .map_err(|e| bad("axis_lambda", e))?;
                }
                Box::new(loss)
            }
            LossConfig::MeanVariance {
                lambda_mean,
                lambda_variance,
            } => Box::new(
                MeanVariance::new(*lambda_mean, *lambda_variance)
                    .map_err(|e| bad("lambda_mean", e))?,
            ),
        })
    }
}

/// `[loss]` as a file spells it: every parameter of every kind, flat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LossTable {
    kind: String,
    lambda: f64,
    axis_lambda: BTreeMap<String, f64>,
    lambda_mean: f64,
    lambda_variance: f64,
    target_moments: String,
}

impl Default for LossTable {
    fn default() -> Self {
        LossTable {
            kind: "full-kl".into(),
            lambda: 1.0,
            axis_lambda: BTreeMap::new(),
            lambda_mean: 0.2,
            lambda_variance: 0.05,
            target_moments: "pmf".into(),
        }
    }
}

/// The parameters of `[loss]` other than `kind`, each with the kinds that read it.
const PARAMETER_READERS: [(&str, &[LossKind]); 5] = [
    ("lambda", &[LossKind::DldlV2]),
    ("axis_lambda", &[LossKind::DldlV2]),
    ("lambda_mean", &[LossKind::MeanVariance]),
    ("lambda_variance", &[LossKind::MeanVariance]),
    (
        "target_moments",
        &[LossKind::FullKl, LossKind::FullKlRelative, LossKind::DldlV2],
    ),
];

/// Removes from a saved config's `[loss]` table the parameters its `kind` does not read.
/// A table whose `kind` is no known loss is left as it is, for the reader to refuse.
pub(super) fn drop_other_kinds(loss: &mut toml::Table) {
    let kind = match loss.get("kind") {
        None => LossKind::FullKl,
        Some(toml::Value::String(name)) => match LossKind::parse(name) {
            Ok(kind) => kind,
            Err(_) => return,
        },
        Some(_) => return,
    };
    for (key, readers) in PARAMETER_READERS {
        if !readers.contains(&kind) {
            loss.remove(key);
        }
    }
}

impl TryFrom<LossTable> for LossConfig {
    type Error = String;

    fn try_from(table: LossTable) -> std::result::Result<Self, String> {
        let kind = LossKind::parse(&table.kind)?;
        let target_moments = MomentsName::parse(&table.target_moments)?.0;
        let defaults = LossTable::default();
        // Parameters another kind reads: refused when set to anything but their default.
        let set = |key: &str| match key {
            "lambda" => table.lambda != defaults.lambda,
            "axis_lambda" => table.axis_lambda != defaults.axis_lambda,
            "lambda_mean" => table.lambda_mean != defaults.lambda_mean,
            "lambda_variance" => table.lambda_variance != defaults.lambda_variance,
            _ => table.target_moments != defaults.target_moments,
        };
        let refused = PARAMETER_READERS
            .iter()
            .find(|(key, readers)| set(key) && !readers.contains(&kind))
            .map(|(key, readers)| {
                let owners: Vec<String> = readers.iter().map(|k| k.to_string()).collect();
                (*key, owners.join(" or "))
            });
        if let Some((key, owner)) = refused {
            return Err(format!(
                "`loss.{key}` is read only by {owner}, not by loss.kind = \"{kind}\": remove \
                 it or change loss.kind"
            ));
        }
        Ok(match kind {
            LossKind::FullKl => LossConfig::FullKl { target_moments },
            LossKind::FullKlRelative => LossConfig::FullKlRelative { target_moments },
            LossKind::Kl => LossConfig::Kl,
            LossKind::DldlV2 => LossConfig::DldlV2 {
                lambda: table.lambda,
                axis_lambda: table.axis_lambda,
                target_moments,
            },
            LossKind::MeanVariance => LossConfig::MeanVariance {
                lambda_mean: table.lambda_mean,
                lambda_variance: table.lambda_variance,
            },
        })
    }
}

impl From<LossConfig> for LossTable {
    /// Every key written, as earlier versions did, so that saved configs read back alike.
    fn from(config: LossConfig) -> LossTable {
        let defaults = LossTable::default();
        let moments = |m: TargetMoments| MomentsName(m).name().to_string();
        let kind = config.kind().to_string();
        match config {
            LossConfig::FullKl { target_moments }
            | LossConfig::FullKlRelative { target_moments } => LossTable {
                kind,
                target_moments: moments(target_moments),
                ..defaults
            },
            LossConfig::Kl => LossTable { kind, ..defaults },
            LossConfig::DldlV2 {
                lambda,
                axis_lambda,
                target_moments,
            } => LossTable {
                kind,
                lambda,
                axis_lambda,
                target_moments: moments(target_moments),
                ..defaults
            },
            LossConfig::MeanVariance {
                lambda_mean,
                lambda_variance,
            } => LossTable {
                kind,
                lambda_mean,
                lambda_variance,
                ..defaults
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<LossConfig, String> {
        toml::from_str::<LossConfig>(text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn a_flat_table_becomes_the_variant_of_its_kind() {
        assert_eq!(parse("").unwrap(), LossConfig::default());
        assert_eq!(
            parse("kind = \"dldl-v2\"\nlambda = 0.1\naxis_lambda = { yaw = 0.5 }").unwrap(),
            LossConfig::DldlV2 {
                lambda: 0.1,
                axis_lambda: [("yaw".to_string(), 0.5)].into(),
                target_moments: TargetMoments::Pmf,
            }
        );
        assert_eq!(
            parse("kind = \"full-kl\"\ntarget_moments = \"nominal\"").unwrap(),
            LossConfig::FullKl {
                target_moments: TargetMoments::Nominal
            }
        );
        assert_eq!(
            parse("kind = \"full-kl-rel\"\ntarget_moments = \"nominal\"").unwrap(),
            LossConfig::FullKlRelative {
                target_moments: TargetMoments::Nominal
            }
        );
    }

    #[test]
    fn a_parameter_of_another_kind_is_refused_unless_it_is_its_default() {
        let err = parse("kind = \"full-kl\"\nlambda = 0.1").unwrap_err();
        assert!(
            err.contains("`loss.lambda` is read only by dldl-v2, not by loss.kind = \"full-kl\""),
            "{err}"
        );
        let err = parse("kind = \"mean-variance\"\ntarget_moments = \"nominal\"").unwrap_err();
        assert!(err.contains("`loss.target_moments`"), "{err}");
        // A run folder of an earlier version writes every key at its default.
        let saved = "kind = \"kl\"\nlambda = 1.0\naxis_lambda = {}\nlambda_mean = 0.2\n\
                     lambda_variance = 0.05\ntarget_moments = \"pmf\"";
        assert_eq!(parse(saved).unwrap(), LossConfig::Kl);
    }

    #[test]
    fn unknown_names_get_the_nearest_suggested() {
        let err = parse("kind = \"dldl-v3\"").unwrap_err();
        assert!(
            err.contains("`loss.kind`: unknown loss `dldl-v3` (did you mean `dldl-v2`?)"),
            "{err}"
        );
        let err = parse("target_moments = \"nominl\"").unwrap_err();
        assert!(err.contains("did you mean `nominal`?"), "{err}");
    }

    #[test]
    fn every_variant_is_written_as_the_table_it_is_read_from() {
        for kind in [
            LossKind::FullKl,
            LossKind::FullKlRelative,
            LossKind::Kl,
            LossKind::DldlV2,
            LossKind::MeanVariance,
        ] {
            let config = LossConfig::of_kind(kind);
            let text = toml::to_string(&config).unwrap();
            assert_eq!(parse(&text).unwrap(), config, "{text}");
        }
    }
}
