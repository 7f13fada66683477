// kernels/conv_tc.cu -- 2-D convolution on the tensor cores (mma.sync): forward
// (+ bias, + ReLU), backward-data, backward-filter, as implicit GEMMs with TF32 or
// bf16 inputs and float32 accumulation and output.
//
// Formula: as kernels/conv.cu (cross-correlation, groups G, Cg = C/G, Fg = F/G):
//   y[n,f,oh,ow] = b[f] + sum_{c<Cg,i,j} w[f,c,i,j] * x[n, g*Cg+c, oh*SH-PH+i, ow*SW-PW+j]
//   dx, dw: the gradients of y with respect to x and w (conv.cu's header).
//   Every product uses x, w, dy rounded to tf32 (cvt.rna) or bf16 (nearest even).
// Layout: NCHW; w, dw (F, Cg, KH, KW); float32 in memory.
// GEMM views, per group g = blockIdx.z % G (the same as conv.cu's v2):
//   fwd:        m = f (Fg),  col = (n,oh,ow), k = (c,i,j);   A = w, B = x patches
//   bwd_data:   m = c (Cg),  col = (n,ih,iw), k = (f,i,j);   A = w, B = dy gathered
//               (dy[n,f,oh,ow] where ih+PH-i = oh*SH exactly, else 0); k cut into `splits`
//               slices as bwd_filter's (slice = blockIdx.z / G, writing dx + slice*N*C*H*W)
//   bwd_filter: m = f (Fg),  col = (c,i,j),   k = (n,oh,ow); A = dy, B = x patches;
//               k cut into `splits` slices of `chunk` (slice = blockIdx.z / G), each
//               writing its partial sum to ws (splits, F, Cg*KH*KW); the launcher adds
//               the slices with tc_splitk_reduce (gemm_tc.cu): fixed order, no atomics.
// Thread mapping and shared memory: kernels/tc_gemm.cuh (blockIdx.x = column tile,
//   blockIdx.y = row tile); each thread owns one row of A and one column of B and
//   walks k by one: the im2col index is decoded once (at the slice's first k) and then
//   stepped by additions with one carry per digit, for every operand (no division
//   in the K loop, no table); the forward's weights (A) are read in 16-byte chunks
//   where Cg*KH*KW is a multiple of 4 (conv2d_tc_fwd_vec_*).
//
// Versions (one line each; the launcher names the shipped one):
//   v1: the tc_gemm.cuh engine, tiles 128x128 (4 warps of 64x64, suffix _l), 64x64
//       (2 warps of 64x32, _s) and 64x128 (2 warps of 64x64, _m: fwd_vec only), 96x128 (4
//       warps of 48x64, _h) and 48x128 (2 warps of 48x64, _t): bwd_data_s1 and bwd_filter
//       only; tf32 and bf16 instances; the gathered bf16 kernels on _l, _s, _h (fwd_vec,
//       bwd_data_s1, bwd_filter) with 32-deep k-tiles (two k16 steps per barrier and walk).
//
// resources (sm_90, nvcc 13.0 -Xptxas -v): see benchmarks/notes-tensor-cores.md.
#include "tc_gemm.cuh"

// bwd_filter bf16 on the 128x128 tile: 32-deep k-tiles on sm_90 (and the emulation), 16 on
// sm_80-89, where 32 spills 8-28 bytes (ptxas, nvcc 13.0); the 16-deep engine is the one the
// other bf16 kernels (_t, _m, the WALK ones) run, so both are emulated.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define CN_BWD_FILTER_BF16_L_BK 16
#else
#define CN_BWD_FILTER_BF16_L_BK 32
#endif

