"""convnet.cpu_ops against convnet.reference: every fast op on odd shapes, float32 and float64,
both conv column layouts, 1 and 3 threads, the C++ loops (convnet._cpu) and the NumPy ones, max-pool ties and clipped windows,
non-finite ReLU gradients; float64 gradient checks of the fast conv and pooling pairs; the
"numpy" backend dispatching to them; benchmarks/cpu_throughput.py's check and a short run."""
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from convnet import cpu_ops as C
from convnet import ops
from convnet import reference as R
from convnet.gradcheck import check_gradients

ROOT = Path(__file__).resolve().parent.parent
TOL = {np.float32: 2e-5, np.float64: 1e-12}


@pytest.fixture(params=[(1, "native"), (3, "native"), (3, "native-noblas"), (1, "numpy"), (3, "numpy")],
                ids=["1thread-native", "3threads-native", "3threads-native-noblas", "1thread-numpy",
                     "3threads-numpy"])
def threads(request, monkeypatch):
    """Threads the ops split over, with the C++ ops (convnet._cpu), the C++ ops without BLAS (the
    GEMMs then in NumPy, as where convnet._cpu cannot find NumPy's BLAS), or the NumPy ones."""
    n, loops = request.param
    if loops.startswith("native") and C._native is None:
        pytest.skip("convnet._cpu is not built (make cpu)")
    if loops == "native" and not C._native_blas():
        pytest.skip("convnet._cpu found no BLAS in NumPy's")
    if loops == "native-noblas":
        monkeypatch.setattr(C, "_blas", "")
    if loops == "numpy":
        monkeypatch.setattr(C, "_native", None)
    before = C.get_threads()
    C.set_threads(n)
    yield n
    C.set_threads(before)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-30) if b.size else 0.0


def same(got, ref, dtype):
    assert got.dtype == ref.dtype, (got.dtype, ref.dtype)
    assert got.flags.c_contiguous
    assert rel(got, ref) <= TOL[dtype], rel(got, ref)


