// The masked-input op on the device, written straight into the engine's input buffer, in two launches:
//   mask_item_ranges: one block per masked input, the per-item reductions only (feature min-max over h x w,
//                     input min-max over the H x W mask, and the SS-CAM paper's range of the masked input);
//   masked_inputs_*:  a 2-D decomposition, items x pixel tiles (flattened into blockIdx.x = item * tiles + tile,
//                     so a 64-input chunk of 224 x 224 inputs is 64 x 196 blocks and fills every SM), one thread
//                     per pixel writing its C channels.
// Same arithmetic as kernels/masks.py masked_inputs (the NumPy reference), step for step:
// gather A[b, k] -> (feature min-max) -> bilinear upsample -> gate -> (input min-max) -> + mask noise
// -> x image -> x scale -> + input noise (given std, or the SS-CAM paper's (m / range)^2) -> fp32 or fp16.
// Also: score accumulation, so that no chunk needs a host round trip. blockDim.x must be a power of two, at most
// CAMRT_MAX_THREADS.
#include "common.cuh"

enum { NOISE_NONE = 0, NOISE_GIVEN = 1, NOISE_RANGE = 2 };
enum { P_FLO = 0, P_FSPAN = 1, P_MLO = 2, P_MSPAN = 3, P_STD = 4, P_COUNT = 5 };  // per-item params

struct MaskArgs {
    const float* acts; int K, h, w;           // activations (B, K, h, w)
    const float* images; int C, H, W;         // images (B, C, H, W)
    const int* image_idx; const int* channel_idx;  // (n,)
    float scale_h, scale_w; int align_corners;
    int normalize; float eps; int gate;
    const float* item_scale;                  // (n,) or null
    const float* mask_noise;                  // (n, H, W) or null
    const float* input_noise;                 // (n, C, H, W) or null
    const float* input_noise_std;             // (n,) or null (std 1), when noise_mode is NOISE_GIVEN
    int noise_mode;                           // NOISE_RANGE: std = (m / (max x - min x))^2 per item, 0 if constant
    float range_multiplier;                   // m, any sign (squared), 0 gives no noise: as the host
    int channels_last;                        // out layout: 0 (n, C, H, W), 1 (n, H, W, C)
};

// The mask value (before the input-level min-max) at pixel p of item's map a.
__device__ __forceinline__ float raw_mask(const MaskArgs& g, const float* a, int p, float flo, float fspan) {
    int y = p / g.W, x = p - (p / g.W) * g.W;
    Tap ty = bilinear_tap(y, g.h, g.scale_h, g.align_corners);
    Tap tx = bilinear_tap(x, g.w, g.scale_w, g.align_corners);
    float m = bilinear_at(a, g.w, ty, tx, flo, fspan, g.normalize == NORM_FEATURE);
    return g.gate ? apply_gate(m, g.gate) : m;
}

// The finished mask at pixel p: raw mask, input-level min-max, mask noise (both kernels use it).
__device__ __forceinline__ float final_mask(const MaskArgs& g, const float* a, int p, int item, int HW, float flo,
                                            float fspan, float mlo, float mspan) {
    float m = raw_mask(g, a, p, flo, fspan);
    if (g.normalize == NORM_INPUT) m = __fdiv_rn(__fsub_rn(m, mlo), mspan);
    if (g.mask_noise) m = __fadd_rn(m, g.mask_noise[(long long)item * HW + p]);
    return m;
}

// Channel c of the image at pixel p times the mask m, times the item's scale where it has one.
__device__ __forceinline__ float scaled_pixel(const MaskArgs& g, const float* img, int c, int p, int HW, float m,
                                              float s) {
    float v = __fmul_rn(img[(long long)c * HW + p], m);
    return g.item_scale ? __fmul_rn(v, s) : v;
}

