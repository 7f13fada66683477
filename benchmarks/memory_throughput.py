"""Memory-bound kernels at AlexNet's shapes: bytes per second against the copy bandwidth and PyTorch.

    python3 benchmarks/memory_throughput.py                  # every op, batch 128
    python3 benchmarks/memory_throughput.py --ops lrn1,pool1 --repeat 50

The ops: LRN forward/backward (after conv1 and conv2), max pooling
forward/backward (pool1, pool2, pool5) and average pooling at pool1's shape,
ReLU forward/backward (on conv1's output), dropout forward/backward (fc6's
output), softmax (fc8's output), the fused SGD update (fc6's weights) and the
augmentation kernel (a uint8 256x256 batch -> 227x227 crops). Each op is first
checked against the NumPy reference on the same inputs (normwise relative
error < 1e-4, else FAIL and not timed), then timed with CUDA events (warm-up,
L2 flush before every run, median of --repeat runs), ours and PyTorch's
equivalent in the same run. A row reads

    lrn1 fwd | 128x96x55x55 | 0.41 ms | 2270 GB/s | 77% copy | 1.30x PyTorch

where the bytes are the op's minimum traffic (each input read once, each
output written once; bytes_moved in the JSON), "copy" is the device-to-device
copy bandwidth (cudaMemcpyAsync of 1 GiB, read + write counted) measured in
the same run, and "1.30x PyTorch" is PyTorch's time over ours (> 1: we are
faster). Results: benchmarks/results/memory_throughput-<device>-<date>-<commit>.json.

Without a GPU nothing is timed: the script says so, checks every op's kernels
on the CPU emulation at small odd shapes against the NumPy reference, and exits
0 (1 if a check fails).
"""
import argparse
import importlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

TOL = 1e-4
LRN = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)
P_DROP, SEED = 0.5, 1234
LR, MOMENTUM, DECAY = 0.01, 0.9, 0.0005
GPU_BACKEND = "cuda"     # the ops backend of the GPU run (tests/test_benchmarks.py swaps in "emu")


@dataclass
class Bench:
    name: str                     # "lrn1 fwd"
    shape: tuple                  # the main tensor's shape, for the row
    inputs: dict                  # NumPy inputs: float64 (float32-representable) arrays, int arrays
    ours: Callable                # ours(arrays on the backend, backend) -> output or tuple
    ref: Callable                 # ref(float64 inputs) -> output or tuple
    nbytes: int                   # minimum bytes moved
    torch: Optional[Callable] = None   # torch(torch, tensors) -> a no-argument call


def _normal(rng, shape, scale=1.0):
    """float64 values that are exact in float32 (so ties and rounding agree)."""
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)).astype(np.float64)


def _f32(a):
    return a.astype(np.float32).astype(np.float64)


def _ops():
    from convnet import ops
    return ops


def _ref():
    from convnet import reference
    return reference


# --- the ops ---------------------------------------------------------------------------

def lrn_benches(rng, tag, shape):
    R = _ref()
    x = _normal(rng, shape, 2.0)
    y = _f32(R.lrn_forward(x, **LRN))
    dy = _normal(rng, shape)
    S = common.nbytes(shape)

    def t_fwd(torch, t):
        return lambda: torch.nn.functional.local_response_norm(
            t["x"], LRN["size"], alpha=LRN["alpha"] * LRN["size"], beta=LRN["beta"], k=LRN["k"])

    def t_bwd(torch, t):
        x_ = t["x"].detach().requires_grad_(True)
        y_ = torch.nn.functional.local_response_norm(
            x_, LRN["size"], alpha=LRN["alpha"] * LRN["size"], beta=LRN["beta"], k=LRN["k"])
        return lambda: torch.autograd.grad(y_, x_, t["dy"], retain_graph=True)[0]

    return [
        Bench(f"{tag} fwd", shape, {"x": x},
              lambda a, b: _ops().lrn_forward(a["x"], **LRN, backend=b),
              lambda a: R.lrn_forward(a["x"], **LRN), 2 * S, t_fwd),
        Bench(f"{tag} bwd", shape, {"dy": dy, "x": x, "y": y},
              lambda a, b: _ops().lrn_backward(a["dy"], a["x"], a["y"], **LRN, backend=b),
              lambda a: R.lrn_backward(a["dy"], a["x"], a["y"], **LRN), 4 * S, t_bwd),
    ]


