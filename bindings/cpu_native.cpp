// convnet._cpu: the fast CPU path's inner loops and its thread pool (convnet/cpu_ops.py).
//
// cpu_ops.py checks arguments, allocates the results and cuts each op's batch into
// parts; the functions here run the parts on a pool of threads, without the GIL:
//
//   conv_forward          per part: im2col, the GEMM (BLAS), + bias, ReLU, into y
//   conv_backward_filter  per part: dy in the columns' order, the GEMM against the
//                         forward's columns (or new ones); the parts' sums added in order
//   conv_backward_data    per part: the GEMM into columns, col2im
//   gemm_rows             a fully connected layer's GEMM, its output rows in parts
//   maxpool_forward       window maxima and the offset of each window's first maximum
//   maxpool_backward      dy added at those offsets
//   bias_grad             a conv bias's gradient (float64 sums per part)
//   relu_backward         dy where y > 0, else 0
//   sgd_update            the reference's momentum update, same operations in the same order
//
// The column layouts, "image" (C, KH, KW, m, OH, OW) and "batch" (C, KH, KW, OH, OW, m),
// are cpu_ops.py's (its docstring says when each is used). The GEMMs call the BLAS that
// NumPy itself loaded (blas_init finds its cblas_sgemm/dgemm; cpu_ops.py holds it at one
// thread with threadpoolctl): called from C++ the parts need no GIL, so two threads run
// two parts at once. Driving the same loops from Python threads, every part changed hands
// of the GIL several times; each handoff wakes a sleeping thread (tens of microseconds,
// up to ~100 on a virtual machine), and small ops ran slower on two threads than on one.
//
// The pool's idle threads spin (yielding the core) for a while before they sleep, so the
// next op's parts start at once. Where terms are summed in loops here (col2im, an
// overlapping max-pool's backward), they are added in the order NumPy's versions add
// them. Compiled without -march and with -ffp-contract=off: no fused multiply-adds.
#include <dlfcn.h>
#include <unistd.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

using idx = std::ptrdiff_t;
using Parts = std::vector<std::pair<idx, idx>>;

void need(bool ok, const std::string &what) {
    if (!ok) throw std::invalid_argument(what);
}

// a C-contiguous array of dtype T with `ndim` dimensions (any ndim when ndim < 0)
template <typename T>
T *data_of(const py::array &a, int ndim, const char *name, bool writable = false) {
    need(a.dtype().is(py::dtype::of<T>()), std::string(name) + " has the wrong dtype");
    need(ndim < 0 || a.ndim() == ndim, std::string(name) + " must have " + std::to_string(ndim) + " dimensions");
    need((a.flags() & py::array::c_style) != 0, std::string(name) + " must be C-contiguous");
    need(!writable || a.writeable(), std::string(name) + " must be writable");
    return static_cast<T *>(const_cast<void *>(a.data()));
}

std::vector<idx> dims(const py::array &a) {
    return std::vector<idx>(a.shape(), a.shape() + a.ndim());
}

bool is_f64(const py::array &a) { return a.dtype().is(py::dtype::of<double>()); }

void check_parts(const Parts &parts, idx n) {
    idx at = 0;
    for (auto &pr : parts) {
        need(pr.first == at && pr.second > pr.first, "parts must cut range(n) into consecutive non-empty ranges");
        at = pr.second;
    }
    need(at == n, "parts must cover range(n)");
}

// --- the thread pool --------------------------------------------------------------

class Pool {
  public:
    ~Pool() {
        if (forked()) return;
        resize(1);
    }

    int threads() const { return static_cast<int>(workers_.size()) + 1; }

