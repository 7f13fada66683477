"""Launchers for kernels/activation.cu: ReLU and tanh, forward and backward.

    relu_forward(x), relu_backward(dy, y), tanh_forward(x), tanh_backward(dy, y)

Same names and signatures as convnet.reference. float32, C-contiguous arrays
of any shape; NumPy arrays run on the CPU emulation, CuPy arrays on their GPU.

This module also holds the small argument checks, grid sizing and case
helpers shared by the launchers of the other non-convolution families
(lrn, pool, dropout, softmax, sgd), so that they read and fail alike.
"""
import math
from collections.abc import Sequence

import numpy as np

from convnet.checking import Case

SHIPPED = "v1"          # the kernel version these launchers run (the only one kept)
BLOCK = 256             # threads per block of the 1-D grid-stride kernels
MAX_BLOCKS_GPU = 8192   # grid-stride loops cover the rest
MAX_BLOCKS_EMU = 16     # the emulation runs one fiber per thread: few blocks, long loops
INT32_LIMIT = 2 ** 31 - 1


# --- shared argument checks ------------------------------------------------

def is_cupy(a):
    return type(a).__module__.split(".")[0] == "cupy"


def check_version(op, version):
    if version not in (None, SHIPPED):
        raise ValueError(f"{op}: unknown kernel version {version!r}; kept versions: {SHIPPED!r}")


def check_float32(op, name, a, ndim=None):
    """a must be a float32, C-contiguous NumPy or CuPy array (of ndim dimensions)."""
    if not (isinstance(a, np.ndarray) or is_cupy(a)):
        raise TypeError(f"{op}: {name} must be a NumPy or CuPy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{op}: {name} must be float32 (the kernels run in float32), got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {tuple(a.shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be C-contiguous (use ascontiguousarray)")
    return a


def check_same_shape(op, **arrays):
    shapes = {name: tuple(a.shape) for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{n} {s}" for n, s in shapes.items())
        raise ValueError(f"{op}: {listed} must have the same shape")


def check_same_device(op, **arrays):
    """All NumPy (emulation) or all CuPy on one device."""
    kinds = {name: ("cupy", a.device.id) if is_cupy(a) else ("numpy", None)
             for name, a in arrays.items()}
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"{n} on {k[0]}" + (f" device {k[1]}" if k[1] is not None else "")
                           for n, k in kinds.items())
        raise TypeError(f"{op}: arrays must all be NumPy or all CuPy on one device, got {listed}")


def check_number(op, name, value, finite=True):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: {name} must be a number, got {value!r}")
    if finite and not math.isfinite(value):
        raise ValueError(f"{op}: {name} must be a finite number, got {value!r}")
    return value


def check_int(op, name, value, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value}")
    return int(value)


def check_int32_size(op, total):
    """Kernels with 32-bit grid-stride indices need total + grid threads < 2^31."""
    if total + MAX_BLOCKS_GPU * BLOCK > INT32_LIMIT:
        raise ValueError(f"{op}: {total} elements are too many for 32-bit indexing")


