"""Convolution throughput at AlexNet's shapes: our kernels (kernels/conv.cu) against cuDNN.

    python3 benchmarks/conv_throughput.py                    # everything, batch 128
    python3 benchmarks/conv_throughput.py --layers conv2,conv3 --passes fwd --repeat 50
    python3 benchmarks/conv_throughput.py --versions v1,v2,shipped --split column

Every layer runs twice: as one device with groups ("conv2": 96 -> 256, groups 2)
and as one column of the paper's two ("conv2/col": 48 -> 128). For each pass
(fwd, bwd_data -- not for conv1, whose input is the image -- and bwd_filter)
and each kernel version asked for, our output is first compared with cuDNN's on
the same inputs (normwise relative error < 1e-4, else the row is FAIL and not
timed); then both are timed in the same run with CUDA events: warm-up, an L2
flush before every run, the median of --repeat runs. A row reads

    conv2/col fwd v2 | 128x48x27x27 -> 128x128x27x27 | 1.92 ms | 51.3 TFLOP/s | 77% peak | 0.91x cuDNN
        static model: >= 0.669 ms (64% of the datasheet peak at most; issue-bound, ...); measured 2.87x that

where the FLOPs are 2*N*F*OH*OW*(C/groups)*KH*KW (the same for all three
passes), "peak" is the FP32 FMA throughput of this device measured in the same
run, and "0.91x cuDNN" is cuDNN's time over ours (> 1: we are faster). The
line under it is benchmarks/static_model.py's static bound for the same launch
(when cuobjdump is there), and the measured time over it. cuDNN
runs in plain FP32 (TF32 off) with cudnn.benchmark on. Rows, raw times,
versions and the kernels' registers/shared memory/spills go to
benchmarks/results/conv_throughput-<device>-<date>-<commit>.json.

--precision tf32|bf16 runs the tensor-core kernels (kernels/conv_tc.cu) instead,
against cuDNN with TF32 allowed (tf32) or on bf16 tensors (bf16); the check
allows TOL_PRECISION[precision] against cuDNN there (both round their inputs,
in different orders), and the CPU check compares with the reference on inputs
rounded as the kernels round them (convnet/precision.py).

Without a GPU (or without PyTorch) nothing is timed: the script says so, checks
the same kernels and passes on the CPU emulation against the NumPy reference at
batch 2 with the real channel counts and smaller images, and exits 0 (1 if a
check fails).
"""
import argparse
import importlib
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

TOL = 1e-4                       # normwise relative error allowed against cuDNN / the reference
# against cuDNN in the same precision (GPU): inputs rounded to 2^-11 (tf32) / 2^-8 (bf16)
# relative, and cuDNN's bf16 output rounded once more
TOL_PRECISION = {"fp32": TOL, "tf32": 5e-3, "bf16": 3e-2}
PASSES = common.CONV_PASSES      # fwd, bwd_data, bwd_filter
CPU_IMAGE = {227: 27, 27: 7, 13: 5}    # image sizes for the CPU check (conv1 27 -> 5x5)
CPU_BATCH = 2


ConvLayer = common.ConvLayer
# The conv layers of the `alexnet` config (two columns), as one device with groups
# and per column, derived from the config (benchmarks/common.py).
LAYERS = common.alexnet_conv_layers("alexnet")


def parse_list(text, allowed, what):
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise ValueError(f"unknown {what} {', '.join(bad) or repr(text)}: choose from {', '.join(allowed)}")
    return items


def select_layers(layers_text, split):
    bases = sorted({layer.base for layer in LAYERS})
    names = parse_list(layers_text, bases, "layer") if layers_text else bases
    splits = {"both": ("device", "column"), "device": ("device",), "column": ("column",)}[split]
    return [layer for layer in LAYERS if layer.base in names and layer.split in splits]


OP_NAMES = {"fwd": "conv2d_forward", "bwd_data": "conv2d_backward_data",
            "bwd_filter": "conv2d_backward_filter"}


def shipped_version(conv, pass_):
    """The version name the launcher ships for this pass (conv.SHIPPED), if it says."""
    shipped = getattr(conv, "SHIPPED", None)
    if isinstance(shipped, dict):
        return shipped.get(OP_NAMES[pass_], shipped.get(pass_))
    return shipped if isinstance(shipped, str) else None