# (N, C, H, W), (F, KH, KW), stride, pad, groups
CONV_CASES = [
    ((5, 3, 9, 11), (4, 3, 3), 1, 1, 1),
    ((7, 4, 13, 10), (6, 3, 3), 2, 2, 2),
    ((3, 6, 7, 9), (4, 2, 3), (2, 1), (1, 0), 2),
    ((1, 1, 6, 6), (2, 6, 6), 1, 0, 1),         # one output pixel, batch 1
    ((4, 2, 5, 5), (3, 1, 1), 3, 0, 1),         # 1x1 kernel, stride > kernel
    ((3, 24, 12, 12), (16, 5, 5), 1, 0, 1),     # fashion conv2's input, fewer filters
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["image", "batch"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[0]}-{c[1]}-s{c[2]}-p{c[3]}-g{c[4]}")
def test_conv_against_reference(case, layout, dtype, threads):
    (n, c, h, w), (f, kh, kw), stride, pad, groups = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((f, c // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    y_ref = R.conv2d_forward(x, wt, b, stride, pad, groups)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    same(C.conv2d_forward(x, wt, b, stride, pad, groups, layout=layout), y_ref, dtype)
    same(C.conv2d_forward(x, wt, None, stride, pad, groups, layout=layout),
         R.conv2d_forward(x, wt, None, stride, pad, groups), dtype)
    same(C.conv2d_forward(x, wt, b, stride, pad, groups, relu=True, layout=layout), np.maximum(y_ref, 0), dtype)
    dw_ref = R.conv2d_backward_filter(dy, x, wt.shape, stride, pad, groups)
    same(C.conv2d_backward_filter(dy, x, wt.shape, stride, pad, groups, layout=layout), dw_ref, dtype)
    same(C.conv2d_backward_data(dy, wt, x.shape, stride, pad, groups, layout=layout),
         R.conv2d_backward_data(dy, wt, x.shape, stride, pad, groups), dtype)
    same(C.conv2d_backward_bias(dy), R.conv2d_backward_bias(dy), dtype)


def test_conv_layout_choice_and_bad_layout():
    assert C._conv_layout((64, 1, 28, 28), (24, 1, 5, 5), (24, 24)) == "image"       # fashion conv1
    assert C._conv_layout((64, 24, 12, 12), (48, 24, 5, 5), (8, 8)) == "batch"       # fashion conv2
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="layout"):
        C.conv2d_forward(x, np.zeros((1, 1, 3, 3), np.float32), layout="nchw")
    with pytest.raises(TypeError, match="relu"):
        C.conv2d_forward(x, np.zeros((1, 1, 3, 3), np.float32), relu=1)


def test_conv_errors_match_the_reference():
    x = np.zeros((2, 3, 5, 5), np.float32)
    for call in (lambda m: m.conv2d_forward(x, np.zeros((4, 2, 3, 3), np.float32)),
                 lambda m: m.conv2d_forward(x, np.zeros((4, 3, 7, 7), np.float32)),
                 lambda m: m.conv2d_backward_filter(np.zeros((2, 4, 2, 2), np.float32), x, (4, 3, 3, 3)),
                 lambda m: m.conv2d_backward_data(np.zeros((2, 4, 3, 3), np.float32),
                                                  np.zeros((4, 3, 3, 3), np.float32), (2, 3, 5, 5), groups=2)):
        with pytest.raises(ValueError) as ref_err:
            call(R)
        with pytest.raises(ValueError) as fast_err:
            call(C)
        assert str(fast_err.value) == str(ref_err.value)


def test_conv_empty_batch_and_mixed_dtypes():
    w = np.ones((2, 1, 3, 3), np.float64)
    x0 = np.zeros((0, 1, 5, 5), np.float32)
    assert C.conv2d_forward(x0, w).shape == (0, 2, 3, 3)
    x = np.random.default_rng(2).standard_normal((3, 1, 5, 5)).astype(np.float32)
    y = C.conv2d_forward(x, w)                          # float32 x, float64 w -> float64, as the reference
    same(y, R.conv2d_forward(x, w), np.float64)


def test_conv_gradients_float64():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 3))
    for layout in C.LAYOUTS:
        check_gradients(
            lambda x, w: C.conv2d_forward(x, w, stride=2, pad=1, groups=2, layout=layout),
            lambda dy, y, x, w: {"x": C.conv2d_backward_data(dy, w, x.shape, 2, 1, 2, layout=layout),
                                 "w": C.conv2d_backward_filter(dy, x, w.shape, 2, 1, 2, layout=layout)},
            {"x": x, "w": w}, name=f"cpu_ops conv s2 p1 g2 {layout}")


