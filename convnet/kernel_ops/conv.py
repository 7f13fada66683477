"""Launchers for kernels/conv.cu: 2-D convolution forward, backward-data,
backward-filter and backward-bias on the CUDA kernels.

Same names and signatures as convnet.reference, plus `version=` (None: on a
GPU the tuner's choice, convnet.tune; on the emulation the shipped version,
SHIPPED below, which is also the tuner's fallback). NumPy float32 arrays run on the CPU
emulation, CuPy float32 arrays on their GPU; outputs are allocated with the
inputs' array module. Layouts are NCHW; weights (F, C/groups, KH, KW).
Every launcher computes the convolution's geometry once, as a `Geometry`
(the Python twin of conv.cu's `Shape`), and sizes its grid from it.
"""
import functools
import math
from dataclasses import dataclass

import numpy as np

from convnet import checking
from convnet import reference as R
from convnet.kernel_ops._common import (INT32_LIMIT, array_module, check_float32, check_int,
                                        check_same_device, is_cupy)

# The version each op ships (the one place that names it).
SHIPPED = {
    "conv2d_forward": "v2",
    "conv2d_backward_data": "v2",
    "conv2d_backward_filter": "v2",
    "conv2d_backward_bias": "v2",
}
VERSIONS = ("v1", "v2", "v3", "v4", "winograd", "winograd4")
# The direct (implicit-GEMM) versions; "winograd" is F(2x2, 3x3) and "winograd4" F(4x4,
# 3x3), for 3x3 filters at stride 1, forward and backward-data; both run v4 everywhere
# else (winograd_applies).
DIRECT_VERSIONS = ("v1", "v2", "v3", "v4")
# Passes with v3 and v4 kernels (conv2d_backward_bias has neither: BIAS_KERNEL).
V3_PASSES = ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter")
BIAS_KERNEL = {"v1": "v1", "v2": "v2", "v3": "v2", "v4": "v2", "winograd": "v2", "winograd4": "v2"}

# conv.cu's v2 tile (conv::BM, BN, V2_THREADS), v3 tile (conv::V3_BM, V3_BN,
# V3_THREADS) and the v1 block size.
V2_TILE_M, V2_TILE_N, V2_THREADS = 64, 64, 256
V3_TILE_M, V3_TILE_N, V3_THREADS = 128, 128, 256
# v3 row heights: 128 (conv::V3_BM, kernels conv2d_*_v3) and 64 (conv::V3_BM_SMALL,
# kernels conv2d_*_v3_m64); _v3_rows picks one per layer.
V3_ROWS = {128: "", 64: "_m64"}
V1_THREADS = 256
# v4 (conv::V4_*): row tile 128 (256 threads), 96 (*_m96, 192 threads), 64 (*_m64,
# 128 threads) or 48 (*_m48, 128 threads of 6 x 8 accumulators), 128 columns, K tiles
# of 16, 3 shared-memory stages; blocks per SM that __launch_bounds__ sets (2 x 256,
# 2 x 192, 4 x 128, 4 x 128 threads); _v4_rows picks the tile.
V4_ROWS = {128: "", 96: "_m96", 64: "_m64", 48: "_m48"}
V4_THREADS = {128: 256, 96: 192, 64: 128, 48: 128}      # conv::v4_threads
V4_TILE_N, V4_BK, V4_STAGES = 128, 16, 3
V4_BLOCKS_PER_SM = {128: 2, 96: 2, 64: 4, 48: 4}
V4_MASK_TAPS = 32              # taps a 32-bit column mask can hold
# Dynamic shared memory a v4 block may use: 99 KiB, the most an sm_86/sm_89 block
# can opt into (sm_80: 163 KiB, sm_90: 227 KiB). Larger tables run v3 (_v4_plan).
V4_SMEM_LIMIT = 99 * 1024
# Split-K: at least MIN_K_PER_SLICE reduction steps per slice, at most MAX_SPLITS
# slices (the workspace is splits x the output), the count with the least predicted
# time (_best_splits: whole waves, plus the workspace's traffic).
MIN_K_PER_SLICE = 256
MAX_SPLITS = 256
# The machine the split counts are sized for: an H100 SXM5 (132 SMs, FP32 FMA peak
# 66.9 TFLOP/s = 132 x 128 lanes x 2 x 1.98 GHz, HBM3 3.35 TB/s). On a GPU, its own SM count.
DEFAULT_SMS = 132
MODEL_SM_FLOPS = 66.9e12 / 132
MODEL_HBM = 3.35e12


# --- geometry and argument checks -----------------------------------------------------

