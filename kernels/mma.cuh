// mma.cuh: tensor-core device helpers (sm_80 and newer): warp-level mma.sync,
// ldmatrix, cp.async and the input roundings, each with its emulation.
//
// On the GPU each helper is one PTX instruction (inline asm). Under
// CN_EMULATION (bindings/cuda_emu.h) the same helper computes the same thing
// in plain C++: the warp-collective ones (mma, ldmatrix) exchange fragments
// with __shfl_sync exactly as the PTX ISA lays them out, so a kernel that puts
// a value in the wrong register or lane gets a wrong result on the emulation too.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k8 / m16n8k16"),
// lane = %laneid, g = lane >> 2 (groupID), t = lane & 3 (threadID_in_group):
//   m16n8k8 .tf32 (A 16x8 row, B 8x8 col, C/D 16x8 f32):
//     A: a0 = A[g][t], a1 = A[g+8][t], a2 = A[g][t+4], a3 = A[g+8][t+4]
//     B: b0 = B[t][g], b1 = B[t+4][g]
//     C: c0 = C[g][2t], c1 = C[g][2t+1], c2 = C[g+8][2t], c3 = C[g+8][2t+1]
//   m16n8k16 .bf16 (A 16x16, B 16x8; two bf16 per .b32 register, the lower
//   index in the low half):
//     A: reg0 = A[g][2t..2t+1], reg1 = A[g+8][2t..2t+1],
//        reg2 = A[g][2t+8..2t+9], reg3 = A[g+8][2t+8..2t+9]
//     B: reg0 = B[2t..2t+1][g], reg1 = B[2t+8..2t+9][g]
//     C: as for m16n8k8.
//   ldmatrix .m8n8 .b16 .xN: lanes 8i..8i+7 give the row addresses (16 bytes
//     each) of matrix i; register i of lane l holds row l/4, 16-bit columns
//     2(l%4), 2(l%4)+1 of matrix i; with .trans the transposed matrix (rows
//     2(l%4), 2(l%4)+1 of column l/4). A 32-bit element spans two 16-bit
//     columns, so without .trans ldmatrix also loads tf32 fragments: register
//     i of lane l is then element (l/4, l%4) of an 8x4 float matrix.
//
// Rounding (the inputs are float32 in memory):
//   cn_tf32(x):      cvt.rna.tf32.f32, round to nearest, ties away from zero,
//                    to 10 mantissa bits (low 13 bits zero).
//   cn_bf16x2(lo,hi) cvt.rn.bf16x2.f32, round to nearest even, two packed.
// The products of tf32 or bf16 inputs are exact in float32; mma.sync adds them
// to the float32 accumulator in an order and with internal rounding the ISA
// does not specify. The emulation adds the K products of one instruction and c
// exactly (in double) and rounds once to float32. So one mma differs from the
// exact sum by at most 1/2 ulp on the emulation, and an accumulation chained
// over S instructions by at most S * 2^-24 * (|c| + sum |a_k b_k|); the tests
// (tests/test_mma.py) allow (S + 1) * 2^-22 * (|c| + sum |a_k b_k|), a bound
// that leaves room for the hardware's truncating adds.
//
// cp.async (cn_cp_async4/16 + commit/wait): on the GPU an asynchronous copy
// global -> shared (4 bytes through L1 (.ca), 16 bytes bypassing it (.cg)),
// zero-filled when `valid` is false (src-size 0; src is not read). On the
// emulation the copy happens at once and commit/wait do nothing: a missing
// wait_group is not caught there (a missing __syncthreads still is).
#pragma once

// ------------------------------------------------------------ lane id ---
__device__ __forceinline__ int cn_lane() {
#ifdef CN_EMULATION
    return (int)((threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y) & 31u);
#else
    unsigned l;
    asm volatile("mov.u32 %0, %%laneid;" : "=r"(l));
    return (int)l;
#endif
}