namespace conv_tc {

struct Shape {
    int N, C, H, W, F, KH, KW, OH, OW, SH, SW, PH, PW, G;
    int Cg, Fg, KHW, HW, OHW;
    __device__ Shape(int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
                     int sh, int sw, int ph, int pw, int g)
        : N(n), C(c), H(h), W(w), F(f), KH(kh), KW(kw), OH(oh), OW(ow), SH(sh), SW(sw),
          PH(ph), PW(pw), G(g), Cg(c / g), Fg(f / g), KHW(kh * kw), HW(h * w), OHW(oh * ow) {}
};

// Every walker below steps k by one with a carry per digit (no division after its
// decode at (row, k_begin)); per element the thread adds, compares and forms one address
// (base pointers kept opaque: one IMAD.WIDE). Offsets are int (the launchers keep arrays
// < 2^31 elements).
//
// GATHER operands (tc_gemm.cuh: 4 rows x 4 consecutive k per thread and k-tile) share one
// k state K3 among the thread's 4 rows: k = (a, i, j) in radices (RI, RJ), its offset
// koff = a*SA + i*SI + j*SJ, and bit = 1 << (i*RJ + j) (the position in a per-row mask of
// the RI x RJ window, used where RI*RJ <= 32).
struct K3 {
    int koff, i, j;
    unsigned bit;
    int jk, ji, jj;   // the jump (k += BK - 3, BK the k-tile's depth) in the same digits
};
struct K3Shape {
    int RI, RJ, SA, SI, SJ;
    __device__ K3 at(int k, int bk) const {
        const int RIJ = RI * RJ, a = k / RIJ, rest = k - a * RIJ, i = rest / RJ, j = rest - i * RJ;
        const int D = bk - (tc::VW - 1);
        const int da = D / RIJ, dr = D - da * RIJ, di = dr / RJ, dj = dr - di * RJ;
        return K3{a * SA + i * SI + j * SJ, i, j, 1u << (rest & 31), da * SA + di * SI + dj * SJ, di, dj};
    }
    __device__ void adv(K3& k, bool jump) const {
        if (!jump) {
            k.koff += SJ;
            k.bit <<= 1;
            if (++k.j == RJ) {
                k.j = 0;
                k.koff += SI - RJ * SJ;
                if (++k.i == RI) { k.i = 0; k.koff += SA - RI * SI; k.bit = 1u; }
            }
        } else {
            k.koff += k.jk;
            k.i += k.ji;
            k.j += k.jj;
            if (k.j >= RJ) { k.j -= RJ; ++k.i; k.koff += SI - RJ * SJ; }
            if (k.i >= RI) { k.i -= RI; k.koff += SA - RI * SI; }
            k.bit = 1u << ((k.i * RJ + k.j) & 31);
        }
    }
};

// fwd, A = w rows (k = (c, i, j) contiguous): VEC (rows of a multiple of 4, aligned) or WALK;
// B: VEC mapping, GATHER (KH*KW <= 32: a per-column mask of the window's valid taps) or WALK.
template <int AM, int BMODE>
struct FwdOp {
    static constexpr int A_MODE = AM, B_MODE = BMODE;
    using ARow = tc::NoWalk;
    using AK = tc::NoWalk;
    const float* x; const float* w; const float* bias; float* y;
    Shape s; int g, has_bias, relu, M, NCOL;
    __device__ const float* a_ptr(int m, int k) const { return w + (g * s.Fg + m) * (s.Cg * s.KHW) + k; }
    struct AWalk { const float* row; int koff; };
    __device__ AWalk a_walk(int m, int k) const { return AWalk{cn_opaque(a_ptr(m, 0)), k}; }
    __device__ const float* a_next(AWalk& a, bool&) const { return a.row + a.koff++; }
    // B: column (n, oh, ow), k = (c, i, j): x[n, g*Cg + c, ih0 + i, iw0 + j];
    // koff = c*HW + i*W + j from the column's corner (ih0, iw0).
    struct BWalk { const float* col; int ih0, iw0, koff, i, j; };
    __device__ BWalk b_walk(int cl, int k) const {
        const int n = cl / s.OHW, p = cl - n * s.OHW, oh = p / s.OW, ow = p - oh * s.OW;
        const int c = k / s.KHW, rest = k - c * s.KHW, i = rest / s.KW, j = rest - i * s.KW;
        const int ih0 = oh * s.SH - s.PH, iw0 = ow * s.SW - s.PW;
        return BWalk{cn_opaque(x + (n * s.C + g * s.Cg) * s.HW + ih0 * s.W + iw0), ih0, iw0,
                     c * s.HW + i * s.W + j, i, j};
    }
    __device__ const float* b_next(BWalk& b, bool& ok) const {
        ok = ok && (unsigned)(b.ih0 + b.i) < (unsigned)s.H && (unsigned)(b.iw0 + b.j) < (unsigned)s.W;
        const float* p = b.col + b.koff;
        ++b.koff;
        if (++b.j == s.KW) {
            b.j = 0;
            b.koff += s.W - s.KW;
            if (++b.i == s.KH) { b.i = 0; b.koff += s.HW - s.KH * s.W; }
        }
        return p;
    }
    struct BRow { const float* col; unsigned mask; };
    using BK_ = K3;
    __device__ K3Shape k3() const { return K3Shape{s.KH, s.KW, s.HW, s.W, 1}; }
    __device__ BRow b_row(int cl) const {
        const int n = cl / s.OHW, p = cl - n * s.OHW, oh = p / s.OW, ow = p - oh * s.OW;
        const int ih0 = oh * s.SH - s.PH, iw0 = ow * s.SW - s.PW;
        unsigned mask = 0;
        for (int i = 0; i < s.KH; ++i)
            for (int j = 0; j < s.KW; ++j)
                if ((unsigned)(ih0 + i) < (unsigned)s.H && (unsigned)(iw0 + j) < (unsigned)s.W) mask |= 1u << (i * s.KW + j);
        return BRow{cn_opaque(x + (n * s.C + g * s.Cg) * s.HW + ih0 * s.W + iw0), mask};
    }
    __device__ K3 b_k(int k, int bk) const { return k3().at(k, bk); }
    __device__ const float* b_at(const BRow& r, const K3& k, bool& ok) const {
        ok = ok && (r.mask & k.bit) != 0;
        return r.col + k.koff;
    }
    __device__ void b_adv(K3& k, bool jump) const { k3().adv(k, jump); }
    __device__ void store(int m, int c, float v) const {
        const int f = g * s.Fg + m, n = c / s.OHW, p = c - n * s.OHW;
        if (has_bias) v += bias[f];
        y[(n * s.F + f) * s.OHW + p] = relu ? fmaxf(v, 0.f) : v;
    }
};

// bwd_data, A[m = c, k = (f, rest)] = w[g*Fg + f, c, rest]: GATHER, koff = f*Cg*KHW + rest.
struct BwdDataBase {
    static constexpr int A_MODE = tc::GATHER, B_MODE = tc::WALK;
    using AWalk = tc::NoWalk;
    const float* dy; const float* w; float* dx;
    Shape s; int g, M, NCOL;
    struct ARow { const float* row; };
    using AK = K3;
    __device__ K3Shape ak3() const { return K3Shape{1, s.KHW, s.Cg * s.KHW, 0, 1}; }
    __device__ ARow a_row(int m) const { return ARow{cn_opaque(w + (g * s.Fg * s.Cg + m) * s.KHW)}; }
    __device__ K3 a_k(int k, int bk) const { return ak3().at(k, bk); }
    __device__ const float* a_at(const ARow& r, const K3& k, bool&) const { return r.row + k.koff; }
    __device__ void a_adv(K3& k, bool jump) const { ak3().adv(k, jump); }
    __device__ void store(int m, int c, float v) const {
        const int n = c / s.HW, p = c - n * s.HW;
        dx[(n * s.C + g * s.Cg + m) * s.HW + p] = v;
    }
};

// Strided bwd_data: B[k = (f, i, j), col = (n, ih, iw)] = dy[n, g*Fg + f, oh, ow] where
// th - i = oh*SH and tw - j = ow*SW exactly (th = ih + PH, tw = iw + PW), else 0.
// Per column th = ohb*SH + rh, tw = owb*SW + rw; the k part keeps i = iq*SH + ir and
// j = jq*SW + jr: th - i is a multiple of SH iff ir == rh, and then oh = ohb - iq.
struct BwdDataOp : BwdDataBase {
    using BRow = tc::NoWalk;
    using BK_ = tc::NoWalk;
    struct BWalk { const float* col; int ohb, rh, owb, rw, fo, i, iq, ir, j, jq, jr; };
    __device__ BWalk b_walk(int cl, int k) const {
        const int n = cl / s.HW, p = cl - n * s.HW, ih = p / s.W, iw = p - ih * s.W;
        const int th = ih + s.PH, tw = iw + s.PW, ohb = th / s.SH, owb = tw / s.SW;
        const int f = k / s.KHW, rest = k - f * s.KHW, i = rest / s.KW, j = rest - i * s.KW;
        return BWalk{cn_opaque(dy + (n * s.F + g * s.Fg) * s.OHW + ohb * s.OW + owb), ohb, th - ohb * s.SH, owb,
                     tw - owb * s.SW, f * s.OHW, i, i / s.SH, i % s.SH, j, j / s.SW, j % s.SW};
    }
    __device__ const float* b_next(BWalk& b, bool& ok) const {
        ok = ok && b.ir == b.rh && b.jr == b.rw && (unsigned)(b.ohb - b.iq) < (unsigned)s.OH &&
             (unsigned)(b.owb - b.jq) < (unsigned)s.OW;
        const float* p = b.col + (b.fo - b.iq * s.OW - b.jq);
        if (++b.jr == s.SW) { b.jr = 0; ++b.jq; }
        if (++b.j == s.KW) {
            b.j = b.jq = b.jr = 0;
            if (++b.ir == s.SH) { b.ir = 0; ++b.iq; }
            if (++b.i == s.KH) { b.i = b.iq = b.ir = 0; b.fo += s.OHW; }
        }
        return p;
    }
};

// bwd_data with SH = SW = 1 and KH*KW <= 32 (oh = th - i, ow = tw - j): B GATHER,
// koff = f*OHW - i*OW - j from (th, tw), a per-column mask of the window's valid taps.
struct BwdDataS1Op : BwdDataBase {
    static constexpr int B_MODE = tc::GATHER;
    using BWalk = tc::NoWalk;
    struct BRow { const float* col; unsigned mask; };
    using BK_ = K3;
    __device__ K3Shape bk3() const { return K3Shape{s.KH, s.KW, s.OHW, -s.OW, -1}; }
    __device__ BRow b_row(int cl) const {
        const int n = cl / s.HW, p = cl - n * s.HW, ih = p / s.W, iw = p - ih * s.W;
        const int th = ih + s.PH, tw = iw + s.PW;
        unsigned mask = 0;
        for (int i = 0; i < s.KH; ++i)
            for (int j = 0; j < s.KW; ++j)
                if ((unsigned)(th - i) < (unsigned)s.OH && (unsigned)(tw - j) < (unsigned)s.OW) mask |= 1u << (i * s.KW + j);
        return BRow{cn_opaque(dy + (n * s.F + g * s.Fg) * s.OHW + th * s.OW + tw), mask};
    }
    __device__ K3 b_k(int k, int bk) const { return bk3().at(k, bk); }
    __device__ const float* b_at(const BRow& r, const K3& k, bool& ok) const {
        ok = ok && (r.mask & k.bit) != 0;
        return r.col + k.koff;
    }
    __device__ void b_adv(K3& k, bool jump) const { bk3().adv(k, jump); }
};

// bwd_filter: m = f, col = (c, i, j), k = (n, oh, ow); both operands GATHER.
struct BwdFilterOp {
    static constexpr int A_MODE = tc::GATHER, B_MODE = tc::GATHER;
    using AWalk = tc::NoWalk;
    using BWalk = tc::NoWalk;
    const float* dy; const float* x; float* ws;
    Shape s; int g, slice, M, NCOL;
    // A[m, k] = dy[n, g*Fg + m, oh, ow]: koff = n*F*OHW + oh*OW + ow, walked in B's digits (n, oh, ow)
    // so that the two k states (the same k: both operands' chunks start at 4*(t%4)) carry alike and
    // the compiler keeps one copy of the digit arithmetic (was (n, q = oh*OW + ow)).
    struct ARow { const float* row; };
    using AK = K3;
    __device__ K3Shape ak3() const { return K3Shape{s.OH, s.OW, s.F * s.OHW, s.OW, 1}; }
    __device__ ARow a_row(int m) const { return ARow{cn_opaque(dy + (g * s.Fg + m) * s.OHW)}; }
    __device__ K3 a_k(int k, int bk) const { return ak3().at(k, bk); }
    __device__ const float* a_at(const ARow& r, const K3& k, bool&) const { return r.row + k.koff; }
    __device__ void a_adv(K3& k, bool jump) const { ak3().adv(k, jump); }
    // B[k, col] = x[n, g*Cg + c, oh*SH + i - PH, ow*SW + j - PW]: per column (ih0, iw0) =
    // (i - PH, j - PW); koff = n*C*HW + oh*SH*W + ow*SW.
    struct BRow { const float* col; int ih0, iw0; };
    using BK_ = K3;
    __device__ K3Shape bk3() const { return K3Shape{s.OH, s.OW, s.C * s.HW, s.SH * s.W, s.SW}; }
    __device__ BRow b_row(int cl) const {
        const int ci = cl / s.KHW, rest = cl - ci * s.KHW, i = rest / s.KW, j = rest - i * s.KW;
        const int ih0 = i - s.PH, iw0 = j - s.PW;
        return BRow{cn_opaque(x + (g * s.Cg + ci) * s.HW + ih0 * s.W + iw0), ih0, iw0};
    }
    __device__ K3 b_k(int k, int bk) const { return bk3().at(k, bk); }
    __device__ const float* b_at(const BRow& r, const K3& k, bool& ok) const {
        ok = ok && (unsigned)(r.ih0 + k.i * s.SH) < (unsigned)s.H && (unsigned)(r.iw0 + k.j * s.SW) < (unsigned)s.W;
        return r.col + k.koff;
    }
    __device__ void b_adv(K3& k, bool jump) const { bk3().adv(k, jump); }
    __device__ void store(int m, int c, float v) const { ws[(slice * s.F + g * s.Fg + m) * NCOL + c] = v; }
};

#define CN_GEO_PARAMS int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, \
                      int ph, int pw, int groups
#define CN_GEO_ARGS n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups

template <int P, int BM, int BN, int WM, int WN, int AM = tc::WALK, int BMODE = tc::WALK, int BKP = 16>
__device__ __forceinline__ void fwd(const float* x, const float* w, const float* b, float* y, CN_GEO_PARAMS,
                                    int has_bias, int relu) {
    const Shape s(CN_GEO_ARGS);
    const FwdOp<AM, BMODE> op{x, w, b, y, s, (int)blockIdx.z, has_bias, relu, s.Fg, s.N * s.OHW};
    tc::gemm<P, BM, BN, WM, WN, BKP>(op, 0, s.Cg * s.KHW);
}

template <int P, int BM, int BN, int WM, int WN, bool S1 = false, int BKP = 16>
__device__ __forceinline__ void bwd_data(const float* dy, const float* w, float* dx, CN_GEO_PARAMS, int splits,
                                         int chunk) {
    const Shape s(CN_GEO_ARGS);
    const int g = blockIdx.z % s.G, slice = blockIdx.z / s.G;
    const BwdDataBase base{dy, w, dx + (size_t)slice * s.N * s.C * s.HW, s, g, s.Cg, s.N * s.HW};
    const int k_total = s.Fg * s.KHW, k0 = slice * chunk, k1 = min(k_total, k0 + chunk);
    if constexpr (S1) tc::gemm<P, BM, BN, WM, WN, BKP>(BwdDataS1Op{base}, k0, k1);
    else tc::gemm<P, BM, BN, WM, WN, BKP>(BwdDataOp{base}, k0, k1);
}

template <int P, int BM, int BN, int WM, int WN, int BKP = 16>
__device__ __forceinline__ void bwd_filter(const float* dy, const float* x, float* ws, CN_GEO_PARAMS,
                                           int splits, int chunk) {
    const Shape s(CN_GEO_ARGS);
    const int g = blockIdx.z % s.G, slice = blockIdx.z / s.G;
    const BwdFilterOp op{dy, x, ws, s, g, slice, s.Fg, s.Cg * s.KHW};
    const int k_total = s.N * s.OHW, k0 = slice * chunk;
    tc::gemm<P, BM, BN, WM, WN, BKP>(op, k0, min(k_total, k0 + chunk));
}

}  // namespace conv_tc

