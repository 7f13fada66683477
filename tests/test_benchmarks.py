"""The benchmarks: their no-GPU mode end to end, and the pure helpers they report with.

The GPU paths cannot run here; what can be checked without a GPU is: each
script's CPU mode (run as a subprocess with CUDA_VISIBLE_DEVICES="" so that it
takes the no-GPU path on any machine), FLOP and byte counting, row formatting,
ptxas parsing, the results-file writer, and that the FP32 peak kernel compiles
to the FMA chains it claims (when nvcc is present).
"""
import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402


def run_script(name, *args, timeout=120):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


# --- the scripts without a GPU ------------------------------------------------------------

def test_conv_throughput_cpu_mode():
    r = run_script("conv_throughput.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no GPU" in r.stdout
    lines = [l for l in r.stdout.splitlines() if "rel err" in l]
    # 10 layers (one device and per column) x 3 passes, minus conv1's two bwd_data rows
    assert len(lines) == 28, r.stdout
    assert all(l.endswith("| ok") for l in lines), r.stdout
    assert "conv2/col fwd shipped" in r.stdout and "2x48x7x7 -> 2x128x7x7" in r.stdout
    assert "all passed" in r.stdout


def test_conv_throughput_cpu_mode_selects_and_checks_versions():
    r = run_script("conv_throughput.py", "--layers", "conv4", "--split", "column",
                   "--versions", "all", "--passes", "fwd")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if "rel err" in l]
    from convnet.kernel_ops import conv
    assert [l.split(" | ")[0] for l in lines] == [f"conv4/col fwd {v}" for v in conv.VERSIONS]


def test_conv_throughput_cpu_check_catches_a_wrong_kernel(monkeypatch, capsys):
    from benchmarks import conv_throughput as ct
    right = ct.our_fn

    def off_by_a_bit(conv, pass_, t, layer, version):
        f = right(conv, pass_, t, layer, version)
        return lambda: f() * np.float32(1.001)          # 1e-3 relative: must fail at 1e-4
    monkeypatch.setattr(ct, "our_fn", off_by_a_bit)
    rc = ct.main(["--no-gpu", "--layers", "conv3", "--split", "column", "--passes", "fwd,bwd_data"])
    out = capsys.readouterr().out
    assert rc == 1
    assert out.count("| FAIL") == 2 and "2 FAILED" in out


def test_conv_throughput_unknown_version_fails():
    r = run_script("conv_throughput.py", "--layers", "conv3", "--split", "device",
                   "--passes", "fwd", "--versions", "v999")
    assert r.returncode == 1
    assert "FAIL" in r.stdout and "v999" in r.stdout


def test_conv_throughput_bad_arguments():
    r = run_script("conv_throughput.py", "--layers", "conv9")
    assert r.returncode == 2 and "unknown layer conv9" in r.stderr
    r = run_script("conv_throughput.py", "--passes", "sideways")
    assert r.returncode == 2 and "unknown pass sideways" in r.stderr
    r = run_script("memory_throughput.py", "--ops", "lrn1,nope")
    assert r.returncode == 2 and "unknown op nope" in r.stderr
    r = run_script("train_throughput.py", "--batch", "0")
    assert r.returncode == 2 and "--batch must be >= 1" in r.stderr


