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
//               (dy[n,f,oh,ow] where ih+PH-i = oh*SH exactly, else 0)
//   bwd_filter: m = f (Fg),  col = (c,i,j),   k = (n,oh,ow); A = dy, B = x patches;
//               k cut into `splits` slices of `chunk` (slice = blockIdx.z / G), each
//               writing its partial sum to ws (splits, F, Cg*KH*KW); the launcher adds
//               the slices with tc_splitk_reduce (gemm_tc.cu): fixed order, no atomics.
// Thread mapping and shared memory: kernels/tc_gemm.cuh (blockIdx.x = column tile,
//   blockIdx.y = row tile); the im2col index of each element is computed while
//   loading: fwd and bwd_filter walk their B operand's k (the thread's k values are
//   an arithmetic progression: decoded once, then stepped by additions with one carry
//   per digit), and so does bwd_data's with unit stride (conv2d_tc_bwd_data_s1_*);
//   A operands and strided bwd_data's B divide per element (no table).
//
// Versions (one line each; the launcher names the shipped one):
//   v1: the tc_gemm.cuh engine, two tiles: 128x128 (8 warps of 64x32, suffix _l)
//       and 64x64 (4 warps of 32x32, suffix _s); tf32 and bf16 instances.
//
// resources (sm_90, nvcc 13.0 -Xptxas -v): see benchmarks/notes-tensor-cores.md.
#include "tc_gemm.cuh"

