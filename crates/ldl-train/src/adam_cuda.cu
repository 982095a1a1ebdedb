// Adam's update on CUDA as three in-place passes per variable (f32), with the formulas
// of the CPU passes in adam_cpu.rs, in the same order.

// m <- m * beta + g' * (1 - beta), g' = g + theta * weight_decay, squared for the second
// moment.
extern "C" __global__ void adam_moment_f32(float *moment, const float *grad,
                                           const float *theta, float beta,
                                           float one_minus_beta, float weight_decay,
                                           int second, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = grad[i];
        if (weight_decay > 0.f) g = g + theta[i] * weight_decay;
        if (second) g = g * g;
        moment[i] = moment[i] * beta + g * one_minus_beta;
    }
}

// theta <- theta - lr * (m / bias1) / (sqrt(v / bias2) + eps).
extern "C" __global__ void adam_update_f32(float *theta, const float *first,
                                           const float *second, float inv_bias1,
                                           float inv_bias2, float eps, float lr, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float m_hat = first[i] * inv_bias1;
        float v_hat = second[i] * inv_bias2;
        float step = m_hat / (sqrtf(v_hat) + eps);
        theta[i] = theta[i] - step * lr;
    }
}
