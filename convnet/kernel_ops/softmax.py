"""Launchers for kernels/softmax.cu: softmax, cross-entropy, its gradient, top-k errors.

    softmax_forward(logits)                        -> probs (N, K)
    softmax_cross_entropy(logits, labels)          -> (mean loss, probs)
    softmax_cross_entropy_backward(probs, labels)  -> (probs - onehot) / N
    topk_errors(logits, labels, k)                 -> int: rows whose label has k or
                                                      more strictly larger scores

Same names and signatures as convnet.reference. logits/probs: float32
C-contiguous (N, K); labels: an integer array (N,) in [0, K) of the same array
module (converted to int32). The mean loss comes back as a float32 scalar
(NumPy) or a 0-d array (CuPy, so that no copy to the host is forced).
"""
import numpy as np

from convnet.checking import Case
from convnet.kernel_ops._common import (
    BLOCK, LazyInputs, array_module, check_float32, check_int, check_same_device,
    check_version, grid_1d, is_cupy, launch, randn)

SHIPPED = {  # op -> the kernel version it runs (the only one kept)
    "softmax_forward": "v1",
    "softmax_cross_entropy": "v1",
    "softmax_cross_entropy_backward": "v1",
    "topk_errors": "v1",
}
ROWS_PER_BLOCK = 4          # one warp per row
MEAN_THREADS = 256          # the single block of softmax_loss_mean (a power of two)


def _check_labels(op, labels, logits):
    if not (isinstance(labels, np.ndarray) or is_cupy(labels)):
        raise TypeError(f"{op}: labels must be a NumPy or CuPy array, got {type(labels).__name__}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{op}: labels must be an integer array, got dtype {labels.dtype}")
    n, k = logits.shape
    if tuple(labels.shape) != (n,):
        raise ValueError(f"{op}: labels must have shape ({n},), got {tuple(labels.shape)}")
    check_same_device(op, logits=logits, labels=labels)
    if n:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= k:
            raise ValueError(f"{op}: labels must lie in [0, {k}), got values in [{lo}, {hi}]")
    return array_module(labels).ascontiguousarray(labels, dtype=np.int32)


def _row_grid(n):
    return max(1, -(-n // ROWS_PER_BLOCK)), 32 * ROWS_PER_BLOCK


def softmax_forward(logits, *, version=None):
    """p[n, c] = exp(z[n, c] - max z[n]) / sum_c exp(z[n, c] - max z[n])."""
    op = "softmax_forward"
    check_version(op, version)
    check_float32(op, "logits", logits, ndim=2)
    n, k = logits.shape
    probs = array_module(logits).empty_like(logits)
    if n and k:
        grid, block = _row_grid(n)
        launch("softmax_fwd", logits, grid, block, (logits, probs, n, k))
    return probs


def softmax_cross_entropy(logits, labels, *, version=None):
    """(mean over rows of -log softmax(z)[n, label[n]], softmax(z))."""
    op = "softmax_cross_entropy"
    check_version(op, version)
    check_float32(op, "logits", logits, ndim=2)
    n, k = logits.shape
    if k == 0:
        raise ValueError(f"{op}: logits must have at least one class, got shape {tuple(logits.shape)}")
    labels = _check_labels(op, labels, logits)
    xp = array_module(logits)
    probs = xp.empty_like(logits)
    losses = xp.empty(n, dtype=np.float32)
    mean = xp.full(1, np.nan, dtype=np.float32)       # the mean of no rows stays NaN, as np.mean
    if n:
        grid, block = _row_grid(n)
        launch("softmax_xent_fwd", logits, grid, block, (logits, labels, probs, losses, n, k))
        launch("softmax_loss_mean", logits, 1, MEAN_THREADS, (losses, mean, n),
               shared_mem=MEAN_THREADS * 4)
    return mean[0], probs


def softmax_cross_entropy_backward(probs, labels, *, version=None):
    """dL/dz = (probs - onehot(labels)) / N."""
    op = "softmax_cross_entropy_backward"
    check_version(op, version)
    check_float32(op, "probs", probs, ndim=2)
    labels = _check_labels(op, labels, probs)
    n, k = probs.shape
    dz = array_module(probs).empty_like(probs)
    if probs.size:
        launch("softmax_xent_bwd", probs, grid_1d(probs.size, probs), BLOCK, (probs, labels, dz, n, k))
    return dz


def topk_errors(logits, labels, k, *, version=None):
    """Number of rows (an int) whose label has k or more classes with a strictly larger score."""
    op = "topk_errors"
    check_version(op, version)
    check_float32(op, "logits", logits, ndim=2)
    labels = _check_labels(op, labels, logits)
    topk = check_int(op, "k", k, 1)
    n, classes = logits.shape
    errors = array_module(logits).zeros(1, dtype=np.int32)
    if n:
        grid, block = _row_grid(n)
        launch("topk_count", logits, grid, block, (logits, labels, errors, n, classes, topk))
    return int(errors[0])


# --- checks against the reference -------------------------------------------------

def _cases_for(n, k, scale, seed, shift=0.0, spread=3.0):
    from convnet import reference
    tag = f"{n}x{k}" + (f" shift{shift:g}" if shift else "")

    def make_logits():
        rng = np.random.default_rng(seed)
        return [randn(rng, (n, k), spread, shift), rng.integers(0, k, n)]

    def make_probs():
        z, labels = make_logits()
        return [reference.softmax_forward(z.astype(np.float32)).astype(np.float64), labels]

    def lazy(make, length):
        return LazyInputs(make, length) if scale == "alexnet" else make()

    def ref_loss(z, labels):
        return reference.softmax_cross_entropy(z, labels)

    def topk(kk):
        ins = lazy(lambda: make_logits() + [kk], 3)
        return Case(f"topk_count {tag} top{kk}", ins, reference.topk_errors, topk_errors,
                    tol=0.0, kernels=("topk_count",), scale=scale)

    return [
        Case(f"softmax_fwd {tag}", lazy(lambda: make_logits()[:1], 1), reference.softmax_forward,
             softmax_forward, tol=2e-6, kernels=("softmax_fwd",), scale=scale),
        Case(f"softmax_xent_fwd {tag}", lazy(make_logits, 2), ref_loss, softmax_cross_entropy,
             tol=2e-6, kernels=("softmax_xent_fwd", "softmax_loss_mean"), scale=scale),
        Case(f"softmax_xent_bwd {tag}", lazy(make_probs, 2), reference.softmax_cross_entropy_backward,
             softmax_cross_entropy_backward, tol=1e-6, kernels=("softmax_xent_bwd",), scale=scale),
        topk(1),
        topk(5),
    ]


def cases(scale):
    """Checks of softmax.cu: "small" (3x10 and 5x1000 rows, a row count above one
    block, logits shifted by 1e4 for stability) or "alexnet" (fc8 output, 128x1000)."""
    if scale == "small":
        return (_cases_for(3, 10, scale, 500) + _cases_for(5, 1000, scale, 501)
                + _cases_for(9, 37, scale, 502, shift=1e4, spread=10.0))
    if scale == "alexnet":
        return _cases_for(128, 1000, scale, 510)
    raise ValueError(f"unknown case scale {scale!r}: 'small' or 'alexnet'")
