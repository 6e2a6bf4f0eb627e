// Host emulation of the CUDA C that camrt's kernels use, so g++ (C++20) can compile the same .cu text and the
// tests can check its arithmetic against the NumPy reference without a GPU. A launch runs the blocks one after
// another; each block's threads are std::threads meeting at a std::barrier for __syncthreads(), so __shared__
// (static storage here) is shared by one block's threads at a time. Build with -ffp-contract=off: the
// __f*_rn intrinsics then round each operation as the device does.
#pragma once
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

struct emu_dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local emu_dim3 threadIdx, blockIdx;
inline emu_dim3 blockDim, gridDim;
inline std::barrier<>* emu_block_barrier = nullptr;

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }

using std::floor;
using std::max;
using std::min;
inline float floorf(float x) { return std::floor(x); }
inline float fminf(float a, float b) { return std::fmin(a, b); }
inline float fmaxf(float a, float b) { return std::fmax(a, b); }
inline float fabsf(float a) { return std::fabs(a); }
inline float tanhf(float a) { return std::tanh(a); }
inline float expf(float a) { return std::exp(a); }
inline float log1pf(float a) { return std::log1p(a); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
using std::isfinite;

inline double atomicAdd(double* address, double value) {
    return std::atomic_ref<double>(*address).fetch_add(value);
}
inline int atomicExch(int* address, int value) { return std::atomic_ref<int>(*address).exchange(value); }

inline unsigned short emu_float_to_half_bits(float f) {
    _Float16 h = static_cast<_Float16>(f);  // round to nearest even, as cvt.rn.f16.f32
    unsigned short bits;
    std::memcpy(&bits, &h, 2);
    return bits;
}

// Run ``body`` (one thread's view of the kernel) on a 1-D grid of 1-D blocks.
inline void emu_launch(unsigned grid, unsigned block, const std::function<void()>& body) {
    gridDim = emu_dim3{grid, 1, 1};
    blockDim = emu_dim3{block, 1, 1};
    std::barrier<> barrier(block);
    emu_block_barrier = &barrier;
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned t = 0; t < block; ++t) {
        threads.emplace_back([t, grid, &barrier, &body] {
            threadIdx = emu_dim3{t, 0, 0};
            for (unsigned b = 0; b < grid; ++b) {
                blockIdx = emu_dim3{b, 0, 0};
                body();
                barrier.arrive_and_wait();  // the block is done before the next one reuses __shared__ storage
            }
        });
    }
    for (auto& th : threads) th.join();
    emu_block_barrier = nullptr;
}