namespace conv_tc {

struct Shape {
    int N, C, H, W, F, KH, KW, OH, OW, SH, SW, PH, PW, G;
    int Cg, Fg, KHW, HW, OHW;
    __device__ Shape(int n, int c, int h, int w, int f, int kh, int kw, int oh, int ow,
                     int sh, int sw, int ph, int pw, int g)
        : N(n), C(c), H(h), W(w), F(f), KH(kh), KW(kw), OH(oh), OW(ow), SH(sh), SW(sw),
          PH(ph), PW(pw), G(g), Cg(c / g), Fg(f / g), KHW(kh * kw), HW(h * w), OHW(oh * ow) {}
};

struct FwdOp {
    static constexpr bool A_K_FAST = true, B_K_FAST = false, B_WALK = true;
    const float* x; const float* w; const float* bias; float* y;
    Shape s; int g, has_bias, relu, M, NCOL;
    struct Col { const float* base; int ih0, iw0; };
    __device__ const float* a(int m, int k) const { return w + (g * s.Fg + m) * (s.Cg * s.KHW) + k; }
    __device__ Col col(int c) const {
        const int n = c / s.OHW, p = c - n * s.OHW, oh = p / s.OW, ow = p - oh * s.OW;
        return Col{x + (n * s.C + g * s.Cg) * s.HW, oh * s.SH - s.PH, ow * s.SW - s.PW};
    }
    __device__ const float* b(const Col& cl, int k) const {
        const int c = k / s.KHW, rest = k - c * s.KHW, i = rest / s.KW, j = rest - i * s.KW;
        const int ih = cl.ih0 + i, iw = cl.iw0 + j;
        if ((unsigned)ih >= (unsigned)s.H || (unsigned)iw >= (unsigned)s.W) return nullptr;
        return cl.base + c * s.HW + ih * s.W + iw;
    }
    // The walk over k = (c, i, j): (i, j) and the offset c*HW + (ih0+i)*W + iw0+j, stepped by
    // d = (dc, di, dj) with one carry per digit (dj < KW, di < KH).
    struct BWalk { const float* base; int off, i, j, ih0, iw0, dc_off, di, dj; };
    __device__ BWalk b_walk(const Col& cl, int k, int step) const {
        const int c = k / s.KHW, rest = k - c * s.KHW, i = rest / s.KW, j = rest - i * s.KW;
        const int dc = step / s.KHW, drest = step - dc * s.KHW, di = drest / s.KW, dj = drest - di * s.KW;
        return BWalk{cl.base, c * s.HW + (cl.ih0 + i) * s.W + cl.iw0 + j, i, j, cl.ih0, cl.iw0,
                     dc * s.HW + di * s.W + dj, di, dj};
    }
    __device__ const float* b_next(BWalk& w) const {
        const int ih = w.ih0 + w.i, iw = w.iw0 + w.j;
        const float* p = ((unsigned)ih < (unsigned)s.H && (unsigned)iw < (unsigned)s.W) ? w.base + w.off : nullptr;
        w.off += w.dc_off;
        w.i += w.di;
        w.j += w.dj;
        if (w.j >= s.KW) { w.j -= s.KW; w.i += 1; w.off += s.W - s.KW; }
        if (w.i >= s.KH) { w.i -= s.KH; w.off += s.HW - s.KH * s.W; }
        return p;
    }
    __device__ void store(int m, int c, float v) const {
        const int f = g * s.Fg + m, n = c / s.OHW, p = c - n * s.OHW;
        if (has_bias) v += bias[f];
        y[(n * s.F + f) * s.OHW + p] = relu ? fmaxf(v, 0.f) : v;
    }
};

struct BwdDataOp {
    static constexpr bool A_K_FAST = true, B_K_FAST = false, B_WALK = false;
    const float* dy; const float* w; float* dx;
    Shape s; int g, M, NCOL;
    struct Col { const float* base; int th, tw; };
    __device__ const float* a(int m, int k) const {
        const int f = k / s.KHW, rest = k - f * s.KHW;
        return w + ((g * s.Fg + f) * s.Cg + m) * s.KHW + rest;
    }
    __device__ Col col(int c) const {
        const int n = c / s.HW, p = c - n * s.HW, ih = p / s.W, iw = p - ih * s.W;
        return Col{dy + (n * s.F + g * s.Fg) * s.OHW, ih + s.PH, iw + s.PW};
    }
    __device__ const float* b(const Col& cl, int k) const {
        const int f = k / s.KHW, rest = k - f * s.KHW, i = rest / s.KW, j = rest - i * s.KW;
        const int th = cl.th - i, tw = cl.tw - j;
        if (th < 0 || tw < 0) return nullptr;
        const int oh = th / s.SH, ow = tw / s.SW;
        if (oh * s.SH != th || ow * s.SW != tw || oh >= s.OH || ow >= s.OW) return nullptr;
        return cl.base + f * s.OHW + oh * s.OW + ow;
    }
    __device__ void store(int m, int c, float v) const {
        const int n = c / s.HW, p = c - n * s.HW;
        dx[(n * s.C + g * s.Cg + m) * s.HW + p] = v;
    }
};

// bwd_data with SH = SW = 1 (oh = ih + PH - i, ow = iw + PW - j: no divisibility test):
// B walks k = (f, i, j), offset f*OHW + (th - i)*OW + (tw - j), one carry per digit.
struct BwdDataS1Op : BwdDataOp {
    static constexpr bool B_WALK = true;
    struct BWalk { const float* base; int off, i, j, th, tw, d_off, di, dj; };
    __device__ BWalk b_walk(const Col& cl, int k, int step) const {
        const int f = k / s.KHW, rest = k - f * s.KHW, i = rest / s.KW, j = rest - i * s.KW;
        const int df = step / s.KHW, drest = step - df * s.KHW, di = drest / s.KW, dj = drest - di * s.KW;
        return BWalk{cl.base, f * s.OHW + (cl.th - i) * s.OW + cl.tw - j, i, j, cl.th, cl.tw,
                     df * s.OHW - di * s.OW - dj, di, dj};
    }
    __device__ const float* b_next(BWalk& w) const {
        const int oh = w.th - w.i, ow = w.tw - w.j;
        const float* p = ((unsigned)oh < (unsigned)s.OH && (unsigned)ow < (unsigned)s.OW) ? w.base + w.off : nullptr;
        w.off += w.d_off;
        w.i += w.di;
        w.j += w.dj;
        if (w.j >= s.KW) { w.j -= s.KW; w.i += 1; w.off += s.KW - s.OW; }
        if (w.i >= s.KH) { w.i -= s.KH; w.off += s.KH * s.OW + s.OHW; }
        return p;
    }
};

struct BwdFilterOp {
    static constexpr bool A_K_FAST = true, B_K_FAST = false, B_WALK = true;
    const float* dy; const float* x; float* ws;
    Shape s; int g, slice, M, NCOL;
    struct Col { const float* base; int ioh, iow; };
    __device__ const float* a(int m, int k) const {
        const int n = k / s.OHW, p = k - n * s.OHW;
        return dy + (n * s.F + g * s.Fg + m) * s.OHW + p;
    }
    __device__ Col col(int c) const {
        const int ci = c / s.KHW, rest = c - ci * s.KHW, i = rest / s.KW, j = rest - i * s.KW;
        return Col{x + (g * s.Cg + ci) * s.HW, i - s.PH, j - s.PW};
    }
    __device__ const float* b(const Col& cl, int k) const {
        const int n = k / s.OHW, p = k - n * s.OHW, oh = p / s.OW, ow = p - oh * s.OW;
        const int ih = oh * s.SH + cl.ioh, iw = ow * s.SW + cl.iow;
        if ((unsigned)ih >= (unsigned)s.H || (unsigned)iw >= (unsigned)s.W) return nullptr;
        return cl.base + n * s.C * s.HW + ih * s.W + iw;
    }
    // The walk over k = (n, oh, ow): (oh, ow) and the offset n*C*HW + (oh*SH + ioh)*W + ow*SW + iow,
    // stepped by d = (dn, doh, dow) with one carry per digit (dow < OW, doh < OH).
    struct BWalk { const float* base; int off, oh, ow, ioh, iow, dn_off, doh, dow; };
    __device__ BWalk b_walk(const Col& cl, int k, int step) const {
        const int n = k / s.OHW, p = k - n * s.OHW, oh = p / s.OW, ow = p - oh * s.OW;
        const int dn = step / s.OHW, dp = step - dn * s.OHW, doh = dp / s.OW, dow = dp - doh * s.OW;
        return BWalk{cl.base, n * s.C * s.HW + (oh * s.SH + cl.ioh) * s.W + ow * s.SW + cl.iow, oh, ow,
                     cl.ioh, cl.iow, dn * s.C * s.HW + doh * s.SH * s.W + dow * s.SW, doh, dow};
    }
    __device__ const float* b_next(BWalk& w) const {
        const int ih = w.oh * s.SH + w.ioh, iw = w.ow * s.SW + w.iow;
        const float* p = ((unsigned)ih < (unsigned)s.H && (unsigned)iw < (unsigned)s.W) ? w.base + w.off : nullptr;
        w.off += w.dn_off;
        w.oh += w.doh;
        w.ow += w.dow;
        if (w.ow >= s.OW) { w.ow -= s.OW; w.oh += 1; w.off += s.SH * s.W - s.OW * s.SW; }
        if (w.oh >= s.OH) { w.oh -= s.OH; w.off += s.C * s.HW - s.OH * s.SH * s.W; }
        return p;
    }
    __device__ void store(int m, int c, float v) const { ws[(slice * s.F + g * s.Fg + m) * NCOL + c] = v; }
};

#define CN_GEO_PARAMS int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, \
                      int ph, int pw, int groups
#define CN_GEO_ARGS n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups

template <int P, int BM, int BN, int WM, int WN>
__device__ __forceinline__ void fwd(const float* x, const float* w, const float* b, float* y, CN_GEO_PARAMS,
                                    int has_bias, int relu) {
    const Shape s(CN_GEO_ARGS);
    const FwdOp op{x, w, b, y, s, (int)blockIdx.z, has_bias, relu, s.Fg, s.N * s.OHW};
    tc::gemm<P, BM, BN, WM, WN>(op, 0, s.Cg * s.KHW);
}

template <int P, int BM, int BN, int WM, int WN, bool S1 = false>
__device__ __forceinline__ void bwd_data(const float* dy, const float* w, float* dx, CN_GEO_PARAMS) {
    const Shape s(CN_GEO_ARGS);
    const BwdDataOp op{dy, w, dx, s, (int)blockIdx.z, s.Cg, s.N * s.HW};
    if constexpr (S1) tc::gemm<P, BM, BN, WM, WN>(BwdDataS1Op{op}, 0, s.Fg * s.KHW);
    else tc::gemm<P, BM, BN, WM, WN>(op, 0, s.Fg * s.KHW);
}

template <int P, int BM, int BN, int WM, int WN>
__device__ __forceinline__ void bwd_filter(const float* dy, const float* x, float* ws, CN_GEO_PARAMS,
                                           int splits, int chunk) {
    const Shape s(CN_GEO_ARGS);
    const int g = blockIdx.z % s.G, slice = blockIdx.z / s.G;
    const BwdFilterOp op{dy, x, ws, s, g, slice, s.Fg, s.Cg * s.KHW};
    const int k_total = s.N * s.OHW, k0 = slice * chunk;
    tc::gemm<P, BM, BN, WM, WN>(op, k0, min(k_total, k0 + chunk));
}

}  // namespace conv_tc

