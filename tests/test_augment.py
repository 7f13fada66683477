"""The paper's augmentation: the NumPy version against plain loops, the random
parameters (determinism, ranges, lighting statistics), and the CUDA kernel
against the NumPy version on the CPU emulation (and on a GPU when present)."""
import numpy as np
import pytest

from convnet.data import augment as aug
from convnet.data import DataError

BACKENDS = ["emu", pytest.param("cuda", marks=pytest.mark.gpu)]


def loops(images, mean, offsets, flips, light, crop):
    """The formula of convnet/data/augment.py, one element at a time, in float64."""
    n, s, _, c = images.shape
    out = np.zeros((n, c, crop, crop))
    for i in range(n):
        oy, ox = offsets[i]
        for ch in range(c):
            for y in range(crop):
                for x in range(crop):
                    sx = ox + (crop - 1 - x if flips[i] else x)
                    out[i, ch, y, x] = (float(images[i, oy + y, sx, ch]) - float(mean[oy + y, sx, ch])
                                        + float(light[i, ch])) / 255.0
    return out


def batch(seed, n, s, c):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, s, s, c), dtype=np.uint8)
    mean = rng.uniform(0, 255, size=(s, s, c)).astype(np.float32)
    return rng, images, mean


PCA = (np.array([300.0, 30.0, 3.0], np.float32),
       np.linalg.qr(np.random.default_rng(9).standard_normal((3, 3)))[0].astype(np.float32))


@pytest.mark.parametrize("n,s,c,crop", [(5, 11, 3, 7), (3, 9, 1, 9), (2, 6, 3, 1)])
def test_numpy_matches_loops(n, s, c, crop):
    rng, images, mean = batch(1, n, s, c)
    offsets, flips, light = aug.draw_params(rng, n, s, crop, c, pca=PCA if c == 3 else None)
    flips[0] = 1                                       # both branches, whatever the draw
    flips[-1] = 0
    got = aug.augment_batch(images, mean, offsets, flips, light, crop)
    assert got.dtype == np.float32 and got.shape == (n, c, crop, crop)
    np.testing.assert_allclose(got, loops(images, mean, offsets, flips, light, crop), rtol=0, atol=2e-6)


def test_flip_is_a_reflection_of_the_same_crop():
    rng, images, mean = batch(2, 1, 10, 3)
    off = np.array([[1, 2]], np.int32)
    light = np.zeros((1, 3), np.float32)
    a = aug.augment_batch(images, mean, off, np.zeros(1, np.int32), light, 7)
    b = aug.augment_batch(images, mean, off, np.ones(1, np.int32), light, 7)
    assert np.array_equal(a[..., ::-1], b)
    assert not np.array_equal(a, b)


def test_params_are_deterministic_per_seed_epoch_batch():
    def draw(seed, epoch, b):
        return aug.draw_params(aug.batch_rng(seed, epoch, b), 16, 256, 227, 3, pca=PCA)
    same = [np.array_equal(x, y) for x, y in zip(draw(1, 2, 3), draw(1, 2, 3))]
    assert all(same)
    for other in (draw(2, 2, 3), draw(1, 3, 3), draw(1, 2, 4)):
        assert not np.array_equal(other[0], draw(1, 2, 3)[0])


def test_param_ranges_and_flip_rate():
    rng = np.random.default_rng(0)
    off, flips, light = aug.draw_params(rng, 20000, 256, 227, 3)
    assert off.dtype == np.int32 and flips.dtype == np.int32 and light.dtype == np.float32
    assert off.min() == 0 and off.max() == 29          # both ends of [0, S - crop] reached
    assert len(np.unique(off[:, 0])) == 30
    assert 0.48 < flips.mean() < 0.52
    assert not light.any()                             # no PCA given: no lighting
    off, flips, light = aug.draw_params(rng, 10, 256, 227, 3, flip=False, pca=PCA)
    assert not flips.any()


