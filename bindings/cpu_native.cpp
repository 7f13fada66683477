// convnet._cpu: the loops of convnet/cpu_ops.py that NumPy runs slowly, in C++.
//
// cpu_ops.py does the arithmetic that matters (the GEMMs, through NumPy's BLAS)
// and splits each op's batch into parts that its threads take in turn; this
// module does the data movement around the GEMMs and the ops that are nothing
// but data movement, one part at a time:
//
//   im2col            x part (m, C, H, W) -> columns in the "image" layout
//                     (C, KH, KW, m, OH, OW) or the "batch" layout (C, KH, KW, OH, OW, m)
//   col2im            the reverse, adding overlaps (conv backward-data)
//   from_rows         GEMM result as rows (one per output pixel, F wide) -> y part
//                     (m, F, OH, OW), + bias, ReLU
//   to_layout         dy part (m, F, OH, OW) -> (F, columns) in a layout's order
//   maxpool_forward   window maxima and the offset of each window's first maximum
//   maxpool_backward  dy added at those offsets
//   bias_grad         a conv bias's gradient: dy summed over a part's images and pixels
//   relu_backward     dy where y > 0, else 0
//   sgd_update        the reference's momentum update, same operations in the same order
//   Epoch             a counter threads wait on: cpu_ops.py's workers wait for the next
//                     op's parts, and the caller for the last part, spinning (without the
//                     GIL) before they sleep. Waking a sleeping thread costs tens of
//                     microseconds, on a virtual machine up to ~100: more than half of
//                     a small op.
//
// Every function takes C-contiguous arrays of one float type (float32 or float64;
// pooling offsets uint8 or int32), checks shapes, and releases the GIL for its
// loops, so cpu_ops.py's threads run parts in parallel. Results equal the NumPy
// versions' bit for bit: where terms are summed (col2im, an overlapping max-pool's
// backward) they are added in the same order.
// Compiled without -march and with -ffp-contract=off: no FMA contractions, the
// same rounding as NumPy's separate operations.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

using idx = std::ptrdiff_t;

void need(bool ok, const std::string &what) {
    if (!ok) throw std::invalid_argument(what);
}

// a C-contiguous array of dtype T with `ndim` dimensions (any ndim when ndim < 0)
template <typename T>
T *data_of(py::array &a, int ndim, const char *name, bool writable = false) {
    need(py::isinstance<py::array_t<T>>(a) && a.dtype().is(py::dtype::of<T>()),
         std::string(name) + " has the wrong dtype");
    need(ndim < 0 || a.ndim() == ndim, std::string(name) + " must have " + std::to_string(ndim) + " dimensions");
    need((a.flags() & py::array::c_style) != 0, std::string(name) + " must be C-contiguous");
    need(!writable || a.writeable(), std::string(name) + " must be writable");
    return static_cast<T *>(writable ? a.mutable_data() : const_cast<void *>(a.data()));
}

std::vector<idx> dims(const py::array &a) {
    return std::vector<idx>(a.shape(), a.shape() + a.ndim());
}

bool is_f64(const py::array &a) { return a.dtype().is(py::dtype::of<double>()); }

struct Geo {            // convolution geometry of one part
    idx m, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow;
};

// --- im2col / col2im ----------------------------------------------------------

template <typename T>
void im2col_image(const T *x, T *cols, const Geo &g) {
    // cols[c, p, q, n, i, j] = x[n, c, i*sh + p - ph, j*sw + q - pw], 0 outside
    T *d = cols;
    for (idx c = 0; c < g.c; ++c)
        for (idx p = 0; p < g.kh; ++p)
            for (idx q = 0; q < g.kw; ++q) {
                // output columns j whose input column j*sw + q - pw lies inside [0, w)
                idx j0 = 0, j1 = g.ow;
                while (j0 < g.ow && j0 * g.sw + q - g.pw < 0) ++j0;
                while (j1 > j0 && (j1 - 1) * g.sw + q - g.pw >= g.w) --j1;
                for (idx n = 0; n < g.m; ++n) {
                    const T *plane = x + (n * g.c + c) * g.h * g.w;
                    for (idx i = 0; i < g.oh; ++i, d += g.ow) {
                        idx y = i * g.sh + p - g.ph;
                        if (y < 0 || y >= g.h) {
                            std::memset(d, 0, sizeof(T) * g.ow);
                            continue;
                        }
                        const T *row = plane + y * g.w;
                        const idx off = q - g.pw;
                        for (idx j = 0; j < j0; ++j) d[j] = 0;
                        if (g.sw == 1 && j1 > j0)
                            std::memcpy(d + j0, row + j0 + off, sizeof(T) * (j1 - j0));
                        else
                            for (idx j = j0; j < j1; ++j) d[j] = row[j * g.sw + off];
                        for (idx j = j1; j < g.ow; ++j) d[j] = 0;
                    }
                }
            }
}

