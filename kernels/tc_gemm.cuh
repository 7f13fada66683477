// tc_gemm.cuh: the tensor-core GEMM engine shared by gemm_tc.cu and conv_tc.cu.
//
//   C[m, col] = sum_{k_begin <= k < k_end} A[m, k] * B[k, col]    (float32 out)
//
// with the inputs rounded to tf32 (P = TC_TF32: mma.m16n8k8) or bf16
// (P = TC_BF16: mma.m16n8k16) and float32 accumulators. An Op describes one
// GEMM view (plain strided matrices for the fc layers, im2col gathers for the
// convolutions; nothing is materialised). Each operand (A: rows m < M; B: rows =
// columns c < NCOL of C) is read in one of three modes:
//   A_MODE == VEC:  A[m, k..k+3] contiguous and 16-byte aligned whenever k % 4 == 0:
//     const float* a_ptr(int m, int k) const;            &A[m, k]
//     The launcher picks a VEC kernel only when every row is so aligned and k_begin
//     and k_end - k_begin are multiples of 4 (a 4-chunk is then wholly in or out).
//   A_MODE == WALK: any gather; the thread owns one row and walks k by one:
//     AWalk a_walk(int m, int k) const;                  state at (m, k), decoded once
//     const float* a_next(AWalk&, bool& ok) const;        &A[m, k] (ok &= in bounds), then k += 1
//   A_MODE == GATHER: any gather, read as VEC chunks (4 consecutive k of a row) but element
//   by element; the rows of a thread's chunks share one k state:
//     ARow a_row(int m) const;  AK a_k(int k) const;   per-row state; k state at k
//     const float* a_at(const ARow&, const AK&, bool& ok) const;   &A[m, k] (ok &= in bounds)
//     void a_adv(AK&, bool jump) const;                 k += 1, or k += BK - 3 (jump)
//   (B the same with b_ptr, b_walk, b_next, b_row, b_k, b_at, b_adv); the types AWalk, BWalk,
//   ARow, BRow, AK, BK_ must be named (tc::NoWalk where unused);
//   void store(int m, int c, float v) const;             C[m, c] = v
//
// Block tile BM x BN x BK (BK = 16: two k8 steps in tf32, one k16 step in bf16; BK = 32, bf16
// only: two k16 steps, as many HMMA per barrier and per gather walk as tf32's 16),
// NT threads = (BM/WM) x (BN/WN) warps (a WALK operand needs as many rows as threads),
// each computing a WM x WN warp tile as (WM/16) x (WN/8) mma tiles. blockIdx.x = column tile, blockIdx.y = row tile (the
// kernels use blockIdx.z for groups and split-K slices).
//
// Which thread loads what (per k-tile):
//   VEC:  chunk r of thread t is row t/4 + r*(NT/4), k = 4*(t%4) .. +3 (ROWS*4/NT chunks);
//         tf32: one 16-byte cp.async per chunk (rounded to tf32 per fragment register
//         after ldmatrix); bf16: one 16-byte predicated load, two cvt.rn.bf16x2, one
//         8-byte shared store.
//   GATHER: the chunks of VEC, 4 predicated 4-byte loads each, rounded once per element
//         (tf32: a 16-byte shared store per chunk; bf16: 2 cvt pairs, an 8-byte store).
//   WALK: thread t owns row t and loads k = 0..15 of the tile: 16 predicated 4-byte
//         loads into registers (issued before the current tile's mma, stored after),
//         rounded once per element (tf32: cvt.rna, 4 x 16-byte shared stores; bf16:
//         8 x cvt.rn.bf16x2, 2 x 16-byte shared stores).
// Bounds: a row past the operand's end (m >= M, c >= NCOL) reads row 0 instead: its
// products only reach C entries store_acc never writes, so rows are not tested at all;
// k is tested only in the last, partial tile (the loop's last iteration is peeled), where
// both operands are zero past k_end.
//
// Shared memory, two buffers (the next tile lands in one while the mma reads the other),
// As[m][k] and Bs[c][k], k contiguous:
//   tf32: rows of 20 floats (80 bytes), bf16: rows of 24 bf16 (48 bytes; 40 = 80 bytes with
//   32-deep k-tiles): the 8 row addresses of an ldmatrix hit 8 different 16-byte bank groups.
//   Fragments by ldmatrix x4 (A: one 16x8 / 16x16 tile; B: two n8 tiles), no .trans (B is
//   stored [c][k]).
// One barrier per k-tile: tile t+1's copies are waited for (cp.async.wait_group 0) and
// its registers stored after tile t's mma, then __syncthreads.
#pragma once
#include "mma.cuh"

