// The tensor-core helpers of kernels/mma.cuh, for tests/test_mma.py: fragments
// built straight from global memory by the PTX ISA's layout formulas (not by
// ldmatrix), so a wrong lane or register in the emulated mma shows as a wrong sum.
#include "mma.cuh"

// out[i] = cn_tf32(in[i]) (bit pattern)
extern "C" __global__ void test_round_tf32(const float* __restrict__ in, unsigned int* __restrict__ out, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = cn_tf32(in[i]);
}

// out[i] = bf16 of in[i] (round to nearest even) in the low 16 bits; pairs packed by cn_bf16x2.
extern "C" __global__ void test_round_bf16(const float* __restrict__ in, unsigned int* __restrict__ out, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (2 * i + 1 < n) {
        const unsigned p = cn_bf16x2(in[2 * i], in[2 * i + 1]);
        out[2 * i] = p & 0xffffu;
        out[2 * i + 1] = p >> 16;
    }
}

// D = A @ B + C, A (M, K), B (K, N), C, D (M, N) row-major float32, on m16n8k8 tf32:
// one warp per 16 x 8 tile of D (grid (ceil(N/8), ceil(M/16)), block 32), K in steps of 8.
extern "C" __global__ void test_mma_tf32(const float* __restrict__ A, const float* __restrict__ B,
                                         const float* __restrict__ C, float* __restrict__ D, int M, int N, int K)
{
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    const int r0 = blockIdx.y * 16, c0 = blockIdx.x * 8;
    auto at = [&](int r, int k) { return (r < M && k < K) ? A[r * K + k] : 0.f; };
    auto bt = [&](int k, int c) { return (k < K && c < N) ? B[k * N + c] : 0.f; };
    auto ct = [&](int r, int c) { return (r < M && c < N) ? C[r * N + c] : 0.f; };
    float acc[4] = {ct(r0 + g, c0 + 2 * t), ct(r0 + g, c0 + 2 * t + 1), ct(r0 + g + 8, c0 + 2 * t),
                    ct(r0 + g + 8, c0 + 2 * t + 1)};
    for (int k0 = 0; k0 < K; k0 += 8) {
        const unsigned a[4] = {cn_tf32(at(r0 + g, k0 + t)), cn_tf32(at(r0 + g + 8, k0 + t)),
                               cn_tf32(at(r0 + g, k0 + t + 4)), cn_tf32(at(r0 + g + 8, k0 + t + 4))};
        const unsigned b[2] = {cn_tf32(bt(k0 + t, c0 + g)), cn_tf32(bt(k0 + t + 4, c0 + g))};
        cn_mma_tf32_16x8x8(acc, a, b, acc);
    }
    const int rows[4] = {r0 + g, r0 + g, r0 + g + 8, r0 + g + 8};
    const int cols[4] = {c0 + 2 * t, c0 + 2 * t + 1, c0 + 2 * t, c0 + 2 * t + 1};
    for (int e = 0; e < 4; ++e)
        if (rows[e] < M && cols[e] < N) D[rows[e] * N + cols[e]] = acc[e];
}

