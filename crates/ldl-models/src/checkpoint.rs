//! Checkpoints: every variable (weights and BatchNorm running statistics) in a
//! safetensors file, with the label space and the model configuration in its header, so
//! that the file alone rebuilds the model and decodes its outputs.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use ldl_core::files::{read_bounded, FileKind};
use ldl_core::LabelSpace;
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::model::{BackboneConfig, Model};

/// Header key marking an `ldl` checkpoint.
pub(crate) const FORMAT_KEY: &str = "format";
pub(crate) const FORMAT: &str = "ldl";
pub(crate) const VERSION_KEY: &str = "ldl.version";
pub(crate) const LABEL_SPACE_KEY: &str = "ldl.label_space";
pub(crate) const MODEL_KEY: &str = "ldl.model";

/// What a checkpoint says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointInfo {
    /// The label space the heads predict.
    pub label_space: LabelSpace,
    /// The backbone configuration.
    pub model: BackboneConfig,
    /// The version of `ldl-models` that wrote it.
    pub version: String,
    /// Further header entries written by the caller (e.g. the feature standardisation).
    pub extra: BTreeMap<String, String>,
}

impl Model {
    /// Writes every variable (weights and BatchNorm's running statistics) and the model's
    /// description (its label space and backbone) to `path`, a safetensors file that
    /// [`Model::load`] rebuilds the model from.
    ///
    /// The file is written next to its destination under a temporary name, flushed to
    /// disk and renamed into place ([`crate::durable::write_atomically`]), so a crash
    /// never leaves a half-written file under `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.save_with(path, &BTreeMap::new())
    }

    /// [`Model::save`] with further header entries (keys must not start with `ldl.` or be
    /// `format`), returned in [`CheckpointInfo::extra`] when read.
    pub fn save_with(
        &self,
        path: impl AsRef<Path>,
        extra: &BTreeMap<String, String>,
    ) -> Result<()> {
        save_checkpoint(path.as_ref(), self, extra, &HashMap::new())
    }

    /// [`Model::save_with`], except that each variable named in `earlier` is written with
    /// that value instead of the model's: a checkpoint assembled from several epochs
    /// (with [`Model::variables_by_head`], each head's weights from its own best epoch).
    /// A value whose shape or dtype differs from the variable's is refused.
    pub fn save_with_earlier(
        &self,
        path: impl AsRef<Path>,
        extra: &BTreeMap<String, String>,
        earlier: &HashMap<String, Tensor>,
    ) -> Result<()> {
        save_checkpoint(path.as_ref(), self, extra, earlier)
    }

    /// Rebuilds a model from a checkpoint written by [`Model::save`]: its label space and
    /// backbone from the header, its variables from the tensors, on `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Model> {
        Ok(Model::from_checkpoint(path.as_ref(), device)?.0)
    }
}