// ---------------------------------------------------------- roundings ---
// float32 -> tf32 (as a float32 bit pattern with the low 13 bits zero).
__device__ __forceinline__ unsigned cn_tf32(float x) {
#ifdef CN_EMULATION
    unsigned u = __float_as_uint(x);
    if ((u & 0x7f800000u) == 0x7f800000u) return u;   // inf, NaN: unchanged
    return (u + 0x1000u) & 0xffffe000u;                // half away from zero
#else
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#endif
}

// Two float32 -> two bf16, round to nearest even, lo in bits 0..15, hi in 16..31.
__device__ __forceinline__ unsigned cn_bf16x2(float lo, float hi) {
#ifdef CN_EMULATION
    unsigned h[2];
    const float v[2] = {lo, hi};
    for (int i = 0; i < 2; ++i) {
        unsigned u = __float_as_uint(v[i]);
        if ((u & 0x7fffffffu) > 0x7f800000u) h[i] = (u >> 16) | 0x40u;   // NaN stays NaN (quiet)
        else h[i] = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    }
    return h[0] | (h[1] << 16);
#else
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
#endif
}

// A bf16 (16 bits) as the float32 it stands for (exact).
__device__ __forceinline__ float cn_bf16_to_float(unsigned short h) {
    return __uint_as_float((unsigned)h << 16);
}

// ------------------------------------------------------------- mma.sync ---
// d = a * b + c on a warp, m16n8k8, tf32 inputs (cn_tf32 bit patterns), f32 accumulators.
__device__ __forceinline__ void cn_mma_tf32_16x8x8(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2],
                                                   const float (&c)[4]) {
#ifdef CN_EMULATION
    const int lane = cn_lane(), g = lane >> 2, t = lane & 3;
    double s[4] = {c[0], c[1], c[2], c[3]};
    for (int q = 0; q < 4; ++q) {
        // A[g][q], A[g][q+4] live in a0, a2 of lane 4g+q; A[g+8][q], A[g+8][q+4] in a1, a3.
        const uint2 ar = __shfl_sync(0xffffffffu, make_uint2(a[0], a[2]), 4 * g + q);
        const uint2 ar8 = __shfl_sync(0xffffffffu, make_uint2(a[1], a[3]), 4 * g + q);
        // B[q][n], B[q+4][n] live in b0, b1 of lane 4n+q; this lane needs n = 2t, 2t+1.
        const uint2 b0 = __shfl_sync(0xffffffffu, make_uint2(b[0], b[1]), 4 * (2 * t) + q);
        const uint2 b1 = __shfl_sync(0xffffffffu, make_uint2(b[0], b[1]), 4 * (2 * t + 1) + q);
        const float a_g[2] = {__uint_as_float(ar.x), __uint_as_float(ar.y)};
        const float a_g8[2] = {__uint_as_float(ar8.x), __uint_as_float(ar8.y)};
        const float b_n0[2] = {__uint_as_float(b0.x), __uint_as_float(b0.y)};
        const float b_n1[2] = {__uint_as_float(b1.x), __uint_as_float(b1.y)};
        for (int h = 0; h < 2; ++h) {   // k = q + 4h; tf32 x tf32 products are exact in float
            s[0] += (double)(a_g[h] * b_n0[h]);
            s[1] += (double)(a_g[h] * b_n1[h]);
            s[2] += (double)(a_g8[h] * b_n0[h]);
            s[3] += (double)(a_g8[h] * b_n1[h]);
        }
    }
    for (int i = 0; i < 4; ++i) d[i] = (float)s[i];
#else
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#endif
}

