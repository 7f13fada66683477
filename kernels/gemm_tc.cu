// kernels/gemm_tc.cu -- the fully connected layers on the tensor cores (mma.sync),
// TF32 or bf16 inputs, float32 accumulation and output; split-K reduction.
//
// Formula: one strided GEMM per launch, C = A @ B (+ bias on row m), over the K
//   slice of blockIdx.z (chunk elements each; slice z writes C + z * M * NCOL):
//   C[m, c] = sum_{k in slice} A[m, k] * B[k, c],  A[m, k] = a[m*sam + k*sak],
//   B[k, c] = b[c*sbc + k*sbk],  C[m, c] -> c_out[z*M*NCOL + m*scm + c*scc];
//   with has_bias, slice 0 adds bias[m] (so the slices' sum has it once).
//   tc_splitk_reduce: out[i] = sum_{z < splits} ws[z * n + i], z in order (deterministic).
// The fc layers (convnet/kernel_ops/gemm_tc.py), x (N, in), w (out, in), dy (N, out):
//   fc_tc_fwd:         y = x @ w.T + b   m = out, c = n, k = in    (A = w, B = x^T: both k-contiguous)
//   fc_tc_bwd_data:    dx = dy @ w       m = in,  c = n, k = out   (A = w^T: m-contiguous; B = dy^T)
//   fc_tc_bwd_filter:  dw = dy.T @ x     m = out, c = in, k = n    (A = dy^T, B = x: m-, c-contiguous)
// Layout: row-major, as in gemm.cu; the strides above say which index is contiguous.
// Thread mapping and shared memory: kernels/tc_gemm.cuh (block tile BM x BN, warp
//   tiles WM x WN; blockIdx.x = column tile, blockIdx.y = row tile, blockIdx.z = K slice).
// Inputs are rounded to tf32 (cvt.rna) or bf16 (round to nearest even) inside the
//   kernel; memory stays float32.
//
// Versions (one line each; the launcher names the shipped one):
//   v1: the tc_gemm.cuh engine (mma.sync m16n8k8 tf32 / m16n8k16 bf16, ldmatrix,
//       cp.async double buffering for tf32), two tiles: 128x128 (8 warps of 64x32,
//       suffix _l) and 64x64 (4 warps of 32x32, suffix _s).
//
// resources (sm_90, nvcc 13.0 -Xptxas -v): see benchmarks/notes-tensor-cores.md.
#include "tc_gemm.cuh"

namespace gemm_tc {

template <bool AK, bool BK>
struct Strided {
    static constexpr bool A_K_FAST = AK, B_K_FAST = BK, B_WALK = false;
    const float* A; const float* B; const float* bias; float* C;
    int M, NCOL, sam, sak, sbc, sbk, scm, scc, has_bias, slice;
    struct Col { int off; };
    __device__ const float* a(int m, int k) const { return A + m * sam + k * sak; }
    __device__ Col col(int c) const { return Col{c * sbc}; }
    __device__ const float* b(const Col& cl, int k) const { return B + cl.off + k * sbk; }
    __device__ void store(int m, int c, float v) const {
        if (has_bias && slice == 0) v += bias[m];
        C[slice * M * NCOL + m * scm + c * scc] = v;
    }
};

template <int P, int BM, int BN, int WM, int WN, bool AK, bool BK>
__device__ __forceinline__ void run(const float* A, const float* B, const float* bias, float* C, int M, int NCOL,
                                    int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias,
                                    int chunk) {
    Strided<AK, BK> op{A, B, bias, C, M, NCOL, sam, sak, sbc, sbk, scm, scc, has_bias, (int)blockIdx.z};
    const int k0 = blockIdx.z * chunk, k1 = min(K, k0 + chunk);
    tc::gemm<P, BM, BN, WM, WN>(op, k0, k1);
}

}  // namespace gemm_tc

// One kernel per op, precision and tile (written out: the launch registry reads the
// signatures from the source). Grid (ceil(NCOL/BN), ceil(M/BM), splits); block 256 (_l), 128 (_s).

extern "C" __global__ void __launch_bounds__(256) fc_tc_fwd_tf32_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 128, 128, 64, 32, true, true>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm, scc,
                                                    has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(128) fc_tc_fwd_tf32_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 64, 64, 32, 32, true, true>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm, scc,
                                                    has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(256) fc_tc_fwd_bf16_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 128, 128, 64, 32, true, true>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm, scc,
                                                    has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(128) fc_tc_fwd_bf16_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 64, 64, 32, 32, true, true>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm, scc,
                                                    has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(256) fc_tc_bwd_data_tf32_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 128, 128, 64, 32, false, true>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm, scc,
                                                    has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(128) fc_tc_bwd_data_tf32_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 64, 64, 32, 32, false, true>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm, scc,
                                                    has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(256) fc_tc_bwd_data_bf16_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 128, 128, 64, 32, false, true>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm, scc,
                                                    has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(128) fc_tc_bwd_data_bf16_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 64, 64, 32, 32, false, true>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm, scc,
                                                    has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(256) fc_tc_bwd_filter_tf32_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 128, 128, 64, 32, false, false>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm, scc,
                                                    has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(128) fc_tc_bwd_filter_tf32_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 64, 64, 32, 32, false, false>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm, scc,
                                                    has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(256) fc_tc_bwd_filter_bf16_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 128, 128, 64, 32, false, false>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm, scc,
                                                    has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(128) fc_tc_bwd_filter_bf16_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 64, 64, 32, 32, false, false>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm, scc,
                                                    has_bias, chunk);
}

// thread -> out[i] (1-D grid-stride): the K slices summed in order z = 0, 1, ...
extern "C" __global__ void tc_splitk_reduce(const float* __restrict__ ws, float* __restrict__ out, int n, int splits)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float s = 0.f;
        for (int z = 0; z < splits; ++z) s += ws[z * n + i];
        out[i] = s;
    }
}
