// kernels/conv.cu -- 2-D convolution: forward (+ bias), backward-data,
// backward-filter, backward-bias. float32.
//
// Formula (cross-correlation, as in every deep-learning library), groups G,
// Cg = C / G input channels and Fg = F / G filters per group, g = f / Fg:
//   y[n,f,oh,ow] = b[f] + sum_{c<Cg, i<KH, j<KW} w[f,c,i,j] * x[n, g*Cg+c, oh*SH-PH+i, ow*SW-PW+j]
//   dx[n,g*Cg+c,ih,iw] = sum_{f in g, i, j; oh*SH-PH+i = ih, ow*SW-PW+j = iw} dy[n,f,oh,ow] * w[f,c,i,j]
//   dw[f,c,i,j] = sum_{n,oh,ow} dy[n,f,oh,ow] * x[n, g*Cg+c, oh*SH-PH+i, ow*SW-PW+j]
//   db[f]       = sum_{n,oh,ow} dy[n,f,oh,ow]
// x outside the image reads as 0; OH = (H + 2*PH - KH) / SH + 1, likewise OW.
//
// Layout: NCHW everywhere (x, y, dx, dy: (N, C|F, H, W)); w, dw: (F, Cg, KH, KW);
// b, db: (F,). No other layout is used inside. Indices are int (the launcher
// rejects tensors of 2^31 elements or more).
//
// Versions (the launcher convnet/kernel_ops/conv.py names the shipped one):
//   v1 (fwd, bwd_data, bwd_filter, bwd_bias): one thread per output element,
//      direct loops over the sum; obviously right, slow.
//   Every forward takes `relu`: y = max(0, conv + b) in the epilogue (the fused
//   bias + ReLU the layers use on the kernel backends; relu = 0 is the plain conv).
//   v2 fwd/bwd_data/bwd_filter: implicit GEMM per group, C[m,col] = sum_k A[m,k] B[k,col],
//      nothing materialised (im2col indices computed while loading tiles):
//        fwd:        m = f (Fg),  col = (n,oh,ow), k = (c,i,j);   A = w,  B = x patches
//        bwd_data:   m = c (Cg),  col = (n,ih,iw), k = (f,i,j);   A = w,  B = dy gathered
//                    (dy[n,f,oh,ow] where ih+PH-i = oh*SH exactly, else 0)
//        bwd_filter: m = f (Fg),  col = (c,i,j),   k = (n,oh,ow); A = dy, B = x patches;
//                    k split into S slices (blockIdx.z) writing partial sums to a
//                    workspace (S, F, Cg*KH*KW), then conv2d_bwd_filter_reduce adds the
//                    S slices in a fixed order: deterministic, no atomics.
//      Thread mapping: block = (BM/TM)*(BN/TN) threads; blockIdx.x = column tile of BN,
//      blockIdx.y = row tile of BM, blockIdx.z = group (* S slices for bwd_filter).
//      Each K step stages A (BK x BM) and B (BK x BN) tiles in shared memory
//      (__syncthreads), then thread t = ty*(BN/TN) + tx accumulates a TM x TN register
//      tile: rows ty + r*(BM/TM), columns tx + s*(BN/TN) (strided: conflict-free shared
//      reads, coalesced stores). Tile sizes are template parameters; shipped now:
//      BM = BN = 64, BK = 8, TM = TN = 4 (conv::BM ... below), 256 threads.
//   v2 bwd_bias: one block per filter, a strided sum per thread, then a shared-memory
//      tree reduction (fixed order: deterministic).
//   v3 fwd, bwd_data (conv2d_bwd_data_v3_s1: the
//      stride-1 instantiation, no divisibility test), bwd_filter (the v2 split-K +
//      conv2d_bwd_filter_reduce scheme): the v2 GEMM views on a bigger tile,
//      BM = BN = 128, BK = 8, TM = TN = 8 (conv::V3_* below), 256 threads, at most
//      128 registers (2 blocks per SM); the *_m64 kernels are the same with BM = 64,
//      TM = 4 for GEMMs of few rows (the launcher picks the row tile that pads M the
//      least: AlexNet's 48 and 192 rows). Double-buffered shared memory: the next K
//      tile is loaded into registers while the current one is computed, then stored
//      into the other buffer; one __syncthreads per K step. A and B fragments are
//      read as float4 (thread rows ty*4 + q*64 + e, q < TM/4, columns tx*4 + q*64 + e,
//      q < 2, e < 4). im2col index math hoisted: each thread decodes its column once
//      and walks k = (c,i,j) by additions and carries (no division in the K loop).
//      See benchmarks/notes-conv.md for the design, floors and what to measure.
//   v4 fwd, bwd_data (stride 1; other strides run v3), bwd_filter: the same GEMM views with
//      the gather decoded once per block: a launcher-built (off, tap bits) table in shared
//      memory and a per-thread column pointer and tap mask, so a copied element is one
//      IMAD.WIDE and one cp.async; 3-stage cp.async pipeline, BK = 16, warp-tiled
//      BM x 128 tile (BM = 128, 96: *_m96, 64: *_m64) of 8 x 8 per thread (BM = 48, *_m48:
//      6 x 8 per thread, 128 threads), split-K on any
//      pass with conv2d_v4_reduce (fixed order; bias and ReLU there). Section "v4" below.
//   Winograd F(2x2, 3x3) fwd (conv2d_wino_input, conv2d_wino_gemm* on the v4 engine,
//      conv2d_wino_output); the launcher runs bwd_data through it with flipped filters.
//   Winograd F(4x4, 3x3) fwd (conv2d_wino4_input, the same conv2d_wino_gemm* with 36
//      transform positions, conv2d_wino4_output); bwd_data likewise.
//
// resources (sm_90, nvcc 13.0 -Xptxas -v):
//   kernel                       regs  smem (bytes)
//   conv2d_fwd_v1                  32      0
//   conv2d_bwd_data_v1             32      0
//   conv2d_bwd_filter_v1           32      0
//   conv2d_bwd_bias_v1             31      0
//   conv2d_fwd_v2                  48   4224
//   conv2d_bwd_data_v2             64   4224
//   conv2d_bwd_filter_v2           48   4224
//   conv2d_bwd_filter_reduce       32      0
//   conv2d_bwd_bias_v2             28   1024
//   conv2d_fwd_v3                 128  16640
//   conv2d_bwd_data_v3            128  16640
//   conv2d_bwd_data_v3_s1         128  16640
//   conv2d_bwd_filter_v3          123  16640
//   conv2d_fwd_v3_m64              95  12544
//   conv2d_bwd_data_v3_m64         95  12544
//   conv2d_bwd_data_v3_s1_m64      95  12544
//   conv2d_bwd_filter_v3_m64      105  12544
//   conv2d_fwd_v4, _bwd_data_v4, _bwd_filter_v4     128  dynamic: 3*16*(BM+4+128)*4 + 8 * table
//   conv2d_*_v4_m96 (192 threads, 2 blocks/SM)    143..153  entries (conv.py, _v4_smem)
//   conv2d_*_v4_m64 (128 threads, 4 blocks/SM)    128
//   conv2d_*_v4_m48 (128 threads, 4 blocks/SM)    119..128
//   conv2d_wino_gemm, _m64, _m48                  128
//   conv2d_wino_gemm_m96                          151
//   conv2d_v4_reduce, conv2d_wino_input, _output    32      0
//   conv2d_wino4_input                              48      0
//   conv2d_wino4_output                             40      0
//   (no spills, no local memory on sm_80/86/89/90; v2 and v3 blocks are 256 threads;
//   v3 is capped at 128 registers by __launch_bounds__(256, 2); sm_80..89 use
//   124..127 for the 128-row kernels, 93..103 for *_m64)
#include "common.cuh"

namespace conv {

// ---------------------------------------------------------------------------
// The implicit-GEMM engine (v2). An Op describes one GEMM view:
//   int M, NCOL;                            rows and columns of C for one group
//   float a(int m, int k) const;            A[m, k], m < M, k < K
//   Col col(int c) const;                   per-column state decoded once
//   float b(const Col&, int k) const;       B[k, col] (0 outside the image / columns)
//   void store(int m, int c, float v) const C[m, c] = v (m < M, c < NCOL)
// ---------------------------------------------------------------------------
template <int BM, int BN, int BK, int TM, int TN, class Op>
__device__ __forceinline__ void implicit_gemm(const Op& op, int k_begin, int k_end)
{
    constexpr int NTX = BN / TN, NTY = BM / TM, NT = NTX * NTY;
    static_assert(BM % TM == 0 && BN % TN == 0, "tile not divisible by the register tile");
    static_assert(NT % BK == 0 && NT % BN == 0, "threads must cover whole tile rows");
    static_assert((BM * BK) % NT == 0 && (BN * BK) % NT == 0, "tile loads must split evenly");
    // A rows are padded by 4 floats: the transposing store As[t % BK][m] then hits
    // 32 different banks per warp (unpadded it would be an 8-way conflict).
    __shared__ __align__(16) float As[BK][BM + 4];
    __shared__ __align__(16) float Bs[BK][BN];

    const int t = threadIdx.x;
    const int tx = t % NTX, ty = t / NTX;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;

    // Loads: A element (k0 + t % BK, rows t / BK + r * NT/BK), coalesced along k;
    //        B element (k0 + t / BN + r * NT/BN, column t % BN), coalesced along columns.
    const int ak = t % BK, am = t / BK;
    const int bc = t % BN, bk = t / BN;
    const typename Op::Col bcol = op.col(col0 + bc);

    float acc[TM][TN];
#pragma unroll
    for (int r = 0; r < TM; ++r)
#pragma unroll
        for (int s = 0; s < TN; ++s) acc[r][s] = 0.f;

    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
#pragma unroll
        for (int r = 0; r < BM * BK / NT; ++r) {
            const int m = am + r * (NT / BK), k = k0 + ak;
            As[ak][m] = (row0 + m < op.M && k < k_end) ? op.a(row0 + m, k) : 0.f;
        }
#pragma unroll
        for (int r = 0; r < BN * BK / NT; ++r) {
            const int kk = bk + r * (NT / BN);
            Bs[kk][bc] = (k0 + kk < k_end) ? op.b(bcol, k0 + kk) : 0.f;
        }
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
            const int c = col0 + tx + s * NTX;
            if (m < op.M && c < op.NCOL) op.store(m, c, acc[r][s]);
        }
    }
}

// Shape of one convolution, built from the kernels' scalar arguments.
struct Shape {
    int N, C, H, W, F, KH, KW, OH, OW, SH, SW, PH, PW, G;
    int Cg, Fg, KHW, HW, OHW;
    __device__ Shape(int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
                     int sh, int sw, int ph, int pw, int g)
        : N(n), C(c), H(h), W(w), F(f), KH(kh), KW(kw), OH(oh), OW(ow), SH(sh), SW(sw),
          PH(ph), PW(pw), G(g), Cg(c / g), Fg(f / g), KHW(kh * kw), HW(h * w), OHW(oh * ow) {}
};

// fwd: C[f, (n,oh,ow)] = sum_{(c,i,j)} w[g*Fg+f, c, i, j] * x[n, g*Cg+c, oh*SH-PH+i, ow*SW-PW+j]
struct FwdOp {
    const float* x; const float* w; const float* bias; float* y;
    Shape s; int g, has_bias, relu, M, NCOL;
    struct Col { const float* base; int ih0, iw0; bool valid; };
    __device__ float a(int m, int k) const { return w[(g * s.Fg + m) * (s.Cg * s.KHW) + k]; }
    __device__ Col col(int c) const {
        Col r;
        r.valid = c < NCOL;
        const int cc = r.valid ? c : 0;
        const int n = cc / s.OHW, p = cc - n * s.OHW, oh = p / s.OW, ow = p - oh * s.OW;
        r.base = x + (n * s.C + g * s.Cg) * s.HW;
        r.ih0 = oh * s.SH - s.PH;
        r.iw0 = ow * s.SW - s.PW;
        return r;
    }
    __device__ float b(const Col& cl, int k) const {
        const int c = k / s.KHW, rest = k - c * s.KHW, i = rest / s.KW, j = rest - i * s.KW;
        const int ih = cl.ih0 + i, iw = cl.iw0 + j;
        if (!cl.valid || ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) return 0.f;
        return cl.base[c * s.HW + ih * s.W + iw];
    }
    __device__ void store(int m, int c, float v) const {
        const int f = g * s.Fg + m, n = c / s.OHW, p = c - n * s.OHW;
        if (has_bias) v += bias[f];
        y[(n * s.F + f) * s.OHW + p] = relu ? fmaxf(v, 0.f) : v;
    }
};