def test_lighting_statistics():
    """light = P (alpha * lambda) / 255, alpha ~ N(0, 0.1^2): covariance P diag((0.1 lambda / 255)^2) P^T
    (sigma for pixel values in 0..1; lambda in 0..255 units)."""
    rng = np.random.default_rng(3)
    _, _, light = aug.draw_params(rng, 200000, 8, 8, 3, lighting=0.1, pca=PCA)
    vals, vecs = PCA
    want = vecs.astype(np.float64) @ np.diag((0.1 * vals.astype(np.float64) / 255) ** 2) @ vecs.T
    got = np.cov(light.astype(np.float64), rowvar=False)
    np.testing.assert_allclose(got, want, atol=0.02 * want.max())
    assert abs(light.mean(axis=0)).max() < 0.01 * np.sqrt(want.max()) * 10


def test_center_params():
    off, flips, light = aug.center_params(4, 256, 227, 3)
    assert (off == 14).all() and not flips.any() and not light.any()


def test_bad_inputs():
    _, images, mean = batch(0, 2, 8, 3)
    off, flips, light = aug.center_params(2, 8, 5, 3)
    with pytest.raises(DataError, match="uint8"):
        aug.augment_batch(images.astype(np.float32), mean, off, flips, light, 5)
    with pytest.raises(DataError, match="mean image shape"):
        aug.augment_batch(images, mean[:4], off, flips, light, 5)
    with pytest.raises(DataError, match="crop"):
        aug.augment_batch(images, mean, off, flips, light, 9)
    with pytest.raises(DataError, match="offsets"):
        aug.augment_batch(images, mean, off + 4, flips, light, 5)
    with pytest.raises(DataError, match="crop"):
        aug.Augment(crop=300).crop_for(256)
    assert aug.Augment().crop_for(256) == 227 and aug.Augment().crop_for(32) == 32


# --- the kernel --------------------------------------------------------------

def _emulation_or_skip(backend):
    if backend == "emu":
        try:
            from convnet import kernels   # noqa: F401
            import convnet._emu           # noqa: F401
        except ImportError as e:
            pytest.skip(f"CPU emulation not built ({e}); run make emu")


def _on(backend, a):
    if backend == "cuda":
        import cupy
        return cupy.asarray(a)
    return a


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,s,c,crop", [(5, 13, 3, 9), (3, 7, 1, 7), (33, 6, 3, 5)])
def test_kernel_matches_numpy(backend, n, s, c, crop):
    _emulation_or_skip(backend)
    from convnet.kernel_ops import augment as ka
    rng, images, mean = batch(7, n, s, c)
    params = aug.draw_params(rng, n, s, crop, c, pca=PCA if c == 3 else None)
    params[1][:2] = [0, 1]
    want = aug.augment_batch(images, mean, *params, crop)
    got = ka.augment_crop(*(_on(backend, a) for a in (images, mean, *params)), crop)
    assert np.array_equal(_host(got), want)            # same float32 operations in the same order


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_loader_seed_gives_numpy_batch(backend):
    """The same (seed, epoch, batch) -> the same parameters -> the same batch on both paths."""
    _emulation_or_skip(backend)
    from convnet.kernel_ops import augment as ka
    _, images, mean = batch(8, 4, 12, 3)
    params = aug.draw_params(aug.batch_rng(5, 1, 0), 4, 12, 10, 3, pca=PCA)
    again = aug.draw_params(aug.batch_rng(5, 1, 0), 4, 12, 10, 3, pca=PCA)
    want = aug.augment_batch(images, mean, *again, 10)
    got = ka.augment_crop(*(_on(backend, a) for a in (images, mean, *params)), 10)
    assert np.array_equal(_host(got), want)


def test_kernel_argument_errors():
    from convnet.kernel_ops import augment as ka
    _, images, mean = batch(0, 2, 8, 3)
    off, flips, light = aug.center_params(2, 8, 5, 3)
    with pytest.raises(TypeError, match="mean must be float32"):
        ka.augment_crop(images, mean.astype(np.float64), off, flips, light, 5)
    with pytest.raises(ValueError, match="offsets has shape"):
        ka.augment_crop(images, mean, off[:1], flips, light, 5)
    with pytest.raises(ValueError, match="crop offsets"):
        ka.augment_crop(images, mean, off + 3, flips, light, 5)
    with pytest.raises(ValueError, match="crop 9"):
        ka.augment_crop(images, mean, off, flips, light, 9)
    with pytest.raises(ValueError, match="version"):
        ka.augment_crop(images, mean, off, flips, light, 5, version="v9")