def resolve_versions(conv, versions):
    """'all' -> every kept version (conv.VERSIONS); 'shipped' -> None (the launcher's default)."""
    out = []
    for v in versions:
        if v == "all":
            out.extend(getattr(conv, "VERSIONS", ()))
        else:
            out.append(None if v == "shipped" else v)
    return list(dict.fromkeys(out))


def version_label(conv, pass_, version):
    """'v2' for an explicit version, 'shipped' or 'shipped=v2' for None."""
    if version is not None:
        return version
    name = shipped_version(conv, pass_)
    return f"shipped={name}" if name else "shipped"


def make_inputs(rng, layer, n, hw=None):
    """float64 NumPy x, w, b, dy for one layer; weights scaled by 1/sqrt(fan-in)."""
    xs, ws, ys = layer.shapes(n, hw)
    fan_in = ws[1] * ws[2] * ws[3]
    return {"x": rng.standard_normal(xs),
            "w": rng.standard_normal(ws) / math.sqrt(fan_in),
            "b": rng.standard_normal(layer.f),
            "dy": rng.standard_normal(ys)}


def conv_module(precision):
    """The launcher module of a precision: kernel_ops.conv (fp32) or kernel_ops.conv_tc."""
    return importlib.import_module("convnet.kernel_ops." + ("conv" if precision == "fp32" else "conv_tc"))


def our_fn(conv, pass_, t, layer, version, precision="fp32"):
    """A no-argument call of our launcher for one pass on arrays t (NumPy -> emulation, CuPy -> GPU)."""
    kw = dict(stride=layer.stride, pad=layer.pad, groups=layer.groups, version=version)
    if precision != "fp32":
        kw["precision"] = precision
    if pass_ == "fwd":
        return lambda: conv.conv2d_forward(t["x"], t["w"], t["b"], **kw)
    if pass_ == "bwd_data":
        return lambda: conv.conv2d_backward_data(t["dy"], t["w"], tuple(t["x"].shape), **kw)
    return lambda: conv.conv2d_backward_filter(t["dy"], t["x"], tuple(t["w"].shape), **kw)


def reference_out(reference, pass_, t, layer):
    kw = dict(stride=layer.stride, pad=layer.pad, groups=layer.groups)
    if pass_ == "fwd":
        return reference.conv2d_forward(t["x"], t["w"], t["b"], **kw)
    if pass_ == "bwd_data":
        return reference.conv2d_backward_data(t["dy"], t["w"], t["x"].shape, **kw)
    return reference.conv2d_backward_filter(t["dy"], t["x"], t["w"].shape, **kw)


def torch_fn(torch, pass_, t, layer):
    """cuDNN through PyTorch for one pass on torch tensors t (x, w, b, dy)."""
    s, p, g = [layer.stride] * 2, [layer.pad] * 2, layer.groups
    if pass_ == "fwd":
        return lambda: torch.nn.functional.conv2d(t["x"], t["w"], t["b"], s, p, 1, g)
    backward = getattr(torch.ops.aten, "convolution_backward", None)
    if backward is not None:   # the op autograd itself calls; one output asked for
        mask, index = ([True, False, False], 0) if pass_ == "bwd_data" else ([False, True, False], 1)
        return lambda: backward(t["dy"], t["x"], t["w"], None, s, p, [1, 1], False, [0, 0], g, mask)[index]
    if pass_ == "bwd_data":
        return lambda: torch.nn.grad.conv2d_input(t["x"].shape, t["w"], t["dy"], s, p, 1, g)
    return lambda: torch.nn.grad.conv2d_weight(t["x"], t["w"].shape, t["dy"], s, p, 1, g)


# --- the CPU check (no GPU) ---------------------------------------------------------

