// ldl's CUDA kernels for the DLDL-v2 blocks: BatchNorm + ReLU (statistics, forward,
// backward) and the 2x2 max-pool (forward, backward). Compiled at run time with NVRTC
// (see cuda_kernels.rs), so no header is included: bf16 is handled as its 16 bits.
//
// Layout: NCHW, contiguous. "plane" = H*W, "per_channel" = N*H*W (the BatchNorm count).
// Reductions are deterministic: every block sums a fixed range in a fixed order into
// doubles, and a second kernel adds the blocks' partial sums in a fixed order.

typedef unsigned short bf16_t;

__device__ __forceinline__ float load(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float load(const bf16_t *p, size_t i) {
    return __uint_as_float(((unsigned int)p[i]) << 16);
}
__device__ __forceinline__ void store(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(bf16_t *p, size_t i, float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        p[i] = (bf16_t)((u >> 16) | 0x40u);  // NaN stays NaN
    } else {
        u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
        p[i] = (bf16_t)(u >> 16);
    }
}

#define BLOCK 256

// Sums two doubles per thread over the block, in a fixed order; thread 0 gets the totals.
__device__ void block_sum2(double *a, double *b) {
    __shared__ double sa[BLOCK];
    __shared__ double sb[BLOCK];
    sa[threadIdx.x] = *a;
    sb[threadIdx.x] = *b;
    __syncthreads();
    for (int s = BLOCK / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            sa[threadIdx.x] += sa[threadIdx.x + s];
            sb[threadIdx.x] += sb[threadIdx.x + s];
        }
        __syncthreads();
    }
    *a = sa[0];
    *b = sb[0];
}

// The element of channel c at position j of its N*H*W values.
__device__ __forceinline__ size_t channel_index(size_t j, int c, int channels, size_t plane) {
    size_t n = j / plane;
    return (n * channels + c) * plane + (j - n * plane);
}

// Partial sums of x and x^2 for channel blockIdx.y over chunk blockIdx.x:
// partial[(c * chunks + chunk) * 2 + {0, 1}].
#define CHANNEL_PARTIALS(NAME, T)                                                          \
extern "C" __global__ void NAME(const T *x, double *partial, int channels, size_t plane,   \
                                size_t per_channel) {                                      \
    int c = blockIdx.y, chunk = blockIdx.x, chunks = gridDim.x;                            \
    size_t per_chunk = (per_channel + chunks - 1) / chunks;                                \
    size_t start = chunk * per_chunk;                                                      \
    size_t stop = start + per_chunk < per_channel ? start + per_chunk : per_channel;                                     \
    double s = 0.0, ss = 0.0;                                                              \
    for (size_t j = start + threadIdx.x; j < stop; j += BLOCK) {                           \
        double v = load(x, channel_index(j, c, channels, plane));                          \
        s += v;                                                                            \
        ss += v * v;                                                                       \
    }                                                                                      \
    block_sum2(&s, &ss);                                                                   \
    if (threadIdx.x == 0) {                                                                \
        partial[(c * chunks + chunk) * 2] = s;                                             \
        partial[(c * chunks + chunk) * 2 + 1] = ss;                                        \
    }                                                                                      \
}
CHANNEL_PARTIALS(channel_partials_f32, float)
CHANNEL_PARTIALS(channel_partials_bf16, bf16_t)

// One block per channel adds the chunks' partial sums. mode 0 (statistics of x):
// out[c] = mean, out[C + c] = 1 / sqrt(var + eps), out[2C + c] = var (biased).
// mode 1 (backward sums): out[c] = first sum, out[C + c] = second sum.
extern "C" __global__ void finish_partials(const double *partial, float *out, int channels,
                                           int chunks, size_t per_channel, float eps, int mode) {
    int c = blockIdx.x;
    double s = 0.0, ss = 0.0;
    for (int k = threadIdx.x; k < chunks; k += BLOCK) {
        s += partial[(c * chunks + k) * 2];
        ss += partial[(c * chunks + k) * 2 + 1];
    }
    block_sum2(&s, &ss);
    if (threadIdx.x != 0) return;
    if (mode == 0) {
        double mean = s / (double)per_channel;
        double var = ss / (double)per_channel - mean * mean;
        if (var < 0.0) var = 0.0;
        out[c] = (float)mean;
        out[channels + c] = (float)(1.0 / sqrt(var + (double)eps));
        out[2 * channels + c] = (float)var;
    } else {
        out[c] = (float)s;
        out[channels + c] = (float)ss;
    }
}

// y = max(0, (x - mean) * inv_std * gamma + beta); stats = [mean; inv_std].
#define NORM_RELU_FORWARD(NAME, T)                                                         \
extern "C" __global__ void NAME(const T *x, T *y, const float *stats, const float *gamma,  \
                                const float *beta, int channels, size_t plane, size_t n) { \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;                  \
         i += (size_t)gridDim.x * blockDim.x) {                                            \
        int c = (int)((i / plane) % channels);                                             \
        float v = (load(x, i) - stats[c]) * stats[channels + c] * gamma[c] + beta[c];      \
        store(y, i, v > 0.f ? v : 0.f);                                                    \
    }                                                                                      \
}
NORM_RELU_FORWARD(norm_relu_forward_f32, float)
NORM_RELU_FORWARD(norm_relu_forward_bf16, bf16_t)