// x part (m, C, H, W) -> (C, H + 2ph, W + 2pw, m) with a zero border: the batch innermost
template <typename T>
std::vector<T> batch_last(const T *x, const Geo &g) {
    idx hp = g.h + 2 * g.ph, wp = g.w + 2 * g.pw;
    std::vector<T> xt(static_cast<size_t>(g.c * hp * wp * g.m), T(0));
    for (idx n = 0; n < g.m; ++n)
        for (idx c = 0; c < g.c; ++c) {
            const T *src = x + (n * g.c + c) * g.h * g.w;
            T *dst = xt.data() + ((c * hp + g.ph) * wp + g.pw) * g.m + n;
            for (idx y = 0; y < g.h; ++y)
                for (idx xx = 0; xx < g.w; ++xx) dst[(y * wp + xx) * g.m] = src[y * g.w + xx];
        }
    return xt;
}

template <typename T>
void im2col_batch(const T *x, T *cols, const Geo &g) {
    // cols[c, p, q, i, j, n] = xt[c, i*sh + p, j*sw + q, n]
    std::vector<T> xt = batch_last(x, g);
    idx hp = g.h + 2 * g.ph, wp = g.w + 2 * g.pw;
    T *d = cols;
    for (idx c = 0; c < g.c; ++c)
        for (idx p = 0; p < g.kh; ++p)
            for (idx q = 0; q < g.kw; ++q)
                for (idx i = 0; i < g.oh; ++i) {
                    const T *row = xt.data() + ((c * hp + i * g.sh + p) * wp + q) * g.m;
                    if (g.sw == 1) {                          // OW * m contiguous elements
                        std::memcpy(d, row, sizeof(T) * g.ow * g.m);
                        d += g.ow * g.m;
                    } else {
                        for (idx j = 0; j < g.ow; ++j, d += g.m)
                            std::memcpy(d, row + j * g.sw * g.m, sizeof(T) * g.m);
                    }
                }
}

// dx part (m, C, H, W) = the columns added back into the image (conv backward-data); the
// terms of one element in the order of their kernel offsets (p, q), as NumPy's loop adds them
template <typename T>
void col2im_image(const T *cols, T *dx, const Geo &g) {
    // dx[n, c, y, x] = sum over (p, q, i, j) with y = i*sh + p - ph, x = j*sw + q - pw
    std::memset(dx, 0, sizeof(T) * g.m * g.c * g.h * g.w);
    const idx ohw = g.oh * g.ow;
    for (idx c = 0; c < g.c; ++c)
        for (idx p = 0; p < g.kh; ++p)
            for (idx q = 0; q < g.kw; ++q) {
                idx j0 = 0, j1 = g.ow;
                while (j0 < g.ow && j0 * g.sw + q - g.pw < 0) ++j0;
                while (j1 > j0 && (j1 - 1) * g.sw + q - g.pw >= g.w) --j1;
                const T *src = cols + ((c * g.kh + p) * g.kw + q) * g.m * ohw;
                const idx off = q - g.pw;
                for (idx n = 0; n < g.m; ++n) {
                    T *plane = dx + (n * g.c + c) * g.h * g.w;
                    for (idx i = 0; i < g.oh; ++i) {
                        const idx y = i * g.sh + p - g.ph;
                        if (y < 0 || y >= g.h) continue;
                        const T *s = src + (n * g.oh + i) * g.ow;
                        T *row = plane + y * g.w;
                        for (idx j = j0; j < j1; ++j) row[j * g.sw + off] += s[j];
                    }
                }
            }
}

