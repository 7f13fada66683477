"""Launchers for kernels/gemm_tc.cu: the fully connected layers on the tensor cores.

Same names and signatures as convnet.kernel_ops.gemm (and convnet.reference),
plus `precision` ("tf32" or "bf16"), `version=` (None = SHIPPED), `tile`
("l" = 128x128, "s" = 64x64, None = chosen per shape), `splits` (the K
slices of the split-K reduction, None = chosen per shape) and `vec` (the
16-byte-load kernels fc_tc_{fwd,bwd_data}_vec_*: None = where the rows allow
them, True = required (ValueError where they do not), False = never):
    fc_forward(x, w, b)       = x @ w.T + b   (m = out, columns = batch, k = in)
    fc_backward_data(dy, w)   = dy @ w        (m = in,  columns = batch, k = out)
    fc_backward_filter(dy, x) = dy.T @ x      (m = out, columns = in,    k = batch)
The inputs are rounded inside the kernel (convnet/precision.py says how);
memory and outputs stay float32. fc_backward_bias has no product: it is
convnet.kernel_ops.gemm's.
"""
import numpy as np

from convnet import checking
from convnet import reference as R
from convnet.kernel_ops import gemm as _fp32
from convnet.kernel_ops._common import array_module, check_float32, check_same_device, is_cupy
from convnet.precision import round_to

SHIPPED = {"fc_forward": "v1", "fc_backward_data": "v1", "fc_backward_filter": "v1"}
VERSIONS = ("v1",)
PRECISIONS = ("tf32", "bf16")
# tile name -> (rows, columns, threads) of tc_gemm.cuh's block tile (gemm_tc.cu's instances)
TILES = {"l": (128, 128, 128), "s": (64, 64, 64), "m": (64, 128, 64), "h": (96, 128, 128), "t": (48, 128, 64)}
# "m" exists for the _vec kernels (fc fwd / bwd_data, conv fwd) only; "h" (4 warps of 48x64:
# 192 rows in two tiles, none padded) and "t" (2 warps of 48x64: 48 rows) for the conv backward
# passes with gathered operands only (conv2d_tc_bwd_data_s1_*, conv2d_tc_bwd_filter_*)
BASE_TILES = ("l", "s")
VEC_TILES = ("l", "s", "m")
CONV_BWD_TILES = ("l", "s", "h", "t")
VEC_ALIGN = 4           # floats per 16-byte chunk: row length, K and slice bounds must be multiples
# The launch plan (choose): the tile and K slices that maximise a small cost model of
# an sm_90 GPU with SMS SMs: TILE_RATE (the tile's main-loop bound against the tensor
# peak, benchmarks/tc_sass.py: the 64x64 warp tiles of "l" read 128 bytes of shared
# memory per HMMA, the 64x32 of "s" 192; "m", 64x64 warp tiles on a 64x128 block, 128 but
# more shared stores per HMMA than "l": 4/7; "h", 48x64 warp tiles on 96x128, 149 bytes
# read and 75 stored per HMMA: 4/7; "t", 48x64 on 48x128, 149 and 117: 0.48) x tile efficiency (useful / padded MACs) x wave
# efficiency (blocks / whole waves of SMS x TILE_BLOCKS_PER_SM), the GEMM's time at that
# fraction of PEAK plus, with splits > 1, the reduction's DRAM traffic (each slice's partial
# C written and read once: 8 bytes per element per slice at DRAM_BW). Slices at least
# MIN_K_PER_SLICE deep (each block's prologue and epilogue are not modelled).
SMS = 132
PEAK = 495e12           # dense tf32 FLOP/s of an H100/H200 (bf16 is twice: the same choice)
DRAM_BW = 4.0e12        # bytes/s, about an H200's
TILE_RATE = {"l": 2 / 3, "s": 0.4, "m": 4 / 7, "h": 4 / 7, "t": 0.48}
TILE_BLOCKS_PER_SM = {"l": 2, "s": 6, "m": 4, "h": 2, "t": 4}
MIN_K_PER_SLICE = 128
MAX_SPLITS = 64
REDUCE_THREADS = 256