constexpr int TC_TF32 = 0, TC_BF16 = 1;

namespace tc {

enum Mode { VEC = 0, WALK = 1, GATHER = 2 };
struct NoWalk {};
template <bool B> struct Bool { static constexpr bool value = B; };

constexpr int VW = 4;             // floats per VEC chunk

template <int BM, int BN, int WM, int WN>
struct Warps {
    static constexpr int NWM = BM / WM, NWN = BN / WN, NT = 32 * NWM * NWN;
    static constexpr int MI = WM / 16, NI = WN / 8;
    static_assert(BM % WM == 0 && BN % WN == 0 && WM % 16 == 0 && WN % 16 == 0, "warp tiles");
};

// Element type and row length of the shared tiles of a k-tile BK deep: tf32 rows of BK + 4
// floats (80 bytes at BK = 16), bf16 rows of BK + 8 (48 bytes at 16, 80 at 32): the 8 row
// addresses of an ldmatrix hit 8 different 16-byte bank groups either way.
template <int P, int BK> struct Smem;
template <int BK> struct Smem<TC_TF32, BK> { using T = float; static constexpr int LD = BK + 4; };
template <int BK> struct Smem<TC_BF16, BK> { using T = unsigned short; static constexpr int LD = BK + 8; };

// The two operands behind one interface.
template <class Op, bool IS_A> struct Side;
template <class Op> struct Side<Op, true> {
    static constexpr int MODE = Op::A_MODE;
    using Walk = typename Op::AWalk;
    __device__ static int rows(const Op& op) { return op.M; }
    __device__ static const float* ptr(const Op& op, int r, int k) { return op.a_ptr(r, k); }
    __device__ static Walk walk(const Op& op, int r, int k) { return op.a_walk(r, k); }
    __device__ static const float* next(const Op& op, Walk& w, bool& ok) { return op.a_next(w, ok); }
    using Row = typename Op::ARow;
    using K = typename Op::AK;
    __device__ static Row row(const Op& op, int r) { return op.a_row(r); }
    __device__ static K kst(const Op& op, int k, int bk) { return op.a_k(k, bk); }
    __device__ static const float* at(const Op& op, const Row& r, const K& k, bool& ok) { return op.a_at(r, k, ok); }
    __device__ static void adv(const Op& op, K& k, bool jump) { op.a_adv(k, jump); }
};
template <class Op> struct Side<Op, false> {
    static constexpr int MODE = Op::B_MODE;
    using Walk = typename Op::BWalk;
    __device__ static int rows(const Op& op) { return op.NCOL; }
    __device__ static const float* ptr(const Op& op, int r, int k) { return op.b_ptr(r, k); }
    __device__ static Walk walk(const Op& op, int r, int k) { return op.b_walk(r, k); }
    __device__ static const float* next(const Op& op, Walk& w, bool& ok) { return op.b_next(w, ok); }
    using Row = typename Op::BRow;
    using K = typename Op::BK_;
    __device__ static Row row(const Op& op, int r) { return op.b_row(r); }
    __device__ static K kst(const Op& op, int k, int bk) { return op.b_k(k, bk); }
    __device__ static const float* at(const Op& op, const Row& r, const K& k, bool& ok) { return op.b_at(r, k, ok); }
    __device__ static void adv(const Op& op, K& k, bool jump) { op.b_adv(k, jump); }
};

// Loads one operand's ROWS x BK tiles into shared rows T[ROWS][LD] (WALK: ROWS == NT).
template <int P, int BK, int ROWS, int NT, class Op, bool IS_A>
struct Loader {
    using S = Side<Op, IS_A>;
    using T = typename Smem<P, BK>::T;
    static constexpr int LD = Smem<P, BK>::LD, CPR = BK / VW, MODE = S::MODE;
    static constexpr int CHUNKS = ROWS * CPR / NT;    // VEC / GATHER chunks per thread
    static_assert(CHUNKS * NT == ROWS * CPR, "chunks must split evenly");
    static_assert(MODE != WALK || ROWS == NT, "WALK: one thread per row");
    static constexpr bool ASYNC = P == TC_TF32 && MODE == VEC;
    static constexpr bool ROUND_FRAGMENTS = ASYNC;    // cp.async lands unrounded

