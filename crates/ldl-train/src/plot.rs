//! Training curves from `metrics.jsonl`, drawn with plotters as PNG and SVG:
//!
//! - `losses.{png,svg}`: one panel per loss component and axis (`age/ld`, `age/exp`,
//!   `age/smooth`, …), training (solid) and validation (dashed) over epochs;
//! - `mae.{png,svg}`: validation MAE per axis over epochs (accuracy on categorical axes).
//!
//! Several runs overlay in one figure, one colour per run. PNG text uses an embedded font
//! (DejaVu Sans), so no system fonts are needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use ldl_core::metrics::AxisReport;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::records::EpochRecord;
use crate::run_folder::RunFolder;

/// One run's curves, from the epoch records of its `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCurves {
    /// A name for legends: the run folder's name.
    pub name: String,
    /// Per loss component (`age/ld`): (epoch, training value).
    pub train_loss: BTreeMap<String, Vec<(f64, f64)>>,
    /// Per loss component: (epoch, validation value).
    pub validation_loss: BTreeMap<String, Vec<(f64, f64)>>,
    /// Per axis: (epoch, validation MAE), or accuracy on a categorical axis.
    pub validation_metric: BTreeMap<String, Vec<(f64, f64)>>,
    /// Per axis: "MAE (unit)" or "accuracy".
    pub metric_label: BTreeMap<String, String>,
    /// The axes in label-space order.
    pub axis_order: Vec<String>,
}

impl RunCurves {
    /// Reads the epoch records of the run folder `run_dir` ([`RunFolder::epochs`]).
    pub fn read(run_dir: &Path) -> Result<RunCurves> {
        let folder = RunFolder::new(run_dir);
        let epochs = folder.epochs()?;
        if epochs.is_empty() {
            return Err(Error::RunFolder {
                file: run_dir.join("metrics.jsonl").display().to_string(),
                line: None,
                problem: "no epochs recorded yet".into(),
                fix: "plot the run once its first epoch has finished".into(),
            });
        }
        Ok(RunCurves::from_epochs(folder.name(), &epochs))
    }

    /// The curves of the epoch records of a run named `name`.
    pub fn from_epochs(name: String, epochs: &[EpochRecord]) -> RunCurves {
        let mut curves = RunCurves {
            name,
            train_loss: BTreeMap::new(),
            validation_loss: BTreeMap::new(),
            validation_metric: BTreeMap::new(),
            metric_label: BTreeMap::new(),
            axis_order: Vec::new(),
        };
        let add = |into: &mut BTreeMap<String, Vec<(f64, f64)>>, key: &str, point| {
            into.entry(key.to_string()).or_default().push(point);
        };
        for record in epochs {
            let epoch = record.epoch as f64;
            for (part, &value) in &record.train.parts {
                add(&mut curves.train_loss, part, (epoch, value));
            }
            let Some(validation) = &record.validation else {
                continue;
            };
            for (part, &value) in &validation.loss.parts {
                add(&mut curves.validation_loss, part, (epoch, value));
            }
            for axis in &validation.metrics.axes {
                let Some((value, label)) = metric(axis) else {
                    continue;
                };
                add(&mut curves.validation_metric, &axis.axis, (epoch, value));
                curves.metric_label.insert(axis.axis.clone(), label);
                if !curves.axis_order.contains(&axis.axis) {
                    curves.axis_order.push(axis.axis.clone());
                }
            }
        }
        curves
    }
}

/// The curve of an axis: MAE (in its unit) on an ordered axis, accuracy on a
/// categorical one, with its y label.
fn metric(axis: &AxisReport) -> Option<(f64, String)> {
    match (axis.mae, axis.accuracy) {
        (Some(mae), _) if axis.unit.is_empty() => Some((mae, "MAE".to_string())),
        (Some(mae), _) => Some((mae, format!("MAE ({})", axis.unit))),
        (None, Some(accuracy)) => Some((accuracy, "accuracy".to_string())),
        (None, None) => None,
    }
}

