"""Softmax kernels: huge logits (stability), uniform rows, one class, many rows
(the mean's strided loop), top-k with ties, and bad labels. Random values are
covered by tests/test_kernels.py."""
import numpy as np
import pytest

from convnet import reference
from convnet.kernel_ops import softmax as ks

BACKENDS = ["emu", pytest.param("cuda", marks=pytest.mark.gpu)]


def on(backend, a):
    if backend == "cuda":
        import cupy
        return cupy.asarray(a)
    return a


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_logits_are_stable(backend):
    z = np.array([[1e38, -1e38, 3e37, 1e38 - 1e32],
                  [-3e38, -3e38, -3e38, -2.9e38],
                  [80.0, 90.0, 100.0, 110.0]], np.float32)
    labels = np.array([2, 0, 3], np.int32)
    probs = host(ks.softmax_forward(on(backend, z)))
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    want = reference.softmax_forward(z.astype(np.float64))
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-7)
    loss, probs2 = ks.softmax_cross_entropy(on(backend, z), on(backend, labels))
    loss = float(host(loss))
    want_loss, _ = reference.softmax_cross_entropy(z.astype(np.float64), labels)
    assert np.isfinite(loss) and abs(loss - want_loss) <= 1e-6 * abs(want_loss)
    assert np.array_equal(host(probs2), probs)


def test_uniform_rows_and_one_class():
    z = np.full((5, 37), 3.5, np.float32)
    assert np.allclose(ks.softmax_forward(z), 1 / 37, rtol=1e-6)
    one = np.random.default_rng(0).standard_normal((6, 1)).astype(np.float32)
    loss, probs = ks.softmax_cross_entropy(one, np.zeros(6, np.int32))
    assert np.all(probs == 1) and loss == 0
    assert ks.topk_errors(one, np.zeros(6, np.int64), 1) == 0


def test_loss_mean_over_many_rows():
    # more rows than threads of the mean kernel: every thread sums a strided slice
    rng = np.random.default_rng(1)
    n = 3 * ks.MEAN_THREADS + 7
    z = rng.standard_normal((n, 3)).astype(np.float32)
    labels = rng.integers(0, 3, n)
    loss, probs = ks.softmax_cross_entropy(z, labels)
    want, wprobs = reference.softmax_cross_entropy(z.astype(np.float64), labels)
    assert isinstance(loss, np.float32)
    assert abs(loss - want) < 1e-6 * abs(want)
    np.testing.assert_allclose(probs, wprobs, rtol=1e-5)
    dz = ks.softmax_cross_entropy_backward(probs, labels)
    np.testing.assert_allclose(dz, reference.softmax_cross_entropy_backward(probs.astype(np.float64), labels),
                               rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(dz.sum(axis=1), 0, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_topk_ties_count_only_strictly_larger(backend):
    z = np.array([[1, 1, 1, 1, 1],        # label 0: nothing larger -> correct for every k
                  [2, 1, 1, 0, 1],        # label 1: one larger -> top-1 error only
                  [3, 3, 2, 2, 2],        # label 2: two larger (tied 3s) -> top-1, top-2 error
                  [0, 5, 5, 5, 5],        # label 0: four larger -> error up to top-4
                  [7, 7, 7, 7, 8]],       # label 4: the maximum -> correct
                 np.float32)
    labels = np.array([0, 1, 2, 0, 4], np.int32)
    want = {1: 3, 2: 2, 3: 1, 4: 1, 5: 0}
    for k, errors in want.items():
        got = ks.topk_errors(on(backend, z), on(backend, labels), k)
        assert isinstance(got, int) and got == errors, (k, got)
        assert reference.topk_errors(z, labels, k) == errors


def test_topk_many_rows_and_classes():
    rng = np.random.default_rng(2)
    z = rng.integers(0, 4, (37, 1000)).astype(np.float32)     # heavy ties
    labels = rng.integers(0, 1000, 37)
    for k in (1, 5, 300):
        assert ks.topk_errors(z, labels, k) == reference.topk_errors(z, labels, k)


def test_bad_inputs():
    z = np.zeros((4, 10), np.float32)
    good = np.array([0, 1, 2, 9])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        ks.softmax_cross_entropy(z, np.array([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="labels must lie"):
        ks.topk_errors(z, np.array([0, -1, 2, 3]), 1)
    with pytest.raises(TypeError, match="integer"):
        ks.softmax_cross_entropy_backward(z, good.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        ks.softmax_cross_entropy(z, good[:3])
    with pytest.raises(TypeError, match="float32"):
        ks.softmax_forward(z.astype(np.float64))
    with pytest.raises(ValueError, match="2 dimensions"):
        ks.softmax_forward(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="k must be >= 1"):
        ks.topk_errors(z, good, 0)
    with pytest.raises(TypeError, match="NumPy or CuPy"):
        ks.topk_errors(z, [0, 1, 2, 3], 1)
