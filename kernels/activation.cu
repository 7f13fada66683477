// activation.cu: ReLU and tanh, forward and backward (elementwise).
//
// Formulas (docs/design.md "Op semantics"):
//     relu_fwd   y  = max(0, x)                  (NaN in -> NaN out, like np.maximum)
//     relu_bwd   dx = dy where y > 0, else 0
//     tanh_fwd   y  = tanh(x)
//     tanh_bwd   dx = dy * (1 - y^2)
// Layout: any contiguous float32 tensor, seen as n flat elements.
// Thread mapping: a 1-D grid-stride loop, one element per thread per step;
// the launcher caps the grid, so any n works.
// Versions: v1: one element per thread, grid-stride loop (shipped).
//
// resources (nvcc 13.0 -O3 -Xptxas -v): registers per thread; no spills, no local memory, no shared memory
//     kernel      sm_80  sm_90
//     relu_fwd      12     14
//     relu_bwd      14     16
//     tanh_fwd      15     18
//     tanh_bwd      14     16
#include "common.cuh"

extern "C" __global__ void relu_fwd(const float* __restrict__ x,  // (n,)
                                    float* __restrict__ y,        // (n,)
                                    unsigned long long n) {
    for (unsigned long long i = cn_thread_index(); i < n; i += cn_thread_count()) {
        const float v = x[i];
        y[i] = v > 0.0f ? v : (v != v ? v : 0.0f);
    }
}

extern "C" __global__ void relu_bwd(const float* __restrict__ dy,  // (n,)
                                    const float* __restrict__ y,   // (n,) forward output
                                    float* __restrict__ dx,        // (n,)
                                    unsigned long long n) {
    for (unsigned long long i = cn_thread_index(); i < n; i += cn_thread_count())
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

extern "C" __global__ void tanh_fwd(const float* __restrict__ x,  // (n,)
                                    float* __restrict__ y,        // (n,)
                                    unsigned long long n) {
    for (unsigned long long i = cn_thread_index(); i < n; i += cn_thread_count())
        y[i] = tanhf(x[i]);
}

extern "C" __global__ void tanh_bwd(const float* __restrict__ dy,  // (n,)
                                    const float* __restrict__ y,   // (n,) forward output
                                    float* __restrict__ dx,        // (n,)
                                    unsigned long long n) {
    for (unsigned long long i = cn_thread_index(); i < n; i += cn_thread_count()) {
        const float t = y[i];
        dx[i] = dy[i] * (1.0f - t * t);
    }
}