/// Writes `losses.png`, `losses.svg`, `mae.png` and `mae.svg` for `runs` into `out_dir`,
/// returning the files written.
pub fn plot_runs(runs: &[RunCurves], out_dir: &Path) -> Result<Vec<PathBuf>> {
    if runs.is_empty() {
        return Err(Error::Usage("nothing to plot: no runs given".into()));
    }
    let metric_panels = panel_names(runs.iter().flat_map(|r| r.axis_order.iter()));
    let mut loss_panels = panel_names(runs.iter().flat_map(|r| r.train_loss.keys()));
    sort_loss_panels(&mut loss_panels, &metric_panels);
    let name = |run: &RunCurves, what: &str| {
        if runs.len() > 1 {
            format!("{} {what}", run.name)
        } else {
            what.to_string()
        }
    };
    let losses = |panel: &str| -> Vec<Series> {
        let mut series = Vec::new();
        for (r, run) in runs.iter().enumerate() {
            let colour = COLOURS[r % COLOURS.len()];
            if let Some(points) = run.train_loss.get(panel) {
                series.push(Series::new(name(run, "train"), points, colour, false));
            }
            if let Some(points) = run.validation_loss.get(panel) {
                series.push(Series::new(name(run, "validation"), points, colour, true));
            }
        }
        series
    };
    let metrics = |panel: &str| -> Vec<Series> {
        runs.iter()
            .enumerate()
            .filter_map(|(r, run)| {
                let points = run.validation_metric.get(panel)?;
                let colour = COLOURS[r % COLOURS.len()];
                Some(Series::new(name(run, "validation"), points, colour, false))
            })
            .collect()
    };
    let metric_label = |panel: &str| {
        runs.iter()
            .find_map(|r| r.metric_label.get(panel).cloned())
            .unwrap_or_default()
    };
    let mut written = write_figure(out_dir, "losses", &loss_panels, &|_| "nats".into(), &losses)?;
    written.extend(write_figure(
        out_dir,
        "mae",
        &metric_panels,
        &metric_label,
        &metrics,
    )?);
    Ok(written)
}

/// Writes `STEM.svg` and `STEM.png`: one panel per name, with its y label and lines.
/// Nothing is written for no panels.
fn write_figure<'s>(
    out_dir: &Path,
    stem: &str,
    panels: &[String],
    y_label: &dyn Fn(&str) -> String,
    series_of: &dyn Fn(&str) -> Vec<Series<'s>>,
) -> Result<Vec<PathBuf>> {
    if panels.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::output(out_dir, e))?;
    // Both backends measure text with it.
    register_font();
    let size = figure_size(panels.len());
    let svg = out_dir.join(format!("{stem}.svg"));
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        draw_panels(&root, panels, y_label, series_of)?;
        root.present().map_err(plot_error)?;
    }
    crate::output::write_atomically(&svg, text.as_bytes())?;
    let png = out_dir.join(format!("{stem}.png"));
    let mut pixels = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        draw_panels(&root, panels, y_label, series_of)?;
        root.present().map_err(plot_error)?;
    }
    let mut encoded = Vec::new();
    image::codecs::png::PngEncoder::new(&mut encoded)
        .write_image_rgb(&pixels, size)
        .map_err(|e| Error::output(&png, e))?;
    crate::output::write_atomically(&png, &encoded)?;
    Ok(vec![svg, png])
}