    // VEC: the thread's chunk pointers at k_begin (row t/CPR + r*NT/CPR, k = 4*(t%CPR)).
    // KOFF (the 128-thread tiles): the pointers stay put, kept opaque, and one k offset kv serves
    // them all: one IMAD.WIDE per chunk and one add per k-tile, where advancing each 64-bit
    // pointer cost two instructions and ptxas added copies (conv2d_tc_fwd_vec_bf16_l's loop 391 ->
    // 364 instructions, fc_tc_fwd_vec_tf32_l 286 -> 253; benchmarks/tc_sass.py). On the 64-thread
    // tiles (_m, _s) ptxas schedules the offset form worse (up to 42 more loop instructions), so
    // they advance the pointers (kv stays 0).
    static constexpr bool KOFF = NT >= 128;
    const float* p[MODE == VEC ? CHUNKS : 1];
    int kv;
    // WALK: the walker of row t
    typename S::Walk w;
    // GATHER: the rows of the thread's chunks, and their k state
    typename S::Row rs[MODE == GATHER ? CHUNKS : 1];
    typename S::K ks;
    // registers between a tile's loads and its shared stores
    float4 v4[(P == TC_BF16 && MODE == VEC) || MODE == GATHER ? CHUNKS : 1];
    float v[MODE == WALK ? BK : 1];