// Per item (one block each): params[item] = feature min and span, input-level min and span, input-noise std.
__device__ void mask_item_ranges_body(MaskArgs g, float* params) {
    __shared__ float s_lo[CAMRT_MAX_THREADS];
    __shared__ float s_hi[CAMRT_MAX_THREADS];
    const int item = blockIdx.x;
    const int b = g.image_idx[item], k = g.channel_idx[item];
    const int hw = g.h * g.w, HW = g.H * g.W;
    const float* a = g.acts + ((long long)b * g.K + k) * hw;
    const float* img = g.images + (long long)b * g.C * HW;
    const float inf = __int_as_float(0x7f800000);

    float flo = 0.0f, fspan = 1.0f;  // feature-level min-max over the h x w map
    if (g.normalize == NORM_FEATURE) {
        float lo = inf, hi = -inf;
        for (int p = threadIdx.x; p < hw; p += blockDim.x) {
            lo = fminf(lo, a[p]);
            hi = fmaxf(hi, a[p]);
        }
        block_minmax(lo, hi, s_lo, s_hi);
        flo = lo;
        fspan = minmax_span(lo, hi, g.eps);
    }
    float mlo = 0.0f, mspan = 1.0f;  // input-level min-max over the H x W (gated) mask
    if (g.normalize == NORM_INPUT) {
        float lo = inf, hi = -inf;
        for (int p = threadIdx.x; p < HW; p += blockDim.x) {
            float m = raw_mask(g, a, p, flo, fspan);
            lo = fminf(lo, m);
            hi = fmaxf(hi, m);
        }
        block_minmax(lo, hi, s_lo, s_hi);
        mlo = lo;
        mspan = minmax_span(lo, hi, g.eps);
    }
    float noise_std = 0.0f;
    if (g.input_noise && g.noise_mode == NOISE_RANGE) {  // range of the masked input before its noise
        const float s = g.item_scale ? g.item_scale[item] : 1.0f;
        float lo = inf, hi = -inf;
        for (int p = threadIdx.x; p < HW; p += blockDim.x) {
            float m = final_mask(g, a, p, item, HW, flo, fspan, mlo, mspan);
            for (int c = 0; c < g.C; ++c) {
                float v = scaled_pixel(g, img, c, p, HW, m, s);
                lo = fminf(lo, v);
                hi = fmaxf(hi, v);
            }
        }
        block_minmax(lo, hi, s_lo, s_hi);
        double span = (double)__fsub_rn(hi, lo);
        double ratio = (double)g.range_multiplier / span;
        noise_std = span == 0.0 ? 0.0f : (float)(ratio * ratio);  // a constant masked input gets no noise
    }
    if (threadIdx.x == 0) {
        float* out = params + (long long)item * P_COUNT;
        out[P_FLO] = flo;
        out[P_FSPAN] = fspan;
        out[P_MLO] = mlo;
        out[P_MSPAN] = mspan;
        out[P_STD] = noise_std;
    }
}

// One thread per (item, pixel): the finished mask at that pixel times each of the C image channels, written
// (fp32 or fp16, NCHW or channels-last). ``params`` is null when no per-item reduction is needed.
template <typename Out>
__device__ void masked_inputs_body(MaskArgs g, const float* params, int tiles, Out* out) {
    const int item = blockIdx.x / tiles;
    const int tile = blockIdx.x - item * tiles;
    const int HW = g.H * g.W;
    const int p = tile * blockDim.x + threadIdx.x;
    if (p >= HW) return;
    const int b = g.image_idx[item], k = g.channel_idx[item];
    const float* a = g.acts + ((long long)b * g.K + k) * (g.h * g.w);
    const float* img = g.images + (long long)b * g.C * HW;
    const float* q = params ? params + (long long)item * P_COUNT : nullptr;
    const float flo = q ? q[P_FLO] : 0.0f, fspan = q ? q[P_FSPAN] : 1.0f;
    const float mlo = q ? q[P_MLO] : 0.0f, mspan = q ? q[P_MSPAN] : 1.0f;
    float noise_std = 0.0f;
    if (g.noise_mode == NOISE_RANGE) noise_std = q ? q[P_STD] : 0.0f;
    if (g.noise_mode == NOISE_GIVEN) noise_std = g.input_noise_std ? g.input_noise_std[item] : 1.0f;
    const float s = g.item_scale ? g.item_scale[item] : 1.0f;
    const float m = final_mask(g, a, p, item, HW, flo, fspan, mlo, mspan);
    for (int c = 0; c < g.C; ++c) {
        float v = scaled_pixel(g, img, c, p, HW, m, s);
        if (g.input_noise && g.noise_mode != NOISE_NONE) {
            v = __fadd_rn(v, __fmul_rn(noise_std, g.input_noise[((long long)item * g.C + c) * HW + p]));
        }
        long long o = g.channels_last ? ((long long)item * HW + p) * g.C + c : ((long long)item * g.C + c) * HW + p;
        store(out, o, v);
    }
}

