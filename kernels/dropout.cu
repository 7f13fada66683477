// dropout.cu: inverted dropout whose mask is regenerated, never stored.
//
// Formula (docs/design.md "Op semantics"): element g (flat C-order index,
// g = offset + i) is kept when
//     philox4x32_10(counter = (g mod 2^32, g >> 32, 0, 0),
//                   key     = (seed mod 2^32, seed >> 32)).word0 >= threshold
// with threshold = min(round(p * 2^32), 2^32 - 1) computed once by the
// launcher; kept values are multiplied by scale = 1 / (1 - p):
//     forward   y  = keep(g) ? x  * scale : 0
//     backward  dx = keep(g) ? dy * scale : 0      (the same kernel)
// `offset` shifts the element index so a tensor can be processed in pieces
// (and so the counter split at 2^32 can be tested on a small array).
// Layout: any contiguous float32 tensor, seen as n flat elements.
// Thread mapping: 1-D grid-stride loop, one element (one Philox call) per
// thread per step.
// Versions: v1: one Philox call per element, word 0 only (shipped).
//
// resources (nvcc 13.0 -O3 -Xptxas -v): registers per thread; no spills, no local memory, no shared memory
//     kernel         sm_80  sm_90
//     dropout_apply    14     16
//     dropout_mask     14     16
#include "common.cuh"

__device__ __forceinline__ bool cn_dropout_keep(unsigned long long g, unsigned long long seed,
                                                unsigned int threshold) {
    const cn_u32x4 r = philox4x32_10((unsigned int)g, (unsigned int)(g >> 32), 0u, 0u,
                                     (unsigned int)seed, (unsigned int)(seed >> 32));
    return r.x >= threshold;
}

// y = keep ? x * scale : 0; used for forward (x) and backward (dy).
extern "C" __global__ void dropout_apply(const float* __restrict__ x,  // (n,)
                                         float* __restrict__ y,        // (n,)
                                         unsigned long long n,
                                         unsigned int threshold,
                                         float scale,
                                         unsigned long long seed,
                                         unsigned long long offset) {
    for (unsigned long long i = cn_thread_index(); i < n; i += cn_thread_count())
        y[i] = cn_dropout_keep(offset + i, seed, threshold) ? x[i] * scale : 0.0f;
}

// mask[i] = keep(offset + i): the mask itself, for tests and inspection.
extern "C" __global__ void dropout_mask(unsigned char* __restrict__ mask,  // (n,)
                                        unsigned long long n,
                                        unsigned int threshold,
                                        unsigned long long seed,
                                        unsigned long long offset) {
    for (unsigned long long i = cn_thread_index(); i < n; i += cn_thread_count())
        mask[i] = cn_dropout_keep(offset + i, seed, threshold) ? 1 : 0;
}
