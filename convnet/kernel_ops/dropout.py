"""Launchers for kernels/dropout.cu: inverted dropout with a regenerated mask.

    dropout_forward(x, p, seed, offset=0)      y  = x / (1 - p) where kept, else 0
    dropout_backward(dy, p, seed, offset=0)    dx = dy / (1 - p) where kept, else 0
    dropout_mask(shape, p, seed, like, offset=0)   the keep mask itself (uint8 -> bool)

Element i (flat C-order index) is kept when word 0 of
philox4x32_10((i mod 2^32, i >> 32, 0, 0), (seed mod 2^32, seed >> 32)) is
>= reference.dropout_threshold(p): bit for bit the mask of
reference.dropout_mask. Nothing is stored between forward and backward.
"""
import math

import numpy as np

from convnet.checking import Case
from convnet.kernel_ops._common import (
    BLOCK, LazyInputs, array_module, check_float32, check_version, grid_1d, launch,
    randn, shape_str)

SHIPPED = {  # op -> the kernel version it runs (the only one kept)
    "dropout_forward": "v1",
    "dropout_backward": "v1",
}


def _threshold(op, p):
    from convnet import reference
    try:
        return int(reference.dropout_threshold(p))
    except (TypeError, ValueError) as e:
        raise type(e)(f"{op}: {e}") from None


def _check_seed(op, seed):
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{op}: seed must be an int, got {seed!r}")
    if not 0 <= seed < 2 ** 64:
        raise ValueError(f"{op}: seed must lie in [0, 2^64), got {seed}")
    return int(seed)


def _check_offset(op, offset, n):
    if isinstance(offset, (bool, np.bool_)) or not isinstance(offset, (int, np.integer)):
        raise TypeError(f"{op}: offset must be an int, got {offset!r}")
    if not 0 <= offset or offset + n > 2 ** 64:
        raise ValueError(f"{op}: element indices offset .. offset + {n} must lie in [0, 2^64), "
                         f"got offset {offset}")
    return int(offset)


def _apply(op, x, p, seed, version, offset=0):
    check_version(op, version)
    check_float32(op, "x" if op == "dropout_forward" else "dy", x)
    threshold = _threshold(op, p)
    seed = _check_seed(op, seed)
    offset = _check_offset(op, offset, x.size)
    y = array_module(x).empty_like(x)
    if x.size:
        scale = 1.0 / (1.0 - float(p))
        launch("dropout_apply", x, grid_1d(x.size, x), BLOCK,
               (x, y, x.size, threshold, scale, seed, offset))
    return y


def dropout_forward(x, p, seed, offset=0, *, version=None):
    """Inverted dropout of x (float32, any shape) with drop probability p, mask from seed
    (element i of x has mask index offset + i)."""
    return _apply("dropout_forward", x, p, seed, version, offset)


def dropout_backward(dy, p, seed, offset=0, *, version=None):
    """The gradient of dropout_forward: the same regenerated mask and scale applied to dy."""
    return _apply("dropout_backward", dy, p, seed, version, offset)


def dropout_mask(shape, p, seed, like, offset=0):
    """Boolean keep mask of `shape` for elements offset .. offset + size - 1, computed by
    the dropout_mask kernel on the backend of `like` (a NumPy array or "emu" -> emulation,
    a CuPy array or "cuda" -> GPU)."""
    op = "dropout_mask"
    threshold = _threshold(op, p)
    seed = _check_seed(op, seed)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"{op}: shape must not be negative, got {shape}")
    n = math.prod(shape)
    offset = _check_offset(op, offset, n)
    if isinstance(like, str):
        if like not in ("emu", "cuda"):
            raise ValueError(f"{op}: like must be an array, 'emu' or 'cuda', got {like!r}")
        xp = np
        if like == "cuda":
            import cupy as xp
    else:
        xp = array_module(like)
    mask = xp.empty(shape, dtype=np.uint8)
    if n:
        launch("dropout_mask", mask, grid_1d(n, mask), BLOCK, (mask, n, threshold, seed, offset))
    return mask.astype(bool)


# --- checks against the reference -------------------------------------------------

def _cases_for(shape, p, seed, scale, data_seed):
    from convnet import reference
    tag = f"{shape_str(shape)} p{p:g}"

    def make():
        return [randn(np.random.default_rng(data_seed), shape), p, seed]

    def lazy():
        return LazyInputs(make, 3) if scale == "alexnet" else make()

    def ref_mask(x, p, seed):
        return reference.dropout_mask(x.shape, p, seed)

    def kern_mask(x, p, seed):
        return dropout_mask(x.shape, p, seed, like=x)

    return [
        Case(f"dropout_fwd {tag}", lazy(), reference.dropout_forward, dropout_forward,
             tol=2.5e-7, kernels=("dropout_apply",), scale=scale),
        Case(f"dropout_bwd {tag}", lazy(), reference.dropout_backward, dropout_backward,
             tol=2.5e-7, kernels=("dropout_apply",), scale=scale),
        Case(f"dropout_mask {tag}", lazy(), ref_mask, kern_mask,
             tol=0.0, kernels=("dropout_mask",), scale=scale),
    ]


def cases(scale):
    """Checks of dropout.cu: "small" (odd shapes, p 0.5 and 0.3, and p 0) or
    "alexnet" (fc6/fc7 outputs, 128x4096, p 0.5)."""
    if scale == "small":
        return (_cases_for((3, 5, 13, 11), 0.5, 12345, scale, 400)
                + _cases_for((3, 37), 0.3, 2 ** 40 + 7, scale, 401)
                + _cases_for((5, 7), 0.0, 1, scale, 402))
    if scale == "alexnet":
        return _cases_for((128, 4096), 0.5, 20121203, scale, 410)
    raise ValueError(f"unknown case scale {scale!r}: 'small' or 'alexnet'")
