"""Every layer type: backward against central finite differences in float64 (NumPy backend),
forward against the reference ops, shape rules, and one-line errors for bad specs."""
import numpy as np
import pytest

from convnet import reference as R
from convnet.gradcheck import check_gradients
from convnet.layers import LAYER_TYPES, Param, make_layer


def rand(rng, *shape):
    return rng.standard_normal(shape)


def away_from_zero(a, margin=0.05):
    """Moves values off the ReLU kink so finite differences do not straddle it."""
    return np.where(np.abs(a) < margin, a + np.sign(a + 1e-12) * 2 * margin, a)


def build(spec, in_shapes):
    spec = dict(spec)
    spec.setdefault("name", "L")
    spec.setdefault("inputs", [f"in{i}" for i in range(len(in_shapes))])
    return make_layer(spec, in_shapes)


def gradcheck_layer(layer, xs, params, train=True, tol=1e-6, seed=0):
    """check_gradients over the layer's inputs (x0, x1, ...) and parameters (w, b)."""
    names = [f"x{i}" for i in range(len(xs))]
    inputs = {**dict(zip(names, xs)), **params}

    def run(**t):
        for k in params:
            layer.params[k].value = t[k]
        return layer.forward([t[n] for n in names], train)

    def back(dy, y, **t):
        run(**t)
        dxs = layer.backward(dy)
        out = dict(zip(names, dxs))
        out.update({k: layer.params[k].grad for k in params})
        return out

    return check_gradients(run, back, inputs, tol=tol, seed=seed, max_points=60, name=layer.name)


# --- conv ------------------------------------------------------------------

@pytest.mark.parametrize("case", [
    # (input channel list, H, W, filters, size, stride, pad, groups, neuron)
    ([5], 9, 7, 3, 3, 2, 1, 1, None),
    ([2, 3], 8, 9, 5, 3, 1, 1, 1, "relu"),          # two inputs concatenated along channels
    ([3, 3], 7, 7, 4, (3, 2), (2, 1), (0, 1), 2, "tanh"),  # groups, non-square kernel/stride/pad
])
def test_conv_gradients(case):
    chans, h, w, f, size, stride, pad, groups, neuron = case
    rng = np.random.default_rng(1)
    layer = build({"type": "conv", "filters": f, "size": size, "stride": stride, "pad": pad,
                   "groups": groups, "neuron": neuron}, [(c, h, w) for c in chans])
    xs = [rand(rng, 3, c, h, w) for c in chans]
    params = {"w": rand(rng, *layer.params["w"].shape) * 0.5, "b": rand(rng, f) * 0.1}
    errs = gradcheck_layer(layer, xs, params)
    assert set(errs) == {f"x{i}" for i in range(len(chans))} | {"w", "b"}


def test_conv_forward_matches_reference_and_shapes():
    rng = np.random.default_rng(2)
    layer = build({"type": "conv", "filters": 6, "size": 3, "stride": 2, "pad": 1, "neuron": "relu"},
                  [(2, 13, 11), (3, 13, 11)])
    assert layer.out_shape == (6, 7, 6)
    assert layer.params["w"].shape == (6, 5, 3, 3) and layer.params["b"].shape == (6,)
    x0, x1 = rand(rng, 3, 2, 13, 11), rand(rng, 3, 3, 13, 11)
    w, b = rand(rng, 6, 5, 3, 3), rand(rng, 6)
    layer.params["w"].value, layer.params["b"].value = w, b
    y = layer.forward([x0, x1], train=True)
    ref = np.maximum(R.conv2d_forward(np.concatenate([x0, x1], 1), w, b, stride=2, pad=1), 0)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    assert y.shape == (3,) + layer.out_shape


def test_conv_skips_unneeded_input_gradients():
    rng = np.random.default_rng(3)
    layer = build({"type": "conv", "filters": 2, "size": 3}, [(1, 5, 5), (2, 5, 5)])
    layer.params["w"].value, layer.params["b"].value = rand(rng, 2, 3, 3, 3), rand(rng, 2)
    y = layer.forward([rand(rng, 3, 1, 5, 5), rand(rng, 3, 2, 5, 5)])
    dx = layer.backward(np.ones_like(y), need=[False, True])
    assert dx[0] is None and dx[1].shape == (3, 2, 5, 5)
    assert layer.params["w"].grad.shape == (2, 3, 3, 3)


