"""Our conventions against another framework: PyTorch (CPU) on random shapes.

The NumPy reference (float64) and the kernels on the emulation (float32) are
compared with torch's conv2d and its gradients, max/avg pooling in ceil mode,
LocalResponseNorm (alpha * size: torch divides alpha by the window), softmax
and cross-entropy. Skipped when PyTorch is not installed (it is not a
dependency; the GPU machine has it).
"""
import numpy as np
import pytest

from convnet import backend as B
from convnet import ops

torch = pytest.importorskip("torch")
F = torch.nn.functional

BACKENDS = ["numpy", "emu"]


def _emu_or_skip(backend):
    if backend == "emu":
        from convnet import kernels
        if not kernels.emulation_available():
            pytest.skip("the CPU emulation is not built (make)")


def _run(backend, fn, *arrays, **kw):
    """fn on the backend: float64 for the reference, float32 for the kernels."""
    dtype = np.float64 if backend == "numpy" else np.float32
    args = [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in arrays]
    return fn(*args, backend=B.cpu() if backend == "numpy" else B.emu(), **kw)


def _close(ours, theirs, backend):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    ours = np.asarray(ours, dtype=np.float64)
    assert ours.shape == theirs.shape
    scale = max(np.abs(theirs).max(), 1e-30)
    err = np.abs(ours - theirs).max() / scale
    assert err < (1e-10 if backend == "numpy" else 2e-5), err


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(4))
def test_conv2d_and_its_gradients(backend, seed):
    _emu_or_skip(backend)
    rng = np.random.default_rng(100 + seed)
    g = int(rng.integers(1, 4))
    n, cg, fg = int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(1, 5))
    kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    ph, pw = int(rng.integers(0, 3)), int(rng.integers(0, 3))
    h, w = int(rng.integers(kh, 16)), int(rng.integers(kw, 16))
    x = rng.standard_normal((n, g * cg, h, w))
    wt = rng.standard_normal((g * fg, cg, kh, kw))
    b = rng.standard_normal(g * fg)
    geo = dict(stride=(sh, sw), pad=(ph, pw), groups=g)

    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(wt, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = F.conv2d(tx, tw, tb, stride=(sh, sw), padding=(ph, pw), groups=g)
    dy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(dy))

    _close(_run(backend, ops.conv2d_forward, x, wt, b, **geo), ty, backend)
    _close(_run(backend, ops.conv2d_backward_data, dy, wt, x.shape, **geo), tx.grad, backend)
    _close(_run(backend, ops.conv2d_backward_filter, dy, x, wt.shape, **geo), tw.grad, backend)
    _close(_run(backend, ops.conv2d_backward_bias, dy), tb.grad, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size,stride", [(3, 2), (2, 2), (3, 1), (4, 3), (1, 3), (2, 3), (2, 5)])
def test_pooling_ceil_mode(backend, size, stride):
    _emu_or_skip(backend)
    rng = np.random.default_rng(size * 10 + stride)
    x = rng.standard_normal((3, 5, int(rng.integers(size, 15)), int(rng.integers(size, 15))))
    tx = torch.tensor(x, requires_grad=True)
    ty = F.max_pool2d(tx, size, stride, ceil_mode=True)
    dy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(dy))
    y = _run(backend, ops.maxpool_forward, x, size=size, stride=stride)
    _close(y, ty, backend)
    _close(_run(backend, ops.maxpool_backward, dy, x, np.asarray(y), size=size, stride=stride), tx.grad, backend)

    tx = torch.tensor(x, requires_grad=True)
    ty = F.avg_pool2d(tx, size, stride, ceil_mode=True, count_include_pad=False)
    ty.backward(torch.tensor(dy))
    _close(_run(backend, ops.avgpool_forward, x, size=size, stride=stride), ty, backend)
    _close(_run(backend, ops.avgpool_backward, dy, x.shape, size=size, stride=stride), tx.grad, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size,alpha", [(5, 1e-4), (3, 0.5), (5, 2e-2)])
def test_lrn_with_alpha_times_size(backend, size, alpha):
    _emu_or_skip(backend)
    rng = np.random.default_rng(size)
    x = rng.standard_normal((3, 7, 9, 6)) * 3
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.LocalResponseNorm(size, alpha=alpha * size, beta=0.75, k=2.0)(tx)
    dy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(dy))
    kw = dict(size=size, alpha=alpha, beta=0.75, k=2.0)
    y = _run(backend, ops.lrn_forward, x, **kw)
    _close(y, ty, backend)
    dx = _run(backend, ops.lrn_backward, dy, x, np.asarray(y), **kw)
    _close(dx, tx.grad, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_and_cross_entropy(backend):
    _emu_or_skip(backend)
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((37, 13)) * 5
    labels = rng.integers(0, 13, 37).astype(np.int32)
    tl = torch.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(tl, torch.tensor(labels, dtype=torch.long))
    loss.backward()
    ours_loss, probs = _run(backend, ops.softmax_cross_entropy, logits, labels)
    assert abs(float(ours_loss) - loss.item()) <= (1e-10 if backend == "numpy" else 1e-5) * abs(loss.item())
    _close(probs, torch.softmax(tl, 1), backend)
    _close(_run(backend, ops.softmax_cross_entropy_backward, np.asarray(probs), labels), tl.grad, backend)