def run_cpu(args, reason):
    print(common.no_gpu_banner("conv_throughput", reason))
    try:
        conv = conv_module(args.precision)
        reference = importlib.import_module("convnet.reference")
        from convnet.precision import round_to
    except ImportError as e:
        print(f"error: cannot import the kernels or the reference: {e}", file=sys.stderr)
        return 1
    versions = resolve_versions(conv, args.versions)
    n = args.batch or CPU_BATCH
    rng = np.random.default_rng(args.seed)
    failures = 0
    t0 = time.perf_counter()
    for layer in select_layers(args.layers, args.split):
        hw = CPU_IMAGE.get(layer.hw, layer.hw) if not args.full_size else layer.hw
        xs, _, ys = layer.shapes(n, hw)
        t64 = make_inputs(rng, layer, n, hw)
        t32 = {k: v.astype(np.float32) for k, v in t64.items()}
        for pass_ in [p for p in layer.passes() if p in args.passes]:
            rounded = {k: (v if k == "b" else round_to(v, args.precision)) for k, v in t64.items()}
            ref = reference_out(reference, pass_, rounded, layer)
            for version in versions:
                label = f"{layer.name} {pass_} {version_label(conv, pass_, version)}"
                try:
                    err = common.relative_error(our_fn(conv, pass_, t32, layer, version, args.precision)(), ref)
                    status = "ok" if err < TOL else "FAIL"
                    detail = f"rel err {err:.1e}"
                except Exception as e:   # one broken kernel must not hide the others
                    status, detail = "FAIL", common._one_line(e)
                failures += status != "ok"
                print(f"{label} | {common.fmt_shape(xs)} -> {common.fmt_shape(ys)} | {detail} | {status}")
    dt = time.perf_counter() - t0
    print(f"CPU check (emulation against the NumPy reference, tolerance {TOL:.0e}): "
          f"{'all passed' if not failures else f'{failures} FAILED'} in {dt:.1f} s")
    return 1 if failures else 0


# --- the benchmark (GPU) ------------------------------------------------------------

def gpu_rel_err(cupy, got, ref):
    """Normwise relative error of a CuPy array against a torch tensor, on the GPU."""
    ref = cupy.asarray(ref)
    if tuple(got.shape) != tuple(ref.shape):
        raise ValueError(f"shape {tuple(got.shape)} != cuDNN's {tuple(ref.shape)}")
    diff = float(cupy.max(cupy.abs(got - ref)))
    scale = float(cupy.max(cupy.abs(ref)))
    return diff / max(scale, 1e-30) if math.isfinite(diff) else float("inf")


def resources(cupy, source="conv.cu"):
    """Registers / shared memory / spills of each conv kernel: ptxas (sm_90) when nvcc
    is on the PATH, else the attributes of the module CuPy loaded (what actually runs)."""
    res = common.ptxas_resources(common.ROOT / "kernels" / source, arch="sm_90")
    if res:
        return {"source": "nvcc -Xptxas -v, sm_90", "kernels": res}
    try:
        from convnet import kernels
        lib = kernels.default_library()
        out = {}
        for name, sig in sorted(kernels.signatures().items()):
            if Path(sig.file).name != source:
                continue
            with cupy.cuda.Device(0):
                fn = lib._cuda_module(sig.file, 0).get_function(name)
                out[name] = {"registers": fn.num_regs, "smem_bytes": fn.shared_size_bytes,
                             "local_bytes": fn.local_size_bytes}
        return {"source": "CuPy function attributes of the loaded module", "kernels": out}
    except Exception as e:     # the table is informative: never lose the timings over it
        return {"source": f"unavailable ({common._one_line(e)})", "kernels": {}}


def static_model_kernels():
    """(conv.cu's kernels analysed by benchmarks/static_model.py, note): the static
    model's reading of the sm_90 code, or None and why not (no cuobjdump, no fatbin)."""
    try:
        from benchmarks import static_model
        if not static_model.find_tool("cuobjdump"):
            return None, "no cuobjdump: no static model predictions"
        return static_model.analyse_kernels(["conv"], make=False)["conv"], "static model: sm_90 SASS of build/kernels"
    except Exception as e:       # the predictions are informative: never lose the timings over them
        return None, f"static model unavailable ({common._one_line(e)})"


def model_prediction(kernels, conv, pass_, version, layer, n):
    """The static model's bound for this row (benchmarks/static_model.py), or None."""
    if kernels is None:
        return None
    from benchmarks import static_model
    v = version or shipped_version(conv, pass_)
    try:
        r = static_model.model_pass(kernels, conv, pass_, v, layer, n)
    except Exception as e:
        return {"error": common._one_line(e)}
    return {k: r[k] for k in ("kernel", "bound", "ms", "tflops", "limiter", "issue_bound", "smem_bound",
                              "gmem_bound", "fill", "waves", "wave_eff", "tail_eff", "blocks", "blocks_per_sm",
                              "estimate", "estimate_ms")}