fn save_checkpoint(
    path: &Path,
    model: &Model,
    extra: &BTreeMap<String, String>,
    earlier: &HashMap<String, Tensor>,
) -> Result<()> {
    if let Some(key) = extra
        .keys()
        .find(|k| k.starts_with("ldl.") || *k == FORMAT_KEY)
    {
        return Err(Error::checkpoint(
            path,
            format!("header key `{key}` is reserved"),
        ));
    }
    let tensors: Vec<(String, Tensor)> = {
        let data = model
            .vars()
            .data()
            .lock()
            .map_err(|_| Error::checkpoint(path, "the variable map's lock is poisoned"))?;
        let mut named: Vec<(String, Tensor)> = data
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    };
    let known: std::collections::HashSet<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    if let Some(name) = earlier.keys().find(|name| !known.contains(name.as_str())) {
        return Err(Error::checkpoint(
            path,
            format!("the model has no variable `{name}` to take from an earlier epoch"),
        ));
    }
    let tensors = tensors
        .into_iter()
        .map(|(name, tensor)| match earlier.get(&name) {
            None => Ok((name, tensor)),
            Some(value) if value.shape() == tensor.shape() && value.dtype() == tensor.dtype() => {
                Ok((name, value.clone()))
            }
            Some(value) => Err(Error::checkpoint(
                path,
                format!(
                    "`{name}` from an earlier epoch is {:?} {:?}, the model's is {:?} {:?}",
                    value.dtype(),
                    value.dims(),
                    tensor.dtype(),
                    tensor.dims()
                ),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    let to_json = |what: &str, value: serde_json::Result<String>| {
        value.map_err(|e| Error::checkpoint(path, format!("cannot describe the {what}: {e}")))
    };
    let mut header = HashMap::from([
        (FORMAT_KEY.to_string(), FORMAT.to_string()),
        (
            VERSION_KEY.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            LABEL_SPACE_KEY.to_string(),
            to_json("label space", serde_json::to_string(model.label_space()))?,
        ),
        (
            MODEL_KEY.to_string(),
            to_json("model", serde_json::to_string(model.config()))?,
        ),
    ]);
    header.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(header))
        .map_err(|e| Error::checkpoint(path, format!("cannot serialise: {e}")))?;
    write_atomically(path, &bytes)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.file_name().is_none() {
        return Err(Error::checkpoint(path, "the path has no file name"));
    }
    crate::durable::write_atomically(path, bytes)
        .map_err(|e| Error::checkpoint(path, format!("cannot write: {e}")))
}

/// Reads a checkpoint's tensors (onto `device`) and its description.
pub fn read_checkpoint(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, CheckpointInfo)> {
    // A safetensors file is read whole; its header length is then checked against what
    // was read (and safetensors' own 100 MB bound) before the header is parsed.
    let bytes = read_bounded(path, FileKind::Checkpoint)?;
    let corrupt = |e: &dyn std::fmt::Display| {
        Error::checkpoint(
            path,
            format!("not a valid safetensors file ({e}); it may be truncated or corrupt"),
        )
    };
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(&e))?;
    let header = metadata.metadata().clone().unwrap_or_default();
    if header.get(FORMAT_KEY).map(String::as_str) != Some(FORMAT) {
        return Err(Error::checkpoint(
            path,
            "not an ldl checkpoint: its header lacks `format = ldl` (was it written by `ldl`?)",
        ));
    }
    let field = |key: &str| {
        header
            .get(key)
            .ok_or_else(|| Error::checkpoint(path, format!("the header lacks `{key}`")))
    };
    let label_space: LabelSpace = serde_json::from_str(field(LABEL_SPACE_KEY)?)
        .map_err(|e| Error::checkpoint(path, format!("invalid label space in the header: {e}")))?;
    let model: BackboneConfig = serde_json::from_str(field(MODEL_KEY)?)
        .map_err(|e| Error::checkpoint(path, format!("invalid model config in the header: {e}")))?;
    let version = field(VERSION_KEY)?.clone();
    let extra = header
        .iter()
        .filter(|(k, _)| !k.starts_with("ldl.") && k.as_str() != FORMAT_KEY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Read onto the CPU first: the values are checked there before any reaches `device`.
    let tensors =
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| corrupt(&e))?;
    if let Some(problem) = first_impossible_value(&tensors)? {
        return Err(Error::checkpoint(
            path,
            format!(
                "{problem}, which no trained model holds; the file is damaged or was not \
                 written by ldl: use another checkpoint, or train again"
            ),
        ));
    }
    let tensors = if device.is_cpu() {
        tensors
    } else {
        tensors
            .into_iter()
            .map(|(name, t)| Ok((name, t.to_device(device)?)))
            .collect::<Result<_>>()?
    };
    Ok((
        tensors,
        CheckpointInfo {
            label_space,
            model,
            version,
            extra,
        },
    ))
}

/// The first value, by tensor name, that a trained model cannot hold: a NaN or an infinity
/// anywhere (training stops before it saves one), or a negative BatchNorm running variance.
fn first_impossible_value(tensors: &HashMap<String, Tensor>) -> Result<Option<String>> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let values = tensors[name]
            .flatten_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()?;
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Ok(Some(format!("tensor `{name}` holds {bad}")));
        }
        if name.ends_with("running_var") {
            if let Some(bad) = values.iter().find(|v| **v < 0.0) {
                return Ok(Some(format!(
                    "tensor `{name}` holds the negative variance {bad}"
                )));
            }
        }
    }
    Ok(None)
}

