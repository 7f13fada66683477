"""ReLU and tanh kernels: exact ReLU (zeros, negatives, NaN), tanh saturation,
empty tensors and bad inputs. Random values are covered by tests/test_kernels.py."""
import numpy as np
import pytest

from convnet import reference
from convnet.kernel_ops import _common as kc
from convnet.kernel_ops import activation as ka

BACKENDS = ["emu", pytest.param("cuda", marks=pytest.mark.gpu)]


def on(backend, a):
    if backend == "cuda":
        import cupy
        return cupy.asarray(a)
    return a


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


SPECIAL = np.array([-np.inf, -1e30, -1.5, -0.0, 0.0, 1e-45, 2.5, 1e30, np.inf], np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_exact(backend):
    y = host(ka.relu_forward(on(backend, SPECIAL)))
    assert np.array_equal(y, np.maximum(SPECIAL, 0))
    dy = np.arange(1, SPECIAL.size + 1, dtype=np.float32)
    dx = host(ka.relu_backward(on(backend, dy), on(backend, y)))
    assert np.array_equal(dx, np.where(y > 0, dy, 0))      # y == 0 passes no gradient
    assert np.array_equal(dx, reference.relu_backward(dy, y))


def test_relu_propagates_nan():
    y = ka.relu_forward(np.array([np.nan, -1, 1], np.float32))
    assert np.isnan(y[0]) and y[1] == 0 and y[2] == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_tanh_saturates_without_nan(backend):
    x = np.array([-1e30, -100, -20, -1e-6, 0, 1e-6, 20, 100, 1e30], np.float32)
    y = host(ka.tanh_forward(on(backend, x)))
    np.testing.assert_allclose(y, np.tanh(x.astype(np.float64)), rtol=2e-7, atol=1e-12)
    assert y[0] == -1 and y[-1] == 1
    dx = host(ka.tanh_backward(on(backend, np.ones_like(x)), on(backend, y)))
    assert dx[0] == 0 and dx[4] == 1


def test_any_shape_and_empty():
    x = np.random.default_rng(0).standard_normal((2, 3, 1, 5, 7)).astype(np.float32)
    assert np.array_equal(ka.relu_forward(x), np.maximum(x, 0))
    assert ka.tanh_forward(np.zeros((0, 4), np.float32)).shape == (0, 4)
    assert ka.relu_backward(np.zeros(0, np.float32), np.zeros(0, np.float32)).shape == (0,)


def test_grid_stride_covers_more_than_one_grid():
    n = kc.MAX_BLOCKS_EMU * kc.BLOCK * 3 + 17
    x = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    assert np.array_equal(ka.relu_forward(x), np.maximum(x, 0))


def test_bad_inputs():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="float32"):
        ka.relu_forward(x.astype(np.float64))
    with pytest.raises(TypeError, match="float32"):
        ka.tanh_backward(x, x.astype(np.float16))
    with pytest.raises(ValueError, match="same shape"):
        ka.relu_backward(x, np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        ka.tanh_forward(np.ones((4, 6), np.float32)[:, ::2])
    with pytest.raises(TypeError, match="NumPy or CuPy"):
        ka.relu_forward([1.0, -1.0])
    with pytest.raises(ValueError, match="version"):
        ka.relu_forward(x, version="v9")