template <typename T>
void col2im_batch(const T *cols, T *dx, const Geo &g) {
    // through a zeroed (C, H + 2ph, W + 2pw, m) image: runs of OW*m (stride 1) or m elements
    const idx hp = g.h + 2 * g.ph, wp = g.w + 2 * g.pw;
    std::vector<T> xt(static_cast<size_t>(g.c * hp * wp * g.m), T(0));
    const T *s = cols;
    for (idx c = 0; c < g.c; ++c)
        for (idx p = 0; p < g.kh; ++p)
            for (idx q = 0; q < g.kw; ++q)
                for (idx i = 0; i < g.oh; ++i) {
                    T *row = xt.data() + ((c * hp + i * g.sh + p) * wp + q) * g.m;
                    if (g.sw == 1) {
                        const idx run = g.ow * g.m;
                        for (idx k = 0; k < run; ++k) row[k] += s[k];
                        s += run;
                    } else {
                        for (idx j = 0; j < g.ow; ++j, s += g.m) {
                            T *r = row + j * g.sw * g.m;
                            for (idx k = 0; k < g.m; ++k) r[k] += s[k];
                        }
                    }
                }
    for (idx n = 0; n < g.m; ++n)
        for (idx c = 0; c < g.c; ++c) {
            T *dst = dx + (n * g.c + c) * g.h * g.w;
            const T *src = xt.data() + ((c * hp + g.ph) * wp + g.pw) * g.m + n;
            for (idx y = 0; y < g.h; ++y)
                for (idx xx = 0; xx < g.w; ++xx) dst[y * g.w + xx] = src[(y * wp + xx) * g.m];
        }
}

Geo geometry(const std::vector<idx> &xs, const py::tuple &k, const py::tuple &s, const py::tuple &p,
             const py::tuple &out) {
    need(xs.size() == 4, "x must be (m, C, H, W)");
    Geo g{xs[0], xs[1], xs[2], xs[3], k[0].cast<idx>(), k[1].cast<idx>(), s[0].cast<idx>(), s[1].cast<idx>(),
          p[0].cast<idx>(), p[1].cast<idx>(), out[0].cast<idx>(), out[1].cast<idx>()};
    need(g.kh > 0 && g.kw > 0 && g.sh > 0 && g.sw > 0 && g.ph >= 0 && g.pw >= 0 && g.oh >= 0 && g.ow >= 0,
         "bad convolution geometry");
    need(g.oh == 0 || (g.oh - 1) * g.sh + g.kh <= g.h + 2 * g.ph, "OH does not fit the input");
    need(g.ow == 0 || (g.ow - 1) * g.sw + g.kw <= g.w + 2 * g.pw, "OW does not fit the input");
    return g;
}

template <typename T>
void im2col_t(py::array &x, py::array &cols, const Geo &g, bool batch) {
    const T *xp = data_of<T>(x, 4, "x");
    T *cp = data_of<T>(cols, -1, "cols", true);
    need(cols.size() == g.c * g.kh * g.kw * g.m * g.oh * g.ow, "cols has the wrong size");
    py::gil_scoped_release free;
    batch ? im2col_batch(xp, cp, g) : im2col_image(xp, cp, g);
}

void im2col(py::array x, py::array cols, py::tuple k, py::tuple s, py::tuple p, py::tuple out, bool batch) {
    Geo g = geometry(dims(x), k, s, p, out);
    is_f64(x) ? im2col_t<double>(x, cols, g, batch) : im2col_t<float>(x, cols, g, batch);
}

template <typename T>
void col2im_t(py::array &cols, py::array &dx, const Geo &g, bool batch) {
    const T *cp = data_of<T>(cols, -1, "cols");
    T *dp = data_of<T>(dx, 4, "dx", true);
    need(cols.size() == g.c * g.kh * g.kw * g.m * g.oh * g.ow, "cols has the wrong size");
    py::gil_scoped_release free;
    batch ? col2im_batch(cp, dp, g) : col2im_image(cp, dp, g);
}

void col2im(py::array cols, py::array dx, py::tuple k, py::tuple s, py::tuple p, py::tuple out, bool batch) {
    Geo g = geometry(dims(dx), k, s, p, out);
    is_f64(dx) ? col2im_t<double>(cols, dx, g, batch) : col2im_t<float>(cols, dx, g, batch);
}

// --- layouts --------------------------------------------------------------------