def pool_benches(rng, tag, shape, mode="max"):
    R = _ref()
    n, c, h, w = shape
    oh, ow = R.pool_output_size(h, 3, 2), R.pool_output_size(w, 3, 2)
    out = (n, c, oh, ow)
    x = _normal(rng, shape)
    dy = _normal(rng, out)
    X, Y = common.nbytes(shape), common.nbytes(out)
    tf = lambda torch: torch.nn.functional  # noqa: E731

    if mode == "max":
        y = R.maxpool_forward(x, 3, 2)

        def t_fwd(torch, t):
            return lambda: tf(torch).max_pool2d(t["x"], 3, 2, ceil_mode=True)

        def t_bwd(torch, t):
            x_ = t["x"].detach().requires_grad_(True)
            y_ = tf(torch).max_pool2d(x_, 3, 2, ceil_mode=True)
            return lambda: torch.autograd.grad(y_, x_, t["dy"], retain_graph=True)[0]

        return [
            Bench(f"{tag} fwd", shape, {"x": x},
                  lambda a, b: _ops().maxpool_forward(a["x"], 3, 2, backend=b),
                  lambda a: R.maxpool_forward(a["x"], 3, 2), X + Y, t_fwd),
            Bench(f"{tag} bwd", shape, {"dy": dy, "x": x, "y": y},
                  lambda a, b: _ops().maxpool_backward(a["dy"], a["x"], a["y"], 3, 2, backend=b),
                  lambda a: R.maxpool_backward(a["dy"], a["x"], a["y"], 3, 2), Y + X + Y + X, t_bwd),
        ]

    def t_afwd(torch, t):
        return lambda: tf(torch).avg_pool2d(t["x"], 3, 2, ceil_mode=True)

    def t_abwd(torch, t):
        x_ = t["x"].detach().requires_grad_(True)
        y_ = tf(torch).avg_pool2d(x_, 3, 2, ceil_mode=True)
        return lambda: torch.autograd.grad(y_, x_, t["dy"], retain_graph=True)[0]

    return [
        Bench(f"{tag} fwd", shape, {"x": x},
              lambda a, b: _ops().avgpool_forward(a["x"], 3, 2, backend=b),
              lambda a: R.avgpool_forward(a["x"], 3, 2), X + Y, t_afwd),
        Bench(f"{tag} bwd", shape, {"dy": dy},
              lambda a, b: _ops().avgpool_backward(a["dy"], shape, 3, 2, backend=b),
              lambda a: R.avgpool_backward(a["dy"], shape, 3, 2), Y + X, t_abwd),
    ]


def relu_benches(rng, tag, shape):
    R = _ref()
    x = _normal(rng, shape)
    y = R.relu_forward(x)
    dy = _normal(rng, shape)
    S = common.nbytes(shape)
    return [
        Bench(f"{tag} fwd", shape, {"x": x},
              lambda a, b: _ops().relu_forward(a["x"], backend=b),
              lambda a: R.relu_forward(a["x"]), 2 * S,
              lambda torch, t: lambda: torch.relu(t["x"])),
        Bench(f"{tag} bwd", shape, {"dy": dy, "y": y},
              lambda a, b: _ops().relu_backward(a["dy"], a["y"], backend=b),
              lambda a: R.relu_backward(a["dy"], a["y"]), 3 * S,
              lambda torch, t: lambda: torch.ops.aten.threshold_backward(t["dy"], t["y"], 0.0)),
    ]


def dropout_benches(rng, tag, shape):
    R = _ref()
    x = _normal(rng, shape)
    dy = _normal(rng, shape)
    S = common.nbytes(shape)

    def t_bwd(torch, t):
        mask = torch.ops.aten.native_dropout(t["x"], P_DROP, True)[1]
        return lambda: torch.ops.aten.native_dropout_backward(t["dy"], mask, 1.0 / (1.0 - P_DROP))

    return [
        Bench(f"{tag} fwd", shape, {"x": x},
              lambda a, b: _ops().dropout_forward(a["x"], P_DROP, SEED, backend=b),
              lambda a: R.dropout_forward(a["x"], P_DROP, SEED), 2 * S,
              lambda torch, t: lambda: torch.nn.functional.dropout(t["x"], P_DROP, True)),
        Bench(f"{tag} bwd", shape, {"dy": dy},
              lambda a, b: _ops().dropout_backward(a["dy"], P_DROP, SEED, backend=b),
              lambda a: R.dropout_backward(a["dy"], P_DROP, SEED), 2 * S, t_bwd),
    ]