// One kernel per pass, precision and tile (written out: the launch registry reads the
// signatures from the source). Grid (ceil(cols/BN), ceil(rows/BM), G [* splits]);
// block 128 (_l) or 64 (_s). _vec: the forward with 16-byte weight rows (Cg*KH*KW a
// multiple of 4, w aligned); _s1: bwd_data with unit stride (the launchers' choices).

extern "C" __global__ void __launch_bounds__(128, 1) conv2d_tc_fwd_tf32_l(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv_tc::fwd<TC_TF32, 128, 128, 64, 64, tc::WALK>(x, w, b, y, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, has_bias, relu);
}

extern "C" __global__ void __launch_bounds__(128, 1) conv2d_tc_fwd_vec_tf32_l(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv_tc::fwd<TC_TF32, 128, 128, 64, 64, tc::VEC, tc::GATHER>(x, w, b, y, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, has_bias, relu);
}

extern "C" __global__ void __launch_bounds__(128, 1) conv2d_tc_bwd_data_tf32_l(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_data<TC_TF32, 128, 128, 64, 64, false>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) conv2d_tc_bwd_data_s1_tf32_l(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_data<TC_TF32, 128, 128, 64, 64, true>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) conv2d_tc_bwd_filter_tf32_l(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_filter<TC_TF32, 128, 128, 64, 64>(dy, x, ws, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_fwd_tf32_s(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv_tc::fwd<TC_TF32, 64, 64, 64, 32, tc::WALK>(x, w, b, y, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, has_bias, relu);
}

extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_fwd_vec_tf32_s(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv_tc::fwd<TC_TF32, 64, 64, 64, 32, tc::VEC, tc::GATHER>(x, w, b, y, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, has_bias, relu);
}

extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_bwd_data_tf32_s(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_data<TC_TF32, 64, 64, 64, 32, false>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_bwd_data_s1_tf32_s(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_data<TC_TF32, 64, 64, 64, 32, true>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_bwd_filter_tf32_s(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_filter<TC_TF32, 64, 64, 64, 32>(dy, x, ws, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) conv2d_tc_fwd_bf16_l(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv_tc::fwd<TC_BF16, 128, 128, 64, 64, tc::WALK>(x, w, b, y, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, has_bias, relu);
}

extern "C" __global__ void __launch_bounds__(128, 1) conv2d_tc_fwd_vec_bf16_l(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv_tc::fwd<TC_BF16, 128, 128, 64, 64, tc::VEC, tc::GATHER, 32>(x, w, b, y, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, has_bias, relu);
}

extern "C" __global__ void __launch_bounds__(128, 1) conv2d_tc_bwd_data_bf16_l(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_data<TC_BF16, 128, 128, 64, 64, false>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) conv2d_tc_bwd_data_s1_bf16_l(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_data<TC_BF16, 128, 128, 64, 64, true, 32>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) conv2d_tc_bwd_filter_bf16_l(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_filter<TC_BF16, 128, 128, 64, 64, CN_BWD_FILTER_BF16_L_BK>(dy, x, ws, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_fwd_bf16_s(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv_tc::fwd<TC_BF16, 64, 64, 64, 32, tc::WALK>(x, w, b, y, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, has_bias, relu);
}

extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_fwd_vec_bf16_s(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv_tc::fwd<TC_BF16, 64, 64, 64, 32, tc::VEC, tc::GATHER, 32>(x, w, b, y, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, has_bias, relu);
}

extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_bwd_data_bf16_s(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_data<TC_BF16, 64, 64, 64, 32, false>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_bwd_data_s1_bf16_s(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_data<TC_BF16, 64, 64, 64, 32, true, 32>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_bwd_filter_bf16_s(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_filter<TC_BF16, 64, 64, 64, 32, 32>(dy, x, ws, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

// The 64x128 tile (2 warps of 64x64, suffix _m): the forward (bwd_data_s1 and bwd_filter spill
// registers at 8 GATHER chunks per thread).
extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_fwd_vec_tf32_m(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv_tc::fwd<TC_TF32, 64, 128, 64, 64, tc::VEC, tc::GATHER>(x, w, b, y, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, has_bias, relu);
}

extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_fwd_vec_bf16_m(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv_tc::fwd<TC_BF16, 64, 128, 64, 64, tc::VEC, tc::GATHER>(x, w, b, y, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, has_bias, relu);
}

// 48-row warp tiles (warps of 48x64) for the backward passes with GATHER operands only
// (bwd_data_s1, bwd_filter): _h 96x128 (4 warps, 128 threads): 192 rows in two tiles, none
// padded (conv3-5's Fg and Cg); _t 48x128 (2 warps, 64 threads): 48 rows (conv2a's Cg).
// bf16: 32-deep k-tiles on _h; 16 on _t (32 spills bwd_filter_bf16_t).

extern "C" __global__ void __launch_bounds__(128, 1) conv2d_tc_bwd_data_s1_tf32_h(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_data<TC_TF32, 96, 128, 48, 64, true, 16>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) conv2d_tc_bwd_filter_tf32_h(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_filter<TC_TF32, 96, 128, 48, 64, 16>(dy, x, ws, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_bwd_data_s1_tf32_t(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_data<TC_TF32, 48, 128, 48, 64, true, 16>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_bwd_filter_tf32_t(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_filter<TC_TF32, 48, 128, 48, 64, 16>(dy, x, ws, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) conv2d_tc_bwd_data_s1_bf16_h(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_data<TC_BF16, 96, 128, 48, 64, true, 32>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(128, 1) conv2d_tc_bwd_filter_bf16_h(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_filter<TC_BF16, 96, 128, 48, 64, 32>(dy, x, ws, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_bwd_data_s1_bf16_t(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_data<TC_BF16, 48, 128, 48, 64, true, 16>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(64, 1) conv2d_tc_bwd_filter_bf16_t(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_filter<TC_BF16, 48, 128, 48, 64, 16>(dy, x, ws, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}