// d = a * b + c on a warp, m16n8k16, bf16 inputs (two per register), f32 accumulators.
__device__ __forceinline__ void cn_mma_bf16_16x8x16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2],
                                                    const float (&c)[4]) {
#ifdef CN_EMULATION
    const int lane = cn_lane(), g = lane >> 2, t = lane & 3;
    double s[4] = {c[0], c[1], c[2], c[3]};
    for (int q = 0; q < 4; ++q) {
        // Lane 4g+q holds A[g][2q..2q+1] (reg0), A[g+8][2q..] (reg1), A[g][2q+8..] (reg2),
        // A[g+8][2q+8..] (reg3); lane 4n+q holds B[2q..2q+1][n] (reg0), B[2q+8..2q+9][n] (reg1).
        const uint2 ar = __shfl_sync(0xffffffffu, make_uint2(a[0], a[2]), 4 * g + q);
        const uint2 ar8 = __shfl_sync(0xffffffffu, make_uint2(a[1], a[3]), 4 * g + q);
        const uint2 b0 = __shfl_sync(0xffffffffu, make_uint2(b[0], b[1]), 4 * (2 * t) + q);
        const uint2 b1 = __shfl_sync(0xffffffffu, make_uint2(b[0], b[1]), 4 * (2 * t + 1) + q);
        const unsigned a_g[2] = {ar.x, ar.y}, a_g8[2] = {ar8.x, ar8.y};
        const unsigned b_n0[2] = {b0.x, b0.y}, b_n1[2] = {b1.x, b1.y};
        for (int h = 0; h < 2; ++h)          // register h: k = 2q + 8h + e
            for (int e = 0; e < 2; ++e) {
                const int sh = 16 * e;
                const float ag = cn_bf16_to_float((unsigned short)(a_g[h] >> sh));
                const float ag8 = cn_bf16_to_float((unsigned short)(a_g8[h] >> sh));
                const float bn0 = cn_bf16_to_float((unsigned short)(b_n0[h] >> sh));
                const float bn1 = cn_bf16_to_float((unsigned short)(b_n1[h] >> sh));
                s[0] += (double)(ag * bn0);
                s[1] += (double)(ag * bn1);
                s[2] += (double)(ag8 * bn0);
                s[3] += (double)(ag8 * bn1);
            }
    }
    for (int i = 0; i < 4; ++i) d[i] = (float)s[i];
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#endif
}

// ------------------------------------------------------------ ldmatrix ---
#ifdef CN_EMULATION
// Register i of this lane, from the row addresses the lanes of matrix i gave.
template <int N, bool TRANS>
__device__ __forceinline__ void cn_ldmatrix_emu(unsigned (&r)[N], const void* row) {
    const int lane = cn_lane();
    for (int i = 0; i < N; ++i) {
        if (!TRANS) {
            const unsigned char* p = (const unsigned char*)__shfl_sync(0xffffffffu, row, 8 * i + lane / 4);
            unsigned v;
            __builtin_memcpy(&v, p + 4 * (lane % 4), 4);
            r[i] = v;
        } else {
            unsigned short h[2];
            for (int e = 0; e < 2; ++e) {
                const unsigned char* p =
                    (const unsigned char*)__shfl_sync(0xffffffffu, row, 8 * i + 2 * (lane % 4) + e);
                __builtin_memcpy(&h[e], p + 2 * (lane / 4), 2);
            }
            r[i] = (unsigned)h[0] | ((unsigned)h[1] << 16);
        }
    }
}
#else
__device__ __forceinline__ unsigned cn_smem_addr(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
#endif

// row: this lane's row address in shared memory (16-byte aligned); lanes 0..8N-1 count.
__device__ __forceinline__ void cn_ldmatrix_x1(unsigned (&r)[1], const void* row) {
#ifdef CN_EMULATION
    cn_ldmatrix_emu<1, false>(r, row);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(cn_smem_addr(row)));
#endif
}
__device__ __forceinline__ void cn_ldmatrix_x2(unsigned (&r)[2], const void* row) {
#ifdef CN_EMULATION
    cn_ldmatrix_emu<2, false>(r, row);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(cn_smem_addr(row)));
#endif
}
__device__ __forceinline__ void cn_ldmatrix_x4(unsigned (&r)[4], const void* row) {
#ifdef CN_EMULATION
    cn_ldmatrix_emu<4, false>(r, row);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(cn_smem_addr(row)));
