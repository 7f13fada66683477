"""The GEMM kernels (kernels/gemm.cu) and the fc launchers against the NumPy reference."""
import re
from pathlib import Path

import numpy as np
import pytest

from convnet import backend as devices
from convnet import checking
from convnet.kernel_ops import gemm

SMALL = gemm.cases("small")


def _check(case, backend):
    err, errs = checking.run_case(case, backend)
    print(f"{case.name}: relative error {err:.2e} (tol {case.tol:.0e})")
    assert err <= case.tol, f"{case.name} on {backend}: relative error {err:.2e} > {case.tol:.0e}"


# Every small case runs on the emulation and the GPU in tests/test_kernels.py
# (the table over all families); this file adds what a table cannot say.


@pytest.mark.gpu
@pytest.mark.parametrize("shape", gemm.ALEXNET_SHAPES, ids=[s[0] for s in gemm.ALEXNET_SHAPES])
def test_alexnet_shape_gpu(shape):
    label, batch, n_in, n_out = shape      # the data is made here, not at collection
    for case in gemm.shape_cases(label, batch, n_in, n_out, scale="alexnet"):
        _check(case, devices.cuda(0))


def test_every_kernel_is_checked():
    src = (Path(__file__).resolve().parents[1] / "kernels" / "gemm.cu").read_text()
    names = set(re.findall(r'extern "C" __global__ void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(', src))
    covered = {k for c in SMALL for k in c.kernels}
    assert names and names <= covered, f"kernels without a check: {sorted(names - covered)}"


@pytest.mark.parametrize("draw", range(3))
def test_random_shapes_emu(draw):
    rng = np.random.default_rng(2000 + draw)
    batch, n_in, n_out = (int(v) for v in rng.integers(1, 150, size=3))
    for case in gemm.shape_cases(f"random {batch}x{n_in} -> {n_out}", batch, n_in, n_out, seed=draw):
        _check(case, devices.emu())


@pytest.mark.parametrize("version", gemm.SGEMM_VERSIONS)
def test_beta_zero_ignores_garbage_in_c(version):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((9, 5)).astype(np.float32)
    b = rng.standard_normal((5, 7)).astype(np.float32)
    c = np.full((9, 7), np.nan, dtype=np.float32)
    got = gemm.sgemm(a, b, alpha=2.0, beta=0.0, c=c, version=version)
    assert got is c
    np.testing.assert_allclose(c, 2.0 * (a.astype(np.float64) @ b), rtol=1e-5, atol=1e-5)


def test_non_contiguous_inputs_are_copied():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 20)).astype(np.float32)[:, ::2]
    w = rng.standard_normal((20, 4)).astype(np.float32).T[:, ::2]     # (4, 10), Fortran-ordered view
    np.testing.assert_allclose(gemm.fc_forward(x, w), x.astype(np.float64) @ w.T, rtol=1e-5, atol=1e-5)


def test_bad_input_errors():
    x = np.zeros((3, 5), np.float32)
    w = np.zeros((4, 5), np.float32)
    with pytest.raises(TypeError, match="float32"):
        gemm.fc_forward(x.astype(np.float64), w)
    with pytest.raises(ValueError, match="2 dimensions"):
        gemm.fc_forward(x[None], w)
    with pytest.raises(ValueError, match="features"):
        gemm.fc_forward(x, w[:, :4])
    with pytest.raises(ValueError, match="bias"):
        gemm.fc_forward(x, w, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="features"):
        gemm.fc_backward_data(np.zeros((3, 3), np.float32), w)
    with pytest.raises(ValueError, match="batch"):
        gemm.fc_backward_filter(np.zeros((2, 4), np.float32), x)
    with pytest.raises(ValueError, match="unknown version"):
        gemm.fc_backward_bias(np.zeros((2, 4), np.float32), version="v2")
    with pytest.raises(ValueError, match="unknown version"):
        gemm.fc_forward(x, w, version="v0")
    with pytest.raises(ValueError, match="inner dimensions"):
        gemm.sgemm(x, w)
    with pytest.raises(ValueError, match="c has shape"):
        gemm.sgemm(x, w, trans_b=True, c=np.zeros((3, 3), np.float32), beta=1.0)
    with pytest.raises(ValueError, match="beta"):
        gemm.sgemm(x, w, trans_b=True, beta=1.0)


@pytest.mark.parametrize("version", gemm.SGEMM_VERSIONS)
def test_empty_batch(version):
    x = np.zeros((0, 5), np.float32)
    w = np.ones((4, 5), np.float32)
    dy = np.zeros((0, 4), np.float32)
    assert gemm.fc_forward(x, w, np.ones(4, np.float32), version=version).shape == (0, 4)
    assert gemm.fc_backward_data(dy, w, version=version).shape == (0, 5)
    dw = gemm.fc_backward_filter(dy, x, version=version)
    assert dw.shape == (4, 5) and not dw.any()
    db = gemm.fc_backward_bias(dy)
    assert db.shape == (4,) and not db.any()
