"""Every backward of the reference against central finite differences in float64,
on small odd shapes (batch 3, channels 5 or 6, 13x11, partial last pooling windows),
and proof that the same checker rejects deliberately wrong backwards.

Run with `pytest -s` to see the relative error of every tensor.
"""
import numpy as np
import pytest

from convnet import reference as R
from convnet.gradcheck import check_gradients


@pytest.fixture
def rng():
    return np.random.default_rng(2012)


def distinct(rng, shape, spacing=0.01):
    """Values with no ties (at least `spacing` apart), shuffled: max pooling is differentiable there."""
    return (rng.permutation(int(np.prod(shape))) * spacing - 5.0).reshape(shape)


def away_from_zero(rng, shape, margin=0.1):
    x = rng.standard_normal(shape)
    return np.sign(x) * (np.abs(x) + margin)


# --- convolution ----------------------------------------------------------

def conv_op(stride, pad, groups):
    forward = lambda x, w, b: R.conv2d_forward(x, w, b, stride, pad, groups)
    backward = lambda dy, y, x, w, b: {
        "x": R.conv2d_backward_data(dy, w, x.shape, stride, pad, groups),
        "w": R.conv2d_backward_filter(dy, x, w.shape, stride, pad, groups),
        "b": R.conv2d_backward_bias(dy),
    }
    return forward, backward