def test_memory_throughput_cpu_mode():
    r = run_script("memory_throughput.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no GPU" in r.stdout
    lines = [l for l in r.stdout.splitlines() if " | " in l]
    names = {l.split(" | ")[0] for l in lines}
    for op in ("lrn1 fwd", "lrn1 bwd", "pool1 fwd", "pool1 bwd", "avgpool1 bwd", "relu1 bwd",
               "drop6 fwd", "drop6 bwd", "softmax8 fwd", "sgd_fc6", "augment"):
        assert op in names, r.stdout
    assert all(l.endswith("| ok") for l in lines), r.stdout


def test_memory_cpu_check_catches_a_wrong_kernel(monkeypatch, capsys):
    from benchmarks import memory_throughput as mt
    all_benches = mt.benches

    def one_broken(scale, rng, ops=None):
        out = list(all_benches(scale, rng, ops))
        bad = next(b for b in out if b.name == "relu1 bwd")
        right = bad.ours
        bad.ours = lambda a, backend: right(a, backend) * np.float32(1.001)
        return out
    monkeypatch.setattr(mt, "benches", one_broken)
    rc = mt.main(["--no-gpu", "--ops", "relu1,drop6"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "relu1 bwd | 3x5x13x11 | rel err 1.0e-03 | FAIL" in out
    assert "relu1 fwd | 3x5x13x11 | rel err 0.0e+00 | ok" in out and "1 FAILED" in out


def test_train_throughput_cpu_mode():
    r = run_script("train_throughput.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no GPU" in r.stdout
    assert "one training step of 'cifar-80sec'" in r.stdout and "images/s" in r.stdout
    loss = float(r.stdout.split("loss ")[1].split(",")[0])
    assert abs(loss - np.log(10)) < 0.5      # ten classes, small initial weights


def test_train_throughput_cpu_mode_takes_a_precision():
    r = run_script("train_throughput.py", "--precision", "bf16")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "batch 8, bf16: loss " in r.stdout
    r = run_script("train_throughput.py", "--precision", "fp16")
    assert r.returncode == 2 and "invalid choice: 'fp16'" in r.stderr


def test_gpu_status_without_device(monkeypatch):
    cupy, reason = common.gpu_status(force_cpu=True)
    assert cupy is None and reason == "--no-gpu given"
    monkeypatch.setitem(sys.modules, "cupy", None)     # import cupy -> ImportError
    cupy, reason = common.gpu_status()
    assert cupy is None and "CuPy is not importable" in reason


# --- counting ------------------------------------------------------------------------------

def test_conv_flops_alexnet_layers():
    # conv1: 2 * 128 * 96 * 55 * 55 * 3 * 11 * 11
    assert common.conv_flops((128, 3, 227, 227), (96, 3, 11, 11), 4, 0, 1) == 2 * 128 * 96 * 55 * 55 * 3 * 121
    # conv2 grouped: C/groups = 48 per filter; equals two columns of 48 -> 128
    grouped = common.conv_flops((128, 96, 27, 27), (256, 48, 5, 5), 1, 2, 2)
    column = common.conv_flops((128, 48, 27, 27), (128, 48, 5, 5), 1, 2, 1)
    assert grouped == 2 * column == 2 * 128 * 256 * 27 * 27 * 48 * 25
    # the same count for every pass
    for p in ("fwd", "bwd_data", "bwd_filter"):
        assert common.conv_flops((3, 5, 13, 11), (4, 5, 3, 2), 2, 1, 1, p) == 2 * 3 * 4 * 7 * 6 * 5 * 3 * 2   # OH 7, OW 6


def test_conv_flops_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown pass"):
        common.conv_flops((1, 4, 8, 8), (4, 4, 3, 3), pass_="fwdd")
    with pytest.raises(ValueError, match="expected 4 / 2 groups = 2"):
        common.conv_flops((1, 4, 8, 8), (4, 4, 3, 3), groups=2)
    with pytest.raises(ValueError, match="divisible by groups"):
        common.conv_flops((1, 5, 8, 8), (4, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match="larger than padded input"):
        common.conv_flops((1, 4, 2, 2), (4, 4, 3, 3))


def test_conv_layer_table_matches_the_paper():
    from benchmarks import conv_throughput as ct
    by = {layer.name: layer for layer in ct.LAYERS}
    assert by["conv1"].shapes(128)[2] == (128, 96, 55, 55)
    assert by["conv2/col"].shapes(128) == ((128, 48, 27, 27), (128, 48, 5, 5), (128, 128, 27, 27))
    assert by["conv2"].shapes(128)[1] == (256, 48, 5, 5)
    assert by["conv3/col"].shapes(128)[2] == (128, 192, 13, 13)
    assert by["conv4"].shapes(128)[1] == (384, 192, 3, 3)
    assert by["conv5/col"].shapes(128)[2] == (128, 128, 13, 13)
    # per-column work is half the one-device work
    for base in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        full, col = by[base], by[base + "/col"]
        f = common.conv_flops(*full.shapes(128)[:2], full.stride, full.pad, full.groups)
        c = common.conv_flops(*col.shapes(128)[:2], col.stride, col.pad, col.groups)
        assert f == 2 * c
    assert by["conv1"].passes() == ["fwd", "bwd_filter"]
    assert by["conv2"].passes() == ["fwd", "bwd_data", "bwd_filter"]


def test_bytes_moved():
    assert common.nbytes((128, 96, 55, 55)) == 128 * 96 * 55 * 55 * 4
    assert common.nbytes((2, 3), itemsize=1) == 6
    # LRN backward: reads dy, x, y, writes dx
    s = (2, 3, 4, 5)
    assert common.bytes_moved(reads=[s, s, s], writes=[s]) == 4 * 120 * 4
    # mixed itemsizes: uint8 in, float32 out
    assert common.bytes_moved(reads=[((2, 8, 8, 3), 1)], writes=[(2, 3, 8, 8)]) == 384 + 384 * 4


def test_memory_bench_byte_counts():
    from benchmarks import memory_throughput as mt
    rng = np.random.default_rng(0)
    by = {b.name: b for b in mt.benches("small", rng)}
    s = by["lrn1 fwd"].shape
    assert by["lrn1 fwd"].nbytes == 2 * common.nbytes(s)
    assert by["lrn1 bwd"].nbytes == 4 * common.nbytes(s)
    n, c, h, w = by["pool1 fwd"].shape
    oh, ow = -(-(h - 3) // 2) + 1, -(-(w - 3) // 2) + 1
    assert by["pool1 fwd"].nbytes == 4 * (n * c * h * w + n * c * oh * ow)
    assert by["pool1 bwd"].nbytes == 4 * 2 * (n * c * h * w + n * c * oh * ow)
    assert by["relu1 bwd"].nbytes == 3 * common.nbytes(by["relu1 bwd"].shape)
    assert by["sgd_fc6"].nbytes == 5 * common.nbytes(by["sgd_fc6"].shape)
    n, size, _, c = by["augment"].shape           # uint8 crop pixels + float32 mean + float32 crops
    crop = 33
    assert by["augment"].nbytes == n * crop * crop * c + 4 * size * size * c + 4 * n * c * crop * crop


def test_memory_ops_selection():
    from benchmarks import memory_throughput as mt
    assert mt.parse_ops("") == list(mt.OPS)
    assert mt.parse_ops("pool5, augment") == ["pool5", "augment"]
    with pytest.raises(ValueError, match="unknown op nope"):
        mt.parse_ops("lrn1,nope")
    names = [b.name for b in mt.benches("small", np.random.default_rng(0), ["pool5", "sgd_fc6"])]
    assert names == ["pool5 fwd", "pool5 bwd", "sgd_fc6"]
    # the AlexNet shapes (batch 128)
    assert mt.SHAPES["alexnet"]["lrn1"] == (128, 96, 55, 55) and mt.SHAPES["alexnet"]["pool5"] == (128, 256, 13, 13)
    assert set(mt.SHAPES["alexnet"]) == set(mt.SHAPES["small"]) == set(mt.OPS)


def test_peak_flop_count():
    assert common.peak_flops_per_launch(132 * 8, 256, 4096) == \
        2 * 132 * 8 * 256 * 4096 * common.PEAK_UNROLL * common.PEAK_CHAINS


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on the PATH")
def test_peak_kernel_compiles_to_fma_chains(tmp_path):
    src = tmp_path / "peak.cu"
    src.write_text(common.PEAK_SOURCE)
    ptx = tmp_path / "peak.ptx"
    r = subprocess.run(["nvcc", "-arch=sm_90", "-ptx", "-o", str(ptx), str(src)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    text = ptx.read_text()
    # the unrolled body keeps every chain: PEAK_CHAINS * PEAK_UNROLL FMAs in the loop
    assert text.count("fma.rn.f32") >= common.PEAK_CHAINS * common.PEAK_UNROLL
    assert ".entry fma_peak" in text


# --- formatting ----------------------------------------------------------------------------

def test_conv_row_format():
    ms = 1.92
    flops = 51.3e12 * ms * 1e-3                      # 51.3 TFLOP/s
    row = common.conv_row("conv2 fwd", (128, 48, 27, 27), (128, 128, 27, 27), ms, flops,
                          peak_flops=51.3e12 / 0.77, ref_ms=0.91 * ms)
    assert row == "conv2 fwd | 128x48x27x27 -> 128x128x27x27 | 1.92 ms | 51.3 TFLOP/s | 77% peak | 0.91x cuDNN"
    # cuDNN twice as slow as ours: 2.00x
    assert common.conv_row("x", (1,), (1,), 1.0, 1e9, ref_ms=2.0).endswith("| 2.00x cuDNN")


def test_rows_without_reference_or_peak():
    assert common.conv_row("c fwd", (1, 2, 3, 3), (1, 4, 1, 1), 2.0, 4e9) == \
        "c fwd | 1x2x3x3 -> 1x4x1x1 | 2.00 ms | 2.0 TFLOP/s"   # 4 GFLOP in 2 ms
    assert common.memory_row("lrn1 fwd", "128x96x55x55", 0.5, 1e9, copy_bw=4e12, ref_ms=0.65) == \
        "lrn1 fwd | 128x96x55x55 | 0.500 ms | 2000 GB/s | 50% copy | 1.30x PyTorch"
    assert common.rate_row("  total", None, 150.0, 3e12) == "  total | 150 ms | 20.0 TFLOP/s"


def test_fmt_ms_and_ratio():
    assert common.fmt_ms(1.916) == "1.92 ms"
    assert common.fmt_ms(0.01234) == "0.0123 ms"
    assert common.fmt_ms(123.4) == "123 ms"
    assert common.fmt_ms(12.34) == "12.3 ms"
    assert common.fmt_ms(0.5) == "0.500 ms"
    assert common.fmt_ratio(2.0, "cuDNN") == "2.00x cuDNN"


def test_relative_error():
    ref = np.array([1.0, -4.0, 2.0])
    assert common.relative_error(ref, ref) == 0.0
    assert common.relative_error(ref + [0, 0, 0.4], ref) == pytest.approx(0.1)
    assert common.relative_error([np.nan, 0, 0], ref) == float("inf")
    with pytest.raises(ValueError, match="shape"):
        common.relative_error(ref[:2], ref)


# --- ptxas and results files -------------------------------------------------------------------

PTXAS_SAMPLE = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'conv2d_fwd_v2' for 'sm_90'
ptxas info    : Function properties for conv2d_fwd_v2
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 4096 bytes smem, 400 bytes cmem[0]
ptxas info    : Compiling entry function 'conv2d_fwd_v1' for 'sm_90'
ptxas info    : Function properties for conv2d_fwd_v1
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 0 barriers, 400 bytes cmem[0]
"""


def test_parse_ptxas():
    res = common.parse_ptxas(PTXAS_SAMPLE)
    assert res["conv2d_fwd_v2"] == {"registers": 64, "smem_bytes": 4096, "stack_bytes": 0,
                                    "spill_store_bytes": 0, "spill_load_bytes": 0}
    assert res["conv2d_fwd_v1"] == {"registers": 40, "smem_bytes": 0, "stack_bytes": 8,
                                    "spill_store_bytes": 4, "spill_load_bytes": 4}


def test_results_path_and_slug():
    when = datetime.datetime(2026, 11, 22, 13, 5, 9, tzinfo=datetime.timezone.utc)
    p = common.results_path("conv_throughput", "NVIDIA H100 80GB HBM3", when, "abc1234", "/r")
    assert str(p) == "/r/conv_throughput-NVIDIA-H100-80GB-HBM3-20261122-130509-abc1234.json"
    assert common.slug("a/b c") == "a-b-c"


def test_write_results(tmp_path):
    when = datetime.datetime(2026, 11, 22, 13, 5, 9, tzinfo=datetime.timezone.utc)
    info = {"device": "Test GPU", "nvidia_driver": "550.54", "cuda_runtime": 13000, "cupy": "13.6"}
    rows = [{"layer": "conv2", "ms": 1.5, "times_ms": [1.5, 1.6], "rel_err": float("inf"),
             "shape": (1, 2), "n": np.int64(3), "x": np.float32(0.5)}]
    path = common.write_results("conv_throughput", info, rows, {"peak_flops": 5e13},
                                directory=tmp_path, when=when)
    assert path.parent == tmp_path and path.name.startswith("conv_throughput-Test-GPU-20261122-130509-")
    doc = json.loads(path.read_text())
    commit, dirty = common.git_commit()
    assert doc["benchmark"] == "conv_throughput" and doc["commit"] == commit
    assert doc["date"] == "2026-11-22T13:05:09+00:00"
    assert doc["info"] == info and doc["peak_flops"] == 5e13
    assert doc["rows"] == [{"layer": "conv2", "ms": 1.5, "times_ms": [1.5, 1.6], "rel_err": None,
                            "shape": [1, 2], "n": 3, "x": 0.5}]
    assert list(tmp_path.iterdir()) == [path]       # no temporary file left behind


def test_device_info_without_gpu():
    info = common.device_info()
    assert info["device"] == "cpu" and info["numpy"] == np.__version__


# --- the GPU code paths, driven by stand-ins for CuPy and PyTorch ------------------------------
#
# No GPU here, so the GPU paths of conv_throughput and memory_throughput run
# against small fakes: "CuPy" arrays are NumPy arrays (so our launchers run
# the kernels on the emulation), events read the wall clock, and "cuDNN" is
# the NumPy reference. This exercises everything around the kernels (checks,
# timing loop, rows, totals, the results file); the numbers mean nothing.

import time  # noqa: E402
import types  # noqa: E402


class _Event:
    def __init__(self, *args, **kwargs):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


def fake_cupy():
    props = {"name": b"Fake GPU", "major": 9, "minor": 0, "multiProcessorCount": 2,
             "l2CacheSize": 1 << 16, "totalGlobalMem": 1 << 30, "maxThreadsPerMultiProcessor": 512}
    runtime = types.SimpleNamespace(getDeviceProperties=lambda d: props, getDeviceCount=lambda: 1,
                                    driverGetVersion=lambda: 13000, runtimeGetVersion=lambda: 13000)
    launches = []
    cuda = types.SimpleNamespace(
        runtime=runtime, Event=_Event,
        get_elapsed_time=lambda s, e: (e.t - s.t) * 1e3 + 1e-3,
        get_current_stream=lambda: types.SimpleNamespace(ptr=0))
    pool = types.SimpleNamespace(free_all_blocks=lambda: None, total_bytes=lambda: 0)

    def raw_kernel(source, name):
        assert name in source
        return lambda grid, block, args: launches.append((name, grid, block))

    cp = types.SimpleNamespace(
        __version__="fake", cuda=cuda, RawKernel=raw_kernel, launches=launches,
        float32=np.float32, int32=np.int32, uint8=np.uint8,
        asarray=lambda a, dtype=None: np.ascontiguousarray(a, dtype=dtype), asnumpy=np.asarray,
        zeros=np.zeros, empty=np.empty, max=np.max, abs=np.abs,
        get_default_memory_pool=lambda: pool)
    return cp


def fake_torch(scale=1.0):
    """Just enough of torch for conv_throughput: cuDNN is the NumPy reference (times `scale`)."""
    from convnet import reference as R

    def conv2d(x, w, b, stride, pad, dilation, groups):
        return R.conv2d_forward(x, w, b, stride=stride[0], pad=pad[0], groups=groups) * np.float32(scale)

    def convolution_backward(dy, x, w, bias_sizes, stride, pad, dil, transposed, out_pad, groups, mask):
        kw = dict(stride=stride[0], pad=pad[0], groups=groups)
        dx = R.conv2d_backward_data(dy, w, x.shape, **kw) * np.float32(scale) if mask[0] else None
        dw = R.conv2d_backward_filter(dy, x, w.shape, **kw) * np.float32(scale) if mask[1] else None
        return dx, dw, None

    ns = types.SimpleNamespace
    return ns(__version__="fake", version=ns(cuda="13.0"),
              backends=ns(cuda=ns(matmul=ns(allow_tf32=True)),
                          cudnn=ns(allow_tf32=True, benchmark=False, enabled=True, version=lambda: 90000)),
              cuda=ns(current_stream=lambda: ns(cuda_stream=0), empty_cache=lambda: None,
                      is_available=lambda: True),
              as_tensor=lambda a, device=None: a,
              nn=ns(functional=ns(conv2d=conv2d)),
              ops=ns(aten=ns(convolution_backward=convolution_backward)))


def _small_conv_layers(ct):
    return [ct.ConvLayer("conv1", 3, 27, 8, 11, 4, 0, 1),
            ct.ConvLayer("conv2", 6, 7, 8, 5, 1, 2, 2),
            ct.ConvLayer("conv2/col", 3, 7, 4, 5, 1, 2, 1)]


def _use_fakes(monkeypatch, module, cupy, torch, tmp_path):
    monkeypatch.setattr(common, "gpu_status", lambda force_cpu=False: (cupy, "fake"))
    monkeypatch.setattr(common, "torch_status", lambda: (torch, "fake") if torch else (None, "no torch"))
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(common, "nvidia_driver_version", lambda: "999.1")


def test_conv_throughput_gpu_path_with_fakes(monkeypatch, tmp_path, capsys):
    from benchmarks import conv_throughput as ct
    cp, torch = fake_cupy(), fake_torch()
    _use_fakes(monkeypatch, ct, cp, torch, tmp_path)
    monkeypatch.setattr(ct, "LAYERS", _small_conv_layers(ct))
    monkeypatch.setattr(ct, "resources", lambda cupy: {"source": "test", "kernels": {
        "conv2d_fwd_v2": {"registers": 48, "smem_bytes": 4224}}})
    rc = ct.main(["--batch", "2", "--repeat", "3", "--warmup", "1", "--versions", "shipped,v1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert cp.launches and cp.launches[0][0] == "fma_peak"            # the peak was measured
    assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cudnn.benchmark is True
    rows = [l for l in out.splitlines() if " -> " in l and l.endswith(" cuDNN")]
    assert len(rows) == 2 * (2 + 3 + 3)          # 2 versions x (conv1: 2 passes, conv2 and conv2/col: 3)
    import re
    pattern = (r"^conv2/col bwd_data v1 \| 2x3x7x7 -> 2x4x7x7 \| [\d.]+ ms \| [\d.]+ TFLOP/s \| "
               r"\d+% peak \| [\d.]+x cuDNN$")
    assert any(re.match(pattern, l) for l in rows), out
    from convnet.kernel_ops import conv
    shipped = conv.SHIPPED["conv2d_forward"]
    assert f"  device shipped={shipped} fwd | " in out and "  column v1 all | " in out     # totals
    files = list(tmp_path.glob("conv_throughput-Fake-GPU-*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert doc["info"]["device"] == "Fake GPU" and doc["info"]["cudnn"] == 90000
    assert doc["info"]["nvidia_driver"] == "999.1" and doc["batch"] == 2
    assert doc["resources"]["kernels"]["conv2d_fwd_v2"]["registers"] == 48
    assert doc["shipped"]["conv2d_forward"] == doc["rows"][0]["version"].split("=")[1]
    for r in doc["rows"]:
        assert r["status"] == "ok" and r["rel_err"] < 1e-4
        assert len(r["times_ms"]) == 3 and len(r["cudnn_times_ms"]) == 3
        assert r["ms"] == sorted(r["times_ms"])[1]                    # the median
        assert r["flops"] == common.conv_flops(r["x_shape"], r["w_shape"], r["stride"], r["pad"],
                                               r["groups"], r["pass"])
    assert {(t["split"], t["pass"]) for t in doc["totals"]} >= {("device", "fwd"), ("column", "all")}
    # the static model's bound beside each row, when it can read the sm_90 code
    from benchmarks import static_model
    if static_model.find_tool("cuobjdump") and (common.ROOT / "build/kernels/conv.fatbin").exists():
        for r in doc["rows"]:
            assert 0 < r["model"]["bound"] <= 1 and r["model_ms_ratio"] == pytest.approx(r["ms"] / r["model"]["ms"])
        assert out.count("    static model: >= ") == len(rows)


def test_conv_throughput_gpu_path_marks_mismatch_fail_and_does_not_time(monkeypatch, tmp_path, capsys):
    from benchmarks import conv_throughput as ct
    cp, torch = fake_cupy(), fake_torch(scale=1.001)        # "cuDNN" off by 1e-3
    _use_fakes(monkeypatch, ct, cp, torch, tmp_path)
    monkeypatch.setattr(ct, "LAYERS", _small_conv_layers(ct)[1:2])
    monkeypatch.setattr(ct, "resources", lambda cupy: {"source": "test", "kernels": {}})
    rc = ct.main(["--batch", "2", "--repeat", "2", "--passes", "fwd"])
    out = capsys.readouterr().out
    assert rc == 1
    assert (f"conv2 fwd shipped={ct.shipped_version(ct.importlib.import_module('convnet.kernel_ops.conv'), 'fwd')} "
            "| 2x6x7x7 -> 2x8x7x7 | FAIL (rel err 1.0e-03 >= 1e-04 against cuDNN): not timed") in out
    doc = json.loads(next(tmp_path.glob("conv_throughput-*.json")).read_text())
    assert doc["rows"][0]["status"] == "FAIL" and "ms" not in doc["rows"][0] and doc["totals"] == []


def test_memory_throughput_gpu_path_with_fakes(monkeypatch, tmp_path, capsys):
    from benchmarks import memory_throughput as mt
    cp = fake_cupy()
    _use_fakes(monkeypatch, mt, cp, None, tmp_path)
    monkeypatch.setattr(mt, "GPU_BACKEND", "emu")
    all_benches = mt.benches
    monkeypatch.setattr(mt, "benches", lambda scale, rng, ops=None: all_benches("small", rng, ops))
    monkeypatch.setattr(common, "measure_copy_bandwidth", lambda cupy: (1e11, [1e11, 0.9e11]))
    rc = mt.main(["--repeat", "3", "--warmup", "0", "--ops", "lrn1,pool1,sgd_fc6,augment"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "no PyTorch column" in out and "copy measured now: 100 GB/s" in out
    rows = [l for l in out.splitlines() if "% copy" in l]
    assert [l.split(" | ")[0] for l in rows] == ["lrn1 fwd", "lrn1 bwd", "pool1 fwd", "pool1 bwd",
                                                 "sgd_fc6", "augment"]
    doc = json.loads(next(tmp_path.glob("memory_throughput-Fake-GPU-*.json")).read_text())
    assert doc["copy_bandwidth"] == 1e11 and len(doc["rows"]) == 6
    for r in doc["rows"]:
        assert r["status"] == "ok" and len(r["times_ms"]) == 3
        assert r["gbs"] == pytest.approx(r["bytes_moved"] / (r["ms"] * 1e-3) / 1e9)


def test_train_throughput_gpu_path_with_fakes(monkeypatch, tmp_path, capsys):
    """Our side of the GPU run (no PyTorch): steps timed, per-layer table, results file."""
    from benchmarks import train_throughput as tt
    cp = fake_cupy()

    class Device:
        def __init__(self, d):
            self.id = d

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def synchronize(self):
            pass
    cp.cuda.Device = Device
    _use_fakes(monkeypatch, tt, cp, None, tmp_path)
    monkeypatch.setattr(tt, "NET_BACKEND", "emu")
    rc = tt.main(["--config", "cifar-80sec", "--batch", "1", "--steps", "2", "--warmup", "0",
                  "--layer-steps", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "no PyTorch comparison" in out and "ours on two GPUs: skipped (one GPU present)" in out
    assert "ours on gpu0                   | " in out and " images/s | " in out
    table = out.split("per layer, ours on gpu0")[1].splitlines()
    assert [l.split()[0] for l in table[2:11]] == ["conv1", "pool1", "conv2", "pool2", "conv3", "pool3",
                                                   "fc64", "fc10", "loss"], out
    assert table[11].split()[:3] == ["sum", "of", "layers"]
    doc = json.loads(next(tmp_path.glob("train_throughput-Fake-GPU-*.json")).read_text())
    run = doc["runs"]["ours_1gpu"]
    assert [r["run"] for r in doc["rows"]] == ["ours_1gpu"]
    assert doc["rows"][0]["step_times_ms"] == pytest.approx([t * 1e3 for t in run["step_s"]])
    assert len(run["step_s"]) == 2 and len(run["losses"]) == 2
    assert run["median_step_s"] == pytest.approx(sum(run["step_s"]) / 2)     # median of two
    assert run["images_per_s"] == pytest.approx(1 / run["median_step_s"])
    assert all(abs(l - np.log(10)) < 0.5 for l in run["losses"])
    names = {r["layer"] for r in doc["layers"]}
    assert {"conv1", "conv3", "fc10"} <= names and "data" not in names
    assert all(len(r["fwd_times_ms"]) == 1 for r in doc["layers"] if r["layer"].startswith("conv"))


def test_torch_alexnet_is_our_alexnet():
    """The PyTorch model of train_throughput (grouped convolutions, LRN within each
    column, our weights copied in), run by PyTorch itself on the CPU, computes what our
    two-column net computes."""
    torch = pytest.importorskip("torch")
    from benchmarks import train_throughput as tt
    from convnet.configs import load_config
    from convnet.net import Net
    cfg = load_config("alexnet")
    net = Net(cfg, seed=3)
    for p in net.params():      # make every layer matter: the paper's std 0.01 lets the signal fade
        fan_in = int(np.prod(p.value.shape[1:])) if p.value.ndim > 1 else 1
        if p.value.ndim > 1:
            p.value *= np.float32(1.0 / (0.01 * np.sqrt(fan_in)))
    model = tt.build_torch_alexnet(torch, tt.lrn_settings(cfg), 0.0).eval()
    tt.copy_weights_to_torch(torch, net, model)
    x = np.random.default_rng(0).standard_normal((1, 3, 227, 227), dtype=np.float32) * 20

    def theirs():
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    ours = net.forward(x, train=False)
    assert common.relative_error(theirs(), ours) < 1e-4
    assert np.std(ours) > 1e-3 * np.abs(ours).max()        # not a constant output
    # LRN across the column boundary is another network, and is caught
    model.lrn.columns = 1
    assert common.relative_error(theirs(), ours) > 1e-3
    model.lrn.columns = 2
    # swapping the two columns' halves of conv2 is caught: the mapping is checked
    with torch.no_grad():
        w = model.conv2.weight
        w.copy_(torch.cat([w[128:], w[:128]]))
    assert common.relative_error(theirs(), ours) > 1e-2


def _alexnet_batch(n=2):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, 3, 227, 227), dtype=np.float32),
            rng.integers(0, 1000, n).astype(np.int32))


def test_train_throughput_check_bf16_against_float64_on_the_cpu(capsys):
    """The benchmark's step check, run on the CPU: ours in bf16 (the host's rounding model),
    PyTorch in float64 (the reference) and under bf16 autocast (the allowance)."""
    torch = pytest.importorskip("torch")
    from benchmarks import train_throughput as tt
    from convnet.configs import load_config
    x, labels = _alexnet_batch()
    res = tt.check_same_step(torch, load_config("alexnet"), x, labels, 0, "bf16", device="cpu")
    assert res["passed"], capsys.readouterr().out
    assert res["torch_mode"] == {"cudnn_tf32": False, "matmul_tf32": False, "bf16_autocast": True}
    # bf16 moves both libraries' updates away from float64, by about as much (measured: 5-40%)
    assert 1e-2 < max(res["update_rel_err"].values()) < 1
    assert 1e-2 < max(res["torch_update_rel_err"].values()) < 1
    assert res["update_tol"]["fc8.w"] == pytest.approx(max(tt.UPDATE_TOL, 3 * res["torch_update_rel_err"]["fc8.w"]))
    assert "against PyTorch in float64: ours (bf16)" in capsys.readouterr().out


def test_train_throughput_check_catches_a_wrong_update(monkeypatch, capsys):
    """fp32, with our SGD's learning rate doubled: every update is off by 100%, and the
    check (fp32: within 1e-4 / 1e-3 of float64, or 3x PyTorch's fp32 error) fails."""
    torch = pytest.importorskip("torch")
    from benchmarks import train_throughput as tt
    from convnet.configs import load_config
    from convnet.optim import SGD
    right = tt.make_sgd

    def doubled(net, cfg):
        opt = right(net, cfg)
        return SGD(net.params(), lr=2 * opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    monkeypatch.setattr(tt, "make_sgd", doubled)
    x, labels = _alexnet_batch()
    res = tt.check_same_step(torch, load_config("alexnet"), x, labels, 0, "fp32", device="cpu")
    assert not res["passed"] and capsys.readouterr().out.rstrip().endswith(": FAIL")
    assert min(res["update_rel_err"][k] for k in ("conv1.w", "fc6.w", "fc8.w")) > 0.5
    assert res["loss_ours"][0] == pytest.approx(res["loss_reference"][0], rel=tt.LOSS_TOL)  # before the step


def test_torch_mapping_rejects_another_net():
    from benchmarks import train_throughput as tt
    from convnet.net import Net
    torch = pytest.importorskip("torch")
    net = Net("alexnet-1col", seed=0)
    model = tt.build_torch_alexnet(torch, tt.lrn_settings({"LAYERS": []}), 0.0)
    with pytest.raises(ValueError, match="the PyTorch model mirrors the paper's alexnet only|has shape"):
        tt.copy_weights_to_torch(torch, net, model)
