"""Launchers for kernels/conv.cu: 2-D convolution forward, backward-data,
backward-filter and backward-bias on the CUDA kernels.

Same names and signatures as convnet.reference, plus `version=` (None = the
shipped version, SHIPPED below). NumPy float32 arrays run on the CPU
emulation, CuPy float32 arrays on their GPU; outputs are allocated with the
inputs' array module. Layouts are NCHW; weights (F, C/groups, KH, KW).
"""
import math

import numpy as np

from convnet import checking
from convnet import reference as R
from convnet.kernel_ops._common import (INT32_LIMIT, array_module_of as _module, float32_input as _array,
                                        int_param as _int, pair_param as _pair)

# The version each op ships (the one place that names it).
SHIPPED = {
    "conv2d_forward": "v2",
    "conv2d_backward_data": "v2",
    "conv2d_backward_filter": "v2",
    "conv2d_backward_bias": "v2",
}
VERSIONS = ("v1", "v2", "v3")
# Passes with a v3 kernel (conv2d_backward_bias has none: version="v3" runs its v2).
V3_PASSES = ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter")
BIAS_KERNEL = {"v1": "v1", "v2": "v2", "v3": "v2"}

# conv.cu's v2 tile (conv::BM, BN, V2_THREADS), v3 tile (conv::V3_BM, V3_BN,
# V3_THREADS) and the v1 block size.
V2_TILE_M, V2_TILE_N, V2_THREADS = 64, 64, 256
V3_TILE_M, V3_TILE_N, V3_THREADS = 128, 128, 256
# v3 row heights: 128 (conv::V3_BM, kernels conv2d_*_v3) and 64 (conv::V3_BM_SMALL,
# kernels conv2d_*_v3_m64); _v3_rows picks one per layer.
V3_ROWS = {128: "", 64: "_m64"}
V1_THREADS = 256
# Backward-filter split-K: aim for this many blocks (two waves on a 132-SM
# H100), with at least MIN_K_PER_SLICE reduction steps per slice.
TARGET_BLOCKS = 264
MIN_K_PER_SLICE = 256
# ... and at most this many slices (the workspace is splits x the weight size).
MAX_SPLITS = 64


# --- argument checks -------------------------------------------------------

def _shape4(shape, name):
    if not isinstance(shape, (tuple, list)) or len(shape) != 4:
        raise ValueError(f"{name} must be a 4-tuple (N, C, H, W) / (F, C/groups, KH, KW), got {shape!r}")
    return tuple(_int(s, name, 0) for s in shape)


def _version(op, version):
    v = SHIPPED[op] if version is None else version
    if v not in VERSIONS:
        raise ValueError(f"{op}: unknown version {version!r}; kept versions are {', '.join(VERSIONS)}")
    if v == "v3" and op != "conv2d_backward_bias" and op not in V3_PASSES:
        raise ValueError(f"{op}: version 'v3' is not built for this pass yet")
    return v


def _v3_rows(m):
    """The v3 row tile for a GEMM of m rows: the one that pads m the least (ties: 128).
    AlexNet: 96, 128, 256, 384 rows -> 128; 48, 192 rows -> 64."""
    return 64 if _cdiv(m, 64) * 64 < _cdiv(m, 128) * 128 else 128


def _tile(v, m, rows=None):
    """(rows, columns, threads, kernel name suffix) of the implicit-GEMM block tile of
    version v2 or v3 for a GEMM of m rows; rows forces v3's row tile (None: _v3_rows)."""
    if v != "v3":
        if rows is not None:
            raise ValueError(f"tile_rows is a v3 setting, got version {v!r}")
        return (V2_TILE_M, V2_TILE_N, V2_THREADS, "") if v == "v2" else (0, 0, V1_THREADS, "")
    if rows is None:
        rows = _v3_rows(m)
    if rows not in V3_ROWS:
        raise ValueError(f"tile_rows must be one of {sorted(V3_ROWS)} (or None), got {rows!r}")
    return rows, V3_TILE_N, V3_THREADS, V3_ROWS[rows]