#endif
}
__device__ __forceinline__ void cn_ldmatrix_x1_trans(unsigned (&r)[1], const void* row) {
#ifdef CN_EMULATION
    cn_ldmatrix_emu<1, true>(r, row);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];"
                 : "=r"(r[0]) : "r"(cn_smem_addr(row)));
#endif
}
__device__ __forceinline__ void cn_ldmatrix_x2_trans(unsigned (&r)[2], const void* row) {
#ifdef CN_EMULATION
    cn_ldmatrix_emu<2, true>(r, row);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(cn_smem_addr(row)));
#endif
}
__device__ __forceinline__ void cn_ldmatrix_x4_trans(unsigned (&r)[4], const void* row) {
#ifdef CN_EMULATION
    cn_ldmatrix_emu<4, true>(r, row);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(cn_smem_addr(row)));
#endif
}

// ------------------------------------------------------------ cp.async ---
// 4 bytes global -> shared (dst, src 4-byte aligned); zeros when !valid.
__device__ __forceinline__ void cn_cp_async4(void* dst, const void* src, bool valid) {
#ifdef CN_EMULATION
    unsigned v = 0;
    if (valid) __builtin_memcpy(&v, src, 4);
    __builtin_memcpy(dst, &v, 4);
#else
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;"
                 :: "r"(cn_smem_addr(dst)), "l"(src), "r"(valid ? 4 : 0) : "memory");
#endif
}
// 16 bytes global -> shared (both 16-byte aligned); zeros when !valid.
__device__ __forceinline__ void cn_cp_async16(void* dst, const void* src, bool valid) {
#ifdef CN_EMULATION
    unsigned char v[16] = {0};
    if (valid) __builtin_memcpy(v, src, 16);
    __builtin_memcpy(dst, v, 16);
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
                 :: "r"(cn_smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0) : "memory");
#endif
}
// Close the group of copies issued since the last commit.
__device__ __forceinline__ void cn_cp_async_commit() {
#ifndef CN_EMULATION
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
// Wait until at most N committed groups are still in flight (N = 0: all done).
template <int N>
__device__ __forceinline__ void cn_cp_async_wait() {
#ifndef CN_EMULATION
    asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory");
#endif
}

// ------------------------------------------------------ predicated loads ---
// *p (4 bytes) or 0 when !valid (p is not read then); read-only data (ld.global.nc),
// one predicated instruction on the GPU (no branch).
__device__ __forceinline__ float cn_ld_pred(const float* p, bool valid) {
#ifdef CN_EMULATION
    return valid ? *p : 0.f;
#else
    float v;
    asm("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %2, 0;\n\tmov.b32 %0, 0;\n\t@q ld.global.nc.f32 %0, [%1];\n\t}"
        : "=f"(v) : "l"(p), "r"((int)valid));
    return v;
#endif
}
// p[0..3] (16 bytes, p 16-byte aligned) or zeros when !valid (p is not read then).
__device__ __forceinline__ float4 cn_ld4_pred(const float* p, bool valid) {
#ifdef CN_EMULATION
    return valid ? make_float4(p[0], p[1], p[2], p[3]) : make_float4(0.f, 0.f, 0.f, 0.f);
#else
    float4 v;
    asm("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %5, 0;\n\tmov.b32 %0, 0;\n\tmov.b32 %1, 0;\n\tmov.b32 %2, 0;\n\t"
        "mov.b32 %3, 0;\n\t@q ld.global.nc.v4.f32 {%0, %1, %2, %3}, [%4];\n\t}"
        : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(p), "r"((int)valid));
    return v;
#endif
}

// p, hidden from the optimiser (one mov): a walker's per-thread base pointer stays one
// 64-bit register, so base + koff is one IMAD.WIDE per element instead of re-deriving it
// from its index parts (no effect on the emulation).
__device__ __forceinline__ const float* cn_opaque(const float* p) {
#ifdef CN_EMULATION
    return p;
#else
    const float* r;
    asm("mov.b64 %0, %1;" : "=l"(r) : "l"(p));
    return r;
#endif
}
