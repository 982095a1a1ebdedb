//! 3×3 (and any square-kernel, stride-1) convolutions on CUDA through cuDNN: the forward
//! pass, the input gradient and the kernel gradient.
//!
//! Why this exists: candle 0.11's CUDA convolution runs the forward pass through cuDNN
//! (with its `cudnn` feature) but differentiates it with two slow detours: the input
//! gradient is `conv_transpose2d`, a direct kernel without tensor cores, and the kernel
//! gradient is a forward convolution with the batch as channels, after two transposes of
//! the activations. Here each pass is the cuDNN routine made for it
//! (`cudnnConvolutionForward`, `…BackwardData`, `…BackwardFilter`), in f32, bf16 or f16,
//! and the input gradient is skipped when the input is data (the first layer).
//!
//! | pass | cuDNN routine | inputs → output |
//! |---|---|---|
//! | forward | `ConvolutionForward` | x, w → y |
//! | input gradient | `ConvolutionBackwardData` | dy, w → dx |
//! | kernel gradient | `ConvolutionBackwardFilter` | x, dy → dw |
//!
//! Algorithms come from cuDNN's heuristics (`cudnnGet…Algorithm_v7`, as PyTorch with
//! `cudnn.benchmark = False`), asked once per shape and dtype and remembered with the
//! shape's descriptors. The heuristics rank every algorithm and say which are
//! deterministic; some gradient algorithms add partial sums with atomics, so that their
//! results change from run to run in the last bits. ldl takes the best-ranked
//! deterministic one, so that a seed decides a run on the GPU as on the CPU.
//! f32 convolutions use cuDNN's default math, which allows TF32 tensor cores on Ampere and
//! newer GPUs (PyTorch's default for cuDNN convolutions too); bf16 and f16 accumulate in
//! f32 on tensor cores (`CUDNN_TENSOR_OP_MATH`, as PyTorch sets it: with the default math
//! cuDNN ran ThinAgeNet's bf16 step 7× slower than its f32 step on an H200).
//!
//! The environment variable `LDL_CUDNN` chooses, for comparisons: `0` candle's own CUDA
//! convolution, `fast` the best-ranked algorithm even where it is not deterministic
//! (PyTorch's default), anything else (or unset) the deterministic choice above.
//!
//! cudarc's safe cuDNN wrappers keep their raw handles private and pick only the
//! heuristics' first algorithm, so this module calls cuDNN's C API (through cudarc's
//! `result` and `sys` bindings) with descriptors it owns.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::{result, sys, CudnnError};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, CudaDevice, DeviceId};
use candle_core::{CpuStorage, CudaStorage, CustomOp2, DType, Layout, Shape, Tensor};
use half::{bf16, f16};

use sys::{
    cudnnConvolutionBwdDataAlgo_t as DataAlgo, cudnnConvolutionBwdFilterAlgo_t as FilterAlgo,
    cudnnConvolutionFwdAlgo_t as ForwardAlgo, cudnnConvolutionMode_t, cudnnDataType_t,
    cudnnTensorFormat_t,
};

/// Whether `conv2d(x, w, padding)` runs here: CUDA tensors of one float dtype cuDNN
/// computes, a square kernel larger than the padding, and `LDL_CUDNN` not set to `0`.
pub(crate) fn handles(x: &Tensor, w: &Tensor, padding: usize) -> bool {
    let square_kernel = matches!(w.dims(), [_, _, kh, kw] if kh == kw && padding < *kh);
    x.device().is_cuda()
        && x.rank() == 4
        && square_kernel
        && x.dtype() == w.dtype()
        && matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16)
        && x.elem_count() > 0
        && w.elem_count() > 0
        && enabled()
}

/// How convolutions run on CUDA, from `LDL_CUDNN` (read once per process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// candle's own convolution (`LDL_CUDNN=0`).
    Off,
    /// cuDNN with deterministic gradient algorithms (the default).
    Deterministic,
    /// cuDNN's first suggestion, deterministic or not (`LDL_CUDNN=fast`).
    Fast,
}

fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(
        || match std::env::var("LDL_CUDNN").as_deref().map(str::trim) {
            Ok("0") => Mode::Off,
            Ok("fast") => Mode::Fast,
            _ => Mode::Deterministic,
        },
    )
}

fn enabled() -> bool {
    mode() != Mode::Off
}

/// `x (N, C, H, W) ⋆ w (K, C, k, k)` with `padding` zeros on each side, stride 1.
pub(crate) fn conv2d(x: &Tensor, w: &Tensor, padding: usize) -> candle_core::Result<Tensor> {
    let geometry = Geometry::of(x.dims(), w.dims(), padding)?;
    x.contiguous()?
        .apply_op2(&w.contiguous()?, Pass::Forward.op(geometry))
}

/// Every size of one convolution (stride and dilation are 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Geometry {
    batch: usize,
    in_channels: usize,
    height: usize,
    width: usize,
    out_channels: usize,
    kernel: usize,
    padding: usize,
}

impl Geometry {
    fn of(x: &[usize], w: &[usize], padding: usize) -> candle_core::Result<Geometry> {
        let (&[batch, in_channels, height, width], &[out_channels, w_in, kernel, _]) = (x, w)
        else {
            candle_core::bail!(
                "conv2d expects (N, C, H, W) input and (K, C, k, k) kernels, got {x:?} and {w:?}"
            )
        };
        if w_in != in_channels {
            candle_core::bail!("conv2d: input has {in_channels} channels, kernels expect {w_in}");
        }
        if height + 2 * padding < kernel || width + 2 * padding < kernel {
            candle_core::bail!(
                "conv2d: a {kernel}×{kernel} kernel does not fit a {height}×{width} input padded by {padding}"
            );
        }
        let geometry = Geometry {
            batch,
            in_channels,
            height,
            width,
            out_channels,
            kernel,
            padding,
        };
        // cuDNN's descriptors take `int` sizes and counts.
        let largest = [
            geometry.input_shape().elem_count(),
            geometry.output_shape().elem_count(),
            geometry.kernel_shape().elem_count(),
        ];
        if largest.iter().any(|&n| n > i32::MAX as usize) {
            candle_core::bail!("conv2d: {geometry:?} has more elements than cuDNN addresses");
        }
        Ok(geometry)
    }

    fn out_h(&self) -> usize {
        self.height + 2 * self.padding + 1 - self.kernel
    }

    fn out_w(&self) -> usize {
        self.width + 2 * self.padding + 1 - self.kernel
    }

    fn input_shape(&self) -> Shape {
        Shape::from((self.batch, self.in_channels, self.height, self.width))
    }

    fn output_shape(&self) -> Shape {
        Shape::from((self.batch, self.out_channels, self.out_h(), self.out_w()))
    }

    fn kernel_shape(&self) -> Shape {
        Shape::from((
            self.out_channels,
            self.in_channels,
            self.kernel,
            self.kernel,
        ))
    }
}

/// The three cuDNN passes; each is a candle op of two tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pass {
    /// `(x, w) → y`.
    Forward,
    /// `(dy, w) → dx`.
    InputGradient,
    /// `(x, dy) → dw`.
    KernelGradient,
}

impl Pass {
    fn op(self, geometry: Geometry) -> CudnnConv {
        CudnnConv {
            pass: self,
            geometry,
        }
    }
}

/// One pass of one convolution, as a candle op.
struct CudnnConv {
    pass: Pass,
    geometry: Geometry,
}