def _cdiv(a, b):
    return -(-a // b)


def check_tc_precision(op, precision):
    if precision not in PRECISIONS:
        raise ValueError(f"{op}: precision must be one of {', '.join(PRECISIONS)} on the tensor-core kernels "
                         f"(fp32 runs kernel_ops.gemm), got {precision!r}")


def _version(op, version):
    v = SHIPPED[op] if version is None else version
    if v not in VERSIONS:
        raise ValueError(f"{op}: unknown version {version!r}; kept versions are {', '.join(VERSIONS)}")
    return v


def _score(tile, m, ncol, k, splits, chunk):
    bm, bn, _ = TILES[tile]
    blocks = _cdiv(m, bm) * _cdiv(ncol, bn) * splits
    slots = SMS * TILE_BLOCKS_PER_SM[tile]
    padded = _cdiv(m, bm) * bm * _cdiv(ncol, bn) * bn * splits * _cdiv(chunk, 16) * 16
    return TILE_RATE[tile] * (m * ncol * k / padded) * blocks / (_cdiv(blocks, slots) * slots)


def plan_cost(m, ncol, k, plan):
    """The cost model's time (seconds) of a (tile, splits, chunk) plan for an m x ncol x k GEMM:
    the GEMM at its modelled fraction of PEAK, plus the split-K reduction's DRAM traffic."""
    t, sp, chunk = plan
    sc = _score(t, m, ncol, max(k, 1), sp, chunk)
    return 2 * m * ncol * max(k, 1) / (PEAK * sc) + (sp > 1) * sp * m * ncol * 8 / DRAM_BW


def choose(m, ncol, k, tile=None, splits=None, align=1, tiles=BASE_TILES):
    """(tile, splits, chunk) for a GEMM of m rows, ncol columns, depth k on a kernel with
    the given tiles; chunk (the slices' depth) a multiple of `align`. tile / splits None:
    the least time in the cost model above (plan_cost; ties: the fewer splits, then the
    earlier tile)."""
    if tile is not None and tile not in tiles:
        raise ValueError(f"tile must be one of {', '.join(tiles)} (or None) here, got {tile!r}")
    if splits is not None and (isinstance(splits, bool) or not isinstance(splits, (int, np.integer))
                               or splits < 1):
        raise ValueError(f"splits must be an int >= 1, got {splits!r}")

    def plan(t, sp):
        chunk = max(1, _cdiv(k, int(sp)))
        chunk = _cdiv(chunk, align) * align
        return t, (_cdiv(k, chunk) if k else 1), chunk

    best = None
    for t in ([tile] if tile else tiles):
        if splits is not None:
            cands = [int(splits)]
        else:
            cands = range(1, max(1, min(MAX_SPLITS, k // MIN_K_PER_SLICE)) + 1)
        for sp in cands:
            p = plan(t, sp)
            cost = plan_cost(m, ncol, k, p)
            if best is None or cost < best[0] * (1 - 1e-9):
                best = (cost, p)
    return best[1]


def data_ptr(a):
    """The address of a's first element (CuPy, NumPy or an emulated device array)."""
    return a.data.ptr if is_cupy(a) else a.__array_interface__["data"][0]


def vec_rows_ok(k, *rows):
    """The _vec kernels' condition: depth k and every (array, row length) a multiple of 4
    floats, the arrays 16-byte aligned (then every row starts on 16 bytes)."""
    return k % VEC_ALIGN == 0 and all(n % VEC_ALIGN == 0 and data_ptr(a) % 16 == 0 for a, n in rows)


def pick_vec(op, vec, ok):
    if vec is None:
        return ok
    if vec and not ok:
        raise ValueError(f"{op}: vec=True needs rows of a multiple of 4 floats, 16-byte aligned")
    return bool(vec)


def strided_gemm(name, a, b, out_shape, m, ncol, k, sa, sb, sc, bias=None, tile=None, splits=None, vec=False):
    """C (out_shape, holding C[m, c] at m*sc[0] + c*sc[1]) = A @ B with A[m, k] = a[m*sa[0] + k*sa[1]],
    B[k, c] = b[c*sb[0] + k*sb[1]] (+ bias[m]), on kernel `name` + tile suffix (`name`_vec with vec:
    slices of a multiple of 4 deep)."""
    xp = array_module(a)
    out = xp.empty(out_shape, dtype=np.float32)
    if out.size == 0:
        return out
    if k == 0:                      # an empty sum: the bias alone (fc_forward's is along the last axis)
        out[...] = 0 if bias is None else bias
        return out
    tile, splits, chunk = choose(m, ncol, k, tile, splits, align=VEC_ALIGN if vec else 1,
                                 tiles=VEC_TILES if vec else BASE_TILES)
    bm, bn, threads = TILES[tile]
    if _cdiv(m, bm) > 65535 or splits > 65535:
        raise ValueError(f"{name}: {m} rows / {splits} slices exceed the grid's y/z limit")
    ws = out if splits == 1 else xp.empty((splits,) + tuple(out_shape), dtype=np.float32)
    has_bias = bias is not None
    bias = bias if has_bias else xp.zeros(1, dtype=np.float32)
    from convnet import kernels
    kern = kernels.get_function(kernel_name(name, tile, vec), like=a)
    kern((_cdiv(ncol, bn), _cdiv(m, bm), splits), threads,
         (a, b, bias, ws, m, ncol, k, sa[0], sa[1], sb[0], sb[1], sc[0], sc[1], int(has_bias), chunk))
    if splits > 1:
        red = kernels.get_function("tc_splitk_reduce", like=a)
        red(min(_cdiv(out.size, REDUCE_THREADS), 4096), REDUCE_THREADS, (ws, out, out.size, splits))
    return out


def kernel_name(name, tile, vec=False):
    """fc_tc_fwd_tf32 + tile (+ _vec before the precision)."""
    if vec:
        base, prec = name.rsplit("_", 1)
        name = f"{base}_vec_{prec}"
    return f"{name}_{tile}"


def _inputs(op, **arrays):
    out = {}
    for name, a in arrays.items():
        if a is not None:
            out[name] = check_float32(op, name, a, 1 if name == "b" else 2, contiguous=False)
    check_same_device(op, **out)
    xp = array_module(next(iter(out.values())))
    return [xp.ascontiguousarray(out[n]) if n in out else None for n in arrays]


def fc_forward(x, w, b=None, precision="tf32", version=None, tile=None, splits=None, vec=None):
    """y = x @ w.T + b on the tensor cores.  x (N, in), w (out, in), b (out,) or None -> (N, out)."""
    check_tc_precision("fc_forward", precision)
    _version("fc_forward", version)
    x, w, b = _inputs("fc_forward", x=x, w=w, b=b)
    _fp32._check_fc(x, w)
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"fc_forward: bias must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    n, n_in = x.shape
    n_out = w.shape[0]
    vec = pick_vec("fc_forward", vec, vec_rows_ok(n_in, (w, n_in), (x, n_in)))
    return strided_gemm(f"fc_tc_fwd_{precision}", w, x, (n, n_out), n_out, n, n_in,
                        (n_in, 1), (n_in, 1), (1, n_out), bias=b, tile=tile, splits=splits, vec=vec)


def fc_backward_data(dy, w, precision="tf32", version=None, tile=None, splits=None, vec=None):
    """dx = dy @ w on the tensor cores.  dy (N, out), w (out, in) -> (N, in)."""
    check_tc_precision("fc_backward_data", precision)
    _version("fc_backward_data", version)
    dy, w = _inputs("fc_backward_data", dy=dy, w=w)
    if dy.shape[1] != w.shape[0]:
        raise ValueError(f"dy has {dy.shape[1]} features, weight {tuple(w.shape)} has {w.shape[0]} outputs")
    n, n_out = dy.shape
    n_in = w.shape[1]
    vec = pick_vec("fc_backward_data", vec, vec_rows_ok(n_out, (dy, n_out)))   # B = dy^T, k-contiguous
    return strided_gemm(f"fc_tc_bwd_data_{precision}", w, dy, (n, n_in), n_in, n, n_out,
                        (1, n_in), (n_out, 1), (1, n_in), tile=tile, splits=splits, vec=vec)


def fc_backward_filter(dy, x, precision="tf32", version=None, tile=None, splits=None):
    """dw = dy.T @ x on the tensor cores.  dy (N, out), x (N, in) -> (out, in)."""
    check_tc_precision("fc_backward_filter", precision)
    _version("fc_backward_filter", version)
    dy, x = _inputs("fc_backward_filter", dy=dy, x=x)
    if dy.shape[0] != x.shape[0]:
        raise ValueError(f"dy has batch {dy.shape[0]}, x has batch {x.shape[0]}")
    n, n_out = dy.shape
    n_in = x.shape[1]
    return strided_gemm(f"fc_tc_bwd_filter_{precision}", dy, x, (n_out, n_in), n_out, n_in, n,
                        (1, n_out), (1, n_in), (n_in, 1), tile=tile, splits=splits)


# --- checks against the reference ------------------------------------------
# The reference runs in float64 on the inputs rounded as the kernel rounds them
# (convnet.precision.round_to), so what is left is the float32 accumulation:
# normwise relative error 1e-5, the fp32 kernels' tolerance. A fragment in the
# wrong lane or register gives errors of order 1.

SMALL_SHAPES = [
    ("3x37 -> 29", 3, 37, 29),
    ("70x5 -> 67", 70, 5, 67),      # K shorter than one engine step; several row tiles
    ("1x130 -> 1", 1, 130, 1),
]
ALEXNET_SHAPES = _fp32.ALEXNET_SHAPES
TOL = 1e-5


def _rounded(f, precision, n_rounded):
    """f on float64 inputs of which the first n_rounded are rounded to `precision`."""
    def ref(*args):
        return f(*[round_to(a, precision).astype(np.float64) if i < n_rounded else a for i, a in enumerate(args)])
    return ref


def _misaligned(a):
    """A C-contiguous copy of a that starts 4 bytes past a 16-byte boundary (same device)."""
    xp = array_module(a)
    buf = xp.empty(a.size + 4, dtype=np.float32)
    off = next(i for i in range(4) if (data_ptr(buf) + 4 * i) % 16 == 4)
    out = buf[off:off + a.size].reshape(a.shape)
    out[...] = a
    return out


def shape_cases(label, batch, n_in, n_out, precision, seed=0, scale="small", tile=None, splits=None, vec=None,
                misalign=False):
    """vec as the launchers take it (None: where the rows allow); misalign: the inputs start 4 bytes
    past a 16-byte boundary (so vec=None must fall back to the general kernels)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n_in))
    w = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
    b = rng.standard_normal(n_out)
    dy = rng.standard_normal((batch, n_out))
    tol = TOL if scale == "small" else 1e-4
    kw = dict(precision=precision, tile=tile, splits=splits, vec=vec)
    tile_b = None if tile == "m" else tile      # fc_backward_filter has no "m" tile
    tag = (f"{precision}" + (f" tile={tile}" if tile else "") + (f" splits={splits}" if splits else "")
           + (f" vec={vec}" if vec is not None else "") + (" misaligned" if misalign else ""))
    mis = _misaligned if misalign else (lambda a: a)
    use_fwd = vec if vec is not None else (n_in % VEC_ALIGN == 0 and not misalign)
    use_bwd = vec if vec is not None else (n_out % VEC_ALIGN == 0 and not misalign)

    def names(base, m, ncol, k, v, tile=tile):     # the kernels the launcher runs for this GEMM
        t, sp, _ = choose(m, ncol, k, tile, splits, align=VEC_ALIGN if v else 1,
                          tiles=VEC_TILES if v else BASE_TILES)
        return (kernel_name(base, t, v),) + (("tc_splitk_reduce",) if sp > 1 else ())

    return [
        checking.Case(f"fc_forward tc {tag} {label}", [x, w, b], _rounded(R.fc_forward, precision, 2),
                      lambda x, w, b: fc_forward(mis(x), mis(w), b, **kw), tol,
                      names(f"fc_tc_fwd_{precision}", n_out, batch, n_in, use_fwd), scale),
        checking.Case(f"fc_backward_data tc {tag} {label}", [dy, w], _rounded(R.fc_backward_data, precision, 2),
                      lambda dy, w: fc_backward_data(mis(dy), mis(w), **kw), tol,
                      names(f"fc_tc_bwd_data_{precision}", n_in, batch, n_out, use_bwd), scale),
        checking.Case(f"fc_backward_filter tc {tag} {label}", [dy, x], _rounded(R.fc_backward_filter, precision, 2),
                      lambda dy, x: fc_backward_filter(mis(dy), mis(x), precision=precision, tile=tile_b,
                                                       splits=splits), tol,
                      names(f"fc_tc_bwd_filter_{precision}", n_out, n_in, batch, False, tile_b), scale),
    ]


def cases(scale="small"):
    """Every tensor-core fc op, both precisions, against the float64 reference on rounded inputs."""
    if scale == "small":
        shapes = SMALL_SHAPES
    elif scale == "alexnet":
        shapes = ALEXNET_SHAPES
    else:
        raise ValueError(f"unknown scale {scale!r}: choose 'small' or 'alexnet'")
    out = []
    for p in PRECISIONS:
        for i, (label, batch, n_in, n_out) in enumerate(shapes):
            # the odd small shapes on the small tile (the launcher's cost model takes the big one
            # for grids this small); the big tile and the launcher's own choice below
            out += shape_cases(label, batch, n_in, n_out, p, seed=i, scale=scale,
                               tile="s" if scale == "small" else None)
        if scale == "small":
            # the big tile, and split-K with its reduction (slices that end inside an engine step)
            out += shape_cases("130x45 -> 131", 130, 45, 131, p, seed=7, tile="l")
            out += shape_cases("5x100 -> 19 ", 5, 100, 19, p, seed=8, tile="s", splits=3)
            # the _vec kernels: K = 36 (two tiles and 4), partial row/column tiles; the same
            # shapes on the general kernels; split-K slices of 36, 36, 28 (rounded to 4s);
            # the big tile; inputs 4 bytes off 16-byte alignment (the general kernels then)
            out += shape_cases("6x36 -> 20", 6, 36, 20, p, seed=9, tile="s")
            out += shape_cases("6x36 -> 20", 6, 36, 20, p, seed=9, tile="s", vec=False)
            out += shape_cases("6x36 -> 20", 6, 36, 20, p, seed=9)
            out += shape_cases("70x36 -> 136", 70, 36, 136, p, seed=13, tile="m", vec=True)   # the 64x128 tile
            out += shape_cases("5x100 -> 24", 5, 100, 24, p, seed=10, splits=3)
            out += shape_cases("130x52 -> 132", 130, 52, 132, p, seed=11, tile="l")
            out += shape_cases("7x40 -> 12", 7, 40, 12, p, seed=12, misalign=True)
    return out