def softmax_benches(rng, tag, shape):
    R = _ref()
    z = _normal(rng, shape, 3.0)
    return [Bench(f"{tag} fwd", shape, {"z": z},
                  lambda a, b: _ops().softmax_forward(a["z"], backend=b),
                  lambda a: R.softmax_forward(a["z"]), 2 * common.nbytes(shape),
                  lambda torch, t: lambda: torch.softmax(t["z"], 1))]


def sgd_benches(rng, tag, shape):
    R = _ref()
    w, dw, v = _normal(rng, shape, 0.01), _normal(rng, shape, 0.01), _normal(rng, shape, 0.001)

    def ours(a, b):
        _ops().sgd_update(a["w"], a["dw"], a["v"], LR, MOMENTUM, DECAY, backend=b)
        return a["w"], a["v"]

    def ref(a):
        w_, v_ = a["w"].copy(), a["v"].copy()
        R.sgd_update(w_, a["dw"], v_, LR, MOMENTUM, DECAY)
        return w_, v_

    def t_sgd(torch, t):
        p = torch.nn.Parameter(t["w"].clone())
        p.grad = t["dw"].clone()
        try:   # the fused single-kernel update where this PyTorch has it
            opt = torch.optim.SGD([p], lr=LR, momentum=MOMENTUM, weight_decay=DECAY, fused=True)
            opt.step()
        except (TypeError, RuntimeError, ValueError):    # no fused SGD in this PyTorch
            opt = torch.optim.SGD([p], lr=LR, momentum=MOMENTUM, weight_decay=DECAY, foreach=True)
            opt.step()
        return opt.step

    return [Bench(f"{tag}", shape, {"w": w, "dw": dw, "v": v}, ours, ref,
                  5 * common.nbytes(shape), t_sgd)]     # reads w, dw, v; writes w, v


def augment_benches(rng, tag, n, size, crop):
    """The augmentation kernel (convnet.kernel_ops.augment): uint8 (N, S, S, 3) -> float32
    (N, 3, crop, crop) with random crops, flips, PCA lighting; the spec is
    convnet.data.augment.augment_batch. Bytes: the cropped pixels read (uint8),
    the mean image read once (float32), the output written."""
    from convnet.data import augment as spec
    c = 3
    images = rng.integers(0, 256, size=(n, size, size, c), dtype=np.uint8)
    mean = rng.uniform(0, 255, size=(size, size, c)).astype(np.float32).astype(np.float64)
    offsets = rng.integers(0, size - crop + 1, size=(n, 2)).astype(np.int32)
    flips = (rng.random(n) < 0.5).astype(np.int32)
    light = _normal(rng, (n, c), 5.0)
    moved = n * crop * crop * c + common.nbytes((size, size, c)) + common.nbytes((n, c, crop, crop))

    def ours(a, b):
        aug = importlib.import_module("convnet.kernel_ops.augment")
        return aug.augment_crop(a["images"], a["mean"], a["offsets"], a["flips"], a["light"], crop)

    def ref(a):
        return spec.augment_batch(a["images"], a["mean"].astype(np.float32), a["offsets"], a["flips"],
                                  a["light"].astype(np.float32), crop)

    def t_aug(torch, t):
        ar = torch.arange(crop, device=t["images"].device)
        batch = torch.arange(n, device=ar.device)[:, None, None]
        off = t["offsets"].long()
        flip = t["flips"].bool()[:, None]
        scale = spec.SCALE

        def fn():
            rows = (off[:, 0:1] + ar)[:, :, None]                                   # (N, crop, 1)
            cols = torch.where(flip, off[:, 1:2] + crop - 1 - ar, off[:, 1:2] + ar)[:, None, :]
            pixels = t["images"][batch, rows, cols].float()                          # (N, crop, crop, C)
            out = (pixels - t["mean"][rows, cols] + t["light"][:, None, None, :]) * scale
            return out.permute(0, 3, 1, 2).contiguous()
        return fn

    return [Bench(tag, (n, size, size, c),
                  {"images": images, "mean": mean, "offsets": offsets, "flips": flips, "light": light},
                  ours, ref, moved, t_aug)]


