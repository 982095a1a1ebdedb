//! The paper's protocol: each loss trained with each of N seeds from one config, then mean ±
//! std curves per loss and a results table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ldl_core::metrics::LdlMeasures;
use serde::{Deserialize, Serialize};

use crate::config::{Config, LossConfig, LossKind};
use crate::error::{Error, Result};
use crate::plot::{plot_groups, RunCurves};
use crate::records::{MeanStd, Progress, RunSummary};
use crate::run_folder::RunFolder;
use crate::stop::StopToken;
use crate::trainer::train;

/// One loss's results on one axis, over the seeds: MAE on ordered axes, accuracy on
/// categorical ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AxisResult {
    /// The axis.
    pub axis: String,
    /// `MAE (unit)` or `accuracy`.
    pub metric: String,
    /// The metric on the validation split at the last epoch.
    pub final_value: MeanStd,
    /// The metric on the validation split at the best epoch (`run.monitor`).
    pub best_value: MeanStd,
    /// The axis's best epoch: the run's, or with `run.monitor = "per-axis"` its own
    /// (absent from results written before it existed).
    #[serde(default)]
    pub best_epoch: Option<MeanStd>,
    /// ε-error at that epoch (ordered axes).
    pub best_epsilon_error: Option<MeanStd>,
    /// The metric on the test split for the best checkpoint, when there is a test split.
    pub test_value: Option<MeanStd>,
    /// The six LDL measures, on axes whose targets are explicit distributions.
    #[serde(default)]
    pub ldl: Option<LdlResult>,
}

/// The six LDL measures of one loss on one axis, over the seeds, beside the training-mean
/// distribution's (the same splits for every loss: they depend on the seed alone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LdlResult {
    /// On the validation split at the best epoch.
    pub best: LdlSpread,
    /// On the test split for the best checkpoint, when there is a test split.
    pub test: Option<LdlSpread>,
    /// The training-mean distribution's, on the validation split.
    pub mean_distribution: LdlSpread,
    /// The training-mean distribution's, on the test split.
    pub mean_distribution_test: Option<LdlSpread>,
}

/// Each of the six LDL measures as mean ± std over runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LdlSpread {
    /// Chebyshev distance (lower is better).
    pub chebyshev: MeanStd,
    /// Clark distance (lower is better).
    pub clark: MeanStd,
    /// Canberra distance (lower is better).
    pub canberra: MeanStd,
    /// Kullback-Leibler divergence (lower is better).
    pub kl_divergence: MeanStd,
    /// Cosine similarity (higher is better).
    pub cosine: MeanStd,
    /// Intersection similarity (higher is better).
    pub intersection: MeanStd,
}

impl LdlSpread {
    /// Of the runs' measures (`None` when some run has none).
    fn of(values: &[Option<LdlMeasures>]) -> Option<LdlSpread> {
        let values: Vec<LdlMeasures> = values.iter().copied().collect::<Option<_>>()?;
        let spread =
            |f: fn(&LdlMeasures) -> f64| MeanStd::of(&values.iter().map(f).collect::<Vec<_>>());
        Some(LdlSpread {
            chebyshev: spread(|m| m.chebyshev),
            clark: spread(|m| m.clark),
            canberra: spread(|m| m.canberra),
            kl_divergence: spread(|m| m.kl_divergence),
            cosine: spread(|m| m.cosine),
            intersection: spread(|m| m.intersection),
        })
    }

    fn cells(&self) -> String {
        [
            self.chebyshev,
            self.clark,
            self.canberra,
            self.kl_divergence,
            self.cosine,
            self.intersection,
        ]
        .iter()
        .map(|m| format!("{:.4} ± {:.4}", m.mean, m.std))
        .collect::<Vec<_>>()
        .join(" | ")
    }
}