// bwd_data: C[c, (n,ih,iw)] = sum_{(f,i,j)} w[g*Fg+f, c, i, j] * dy[n, g*Fg+f, oh, ow]
//           where oh = (ih+PH-i)/SH, ow = (iw+PW-j)/SW divide exactly and are in range.
struct BwdDataOp {
    const float* dy; const float* w; float* dx;
    Shape s; int g, M, NCOL;
    struct Col { const float* base; int th, tw; bool valid; };
    __device__ float a(int m, int k) const {
        const int f = k / s.KHW, rest = k - f * s.KHW;
        return w[((g * s.Fg + f) * s.Cg + m) * s.KHW + rest];
    }
    __device__ Col col(int c) const {
        Col r;
        r.valid = c < NCOL;
        const int cc = r.valid ? c : 0;
        const int n = cc / s.HW, p = cc - n * s.HW, ih = p / s.W, iw = p - ih * s.W;
        r.base = dy + (n * s.F + g * s.Fg) * s.OHW;
        r.th = ih + s.PH;
        r.tw = iw + s.PW;
        return r;
    }
    __device__ float b(const Col& cl, int k) const {
        const int f = k / s.KHW, rest = k - f * s.KHW, i = rest / s.KW, j = rest - i * s.KW;
        const int th = cl.th - i, tw = cl.tw - j;
        if (!cl.valid || th < 0 || tw < 0) return 0.f;
        const int oh = th / s.SH, ow = tw / s.SW;
        if (oh * s.SH != th || ow * s.SW != tw || oh >= s.OH || ow >= s.OW) return 0.f;
        return cl.base[f * s.OHW + oh * s.OW + ow];
    }
    __device__ void store(int m, int c, float v) const {
        const int n = c / s.HW, p = c - n * s.HW;
        dx[(n * s.C + g * s.Cg + m) * s.HW + p] = v;
    }
};

// bwd_filter: C[f, (c,i,j)] = sum_{(n,oh,ow) in slice} dy[n, g*Fg+f, oh, ow] * x[n, g*Cg+c, oh*SH-PH+i, ow*SW-PW+j]
struct BwdFilterOp {
    const float* dy; const float* x; float* ws;   // ws: (S, F, Cg*KH*KW); slice `slice`
    Shape s; int g, slice, M, NCOL;
    struct Col { const float* base; int ioh, iow; bool valid; };
    __device__ float a(int m, int k) const {
        const int n = k / s.OHW, p = k - n * s.OHW;
        return dy[(n * s.F + g * s.Fg + m) * s.OHW + p];
    }
    __device__ Col col(int c) const {
        Col r;
        r.valid = c < NCOL;
        const int cc = r.valid ? c : 0;
        const int ci = cc / s.KHW, rest = cc - ci * s.KHW, i = rest / s.KW, j = rest - i * s.KW;
        r.base = x + (g * s.Cg + ci) * s.HW;
        r.ioh = i - s.PH;
        r.iow = j - s.PW;
        return r;
    }
    __device__ float b(const Col& cl, int k) const {
        const int n = k / s.OHW, p = k - n * s.OHW, oh = p / s.OW, ow = p - oh * s.OW;
        const int ih = oh * s.SH + cl.ioh, iw = ow * s.SW + cl.iow;
        if (!cl.valid || ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) return 0.f;
        return cl.base[n * s.C * s.HW + ih * s.W + iw];
    }
    __device__ void store(int m, int c, float v) const {
        ws[(slice * s.F + g * s.Fg + m) * NCOL + c] = v;
    }
};

// v2 tile configuration (one place; a later tuning pass specialises per shape).
constexpr int BM = 64, BN = 64, BK = 8, TM = 4, TN = 4;
constexpr int V2_THREADS = (BM / TM) * (BN / TN);   // 256 (V2_THREADS in convnet/kernel_ops/conv.py)
constexpr int BIAS_THREADS = 256;                   // conv2d_bwd_bias_v2's block

template <int NT>
__device__ __forceinline__ float block_sum(float v)
{
    __shared__ float red[NT];
    red[threadIdx.x] = v;
    __syncthreads();
#pragma unroll
    for (int half = NT / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half) red[threadIdx.x] += red[threadIdx.x + half];
        __syncthreads();
    }
    return red[0];
}


// ---------------------------------------------------------------------------
// The v3 engine: the same GEMM views as v2 with a bigger tile and cheaper loads.
// An Op3 describes one GEMM view with the index math split into what a thread
// decodes once and what it walks:
//   int M, NCOL;                                rows and columns of C for one group
//   const float* A;  int arow(int m) const;     A[m, k] = A[arow(m) + ka.off], arow linear in m
//                                               (ka_next may only add to ka.off)
//   KA ka(int k) const; void ka_next(KA&, int d) const;   decode k once, then k += d
//   Col col(int c) const;                       per-column state (invalid column: reads 0)
//   KB kb(const Col&, int k) const; void kb_next(KB&, int d) const;   decode k once, then k += d
//   float b(const Col&, const KB&) const;       B[k, col] (0 outside the image)
//   int out(int c) const;                       output offset of column c < NCOL
//   void store(int m, int o, float v) const;    C[m, c] = v with o = out(c)
// Only additions, compares and (for the walk's carries) subtractions in the
// K loop: no division per loaded element.
// ---------------------------------------------------------------------------

// A column that does not exist gets this image origin: origin + tap stays negative,
// so the unsigned bounds check reads 0 without a separate flag.
constexpr int NO_COLUMN = -(1 << 30);

template <int BM, int BN, int BK, int TM, int TN, class Op>
__device__ __forceinline__ void implicit_gemm_v3(const Op& op, int k_begin, int k_end)
{
    constexpr int NTX = BN / TN, NTY = BM / TM, NT = NTX * NTY;
    constexpr int QM = TM / 4, QN = TN / 4;               // float4 fragments per thread
    constexpr int A_LOADS = BM * BK / NT, B_LOADS = BN * BK / NT;
    constexpr int A_STEP = NT / BK, B_STEP = NT / BN;     // a thread's A row stride, B k stride
    static_assert(TM % 4 == 0 && TN % 4 == 0, "register tile must be whole float4s");
    static_assert(NT % BK == 0 && NT % BN == 0 && BK % B_STEP == 0, "threads must cover whole tile rows");
    static_assert(A_LOADS * NT == BM * BK && B_LOADS * B_STEP == BK, "tile loads must split evenly");
    // Two buffers (compute on one while the next K tile is stored into the other).
    // A rows padded by 4 floats: the transposing store As[.][t % BK][m] is
    // conflict-free and every row stays 16-byte aligned for the float4 reads.
    __shared__ __align__(16) float As[2][BK][BM + 4];
    __shared__ __align__(16) float Bs[2][BK][BN];

    const int t = threadIdx.x;
    const int tx = t % NTX, ty = t / NTX;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;

    // Loads: A element (k + ak, rows am + r*A_STEP), coalesced along k;
    //        B element (k + bk + r*B_STEP, column bc), coalesced along columns.
    const int ak = t % BK, am = t / BK;
    const int bc = t % BN, bk = t / BN;
    // arow(m) is linear in m: the thread's A rows are a0 + r * a_step, r < A_LOADS,
    // of which the first a_rows exist.
    const int a0 = op.arow(row0 + am), a_step = op.arow(row0 + am + A_STEP) - a0;
    const int a_rows = op.M - row0 - am;
    const typename Op::Col bcol = op.col(col0 + bc);
    typename Op::KA ka = op.ka(k_begin + ak);
    ka.off += a0;                           // the walk only adds to off: fold the row in
    typename Op::KB kb = op.kb(bcol, k_begin + bk);

    float ra[A_LOADS], rb[B_LOADS];
    // Global -> registers for the K tile at k0; the cursors end on the next tile.
    auto load = [&](int k0) {
        const bool ka_ok = k0 + ak < k_end;
#pragma unroll
        for (int r = 0; r < A_LOADS; ++r)
            ra[r] = (ka_ok && r * A_STEP < a_rows) ? op.A[ka.off + r * a_step] : 0.f;
        op.ka_next(ka, BK);
#pragma unroll
        for (int r = 0; r < B_LOADS; ++r) {
            rb[r] = (k0 + bk + r * B_STEP < k_end) ? op.b(bcol, kb) : 0.f;
            op.kb_next(kb, B_STEP);
        }
    };
    auto stage = [&](int buf) {
#pragma unroll
        for (int r = 0; r < A_LOADS; ++r) As[buf][ak][am + r * A_STEP] = ra[r];
#pragma unroll
        for (int r = 0; r < B_LOADS; ++r) Bs[buf][bk + r * B_STEP][bc] = rb[r];
    };

    float acc[TM][TN];
#pragma unroll
    for (int r = 0; r < TM; ++r)
#pragma unroll
        for (int s = 0; s < TN; ++s) acc[r][s] = 0.f;

    load(k_begin);
    stage(0);
    __syncthreads();
    int buf = 0;
    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
        // Unconditional (zeros past k_end, no memory access): a branch here costs
        // registers that sm_90's allocator then spills.
        load(k0 + BK);                      // in flight while this tile is computed
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float av[TM], bv[TN];
#pragma unroll
            for (int q = 0; q < QM; ++q) {
                const float4 v = *reinterpret_cast<const float4*>(&As[buf][kk][ty * 4 + q * NTY * 4]);
                av[q * 4] = v.x; av[q * 4 + 1] = v.y; av[q * 4 + 2] = v.z; av[q * 4 + 3] = v.w;
            }
#pragma unroll
            for (int q = 0; q < QN; ++q) {
                const float4 v = *reinterpret_cast<const float4*>(&Bs[buf][kk][tx * 4 + q * NTX * 4]);
                bv[q * 4] = v.x; bv[q * 4 + 1] = v.y; bv[q * 4 + 2] = v.z; bv[q * 4 + 3] = v.w;
            }
#pragma unroll
            for (int r = 0; r < TM; ++r)
#pragma unroll
                for (int s = 0; s < TN; ++s) acc[r][s] = fmaf(av[r], bv[s], acc[r][s]);
        }
        stage(buf ^ 1);                     // that buffer was last read before the previous barrier
        __syncthreads();
        buf ^= 1;
    }

    // Thread (tx, ty) holds rows ty*4 + q*NTY*4 + e and columns tx*4 + q*NTX*4 + e.
#pragma unroll
    for (int s = 0; s < TN; ++s) {
        const int c = col0 + tx * 4 + (s / 4) * NTX * 4 + s % 4;
        if (c >= op.NCOL) continue;
        const int o = op.out(c);
#pragma unroll
        for (int r = 0; r < TM; ++r) {
            const int m = row0 + ty * 4 + (r / 4) * NTY * 4 + r % 4;
            if (m < op.M) op.store(m, o, acc[r][s]);
        }
    }
}

