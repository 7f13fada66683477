"""Argument checks, grid sizing and case helpers shared by the launchers in
convnet/kernel_ops/, so that they read and fail alike."""
import math
from collections.abc import Sequence

import numpy as np

BLOCK = 256             # threads per block of the 1-D grid-stride kernels
MAX_BLOCKS_GPU = 8192   # grid-stride loops cover the rest
MAX_BLOCKS_EMU = 16     # the emulation runs one fiber per thread: few blocks, long loops
INT32_LIMIT = 2 ** 31 - 1


# --- shared argument checks ------------------------------------------------

def is_cupy(a):
    return type(a).__module__.split(".")[0] == "cupy"


def check_version(op, version, kept=("v1",)):
    """version None means the shipped one; anything else must be a kept version."""
    if version is not None and version not in kept:
        raise ValueError(f"{op}: unknown kernel version {version!r}; kept versions: {', '.join(kept)}")


def check_float32(op, name, a, ndim=None, contiguous=True):
    """a must be a float32 NumPy or CuPy array (of ndim dimensions; C-contiguous unless
    contiguous=False, where the launcher makes a contiguous copy itself), indexable in int32."""
    if not (isinstance(a, np.ndarray) or is_cupy(a)):
        raise TypeError(f"{op}: {name} must be a NumPy or CuPy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{op}: {name} must be float32 (the kernels run in float32), got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {tuple(a.shape)}")
    if contiguous and not a.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be C-contiguous (use ascontiguousarray)")
    if a.size > INT32_LIMIT:
        raise ValueError(f"{op}: {name} has {a.size} elements; the kernels index with int32 (< 2^31)")
    return a


def check_same_shape(op, **arrays):
    shapes = {name: tuple(a.shape) for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{n} {s}" for n, s in shapes.items())
        raise ValueError(f"{op}: {listed} must have the same shape")


def _where(a):
    if is_cupy(a):
        return ("GPU", a.device.id)
    emu = getattr(a, "_emu_id", None)
    return ("host", None) if emu is None else ("emulated device", emu)


def check_same_device(op, **arrays):
    """All on the host (NumPy: the emulation reads it), or all on one emulated device or GPU."""
    kinds = {name: _where(a) for name, a in arrays.items()}
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"{n} on {k[0]}" + (f" {k[1]}" if k[1] is not None else "")
                           for n, k in kinds.items())
        raise TypeError(f"{op}: arrays must all be on one device, got {listed}")


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
    """The module that allocates on like's device: cupy, convnet.backend.emu_xp, or numpy."""
    if is_cupy(like):
        import cupy
        return cupy
    if getattr(like, "_emu_id", None) is not None:
        from convnet.backend import emu_xp
        return emu_xp
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
