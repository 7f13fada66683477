"""Fast CPU versions of the ops a training step spends its time in.

Each function here has the name, signature and results of the function of the
same name in convnet.reference (the spec: read it for what an op computes);
the "numpy" backend calls the version here when there is one and the
reference otherwise. Results agree with the reference to rounding (the sums
run in another order); tests/test_cpu_ops.py checks every op against it.
What the fast versions do differently:

- Where convnet._cpu is built (`make`; bindings/cpu_native.cpp), the
  convolutions, the fc GEMMs, max pooling, ReLU backward, the conv bias
  gradient and the SGD update run there: this module checks the arguments,
  allocates the results and cuts the batch into parts, and C++ runs the parts
  on its own thread pool without the GIL, calling the BLAS NumPy loaded
  (_native_blas: threadpoolctl names the library, convnet._cpu finds its
  cblas_sgemm/dgemm). Without the module (or where it finds no BLAS) the NumPy
  code below does the same work; the tests run both. Why C++ rather than
  Python threads: each part changed hands of the GIL several times, each
  handoff woke a sleeping thread (tens of microseconds, more on a virtual
  machine), and two threads ran the fashion net's step only 1.3-1.4x faster
  than one; the pool's threads spin briefly between ops instead (2.0x per op).
- Convolution is im2col + one BLAS GEMM per group, in one of two column
  layouts. "image": columns (C*KH*KW, N, OH, OW), copied from the NCHW input
  in runs of OW elements. "batch": columns (C*KH*KW, OH, OW, N), copied from a
  (C, H, W, N) transpose of the input in runs of OW*N elements; the price is
  transposing the input and the output. Short output rows (conv2 of the
  fashion net: 8) make the image layout's copy slow, so the layout is chosen
  per shape (_conv_layout). Backward-filter makes the columns again rather
  than keeping the forward's (see RECOMPUTE_COLUMNS). The forward and
  backward-filter GEMMs are computed transposed (see GEMM_ORIENTATION).
- The batch is split into contiguous parts (at least two per thread, and
  small enough for a core's L2 cache) that the threads take in turn
  (set_threads; default one per available core). BLAS itself is held to one
  thread (threadpoolctl), so the two levels do not fight over the cores. A
  small fc GEMM is not split (GEMM_PART_MACS): two halves on two threads ran
  slower than the whole on one.
- glibc's malloc is told to keep freed blocks (keep_freed_memory): otherwise
  every large array of a step arrives as fresh pages that fault in.
- ReLU backward: in C++ a select (the reference's rule exactly); in NumPy a
  multiply by the mask (np.where's branch is slow on a random mask) with a
  fall-back to the reference when dy is not finite.
- Max-pool backward takes the first maxima the forward recorded
  (maxpool_forward(..., argmax=True)), or in NumPy without them the window
  maxima from the forward output y, and adds an element's terms in the
  reference's order.
- sgd_update does the reference's arithmetic in the same order (the same
  bits) without full-size temporaries.

Extra keyword arguments (not in the reference): conv2d_forward(..., relu=,
layout=), conv2d_backward_filter(..., layout=), conv2d_backward_data(...,
layout=), maxpool_forward(..., argmax=), maxpool_backward(..., argmax=). How a
layer uses the pooling argmax (convnet/layers.py, Pool on the host):

    y, arg = maxpool_forward(x, size, stride, argmax=True)     # when training
    dx = maxpool_backward(dy, x, y, size, stride, argmax=arg)
"""
import atexit
import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.lib.stride_tricks import as_strided

from convnet import reference

_NATIVE_API = 3          # bindings/cpu_native.cpp's API number
try:
    from convnet import _cpu as _native     # bindings/cpu_native.cpp, built by `make`
    if getattr(_native, "API", None) != _NATIVE_API:
        _native = None                        # built from older sources: `make` rebuilds it
except ImportError:                           # not built: the NumPy loops below do the same
    _native = None
from convnet.reference import (_check_dy, _conv_geometry, _float_array, _pool_geometry, _same_shape,
                               _shape4)

__all__ = [
    "set_threads", "get_threads", "keep_freed_memory",
    "conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter", "conv2d_backward_bias",
    "fc_forward", "fc_backward_data", "fc_backward_filter",
    "maxpool_forward", "maxpool_backward", "relu_forward", "relu_backward", "sgd_update",
]

# --- threads --------------------------------------------------------------

_threads = None          # number of parts work is split into (None: not chosen yet)
_pool = None             # ThreadPoolExecutor for _run with _threads - 1 workers (the caller runs parts too)
_blas_limit = None       # threadpoolctl limiter holding BLAS at one thread
_blas = None             # convnet._cpu's BLAS: None not looked for yet, "" none, else its symbol

# How long convnet._cpu's idle threads spin (yielding the core) before they sleep, so that
# the next op's parts start at once: waking a sleeping thread costs tens of microseconds
# (up to ~100 on a virtual machine), a large part of a small op.
SPIN_SECONDS = 0.002