STORED_SIZE = 256     # the augmentation's input: images stored at 256 x 256 (the paper's)


def alexnet_memory_shapes(batch=128, config="alexnet"):
    """Each op's input shape at AlexNet's layers, as one device, derived from the config
    (benchmarks/common.py): an op runs on the output of the layer before it."""
    s = common.alexnet_shapes(batch, config)
    return dict(lrn1=s["conv1"], lrn2=s["conv2"], pool1=s["lrn1"], pool2=s["lrn2"], pool5=s["conv5"],
                avgpool1=s["lrn1"], relu1=s["conv1"], drop6=s["fc6"], softmax8=s["fc8"],
                sgd_fc6=s["fc6.weight"], augment=(batch, STORED_SIZE, s["data"][2]))   # augment: (N, S, crop)


SHAPES = {
    "alexnet": alexnet_memory_shapes(),
    "small": dict(lrn1=(3, 7, 13, 11), lrn2=(2, 5, 6, 9), pool1=(3, 5, 13, 12),
                  pool2=(2, 3, 12, 13), pool5=(3, 2, 7, 7), avgpool1=(3, 5, 13, 12),
                  relu1=(3, 5, 13, 11), drop6=(5, 37), softmax8=(5, 37),
                  sgd_fc6=(37, 29), augment=(3, 40, 33)),
}
BUILDERS = {
    "lrn1": lrn_benches, "lrn2": lrn_benches,
    "pool1": pool_benches, "pool2": pool_benches, "pool5": pool_benches,
    "avgpool1": lambda rng, tag, shape: pool_benches(rng, tag, shape, mode="avg"),
    "relu1": relu_benches, "drop6": dropout_benches, "softmax8": softmax_benches,
    "sgd_fc6": sgd_benches,
    "augment": lambda rng, tag, shape: augment_benches(rng, tag, *shape),
}
OPS = tuple(BUILDERS)


def parse_ops(text):
    """'lrn1,pool1' -> ['lrn1', 'pool1'] (all ops for ''); unknown names -> ValueError."""
    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    bad = [t for t in names if t not in BUILDERS]
    if bad:
        raise ValueError(f"unknown op {', '.join(bad)}: choose from {', '.join(OPS)}")
    return names or list(OPS)


def benches(scale, rng, ops=None):
    """The benches of the ops asked for (default all) at 'alexnet' (batch 128) or 'small'
    (odd shapes for the emulation) scale, built one op at a time (a generator: at the
    AlexNet scale only one op's inputs are held at once)."""
    for tag in ops or OPS:
        yield from BUILDERS[tag](rng, tag, SHAPES[scale][tag])


def _device(spec):
    """The convnet.backend device of a spec ("emu", "cuda")."""
    from convnet import backend
    return backend.parse(spec)[0]


def _tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _to_float32(inputs):
    return {k: (v.astype(np.float32) if v.dtype.kind == "f" else v.astype(np.int32)
                if v.dtype.kind == "i" and v.dtype.itemsize > 4 else v.copy())
            for k, v in inputs.items()}


def check(bench, arrays, backend, to_numpy):
    """Normwise relative error of ours against the reference (worst output)."""
    ref = _tuple(bench.ref(bench.inputs))
    got = _tuple(bench.ours(arrays, backend))
    if len(got) != len(ref):
        raise ValueError(f"{len(got)} outputs, the reference has {len(ref)}")
    return max(common.relative_error(to_numpy(g), r) for g, r in zip(got, ref))


# --- the CPU check (no GPU) ------------------------------------------------------------

