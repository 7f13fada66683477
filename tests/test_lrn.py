"""LRN kernels: the paper's parameters on many channels, an alpha large enough
that the cross-channel term of the gradient matters, windows wider than the
channel count, a float32 finite-difference check of the kernels themselves,
and bad inputs. Random values are covered by tests/test_kernels.py."""
import numpy as np
import pytest

from convnet import reference
from convnet.kernel_ops import lrn as kl

BACKENDS = ["emu", pytest.param("cuda", marks=pytest.mark.gpu)]
VERSIONS = list(kl.KERNELS)


def on(backend, a):
    if backend == "cuda":
        import cupy
        return cupy.asarray(a)
    return a


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def rel(got, want):
    return np.max(np.abs(got - want)) / np.max(np.abs(want))


def data(shape, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    return x, dy


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_paper_parameters_many_channels(backend, version):
    # 96 channels as in conv1, activations of the size ReLU outputs reach early on
    x, dy = data((2, 96, 3, 5), 0, scale=20.0)
    x = np.abs(x)
    params = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)
    y = kl.lrn_forward(on(backend, x), **params, version=version)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    y64 = reference.lrn_forward(x64, **params)
    assert rel(host(y), y64) < 2e-6
    dx = kl.lrn_backward(on(backend, dy), on(backend, x), y, **params, version=version)
    assert rel(host(dx), reference.lrn_backward(dy64, x64, y64, **params)) < 1e-5


@pytest.mark.parametrize("version", VERSIONS)
def test_cross_term_matters_and_is_right(version):
    x, dy = data((3, 7, 4, 5), 1, scale=2.0)
    params = dict(size=5, alpha=0.5, beta=0.75, k=1.0)
    y = kl.lrn_forward(x, **params, version=version)
    dx = kl.lrn_backward(dy, x, y, **params, version=version)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    want = reference.lrn_backward(dy64, x64, reference.lrn_forward(x64, **params), **params)
    sq = x64 * x64
    window = np.stack([sq[:, max(0, i - 2):i + 3].sum(axis=1) for i in range(x.shape[1])], axis=1)
    s = params["k"] + params["alpha"] * window
    direct_only = dy64 * s ** -params["beta"]
    assert rel(direct_only, want) > 0.1, "test set-up: the cross term should be large here"
    assert rel(dx, want) < 1e-5


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("c,size", [(2, 5), (3, 7), (4, 1), (6, 4), (5, 3), (1, 9), (10, 8)])
def test_window_wider_than_channels_and_odd_sizes(c, size, version):
    x, dy = data((3, c, 3, 2), 2 + c + size, scale=3.0)
    params = dict(size=size, alpha=0.05, beta=0.6, k=1.5)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    y = kl.lrn_forward(x, **params, version=version)
    y64 = reference.lrn_forward(x64, **params)
    assert rel(y, y64) < 2e-6
    dx = kl.lrn_backward(dy, x, y, **params, version=version)
    assert rel(dx, reference.lrn_backward(dy64, x64, y64, **params)) < 1e-5


def test_versions_agree_and_large_windows_fall_back_to_v1():
    x, dy = data((2, 9, 3, 4), 11, scale=2.0)
    params = dict(size=5, alpha=0.2, beta=0.75, k=1.0)
    y1 = kl.lrn_forward(x, **params, version="v1")
    y2 = kl.lrn_forward(x, **params, version="v2")
    np.testing.assert_allclose(y2, y1, rtol=1e-6, atol=0)
    np.testing.assert_allclose(kl.lrn_backward(dy, x, y1, **params, version="v2"),
                               kl.lrn_backward(dy, x, y1, **params, version="v1"), rtol=1e-5, atol=1e-7)
    big = dict(size=11, alpha=0.2, beta=0.75, k=1.0)
    assert np.array_equal(kl.lrn_forward(x, **big), kl.lrn_forward(x, **big, version="v1"))
    with pytest.raises(ValueError, match="v2 handles size <= 9"):
        kl.lrn_forward(x, **big, version="v2")


def test_backward_is_the_gradient_of_forward_finite_differences():
    """The kernels alone: dx from lrn_bwd against central differences of lrn_fwd
    (float32, so a loose tolerance; the float64 check is on the reference)."""
    x, g = data((1, 6, 2, 2), 5, scale=1.5)
    params = dict(size=3, alpha=0.3, beta=0.75, k=1.0)   # the shipped version
    y = kl.lrn_forward(x, **params)
    dx = kl.lrn_backward(g, x, y, **params).astype(np.float64)
    eps = 1e-2
    num = np.zeros(x.size)
    for i in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp.flat[i] += eps
        xm.flat[i] -= eps
        lp = np.sum(kl.lrn_forward(xp, **params).astype(np.float64) * g)
        lm = np.sum(kl.lrn_forward(xm, **params).astype(np.float64) * g)
        num[i] = (lp - lm) / (2 * eps)
    err = np.max(np.abs(dx.ravel() - num)) / np.max(np.abs(num))
    print(f"lrn kernel finite-difference relative error {err:.1e}")
    assert err < 2e-3


def test_bad_inputs():
    x = np.ones((2, 5, 3, 3), np.float32)
    y = kl.lrn_forward(x)
    with pytest.raises(TypeError, match="float32"):
        kl.lrn_forward(x.astype(np.float64))
    with pytest.raises(ValueError, match="4 dimensions"):
        kl.lrn_forward(np.ones((5, 3, 3), np.float32))
    with pytest.raises(ValueError, match="size"):
        kl.lrn_forward(x, size=0)
    with pytest.raises(ValueError, match="alpha"):
        kl.lrn_forward(x, alpha=float("nan"))
    with pytest.raises(ValueError, match="same shape"):
        kl.lrn_backward(np.ones((2, 5, 3, 4), np.float32), x, y)
    with pytest.raises(ValueError, match="C-contiguous"):
        kl.lrn_backward(x, x, np.ones((2, 5, 3, 3), np.float32)[:, :, :, ::-1])
    with pytest.raises(ValueError, match="unknown kernel version"):
        kl.lrn_forward(x, version="v3")
