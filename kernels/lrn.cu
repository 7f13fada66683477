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
// Window sums are never slid with add/subtract (that loses precision when a
// large value leaves the window): each one is summed afresh.
// Versions:
//   v1 (lrn_fwd, lrn_bwd): direct window sums from memory: size loads per
//      output forward, size^2 (cached) loads backward, for s[j] of every
//      neighbour j. Any size.
//   v2 (lrn_fwd_v2, lrn_bwd_v2, shipped for size <= 9): the thread keeps the
//      window in registers as a shift register (template on half = size/2,
//      fully unrolled, so no local memory): each x, y is loaded once, dy
//      twice; forward keeps x[i-half .. i+half], backward x[i-2half .. i+2half]
//      and r[j] = dy[j] * y[j] / s[j] for j in [i-half, i+half]. Out-of-range
//      channels hold 0, which is the clipped window. The launcher uses v1
//      for size > 9.
//
// resources (nvcc 13.0 -O3 -Xptxas -v): registers per thread; no spills, no local memory, no shared memory
//     kernel      sm_80  sm_90
//     lrn_fwd       32     32
//     lrn_bwd       40     32
//     lrn_fwd_v2    32     32
//     lrn_bwd_v2    54     54
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

// ------------------------------------------------------------------- v2 ---
#define CN_LRN_V2_MAX_HALF 4

template <int H>
__device__ __forceinline__ void cn_lrn_fwd_v2_pixel(const float* __restrict__ xp,
                                                    float* __restrict__ yp, int c, int hw,
                                                    float alpha, float beta, float k) {
    constexpr int W = 2 * H + 1;
    float xs[W];  // xs[t] = x[i - H + t], 0 outside [0, c)
#pragma unroll
    for (int t = 0; t < W; ++t) {
        const int ch = t - H;
        xs[t] = (ch >= 0 && ch < c) ? xp[(long long)ch * hw] : 0.0f;
    }
    for (int i = 0; i < c; ++i) {
        float sum = 0.0f;
#pragma unroll
        for (int t = 0; t < W; ++t) sum += xs[t] * xs[t];
        yp[(long long)i * hw] = xs[H] * powf(k + alpha * sum, -beta);
#pragma unroll
        for (int t = 0; t + 1 < W; ++t) xs[t] = xs[t + 1];
        const int next = i + H + 1;
        xs[W - 1] = next < c ? xp[(long long)next * hw] : 0.0f;
    }
}

template <int H>
__device__ __forceinline__ void cn_lrn_bwd_v2_pixel(const float* __restrict__ dyp,
                                                    const float* __restrict__ xp,
                                                    const float* __restrict__ yp,
                                                    float* __restrict__ dxp, int c, int hw,
                                                    float alpha, float beta, float k) {
    constexpr int W = 2 * H + 1;
    constexpr int X = 4 * H + 1;
    float xs[X];  // xs[t] = x[i - 2H + t], 0 outside [0, c)
    float rr[W];  // rr[t] = r[i - H + t] = dy * y / s there, 0 outside [0, c)
#pragma unroll
    for (int t = 0; t < X; ++t) {
        const int ch = t - 2 * H;
        xs[t] = (ch >= 0 && ch < c) ? xp[(long long)ch * hw] : 0.0f;
    }
    // r for channels -H .. H-1 (slots 0 .. W-2); slot W-1 is filled in the loop.
    // s[j] sums x[j-H .. j+H] = xs[j + H .. j + 3H] while i = 0.
#pragma unroll
    for (int t = 0; t + 1 < W; ++t) {
        const int j = t - H;
        float r = 0.0f;
        if (j >= 0 && j < c) {
            float sum = 0.0f;
#pragma unroll
            for (int u = 0; u < W; ++u) sum += xs[j + H + u] * xs[j + H + u];
            const long long o = (long long)j * hw;
            r = dyp[o] * yp[o] / (k + alpha * sum);
        }
        rr[t] = r;
    }
    for (int i = 0; i < c; ++i) {
        // r[i + H] from s[i + H] = k + alpha * sum of xs[2H .. 4H]^2
        const int j = i + H;
        float rnew = 0.0f;
        if (j < c) {
            float sum = 0.0f;
#pragma unroll
            for (int u = 2 * H; u < X; ++u) sum += xs[u] * xs[u];
            const long long o = (long long)j * hw;
            rnew = dyp[o] * yp[o] / (k + alpha * sum);
        }
        rr[W - 1] = rnew;
        float si = 0.0f, cross = 0.0f;
#pragma unroll
        for (int u = H; u <= 3 * H; ++u) si += xs[u] * xs[u];
#pragma unroll
        for (int t = 0; t < W; ++t) cross += rr[t];
        const long long o = (long long)i * hw;
        dxp[o] = dyp[o] * powf(k + alpha * si, -beta) - 2.0f * alpha * beta * xs[2 * H] * cross;
        // slide both windows by one channel
#pragma unroll
        for (int t = 0; t + 1 < W; ++t) rr[t] = rr[t + 1];
#pragma unroll
        for (int t = 0; t + 1 < X; ++t) xs[t] = xs[t + 1];
        const int next = i + 2 * H + 1;
        xs[X - 1] = next < c ? xp[(long long)next * hw] : 0.0f;
    }
}