// GEMM result as rows: ybuf (m*OH*OW, F), row r = n*OH*OW + k ("image" order) or k*m + n
// ("batch" order) -> y part (m, F, OH, OW), + bias, then max(0, .) (NaN stays NaN)
template <typename T>
void from_rows_t(py::array &ybuf, py::array &y, py::object &bias, bool relu, bool batch) {
    std::vector<idx> ys = dims(y);
    need(ys.size() == 4, "y must be (m, F, OH, OW)");
    const idx m = ys[0], f = ys[1], hw = ys[2] * ys[3];
    const T *src = data_of<T>(ybuf, 2, "ybuf");
    T *dst = data_of<T>(y, 4, "y", true);
    need(ybuf.shape(0) == m * hw && ybuf.shape(1) == f, "ybuf must be (m*OH*OW, F)");
    const T *b = nullptr;
    py::array barr;
    if (!bias.is_none()) {
        barr = bias.cast<py::array>();
        b = data_of<T>(barr, 1, "bias");
        need(barr.shape(0) == f, "bias must have F elements");
    }
    py::gil_scoped_release free;
    const idx step = batch ? m * f : f;                 // from one pixel's row to the next
    for (idx n = 0; n < m; ++n) {
        const T *rows = src + (batch ? n : n * hw) * f;
        for (idx fi = 0; fi < f; ++fi) {
            T *d = dst + (n * f + fi) * hw;
            const T *s = rows + fi;
            if (b) {
                const T add = b[fi];
                for (idx k = 0; k < hw; ++k) d[k] = s[k * step] + add;
            } else {
                for (idx k = 0; k < hw; ++k) d[k] = s[k * step];
            }
            if (relu)
                for (idx k = 0; k < hw; ++k) d[k] = (d[k] < T(0)) ? T(0) : d[k];
        }
    }
}

void from_rows(py::array ybuf, py::array y, py::object bias, bool relu, bool batch) {
    is_f64(y) ? from_rows_t<double>(ybuf, y, bias, relu, batch) : from_rows_t<float>(ybuf, y, bias, relu, batch);
}

template <typename T>
void to_layout_t(py::array &dy, py::array &out, bool batch) {
    std::vector<idx> ds = dims(dy);
    need(ds.size() == 4, "dy must be (m, F, OH, OW)");
    const idx m = ds[0], f = ds[1], hw = ds[2] * ds[3];
    const T *src = data_of<T>(dy, 4, "dy");
    T *dst = data_of<T>(out, -1, "out", true);
    need(out.size() == m * f * hw, "out has the wrong size");
    py::gil_scoped_release free;
    for (idx fi = 0; fi < f; ++fi)
        for (idx n = 0; n < m; ++n) {
            const T *s = src + (n * f + fi) * hw;
            if (batch) {                                // out[f, hw, n]
                T *d = dst + fi * hw * m + n;
                for (idx k = 0; k < hw; ++k) d[k * m] = s[k];
            } else {                                    // out[f, n, hw]
                std::memcpy(dst + (fi * m + n) * hw, s, sizeof(T) * hw);
            }
        }
}

void to_layout(py::array dy, py::array out, bool batch) {
    is_f64(dy) ? to_layout_t<double>(dy, out, batch) : to_layout_t<float>(dy, out, batch);
}

// --- max pooling ----------------------------------------------------------------