// The same on m16n8k16 bf16 (K in steps of 16).
extern "C" __global__ void test_mma_bf16(const float* __restrict__ A, const float* __restrict__ B,
                                         const float* __restrict__ C, float* __restrict__ D, int M, int N, int K)
{
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    const int r0 = blockIdx.y * 16, c0 = blockIdx.x * 8;
    auto at = [&](int r, int k) { return (r < M && k < K) ? A[r * K + k] : 0.f; };
    auto bt = [&](int k, int c) { return (k < K && c < N) ? B[k * N + c] : 0.f; };
    auto ct = [&](int r, int c) { return (r < M && c < N) ? C[r * N + c] : 0.f; };
    float acc[4] = {ct(r0 + g, c0 + 2 * t), ct(r0 + g, c0 + 2 * t + 1), ct(r0 + g + 8, c0 + 2 * t),
                    ct(r0 + g + 8, c0 + 2 * t + 1)};
    for (int k0 = 0; k0 < K; k0 += 16) {
        const int k = k0 + 2 * t;
        const unsigned a[4] = {cn_bf16x2(at(r0 + g, k), at(r0 + g, k + 1)),
                               cn_bf16x2(at(r0 + g + 8, k), at(r0 + g + 8, k + 1)),
                               cn_bf16x2(at(r0 + g, k + 8), at(r0 + g, k + 9)),
                               cn_bf16x2(at(r0 + g + 8, k + 8), at(r0 + g + 8, k + 9))};
        const unsigned b[2] = {cn_bf16x2(bt(k, c0 + g), bt(k + 1, c0 + g)),
                               cn_bf16x2(bt(k + 8, c0 + g), bt(k + 9, c0 + g))};
        cn_mma_bf16_16x8x16(acc, a, b, acc);
    }
    const int rows[4] = {r0 + g, r0 + g, r0 + g + 8, r0 + g + 8};
    const int cols[4] = {c0 + 2 * t, c0 + 2 * t + 1, c0 + 2 * t, c0 + 2 * t + 1};
    for (int e = 0; e < 4; ++e)
        if (rows[e] < M && cols[e] < N) D[rows[e] * N + cols[e]] = acc[e];
}

// ldmatrix on a 32 x 8 matrix of 16-bit values (src, as uint32 per value), staged in
// shared memory with rows of 8 values (16 bytes): lane l gives the address of row l
// (matrix l / 8, row l % 8). out[l * 4 + i] = register i of lane l for x = 1, 2, 4
// registers, plain (trans = 0) or transposed.
extern "C" __global__ void test_ldmatrix(const unsigned int* __restrict__ src, unsigned int* __restrict__ out,
                                         int x, int trans)
{
    __shared__ __align__(16) unsigned short tile[32][8];
    const int lane = threadIdx.x;
    for (int j = 0; j < 8; ++j) tile[lane][j] = (unsigned short)src[lane * 8 + j];
    __syncwarp();
    unsigned r[4] = {0, 0, 0, 0};
    const void* row = &tile[lane][0];
    if (x == 1) {
        unsigned q[1];
        if (trans) cn_ldmatrix_x1_trans(q, row); else cn_ldmatrix_x1(q, row);
        r[0] = q[0];
    } else if (x == 2) {
        unsigned q[2];
        if (trans) cn_ldmatrix_x2_trans(q, row); else cn_ldmatrix_x2(q, row);
        r[0] = q[0]; r[1] = q[1];
    } else {
        unsigned q[4];
        if (trans) cn_ldmatrix_x4_trans(q, row); else cn_ldmatrix_x4(q, row);
        for (int i = 0; i < 4; ++i) r[i] = q[i];
    }
    for (int i = 0; i < 4; ++i) out[lane * 4 + i] = r[i];
}

// cp.async: out[i] = in[i] where valid[i], else 0, staged through shared memory by
// 4-byte copies (i < 128) and 16-byte copies (of in[128 + 4q ..], q < 32); block 32.
extern "C" __global__ void test_cp_async(const float* __restrict__ in, const int* __restrict__ valid,
                                         float* __restrict__ out)
{
    __shared__ __align__(16) float s[256];
    const int t = threadIdx.x;
    for (int i = t; i < 128; i += 32) cn_cp_async4(&s[i], &in[i], valid[i] != 0);
    cn_cp_async_commit();
    cn_cp_async16(&s[128 + 4 * t], &in[128 + 4 * t], valid[128 + 4 * t] != 0);
    cn_cp_async_commit();
    cn_cp_async_wait<1>();
    cn_cp_async_wait<0>();
    __syncthreads();
    for (int i = t; i < 256; i += 32) out[i] = s[i];
}
