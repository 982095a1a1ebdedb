//! Choosing the device a model runs on.

use candle_core::Device;

use crate::error::{Error, Result};

/// Parses a device name: `cpu`, `cuda` (GPU 0), `cuda:N`, or `auto` (the first CUDA
/// GPU when built with the `cuda` feature and one is present, else the CPU).
///
/// ```
/// let cpu = ldl_models::device("cpu")?;
/// assert!(cpu.is_cpu());
/// assert!(ldl_models::device("auto").is_ok());
/// assert!(ldl_models::device("tpu").is_err());
/// # Ok::<(), ldl_models::Error>(())
/// ```
pub fn device(name: &str) -> Result<Device> {
    let name = name.trim();
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(if candle_core::utils::cuda_is_available() {
            cuda(0).unwrap_or(Device::Cpu)
        } else {
            Device::Cpu
        }),
        "cuda" => cuda(0),
        _ => match name.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(ordinal)) => cuda(ordinal),
            _ => Err(Error::Device(format!(
                "unknown device `{name}`; use `cpu`, `cuda`, `cuda:N` or `auto`"
            ))),
        },
    }
}

fn cuda(ordinal: usize) -> Result<Device> {
    if !candle_core::utils::cuda_is_available() {
        return Err(Error::Device(format!(
            "`cuda:{ordinal}` requested, but this build has no CUDA support; \
             rebuild with `--features cuda` or use `cpu`"
        )));
    }
    let device = Device::new_cuda(ordinal)
        .map_err(|e| Error::Device(format!("cannot open `cuda:{ordinal}`: {e}")))?;
    // As PyTorch's caching allocator: freed memory stays for the next step.
    crate::keep_freed_gpu_memory(&device)?;
    Ok(device)
}