// y[n, c, i, j] = max of the window at (i*stride, j*stride), clipped to the input; arg = p*size + q
// of its first maximum in row-major order, or `none` where the window holds a NaN (y = NaN).
template <typename T, typename A>
void maxpool_fwd_loop(const T *x, T *y, A *arg, idx planes, idx h, idx w, idx oh, idx ow, idx size,
                      idx stride, A none) {
    // One output row at a time, one window offset (p, q) at a time across the row's windows:
    // branch-free selects the compiler vectorises. Offsets rise in row-major order and only a
    // strictly larger value moves the maximum, so `at` is the first maximum.
    std::vector<T> best(static_cast<size_t>(ow));
    std::vector<int32_t> at(static_cast<size_t>(ow));
    std::vector<int32_t> nan(static_cast<size_t>(ow));
    T *bp = best.data();
    int32_t *ap = at.data();
    int32_t *np_ = nan.data();
    for (idx pl = 0; pl < planes; ++pl) {
        const T *xp = x + pl * h * w;
        for (idx i = 0; i < oh; ++i) {
            const idx y0 = i * stride;
            for (idx p = 0; p < size && y0 + p < h; ++p) {
                const T *row = xp + (y0 + p) * w;
                for (idx q = 0; q < size; ++q) {
                    idx jn = 0;                         // windows j with j*stride + q inside the row
                    if (q < w) jn = std::min(ow, (w - 1 - q) / stride + 1);
                    const int32_t off = static_cast<int32_t>(p * size + q);
                    if (p == 0 && q == 0) {
                        for (idx j = 0; j < ow; ++j) {
                            const T v = row[j * stride];
                            bp[j] = v;
                            ap[j] = 0;
                            np_[j] = v != v;
                        }
                        continue;
                    }
                    for (idx j = 0; j < jn; ++j) {      // masks, not branches: vectorised
                        const T v = row[j * stride + q];
                        const T b = bp[j];
                        const int32_t gt = -static_cast<int32_t>(v > b);
                        bp[j] = std::max(b, v);             // (b < v) ? v : b
                        ap[j] = (ap[j] & ~gt) | (off & gt);
                        np_[j] |= static_cast<int32_t>(v != v);
                    }
                }
            }
            T *yrow = y + (pl * oh + i) * ow;
            for (idx j = 0; j < ow; ++j) yrow[j] = np_[j] ? std::numeric_limits<T>::quiet_NaN() : bp[j];
            if (arg) {
                A *arow = arg + (pl * oh + i) * ow;
                for (idx j = 0; j < ow; ++j) arow[j] = np_[j] ? none : static_cast<A>(ap[j]);
            }
        }
    }
}

template <typename T, typename A>
void maxpool_bwd_loop(const T *dy, const A *arg, T *dx, idx planes, idx h, idx w, idx oh, idx ow, idx size,
                      idx stride, A none) {
    // Windows in reverse order: an element's terms then arrive in the order of their offsets
    // (p, q) in the window, the order in which the reference adds them (the same sums, bit for bit).
    std::vector<idx> delta(static_cast<size_t>(size * size));     // offset -> p*w + q (no division)
    for (idx a = 0; a < size * size; ++a) delta[a] = (a / size) * w + a % size;
    std::memset(dx, 0, sizeof(T) * planes * h * w);
    for (idx pl = 0; pl < planes; ++pl) {
        T *dp = dx + pl * h * w;
        for (idx i = oh - 1; i >= 0; --i)
            for (idx j = ow - 1; j >= 0; --j) {
                const idx o = (pl * oh + i) * ow + j;
                const A a = arg[o];
                if (a == none) continue;
                dp[i * stride * w + j * stride + delta[static_cast<idx>(a)]] += dy[o];
            }
    }
}

template <typename T, typename A>
void maxpool_forward_ta(py::array &x, py::array &y, py::object &arg, idx size, idx stride, A none) {
    std::vector<idx> xs = dims(x), ys = dims(y);
    need(xs.size() == 4 && ys.size() == 4 && xs[0] == ys[0] && xs[1] == ys[1], "x and y must be (m, C, ., .)");
    need(ys[2] == 0 || (ys[2] - 1) * stride < xs[2], "OH does not fit the input");
    need(ys[3] == 0 || (ys[3] - 1) * stride < xs[3], "OW does not fit the input");
    const T *xp = data_of<T>(x, 4, "x");
    T *yp = data_of<T>(y, 4, "y", true);
    A *ap = nullptr;
    py::array aarr;
    if (!arg.is_none()) {
        aarr = arg.cast<py::array>();
        ap = data_of<A>(aarr, 4, "arg", true);
        need(aarr.size() == y.size(), "arg must have y's shape");
    }
    py::gil_scoped_release free;
    maxpool_fwd_loop(xp, yp, ap, xs[0] * xs[1], xs[2], xs[3], ys[2], ys[3], size, stride, none);
}

template <typename T>
void maxpool_forward_t(py::array &x, py::array &y, py::object &arg, idx size, idx stride, long none) {
    if (!arg.is_none() && arg.cast<py::array>().dtype().is(py::dtype::of<int32_t>()))
        maxpool_forward_ta<T, int32_t>(x, y, arg, size, stride, static_cast<int32_t>(none));
    else
        maxpool_forward_ta<T, uint8_t>(x, y, arg, size, stride, static_cast<uint8_t>(none));
}

void maxpool_forward(py::array x, py::array y, py::object arg, idx size, idx stride, long none) {
    need(size > 0 && stride > 0, "size and stride must be positive");
    is_f64(x) ? maxpool_forward_t<double>(x, y, arg, size, stride, none)
              : maxpool_forward_t<float>(x, y, arg, size, stride, none);
}

