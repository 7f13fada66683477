"""Launchers for kernels/conv_tc.cu: 2-D convolution on the tensor cores.

Same names and signatures as convnet.kernel_ops.conv (and convnet.reference),
plus `precision` ("tf32" or "bf16"), `version=` (None = SHIPPED), `tile`
("l" = 128x128, "s" = 64x64, None = chosen per layer; the forward's 16-byte kernel
also "m" = 64x128; the backward passes with gathered operands, bwd_data at unit stride
and bwd_filter, also "h" = 96x128 and "t" = 48x128) and, for the backward passes,
`splits` (the K slices, None = chosen per layer). The inputs of the
products are rounded inside the kernels (convnet/precision.py); memory, bias,
ReLU and outputs stay float32. conv2d_backward_bias has no product: it is
convnet.kernel_ops.conv's.
"""
import math

import numpy as np

from convnet import checking
from convnet import reference as R
from convnet.kernel_ops import conv as _fp32
from convnet.kernel_ops._common import (INT32_LIMIT, array_module, check_float32, check_int,
                                        check_same_device)
from convnet.kernel_ops.gemm_tc import (BASE_TILES, CONV_BWD_TILES, PRECISIONS, TILES, VEC_ALIGN, VEC_TILES,
                                        _misaligned, check_tc_precision, choose, data_ptr, pick_vec, plan_cost)
from convnet.precision import round_to


def _array(a, name, ndim, op="conv_tc"):
    return check_float32(op, name, a, ndim, contiguous=False)


def _module(*arrays, op="conv_tc"):
    check_same_device(op, **{f"array {i}": a for i, a in enumerate(arrays)})
    return array_module(arrays[0])


def _int(v, name, minimum, op="conv_tc"):
    return check_int(op, name, v, minimum)


SHIPPED = {"conv2d_forward": "v1", "conv2d_backward_data": "v1", "conv2d_backward_filter": "v1"}
VERSIONS = ("v1",)
REDUCE_THREADS = 256


