// fused.cu: fusions of memory-bound layer pairs, each equal to its unfused sequence.
//
// 1. LRN followed by max pooling (AlexNet lrn1 -> pool1, lrn2 -> pool2).
//    Formula: z = lrn(x) (kernels/lrn.cu: alpha on the plain sum; with cg channels per
//    group the channel window is clipped to the group of channel i), then
//        s[i]  = k + alpha * sum_{j in win(i)} x[j]^2,   z[i] = x[i] * s[i]^(-beta)
//        y     = max of z over each pool x pool window (stride `stride`, last window
//                clipped, OH = ceil((H - pool) / stride) + 1)         (lrn_maxpool_fwd)
//        arg   = (iy - y0) * pool + (ix - x0) of the FIRST maximum in row-major order
//    backward, from dy (the gradient of y):
//        dz[j] = sum over the windows covering the pixel whose arg points at it of dy
//        dx[i] = dz[i] * s[i]^(-beta)
//                - 2 * alpha * beta * x[i] * sum_{j in win(i)} dz[j] * z[j] / s[j]   (lrn_maxpool_bwd)
//    What is stored between the passes: y (the next layer reads it anyway) and
//    arg, one byte per pooled output; z is never written. Bytes per input
//    element (4-byte floats, 3/2 pooling leaves ~1/4 as many outputs):
//        unfused:  lrn fwd 4+4, pool fwd 4+1, pool bwd 1+4+1+4, lrn bwd 4+4+4+4  = 39
//        fused:    fwd x 4 + y 1 + arg 0.25, bwd x 4 + dy 1 + arg 0.25 + dx 4     = 14.5
//    (storing z instead would cost 4 more on each side; storing nothing and
//    re-deciding the first maximum in backward reads y (1) instead of arg
//    (0.25) and recomputes the LRN of every earlier element of each window).
//    The LRN is recomputed from x in both passes (x is read through the cache:
//    each element by ~2.25 pool windows x `size` channels); the arithmetic and
//    the order of every sum are those of lrn_fwd_v2 / lrn_bwd_v2 and
//    maxpool_bwd, so on the same inputs the fused results equal the unfused
//    kernels' up to floating-point contraction choices of the compiler.
//
// 2. ReLU followed by inverted dropout (fc6 / fc7): with keep(g) the Philox
//    mask of kernels/dropout.cu (element g kept when word 0 of
//    philox4x32_10((g mod 2^32, g >> 32, 0, 0), (seed mod 2^32, seed >> 32))
//    >= threshold) and scale = 1 / (1 - p):
//        y  = keep(g) ? relu(x) * scale : 0                              (relu_dropout_fwd)
//        dx = y > 0 ? dy * scale : 0                                     (relu_dropout_bwd)
//    y > 0 holds exactly where the element was kept AND relu(x) > 0 (scale >= 1),
//    so the backward needs neither the mask nor the ReLU output: it reads dy
//    and y and writes dx (12 bytes an element; unfused: dropout bwd 8 + relu bwd 12,
//    forward 8 + 8 against 8 fused).
//
// Layout: NCHW float32; arg is uint8 (B, C, OH, OW) (pool * pool <= 256, the
// launcher checks); the dropout kernels see any contiguous tensor as n flat elements.
// Thread mapping: lrn_maxpool_fwd: one thread per pooled output (b, c, oy, ox),
// 1-D grid-stride loop, neighbouring threads neighbouring ox; lrn_maxpool_bwd:
// a gather, one thread per input element (b, c, iy, ix): no atomics,
// deterministic; relu_dropout_*: 1-D grid-stride loop, one element per thread per step.
// Indices of the LRN/pool kernels are 32-bit per plane offset, 64-bit for the
// tensor; the launcher rejects tensors of 2^31 elements or more.
// Versions: v1: the mappings above (shipped).
//
// resources (nvcc 13.0 -O3 -Xptxas -v): registers per thread; no spills, no local memory, no shared memory
//     kernel            sm_80  sm_90
//     lrn_maxpool_fwd     48     48
//     lrn_maxpool_bwd     62     55
//     relu_dropout_fwd    18     22
//     relu_dropout_bwd    14     18
#include "common.cuh"

// k + alpha * (sum of x^2 over channels lo .. hi, ascending); xp points at channel 0
// of the pixel, consecutive channels hw apart.
__device__ __forceinline__ float cn_fused_lrn_scale(const float* __restrict__ xp, int lo, int hi,
                                                    int hw, float alpha, float k) {
    float sum = 0.0f;
    for (int j = lo; j <= hi; ++j) {
        const float v = xp[(long long)j * hw];
        sum += v * v;
    }
    return k + alpha * sum;
}