    __device__ __forceinline__ void init(const Op& op, int row0, int k_begin) {
        const int t = threadIdx.x;
        if constexpr (MODE == VEC) {
#pragma unroll
            for (int r = 0; r < CHUNKS; ++r) {
                const int row = row0 + t / CPR + r * (NT / CPR);
                p[r] = S::ptr(op, row < S::rows(op) ? row : 0, k_begin + VW * (t % CPR));
                if constexpr (KOFF) p[r] = cn_opaque(p[r]);
            }
            kv = 0;
        } else if constexpr (MODE == GATHER) {
#pragma unroll
            for (int r = 0; r < CHUNKS; ++r) {
                const int row = row0 + t / CPR + r * (NT / CPR);
                rs[r] = S::row(op, row < S::rows(op) ? row : 0);
            }
            ks = S::kst(op, k_begin + VW * (t % CPR), BK);
        } else {
            const int row = row0 + t;
            w = S::walk(op, row < S::rows(op) ? row : 0, k_begin);
        }
    }
    // Issue the loads of the next tile (lim = valid k in it, only read when TAIL).
    template <bool TAIL>
    __device__ __forceinline__ void fetch(T (*dst)[LD], int lim) {
        const int t = threadIdx.x;
        if constexpr (MODE == VEC) {
#pragma unroll
            for (int r = 0; r < CHUNKS; ++r) {
                const bool valid = !TAIL || VW * (t % CPR) < lim;
                if constexpr (ASYNC) cn_cp_async16(&dst[t / CPR + r * (NT / CPR)][VW * (t % CPR)], p[r] + kv, valid);
                else v4[r] = cn_ld4_pred(p[r] + kv, valid);
                if constexpr (!KOFF) p[r] += BK;
            }
            if constexpr (KOFF) kv += BK;
        }
    }
    template <bool TAIL>
    __device__ __forceinline__ void fetch_walk(const Op& op, int lim) {
        if constexpr (MODE == WALK) {
#pragma unroll
            for (int i = 0; i < BK; ++i) {
                bool valid = !TAIL || i < lim;
                const float* q = S::next(op, w, valid);
                v[i] = cn_ld_pred(q, valid);
            }
        } else if constexpr (MODE == GATHER) {
            const int kq = VW * (threadIdx.x % CPR);
            float e[CHUNKS][VW];
#pragma unroll
            for (int i = 0; i < VW; ++i) {
#pragma unroll
                for (int r = 0; r < CHUNKS; ++r) {
                    bool valid = !TAIL || kq + i < lim;
                    const float* q = S::at(op, rs[r], ks, valid);
                    e[r][i] = cn_ld_pred(q, valid);
                }
                S::adv(op, ks, i == VW - 1);
            }
#pragma unroll
            for (int r = 0; r < CHUNKS; ++r) v4[r] = make_float4(e[r][0], e[r][1], e[r][2], e[r][3]);
        }
    }
    // Store the registers of the fetched tile into shared memory.
    __device__ __forceinline__ void store(T (*dst)[LD]) {
        const int t = threadIdx.x;
        if constexpr (MODE == GATHER && P == TC_TF32) {
#pragma unroll
            for (int r = 0; r < CHUNKS; ++r)
                *reinterpret_cast<uint4*>(&dst[t / CPR + r * (NT / CPR)][VW * (t % CPR)]) =
                    make_uint4(cn_tf32(v4[r].x), cn_tf32(v4[r].y), cn_tf32(v4[r].z), cn_tf32(v4[r].w));
        } else if constexpr ((MODE == VEC || MODE == GATHER) && P == TC_BF16) {
#pragma unroll
            for (int r = 0; r < CHUNKS; ++r)
                *reinterpret_cast<uint2*>(&dst[t / CPR + r * (NT / CPR)][VW * (t % CPR)]) =
                    make_uint2(cn_bf16x2(v4[r].x, v4[r].y), cn_bf16x2(v4[r].z, v4[r].w));
        } else if constexpr (MODE == WALK && P == TC_TF32) {
#pragma unroll
            for (int q = 0; q < BK / 4; ++q)
                *reinterpret_cast<uint4*>(&dst[t][4 * q]) = make_uint4(
                    cn_tf32(v[4 * q]), cn_tf32(v[4 * q + 1]), cn_tf32(v[4 * q + 2]), cn_tf32(v[4 * q + 3]));
        } else if constexpr (MODE == WALK && P == TC_BF16) {
#pragma unroll
            for (int q = 0; q < BK / 8; ++q)
                *reinterpret_cast<uint4*>(&dst[t][8 * q]) = make_uint4(
                    cn_bf16x2(v[8 * q], v[8 * q + 1]), cn_bf16x2(v[8 * q + 2], v[8 * q + 3]),
                    cn_bf16x2(v[8 * q + 4], v[8 * q + 5]), cn_bf16x2(v[8 * q + 6], v[8 * q + 7]));
        }
    }
};

// Store the accumulators of this warp: element e of mma tile (mi, ni) is
// C[row0 + wm0 + 16 mi + g + 8 (e >= 2), col0 + wn0 + 8 ni + 2 t + (e & 1)].
template <int MI, int NI, class Op>
__device__ __forceinline__ void store_acc(const Op& op, const float (&acc)[MI][NI][4], int r0, int c0) {
    const int lane = cn_lane(), g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int m = r0 + 16 * mi + g + 8 * (e >> 1), c = c0 + 8 * ni + 2 * t + (e & 1);
                if (m < op.M && c < op.NCOL) op.store(m, c, acc[mi][ni][e]);
            }
}

// The mma of one shared k-tile (both buffers' layouts as above).
template <int P, int BK, int MI, int NI, bool RA, bool RB, class T, int LD>
__device__ __forceinline__ void tile_mma(float (&acc)[MI][NI][4], const T (*As)[LD], const T (*Bs)[LD], int wm0,
                                         int wn0) {
    const int lane = cn_lane();
    if constexpr (P == TC_TF32) {
#pragma unroll
        for (int kk = 0; kk < BK; kk += 8) {
            unsigned af[MI][4], bf[NI][2];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                cn_ldmatrix_x4(af[mi], &As[wm0 + 16 * mi + (lane & 15)][kk + 4 * (lane >> 4)]);
                if constexpr (RA) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) af[mi][e] = cn_tf32(__uint_as_float(af[mi][e]));
                }
            }