def _native_blas():
    """True where the convolution and fc GEMMs run in convnet._cpu: it is built and found NumPy's BLAS
    (whose cblas_sgemm/dgemm it calls without the GIL; threadpoolctl names the library)."""
    global _blas
    if _native is None:
        return False
    if _blas is None:
        _blas = ""
        try:
            import threadpoolctl
            for info in threadpoolctl.threadpool_info():
                if info.get("user_api") == "blas" and info.get("filepath"):
                    _blas = _native.blas_init(info["filepath"])
                    if _blas:
                        break
        except ImportError:
            pass
    return bool(_blas)


def _default_threads():
    """CONVNET_CPU_THREADS, else one per available core (1 where threadpoolctl is missing)."""
    env = os.environ.get("CONVNET_CPU_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"CONVNET_CPU_THREADS must be an integer >= 1, got {env!r}") from None
        if n < 1:
            raise ValueError(f"CONVNET_CPU_THREADS must be an integer >= 1, got {env!r}")
        return n
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return 1
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not Linux
        return os.cpu_count() or 1


def set_threads(n):
    """Split each op over n threads (n >= 1; 1: everything in the calling thread).

    BLAS is held at one thread either way (where threadpoolctl is installed): the ops
    split their own work, and a multi-threaded OpenBLAS on a loaded machine is far
    slower (the fashion net's step with one op thread, load average ~15: 290-650 ms
    with OpenBLAS's 2 threads, 50-58 ms with one; benchmarks/cpu_throughput.py).
    """
    global _threads, _pool, _blas_limit
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"threads must be an int >= 1, got {n!r}")
    try:
        import threadpoolctl
    except ImportError:
        if n > 1:
            raise ImportError("splitting ops over threads needs threadpoolctl (pip install threadpoolctl) "
                              "to hold BLAS at one thread") from None
        threadpoolctl = None
    if _threads is None:
        keep_freed_memory()
    if _pool is not None:
        _pool.shutdown()
        _pool = None
    if _native is not None:
        _native.set_spin(SPIN_SECONDS)
        _native.set_threads(int(n))
    if _blas_limit is not None:
        _blas_limit.restore_original_limits()
        _blas_limit = None
    _threads = int(n)
    if threadpoolctl is not None:
        _blas_limit = threadpoolctl.threadpool_limits(limits=1, user_api="blas")


@atexit.register
def _stop_workers():
    """Worker threads end before the interpreter does."""
    global _pool
    if _pool is not None:
        _pool.shutdown()
        _pool = None
    if _native is not None:
        _native.set_threads(1)


def get_threads():
    """The number of threads ops are split over (chosen on first use: CONVNET_CPU_THREADS, else one per core)."""
    if _threads is None:
        set_threads(_default_threads())
    return _threads


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3       # glibc's mallopt parameters (malloc.h)


def keep_freed_memory():
    """Make glibc's malloc keep freed blocks of up to 32 MiB for reuse instead of returning them
    to the kernel. Returns whether it could (False where the C library is not glibc).

    With glibc's defaults every multi-megabyte array a step allocates arrives as fresh pages
    that fault in on first touch: measured, 2,600 page faults and 10.6 ms for one fashion
    conv1 forward whose work takes 2.2 ms. The cost is that the process keeps its peak heap.
    Process-wide; called by the first set_threads() (or get_threads()).
    """
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # M_MMAP_THRESHOLD's maximum on 64-bit glibc is 32 MiB; setting it fixes the trim threshold too,
    # so set that as well (well above the largest step's working set).
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


PARTS_PER_THREAD = 2     # parts a split op is cut into per thread, at least (see _run)
PART_BYTES = 1 << 20     # and parts small enough that their work stays in a core's L2 cache


