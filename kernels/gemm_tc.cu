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
// Operand modes (tc_gemm.cuh): every operand walks k with one pointer advanced by its
//   k stride (WALK: the thread owns one row of A / column of B, no index arithmetic
//   but one add per element); the _vec kernels read the k-contiguous operands (fwd:
//   A and B, bwd_data: B) in 16-byte chunks (VEC: cp.async 16 in tf32), chosen by
//   the launcher when those rows are 16-byte aligned and K, the slices' start and
//   length are multiples of 4 (then sak = 1 resp. sbk = 1 is assumed).
// Versions (one line each; the launcher names the shipped one):
//   v1: the tc_gemm.cuh engine (mma.sync m16n8k8 tf32 / m16n8k16 bf16, ldmatrix,
//       cp.async for tf32 VEC operands, registers elsewhere; double buffering), two
//       tiles: 128x128 (4 warps of 64x64, suffix _l), 64x64 (2 warps of 64x32, _s) and
//       64x128 (2 warps of 64x64, _m: _vec kernels only, a WALK B needs a thread per column);
//       the _vec kernels (16-byte loads) where the rows allow.
//
// resources (sm_90, nvcc 13.0 -Xptxas -v): see benchmarks/notes-tensor-cores.md.
#include "tc_gemm.cuh"

namespace gemm_tc {

template <int AM, int BMODE>
struct Strided {
    static constexpr int A_MODE = AM, B_MODE = BMODE;
    const float* A; const float* B; const float* bias; float* C;
    int M, NCOL, sam, sak, sbc, sbk, scm, scc, has_bias, slice;
    // WALK: one pointer per row, advanced by the k stride per element
    struct AWalk { const float* p; };
    using BWalk = AWalk;
    using ARow = tc::NoWalk;
    using AK = tc::NoWalk;
    using BRow = tc::NoWalk;
    using BK_ = tc::NoWalk;
    __device__ const float* a_ptr(int m, int k) const { return A + m * sam + k; }          // VEC: sak == 1
    __device__ AWalk a_walk(int m, int k) const { return AWalk{A + m * sam + k * sak}; }
    __device__ const float* a_next(AWalk& w, bool&) const { const float* p = w.p; w.p += sak; return p; }
    __device__ const float* b_ptr(int c, int k) const { return B + c * sbc + k; }          // VEC: sbk == 1
    __device__ BWalk b_walk(int c, int k) const { return BWalk{B + c * sbc + k * sbk}; }
    __device__ const float* b_next(BWalk& w, bool&) const { const float* p = w.p; w.p += sbk; return p; }
    __device__ void store(int m, int c, float v) const {
        if (has_bias && slice == 0) v += bias[m];
        C[slice * M * NCOL + m * scm + c * scc] = v;
    }
};

template <int P, int BM, int BN, int WM, int WN, int AM, int BMODE>
__device__ __forceinline__ void run(const float* A, const float* B, const float* bias, float* C, int M, int NCOL,
                                    int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias,
                                    int chunk) {
    Strided<AM, BMODE> op{A, B, bias, C, M, NCOL, sam, sak, sbc, sbk, scm, scc, has_bias, (int)blockIdx.z};
    const int k0 = blockIdx.z * chunk, k1 = min(K, k0 + chunk);
    tc::gemm<P, BM, BN, WM, WN>(op, k0, k1);
}

}  // namespace gemm_tc

// One kernel per op, precision, operand modes and tile (written out: the launch registry
// reads the signatures from the source). Grid (ceil(NCOL/BN), ceil(M/BM), splits);
// block 128 (_l), 64 (_s, _m).
extern "C" __global__ void __launch_bounds__(128, 1) fc_tc_fwd_tf32_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 128, 128, 64, 64, tc::WALK, tc::WALK>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) fc_tc_fwd_tf32_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 64, 64, 64, 32, tc::WALK, tc::WALK>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) fc_tc_fwd_bf16_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 128, 128, 64, 64, tc::WALK, tc::WALK>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) fc_tc_fwd_bf16_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 64, 64, 64, 32, tc::WALK, tc::WALK>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) fc_tc_fwd_vec_tf32_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 128, 128, 64, 64, tc::VEC, tc::VEC>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) fc_tc_fwd_vec_tf32_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 64, 64, 64, 32, tc::VEC, tc::VEC>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) fc_tc_fwd_vec_bf16_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 128, 128, 64, 64, tc::VEC, tc::VEC>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) fc_tc_fwd_vec_bf16_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 64, 64, 64, 32, tc::VEC, tc::VEC>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) fc_tc_bwd_data_tf32_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 128, 128, 64, 64, tc::WALK, tc::WALK>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) fc_tc_bwd_data_tf32_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 64, 64, 64, 32, tc::WALK, tc::WALK>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) fc_tc_bwd_data_bf16_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 128, 128, 64, 64, tc::WALK, tc::WALK>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) fc_tc_bwd_data_bf16_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 64, 64, 64, 32, tc::WALK, tc::WALK>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) fc_tc_bwd_data_vec_tf32_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 128, 128, 64, 64, tc::WALK, tc::VEC>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) fc_tc_bwd_data_vec_tf32_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 64, 64, 64, 32, tc::WALK, tc::VEC>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) fc_tc_bwd_data_vec_bf16_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 128, 128, 64, 64, tc::WALK, tc::VEC>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) fc_tc_bwd_data_vec_bf16_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 64, 64, 64, 32, tc::WALK, tc::VEC>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) fc_tc_bwd_filter_tf32_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 128, 128, 64, 64, tc::WALK, tc::WALK>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) fc_tc_bwd_filter_tf32_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 64, 64, 64, 32, tc::WALK, tc::WALK>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) fc_tc_bwd_filter_bf16_l(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 128, 128, 64, 64, tc::WALK, tc::WALK>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) fc_tc_bwd_filter_bf16_s(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 64, 64, 64, 32, tc::WALK, tc::WALK>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

// The 64x128 tile (2 warps of 64x64, suffix _m) where both operands are VEC or A is WALK.
extern "C" __global__ void __launch_bounds__(64, 1) fc_tc_fwd_vec_tf32_m(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 64, 128, 64, 64, tc::VEC, tc::VEC>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) fc_tc_fwd_vec_bf16_m(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 64, 128, 64, 64, tc::VEC, tc::VEC>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) fc_tc_bwd_data_vec_tf32_m(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_TF32, 64, 128, 64, 64, tc::WALK, tc::VEC>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) fc_tc_bwd_data_vec_bf16_m(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias, float* __restrict__ C,
    int M, int NCOL, int K, int sam, int sak, int sbc, int sbk, int scm, int scc, int has_bias, int chunk)
{
    gemm_tc::run<TC_BF16, 64, 128, 64, 64, tc::WALK, tc::VEC>(A, B, bias, C, M, NCOL, K, sam, sak, sbc, sbk, scm,
        scc, has_bias, chunk);
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
