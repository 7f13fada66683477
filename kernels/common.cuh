// common.cuh: small device helpers shared by kernels/*.cu.
//
// Included by every kernel source that needs it, both under nvcc/NVRTC (GPU)
// and under g++ with bindings/cuda_emu.h force-included (CN_EMULATION).
// No standard headers: only what CUDA itself provides.
//
//   philox4x32_10(c0..c3, k0, k1)  the Random123 Philox4x32-10 counter-based
//                                  generator; the same function as
//                                  convnet.reference.philox4x32_10
//   cn_warp_sum / cn_warp_max      butterfly reductions over a full warp
//                                  (__shfl_xor_sync; every lane gets the result)
//   cn_thread_index / cn_thread_count  flat 1-D grid indices for grid-stride loops
#pragma once

// ---------------------------------------------------------------- Philox ---
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC 2011). State: a 128-bit counter (4 x uint32) and a 64-bit key
// (2 x uint32). One round:
//     (hi0, lo0) = M0 * c0        (hi1, lo1) = M1 * c2     (32 x 32 -> 64 bits)
//     c = (hi1 ^ c1 ^ k0,  lo1,  hi0 ^ c3 ^ k1,  lo0)
// then the key is bumped by the Weyl constants (W0, W1) before the next round.
// Ten rounds; the result is the final counter.
// Known answers (Random123 kat_vectors): ctr = key = 0 ->
// 6627e8d5 e169c58d bc57ac4c 9b00dbd8.

#define CN_PHILOX_M0 0xD2511F53u
#define CN_PHILOX_M1 0xCD9E8D57u
#define CN_PHILOX_W0 0x9E3779B9u
#define CN_PHILOX_W1 0xBB67AE85u

struct cn_u32x4 {
    unsigned int x, y, z, w;
};

__device__ __forceinline__ void cn_philox_round(unsigned int& c0, unsigned int& c1,
                                                unsigned int& c2, unsigned int& c3,
                                                unsigned int k0, unsigned int k1) {
    const unsigned int lo0 = CN_PHILOX_M0 * c0;
    const unsigned int hi0 = __umulhi(CN_PHILOX_M0, c0);
    const unsigned int lo1 = CN_PHILOX_M1 * c2;
    const unsigned int hi1 = __umulhi(CN_PHILOX_M1, c2);
    const unsigned int n0 = hi1 ^ c1 ^ k0;
    const unsigned int n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
}

// The four output words of Philox4x32-10 for counter (c0, c1, c2, c3), key (k0, k1).
__device__ __forceinline__ cn_u32x4 philox4x32_10(unsigned int c0, unsigned int c1,
                                                  unsigned int c2, unsigned int c3,
                                                  unsigned int k0, unsigned int k1) {
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        cn_philox_round(c0, c1, c2, c3, k0, k1);
        k0 += CN_PHILOX_W0;
        k1 += CN_PHILOX_W1;
    }
    cn_u32x4 out;
    out.x = c0;
    out.y = c1;
    out.z = c2;
    out.w = c3;
    return out;
}

// ------------------------------------------------------- warp reductions ---
// All 32 lanes must call these (full mask); every lane receives the result.
__device__ __forceinline__ float cn_warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float cn_warp_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

__device__ __forceinline__ int cn_warp_sum_int(int v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// ----------------------------------------------------------- 1-D indices ---
// Flat index of this thread in a 1-D grid of 1-D blocks, and the number of
// threads in the grid (the stride of a grid-stride loop). 64-bit so that
// element counts above 2^31 stay correct.
__device__ __forceinline__ unsigned long long cn_thread_index() {
    return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ unsigned long long cn_thread_count() {
    return (unsigned long long)gridDim.x * blockDim.x;
}
