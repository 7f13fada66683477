"""The fused SGD kernel: several steps against the reference, in place, special
hyper-parameters, and bad inputs. One-step values are covered by tests/test_kernels.py."""
import numpy as np
import pytest

from convnet import reference
from convnet.kernel_ops import sgd as ksgd

BACKENDS = ["emu", pytest.param("cuda", marks=pytest.mark.gpu)]


def on(backend, a):
    if backend == "cuda":
        import cupy
        return cupy.asarray(a)
    return a


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def params(shape, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(shape) * 0.01).astype(np.float32)
    v = np.zeros(shape, np.float32)
    return w, v, rng


@pytest.mark.parametrize("backend", BACKENDS)
def test_several_steps_match_reference(backend):
    shape = (37, 29)
    w, v, rng = params(shape, 0)
    w_ref, v_ref = w.astype(np.float64), v.astype(np.float64)
    w_k, v_k = on(backend, w), on(backend, v)
    ids = (id(w_k), id(v_k))
    for step in range(5):
        dw = rng.standard_normal(shape).astype(np.float32)
        lr = 0.01 if step < 3 else 0.001                  # a learning-rate drop on the way
        assert ksgd.sgd_update(w_k, on(backend, dw), v_k, lr, 0.9, 0.0005) is None
        reference.sgd_update(w_ref, dw.astype(np.float64), v_ref, lr, 0.9, 0.0005)
    assert (id(w_k), id(v_k)) == ids
    for got, want in ((host(w_k), w_ref), (host(v_k), v_ref)):
        assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-6


def test_hand_computed_step():
    w = np.array([1.0, -2.0, 0.5], np.float32)
    v = np.array([0.1, 0.0, -0.2], np.float32)
    dw = np.array([1.0, 1.0, -4.0], np.float32)
    ksgd.sgd_update(w, dw, v, lr=0.5, momentum=0.5, weight_decay=0.1)
    # v = 0.5 v - 0.05 w - 0.5 dw
    v_want = np.array([0.05 - 0.05 - 0.5, 0.0 + 0.1 - 0.5, -0.1 - 0.025 + 2.0])
    np.testing.assert_allclose(v, v_want, rtol=1e-6)
    np.testing.assert_allclose(w, np.array([1.0, -2.0, 0.5]) + v_want, rtol=1e-6)


def test_zero_learning_rate_only_decays_velocity():
    w, v, rng = params((3, 5, 13, 11), 1)
    v[...] = rng.standard_normal(v.shape).astype(np.float32)
    v0 = v.copy()
    w0 = w.copy()
    ksgd.sgd_update(w, rng.standard_normal(w.shape).astype(np.float32), v, 0.0, 0.9, 0.0005)
    np.testing.assert_allclose(v, 0.9 * v0, rtol=1e-6)
    np.testing.assert_allclose(w, w0 + v, rtol=1e-6)


def test_bad_inputs():
    w = np.ones((4, 3), np.float32)
    dw, v = np.ones_like(w), np.zeros_like(w)
    with pytest.raises(ValueError, match="same shape"):
        ksgd.sgd_update(w, np.ones((3, 4), np.float32), v, 0.1)
    with pytest.raises(TypeError, match="float32"):
        ksgd.sgd_update(w, dw, v.astype(np.float64), 0.1)
    with pytest.raises(ValueError, match="lr"):
        ksgd.sgd_update(w, dw, v, float("inf"))
    with pytest.raises(TypeError, match="momentum"):
        ksgd.sgd_update(w, dw, v, 0.1, momentum="0.9")
    readonly = np.ones_like(w)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        ksgd.sgd_update(readonly, dw, v, 0.1)
    with pytest.raises(ValueError, match="share memory"):
        ksgd.sgd_update(w, dw, w, 0.1)
    with pytest.raises(ValueError, match="C-contiguous"):
        ksgd.sgd_update(w, dw, np.zeros((3, 4), np.float32).T, 0.1)