/// Which tables `ldl compare` shows ([`Comparison::markdown_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompareColumns {
    /// Every table: the metrics, the six LDL measures when an axis has explicit target
    /// distributions, the loss components (the default, and `results.md`).
    #[default]
    All,
    /// MAE on ordered axes, accuracy on categorical ones, and the loss components.
    Metrics,
    /// The six LDL measures of the axes with explicit target distributions, beside the
    /// training-mean distribution's.
    Ldl,
}

/// One loss component's validation value at the last epoch, over the seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentResult {
    /// The log key (`age/exp`, `yaw+pitch/smooth`, `weight/l1`).
    pub key: String,
    /// Its unweighted value.
    pub final_value: MeanStd,
}

/// One loss's results over the seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossResult {
    /// The loss (`loss.kind`).
    pub loss: String,
    /// The best epoch (`run.monitor`; by default the lowest validation loss).
    pub best_epoch: MeanStd,
    /// Per ordered axis.
    pub axes: Vec<AxisResult>,
    /// Every validation loss component at the last epoch (unweighted, as logged), in
    /// key order: the scale of each term per axis.
    pub components: Vec<ComponentResult>,
    /// The run folders, one per seed.
    pub runs: Vec<PathBuf>,
}

/// What `ldl compare` wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The seeds every loss was trained with.
    pub seeds: Vec<u64>,
    /// Per loss.
    pub results: Vec<LossResult>,
    /// `results.md`, `results.json` and the plots.
    pub files: Vec<PathBuf>,
}

/// A loss of `ldl compare`: `kind`, or `dldl-v2:λ` for DLDL-v2 with that λ on every axis.
fn parse_loss_spec(spec: &str) -> Result<(LossKind, Option<f64>)> {
    let (kind, lambda) = match spec.split_once(':') {
        Some((kind, lambda)) => (kind, Some(lambda)),
        None => (spec, None),
    };
    let kind: LossKind = kind
        .parse()
        .map_err(|e| Error::Usage(format!("compare, loss `{spec}`: {e}")))?;
    let Some(lambda) = lambda else {
        return Ok((kind, None));
    };
    let value: f64 = lambda.parse().map_err(|_| {
        Error::Usage(format!(
            "compare, loss `{spec}`: `{lambda}` is not a number; write e.g. `dldl-v2:0.1`"
        ))
    })?;
    if kind != LossKind::DldlV2 {
        return Err(Error::Usage(format!(
            "compare, loss `{spec}`: only `dldl-v2:λ` takes a λ (the same on every axis)"
        )));
    }
    Ok((kind, Some(value)))
}

/// The `[loss]` of a comparison's variant: `kind`, with the base config's parameters
/// when it is the same kind and the base's target moments where both read them; `lambda`
/// (DLDL-v2's) on every axis when given.
fn variant_loss(base: &LossConfig, kind: LossKind, lambda: Option<f64>) -> LossConfig {
    let mut loss = if base.kind() == kind {
        base.clone()
    } else {
        LossConfig::of_kind(kind)
    };
    if let Some(moments) = base.target_moments() {
        loss = loss.with_target_moments(moments);
    }
    if let (
        LossConfig::DldlV2 {
            lambda: variant_lambda,
            axis_lambda,
            ..
        },
        Some(given),
    ) = (&mut loss, lambda)
    {
        *variant_lambda = given;
        axis_lambda.clear();
    }
    loss
}