    // n threads in all: the caller of run() and n - 1 workers
    void resize(int n) {
        need(n >= 1, "threads must be >= 1");
        std::lock_guard<std::mutex> turn(run_mutex_);
        forget_if_forked();
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
            job_ = published_.fetch_add(1) + 1;
        }
        work_.notify_all();
        for (auto &t : workers_) t.join();
        workers_.clear();
        stop_ = false;
        const long seen = published_.load();   // taken here: a worker that starts late must not miss a stop
        for (int i = 1; i < n; ++i) workers_.emplace_back([this, seen] { loop(seen); });
    }

    // fn(0) .. fn(count - 1), by the caller and the workers; the first exception is rethrown.
    // Callers in several threads take turns (one op at a time on the pool).
    void run(idx count, const std::function<void(idx)> &fn) {
        std::lock_guard<std::mutex> turn(run_mutex_);
        forget_if_forked();
        if (workers_.empty() || count <= 1) {
            for (idx i = 0; i < count; ++i) fn(i);
            return;
        }
        long gen;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            fn_ = &fn;
            count_ = count;
            next_ = 0;
            left_ = count;
            error_ = nullptr;
            gen = job_ = published_.fetch_add(1) + 1;      // one counter, only rising: no waiter
                                                            // can see an old value come back
        }
        if (sleepers_.load()) work_.notify_all();
        drain(gen);
        spin_until([&] { return finished_.load() == gen; });
        if (finished_.load() != gen) {
            std::unique_lock<std::mutex> lock(mutex_);
            done_.wait(lock, [&] { return finished_.load() == gen; });
        }
        if (error_) std::rethrow_exception(error_);
    }

    double spin = 0.002;        // seconds an idle thread spins before it sleeps

  private:
    bool forked() const { return getpid() != pid_; }

    // In a child of fork() the workers do not exist, and one may have held the lock at the fork:
    // drop them (never joined or destroyed), make the lock and conditions anew, and run
    // everything in the calling thread until resize() starts new workers.
    void forget_if_forked() {
        if (!forked()) return;
        new std::vector<std::thread>(std::move(workers_));      // leaked on purpose
        workers_.clear();
        new (&mutex_) std::mutex();
        new (&work_) std::condition_variable();
        new (&done_) std::condition_variable();
        sleepers_.store(0);
        pid_ = getpid();
    }

    template <typename Pred>
    void spin_until(Pred ready) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(spin);
        for (unsigned k = 0; !ready(); ++k) {
            if ((k & 63) == 0 && std::chrono::steady_clock::now() >= until) return;
            std::this_thread::yield();
        }
    }

    void drain(long gen) {
        for (;;) {
            idx i;
            const std::function<void(idx)> *fn;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                if (job_ != gen || next_ >= count_) return;
                i = next_++;
                fn = fn_;
            }
            std::exception_ptr err;
            try {
                (*fn)(i);
            } catch (...) {
                err = std::current_exception();
            }
            bool last;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                if (err && !error_) error_ = err;
                last = --left_ == 0;
                if (last) finished_.store(gen);
            }
            if (last) done_.notify_all();
        }
    }

    void loop(long seen) {
        for (;;) {
            spin_until([&] { return published_.load() != seen; });
            if (published_.load() == seen) {
                std::unique_lock<std::mutex> lock(mutex_);
                ++sleepers_;
                work_.wait(lock, [&] { return published_.load() != seen; });
                --sleepers_;
            }
            seen = published_.load();
            if (stop_) return;
            drain(seen);
        }
    }

    std::vector<std::thread> workers_;
    std::mutex run_mutex_, mutex_;
    std::condition_variable work_, done_;
    std::atomic<long> published_{0}, finished_{0};
    std::atomic<int> sleepers_{0};
    long job_ = 0;                              // the published value of the op now running
    idx count_ = 0, next_ = 0, left_ = 0;
    const std::function<void(idx)> *fn_ = nullptr;
    std::exception_ptr error_;
    std::atomic<bool> stop_{false};
    pid_t pid_ = getpid();
};

Pool &pool() {
    static Pool p;
    return p;
}

// --- BLAS -----------------------------------------------------------------------

// cblas_?gemm with 64-bit (ILP64) or 32-bit integers: order, transa, transb, m, n, k, alpha,
// a, lda, b, ldb, beta, c, ldc
template <typename T, typename I>
using Gemm = void (*)(int, int, int, I, I, I, T, const T *, I, const T *, I, T, T *, I);

struct Blas {
    void *sgemm = nullptr, *dgemm = nullptr;
    bool ilp64 = false;
};

Blas &blas() {
    static Blas b;
    return b;
}

// Find cblas_sgemm and cblas_dgemm in the shared library at `path` (already loaded by NumPy):
// the symbol's name, or "" where neither naming is there.
std::string blas_init(const std::string &path) {
    void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (!h) h = dlopen(path.c_str(), RTLD_NOW);
    if (!h) return "";
    struct Naming { const char *s, *d; bool ilp64; };
    const Naming names[] = {{"scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", true},
                            {"cblas_sgemm64_", "cblas_dgemm64_", true},
                            {"scipy_cblas_sgemm", "scipy_cblas_dgemm", false},
                            {"cblas_sgemm", "cblas_dgemm", false}};
    for (const Naming &nm : names) {
        void *s = dlsym(h, nm.s), *d = dlsym(h, nm.d);
        if (s && d) {
            blas() = Blas{s, d, nm.ilp64};
            return nm.s;
        }
    }
    return "";
}

bool have_blas() { return blas().sgemm != nullptr; }