def _parts(n, minimum=1, item_bytes=0):
    """[(start, stop)]: range(n) in contiguous parts of at least `minimum` items each: at least
    PARTS_PER_THREAD per thread (none with one thread), and enough that no part's items
    take more than PART_BYTES at `item_bytes` each (one part when n is small).

    Why the cache size: fashion conv1's GEMM (24 x 25 times 25 x 576 per image) takes
    10-13 us an image on 4-8 images at a time but 26 us on all 64 at once. The sum of
    the fastest of 40 runs of 8 conv, ReLU and pool ops of the fashion net (one thread,
    loaded 2-core AMD EPYC with 2 MiB L2 per core): unsplit 28.2 and 24.5 ms, 1 MiB
    parts 25.0 and 21.8 ms in the same two runs; in two later runs 512 KiB 24.1 and
    23.1, 1 MiB 20.8 and 21.6, 2 MiB 20.6 and 19.2 ms. (Pooling is not split by size:
    it got slower.) With the ops in convnet._cpu, the whole 2-thread step on a quiet 2-core
    Xeon (2 MiB L2 per core), six interleaved rounds of 100 steps: 1 MiB parts 9.2-9.7 ms,
    2 MiB 10.2-10.5 ms.
    """
    threads = get_threads()
    k = 1 if threads == 1 else PARTS_PER_THREAD * threads
    k = max(k, -(-n * item_bytes // PART_BYTES))
    k = max(1, min(k, n // max(minimum, 1)))
    edges = [n * i // k for i in range(k + 1)]
    return [(edges[i], edges[i + 1]) for i in range(k)]


GEMM_PART_MACS = 2_000_000        # a fully connected GEMM's parts: at least this many multiply-adds
GEMM_PART_MACS_PY = 8_000_000     # the same for the NumPy fallback's Python threads


def _gemm_parts(n, macs_per_item, minimum):
    """A fully connected GEMM over n rows or columns cut into at most one part per thread, none
    under GEMM_PART_MACS multiply-adds (one part for small layers).

    One part per thread, not more: each part packs its share of the weights again. The
    fashion net's fc3 (64 x 768 x 256, 2-core Xeon, OpenBLAS at one thread) on convnet._cpu's
    pool: forward 251 us in one part, 142 in two column halves, 166 in four, 194 in two row
    halves; backward-data 184, 116 in two column halves; backward-filter 186, 107 in two row
    halves. From Python threads (the fallback) splitting did not pay at this size: forward
    233 us in one part, 286 in two halves.
    """
    limit = GEMM_PART_MACS if _native_blas() else GEMM_PART_MACS_PY
    k = max(1, min(get_threads(), int(n * macs_per_item // limit), n // max(minimum, 1)))
    edges = [n * i // k for i in range(k + 1)]
    return [(edges[i], edges[i + 1]) for i in range(k)]


def _QUIET():
    """No floating-point warnings from inside an op: BLAS-backed np.matmul warns on NaN or inf
    where the reference's np.dot and tensordot do not (the training loop checks the loss)."""
    return np.errstate(invalid="ignore", over="ignore")


def _run(fn, parts):
    """[fn(*part) for part in parts], run by this thread and the workers together.

    Each thread takes the next part not yet taken until none is left, and this thread
    returns as soon as every part is done: a worker that the OS deschedules (a loaded
    machine) leaves its share to the others instead of holding up the op. That is why
    there are more parts than threads. A worker that wakes after the op is over finds
    nothing left to take.
    """
    if len(parts) == 1 or _threads == 1:
        with _QUIET():
            return [fn(*p) for p in parts]
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads - 1, thread_name_prefix="convnet-cpu")
    results = [None] * len(parts)
    errors = []
    taken = itertools.count()            # next() is atomic under the GIL
    left = [len(parts)]
    lock = threading.Lock()
    finished = threading.Event()

    def drain():
        for i in taken:
            if i >= len(parts):
                return
            try:
                with _QUIET():
                    results[i] = fn(*parts[i])
            except BaseException as e:   # re-raised in the calling thread
                errors.append(e)
            with lock:
                left[0] -= 1
                if not left[0]:
                    finished.set()

    for _ in range(min(_threads, len(parts)) - 1):
        _pool.submit(drain)
    drain()
    finished.wait()
    if errors:
        raise errors[0]
    return results


# --- convolution ----------------------------------------------------------

LAYOUTS = ("image", "batch")


def _conv_layout(x_shape, w_shape, out):
    """"batch" where the image layout's im2col would copy many short rows, else "image".

    Cost model (measured with NumPy on a 2-core AMD EPYC, float32): the image layout's
    im2col pays about 6 ns per contiguous run of OW elements it copies (C*KH*KW*OH runs
    per image); the batch layout instead transposes the input and the output at about
    1 ns an element (C*H*W + F*OH*OW per image). fashion conv1 (C=1, OW=24) -> image,
    fashion conv2 (C=24, OW=8) -> batch.
    """
    _, c, h, w = x_shape
    f, _, kh, kw = w_shape
    oh, ow = out
    return "batch" if 6 * c * kh * kw * oh > c * h * w + f * oh * ow else "image"


def _check_layout(layout, x_shape, w_shape, out):
    if layout is None:
        return _conv_layout(x_shape, w_shape, out)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)} or None, got {layout!r}")
    return layout


def _padded_batch_last(x, pad):
    """x (n, C, H, W) -> (C, H + 2ph, W + 2pw, n), zero border: the batch-innermost image."""
    n, c, h, w = x.shape
    ph, pw = pad
    if not ph and not pw:
        return np.ascontiguousarray(x.transpose(1, 2, 3, 0))
    xt = np.zeros((c, h + 2 * ph, w + 2 * pw, n), dtype=x.dtype)
    xt[:, ph:ph + h, pw:pw + w] = x.transpose(1, 2, 3, 0)
    return xt


def _columns(x, kernel, stride, pad, out, layout):
    """im2col of x (n, C, H, W): (C*KH*KW, OH*OW*n) in `layout` (rows ordered (c, p, q) like w)."""
    n, c = x.shape[:2]
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out
    if layout == "batch":                                   # cols[c, p, q, i, j, n]
        xt = _padded_batch_last(x, pad)
        s0, s1, s2, s3 = xt.strides
        view = as_strided(xt, (c, kh, kw, oh, ow, n), (s0, s1, s2, s1 * sh, s2 * sw, s3), writeable=False)
    else:                                                   # cols[c, p, q, n, i, j]
        ph, pw = pad
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        s0, s1, s2, s3 = xp.strides
        view = as_strided(xp, (c, kh, kw, n, oh, ow), (s1, s2, s3, s0, s2 * sh, s3 * sw), writeable=False)
    cols = np.empty(view.shape, dtype=x.dtype)
    np.copyto(cols, view)
    return cols.reshape(c * kh * kw, -1)


def _to_layout(dy, layout):
    """dy (n, F, OH, OW) -> (F, OH*OW*n) in the columns' order of `layout`."""
    n, f = dy.shape[:2]
    d = dy.reshape(n, f, -1)
    d = d.transpose(1, 2, 0) if layout == "batch" else d.transpose(1, 0, 2)
    return np.ascontiguousarray(d).reshape(f, -1)


def _from_rows(ybuf, out, layout, b, relu):
    """ybuf (OH*OW*n, F): the GEMM's result as one row per output pixel, in the columns' order
    of `layout` -> out (n, F, OH, OW), + b, then max(0, .) if relu."""
    n, f = out.shape[:2]
    src = ybuf.reshape(-1, n, f).transpose(1, 2, 0) if layout == "batch" else \
        ybuf.reshape(n, -1, f).transpose(0, 2, 1)
    dst = out.reshape(n, f, -1)
    if b is None:
        np.copyto(dst, src)
    else:
        np.add(src, b[:, None], out=dst)
    if relu:
        np.maximum(dst, dst.dtype.type(0), out=dst)


# GEMM_ORIENTATION: the forward and backward-filter GEMMs are computed transposed, with the
# columns on the left (y.T = cols.T @ w.T, dw.T = cols @ d.T): with few filters (F = 24-48)
# OpenBLAS runs them faster that way round (one thread, 2-core Xeon: fashion conv2's forward
# 206 -> 223 GFLOP/s, backward-filter 169 -> 200-234, conv1's forward 107 -> 147).
# Backward-data's GEMM would gain too (176 -> 259), but adding rows of the transposed
# columns back into the image (runs of KW elements) cost more than that gain.


# RECOMPUTE_COLUMNS: backward-filter makes its im2col columns again, part by part, instead of
# keeping the forward's. Kept, a step's columns (9.8 MB for fashion conv2 at batch 64) go out
# to memory and come back; made again, each 1 MiB part is written and read while it is in the
# core's L2 cache. The whole fashion step (2-core Xeon, six interleaved rounds of 100 steps):
# 2 threads 9.76 -> 9.25 ms, 1 thread 18.10 -> 16.31 ms. In the NumPy fallback it made no
# difference (one thread, three rounds: 23.7-25.8 ms kept, 23.7-24.3 made again).


def conv2d_forward(x, w, b=None, stride=1, pad=0, groups=1, relu=False, layout=None):
    """reference.conv2d_forward; relu=True returns max(0, y) (= relu_forward of the result).

    layout: "image", "batch" or None (chosen per shape).
    """
    x = _float_array(x, "x", 4)
    w = _float_array(w, "w", 4)
    s, p, groups, out = _conv_geometry(x.shape, w.shape, stride, pad, groups)
    if b is not None:
        b = _float_array(b, "b", 1)
        if b.shape != (w.shape[0],):
            raise ValueError(f"bias must have shape ({w.shape[0]},), got {b.shape}")
    if not isinstance(relu, (bool, np.bool_)):
        raise TypeError(f"relu must be a bool, got {relu!r}")
    layout = _check_layout(layout, x.shape, w.shape, out)
    n = x.shape[0]
    f, cg, kh, kw = w.shape
    dt = np.result_type(x, w)
    x, w = x.astype(dt, copy=False), w.astype(dt, copy=False)
    y = np.empty((n, f) + out, dtype=dt)
    if n == 0 or y.size == 0:
        return reference.conv2d_forward(x, w, b, stride, pad, groups) if not relu else \
            np.maximum(reference.conv2d_forward(x, w, b, stride, pad, groups), dt.type(0))
    fg, kg = f // groups, cg * kh * kw
    c_all = x.shape[1]
    w2 = w.reshape(f, kg)
    parts = _parts(n, item_bytes=c_all * kh * kw * out[0] * out[1] * dt.itemsize)
    if _native_blas():
        _native.conv_forward(np.ascontiguousarray(x), np.ascontiguousarray(w2), None if b is None else
                             np.ascontiguousarray(b, dtype=dt), y, parts, (kh, kw), tuple(s), tuple(p),
                             tuple(out), groups, bool(relu), layout == "batch")
        return y

    def part(n0, n1):
        cols = _columns(x[n0:n1], (kh, kw), s, p, out, layout)
        ybuf = np.empty((cols.shape[1], f), dtype=dt)     # y transposed: see GEMM_ORIENTATION
        for g in range(groups):
            np.matmul(cols[g * kg:(g + 1) * kg].T, w2[g * fg:(g + 1) * fg].T, out=ybuf[:, g * fg:(g + 1) * fg])
        _from_rows(ybuf, y[n0:n1], layout, b, relu)

    _run(part, parts)
    return y


def conv2d_backward_filter(dy, x, w_shape, stride=1, pad=0, groups=1, layout=None):
    """reference.conv2d_backward_filter (the columns made again: see RECOMPUTE_COLUMNS)."""
    dy = _float_array(dy, "dy", 4)
    x = _float_array(x, "x", 4)
    w_shape = _shape4(w_shape, "w_shape")
    s, p, groups, out = _conv_geometry(x.shape, w_shape, stride, pad, groups)
    f, cg, kh, kw = w_shape
    _check_dy(dy, (x.shape[0],) + (f,) + out, f"input {x.shape} with weight shape {w_shape}")
    n = x.shape[0]
    dt = np.result_type(dy, x)
    if n == 0 or dy.size == 0:
        return reference.conv2d_backward_filter(dy, x, w_shape, stride, pad, groups)
    parts = _parts(n, item_bytes=x.shape[1] * kh * kw * out[0] * out[1] * dt.itemsize)
    layout = _check_layout(layout, x.shape, w_shape, out)
    fg, kg = f // groups, cg * kh * kw
    if _native_blas():
        dwt = np.empty((groups, kg, fg), dtype=dt)
        _native.conv_backward_filter(np.ascontiguousarray(dy, dtype=dt), np.ascontiguousarray(x, dtype=dt), dwt, parts, (kh, kw), tuple(s), tuple(p), tuple(out), groups,
                                     layout == "batch")
        return np.ascontiguousarray(dwt.transpose(0, 2, 1)).reshape(w_shape)

    def part(n0, n1):
        c = _columns(x[n0:n1], (kh, kw), s, p, out, layout)
        d = _to_layout(dy[n0:n1], layout)
        dwt = np.empty((groups, kg, fg), dtype=np.result_type(d, c))      # dw transposed, per group
        for g in range(groups):
            np.matmul(c[g * kg:(g + 1) * kg], d[g * fg:(g + 1) * fg].T, out=dwt[g])
        return dwt

    partial = _run(part, parts)
    dwt = partial[0]
    for more in partial[1:]:
        dwt += more
    return np.ascontiguousarray(dwt.transpose(0, 2, 1), dtype=dt).reshape(w_shape)


def conv2d_backward_data(dy, w, x_shape, stride=1, pad=0, groups=1, layout=None):
    """reference.conv2d_backward_data: GEMM into columns, then col2im."""
    dy = _float_array(dy, "dy", 4)
    w = _float_array(w, "w", 4)
    n, c, h, wd = _shape4(x_shape, "x_shape")
    (sh, sw), (ph, pw), groups, out = _conv_geometry((n, c, h, wd), w.shape, stride, pad, groups)
    f, cg, kh, kw = w.shape
    oh, ow = out
    _check_dy(dy, (n, f) + out, f"x_shape {(n, c, h, wd)} with weight {w.shape}")
    layout = _check_layout(layout, (n, c, h, wd), w.shape, out)
    dt = np.result_type(dy, w)
    if n == 0 or dy.size == 0 or c * h * wd == 0:
        return reference.conv2d_backward_data(dy, w, x_shape, stride, pad, groups)
    dy, w = dy.astype(dt, copy=False), w.astype(dt, copy=False)
    fg, kg = f // groups, cg * kh * kw
    w2 = w.reshape(f, kg)
    dx = np.empty((n, c, h, wd), dtype=dt)
    rows = slice(0, sh * (oh - 1) + 1, sh)
    colsl = slice(0, sw * (ow - 1) + 1, sw)
    parts = _parts(n, item_bytes=c * kh * kw * oh * ow * dt.itemsize)
    if _native_blas():
        _native.conv_backward_data(np.ascontiguousarray(dy), np.ascontiguousarray(w2), dx, parts, (kh, kw), (sh, sw),
                                   (ph, pw), out, groups, layout == "batch")
        return dx

    def part(n0, n1):
        m = n1 - n0
        d = _to_layout(dy[n0:n1], layout)
        dcols = np.empty((c * kg // cg, d.shape[1]), dtype=dt)        # (C*KH*KW, OH*OW*m)
        for g in range(groups):
            np.matmul(w2[g * fg:(g + 1) * fg].T, d[g * fg:(g + 1) * fg], out=dcols[g * kg:(g + 1) * kg])
        if layout == "batch":
            dcols = dcols.reshape(c, kh, kw, oh, ow, m)
            dxp = np.zeros((c, h + 2 * ph, wd + 2 * pw, m), dtype=dt)
            for p in range(kh):
                for q in range(kw):
                    dxp[:, p:, q:][:, rows, colsl] += dcols[:, p, q]
            np.copyto(dx[n0:n1], dxp[:, ph:ph + h, pw:pw + wd].transpose(3, 0, 1, 2))
        else:
            dcols = dcols.reshape(c, kh, kw, m, oh, ow)
            dxp = np.zeros((m, c, h + 2 * ph, wd + 2 * pw), dtype=dt)
            for p in range(kh):
                for q in range(kw):
                    dxp[:, :, p:, q:][:, :, rows, colsl] += dcols[:, p, q].transpose(1, 0, 2, 3)
            np.copyto(dx[n0:n1], dxp[:, :, ph:ph + h, pw:pw + wd])

    _run(part, parts)
    return dx


def conv2d_backward_bias(dy):
    """reference.conv2d_backward_bias: the sum over (n, i, j); natively per part in float64, else as
    one contiguous row sum then a column sum."""
    dy = _float_array(dy, "dy", 4)
    n, f = dy.shape[:2]
    if _native is not None and dy.size:             # per part in float64, the parts added
        acc = np.empty(f, dtype=np.float64)
        _native.bias_grad(np.ascontiguousarray(dy), acc, _parts(n, item_bytes=dy[0].nbytes))
        return acc.astype(dy.dtype)
    return dy.reshape(n, f, -1).sum(axis=2).sum(axis=0)


# --- fully connected ------------------------------------------------------

def fc_forward(x, w, b=None):
    """reference.fc_forward, the batch split over the threads."""
    x = _float_array(x, "x (reshape activations to (N, features))", 2)
    w = _float_array(w, "w", 2)
    if b is not None:
        b = _float_array(b, "b", 1)
    if x.shape[1] != w.shape[1] or x.shape[0] < 2 or (b is not None and b.shape != (w.shape[0],)):
        return reference.fc_forward(x, w, b)        # its checks and messages; tiny batches
    y = np.empty((x.shape[0], w.shape[0]), dtype=np.result_type(x, w))
    if _native_blas():
        dt = y.dtype
        _native.gemm_rows(np.ascontiguousarray(x, dtype=dt), np.ascontiguousarray(w, dtype=dt), y, False, True,
                          None if b is None else np.ascontiguousarray(b, dtype=dt),
                          _gemm_parts(w.shape[0], x.size, 8), by_cols=True)
        return y
    wt = w.T

    def part(n0, n1):
        np.matmul(x[n0:n1], wt, out=y[n0:n1])
        if b is not None:
            y[n0:n1] += b

    _run(part, _gemm_parts(x.shape[0], w.size, 16))
    return y


def fc_backward_data(dy, w):
    """reference.fc_backward_data, the batch split over the threads."""
    dy = _float_array(dy, "dy", 2)
    w = _float_array(w, "w", 2)
    if dy.shape[1] != w.shape[0] or dy.shape[0] < 2:
        return reference.fc_backward_data(dy, w)
    dx = np.empty((dy.shape[0], w.shape[1]), dtype=np.result_type(dy, w))
    if _native_blas():
        dt = dx.dtype
        _native.gemm_rows(np.ascontiguousarray(dy, dtype=dt), np.ascontiguousarray(w, dtype=dt), dx, False, False,
                          None, _gemm_parts(w.shape[1], dy.size, 8), by_cols=True)
        return dx
    _run(lambda n0, n1: np.matmul(dy[n0:n1], w, out=dx[n0:n1]), _gemm_parts(dy.shape[0], w.size, 16))
    return dx


def fc_backward_filter(dy, x):
    """reference.fc_backward_filter, the output rows split over the threads."""
    dy = _float_array(dy, "dy", 2)
    x = _float_array(x, "x", 2)
    if dy.shape[0] != x.shape[0] or dy.shape[1] < 2:
        return reference.fc_backward_filter(dy, x)
    dw = np.empty((dy.shape[1], x.shape[1]), dtype=np.result_type(dy, x))
    if _native_blas():
        dt = dw.dtype
        _native.gemm_rows(np.ascontiguousarray(dy, dtype=dt), np.ascontiguousarray(x, dtype=dt), dw, True, False,
                          None, _gemm_parts(dy.shape[1], x.size, 8))
        return dw
    _run(lambda f0, f1: np.matmul(dy[:, f0:f1].T, x, out=dw[f0:f1]), _gemm_parts(dy.shape[1], x.size, 8))
    return dw


# --- activations ----------------------------------------------------------

def _flat_parts(size, itemsize):
    return _parts(size, 1 << 14, item_bytes=3 * itemsize)


def relu_forward(x):
    """reference.relu_forward, split over the threads."""
    x = _float_array(x, "x")
    y = np.empty_like(x, order="C")
    xf, yf = np.ascontiguousarray(x).reshape(-1), y.reshape(-1)
    zero = x.dtype.type(0)
    _run(lambda i0, i1: np.maximum(xf[i0:i1], zero, out=yf[i0:i1]), _flat_parts(xf.size, x.itemsize))
    return y


def relu_backward(dy, y):
    """reference.relu_backward: dy * (y > 0), or the reference itself where dy is not finite."""
    dy, y = _float_array(dy, "dy"), _float_array(y, "y")
    _same_shape(dy, y, "dy", "y")
    dyf = np.ascontiguousarray(dy).reshape(-1)
    yf = np.ascontiguousarray(y).reshape(-1)
    dx = np.empty(dy.shape, dtype=dy.dtype)
    dxf = dx.reshape(-1)
    zero = y.dtype.type(0)
    if _native is not None:         # exactly the reference's rule: no product, so no NaN from 0 * inf
        yf = yf.astype(dyf.dtype, copy=False)       # (y > 0 is the same in either precision)
        _native.relu_backward(dyf, yf, dxf, _flat_parts(dyf.size, dy.itemsize))
        return dx

    def part(i0, i1):
        np.multiply(dyf[i0:i1], np.greater(yf[i0:i1], zero), out=dxf[i0:i1])
        return math.isfinite(dxf[i0:i1].sum())      # NaN or inf: dy had a non-finite value (or a huge one)

    if not all(_run(part, _flat_parts(dyf.size, dy.itemsize))):
        return reference.relu_backward(dy, y)
    return dx


# --- max pooling ----------------------------------------------------------

def _pool_views(a, size, stride, out):
    """{(p, q): a[:, :, p + i*stride, q + j*stride] for i < OH, j < OW}, as views."""
    oh, ow = out
    return {(p, q): a[:, :, p:p + stride * (oh - 1) + 1:stride, q:q + stride * (ow - 1) + 1:stride]
            for p in range(size) for q in range(size)}


def _pool_input(x, size, stride, out, hp, wp):
    """x itself when every window lies inside it, else x padded with -inf to (hp, wp)."""
    n, c, h, w = x.shape
    if (hp, wp) == (h, w):
        return x
    xp = np.full((n, c, hp, wp), -np.inf, dtype=x.dtype)
    xp[:, :, :h, :w] = x
    return xp


NO_MAXIMUM = 255          # argmax (uint8) of a window whose maximum is NaN: the reference gives it no gradient


def _argmax_dtype(size):
    return np.uint8 if size * size < NO_MAXIMUM else np.int32


def _no_maximum(dtype):
    """The argmax of a NaN window: 255 in uint8 (offsets < 255), -1 in int32 (where 255 is an offset)."""
    return NO_MAXIMUM if np.dtype(dtype) == np.uint8 else -1


def maxpool_forward(x, size=3, stride=2, argmax=False):
    """reference.maxpool_forward: no padded copy when no window is clipped; batch split over the threads.

    argmax=True returns (y, arg): arg (N, C, OH, OW) holds p*size + q of each window's first
    maximal element in row-major order (_no_maximum(arg.dtype) where the window's maximum is NaN), for
    maxpool_backward(..., argmax=arg) to use instead of comparing x with y again.
    """
    x = _float_array(x, "x", 4)
    out, (hp, wp) = _pool_geometry(x.shape, size, stride)
    if not isinstance(argmax, (bool, np.bool_)):
        raise TypeError(f"argmax must be a bool, got {argmax!r}")
    n, c = x.shape[:2]
    y = np.empty((n, c) + out, dtype=x.dtype)
    arg = np.zeros(y.shape, dtype=_argmax_dtype(size)) if argmax else None
    if _native is not None:
        xc = np.ascontiguousarray(x)
        if y.size:
            _native.maxpool_forward(xc, y, arg, size, stride, _no_maximum(_argmax_dtype(size)), _parts(n))
        return (y, arg) if argmax else y

    def part(n0, n1):
        views = _pool_views(_pool_input(x[n0:n1], size, stride, out, hp, wp), size, stride, out)
        yp = y[n0:n1]
        np.copyto(yp, views[0, 0])
        if argmax:
            ap = arg[n0:n1]
            gt = np.empty(yp.shape, dtype=bool)
            k = np.empty(yp.shape, dtype=ap.dtype)
        for (p, q), v in views.items():
            if (p, q) == (0, 0):
                continue
            if argmax:          # offsets rise, so max(arg, offset if strictly larger) keeps the first maximum
                np.greater(v, yp, out=gt)
                np.multiply(gt, k.dtype.type(p * size + q), out=k)
                np.maximum(ap, k, out=ap)
            np.maximum(yp, v, out=yp)
        if argmax:
            nan = np.isnan(yp)
            if nan.any():
                ap[nan] = _no_maximum(ap.dtype)

    if y.size:
        _run(part, _parts(n))
    return (y, arg) if argmax else y


def maxpool_backward(dy, x, y, size=3, stride=2, argmax=None):
    """reference.maxpool_backward, with the window maxima taken from y (the forward output for x),
    or the first maxima from argmax (maxpool_forward(..., argmax=True) of this x).

    Offsets in row-major order claim the windows whose maximum they hold and that no
    earlier offset claimed (ties -> first maximum); overlapping windows add.
    """
    dy = _float_array(dy, "dy", 4)
    x = _float_array(x, "x", 4)
    y = _float_array(y, "y", 4)
    out, (hp, wp) = _pool_geometry(x.shape, size, stride)
    expected = x.shape[:2] + out
    if dy.shape != expected or y.shape != expected:
        raise ValueError(f"dy {dy.shape} and y {y.shape} must have the pooled shape {expected}")
    if argmax is not None and (not isinstance(argmax, np.ndarray) or argmax.shape != expected
                               or argmax.dtype != _argmax_dtype(size)):
        raise ValueError(f"argmax must be the {_argmax_dtype(size).__name__} array {expected} that "
                         f"maxpool_forward(x, {size}, {stride}, argmax=True) returned")
    n, c, h, w = x.shape
    dt = np.result_type(dy, x)
    dx = np.empty((n, c, h, w), dtype=dt)
    tiled = size == stride and (hp, wp) == (h, w)     # windows tile x: each element in exactly one
    if _native is not None and argmax is not None:
        dyc = np.ascontiguousarray(dy, dtype=dt)
        arc = np.ascontiguousarray(argmax)
        if dx.size:
            _native.maxpool_backward(dyc, arc, dx, size, stride, _no_maximum(arc.dtype), _parts(n))
        return dx

    def part(n0, n1):
        ys, dys = y[n0:n1], dy[n0:n1]
        if tiled:
            dxp = dx[n0:n1]
        else:
            dxp = np.zeros((n1 - n0, c, hp, wp), dtype=dt)
        dv = _pool_views(dxp, size, stride, out)
        hit = np.empty(ys.shape, dtype=bool)
        if argmax is None:
            xv = _pool_views(_pool_input(x[n0:n1], size, stride, out, hp, wp), size, stride, out)
            taken = np.zeros(ys.shape, dtype=bool)
        last = (size - 1, size - 1)
        for p, q in dv:
            if argmax is None:
                np.equal(xv[p, q], ys, out=hit)
                np.greater(hit, taken, out=hit)          # hit and not taken
                if (p, q) != last:
                    taken |= hit
            else:
                np.equal(argmax[n0:n1], argmax.dtype.type(p * size + q), out=hit)
            if tiled:
                np.multiply(dys, hit, out=dv[p, q])
            else:
                dv[p, q] += dys * hit
        if not tiled:
            np.copyto(dx[n0:n1], dxp[:, :, :h, :w])

    if dx.size:
        _run(part, _parts(n))
    return dx


# --- SGD ------------------------------------------------------------------

def sgd_update(w, dw, v, lr, momentum=0.9, weight_decay=0.0005):
    """reference.sgd_update, in place, with the same arithmetic in the same order (so the same
    bits), without full-size temporaries and split over the threads for large tensors."""
    if not (isinstance(w, np.ndarray) and isinstance(v, np.ndarray) and isinstance(dw, np.ndarray)
            and w.dtype == v.dtype == dw.dtype and w.dtype.kind == "f" and w.shape == dw.shape == v.shape
            and w.flags.c_contiguous and v.flags.c_contiguous and dw.flags.c_contiguous
            and all(isinstance(a, (int, float, np.integer, np.floating)) and math.isfinite(a)
                    for a in (lr, momentum, weight_decay))):
        return reference.sgd_update(w, dw, v, lr, momentum, weight_decay)     # its checks and messages
    dt = v.dtype.type
    wf, dwf, vf = w.reshape(-1), dw.reshape(-1), v.reshape(-1)
    decay, rate, mom = dt(weight_decay * lr), dt(lr), dt(momentum)

    if _native is not None:
        _native.sgd_update(wf, dwf, vf, float(decay), float(rate), float(mom), _parts(wf.size, 1 << 18))
        return

    def part(i0, i1):
        vp, wp = vf[i0:i1], wf[i0:i1]
        tmp = np.multiply(wp, decay)
        vp *= mom
        vp -= tmp
        np.multiply(dwf[i0:i1], rate, out=tmp)
        vp -= tmp
        wp += vp

    _run(part, _parts(wf.size, 1 << 18))