#define CAMRT_MASK_PARAMS                                                                                      \
    const float *acts, int K, int h, int w, const float *images, int C, int H, int W, const int *image_idx,    \
        const int *channel_idx, float scale_h, float scale_w, int align_corners, int normalize, float eps,      \
        int gate, const float *item_scale, const float *mask_noise, const float *input_noise,                  \
        const float *input_noise_std, int noise_mode, float range_multiplier, int channels_last
#define CAMRT_MASK_ARGS                                                                                        \
    MaskArgs{acts, K, h, w, images, C, H, W, image_idx, channel_idx, scale_h, scale_w, align_corners,           \
             normalize, eps, gate, item_scale, mask_noise, input_noise, input_noise_std, noise_mode,            \
             range_multiplier, channels_last}

// grid: n blocks; params (n, 5) float32
extern "C" __global__ void mask_item_ranges(CAMRT_MASK_PARAMS, float* params) {
    mask_item_ranges_body(CAMRT_MASK_ARGS, params);
}

// grid: n * tiles blocks, tiles = ceil(H * W / blockDim.x)
extern "C" __global__ void masked_inputs_f32(CAMRT_MASK_PARAMS, const float* params, int tiles, float* out) {
    masked_inputs_body<float>(CAMRT_MASK_ARGS, params, tiles, out);
}

extern "C" __global__ void masked_inputs_f16(CAMRT_MASK_PARAMS, const float* params, int tiles,
                                             unsigned short* out) {
    masked_inputs_body<unsigned short>(CAMRT_MASK_ARGS, params, tiles, out);
}

enum { SCORE_PROB = 0, SCORE_LOGIT = 1, SCORE_LOGIT_DELTA = 2 };

// sums[b, k] += score of row i (one block per row): softmax probability of the target (in double), its logit,
// or its logit minus the clean logit. ``bad[b]`` is set when a row of image b has a non-finite logit.
extern "C" __global__ void accumulate_scores(const float* logits, int classes, const int* image_idx,
                                             const int* channel_idx, const int* target, const double* base,
                                             int kind, int K, double* sums, int* bad) {
    __shared__ double s_red[CAMRT_MAX_THREADS];
    const int row = blockIdx.x;
    const float* z = logits + (long long)row * classes;
    const int b = image_idx[row];
    const int c = target[b];
    double score;
    double nonfinite = 0.0;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) {
        if (!isfinite(z[j])) nonfinite = 1.0;
    }
    if (block_reduce(nonfinite, s_red, 1) > 0.0) {
        if (threadIdx.x == 0) atomicExch(bad + b, 1);
        return;
    }
    if (kind == SCORE_PROB) {
        double mx = -__longlong_as_double(0x7ff0000000000000LL);
        for (int j = threadIdx.x; j < classes; j += blockDim.x) mx = fmax(mx, (double)z[j]);
        mx = block_reduce(mx, s_red, 1);
        double sum = 0.0;
        for (int j = threadIdx.x; j < classes; j += blockDim.x) sum += exp((double)z[j] - mx);
        sum = block_reduce(sum, s_red, 0);
        score = exp((double)z[c] - mx) / sum;
    } else {
        score = (double)z[c];
        if (kind == SCORE_LOGIT_DELTA) score -= base[b];
    }
    if (threadIdx.x == 0) atomicAdd(&sums[(long long)b * K + channel_idx[row]], score);
}
