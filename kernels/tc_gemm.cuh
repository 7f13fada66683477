// tc_gemm.cuh: the tensor-core GEMM engine shared by gemm_tc.cu and conv_tc.cu.
//
//   C[m, col] = sum_{k_begin <= k < k_end} A[m, k] * B[k, col]    (float32 out)
//
// with the inputs rounded to tf32 (P = TC_TF32: mma.m16n8k8) or bf16
// (P = TC_BF16: mma.m16n8k16) and float32 accumulators. An Op describes one
// GEMM view (plain strided matrices for the fc layers, im2col gathers for the
// convolutions; nothing is materialised):
//   int M, NCOL;                                rows and columns of C
//   static constexpr bool A_K_FAST, B_K_FAST;   consecutive k adjacent in memory
//                                               (then threads load along k, else
//                                               along m / along columns)
//   static constexpr bool B_WALK;               (only with !B_K_FAST) B is read through
//   BWalk b_walk(const Col&, int k, int step);  a walker at k that steps by `step`:
//   const float* b_next(BWalk&) const;          &B[k, c] (or nullptr), then k += step
//   const float* a(int m, int k) const;         &A[m, k], or nullptr for 0
//   Col col(int c) const;                       per-column state (c < NCOL)
//   const float* b(const Col&, int k) const;    &B[k, c], or nullptr for 0
//   void store(int m, int c, float v) const;    C[m, c] = v
//
// Block tile BM x BN, BK deep (tf32: 16 = two k8 steps; bf16: 32 = two k16
// steps), (BM/WM) x (BN/WN) warps, each computing a WM x WN warp tile as
// (WM/16) x (WN/8) mma tiles. blockIdx.x = column tile, blockIdx.y = row tile
// (the kernels use blockIdx.z for groups and split-K slices).
//
// Shared memory, two buffers (compute on one while the next tile lands in the other):
//   tf32: As[m][k], Bs[col][k] float32, rows padded to 20 floats (80 bytes: the
//         8 row addresses of an ldmatrix hit 8 different 16-byte bank groups);
//         filled by cp.async (4 bytes per element, zero-fill outside), so loads
//         of tile t+1 overlap the mma of tile t; fragments by ldmatrix (x4 for
//         A, x4 for two n8 tiles of B), rounded by cvt.rna.tf32 in registers.
//   bf16: As[m][k] (rows of 40 bf16 = 80 bytes), Bs[k][col] (rows of BN + 8
//         bf16): loaded through registers (float32 -> cvt.rn.bf16x2 -> shared),
//         the next tile's global loads issued before the current tile's mma;
//         fragments by ldmatrix x4 (A) and ldmatrix x4 .trans (B, k-major).
#pragma once
#include "mma.cuh"

constexpr int TC_TF32 = 0, TC_BF16 = 1;