/// Mean ± std over the runs of each group (one loss trained with several seeds, say),
/// per validation loss component and per axis metric, drawn as a line with a band, one
/// colour per group: `losses.{png,svg}` and `mae.{png,svg}` in `out_dir`.
pub fn plot_groups(groups: &[(String, Vec<RunCurves>)], out_dir: &Path) -> Result<Vec<PathBuf>> {
    if groups.iter().all(|(_, runs)| runs.is_empty()) {
        return Err(Error::Usage("nothing to plot: no runs given".into()));
    }
    let aggregates: Vec<(String, Aggregate, Aggregate)> = groups
        .iter()
        .map(|(name, runs)| {
            (
                name.clone(),
                Aggregate::of(runs.iter().map(|r| &r.validation_loss)),
                Aggregate::of(runs.iter().map(|r| &r.validation_metric)),
            )
        })
        .collect();
    let all_runs: Vec<&RunCurves> = groups.iter().flat_map(|(_, runs)| runs).collect();
    let metric_panels = panel_names(all_runs.iter().flat_map(|r| r.axis_order.iter()));
    let mut loss_panels = panel_names(all_runs.iter().flat_map(|r| r.validation_loss.keys()));
    sort_loss_panels(&mut loss_panels, &metric_panels);
    let series = |panel: &str, metric: bool| -> Vec<Series> {
        aggregates
            .iter()
            .enumerate()
            .filter_map(|(g, (name, losses, metrics))| {
                let aggregate = if metric { metrics } else { losses };
                let (points, spread) = aggregate.curves.get(panel)?;
                Some(Series {
                    name: format!("{name} (n = {})", aggregate.runs),
                    points,
                    colour: COLOURS[g % COLOURS.len()],
                    dashed: false,
                    spread: Some(spread),
                })
            })
            .collect()
    };
    let metric_label = |panel: &str| {
        all_runs
            .iter()
            .find_map(|r| r.metric_label.get(panel).cloned())
            .unwrap_or_default()
    };
    let mut written = write_figure(
        out_dir,
        "losses",
        &loss_panels,
        &|_| "nats (validation)".into(),
        &|panel| series(panel, false),
    )?;
    written.extend(write_figure(
        out_dir,
        "mae",
        &metric_panels,
        &metric_label,
        &|panel| series(panel, true),
    )?);
    Ok(written)
}

fn draw_panels<'s, DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[String],
    y_label: &dyn Fn(&str) -> String,
    series_of: &dyn Fn(&str) -> Vec<Series<'s>>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(plot_error)?;
    let (rows, columns) = grid(panels.len());
    for (panel, area) in panels.iter().zip(root.split_evenly((rows, columns))) {
        draw_panel(&area, panel, &y_label(panel), &series_of(panel))?;
    }
    Ok(())
}

/// (epoch, mean) points and the std at each.
type MeanCurve = (Vec<(f64, f64)>, Vec<f64>);

/// Mean and std per epoch over runs, for every curve they share.
struct Aggregate {
    runs: usize,
    /// Per curve name.
    curves: BTreeMap<String, MeanCurve>,
}

impl Aggregate {
    fn of<'a>(runs: impl Iterator<Item = &'a BTreeMap<String, Vec<(f64, f64)>>>) -> Aggregate {
        let runs: Vec<_> = runs.collect();
        let mut curves = BTreeMap::new();
        let names: Vec<&String> = runs.iter().flat_map(|r| r.keys()).collect();
        for name in names {
            if curves.contains_key(name) {
                continue;
            }
            // Epochs every run recorded (validation can be every N epochs).
            let mut by_epoch: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for run in &runs {
                for &(epoch, value) in run.get(name).map(Vec::as_slice).unwrap_or(&[]) {
                    by_epoch.entry(epoch as u64).or_default().push(value);
                }
            }
            let (mut points, mut spread) = (Vec::new(), Vec::new());
            for (epoch, values) in by_epoch {
                if values.len() == runs.len() {
                    let stats = crate::records::MeanStd::of(&values);
                    points.push((epoch as f64, stats.mean));
                    spread.push(stats.std);
                }
            }
            curves.insert(name.clone(), (points, spread));
        }
        Aggregate {
            runs: runs.len(),
            curves,
        }
    }
}

/// Encodes RGB8 pixels (a small extension so the call site reads as one step).
trait WriteRgb {
    fn write_image_rgb(self, pixels: &[u8], size: (u32, u32)) -> image::ImageResult<()>;
}

impl<W: std::io::Write> WriteRgb for image::codecs::png::PngEncoder<W> {
    fn write_image_rgb(self, pixels: &[u8], (w, h): (u32, u32)) -> image::ImageResult<()> {
        use image::ImageEncoder;
        self.write_image(pixels, w, h, image::ExtendedColorType::Rgb8)
    }
}

/// Axes in label-space order, then each axis's components in the order the loss defines
/// them (`ld`, `exp`, `smooth`, then others).
fn sort_loss_panels(panels: &mut [String], axes: &[String]) {
    let rank = |panel: &String| {
        let (axis, component) = panel.split_once('/').unwrap_or((panel, ""));
        let axis_rank = axes.iter().position(|a| a == axis);
        let component_rank = ["ld", "exp", "smooth"].iter().position(|c| *c == component);
        (
            axis_rank.unwrap_or(usize::MAX),
            component_rank.unwrap_or(usize::MAX),
        )
    };
    panels.sort_by_key(rank);
}