impl CustomOp2 for CudnnConv {
    fn name(&self) -> &'static str {
        match self.pass {
            Pass::Forward => "ldl-cudnn-conv2d",
            Pass::InputGradient => "ldl-cudnn-conv2d-input-grad",
            Pass::KernelGradient => "ldl-cudnn-conv2d-kernel-grad",
        }
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{} runs on CUDA tensors only", self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        use cudnnDataType_t as D;
        let storage = match (s1.dtype(), s2.dtype()) {
            (DType::F32, DType::F32) => self.run::<f32>(D::CUDNN_DATA_FLOAT, s1, l1, s2, l2)?,
            // bf16 and f16 data accumulate in f32 (cuDNN's PSEUDO_BFLOAT16/HALF configs).
            (DType::BF16, DType::BF16) => {
                self.run::<bf16>(D::CUDNN_DATA_BFLOAT16, s1, l1, s2, l2)?
            }
            (DType::F16, DType::F16) => self.run::<f16>(D::CUDNN_DATA_HALF, s1, l1, s2, l2)?,
            (a, b) => candle_core::bail!("{}: unsupported dtypes {a:?} and {b:?}", self.name()),
        };
        let shape = match self.pass {
            Pass::Forward => self.geometry.output_shape(),
            Pass::InputGradient => self.geometry.input_shape(),
            Pass::KernelGradient => self.geometry.kernel_shape(),
        };
        Ok((storage, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        if self.pass != Pass::Forward {
            candle_core::bail!("{} has no gradient (it is one itself)", self.name());
        }
        let dy = dy.contiguous()?;
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&dy, &Pass::KernelGradient.op(self.geometry))?)
        } else {
            None
        };
        // The first layer's input is data: no gradient is needed there.
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(w, &Pass::InputGradient.op(self.geometry))?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

