// sgd.cu: the paper's SGD update with momentum and weight decay, fused, in place.
//
// Formula (docs/spec.md "Training"; docs/design.md "Op semantics"):
//     v <- momentum * v - weight_decay * lr * w - lr * dw
//     w <- w + v
// `decay` is weight_decay * lr, multiplied out once by the launcher.
// Layout: w, dw, v: any contiguous float32 tensors of n elements, same shape.
// Thread mapping: 1-D grid-stride loop, one element per thread per step;
// each element is read once (w, dw, v) and written once (w, v).
// Versions: v1: one element per thread (shipped).
//
// resources (nvcc 13.0 -O3 -Xptxas -v): registers per thread; no spills, no local memory, no shared memory
//     kernel      sm_80  sm_90
//     sgd_update    16     18
#include "common.cuh"

extern "C" __global__ void sgd_update(float* __restrict__ w,         // (n,) updated in place
                                      const float* __restrict__ dw,  // (n,)
                                      float* __restrict__ v,         // (n,) updated in place
                                      unsigned long long n,
                                      float lr, float momentum, float decay) {
    for (unsigned long long i = cn_thread_index(); i < n; i += cn_thread_count()) {
        const float wi = w[i];
        const float vi = momentum * v[i] - decay * wi - lr * dw[i];
        v[i] = vi;
        w[i] = wi + vi;
    }
}