def _geometry(x_shape, w_shape, stride, pad, groups):
    """The kernels' 14 shape scalars (n, c, h, w, f, kh, kw, oh, ow, sh, sw, ph, pw, groups)."""
    n, c, h, w = x_shape
    f, cg, kh, kw = w_shape
    if min(c, h, w) < 1 or min(f, cg, kh, kw) < 1:
        raise ValueError(f"empty convolution: input {tuple(x_shape)}, weight {tuple(w_shape)} "
                         f"(only the batch may be 0)")
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(pad, "pad", 0)
    groups = _int(groups, "groups", 1)
    if c % groups:
        raise ValueError(f"input channels {c} are not divisible by groups={groups}")
    if f % groups:
        raise ValueError(f"filters {f} are not divisible by groups={groups}")
    if cg != c // groups:
        raise ValueError(f"weight has {cg} input channels per group, input has {c} channels "
                         f"in {groups} group(s) ({c // groups} per group)")
    if kh > h + 2 * ph or kw > w + 2 * pw:
        raise ValueError(f"kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{w + 2 * pw}")
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if n * f * oh * ow > INT32_LIMIT:
        raise ValueError(f"output of {n * f * oh * ow} elements; the kernels index with int32 (< 2^31)")
    return (n, c, h, w, f, kh, kw, oh, ow, sh, sw, ph, pw, groups)


def _check_dy(dy, expected, what):
    if tuple(dy.shape) != tuple(expected):
        raise ValueError(f"dy has shape {tuple(dy.shape)}, {what} gives output shape {tuple(expected)}")


