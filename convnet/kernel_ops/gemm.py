"""Launchers for kernels/gemm.cu: the fully connected layers on the SGEMM kernels.

Same names and signatures as convnet.reference, plus `version=` (None = the
shipped version, SHIPPED below):
    fc_forward(x, w, b)      = x @ w.T + b   (NT GEMM, then fc_bias_add)
    fc_backward_data(dy, w)  = dy @ w        (NN)
    fc_backward_filter(dy, x) = dy.T @ x     (TN)
    fc_backward_bias(dy)     = dy.sum(0)     (fc_bias_grad)
x (N, in), w (out, in), b (out,), dy (N, out); all float32, row-major.
`sgemm(a, b, trans_a, trans_b, alpha, beta, c)` is the general form.
NumPy arrays run on the CPU emulation, CuPy arrays on their GPU.
"""
import numpy as np

from convnet import checking
from convnet import reference as R
from convnet.kernel_ops._common import array_module, check_float32, check_same_device

# The version each op ships (the one place that names it): the SGEMM kernel
# for the first three, the column-sum kernel for the bias gradient.
SHIPPED = {
    "fc_forward": "v2",
    "fc_backward_data": "v2",
    "fc_backward_filter": "v2",
    "fc_backward_bias": "v1",
}
SGEMM_VERSIONS = ("v1", "v2")
BIAS_GRAD_VERSIONS = ("v1",)

V1_BLOCK = (16, 16)
V2_TILE_M, V2_TILE_N, V2_THREADS = 64, 64, 256    # gemm.cu's gemm::BM, BN, V2_THREADS
THREADS = 256


def _version(op, version, kept):
    v = SHIPPED[op] if version is None else version
    if v not in kept:
        raise ValueError(f"{op}: unknown version {version!r}; kept versions are {', '.join(kept)}")
    return v


def _array(a, name, ndim, op="sgemm"):
    return check_float32(op, name, a, ndim, contiguous=False)


def _module(*arrays, op="sgemm"):
    check_same_device(op, **{f"array {i}": a for i, a in enumerate(arrays)})
    return array_module(arrays[0])


def _cdiv(a, b):
    return -(-a // b)


def _get(name, like):
    from convnet import kernels
    return kernels.get_function(name, like=like)


def sgemm(a, b, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, c=None, version="v2"):
    """c = alpha * op(a) @ op(b) + beta * c, op = transpose when the flag is set.

    a: (M, K) or (K, M) if trans_a; b: (K, N) or (N, K) if trans_b; c: (M, N),
    written in place and returned (a new array when None; then beta must be 0).
    """
    if version not in SGEMM_VERSIONS:
        raise ValueError(f"sgemm: unknown version {version!r}; kept versions are {', '.join(SGEMM_VERSIONS)}")
    a, b = _array(a, "a", 2), _array(b, "b", 2)
    xp = _module(a, b) if c is None else _module(a, b, c)
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb:
        raise ValueError(f"inner dimensions differ: op(a) is {m}x{k}, op(b) is {kb}x{n}")
    a, b = xp.ascontiguousarray(a), xp.ascontiguousarray(b)
    if c is None:
        if beta != 0:
            raise ValueError("beta must be 0 when no c is given")
        c = xp.empty((m, n), dtype=np.float32)
    else:
        c = _array(c, "c", 2)
        if tuple(c.shape) != (m, n):
            raise ValueError(f"c has shape {tuple(c.shape)}, op(a) @ op(b) is ({m}, {n})")
        if not c.flags.c_contiguous:
            raise ValueError("c must be C-contiguous (it is written in place)")
    if c.size == 0:
        return c
    rows_per_block = V1_BLOCK[1] if version == "v1" else V2_TILE_M
    if _cdiv(m, rows_per_block) > 65535:
        raise ValueError(f"sgemm {version}: {m} rows exceed the grid's y limit "
                         f"(65535 blocks of {rows_per_block} rows)")
    args = (a, b, c, m, n, k, a.shape[1], b.shape[1], n, int(bool(trans_a)), int(bool(trans_b)),
            float(alpha), float(beta))
    kern = _get(f"sgemm_{version}", a)
    if version == "v1":
        kern((_cdiv(n, V1_BLOCK[0]), _cdiv(m, V1_BLOCK[1])), V1_BLOCK, args)
    else:
        kern((_cdiv(n, V2_TILE_N), _cdiv(m, V2_TILE_M)), V2_THREADS, args)
    return c


def _check_fc(x, w, xname="x"):
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{xname} has {x.shape[1]} features, weight {tuple(w.shape)} expects {w.shape[1]}")


def fc_forward(x, w, b=None, version=None):
    """y = x @ w.T + b.  x (N, in), w (out, in), b (out,) or None -> (N, out)."""
    v = _version("fc_forward", version, SGEMM_VERSIONS)
    x = _array(x, "x (reshape activations to (N, features))", 2, "fc_forward")
    w = _array(w, "w", 2, "fc_forward")
    _check_fc(x, w)
    if b is not None:
        b = _array(b, "b", 1, "fc_forward")
        if tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"fc_forward: bias must have shape ({w.shape[0]},), got {tuple(b.shape)}")
        _module(x, w, b, op="fc_forward")
    y = sgemm(x, w, trans_b=True, version=v)
    if b is not None and y.size:
        xp = array_module(y)
        _get("fc_bias_add", y)(_cdiv(y.size, THREADS), THREADS,
                               (y, xp.ascontiguousarray(b), y.shape[0], y.shape[1]))
    return y