@dataclass(frozen=True)
class Geometry:
    """One convolution's geometry: the kernels' 14 shape scalars (conv.cu's Shape,
    same names and order) and what is derived from them."""
    n: int
    c: int
    h: int
    w: int
    f: int
    kh: int
    kw: int
    oh: int
    ow: int
    sh: int
    sw: int
    ph: int
    pw: int
    groups: int

    @property
    def cg(self):
        return self.c // self.groups

    @property
    def fg(self):
        return self.f // self.groups

    @property
    def taps(self):
        return self.kh * self.kw

    @property
    def x_shape(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def w_shape(self):
        return (self.f, self.cg, self.kh, self.kw)

    @property
    def y_shape(self):
        return (self.n, self.f, self.oh, self.ow)

    @property
    def args(self):
        """The 14 scalars, in the order of every conv kernel's signature (CONV_SHAPE_ARGS)."""
        return (self.n, self.c, self.h, self.w, self.f, self.kh, self.kw, self.oh, self.ow,
                self.sh, self.sw, self.ph, self.pw, self.groups)

    def gemm(self, pass_):
        """(M, NCOL, K) of one group's implicit GEMM for pass "fwd", "bwd_data" or "bwd_filter"."""
        if pass_ == "fwd":
            return self.fg, self.n * self.oh * self.ow, self.cg * self.taps
        if pass_ == "bwd_data":
            return self.cg, self.n * self.h * self.w, self.fg * self.taps
        if pass_ == "bwd_filter":
            return self.fg, self.cg * self.taps, self.n * self.oh * self.ow
        raise ValueError(f"unknown pass {pass_!r}: fwd, bwd_data or bwd_filter")

    @property
    def flops(self):
        """2 * multiply-adds of any one pass."""
        return 2 * self.n * self.f * self.oh * self.ow * self.cg * self.taps

    @classmethod
    def of(cls, op, x_shape, w_shape, stride=1, pad=0, groups=1):
        """The geometry of x_shape (N, C, H, W) convolved with w_shape (F, C/groups, KH, KW),
        checked: a clear error names op and the argument."""
        n, c, h, w = _shape4(op, "x_shape", x_shape)
        f, cg, kh, kw = _shape4(op, "w_shape", w_shape)
        if min(c, h, w) < 1 or min(f, cg, kh, kw) < 1:
            raise ValueError(f"{op}: empty convolution: input {(n, c, h, w)}, weight {(f, cg, kh, kw)} "
                             f"(only the batch may be 0)")
        sh, sw = _pair(op, "stride", stride, 1)
        ph, pw = _pair(op, "pad", pad, 0)
        groups = check_int(op, "groups", groups, 1)
        if c % groups:
            raise ValueError(f"{op}: input channels {c} are not divisible by groups={groups}")
        if f % groups:
            raise ValueError(f"{op}: filters {f} are not divisible by groups={groups}")
        if cg != c // groups:
            raise ValueError(f"{op}: weight has {cg} input channels per group, input has {c} channels "
                             f"in {groups} group(s) ({c // groups} per group)")
        if kh > h + 2 * ph or kw > w + 2 * pw:
            raise ValueError(f"{op}: kernel {kh}x{kw} is larger than the padded input "
                             f"{h + 2 * ph}x{w + 2 * pw}")
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        for what, size in (("input", n * c * h * w), ("output", n * f * oh * ow)):
            if size > INT32_LIMIT:
                raise ValueError(f"{op}: {what} of {size} elements; the kernels index with int32 (< 2^31)")
        return cls(n, c, h, w, f, kh, kw, oh, ow, sh, sw, ph, pw, groups)


def _shape4(op, name, shape):
    if not isinstance(shape, (tuple, list)) or len(shape) != 4:
        raise ValueError(f"{op}: {name} must be a 4-tuple (N, C, H, W) / (F, C/groups, KH, KW), got {shape!r}")
    return tuple(check_int(op, name, s, 0) for s in shape)


def _pair(op, name, v, minimum):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{op}: {name} must be an int or an (h, w) pair, got {v!r}")
        return check_int(op, name, v[0], minimum), check_int(op, name, v[1], minimum)
    v = check_int(op, name, v, minimum)
    return v, v


def _input(op, name, a, ndim):
    """a as a C-contiguous float32 array of ndim dimensions (non-contiguous input is copied)."""
    if isinstance(a, np.ndarray) or is_cupy(a):
        a = array_module(a).ascontiguousarray(a)
    return check_float32(op, name, a, ndim)


def _module(op, **arrays):
    check_same_device(op, **arrays)
    return array_module(next(iter(arrays.values())))


def _version(op, version):
    v = SHIPPED[op] if version is None else version
    if v not in VERSIONS:
        raise ValueError(f"{op}: unknown version {version!r}; kept versions are {', '.join(VERSIONS)}")
    return v


def _check_dy(op, dy, geo):
    if tuple(dy.shape) != geo.y_shape:
        raise ValueError(f"{op}: dy has shape {tuple(dy.shape)}, input {geo.x_shape} with weight "
                         f"{geo.w_shape} gives output shape {geo.y_shape}")


def _cdiv(a, b):
    return -(-a // b)


def _get(name, like):
    from convnet import kernels
    return kernels.get_function(name, like=like)


# --- tiles, waves and split-K ---------------------------------------------------------

def _v3_rows(m):
    """The v3 row tile for a GEMM of m rows: the one that pads m the least (ties: 128).
    AlexNet: 96, 128, 256, 384 rows -> 128; 48, 192 rows -> 64."""
    return 64 if _cdiv(m, 64) * 64 < _cdiv(m, 128) * 128 else 128


def _v4_rows(m):
    """The v4 row tile for a GEMM of m rows: the one that pads m the least (ties: the
    taller). AlexNet: 128, 256, 384 -> 128; 96, 192 -> 96; 48 -> 48."""
    return min(V4_ROWS, key=lambda r: (_cdiv(m, r) * r, -r))


def _tile(v, m, rows=None):
    """(rows, columns, threads, kernel name suffix) of the implicit-GEMM block tile of
    version v2, v3 or v4 for a GEMM of m rows; rows forces the row tile (None: chosen)."""
    if v in ("v1", "v2"):
        if rows is not None:
            raise ValueError(f"tile_rows is a v3/v4 setting, got version {v!r}")
        return (V2_TILE_M, V2_TILE_N, V2_THREADS, "") if v == "v2" else (0, 0, V1_THREADS, "")
    table = V3_ROWS if v == "v3" else V4_ROWS
    if rows is None:
        rows = _v3_rows(m) if v == "v3" else _v4_rows(m)
    if rows not in table:
        raise ValueError(f"tile_rows must be one of {sorted(table)} (or None), got {rows!r}")
    if v == "v3":
        return rows, V3_TILE_N, V3_THREADS, V3_ROWS[rows]
    return rows, V4_TILE_N, V4_THREADS[rows], V4_ROWS[rows]


def device_sms(like=None):
    """Streaming multiprocessors of like's GPU (a CuPy array), else DEFAULT_SMS."""
    if like is not None and is_cupy(like):
        import cupy
        return cupy.cuda.Device(like.device.id).attributes["MultiProcessorCount"]
    return DEFAULT_SMS


def wave_seconds(blocks, steps, sms, bps, block_step):
    """Predicted seconds of `blocks` blocks of `steps` K steps each: whole waves of
    sms x bps blocks, bps sharing an SM's FP32 pipe (bps x block_step per step), and a
    last partial wave with ceil(rest / sms) blocks per SM. block_step: one block's step
    alone on an SM at peak (_step_seconds)."""
    full, rest = divmod(blocks, sms * bps)
    return steps * block_step * (full * bps + _cdiv(rest, sms))


def wave_fill(blocks, sms, bps):
    """The share of block slots busy under wave_seconds' accounting: blocks over
    sms x (bps per full wave + the blocks per SM of the last partial wave)."""
    full, rest = divmod(blocks, sms * bps)
    return blocks / (sms * (full * bps + _cdiv(rest, sms)))


def _split_time(blocks, k_steps, splits, sms, bps, block_step, out_bytes):
    """Predicted seconds of a split-K launch (wave_seconds of blocks x splits blocks of
    ceil(k_steps / splits) steps) plus (splits > 1) the workspace traffic: the slices
    written and read back by the reduction, at MODEL_HBM bytes/s."""
    t = wave_seconds(blocks * splits, _cdiv(k_steps, splits), sms, bps, block_step)
    return t + (2 * splits * out_bytes / MODEL_HBM if splits > 1 else 0.0)


def _best_splits(blocks, k_steps, sms, bps, block_step, out_bytes, min_steps, max_splits):
    """The split count with the least _split_time, each slice at least min_steps long
    (ties: more slices, i.e. more blocks resident per SM to hide latency with)."""
    top = max(1, min(max_splits, k_steps // max(1, min_steps)))
    return min(range(1, top + 1),
               key=lambda s: (_split_time(blocks, k_steps, s, sms, bps, block_step, out_bytes), -s))


def _step_seconds(rows, cols, bk):
    """Seconds one block takes for one K step alone on an SM at FP32 peak."""
    return 2.0 * rows * cols * bk / MODEL_SM_FLOPS


def _ffma_share(kernel):
    """The FFMA share of kernel's sm_90 main loop (convnet.tune.FFMA_SHARE, read from the
    SASS; 1.0 for a kernel it does not list): the row tiles' K steps are not equally
    dense (the 48-row tile's 6 x 8 fragments read A as a float4 and a float2)."""
    from convnet import tune            # tune imports this module; imported at call time
    return tune.FFMA_SHARE.get(kernel, 1.0)


def backward_filter_splits(geo, version="v2", tile_rows=None, sms=DEFAULT_SMS):
    """(splits, k_chunk) for conv2d_bwd_filter_v2/v3: the N*OH*OW reduction cut into
    `splits` slices of k_chunk (a multiple of 8), counted in whole waves of sms x 2
    blocks (_best_splits)."""
    m, ncol, k_total = geo.gemm("bwd_filter")
    tm, tn, _, _ = _tile(version, m, tile_rows)
    blocks = geo.groups * _cdiv(m, tm) * _cdiv(ncol, tn)
    steps = _cdiv(k_total, 8)
    splits = _best_splits(blocks, steps, sms, 2, _step_seconds(tm, tn, 8), 4 * geo.f * ncol,
                          MIN_K_PER_SLICE // 8, min(MAX_SPLITS, 65535 // geo.groups))
    return _slices(k_total, splits)


def _slices(k_total, splits):
    chunk = _cdiv(_cdiv(k_total, splits), 8) * 8
    return _cdiv(k_total, chunk), chunk


@dataclass(frozen=True)
class V4Plan:
    """How one v4 launch runs (conv.cu, v4): row tile and kernel suffix; masked (columns
    test their taps) or not; run, the padded length of each tap's run of channels in
    the tap-major K order (fwd, bwd_data) or of the (tap, c) columns (bwd_filter; 0: the
    (c,i,j) order, unmasked); kp, the padded K (fwd, bwd_data); K tiles in all and per
    slice; slices; table entries per block; bytes of shared memory; predicted seconds
    (the main loop at FP32 peak over its FFMA share, _ffma_share, plus the workspace)."""
    rows: int
    suffix: str
    masked: int
    run: int
    kp: int
    k_tiles: int
    tps: int
    splits: int
    tab_entries: int
    smem: int
    seconds: float = 0.0            # predicted: the main loop at peak / FFMA share (_split_time)

    @property
    def threads(self):
        return V4_THREADS[self.rows]


def _v4_smem(rows, tab_entries):
    """Bytes of dynamic shared memory of a v4 block (implicit_gemm_v4's layout)."""
    return 4 * V4_STAGES * V4_BK * ((rows + 4) + V4_TILE_N) + 8 * tab_entries


def _v4_brows(rows):
    """K rows of one column a thread copies per K tile (fwd, bwd_data): they share one tap.
    The copies are shared by the first (threads // 128) * 128 threads (implicit_gemm_v4's BT)."""
    return V4_BK * V4_TILE_N // (V4_THREADS[rows] // V4_TILE_N * V4_TILE_N)


V4_SPARE = (V4_STAGES - 1) * V4_BK      # conv::V4_SPARE: K rows loaded past a slice's end


def v4_plan(geo, pass_, rows=None, splits=None, sms=DEFAULT_SMS):
    """The V4Plan of one pass, or None where v4 does not apply (then the launchers run
    v3): more than V4_MASK_TAPS taps with padding; bwd_data at a stride other than 1
    or with more than V4_MASK_TAPS taps; a table that does not fit V4_SMEM_LIMIT.
    rows None: the row tile with the least predicted time (V4Plan.seconds; ties: the
    one that pads M least, then the taller)."""
    if rows is None:
        m = geo.gemm(pass_)[0]
        plans = [p for p in (v4_plan(geo, pass_, r, splits, sms) for r in V4_ROWS) if p is not None]
        if not plans:
            return None
        return min(plans, key=lambda p: (p.seconds, _cdiv(m, p.rows) * p.rows, -p.rows))
    m, ncol, k = geo.gemm(pass_)
    rows, _, _, suffix = _tile("v4", m, rows)
    if geo.taps <= V4_MASK_TAPS:
        masked = 1
    elif pass_ != "bwd_data" and geo.ph == geo.pw == 0:
        masked = 0                       # no tap leaves the image
    else:
        return None
    if pass_ == "bwd_data" and (geo.sh, geo.sw) != (1, 1):
        return None
    if pass_ == "bwd_filter":
        if geo.oh * geo.ow < V4_BK:      # an image's last K tile starts at OH*OW - 16
            return None
        per_image = _cdiv(geo.oh * geo.ow, V4_BK)
        run = _cdiv(geo.cg, 8) * 8 if masked else 0
        ncol = geo.taps * run if masked else ncol
        kp, k_tiles, min_tiles = 0, geo.n * per_image, 4
    else:
        channels = geo.cg if pass_ == "fwd" else geo.fg
        run = _cdiv(channels, _v4_brows(rows)) * _v4_brows(rows) if masked else 0
        kp = _cdiv(geo.taps * run if masked else k, V4_BK) * V4_BK
        k_tiles, min_tiles = kp // V4_BK, 8
    blocks = geo.groups * _cdiv(m, rows) * _cdiv(ncol, V4_TILE_N)
    name = {"fwd": "conv2d_fwd", "bwd_data": "conv2d_bwd_data", "bwd_filter": "conv2d_bwd_filter"}[pass_]
    step = _step_seconds(rows, V4_TILE_N, V4_BK) / _ffma_share(f"{name}_v4{suffix}")
    if splits is None:
        bps = V4_BLOCKS_PER_SM[rows]
        out_bytes = 4 * geo.groups * m * ncol
        splits = _best_splits(blocks, k_tiles, sms, bps, step, out_bytes,
                              min_tiles, min(MAX_SPLITS, 65535 // geo.groups))
    tps = _cdiv(k_tiles, min(splits, k_tiles))
    splits = _cdiv(k_tiles, tps)
    tab = per_image * V4_BK if pass_ == "bwd_filter" else tps * V4_BK + V4_SPARE
    smem = _v4_smem(rows, tab)
    if smem > V4_SMEM_LIMIT:
        return None
    bps = V4_BLOCKS_PER_SM[rows]
    seconds = _split_time(blocks, k_tiles, splits, sms, bps, step, 4 * geo.groups * m * ncol)
    return V4Plan(rows, suffix, masked, run, kp, k_tiles, tps, splits, tab, smem, seconds)


@functools.lru_cache(maxsize=256)
def _v4_table_np(geo, pass_, masked, run, kp):
    """implicit_gemm_v4's table, (2, entries) int32: the offs, then the bits (see conv.cu, v4).
    fwd/bwd_data: one entry per row of the launcher's K order (kp + V4_SPARE entries);
    bwd_filter: one per row v < Pp of an image's K tiles. Tile t covers the pixels from
    min(16 t, OH*OW - 16) (OH*OW >= 16: v4_plan), so dy's rows need no test; the rows of
    the last tile that the tile before covered have bits 0 (B reads 0 there)."""
    taps = np.arange(geo.taps)
    i, j = taps // geo.kw, taps % geo.kw
    if pass_ == "bwd_filter":
        v = np.arange(_cdiv(geo.oh * geo.ow, V4_BK) * V4_BK)
        start = np.minimum(v // V4_BK * V4_BK, geo.oh * geo.ow - V4_BK)
        p = start + v % V4_BK
        oh, ow = p // geo.ow, p % geo.ow
        off = oh * geo.sh * geo.w + ow * geo.sw
        if masked:
            ih = (oh * geo.sh - geo.ph)[:, None] + i[None, :]
            iw = (ow * geo.sw - geo.pw)[:, None] + j[None, :]
            ok = (ih >= 0) & (ih < geo.h) & (iw >= 0) & (iw < geo.w)
            bits = (ok.astype(np.int64) << taps[None, :]).sum(axis=1)
        else:
            bits = np.ones_like(p)
        live = p >= v // V4_BK * V4_BK   # not a row the tile before covered
        off, bits = np.where(live, off, 0), np.where(live, bits, 0)
    else:
        kk = np.arange(kp + V4_SPARE)
        if masked:                      # k = (tap, c), c < run; padding channels read c = 0
            tap, c = kk // run, kk % run
            c = np.where(c < (geo.cg if pass_ == "fwd" else geo.fg), c, 0)
            live = kk < geo.taps * run
            bits = np.where(live, np.int64(1) << np.minimum(tap, geo.taps - 1), 0)
        else:                           # k = (c,i,j); rows past K read k = 0 (A is 0 there)
            c, tap = kk // geo.taps, kk % geo.taps
            live = kk < geo.cg * geo.taps
            c, tap = np.where(live, c, 0), np.where(live, tap, 0)
            bits = np.where(kk < kp, 1, 0)
        ki, kj = tap // geo.kw, tap % geo.kw
        if pass_ == "fwd":
            off = c * geo.h * geo.w + ki * geo.w + kj
        else:
            off = c * geo.oh * geo.ow - ki * geo.ow - kj
        off = np.where(kk < kp, off, 0)
    table = np.stack([off, bits]).astype(np.int64)
    return table.astype(np.uint32).view(np.int32)        # bits: the low 32, as the kernel reads them


_V4_TABLES = {}


def _v4_table(geo, pass_, plan, like):
    """_v4_table_np on like's backend (cached per GPU)."""
    table = _v4_table_np(geo, pass_, plan.masked, plan.run, plan.kp)
    if not is_cupy(like):
        return array_module(like).asarray(table)     # an emulated device's array where like is one
    key = (geo, pass_, plan.masked, plan.run, plan.kp, like.device.id)
    if key not in _V4_TABLES:
        import cupy
        with cupy.cuda.Device(like.device.id):
            _V4_TABLES[key] = cupy.asarray(table)
    return _V4_TABLES[key]


def _v4_weights(xp, w, geo, pass_, plan):
    """The weights as v4's A operand at[g, k, m] in the plan's K order, zero-padded, stored
    tiled by rows (_v4_tiled: (G, Mp / rows, kp, rows)), with V4_SPARE * Mp spare floats
    after the end. fwd: at[g, k, f] = w[g*Fg+f, c, i, j] with k = (tap, c) (masked) or
    (c,i,j); bwd_data: at[g, (tap, f), c] = w[g*Fg+f, c, i, j]."""
    g, fg, cg, taps = geo.groups, geo.fg, geo.cg, geo.taps
    m, _, _ = geo.gemm(pass_)
    w4 = w.reshape(g, fg, cg, taps)
    if pass_ == "fwd":
        if plan.masked:                 # (G, taps, Cg, Fg) into runs of plan.run channels
            src, runs = w4.transpose(0, 3, 2, 1), (taps, plan.run, cg)
        else:                           # (G, Cg*taps, Fg)
            src, runs = w4.reshape(g, fg, cg * taps).transpose(0, 2, 1), None
    else:                               # (G, taps, Fg, Cg)
        src, runs = w4.transpose(0, 3, 1, 2), (taps, plan.run, fg)
    return _v4_tiled(xp, src, (g,), plan.kp, m, plan.rows, runs)


def _v4_tiled(xp, src, lead, kp, m, rows, runs=None):
    """implicit_gemm_v4's A: flat (*lead, Mp / rows, kp, rows) (lead: the GEMM's groups,
    (G,) or Winograd's (16, G)), each row tile's K rows `rows` floats apart, then
    V4_SPARE * Mp zeros (the loads past a slice's end). src (*lead, K, M) holds rows
    k < K of at[.., k, m]; runs = (taps, run, channels): src is (*lead, taps, channels, M)
    and tap t's channels go to rows t*run ... (the padded runs). Written in place, one row
    tile at a time (no second copy of at)."""
    mp = _cdiv(m, rows) * rows
    size = int(np.prod(lead)) * kp * mp
    flat = xp.zeros(size + V4_SPARE * mp, dtype=np.float32)
    tiled = flat[:size].reshape(tuple(lead) + (mp // rows, kp, rows))
    for t in range(mp // rows):
        lo, hi = t * rows, min(m, (t + 1) * rows)
        if runs is None:
            tiled[..., t, :src.shape[-2], :hi - lo] = src[..., lo:hi]
        else:
            n_taps, run, channels = runs
            view = tiled[..., t, :n_taps * run, :].reshape(tuple(lead) + (n_taps, run, rows))
            view[..., :channels, :hi - lo] = src[..., lo:hi]
    return flat


def _v4_reduce(xp, ws, out, splits, like, b=None, inner=1, relu=False):
    """out = sum of the splits slices of ws in order (+ b per channel, ReLU): conv2d_v4_reduce."""
    has_bias = b is not None
    if b is None:
        b = xp.zeros(1, dtype=np.float32)
    nb = b.size
    _get("conv2d_v4_reduce", like)(_cdiv(out.size, V1_THREADS), V1_THREADS,
                                   (ws, b, out, out.size, splits, inner, nb, int(has_bias), int(relu)))


# --- Winograd F(2x2, 3x3) (conv.cu: conv2d_wino_*) --------------------------------------

# F(2x2, 3x3)'s transforms (Lavin and Gray 2016): Y = A^T [(G g G^T) . (B^T d B)] A.
WINO_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
WINO_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
WINO_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])


def _wino4_matrices(a):
    """F(4x4, 3x3)'s (B^T, G, A^T) for the interpolation points 0, +-1, +-a and infinity
    (Toom-Cook: A^T[i, j] = p_j^i, G[j, k] = p_j^k / prod_{l != j} (p_j - p_l), and B^T
    the rows conv.cu's wino4_bt computes)."""
    pts = [0.0, 1.0, -1.0, a, -a]
    at, g = np.zeros((4, 6)), np.zeros((6, 3))
    for j, p in enumerate(pts):
        at[:, j] = p ** np.arange(4)
        g[j] = p ** np.arange(3) / np.prod([p - q for l, q in enumerate(pts) if l != j])
    at[3, 5], g[5, 2] = 1, 1
    a2 = a * a
    bt = np.array([[a2, 0, -(a2 + 1), 0, 1, 0], [0, -a2, -a2, 1, 1, 0], [0, a2, -a2, -1, 1, 0],
                   [0, -a, -1, a, 1, 0], [0, a, -1, -a, 1, 0], [0, a2, 0, -(a2 + 1), 0, 1]])
    return bt, g, at


# F(4x4, 3x3) at the points 0, +-1, +-2, infinity (conv::WINO4_POINT): Lavin and Gray's
# matrices. B^T and A^T are small integers (exact in float32); G has 1/6, 1/12 and 1/24
# and is applied in float64 on the weights (U rounded once).
WINO4_POINT = 2.0
WINO4_BT, WINO4_G, WINO4_AT = _wino4_matrices(WINO4_POINT)
# Output tile m -> (G, kernel name prefix): F(m x m, 3x3) has (m + 2)^2 transform positions.
WINO_TILES = {2: (WINO_G, "conv2d_wino"), 4: (WINO4_G, "conv2d_wino4")}
WINO_VERSIONS = {"winograd": 2, "winograd4": 4}


def winograd_applies(geo, pass_):
    """F(2x2, 3x3) and F(4x4, 3x3) run fwd, and bwd_data (as a forward of dy with the flipped filters, pad
    2 - pad), for 3x3 filters at stride 1 (pad <= 2 for bwd_data) whose GEMM table fits."""
    if (geo.kh, geo.kw, geo.sh, geo.sw) != (3, 3, 1, 1) or pass_ == "bwd_filter":
        return False
    if pass_ == "bwd_data" and max(geo.ph, geo.pw) > 2:
        return False
    channels = geo.cg if pass_ == "fwd" else geo.fg
    return _v4_smem(64, _cdiv(channels, V4_BK) * V4_BK + V4_SPARE) <= V4_SMEM_LIMIT


def winograd_rows(geo, sms=DEFAULT_SMS, tile=2):
    """The row tile of conv2d_wino_gemm for a forward geometry and output tile (2: F(2x2,
    3x3), 4: F(4x4, 3x3)): the least predicted time of its (tile + 2)^2 * G GEMMs (whole
    waves x K tiles; ties: less padding, then taller)."""
    _, _, p = winograd_tiles(geo, tile)
    k_tiles = _cdiv(geo.cg, V4_BK)

    def seconds(r):
        bps = V4_BLOCKS_PER_SM[r]
        blocks = (tile + 2) ** 2 * geo.groups * _cdiv(geo.fg, r) * _cdiv(p, V4_TILE_N)
        step = _step_seconds(r, V4_TILE_N, V4_BK) / _ffma_share(f"conv2d_wino_gemm{V4_ROWS[r]}")
        return _split_time(blocks, k_tiles, 1, sms, bps, step, 0)
    return min(V4_ROWS, key=lambda r: (seconds(r), _cdiv(geo.fg, r) * r, -r))


def winograd_tiles(geo, tile=2):
    """(TH, TW, P): tile x tile output tiles per image row and column, and in all."""
    th, tw = _cdiv(geo.oh, tile), _cdiv(geo.ow, tile)
    return th, tw, geo.n * th * tw


@functools.lru_cache(maxsize=64)
def _wino_table_np(cg, p, kp):
    """conv2d_wino_gemm's (off, bits) table: off = c*P for c < Cg (0 beyond: A is 0
    there), bits 1 up to kp and 0 in the spare rows."""
    c = np.arange(kp + V4_SPARE)
    off = np.where(c < cg, c * p, 0)
    bits = (c < kp).astype(np.int64)
    return np.stack([off, bits]).astype(np.int64).astype(np.uint32).view(np.int32)


def _wino_forward(xp, x, w, b, geo, relu, rows=None, tile=2):
    """y = conv(x, w) + b (ReLU) for a 3x3 stride-1 geometry by F(tile x tile, 3x3) (tile
    2 or 4); rows: the GEMM's row tile (None: winograd_rows)."""
    g, fg, cg = geo.groups, geo.fg, geo.cg
    gmat, name = WINO_TILES[tile]
    xi = (tile + 2) ** 2                       # transform positions: 16 or 36
    th, tw, p = winograd_tiles(geo, tile)
    rows, _, threads, suffix = _tile("v4", fg, rows or winograd_rows(geo, tile=tile))
    kp = _cdiv(cg, V4_BK) * V4_BK
    # F(2x2)'s G is exact in float32 (0, +-1/2, 1); F(4x4)'s 1/6 and 1/24 are not: there
    # U is made in float64 and rounded once.
    dt = np.float32 if tile == 2 else np.float64
    gm = xp.asarray(gmat, dtype=dt)
    u = xp.einsum("ai,fcij,bj->fcab", gm, w.astype(dt), gm).astype(np.float32).reshape(g, fg, cg, xi)
    flat = _v4_tiled(xp, u.transpose(3, 0, 2, 1), (xi, g), kp, fg, rows)        # U (xi, G, Cg, Fg)
    tab = xp.asarray(_wino_table_np(cg, p, kp))
    v = xp.empty(xi * geo.c * p, dtype=np.float32)
    m = xp.empty(xi * geo.f * p, dtype=np.float32)
    _get(f"{name}_input", x)(_cdiv(p * geo.c, V1_THREADS), V1_THREADS,
                             (x, v, geo.n, geo.c, geo.h, geo.w, geo.ph, geo.pw, th, tw))
    _get(f"conv2d_wino_gemm{suffix}", x)((_cdiv(p, V4_TILE_N), _cdiv(fg, rows), xi * g), threads,
                                         (v, flat, tab, m, geo.c, geo.f, g, p, kp),
                                         shared_mem=_v4_smem(rows, kp + V4_SPARE))
    has_bias = b is not None
    y = xp.empty(geo.y_shape, dtype=np.float32)
    _get(f"{name}_output", x)(_cdiv(p * geo.f, V1_THREADS), V1_THREADS,
                              (m, b if has_bias else xp.zeros(1, dtype=np.float32), y, geo.n, geo.f,
                               geo.oh, geo.ow, th, tw, int(has_bias), int(relu)))
    return y


def _wino_flipped(geo):
    """The forward geometry that bwd_data runs by Winograd: dy in, F = C out, pad 2 - pad."""
    return Geometry.of("conv2d_backward_data", geo.y_shape, (geo.c, geo.fg, 3, 3), 1,
                       (2 - geo.ph, 2 - geo.pw), geo.groups)


def _wino_backward_data(xp, dy, w, geo, rows=None, tile=2):
    """dx by F(tile x tile, 3x3): the forward of dy with w'[c, f] = w[f, c] flipped (per
    group), pad 2 - pad (stride 1)."""
    g, fg, cg = geo.groups, geo.fg, geo.cg
    wt = w.reshape(g, fg, cg, 3, 3).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
    wt = xp.ascontiguousarray(wt.reshape(geo.c, fg, 3, 3))
    return _wino_forward(xp, dy, wt, None, _wino_flipped(geo), False, rows, tile)


# --- launchers -------------------------------------------------------------

def conv2d_forward(x, w, b=None, stride=1, pad=0, groups=1, version=None, relu=False, tile_rows=None,
                   splits=None):
    """y = conv(x, w) + b.  x (N, C, H, W), w (F, C/groups, KH, KW), b (F,) or None -> (N, F, OH, OW).

    relu=True fuses the activation into the kernel's epilogue (every version):
    y = max(0, conv(x, w) + b), the same as relu_forward of the unfused result.
    tile_rows (v3, v4, winograd's GEMM): force the row tile (None: chosen per layer).
    splits (v4): cut the reduction into this many slices (None: counted in waves).
    v4 runs v3 where it does not apply (v4_plan).
    """
    op = "conv2d_forward"
    v = _version(op, version)
    if not isinstance(relu, (bool, np.bool_)):
        raise TypeError(f"{op}: relu must be a bool, got {relu!r}")
    x, w = _input(op, "x", x, 4), _input(op, "w", w, 4)
    if b is None:
        xp = _module(op, x=x, w=w)
    else:
        b = _input(op, "b", b, 1)
        xp = _module(op, x=x, w=w, b=b)
    geo = Geometry.of(op, tuple(x.shape), tuple(w.shape), stride, pad, groups)
    v, tile_rows, splits = _tuned("fwd", version, geo, x, tile_rows, splits)
    if b is None:
        b, has_bias = xp.zeros(1, dtype=np.float32), 0
    else:
        has_bias = 1
        if tuple(b.shape) != (geo.f,):
            raise ValueError(f"{op}: bias must have shape ({geo.f},), got {tuple(b.shape)}")
    y = xp.empty(geo.y_shape, dtype=np.float32)
    if splits is not None and v not in ("v4", "winograd", "winograd4"):
        raise ValueError(f"{op}: splits is a v4 setting, got version {v!r}")
    if geo.n == 0:
        return y
    if v in WINO_VERSIONS:
        if winograd_applies(geo, "fwd") and splits is None:
            return _wino_forward(xp, x, w, b if has_bias else None, geo, relu, tile_rows, WINO_VERSIONS[v])
        v = "v4"
    if v == "v4":
        plan = v4_plan(geo, "fwd", tile_rows, _split_arg(op, splits), device_sms(x))
        if plan is not None:
            at = _v4_weights(xp, w, geo, "fwd", plan)
            tab = _v4_table(geo, "fwd", plan, x)
            out = y if plan.splits == 1 else xp.empty((plan.splits,) + geo.y_shape, dtype=np.float32)
            fuse = plan.splits == 1
            grid = (_cdiv(geo.n * geo.oh * geo.ow, V4_TILE_N), _cdiv(geo.fg, plan.rows), geo.groups * plan.splits)
            _get(f"conv2d_fwd_v4{plan.suffix}", x)(
                grid, plan.threads, (x, at, tab, b, out) + geo.args
                + (has_bias if fuse else 0, int(relu) if fuse else 0, plan.masked, plan.kp, plan.splits, plan.tps),
                shared_mem=plan.smem)
            if not fuse:
                _v4_reduce(xp, out, y, plan.splits, x, b if has_bias else None, geo.oh * geo.ow, relu)
            return y
        v, tile_rows = "v3", (tile_rows if tile_rows in V3_ROWS else None)
    tm, tn, threads, suffix = _tile(v, geo.fg, tile_rows)
    k = _get(f"conv2d_fwd_{v}{suffix}", x)
    if v == "v1":
        k(_cdiv(y.size, V1_THREADS), V1_THREADS, (x, w, b, y) + geo.args + (has_bias, int(relu)))
    else:
        grid = (_cdiv(geo.n * geo.oh * geo.ow, tn), _cdiv(geo.fg, tm), geo.groups)
        k(grid, threads, (x, w, b, y) + geo.args + (has_bias, int(relu)))
    return y


def _tuned(pass_, version, geo, like, tile_rows, splits):
    """(version, tile_rows, splits) to run: as given, or (no version given, on a GPU) the
    tuner's choice (convnet.tune.choice: cached timing, else the model's best); the
    emulation and anything the tuner cannot answer run SHIPPED."""
    op = {"fwd": "conv2d_forward", "bwd_data": "conv2d_backward_data", "bwd_filter": "conv2d_backward_filter"}[pass_]
    if version is None and tile_rows is None and splits is None and is_cupy(like):
        from convnet import tune
        cand = tune.choice(geo, pass_, like)
        if cand is not None:
            return cand.version, cand.tile_rows, cand.splits
    return _version(op, version), tile_rows, splits


def _split_arg(op, splits):
    return None if splits is None else check_int(op, "splits", splits, 1)


def conv2d_backward_data(dy, w, x_shape, stride=1, pad=0, groups=1, version=None, tile_rows=None,
                         splits=None):
    """dx, the gradient of conv2d_forward's input.  dy (N, F, OH, OW), w -> dx of x_shape.
    tile_rows (v3, v4, winograd's GEMM): force the row tile (None: chosen per layer);
    splits (v4): reduction slices (None: counted in waves). v4 runs v3 where it does
    not apply (stride > 1, v4_plan)."""
    op = "conv2d_backward_data"
    v = _version(op, version)
    dy, w = _input(op, "dy", dy, 4), _input(op, "w", w, 4)
    xp = _module(op, dy=dy, w=w)
    geo = Geometry.of(op, x_shape, tuple(w.shape), stride, pad, groups)
    _check_dy(op, dy, geo)
    v, tile_rows, splits = _tuned("bwd_data", version, geo, dy, tile_rows, splits)
    dx = xp.empty(geo.x_shape, dtype=np.float32)
    if splits is not None and v not in ("v4", "winograd", "winograd4"):
        raise ValueError(f"{op}: splits is a v4 setting, got version {v!r}")
    if geo.n == 0:
        return dx
    if v in WINO_VERSIONS:
        if winograd_applies(geo, "bwd_data") and splits is None:
            return _wino_backward_data(xp, dy, w, geo, tile_rows, WINO_VERSIONS[v])
        v = "v4"
    if v == "v4":
        plan = v4_plan(geo, "bwd_data", tile_rows, _split_arg(op, splits), device_sms(dy))
        if plan is not None:
            at = _v4_weights(xp, w, geo, "bwd_data", plan)
            tab = _v4_table(geo, "bwd_data", plan, dy)
            out = dx if plan.splits == 1 else xp.empty((plan.splits,) + geo.x_shape, dtype=np.float32)
            grid = (_cdiv(geo.n * geo.h * geo.w, V4_TILE_N), _cdiv(geo.cg, plan.rows), geo.groups * plan.splits)
            _get(f"conv2d_bwd_data_v4{plan.suffix}", dy)(
                grid, plan.threads, (dy, at, tab, out) + geo.args + (plan.kp, plan.splits, plan.tps),
                shared_mem=plan.smem)
            if plan.splits > 1:
                _v4_reduce(xp, out, dx, plan.splits, dy)
            return dx
        v, tile_rows = "v3", (tile_rows if tile_rows in V3_ROWS else None)
    tm, tn, threads, suffix = _tile(v, geo.cg, tile_rows)
    unit = v == "v3" and geo.sh == geo.sw == 1       # v3's stride-1 kernels skip the divisibility test
    k = _get(f"conv2d_bwd_data_{v}" + ("_s1" if unit else "") + suffix, dy)
    if v == "v1":
        k(_cdiv(dx.size, V1_THREADS), V1_THREADS, (dy, w, dx) + geo.args)
    else:
        grid = (_cdiv(geo.n * geo.h * geo.w, tn), _cdiv(geo.cg, tm), geo.groups)
        k(grid, threads, (dy, w, dx) + geo.args)
    return dx


def conv2d_backward_filter(dy, x, w_shape, stride=1, pad=0, groups=1, version=None, tile_rows=None):
    """dw, the gradient of conv2d_forward's weight.  dy (N, F, OH, OW), x (N, C, H, W) -> w_shape.
    tile_rows (v3, v4): force the row tile (None: chosen per layer)."""
    return backward_filter(dy, x, w_shape, stride, pad, groups, version, tile_rows=tile_rows)


def backward_filter(dy, x, w_shape, stride=1, pad=0, groups=1, version=None, splits=None, tile_rows=None):
    """conv2d_backward_filter with the split-K count exposed (tests, tuning).

    splits (v2, v3, v4): cut the reduction over (n, oh, ow) into this many slices
    (None: counted in whole waves); the slices are added in a fixed order, so
    results are deterministic. v4 runs v3 where it does not apply (v4_plan).
    """
    op = "conv2d_backward_filter"
    v = _version(op, version)
    dy, x = _input(op, "dy", dy, 4), _input(op, "x", x, 4)
    xp = _module(op, dy=dy, x=x)
    geo = Geometry.of(op, tuple(x.shape), w_shape, stride, pad, groups)
    _check_dy(op, dy, geo)
    v, tile_rows, splits = _tuned("bwd_filter", version, geo, dy, tile_rows, splits)
    splits = _split_arg(op, splits)
    if geo.n == 0:
        return xp.zeros(geo.w_shape, dtype=np.float32)
    dw = xp.empty(geo.w_shape, dtype=np.float32)
    if v in WINO_VERSIONS:               # no Winograd backward-filter: v4
        v = "v4"
    if v == "v4":
        plan = v4_plan(geo, "bwd_filter", tile_rows, splits, device_sms(x))
        if plan is not None:
            tab = _v4_table(geo, "bwd_filter", plan, x)
            out = dw if plan.splits == 1 else xp.empty((plan.splits,) + geo.w_shape, dtype=np.float32)
            ncol = geo.taps * plan.run if plan.masked else geo.cg * geo.taps
            grid = (_cdiv(ncol, V4_TILE_N), _cdiv(geo.fg, plan.rows), geo.groups * plan.splits)
            _get(f"conv2d_bwd_filter_v4{plan.suffix}", x)(
                grid, plan.threads, (dy, x, tab, out) + geo.args + (plan.run, plan.splits, plan.tps),
                shared_mem=plan.smem)
            if plan.splits > 1:
                _v4_reduce(xp, out, dw, plan.splits, x)
            return dw
        v, tile_rows = "v3", (tile_rows if tile_rows in V3_ROWS else None)
    tm, tn, threads, suffix = _tile(v, geo.fg, tile_rows)
    k = _get(f"conv2d_bwd_filter_{v}{suffix}", dy)
    if v == "v1":
        k(_cdiv(dw.size, V1_THREADS), V1_THREADS, (dy, x, dw) + geo.args)
        return dw
    if splits is None:
        splits, chunk = backward_filter_splits(geo, v, tile_rows, device_sms(x))
    else:
        splits, chunk = _slices(geo.n * geo.oh * geo.ow, splits)
    if geo.groups * splits > 65535:
        raise ValueError(f"{op}: groups * splits = {geo.groups * splits} exceeds the grid's z limit 65535")
    if splits * dw.size > INT32_LIMIT:
        raise ValueError(f"{op}: split-K workspace of {splits} x {dw.size} elements is too large for int32 indexing")
    ws = dw if splits == 1 else xp.empty((splits,) + geo.w_shape, dtype=np.float32)
    grid = (_cdiv(geo.cg * geo.taps, tn), _cdiv(geo.fg, tm), geo.groups * splits)
    k(grid, threads, (dy, x, ws) + geo.args + (splits, chunk))
    if splits > 1:
        red = _get("conv2d_bwd_filter_reduce", dy)
        red(_cdiv(dw.size, V1_THREADS), V1_THREADS, (ws, dw, dw.size, splits))
    return dw


def conv2d_backward_bias(dy, version=None):
    """db[f] = sum of dy[:, f] over batch and pixels.  dy (N, F, OH, OW) -> (F,).

    There is no v3 or v4 bias kernel: those versions run v2 (BIAS_KERNEL)."""
    op = "conv2d_backward_bias"
    v = BIAS_KERNEL[_version(op, version)]
    dy = _input(op, "dy", dy, 4)
    xp = array_module(dy)
    n, f, oh, ow = dy.shape
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

# v4's other paths: more than 32 taps without padding (no tap mask, K = 126: 7.9
# tiles), full tiles in M, N and K, and several row tiles with a partial last one.
V4_SHAPES = [
    ("2x3x14x13 k7x6 s2 p0 (42 taps, unmasked)", (2, 3, 14, 13), (5, 3, 7, 6), 2, 0, 1),
    ("2x128x8x8 k1 full v4 tile", (2, 128, 8, 8), (128, 128, 1, 1), 1, 0, 1),
    ("2x4x6x5 k2 p1 g2 F260 (several row tiles)", (2, 4, 6, 5), (260, 2, 2, 2), 1, 1, 2),
    # M = 48, the 48-row tile's (conv2's bwd_data, conv1 per column): bwd_data with
    # Cg = 48 in two groups; forward and bwd_filter with F = 48 over 42 unmasked taps at
    # stride (2, 3); F = 49 (a second, 1-row tile) with asymmetric padding.
    ("1x96x6x5 k3 p1 g2 Cg48 (M = 48 bwd_data)", (1, 96, 6, 5), (10, 48, 3, 3), 1, 1, 2),
    ("2x3x17x13 k7x6 s(2,3) p0 F48 (M = 48, unmasked)", (2, 3, 17, 13), (48, 3, 7, 6), (2, 3), 0, 1),
    ("2x4x7x6 k3 p(1,0) F49 (two 48-row tiles)", (2, 4, 7, 6), (49, 4, 3, 3), 1, (1, 0), 1),
]

# Winograd F(2x2, 3x3) and F(4x4, 3x3): odd output sizes (partial 2x2 and 4x4 tiles),
# groups, pads 0..2, a 128-row GEMM tile (Fg = 130: two row tiles, the second partial),
# and AlexNet's 13x13 (4x4 tiles: 16x16 with a partial last row and column).
WINOGRAD_SHAPES = [
    ("3x6x11x9 k3 p1 g2", (3, 6, 11, 9), (10, 3, 3, 3), 1, 1, 2),
    ("2x5x8x7 k3 p(0,2) F90 (96-row GEMM tile)", (2, 5, 8, 7), (90, 5, 3, 3), 1, (0, 2), 1),
    ("1x3x6x5 k3 p1 F100 (128-row GEMM tile)", (1, 3, 6, 5), (100, 3, 3, 3), 1, 1, 1),
    ("2x8x13x13 k3 p1 g2 (AlexNet's 13x13)", (2, 8, 13, 13), (12, 4, 3, 3), 1, 1, 2),
]

# AlexNet as one device (batch 128): conv1..conv5.
ALEXNET_SHAPES = [
    ("conv1 128x3x227x227 96 11x11 s4", (128, 3, 227, 227), (96, 3, 11, 11), 4, 0, 1),
    ("conv2 128x96x27x27 256 5x5 p2 g2", (128, 96, 27, 27), (256, 48, 5, 5), 1, 2, 2),
    ("conv3 128x256x13x13 384 3x3 p1", (128, 256, 13, 13), (384, 256, 3, 3), 1, 1, 1),
    ("conv4 128x384x13x13 384 3x3 p1 g2", (128, 384, 13, 13), (384, 192, 3, 3), 1, 1, 2),
    ("conv5 128x384x13x13 256 3x3 p1 g2", (128, 384, 13, 13), (256, 192, 3, 3), 1, 1, 2),
]


def _out_shape(x_shape, w_shape, stride, pad, groups=None):
    groups = x_shape[1] // w_shape[1] if groups is None else groups
    return Geometry.of("conv cases", x_shape, w_shape, stride, pad, groups).y_shape


def shape_cases(label, x_shape, w_shape, stride, pad, groups, versions=DIRECT_VERSIONS, seed=0,
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
    gm = Geometry.of("conv cases", x_shape, w_shape, stride, pad, groups)
    unit = (gm.sh, gm.sw) == (1, 1)
    # (version, row tile, name prefix, kernel suffix): v3 and v4 run with each row tile
    variants = []
    for v in versions:
        if v in ("v3", "v4"):
            variants += [(v, rows, f"{v} rows={rows}", suffix)
                         for rows, suffix in (V3_ROWS if v == "v3" else V4_ROWS).items()]
        elif v in WINO_VERSIONS:
            variants += [(v, rows, f"{v} rows={rows}", suffix) for rows, suffix in V4_ROWS.items()]
        else:
            variants.append((v, None, v, ""))
    cases = []
    for v, rows, name, suffix in variants:
        kernels = {p: _kernels_run(v, gm, p, rows, suffix, unit) for p in ("fwd", "bwd_data", "bwd_filter")}
        cases.append(checking.Case(f"conv2d_fwd_{name} {label}", [x, w, b],
                                   lambda x, w, b: R.conv2d_forward(x, w, b, **geo),
                                   lambda x, w, b, v=v, rows=rows: conv2d_forward(x, w, b, **geo, version=v,
                                                                                  tile_rows=rows),
                                   tol, kernels["fwd"], scale))
        # the fused bias + ReLU epilogue, every version
        cases.append(checking.Case(f"conv2d_fwd_{name} relu {label}", [x, w, b],
                                   lambda x, w, b: np.maximum(R.conv2d_forward(x, w, b, **geo), 0),
                                   lambda x, w, b, v=v, rows=rows: conv2d_forward(x, w, b, **geo, version=v,
                                                                                  relu=True, tile_rows=rows),
                                   tol, kernels["fwd"], scale))
        cases.append(checking.Case(f"conv2d_bwd_data_{name} {label}", [dy, w],
                                   lambda dy, w: R.conv2d_backward_data(dy, w, x_shape, **geo),
                                   lambda dy, w, v=v, rows=rows: conv2d_backward_data(dy, w, x_shape, **geo, version=v,
                                                                                      tile_rows=rows),
                                   tol, kernels["bwd_data"], scale))
        cases.append(checking.Case(f"conv2d_bwd_filter_{name} {label}", [dy, x],
                                   lambda dy, x: R.conv2d_backward_filter(dy, x, w_shape, **geo),
                                   lambda dy, x, v=v, rows=rows: conv2d_backward_filter(dy, x, w_shape, **geo,
                                                                                        version=v, tile_rows=rows),
                                   tol, kernels["bwd_filter"], scale))
        if BIAS_KERNEL[v] == v:          # v3 has no bias kernel of its own
            cases.append(checking.Case(f"conv2d_bwd_bias_{v} {label}", [dy],
                                       R.conv2d_backward_bias,
                                       lambda dy, v=v: conv2d_backward_bias(dy, version=v),
                                       tol, (f"conv2d_bwd_bias_{v}",), scale))
    return cases


def _kernels_run(v, geo, pass_, rows, suffix, unit):
    """The kernel names one case of version v exercises (v4 falls back to v3 where
    v4_plan says it does not apply; split-K adds a reduction kernel)."""
    name = {"fwd": "conv2d_fwd", "bwd_data": "conv2d_bwd_data", "bwd_filter": "conv2d_bwd_filter"}[pass_]
    if v in WINO_VERSIONS:
        if winograd_applies(geo, pass_):
            tile = WINO_VERSIONS[v]
            if pass_ == "bwd_data":
                geo = _wino_flipped(geo)
            name = WINO_TILES[tile][1]
            return (f"{name}_input", f"conv2d_wino_gemm{V4_ROWS[rows or winograd_rows(geo, tile=tile)]}",
                    f"{name}_output")
        v = "v4"
    if v == "v4":
        plan = v4_plan(geo, pass_, rows)
        if plan is not None:
            return (f"{name}_v4{plan.suffix}",) + (("conv2d_v4_reduce",) if plan.splits > 1 else ())
        v, rows = "v3", (rows if rows in V3_ROWS else None)
        suffix = V3_ROWS[rows or _v3_rows(geo.gemm(pass_)[0])]
    if v == "v1":
        return (f"{name}_v1",)
    if pass_ == "bwd_data" and v == "v3" and unit:
        return (f"{name}_v3_s1{suffix}",)
    if pass_ == "bwd_filter":
        splits, _ = backward_filter_splits(geo, v, rows)
        return (f"{name}_{v}{suffix}",) + (("conv2d_bwd_filter_reduce",) if splits > 1 else ())
    return (f"{name}_{v}{suffix}",)


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
        for i, (label, xs, ws, s, p, g) in enumerate(V4_SHAPES):
            out += shape_cases(label, xs, ws, s, p, g, versions=("v4",), seed=70 + i)
        for i, (label, xs, ws, s, p, g) in enumerate(WINOGRAD_SHAPES):
            out += shape_cases(label, xs, ws, s, p, g, versions=tuple(WINO_VERSIONS), seed=90 + i)
        out += split_cases() + v4_split_cases()
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


def v4_split_cases(splits=(2, 3)):
    """Every v4 pass with the reduction cut into slices (split-K): partial sums into the
    workspace, then conv2d_v4_reduce (with bias and ReLU for the forward)."""
    rng = np.random.default_rng(101)
    x_shape, w_shape, geo = (2, 6, 9, 8), (10, 3, 3, 3), dict(stride=1, pad=1, groups=2)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape) / 3
    b = rng.standard_normal(w_shape[0])
    dy = rng.standard_normal(_out_shape(x_shape, w_shape, geo["stride"], geo["pad"]))
    label = "2x6x9x8 k3 p1 g2"
    out = []
    for rows, suffix in V4_ROWS.items():
        for sp in splits:
            tag = f"v4 rows={rows} {label} splits={sp}"
            out += [
                checking.Case(f"conv2d_fwd_{tag} relu", [x, w, b],
                              lambda x, w, b: np.maximum(R.conv2d_forward(x, w, b, **geo), 0),
                              lambda x, w, b, sp=sp, rows=rows: conv2d_forward(
                                  x, w, b, **geo, version="v4", relu=True, tile_rows=rows, splits=sp),
                              1e-5, (f"conv2d_fwd_v4{suffix}", "conv2d_v4_reduce")),
                checking.Case(f"conv2d_bwd_data_{tag}", [dy, w],
                              lambda dy, w: R.conv2d_backward_data(dy, w, x_shape, **geo),
                              lambda dy, w, sp=sp, rows=rows: conv2d_backward_data(
                                  dy, w, x_shape, **geo, version="v4", tile_rows=rows, splits=sp),
                              1e-5, (f"conv2d_bwd_data_v4{suffix}", "conv2d_v4_reduce")),
                checking.Case(f"conv2d_bwd_filter_{tag}", [dy, x],
                              lambda dy, x: R.conv2d_backward_filter(dy, x, w_shape, **geo),
                              lambda dy, x, sp=sp, rows=rows: backward_filter(
                                  dy, x, w_shape, **geo, version="v4", tile_rows=rows, splits=sp),
                              1e-5, (f"conv2d_bwd_filter_v4{suffix}", "conv2d_v4_reduce")),
            ]
    return out
