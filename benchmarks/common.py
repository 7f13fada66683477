"""Shared helpers for the benchmarks: GPU detection, timing, counting, rows, results files.

Every benchmark checks before it times, times with CUDA events (warm-up, an L2
flush before every timed run, the median of the repeats), reports FLOP/s or
bytes/s next to a ceiling measured in the same run (the FP32 FMA peak, the
device-to-device copy bandwidth) and writes its rows with the raw times to
benchmarks/results/<benchmark>-<device>-<date>-<commit>.json.

Nothing here imports CuPy or PyTorch at module level: the scripts run (their
no-GPU check mode) on a machine that has neither. Functions that need them take
the module as an argument.
"""
import datetime
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:          # scripts run as `python3 benchmarks/x.py`
    sys.path.insert(0, str(ROOT))

CONV_PASSES = ("fwd", "bwd_data", "bwd_filter")


# --- what is installed ------------------------------------------------------

def _one_line(e):
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def gpu_status(force_cpu=False):
    """(cupy module or None, reason): CuPy with at least one CUDA device, or why not."""
    if force_cpu:
        return None, "--no-gpu given"
    try:
        import cupy
    except Exception as e:          # ImportError, or a CuPy built for another CUDA
        return None, f"CuPy is not importable ({_one_line(e)})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return None, f"no CUDA device found ({_one_line(e)})"
    if n < 1:
        return None, "no CUDA device found"
    return cupy, f"{n} CUDA device(s)"


def torch_status():
    """(torch module or None, reason): PyTorch with CUDA, or why not."""
    try:
        import torch
    except Exception as e:
        return None, f"PyTorch is not importable ({_one_line(e)})"
    if not torch.cuda.is_available():
        return None, "PyTorch sees no CUDA device"
    return torch, f"PyTorch {torch.__version__}"


def setup_torch_fp32(torch):
    """Plain FP32 in PyTorch/cuDNN (no TF32), autotuned algorithms."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.enabled = True


def check_same_stream(cupy, torch):
    """CuPy's and PyTorch's current streams must be the legacy default stream, so
    that one set of events and one L2 flush order both libraries' work."""
    c = cupy.cuda.get_current_stream().ptr
    t = torch.cuda.current_stream().cuda_stream
    if c != 0 or t != 0:
        raise RuntimeError(f"CuPy (stream {c:#x}) and PyTorch (stream {t:#x}) must both use the "
                           "default stream; unset CUPY_CUDA_PER_THREAD_DEFAULT_STREAM")


# --- AlexNet's conv layers, from the config -----------------------------------