// fwd v3: A = w (m = f, k = (c,i,j)), B = x patches (col = (n,oh,ow)); epilogue
// y = conv + b, then max(0, .) when relu.
struct FwdOp3 {
    const float* A;                       // w
    const float* x; const float* bias; float* y;
    Shape s; int g, has_bias, relu, M, NCOL;
    struct KA { int off; };               // off = k
    struct Col { int off, ih0, iw0; };    // off: x index of (n, g*Cg, ih0, iw0)
    struct KB { int off, i, j; };         // k = (c,i,j); off = c*HW + i*W + j
    __device__ int arow(int m) const { return (g * s.Fg + m) * (s.Cg * s.KHW); }
    __device__ KA ka(int k) const { return KA{k}; }
    __device__ void ka_next(KA& a, int d) const { a.off += d; }
    __device__ Col col(int c) const {
        if (c >= NCOL) return Col{0, NO_COLUMN, NO_COLUMN};
        const int n = c / s.OHW, p = c - n * s.OHW, oh = p / s.OW, ow = p - oh * s.OW;
        const int ih0 = oh * s.SH - s.PH, iw0 = ow * s.SW - s.PW;
        return Col{(n * s.C + g * s.Cg) * s.HW + ih0 * s.W + iw0, ih0, iw0};
    }
    __device__ KB kb(const Col&, int k) const {
        const int c = k / s.KHW, rest = k - c * s.KHW, i = rest / s.KW, j = rest - i * s.KW;
        return KB{c * s.HW + i * s.W + j, i, j};
    }
    __device__ void kb_next(KB& b, int d) const {
        b.j += d; b.off += d;
        while (b.j >= s.KW) { b.j -= s.KW; ++b.i; b.off += s.W - s.KW; }
        while (b.i >= s.KH) { b.i -= s.KH; b.off += s.HW - s.KH * s.W; }
    }
    __device__ float b(const Col& cl, const KB& k) const {
        const int ih = cl.ih0 + k.i, iw = cl.iw0 + k.j;
        return ((unsigned)ih < (unsigned)s.H && (unsigned)iw < (unsigned)s.W) ? x[cl.off + k.off] : 0.f;
    }
    __device__ int out(int c) const {
        const int n = c / s.OHW;
        return n * s.F * s.OHW + (c - n * s.OHW);
    }
    __device__ void store(int m, int o, float v) const {
        const int f = g * s.Fg + m;
        if (has_bias) v += bias[f];
        if (relu) v = fmaxf(v, 0.f);
        y[o + f * s.OHW] = v;
    }
};

// bwd_data v3: A = w (m = c, k = (f,i,j)), B = dy gathered (col = (n,ih,iw)):
// dy[n, g*Fg+f, oh, ow] with oh*SH = ih+PH-i, ow*SW = iw+PW-j exactly, else 0.
// UNIT: stride 1 in both directions (no divisibility test; AlexNet's conv2..5).
template <bool UNIT>
struct BwdDataOp3 {
    const float* A;                       // w
    const float* dy; float* dx;
    Shape s; int g, M, NCOL;
    struct KA { int off, rest; };         // k = (f, rest); off = f*Cg*KHW + rest
    struct Col { int off, th, tw; };      // off: dy index of (n, g*Fg, 0, 0); th = ih+PH, tw = iw+PW
    struct KB { int fo, i, j; };          // k = (f,i,j); fo = dy index of (n, g*Fg+f, 0, 0)
    __device__ int arow(int m) const { return (g * s.Fg * s.Cg + m) * s.KHW; }
    __device__ KA ka(int k) const {
        const int f = k / s.KHW, rest = k - f * s.KHW;
        return KA{f * s.Cg * s.KHW + rest, rest};
    }
    __device__ void ka_next(KA& a, int d) const {
        a.off += d; a.rest += d;
        while (a.rest >= s.KHW) { a.rest -= s.KHW; a.off += (s.Cg - 1) * s.KHW; }
    }
    __device__ Col col(int c) const {
        if (c >= NCOL) return Col{0, NO_COLUMN, NO_COLUMN};
        const int n = c / s.HW, p = c - n * s.HW, ih = p / s.W, iw = p - ih * s.W;
        return Col{(n * s.F + g * s.Fg) * s.OHW, ih + s.PH, iw + s.PW};
    }
    __device__ KB kb(const Col& cl, int k) const {
        const int f = k / s.KHW, rest = k - f * s.KHW, i = rest / s.KW;
        return KB{cl.off + f * s.OHW, i, rest - i * s.KW};
    }
    __device__ void kb_next(KB& b, int d) const {
        b.j += d;
        while (b.j >= s.KW) { b.j -= s.KW; ++b.i; }
        while (b.i >= s.KH) { b.i -= s.KH; b.fo += s.OHW; }
    }
    __device__ float b(const Col& cl, const KB& k) const {
        int oh = cl.th - k.i, ow = cl.tw - k.j;
        if (!UNIT) {
            if (oh < 0 || ow < 0) return 0.f;
            const int qh = oh / s.SH, qw = ow / s.SW;
            if (qh * s.SH != oh || qw * s.SW != ow) return 0.f;
            oh = qh; ow = qw;
        }
        return ((unsigned)oh < (unsigned)s.OH && (unsigned)ow < (unsigned)s.OW)
                   ? dy[k.fo + oh * s.OW + ow] : 0.f;
    }
    __device__ int out(int c) const {
        const int n = c / s.HW;
        return n * s.C * s.HW + (c - n * s.HW);
    }
    __device__ void store(int m, int o, float v) const { dx[o + (g * s.Cg + m) * s.HW] = v; }
};

// bwd_filter v3: A = dy (m = f, k = (n,oh,ow)), B = x patches (col = (c,i,j)),
// k restricted to one split-K slice; writes ws[slice].
struct BwdFilterOp3 {
    const float* A;                       // dy
    const float* x; float* ws;            // ws: (S, F, Cg*KH*KW)
    Shape s; int g, slice, M, NCOL;
    struct KA { int off, p; };            // k = (n, p); off = n*F*OHW + p
    struct Col { int off, ioh, iow; };    // off: x index of (0, g*Cg+c, i-PH, j-PW)
    struct KB { int off, ihb, iwb; };     // k = (n,oh,ow); ihb = oh*SH, iwb = ow*SW,
                                          // off = x index of (n, g*Cg+c, ihb+i-PH, iwb+j-PW)
    __device__ int arow(int m) const { return (g * s.Fg + m) * s.OHW; }
    __device__ KA ka(int k) const {
        const int n = k / s.OHW, p = k - n * s.OHW;
        return KA{n * s.F * s.OHW + p, p};
    }
    __device__ void ka_next(KA& a, int d) const {
        a.off += d; a.p += d;
        while (a.p >= s.OHW) { a.p -= s.OHW; a.off += (s.F - 1) * s.OHW; }
    }
    __device__ Col col(int c) const {
        if (c >= NCOL) return Col{0, NO_COLUMN, NO_COLUMN};
        const int ci = c / s.KHW, rest = c - ci * s.KHW, i = rest / s.KW, j = rest - i * s.KW;
        const int ioh = i - s.PH, iow = j - s.PW;
        return Col{(g * s.Cg + ci) * s.HW + ioh * s.W + iow, ioh, iow};
    }
    __device__ KB kb(const Col& cl, int k) const {
        const int n = k / s.OHW, p = k - n * s.OHW, oh = p / s.OW, ow = p - oh * s.OW;
        return KB{cl.off + n * s.C * s.HW + oh * s.SH * s.W + ow * s.SW, oh * s.SH, ow * s.SW};
    }
    __device__ void kb_next(KB& b, int d) const {     // ow carries at iwb = OW*SW, oh at ihb = OH*SH
        b.iwb += d * s.SW; b.off += d * s.SW;
        while (b.iwb >= s.OW * s.SW) { b.iwb -= s.OW * s.SW; b.ihb += s.SH; b.off += s.SH * s.W - s.OW * s.SW; }
        while (b.ihb >= s.OH * s.SH) { b.ihb -= s.OH * s.SH; b.off += s.C * s.HW - s.OH * s.SH * s.W; }
    }
    __device__ float b(const Col& cl, const KB& k) const {
        const int ih = k.ihb + cl.ioh, iw = k.iwb + cl.iow;
        return ((unsigned)ih < (unsigned)s.H && (unsigned)iw < (unsigned)s.W) ? x[k.off] : 0.f;
    }
    __device__ int out(int c) const { return c; }
    __device__ void store(int m, int o, float v) const { ws[(slice * s.F + g * s.Fg + m) * NCOL + o] = v; }
};

// v3 tile configuration (one place): 128 x 128 x 8 tile, 8 x 8 per thread.
// Two row heights share the column tile: BM = 128 (TM = 8) and BM = 64 (TM = 4, the
// *_m64 kernels) for GEMMs of few rows (M = 48, 192, ...); the launcher picks
// per layer (convnet/kernel_ops/conv.py, _v3_rows).
constexpr int V3_BM = 128, V3_BN = 128, V3_BK = 8, V3_TM = 8, V3_TN = 8;
constexpr int V3_BM_SMALL = 64, V3_TM_SMALL = 4;
constexpr int V3_THREADS = (V3_BM / V3_TM) * (V3_BN / V3_TN);   // 256 (V3_THREADS in conv.py)
static_assert((V3_BM_SMALL / V3_TM_SMALL) * (V3_BN / V3_TN) == V3_THREADS, "both v3 tiles use 256 threads");

// The v3 passes for a row tile of BM rows, TM per thread (kernels below).
template <int BM, int TM>
__device__ __forceinline__ void fwd_v3(const float* x, const float* wt, const float* b, float* y,
                                       const Shape& s, int has_bias, int relu)
{
    const FwdOp3 op{wt, x, b, y, s, (int)blockIdx.z, has_bias, relu, s.Fg, s.N * s.OHW};
    implicit_gemm_v3<BM, V3_BN, V3_BK, TM, V3_TN>(op, 0, s.Cg * s.KHW);
}

template <int BM, int TM, bool UNIT>
__device__ __forceinline__ void bwd_data_v3(const float* dy, const float* wt, float* dx, const Shape& s)
{
    const BwdDataOp3<UNIT> op{wt, dy, dx, s, (int)blockIdx.z, s.Cg, s.N * s.HW};
    implicit_gemm_v3<BM, V3_BN, V3_BK, TM, V3_TN>(op, 0, s.Fg * s.KHW);
}

template <int BM, int TM>
__device__ __forceinline__ void bwd_filter_v3(const float* dy, const float* x, float* ws, const Shape& s,
                                              int splits, int k_chunk)
{
    const int g = blockIdx.z / splits, slice = blockIdx.z % splits;
    const BwdFilterOp3 op{dy, x, ws, s, g, slice, s.Fg, s.Cg * s.KHW};
    const int K = s.N * s.OHW, k_begin = slice * k_chunk;
    implicit_gemm_v3<BM, V3_BN, V3_BK, TM, V3_TN>(op, k_begin, min(K, k_begin + k_chunk));
}

}  // namespace conv

// Every conv kernel takes the same 14 shape scalars, written out in each signature
// (the launch registry reads signatures as written, without macros):
//   n, c, h, w (input), f, kh, kw (weight), oh, ow (output), sh, sw (stride),
//   ph, pw (padding), groups.
// Pointer shapes: x, dx (N, C, H, W); y, dy (N, F, OH, OW); wt, dw (F, Cg, KH, KW); b, db (F,).
#define CONV_SHAPE_ARGS n, c, h, w, f, kh, kw, oh, ow, sh, sw, ph, pw, groups

// ---------------------------------------------------------------------------
// v1: one thread per output element (1-D grid over the output, any block size).
// ---------------------------------------------------------------------------

// thread -> y[n, f, oh, ow] (flat NCHW index); b is read only when has_bias;
// relu != 0: y = max(0, conv + b) (the fused epilogue).
extern "C" __global__ void conv2d_fwd_v1(
    const float* __restrict__ x, const float* __restrict__ wt, const float* __restrict__ b,
    float* __restrict__ y,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    const conv::Shape s(CONV_SHAPE_ARGS);
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= s.N * s.F * s.OHW) return;
    const int ox = idx % s.OW, oy = (idx / s.OW) % s.OH, fi = (idx / s.OHW) % s.F, ni = idx / (s.OHW * s.F);
    const int g = fi / s.Fg;
    float acc = 0.f;
    for (int ci = 0; ci < s.Cg; ++ci)
        for (int i = 0; i < s.KH; ++i) {
            const int ih = oy * s.SH - s.PH + i;
            if (ih < 0 || ih >= s.H) continue;
            for (int j = 0; j < s.KW; ++j) {
                const int iw = ox * s.SW - s.PW + j;
                if (iw < 0 || iw >= s.W) continue;
                acc += wt[((fi * s.Cg + ci) * s.KH + i) * s.KW + j] *
                       x[((ni * s.C + g * s.Cg + ci) * s.H + ih) * s.W + iw];
            }
        }
    if (has_bias) acc += b[fi];
    y[idx] = relu ? fmaxf(acc, 0.f) : acc;
}

