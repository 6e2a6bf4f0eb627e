// The final combination on the device, as runtime/combine.py does it for each convention:
// sum_k alpha_k A_k at h x w (in double), or sum_k alpha_k gate(Up(A_k)) at H x W (ScoreCAM++), then ReLU,
// min-max and bilinear resizes. blockDim.x must be a power of two, at most CAMRT_MAX_THREADS.
#include "common.cuh"

// out[p] = (float) sum_k weights[k] * acts[k, p] for p < hw (one thread per pixel).
extern "C" __global__ void weighted_sum(const float* acts, const double* weights, int K, int hw, float* out) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= hw) return;
    double acc = 0.0;
    for (int k = 0; k < K; ++k) acc += weights[k] * (double)acts[(long long)k * hw + p];
    out[p] = (float)acc;
}

// out[p] = (float) sum_j weights[idx[j]] * gate(Up(acts[idx[j]]))[p] over the channels idx (nonzero weights).
extern "C" __global__ void gated_weighted_sum(const float* acts, const double* weights, const int* idx, int nnz,
                                              int h, int w, int H, int W, float scale_h, float scale_w,
                                              int align_corners, int gate, float* out) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= H * W) return;
    int y = p / W, x = p - (p / W) * W;
    Tap ty = bilinear_tap(y, h, scale_h, align_corners);
    Tap tx = bilinear_tap(x, w, scale_w, align_corners);
    double acc = 0.0;
    for (int j = 0; j < nnz; ++j) {
        int k = idx[j];
        float m = bilinear_at(acts + (long long)k * h * w, w, ty, tx, 0.0f, 1.0f, 0);
        if (gate) m = apply_gate(m, gate);
        acc += weights[k] * (double)m;
    }
    out[p] = (float)acc;
}

// Bilinear resize of n maps (n, h, w) -> (n, H, W) (one thread per output pixel).
extern "C" __global__ void resize_maps(const float* in, int n, int h, int w, int H, int W, float scale_h,
                                       float scale_w, int align_corners, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * H * W) return;
    int m = (int)(i / ((long long)H * W));
    int p = (int)(i - (long long)m * H * W);
    int y = p / W, x = p - (p / W) * W;
    Tap ty = bilinear_tap(y, h, scale_h, align_corners);
    Tap tx = bilinear_tap(x, w, scale_w, align_corners);
    out[i] = bilinear_at(in + (long long)m * h * w, w, ty, tx, 0.0f, 1.0f, 0);
}

enum { MAP_RELU = 1, MAP_MINMAX = 2, MAP_CLIP = 4 };

// In place, one block per map of ``size`` values: ReLU, then min-max with eps (a constant map becomes 0 when
// eps is 0), then a clip to [0, 1], each as ``flags`` asks.
extern "C" __global__ void finish_maps(float* maps, int size, float eps, int flags) {
    __shared__ float s_lo[CAMRT_MAX_THREADS];
    __shared__ float s_hi[CAMRT_MAX_THREADS];
    float* x = maps + (long long)blockIdx.x * size;
    const float inf = __int_as_float(0x7f800000);
    float lo = inf, hi = -inf;
    for (int p = threadIdx.x; p < size; p += blockDim.x) {
        float v = x[p];
        if (flags & MAP_RELU) v = fmaxf(v, 0.0f);
        x[p] = v;
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
    }
    block_minmax(lo, hi, s_lo, s_hi);
    float span = minmax_span(lo, hi, eps);
    for (int p = threadIdx.x; p < size; p += blockDim.x) {
        float v = x[p];
        if (flags & MAP_MINMAX) v = __fdiv_rn(__fsub_rn(v, lo), span);
        if (flags & MAP_CLIP) v = fminf(fmaxf(v, 0.0f), 1.0f);
        x[p] = v;
    }
}
