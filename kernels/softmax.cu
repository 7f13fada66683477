// softmax.cu: softmax, cross-entropy loss and its gradient, top-k error count.
//
// Formulas (docs/design.md "Op semantics"), logits z of shape (N, K):
//     m_r = max_j z[r,j]                       (subtracted first: stable for huge logits)
//     softmax_fwd       p[r,j] = exp(z[r,j] - m_r) / sum_j exp(z[r,j] - m_r)
//     softmax_xent_fwd  p as above and loss[r] = log(sum_j exp(z[r,j] - m_r)) - (z[r,label_r] - m_r)
//     softmax_loss_mean out[0] = (sum_r loss[r]) / N
//     softmax_xent_bwd  dz[r,j] = (p[r,j] - [j == label_r]) / N
//     topk_count        errors += 1 for each row where #{j : z[r,j] > z[r,label_r]} >= topk
// Layout: row-major (N, K) float32; labels int32 (N,), checked in range by the launcher.
// Thread mapping: softmax_fwd, softmax_xent_fwd, topk_count: one warp per
// row (blockDim.x a multiple of 32, row = global thread index / 32); lanes
// stride over the K columns and combine with butterfly shuffles
// (cn_warp_max / cn_warp_sum in common.cuh). softmax_loss_mean: one block,
// each thread sums a strided slice, then a shared-memory tree reduction
// (blockDim.x a power of two, <= 1024; fixed order: deterministic).
// softmax_xent_bwd: elementwise grid-stride loop. topk_count: lane 0 adds
// the row's error with an integer atomicAdd (exact, order-independent).
// Versions: v1: warp per row with shuffles, single-block mean (shipped).
//
// resources (nvcc 13.0 -O3 -Xptxas -v): registers per thread; no spills, no local memory
//     kernel             sm_80  sm_90  shared memory
//     softmax_fwd          31     30   -
//     softmax_xent_fwd     31     31   -
//     softmax_loss_mean    13     14   blockDim.x * 4 bytes (dynamic)
//     softmax_xent_bwd     32     32   -
//     topk_count           32     32   -
#include "common.cuh"

#define CN_NEG_INF __int_as_float(0xff800000)

// Row maximum and sum of exp(z - max), every lane of the warp gets both.
__device__ __forceinline__ void cn_row_max_sum(const float* __restrict__ z, int k, int lane,
                                               float& m, float& s) {
    m = CN_NEG_INF;
    for (int j = lane; j < k; j += 32) m = fmaxf(m, z[j]);
    m = cn_warp_max(m);
    s = 0.0f;
    for (int j = lane; j < k; j += 32) s += expf(z[j] - m);
    s = cn_warp_sum(s);
}

extern "C" __global__ void softmax_fwd(const float* __restrict__ logits,  // (N, K)
                                       float* __restrict__ probs,         // (N, K)
                                       int n, int k) {
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (row >= n) return;  // whole warps leave together
    const float* z = logits + (long long)row * k;
    float* p = probs + (long long)row * k;
    float m, s;
    cn_row_max_sum(z, k, lane, m, s);
    const float inv = 1.0f / s;
    for (int j = lane; j < k; j += 32) p[j] = expf(z[j] - m) * inv;
}

extern "C" __global__ void softmax_xent_fwd(const float* __restrict__ logits,  // (N, K)
                                            const int* __restrict__ labels,    // (N,)
                                            float* __restrict__ probs,         // (N, K)
                                            float* __restrict__ losses,        // (N,)
                                            int n, int k) {
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (row >= n) return;
    const float* z = logits + (long long)row * k;
    float* p = probs + (long long)row * k;
    float m, s;
    cn_row_max_sum(z, k, lane, m, s);
    const float inv = 1.0f / s;
    for (int j = lane; j < k; j += 32) p[j] = expf(z[j] - m) * inv;
    if (lane == 0) losses[row] = logf(s) - (z[labels[row]] - m);
}

// out[0] = mean of v[0..n). Launch with ONE block of blockDim.x threads
// (a power of two) and blockDim.x * sizeof(float) bytes of dynamic shared memory.
extern "C" __global__ void softmax_loss_mean(const float* __restrict__ v,  // (n,)
                                             float* __restrict__ out,      // (1,)
                                             int n) {
    extern __shared__ __align__(16) unsigned char cn_smem[];
    float* part = reinterpret_cast<float*>(cn_smem);  // (blockDim.x,)
    float acc = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc += v[i];
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if ((int)threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = part[0] / (float)n;
}

extern "C" __global__ void softmax_xent_bwd(const float* __restrict__ probs,  // (N, K)
                                            const int* __restrict__ labels,   // (N,)
                                            float* __restrict__ dlogits,      // (N, K)
                                            int n, int k) {
    const long long total = (long long)n * k;
    const float fn = (float)n;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int row = (int)(i / k), col = (int)(i % k);
        const float onehot = col == labels[row] ? 1.0f : 0.0f;
        dlogits[i] = (probs[i] - onehot) / fn;
    }
}

// errors[0] += number of rows whose label is outranked (strictly) by >= topk
// classes. errors must be zeroed before the launch.
extern "C" __global__ void topk_count(const float* __restrict__ logits,  // (N, K)
                                      const int* __restrict__ labels,    // (N,)
                                      int* __restrict__ errors,          // (1,)
                                      int n, int k, int topk) {
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (row >= n) return;
    const float* z = logits + (long long)row * k;
    const float target = z[labels[row]];
    int larger = 0;
    for (int j = lane; j < k; j += 32) larger += z[j] > target ? 1 : 0;
    larger = cn_warp_sum_int(larger);
    if (lane == 0 && larger >= topk) atomicAdd(errors, 1);
}
