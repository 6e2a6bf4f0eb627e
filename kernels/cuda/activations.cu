// The activation-masking op of the head-only methods on the device, written straight into the head's input
// buffer: one thread per output element (grid-stride). Same values as kernels/activations.py
// masked_activations (the NumPy reference): copies, and products by powers of two, so the results are exact.
//   ablate_channels: copy j is the activations of image image_idx[j] with channel index[j] set to fill[j]
//                    (Ablation-CAM).
//   keep_positions:  copy j is 0 but position index[j] = i * w + j', whose channel vector is kept (one-hot) or
//                    spread with the 3x3 Gaussian [1 2 1; 2 4 2; 1 2 1] / 16 clipped at the border (Recipro-CAM).
#include "common.cuh"

extern "C" __global__ void ablate_channels(const float* acts, int K, int hw, const int* image_idx,
                                           const int* index, const float* fill, int n, float* out) {
    const long long per = (long long)K * hw;
    const long long total = (long long)n * per;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const int item = (int)(e / per);
        const long long rem = e - (long long)item * per;
        const int k = (int)(rem / hw);
        out[e] = k == index[item] ? fill[item] : acts[(long long)image_idx[item] * per + rem];
    }
}

extern "C" __global__ void keep_positions(const float* acts, int K, int h, int w, const int* image_idx,
                                          const int* index, int gaussian, int n, float* out) {
    const int hw = h * w;
    const long long per = (long long)K * hw;
    const long long total = (long long)n * per;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const int item = (int)(e / per);
        const long long rem = e - (long long)item * per;
        const int k = (int)(rem / hw);
        const int p = (int)(rem - (long long)k * hw);
        const int y = p / w, x = p - (p / w) * w;
        const int ci = index[item] / w, cj = index[item] - (index[item] / w) * w;
        const int dy = y - ci, dx = x - cj;
        float v = 0.0f;
        if (dy == 0 && dx == 0) {
            const float a = acts[(long long)image_idx[item] * per + (long long)k * hw + p];
            v = gaussian ? __fmul_rn(a, 0.25f) : a;
        } else if (gaussian && dy >= -1 && dy <= 1 && dx >= -1 && dx <= 1) {
            const float a = acts[(long long)image_idx[item] * per + (long long)k * hw + (long long)ci * w + cj];
            v = __fmul_rn(a, (dy == 0 || dx == 0) ? 0.125f : 0.0625f);
        }
        out[e] = v;
    }
}