@pytest.mark.parametrize("split", ["big-parts-only", "every-gemm-split"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fc_against_reference(dtype, split, threads, monkeypatch):
    if split == "every-gemm-split":     # these GEMMs are too small to be split unless told to
        monkeypatch.setattr(C, "GEMM_PART_MACS", 1)
        monkeypatch.setattr(C, "GEMM_PART_MACS_PY", 1)
        assert len(C._gemm_parts(70, 20 * 300, 8)) == min(threads, 8)    # the (20, 300, 70) case
        assert len(C._gemm_parts(37, 29 * 11, 16)) == (2 if threads > 1 else 1)
    rng = np.random.default_rng(4)
    for n, i, o in ((37, 29, 11), (1, 5, 3), (20, 300, 70), (6, 4, 1)):
        x = rng.standard_normal((n, i)).astype(dtype)
        w = rng.standard_normal((o, i)).astype(dtype)
        b = rng.standard_normal(o).astype(dtype)
        dy = rng.standard_normal((n, o)).astype(dtype)
        same(C.fc_forward(x, w, b), R.fc_forward(x, w, b), dtype)
        same(C.fc_forward(x, w), R.fc_forward(x, w), dtype)
        same(C.fc_backward_data(dy, w), R.fc_backward_data(dy, w), dtype)
        same(C.fc_backward_filter(dy, x), R.fc_backward_filter(dy, x), dtype)
    with pytest.raises(ValueError, match="features"):
        C.fc_forward(np.zeros((4, 3), dtype), np.zeros((2, 5), dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_against_reference(dtype, threads):
    rng = np.random.default_rng(5)
    for shape in ((3, 5, 7, 11), (300_001,), (2, 1)):
        x = rng.standard_normal(shape).astype(dtype)
        x.flat[::7] = 0
        y = R.relu_forward(x)
        dy = rng.standard_normal(shape).astype(dtype)
        assert np.array_equal(C.relu_forward(x), y)
        assert np.array_equal(C.relu_backward(dy, y), R.relu_backward(dy, y))
        assert np.array_equal(C.relu_backward(dy, x), R.relu_backward(dy, x))     # negative y too


def test_relu_backward_non_finite_dy_matches_the_reference():
    y = np.array([0.0, 1.0, 0.0, 2.0, -1.0, 3.0], np.float32)
    dy = np.array([np.inf, np.inf, np.nan, np.nan, -np.inf, 1.0], np.float32)
    got, ref = C.relu_backward(dy, y), R.relu_backward(dy, y)
    assert np.array_equal(got, ref, equal_nan=True)
    assert got[0] == 0 and got[4] == 0                  # not inf * 0 = NaN
    x = np.array([np.nan, -1.0, 2.0], np.float32)
    assert np.array_equal(C.relu_forward(x), R.relu_forward(x), equal_nan=True)


# (N, C, H, W), size, stride: tiled, tiled with a clipped last window, overlapping, gaps
POOL_CASES = [((4, 3, 24, 24), 2, 2), ((3, 2, 13, 11), 2, 2), ((3, 2, 13, 11), 3, 2),
              ((2, 3, 8, 11), 2, 3), ((2, 2, 7, 7), 3, 1), ((5, 1, 6, 6), 6, 6), ((9, 4, 8, 8), 2, 2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"{c[0]}-{c[1]}/{c[2]}")
def test_maxpool_against_reference_with_ties(case, dtype, threads):
    shape, size, stride = case
    rng = np.random.default_rng(6)
    x = np.round(rng.standard_normal(shape) * 1.5).astype(dtype)   # few values: many ties
    x[0] = 0                                                       # whole windows tied
    y = R.maxpool_forward(x, size, stride)
    dy = rng.standard_normal(y.shape).astype(dtype)
    assert np.array_equal(C.maxpool_forward(x, size, stride), y)
    dx_ref = R.maxpool_backward(dy, x, y, size, stride)
    assert np.array_equal(C.maxpool_backward(dy, x, y, size, stride), dx_ref)
    y2, arg = C.maxpool_forward(x, size, stride, argmax=True)
    assert np.array_equal(y2, y) and arg.dtype == np.uint8
    assert np.array_equal(C.maxpool_backward(dy, x, y, size, stride, argmax=arg), dx_ref)


def test_maxpool_first_maximum_rule():
    x = np.array([[[[1, 3, 3], [3, 2, 0], [3, 1, 3]]]], np.float32)     # 3x3, windows 2/2 with clipping
    y = C.maxpool_forward(x, 2, 2)
    assert y.tolist() == [[[[3, 3], [3, 3]]]]
    dx = C.maxpool_backward(np.ones_like(y), x, y, 2, 2)
    # window (0,0): first 3 in row-major order is (0,1); (0,1): (0,2); (1,0): (2,0); (1,1): (2,2)
    assert dx.tolist() == [[[[0, 1, 1], [0, 0, 0], [1, 0, 1]]]]
    _, arg = C.maxpool_forward(x, 2, 2, argmax=True)
    assert arg.tolist() == [[[[1, 0], [0, 0]]]]                      # offsets p*2 + q within each window


def test_maxpool_nan_and_errors_match_the_reference():
    x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    x[0, 0, 1, 1] = np.nan
    y = R.maxpool_forward(x, 2, 2)
    dy = np.ones_like(y)
    assert np.array_equal(C.maxpool_forward(x, 2, 2), y, equal_nan=True)
    dx_ref = R.maxpool_backward(dy, x, y, 2, 2)
    assert np.array_equal(C.maxpool_backward(dy, x, y, 2, 2), dx_ref)
    _, arg = C.maxpool_forward(x, 2, 2, argmax=True)
    assert arg[0, 0, 0, 0] == C.NO_MAXIMUM                            # NaN window: no gradient
    assert np.array_equal(C.maxpool_backward(dy, x, y, 2, 2, argmax=arg), dx_ref)
    with pytest.raises(ValueError, match="pooled shape"):
        C.maxpool_backward(dy[:, :1], x, y, 2, 2)
    with pytest.raises(ValueError, match="argmax"):
        C.maxpool_backward(dy, x, y, 2, 2, argmax=arg.astype(np.int64))
    with pytest.raises(TypeError, match="argmax"):
        C.maxpool_forward(x, 2, 2, argmax="yes")


def test_maxpool_large_window_int32_argmax_and_nan(threads):
    """16x16 windows: offsets up to 255 need int32, so a NaN window's argmax is -1 there, not the
    offset 255 (whose element must still get its window's gradient)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 22, 19)).astype(np.float32)
    x[0, 0, 15, 15] = 50.0                       # offset 255 of the first window: its maximum
    x[1, 2, 4, 20 - 2] = np.nan                  # one NaN: its windows have no maximum
    size, stride = 16, 3
    y = R.maxpool_forward(x, size, stride)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    y2, arg = C.maxpool_forward(x, size, stride, argmax=True)
    assert arg.dtype == np.int32 and arg[0, 0, 0, 0] == 255
    assert (arg[1, 2] == -1).any() and np.array_equal(y2, y, equal_nan=True)
    dx_ref = R.maxpool_backward(dy, x, y, size, stride)
    assert np.array_equal(C.maxpool_backward(dy, x, y, size, stride, argmax=arg), dx_ref)
    assert np.array_equal(C.maxpool_backward(dy, x, y, size, stride), dx_ref)


def test_maxpool_gradients_float64():
    rng = np.random.default_rng(7)
    x = rng.permutation(2 * 3 * 9 * 7).reshape(2, 3, 9, 7) / 10.0      # distinct values: differentiable
    check_gradients(lambda x: C.maxpool_forward(x, 3, 2),
                    lambda dy, y, x: {"x": C.maxpool_backward(dy, x, y, 3, 2)},
                    {"x": x}, eps=1e-3, name="cpu_ops maxpool 3/2")


def test_threads_setting():
    before = C.get_threads()
    try:
        C.set_threads(2)
        assert C.get_threads() == 2
        assert C._parts(5) == [(0, 1), (1, 2), (2, 3), (3, 5)]       # two parts per thread
        assert C._parts(1) == [(0, 1)]
        assert C._parts(40, 16) == [(0, 20), (20, 40)]
        assert C._run(lambda a, b: b - a, C._parts(9)) == [2, 2, 2, 3]
        with pytest.raises(ZeroDivisionError):
            C._run(lambda a, b: 1 // a, C._parts(9))                 # a part's error reaches the caller
        C.set_threads(1)
        assert C._parts(64) == [(0, 64)]
        with pytest.raises(ValueError, match="threads"):
            C.set_threads(0)
    finally:
        C.set_threads(before)


def test_numpy_backend_dispatches_to_cpu_ops(monkeypatch):
    calls = []
    fast = C.relu_backward
    monkeypatch.setattr(C, "relu_backward", lambda *a, **k: calls.append(1) or fast(*a, **k))
    y = np.ones((2, 3), np.float32)
    ops.relu_backward(y, y)                          # host arrays: the fast CPU version
    assert calls == [1]
    from convnet import backend
    if backend.emu(0).runs_kernels and __import__("convnet.kernels").kernels.emulation_available():
        ops.relu_backward(y, y, backend=backend.emu())  # an emulated device: the kernel, not cpu_ops
        assert calls == [1]
    assert ops.lrn_forward.__doc__ == R.lrn_forward.__doc__    # each op carries its reference's docstring


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("cpu_throughput", ROOT / "benchmarks" / "cpu_throughput.py")
    import sys
    sys.path.insert(0, str(ROOT / "benchmarks"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_check_against_torch():
    torch = pytest.importorskip("torch")
    bench = _load_benchmark()
    from convnet.configs import load_config
    cfg = load_config("fashion")
    rng = np.random.default_rng(8)
    batches = [(rng.standard_normal((8, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 8))
               for _ in range(2)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    before = C.get_threads()
    try:
        result = bench.check(cfg, batches, torch)
        rows = bench.per_op(cfg, batches, torch, repeat=1)
    finally:
        torch.set_num_threads(threads)
        C.set_threads(before)
    assert [r["op"] for r in rows][:3] == ["conv1 forward", "conv1 backward (no data gradient)", "conv1 relu backward"]
    assert all(r["ours_ms"] > 0 and r["torch_ms"] > 0 for r in rows)
    assert result["ok"], result
    assert math.isclose(result["loss_ours"], result["loss_torch"], rel_tol=1e-4)


def test_benchmark_runs_ours_alone(tmp_path, capsys):
    bench = _load_benchmark()
    assert bench.main(["--no-torch", "--data", "random", "--steps", "2", "--rounds", "1", "--warmup", "1", "--batches", "2",
                       "--out", str(tmp_path)]) == 0
    files = list(tmp_path.glob("cpu_throughput-*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert [r["impl"] for r in doc["rows"]] == ["ours"]
    assert doc["rows"][0]["images_per_s"] > 0 and len(doc["rows"][0]["block_seconds"]) == 1
    assert "ours" in capsys.readouterr().out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_update_same_bits_as_the_reference(dtype, threads):
    rng = np.random.default_rng(9)
    for shape in ((256, 768), (10,), (3, 5, 7, 11)):
        w, dw, v = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
        w2, v2 = w.copy(), v.copy()
        assert C.sgd_update(w, dw, v, 0.05, 0.9, 0.0005) is None
        R.sgd_update(w2, dw, v2, 0.05, 0.9, 0.0005)
        assert np.array_equal(w, w2) and np.array_equal(v, v2)
    with pytest.raises(TypeError, match="in place"):
        C.sgd_update([1.0], np.ones(1), np.ones(1), 0.1)
    with pytest.raises(ValueError, match="lr"):
        C.sgd_update(np.ones(2), np.ones(2), np.ones(2), float("nan"))


def test_native_module_finds_numpys_openblas():
    """Where NumPy's BLAS is OpenBLAS (the PyPI wheels), convnet._cpu must find its GEMMs: otherwise
    the convolutions fall back to the NumPy loops and the default run is ~2x slower."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if C._native is None:
        pytest.skip("convnet._cpu is not built (make cpu)")
    if not any(i.get("internal_api") == "openblas" for i in threadpoolctl.threadpool_info()):
        pytest.skip("NumPy's BLAS is not OpenBLAS here")
    assert C._native_blas(), "convnet._cpu did not find cblas_sgemm in NumPy's OpenBLAS"
    assert "sgemm" in C._blas


def test_native_pool_resizes_and_serves_callers_in_several_threads():
    """Thread counts changed back and forth while ops run from two Python threads at once:
    every result right, nothing hangs (the pool takes one op at a time)."""
    import threading
    if C._native is None:
        pytest.skip("convnet._cpu is not built (make cpu)")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((16, 3, 11, 9)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    ref = R.conv2d_forward(x, w, None, 1, 1, 1)
    before = C.get_threads()
    errors = []

    def worker():
        try:
            for _ in range(30):
                same(C.conv2d_forward(x, w, None, 1, 1), ref, np.float32)
        except BaseException as e:      # reported by the main thread
            errors.append(e)

    try:
        for n in (2, 3, 1, 2, 4, 2):
            C.set_threads(n)
            t = threading.Thread(target=worker)
            t.start()
            worker()
            t.join(60)
            assert not t.is_alive(), "an op never finished"
        assert not errors, errors[0]
    finally:
        C.set_threads(before)


POOL_CHURN = """
import numpy as np
from convnet import cpu_ops as C, reference as R
rng = np.random.default_rng(0)
x = rng.standard_normal((7, 4, 13, 10)).astype(np.float32)
w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
ref = R.conv2d_forward(x, w, None, 2, 2, 2)
for it in range(1500):
    C.set_threads([1, 3, 2, 1, 3][it % 5])
    C._blas = "" if it % 3 == 0 else None        # NumPy's GEMMs, or convnet._cpu's again
    y = C.conv2d_forward(x, w, None, 2, 2, 2)
    assert np.allclose(y, ref, rtol=1e-5, atol=1e-5)
    assert np.array_equal(C.relu_backward(y, y), R.relu_backward(y, y))
print("ok")
"""


def test_native_pool_survives_thread_counts_changed_between_ops():
    """Ops between changes of the thread count (in a subprocess, so that a hang fails the test):
    a pool whose wake-up counter could return to an old value lost a stop signal here and hung
    within a few hundred rounds."""
    import subprocess
    import sys
    if C._native is None:
        pytest.skip("convnet._cpu is not built (make cpu)")
    try:
        r = subprocess.run([sys.executable, "-c", POOL_CHURN], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the pool hung while the thread count changed between ops")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