/// Trains `config` with every loss in `losses` and `seeds` seeds (`run.seed`,
/// `run.seed + 1`, …), with runs in `out_dir/runs` (a finished run of the same config
/// found there is reused, so an interrupted comparison continues), and writes into `out_dir` the mean ± std
/// curves per loss (`losses.{png,svg}`: every validation loss component; `mae.{png,svg}`)
/// and the results table (`results.md`, `results.json`). `stop` ends the run in progress
/// as in [`crate::train`]; the comparison then returns its error.
pub fn compare(
    config: &Config,
    losses: &[String],
    seeds: usize,
    out_dir: &Path,
    stop: &StopToken,
    observe: &mut dyn FnMut(&str, Progress<'_>),
) -> Result<Comparison> {
    if losses.is_empty() || seeds == 0 {
        return Err(Error::Usage(
            "compare: give at least one loss and one seed".into(),
        ));
    }
    let seed_list: Vec<u64> = (0..seeds as u64).map(|i| config.run.seed + i).collect();
    // Every variant is checked before the first one trains for hours.
    let mut variants = Vec::new();
    for loss in losses {
        let (kind, lambda) = parse_loss_spec(loss)?;
        for &seed in &seed_list {
            let mut variant = config.clone();
            variant.loss = variant_loss(&config.loss, kind, lambda);
            variant.run.seed = seed;
            variant.run.output_dir = out_dir.join("runs");
            // `dldl-v2:0.1` → `dldl-v2-lambda0.1` in folder names.
            let folder = loss.replace(':', "-lambda");
            variant.task.name = format!("{}-{folder}-seed{seed}", config.task.name);
            let variant = variant
                .check()
                .map_err(|e| Error::Usage(format!("compare, loss `{loss}`: {e}")))?;
            variants.push((loss.clone(), variant));
        }
    }
    let mut summaries: BTreeMap<String, Vec<RunSummary>> = BTreeMap::new();
    for (loss, variant) in &variants {
        let label = format!("{loss} seed {}", variant.run.seed);
        // Rerunning an interrupted comparison trains only what is missing.
        let summary = match finished_run(variant)? {
            Some(summary) => summary,
            None => train(variant, stop, &mut |progress| observe(&label, progress))?,
        };
        summaries.entry(loss.clone()).or_default().push(summary);
    }
    let mut results = Vec::new();
    let mut groups = Vec::new();
    for loss in losses {
        let runs = &summaries[loss];
        let curves = runs
            .iter()
            .map(|r| RunCurves::read(&r.run_dir))
            .collect::<Result<Vec<_>>>()?;
        results.push(loss_result(loss, runs, &curves));
        groups.push((loss.clone(), curves));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::output(out_dir, e))?;
    let mut files = plot_groups(&groups, out_dir)?;
    let mut comparison = Comparison {
        seeds: seed_list,
        results,
        files: Vec::new(),
    };
    let md = out_dir.join("results.md");
    crate::output::write_atomically(&md, comparison.markdown(config).as_bytes())?;
    let json_path = out_dir.join("results.json");
    files.extend([md, json_path.clone()]);
    comparison.files = files;
    let json =
        serde_json::to_string_pretty(&comparison).map_err(|e| Error::output(&json_path, e))?;
    crate::output::write_atomically(&json_path, json.as_bytes())?;
    Ok(comparison)
}

/// A finished run of exactly this config in its output folder (`NAME-1`, `NAME-2`, …),
/// if there is one. A folder whose config differs, or that cannot be read as a config,
/// is another run; a summary that cannot be read is an error, since its folder would
/// otherwise be trained again beside it.
fn finished_run(config: &Config) -> Result<Option<RunSummary>> {
    let folders = (1..)
        .map(|n| {
            config
                .run
                .output_dir
                .join(format!("{}-{n}", config.task.name))
        })
        .take_while(|dir| dir.is_dir())
        .map(RunFolder::new);
    for folder in folders {
        if folder.config(&[]).ok().as_ref().map(|c| c.config()) != Some(config) {
            continue;
        }
        if let Some(summary) = folder.summary()? {
            if summary.run_dir == folder.dir() {
                return Ok(Some(summary));
            }
        }
    }
    Ok(None)
}

fn loss_result(loss: &str, runs: &[RunSummary], curves: &[RunCurves]) -> LossResult {
    let best_epoch = MeanStd::of(&runs.iter().map(|r| r.best_epoch as f64).collect::<Vec<_>>());
    let mut axes = Vec::new();
    for report in &runs[0].best_validation.metrics.axes {
        let name = &report.axis;
        let ordered = report.mae.is_some();
        let metric = |a: &ldl_core::metrics::AxisReport| if ordered { a.mae } else { a.accuracy };
        let collect = |f: &dyn Fn(&RunSummary) -> Option<f64>| -> Vec<f64> {
            runs.iter().filter_map(f).collect()
        };
        let best = |r: &RunSummary| r.best_validation.metrics.axis(name).and_then(metric);
        let epsilon = |r: &RunSummary| {
            r.best_validation
                .metrics
                .axis(name)
                .and_then(|a| a.epsilon_error)
        };
        let test = |r: &RunSummary| {
            r.test
                .as_ref()
                .and_then(|t| t.metrics.axis(name))
                .and_then(metric)
        };
        let finals: Vec<f64> = curves
            .iter()
            .filter_map(|c| c.validation_metric.get(name)?.last().map(|p| p.1))
            .collect();
        let tests = collect(&test);
        let epsilons = collect(&epsilon);
        let epochs: Vec<f64> = runs
            .iter()
            .map(|r| *r.best_epochs.get(name).unwrap_or(&r.best_epoch) as f64)
            .collect();
        axes.push(AxisResult {
            axis: name.clone(),
            metric: if ordered {
                format!("MAE ({})", report.unit)
            } else {
                "accuracy".into()
            },
            final_value: MeanStd::of(&finals),
            best_value: MeanStd::of(&collect(&best)),
            best_epoch: Some(MeanStd::of(&epochs)),
            best_epsilon_error: (ordered && epsilons.len() == runs.len())
                .then(|| MeanStd::of(&epsilons)),
            test_value: (tests.len() == runs.len()).then(|| MeanStd::of(&tests)),
            ldl: ldl_result(name, runs),
        });
    }
    let mut keys: Vec<&String> = curves
        .iter()
        .flat_map(|c| c.validation_loss.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let components = keys
        .into_iter()
        .map(|key| {
            let finals: Vec<f64> = curves
                .iter()
                .filter_map(|c| c.validation_loss.get(key)?.last().map(|p| p.1))
                .collect();
            ComponentResult {
                key: key.clone(),
                final_value: MeanStd::of(&finals),
            }
        })
        .collect();
    LossResult {
        loss: loss.to_string(),
        best_epoch,
        axes,
        components,
        runs: runs.iter().map(|r| r.run_dir.clone()).collect(),
    }
}

/// The six LDL measures of axis `name` over the runs, when its targets are explicit
/// distributions (the runs then hold its training-mean distribution).
fn ldl_result(name: &str, runs: &[RunSummary]) -> Option<LdlResult> {
    let baselines: Vec<&crate::records::MeanDistribution> = runs
        .iter()
        .map(|r| r.mean_distribution.iter().find(|m| m.axis == name))
        .collect::<Option<_>>()?;
    let best: Vec<Option<LdlMeasures>> = runs
        .iter()
        .map(|r| r.best_validation.metrics.axis(name).map(|a| a.ldl))
        .collect();
    let test: Vec<Option<LdlMeasures>> = runs
        .iter()
        .map(|r| r.test.as_ref()?.metrics.axis(name).map(|a| a.ldl))
        .collect();
    let mean_validation: Vec<Option<LdlMeasures>> =
        baselines.iter().map(|b| Some(b.validation)).collect();
    let mean_test: Vec<Option<LdlMeasures>> = baselines.iter().map(|b| b.test).collect();
    Some(LdlResult {
        best: LdlSpread::of(&best)?,
        test: LdlSpread::of(&test),
        mean_distribution: LdlSpread::of(&mean_validation)?,
        mean_distribution_test: LdlSpread::of(&mean_test),
    })
}

impl Comparison {
    /// The results table of `results.md` for a comparison of `config`: per loss and
    /// axis the final, best and test values, the six LDL measures on axes of explicit
    /// target distributions, then the validation loss components.
    pub fn markdown(&self, config: &Config) -> String {
        self.markdown_of(config, CompareColumns::All)
    }

    /// The tables `columns` chooses, under the title.
    pub fn markdown_of(&self, config: &Config, columns: CompareColumns) -> String {
        let mut out = title(config, &self.seeds);
        if columns != CompareColumns::Ldl {
            out.push_str(&axes_table(&self.results));
        }
        let has_ldl = self
            .results
            .iter()
            .flat_map(|r| &r.axes)
            .any(|a| a.ldl.is_some());
        match (columns, has_ldl) {
            (CompareColumns::Metrics, _) | (CompareColumns::All, false) => {}
            (_, true) => out.push_str(&ldl_table(&self.results)),
            (CompareColumns::Ldl, false) => out.push_str(
                "No axis has explicit target distributions: the six LDL measures are shown \
                 for axes labelled by `distribution = [...]` columns.\n",
            ),
        }
        if columns != CompareColumns::Ldl {
            out.push_str(&components_table(&self.results));
        }
        out
    }
}

/// Per loss and axis of explicit target distributions: the six LDL measures at the best
/// epoch (validation) and on the test split, then the training-mean distribution's.
fn ldl_table(results: &[LossResult]) -> String {
    let mut out = String::from(
        "\nThe six LDL measures on axes with explicit target distributions (Chebyshev, Clark, \
         Canberra and KL lower is better; cosine and intersection higher), beside always \
         predicting the training split's mean distribution:\n\n| loss | axis | split | \
         Chebyshev | Clark | Canberra | KL | cosine | intersection |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut row = |loss: &str, axis: &str, split: &str, spread: &LdlSpread| {
        out.push_str(&format!(
            "| {loss} | {axis} | {split} | {} |\n",
            spread.cells()
        ));
    };
    for result in results {
        for axis in &result.axes {
            let Some(ldl) = &axis.ldl else { continue };
            row(&result.loss, &axis.axis, "validation (best)", &ldl.best);
            if let Some(test) = &ldl.test {
                row(&result.loss, &axis.axis, "test", test);
            }
        }
    }
    // The baseline depends on the splits alone, which every loss shares.
    for axis in results.first().map_or(&[][..], |r| &r.axes) {
        let Some(ldl) = &axis.ldl else { continue };
        let name = "training-mean distribution";
        row(name, &axis.axis, "validation", &ldl.mean_distribution);
        if let Some(test) = &ldl.mean_distribution_test {
            row(name, &axis.axis, "test", test);
        }
    }
    out
}

/// The heading and what the table's numbers are.
fn title(config: &Config, seeds: &[u64]) -> String {
    let best = config.run.monitor();
    format!(
        "# {}: losses compared over seeds {}\n\nMean ± std over the seeds. Each metric on the \
         validation split at the last epoch (final) and at the best epoch ({best}), with its \
         ε-error; the test split's for the best checkpoint.\n\n",
        config.task.name,
        seeds
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Per loss and axis: the metric at the last and the best epoch, the test split's.
fn axes_table(results: &[LossResult]) -> String {
    let mut out = String::from(
        "| loss | axis | metric | final | best | ε-error (best) | test | best epoch |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    let or_dash = |v: Option<MeanStd>| v.map(|m| m.to_string()).unwrap_or_else(|| "–".into());
    for result in results {
        for axis in &result.axes {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                result.loss,
                axis.axis,
                axis.metric,
                axis.final_value,
                axis.best_value,
                or_dash(axis.best_epsilon_error),
                or_dash(axis.test_value),
                or_dash(axis.best_epoch),
            ));
        }
    }
    out
}

/// Per loss, every validation loss component at the last epoch.
fn components_table(results: &[LossResult]) -> String {
    let mut out = String::from(
        "\nValidation loss components at the last epoch (unweighted, in nats; DLDL-v2's `l1` \
         is in the axis unit and enters the total multiplied by λ):\n\n| loss | component | \
         final |\n|---|---|---|\n",
    );
    for result in results {
        for component in &result.components {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                result.loss, component.key, component.final_value
            ));
        }
    }
    out
}