def _cdiv(a, b):
    return -(-a // b)


def _version(op, version):
    v = SHIPPED[op] if version is None else version
    if v not in VERSIONS:
        raise ValueError(f"{op}: unknown version {version!r}; kept versions are {', '.join(VERSIONS)}")
    return v


def _get(name, like):
    from convnet import kernels
    return kernels.get_function(name, like=like)


def _tile(tile, m, ncol, k, tiles=BASE_TILES):
    t, _, _ = choose(m, ncol, k, tile, splits=1, tiles=tiles)
    return t, TILES[t]


MASK_TAPS = 32          # the window masks of conv2d_tc_fwd_vec_* and _bwd_data_s1_*: KH*KW <= 32
# kernels whose k-tiles are 32 deep on sm_90 (bf16, two k16 steps per barrier; every other is
# 16): the gathered bf16 kernels where the registers allow (kernels/conv_tc.cu; bwd_filter_bf16_l
# is 16 deep on sm_80-89)
K_TILE_32 = frozenset(f"conv2d_tc_{op}_bf16_{t}" for op, tiles in (("fwd_vec", "ls"), ("bwd_data_s1", "lsh"),
                                                                   ("bwd_filter", "lsh")) for t in tiles)


def k_tile(kernel):
    """The depth of a k-tile of `kernel` (a full kernel name): 32 or 16."""
    return 32 if kernel in K_TILE_32 else 16


def fwd_vec_ok(w, c_per_group, kh, kw):
    """conv2d_tc_fwd_vec_*'s condition: weight rows (Cg*KH*KW floats) of a multiple of 4, w 16-byte
    aligned, and a window of at most 32 taps (its per-column mask)."""
    return (c_per_group * kh * kw) % VEC_ALIGN == 0 and kh * kw <= MASK_TAPS and data_ptr(w) % 16 == 0


def bwd_data_s1_ok(sh, sw, kh, kw):
    """conv2d_tc_bwd_data_s1_*'s condition: unit stride and a window of at most 32 taps."""
    return sh == sw == 1 and kh * kw <= MASK_TAPS


def bwd_data_tiles(sh, sw, kh, kw):
    """The tiles of the bwd_data kernel these take: the unit-stride one has "h" and "t" too."""
    return CONV_BWD_TILES if bwd_data_s1_ok(sh, sw, kh, kw) else BASE_TILES


def bwd_data_fwd_ok(f_per_group, kh, kw, sh, sw, ph, pw):
    """Whether bwd_data can run on conv2d_tc_fwd_vec_*: at unit stride dx is the forward convolution
    of dy with the filters flipped and transposed (w'[g*Cg + c, f, i, j] = w[g*Fg + f, c, KH-1-i,
    KW-1-j]) and padded KH-1-PH, KW-1-PW; that needs those pads >= 0 and the forward's 16-byte
    kernel's conditions on w' (rows of Fg*KH*KW floats, a multiple of 4; at most 32 taps)."""
    return (sh == sw == 1 and ph <= kh - 1 and pw <= kw - 1 and (f_per_group * kh * kw) % VEC_ALIGN == 0
            and kh * kw <= MASK_TAPS)


def bwd_data_plan(cg, groups, ncol, k, fwd_ok, unit, tile=None, splits=None, via_forward=None):
    """(via_forward, tile, splits, chunk) of conv2d_backward_data for a GEMM of cg rows per group,
    ncol = N*H*W columns and depth k = Fg*KH*KW: on the forward's 16-byte kernel (fwd_ok:
    bwd_data_fwd_ok; no split-K there, tiles VEC_TILES) or on the bwd_data kernel (unit: the
    unit-stride one, with the 48-row tiles; split-K), whichever the launch plan's cost model
    (gemm_tc.plan_cost, the blocks of all groups counted) rates faster; ties go to the forward,
    whose loops are at the shared-memory cap where bwd_data_s1's are issue-bound
    (benchmarks/notes-tensor-cores.md). via_forward True / False forces the route (True needs
    fwd_ok); tile and splits restrict the plans as on the other launchers."""
    m = cg * groups
    bwd_tiles = CONV_BWD_TILES if unit else BASE_TILES
    if via_forward and not fwd_ok:
        raise ValueError("conv2d_backward_data: via_forward=True needs unit stride, pads <= KH-1 / KW-1, "
                         "Fg*KH*KW a multiple of 4 and at most 32 taps")
    fwd = (fwd_ok and via_forward is not False and (tile is None or tile in VEC_TILES)
           and splits in (None, 1))
    bwd = via_forward is not True and (tile is None or tile in bwd_tiles)
    if via_forward and not fwd:
        raise ValueError(f"conv2d_backward_data: the forward route has tiles {', '.join(VEC_TILES)} and no split-K")
    if not (fwd or bwd):
        raise ValueError(f"conv2d_backward_data: tile must be one of {', '.join(bwd_tiles)} (or None), got {tile!r}")
    plans = []
    if fwd:
        p = choose(m, ncol, k, tile, 1, tiles=VEC_TILES)
        plans.append((plan_cost(m, ncol, k, p), True, p))
    if bwd:
        p = choose(m, ncol, k, tile, splits, tiles=bwd_tiles)
        plans.append((plan_cost(m, ncol, k, p), False, p))
    _, route, p = min(plans, key=lambda c: c[0] * (1 + 1e-9 * (not c[1])))   # ties: the forward
    return (route,) + p


def conv2d_forward(x, w, b=None, stride=1, pad=0, groups=1, relu=False, precision="tf32", version=None,
                   tile=None, vec=None):
    """y = conv(x, w) + b (then ReLU when relu), products on the tensor cores; vec: the kernel
    reading the weights in 16-byte chunks (None = where the rows allow, True = required, False = never)."""
    check_tc_precision("conv2d_forward", precision)
    _version("conv2d_forward", version)
    if not isinstance(relu, (bool, np.bool_)):
        raise TypeError(f"relu must be a bool, got {relu!r}")
    x, w = _array(x, "x", 4), _array(w, "w", 4)
    xp = _module(x, w) if b is None else _module(x, w, b)
    geo = _fp32.Geometry.of("conv2d_forward", tuple(x.shape), tuple(w.shape), stride, pad, groups).args
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
    v = "vec_" if pick_vec("conv2d_forward", vec, fwd_vec_ok(w, c // g, kh, kw)) else ""
    t, (bm, bn, threads) = _tile(tile, f // g, n * oh * ow, (c // g) * kh * kw, VEC_TILES if v else BASE_TILES)
    _get(f"conv2d_tc_fwd_{v}{precision}_{t}", x)((_cdiv(n * oh * ow, bn), _cdiv(f // g, bm), g), threads,
                                              (x, w, b, y) + geo + (has_bias, int(relu)))
    return y


def conv2d_backward_data(dy, w, x_shape, stride=1, pad=0, groups=1, precision="tf32", version=None, tile=None,
                         splits=None, via_forward=None):
    """dx, the gradient of conv2d_forward's input, products on the tensor cores; the reduction
    over (f, i, j) cut into `splits` slices (None = chosen per layer) added in a fixed order.
    At unit stride it may run as a forward convolution of dy with the flipped, transposed
    filters on conv2d_tc_fwd_vec_* (bwd_data_plan: via_forward None = where the cost model
    rates it faster, True = required, False = never)."""
    check_tc_precision("conv2d_backward_data", precision)
    _version("conv2d_backward_data", version)
    dy, w = _array(dy, "dy", 4), _array(w, "w", 4)
    xp = _module(dy, w)
    g_ = _fp32.Geometry.of("conv2d_backward_data", x_shape, tuple(w.shape), stride, pad, groups)
    _fp32._check_dy("conv2d_backward_data", dy, g_)
    geo = g_.args
    n, c, h, wd, f, kh, kw, oh, ow, sh, sw, ph, pw, g = geo
    if n * c * h * wd > INT32_LIMIT:
        raise ValueError(f"x_shape {tuple(x_shape)} has 2^31 elements or more; the kernels index with int32")
    dy, w = xp.ascontiguousarray(dy), xp.ascontiguousarray(w)
    dx = xp.empty((n, c, h, wd), dtype=np.float32)
    if n == 0:
        return dx
    if splits is not None:
        _int(splits, "splits", 1)
    if via_forward is not None and not isinstance(via_forward, (bool, np.bool_)):
        raise TypeError(f"via_forward must be a bool or None, got {via_forward!r}")
    fg, cg = f // g, c // g
    route, t, splits, chunk = bwd_data_plan(cg, g, n * h * wd, fg * kh * kw, bwd_data_fwd_ok(fg, kh, kw, sh, sw, ph, pw),
                                            bwd_data_s1_ok(sh, sw, kh, kw), tile, splits, via_forward)
    bm, bn, threads = TILES[t]
    if route:
        # w'[g*Cg + c, f, i, j] = w[g*Fg + f, c, KH-1-i, KW-1-j] (one copy of the small weights per
        # call), then the forward of dy (n, F, OH, OW) -> dx (n, C, H, W) with pads KH-1-PH, KW-1-PW
        wt = xp.ascontiguousarray(w.reshape(g, fg, cg, kh, kw)[:, :, :, ::-1, ::-1]
                                  .transpose(0, 2, 1, 3, 4).reshape(c, fg, kh, kw))
        assert data_ptr(wt) % 16 == 0, "a fresh array starts on 16 bytes"
        _get(f"conv2d_tc_fwd_vec_{precision}_{t}", dy)(
            (_cdiv(n * h * wd, bn), _cdiv(cg, bm), g), threads,
            (dy, wt, xp.zeros(1, dtype=np.float32), dx, n, f, oh, ow, c, kh, kw, h, wd, 1, 1, kh - 1 - ph,
             kw - 1 - pw, g, 0, 0))
        return dx
    if g * splits > 65535:
        raise ValueError(f"groups * splits = {g * splits} exceeds the grid's z limit 65535")
    if splits * dx.size > INT32_LIMIT:
        raise ValueError(f"split-K workspace of {splits} x {dx.size} elements is too large for int32 indexing")
    ws = dx if splits == 1 else xp.empty((splits, n, c, h, wd), dtype=np.float32)
    unit = "s1_" if bwd_data_s1_ok(sh, sw, kh, kw) else ""    # unit stride, small window
    _get(f"conv2d_tc_bwd_data_{unit}{precision}_{t}", dy)((_cdiv(n * h * wd, bn), _cdiv(c // g, bm), g * splits),
                                                          threads, (dy, w, ws) + geo + (splits, chunk))
    if splits > 1:
        _get("tc_splitk_reduce", dy)(min(_cdiv(dx.size, REDUCE_THREADS), 4096), REDUCE_THREADS,
                                     (ws, dx, dx.size, splits))
    return dx


def conv2d_backward_filter(dy, x, w_shape, stride=1, pad=0, groups=1, precision="tf32", version=None, tile=None,
                           splits=None):
    """dw, the gradient of conv2d_forward's weight, products on the tensor cores; the
    reduction over (n, oh, ow) cut into `splits` slices added in a fixed order."""
    check_tc_precision("conv2d_backward_filter", precision)
    _version("conv2d_backward_filter", version)
    dy, x = _array(dy, "dy", 4), _array(x, "x", 4)
    xp = _module(dy, x)
    g_ = _fp32.Geometry.of("conv2d_backward_filter", tuple(x.shape), w_shape, stride, pad, groups)
    _fp32._check_dy("conv2d_backward_filter", dy, g_)
    geo = g_.args
    n, c, h, wd, f, kh, kw, oh, ow, sh, sw, ph, pw, g = geo
    dy, x = xp.ascontiguousarray(dy), xp.ascontiguousarray(x)
    if n == 0:
        return xp.zeros(tuple(w_shape), dtype=np.float32)
    m, ncol, k = f // g, (c // g) * kh * kw, n * oh * ow
    if splits is not None:
        _int(splits, "splits", 1)
    t, splits, chunk = choose(m * g, ncol, k, tile, splits, tiles=CONV_BWD_TILES)   # blocks of all groups count
    bm, bn, threads = TILES[t]
    if g * splits > 65535:
        raise ValueError(f"groups * splits = {g * splits} exceeds the grid's z limit 65535")
    dw = xp.empty(tuple(w_shape), dtype=np.float32)
    if splits * dw.size > INT32_LIMIT:
        raise ValueError(f"split-K workspace of {splits} x {dw.size} elements is too large for int32 indexing")
    ws = dw if splits == 1 else xp.empty((splits,) + tuple(w_shape), dtype=np.float32)
    _get(f"conv2d_tc_bwd_filter_{precision}_{t}", dy)((_cdiv(ncol, bn), _cdiv(m, bm), g * splits), threads,
                                                      (dy, x, ws) + geo + (splits, chunk))
    if splits > 1:
        _get("tc_splitk_reduce", dy)(min(_cdiv(dw.size, REDUCE_THREADS), 4096), REDUCE_THREADS,
                                     (ws, dw, dw.size, splits))
    return dw


# --- checks against the reference ------------------------------------------
# float64 reference on the inputs rounded as the kernels round them; what is left
# is the float32 accumulation (normwise 1e-5, as the fp32 kernels).

SMALL_SHAPES = _fp32.SMALL_SHAPES[:5]
# The 128x128 tile: Fg = 130 rows (two row tiles, the last partial), 360 columns
# (three column tiles); a 1x1 kernel keeps K short (the emulation's time).
BIG_TILE_SHAPE = ("3x4x12x10 k1 g2 F260", (3, 4, 12, 10), (260, 2, 1, 1), 1, 0, 2)
ALEXNET_SHAPES = _fp32.ALEXNET_SHAPES
TOL = 1e-5


def _rounded(f, precision, n_rounded):
    def ref(*args):
        return f(*[round_to(a, precision).astype(np.float64) if i < n_rounded else a for i, a in enumerate(args)])
    return ref


def shape_cases(label, x_shape, w_shape, stride, pad, groups, precision, seed=0, scale="small", tile=None,
                splits=None, vec=None, misalign=False, via_forward=None):
    """vec: conv2d_forward's (None = where the weight rows allow); misalign: w starts 4 bytes past a
    16-byte boundary (the general forward kernel then); via_forward: conv2d_backward_data's."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape) / math.sqrt(np.prod(w_shape[1:]))
    b = rng.standard_normal(w_shape[0])
    dy = rng.standard_normal(_fp32._out_shape(x_shape, w_shape, stride, pad))
    tol = TOL if scale == "small" else 1e-4
    geo = dict(stride=stride, pad=pad, groups=groups)
    tile_b = None if tile == "m" else tile      # the backward passes have no "m" tile
    tile_f = None if tile in ("h", "t") else tile   # nor the forward "h" and "t"
    kw = dict(precision=precision, tile=tile_b)
    tile_bd = tile if tile == "m" and via_forward else tile_b   # bwd_data on the forward has "m"
    fkw = dict(precision=precision, tile=tile_f, vec=vec)
    mis = _misaligned if misalign else (lambda a: a)
    use_vec = vec if vec is not None else ((w_shape[1] * w_shape[2] * w_shape[3]) % VEC_ALIGN == 0
                                           and w_shape[2] * w_shape[3] <= MASK_TAPS and not misalign)
    fwd_kernel = f"conv2d_tc_fwd_{'vec_' if use_vec else ''}{precision}"
    tag = (precision + (f" tile={tile}" if tile else "") + (f" splits={splits}" if splits else "")
           + (f" via_forward={via_forward}" if via_forward is not None else "")
           + (f" vec={vec}" if vec is not None else "") + (" misaligned" if misalign else ""))
    n, c = x_shape[:2]
    f, cg, kh, kw_ = w_shape
    _, _, oh, ow = _fp32._out_shape(x_shape, w_shape, stride, pad)
    fg = f // groups
    st = (stride, stride) if isinstance(stride, int) else tuple(stride)
    t_fwd = choose(fg, n * oh * ow, cg * kh * kw_, tile_f, 1, tiles=VEC_TILES if use_vec else BASE_TILES)[0]
    unit = "s1_" if bwd_data_s1_ok(st[0], st[1], kh, kw_) else ""
    pd = (pad, pad) if isinstance(pad, int) else tuple(pad)
    bd_fwd, t_bd, sp_bd, _ = bwd_data_plan(cg, groups, n * x_shape[2] * x_shape[3], fg * kh * kw_,
                                           bwd_data_fwd_ok(fg, kh, kw_, st[0], st[1], pd[0], pd[1]),
                                           bwd_data_s1_ok(st[0], st[1], kh, kw_), tile_bd, splits, via_forward)
    bd_kernel = f"conv2d_tc_fwd_vec_{precision}_{t_bd}" if bd_fwd else f"conv2d_tc_bwd_data_{unit}{precision}_{t_bd}"
    t_bf, sp_bf, _ = choose(fg * groups, cg * kh * kw_, n * oh * ow, tile_b, splits, tiles=CONV_BWD_TILES)
    relu_ref = _rounded(lambda x, w, b: np.maximum(R.conv2d_forward(x, w, b, **geo), 0), precision, 2)
    return [
        checking.Case(f"conv2d_fwd tc {tag} {label}", [x, w, b],
                      _rounded(lambda x, w, b: R.conv2d_forward(x, w, b, **geo), precision, 2),
                      lambda x, w, b: conv2d_forward(x, mis(w), b, **geo, **fkw), tol,
                      (f"{fwd_kernel}_{t_fwd}",), scale),
        checking.Case(f"conv2d_fwd tc relu {tag} {label}", [x, w, b], relu_ref,
                      lambda x, w, b: conv2d_forward(x, mis(w), b, **geo, relu=True, **fkw), tol,
                      (f"{fwd_kernel}_{t_fwd}",), scale),
        checking.Case(f"conv2d_bwd_data tc {tag} {label}", [dy, w],
                      _rounded(lambda dy, w: R.conv2d_backward_data(dy, w, x_shape, **geo), precision, 2),
                      lambda dy, w: conv2d_backward_data(dy, w, x_shape, **geo, splits=splits, precision=precision,
                                                         tile=tile_bd, via_forward=via_forward), tol,
                      (bd_kernel,) + (("tc_splitk_reduce",) if sp_bd > 1 else ()),
                      scale),
        checking.Case(f"conv2d_bwd_filter tc {tag} {label}", [dy, x],
                      _rounded(lambda dy, x: R.conv2d_backward_filter(dy, x, w_shape, **geo), precision, 2),
                      lambda dy, x: conv2d_backward_filter(dy, x, w_shape, **geo, splits=splits, **kw), tol,
                      (f"conv2d_tc_bwd_filter_{precision}_{t_bf}",) + (("tc_splitk_reduce",) if sp_bf > 1 else ()),
                      scale),
    ]


def cases(scale="small"):
    """Every tensor-core conv pass, both precisions, against the float64 reference on rounded inputs."""
    if scale == "small":
        shapes = SMALL_SHAPES
    elif scale == "alexnet":
        shapes = ALEXNET_SHAPES
    else:
        raise ValueError(f"unknown scale {scale!r}: choose 'small' or 'alexnet'")
    out = []
    for p in PRECISIONS:
        # bf16 shares every index path with tf32: three of the odd shapes are enough for it
        for i, (label, xs, ws, s, pd, g) in enumerate(shapes if p == "tf32" or scale != "small" else shapes[:3]):
            # on the small tile (the launcher's cost model takes the big one for grids this small)
            out += shape_cases(label, xs, ws, s, pd, g, p, seed=i, scale=scale, tile="s" if scale == "small" else None)
        if scale == "small":
            label, xs, ws, s, pd, g = BIG_TILE_SHAPE
            out += shape_cases(label, xs, ws, s, pd, g, p, seed=60, tile="l")
            out += shape_cases("3x4x9x10 k3x2 s(2,1) p1 g2", (3, 4, 9, 10), (6, 2, 3, 2), (2, 1), 1, 2, p,
                               seed=61, splits=3)
            # the strided bwd_data kernel on the big tile
            out += shape_cases("2x4x9x10 k3x2 s(2,1) p1 g2", (2, 4, 9, 10), (6, 2, 3, 2), (2, 1), 1, 2, p,
                               seed=62, tile="l")
            # the forward's 16-byte weight rows (Cg*KH*KW = 36: two k-tiles and 4) on both tiles,
            # the same shape on the general kernel, and w 4 bytes off alignment (general then)
            out += shape_cases("2x4x7x9 k3 s1 p1", (2, 4, 7, 9), (5, 4, 3, 3), 1, 1, 1, p, seed=63)
            out += shape_cases("2x4x7x9 k3 s1 p1", (2, 4, 7, 9), (5, 4, 3, 3), 1, 1, 1, p, seed=63, tile="s")
            out += shape_cases("2x4x7x9 k3 s1 p1 F70", (2, 4, 7, 9), (70, 4, 3, 3), 1, 1, 1, p, seed=66,
                               tile="m", vec=True)   # the 64x128 tile (forward only)
            out += shape_cases("2x4x7x9 k3 s1 p1", (2, 4, 7, 9), (5, 4, 3, 3), 1, 1, 1, p, seed=63, vec=False)
            out += shape_cases("2x4x7x9 k3 s1 p1", (2, 4, 7, 9), (5, 4, 3, 3), 1, 1, 1, p, seed=63, misalign=True)
            out += shape_cases("1x8x6x5 k1 g2 F132", (1, 8, 6, 5), (132, 4, 1, 1), 1, 0, 2, p, seed=64, tile="l")
            # the 48-row warp tiles of the backward passes: "h" (96 rows) and "t" (48 rows), 100 and
            # 50 rows (the second row tile partial), split-K on "h"; a 2x2 and a 3x3 window
            out += shape_cases("1x100x3x4 k2 s1 p1 F100", (1, 100, 3, 4), (100, 100, 2, 2), 1, 1, 1, p,
                               seed=67, tile="h", splits=2)
            out += shape_cases("2x50x4x3 k3 s1 p1 F50", (2, 50, 4, 3), (50, 50, 3, 3), 1, 1, 1, p,
                               seed=68, tile="t")
            # bwd_data as the forward of dy with the flipped, transposed filters (via_forward) on the
            # forward's three tiles: groups, a 3x4 window with unequal pads (2 = KH-1, 1 < KW-1), odd
            # sizes, 70 rows on "m" (the second row tile partial), and a 1x1 window (pad 0)
            for label, xs, ws, pd, g, t, seed in (
                    ("3x6x11x9 k3 s1 p1 g2 F8", (3, 6, 11, 9), (8, 3, 3, 3), 1, 2, "s", 69),
                    ("2x5x8x7 k3x4 s1 p(2,1) F3", (2, 5, 8, 7), (3, 5, 3, 4), (2, 1), 1, "l", 70),
                    ("1x70x5x6 k2 s1 p1 F4", (1, 70, 5, 6), (4, 70, 2, 2), 1, 1, "m", 71),
                    ("2x9x5x3 k1 g3 F12", (2, 9, 5, 3), (12, 3, 1, 1), 0, 3, None, 72)):
                out += [c for c in shape_cases(label, xs, ws, 1, pd, g, p, seed=seed, tile=t, via_forward=True)
                        if c.name.startswith("conv2d_bwd_data")]   # (the other passes are covered above)
            # a 7x5 window (35 taps > 32: no masks): the general forward and the strided
            # bwd_data kernel at unit stride; 4*35 = 140 weights per row (a multiple of 4)
            out += shape_cases("2x4x9x8 k7x5 s1 p2", (2, 4, 9, 8), (3, 4, 7, 5), 1, 2, 1, p, seed=65, tile="s")
    return out
