//! Predictions as the JSON `/v1/predict` answers with.

use ldl_train::{AxisEstimate, Prediction};
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
pub fn predictions_json(axes: &[AxisLabel], predictions: &[Prediction], pmf: bool) -> Value {
    let predictions: Vec<Value> = predictions
        .iter()
        .map(|p| prediction_json(axes, p, pmf))
        .collect();
    json!({ "predictions": predictions })
}

fn prediction_json(axes: &[AxisLabel], prediction: &Prediction, pmf: bool) -> Value {
    let estimates: Vec<Value> = axes
        .iter()
        .zip(&prediction.axes)
        .map(|(axis, estimate)| match estimate {
            AxisEstimate::Value(value) => json!({
                "axis": axis.name,
                "unit": axis.unit,
                "mean": value.mean,
                "std": value.std,
                "mode": value.mode,
                "mode_probability": value.mode_probability,
            }),
            AxisEstimate::Class(class) => json!({
                "axis": axis.name,
                "unit": axis.unit,
                "mean": null,
                "std": null,
                "mode": class.name,
                "mode_probability": class.probability,
            }),
        })
        .collect();
    let mut object = Map::new();
    object.insert("axes".into(), Value::Array(estimates));
    if pmf {
        let distributions: Map<String, Value> = axes
            .iter()
            .zip(&prediction.distributions)
            .map(|(axis, q)| (axis.name.clone(), json!(q)))
            .collect();
        object.insert("pmf".into(), Value::Object(distributions));
    }
    Value::Object(object)
}