@dataclass(frozen=True)
class ConvLayer:
    name: str        # "conv2" (one device, groups) or "conv2/col" (one column)
    c: int           # input channels
    hw: int          # image height = width
    f: int           # filters
    k: int           # kernel height = width
    stride: int
    pad: int
    groups: int

    @property
    def base(self):
        return self.name.split("/")[0]

    @property
    def split(self):
        return "column" if self.name.endswith("/col") else "device"

    def shapes(self, n, hw=None):
        """(x, w, y) shapes at batch n (and image size hw, default the layer's)."""
        hw = hw or self.hw
        o = conv_output_size(hw, self.k, self.stride, self.pad)
        return (n, self.c, hw, hw), (self.f, self.c // self.groups, self.k, self.k), (n, self.f, o, o)

    def passes(self):
        # the first conv's input is the image: nothing needs its gradient
        return [p for p in CONV_PASSES if not (p == "bwd_data" and self.base == "conv1")]


def _square(value, what, name):
    a, b = (value, value) if isinstance(value, int) else tuple(value)
    if a != b:
        raise ValueError(f"layer {name}: {what} {value!r} is not square (the benchmarks take square convs)")
    return int(a)


def alexnet_conv_layers(config="alexnet"):
    """The conv layers of a two-column config (conv1a/conv1b, ...), derived from its
    layer dicts and shapes (convnet.net.Net, materialize=False), in two forms:
    "convN/col", one column's layer (the same for both columns), and "convN", the two
    columns as one device: filters added, groups=2 where each column reads only its own
    input, groups=1 where both read the same inputs (conv3, across the columns)."""
    from convnet.net import Net
    net = Net(config, materialize=False)
    convs = [net.layers[n] for n in net.config_order if net.layers[n].kind == "conv"]
    by_base = {}
    for layer in convs:
        base = layer.name.rstrip("ab") if layer.name[-1:] in "ab" else layer.name
        by_base.setdefault(base, []).append(layer)
    out = []
    for base, cols in by_base.items():
        views = []
        for layer in cols:
            spec = layer.spec
            c = sum(s[0] for s in layer.in_shapes)
            hw = _square(layer.in_shapes[0][1:], "input", layer.name)
            k = _square(spec["size"], "size", layer.name)
            views.append((c, hw, layer.out_shape[0], k, _square(spec.get("stride", 1), "stride", layer.name),
                          _square(spec.get("pad", 0), "pad", layer.name), int(spec.get("groups", 1)),
                          tuple(layer.inputs)))
        first = views[0]
        if any(v[:7] != first[:7] for v in views):
            raise ValueError(f"{base}: the columns' layers differ ({[l.name for l in cols]})")
        c, hw, f, k, s, p, g, ins = first
        if len(cols) == 1:              # one column only: the layer is the whole device
            out.append(ConvLayer(base, c, hw, f, k, s, p, g))
            continue
        out.append(ConvLayer(base + "/col", c, hw, f, k, s, p, g))
        shared = all(v[7] == ins for v in views)
        if shared:
            out.append(ConvLayer(base, c, hw, f * len(cols), k, s, p, g))
        else:
            out.append(ConvLayer(base, c * len(cols), hw, f * len(cols), k, s, p, g * len(cols)))
    # one device first, then the column, per layer (the order the benchmarks print)
    order = {name: i for i, name in enumerate(by_base)}
    return sorted(out, key=lambda l: (order[l.base], l.split != "device"))


def alexnet_shapes(batch=128, config="alexnet"):
    """Per layer of a two-column config, named without the column letter ("conv1",
    "lrn1", "fc6", ...): the output shape at this batch as one device (the columns'
    channels or features side by side), and for fc layers "<name>.weight", the
    weight's (outputs, inputs) shape as one device."""
    import math as _math
    from convnet.net import Net
    net = Net(config, materialize=False)
    out = {}
    for name in net.config_order:
        layer = net.layers[name]
        base = name[:-1] if name[-1:] in "ab" and name[:-1] + ("b" if name[-1] == "a" else "a") in net.layers \
            else name
        shape = tuple(layer.out_shape)
        if base in out and base != name:          # the second column: add its channels / features
            prev = out[base]
            out[base] = (prev[0], prev[1] + shape[0]) + tuple(prev[2:])
        else:
            out[base] = (batch,) + shape
        if layer.kind == "fc":
            fan_in = sum(_math.prod(s) for s in layer.in_shapes)
            key = base + ".weight"
            rows = out[key][0] + shape[0] if key in out and base != name else shape[0]
            out[key] = (rows, fan_in)
    return out


# --- counting ----------------------------------------------------------------

def conv_output_size(n, k, stride, pad):
    out = (n + 2 * pad - k) // stride + 1
    if out < 1:
        raise ValueError(f"kernel {k} larger than padded input {n} + 2*{pad}")
    return out


def conv_flops(x_shape, w_shape, stride=1, pad=0, groups=1, pass_="fwd"):
    """FLOPs of one convolution pass: 2*N*F*OH*OW*(C/groups)*KH*KW.

    Forward, backward-data and backward-filter do the same multiply-adds (the
    same GEMM, transposed), so the count is the same for each pass.
    """
    if pass_ not in CONV_PASSES:
        raise ValueError(f"unknown pass {pass_!r}: choose one of {', '.join(CONV_PASSES)}")
    n, c, h, w = x_shape
    f, cg, kh, kw = w_shape
    if c % groups or f % groups:
        raise ValueError(f"channels {c} and filters {f} must be divisible by groups {groups}")
    if cg != c // groups:
        raise ValueError(f"weight has {cg} input channels, expected {c} / {groups} groups = {c // groups}")
    oh = conv_output_size(h, kh, stride, pad)
    ow = conv_output_size(w, kw, stride, pad)
    return 2 * n * f * oh * ow * cg * kh * kw


def nbytes(shape, itemsize=4):
    """Bytes of a dense array of this shape."""
    return math.prod(shape) * itemsize


def bytes_moved(reads=(), writes=()):
    """Bytes a memory-bound op must move: each input read once, each output written
    once. reads/writes: (shape, itemsize) pairs or bare shapes (float32)."""
    total = 0
    for item in list(reads) + list(writes):
        if len(item) == 2 and isinstance(item[0], (tuple, list)):
            total += nbytes(item[0], item[1])
        else:
            total += nbytes(item)
    return total


def median(values):
    return statistics.median(values)


# --- formatting -----------------------------------------------------------------

def fmt_shape(shape):
    return "x".join(str(int(d)) for d in shape)


def fmt_ms(ms):
    """Three significant digits: 1.92 ms, 0.500 ms, 0.0123 ms, 123 ms."""
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:#.3g} ms"


def fmt_ratio(ratio, ref):
    """ref time / our time: >1 means we are faster."""
    return f"{ratio:.2f}x {ref}"


def rate_row(label, shape_text, ms, flops, peak_flops=None, ref_ms=None, ref="cuDNN"):
    """label | shapes | ms | TFLOP/s | % of peak | ref time / our time."""
    rate = flops / (ms * 1e-3)
    cells = [label] + ([shape_text] if shape_text else []) + [fmt_ms(ms), f"{rate / 1e12:.1f} TFLOP/s"]
    if peak_flops:
        cells.append(f"{100 * rate / peak_flops:.0f}% peak")
    if ref_ms is not None:
        cells.append(fmt_ratio(ref_ms / ms, ref))
    return " | ".join(cells)


def conv_row(label, x_shape, y_shape, ms, flops, peak_flops=None, ref_ms=None, ref="cuDNN"):
    """`conv2 fwd | 128x48x27x27 -> 128x128x27x27 | 1.92 ms | 51.3 TFLOP/s | 77% peak | 0.91x cuDNN`"""
    return rate_row(label, f"{fmt_shape(x_shape)} -> {fmt_shape(y_shape)}", ms, flops,
                    peak_flops, ref_ms, ref)


def memory_row(label, shape_text, ms, nbytes_moved, copy_bw=None, ref_ms=None, ref="PyTorch"):
    """`lrn fwd | 128x96x55x55 | 0.41 ms | 2270 GB/s | 77% copy | 1.30x PyTorch`"""
    bw = nbytes_moved / (ms * 1e-3)
    cells = [label, shape_text, fmt_ms(ms), f"{bw / 1e9:.0f} GB/s"]
    if copy_bw:
        cells.append(f"{100 * bw / copy_bw:.0f}% copy")
    if ref_ms is not None:
        cells.append(fmt_ratio(ref_ms / ms, ref))
    return " | ".join(cells)


def relative_error(got, ref):
    """Normwise relative error max|got - ref| / max|ref| of two NumPy arrays (inf on NaN)."""
    import numpy as np
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        raise ValueError(f"shape {got.shape} != reference shape {ref.shape}")
    if got.size == 0:
        return 0.0
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - ref))) / max(float(np.max(np.abs(ref))), 1e-30)


