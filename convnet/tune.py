"""The convolution tuner: per (device, pass, shape), which kept kernel version, row
tile and split count to run.

    python -m convnet.tune                       # AlexNet's conv passes at batch 128
    python -m convnet.tune --batch 256 --split column --repeat 20
    python -m convnet.tune --show                # the cache file and its entries

On a GPU each candidate (tune.candidates) is first checked against the shipped
kernel's output (normwise relative error < CHECK_TOL), then timed with CUDA
events (median of --repeat after warm-up); the fastest checked one is written
to the cache. Without a GPU nothing is timed: it prints the model's best
(tune.predict) for each pass.

The cache is one JSON file per (device name, driver version, hash of the kernel
sources) in $CONVNET_CACHE_DIR, else $XDG_CACHE_HOME/convnet, else
~/.cache/convnet; a change to kernels/conv.cu (or its headers) starts a new file.
The launchers (convnet/kernel_ops/conv.py) call `choice` when no version is
given and the arrays are on a GPU: the cached timed choice, else the model's
best; the emulation (NumPy arrays) runs conv.SHIPPED, and SHIPPED is also what
runs when neither the cache nor the model has an answer.

The model (predict) is a static bound: main-loop time from waves of blocks
(conv.wave_seconds: the blocks resident on an SM share its FP32 peak), divided
by the FFMA share of the kernel's sm_90 main loop (FFMA_SHARE, read from the SASS by
benchmarks/conv_sass.py), plus the memory passes outside the loop at HBM
bandwidth (v4's weight rearrangement and split-K workspace, Winograd's
transforms). benchmarks/conv_model.py prints it per pass.
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass

import numpy as np

from convnet.kernel_ops import conv

PASSES = ("fwd", "bwd_data", "bwd_filter")
OPS = {"fwd": "conv2d_forward", "bwd_data": "conv2d_backward_data", "bwd_filter": "conv2d_backward_filter"}
KERNEL = {"fwd": "conv2d_fwd", "bwd_data": "conv2d_bwd_data", "bwd_filter": "conv2d_bwd_filter"}
CHECK_TOL = 1e-4

# FFMA share of the issue slots in each kernel's sm_90 main loop, as
# benchmarks/conv_sass.py reads it from build/kernels/conv.fatbin (nvcc 13.0;
# tests/test_conv.py compares these with the fatbin when cuobjdump is present).
FFMA_SHARE = {
    "conv2d_fwd_v2": 0.340, "conv2d_bwd_data_v2": 0.236, "conv2d_bwd_filter_v2": 0.292,
    "conv2d_fwd_v3": 0.696, "conv2d_fwd_v3_m64": 0.565,
    "conv2d_bwd_data_v3": 0.515, "conv2d_bwd_data_v3_m64": 0.362,
    "conv2d_bwd_data_v3_s1": 0.676, "conv2d_bwd_data_v3_s1_m64": 0.548,
    "conv2d_bwd_filter_v3": 0.682, "conv2d_bwd_filter_v3_m64": 0.558,
    "conv2d_fwd_v4": 0.913, "conv2d_fwd_v4_m64": 0.898,
    "conv2d_bwd_data_v4": 0.913, "conv2d_bwd_data_v4_m64": 0.898,
    "conv2d_bwd_filter_v4": 0.900, "conv2d_bwd_filter_v4_m64": 0.884,
    "conv2d_wino_gemm": 0.913, "conv2d_wino_gemm_m64": 0.898,
    "conv2d_fwd_v4_m96": 0.890, "conv2d_bwd_data_v4_m96": 0.890, "conv2d_bwd_filter_v4_m96": 0.880,
    "conv2d_wino_gemm_m96": 0.890,
    "conv2d_fwd_v4_m48": 0.868, "conv2d_bwd_data_v4_m48": 0.868, "conv2d_bwd_filter_v4_m48": 0.850,
    "conv2d_wino_gemm_m48": 0.869,
}

PEAK = conv.MODEL_SM_FLOPS * conv.DEFAULT_SMS
HBM = conv.MODEL_HBM


@dataclass(frozen=True)
class Candidate:
    """One way to run a pass: a kept version, its row tile (None: the launcher's
    choice) and split count (None: the launcher's; v4 only)."""
    version: str
    tile_rows: int = None
    splits: int = None

    def kwargs(self):
        kw = {"version": self.version}
        if self.tile_rows is not None:
            kw["tile_rows"] = self.tile_rows
        if self.splits is not None:
            kw["splits"] = self.splits
        return kw

    def label(self):
        return self.version + (f" rows={self.tile_rows}" if self.tile_rows else "") + \
            (f" splits={self.splits}" if self.splits else "")


def _cdiv(a, b):
    return -(-a // b)


def candidates(geo, pass_):
    """The kept versions worth timing for one pass (v1, the simple reference kernel, is
    not): v2; v3 and v4 with each row tile; v4 with its split count halved and doubled;
    Winograd F(2x2, 3x3) and F(4x4, 3x3) where they apply."""
    out = [Candidate("v2")]
    out += [Candidate("v3", rows) for rows in conv.V3_ROWS]
    for rows in conv.V4_ROWS:
        plan = conv.v4_plan(geo, pass_, rows)
        if plan is None:
            continue
        out.append(Candidate("v4", rows))
        for s in sorted({max(1, plan.splits // 2), plan.splits * 2} - {plan.splits}):
            if s <= min(conv.MAX_SPLITS, plan.k_tiles):
                out.append(Candidate("v4", rows, s))
    if conv.winograd_applies(geo, pass_):
        out += [Candidate(v) for v in conv.WINO_VERSIONS]
    return out


# --- the model ---------------------------------------------------------------------------

def _main_loop(blocks, steps, bps, rows, cols, bk, frac):
    """conv.wave_seconds at the FFMA share frac of the issue slots."""
    return conv.wave_seconds(blocks, steps, conv.DEFAULT_SMS, bps, conv._step_seconds(rows, cols, bk)) / frac


def model_v2(geo, pass_, cand, ffma):
    m, ncol, k = geo.gemm(pass_)
    blocks = geo.groups * _cdiv(m, 64) * _cdiv(ncol, 64)
    splits, steps = 1, _cdiv(k, 8)
    if pass_ == "bwd_filter":
        splits, chunk = conv.backward_filter_splits(geo, "v2")
        steps = chunk // 8
    frac = ffma[f"{KERNEL[pass_]}_v2"]
    t = _main_loop(blocks * splits, steps, 2, 64, 64, 8, frac)
    return dict(kernel=f"{KERNEL[pass_]}_v2", tile="64x64", splits=splits, ffma=frac, seconds=t,
                fill=geo.flops / (2.0 * geo.groups * _cdiv(m, 64) * 64 * _cdiv(ncol, 64) * 64 * splits * steps * 8),
                waves=conv.wave_fill(blocks * splits, conv.DEFAULT_SMS, 2))


def model_v3(geo, pass_, cand, ffma):
    m, ncol, k = geo.gemm(pass_)
    rows = cand.tile_rows or conv._v3_rows(m)
    unit = pass_ == "bwd_data" and (geo.sh, geo.sw) == (1, 1)
    kernel = f"{KERNEL[pass_]}_v3" + ("_s1" if unit else "") + conv.V3_ROWS[rows]
    blocks = geo.groups * _cdiv(m, rows) * _cdiv(ncol, 128)
    if pass_ == "bwd_filter":
        splits, chunk = conv.backward_filter_splits(geo, "v3", rows)
        steps = chunk // 8
    else:
        splits, steps = 1, _cdiv(k, 8)
    frac = ffma[kernel]
    t = _main_loop(blocks * splits, steps, 2, rows, 128, 8, frac)
    t += (2 * splits + 1) * 4 * geo.f * ncol / HBM if splits > 1 else 0.0
    padded = 2.0 * geo.groups * _cdiv(m, rows) * rows * _cdiv(ncol, 128) * 128 * splits * steps * 8
    return dict(kernel=kernel, tile=f"{rows}x128", splits=splits, ffma=frac, seconds=t, fill=geo.flops / padded,
                waves=conv.wave_fill(blocks * splits, conv.DEFAULT_SMS, 2))


def model_v4(geo, pass_, cand, ffma):
    plan = conv.v4_plan(geo, pass_, cand.tile_rows, cand.splits)
    if plan is None:
        return None
    m, ncol, k = geo.gemm(pass_)
    out_cols = ncol
    if pass_ == "bwd_filter":
        ncol = geo.taps * plan.run if plan.masked else ncol
        kpad = plan.k_tiles * conv.V4_BK
    else:
        kpad = plan.kp
    rows, bps = plan.rows, conv.V4_BLOCKS_PER_SM[plan.rows]
    blocks = geo.groups * _cdiv(m, rows) * _cdiv(ncol, conv.V4_TILE_N)
    kernel = f"{KERNEL[pass_]}_v4{plan.suffix}"
    frac = ffma[kernel]
    t = _main_loop(blocks * plan.splits, plan.tps, bps, rows, conv.V4_TILE_N, conv.V4_BK, frac)
    out_bytes = 4 * geo.groups * m * out_cols
    t += (2 * plan.splits + 1) * out_bytes / HBM if plan.splits > 1 else 0.0
    if pass_ != "bwd_filter":
        t += 4 * (geo.f * geo.cg * geo.taps + geo.groups * plan.kp * _cdiv(m, rows) * rows) / HBM
    padded = 2.0 * geo.groups * _cdiv(m, rows) * rows * _cdiv(ncol, conv.V4_TILE_N) * conv.V4_TILE_N * kpad
    return dict(kernel=kernel, tile=f"{rows}x128", splits=plan.splits, ffma=frac, seconds=t,
                fill=geo.flops / padded, waves=conv.wave_fill(blocks * plan.splits, conv.DEFAULT_SMS, bps))


def model_winograd(geo, pass_, cand, ffma):
    """F(2x2, 3x3) ("winograd") or F(4x4, 3x3) ("winograd4"): input transform + xi*G GEMMs
    (xi = 16 or 36 transform positions) + output transform, the transforms at HBM bandwidth
    (each tensor read and written once)."""
    if not conv.winograd_applies(geo, pass_):
        return None
    tile = conv.WINO_VERSIONS[cand.version]
    xi = (tile + 2) ** 2
    flops = geo.flops
    if pass_ == "bwd_data":                 # the forward of dy with the flipped filters
        geo = conv._wino_flipped(geo)
    _, _, p = conv.winograd_tiles(geo, tile)
    rows = conv.winograd_rows(geo, tile=tile)
    suffix = conv.V4_ROWS[rows]
    bps = conv.V4_BLOCKS_PER_SM[rows]
    kp = _cdiv(geo.cg, conv.V4_BK) * conv.V4_BK
    blocks = xi * geo.groups * _cdiv(geo.fg, rows) * _cdiv(p, conv.V4_TILE_N)
    kernel = f"conv2d_wino_gemm{suffix}"
    frac = ffma[kernel]
    t = _main_loop(blocks, kp // conv.V4_BK, bps, rows, conv.V4_TILE_N, conv.V4_BK, frac)
    moved = 4 * (geo.n * geo.c * geo.h * geo.w + 2 * xi * geo.c * p      # x in; V out and back in
                 + 2 * xi * geo.f * p + geo.n * geo.f * geo.oh * geo.ow   # M out and back in; y out
                 + 2 * xi * geo.f * geo.cg)                               # U
    gemm_flops = 2.0 * xi * geo.groups * geo.fg * geo.cg * p
    padded = 2.0 * xi * geo.groups * _cdiv(geo.fg, rows) * rows * _cdiv(p, 128) * 128 * kp
    return dict(kernel=kernel, tile=f"{rows}x128", splits=1, ffma=frac, seconds=t + moved / HBM,
                fill=gemm_flops / padded, waves=conv.wave_fill(blocks, conv.DEFAULT_SMS, bps),
                saving=flops / gemm_flops)


MODELS = {"v2": model_v2, "v3": model_v3, "v4": model_v4, "winograd": model_winograd, "winograd4": model_winograd}


def predict(geo, pass_, cand, ffma=FFMA_SHARE):
    """The model's figures for one candidate ({kernel, tile, splits, ffma, fill, waves,
    seconds}), or None where the candidate does not apply."""
    return MODELS[cand.version](geo, pass_, cand, ffma)


def model_best(geo, pass_, ffma=FFMA_SHARE):
    """(candidate, predicted seconds) of the model's fastest candidate."""
    scored = [(predict(geo, pass_, c, ffma), c) for c in candidates(geo, pass_)]
    scored = [(r["seconds"], c) for r, c in scored if r is not None]
    t, c = min(scored, key=lambda rc: rc[0])
    return c, t


# --- the cache ----------------------------------------------------------------------------

def cache_dir():
    base = os.environ.get("CONVNET_CACHE_DIR")
    if base:
        return base
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                        "convnet")


def sources_hash():
    """sha256 (first 16 hex digits) of the conv kernel source and the headers it includes."""
    from convnet import kernels
    h = hashlib.sha256()
    for path in [os.path.join(kernels.KERNEL_DIR, "conv.cu")] + kernels.default_library().headers():
        with open(path, "rb") as f:
            h.update(os.path.basename(path).encode() + b"\0" + f.read())
    return h.hexdigest()[:16]


def cache_path(device, driver, src=None):
    slug = "".join(ch if ch.isalnum() else "-" for ch in device).strip("-").lower()
    return os.path.join(cache_dir(), f"conv-tune-{slug}-driver{driver}-{src or sources_hash()}.json")


def shape_key(pass_, geo):
    """The cache key of one pass: 'fwd x128x96x27x27 w256x48x5x5 s1x1 p2x2 g2'."""
    return (f"{pass_} x{'x'.join(map(str, geo.x_shape))} w{'x'.join(map(str, geo.w_shape))} "
            f"s{geo.sh}x{geo.sw} p{geo.ph}x{geo.pw} g{geo.groups}")


def load_cache(path):
    """The cache's entries ({} when the file is missing or unreadable: it is only a cache)."""
    try:
        with open(path) as f:
            data = json.load(f)
        return data.get("choices", {})
    except (OSError, ValueError):
        return {}


def save_cache(path, device, driver, choices):
    """Write the cache atomically (a temporary file in the same folder, then rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = {"device": device, "driver": driver, "sources": sources_hash(),
            "note": "written by python -m convnet.tune; delete it to tune again", "choices": choices}
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".conv-tune-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def device_identity(like):
    """(device name, driver version) of like's GPU."""
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(like.device.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return name, cupy.cuda.runtime.driverGetVersion()


_CACHES = {}


def choice(geo, pass_, like):
    """The Candidate a launcher runs when no version is given: on a GPU, the cached timed
    choice for (device, driver, sources, pass, shape), else the model's best; on the
    emulation, None (the launcher's SHIPPED)."""
    from convnet.kernel_ops._common import is_cupy
    if not is_cupy(like):
        return None
    device = like.device.id
    if device not in _CACHES:
        name, driver = device_identity(like)
        _CACHES[device] = load_cache(cache_path(name, driver))
    entry = _CACHES[device].get(shape_key(pass_, geo))
    if entry is not None:
        return Candidate(entry["version"], entry.get("tile_rows"), entry.get("splits"))
    try:
        return model_best(geo, pass_)[0]
    except ValueError:
        return None


# --- tuning on a GPU ----------------------------------------------------------------------

def _run(pass_, geo, t, cand):
    kw = dict(stride=(geo.sh, geo.sw), pad=(geo.ph, geo.pw), groups=geo.groups)
    if cand is not None:
        kw.update(cand.kwargs())
    else:
        kw["version"] = conv.SHIPPED[OPS[pass_]]
    if pass_ == "fwd":
        return conv.conv2d_forward(t["x"], t["w"], t["b"], **kw)
    if pass_ == "bwd_data":
        return conv.conv2d_backward_data(t["dy"], t["w"], geo.x_shape, **kw)
    return conv.backward_filter(t["dy"], t["x"], geo.w_shape, **kw)


def time_gpu(fn, warmup=2, repeat=10):
    """Median milliseconds of fn() over `repeat` runs timed with CUDA events."""
    import cupy
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    return float(np.median(times))


def tune_gpu(shapes, passes=PASSES, repeat=10, out=sys.stdout):
    """Check, time and cache every candidate of every pass of shapes on GPU 0."""
    import cupy
    from tqdm import tqdm
    rng = np.random.default_rng(0)
    probe = cupy.zeros(1, dtype=np.float32)
    name, driver = device_identity(probe)
    path = cache_path(name, driver)
    choices = load_cache(path)
    jobs = [(label, geo, p) for label, geo in shapes for p in passes
            if not (p == "bwd_data" and label.startswith("conv1"))]
    for label, geo, pass_ in tqdm(jobs, desc="tuning", file=out):
        t = {"x": rng.standard_normal(geo.x_shape), "w": rng.standard_normal(geo.w_shape) * 0.05,
             "b": rng.standard_normal(geo.f), "dy": rng.standard_normal(geo.y_shape)}
        t = {k: cupy.asarray(v, dtype=np.float32) for k, v in t.items()}
        ref = _run(pass_, geo, t, None)
        scale = float(cupy.max(cupy.abs(ref))) or 1.0
        timed = {}
        for cand in candidates(geo, pass_):
            err = float(cupy.max(cupy.abs(_run(pass_, geo, t, cand) - ref))) / scale
            if not err <= CHECK_TOL:
                print(f"{label} {pass_} {cand.label()}: FAIL (relative error {err:.1e}), not timed", file=out)
                continue
            timed[cand] = time_gpu(lambda c=cand: _run(pass_, geo, t, c), repeat=repeat)
        if not timed:
            continue
        best = min(timed, key=timed.get)
        choices[shape_key(pass_, geo)] = dict(asdict(best), ms=round(timed[best], 4),
                                              timed={c.label(): round(ms, 4) for c, ms in timed.items()})
        print(f"{label} {pass_}: {best.label()} {timed[best]:.3f} ms", file=out)
    save_cache(path, name, driver, choices)
    _CACHES.clear()
    print(f"wrote {path}", file=out)
    return path


def alexnet_shapes(batch=128, split="both"):
    """(label, Geometry) of AlexNet's conv layers: one device with groups, and one column."""
    device = [(label.split()[0], xs, ws, s, p, g) for label, xs, ws, s, p, g in conv.ALEXNET_SHAPES]
    column = [("conv1/col", (128, 3, 227, 227), (48, 3, 11, 11), 4, 0, 1),
              ("conv2/col", (128, 48, 27, 27), (128, 48, 5, 5), 1, 2, 1),
              ("conv3/col", (128, 256, 13, 13), (192, 256, 3, 3), 1, 1, 1),
              ("conv4/col", (128, 192, 13, 13), (192, 192, 3, 3), 1, 1, 1),
              ("conv5/col", (128, 192, 13, 13), (128, 192, 3, 3), 1, 1, 1)]
    rows = {"both": device + column, "device": device, "column": column}[split]
    return [(label, conv.Geometry.of("tune", (batch,) + xs[1:], ws, s, p, g)) for label, xs, ws, s, p, g in rows]


def main(argv=None, out=sys.stdout):
    ap = argparse.ArgumentParser(prog="python -m convnet.tune", description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--split", choices=("both", "device", "column"), default="both")
    ap.add_argument("--passes", default=",".join(PASSES))
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--no-gpu", action="store_true", help="print the model's choices even on a GPU")
    ap.add_argument("--show", action="store_true", help="print the cache file of GPU 0 and exit")
    args = ap.parse_args(argv)
    passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    bad = [p for p in passes if p not in PASSES]
    if bad:
        ap.error(f"unknown pass {bad[0]} (choose from {', '.join(PASSES)})")
    if args.batch < 1:
        ap.error("--batch must be >= 1")
    shapes = alexnet_shapes(args.batch, args.split)
    from convnet import kernels
    gpu = not args.no_gpu and kernels.gpu_available()
    if args.show:
        if not gpu:
            print("no GPU: no cache to show (the cache is per device)", file=out)
            return 0
        import cupy
        path = cache_path(*device_identity(cupy.zeros(1, dtype=np.float32)))
        print(path, file=out)
        print(open(path).read() if os.path.exists(path) else "(not written yet)", file=out)
        return 0
    if gpu:
        tune_gpu(shapes, passes, args.repeat, out)
        return 0
    print("no GPU: nothing timed; the model's best per pass (a static bound, H100 SXM5):", file=out)
    for label, geo in shapes:
        for pass_ in passes:
            if pass_ == "bwd_data" and label.startswith("conv1"):
                continue
            cand, t = model_best(geo, pass_)
            print(f"{label} {pass_} | {cand.label()} | {t * 1e3:.3f} ms | "
                  f"{100 * geo.flops / t / PEAK:.0f}% of peak", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