# --- fc --------------------------------------------------------------------

@pytest.mark.parametrize("neuron", [None, "relu", "tanh"])
def test_fc_gradients(neuron):
    rng = np.random.default_rng(4)
    layer = build({"type": "fc", "outputs": 7, "neuron": neuron}, [(5,), (2, 3, 1)])  # features + an image
    assert layer.params["w"].shape == (7, 11)
    xs = [rand(rng, 3, 5), rand(rng, 3, 2, 3, 1)]
    params = {"w": rand(rng, 7, 11) * 0.5, "b": rand(rng, 7) * 0.5}
    gradcheck_layer(layer, xs, params)
    dxs = layer.backward(np.ones((3, 7)))
    assert dxs[0].shape == (3, 5) and dxs[1].shape == (3, 2, 3, 1)


# --- elementwise, lrn, pool ------------------------------------------------

@pytest.mark.parametrize("kind", ["relu", "tanh"])
def test_neuron_layer_gradients(kind):
    rng = np.random.default_rng(5)
    layer = build({"type": kind}, [(5, 3, 4)])
    gradcheck_layer(layer, [away_from_zero(rand(rng, 3, 5, 3, 4))], {})


@pytest.mark.parametrize("opts,chans", [
    ({}, 7),                                                          # the paper's parameters
    ({"size": 3, "alpha": 0.5, "beta": 0.75, "k": 1.0}, 5),          # alpha large: cross term matters
    ({"size": 5, "alpha": 0.3, "beta": 0.6, "k": 2.0, "groups": 2}, 6),  # per-column normalization
])
def test_lrn_gradients(opts, chans):
    rng = np.random.default_rng(6)
    layer = build({"type": "lrn", **opts}, [(chans, 4, 3)])
    gradcheck_layer(layer, [rand(rng, 3, chans, 4, 3)], {})


def test_lrn_groups_normalize_within_each_block():
    rng = np.random.default_rng(7)
    x = rand(rng, 2, 6, 3, 3)
    layer = build({"type": "lrn", "size": 5, "alpha": 0.5, "groups": 2}, [(6, 3, 3)])
    y = layer.forward([x])
    kw = dict(size=5, alpha=0.5, beta=0.75, k=2.0)
    ref = np.concatenate([R.lrn_forward(x[:, :3], **kw), R.lrn_forward(x[:, 3:], **kw)], 1)
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    assert not np.allclose(y, R.lrn_forward(x, **kw))


@pytest.mark.parametrize("mode,size,stride,hw,out", [
    ("max", 3, 2, (13, 11), (6, 5)),      # partial last windows
    ("avg", 3, 2, (13, 12), (6, 6)),
    ("max", 2, 2, (5, 4), (3, 2)),
    ("avg", 3, 1, (4, 5), (2, 3)),
])
def test_pool_gradients(mode, size, stride, hw, out):
    rng = np.random.default_rng(8)
    layer = build({"type": "pool", "mode": mode, "size": size, "stride": stride}, [(5,) + hw])
    assert layer.out_shape == (5,) + out
    gradcheck_layer(layer, [rand(rng, 3, 5, *hw)], {})   # continuous random values: no ties


def test_alexnet_pooling_sizes():
    for h, want in [(55, 27), (27, 13), (13, 6)]:
        assert build({"type": "pool"}, [(4, h, h)]).out_shape == (4, want, want)


# --- dropout ---------------------------------------------------------------

def test_dropout_train_gradients_and_mask():
    rng = np.random.default_rng(9)
    layer = build({"type": "dropout", "p": 0.4}, [(5, 3, 3)])
    layer.seed = 12345
    x = rand(rng, 3, 5, 3, 3)
    y = layer.forward([x], train=True)
    np.testing.assert_array_equal(y, R.dropout_forward(x, 0.4, 12345))
    assert 0 < np.count_nonzero(y == 0) < y.size
    gradcheck_layer(layer, [x], {})


def test_dropout_is_identity_at_test():
    layer = build({"type": "dropout", "p": 0.5}, [(4,)])
    x = np.arange(12.0).reshape(3, 4)
    assert layer.forward([x], train=False) is x
    dy = np.ones((3, 4))
    assert layer.backward(dy)[0] is dy


# --- loss ------------------------------------------------------------------