/// Distinct names in first-seen order.
fn panel_names<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

const PANEL_WIDTH: u32 = 420;
const PANEL_HEIGHT: u32 = 300;

/// Up to three panels per row.
fn grid(panels: usize) -> (usize, usize) {
    let columns = panels.clamp(1, 3);
    (panels.div_ceil(columns), columns)
}

fn figure_size(panels: usize) -> (u32, u32) {
    let (rows, columns) = grid(panels);
    (PANEL_WIDTH * columns as u32, PANEL_HEIGHT * rows as u32)
}

fn plot_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> Error {
    Error::Numeric(format!("cannot draw the plot: {e}"))
}

/// Run colours: a colour-blind-safe palette (Okabe–Ito), cycled.
const COLOURS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font always parses; a failure would only leave PNG text blank.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("../assets/DejaVuSans.ttf"),
        );
    });
}

/// One line of a panel: its legend name, points, colour, whether it is dashed, and an
/// optional ± band (one std per point).
struct Series<'a> {
    name: String,
    points: &'a [(f64, f64)],
    colour: RGBColor,
    dashed: bool,
    spread: Option<&'a [f64]>,
}

impl<'a> Series<'a> {
    fn new(name: String, points: &'a [(f64, f64)], colour: RGBColor, dashed: bool) -> Self {
        Series {
            name,
            points,
            colour,
            dashed,
            spread: None,
        }
    }
}

/// The chart of one panel: epochs along x, values along y.
type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (x_max, y_min, y_max) = extent(series);
    let pad = ((y_max - y_min) * 0.05).max(1e-6);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(1.0..x_max.max(2.0), (y_min - pad)..(y_max + pad))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_label)
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 13))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(plot_error)?;
    for line in series {
        if let Some(spread) = line.spread {
            draw_band(&mut chart, line, spread)?;
        }
        draw_line(&mut chart, line)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// The last epoch and the lowest and highest finite values (± spread) of the lines;
/// (0, 1) for the values when there are none.
fn extent(series: &[Series]) -> (f64, f64, f64) {
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for line in series {
        for (i, &(x, y)) in line.points.iter().enumerate() {
            let spread = line.spread.map_or(0.0, |s| s[i]);
            if y.is_finite() && spread.is_finite() {
                x_max = x_max.max(x);
                y_min = y_min.min(y - spread);
                y_max = y_max.max(y + spread);
            }
        }
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    (x_max, y_min, y_max)
}

/// The ± std band of a line, filled: upper edge forward, lower edge back.
fn draw_band<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    line: &Series,
    spread: &[f64],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let upper = line
        .points
        .iter()
        .zip(spread)
        .map(|(&(x, y), s)| (x, y + s));
    let lower = line.points.iter().zip(spread).rev();
    let band: Vec<(f64, f64)> = upper
        .chain(lower.map(|(&(x, y), s)| (x, y - s)))
        .filter(|p| p.1.is_finite())
        .collect();
    chart
        .draw_series(std::iter::once(Polygon::new(
            band,
            line.colour.mix(0.2).filled(),
        )))
        .map_err(plot_error)?;
    Ok(())
}

/// A line through the finite points, solid or dashed, with its legend entry.
fn draw_line<DB: DrawingBackend>(chart: &mut Chart<'_, DB>, line: &Series) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let points: Vec<(f64, f64)> = line
        .points
        .iter()
        .copied()
        .filter(|p| p.1.is_finite())
        .collect();
    let style = ShapeStyle::from(line.colour).stroke_width(2);
    if line.dashed {
        chart
            .draw_series(DashedLineSeries::new(points, 6, 4, style))
            .map_err(plot_error)?
            .label(line.name.as_str())
            .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 18, y)], 4, 3, style));
    } else {
        chart
            .draw_series(LineSeries::new(points, style))
            .map_err(plot_error)?
            .label(line.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    }
    Ok(())
}