def grid_1d(total, like, block=BLOCK):
    """Blocks for a grid-stride loop over `total` items of `block` per block."""
    cap = MAX_BLOCKS_GPU if is_cupy(like) else MAX_BLOCKS_EMU
    return max(1, min(-(-total // block), cap))


def launch(name, like, grid, block, args, shared_mem=0):
    from convnet import kernels   # imported on first launch: the case lists need no loader
    kernels.get_function(name, like=like)(grid, block, args, shared_mem=shared_mem)


def array_module(like):
    if is_cupy(like):
        import cupy
        return cupy
    return np


# --- shared case helpers ------------------------------------------------------

def randn(rng, shape, scale=1.0, shift=0.0):
    """Normal float64 values that are exactly representable in float32, so the
    float64 reference and the float32 kernel see the same numbers (no ties
    created or broken by rounding)."""
    return (rng.standard_normal(shape) * scale + shift).astype(np.float32).astype(np.float64)


class LazyInputs(Sequence):
    """Case inputs built when iterated, not when the case list is made: the
    AlexNet-sized cases would otherwise hold gigabytes from collection on."""

    def __init__(self, make, length):
        self._make, self._length = make, length

    def __len__(self):
        return self._length

    def __iter__(self):
        return iter(self._make())

    def __getitem__(self, i):
        return list(self._make())[i]


def shape_str(shape):
    return "x".join(str(s) for s in shape)


# --- launchers ------------------------------------------------------------------

def _unary(op, kernel, x, version):
    check_version(op, version)
    check_float32(op, "x", x)
    y = array_module(x).empty_like(x)
    if x.size:
        launch(kernel, x, grid_1d(x.size, x), BLOCK, (x, y, x.size))
    return y


def _binary(op, kernel, dy, y, version):
    check_version(op, version)
    check_float32(op, "dy", dy)
    check_float32(op, "y", y)
    check_same_shape(op, dy=dy, y=y)
    check_same_device(op, dy=dy, y=y)
    dx = array_module(dy).empty_like(dy)
    if dy.size:
        launch(kernel, dy, grid_1d(dy.size, dy), BLOCK, (dy, y, dx, dy.size))
    return dx


def relu_forward(x, *, version=None):
    """y = max(0, x), elementwise."""
    return _unary("relu_forward", "relu_fwd", x, version)


def relu_backward(dy, y, *, version=None):
    """dx = dy where y > 0, else 0."""
    return _binary("relu_backward", "relu_bwd", dy, y, version)


def tanh_forward(x, *, version=None):
    """y = tanh(x), elementwise."""
    return _unary("tanh_forward", "tanh_fwd", x, version)


def tanh_backward(dy, y, *, version=None):
    """dx = dy * (1 - y^2)."""
    return _binary("tanh_backward", "tanh_bwd", dy, y, version)


# --- checks against the reference -------------------------------------------------

def _cases_for(shape, scale, seed):
    from convnet import reference
    tag = shape_str(shape)

    def inputs_fwd():
        rng = np.random.default_rng(seed)
        return [randn(rng, shape)]

    def inputs_bwd(fwd):
        def make():
            rng = np.random.default_rng(seed)
            x = randn(rng, shape)
            dy = randn(rng, shape)
            # y rounded to float32 first so both sides see the same y
            return [dy, fwd(x.astype(np.float32)).astype(np.float64)]
        return make

    lazy = (lambda make, n: LazyInputs(make, n)) if scale == "alexnet" else (lambda make, n: list(make()))
    return [
        Case(f"relu_fwd {tag}", lazy(inputs_fwd, 1), reference.relu_forward, relu_forward,
             tol=0.0, kernels=("relu_fwd",), scale=scale),
        Case(f"relu_bwd {tag}", lazy(inputs_bwd(reference.relu_forward), 2), reference.relu_backward,
             relu_backward, tol=0.0, kernels=("relu_bwd",), scale=scale),
        Case(f"tanh_fwd {tag}", lazy(inputs_fwd, 1), reference.tanh_forward, tanh_forward,
             tol=1e-6, kernels=("tanh_fwd",), scale=scale),
        Case(f"tanh_bwd {tag}", lazy(inputs_bwd(reference.tanh_forward), 2), reference.tanh_backward,
             tanh_backward, tol=1e-6, kernels=("tanh_bwd",), scale=scale),
    ]


def cases(scale):
    """Checks of every kernel in activation.cu: "small" (odd shapes, emulation) or
    "alexnet" (every conv/fc output of AlexNet at batch 128, GPU)."""
    if scale == "small":
        shapes = [(3, 5, 13, 11), (3, 7), (1,)]
    elif scale == "alexnet":
        shapes = [(128, 96, 55, 55), (128, 256, 27, 27), (128, 384, 13, 13),
                  (128, 256, 13, 13), (128, 4096)]
    else:
        raise ValueError(f"unknown case scale {scale!r}: 'small' or 'alexnet'")
    out = []
    for i, shape in enumerate(shapes):
        out.extend(_cases_for(shape, scale, seed=100 + i))
    return out