namespace tc {

template <int P> struct Depth;
template <> struct Depth<TC_TF32> { static constexpr int BK = 16, KSTEP = 8; };
template <> struct Depth<TC_BF16> { static constexpr int BK = 32, KSTEP = 16; };

constexpr int TF32_LD = 16 + 4;   // floats per shared row (tf32 As, Bs)
constexpr int BF16_LDA = 32 + 8;  // bf16 per As row

// Which tile element thread t loads in its r-th load of a ROWS x BK tile: along k
// (K_FAST) or along the rows.
template <int ROWS, int BK, int NT, bool K_FAST>
__device__ __forceinline__ void tile_pos(int t, int r, int& row, int& k) {
    if (K_FAST) {
        row = t / BK + r * (NT / BK);
        k = t % BK;
    } else {
        row = (t + r * NT) % ROWS;
        k = (t + r * NT) / ROWS;
    }
}

// The B walker of an Op with B_WALK (Op::BWalk, op.b_walk, op.b_next), else a placeholder.
template <class Op>
__device__ __forceinline__ auto make_walk(const Op& op, const typename Op::Col& col, int k, int step) {
    if constexpr (Op::B_WALK) return op.b_walk(col, k, step);
    else return 0;
}

template <int BM, int BN, int WM, int WN>
struct Warps {
    static constexpr int NWM = BM / WM, NWN = BN / WN, NT = 32 * NWM * NWN;
    static constexpr int MI = WM / 16, NI = WN / 8;
    static_assert(BM % WM == 0 && BN % WN == 0 && WM % 16 == 0 && WN % 16 == 0, "warp tiles");
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

// ------------------------------------------------------------------ tf32 ---
template <int BM, int BN, int WM, int WN, class Op>
__device__ __forceinline__ void gemm_tf32(const Op& op, int k_begin, int k_end) {
    using Wp = Warps<BM, BN, WM, WN>;
    constexpr int NT = Wp::NT, MI = Wp::MI, NI = Wp::NI, BK = Depth<TC_TF32>::BK;
    constexpr int A_LOADS = BM * BK / NT, B_LOADS = BN * BK / NT;
    static_assert(A_LOADS * NT == BM * BK && B_LOADS * NT == BN * BK, "tile loads must split evenly");
    __shared__ __align__(16) float As[2][BM][TF32_LD];
    __shared__ __align__(16) float Bs[2][BN][TF32_LD];

    const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
    const int wm0 = (warp / Wp::NWN) * WM, wn0 = (warp % Wp::NWN) * WN;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;

    // B column: with !B_K_FAST each thread loads one column (decoded once).
    static_assert(Op::B_K_FAST || NT % BN == 0, "threads must cover whole B rows");
    const int bcol_fixed = col0 + t % BN;
    const typename Op::Col bcol = op.col(bcol_fixed < op.NCOL ? bcol_fixed : 0);
    const bool col_ok = bcol_fixed < op.NCOL;
    // Op::B_WALK: the thread's B elements, k = k_begin + t/BN + i * (NT/BN), i = 0, 1, ...
    // in load order, come from a walker that steps k by additions (no division per load).
    [[maybe_unused]] auto bwalk = make_walk<Op>(op, bcol, k_begin + t / BN, NT / BN);

    auto issue = [&](int s, int k0) {
#pragma unroll
        for (int r = 0; r < A_LOADS; ++r) {
            int m, k;
            tile_pos<BM, BK, NT, Op::A_K_FAST>(t, r, m, k);
            const float* p = (row0 + m < op.M && k0 + k < k_end) ? op.a(row0 + m, k0 + k) : nullptr;
            cn_cp_async4(&As[s][m][k], p ? p : (const float*)&As[s][m][k], p != nullptr);
        }
#pragma unroll
        for (int r = 0; r < B_LOADS; ++r) {
            int c, k;
            tile_pos<BN, BK, NT, Op::B_K_FAST>(t, r, c, k);
            const float* p = nullptr;
            if constexpr (Op::B_WALK) {
                const float* q = op.b_next(bwalk);   // once per load, in order, in range or not
                if (k0 + k < k_end && col_ok) p = q;
            } else if (k0 + k < k_end && col0 + c < op.NCOL) {
                p = Op::B_K_FAST ? op.b(op.col(col0 + c), k0 + k) : op.b(bcol, k0 + k);
            }
            cn_cp_async4(&Bs[s][c][k], p ? p : (const float*)&Bs[s][c][k], p != nullptr);
        }
        cn_cp_async_commit();
    };

    float acc[MI][NI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.f;

    const int tiles = (k_end - k_begin + BK - 1) / BK;
    if (tiles > 0) issue(0, k_begin);
    for (int kt = 0; kt < tiles; ++kt) {
        const int s = kt & 1;
        if (kt + 1 < tiles) {
            issue(s ^ 1, k_begin + (kt + 1) * BK);
            cn_cp_async_wait<1>();    // this thread's copies of tile kt are done
        } else {
            cn_cp_async_wait<0>();
        }
        __syncthreads();              // ... and everyone's
#pragma unroll
        for (int kk = 0; kk < BK; kk += 8) {
            unsigned af[MI][4], bf[NI][2];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                cn_ldmatrix_x4(af[mi], &As[s][wm0 + 16 * mi + (lane & 15)][kk + 4 * (lane >> 4)]);
#pragma unroll
                for (int e = 0; e < 4; ++e) af[mi][e] = cn_tf32(__uint_as_float(af[mi][e]));
            }
#pragma unroll
            for (int ni = 0; ni < NI; ni += 2) {
                unsigned r[4];
                cn_ldmatrix_x4(r, &Bs[s][wn0 + 8 * (ni + (lane >> 4)) + (lane & 7)][kk + 4 * ((lane >> 3) & 1)]);
                bf[ni][0] = cn_tf32(__uint_as_float(r[0]));
                bf[ni][1] = cn_tf32(__uint_as_float(r[1]));
                bf[ni + 1][0] = cn_tf32(__uint_as_float(r[2]));
                bf[ni + 1][1] = cn_tf32(__uint_as_float(r[3]));
            }
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int ni = 0; ni < NI; ++ni) cn_mma_tf32_16x8x8(acc[mi][ni], af[mi], bf[ni], acc[mi][ni]);
        }
        __syncthreads();              // buffer s is refilled by the next iteration's issue
    }
    store_acc<MI, NI>(op, acc, row0 + wm0, col0 + wn0);
}

// ------------------------------------------------------------------ bf16 ---
template <int BM, int BN, int WM, int WN, class Op>
__device__ __forceinline__ void gemm_bf16(const Op& op, int k_begin, int k_end) {
    using Wp = Warps<BM, BN, WM, WN>;
    constexpr int NT = Wp::NT, MI = Wp::MI, NI = Wp::NI, BK = Depth<TC_BF16>::BK;
    constexpr int A_LOADS = BM * BK / NT, B_LOADS = BN * BK / NT;
    constexpr int LDB = BN + 8;
    static_assert(A_LOADS * NT == BM * BK && B_LOADS * NT == BN * BK, "tile loads must split evenly");
    static_assert(Op::B_K_FAST || NT % BN == 0, "threads must cover whole B rows");
    __shared__ __align__(16) unsigned short As[2][BM][BF16_LDA];
    __shared__ __align__(16) unsigned short Bs[2][BK][LDB];

    const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
    const int wm0 = (warp / Wp::NWN) * WM, wn0 = (warp % Wp::NWN) * WN;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int bcol_fixed = col0 + t % BN;
    const typename Op::Col bcol = op.col(bcol_fixed < op.NCOL ? bcol_fixed : 0);
    const bool col_ok = bcol_fixed < op.NCOL;
    // Op::B_WALK: the thread's B elements, k = k_begin + t/BN + i * (NT/BN), i = 0, 1, ...
    // in load order, come from a walker that steps k by additions (no division per load).
    [[maybe_unused]] auto bwalk = make_walk<Op>(op, bcol, k_begin + t / BN, NT / BN);

    float ra[A_LOADS], rb[B_LOADS];
    auto load = [&](int k0) {
#pragma unroll
        for (int r = 0; r < A_LOADS; ++r) {
            int m, k;
            tile_pos<BM, BK, NT, Op::A_K_FAST>(t, r, m, k);
            const float* p = (row0 + m < op.M && k0 + k < k_end) ? op.a(row0 + m, k0 + k) : nullptr;
            ra[r] = p ? *p : 0.f;
        }
#pragma unroll
        for (int r = 0; r < B_LOADS; ++r) {
            int c, k;
            tile_pos<BN, BK, NT, Op::B_K_FAST>(t, r, c, k);
            const float* p = nullptr;
            if constexpr (Op::B_WALK) {
                const float* q = op.b_next(bwalk);
                if (k0 + k < k_end && col_ok) p = q;
            } else if (k0 + k < k_end && col0 + c < op.NCOL) {
                p = Op::B_K_FAST ? op.b(op.col(col0 + c), k0 + k) : op.b(bcol, k0 + k);
            }
            rb[r] = p ? *p : 0.f;
        }
    };
    auto store = [&](int s) {
#pragma unroll
        for (int r = 0; r < A_LOADS; ++r) {
            int m, k;
            tile_pos<BM, BK, NT, Op::A_K_FAST>(t, r, m, k);
            As[s][m][k] = (unsigned short)cn_bf16x2(ra[r], 0.f);
        }
#pragma unroll
        for (int r = 0; r < B_LOADS; ++r) {
            int c, k;
            tile_pos<BN, BK, NT, Op::B_K_FAST>(t, r, c, k);
            Bs[s][k][c] = (unsigned short)cn_bf16x2(rb[r], 0.f);
        }
    };

    float acc[MI][NI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.f;

    const int tiles = (k_end - k_begin + BK - 1) / BK;
    if (tiles > 0) {
        load(k_begin);
        store(0);
        __syncthreads();
    }
    for (int kt = 0; kt < tiles; ++kt) {
        const int s = kt & 1;
        if (kt + 1 < tiles) load(k_begin + (kt + 1) * BK);   // in flight during the mma below
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            unsigned af[MI][4], bf[NI][2];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
                cn_ldmatrix_x4(af[mi], &As[s][wm0 + 16 * mi + (lane & 15)][kk + 8 * (lane >> 4)]);
#pragma unroll
            for (int ni = 0; ni < NI; ni += 2) {
                unsigned r[4];
                cn_ldmatrix_x4_trans(r, &Bs[s][kk + (lane & 7) + 8 * ((lane >> 3) & 1)][wn0 + 8 * (ni + (lane >> 4))]);
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
        if (kt + 1 < tiles) store(s ^ 1);   // buffer s^1 was last read before the previous barrier
        __syncthreads();
    }
    store_acc<MI, NI>(op, acc, row0 + wm0, col0 + wn0);
}

// gemm<P, ...>: one engine per precision (each instance declares only its own shared memory).
template <int P> struct Engine;
template <> struct Engine<TC_TF32> {
    template <int BM, int BN, int WM, int WN, class Op>
    __device__ __forceinline__ static void run(const Op& op, int k_begin, int k_end) {
        gemm_tf32<BM, BN, WM, WN>(op, k_begin, k_end);
    }
};
template <> struct Engine<TC_BF16> {
    template <int BM, int BN, int WM, int WN, class Op>
    __device__ __forceinline__ static void run(const Op& op, int k_begin, int k_end) {
        gemm_bf16<BM, BN, WM, WN>(op, k_begin, k_end);
    }
};
template <int P, int BM, int BN, int WM, int WN, class Op>
__device__ __forceinline__ void gemm(const Op& op, int k_begin, int k_end) {
    Engine<P>::template run<BM, BN, WM, WN>(op, k_begin, k_end);
}

}  // namespace tc
