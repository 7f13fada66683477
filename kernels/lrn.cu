// lrn.cu: local response normalization across channels, forward and backward.
//
// Formula (the paper's convention: alpha multiplies the PLAIN sum, not the
// mean; paper values k = 2, size n = 5, alpha = 1e-4, beta = 0.75). At each
// pixel (b, :, h, w), with half = size / 2 and the window of channel i
//     win(i) = [max(0, i - half), min(C - 1, i + half)]:
//     s[i] = k + alpha * sum_{j in win(i)} x[j]^2
//     y[i] = x[i] * s[i]^(-beta)                                    (lrn_fwd)
//     dx[i] = dy[i] * s[i]^(-beta)
//             - 2 * alpha * beta * x[i] * sum_{j in win(i)} dy[j] * y[j] / s[j]   (lrn_bwd)
// (j in win(i) <=> i in win(j): the windows are symmetric, so the cross-channel
// term of the exact gradient sums over the same window.) PyTorch's
// LocalResponseNorm divides alpha by size: pass alpha * size there.
// Layout: NCHW float32 seen as (B, C, HW); channel j of pixel p of image b
// is at (b * C + j) * HW + p.
// Thread mapping: one thread per pixel (b, p), 1-D grid-stride loop over
// B * HW; the thread walks the C channels of its pixel. Neighbouring threads
// hold neighbouring p, so every load of a warp is one coalesced row.
// Window sums are recomputed directly for each channel (size loads, L1 hits)
// rather than slid with add/subtract, which loses precision when a large
// value leaves the window; backward recomputes s[j] for the size neighbours
// (size^2 cached loads per output).
// Versions: v1: thread per pixel, direct window sums (shipped).
//
// resources (nvcc 13.0 -O3 -Xptxas -v): registers per thread; no spills, no local memory, no shared memory
//     kernel   sm_80  sm_90
//     lrn_fwd    32     32
//     lrn_bwd    40     32
#include "common.cuh"

// k + alpha * (sum of x^2 over the window of channel i); xp points at channel 0
// of the pixel, consecutive channels hw apart.
__device__ __forceinline__ float cn_lrn_scale(const float* __restrict__ xp, int i, int c,
                                              int hw, int half, float alpha, float k) {
    const int lo = max(0, i - half), hi = min(c - 1, i + half);
    float sum = 0.0f;
    for (int j = lo; j <= hi; ++j) {
        const float v = xp[(long long)j * hw];
        sum += v * v;
    }
    return k + alpha * sum;
}

extern "C" __global__ void lrn_fwd(const float* __restrict__ x,  // (B, C, HW)
                                   float* __restrict__ y,        // (B, C, HW)
                                   int n, int c, int hw, int size,
                                   float alpha, float beta, float k) {
    const int half = size / 2;
    const int pixels = n * hw;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < pixels;
         idx += gridDim.x * blockDim.x) {
        const int b = idx / hw, p = idx % hw;
        const long long base = (long long)b * c * hw + p;
        const float* xp = x + base;
        float* yp = y + base;
        for (int i = 0; i < c; ++i) {
            const float s = cn_lrn_scale(xp, i, c, hw, half, alpha, k);
            yp[(long long)i * hw] = xp[(long long)i * hw] * powf(s, -beta);
        }
    }
}

extern "C" __global__ void lrn_bwd(const float* __restrict__ dy,  // (B, C, HW)
                                   const float* __restrict__ x,   // (B, C, HW)
                                   const float* __restrict__ y,   // (B, C, HW) forward output
                                   float* __restrict__ dx,        // (B, C, HW)
                                   int n, int c, int hw, int size,
                                   float alpha, float beta, float k) {
    const int half = size / 2;
    const int pixels = n * hw;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < pixels;
         idx += gridDim.x * blockDim.x) {
        const int b = idx / hw, p = idx % hw;
        const long long base = (long long)b * c * hw + p;
        const float* xp = x + base;
        const float* yp = y + base;
        const float* dyp = dy + base;
        float* dxp = dx + base;
        for (int i = 0; i < c; ++i) {
            const int lo = max(0, i - half), hi = min(c - 1, i + half);
            float cross = 0.0f;  // sum_{j in win(i)} dy[j] * y[j] / s[j]
            for (int j = lo; j <= hi; ++j) {
                const float sj = cn_lrn_scale(xp, j, c, hw, half, alpha, k);
                cross += dyp[(long long)j * hw] * yp[(long long)j * hw] / sj;
            }
            const float si = cn_lrn_scale(xp, i, c, hw, half, alpha, k);
            const long long o = (long long)i * hw;
            dxp[o] = dyp[o] * powf(si, -beta) - 2.0f * alpha * beta * xp[o] * cross;
        }
    }
}