def test_softmax_loss_layer():
    rng = np.random.default_rng(10)
    layer = build({"type": "softmax_loss"}, [(6,)])
    logits, labels = rand(rng, 5, 6), np.array([0, 5, 2, 2, 1], dtype=np.int32)
    loss = layer.loss(logits, labels)
    ref_loss, probs = R.softmax_cross_entropy(logits, labels)
    assert loss == pytest.approx(float(ref_loss))
    np.testing.assert_allclose(layer.backward()[0], R.softmax_cross_entropy_backward(probs, labels))

    def f(z):
        return R.softmax_cross_entropy(z, labels)[0]
    check_gradients(f, lambda dy, y, z: {"z": dy * layer.backward()[0]},
                    {"z": logits}, name="softmax_loss")


# --- the interface ---------------------------------------------------------

def test_every_type_is_covered():
    assert set(LAYER_TYPES) == {"data", "conv", "fc", "relu", "tanh", "lrn", "pool", "dropout", "softmax_loss"}


def test_param_fields():
    layer = build({"type": "conv", "filters": 4, "size": 3}, [(2, 5, 5)])
    p = layer.params["w"]
    assert isinstance(p, Param) and p.name == "L.w" and p.layer == "L" and p.size == 4 * 2 * 9
    assert p.value is None and p.grad is None


def test_backward_before_forward_is_an_error():
    layer = build({"type": "pool"}, [(2, 5, 5)])
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((1, 2, 2, 2)))


@pytest.mark.parametrize("spec,shapes,match", [
    ({"type": "nope"}, [(1, 3, 3)], "unknown type 'nope'"),
    ({"type": "conv", "filters": 4}, [(3, 5, 5)], "missing key 'size'"),
    ({"type": "conv", "filters": 4, "size": 3, "strid": 2}, [(3, 5, 5)], "unknown key 'strid'"),
    ({"type": "conv", "filters": 4, "size": 7}, [(3, 5, 5)], "kernel 7x7 is larger than the padded input 5x5"),
    ({"type": "conv", "filters": 4, "size": 3, "groups": 2}, [(3, 5, 5)], "divisible by groups=2"),
    ({"type": "conv", "filters": 3, "size": 3, "groups": 2}, [(4, 5, 5)], "divisible by groups=2"),
    ({"type": "conv", "filters": 0, "size": 3}, [(3, 5, 5)], "filters must be an int >= 1"),
    ({"type": "conv", "filters": 2, "size": 3}, [(3, 5, 5), (1, 4, 5)], "must share H x W"),
    ({"type": "conv", "filters": 2, "size": 3, "neuron": "sigmoid"}, [(3, 5, 5)], "unknown neuron"),
    ({"type": "conv", "filters": 2, "size": 1}, [(6,)], "must be an image"),
    ({"type": "pool", "size": 4}, [(2, 3, 5)], "pooling window 4x4 is larger than the input 3x5"),
    ({"type": "pool", "mode": "min"}, [(2, 5, 5)], "mode must be 'max' or 'avg'"),
    ({"type": "lrn", "groups": 2}, [(5, 4, 4)], "5 channels must be divisible by groups=2"),
    ({"type": "dropout", "p": 1.0}, [(5,)], r"p must be a number in \[0, 1\)"),
    ({"type": "relu"}, [(5,), (5,)], "takes exactly 1 input"),
    ({"type": "softmax_loss"}, [(2, 3, 3)], "must be logits"),
])
def test_bad_specs_give_one_line_errors(spec, shapes, match):
    with pytest.raises(ValueError, match=match) as e:
        build(spec, shapes)
    assert "'L'" in str(e.value) and "\n" not in str(e.value)


def test_gradcheck_catches_a_wrong_concat_split(monkeypatch):
    """The check above can fail: swap the two inputs' gradients of a concatenating conv."""
    rng = np.random.default_rng(11)
    layer = build({"type": "conv", "filters": 2, "size": 3, "pad": 1}, [(2, 4, 4), (2, 4, 4)])
    good = type(layer)._split
    monkeypatch.setattr(layer, "_split", lambda dx, need, flatten: good(layer, dx, need, flatten)[::-1])
    xs = [rand(rng, 2, 2, 4, 4), rand(rng, 2, 2, 4, 4)]
    with pytest.raises(AssertionError, match="x0"):
        gradcheck_layer(layer, xs, {"w": rand(rng, 2, 4, 3, 3), "b": rand(rng, 2)})