// thread -> dx[n, c, ih, iw]: a gather over the taps (f, i, j) that read this pixel.
extern "C" __global__ void conv2d_bwd_data_v1(
    const float* __restrict__ dy, const float* __restrict__ wt, float* __restrict__ dx,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups)
{
    const conv::Shape s(CONV_SHAPE_ARGS);
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= s.N * s.C * s.HW) return;
    const int ix = idx % s.W, iy = (idx / s.W) % s.H, ci = (idx / s.HW) % s.C, ni = idx / (s.HW * s.C);
    const int g = ci / s.Cg, cg = ci - g * s.Cg;
    float acc = 0.f;
    for (int fi = g * s.Fg; fi < (g + 1) * s.Fg; ++fi)
        for (int i = 0; i < s.KH; ++i) {
            const int th = iy + s.PH - i;               // = oy * SH when this tap hits
            if (th < 0 || th % s.SH != 0 || th / s.SH >= s.OH) continue;
            for (int j = 0; j < s.KW; ++j) {
                const int tw = ix + s.PW - j;
                if (tw < 0 || tw % s.SW != 0 || tw / s.SW >= s.OW) continue;
                acc += dy[((ni * s.F + fi) * s.OH + th / s.SH) * s.OW + tw / s.SW] *
                       wt[((fi * s.Cg + cg) * s.KH + i) * s.KW + j];
            }
        }
    dx[idx] = acc;
}

// thread -> dw[f, c, i, j]: a loop over (n, oh, ow).
extern "C" __global__ void conv2d_bwd_filter_v1(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ dw,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups)
{
    const conv::Shape s(CONV_SHAPE_ARGS);
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= s.F * s.Cg * s.KHW) return;
    const int j = idx % s.KW, i = (idx / s.KW) % s.KH, cg = (idx / s.KHW) % s.Cg, fi = idx / (s.KHW * s.Cg);
    const int ci = (fi / s.Fg) * s.Cg + cg;
    float acc = 0.f;
    for (int ni = 0; ni < s.N; ++ni)
        for (int oy = 0; oy < s.OH; ++oy) {
            const int ih = oy * s.SH - s.PH + i;
            if (ih < 0 || ih >= s.H) continue;
            for (int ox = 0; ox < s.OW; ++ox) {
                const int iw = ox * s.SW - s.PW + j;
                if (iw < 0 || iw >= s.W) continue;
                acc += dy[((ni * s.F + fi) * s.OH + oy) * s.OW + ox] *
                       x[((ni * s.C + ci) * s.H + ih) * s.W + iw];
            }
        }
    dw[idx] = acc;
}

// thread -> db[f]; dy seen as (N, F, P), P = OH*OW.
extern "C" __global__ void conv2d_bwd_bias_v1(const float* __restrict__ dy, float* __restrict__ db,
                                              int n, int f, int p)
{
    const int fi = blockIdx.x * blockDim.x + threadIdx.x;
    if (fi >= f) return;
    float acc = 0.f;
    for (int ni = 0; ni < n; ++ni)
        for (int q = 0; q < p; ++q) acc += dy[(ni * f + fi) * p + q];
    db[fi] = acc;
}

// ---------------------------------------------------------------------------
// v2: implicit GEMM, block = conv::V2_THREADS (256) threads, grids below.
// ---------------------------------------------------------------------------

// grid (ceil(N*OH*OW / BN), ceil(Fg / BM), G); relu != 0: y = max(0, conv + b).
extern "C" __global__ void __launch_bounds__(conv::V2_THREADS) conv2d_fwd_v2(
    const float* __restrict__ x, const float* __restrict__ wt, const float* __restrict__ b,
    float* __restrict__ y,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    using namespace conv;
    const Shape s(CONV_SHAPE_ARGS);
    const FwdOp op{x, wt, b, y, s, (int)blockIdx.z, has_bias, relu, s.Fg, s.N * s.OHW};
    implicit_gemm<BM, BN, BK, TM, TN>(op, 0, s.Cg * s.KHW);
}

// grid (ceil(N*H*W / BN), ceil(Cg / BM), G)
extern "C" __global__ void __launch_bounds__(conv::V2_THREADS) conv2d_bwd_data_v2(
    const float* __restrict__ dy, const float* __restrict__ wt, float* __restrict__ dx,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups)
{
    using namespace conv;
    const Shape s(CONV_SHAPE_ARGS);
    const BwdDataOp op{dy, wt, dx, s, (int)blockIdx.z, s.Cg, s.N * s.HW};
    implicit_gemm<BM, BN, BK, TM, TN>(op, 0, s.Fg * s.KHW);
}

// grid (ceil(Cg*KH*KW / BN), ceil(Fg / BM), G * splits); blockIdx.z = g * splits + slice;
// slice covers k in [slice*k_chunk, min(N*OH*OW, (slice+1)*k_chunk)) and writes
// ws[slice] (ws: (splits, F, Cg, KH, KW); with splits == 1, ws is dw itself).
extern "C" __global__ void __launch_bounds__(conv::V2_THREADS) conv2d_bwd_filter_v2(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int splits, int k_chunk)
{
    using namespace conv;
    const Shape s(CONV_SHAPE_ARGS);
    const int g = blockIdx.z / splits, slice = blockIdx.z % splits;
    const BwdFilterOp op{dy, x, ws, s, g, slice, s.Fg, s.Cg * s.KHW};
    const int K = s.N * s.OHW, k_begin = slice * k_chunk;
    implicit_gemm<BM, BN, BK, TM, TN>(op, k_begin, min(K, k_begin + k_chunk));
}

// dw[e] = sum_{sl < splits} ws[sl * count + e], in order sl = 0, 1, ... (1-D grid over e).
extern "C" __global__ void conv2d_bwd_filter_reduce(const float* __restrict__ ws, float* __restrict__ dw,
                                                    int count, int splits)
{
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= count) return;
    float acc = 0.f;
    for (int sl = 0; sl < splits; ++sl) acc += ws[sl * count + e];
    dw[e] = acc;
}

// grid (F), block 256: thread t sums dy[n, f, q] over e = n*P + q = t, t+256, ...,
// then a shared-memory tree.
extern "C" __global__ void __launch_bounds__(conv::BIAS_THREADS) conv2d_bwd_bias_v2(const float* __restrict__ dy, float* __restrict__ db,
                                              int n, int f, int p)
{
    constexpr int NT = conv::BIAS_THREADS;
    const int fi = blockIdx.x;
    float acc = 0.f;
    for (int e = threadIdx.x; e < n * p; e += NT) {
        const int ni = e / p, q = e - ni * p;
        acc += dy[(ni * f + fi) * p + q];
    }
    const float total = conv::block_sum<NT>(acc);
    if (threadIdx.x == 0) db[fi] = total;
}

// ---------------------------------------------------------------------------
// v3: implicit GEMM, 128 x 128 x 8 tile, block = conv::V3_THREADS (256), grids below.
// ---------------------------------------------------------------------------

// BM = 128 for the plain names, 64 for *_m64. relu != 0: y = max(0, conv + b).
// fwd grid (ceil(N*OH*OW / 128), ceil(Fg / BM), G)
extern "C" __global__ void __launch_bounds__(conv::V3_THREADS, 2) conv2d_fwd_v3(
    const float* __restrict__ x, const float* __restrict__ wt, const float* __restrict__ b,
    float* __restrict__ y,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv::fwd_v3<conv::V3_BM, conv::V3_TM>(x, wt, b, y, conv::Shape(CONV_SHAPE_ARGS), has_bias, relu);
}

extern "C" __global__ void __launch_bounds__(conv::V3_THREADS, 2) conv2d_fwd_v3_m64(
    const float* __restrict__ x, const float* __restrict__ wt, const float* __restrict__ b,
    float* __restrict__ y,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv::fwd_v3<conv::V3_BM_SMALL, conv::V3_TM_SMALL>(x, wt, b, y, conv::Shape(CONV_SHAPE_ARGS), has_bias, relu);
}

// bwd_data grid (ceil(N*H*W / 128), ceil(Cg / BM), G); any stride (two integer
// divisions per gathered dy element: stride > 1 is AlexNet's conv1 only, whose
// input gradient training never needs). *_s1: stride 1 (sh == sw == 1, the
// launcher picks it), no divisibility test.
extern "C" __global__ void __launch_bounds__(conv::V3_THREADS, 2) conv2d_bwd_data_v3(
    const float* __restrict__ dy, const float* __restrict__ wt, float* __restrict__ dx,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups)
{
    conv::bwd_data_v3<conv::V3_BM, conv::V3_TM, false>(dy, wt, dx, conv::Shape(CONV_SHAPE_ARGS));
}

extern "C" __global__ void __launch_bounds__(conv::V3_THREADS, 2) conv2d_bwd_data_v3_s1(
    const float* __restrict__ dy, const float* __restrict__ wt, float* __restrict__ dx,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups)
{
    conv::bwd_data_v3<conv::V3_BM, conv::V3_TM, true>(dy, wt, dx, conv::Shape(CONV_SHAPE_ARGS));
}

extern "C" __global__ void __launch_bounds__(conv::V3_THREADS, 2) conv2d_bwd_data_v3_m64(
    const float* __restrict__ dy, const float* __restrict__ wt, float* __restrict__ dx,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups)
{
    conv::bwd_data_v3<conv::V3_BM_SMALL, conv::V3_TM_SMALL, false>(dy, wt, dx, conv::Shape(CONV_SHAPE_ARGS));
}

extern "C" __global__ void __launch_bounds__(conv::V3_THREADS, 2) conv2d_bwd_data_v3_s1_m64(
    const float* __restrict__ dy, const float* __restrict__ wt, float* __restrict__ dx,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups)
{
    conv::bwd_data_v3<conv::V3_BM_SMALL, conv::V3_TM_SMALL, true>(dy, wt, dx, conv::Shape(CONV_SHAPE_ARGS));
}

// bwd_filter grid (ceil(Cg*KH*KW / 128), ceil(Fg / BM), G * splits), the v2 split-K
// scheme: blockIdx.z = g * splits + slice; slice covers k in [slice*k_chunk,
// min(N*OH*OW, (slice+1)*k_chunk)) and writes ws[slice] (splits == 1: ws is dw
// itself); conv2d_bwd_filter_reduce adds the slices in a fixed order.
extern "C" __global__ void __launch_bounds__(conv::V3_THREADS, 2) conv2d_bwd_filter_v3(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int splits, int k_chunk)
{
    conv::bwd_filter_v3<conv::V3_BM, conv::V3_TM>(dy, x, ws, conv::Shape(CONV_SHAPE_ARGS), splits, k_chunk);
}

extern "C" __global__ void __launch_bounds__(conv::V3_THREADS, 2) conv2d_bwd_filter_v3_m64(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int splits, int k_chunk)
{
    conv::bwd_filter_v3<conv::V3_BM_SMALL, conv::V3_TM_SMALL>(dy, x, ws, conv::Shape(CONV_SHAPE_ARGS), splits, k_chunk);
}

