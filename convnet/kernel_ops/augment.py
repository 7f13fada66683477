"""Launcher for kernels/augment.cu: the paper's augmentation in one pass.

    augment_crop(images, mean, offsets, flips, light, crop, scale=1/255, *, out=None)
        images uint8 (N, S, S, C), mean float32 (S, S, C), offsets int32 (N, 2),
        flips int32 (N,), light float32 (N, C) -> float32 (N, C, crop, crop)

The same arguments and result as convnet.data.augment.augment_batch (the
spec; `augment_batch` here is the same launcher under the reference's name). NumPy arrays run on the CPU emulation, CuPy arrays on their GPU.
"""
import functools
from collections.abc import Sequence

import numpy as np

from convnet.checking import Case
from convnet.data import augment as aug
from convnet.kernel_ops._common import BLOCK, array_module, check_same_device, grid_1d, is_cupy, launch

SHIPPED = {  # op -> the kernel version it runs (the only one kept)
    "augment_crop": "v1",
}
KERNELS = {"v1": "augment_crop"}


def _check(name, a, dtype, shape):
    if not (isinstance(a, np.ndarray) or is_cupy(a)):
        raise TypeError(f"augment_crop: {name} must be a NumPy or CuPy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"augment_crop: {name} must be {np.dtype(dtype).name}, got {a.dtype}")
    if tuple(a.shape) != shape:
        raise ValueError(f"augment_crop: {name} has shape {tuple(a.shape)}, expected {shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"augment_crop: {name} must be C-contiguous")


def augment_crop(images, mean, offsets, flips, light, crop, scale=aug.SCALE, *, out=None, version=None):
    """Crop, flip, subtract the mean, add lighting, scale: see kernels/augment.cu."""
    version = version or SHIPPED["augment_crop"]
    if version not in KERNELS:
        raise ValueError(f"augment_crop: unknown kernel version {version!r}; kept: {', '.join(KERNELS)}")
    if getattr(images, "ndim", 0) != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"augment_crop: images must be (N, S, S, C), got {tuple(getattr(images, 'shape', ()))}")
    n, s, _, c = (int(v) for v in images.shape)
    if isinstance(crop, bool) or not isinstance(crop, (int, np.integer)) or not 1 <= crop <= s:
        raise ValueError(f"augment_crop: crop {crop!r} must be an int in [1, {s}]")
    crop = int(crop)
    _check("images", images, np.uint8, (n, s, s, c))
    _check("mean", mean, np.float32, (s, s, c))
    _check("offsets", offsets, np.int32, (n, 2))
    _check("flips", flips, np.int32, (n,))
    _check("light", light, np.float32, (n, c))
    check_same_device("augment_crop", images=images, mean=mean, offsets=offsets, flips=flips, light=light)
    gpu = is_cupy(images)
    if not gpu:                                  # the emulation would read out of bounds
        if n and (offsets.min() < 0 or offsets.max() > s - crop):
            raise ValueError(f"augment_crop: crop offsets must lie in [0, {s - crop}]")
    xp = array_module(images)
    if out is None:
        out = xp.empty((n, c, crop, crop), xp.float32)
    else:
        _check("out", out, np.float32, (n, c, crop, crop))
    total = n * c * crop * crop
    if total:
        launch(KERNELS[version], images, grid_1d(total, images), BLOCK,
               (images, mean, offsets, flips, light, out, n, s, c, crop, np.float32(scale)))
    return out


augment_batch = augment_crop     # the reference's name (convnet.data.augment.augment_batch)


def _make_inputs(seed, n, s, c, crop, random=True):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, s, s, c), dtype=np.uint8)
    mean = rng.uniform(0, 255, size=(s, s, c)).astype(np.float32).astype(np.float64)
    if random:
        vals = np.array([1000.0, 100.0, 10.0])[:c] if c == 3 else None
        pca = (vals, np.linalg.qr(rng.standard_normal((3, 3)))[0]) if c == 3 else None
        offsets, flips, light = aug.draw_params(rng, n, s, crop, c, pca=pca)
    else:
        offsets, flips, light = aug.center_params(n, s, crop, c)
    return [images, mean, offsets, flips, light.astype(np.float64), crop]


class _Lazy(Sequence):
    """Inputs made when a case runs, not when the case list is built (AlexNet sizes)."""

    def __init__(self, make):
        self._make = make

    def __len__(self):
        return 6

    def __iter__(self):
        return iter(self._make())

    def __getitem__(self, i):
        return self._make()[i]


def _ref(images, mean, offsets, flips, light, crop):
    return aug.augment_batch(images, mean.astype(np.float32), offsets, flips, light.astype(np.float32), crop)


def cases(scale):
    """Checks of augment_crop against the NumPy augmentation: "small" (odd
    shapes: 5 images, 3 and 1 channels, crops that leave a 1-pixel margin or
    none) or "alexnet" (128 x 256 x 256 x 3 -> 227)."""
    if scale == "small":
        shapes = [(5, 13, 3, 9, True), (3, 11, 1, 11, True), (2, 9, 3, 4, False), (1, 7, 3, 6, True)]
    elif scale == "alexnet":
        shapes = [(128, 256, 3, 227, True), (128, 256, 3, 227, False)]
    else:
        raise ValueError(f"unknown case scale {scale!r}: 'small' or 'alexnet'")
    out = []
    for i, (n, s, c, crop, random) in enumerate(shapes):
        kind = "random" if random else "centre"
        make = functools.partial(_make_inputs, 300 + i, n, s, c, crop, random)
        out.append(Case(f"augment_crop {n}x{s}x{s}x{c} -> {crop} {kind}",
                        _Lazy(make) if scale == "alexnet" else make(),
                        _ref, augment_crop, tol=1e-6, kernels=("augment_crop",), scale=scale))
    return out
