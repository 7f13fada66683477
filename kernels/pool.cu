// pool.cu: overlapping max and average pooling, forward and backward.
//
// Formulas (docs/design.md "Op semantics"), window (oy, ox) of a plane:
//     rows  y0 = oy*stride .. min(y0 + size, H) - 1, columns likewise
//     (the last window may be clipped at the border; OH = ceil((H-size)/stride)+1)
//     maxpool_fwd  y[oy,ox] = max of the window
//     maxpool_bwd  dx[iy,ix] = sum over the windows covering (iy,ix) of dy[oy,ox]
//                  when (iy,ix) is the FIRST maximum of that window in
//                  row-major order (ties go to the first), else 0
//     avgpool_fwd  y[oy,ox] = sum of the window / count, count = in-image
//                  elements of the clipped window
//     avgpool_bwd  dx[iy,ix] = sum over covering windows of dy[oy,ox] / count(oy,ox)
// Layout: NCHW float32; planes p = n*C + c are independent, so kernels see
// (P, H, W) inputs and (P, OH, OW) outputs.
// Thread mapping: forward: one thread per output element (p, oy, ox), 1-D
// grid-stride loop. Backward is a gather, not a scatter: one thread per
// input element (p, iy, ix) visits the (at most ceil(size/stride)^2) windows
// that cover it and sums their contributions: no atomics, deterministic.
// The covering windows of row iy are oy in
//     [iy < size ? 0 : (iy - size) / stride + 1,  min(iy / stride, OH - 1)].
// Max backward decides "first maximum" by comparing x with y (the forward
// output, the exact max) and rescanning the window before (iy, ix).
// Indices are 32-bit: the launcher rejects tensors of 2^31 elements or more.
// Versions: v1: thread per output (forward) / per input (backward gather) (shipped).
//
// resources (nvcc 13.0 -O3 -Xptxas -v): registers per thread; no spills, no local memory, no shared memory
//     kernel       sm_80  sm_90
//     maxpool_fwd    30     30
//     maxpool_bwd    36     31
//     avgpool_fwd    30     30
//     avgpool_bwd    37     37
#include "common.cuh"

extern "C" __global__ void maxpool_fwd(const float* __restrict__ x,  // (P, H, W)
                                       float* __restrict__ y,        // (P, OH, OW)
                                       int planes, int H, int W, int OH, int OW,
                                       int size, int stride) {
    const int total = planes * OH * OW;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += gridDim.x * blockDim.x) {
        const int ox = idx % OW;
        const int oy = (idx / OW) % OH;
        const int p = idx / (OW * OH);
        const int y0 = oy * stride, x0 = ox * stride;
        const int y1 = min(y0 + size, H), x1 = min(x0 + size, W);
        const float* xp = x + (long long)p * H * W;
        float best = xp[y0 * W + x0];
        for (int iy = y0; iy < y1; ++iy)
            for (int ix = x0; ix < x1; ++ix) {
                const float v = xp[iy * W + ix];
                if (v > best) best = v;  // strict: the first maximum wins
            }
        y[idx] = best;
    }
}

extern "C" __global__ void maxpool_bwd(const float* __restrict__ dy,  // (P, OH, OW)
                                       const float* __restrict__ x,   // (P, H, W)
                                       const float* __restrict__ y,   // (P, OH, OW)
                                       float* __restrict__ dx,        // (P, H, W)
                                       int planes, int H, int W, int OH, int OW,
                                       int size, int stride) {
    const int total = planes * H * W;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += gridDim.x * blockDim.x) {
        const int ix = idx % W;
        const int iy = (idx / W) % H;
        const int p = idx / (W * H);
        const float* xp = x + (long long)p * H * W;
        const float* yp = y + (long long)p * OH * OW;
        const float* dyp = dy + (long long)p * OH * OW;
        const float xv = x[idx];
        const int oy_lo = iy < size ? 0 : (iy - size) / stride + 1;
        const int oy_hi = min(iy / stride, OH - 1);
        const int ox_lo = ix < size ? 0 : (ix - size) / stride + 1;
        const int ox_hi = min(ix / stride, OW - 1);
        float acc = 0.0f;
        for (int oy = oy_lo; oy <= oy_hi; ++oy)
            for (int ox = ox_lo; ox <= ox_hi; ++ox) {
                const float yv = yp[oy * OW + ox];
                if (xv != yv) continue;
                // (iy, ix) holds the maximum; is it the first one in row-major order?
                const int y0 = oy * stride, x0 = ox * stride;
                const int x1 = min(x0 + size, W);
                bool first = true;
                for (int sy = y0; sy <= iy && first; ++sy) {
                    const int end = sy < iy ? x1 : ix;
                    for (int sx = x0; sx < end; ++sx)
                        if (xp[sy * W + sx] == yv) { first = false; break; }
                }
                if (first) acc += dyp[oy * OW + ox];
            }
        dx[idx] = acc;
    }
}

extern "C" __global__ void avgpool_fwd(const float* __restrict__ x,  // (P, H, W)
                                       float* __restrict__ y,        // (P, OH, OW)
                                       int planes, int H, int W, int OH, int OW,
                                       int size, int stride) {
    const int total = planes * OH * OW;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += gridDim.x * blockDim.x) {
        const int ox = idx % OW;
        const int oy = (idx / OW) % OH;
        const int p = idx / (OW * OH);
        const int y0 = oy * stride, x0 = ox * stride;
        const int y1 = min(y0 + size, H), x1 = min(x0 + size, W);
        const float* xp = x + (long long)p * H * W;
        float sum = 0.0f;
        for (int iy = y0; iy < y1; ++iy)
            for (int ix = x0; ix < x1; ++ix) sum += xp[iy * W + ix];
        y[idx] = sum / (float)((y1 - y0) * (x1 - x0));
    }
}

extern "C" __global__ void avgpool_bwd(const float* __restrict__ dy,  // (P, OH, OW)
                                       float* __restrict__ dx,        // (P, H, W)
                                       int planes, int H, int W, int OH, int OW,
                                       int size, int stride) {
    const int total = planes * H * W;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += gridDim.x * blockDim.x) {
        const int ix = idx % W;
        const int iy = (idx / W) % H;
        const int p = idx / (W * H);
        const float* dyp = dy + (long long)p * OH * OW;
        const int oy_lo = iy < size ? 0 : (iy - size) / stride + 1;
        const int oy_hi = min(iy / stride, OH - 1);
        const int ox_lo = ix < size ? 0 : (ix - size) / stride + 1;
        const int ox_hi = min(ix / stride, OW - 1);
        float acc = 0.0f;
        for (int oy = oy_lo; oy <= oy_hi; ++oy) {
            const int rows = min(oy * stride + size, H) - oy * stride;
            for (int ox = ox_lo; ox <= ox_hi; ++ox) {
                const int cols = min(ox * stride + size, W) - ox * stride;
                acc += dyp[oy * OW + ox] / (float)(rows * cols);
            }
        }
        dx[idx] = acc;
    }
}