// ---------------------------------------------------------------------------
// v4: implicit GEMM with the gather decoded once per block, not per element.
//
// Each pass's B operand (the gathered image or gradient) is split into a part that
// depends only on the GEMM row k and a part that depends only on the column:
//     B[k, col] = src[colptr(col) + tile_offset + off[k]]   where bits[k] & colbits(col) != 0,
//                 0 elsewhere
// off/bits is a table built by the launcher (conv.py, _v4_table_np) and copied into
// shared memory once per block; colptr/colbits are decoded once per thread. bits
// has one bit per filter tap (i, j) (<= 32 taps: "masked"), or is 1 where no tap can
// leave the image (pad 0, more than 32 taps: "unmasked"); padding rows and missing
// columns get 0. The K order is the launcher's: where masked, tap-major with each
// tap's run of channels padded to a multiple of a thread's rows, so the rows one
// thread copies share one tap and one test. A copied element then costs one address
// (IMAD.WIDE) and one cp.async (zero-filled where the test fails): no division, no
// carry, no per-element branch.
//   fwd:        m = f, col = (n,oh,ow), k = (tap, c) masked or (c,i,j) unmasked;
//               colptr = x + (n, g*Cg, oh*SH-PH, ow*SW-PW), off = c*H*W + i*W + j
//   bwd_data:   stride 1, masked: m = c, col = (n,ih,iw), k = (tap, f);
//               colptr = dy + (n, g*Fg, ih+PH, iw+PW), off = f*OH*OW - i*OW - j
//   bwd_filter: m = f, k = (n, p = (oh,ow)), each K tile inside one image (Pp rows v per
//               image, a multiple of 16; tile offset n*C*H*W; tile t covers the pixels
//               p = min(16 t, OH*OW - 16) + v % 16, OH*OW >= 16, so dy needs no test);
//               off[v] = oh*SH*W + ow*SW and bits[v] = the taps valid at (oh, ow), 0 for the
//               rows the tile before already covered; col = (tap, c) with c < cgp
//               (masked, cgp = Cg padded to a multiple of 8) or (c,i,j) (unmasked, cgp = 0):
//               a thread copies 8 columns of one tap at one p, one test for all 8
// A: fwd and bwd_data read the weights rearranged by the launcher into at (G, Mp / BM, kp,
// BM) (the K order above, zero-padded to whole tiles, each row tile's block contiguous:
// 16-byte cp.async at immediate offsets); bwd_filter reads
// dy rows (rows past M clamped to M - 1: their results are never stored).
// Padding rows of a channel run point at channel 0 of their tap (off of c = 0) and meet
// zero rows of A, so they add 0 * (an input inside this output's receptive field).
//
// Tile: BM x 128 x 16 (BM = 128: 256 threads; BM = 96, *_m96: 192; BM = 64, *_m64:
// 128; BM = 48, *_m48: 128 threads, warps 2 x 2 of 24 x 64, each thread 6 x 8: rows
// ty*4 + e, e < 4, and 16 + ty*2 + e, e < 2, its A read a float4 and a float2, and A
// copied by threads 0..95 only; 4 LDS per 48 FFMA, a 92.3% ceiling against the
// 8 x 8 fragment's 94.1%); otherwise warps (BM/32) x 2, each owning a 32 x 64
// sub-tile as 4 x 8 threads of 8 x 8 accumulators: thread (ty, tx) of warp (wm, wn) holds rows
// wm*32 + {ty*4, 16 + ty*4} + e and columns wn*64 + {tx*4, 32 + tx*4} + e, e < 4;
// each kk step reads two A and two B float4 (one shared-memory wavefront each:
// the A reads are 4 distinct float4, the B reads 8, the rest broadcasts).
// V4_STAGES = 3 shared-memory stages filled by cp.async (the helpers below have a
// plain C++ branch for the emulation); one __syncthreads per K step.
// Split-K (any pass): blockIdx.z = g * splits + slice; slice covers K tiles
// [slice*tps, ...); with splits > 1 the partial sums go to out + slice * (output size)
// and conv2d_v4_reduce adds them in a fixed order (then bias and ReLU for the forward).
// ---------------------------------------------------------------------------
// v4's dynamic shared memory (at file scope: the engine below is in namespace conv).
extern __shared__ __align__(16) unsigned char cn_smem[];

namespace conv {

constexpr int V4_BN = 128, V4_BK = 16, V4_STAGES = 3;
constexpr int V4_BM = 128, V4_BM_MID = 96, V4_BM_SMALL = 64;   // threads = 2 * BM
constexpr int V4_BM_48 = 48;                        // *_m48: 128 threads, 6-row fragments
// Threads of a v4 block of BM rows (conv.py, V4_THREADS).
__host__ __device__ constexpr int v4_threads(int bm) { return bm == 48 ? 128 : 2 * bm; }
constexpr int V4_THREADS_48 = v4_threads(V4_BM_48);
constexpr int V4_COLS = 8;                          // bwd_filter: columns one thread copies
constexpr int V4_SPARE = (V4_STAGES - 1) * V4_BK;   // fwd/bwd_data: K rows loaded past a slice's end

// A shared-memory destination of cp.async: the shared-window address on the GPU, a
// plain pointer on the emulation. smem_add advances it by a number of floats.
#ifdef CN_EMULATION
typedef float* SmemAddr;
__device__ __forceinline__ SmemAddr smem_addr(float* p) { return p; }
__device__ __forceinline__ SmemAddr smem_add(SmemAddr a, int floats) { return a + floats; }
#else
typedef unsigned SmemAddr;
__device__ __forceinline__ SmemAddr smem_addr(float* p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ SmemAddr smem_add(SmemAddr a, int floats) { return a + 4u * (unsigned)floats; }
#endif

// cp.async of 4 and of 16 bytes (zero-filled when !pred; src is not read then),
// commit and wait. The emulation copies at once (a stricter ordering).
__device__ __forceinline__ void cp_async4(SmemAddr dst, const float* src, bool pred)
{
#ifdef CN_EMULATION
    *dst = pred ? *src : 0.f;
#else
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" :: "r"(dst), "l"(src), "r"(pred ? 4 : 0));
#endif
}

__device__ __forceinline__ void cp_async16(SmemAddr dst, const float* src, bool pred)
{
#ifdef CN_EMULATION
    for (int e = 0; e < 4; ++e) dst[e] = pred ? src[e] : 0.f;
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(dst), "l"(src), "r"(pred ? 16 : 0));
#endif
}

__device__ __forceinline__ void cp_async_commit()
{
#ifndef CN_EMULATION
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait()
{
#ifndef CN_EMULATION
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N));
#endif
}

// p, hidden from the optimiser (a register move on the GPU): `opaque_ptr(base) + off`
// is then one IMAD.WIDE, not off widened to 64 bits and added to base's parts.
__device__ __forceinline__ const float* opaque_ptr(const float* p)
{
#ifndef CN_EMULATION
    asm("mov.b64 %0, %0;" : "+l"(p));
#endif
    return p;
}

// v, hidden per use (volatile: not hoisted out of the loop; ptxas drops the move), so
// that nvcc keeps a loop-invariant int offset in 32 bits instead of a widened copy.
__device__ __forceinline__ int opaque_int(int v)
{
#ifndef CN_EMULATION
    asm volatile("mov.b32 %0, %0;" : "+r"(v));
#endif
    return v;
}

// A compile-time int as a value (the stage of the unrolled main loop).
template <int N>
struct Int { static constexpr int value = N; };

// Per-thread B column state of fwd and bwd_data: colptr and the taps it may read.
struct ColB { const float* ptr; unsigned bits; };

// fwd v4 (m = f, col = (n,oh,ow)); y = conv + b, then max(0, .) when relu.
struct FwdOp4 {
    static constexpr bool WEIGHTS_A = true;
    const float* x; const float* at; const float* bias; float* y;
    Shape s; int g, has_bias, relu, masked, kp, Mp, M, NCOL;
    __device__ ColB col(int c) const {
        if (c >= NCOL) return ColB{x, 0u};
        const int n = c / s.OHW, p = c - n * s.OHW, oh = p / s.OW, ow = p - oh * s.OW;
        const int ih0 = oh * s.SH - s.PH, iw0 = ow * s.SW - s.PW;
        unsigned bits = 0xffffffffu;
        if (masked) {
            bits = 0u;
            for (int i = 0; i < s.KH; ++i)
                for (int j = 0; j < s.KW; ++j)
                    if ((unsigned)(ih0 + i) < (unsigned)s.H && (unsigned)(iw0 + j) < (unsigned)s.W)
                        bits |= 1u << (i * s.KW + j);
        }
        return ColB{x + ((n * s.C + g * s.Cg) * s.HW + ih0 * s.W + iw0), bits};
    }
    __device__ int out(int c) const { const int n = c / s.OHW; return n * s.F * s.OHW + (c - n * s.OHW); }
    __device__ void store(int m, int o, float v) const {
        const int f = g * s.Fg + m;
        if (has_bias) v += bias[f];
        if (relu) v = fmaxf(v, 0.f);
        y[o + f * s.OHW] = v;
    }
};

// bwd_data v4, stride 1 (m = c, col = (n,ih,iw)): dy[n, g*Fg+f, ih+PH-i, iw+PW-j].
struct BwdDataOp4 {
    static constexpr bool WEIGHTS_A = true;
    const float* dy; const float* at; float* dx;
    Shape s; int g, kp, Mp, M, NCOL;
    __device__ ColB col(int c) const {
        if (c >= NCOL) return ColB{dy, 0u};
        const int n = c / s.HW, p = c - n * s.HW, ih = p / s.W, iw = p - ih * s.W;
        const int th = ih + s.PH, tw = iw + s.PW;
        unsigned bits = 0u;
        for (int i = 0; i < s.KH; ++i)
            for (int j = 0; j < s.KW; ++j)
                if ((unsigned)(th - i) < (unsigned)s.OH && (unsigned)(tw - j) < (unsigned)s.OW)
                    bits |= 1u << (i * s.KW + j);
        return ColB{dy + ((n * s.F + g * s.Fg) * s.OHW + th * s.OW + tw), bits};
    }
    __device__ int out(int c) const { const int n = c / s.HW; return n * s.C * s.HW + (c - n * s.HW); }
    __device__ void store(int m, int o, float v) const { dx[o + (g * s.Cg + m) * s.HW] = v; }
};

// bwd_filter v4 (m = f, k = (n,p), col = (tap, c < cgp) or (c,i,j) when cgp = 0);
// writes dw (or its split-K slice).
struct BwdFilterOp4 {
    static constexpr bool WEIGHTS_A = false;
    const float* dy; const float* x; float* dw;
    Shape s; int g, cgp, PT, M, NCOL;              // PT: K tiles per image (Pp / 16)
    // The 8 columns j0 .. j0+7 (j0 % 8 == 0): their x offsets (c, i-PH, j-PW) and tap bit.
    __device__ unsigned cols(int j0, int* off) const {
        unsigned bit = 1u;
        for (int r = 0; r < V4_COLS; ++r) {
            int c, tap;
            if (cgp) {
                tap = min(j0 / cgp, s.KHW - 1);
                c = min(j0 % cgp + r, s.Cg - 1);
                bit = j0 < NCOL ? 1u << tap : 0u;
            } else {
                const int jj = min(j0 + r, NCOL - 1);
                c = jj / s.KHW; tap = jj - c * s.KHW;
            }
            const int i = tap / s.KW, j = tap - i * s.KW;
            off[r] = (g * s.Cg + c) * s.HW + (i - s.PH) * s.W + (j - s.PW);
        }
        return bit;
    }
    // dw column of GEMM column j (-1: a padding column).
    __device__ int out(int j) const {
        if (!cgp) return j;
        const int tap = j / cgp, c = j - tap * cgp;
        return c < s.Cg ? c * s.KHW + tap : -1;
    }
    __device__ void store(int m, int o, float v) const { dw[(g * s.Fg + m) * (s.Cg * s.KHW) + o] = v; }
};

