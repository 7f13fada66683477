"""The NumPy reference against the plain loops of tests/loops.py, on tiny odd shapes.

Batch 3, channels 5 (or 6 where groups divide them), 13x11 images, partial
last pooling windows, groups 1/2/3, stride 1..4, pad 0..2, non-square kernels;
float32 and float64. Also AlexNet's size facts, the Philox known answers,
dropout's mask, and the one-line errors for bad input.
"""
import numpy as np
import pytest

from convnet import reference as R
import loops

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def close(got, want, dtype):
    got = np.asarray(got)
    assert got.shape == np.shape(want), f"shape {got.shape} != {np.shape(want)}"
    scale = max(float(np.max(np.abs(want))), 1e-30) if np.size(want) else 1.0
    err = float(np.max(np.abs(got.astype(np.float64) - want))) / scale if np.size(want) else 0.0
    assert err <= TOL[dtype], f"relative error {err:.2e} > {TOL[dtype]:.0e}"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# --- convolution ----------------------------------------------------------

# (N, C, H, W), (F, KH, KW), stride, pad, groups
CONV_CASES = [
    ((3, 5, 13, 11), (3, 3, 3), 1, 0, 1),
    ((3, 5, 13, 11), (2, 5, 5), 4, 1, 1),
    ((3, 6, 13, 11), (4, 3, 2), 2, 1, 2),
    ((3, 6, 13, 11), (6, 2, 4), 3, 2, 3),
    ((2, 6, 13, 11), (3, 1, 3), (2, 3), (1, 2), 3),
    ((1, 4, 7, 9), (2, 7, 9), 1, 0, 2),         # kernel covers the whole image
    ((2, 2, 5, 4), (2, 3, 3), 2, (2, 0), 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, ws, stride, pad, groups", CONV_CASES)
def test_conv2d_forward_matches_loops(rng, dtype, xs, ws, stride, pad, groups):
    f, kh, kw = ws
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((f, xs[1] // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    y = R.conv2d_forward(x, w, b, stride=stride, pad=pad, groups=groups)
    assert y.dtype == dtype
    pair = lambda v: v if isinstance(v, tuple) else (v, v)
    close(y, loops.conv2d(x, w, b, pair(stride), pair(pad), groups), dtype)
    y0 = R.conv2d_forward(x, w, None, stride=stride, pad=pad, groups=groups)
    close(y0, loops.conv2d(x, w, None, pair(stride), pair(pad), groups), dtype)


def test_conv2d_backward_is_the_transpose_of_forward(rng):
    # <conv(x, w), dy> = <x, backward_data(dy, w)> = <w, backward_filter(dy, x)>: one bilinear form.
    x = rng.standard_normal((3, 6, 13, 11))
    w = rng.standard_normal((4, 3, 3, 2))
    y = R.conv2d_forward(x, w, stride=(2, 3), pad=(1, 2), groups=2)
    dy = rng.standard_normal(y.shape)
    dx = R.conv2d_backward_data(dy, w, x.shape, (2, 3), (1, 2), 2)
    dw = R.conv2d_backward_filter(dy, x, w.shape, (2, 3), (1, 2), 2)
    lhs = float(np.sum(y * dy))
    assert abs(lhs - float(np.sum(x * dx))) < 1e-9 * max(1.0, abs(lhs))
    assert abs(lhs - float(np.sum(w * dw))) < 1e-9 * max(1.0, abs(lhs))
    np.testing.assert_allclose(R.conv2d_backward_bias(dy), dy.sum(axis=(0, 2, 3)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_backward_keeps_dtype(rng, dtype):
    x = rng.standard_normal((3, 5, 13, 11)).astype(dtype)
    w = rng.standard_normal((3, 5, 3, 4)).astype(dtype)
    y = R.conv2d_forward(x, w, stride=2, pad=1)
    assert R.conv2d_backward_data(y, w, x.shape, 2, 1).dtype == dtype
    assert R.conv2d_backward_filter(y, x, w.shape, 2, 1).dtype == dtype
    assert R.conv2d_backward_bias(y).dtype == dtype


# --- fully connected ------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_fc_matches_loops(rng, dtype):
    x = rng.standard_normal((3, 7)).astype(dtype)
    w = rng.standard_normal((5, 7)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    y = R.fc_forward(x, w, b)
    assert y.dtype == dtype
    close(y, loops.fc(x, w, b), dtype)
    close(R.fc_forward(x, w), loops.fc(x, w), dtype)
    dy = rng.standard_normal((3, 5)).astype(dtype)
    for got in (R.fc_backward_data(dy, w), R.fc_backward_filter(dy, x), R.fc_backward_bias(dy)):
        assert got.dtype == dtype
    close(R.fc_backward_data(dy, w), loops.fc(dy, w.T), dtype)          # dx = dy @ w
    close(R.fc_backward_filter(dy, x), loops.fc(dy.T, x.T), dtype)      # dw = dy.T @ x


# --- LRN ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, params", [
    ((3, 5, 13, 11), {}),                                             # the paper's 5, 1e-4, 0.75, 2
    ((3, 7, 4, 5), dict(size=3, alpha=0.1, beta=0.5, k=1.0)),
    ((2, 2, 3, 3), dict(size=5, alpha=0.3, beta=0.75, k=2.0)),       # fewer channels than the window
    ((2, 6, 3, 2), dict(size=1, alpha=0.5, beta=1.0, k=1.0)),
])
def test_lrn_forward_matches_loops(rng, dtype, shape, params):
    x = (10 * rng.standard_normal(shape)).astype(dtype)   # large enough for alpha to matter
    y = R.lrn_forward(x, **params)
    assert y.dtype == dtype
    close(y, loops.lrn(x, **params), dtype)
    assert R.lrn_backward(y, x, y, **params).dtype == dtype


def test_lrn_uses_alpha_on_the_plain_sum():
    # One nonzero channel, a = 10: b = 10 / (2 + 1e-4 * 100) ** 0.75 (not alpha/size).
    x = np.zeros((1, 5, 1, 1))
    x[0, 2] = 10.0
    y = R.lrn_forward(x)
    assert y[0, 2, 0, 0] == pytest.approx(10.0 / (2.0 + 1e-4 * 100.0) ** 0.75, rel=1e-14)


# --- pooling --------------------------------------------------------------

POOL_CASES = [(13, 11, 3, 2), (12, 10, 3, 2), (13, 11, 2, 2), (13, 11, 3, 3),
              (13, 11, 4, 3), (13, 11, 3, 1), (5, 6, 5, 4), (7, 8, 1, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h, w, size, stride", POOL_CASES)
def test_pool_forward_matches_loops(rng, dtype, h, w, size, stride):
    x = rng.standard_normal((3, 5, h, w)).astype(dtype)
    ym, ya = R.maxpool_forward(x, size, stride), R.avgpool_forward(x, size, stride)
    assert ym.dtype == dtype and ya.dtype == dtype
    close(ym, loops.maxpool(x, size, stride), dtype)
    close(ya, loops.avgpool(x, size, stride), dtype)
    dx = R.maxpool_backward(ym, x, ym, size, stride)
    assert dx.dtype == dtype and dx.shape == x.shape
    dx = R.avgpool_backward(ya, x.shape, size, stride)
    assert dx.dtype == dtype and dx.shape == x.shape


def test_pool_output_size():
    assert [R.pool_output_size(n, 3, 2) for n in (3, 4, 5, 6, 12, 13)] == [1, 2, 2, 3, 6, 6]
    assert R.pool_output_size(13, 2, 2) == 7          # the 7th window holds one row only
    for n in range(1, 30):
        for size in range(1, n + 1):
            for stride in range(1, n + 2):
                assert R.pool_output_size(n, size, stride) == loops.pool_size(n, size, stride)
    with pytest.raises(ValueError, match="larger than the input"):
        R.pool_output_size(2, 3, 2)
    # stride > size: a last window that would start outside the input is dropped
    # (PyTorch's ceil mode): windows at 0 and 3 of a 5-long row, none at 6
    assert R.pool_output_size(5, 1, 3) == 2 and R.pool_output_size(7, 2, 3) == 3


def test_maxpool_ties_go_to_the_first_maximum_and_overlaps_add():
    # Constant input: every element of every window ties; each window's gradient
    # goes to its top-left element (row-major first), even rows and columns here.
    x = np.zeros((1, 1, 7, 6))
    y = R.maxpool_forward(x, 3, 2)
    dy = np.arange(1.0, 1.0 + y.size).reshape(y.shape)
    dx = R.maxpool_backward(dy, x, y, 3, 2)
    want = np.zeros_like(x)
    want[0, 0, 0:6:2, 0:6:2] = dy[0, 0]
    np.testing.assert_array_equal(dx, want)
    # One large element shared by four overlapping windows receives all four gradients.
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0
    dy = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    dx = R.maxpool_backward(dy, x, R.maxpool_forward(x, 3, 2), 3, 2)
    assert dx[0, 0, 2, 2] == 10.0 and dx.sum() == 10.0


def test_avgpool_divides_by_the_in_image_count():
    x = np.ones((1, 1, 4, 4))
    y = R.avgpool_forward(x, 3, 2)                 # windows rows 0-2, 2-3 (clipped)
    np.testing.assert_array_equal(y, np.ones((1, 1, 2, 2)))
    dx = R.avgpool_backward(np.ones((1, 1, 2, 2)), x.shape, 3, 2)
    # Row/col 2 sits in both windows; row/col 3 only in the clipped one (2 elements).
    w1 = np.array([1 / 3, 1 / 3, 1 / 3 + 1 / 2, 1 / 2])
    np.testing.assert_allclose(dx[0, 0], np.outer(w1, w1))


# --- activations ----------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_match_loops(rng, dtype):
    x = rng.standard_normal((3, 5, 4, 3)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y = R.relu_forward(x)
    close(y, loops.relu(x), dtype)
    dx = R.relu_backward(dy, y)
    assert y.dtype == dtype and dx.dtype == dtype
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, 0))
    y = R.tanh_forward(x)
    close(y, loops.tanh(x), dtype)
    dx = R.tanh_backward(dy, y)
    assert y.dtype == dtype and dx.dtype == dtype
    close(dx, dy.astype(np.float64) * (1 - np.tanh(x.astype(np.float64)) ** 2), dtype)


# --- softmax, cross-entropy, top-k ----------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_and_cross_entropy_match_loops(rng, dtype):
    z = (3 * rng.standard_normal((7, 5))).astype(dtype)
    labels = rng.integers(0, 5, size=7).astype(np.int32)
    p = R.softmax_forward(z)
    assert p.dtype == dtype
    close(p, loops.softmax(z), dtype)
    loss, probs = R.softmax_cross_entropy(z, labels)
    assert probs.dtype == dtype and np.asarray(loss).dtype == dtype
    close(probs, loops.softmax(z), dtype)
    assert float(loss) == pytest.approx(loops.cross_entropy(z, labels), rel=TOL[dtype])
    d = R.softmax_cross_entropy_backward(probs, labels)
    assert d.dtype == dtype
    onehot = np.eye(5)[labels]
    close(d, (loops.softmax(z) - onehot) / 7, dtype)


def test_softmax_is_stable_for_huge_logits():
    z = np.array([[1000.0, 0.0, -1000.0], [-5e4, -5e4, -5e4]])
    p = R.softmax_forward(z)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-15)
    loss, _ = R.softmax_cross_entropy(z, np.array([2, 0]))
    assert float(loss) == pytest.approx((2000.0 + np.log(3)) / 2)


def test_topk_errors_matches_loops(rng):
    z = rng.integers(0, 4, size=(40, 6)).astype(np.float64)   # many ties on purpose
    labels = rng.integers(0, 6, size=40)
    for k in (1, 2, 5, 6):
        assert R.topk_errors(z, labels, k) == loops.topk_errors(z, labels, k)
    # A tie with the label's score is not "strictly larger": not an error.
    assert R.topk_errors(np.array([[1.0, 1.0, 0.0]]), np.array([1]), 1) == 0
    assert R.topk_errors(np.array([[2.0, 1.0, 0.0]]), np.array([2]), 2) == 1
    assert R.topk_errors(np.array([[2.0, 1.0, 0.0]]), np.array([2]), 3) == 0
    assert isinstance(R.topk_errors(z, labels, 1), int)


# --- SGD ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_update_matches_loops_in_place(rng, dtype):
    w, dw, v = (rng.standard_normal((5, 3)).astype(dtype) for _ in range(3))
    want_w, want_v = loops.sgd(w, dw, v, lr=0.01, momentum=0.9, weight_decay=0.0005)
    w_id, v_id = id(w), id(v)
    assert R.sgd_update(w, dw, v, 0.01) is None
    assert id(w) == w_id and id(v) == v_id and w.dtype == dtype and v.dtype == dtype
    close(v, want_v, dtype)
    close(w, want_w, dtype)
    want_w, want_v = loops.sgd(w, dw, v, lr=0.1, momentum=0.5, weight_decay=0.004)
    R.sgd_update(w, dw, v, 0.1, momentum=0.5, weight_decay=0.004)
    close(v, want_v, dtype)
    close(w, want_w, dtype)


# --- Philox and dropout ---------------------------------------------------

def test_philox_known_answers():
    # Random123's kat_vectors for philox4x32 10 (counter, key -> output).
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]
    for counter, key, want in cases:
        assert loops.philox(counter, key) == want
        got = R.philox4x32_10(np.array(counter, dtype=np.uint32), np.array(key, dtype=np.uint32))
        assert got.dtype == np.uint32
        assert tuple(int(v) for v in got) == want


def test_philox_vectorized_matches_scalar(rng):
    counters = rng.integers(0, 2 ** 32, size=(4, 3, 4), dtype=np.uint64).astype(np.uint32)
    keys = rng.integers(0, 2 ** 32, size=(3, 2), dtype=np.uint64).astype(np.uint32)
    got = R.philox4x32_10(counters, keys)          # keys broadcast over the first axis
    assert got.shape == (4, 3, 4)
    for i in range(4):
        for j in range(3):
            want = loops.philox(tuple(int(v) for v in counters[i, j]), tuple(int(v) for v in keys[j]))
            assert tuple(int(v) for v in got[i, j]) == want


def test_dropout_threshold():
    assert R.dropout_threshold(0) == 0
    assert R.dropout_threshold(0.5) == 2 ** 31
    assert R.dropout_threshold(0.25) == 2 ** 30
    assert R.dropout_threshold(1 - 2 ** -40) == 2 ** 32 - 1
    assert isinstance(R.dropout_threshold(0.5), np.uint32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p, seed", [(0.5, 7), (0.3, 2 ** 40 + 5), (0.0, 1)])
def test_dropout_matches_loops(rng, dtype, p, seed):
    x = rng.standard_normal((3, 5, 2, 3)).astype(dtype)
    y = R.dropout_forward(x, p, seed)
    assert y.dtype == dtype
    close(y, loops.dropout(x, p, seed), dtype)
    close(R.dropout_backward(x, p, seed), loops.dropout(x, p, seed), dtype)


def test_dropout_mask_statistics_and_seeds():
    m = R.dropout_mask((64, 1000), 0.5, 3)
    assert m.dtype == bool and m.shape == (64, 1000)
    assert abs(m.mean() - 0.5) < 0.01                    # 64000 draws: sd 0.002
    assert abs(R.dropout_mask((64000,), 0.2, 3).mean() - 0.8) < 0.01
    assert R.dropout_mask((50,), 0.0, 3).all()
    assert (R.dropout_mask((100,), 0.5, 3) != R.dropout_mask((100,), 0.5, 4)).any()
    # The key's high word is used: seeds equal mod 2^32 give different masks.
    assert (R.dropout_mask((100,), 0.5, 3) != R.dropout_mask((100,), 0.5, 3 + 2 ** 32)).any()
    # The mask depends on the flat index only, not on the shape.
    np.testing.assert_array_equal(R.dropout_mask((6, 10), 0.5, 9).reshape(-1),
                                  R.dropout_mask((60,), 0.5, 9))
    x = np.ones((4, 8))
    y = R.dropout_forward(x, 0.75, 11)
    assert set(np.unique(y)) <= {0.0, 4.0}


# --- AlexNet's size facts -------------------------------------------------

def test_alexnet_sizes():
    assert R.conv_output_size(227, 11, 4, 0) == 55
    assert R.conv_output_size(224, 11, 4, 2) == 55
    assert [R.pool_output_size(n, 3, 2) for n in (55, 27, 13)] == [27, 13, 6]
    assert R.conv_output_size(27, 5, 1, 2) == 27
    assert R.conv_output_size(13, 3, 1, 1) == 13
    # Layer shapes through the reference itself (batch 1, few filters, real channel counts).
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 227, 227)).astype(np.float32)
    y = R.conv2d_forward(x, rng.standard_normal((2, 3, 11, 11)).astype(np.float32), stride=4)
    assert y.shape == (1, 2, 55, 55)
    assert R.maxpool_forward(y, 3, 2).shape == (1, 2, 27, 27)
    y = R.conv2d_forward(np.zeros((1, 96, 27, 27), np.float32), np.zeros((4, 48, 5, 5), np.float32),
                         pad=2, groups=2)
    assert y.shape == (1, 4, 27, 27)
    y = R.conv2d_forward(np.zeros((1, 256, 13, 13), np.float32), np.zeros((2, 256, 3, 3), np.float32), pad=1)
    assert y.shape == (1, 2, 13, 13)                                  # conv3 sees both columns
    y = R.conv2d_forward(np.zeros((1, 384, 13, 13), np.float32), np.zeros((4, 192, 3, 3), np.float32),
                         pad=1, groups=2)
    assert y.shape == (1, 4, 13, 13)                                  # conv4, conv5 per column
    assert R.maxpool_forward(np.zeros((1, 2, 13, 13)), 3, 2).shape == (1, 2, 6, 6)
    assert R.fc_forward(np.zeros((2, 256 * 6 * 6)), np.zeros((3, 9216))).shape == (2, 3)


def test_outputs_are_new_c_contiguous_arrays(rng):
    x = rng.standard_normal((3, 5, 13, 11))
    w = rng.standard_normal((4, 5, 3, 2))
    y = R.conv2d_forward(x, w, stride=2, pad=2)
    pooled = R.maxpool_forward(x, 3, 2)
    z = rng.standard_normal((3, 5))
    outs = [y, R.conv2d_backward_data(y, w, x.shape, 2, 2), R.conv2d_backward_filter(y, x, w.shape, 2, 2),
            R.conv2d_backward_bias(y), pooled, R.maxpool_backward(pooled, x, pooled, 3, 2),
            R.avgpool_forward(x, 3, 2), R.avgpool_backward(pooled, x.shape, 3, 2),
            R.lrn_forward(x), R.lrn_backward(x, x, x), R.relu_forward(x), R.relu_backward(x, x),
            R.tanh_forward(x), R.tanh_backward(x, x), R.dropout_forward(x, 0.5, 1),
            R.fc_forward(z, z), R.fc_backward_data(z, z.T), R.fc_backward_filter(z, z), R.fc_backward_bias(z),
            R.softmax_forward(z), R.softmax_cross_entropy(z, np.array([0, 1, 2]))[1],
            R.softmax_cross_entropy_backward(R.softmax_forward(z), np.array([0, 1, 2]))]
    for i, out in enumerate(outs):
        assert out.flags.c_contiguous, f"output {i} is not C-contiguous"
        assert not np.shares_memory(out, x) and not np.shares_memory(out, z), f"output {i} aliases an input"


# --- bad input: one clear line each ---------------------------------------

def test_errors_name_what_is_wrong():
    x = np.zeros((2, 5, 8, 8))
    cases = [
        (lambda: R.conv2d_forward(x, np.zeros((4, 2, 3, 3)), groups=2), ValueError, "not divisible by groups"),
        (lambda: R.conv2d_forward(np.zeros((2, 6, 8, 8)), np.zeros((3, 3, 3, 3)), groups=2), ValueError,
         "filters 3 are not divisible"),
        (lambda: R.conv2d_forward(x, np.zeros((4, 4, 3, 3))), ValueError, "input channels"),
        (lambda: R.conv2d_forward(x, np.zeros((4, 5, 11, 3)), pad=1), ValueError, "larger than the padded input"),
        (lambda: R.conv2d_forward(x, np.zeros((4, 5, 3, 3)), np.zeros(3)), ValueError, "bias"),
        (lambda: R.conv2d_forward(x, np.zeros((4, 5, 3, 3)), stride=0), ValueError, "stride"),
        (lambda: R.conv2d_forward(x, np.zeros((4, 5, 3, 3)), pad=-1), ValueError, "pad"),
        (lambda: R.conv2d_forward(x, np.zeros((4, 5, 3, 3)), stride=(1, 2, 3)), ValueError, "pair"),
        (lambda: R.conv2d_forward(x[0], np.zeros((4, 5, 3, 3))), ValueError, "4 dimensions"),
        (lambda: R.conv2d_forward(x.astype(int), np.zeros((4, 5, 3, 3))), TypeError, "floating"),
        (lambda: R.conv2d_backward_data(np.zeros((2, 4, 5, 5)), np.zeros((4, 5, 3, 3)), x.shape), ValueError,
         "dy has shape"),
        (lambda: R.conv2d_backward_filter(np.zeros((2, 4, 6, 6)), x, (4, 5, 3)), ValueError, "w_shape"),
        (lambda: R.fc_forward(np.zeros((2, 7)), np.zeros((3, 6))), ValueError, "features"),
        (lambda: R.fc_forward(x, np.zeros((3, 320))), ValueError, "reshape"),
        (lambda: R.maxpool_forward(np.zeros((1, 1, 2, 5)), 3, 2), ValueError, "larger than the input"),
        (lambda: R.maxpool_backward(np.zeros((2, 5, 3, 3)), x, np.zeros((2, 5, 3, 3)), 3, 2), ValueError,
         "pooled shape"),
        (lambda: R.lrn_forward(x, size=0), ValueError, "size"),
        (lambda: R.lrn_backward(x, x, x[:1]), ValueError, "same shape"),
        (lambda: R.relu_backward(np.zeros(3), np.zeros(4)), ValueError, "same shape"),
        (lambda: R.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3])), ValueError, r"labels must lie in \[0, 3\)"),
        (lambda: R.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, -1])), ValueError, "labels"),
        (lambda: R.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2])), ValueError, r"shape \(2,\)"),
        (lambda: R.softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0])), TypeError, "integer"),
        (lambda: R.topk_errors(np.zeros((2, 3)), np.array([0, 5]), 1), ValueError, "labels"),
        (lambda: R.topk_errors(np.zeros((2, 3)), np.array([0, 1]), 0), ValueError, "k must be"),
        (lambda: R.dropout_forward(x, 1.0, 1), ValueError, r"\[0, 1\)"),
        (lambda: R.dropout_forward(x, -0.1, 1), ValueError, r"\[0, 1\)"),
        (lambda: R.dropout_forward(x, 0.5, -1), ValueError, "seed"),
        (lambda: R.dropout_forward(x, 0.5, 1.5), TypeError, "seed"),
        (lambda: R.philox4x32_10(np.zeros(3, np.uint32), np.zeros(2, np.uint32)), ValueError, "counter"),
        (lambda: R.philox4x32_10(np.zeros(4, np.uint32), np.zeros(4, np.uint32)), ValueError, "key"),
        (lambda: R.sgd_update(np.zeros(3), np.zeros(4), np.zeros(3), 0.1), ValueError, "same shape"),
        (lambda: R.sgd_update([0.0], np.zeros(1), np.zeros(1), 0.1), TypeError, "in place"),
    ]
    for call, exc, pattern in cases:
        with pytest.raises(exc, match=pattern) as info:
            call()
        assert "\n" not in str(info.value)