def run_cpu(args, reason):
    print(common.no_gpu_banner("memory_throughput", reason))
    rng = np.random.default_rng(args.seed)
    failures = 0
    t0 = time.perf_counter()
    for bench in benches("small", rng, args.ops):
        try:
            err = check(bench, _to_float32(bench.inputs), _device("emu"), np.asarray)
            status, detail = ("ok" if err < TOL else "FAIL"), f"rel err {err:.1e}"
        except Exception as e:   # one broken kernel must not hide the others
            status, detail = "FAIL", common._one_line(e)
        failures += status != "ok"
        print(f"{bench.name} | {common.fmt_shape(bench.shape)} | {detail} | {status}")
    print(f"CPU check (emulation against the NumPy reference, tolerance {TOL:.0e}): "
          f"{'all passed' if not failures else f'{failures} FAILED'} in {time.perf_counter() - t0:.1f} s")
    return 1 if failures else 0


# --- the benchmark (GPU) ------------------------------------------------------------------

def run_gpu(args, cupy, torch):
    info = common.device_info(cupy, torch)
    if torch is not None:
        common.setup_torch_fp32(torch)
        common.check_same_stream(cupy, torch)
    print(f"memory_throughput on {info['device']} (driver {info['nvidia_driver']}, CUDA runtime "
          f"{info['cuda_runtime']}, CuPy {info['cupy']}, PyTorch {info.get('torch', 'absent')}), "
          f"median of {args.repeat}")
    copy_bw, copy_runs = common.measure_copy_bandwidth(cupy)
    print(f"device-to-device copy measured now: {copy_bw / 1e9:.0f} GB/s (read + write)")
    flush = common.L2Flush(cupy)
    rng = np.random.default_rng(args.seed)
    rows = []
    for bench in benches("alexnet", rng, args.ops):
        host = _to_float32(bench.inputs)
        g = {k: cupy.asarray(v) for k, v in host.items()}
        row = {"op": bench.name, "shape": bench.shape, "bytes_moved": bench.nbytes}
        try:
            err = check(bench, g, _device(GPU_BACKEND), cupy.asnumpy)
        except Exception as e:
            err, row["error"] = float("inf"), common._one_line(e)
        row["rel_err"] = err
        if not err < TOL:
            row["status"] = "FAIL"
            rows.append(row)
            print(f"{bench.name} | {common.fmt_shape(bench.shape)} | FAIL "
                  f"({row.get('error', f'rel err {err:.1e} >= {TOL:.0e}')}): not timed")
            continue
        device = _device(GPU_BACKEND)
        times = common.time_cuda(cupy, lambda: bench.ours(g, device), args.repeat, args.warmup, flush)
        ms = common.median(times)
        row.update(status="ok", ms=ms, times_ms=times, gbs=bench.nbytes / (ms * 1e-3) / 1e9,
                   copy_pct=100 * bench.nbytes / (ms * 1e-3) / copy_bw)
        ref_ms = None
        if torch is not None and bench.torch is not None:
            t = {k: torch.from_numpy(v).cuda() for k, v in host.items()}
            ref_times = common.time_cuda(cupy, bench.torch(torch, t), args.repeat, args.warmup, flush)
            ref_ms = common.median(ref_times)
            row.update(torch_ms=ref_ms, torch_times_ms=ref_times, ratio=ref_ms / ms)
            del t
        rows.append(row)
        print(common.memory_row(bench.name, common.fmt_shape(bench.shape), ms, bench.nbytes,
                                copy_bw, ref_ms))
        g = None
        cupy.get_default_memory_pool().free_all_blocks()
    extra = {"repeat": args.repeat, "warmup": args.warmup, "tolerance": TOL,
             "copy_bandwidth": copy_bw, "copy_runs": copy_runs}
    path = common.write_results("memory_throughput", info, rows, extra)
    print(f"results: {path}")
    failed = sum(r["status"] != "ok" for r in rows)
    if failed:
        print(f"{failed} op(s) FAILED the check against the reference")
    return 1 if failed else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ops", default="", help="comma list of ops (lrn1, pool1, relu1, ...; default all)")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per op (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-gpu", action="store_true", help="run the CPU check even if a GPU is present")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0:
        p.error("--repeat must be >= 1 and --warmup >= 0")
    try:
        args.ops = parse_ops(args.ops)
    except ValueError as e:
        p.error(str(e))
    cupy, reason = common.gpu_status(args.no_gpu)
    if cupy is None:
        return run_cpu(args, reason)
    torch, why = common.torch_status()
    if torch is None:
        print(f"note: {why}: no PyTorch column")
    return run_gpu(args, cupy, torch)


if __name__ == "__main__":
    sys.exit(main())