def _cdiv(a, b):
    return -(-a // b)


def _get(name, like):
    from convnet import kernels
    return kernels.get_function(name, like=like)


# --- launchers -------------------------------------------------------------

def conv2d_forward(x, w, b=None, stride=1, pad=0, groups=1, version=None, relu=False, tile_rows=None):
    """y = conv(x, w) + b.  x (N, C, H, W), w (F, C/groups, KH, KW), b (F,) or None -> (N, F, OH, OW).

    relu=True fuses the activation into the kernel's epilogue (every version):
    y = max(0, conv(x, w) + b), the same as relu_forward of the unfused result.
    tile_rows (v3 only): 128 or 64, force the row tile (None: chosen per layer).
    """
    v = _version("conv2d_forward", version)
    if not isinstance(relu, (bool, np.bool_)):
        raise TypeError(f"relu must be a bool, got {relu!r}")
    x, w = _array(x, "x", 4), _array(w, "w", 4)
    xp = _module(x, w) if b is None else _module(x, w, b)
    geo = _geometry(tuple(x.shape), tuple(w.shape), stride, pad, groups)
    n, c, h, wd, f, kh, kw, oh, ow, sh, sw, ph, pw, g = geo
    if b is None:
        b, has_bias = xp.zeros(1, dtype=np.float32), 0
    else:
        b, has_bias = _array(b, "b", 1), 1
        if tuple(b.shape) != (f,):
            raise ValueError(f"bias must have shape ({f},), got {tuple(b.shape)}")
    x, w, b = (xp.ascontiguousarray(a) for a in (x, w, b))
    y = xp.empty((n, f, oh, ow), dtype=np.float32)
    if n == 0:
        return y
    tm, tn, threads, suffix = _tile(v, f // g, tile_rows)
    k = _get(f"conv2d_fwd_{v}{suffix}", x)
    if v == "v1":
        k(_cdiv(y.size, V1_THREADS), V1_THREADS, (x, w, b, y) + geo + (has_bias, int(relu)))
    else:
        grid = (_cdiv(n * oh * ow, tn), _cdiv(f // g, tm), g)
        k(grid, threads, (x, w, b, y) + geo + (has_bias, int(relu)))
    return y


def conv2d_backward_data(dy, w, x_shape, stride=1, pad=0, groups=1, version=None, tile_rows=None):
    """dx, the gradient of conv2d_forward's input.  dy (N, F, OH, OW), w -> dx of x_shape.
    tile_rows (v3 only): 128 or 64, force the row tile (None: chosen per layer)."""
    v = _version("conv2d_backward_data", version)
    dy, w = _array(dy, "dy", 4), _array(w, "w", 4)
    xp = _module(dy, w)
    geo = _geometry(_shape4(x_shape, "x_shape"), tuple(w.shape), stride, pad, groups)
    n, c, h, wd, f, kh, kw, oh, ow, sh, sw, ph, pw, g = geo
    _check_dy(dy, (n, f, oh, ow), f"x_shape {tuple(x_shape)} with weight {tuple(w.shape)}")
    if n * c * h * wd > INT32_LIMIT:
        raise ValueError(f"x_shape {tuple(x_shape)} has 2^31 elements or more; the kernels index with int32")
    dy, w = xp.ascontiguousarray(dy), xp.ascontiguousarray(w)
    dx = xp.empty((n, c, h, wd), dtype=np.float32)
    if n == 0:
        return dx
    tm, tn, threads, suffix = _tile(v, c // g, tile_rows)
    unit = v == "v3" and sh == sw == 1       # v3's stride-1 kernels skip the divisibility test
    k = _get(f"conv2d_bwd_data_{v}" + ("_s1" if unit else "") + suffix, dy)
    if v == "v1":
        k(_cdiv(dx.size, V1_THREADS), V1_THREADS, (dy, w, dx) + geo)
    else:
        grid = (_cdiv(n * h * wd, tn), _cdiv(c // g, tm), g)
        k(grid, threads, (dy, w, dx) + geo)
    return dx


def backward_filter_splits(geo, version="v2", tile_rows=None):
    """(splits, k_chunk) for conv2d_bwd_filter_v2/v3: the N*OH*OW reduction cut into
    `splits` slices of k_chunk (a multiple of 8), enough blocks to fill the GPU."""
    n, c, h, wd, f, kh, kw, oh, ow, sh, sw, ph, pw, g = geo
    k_total = n * oh * ow
    tm, tn, _, _ = _tile(version, f // g, tile_rows)
    blocks = g * _cdiv(f // g, tm) * _cdiv((c // g) * kh * kw, tn)
    splits = max(1, min(_cdiv(TARGET_BLOCKS, blocks), k_total // MIN_K_PER_SLICE, MAX_SPLITS, 65535 // g))
    return _slices(k_total, splits)


def _slices(k_total, splits):
    chunk = _cdiv(_cdiv(k_total, splits), 8) * 8
    return _cdiv(k_total, chunk), chunk


def conv2d_backward_filter(dy, x, w_shape, stride=1, pad=0, groups=1, version=None, tile_rows=None):
    """dw, the gradient of conv2d_forward's weight.  dy (N, F, OH, OW), x (N, C, H, W) -> w_shape.
    tile_rows (v3 only): 128 or 64, force the row tile (None: chosen per layer)."""
    return backward_filter(dy, x, w_shape, stride, pad, groups, version, tile_rows=tile_rows)


def backward_filter(dy, x, w_shape, stride=1, pad=0, groups=1, version=None, splits=None, tile_rows=None):
    """conv2d_backward_filter with the v2 split-K count exposed (tests, tuning).

    splits (v2, v3): cut the reduction over (n, oh, ow) into this many slices
    (None: chosen by backward_filter_splits); the slices are added in a fixed
    order, so results are deterministic.
    """
    v = _version("conv2d_backward_filter", version)
    dy, x = _array(dy, "dy", 4), _array(x, "x", 4)
    xp = _module(dy, x)
    geo = _geometry(tuple(x.shape), _shape4(w_shape, "w_shape"), stride, pad, groups)
    n, c, h, wd, f, kh, kw, oh, ow, sh, sw, ph, pw, g = geo
    _check_dy(dy, (n, f, oh, ow), f"input {tuple(x.shape)} with weight shape {tuple(w_shape)}")
    dy, x = xp.ascontiguousarray(dy), xp.ascontiguousarray(x)
    if n == 0:
        return xp.zeros(tuple(w_shape), dtype=np.float32)
    dw = xp.empty(tuple(w_shape), dtype=np.float32)
    tm, tn, threads, suffix = _tile(v, f // g, tile_rows)
    k = _get(f"conv2d_bwd_filter_{v}{suffix}", dy)
    if v == "v1":
        k(_cdiv(dw.size, V1_THREADS), V1_THREADS, (dy, x, dw) + geo)
        return dw
    if splits is None:
        splits, chunk = backward_filter_splits(geo, v, tile_rows)
    else:
        splits, chunk = _slices(n * oh * ow, _int(splits, "splits", 1))
        if g * splits > 65535:
            raise ValueError(f"groups * splits = {g * splits} exceeds the grid's z limit 65535")
    if splits * dw.size > INT32_LIMIT:
        raise ValueError(f"split-K workspace of {splits} x {dw.size} elements is too large for int32 indexing")
    ws = dw if splits == 1 else xp.empty((splits,) + tuple(w_shape), dtype=np.float32)
    grid = (_cdiv((c // g) * kh * kw, tn), _cdiv(f // g, tm), g * splits)
    k(grid, threads, (dy, x, ws) + geo + (splits, chunk))
    if splits > 1:
        red = _get("conv2d_bwd_filter_reduce", dy)
        red(_cdiv(dw.size, V1_THREADS), V1_THREADS, (ws, dw, dw.size, splits))
    return dw


def conv2d_backward_bias(dy, version=None):
    """db[f] = sum of dy[:, f] over batch and pixels.  dy (N, F, OH, OW) -> (F,).

    There is no v3 bias kernel: version="v3" runs v2 (BIAS_KERNEL)."""
    v = BIAS_KERNEL[_version("conv2d_backward_bias", version)]
    dy = _array(dy, "dy", 4)
    xp = _module(dy)
    n, f, oh, ow = dy.shape
    dy = xp.ascontiguousarray(dy)
    if dy.size == 0:
        return xp.zeros((f,), dtype=np.float32)
    db = xp.empty((f,), dtype=np.float32)
    k = _get(f"conv2d_bwd_bias_{v}", dy)
    if v == "v1":
        k(_cdiv(f, V1_THREADS), V1_THREADS, (dy, db, n, f, oh * ow))
    else:
        k(f, 256, (dy, db, n, f, oh * ow))
    return db


# --- checks against the reference ------------------------------------------

# (name, x shape (N, C, H, W), w shape (F, C/groups, KH, KW), stride, pad, groups)
SMALL_SHAPES = [
    ("3x5x13x11 k3 s1 p1", (3, 5, 13, 11), (7, 5, 3, 3), 1, 1, 1),
    ("3x5x13x11 k5x3 s2 p(2,1)", (3, 5, 13, 11), (6, 5, 5, 3), 2, (2, 1), 1),
    ("3x6x13x11 k3 s(1,2) p0 g2", (3, 6, 13, 11), (10, 3, 3, 3), (1, 2), 0, 2),
    ("2x3x19x17 k5 s4 p2", (2, 3, 19, 17), (5, 3, 5, 5), 4, 2, 1),
    ("3x4x9x10 k3x2 s3 p(0,2) g2", (3, 4, 9, 10), (6, 2, 3, 2), 3, (0, 2), 2),
    ("1x3x5x4 k5x4 s1 p0 g3", (1, 3, 5, 4), (3, 1, 5, 4), 1, 0, 3),
]

# v3's 128 x 128 tile (and the 64 x 128 one) exactly full in M, N and K for every pass (1x1 kernel:
# M = F = C = 128, columns = N*H*W = 128, K = 128), then one that spans several
# tiles in M and N with partial last tiles (Fg = 130, N*OH*OW = 3*12*10 = 360).
V3_SHAPES = [
    ("2x128x8x8 k1 full v3 tile", (2, 128, 8, 8), (128, 128, 1, 1), 1, 0, 1),
    ("3x4x12x10 k3 p1 g2 F260", (3, 4, 12, 10), (260, 2, 3, 3), 1, 1, 2),
]

# AlexNet as one device (batch 128): conv1..conv5.
ALEXNET_SHAPES = [
    ("conv1 128x3x227x227 96 11x11 s4", (128, 3, 227, 227), (96, 3, 11, 11), 4, 0, 1),
    ("conv2 128x96x27x27 256 5x5 p2 g2", (128, 96, 27, 27), (256, 48, 5, 5), 1, 2, 2),
    ("conv3 128x256x13x13 384 3x3 p1", (128, 256, 13, 13), (384, 256, 3, 3), 1, 1, 1),
    ("conv4 128x384x13x13 384 3x3 p1 g2", (128, 384, 13, 13), (384, 192, 3, 3), 1, 1, 2),
    ("conv5 128x384x13x13 256 3x3 p1 g2", (128, 384, 13, 13), (256, 192, 3, 3), 1, 1, 2),
]


def _out_shape(x_shape, w_shape, stride, pad):
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(pad, "pad", 0)
    return (x_shape[0], w_shape[0], (x_shape[2] + 2 * ph - w_shape[2]) // sh + 1,
            (x_shape[3] + 2 * pw - w_shape[3]) // sw + 1)


def shape_cases(label, x_shape, w_shape, stride, pad, groups, versions=VERSIONS, seed=0,
                scale="small", tol=None):
    """Cases for one convolution geometry: every op, every version in `versions`."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape) / math.sqrt(np.prod(w_shape[1:]))
    b = rng.standard_normal(w_shape[0])
    dy = rng.standard_normal(_out_shape(x_shape, w_shape, stride, pad))
    if tol is None:
        tol = 1e-5 if scale == "small" else 1e-4
    geo = dict(stride=stride, pad=pad, groups=groups)
    unit = _pair(stride, "stride", 1) == (1, 1)
    # (version, v3 row tile, name prefix, kernel suffix): v3 runs with each row tile
    variants = []
    for v in versions:
        if v == "v3":
            variants += [("v3", rows, f"v3 rows={rows}", suffix) for rows, suffix in V3_ROWS.items()]
        else:
            variants.append((v, None, v, ""))
    cases = []
    for v, rows, name, suffix in variants:
        cases.append(checking.Case(f"conv2d_fwd_{name} {label}", [x, w, b],
                                   lambda x, w, b: R.conv2d_forward(x, w, b, **geo),
                                   lambda x, w, b, v=v, rows=rows: conv2d_forward(x, w, b, **geo, version=v,
                                                                                  tile_rows=rows),
                                   tol, (f"conv2d_fwd_{v}{suffix}",), scale))
        # the fused bias + ReLU epilogue, every version
        cases.append(checking.Case(f"conv2d_fwd_{name} relu {label}", [x, w, b],
                                   lambda x, w, b: np.maximum(R.conv2d_forward(x, w, b, **geo), 0),
                                   lambda x, w, b, v=v, rows=rows: conv2d_forward(x, w, b, **geo, version=v,
                                                                                  relu=True, tile_rows=rows),
                                   tol, (f"conv2d_fwd_{v}{suffix}",), scale))
        data_kernel = f"conv2d_bwd_data_{v}" + ("_s1" if v == "v3" and unit else "") + suffix
        cases.append(checking.Case(f"conv2d_bwd_data_{name} {label}", [dy, w],
                                   lambda dy, w: R.conv2d_backward_data(dy, w, x_shape, **geo),
                                   lambda dy, w, v=v, rows=rows: conv2d_backward_data(dy, w, x_shape, **geo, version=v,
                                                                                      tile_rows=rows),
                                   tol, (data_kernel,), scale))
        cases.append(checking.Case(f"conv2d_bwd_filter_{name} {label}", [dy, x],
                                   lambda dy, x: R.conv2d_backward_filter(dy, x, w_shape, **geo),
                                   lambda dy, x, v=v, rows=rows: conv2d_backward_filter(dy, x, w_shape, **geo,
                                                                                        version=v, tile_rows=rows),
                                   tol, (f"conv2d_bwd_filter_{v}{suffix}",)
                                   + (("conv2d_bwd_filter_reduce",) if v != "v1" else ()), scale))
        if BIAS_KERNEL[v] == v:          # v3 has no bias kernel of its own
            cases.append(checking.Case(f"conv2d_bwd_bias_{v} {label}", [dy],
                                       R.conv2d_backward_bias,
                                       lambda dy, v=v: conv2d_backward_bias(dy, version=v),
                                       tol, (f"conv2d_bwd_bias_{v}",), scale))
    return cases


def cases(scale="small"):
    """Every conv kernel version against the reference: odd shapes ("small") or AlexNet's ("alexnet")."""
    if scale == "small":
        shapes = SMALL_SHAPES
    elif scale == "alexnet":
        shapes = ALEXNET_SHAPES
    else:
        raise ValueError(f"unknown scale {scale!r}: choose 'small' or 'alexnet'")
    out = []
    for i, (label, xs, ws, s, p, g) in enumerate(shapes):
        out += shape_cases(label, xs, ws, s, p, g, seed=i, scale=scale)
    if scale == "small":
        for i, (label, xs, ws, s, p, g) in enumerate(V3_SHAPES):
            out += shape_cases(label, xs, ws, s, p, g, versions=("v3",), seed=50 + i)
        out += split_cases()
    return out


def split_cases(splits=(2, 3, 7)):
    """conv2d_bwd_filter_v2/v3 with the reduction cut into slices (the small shapes need
    none by the heuristic): the partial sums plus conv2d_bwd_filter_reduce."""
    rng = np.random.default_rng(100)
    x_shape, w_shape, geo = (3, 4, 9, 10), (6, 2, 3, 2), dict(stride=(2, 1), pad=1, groups=2)
    x = rng.standard_normal(x_shape)
    dy = rng.standard_normal(_out_shape(x_shape, w_shape, geo["stride"], geo["pad"]))
    variants = [("v2", None, "v2", "")] + [("v3", rows, f"v3 rows={rows}", suffix) for rows, suffix in V3_ROWS.items()]
    return [checking.Case(f"conv2d_bwd_filter_{name} 3x4x9x10 k3x2 s(2,1) p1 g2 splits={sp}", [dy, x],
                          lambda dy, x: R.conv2d_backward_filter(dy, x, w_shape, **geo),
                          lambda dy, x, sp=sp, v=v, rows=rows: backward_filter(dy, x, w_shape, **geo, version=v,
                                                                               splits=sp, tile_rows=rows),
                          1e-5, (f"conv2d_bwd_filter_{v}{suffix}", "conv2d_bwd_filter_reduce"))
            for v, rows, name, suffix in variants for sp in splits]
