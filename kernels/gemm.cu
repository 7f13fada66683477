// kernels/gemm.cu -- single-precision GEMM for the fully connected layers, plus
// the bias add and the bias gradient (column sum). float32.
//
// Formula: C = alpha * op(A) @ op(B) + beta * C, op(X) = X or X^T (trans_a, trans_b),
//   op(A): (M, K), op(B): (K, N), C: (M, N). When beta == 0, C is not read
//   (it may hold garbage or NaN).
//   fc_bias_add:      y[i, j] += b[j]            y: (M, N)
//   fc_bias_grad_v1:  db[j] = sum_i dy[i, j]     dy: (M, N), summed in order i = 0, 1, ...
// The fc layers (convnet/kernel_ops/gemm.py): fc_forward = x @ w.T (NT) + bias add,
//   fc_backward_data = dy @ w (NN), fc_backward_filter = dy.T @ x (TN).
//
// Layout: row-major everywhere. A is (M, K) with leading dimension lda
//   (trans_a = 0) or (K, M) (trans_a = 1); B is (K, N) with ldb (trans_b = 0)
//   or (N, K) (trans_b = 1); C is (M, N) with ldc.
//
// Versions (the launcher names the shipped one):
//   v1: one thread per C element, a direct dot product over K. Block 16x16,
//       threadIdx.x -> column, threadIdx.y -> row.
//   v2: tiled through shared memory. Block = (BM/TM)*(BN/TN) threads computes a
//       BM x BN tile of C: blockIdx.x = column tile, blockIdx.y = row tile. Each K
//       step of BK stages op(A) (BK x BM) and op(B) (BK x BN) in shared memory,
//       loaded coalesced along whichever dimension is contiguous in memory (a
//       compile-time choice from the transpose flags); thread t = ty*(BN/TN) + tx
//       accumulates rows ty + r*(BM/TM), columns tx + s*(BN/TN) in registers.
//       The transpose flags pick one of four template instances.
//   fc_bias_add, fc_bias_grad_v1: one thread per element / per column.
//
// resources (sm_90, nvcc 13.0 -Xptxas -v):
//   kernel             regs  smem (bytes)
//   sgemm_v1             32      0
//   sgemm_v2             48   4352
//   fc_bias_add          14      0
//   fc_bias_grad_v1      32      0
//   (no spills, no local memory)
#include "common.cuh"