#pragma unroll
            for (int ni = 0; ni < NI; ni += 2) {
                unsigned r[4];
                cn_ldmatrix_x4(r, &Bs[wn0 + 8 * (ni + (lane >> 4)) + (lane & 7)][kk + 4 * ((lane >> 3) & 1)]);
                if constexpr (RB) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) r[e] = cn_tf32(__uint_as_float(r[e]));
                }
                bf[ni][0] = r[0];
                bf[ni][1] = r[1];
                bf[ni + 1][0] = r[2];
                bf[ni + 1][1] = r[3];
            }
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int ni = 0; ni < NI; ++ni) cn_mma_tf32_16x8x8(acc[mi][ni], af[mi], bf[ni], acc[mi][ni]);
        }
    } else {
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            unsigned af[MI][4], bf[NI][2];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
                cn_ldmatrix_x4(af[mi], &As[wm0 + 16 * mi + (lane & 15)][kk + 8 * (lane >> 4)]);
#pragma unroll
            for (int ni = 0; ni < NI; ni += 2) {
                unsigned r[4];
                cn_ldmatrix_x4(r, &Bs[wn0 + 8 * (ni + (lane >> 4)) + (lane & 7)][kk + 8 * ((lane >> 3) & 1)]);
                bf[ni][0] = r[0];
                bf[ni][1] = r[1];
                bf[ni + 1][0] = r[2];
                bf[ni + 1][1] = r[3];
            }
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int ni = 0; ni < NI; ++ni) cn_mma_bf16_16x8x16(acc[mi][ni], af[mi], bf[ni], acc[mi][ni]);
        }
    }
}

template <int P, int BM, int BN, int WM, int WN, int BK = 16, class Op>
__device__ __forceinline__ void gemm(const Op& op, int k_begin, int k_end) {
    static_assert(BK == 16 || (P == TC_BF16 && BK == 32), "k-tiles of 16 (tf32, bf16) or 32 (bf16)");
    using Wp = Warps<BM, BN, WM, WN>;
    constexpr int NT = Wp::NT, MI = Wp::MI, NI = Wp::NI;
    using T = typename Smem<P, BK>::T;
    constexpr int LD = Smem<P, BK>::LD;
    __shared__ __align__(16) T As[2][BM][LD];
    __shared__ __align__(16) T Bs[2][BN][LD];
    using LA = Loader<P, BK, BM, NT, Op, true>;
    using LB = Loader<P, BK, BN, NT, Op, false>;
    constexpr bool RA = LA::ROUND_FRAGMENTS, RB = LB::ROUND_FRAGMENTS;

    const int warp = threadIdx.x >> 5;
    const int wm0 = (warp / Wp::NWN) * WM, wn0 = (warp % Wp::NWN) * WN;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;

    float acc[MI][NI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.f;

    const int nk = k_end - k_begin;
    const int tiles = nk > 0 ? (nk + BK - 1) / BK : 0;
    if (tiles > 0) {
        LA la;
        LB lb;
        la.init(op, row0, k_begin);
        lb.init(op, col0, k_begin);
        // tile 0
        la.template fetch<true>(As[0], nk);
        lb.template fetch<true>(Bs[0], nk);
        cn_cp_async_commit();
        la.template fetch_walk<true>(op, nk);
        lb.template fetch_walk<true>(op, nk);
        la.store(As[0]);
        lb.store(Bs[0]);
        cn_cp_async_wait<0>();
        __syncthreads();
        // one k-tile: fetch tile kt+1 (TAIL: the last, maybe partial), mma on tile kt, land kt+1
        auto step = [&](int kt, auto tail) {
            constexpr bool TAIL = decltype(tail)::value;
            const int s = kt & 1, lim = nk - (kt + 1) * BK;
            la.template fetch<TAIL>(As[s ^ 1], lim);
            lb.template fetch<TAIL>(Bs[s ^ 1], lim);
            cn_cp_async_commit();
            la.template fetch_walk<TAIL>(op, lim);
            lb.template fetch_walk<TAIL>(op, lim);
            tile_mma<P, BK, MI, NI, RA, RB, T, LD>(acc, As[s], Bs[s], wm0, wn0);
            la.store(As[s ^ 1]);
            lb.store(Bs[s ^ 1]);
            cn_cp_async_wait<0>();
            __syncthreads();
        };
        int kt = 0;
        for (; kt < tiles - 2; ++kt) step(kt, Bool<false>{});   // tiles 1 .. tiles-2 are full
        if (tiles >= 2) step(kt++, Bool<true>{});
        tile_mma<P, BK, MI, NI, RA, RB, T, LD>(acc, As[kt & 1], Bs[kt & 1], wm0, wn0);
    }
    store_acc<MI, NI>(op, acc, row0 + wm0, col0 + wn0);
}

}  // namespace tc
