// Shared device helpers for camrt's kernels: torch's bilinear index arithmetic, the gates, block reductions
// and fp16 stores. Plain CUDA C with no headers, so NVRTC (cupy.RawModule), nvcc and the host emulation
// (tools/cuda_emulation, g++) all compile the same text.
#pragma once
#ifdef CAMRT_HOST_EMULATION
#include "cuda_emulation.h"
#endif

#define CAMRT_MAX_THREADS 1024

enum { NORM_NONE = 0, NORM_FEATURE = 1, NORM_INPUT = 2 };
enum { GATE_NONE = 0, GATE_TANH = 1, GATE_SIGMOID_RELU = 2, GATE_MISH = 3, GATE_SWISH = 4 };

// One output coordinate's two source taps, exactly as kernels/upsample.py (and torch) compute them in fp32.
struct Tap {
    int i0, i1;
    float l0, l1;
};

__device__ __forceinline__ Tap bilinear_tap(int dst, int in_size, float scale, int align_corners) {
    float src;
    if (align_corners) {
        src = __fmul_rn((float)dst, scale);
    } else {
        src = __fsub_rn(__fmul_rn(__fadd_rn((float)dst, 0.5f), scale), 0.5f);
        src = fmaxf(src, 0.0f);
    }
    Tap t;
    t.i0 = min((int)floorf(src), in_size - 1);
    t.i1 = min(t.i0 + 1, in_size - 1);
    t.l1 = __fsub_rn(src, (float)t.i0);
    t.l0 = __fsub_rn(1.0f, t.l1);
    return t;
}

// Bilinear value of a (h, w) map at output pixel (y, x): along the width first, then the height (as torch).
// ``lo`` and ``span`` apply the feature-level min-max to each source value first (lo 0, span 1: identity).
__device__ __forceinline__ float bilinear_at(const float* a, int w, const Tap& ty, const Tap& tx, float lo,
                                             float span, int normalize) {
    float v00 = a[ty.i0 * w + tx.i0], v01 = a[ty.i0 * w + tx.i1];
    float v10 = a[ty.i1 * w + tx.i0], v11 = a[ty.i1 * w + tx.i1];
    if (normalize) {
        v00 = __fdiv_rn(__fsub_rn(v00, lo), span);
        v01 = __fdiv_rn(__fsub_rn(v01, lo), span);
        v10 = __fdiv_rn(__fsub_rn(v10, lo), span);
        v11 = __fdiv_rn(__fsub_rn(v11, lo), span);
    }
    float top = __fadd_rn(__fmul_rn(v00, tx.l0), __fmul_rn(v01, tx.l1));
    float bottom = __fadd_rn(__fmul_rn(v10, tx.l0), __fmul_rn(v11, tx.l1));
    return __fadd_rn(__fmul_rn(top, ty.l0), __fmul_rn(bottom, ty.l1));
}

__device__ __forceinline__ float sigmoidf_ref(float x) {
    // 1 / (1 + exp(-x)), in the reference's order of operations
    return __fdiv_rn(1.0f, __fadd_rn(expf(-x), 1.0f));
}

// The gates of kernels/masks.py: tanh, sigmoid(relu(x)), mish (x * tanh(softplus(x))), swish (x * sigmoid(x)).
__device__ __forceinline__ float apply_gate(float x, int gate) {
    switch (gate) {
        case GATE_TANH:
            return tanhf(x);
        case GATE_SIGMOID_RELU:
            return sigmoidf_ref(fmaxf(x, 0.0f));
        case GATE_MISH: {
            float soft = __fadd_rn(fmaxf(x, 0.0f), log1pf(expf(-fabsf(x))));  // softplus, overflow-safe
            return __fmul_rn(x, tanhf(soft));
        }
        case GATE_SWISH:
            return __fmul_rn(x, sigmoidf_ref(x));
        default:
            return x;
    }
}

// Block-wide min and max (blockDim.x a power of two); every thread gets the result. s_lo, s_hi: shared arrays.
__device__ __forceinline__ void block_minmax(float& lo, float& hi, float* s_lo, float* s_hi) {
    int t = threadIdx.x;
    s_lo[t] = lo;
    s_hi[t] = hi;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride) {
            s_lo[t] = fminf(s_lo[t], s_lo[t + stride]);
            s_hi[t] = fmaxf(s_hi[t], s_hi[t + stride]);
        }
        __syncthreads();
    }
    lo = s_lo[0];
    hi = s_hi[0];
    __syncthreads();
}

// Block-wide max and sum of doubles (for the softmax score); every thread gets the result.
__device__ __forceinline__ double block_reduce(double v, double* s, int is_max) {
    int t = threadIdx.x;
    s[t] = v;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride) s[t] = is_max ? fmax(s[t], s[t + stride]) : s[t] + s[t + stride];
        __syncthreads();
    }
    double r = s[0];
    __syncthreads();
    return r;
}

// The min-max divisor of kernels/masks.py minmax(): (max - min) + eps, or 1 for a constant slice when eps is 0.
__device__ __forceinline__ float minmax_span(float lo, float hi, float eps) {
    float span = __fsub_rn(hi, lo);
    if (eps != 0.0f) return __fadd_rn(span, eps);
    return span == 0.0f ? 1.0f : span;
}

// Round to nearest even fp16, as raw bits (no cuda_fp16.h needed under NVRTC).
__device__ __forceinline__ unsigned short float_to_half_bits(float f) {
#ifdef CAMRT_HOST_EMULATION
    return emu_float_to_half_bits(f);
#else
    unsigned short r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
#endif
}

__device__ __forceinline__ void store(float* out, long long i, float v) { out[i] = v; }
__device__ __forceinline__ void store(unsigned short* out, long long i, float v) { out[i] = float_to_half_bits(v); }