// The v4 engine: C tile (blockIdx.y*BM.., blockIdx.x*128..) of group g over K tiles
// [kt_begin, kt_end). gtab: the table, offs at gtab[0 .. tab_total), bits at
// gtab[tab_total ..); the block copies entries [tab_begin, tab_begin + tab_count).
// Dynamic shared memory: V4_STAGES * 16 * ((BM + 4) + 128) floats + 2 * tab_count ints
// (conv.py, _v4_smem).
template <int BM, class Op>
__device__ __forceinline__ void implicit_gemm_v4(const Op& op, const int* __restrict__ gtab, int tab_total,
                                                 int tab_begin, int tab_count, int kt_begin, int kt_end)
{
    constexpr int BN = V4_BN, BK = V4_BK, ST = V4_STAGES, NT = v4_threads(BM), AP = BM + 4;
    // Warp tile WM x 64 (warps (BM/WM) x 2), thread fragment RM x 8: rows ty*4 + e (e < 4)
    // and 16 + ty*(RM-4) + e (e < RM-4) of the warp's WM. BM = 48: WM = 24, RM = 6
    // (the second A read is a float2).
    constexpr int WM = BM == 48 ? 24 : 32, RM = WM / 4, RM2 = RM - 4;
    static_assert((BM / WM) * 2 * 32 == NT && (RM2 == 4 || RM2 == 2), "v4 warp tiling");
    // B is copied by the first BT threads (all of them, but 128 of the 96-row tile's 192);
    // A by the first AT (all of them, but 96 of the 48-row tile's 128).
    constexpr int BT = NT / BN * BN, AT = 2 * BM;
    constexpr int B_ROWS = BK * BN / BT;          // fwd/bwd_data: consecutive k rows of one column
    constexpr int A_ROWS = BK * BM / AT;          // bwd_filter: 8 consecutive dy elements per thread
    constexpr int B_REP = BK * BN / (BT * V4_COLS); // bwd_filter: rows of 8 columns per thread
    constexpr int B_KSTEP = BT / (BN / V4_COLS);  // ... at this k stride
    static_assert(BT * B_ROWS == BK * BN && B_ROWS % 4 == 0 && A_ROWS == 8 && B_REP * B_KSTEP == BK &&
                  (BM / 4) * 8 == AT && AT <= NT, "v4 tile shape");
    float* As = reinterpret_cast<float*>(::cn_smem);             // [ST][BK][AP]
    float* Bs = As + ST * BK * AP;                                // [ST][BK][BN]
    // The table, interleaved per K tile: entry i's off at tab[tpos(i)], its bits BK ints
    // later (tpos(i) = (i / BK) * 2 * BK + i % BK; tab_count is a multiple of BK). One
    // pointer then reaches both with immediates, advanced once per tile.
    int* tab = reinterpret_cast<int*>(Bs + ST * BK * BN);         // [tab_count / BK][2][BK]

    const int t = threadIdx.x, lane = t % 32, warp = t / 32;
    const int wm = warp / 2, wn = warp % 2, ty = lane / 8, tx = lane % 8;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const bool copies_b = BT == NT || t < BT;     // warp-uniform (BT is a multiple of 32)
    const bool copies_a = AT == NT || t < AT;     // warp-uniform (AT is a multiple of 32)

    for (int i = t; i < tab_count; i += NT) {
        const int ti = (i / BK) * (2 * BK) + i % BK;
        tab[ti] = gtab[tab_begin + i];
        tab[ti + BK] = gtab[tab_total + tab_begin + i];
    }
    __syncthreads();

    // A: weights: 16-byte chunks at rows 2*ak and 2*ak + 1, columns am .. am + 3 (adjacent
    //    rows: both copies of a tile are one pointer plus an immediate);
    //    dy: row am (clamped to M - 1), K-tile columns ak*8 .. ak*8 + 7 (consecutive floats).
    // B: fwd/bwd_data: column bc, rows brow .. brow + B_ROWS - 1 (one tap: one test);
    //    bwd_filter: columns bc .. bc + 7 (one tap) at rows brow + q * B_KSTEP.
    int ak, am, bc, brow;
    const float* asrc;
    int arow = 0;
    ColB cb;
    int boff[Op::WEIGHTS_A ? 1 : V4_COLS];
    unsigned bbit = 0u;
    if constexpr (Op::WEIGHTS_A) {
        ak = t / (BM / 4); am = (t % (BM / 4)) * 4;
        // at is tiled by rows, (G, Mp / BM, kp + ..., BM): a row tile's K rows are BM floats
        // apart, so every A copy of the unrolled loop is this pointer plus an immediate.
        asrc = op.at + (((op.g * (op.Mp / BM) + (int)blockIdx.y) * op.kp + kt_begin * BK + 2 * ak) * BM + am);
        bc = t % BN; brow = ((BT == NT ? t : t % BT) / BN) * B_ROWS;
        cb = op.col(col0 + bc);
        boff[0] = 0;
    } else {
        ak = t % 2; am = t / 2;
        asrc = op.dy;
        arow = (op.g * op.s.Fg + min(row0 + am, op.M - 1)) * op.s.OHW + ak * A_ROWS;
        bc = (t % (BN / V4_COLS)) * V4_COLS; brow = (BT == NT ? t : t % BT) / (BN / V4_COLS);
        bbit = op.cols(col0 + bc, boff);
        cb = ColB{op.x, 0u};
    }
    const SmemAddr adst = smem_addr(As + (Op::WEIGHTS_A ? 2 * ak : ak * A_ROWS) * AP + am);
    const SmemAddr bdst = smem_addr(Bs + brow * BN + bc);

    // The next tile to load: its index and (bwd_filter) the image n and pixel p0 it
    // starts at. Stages are compile-time (the main loop is unrolled by V4_STAGES), so
    // every shared-memory address is a register plus an immediate.
    // tp: the table at the next tile (fwd/bwd_data: its row brow; bwd_filter: see below).
    int an = 0, ap0 = 0;
    const int* tp = tab + brow;
    if constexpr (!Op::WEIGHTS_A) { an = kt_begin / op.PT; ap0 = (kt_begin - an * op.PT) * BK; }
    // Unconditional (tiles past kt_end copy nothing and zero-fill a stage nobody reads).
    auto load = [&](auto stage) {
        constexpr int LS = decltype(stage)::value;
        const SmemAddr as = smem_add(adst, LS * (BK * AP));
        const SmemAddr bs = smem_add(bdst, LS * (BK * BN));
        if constexpr (Op::WEIGHTS_A) {
            // Past kt_end (at most ST - 1 tiles): at has ST - 1 spare tiles at its end and
            // the table ST - 1 tiles of bits 0, so these copies stay in bounds unguarded.
            // The table entries first: every cp.async of the tile then follows the last
            // shared-memory read, and ptxas pads the group once (3 @!PT LDS), not per group.
            bool ok = false;
            int4 ev[B_ROWS / 4];
            if (copies_b) {
                ok = ((unsigned)tp[BK] & cb.bits) != 0u;           // the bits of row brow
#pragma unroll
                for (int r = 0; r < B_ROWS; r += 4) ev[r / 4] = reinterpret_cast<const int4*>(tp)[r / 4];
            }
            tp += 2 * BK;
            if (copies_a) {
                cp_async16(as, asrc, true);
                cp_async16(smem_add(as, AP), asrc + BM, true);
            }
            asrc += BK * BM;
            if (copies_b) {
#pragma unroll
                for (int r = 0; r < B_ROWS; r += 4) {
                    const int4 v = ev[r / 4];
                    cp_async4(smem_add(bs, (r + 0) * BN), cb.ptr + v.x, ok);
                    cp_async4(smem_add(bs, (r + 1) * BN), cb.ptr + v.y, ok);
                    cp_async4(smem_add(bs, (r + 2) * BN), cb.ptr + v.z, ok);
                    cp_async4(smem_add(bs, (r + 3) * BN), cb.ptr + v.w, ok);
                }
            }
        } else {
            // Offsets summed as unsigned ints (no overflow: the launcher keeps every
            // tensor under 2^31 elements), so each address is one IADD and one IMAD.WIDE.
            // Past kt_end the cursor stays on the last image (its copies land in a stage
            // nobody reads), so no test of kt_end here.
            // The image's last tile starts at OH*OW - 16 (the launcher runs v4 only where
            // OH*OW >= 16), so the 8 dy elements are always inside the image: no test. Its
            // rows that the tile before already covered have bits 0 in the table (B is 0).
            const float* a = asrc + (int)((unsigned)(an * op.s.F * op.s.OHW + min(ap0, op.s.OHW - BK)) +
                                          (unsigned)arow);
            // The table entries first (one padded group of cp.async, as above).
            unsigned tb[B_REP]; int to[B_REP];
            if (copies_b) {
#pragma unroll
                for (int q = 0; q < B_REP; ++q) {
                    const int* v = tp + 2 * ap0 + q * B_KSTEP;   // row ap0 + brow + q * B_KSTEP
                    tb[q] = v[BK]; to[q] = v[0];
                }
            }
#pragma unroll
            for (int e = 0; e < (copies_a ? A_ROWS : 0); ++e) cp_async4(smem_add(as, e * AP), a + e, true);
            const unsigned xbase = (unsigned)(an * op.s.C * op.s.HW);
#pragma unroll
            for (int q = 0; q < (copies_b ? B_REP : 0); ++q) {
                const bool ok = (tb[q] & bbit) != 0u;             // row ap0 + brow + q * B_KSTEP
                // The row's pixel (x + n*C*H*W + off), then one IMAD.WIDE per column.
                // (opaque: otherwise nvcc widens boff[r] to 64 bits, 2 to 4 instructions each)
                const float* xb = opaque_ptr(op.x + (int)(xbase + (unsigned)to[q]));
#pragma unroll
                for (int r = 0; r < V4_COLS; ++r)
                    cp_async4(smem_add(bs, q * B_KSTEP * BN + r), xb + opaque_int(boff[r]), ok);
            }
            ap0 += BK;
            if (ap0 == op.PT * BK) { ap0 = 0; an = min(an + 1, op.s.N - 1); }
        }
    };

    float acc[RM][8];
#pragma unroll
    for (int r = 0; r < RM; ++r)
#pragma unroll
        for (int c = 0; c < 8; ++c) acc[r][c] = 0.f;

    // One K step on stage S: wait for its tile, barrier (the stage loaded next was
    // last read before it), start the load ST - 1 tiles ahead, multiply.
    auto step = [&](auto stage) {
        constexpr int S = decltype(stage)::value;
        cp_async_wait<ST - 2>();
        __syncthreads();
        load(Int<(S + ST - 1) % ST>{});
        cp_async_commit();
        const float* as = As + S * (BK * AP) + wm * WM + ty * 4;
        const float* as2 = As + S * (BK * AP) + wm * WM + 16 + ty * RM2;
        const float* bs = Bs + S * (BK * BN) + wn * 64 + tx * 4;
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            const float4 a0 = *reinterpret_cast<const float4*>(as + kk * AP);
            float av[RM];
            av[0] = a0.x; av[1] = a0.y; av[2] = a0.z; av[3] = a0.w;
            if constexpr (RM2 == 4) {
                const float4 a1 = *reinterpret_cast<const float4*>(as2 + kk * AP);
                av[4] = a1.x; av[5] = a1.y; av[6] = a1.z; av[7] = a1.w;
            } else {
                const float2 a1 = *reinterpret_cast<const float2*>(as2 + kk * AP);
                av[4] = a1.x; av[5] = a1.y;
            }
            const float4 b0 = *reinterpret_cast<const float4*>(bs + kk * BN);
            const float4 b1 = *reinterpret_cast<const float4*>(bs + kk * BN + 32);
            const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
            for (int r = 0; r < RM; ++r)
#pragma unroll
                for (int c = 0; c < 8; ++c) acc[r][c] = fmaf(av[r], bv[c], acc[r][c]);
        }
    };

    static_assert(ST == 3, "the main loop below is unrolled for 3 stages");
    load(Int<0>{});
    cp_async_commit();
    load(Int<1>{});
    cp_async_commit();
    const int nk = kt_end - kt_begin;
    if constexpr (Op::WEIGHTS_A) {
        // Whole rounds of ST steps with no exit test inside, then the nk % ST steps left
        // (outside the loop: the loop body is ST steps and one test).
        for (int i = nk / ST; i > 0; --i) {
            step(Int<0>{});
            step(Int<1>{});
            step(Int<2>{});
        }
        if (nk % ST >= 1) step(Int<0>{});
        if (nk % ST >= 2) step(Int<1>{});
    } else {
        // bwd_filter keeps an exit test per step: with the two tail steps outside the
        // loop, ptxas spills on sm_80..89 (its registers are at the 128 cap).
        for (int i = 0; i < nk; i += ST) {
            step(Int<0>{});
            if (i + 1 >= nk) break;
            step(Int<1>{});
            if (i + 2 >= nk) break;
            step(Int<2>{});
        }
    }
    cp_async_wait<0>();

    // Epilogue: rows wm*WM + {ty*4 + e (e < 4), 16 + ty*RM2 + e (e < RM2)},
    // columns wn*64 + {tx*4, 32 + tx*4} + e.
#pragma unroll
    for (int c = 0; c < 8; ++c) {
        const int col = col0 + wn * 64 + tx * 4 + (c / 4) * 32 + c % 4;
        if (col >= op.NCOL) continue;
        const int o = op.out(col);
        if (o < 0) continue;
#pragma unroll
        for (int r = 0; r < RM; ++r) {
            const int m = row0 + wm * WM + (r < 4 ? ty * 4 + r : 16 + ty * RM2 + (r - 4));
            if (m < op.M) op.store(m, o, acc[r][c]);
        }
    }
}