// Partial sums of g and g * x_hat per channel, g = dy where y > 0 (the ReLU passes).
#define NORM_RELU_BACKWARD_PARTIALS(NAME, T)                                               \
extern "C" __global__ void NAME(const T *x, const T *y, const T *dy, const float *stats,   \
                                double *partial, int channels, size_t plane,               \
                                size_t per_channel) {                                      \
    int c = blockIdx.y, chunk = blockIdx.x, chunks = gridDim.x;                            \
    size_t per_chunk = (per_channel + chunks - 1) / chunks;                                \
    size_t start = chunk * per_chunk;                                                      \
    size_t stop = start + per_chunk < per_channel ? start + per_chunk : per_channel;                                     \
    float mean = stats[c], inv_std = stats[channels + c];                                  \
    double s = 0.0, sx = 0.0;                                                              \
    for (size_t j = start + threadIdx.x; j < stop; j += BLOCK) {                           \
        size_t i = channel_index(j, c, channels, plane);                                   \
        if (load(y, i) > 0.f) {                                                            \
            float g = load(dy, i);                                                         \
            s += g;                                                                        \
            sx += (double)g * (double)((load(x, i) - mean) * inv_std);                     \
        }                                                                                  \
    }                                                                                      \
    block_sum2(&s, &sx);                                                                   \
    if (threadIdx.x == 0) {                                                                \
        partial[(c * chunks + chunk) * 2] = s;                                             \
        partial[(c * chunks + chunk) * 2 + 1] = sx;                                        \
    }                                                                                      \
}
NORM_RELU_BACKWARD_PARTIALS(norm_relu_backward_partials_f32, float)
NORM_RELU_BACKWARD_PARTIALS(norm_relu_backward_partials_bf16, bf16_t)

// dx = gamma * inv_std * (g - sum_g / M - x_hat * sum_gx / M) with batch statistics,
// dx = gamma * inv_std * g with fixed (running) ones; sums = [sum_g; sum_gx].
#define NORM_RELU_BACKWARD_INPUT(NAME, T)                                                  \
extern "C" __global__ void NAME(const T *x, const T *y, const T *dy, const float *stats,   \
                                const float *gamma, const float *sums, T *dx,              \
                                int channels, size_t plane, size_t per_channel,            \
                                int batch_statistics, size_t n) {                          \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;                  \
         i += (size_t)gridDim.x * blockDim.x) {                                            \
        int c = (int)((i / plane) % channels);                                             \
        float g = load(y, i) > 0.f ? load(dy, i) : 0.f;                                    \
        float scale = gamma[c] * stats[channels + c];                                      \
        float v;                                                                           \
        if (batch_statistics) {                                                            \
            float x_hat = (load(x, i) - stats[c]) * stats[channels + c];                   \
            float m = (float)per_channel;                                                  \
            v = scale * (g - sums[c] / m - x_hat * (sums[channels + c] / m));              \
        } else {                                                                           \
            v = scale * g;                                                                 \
        }                                                                                  \
        store(dx, i, v);                                                                   \
    }                                                                                      \
}
NORM_RELU_BACKWARD_INPUT(norm_relu_backward_input_f32, float)
NORM_RELU_BACKWARD_INPUT(norm_relu_backward_input_bf16, bf16_t)

// The position (0..3, row-major) of the first maximum of the 2x2 window at (oy, ox).
template <typename T>
__device__ __forceinline__ int first_max(const T *x, size_t base, size_t width, size_t oy,
                                         size_t ox, float *value) {
    size_t top = base + 2 * oy * width + 2 * ox;
    float best = load(x, top);
    int at = 0;
    float v = load(x, top + 1);
    if (v > best) { best = v; at = 1; }
    v = load(x, top + width);
    if (v > best) { best = v; at = 2; }
    v = load(x, top + width + 1);
    if (v > best) { best = v; at = 3; }
    *value = best;
    return at;
}

// y[p, oy, ox] = the window's maximum, p over N*C planes; odd last rows/columns dropped.
#define MAX_POOL_FORWARD(NAME, T)                                                          \
extern "C" __global__ void NAME(const T *x, T *y, size_t height, size_t width,             \
                                size_t out_h, size_t out_w, size_t n) {                    \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;                  \
         i += (size_t)gridDim.x * blockDim.x) {                                            \
        size_t p = i / (out_h * out_w), r = i - p * out_h * out_w;                         \
        size_t oy = r / out_w, ox = r - oy * out_w;                                        \
        float best;                                                                        \
        first_max(x, p * height * width, width, oy, ox, &best);                            \
        store(y, i, best);                                                                 \
    }                                                                                      \
}
MAX_POOL_FORWARD(max_pool_forward_f32, float)
MAX_POOL_FORWARD(max_pool_forward_bf16, bf16_t)

// dx at each input cell: the window's upstream gradient if the cell is its first maximum,
// else 0 (also for the dropped last row/column).
#define MAX_POOL_BACKWARD(NAME, T)                                                         \
extern "C" __global__ void NAME(const T *x, const T *dy, T *dx, size_t height,             \
                                size_t width, size_t out_h, size_t out_w, size_t n) {      \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;                  \
         i += (size_t)gridDim.x * blockDim.x) {                                            \
        size_t p = i / (height * width), r = i - p * height * width;                       \
        size_t yy = r / width, xx = r - yy * width;                                        \
        size_t oy = yy / 2, ox = xx / 2;                                                   \
        float g = 0.f;                                                                     \
        if (oy < out_h && ox < out_w) {                                                    \
            float best;                                                                    \
            int at = first_max(x, p * height * width, width, oy, ox, &best);               \
            if (at == (int)((yy - 2 * oy) * 2 + (xx - 2 * ox))) {                          \
                g = load(dy, (p * out_h + oy) * out_w + ox);                               \
            }                                                                              \
        }                                                                                  \
        store(dx, i, g);                                                                   \
    }                                                                                      \
}
MAX_POOL_BACKWARD(max_pool_backward_f32, float)
MAX_POOL_BACKWARD(max_pool_backward_bf16, bf16_t)