// v2 forward; size / 2 must be <= CN_LRN_V2_MAX_HALF (the launcher checks).
extern "C" __global__ void lrn_fwd_v2(const float* __restrict__ x,  // (B, C, HW)
                                      float* __restrict__ y,        // (B, C, HW)
                                      int n, int c, int hw, int size,
                                      float alpha, float beta, float k) {
    const int pixels = n * hw;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < pixels;
         idx += gridDim.x * blockDim.x) {
        const int b = idx / hw, p = idx % hw;
        const long long base = (long long)b * c * hw + p;
        switch (size / 2) {
            case 0: cn_lrn_fwd_v2_pixel<0>(x + base, y + base, c, hw, alpha, beta, k); break;
            case 1: cn_lrn_fwd_v2_pixel<1>(x + base, y + base, c, hw, alpha, beta, k); break;
            case 2: cn_lrn_fwd_v2_pixel<2>(x + base, y + base, c, hw, alpha, beta, k); break;
            case 3: cn_lrn_fwd_v2_pixel<3>(x + base, y + base, c, hw, alpha, beta, k); break;
            case 4: cn_lrn_fwd_v2_pixel<4>(x + base, y + base, c, hw, alpha, beta, k); break;
            default: break;
        }
    }
}

// v2 backward; size / 2 must be <= CN_LRN_V2_MAX_HALF (the launcher checks).
extern "C" __global__ void lrn_bwd_v2(const float* __restrict__ dy,  // (B, C, HW)
                                      const float* __restrict__ x,   // (B, C, HW)
                                      const float* __restrict__ y,   // (B, C, HW) forward output
                                      float* __restrict__ dx,        // (B, C, HW)
                                      int n, int c, int hw, int size,
                                      float alpha, float beta, float k) {
    const int pixels = n * hw;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < pixels;
         idx += gridDim.x * blockDim.x) {
        const int b = idx / hw, p = idx % hw;
        const long long base = (long long)b * c * hw + p;
        const float* d = dy + base;
        const float* xx = x + base;
        const float* yy = y + base;
        float* o = dx + base;
        switch (size / 2) {
            case 0: cn_lrn_bwd_v2_pixel<0>(d, xx, yy, o, c, hw, alpha, beta, k); break;
            case 1: cn_lrn_bwd_v2_pixel<1>(d, xx, yy, o, c, hw, alpha, beta, k); break;
            case 2: cn_lrn_bwd_v2_pixel<2>(d, xx, yy, o, c, hw, alpha, beta, k); break;
            case 3: cn_lrn_bwd_v2_pixel<3>(d, xx, yy, o, c, hw, alpha, beta, k); break;
            case 4: cn_lrn_bwd_v2_pixel<4>(d, xx, yy, o, c, hw, alpha, beta, k); break;
            default: break;
        }
    }
}