template <typename T, typename A>
void maxpool_backward_ta(py::array &dy, py::array &arg, py::array &dx, idx size, idx stride, A none) {
    std::vector<idx> ds = dims(dy), xs = dims(dx);
    need(ds.size() == 4 && xs.size() == 4 && xs[0] == ds[0] && xs[1] == ds[1], "dy and dx must be (m, C, ., .)");
    // every offset lands inside dx: windows start inside it and are clipped to it
    need(ds[2] == 0 || (ds[2] - 1) * stride < xs[2], "OH does not fit the input");
    need(ds[3] == 0 || (ds[3] - 1) * stride < xs[3], "OW does not fit the input");
    const T *dp = data_of<T>(dy, 4, "dy");
    const A *ap = data_of<A>(arg, 4, "arg");
    T *xp = data_of<T>(dx, 4, "dx", true);
    need(arg.size() == dy.size(), "arg must have dy's shape");
    py::gil_scoped_release free;
    const idx planes = xs[0] * xs[1], h = xs[2], w = xs[3], oh = ds[2], ow = ds[3];
    // a clipped window's offsets never point outside the input (the forward chose them inside)
    maxpool_bwd_loop(dp, ap, xp, planes, h, w, oh, ow, size, stride, none);
}

void maxpool_backward(py::array dy, py::array arg, py::array dx, idx size, idx stride, long none) {
    need(size > 0 && stride > 0, "size and stride must be positive");
    const bool i32 = arg.dtype().is(py::dtype::of<int32_t>());
    if (is_f64(dx))
        i32 ? maxpool_backward_ta<double, int32_t>(dy, arg, dx, size, stride, static_cast<int32_t>(none))
            : maxpool_backward_ta<double, uint8_t>(dy, arg, dx, size, stride, static_cast<uint8_t>(none));
    else
        i32 ? maxpool_backward_ta<float, int32_t>(dy, arg, dx, size, stride, static_cast<int32_t>(none))
            : maxpool_backward_ta<float, uint8_t>(dy, arg, dx, size, stride, static_cast<uint8_t>(none));
}

// out[f] += sum of dy[n, f, :, :] over the part's n (out float64: the part's partial sums)
template <typename T>
void bias_grad_t(py::array &dy, py::array &out) {
    std::vector<idx> ds = dims(dy);
    need(ds.size() == 4, "dy must be (m, F, OH, OW)");
    const T *d = data_of<T>(dy, 4, "dy");
    double *o = data_of<double>(out, 1, "out", true);
    need(out.shape(0) == ds[1], "out must have F elements");
    const idx m = ds[0], f = ds[1], hw = ds[2] * ds[3];
    py::gil_scoped_release free;
    for (idx n = 0; n < m; ++n)
        for (idx fi = 0; fi < f; ++fi) {
            const T *r = d + (n * f + fi) * hw;
            double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};     // eight chains: the additions overlap
            idx k = 0;
            for (; k + 8 <= hw; k += 8)
                for (int u = 0; u < 8; ++u) acc[u] += r[k + u];
            for (; k < hw; ++k) acc[0] += r[k];
            o[fi] += ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        }
}

void bias_grad(py::array dy, py::array out) {
    is_f64(dy) ? bias_grad_t<double>(dy, out) : bias_grad_t<float>(dy, out);
}

// --- elementwise ----------------------------------------------------------------

template <typename T>
void relu_backward_t(py::array &dy, py::array &y, py::array &dx) {
    const T *d = data_of<T>(dy, -1, "dy");
    const T *yp = data_of<T>(y, -1, "y");
    T *o = data_of<T>(dx, -1, "dx", true);
    need(dy.size() == y.size() && dx.size() == y.size(), "dy, y and dx must have one size");
    const idx n = y.size();
    py::gil_scoped_release free;
    for (idx i = 0; i < n; ++i) {           // both loaded: a select, no branch
        const T dv = d[i], yv = yp[i];
        o[i] = yv > T(0) ? dv : T(0);
    }
}

void relu_backward(py::array dy, py::array y, py::array dx) {
    is_f64(y) ? relu_backward_t<double>(dy, y, dx) : relu_backward_t<float>(dy, y, dx);
}