// The v4 passes for a row tile of BM rows (kernels below). splits > 1: out is the
// workspace, slice `slice` written at out + slice * (output size).
template <int BM>
__device__ __forceinline__ void fwd_v4(const float* x, const float* at, const int* tab, const float* b, float* y,
                                       const Shape& s, int has_bias, int relu, int masked, int kp, int splits, int tps)
{
    const int g = blockIdx.z / splits, slice = blockIdx.z % splits;
    const int Mp = (s.Fg + BM - 1) / BM * BM;
    const int kt0 = slice * tps, kt1 = min(kp / V4_BK, kt0 + tps);
    const FwdOp4 op{x, at, b, y + slice * (s.N * s.F * s.OHW), s, g, has_bias, relu, masked, kp, Mp,
                    s.Fg, s.N * s.OHW};
    implicit_gemm_v4<BM>(op, tab, kp + V4_SPARE, kt0 * V4_BK, (kt1 - kt0) * V4_BK + V4_SPARE, kt0, kt1);
}

template <int BM>
__device__ __forceinline__ void bwd_data_v4(const float* dy, const float* at, const int* tab, float* dx,
                                            const Shape& s, int kp, int splits, int tps)
{
    const int g = blockIdx.z / splits, slice = blockIdx.z % splits;
    const int Mp = (s.Cg + BM - 1) / BM * BM;
    const int kt0 = slice * tps, kt1 = min(kp / V4_BK, kt0 + tps);
    const BwdDataOp4 op{dy, at, dx + slice * (s.N * s.C * s.HW), s, g, kp, Mp, s.Cg, s.N * s.HW};
    implicit_gemm_v4<BM>(op, tab, kp + V4_SPARE, kt0 * V4_BK, (kt1 - kt0) * V4_BK + V4_SPARE, kt0, kt1);
}

template <int BM>
__device__ __forceinline__ void bwd_filter_v4(const float* dy, const float* x, const int* tab, float* dw,
                                              const Shape& s, int cgp, int splits, int tps)
{
    const int g = blockIdx.z / splits, slice = blockIdx.z % splits;
    const int PT = (s.OHW + V4_BK - 1) / V4_BK;
    const int kt0 = slice * tps, kt1 = min(s.N * PT, kt0 + tps);
    const int ncol = cgp ? s.KHW * cgp : s.Cg * s.KHW;
    const BwdFilterOp4 op{dy, x, dw + slice * (s.F * s.Cg * s.KHW), s, g, cgp, PT, s.Fg, ncol};
    implicit_gemm_v4<BM>(op, tab, PT * V4_BK, 0, PT * V4_BK, kt0, kt1);
}

}  // namespace conv

// ---------------------------------------------------------------------------
// v4 kernels. Block 2 * BM threads (256, or 128 for *_m64), dynamic shared memory
// (conv.py, _v4_smem); grid (ceil(NCOL / 128), ceil(M / BM), G * splits),
// blockIdx.z = g * splits + slice, tps = K tiles (of 16) per slice.
// at (G, Mp / BM, kp, BM) + V4_SPARE * Mp spare floats: the weights as the GEMM's A in the
// launcher's K order, zero-padded; tab (2, kp + V4_SPARE) (fwd, bwd_data) or (2, Pp)
// (bwd_filter): offs then bits (conv.py, _v4_table_np). splits > 1: y/dx/dw is
// the workspace (splits, output) and conv2d_v4_reduce finishes (bias, ReLU there).
// ---------------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(2 * conv::V4_BM, 2) conv2d_fwd_v4(
    const float* __restrict__ x, const float* __restrict__ at, const int* __restrict__ tab,
    const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int has_bias, int relu, int masked, int kp, int splits, int tps)
{
    conv::fwd_v4<conv::V4_BM>(x, at, tab, b, y, conv::Shape(CONV_SHAPE_ARGS), has_bias, relu, masked, kp, splits, tps);
}

extern "C" __global__ void __launch_bounds__(2 * conv::V4_BM_SMALL, 4) conv2d_fwd_v4_m64(
    const float* __restrict__ x, const float* __restrict__ at, const int* __restrict__ tab,
    const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int has_bias, int relu, int masked, int kp, int splits, int tps)
{
    conv::fwd_v4<conv::V4_BM_SMALL>(x, at, tab, b, y, conv::Shape(CONV_SHAPE_ARGS), has_bias, relu, masked, kp,
                                    splits, tps);
}

extern "C" __global__ void __launch_bounds__(conv::V4_THREADS_48, 4) conv2d_fwd_v4_m48(
    const float* __restrict__ x, const float* __restrict__ at, const int* __restrict__ tab,
    const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int has_bias, int relu, int masked, int kp, int splits, int tps)
{
    conv::fwd_v4<conv::V4_BM_48>(x, at, tab, b, y, conv::Shape(CONV_SHAPE_ARGS), has_bias, relu, masked, kp,
                                    splits, tps);
}

extern "C" __global__ void __launch_bounds__(2 * conv::V4_BM_MID, 2) conv2d_fwd_v4_m96(
    const float* __restrict__ x, const float* __restrict__ at, const int* __restrict__ tab,
    const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int has_bias, int relu, int masked, int kp, int splits, int tps)
{
    conv::fwd_v4<conv::V4_BM_MID>(x, at, tab, b, y, conv::Shape(CONV_SHAPE_ARGS), has_bias, relu, masked, kp,
                                    splits, tps);
}

// stride 1 only (the launcher runs v3 for other strides).
extern "C" __global__ void __launch_bounds__(2 * conv::V4_BM, 2) conv2d_bwd_data_v4(
    const float* __restrict__ dy, const float* __restrict__ at, const int* __restrict__ tab,
    float* __restrict__ dx,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int kp, int splits, int tps)
{
    conv::bwd_data_v4<conv::V4_BM>(dy, at, tab, dx, conv::Shape(CONV_SHAPE_ARGS), kp, splits, tps);
}

extern "C" __global__ void __launch_bounds__(2 * conv::V4_BM_SMALL, 4) conv2d_bwd_data_v4_m64(
    const float* __restrict__ dy, const float* __restrict__ at, const int* __restrict__ tab,
    float* __restrict__ dx,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int kp, int splits, int tps)
{
    conv::bwd_data_v4<conv::V4_BM_SMALL>(dy, at, tab, dx, conv::Shape(CONV_SHAPE_ARGS), kp, splits, tps);
}

extern "C" __global__ void __launch_bounds__(conv::V4_THREADS_48, 4) conv2d_bwd_data_v4_m48(
    const float* __restrict__ dy, const float* __restrict__ at, const int* __restrict__ tab,
    float* __restrict__ dx,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int kp, int splits, int tps)
{
    conv::bwd_data_v4<conv::V4_BM_48>(dy, at, tab, dx, conv::Shape(CONV_SHAPE_ARGS), kp, splits, tps);
}

extern "C" __global__ void __launch_bounds__(2 * conv::V4_BM_MID, 2) conv2d_bwd_data_v4_m96(
    const float* __restrict__ dy, const float* __restrict__ at, const int* __restrict__ tab,
    float* __restrict__ dx,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int kp, int splits, int tps)
{
    conv::bwd_data_v4<conv::V4_BM_MID>(dy, at, tab, dx, conv::Shape(CONV_SHAPE_ARGS), kp, splits, tps);
}

// cgp: 0 (columns (c,i,j), no tap mask) or Cg padded to a multiple of 8 (columns (tap, c)).
extern "C" __global__ void __launch_bounds__(2 * conv::V4_BM, 2) conv2d_bwd_filter_v4(
    const float* __restrict__ dy, const float* __restrict__ x, const int* __restrict__ tab,
    float* __restrict__ dw,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int cgp, int splits, int tps)
{
    conv::bwd_filter_v4<conv::V4_BM>(dy, x, tab, dw, conv::Shape(CONV_SHAPE_ARGS), cgp, splits, tps);
}

extern "C" __global__ void __launch_bounds__(2 * conv::V4_BM_SMALL, 4) conv2d_bwd_filter_v4_m64(
    const float* __restrict__ dy, const float* __restrict__ x, const int* __restrict__ tab,
    float* __restrict__ dw,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int cgp, int splits, int tps)
{
    conv::bwd_filter_v4<conv::V4_BM_SMALL>(dy, x, tab, dw, conv::Shape(CONV_SHAPE_ARGS), cgp, splits, tps);
}

extern "C" __global__ void __launch_bounds__(conv::V4_THREADS_48, 4) conv2d_bwd_filter_v4_m48(
    const float* __restrict__ dy, const float* __restrict__ x, const int* __restrict__ tab,
    float* __restrict__ dw,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int cgp, int splits, int tps)
{
    conv::bwd_filter_v4<conv::V4_BM_48>(dy, x, tab, dw, conv::Shape(CONV_SHAPE_ARGS), cgp, splits, tps);
}

extern "C" __global__ void __launch_bounds__(2 * conv::V4_BM_MID, 2) conv2d_bwd_filter_v4_m96(
    const float* __restrict__ dy, const float* __restrict__ x, const int* __restrict__ tab,
    float* __restrict__ dw,
    int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
    int sh, int sw, int ph, int pw, int groups, int cgp, int splits, int tps)
{
    conv::bwd_filter_v4<conv::V4_BM_MID>(dy, x, tab, dw, conv::Shape(CONV_SHAPE_ARGS), cgp, splits, tps);
}

// out[e] = sum_{sl < splits} ws[sl * count + e] in order sl = 0, 1, ...; then + b[(e / inner) % nb]
// when has_bias, max(0, .) when relu (1-D grid over e).
extern "C" __global__ void conv2d_v4_reduce(const float* __restrict__ ws, const float* __restrict__ b,
                                            float* __restrict__ out, int count, int splits, int inner, int nb,
                                            int has_bias, int relu)
{
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= count) return;
    float acc = 0.f;
    for (int sl = 0; sl < splits; ++sl) acc += ws[sl * count + e];
    if (has_bias) acc += b[(e / inner) % nb];
    out[e] = relu ? fmaxf(acc, 0.f) : acc;
}

// ---------------------------------------------------------------------------
// Winograd F(2x2, 3x3) forward (3x3 filters, stride 1, any padding): each 2x2 block
// of outputs of one (n, f) is  Y = A^T [ sum_c (G g_fc G^T) . (B^T d_c B) ] A
// with d_c the 4x4 input patch of channel c at (2*th - PH, 2*tw - PW) and
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
//   A^T = [1 1 1 0; 0 1 -1 -1]
// (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): 16
// multiplications per output block and channel instead of 36 (2.25x fewer). Three
// launches: conv2d_wino_input (x -> V, (16, C, P), P = N*TH*TW tiles, TH = ceil(OH/2)),
// the 16*G GEMMs M[xi, g] = U[xi, g]^T V[xi, g] on the v4 engine (conv2d_wino_gemm;
// U = G g G^T is made by the launcher as at (16*G, kp, Mp), k = c, m = f), and
// conv2d_wino_output (M (16, F, P) -> y, + bias, ReLU). The launcher (conv.py) runs
// backward-data as this forward of dy with the flipped, transposed filters.
// ---------------------------------------------------------------------------
namespace conv {

// The GEMM of one (xi, g): C[f, p] = sum_c U[xi,g][c, f] V[xi][g*Cg + c][p].
// tab: off = c*P (c < Cg, else 0: A is 0 there), bits 1 (0 in the spare rows).
struct WinoGemmOp {
    static constexpr bool WEIGHTS_A = true;
    const float* v; const float* at; float* m;
    int g, xi, grp, C, Cg, F, Fg, P, kp, Mp, M, NCOL;   // g = xi * groups + grp (at's index)
    __device__ ColB col(int c) const {
        if (c >= NCOL) return ColB{v, 0u};
        return ColB{v + ((xi * C + grp * Cg) * P + c), 0xffffffffu};
    }
    __device__ int out(int c) const { return c; }
    __device__ void store(int mm, int o, float val) const { m[(xi * F + grp * Fg + mm) * P + o] = val; }
};

template <int BM>
__device__ __forceinline__ void wino_gemm(const float* v, const float* at, const int* tab, float* m,
                                          int c, int f, int groups, int p, int kp)
{
    const int g = blockIdx.z, xi = g / groups, grp = g - xi * groups;
    const int Cg = c / groups, Fg = f / groups, Mp = (Fg + BM - 1) / BM * BM;
    const WinoGemmOp op{v, at, m, g, xi, grp, c, Cg, f, Fg, p, kp, Mp, Fg, p};
    implicit_gemm_v4<BM>(op, tab, kp + V4_SPARE, 0, kp + V4_SPARE, 0, kp / V4_BK);
}

}  // namespace conv

