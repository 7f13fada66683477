"""Test-time views: centre crops, or the paper's ten crops.

eval_views(images, crop, mode, mean) -> float32 (V, N, C, crop, crop):
- "center": V = 1, the central crop;
- "ten": V = 10: the four corners (top-left, top-right, bottom-left,
  bottom-right), the centre, then the same five reflected horizontally.
Each view is normalised like the loader: (crop of image - same crop of mean) / 255.
The evaluator averages the softmax outputs over V.
"""
import numpy as np

from convnet.data import augment as aug
from convnet.data.errors import DataError

MODES = ("center", "ten")


def view_offsets(size, crop, mode):
    """[(oy, ox, flip)] of every view, in output order."""
    if mode not in MODES:
        raise DataError(f"views mode {mode!r}: choose one of {', '.join(MODES)}")
    if not 1 <= crop <= size:
        raise DataError(f"views crop {crop}: must lie in [1, {size}]")
    c = (size - crop) // 2
    if mode == "center":
        return [(c, c, 0)]
    e = size - crop
    five = [(0, 0), (0, e), (e, 0), (e, e), (c, c)]
    return [(y, x, 0) for y, x in five] + [(y, x, 1) for y, x in five]


def eval_views(images, crop, mode="center", mean=None):
    """uint8 (N, S, S, C) -> float32 (V, N, C, crop, crop); see the module docstring."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise DataError(f"eval_views: images must be uint8 (N, S, S, C), got {images.dtype} {images.shape}")
    n, s, _, c = images.shape
    if isinstance(crop, bool) or not isinstance(crop, (int, np.integer)):
        raise DataError(f"eval_views crop {crop!r}: must be an int")
    if mean is None:
        raise DataError("eval_views: mean image required (the dataset's .mean)")
    mean = np.asarray(mean, np.float32)
    if mean.shape != (s, s, c):
        raise DataError(f"eval_views: mean shape {mean.shape} != image shape {(s, s, c)}")
    views = view_offsets(s, int(crop), mode)
    out = np.empty((len(views), n, c, crop, crop), np.float32)
    light = np.zeros((n, c), np.float32)
    for v, (oy, ox, flip) in enumerate(views):
        out[v] = aug.augment_batch(images, mean, np.tile(np.int32([oy, ox]), (n, 1)),
                                   np.full(n, flip, np.int32), light, int(crop))
    return out