# --- metadata and results files ------------------------------------------------

def git_commit(root=ROOT):
    """(short commit, dirty) of the repository, or ("unknown", None) outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=root, capture_output=True, text=True, check=True).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", None


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def nvidia_driver_version():
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.split()
        return out[0] if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def device_info(cupy=None, torch=None, device=0):
    """What ran the benchmark: device, driver, runtime, library versions."""
    import numpy
    info = {"python": sys.version.split()[0], "numpy": numpy.__version__,
            "nvidia_driver": nvidia_driver_version()}
    if cupy is not None:
        props = cupy.cuda.runtime.getDeviceProperties(device)
        name = props["name"]
        info.update({
            "device": name.decode() if isinstance(name, bytes) else str(name),
            "device_index": device,
            "compute_capability": f"{props['major']}.{props['minor']}",
            "sm_count": props["multiProcessorCount"],
            "l2_bytes": props["l2CacheSize"],
            "memory_bytes": props["totalGlobalMem"],
            "cuda_driver_api": cupy.cuda.runtime.driverGetVersion(),
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "cupy": cupy.__version__,
        })
    else:
        info["device"] = "cpu"
    if torch is not None:
        info.update({"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                     "cudnn": torch.backends.cudnn.version()})
    return info


def slug(text):
    """A file-name-safe version of a device name: 'NVIDIA H100 80GB HBM3' -> 'NVIDIA-H100-80GB-HBM3'."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-") or "unknown"