extern "C" __global__ void lrn_maxpool_fwd(const float* __restrict__ x,    // (B, C, H, W)
                                           float* __restrict__ y,          // (B, C, OH, OW)
                                           unsigned char* __restrict__ arg,  // (B, C, OH, OW)
                                           int n, int c, int cg, int H, int W, int OH, int OW,
                                           int size, float alpha, float beta, float k,
                                           int pool, int stride) {
    const int half = size / 2;
    const int hw = H * W;
    const int total = n * c * OH * OW;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += gridDim.x * blockDim.x) {
        const int ox = idx % OW;
        const int oy = (idx / OW) % OH;
        const int ch = (idx / (OW * OH)) % c;
        const int b = idx / (OW * OH * c);
        const int g0 = ch - ch % cg;                      // first channel of the group
        const int lo = max(g0, ch - half), hi = min(g0 + cg - 1, ch + half);
        const float* xb = x + (long long)b * c * hw;      // channel 0 of image b
        const int y0 = oy * stride, x0 = ox * stride;
        const int y1 = min(y0 + pool, H), x1 = min(x0 + pool, W);
        float best = 0.0f;
        int best_at = -1;
        for (int iy = y0; iy < y1; ++iy)
            for (int ix = x0; ix < x1; ++ix) {
                const float* xp = xb + iy * W + ix;
                const float s = cn_fused_lrn_scale(xp, lo, hi, hw, alpha, k);
                const float z = xp[(long long)ch * hw] * powf(s, -beta);
                if (best_at < 0 || z > best) {            // strict: the first maximum wins
                    best = z;
                    best_at = (iy - y0) * pool + (ix - x0);
                }
            }
        y[idx] = best;
        arg[idx] = (unsigned char)best_at;
    }
}

extern "C" __global__ void lrn_maxpool_bwd(const float* __restrict__ dy,           // (B, C, OH, OW)
                                           const float* __restrict__ x,            // (B, C, H, W)
                                           const unsigned char* __restrict__ arg,  // (B, C, OH, OW)
                                           float* __restrict__ dx,                 // (B, C, H, W)
                                           int n, int c, int cg, int H, int W, int OH, int OW,
                                           int size, float alpha, float beta, float k,
                                           int pool, int stride) {
    const int half = size / 2;
    const int hw = H * W;
    const int ohw = OH * OW;
    const int total = n * c * hw;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += gridDim.x * blockDim.x) {
        const int p = idx % hw;
        const int ix = p % W, iy = p / W;
        const int ch = (idx / hw) % c;
        const int b = idx / (hw * c);
        const int g0 = ch - ch % cg, g1 = g0 + cg - 1;
        const int lo = max(g0, ch - half), hi = min(g1, ch + half);
        const float* xp = x + (long long)b * c * hw + p;                  // channel 0, this pixel
        const float* dyb = dy + (long long)b * c * ohw;
        const unsigned char* ab = arg + (long long)b * c * ohw;
        // the pool windows covering (iy, ix), as in maxpool_bwd
        const int oy_lo = iy < pool ? 0 : (iy - pool) / stride + 1;
        const int oy_hi = min(iy / stride, OH - 1);
        const int ox_lo = ix < pool ? 0 : (ix - pool) / stride + 1;
        const int ox_hi = min(ix / stride, OW - 1);
        float cross = 0.0f;      // sum_{j in win(ch)} dz[j] * z[j] / s[j]
        float dz_ch = 0.0f, s_ch = 0.0f;
        for (int j = lo; j <= hi; ++j) {
            float dz = 0.0f;
            const long long plane = (long long)j * ohw;
            for (int oy = oy_lo; oy <= oy_hi; ++oy)
                for (int ox = ox_lo; ox <= ox_hi; ++ox) {
                    const long long o = plane + oy * OW + ox;
                    if (ab[o] == (iy - oy * stride) * pool + (ix - ox * stride)) dz += dyb[o];
                }
            if (j == ch) {
                dz_ch = dz;
                s_ch = cn_fused_lrn_scale(xp, lo, hi, hw, alpha, k);
            }
            if (dz != 0.0f) {
                const float s = j == ch ? s_ch
                                        : cn_fused_lrn_scale(xp, max(g0, j - half), min(g1, j + half),
                                                             hw, alpha, k);
                const float z = xp[(long long)j * hw] * powf(s, -beta);
                cross += dz * z / s;
            }
        }
        dx[idx] = dz_ch == 0.0f && cross == 0.0f
                      ? 0.0f
                      : dz_ch * powf(s_ch, -beta) - 2.0f * alpha * beta * xp[(long long)ch * hw] * cross;
    }
}

// Element g's keep decision, the same as kernels/dropout.cu's.
__device__ __forceinline__ bool cn_fused_keep(unsigned long long g, unsigned long long seed,
                                              unsigned int threshold) {
    const cn_u32x4 r = philox4x32_10((unsigned int)g, (unsigned int)(g >> 32), 0u, 0u,
                                     (unsigned int)seed, (unsigned int)(seed >> 32));
    return r.x >= threshold;
}

extern "C" __global__ void relu_dropout_fwd(const float* __restrict__ x,  // (n,)
                                            float* __restrict__ y,        // (n,)
                                            unsigned long long n,
                                            unsigned int threshold,
                                            float scale,
                                            unsigned long long seed) {
    for (unsigned long long i = cn_thread_index(); i < n; i += cn_thread_count()) {
        const float v = x[i];
        const float r = v > 0.0f ? v : (v != v ? v : 0.0f);   // relu_fwd: NaN stays NaN
        y[i] = cn_fused_keep(i, seed, threshold) ? r * scale : 0.0f;
    }
}

extern "C" __global__ void relu_dropout_bwd(const float* __restrict__ dy,  // (n,)
                                            const float* __restrict__ y,   // (n,) forward output
                                            float* __restrict__ dx,        // (n,)
                                            unsigned long long n,
                                            float scale) {
    for (unsigned long long i = cn_thread_index(); i < n; i += cn_thread_count())
        dx[i] = y[i] > 0.0f ? dy[i] * scale : 0.0f;
}