namespace gemm {

constexpr int BM = 64, BN = 64, BK = 8, TM = 4, TN = 4;
constexpr int V2_THREADS = (BM / TM) * (BN / TN);   // 256
// Shared tiles are padded by 4 floats per row: a transposing tile load (consecutive
// threads along the tile's rows) then hits 32 different banks per warp.
constexpr int PAD = 4;

// Stage a ROWS x COLS tile T[r][c] = src(r0 + r, c0 + c) (0 outside R x Cn) into
// shared memory, where src(r, c) = p[r * ld + c] (ROW_MAJOR) or p[c * ld + r].
// Consecutive threads take consecutive addresses in memory.
template <int ROWS, int COLS, int NT, bool ROW_MAJOR>
__device__ __forceinline__ void load_tile(float (&T)[ROWS][COLS + PAD], const float* __restrict__ p, int ld,
                                          int r0, int c0, int R, int Cn)
{
    static_assert((ROWS * COLS) % NT == 0, "tile loads must split evenly");
#pragma unroll
    for (int i = 0; i < ROWS * COLS / NT; ++i) {
        const int e = threadIdx.x + i * NT;
        const int r = ROW_MAJOR ? e / COLS : e % ROWS;
        const int c = ROW_MAJOR ? e % COLS : e / ROWS;
        const int gr = r0 + r, gc = c0 + c;
        T[r][c] = (gr < R && gc < Cn) ? (ROW_MAJOR ? p[gr * ld + gc] : p[gc * ld + gr]) : 0.f;
    }
}

// As[k][m] = op(A)[m, k]; Bs[k][n] = op(B)[k, n] (shared memory of the caller, so that
// the four instances of one kernel share it).
template <bool TA, bool TB>
__device__ __forceinline__ void sgemm_tiled(float (&As)[BK][BM + PAD], float (&Bs)[BK][BN + PAD],
                                            const float* __restrict__ A, const float* __restrict__ B,
                                            float* __restrict__ C, int M, int N, int K,
                                            int lda, int ldb, int ldc, float alpha, float beta)
{
    constexpr int NTX = BN / TN, NTY = BM / TM, NT = V2_THREADS;
    const int tx = threadIdx.x % NTX, ty = threadIdx.x / NTX;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;

    float acc[TM][TN];
#pragma unroll
    for (int r = 0; r < TM; ++r)
#pragma unroll
        for (int s = 0; s < TN; ++s) acc[r][s] = 0.f;

    for (int k0 = 0; k0 < K; k0 += BK) {
        // op(A)^T tile (k, m): A^T is row-major (K, M) when TA, else A (M, K) is, read transposed.
        load_tile<BK, BM, NT, TA>(As, A, lda, k0, row0, K, M);
        // op(B) tile (k, n): B (K, N) row-major when !TB, else B^T.
        load_tile<BK, BN, NT, !TB>(Bs, B, ldb, k0, col0, K, N);
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float av[TM], bv[TN];
#pragma unroll
            for (int r = 0; r < TM; ++r) av[r] = As[kk][ty + r * NTY];
#pragma unroll
            for (int s = 0; s < TN; ++s) bv[s] = Bs[kk][tx + s * NTX];
#pragma unroll
            for (int r = 0; r < TM; ++r)
#pragma unroll
                for (int s = 0; s < TN; ++s) acc[r][s] = fmaf(av[r], bv[s], acc[r][s]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int r = 0; r < TM; ++r) {
        const int m = row0 + ty + r * NTY;
#pragma unroll
        for (int s = 0; s < TN; ++s) {
            const int n = col0 + tx + s * NTX;
            if (m < M && n < N) {
                float* c = C + m * ldc + n;
                *c = beta == 0.f ? alpha * acc[r][s] : fmaf(alpha, acc[r][s], beta * *c);
            }
        }
    }
}

}  // namespace gemm

// v1: thread (threadIdx.x, threadIdx.y) of block (bx, by) -> C[by*16 + ty, bx*16 + tx].
extern "C" __global__ void sgemm_v1(const float* __restrict__ A, const float* __restrict__ B,
                                    float* __restrict__ C, int M, int N, int K, int lda, int ldb, int ldc,
                                    int trans_a, int trans_b, float alpha, float beta)
{
    const int m = blockIdx.y * blockDim.y + threadIdx.y;
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (m >= M || n >= N) return;
    float acc = 0.f;
    for (int k = 0; k < K; ++k) {
        const float a = trans_a ? A[k * lda + m] : A[m * lda + k];
        const float b = trans_b ? B[n * ldb + k] : B[k * ldb + n];
        acc += a * b;
    }
    float* c = C + m * ldc + n;
    *c = beta == 0.f ? alpha * acc : alpha * acc + beta * *c;
}

// v2: grid (ceil(N / 64), ceil(M / 64)), block 256.
extern "C" __global__ void __launch_bounds__(gemm::V2_THREADS) sgemm_v2(const float* __restrict__ A, const float* __restrict__ B,
                                    float* __restrict__ C, int M, int N, int K, int lda, int ldb, int ldc,
                                    int trans_a, int trans_b, float alpha, float beta)
{
    __shared__ __align__(16) float As[gemm::BK][gemm::BM + gemm::PAD];
    __shared__ __align__(16) float Bs[gemm::BK][gemm::BN + gemm::PAD];
    if (trans_a) {
        if (trans_b) gemm::sgemm_tiled<true, true>(As, Bs, A, B, C, M, N, K, lda, ldb, ldc, alpha, beta);
        else         gemm::sgemm_tiled<true, false>(As, Bs, A, B, C, M, N, K, lda, ldb, ldc, alpha, beta);
    } else {
        if (trans_b) gemm::sgemm_tiled<false, true>(As, Bs, A, B, C, M, N, K, lda, ldb, ldc, alpha, beta);
        else         gemm::sgemm_tiled<false, false>(As, Bs, A, B, C, M, N, K, lda, ldb, ldc, alpha, beta);
    }
}

// thread -> y[i, j] (flat row-major index), 1-D grid.
extern "C" __global__ void fc_bias_add(float* __restrict__ y, const float* __restrict__ b, int m, int n)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= m * n) return;
    y[idx] += b[idx % n];
}

// thread -> db[j]: consecutive threads read consecutive columns of each row (coalesced).
extern "C" __global__ void fc_bias_grad_v1(const float* __restrict__ dy, float* __restrict__ db, int m, int n)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    float acc = 0.f;
    for (int i = 0; i < m; ++i) acc += dy[i * n + j];
    db[j] = acc;
}