impl CudnnConv {
    /// Runs the pass on data of type `T` (cuDNN type `data`), accumulating in f32.
    fn run<T: CudaDType + DeviceRepr>(
        &self,
        data: cudnnDataType_t,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<CudaStorage> {
        if !l1.is_contiguous() || !l2.is_contiguous() {
            candle_core::bail!("{}: inputs must be contiguous", self.name());
        }
        let device = s1.device.clone();
        let a = s1.as_cuda_slice::<T>()?.slice(l1.start_offset()..);
        let b = s2.as_cuda_slice::<T>()?.slice(l2.start_offset()..);
        let g = self.geometry;
        let out_len = match self.pass {
            Pass::Forward => g.output_shape().elem_count(),
            Pass::InputGradient => g.input_shape().elem_count(),
            Pass::KernelGradient => g.kernel_shape().elem_count(),
        };
        // SAFETY: cuDNN writes every element of the output (β = 0).
        let out = unsafe { device.alloc::<T>(out_len)? };
        let stream = device.cuda_stream();
        with_state(&device, |state| {
            let handle = state.handle;
            let plan = state.plan(g, data)?;
            let (algo, bytes) = plan.algorithm(handle, self.pass)?;
            let workspace = workspace(&device, bytes)?;
            let (pa, _a) = a.device_ptr(&stream);
            let (pb, _b) = b.device_ptr(&stream);
            let (po, _o) = out.device_ptr(&stream);
            let (pw, _w) = match &workspace {
                Some(w) => {
                    let (p, guard) = w.device_ptr(&stream);
                    (p as *mut c_void, Some(guard))
                }
                None => (std::ptr::null_mut(), None),
            };
            let buffers = Buffers {
                a: pa as *const c_void,
                b: pb as *const c_void,
                out: po as *mut c_void,
                workspace: pw,
                workspace_bytes: bytes,
            };
            // SAFETY: the plan's descriptors describe exactly the contiguous NCHW buffers
            // passed, which hold the elements of `g`'s shapes (candle checked the inputs'
            // layouts; the output was allocated above), and the workspace has the size
            // cuDNN asked for this algorithm; everything runs on candle's stream, which
            // is the handle's.
            unsafe { launch(handle, &plan.descriptors, algo, &buffers) }
                .map_err(candle_core::Error::wrap)
        })?;
        Ok(CudaStorage::wrap_cuda_slice(out, device))
    }
}

/// Scratch memory for one launch; `None` when the algorithm needs none. Uninitialised:
/// cuDNN writes before it reads.
fn workspace(device: &CudaDevice, bytes: usize) -> candle_core::Result<Option<CudaSlice<u8>>> {
    if bytes == 0 {
        return Ok(None);
    }
    // SAFETY: cuDNN only uses the workspace as scratch; nothing reads it afterwards.
    Ok(Some(unsafe { device.alloc::<u8>(bytes)? }))
}

/// The device addresses of one launch: the op's two inputs, its output, the workspace.
#[derive(Clone, Copy)]
struct Buffers {
    a: *const c_void,
    b: *const c_void,
    out: *mut c_void,
    workspace: *mut c_void,
    workspace_bytes: usize,
}

/// Runs `algo`'s pass: `(a, b) = (x, w)` forwards, `(dy, w)` for the input gradient,
/// `(x, dy)` for the kernel gradient; β = 0, so `out` is overwritten.
///
/// # Safety
/// The buffers must hold the tensors `d` describes, on the handle's stream, and the
/// workspace the bytes cuDNN asked for `algo`.
unsafe fn launch(
    handle: sys::cudnnHandle_t,
    d: &Descriptors,
    algo: Algorithm,
    buffers: &Buffers,
) -> Result<(), CudnnError> {
    // f32 scaling factors for f32, bf16 and f16 data (cuDNN's rule for these types).
    let (one, zero) = (1f32, 0f32);
    let alpha = &one as *const f32 as *const c_void;
    let beta = &zero as *const f32 as *const c_void;
    let Buffers {
        a,
        b,
        out,
        workspace,
        workspace_bytes,
    } = *buffers;
    match algo {
        Algorithm::Forward(algo) => result::convolution_forward(
            handle,
            alpha,
            d.input.0,
            a,
            d.kernel.0,
            b,
            d.conv.0,
            algo,
            workspace,
            workspace_bytes,
            beta,
            d.output.0,
            out,
        ),
        Algorithm::InputGradient(algo) => result::convolution_backward_data(
            handle,
            alpha,
            d.kernel.0,
            b,
            d.output.0,
            a,
            d.conv.0,
            algo,
            workspace,
            workspace_bytes,
            beta,
            d.input.0,
            out,
        ),
        Algorithm::KernelGradient(algo) => result::convolution_backward_filter(
            handle,
            alpha,
            d.input.0,
            a,
            d.output.0,
            b,
            d.conv.0,
            algo,
            workspace,
            workspace_bytes,
            beta,
            d.kernel.0,
            out,
        ),
    }
}

/// Owned cuDNN descriptors, destroyed when dropped.
struct TensorDescriptor(sys::cudnnTensorDescriptor_t);
struct FilterDescriptor(sys::cudnnFilterDescriptor_t);
struct ConvDescriptor(sys::cudnnConvolutionDescriptor_t);

impl Drop for TensorDescriptor {
    fn drop(&mut self) {
        // SAFETY: created by `Descriptors::new`, destroyed once, here.
        let _ = unsafe { result::destroy_tensor_descriptor(self.0) };
    }
}

impl Drop for FilterDescriptor {
    fn drop(&mut self) {
        // SAFETY: as above.
        let _ = unsafe { result::destroy_filter_descriptor(self.0) };
    }
}

impl Drop for ConvDescriptor {
    fn drop(&mut self) {
        // SAFETY: as above.
        let _ = unsafe { result::destroy_convolution_descriptor(self.0) };
    }
}

/// The descriptors of one geometry and data type (NCHW, contiguous; f32 accumulation).
struct Descriptors {
    input: TensorDescriptor,
    output: TensorDescriptor,
    kernel: FilterDescriptor,
    conv: ConvDescriptor,
}

impl Descriptors {
    fn new(g: &Geometry, data: cudnnDataType_t) -> Result<Self, CudnnError> {
        let int = |n: usize| n as c_int; // Geometry::of checked every size fits.
        let nchw = cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        let input = TensorDescriptor(result::create_tensor_descriptor()?);
        let output = TensorDescriptor(result::create_tensor_descriptor()?);
        let kernel = FilterDescriptor(result::create_filter_descriptor()?);
        let conv = ConvDescriptor(result::create_convolution_descriptor()?);
        // SAFETY: each descriptor was just created and is set once.
        unsafe {
            let dims = [g.batch, g.in_channels, g.height, g.width].map(int);
            result::set_tensor4d_descriptor(input.0, nchw, data, dims)?;
            let dims = [g.batch, g.out_channels, g.out_h(), g.out_w()].map(int);
            result::set_tensor4d_descriptor(output.0, nchw, data, dims)?;
            let dims = [g.out_channels, g.in_channels, g.kernel, g.kernel].map(int);
            result::set_filter4d_descriptor(kernel.0, data, nchw, dims)?;
            let pad = int(g.padding);
            result::set_convolution2d_descriptor(
                conv.0,
                pad,
                pad,
                1,
                1,
                1,
                1,
                cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                cudnnDataType_t::CUDNN_DATA_FLOAT,
            )?;
            // bf16 and f16 reach the tensor cores only when allowed (as PyTorch does); f32
            // keeps the default math, which allows TF32 tensor cores.
            if data != cudnnDataType_t::CUDNN_DATA_FLOAT {
                result::set_convolution_math_type(
                    conv.0,
                    sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
                )?;
            }
        }
        Ok(Descriptors {
            input,
            output,
            kernel,
            conv,
        })
    }
}

/// An algorithm of one of the three passes.
#[derive(Debug, Clone, Copy)]
enum Algorithm {
    Forward(ForwardAlgo),
    InputGradient(DataAlgo),
    KernelGradient(FilterAlgo),
}

/// What this thread knows about one geometry and data type: its descriptors, and per
/// pass the algorithm chosen and its workspace size.
struct Plan {
    descriptors: Descriptors,
    chosen: HashMap<Pass, (Algorithm, usize)>,
}

/// The first of cuDNN's ranked `results` that ran its check and, unless `LDL_CUDNN=fast`,
/// is deterministic.
macro_rules! first_usable {
    ($results:expr, $count:expr) => {
        // cuDNN reports at most as many as asked for; clamp all the same.
        $results[..($count.max(0) as usize).min($results.len())]
            .iter()
            .find(|r| {
                r.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                    && (mode() == Mode::Fast
                        || r.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC)
            })
    };
}

impl Plan {
    /// The algorithm for `pass` and its workspace bytes, chosen on first use.
    fn algorithm(
        &mut self,
        handle: sys::cudnnHandle_t,
        pass: Pass,
    ) -> candle_core::Result<(Algorithm, usize)> {
        if let Some(&chosen) = self.chosen.get(&pass) {
            return Ok(chosen);
        }
        let d = &self.descriptors;
        // SAFETY: the descriptors are live and consistent with each other.
        let chosen = unsafe {
            match pass {
                Pass::Forward => forward_algorithm(handle, d),
                Pass::InputGradient => input_gradient_algorithm(handle, d),
                Pass::KernelGradient => kernel_gradient_algorithm(handle, d),
            }
        }
        .map_err(candle_core::Error::wrap)?
        .ok_or_else(|| no_algorithm(pass))?;
        self.chosen.insert(pass, chosen);
        Ok(chosen)
    }
}

/// Room for every algorithm of a kind (cuDNN 9 has at most 8 of each).
const MAX_ALGORITHMS: usize = 16;

/// The chosen forward algorithm and its workspace bytes; `None` when none is usable.
///
/// # Safety
/// The descriptors must be live and consistent.
unsafe fn forward_algorithm(
    handle: sys::cudnnHandle_t,
    d: &Descriptors,
) -> Result<Option<(Algorithm, usize)>, CudnnError> {
    let mut results = [std::mem::zeroed::<sys::cudnnConvolutionFwdAlgoPerf_t>(); MAX_ALGORITHMS];
    let mut count: c_int = 0;
    result::get_convolution_forward_algorithm(
        handle,
        d.input.0,
        d.kernel.0,
        d.conv.0,
        d.output.0,
        MAX_ALGORITHMS as c_int,
        &mut count,
        results.as_mut_ptr(),
    )?;
    let Some(algo) = first_usable!(results, count).map(|r| r.algo) else {
        return Ok(None);
    };
    let bytes = result::get_convolution_forward_workspace_size(
        handle, d.input.0, d.kernel.0, d.conv.0, d.output.0, algo,
    )?;
    Ok(Some((Algorithm::Forward(algo), bytes)))
}

/// As [`forward_algorithm`], for the input gradient.
///
/// # Safety
/// As [`forward_algorithm`].
unsafe fn input_gradient_algorithm(
    handle: sys::cudnnHandle_t,
    d: &Descriptors,
) -> Result<Option<(Algorithm, usize)>, CudnnError> {
    let mut results =
        [std::mem::zeroed::<sys::cudnnConvolutionBwdDataAlgoPerf_t>(); MAX_ALGORITHMS];
    let mut count: c_int = 0;
    result::get_convolution_backward_data_algorithm(
        handle,
        d.kernel.0,
        d.output.0,
        d.conv.0,
        d.input.0,
        MAX_ALGORITHMS as c_int,
        &mut count,
        results.as_mut_ptr(),
    )?;
    let Some(algo) = first_usable!(results, count).map(|r| r.algo) else {
        return Ok(None);
    };
    let bytes = result::get_convolution_backward_data_workspace_size(
        handle, d.kernel.0, d.output.0, d.conv.0, d.input.0, algo,
    )?;
    Ok(Some((Algorithm::InputGradient(algo), bytes)))
}

/// As [`forward_algorithm`], for the kernel gradient.
///
/// # Safety
/// As [`forward_algorithm`].
unsafe fn kernel_gradient_algorithm(
    handle: sys::cudnnHandle_t,
    d: &Descriptors,
) -> Result<Option<(Algorithm, usize)>, CudnnError> {
    let mut results =
        [std::mem::zeroed::<sys::cudnnConvolutionBwdFilterAlgoPerf_t>(); MAX_ALGORITHMS];
    let mut count: c_int = 0;
    result::get_convolution_backward_filter_algorithm(
        handle,
        d.input.0,
        d.output.0,
        d.conv.0,
        d.kernel.0,
        MAX_ALGORITHMS as c_int,
        &mut count,
        results.as_mut_ptr(),
    )?;
    let Some(algo) = first_usable!(results, count).map(|r| r.algo) else {
        return Ok(None);
    };
    let bytes = result::get_convolution_backward_filter_workspace_size(
        handle, d.input.0, d.output.0, d.conv.0, d.kernel.0, algo,
    )?;
    Ok(Some((Algorithm::KernelGradient(algo), bytes)))
}

fn no_algorithm(pass: Pass) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "cuDNN offers no usable{} algorithm for this convolution's {pass:?} pass; \
         set LDL_CUDNN=0 to use candle's convolution instead",
        if mode() == Mode::Fast {
            ""
        } else {
            " deterministic"
        }
    ))
}