// row-major C (m x n) = op(A) op(B) + beta C; op(A) is m x k
template <typename T>
void gemm(bool ta, bool tb, idx m, idx n, idx k, const T *a, idx lda, const T *b, idx ldb, T beta, T *c, idx ldc) {
    const int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
    const int oa = ta ? kTrans : kNoTrans, ob = tb ? kTrans : kNoTrans;
    void *f = std::is_same<T, float>::value ? blas().sgemm : blas().dgemm;
    if (blas().ilp64)
        reinterpret_cast<Gemm<T, int64_t>>(f)(kRowMajor, oa, ob, m, n, k, T(1), a, lda, b, ldb, beta, c, ldc);
    else
        reinterpret_cast<Gemm<T, int>>(f)(kRowMajor, oa, ob, static_cast<int>(m), static_cast<int>(n),
                                          static_cast<int>(k), T(1), a, static_cast<int>(lda), b,
                                          static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

struct Geo {            // convolution geometry of one part (m images)
    idx m, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow;
};

// Scratch buffers of the calling thread, kept between calls: an op's temporaries (columns, a
// transposed dy, the GEMM's output rows) cost neither an allocation nor a zero fill each call.
// Slots: 0 GEMM output rows, 1 columns, 2 dy in the columns' layout, 3 column gradients,
// 4 the batch-innermost image.
template <typename T>
T *scratch(int slot, idx n) {
    thread_local std::vector<T> bufs[5];
    std::vector<T> &b = bufs[slot];
    if (b.size() < static_cast<size_t>(n)) b.resize(static_cast<size_t>(n));   // zero-filled on growth only
    return b.data();
}

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
const T *batch_last(const T *x, const Geo &g) {
    idx hp = g.h + 2 * g.ph, wp = g.w + 2 * g.pw;
    T *xt = scratch<T>(4, g.c * hp * wp * g.m);
    if (g.ph || g.pw) std::fill(xt, xt + g.c * hp * wp * g.m, T(0));
    for (idx n = 0; n < g.m; ++n)
        for (idx c = 0; c < g.c; ++c) {
            const T *src = x + (n * g.c + c) * g.h * g.w;
            T *dst = xt + ((c * hp + g.ph) * wp + g.pw) * g.m + n;
            for (idx y = 0; y < g.h; ++y)
                for (idx xx = 0; xx < g.w; ++xx) dst[(y * wp + xx) * g.m] = src[y * g.w + xx];
        }
    return xt;
}

template <typename T>
void im2col_batch(const T *x, T *cols, const Geo &g) {
    // cols[c, p, q, i, j, n] = xt[c, i*sh + p, j*sw + q, n]
    const T *xt = batch_last(x, g);
    idx hp = g.h + 2 * g.ph, wp = g.w + 2 * g.pw;
    T *d = cols;
    for (idx c = 0; c < g.c; ++c)
        for (idx p = 0; p < g.kh; ++p)
            for (idx q = 0; q < g.kw; ++q)
                for (idx i = 0; i < g.oh; ++i) {
                    const T *row = xt + ((c * hp + i * g.sh + p) * wp + q) * g.m;
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
    T *xt = scratch<T>(4, g.c * hp * wp * g.m);
    std::fill(xt, xt + g.c * hp * wp * g.m, T(0));
    const T *s = cols;
    for (idx c = 0; c < g.c; ++c)
        for (idx p = 0; p < g.kh; ++p)
            for (idx q = 0; q < g.kw; ++q)
                for (idx i = 0; i < g.oh; ++i) {
                    T *row = xt + ((c * hp + i * g.sh + p) * wp + q) * g.m;
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
            const T *src = xt + ((c * hp + g.ph) * wp + g.pw) * g.m + n;
            for (idx y = 0; y < g.h; ++y)
                for (idx xx = 0; xx < g.w; ++xx) dst[y * g.w + xx] = src[(y * wp + xx) * g.m];
        }
}

// GEMM result as rows: ybuf (m*OH*OW, F), row r = n*OH*OW + k ("image" order) or k*m + n
// ("batch" order) -> y part (m, F, OH, OW), + bias, then max(0, .) (NaN stays NaN)
template <typename T>
void from_rows_loop(const T *src, T *dst, idx m, idx f, idx hw, const T *b, bool relu, bool batch) {
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

// dy part (m, F, OH, OW) -> (F, columns) in the order of a layout: (F, m, OH*OW) or (F, OH*OW, m)
template <typename T>
void to_layout_loop(const T *src, T *dst, idx m, idx f, idx hw, bool batch) {
    for (idx fi = 0; fi < f; ++fi)
        for (idx n = 0; n < m; ++n) {
            const T *s = src + (n * f + fi) * hw;
            if (batch) {
                T *d = dst + fi * hw * m + n;
                for (idx k = 0; k < hw; ++k) d[k * m] = s[k];
            } else {
                std::memcpy(dst + (fi * m + n) * hw, s, sizeof(T) * hw);
            }
        }
}

Geo geometry(idx n, const std::vector<idx> &xs, const py::tuple &k, const py::tuple &s, const py::tuple &p,
             const py::tuple &out) {
    need(xs.size() == 4, "x must be (N, C, H, W)");
    Geo g{n, xs[1], xs[2], xs[3], k[0].cast<idx>(), k[1].cast<idx>(), s[0].cast<idx>(), s[1].cast<idx>(),
          p[0].cast<idx>(), p[1].cast<idx>(), out[0].cast<idx>(), out[1].cast<idx>()};
    need(g.kh > 0 && g.kw > 0 && g.sh > 0 && g.sw > 0 && g.ph >= 0 && g.pw >= 0 && g.oh > 0 && g.ow > 0,
         "bad convolution geometry");
    need((g.oh - 1) * g.sh + g.kh <= g.h + 2 * g.ph, "OH does not fit the input");
    need((g.ow - 1) * g.sw + g.kw <= g.w + 2 * g.pw, "OW does not fit the input");
    return g;
}

Geo part_geo(Geo g, const std::pair<idx, idx> &pr) {
    g.m = pr.second - pr.first;
    return g;
}

template <typename T>
void im2col(const T *x, T *cols, const Geo &g, bool batch) {
    batch ? im2col_batch(x, cols, g) : im2col_image(x, cols, g);
}

// --- convolution ----------------------------------------------------------------
// w2: the filters as (F, C/groups * KH * KW). Per group g the GEMMs take rows g*kg.. of the
// columns and rows g*fg.. of w2 (kg = C/groups*KH*KW, fg = F/groups).

template <typename T>
void conv_forward_t(const py::array &x, const py::array &w2, const py::object &bias, const py::array &y,
                    const Parts &parts, const Geo &g0, idx groups, bool relu,
                    bool batch) {
    const T *xp = data_of<T>(x, 4, "x");
    const T *wp = data_of<T>(w2, 2, "w2");
    T *yp = data_of<T>(y, 4, "y", true);
    const idx f = w2.shape(0), kg = w2.shape(1), ktot = g0.c * g0.kh * g0.kw;
    need(groups >= 1 && f % groups == 0 && kg * groups == ktot, "w2 does not match the geometry and groups");
    need(y.shape(0) == x.shape(0) && y.shape(1) == f && y.shape(2) == g0.oh && y.shape(3) == g0.ow, "y has the wrong shape");
    check_parts(parts, x.shape(0));
    const T *b = nullptr;
    if (!bias.is_none()) {
        py::array ba = bias.cast<py::array>();
        b = data_of<T>(ba, 1, "bias");
        need(ba.shape(0) == f, "bias must have F elements");
    }
    const idx fg = f / groups, chw = g0.c * g0.h * g0.w, hw = g0.oh * g0.ow;
    py::gil_scoped_release free;
    pool().run(static_cast<idx>(parts.size()), [&](idx i) {
        const Geo g = part_geo(g0, parts[i]);
        const idx ncol = g.m * hw;
        T *c = scratch<T>(1, ktot * ncol);
        im2col(xp + parts[i].first * chw, c, g, batch);
        T *ybuf = scratch<T>(0, ncol * f);                      // y transposed: one row per pixel
        for (idx gi = 0; gi < groups; ++gi)                     // ybuf[:, gF] = cols[gK].T @ w2[gF].T
            gemm<T>(true, true, ncol, fg, kg, c + gi * kg * ncol, ncol, wp + gi * fg * kg, kg, T(0),
                    ybuf + gi * fg, f);
        from_rows_loop(ybuf, yp + parts[i].first * f * hw, g.m, f, hw, b, relu, batch);
    });
}

void conv_forward(py::array x, py::array w2, py::object bias, py::array y, Parts parts,
                  py::tuple k, py::tuple s, py::tuple p, py::tuple out, idx groups, bool relu, bool batch) {
    need(have_blas(), "no BLAS (blas_init)");
    Geo g = geometry(0, dims(x), k, s, p, out);
    is_f64(x) ? conv_forward_t<double>(x, w2, bias, y, parts, g, groups, relu, batch)
              : conv_forward_t<float>(x, w2, bias, y, parts, g, groups, relu, batch);
}

// dwt (groups, kg, fg) = the filters' gradient transposed, per group
template <typename T>
void conv_backward_filter_t(const py::array &dy, const py::array &x,
                            const py::array &dwt, const Parts &parts, const Geo &g0, idx groups, bool batch) {
    const T *dyp = data_of<T>(dy, 4, "dy");
    const T *xp = data_of<T>(x, 4, "x");
    T *out = data_of<T>(dwt, 3, "dwt", true);
    const idx f = dy.shape(1), ktot = g0.c * g0.kh * g0.kw, hw = g0.oh * g0.ow;
    need(groups >= 1 && f % groups == 0 && g0.c % groups == 0, "groups must divide F and C");
    const idx fg = f / groups, kg = ktot / groups, chw = g0.c * g0.h * g0.w;
    need(dwt.shape(0) == groups && dwt.shape(1) == kg && dwt.shape(2) == fg, "dwt must be (groups, kg, fg)");
    need(dy.shape(0) == x.shape(0) && dy.shape(2) == g0.oh && dy.shape(3) == g0.ow, "dy has the wrong shape");
    check_parts(parts, x.shape(0));
    std::vector<std::vector<T>> partial(parts.size());
    py::gil_scoped_release free;
    pool().run(static_cast<idx>(parts.size()), [&](idx i) {
        const Geo g = part_geo(g0, parts[i]);
        const idx ncol = g.m * hw;
        T *c = scratch<T>(1, ktot * ncol);
        im2col(xp + parts[i].first * chw, c, g, batch);
        T *d = scratch<T>(2, f * ncol);
        to_layout_loop(dyp + parts[i].first * f * hw, d, g.m, f, hw, batch);
        partial[i].resize(static_cast<size_t>(groups * kg * fg));
        for (idx gi = 0; gi < groups; ++gi)                     // dwt[g] = cols[gK] @ d[gF].T
            gemm<T>(false, true, kg, fg, ncol, c + gi * kg * ncol, ncol, d + gi * fg * ncol, ncol, T(0),
                    partial[i].data() + gi * kg * fg, fg);
    });
    const idx size = groups * kg * fg;
    std::memcpy(out, partial[0].data(), sizeof(T) * size);
    for (size_t i = 1; i < partial.size(); ++i)
        for (idx k = 0; k < size; ++k) out[k] += partial[i][k];
}

void conv_backward_filter(py::array dy, py::array x, py::array dwt, Parts parts, py::tuple k,
                          py::tuple s, py::tuple p, py::tuple out, idx groups, bool batch) {
    need(have_blas(), "no BLAS (blas_init)");
    Geo g = geometry(0, dims(x), k, s, p, out);
    is_f64(x) ? conv_backward_filter_t<double>(dy, x, dwt, parts, g, groups, batch)
              : conv_backward_filter_t<float>(dy, x, dwt, parts, g, groups, batch);
}

template <typename T>
void conv_backward_data_t(const py::array &dy, const py::array &w2, const py::array &dx, const Parts &parts,
                          const Geo &g0, idx groups, bool batch) {
    const T *dyp = data_of<T>(dy, 4, "dy");
    const T *wp = data_of<T>(w2, 2, "w2");
    T *dxp = data_of<T>(dx, 4, "dx", true);
    const idx f = w2.shape(0), kg = w2.shape(1), ktot = g0.c * g0.kh * g0.kw, hw = g0.oh * g0.ow;
    need(groups >= 1 && f % groups == 0 && kg * groups == ktot, "w2 does not match the geometry and groups");
    need(dy.shape(0) == dx.shape(0) && dy.shape(1) == f && dy.shape(2) == g0.oh && dy.shape(3) == g0.ow,
         "dy has the wrong shape");
    check_parts(parts, dx.shape(0));
    const idx fg = f / groups, chw = g0.c * g0.h * g0.w;
    py::gil_scoped_release free;
    pool().run(static_cast<idx>(parts.size()), [&](idx i) {
        const Geo g = part_geo(g0, parts[i]);
        const idx ncol = g.m * hw;
        T *d = scratch<T>(2, f * ncol), *dcols = scratch<T>(3, ktot * ncol);
        to_layout_loop(dyp + parts[i].first * f * hw, d, g.m, f, hw, batch);
        for (idx gi = 0; gi < groups; ++gi)                     // dcols[gK] = w2[gF].T @ d[gF]
            gemm<T>(true, false, kg, ncol, fg, wp + gi * fg * kg, kg, d + gi * fg * ncol, ncol, T(0),
                    dcols + gi * kg * ncol, ncol);
        T *dxi = dxp + parts[i].first * chw;
        batch ? col2im_batch(dcols, dxi, g) : col2im_image(dcols, dxi, g);
    });
}

void conv_backward_data(py::array dy, py::array w2, py::array dx, Parts parts, py::tuple k, py::tuple s,
                        py::tuple p, py::tuple out, idx groups, bool batch) {
    need(have_blas(), "no BLAS (blas_init)");
    Geo g = geometry(0, dims(dx), k, s, p, out);
    is_f64(dx) ? conv_backward_data_t<double>(dy, w2, dx, parts, g, groups, batch)
               : conv_backward_data_t<float>(dy, w2, dx, parts, g, groups, batch);
}

// --- fully connected: one GEMM, its output rows split into parts -------------------------

// out (m x n) = op(a) op(b) (+ bias per column), op(a) = a or a.T, op(b) likewise; each part is
// a range of out's rows (from the same rows of op(a)) or, by_cols, of its columns (from the same
// columns of op(b): each thread then packs only its share of the larger operand, the weights)
template <typename T>
void gemm_rows_t(const py::array &a, const py::array &b, const py::array &out, bool ta, bool tb,
                 const py::object &bias, const Parts &parts, bool by_cols) {
    const T *ap = data_of<T>(a, 2, "a");
    const T *bp = data_of<T>(b, 2, "b");
    T *op = data_of<T>(out, 2, "out", true);
    const idx m = ta ? a.shape(1) : a.shape(0), k = ta ? a.shape(0) : a.shape(1);
    const idx n = tb ? b.shape(0) : b.shape(1), kb = tb ? b.shape(1) : b.shape(0);
    need(k == kb && out.shape(0) == m && out.shape(1) == n, "a, b and out do not make a matrix product");
    check_parts(parts, by_cols ? n : m);
    const T *bias_p = nullptr;
    if (!bias.is_none()) {
        py::array ba = bias.cast<py::array>();
        bias_p = data_of<T>(ba, 1, "bias");
        need(ba.shape(0) == n, "bias must have one element per output column");
    }
    const idx lda = a.shape(1), ldb = b.shape(1);
    py::gil_scoped_release free;
    pool().run(static_cast<idx>(parts.size()), [&](idx i) {
        const idx p0 = parts[i].first, p1 = parts[i].second;
        const idx r0 = by_cols ? 0 : p0, r1 = by_cols ? m : p1, c0 = by_cols ? p0 : 0, c1 = by_cols ? p1 : n;
        gemm<T>(ta, tb, r1 - r0, c1 - c0, k, ta ? ap + r0 : ap + r0 * lda, lda, tb ? bp + c0 * ldb : bp + c0,
                ldb, T(0), op + r0 * n + c0, n);
        if (bias_p)
            for (idx r = r0; r < r1; ++r)
                for (idx c = c0; c < c1; ++c) op[r * n + c] = op[r * n + c] + bias_p[c];
    });
}

void gemm_rows(py::array a, py::array b, py::array out, bool ta, bool tb, py::object bias, Parts parts,
               bool by_cols) {
    need(have_blas(), "no BLAS (blas_init)");
    is_f64(out) ? gemm_rows_t<double>(a, b, out, ta, tb, bias, parts, by_cols)
                : gemm_rows_t<float>(a, b, out, ta, tb, bias, parts, by_cols);
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
void maxpool_forward_ta(const py::array &x, const py::array &y, const py::object &arg, idx size, idx stride,
                        A none, const Parts &parts) {
    std::vector<idx> xs = dims(x), ys = dims(y);
    need(xs.size() == 4 && ys.size() == 4 && xs[0] == ys[0] && xs[1] == ys[1], "x and y must be (N, C, ., .)");
    need(ys[2] > 0 && ys[3] > 0 && (ys[2] - 1) * stride < xs[2] && (ys[3] - 1) * stride < xs[3],
         "the pooled size does not fit the input");
    check_parts(parts, xs[0]);
    const T *xp = data_of<T>(x, 4, "x");
    T *yp = data_of<T>(y, 4, "y", true);
    A *ap = nullptr;
    if (!arg.is_none()) {
        py::array a = arg.cast<py::array>();
        ap = data_of<A>(a, 4, "arg", true);
        need(a.size() == y.size(), "arg must have y's shape");
    }
    const idx c = xs[1], in_img = c * xs[2] * xs[3], out_img = c * ys[2] * ys[3];
    py::gil_scoped_release free;
    pool().run(static_cast<idx>(parts.size()), [&](idx i) {
        const idx n0 = parts[i].first, m = parts[i].second - n0;
        maxpool_fwd_loop(xp + n0 * in_img, yp + n0 * out_img, ap ? ap + n0 * out_img : nullptr, m * c, xs[2],
                         xs[3], ys[2], ys[3], size, stride, none);
    });
}

// f(T(), A()) with T the float type of `values` and A the offsets' type (int32 or uint8)
template <typename F>
void pool_types(const py::array &values, bool i32, F f) {
    if (is_f64(values))
        i32 ? f(double(), int32_t()) : f(double(), uint8_t());
    else
        i32 ? f(float(), int32_t()) : f(float(), uint8_t());
}

void maxpool_forward(py::array x, py::array y, py::object arg, idx size, idx stride, long none, Parts parts) {
    need(size > 0 && stride > 0, "size and stride must be positive");
    const bool i32 = !arg.is_none() && arg.cast<py::array>().dtype().is(py::dtype::of<int32_t>());
    pool_types(x, i32, [&](auto t, auto a) {
        using A = decltype(a);
        maxpool_forward_ta<decltype(t), A>(x, y, arg, size, stride, static_cast<A>(none), parts);
    });
}

template <typename T, typename A>
void maxpool_backward_ta(const py::array &dy, const py::array &arg, const py::array &dx, idx size, idx stride,
                         A none, const Parts &parts) {
    std::vector<idx> ds = dims(dy), xs = dims(dx);
    need(ds.size() == 4 && xs.size() == 4 && xs[0] == ds[0] && xs[1] == ds[1], "dy and dx must be (N, C, ., .)");
    // the offsets the forward chose lie inside the input (windows start inside it and are clipped)
    need(ds[2] > 0 && ds[3] > 0 && (ds[2] - 1) * stride < xs[2] && (ds[3] - 1) * stride < xs[3],
         "the pooled size does not fit the input");
    check_parts(parts, xs[0]);
    const T *dp = data_of<T>(dy, 4, "dy");
    const A *ap = data_of<A>(arg, 4, "arg");
    T *xp = data_of<T>(dx, 4, "dx", true);
    need(arg.size() == dy.size(), "arg must have dy's shape");
    const idx c = xs[1], in_img = c * xs[2] * xs[3], out_img = c * ds[2] * ds[3];
    py::gil_scoped_release free;
    pool().run(static_cast<idx>(parts.size()), [&](idx i) {
        const idx n0 = parts[i].first, m = parts[i].second - n0;
        maxpool_bwd_loop(dp + n0 * out_img, ap + n0 * out_img, xp + n0 * in_img, m * c, xs[2], xs[3], ds[2],
                         ds[3], size, stride, none);
    });
}

void maxpool_backward(py::array dy, py::array arg, py::array dx, idx size, idx stride, long none, Parts parts) {
    need(size > 0 && stride > 0, "size and stride must be positive");
    pool_types(dx, arg.dtype().is(py::dtype::of<int32_t>()), [&](auto t, auto a) {
        using A = decltype(a);
        maxpool_backward_ta<decltype(t), A>(dy, arg, dx, size, stride, static_cast<A>(none), parts);
    });
}

// --- bias gradient, ReLU backward, SGD --------------------------------------------

// out[f] = sum of dy[n, f, :, :] over n and the pixels: float64 sums per part, added in part order
template <typename T>
void bias_grad_t(const py::array &dy, const py::array &out, const Parts &parts) {
    std::vector<idx> ds = dims(dy);
    need(ds.size() == 4, "dy must be (N, F, OH, OW)");
    const T *d = data_of<T>(dy, 4, "dy");
    double *o = data_of<double>(out, 1, "out", true);
    need(out.shape(0) == ds[1], "out must have F elements");
    check_parts(parts, ds[0]);
    const idx f = ds[1], hw = ds[2] * ds[3];
    std::vector<std::vector<double>> partial(parts.size(), std::vector<double>(static_cast<size_t>(f), 0.0));
    py::gil_scoped_release free;
    pool().run(static_cast<idx>(parts.size()), [&](idx i) {
        double *acc_f = partial[i].data();
        for (idx n = parts[i].first; n < parts[i].second; ++n)
            for (idx fi = 0; fi < f; ++fi) {
                const T *r = d + (n * f + fi) * hw;
                double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};     // eight chains: the additions overlap
                idx k = 0;
                for (; k + 8 <= hw; k += 8)
                    for (int u = 0; u < 8; ++u) acc[u] += r[k + u];
                for (; k < hw; ++k) acc[0] += r[k];
                acc_f[fi] += ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            }
    });
    for (idx fi = 0; fi < f; ++fi) {
        double s = 0;
        for (auto &pv : partial) s += pv[fi];
        o[fi] = s;
    }
}

void bias_grad(py::array dy, py::array out, Parts parts) {
    is_f64(dy) ? bias_grad_t<double>(dy, out, parts) : bias_grad_t<float>(dy, out, parts);
}

template <typename T>
void relu_backward_t(const py::array &dy, const py::array &y, const py::array &dx, const Parts &parts) {
    const T *d = data_of<T>(dy, -1, "dy");
    const T *yp = data_of<T>(y, -1, "y");
    T *o = data_of<T>(dx, -1, "dx", true);
    need(dy.size() == y.size() && dx.size() == y.size(), "dy, y and dx must have one size");
    check_parts(parts, y.size());
    py::gil_scoped_release free;
    pool().run(static_cast<idx>(parts.size()), [&](idx i) {
        for (idx k = parts[i].first; k < parts[i].second; ++k) {   // both loaded: a select, no branch
            const T dv = d[k], yv = yp[k];
            o[k] = yv > T(0) ? dv : T(0);
        }
    });
}

void relu_backward(py::array dy, py::array y, py::array dx, Parts parts) {
    is_f64(y) ? relu_backward_t<double>(dy, y, dx, parts) : relu_backward_t<float>(dy, y, dx, parts);
}

// v = v*momentum - w*(weight_decay*lr) - dw*lr; w += v (each product and difference rounded, in
// this order: reference.sgd_update's bits)
template <typename T>
void sgd_update_t(const py::array &w, const py::array &dw, const py::array &v, double decay, double rate,
                  double mom, const Parts &parts) {
    T *wp = data_of<T>(w, -1, "w", true);
    const T *dp = data_of<T>(dw, -1, "dw");
    T *vp = data_of<T>(v, -1, "v", true);
    need(dw.size() == w.size() && v.size() == w.size(), "w, dw and v must have one size");
    check_parts(parts, w.size());
    const T dec = static_cast<T>(decay), r = static_cast<T>(rate), mo = static_cast<T>(mom);
    py::gil_scoped_release free;
    pool().run(static_cast<idx>(parts.size()), [&](idx i) {
        for (idx k = parts[i].first; k < parts[i].second; ++k) {
            T vi = vp[k] * mo;
            vi = vi - wp[k] * dec;
            vi = vi - dp[k] * r;
            vp[k] = vi;
            wp[k] = wp[k] + vi;
        }
    });
}

void sgd_update(py::array w, py::array dw, py::array v, double decay, double rate, double mom, Parts parts) {
    is_f64(w) ? sgd_update_t<double>(w, dw, v, decay, rate, mom, parts)
              : sgd_update_t<float>(w, dw, v, decay, rate, mom, parts);
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
    m.doc() = "The fast CPU path's inner loops and thread pool (see bindings/cpu_native.cpp)";
    m.attr("API") = 3;      // convnet/cpu_ops.py's _NATIVE_API: a module built from older sources is not used
    m.def("set_threads", [](int n) { pool().resize(n); }, py::arg("n"));
    m.def("get_threads", [] { return pool().threads(); });
    m.def("set_spin", [](double s) { pool().spin = s; }, py::arg("seconds"));
    m.def("blas_init", &blas_init, py::arg("path"));
    m.def("have_blas", &have_blas);
    m.def("conv_forward", &conv_forward, py::arg("x"), py::arg("w2"), py::arg("bias"), py::arg("y"),
          py::arg("parts"), py::arg("kernel"), py::arg("stride"), py::arg("pad"), py::arg("out"), py::arg("groups"),
          py::arg("relu"), py::arg("batch"));
    m.def("conv_backward_filter", &conv_backward_filter, py::arg("dy"), py::arg("x"),
          py::arg("dwt"), py::arg("parts"), py::arg("kernel"), py::arg("stride"), py::arg("pad"), py::arg("out"),
          py::arg("groups"), py::arg("batch"));
    m.def("conv_backward_data", &conv_backward_data, py::arg("dy"), py::arg("w2"), py::arg("dx"), py::arg("parts"),
          py::arg("kernel"), py::arg("stride"), py::arg("pad"), py::arg("out"), py::arg("groups"), py::arg("batch"));
    m.def("gemm_rows", &gemm_rows, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("ta"), py::arg("tb"),
          py::arg("bias"), py::arg("parts"), py::arg("by_cols") = false);
    m.def("maxpool_forward", &maxpool_forward, py::arg("x"), py::arg("y"), py::arg("arg"), py::arg("size"),
          py::arg("stride"), py::arg("none"), py::arg("parts"));
    m.def("maxpool_backward", &maxpool_backward, py::arg("dy"), py::arg("arg"), py::arg("dx"), py::arg("size"),
          py::arg("stride"), py::arg("none"), py::arg("parts"));
    m.def("bias_grad", &bias_grad, py::arg("dy"), py::arg("out"), py::arg("parts"));
    m.def("relu_backward", &relu_backward, py::arg("dy"), py::arg("y"), py::arg("dx"), py::arg("parts"));
    m.def("sgd_update", &sgd_update, py::arg("w"), py::arg("dw"), py::arg("v"), py::arg("decay"), py::arg("rate"),
          py::arg("momentum"), py::arg("parts"));
}