// One kernel per pass, precision and tile (written out: the launch registry reads the
// signatures from the source). Grid (ceil(cols/BN), ceil(rows/BM), G [* splits]);
// block 256 (_l) or 128 (_s).
extern "C" __global__ void __launch_bounds__(256) conv2d_tc_fwd_tf32_l(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv_tc::fwd<TC_TF32, 128, 128, 64, 32>(x, w, b, y, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, has_bias, relu);
}
extern "C" __global__ void __launch_bounds__(256) conv2d_tc_bwd_data_tf32_l(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups)
{
    conv_tc::bwd_data<TC_TF32, 128, 128, 64, 32>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups);
}
extern "C" __global__ void __launch_bounds__(256) conv2d_tc_bwd_filter_tf32_l(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_filter<TC_TF32, 128, 128, 64, 32>(dy, x, ws, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(128) conv2d_tc_fwd_tf32_s(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv_tc::fwd<TC_TF32, 64, 64, 32, 32>(x, w, b, y, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, has_bias, relu);
}
extern "C" __global__ void __launch_bounds__(128) conv2d_tc_bwd_data_tf32_s(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups)
{
    conv_tc::bwd_data<TC_TF32, 64, 64, 32, 32>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups);
}
extern "C" __global__ void __launch_bounds__(128) conv2d_tc_bwd_filter_tf32_s(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_filter<TC_TF32, 64, 64, 32, 32>(dy, x, ws, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(256) conv2d_tc_fwd_bf16_l(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv_tc::fwd<TC_BF16, 128, 128, 64, 32>(x, w, b, y, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, has_bias, relu);
}
extern "C" __global__ void __launch_bounds__(256) conv2d_tc_bwd_data_bf16_l(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups)
{
    conv_tc::bwd_data<TC_BF16, 128, 128, 64, 32>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups);
}
extern "C" __global__ void __launch_bounds__(256) conv2d_tc_bwd_filter_bf16_l(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_filter<TC_BF16, 128, 128, 64, 32>(dy, x, ws, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

extern "C" __global__ void __launch_bounds__(128) conv2d_tc_fwd_bf16_s(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int has_bias, int relu)
{
    conv_tc::fwd<TC_BF16, 64, 64, 32, 32>(x, w, b, y, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, has_bias, relu);
}
extern "C" __global__ void __launch_bounds__(128) conv2d_tc_bwd_data_bf16_s(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups)
{
    conv_tc::bwd_data<TC_BF16, 64, 64, 32, 32>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups);
}
extern "C" __global__ void __launch_bounds__(128) conv2d_tc_bwd_filter_bf16_s(
    const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups, int splits, int chunk)
{
    conv_tc::bwd_filter<TC_BF16, 64, 64, 32, 32>(dy, x, ws, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups, splits, chunk);
}

// bwd_data with unit stride (the launcher's choice when SH = SW = 1).
extern "C" __global__ void __launch_bounds__(256) conv2d_tc_bwd_data_s1_tf32_l(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups)
{
    conv_tc::bwd_data<TC_TF32, 128, 128, 64, 32, true>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups);
}
extern "C" __global__ void __launch_bounds__(128) conv2d_tc_bwd_data_s1_tf32_s(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups)
{
    conv_tc::bwd_data<TC_TF32, 64, 64, 32, 32, true>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups);
}
extern "C" __global__ void __launch_bounds__(256) conv2d_tc_bwd_data_s1_bf16_l(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups)
{
    conv_tc::bwd_data<TC_BF16, 128, 128, 64, 32, true>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups);
}
extern "C" __global__ void __launch_bounds__(128) conv2d_tc_bwd_data_s1_bf16_s(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
    int n, int c, int h, int w_, int f, int kh, int kw, int oh, int ow, int sh, int sw, int ph, int pw, int groups)
{
    conv_tc::bwd_data<TC_BF16, 64, 64, 32, 32, true>(dy, w, dx, n, c, h, w_, f, kh, kw, oh, ow, sh, sw, ph, pw, groups);
}