def results_path(benchmark, device, when=None, commit=None, directory=None):
    """benchmarks/results/<benchmark>-<device>-<date>-<commit>.json"""
    directory = RESULTS_DIR if directory is None else directory
    when = when or utc_now()
    commit = commit or git_commit()[0]
    return Path(directory) / f"{benchmark}-{slug(device)}-{when.strftime('%Y%m%d-%H%M%S')}-{slug(commit)}.json"


def _clean(value):
    """JSON-safe: NaN/inf -> None, tuples -> lists, NumPy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(benchmark, info, rows, extra=None, directory=None, when=None):
    """Write {benchmark, date, commit, dirty, device info, rows, extra} atomically; returns the path."""
    when = when or utc_now()
    commit, dirty = git_commit()
    doc = {"benchmark": benchmark, "date": when.isoformat(timespec="seconds"),
           "commit": commit, "dirty": dirty, "info": info, "rows": rows}
    if extra:
        doc.update(extra)
    path = results_path(benchmark, info.get("device", "unknown"), when, commit, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    from convnet.fsio import write_atomic
    write_atomic(path, (json.dumps(_clean(doc), indent=1) + "\n").encode())
    return path


# --- kernel resources (ptxas) ---------------------------------------------------

_PTXAS_ENTRY = re.compile(r"(?:Compiling entry function|Function properties for) '?([A-Za-z_][\w$]*)'?")
_PTXAS_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_USED = re.compile(r"Used (\d+) registers")
_PTXAS_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(text):
    """`nvcc -Xptxas -v` output -> {kernel: {registers, smem_bytes, stack_bytes,
    spill_store_bytes, spill_load_bytes}} (the last entry named before each line)."""
    out, current = {}, None
    for line in text.splitlines():
        m = _PTXAS_ENTRY.search(line)
        if m:
            current = m.group(1)
            out.setdefault(current, {"registers": None, "smem_bytes": 0, "stack_bytes": 0,
                                     "spill_store_bytes": 0, "spill_load_bytes": 0})
            continue
        if current is None:
            continue
        m = _PTXAS_STACK.search(line)
        if m:
            out[current].update(stack_bytes=int(m.group(1)), spill_store_bytes=int(m.group(2)),
                                spill_load_bytes=int(m.group(3)))
        m = _PTXAS_USED.search(line)
        if m:
            out[current]["registers"] = int(m.group(1))
            s = _PTXAS_SMEM.search(line)
            out[current]["smem_bytes"] = int(s.group(1)) if s else 0
    return out


def ptxas_resources(source, arch="sm_90", timeout=600):
    """Registers, shared memory and spills per kernel of one .cu file, from
    `nvcc -Xptxas -v`; None (with the reason printed) if nvcc is not on the PATH."""
    nvcc = shutil.which("nvcc")
    if not nvcc:
        print("note: nvcc not on the PATH: no ptxas resource table")
        return None
    source = Path(source)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [nvcc, "-std=c++17", "-O3", f"-I{source.parent}", f"-arch={arch}", "-cubin",
               "-Xptxas", "-v", "-o", os.path.join(tmp, "out.cubin"), str(source)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.SubprocessError) as e:
            print(f"note: nvcc failed on {source.name} ({_one_line(e)})")
            return None
    if r.returncode != 0:
        print(f"note: nvcc failed on {source.name}: {r.stderr.strip().splitlines()[-1:]}")
        return None
    return parse_ptxas(r.stdout + r.stderr)


# --- timing on the GPU ------------------------------------------------------------

class L2Flush:
    """Writes a buffer four times the L2 size (at least 64 MiB): run it before each
    timed run so that no input is served from a warm L2."""

    def __init__(self, cupy, device=0):
        l2 = cupy.cuda.runtime.getDeviceProperties(device)["l2CacheSize"]
        self.buf = cupy.empty(max(4 * l2, 64 << 20), dtype=cupy.uint8)
        self.value = 0

    def __call__(self):
        self.value = (self.value + 1) & 0xFF
        self.buf.fill(self.value)


def time_cuda(cupy, fn, repeat=20, warmup=3, flush=None):
    """Times fn() on the current stream with CUDA events: `warmup` untimed calls,
    then `repeat` timed ones, each after `flush()` (outside the events).
    Returns the list of milliseconds. Events are CuPy's; work launched by
    PyTorch is ordered with them when both use the default stream
    (check_same_stream)."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for _ in range(warmup):
        fn()
    events = []
    for _ in range(repeat):
        if flush is not None:
            flush()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        events.append((start, end))
    events[-1][1].synchronize()
    return [cupy.cuda.get_elapsed_time(s, e) for s, e in events]


