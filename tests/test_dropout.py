"""Dropout kernels: the mask bit for bit equal to the reference's Philox mask,
backward reusing forward's mask, p = 0 the identity, the counter split at 2^32,
and bad inputs. The table of cases (tests/test_kernels.py) covers values."""
import numpy as np
import pytest

from convnet import reference
from convnet.kernel_ops import dropout as kd

BACKENDS = ["emu", pytest.param("cuda", marks=pytest.mark.gpu)]


def on(backend, a):
    if backend == "cuda":
        import cupy
        return cupy.asarray(a)
    return a


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,p,seed", [((3, 5, 13, 11), 0.5, 0), ((3, 37), 0.3, 12345),
                                          ((7, 1, 3), 0.9, 2 ** 32 + 3), ((1000,), 0.5, 2 ** 64 - 1),
                                          ((2, 5), 1e-9, 77)])
def test_mask_equals_reference_exactly(backend, shape, p, seed):
    like = on(backend, np.zeros(1, np.float32))
    got = host(kd.dropout_mask(shape, p, seed, like=like))
    want = reference.dropout_mask(shape, p, seed)
    assert got.dtype == bool and got.shape == want.shape
    assert np.array_equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.5, 0.3])
def test_forward_keeps_the_mask_and_scales(backend, p):
    shape, seed = (3, 7, 5, 3), 99
    x = np.ones(shape, np.float32)
    y = host(kd.dropout_forward(on(backend, x), p, seed))
    mask = reference.dropout_mask(shape, p, seed)
    assert np.array_equal(y != 0, mask)
    assert np.all(y[mask] == np.float32(1.0 / (1.0 - p)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_uses_forwards_mask(backend):
    rng = np.random.default_rng(0)
    shape, p, seed = (3, 37), 0.5, 4242
    x = rng.standard_normal(shape).astype(np.float32) + 5.0        # never zero
    dy = rng.standard_normal(shape).astype(np.float32) + 5.0
    y = host(kd.dropout_forward(on(backend, x), p, seed))
    dx = host(kd.dropout_backward(on(backend, dy), p, seed))
    assert np.array_equal(y != 0, dx != 0)
    scale = np.float32(1.0 / (1.0 - p))
    assert np.array_equal(dx, np.where(y != 0, dy * scale, np.float32(0)))
    # a different seed gives a different mask
    other = host(kd.dropout_backward(on(backend, dy), p, seed + 1))
    assert not np.array_equal(other != 0, dx != 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_p_zero_is_the_identity(backend):
    x = np.random.default_rng(1).standard_normal((5, 13)).astype(np.float32)
    assert np.array_equal(host(kd.dropout_forward(on(backend, x), 0.0, 7)), x)
    assert np.array_equal(host(kd.dropout_backward(on(backend, x), 0, 7)), x)


def test_kept_fraction_is_one_minus_p():
    n = 20000
    for p in (0.5, 0.3):
        kept = kd.dropout_mask((n,), p, 5, like="emu").mean()
        sigma = np.sqrt(p * (1 - p) / n)
        assert abs(kept - (1 - p)) < 5 * sigma, (p, kept)


@pytest.mark.parametrize("offset", [2 ** 32 - 40, 2 ** 33 + 5, 2 ** 64 - 80])
def test_counter_split_above_2_to_32(offset):
    """Element indices across and beyond 2^32 put their high word in counter word 1."""
    n, p, seed = 80, 0.5, 2 ** 40 + 17
    got = kd.dropout_mask((n,), p, seed, like="emu", offset=offset)
    i = np.arange(n, dtype=np.uint64) + np.uint64(offset)
    zero = np.zeros_like(i)
    counter = np.stack([i & np.uint64(0xFFFFFFFF), i >> np.uint64(32), zero, zero], axis=-1)
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint64)
    want = reference.philox4x32_10(counter, key)[:, 0] >= reference.dropout_threshold(p)
    assert np.array_equal(got, want)
    # and the high word matters: dropping it changes the mask
    counter[:, 1] = 0
    lowonly = reference.philox4x32_10(counter, key)[:, 0] >= reference.dropout_threshold(p)
    assert not np.array_equal(got, lowonly)


def test_offset_zero_matches_forward_on_the_same_elements():
    mask = kd.dropout_mask((4, 9), 0.5, 3, like="emu")
    tail = kd.dropout_mask((20,), 0.5, 3, like="emu", offset=16)
    assert np.array_equal(mask.ravel()[16:], tail)


def test_bad_inputs():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="probability"):
        kd.dropout_forward(x, 1.0, 0)
    with pytest.raises(ValueError, match="probability"):
        kd.dropout_forward(x, -0.1, 0)
    with pytest.raises(TypeError, match="seed"):
        kd.dropout_forward(x, 0.5, 1.5)
    with pytest.raises(ValueError, match="seed"):
        kd.dropout_backward(x, 0.5, -1)
    with pytest.raises(ValueError, match="seed"):
        kd.dropout_forward(x, 0.5, 2 ** 64)
    with pytest.raises(TypeError, match="float32"):
        kd.dropout_forward(x.astype(np.float64), 0.5, 0)
    with pytest.raises(ValueError, match="C-contiguous"):
        kd.dropout_forward(np.ones((4, 3), np.float32).T, 0.5, 0)
    with pytest.raises(TypeError, match="NumPy or CuPy"):
        kd.dropout_forward([1.0, 2.0], 0.5, 0)
    with pytest.raises(ValueError, match="offset"):
        kd.dropout_mask((10,), 0.5, 0, like="emu", offset=2 ** 64 - 5)
    with pytest.raises(ValueError, match="like"):
        kd.dropout_mask((10,), 0.5, 0, like="gpu")


def test_empty_tensor():
    assert kd.dropout_forward(np.ones((0, 3), np.float32), 0.5, 1).shape == (0, 3)
