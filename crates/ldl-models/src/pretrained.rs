//! Starting weights from elsewhere: ldl checkpoints, and VGG-16-BN weights with
//! torchvision's key names (timm's `vgg16_bn.tv_in1k` on the Hugging Face Hub, or
//! torchvision's own `vgg16_bn` saved as safetensors), mapped into a width-2 backbone.
//!
//! The mapping (`docs/hub.md` has it as a table): VGG-16-BN's `features` list holds, per
//! convolution block, a convolution, a BatchNorm and a ReLU (three entries), and one entry
//! per max-pool. Our backbone numbers its stages by the layout `[c, c, M, 2c, 2c, M, …]`
//! (one entry per block or pool). So torchvision's `features.{t}.weight|bias` is our
//! `backbone.features.{i}.conv.weight|bias`, and `features.{t+1}.weight|bias|running_mean|
//! running_var` is our `backbone.features.{i}.bn.…`, with `t` counting three per earlier
//! block and one per earlier pool. `num_batches_tracked` and the classifier (`pre_logits.*`,
//! `head.*`, `classifier.*`) have no counterpart; the heads start fresh.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use ldl_core::files::{read_bounded, FileKind};

use crate::checkpoint::{load_matching, read_checkpoint, InitReport, FORMAT, FORMAT_KEY};
use crate::error::{Error, Result};
use crate::vgg::LAYOUT;

/// `(torchvision name, ldl name)` for every tensor of a VGG-16-BN backbone with conv
/// biases: 13 convolutions × (weight, bias) and 13 BatchNorms × (weight, bias,
/// running_mean, running_var), 78 entries in layout order.
///
/// ```
/// let table = ldl_models::vgg16_bn_key_map();
/// assert_eq!(table.len(), 78);
/// assert_eq!(table[0], ("features.0.weight".to_string(), "backbone.features.0.conv.weight".to_string()));
/// // The third block follows the first pool: torchvision's index 7, ours 3.
/// assert!(table.contains(&("features.8.running_var".to_string(), "backbone.features.3.bn.running_var".to_string())));
/// ```
pub fn vgg16_bn_key_map() -> Vec<(String, String)> {
    let mut table = Vec::new();
    let mut torchvision = 0;
    for (i, units) in LAYOUT.iter().enumerate() {
        if *units == 0 {
            torchvision += 1;
            continue;
        }
        for part in ["weight", "bias"] {
            table.push((
                format!("features.{torchvision}.{part}"),
                format!("backbone.features.{i}.conv.{part}"),
            ));
        }
        for part in ["weight", "bias", "running_mean", "running_var"] {
            table.push((
                format!("features.{}.{part}", torchvision + 1),
                format!("backbone.features.{i}.bn.{part}"),
            ));
        }
        torchvision += 3;
    }
    table
}

/// Fine-tuning from `path`: an ldl checkpoint (matching tensors by name, see
/// [`load_matching`]), or VGG-16-BN weights with torchvision's key names (timm's
/// `vgg16_bn.tv_in1k`), mapped by [`vgg16_bn_key_map`] into a backbone of `width = 2`
/// with conv biases. Reports what was loaded, newly initialised and skipped.
pub fn load_pretrained(vars: &VarMap, path: &Path, device: &Device) -> Result<InitReport> {
    let bytes = read_bounded(path, FileKind::Checkpoint)?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        Error::checkpoint(
            path,
            format!("not a valid safetensors file ({e}); it may be truncated or corrupt"),
        )
    })?;
    let is_ldl = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(FORMAT_KEY))
        .map(String::as_str)
        == Some(FORMAT);
    if is_ldl {
        drop(bytes);
        let (tensors, _) = read_checkpoint(path, device)?;
        check_network_counts(vars, &tensors, path)?;
        let report = load_matching(vars, &tensors, path)?;
        if !report
            .loaded
            .iter()
            .any(|name| crate::network_local_name(name).starts_with("backbone."))
        {
            // Fine-tuning from it would be training from scratch under another name.
            return Err(Error::checkpoint(
                path,
                "none of its backbone tensors has the name and shape of one of the model's, \
                 so nothing but perhaps a head bias would be loaded; it is a checkpoint of \
                 another backbone: set model.backbone (and width) to its own, or leave \
                 init_from out",
            ));
        }
        return Ok(report);
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| Error::checkpoint(path, format!("cannot read its tensors: {e}")))?;
    if !tensors.contains_key("features.0.weight") {
        return Err(Error::checkpoint(
            path,
            "neither an ldl checkpoint nor VGG-16-BN weights with torchvision's key names \
             (no `features.0.weight`); init_from takes those two",
        ));
    }
    let mapped = map_vgg16_bn(vars, tensors, path)?;
    let mut report = load_matching(vars, &mapped.tensors, path)?;
    report.skipped = mapped.skipped;
    Ok(report)
}

struct Mapped {
    tensors: HashMap<String, Tensor>,
    skipped: Vec<String>,
}

/// Renames torchvision's tensors to ours, checking that every one of the table is there
/// with the model's shape.
fn map_vgg16_bn(
    vars: &VarMap,
    mut tensors: HashMap<String, Tensor>,
    path: &Path,
) -> Result<Mapped> {
    let shapes: HashMap<String, Vec<usize>> = {
        let data = vars
            .data()
            .lock()
            .map_err(|_| Error::checkpoint(path, "the variable map's lock is poisoned"))?;
        data.iter()
            .map(|(name, var)| (name.clone(), var.dims().to_vec()))
            .collect()
    };
    let hint = "timm's vgg16_bn is VGG-16 with BatchNorm: set `model.backbone = \
                \"thin-age-net\"`, `model.width = 2` and `model.conv_bias = true`";
    let mut mapped = HashMap::new();
    for (source, target) in vgg16_bn_key_map() {
        let tensor = tensors.remove(&source).ok_or_else(|| {
            Error::checkpoint(
                path,
                format!("VGG-16-BN weights lack `{source}` (for `{target}`)"),
            )
        })?;
        let Some(shape) = shapes.get(&target) else {
            return Err(Error::checkpoint(
                path,
                format!("the model has no `{target}` for `{source}`; {hint}"),
            ));
        };
        if tensor.dims() != shape.as_slice() {
            return Err(Error::checkpoint(
                path,
                format!(
                    "`{source}` has shape {:?}, but `{target}` in the model has {:?}; {hint}",
                    tensor.dims(),
                    shape
                ),
            ));
        }
        mapped.insert(target, tensor);
    }
    let mut skipped: Vec<String> = tensors.into_keys().collect();
    skipped.sort();
    Ok(Mapped {
        tensors: mapped,
        skipped,
    })
}

/// Refuses fine-tuning between models of different numbers of networks (an ensemble and
/// one network, or ensembles of different sizes): their variables' names differ, so
/// nothing, or only some networks, would be loaded.
fn check_network_counts(
    vars: &VarMap,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    let model = {
        let data = vars
            .data()
            .lock()
            .map_err(|_| Error::checkpoint(path, "the variable map's lock is poisoned"))?;
        crate::ensemble::network_count(data.keys().map(String::as_str))
    };
    let checkpoint = crate::ensemble::network_count(tensors.keys().map(String::as_str));
    if model == checkpoint {
        return Ok(());
    }
    Err(Error::checkpoint(
        path,
        format!(
            "it holds {checkpoint} network(s) and the model {model} (model.ensemble); set \
             model.ensemble = {checkpoint} to fine-tune it, or leave init_from out"
        ),
    ))
}
