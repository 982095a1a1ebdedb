//! Predictions as the JSON `/v1/predict` answers with.

use ldl_train::{AxisEstimate, Prediction};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// An axis's name and unit, as each prediction names them.
#[derive(Debug, Clone)]
pub struct AxisLabel {
    /// The axis's name.
    pub name: String,
    /// Its unit (empty when it has none).
    pub unit: String,
}

/// `{"predictions": [...]}`: per prediction its axes (mean, std, mode and the mode's
/// probability, in the axis's unit; a categorical axis's mode is its class name, with no
/// mean or std), and with `pmf` each axis's distribution by axis name.
pub fn predictions_json<'a>(
    axes: &'a [AxisLabel],
    predictions: &[Prediction],
    pmf: bool,
) -> impl Serialize + 'a {
    #[derive(Serialize)]
    struct Answer<'a> {
        predictions: Vec<PredictionAnswer<'a>>,
    }
    Answer {
        predictions: predictions
            .iter()
            .map(|p| prediction_json(axes, p, pmf))
            .collect(),
    }
}

/// One axis of a prediction, its fields in the order clients read them.
#[derive(Serialize)]
struct AxisAnswer<'a> {
    axis: &'a str,
    unit: &'a str,
    mean: Option<f64>,
    std: Option<f64>,
    /// The most probable bin's centre, or on a categorical axis its class name.
    mode: Value,
    mode_probability: f64,
}

/// One prediction: its axes, and with `pmf` each axis's distribution by axis name.
#[derive(Serialize)]
struct PredictionAnswer<'a> {
    axes: Vec<AxisAnswer<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pmf: Option<Map<String, Value>>,
}

fn prediction_json<'a>(
    axes: &'a [AxisLabel],
    prediction: &Prediction,
    pmf: bool,
) -> PredictionAnswer<'a> {
    let estimates = axes
        .iter()
        .zip(&prediction.axes)
        .map(|(axis, estimate)| {
            let (mean, std, mode, mode_probability) = match estimate {
                AxisEstimate::Value(value) => (
                    Some(value.mean),
                    Some(value.std),
                    json!(value.mode),
                    value.mode_probability,
                ),
                AxisEstimate::Class(class) => (None, None, json!(class.name), class.probability),
            };
            AxisAnswer {
                axis: &axis.name,
                unit: &axis.unit,
                mean,
                std,
                mode,
                mode_probability,
            }
        })
        .collect();
    let pmf = pmf.then(|| {
        axes.iter()
            .zip(&prediction.distributions)
            .map(|(axis, q)| (axis.name.clone(), json!(q)))
            .collect()
    });
    PredictionAnswer {
        axes: estimates,
        pmf,
    }
}