@pytest.mark.parametrize("c, f, k, stride, pad, groups", [
    (5, 3, (3, 3), 1, 0, 1),
    (6, 4, (3, 2), 2, 1, 2),
    (6, 6, (2, 4), 3, 2, 3),
    (5, 2, (5, 5), 4, 1, 1),
    (6, 3, (3, 1), (2, 3), (1, 2), 3),
])
def test_conv2d_gradients(rng, c, f, k, stride, pad, groups):
    x = rng.standard_normal((3, c, 13, 11))
    w = rng.standard_normal((f, c // groups) + k)
    b = rng.standard_normal(f)
    forward, backward = conv_op(stride, pad, groups)
    errs = check_gradients(forward, backward, {"x": x, "w": w, "b": b},
                           name=f"conv2d k{k} s{stride} p{pad} g{groups}")
    assert set(errs) == {"x", "w", "b"}


# --- fully connected ------------------------------------------------------

def test_fc_gradients(rng):
    check_gradients(
        lambda x, w, b: R.fc_forward(x, w, b),
        lambda dy, y, x, w, b: {"x": R.fc_backward_data(dy, w), "w": R.fc_backward_filter(dy, x),
                                "b": R.fc_backward_bias(dy)},
        {"x": rng.standard_normal((3, 7)), "w": rng.standard_normal((5, 7)), "b": rng.standard_normal(5)},
        name="fc 3x7 -> 3x5")


# --- LRN ------------------------------------------------------------------

@pytest.mark.parametrize("scale, params", [
    (10.0, {}),                                           # the paper's 5, 1e-4, 0.75, 2 on large inputs
    (1.0, dict(size=3, alpha=0.5, beta=0.6, k=1.0)),
    (2.0, dict(size=7, alpha=0.05, beta=1.0, k=1.5)),     # window wider than the 5 channels
])
def test_lrn_gradients(rng, scale, params):
    check_gradients(
        lambda x: R.lrn_forward(x, **params),
        lambda dy, y, x: {"x": R.lrn_backward(dy, x, y, **params)},
        {"x": scale * rng.standard_normal((3, 5, 13, 11))}, name=f"lrn {params or 'paper'}")


# --- pooling --------------------------------------------------------------

@pytest.mark.parametrize("h, w, size, stride", [(13, 11, 3, 2), (12, 10, 3, 2), (13, 11, 2, 2),
                                                (13, 11, 4, 3), (7, 6, 3, 1)])
def test_maxpool_gradients(rng, h, w, size, stride):
    check_gradients(
        lambda x: R.maxpool_forward(x, size, stride),
        lambda dy, y, x: {"x": R.maxpool_backward(dy, x, y, size, stride)},
        {"x": distinct(rng, (3, 5, h, w))}, name=f"maxpool {h}x{w} {size}/{stride}")


@pytest.mark.parametrize("h, w, size, stride", [(13, 11, 3, 2), (12, 10, 3, 2), (13, 11, 2, 2),
                                                (13, 11, 4, 3), (7, 6, 3, 1)])
def test_avgpool_gradients(rng, h, w, size, stride):
    check_gradients(
        lambda x: R.avgpool_forward(x, size, stride),
        lambda dy, y, x: {"x": R.avgpool_backward(dy, x.shape, size, stride)},
        {"x": rng.standard_normal((3, 5, h, w))}, name=f"avgpool {h}x{w} {size}/{stride}")


# --- activations, dropout, softmax cross-entropy --------------------------

def test_relu_gradients(rng):
    check_gradients(R.relu_forward, lambda dy, y, x: {"x": R.relu_backward(dy, y)},
                    {"x": away_from_zero(rng, (3, 5, 13, 11))}, name="relu")


def test_tanh_gradients(rng):
    check_gradients(R.tanh_forward, lambda dy, y, x: {"x": R.tanh_backward(dy, y)},
                    {"x": rng.standard_normal((3, 5, 13, 11))}, name="tanh")


@pytest.mark.parametrize("p", [0.5, 0.2, 0.0])
def test_dropout_gradients(rng, p):
    check_gradients(lambda x: R.dropout_forward(x, p, 77), lambda dy, y, x: {"x": R.dropout_backward(dy, p, 77)},
                    {"x": rng.standard_normal((3, 5, 13, 11))}, name=f"dropout p={p}")


def xent_op(labels, backward_of_probs=R.softmax_cross_entropy_backward):
    forward = lambda z: R.softmax_cross_entropy(z, labels)[0]
    backward = lambda dy, y, z: {"z": dy * backward_of_probs(R.softmax_forward(z), labels)}
    return forward, backward


def test_softmax_cross_entropy_gradients(rng):
    labels = np.array([4, 0, 2])
    forward, backward = xent_op(labels)
    check_gradients(forward, backward, {"z": 3 * rng.standard_normal((3, 5))}, name="softmax cross-entropy")


# --- the checker can fail -------------------------------------------------

def full_conv_backward_data(dy, w, pad):
    """Stride-1 backward-data as a full convolution of dy with w's in/out channels swapped.
    Right only when w is spatially flipped first (cross-correlation vs convolution)."""
    kh, kw = w.shape[2:]
    return R.conv2d_forward(dy, np.ascontiguousarray(w.transpose(1, 0, 2, 3)),
                            pad=(kh - 1 - pad, kw - 1 - pad))


def test_conv_backward_data_flipped_is_right_and_unflipped_is_caught(rng):
    x, w = rng.standard_normal((3, 5, 13, 11)), rng.standard_normal((4, 5, 3, 2))
    forward = lambda x: R.conv2d_forward(x, w, pad=1)
    # The same full convolution with the flipped filter is the right answer...
    flipped = lambda dy, y, x: {"x": full_conv_backward_data(dy, w[:, :, ::-1, ::-1], 1)}
    check_gradients(forward, flipped, {"x": x}, name="conv data, flipped filter")
    # ...and without the flip the checker rejects it.
    unflipped = lambda dy, y, x: {"x": full_conv_backward_data(dy, w, 1)}     # WRONG: no flip
    with pytest.raises(AssertionError, match="gradient of 'x' is wrong"):
        check_gradients(forward, unflipped, {"x": x}, name="WRONG conv data, unflipped filter")


def test_lrn_backward_without_cross_term_is_caught(rng):
    def direct_only(dy, y, x):
        d = 2.0 + 1e-4 * R._channel_window_sum(x * x, 5)     # WRONG: drops the cross term
        return {"x": dy * d ** -0.75}
    with pytest.raises(AssertionError, match="gradient of 'x' is wrong"):
        check_gradients(R.lrn_forward, direct_only, {"x": 10 * rng.standard_normal((3, 5, 13, 11))},
                        name="WRONG lrn, no cross term")


def maxpool_backward_last_max(dy, x, size, stride):
    """WRONG at ties: routes each window's gradient to its LAST maximal element (row-major)."""
    n, c, h, w = x.shape
    oh, ow = R.pool_output_size(h, size, stride), R.pool_output_size(w, size, stride)
    dx = np.zeros_like(x)
    for i in range(oh):
        for j in range(ow):
            win = x[:, :, i * stride:i * stride + size, j * stride:j * stride + size]
            flat = win.reshape(n, c, -1)
            last = flat.shape[2] - 1 - np.argmax(flat[:, :, ::-1], axis=2)
            r, s = np.unravel_index(last, win.shape[2:])
            nn, cc = np.indices((n, c))
            np.add.at(dx, (nn, cc, i * stride + r, j * stride + s), dy[:, :, i, j])
    return dx


def test_maxpool_tie_rule_first_maximum_right_last_maximum_caught(rng):
    # Ties are where "first" and "last" maximum differ, and the max is not differentiable
    # there. The first-maximum rule is the gradient of the tie broken in favour of the
    # earlier element: add a ramp that decreases in row-major order (row-major order in
    # a window is row-major order in the image), far below the gaps between values (1)
    # and far above eps. The forward sees x + ramp; the backward gets the tied x itself.
    x = rng.integers(0, 3, size=(3, 5, 13, 11)).astype(np.float64)     # many ties
    ramp = -1e-2 * np.arange(13 * 11).reshape(13, 11) / (13 * 11)
    forward = lambda x: R.maxpool_forward(x + ramp, 3, 2)
    first = lambda dy, y, x: {"x": R.maxpool_backward(dy, x, R.maxpool_forward(x, 3, 2), 3, 2)}
    check_gradients(forward, first, {"x": x}, name="maxpool ties, first maximum")
    last = lambda dy, y, x: {"x": maxpool_backward_last_max(dy, x, 3, 2)}
    with pytest.raises(AssertionError, match="gradient of 'x' is wrong"):
        check_gradients(forward, last, {"x": x}, name="WRONG maxpool ties, last maximum")
    # Without ties the two rules agree, so the helper itself routes correctly.
    check_gradients(lambda x: R.maxpool_forward(x, 3, 2),
                    lambda dy, y, x: {"x": maxpool_backward_last_max(dy, x, 3, 2)},
                    {"x": distinct(rng, (3, 5, 13, 11))}, name="maxpool last maximum, no ties")


def test_maxpool_overlap_overwritten_instead_of_added_is_caught(rng):
    x = distinct(rng, (3, 5, 13, 11))

    def overwrite(dy, y, x):     # WRONG: a later window overwrites an earlier one's gradient
        dx = np.zeros_like(x)
        for i in range(y.shape[2]):
            for j in range(y.shape[3]):
                win = x[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
                mask = win == y[:, :, i:i + 1, j:j + 1]
                part = dx[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
                part[mask] = np.broadcast_to(dy[:, :, i:i + 1, j:j + 1], win.shape)[mask]
        return {"x": dx}
    with pytest.raises(AssertionError, match="gradient of 'x' is wrong"):
        check_gradients(lambda x: R.maxpool_forward(x, 3, 2), overwrite, {"x": x},
                        name="WRONG maxpool, overlaps overwritten")


def test_softmax_gradient_without_1_over_n_is_caught(rng):
    labels = np.array([4, 0, 2])
    forward, _ = xent_op(labels)
    _, wrong = xent_op(labels, lambda p, l: p - np.eye(p.shape[1])[l])      # WRONG: no / N
    with pytest.raises(AssertionError, match="gradient of 'z' is wrong"):
        check_gradients(forward, wrong, {"z": 3 * rng.standard_normal((3, 5))},
                        name="WRONG softmax cross-entropy, no 1/N")


# --- the checker itself ---------------------------------------------------

def test_checker_reports_per_tensor_and_names_the_wrong_one(rng, capsys):
    x, w = rng.standard_normal((3, 7)), rng.standard_normal((5, 7))
    x_before, w_before = x.copy(), w.copy()
    errs = check_gradients(lambda x, w: R.fc_forward(x, w),
                           lambda dy, y, x, w: (R.fc_backward_data(dy, w), R.fc_backward_filter(dy, x)),
                           {"x": x, "w": w}, name="fc tuple")
    assert set(errs) == {"x", "w"} and max(errs.values()) < 1e-6
    out = capsys.readouterr().out
    assert "fc tuple: dx (3, 7) relative error" in out and "fc tuple: dw (5, 7)" in out
    np.testing.assert_array_equal(x, x_before)       # the caller's arrays are untouched
    np.testing.assert_array_equal(w, w_before)
    with pytest.raises(AssertionError, match="gradient of 'w' is wrong"):
        check_gradients(lambda x, w: R.fc_forward(x, w),
                        lambda dy, y, x, w: {"x": R.fc_backward_data(dy, w), "w": 2 * R.fc_backward_filter(dy, x)},
                        {"x": x, "w": w}, name="WRONG fc dw doubled")


def test_checker_subsets_large_tensors_and_checks_only_wrt(rng, capsys):
    x = rng.standard_normal((4, 300)).astype(np.float32)       # float32 in: checked in float64
    seen = []

    def forward(x, scale):
        seen.append(x.dtype)
        return np.tanh(x) * scale
    errs = check_gradients(forward, lambda dy, y, x, scale: {"x": dy * scale * (1 - np.tanh(x) ** 2)},
                           {"x": x, "scale": 3}, max_points=50, name="tanh*3")
    assert list(errs) == ["x"] and set(seen) == {np.dtype(np.float64)}
    assert len(seen) == 1 + 2 * 50
    assert "(50 of 1200 elements)" in capsys.readouterr().out


TANH = lambda x: np.tanh(x)


def test_checker_rejects_bad_calls(rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(ValueError, match="'y'"):
        check_gradients(TANH, lambda dy, y, x: {"x": dy}, {"x": x}, wrt=["y"])
    with pytest.raises(AssertionError, match="shape"):
        check_gradients(TANH, lambda dy, y, x: {"x": dy[:1]}, {"x": x})
    with pytest.raises(AssertionError, match="no gradient"):
        check_gradients(TANH, lambda dy, y, x: {}, {"x": x})
    with pytest.raises(TypeError, match="dict"):
        check_gradients(TANH, lambda dy, y, x: {}, [x])