def totals(rows, peak):
    """Sum of times (ours and cuDNN's) per (split, version, pass) and per (split, version)."""
    acc = {}
    for r in rows:
        if r["status"] != "ok":
            continue
        for key in ((r["split"], r["version"], r["pass"]), (r["split"], r["version"], "all")):
            a = acc.setdefault(key, [0.0, 0.0, 0])
            a[0] += r["ms"]
            a[1] += r["cudnn_ms"]
            a[2] += r["flops"]
    order = {p: i for i, p in enumerate(PASSES + ("all",))}
    out = []
    for (split, version, pass_), (ms, ref_ms, flops) in sorted(
            acc.items(), key=lambda kv: (kv[0][0] != "device", kv[0][1], order[kv[0][2]])):
        out.append({"split": split, "version": version, "pass": pass_, "ms": ms,
                    "cudnn_ms": ref_ms, "flops": flops, "tflops": flops / (ms * 1e-3) / 1e12,
                    "peak_pct": 100 * flops / (ms * 1e-3) / peak, "ratio": ref_ms / ms})
    return out


def run_gpu(args, cupy, torch):
    common.setup_torch_fp32(torch)
    if args.precision == "tf32":     # cuDNN as PyTorch runs it by default
        torch.backends.cudnn.allow_tf32 = True
    tol = TOL_PRECISION[args.precision]
    common.check_same_stream(cupy, torch)
    conv = conv_module(args.precision)
    versions = resolve_versions(conv, args.versions)
    info = common.device_info(cupy, torch)
    n = args.batch or 128
    print(f"conv_throughput on {info['device']} (driver {info['nvidia_driver']}, CUDA runtime "
          f"{info['cuda_runtime']}, CuPy {info['cupy']}, PyTorch {info['torch']}, cuDNN {info['cudnn']}), "
          f"batch {n}, median of {args.repeat}, precision {args.precision}")
    peak, peak_runs = common.measure_fp32_peak(cupy)
    print(f"FP32 FMA peak measured now: {peak / 1e12:.1f} TFLOP/s")
    flush = common.L2Flush(cupy)
    rng = np.random.default_rng(args.seed)
    model_kernels, model_note = static_model_kernels()
    print(model_note)
    rows = []
    for layer in select_layers(args.layers, args.split):
        xs, ws, ys = layer.shapes(n)
        h = make_inputs(rng, layer, n)
        g = {k: cupy.asarray(v, dtype=cupy.float32) for k, v in h.items()}
        del h
        t = {k: torch.as_tensor(v, device="cuda") for k, v in g.items()}
        if args.precision == "bf16":
            t = {k: v.to(torch.bfloat16) for k, v in t.items()}
        for pass_ in [p for p in layer.passes() if p in args.passes]:
            flops = common.conv_flops(xs, ws, layer.stride, layer.pad, layer.groups, pass_)
            ref = torch_fn(torch, pass_, t, layer)
            ref_out = ref()
            if args.precision == "bf16":      # compared in float32
                ref_out = ref_out.float()
            ref_times = common.time_cuda(cupy, ref, args.repeat, args.warmup, flush)
            ref_ms = common.median(ref_times)
            for version in versions:
                vlabel = version_label(conv, pass_, version)
                label = f"{layer.name} {pass_} {vlabel}"
                row = {"layer": layer.name, "split": layer.split, "pass": pass_, "version": vlabel,
                       "x_shape": xs, "w_shape": ws, "y_shape": ys, "stride": layer.stride,
                       "pad": layer.pad, "groups": layer.groups, "flops": flops,
                       "cudnn_ms": ref_ms, "cudnn_times_ms": ref_times}
                ours = our_fn(conv, pass_, g, layer, version, args.precision)
                try:
                    err = gpu_rel_err(cupy, ours(), ref_out)
                except Exception as e:
                    err, row["error"] = float("inf"), common._one_line(e)
                row["rel_err"] = err
                if not err < tol:
                    row["status"] = "FAIL"
                    rows.append(row)
                    why = row.get("error", f"rel err {err:.1e} >= {tol:.0e} against cuDNN")
                    print(f"{label} | {common.fmt_shape(xs)} -> {common.fmt_shape(ys)} | FAIL ({why}): not timed")
                    continue
                times = common.time_cuda(cupy, ours, args.repeat, args.warmup, flush)
                ms = common.median(times)
                row.update(status="ok", ms=ms, times_ms=times, tflops=flops / (ms * 1e-3) / 1e12,
                           peak_pct=100 * flops / (ms * 1e-3) / peak, ratio=ref_ms / ms)
                model = model_prediction(model_kernels, conv, pass_, version, layer, n)
                row["model"] = model
                if model and "ms" in model:     # measured over the static floor: the model's gap
                    row["model_ms_ratio"] = ms / model["ms"]
                rows.append(row)
                print(common.conv_row(label, xs, ys, ms, flops, peak, ref_ms))
                if model and "ms" in model:
                    print(f"    static model: >= {model['ms']:.3f} ms ({100 * model['bound']:.0f}% of the datasheet "
                          f"peak at most; {model['limiter']}-bound, fill {model['fill']:.2f}, "
                          f"{model['waves']:.2f} waves, est {model['estimate_ms']:.3f} ms); "
                          f"measured {row['model_ms_ratio']:.2f}x the bound")
        del g, t
        cupy.get_default_memory_pool().free_all_blocks()
        torch.cuda.empty_cache()
    tot = totals(rows, peak)
    print("totals (rows that passed; 'device' = one device with groups, 'column' = one column):")
    for r in tot:
        print(common.rate_row(f"  {r['split']} {r['version']} {r['pass']}", None, r["ms"], r["flops"],
                              peak, r["cudnn_ms"]))
    res = resources(cupy) if args.precision == "fp32" else resources(cupy, "conv_tc.cu")
    print(f"kernel resources ({res['source']}):")
    for name, r in res["kernels"].items():
        spills = f", spills {r['spill_store_bytes']}/{r['spill_load_bytes']} B" if "spill_store_bytes" in r else ""
        print(f"  {name:<28} {r['registers']} registers, {r['smem_bytes']} B shared{spills}")
    extra = {"batch": n, "repeat": args.repeat, "warmup": args.warmup, "tolerance": tol,
             "precision": args.precision,
             "peak_flops": peak, "peak_runs_flops": peak_runs,
             "shipped": getattr(conv, "SHIPPED", None), "versions": [v or "shipped" for v in versions],
             "resources": res, "totals": tot, "static_model": model_note,
             "cudnn_backward": "aten.convolution_backward"
             if hasattr(torch.ops.aten, "convolution_backward") else "torch.nn.grad"}
    path = common.write_results("conv_throughput", info, rows, extra)
    print(f"results: {path}")
    failed = sum(r["status"] != "ok" for r in rows)
    if failed:
        print(f"{failed} row(s) FAILED the check against cuDNN")
    return 1 if failed else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=None, help="batch size (default 128; 2 for the CPU check)")
    p.add_argument("--layers", default="", help="comma list of conv1..conv5 (default all)")
    p.add_argument("--split", choices=["both", "device", "column"], default="both",
                   help="one device with groups, one column, or both (default)")
    p.add_argument("--passes", default=",".join(PASSES), help="comma list of fwd,bwd_data,bwd_filter")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per row (median reported; >= 20)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--versions", default="shipped",
                   help="comma list of kernel versions (v1,v2,...), 'shipped' (default) or 'all'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="fp32",
                   help="fp32 (conv.cu, default) or the tensor-core kernels in tf32 / bf16 (conv_tc.cu)")
    p.add_argument("--no-gpu", action="store_true", help="run the CPU check even if a GPU is present")
    p.add_argument("--full-size", action="store_true", help="CPU check at the real image sizes (slow)")
    args = p.parse_args(argv)
    try:
        select_layers(args.layers, args.split)
        args.passes = parse_list(args.passes, PASSES, "pass")
        args.versions = [t.strip() for t in args.versions.split(",") if t.strip()]
        if not args.versions:
            raise ValueError("--versions is empty")
        if args.batch is not None and args.batch < 1:
            raise ValueError(f"--batch must be >= 1, got {args.batch}")
        if args.repeat < 1 or args.warmup < 0:
            raise ValueError("--repeat must be >= 1 and --warmup >= 0")
    except ValueError as e:
        p.error(str(e))
    cupy, reason = common.gpu_status(args.no_gpu)
    torch = None
    if cupy is not None:
        torch, why = common.torch_status()
        if torch is None:
            cupy, reason = None, why
    if cupy is None:
        return run_cpu(args, reason)
    return run_gpu(args, cupy, torch)


if __name__ == "__main__":
    sys.exit(main())