def fc_backward_data(dy, w, version=None):
    """dx = dy @ w.  dy (N, out), w (out, in) -> (N, in)."""
    v = _version("fc_backward_data", version, SGEMM_VERSIONS)
    dy, w = _array(dy, "dy", 2, "fc_backward_data"), _array(w, "w", 2, "fc_backward_data")
    if dy.shape[1] != w.shape[0]:
        raise ValueError(f"dy has {dy.shape[1]} features, weight {tuple(w.shape)} has {w.shape[0]} outputs")
    return sgemm(dy, w, version=v)


def fc_backward_filter(dy, x, version=None):
    """dw = dy.T @ x.  dy (N, out), x (N, in) -> (out, in)."""
    v = _version("fc_backward_filter", version, SGEMM_VERSIONS)
    dy, x = _array(dy, "dy", 2, "fc_backward_filter"), _array(x, "x", 2, "fc_backward_filter")
    if dy.shape[0] != x.shape[0]:
        raise ValueError(f"dy has batch {dy.shape[0]}, x has batch {x.shape[0]}")
    return sgemm(dy, x, trans_a=True, version=v)


def fc_backward_bias(dy, version=None):
    """db = dy.sum(0).  dy (N, out) -> (out,)."""
    v = _version("fc_backward_bias", version, BIAS_GRAD_VERSIONS)
    dy = _array(dy, "dy", 2, "fc_backward_bias")
    xp = array_module(dy)
    m, n = dy.shape
    db = xp.empty((n,), dtype=np.float32)
    if n:
        _get(f"fc_bias_grad_{v}", dy)(_cdiv(n, THREADS), THREADS, (xp.ascontiguousarray(dy), db, m, n))
    return db


# --- checks against the reference ------------------------------------------

# (name, batch, in, out)
SMALL_SHAPES = [
    ("3x37 -> 29", 3, 37, 29),
    ("70x5 -> 67", 70, 5, 67),     # several tiles each way, K shorter than one BK step
    ("1x130 -> 1", 1, 130, 1),
]
ALEXNET_SHAPES = [
    ("fc6 128x9216 -> 4096", 128, 9216, 4096),
    ("fc7 128x4096 -> 4096", 128, 4096, 4096),
    ("fc8 128x4096 -> 1000", 128, 4096, 1000),
]


def shape_cases(label, batch, n_in, n_out, seed=0, scale="small", tol=None):
    """Cases for one fc layer: every op, every SGEMM version, the bias-gradient versions."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n_in))
    w = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
    b = rng.standard_normal(n_out)
    dy = rng.standard_normal((batch, n_out))
    if tol is None:
        tol = 1e-5 if scale == "small" else 1e-4
    out = []
    for v in SGEMM_VERSIONS:
        out += [
            checking.Case(f"fc_forward sgemm_{v} {label}", [x, w, b], R.fc_forward,
                          lambda x, w, b, v=v: fc_forward(x, w, b, version=v),
                          tol, (f"sgemm_{v}", "fc_bias_add"), scale),
            checking.Case(f"fc_forward (no bias) sgemm_{v} {label}", [x, w], R.fc_forward,
                          lambda x, w, v=v: fc_forward(x, w, version=v),
                          tol, (f"sgemm_{v}",), scale),
            checking.Case(f"fc_backward_data sgemm_{v} {label}", [dy, w], R.fc_backward_data,
                          lambda dy, w, v=v: fc_backward_data(dy, w, version=v),
                          tol, (f"sgemm_{v}",), scale),
            checking.Case(f"fc_backward_filter sgemm_{v} {label}", [dy, x], R.fc_backward_filter,
                          lambda dy, x, v=v: fc_backward_filter(dy, x, version=v),
                          tol, (f"sgemm_{v}",), scale),
        ]
    for v in BIAS_GRAD_VERSIONS:
        out.append(checking.Case(f"fc_backward_bias fc_bias_grad_{v} {label}", [dy], R.fc_backward_bias,
                                 lambda dy, v=v: fc_backward_bias(dy, version=v),
                                 tol, (f"fc_bias_grad_{v}",), scale))
    return out


def sgemm_cases(seed=50):
    """The general SGEMM: all four transpose combinations, alpha and beta (C read)."""
    rng = np.random.default_rng(seed)
    m, n, k = 67, 45, 19
    out = []
    for ta in (False, True):
        for tb in (False, True):
            a = rng.standard_normal((k, m) if ta else (m, k))
            b = rng.standard_normal((n, k) if tb else (k, n))
            c = rng.standard_normal((m, n))

            def ref(a, b, c, ta=ta, tb=tb):
                return 0.5 * ((a.T if ta else a) @ (b.T if tb else b)) - 2.0 * c

            for v in SGEMM_VERSIONS:
                out.append(checking.Case(
                    f"sgemm_{v} {'T' if ta else 'N'}{'T' if tb else 'N'} {m}x{n}x{k} alpha=0.5 beta=-2",
                    [a, b, c], ref,
                    lambda a, b, c, ta=ta, tb=tb, v=v: sgemm(a, b, ta, tb, 0.5, -2.0, c.copy(), version=v),
                    1e-5, (f"sgemm_{v}",)))
    return out


def cases(scale="small"):
    """Every GEMM-family kernel version against the reference."""
    if scale == "small":
        shapes = SMALL_SHAPES
    elif scale == "alexnet":
        shapes = ALEXNET_SHAPES
    else:
        raise ValueError(f"unknown scale {scale!r}: choose 'small' or 'alexnet'")
    out = []
    for i, (label, batch, n_in, n_out) in enumerate(shapes):
        out += shape_cases(label, batch, n_in, n_out, seed=i, scale=scale)
    if scale == "small":
        out += sgemm_cases()
    return out
