"""The paper's augmentation, NumPy version (the spec for kernels/augment.cu).

For image n of a batch, uint8 (N, S, S, C) in, float32 (N, C, crop, crop) out:

    out[n, c, y, x] = (img[n, oy + y, ox + x', c] - mean[oy + y, ox + x', c] + light[n, c]) * scale
    x' = crop - 1 - x if flip[n] else x

- (oy, ox): the crop's top-left corner, uniform in [0, S - crop] (random
  crops; centre crops use ((S - crop) // 2, (S - crop) // 2));
- flip[n]: horizontal reflection with probability 1/2;
- light[n] = 255 * P @ (alpha * lambda / 255^2) = P @ (alpha * lambda) / 255,
  alpha ~ N(0, sigma^2) per image per use, P (columns) and lambda the
  eigenvectors and eigenvalues of the 3 x 3 RGB covariance of the training
  pixel values in 0..255 units (PCA lighting). The paper's rule, "add
  alpha_i * lambda_i along p_i, alpha ~ N(0, 0.1^2)", is not unit-free
  (lambda is a squared pixel value): sigma = 0.1 is meant for pixel values
  in 0..1, where lambda is 255^2 times smaller, so the shift is worked out
  there and scaled back to 0..255 (a few levels for natural images; in
  0..255 units unscaled, sigma 0.1 would shift images by hundreds of levels);
- mean: the train split's mean image (S, S, C) cropped at the same place;
- scale = 1 / 255.

The random parameters are drawn on the host by `draw_params` from a NumPy
Generator seeded by (seed, epoch, batch index), so this function and the
kernel give the same batch for the same seed.
"""
from dataclasses import dataclass

import numpy as np

from convnet.data.errors import DataError

SCALE = np.float32(1.0 / 255.0)


@dataclass(frozen=True)
class Augment:
    """What the training loader does to each image.

    crop: output size; None -> 227 for 256-pixel images (the paper), else the
          image size (no cropping). flip: random horizontal reflections.
    lighting: sigma of the PCA lighting alphas (the paper: 0.1, for pixel values
          in 0..1; see the module docstring); 0 -> off; ignored for grey images.
    """
    crop: int = None
    flip: bool = True
    lighting: float = 0.1

    def crop_for(self, size):
        crop = self.crop if self.crop is not None else (227 if size == 256 else size)
        if not isinstance(crop, (int, np.integer)) or not 1 <= crop <= size:
            raise DataError(f"augment crop {crop!r}: must be an int between 1 and the image size {size}")
        return int(crop)


def batch_rng(seed, epoch, batch):
    """The Generator of one batch: independent streams per (seed, epoch, batch)."""
    return np.random.default_rng([int(seed), int(epoch), int(batch)])


def draw_params(rng, n, size, crop, channels, flip=True, lighting=0.1, pca=None):
    """Random crop offsets int32 (n, 2) [oy, ox], flips int32 (n,), light float32 (n, C)."""
    offsets = rng.integers(0, size - crop + 1, size=(n, 2), dtype=np.int64).astype(np.int32)
    flips = (rng.random(n) < 0.5).astype(np.int32) if flip else np.zeros(n, np.int32)
    light = np.zeros((n, channels), np.float32)
    if lighting and pca is not None and channels == 3:
        vals, vecs = pca
        alpha = rng.normal(0.0, lighting, size=(n, 3))
        light = (alpha * (np.asarray(vals, np.float64) / 255.0)) @ np.asarray(vecs, np.float64).T
        light = light.astype(np.float32)          # P (alpha * lambda_01) in 0..1, times 255
    return offsets, flips, light


def center_params(n, size, crop, channels):
    """The parameters of centre crops: no flip, no lighting."""
    o = (size - crop) // 2
    return (np.full((n, 2), o, np.int32), np.zeros(n, np.int32), np.zeros((n, channels), np.float32))


def check_batch(images, mean, offsets, flips, light, crop):
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise DataError(f"augment: images must be uint8 (N, S, S, C), got {images.dtype} {images.shape}")
    n, s, _, c = images.shape
    if tuple(mean.shape) != (s, s, c):
        raise DataError(f"augment: mean image shape {tuple(mean.shape)} != image shape {(s, s, c)}")
    if not 1 <= crop <= s:
        raise DataError(f"augment: crop {crop} not in [1, {s}]")
    if tuple(offsets.shape) != (n, 2) or tuple(flips.shape) != (n,) or tuple(light.shape) != (n, c):
        raise DataError(f"augment: parameter shapes {tuple(offsets.shape)}, {tuple(flips.shape)}, "
                        f"{tuple(light.shape)} do not fit {n} images of {c} channels")
    off = np.asarray(offsets.get() if hasattr(offsets, "get") else offsets)
    if off.size and (off.min() < 0 or off.max() > s - crop):
        raise DataError(f"augment: crop offsets must lie in [0, {s - crop}]")


def augment_batch(images, mean, offsets, flips, light, crop, scale=SCALE):
    """uint8 (N, S, S, C) -> float32 (N, C, crop, crop); see the module docstring."""
    images = np.asarray(images)
    check_batch(images, mean, offsets, flips, light, crop)
    n, s, _, c = images.shape
    mean_t = np.asarray(mean, np.float32).transpose(2, 0, 1)     # (C, S, S) views: one pass per image
    scale = np.float32(scale)
    light = np.asarray(light, np.float32)
    out = np.empty((n, c, crop, crop), np.float32)
    for i in range(n):
        oy, ox = int(offsets[i, 0]), int(offsets[i, 1])
        cols = slice(ox + crop - 1, ox - 1 if ox else None, -1) if flips[i] else slice(ox, ox + crop)
        img = images[i].transpose(2, 0, 1)[:, oy:oy + crop, cols]
        o = out[i]
        np.subtract(img, mean_t[:, oy:oy + crop, cols], out=o, dtype=np.float32)
        o += light[i][:, None, None]
        o *= scale
    return out


def normalize(images, mean, scale=SCALE):
    """uint8 (N, H, W, C) -> float32 (N, C, H, W): (image - mean) * scale, no crop."""
    v = np.asarray(images).astype(np.float32)
    v -= mean
    v *= np.float32(scale)
    return np.ascontiguousarray(v.transpose(0, 3, 1, 2))