/// What this thread keeps per CUDA device: its cuDNN handle, bound to candle's stream (so
/// cuDNN's work is ordered with candle's), and a plan per geometry and data type.
struct State {
    handle: sys::cudnnHandle_t,
    plans: HashMap<(Geometry, u32), Plan>,
}

impl State {
    fn plan(&mut self, g: Geometry, data: cudnnDataType_t) -> candle_core::Result<&mut Plan> {
        match self.plans.entry((g, data as u32)) {
            Entry::Occupied(entry) => Ok(entry.into_mut()),
            Entry::Vacant(entry) => Ok(entry.insert(Plan {
                descriptors: Descriptors::new(&g, data).map_err(candle_core::Error::wrap)?,
                chosen: HashMap::new(),
            })),
        }
    }
}

// cuDNN handles must not be used by two threads at once: one per thread and device, as
// candle keeps its own. They live as long as the thread.
thread_local! {
    static STATES: RefCell<HashMap<DeviceId, State>> = RefCell::new(HashMap::new());
}

fn with_state<R>(
    device: &CudaDevice,
    f: impl FnOnce(&mut State) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    STATES.with(|states| {
        let mut states = states.borrow_mut();
        let state = match states.entry(device.id()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let stream = device.cuda_stream();
                stream
                    .context()
                    .bind_to_thread()
                    .map_err(candle_core::Error::wrap)?;
                let handle = result::create_handle().map_err(candle_core::Error::wrap)?;
                // SAFETY: a live handle and candle's live stream.
                unsafe { result::set_stream(handle, stream.cu_stream() as sys::cudaStream_t) }
                    .map_err(candle_core::Error::wrap)?;
                entry.insert(State {
                    handle,
                    plans: HashMap::new(),
                })
            }
        };
        f(state)
    })
}
