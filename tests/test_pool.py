"""Pooling kernels: ties (first maximum in row-major order), overlapping windows
that sum, clipped last windows, hand-computed small examples, AlexNet output
sizes and bad inputs. Random values are covered by tests/test_kernels.py."""
import numpy as np
import pytest

from convnet import reference
from convnet.kernel_ops import pool as kp

BACKENDS = ["emu", pytest.param("cuda", marks=pytest.mark.gpu)]


def on(backend, a):
    if backend == "cuda":
        import cupy
        return cupy.asarray(a)
    return a


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def test_max_ties_go_to_the_first_maximum_by_hand():
    # one plane 3x3, all equal, 2x2 windows stride 1: four windows, each routes
    # its gradient to its own top-left element.
    x = np.ones((1, 1, 3, 3), np.float32)
    dy = np.array([[1, 2], [4, 8]], np.float32).reshape(1, 1, 2, 2)
    y = kp.maxpool_forward(x, 2, 1)
    assert np.array_equal(y, np.ones((1, 1, 2, 2), np.float32))
    dx = kp.maxpool_backward(dy, x, y, 2, 1)
    want = np.array([[1, 2, 0], [4, 8, 0], [0, 0, 0]], np.float32).reshape(1, 1, 3, 3)
    assert np.array_equal(dx, want)


def test_max_overlapping_windows_sum_by_hand():
    # 1x5 row, size 3 stride 2: windows [0..2] and [2..4] share element 2, the maximum of both.
    x = np.array([0, 1, 9, 1, 0], np.float32).reshape(1, 1, 1, 5)
    x = np.repeat(x, 3, axis=2)                        # 3 rows, window covers all of them
    x[:, :, 1:, :] -= 10                               # row 0 holds the maxima
    y = kp.maxpool_forward(x, 3, 2)
    assert y.shape == (1, 1, 1, 2) and np.all(y == 9)
    dy = np.array([0.5, 0.25], np.float32).reshape(1, 1, 1, 2)
    dx = kp.maxpool_backward(dy, x, y, 3, 2)
    want = np.zeros_like(x)
    want[0, 0, 0, 2] = 0.75
    assert np.array_equal(dx, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,size,stride", [((3, 5, 13, 11), 3, 2), ((2, 3, 12, 12), 2, 2),
                                               ((2, 3, 7, 9), 3, 1), ((1, 2, 11, 10), 4, 3)])
def test_max_with_many_ties_matches_reference(backend, shape, size, stride):
    rng = np.random.default_rng(7)
    x = rng.integers(0, 3, shape).astype(np.float32)    # values 0, 1, 2: ties everywhere
    dy = rng.standard_normal(reference.maxpool_forward(x, size, stride).shape).astype(np.float32)
    y = kp.maxpool_forward(on(backend, x), size, stride)
    assert np.array_equal(host(y), reference.maxpool_forward(x, size, stride))
    dx = host(kp.maxpool_backward(on(backend, dy), on(backend, x), y, size, stride))
    want = reference.maxpool_backward(dy.astype(np.float64), x.astype(np.float64),
                                      reference.maxpool_forward(x.astype(np.float64), size, stride),
                                      size, stride)
    np.testing.assert_allclose(dx, want, rtol=1e-6, atol=1e-6)


def test_max_gradient_total_is_preserved():
    # every window routes all of its dy to exactly one input
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, (3, 5, 13, 11)).astype(np.float32)
    y = kp.maxpool_forward(x, 3, 2)
    dy = np.ones_like(y)
    dx = kp.maxpool_backward(dy, x, y, 3, 2)
    assert dx.sum() == y.size
    assert np.all(dx[dx != 0] >= 1)        # whole windows, never fractions


def test_avg_clipped_windows_by_hand():
    # 3x3 plane, size 2 stride 2: output 2x2, windows of 4, 2, 2 and 1 elements
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    y = kp.avgpool_forward(x, 2, 2)
    want = np.array([[(0 + 1 + 3 + 4) / 4, (2 + 5) / 2], [(6 + 7) / 2, 8]], np.float32)
    assert np.allclose(y[0, 0], want, rtol=0, atol=1e-6)
    dy = np.array([[4, 2], [2, 1]], np.float32).reshape(1, 1, 2, 2)
    dx = kp.avgpool_backward(dy, x.shape, 2, 2)
    assert np.array_equal(dx, np.ones_like(x))       # each dy / count = 1


def test_avg_overlap_sums_by_hand():
    # 2x4 plane, size 2 stride 1: one row of windows over columns [0,1], [1,2], [2,3]
    dy = np.array([4, 8, 12], np.float32).reshape(1, 1, 1, 3)
    dx = kp.avgpool_backward(dy, (1, 1, 2, 4), 2, 1)
    assert np.array_equal(dx[0, 0], np.array([[1, 3, 5, 3], [1, 3, 5, 3]], np.float32))


def test_alexnet_pooling_sizes():
    x = np.random.default_rng(0).standard_normal((1, 2, 55, 55)).astype(np.float32)
    sizes = []
    for _ in range(3):
        x = kp.maxpool_forward(x, 3, 2)
        sizes.append(x.shape[2:])
    assert sizes == [(27, 27), (13, 13), (6, 6)]


def test_bad_inputs():
    x = np.ones((2, 3, 8, 8), np.float32)
    y = kp.maxpool_forward(x)
    with pytest.raises(TypeError, match="float32"):
        kp.maxpool_forward(x.astype(np.float64))
    with pytest.raises(ValueError, match="4 dimensions"):
        kp.avgpool_forward(np.ones((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="larger than the input"):
        kp.maxpool_forward(x, 9, 1)
    assert kp.avgpool_forward(np.ones((1, 1, 5, 5), np.float32), 1, 3).shape == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="stride"):
        kp.maxpool_forward(x, 3, 0)
    with pytest.raises(TypeError, match="size"):
        kp.maxpool_forward(x, 2.5, 2)
    with pytest.raises(ValueError, match="dy has shape"):
        kp.maxpool_backward(np.ones((2, 3, 3, 3), np.float32), x, y)
    with pytest.raises(ValueError, match="dy has shape"):
        kp.avgpool_backward(y, (2, 3, 11, 11))
    with pytest.raises(ValueError, match="x_shape"):
        kp.avgpool_backward(y, (2, 3, 8))
    with pytest.raises(ValueError, match="C-contiguous"):
        kp.maxpool_forward(np.ones((2, 3, 8, 8), np.float32).transpose(0, 1, 3, 2))