/// Copies checkpoint tensors into the variables of a model, checking that both hold the
/// same names with the same shapes. A mismatch names the tensor and both shapes.
pub fn load_into(vars: &VarMap, tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| Error::checkpoint(path, "the variable map's lock is poisoned"))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in &names {
        let var = &data[*name];
        let tensor = tensors.get(*name).ok_or_else(|| {
            Error::checkpoint(
                path,
                format!("tensor `{name}` of the model is missing from the checkpoint"),
            )
        })?;
        if tensor.dims() != var.dims() {
            return Err(Error::checkpoint(
                path,
                format!(
                    "tensor `{name}` has shape {:?} in the checkpoint but {:?} in the model",
                    tensor.dims(),
                    var.dims()
                ),
            ));
        }
        var.set(&tensor.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    let mut extra: Vec<&String> = tensors.keys().filter(|n| !data.contains_key(*n)).collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(Error::checkpoint(
            path,
            format!(
                "the checkpoint has tensors the model lacks: {}",
                extra
                    .iter()
                    .take(5)
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(())
}

/// What [`load_matching`] did with each tensor.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InitReport {
    /// Model variables set from the checkpoint.
    pub loaded: Vec<String>,
    /// Model variables the checkpoint lacks (or whose head has another size), keeping their
    /// fresh initialisation.
    pub new: Vec<String>,
    /// Checkpoint tensors the model has no use for.
    pub skipped: Vec<String>,
}

/// Fine-tuning: sets every model variable that `tensors` holds under the same name and
/// shape, and reports what was loaded, newly initialised and skipped. Heads (`heads.*`,
/// in an ensemble `ensemble.<k>.heads.*`) whose shape differs (another number of bins)
/// stay new, and so does the linear path of a head that stays new (its weights tilt
/// along the bins of the axis it was trained on); any other shape mismatch is an error
/// naming the tensor and both shapes.
pub fn load_matching(
    vars: &VarMap,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<InitReport> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| Error::checkpoint(path, "the variable map's lock is poisoned"))?;
    let mut report = InitReport::default();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let loads = |name: &str| match (tensors.get(name), data.get(name)) {
        (Some(tensor), Some(var)) => tensor.dims() == var.dims(),
        _ => false,
    };
    for name in names {
        let var = &data[name];
        let head_is_new = crate::linear_path::head_weight_of(name).is_some_and(|h| !loads(&h));
        match tensors.get(name) {
            None => report.new.push(name.clone()),
            Some(_) if head_is_new => report.new.push(name.clone()),
            Some(tensor) if tensor.dims() != var.dims() => {
                if crate::network_local_name(name).starts_with("heads.") {
                    report.new.push(name.clone());
                } else {
                    return Err(Error::checkpoint(
                        path,
                        format!(
                            "tensor `{name}` has shape {:?} in the checkpoint but {:?} in the \
                             model; a backbone must match the one it was trained with",
                            tensor.dims(),
                            var.dims()
                        ),
                    ));
                }
            }
            Some(tensor) => {
                var.set(&tensor.to_dtype(var.dtype())?.to_device(var.device())?)?;
                report.loaded.push(name.clone());
            }
        }
    }
    report.skipped = tensors
        .keys()
        .filter(|n| !data.contains_key(*n))
        .cloned()
        .collect();
    report.skipped.sort();
    Ok(report)
}

impl Model {
    /// Rebuilds a model from a checkpoint alone, like [`Model::load`], and returns what
    /// its header says besides (the version that wrote it, further entries).
    pub fn from_checkpoint(path: &Path, device: &Device) -> Result<(Model, CheckpointInfo)> {
        let (tensors, info) = read_checkpoint(path, device)?;
        // The header describes the model; check it against the tensors before building
        // anything, so a forged header cannot make us allocate more than the file holds.
        let stored: u128 = tensors.values().map(|t| t.elem_count() as u128).sum();
        let described = info.model.stored_elements(&info.label_space);
        if described != stored {
            return Err(Error::checkpoint(
                path,
                format!(
                    "the header describes a model of {described} numbers but the file holds {stored}; \
                     the file is corrupt or was edited"
                ),
            ));
        }
        let model = Model::on_vars(&info.model, &info.label_space, 0, VarMap::new(), device)?;
        load_into(model.vars(), &tensors, path)?;
        Ok((model, info))
    }
}