# --- the FP32 peak ------------------------------------------------------------------

PEAK_CHAINS = 8        # independent FMA chains per thread
PEAK_UNROLL = 16       # FMAs per chain per loop iteration
PEAK_SOURCE = r"""
// FP32 peak: every thread runs PEAK_CHAINS independent fmaf chains (enough
// instruction-level parallelism to hide the FMA latency), all SMs full.
// b and c are parameters so nothing folds; the result is stored under a
// condition the compiler cannot decide, so no chain is dead code.
#define PEAK_CHAINS 8
#define PEAK_UNROLL 16
extern "C" __global__ void fma_peak(float* __restrict__ out, float b, float c, int iters)
{
    float a[PEAK_CHAINS];
#pragma unroll
    for (int k = 0; k < PEAK_CHAINS; ++k)
        a[k] = (float)(threadIdx.x + k) * 1e-3f;
    for (int i = 0; i < iters; ++i) {
#pragma unroll
        for (int j = 0; j < PEAK_UNROLL; ++j) {
#pragma unroll
            for (int k = 0; k < PEAK_CHAINS; ++k)
                a[k] = fmaf(a[k], b, c);
        }
    }
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < PEAK_CHAINS; ++k)
        s += a[k];
    if (s == -1.0f)
        out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
"""


def peak_flops_per_launch(blocks, threads, iters):
    """FLOPs of one fma_peak launch: 2 per FMA."""
    return 2 * blocks * threads * iters * PEAK_UNROLL * PEAK_CHAINS


def measure_fp32_peak(cupy, repeat=10, iters=4096, device=0):
    """The device's FP32 FMA throughput in FLOP/s, measured now: (best, all runs)."""
    props = cupy.cuda.runtime.getDeviceProperties(device)
    threads = 256
    blocks = props["multiProcessorCount"] * (props["maxThreadsPerMultiProcessor"] // threads)
    kernel = cupy.RawKernel(PEAK_SOURCE, "fma_peak")
    out = cupy.zeros(blocks * threads, dtype=cupy.float32)
    args = (out, cupy.float32(0.999999), cupy.float32(1e-6), cupy.int32(iters))
    ms = time_cuda(cupy, lambda: kernel((blocks,), (threads,), args), repeat=repeat, warmup=2)
    flops = peak_flops_per_launch(blocks, threads, iters)
    rates = [flops / (t * 1e-3) for t in ms]
    return max(rates), rates


def measure_copy_bandwidth(cupy, nbytes_=1 << 30, repeat=10):
    """Device-to-device copy bandwidth (cudaMemcpyAsync of a 1 GiB buffer) in
    bytes/s, read + write counted: (best, all runs)."""
    src = cupy.ones(nbytes_ // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    ms = time_cuda(cupy, lambda: dst.data.copy_from_device_async(src.data, src.nbytes),
                   repeat=repeat, warmup=2)
    rates = [2 * src.nbytes / (t * 1e-3) for t in ms]
    return max(rates), rates


def no_gpu_banner(script, reason):
    return f"{script}: no GPU ({reason}): nothing is timed; running the CPU check instead"