// thread -> (n, c, th, tw) (flat, tw fastest): V[(xi*C + c)*P + p] = (B^T d B)[xi],
// p = (n*TH + th)*TW + tw, d = x[n, c, 2*th - ph + (0..3), 2*tw - pw + (0..3)] (0 outside).
extern "C" __global__ void conv2d_wino_input(const float* __restrict__ x, float* __restrict__ v,
                                             int n, int c, int h, int w, int ph, int pw, int th, int tw)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    const int tiles = th * tw, P = n * tiles;
    if (idx >= P * c) return;
    const int t = idx % tiles, ci = (idx / tiles) % c, ni = idx / (tiles * c);
    const int ty = t / tw, tx = t - ty * tw, p = ni * tiles + t;
    const int ih0 = 2 * ty - ph, iw0 = 2 * tx - pw;
    const float* xc = x + (ni * c + ci) * h * w;
    float d[4][4];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b) {
            const int ih = ih0 + a, iw = iw0 + b;
            d[a][b] = ((unsigned)ih < (unsigned)h && (unsigned)iw < (unsigned)w) ? xc[ih * w + iw] : 0.f;
        }
    float s[4][4];                                   // s = B^T d
#pragma unroll
    for (int b = 0; b < 4; ++b) {
        s[0][b] = d[0][b] - d[2][b];
        s[1][b] = d[1][b] + d[2][b];
        s[2][b] = d[2][b] - d[1][b];
        s[3][b] = d[1][b] - d[3][b];
    }
#pragma unroll
    for (int a = 0; a < 4; ++a) {                    // V = s B
        const float r[4] = {s[a][0] - s[a][2], s[a][1] + s[a][2], s[a][2] - s[a][1], s[a][1] - s[a][3]};
#pragma unroll
        for (int b = 0; b < 4; ++b) v[((a * 4 + b) * c + ci) * P + p] = r[b];
    }
}

// Block 2 * BM threads (256; *_m64: 128), dynamic shared memory as the v4 kernels;
// grid (ceil(P / 128), ceil(Fg / BM), 16 * groups). at (16*G, kp, Mp) + spare rows:
// U[xi, g][c, f]; tab (2, kp + V4_SPARE); m (16, F, P).
extern "C" __global__ void __launch_bounds__(2 * conv::V4_BM, 2) conv2d_wino_gemm(
    const float* __restrict__ v, const float* __restrict__ at, const int* __restrict__ tab,
    float* __restrict__ m, int c, int f, int groups, int p, int kp)
{
    conv::wino_gemm<conv::V4_BM>(v, at, tab, m, c, f, groups, p, kp);
}

extern "C" __global__ void __launch_bounds__(2 * conv::V4_BM_SMALL, 4) conv2d_wino_gemm_m64(
    const float* __restrict__ v, const float* __restrict__ at, const int* __restrict__ tab,
    float* __restrict__ m, int c, int f, int groups, int p, int kp)
{
    conv::wino_gemm<conv::V4_BM_SMALL>(v, at, tab, m, c, f, groups, p, kp);
}

extern "C" __global__ void __launch_bounds__(conv::V4_THREADS_48, 4) conv2d_wino_gemm_m48(
    const float* __restrict__ v, const float* __restrict__ at, const int* __restrict__ tab,
    float* __restrict__ m, int c, int f, int groups, int p, int kp)
{
    conv::wino_gemm<conv::V4_BM_48>(v, at, tab, m, c, f, groups, p, kp);
}

extern "C" __global__ void __launch_bounds__(2 * conv::V4_BM_MID, 2) conv2d_wino_gemm_m96(
    const float* __restrict__ v, const float* __restrict__ at, const int* __restrict__ tab,
    float* __restrict__ m, int c, int f, int groups, int p, int kp)
{
    conv::wino_gemm<conv::V4_BM_MID>(v, at, tab, m, c, f, groups, p, kp);
}

// thread -> (n, f, th, tw) (flat, tw fastest): y[n, f, 2*th + a, 2*tw + b] = (A^T M A)[a][b]
// (+ b[f] when has_bias, max(0, .) when relu) for the a < 2, b < 2 inside (OH, OW).
extern "C" __global__ void conv2d_wino_output(const float* __restrict__ m, const float* __restrict__ b,
                                              float* __restrict__ y, int n, int f, int oh, int ow,
                                              int th, int tw, int has_bias, int relu)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    const int tiles = th * tw, P = n * tiles;
    if (idx >= P * f) return;
    const int t = idx % tiles, fi = (idx / tiles) % f, ni = idx / (tiles * f);
    const int ty = t / tw, tx = t - ty * tw, p = ni * tiles + t;
    float q[4][4];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int e = 0; e < 4; ++e) q[a][e] = m[((a * 4 + e) * f + fi) * P + p];
    float s[2][4];                                   // s = A^T q
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        s[0][e] = q[0][e] + q[1][e] + q[2][e];
        s[1][e] = q[1][e] - q[2][e] - q[3][e];
    }
    const float bias = has_bias ? b[fi] : 0.f;
    float* yf = y + (ni * f + fi) * oh * ow;
#pragma unroll
    for (int a = 0; a < 2; ++a) {
        const float r[2] = {s[a][0] + s[a][1] + s[a][2], s[a][1] - s[a][2] - s[a][3]};
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int oy = 2 * ty + a, ox = 2 * tx + e;
            if (oy < oh && ox < ow) {
                const float val = r[e] + bias;
                yf[oy * ow + ox] = relu ? fmaxf(val, 0.f) : val;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Winograd F(4x4, 3x3) forward: the same three launches with 6x6 input tiles and 36
// transform positions, Y (4x4) = A^T [ sum_c (G g_fc G^T) . (B^T d_c B) ] A, d_c the 6x6
// patch at (4*th - PH, 4*tw - PW). Interpolation points 0, +-1, +-a, infinity with
// a = WINO4_POINT = 2 (Lavin and Gray's matrices; conv.py's WINO4_* hold the same):
//   B^T rows: [a2 0 -(a2+1) 0 1 0], [0 -a2 -a2 1 1 0], [0 a2 -a2 -1 1 0],
//             [0 -a -1 a 1 0], [0 a -1 -a 1 0], [0 a2 0 -(a2+1) 0 1]      (a2 = a*a)
//   A^T rows: [1 1 1 1 1 0], [0 1 -1 a -a 0], [0 1 1 a2 a2 0], [0 1 -1 a3 -a3 1]
// and G = U's transform, made by the launcher in float64 (its 1/6 and 1/24 are not
// exact in binary: rounded once, into U). B and A are exact (small integers) and are
// applied here in float32. 36 multiplications per 4x4 outputs and channel instead of
// 144 (4x fewer); the GEMMs are conv2d_wino_gemm* with 36 * G groups, V (36, C, P)
// and M (36, F, P), P = N*TH*TW, TH = ceil(OH / 4).
// ---------------------------------------------------------------------------
namespace conv {
constexpr float WINO4_POINT = 2.f;

// r = B^T d for one column (or row) of 6: the +-1 and +-a rows share their halves.
__device__ __forceinline__ void wino4_bt(const float d[6], float r[6])
{
    constexpr float a = WINO4_POINT, a2 = a * a;
    const float t1 = d[4] - a2 * d[2], t2 = d[3] - a2 * d[1];
    const float t3 = d[4] - d[2], t4 = a * (d[3] - d[1]);
    r[0] = a2 * d[0] - (a2 + 1.f) * d[2] + d[4];
    r[1] = t1 + t2;
    r[2] = t1 - t2;
    r[3] = t3 + t4;
    r[4] = t3 - t4;
    r[5] = a2 * d[1] - (a2 + 1.f) * d[3] + d[5];
}

// r = A^T q for one column (or row) of 6.
__device__ __forceinline__ void wino4_at(const float q[6], float r[4])
{
    constexpr float a = WINO4_POINT, a2 = a * a, a3 = a2 * a;
    const float s = q[1] + q[2], d = q[1] - q[2], s2 = q[3] + q[4], d2 = q[3] - q[4];
    r[0] = q[0] + s + s2;
    r[1] = d + a * d2;
    r[2] = s + a2 * s2;
    r[3] = d + a3 * d2 + q[5];
}

}  // namespace conv

// thread -> (n, c, th, tw) (flat, tw fastest): V[(xi*C + c)*P + p] = (B^T d B)[xi], xi < 36,
// p = (n*TH + th)*TW + tw, d = x[n, c, 4*th - ph + (0..5), 4*tw - pw + (0..5)] (0 outside).
extern "C" __global__ void conv2d_wino4_input(const float* __restrict__ x, float* __restrict__ v,
                                              int n, int c, int h, int w, int ph, int pw, int th, int tw)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    const int tiles = th * tw, P = n * tiles;
    if (idx >= P * c) return;
    const int t = idx % tiles, ci = (idx / tiles) % c, ni = idx / (tiles * c);
    const int ty = t / tw, tx = t - ty * tw, p = ni * tiles + t;
    const int ih0 = 4 * ty - ph, iw0 = 4 * tx - pw;
    const float* xc = x + (ni * c + ci) * h * w;
    float s[6][6];                                   // s = B^T d, one column of d at a time
#pragma unroll
    for (int b = 0; b < 6; ++b) {
        float d[6], r[6];
#pragma unroll
        for (int a = 0; a < 6; ++a) {
            const int ih = ih0 + a, iw = iw0 + b;
            d[a] = ((unsigned)ih < (unsigned)h && (unsigned)iw < (unsigned)w) ? xc[ih * w + iw] : 0.f;
        }
        conv::wino4_bt(d, r);
#pragma unroll
        for (int a = 0; a < 6; ++a) s[a][b] = r[a];
    }
#pragma unroll
    for (int a = 0; a < 6; ++a) {                    // V = s B, one row of s at a time
        float r[6];
        conv::wino4_bt(s[a], r);
#pragma unroll
        for (int b = 0; b < 6; ++b) v[((a * 6 + b) * c + ci) * P + p] = r[b];
    }
}

// thread -> (n, f, th, tw) (flat, tw fastest): y[n, f, 4*th + a, 4*tw + b] = (A^T M A)[a][b]
// (+ b[f] when has_bias, max(0, .) when relu) for the a < 4, b < 4 inside (OH, OW).
extern "C" __global__ void conv2d_wino4_output(const float* __restrict__ m, const float* __restrict__ b,
                                               float* __restrict__ y, int n, int f, int oh, int ow,
                                               int th, int tw, int has_bias, int relu)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    const int tiles = th * tw, P = n * tiles;
    if (idx >= P * f) return;
    const int t = idx % tiles, fi = (idx / tiles) % f, ni = idx / (tiles * f);
    const int ty = t / tw, tx = t - ty * tw, p = ni * tiles + t;
    float s[4][6];                                   // s = A^T M, one column of M at a time
#pragma unroll
    for (int e = 0; e < 6; ++e) {
        float q[6], r[4];
#pragma unroll
        for (int a = 0; a < 6; ++a) q[a] = m[((a * 6 + e) * f + fi) * P + p];
        conv::wino4_at(q, r);
#pragma unroll
        for (int a = 0; a < 4; ++a) s[a][e] = r[a];
    }
    const float bias = has_bias ? b[fi] : 0.f;
    float* yf = y + (ni * f + fi) * oh * ow;
#pragma unroll
    for (int a = 0; a < 4; ++a) {                    // Y = s A, one row of s at a time
        float r[4];
        conv::wino4_at(s[a], r);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int oy = 4 * ty + a, ox = 4 * tx + e;
            if (oy < oh && ox < ow) {
                const float val = r[e] + bias;
                yf[oy * ow + ox] = relu ? fmaxf(val, 0.f) : val;
            }
        }
    }
}