// v = v*momentum - w*(weight_decay*lr) - dw*lr; w += v (each product and difference rounded, in
// this order: reference.sgd_update's bits)
template <typename T>
void sgd_update_t(py::array &w, py::array &dw, py::array &v, double decay, double rate, double mom) {
    T *wp = data_of<T>(w, -1, "w", true);
    const T *dp = data_of<T>(dw, -1, "dw");
    T *vp = data_of<T>(v, -1, "v", true);
    need(dw.size() == w.size() && v.size() == w.size(), "w, dw and v must have one size");
    const T dec = static_cast<T>(decay), r = static_cast<T>(rate), mo = static_cast<T>(mom);
    const idx n = w.size();
    py::gil_scoped_release free;
    for (idx i = 0; i < n; ++i) {
        T vi = vp[i] * mo;
        vi = vi - wp[i] * dec;
        vi = vi - dp[i] * r;
        vp[i] = vi;
        wp[i] = wp[i] + vi;
    }
}

void sgd_update(py::array w, py::array dw, py::array v, double decay, double rate, double mom) {
    is_f64(w) ? sgd_update_t<double>(w, dw, v, decay, rate, mom) : sgd_update_t<float>(w, dw, v, decay, rate, mom);
}

// --- Epoch ----------------------------------------------------------------------

class Epoch {
  public:
    long get() const { return value_.load(); }

    // value + 1, waking every thread in wait_past
    long bump() {
        const long v = ++value_;
        if (sleepers_.load()) {
            std::lock_guard<std::mutex> lock(mutex_);
            cv_.notify_all();
        }
        return v;
    }

    // the value once it differs from `seen`: spin (yielding the core) for up to `spin` seconds,
    // then sleep until bump(); the GIL is released throughout
    long wait_past(long seen, double spin) {
        py::gil_scoped_release free;
        const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(spin);
        for (unsigned k = 0; value_.load() == seen; ++k) {
            if ((k & 63) == 0 && std::chrono::steady_clock::now() >= until) break;
            std::this_thread::yield();
        }
        if (value_.load() == seen) {
            std::unique_lock<std::mutex> lock(mutex_);
            ++sleepers_;
            cv_.wait(lock, [&] { return value_.load() != seen; });
            --sleepers_;
        }
        return value_.load();
    }

  private:
    std::atomic<long> value_{0};
    std::atomic<int> sleepers_{0};
    std::mutex mutex_;
    std::condition_variable cv_;
};

}  // namespace

PYBIND11_MODULE(_cpu, m) {
    m.doc() = "The data-movement loops of convnet/cpu_ops.py (see bindings/cpu_native.cpp)";
    m.def("im2col", &im2col, py::arg("x"), py::arg("cols"), py::arg("kernel"), py::arg("stride"),
          py::arg("pad"), py::arg("out"), py::arg("batch"));
    m.def("col2im", &col2im, py::arg("cols"), py::arg("dx"), py::arg("kernel"), py::arg("stride"),
          py::arg("pad"), py::arg("out"), py::arg("batch"));
    m.def("from_rows", &from_rows, py::arg("ybuf"), py::arg("y"), py::arg("bias"), py::arg("relu"),
          py::arg("batch"));
    m.def("to_layout", &to_layout, py::arg("dy"), py::arg("out"), py::arg("batch"));
    m.def("maxpool_forward", &maxpool_forward, py::arg("x"), py::arg("y"), py::arg("arg"), py::arg("size"),
          py::arg("stride"), py::arg("none"));
    m.def("maxpool_backward", &maxpool_backward, py::arg("dy"), py::arg("arg"), py::arg("dx"), py::arg("size"),
          py::arg("stride"), py::arg("none"));
    m.def("bias_grad", &bias_grad, py::arg("dy"), py::arg("out"));
    m.def("relu_backward", &relu_backward, py::arg("dy"), py::arg("y"), py::arg("dx"));
    py::class_<Epoch>(m, "Epoch")
        .def(py::init<>())
        .def("get", &Epoch::get)
        .def("bump", &Epoch::bump)
        .def("wait_past", &Epoch::wait_past, py::arg("seen"), py::arg("spin"));
    m.def("sgd_update", &sgd_update, py::arg("w"), py::arg("dw"), py::arg("v"), py::arg("decay"), py::arg("rate"),
          py::arg("momentum"));
}
