//! Loading CUDA kernels written in CUDA C and shipped as source (builds with `cuda`).
//!
//! ldl's crates keep their kernels as `.cu` files next to the Rust that launches them.
//! Each source is compiled once per process with NVRTC (linked by candle's CUDA backend
//! already), to PTX for the oldest architecture the toolkit supports; the driver turns
//! that PTX into code for the GPU at hand when a device loads the module. Compiling at
//! run time keeps the build free of a second nvcc step.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaStream, CudaView, DeviceRepr, LaunchArgs, LaunchConfig,
};
use candle_core::cuda_backend::{CudaDType, CudaDevice};
use candle_core::{CudaStorage, Layout};

/// Threads per block of ldl's kernels (their block reductions assume it: `BLOCK` in the
/// sources).
pub const BLOCK: u32 = 256;

/// The PTX of `source`, compiled on the first request for `module`; the error names it.
fn ptx(module: &'static str, source: &'static str) -> candle_core::Result<&'static str> {
    static COMPILED: OnceLock<Mutex<HashMap<&'static str, Result<&'static str, String>>>> =
        OnceLock::new();
    let mut compiled = COMPILED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let entry = compiled.entry(module).or_insert_with(|| {
        candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(source)
            // Leaked once per module and process: the PTX lives as long as the kernels.
            .map(|ptx| &*Box::leak(ptx.to_src().into_boxed_str()))
            .map_err(|e| format!("NVRTC could not compile the CUDA kernels of {module}: {e}"))
    });
    entry.clone().map_err(candle_core::Error::Msg)
}

/// A loaded kernel, launched on its device's stream (candle's, so it is ordered with
/// candle's own work).
pub struct Kernel {
    function: CudaFunction,
    stream: Arc<CudaStream>,
}

impl Kernel {
    /// A launch to which the kernel's arguments are pushed in order.
    pub fn builder(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.function)
    }
}

/// The kernel `name` of the CUDA C `source` known as `module`, loaded on `device`.
pub fn kernel(
    device: &CudaDevice,
    module: &'static str,
    source: &'static str,
    name: &str,
) -> candle_core::Result<Kernel> {
    let function = device
        .get_or_load_custom_func(name, module, ptx(module, source)?)?
        .into_cuda_function();
    Ok(Kernel {
        function,
        stream: device.cuda_stream(),
    })
}

/// A grid-stride launch over `n` elements in blocks of [`BLOCK`] threads.
pub fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The device data of a contiguous CUDA storage, from its layout's start.
pub fn view<'a, T: CudaDType + DeviceRepr>(
    storage: &'a CudaStorage,
    layout: &Layout,
) -> candle_core::Result<CudaView<'a, T>> {
    if !layout.is_contiguous() {
        candle_core::bail!("ldl's CUDA kernels need contiguous inputs");
    }
    Ok(storage.as_cuda_slice::<T>()?.slice(layout.start_offset()..))
}
